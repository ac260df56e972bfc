//! MQTT over WebSockets (MQTT 5.0 §6, RFC 6455) as a layer of the connection's byte pipe, over
//! a plain or a TLS pipe. The reader thread does the HTTP/1.1 upgrade as the first thing it
//! reads (so it has the `connect_timeout` deadline and the socket stays in the pending pool
//! until its CONNECT is accepted, as a plain socket does), then unwraps frames straight into
//! the MQTT framing buffer: a data frame's payload is unmasked and handed over as it arrives,
//! never buffered whole, so one packet across several frames and several packets in one frame
//! need nothing special.
//!
//! The upgrade request is parsed by `httparse`, the accept key made by
//! `tungstenite::handshake::derive_accept_key` and frame headers parsed and written by
//! `tungstenite`'s `FrameHeader`: nothing of the wire format is hand-written here.
//!
//! Rules enforced: path `/mqtt` or `/` (else 404); `Sec-WebSocket-Protocol` must offer `mqtt`
//! and the server selects it ([MQTT-6.0.0-3/4]) — a client that offers none is refused with
//! 400, as the spec makes offering it a client duty and paho and MQTT.js always do; client
//! frames must be masked (else close 1002); binary data frames only ([MQTT-6.0.0-1]: text
//! closes with 1003); a data frame larger than `max_packet_size` plus header slack closes with
//! 1009 before its payload is read; ping is answered by pong; a close frame is answered by a
//! close with a status and the connection ends (a will is published, as for a dropped
//! connection, when no DISCONNECT came first). Server frames are unmasked.
//!
//! Writing: every frame (data from the outbox, pong or close from the reader, the upgrade
//! answer) goes whole into one buffer (`WsState::out`) under a short lock and is handed to the
//! inner pipe in order, so a pong never lands inside a data frame. The lock is never held
//! across a blocking call; for `wss` it is taken before the TLS state's (never after). The
//! outbox frames at most [`SEAL_CHUNK`] bytes at a time and only once the previous frame is
//! all in the kernel, and counts bytes as written only then, as for TLS.

use std::io::{self, Cursor};
use std::time::Instant;

use parking_lot::Mutex;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::pipe::{wait_writable, Pipe, SEAL_CHUNK};
use super::socket;
use crate::protocol::frame::FrameBuffer;

/// Longest upgrade request accepted (browsers send well under 2 KiB).
const MAX_REQUEST: usize = 8 * 1024;

/// What a data frame may carry beyond `max_packet_size`: an MQTT packet's fixed header.
pub const FRAME_SLACK: u64 = 8;

/// A WebSocket over a plain or TLS pipe.
pub struct WsPipe {
    inner: Pipe,
    /// Largest data frame payload accepted.
    max_frame: u64,
    /// The reader's side: only the reader thread takes it, never across a blocking read.
    read: Mutex<ReadState>,
    /// Frames (and the upgrade answer) not yet handed to the inner pipe: `out[sent..]`.
    state: Mutex<WsState>,
}

#[derive(Default)]
struct ReadState {
    upgraded: bool,
    /// Bytes read (TLS: plaintext) not yet parsed.
    raw: Vec<u8>,
    /// Payload bytes still to come of the current data frame, and its mask position.
    data_left: u64,
    mask: [u8; 4],
    mask_at: usize,
    /// A fragmented binary message is open: continuation frames are expected.
    in_message: bool,
    /// A close frame was answered: the next read ends.
    eof: bool,
}

#[derive(Default)]
struct WsState {
    out: Vec<u8>,
    sent: usize,
    /// Our close frame is queued: nothing more is sent.
    closed: bool,
}

/// Why a read ended the connection, with the close status sent.
fn protocol_error(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {msg}"))
}

impl WsPipe {
    pub fn new(inner: Pipe, max_frame: u64) -> WsPipe {
        WsPipe {
            inner,
            max_frame,
            read: Mutex::new(ReadState::default()),
            state: Mutex::new(WsState::default()),
        }
    }

    pub fn inner(&self) -> &Pipe {
        &self.inner
    }

    /// Reads once through the inner pipe and hands the MQTT bytes of what arrived to
    /// `frames`. `Ok(0)`: the peer closed (end of file, TLS close_notify, or a close frame).
    pub fn read_into(
        &self,
        chunk: &mut [u8],
        frames: &mut FrameBuffer,
        nonblocking: bool,
    ) -> io::Result<usize> {
        // The raw buffer is taken out so that no lock is held while the read waits.
        let mut raw = {
            let mut rd = self.read.lock();
            if rd.eof {
                return Ok(0);
            }
            std::mem::take(&mut rd.raw)
        };
        let n = self.inner.read_raw(chunk, &mut raw, nonblocking);
        let mut rd = self.read.lock();
        rd.raw = raw;
        let n = n?;
        if n == 0 {
            return Ok(0);
        }
        match self.process(&mut rd, frames) {
            Ok(true) => Ok(n),
            Ok(false) => {
                rd.eof = true;
                Ok(n)
            }
            Err(e) => Err(e),
        }
    }

    /// Parses what `rd.raw` holds. False once a close frame was answered.
    fn process(&self, rd: &mut ReadState, frames: &mut FrameBuffer) -> io::Result<bool> {
        if !rd.upgraded {
            if !self.upgrade(rd)? {
                return Ok(true);
            }
            rd.upgraded = true;
        }
        let mut pos = 0;
        let result = loop {
            if rd.data_left > 0 {
                let take =
                    (rd.raw.len() - pos).min(usize::try_from(rd.data_left).unwrap_or(usize::MAX));
                if take == 0 {
                    break Ok(true);
                }
                let (mask, mut at) = (rd.mask, rd.mask_at);
                for b in &mut rd.raw[pos..pos + take] {
                    *b ^= mask[at & 3];
                    at += 1;
                }
                rd.mask_at = at & 3;
                frames.extend(&rd.raw[pos..pos + take]);
                pos += take;
                rd.data_left -= take as u64;
                continue;
            }
            let mut cursor = Cursor::new(&rd.raw[pos..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => break Ok(true),
                Err(e) => break Err(self.fail(CloseCode::Protocol, &e.to_string())),
            };
            let header_len = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
            let Some(mask) = header.mask else {
                break Err(self.fail(CloseCode::Protocol, "unmasked client frame"));
            };
            if header.rsv1 || header.rsv2 || header.rsv3 {
                break Err(self.fail(CloseCode::Protocol, "reserved bits set"));
            }
            match header.opcode {
                OpCode::Data(Data::Binary) | OpCode::Data(Data::Continue) => {
                    let continuation = header.opcode == OpCode::Data(Data::Continue);
                    if continuation != rd.in_message {
                        break Err(self.fail(CloseCode::Protocol, "unexpected continuation"));
                    }
                    if len > self.max_frame {
                        break Err(self.fail(
                            CloseCode::Size,
                            &format!("frame of {len} bytes over the {} limit", self.max_frame),
                        ));
                    }
                    rd.in_message = !header.is_final;
                    rd.data_left = len;
                    rd.mask = mask;
                    rd.mask_at = 0;
                    pos += header_len;
                }
                OpCode::Data(_) => {
                    // [MQTT-6.0.0-1]: MQTT travels in binary frames only.
                    break Err(self.fail(CloseCode::Unsupported, "non-binary data frame"));
                }
                OpCode::Control(control) => {
                    if len > 125 || !header.is_final {
                        break Err(self.fail(CloseCode::Protocol, "bad control frame"));
                    }
                    let end = pos + header_len + len as usize;
                    if rd.raw.len() < end {
                        break Ok(true);
                    }
                    let mut payload = rd.raw[pos + header_len..end].to_vec();
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= mask[i & 3];
                    }
                    pos = end;
                    match control {
                        Control::Ping => {
                            self.send_frame(OpCode::Control(Control::Pong), &payload)?
                        }
                        Control::Pong => {}
                        Control::Close => {
                            // Echo the client's status (RFC 6455 §5.5.1), or say "normal".
                            let status = if payload.len() >= 2 {
                                payload[..2].to_vec()
                            } else {
                                u16::from(CloseCode::Normal).to_be_bytes().to_vec()
                            };
                            self.send_close(&status);
                            break Ok(false);
                        }
                        Control::Reserved(_) => {
                            break Err(self.fail(CloseCode::Protocol, "reserved opcode"))
                        }
                    }
                }
            }
        };
        rd.raw.drain(..pos);
        result
    }

    /// The HTTP upgrade: false while the request is incomplete; an error (after an HTTP
    /// answer) when it is refused.
    fn upgrade(&self, rd: &mut ReadState) -> io::Result<bool> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(&rd.raw) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if rd.raw.len() < MAX_REQUEST => return Ok(false),
            Ok(httparse::Status::Partial) => {
                return Err(self.refuse("431 Request Header Fields Too Large", "request too long"))
            }
            Err(e) => return Err(self.refuse("400 Bad Request", &e.to_string())),
        };
        let header = |name: &str| {
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .filter_map(|h| std::str::from_utf8(h.value).ok())
                .collect::<Vec<_>>()
        };
        let tokens = |name: &str| {
            header(name)
                .into_iter()
                .flat_map(|v| v.split(','))
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
        if path != "/mqtt" && path != "/" {
            return Err(self.refuse("404 Not Found", &format!("path {path}")));
        }
        let key = header("sec-websocket-key");
        let upgrade_ok = req.method == Some("GET")
            && tokens("upgrade").iter().any(|t| t == "websocket")
            && tokens("connection").iter().any(|t| t == "upgrade")
            && key.len() == 1;
        if !upgrade_ok {
            return Err(self.refuse("400 Bad Request", "not a WebSocket upgrade"));
        }
        if !tokens("sec-websocket-version").iter().any(|t| t == "13") {
            return Err(self.refuse(
                "426 Upgrade Required\r\nSec-WebSocket-Version: 13",
                "version",
            ));
        }
        if !tokens("sec-websocket-protocol").iter().any(|t| t == "mqtt") {
            return Err(self.refuse(
                "400 Bad Request",
                "Sec-WebSocket-Protocol does not offer mqtt",
            ));
        }
        let accept = tungstenite::handshake::derive_accept_key(key[0].trim().as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        rd.raw.drain(..len);
        let mut st = self.state.lock();
        st.out.extend_from_slice(answer.as_bytes());
        self.pump(&mut st)?;
        Ok(true)
    }

    /// Answers a refused upgrade with `status` and closes: the error for the reader.
    fn refuse(&self, status: &str, why: &str) -> io::Error {
        let mut st = self.state.lock();
        st.out.extend_from_slice(
            format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        st.closed = true;
        let _ = self.pump(&mut st);
        if let Pipe::Tls(t) = &self.inner {
            t.close_notify();
        }
        protocol_error(&format!("upgrade refused ({status}): {why}"))
    }

    /// Sends a close frame with `code` and returns the error that ends the connection.
    fn fail(&self, code: CloseCode, why: &str) -> io::Error {
        self.send_close(&u16::from(code).to_be_bytes());
        protocol_error(&format!("{why} (close {})", u16::from(code)))
    }

    fn send_frame(&self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        if st.closed {
            return Ok(());
        }
        frame_into(&mut st.out, opcode, payload);
        self.pump(&mut st).map(|_| ())
    }

    /// Queues our close frame (once) and sends what the socket takes now.
    fn send_close(&self, status: &[u8]) {
        let mut st = self.state.lock();
        if !st.closed {
            frame_into(&mut st.out, OpCode::Control(Control::Close), status);
            st.closed = true;
        }
        let _ = self.pump(&mut st);
        if let Pipe::Tls(t) = &self.inner {
            t.close_notify();
        }
    }

    /// Close frame 1000 (the server's own end of the connection, after its last packet).
    pub fn close_normal(&self) {
        self.send_close(&u16::from(CloseCode::Normal).to_be_bytes());
    }

    /// Hands `out[sent..]` to the inner pipe without blocking: true when all of it (and, for
    /// TLS, all its records) is in the kernel.
    fn pump(&self, st: &mut WsState) -> io::Result<bool> {
        loop {
            if !self.inner.flush_nonblocking()? {
                return Ok(false);
            }
            if st.sent >= st.out.len() {
                break;
            }
            let n = match &self.inner {
                Pipe::Plain(s) => match socket::send_nonblocking(s, &st.out[st.sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                    Err(e) => return Err(e),
                },
                inner => inner.seal(&st.out[st.sent..])?,
            };
            st.sent += n;
        }
        st.sent = 0;
        super::pipe::empty_send_buffer(&mut st.out);
        Ok(true)
    }

    pub fn flush_nonblocking(&self) -> io::Result<bool> {
        let mut st = self.state.lock();
        self.pump(&mut st)
    }

    pub fn has_unsent(&self) -> bool {
        let st = self.state.lock();
        st.sent < st.out.len() || self.inner.has_unsent()
    }

    /// Frames up to [`SEAL_CHUNK`] bytes of `plain` as one binary frame and sends what the
    /// socket takes now: how many bytes were framed. Call only once everything is sent.
    pub fn seal(&self, plain: &[u8]) -> io::Result<usize> {
        let plain = &plain[..plain.len().min(SEAL_CHUNK)];
        let mut st = self.state.lock();
        if st.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        frame_into(&mut st.out, OpCode::Data(Data::Binary), plain);
        self.pump(&mut st)?;
        Ok(plain.len())
    }

    pub fn flush_until(&self, deadline: Instant) -> io::Result<()> {
        while !self.flush_nonblocking()? {
            wait_writable(self.inner.tcp(), deadline)?;
        }
        Ok(())
    }

    /// `data` whole as binary frames, then a close frame: for a refused CONNECT.
    pub fn write_all_until(&self, data: &[u8], deadline: Instant) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            self.flush_until(deadline)?;
            done += self.seal(&data[done..])?;
        }
        self.close_normal();
        self.flush_until(deadline)
    }
}

/// One whole unmasked frame (server frames are never masked, RFC 6455 §5.1).
fn frame_into(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend_from_slice(payload);
}
