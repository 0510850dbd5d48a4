//! [`Ctl`]: an open `/dev/rxe_ctl`, and the typed results of its commands.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use serde::Serialize;

use crate::abi::{self, DIRTY_F_CLEAR, DROP_F_ALL, F_KEY, F_PERSIST};

pub const CTL_DEV: &str = "/dev/rxe_ctl";
pub use crate::abi::ABI_VERSION;

nix::ioctl_read_bad!(ioc_version, abi::IOC_VERSION, abi::Version);
nix::ioctl_readwrite_bad!(ioc_reserve, abi::IOC_RESERVE, abi::Reserve);
nix::ioctl_readwrite_bad!(ioc_adopt, abi::IOC_ADOPT, abi::Adopt);
nix::ioctl_readwrite_bad!(ioc_expect, abi::IOC_EXPECT, abi::Expect);
nix::ioctl_write_ptr_bad!(ioc_drop, abi::IOC_DROP, abi::DropEntry);
nix::ioctl_readwrite_bad!(ioc_dirty, abi::IOC_DIRTY, abi::Dirty);
nix::ioctl_readwrite_bad!(ioc_qp_stop, abi::IOC_QP_STOP, abi::Qp);
nix::ioctl_readwrite_bad!(ioc_qp_dump, abi::IOC_QP_DUMP, abi::Qp);
nix::ioctl_readwrite_bad!(ioc_qp_restore, abi::IOC_QP_RESTORE, abi::Qp);
nix::ioctl_readwrite_bad!(ioc_qp_resume, abi::IOC_QP_RESUME, abi::Qp);
nix::ioctl_readwrite_bad!(ioc_qp_query, abi::IOC_QP_QUERY, abi::Qp);
nix::ioctl_readwrite_bad!(ioc_mr_repin, abi::IOC_MR_REPIN, abi::MrRepin);
nix::ioctl_readwrite_bad!(ioc_mr_wrprotect, abi::IOC_MR_WRPROTECT, abi::MrWrprotect);
nix::ioctl_write_ptr_bad!(ioc_mw_bind, abi::IOC_MW_BIND, abi::MwBind);

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{CTL_DEV} is missing: {}", crate::module::missing_ctl_reason())]
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

impl CtlError {
    /// The errno of a failed ioctl or file access, as `std::io::Error::raw_os_error` gives it.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CtlError::Ioctl { errno, .. } => Some(*errno as i32),
            CtlError::Open(e) | CtlError::Io { source: e, .. } => e.raw_os_error(),
            _ => None,
        }
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Obj {
    Qp = abi::OBJ_QP as isize,
    Mr = abi::OBJ_MR as isize,
    Mw = abi::OBJ_MW as isize,
    Ah = abi::OBJ_AH as isize,
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
    /// Pauses that ended because no RESUME came within the module's bound (patch 0017).
    #[serde(default)]
    pub pauses_expired: u32,
}

fn devname(dev: &str) -> Result<[u8; abi::IBDEV_NAME_MAX], CtlError> {
    let mut b = [0u8; abi::IBDEV_NAME_MAX];
    if dev.len() >= abi::IBDEV_NAME_MAX || dev.contains('\0') {
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
        EADDRNOTAVAIL => "QP_RESUME: the QP's source address is not (yet) in the device's GID table",
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

/// What `mr_wrprotect` did to an MR's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MrWrprotected {
    /// Pages of the MR.
    pub npages: u64,
    /// Page table entries write-protected now (the others were read-only already or skipped).
    pub protected: u64,
    /// Pages left as they were (huge mappings, not present, not exclusive anonymous): they stay
    /// soft-dirty, so every round carries them.
    pub skipped: u64,
    /// With the dirty log moved (`log`): pages rxe had written, now soft-dirty and off the log.
    pub logged: u64,
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
        Self::from_file(file)
    }

    /// The control device opened by the caller (by another path to it than [`CTL_DEV`]): used
    /// only once it answers VERSION with this rdmig's ABI, which also proves it is rxe_ctl.
    pub fn from_file(file: File) -> Result<Self, CtlError> {
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
        let mut v = abi::Version::default();
        // SAFETY: `v` is the #[repr(C)] struct whose size the request encodes (abi.rs asserts the
        // layout); the kernel writes only within it.
        unsafe { ioc_version(self.file.as_raw_fd(), &mut v) }.map_err(Self::err("VERSION"))?;
        Ok(CtlVersion { abi_version: v.abi_version, features: v.features, page_shift: v.page_shift, dirty_log: v.dirty_log != 0 })
    }

    /// Reserves `[first, last]` of a type; returns (id, indices already in use).
    pub fn reserve(&self, obj: Obj, first: u32, last: u32, persist: bool) -> Result<(u32, u32), CtlError> {
        let mut r = abi::Reserve { obj: obj as u32, flags: if persist { F_PERSIST } else { 0 }, first, last, ..Default::default() };
        // SAFETY: as above.
        unsafe { ioc_reserve(self.file.as_raw_fd(), &mut r) }.map_err(Self::err(format!("RESERVE {obj:?} {first}-{last}")))?;
        Ok((r.id, r.nbusy))
    }

    /// Whether the driver has every feature bit of `features` (`FEAT_*`); false if it cannot
    /// be asked.
    pub fn has_features(&self, features: u32) -> bool {
        self.version().is_ok_and(|v| v.features & features == features)
    }

    /// The next `obj` that process `pid` (0: the caller) creates gets `index` (and `key`).
    pub fn expect(&self, obj: Obj, pid: i32, index: u32, key: Option<u8>, dev: &str, persist: bool) -> Result<u32, CtlError> {
        let mut flags = if persist { F_PERSIST } else { 0 };
        if key.is_some() {
            flags |= F_KEY;
        }
        self.expect_with(obj, flags, pid, index, key.unwrap_or(0), dev, &format!("EXPECT {obj:?} {index} for pid {pid}"))
    }

    /// EXPECT with `flags` (`F_*`); `what` names the request in an error.
    #[allow(clippy::too_many_arguments)]
    fn expect_with(&self, obj: Obj, flags: u32, pid: i32, index: u32, key: u8, dev: &str, what: &str) -> Result<u32, CtlError> {
        let mut e = abi::Expect { obj: obj as u32, flags, pid, index, key: key.into(), id: 0, ibdev: devname(dev)? };
        // SAFETY: as above.
        unsafe { ioc_expect(self.file.as_raw_fd(), &mut e) }.map_err(Self::err(what.to_string()))?;
        Ok(e.id)
    }

    /// The next MR that process `pid` (0: the caller) registers gets `index` and `key`, and pins
    /// no pages: it refuses every access until `mr_repin` gives it the pages of its process
    /// (`RXE_CTL_F_HOLLOW`, patch 0034). For a restore, where the memory is not in place yet.
    pub fn expect_hollow_mr(&self, pid: i32, index: u32, key: u8, dev: &str) -> Result<u32, CtlError> {
        self.expect_with(Obj::Mr, F_KEY | abi::F_HOLLOW, pid, index, key, dev, &format!("EXPECT hollow MR {index} for pid {pid}"))
    }

    /// The next RC QP that process `pid` (0: the caller) creates gets number `index` and starts
    /// stopped (`RXE_CTL_F_STOPPED`, patch 0037): it acts on none of its peer's requests until
    /// `qp_resume`. For a restore, where the QP's state is loaded after it is connected.
    pub fn expect_stopped_qp(&self, pid: i32, index: u32, dev: &str) -> Result<u32, CtlError> {
        self.expect_with(Obj::Qp, abi::F_STOPPED, pid, index, 0, dev, &format!("EXPECT stopped QP {index} for pid {pid}"))
    }

    /// Drops one reservation or request by id; returns how many were dropped.
    pub fn drop_id(&self, id: u32) -> Result<i32, CtlError> {
        let d = abi::DropEntry { id, flags: 0 };
        // SAFETY: as above.
        unsafe { ioc_drop(self.file.as_raw_fd(), &d) }.map_err(Self::err(format!("DROP {id}")))
    }

    /// Drops every reservation and request of everybody, persistent ones included.
    pub fn drop_all(&self) -> Result<i32, CtlError> {
        let d = abi::DropEntry { id: 0, flags: DROP_F_ALL };
        // SAFETY: as above.
        unsafe { ioc_drop(self.file.as_raw_fd(), &d) }.map_err(Self::err("DROP all"))
    }

    /// The pages of MR `index` that rxe wrote since the last clear; `clear` resets them.
    pub fn dirty(&self, dev: &str, index: u32, clear: bool) -> Result<DirtyPages, CtlError> {
        let mut out = DirtyPages { index, lkey: 0, va: 0, mr_pages: 0, page_size: 4096, pages: vec![] };
        let mut first = 0u64;
        loop {
            // One call covers up to 4 Mi pages; the MR's size is known after the first.
            let want: u64 = if out.mr_pages == 0 { abi::DIRTY_MAX_PAGES } else { (out.mr_pages - first).min(abi::DIRTY_MAX_PAGES) };
            let mut bitmap = vec![0u64; want.div_ceil(64) as usize];
            let mut d = abi::Dirty {
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
        f: unsafe fn(i32, *mut abi::Qp) -> nix::Result<i32>,
        dev: &str,
        qpn: u32,
        flags: u32,
        buf: u64,
        len: u64,
    ) -> Result<(abi::Qp, Result<(), nix::errno::Errno>), CtlError> {
        let mut q = abi::Qp {
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
            pauses_expired: 0,
            reserved: 0,
        };
        // SAFETY: q matches the kernel's struct (abi.rs asserts its layout); buf/len describe memory
        // the caller keeps alive for the call.
        let r = unsafe { f(self.file.as_raw_fd(), &mut q) }.map(|_| ());
        Ok((q, r))
    }

    fn qp_state(q: &abi::Qp) -> QpMigState {
        QpMigState {
            state: q.state,
            qp_state: q.qp_state,
            pauses_sent: q.pauses_sent,
            pauses_rcvd: q.pauses_rcvd,
            resumes_sent: q.resumes_sent,
            resumes_rcvd: q.resumes_rcvd,
            resume_acks: q.resume_acks,
            pauses_stale: q.pauses_stale,
            pauses_expired: q.pauses_expired,
        }
    }

    fn qp_simple(&self, what: &str, f: unsafe fn(i32, *mut abi::Qp) -> nix::Result<i32>, dev: &str, qpn: u32, flags: u32) -> Result<QpMigState, CtlError> {
        let (q, r) = self.qp_ioctl(f, dev, qpn, flags, 0, 0)?;
        r.map_err(Self::err(format!("{what} of QP {qpn} on {dev}")))?;
        Ok(Self::qp_state(&q))
    }

    /// Stops RC QP `qpn` for migration: it sends nothing more and answers its peer with PAUSE.
    pub fn qp_stop(&self, dev: &str, qpn: u32) -> Result<QpMigState, CtlError> {
        self.qp_simple("QP_STOP", ioc_qp_stop, dev, qpn, 0)
    }

    /// The state image of a stopped QP (opaque; for `qp_restore` with the same module build).
    /// `flags`: `QP_F_NO_CQ`, `QP_F_NO_SRQ` (feature `FEAT_QP_DUMP_SHARED`) leave out rings that
    /// another QP's image carries.
    pub fn qp_dump(&self, dev: &str, qpn: u32, flags: u32) -> Result<Vec<u8>, CtlError> {
        loop {
            let (q, r) = self.qp_ioctl(ioc_qp_dump, dev, qpn, flags, 0, 0)?;
            r.map_err(Self::err(format!("QP_DUMP (size) of QP {qpn} on {dev}")))?;
            let mut buf = vec![0u8; q.len as usize];
            let (q2, r) = self.qp_ioctl(ioc_qp_dump, dev, qpn, flags, buf.as_mut_ptr() as u64, buf.len() as u64)?;
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
        let mut m = abi::MrRepin { ibdev: devname(dev)?, index, pid, va, flags: 0, reserved: 0, npages: 0 };
        // SAFETY: m matches the kernel's struct (abi.rs asserts its layout).
        unsafe { ioc_mr_repin(self.file.as_raw_fd(), &mut m) }.map_err(Self::err(format!("MR_REPIN of MR {index} on {dev} to {va:#x} of pid {pid}")))?;
        Ok(m.npages)
    }

    /// Takes the write permission away from the page table entries of MR `index` (of process
    /// `pid`), so that the next `clear_refs` clears their soft-dirty bits, which Linux 6.1
    /// never does for pinned pages otherwise (`RXE_CTL_IOC_MR_WRPROTECT`, patch 0032). With
    /// `log` (`FEAT_MR_WRPROTECT_LOG`, patch 0033) it first moves the MR's dirty log into the
    /// soft-dirty bits of those pages, so that the next incremental dump carries what rxe wrote
    /// while the process ran; a page it cannot mark stays on the log.
    pub fn mr_wrprotect(&self, dev: &str, index: u32, pid: i32, log: bool) -> Result<MrWrprotected, CtlError> {
        let flags = if log { abi::MR_WRPROTECT_F_LOG } else { 0 };
        let mut m = abi::MrWrprotect { ibdev: devname(dev)?, index, pid, flags, logged: 0, npages: 0, protected: 0, skipped: 0 };
        // SAFETY: m matches the kernel's struct (abi.rs asserts its layout).
        unsafe { ioc_mr_wrprotect(self.file.as_raw_fd(), &mut m) }.map_err(Self::err(format!("MR_WRPROTECT of MR {index} on {dev} of pid {pid}")))?;
        Ok(MrWrprotected { npages: m.npages, protected: m.protected, skipped: m.skipped, logged: u64::from(m.logged) })
    }

    /// Makes the caller the creator of every user QP, MR, MW and AH that process `pid` created
    /// (`RXE_CTL_IOC_ADOPT`, patch 0035): a restore that took over objects made ahead for it.
    /// Returns how many objects it adopted.
    pub fn adopt(&self, pid: i32) -> Result<u32, CtlError> {
        let mut a = abi::Adopt { pid, ..Default::default() };
        // SAFETY: a matches the kernel's struct (abi.rs asserts its layout).
        unsafe { ioc_adopt(self.file.as_raw_fd(), &mut a) }.map_err(Self::err(format!("ADOPT of the objects of pid {pid}")))?;
        Ok(a.count)
    }

    /// Binds the unbound MW `rkey` to MR `mr_index` (and a type 2 MW to QP `qpn`) without a
    /// work request, as a bind work request would (`RXE_CTL_IOC_MW_BIND`, patch 0013).
    #[allow(clippy::too_many_arguments)]
    pub fn mw_bind(&self, dev: &str, rkey: u32, mr_index: u32, qpn: u32, addr: u64, length: u64, access: u32) -> Result<(), CtlError> {
        let m = abi::MwBind { ibdev: devname(dev)?, index: rkey >> 8, rkey, mr_index, qpn, addr, length, access, flags: 0 };
        // SAFETY: `m` matches the kernel's struct (abi.rs asserts its layout); the kernel only reads it.
        unsafe { ioc_mw_bind(self.file.as_raw_fd(), &m) }.map_err(Self::err(format!("MW_BIND of MW {rkey:#x} to MR {mr_index} on {dev}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_errno_as_io_errors() {
        let e = CtlError::Ioctl { what: "MR_REPIN".into(), errno: nix::errno::Errno::EBUSY, hint: "" };
        assert_eq!(std::io::Error::from(e).raw_os_error(), Some(nix::errno::Errno::EBUSY as i32));
        assert_eq!(std::io::Error::from(CtlError::NotLoaded).kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn device_names_are_checked() {
        assert!(devname("rxe0").is_ok());
        assert!(devname(&"x".repeat(64)).is_err());
        assert!(devname("a\0b").is_err());
    }

    #[test]
    fn object_types_are_the_abis() {
        assert_eq!([Obj::Qp as u32, Obj::Mr as u32, Obj::Mw as u32, Obj::Ah as u32], [abi::OBJ_QP, abi::OBJ_MR, abi::OBJ_MW, abi::OBJ_AH]);
    }
}
