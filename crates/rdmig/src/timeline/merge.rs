//! Events of several nodes on one clock: the reference node's.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Event, OffsetEstimate, TimelineError};

/// How a node's clock relates to the reference node's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeClock {
    pub node: String,
    /// node − reference (0 for the reference itself).
    pub offset_ns: i64,
    /// Bound on the error of `offset_ns` (0 for the reference itself).
    pub uncertainty_ns: u64,
}

/// An event as recorded (its `t_ns` on its own node's clock) and its time on the reference clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedEvent {
    pub t_ns: u64,
    pub event: Event,
}

/// All events on the reference clock, ordered by that time, then sequence number, then node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub reference_node: String,
    pub clocks: Vec<NodeClock>,
    pub events: Vec<TimedEvent>,
}

impl Timeline {
    /// One node's events (a migration that never left the source, say).
    pub fn single(node: &str, events: Vec<Event>) -> Result<Timeline, TimelineError> {
        let reference = NodeClock { node: node.to_string(), offset_ns: 0, uncertainty_ns: 0 };
        let mut out = Vec::with_capacity(events.len());
        place(&reference, events, &mut out)?;
        Ok(Timeline::sorted(node, vec![reference], out))
    }

    /// Puts the remote's events on the local clock. `offset` is remote − local, as
    /// `estimate_offset` gives it from samples taken by the local node.
    pub fn merge(
        local_node: &str,
        local_events: Vec<Event>,
        remote_node: &str,
        remote_events: Vec<Event>,
        offset: &OffsetEstimate,
    ) -> Result<Timeline, TimelineError> {
        if local_node == remote_node {
            return Err(TimelineError::SameNode(local_node.to_string()));
        }
        let local = NodeClock { node: local_node.to_string(), offset_ns: 0, uncertainty_ns: 0 };
        let remote = NodeClock { node: remote_node.to_string(), offset_ns: offset.offset_ns, uncertainty_ns: offset.uncertainty_ns };
        let mut out = Vec::with_capacity(local_events.len() + remote_events.len());
        place(&local, local_events, &mut out)?;
        place(&remote, remote_events, &mut out)?;
        Ok(Timeline::sorted(local_node, vec![local, remote], out))
    }

    fn sorted(reference: &str, clocks: Vec<NodeClock>, mut events: Vec<TimedEvent>) -> Timeline {
        events.sort_by(|a, b| (a.t_ns, a.event.seq, &a.event.node).cmp(&(b.t_ns, b.event.seq, &b.event.node)));
        Timeline { reference_node: reference.to_string(), clocks, events }
    }

    pub fn clock(&self, node: &str) -> Option<&NodeClock> {
        self.clocks.iter().find(|c| c.node == node)
    }

    /// Bound on the error of a time difference between events of nodes `a` and `b`: zero on
    /// one node (its offset cancels out), the sum of both offsets' uncertainties otherwise.
    pub fn uncertainty_between(&self, a: &str, b: &str) -> u64 {
        if a == b {
            return 0;
        }
        let u = |n: &str| self.clock(n).map_or(0, |c| c.uncertainty_ns);
        u(a) + u(b)
    }

    pub fn to_json(&self) -> Result<String, TimelineError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    pub fn from_json(s: &str) -> Result<Timeline, TimelineError> {
        Ok(serde_json::from_str(s)?)
    }

    pub fn write_json(&self, path: &Path) -> Result<(), TimelineError> {
        super::write_file(path, self.to_json()?.as_bytes())
    }
}

/// Checks one node's events and appends them with their reference-clock times. The checks are
/// what a trustworthy merge needs: events filed under the right clock, sequence numbers unique,
/// and time never going backwards in sequence order (a recorder guarantees both).
fn place(clock: &NodeClock, mut events: Vec<Event>, out: &mut Vec<TimedEvent>) -> Result<(), TimelineError> {
    events.sort_by_key(|e| e.seq);
    let mut seen = HashSet::with_capacity(events.len());
    let mut last_t = 0;
    for e in events {
        if e.node != clock.node {
            return Err(TimelineError::NodeMismatch { expected: clock.node.clone(), found: e.node, seq: e.seq });
        }
        if !seen.insert(e.seq) {
            return Err(TimelineError::DuplicateSeq { node: e.node, seq: e.seq });
        }
        if e.t_ns < last_t {
            return Err(TimelineError::ClockWentBackwards { node: e.node, seq: e.seq });
        }
        last_t = e.t_ns;
        let t = u64::try_from(e.t_ns as i128 - clock.offset_ns as i128).map_err(|_| TimelineError::TimeOutOfRange { node: e.node.clone(), seq: e.seq })?;
        out.push(TimedEvent { t_ns: t, event: e });
    }
    Ok(())
}
