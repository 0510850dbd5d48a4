//! The durable migration journal every rdmig node keeps (issue 15): each step of each migration,
//! source side and destination side, as an [`Event`] in an SQLite database (WAL mode), written
//! before the step takes effect, so that after any crash the node can tell what it had done and
//! recovery can bring every migration to a final state.
//!
//! An event is a migration's [`Phase`] (a step: `Freeze`, `Restore`, `Commit`, ...) with an
//! [`Outcome`] (`Started` before it takes effect, `Done` after, or `Failed` with a reason), the
//! node's [`Role`] in it and optional JSON details. [`Journal::append`] adds the node's name, its
//! next sequence number (from 1, strictly increasing and gap-free, also across reopening and
//! between several handles on one file) and both clocks (CLOCK_REALTIME and CLOCK_MONOTONIC, ns).
//! Sync points ([`Phase::is_sync_point`]: freeze, address removal, restore, address arrival,
//! commit, rollback, in-doubt, recovery) are on the disk before `append` returns; other events
//! survive a crash of the process, and are synced with the next sync point.
//!
//! A migration ends with `Commit`, `Rollback` or `Recover` done; after that only `Cleanup` may be
//! recorded. [`Journal::migrations_not_final`] lists what is not final (not ended, or its clean-up
//! unfinished): recovery's to-do list.
//!
//! # How rdmig is meant to use it (not wired in yet)
//!
//! - The agent opens the node's journal at start-up ([`Journal::open`] with the node's name),
//!   records each destination step of the migrations it serves, and reconciles
//!   [`Journal::migrations_not_final`] with what the node really has (processes, image
//!   directories, addresses, stopped QPs) at start-up and periodically, recording `Recover` and
//!   `Cleanup` events; it prunes final migrations now and then ([`Journal::prune`]).
//! - `rdmig migrate` opens the same file on the source node and records the source steps:
//!   `Begin`, `Checks`, pre-copy rounds, then `Freeze` started before the dump, `AddrRemove`
//!   started before the address goes, and so on to `Commit` or `Rollback`. `rdmig recover` reads
//!   it to decide (resume the application unless the destination confirms it restored it).
//! - `rdmig events` asks each node for its [`NodeStream`] after the last sequence number it has
//!   ([`Journal::stream_since`]) and prints [`merge`]'s order with the clock offsets it measured,
//!   reporting [`Gap`]s; everything here serialises to JSON for `--json`.
//!
//! Migration ids are `rdmig_proto`'s [`MigrationId`], the ones the agents' messages carry.
//!
//! The API is blocking (a [`Journal`] is one SQLite connection: `Send`, not `Sync`); a sync
//! point costs an fsync, so async callers append from `spawn_blocking` or a journal thread.

mod clock;
mod error;
mod event;
mod journal;
mod merge;

pub use clock::wall_ns;
pub use error::{Error, Result, StreamError};
pub use event::{Durability, Event, InvalidNodeName, NewEvent, NodeName, Outcome, Phase, Role, UnknownName};
pub use journal::{Journal, MigrationState, Pruned, Retention, SCHEMA_VERSION};
pub use merge::{merge, Gap, Merged, MergedEvent, NodeStream};
pub use rdmig_proto::msg::MigrationId;
