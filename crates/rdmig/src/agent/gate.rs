//! What an unauthenticated peer can make the agent spend: a bounded number of connections, of
//! which fewer may be in their TLS handshake at once, each handshake within a few seconds
//! (`HELLO`, see `mod.rs`), and a small first request (`FIRST_REQUEST`). rustls bounds what it
//! buffers during the handshake itself; nothing the agent allocates depends on a peer's word
//! before its certificate has been checked.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default cap on open connections (`--max-connections`).
pub const MAX_CONNECTIONS: usize = 64;
/// Largest first request of a connection (every first request a source sends is a few bytes:
/// Facts, Status, Abort, Commit, RdmaSetup, Probe; CpuCheck's image comes later).
pub const FIRST_REQUEST: usize = 64 << 10;

/// The agent's connection slots.
#[derive(Clone)]
pub struct Gate {
    conns: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
}

impl Gate {
    /// `max` connections at once, a quarter of them (at least one) in their handshake.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self { conns: Arc::new(Semaphore::new(max)), handshakes: Arc::new(Semaphore::new((max / 4).max(1))) }
    }

    /// A slot for a new connection, held while it is open; None: all are taken.
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.conns.clone().try_acquire_owned().ok()
    }

    /// A slot for a handshake, held until it is over; None: too many peers are in theirs.
    pub fn handshake(&self) -> Option<OwnedSemaphorePermit> {
        self.handshakes.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{agent, dial};
    use super::*;
    use rdmig_proto::msg::{Reply, Request};
    use rdmig_proto::tls::testing::TestCa;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Whether the agent hangs up on `s` within `within` (EOF or reset, without sending).
    async fn hung_up(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 1];
        matches!(tokio::time::timeout(within, s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
    }

    #[tokio::test]
    async fn a_silent_or_slow_peer_is_dropped_after_the_handshake_limit() {
        let ca = TestCa::new();
        let to = agent(&ca, 8).await;
        let t = Instant::now();
        let mut silent = tokio::net::TcpStream::connect(to).await.unwrap();
        assert!(hung_up(&mut silent, Duration::from_secs(5)).await, "a silent peer was kept");
        assert!(t.elapsed() >= Duration::from_millis(900) && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // Trickling a byte at a time (a record header, then its body) does not stretch it: the
        // limit is for the whole handshake.
        let mut slow = tokio::net::TcpStream::connect(to).await.unwrap();
        let t = Instant::now();
        let mut dropped = false;
        for b in [0x16u8, 3, 1, 0, 200].into_iter().chain(std::iter::repeat(0)).take(20) {
            if slow.write_all(&[b]).await.is_err() || hung_up(&mut slow, Duration::from_millis(250)).await {
                dropped = true;
                break;
            }
        }
        assert!(dropped, "a trickling peer was kept for {:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_at_once_and_handshakes_have_fewer_slots() {
        let ca = TestCa::new();
        let to = agent(&ca, 8).await;
        // Two peers in their handshake take both handshake slots (8 / 4): a third is dropped
        // at once, not after the handshake limit.
        let _a = tokio::net::TcpStream::connect(to).await.unwrap();
        let _b = tokio::net::TcpStream::connect(to).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = tokio::net::TcpStream::connect(to).await.unwrap();
        assert!(hung_up(&mut c, Duration::from_millis(500)).await, "a third handshake was let in");
        // Authenticated connections count against the cap too: with 8 open, the ninth is
        // dropped at once.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut open = vec![];
        for _ in 0..8 {
            let mut ch = dial(&ca, to).await.unwrap();
            ch.send_msg(&Request::Ping).await.unwrap();
            assert!(matches!(ch.recv_msg::<Reply>().await.unwrap(), Reply::Ack));
            open.push(ch);
        }
        let mut ninth = tokio::net::TcpStream::connect(to).await.unwrap();
        assert!(hung_up(&mut ninth, Duration::from_millis(500)).await, "a ninth connection was let in");
        drop(open.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut ch = dial(&ca, to).await.unwrap();
        ch.send_msg(&Request::Ping).await.unwrap();
        assert!(matches!(ch.recv_msg::<Reply>().await.unwrap(), Reply::Ack), "a freed slot was not reused");
    }

    #[tokio::test]
    async fn a_large_first_request_is_refused_unread() {
        let ca = TestCa::new();
        let to = agent(&ca, 8).await;
        let mut ch = dial(&ca, to).await.unwrap();
        // Valid, but too large to come first.
        let r = ch.send_msg(&Request::CpuCheck { image: vec![7; FIRST_REQUEST] }).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(ch.recv_msg::<Reply>().await.is_err(), "a large first request was answered");
        // The same after a first small request is fine (refused by CRIU's check, not the size).
        let mut ch = dial(&ca, to).await.unwrap();
        ch.send_msg(&Request::Ping).await.unwrap();
        assert!(matches!(ch.recv_msg::<Reply>().await.unwrap(), Reply::Ack));
        ch.send_msg(&Request::CpuCheck { image: vec![7; FIRST_REQUEST] }).await.unwrap();
        assert!(ch.recv_msg::<Reply>().await.is_ok());
    }
}
