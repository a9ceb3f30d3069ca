//! `hyper-stats domains`: the running domains as the agent sees them,
//! with the QEMU process and vCPU threads its eBPF probes would watch.
//!
//! One bulk call for the state group lists the domains; their QEMU pid and
//! vCPU threads come from libvirt's run directory and `/proc`. A domain
//! whose threads cannot be found is listed with the reason instead.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::sources::ebpf::targets;
use crate::sources::libvirt::ffi::Connection;
use crate::sources::libvirt::groups::{Group, Groups};

/// Prints the running domains of `config`'s libvirt: a table, or one
/// JSON object per line with `json`.
pub fn run(config: &Config, json: bool) -> Result<()> {
    let uri = config.libvirt.uri.as_str();
    let conn = Connection::open(uri)
        .with_context(|| format!("failed to open libvirt connection to {uri}"))?;
    let state: Groups = [Group::State].into_iter().collect();
    let mut records = conn
        .all_domain_stats(state)
        .with_context(|| format!("failed to list domains on {uri}"))?;
    records.sort_by(|a, b| a.name.cmp(&b.name));
    if !json {
        println!(
            "{:<36}  {:<20}  {:>8}  VCPU THREADS (id:tid)",
            "UUID", "NAME", "QEMU PID"
        );
    }
    for rec in records {
        let found = targets::qemu_pid(Path::new(targets::LIBVIRT_QEMU_RUN_DIR), &rec.name)
            .and_then(|pid| Ok((pid, targets::vcpu_threads(Path::new(targets::PROC), pid)?)));
        if json {
            let value = match &found {
                Ok((pid, vcpus)) => serde_json::json!({
                    "uuid": rec.uuid, "name": rec.name, "qemu_pid": pid,
                    "vcpus": vcpus.iter().map(|t| serde_json::json!({"id": t.vcpu, "tid": t.tid, "kvm": t.kvm})).collect::<Vec<_>>(),
                }),
                Err(e) => {
                    serde_json::json!({"uuid": rec.uuid, "name": rec.name, "error": e.to_string()})
                }
            };
            println!("{value}");
        } else {
            match &found {
                Ok((pid, vcpus)) => {
                    let vcpus: Vec<String> = vcpus
                        .iter()
                        .map(|t| format!("{}:{}", t.vcpu, t.tid))
                        .collect();
                    println!(
                        "{:<36}  {:<20}  {:>8}  {}",
                        rec.uuid,
                        rec.name,
                        pid,
                        vcpus.join(" ")
                    );
                }
                Err(e) => println!("{:<36}  {:<20}  {:>8}  ({e})", rec.uuid, rec.name, "?"),
            }
        }
    }
    Ok(())
}
