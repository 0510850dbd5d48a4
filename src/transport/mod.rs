//! How a migration's bulk data travels: RDMA (RC QPs between the agents, a registered ring,
//! RDMA WRITE with immediate, credit-based flow control) or TCP (the authenticated control
//! channel itself). `auto` measures both at connect time and keeps the faster.
//!
//! `scp` is not one of ours: it copies the image files over ssh, as the MigrOS artifact does by
//! hand, so that downtimes can be compared with that procedure in the same run.
//!
//! Control messages always travel on the authenticated TCP channel; so does each file's
//! end-to-end check (`DataSum`), which the destination compares with what arrived.

pub mod pagestream;
pub mod rdma;

use serde::Serialize;
use sha2::Digest;

use crate::agent::wire::Tag;

/// The end-to-end check of one file (or probe), sent after its data. Over RDMA the bytes carry
/// no MAC, so it is a CRC-32 of the data. Over TCP every frame already carries a MAC over its
/// bytes and position, so the check is a SHA-256 of the frames' tags in order: each byte is
/// hashed once per side (a CRC-32 pass as well ran at about 200-260 MB/s in the lab's TCG
/// nodes, more than the MAC), and the check still says "these bytes, in these frames, in this order".
pub enum DataSum {
    Rdma(crc32fast::Hasher),
    Tcp(sha2::Sha256),
}

impl DataSum {
    pub fn new(via_rdma: bool) -> Self {
        if via_rdma {
            Self::Rdma(crc32fast::Hasher::new())
        } else {
            Self::Tcp(sha2::Sha256::new())
        }
    }

    /// One chunk of data; `tag` is its frame's tag (TCP) or None (RDMA).
    pub fn update(&mut self, data: &[u8], tag: Option<&Tag>) {
        match (self, tag) {
            (Self::Rdma(c), _) => c.update(data),
            (Self::Tcp(h), Some(t)) => {
                h.update((data.len() as u32).to_le_bytes());
                h.update(t);
            }
            (Self::Tcp(h), None) => {
                // Never a TCP chunk without a tag; make the check fail rather than pass.
                h.update(b"untagged");
            }
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Rdma(c) => c.finalize().to_le_bytes().to_vec(),
            Self::Tcp(h) => h.finalize().to_vec(),
        }
    }
}

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
    /// RC QPs ("lanes") of the RDMA data path, when RDMA was used.
    pub rdma_qps: Option<usize>,
}

/// MB/s (10^6 bytes per second) of `bytes` moved in `secs`.
pub fn mb_s(bytes: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / secs / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_depend_on_every_chunk_and_its_order() {
        let sum = |via_rdma: bool, chunks: &[(&[u8], Tag)]| {
            let mut s = DataSum::new(via_rdma);
            for (d, t) in chunks {
                s.update(d, if via_rdma { None } else { Some(t) });
            }
            s.finish()
        };
        let (a, b): (&[u8], &[u8]) = (b"first chunk", b"second");
        let (ta, tb) = ([1u8; 16], [2u8; 16]);
        for rdma in [true, false] {
            let good = sum(rdma, &[(a, ta), (b, tb)]);
            assert_eq!(good.len(), if rdma { 4 } else { 32 });
            assert_eq!(good, sum(rdma, &[(a, ta), (b, tb)]));
            assert_ne!(good, sum(rdma, &[(b, tb), (a, ta)]));
            assert_ne!(good, sum(rdma, &[(a, ta)]));
        }
        assert_ne!(sum(false, &[(a, ta)]), sum(false, &[(a, tb)]));
    }
}
