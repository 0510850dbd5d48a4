//! What the journal records: node names, roles, phases, outcomes, and the events made of them.

use std::fmt;
use std::str::FromStr;

use rdmig_proto::msg::MigrationId;
use serde::{Deserialize, Serialize};

/// The name of a node, as its journal and the merged event stream show it: 1-64 of
/// `[A-Za-z0-9._:-]` (a host name, `node2`, or an address with its port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

/// A string that [`NodeName::new`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node name {0:?}: use 1-64 of [A-Za-z0-9._:-]")]
pub struct InvalidNodeName(pub String);

impl NodeName {
    pub fn new(s: &str) -> Result<Self, InvalidNodeName> {
        let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if ok {
            Ok(NodeName(s.to_string()))
        } else {
            Err(InvalidNodeName(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = InvalidNodeName;
    fn try_from(s: String) -> Result<Self, InvalidNodeName> {
        NodeName::new(&s)
    }
}

impl From<NodeName> for String {
    fn from(n: NodeName) -> String {
        n.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which end of a migration this node is. One migration has one role on a node: the journal
/// refuses an event whose role differs from the migration's earlier events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Source,
    Destination,
}

impl Role {
    /// The stable string form (journal column, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        [Role::Source, Role::Destination].into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownName { what: "role", value: s.into() })
    }
}

/// A string that is not the stable name of any [`Role`], [`Phase`] or outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
}

/// A step of a migration. Steps are actions, and an event says how far one got ([`Outcome`]):
/// `Restore` + `Started` is "restore started", `Restore` + `Done` is "restored", `AddrRemove` +
/// `Started` is written (and synced) before the address is removed.
///
/// The string forms ([`Phase::as_str`], also the JSON form) are stable: they are stored in the
/// journal. Adding a phase means a new schema version (older rdmig refuses the journal rather than
/// misreading it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The migration is registered on this node (source: before anything is asked of the
    /// destination; destination: the `Begin` request is accepted). A mark: `Done`.
    Begin,
    /// Compatibility checks (facts, CPU, numbers, clock): nothing is touched yet.
    Checks,
    /// One pre-copy round while the application runs (the round number goes in the details).
    PrecopyRound,
    /// The application is stopped and dumped (`Started` is written before it stops).
    Freeze,
    /// The moving address leaves the source.
    AddrRemove,
    /// The final image travels to the destination.
    Transfer,
    /// The destination restores the process (`Started`: before CRIU runs; `Done`: it runs).
    Restore,
    /// The moving address arrives on the destination.
    AddrAdd,
    /// The migration is committed: the source copy is removed, the destination copy is the one.
    Commit,
    /// The migration is undone: on the source the application runs again where it was; on the
    /// destination an unconfirmed copy is killed.
    Rollback,
    /// A mark: this node cannot tell whether the migration committed (for example the
    /// destination went silent after restore); recovery decides.
    InDoubt,
    /// Recovery took the migration up (`Started`) and brought it to a final state (`Done`); what
    /// it did goes in the details.
    Recover,
    /// Housekeeping after the end (image directories, logs). Only allowed once the migration
    /// ended with `Commit`, `Rollback` or `Recover` done.
    Cleanup,
}

impl Phase {
    /// Every phase, in the order a migration usually goes through them.
    pub const ALL: [Phase; 13] = [
        Phase::Begin,
        Phase::Checks,
        Phase::PrecopyRound,
        Phase::Freeze,
        Phase::AddrRemove,
        Phase::Transfer,
        Phase::Restore,
        Phase::AddrAdd,
        Phase::Commit,
        Phase::Rollback,
        Phase::InDoubt,
        Phase::Recover,
        Phase::Cleanup,
    ];

    /// The phases whose `Done` ends a migration.
    pub const ENDS: [Phase; 3] = [Phase::Commit, Phase::Rollback, Phase::Recover];

    /// The stable string form (journal column, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Begin => "begin",
            Phase::Checks => "checks",
            Phase::PrecopyRound => "precopy_round",
            Phase::Freeze => "freeze",
            Phase::AddrRemove => "addr_remove",
            Phase::Transfer => "transfer",
            Phase::Restore => "restore",
            Phase::AddrAdd => "addr_add",
            Phase::Commit => "commit",
            Phase::Rollback => "rollback",
            Phase::InDoubt => "in_doubt",
            Phase::Recover => "recover",
            Phase::Cleanup => "cleanup",
        }
    }

    /// Whether every event of this phase is synced before [`crate::Journal::append`] returns,
    /// whatever durability the caller asked for: the steps after which a crash leaves the
    /// application stopped, addressless or in two places unless the journal says so.
    pub fn is_sync_point(self) -> bool {
        matches!(self, Phase::Freeze | Phase::AddrRemove | Phase::Restore | Phase::AddrAdd | Phase::Commit | Phase::Rollback | Phase::InDoubt | Phase::Recover)
    }

    /// Whether `Done` of this phase ends the migration.
    pub fn ends(self) -> bool {
        Phase::ENDS.contains(&self)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| UnknownName { what: "phase", value: s.into() })
    }
}

/// How far a phase got. In JSON it is flattened into the event: `"outcome": "done"`, or
/// `"outcome": "failed", "reason": "..."`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The step is about to take effect (written before it does).
    Started,
    /// The step took effect.
    Done,
    /// The step failed; what the node knows about why.
    Failed { reason: String },
}

impl Outcome {
    pub fn failed(reason: impl Into<String>) -> Self {
        Outcome::Failed { reason: reason.into() }
    }

    /// The stable string form of the kind (journal column).
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Done => "done",
            Outcome::Failed { .. } => "failed",
        }
    }

    /// The failure's reason, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Failed { reason } => Some(reason),
            _ => None,
        }
    }

    /// Rebuilds an outcome from its stored kind and reason (a reason belongs to `failed` only).
    pub(crate) fn from_parts(kind: &str, reason: Option<String>) -> Result<Self, UnknownName> {
        match (kind, reason) {
            ("started", None) => Ok(Outcome::Started),
            ("done", None) => Ok(Outcome::Done),
            ("failed", Some(reason)) => Ok(Outcome::Failed { reason }),
            (kind, reason) => Err(UnknownName { what: "outcome", value: format!("{kind} (reason {reason:?})") }),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Failed { reason } => write!(f, "failed: {reason}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// How hard [`crate::Journal::append`] works to keep an event through a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Committed to the write-ahead log: survives the process dying at any point, may be lost
    /// if the machine itself loses power before the next sync (SQLite's `synchronous=NORMAL`).
    #[default]
    Normal,
    /// Synced to the disk before `append` returns (`synchronous=FULL`): survives power loss.
    /// Sync points ([`Phase::is_sync_point`]) always get this.
    Sync,
}

/// An event to append: what the caller says. The journal adds the node, the sequence number and
/// both clocks, so a caller cannot get them wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub migration: MigrationId,
    pub role: Role,
    pub phase: Phase,
    pub outcome: Outcome,
    /// Free-form facts (JSON): a pre-copy round's number and pages, a QP count, what recovery
    /// did. Stored as JSON text.
    pub details: Option<serde_json::Value>,
}

impl NewEvent {
    pub fn new(migration: MigrationId, role: Role, phase: Phase, outcome: Outcome) -> Self {
        NewEvent { migration, role, phase, outcome, details: None }
    }

    /// The same event with these details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// A recorded event, as the journal returns it and as nodes send theirs to `rdmig events`.
///
/// JSON: `{"node": "node1", "seq": 7, "wall_ns": ..., "mono_ns": ..., "migration": "m-...",
/// "role": "source", "phase": "freeze", "outcome": "done", "details": {...}}` (`reason` after
/// `"outcome": "failed"`; no `details` when there are none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub node: NodeName,
    /// The node's sequence number: from 1, strictly increasing and without gaps on one node.
    pub seq: u64,
    /// CLOCK_REALTIME of the node when the event was appended, in ns since the Unix epoch:
    /// comparable across nodes once their clock offsets are applied.
    pub wall_ns: i64,
    /// CLOCK_MONOTONIC of the node when the event was appended, in ns: exact durations between
    /// events of one node (not across a reboot).
    pub mono_ns: u64,
    pub migration: MigrationId,
    pub role: Role,
    pub phase: Phase,
    #[serde(flatten)]
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl Event {
    /// Whether this event ends its migration (`Commit`, `Rollback` or `Recover` done).
    pub fn ends_migration(&self) -> bool {
        self.phase.ends() && self.outcome == Outcome::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_strings_are_stable_and_round_trip() {
        let names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "begin",
                "checks",
                "precopy_round",
                "freeze",
                "addr_remove",
                "transfer",
                "restore",
                "addr_add",
                "commit",
                "rollback",
                "in_doubt",
                "recover",
                "cleanup"
            ]
        );
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.as_str()));
        }
        assert!("restored".parse::<Phase>().is_err());
        for r in [Role::Source, Role::Destination] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
        }
    }

    #[test]
    fn node_names_are_checked_also_when_deserialised() {
        assert!(NodeName::new("node1").is_ok());
        assert!(NodeName::new("10.99.0.1:7800").is_ok());
        for bad in ["", "a b", "a/b", "x\n", &"n".repeat(65)] {
            assert!(NodeName::new(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<NodeName>("\"a/b\"").is_err());
        assert_eq!(serde_json::from_str::<NodeName>("\"node2\"").unwrap().as_str(), "node2");
    }

    #[test]
    fn outcomes_rebuild_only_from_consistent_parts() {
        assert_eq!(Outcome::from_parts("done", None), Ok(Outcome::Done));
        assert_eq!(Outcome::from_parts("failed", Some("no space".into())), Ok(Outcome::failed("no space")));
        assert!(Outcome::from_parts("failed", None).is_err());
        assert!(Outcome::from_parts("done", Some("x".into())).is_err());
        assert!(Outcome::from_parts("maybe", None).is_err());
    }

    #[test]
    fn event_json_is_flat_and_round_trips() {
        let ev = Event {
            node: NodeName::new("node1").unwrap(),
            seq: 7,
            wall_ns: 1_700_000_000_000_000_000,
            mono_ns: 42,
            migration: MigrationId::new("m-1").unwrap(),
            role: Role::Source,
            phase: Phase::Freeze,
            outcome: Outcome::failed("criu dump: exit 1"),
            details: Some(serde_json::json!({"pages": 12})),
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["outcome"], "failed");
        assert_eq!(v["reason"], "criu dump: exit 1");
        assert_eq!(v["phase"], "freeze");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), ev);
        let done = Event { outcome: Outcome::Done, details: None, ..ev };
        let v = serde_json::to_value(&done).unwrap();
        assert!(v.get("reason").is_none() && v.get("details").is_none());
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), done);
    }
}
