//! The restore stage: the destination restores the final images and the process runs there. If
//! the reply is lost (or late), the destination is asked (on fresh connections) whether it
//! restored.

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::warn;

use super::remote::{ask_state, call, ASK_WINDOW, RESTORE_WAIT};
use super::Run;
use crate::timeline::{attrs, Attrs, Edge, Phase, RDMA_US};
use rdmig_proto::msg::{MigState, RelPath, Reply, Request, RestoreOpts};
use rdmig_proto::wire::{Channel, Limits};

/// Whether the process runs at the destination now.
pub(super) enum Restored {
    /// It does, with this pid.
    Yes(i32),
    /// It does not: the source may take it back.
    No(String),
    /// Nobody can tell: the source copy must stay stopped.
    Unknown(String),
}

impl Run<'_> {
    pub(super) async fn restore(&mut self, ch: &mut Channel<TcpStream>) -> Restored {
        let o = self.o;
        self.rec.start(Phase::Restore);
        let ropts = RestoreOpts { verbs: self.copts.plugins.is_some(), tcp_established: o.tcp_established, move_addr: self.moved.clone() };
        // CRIU may take long: the reply gets the restore's time, within the deadline.
        let limits = ch.limits();
        ch.set_limits(Limits { idle: Some(RESTORE_WAIT), ..limits });
        let req = match &self.ctr {
            Some(c) => Request::RestoreContainer {
                id: self.id.clone(),
                archive: self.archive_rel(),
                container: c.reference(),
                opts: ropts,
                previous: self.pre_archive_rel(),
            },
            None => Request::Restore { id: self.id.clone(), dir: RelPath::new("final").expect("valid"), opts: ropts },
        };
        let restored = call(ch, &req).await;
        ch.set_limits(limits);
        let pid = match restored {
            Ok(Reply::Restored { pid, start_ns, end_ns, rdma_us, rdma_steps_us }) => {
                // The copy is held (stopped) until the commit lets it run: its resume spans
                // from here to the commit's answer (`finish`).
                self.remote_events.push((Phase::Restore, Edge::Start, start_ns, Attrs::new()));
                let mut a = attrs(rdma_us.map(|us| (RDMA_US, us)));
                if let Some(steps) = crate::timeline::steps_json(&rdma_steps_us) {
                    a.insert(crate::timeline::RDMA_STEPS_US.into(), steps);
                }
                self.remote_events.push((Phase::Restore, Edge::End, end_ns, a));
                self.restored_ns = Some(end_ns);
                pid
            }
            Ok(Reply::Failed(e)) => return Restored::No(format!("restore at the destination: {e}")),
            Ok(other) => return Restored::No(format!("restore: unexpected reply {other:?}")),
            Err(e) => {
                // Did the restore happen? Only the destination knows.
                warn!("lost the destination during restore: {e}");
                let until = self.cleanup_until().min(Instant::now() + ASK_WINDOW);
                match ask_state(o.to, &o.tls, &self.id, until).await {
                    Some(MigState::Restored { pid }) => {
                        self.say("the destination restored the process although its reply was lost");
                        pid
                    }
                    Some(MigState::Receiving) | Some(MigState::Aborted) => {
                        return Restored::No(format!("connection lost during restore ({e}); the destination did not restore"));
                    }
                    other if self.ctr.is_some() => {
                        return Restored::Unknown(format!(
                            "connection lost during restore ({e}) and the destination's state is {other:?}; container {} is left \
                             checkpointed here (not running): `rdmig recover` here (or this node's agent, within 30 s) asks the \
                             destination and restores it here or finishes the move",
                            self.ctr.as_ref().map(|c| c.name.to_string()).unwrap_or_default(),
                        ));
                    }
                    other => {
                        return Restored::Unknown(format!(
                            "connection lost during restore ({e}) and the destination's state is {other:?}; process {} is left \
                                 stopped here (a copy there stays stopped until a commit); `rdmig recover` here (or this node's agent, \
                                 within 30 s) asks the destination and resumes it here or finishes the move",
                            o.pid
                        ));
                    }
                }
            }
        };
        self.rec.end(Phase::Restore);
        Restored::Yes(pid)
    }
}
