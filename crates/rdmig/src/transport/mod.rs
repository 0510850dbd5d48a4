//! How a migration's bulk data travels: RDMA (RC QPs between the agents, a registered ring,
//! RDMA WRITE with immediate, credit-based flow control) or TCP (the authenticated control
//! channel itself). `auto` measures both at connect time and keeps the faster.
//!
//! `scp` is not one of ours: it copies the image files over ssh, as the MigrOS artifact does by
//! hand, so that downtimes can be compared with that procedure in the same run.
//!
//! Control messages always travel on the TLS channel; so does each file's end-to-end check
//! (`DataSum`), which the destination compares with what arrived.

pub mod pagestream;
pub mod rdma;

use hmac::{Hmac, Mac};
use serde::Serialize;

use tokio::io::{AsyncRead, AsyncWrite};

use rdmig_proto::wire::Channel;

type HmacSha256 = Hmac<sha2::Sha256>;

/// The end-to-end check of one file, probe or page stream, sent after its data: HMAC-SHA256
/// under a key exported from the connection's TLS session for this stream alone
/// (`Channel::next_stream_key`), over each chunk's length. The bytes themselves are
/// authenticated on the way, over TCP by TLS, over RDMA by each chunk's AEAD (`rdma::ChunkKey`,
/// numbered chunks: nothing reordered, replayed or injected opens); the check covers the
/// chunking and the end.
pub struct DataSum {
    mac: HmacSha256,
}

impl DataSum {
    /// The check of a stream this end sends on `ch`'s connection.
    pub fn for_sending<S: AsyncRead + AsyncWrite + Unpin>(ch: &Channel<S>) -> Self {
        Self::new(&ch.next_stream_key())
    }

    /// The check of a stream the peer sends on `ch`'s connection (both ends key their streams
    /// in the same order).
    pub fn for_receiving<S: AsyncRead + AsyncWrite + Unpin>(ch: &Channel<S>) -> Self {
        Self::new(&ch.next_stream_key())
    }

    fn new(key: &[u8; 32]) -> Self {
        Self { mac: HmacSha256::new_from_slice(key).expect("HMAC takes any key length") }
    }

    /// One chunk of data, in order.
    pub fn update(&mut self, data: &[u8]) {
        self.mac.update(&(data.len() as u64).to_le_bytes());
    }

    /// The check to send.
    pub fn finish(self) -> Vec<u8> {
        self.mac.finalize().into_bytes().to_vec()
    }

    /// Whether `sent` is the check of what arrived (constant time).
    pub fn matches(self, sent: &[u8]) -> bool {
        self.mac.verify_slice(sent).is_ok()
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
    /// What the RDMA data path did to each chunk, when RDMA was used.
    pub rdma_protection: Option<rdmig_proto::msg::ChunkProtection>,
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
    fn checks_depend_on_the_chunking_its_order_and_the_key() {
        let sum = |key: u8, chunks: &[&[u8]]| {
            let mut s = DataSum::new(&[key; 32]);
            for c in chunks {
                s.update(c);
            }
            s
        };
        let (a, b): (&[u8], &[u8]) = (b"first chunk", b"second");
        let good = sum(1, &[a, b]).finish();
        assert_eq!(good.len(), 32);
        assert!(sum(1, &[a, b]).matches(&good));
        assert!(!sum(1, &[b, a]).matches(&good));
        assert!(!sum(1, &[a]).matches(&good));
        assert!(!sum(2, &[a, b]).matches(&good), "another stream's key");
        assert!(!sum(1, &[a, b]).matches(&good[..31]));
    }
}
