//! rdmig-workload: a memory workload whose every byte can be checked, for migration tests.
//!
//! It maps `--mem` bytes, fills each page with a pattern derived from (seed, page, generation),
//! then dirties pages at `--dirty-rate` bytes per second, bumping their generation and rewriting
//! them. On SIGUSR1 it checks every page and writes a JSON report; on SIGTERM it checks, reports
//! and exits (0 if every page was right). A page that lost an update, came from an earlier dump,
//! was swapped with another page or was corrupted does not match its expected pattern.
//!
//! It is built to be checkpointed by CRIU: one thread, no files kept open, no sockets, no
//! timers, and a pause of any length (a freeze, a migration) does not make it "catch up".
//!
//! With `--rdma-listen` its region is also an RDMA memory region that a peer (`rdmig-workload
//! peer`, on another node) writes by RDMA WRITE: each write is followed on the same RC QP by a
//! SEND naming it, so the notice arrives after the data, and the check covers those pages too.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use rdmig::verbs::control::{recv_line, send_line};
use rdmig::verbs::{Completion, Endpoint, RcConfig, RcQp, Registration};
use serde::{Deserialize, Serialize};

const LONG_ABOUT: &str = "\
A memory workload for migration tests and experiments.

It maps --mem bytes of private anonymous memory, split into pages of --page-size bytes, and fills
every page with a pattern: each 8-byte word is a hash of (seed, page index, page generation, word
index). A per-page generation counter (an array in the process's own memory) says which pattern
each page must hold. It then loops forever: every ~10 ms it picks pages (pseudo-randomly, from the
seed and a step counter), bumps their generation and rewrites them, at --dirty-rate bytes per
second on average (0: never dirty after the fill). After a pause (a freeze, a migration) it does
not try to catch up: at most 100 ms of dirtying is owed at any time.

Signals:
  SIGUSR1          check every page, write the report (phase \"verify\"), keep running
  SIGTERM, SIGINT  check every page, write the report, exit 0 if ok, 1 if not

The report (JSON, written to a temporary file then renamed over --report, so a reader never sees
half of one) is also written once right after the fill, with phase \"filled\", so a test can wait
for the file to know the workload is ready. Fields: phase, pid, pages, page_size, mem_bytes,
seed, dirty_rate, verified_pages (pages checked), bad_pages, first_bad_page, first_bad (page,
word, expected_generation, found_generation if the page holds an older generation of itself, zero
if it is all zeros), generations_total (sum of all generations), dirtied_pages_total,
dirtied_bytes_total, counters_consistent (generations_total == dirtied_pages_total), reports,
verify_ms, uptime_ms (wall clock, so it stays meaningful after a restore on another host), ok.

CRIU: one thread, no file kept open but stdio (point it at /dev/null), no sockets, no timers but
sleeps. Sizes take K, M, G, T suffixes (powers of 1024): 256M, 8M, 1G.

--self-test fills a small region, damages it on purpose in several ways (a flipped bit, a lost
update, a zeroed page, a page copied over another, a lost RDMA WRITE, a lost notice, a peer's
write count the workload never saw) and exits 0 only if the checker caught each.

RDMA (--rdma-listen ADDR:PORT --gid-index N [--qps Q]): the whole region is registered as one
memory region (remote write), on Q RC QPs (default 1) polled from the main loop (no completion
channel, so rdmig's CRIU plugin can save it). The first --rdma-mem bytes (default half of --mem) belong to the peer: the
workload's own dirtying never touches them. It listens on ADDR:PORT (TCP) after the fill, takes
one peer (`rdmig-workload peer --connect ADDR:PORT`, which opens as many QPs), exchanges QP
endpoints and the region's address and key, and closes both sockets: from then on it holds no
socket, and ADDR (an address that moves with the process, --move-addr) only matters as the QPs'
GID. With Q QPs the peer's pages are split into Q slices (lanes), one per QP, and its writes go
to the lanes in turn; each lane is checked on its own, as one QP is. A lane's n-th write goes
to its page n mod P (P = the lane's pages) with generation n div P + 1, and is followed on the
same QP by a SEND carrying n; the workload applies a lane's notices in order (a gap is an
error). A check first applies what has arrived, and takes a page that holds its next generation
as a write still in flight (RC places a WRITE before its notice). After the peer's last write it
sends each lane's total on its QP; the workload then requires that every one of them was
applied. The report gets an \"rdma\" object: qps, peer_pages, writes_applied, peer_total,
peer_end, in_flight_pages, notice_errors, wc_errors, first_error, ok.

The peer (`rdmig-workload peer --connect ADDR:PORT --gid-index N --rate 4M --report PATH`)
writes --rate bytes per second (whole pages; no catching up after a pause), keeps at most
--window work requests in flight, and on SIGTERM stops, waits for every completion, sends its
total and writes its report: writes_posted, writes_completed, wc_errors, max_gap_ms (the longest
time it waited for a completion: what it saw of a migration), max_gap_end_unix_ms, ok.

Exit status: 0 all pages checked good, 1 a check failed (or the last report could not be
written), 2 usage or setup error.";

#[derive(Parser, Debug)]
#[command(name = "rdmig-workload", version, about = "A checkable memory workload for migration tests", long_about = LONG_ABOUT)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Memory to map and fill (rounded up to whole pages), e.g. 256M.
    #[arg(long, value_parser = parse_size, required_unless_present = "self_test")]
    mem: Option<u64>,
    /// Bytes per second to dirty after the fill, e.g. 8M (0: never).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    dirty_rate: u64,
    /// Where to write the JSON report.
    #[arg(long, required_unless_present = "self_test")]
    report: Option<PathBuf>,
    /// Size of a checked page: a multiple of 8, at least 64.
    #[arg(long, value_parser = parse_size, default_value = "4096")]
    page_size: u64,
    /// Seed of the pattern and of the page choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Prove the checker can fail: damage a small region on purpose and check it is caught.
    #[arg(long)]
    self_test: bool,
    /// Let the kernel back the region with transparent huge pages. Off by default: soft-dirty
    /// tracking (and so pre-copy) then works per 2 MiB page, so a few scattered writes per
    /// second make the whole region dirty every round; turn it on to measure exactly that.
    #[arg(long)]
    huge_pages: bool,
    /// Register the region for RDMA and take one peer on this TCP address (an address that
    /// moves with the process), e.g. 10.0.1.7:9400.
    #[arg(long, requires = "gid_index")]
    rdma_listen: Option<SocketAddr>,
    /// GID index of the --rdma-listen address (`rdmig rxe gid-index --ip ADDR`).
    #[arg(long)]
    gid_index: Option<u32>,
    /// RDMA device.
    #[arg(long, default_value = "rxe0")]
    device: String,
    /// Bytes at the start of the region that the peer writes (default: half of --mem).
    #[arg(long, value_parser = parse_size)]
    rdma_mem: Option<u64>,
    /// RC QPs between the workload and its peer, 1 to 256 (the peer opens as many); the peer's
    /// pages are split among them and its writes go to each in turn.
    #[arg(long, default_value_t = 1, requires = "rdma_listen")]
    qps: usize,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a workload's pages by RDMA WRITE at a set rate (see --help of the workload).
    Peer(PeerArgs),
}

#[derive(Args, Debug)]
struct PeerArgs {
    /// The workload's --rdma-listen address.
    #[arg(long)]
    connect: SocketAddr,
    /// GID index of this node's address towards the workload.
    #[arg(long)]
    gid_index: u32,
    #[arg(long, default_value = "rxe0")]
    device: String,
    /// Bytes per second to write, whole pages (0: connect, write nothing, wait for SIGTERM).
    #[arg(long, value_parser = parse_size, default_value = "1M")]
    rate: u64,
    /// Work requests in flight at most (a write and its notice are two), even, 2 to 64.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Where to write the peer's JSON report.
    #[arg(long)]
    report: PathBuf,
}

/// Parses "4096", "64K", "256M", "1G", "2T" (also "256MiB", "256MB": all powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?} (e.g. 4096, 64K, 256M, 1G)"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("unknown size unit in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("size too large: {s:?}"))
}

// ---------------------------------------------------------------------------------------------
// The pattern

/// splitmix64's finaliser: cheap, and every input bit affects every output bit, so neighbouring
/// (page, generation, word) triples give unrelated words.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// One key per (seed, page, generation); the words of the page are derived from it.
fn page_key(seed: u64, page: u64, generation: u32) -> u64 {
    mix(mix(seed ^ 0x5244_4d49_4757_4b4c) ^ mix(page.wrapping_mul(GOLDEN) ^ mix(u64::from(generation) ^ 0x6765_6e65)))
}

fn word_value(key: u64, word: usize) -> u64 {
    mix(key ^ (word as u64).wrapping_add(1).wrapping_mul(GOLDEN))
}

// ---------------------------------------------------------------------------------------------
// The memory

/// A private anonymous mapping seen as 64-bit words. Anonymous and private so that CRIU dumps
/// it as ordinary process memory (and pre-dump tracks its dirty pages).
struct Region {
    ptr: NonNull<u64>,
    words: usize,
}

impl Region {
    fn new(bytes: usize, huge_pages: bool) -> Result<Self> {
        let len = NonZeroUsize::new(bytes).context("empty region")?;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing aliases nothing.
        let p = unsafe { mmap_anonymous(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE) }
            .with_context(|| format!("mmap of {bytes} bytes"))?;
        if !huge_pages {
            // SAFETY: advice on the mapping just made.
            unsafe { nix::sys::mman::madvise(p, bytes, nix::sys::mman::MmapAdvise::MADV_NOHUGEPAGE) }.with_context(|| "madvise(MADV_NOHUGEPAGE)")?;
        }
        Ok(Region { ptr: p.cast(), words: bytes / 8 })
    }

    fn words_mut(&mut self) -> &mut [u64] {
        // SAFETY: the mapping is page aligned, `words * 8` bytes long, readable and writable, and
        // only reachable through this Region, which `&mut self` borrows uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.words) }
    }

    /// A volatile read: the point of the workload is to notice memory changed behind the
    /// program's back (by a faulty restore), so the compiler must not reuse what it last wrote.
    fn read(&self, word: usize) -> u64 {
        assert!(word < self.words);
        // SAFETY: in bounds (checked above) of a live, aligned mapping.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(word)) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; no slice into it outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.words * 8) };
    }
}

/// A page that failed the check, with what helps tell a lost update from corruption.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
struct BadPage {
    page: u64,
    /// First word that differs.
    word: u64,
    expected_generation: u32,
    /// The older generation of this page that it holds instead, if it holds one of the last few.
    found_generation: Option<u32>,
    /// All zeros: the page was never restored (or was lost).
    zero: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Verification {
    verified_pages: u64,
    bad_pages: u64,
    first_bad: Option<BadPage>,
    /// The peer's pages that held the generation of a write whose notice had not arrived yet.
    in_flight: u64,
}

/// What a second look at a page that did not match found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    Good,
    InFlight,
    Bad,
}

/// How many older generations to try when explaining a bad page.
const STALE_LOOKBACK: u32 = 8;

struct Workload {
    mem: Region,
    /// The generation each page must hold. A Vec: it lives in the process's memory like the
    /// pages, so CRIU moves both together.
    gens: Vec<u32>,
    pages: u64,
    page_words: usize,
    seed: u64,
    /// Counts page choices, so the sequence of dirtied pages is a function of the seed alone.
    step: u64,
    dirtied_pages: u64,
    /// Pages [0, first_local) belong to the RDMA peer; the workload's own dirtying picks from
    /// the rest.
    first_local: u64,
    /// Peer writes applied (their notices), which bumped generations of the peer's pages.
    remote_applied: u64,
}

impl Workload {
    fn new(mem_bytes: u64, page_size: u64, seed: u64, huge_pages: bool) -> Result<Self> {
        ensure!(page_size >= 64 && page_size % 8 == 0, "--page-size must be a multiple of 8, at least 64");
        ensure!(mem_bytes > 0, "--mem must not be zero");
        let pages = mem_bytes.div_ceil(page_size);
        let bytes = usize::try_from(pages * page_size).context("--mem too large for this machine")?;
        let gens = vec![0u32; usize::try_from(pages).context("too many pages")?];
        Ok(Workload {
            mem: Region::new(bytes, huge_pages)?,
            gens,
            pages,
            page_words: (page_size / 8) as usize,
            seed,
            step: 0,
            dirtied_pages: 0,
            first_local: 0,
            remote_applied: 0,
        })
    }

    fn page_size(&self) -> u64 {
        self.page_words as u64 * 8
    }

    fn write_page(&mut self, page: u64) {
        let key = page_key(self.seed, page, self.gens[page as usize]);
        let start = page as usize * self.page_words;
        let n = self.page_words;
        for (i, w) in self.mem.words_mut()[start..start + n].iter_mut().enumerate() {
            *w = word_value(key, i);
        }
    }

    fn fill(&mut self) {
        for p in 0..self.pages {
            self.write_page(p);
        }
    }

    /// Dirties the next page of the seeded sequence (among the workload's own pages): a new
    /// generation, a new pattern.
    fn dirty_next(&mut self) {
        let local = self.pages - self.first_local;
        if local == 0 {
            return;
        }
        let page = self.first_local + mix(self.seed ^ mix(self.step.wrapping_add(GOLDEN))) % local;
        self.step += 1;
        let g = &mut self.gens[page as usize];
        *g = g.wrapping_add(1);
        self.dirtied_pages += 1;
        self.write_page(page);
    }

    /// First word of `page` that does not match `generation`, with the value found.
    fn mismatch(&self, page: u64, generation: u32) -> Option<(usize, u64)> {
        let key = page_key(self.seed, page, generation);
        let start = page as usize * self.page_words;
        (0..self.page_words).map(|i| (i, self.mem.read(start + i))).find(|&(i, v)| v != word_value(key, i))
    }

    fn explain(&self, page: u64) -> BadPage {
        let word = self.mismatch(page, self.gens[page as usize]).map(|(w, _)| w).unwrap_or(0);
        let expected = self.gens[page as usize];
        let start = page as usize * self.page_words;
        let zero = (0..self.page_words).all(|i| self.mem.read(start + i) == 0);
        let found_generation = (1..=STALE_LOOKBACK.min(expected)).map(|back| expected - back).find(|&g| self.mismatch(page, g).is_none());
        BadPage { page, word: word as u64, expected_generation: expected, found_generation, zero }
    }

    fn verify(&mut self) -> Verification {
        self.verify_with(|_, _| Look::Bad)
    }

    /// Checks every page; a page that does not match gets a second look from `second_look`
    /// (the RDMA peer's pages: a write may be in flight, or half placed while it was read).
    fn verify_with(&mut self, mut second_look: impl FnMut(&mut Workload, u64) -> Look) -> Verification {
        let mut bad_pages = 0;
        let mut in_flight = 0;
        let mut first_bad = None;
        for p in 0..self.pages {
            if self.mismatch(p, self.gens[p as usize]).is_some() {
                match second_look(self, p) {
                    Look::Good => {}
                    Look::InFlight => in_flight += 1,
                    Look::Bad => {
                        bad_pages += 1;
                        if first_bad.is_none() {
                            first_bad = Some(self.explain(p));
                        }
                    }
                }
            }
        }
        Verification { verified_pages: self.pages, bad_pages, first_bad, in_flight }
    }

    fn generations_total(&self) -> u64 {
        self.gens.iter().map(|&g| u64::from(g)).sum()
    }

    /// Every generation bump is accounted for by the workload's own dirtying or a peer write.
    fn counters_consistent(&self) -> bool {
        self.generations_total() == self.dirtied_pages + self.remote_applied
    }

    // Debug paths for --self-test: each damages memory the way a faulty migration could.

    fn debug_flip_bit(&mut self, page: u64, word: usize) {
        let i = page as usize * self.page_words + word;
        self.mem.words_mut()[i] ^= 1 << 17;
    }

    /// The generation moves on but the page keeps its old content: a dirty page that was not
    /// carried over.
    fn debug_lose_update(&mut self, page: u64) {
        self.gens[page as usize] += 1;
        self.dirtied_pages += 1;
    }

    fn debug_zero(&mut self, page: u64) {
        let start = page as usize * self.page_words;
        let n = self.page_words;
        self.mem.words_mut()[start..start + n].fill(0);
    }

    fn debug_copy(&mut self, from: u64, to: u64) {
        let n = self.page_words;
        self.mem.words_mut().copy_within(from as usize * n..(from as usize + 1) * n, to as usize * n);
    }
}

// ---------------------------------------------------------------------------------------------
// Pacing

/// The longest stretch of time one step may owe dirtying for. A freeze of minutes must not turn
/// into a burst of minutes' worth of writes on resume, which would distort the very downtime and
/// pre-copy numbers being measured.
const MAX_OWED: Duration = Duration::from_millis(100);
const TICK: Duration = Duration::from_millis(10);

/// Turns elapsed time into pages owed at a byte rate, carrying fractions of a page over.
struct Pacer {
    rate: u64,
    page_size: u64,
    /// Owed bytes times 1e9 (bytes·ns/s), so integer arithmetic carries sub-byte remainders.
    owed: u128,
    last: Instant,
}

impl Pacer {
    fn new(rate: u64, page_size: u64, now: Instant) -> Self {
        Pacer { rate, page_size, owed: 0, last: now }
    }

    fn due(&mut self, now: Instant) -> u64 {
        // After a restore on another host the monotonic clock may jump either way: saturate
        // backwards jumps to zero and cap forward ones.
        let dt = now.saturating_duration_since(self.last).min(MAX_OWED);
        self.last = now;
        let page = u128::from(self.page_size) * 1_000_000_000;
        // Never owe more than MAX_OWED of writing, but always allow one page so that rates below
        // a page per MAX_OWED still progress.
        let cap = (u128::from(self.rate) * MAX_OWED.as_nanos()).max(page);
        self.owed = (self.owed + u128::from(self.rate) * dt.as_nanos()).min(cap);
        let n = self.owed / page;
        self.owed -= n * page;
        n as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Signals

static VERIFY_REQUESTED: AtomicBool = AtomicBool::new(false);
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Only sets a flag: everything else happens in the main loop, where it is safe.
extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGUSR1 {
        VERIFY_REQUESTED.store(true, Ordering::SeqCst);
    } else {
        STOP_REQUESTED.store(true, Ordering::SeqCst);
    }
}

fn install_handlers() -> Result<()> {
    let act = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe { sigaction(sig, &act) }.with_context(|| format!("installing a handler for {sig}"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The RDMA peer's writes, as the workload books them

/// A notice, SENT by the peer after each RDMA WRITE (and once at its end), 32 bytes:
/// magic, kind, sequence number (or total), a check word over the rest.
const NOTICE: usize = 32;
const NOTICE_MAGIC: u32 = 0x5244_574b; // "RDWK"
const KIND_WRITE: u32 = 1;
const KIND_END: u32 = 2;
/// Receives the workload keeps posted, shared among its QPs.
const RECV_DEPTH: usize = 128;
/// The peer's --window at most.
const MAX_WINDOW: usize = 64;
/// QPs between the workload and its peer at most (--qps).
const MAX_QPS: usize = 256;

// With several QPs the peer's pages are split into one slice per QP (a lane), each with its own
// write sequence and notices on its own QP: RC orders a lane's WRITEs and SENDs, and nothing
// orders two lanes, so each lane is checked on its own, exactly as one QP is.

/// Receives the workload keeps posted on each of `qps` QPs.
fn lane_recv_depth(qps: usize) -> usize {
    (RECV_DEPTH / qps).max(8)
}

/// Work requests the peer keeps in flight on each of `qps` QPs at most (even: a write and its
/// notice are two).
fn lane_window_max(qps: usize) -> usize {
    ((MAX_WINDOW / qps) & !1).max(2)
}

/// How many writes past a lane's last applied notice may have been placed already: the posted
/// receives (notices that may sit in the CQ) and the peer's window, with a margin.
fn in_flight_max(qps: usize) -> u64 {
    (lane_recv_depth(qps) + lane_window_max(qps) + 2) as u64
}

/// Each lane needs at least this many pages, so that no page can be two writes ahead of its
/// lane's last notice (a second look then knows the one generation it may hold).
fn min_lane_pages(qps: usize) -> u64 {
    2 * in_flight_max(qps)
}

/// `n` RC QPs on one device context and PD (so that one registration serves all), for the
/// workload's and the peer's lanes.
fn open_qps(cfg: RcConfig, n: usize) -> Result<Vec<RcQp>> {
    let mut qps = vec![RcQp::open(cfg).context("opening the RDMA device")?];
    for i in 1..n {
        let qp = qps[0].sibling().with_context(|| format!("opening QP {} of {n}", i + 1))?;
        qps.push(qp);
    }
    Ok(qps)
}

/// Lane `q`'s slice of the peer's `pages`: (first page, pages).
fn lane_pages(pages: u64, qps: usize, q: usize) -> (u64, u64) {
    let at = |i: usize| i as u64 * pages / qps as u64;
    (at(q), at(q + 1) - at(q))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    Write(u64),
    End(u64),
}

impl Notice {
    fn encode(self) -> [u8; NOTICE] {
        let (kind, value) = match self {
            Notice::Write(seq) => (KIND_WRITE, seq),
            Notice::End(total) => (KIND_END, total),
        };
        let mut b = [0u8; NOTICE];
        b[0..4].copy_from_slice(&NOTICE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&kind.to_le_bytes());
        b[8..16].copy_from_slice(&value.to_le_bytes());
        b[16..24].copy_from_slice(&mix(value ^ u64::from(kind) ^ GOLDEN).to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Notice, String> {
        if b.len() < NOTICE {
            return Err(format!("a notice of {} bytes", b.len()));
        }
        let word = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().expect("8 bytes"));
        let magic = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
        let kind = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
        let value = word(8..16);
        if magic != NOTICE_MAGIC || word(16..24) != mix(value ^ u64::from(kind) ^ GOLDEN) {
            return Err(format!("a damaged notice (magic {magic:#x}, kind {kind}, value {value})"));
        }
        match kind {
            KIND_WRITE => Ok(Notice::Write(value)),
            KIND_END => Ok(Notice::End(value)),
            k => Err(format!("a notice of unknown kind {k}")),
        }
    }
}

/// Where a lane's write number `seq` goes (relative to the lane's first page) and which
/// generation it writes there, for a lane of `pages` pages: a sweep over them, one generation
/// per sweep.
fn peer_target(pages: u64, seq: u64) -> (u64, u32) {
    (seq % pages, (seq / pages + 1) as u32)
}

/// The words of `page` at `generation`: what the workload's own writes and the peer's put there.
fn page_words(seed: u64, page: u64, generation: u32, out: &mut [u64]) {
    let key = page_key(seed, page, generation);
    for (i, w) in out.iter_mut().enumerate() {
        *w = word_value(key, i);
    }
}

/// The workload's account of the peer's writes: pure, so that --self-test and the unit tests
/// drive it without a NIC.
#[derive(Debug, Default, Clone)]
struct RemoteBook {
    /// The lane's pages: [first, first + pages) of the region.
    first: u64,
    pages: u64,
    /// `in_flight_max` of the lane count.
    in_flight_max: u64,
    /// Notices applied, i.e. the number of the next write expected.
    next_seq: u64,
    /// The total the peer sent at its end.
    peer_total: Option<u64>,
    notice_errors: u64,
    first_error: Option<String>,
}

impl RemoteBook {
    fn new(first: u64, pages: u64, in_flight_max: u64) -> Self {
        Self { first, pages, in_flight_max, ..Default::default() }
    }

    fn holds(&self, page: u64) -> bool {
        (self.first..self.first + self.pages).contains(&page)
    }

    fn error(&mut self, m: String) {
        self.notice_errors += 1;
        if self.first_error.is_none() {
            note(&m);
            self.first_error = Some(m);
        }
    }

    /// Applies one received notice: the page it names now must hold its new generation.
    fn apply(&mut self, w: &mut Workload, msg: &[u8]) {
        match Notice::decode(msg) {
            Err(e) => self.error(e),
            Ok(Notice::End(total)) => {
                if self.peer_total.is_some() {
                    self.error("a second end notice".into());
                }
                self.peer_total = Some(total);
            }
            Ok(Notice::Write(seq)) => {
                if self.peer_total.is_some() {
                    self.error(format!("write notice {seq} after the end"));
                }
                if seq != self.next_seq {
                    // RC delivers every SEND once, in order: a gap is a lost notice (and its
                    // write never accounted), a repeat a duplicate.
                    self.error(format!("write notice {seq} while {} was expected", self.next_seq));
                    if seq < self.next_seq {
                        return;
                    }
                }
                // Writes in between (if a notice was lost) moved their pages on as well.
                for s in self.next_seq..=seq {
                    let (page, generation) = peer_target(self.pages, s);
                    w.gens[(self.first + page) as usize] = generation;
                    w.remote_applied += 1;
                }
                self.next_seq = seq + 1;
            }
        }
    }

    /// A second look at a peer page that does not match: it may hold the generation of a write
    /// whose notice has not been applied yet (RC placed the WRITE, the SEND is still coming).
    fn in_flight(&self, w: &Workload, page: u64) -> bool {
        if self.pages == 0 || !self.holds(page) {
            return false;
        }
        let ahead = (page - self.first + self.pages - self.next_seq % self.pages) % self.pages;
        if ahead >= self.in_flight_max {
            return false;
        }
        let (_, generation) = peer_target(self.pages, self.next_seq + ahead);
        w.mismatch(page, generation).is_none()
    }

    /// No damaged, lost or repeated notice, and after the peer's end, every write it made applied.
    fn ok(&self) -> bool {
        self.notice_errors == 0 && self.peer_total.is_none_or(|t| t == self.next_seq)
    }
}

/// One of the workload's QPs and the account of the peer's writes on it.
struct Lane {
    qp: RcQp,
    book: RemoteBook,
}

/// The RDMA side of the workload: its QPs (one lane each), the region's registration, the
/// receive slots (lane q's are `depth` slots from q * depth).
struct Remote {
    // Dropped in this order: the QPs, then the receive slots, then the region's registration.
    lanes: Vec<Lane>,
    rx: rdmig::verbs::Region,
    depth: usize,
    // Deregistered before the workload's region is unmapped: `Remote` is declared after the
    // `Workload` in `run`, so it is dropped first.
    mr: Registration,
    wc_errors: u64,
    first_wc_error: Option<String>,
    wcs: Vec<Completion>,
}

/// Exchanged over TCP once, before the QPs connect; then the sockets close.
#[derive(Serialize, Deserialize, Debug)]
enum Hello {
    /// Workload -> peer: its QPs (as many as the peer must open), where to write and how to make
    /// pages the workload will accept.
    Offer { eps: Vec<Endpoint>, addr: u64, rkey: u32, page_size: u64, pages: u64, seed: u64 },
    /// Peer -> workload: its QPs, connected to the workload's, in the same order.
    Peer { eps: Vec<Endpoint> },
    /// Workload -> peer: connected, write.
    Ready,
}

impl Remote {
    /// Opens `qps` QPs, registers the whole region, posts the receives, and listens
    /// (non-blocking: `accept` polls, so that SIGTERM still ends a workload nobody connects to).
    fn setup(w: &mut Workload, listen: SocketAddr, gid_index: u32, device: &str, peer_bytes: u64, qps: usize) -> Result<(Remote, TcpListener)> {
        ensure!((1..=MAX_QPS).contains(&qps), "--qps must be 1 to {MAX_QPS}");
        let pages = peer_bytes.div_ceil(w.page_size()).min(w.pages);
        let need = min_lane_pages(qps) * qps as u64;
        ensure!(pages >= need, "--rdma-mem must give the peer at least {need} pages ({} bytes) with {qps} QP(s)", need * w.page_size());
        w.first_local = pages;
        let depth = lane_recv_depth(qps);
        // No completion channel: rdmig's CRIU plugin cannot restore one yet; the main loop polls.
        // The workload posts no sends; its receives are the lane's depth.
        let cfg = RcConfig { device: device.into(), gid_index, events: false, max_send_wr: 16, max_recv_wr: depth as u32, ..Default::default() };
        let qs = open_qps(cfg, qps)?;
        let bytes = w.mem.words * 8;
        // SAFETY: the workload's region stays mapped for as long as the process runs: `Remote`
        // (and so this registration) is dropped before the `Workload` that owns the mapping.
        let mr = unsafe { qs[0].register(w.mem.ptr.as_ptr().cast(), bytes, true) }.with_context(|| format!("registering {bytes} bytes"))?;
        let rx = qs[0].region(qps * depth * NOTICE, false).context("the receive slots")?;
        let mut lanes = Vec::with_capacity(qps);
        for (q, mut qp) in qs.into_iter().enumerate() {
            for i in q * depth..(q + 1) * depth {
                qp.post_recv(i as u64, &rx, i * NOTICE, NOTICE)?;
            }
            let (first, count) = lane_pages(pages, qps, q);
            lanes.push(Lane { qp, book: RemoteBook::new(first, count, in_flight_max(qps)) });
        }
        let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
        listener.set_nonblocking(true)?;
        note(&format!("RDMA: {} MiB registered (rkey {:#x}), the peer's first {pages} pages over {qps} QP(s); listening on {listen}", bytes >> 20, mr.rkey()));
        Ok((Remote { lanes, rx, depth, mr, wc_errors: 0, first_wc_error: None, wcs: Vec::new() }, listener))
    }

    /// Takes one peer, connects the QPs, and closes both sockets. Ok(false): asked to stop first.
    fn accept(&mut self, listener: TcpListener, w: &Workload) -> Result<bool> {
        let sock = loop {
            if STOP_REQUESTED.load(Ordering::SeqCst) {
                return Ok(false);
            }
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
                Err(e) => return Err(e).context("accepting the peer"),
            }
        };
        drop(listener);
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut ctl = BufReader::new(sock.try_clone()?);
        let mut sock: TcpStream = sock;
        let pages = self.lanes.iter().map(|l| l.book.pages).sum();
        let eps = self.lanes.iter().map(|l| l.qp.endpoint()).collect();
        let offer = Hello::Offer { eps, addr: self.mr.addr(), rkey: self.mr.rkey(), page_size: w.page_size(), pages, seed: w.seed };
        send_line(&mut sock, &offer)?;
        let Hello::Peer { eps } = recv_line(&mut ctl)? else { bail!("the peer did not answer with its QPs") };
        ensure!(eps.len() == self.lanes.len(), "the peer opened {} QPs, not {}", eps.len(), self.lanes.len());
        for (i, (lane, ep)) in self.lanes.iter_mut().zip(&eps).enumerate() {
            lane.qp.connect(ep).with_context(|| format!("connecting QP {} to the peer", i + 1))?;
        }
        send_line(&mut sock, &Hello::Ready)?;
        note(&format!("RDMA: peer QPN {:#x} connected to QPN {:#x} ({} QPs)", eps[0].qpn, self.lanes[0].qp.qp_number(), eps.len()));
        Ok(true)
    }

    /// Applies every notice that has arrived and gives its receive back.
    fn drain(&mut self, w: &mut Workload) {
        for q in 0..self.lanes.len() {
            loop {
                self.wcs.clear();
                if self.lanes[q].qp.poll(&mut self.wcs) == 0 {
                    break;
                }
                for i in 0..self.wcs.len() {
                    let wc = self.wcs[i];
                    if !wc.ok() {
                        self.wc_errors += 1;
                        if self.first_wc_error.is_none() {
                            let m = format!("receive {} on QP {} completed with status {}", wc.wr_id, q + 1, wc.status);
                            note(&m);
                            self.first_wc_error = Some(m);
                        }
                        continue;
                    }
                    let slot = wc.wr_id as usize;
                    if !(q * self.depth..(q + 1) * self.depth).contains(&slot) {
                        self.wc_errors += 1;
                        self.first_wc_error.get_or_insert_with(|| format!("a receive completion of QP {} names slot {slot}", q + 1));
                        continue;
                    }
                    let off = slot * NOTICE;
                    let msg = self.rx.bytes()[off..off + (wc.byte_len as usize).min(NOTICE)].to_vec();
                    let lane = &mut self.lanes[q];
                    lane.book.apply(w, &msg);
                    if let Err(e) = lane.qp.post_recv(wc.wr_id, &self.rx, off, NOTICE) {
                        self.wc_errors += 1;
                        if self.first_wc_error.is_none() {
                            self.first_wc_error = Some(format!("reposting receive {}: {e}", wc.wr_id));
                        }
                    }
                }
            }
        }
    }

    /// A second look at a page of the peer's that did not match: apply what arrived since, and
    /// look again a few times (a WRITE placed while the page was being read leaves it torn).
    fn second_look(&mut self, w: &mut Workload, page: u64) -> Look {
        let Some(q) = self.lanes.iter().position(|l| l.book.holds(page)) else { return Look::Bad };
        for _ in 0..20 {
            self.drain(w);
            if w.mismatch(page, w.gens[page as usize]).is_none() {
                return Look::Good;
            }
            if self.lanes[q].book.in_flight(w, page) {
                return Look::InFlight;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Look::Bad
    }
}

#[derive(Serialize, Debug)]
struct RdmaReport {
    qps: usize,
    peer_pages: u64,
    writes_applied: u64,
    peer_total: Option<u64>,
    peer_end: bool,
    in_flight_pages: u64,
    notice_errors: u64,
    wc_errors: u64,
    first_error: Option<String>,
    ok: bool,
}

/// Checks every page, the peer's with a second look, and reports what the RDMA side saw (over
/// all lanes: the peer's total is the sum of the lanes' ends, there once every lane has ended).
fn verify_all(w: &mut Workload, remote: Option<&mut Remote>) -> (Verification, Option<RdmaReport>) {
    let Some(r) = remote else { return (w.verify(), None) };
    r.drain(w);
    let v = w.verify_with(|w, p| r.second_look(w, p));
    let books = || r.lanes.iter().map(|l| &l.book);
    let peer_end = books().all(|b| b.peer_total.is_some());
    let rep = RdmaReport {
        qps: r.lanes.len(),
        peer_pages: books().map(|b| b.pages).sum(),
        writes_applied: books().map(|b| b.next_seq).sum(),
        peer_total: if peer_end { Some(books().filter_map(|b| b.peer_total).sum()) } else { None },
        peer_end,
        in_flight_pages: v.in_flight,
        notice_errors: books().map(|b| b.notice_errors).sum(),
        wc_errors: r.wc_errors,
        first_error: books().find_map(|b| b.first_error.clone()).or_else(|| r.first_wc_error.clone()),
        ok: books().all(|b| b.ok()) && r.wc_errors == 0,
    };
    (v, Some(rep))
}

// ---------------------------------------------------------------------------------------------
// The peer

#[derive(Serialize, Debug, Default)]
struct PeerReport {
    phase: &'static str,
    pid: u32,
    qps: usize,
    qpn: u32,
    peer_qpn: u32,
    rate: u64,
    page_size: u64,
    peer_pages: u64,
    writes_posted: u64,
    writes_completed: u64,
    end_sent: bool,
    wc_errors: u64,
    first_error: Option<String>,
    /// The longest time the peer waited for a completion with work in flight.
    max_gap_ms: f64,
    /// When that wait ended (wall clock, ms since the epoch).
    max_gap_end_unix_ms: u64,
    elapsed_ms: u64,
    ok: bool,
}

/// Tracks the longest wait for a completion while work was in flight.
struct GapMeter {
    /// The later of the last completion and the first post after the peer was idle.
    mark: Option<Instant>,
    max: Duration,
    max_end: SystemTime,
}

impl GapMeter {
    fn posted(&mut self, now: Instant, inflight_before: usize) {
        if inflight_before == 0 {
            self.mark = Some(now);
        }
    }
    fn completed(&mut self, now: Instant, inflight_after: usize) {
        if let Some(m) = self.mark {
            let gap = now.saturating_duration_since(m);
            if gap > self.max {
                self.max = gap;
                self.max_end = SystemTime::now();
            }
        }
        self.mark = if inflight_after > 0 { Some(now) } else { None };
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The end notice's work request: odd, so it is not counted as a write.
const END_WR_ID: u64 = u64::MAX;

/// One of the peer's QPs: its slice of the workload's pages and its own write sequence.
struct PeerLane {
    qp: RcQp,
    first: u64,
    pages: u64,
    /// The next write's number on this lane.
    seq: u64,
    /// Work requests posted and not completed.
    inflight: usize,
    /// Writes whose notice completed (RC acknowledged both).
    completed: u64,
}

/// What the peer's reaping updates besides the lanes.
struct PeerTally<'a> {
    inflight: usize,
    rep: &'a mut PeerReport,
    gaps: GapMeter,
    wcs: Vec<Completion>,
}

impl PeerTally<'_> {
    /// Takes the completions of every lane; with `wait`, waits up to that long for at least one
    /// (one QP sleeps on its completion channel, several are polled with short naps).
    fn reap(&mut self, lanes: &mut [PeerLane], wait: Option<Duration>) -> Result<()> {
        let deadline = wait.map(|t| Instant::now() + t);
        loop {
            let mut got = 0;
            for lane in lanes.iter_mut() {
                self.wcs.clear();
                got += match (wait, lane.qp.config().events) {
                    (Some(t), true) => lane.qp.poll_wait(&mut self.wcs, t)?,
                    _ => lane.qp.poll(&mut self.wcs),
                };
                let now = Instant::now();
                for wc in &self.wcs {
                    lane.inflight -= 1;
                    self.inflight -= 1;
                    self.gaps.completed(now, self.inflight);
                    if !wc.ok() {
                        self.rep.wc_errors += 1;
                        if self.rep.first_error.is_none() {
                            let m = format!("work request {:#x} completed with status {}", wc.wr_id, wc.status);
                            note(&format!("peer: {m}"));
                            self.rep.first_error = Some(m);
                        }
                    } else if wc.wr_id & 1 == 0 {
                        lane.completed += 1;
                        self.rep.writes_completed += 1;
                    }
                }
            }
            if got > 0 || deadline.is_none_or(|d| Instant::now() >= d) || lanes.iter().all(|l| l.qp.config().events) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn peer(a: &PeerArgs) -> Result<i32> {
    ensure!(a.window % 2 == 0 && (2..=MAX_WINDOW).contains(&a.window), "--window must be even, 2 to {MAX_WINDOW}");
    install_handlers()?;
    let t0 = Instant::now();
    let sock = TcpStream::connect(a.connect).with_context(|| format!("connecting to the workload at {}", a.connect))?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut ctl = BufReader::new(sock.try_clone()?);
    let mut sock = sock;
    let Hello::Offer { eps, addr, rkey, page_size, pages, seed } = recv_line(&mut ctl)? else { bail!("the workload did not offer its region") };
    let n = eps.len();
    ensure!((1..=MAX_QPS).contains(&n), "the workload offered {n} QPs");
    ensure!(
        page_size % 8 == 0 && page_size >= 64 && pages >= min_lane_pages(n) * n as u64,
        "the workload offered {pages} pages of {page_size} bytes over {n} QPs"
    );
    // Per lane: at most its share of the window, and never more than the whole window.
    let window = a.window.min(lane_window_max(n));
    // One QP sleeps on a completion channel; several are polled (a channel per QP would need
    // a wait on all of them).
    let cfg = RcConfig {
        device: a.device.clone(),
        gid_index: a.gid_index,
        events: n == 1,
        max_send_wr: (window + 2).max(16) as u32,
        max_recv_wr: 16,
        ..Default::default()
    };
    let mut qps = open_qps(cfg, n)?;
    for (i, (qp, ep)) in qps.iter_mut().zip(&eps).enumerate() {
        qp.connect(ep).with_context(|| format!("connecting QP {} to the workload", i + 1))?;
    }
    send_line(&mut sock, &Hello::Peer { eps: qps.iter().map(|q| q.endpoint()).collect() })?;
    let Hello::Ready = recv_line(&mut ctl)? else { bail!("the workload did not confirm") };
    drop((ctl, sock));
    let ps = page_size as usize;
    // Lane q's slots are `slots` from q * slots, in the source pages and in the notices.
    let slots = window / 2;
    let mut src = qps[0].region(n * slots * ps, false)?;
    let mut notes = qps[0].region(n * slots * NOTICE, false)?;
    let mut rep = PeerReport {
        phase: "connected",
        pid: std::process::id(),
        qps: n,
        qpn: qps[0].qp_number(),
        peer_qpn: eps[0].qpn,
        rate: a.rate,
        page_size,
        peer_pages: pages,
        ..Default::default()
    };
    write_atomically(&a.report, &serde_json::to_vec_pretty(&rep)?)?;
    note(&format!("peer: QPN {:#x} connected to {:#x} ({n} QPs); writing {} B/s into {pages} pages", qps[0].qp_number(), eps[0].qpn, a.rate));
    let mut lanes: Vec<PeerLane> = qps
        .into_iter()
        .enumerate()
        .map(|(q, qp)| {
            let (first, pages) = lane_pages(pages, n, q);
            PeerLane { qp, first, pages, seq: 0, inflight: 0, completed: 0 }
        })
        .collect();

    let mut t = PeerTally { inflight: 0, rep: &mut rep, gaps: GapMeter { mark: None, max: Duration::ZERO, max_end: SystemTime::now() }, wcs: Vec::new() };
    let mut pacer = Pacer::new(a.rate, page_size, Instant::now());
    let mut words = vec![0u64; ps / 8];
    // Writes go to the lanes in turn.
    let mut turn = 0usize;
    'run: loop {
        if STOP_REQUESTED.load(Ordering::SeqCst) || t.rep.wc_errors > 0 {
            break;
        }
        let due = if a.rate > 0 { pacer.due(Instant::now()) } else { 0 };
        for _ in 0..due {
            let q = turn % n;
            turn += 1;
            while lanes[q].inflight + 2 > window || t.inflight + 2 > a.window {
                if STOP_REQUESTED.load(Ordering::SeqCst) {
                    break 'run;
                }
                t.reap(&mut lanes, Some(Duration::from_millis(200)))?;
            }
            let lane = &mut lanes[q];
            // A slot is reused after `slots` steps of its lane; fewer than `slots` steps are
            // ever in flight on a lane and RC completes in order, so its previous write is done.
            let slot = q * slots + (lane.seq % slots as u64) as usize;
            let (rel, generation) = peer_target(lane.pages, lane.seq);
            let page = lane.first + rel;
            page_words(seed, page, generation, &mut words);
            for (b, w) in src.bytes_mut()[slot * ps..(slot + 1) * ps].chunks_exact_mut(8).zip(&words) {
                b.copy_from_slice(&w.to_ne_bytes());
            }
            notes.bytes_mut()[slot * NOTICE..(slot + 1) * NOTICE].copy_from_slice(&Notice::Write(lane.seq).encode());
            t.gaps.posted(Instant::now(), t.inflight);
            lane.qp.post_write(lane.seq << 1 | 1, &src, slot * ps, ps, rkey, addr + page * page_size)?;
            lane.qp.post_send(lane.seq << 1, &notes, slot * NOTICE, NOTICE)?;
            lane.inflight += 2;
            t.inflight += 2;
            t.rep.writes_posted += 1;
            lane.seq += 1;
        }
        if t.inflight > 0 {
            t.reap(&mut lanes, Some(TICK))?;
        } else {
            std::thread::sleep(TICK);
        }
    }
    // Everything posted must complete before the totals are sent (however long a migration of
    // the workload holds it up: its QPs pause ours).
    let deadline = Instant::now() + Duration::from_secs(900);
    while t.inflight > 0 {
        ensure!(Instant::now() < deadline, "{} work requests still in flight after 15 min", t.inflight);
        t.reap(&mut lanes, Some(Duration::from_millis(500)))?;
    }
    if t.rep.wc_errors == 0 {
        // Each lane's end: its own total, on its own QP, after all of its notices.
        t.gaps.posted(Instant::now(), 0);
        for (q, lane) in lanes.iter_mut().enumerate() {
            let slot = q * slots;
            notes.bytes_mut()[slot * NOTICE..(slot + 1) * NOTICE].copy_from_slice(&Notice::End(lane.completed).encode());
            lane.qp.post_send(END_WR_ID, &notes, slot * NOTICE, NOTICE)?;
            lane.inflight += 1;
            t.inflight += 1;
        }
        while t.inflight > 0 {
            ensure!(Instant::now() < deadline, "the end notices did not complete");
            t.reap(&mut lanes, Some(Duration::from_millis(500)))?;
        }
        t.rep.end_sent = t.rep.wc_errors == 0;
    }
    let gaps = t.gaps;
    rep.phase = "done";
    rep.max_gap_ms = (gaps.max.as_secs_f64() * 1e6).round() / 1e3;
    rep.max_gap_end_unix_ms = unix_ms(gaps.max_end);
    rep.elapsed_ms = t0.elapsed().as_millis() as u64;
    rep.ok = rep.wc_errors == 0 && rep.end_sent && rep.writes_completed == rep.writes_posted;
    write_atomically(&a.report, &serde_json::to_vec_pretty(&rep)?)?;
    note(&format!("peer: {} writes, longest wait {:.1} ms, ok={}", rep.writes_completed, rep.max_gap_ms, rep.ok));
    Ok(if rep.ok { 0 } else { 1 })
}

// ---------------------------------------------------------------------------------------------
// Reports

#[derive(Serialize, Debug)]
struct Report {
    phase: &'static str,
    pid: u32,
    pages: u64,
    page_size: u64,
    mem_bytes: u64,
    seed: u64,
    dirty_rate: u64,
    verified_pages: u64,
    bad_pages: u64,
    first_bad_page: Option<u64>,
    first_bad: Option<BadPage>,
    generations_total: u64,
    dirtied_pages_total: u64,
    dirtied_bytes_total: u64,
    counters_consistent: bool,
    /// Reports written so far, this one included.
    reports: u64,
    verify_ms: f64,
    uptime_ms: u64,
    /// With --rdma-listen: what the peer wrote and the workload applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    rdma: Option<RdmaReport>,
    ok: bool,
}

struct Reporter {
    path: PathBuf,
    dirty_rate: u64,
    /// Wall clock, not monotonic: after a restore on another host the monotonic clock is that
    /// host's, and an uptime computed from it would be meaningless.
    started: SystemTime,
    written: u64,
}

impl Reporter {
    fn report(&mut self, w: &mut Workload, remote: Option<&mut Remote>, phase: &'static str) -> Result<bool> {
        let t = Instant::now();
        let (v, rdma) = verify_all(w, remote);
        let verify_ms = (t.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let generations_total = w.generations_total();
        let counters_consistent = w.counters_consistent();
        let ok = v.bad_pages == 0 && v.verified_pages == w.pages && counters_consistent && rdma.as_ref().is_none_or(|r| r.ok);
        self.written += 1;
        let r = Report {
            phase,
            pid: std::process::id(),
            pages: w.pages,
            page_size: w.page_size(),
            mem_bytes: w.pages * w.page_size(),
            seed: w.seed,
            dirty_rate: self.dirty_rate,
            verified_pages: v.verified_pages,
            bad_pages: v.bad_pages,
            first_bad_page: v.first_bad.as_ref().map(|b| b.page),
            first_bad: v.first_bad,
            generations_total,
            dirtied_pages_total: w.dirtied_pages,
            dirtied_bytes_total: w.dirtied_pages * w.page_size(),
            counters_consistent,
            reports: self.written,
            verify_ms,
            uptime_ms: SystemTime::now().duration_since(self.started).map(|d| d.as_millis() as u64).unwrap_or(0),
            rdma,
            ok,
        };
        write_atomically(&self.path, &serde_json::to_vec_pretty(&r)?)?;
        note(&format!("{phase}: {} bad of {} pages, ok={ok}", r.bad_pages, r.verified_pages));
        Ok(ok)
    }
}

/// Write to a temporary file beside `path`, then rename: a reader polling `path` sees either
/// the previous report or this one, never a partial one. The file is closed before the rename,
/// so nothing is left open for CRIU to carry.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().with_context(|| format!("report path {} has no file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Progress on stderr. Ignores failures: the launcher may have closed or redirected stderr, and
/// the workload must not die for want of a log line.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "rdmig-workload: {msg}");
}

// ---------------------------------------------------------------------------------------------
// Running

fn run(cli: &Cli) -> Result<i32> {
    let (Some(mem), Some(report)) = (cli.mem, cli.report.clone()) else {
        bail!("--mem and --report are required");
    };
    install_handlers()?;
    let mut reporter = Reporter { path: report, dirty_rate: cli.dirty_rate, started: SystemTime::now(), written: 0 };
    let mut w = Workload::new(mem, cli.page_size, cli.seed, cli.huge_pages)?;
    w.fill();
    // Declared after `w`: dropped before it, so the region is deregistered before it is unmapped.
    let mut remote = None;
    let mut listener = None;
    if let Some(listen) = cli.rdma_listen {
        let gid = cli.gid_index.context("--rdma-listen needs --gid-index")?;
        let (r, l) = Remote::setup(&mut w, listen, gid, &cli.device, cli.rdma_mem.unwrap_or(mem / 2), cli.qps)?;
        ensure!(w.first_local < w.pages || cli.dirty_rate == 0, "--rdma-mem leaves the workload no pages of its own to dirty");
        remote = Some(r);
        listener = Some(l);
    }
    // A failure to write the first report is fatal: the test waiting for it would hang.
    reporter.report(&mut w, remote.as_mut(), "filled")?;
    if let (Some(r), Some(l)) = (remote.as_mut(), listener.take()) {
        if r.accept(l, &w)? {
            reporter.report(&mut w, Some(r), "connected")?;
        }
    }

    let mut pacer = Pacer::new(cli.dirty_rate, w.page_size(), Instant::now());
    loop {
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return match reporter.report(&mut w, remote.as_mut(), "verify") {
                Ok(true) => Ok(0),
                Ok(false) => Ok(1),
                Err(e) => {
                    note(&format!("final report: {e:#}"));
                    Ok(1)
                }
            };
        }
        if VERIFY_REQUESTED.swap(false, Ordering::SeqCst) {
            // Keep running if the report cannot be written: a later SIGUSR1 may succeed.
            if let Err(e) = reporter.report(&mut w, remote.as_mut(), "verify") {
                note(&format!("report: {e:#}"));
            }
        }
        if cli.dirty_rate > 0 {
            for _ in 0..pacer.due(Instant::now()) {
                w.dirty_next();
            }
        }
        if let Some(r) = remote.as_mut() {
            r.drain(&mut w);
        }
        std::thread::sleep(TICK);
    }
}

/// Damages a small region in each way a migration could and checks each one is caught.
fn self_test(seed: u64) -> Result<bool> {
    let mut w = Workload::new(64 * 4096, 4096, seed, false)?;
    w.fill();
    let mut caught = 0;
    let mut check = |name: &str, v: Verification, want: Option<BadPage>| {
        let good = match &want {
            None => v.bad_pages == 0,
            Some(b) => v.bad_pages == 1 && v.first_bad.as_ref() == Some(b),
        };
        note(&format!("self-test {name}: {} ({} bad pages, first {:?})", if good { "ok" } else { "FAILED" }, v.bad_pages, v.first_bad));
        caught += usize::from(good);
    };
    check("fill", w.verify(), None);
    for _ in 0..500 {
        w.dirty_next();
    }
    check("dirtying", w.verify(), None);
    ensure!(w.counters_consistent(), "generation counters out of step");

    w.debug_flip_bit(17, 100);
    let g = w.gens[17];
    let v = w.verify();
    check("flipped bit", v, Some(BadPage { page: 17, word: 100, expected_generation: g, found_generation: None, zero: false }));
    w.write_page(17);

    // Make sure the page has an older generation to be mistaken for.
    w.gens[5] += 1;
    w.dirtied_pages += 1;
    w.write_page(5);
    w.debug_lose_update(5);
    let g = w.gens[5];
    check("lost update", w.verify(), Some(BadPage { page: 5, word: 0, expected_generation: g, found_generation: Some(g - 1), zero: false }));
    w.write_page(5);

    w.debug_zero(63);
    let g = w.gens[63];
    check("zeroed page", w.verify(), Some(BadPage { page: 63, word: 0, expected_generation: g, found_generation: None, zero: true }));
    w.write_page(63);

    w.debug_copy(3, 4);
    let g = w.gens[4];
    check("copied page", w.verify(), Some(BadPage { page: 4, word: 0, expected_generation: g, found_generation: None, zero: false }));
    w.write_page(4);

    check("repaired", w.verify(), None);
    let (rdma_caught, rdma_checks) = self_test_rdma(seed)?;
    let (caught, checks) = (caught + rdma_caught, 7 + rdma_checks);
    let all = caught == checks;
    note(&format!("self-test: {caught}/{checks} checks as expected: {}", if all { "ok" } else { "FAILED" }));
    Ok(all)
}

/// The peer's side of the check without a NIC: its writes placed into the region by hand, its
/// notices applied as the workload applies received ones, and each way a migration could lose
/// or repeat one. Returns (checks as expected, checks).
fn self_test_rdma(seed: u64) -> Result<(usize, usize)> {
    let page_size = 64;
    let peer_pages = min_lane_pages(1);
    let mut w = Workload::new((peer_pages + 64) * page_size, page_size, seed, false)?;
    w.first_local = peer_pages;
    w.fill();
    let mut book = RemoteBook::new(0, peer_pages, in_flight_max(1));
    let pw = w.page_words;
    // What the NIC does for the peer's write `seq`.
    let place = |w: &mut Workload, seq: u64| {
        let (page, generation) = peer_target(peer_pages, seq);
        let start = page as usize * pw;
        page_words(seed, page, generation, &mut w.mem.words_mut()[start..start + pw]);
    };
    fn look(book: &RemoteBook) -> impl FnMut(&mut Workload, u64) -> Look + '_ {
        move |w, p| if book.in_flight(w, p) { Look::InFlight } else { Look::Bad }
    }
    let mut results: Vec<(&str, bool)> = Vec::new();

    // Three sweeps of peer writes, the workload dirtying its own pages in between.
    for seq in 0..3 * peer_pages {
        place(&mut w, seq);
        book.apply(&mut w, &Notice::Write(seq).encode());
        if seq % 7 == 0 {
            w.dirty_next();
        }
    }
    let v = w.verify_with(look(&book));
    results.push(("peer writes", v.bad_pages == 0 && v.in_flight == 0 && w.counters_consistent() && book.ok()));

    // A write placed, its notice not applied yet: in flight, not bad.
    let seq = book.next_seq;
    place(&mut w, seq);
    let v = w.verify_with(look(&book));
    results.push(("write in flight", v.bad_pages == 0 && v.in_flight == 1));
    book.apply(&mut w, &Notice::Write(seq).encode());

    // A notice applied whose write never reached the page (a page rxe wrote and the migration
    // did not carry): the page holds the generation before.
    let seq = book.next_seq;
    book.apply(&mut w, &Notice::Write(seq).encode());
    let (page, generation) = peer_target(peer_pages, seq);
    let v = w.verify_with(look(&book));
    let want = BadPage { page, word: 0, expected_generation: generation, found_generation: Some(generation - 1), zero: false };
    results.push(("lost RDMA write", v.bad_pages == 1 && v.first_bad == Some(want)));
    place(&mut w, seq);

    // A notice that never arrived (its write did): a gap in the sequence.
    let mut b = book.clone();
    let seq = b.next_seq;
    place(&mut w, seq);
    place(&mut w, seq + 1);
    b.apply(&mut w, &Notice::Write(seq + 1).encode());
    results.push(("lost notice", !b.ok() && b.notice_errors == 1 && w.verify_with(look(&b)).bad_pages == 0));
    // The same notice twice.
    let mut d = b.clone();
    d.notice_errors = 0;
    d.apply(&mut w, &Notice::Write(seq + 1).encode());
    results.push(("repeated notice", !d.ok() && d.next_seq == seq + 2));
    book.next_seq = b.next_seq;

    // The peer's end: every write it made applied, or not.
    let mut e = book.clone();
    e.apply(&mut w, &Notice::End(book.next_seq + 1).encode());
    results.push(("peer total not all applied", !e.ok()));
    let mut e = book.clone();
    e.apply(&mut w, &Notice::End(book.next_seq).encode());
    results.push(("peer total all applied", e.ok()));

    // A damaged notice.
    let mut n = Notice::Write(book.next_seq).encode();
    n[9] ^= 4;
    results.push(("damaged notice", Notice::decode(&n).is_err()));

    results.push(("peer pages intact", w.verify_with(look(&book)).bad_pages == 0 && w.counters_consistent()));
    let mut caught = 0;
    for (name, good) in &results {
        note(&format!("self-test rdma {name}: {}", if *good { "ok" } else { "FAILED" }));
        caught += usize::from(*good);
    }
    Ok((caught, results.len()))
}

fn main() {
    let cli = Cli::parse();
    let code = if let Some(Cmd::Peer(a)) = &cli.cmd {
        match peer(a) {
            Ok(c) => c,
            Err(e) => {
                note(&format!("peer: error: {e:#}"));
                2
            }
        }
    } else if cli.self_test {
        match self_test(cli.seed) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                note(&format!("self-test: {e:#}"));
                2
            }
        }
    } else {
        match run(&cli) {
            Ok(c) => c,
            Err(e) => {
                note(&format!("error: {e:#}"));
                2
            }
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn checker_catches_damage() {
        assert!(self_test(7).unwrap());
    }

    #[test]
    fn checker_catches_lost_peer_writes() {
        let (caught, checks) = self_test_rdma(3).unwrap();
        assert_eq!(caught, checks);
    }

    #[test]
    fn notices_round_trip_and_peer_sweeps_pages() {
        for n in [Notice::Write(0), Notice::Write(u64::MAX / 3), Notice::End(12345)] {
            assert_eq!(Notice::decode(&n.encode()), Ok(n));
        }
        assert!(Notice::decode(&[0u8; 8]).is_err());
        assert_eq!(peer_target(10, 0), (0, 1));
        assert_eq!(peer_target(10, 9), (9, 1));
        assert_eq!(peer_target(10, 10), (0, 2));
        assert_eq!(peer_target(10, 35), (5, 4));
    }

    #[test]
    fn lanes_split_the_peers_pages_and_keep_one_qps_bounds() {
        // One QP: the bounds the workload had before it had lanes.
        assert_eq!((in_flight_max(1), min_lane_pages(1)), (194, 388));
        for qps in [1, 2, 3, 16, 64, 255, MAX_QPS] {
            let mut next = 0;
            for q in 0..qps {
                let (first, pages) = lane_pages(10_000, qps, q);
                assert_eq!(first, next, "lanes are contiguous");
                next = first + pages;
            }
            assert_eq!(next, 10_000);
            assert!(lane_window_max(qps) % 2 == 0 && lane_window_max(qps) >= 2);
            assert!(lane_recv_depth(qps) * qps <= RECV_DEPTH.max(8 * qps));
        }
    }

    #[test]
    fn each_lane_is_checked_on_its_own() {
        let qps = 2;
        let per = min_lane_pages(qps);
        let mut w = Workload::new((2 * per + 8) * 64, 64, 5, false).unwrap();
        w.first_local = 2 * per;
        w.fill();
        let mut books: Vec<RemoteBook> = (0..qps)
            .map(|q| {
                let (first, pages) = lane_pages(2 * per, qps, q);
                RemoteBook::new(first, pages, in_flight_max(qps))
            })
            .collect();
        let place = |w: &mut Workload, b: &RemoteBook, seq: u64| {
            let (rel, generation) = peer_target(b.pages, seq);
            let start = (b.first + rel) as usize * w.page_words;
            page_words(5, b.first + rel, generation, &mut w.mem.words_mut()[start..start + w.page_words]);
        };
        // Lane 1 runs ahead of lane 0: each lane's notices apply to its own pages only.
        for seq in 0..3 {
            place(&mut w, &books[0], seq);
            books[0].apply(&mut w, &Notice::Write(seq).encode());
        }
        for seq in 0..per + 5 {
            place(&mut w, &books[1], seq);
            books[1].apply(&mut w, &Notice::Write(seq).encode());
        }
        let v = w.verify_with(|w, p| if books.iter().any(|b| b.in_flight(w, p)) { Look::InFlight } else { Look::Bad });
        assert_eq!((v.bad_pages, v.in_flight), (0, 0));
        assert!(books.iter().all(|b| b.ok()));
        // A write placed in lane 0 whose notice has not come is in flight there, not bad.
        place(&mut w, &books[0], 3);
        assert!(books[0].in_flight(&w, books[0].first + 3) && !books[1].in_flight(&w, books[0].first + 3));
        // Lane 1's end with its own total; lane 0's with one write too many.
        books[1].apply(&mut w, &Notice::End(per + 5).encode());
        books[0].apply(&mut w, &Notice::End(4).encode());
        assert!(books[1].ok() && !books[0].ok());
    }

    #[test]
    fn own_dirtying_leaves_the_peers_pages_alone() {
        let mut w = Workload::new(64 * 4096, 4096, 9, false).unwrap();
        w.first_local = 40;
        w.fill();
        for _ in 0..2000 {
            w.dirty_next();
        }
        assert!(w.gens[..40].iter().all(|&g| g == 0));
        assert!(w.gens[40..].iter().any(|&g| g > 0));
        assert!(w.counters_consistent());
    }

    #[test]
    fn gap_meter_counts_only_waits_with_work_in_flight() {
        let t0 = Instant::now();
        let mut g = GapMeter { mark: None, max: Duration::ZERO, max_end: SystemTime::now() };
        g.posted(t0, 0);
        g.completed(t0 + Duration::from_millis(5), 0);
        // Idle for a second: not a gap.
        g.posted(t0 + Duration::from_secs(1), 0);
        g.completed(t0 + Duration::from_millis(1003), 1);
        g.completed(t0 + Duration::from_millis(1300), 0);
        assert_eq!(g.max, Duration::from_millis(297));
    }

    #[test]
    fn pacer_keeps_rate_and_does_not_catch_up() {
        let t0 = Instant::now();
        let mut p = Pacer::new(4096 * 100, 4096, t0); // 100 pages/s
        let mut total = 0;
        for i in 1..=100 {
            total += p.due(t0 + TICK * i);
        }
        assert_eq!(total, 100); // one second's worth
                                // A ten-minute freeze owes at most MAX_OWED of pages (10), not 60 000.
        let after = p.due(t0 + TICK * 100 + Duration::from_secs(600));
        assert!(after <= 10, "{after}");
        // A slow rate still progresses, one page at a time.
        let mut slow = Pacer::new(100, 4096, t0);
        let n: u64 = (1..=5000).map(|i| slow.due(t0 + TICK * i)).sum();
        assert_eq!(n, 1); // 50 s at 100 B/s = 5000 B: one 4 KiB page, the rest carried over
    }
}
