//! What a timeline says: downtime, phase durations, pre-copy rounds, and how sure we are.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Attrs, Edge, NodeClock, Phase, TimedEvent, Timeline, TimelineError};

/// One phase on one node, from its Start to its End. Both ends are on one clock, so the
/// duration is exact (to the clock's resolution), whatever the clock offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub node: String,
    pub phase: Phase,
    /// Reference-clock times.
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_ns: u64,
    pub start_seq: u64,
    pub end_seq: u64,
    /// The Start's attributes, overridden by the End's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: Attrs,
}

/// One time the application was stopped: from a Freeze Start to the next Resume End.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub freeze_node: String,
    pub resume_node: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_ns: u64,
    /// Non-zero only when freeze and resume were on different nodes.
    pub uncertainty_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecopyRound {
    pub round: u32,
    pub node: String,
    pub start_ns: u64,
    pub duration_ns: u64,
    /// From the round's "pages" and "bytes" attributes, when recorded.
    pub pages: Option<u64>,
    pub bytes: Option<u64>,
}

/// The numbers of a migration. Times (`*_ns` positions) are on the reference node's clock;
/// `origin_ns` is the first event, from which the text and the chart count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub reference_node: String,
    pub clocks: Vec<NodeClock>,
    pub origin_ns: u64,
    /// Sum of the stops (usually one; more after a rollback and a retry).
    pub downtime_ns: u64,
    pub downtime_uncertainty_ns: u64,
    pub stops: Vec<Stop>,
    /// First event to last event.
    pub total_ns: u64,
    pub total_uncertainty_ns: u64,
    /// Ordered by start, then node.
    pub spans: Vec<Span>,
    pub precopy_rounds: Vec<PrecopyRound>,
    pub precopy_ns: u64,
    /// Sums over the rounds that recorded them.
    pub precopy_pages: u64,
    pub precopy_bytes: u64,
}

impl Summary {
    pub fn from_timeline(tl: &Timeline) -> Result<Summary, TimelineError> {
        let spans = spans(tl)?;
        let stops = stops(tl)?;
        let (first, last) = match (tl.events.first(), tl.events.last()) {
            (Some(f), Some(l)) => (f, l),
            // Unreachable in practice: stops() needs a freeze.
            _ => return Err(TimelineError::MissingFreeze("the timeline is empty".into())),
        };
        let mut precopy_rounds = vec![];
        for s in &spans {
            if let Phase::PrecopyRound(round) = s.phase {
                precopy_rounds.push(PrecopyRound {
                    round,
                    node: s.node.clone(),
                    start_ns: s.start_ns,
                    duration_ns: s.duration_ns,
                    pages: count_attr(s, "pages")?,
                    bytes: count_attr(s, "bytes")?,
                });
            }
        }
        Ok(Summary {
            reference_node: tl.reference_node.clone(),
            clocks: tl.clocks.clone(),
            origin_ns: first.t_ns,
            downtime_ns: stops.iter().map(|s| s.duration_ns).sum(),
            downtime_uncertainty_ns: stops.iter().map(|s| s.uncertainty_ns).sum(),
            total_ns: last.t_ns - first.t_ns,
            total_uncertainty_ns: tl.uncertainty_between(&first.event.node, &last.event.node),
            precopy_ns: precopy_rounds.iter().map(|r| r.duration_ns).sum(),
            precopy_pages: precopy_rounds.iter().filter_map(|r| r.pages).sum(),
            precopy_bytes: precopy_rounds.iter().filter_map(|r| r.bytes).sum(),
            precopy_rounds,
            spans,
            stops,
        })
    }

    /// A table for people: ms with one decimal, byte counts in binary units, times counted from
    /// the first event. Clock uncertainty gets its own unit: it is often far below 0.1 ms, and
    /// "± 0.0 ms" would claim a precision nobody measured.
    pub fn render_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "migration timeline on {}'s clock", self.reference_node);
        for c in self.clocks.iter().filter(|c| c.node != self.reference_node) {
            let _ = writeln!(o, "  {} clock: offset {} ms ± {}", c.node, ms_signed(c.offset_ns), uncertainty(c.uncertainty_ns, "µs"));
        }
        let _ = writeln!(o, "downtime  {:>10} ms ± {}", ms(self.downtime_ns), uncertainty(self.downtime_uncertainty_ns, "µs"));
        if self.stops.len() > 1 {
            for (i, s) in self.stops.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "  stop {}: {} ms ({} freeze → {} resume, at {} ms)",
                    i + 1,
                    ms(s.duration_ns),
                    s.freeze_node,
                    s.resume_node,
                    ms(s.start_ns - self.origin_ns)
                );
            }
        } else if let Some(s) = self.stops.first() {
            let _ = writeln!(o, "  freeze start on {} → resume end on {}", s.freeze_node, s.resume_node);
        }
        let _ = writeln!(o, "total     {:>10} ms ± {}", ms(self.total_ns), uncertainty(self.total_uncertainty_ns, "µs"));
        if !self.precopy_rounds.is_empty() {
            let _ = writeln!(
                o,
                "pre-copy  {:>10} ms in {} round(s), {} pages, {}",
                ms(self.precopy_ns),
                self.precopy_rounds.len(),
                self.precopy_pages,
                human_bytes(self.precopy_bytes)
            );
        }
        let _ = writeln!(o);
        let node_w = self.spans.iter().map(|s| s.node.chars().count()).max().unwrap_or(4).max(4);
        let phase_w = self.spans.iter().map(|s| s.phase.to_string().chars().count()).max().unwrap_or(5).max(5);
        let _ = writeln!(
            o,
            "{:<phase_w$}  {:<node_w$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
            "phase", "node", "start ms", "dur ms", "pages", "bytes", "verbs ms"
        );
        for s in &self.spans {
            let pages = s.attrs.get("pages").and_then(|v| v.as_u64()).map(|p| p.to_string()).unwrap_or_default();
            let bytes = s.attrs.get("bytes").and_then(|v| v.as_u64()).map(human_bytes).unwrap_or_default();
            // The CRIU plugin's share of a dump or restore (`super::RDMA_US`).
            let verbs = s.attrs.get(super::RDMA_US).and_then(|v| v.as_u64()).map(|us| ms(us * 1000)).unwrap_or_default();
            let _ = writeln!(
                o,
                "{:<phase_w$}  {:<node_w$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}",
                s.phase.to_string(),
                s.node,
                ms(s.start_ns - self.origin_ns),
                ms(s.duration_ns),
                pages,
                bytes,
                verbs
            );
        }
        o
    }

    pub fn to_json(&self) -> Result<String, TimelineError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    pub fn from_json(s: &str) -> Result<Summary, TimelineError> {
        Ok(serde_json::from_str(s)?)
    }

    pub fn write_json(&self, path: &Path) -> Result<(), TimelineError> {
        super::write_file(path, self.to_json()?.as_bytes())
    }
}

/// Pairs each node's Starts and Ends in that node's sequence order (the recorder's own order,
/// which no clock offset can disturb).
fn spans(tl: &Timeline) -> Result<Vec<Span>, TimelineError> {
    let mut by_node: BTreeMap<&str, Vec<&TimedEvent>> = BTreeMap::new();
    for te in &tl.events {
        by_node.entry(te.event.node.as_str()).or_default().push(te);
    }
    let mut out = vec![];
    for (node, mut evs) in by_node {
        evs.sort_by_key(|te| te.event.seq);
        let mut open: BTreeMap<&Phase, &TimedEvent> = BTreeMap::new();
        for te in evs {
            let e = &te.event;
            match e.edge {
                Edge::Instant => {}
                Edge::Start => {
                    if open.insert(&e.phase, te).is_some() {
                        return Err(TimelineError::DuplicateStart { node: node.into(), phase: e.phase.clone(), seq: e.seq });
                    }
                }
                Edge::End => {
                    let Some(start) = open.remove(&e.phase) else {
                        return Err(TimelineError::EndWithoutStart { node: node.into(), phase: e.phase.clone(), seq: e.seq });
                    };
                    let duration_ns = te.t_ns.checked_sub(start.t_ns).ok_or_else(|| TimelineError::NegativeDuration {
                        what: format!("{} on {node}", e.phase),
                        start_ns: start.t_ns,
                        end_ns: te.t_ns,
                        uncertainty_ns: 0,
                    })?;
                    let mut attrs = start.event.attrs.clone();
                    attrs.extend(e.attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
                    out.push(Span {
                        node: node.into(),
                        phase: e.phase.clone(),
                        start_ns: start.t_ns,
                        end_ns: te.t_ns,
                        duration_ns,
                        start_seq: start.event.seq,
                        end_seq: e.seq,
                        attrs,
                    });
                }
            }
        }
        if let Some(start) = open.values().min_by_key(|te| te.event.seq) {
            let e = &start.event;
            return Err(TimelineError::StartWithoutEnd { node: node.into(), phase: e.phase.clone(), seq: e.seq });
        }
    }
    out.sort_by(|a, b| (a.start_ns, &a.node, a.start_seq).cmp(&(b.start_ns, &b.node, b.start_seq)));
    Ok(out)
}

/// Pairs the n-th Freeze Start with the n-th Resume End, in reference-clock order. They may be
/// on different nodes (freeze on the source, resume on the destination), so only the clock
/// offset orders them; pairing by rank rather than by scanning for "the next resume" means a
/// wrong offset shows up as a negative stop instead of a misleading "resume without freeze".
fn stops(tl: &Timeline) -> Result<Vec<Stop>, TimelineError> {
    let freezes: Vec<&TimedEvent> = tl.events.iter().filter(|te| te.event.phase == Phase::Freeze && te.event.edge == Edge::Start).collect();
    let resumes: Vec<&TimedEvent> = tl.events.iter().filter(|te| te.event.phase == Phase::Resume && te.event.edge == Edge::End).collect();
    if freezes.is_empty() {
        return Err(TimelineError::MissingFreeze("the application was never frozen (no freeze start event)".into()));
    }
    if resumes.len() < freezes.len() {
        return Err(TimelineError::MissingResume(format!(
            "{} freeze start(s) but {} resume end(s): the application was left stopped, or its resume was not recorded",
            freezes.len(),
            resumes.len()
        )));
    }
    if resumes.len() > freezes.len() {
        return Err(TimelineError::MissingFreeze(format!("{} resume end(s) but only {} freeze start(s)", resumes.len(), freezes.len())));
    }
    let mut out: Vec<Stop> = Vec::with_capacity(freezes.len());
    for (f, r) in freezes.iter().zip(&resumes) {
        let (fnode, rnode) = (&f.event.node, &r.event.node);
        let uncertainty_ns = tl.uncertainty_between(fnode, rnode);
        let negative = |start_ns, end_ns, what: String| TimelineError::NegativeDuration { what, start_ns, end_ns, uncertainty_ns };
        let duration_ns =
            r.t_ns.checked_sub(f.t_ns).ok_or_else(|| negative(f.t_ns, r.t_ns, format!("the stop from freeze start on {fnode} to resume end on {rnode}")))?;
        // A freeze before the previous resume ended would make two stops overlap.
        if let Some(prev) = out.last() {
            if f.t_ns < prev.end_ns {
                return Err(negative(prev.end_ns, f.t_ns, format!("the run between resume on {} and freeze on {fnode}", prev.resume_node)));
            }
        }
        out.push(Stop { freeze_node: fnode.clone(), resume_node: rnode.clone(), start_ns: f.t_ns, end_ns: r.t_ns, duration_ns, uncertainty_ns });
    }
    Ok(out)
}

/// A count attribute: absent is fine, anything but an unsigned integer is an error (a summary
/// that silently dropped a malformed count would under-report).
fn count_attr(s: &Span, key: &str) -> Result<Option<u64>, TimelineError> {
    match s.attrs.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| TimelineError::BadAttr { node: s.node.clone(), phase: s.phase.clone(), seq: s.end_seq, key: key.into() }),
    }
}

pub(crate) fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

/// 20 ns, 51.2 µs, 1.250 ms; `micro` spells µ ("us" where only ASCII can be drawn).
pub(crate) fn uncertainty(ns: u64, micro: &str) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} {micro}", ns as f64 / 1e3),
        _ => format!("{:.3} ms", ns as f64 / 1e6),
    }
}

fn ms_signed(ns: i64) -> String {
    format!("{:+.3}", ns as f64 / 1e6)
}

/// 1023 B, 1.5 KiB, 256.0 MiB, 2.0 GiB.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}
