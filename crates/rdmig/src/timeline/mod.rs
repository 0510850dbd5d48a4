//! The downtime timeline of a migration: what happened, on which node, when, and how sure we
//! are of each number.
//!
//! Each node records `Event`s with a `Recorder`, stamped with its own CLOCK_MONOTONIC (which
//! NTP steps cannot move, unlike wall-clock time). Times of two nodes are only comparable
//! through an offset measured with NTP-style probes (`ClockSample`, `estimate_offset`), and
//! that offset carries an uncertainty. `Timeline::merge` puts every event on the reference
//! (local) node's clock; `Summary` derives the numbers:
//!
//! - a phase's duration (its Start and End are on one node): exact, no clock uncertainty;
//! - downtime, from Freeze Start to Resume End (the application is stopped in between): when
//!   these are on different nodes, ± the offset's uncertainty;
//! - total time, first to last event, likewise.
//!
//! Inconsistent timelines (an End without Start, no Freeze or Resume, a negative duration)
//! are errors, never silently repaired numbers.
//!
//! JSON: `Phase` is `"check"`, `"freeze"`, ... for steps without data, `{"precopy_round": 3}`
//! and `{"other": "name"}` for the others; `Edge` is `"start"`, `"end"` or `"instant"`.
//! A pre-copy round's End (or Start) carries its work in the attributes `"pages"` and
//! `"bytes"`. The final dump's End, and the destination's restore End, carry [`RDMA_US`]: the
//! part of it the CRIU plugin spent on verbs objects (MigrRDMA's DumpRDMA and RestoreRDMA).
//!
//! `series` draws plain XY charts of experiment sweeps (downtime against memory size).
//!
//! `throughput` charts the other side of a migration: a peer's data rates over time, sampled
//! by `rdmig rxe sample`, with the longest time it received nothing.

mod clock;
mod error;
mod event;
mod merge;
mod plot;
pub mod series;
mod summary;
mod text;
pub mod throughput;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use clock::{estimate_offset, ClockSample, OffsetEstimate};
pub use error::TimelineError;
pub use event::{attrs, monotonic_ns, process_start_ns, Attrs, Edge, Event, Phase, Recorder};
pub use merge::{NodeClock, TimedEvent, Timeline};
pub use plot::plot_png;
pub use summary::{human_bytes, PrecopyRound, Span, Stop, Summary};

/// Attribute of a `final_dump` or `restore` span: microseconds of it that the CRIU plugin spent
/// saving or rebuilding verbs objects (`rdmig_image::timing`).
pub const RDMA_US: &str = "rdma_us";

/// Attribute of a `final_dump` or `restore` span, and field of the destination's journal note
/// of a restore: where the plugin's time went, microseconds per step
/// (`rdmig_image::timing::steps`).
pub const RDMA_STEPS_US: &str = "rdma_steps_us";

/// At most this many steps, with names of at most [`MAX_STEP_NAME`] bytes, are taken from a
/// peer's reply into the timeline; the plugin has about twenty.
pub const MAX_STEPS: usize = 64;
pub const MAX_STEP_NAME: usize = 32;

/// The plugin's steps of `kind` in images directory `dir`, microseconds per step.
pub fn rdma_steps_us(dir: &Path, kind: rdmig_image::timing::Kind) -> Vec<(String, u64)> {
    rdmig_image::timing::read_steps(dir, kind).into_iter().map(|(s, d)| (s, d.as_micros() as u64)).collect()
}

/// Steps as a JSON object for a span's attributes; None when there are none. Steps past
/// [`MAX_STEPS`] and names that are not the plugin's kind (lower-case letters, digits and `_`,
/// at most [`MAX_STEP_NAME`] bytes) are left out: the steps can come from a peer.
pub fn steps_json(steps: &[(String, u64)]) -> Option<serde_json::Value> {
    let ok = |n: &str| !n.is_empty() && n.len() <= MAX_STEP_NAME && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    let m: serde_json::Map<_, _> = steps.iter().filter(|(n, _)| ok(n)).take(MAX_STEPS).map(|(n, us)| (n.clone(), serde_json::Value::from(*us))).collect();
    (!m.is_empty()).then(|| m.into())
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TimelineError> {
    crate::atomic_file::replace(path, bytes).map_err(|e| TimelineError::Io { path: path.display().to_string(), source: e })
}
