//! rdmig: live migration of unmodified RDMA (SoftRoCE) applications between hosts.
//!
//! The product's library, read in the order a migration runs: `migrate` (the source side, one
//! module per stage), `agent` (the per-node daemon that receives migrations), `transport` (the
//! data paths: RDMA lanes, TCP, CRIU's page stream), `criu` (driving CRIU), `netaddr` (the
//! address that moves with a process), `timeline` (phases and downtime), `sample` (a peer's rxe
//! counters over time) and `verbs` (RC queue pairs). The agents' protocol is the `rdmig-proto`
//! crate, the driver's control device `rdmig-rxe`, the plugin's image format `rdmig-image`.
//! See docs/ARCHITECTURE.md for how the pieces fit together.

pub mod agent;
pub mod atomic_file;
pub mod cluster;
pub mod criu;
pub mod journal;
pub mod migrate;
pub mod netaddr;
pub mod podman;
pub mod process;
pub mod sample;
pub mod tcp_hold;
pub mod tcp_unlock;
pub mod timeline;
pub mod transport;
pub mod tsc;
pub mod verbs;
