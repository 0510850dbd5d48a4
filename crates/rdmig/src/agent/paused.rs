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

/// What the control device shows now: the total of pauses the bound ended (on every QP there
/// has been, so it outlives them), and every user RC QP's state.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub pauses_expired: Option<u64>,
    pub qps: Vec<QpNow>,
}

/// Reads the control device's status, and queries each user RC QP in it. A QP that goes away
/// between the two is left out.
pub fn snapshot() -> Result<Snapshot, CtlError> {
    let recs = rdmig_rxe::status::read()?;
    let ctl = Ctl::open()?;
    let pauses_expired = recs.iter().find(|r| r.kind == "rxe_ctl").and_then(|r| r.num("pauses_expired"));
    let mut qps = vec![];
    for r in recs.iter().filter(|r| r.kind == "qp" && r.get("type") == Some("rc")) {
        let (Some(dev), Some(qpn)) = (r.get("dev"), r.num("qpn").and_then(|q| u32::try_from(q).ok())) else { continue };
        let Ok(q) = ctl.qp_query(dev, qpn) else { continue };
        qps.push(QpNow {
            dev: dev.to_string(),
            qpn,
            pid: r.num("pid").and_then(|p| i32::try_from(p).ok()),
            stopped: q.state & QP_S_STOPPED != 0,
            resuming: q.state & QP_S_RESUMING != 0,
            paused: q.state & QP_S_PAUSED != 0,
            pauses_expired: q.pauses_expired,
        });
    }
    Ok(Snapshot { pauses_expired, qps })
}

/// The bound in seconds, when the module has one.
pub fn pause_max_sec() -> Option<u64> {
    std::fs::read_to_string(PAUSE_MAX).ok()?.trim().parse().ok()
}

/// Pauses that ended at the bound since the last look.
#[derive(Debug, PartialEq)]
struct Ended {
    count: u64,
    /// Those of QPs that still exist (an application usually exits soon after its QP failed,
    /// so the kernel's log is where every QP is named).
    qps: Vec<QpNow>,
}

/// Compares each snapshot with the one before.
#[derive(Default)]
struct Watch {
    /// The total at the last look; the first look only sets it (what ended before this agent
    /// started was reported by the one before, or by the kernel's log).
    total: Option<u64>,
    /// Each QP's own count, by device, QPN and creating process.
    per_qp: HashMap<(String, u32, Option<i32>), u32>,
}

impl Watch {
    fn look(&mut self, now: &Snapshot) -> Option<Ended> {
        let qps: Vec<QpNow> =
            now.qps.iter().filter(|q| q.pauses_expired > self.per_qp.get(&(q.dev.clone(), q.qpn, q.pid)).copied().unwrap_or(0)).cloned().collect();
        self.per_qp = now.qps.iter().map(|q| ((q.dev.clone(), q.qpn, q.pid), q.pauses_expired)).collect();
        let count = match (self.total, now.pauses_expired) {
            (Some(before), Some(total)) => total.saturating_sub(before),
            // A module without the total: what the live QPs say.
            (_, None) => qps.len() as u64,
            (None, Some(_)) => 0,
        };
        if now.pauses_expired.is_some() {
            self.total = now.pauses_expired;
        }
        (count > 0).then_some(Ended { count, qps })
    }
}

/// Reports, for as long as the agent runs, every pause that ended at the bound.
pub(super) async fn watch(every: Duration) {
    let mut w = Watch::default();
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
        if let Some(e) = w.look(&now) {
            let named: Vec<String> =
                e.qps.iter().map(|q| format!("QP {} on {} of pid {}", q.qpn, q.dev, q.pid.map_or("?".into(), |p| p.to_string()))).collect();
            warn!(
                count = e.count,
                qps = ?named,
                bound_s = ?pause_max_sec(),
                "rxe ended {} pause(s) that no RESUME ended: a peer paused a QP here and never resumed it (its migration failed for good?); the QP retries as usual; the kernel's log names each QP",
                e.count
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qp(qpn: u32, pid: i32, expired: u32) -> QpNow {
        QpNow { dev: "rxe0".into(), qpn, pid: Some(pid), stopped: false, resuming: false, paused: false, pauses_expired: expired }
    }

    fn snap(total: Option<u64>, qps: Vec<QpNow>) -> Snapshot {
        Snapshot { pauses_expired: total, qps }
    }

    #[test]
    fn each_end_of_a_pause_is_reported_once_even_when_its_qp_is_gone() {
        let mut w = Watch::default();
        assert_eq!(w.look(&snap(Some(3), vec![qp(17, 1, 1)])), None, "the first look only sets the baseline");
        assert_eq!(w.look(&snap(Some(3), vec![qp(17, 1, 1)])), None, "nothing new");
        // One ended on a QP that is gone by now: counted, not named.
        assert_eq!(w.look(&snap(Some(4), vec![qp(17, 1, 1)])), Some(Ended { count: 1, qps: vec![] }));
        // One on a live QP: counted and named.
        assert_eq!(w.look(&snap(Some(5), vec![qp(17, 1, 2)])), Some(Ended { count: 1, qps: vec![qp(17, 1, 2)] }));
        assert_eq!(w.look(&snap(Some(5), vec![qp(17, 1, 2)])), None);
    }

    #[test]
    fn without_the_total_the_live_qps_tell() {
        let mut w = Watch::default();
        assert_eq!(w.look(&snap(None, vec![qp(17, 1, 0), qp(18, 1, 1)])), Some(Ended { count: 1, qps: vec![qp(18, 1, 1)] }));
        assert_eq!(w.look(&snap(None, vec![qp(17, 1, 0), qp(18, 1, 1)])), None);
        // The QPN taken by another process's new QP: its own count.
        assert_eq!(w.look(&snap(None, vec![qp(17, 2, 1)])), Some(Ended { count: 1, qps: vec![qp(17, 2, 1)] }));
    }
}
