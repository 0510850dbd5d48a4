//! The agents' authenticated channel.
//!
//! Agents run as root and restore processes, so every message must come from a holder of the
//! cluster's shared secret, unaltered, once, in order:
//!
//! 1. Both ends send a hello with a fresh 32-byte nonce (and the protocol version).
//! 2. Each direction's key is `HMAC(secret, "rdmig-agent-v1" | dir | client nonce | server nonce)`,
//!    so keys are new for every connection and differ per direction.
//! 3. Every frame is `len: u32 | payload | tag`, with `tag = HMAC(key, counter | payload)` and a
//!    per-direction counter that both ends keep: a replayed, reordered, dropped or altered frame
//!    fails verification, and the connection is closed.
//!
//! The payload is not encrypted (the lab and an HPC cluster's management network are trusted for
//! confidentiality, not for who may talk); authenticity is what the agent needs to refuse orders.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

pub const WIRE_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"RDMIGAG1";
const TAG: usize = 32;
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

fn derive(secret: &Secret, dir: u8, cn: &[u8; 32], sn: &[u8; 32]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(&secret.0).expect("HMAC takes any key length");
    m.update(b"rdmig-agent-v1");
    m.update(&[dir]);
    m.update(cn);
    m.update(sn);
    let key = m.finalize().into_bytes();
    HmacSha256::new_from_slice(&key).expect("HMAC takes any key length")
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
    mac: HmacSha256,
    counter: u64,
}

impl Sealer {
    fn tag(&mut self, payload: &[u8]) -> [u8; TAG] {
        let mut m = self.mac.clone();
        m.update(&self.counter.to_le_bytes());
        m.update(payload);
        self.counter += 1;
        m.finalize().into_bytes().into()
    }

    fn verify(&mut self, payload: &[u8], tag: &[u8]) -> Result<(), WireError> {
        let mut m = self.mac.clone();
        m.update(&self.counter.to_le_bytes());
        m.update(payload);
        // Constant-time comparison.
        m.verify_slice(tag).map_err(|_| WireError::BadTag)?;
        self.counter += 1;
        Ok(())
    }
}

pub struct Channel<S> {
    io: S,
    send: Sealer,
    recv: Sealer,
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

impl<S: AsyncRead + AsyncWrite + Unpin> Channel<S> {
    /// The connecting side.
    pub async fn client(mut io: S, secret: &Secret) -> Result<Self, WireError> {
        let cn = nonce();
        write_hello(&mut io, &cn).await?;
        let sn = read_hello(&mut io).await?;
        Ok(Self { io, send: Sealer { mac: derive(secret, 0, &cn, &sn), counter: 0 }, recv: Sealer { mac: derive(secret, 1, &cn, &sn), counter: 0 } })
    }

    /// The accepting side. Nothing the peer sends is trusted until a frame verifies.
    pub async fn server(mut io: S, secret: &Secret) -> Result<Self, WireError> {
        let cn = read_hello(&mut io).await?;
        let sn = nonce();
        write_hello(&mut io, &sn).await?;
        Ok(Self { io, send: Sealer { mac: derive(secret, 1, &cn, &sn), counter: 0 }, recv: Sealer { mac: derive(secret, 0, &cn, &sn), counter: 0 } })
    }

    pub async fn send_raw(&mut self, payload: &[u8]) -> Result<(), WireError> {
        write_frame(&mut self.io, &mut self.send, payload).await
    }

    pub async fn recv_raw(&mut self) -> Result<Vec<u8>, WireError> {
        read_frame(&mut self.io, &mut self.recv).await
    }

    pub fn into_inner(self) -> S {
        self.io
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, send: &mut Sealer, payload: &[u8]) -> Result<(), WireError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(WireError::TooLarge(payload.len()));
    }
    let tag = send.tag(payload);
    io.write_all(&(payload.len() as u32).to_le_bytes()).await?;
    io.write_all(payload).await?;
    io.write_all(&tag).await?;
    io.flush().await?;
    Ok(())
}

async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, recv: &mut Sealer) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    })?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = vec![0u8; len + TAG];
    io.read_exact(&mut buf).await?;
    let (payload, tag) = buf.split_at(len);
    recv.verify(payload, tag)?;
    buf.truncate(len);
    Ok(buf)
}

/// The reading direction of a split channel.
pub struct FrameReader<'a> {
    io: tokio::net::tcp::ReadHalf<'a>,
    recv: &'a mut Sealer,
}

/// The writing direction of a split channel.
pub struct FrameWriter<'a> {
    io: tokio::net::tcp::WriteHalf<'a>,
    send: &'a mut Sealer,
}

impl FrameReader<'_> {
    pub async fn recv_raw(&mut self) -> Result<Vec<u8>, WireError> {
        read_frame(&mut self.io, self.recv).await
    }
}

impl FrameWriter<'_> {
    pub async fn send_raw(&mut self, payload: &[u8]) -> Result<(), WireError> {
        write_frame(&mut self.io, self.send, payload).await
    }
}

impl Channel<tokio::net::TcpStream> {
    /// Both directions at once, for a relay that reads and writes concurrently (each keeps its
    /// own counter and key, as in the unsplit channel).
    pub fn split(&mut self) -> (FrameReader<'_>, FrameWriter<'_>) {
        let (r, w) = self.io.split();
        (FrameReader { io: r, recv: &mut self.recv }, FrameWriter { io: w, send: &mut self.send })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut frame = 6u32.to_le_bytes().to_vec();
        frame.extend_from_slice(b"kill 2");
        frame.extend_from_slice(&tag);
        c.io.write_all(&frame).await.unwrap();
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
    }

    #[tokio::test]
    async fn replayed_frame_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let sec = secret(4);
        let (c, s) = tokio::join!(Channel::client(a, &sec), Channel::server(b, &sec));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        let tag = c.send.tag(b"abort");
        let mut frame = 5u32.to_le_bytes().to_vec();
        frame.extend_from_slice(b"abort");
        frame.extend_from_slice(&tag);
        c.io.write_all(&frame).await.unwrap();
        c.io.write_all(&frame).await.unwrap();
        assert_eq!(s.recv_raw().await.unwrap(), b"abort");
        assert!(matches!(s.recv_raw().await, Err(WireError::BadTag)));
    }

    #[tokio::test]
    async fn non_agents_are_refused() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n....................").await.unwrap();
        assert!(matches!(Channel::server(b, &secret(5)).await, Err(WireError::BadMagic)));
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
