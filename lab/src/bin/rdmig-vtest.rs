//! rdmig-vtest: a verbs test program for lab tests and migration experiments.
//!
//! An RC QP pair between a server and a client. The client sends sequence-numbered, checksummed
//! messages and, every few messages, an RDMA WRITE into the server's memory region followed by a
//! notice carrying the written block's checksum (RC places the WRITE before the notice). The
//! server checks every message and every written block and reports what was lost, duplicated,
//! out of order or corrupted. Both sides print a JSON report on stdout; progress goes to stderr.
//!
//!   server: rdmig-vtest server --listen 10.0.1.11:9100 --gid-index 1
//!   client: rdmig-vtest client --connect 10.0.1.11:9100 --gid-index 1 --count 10000

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};
use rdmig::verbs::control::{recv_line, send_line};
use rdmig::verbs::{Completion, Endpoint, RcConfig, RcQp};
use serde::{Deserialize, Serialize};

const MAGIC: u32 = 0x5244_4d47; // "RDMG"
const HDR: usize = 32;
const PAGE: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Kind {
    Data = 1,
    WriteNotice = 2,
    End = 3,
}

#[derive(Parser)]
#[command(name = "rdmig-vtest", version, about = "Checked RC traffic (SEND and RDMA WRITE) between two hosts")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Args, Clone)]
struct Common {
    #[arg(long, default_value = "rxe0")]
    device: String,
    /// GID index of the address to use (`rdmig rxe gid-index --ip ADDR`).
    #[arg(long)]
    gid_index: u32,
    /// Size of each message, header included.
    #[arg(long, default_value_t = 1024)]
    msg_size: usize,
    /// Size of each RDMA WRITE block.
    #[arg(long, default_value_t = PAGE)]
    write_size: usize,
    /// Poll the CQ instead of sleeping on a completion channel (no channel is created: a
    /// process CRIU with rdmig's plugin can checkpoint).
    #[arg(long)]
    busy_poll: bool,
}

#[derive(Subcommand)]
enum Role {
    /// Accept one client, check its traffic, report.
    Server {
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        common: Common,
        /// Pages in the region the client writes into.
        #[arg(long, default_value_t = 64)]
        mr_pages: usize,
        /// Keep the QP and regions this many seconds after the report (for inspection).
        #[arg(long, default_value_t = 0)]
        linger: u64,
        /// Use several PDs: two spare PDs before the QP's, and one more page registered on a PD
        /// of its own with a lower handle than that PD (for checkpoint/restore tests).
        #[arg(long)]
        spread_pds: bool,
        /// Open the device a second time and keep that verbs context, with a PD, a CQ, a QP
        /// (INIT) and a registered page of its own.
        #[arg(long)]
        second_context: bool,
        /// Hold an SRQ that no QP uses (a process rdmig's CRIU plugin refuses to save).
        #[arg(long)]
        idle_srq: bool,
        /// Let the client write through a memory window (type 1, bound to the written region)
        /// instead of the region's own rkey.
        #[arg(long)]
        mw: bool,
    },
    /// Connect, send checked traffic, report.
    Client {
        #[arg(long)]
        connect: SocketAddr,
        #[command(flatten)]
        common: Common,
        /// Messages to send.
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Every Nth message is an RDMA WRITE plus its notice (0: no writes).
        #[arg(long, default_value_t = 4)]
        write_every: u64,
        /// Write exactly these pages of the server's region (comma separated) instead of the
        /// write_every pattern, then end.
        #[arg(long, value_delimiter = ',')]
        pages: Vec<usize>,
        /// Messages per second (0: as fast as the window allows).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Work requests in flight at most.
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Deliberate faults, to show the checker catches them: skip:SEQ (never sent),
        /// dup:SEQ (sent twice), corrupt:SEQ (payload changed after its checksum),
        /// badwrite:SEQ (the notice carries a wrong checksum). Repeatable.
        #[arg(long = "inject", value_parser = parse_fault)]
        faults: Vec<Fault>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Skip(u64),
    Dup(u64),
    Corrupt(u64),
    BadWrite(u64),
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    let (k, v) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected KIND:SEQ"))?;
    let n: u64 = v.parse().map_err(|_| format!("{s:?}: SEQ must be a number"))?;
    match k {
        "skip" => Ok(Fault::Skip(n)),
        "dup" => Ok(Fault::Dup(n)),
        "corrupt" => Ok(Fault::Corrupt(n)),
        "badwrite" => Ok(Fault::BadWrite(n)),
        _ => Err(format!("{s:?}: KIND is skip, dup, corrupt or badwrite")),
    }
}

/// Exchanged over TCP before the QPs connect.
#[derive(Serialize, Deserialize, Debug)]
struct Hello {
    ep: Endpoint,
    mr_addr: u64,
    mr_rkey: u32,
    mr_len: u64,
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct Report {
    role: String,
    qpn: u32,
    peer_qpn: u32,
    mr_lkey: u32,
    mr_rkey: u32,
    /// rxe's MR index: the key without its low byte.
    mr_index: u32,
    messages: u64,
    received: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    corrupted: u64,
    writes: u64,
    writes_bad: u64,
    wc_errors: u64,
    first_error: Option<String>,
    elapsed_ms: u64,
    ok: bool,
}

use rdmig::verbs::fill_pattern as pattern;

fn put_header(buf: &mut [u8], kind: Kind, seq: u64, slot: u32, len: u32, crc: u32) {
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    buf[12] = kind as u8;
    buf[16..20].copy_from_slice(&slot.to_le_bytes());
    buf[20..24].copy_from_slice(&len.to_le_bytes());
    buf[24..28].copy_from_slice(&crc.to_le_bytes());
}

fn open(c: &Common, spare_pds: u32) -> Result<RcQp> {
    ensure!(c.msg_size >= HDR + 8, "--msg-size must be at least {}", HDR + 8);
    ensure!(c.write_size > 0, "--write-size must be positive");
    Ok(RcQp::open(RcConfig { device: c.device.clone(), gid_index: c.gid_index, events: !c.busy_poll, spare_pds, ..Default::default() })?)
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.role {
        Role::Server { listen, common, mr_pages, linger, spread_pds, second_context, idle_srq, mw } => {
            server(listen, &common, mr_pages, linger, Extras { spread_pds, second_context, idle_srq, mw })
        }
        Role::Client { connect, common, count, write_every, pages, rate, window, faults } => {
            client(connect, &common, count, write_every, &pages, rate, window, &faults)
        }
    };
    match r {
        Ok(rep) => {
            println!("{}", serde_json::to_string_pretty(&rep).expect("report serializes"));
            std::process::exit(if rep.ok { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("rdmig-vtest: error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// What the server holds beyond its QP and regions (for checkpoint/restore tests).
struct Extras {
    spread_pds: bool,
    second_context: bool,
    idle_srq: bool,
    mw: bool,
}

fn server(listen: SocketAddr, c: &Common, mr_pages: usize, linger: u64, x: Extras) -> Result<Report> {
    let mut qp = open(c, if x.spread_pds { 2 } else { 0 })?;
    let rx_depth = 128usize;
    let rx = qp.region(rx_depth * c.msg_size, false)?;
    let target = if x.mw { qp.region_bindable(mr_pages * PAGE)? } else { qp.region(mr_pages * PAGE, true)? };
    let _side = if x.spread_pds { Some(qp.region_on_own_pd(PAGE, false)?) } else { None };
    // A second verbs context: its own uverbs file, PD, CQ, QP (INIT, rings mapped) and MR.
    let _second = if x.second_context {
        let q = open(c, 0)?;
        let r = q.region(PAGE, false)?;
        Some((r, q))
    } else {
        None
    };
    let _srq = if x.idle_srq { Some(qp.idle_srq()?) } else { None };
    let listener = TcpListener::bind(listen).with_context(|| format!("listen on {listen}"))?;
    eprintln!("server: QPN {:#x}, MR lkey {:#x} rkey {:#x}, listening on {listen}", qp.qp_number(), target.lkey(), target.rkey());
    let (sock, peer) = listener.accept()?;
    let mut ctl = BufReader::new(sock.try_clone()?);
    let mut sock = sock;
    let hello: Hello = recv_line(&mut ctl)?;
    for i in 0..rx_depth {
        qp.post_recv(i as u64, &rx, i * c.msg_size, c.msg_size)?;
    }
    // With a memory window, the QP must be in RTS to bind it before the client learns its rkey.
    let mut window = None;
    if x.mw {
        qp.connect(&hello.ep)?;
        let w = qp.bind_window(&target)?;
        eprintln!("server: memory window rkey {:#x} bound to the MR", w.rkey());
        window = Some(w);
    }
    let rkey = window.as_ref().map(|w| w.rkey()).unwrap_or(target.rkey());
    send_line(&mut sock, &Hello { ep: qp.endpoint(), mr_addr: target.addr(), mr_rkey: rkey, mr_len: target.len() as u64 })?;
    if window.is_none() {
        qp.connect(&hello.ep)?;
    }
    eprintln!("server: connected to {peer} (QPN {:#x})", hello.ep.qpn);

    let mut rep = Report {
        role: "server".into(),
        qpn: qp.qp_number(),
        peer_qpn: hello.ep.qpn,
        mr_lkey: target.lkey(),
        mr_rkey: target.rkey(),
        mr_index: target.rkey() >> 8,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut expected = 0u64;
    let mut total: Option<u64> = None;
    let mut wcs: Vec<Completion> = Vec::new();
    let mut payload = vec![0u8; c.msg_size - HDR];
    let mut last_progress = Instant::now();
    let err = |rep: &mut Report, m: String| {
        if rep.first_error.is_none() {
            eprintln!("server: {m}");
            rep.first_error = Some(m);
        }
    };
    while total.is_none() {
        wcs.clear();
        qp.poll_wait(&mut wcs, Duration::from_millis(500))?;
        for wc in &wcs {
            if !wc.ok() {
                rep.wc_errors += 1;
                err(&mut rep, format!("work completion {} failed with status {}", wc.wr_id, wc.status));
                continue;
            }
            let slot = wc.wr_id as usize;
            let m = &rx.bytes()[slot * c.msg_size..(slot + 1) * c.msg_size];
            let magic = u32::from_le_bytes(m[0..4].try_into()?);
            let seq = u64::from_le_bytes(m[4..12].try_into()?);
            let kind = m[12];
            let wslot = u32::from_le_bytes(m[16..20].try_into()?) as usize;
            let len = u32::from_le_bytes(m[20..24].try_into()?) as usize;
            let crc = u32::from_le_bytes(m[24..28].try_into()?);
            rep.received += 1;
            if magic != MAGIC || len > c.msg_size - HDR || wc.byte_len as usize != c.msg_size {
                rep.corrupted += 1;
                err(&mut rep, format!("message with a bad header (seq {seq}, {} bytes)", wc.byte_len));
            } else if kind == Kind::End as u8 {
                total = Some(seq);
            } else {
                // Order and loss: RC delivers in order, exactly once.
                if seq == expected {
                    expected += 1;
                } else if seq < expected {
                    rep.duplicated += 1;
                    err(&mut rep, format!("duplicate seq {seq} (expected {expected})"));
                } else {
                    rep.out_of_order += 1;
                    rep.lost += seq - expected;
                    err(&mut rep, format!("seq {seq} arrived while {expected} was expected"));
                    expected = seq + 1;
                }
                if kind == Kind::Data as u8 {
                    pattern(seq, &mut payload[..len]);
                    let body = &m[HDR..HDR + len];
                    if crc32fast::hash(body) != crc || body != &payload[..len] {
                        rep.corrupted += 1;
                        err(&mut rep, format!("payload of seq {seq} is corrupted"));
                    }
                } else if kind == Kind::WriteNotice as u8 {
                    rep.writes += 1;
                    let off = wslot * c.write_size;
                    let got = target.bytes().get(off..off + c.write_size).map(crc32fast::hash);
                    if got != Some(crc) {
                        rep.writes_bad += 1;
                        err(&mut rep, format!("RDMA WRITE of seq {seq} into slot {wslot} does not match its checksum"));
                    }
                } else {
                    rep.corrupted += 1;
                    err(&mut rep, format!("unknown message kind {kind}"));
                }
            }
            qp.post_recv(wc.wr_id, &rx, slot * c.msg_size, c.msg_size)?;
        }
        if last_progress.elapsed() > Duration::from_secs(1) {
            eprintln!("server: progress {} messages, {} writes", rep.received, rep.writes);
            last_progress = Instant::now();
        }
    }
    let total = total.expect("loop ends with a total");
    if expected < total {
        rep.lost += total - expected;
        err(&mut rep, format!("{} messages never arrived", total - expected));
    }
    rep.messages = total;
    rep.elapsed_ms = t0.elapsed().as_millis() as u64;
    rep.ok = rep.lost == 0 && rep.duplicated == 0 && rep.out_of_order == 0 && rep.corrupted == 0 && rep.writes_bad == 0 && rep.wc_errors == 0;
    send_line(&mut sock, &rep)?;
    if linger > 0 {
        eprintln!("server: lingering {linger} s (MR index {})", rep.mr_index);
        std::thread::sleep(Duration::from_secs(linger));
    }
    Ok(rep)
}

#[allow(clippy::too_many_arguments)] // the client subcommand's options, passed once from main
fn client(connect: SocketAddr, c: &Common, count: u64, write_every: u64, pages: &[usize], rate: u64, window: usize, faults: &[Fault]) -> Result<Report> {
    ensure!((2..=64).contains(&window), "--window must be 2 to 64");
    let mut qp = open(c, 0)?;
    let mut tx = qp.region(window * c.msg_size, false)?;
    let mut wsrc = qp.region(window * c.write_size, false)?;
    let sock = TcpStream::connect(connect).with_context(|| format!("connect to {connect}"))?;
    let mut ctl = BufReader::new(sock.try_clone()?);
    let mut sock = sock;
    send_line(&mut sock, &Hello { ep: qp.endpoint(), mr_addr: 0, mr_rkey: 0, mr_len: 0 })?;
    let hello: Hello = recv_line(&mut ctl)?;
    qp.connect(&hello.ep)?;
    let slots = (hello.mr_len as usize / c.write_size).max(1);
    for &p in pages {
        ensure!((p + 1) * PAGE <= hello.mr_len as usize, "page {p} is outside the server's {}-byte region", hello.mr_len);
    }
    eprintln!("client: QPN {:#x} connected to {:#x}", qp.qp_number(), hello.ep.qpn);

    // In page mode, one WRITE + notice per listed page, page-sized.
    let wsize = if pages.is_empty() { c.write_size } else { PAGE };
    ensure!(wsize <= c.write_size, "--write-size must be at least a page in --pages mode");
    let steps: Vec<(u64, Option<usize>)> = if pages.is_empty() {
        (0..count).map(|s| (s, (write_every > 0 && s % write_every == 0).then(|| (s / write_every.max(1)) as usize % slots))).collect()
    } else {
        pages.iter().enumerate().map(|(i, &p)| (i as u64, Some(p))).collect()
    };
    let count = steps.len() as u64;

    let mut rep = Report { role: "client".into(), qpn: qp.qp_number(), peer_qpn: hello.ep.qpn, ..Default::default() };
    let t0 = Instant::now();
    let mut inflight = 0usize;
    let mut next_slot = 0usize;
    let mut wcs: Vec<Completion> = Vec::new();
    let mut reap = |qp: &RcQp, inflight: &mut usize, rep: &mut Report, block: bool| -> Result<()> {
        wcs.clear();
        if block {
            let deadline = Instant::now() + Duration::from_secs(120);
            while qp.poll_wait(&mut wcs, Duration::from_millis(500))? == 0 {
                ensure!(Instant::now() < deadline, "no completion for 120 s ({} in flight)", inflight);
            }
        } else {
            qp.poll(&mut wcs);
        }
        for wc in &wcs {
            *inflight -= 1;
            if !wc.ok() {
                rep.wc_errors += 1;
                if rep.first_error.is_none() {
                    rep.first_error = Some(format!("work request {} failed with status {}", wc.wr_id, wc.status));
                }
            }
        }
        Ok(())
    };
    let mut last_progress = Instant::now();
    let mut plan: Vec<(u64, Option<usize>)> = Vec::with_capacity(steps.len() + 2);
    for &(seq, w) in &steps {
        if faults.contains(&Fault::Skip(seq)) {
            continue;
        }
        plan.push((seq, w));
        if faults.contains(&Fault::Dup(seq)) {
            plan.push((seq, w));
        }
    }
    plan.push((count, None));
    for (seq, write) in plan {
        let end = seq == count;
        let need = if write.is_some() { 2 } else { 1 };
        while inflight + need > window {
            reap(&qp, &mut inflight, &mut rep, true)?;
        }
        if rep.wc_errors > 0 {
            bail!("{}", rep.first_error.clone().unwrap_or_default());
        }
        if rate > 0 {
            let due = t0 + Duration::from_secs_f64(seq as f64 / rate as f64);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        let slot = next_slot;
        // A slot is reused only after `window` steps, and fewer than `window` are ever in flight.
        next_slot = (next_slot + 1) % window;
        let moff = slot * c.msg_size;
        let (kind, wslot, len, crc) = if end {
            (Kind::End, 0, 0, 0)
        } else if let Some(ws) = write {
            let woff = slot * c.write_size;
            let block = &mut wsrc.bytes_mut()[woff..woff + wsize];
            pattern(seq ^ 0xA5A5_0000, block);
            let mut crc = crc32fast::hash(block);
            if faults.contains(&Fault::BadWrite(seq)) {
                crc ^= 1;
            }
            qp.post_write(seq << 1 | 1, &wsrc, woff, wsize, hello.mr_rkey, hello.mr_addr + (ws * wsize) as u64)?;
            inflight += 1;
            rep.writes += 1;
            (Kind::WriteNotice, ws as u32, 0, crc)
        } else {
            let body = &mut tx.bytes_mut()[moff + HDR..moff + c.msg_size];
            pattern(seq, body);
            let crc = crc32fast::hash(body);
            if faults.contains(&Fault::Corrupt(seq)) {
                body[0] ^= 0xff;
            }
            (Kind::Data, 0, body.len() as u32, crc)
        };
        put_header(&mut tx.bytes_mut()[moff..moff + HDR], kind, seq, wslot, len, crc);
        qp.post_send(seq << 1, &tx, moff, c.msg_size)?;
        inflight += 1;
        if !end {
            rep.messages += 1;
        }
        reap(&qp, &mut inflight, &mut rep, false)?;
        if last_progress.elapsed() > Duration::from_secs(1) {
            eprintln!("client: progress {seq}/{count}");
            last_progress = Instant::now();
        }
    }
    while inflight > 0 {
        reap(&qp, &mut inflight, &mut rep, true)?;
    }
    let server: Report = recv_line(&mut ctl)?;
    rep.elapsed_ms = t0.elapsed().as_millis() as u64;
    rep.received = server.received;
    rep.lost = server.lost;
    rep.duplicated = server.duplicated;
    rep.out_of_order = server.out_of_order;
    rep.corrupted = server.corrupted;
    rep.writes_bad = server.writes_bad;
    rep.mr_rkey = hello.mr_rkey;
    rep.mr_index = hello.mr_rkey >> 8;
    if rep.first_error.is_none() {
        rep.first_error = server.first_error.clone();
    }
    rep.ok = server.ok && rep.wc_errors == 0 && server.messages == count;
    Ok(rep)
}
