//! Client of rdmig's rdma_rxe control interface (softroce/ patches): `/dev/rxe_ctl` ioctls, its
//! text status, and the MigrOS-compatible sysctls. The ABI is documented in softroce/README.md;
//! the structs here mirror `rxe_ctl_abi.h` field for field (fixed sizes, no padding).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use serde::Serialize;

pub const CTL_DEV: &str = "/dev/rxe_ctl";
pub const SYSCTL_DIR: &str = "/proc/sys/net/rdma_rxe";
pub const ABI_VERSION: u32 = 1;
const MAGIC: u8 = 0xB8;
const F_PERSIST: u32 = 1;
const F_KEY: u32 = 2;
const DROP_F_ALL: u32 = 1;
const DIRTY_F_CLEAR: u32 = 1;
/// `rxe_ctl_version.features` bit of the QP migration commands (patch 0006).
pub const FEAT_QPMIG: u32 = 8;
/// `rxe_ctl_version.features` bit of MR_REPIN and of the ring offsets in the status (patch 0007).
pub const FEAT_MR_REPIN: u32 = 16;
/// `rxe_ctl_version.features` bit of the epochs in PAUSE, RESUME and RESUME_ACK: a PAUSE sent
/// before a RESUME never pauses the peer after it (patch 0009).
pub const FEAT_QP_EPOCH: u32 = 32;
/// QP_RESTORE: also restore the CQ rings of the QP.
pub const QP_F_CQ: u32 = 1;
/// QP_RESTORE: also restore the SRQ ring of the QP.
pub const QP_F_SRQ: u32 = 2;
/// QP_RESUME: resume without sending RESUME (rollback of a QP that did not move, loopback).
pub const QP_F_LOCAL: u32 = 4;
/// QP_RESUME: the first RESUME packet is counted but not sent (fault injection for tests).
pub const QP_F_DROP_FIRST: u32 = 8;
/// QP_RESUME: after the RESUME_ACK, send one PAUSE of the stop that the resume ends, which the
/// peer must ignore (fault injection for tests, patch 0009).
pub const QP_F_LATE_PAUSE: u32 = 16;
pub const QP_S_STOPPED: u32 = 1;
pub const QP_S_RESUMING: u32 = 2;
pub const QP_S_PAUSED: u32 = 4;
pub const QP_S_REQ_HELD: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{CTL_DEV} is missing: rdmig's rdma_rxe is not loaded (stock rdma_rxe has no control interface; see softroce/README.md)")]
    NotLoaded,
    #[error("{CTL_DEV}: {0}")]
    Open(std::io::Error),
    #[error("{CTL_DEV} speaks ABI {0}, this rdmig speaks {ABI_VERSION}")]
    Abi(u32),
    #[error("{what}: {errno} ({hint})")]
    Ioctl { what: String, errno: nix::errno::Errno, hint: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl From<CtlError> for std::io::Error {
    fn from(e: CtlError) -> Self {
        match e {
            CtlError::Ioctl { errno, .. } => std::io::Error::from_raw_os_error(errno as i32),
            CtlError::NotLoaded => std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
            CtlError::Open(e) | CtlError::Io { source: e, .. } => e,
            e => std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Obj {
    Qp = 1,
    Mr = 2,
    Mw = 3,
    Ah = 4,
}

impl Obj {
    /// Index range of the type in 6.1's rxe.
    pub fn range(self) -> (u32, u32) {
        match self {
            Obj::Qp => (16, 1 << 20),
            Obj::Mr => (1, 1 << 19),
            Obj::Mw => ((1 << 19) + 1, 1 << 20),
            Obj::Ah => (1, 32767),
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct Version {
    abi_version: u32,
    features: u32,
    page_shift: u32,
    dirty_log: u32,
}

#[repr(C)]
#[derive(Default)]
struct Reserve {
    obj: u32,
    flags: u32,
    first: u32,
    last: u32,
    id: u32,
    nbusy: u32,
}

#[repr(C)]
struct Expect {
    obj: u32,
    flags: u32,
    pid: i32,
    index: u32,
    key: u32,
    id: u32,
    ibdev: [u8; 64],
}

#[repr(C)]
#[derive(Default)]
struct Drop_ {
    id: u32,
    flags: u32,
}

#[repr(C)]
struct Dirty {
    ibdev: [u8; 64],
    index: u32,
    flags: u32,
    first_page: u64,
    npages: u64,
    bitmap: u64,
    ndirty: u64,
    mr_pages: u64,
    va: u64,
    iova: u64,
    lkey: u32,
    page_shift: u32,
}

/// `struct rxe_ctl_mr_repin`.
#[repr(C)]
struct MrRepin {
    ibdev: [u8; 64],
    index: u32,
    pid: i32,
    va: u64,
    flags: u32,
    reserved: u32,
    npages: u64,
}

// The sizes the kernel encodes in the ioctl numbers; a mismatch would be a silent ABI break.
const _: () = assert!(std::mem::size_of::<Version>() == 16);
const _: () = assert!(std::mem::size_of::<Reserve>() == 24);
const _: () = assert!(std::mem::size_of::<Expect>() == 88);
const _: () = assert!(std::mem::size_of::<Drop_>() == 8);
const _: () = assert!(std::mem::size_of::<Dirty>() == 136);
const _: () = assert!(std::mem::size_of::<QpCtl>() == 120);
const _: () = assert!(std::mem::size_of::<MrRepin>() == 96);

nix::ioctl_read!(ioc_version, MAGIC, 0x00, Version);
nix::ioctl_readwrite!(ioc_reserve, MAGIC, 0x01, Reserve);
nix::ioctl_readwrite!(ioc_expect, MAGIC, 0x02, Expect);
nix::ioctl_write_ptr!(ioc_drop, MAGIC, 0x03, Drop_);
nix::ioctl_readwrite!(ioc_dirty, MAGIC, 0x04, Dirty);
nix::ioctl_readwrite!(ioc_qp_stop, MAGIC, 0x05, QpCtl);
nix::ioctl_readwrite!(ioc_qp_dump, MAGIC, 0x06, QpCtl);
nix::ioctl_readwrite!(ioc_qp_restore, MAGIC, 0x07, QpCtl);
nix::ioctl_readwrite!(ioc_qp_resume, MAGIC, 0x08, QpCtl);
nix::ioctl_readwrite!(ioc_qp_query, MAGIC, 0x09, QpCtl);
nix::ioctl_readwrite!(ioc_mr_repin, MAGIC, 0x0a, MrRepin);

/// `struct rxe_ctl_qp`, shared by the QP_* commands.
#[repr(C)]
struct QpCtl {
    ibdev: [u8; 64],
    qpn: u32,
    flags: u32,
    buf: u64,
    len: u64,
    state: u32,
    qp_state: u32,
    pauses_sent: u32,
    pauses_rcvd: u32,
    resumes_sent: u32,
    resumes_rcvd: u32,
    resume_acks: u32,
    /// Out: stale PAUSE NAKs ignored; in: 0.
    pauses_stale: u32,
}

/// Migration state and protocol counters of one QP (`RXE_CTL_IOC_QP_QUERY`).
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct QpMigState {
    /// `QP_S_*` bits.
    pub state: u32,
    /// `enum ib_qp_state` (3 = RTR, 4 = RTS).
    pub qp_state: u32,
    pub pauses_sent: u32,
    pub pauses_rcvd: u32,
    pub resumes_sent: u32,
    pub resumes_rcvd: u32,
    pub resume_acks: u32,
    /// PAUSE NAKs ignored because a RESUME of the same or a later stop had come (patch 0009).
    #[serde(default)]
    pub pauses_stale: u32,
}

fn devname(dev: &str) -> Result<[u8; 64], CtlError> {
    let mut b = [0u8; 64];
    if dev.len() >= 64 || dev.contains('\0') {
        return Err(CtlError::Invalid(format!("device name {dev:?} is not a valid rxe name")));
    }
    b[..dev.len()].copy_from_slice(dev.as_bytes());
    Ok(b)
}

fn hint(e: nix::errno::Errno) -> &'static str {
    use nix::errno::Errno::*;
    match e {
        EPERM => "needs root (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN)",
        EBUSY => "the number is taken (MR_REPIN: a QP or MW uses the MR)",
        ERANGE => "outside the type's index range",
        ENOENT => "no such object or entry",
        ENODEV => "no rxe device of that name",
        ENODATA => "the MR has no dirty log (not a user MR, or registered with dirty_log=0)",
        ENOSPC => "too many entries",
        ESRCH => "no such process",
        EINVAL => "invalid argument (or the QP is in the wrong state for this command, or the MR is not a user MR of that process)",
        EFAULT => "bad address (MR_REPIN: the pages are not mapped in that process)",
        EOPNOTSUPP => "not an RC or UD QP",
        E2BIG => "state image too large",
        _ => "see softroce/README.md",
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CtlVersion {
    pub abi_version: u32,
    pub features: u32,
    pub page_shift: u32,
    pub dirty_log: bool,
}

/// Dirty pages of one MR, as page numbers within the MR.
#[derive(Debug, Clone, Serialize)]
pub struct DirtyPages {
    pub index: u32,
    pub lkey: u32,
    pub va: u64,
    pub mr_pages: u64,
    pub page_size: u64,
    pub pages: Vec<u64>,
}

/// An open control device. Reservations and requests made through it end with it, unless made
/// persistent.
pub struct Ctl {
    file: File,
}

impl Ctl {
    pub fn open() -> Result<Self, CtlError> {
        let file = OpenOptions::new().read(true).write(true).open(CTL_DEV).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CtlError::NotLoaded,
            _ => CtlError::Open(e),
        })?;
        let me = Self { file };
        let v = me.version()?;
        if v.abi_version != ABI_VERSION {
            return Err(CtlError::Abi(v.abi_version));
        }
        Ok(me)
    }

    fn err(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> CtlError {
        let what = what.into();
        move |errno| CtlError::Ioctl { what, errno, hint: hint(errno) }
    }

    pub fn version(&self) -> Result<CtlVersion, CtlError> {
        let mut v = Version::default();
        // SAFETY: v matches the kernel's struct (size asserted above).
        unsafe { ioc_version(self.file.as_raw_fd(), &mut v) }.map_err(Self::err("VERSION"))?;
        Ok(CtlVersion { abi_version: v.abi_version, features: v.features, page_shift: v.page_shift, dirty_log: v.dirty_log != 0 })
    }

    /// Reserves `[first, last]` of a type; returns (id, indices already in use).
    pub fn reserve(&self, obj: Obj, first: u32, last: u32, persist: bool) -> Result<(u32, u32), CtlError> {
        let mut r = Reserve { obj: obj as u32, flags: if persist { F_PERSIST } else { 0 }, first, last, ..Default::default() };
        // SAFETY: as above.
        unsafe { ioc_reserve(self.file.as_raw_fd(), &mut r) }.map_err(Self::err(format!("RESERVE {obj:?} {first}-{last}")))?;
        Ok((r.id, r.nbusy))
    }

    /// The next `obj` that process `pid` (0: the caller) creates gets `index` (and `key`).
    pub fn expect(&self, obj: Obj, pid: i32, index: u32, key: Option<u8>, dev: &str, persist: bool) -> Result<u32, CtlError> {
        let mut flags = if persist { F_PERSIST } else { 0 };
        if key.is_some() {
            flags |= F_KEY;
        }
        let mut e = Expect { obj: obj as u32, flags, pid, index, key: key.unwrap_or(0) as u32, id: 0, ibdev: devname(dev)? };
        // SAFETY: as above.
        unsafe { ioc_expect(self.file.as_raw_fd(), &mut e) }.map_err(Self::err(format!("EXPECT {obj:?} {index} for pid {pid}")))?;
        Ok(e.id)
    }

    /// Drops one reservation or request by id; returns how many were dropped.
    pub fn drop_id(&self, id: u32) -> Result<i32, CtlError> {
        let d = Drop_ { id, flags: 0 };
        // SAFETY: as above.
        unsafe { ioc_drop(self.file.as_raw_fd(), &d) }.map_err(Self::err(format!("DROP {id}")))
    }

    /// Drops every reservation and request of everybody, persistent ones included.
    pub fn drop_all(&self) -> Result<i32, CtlError> {
        let d = Drop_ { id: 0, flags: DROP_F_ALL };
        // SAFETY: as above.
        unsafe { ioc_drop(self.file.as_raw_fd(), &d) }.map_err(Self::err("DROP all"))
    }

    /// The pages of MR `index` that rxe wrote since the last clear; `clear` resets them.
    pub fn dirty(&self, dev: &str, index: u32, clear: bool) -> Result<DirtyPages, CtlError> {
        let mut out = DirtyPages { index, lkey: 0, va: 0, mr_pages: 0, page_size: 4096, pages: vec![] };
        let mut first = 0u64;
        loop {
            // One call covers up to 4 Mi pages; the MR's size is known after the first.
            let want: u64 = if out.mr_pages == 0 { 1 << 22 } else { (out.mr_pages - first).min(1 << 22) };
            let mut bitmap = vec![0u64; want.div_ceil(64) as usize];
            let mut d = Dirty {
                ibdev: devname(dev)?,
                index,
                flags: if clear { DIRTY_F_CLEAR } else { 0 },
                first_page: first,
                npages: want,
                bitmap: bitmap.as_mut_ptr() as u64,
                ndirty: 0,
                mr_pages: 0,
                va: 0,
                iova: 0,
                lkey: 0,
                page_shift: 0,
            };
            // SAFETY: the bitmap holds npages bits and outlives the call.
            unsafe { ioc_dirty(self.file.as_raw_fd(), &mut d) }.map_err(Self::err(format!("DIRTY of MR {index} on {dev}")))?;
            out.lkey = d.lkey;
            out.va = d.va;
            out.mr_pages = d.mr_pages;
            out.page_size = 1 << d.page_shift;
            for (w, word) in bitmap.iter().enumerate() {
                let mut x = *word;
                while x != 0 {
                    let b = x.trailing_zeros() as u64;
                    let page = first + w as u64 * 64 + b;
                    if page < first + d.npages {
                        out.pages.push(page);
                    }
                    x &= x - 1;
                }
            }
            first += d.npages;
            if d.npages == 0 || first >= d.mr_pages {
                return Ok(out);
            }
        }
    }
}

impl Ctl {
    fn qp_ioctl(
        &self,
        f: unsafe fn(i32, *mut QpCtl) -> nix::Result<i32>,
        dev: &str,
        qpn: u32,
        flags: u32,
        buf: u64,
        len: u64,
    ) -> Result<(QpCtl, Result<(), nix::errno::Errno>), CtlError> {
        let mut q = QpCtl {
            ibdev: devname(dev)?,
            qpn,
            flags,
            buf,
            len,
            state: 0,
            qp_state: 0,
            pauses_sent: 0,
            pauses_rcvd: 0,
            resumes_sent: 0,
            resumes_rcvd: 0,
            resume_acks: 0,
            pauses_stale: 0,
        };
        // SAFETY: q matches the kernel's struct (size asserted above); buf/len describe memory
        // the caller keeps alive for the call.
        let r = unsafe { f(self.file.as_raw_fd(), &mut q) }.map(|_| ());
        Ok((q, r))
    }

    fn qp_state(q: &QpCtl) -> QpMigState {
        QpMigState {
            state: q.state,
            qp_state: q.qp_state,
            pauses_sent: q.pauses_sent,
            pauses_rcvd: q.pauses_rcvd,
            resumes_sent: q.resumes_sent,
            resumes_rcvd: q.resumes_rcvd,
            resume_acks: q.resume_acks,
            pauses_stale: q.pauses_stale,
        }
    }

    fn qp_simple(
        &self,
        what: &str,
        f: unsafe fn(i32, *mut QpCtl) -> nix::Result<i32>,
        dev: &str,
        qpn: u32,
        flags: u32,
    ) -> Result<QpMigState, CtlError> {
        let (q, r) = self.qp_ioctl(f, dev, qpn, flags, 0, 0)?;
        r.map_err(Self::err(format!("{what} of QP {qpn} on {dev}")))?;
        Ok(Self::qp_state(&q))
    }

    /// Stops RC QP `qpn` for migration: it sends nothing more and answers its peer with PAUSE.
    pub fn qp_stop(&self, dev: &str, qpn: u32) -> Result<QpMigState, CtlError> {
        self.qp_simple("QP_STOP", ioc_qp_stop, dev, qpn, 0)
    }

    /// The state image of a stopped QP (opaque; for `qp_restore` with the same module build).
    pub fn qp_dump(&self, dev: &str, qpn: u32) -> Result<Vec<u8>, CtlError> {
        loop {
            let (q, r) = self.qp_ioctl(ioc_qp_dump, dev, qpn, 0, 0, 0)?;
            r.map_err(Self::err(format!("QP_DUMP (size) of QP {qpn} on {dev}")))?;
            let mut buf = vec![0u8; q.len as usize];
            let (q2, r) = self.qp_ioctl(ioc_qp_dump, dev, qpn, 0, buf.as_mut_ptr() as u64, buf.len() as u64)?;
            match r {
                Ok(()) => {
                    buf.truncate(q2.len as usize);
                    return Ok(buf);
                }
                Err(nix::errno::Errno::ENOSPC) => continue, // the queues were resized meanwhile
                Err(e) => return Err(Self::err(format!("QP_DUMP of QP {qpn} on {dev}"))(e)),
            }
        }
    }

    /// Writes a state image into QP `qpn` (same number, RTR or RTS, nothing posted yet). The QP
    /// stays stopped until `qp_resume`. `flags`: `QP_F_CQ`, `QP_F_SRQ`.
    pub fn qp_restore(&self, dev: &str, qpn: u32, image: &[u8], flags: u32) -> Result<QpMigState, CtlError> {
        let (q, r) = self.qp_ioctl(ioc_qp_restore, dev, qpn, flags, image.as_ptr() as u64, image.len() as u64)?;
        r.map_err(Self::err(format!("QP_RESTORE of QP {qpn} on {dev}")))?;
        Ok(Self::qp_state(&q))
    }

    /// Resumes a stopped or restored QP: it sends RESUME (carrying its address) until the peer
    /// acknowledges. `flags`: `QP_F_LOCAL`, `QP_F_DROP_FIRST`, `QP_F_LATE_PAUSE`.
    pub fn qp_resume(&self, dev: &str, qpn: u32, flags: u32) -> Result<QpMigState, CtlError> {
        self.qp_simple("QP_RESUME", ioc_qp_resume, dev, qpn, flags)
    }

    /// Migration state and counters of QP `qpn`.
    pub fn qp_query(&self, dev: &str, qpn: u32) -> Result<QpMigState, CtlError> {
        self.qp_simple("QP_QUERY", ioc_qp_query, dev, qpn, 0)
    }

    /// Moves user MR `index` to the pages that back `[va, va + length)` in process `pid` (0: the
    /// caller) now; returns the number of pages pinned. The MR keeps its keys, iova, length,
    /// access and dirty log. `pid` must be the process that registered the MR, `va` must have the
    /// MR start's offset within a page, and no QP may use the MR meanwhile (EBUSY).
    pub fn mr_repin(&self, dev: &str, index: u32, pid: i32, va: u64) -> Result<u64, CtlError> {
        let mut m = MrRepin { ibdev: devname(dev)?, index, pid, va, flags: 0, reserved: 0, npages: 0 };
        // SAFETY: m matches the kernel's struct (size asserted above).
        unsafe { ioc_mr_repin(self.file.as_raw_fd(), &mut m) }.map_err(Self::err(format!("MR_REPIN of MR {index} on {dev} to {va:#x} of pid {pid}")))?;
        Ok(m.npages)
    }
}

/// Reads a MigrOS-compatible sysctl (`last_qpn` or `last_mrn`).
pub fn sysctl_get(name: &str) -> Result<u32, CtlError> {
    let p = Path::new(SYSCTL_DIR).join(name);
    let s = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CtlError::NotLoaded,
        _ => CtlError::Io { path: p.display().to_string(), source: e },
    })?;
    s.trim().parse().map_err(|_| CtlError::Invalid(format!("{}: {s:?}", p.display())))
}

pub fn sysctl_set(name: &str, v: u32) -> Result<(), CtlError> {
    let p = Path::new(SYSCTL_DIR).join(name);
    std::fs::write(&p, v.to_string()).map_err(|e| CtlError::Io { path: p.display().to_string(), source: e })
}

/// One line of the text status: a record type and its key=value fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub kind: String,
    pub fields: BTreeMap<String, String>,
}

/// Parses the status text; unknown record types and keys are kept, as the ABI asks.
pub fn parse_status(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let kind = w.next()?.to_string();
            let fields = w.filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Some(Record { kind, fields })
        })
        .collect()
}

pub fn status() -> Result<Vec<Record>, CtlError> {
    let text = std::fs::read_to_string(CTL_DEV).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CtlError::NotLoaded,
        _ => CtlError::Open(e),
    })?;
    Ok(parse_status(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_documented_ones() {
        assert_eq!(nix::request_code_read!(MAGIC, 0x00, std::mem::size_of::<Version>()) as u32, 0x8010b800);
        assert_eq!(nix::request_code_readwrite!(MAGIC, 0x01, std::mem::size_of::<Reserve>()) as u32, 0xc018b801);
        assert_eq!(nix::request_code_readwrite!(MAGIC, 0x02, std::mem::size_of::<Expect>()) as u32, 0xc058b802);
        assert_eq!(nix::request_code_write!(MAGIC, 0x03, std::mem::size_of::<Drop_>()) as u32, 0x4008b803);
        assert_eq!(nix::request_code_readwrite!(MAGIC, 0x04, std::mem::size_of::<Dirty>()) as u32, 0xc088b804);
        assert_eq!(nix::request_code_readwrite!(MAGIC, 0x05, std::mem::size_of::<QpCtl>()) as u32, 0xc078b805);
        assert_eq!(nix::request_code_readwrite!(MAGIC, 0x09, std::mem::size_of::<QpCtl>()) as u32, 0xc078b809);
        assert_eq!(nix::request_code_readwrite!(MAGIC, 0x0a, std::mem::size_of::<MrRepin>()) as u32, 0xc060b80a);
    }

    #[test]
    fn qp_struct_offsets() {
        let q = std::mem::MaybeUninit::<QpCtl>::uninit();
        let base = q.as_ptr() as usize;
        // SAFETY: only field addresses are taken.
        unsafe {
            assert_eq!(std::ptr::addr_of!((*q.as_ptr()).qpn) as usize - base, 64);
            assert_eq!(std::ptr::addr_of!((*q.as_ptr()).buf) as usize - base, 72);
            assert_eq!(std::ptr::addr_of!((*q.as_ptr()).state) as usize - base, 88);
            assert_eq!(std::ptr::addr_of!((*q.as_ptr()).resume_acks) as usize - base, 112);
            assert_eq!(std::ptr::addr_of!((*q.as_ptr()).pauses_stale) as usize - base, 116);
        }
    }

    #[test]
    fn mr_repin_struct_offsets() {
        let m = std::mem::MaybeUninit::<MrRepin>::uninit();
        let base = m.as_ptr() as usize;
        // SAFETY: only field addresses are taken.
        unsafe {
            assert_eq!(std::ptr::addr_of!((*m.as_ptr()).index) as usize - base, 64);
            assert_eq!(std::ptr::addr_of!((*m.as_ptr()).pid) as usize - base, 68);
            assert_eq!(std::ptr::addr_of!((*m.as_ptr()).va) as usize - base, 72);
            assert_eq!(std::ptr::addr_of!((*m.as_ptr()).flags) as usize - base, 80);
            assert_eq!(std::ptr::addr_of!((*m.as_ptr()).reserved) as usize - base, 84);
            assert_eq!(std::ptr::addr_of!((*m.as_ptr()).npages) as usize - base, 88);
        }
        assert_eq!(std::mem::size_of::<MrRepin>(), 96);
    }

    #[test]
    fn repin_errors_keep_their_errno_as_io_errors() {
        let e = CtlError::Ioctl { what: "MR_REPIN".into(), errno: nix::errno::Errno::EBUSY, hint: "" };
        assert_eq!(std::io::Error::from(e).raw_os_error(), Some(nix::errno::Errno::EBUSY as i32));
    }

    #[test]
    fn dirty_struct_offsets() {
        let d = std::mem::MaybeUninit::<Dirty>::uninit();
        let base = d.as_ptr() as usize;
        // SAFETY: only field addresses are taken.
        unsafe {
            assert_eq!(std::ptr::addr_of!((*d.as_ptr()).index) as usize - base, 64);
            assert_eq!(std::ptr::addr_of!((*d.as_ptr()).first_page) as usize - base, 72);
            assert_eq!(std::ptr::addr_of!((*d.as_ptr()).lkey) as usize - base, 128);
        }
    }

    #[test]
    fn status_parses_and_keeps_unknowns() {
        let t = "rxe_ctl abi=1 dirty_log=1 page_shift=12\nqp dev=rxe0 index=1000 qpn=1000 type=rc state=rts pid=4242 sq_off=0x3000 rq_off=- scq_off=0x1000 rcq_off=0x2000 srq_off=0x5000 sig_all=1\nfuture x=1\n\n";
        let r = parse_status(t);
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].kind, "qp");
        assert_eq!(r[1].fields["pid"], "4242");
        assert_eq!(r[1].fields["rq_off"], "-");
        assert_eq!(r[1].fields["srq_off"], "0x5000");
        assert_eq!(r[2].kind, "future");
    }

    #[test]
    fn device_names_are_checked() {
        assert!(devname("rxe0").is_ok());
        assert!(devname(&"x".repeat(64)).is_err());
        assert!(devname("a\0b").is_err());
    }
}
