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

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use serde::Serialize;

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
update, a zeroed page, a page copied over another) and exits 0 only if the checker caught each.

Exit status: 0 all pages checked good, 1 a check failed (or the last report could not be
written), 2 usage or setup error.";

#[derive(Parser, Debug)]
#[command(name = "rdmig-workload", version, about = "A checkable memory workload for migration tests", long_about = LONG_ABOUT)]
struct Cli {
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
}

impl Workload {
    fn new(mem_bytes: u64, page_size: u64, seed: u64, huge_pages: bool) -> Result<Self> {
        ensure!(page_size >= 64 && page_size % 8 == 0, "--page-size must be a multiple of 8, at least 64");
        ensure!(mem_bytes > 0, "--mem must not be zero");
        let pages = mem_bytes.div_ceil(page_size);
        let bytes = usize::try_from(pages * page_size).context("--mem too large for this machine")?;
        let gens = vec![0u32; usize::try_from(pages).context("too many pages")?];
        Ok(Workload { mem: Region::new(bytes, huge_pages)?, gens, pages, page_words: (page_size / 8) as usize, seed, step: 0, dirtied_pages: 0 })
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

    /// Dirties the next page of the seeded sequence: a new generation, a new pattern.
    fn dirty_next(&mut self) {
        let page = mix(self.seed ^ mix(self.step.wrapping_add(GOLDEN))) % self.pages;
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

    fn explain(&self, page: u64, word: usize) -> BadPage {
        let expected = self.gens[page as usize];
        let start = page as usize * self.page_words;
        let zero = (0..self.page_words).all(|i| self.mem.read(start + i) == 0);
        let found_generation = (1..=STALE_LOOKBACK.min(expected)).map(|back| expected - back).find(|&g| self.mismatch(page, g).is_none());
        BadPage { page, word: word as u64, expected_generation: expected, found_generation, zero }
    }

    fn verify(&self) -> Verification {
        let mut bad_pages = 0;
        let mut first_bad = None;
        for p in 0..self.pages {
            if let Some((word, _)) = self.mismatch(p, self.gens[p as usize]) {
                bad_pages += 1;
                if first_bad.is_none() {
                    first_bad = Some(self.explain(p, word));
                }
            }
        }
        Verification { verified_pages: self.pages, bad_pages, first_bad }
    }

    fn generations_total(&self) -> u64 {
        self.gens.iter().map(|&g| u64::from(g)).sum()
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
    fn report(&mut self, w: &Workload, phase: &'static str) -> Result<bool> {
        let t = Instant::now();
        let v = w.verify();
        let verify_ms = (t.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let generations_total = w.generations_total();
        let counters_consistent = generations_total == w.dirtied_pages;
        let ok = v.bad_pages == 0 && v.verified_pages == w.pages && counters_consistent;
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
    // A failure to write the first report is fatal: the test waiting for it would hang.
    reporter.report(&w, "filled")?;

    let mut pacer = Pacer::new(cli.dirty_rate, w.page_size(), Instant::now());
    loop {
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return match reporter.report(&w, "verify") {
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
            if let Err(e) = reporter.report(&w, "verify") {
                note(&format!("report: {e:#}"));
            }
        }
        if cli.dirty_rate > 0 {
            for _ in 0..pacer.due(Instant::now()) {
                w.dirty_next();
            }
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
    ensure!(w.generations_total() == w.dirtied_pages, "generation counters out of step");

    w.debug_flip_bit(17, 100);
    let g = w.gens[17];
    check("flipped bit", w.verify(), Some(BadPage { page: 17, word: 100, expected_generation: g, found_generation: None, zero: false }));
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
    let all = caught == 7;
    note(&format!("self-test: {caught}/7 checks as expected: {}", if all { "ok" } else { "FAILED" }));
    Ok(all)
}

fn main() {
    let cli = Cli::parse();
    let code = if cli.self_test {
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
