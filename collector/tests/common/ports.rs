//! Free TCP ports on 127.0.0.1 for the daemons a test starts.

use std::net::TcpListener;

/// `N` distinct ports nothing listens on: all `N` are bound at once, so
/// they differ, then released for the caller's daemons.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A port nothing listens on.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}
