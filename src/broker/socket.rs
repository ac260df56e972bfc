//! The socket system calls the broker makes beyond what `std::net` offers: a `send(2)` and a
//! `recv(2)` that never wait, on sockets that stay in blocking mode for their reader thread, and
//! the `poll(2)` the writer thread waits in. Each call is one syscall on a borrowed descriptor;
//! no thread of its own (reader threads, write-turn holders and the `writer` thread call it).

use std::io;
use std::net::TcpStream;
use std::os::unix::io::{AsRawFd, RawFd};

/// `recv(2)` with `MSG_DONTWAIT`: what the socket holds now, never waiting for more.
pub fn recv_nonblocking(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `buf`, which outlives the call; the descriptor
    // belongs to `stream`, borrowed for the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `recv(2)` with `MSG_PEEK | MSG_DONTWAIT`: what the socket holds now, left for its reader.
pub fn peek_nonblocking(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: as in `recv_nonblocking`.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// `send(2)` with `MSG_DONTWAIT`: never blocks, whatever the socket's mode, so the reader thread
/// can keep the same socket blocking for its reads.
pub fn send_nonblocking(stream: &TcpStream, data: &[u8]) -> io::Result<usize> {
    send_fd(stream.as_raw_fd(), data)
}

/// [`send_nonblocking`] on a descriptor borrowed from a socket the caller keeps alive (a TLS
/// pipe's state sends on the socket beside it).
pub fn send_fd(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT;
    // SAFETY: the pointer and length describe `data`, which outlives the call; the descriptor
    // belongs to a socket the caller keeps open for the call.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), FLAGS) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Bytes in the socket's send queue the peer has not acknowledged yet (`SIOCOUTQ`); `None`
/// where that cannot be asked. Lets a reader thread tell a client that takes nothing from one
/// that reads slowly.
pub fn unsent(stream: &TcpStream) -> Option<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer, which points at `n`
        // for the call; the descriptor belongs to `stream`, borrowed for the call.
        let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r == 0 {
            return usize::try_from(n).ok();
        }
        None
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = stream;
        None
    }
}

/// A `pollfd` asking for `events` on `fd`.
pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` over `fds` for at most `timeout_ms` (-1: no limit): how many have events.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is a live, initialised array of `nfds` pollfd structs, borrowed mutably for
    // the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
