//! The wire protocol between the host and a lab node's guest agent.
//!
//! A connection carries one request and its answer. Frames are `kind: u8, len: u32 (big endian),
//! payload`. Control messages are JSON; command output travels as raw byte frames so binary
//! output needs no encoding. Every request carries the lab's token, compared in constant time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest frame either side accepts; output is sent in chunks far below this.
pub const MAX_FRAME: usize = 4 << 20;
/// Bumped whenever a message changes shape, so a guest running an older binary is refused
/// clearly instead of misparsing.
pub const PROTO_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Json = 1,
    Stdout = 2,
    Stderr = 3,
}

impl TryFrom<u8> for FrameKind {
    type Error = ProtoError;
    fn try_from(v: u8) -> Result<Self, ProtoError> {
        match v {
            1 => Ok(Self::Json),
            2 => Ok(Self::Stdout),
            3 => Ok(Self::Stderr),
            _ => Err(ProtoError::BadFrameKind(v)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("unknown frame kind {0}")]
    BadFrameKind(u8),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("peer closed the connection")]
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub token: String,
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Liveness plus the node's set-up status.
    Ping,
    /// Run a program (no shell unless argv asks for one) and stream its output.
    Exec(ExecSpec),
    /// Start a program detached (own session, stdio on /dev/null or a log file); reply its pid.
    Spawn(SpawnSpec),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpawnSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Append stdout and stderr to this file on the node (default: /dev/null).
    #[serde(default)]
    pub log: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the command (its whole process group) after this long.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Pong(NodeStatus),
    /// The command ended. `code` is None when a signal ended it.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
    Spawned {
        pid: u32,
    },
    Refused(String),
}

/// What a node reports about itself, both over the network and in its share directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeStatus {
    SettingUp { step: String },
    Ready { uptime_ms: u64, rxe_active: bool },
    Failed { step: String, error: String },
}

pub async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, kind: FrameKind, payload: &[u8]) -> Result<(), ProtoError> {
    if payload.len() > MAX_FRAME {
        return Err(ProtoError::TooLarge(payload.len()));
    }
    let mut hdr = [0u8; 5];
    hdr[0] = kind as u8;
    hdr[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&hdr).await?;
    w.write_all(payload).await?;
    Ok(())
}

pub async fn write_json<W: AsyncWriteExt + Unpin, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtoError> {
    let buf = serde_json::to_vec(msg)?;
    write_frame(w, FrameKind::Json, &buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> Result<Option<(FrameKind, Vec<u8>)>, ProtoError> {
    let mut hdr = [0u8; 5];
    match r.read_exact(&mut hdr[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut hdr[1..]).await?;
    let kind = FrameKind::try_from(hdr[0])?;
    let len = u32::from_be_bytes(hdr[1..].try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some((kind, buf)))
}

pub async fn read_json<R: AsyncReadExt + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> Result<T, ProtoError> {
    match read_frame(r).await? {
        Some((FrameKind::Json, buf)) => Ok(serde_json::from_slice(&buf)?),
        Some((k, _)) => Err(ProtoError::BadFrameKind(k as u8)),
        None => Err(ProtoError::Closed),
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
pub fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, FrameKind::Stdout, b"hello").await.unwrap();
        write_json(&mut a, &Reply::Refused("no".into())).await.unwrap();
        drop(a);
        let (k, p) = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!((k, p.as_slice()), (FrameKind::Stdout, &b"hello"[..]));
        let r: Reply = read_json(&mut b).await.unwrap();
        assert!(matches!(r, Reply::Refused(s) if s == "no"));
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_unknown_frames_are_rejected() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut hdr = vec![1u8];
        hdr.extend_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        a.write_all(&hdr).await.unwrap();
        assert!(matches!(read_frame(&mut b).await, Err(ProtoError::TooLarge(_))));

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[9, 0, 0, 0, 0]).await.unwrap();
        assert!(matches!(read_frame(&mut b).await, Err(ProtoError::BadFrameKind(9))));
    }

    #[tokio::test]
    async fn truncated_frame_is_an_error_not_eof() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[2, 0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(read_frame(&mut b).await, Err(ProtoError::Io(_))));
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("abc", ""));
    }
}
