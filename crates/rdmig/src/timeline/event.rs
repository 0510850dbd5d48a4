//! Events and the recorder that stamps them with a sequence number and the node's clock.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Free-form facts about an event. Numbers the summary reads: "pages" and "bytes" (unsigned).
pub type Attrs = BTreeMap<String, serde_json::Value>;

/// Builds attributes from pairs: `attrs([("pages", 1024u64), ("bytes", 4 << 20)])`.
pub fn attrs<K: Into<String>, V: Into<serde_json::Value>>(pairs: impl IntoIterator<Item = (K, V)>) -> Attrs {
    pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect()
}

/// A step of a migration. In JSON, steps without data are strings (`"freeze"`), the others
/// one-key objects: `{"precopy_round": 3}` (rounds count from 1 by convention, the number is
/// the caller's) and `{"other": "name"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// From the start of the `rdmig migrate` process to its first step: the program loading,
    /// the options read, the lock taken, the journal opened.
    Startup,
    Check,
    PrecopyRound(u32),
    Freeze,
    FinalDump,
    Transfer,
    Restore,
    Resume,
    Rollback,
    Cleanup,
    Other(String),
}

impl Phase {
    /// The phase without its data: all pre-copy rounds share one name (one row of a chart).
    pub fn kind(&self) -> &str {
        match self {
            Phase::Startup => "startup",
            Phase::Check => "check",
            Phase::PrecopyRound(_) => "precopy",
            Phase::Freeze => "freeze",
            Phase::FinalDump => "final_dump",
            Phase::Transfer => "transfer",
            Phase::Restore => "restore",
            Phase::Resume => "resume",
            Phase::Rollback => "rollback",
            Phase::Cleanup => "cleanup",
            Phase::Other(name) => name,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::PrecopyRound(n) => write!(f, "precopy_round {n}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// Whether an event opens a phase, closes it, or marks a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edge {
    Start,
    End,
    Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Order of recording on its node: the authority when two events share a timestamp.
    pub seq: u64,
    pub node: String,
    pub phase: Phase,
    pub edge: Edge,
    /// CLOCK_MONOTONIC of `node`, in ns. Not comparable across nodes without an offset.
    pub t_ns: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: Attrs,
}

/// CLOCK_MONOTONIC in ns: what events are stamped with, and what a node answers clock probes
/// with (both sides of a `ClockSample` must read this same clock).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// When this process started, on CLOCK_MONOTONIC in ns: its start in /proc/self/stat (clock
/// ticks since boot, on CLOCK_BOOTTIME) moved onto the monotonic clock by the two clocks'
/// current difference (the time spent suspended). Resolution one tick (10 ms); None when it
/// cannot be read.
pub fn process_start_ns() -> Option<u64> {
    let ticks = start_ticks_of(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    let started_boot = ticks.checked_mul(1_000_000_000)? / hz;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_BOOTTIME exists since Linux 2.6.39.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return None;
    }
    let boot_now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    monotonic_ns().checked_sub(boot_now.checked_sub(started_boot)?)
}

/// Field 22 of a /proc/PID/stat line, the start time in clock ticks. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself: fields are counted after the
/// last ')'.
pub(super) fn start_ticks_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

struct State {
    next_seq: u64,
    events: Vec<Event>,
}

/// Records the events of one node. Shareable between threads (`&self` methods, a Mutex inside);
/// a record is one clock read, one uncontended lock and one push.
pub struct Recorder {
    node: String,
    state: Mutex<State>,
}

impl Recorder {
    pub fn new(node: impl Into<String>) -> Self {
        Recorder { node: node.into(), state: Mutex::new(State { next_seq: 0, events: Vec::with_capacity(64) }) }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Records an event now and returns its sequence number.
    pub fn record(&self, phase: Phase, edge: Edge, attrs: Attrs) -> u64 {
        let mut st = self.lock();
        // The clock is read under the lock so that sequence order and time order agree.
        let t_ns = monotonic_ns();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.events.push(Event { seq, node: self.node.clone(), phase, edge, t_ns, attrs });
        seq
    }

    /// Records `phase` as having started at `start_ns` (this node's clock) and ending now: for
    /// what began before the recorder could see it. The start is taken no earlier than the last
    /// event and no later than now, so sequence order and time order still agree. Returns the
    /// end's sequence number.
    pub fn since(&self, phase: Phase, start_ns: u64) -> u64 {
        let mut st = self.lock();
        let now = monotonic_ns();
        let floor = st.events.last().map_or(0, |e| e.t_ns);
        let start = start_ns.clamp(floor, now);
        for (edge, t_ns) in [(Edge::Start, start), (Edge::End, now)] {
            let seq = st.next_seq;
            st.next_seq += 1;
            st.events.push(Event { seq, node: self.node.clone(), phase: phase.clone(), edge, t_ns, attrs: Attrs::new() });
        }
        st.next_seq - 1
    }

    pub fn start(&self, phase: Phase) -> u64 {
        self.record(phase, Edge::Start, Attrs::new())
    }

    pub fn end(&self, phase: Phase) -> u64 {
        self.record(phase, Edge::End, Attrs::new())
    }

    /// Ends a phase with what it did (e.g. a pre-copy round's "pages" and "bytes").
    pub fn end_with(&self, phase: Phase, attrs: Attrs) -> u64 {
        self.record(phase, Edge::End, attrs)
    }

    pub fn instant(&self, phase: Phase, attrs: Attrs) -> u64 {
        self.record(phase, Edge::Instant, attrs)
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// The events so far, leaving none; sequence numbers go on from where they were, so events
    /// taken in several batches never share one.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.lock().events)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated (a push either happened
        // or not), so a poisoned lock is still good to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
