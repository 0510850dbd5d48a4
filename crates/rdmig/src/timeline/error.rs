//! Why a timeline cannot be trusted (or written).

use super::Phase;

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(
        "no usable clock sample ({given} given): a sample needs t0 <= t3, t1 <= t2, and the remote's \
         hold time (t2 - t1) no longer than the round trip (t3 - t0)"
    )]
    NoClockSamples { given: usize },
    #[error("clock offset between the nodes does not fit in 64 bits")]
    OffsetOutOfRange,
    #[error("the two nodes of a merge must differ, both are {0:?}")]
    SameNode(String),
    #[error("event {seq} is from node {found:?} but was given as {expected:?}'s")]
    NodeMismatch { expected: String, found: String, seq: u64 },
    #[error("node {node:?} has two events with sequence number {seq}")]
    DuplicateSeq { node: String, seq: u64 },
    #[error("node {node:?}: event {seq} is earlier than the event before it (its clock went backwards)")]
    ClockWentBackwards { node: String, seq: u64 },
    #[error("node {node:?}: event {seq}'s time does not fit on the reference clock")]
    TimeOutOfRange { node: String, seq: u64 },
    #[error("node {node:?}: {phase} ends (event {seq}) without having started")]
    EndWithoutStart { node: String, phase: Phase, seq: u64 },
    #[error("node {node:?}: {phase} starts (event {seq}) while already started")]
    DuplicateStart { node: String, phase: Phase, seq: u64 },
    #[error("node {node:?}: {phase} starts (event {seq}) and never ends")]
    StartWithoutEnd { node: String, phase: Phase, seq: u64 },
    #[error("no freeze start: {0}")]
    MissingFreeze(String),
    #[error("no resume end: {0}")]
    MissingResume(String),
    #[error(
        "{what} would last a negative time ({start_ns} ns to {end_ns} ns on the reference clock, \
         clock uncertainty {uncertainty_ns} ns): events out of order or a wrong clock offset"
    )]
    NegativeDuration { what: String, start_ns: u64, end_ns: u64, uncertainty_ns: u64 },
    #[error("node {node:?}: {phase} (ending with event {seq}) has a {key:?} attribute that is not an unsigned integer")]
    BadAttr { node: String, phase: Phase, seq: u64, key: String },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing the chart: {0}")]
    Plot(String),
}
