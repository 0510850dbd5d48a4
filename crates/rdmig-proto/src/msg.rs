//! Messages between the migration source and a destination agent, and their validation.
//!
//! Everything a peer sends is checked before use: identifiers and relative paths against strict
//! patterns (they become file names on a root-owned host), sizes against limits.

use serde::{Deserialize, Serialize};

use crate::wire::{Channel, WireError};

/// What a peer needs to connect an RC QP to ours (RoCE v2: the GID carries the address).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub qpn: u32,
    pub psn: u32,
    pub gid: [u8; 16],
}

/// Most RDMA lanes (QPs) one data stream may use.
pub const MAX_LANES: usize = 4;

/// What the RDMA data path does to each chunk; the source chooses (`--encrypt`) and says so in
/// `RdmaSetup`, inside the TLS channel. Either way every chunk is checked, under a key of this
/// data path alone and its number in the stream, before a byte of it is used.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChunkProtection {
    /// A GMAC tag (AES-256-GCM with the chunk as additional data): the data travels in clear.
    Authenticated,
    /// AES-256-GCM over the data: encrypted and authenticated.
    Encrypted,
}

impl ChunkProtection {
    /// Its name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ChunkProtection::Authenticated => "authenticated",
            ChunkProtection::Encrypted => "encrypted",
        }
    }
}

/// One lane's ring at the receiver.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LaneRing {
    pub ep: Endpoint,
    pub addr: u64,
    pub rkey: u32,
}

/// What the receiver tells the sender: one ring per lane, in lane order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingInfo {
    pub lanes: Vec<LaneRing>,
    pub slots: u32,
    pub slot_size: u32,
}

/// Largest image file the agent accepts (a migrated process' memory is larger in total, but
/// CRIU splits it into several page files only per process; keep a generous bound).
pub const MAX_FILE: u64 = 64 << 30;
/// Data chunk size on the wire.
pub const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("malformed message: {0}")]
    Decode(String),
    /// The data that came with a request (a file, a probe, a page stream) broke off or failed
    /// its checks on the way: the connection cannot go on.
    #[error("data stream: {0}")]
    Stream(String),
    #[error("message of {0} bytes exceeds the limit of {MAX_MSG}")]
    TooLarge(usize),
    #[error("invalid {what} {value:?}: {why}")]
    Invalid { what: &'static str, value: String, why: &'static str },
}

/// A migration's identifier: becomes a directory name in the destination agent's work directory,
/// so it always begins with `m-`: no id can name one of the agent's own directories there
/// (`criu-plugins`, `cpucheck-*`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationId(String);

impl MigrationId {
    pub fn new(s: &str) -> Result<Self, MsgError> {
        let ok = s.len() > 2 && s.len() <= 48 && s.starts_with("m-") && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(MsgError::Invalid { what: "migration id", value: s.into(), why: "use m- and 1-46 of [a-z0-9-]" });
        }
        Ok(Self(s.to_string()))
    }
    /// A fresh id, `m-` and 16 random hex digits: two migrations never share one (nor their
    /// image directories), whatever their timing.
    pub fn random() -> Result<Self, MsgError> {
        let mut b = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
            .map_err(|e| MsgError::Decode(format!("no randomness for a migration id: {e}")))?;
        Self::new(&format!("m-{:016x}", u64::from_le_bytes(b)))
    }
    /// Re-validates after deserialisation: serde does not run `new`.
    pub fn validate(&self) -> Result<(), MsgError> {
        Self::new(&self.0).map(|_| ())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MigrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path inside a migration's directory: one or two plain components.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelPath(String);

impl RelPath {
    pub fn new(s: &str) -> Result<Self, MsgError> {
        let bad = |why| Err(MsgError::Invalid { what: "path", value: s.into(), why });
        if s.is_empty() || s.len() > 200 {
            return bad("length must be 1-200");
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 2 {
            return bad("at most two components");
        }
        for p in parts {
            if p.is_empty() || p == "." || p == ".." || p.starts_with('.') {
                return bad("empty, dot or dot-dot component");
            }
            if !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
                return bad("only [A-Za-z0-9._-] allowed");
            }
        }
        Ok(Self(s.to_string()))
    }
    pub fn validate(&self) -> Result<(), MsgError> {
        Self::new(&self.0).map(|_| ())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A file that `scp` delivered: a plain name (no directory) and its length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScpFile {
    pub name: String,
    pub len: u64,
}

/// An IPv4 address that moves with the process: removed at the source once it is frozen, added
/// at the destination before the restore (and back at the source on rollback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedAddr {
    pub addr: std::net::Ipv4Addr,
    pub prefix: u8,
    /// Network device, e.g. `vxlan0`.
    pub dev: String,
}

impl MovedAddr {
    pub fn validate(&self) -> Result<(), MsgError> {
        let bad = |what, value: String, why| Err(MsgError::Invalid { what, value, why });
        if self.prefix == 0 || self.prefix > 32 {
            return bad("prefix length", self.prefix.to_string(), "must be 1-32");
        }
        if self.addr.is_unspecified() || self.addr.is_loopback() || self.addr.is_multicast() || self.addr.is_broadcast() {
            return bad("moved address", self.addr.to_string(), "must be a unicast host address");
        }
        // IFNAMSIZ and the characters `ip` accepts without surprises.
        if self.dev.is_empty() || self.dev.len() > 15 || !self.dev.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            return bad("device", self.dev.clone(), "must be 1-15 of [A-Za-z0-9._-]");
        }
        Ok(())
    }
}

/// A Podman container's name: what Podman itself accepts (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), at
/// most 128 bytes. It becomes an argument of `podman` run as root at the destination, so it can
/// never look like an option or hold a separator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerName(String);

impl ContainerName {
    pub fn new(s: &str) -> Result<Self, MsgError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !ok {
            return Err(MsgError::Invalid { what: "container name", value: s.into(), why: "use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128" });
        }
        Ok(Self(s.to_string()))
    }
    pub fn validate(&self) -> Result<(), MsgError> {
        Self::new(&self.0).map(|_| ())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container that moves: its name and its full ID (64 lower-case hex digits), both of which
/// its checkpoint archive carries and the destination must not hold already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub name: ContainerName,
    pub id: String,
}

impl ContainerRef {
    pub fn validate(&self) -> Result<(), MsgError> {
        self.name.validate()?;
        if self.id.len() != 64 || !self.id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(MsgError::Invalid { what: "container id", value: self.id.clone(), why: "must be 64 of [0-9a-f]" });
        }
        Ok(())
    }
}

/// How the destination restores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOpts {
    /// The process holds verbs state: load rdmig's CRIU plugin.
    pub verbs: bool,
    /// Restore established TCP connections.
    pub tcp_established: bool,
    pub move_addr: Option<MovedAddr>,
}

/// Facts about a host, compared before anything is frozen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    pub rdmig_version: String,
    pub criu_version: Option<String>,
    pub kernel: String,
    pub mem_available: u64,
    pub disk_available: u64,
    /// Whether the PID asked about is free here (CRIU restores a process with its own PID).
    pub pid_free: Option<bool>,
    /// Loaded rdma_rxe flavour, if any ("stock", "rdmig"), for RDMA processes.
    pub rxe: Option<String>,
    /// The ABI version of rdmig's rdma_ucm loaded here (`ucma_ckpt_abi.h`), for rdma_cm
    /// processes: None for a stock rdma_ucm, or none at all.
    pub ucma: Option<u32>,
    /// The CPU's time-stamp counter, as the host measured it while answering (None where there
    /// is no TSC to read: not x86_64). A migrated process reads the destination's counter, so
    /// the source compares the two (rdmig's `tsc` module).
    pub tsc: Option<TscFacts>,
}

/// One TSC reading and the monotonic time it was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TscSample {
    pub tsc: u64,
    /// CLOCK_MONOTONIC, ns: the midpoint of the two reads around `rdtsc`.
    pub mono_ns: u64,
    /// Half the gap between those two reads: how far off `mono_ns` can be.
    pub uncertainty_ns: u64,
}

/// A host's counter: a sample and the rate measured around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TscFacts {
    pub sample: TscSample,
    /// Counter ticks per millisecond (kHz), measured against CLOCK_MONOTONIC.
    pub khz: u64,
}

// PartialEq: the fuzz target `msg_decode` compares a request with its re-encoded self.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Facts {
        pid: Option<i32>,
    },
    /// CRIU's `cpuinfo dump` image of the source, checked with `cpuinfo check` here.
    CpuCheck {
        image: Vec<u8>,
    },
    /// Clock sample: the reply carries the receive and send times on this host's monotonic clock.
    Time,
    /// A migration of the source's process `pid` begins. One at a time per source process: the
    /// agent refuses a second while one is in flight.
    Begin {
        id: MigrationId,
        pid: i32,
    },
    /// Followed by exactly `len` bytes (raw frames, or over RDMA) and one raw frame with the
    /// file's end-to-end check (`transport::DataSum`: a SHA-256 of the chunks' MAC tags, the
    /// frames' own over TCP, computed on both ends over RDMA), then an `Ack` or `Failed` reply.
    PutFile {
        id: MigrationId,
        rel: RelPath,
        len: u64,
        via_rdma: bool,
    },
    /// Open the RDMA data path of this connection towards the sender's QPs, one lane each.
    RdmaSetup {
        eps: Vec<Endpoint>,
        protection: ChunkProtection,
    },
    /// `len` bytes of throw-away data (over RDMA or as raw frames), then the check as for a
    /// file: to measure a transport.
    Probe {
        len: u64,
        via_rdma: bool,
    },
    PutSymlink {
        id: MigrationId,
        rel: RelPath,
        target: String,
    },
    /// CRIU's page stream of one dump into image directory `rel` (one component), whose parent
    /// round is `parent`: the agent starts `criu page-server` there, answers `Ack`, relays the
    /// stream (forward over RDMA when `via_rdma`, else as frames; answers as frames), then
    /// replies `Streamed` or `Failed`.
    PageStream {
        id: MigrationId,
        rel: RelPath,
        parent: Option<RelPath>,
        via_rdma: bool,
    },
    /// `--transport scp`: create image directory `rel` (one component) and say where it is, so
    /// the source can `scp` its files there (the MigrOS artifact's checkpoint, scp, restore).
    ScpDir {
        id: MigrationId,
        rel: RelPath,
    },
    /// `--transport scp`: what scp should have delivered into `rel`; checked before a restore
    /// may use it (ssh's MAC protected the bytes on the way, so names and lengths are checked).
    ScpDone {
        id: MigrationId,
        rel: RelPath,
        files: Vec<ScpFile>,
    },
    Restore {
        id: MigrationId,
        dir: RelPath,
        opts: RestoreOpts,
    },
    /// Are these QP numbers and MR indices free on this node's rxe device `ibdev`?
    CheckNumbers {
        ibdev: String,
        qpns: Vec<u32>,
        mrs: Vec<u32>,
    },
    Commit {
        id: MigrationId,
    },
    Abort {
        id: MigrationId,
    },
    Status {
        id: MigrationId,
    },
    /// The source is alive and busy (a dump, a hook): `Ack`. Keeps the connection, and the
    /// migrations it began, from being dropped as silent.
    Ping,
    /// This node's journal events after sequence number `after` (`rdmig events`): `Events`.
    Events {
        after: u64,
    },
    /// What this node holds (`rdmig status`): `Inventory`.
    Inventory,
    // (New requests go last: postcard numbers the variants, and the fuzz seeds hold them.)
    /// Can this node take container `container` (`rdmig migrate --container`): Podman here,
    /// and no container of its name or ID? `Ack` or `Failed` with why.
    CheckContainer {
        container: ContainerRef,
    },
    /// Restores container `container` from the Podman checkpoint archive `archive` (a file of
    /// this migration) with `podman container restore --import`, after the moved address came
    /// up; `Restored` with the container's process, or `Failed` (nothing of it left here).
    /// `previous`: the pre-checkpoint archive the checkpoint was taken against (pre-copy),
    /// also a file of this migration (`--import-previous`).
    RestoreContainer {
        id: MigrationId,
        archive: RelPath,
        container: ContainerRef,
        opts: RestoreOpts,
        previous: Option<RelPath>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigState {
    Receiving,
    /// CRIU is restoring it: whether the process will run here is not known yet.
    Restoring,
    Restored {
        pid: i32,
    },
    Committed,
    Aborted,
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Facts(HostFacts),
    Ack,
    Time {
        t1_ns: u64,
        t2_ns: u64,
    },
    /// Restore finished: the process runs here now. Times on this host's monotonic clock;
    /// `rdma_us`: of it, the CRIU plugin's work on verbs objects (None: none, or not known);
    /// `rdma_steps_us`: where that went, microseconds per step of the plugin
    /// (`rdmig_image::timing`; empty when not known).
    Restored {
        pid: i32,
        start_ns: u64,
        end_ns: u64,
        rdma_us: Option<u64>,
        rdma_steps_us: Vec<(String, u64)>,
    },
    RdmaReady(RingInfo),
    State(MigState),
    /// An absolute directory on this host (the answer to `ScpDir`).
    Dir(String),
    /// A page stream arrived whole: the page images written here total `page_bytes`.
    Streamed {
        page_bytes: u64,
    },
    Failed(String),
    /// The node's journal events asked for, as JSON (`rdmig_journal::NodeStream`; this crate
    /// does not know the journal's types), and the node's wall clock (ns since the epoch) when it
    /// answered, for the clock offset.
    Events {
        stream_json: String,
        wall_ns: i64,
    },
    /// What the node holds, as JSON (see `rdmig status`).
    Inventory {
        json: String,
    },
    /// The answer to `Commit`: the restored process was let run (its QPs resumed, SIGCONT) at
    /// `resumed_ns` on this host's monotonic clock.
    Committed {
        resumed_ns: u64,
    },
}

/// Largest encoded message (before decoding: a longer frame is refused unread). Well below the
/// channel's frame limit (`wire::MAX_PAYLOAD`), above the largest valid request (a 1 MiB
/// cpuinfo image, or 4096 scp file names of 200 bytes).
pub const MAX_MSG: usize = 2 << 20;

/// A message in postcard's format (serde, varint lengths). Fails only for a message over
/// [`MAX_MSG`], which no valid request or reply reaches.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, MsgError> {
    let b = postcard::to_allocvec(v).map_err(|e| MsgError::Decode(format!("cannot encode: {e}")))?;
    if b.len() > MAX_MSG {
        return Err(MsgError::TooLarge(b.len()));
    }
    Ok(b)
}

/// Decodes one whole message: a longer input than [`MAX_MSG`], a truncated one, trailing bytes
/// or anything that is not exactly one `T` is refused. Nothing allocates more than the input's
/// length (postcard reads every length prefix against the bytes that remain).
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, MsgError> {
    if b.len() > MAX_MSG {
        return Err(MsgError::TooLarge(b.len()));
    }
    let (v, rest) = postcard::take_from_bytes(b).map_err(|e| MsgError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MsgError::Decode(format!("{} trailing bytes", rest.len())));
    }
    Ok(v)
}

impl Request {
    /// The migration the request is about, if any.
    pub fn id(&self) -> Option<&MigrationId> {
        match self {
            Request::Begin { id, .. }
            | Request::PutFile { id, .. }
            | Request::PutSymlink { id, .. }
            | Request::PageStream { id, .. }
            | Request::ScpDir { id, .. }
            | Request::ScpDone { id, .. }
            | Request::Restore { id, .. }
            | Request::RestoreContainer { id, .. }
            | Request::Commit { id }
            | Request::Abort { id }
            | Request::Status { id } => Some(id),
            Request::Facts { .. }
            | Request::CpuCheck { .. }
            | Request::Time
            | Request::RdmaSetup { .. }
            | Request::Probe { .. }
            | Request::CheckNumbers { .. }
            | Request::CheckContainer { .. }
            | Request::Events { .. }
            | Request::Inventory
            | Request::Ping => None,
        }
    }

    /// Checks every field that becomes a path, a size or a process identity.
    pub fn validate(&self) -> Result<(), MsgError> {
        match self {
            Request::Facts { pid } => {
                if let Some(p) = pid {
                    if *p <= 1 {
                        return Err(MsgError::Invalid { what: "pid", value: p.to_string(), why: "must be above 1" });
                    }
                }
            }
            Request::CpuCheck { image } => {
                if image.is_empty() || image.len() > 1 << 20 {
                    return Err(MsgError::Invalid { what: "cpuinfo image", value: format!("{} bytes", image.len()), why: "1 byte to 1 MiB" });
                }
            }
            Request::Time | Request::Ping | Request::Events { .. } | Request::Inventory => {}
            Request::Begin { id, pid } => {
                id.validate()?;
                if *pid <= 1 {
                    return Err(MsgError::Invalid { what: "pid", value: pid.to_string(), why: "must be above 1" });
                }
            }
            Request::Commit { id } | Request::Abort { id } | Request::Status { id } => id.validate()?,
            Request::RdmaSetup { eps, .. } => {
                if eps.is_empty() || eps.len() > MAX_LANES {
                    const _: () = assert!(MAX_LANES == 4, "update the message below");
                    return Err(MsgError::Invalid { what: "RDMA lanes", value: eps.len().to_string(), why: "1 to 4 QPs" });
                }
            }
            Request::Probe { len, .. } => {
                if *len > 1 << 30 {
                    return Err(MsgError::Invalid { what: "probe length", value: len.to_string(), why: "at most 1 GiB" });
                }
            }
            Request::PutFile { id, rel, len, .. } => {
                id.validate()?;
                rel.validate()?;
                if *len > MAX_FILE {
                    return Err(MsgError::Invalid { what: "file length", value: len.to_string(), why: "over the limit" });
                }
            }
            Request::PutSymlink { id, rel, target } => {
                id.validate()?;
                rel.validate()?;
                // CRIU's only links are "<round>/parent" -> "../<previous round>".
                if rel.as_str().split_once('/').is_none_or(|(_, name)| name != "parent") {
                    return Err(MsgError::Invalid { what: "symlink", value: rel.as_str().into(), why: "must be <dir>/parent" });
                }
                let ok = target.strip_prefix("../").is_some_and(|t| RelPath::new(t).is_ok() && !t.contains('/'));
                if !ok {
                    return Err(MsgError::Invalid { what: "symlink target", value: target.clone(), why: "must be ../<dir>" });
                }
            }
            Request::PageStream { id, rel, parent, .. } => {
                id.validate()?;
                one_component(rel)?;
                if let Some(p) = parent {
                    one_component(p)?;
                }
            }
            Request::ScpDir { id, rel } => {
                id.validate()?;
                one_component(rel)?;
            }
            Request::ScpDone { id, rel, files } => {
                id.validate()?;
                one_component(rel)?;
                if files.len() > 4096 {
                    return Err(MsgError::Invalid { what: "file list", value: format!("{} entries", files.len()), why: "at most 4096" });
                }
                for f in files {
                    if RelPath::new(&f.name).is_err() || f.name.contains('/') {
                        return Err(MsgError::Invalid { what: "file name", value: f.name.clone(), why: "must be one plain component" });
                    }
                    if f.len > MAX_FILE {
                        return Err(MsgError::Invalid { what: "file length", value: f.len.to_string(), why: "over the limit" });
                    }
                }
            }
            Request::CheckNumbers { ibdev, qpns, mrs } => {
                if ibdev.is_empty() || ibdev.len() > 63 || !ibdev.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                    return Err(MsgError::Invalid { what: "rxe device", value: ibdev.clone(), why: "must be 1-63 of [A-Za-z0-9_-]" });
                }
                if qpns.len() + mrs.len() > 65536 {
                    return Err(MsgError::Invalid { what: "number list", value: format!("{} entries", qpns.len() + mrs.len()), why: "at most 65536" });
                }
            }
            Request::Restore { id, dir, opts } => {
                id.validate()?;
                dir.validate()?;
                if let Some(m) = &opts.move_addr {
                    m.validate()?;
                }
            }
            Request::CheckContainer { container } => container.validate()?,
            Request::RestoreContainer { id, archive, container, opts, previous } => {
                id.validate()?;
                archive.validate()?;
                if let Some(p) = previous {
                    p.validate()?;
                }
                container.validate()?;
                if let Some(m) = &opts.move_addr {
                    m.validate()?;
                }
            }
        }
        Ok(())
    }
}

fn one_component(rel: &RelPath) -> Result<(), MsgError> {
    rel.validate()?;
    if rel.as_str().contains('/') {
        return Err(MsgError::Invalid { what: "image directory", value: rel.as_str().into(), why: "must be one component" });
    }
    Ok(())
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Channel<S> {
    pub async fn send_msg<T: Serialize>(&mut self, v: &T) -> Result<(), MsgError> {
        self.send_raw(&encode(v)?).await?;
        Ok(())
    }
    pub async fn recv_msg<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, MsgError> {
        self.recv_msg_max(MAX_MSG).await
    }
    /// A message of at most `max` bytes (a longer frame is refused before it is read).
    pub async fn recv_msg_max<T: for<'de> Deserialize<'de>>(&mut self, max: usize) -> Result<T, MsgError> {
        decode(self.recv_frame_max(max.min(MAX_MSG)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        encode(v).unwrap()
    }

    /// A container's name and ID become arguments of `podman` run as root at the destination:
    /// nothing that could read as an option, a path or a second argument gets through.
    #[test]
    fn container_names_and_ids_are_validated() {
        for ok in ["srv", "ctr-srv", "a", "A1_b.c-d", &"x".repeat(128)] {
            assert!(ContainerName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-srv", "--root=/tmp", ".srv", "_srv", "a b", "a/b", "../x", "a;b", "a\nb", "é", &"x".repeat(129)] {
            assert!(ContainerName::new(bad).is_err(), "{bad:?}");
        }
        let id = "0123456789abcdef".repeat(4);
        let r = |name: &str, id: &str| ContainerRef { name: ContainerName(name.into()), id: id.into() };
        assert!(r("srv", &id).validate().is_ok());
        for bad in [r("srv", &id[1..]), r("srv", &id.to_uppercase()), r("srv", &format!("{}g", &id[1..])), r("--rm", &id)] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        // Deserialised names are checked again by the request's validation.
        let req = Request::CheckContainer { container: r("-x", &id) };
        assert!(decode::<Request>(&enc(&req)).unwrap().validate().is_err());
        let req = Request::RestoreContainer {
            id: MigrationId::new("m-1").unwrap(),
            archive: RelPath("../x".into()),
            container: r("srv", &id),
            opts: RestoreOpts::default(),
            previous: None,
        };
        assert!(decode::<Request>(&enc(&req)).unwrap().validate().is_err());
        let req = Request::RestoreContainer {
            id: MigrationId::new("m-1").unwrap(),
            archive: RelPath("final/container-checkpoint.tar".into()),
            container: r("srv", &id),
            opts: RestoreOpts::default(),
            previous: Some(RelPath("pre-1/../../x".into())),
        };
        assert!(decode::<Request>(&enc(&req)).unwrap().validate().is_err());
    }

    #[test]
    fn moved_addresses_and_number_checks_are_validated() {
        let ok = MovedAddr { addr: "10.0.1.7".parse().unwrap(), prefix: 24, dev: "vxlan0".into() };
        assert!(ok.validate().is_ok());
        for bad in [
            MovedAddr { prefix: 0, ..ok.clone() },
            MovedAddr { prefix: 33, ..ok.clone() },
            MovedAddr { addr: "0.0.0.0".parse().unwrap(), ..ok.clone() },
            MovedAddr { addr: "127.0.0.1".parse().unwrap(), ..ok.clone() },
            MovedAddr { addr: "224.0.0.1".parse().unwrap(), ..ok.clone() },
            MovedAddr { dev: "".into(), ..ok.clone() },
            MovedAddr { dev: "eth0; rm -rf /".into(), ..ok.clone() },
            MovedAddr { dev: "a".repeat(16), ..ok.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let id = MigrationId::new("m-1").unwrap();
        let restore = |m: MovedAddr| Request::Restore {
            id: id.clone(),
            dir: RelPath::new("final").unwrap(),
            opts: RestoreOpts { verbs: true, tcp_established: true, move_addr: Some(m) },
        };
        assert!(restore(ok.clone()).validate().is_ok());
        assert!(restore(MovedAddr { dev: "../x".into(), ..ok }).validate().is_err());
        let check = |dev: &str, n: usize| Request::CheckNumbers { ibdev: dev.into(), qpns: vec![17; n], mrs: vec![] };
        assert!(check("rxe0", 4).validate().is_ok());
        assert!(check("rxe0/../x", 1).validate().is_err());
        assert!(check("", 1).validate().is_err());
        assert!(check("rxe0", 70000).validate().is_err());
    }

    #[test]
    fn ids_and_paths_are_strict() {
        assert!(MigrationId::new("m-20261122-1").is_ok());
        // Nothing but `m-...`: the agent's own directories share the work directory.
        for bad in ["", "m-", "m", "A", "../x", "a/b", "a b", "criu-plugins", "cpucheck-1-0", "bench", "m-A", "m-../x", &format!("m-{}", "x".repeat(47))] {
            assert!(MigrationId::new(bad).is_err(), "{bad:?}");
        }
        assert!(RelPath::new("pre-1/pages-1.img").is_ok());
        assert!(RelPath::new("final").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a/b/c", ".hidden", "a//b", "a/.", "x y", "a\\b"] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_round_trip_and_validate() {
        let r = Request::PutFile { id: MigrationId::new("m-1").unwrap(), rel: RelPath::new("pre-1/pagemap-5.img").unwrap(), len: 10, via_rdma: false };
        let back: Request = decode(&enc(&r)).unwrap();
        back.validate().unwrap();
        assert!(matches!(back, Request::PutFile { len: 10, .. }));
    }

    #[test]
    fn forged_fields_fail_validation_after_decoding() {
        // A peer can put anything on the wire: serde does not run the constructors.
        let evil = Request::PutFile { id: MigrationId("../../etc".into()), rel: RelPath("x".into()), len: 1, via_rdma: false };
        assert!(decode::<Request>(&enc(&evil)).unwrap().validate().is_err());
        let evil = Request::PutSymlink { id: MigrationId::new("m-x").unwrap(), rel: RelPath::new("d/parent").unwrap(), target: "/etc".into() };
        assert!(evil.validate().is_err());
        let ok = Request::PutSymlink { id: MigrationId::new("m-x").unwrap(), rel: RelPath::new("d/parent").unwrap(), target: "../pre-1".into() };
        assert!(ok.validate().is_ok());
        // A link anywhere else (the first half of "x -> ../other, then x/f") is refused.
        for rel in ["x", "d/x", "parent"] {
            let evil = Request::PutSymlink { id: MigrationId::new("m-x").unwrap(), rel: RelPath::new(rel).unwrap(), target: "../m-other".into() };
            assert!(evil.validate().is_err(), "{rel}");
        }
        assert!(Request::Facts { pid: Some(1) }.validate().is_err());
    }

    #[test]
    fn scp_requests_name_one_directory_and_plain_files() {
        let id = MigrationId::new("m-x").unwrap();
        let file = |name: &str| ScpFile { name: name.into(), len: 4096 };
        assert!(Request::ScpDir { id: id.clone(), rel: RelPath::new("final").unwrap() }.validate().is_ok());
        assert!(Request::ScpDir { id: id.clone(), rel: RelPath::new("final/x").unwrap() }.validate().is_err());
        let ok = Request::ScpDone { id: id.clone(), rel: RelPath::new("final").unwrap(), files: vec![file("pages-1.img"), file("core-7.img")] };
        assert!(decode::<Request>(&enc(&ok)).unwrap().validate().is_ok());
        for bad in ["../x", "a/b", ".hidden", "", "a b"] {
            let r = Request::ScpDone { id: id.clone(), rel: RelPath::new("final").unwrap(), files: vec![file(bad)] };
            assert!(decode::<Request>(&enc(&r)).unwrap().validate().is_err(), "{bad:?}");
        }
        let huge = Request::ScpDone { id, rel: RelPath::new("final").unwrap(), files: vec![ScpFile { name: "p.img".into(), len: MAX_FILE + 1 }] };
        assert!(huge.validate().is_err());
    }

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let ids: Vec<MigrationId> = (0..64).map(|_| MigrationId::random().unwrap()).collect();
        for id in &ids {
            let s = id.as_str();
            assert_eq!(s.len(), 18, "{s}");
            assert!(s.starts_with("m-") && s[2..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{s}");
            assert!(MigrationId::new(s).is_ok());
        }
        let mut uniq: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), ids.len());
    }

    #[test]
    fn begin_names_a_real_process_and_requests_name_their_migration() {
        let id = MigrationId::new("m-1").unwrap();
        assert!(Request::Begin { id: id.clone(), pid: 4242 }.validate().is_ok());
        for bad in [1, 0, -7] {
            let r: Request = decode(&enc(&Request::Begin { id: id.clone(), pid: bad })).unwrap();
            assert!(r.validate().is_err(), "{bad}");
        }
        assert_eq!(Request::Begin { id: id.clone(), pid: 7 }.id(), Some(&id));
        assert_eq!(Request::Abort { id: id.clone() }.id(), Some(&id));
        assert_eq!(Request::Ping.id(), None);
        assert!(decode::<Request>(&enc(&Request::Ping)).unwrap().validate().is_ok());
    }

    #[test]
    fn host_facts_round_trip_with_and_without_a_tsc() {
        // No trailing optional fields in postcard: an older peer's facts would not decode, which
        // is why the source refuses another rdmig version before it reads further.
        let without = HostFacts {
            hostname: "node2".into(),
            rdmig_version: "0.1.0".into(),
            criu_version: Some("4.1".into()),
            kernel: "6.8.0".into(),
            mem_available: 3 << 30,
            disk_available: 40 << 30,
            pid_free: Some(true),
            rxe: Some("rdmig".into()),
            ucma: Some(2),
            tsc: None,
        };
        let with = HostFacts {
            tsc: Some(TscFacts { sample: TscSample { tsc: u64::MAX - 1, mono_ns: 123_456_789_012, uncertainty_ns: 35 }, khz: 2_592_000 }),
            ..without.clone()
        };
        for f in [without, with] {
            let back = match decode::<Reply>(&enc(&Reply::Facts(f.clone()))).unwrap() {
                Reply::Facts(back) => back,
                other => panic!("{other:?}"),
            };
            assert_eq!(back, f);
        }
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(decode::<Request>(&[0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode::<Request>(&[]).is_err());
        // A variant number past the last one.
        assert!(decode::<Request>(&[200]).is_err());
        let mut b = enc(&Request::Time);
        b.push(0);
        assert!(matches!(decode::<Request>(&b), Err(MsgError::Decode(e)) if e.contains("trailing")));
        // A string that is not UTF-8 where an id goes.
        let mut b = enc(&Request::Abort { id: MigrationId::new("m-1").unwrap() });
        let last = b.len() - 1;
        b[last] = 0xff;
        assert!(decode::<Request>(&b).is_err());
    }

    #[test]
    fn every_truncation_of_a_message_is_refused() {
        let msgs = [
            Request::PutFile { id: MigrationId::new("m-1").unwrap(), rel: RelPath::new("pre-1/pages-1.img").unwrap(), len: 1 << 33, via_rdma: true },
            Request::CpuCheck { image: vec![7; 3000] },
            Request::ScpDone {
                id: MigrationId::new("m-1").unwrap(),
                rel: RelPath::new("final").unwrap(),
                files: vec![ScpFile { name: "core-1.img".into(), len: 9 }],
            },
        ];
        for m in msgs {
            let b = enc(&m);
            for n in 0..b.len() {
                assert!(decode::<Request>(&b[..n]).is_err(), "{m:?} cut to {n} of {} bytes decoded", b.len());
            }
            assert!(decode::<Request>(&b).is_ok());
        }
    }

    /// One valid request of each kind, as the agent receives it: the seeds of the fuzz target
    /// `msg_decode` (fuzz/corpus/msg_decode/), so that its mutations start from real messages.
    #[test]
    fn fuzz_seeds_are_current() {
        let id = MigrationId::new("m-0123456789abcdef").unwrap();
        let rel = |s: &str| RelPath::new(s).unwrap();
        let gid = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x01];
        let ep = |qpn| Endpoint { qpn, psn: 0x1234, gid };
        let moved = MovedAddr { addr: "10.0.1.7".parse().unwrap(), prefix: 24, dev: "vxlan0".into() };
        let seeds = [
            ("facts", Request::Facts { pid: Some(4242) }),
            ("cpu_check", Request::CpuCheck { image: (0..64).collect() }),
            ("time", Request::Time),
            ("begin", Request::Begin { id: id.clone(), pid: 4242 }),
            ("put_file", Request::PutFile { id: id.clone(), rel: rel("pre-1/pages-1.img"), len: 1 << 20, via_rdma: true }),
            ("rdma_setup", Request::RdmaSetup { eps: vec![ep(17), ep(18)], protection: ChunkProtection::Authenticated }),
            ("probe", Request::Probe { len: 1 << 24, via_rdma: false }),
            ("put_symlink", Request::PutSymlink { id: id.clone(), rel: rel("final/parent"), target: "../pre-1".into() }),
            ("page_stream", Request::PageStream { id: id.clone(), rel: rel("final"), parent: Some(rel("pre-1")), via_rdma: true }),
            ("scp_dir", Request::ScpDir { id: id.clone(), rel: rel("final") }),
            (
                "scp_done",
                Request::ScpDone {
                    id: id.clone(),
                    rel: rel("final"),
                    files: vec![ScpFile { name: "pages-1.img".into(), len: 4096 }, ScpFile { name: "core-7.img".into(), len: 9 }],
                },
            ),
            (
                "restore",
                Request::Restore { id: id.clone(), dir: rel("final"), opts: RestoreOpts { verbs: true, tcp_established: true, move_addr: Some(moved) } },
            ),
            ("check_numbers", Request::CheckNumbers { ibdev: "rxe0".into(), qpns: vec![17, 18], mrs: vec![1, 2, 3] }),
            ("commit", Request::Commit { id: id.clone() }),
            ("abort", Request::Abort { id: id.clone() }),
            ("status", Request::Status { id }),
            ("ping", Request::Ping),
            ("events", Request::Events { after: 99 }),
            ("inventory", Request::Inventory),
        ];
        for (name, r) in seeds {
            r.validate().unwrap();
            crate::fuzz_seed("msg_decode", &format!("{name}.bin"), &enc(&r));
        }
    }

    #[test]
    fn the_size_limit_applies_and_is_below_the_frame() {
        const _: () = assert!(MAX_MSG < crate::wire::MAX_PAYLOAD);
        // The largest valid request fits.
        let big_ok = Request::CpuCheck { image: vec![1; 1 << 20] };
        assert!(big_ok.validate().is_ok());
        assert!(decode::<Request>(&enc(&big_ok)).is_ok());
        // One over the limit neither encodes nor decodes, whatever it holds.
        let over = Request::CpuCheck { image: vec![1; MAX_MSG] };
        assert!(matches!(encode(&over), Err(MsgError::TooLarge(_))));
        let mut b = postcard::to_allocvec(&over).unwrap();
        assert!(b.len() > MAX_MSG);
        assert!(matches!(decode::<Request>(&b), Err(MsgError::TooLarge(n)) if n == b.len()));
        // A length prefix claiming far more than the input holds fails without allocating it:
        // CpuCheck (variant 1) with a varint length of 2^35.
        b.clear();
        b.extend_from_slice(&[1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(decode::<Request>(&b).is_err());
        // A file list of 2^32 entries in a few bytes: refused, not reserved.
        let mut l = enc(&Request::ScpDone { id: MigrationId::new("m-x").unwrap(), rel: RelPath::new("f").unwrap(), files: vec![] });
        l.pop();
        l.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode::<Request>(&l).is_err());
    }
}
