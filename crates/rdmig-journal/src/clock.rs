//! The two clocks every event carries.

use nix::time::{clock_gettime, ClockId};

fn ns(clock: ClockId) -> i128 {
    // Both clocks exist on every Linux; failing to read one is not a state to recover from.
    let t = clock_gettime(clock).expect("clock_gettime on CLOCK_REALTIME/CLOCK_MONOTONIC");
    i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
}

/// CLOCK_REALTIME in ns since the Unix epoch (saturating: past the year 2262 it stops).
pub fn wall_ns() -> i64 {
    i64::try_from(ns(ClockId::CLOCK_REALTIME)).unwrap_or(i64::MAX)
}

/// CLOCK_MONOTONIC in ns: the clock `rdmig`'s timeline uses too.
pub(crate) fn mono_ns() -> u64 {
    u64::try_from(ns(ClockId::CLOCK_MONOTONIC)).unwrap_or(0)
}
