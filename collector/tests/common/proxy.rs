//! A Unix socket proxy in front of libvirtd's socket, owned by the test:
//! `stale.rs` cuts it to make libvirt unreachable for one agent alone;
//! `package.rs` lets an agent that runs as the package's user reach the
//! lab's libvirtd, which authenticates only root here (see that file).

use std::io::ErrorKind;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A Unix socket proxy at `path` to another Unix socket (libvirtd's):
/// every connection accepted is forwarded byte for byte, both ways, until
/// [`Proxy::cut`].
pub struct Proxy {
    /// Where it listens.
    path: PathBuf,
    /// Tells the accept loop to stop.
    stop: Arc<AtomicBool>,
    /// Both ends of every forwarded connection, to shut down on a cut.
    streams: Arc<Mutex<Vec<UnixStream>>>,
    /// The accept loop.
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens at `path` (replacing what a cut left) and forwards to
    /// `target`.
    pub fn start(path: &Path, target: &Path) -> Proxy {
        let target = target.to_path_buf();
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        // Non-blocking, so that the loop sees `stop` between accepts.
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let stop = Arc::clone(&stop);
            let streams = Arc::clone(&streams);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => forward(client, &target, &streams),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("proxy accept failed: {e}"),
                    }
                }
            })
        };
        Proxy {
            path: path.to_path_buf(),
            stop,
            streams,
            accept: Some(accept),
        }
    }

    /// Makes libvirt unreachable through the proxy: no listener (connects
    /// fail at once, as with a stopped daemon) and every open connection
    /// closed.
    /// A proxy cut already does nothing (so that dropping it leaves a
    /// newer one at the same path alone).
    pub fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            self.stop.store(true, Ordering::SeqCst);
            accept.join().unwrap();
            let _ = std::fs::remove_file(&self.path);
        }
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Forwards one accepted connection to `target` on two threads, keeping
/// both ends in `streams` so that a cut can close them.
fn forward(client: UnixStream, target: &Path, streams: &Mutex<Vec<UnixStream>>) {
    client.set_nonblocking(false).unwrap();
    let Ok(server) = UnixStream::connect(target) else {
        // libvirtd itself is gone: the agent sees its connection close.
        return;
    };
    streams
        .lock()
        .unwrap()
        .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
    let pump = |mut from: UnixStream, mut to: UnixStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    pump(client.try_clone().unwrap(), server.try_clone().unwrap());
    pump(server, client);
}
