//! How a migration's bulk data travels: RDMA (RC QPs between the agents, a registered ring,
//! RDMA WRITE with immediate, credit-based flow control) or TCP (the authenticated control
//! channel itself). `auto` measures both at connect time and keeps the faster.
//!
//! `scp` is not one of ours: it copies the image files over ssh, as the MigrOS artifact does by
//! hand, so that downtimes can be compared with that procedure in the same run.
//!
//! Control messages always travel on the authenticated TCP channel; so does each file's CRC,
//! which the destination checks against what arrived over either path.

pub mod pagestream;
pub mod rdma;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransportChoice {
    Rdma,
    Tcp,
    Auto,
    /// CRIU's image files copied with `scp` over ssh: the MigrOS artifact's manual procedure
    /// (checkpoint, scp, restore), kept as a baseline to compare against.
    Scp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Used {
    Rdma,
    Tcp,
    Scp,
}

/// Which transport a migration used and why, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct TransportReport {
    pub used: Used,
    pub reason: String,
    /// Probe results when `auto` measured both, MB/s.
    pub tcp_mb_s: Option<f64>,
    pub rdma_mb_s: Option<f64>,
}

/// MB/s (10^6 bytes per second) of `bytes` moved in `secs`.
pub fn mb_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / secs / 1e6
    }
}
