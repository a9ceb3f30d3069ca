//! The socket side of the query sink: creating the Unix socket with the
//! right owner and mode, and answering one request per connection.
//!
//! # Creating the socket
//! The socket's directory must be one only the agent's user can change
//! ([`crate::trusted_dir`]): a directory owned by someone else, writable
//! by its group or by others, or a symlink is refused with an error naming
//! its path, owner and mode, since whoever can write there could put their
//! own listener in the socket's place or a symlink for root to chmod. A
//! missing directory is created (mode [`DIR_MODE`]); it gets the socket's
//! group whether created or found (systemd's `RuntimeDirectory=`).
//! The socket is bound under a umask that leaves exactly [`SOCKET_MODE`],
//! so it is never connectable by others even for an instant, and its group
//! is set with `fchownat(AT_SYMLINK_NOFOLLOW)` through the directory's
//! descriptor.
//!
//! # Serving
//! Each connection is served by its own task, at most
//! [`MAX_CONNECTIONS`] at once, with a deadline on reading the request and
//! writing the answer, so a client that connects and says nothing, sends
//! garbage or never reads costs one task for a bounded time and nothing
//! else. Answers are computed on a blocking thread, because merging
//! histogram windows holds the rollup's lock for a few milliseconds.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hyper_stats_query::{ErrorCode, MAX_REQUEST_BYTES, Response, parse_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::rollup::SharedRollup;
use crate::trusted_dir::{Dir, Umask, file_id, is_socket};

/// Mode of the socket: the agent's user and the configured group may
/// connect, nobody else.
pub(crate) const SOCKET_MODE: u32 = 0o660;

/// Mode of a socket directory the agent creates.
pub(crate) const DIR_MODE: u32 = 0o750;

/// Connections served at once; more wait in the kernel's backlog. Nagios
/// runs checks one per service, so even a busy host opens a handful.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// How long a client has to send its request line, and to read the answer:
/// the plugin needs milliseconds, so this only bounds a stuck client.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The group the socket belongs to when none is configured, if it exists:
/// Debian's NRPE and Nagios run checks as this group.
pub(crate) const DEFAULT_GROUP: &str = "nagios";

/// The system's group file, read only when NSS itself fails.
const GROUP_FILE: &str = "/etc/group";

/// Looks up a group id by name (or takes a number) in `group_file`.
pub(crate) fn group_id(group_file: &Path, name: &str) -> Result<Option<u32>> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    let text = std::fs::read_to_string(group_file)
        .with_context(|| format!("failed to read {}", group_file.display()))?;
    Ok(text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let (n, _, gid) = (fields.next()?, fields.next()?, fields.next()?);
        (n == name).then(|| gid.parse().ok()).flatten()
    }))
}

/// Looks up a group id by name (or takes a number) through NSS, so groups
/// from LDAP or sssd count; falls back to [`GROUP_FILE`] only if NSS
/// fails (a broken module), not when it says there is no such group.
fn lookup_group(name: &str) -> Result<Option<u32>> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    match crate::trusted_dir::group_id(name) {
        Ok(found) => Ok(found),
        Err(error) => {
            warn!(message = "Group lookup through NSS failed; reading /etc/group.", group = name, %error);
            group_id(Path::new(GROUP_FILE), name)
        }
    }
}

/// The group id the socket gets: the configured group (which must exist),
/// else [`DEFAULT_GROUP`] if it exists, else none (root's group).
pub(crate) fn socket_group(configured: Option<&str>) -> Result<Option<u32>> {
    match configured {
        Some(name) => match lookup_group(name)? {
            Some(gid) => Ok(Some(gid)),
            None => bail!(
                "query.group {name:?} does not exist (looked up through NSS: {GROUP_FILE}, LDAP, ...)\n\
                 create it, set another group, or remove query.group to use {DEFAULT_GROUP:?} when it exists"
            ),
        },
        None => lookup_group(DEFAULT_GROUP),
    }
}

/// A bound socket that removes its file when dropped (if the file is still
/// the one it created).
pub(crate) struct BoundSocket {
    /// The listener.
    pub(crate) listener: UnixListener,
    /// The socket's directory, through which it is removed.
    dir: Dir,
    /// The socket's name in `dir`.
    name: OsString,
    /// The socket file's inode, to remove only our own.
    ino: u64,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if self
            .dir
            .stat(&self.name)
            .is_ok_and(|st| file_id(&st).ino == self.ino)
        {
            let _ = self.dir.remove(&self.name);
        }
    }
}

/// The error for a failed group change of `path` to `gid`: a user that
/// is not root may only give its files a group it is a member of.
fn group_error(path: &Path, gid: u32) -> impl FnOnce(io::Error) -> anyhow::Error + '_ {
    move |e| {
        let hint = match e.kind() {
            io::ErrorKind::PermissionDenied => {
                "\nthe agent's user must be a member of that group (query.group): \
                 add it (`adduser hyper-stats nagios` for the package's user) and restart the agent"
            }
            _ => "",
        };
        anyhow::anyhow!(
            "failed to set the group of {} to {gid}: {e}{hint}",
            path.display()
        )
    }
}

/// Opens (or creates) the socket's directory, refusing one that others
/// could change, removes a stale socket left by an agent that died, binds,
/// and sets group `gid` (mode [`SOCKET_MODE`] comes from the umask).
/// Refuses to take over a socket another process still answers on, and to
/// remove anything that is not a socket.
pub(crate) fn bind(path: &Path, gid: Option<u32>) -> Result<BoundSocket> {
    let dir_path = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .with_context(|| format!("query socket path {} has no directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("query socket path {} has no file name", path.display()))?
        .to_owned();
    // An existing directory gets the group too: systemd creates the
    // unit's RuntimeDirectory with the agent's own group, and the socket's
    // group must be able to reach the socket through it.
    let (dir, _created) = Dir::create_trusted(dir_path, "query socket", DIR_MODE)?;
    if let Some(gid) = gid {
        dir.set_group(gid).map_err(group_error(dir_path, gid))?;
    }
    match dir.stat(&name) {
        Ok(st) if is_socket(&st) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "another process is listening on {}\nis another hyper-stats agent running?",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                debug!(message = "Removing stale query socket.", path = %path.display());
                dir.remove(&name)
                    .with_context(|| format!("failed to remove stale socket {}", path.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("failed to check the existing socket {}", path.display())
                });
            }
        },
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to look at {}", path.display())),
    }
    let listener = {
        // bind(2) makes the socket 0777 less the umask: this one leaves
        // exactly SOCKET_MODE from the first instant.
        let _umask = Umask::set(!SOCKET_MODE & 0o777);
        UnixListener::bind(path)
    }
    .with_context(|| format!("failed to bind the query socket {}", path.display()))?;
    let st = dir
        .stat(&name)
        .with_context(|| format!("failed to look at {}", path.display()))?;
    if !is_socket(&st) {
        bail!(
            "{} is not the socket just bound; refusing to use it",
            path.display()
        );
    }
    if let Some(gid) = gid {
        dir.set_group_of(&name, gid)
            .map_err(group_error(path, gid))?;
    }
    Ok(BoundSocket {
        listener,
        dir,
        name,
        ino: file_id(&st).ino,
    })
}

/// Accepts connections forever, answering each from `rollup`.
pub(crate) async fn serve(listener: &UnixListener, rollup: SharedRollup) -> Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut accept_failing = crate::episode::Episode::default();
    loop {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                accept_failing.recover();
                stream
            }
            Err(error) => {
                // EMFILE and friends pass; back off instead of spinning.
                if accept_failing.fail() {
                    warn!(message = "Query socket accept failed; retrying.", %error);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let rollup = Arc::clone(&rollup);
        tokio::spawn(async move {
            if let Err(error) = handle(stream, rollup).await {
                debug!(message = "Query connection ended with an error.", error = %format!("{error:#}"));
            }
            drop(permit);
        });
    }
}

/// How much of an oversized request is read and thrown away after the
/// error reply, so the client can read the reply: a client that sends more
/// is cut off (and may see a reset).
const DRAIN_LIMIT_BYTES: u64 = 1 << 20;

/// Reads a request line of at most [`MAX_REQUEST_BYTES`]. `Err` is the
/// error reply to send.
async fn read_request(
    stream: &mut UnixStream,
) -> io::Result<std::result::Result<Vec<u8>, Response>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Ok(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            buf.truncate(end);
            return Ok(Ok(buf));
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Ok(Err(Response::error(
                ErrorCode::TooLarge,
                format!("request is longer than the limit of {MAX_REQUEST_BYTES} bytes"),
            )));
        }
    }
}

async fn handle(mut stream: UnixStream, rollup: SharedRollup) -> Result<()> {
    let response = match tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Response::error(
            ErrorCode::BadRequest,
            format!("no request line within {IO_TIMEOUT:?}"),
        ),
        Ok(Err(e)) => return Err(e).context("failed to read the request"),
        Ok(Ok(Err(too_large))) => {
            // Closing a Unix socket with unread input resets it, and the
            // client would lose this reply: answer, then discard (bounded)
            // what it is still sending before closing.
            let line = too_large.to_line();
            let _ = tokio::time::timeout(IO_TIMEOUT, async {
                stream.write_all(line.as_bytes()).await?;
                stream.shutdown().await?;
                let mut sink = (&mut stream).take(DRAIN_LIMIT_BYTES);
                tokio::io::copy(&mut sink, &mut tokio::io::sink()).await
            })
            .await;
            return Ok(());
        }
        Ok(Ok(Ok(line))) => match parse_request(&line) {
            Err(e) => Response::error(e.code, e.message),
            Ok(request) => tokio::task::spawn_blocking(move || {
                let now = std::time::Instant::now();
                let rollup = rollup.read().unwrap_or_else(|p| p.into_inner());
                super::answer::answer(&rollup, &request.query, now)
            })
            .await
            .unwrap_or_else(|e| {
                Response::error(ErrorCode::Internal, format!("the query failed: {e}"))
            }),
        },
    };
    let line = response.to_line();
    tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(line.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .context("client did not read the answer in time")?
    .context("failed to write the answer")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lookup_by_name_and_number() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("group");
        std::fs::write(&file, "root:x:0:\nnagios:x:118:\nbad-line\n").unwrap();
        assert_eq!(group_id(&file, "nagios").unwrap(), Some(118));
        assert_eq!(group_id(&file, "root").unwrap(), Some(0));
        assert_eq!(group_id(&file, "nope").unwrap(), None);
        assert_eq!(group_id(&file, "4242").unwrap(), Some(4242));
    }
}
