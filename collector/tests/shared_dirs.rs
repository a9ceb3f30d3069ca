//! Files and sockets the agent owns as root, in directories others share
//! (issue 11): each case plays the attack as an unprivileged user (uid
//! 65534, `nobody`, in a forked child that drops to it) against the
//! running agent, or puts in the spool what a wrong `--spool` or a
//! foreign tool would, and checks the agent refuses or leaves alone what
//! is not its own, and counts what a full disk costs.
//!
//! - query socket: a socket directory owned by `nobody`, one writable by
//!   others, one that is a symlink `nobody` planted: refused with path,
//!   owner and mode, the agent runs on, no socket there;
//! - Carbon spool: a spool directory owned by `nobody` or writable by
//!   others, with symlinks planted under the names of segments being
//!   written: refused at start, the symlinks' target untouched;
//! - Carbon spool: segment names on a FIFO and with an absurd point count
//!   are left alone; the agent sends the rest, and again after Carbon
//!   restarts;
//! - Carbon spool on a full disk (a 1 MiB tmpfs): exactly the oldest
//!   segments go, and `agent.carbon.dropped_points` counts exactly their
//!   points;
//! - `hyper-stats graphios`: the spool directory re-pointed while a file
//!   waits for Carbon, a file replaced by a FIFO, files that are not
//!   perfdata, and 30 files of 500 points through a queue of 10,000.
//!
//! The agent runs with `--connect test:///default` (libvirt's in-process
//! test driver: no libvirtd), a fake Carbon on 127.0.0.1 stands in for
//! carbon-cache. Needs root (to mount tmpfs and drop to `nobody`); run by
//! `cargo xtask test`, or alone with `cargo test -p hyper-stats --test
//! shared_dirs -- --ignored --test-threads=1`. `HS_AGENT_BIN` runs the
//! cases against another build of the agent (to see them fail on one
//! without the fixes).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod common;

use common::{Agent, Point, free_port, wait_for};

/// The unprivileged user the attacks run as: `nobody`.
const NOBODY: u32 = 65534;

/// The path component the agent is told to use for this node.
const NODE: &str = "n";

/// How long the agent may take to start (eBPF probes attach as root).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent binary under test.
fn agent_bin() -> PathBuf {
    std::env::var_os("HS_AGENT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_hyper-stats")),
        PathBuf::from,
    )
}

// ---------------------------------------------------------------------
// Running as nobody

/// Forks a child that drops to uid and gid [`NOBODY`] (no supplementary
/// groups) and runs `f`, exiting with its result (100 if dropping failed).
/// `f` must only make system calls: the parent has other threads, so the
/// child may not allocate. Returns the child's pid.
fn spawn_as_nobody(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only calls async-signal-safe functions (setgroups,
    // setgid, setuid, what `f` does, _exit) and never returns.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let dropped = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(NOBODY) == 0
                && libc::setuid(NOBODY) == 0
                && libc::getuid() == NOBODY;
            libc::_exit(if dropped { f() } else { 100 });
        }
        pid
    }
}

/// Waits for child `pid`; its exit code.
fn wait_child(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid failed");
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    }
}

/// Runs `f` as [`NOBODY`] and returns its exit code.
fn as_nobody(f: impl FnOnce() -> i32) -> i32 {
    wait_child(spawn_as_nobody(f))
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// As nobody: `ln -s target link` (0 on success).
fn nobody_symlink(target: &Path, link: &Path) -> i32 {
    let (t, l) = (cstr(target), cstr(link));
    // SAFETY: symlink(2) with two valid C strings.
    as_nobody(|| unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) })
}

/// A listener of nobody's own, bound where the agent's socket was (after
/// unlinking whatever is there); it listens until dropped.
struct Impostor {
    pid: libc::pid_t,
    /// Closing this tells the child to exit.
    wake: libc::c_int,
}

impl Impostor {
    /// Unlinks `path` and binds a listening socket there, as nobody;
    /// `None` if it could not.
    fn bind(path: &Path) -> Option<Impostor> {
        let c = cstr(path);
        // SAFETY: plain data; all zeroes is a valid sockaddr_un.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < addr.sun_path.len());
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let (mut ready, mut wake) = ([0; 2], [0; 2]);
        // SAFETY: pipe(2) into two-element arrays.
        unsafe {
            assert_eq!(libc::pipe(ready.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(wake.as_mut_ptr()), 0);
        }
        let pid = spawn_as_nobody(|| {
            // SAFETY: system calls on our own descriptors and the
            // prepared address; nothing allocates.
            unsafe {
                libc::close(ready[0]);
                libc::close(wake[1]);
                libc::unlink(c.as_ptr());
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                let ok = fd >= 0
                    && libc::bind(fd, (&raw const addr).cast(), len) == 0
                    && libc::listen(fd, 8) == 0;
                let byte = if ok { b'1' } else { b'0' };
                libc::write(ready[1], (&raw const byte).cast(), 1);
                let mut buf = 0u8;
                libc::read(wake[0], (&raw mut buf).cast(), 1);
                0
            }
        });
        let mut byte = 0u8;
        // SAFETY: our ends of the pipes.
        unsafe {
            libc::close(ready[1]);
            libc::close(wake[0]);
            libc::read(ready[0], (&raw mut byte).cast(), 1);
            libc::close(ready[0]);
        }
        let impostor = Impostor { pid, wake: wake[1] };
        (byte == b'1').then_some(impostor)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        // SAFETY: closes our end of the pipe; the child then exits.
        unsafe { libc::close(self.wake) };
        wait_child(self.pid);
    }
}

/// The uid of the process listening on the Unix socket `path`, if any.
fn listener_uid(path: &Path) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let s = std::os::unix::net::UnixStream::connect(path).ok()?;
    // SAFETY: plain data; getsockopt fills it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED into a ucred of the right size.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

/// A directory at `path`, owned by `uid` (group the same), mode `mode`.
fn make_dir(path: &Path, uid: u32, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A temporary directory nobody may traverse (mode 0755).
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

// ---------------------------------------------------------------------
// The agent

/// `hyper-stats run --output json --connect test:///default` with the
/// config `text` (written into `dir`), its log kept: the common runner.
fn start_agent(dir: &Path, text: &str) -> Agent {
    let config = dir.join("agent.toml");
    std::fs::write(&config, text).unwrap();
    Agent::json()
        .binary(&agent_bin())
        .connect("test:///default")
        .config(&config)
        .keep_log()
        .start()
}

/// A point's Carbon path and second, as the agent names it with
/// `host = NODE`.
fn carbon_key(p: &Point) -> (String, i64) {
    let path = if p.domain.is_empty() {
        format!("hyperstats.{NODE}.{}", p.metric)
    } else {
        format!("hyperstats.{NODE}.{}.{}", p.domain, p.metric)
    };
    (path, p.ts.floor() as i64)
}

// ---------------------------------------------------------------------
// A fake Carbon

/// A plaintext Carbon on 127.0.0.1 that keeps every line, reads each
/// connection to its end (as carbon-cache does when the client
/// half-closes) and then runs the hook, if one is set, before closing.
struct FakeCarbon {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    hook: Hook,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

/// Run once, at the end of the first connection that ends after it is set.
type Hook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

impl FakeCarbon {
    fn start(port: u16) -> FakeCarbon {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let hook: Hook = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (l, h, s, c) = (
            Arc::clone(&lines),
            Arc::clone(&hook),
            Arc::clone(&stop),
            Arc::clone(&conns),
        );
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                c.lock().unwrap().push(stream.try_clone().unwrap());
                let (l, h) = (Arc::clone(&l), Arc::clone(&h));
                std::thread::spawn(move || {
                    // Line by line as it arrives: the agent keeps its
                    // connection open.
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    for line in reader.lines() {
                        let Ok(line) = line else { break };
                        l.lock().unwrap().push(line);
                    }
                    let hook = h.lock().unwrap().take();
                    if let Some(hook) = hook {
                        hook();
                    }
                    // Closes this side although `conns` holds a clone.
                    let _ = stream.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        FakeCarbon {
            port,
            lines,
            hook,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    fn set_hook(&self, f: impl FnOnce() + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(f));
    }

    /// Every (path, second) received, with its value.
    fn received(&self) -> BTreeMap<(String, i64), f64> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let mut f = l.split(' ');
                let (p, v, t) = (f.next()?, f.next()?, f.next()?);
                Some(((p.to_owned(), t.parse().ok()?), v.parse().ok()?))
            })
            .collect()
    }

    /// Stops listening and resets every connection.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(a) = self.accept.take() {
            a.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

// ---------------------------------------------------------------------
// Query socket

/// The config of an agent whose query socket is `socket` and that has no
/// Carbon.
fn query_config(socket: &Path) -> String {
    format!("[query]\nsocket = {:?}\n", socket.display().to_string())
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn query_socket_directories_others_control_are_refused() {
    let tmp = open_tempdir();
    let t = tmp.path();
    let rootonly = t.join("rootonly");
    make_dir(&rootonly, 0, 0o700);
    let owned = t.join("owned-by-nobody");
    make_dir(&owned, NOBODY, 0o755);
    let world = t.join("world-writable");
    make_dir(&world, 0, 0o777);
    // nobody plants a symlink where the socket's directory would be.
    let planted = t.join("nobody-home");
    make_dir(&planted, NOBODY, 0o755);
    assert_eq!(nobody_symlink(&rootonly, &planted.join("run")), 0);

    let cases = [
        (
            owned.join("hs.sock"),
            "is owned by uid 65534, not by this agent's user (uid 0)",
            "mode 0755",
        ),
        (
            world.join("hs.sock"),
            "is writable by its group and by others",
            "mode 0777",
        ),
        (
            planted.join("run").join("hs.sock"),
            "is a symbolic link",
            "",
        ),
    ];
    for (socket, problem, mode) in cases {
        eprintln!("case: {}", socket.display());
        let mut agent = start_agent(t, &query_config(&socket));
        let line = wait_for("the query socket's fate", START_TIMEOUT, || {
            agent.log().into_iter().find(|l| {
                l.contains("Query socket listening") || l.contains("Query socket disabled")
            })
        });
        // The agent refused, saying where, whose and which mode.
        assert!(
            line.contains("Query socket disabled"),
            "the agent used {}: {line}",
            socket.display()
        );
        let dir = socket.parent().unwrap().display().to_string();
        assert!(
            line.contains(&dir) && line.contains(problem) && line.contains(mode),
            "{line}"
        );
        assert!(
            !socket.exists(),
            "a socket was made at {}",
            socket.display()
        );
        assert!(
            std::fs::read_dir(&rootonly).unwrap().next().is_none(),
            "something was made in the root-only directory the symlink points at"
        );
        // nobody can put a listener of their own there, but the agent is
        // not behind it and never answers there.
        if !problem.contains("symbolic") {
            let impostor =
                Impostor::bind(&socket).expect("nobody binds in a directory they can write");
            assert_eq!(listener_uid(&socket), Some(NOBODY));
            drop(impostor);
        }
        // The agent runs on without its socket.
        let before = agent.points().len();
        wait_for("more points", Duration::from_secs(10), || {
            (agent.points().len() > before + 2).then_some(())
        });
        assert!(agent.is_running());
        agent.terminate();
    }
}

// ---------------------------------------------------------------------
// Carbon spool

/// The config of an agent with a Carbon sink at `port` (nothing need
/// listen), a spool in `spool` and `queue_points` in memory.
fn carbon_config(socket: &Path, port: u16, spool: &Path, queue_points: usize) -> String {
    format!(
        "{}\n[carbon]\naddress = \"127.0.0.1:{port}\"\nhost = \"{NODE}\"\nqueue_points = {queue_points}\n\
         spool_dir = {:?}\nspool_max_size = \"1GiB\"\n",
        query_config(socket),
        spool.display().to_string()
    )
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn carbon_spool_directories_others_control_are_refused() {
    let tmp = open_tempdir();
    let t = tmp.path();
    let victim = t.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cases = [
        (
            t.join("spool-of-nobody"),
            NOBODY,
            0o755,
            "is owned by uid 65534, not by this agent's user (uid 0)",
            "mode 0755",
        ),
        (
            t.join("spool-world"),
            0,
            0o777,
            "is writable by its group and by others",
            "mode 0777",
        ),
    ];
    for (spool, uid, mode, problem, mode_text) in cases {
        eprintln!("case: {}", spool.display());
        make_dir(&spool, uid, mode);
        // Carbon is down: with 5 points of memory, every batch spills.
        let port = free_port();
        let mut agent = start_agent(t, &carbon_config(&t.join("q.sock"), port, &spool, 5));
        // Once the agent runs (its spool open), nobody plants symlinks to
        // the victim under the names the next segments are written to.
        let exited = wait_for("the agent to start or refuse", START_TIMEOUT, || {
            if !agent.is_running() {
                return Some(true);
            }
            (!agent.points().is_empty()).then_some(false)
        });
        if !exited {
            for id in 0..64u64 {
                let link = spool.join(format!("{id:020}.tmp"));
                assert_eq!(
                    nobody_symlink(&victim, &link),
                    0,
                    "nobody cannot write to {}",
                    spool.display()
                );
            }
        }
        let failed = agent
            .wait_exit(Duration::from_secs(15))
            .map(|status| !status.success());
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious\n",
            "root wrote through a symlink nobody planted"
        );
        assert_eq!(
            failed,
            Some(true),
            "the agent ran with the spool in {}",
            spool.display()
        );
        let log = agent.log().join("\n");
        let dir = spool.display().to_string();
        assert!(
            log.contains("Carbon spool directory")
                && log.contains(&dir)
                && log.contains(problem)
                && log.contains(mode_text),
            "no clear error: {log}"
        );
    }
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn carbon_spool_files_that_are_no_segments_are_left_alone() {
    let tmp = open_tempdir();
    let t = tmp.path();
    let spool = t.join("spool");
    make_dir(&spool, 0, 0o700);
    // A name claiming 2^64-1 points, a FIFO under a segment's name, a
    // directory, and one real segment of two points.
    let huge = spool.join("00000000000000000000-18446744073709551615.carbon");
    std::fs::write(&huge, "hyperstats.x.y 1 1700000000\n").unwrap();
    let fifo = spool.join("00000000000000000001-5.carbon");
    let c = cstr(&fifo);
    // SAFETY: mkfifo(3) with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(spool.join("lost+found")).unwrap();
    std::fs::write(
        spool.join("00000000000000000002-2.carbon"),
        "hyperstats.old.a 1 1700000000\nhyperstats.old.a 2 1700000001\n",
    )
    .unwrap();

    let mut carbon = FakeCarbon::start(0);
    let port = carbon.port;
    let mut agent = start_agent(t, &carbon_config(&t.join("q.sock"), port, &spool, 100_000));
    let old = ("hyperstats.old.a".to_owned(), 1_700_000_001);
    wait_for("the spooled points and the agent's", START_TIMEOUT, || {
        let r = carbon.received();
        (r.contains_key(&old) && r.keys().any(|(p, _)| p.starts_with("hyperstats.n.agent.")))
            .then_some(())
    });
    // Carbon restarts, twice: the agent reconnects (rereading its spool
    // from the start) and goes on.
    for _ in 0..2 {
        carbon.stop();
        let before = agent.points().len();
        wait_for("more points", Duration::from_secs(10), || {
            (agent.points().len() > before + 3).then_some(())
        });
        let since = common::now_unix().floor() as i64;
        carbon = FakeCarbon::start(port);
        wait_for(
            "the agent's points after the restart",
            Duration::from_secs(30),
            || {
                carbon
                    .received()
                    .keys()
                    .any(|(p, ts)| p.starts_with("hyperstats.n.") && *ts >= since)
                    .then_some(())
            },
        );
    }
    assert!(agent.is_running(), "the agent stopped");
    assert!(huge.exists() && fifo.exists() && spool.join("lost+found").exists());
    assert_eq!(
        agent.logged("not spool segments").len(),
        1,
        "the foreign files were not logged once"
    );
    assert!(agent.logged("panicked").is_empty());
    agent.terminate();
    carbon.stop();
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }

    /// Bytes free.
    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.0).unwrap();
        st.f_bavail * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Seeded segments: [`SEED_SEGMENTS`] of [`SEED_POINTS`] lines of exactly
/// [`SEED_LINE_BYTES`] bytes, so each is exactly 10 pages of tmpfs.
const SEED_SEGMENTS: u64 = 25;
const SEED_POINTS: u64 = 1280;
const SEED_LINE_BYTES: u64 = 32;

/// Seeded point `k` of segment `i`: its path and second.
fn seed_key(i: u64, k: u64) -> (String, i64) {
    (
        format!("hyperstats.seed.{i:02}"),
        (1_700_000_000 + i * SEED_POINTS + k) as i64,
    )
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn a_full_spool_disk_loses_the_oldest_segments_counted() {
    let tmp = open_tempdir();
    let t = tmp.path();
    // 1 MiB = 256 pages: 25 seeded segments of 10 pages, a filler of 5
    // pages outside the spool, one page free.
    let fs = Tmpfs::mount(&t.join("disk"), "1m");
    let spool = fs.0.join("spool");
    make_dir(&spool, 0, 0o700);
    std::fs::write(fs.0.join("filler"), vec![0u8; 5 * 4096]).unwrap();
    for i in 0..SEED_SEGMENTS {
        let mut text = String::new();
        for k in 0..SEED_POINTS {
            let (path, ts) = seed_key(i, k);
            text += &format!("{path} 1 {ts}\n");
        }
        assert_eq!(text.len() as u64, SEED_POINTS * SEED_LINE_BYTES);
        std::fs::write(spool.join(format!("{i:020}-{SEED_POINTS}.carbon")), text).unwrap();
    }
    assert_eq!(fs.free(), 4096, "the tmpfs should have one page left");
    let seeded_left = || {
        (0..SEED_SEGMENTS)
            .filter(|i| spool.join(format!("{i:020}-{SEED_POINTS}.carbon")).exists())
            .count() as u64
    };

    // Carbon down; 50 points of memory: a spill of a page or two every
    // few seconds, and the first one finds the disk full.
    let port = free_port();
    let mut agent = start_agent(t, &carbon_config(&t.join("q.sock"), port, &spool, 50));
    wait_for(
        "a seeded segment to make room",
        Duration::from_secs(60),
        || (seeded_left() < SEED_SEGMENTS).then_some(()),
    );
    // A few more spills on the full disk.
    std::thread::sleep(Duration::from_secs(15));
    assert!(agent.is_running(), "the agent stopped on a full disk");
    // Carbon comes back: the rest of the spool and everything since goes.
    let carbon = FakeCarbon::start(port);
    // Sent segments are deleted once past the 30 s replay window.
    wait_for("the spool to empty", Duration::from_secs(90), || {
        let left = std::fs::read_dir(&spool)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".carbon")
            })
            .count();
        (left == 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let stopped_at = common::now_unix();
    agent.terminate();
    let received = carbon.received();

    // By hand: each seeded segment is the oldest while it is there, so
    // only seeded segments went, whole: 1,280 points each.
    let lost: Vec<u64> = (0..SEED_SEGMENTS)
        .filter(|&i| !received.contains_key(&seed_key(i, 0)))
        .collect();
    let gone = lost.len() as u64;
    assert!(gone >= 1, "lost {lost:?}");
    assert_eq!(
        lost,
        (0..gone).collect::<Vec<_>>(),
        "the lost segments are not the oldest"
    );
    for i in gone..SEED_SEGMENTS {
        for k in 0..SEED_POINTS {
            assert!(
                received.contains_key(&seed_key(i, k)),
                "seeded point {i}/{k} lost"
            );
        }
    }
    // Domain series and the agent's own: all of them go to Carbon.
    let mut points = agent.points();
    points.extend(agent.agent_points());
    let dropped: f64 = points
        .iter()
        .filter(|p| p.metric == "agent.carbon.dropped_points")
        .map(|p| p.value)
        .sum();
    eprintln!(
        "full disk: {gone} seeded segments dropped = {} points; agent.carbon.dropped_points summed {dropped}",
        gone * SEED_POINTS
    );
    assert_eq!(
        dropped,
        (gone * SEED_POINTS) as f64,
        "dropped_points does not count exactly what went"
    );
    // Nothing of the agent's own went: every point it printed until
    // shortly before it stopped reached Carbon.
    let mut missing = BTreeSet::new();
    for p in &points {
        if p.ts < stopped_at - 3.0 && !received.contains_key(&carbon_key(p)) {
            missing.insert(carbon_key(p));
        }
    }
    assert!(missing.is_empty(), "agent points lost: {missing:?}");
    let full = agent.logged("disk is full");
    assert_eq!(full.len(), 1, "the full disk was not logged once: {full:?}");
    carbon.stop();
    drop(fs);
}

// ---------------------------------------------------------------------
// hyper-stats graphios

/// A Nagios perfdata spool line (the README's Graphios template) with
/// perfdata items `label_i=value` for `items`, at `timet`.
fn perfdata_line(timet: i64, items: &[(String, f64)]) -> String {
    let perfdata: Vec<String> = items.iter().map(|(l, v)| format!("{l}={v}")).collect();
    format!(
        "DATATYPE::SERVICEPERFDATA\tTIMET::{timet}\tHOSTNAME::web-1\tSERVICEDESC::Load\t\
         SERVICEPERFDATA::{}\tSERVICECHECKCOMMAND::check_load\tHOSTSTATE::UP\t\
         HOSTSTATETYPE::HARD\tSERVICESTATE::OK\tSERVICESTATETYPE::HARD\t\
         GRAPHITEPREFIX::nagios\tGRAPHITEPOSTFIX::load\n",
        perfdata.join(" ")
    )
}

/// The Carbon path Graphios gives label `label` of [`perfdata_line`].
fn graphios_path(label: &str) -> String {
    format!("nagios.web-1.load.{label}")
}

/// Writes a spool file `name` in `dir` of one line per timestamp in
/// `timets`, `items` labels each; sets its modification time `age` ago
/// (oldest files go first). Returns its keys.
fn spool_file(
    dir: &Path,
    name: &str,
    timets: std::ops::Range<i64>,
    items: usize,
    age: Duration,
) -> Vec<(String, i64)> {
    let mut text = String::new();
    let mut keys = Vec::new();
    for t in timets {
        let labels: Vec<(String, f64)> = (0..items)
            .map(|i| (format!("{name}_{i}").replace('.', "_"), i as f64))
            .collect();
        for (l, _) in &labels {
            keys.push((graphios_path(l), t));
        }
        text += &perfdata_line(t, &labels);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - age)
        .unwrap();
    keys
}

/// A finished `hyper-stats graphios` run.
struct Graphios {
    /// Whether it exited successfully (`None`: killed at the deadline).
    success: Option<bool>,
    stderr: String,
    elapsed: Duration,
}

/// Runs `hyper-stats --config CONFIG graphios --spool SPOOL --carbon
/// 127.0.0.1:PORT ARGS`, killing it after `deadline`.
fn graphios(config: &Path, spool: &Path, port: u16, args: &[&str], deadline: Duration) -> Graphios {
    let started = Instant::now();
    let mut child = Command::new(agent_bin())
        .arg("--config")
        .arg(config)
        .arg("graphios")
        .arg("--spool")
        .arg(spool)
        .arg("--carbon")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env("HYPER_STATS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let success = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let stderr = reader.join().unwrap();
    eprintln!("graphios ({elapsed:?}): {stderr}");
    Graphios {
        success,
        stderr,
        elapsed,
    }
}

/// A config file with `carbon_extra` in its `[carbon]` section.
fn graphios_config(dir: &Path, carbon_extra: &str) -> PathBuf {
    let path = dir.join("graphios.toml");
    std::fs::write(&path, format!("[carbon]\n{carbon_extra}\n")).unwrap();
    path
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn graphios_deletes_in_the_directory_it_read_never_through_links() {
    let tmp = open_tempdir();
    let t = tmp.path();
    let real = t.join("real");
    let victim = t.join("victim");
    let outside = t.join("outside");
    for d in [&real, &victim, &outside] {
        make_dir(d, 0, 0o755);
    }
    // --spool is a symlink (allowed: it is followed once, when opened).
    let link = t.join("spool");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let name = "service-perfdata.1700000100";
    let keys = spool_file(
        &real,
        name,
        1_700_000_100..1_700_000_101,
        3,
        Duration::from_secs(60),
    );
    // The victim directory holds a file of the same name.
    std::fs::write(victim.join(name), "precious\n").unwrap();
    // A symlink in the spool to perfdata elsewhere: never read or deleted.
    let elsewhere = spool_file(
        &outside,
        "elsewhere",
        1_700_000_200..1_700_000_201,
        1,
        Duration::ZERO,
    );
    std::os::unix::fs::symlink(
        outside.join("elsewhere"),
        real.join("service-perfdata.1700000200"),
    )
    .unwrap();

    let carbon = FakeCarbon::start(0);
    // While the file waits for Carbon's confirmation, the spool path is
    // re-pointed at the victim directory.
    let (l, v) = (link.clone(), victim.clone());
    carbon.set_hook(move || {
        let new = l.with_extension("new");
        std::os::unix::fs::symlink(&v, &new).unwrap();
        std::fs::rename(&new, &l).unwrap();
    });
    let config = graphios_config(t, "");
    let run = graphios(
        &config,
        &link,
        carbon.port,
        &["--once", "--timeout", "20s"],
        Duration::from_secs(30),
    );
    assert_eq!(run.success, Some(true), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(victim.join(name)).ok().as_deref(),
        Some("precious\n"),
        "graphios deleted a file in the directory the spool path was re-pointed at"
    );
    assert!(!real.join(name).exists(), "the forwarded file stayed");
    let received = carbon.received();
    for k in &keys {
        assert!(received.contains_key(k), "{k:?} not forwarded");
    }
    assert!(
        !received.contains_key(&elsewhere[0]),
        "a symlink's target was read"
    );
    assert!(outside.join("elsewhere").exists());
    assert!(
        real.join("service-perfdata.1700000200")
            .symlink_metadata()
            .is_ok()
    );
    carbon.stop();
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn graphios_never_opens_a_fifo() {
    let tmp = open_tempdir();
    let t = tmp.path();
    let spool = t.join("spool");
    make_dir(&spool, 0, 0o755);
    // 64 files (a full window of files), then one that becomes a FIFO
    // while the first window waits for Carbon, and one FIFO from the
    // start.
    for i in 0..64 {
        spool_file(
            &spool,
            &format!("service-perfdata.{}", 1_700_000_000 + i),
            1_700_000_000 + i..1_700_000_001 + i,
            1,
            Duration::from_secs(600 - i as u64),
        );
    }
    let last = spool.join("service-perfdata.1700000999");
    spool_file(
        &spool,
        "service-perfdata.1700000999",
        1_700_000_999..1_700_001_000,
        1,
        Duration::from_secs(1),
    );
    let fifo = spool.join("service-perfdata.fifo");
    let c = cstr(&fifo);
    // SAFETY: mkfifo(3) with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);

    let carbon = FakeCarbon::start(0);
    let l = last.clone();
    carbon.set_hook(move || {
        std::fs::remove_file(&l).unwrap();
        let c = cstr(&l);
        // SAFETY: mkfifo(3) with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    });
    let config = graphios_config(t, "");
    let run = graphios(
        &config,
        &spool,
        carbon.port,
        &["--once", "--timeout", "20s"],
        Duration::from_secs(40),
    );
    assert!(
        run.success.is_some(),
        "graphios hung (opened a FIFO?) and was killed after {:?}",
        run.elapsed
    );
    assert_eq!(run.success, Some(true), "{}", run.stderr);
    let left: BTreeSet<String> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        BTreeSet::from([
            "service-perfdata.1700000999".to_owned(),
            "service-perfdata.fifo".to_owned()
        ]),
        "only the FIFOs stay"
    );
    carbon.stop();
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn graphios_leaves_files_that_are_not_perfdata_alone_and_logs_them_once() {
    let tmp = open_tempdir();
    let t = tmp.path();
    // --spool pointed at the wrong directory: what lives there stays.
    let spool = t.join("etc-like");
    make_dir(&spool, 0, 0o755);
    let foreign = [
        (".pwd.lock", ""),
        ("notes.txt", "hello\nworld\n"),
        ("data.csv", "a,b\n1,2\n"),
        ("service-perfdata.conf", "x = 1\n"),
    ];
    for (name, text) in foreign {
        std::fs::write(spool.join(name), text).unwrap();
    }
    // A perfdata file among them is forwarded and deleted, and an empty
    // file named as Nagios moves them is deleted, as Graphios does.
    let keys = spool_file(
        &spool,
        "service-perfdata.1700000300",
        1_700_000_300..1_700_000_302,
        2,
        Duration::from_secs(5),
    );
    std::fs::write(spool.join("service-perfdata.1700000301"), "").unwrap();

    let carbon = FakeCarbon::start(0);
    let config = graphios_config(t, "");
    // Not --once: several rounds over the directory, 200 ms apart.
    let mut child = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["graphios", "--interval", "200ms", "--spool"])
        .arg(&spool)
        .arg("--carbon")
        .arg(format!("127.0.0.1:{}", carbon.port))
        .env("HYPER_STATS_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    wait_for("the perfdata points", Duration::from_secs(20), || {
        let r = carbon.received();
        keys.iter().all(|k| r.contains_key(k)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let log = reader.join().unwrap();
    eprintln!("{log}");
    for (name, text) in foreign {
        assert_eq!(
            std::fs::read_to_string(spool.join(name)).ok().as_deref(),
            Some(text),
            "{name} was deleted or changed"
        );
        let mentions = log
            .lines()
            .filter(|l| {
                l.contains("Leaving a file in the perfdata spool alone")
                    && l.contains(&spool.join(name).display().to_string())
            })
            .count();
        assert_eq!(mentions, 1, "{name} logged {mentions} times");
    }
    assert!(!spool.join("service-perfdata.1700000300").exists());
    assert!(!spool.join("service-perfdata.1700000301").exists());
    carbon.stop();
}

#[test]
#[ignore = "needs root: cargo xtask test"]
fn graphios_finishes_a_spool_larger_than_the_queue() {
    let tmp = open_tempdir();
    let t = tmp.path();
    let spool = t.join("spool");
    make_dir(&spool, 0, 0o755);
    // 30 files of 500 points (10 lines of 50 items), 15,000 points, into a
    // sink that keeps 10,000 in memory.
    let mut keys = BTreeSet::new();
    for f in 0..30 {
        let t0 = 1_700_001_000 + f * 10;
        keys.extend(spool_file(
            &spool,
            &format!("service-perfdata.{t0}"),
            t0..t0 + 10,
            50,
            Duration::from_secs(100 - f as u64),
        ));
    }
    assert_eq!(keys.len(), 15_000);
    let carbon = FakeCarbon::start(0);
    let config = graphios_config(t, "queue_points = 10000");
    let run = graphios(
        &config,
        &spool,
        carbon.port,
        &["--once", "--timeout", "60s"],
        Duration::from_secs(90),
    );
    eprintln!(
        "30 files x 500 points through queue_points = 10000: {:?}",
        run.elapsed
    );
    assert_eq!(run.success, Some(true), "{}", run.stderr);
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "files stayed"
    );
    let received = carbon.received();
    let missing = keys.iter().filter(|k| !received.contains_key(*k)).count();
    assert_eq!(missing, 0, "{missing} points not forwarded");
    carbon.stop();
}
