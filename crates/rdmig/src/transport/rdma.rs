//! A one-way byte stream over RDMA between two agents: the bulk data of a migration.
//!
//! The receiver registers a ring of `slots` buffers and tells the sender its address and rkey
//! (over the authenticated control channel). The sender copies each chunk into a registered
//! buffer of its own and RDMA-WRITEs it, with immediate data, into a free remote slot; the
//! immediate carries the slot and the length, and consumes one receive at the receiver, whose
//! completion says "slot N holds L bytes". Once the receiver has copied a slot out, it SENDs the
//! slot number back: a credit. The sender never writes into a slot the receiver has not freed.
//!
//! A stream can use several such QPs, "lanes", each with its ring and credits: chunk `i` travels
//! on lane `i mod lanes`, and the receiver takes them back in that order, so the stream stays
//! one ordered sequence of chunks. The QPs' work then runs in parallel in the rxe driver (one
//! requester and one responder task per QP).
//!
//! RDMA is not protected by the control channel's TLS, so every chunk is sealed under a key
//! exported from the TLS session for this data path (`ChunkKey`): a GMAC tag by default, or
//! encrypted with AES-256-GCM when the source asks (`--encrypt`), the nonce the chunk's number
//! in the stream: numbers never restart on a data path, and a path's key is never used by
//! another. The receiver opens each chunk (from a copy of its slot, so a later write into the
//! slot cannot change what was checked) before it hands a byte on: an altered, injected,
//! reordered or replayed chunk ends the stream with an error.
//! Sealing and opening happen in the lanes' threads, off the async runtime.
//!
//! Verbs objects are not `Send`, so each lane's QP lives in a thread of its own; the async code
//! talks to it through channels. Any failed work completion or QP error ends the stream with an
//! error on both sides, which the migration turns into a rollback.

use std::sync::mpsc as smpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use tokio::sync::{mpsc, oneshot};

use crate::verbs::{Completion, Endpoint, RcConfig, RcQp, Region};

/// Data per slot (a chunk), and slot count of the receive ring.
pub const SLOT: usize = 1 << 20;
/// A chunk's AEAD tag, after its data in the slot.
pub const TAG: usize = 16;
/// Bytes of a slot: a chunk and its tag.
pub const SLOT_BYTES: usize = SLOT + TAG;
pub const SLOTS: u32 = 8;
const CREDIT: usize = 4;
/// How long a side waits for the other before calling the stream broken.
const STALL: Duration = Duration::from_secs(20);
/// Most lanes (QPs) one stream may use; each costs 2 x `SLOTS` x `SLOT` of registered memory.
pub use rdmig_proto::msg::MAX_LANES;
/// Lanes used unless told otherwise (`--rdma-qps`): in the lab, 2 QPs moved about 10 % more
/// than 1, and 4 only 2-3 % more than 2 (experiments/transfer-vs-baselines.sh, README).
pub const DEFAULT_LANES: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    #[error("RDMA: {0}")]
    Verbs(#[from] crate::verbs::VerbsError),
    #[error("RDMA stream: {0}")]
    Broken(String),
}

pub use rdmig_proto::msg::{ChunkProtection, LaneRing, RingInfo};

/// A lane count asked for by the peer or the user: 1 to `MAX_LANES`.
pub fn check_lanes(n: usize) -> Result<(), RdmaError> {
    if (1..=MAX_LANES).contains(&n) {
        Ok(())
    } else {
        broken(format!("{n} RDMA lanes (QPs) asked for; 1 to {MAX_LANES} are possible"))
    }
}

/// The key of one data path (both ends derive it from their TLS session) and what it does to
/// each chunk, as the source chose (`ChunkProtection`). Both are AES-256-GCM from aws-lc-rs
/// (rustls' provider), the nonce the chunk's number:
/// - `Authenticated` (the default): GMAC, the chunk as additional data and nothing encrypted.
///   Measured per 1 MiB chunk (benches/frame.rs): 20 GiB/s on this project's host CPU, 80 MiB/s
///   in the lab's emulated one, against 9.5 GiB/s and 39 MiB/s to encrypt as well.
/// - `Encrypted` (`--encrypt`): the data encrypted too. AES-256-GCM seals a chunk faster than
///   either ChaCha20-Poly1305 (1.5 GiB/s RustCrypto, 2.4 GiB/s aws-lc-rs on the host).
#[derive(Clone)]
pub struct ChunkKey {
    aead: std::sync::Arc<LessSafeKey>,
    protection: ChunkProtection,
}

impl ChunkKey {
    pub fn new(key: &[u8; 32], protection: ChunkProtection) -> Self {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"));
        Self { aead: std::sync::Arc::new(aead), protection }
    }

    /// Chunk `n`'s nonce: numbers never repeat under one key (see the module's notes).
    fn nonce(n: u64) -> Nonce {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_le_bytes());
        Nonce::assume_unique_for_key(b)
    }

    /// Seals chunk number `n` in place: `buf` holds the data and room for the tag after it.
    fn seal(&self, n: u64, buf: &mut [u8]) {
        let (data, tag) = buf.split_at_mut(buf.len() - TAG);
        let t = match self.protection {
            ChunkProtection::Encrypted => self.aead.seal_in_place_separate_tag(Self::nonce(n), Aad::empty(), data),
            ChunkProtection::Authenticated => self.aead.seal_in_place_separate_tag(Self::nonce(n), Aad::from(&*data), &mut []),
        }
        .expect("a chunk is far below AES-GCM's limit");
        tag.copy_from_slice(t.as_ref());
    }

    /// Opens chunk number `n` (data and tag, as it arrived); the data, or an error.
    fn open(&self, n: u64, mut sealed: Vec<u8>) -> Result<Vec<u8>, RdmaError> {
        let Some(len) = sealed.len().checked_sub(TAG) else {
            return broken(format!("chunk {n} of {} bytes is shorter than its tag", sealed.len()));
        };
        let opened = match self.protection {
            ChunkProtection::Encrypted => self.aead.open_in_place(Self::nonce(n), Aad::empty(), &mut sealed).map(|d| d.len()),
            ChunkProtection::Authenticated => {
                let (data, tag) = sealed.split_at(len);
                let mut tag: [u8; TAG] = tag.try_into().expect("TAG bytes");
                self.aead.open_in_place(Self::nonce(n), Aad::from(data), &mut tag).map(|_| len)
            }
        };
        let len = opened.map_err(|_| RdmaError::Broken(format!("chunk {n} failed authentication (altered, injected, reordered or replayed)")))?;
        sealed.truncate(len);
        Ok(sealed)
    }
}

fn imm(slot: u32, len: usize) -> u32 {
    (slot << 24) | len as u32
}

fn unimm(v: u32) -> (u32, usize) {
    (v >> 24, (v & 0x00ff_ffff) as usize)
}

fn broken<T>(m: impl Into<String>) -> Result<T, RdmaError> {
    Err(RdmaError::Broken(m.into()))
}

fn check(wcs: &[Completion]) -> Result<(), RdmaError> {
    match wcs.iter().find(|w| !w.ok()) {
        Some(w) => broken(format!("work request {} failed (status {})", w.wr_id, w.status)),
        None => Ok(()),
    }
}

/// The receiving end: `recv` yields the chunks in the order they were sent.
pub struct RdmaReceiver {
    pub info: RingInfo,
    lanes: Vec<LaneReceiver>,
    /// The lane the next chunk arrives on.
    next: usize,
}

/// One lane's QP thread and what it received, in order.
struct LaneReceiver {
    chunks: mpsc::Receiver<Result<Vec<u8>, RdmaError>>,
    stop: smpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl RdmaReceiver {
    /// Opens one QP per sender endpoint on `device` with `gid_index`, connects each to its
    /// peer, and starts receiving.
    /// Chunks are opened with `key` (see `ChunkKey`).
    pub async fn start(device: &str, gid_index: u32, peers: &[Endpoint], key: ChunkKey) -> Result<Self, RdmaError> {
        check_lanes(peers.len())?;
        let mut lanes = Vec::with_capacity(peers.len());
        let mut rings = Vec::with_capacity(peers.len());
        for (i, peer) in peers.iter().enumerate() {
            let (lane, ring) = LaneReceiver::start(device, gid_index, *peer, (i, peers.len()), key.clone()).await?;
            lanes.push(lane);
            rings.push(ring);
        }
        Ok(Self { info: RingInfo { lanes: rings, slots: SLOTS, slot_size: SLOT_BYTES as u32 }, lanes, next: 0 })
    }

    /// The next chunk of the stream; None once the stream is closed. Cancel-safe: a chunk is
    /// taken (and the lane advanced) only when this returns.
    pub async fn recv(&mut self) -> Option<Result<Vec<u8>, RdmaError>> {
        let c = self.lanes[self.next].chunks.recv().await;
        if let Some(Ok(_)) = c {
            self.next = (self.next + 1) % self.lanes.len();
        }
        c
    }
}

impl LaneReceiver {
    /// Lane `lane.0` of `lane.1`: it carries chunks number lane.0, lane.0 + lane.1, ...
    async fn start(device: &str, gid_index: u32, peer: Endpoint, lane: (usize, usize), key: ChunkKey) -> Result<(Self, LaneRing), RdmaError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, chunks) = mpsc::channel(SLOTS as usize);
        let (stop, stop_rx) = smpsc::channel();
        let cfg = RcConfig { device: device.into(), gid_index, max_send_wr: SLOTS + 4, max_recv_wr: SLOTS * 2, ..Default::default() };
        let thread = std::thread::Builder::new()
            .name(format!("rdma-recv-{}", lane.0))
            .spawn(move || {
                let setup = (|| -> Result<(RcQp, Region, Region), RdmaError> {
                    let mut qp = RcQp::open(cfg)?;
                    let ring = qp.region(SLOTS as usize * SLOT_BYTES, true)?;
                    let credits = qp.region(SLOTS as usize * CREDIT, false)?;
                    for i in 0..SLOTS * 2 {
                        // Writes with immediate consume a receive; they carry no data into it.
                        qp.post_recv(i as u64, &credits, 0, 0)?;
                    }
                    qp.connect(&peer)?;
                    Ok((qp, ring, credits))
                })();
                let (mut qp, ring, mut credits) = match setup {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let info = LaneRing { ep: qp.endpoint(), addr: ring.addr(), rkey: ring.rkey() };
                if ready_tx.send(Ok(info)).is_err() {
                    return;
                }
                let r = receive_loop(&mut qp, &ring, &mut credits, &tx, &stop_rx, &key, lane);
                if let Err(e) = r {
                    let _ = tx.blocking_send(Err(e));
                }
            })
            .map_err(|e| RdmaError::Broken(format!("thread: {e}")))?;
        let lane = Self { chunks, stop, thread: Some(thread) };
        let info = ready_rx.await.map_err(|_| RdmaError::Broken("receiver thread died".into()))??;
        Ok((lane, info))
    }
}

impl Drop for LaneReceiver {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        // The thread wakes at least every 200 ms; it owns the QP and must tear it down itself.
        // Closing the channel also fails a send it is blocked in.
        self.chunks.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn receive_loop(
    qp: &mut RcQp,
    ring: &Region,
    credits: &mut Region,
    tx: &mpsc::Sender<Result<Vec<u8>, RdmaError>>,
    stop: &smpsc::Receiver<()>,
    key: &ChunkKey,
    (lane, lanes): (usize, usize),
) -> Result<(), RdmaError> {
    let mut wcs = Vec::new();
    let mut next_credit = 0u32;
    // The number of the next chunk on this lane.
    let mut n = lane as u64;
    loop {
        if stop.try_recv().is_ok() || tx.is_closed() {
            return Ok(());
        }
        wcs.clear();
        qp.poll_wait(&mut wcs, Duration::from_millis(200))?;
        check(&wcs)?;
        for wc in wcs.iter() {
            // Our own credit SENDs complete here too (wr_id has the top bit set).
            if wc.wr_id & (1 << 63) != 0 {
                continue;
            }
            let (slot, len) = unimm(wc.imm);
            if slot >= SLOTS || len > SLOT_BYTES {
                return broken(format!("peer announced slot {slot} with {len} bytes"));
            }
            let off = slot as usize * SLOT_BYTES;
            // Checked on a copy: nothing written into the slot later changes it.
            let chunk = key.open(n, ring.bytes()[off..off + len].to_vec())?;
            n += lanes as u64;
            qp.post_recv(wc.wr_id, credits, 0, 0)?;
            if tx.blocking_send(Ok(chunk)).is_err() {
                return Ok(());
            }
            // The slot is copied out: hand it back.
            let c = (next_credit % SLOTS) as usize * CREDIT;
            credits.bytes_mut()[c..c + CREDIT].copy_from_slice(&slot.to_le_bytes());
            qp.post_send(1 << 63 | next_credit as u64, credits, c, CREDIT)?;
            next_credit = next_credit.wrapping_add(1);
        }
    }
}

/// The sending end. `send` queues a chunk (at most `SLOT` bytes) on the next lane; `flush` waits
/// until every queued chunk has been written and acknowledged by the receiver's credits.
pub struct RdmaSender {
    /// The lanes' QPs, in lane order, for the receiver to connect to.
    pub eps: Vec<Endpoint>,
    lanes: Vec<LaneSender>,
    next: std::sync::atomic::AtomicUsize,
}

struct LaneSender {
    chunks: Option<smpsc::SyncSender<Vec<u8>>>,
    connect: Option<smpsc::Sender<(LaneRing, u32, ChunkKey)>>,
    errors: smpsc::Receiver<RdmaError>,
    idle: smpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl RdmaSender {
    /// Opens `lanes` QPs (1 to `MAX_LANES`) on `device` with `gid_index`.
    pub async fn open(device: &str, gid_index: u32, lanes: usize) -> Result<Self, RdmaError> {
        check_lanes(lanes)?;
        let mut eps = Vec::with_capacity(lanes);
        let mut ls = Vec::with_capacity(lanes);
        for i in 0..lanes {
            let (lane, ep) = LaneSender::open(device, gid_index, (i, lanes)).await?;
            ls.push(lane);
            eps.push(ep);
        }
        Ok(Self { eps, lanes: ls, next: 0.into() })
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Connects each lane to the receiver's ring for it; chunks are sealed with `key`.
    pub fn connect(&mut self, info: RingInfo, key: ChunkKey) -> Result<(), RdmaError> {
        if info.slots == 0 || info.slots > 255 || info.slot_size as usize != SLOT_BYTES {
            return broken(format!("receiver offers {} slots of {} bytes", info.slots, info.slot_size));
        }
        if info.lanes.len() != self.lanes.len() {
            return broken(format!("receiver offers {} lanes for our {}", info.lanes.len(), self.lanes.len()));
        }
        for (lane, ring) in self.lanes.iter_mut().zip(info.lanes) {
            let c = lane.connect.take().ok_or_else(|| RdmaError::Broken("already connected".into()))?;
            c.send((ring, info.slots, key.clone())).map_err(|_| RdmaError::Broken("sender thread died".into()))?;
        }
        Ok(())
    }

    /// The first error any lane reported.
    fn error(&self) -> RdmaError {
        self.lanes.iter().find_map(|l| l.errors.try_recv().ok()).unwrap_or_else(|| RdmaError::Broken("sender thread ended".into()))
    }

    /// Queues a chunk; blocks (in a blocking section) while its lane's ring is full.
    pub async fn send(&self, chunk: Vec<u8>) -> Result<(), RdmaError> {
        if chunk.len() > SLOT {
            return broken(format!("chunk of {} bytes exceeds a slot", chunk.len()));
        }
        // Only empty chunks are special (flush markers); the receiver gets no empty chunks.
        if chunk.is_empty() {
            return Ok(());
        }
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.lanes.len();
        let tx = self.lanes[i].chunks.clone().ok_or_else(|| RdmaError::Broken("closed".into()))?;
        match tokio::task::spawn_blocking(move || tx.send(chunk)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(self.error()),
        }
    }

    /// Waits until everything queued so far has been received (credited back) on every lane.
    pub async fn flush(&self) -> Result<(), RdmaError> {
        // An empty chunk is the flush marker: the thread answers on `idle` once all is credited.
        for lane in &self.lanes {
            let tx = lane.chunks.clone().ok_or_else(|| RdmaError::Broken("closed".into()))?;
            let sent = tokio::task::spawn_blocking(move || tx.send(Vec::new())).await;
            if !matches!(sent, Ok(Ok(()))) {
                return Err(self.error());
            }
        }
        for lane in &self.lanes {
            // SAFETY of blocking: bounded by STALL inside the thread.
            let idle = tokio::task::block_in_place(|| lane.idle.recv_timeout(STALL + Duration::from_secs(5)));
            if idle.is_err() {
                return Err(self.error());
            }
        }
        Ok(())
    }
}

impl LaneSender {
    /// Lane `lane.0` of `lane.1`: it carries chunks number lane.0, lane.0 + lane.1, ...
    async fn open(device: &str, gid_index: u32, lane: (usize, usize)) -> Result<(Self, Endpoint), RdmaError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (chunks, chunk_rx) = smpsc::sync_channel::<Vec<u8>>(SLOTS as usize);
        let (connect, connect_rx) = smpsc::channel::<(LaneRing, u32, ChunkKey)>();
        let (err_tx, errors) = smpsc::channel();
        let (idle_tx, idle) = smpsc::channel();
        let cfg = RcConfig { device: device.into(), gid_index, max_send_wr: SLOTS * 2 + 4, max_recv_wr: SLOTS * 2, ..Default::default() };
        let thread = std::thread::Builder::new()
            .name(format!("rdma-send-{}", lane.0))
            .spawn(move || {
                let setup = (|| -> Result<(RcQp, Region, Region), RdmaError> {
                    let mut qp = RcQp::open(cfg)?;
                    let ring = qp.region(SLOTS as usize * SLOT_BYTES, false)?;
                    let credits = qp.region(SLOTS as usize * 2 * CREDIT, false)?;
                    // Credit receives carry the top bit in their ids, writes never do.
                    for i in 0..SLOTS * 2 {
                        qp.post_recv(1 << 63 | i as u64, &credits, i as usize * CREDIT, CREDIT)?;
                    }
                    Ok((qp, ring, credits))
                })();
                let (mut qp, mut ring, credits) = match setup {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if ready_tx.send(Ok(qp.endpoint())).is_err() {
                    return;
                }
                let Ok((info, slots, key)) = connect_rx.recv() else { return };
                if let Err(e) = qp
                    .connect(&info.ep)
                    .map_err(RdmaError::from)
                    .and_then(|_| send_loop(&mut qp, &mut ring, &credits, (&info, slots), &chunk_rx, &idle_tx, (&key, lane)))
                {
                    let _ = err_tx.send(e);
                }
            })
            .map_err(|e| RdmaError::Broken(format!("thread: {e}")))?;
        let lane = Self { chunks: Some(chunks), connect: Some(connect), errors, idle, thread: Some(thread) };
        let ep = ready_rx.await.map_err(|_| RdmaError::Broken("sender thread died".into()))??;
        Ok((lane, ep))
    }
}

impl Drop for LaneSender {
    fn drop(&mut self) {
        self.chunks.take();
        self.connect.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send_loop(
    qp: &mut RcQp,
    ring: &mut Region,
    credits: &Region,
    (info, slots): (&LaneRing, u32),
    chunks: &smpsc::Receiver<Vec<u8>>,
    idle: &smpsc::Sender<()>,
    (key, (lane, lanes)): (&ChunkKey, (usize, usize)),
) -> Result<(), RdmaError> {
    let mut free: Vec<u32> = (0..slots).rev().collect();
    // The number of the next chunk on this lane.
    let mut n = lane as u64;
    let mut local = 0u32;
    let mut wcs = Vec::new();
    // Reaps completions; returns after `wait` at most. Credits free remote slots.
    let mut reap = |qp: &mut RcQp, free: &mut Vec<u32>, wait: Duration| -> Result<(), RdmaError> {
        wcs.clear();
        if wait.is_zero() {
            qp.poll(&mut wcs);
        } else {
            qp.poll_wait(&mut wcs, wait)?;
        }
        check(&wcs)?;
        for wc in wcs.iter() {
            if wc.wr_id & (1 << 63) != 0 {
                // A credit arrived in receive buffer wr_id & 0xff.
                let i = (wc.wr_id & 0xff) as usize;
                let slot = u32::from_le_bytes(credits.bytes()[i * CREDIT..i * CREDIT + CREDIT].try_into().expect("4 bytes"));
                if slot >= slots || free.contains(&slot) {
                    return broken(format!("receiver returned slot {slot} twice or out of range"));
                }
                free.push(slot);
                qp.post_recv(wc.wr_id, credits, i * CREDIT, CREDIT)?;
            }
        }
        Ok(())
    };
    loop {
        let Ok(chunk) = chunks.recv() else { return Ok(()) };
        if chunk.is_empty() {
            // Flush: wait until the receiver has handed every slot back.
            let t = Instant::now();
            while free.len() < slots as usize {
                reap(qp, &mut free, Duration::from_millis(200))?;
                if t.elapsed() > STALL {
                    return broken(format!("receiver returned nothing for {} s", STALL.as_secs()));
                }
            }
            let _ = idle.send(());
            continue;
        }
        let t = Instant::now();
        while free.is_empty() {
            reap(qp, &mut free, Duration::from_millis(200))?;
            if t.elapsed() > STALL {
                return broken(format!("no free slot at the receiver for {} s", STALL.as_secs()));
            }
        }
        let slot = free.pop().expect("a free slot");
        // Our own buffer `local` is reused only after its write completed: at most `slots` writes
        // are in flight because at most `slots` remote slots are taken.
        let off = (local % slots) as usize * SLOT_BYTES;
        let len = chunk.len() + TAG;
        ring.bytes_mut()[off..off + chunk.len()].copy_from_slice(&chunk);
        key.seal(n, &mut ring.bytes_mut()[off..off + len]);
        n += lanes as u64;
        qp.post_write_imm(local as u64, ring, off, len, info.rkey, info.addr + slot as u64 * SLOT_BYTES as u64, imm(slot, len))?;
        local = local.wrapping_add(1);
        reap(qp, &mut free, Duration::ZERO)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediate_round_trips() {
        for (s, l) in [(0, 0), (7, SLOT_BYTES), (255, 0x00ff_ffff)] {
            assert_eq!(unimm(imm(s, l)), (s, l));
        }
    }

    fn sealed(key: &ChunkKey, n: u64, data: &[u8]) -> Vec<u8> {
        let mut b = data.to_vec();
        b.resize(data.len() + TAG, 0);
        key.seal(n, &mut b);
        b
    }

    #[test]
    fn chunks_open_only_unaltered_in_their_place_under_their_key() {
        for p in [ChunkProtection::Authenticated, ChunkProtection::Encrypted] {
            let (k, other) = (ChunkKey::new(&[1; 32], p), ChunkKey::new(&[2; 32], p));
            let data: Vec<u8> = (0..SLOT).map(|i| (i * 13 % 251) as u8).collect();
            let s = sealed(&k, 5, &data);
            match p {
                ChunkProtection::Encrypted => assert_ne!(&s[..64], &data[..64], "the data goes encrypted"),
                ChunkProtection::Authenticated => assert_eq!(&s[..SLOT], &data[..], "the data goes in clear"),
            }
            assert_eq!(k.open(5, s.clone()).unwrap(), data);
            // Another place in the stream (reordered or replayed), another key, the other
            // protection, one bit, a cut.
            assert!(k.open(6, s.clone()).is_err(), "{p:?}");
            assert!(k.open(4, s.clone()).is_err(), "{p:?}");
            assert!(other.open(5, s.clone()).is_err(), "{p:?}");
            let flip = match p {
                ChunkProtection::Authenticated => ChunkProtection::Encrypted,
                ChunkProtection::Encrypted => ChunkProtection::Authenticated,
            };
            assert!(ChunkKey::new(&[1; 32], flip).open(5, s.clone()).is_err(), "{p:?} opened as {flip:?}");
            for at in [0, SLOT / 2, SLOT, SLOT + TAG - 1] {
                let mut bad = s.clone();
                bad[at] ^= 1;
                assert!(k.open(5, bad).is_err(), "{p:?}: bit flipped at {at} went unnoticed");
            }
            assert!(k.open(5, s[..s.len() - 1].to_vec()).is_err(), "{p:?}");
            assert!(k.open(5, s[..TAG - 1].to_vec()).is_err(), "{p:?}");
            // An empty chunk is sealed and opened too (only its tag travels).
            assert_eq!(k.open(9, sealed(&k, 9, b"")).unwrap(), b"");
        }
    }
}
