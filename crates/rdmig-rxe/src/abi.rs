//! The ABI of `/dev/rxe_ctl`, field for field as `softroce/include/uapi/rdma/rxe_ctl_abi.h` has
//! it. That header is the definition: the kernel patches include it, and this file is checked
//! against it twice, by the `const` assertions below (size and offset of every field, as the
//! header's comments give them) and by `tests/abi_layout.rs`, which compiles the header with the
//! C compiler and compares every size, offset and ioctl number with these.

use std::mem::{offset_of, size_of};

pub const ABI_VERSION: u32 = 2;
pub const IOC_MAGIC: u8 = 0xB8;
pub const IBDEV_NAME_MAX: usize = 64;

/// Object types (`RXE_CTL_OBJ_*`).
pub const OBJ_QP: u32 = 1;
pub const OBJ_MR: u32 = 2;
pub const OBJ_MW: u32 = 3;
pub const OBJ_AH: u32 = 4;

/// `rxe_ctl_version.features` bits.
pub const FEAT_RESERVE: u32 = 1 << 0;
pub const FEAT_EXPECT: u32 = 1 << 1;
pub const FEAT_DIRTY: u32 = 1 << 2;
/// The QP migration commands (patch 0006).
pub const FEAT_QPMIG: u32 = 1 << 3;
/// MR_REPIN and the ring offsets in the status (patch 0007).
pub const FEAT_MR_REPIN: u32 = 1 << 4;
/// Epochs in PAUSE, RESUME and RESUME_ACK: a PAUSE sent before a RESUME never pauses the peer
/// after it (patch 0009).
pub const FEAT_QP_EPOCH: u32 = 1 << 5;
/// MW_BIND and the MW and AH fields of the status (patches 0012, 0013).
pub const FEAT_MW_BIND: u32 = 1 << 6;
/// The module ends a pause that no RESUME ends (`pause_max_sec`, patch 0017).
pub const FEAT_PAUSE_MAX: u32 = 1 << 7;
/// `RXE_CTL_IOC_MR_WRPROTECT` (patch 0032): soft-dirty tracking of MR pages.
pub const FEAT_MR_WRPROTECT: u32 = 1 << 8;
/// `RXE_CTL_MR_WRPROTECT_F_LOG` (patch 0033): MR_WRPROTECT moves the dirty log into the page
/// tables' soft-dirty bits.
pub const FEAT_MR_WRPROTECT_LOG: u32 = 1 << 9;
/// EXPECT with `F_HOLLOW` (patch 0034): an MR registered without pages until MR_REPIN.
pub const FEAT_MR_HOLLOW: u32 = 1 << 10;
/// ADOPT, and MR_REPIN of a hollow MR into another process (patch 0035): a restore takes over
/// objects made ahead for it.
pub const FEAT_ADOPT: u32 = 1 << 11;
/// QP_DUMP takes `QP_F_NO_CQ` and `QP_F_NO_SRQ` (patch 0036).
pub const FEAT_QP_DUMP_SHARED: u32 = 1 << 12;
/// EXPECT takes `F_STOPPED` (patch 0037).
pub const FEAT_QP_STOPPED: u32 = 1 << 13;

/// MR_WRPROTECT: first move the MR's dirty log into the soft-dirty bits of its pages.
pub const MR_WRPROTECT_F_LOG: u32 = 1 << 0;

/// RESERVE and EXPECT: keep after close().
pub const F_PERSIST: u32 = 1 << 0;
/// EXPECT: `key` is valid.
pub const F_KEY: u32 = 1 << 1;
/// EXPECT of an MR: its REG_MR pins no pages (patch 0034).
pub const F_HOLLOW: u32 = 1 << 2;
/// EXPECT of an RC QP: it starts stopped (answers requests with PAUSE and drops them) until QP_RESUME.
pub const F_STOPPED: u32 = 1 << 3;
/// DROP with id 0: of all owners.
pub const DROP_F_ALL: u32 = 1 << 0;
/// DIRTY: clear the bits read.
pub const DIRTY_F_CLEAR: u32 = 1 << 0;
/// Pages per DIRTY call with a bitmap, at most.
pub const DIRTY_MAX_PAGES: u64 = 1 << 22;

/// QP_RESTORE: also restore the CQ rings of the QP.
pub const QP_F_CQ: u32 = 1 << 0;
/// QP_RESTORE: also restore the SRQ ring of the QP.
pub const QP_F_SRQ: u32 = 1 << 1;
/// QP_RESUME: resume without sending RESUME (rollback of a QP that did not move, loopback).
pub const QP_F_LOCAL: u32 = 1 << 2;
/// QP_RESUME: the first RESUME packet is counted but not sent (fault injection for tests).
pub const QP_F_DROP_FIRST: u32 = 1 << 3;
/// QP_RESUME: after the RESUME_ACK, send one PAUSE of the stop that the resume ends, which the
/// peer must ignore (fault injection for tests, patch 0009).
pub const QP_F_LATE_PAUSE: u32 = 1 << 4;
/// QP_DUMP: leave the CQ rings out of the image (a QP whose CQs an earlier QP's image carries).
pub const QP_F_NO_CQ: u32 = 1 << 5;
/// QP_DUMP: leave the SRQ ring out of the image (a QP whose SRQ an earlier QP's image carries).
pub const QP_F_NO_SRQ: u32 = 1 << 6;

/// `rxe_ctl_qp.state` bits.
pub const QP_S_STOPPED: u32 = 1 << 0;
pub const QP_S_RESUMING: u32 = 1 << 1;
pub const QP_S_PAUSED: u32 = 1 << 2;
pub const QP_S_REQ_HELD: u32 = 1 << 3;

/// `struct rxe_ctl_version`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Version {
    pub abi_version: u32,
    pub features: u32,
    pub page_shift: u32,
    pub dirty_log: u32,
}

/// `struct rxe_ctl_reserve`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Reserve {
    pub obj: u32,
    pub flags: u32,
    pub first: u32,
    pub last: u32,
    pub id: u32,
    pub nbusy: u32,
}

/// `struct rxe_ctl_expect`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    pub obj: u32,
    pub flags: u32,
    pub pid: i32,
    pub index: u32,
    pub key: u32,
    pub id: u32,
    pub ibdev: [u8; IBDEV_NAME_MAX],
}

/// `struct rxe_ctl_drop`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct DropEntry {
    pub id: u32,
    pub flags: u32,
}

/// `struct rxe_ctl_dirty`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Dirty {
    pub ibdev: [u8; IBDEV_NAME_MAX],
    pub index: u32,
    pub flags: u32,
    pub first_page: u64,
    pub npages: u64,
    pub bitmap: u64,
    pub ndirty: u64,
    pub mr_pages: u64,
    pub va: u64,
    pub iova: u64,
    pub lkey: u32,
    pub page_shift: u32,
}

/// `struct rxe_ctl_qp`, shared by the QP_* commands.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Qp {
    pub ibdev: [u8; IBDEV_NAME_MAX],
    pub qpn: u32,
    pub flags: u32,
    pub buf: u64,
    pub len: u64,
    pub state: u32,
    pub qp_state: u32,
    pub pauses_sent: u32,
    pub pauses_rcvd: u32,
    pub resumes_sent: u32,
    pub resumes_rcvd: u32,
    pub resume_acks: u32,
    /// Out: stale PAUSE NAKs ignored; in: 0.
    pub pauses_stale: u32,
    /// Out: pauses ended by the module's bound (`pause_max_sec`) with no RESUME; in: 0.
    pub pauses_expired: u32,
    /// In: 0.
    pub reserved: u32,
}

/// `struct rxe_ctl_mr_repin`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MrRepin {
    pub ibdev: [u8; IBDEV_NAME_MAX],
    pub index: u32,
    pub pid: i32,
    pub va: u64,
    pub flags: u32,
    pub reserved: u32,
    pub npages: u64,
}

/// `struct rxe_ctl_mr_wrprotect`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MrWrprotect {
    pub ibdev: [u8; IBDEV_NAME_MAX],
    pub index: u32,
    pub pid: i32,
    pub flags: u32,
    pub logged: u32,
    pub npages: u64,
    pub protected: u64,
    pub skipped: u64,
}

/// `struct rxe_ctl_adopt`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Adopt {
    pub pid: i32,
    pub flags: u32,
    pub count: u32,
    pub reserved: u32,
}

/// `struct rxe_ctl_mw_bind`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MwBind {
    pub ibdev: [u8; IBDEV_NAME_MAX],
    pub index: u32,
    pub rkey: u32,
    pub mr_index: u32,
    pub qpn: u32,
    pub addr: u64,
    pub length: u64,
    pub access: u32,
    pub flags: u32,
}

/// The ioctl numbers (`RXE_CTL_IOC_*`); each encodes its struct's size.
pub type IoctlNr = nix::sys::ioctl::ioctl_num_type;
pub const IOC_VERSION: IoctlNr = nix::request_code_read!(IOC_MAGIC, 0x00, size_of::<Version>());
pub const IOC_RESERVE: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x01, size_of::<Reserve>());
pub const IOC_EXPECT: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x02, size_of::<Expect>());
pub const IOC_DROP: IoctlNr = nix::request_code_write!(IOC_MAGIC, 0x03, size_of::<DropEntry>());
pub const IOC_DIRTY: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x04, size_of::<Dirty>());
pub const IOC_QP_STOP: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x05, size_of::<Qp>());
pub const IOC_QP_DUMP: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x06, size_of::<Qp>());
pub const IOC_QP_RESTORE: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x07, size_of::<Qp>());
pub const IOC_QP_RESUME: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x08, size_of::<Qp>());
pub const IOC_QP_QUERY: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x09, size_of::<Qp>());
pub const IOC_MR_REPIN: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x0a, size_of::<MrRepin>());
pub const IOC_MW_BIND: IoctlNr = nix::request_code_write!(IOC_MAGIC, 0x0b, size_of::<MwBind>());
pub const IOC_MR_WRPROTECT: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x0c, size_of::<MrWrprotect>());
pub const IOC_ADOPT: IoctlNr = nix::request_code_readwrite!(IOC_MAGIC, 0x0d, size_of::<Adopt>());

/// Every struct with its size and the offset of every field, as the header's comments state
/// them; `tests/abi_layout.rs` checks the same table against the compiled header.
#[allow(clippy::type_complexity)]
pub const LAYOUT: &[(&str, usize, &[(&str, usize)])] = &[
    (
        "rxe_ctl_version",
        size_of::<Version>(),
        &[
            ("abi_version", offset_of!(Version, abi_version)),
            ("features", offset_of!(Version, features)),
            ("page_shift", offset_of!(Version, page_shift)),
            ("dirty_log", offset_of!(Version, dirty_log)),
        ],
    ),
    (
        "rxe_ctl_reserve",
        size_of::<Reserve>(),
        &[
            ("obj", offset_of!(Reserve, obj)),
            ("flags", offset_of!(Reserve, flags)),
            ("first", offset_of!(Reserve, first)),
            ("last", offset_of!(Reserve, last)),
            ("id", offset_of!(Reserve, id)),
            ("nbusy", offset_of!(Reserve, nbusy)),
        ],
    ),
    (
        "rxe_ctl_expect",
        size_of::<Expect>(),
        &[
            ("obj", offset_of!(Expect, obj)),
            ("flags", offset_of!(Expect, flags)),
            ("pid", offset_of!(Expect, pid)),
            ("index", offset_of!(Expect, index)),
            ("key", offset_of!(Expect, key)),
            ("id", offset_of!(Expect, id)),
            ("ibdev", offset_of!(Expect, ibdev)),
        ],
    ),
    ("rxe_ctl_drop", size_of::<DropEntry>(), &[("id", offset_of!(DropEntry, id)), ("flags", offset_of!(DropEntry, flags))]),
    (
        "rxe_ctl_dirty",
        size_of::<Dirty>(),
        &[
            ("ibdev", offset_of!(Dirty, ibdev)),
            ("index", offset_of!(Dirty, index)),
            ("flags", offset_of!(Dirty, flags)),
            ("first_page", offset_of!(Dirty, first_page)),
            ("npages", offset_of!(Dirty, npages)),
            ("bitmap", offset_of!(Dirty, bitmap)),
            ("ndirty", offset_of!(Dirty, ndirty)),
            ("mr_pages", offset_of!(Dirty, mr_pages)),
            ("va", offset_of!(Dirty, va)),
            ("iova", offset_of!(Dirty, iova)),
            ("lkey", offset_of!(Dirty, lkey)),
            ("page_shift", offset_of!(Dirty, page_shift)),
        ],
    ),
    (
        "rxe_ctl_qp",
        size_of::<Qp>(),
        &[
            ("ibdev", offset_of!(Qp, ibdev)),
            ("qpn", offset_of!(Qp, qpn)),
            ("flags", offset_of!(Qp, flags)),
            ("buf", offset_of!(Qp, buf)),
            ("len", offset_of!(Qp, len)),
            ("state", offset_of!(Qp, state)),
            ("qp_state", offset_of!(Qp, qp_state)),
            ("pauses_sent", offset_of!(Qp, pauses_sent)),
            ("pauses_rcvd", offset_of!(Qp, pauses_rcvd)),
            ("resumes_sent", offset_of!(Qp, resumes_sent)),
            ("resumes_rcvd", offset_of!(Qp, resumes_rcvd)),
            ("resume_acks", offset_of!(Qp, resume_acks)),
            ("pauses_stale", offset_of!(Qp, pauses_stale)),
            ("pauses_expired", offset_of!(Qp, pauses_expired)),
            ("reserved", offset_of!(Qp, reserved)),
        ],
    ),
    (
        "rxe_ctl_adopt",
        size_of::<Adopt>(),
        &[("pid", offset_of!(Adopt, pid)), ("flags", offset_of!(Adopt, flags)), ("count", offset_of!(Adopt, count)), ("reserved", offset_of!(Adopt, reserved))],
    ),
    (
        "rxe_ctl_mr_repin",
        size_of::<MrRepin>(),
        &[
            ("ibdev", offset_of!(MrRepin, ibdev)),
            ("index", offset_of!(MrRepin, index)),
            ("pid", offset_of!(MrRepin, pid)),
            ("va", offset_of!(MrRepin, va)),
            ("flags", offset_of!(MrRepin, flags)),
            ("reserved", offset_of!(MrRepin, reserved)),
            ("npages", offset_of!(MrRepin, npages)),
        ],
    ),
    (
        "rxe_ctl_mr_wrprotect",
        size_of::<MrWrprotect>(),
        &[
            ("ibdev", offset_of!(MrWrprotect, ibdev)),
            ("index", offset_of!(MrWrprotect, index)),
            ("pid", offset_of!(MrWrprotect, pid)),
            ("flags", offset_of!(MrWrprotect, flags)),
            ("logged", offset_of!(MrWrprotect, logged)),
            ("npages", offset_of!(MrWrprotect, npages)),
            ("protected", offset_of!(MrWrprotect, protected)),
            ("skipped", offset_of!(MrWrprotect, skipped)),
        ],
    ),
    (
        "rxe_ctl_mw_bind",
        size_of::<MwBind>(),
        &[
            ("ibdev", offset_of!(MwBind, ibdev)),
            ("index", offset_of!(MwBind, index)),
            ("rkey", offset_of!(MwBind, rkey)),
            ("mr_index", offset_of!(MwBind, mr_index)),
            ("qpn", offset_of!(MwBind, qpn)),
            ("addr", offset_of!(MwBind, addr)),
            ("length", offset_of!(MwBind, length)),
            ("access", offset_of!(MwBind, access)),
            ("flags", offset_of!(MwBind, flags)),
        ],
    ),
];

/// The ioctl numbers by their header names, for `tests/abi_layout.rs`.
pub const IOCTLS: &[(&str, IoctlNr)] = &[
    ("RXE_CTL_IOC_VERSION", IOC_VERSION),
    ("RXE_CTL_IOC_RESERVE", IOC_RESERVE),
    ("RXE_CTL_IOC_EXPECT", IOC_EXPECT),
    ("RXE_CTL_IOC_DROP", IOC_DROP),
    ("RXE_CTL_IOC_DIRTY", IOC_DIRTY),
    ("RXE_CTL_IOC_QP_STOP", IOC_QP_STOP),
    ("RXE_CTL_IOC_QP_DUMP", IOC_QP_DUMP),
    ("RXE_CTL_IOC_QP_RESTORE", IOC_QP_RESTORE),
    ("RXE_CTL_IOC_QP_RESUME", IOC_QP_RESUME),
    ("RXE_CTL_IOC_QP_QUERY", IOC_QP_QUERY),
    ("RXE_CTL_IOC_MR_REPIN", IOC_MR_REPIN),
    ("RXE_CTL_IOC_MW_BIND", IOC_MW_BIND),
    ("RXE_CTL_IOC_MR_WRPROTECT", IOC_MR_WRPROTECT),
    ("RXE_CTL_IOC_ADOPT", IOC_ADOPT),
];

/// Constants by their header names, for `tests/abi_layout.rs`.
pub const CONSTANTS: &[(&str, u64)] = &[
    ("RXE_CTL_ABI_VERSION", ABI_VERSION as u64),
    ("RXE_CTL_IBDEV_NAME_MAX", IBDEV_NAME_MAX as u64),
    ("RXE_CTL_OBJ_QP", OBJ_QP as u64),
    ("RXE_CTL_OBJ_MR", OBJ_MR as u64),
    ("RXE_CTL_OBJ_MW", OBJ_MW as u64),
    ("RXE_CTL_OBJ_AH", OBJ_AH as u64),
    ("RXE_CTL_FEAT_RESERVE", FEAT_RESERVE as u64),
    ("RXE_CTL_FEAT_EXPECT", FEAT_EXPECT as u64),
    ("RXE_CTL_FEAT_DIRTY", FEAT_DIRTY as u64),
    ("RXE_CTL_FEAT_QPMIG", FEAT_QPMIG as u64),
    ("RXE_CTL_FEAT_MR_REPIN", FEAT_MR_REPIN as u64),
    ("RXE_CTL_FEAT_QP_EPOCH", FEAT_QP_EPOCH as u64),
    ("RXE_CTL_FEAT_MW_BIND", FEAT_MW_BIND as u64),
    ("RXE_CTL_FEAT_PAUSE_MAX", FEAT_PAUSE_MAX as u64),
    ("RXE_CTL_FEAT_MR_WRPROTECT", FEAT_MR_WRPROTECT as u64),
    ("RXE_CTL_FEAT_MR_WRPROTECT_LOG", FEAT_MR_WRPROTECT_LOG as u64),
    ("RXE_CTL_MR_WRPROTECT_F_LOG", MR_WRPROTECT_F_LOG as u64),
    ("RXE_CTL_F_PERSIST", F_PERSIST as u64),
    ("RXE_CTL_F_KEY", F_KEY as u64),
    ("RXE_CTL_F_HOLLOW", F_HOLLOW as u64),
    ("RXE_CTL_F_STOPPED", F_STOPPED as u64),
    ("RXE_CTL_FEAT_MR_HOLLOW", FEAT_MR_HOLLOW as u64),
    ("RXE_CTL_FEAT_ADOPT", FEAT_ADOPT as u64),
    ("RXE_CTL_FEAT_QP_DUMP_SHARED", FEAT_QP_DUMP_SHARED as u64),
    ("RXE_CTL_FEAT_QP_STOPPED", FEAT_QP_STOPPED as u64),
    ("RXE_CTL_DROP_F_ALL", DROP_F_ALL as u64),
    ("RXE_CTL_DIRTY_F_CLEAR", DIRTY_F_CLEAR as u64),
    ("RXE_CTL_DIRTY_MAX_PAGES", DIRTY_MAX_PAGES),
    ("RXE_CTL_QP_F_CQ", QP_F_CQ as u64),
    ("RXE_CTL_QP_F_SRQ", QP_F_SRQ as u64),
    ("RXE_CTL_QP_F_LOCAL", QP_F_LOCAL as u64),
    ("RXE_CTL_QP_F_DROP_FIRST", QP_F_DROP_FIRST as u64),
    ("RXE_CTL_QP_F_LATE_PAUSE", QP_F_LATE_PAUSE as u64),
    ("RXE_CTL_QP_F_NO_CQ", QP_F_NO_CQ as u64),
    ("RXE_CTL_QP_F_NO_SRQ", QP_F_NO_SRQ as u64),
    ("RXE_CTL_QP_S_STOPPED", QP_S_STOPPED as u64),
    ("RXE_CTL_QP_S_RESUMING", QP_S_RESUMING as u64),
    ("RXE_CTL_QP_S_PAUSED", QP_S_PAUSED as u64),
    ("RXE_CTL_QP_S_REQ_HELD", QP_S_REQ_HELD as u64),
];

// The sizes and offsets the header's comments give; a mismatch is a silent ABI break, so the
// build stops here (tests/abi_layout.rs also compares them with the compiled header).
const _: () = assert!(size_of::<Version>() == 16);
const _: () = assert!(size_of::<Reserve>() == 24 && offset_of!(Reserve, nbusy) == 20);
const _: () = assert!(size_of::<Expect>() == 88 && offset_of!(Expect, id) == 20 && offset_of!(Expect, ibdev) == 24);
const _: () = assert!(size_of::<DropEntry>() == 8);
const _: () = assert!(size_of::<Dirty>() == 136 && offset_of!(Dirty, first_page) == 72 && offset_of!(Dirty, page_shift) == 132);
const _: () = assert!(
    size_of::<Qp>() == 128
        && offset_of!(Qp, qpn) == 64
        && offset_of!(Qp, flags) == 68
        && offset_of!(Qp, buf) == 72
        && offset_of!(Qp, len) == 80
        && offset_of!(Qp, state) == 88
        && offset_of!(Qp, qp_state) == 92
        && offset_of!(Qp, pauses_sent) == 96
        && offset_of!(Qp, pauses_rcvd) == 100
        && offset_of!(Qp, resumes_sent) == 104
        && offset_of!(Qp, resumes_rcvd) == 108
        && offset_of!(Qp, resume_acks) == 112
        && offset_of!(Qp, pauses_stale) == 116
        && offset_of!(Qp, pauses_expired) == 120
        && offset_of!(Qp, reserved) == 124
);
const _: () = assert!(
    size_of::<MrRepin>() == 96
        && offset_of!(MrRepin, index) == 64
        && offset_of!(MrRepin, pid) == 68
        && offset_of!(MrRepin, va) == 72
        && offset_of!(MrRepin, flags) == 80
        && offset_of!(MrRepin, reserved) == 84
        && offset_of!(MrRepin, npages) == 88
);
const _: () = assert!(
    size_of::<MrWrprotect>() == 104
        && offset_of!(MrWrprotect, index) == 64
        && offset_of!(MrWrprotect, pid) == 68
        && offset_of!(MrWrprotect, flags) == 72
        && offset_of!(MrWrprotect, logged) == 76
        && offset_of!(MrWrprotect, npages) == 80
        && offset_of!(MrWrprotect, protected) == 88
        && offset_of!(MrWrprotect, skipped) == 96
);
const _: () = assert!(size_of::<Adopt>() == 16 && offset_of!(Adopt, flags) == 4 && offset_of!(Adopt, count) == 8 && offset_of!(Adopt, reserved) == 12);
const _: () = assert!(
    size_of::<MwBind>() == 104
        && offset_of!(MwBind, index) == 64
        && offset_of!(MwBind, rkey) == 68
        && offset_of!(MwBind, mr_index) == 72
        && offset_of!(MwBind, qpn) == 76
        && offset_of!(MwBind, addr) == 80
        && offset_of!(MwBind, length) == 88
        && offset_of!(MwBind, access) == 96
        && offset_of!(MwBind, flags) == 100
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // As the 6.1 kernel computes _IOWR/_IOW/_IOR(0xB8, nr, struct) on x86_64.
        assert_eq!(IOC_VERSION, 0x8010b800);
        assert_eq!(IOC_EXPECT, 0xc058b802);
        assert_eq!(IOC_DROP, 0x4008b803);
        assert_eq!(IOC_DIRTY, 0xc088b804);
        assert_eq!(IOC_QP_STOP, 0xc080b805);
        assert_eq!(IOC_QP_RESUME, 0xc080b808);
        assert_eq!(IOC_MR_REPIN, 0xc060b80a);
        assert_eq!(IOC_MW_BIND, 0x4068b80b);
        assert_eq!(IOC_MR_WRPROTECT, 0xc068b80c);
        assert_eq!(IOC_ADOPT, 0xc010b80d);
    }
}
