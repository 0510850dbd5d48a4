//! This node's QPs as their migrations left them: stopped (ours, dumped or held), resuming, or
//! paused by a peer that is migrating. A pause that no RESUME ends ends at our rxe's bound
//! (softroce patch 0017, `pause_max_sec`); the agent watches for that and reports each one, as
//! it means a peer's migration failed for good. `rdmig status` lists the QPs in such a state.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use rdmig_rxe::{Ctl, CtlError, QP_S_PAUSED, QP_S_RESUMING, QP_S_STOPPED};

/// Where our rdma_rxe shows the bound.
const PAUSE_MAX: &str = "/sys/module/rdma_rxe/parameters/pause_max_sec";

/// One user RC QP's migration state (`RXE_CTL_IOC_QP_QUERY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpNow {
    pub dev: String,
    pub qpn: u32,
    /// The process that created it.
    pub pid: Option<i32>,
    pub stopped: bool,
    pub resuming: bool,
    pub paused: bool,
    /// Pauses of this QP that ended at the bound with no RESUME.
    pub pauses_expired: u32,
}

impl QpNow {
    /// Not running as usual right now.
    pub fn held(&self) -> bool {
        self.stopped || self.resuming || self.paused
    }
}

/// Every user RC QP of this node, from the control device's status and a query each. A QP that
/// goes away between the two is left out.
pub fn snapshot() -> Result<Vec<QpNow>, CtlError> {
    let recs = rdmig_rxe::status::read()?;
    let ctl = Ctl::open()?;
    let mut out = vec![];
    for r in recs.iter().filter(|r| r.kind == "qp" && r.get("type") == Some("rc")) {
        let (Some(dev), Some(qpn)) = (r.get("dev"), r.num("qpn").and_then(|q| u32::try_from(q).ok())) else { continue };
        let Ok(q) = ctl.qp_query(dev, qpn) else { continue };
        out.push(QpNow {
            dev: dev.to_string(),
            qpn,
            pid: r.num("pid").and_then(|p| i32::try_from(p).ok()),
            stopped: q.state & QP_S_STOPPED != 0,
            resuming: q.state & QP_S_RESUMING != 0,
            paused: q.state & QP_S_PAUSED != 0,
            pauses_expired: q.pauses_expired,
        });
    }
    Ok(out)
}

/// The bound in seconds, when the module has one.
pub fn pause_max_sec() -> Option<u64> {
    std::fs::read_to_string(PAUSE_MAX).ok()?.trim().parse().ok()
}

/// Each QP's count of pauses ended at the bound, by device, QPN and creating process.
type Expired = HashMap<(String, u32, Option<i32>), u32>;

/// The QPs whose count of pauses ended at the bound grew since `before` (a QP not in `before`
/// counts from 0), and the counts to compare with next time.
fn newly_expired(before: &Expired, now: &[QpNow]) -> (Vec<QpNow>, Expired) {
    let grew = now.iter().filter(|q| q.pauses_expired > before.get(&(q.dev.clone(), q.qpn, q.pid)).copied().unwrap_or(0)).cloned().collect();
    (grew, now.iter().map(|q| ((q.dev.clone(), q.qpn, q.pid), q.pauses_expired)).collect())
}

/// Reports, for as long as the agent runs, every pause that ended at the bound.
pub(super) async fn watch(every: Duration) {
    let mut seen = HashMap::new();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = match tokio::task::spawn_blocking(snapshot).await {
            Ok(Ok(n)) => n,
            // Stock module, or none loaded: nothing of ours to watch.
            Ok(Err(e)) => {
                debug!("paused QPs: {e}");
                continue;
            }
            Err(e) => {
                warn!("paused QPs: {e}");
                continue;
            }
        };
        let (grew, next) = newly_expired(&seen, &now);
        for q in grew {
            warn!(
                dev = %q.dev,
                qpn = q.qpn,
                pid = ?q.pid,
                bound_s = ?pause_max_sec(),
                "a peer paused this QP and never resumed it (its migration failed for good?): the pause ended at rxe's bound and the QP retries as usual"
            );
        }
        seen = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp(qpn: u32, pid: i32, expired: u32) -> QpNow {
        QpNow { dev: "rxe0".into(), qpn, pid: Some(pid), stopped: false, resuming: false, paused: false, pauses_expired: expired }
    }

    #[test]
    fn each_end_of_a_pause_is_reported_once() {
        let (grew, seen) = newly_expired(&HashMap::new(), &[qp(17, 1, 0), qp(18, 1, 1)]);
        assert_eq!(grew, vec![qp(18, 1, 1)], "a QP seen for the first time counts from 0");
        let (grew, seen) = newly_expired(&seen, &[qp(17, 1, 0), qp(18, 1, 1)]);
        assert!(grew.is_empty(), "the same count again is no news");
        let (grew, seen) = newly_expired(&seen, &[qp(17, 1, 2), qp(18, 1, 1)]);
        assert_eq!(grew, vec![qp(17, 1, 2)]);
        // The QPN taken by another process's new QP: its own count.
        let (grew, _) = newly_expired(&seen, &[qp(17, 2, 1)]);
        assert_eq!(grew, vec![qp(17, 2, 1)]);
    }
}
