//! The JSON sink: one JSON object per datapoint and line, for scripts and
//! for looking at the stream by eye (`hyper-stats run --output json`).
//!
//! It writes each batch with one buffered write and flushes after it, so a
//! reader sees whole batches as soon as they are sampled. A closed pipe
//! (the reader went away) ends the sink with an error the agent reports.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::sample::{Batch, Datapoint};

/// Writes one line per datapoint of `batch` to `w`.
pub(crate) fn write_batch(w: &mut impl Write, batch: &[Datapoint]) -> std::io::Result<()> {
    for point in batch {
        serde_json::to_writer(&mut *w, point)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Consumes batches until the channel closes, writing them to stdout.
pub(crate) async fn run(mut rx: mpsc::Receiver<Arc<Batch>>) -> Result<()> {
    // Writing to a pipe can block; stdout is written from a blocking thread
    // so a slow reader never stalls the runtime.
    let (tx, mut blocking_rx) = mpsc::channel::<Arc<Batch>>(64);
    let writer = tokio::task::spawn_blocking(move || -> Result<()> {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        while let Some(batch) = blocking_rx.blocking_recv() {
            write_batch(&mut out, &batch).context("failed to write datapoints to stdout")?;
            out.flush()
                .context("failed to write datapoints to stdout")?;
        }
        Ok(())
    });
    while let Some(batch) = rx.recv().await {
        if tx.send(batch).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer.await.context("JSON writer thread panicked")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_per_line_with_all_fields() {
        let p = Datapoint {
            ts: 1764100000.5,
            uuid: "6f1c2f4e-9c1a-4d43-9d7e-1a2b3c4d5e6f".into(),
            domain: "web \"1\"".into(),
            metric: "vcpu.0.delay_percent".into(),
            value: 1.25,
        };
        let mut buf = Vec::new();
        write_batch(&mut buf, &[p.clone(), p]).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"ts":1764100000.5,"uuid":"6f1c2f4e-9c1a-4d43-9d7e-1a2b3c4d5e6f","domain":"web \"1\"","metric":"vcpu.0.delay_percent","value":1.25}"#
        );
    }
}
