//! The pre-copy stage: CRIU pre-dumps while the process runs, each round's images sent (or
//! streamed) to the destination, until a round is small enough, stops shrinking, or the round
//! limit is reached. A failure here never stopped the process. A container's pre-copy is
//! Podman's one pre-checkpoint (`container`).

use std::time::Instant;

use tokio::net::TcpStream;
use tracing::warn;

use super::remote::busy;
use super::{mib, Round, Run, Step, Strategy};
use crate::criu::{self, DumpSpec};
use crate::journal::{Outcome as JOutcome, Phase as JPhase};
use crate::timeline::{attrs, Phase};
use rdmig_proto::wire::Channel;

impl Run<'_> {
    /// Pre-copy rounds until a stop rule says enough (none for stop-and-copy); returns the last
    /// round's directory, the final dump's parent.
    pub(super) async fn precopy(&mut self, ch: &mut Channel<TcpStream>) -> Result<Option<String>, Step> {
        let o = self.o;
        if o.strategy == Strategy::StopAndCopy {
            return Ok(None);
        }
        // A container's pre-copy was asked for (it moves stop-and-copy by default), and its
        // memory is that of all of its processes, not of the one here.
        if self.ctr.is_some() {
            return self.precheckpoint_container(ch).await.map(Some);
        }
        // A round that carries no more than the convergence threshold ends pre-copy; when all of
        // the process's memory is that small, a round costs (a pre-dump, and a parent image the
        // final dump and the restore must walk) without saving anything.
        if let Some(anon) = anonymous_bytes(o.pid) {
            if anon <= o.converge_bytes {
                let why = format!("nothing to pre-copy: {} of anonymous memory, within --converge-mib ({})", mib(anon), mib(o.converge_bytes));
                self.say(&why);
                self.stop_reason = Some(why);
                return Ok(None);
            }
        }
        let mut parent: Option<String> = None;
        let mut prev_bytes: Option<u64> = None;
        for round in 1..=o.max_rounds.max(1) {
            let name = format!("pre-{round}");
            let dir = self.dir.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| Step::Fail(format!("{}: {e}", dir.display())))?;
            let phase = Phase::PrecopyRound(round);
            self.rec.start(phase.clone());
            let t = Instant::now();
            if self.copts.plugins.is_some() {
                // rxe writes into registered memory behind soft-dirty's back: from here on its
                // dirty log records those pages, and the plugin marks them at the final dump.
                clear_rdma_dirty_logs(o.pid);
            }
            let spec = DumpSpec {
                pid: o.pid,
                dir: dir.clone(),
                parent: parent.as_ref().map(|p| format!("../{p}")),
                timeout: o.dump_timeout,
                opts: self.copts.clone(),
            };
            let bytes = if self.streams_pages() {
                self.dump_streamed(ch, &name, parent.as_deref(), &spec, false).await?
            } else {
                let (dumped, alive) = busy(ch, criu::pre_dump(&spec)).await;
                dumped.map_err(|e| Step::Fail(e.to_string()))?;
                alive?;
                criu::page_bytes(&dir)
            };
            let dump_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            self.send_dir(ch, &name).await?;
            let send_ms = t.elapsed().as_secs_f64() * 1e3;
            let pages = bytes / 4096;
            self.rec.end_with(phase, attrs([("bytes", bytes), ("pages", pages)]));
            self.say(&format!("pre-copy round {round}: {} ({pages} pages) dumped in {:.0} ms, sent in {:.0} ms", mib(bytes), dump_ms, send_ms));
            self.rounds.push(Round { round, bytes, pages, dump_ms, send_ms });
            self.note(JPhase::PrecopyRound, JOutcome::Done, Some(serde_json::json!({ "round": round, "bytes": bytes, "pages": pages })));
            parent = Some(name);
            // Stop rules: the remaining dirty set is small, or it no longer shrinks (the process
            // dirties memory as fast as we copy it), or enough rounds were spent.
            let reason = if bytes <= o.converge_bytes {
                Some(format!("converged ({} <= {})", mib(bytes), mib(o.converge_bytes)))
            } else if prev_bytes.is_some_and(|p| bytes * 10 >= p * 9) {
                Some("dirty set no longer shrinking".to_string())
            } else if round == o.max_rounds {
                Some(format!("round limit ({})", o.max_rounds))
            } else {
                None
            };
            prev_bytes = Some(bytes);
            if let Some(r) = reason {
                self.stop_reason = Some(r);
                break;
            }
        }
        Ok(parent)
    }
}

/// The process's anonymous memory (resident and swapped), which is what CRIU's page images
/// carry; `None` when /proc does not tell.
fn anonymous_bytes(pid: i32) -> Option<u64> {
    parse_anonymous(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

fn parse_anonymous(rollup: &str) -> Option<u64> {
    let mut total = None;
    for line in rollup.lines() {
        let mut f = line.split_whitespace();
        if let (Some("Anonymous:" | "Swap:"), Some(kb), Some("kB")) = (f.next(), f.next(), f.next()) {
            total = Some(total.unwrap_or(0) + kb.parse::<u64>().ok()? * 1024);
        }
    }
    total
}

/// Clears the driver's dirty log of every MR of process `pid`.
pub(super) fn clear_rdma_dirty_logs(pid: i32) {
    let (Ok(recs), Ok(ctl)) = (rdmig_rxe::status::read(), rdmig_rxe::Ctl::open()) else {
        return;
    };
    for r in recs.iter().filter(|r| r.kind == "mr" && r.fields.get("pid").is_some_and(|p| *p == pid.to_string())) {
        if let (Some(dev), Some(idx)) = (r.fields.get("dev"), r.fields.get("index").and_then(|i| i.parse::<u32>().ok())) {
            if let Err(e) = ctl.dirty(dev, idx, true) {
                warn!(pid, mr = idx, "clearing the MR's dirty log: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn anonymous_memory_counts_resident_and_swapped() {
        let rollup = "55d0c8e0a000-7ffd5a1f2000 ---p 00000000 00:00 0    [rollup]\nRss:                2048 kB\nAnonymous:           512 kB\nLazyFree:              0 kB\nAnonHugePages:         0 kB\nSwap:                 64 kB\nSwapPss:              64 kB\n";
        assert_eq!(super::parse_anonymous(rollup), Some(576 * 1024));
        assert_eq!(super::parse_anonymous("Rss: 4 kB\n"), None);
        assert_eq!(super::parse_anonymous("Anonymous: x kB\n"), None);
    }
}
