//! One ordered stream from the events of several nodes, with lost events reported.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::StreamError;
use crate::event::{Event, NodeName};

/// A node's events after a sequence number: what a node answers when asked for its events
/// ([`crate::Journal::stream_since`]). Every event is the node's, above `after`, ordered by
/// sequence number and without duplicates ([`NodeStream::new`] checks; so does deserialising).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawNodeStream")]
pub struct NodeStream {
    node: NodeName,
    after: u64,
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct RawNodeStream {
    node: NodeName,
    after: u64,
    events: Vec<Event>,
}

impl TryFrom<RawNodeStream> for NodeStream {
    type Error = StreamError;
    fn try_from(r: RawNodeStream) -> Result<Self, StreamError> {
        NodeStream::new(r.node, r.after, r.events)
    }
}

impl NodeStream {
    /// `after`: the stream starts after this sequence number (0: at the node's first event; a
    /// node that pruned its journal starts later). The events are sorted by sequence number; an
    /// event given twice is kept once.
    pub fn new(node: NodeName, after: u64, mut events: Vec<Event>) -> Result<Self, StreamError> {
        events.sort_by_key(|e| e.seq);
        let mut kept: Vec<Event> = Vec::with_capacity(events.len());
        for ev in events {
            if ev.node != node {
                return Err(StreamError::OtherNode { stream: node, found: ev.node, seq: ev.seq });
            }
            if ev.seq <= after {
                return Err(StreamError::BeforeStart { node, seq: ev.seq, after });
            }
            if ev.migration.validate().is_err() {
                return Err(StreamError::BadMigrationId { node, seq: ev.seq });
            }
            match kept.last() {
                Some(prev) if prev.seq == ev.seq && *prev == ev => {}
                Some(prev) if prev.seq == ev.seq => return Err(StreamError::Conflict { node, seq: ev.seq }),
                _ => kept.push(ev),
            }
        }
        Ok(NodeStream { node, after, events: kept })
    }

    pub fn node(&self) -> &NodeName {
        &self.node
    }

    pub fn after(&self) -> u64 {
        self.after
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The highest sequence number this stream covers: where to ask from next time (`--follow`).
    pub fn last_seq(&self) -> u64 {
        self.events.last().map_or(self.after, |e| e.seq)
    }
}

/// An event in the merged stream, with its time on the common clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedEvent {
    /// `wall_ns` plus its node's clock offset: the reference clock's time of the event.
    pub at_ns: i64,
    #[serde(flatten)]
    pub event: Event,
}

/// Sequence numbers of a node that no stream had: events lost on the way (or not yet asked for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub node: NodeName,
    /// First missing sequence number.
    pub first: u64,
    /// Last missing sequence number (inclusive).
    pub last: u64,
}

impl Gap {
    /// How many events are missing (at least one).
    pub fn missing(&self) -> u64 {
        self.last - self.first + 1
    }
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "node {}: event {} missing", self.node, self.first)
        } else {
            write!(f, "node {}: events {}-{} missing ({})", self.node, self.first, self.last, self.missing())
        }
    }
}

/// The cluster's events in one order, and what is missing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Merged {
    pub events: Vec<MergedEvent>,
    /// Per node, in order of node name then sequence number.
    pub gaps: Vec<Gap>,
}

/// Merges the streams of several nodes into one order.
///
/// `offsets_ns`: per node, what to add to its wall clock to get the reference clock (a node
/// missing from it: 0). Events are ordered by that corrected time, ties broken by node name then
/// sequence number; one node's events always keep their sequence order, even if its wall clock
/// stepped back between two of them (the merge takes the earliest of each node's next event).
///
/// Several streams of one node (say, successive `--follow` polls) are combined. A node's sequence
/// numbers that no stream has, between its streams' earliest start and its highest event, are
/// reported as [`Gap`]s.
pub fn merge(streams: impl IntoIterator<Item = NodeStream>, offsets_ns: &BTreeMap<NodeName, i64>) -> Merged {
    // Per node: the earliest start, and the events by sequence number (the first copy wins;
    // within one stream duplicates were already refused).
    let mut nodes: BTreeMap<NodeName, (u64, BTreeMap<u64, Event>)> = BTreeMap::new();
    for s in streams {
        let (after, events) = nodes.entry(s.node).or_insert((s.after, BTreeMap::new()));
        *after = (*after).min(s.after);
        for ev in s.events {
            events.entry(ev.seq).or_insert(ev);
        }
    }

    let mut gaps = Vec::new();
    let mut queues: Vec<(i64, std::vec::IntoIter<Event>)> = Vec::with_capacity(nodes.len());
    for (node, (after, events)) in nodes {
        let mut expected = after + 1;
        for &seq in events.keys() {
            if seq > expected {
                gaps.push(Gap { node: node.clone(), first: expected, last: seq - 1 });
            }
            expected = seq + 1;
        }
        let offset = offsets_ns.get(&node).copied().unwrap_or(0);
        queues.push((offset, events.into_values().collect::<Vec<_>>().into_iter()));
    }

    // A k-way merge over the nodes' queues: the heap holds each node's next event.
    let total = queues.iter().map(|(_, q)| q.len()).sum();
    let mut heap = BinaryHeap::with_capacity(queues.len());
    let mut heads: Vec<Option<Event>> = Vec::with_capacity(queues.len());
    for (i, (offset, q)) in queues.iter_mut().enumerate() {
        let head = q.next();
        if let Some(ev) = &head {
            heap.push(Reverse((ev.wall_ns.saturating_add(*offset), ev.node.clone(), ev.seq, i)));
        }
        heads.push(head);
    }
    let mut events = Vec::with_capacity(total);
    while let Some(Reverse((at_ns, _, _, i))) = heap.pop() {
        let Some(event) = heads[i].take() else { continue };
        let (offset, q) = &mut queues[i];
        if let Some(next) = q.next() {
            heap.push(Reverse((next.wall_ns.saturating_add(*offset), next.node.clone(), next.seq, i)));
            heads[i] = Some(next);
        }
        events.push(MergedEvent { at_ns, event });
    }
    Merged { events, gaps }
}

#[cfg(test)]
mod tests {
    use rdmig_proto::msg::MigrationId;

    use super::*;
    use crate::event::{Outcome, Phase, Role};

    fn node(s: &str) -> NodeName {
        NodeName::new(s).unwrap()
    }

    fn at(n: &str, seq: u64, wall_ns: i64, phase: Phase) -> Event {
        Event {
            node: node(n),
            seq,
            wall_ns,
            mono_ns: seq * 1000,
            migration: MigrationId::new("m-1").unwrap(),
            role: if n == "src" { Role::Source } else { Role::Destination },
            phase,
            outcome: Outcome::Done,
            details: None,
        }
    }

    fn stream(n: &str, after: u64, events: Vec<Event>) -> NodeStream {
        NodeStream::new(node(n), after, events).unwrap()
    }

    fn order(m: &Merged) -> Vec<(String, u64, i64)> {
        m.events.iter().map(|e| (e.event.node.to_string(), e.event.seq, e.at_ns)).collect()
    }

    #[test]
    fn orders_by_corrected_time_then_node_then_seq() {
        // dst's clock is 1000 ns behind the reference: +1000 brings it there.
        let src = stream("src", 0, vec![at("src", 1, 100, Phase::Begin), at("src", 2, 2000, Phase::Freeze), at("src", 3, 2600, Phase::AddrRemove)]);
        let dst = stream("dst", 0, vec![at("dst", 1, 0, Phase::Begin), at("dst", 2, 1500, Phase::Restore), at("dst", 3, 1600, Phase::Commit)]);
        let offsets = BTreeMap::from([(node("dst"), 1000)]);
        let m = merge([src.clone(), dst.clone()], &offsets);
        assert_eq!(
            order(&m),
            [
                ("src".into(), 1, 100),
                ("dst".into(), 1, 1000),
                ("src".into(), 2, 2000),
                ("dst".into(), 2, 2500),
                ("dst".into(), 3, 2600), // tie with src 3: "dst" < "src"
                ("src".into(), 3, 2600),
            ]
        );
        assert!(m.gaps.is_empty());
        // Without the offset, dst's events would come first.
        assert_eq!(order(&merge([src, dst], &BTreeMap::new()))[0], ("dst".into(), 1, 0));
    }

    #[test]
    fn a_node_keeps_its_sequence_order_when_its_clock_steps_back() {
        let a = stream("a", 0, vec![at("a", 1, 500, Phase::Begin), at("a", 2, 100, Phase::Checks), at("a", 3, 600, Phase::Freeze)]);
        let b = stream("b", 0, vec![at("b", 1, 300, Phase::Begin)]);
        let m = merge([a, b], &BTreeMap::new());
        let seq_of = |n: &str| m.events.iter().filter(|e| e.event.node.as_str() == n).map(|e| e.event.seq).collect::<Vec<_>>();
        assert_eq!(seq_of("a"), [1, 2, 3]);
        assert_eq!(order(&m)[0], ("b".into(), 1, 300));
    }

    #[test]
    fn gaps_are_reported_per_node() {
        let a = stream("a", 0, vec![at("a", 2, 10, Phase::Begin), at("a", 3, 20, Phase::Checks), at("a", 7, 30, Phase::Freeze)]);
        let b = stream("b", 10, vec![at("b", 11, 15, Phase::Begin), at("b", 12, 25, Phase::Restore)]);
        let m = merge([a, b], &BTreeMap::new());
        assert_eq!(m.gaps, [Gap { node: node("a"), first: 1, last: 1 }, Gap { node: node("a"), first: 4, last: 6 }]);
        assert_eq!(m.gaps[1].missing(), 3);
        assert_eq!(m.gaps[1].to_string(), "node a: events 4-6 missing (3)");
        assert_eq!(m.gaps[0].to_string(), "node a: event 1 missing");
        assert_eq!(m.events.len(), 5);
    }

    #[test]
    fn streams_of_one_node_combine_and_fill_each_others_gaps() {
        let first = stream("a", 0, vec![at("a", 1, 10, Phase::Begin), at("a", 3, 30, Phase::Freeze)]);
        let again = stream("a", 1, vec![at("a", 2, 20, Phase::Checks), at("a", 3, 30, Phase::Freeze)]);
        let m = merge([first.clone(), again], &BTreeMap::new());
        assert_eq!(m.events.iter().map(|e| e.event.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(m.gaps.is_empty());
        let later = stream("a", 5, vec![at("a", 6, 60, Phase::Commit)]);
        let gaps = merge([first, later], &BTreeMap::new()).gaps;
        assert_eq!(gaps, [Gap { node: node("a"), first: 2, last: 2 }, Gap { node: node("a"), first: 4, last: 5 }]);
    }

    #[test]
    fn a_node_stream_must_be_consistent() {
        let e = |seq| at("a", seq, 0, Phase::Begin);
        assert!(matches!(NodeStream::new(node("a"), 0, vec![at("b", 1, 0, Phase::Begin)]), Err(StreamError::OtherNode { .. })));
        assert!(matches!(NodeStream::new(node("a"), 3, vec![e(3)]), Err(StreamError::BeforeStart { seq: 3, after: 3, .. })));
        let other = Event { phase: Phase::Commit, ..e(2) };
        assert!(matches!(NodeStream::new(node("a"), 0, vec![e(2), other]), Err(StreamError::Conflict { seq: 2, .. })));
        let s = NodeStream::new(node("a"), 0, vec![e(2), e(1), e(2)]).unwrap();
        assert_eq!(s.events().iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((s.after(), s.last_seq(), s.node().as_str()), (0, 2, "a"));
        assert_eq!(NodeStream::new(node("a"), 4, vec![]).unwrap().last_seq(), 4);

        // Deserialising checks the same, and the migration id.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(serde_json::from_value::<NodeStream>(json.clone()).unwrap(), s);
        let mut bad = json.clone();
        bad["events"][0]["node"] = "b".into();
        assert!(serde_json::from_value::<NodeStream>(bad).is_err());
        let mut bad = json;
        bad["events"][0]["migration"] = "Not/Valid".into();
        assert!(serde_json::from_value::<NodeStream>(bad).is_err());
    }

    #[test]
    fn merged_json_is_one_flat_object_per_event() {
        let mut ev = at("a", 1, 10, Phase::Rollback);
        ev.outcome = Outcome::failed("timeout");
        let m = merge([stream("a", 0, vec![ev]), stream("b", 1, vec![at("b", 3, 5, Phase::Begin)])], &BTreeMap::from([(node("a"), -4)]));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["events"][0]["node"], "b");
        assert_eq!(v["events"][1]["at_ns"], 6);
        assert_eq!(v["events"][1]["phase"], "rollback");
        assert_eq!(v["events"][1]["outcome"], "failed");
        assert_eq!(v["events"][1]["reason"], "timeout");
        assert_eq!(v["gaps"][0], serde_json::json!({"node": "b", "first": 2, "last": 2}));
        assert_eq!(serde_json::from_value::<Merged>(v).unwrap(), m);
    }
}
