//! A fixed-rate sampler of a SoftRoCE port's packet counters: what a peer observes while the
//! process it talks to is migrated (throughput over time, and the gap with nothing received).
//!
//! The counters are rxe's `hw_counters` in sysfs, read every `interval` (at most 5 ms, so that
//! a pause of a few ms is still visible). Deadlines are absolute (`clock_nanosleep` with
//! `TIMER_ABSTIME` on `CLOCK_MONOTONIC`): a late wake-up does not push every later sample back,
//! and a missed deadline is counted as an overrun instead of being made up for with a burst.
//! Samples stay in a vector allocated (and touched) before the first one, so the loop itself
//! neither allocates nor writes files; the file is written once, at the end.
//!
//! The kernel caches hw_counters for the port's `lifespan` (10 ms by default) and refreshes them
//! at most once per jiffy even with a lifespan of 0 (4 ms with Debian's HZ=250). The sampler sets
//! the lifespan to 0 for its run (root only; restored afterwards), so what it sees is at most one
//! jiffy old; per-window rates still alternate between "nothing" and "twice as much" when the
//! interval is shorter than a jiffy, which a moving average over a few windows evens out.

use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::time::{clock_nanosleep, ClockId, ClockNanosleepFlags};
use serde::{Deserialize, Serialize};

use crate::timeline::monotonic_ns;

/// Where the kernel lists RDMA devices.
pub const SYSFS_INFINIBAND: &str = "/sys/class/infiniband";
/// The counters sampled, in the order of `Sample`'s fields.
pub const COUNTERS: [&str; 4] = ["rcvd_pkts", "sent_pkts", "rdma_recvs", "rdma_sends"];
/// Coarser sampling would hide the short pauses this sampler is for.
pub const MAX_INTERVAL: Duration = Duration::from_millis(5);
/// Finer sampling than this only measures the sampler itself (and the counter cache).
pub const MIN_INTERVAL: Duration = Duration::from_micros(100);
/// How often the watched process is looked up: often enough to stop promptly, rarely enough to
/// cost nothing next to the counter reads.
const PID_CHECK_PERIOD: Duration = Duration::from_millis(100);

/// One reading of the port's counters. `t_ns` is CLOCK_MONOTONIC just before the reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub t_ns: u64,
    pub rcvd_pkts: u64,
    pub sent_pkts: u64,
    pub rdma_recvs: u64,
    pub rdma_sends: u64,
}

/// Statistics of the achieved spacing between consecutive samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalStats {
    pub median_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// What ended a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "stopped_by")]
pub enum Stop {
    /// The watched process exited (or became a zombie).
    PidExited {
        pid: i32,
    },
    Duration,
    /// SIGTERM or SIGINT (or the caller's stop flag).
    Signal,
    /// Reading a counter failed; the samples before it are kept.
    Error {
        error: String,
    },
}

/// A finished run, as written to the output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRun {
    pub device: String,
    pub port: u32,
    /// The clock of every `t_ns` (the sampling node's own; not comparable across nodes).
    pub clock: String,
    /// The period asked for.
    pub interval_ns: u64,
    /// The kernel's counter cache lifespan during the run, ms, when the port has one.
    pub counter_lifespan_ms: Option<u32>,
    pub achieved: IntervalStats,
    /// Deadlines that had already passed when the sampler was ready for them (each overrun
    /// skips `missed_periods / overruns` periods on average).
    pub overruns: u64,
    pub missed_periods: u64,
    pub stop: Stop,
    pub samples: Vec<Sample>,
}

impl SampleRun {
    pub fn read(path: &Path) -> Result<SampleRun> {
        let f = File::open(path).with_context(|| format!("open samples file {}", path.display()))?;
        serde_json::from_reader(std::io::BufReader::new(f)).with_context(|| format!("{} is not a samples file of `rdmig rxe sample`", path.display()))
    }

    /// Writes through a temporary file and a rename, so a reader never sees half a file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |e| anyhow::Error::new(e).context(format!("write {}", path.display()));
        crate::atomic_file::replace_with(path, io, |tmp| {
            let f = File::create(tmp).with_context(|| format!("create {}", tmp.display()))?;
            let mut w = BufWriter::new(f);
            serde_json::to_writer(&mut w, self).with_context(|| format!("write {}", tmp.display()))?;
            w.write_all(b"\n").and_then(|()| w.flush()).with_context(|| format!("write {}", tmp.display()))
        })
    }
}

#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// `/sys/class/infiniband`, or a fake tree for tests.
    pub sysfs: PathBuf,
    /// `/proc`, or a fake tree for tests.
    pub proc: PathBuf,
    pub device: String,
    pub port: u32,
    pub interval: Duration,
    /// Stop when this process exits.
    pub until_exit: Option<i32>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Without `duration`: how long a run to allocate for up front (longer runs grow the vector,
    /// which costs an overrun or two each time).
    pub expected: Duration,
    /// Set the counters' cache lifespan to 0 for the run (and restore it).
    pub fresh_counters: bool,
}

impl SampleOptions {
    pub fn new(device: &str, port: u32, interval: Duration) -> SampleOptions {
        SampleOptions {
            sysfs: PathBuf::from(SYSFS_INFINIBAND),
            proc: PathBuf::from("/proc"),
            device: device.to_string(),
            port,
            interval,
            until_exit: None,
            duration: None,
            expected: Duration::from_secs(600),
            fresh_counters: true,
        }
    }

    fn counters_dir(&self) -> PathBuf {
        self.sysfs.join(&self.device).join("ports").join(self.port.to_string()).join("hw_counters")
    }
}

/// The counter files, open for the whole run: each sample is one positioned read per file
/// (sysfs regenerates an attribute on every read at offset 0), no open or close.
struct Counters {
    files: Vec<(PathBuf, File)>,
}

impl Counters {
    fn open(dir: &Path, device: &str) -> Result<Counters> {
        if !dir.is_dir() {
            bail!("{} does not exist: no RDMA device {device} with that port here (is rdma_rxe loaded and `rdma link add` done?)", dir.display());
        }
        let files = COUNTERS
            .iter()
            .map(|name| {
                let p = dir.join(name);
                let f = File::open(&p).with_context(|| format!("open counter {}", p.display()))?;
                Ok((p, f))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Counters { files })
    }

    fn read(&self) -> Result<[u64; 4]> {
        let mut out = [0u64; 4];
        let mut buf = [0u8; 32];
        for (slot, (path, f)) in out.iter_mut().zip(&self.files) {
            let n = f.read_at(&mut buf, 0).with_context(|| format!("read {}", path.display()))?;
            *slot = parse_counter(&buf[..n]).with_context(|| format!("{} does not hold a counter", path.display()))?;
        }
        Ok(out)
    }
}

fn parse_counter(b: &[u8]) -> Result<u64> {
    let s = std::str::from_utf8(b).context("not text")?.trim();
    s.parse().with_context(|| format!("{s:?} is not a number"))
}

/// Whether `pid` still runs: its /proc entry exists and it is not a zombie (a spawned process
/// whose parent has not reaped it yet has exited as far as anyone watching it cares).
pub fn pid_alive(proc: &Path, pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(proc.join(pid.to_string()).join("stat")) else { return false };
    // The command name in parentheses may itself contain ") ": the state follows the last one.
    match stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) {
        Some(state) => !matches!(state, "Z" | "X" | "x"),
        None => false,
    }
}

/// The port's counter cache lifespan: set to 0 while sampling, put back when dropped.
struct Lifespan {
    path: PathBuf,
    original: Option<u32>,
    during: Option<u32>,
}

impl Lifespan {
    fn new(dir: &Path, fresh: bool) -> Lifespan {
        let path = dir.join("lifespan");
        let original = fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
        let mut during = original;
        if fresh && original.is_some_and(|v| v != 0) && fs::write(&path, "0").is_ok() {
            during = Some(0);
        }
        Lifespan { path, original, during }
    }
}

impl Drop for Lifespan {
    fn drop(&mut self) {
        if let (Some(o), Some(d)) = (self.original, self.during) {
            if o != d {
                // Best effort: a lifespan left at 0 only makes other readers refresh more often.
                let _ = fs::write(&self.path, o.to_string());
            }
        }
    }
}

/// Median, 99th percentile and maximum of the spacing of consecutive samples.
pub fn interval_stats(samples: &[Sample]) -> IntervalStats {
    let mut d: Vec<u64> = samples.windows(2).map(|w| w[1].t_ns.saturating_sub(w[0].t_ns)).collect();
    if d.is_empty() {
        return IntervalStats::default();
    }
    d.sort_unstable();
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    IntervalStats { median_ns: at(0.5), p99_ns: at(0.99), max_ns: d[d.len() - 1] }
}

fn timespec(ns: u64) -> TimeSpec {
    TimeSpec::new((ns / 1_000_000_000) as _, (ns % 1_000_000_000) as _)
}

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns`; a signal ends the sleep early only when
/// it raised `stop`.
fn sleep_until(deadline_ns: u64, stop: &AtomicBool) -> Result<()> {
    let ts = timespec(deadline_ns);
    loop {
        match clock_nanosleep(ClockId::CLOCK_MONOTONIC, ClockNanosleepFlags::TIMER_ABSTIME, &ts) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) if stop.load(Ordering::Relaxed) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e).context("clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)"),
        }
    }
}

/// Samples until the watched process exits, the duration is over, or `stop` is raised. Set-up
/// problems (no such device or process, a bad interval) are errors; a counter that fails to
/// read later ends the run with `Stop::Error`, keeping the samples taken so far.
pub fn run(o: &SampleOptions, stop: &AtomicBool) -> Result<SampleRun> {
    if o.interval < MIN_INTERVAL || o.interval > MAX_INTERVAL {
        bail!(
            "sampling interval {} µs is outside {}..={} µs (a pause of a few ms must stay visible)",
            o.interval.as_micros(),
            MIN_INTERVAL.as_micros(),
            MAX_INTERVAL.as_micros()
        );
    }
    if let Some(pid) = o.until_exit {
        if !pid_alive(&o.proc, pid) {
            bail!("process {pid} does not run (has it finished already?); nothing to sample until its exit");
        }
    }
    let dir = o.counters_dir();
    let counters = Counters::open(&dir, &o.device)?;
    let lifespan = Lifespan::new(&dir, o.fresh_counters);

    let interval_ns = o.interval.as_nanos() as u64;
    let planned = o.duration.unwrap_or(o.expected);
    let capacity = (planned.as_nanos() as u64 / interval_ns + 2) as usize;
    let mut samples: Vec<Sample> = Vec::with_capacity(capacity);
    // Touch every page now: first-touch page faults inside the loop would be overruns.
    samples.resize(capacity, Sample::default());
    samples.clear();

    let pid_check_every = (PID_CHECK_PERIOD.as_nanos() as u64 / interval_ns).max(1);
    let (mut overruns, mut missed_periods) = (0u64, 0u64);
    let start = monotonic_ns();
    let end = o.duration.map(|d| start + d.as_nanos() as u64);
    let mut next = start;
    let mut k = 0u64;
    let stop_reason = loop {
        let t_ns = monotonic_ns();
        match counters.read() {
            Ok([rcvd_pkts, sent_pkts, rdma_recvs, rdma_sends]) => samples.push(Sample { t_ns, rcvd_pkts, sent_pkts, rdma_recvs, rdma_sends }),
            Err(e) => break Stop::Error { error: format!("{e:#}") },
        }
        k += 1;
        if stop.load(Ordering::Relaxed) {
            break Stop::Signal;
        }
        if end.is_some_and(|e| t_ns >= e) {
            break Stop::Duration;
        }
        if let Some(pid) = o.until_exit {
            if k % pid_check_every == 0 && !pid_alive(&o.proc, pid) {
                break Stop::PidExited { pid };
            }
        }
        next += interval_ns;
        let now = monotonic_ns();
        if now >= next {
            // Late: skip the deadlines already gone rather than sampling in a burst, so the
            // samples stay on the grid and the windows keep their length.
            let missed = (now - next) / interval_ns + 1;
            overruns += 1;
            missed_periods += missed;
            next += missed * interval_ns;
        }
        if let Err(e) = sleep_until(next, stop) {
            break Stop::Error { error: format!("{e:#}") };
        }
    };
    Ok(SampleRun {
        device: o.device.clone(),
        port: o.port,
        clock: "CLOCK_MONOTONIC".into(),
        interval_ns,
        counter_lifespan_ms: lifespan.during,
        achieved: interval_stats(&samples),
        overruns,
        missed_periods,
        stop: stop_reason,
        samples,
    })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    STOP.store(true, Ordering::Relaxed);
}

/// Installs SIGTERM and SIGINT handlers that raise the returned flag, so `run` ends and its
/// caller still writes the samples taken.
pub fn stop_on_signals() -> Result<&'static AtomicBool> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    // No SA_RESTART: the sleep returns EINTR, so the run ends at once, not at the next deadline.
    let act = SigAction::new(SigHandler::Handler(on_stop_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &act) }.with_context(|| format!("install a handler for {sig}"))?;
    }
    Ok(&STOP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    /// A fake sysfs tree with rxe0 port 1's counters and a lifespan file.
    fn fake_sysfs(values: [u64; 4], lifespan: Option<u32>) -> (tempfile::TempDir, SampleOptions) {
        let d = tempfile::tempdir().unwrap();
        let hw = d.path().join("rxe0/ports/1/hw_counters");
        fs::create_dir_all(&hw).unwrap();
        for (name, v) in COUNTERS.iter().zip(values) {
            fs::write(hw.join(name), format!("{v}\n")).unwrap();
        }
        if let Some(l) = lifespan {
            fs::write(hw.join("lifespan"), format!("{l}\n")).unwrap();
        }
        let mut o = SampleOptions::new("rxe0", 1, Duration::from_millis(2));
        o.sysfs = d.path().to_path_buf();
        (d, o)
    }

    #[test]
    fn samples_at_the_interval_for_the_duration() {
        let (_d, mut o) = fake_sysfs([11, 22, 33, 44], None);
        o.duration = Some(Duration::from_millis(100));
        let r = run(&o, &AtomicBool::new(false)).unwrap();
        assert_eq!(r.stop, Stop::Duration);
        // 51 on an idle machine; fewer when the test machine is busy (overruns skip deadlines).
        assert!((10..=52).contains(&r.samples.len()), "{} samples", r.samples.len());
        // Every deadline up to the end is sampled or counted as missed (one very late wake-up
        // past the end can end the run a deadline or two early).
        let accounted = r.samples.len() as u64 + r.missed_periods;
        assert!((45..=51).contains(&accounted), "{accounted} deadlines accounted for");
        let s = r.samples[0];
        assert_eq!((s.rcvd_pkts, s.sent_pkts, s.rdma_recvs, s.rdma_sends), (11, 22, 33, 44));
        assert!(r.samples.windows(2).all(|w| w[1].t_ns > w[0].t_ns));
        // Absolute deadlines: the median spacing is the interval unless the machine is swamped.
        assert!((1_500_000..=6_000_000).contains(&r.achieved.median_ns), "{:?}", r.achieved);
        assert_eq!(r.counter_lifespan_ms, None);
    }

    #[test]
    fn stops_when_the_watched_process_exits_even_unreaped() {
        let (_d, mut o) = fake_sysfs([0; 4], None);
        // Not waited for until the run is over: it is a zombie by then, which counts as exited.
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
        o.until_exit = Some(child.id() as i32);
        o.duration = Some(Duration::from_secs(20));
        let t0 = Instant::now();
        let r = run(&o, &AtomicBool::new(false)).unwrap();
        child.wait().unwrap();
        assert_eq!(r.stop, Stop::PidExited { pid: child.id() as i32 });
        assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    }

    #[test]
    fn a_raised_flag_ends_the_run_and_the_file_is_still_written() {
        let (d, mut o) = fake_sysfs([1, 2, 3, 4], None);
        o.duration = Some(Duration::from_secs(20));
        let stop = AtomicBool::new(false);
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                stop.store(true, Ordering::Relaxed);
            });
            run(&o, &stop).unwrap()
        });
        assert_eq!(r.stop, Stop::Signal);
        let out = d.path().join("samples.json");
        r.write(&out).unwrap();
        let back = SampleRun::read(&out).unwrap();
        assert_eq!(back, r);
        let raw: serde_json::Value = serde_json::from_str(&fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(raw["stop"]["stopped_by"], "signal");
        assert!(raw["samples"][0]["rcvd_pkts"].is_u64());
    }

    #[test]
    fn lifespan_is_zero_while_sampling_and_restored_after() {
        let (d, mut o) = fake_sysfs([0; 4], Some(10));
        o.duration = Some(Duration::from_millis(10));
        let r = run(&o, &AtomicBool::new(false)).unwrap();
        assert_eq!(r.counter_lifespan_ms, Some(0));
        let l = fs::read_to_string(d.path().join("rxe0/ports/1/hw_counters/lifespan")).unwrap();
        assert_eq!(l.trim(), "10");
    }

    #[test]
    fn refuses_a_missing_device_a_slow_interval_and_a_finished_process() {
        let (_d, mut o) = fake_sysfs([0; 4], None);
        o.device = "rxe9".into();
        let e = run(&o, &AtomicBool::new(false)).unwrap_err().to_string();
        assert!(e.contains("rxe9/ports/1/hw_counters does not exist"), "{e}");

        let (_d, mut o) = fake_sysfs([0; 4], None);
        o.interval = Duration::from_millis(10);
        let e = run(&o, &AtomicBool::new(false)).unwrap_err().to_string();
        assert!(e.contains("10000 µs is outside"), "{e}");

        let (_d, mut o) = fake_sysfs([0; 4], None);
        o.until_exit = Some(i32::MAX);
        let e = run(&o, &AtomicBool::new(false)).unwrap_err().to_string();
        assert!(e.contains("does not run"), "{e}");
    }

    #[test]
    fn a_counter_that_stops_reading_ends_the_run_with_the_samples_kept() {
        let (d, mut o) = fake_sysfs([5; 4], None);
        o.duration = Some(Duration::from_secs(20));
        let hw = d.path().join("rxe0/ports/1/hw_counters");
        let r = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                // Same inode (the sampler keeps it open), now not a number.
                fs::OpenOptions::new().write(true).open(hw.join("sent_pkts")).unwrap().write_all(b"x\n").unwrap();
            });
            run(&o, &AtomicBool::new(false)).unwrap()
        });
        match &r.stop {
            Stop::Error { error } => assert!(error.contains("sent_pkts does not hold a counter"), "{error}"),
            other => panic!("stopped by {other:?}"),
        }
        assert!(!r.samples.is_empty());
    }

    #[test]
    fn zombies_and_odd_command_names() {
        let d = tempfile::tempdir().unwrap();
        let put = |pid: i32, stat: &str| {
            fs::create_dir_all(d.path().join(pid.to_string())).unwrap();
            fs::write(d.path().join(pid.to_string()).join("stat"), stat).unwrap();
        };
        put(10, "10 (ib_send_bw) R 1 10 10 0 -1");
        put(11, "11 (a) Z (b) S 1 11 11 0 -1");
        put(12, "12 (odd) R) Z 1 12 12 0 -1");
        assert!(pid_alive(d.path(), 10));
        assert!(pid_alive(d.path(), 11), "the state follows the last ')'");
        assert!(!pid_alive(d.path(), 12));
        assert!(!pid_alive(d.path(), 13));
    }

    #[test]
    fn interval_statistics() {
        let s: Vec<Sample> = [0u64, 2, 4, 6, 8, 10, 20].iter().map(|&t| Sample { t_ns: t, ..Default::default() }).collect();
        assert_eq!(interval_stats(&s), IntervalStats { median_ns: 2, p99_ns: 10, max_ns: 10 });
        assert_eq!(interval_stats(&s[..1]), IntervalStats::default());
    }
}
