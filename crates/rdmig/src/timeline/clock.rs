//! The offset between two nodes' monotonic clocks, from NTP-style probes.

use serde::{Deserialize, Serialize};

use super::TimelineError;

/// One probe: the local node sends at `t0` (local clock), the remote receives at `t1` and
/// answers at `t2` (remote clock), the local node receives at `t3` (local clock). All ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSample {
    pub t0: u64,
    pub t1: u64,
    pub t2: u64,
    pub t3: u64,
}

impl ClockSample {
    /// Takes one sample around `ask`, which must send a probe and return the remote's
    /// (receive, send) readings of its `monotonic_ns()`.
    pub fn measure<E>(ask: impl FnOnce() -> Result<(u64, u64), E>) -> Result<ClockSample, E> {
        let t0 = super::monotonic_ns();
        let (t1, t2) = ask()?;
        let t3 = super::monotonic_ns();
        Ok(ClockSample { t0, t1, t2, t3 })
    }

    /// Round trip less the remote's hold time; None if the readings are impossible.
    pub fn rtt_ns(&self) -> Option<u64> {
        let round = self.t3.checked_sub(self.t0)?;
        let hold = self.t2.checked_sub(self.t1)?;
        round.checked_sub(hold)
    }

    /// remote − local, taking the one-way delays as equal (the midpoint of the bounds below).
    pub fn offset_ns(&self) -> Option<i64> {
        self.rtt_ns()?;
        let (t0, t1, t2, t3) = (self.t0 as i128, self.t1 as i128, self.t2 as i128, self.t3 as i128);
        i64::try_from(((t1 - t0) + (t2 - t3)).div_euclid(2)).ok()
    }
}

/// remote − local: a remote time `r` is local time `r - offset_ns`, give or take
/// `uncertainty_ns`. Does not account for the clocks drifting apart after the probes, so probe
/// close to the events being compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetEstimate {
    pub offset_ns: i64,
    /// Round trip (less the remote's hold time) of the sample used.
    pub rtt_ns: u64,
    /// Half that round trip, rounded up: a hard bound on the error of `offset_ns`.
    pub uncertainty_ns: u64,
    /// Usable samples the estimate was chosen from.
    pub samples: usize,
}

impl OffsetEstimate {
    /// For two nodes that read the same clock (two roles on one host, or a test).
    pub fn same_clock() -> Self {
        OffsetEstimate { offset_ns: 0, rtt_ns: 0, uncertainty_ns: 0, samples: 0 }
    }

    /// A remote time on the local clock; None if it falls outside u64.
    pub fn to_local(&self, remote_ns: u64) -> Option<u64> {
        u64::try_from(remote_ns as i128 - self.offset_ns as i128).ok()
    }
}

/// Chooses the sample with the smallest round trip.
///
/// Why the minimum and not a mean or median: the remote's receive must lie between t0 and t3
/// and its send too, which bounds the offset to [t2 − t3, t1 − t0], an interval exactly one
/// round trip wide whose midpoint is the sample's estimate. Whatever the network or the
/// schedulers did, the true offset is inside it. Delays (queueing, a descheduled vCPU) only ever
/// widen it, and usually on one side only, which shifts the midpoint; averaging would let those
/// shifted midpoints in, while the narrowest interval is the one that admits the least error.
pub fn estimate_offset(samples: &[ClockSample]) -> Result<OffsetEstimate, TimelineError> {
    let usable: Vec<(u64, &ClockSample)> = samples.iter().filter_map(|s| Some((s.rtt_ns()?, s))).collect();
    // min_by_key keeps the first of equal round trips, so the choice is deterministic.
    let &(rtt_ns, best) = usable.iter().min_by_key(|(rtt, _)| *rtt).ok_or(TimelineError::NoClockSamples { given: samples.len() })?;
    let offset_ns = best.offset_ns().ok_or(TimelineError::OffsetOutOfRange)?;
    Ok(OffsetEstimate { offset_ns, rtt_ns, uncertainty_ns: rtt_ns.div_ceil(2), samples: usable.len() })
}
