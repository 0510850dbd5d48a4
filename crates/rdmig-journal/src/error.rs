//! The journal's errors.

use std::path::PathBuf;

use rdmig_proto::msg::MigrationId;

use crate::event::{NodeName, Outcome, Phase, Role};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is damaged: not an SQLite database, truncated, or failing SQLite's check.
    #[error("journal {path} is damaged ({detail}); move it aside to start a new one (which knows none of its migrations)")]
    Corrupt { path: PathBuf, detail: String },
    /// An SQLite database, but not an rdmig journal.
    #[error("{path} is not an rdmig journal ({detail})")]
    NotAJournal { path: PathBuf, detail: String },
    /// Written by a newer rdmig: this one would misread it.
    #[error("journal {path} has schema version {found}; this rdmig reads up to {supported}: use a newer rdmig")]
    NewerSchema { path: PathBuf, found: i64, supported: i64 },
    /// The journal file belongs to another node.
    #[error("journal {path} belongs to node {recorded}, not {asked}")]
    OtherNode { path: PathBuf, recorded: String, asked: NodeName },
    /// The migration already has events with the other role on this node.
    #[error("migration {migration} is a {recorded} on this node; an event as {asked} is refused")]
    RoleMismatch { migration: MigrationId, recorded: Role, asked: Role },
    /// The migration ended: only `Cleanup` may follow.
    #[error("migration {migration} already ended ({phase} {outcome}); only cleanup may follow, not {asked}")]
    AfterEnd { migration: MigrationId, phase: Phase, outcome: Outcome, asked: Phase },
    /// `Cleanup` before the migration ended.
    #[error("migration {migration} has not ended (commit, rollback or recover done): cleanup is refused")]
    CleanupBeforeEnd { migration: MigrationId },
    /// A stored row that this rdmig cannot read back (hand-edited, or a bug).
    #[error("journal {path}: event {seq} is invalid: {detail}")]
    BadRow { path: PathBuf, seq: i64, detail: String },
    /// Any other SQLite failure (busy past the timeout, disk full, permissions...).
    #[error("journal {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of [`crate::NodeStream::new`]: a node's list of events that cannot be its stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("event {seq} of node {found} is in the stream of node {stream}")]
    OtherNode { stream: NodeName, found: NodeName, seq: u64 },
    #[error("node {node}: event {seq} is not after {after}, where the stream starts")]
    BeforeStart { node: NodeName, seq: u64, after: u64 },
    #[error("node {node}: two different events with sequence number {seq}")]
    Conflict { node: NodeName, seq: u64 },
    #[error("node {node}: event {seq} has an invalid migration id")]
    BadMigrationId { node: NodeName, seq: u64 },
}
