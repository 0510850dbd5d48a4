//! The agents' channel: mutual TLS 1.3 (see [`crate::tls`]), then length-prefixed frames.
//!
//! Agents run as root and restore processes, so every message must come from a node of the
//! cluster, unaltered, once, in order, and images (a process's whole memory) must not be read on
//! the way: TLS gives all of that (rustls, TLS 1.3 only, certificates of the cluster CA on both
//! ends). Each frame is `len: u32 | payload` inside the TLS stream; a frame over [`MAX_PAYLOAD`]
//! is refused before anything is allocated for it.
//!
//! Nothing waits forever: a channel's [`Limits`] bound every wait (the handshake, each frame read
//! or written) by an idle time and an absolute deadline. A wait cut short leaves the stream in
//! the middle of a frame, so the channel is abandoned: every later use fails.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;
use tokio_rustls::TlsStream;

use crate::tls::{peer_name, ClientTls, ServerTls};

/// Exporter label of data-stream keys (RFC 5705 labels begin with "EXPORTER").
const STREAM_KEY_LABEL: &[u8] = b"EXPORTER-rdmig-data-stream";

/// How long a failed write waits for the reason the peer may have sent before hanging up.
const WHY_CLOSED_WAIT: Duration = Duration::from_secs(1);

/// What the channel reads from its socket at once, at most. rustls asks for 4 KiB at a time
/// (its deframer's read size), a quarter of a full record: read straight from the socket, that
/// is four system calls and four wake-ups per record. Through this buffer it is one per
/// 256 KiB, for one extra copy of what arrives.
const SOCKET_READ: usize = 256 << 10;

/// The TLS stream over the buffered socket.
type Tls<S> = TlsStream<BufReader<S>>;

/// Largest payload: image files travel in chunks well below this.
pub const MAX_PAYLOAD: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the peer's certificate names no node")]
    NoPeerName,
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("peer closed the connection")]
    Closed,
    #[error("nothing moved for {} s: the peer is stopped, gone or unreachable", .0.as_secs_f64())]
    TimedOut(Duration),
    #[error("the deadline passed")]
    Deadline,
    #[error("the connection was abandoned after a wait timed out")]
    Abandoned,
}

/// An I/O error as the channel reports it: TLS failures (a refused certificate, an alert from
/// the peer, a record that does not authenticate) by name, an early end as `Closed`.
fn io_err(e: std::io::Error) -> WireError {
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return WireError::Tls(t.to_string());
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    }
}

/// How long a channel's waits may take: each one `idle` at most (None: no bound), and none past
/// `deadline` (None: no deadline).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub idle: Option<Duration>,
    pub deadline: Option<Instant>,
}

impl Limits {
    /// Each wait at most `idle`.
    pub fn idle(idle: Duration) -> Self {
        Self { idle: Some(idle), deadline: None }
    }

    /// The same, and nothing past `deadline`.
    pub fn until(self, deadline: Instant) -> Self {
        Self { deadline: Some(deadline), ..self }
    }

    /// When a wait that starts now must end, and whether the deadline (not the idle bound) is
    /// what ends it.
    fn end(&self) -> Option<(Instant, bool)> {
        let idle = self.idle.map(|d| Instant::now() + d);
        match (idle, self.deadline) {
            (None, None) => None,
            (Some(i), None) => Some((i, false)),
            (None, Some(d)) => Some((d, true)),
            (Some(i), Some(d)) => Some(if d <= i { (d, true) } else { (i, false) }),
        }
    }

    /// Runs `f` within the limits; a wait cut short marks the stream `abandoned`.
    pub async fn bound<T, F: Future<Output = Result<T, WireError>>>(&self, abandoned: &AtomicBool, f: F) -> Result<T, WireError> {
        if abandoned.load(Ordering::Relaxed) {
            return Err(WireError::Abandoned);
        }
        let Some((at, by_deadline)) = self.end() else { return f.await };
        match tokio::time::timeout_at(at, f).await {
            Ok(r) => r,
            Err(_) => {
                abandoned.store(true, Ordering::Relaxed);
                Err(if by_deadline { WireError::Deadline } else { WireError::TimedOut(self.idle.unwrap_or_default()) })
            }
        }
    }
}

pub struct Channel<S> {
    io: Tls<S>,
    /// The last received frame, reused: no allocation per frame.
    rbuf: Vec<u8>,
    limits: Limits,
    /// A wait was cut short mid-frame: the stream is out of step for good.
    abandoned: AtomicBool,
    /// The node named by the peer's certificate.
    peer: String,
    /// Data streams keyed so far ([`Channel::next_stream_key`]).
    streams: AtomicU64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// The connecting side: a TLS 1.3 handshake within `limits` with the agent, which must prove
    /// `server` (a node name or the IP address dialled) with a certificate of the cluster CA.
    pub async fn client_within(io: S, tls: &ClientTls, server: ServerName<'static>, limits: Limits) -> Result<Self, WireError> {
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let io =
            limits.bound(&AtomicBool::new(false), async { connector.connect(server, BufReader::with_capacity(SOCKET_READ, io)).await.map_err(io_err) }).await?;
        let peer = io.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(peer_name).ok_or(WireError::NoPeerName)?;
        Ok(Self::new(TlsStream::Client(io), limits, peer))
    }

    /// The accepting side: a TLS 1.3 handshake within `limits`; the peer must present a
    /// certificate of the cluster CA naming a node ([`Channel::peer`]). Whether that node may do
    /// anything here is the caller's decision.
    pub async fn server_within(io: S, tls: &ServerTls, limits: Limits) -> Result<Self, WireError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let io = limits.bound(&AtomicBool::new(false), async { acceptor.accept(BufReader::with_capacity(SOCKET_READ, io)).await.map_err(io_err) }).await?;
        let peer = io.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(peer_name).ok_or(WireError::NoPeerName)?;
        Ok(Self::new(TlsStream::Server(io), limits, peer))
    }

    fn new(io: Tls<S>, limits: Limits, peer: String) -> Self {
        Self { io, rbuf: Vec::new(), limits, abandoned: AtomicBool::new(false), peer, streams: AtomicU64::new(0) }
    }

    /// The node the peer's certificate names (verified against the cluster CA).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Keying material for this connection (RFC 8446 section 7.5, TLS exporter): both ends get
    /// the same bytes for the same `label` and `context`, nobody else can.
    pub fn export(&self, label: &[u8], context: &[u8], out: &mut [u8]) -> Result<(), WireError> {
        let r = match &self.io {
            TlsStream::Client(c) => c.get_ref().1.export_keying_material(out, label, Some(context)).map(|_| ()),
            TlsStream::Server(s) => s.get_ref().1.export_keying_material(out, label, Some(context)).map(|_| ()),
        };
        r.map_err(|e| WireError::Tls(e.to_string()))
    }

    /// A fresh key for the next data stream of this connection (a file, a probe, a page stream):
    /// exported from the TLS session with the stream's number as context. Both ends count the
    /// streams they key, so they agree on every key; no key is used twice in a connection.
    pub fn next_stream_key(&self) -> [u8; 32] {
        let n = self.streams.fetch_add(1, Ordering::Relaxed);
        let mut k = [0u8; 32];
        // Fails only before the handshake completes (never: a Channel exists after it) or for an
        // output longer than the hash allows (32 bytes is not).
        self.export(STREAM_KEY_LABEL, &n.to_le_bytes(), &mut k).expect("TLS exporter after the handshake");
        k
    }

    /// The bounds of every wait from now on.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Gives the channel up (a wait on it was cut short outside it): every later use fails.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    /// Sends one frame.
    pub async fn send_raw(&mut self, payload: &[u8]) -> Result<(), WireError> {
        match self.limits.bound(&self.abandoned, write_frame(&mut self.io, payload)).await {
            Err(e @ (WireError::Io(_) | WireError::Closed)) => Err(self.why_closed(e).await),
            r => r,
        }
    }

    /// A write failed because the peer hung up: if it said why first, in a TLS alert, that is
    /// the error. (TLS 1.3 clients learn that an agent refused their certificate only after
    /// their side of the handshake, and their first request then often meets a broken pipe,
    /// with the alert unread.)
    async fn why_closed(&mut self, e: WireError) -> WireError {
        let mut scratch = Vec::new();
        match tokio::time::timeout(WHY_CLOSED_WAIT, read_frame(&mut self.io, &mut scratch, MAX_PAYLOAD)).await {
            Ok(Err(alert @ WireError::Tls(_))) => alert,
            _ => e,
        }
    }

    /// Receives one frame, of at most `max` bytes (a longer one is refused unread); the payload
    /// lives in the channel until the next receive.
    pub async fn recv_frame_max(&mut self, max: usize) -> Result<&[u8], WireError> {
        let len = self.limits.bound(&self.abandoned, read_frame(&mut self.io, &mut self.rbuf, max)).await?;
        Ok(&self.rbuf[..len])
    }

    /// Receives one frame; the payload lives in the channel until the next receive.
    pub async fn recv_frame(&mut self) -> Result<&[u8], WireError> {
        self.recv_frame_max(MAX_PAYLOAD).await
    }

    pub async fn recv_raw(&mut self) -> Result<Vec<u8>, WireError> {
        Ok(self.recv_frame().await?.to_vec())
    }

    /// Both directions at once, for a relay that reads and writes concurrently (the channel's
    /// limits hold for each).
    pub fn split(&mut self) -> (FrameReader<'_, S>, FrameWriter<'_, S>) {
        let (r, w) = tokio::io::split(&mut self.io);
        let (limits, abandoned) = (self.limits, &self.abandoned);
        (FrameReader { io: r, rbuf: &mut self.rbuf, limits, abandoned }, FrameWriter { io: w, limits, abandoned })
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, payload: &[u8]) -> Result<(), WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLarge(payload.len()));
    }
    io.write_all(&(payload.len() as u32).to_le_bytes()).await.map_err(io_err)?;
    io.write_all(payload).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)
}

/// Reads one frame of at most `max` bytes into `rbuf` (grown as needed); returns its length.
async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, rbuf: &mut Vec<u8>, max: usize) -> Result<usize, WireError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.map_err(io_err)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max.min(MAX_PAYLOAD) {
        return Err(WireError::TooLarge(len));
    }
    if rbuf.len() < len {
        rbuf.resize(len, 0);
    }
    io.read_exact(&mut rbuf[..len]).await.map_err(io_err)?;
    Ok(len)
}

/// The frame layer without TLS under it, for the fuzz target `frame` (fuzz/): a peer's bytes
/// reach [`read_frame`] only after TLS, which a fuzzer cannot forge its way through. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// [`super::read_frame`]: one frame of at most `max` bytes into `rbuf`; its length.
    pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, rbuf: &mut Vec<u8>, max: usize) -> Result<usize, WireError> {
        super::read_frame(io, rbuf, max).await
    }

    /// [`super::write_frame`]: one frame.
    pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, payload: &[u8]) -> Result<(), WireError> {
        super::write_frame(io, payload).await
    }
}

/// The reading direction of a split channel.
pub struct FrameReader<'a, S> {
    io: tokio::io::ReadHalf<&'a mut Tls<S>>,
    rbuf: &'a mut Vec<u8>,
    limits: Limits,
    abandoned: &'a AtomicBool,
}

/// The writing direction of a split channel.
pub struct FrameWriter<'a, S> {
    io: tokio::io::WriteHalf<&'a mut Tls<S>>,
    limits: Limits,
    abandoned: &'a AtomicBool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameReader<'_, S> {
    pub async fn recv_raw(&mut self) -> Result<Vec<u8>, WireError> {
        Ok(self.recv_frame().await?.to_vec())
    }

    /// One frame; the payload lives until the next receive.
    pub async fn recv_frame(&mut self) -> Result<&[u8], WireError> {
        let len = self.limits.bound(self.abandoned, read_frame(&mut self.io, self.rbuf, MAX_PAYLOAD)).await?;
        Ok(&self.rbuf[..len])
    }

    /// This direction's bound on each wait (for a relay whose peer answers only now and then);
    /// the channel's deadline still holds.
    pub fn set_idle(&mut self, idle: Option<Duration>) {
        self.limits.idle = idle;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameWriter<'_, S> {
    pub async fn send_raw(&mut self, payload: &[u8]) -> Result<(), WireError> {
        self.limits.bound(self.abandoned, write_frame(&mut self.io, payload)).await
    }
}

/// TCP keepalive probes after this much silence, then every [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_PROBES: u32 = 3;
/// Data sent but unacknowledged this long (or a receive window shut this long) ends the
/// connection (`TCP_USER_TIMEOUT`).
pub const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes a dead or unreachable peer end the connection in the kernel: keepalive probes, and
/// `TCP_USER_TIMEOUT` for unacknowledged data. (A stopped peer's kernel still answers both:
/// the channel's [`Limits`] catch that.)
pub fn keepalive(sock: &tokio::net::TcpStream) -> std::io::Result<()> {
    let s = socket2::SockRef::from(sock);
    s.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_PROBES))?;
    s.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::TestCa;
    use crate::tls::Identity;
    use tokio::io::DuplexStream;

    type Pair = (Result<Channel<DuplexStream>, WireError>, Result<Channel<DuplexStream>, WireError>);

    async fn pair_named(client: &Identity, server: &Identity, name: &str) -> Pair {
        let (a, b) = tokio::io::duplex(1 << 20);
        let ctls = client.client(None).unwrap();
        let sn = ctls.named(name).unwrap();
        let stls = server.server().unwrap();
        let limits = Limits::idle(Duration::from_secs(5));
        tokio::join!(Channel::client_within(a, &ctls, sn, limits), Channel::server_within(b, &stls, limits))
    }

    async fn ok_pair(ca: &TestCa) -> (Channel<DuplexStream>, Channel<DuplexStream>) {
        let (c, s) = pair_named(&ca.node("node1", &[]), &ca.node("node2", &[]), "node2").await;
        (c.unwrap(), s.unwrap())
    }

    #[tokio::test]
    async fn messages_flow_both_ways_in_order_and_each_end_knows_the_other() {
        let (mut c, mut s) = ok_pair(&TestCa::new()).await;
        assert_eq!((c.peer(), s.peer()), ("node2", "node1"));
        c.send_raw(b"one").await.unwrap();
        c.send_raw(b"two").await.unwrap();
        assert_eq!(s.recv_raw().await.unwrap(), b"one");
        assert_eq!(s.recv_raw().await.unwrap(), b"two");
        s.send_raw(b"back").await.unwrap();
        assert_eq!(c.recv_raw().await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn a_client_of_another_ca_is_refused_in_the_handshake() {
        // Another CA of another name, and an impostor CA of our CA's very name.
        for (theirs, why) in [(TestCa::named("other"), "UnknownIssuer"), (TestCa::new(), "BadSignature")] {
            let ours = TestCa::new();
            // The client trusts our CA (so it accepts the agent), but its own certificate is theirs.
            let ctls = theirs.intruder("node1", &ours);
            let (a, b) = tokio::io::duplex(1 << 16);
            let stls = ours.node("node2", &[]).server().unwrap();
            let (c, s) = tokio::join!(
                Channel::client_within(a, &ctls, ctls.named("node2").unwrap(), Limits::idle(Duration::from_secs(5))),
                Channel::server_within(b, &stls, Limits::idle(Duration::from_secs(5)))
            );
            let e = s.err().expect("the agent accepted a certificate of another CA");
            assert!(matches!(&e, WireError::Tls(t) if t.contains(why)), "{e}");
            // TLS 1.3: the client finishes first and hears of the refusal at its first read.
            let mut c = c.unwrap();
            let _ = c.send_raw(b"facts?").await;
            let e = c.recv_raw().await.unwrap_err();
            assert!(matches!(&e, WireError::Tls(t) if t.contains("alert")), "{e}");
        }
    }

    /// Over TCP, a refused client learns of the alert even when its first request meets a
    /// broken pipe (seen in the lab: "hung up" instead of "refused this node's certificate").
    #[tokio::test]
    async fn a_refused_client_reads_the_alert_over_tcp() {
        let ours = TestCa::new();
        let theirs = TestCa::named("other");
        let stls = ours.node("node2", &[]).server().unwrap();
        let ctls = theirs.intruder("node1", &ours);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for wait_ms in [0, 300] {
            let server = async {
                let (sock, _) = l.accept().await.unwrap();
                Channel::server_within(sock, &stls, Limits::idle(Duration::from_secs(5))).await.err().expect("refused")
            };
            let client = async {
                let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
                let mut c = Channel::client_within(sock, &ctls, ctls.named("node2").unwrap(), Limits::idle(Duration::from_secs(5))).await.unwrap();
                // The request goes at once, or once the agent has surely hung up (then the
                // write fails: broken pipe, before the fix).
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                match c.send_raw(&[7u8; 32 << 10]).await {
                    Err(e) => e,
                    Ok(()) => c.recv_raw().await.unwrap_err(),
                }
            };
            let (_, e) = tokio::join!(server, client);
            assert!(matches!(&e, WireError::Tls(t) if t.contains("alert")), "{e}");
        }
    }

    #[tokio::test]
    async fn an_agent_of_another_ca_or_with_another_name_is_refused_by_the_client() {
        let (ours, theirs, impostor) = (TestCa::new(), TestCa::named("other"), TestCa::new());
        for (ca, why) in [(&theirs, "UnknownIssuer"), (&impostor, "BadSignature")] {
            let (c, _) = pair_named(&ours.node("node1", &[]), &ca.node("node2", &[]), "node2").await;
            assert!(matches!(c.as_ref().err().unwrap(), WireError::Tls(t) if t.contains(why)), "{:?}", c.err());
        }
        // Our CA, but not the node we meant to reach.
        let (c, _) = pair_named(&ours.node("node1", &[]), &ours.node("node3", &[]), "node2").await;
        assert!(matches!(c.as_ref().err().unwrap(), WireError::Tls(t) if t.contains("not valid for name")), "{:?}", c.err());
        // Without a name, the address dialled must be in the agent's certificate.
        for (dialled, ok) in [("10.0.0.2", true), ("10.0.0.3", false)] {
            let (a, b) = tokio::io::duplex(1 << 16);
            let ctls = ours.node("node1", &[]).client(None).unwrap();
            let stls = ours.node("node2", &["10.0.0.2"]).server().unwrap();
            let sn = ctls.server_name(dialled.parse().unwrap());
            let (c, _s) = tokio::join!(Channel::client_within(a, &ctls, sn, Limits::default()), Channel::server_within(b, &stls, Limits::default()));
            assert_eq!(c.is_ok(), ok, "dialled {dialled}");
        }
    }

    #[tokio::test]
    async fn a_peer_that_does_not_speak_tls_is_refused() {
        let ca = TestCa::new();
        let (mut a, b) = tokio::io::duplex(1 << 16);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let r = Channel::server_within(b, &ca.node("n", &[]).server().unwrap(), Limits::idle(Duration::from_secs(2))).await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn large_frames_flow_and_oversized_ones_are_refused() {
        let (mut c, mut s) = ok_pair(&TestCa::new()).await;
        let big: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
        let (sent, got) = tokio::join!(c.send_raw(&big), s.recv_raw());
        sent.unwrap();
        assert_eq!(got.unwrap(), big);
        // A smaller frame after a bigger one reuses the buffer without leaking its tail.
        let (sent, got) = tokio::join!(c.send_raw(b"small"), s.recv_raw());
        sent.unwrap();
        assert_eq!(got.unwrap(), b"small");
        assert!(matches!(c.send_raw(&vec![0u8; MAX_PAYLOAD + 1]).await, Err(WireError::TooLarge(_))));
        // A receiver's own cap is smaller still; the length alone decides.
        c.send_raw(&[0u8; 100]).await.unwrap();
        assert!(matches!(s.recv_frame_max(99).await, Err(WireError::TooLarge(100))));
        // A length over the limit, sent by hand inside the TLS stream.
        let (mut c, mut s) = ok_pair(&TestCa::new()).await;
        c.io.write_all(&(MAX_PAYLOAD as u32 + 1).to_le_bytes()).await.unwrap();
        c.io.flush().await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::TooLarge(_))));
    }

    #[tokio::test]
    async fn both_ends_export_the_same_keys_and_only_for_their_connection() {
        let ca = TestCa::new();
        let (c, s) = ok_pair(&ca).await;
        let (c2, _s2) = ok_pair(&ca).await;
        let get = |ch: &Channel<DuplexStream>, label: &[u8]| {
            let mut k = [0u8; 32];
            ch.export(label, b"ctx", &mut k).unwrap();
            k
        };
        assert_eq!(get(&c, b"EXPORTER-rdmig-test"), get(&s, b"EXPORTER-rdmig-test"));
        assert_ne!(get(&c, b"EXPORTER-rdmig-test"), get(&c, b"EXPORTER-rdmig-other"));
        assert_ne!(get(&c, b"EXPORTER-rdmig-test"), get(&c2, b"EXPORTER-rdmig-test"));
        // Stream keys: the same on both ends, in order, never twice.
        let (k0, k1) = (c.next_stream_key(), c.next_stream_key());
        assert_ne!(k0, k1);
        assert_eq!((s.next_stream_key(), s.next_stream_key()), (k0, k1));
        assert_ne!(c2.next_stream_key(), k0, "another connection, other keys");
    }

    /// Streams of frames as they arrive inside TLS: the seeds of the fuzz target `frame`
    /// (fuzz/corpus/frame/). Each seed is two bytes of the target's own (the duplex buffer
    /// size and the receiver's cap, see fuzz/fuzz_targets/frame.rs), then the stream.
    #[tokio::test]
    async fn fuzz_seeds_are_current() {
        use crate::msg::{encode, MigrationId, Request};
        async fn frames(payloads: &[&[u8]]) -> Vec<u8> {
            let mut v = vec![];
            for p in payloads {
                write_frame(&mut v, p).await.unwrap();
            }
            v
        }
        let ping = encode(&Request::Ping).unwrap();
        let begin = encode(&Request::Begin { id: MigrationId::new("m-1").unwrap(), pid: 4242 }).unwrap();
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        // Cap selectors (the second byte): 0 the frame limit, 1 a message's, 2 none but the
        // frame limit, others a small cap of that many bytes.
        let seeds = [
            ("messages", [16, 1], frames(&[&ping, &begin, b""]).await),
            ("data", [64, 0], frames(&[&data, b"small after big"]).await),
            ("truncated", [7, 2], frames(&[&data]).await[..100].to_vec()),
            ("over_cap", [3, 40], frames(&[&ping, &data]).await),
            ("over_limit", [1, 0], (MAX_PAYLOAD as u32 + 1).to_le_bytes().to_vec()),
        ];
        for (name, head, stream) in seeds {
            crate::fuzz_seed("frame", &format!("{name}.bin"), &[&head[..], &stream].concat());
        }
    }

    /// A listener that accepts and never says a word; returns its address and the sockets it
    /// keeps open.
    async fn silent_listener() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut keep = vec![];
            while let Ok((s, _)) = l.accept().await {
                keep.push(s);
            }
        });
        (addr, held)
    }

    #[tokio::test]
    async fn a_silent_peer_times_the_handshake_out() {
        let (addr, _held) = silent_listener().await;
        let ctls = TestCa::new().node("node1", &[]).client(None).unwrap();
        let sn = ctls.server_name(addr.ip());
        let t = std::time::Instant::now();
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let r = Channel::client_within(sock, &ctls, sn.clone(), Limits::idle(Duration::from_millis(200))).await;
        assert!(matches!(r, Err(WireError::TimedOut(d)) if d == Duration::from_millis(200)), "{:?}", r.err());
        assert!(t.elapsed() < Duration::from_secs(3));
        // The deadline bounds it as well, and says so.
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let limits = Limits { idle: None, deadline: Some(Instant::now() + Duration::from_millis(200)) };
        assert!(matches!(Channel::client_within(sock, &ctls, sn.clone(), limits).await, Err(WireError::Deadline)));
        // The earlier of the two ends a wait.
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let limits = Limits::idle(Duration::from_secs(60)).until(Instant::now() + Duration::from_millis(100));
        assert!(matches!(Channel::client_within(sock, &ctls, sn, limits).await, Err(WireError::Deadline)));
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_the_channel_is_abandoned() {
        let ca = TestCa::new();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stls = ca.node("node2", &["127.0.0.1"]).server().unwrap();
        // A peer that completes the handshake, reads, and never answers.
        let peer = tokio::spawn(async move {
            let mut ch = Channel::server_within(l.accept().await.unwrap().0, &stls, Limits::default()).await.unwrap();
            while ch.recv_raw().await.is_ok() {}
        });
        let ctls = ca.node("node1", &[]).client(None).unwrap();
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut ch = Channel::client_within(sock, &ctls, ctls.server_name(addr.ip()), Limits::idle(Duration::from_millis(300))).await.unwrap();
        ch.send_raw(b"status?").await.unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(ch.recv_raw().await, Err(WireError::TimedOut(_))));
        assert!(t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(3));
        // Cut short mid-wait, the stream may be mid-frame: nothing more goes over it.
        assert!(matches!(ch.send_raw(b"again").await, Err(WireError::Abandoned)));
        assert!(matches!(ch.recv_raw().await, Err(WireError::Abandoned)));
        peer.abort();
    }

    #[tokio::test]
    async fn split_halves_keep_the_limits() {
        let ca = TestCa::new();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stls = ca.node("node2", &["127.0.0.1"]).server().unwrap();
        let peer = tokio::spawn(async move {
            let mut ch = Channel::server_within(l.accept().await.unwrap().0, &stls, Limits::default()).await.unwrap();
            // One frame after 400 ms, then silence.
            tokio::time::sleep(Duration::from_millis(400)).await;
            ch.send_raw(b"late").await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let ctls = ca.node("node1", &[]).client(None).unwrap();
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut ch = Channel::client_within(sock, &ctls, ctls.server_name(addr.ip()), Limits::idle(Duration::from_millis(100))).await.unwrap();
        {
            let (mut rd, mut wr) = ch.split();
            // Writing and reading at once.
            wr.send_raw(b"hello").await.unwrap();
            rd.set_idle(None);
            // Without its idle bound the reader waits for the late frame...
            assert_eq!(rd.recv_raw().await.unwrap(), b"late");
            // ... and with it, it does not wait forever.
            rd.set_idle(Some(Duration::from_millis(100)));
            assert!(matches!(rd.recv_raw().await, Err(WireError::TimedOut(_))));
        }
        // The channel knows its split half gave up.
        assert!(matches!(ch.recv_raw().await, Err(WireError::Abandoned)));
        peer.abort();
    }

    #[tokio::test]
    async fn agent_sockets_get_keepalive_and_a_user_timeout() {
        let (addr, _held) = silent_listener().await;
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        keepalive(&sock).unwrap();
        let s = socket2::SockRef::from(&sock);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(s.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(s.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
    }
}
