//! How a migration ends once it started: commit (the process runs at the destination: the
//! destination commits, then the stopped source copy goes), rollback (the process runs here
//! again: its address back, its stopped QPs resumed, SIGCONT; the destination aborts and kills
//! any copy it made), or in doubt (only the destination knows, and it cannot be asked: the
//! source copy stays stopped, never two running copies).
//!
//! The destination commits before the source copy is killed: a destination that does not hear
//! from its source drops an uncommitted copy, so killing first could lose the process.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tracing::warn;

use super::remote::{abort_remote, call, commit_again};
use super::{Outcome, Run};
use crate::journal::{Outcome as JOutcome, Phase as JPhase};
use crate::timeline::{Attrs, Edge, Phase};
use rdmig_proto::msg::{MigState, Reply, Request};
use rdmig_proto::wire::{Channel, Limits};

impl Run<'_> {
    /// The destination runs the process: it commits, then the stopped source copy goes.
    pub(super) async fn commit(&mut self, ch: &mut Channel<TcpStream>, restored_pid: i32) -> Outcome {
        let o = self.o;
        self.rec.end(Phase::Freeze);
        self.rec.start(Phase::Cleanup);
        // Recovery must know a commit may have reached the destination before it does: without
        // this record it would resume the copy here.
        if let Err(e) = self.must_note(JPhase::Commit, Some(serde_json::json!({ "restored_pid": restored_pid }))) {
            return self.rollback(e).await;
        }
        // The process runs there now: committing may use the clean-up's time too.
        ch.set_limits(Limits { deadline: Some(self.cleanup_until()), ..ch.limits() });
        let committed = match call(ch, &Request::Commit { id: self.id.clone() }).await {
            Ok(Reply::Committed { resumed_ns }) => Ok(Some(resumed_ns)),
            other => {
                warn!("commit at the destination: {other:?}; asking again");
                commit_again(o.to, &o.tls, &self.id, self.cleanup_until()).await
            }
        };
        match committed {
            Ok(resumed_ns) => {
                // The copy ran from the commit's answer on (its time unknown when the answer was
                // lost: the restore's end, a lower bound); a container ran from its restore's end
                // (Podman cannot restore it held), which is when its downtime ended.
                match (self.restored_ns, resumed_ns) {
                    (Some(r), resumed) => {
                        let ran = if self.ctr.is_some() { r } else { resumed.unwrap_or(r).max(r) };
                        self.remote_events.push((Phase::Resume, Edge::Start, r, Attrs::new()));
                        self.remote_events.push((Phase::Resume, Edge::End, ran, Attrs::new()));
                    }
                    // The restore's answer was lost (its agent restarted), the commit's was not:
                    // a process is held stopped until the commit, so its stop ended exactly there.
                    // (A container ran from its restore's end, which is not known then.)
                    (None, Some(ran)) if self.ctr.is_none() => {
                        self.remote_events.push((Phase::Resume, Edge::Start, ran, Attrs::new()));
                        self.remote_events.push((Phase::Resume, Edge::End, ran, Attrs::new()));
                    }
                    _ => {}
                }
            }
            // The destination dropped its copy (the source was silent too long): run it here.
            Err(Some(MigState::Aborted)) => {
                return self.rollback(format!("the destination restored pid {restored_pid}, then aborted the migration before it was committed")).await;
            }
            Err(state) if self.ctr.is_some() => {
                return self.in_doubt(format!(
                    "the destination restored container {} (it runs there) but did not confirm the commit (its state: {state:?}); \
                     the container is left checkpointed here (not running), its archive kept; `rdmig recover` here (or this node's \
                     agent, within 30 s) asks the destination and removes it here or restores it here",
                    o.container.as_ref().map(|c| c.to_string()).unwrap_or_default()
                ));
            }
            Err(state) => {
                return self.in_doubt(format!(
                    "the destination restored the process (pid {restored_pid} there, held stopped until the commit) but did not confirm \
                     the commit (its state: {state:?}). Process {} is left stopped here; `rdmig recover` here (or this node's agent, \
                     within 30 s) asks the destination and resumes it here or finishes the move",
                    o.pid
                ));
            }
        }
        if self.ctr.is_some() {
            if let Err(e) = self.remove_source_container().await {
                warn!("{e}");
            }
            self.note(JPhase::Commit, JOutcome::Done, Some(serde_json::json!({ "removed_source_container": o.container })));
        } else {
            if let Err(e) = kill(Pid::from_raw(o.pid), Signal::SIGKILL) {
                warn!("killing the source copy {}: {e}", o.pid);
            }
            // Only now: a run that dies before this leaves recovery to kill the stopped copy.
            self.note(JPhase::Commit, JOutcome::Done, Some(serde_json::json!({ "killed_source_copy": o.pid })));
        }
        self.rec.end(Phase::Cleanup);
        self.say(&format!("migrated: pid {restored_pid} runs at {}", self.dst.as_ref().map(|d| d.hostname.as_str()).unwrap_or("?")));
        Outcome::Migrated { restored_pid }
    }

    /// Before the freeze: the process never stopped; only the destination is cleaned. Once the
    /// deadline has passed, this is a refusal.
    pub(super) async fn abandon(&mut self, why: String) -> Outcome {
        let late = self.late();
        abort_remote(self.o.to, &self.o.tls, &self.id, self.cleanup_until()).await;
        if late {
            Outcome::Refused {
                reason: format!("the deadline (--deadline {} s) passed before the freeze ({why}); the process never stopped", self.o.deadline.as_secs()),
            }
        } else {
            Outcome::RolledBack { reason: why }
        }
    }

    /// The final dump failed: CRIU resumes the process when a dump fails; make sure of it.
    pub(super) async fn dump_failed(&mut self, why: String) -> Outcome {
        if self.ctr.is_some() {
            let why = self.container_after_failed_checkpoint(why).await;
            self.rec.end(Phase::FinalDump);
            self.resumed_here();
            abort_remote(self.o.to, &self.o.tls, &self.id, self.cleanup_until()).await;
            return Outcome::RolledBack { reason: why };
        }
        let _ = crate::process::resume(self.o.pid);
        self.rec.end(Phase::FinalDump);
        self.resumed_here();
        abort_remote(self.o.to, &self.o.tls, &self.id, self.cleanup_until()).await;
        Outcome::RolledBack { reason: why }
    }

    /// After the freeze: the process runs here again (address back, QPs resumed, SIGCONT), and
    /// the destination drops the migration.
    pub(super) async fn rollback(&mut self, why: String) -> Outcome {
        self.note(JPhase::Rollback, JOutcome::Started, Some(serde_json::json!({ "reason": why })));
        let mut why = why;
        if let Some(m) = &self.moved {
            if let Err(e) = crate::netaddr::add(m) {
                why = format!("{why}; and taking {} back failed: {e}", m.addr);
            }
        }
        if self.ctr.is_some() {
            // The destination's copy runs from its restore on: it goes first, then this one runs.
            abort_remote(self.o.to, &self.o.tls, &self.id, self.cleanup_until()).await;
            let why = match self.restore_container_here().await {
                Ok(()) => why,
                Err(e) => format!("{why}; and {e}"),
            };
            self.resumed_here();
            return Outcome::RolledBack { reason: why };
        }
        let why = match crate::process::resume(self.o.pid) {
            Ok(()) => why,
            Err(e) => format!("{why}; and resuming the source failed: {e}"),
        };
        self.resumed_here();
        abort_remote(self.o.to, &self.o.tls, &self.id, self.cleanup_until()).await;
        Outcome::RolledBack { reason: why }
    }

    /// Only the destination knows whether the process runs there: the copy here stays stopped.
    pub(super) fn in_doubt(&mut self, why: String) -> Outcome {
        if let Some(c) = self.ctr.as_mut() {
            c.keep_archive = true;
        }
        Outcome::InDoubt { reason: why }
    }

    /// How the run ended, in the journal: a rollback (refusals included: the migration is over
    /// and nothing is left to undo) or in doubt (`rdmig recover` decides). A commit recorded
    /// itself.
    pub(super) fn journal_end(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Migrated { .. } => {}
            Outcome::Refused { reason } => self.note(JPhase::Rollback, JOutcome::Done, Some(serde_json::json!({ "refused": reason }))),
            Outcome::RolledBack { reason } => self.note(JPhase::Rollback, JOutcome::Done, Some(serde_json::json!({ "reason": reason }))),
            Outcome::InDoubt { reason } => self.note(JPhase::InDoubt, JOutcome::Done, Some(serde_json::json!({ "reason": reason }))),
        }
    }
}
