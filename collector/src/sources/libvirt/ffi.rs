//! The only unsafe code of the agent: one libvirt connection, the raw
//! `virConnectGetAllDomainStats` call, decoding of its typed parameters and
//! the `virDomainStatsRecordListFree` that the `virt` crate forgets.
//!
//! # What this module owns
//!
//! - Process-wide libvirt setup, done once before the first connection:
//!   a no-op error handler (libvirt would otherwise print every error to
//!   stderr; we report errors ourselves), the default event loop
//!   implementation and a thread named `libvirt-events` that runs it for
//!   the life of the process. The event loop is what sends keepalive
//!   probes while no call is in progress.
//! - [`Connection`]: a read-only connection (`virConnectOpenReadOnly`),
//!   with keepalive set to [`KEEPALIVE_INTERVAL_S`] x [`KEEPALIVE_COUNT`]
//!   so that a dead or hung libvirtd makes calls fail within about 8 s
//!   instead of blocking forever. Closed on drop.
//! - [`Connection::all_domain_stats`]: one bulk call, decoded into owned
//!   [`DomainRecord`]s. The record list is freed by a guard on every path,
//!   including decode errors and panics.
//!
//! # What it does when things fail
//!
//! Every failure is a [`LibvirtError`] carrying libvirt's own message,
//! error code and error domain, and a verdict, [`LibvirtError::connection_lost`],
//! that tells the caller ([`super::conn`]) whether to reopen the connection
//! or only report the failed call.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use virt::sys;

use super::groups::Groups;
use super::params::{DomainRecord, Value, field_name};

/// Seconds between keepalive probes on an idle connection. With
/// [`KEEPALIVE_COUNT`] this detects a dead or stopped libvirtd within
/// about (3 + 1) x 2 = 8 s, well under the minute an operator would notice.
pub(crate) const KEEPALIVE_INTERVAL_S: c_int = 2;

/// Unanswered keepalive probes after which libvirt closes the connection.
pub(crate) const KEEPALIVE_COUNT: c_uint = 3;

/// How long the event loop thread waits after `virEventRunDefaultImpl`
/// fails before it tries again, so that a broken loop does not spin a core.
const EVENT_LOOP_RETRY: Duration = Duration::from_millis(100);

/// An error from libvirt, with the message libvirt gave.
#[derive(Debug, Clone, thiserror::Error)]
pub struct LibvirtError {
    /// libvirt's own text (virGetLastError), or ours if it gave none.
    pub(crate) message: String,
    /// What we were doing, e.g. `failed to open libvirt connection to
    /// qemu:///system`; printed before `message`. Empty when not known.
    pub(crate) context: String,
    /// Whether the connection is gone (daemon died, restarted, stopped
    /// answering keepalives) and must be reopened, as opposed to one call
    /// having failed on a healthy connection.
    pub(crate) connection_lost: bool,
}

impl fmt::Display for LibvirtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.context.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.context, self.message)
        }
    }
}

impl LibvirtError {
    /// An error of our own (not from libvirt) for a healthy connection.
    pub(crate) fn new(message: impl Into<String>) -> LibvirtError {
        LibvirtError {
            message: message.into(),
            context: String::new(),
            connection_lost: false,
        }
    }

    /// An error meaning the connection is gone; for fakes in tests.
    #[cfg(test)]
    pub(crate) fn lost(message: impl Into<String>) -> LibvirtError {
        LibvirtError {
            connection_lost: true,
            ..LibvirtError::new(message)
        }
    }

    /// Whether the connection is gone and must be reopened.
    pub(crate) fn is_connection_lost(&self) -> bool {
        self.connection_lost
    }

    /// Takes this thread's last libvirt error (and clears it), classified
    /// by its code and domain alone.
    fn last(context: impl Into<String>) -> LibvirtError {
        // SAFETY: virGetLastError returns NULL or a pointer to this thread's
        // error object, valid until the next libvirt call on this thread;
        // we copy everything out before making one.
        let err = unsafe {
            let p = sys::virGetLastError();
            let e = if p.is_null() {
                LibvirtError::new("unknown libvirt error (libvirt gave no message)")
            } else {
                let e = &*p;
                LibvirtError {
                    message: if e.message.is_null() {
                        "unknown libvirt error (libvirt gave no message)".to_owned()
                    } else {
                        CStr::from_ptr(e.message).to_string_lossy().into_owned()
                    },
                    context: String::new(),
                    connection_lost: is_lost_code(e.code, e.domain),
                }
            };
            sys::virResetLastError();
            e
        };
        LibvirtError {
            context: context.into(),
            ..err
        }
    }
}

/// Whether a libvirt error code and domain mean the connection itself is
/// gone, as opposed to one call failing.
///
/// Client transport errors carry the domain `VIR_FROM_RPC`: "End of file
/// while reading data" (`SYSTEM_ERROR`), "client socket is closed" and
/// "connection closed due to keepalive timeout" (`INTERNAL_ERROR`). A
/// `SYSTEM_ERROR` from any other domain is a failure on the daemon's side
/// (e.g. reading a file for one domain) and is not a lost connection.
fn is_lost_code(code: c_int, domain: c_int) -> bool {
    let Ok(code) = c_uint::try_from(code) else {
        return false;
    };
    let from_transport =
        c_uint::try_from(domain).is_ok_and(|d| d == sys::VIR_FROM_RPC || d == sys::VIR_FROM_REMOTE);
    match code {
        sys::VIR_ERR_NO_CONNECT | sys::VIR_ERR_INVALID_CONN => true,
        sys::VIR_ERR_RPC => true,
        sys::VIR_ERR_SYSTEM_ERROR | sys::VIR_ERR_INTERNAL_ERROR => from_transport,
        _ => false,
    }
}

/// libvirt's error callback: does nothing, so libvirt does not print errors
/// to stderr on its own. We read the error with `virGetLastError` instead.
unsafe extern "C" fn ignore_error(_user_data: *mut c_void, _error: sys::virErrorPtr) {}

/// One-time process-wide setup; see the module doc. Returns the same result
/// to every caller.
fn init_libvirt() -> Result<(), LibvirtError> {
    static INIT: OnceLock<Result<(), LibvirtError>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: plain libvirt setup calls with valid arguments; the
        // handler is a valid `extern "C"` function for the process lifetime.
        unsafe {
            sys::virSetErrorFunc(ptr::null_mut(), Some(ignore_error));
            if sys::virInitialize() < 0 {
                return Err(LibvirtError::last("failed to initialize libvirt"));
            }
            if sys::virEventRegisterDefaultImpl() < 0 {
                return Err(LibvirtError::last(
                    "failed to register libvirt's default event loop",
                ));
            }
        }
        thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| {
                loop {
                    // SAFETY: the default implementation was registered above.
                    if unsafe { sys::virEventRunDefaultImpl() } < 0 {
                        // SAFETY: clears this thread's error; no arguments.
                        unsafe { sys::virResetLastError() };
                        thread::sleep(EVENT_LOOP_RETRY);
                    }
                }
            })
            .map(drop)
            .map_err(|e| {
                LibvirtError::new(format!("failed to start the libvirt event thread: {e}"))
            })
    })
    .clone()
}

/// An open libvirt connection. Closed on drop.
pub struct Connection {
    /// The `virConnectPtr`; never null, owned (one reference).
    ptr: NonNull<sys::virConnect>,
    /// The URI it was opened with, for error messages.
    uri: String,
    /// Whether keepalive could be enabled: false for in-process drivers
    /// such as `test:///`, which have no daemon to lose.
    keepalive: bool,
}

// SAFETY: libvirt connections are thread-safe (every public API call locks
// the connection object), and we own one reference that Drop releases.
unsafe impl Send for Connection {}
// SAFETY: as above; `&Connection` only makes public API calls.
unsafe impl Sync for Connection {}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("uri", &self.uri)
            .field("keepalive", &self.keepalive)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens a read-only connection to `uri` (read-only is all the bulk
    /// stats call needs) and enables keepalive where the driver supports it.
    pub fn open(uri: &str) -> Result<Connection, LibvirtError> {
        let context = || format!("failed to open libvirt connection to {uri}");
        init_libvirt().map_err(|e| LibvirtError {
            context: format!("{}: {}", context(), e.context),
            ..e
        })?;
        let c_uri = CString::new(uri).map_err(|_| LibvirtError {
            context: context(),
            ..LibvirtError::new("the URI contains a NUL byte")
        })?;
        // SAFETY: c_uri is a valid NUL-terminated string for the call.
        let raw = unsafe { sys::virConnectOpenReadOnly(c_uri.as_ptr()) };
        let Some(ptr) = NonNull::new(raw) else {
            return Err(LibvirtError::last(context()));
        };
        // SAFETY: ptr is a live connection we own.
        let rc = unsafe {
            sys::virConnectSetKeepAlive(ptr.as_ptr(), KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        };
        if rc < 0 {
            // In-process drivers (test:///) do not support keepalive: fine,
            // there is no daemon to lose. Drop the error it left behind.
            // SAFETY: no arguments.
            unsafe { sys::virResetLastError() };
        }
        Ok(Connection {
            ptr,
            uri: uri.to_owned(),
            keepalive: rc == 0,
        })
    }

    /// Whether libvirt still considers the connection open
    /// (`virConnectIsAlive`); false once the daemon closed it or stopped
    /// answering keepalives.
    pub(crate) fn is_alive(&self) -> bool {
        // SAFETY: self.ptr is a live connection.
        let rc = unsafe { sys::virConnectIsAlive(self.ptr.as_ptr()) };
        if rc < 0 {
            // SAFETY: no arguments.
            unsafe { sys::virResetLastError() };
        }
        rc == 1
    }

    /// Bulk stats of every active domain for `groups`. A domain whose
    /// monitor another job holds (a migration, a snapshot) is returned
    /// without the fields that need the monitor instead of making the whole
    /// call wait up to 30 s for it (`NOWAIT`): one busy domain must not cost
    /// every other domain its samples.
    pub fn all_domain_stats(&self, groups: Groups) -> Result<Vec<DomainRecord>, LibvirtError> {
        self.all_domain_stats_with_flags(
            groups,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
                | sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
        )
    }

    /// Bulk stats for `groups` with explicit `VIR_CONNECT_GET_ALL_DOMAINS_STATS_*`
    /// flags, e.g. `ACTIVE | NOWAIT` to skip monitor queries of domains
    /// that another job holds instead of waiting up to 30 s for them.
    pub(crate) fn all_domain_stats_with_flags(
        &self,
        groups: Groups,
        flags: c_uint,
    ) -> Result<Vec<DomainRecord>, LibvirtError> {
        let mut list: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
        // SAFETY: self.ptr is live; `list` receives a NULL-terminated array
        // that we own and free through the guard.
        let n = unsafe {
            sys::virConnectGetAllDomainStats(self.ptr.as_ptr(), groups.mask(), &mut list, flags)
        };
        // The guard goes first so that the list is freed on every path.
        let guard = RecordList(list);
        if n < 0 {
            return Err(self.call_error(format!(
                "failed to get bulk domain stats ({groups}) from {}",
                self.uri
            )));
        }
        let records = guard.records(usize::try_from(n).unwrap_or(0));
        let mut out = Vec::with_capacity(records.len());
        for &rec in records {
            // SAFETY: every entry up to n is a valid record owned by the list,
            // which outlives this loop.
            out.push(unsafe { self.decode_record(&*rec) }?);
        }
        Ok(out)
    }

    /// Stats of one active domain, by UUID, for `groups` (`NOWAIT`, as
    /// [`Connection::all_domain_stats`]); `None` if no such domain runs.
    /// One call per domain is what keeps a domain whose QEMU stopped
    /// answering from stalling the others: only its own call waits.
    pub(crate) fn domain_stats(
        &self,
        uuid: &str,
        groups: Groups,
    ) -> Result<Option<DomainRecord>, LibvirtError> {
        let c_uuid = CString::new(uuid)
            .map_err(|_| LibvirtError::new(format!("domain UUID {uuid:?} contains a NUL byte")))?;
        // SAFETY: self.ptr is live and c_uuid a valid NUL-terminated string.
        let dom = unsafe { sys::virDomainLookupByUUIDString(self.ptr.as_ptr(), c_uuid.as_ptr()) };
        if dom.is_null() {
            let e = self.call_error(format!("failed to look up domain {uuid}"));
            // A domain that stopped since it was listed is no error.
            return if e.connection_lost { Err(e) } else { Ok(None) };
        }
        let dom = Domain(dom);
        let mut doms = [dom.0, ptr::null_mut()];
        let mut list: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
        // SAFETY: `doms` is a NULL-terminated array of one live domain of
        // this connection; `list` receives an array we own (freed by the
        // guard).
        let n = unsafe {
            sys::virDomainListGetStats(
                doms.as_mut_ptr(),
                groups.mask(),
                &mut list,
                sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT,
            )
        };
        let guard = RecordList(list);
        if n < 0 {
            return Err(self.call_error(format!(
                "failed to get stats ({groups}) of domain {uuid} from {}",
                self.uri
            )));
        }
        match guard.records(usize::try_from(n).unwrap_or(0)).first() {
            // SAFETY: a valid record owned by the list, which outlives this.
            Some(&rec) => Ok(Some(unsafe { self.decode_record(&*rec) }?)),
            None => Ok(None),
        }
    }

    /// The last error of a failed call on this connection; marked lost if
    /// its code says so or if libvirt says the connection is dead.
    fn call_error(&self, context: String) -> LibvirtError {
        // Read the error before is_alive(): every API call resets it.
        let mut e = LibvirtError::last(context);
        if !e.connection_lost && !self.is_alive() {
            e.connection_lost = true;
        }
        e
    }

    /// Decodes one record: the domain's UUID and name, and every typed
    /// parameter (unknown parameter types, from a newer libvirt, are skipped).
    ///
    /// # Safety
    /// `rec` must be a record of a list returned by
    /// `virConnectGetAllDomainStats`, not yet freed.
    unsafe fn decode_record(
        &self,
        rec: &sys::virDomainStatsRecord,
    ) -> Result<DomainRecord, LibvirtError> {
        const UUID_LEN: usize = sys::VIR_UUID_STRING_BUFLEN as usize;
        let mut uuid_buf: [c_char; UUID_LEN] = [0; UUID_LEN];
        // SAFETY: rec.dom is a live domain; the buffer has the documented size.
        if unsafe { sys::virDomainGetUUIDString(rec.dom, uuid_buf.as_mut_ptr()) } < 0 {
            return Err(self.call_error("failed to read a domain's UUID".to_owned()));
        }
        let uuid = field_name(&uuid_buf);
        // SAFETY: rec.dom is a live domain; the name lives as long as it.
        let name_ptr = unsafe { sys::virDomainGetName(rec.dom) };
        if name_ptr.is_null() {
            return Err(self.call_error(format!("failed to read the name of domain {uuid}")));
        }
        // SAFETY: non-null, NUL-terminated, owned by the domain object.
        let name = unsafe { CStr::from_ptr(name_ptr) }
            .to_string_lossy()
            .into_owned();
        let params: &[sys::virTypedParameter] = match usize::try_from(rec.nparams) {
            // SAFETY: libvirt gives nparams valid entries at rec.params.
            Ok(n) if n > 0 && !rec.params.is_null() => unsafe {
                std::slice::from_raw_parts(rec.params, n)
            },
            _ => &[],
        };
        // SAFETY: each entry is a valid typed parameter.
        let decoded = params.iter().filter_map(|p| unsafe { decode_param(p) });
        Ok(DomainRecord::new(uuid, name, decoded.collect()))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: we own one reference to a live connection.
        unsafe { sys::virConnectClose(self.ptr.as_ptr()) };
    }
}

/// Owns one `virDomainPtr` reference and frees it when dropped.
struct Domain(sys::virDomainPtr);

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: we own one reference to a live domain object.
        unsafe { sys::virDomainFree(self.0) };
    }
}

/// Owns the array returned by `virConnectGetAllDomainStats` and frees it,
/// domains included, with `virDomainStatsRecordListFree` when dropped.
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl RecordList {
    /// The first `n` records (stopping early at a NULL entry).
    fn records(&self, n: usize) -> &[sys::virDomainStatsRecordPtr] {
        if self.0.is_null() {
            return &[];
        }
        // SAFETY: the list holds n records followed by a NULL terminator;
        // counting non-null entries never reads past it.
        let all = unsafe { std::slice::from_raw_parts(self.0, n) };
        let valid = all.iter().take_while(|r| !r.is_null()).count();
        &all[..valid]
    }
}

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the list came from virConnectGetAllDomainStats and is
            // freed exactly once, here.
            unsafe { sys::virDomainStatsRecordListFree(self.0) };
        }
    }
}

/// `VIR_TYPED_PARAM_*` tags as the `type_` field holds them.
mod tag {
    use std::ffi::c_int;

    use virt::sys;

    pub(crate) const INT: c_int = sys::VIR_TYPED_PARAM_INT as c_int;
    pub(crate) const UINT: c_int = sys::VIR_TYPED_PARAM_UINT as c_int;
    pub(crate) const LLONG: c_int = sys::VIR_TYPED_PARAM_LLONG as c_int;
    pub(crate) const ULLONG: c_int = sys::VIR_TYPED_PARAM_ULLONG as c_int;
    pub(crate) const DOUBLE: c_int = sys::VIR_TYPED_PARAM_DOUBLE as c_int;
    pub(crate) const BOOLEAN: c_int = sys::VIR_TYPED_PARAM_BOOLEAN as c_int;
    pub(crate) const STRING: c_int = sys::VIR_TYPED_PARAM_STRING as c_int;
}

/// Decodes one typed parameter into an owned name and value; `None` for a
/// type this code does not know.
///
/// # Safety
/// The union member named by `p.type_` must be initialized, and a string
/// parameter's pointer must be NULL or a valid NUL-terminated string.
unsafe fn decode_param(p: &sys::virTypedParameter) -> Option<(String, Value)> {
    // SAFETY (all union reads): the tag says which member libvirt wrote.
    let value = unsafe {
        match p.type_ {
            tag::INT => Value::Int(p.value.i),
            tag::UINT => Value::UInt(p.value.ui),
            tag::LLONG => Value::LLong(p.value.l),
            tag::ULLONG => Value::ULLong(p.value.ul),
            tag::DOUBLE => Value::Double(p.value.d),
            tag::BOOLEAN => Value::Boolean(p.value.b != 0),
            tag::STRING => {
                let s = p.value.s;
                Value::String(if s.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(s).to_string_lossy().into_owned()
                })
            }
            _ => return None,
        }
    };
    Some((field_name(&p.field), value))
}

#[cfg(test)]
mod tests {
    use super::super::groups::Group;
    use super::*;

    /// The domain `test:///default` defines, running.
    const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

    fn param(name: &str, type_: c_int) -> sys::virTypedParameter {
        // SAFETY: all-zero is a valid virTypedParameter (plain C data).
        let mut p: sys::virTypedParameter = unsafe { std::mem::zeroed() };
        for (dst, b) in p.field.iter_mut().zip(name.bytes()) {
            #[allow(clippy::cast_possible_wrap)]
            let c = b as c_char;
            *dst = c;
        }
        p.type_ = type_;
        p
    }

    #[test]
    fn decodes_every_type() {
        let s = CString::new("vda").unwrap();
        let mut cases = Vec::new();
        let mut p = param("a.int", tag::INT);
        p.value.i = -3;
        cases.push((p, Value::Int(-3)));
        let mut p = param("a.uint", tag::UINT);
        p.value.ui = u32::MAX;
        cases.push((p, Value::UInt(u32::MAX)));
        let mut p = param("a.llong", tag::LLONG);
        p.value.l = i64::MIN;
        cases.push((p, Value::LLong(i64::MIN)));
        let mut p = param("cpu.time", tag::ULLONG);
        p.value.ul = u64::MAX;
        cases.push((p, Value::ULLong(u64::MAX)));
        let mut p = param("a.double", tag::DOUBLE);
        p.value.d = 0.25;
        cases.push((p, Value::Double(0.25)));
        let mut p = param("a.bool", tag::BOOLEAN);
        p.value.b = 1;
        cases.push((p, Value::Boolean(true)));
        let mut p = param("block.0.name", tag::STRING);
        p.value.s = s.as_ptr().cast_mut();
        cases.push((p, Value::String("vda".into())));
        let mut p = param("a.null_string", tag::STRING);
        p.value.s = ptr::null_mut();
        cases.push((p, Value::String(String::new())));

        for (p, want) in cases {
            let name = field_name(&p.field);
            // SAFETY: built above with the member matching the tag.
            let got = unsafe { decode_param(&p) };
            assert_eq!(got, Some((name.clone(), want)), "param {name}");
        }
    }

    #[test]
    fn skips_unknown_types() {
        let p = param("future.thing", 99);
        // SAFETY: the union is zeroed; an unknown tag reads nothing.
        assert_eq!(unsafe { decode_param(&p) }, None);
    }

    #[test]
    fn lost_classification() {
        let c = |x: c_uint| c_int::try_from(x).unwrap();
        let cases = [
            (sys::VIR_ERR_SYSTEM_ERROR, sys::VIR_FROM_RPC, true),
            (sys::VIR_ERR_INTERNAL_ERROR, sys::VIR_FROM_RPC, true),
            (sys::VIR_ERR_RPC, sys::VIR_FROM_REMOTE, true),
            (sys::VIR_ERR_NO_CONNECT, sys::VIR_FROM_NONE, true),
            (sys::VIR_ERR_SYSTEM_ERROR, sys::VIR_FROM_QEMU, false),
            (sys::VIR_ERR_INTERNAL_ERROR, sys::VIR_FROM_QEMU, false),
            (sys::VIR_ERR_OPERATION_TIMEOUT, sys::VIR_FROM_QEMU, false),
            (sys::VIR_ERR_NO_DOMAIN, sys::VIR_FROM_QEMU, false),
        ];
        for (code, domain, want) in cases {
            assert_eq!(
                is_lost_code(c(code), c(domain)),
                want,
                "code {code} domain {domain}"
            );
        }
    }

    #[test]
    fn test_driver_bulk_stats_has_state() {
        let conn = Connection::open("test:///default").expect("open test:///default");
        assert!(conn.is_alive());
        let recs = conn
            .all_domain_stats(Groups::from_iter([Group::State]))
            .expect("bulk stats");
        let rec = recs
            .iter()
            .find(|r| r.name == "test")
            .expect("record for domain `test`");
        assert_eq!(rec.uuid, TEST_UUID);
        // VIR_DOMAIN_RUNNING
        assert_eq!(rec.u64("state.state"), Some(1));
        assert!(rec.u64("state.reason").is_some());
    }

    #[test]
    fn test_driver_all_groups_is_freed_and_repeatable() {
        let conn = Connection::open("test:///default").expect("open test:///default");
        let all: Groups = Group::ALL.into_iter().collect();
        for _ in 0..1000 {
            let recs = conn.all_domain_stats(all).expect("bulk stats");
            assert_eq!(recs.len(), 1);
        }
    }

    #[test]
    fn open_error_carries_libvirt_message_and_context() {
        let err = Connection::open("nosuchdriver:///x").expect_err("must fail");
        assert!(!err.message.is_empty());
        let shown = err.to_string();
        assert!(
            shown.starts_with("failed to open libvirt connection to nosuchdriver:///x: "),
            "{shown}"
        );
    }

    #[test]
    fn open_rejects_nul_in_uri() {
        let err = Connection::open("test:///def\0ault").expect_err("must fail");
        assert!(err.to_string().contains("NUL"), "{err}");
    }
}
