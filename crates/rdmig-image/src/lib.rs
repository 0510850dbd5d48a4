//! The plugin's own image files, written next to CRIU's images (CRIU only records an
//! `ExtFileEntry{id}` for a file a plugin dumped; everything else is here).
//!
//! One file per dumped file id: `rdmig-rxe-<id>.img`. Layout (all integers little endian):
//!
//! | offset | size | what |
//! |---|---|---|
//! | 0 | 8 | magic `RDMIGRXE` |
//! | 8 | 4 | format version ([`FORMAT_VERSION`]) |
//! | 12 | 4 | flags (0) |
//! | 16 | 8 | length J of the JSON header |
//! | 24 | J | JSON: one [`FileImage`] |
//! | 24+J | B | blob: QP state images and saved queue contents, addressed by [`QueueVma::blob_offset`] |
//! | 24+J+B | 4 | (version 2 and later) CRC-32 (IEEE) of every byte before it |
//!
//! Version 3 leaves out the contents of the rings a QP's driver state image carries (a connected
//! QP's queues and CQs, [`RingContents::InQpImage`]): the restore loads them with the QP and never
//! copied them back, and at 64 QPs they were 1.5 of the image's 2.5 MB, which the destination
//! reads inside the blackout. Version 2 readers would find those rings outside the blob, so
//! the version says it.
//!
//! A reader refuses another magic, a newer version, or (version 2) a checksum that does not
//! match, before it parses anything: a flipped byte on disk or on the way is found, as in
//! Firecracker's snapshot files. Version 1 files (no checksum) are still read. Unknown JSON keys
//! are ignored, so fields can be added without a version bump (a removed or re-meant field
//! needs one).
//!
//! An rdma_cm file (librdmacm's event channel) gets a file of its own, `rdmig-ucma-<id>.img`,
//! framed the same way with magic `RDMIGUCM` and its own version: see [`ucma`].
//!
//! `show` renders the images for people (`rdmig image show`), as CRIU's `crit show` does for
//! CRIU's own.

/// The plugin's one setting, an environment variable of CRIU: set (by rdmig's agent, with
/// `criu restore --leave-stopped`), the restore leaves the QPs stopped with the process, for
/// whoever restored it to resume both (the agent does when the migration commits).
pub const HOLD_ENV: &str = "RDMIG_HOLD_QPS";

pub mod show;
pub mod timing;
pub mod ucma;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"RDMIGRXE";
pub const FORMAT_VERSION: u32 = 3;
/// The first version with the CRC-32 trailer.
const CHECKSUMMED_SINCE: u32 = 2;
/// The largest image file read: rings and QP state images of one verbs context are far smaller;
/// a larger file is refused rather than read into memory.
pub const MAX_FILE_BYTES: u64 = 1 << 31;
pub const FILE_PREFIX: &str = "rdmig-rxe-";
pub const FILE_SUFFIX: &str = ".img";

/// Name of the image file of CRIU file id `id`.
pub fn file_name(id: u32) -> String {
    format!("{FILE_PREFIX}{id}{FILE_SUFFIX}")
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}")]
    Io { path: PathBuf, source: std::io::Error },
    /// `kind` names what the file should have been (an rdmig verbs image, an rdmig rdma_cm image).
    #[error("{path}: not an {kind} (bad magic)")]
    Magic { path: PathBuf, kind: &'static str },
    #[error("{path}: format version {found}, this build reads up to {max}")]
    Version { path: PathBuf, found: u32, max: u32 },
    #[error("{path}: truncated ({what})")]
    Truncated { path: PathBuf, what: &'static str },
    #[error("{path}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file was damaged")]
    Checksum { path: PathBuf, stored: u32, computed: u32 },
    #[error(
        "{path}: no rdmig verbs or rdma_cm images ({FILE_PREFIX}<id>{FILE_SUFFIX}, {}<id>{FILE_SUFFIX}): the dump held no verbs state, or was not made with rdmig's CRIU plugin",
        ucma::FILE_PREFIX
    )]
    NoImages { path: PathBuf },
    #[error("{path}: {len} bytes, more than the {max} an image of its kind may have")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("{path}: bad JSON header")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {len} bytes after the JSON header, where this kind of image has none")]
    Trailing { path: PathBuf, len: usize },
}

/// What one image file describes: the CRIU file it belongs to, and its verbs state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileImage {
    /// CRIU's file id (the `id` of DUMP_EXT_FILE / RESTORE_EXT_FILE).
    pub id: u32,
    /// The process that held the file, and its fd number there (as seen by CRIU at dump).
    pub pid: i32,
    pub fd: i32,
    /// The process's pid in its own pid namespace (the last of `NSpid` in /proc/PID/status):
    /// the pid CRIU gives it back at restore. The same as `pid` outside containers; inside one,
    /// the restored process has another pid on the host, and this is what finds its images.
    /// Absent in images of plugins before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<i32>,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileKind {
    /// A `/dev/infiniband/uverbsN` file with its user context and every object on it.
    Context(Box<Context>),
    /// An `anon_inode:[infinibandevent]` file: the async event file or a completion channel.
    EventFile(EventFile),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// Path of the uverbs device, e.g. `/dev/infiniband/uverbs0`, and its char device number.
    pub path: String,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// The rxe device (`rxe0`), from sysfs.
    pub ibdev: String,
    /// File status flags (O_RDWR, O_CLOEXEC is per fd and kept by CRIU).
    pub flags: i32,
    pub pds: Vec<Handle>,
    pub cqs: Vec<Cq>,
    pub srqs: Vec<Srq>,
    pub qps: Vec<Qp>,
    pub mrs: Vec<Mr>,
    pub mws: Vec<Mw>,
    pub ahs: Vec<Ah>,
    /// Number of completion channels and async event files the context has (fd objects: the
    /// kernel gives them no handle, they are dumped as their own event files).
    pub comp_channels: u32,
    pub async_event_files: u32,
    /// Whether the event state below (user handles, event counters, channels, queued events)
    /// was read from rdmig's ib_uverbs (softroce patch 0010); without it user handles are 0.
    #[serde(default)]
    pub events_saved: bool,
    /// The completion channels, with the events queued on them at the dump.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// Events queued on the async event file at the dump, oldest first.
    #[serde(default)]
    pub async_pending: Vec<AsyncEvent>,
    /// The process's mappings of this uverbs file (rxe queues: CQ, SQ, RQ, SRQ rings).
    pub queues: Vec<QueueVma>,
    /// The file's token in the fdinfo of rdmig's ib_uverbs (softroce patch 0014), which its event
    /// files name too: with several uverbs files in a process, it tells whose they are.
    #[serde(default)]
    pub file_token: Option<String>,
}

/// An object known only by its uverbs handle (no query exists for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub handle: u32,
}

/// A shared receive queue (basic). Images of plugins before SRQ support held only handles (and
/// were refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Srq {
    pub handle: u32,
    /// Handle of its PD.
    #[serde(default)]
    pub pd: Option<u32>,
    /// Page offset of its ring mapping (from the QPs that use it).
    #[serde(default)]
    pub pgoff: Option<u64>,
    /// From QUERY_SRQ: capacity (rxe: the ring's index mask), SGEs per WQE, armed limit (0: not
    /// armed).
    #[serde(default)]
    pub max_wr: u32,
    #[serde(default)]
    pub max_sge: u32,
    #[serde(default)]
    pub srq_limit: u32,
    /// What libibverbs gave CREATE_SRQ (its `struct ibv_srq *`), and the async events of the SRQ
    /// the process has read.
    #[serde(default)]
    pub user_handle: u64,
    #[serde(default)]
    pub events_reported: u32,
}

/// A completion queue: its handle and, when known, its ring.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cq {
    pub handle: u32,
    /// Page offset of its ring mapping (matched to the handle by creation order: the driver hands
    /// out ring offsets in increasing order, uverbs handles lowest-free).
    #[serde(default)]
    pub pgoff: Option<u64>,
    /// Capacity (the ring's `index_mask`): what CREATE_CQ must ask for to get the same ring.
    #[serde(default)]
    pub cqe: Option<u32>,
    /// What libibverbs gave CREATE_CQ (its `struct ibv_cq *`), returned in every event.
    #[serde(default)]
    pub user_handle: u64,
    /// Token of its completion channel ([`Channel::token`]), `None` without one.
    #[serde(default)]
    pub channel: Option<String>,
    /// Completion and async events the process has read, which DESTROY_CQ reports and
    /// `ibv_destroy_cq` waits for the process to have acknowledged.
    #[serde(default)]
    pub comp_events_reported: u32,
    #[serde(default)]
    pub events_reported: u32,
}

/// A completion channel: its token (the kernel's name for it, valid for the boot of the dump),
/// the fd the process had for it, and the CQ handles of the events queued on it, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub token: String,
    pub fd: i32,
    pub pending: Vec<u32>,
}

/// An event queued on the async event file: its type, and the uverbs object type and handle it
/// is about (object 0: a device event, `element` is the port).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncEvent {
    pub event_type: u32,
    pub element: u64,
    pub object: u32,
    pub handle: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Qp {
    pub handle: u32,
    /// QPN from /dev/rxe_ctl's status; `qpn_source` says how it was matched to the handle.
    pub qpn: u32,
    pub qpn_source: String,
    /// `rc`, `ud`, ... (status).
    pub qp_type: String,
    /// From QUERY_QP (live values on rxe).
    pub attr: QpAttr,
    /// What the QP is attached to (from the driver's ring offsets); absent in images of
    /// plugins that did not record it, which cannot be restored.
    #[serde(default)]
    pub links: Option<QpLinks>,
    /// The source GID of the QP's address vector (text as in sysfs) and its type, so that a
    /// restore finds the same GID whatever its index is on the new node.
    #[serde(default)]
    pub sgid: Option<String>,
    #[serde(default)]
    pub sgid_type: Option<String>,
    /// The driver's state image of a connected QP (`RXE_CTL_IOC_QP_DUMP`), in the blob.
    #[serde(default)]
    pub mig_image: Option<BlobRef>,
    /// What libibverbs gave CREATE_QP (its `struct ibv_qp *`), and the async events of the QP
    /// the process has read.
    #[serde(default)]
    pub user_handle: u64,
    #[serde(default)]
    pub events_reported: u32,
}

/// Handles and ring offsets of what a QP uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpLinks {
    pub pd: u32,
    pub send_cq: u32,
    pub recv_cq: u32,
    /// Page offsets of the send and receive queue rings (of a QP on an SRQ: the SRQ's ring).
    pub sq_pgoff: u64,
    pub rq_pgoff: u64,
    /// The SRQ it receives from.
    #[serde(default)]
    pub srq: Option<u32>,
}

/// A byte range of the image's blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub offset: u64,
    pub len: u64,
}

/// The fields of `ib_uverbs_query_qp_resp` that matter for a restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpAttr {
    pub state: u8,
    pub path_mtu: u8,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: u32,
    pub access_flags: u32,
    pub pkey_index: u16,
    pub port_num: u8,
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub sq_sig_all: u8,
    pub dgid: [u8; 16],
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    pub is_global: u8,
    #[serde(default)]
    pub sl: u8,
}

/// IB QP states as numbered by the uverbs ABI.
pub fn qp_state_name(s: u8) -> &'static str {
    match s {
        0 => "RESET",
        1 => "INIT",
        2 => "RTR",
        3 => "RTS",
        4 => "SQD",
        5 => "SQE",
        6 => "ERR",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mr {
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
    pub iova: u64,
    pub length: u64,
    /// From the status: user address and access flags (`None` if the status lacked the MR).
    pub access: Option<u32>,
    /// Handle of its PD (from the fdinfo of rdmig's ib_uverbs, softroce patch 0011, or the only
    /// PD of the context); absent in images of older plugins, which allowed one PD only.
    #[serde(default)]
    pub pd: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mw {
    pub handle: u32,
    /// Its current rkey (status, matched by the MW's handle: softroce patch 0013).
    pub rkey: Option<u32>,
    /// 1 or 2 (`enum ib_mw_type`); 0 in images of older plugins, which refused MWs.
    #[serde(default)]
    pub mw_type: u32,
    /// Handle of its PD.
    #[serde(default)]
    pub pd: Option<u32>,
    /// Where it is bound; `None` for an unbound MW.
    #[serde(default)]
    pub binding: Option<MwBinding>,
}

/// The binding of an MW: MR (by its index, lkey >> 8), range, access, and for a type 2 MW its QP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MwBinding {
    pub mr_index: u32,
    pub addr: u64,
    pub length: u64,
    pub access: u32,
    pub qpn: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ah {
    pub handle: u32,
    /// rxe's `ah_num` (status, matched by the AH's handle: softroce patch 0012), which librxe
    /// puts into every UD work request.
    pub ah_num: Option<u32>,
    /// Handle of its PD.
    #[serde(default)]
    pub pd: Option<u32>,
    /// What libibverbs gave CREATE_AH (its `struct ibv_ah *`).
    #[serde(default)]
    pub user_handle: u64,
    /// The address vector (status): port, source GID (text and type as in sysfs, found again by
    /// text on restore), destination GID, flow label, hop limit, traffic class. `None`: not saved
    /// (images of older plugins, which refused AHs).
    #[serde(default)]
    pub av: Option<AhAv>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AhAv {
    pub port: u8,
    pub sgid: String,
    pub sgid_type: String,
    pub dgid: [u8; 16],
    pub flow_label: u32,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueVma {
    pub start: u64,
    pub end: u64,
    /// Page offset of the mapping in the uverbs file (rxe's mmap cookie >> page shift).
    pub pgoff: u64,
    pub prot: String,
    /// Where the saved contents are in the blob (with [`RingContents::Blob`]), and how many
    /// bytes the mapping has (end - start).
    pub blob_offset: u64,
    pub len: u64,
    /// Whether the contents are in the blob. Images before version 3 saved every ring.
    #[serde(default)]
    pub contents: RingContents,
}

/// Where a saved ring's contents are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingContents {
    /// At `blob_offset`, `len` bytes.
    #[default]
    Blob,
    /// In the driver state image of the QP that uses the ring (a connected QP's send and receive
    /// queues and CQs): nothing in the blob; `blob_offset` is 0.
    InQpImage,
}

impl QueueVma {
    /// Whether the ring's contents are in the blob.
    pub fn in_blob(&self) -> bool {
        self.contents == RingContents::Blob
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFile {
    /// The CRIU file id of the uverbs file of the same process, when there is exactly one.
    pub context_id: Option<u32>,
    /// `async` or `comp_channel`, and how that was decided.
    pub role: String,
    pub role_source: String,
    pub flags: i32,
    /// A completion channel's token ([`Channel::token`]).
    #[serde(default)]
    pub channel: Option<String>,
    /// The token of the uverbs file it belongs to ([`Context::file_token`]).
    #[serde(default)]
    pub file_token: Option<String>,
}

/// A loaded image file.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub path: PathBuf,
    pub version: u32,
    pub image: FileImage,
    pub blob: Vec<u8>,
}

/// The framing every image kind shares: magic, version, flags (0), JSON length, JSON, blob, and
/// the CRC-32 of all of it.
pub(crate) fn frame(magic: &[u8; 8], version: u32, json: &[u8], blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + json.len() + blob.len() + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(blob);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// What a framed file holds, once its magic, version and checksum were checked: its version,
/// and where its JSON and its blob are among the file's bytes.
pub(crate) struct Framed {
    pub version: u32,
    pub json: std::ops::Range<usize>,
    pub blob: std::ops::Range<usize>,
}

/// What [`unframe`] expects of one image kind.
pub(crate) struct Framing {
    pub magic: &'static [u8; 8],
    /// For messages: "rdmig verbs image".
    pub kind: &'static str,
    pub max_version: u32,
    /// The first version with the CRC-32 trailer.
    pub checksummed_since: u32,
}

/// Checks a framed file's magic, version and (from `checksummed_since`) its CRC-32, before
/// anything else of it is looked at, and finds its JSON and its blob.
pub(crate) fn unframe(path: &Path, bytes: &[u8], f: &Framing) -> Result<Framed, ImageError> {
    let p = || path.to_path_buf();
    if bytes.len() < 8 || &bytes[..8] != f.magic {
        return Err(ImageError::Magic { path: p(), kind: f.kind });
    }
    if bytes.len() < 24 {
        return Err(ImageError::Truncated { path: p(), what: "header" });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version == 0 || version > f.max_version {
        return Err(ImageError::Version { path: p(), found: version, max: f.max_version });
    }
    // Verified before anything else of the file is looked at.
    let body_len = if version >= f.checksummed_since {
        let Some(body_len) = bytes.len().checked_sub(4).filter(|&n| n >= 24) else {
            return Err(ImageError::Truncated { path: p(), what: "checksum" });
        };
        let (body, tail) = bytes.split_at(body_len);
        let stored = u32::from_le_bytes(tail.try_into().expect("4 bytes"));
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(ImageError::Checksum { path: p(), stored, computed });
        }
        body_len
    } else {
        bytes.len()
    };
    let jlen = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let jend = 24u64.checked_add(jlen).filter(|&e| e <= body_len as u64).ok_or(ImageError::Truncated { path: p(), what: "JSON header" })? as usize;
    Ok(Framed { version, json: 24..jend, blob: jend..body_len })
}

const VERBS: Framing = Framing { magic: MAGIC, kind: "rdmig verbs image", max_version: FORMAT_VERSION, checksummed_since: CHECKSUMMED_SINCE };

/// Encodes an image file: header, JSON, blob.
pub fn encode(img: &FileImage, blob: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(img).expect("image types always serialize");
    frame(MAGIC, FORMAT_VERSION, &json, blob)
}

/// Decodes an image file's bytes (`path` only names it in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Loaded, ImageError> {
    decode_owned(path, bytes.to_vec())
}

/// [`decode`] of bytes it may keep: the blob stays in the buffer it was read into rather than
/// being copied out (the destination reads the images inside the blackout, and a 64-QP
/// image's blob is 2.5 MB; see `examples/read_cost.rs`).
pub fn decode_owned(path: &Path, mut bytes: Vec<u8>) -> Result<Loaded, ImageError> {
    let p = || path.to_path_buf();
    let Framed { version, json, blob } = unframe(path, &bytes, &VERBS)?;
    let image: FileImage = serde_json::from_slice(&bytes[json]).map_err(|e| ImageError::Json { path: p(), source: e })?;
    bytes.truncate(blob.end);
    bytes.drain(..blob.start);
    let blob = bytes;
    if let FileKind::Context(c) = &image.kind {
        for q in c.queues.iter().filter(|q| q.in_blob()) {
            if q.blob_offset.checked_add(q.len).is_none_or(|e| e > blob.len() as u64) {
                return Err(ImageError::Truncated { path: p(), what: "queue contents" });
            }
        }
        for q in &c.qps {
            if let Some(m) = q.mig_image {
                if m.offset.checked_add(m.len).is_none_or(|e| e > blob.len() as u64) {
                    return Err(ImageError::Truncated { path: p(), what: "QP state image" });
                }
            }
        }
    }
    Ok(Loaded { path: p(), version, image, blob })
}

pub fn read_file(path: &Path) -> Result<Loaded, ImageError> {
    read_file_max(path, MAX_FILE_BYTES)
}

/// [`read_file`], refusing a file of more than `max` bytes without reading past them.
fn read_file_max(path: &Path, max: u64) -> Result<Loaded, ImageError> {
    decode_owned(path, read_bytes_max(path, max)?)
}

/// The bytes of the file at `path`, refusing one of more than `max` bytes without reading past
/// them.
pub(crate) fn read_bytes_max(path: &Path, max: u64) -> Result<Vec<u8>, ImageError> {
    let io = |e| ImageError::Io { path: path.to_path_buf(), source: e };
    let f = std::fs::File::open(path).map_err(io)?;
    // Sized once from the file's length (capped: the length is only a hint) instead of grown,
    // and copied, as the bytes come.
    let hint = f.metadata().map_or(0, |m| m.len()).min(max.saturating_add(1));
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    f.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(bytes.len() as u64);
        return Err(ImageError::TooLarge { path: path.to_path_buf(), len, max });
    }
    Ok(bytes)
}

pub fn write_file(path: &Path, img: &FileImage, blob: &[u8]) -> Result<(), ImageError> {
    std::fs::File::create(path).and_then(|mut f| f.write_all(&encode(img, blob))).map_err(|e| ImageError::Io { path: path.to_path_buf(), source: e })
}

/// Every image file of ours in a CRIU image directory, sorted by file id.
pub fn read_dir(dir: &Path) -> Result<Vec<Loaded>, ImageError> {
    file_ids(dir, FILE_PREFIX)?.iter().map(|id| read_file(&dir.join(file_name(*id)))).collect()
}

/// The file ids of the images `<prefix><id>.img` in `dir`, sorted.
pub(crate) fn file_ids(dir: &Path, prefix: &str) -> Result<Vec<u32>, ImageError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ImageError::Io { path: dir.to_path_buf(), source: e })?;
    let mut ids = vec![];
    for e in rd {
        let e = e.map_err(|e| ImageError::Io { path: dir.to_path_buf(), source: e })?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_prefix(prefix).and_then(|r| r.strip_suffix(FILE_SUFFIX)).and_then(|n| n.parse::<u32>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FileImage {
        FileImage {
            id: 7,
            pid: 42,
            fd: 3,
            ns_pid: None,
            kind: FileKind::Context(Box::new(Context {
                path: "/dev/infiniband/uverbs0".into(),
                rdev_major: 231,
                rdev_minor: 192,
                ibdev: "rxe0".into(),
                flags: 2,
                pds: vec![Handle { handle: 0 }],
                cqs: vec![Cq {
                    handle: 2,
                    pgoff: Some(1),
                    cqe: Some(15),
                    user_handle: 0x55d0,
                    channel: Some("ab".into()),
                    comp_events_reported: 3,
                    events_reported: 0,
                }],
                srqs: vec![],
                qps: vec![],
                mrs: vec![Mr { handle: 1, lkey: 0x1234, rkey: 0x1234, iova: 0x7000, length: 4096, access: Some(7), pd: Some(0) }],
                mws: vec![],
                ahs: vec![],
                comp_channels: 1,
                async_event_files: 1,
                events_saved: true,
                channels: vec![Channel { token: "ab".into(), fd: 5, pending: vec![2] }],
                async_pending: vec![AsyncEvent { event_type: 18, element: 1, object: 0, handle: None }],
                queues: vec![QueueVma { start: 0x1000, end: 0x2000, pgoff: 1, prot: "rw-s".into(), blob_offset: 0, len: 4, contents: Default::default() }],
                file_token: Some("f00d".into()),
            })),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample(), &[1, 2, 3, 4]);
        let l = decode(Path::new("x"), &bytes).unwrap();
        assert_eq!(l.image, sample());
        assert_eq!(l.blob, vec![1, 2, 3, 4]);
        assert_eq!(l.version, FORMAT_VERSION);
    }

    #[test]
    fn images_without_the_event_state_read_as_having_none() {
        // A context and an event file as plugins before the event state wrote them.
        let mut v = serde_json::to_value(sample()).unwrap();
        let c = v["kind"].as_object_mut().unwrap();
        for k in ["events_saved", "channels", "async_pending"] {
            c.remove(k);
        }
        let cq = c["cqs"][0].as_object_mut().unwrap();
        for k in ["user_handle", "channel", "comp_events_reported", "events_reported"] {
            cq.remove(k);
        }
        let old: FileImage = serde_json::from_value(v).unwrap();
        let FileKind::Context(c) = old.kind else { panic!("not a context") };
        assert!(!c.events_saved && c.channels.is_empty() && c.async_pending.is_empty());
        assert_eq!(c.cqs[0], Cq { handle: 2, pgoff: Some(1), cqe: Some(15), ..Default::default() });
        let e: EventFile = serde_json::from_str(r#"{"context_id":3,"role":"comp_channel","role_source":"x","flags":2}"#).unwrap();
        assert_eq!(e.channel, None);
    }

    #[test]
    fn refuses_bad_magic_newer_version_and_truncation() {
        let mut bytes = encode(&sample(), &[1, 2, 3, 4]);
        // Cutting the file breaks the checksum first; a version 1 file without its last byte
        // (no checksum) is found truncated by the blob bounds.
        assert!(matches!(decode(Path::new("x"), &bytes[..bytes.len() - 1]), Err(ImageError::Checksum { .. })));
        let mut v1 = bytes[..bytes.len() - 4].to_vec();
        v1[8] = 1;
        assert!(decode(Path::new("x"), &v1).is_ok());
        assert!(matches!(decode(Path::new("x"), &v1[..v1.len() - 1]), Err(ImageError::Truncated { .. })));
        assert!(matches!(decode(Path::new("x"), &bytes[..20]), Err(ImageError::Truncated { .. })));
        bytes[8] = FORMAT_VERSION as u8 + 1;
        assert!(matches!(decode(Path::new("x"), &bytes), Err(ImageError::Version { found, .. }) if found == FORMAT_VERSION + 1));
        bytes[0] = b'X';
        assert!(matches!(decode(Path::new("x"), &bytes), Err(ImageError::Magic { .. })));
    }

    #[test]
    fn rings_left_out_of_the_blob_are_not_looked_for_in_it() {
        let mut img = sample();
        let FileKind::Context(c) = &mut img.kind else { unreachable!() };
        c.queues[0].len = 1 << 20;
        // Saved in the blob, a ring must be within it; carried by its QP's image, it is not in it.
        assert!(matches!(decode(Path::new("x"), &encode(&img, &[1, 2, 3, 4])), Err(ImageError::Truncated { what: "queue contents", .. })));
        let FileKind::Context(c) = &mut img.kind else { unreachable!() };
        c.queues[0].contents = RingContents::InQpImage;
        let l = decode(Path::new("x"), &encode(&img, &[1, 2, 3, 4])).unwrap();
        let FileKind::Context(c) = &l.image.kind else { unreachable!() };
        assert!(!c.queues[0].in_blob());
        // Images before version 3 have no such field: every ring was saved.
        let old: QueueVma = serde_json::from_str(r#"{"start":4096,"end":8192,"pgoff":1,"prot":"rw-s","blob_offset":0,"len":4096}"#).unwrap();
        assert!(old.in_blob());
    }

    #[test]
    fn files_past_the_limit_are_not_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(file_name(7));
        write_file(&p, &sample(), &[0; 100]).unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(read_file_max(&p, len).is_ok());
        assert!(matches!(read_file_max(&p, len - 1), Err(ImageError::TooLarge { len: l, .. }) if l == len));
    }

    #[test]
    fn a_file_read_keeps_its_blob_where_it_was_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(file_name(7));
        let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        write_file(&p, &sample(), &blob).unwrap();
        let l = read_file(&p).unwrap();
        assert_eq!((l.image, l.blob), (sample(), blob));
        // Without a checksum (version 1) the blob runs to the file's end.
        let mut v1 = encode(&sample(), &[9, 8, 7, 6]);
        v1.truncate(v1.len() - 4);
        v1[8] = 1;
        assert_eq!(decode_owned(&p, v1).unwrap().blob, vec![9, 8, 7, 6]);
    }

    #[test]
    fn any_flipped_byte_is_found() {
        let bytes = encode(&sample(), &[1, 2, 3, 4]);
        // Every byte after the version field (flags, lengths, JSON, blob, checksum).
        for i in 12..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(decode(Path::new("x"), &b).is_err(), "flipping bit {bit:#x} of byte {i} went unnoticed");
            }
        }
    }
}
