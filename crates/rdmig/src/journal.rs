//! This node's journal as the migration's two sides use it: one SQLite file per node
//! (`rdmig-journal`), shared by `rdmig migrate` (source steps), the agent (destination steps)
//! and `rdmig recover`. Each step is recorded before it takes effect (`Started`) and after
//! (`Done` or `Failed`); the steps after which a crash leaves the application stopped,
//! addressless or in two places are on the disk before the step runs (the journal syncs them).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing::warn;

use rdmig_journal::{Durability, NewEvent};
pub use rdmig_journal::{Event, Journal, MigrationState, NodeName, Outcome, Phase, Role};
use rdmig_proto::msg::MigrationId;

/// Where a node keeps its journal unless told otherwise (`--journal`, `RDMIG_JOURNAL`).
pub const DEFAULT_PATH: &str = "/var/lib/rdmig/journal.db";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("this host's name cannot name a journal: {0}")]
    Node(#[from] rdmig_journal::InvalidNodeName),
    #[error("cannot create the journal's directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Journal(#[from] rdmig_journal::Error),
}

/// This host's name as journals name nodes.
pub fn node_name() -> Result<NodeName, rdmig_journal::InvalidNodeName> {
    let h = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    NodeName::new(&h)
}

/// A handle on the node's journal, shared by the tasks of one program. Appends are short
/// (a sync point costs one fsync), so callers append inline.
#[derive(Clone)]
pub struct NodeJournal {
    inner: Arc<Mutex<Journal>>,
}

impl NodeJournal {
    /// Opens (or creates) the journal at `path` for this host.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        Self::open_as(path, &node_name()?)
    }

    pub fn open_as(path: &Path, node: &NodeName) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::Dir { path: dir.to_path_buf(), source })?;
        }
        Ok(NodeJournal { inner: Arc::new(Mutex::new(Journal::open(path, node)?)) })
    }

    /// Runs `f` on the journal (queries; appends go through `record`).
    pub fn with<R>(&self, f: impl FnOnce(&mut Journal) -> R) -> R {
        // A panic while appending leaves SQLite consistent: the lock's poison says nothing more.
        let mut j = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut j)
    }

    /// Records a step of migration `id`; sync points are on the disk when this returns.
    pub fn record(&self, id: &MigrationId, role: Role, phase: Phase, outcome: Outcome, details: Option<Value>) -> Result<u64, rdmig_journal::Error> {
        let mut ev = NewEvent::new(id.clone(), role, phase, outcome);
        ev.details = details;
        self.with(|j| j.append(&ev, Durability::Normal))
    }

    /// `record`, for steps that go ahead even when they cannot be recorded (what follows a
    /// freeze must still run): a failure is logged.
    pub fn note(&self, id: &MigrationId, role: Role, phase: Phase, outcome: Outcome, details: Option<Value>) {
        if let Err(e) = self.record(id, role, phase, outcome.clone(), details) {
            warn!(%id, phase = %phase, outcome = outcome.as_str(), "journal: {e}");
        }
    }

    pub fn path(&self) -> PathBuf {
        self.with(|j| j.path().to_path_buf())
    }
}

/// The details of a migration's events merged in order (later keys win): what its steps
/// recorded about it (pid, destination, moved address, restored pid...).
pub fn facts(events: &[Event]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for e in events {
        if let Some(Value::Object(d)) = &e.details {
            for (k, v) in d {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn facts_merge_the_details_in_order() {
        let d = tempfile::tempdir().unwrap();
        let j = NodeJournal::open_as(&d.path().join("sub/j.db"), &NodeName::new("n1").unwrap()).unwrap();
        let id = MigrationId::new("m-0000000000000001").unwrap();
        j.record(&id, Role::Source, Phase::Begin, Outcome::Done, Some(json!({"pid": 7, "to": "10.0.0.2:7800"}))).unwrap();
        j.record(&id, Role::Source, Phase::Restore, Outcome::Done, Some(json!({"restored_pid": 9, "pid": 8}))).unwrap();
        let evs = j.with(|j| j.events_of(&id)).unwrap();
        let f = facts(&evs);
        assert_eq!(f["pid"], 8);
        assert_eq!(f["restored_pid"], 9);
        assert_eq!(f["to"], "10.0.0.2:7800");
    }
}
