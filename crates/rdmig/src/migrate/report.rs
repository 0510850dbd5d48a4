//! The run's bookkeeping: progress lines, the timeline's spans (closed whatever stage failed),
//! and the report the CLI prints (its JSON keys are read by the lab tests and scripts/demo.sh).

use tracing::info;

use super::{MigrationReport, Outcome, Run};
use crate::timeline::{attrs, estimate_offset, Edge, Event, Phase, Summary, Timeline};

impl Run<'_> {
    /// A line of progress: logged, and on stderr with `--progress`.
    pub(super) fn say(&self, msg: &str) {
        info!("{msg}");
        if self.o.progress {
            eprintln!("rdmig: {msg}");
        }
    }

    /// The process runs at the source again after a freeze: its stop ends here (if the freeze
    /// span is still open: a rollback after the restore finds it ended).
    pub(super) fn resumed_here(&mut self) {
        self.rec.instant(Phase::Rollback, attrs::<&str, u64>([]));
        self.close_open_spans();
        if self.open_spans().contains(&Phase::Freeze) {
            self.rec.end(Phase::Freeze);
        }
        self.rec.start(Phase::Resume);
        self.rec.end(Phase::Resume);
    }

    /// The spans started and not ended yet, in the order they started.
    fn open_spans(&self) -> Vec<Phase> {
        let mut open: Vec<Phase> = vec![];
        for e in self.rec.events() {
            match e.edge {
                Edge::Start => open.push(e.phase),
                Edge::End => open.retain(|p| *p != e.phase),
                Edge::Instant => {}
            }
        }
        open
    }

    /// Ends any span still open (a failure can leave the one it happened in open).
    fn close_open_spans(&mut self) {
        for p in self.open_spans().into_iter().rev() {
            if p != Phase::Freeze {
                self.rec.end(p);
            }
        }
    }

    pub(super) fn report(mut self, outcome: Outcome) -> MigrationReport {
        self.close_open_spans();
        let local_node = self.rec.node().to_string();
        let local = self.rec.events();
        let remote_node = self.dst.as_ref().map(|d| d.hostname.clone()).filter(|h| !h.is_empty() && *h != local_node);
        let remote: Vec<Event> = self
            .remote_events
            .iter()
            .enumerate()
            .map(|(i, (phase, edge, t, attrs))| Event {
                seq: i as u64,
                node: remote_node.clone().unwrap_or_else(|| "destination".into()),
                phase: phase.clone(),
                edge: *edge,
                t_ns: *t,
                attrs: attrs.clone(),
            })
            .collect();
        // Why the destination's events are not in the timeline, when they are not.
        let mut without_remote = None;
        let timeline = match (&remote_node, estimate_offset(&self.clock)) {
            (Some(rn), Ok(off)) if !remote.is_empty() => Timeline::merge(&local_node, local.clone(), rn, remote, &off).map_err(|e| {
                without_remote = Some(format!("the destination's events did not line up with ours ({e})"));
                e
            }),
            (Some(_), Err(e)) if !remote.is_empty() => {
                without_remote = Some(format!("no clock offset to the destination ({e})"));
                Timeline::single(&local_node, local.clone())
            }
            _ => {
                if self.dst.is_some() && remote.is_empty() {
                    without_remote = Some("the destination sent no events (its agent restarted during the migration, or it never restored)".into());
                }
                Timeline::single(&local_node, local.clone())
            }
        }
        .or_else(|_| Timeline::single(&local_node, local))
        .expect("a single node's own events always form a timeline");
        // A report without numbers says why, rather than leaving a researcher a blank.
        let (summary, summary_error) = match Summary::from_timeline(&timeline) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(without_remote.map_or_else(|| e.to_string(), |why| format!("{e}; {why}")))),
        };
        // Once a transport was chosen, every dump of this migration went the same way.
        let pages_streamed = self.streams_pages() && self.transport.is_some();
        MigrationReport {
            id: self.id.to_string(),
            pid: self.pid(),
            container: self.o.container.as_ref().map(|c| c.to_string()),
            strategy: self.o.strategy,
            source: self.src.take(),
            destination: self.dst.take(),
            final_bytes: self.final_bytes,
            bytes_total: self.bytes_total,
            rounds: std::mem::take(&mut self.rounds),
            stop_reason: self.stop_reason.take(),
            transport: self.transport.take(),
            tsc: self.tsc.take(),
            pages_streamed,
            outcome,
            timeline,
            summary,
            summary_error,
        }
    }
}
