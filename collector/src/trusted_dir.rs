//! Directories the agent writes into as root (the query socket's, the
//! Carbon spool) or reads and deletes in (the Nagios perfdata spool):
//! each opened once, then every file in it created, opened, renamed and
//! removed relative to that open directory, never through a link.
//!
//! # Why
//! The agent runs as root on shared compute nodes. A directory another
//! user can write to lets them put a symlink, a FIFO or their own socket
//! under a name the agent is about to use, or swap the directory itself,
//! and so have root write, chmod or delete a file of their choosing. So:
//! - [`Dir::open_trusted`] refuses a directory that is a symlink, is not
//!   owned by the agent's effective user (root, or the service user it
//!   runs as), or is writable by its group or by others. The error names
//!   the path, the owner's uid and the mode in octal, and says what to do.
//! - [`Dir::open`] (for a directory that belongs to another service: the
//!   Nagios perfdata spool is Nagios's) checks no ownership, but pins the
//!   directory: renaming or re-pointing its path later redirects nothing.
//! - Files are created with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC` and mode
//!   0600; they are read only if `fstatat(AT_SYMLINK_NOFOLLOW)` says they
//!   are regular files, and then opened with `O_NOFOLLOW|O_NONBLOCK` and
//!   checked again on the descriptor, so a symlink, FIFO or device is never
//!   followed, opened or read. Renames and removals are the `*at` calls on
//!   the directory's descriptor; the directory is fsynced after a rename,
//!   so the new name survives a crash.
//! - Ownership changes go through `fchown` on an open descriptor or
//!   `fchownat(..., AT_SYMLINK_NOFOLLOW)`, never a path-following call.
//!   Group names are looked up through NSS (`getgrnam_r`), so a group from
//!   LDAP or sssd works like one in `/etc/group`.
//!
//! # When things fail
//! Opening errors name the directory and what it is for (`what`, e.g.
//! "Carbon spool"); file operations return `io::Error` for the caller to
//! put in context. Callers decide what is fatal.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;

/// Mode of the files the agent creates in these directories: only its own
/// user may read them (the query socket is made with its own mode).
pub(crate) const FILE_MODE: u32 = 0o600;

/// Group and other write bits: either makes a directory untrusted.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// An open directory; every operation on its files goes through its
/// descriptor.
#[derive(Debug)]
pub(crate) struct Dir {
    /// The path it was opened by (for messages only).
    path: PathBuf,
    /// What it is for, e.g. "Carbon spool" (for messages).
    what: &'static str,
    /// The directory itself, pinned.
    fd: OwnedFd,
}

/// Flags every directory is opened with.
fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

impl Dir {
    /// Opens the `what` directory at `path` (following a symlink there,
    /// once) without checking who owns it.
    pub(crate) fn open(path: &Path, what: &'static str) -> Result<Dir> {
        let fd = rustix::fs::open(path, dir_flags(), Mode::empty())
            .map_err(io::Error::from)
            .with_context(|| format!("failed to open the {what} directory {}", path.display()))?;
        Ok(Dir {
            path: path.to_path_buf(),
            what,
            fd,
        })
    }

    /// Opens the `what` directory at `path` and checks that only the
    /// agent's user can change it: not a symlink, owned by our effective
    /// uid, not writable by group or others.
    pub(crate) fn open_trusted(path: &Path, what: &'static str) -> Result<Dir> {
        let fd = match rustix::fs::open(path, dir_flags() | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR)
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                bail!(
                    "the {what} directory {} is a symbolic link; refusing to use it\n\
                     point the setting at the real directory (owned by this agent's user, not writable by group or others)",
                    path.display()
                );
            }
            Err(e) => {
                return Err(io::Error::from(e)).with_context(|| {
                    format!("failed to open the {what} directory {}", path.display())
                });
            }
        };
        let st = rustix::fs::fstat(&fd)
            .map_err(io::Error::from)
            .with_context(|| {
                format!("failed to look at the {what} directory {}", path.display())
            })?;
        check(&st, rustix::process::geteuid().as_raw(), path, what)?;
        Ok(Dir {
            path: path.to_path_buf(),
            what,
            fd,
        })
    }

    /// As [`Dir::open_trusted`], creating the directory first (mode
    /// `mode`, its missing parents as `mkdir -p` would) if it does not
    /// exist; `true` with it if it was created.
    pub(crate) fn create_trusted(
        path: &Path,
        what: &'static str,
        mode: u32,
    ) -> Result<(Dir, bool)> {
        let created = match std::fs::symlink_metadata(path) {
            Ok(_) => false,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).with_context(|| {
                        format!("failed to create the {what} directory {}", path.display())
                    })?;
                }
                match std::fs::DirBuilder::new().mode(mode).create(path) {
                    Ok(()) => true,
                    // Created by someone else meanwhile: checked below.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("failed to create the {what} directory {}", path.display())
                        });
                    }
                }
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("failed to look at the {what} directory {}", path.display())
                });
            }
        };
        let dir = Dir::open_trusted(path, what)?;
        if created {
            // The umask may have taken bits away.
            rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(mode))
                .map_err(io::Error::from)
                .with_context(|| format!("failed to set the mode of {}", path.display()))?;
        }
        Ok((dir, created))
    }

    /// The path the directory was opened by.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `name` under the directory's path, for messages.
    pub(crate) fn display(&self, name: impl AsRef<OsStr>) -> String {
        self.path.join(name.as_ref()).display().to_string()
    }

    /// The names in the directory (not `.` and `..`), in no particular
    /// order.
    pub(crate) fn names(&self) -> Result<Vec<OsString>> {
        let context = || {
            format!(
                "failed to read the {} directory {}",
                self.what,
                self.path.display()
            )
        };
        let entries = rustix::fs::Dir::read_from(&self.fd)
            .map_err(io::Error::from)
            .with_context(context)?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io::Error::from).with_context(context)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }

    /// What `name` is, not following a symlink.
    pub(crate) fn stat(&self, name: impl AsRef<OsStr>) -> io::Result<Stat> {
        Ok(rustix::fs::statat(
            &self.fd,
            name.as_ref(),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Creates `name`, which must not exist (not even as a dangling
    /// symlink), for writing, mode [`FILE_MODE`].
    pub(crate) fn create_new(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(
            &self.fd,
            name.as_ref(),
            flags,
            Mode::from_raw_mode(FILE_MODE),
        )?;
        Ok(File::from(fd))
    }

    /// Opens `name` for reading if it is a regular file, with what it is;
    /// `Ok(None)` for anything else (a symlink, a FIFO, a device, a socket,
    /// a directory), which is never opened.
    pub(crate) fn open_regular(&self, name: impl AsRef<OsStr>) -> io::Result<Option<(File, Stat)>> {
        let name = name.as_ref();
        if !is_regular(&self.stat(name)?) {
            return Ok(None);
        }
        // Checked again on the descriptor: the name may have changed
        // since. O_NONBLOCK so that a FIFO put there meanwhile does not
        // block the open.
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if !is_regular(&st) {
            return Ok(None);
        }
        Ok(Some((File::from(fd), st)))
    }

    /// Renames `from` to `to` (which must not exist) and fsyncs the
    /// directory, so the new name is on disk when this returns.
    pub(crate) fn rename_new(
        &self,
        from: impl AsRef<OsStr>,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        rustix::fs::renameat_with(
            &self.fd,
            from.as_ref(),
            &self.fd,
            to.as_ref(),
            RenameFlags::NOREPLACE,
        )?;
        self.sync()
    }

    /// Removes `name` (a symlink itself, never its target).
    pub(crate) fn remove(&self, name: impl AsRef<OsStr>) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.fd,
            name.as_ref(),
            AtFlags::empty(),
        )?)
    }

    /// Flushes the directory's entries to disk.
    pub(crate) fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// Gives `name` (not a symlink's target) the group `gid`.
    pub(crate) fn set_group_of(&self, name: impl AsRef<OsStr>, gid: u32) -> io::Result<()> {
        Ok(rustix::fs::chownat(
            &self.fd,
            name.as_ref(),
            None,
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Gives the directory itself the group `gid`.
    pub(crate) fn set_group(&self, gid: u32) -> io::Result<()> {
        Ok(rustix::fs::fchown(
            &self.fd,
            None,
            Some(Gid::from_raw(gid)),
        )?)
    }
}

/// What identifies a file and its state, in fixed types (the raw `stat`
/// fields' types differ between architectures).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    /// Device.
    pub(crate) dev: u64,
    /// Inode.
    pub(crate) ino: u64,
    /// Size in bytes.
    pub(crate) size: u64,
    /// Modification time: seconds and nanoseconds.
    pub(crate) mtime: (i64, i64),
}

/// The [`FileId`] of `st`.
#[allow(
    clippy::unnecessary_cast,
    reason = "the field types differ between architectures"
)]
pub(crate) fn file_id(st: &Stat) -> FileId {
    FileId {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: st.st_size as u64,
        mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
    }
}

/// Whether `st` is a regular file.
pub(crate) fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode as _) == FileType::RegularFile
}

/// Whether `st` is a socket.
pub(crate) fn is_socket(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode as _) == FileType::Socket
}

/// Refuses a directory (`st`, at `path`) that someone but `euid` could
/// change.
fn check(st: &Stat, euid: u32, path: &Path, what: &str) -> Result<()> {
    let (uid, mode) = (st.st_uid, st.st_mode & 0o7777);
    let problem = if uid != euid {
        format!("is owned by uid {uid}, not by this agent's user (uid {euid})")
    } else if mode & GROUP_OTHER_WRITE != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and by others",
            (true, false) => "its group",
            _ => "others",
        };
        format!("is writable by {who}")
    } else {
        return Ok(());
    };
    bail!(
        "the {what} directory {} {problem} (owner uid {uid}, mode {mode:04o}): another user could replace what the agent writes there; refusing to use it\n\
         make it owned by uid {euid} and not writable by group or others (chown {euid} DIR; chmod go-w DIR), or choose a directory that is",
        path.display()
    )
}

/// Held by whoever has changed the umask, so that two changes never
/// interleave and restore the wrong one.
static UMASK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets the process's umask for as long as it lives (it is
/// process-wide: keep it short), then restores the old one.
pub(crate) struct Umask {
    /// The umask to restore.
    old: Mode,
    /// Keeps other changes out until this one is undone.
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Umask {
    /// Sets the umask to `mask`.
    pub(crate) fn set(mask: u32) -> Umask {
        let lock = UMASK_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Umask {
            old: rustix::process::umask(Mode::from_raw_mode(mask)),
            _lock: lock,
        }
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        rustix::process::umask(self.old);
    }
}

/// Largest buffer offered to `getgrnam_r`: a group with thousands of
/// members needs a few hundred kB.
const MAX_GROUP_BUF_BYTES: usize = 16 << 20;

/// The id of group `name` as NSS knows it (`/etc/group`, LDAP, sssd,
/// whatever `nsswitch.conf` says); `Ok(None)` if there is no such group.
pub(crate) fn group_id(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a group name cannot hold a NUL byte",
        )
    })?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `libc::group` is plain data (integers and pointers), for
        // which all zeroes is a valid value.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: the name is a
        // NUL-terminated string, `group` and `found` are live locals, and
        // `buf` is writable for `buf.len()` bytes. Only `gr_gid` is read
        // afterwards, which points into nothing.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(group.gr_gid)),
            // Some NSS modules say "not found" with one of these.
            libc::ENOENT | libc::ESRCH => return Ok(None),
            libc::ERANGE if buf.len() < MAX_GROUP_BUF_BYTES => {
                let bigger = buf.len() * 2;
                buf.resize(bigger, 0);
            }
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn directories_others_could_change_are_refused_with_path_owner_and_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let euid = rustix::process::geteuid().as_raw();
        let ok = tmp.path().join("ok");
        std::fs::create_dir(&ok).unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o755)).unwrap();
        Dir::open_trusted(&ok, "test").unwrap();

        for (mode, want) in [
            (0o775, "is writable by its group"),
            (0o757, "is writable by others"),
            (0o1777, "is writable by its group and by others"),
        ] {
            let d = tmp.path().join(format!("m{mode:o}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = format!("{:#}", Dir::open_trusted(&d, "test").unwrap_err());
            assert!(err.contains(want), "{err}");
            assert!(err.contains(&d.display().to_string()), "{err}");
            assert!(
                err.contains(&format!("owner uid {euid}, mode {mode:04o}")),
                "{err}"
            );
        }

        // Somebody else's directory (a fake euid stands for "not ours").
        let st = rustix::fs::stat(&ok).unwrap();
        let err = format!("{:#}", check(&st, euid + 1, &ok, "test").unwrap_err());
        assert!(
            err.contains(&format!(
                "is owned by uid {euid}, not by this agent's user (uid {})",
                euid + 1
            )),
            "{err}"
        );
        assert!(err.contains("mode 0755"), "{err}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        let err = format!("{:#}", Dir::open_trusted(&link, "test").unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        // Not checked, but followed once and pinned: for other services'
        // directories.
        Dir::open(&link, "test").unwrap();
    }

    #[test]
    fn created_directories_get_their_mode_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/spool");
        let (_, created) = {
            let _umask = Umask::set(0o077);
            Dir::create_trusted(&path, "test", 0o750).unwrap()
        };
        assert!(created);
        assert_eq!(mode_of(&path), 0o750);
        let (_, created) = Dir::create_trusted(&path, "test", 0o750).unwrap();
        assert!(!created);
    }

    #[test]
    fn files_are_never_followed_through_links_nor_read_unless_regular() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        let dir = Dir::open_trusted(&d, "test").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("x.tmp")).unwrap();
        // O_EXCL|O_NOFOLLOW: a planted link is an error, not a write.
        assert!(dir.create_new("x.tmp").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(dir.open_regular("x.tmp").unwrap().is_none());
        rustix::fs::mknodat(
            &dir.fd,
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(dir.open_regular("fifo").unwrap().is_none());
        // Removing the link removes the link.
        dir.remove("x.tmp").unwrap();
        assert!(victim.exists());

        let mut f = dir.create_new("a.tmp").unwrap();
        f.write_all(b"hello").unwrap();
        assert_eq!(mode_of(&d.join("a.tmp")), FILE_MODE);
        dir.rename_new("a.tmp", "a").unwrap();
        let (mut f, st) = dir.open_regular("a").unwrap().unwrap();
        let mut text = String::new();
        f.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), st.st_size), ("hello", 5));
        // Renaming never replaces.
        dir.create_new("b").unwrap();
        assert!(dir.rename_new("b", "a").is_err());
        let mut names = dir.names().unwrap();
        names.sort();
        assert_eq!(names, vec!["a", "b", "fifo"]);
    }

    #[test]
    fn groups_are_looked_up_through_nss() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("no-such-group-hyper-stats").unwrap(), None);
        assert!(group_id("a\0b").is_err());
    }
}
