//! rdmig's rdma_rxe from user space: the only code that talks to `/dev/rxe_ctl`.
//!
//! - [`abi`]: the control device's structs and ioctl numbers, translated by hand from
//!   `softroce/include/uapi/rdma/rxe_ctl_abi.h` (the header the kernel patches include) with a
//!   size and offset assertion for every field; `tests/abi_layout.rs` compiles the header and
//!   compares.
//! - [`ctl`]: [`Ctl`], an open control device (reservations, expected numbers, the dirty log, QP
//!   stop/dump/restore/resume, MR re-pinning, MW binding).
//! - [`status`]: the device's text status (every user QP, MR, MW and AH with its owner).
//! - [`sysctl`]: the MigrOS-compatible `last_qpn`/`last_mrn` cursors.
//! - [`gid`]: GID tables of rxe ports from sysfs.
//! - [`lend`]: the agent's lending of the control device to CRIU inside containers.
//! - [`module`]: which `rdma_rxe` and `ib_uverbs` are loaded and installed, rdmig's or stock.
//! - [`ucma`]: rdmig's rdma_ucm (`ucma_ckpt_abi.h`): the rdma_cm commands and ioctls of the CRIU
//!   plugin, and the moving mark rdmig clears on a process that stays.

pub mod abi;
pub mod ctl;
pub mod gid;
pub mod lend;
pub mod module;
pub mod status;
pub mod sysctl;
pub mod ucma;

pub use abi::{
    ABI_VERSION, FEAT_MR_REPIN, FEAT_MW_BIND, FEAT_PAUSE_MAX, FEAT_QPMIG, FEAT_QP_DUMP_SHARED, FEAT_QP_EPOCH, FEAT_QP_STOPPED, QP_F_CQ, QP_F_DROP_FIRST,
    QP_F_LATE_PAUSE, QP_F_LOCAL, QP_F_NO_CQ, QP_F_NO_SRQ, QP_F_SRQ, QP_S_PAUSED, QP_S_REQ_HELD, QP_S_RESUMING, QP_S_STOPPED,
};
pub use ctl::{Ctl, CtlError, CtlVersion, DirtyPages, MrWrprotected, Obj, QpMigState, CTL_DEV};
pub use gid::{find_gid, gid_index, gid_table, ipv4_mapped_gid, GidEntry, RxeError};
pub use status::{parse_gid, Record};
