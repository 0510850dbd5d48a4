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
