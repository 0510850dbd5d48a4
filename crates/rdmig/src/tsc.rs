//! The CPU's time-stamp counter as a migrated process sees it.
//!
//! Applications that time themselves with `rdtsc` (perftest does, for every bandwidth it
//! reports) read the TSC of whichever host they run on. Linux gives a process no TSC offset of
//! its own, so after a migration the counter a process reads jumps by the difference between the
//! two hosts' counters, and runs at the destination's rate. rdmig cannot hide that; it measures
//! it before the freeze, reports it (`tsc` in the migration report) and says so when it matters.
//!
//! A sample pairs one `rdtsc` with CLOCK_MONOTONIC read just before and just after it; of a few
//! tries the one with the tightest bracket is kept, so a preemption between the reads does not
//! spoil it. Two samples some milliseconds apart give the rate; a sample of each host on the same
//! (offset-corrected) monotonic time gives the step.

use std::time::Duration;

// The facts travel in the destination's `HostFacts`, so the protocol crate defines them.
pub use rdmig_proto::msg::{TscFacts, TscSample};
use serde::{Deserialize, Serialize};

/// What a process migrated between two hosts will see of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TscChange {
    pub source_khz: u64,
    pub destination_khz: u64,
    /// How far the counter jumps at the move, in source ticks converted to ns (positive: it
    /// leaps ahead; negative: it goes back, so a process sees time run backwards).
    pub step_ns: i64,
    /// The same jump in counter ticks: what a process that subtracts two `rdtsc` readings
    /// taken either side of the move finds added to its difference.
    pub step_ticks: i64,
    /// destination rate / source rate - 1.
    pub rate_change: f64,
}

impl TscChange {
    /// A step larger than this, or a rate change beyond `RATE_TOLERANCE`, is worth a warning:
    /// an application's own timings across the move will be wrong by it.
    pub const STEP_TOLERANCE_NS: i64 = 1_000_000;
    pub const RATE_TOLERANCE: f64 = 0.001;

    /// A sentence for a person when the change matters to applications that use the TSC.
    pub fn warning(&self) -> Option<String> {
        let step = self.step_ns.unsigned_abs() > Self::STEP_TOLERANCE_NS.unsigned_abs();
        let rate = self.rate_change.abs() > Self::RATE_TOLERANCE;
        (step || rate).then(|| {
            format!(
                "the destination's TSC differs: a process timing itself with rdtsc sees it jump by {:+.3} s at the move{}",
                self.step_ns as f64 / 1e9,
                if rate { format!(" and run {:+.2} % faster afterwards", self.rate_change * 100.0) } else { String::new() }
            )
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU and only reads the counter; Linux does not
    // forbid it to this process unless it asked with prctl(PR_SET_TSC), which rdmig never does.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// One sample: of `tries` brackets, the tightest.
#[cfg(target_arch = "x86_64")]
pub fn sample(tries: usize) -> TscSample {
    let mut best: Option<TscSample> = None;
    for _ in 0..tries.max(1) {
        let a = monotonic_ns();
        let tsc = rdtsc();
        let b = monotonic_ns();
        let s = TscSample { tsc, mono_ns: a + (b - a) / 2, uncertainty_ns: (b - a).div_ceil(2) };
        if best.is_none_or(|x| s.uncertainty_ns < x.uncertainty_ns) {
            best = Some(s);
        }
    }
    best.expect("at least one try")
}

/// This host's counter: a sample now and its rate over `over` (a few tens of ms is plenty: the
/// bracket is a few µs).
#[cfg(target_arch = "x86_64")]
pub fn facts(over: Duration) -> TscFacts {
    let a = sample(16);
    std::thread::sleep(over);
    let b = sample(16);
    TscFacts { sample: b, khz: rate_khz(&a, &b) }
}

/// Ticks per ms between two samples of one host.
pub fn rate_khz(a: &TscSample, b: &TscSample) -> u64 {
    let dt = b.mono_ns.saturating_sub(a.mono_ns).max(1) as u128;
    (b.tsc.wrapping_sub(a.tsc) as u128 * 1_000_000 / dt) as u64
}

/// The change a process sees when it moves from `src` to `dst`, given the destination's
/// monotonic clock minus the source's (`offset_ns`, from rdmig's clock sync).
///
/// The destination's facts come from another host: whatever they say, the arithmetic saturates
/// rather than overflows.
pub fn change(src: &TscFacts, dst: &TscFacts, offset_ns: i64) -> TscChange {
    // The destination's sample, on the source's monotonic clock.
    let dst_at = dst.sample.mono_ns as i128 - offset_ns as i128;
    // The source's counter extrapolated to that instant.
    let src_tsc_then = src.sample.tsc as i128 + (dst_at - src.sample.mono_ns as i128).saturating_mul(src.khz as i128) / 1_000_000;
    let step_ticks = dst.sample.tsc as i128 - src_tsc_then;
    let step_ns = step_ticks.saturating_mul(1_000_000) / src.khz.max(1) as i128;
    let clamp = |v: i128| v.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    TscChange {
        source_khz: src.khz,
        destination_khz: dst.khz,
        step_ns: clamp(step_ns),
        step_ticks: clamp(step_ticks),
        rate_change: dst.khz as f64 / src.khz.max(1) as f64 - 1.0,
    }
}

/// How long `measure` times the counter: the brackets are a few µs at worst (a busy VM), so
/// 20 ms puts the rate within about 1e-4, a tenth of `RATE_TOLERANCE`, and the extrapolation
/// over the checks' fraction of a second well inside `STEP_TOLERANCE_NS`.
pub const MEASURE_OVER: Duration = Duration::from_millis(20);

/// This host's counter for its `HostFacts`, measured on a blocking thread (it sleeps
/// `MEASURE_OVER`) so that the agent's other connections go on meanwhile.
#[cfg(target_arch = "x86_64")]
pub async fn measure() -> Option<TscFacts> {
    match tokio::task::spawn_blocking(|| facts(MEASURE_OVER)).await {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!("measuring the TSC: {e}");
            None
        }
    }
}

/// No TSC to measure on this architecture.
#[cfg(not(target_arch = "x86_64"))]
pub async fn measure() -> Option<TscFacts> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_at(tsc: u64, mono_ns: u64, khz: u64) -> TscFacts {
        TscFacts { sample: TscSample { tsc, mono_ns, uncertainty_ns: 0 }, khz }
    }

    #[test]
    fn same_counter_on_both_hosts_is_no_change() {
        // 2.6 GHz, both counters started together, the monotonic clocks 5 s apart.
        let src = facts_at(2_600_000 * 10_000, 10_000_000_000, 2_600_000);
        let dst = facts_at(2_600_000 * 10_000, 15_000_000_000, 2_600_000);
        let c = change(&src, &dst, 5_000_000_000);
        assert_eq!(c.step_ns, 0);
        assert!(c.warning().is_none());
    }

    #[test]
    fn a_host_booted_later_makes_the_counter_go_back() {
        // The destination's counter started 20 s after the source's.
        let src = facts_at(2_600_000 * 100_000, 100_000_000_000, 2_600_000);
        let dst = facts_at(2_600_000 * 80_000, 80_000_000_000, 2_600_000);
        let c = change(&src, &dst, -20_000_000_000);
        assert_eq!(c.step_ns, -20_000_000_000);
        assert!(c.warning().unwrap().contains("-20.000 s"), "{:?}", c.warning());
    }

    #[test]
    fn a_known_offset_gives_the_step_in_ns_and_ticks() {
        // 3 GHz on both. The destination's monotonic clock reads 7 s more than the source's,
        // and its counter is 2 s (6e9 ticks) ahead of where the source's would be.
        let khz = 3_000_000;
        let src = facts_at(50_000_000_000, 40_000_000_000, khz);
        // 250 ms later on the source's clock: the source's counter would read 50e9 + 0.75e9.
        let dst = facts_at(50_750_000_000 + 6_000_000_000, 47_250_000_000, khz);
        let c = change(&src, &dst, 7_000_000_000);
        assert_eq!((c.step_ns, c.step_ticks), (2_000_000_000, 6_000_000_000));
        assert_eq!((c.source_khz, c.destination_khz, c.rate_change), (khz, khz, 0.0));
        // Read with the wrong offset, the same samples put the difference in the step.
        assert_eq!(change(&src, &dst, 6_999_000_000).step_ns, 2_000_000_000 - 1_000_000);
        // Within the tolerance: nothing to say.
        let close = facts_at(50_750_000_000 + 2_999_999, 47_250_000_000, khz);
        assert_eq!(change(&src, &close, 7_000_000_000).step_ns, 999_999);
        assert!(change(&src, &close, 7_000_000_000).warning().is_none());
    }

    #[test]
    fn absurd_facts_from_a_peer_saturate() {
        let src = facts_at(0, 0, u64::MAX);
        let dst = facts_at(u64::MAX, u64::MAX, 0);
        let c = change(&src, &dst, i64::MIN);
        assert_eq!(c.destination_khz, 0);
        let c = change(&dst, &src, i64::MAX);
        assert_eq!((c.step_ns, c.step_ticks), (i64::MIN, i64::MIN));
        assert!(c.warning().is_some());
    }

    #[test]
    fn another_rate_is_reported() {
        let src = facts_at(0, 0, 2_600_000);
        let dst = facts_at(0, 0, 3_000_000);
        let c = change(&src, &dst, 0);
        assert!((c.rate_change - 0.1538).abs() < 1e-3);
        assert!(c.warning().unwrap().contains("faster"));
    }

    #[test]
    fn the_report_names_each_number() {
        // The migration report's `tsc`, as `rdmig migrate --json` prints it.
        let c = TscChange { source_khz: 2_600_000, destination_khz: 2_600_000, step_ns: -20_000_000_000, step_ticks: -52_000_000_000, rate_change: 0.0 };
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            serde_json::json!({"source_khz": 2_600_000, "destination_khz": 2_600_000, "step_ns": -20_000_000_000i64, "step_ticks": -52_000_000_000i64, "rate_change": 0.0})
        );
    }

    /// What the agent puts into its facts: measured off the runtime's thread, so that a
    /// one-thread runtime still runs other tasks during the `MEASURE_OVER` it takes.
    #[cfg(target_arch = "x86_64")]
    #[tokio::test(flavor = "current_thread")]
    async fn measure_leaves_the_runtime_free() {
        let m = measure();
        tokio::pin!(m);
        // Had `measure` slept on this thread, its first poll would have returned the facts.
        let first = tokio::select! {
            biased;
            f = &mut m => Some(f),
            () = tokio::task::yield_now() => None,
        };
        assert!(first.is_none(), "measure held the runtime's thread");
        let f = m.await.expect("x86_64 has a TSC");
        assert!((500_000..6_000_000).contains(&f.khz), "{} kHz", f.khz);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn this_hosts_counter_runs_forward_at_a_plausible_rate() {
        let f = facts(Duration::from_millis(20));
        // Any x86_64 of the last twenty years: 0.5 to 6 GHz.
        assert!((500_000..6_000_000).contains(&f.khz), "{} kHz", f.khz);
        let s = sample(4);
        assert!(s.tsc > f.sample.tsc && s.mono_ns > f.sample.mono_ns);
        // On this one host the step is within the brackets' uncertainty (plus a little).
        let c = change(&f, &facts(Duration::from_millis(20)), 0);
        assert!(c.step_ns.abs() < 1_000_000, "{c:?}");
    }
}
