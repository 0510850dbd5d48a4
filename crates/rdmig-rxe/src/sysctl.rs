//! The MigrOS-compatible cursors of patch 0001: `/proc/sys/net/rdma_rxe/last_qpn` and `last_mrn`,
//! the index the next QP (MR) is allocated after.

use std::path::Path;

use crate::ctl::CtlError;

pub const SYSCTL_DIR: &str = "/proc/sys/net/rdma_rxe";

/// Reads a cursor (`last_qpn` or `last_mrn`).
pub fn get(name: &str) -> Result<u32, CtlError> {
    let p = Path::new(SYSCTL_DIR).join(name);
    let s = std::fs::read_to_string(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CtlError::NotLoaded,
        _ => CtlError::Io { path: p.display().to_string(), source: e },
    })?;
    s.trim().parse().map_err(|_| CtlError::Invalid(format!("{}: {s:?}", p.display())))
}

pub fn set(name: &str, v: u32) -> Result<(), CtlError> {
    let p = Path::new(SYSCTL_DIR).join(name);
    std::fs::write(&p, v.to_string()).map_err(|e| CtlError::Io { path: p.display().to_string(), source: e })
}
