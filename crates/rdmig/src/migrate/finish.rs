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
use tracing::{info, warn};

use super::remote::{abort_remote, call, commit_again};
use super::{Outcome, Run};
use crate::timeline::Phase;
use rdmig_proto::msg::{MigState, Reply, Request};
use rdmig_proto::wire::{Channel, Limits};

impl Run<'_> {
    /// The destination runs the process: it commits, then the stopped source copy goes.
    pub(super) async fn commit(&mut self, ch: &mut Channel<TcpStream>, restored_pid: i32) -> Outcome {
        let o = self.o;
        self.rec.end(Phase::Freeze);
        self.rec.start(Phase::Cleanup);
        // The process runs there now: committing may use the clean-up's time too.
        ch.set_limits(Limits { deadline: Some(self.cleanup_until()), ..ch.limits() });
        let committed = match call(ch, &Request::Commit { id: self.id.clone() }).await {
            Ok(Reply::Ack) => Ok(()),
            other => {
                warn!("commit at the destination: {other:?}; asking again");
                commit_again(o.to, &o.tls, &self.id, self.cleanup_until()).await
            }
        };
        match committed {
            Ok(()) => {}
            // The destination dropped its copy (the source was silent too long): run it here.
            Err(Some(MigState::Aborted)) => {
                return self.rollback(format!("the destination restored pid {restored_pid}, then aborted the migration before it was committed")).await;
            }
            Err(state) => {
                return self.in_doubt(format!(
                    "the destination restored the process (pid {restored_pid} there) but did not confirm the commit (its state: {state:?}); \
                     it kills an uncommitted copy once its source has been silent for its --orphan-after. \
                     Process {} is left stopped here: check the destination, then `kill -CONT {}` here or kill it",
                    o.pid, o.pid
                ));
            }
        }
        if let Err(e) = kill(Pid::from_raw(o.pid), Signal::SIGKILL) {
            warn!("killing the source copy {}: {e}", o.pid);
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
        let _ = resume_source(self.o.pid);
        self.rec.end(Phase::FinalDump);
        self.resumed_here();
        abort_remote(self.o.to, &self.o.tls, &self.id, self.cleanup_until()).await;
        Outcome::RolledBack { reason: why }
    }

    /// After the freeze: the process runs here again (address back, QPs resumed, SIGCONT), and
    /// the destination drops the migration.
    pub(super) async fn rollback(&mut self, why: String) -> Outcome {
        let mut why = why;
        if let Some(m) = &self.moved {
            if let Err(e) = crate::netaddr::add(m) {
                why = format!("{why}; and taking {} back failed: {e}", m.addr);
            }
        }
        let why = match resume_source(self.o.pid) {
            Ok(()) => why,
            Err(e) => format!("{why}; and resuming the source failed: {e}"),
        };
        self.resumed_here();
        abort_remote(self.o.to, &self.o.tls, &self.id, self.cleanup_until()).await;
        Outcome::RolledBack { reason: why }
    }

    /// Only the destination knows whether the process runs there: the copy here stays stopped.
    pub(super) fn in_doubt(&self, why: String) -> Outcome {
        Outcome::InDoubt { reason: why }
    }
}

/// Sends SIGCONT so a process left stopped by `--leave-stopped` runs again. QPs of the process
/// that the CRIU plugin stopped for the dump are resumed first (their peers, paused, continue).
fn resume_source(pid: i32) -> Result<(), String> {
    let qps = resume_stopped_qps(pid);
    kill(Pid::from_raw(pid), Signal::SIGCONT).map_err(|e| format!("SIGCONT {pid}: {e}"))?;
    qps
}

/// Resumes the stopped QPs of process `pid` (none for processes without verbs state).
fn resume_stopped_qps(pid: i32) -> Result<(), String> {
    let Ok(recs) = rdmig_rxe::status::read() else {
        return Ok(());
    };
    let qps: Vec<(String, u32)> = recs
        .iter()
        .filter(|r| r.kind == "qp" && r.fields.get("pid").is_some_and(|p| *p == pid.to_string()))
        .filter_map(|r| Some((r.fields.get("dev")?.clone(), r.fields.get("qpn")?.parse().ok()?)))
        .collect();
    if qps.is_empty() {
        return Ok(());
    }
    let ctl = rdmig_rxe::Ctl::open().map_err(|e| format!("resume the QPs of {pid}: {e}"))?;
    let mut errs = vec![];
    for (dev, qpn) in qps {
        match ctl.qp_query(&dev, qpn) {
            Ok(st) if st.state & rdmig_rxe::QP_S_STOPPED != 0 => match ctl.qp_resume(&dev, qpn, 0) {
                Ok(_) => info!(pid, qpn, "resumed the stopped QP"),
                Err(e) => errs.push(format!("QP {qpn}: {e}")),
            },
            Ok(_) => {}
            Err(e) => errs.push(format!("QP {qpn}: {e}")),
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("resuming the stopped QPs of {pid}: {}", errs.join("; ")))
    }
}
