//! A TCP proxy on 127.0.0.1 in front of one loopback server, to put network faults between a
//! client and that server while the test watches: [`TcpProxy::cut`], [`TcpProxy::blackhole`],
//! one-way loss of NATS publishes ([`TcpProxy::drop_publishes`]) and back to
//! [`TcpProxy::pass`].
//!
//! The proxy runs on a thread of its own (a current-thread tokio runtime), so it forwards
//! whatever the test's runtime is doing, and works from plain `#[test]`s too. Dropping the
//! handle stops it and closes every connection.
//!
//! What each fault looks like to the client:
//! - **cut**: every open connection is closed at once (FIN); new connections are reset right
//!   after the handshake (`SO_LINGER` 0), which the client reads as a refused connection. The
//!   listener stays bound, so no other process can take the port while the cut lasts.
//! - **blackhole**: sockets stay open and nothing is read from either side, so bytes wait in
//!   the kernel's buffers as they would in retransmission queues during a partition shorter
//!   than TCP's retransmission timeout: nothing is lost, nothing arrives, and no side sees a
//!   close. New connections are accepted and held the same way (no RST, no data, not even the
//!   server's greeting, since the server is only dialled once the blackhole ends).
//! - **drop publishes**: bytes flow both ways, but the client-to-server direction is read as
//!   the NATS client protocol and every `PUB`/`HPUB` frame whose subject starts with the prefix
//!   is left out whole (control line, headers, payload); every other byte passes verbatim.
//!   Only plain-text NATS can be filtered; in the other modes the bytes are never interpreted.

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::{Error, ErrorKind, Result};

/// What the proxy does to traffic, set from the test at any moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Pass,
    Cut,
    Blackhole,
    /// Client-to-server `PUB`/`HPUB` frames with a subject starting with this prefix vanish.
    DropPublishes(String),
}

/// What the proxy has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and forwarded (or held, while blackholed).
    pub accepted: u64,
    /// Connections reset on arrival because the proxy was cut.
    pub refused: u64,
    /// `PUB`/`HPUB` frames left out by [`ProxyMode::DropPublishes`].
    pub dropped_publishes: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    dropped_publishes: AtomicU64,
}

/// A proxy listening on its own 127.0.0.1 port; see the module documentation.
pub struct TcpProxy {
    address: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Largest read per socket; a frame bigger than this is filtered across several reads.
const READ_BUFFER: usize = 64 * 1024;

impl TcpProxy {
    /// Starts a proxy in [`ProxyMode::Pass`] in front of `upstream`, which must be a loopback
    /// address (tests never reach beyond the machine).
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        if !upstream.ip().is_loopback() {
            return Err(Error::new(
                ErrorKind::Spawn,
                format!("proxy upstream {upstream} is not a loopback address"),
            ));
        }
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|e| Error::io(ErrorKind::Spawn, "binding the proxy on 127.0.0.1", e))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::io(ErrorKind::Spawn, "reading the proxy's address", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io(ErrorKind::Spawn, "building the proxy's runtime", e))?;
        let (mode, mode_watch) = watch::channel(ProxyMode::Pass);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = oneshot::channel();
        let served = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name(format!("tcp-proxy-{}", address.port()))
            .spawn(move || {
                // Leaving `block_on` drops the runtime, which cancels every connection task and
                // closes its sockets.
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::select! {
                                _ = stopped => {}
                                () = serve(listener, upstream, mode_watch, served) => {}
                            }
                        }
                        Err(error) => eprintln!("tcp proxy {address}: {error}"),
                    }
                });
            })
            .map_err(|e| Error::io(ErrorKind::Spawn, "starting the proxy thread", e))?;
        Ok(Self {
            address,
            mode,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A proxy in front of a server on 127.0.0.1 `port`.
    pub fn in_front_of(port: u16) -> Result<Self> {
        Self::start(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `nats://127.0.0.1:<port>` of the proxy, for a client that should go through it.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.address)
    }

    pub fn mode(&self) -> ProxyMode {
        self.mode.borrow().clone()
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            accepted: self.counters.accepted.load(Ordering::Relaxed),
            refused: self.counters.refused.load(Ordering::Relaxed),
            dropped_publishes: self.counters.dropped_publishes.load(Ordering::Relaxed),
        }
    }

    /// Forwards everything again; held connections are dialled through, held bytes flow.
    pub fn pass(&self) {
        self.set(ProxyMode::Pass);
    }

    /// Closes every connection now and resets new ones until the next mode change.
    pub fn cut(&self) {
        self.set(ProxyMode::Cut);
    }

    /// Stops forwarding in both directions without closing anything.
    pub fn blackhole(&self) {
        self.set(ProxyMode::Blackhole);
    }

    /// Leaves out the client's `PUB`/`HPUB` frames whose subject starts with `subject_prefix`.
    pub fn drop_publishes(&self, subject_prefix: &str) {
        self.set(ProxyMode::DropPublishes(subject_prefix.to_owned()));
    }

    fn set(&self, mode: ProxyMode) {
        eprintln!("tcp proxy {}: {mode:?}", self.address);
        self.mode.send_replace(mode);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<ProxyMode>,
    counters: Arc<Counters>,
) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of descriptors, say: the client retries, as it would with a real server.
                eprintln!("tcp proxy {upstream}: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if *mode.borrow() == ProxyMode::Cut {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            // Linger 0 makes the close a reset: the client reads it as a refusal.
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let (mode, counters) = (mode.clone(), Arc::clone(&counters));
        tokio::spawn(async move {
            connection(client, upstream, mode, counters).await;
        });
    }
}

/// Waits until `mode` lets bytes flow; `None` = cut (the connection must close).
async fn flowing(mode: &mut watch::Receiver<ProxyMode>) -> Option<ProxyMode> {
    loop {
        let current = mode.borrow_and_update().clone();
        match current {
            ProxyMode::Cut => return None,
            ProxyMode::Blackhole => {}
            flowing => return Some(flowing),
        }
        if mode.changed().await.is_err() {
            return None;
        }
    }
}

/// Resolves once the proxy is cut.
async fn cut(mut mode: watch::Receiver<ProxyMode>) {
    while *mode.borrow_and_update() != ProxyMode::Cut {
        if mode.changed().await.is_err() {
            return;
        }
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<ProxyMode>,
    counters: Arc<Counters>,
) {
    // A connection accepted during a blackhole is held without dialling the server, so the
    // client sees an open socket that says nothing.
    if flowing(&mut mode).await.is_none() {
        return;
    }
    let server = tokio::select! {
        server = TcpStream::connect(upstream) => server,
        () = cut(mode.clone()) => return,
    };
    let Ok(server) = server else {
        // Nothing listens upstream: the client sees its connection closed.
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending (close, error, cut) ends the connection: dropping the halves
    // closes both sockets.
    tokio::select! {
        () = pump(client_read, server_write, mode.clone(), Some(&counters)) => {}
        () = pump(server_read, client_write, mode.clone(), None) => {}
        () = cut(mode) => {}
    }
}

/// Copies `from` to `to` while the mode lets bytes flow. With `filter` (the client-to-server
/// direction) the bytes go through a [`PublishFilter`], which drops frames only in
/// [`ProxyMode::DropPublishes`] but follows frame boundaries in every mode, so a switch between
/// modes never lands in the middle of a frame.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<ProxyMode>,
    filter: Option<&Counters>,
) {
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut frames = PublishFilter::default();
    let mut out = Vec::with_capacity(READ_BUFFER);
    loop {
        let Some(current) = flowing(&mut mode).await else {
            return;
        };
        // A read still pending when the mode changes is cancelled (reads of a TCP stream are
        // cancel-safe), and the change is looked at first: bytes sent after the test set a
        // blackhole are never read before it takes effect.
        let read = tokio::select! {
            biased;
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            read = from.read(&mut buffer) => read,
        };
        let chunk = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => &buffer[..n],
        };
        let written = match filter {
            None => to.write_all(chunk).await,
            Some(counters) => {
                let prefix = match &current {
                    ProxyMode::DropPublishes(prefix) => Some(prefix.as_bytes()),
                    _ => None,
                };
                out.clear();
                let dropped = frames.feed(chunk, prefix, &mut out);
                counters
                    .dropped_publishes
                    .fetch_add(dropped, Ordering::Relaxed);
                to.write_all(&out).await
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// Follows the NATS client protocol (`PUB <subject> [reply] <bytes>`, `HPUB <subject> [reply]
/// <header bytes> <total bytes>`, each followed by its payload and CRLF; every other operation
/// is one line) across reads, and leaves out publish frames by subject.
#[derive(Debug, Default)]
struct PublishFilter {
    /// The control line read so far (without its end).
    line: Vec<u8>,
    /// How much of `line` was already forwarded (no prefix was set when it arrived); such a
    /// frame is kept whatever the prefix is by the time its line ends.
    line_forwarded: usize,
    /// Payload bytes (with their CRLF) still to come, and whether they are forwarded.
    payload: Option<(usize, bool)>,
}

impl PublishFilter {
    /// Appends to `out` what of `input` goes on; returns how many frames were left out.
    fn feed(&mut self, mut input: &[u8], drop_prefix: Option<&[u8]>, out: &mut Vec<u8>) -> u64 {
        let mut dropped = 0;
        while !input.is_empty() {
            if let Some((remaining, keep)) = self.payload {
                let taken = remaining.min(input.len());
                if keep {
                    out.extend_from_slice(&input[..taken]);
                }
                input = &input[taken..];
                self.payload = (remaining > taken).then_some((remaining - taken, keep));
                continue;
            }
            let Some(end) = input.iter().position(|&byte| byte == b'\n') else {
                self.line.extend_from_slice(input);
                if drop_prefix.is_none() {
                    // Nothing to drop: forward at once instead of holding a partial line.
                    out.extend_from_slice(&self.line[self.line_forwarded..]);
                    self.line_forwarded = self.line.len();
                }
                return dropped;
            };
            let (rest_of_line, after) = input.split_at(end + 1);
            input = after;
            self.line.extend_from_slice(rest_of_line);
            let line = std::mem::take(&mut self.line);
            let forwarded = std::mem::take(&mut self.line_forwarded);
            let publish = publish_frame(&line);
            let keep = forwarded > 0
                || match (publish, drop_prefix) {
                    (Some((subject, _)), Some(prefix)) => !subject.starts_with(prefix),
                    _ => true,
                };
            if keep {
                out.extend_from_slice(&line[forwarded..]);
            } else {
                dropped += 1;
            }
            if let Some((_, payload)) = publish {
                // The payload is followed by CRLF.
                self.payload = Some((payload.saturating_add(2), keep));
            }
        }
        dropped
    }
}

/// The subject and payload size of a `PUB`/`HPUB` control line (CRLF included); `None` for
/// any other line. The size is the last field in both forms (the total for `HPUB`).
fn publish_frame(line: &[u8]) -> Option<(&[u8], usize)> {
    let text = line.strip_suffix(b"\n")?;
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let mut fields = text
        .split(|byte| byte.is_ascii_whitespace())
        .filter(|field| !field.is_empty());
    let operation = fields.next()?;
    let minimum_fields = if operation.eq_ignore_ascii_case(b"PUB") {
        2
    } else if operation.eq_ignore_ascii_case(b"HPUB") {
        3
    } else {
        return None;
    };
    let rest: Vec<&[u8]> = fields.collect();
    if rest.len() < minimum_fields {
        return None;
    }
    let size = std::str::from_utf8(rest.last()?).ok()?.parse().ok()?;
    Some((rest[0], size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes and returns what went on and how much was left
    /// out.
    fn filter(input: &[u8], prefix: Option<&str>, chunk: usize) -> (Vec<u8>, u64) {
        let mut frames = PublishFilter::default();
        let mut out = Vec::new();
        let mut dropped = 0;
        for piece in input.chunks(chunk) {
            dropped += frames.feed(piece, prefix.map(str::as_bytes), &mut out);
        }
        (out, dropped)
    }

    /// A `PUB` frame (with a reply subject when given).
    fn publish(subject: &str, reply: &str, payload: &[u8]) -> Vec<u8> {
        let mut frame = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        frame
    }

    /// An `HPUB` frame with one header.
    fn publish_with_header(subject: &str, payload: &[u8]) -> Vec<u8> {
        let headers = b"NATS/1.0\r\nNats-Msg-Id: a/1\r\n\r\n";
        let mut frame = format!(
            "hpub {subject} {} {}\r\n",
            headers.len(),
            headers.len() + payload.len()
        )
        .into_bytes();
        frame.extend_from_slice(headers);
        frame.extend_from_slice(payload);
        frame.extend_from_slice(b"\r\n");
        frame
    }

    /// A client's bytes with two acks among heartbeats; one ack's payload holds a whole
    /// frame, which must be skipped by length, not read as a line.
    fn client_stream() -> (Vec<u8>, Vec<u8>) {
        let kept = [
            b"CONNECT {\"verbose\":false}\r\nPING\r\n".to_vec(),
            b"SUB _INBOX.> 1\r\n".to_vec(),
            publish("cs.n.hb.p1", "", b"beat!"),
            publish_with_header("cs.n.hb.p1", b"ok"),
        ];
        let disguised = publish("cs.n.hb.p1", "", b"not a heartbeat");
        let stream = [
            kept[0].clone(),
            publish("cs.n.ack.p1.run1", "_INBOX.x", &disguised),
            kept[1].clone(),
            publish_with_header("cs.n.ack.p1.run2", b"hello"),
            kept[2].clone(),
            kept[3].clone(),
        ];
        (stream.concat(), kept.concat())
    }

    #[test]
    fn frames_with_the_prefix_are_left_out_whole_at_every_chunk_size() {
        let (stream, kept) = client_stream();
        for chunk in 1..=stream.len() {
            let (out, dropped) = filter(&stream, Some("cs.n.ack.p1."), chunk);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&kept),
                "chunk {chunk}"
            );
            assert_eq!(dropped, 2, "chunk {chunk}");
        }
    }

    #[test]
    fn without_a_prefix_every_byte_passes_at_once() {
        let (stream, _) = client_stream();
        for chunk in [1, 7, stream.len()] {
            let (out, dropped) = filter(&stream, None, chunk);
            assert_eq!(out, stream, "chunk {chunk}");
            assert_eq!(dropped, 0);
        }
        // Bytes that are not NATS at all are not held back waiting for a line end.
        let (out, _) = filter(b"\x16\x03\x01binary", None, 4);
        assert_eq!(out, b"\x16\x03\x01binary");
    }

    #[test]
    fn a_frame_whose_line_was_forwarded_before_the_prefix_was_set_is_kept() {
        let mut frames = PublishFilter::default();
        let mut out = Vec::new();
        let prefix = Some(b"cs.n.ack.p1.".as_slice());
        // Held while a prefix is set, then forwarded once none is.
        assert_eq!(frames.feed(b"PUB cs.n", prefix, &mut out), 0);
        assert!(out.is_empty());
        assert_eq!(frames.feed(b".ack.p1.r", None, &mut out), 0);
        assert_eq!(frames.feed(b"un 2\r\nok\r\n", prefix, &mut out), 0);
        assert_eq!(
            frames.feed(b"PUB cs.n.ack.p1.x 1\r\nz\r\n", prefix, &mut out),
            1
        );
        assert_eq!(out, b"PUB cs.n.ack.p1.run 2\r\nok\r\n");
    }

    #[test]
    fn lines_that_only_look_like_publishes_pass() {
        assert_eq!(publish_frame(b"PUB cs.a 3\r\n"), Some((&b"cs.a"[..], 3)));
        assert_eq!(
            publish_frame(b"pub cs.a reply 3\r\n"),
            Some((&b"cs.a"[..], 3))
        );
        assert_eq!(publish_frame(b"HPUB cs.a 2 9\r\n"), Some((&b"cs.a"[..], 9)));
        assert_eq!(publish_frame(b"PUB cs.a\r\n"), None);
        assert_eq!(publish_frame(b"HPUB cs.a 9\r\n"), None);
        assert_eq!(publish_frame(b"PUB cs.a many\r\n"), None);
        assert_eq!(publish_frame(b"PUBLISH cs.a 3\r\n"), None);
        assert_eq!(publish_frame(b"SUB cs.a 3\r\n"), None);
    }
}
