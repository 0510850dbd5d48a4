//! rdmig: live migration of unmodified RDMA (SoftRoCE) applications between hosts.
//!
//! The crate is organised by what each part does: `lab` runs a lab of SoftRoCE virtual machines
//! for users (and tests) without RDMA hardware; `rxe` reads SoftRoCE facts from sysfs.
//! See docs/ARCHITECTURE.md for how the pieces fit together.

pub mod lab;
pub mod rxe;
pub mod verbs;
