//! The agents' authenticated channel.
//!
//! Agents run as root and restore processes, so every message must come from a holder of the
//! cluster's shared secret, unaltered, once, in order:
//!
//! 1. Both ends send a hello with a fresh 32-byte nonce (and the protocol version).
//! 2. Each direction's keys are expanded from `HMAC-SHA256(secret, "rdmig-agent-v3" | dir | client nonce | server nonce)`,
//!    so keys are new for every connection and differ per direction.
//! 3. Every frame is `len: u32 | payload | tag`, with the tag from `mac::FrameMac`: SipHash-2-4-128
//!    over the frame's counter, length and the NH hashes of its 1 KiB blocks; the per-direction
//!    counter is kept by both ends: a replayed, reordered, dropped or altered frame fails
//!    verification, and the connection is closed.
//!
//! Version 1 tagged frames with HMAC-SHA256, version 2 with SipHash-2-4-128 over the whole
//! payload. Image data travels as frames too, so the MAC touches every byte of a TCP transfer on
//! both ends; inside the lab's TCG nodes (no SHA-NI, AVX2 emulated) HMAC-SHA256 ran at about
//! 50 MB/s, Poly1305 at 80-360, keyed BLAKE3 at 40-90, SipHash-2-4 at about 1 GB/s
//! (benches/frame.rs, run inside a node), and SipHash still cost a quarter of the sender's CPU
//! time in a TCP transfer. NH does one multiplication per 16 bytes (see `mac`).
//!
//! The payload is not encrypted (the lab and an HPC cluster's management network are trusted for
//! confidentiality, not for who may talk); authenticity is what the agent needs to refuse orders.
//!
//! Nothing waits forever: a channel's [`Limits`] bound every wait (the hello, each frame read or
//! written) by an idle time and an absolute deadline. A wait cut short leaves the stream in the
//! middle of a frame, so the channel is abandoned: every later use fails.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

pub use crate::mac::FrameMac;
use crate::mac::NH_WORDS;

type HmacSha256 = Hmac<Sha256>;

/// 3: NH then SipHash-2-4-128 (2: SipHash-2-4-128 over the whole payload, 1: HMAC-SHA256).
pub const WIRE_VERSION: u32 = 3;
const MAGIC: &[u8; 8] = b"RDMIGAG1";
pub const TAG: usize = 16;
/// A frame's tag: also what a transfer's end-to-end check is made of (see `transport::DataSum`).
pub type Tag = [u8; TAG];
/// Largest payload: image files travel in chunks well below this.
pub const MAX_PAYLOAD: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer is not an rdmig agent (bad magic)")]
    BadMagic,
    #[error("protocol version {theirs} is not ours ({WIRE_VERSION})")]
    Version { theirs: u32 },
    #[error("message failed authentication (wrong secret, or altered, replayed or reordered)")]
    BadTag,
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

/// The cluster secret, loaded from a file only root can read.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("secret file {path} is readable by others (mode {mode:o}); chmod 600 it")]
    Permissions { path: String, mode: u32 },
    #[error("secret file {path} holds {len} bytes; at least 32 are needed")]
    TooShort { path: String, len: usize },
}

impl Secret {
    pub fn from_bytes(b: &[u8]) -> Result<Self, SecretError> {
        let trimmed = b.trim_ascii();
        if trimmed.len() < 32 {
            return Err(SecretError::TooShort { path: "(bytes)".into(), len: trimmed.len() });
        }
        Ok(Self(trimmed.to_vec()))
    }

    pub fn load(path: &std::path::Path) -> Result<Self, SecretError> {
        use std::os::unix::fs::MetadataExt;
        let p = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| SecretError::Read { path: p.clone(), source: e })?;
        if meta.mode() & 0o077 != 0 {
            return Err(SecretError::Permissions { path: p, mode: meta.mode() & 0o777 });
        }
        let b = std::fs::read(path).map_err(|e| SecretError::Read { path: p.clone(), source: e })?;
        Self::from_bytes(&b).map_err(|e| match e {
            SecretError::TooShort { len, .. } => SecretError::TooShort { path: p, len },
            e => e,
        })
    }
}

fn derive(secret: &Secret, dir: u8, cn: &[u8; 32], sn: &[u8; 32]) -> Sealer {
    let mut m = HmacSha256::new_from_slice(&secret.0).expect("HMAC takes any key length");
    m.update(b"rdmig-agent-v3");
    m.update(&[dir]);
    m.update(cn);
    m.update(sn);
    let prk = m.finalize().into_bytes();
    // Expand the connection's direction key into the PRF key and NH's 1 KiB key.
    let expand = |label: &[u8], i: u8| {
        let mut m = HmacSha256::new_from_slice(&prk).expect("HMAC takes any key length");
        m.update(label);
        m.update(&[i]);
        m.finalize().into_bytes()
    };
    let prf: [u8; 16] = expand(b"prf", 0)[..16].try_into().expect("16 of 32 bytes");
    let mut nh = [0u64; NH_WORDS];
    for (i, words) in nh.chunks_mut(4).enumerate() {
        let block = expand(b"nh", i as u8);
        for (w, b) in words.iter_mut().zip(block.chunks_exact(8)) {
            *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
    }
    Sealer { mac: FrameMac::new(nh, prf), counter: 0 }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut n)).is_err() {
        // Never reached on Linux; a fixed nonce would still be unique per secret thanks to the
        // peer's nonce, but refuse to pretend: fall back to time only as a last resort.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        n[..16].copy_from_slice(&t.to_le_bytes());
    }
    n
}

/// One direction of an authenticated connection.
pub struct Sealer {
    mac: FrameMac,
    counter: u64,
}

impl Sealer {
    fn compute(&self, payload: &[u8]) -> Tag {
        self.mac.tag(self.counter, payload)
    }

    fn tag(&mut self, payload: &[u8]) -> Tag {
        let t = self.compute(payload);
        self.counter += 1;
        t
    }

    fn verify(&mut self, payload: &[u8], tag: &[u8]) -> Result<Tag, WireError> {
        let want = self.compute(payload);
        // Constant-time comparison.
        if tag.len() != TAG || want.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return Err(WireError::BadTag);
        }
        self.counter += 1;
        Ok(want)
    }
}

pub struct Channel<S> {
    io: S,
    send: Sealer,
    recv: Sealer,
    /// The last received frame (payload and tag), reused: no allocation per frame.
    rbuf: Vec<u8>,
    limits: Limits,
    /// A wait was cut short mid-frame: the stream is out of step for good.
    abandoned: AtomicBool,
}

async fn write_hello<S: AsyncWrite + Unpin>(io: &mut S, n: &[u8; 32]) -> Result<(), WireError> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    h.extend_from_slice(n);
    io.write_all(&h).await?;
    io.flush().await?;
    Ok(())
}

async fn read_hello<S: AsyncRead + Unpin>(io: &mut S) -> Result<[u8; 32], WireError> {
    let mut h = [0u8; 44];
    io.read_exact(&mut h).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    })?;
    if &h[..8] != MAGIC {
        return Err(WireError::BadMagic);
    }
    let v = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if v != WIRE_VERSION {
        return Err(WireError::Version { theirs: v });
    }
    Ok(h[12..].try_into().expect("32 bytes"))
}

/// Writes all of `parts` with as few system calls as the stream allows.
async fn write_all_vectored<S: AsyncWrite + Unpin>(io: &mut S, parts: [&[u8]; 3]) -> Result<(), std::io::Error> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    while done < total {
        let mut skip = done;
        let mut iov = [std::io::IoSlice::new(&[]); 3];
        let mut n = 0;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            iov[n] = std::io::IoSlice::new(&p[skip..]);
            skip = 0;
            n += 1;
        }
        match io.write_vectored(&iov[..n]).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            w => done += w,
        }
    }
    Ok(())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// The connecting side, without limits.
    pub async fn client(io: S, secret: &Secret) -> Result<Self, WireError> {
        Self::client_within(io, secret, Limits::default()).await
    }

    /// The accepting side, without limits. Nothing the peer sends is trusted until a frame
    /// verifies.
    pub async fn server(io: S, secret: &Secret) -> Result<Self, WireError> {
        Self::server_within(io, secret, Limits::default()).await
    }

    /// The connecting side; the hello and every later wait within `limits`.
    pub async fn client_within(mut io: S, secret: &Secret, limits: Limits) -> Result<Self, WireError> {
        let cn = nonce();
        let sn = limits
            .bound(&AtomicBool::new(false), async {
                write_hello(&mut io, &cn).await?;
                read_hello(&mut io).await
            })
            .await?;
        Ok(Self::new(io, derive(secret, 0, &cn, &sn), derive(secret, 1, &cn, &sn), limits))
    }

    /// The accepting side; the hello and every later wait within `limits`.
    pub async fn server_within(mut io: S, secret: &Secret, limits: Limits) -> Result<Self, WireError> {
        let sn = nonce();
        let cn = limits
            .bound(&AtomicBool::new(false), async {
                let cn = read_hello(&mut io).await?;
                write_hello(&mut io, &sn).await?;
                Ok(cn)
            })
            .await?;
        Ok(Self::new(io, derive(secret, 1, &cn, &sn), derive(secret, 0, &cn, &sn), limits))
    }

    fn new(io: S, send: Sealer, recv: Sealer, limits: Limits) -> Self {
        Self { io, send, recv, rbuf: Vec::new(), limits, abandoned: AtomicBool::new(false) }
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

    /// Sends one frame (header, payload and tag in one vectored write); returns its tag.
    pub async fn send_raw(&mut self, payload: &[u8]) -> Result<Tag, WireError> {
        self.limits.bound(&self.abandoned, write_frame(&mut self.io, &mut self.send, payload)).await
    }

    /// Receives and verifies one frame; the payload lives in the channel until the next receive.
    pub async fn recv_frame(&mut self) -> Result<(&[u8], Tag), WireError> {
        let (len, tag) = self.limits.bound(&self.abandoned, read_frame(&mut self.io, &mut self.recv, &mut self.rbuf)).await?;
        Ok((&self.rbuf[..len], tag))
    }

    pub async fn recv_raw(&mut self) -> Result<Vec<u8>, WireError> {
        Ok(self.recv_frame().await?.0.to_vec())
    }

    pub fn into_inner(self) -> S {
        self.io
    }

    /// This end's sending MAC, for checks of data sent outside the channel (RDMA).
    pub fn send_mac(&self) -> FrameMac {
        self.send.mac.clone()
    }

    /// The peer's sending MAC (what it tags with), for checking data it sent outside the channel.
    pub fn recv_mac(&self) -> FrameMac {
        self.recv.mac.clone()
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, send: &mut Sealer, payload: &[u8]) -> Result<Tag, WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLarge(payload.len()));
    }
    let tag = send.tag(payload);
    let len = (payload.len() as u32).to_le_bytes();
    write_all_vectored(io, [&len[..], payload, &tag[..]]).await?;
    io.flush().await?;
    Ok(tag)
}

/// Reads and verifies one frame into `rbuf` (grown as needed); returns the payload's length.
async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, recv: &mut Sealer, rbuf: &mut Vec<u8>) -> Result<(usize, Tag), WireError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    })?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLarge(len));
    }
    if rbuf.len() < len + TAG {
        rbuf.resize(len + TAG, 0);
    }
    let buf = &mut rbuf[..len + TAG];
    io.read_exact(buf).await?;
    let (payload, tag) = buf.split_at(len);
    let tag = recv.verify(payload, tag)?;
    Ok((len, tag))
}

/// The reading direction of a split channel.
pub struct FrameReader<'a> {
    io: tokio::net::tcp::ReadHalf<'a>,
    recv: &'a mut Sealer,
    rbuf: &'a mut Vec<u8>,
    limits: Limits,
    abandoned: &'a AtomicBool,
}

/// The writing direction of a split channel.
pub struct FrameWriter<'a> {
    io: tokio::net::tcp::WriteHalf<'a>,
    send: &'a mut Sealer,
    limits: Limits,
    abandoned: &'a AtomicBool,
}

impl FrameReader<'_> {
    pub async fn recv_raw(&mut self) -> Result<Vec<u8>, WireError> {
        Ok(self.recv_frame().await?.0.to_vec())
    }

    /// One verified frame and its tag; the payload lives until the next receive.
    pub async fn recv_frame(&mut self) -> Result<(&[u8], Tag), WireError> {
        let (len, tag) = self.limits.bound(self.abandoned, read_frame(&mut self.io, self.recv, self.rbuf)).await?;
        Ok((&self.rbuf[..len], tag))
    }

    /// This direction's bound on each wait (for a relay whose peer answers only now and then);
    /// the channel's deadline still holds.
    pub fn set_idle(&mut self, idle: Option<Duration>) {
        self.limits.idle = idle;
    }
}

impl FrameWriter<'_> {
    pub async fn send_raw(&mut self, payload: &[u8]) -> Result<Tag, WireError> {
        self.limits.bound(self.abandoned, write_frame(&mut self.io, self.send, payload)).await
    }
}

impl Channel<tokio::net::TcpStream> {
    /// Both directions at once, for a relay that reads and writes concurrently (each keeps its
    /// own counter and key, as in the unsplit channel, and the channel's limits).
    pub fn split(&mut self) -> (FrameReader<'_>, FrameWriter<'_>) {
        let (r, w) = self.io.split();
        let (limits, abandoned) = (self.limits, &self.abandoned);
        (FrameReader { io: r, recv: &mut self.recv, rbuf: &mut self.rbuf, limits, abandoned }, FrameWriter { io: w, send: &mut self.send, limits, abandoned })
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

    /// A frame as it goes on the wire, made by hand: `payload` with `tag`, whatever it was made over.
    fn framed(payload: &[u8], tag: &Tag) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(payload);
        f.extend_from_slice(tag);
        f
    }

    fn secret(b: u8) -> Secret {
        Secret::from_bytes(&[b; 40]).unwrap()
    }

    async fn pair(cs: Secret, ss: Secret) -> (Result<Channel<tokio::io::DuplexStream>, WireError>, Result<Channel<tokio::io::DuplexStream>, WireError>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        tokio::join!(Channel::client(a, &cs), Channel::server(b, &ss))
    }

    #[tokio::test]
    async fn messages_flow_both_ways_in_order() {
        let (c, s) = pair(secret(7), secret(7)).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        c.send_raw(b"one").await.unwrap();
        c.send_raw(b"two").await.unwrap();
        assert_eq!(s.recv_raw().await.unwrap(), b"one");
        assert_eq!(s.recv_raw().await.unwrap(), b"two");
        s.send_raw(b"back").await.unwrap();
        assert_eq!(c.recv_raw().await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_at_the_first_message() {
        let (c, s) = pair(secret(1), secret(2)).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        c.send_raw(b"restore please").await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
    }

    #[tokio::test]
    async fn tampered_frame_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let sec = secret(3);
        let (c, s) = tokio::join!(Channel::client(a, &sec), Channel::server(b, &sec));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        // Seal a frame by hand and flip a payload bit on the way.
        let tag = c.send.tag(b"kill 1");
        c.io.write_all(&framed(b"kill 2", &tag)).await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
    }

    #[tokio::test]
    async fn replayed_frame_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let sec = secret(4);
        let (c, s) = tokio::join!(Channel::client(a, &sec), Channel::server(b, &sec));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let tag = c.send.tag(b"abort");
        let frame = framed(b"abort", &tag);
        c.io.write_all(&frame).await.unwrap();
        c.io.write_all(&frame).await.unwrap();
        assert_eq!(s.recv_raw().await.unwrap(), b"abort");
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
    }

    #[tokio::test]
    async fn altered_tag_reordered_and_dropped_frames_are_refused() {
        let sec = secret(6);
        let seal = |c: &mut Channel<tokio::io::DuplexStream>, p: &[u8]| {
            let tag = c.send.tag(p);
            framed(p, &tag)
        };
        // One flipped tag bit.
        let (c, s) = pair(sec.clone(), sec.clone()).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let mut f = seal(&mut c, b"commit m1");
        *f.last_mut().unwrap() ^= 1;
        c.io.write_all(&f).await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
        // Two frames delivered the other way round.
        let (c, s) = pair(sec.clone(), sec.clone()).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let (f1, f2) = (seal(&mut c, b"begin"), seal(&mut c, b"restore"));
        c.io.write_all(&f2).await.unwrap();
        c.io.write_all(&f1).await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
        // The first frame dropped.
        let (c, s) = pair(sec.clone(), sec.clone()).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let (_, f2) = (seal(&mut c, b"chunk 0"), seal(&mut c, b"chunk 1"));
        c.io.write_all(&f2).await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
        // A tag made with the other direction's key (a reflected frame).
        let (c, s) = pair(sec.clone(), sec).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let tag = s.send.tag(b"ack");
        c.io.write_all(&framed(b"ack", &tag)).await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
    }

    #[tokio::test]
    async fn large_frames_flow_and_oversized_ones_are_refused() {
        let (c, s) = pair(secret(8), secret(8)).await;
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let big: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i % 251) as u8).collect();
        let (sent, got) = tokio::join!(c.send_raw(&big), async {
            let (p, t) = s.recv_frame().await.unwrap();
            (p.to_vec(), t)
        });
        assert_eq!(got.0, big);
        assert_eq!(sent.unwrap(), got.1, "both ends see the same tag");
        // A smaller frame after a bigger one reuses the buffer without leaking its tail.
        let (sent, got) = tokio::join!(c.send_raw(b"small"), s.recv_raw());
        sent.unwrap();
        assert_eq!(got.unwrap(), b"small");
        assert!(matches!(c.send_raw(&vec![0u8; MAX_PAYLOAD + 1]).await, Err(WireError::TooLarge(_))));
        c.io.write_all(&(MAX_PAYLOAD as u32 + 1).to_le_bytes()).await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::TooLarge(_))));
    }

    #[tokio::test]
    async fn other_protocol_versions_are_refused() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&[0u8; 32]);
        a.write_all(&h).await.unwrap();
        assert!(matches!(Channel::server(b, &secret(5)).await, Err(WireError::Version { theirs: 1 })));
    }

    #[tokio::test]
    async fn non_agents_are_refused() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n....................").await.unwrap();
        assert!(matches!(Channel::server(b, &secret(5)).await, Err(WireError::BadMagic)));
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
    async fn a_silent_peer_times_the_hello_out() {
        let (addr, _held) = silent_listener().await;
        let t = std::time::Instant::now();
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let r = Channel::client_within(sock, &secret(1), Limits::idle(Duration::from_millis(200))).await;
        assert!(matches!(r, Err(WireError::TimedOut(d)) if d == Duration::from_millis(200)), "{:?}", r.err());
        assert!(t.elapsed() < Duration::from_secs(3));
        // The deadline bounds it as well, and says so.
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let limits = Limits { idle: None, deadline: Some(Instant::now() + Duration::from_millis(200)) };
        assert!(matches!(Channel::client_within(sock, &secret(1), limits).await, Err(WireError::Deadline)));
        // The earlier of the two ends a wait.
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let limits = Limits::idle(Duration::from_secs(60)).until(Instant::now() + Duration::from_millis(100));
        assert!(matches!(Channel::client_within(sock, &secret(1), limits).await, Err(WireError::Deadline)));
    }

    #[tokio::test]
    async fn an_unanswered_request_times_out_and_the_channel_is_abandoned() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // A peer that completes the hello, reads, and never answers.
        let peer = tokio::spawn(async move {
            let mut ch = Channel::server(l.accept().await.unwrap().0, &secret(2)).await.unwrap();
            while ch.recv_raw().await.is_ok() {}
        });
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut ch = Channel::client_within(sock, &secret(2), Limits::idle(Duration::from_millis(200))).await.unwrap();
        ch.send_raw(b"status?").await.unwrap();
        let t = std::time::Instant::now();
        assert!(matches!(ch.recv_raw().await, Err(WireError::TimedOut(_))));
        assert!(t.elapsed() >= Duration::from_millis(150) && t.elapsed() < Duration::from_secs(3));
        // Cut short mid-wait, the stream may be mid-frame: nothing more goes over it.
        assert!(matches!(ch.send_raw(b"again").await, Err(WireError::Abandoned)));
        assert!(matches!(ch.recv_raw().await, Err(WireError::Abandoned)));
        peer.abort();
    }

    #[tokio::test]
    async fn split_halves_keep_the_limits() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            let mut ch = Channel::server(l.accept().await.unwrap().0, &secret(3)).await.unwrap();
            // One frame after 400 ms, then silence.
            tokio::time::sleep(Duration::from_millis(400)).await;
            ch.send_raw(b"late").await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut ch = Channel::client_within(sock, &secret(3), Limits::idle(Duration::from_millis(100))).await.unwrap();
        {
            let (mut rd, _wr) = ch.split();
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

    #[test]
    fn secret_files_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        std::fs::write(&p, "short").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(Secret::load(&p), Err(SecretError::TooShort { .. })));
        std::fs::write(&p, "x".repeat(64)).unwrap();
        assert!(Secret::load(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Secret::load(&p), Err(SecretError::Permissions { .. })));
    }
}
