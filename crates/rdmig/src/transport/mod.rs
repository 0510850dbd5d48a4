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

use tokio::io::{AsyncRead, AsyncWrite};

use rdmig_proto::wire::{Channel, FrameMac, Tag};

/// The end-to-end check of one file, probe or page stream, sent after its data over the
/// authenticated channel: a SHA-256 over each chunk's length and MAC tag, in order. Over TCP the
/// tags are the frames' own (the MAC already read every byte: nothing is hashed twice). Over
/// RDMA, whose bytes carry no MAC, each chunk is tagged here with the channel's frame MAC, in a
/// counter domain of its own (top bit set; channel frames count from 0), so RDMA data is
/// authenticated too, and for less than the CRC-32 it replaced (200-260 MB/s in the TCG nodes).
pub struct DataSum {
    sha: sha2::Sha256,
    /// RDMA: the MAC and the next chunk's number.
    rdma: Option<(FrameMac, u64)>,
}

/// Counter domain of RDMA chunk tags: disjoint from the channel's frame counters.
const RDMA_CHUNKS: u64 = 1 << 63;

impl DataSum {
    /// The check of data this end sends on `ch`'s connection (in its frames, or over RDMA
    /// tagged with this end's sending MAC).
    pub fn for_sending<S: AsyncRead + AsyncWrite + Unpin>(ch: &Channel<S>, via_rdma: bool) -> Self {
        if via_rdma {
            Self::rdma(ch.send_mac())
        } else {
            Self::tcp()
        }
    }

    /// The check of data the peer sends on `ch`'s connection (over RDMA tagged with the peer's
    /// sending MAC, which is this end's receiving one).
    pub fn for_receiving<S: AsyncRead + AsyncWrite + Unpin>(ch: &Channel<S>, via_rdma: bool) -> Self {
        if via_rdma {
            Self::rdma(ch.recv_mac())
        } else {
            Self::tcp()
        }
    }

    /// For data in the channel's frames: `update` gets each frame's tag.
    fn tcp() -> Self {
        Self { sha: sha2::Sha256::new(), rdma: None }
    }

    /// For data over RDMA, tagged with `mac`.
    fn rdma(mac: FrameMac) -> Self {
        Self { sha: sha2::Sha256::new(), rdma: Some((mac, 0)) }
    }

    /// One chunk of data; `tag` is its frame's tag (TCP) or None (RDMA).
    pub fn update(&mut self, data: &[u8], tag: Option<&Tag>) {
        let t = match (&mut self.rdma, tag) {
            (Some((mac, n)), _) => {
                let t = mac.tag(RDMA_CHUNKS | *n, data);
                *n += 1;
                t
            }
            (None, Some(t)) => *t,
            (None, None) => {
                // Never a TCP chunk without a tag; make the check fail rather than pass.
                self.sha.update(b"untagged");
                return;
            }
        };
        self.sha.update((data.len() as u32).to_le_bytes());
        self.sha.update(t);
    }

    pub fn finish(self) -> Vec<u8> {
        self.sha.finalize().to_vec()
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

    fn mac(k: u64) -> FrameMac {
        FrameMac::new([k; rdmig_proto::mac::NH_WORDS], [k as u8; 16])
    }

    #[test]
    fn checks_depend_on_every_chunk_and_its_order() {
        let sum = |via_rdma: bool, chunks: &[(&[u8], Tag)]| {
            let mut s = if via_rdma { DataSum::rdma(mac(5)) } else { DataSum::tcp() };
            for (d, t) in chunks {
                s.update(d, if via_rdma { None } else { Some(t) });
            }
            s.finish()
        };
        let (a, b): (&[u8], &[u8]) = (b"first chunk", b"second");
        let (ta, tb) = ([1u8; 16], [2u8; 16]);
        for rdma in [true, false] {
            let good = sum(rdma, &[(a, ta), (b, tb)]);
            assert_eq!(good.len(), 32);
            assert_eq!(good, sum(rdma, &[(a, ta), (b, tb)]));
            assert_ne!(good, sum(rdma, &[(b, tb), (a, ta)]));
            assert_ne!(good, sum(rdma, &[(a, ta)]));
        }
        assert_ne!(sum(false, &[(a, ta)]), sum(false, &[(a, tb)]));
        // Over RDMA the content counts, and the key: another MAC's sum differs.
        assert_ne!(sum(true, &[(a, ta)]), sum(true, &[(b"first chunK", ta)]));
        let mut other = DataSum::rdma(mac(6));
        other.update(a, None);
        let mut same = DataSum::rdma(mac(5));
        same.update(a, None);
        assert_ne!(other.finish(), same.finish());
        // An untagged TCP chunk never passes as a tagged one.
        let mut untagged = DataSum::tcp();
        untagged.update(a, None);
        assert_ne!(untagged.finish(), sum(false, &[(a, ta)]));
    }
}
