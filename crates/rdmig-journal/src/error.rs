//! The journal's errors.

use crate::event::NodeName;

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
