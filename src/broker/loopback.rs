//! A bridge's way into this broker: a private loopback TCP pair whose server end is served by
//! an ordinary reader thread (`connection::run_with`, trusted), so the bridge's local side is
//! a real session of the broker — persistent queue, ACL, the page — with none of its code
//! copied. Not through the public listeners: it takes no pending or `max_clients` place, and
//! its CONNECT needs no password (the trust is given by the socket the broker made, never by
//! anything on the wire). Owns the `client-<id>` thread it starts.

use std::io;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::connection;
use super::pipe::Pipe;
use super::Broker;

/// Strangers that may connect to the short-lived listener before the bridge's own socket is
/// found among the accepted ones.
const MAX_STRANGERS: usize = 8;

/// Opens a loopback connection to `broker` and starts its reader thread; the client end is the
/// bridge's, to speak MQTT on.
pub fn connect(broker: &Arc<Broker>) -> io::Result<TcpStream> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let client = TcpStream::connect_timeout(&listener.local_addr()?, Duration::from_secs(5))?;
    let ours = client.local_addr()?;
    // Another local process may connect to the port in between: only the socket whose peer is
    // our own client end is trusted; the others are dropped unread.
    let (server, peer) = (0..MAX_STRANGERS)
        .find_map(|_| match listener.accept() {
            Ok((s, p)) if p == ours => Some(Ok((s, p))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "loopback: our own connection was not accepted",
            ))
        })?;
    drop(listener);
    let pipe = Arc::new(Pipe::plain(server));
    let conn_id = broker.next_conn_id();
    let b = broker.clone();
    thread::Builder::new()
        .name(format!("client-{conn_id}"))
        .stack_size(super::readers::READER_STACK)
        .spawn(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                connection::run_with(b, pipe, peer, conn_id, true)
            }));
            if result.is_err() {
                log::error!("bridge connection {conn_id}: handler panicked; connection dropped");
            }
        })?;
    Ok(client)
}
