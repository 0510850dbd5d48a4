//! rdmig-qpmig: application-level migration of one RC QP with rdmig's rdma_rxe (patch 0006).
//!
//! A `peer` and a `mover` exchange sequence-numbered, checksummed SEND messages in both
//! directions. After `--stop-after` messages the mover stops its QP (the peer gets PAUSE), dumps
//! the QP state, writes it with its own state (counters, buffers, numbers) to `--state FILE`,
//! destroys everything and exits. `mover --resume FILE`, started anywhere (another node, the
//! overlay address moved there), recreates PD, CQ, QP and MRs with the same numbers and buffer
//! addresses (EXPECT through /dev/rxe_ctl), restores the QP state, sends RESUME and carries on. Both
//! sides check that every message arrives once, in order and intact, and that no work request
//! fails; each prints a JSON report on stdout and exits 1 if anything went wrong.
//!
//!   node1: rdmig-qpmig peer  --listen 10.0.1.11:9200 --gid-index 1 --count 2000
//!   node2: rdmig-qpmig mover --connect 10.0.1.11:9200 --gid-index 1 --count 2000 \
//!              --stop-after 500 --state /mnt/lab/qp.state
//!   node3: rdmig-qpmig mover --resume /mnt/lab/qp.state --gid-index 1
//!
//! A resumed mover given `--state` stops and dumps again after `--stop-after` messages in all, so
//! the same QP can migrate any number of times.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::{Args, Parser, Subcommand};
use rdmig::verbs::control::{recv_line, send_line};
use rdmig::verbs::{Completion, Endpoint, RcConfig, RcQp, Region};
use rdmig_rxe::{Ctl, Obj, QpMigState, QP_F_CQ, QP_F_DROP_FIRST, QP_F_LATE_PAUSE};
use serde::{Deserialize, Serialize};

const MAGIC: u32 = 0x5150_4d47; // "GMPQ"
const HDR: usize = 24;
/// Receive buffers posted at any time; the sender relies on RNR retries (unlimited) beyond that.
const RECV_SLOTS: usize = 64;
/// Sends in flight at most.
const SEND_SLOTS: usize = 16;
const RECV_TAG: u64 = 1 << 62;
const STATE_MAGIC: &[u8; 8] = b"RDMIGQP1";

#[derive(Parser)]
#[command(name = "rdmig-qpmig", version, about = "Migrate an RC QP mid-transfer (rdmig's rdma_rxe)")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Args, Clone, Serialize, Deserialize, Debug)]
struct Common {
    #[arg(long, default_value = "rxe0")]
    device: String,
    /// GID index of the local address (`rdmig rxe gid-index --ip ADDR`).
    #[arg(long)]
    gid_index: u32,
    /// Messages each side sends.
    #[arg(long, default_value_t = 2000)]
    count: u64,
    /// Size of each message, header included.
    #[arg(long, default_value_t = 512)]
    msg_size: usize,
    /// Messages per second each side sends (0: as fast as possible). Paced, so that a stop
    /// finds messages in flight both ways, at a rate the lab's emulated nodes keep up with.
    #[arg(long, default_value_t = 400)]
    rate: u64,
    /// Keep the QP this long after finishing, so the last acknowledgements reach the other side.
    #[arg(long, default_value_t = 2)]
    linger: u64,
}

#[derive(Subcommand)]
enum Role {
    /// The side that stays: accept one mover, exchange checked messages, report.
    Peer {
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        common: Common,
        /// Local ACK timeout exponent (4.096 us * 2^N); with a small --retry-cnt this makes the
        /// retry window short, to show that a paused QP does not spend it.
        #[arg(long, default_value_t = 14)]
        timeout: u8,
        #[arg(long, default_value_t = 7)]
        retry_cnt: u8,
        /// Send nothing until this many messages arrived from the mover (a silent peer).
        #[arg(long, default_value_t = 0)]
        send_after: u64,
        /// Stop at the first failed work request and report (a mover that never comes back:
        /// the QP's retries run out once its pause ends).
        #[arg(long)]
        stop_on_error: bool,
        /// Give up when not done after this many seconds.
        #[arg(long, default_value_t = 300)]
        deadline: u64,
    },
    /// The side that moves.
    Mover {
        /// Connect to a peer (first life). Without it, --resume is required.
        #[arg(long, required_unless_present = "resume")]
        connect: Option<SocketAddr>,
        #[command(flatten)]
        common: Common,
        /// Stop and dump after this many messages were sent in all (first life: and at least this
        /// many received, unless the peer is silent: see --stop-recv). A resumed mover only stops
        /// again if --state is given.
        #[arg(long, default_value_t = 500)]
        stop_after: u64,
        /// First life: also wait for this many received messages before stopping.
        #[arg(long)]
        stop_recv: Option<u64>,
        /// Where to write the state at the stop. With --resume: stop again after --stop-after
        /// messages and write the state here (another migration of the same QP).
        #[arg(long, required_unless_present = "resume")]
        state: Option<PathBuf>,
        /// Second life: restore from this state file and continue.
        #[arg(long, conflicts_with = "connect")]
        resume: Option<PathBuf>,
        /// Second life: restore into the QP while it is only in RTR, resume, keep receiving for
        /// this many seconds, then move to RTS.
        #[arg(long)]
        rtr_secs: Option<u64>,
        /// Second life: the first RESUME packet is not sent (fault injection; it must be retried).
        #[arg(long)]
        drop_first_resume: bool,
        /// Second life: right after the RESUME_ACK the QP sends one PAUSE of the stop it resumed
        /// from, which reaches the peer after the RESUME, as a late PAUSE of the old QP would
        /// (fault injection: the peer must ignore it).
        #[arg(long)]
        late_pause: bool,
        #[arg(long, default_value_t = 300)]
        deadline: u64,
    },
    /// Print the migration state and protocol counters of a QP (QP_QUERY) as JSON, e.g. to see
    /// whether the peer is paused while the mover is stopped.
    Query {
        #[arg(long, default_value = "rxe0")]
        device: String,
        #[arg(long)]
        qpn: u32,
    },
}

#[derive(Serialize, Deserialize, Debug)]
struct Hello {
    ep: Endpoint,
}

/// What the mover carries from one life to the next, besides the kernel's QP image.
#[derive(Serialize, Deserialize, Debug)]
struct MoverState {
    common: Common,
    peer: Endpoint,
    qpn: u32,
    send_addr: u64,
    send_lkey: u32,
    send_len: usize,
    recv_addr: u64,
    recv_lkey: u32,
    recv_len: usize,
    progress: Progress,
    stopped_at_ms: u64,
    /// The life that wrote this state (1: the first; absent in older files).
    #[serde(default)]
    life: u32,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct Progress {
    /// Next sequence number to send.
    next_send: u64,
    /// Sends completed.
    sent_done: u64,
    /// Send slots in flight (wr_id = seq).
    in_flight: Vec<u64>,
    /// Next sequence number expected.
    next_recv: u64,
    /// Receive slots posted (wr_id = RECV_TAG | slot).
    posted: Vec<u32>,
    bad: u64,
    wc_errors: u64,
    first_error: Option<String>,
}

#[derive(Serialize, Debug, Default)]
struct Report {
    role: String,
    qpn: u32,
    peer_qpn: u32,
    sent: u64,
    received: u64,
    bad: u64,
    wc_errors: u64,
    first_error: Option<String>,
    /// The mover's life: 1 before the migration, 2 after.
    life: u32,
    mig: Option<QpMigState>,
    /// Mover, second life: milliseconds between the stop and the first message received again.
    downtime_ms: Option<u64>,
    elapsed_ms: u64,
    ok: bool,
}

use rdmig::verbs::fill_pattern as pattern;

/// Direction: 1 = mover to peer, 2 = peer to mover.
fn fill(buf: &mut [u8], dir: u32, seq: u64) {
    pattern(seq ^ ((dir as u64) << 56), &mut buf[HDR..]);
    let crc = crc32fast::hash(&buf[HDR..]);
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&dir.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    let len = buf.len() as u32;
    buf[16..20].copy_from_slice(&len.to_le_bytes());
    buf[20..24].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a received message; returns a description of what is wrong.
fn check(buf: &[u8], dir: u32, expect: u64) -> Option<String> {
    let u32at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
    if u32at(0) != MAGIC || u32at(4) != dir {
        return Some(format!("message {expect}: bad header"));
    }
    let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    if seq != expect {
        return Some(format!("expected message {expect}, got {seq} (lost, duplicated or out of order)"));
    }
    if u32at(16) as usize != buf.len() || crc32fast::hash(&buf[HDR..]) != u32at(20) {
        return Some(format!("message {seq}: corrupted"));
    }
    let mut want = vec![0u8; buf.len()];
    fill(&mut want, dir, seq);
    if want != buf {
        return Some(format!("message {seq}: payload differs"));
    }
    None
}

/// One side of the exchange: the QP, its two regions and where it stands.
struct Side {
    qp: RcQp,
    sbuf: Region,
    rbuf: Region,
    msg: usize,
    my_dir: u32,
    p: Progress,
    first_recv_at: Option<Instant>,
}

impl Side {
    fn note(&mut self, e: String) {
        eprintln!("rdmig-qpmig: {e}");
        if self.p.first_error.is_none() {
            self.p.first_error = Some(e);
        }
    }

    fn post_recv_slot(&mut self, slot: u32) -> Result<()> {
        self.qp.post_recv(RECV_TAG | slot as u64, &self.rbuf, slot as usize * self.msg, self.msg)?;
        self.p.posted.push(slot);
        Ok(())
    }

    fn send_next(&mut self) -> Result<()> {
        let seq = self.p.next_send;
        let slot = (seq % SEND_SLOTS as u64) as usize;
        let off = slot * self.msg;
        let msg = self.msg;
        fill(&mut self.sbuf.bytes_mut()[off..off + msg], self.my_dir, seq);
        self.qp.post_send(seq, &self.sbuf, off, msg)?;
        self.p.in_flight.push(seq);
        self.p.next_send += 1;
        Ok(())
    }

    fn handle(&mut self, wcs: &[Completion]) -> Result<()> {
        for wc in wcs {
            if !wc.ok() {
                self.p.wc_errors += 1;
                self.note(format!("work request {:#x} failed: status {} opcode {}", wc.wr_id, wc.status, wc.opcode));
                continue;
            }
            if wc.wr_id & RECV_TAG != 0 {
                let slot = (wc.wr_id & 0xffff_ffff) as u32;
                self.p.posted.retain(|s| *s != slot);
                let off = slot as usize * self.msg;
                let peer_dir = 3 - self.my_dir;
                if wc.byte_len as usize != self.msg {
                    self.p.bad += 1;
                    let e = format!("message {}: {} bytes instead of {}", self.p.next_recv, wc.byte_len, self.msg);
                    self.note(e);
                } else if let Some(e) = check(&self.rbuf.bytes()[off..off + self.msg], peer_dir, self.p.next_recv) {
                    self.p.bad += 1;
                    self.note(e);
                }
                self.p.next_recv += 1;
                self.first_recv_at.get_or_insert_with(Instant::now);
                self.post_recv_slot(slot)?;
            } else {
                self.p.in_flight.retain(|s| *s != wc.wr_id);
                self.p.sent_done += 1;
            }
        }
        Ok(())
    }

    /// Sends (paced) and receives until `until` says stop, or the deadline passes.
    fn run(&mut self, count: u64, rate: u64, may_send: impl Fn(&Progress) -> bool, until: impl Fn(&Progress) -> bool, deadline: Instant) -> Result<()> {
        let start = Instant::now();
        let base = self.p.next_send;
        let mut wcs = Vec::new();
        while !until(&self.p) {
            ensure!(Instant::now() < deadline, "deadline passed: {:?}", self.p_summary());
            let due = if rate == 0 { u64::MAX } else { base + start.elapsed().as_millis() as u64 * rate / 1000 + 1 };
            while self.p.next_send < count && self.p.next_send < due && self.p.in_flight.len() < SEND_SLOTS && may_send(&self.p) {
                self.send_next()?;
            }
            wcs.clear();
            let wait = 1000u64.checked_div(rate).map_or(200, |w| w.clamp(1, 50));
            self.qp.poll_wait(&mut wcs, Duration::from_millis(wait))?;
            let batch = std::mem::take(&mut wcs);
            self.handle(&batch)?;
            wcs = batch;
        }
        Ok(())
    }

    fn p_summary(&self) -> String {
        format!(
            "sent {} (done {}), received {}, in flight {}, bad {}, wc errors {}",
            self.p.next_send,
            self.p.sent_done,
            self.p.next_recv,
            self.p.in_flight.len(),
            self.p.bad,
            self.p.wc_errors
        )
    }

    fn linger(&mut self, secs: u64) -> Result<()> {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut wcs = Vec::new();
        while Instant::now() < end {
            wcs.clear();
            self.qp.poll_wait(&mut wcs, Duration::from_millis(100))?;
            let batch = std::mem::take(&mut wcs);
            self.handle(&batch)?;
        }
        Ok(())
    }
}

fn cfg(c: &Common) -> RcConfig {
    RcConfig { device: c.device.clone(), gid_index: c.gid_index, ..Default::default() }
}

fn new_side(c: &Common, my_dir: u32) -> Result<Side> {
    ensure!(c.msg_size >= HDR + 8, "--msg-size must be at least {}", HDR + 8);
    let qp = RcQp::open(cfg(c))?;
    let sbuf = qp.region(SEND_SLOTS * c.msg_size, false)?;
    let rbuf = qp.region(RECV_SLOTS * c.msg_size, false)?;
    let mut s = Side { qp, sbuf, rbuf, msg: c.msg_size, my_dir, p: Progress::default(), first_recv_at: None };
    for slot in 0..RECV_SLOTS as u32 {
        s.post_recv_slot(slot)?;
    }
    Ok(s)
}

fn done(p: &Progress, count: u64) -> bool {
    p.next_recv >= count && p.sent_done >= count
}

fn peer(listen: SocketAddr, c: &Common, timeout: u8, retry_cnt: u8, send_after: u64, stop_on_error: bool, deadline: u64) -> Result<Report> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(deadline);
    let mut side = new_side(c, 2)?;
    let l = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    let (mut s, from) = l.accept()?;
    eprintln!("rdmig-qpmig peer: mover from {from}");
    let mut r = BufReader::new(s.try_clone()?);
    let hello: Hello = recv_line(&mut r)?;
    send_line(&mut s, &Hello { ep: side.qp.endpoint() })?;
    side.qp.connect_with(&hello.ep, timeout, retry_cnt)?;
    // The mover starts sending once it has our endpoint; it closes the connection when it dies.
    drop(r);
    drop(s);
    let count = c.count;
    side.run(count, c.rate, |p| p.next_recv >= send_after, |p| done(p, count) || (stop_on_error && p.wc_errors > 0), deadline)?;
    side.linger(c.linger)?;
    let p = &side.p;
    Ok(Report {
        role: "peer".into(),
        qpn: side.qp.qp_number(),
        peer_qpn: hello.ep.qpn,
        sent: p.sent_done,
        received: p.next_recv,
        bad: p.bad,
        wc_errors: p.wc_errors,
        first_error: p.first_error.clone(),
        life: 0,
        mig: Ctl::open().ok().and_then(|ctl| ctl.qp_query(&c.device, side.qp.qp_number()).ok()),
        downtime_ms: None,
        elapsed_ms: t0.elapsed().as_millis() as u64,
        ok: p.bad == 0 && p.wc_errors == 0 && p.next_recv == count && p.sent_done == count,
    })
}

fn write_state(path: &Path, st: &MoverState, image: &[u8], sbuf: &[u8], rbuf: &[u8]) -> Result<()> {
    let head = serde_json::to_vec(st)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    f.write_all(STATE_MAGIC)?;
    for part in [&head[..], image, sbuf, rbuf] {
        f.write_all(&(part.len() as u64).to_le_bytes())?;
        f.write_all(part)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// A saved mover: its state and the three byte regions saved beside it.
type SavedMover = (MoverState, Vec<u8>, Vec<u8>, Vec<u8>);

fn read_state(path: &Path) -> Result<SavedMover> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut m = [0u8; 8];
    f.read_exact(&mut m)?;
    ensure!(&m == STATE_MAGIC, "{} is not an rdmig-qpmig state file", path.display());
    let mut parts = Vec::new();
    for _ in 0..4 {
        let mut l = [0u8; 8];
        f.read_exact(&mut l)?;
        let n = u64::from_le_bytes(l);
        ensure!(n < 1 << 30, "{}: corrupt part length {n}", path.display());
        let mut v = vec![0u8; n as usize];
        f.read_exact(&mut v)?;
        parts.push(v);
    }
    let rbuf = parts.pop().unwrap();
    let sbuf = parts.pop().unwrap();
    let image = parts.pop().unwrap();
    let st: MoverState = serde_json::from_slice(&parts.pop().unwrap()).context("state header")?;
    Ok((st, image, sbuf, rbuf))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn mover_first(connect: SocketAddr, c: &Common, stop_after: u64, stop_recv: Option<u64>, state: &Path, deadline: u64) -> Result<Report> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(deadline);
    ensure!(stop_after < c.count, "--stop-after must be below --count");
    let ctl = Ctl::open()?;
    let mut side = new_side(c, 1)?;
    let mut s = TcpStream::connect(connect).with_context(|| format!("connect to {connect}"))?;
    let mut r = BufReader::new(s.try_clone()?);
    send_line(&mut s, &Hello { ep: side.qp.endpoint() })?;
    let hello: Hello = recv_line(&mut r)?;
    side.qp.connect(&hello.ep)?;
    let want_recv = stop_recv.unwrap_or(0);
    let count = c.count;
    side.run(count, c.rate, |p| p.next_send < stop_after, |p| p.next_send >= stop_after && p.next_recv >= want_recv, deadline)?;
    stop_and_save(&ctl, side, c, hello.ep, state, 1, t0, None)
}

/// Stops the QP of `side`, dumps it, writes the state file for the next life and destroys
/// everything; reports life `life`.
#[allow(clippy::too_many_arguments)]
fn stop_and_save(ctl: &Ctl, side: Side, c: &Common, peer: Endpoint, state: &Path, life: u32, t0: Instant, downtime_ms: Option<u64>) -> Result<Report> {
    // Stop: from here on the kernel neither sends nor completes anything for this QP, and we
    // poll no more, so the QP image, the CQ ring and our own progress agree.
    let qpn = side.qp.qp_number();
    let stopped_at_ms = now_ms();
    ctl.qp_stop(&c.device, qpn)?;
    let image = ctl.qp_dump(&c.device, qpn, 0)?;
    let peer_qpn = peer.qpn;
    let st = MoverState {
        common: c.clone(),
        peer,
        qpn,
        send_addr: side.sbuf.addr(),
        send_lkey: side.sbuf.lkey(),
        send_len: side.sbuf.len(),
        recv_addr: side.rbuf.addr(),
        recv_lkey: side.rbuf.lkey(),
        recv_len: side.rbuf.len(),
        progress: side.p.clone(),
        stopped_at_ms,
        life,
    };
    write_state(state, &st, &image, side.sbuf.bytes(), side.rbuf.bytes())?;
    let mig = ctl.qp_query(&c.device, qpn)?;
    eprintln!(
        "rdmig-qpmig mover: stopped QP {qpn} after {} sent / {} received, {} bytes of QP state in {}",
        side.p.next_send,
        side.p.next_recv,
        image.len(),
        state.display()
    );
    let p = side.p.clone();
    drop(side); // destroys QP, MRs, CQ, PD
    Ok(Report {
        role: "mover".into(),
        qpn,
        peer_qpn,
        sent: p.sent_done,
        received: p.next_recv,
        bad: p.bad,
        wc_errors: p.wc_errors,
        first_error: p.first_error,
        life,
        mig: Some(mig),
        downtime_ms,
        elapsed_ms: t0.elapsed().as_millis() as u64,
        ok: p.bad == 0 && p.wc_errors == 0,
    })
}

/// What a resumed mover does besides restoring.
struct ResumeOpts {
    rtr_secs: Option<u64>,
    drop_first: bool,
    late_pause: bool,
    /// Stop again after this many messages sent in all and write the state here.
    stop: Option<(u64, PathBuf)>,
}

fn mover_second(path: &Path, gid_index: u32, o: &ResumeOpts, deadline: u64) -> Result<Report> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(deadline);
    let rtr_secs = o.rtr_secs;
    let (st, image, sbytes, rbytes) = read_state(path)?;
    let life = st.life.max(1) + 1;
    if let Some((stop_after, _)) = &o.stop {
        ensure!(
            *stop_after > st.progress.next_send && *stop_after < st.common.count,
            "--stop-after must be above the {} messages already sent and below --count",
            st.progress.next_send
        );
    }
    let mut c = st.common.clone();
    c.gid_index = gid_index;
    let ctl = Ctl::open()?;
    let dev = c.device.clone();
    let key = |lkey: u32| Some((lkey & 0xff) as u8);

    // Same numbers: the QP, then the two MRs, in the order we create them.
    ctl.expect(Obj::Qp, 0, st.qpn, None, &dev, false)?;
    let mut qp = RcQp::open(cfg(&c)).context("recreate the QP with its old number")?;
    ensure!(qp.qp_number() == st.qpn, "got QP {} instead of {}", qp.qp_number(), st.qpn);
    ctl.expect(Obj::Mr, 0, st.send_lkey >> 8, key(st.send_lkey), &dev, false)?;
    let mut sbuf = qp.region_at(st.send_addr, st.send_len, false)?;
    ctl.expect(Obj::Mr, 0, st.recv_lkey >> 8, key(st.recv_lkey), &dev, false)?;
    let mut rbuf = qp.region_at(st.recv_addr, st.recv_len, false)?;
    ensure!(sbuf.lkey() == st.send_lkey && rbuf.lkey() == st.recv_lkey, "MR keys differ after EXPECT");
    ensure!(sbytes.len() == sbuf.len() && rbytes.len() == rbuf.len(), "buffer sizes differ");
    sbuf.bytes_mut().copy_from_slice(&sbytes);
    rbuf.bytes_mut().copy_from_slice(&rbytes);

    qp.connect_rtr(&st.peer)?;
    if rtr_secs.is_none() {
        qp.to_rts(14, 7)?;
    }
    ctl.qp_restore(&dev, st.qpn, &image, QP_F_CQ).context("restore the QP state")?;
    let resumed_at = Instant::now();
    let flags = if o.drop_first { QP_F_DROP_FIRST } else { 0 } | if o.late_pause { QP_F_LATE_PAUSE } else { 0 };
    ctl.qp_resume(&dev, st.qpn, flags)?;
    eprintln!("rdmig-qpmig mover: QP {} restored and resumed ({} since the stop)", st.qpn, now_ms().saturating_sub(st.stopped_at_ms));

    let mut side = Side { qp, sbuf, rbuf, msg: c.msg_size, my_dir: 1, p: st.progress.clone(), first_recv_at: None };
    let count = c.count;
    if let Some(secs) = rtr_secs {
        // In RTR we can receive but not send: the peer's retransmissions and new messages land here.
        let until = resumed_at + Duration::from_secs(secs);
        side.run(count, c.rate, |_| false, |_| Instant::now() >= until, deadline)?;
        let received_in_rtr = side.p.next_recv - st.progress.next_recv;
        eprintln!("rdmig-qpmig mover: {received_in_rtr} messages received in RTR; moving to RTS");
        side.qp.to_rts(14, 7)?;
    }
    let downtime = |side: &Side| {
        side.first_recv_at.map(|t| {
            let since_resume = t.duration_since(resumed_at).as_millis() as u64;
            let stop_to_resume = now_ms().saturating_sub(st.stopped_at_ms).saturating_sub(resumed_at.elapsed().as_millis() as u64);
            stop_to_resume + since_resume
        })
    };
    if let Some((stop_after, state)) = &o.stop {
        let stop_after = *stop_after;
        side.run(count, c.rate, |p| p.next_send < stop_after, |p| p.next_send >= stop_after, deadline)?;
        let downtime_ms = downtime(&side);
        return stop_and_save(&ctl, side, &c, st.peer, state, life, t0, downtime_ms);
    }
    side.run(count, c.rate, |_| true, |p| done(p, count), deadline)?;
    side.linger(c.linger)?;
    let mig = ctl.qp_query(&dev, st.qpn)?;
    let p = &side.p;
    let downtime_ms = downtime(&side);
    Ok(Report {
        role: "mover".into(),
        qpn: st.qpn,
        peer_qpn: st.peer.qpn,
        sent: p.sent_done,
        received: p.next_recv,
        bad: p.bad,
        wc_errors: p.wc_errors,
        first_error: p.first_error.clone(),
        life,
        mig: Some(mig),
        downtime_ms,
        elapsed_ms: t0.elapsed().as_millis() as u64,
        ok: p.bad == 0 && p.wc_errors == 0 && p.next_recv == count && p.sent_done == count,
    })
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.role {
        Role::Query { device, qpn } => {
            match Ctl::open().and_then(|ctl| ctl.qp_query(&device, qpn)) {
                Ok(st) => println!("{}", serde_json::to_string(&st).unwrap_or_default()),
                Err(e) => {
                    eprintln!("rdmig-qpmig: error: {e}");
                    std::process::exit(2);
                }
            }
            return;
        }
        Role::Peer { listen, common, timeout, retry_cnt, send_after, stop_on_error, deadline } => {
            peer(listen, &common, timeout, retry_cnt, send_after, stop_on_error, deadline)
        }
        Role::Mover { connect, common, stop_after, stop_recv, state, resume, rtr_secs, drop_first_resume, late_pause, deadline } => {
            match (connect, state, resume) {
                (_, state, Some(path)) => {
                    let o = ResumeOpts { rtr_secs, drop_first: drop_first_resume, late_pause, stop: state.map(|s| (stop_after, s)) };
                    mover_second(&path, common.gid_index, &o, deadline)
                }
                (Some(addr), Some(state), None) => mover_first(addr, &common, stop_after, stop_recv, &state, deadline),
                _ => Err(anyhow::anyhow!("mover needs --connect and --state, or --resume")),
            }
        }
    };
    match r {
        Ok(rep) => {
            println!("{}", serde_json::to_string(&rep).unwrap_or_default());
            if !rep.ok {
                eprintln!("rdmig-qpmig: FAILED: {}", rep.first_error.as_deref().unwrap_or("incomplete transfer"));
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("rdmig-qpmig: error: {e:#}");
            std::process::exit(2);
        }
    }
}
