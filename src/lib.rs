//! rdmig: live migration of unmodified RDMA (SoftRoCE) applications between hosts.
//!
//! The crate is organised by what each part does: `agent` (the per-node daemon that receives
//! migrations), `migrate` (the source side), `criu` (driving CRIU), `timeline` (phases and
//! downtime), `lab` (SoftRoCE virtual machines for users and tests without RDMA hardware), `rxe`
//! (SoftRoCE facts from sysfs) and `verbs` (RC queue pairs).
//! See docs/ARCHITECTURE.md for how the pieces fit together.

pub mod agent;
pub mod criu;
pub mod image;
pub mod lab;
pub mod migrate;
pub mod netaddr;
pub mod rxe;
pub mod softroce;
pub mod verbs;
pub mod timeline;
pub mod transport;
