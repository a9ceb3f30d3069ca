//! The TCP connection to Carbon: connect with a deadline, notice when
//! Carbon goes away, and retry with capped exponential backoff.
//!
//! Carbon never writes on its receiver ports, so the read half of the
//! socket is only watched: end-of-file or an error there means Carbon
//! closed or reset the connection, which is noticed at once rather than at
//! the next write. `TCP_USER_TIMEOUT` makes the kernel give up on a
//! connection whose data stays unacknowledged (a vanished peer, a
//! partition) after [`TCP_USER_TIMEOUT`] instead of retransmitting for
//! 15 minutes.
//!
//! [`State::event`] is the one future the sink's loop polls for all of
//! this: it completes when a retry is due, a connect attempt ends, or the
//! open connection ends.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;

use crate::backoff::Backoff;

/// How long one connect attempt (resolution included) may take: Carbon on
/// a LAN answers in milliseconds; a black-holed address must not hold up
/// the retries.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The first retry delay after a failure.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(500);

/// The retry delay never grows beyond this, so the agent is back within
/// seconds of Carbon (a fleet of 1,000 agents then costs Carbon 100
/// connection attempts a second while it is down: nothing).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Unacknowledged data older than this kills the connection (Linux
/// `TCP_USER_TIMEOUT`); the sink's replay window is longer, so whatever
/// such a connection swallowed is sent again.
pub(crate) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);

/// A connect attempt in progress.
type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// An open connection to Carbon.
pub(crate) struct Connection {
    /// Watched for end-of-file only.
    pub(crate) reader: OwnedReadHalf,
    /// Where encoded points are written.
    pub(crate) writer: OwnedWriteHalf,
    /// The address actually connected to.
    pub(crate) peer: SocketAddr,
}

/// Where the connection stands.
pub(crate) enum State {
    /// Not connected; the next attempt starts at `retry_at`.
    Idle {
        /// When to try again.
        retry_at: Instant,
    },
    /// A connect attempt is running.
    Connecting(Connecting),
    /// Connected.
    Connected(Connection),
}

/// What [`State::event`] reports.
#[derive(Debug)]
pub(crate) enum Event {
    /// The retry delay has passed: time to start connecting.
    RetryDue,
    /// A connect attempt succeeded.
    Connected(TcpStream),
    /// A connect attempt failed.
    ConnectFailed(io::Error),
    /// The open connection was closed by the peer (`None`) or failed.
    Closed(Option<io::Error>),
}

impl Default for State {
    /// Not connected, with the first attempt due now.
    fn default() -> State {
        State::Idle {
            retry_at: Instant::now(),
        }
    }
}

impl State {
    /// Whether a connection is open.
    pub(crate) fn is_connected(&self) -> bool {
        matches!(self, State::Connected(_))
    }

    /// Waits for the next thing that changes the state. Cancel-safe: the
    /// sink's loop drops this future whenever another branch wins.
    pub(crate) async fn event(&mut self) -> Event {
        match self {
            State::Idle { retry_at } => {
                tokio::time::sleep_until(*retry_at).await;
                Event::RetryDue
            }
            State::Connecting(attempt) => match attempt.as_mut().await {
                Ok(stream) => Event::Connected(stream),
                Err(e) => Event::ConnectFailed(e),
            },
            State::Connected(conn) => {
                let mut buf = [0u8; 512];
                loop {
                    match conn.reader.read(&mut buf).await {
                        Ok(0) => return Event::Closed(None),
                        // Carbon has nothing to say; ignore anything it does.
                        Ok(_) => continue,
                        Err(e) => return Event::Closed(Some(e)),
                    }
                }
            }
        }
    }
}

/// Starts a connect attempt to `host:port`.
pub(crate) fn start_connect(host: String, port: u16) -> State {
    State::Connecting(Box::pin(async move {
        match tokio::time::timeout(CONNECT_TIMEOUT, connect(&host, port)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {CONNECT_TIMEOUT:?}"),
            )),
        }
    }))
}

/// Resolves `host` and connects to the first address that answers.
async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let sock = socket2::SockRef::from(&stream);
                sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))?;
                return Ok(stream);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    }))
}

/// Splits a connected stream into a [`Connection`].
pub(crate) fn open(stream: TcpStream) -> io::Result<Connection> {
    let peer = stream.peer_addr()?;
    let (reader, writer) = stream.into_split();
    Ok(Connection {
        reader,
        writer,
        peer,
    })
}

/// How much each retry delay varies (±20%), so that agents restarted
/// together do not retry against one Carbon in lockstep.
pub(crate) const BACKOFF_JITTER: f64 = 0.2;

/// The Carbon connection's retry schedule.
pub(crate) fn backoff() -> Backoff {
    Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF, BACKOFF_JITTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connect_is_reported_and_a_listener_is_found() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut state = start_connect("127.0.0.1".into(), port);
        match state.event().await {
            Event::Connected(stream) => {
                let conn = open(stream).unwrap();
                assert_eq!(conn.peer.port(), port);
                state = State::Connected(conn);
            }
            other => panic!("expected a connection, got {other:?}"),
        }
        // The peer closing is noticed without writing anything.
        let (accepted, _) = listener.accept().await.unwrap();
        drop(accepted);
        assert!(matches!(state.event().await, Event::Closed(_)));
        drop(listener);
        let mut state = start_connect("127.0.0.1".into(), port);
        assert!(matches!(state.event().await, Event::ConnectFailed(_)));
    }
}
