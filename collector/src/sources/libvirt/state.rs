//! The `state` group: the domain's libvirt state and reason codes
//! (`virDomainState`: 1 running, 3 paused, 5 shut off, ...), as gauges.

use super::derive::{Derived, Interval};

/// Derives `state.code` and `state.reason`.
pub(crate) fn derive(i: &Interval<'_>, out: &mut Derived) {
    let cur = i.cur;
    out.put("state.code", cur.u64("state.state").map(|v| v as f64));
    out.put("state.reason", cur.u64("state.reason").map(|v| v as f64));
}
