//! The only unsafe code of the agent: one libvirt connection, the raw
//! `virConnectGetAllDomainStats` call, decoding of its typed parameters and
//! the `virDomainStatsRecordListFree` that the `virt` crate forgets.
//!
//! OWNER: libvirt helper. The interface below is fixed; fill it in.

use super::groups::Groups;
use super::params::DomainRecord;

/// An error from libvirt, with the message libvirt gave.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LibvirtError {
    /// libvirt's own text (virGetLastError), or ours if it gave none.
    pub message: String,
}

/// An open libvirt connection. Closed on drop.
pub struct Connection {
    _private: (),
}

impl Connection {
    /// Opens a read-only connection to `uri`.
    pub fn open(uri: &str) -> Result<Connection, LibvirtError> {
        let _ = uri;
        todo!()
    }

    /// Bulk stats of every active domain for `groups`.
    pub fn all_domain_stats(&self, groups: Groups) -> Result<Vec<DomainRecord>, LibvirtError> {
        let _ = groups;
        todo!()
    }
}
