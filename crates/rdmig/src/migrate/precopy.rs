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
        // A round that carries no more than the convergence threshold ends pre-copy; when all
        // that pre-copy could move is that small, a round costs (a pre-dump, and a parent image
        // the final dump and the restore must walk) without saving anything. Memory registered
        // for RDMA is pinned, and Linux 6.1's clear_refs never clears the soft-dirty bit of a
        // pinned page while its page table entry is writable. rdmig's rdma_rxe (patch 0032)
        // write-protects those entries before each round, so that CRIU's clear_refs does; a
        // driver without it leaves every MR page dirty, and every round and the final dump
        // carry the MRs again: then registered memory is not movable in advance.
        let tracking = if self.copts.plugins.is_some() { mr_tracking() } else { MrTracking::None };
        let tracked = tracking != MrTracking::None;
        if let Some(anon) = anonymous_bytes(o.pid) {
            let registered = if self.copts.plugins.is_some() && !tracked { registered_bytes(o.pid) } else { 0 };
            if let Some(why) = nothing_to_precopy(anon, registered, o.converge_bytes) {
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
            if self.copts.plugins.is_some() && round == 1 {
                // rxe writes into registered memory behind soft-dirty's back: from here on its
                // dirty log records those pages, and the plugin marks them at the final dump.
                // Cleared once, before the first round (which carries every MR page anyway):
                // a page RDMA wrote after some round's pre-dump must reach the final dump even
                // if no later round carries it, so only a driver that moves the log into the
                // soft-dirty bits (below) may empty it later.
                clear_rdma_dirty_logs(o.pid);
            }
            let mut logged = 0;
            if tracked {
                // Before the pre-dump, whose clear_refs then clears the MR pages' soft-dirty
                // bits too; a page the process writes meanwhile faults and stays dirty. With
                // patch 0033 the pages RDMA wrote since the last round are marked soft-dirty
                // first, so this round carries them and the final dump only what RDMA wrote
                // after it, instead of everything since the first round.
                logged = wrprotect_mrs(o.pid, tracking == MrTracking::WithLog);
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
            self.rec.end_with(phase, attrs([("bytes", bytes), ("pages", pages), ("rdma_logged_pages", logged)]));
            let by_rdma = if logged > 0 { format!(", {logged} of them written by RDMA since the last round") } else { String::new() };
            self.say(&format!("pre-copy round {round}: {} ({pages} pages{by_rdma}) dumped in {:.0} ms, sent in {:.0} ms", mib(bytes), dump_ms, send_ms));
            self.rounds.push(Round { round, bytes, pages, dump_ms, send_ms, rdma_logged_pages: logged });
            self.note(
                JPhase::PrecopyRound,
                JOutcome::Done,
                Some(serde_json::json!({ "round": round, "bytes": bytes, "pages": pages, "rdma_logged_pages": logged })),
            );
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

/// Why pre-copy would save nothing, if it would not: what it could move in advance, the
/// process's anonymous memory less what is registered for RDMA, is within the convergence
/// threshold.
fn nothing_to_precopy(anon: u64, registered: u64, converge: u64) -> Option<String> {
    let movable = anon.saturating_sub(registered);
    if movable > converge {
        return None;
    }
    Some(if registered == 0 {
        format!("nothing to pre-copy: {} of anonymous memory, within --converge-mib ({})", mib(anon), mib(converge))
    } else {
        format!(
            "nothing to pre-copy: of {} of anonymous memory, {} is registered for RDMA (pinned pages stay dirty to CRIU, so every round would carry them again), and the {} left is within --converge-mib ({})",
            mib(anon),
            mib(registered.min(anon)),
            mib(movable),
            mib(converge)
        )
    })
}

/// The bytes of process `pid`'s address space that its user MRs cover, overlaps counted once
/// (the driver's status gives each MR's start and length); 0 when the status cannot be read.
fn registered_bytes(pid: i32) -> u64 {
    rdmig_rxe::status::read().map(|recs| covered(&mr_ranges(&recs, pid))).unwrap_or(0)
}

/// The driver status's records of the user MRs of process `pid`.
fn user_mrs(recs: &[rdmig_rxe::status::Record], pid: i32) -> impl Iterator<Item = &rdmig_rxe::status::Record> {
    recs.iter().filter(move |r| r.kind == "mr" && r.get("type") == Some("user") && r.num("pid") == Some(pid as u64))
}

/// Calls `f` with the control device and each user MR of process `pid` (its device and index);
/// nothing when the driver's status or control device cannot be opened.
fn each_user_mr(pid: i32, mut f: impl FnMut(&rdmig_rxe::Ctl, &str, u32)) {
    let (Ok(recs), Ok(ctl)) = (rdmig_rxe::status::read(), rdmig_rxe::Ctl::open()) else {
        return;
    };
    for r in user_mrs(&recs, pid) {
        if let (Some(dev), Some(idx)) = (r.get("dev"), r.get("index").and_then(|i| i.parse().ok())) {
            f(&ctl, dev, idx);
        }
    }
}

fn mr_ranges(recs: &[rdmig_rxe::status::Record], pid: i32) -> Vec<(u64, u64)> {
    user_mrs(recs, pid)
        .filter_map(|r| {
            let (start, len) = (r.num("iova")?, r.num("length")?);
            Some((start, start.checked_add(len)?))
        })
        .collect()
}

/// The length of the union of half-open ranges.
fn covered(ranges: &[(u64, u64)]) -> u64 {
    let mut v: Vec<(u64, u64)> = ranges.iter().copied().filter(|(a, b)| b > a).collect();
    v.sort_unstable();
    let (mut total, mut end) = (0u64, 0u64);
    for (a, b) in v {
        let a = a.max(end);
        if b > a {
            total += b - a;
            end = b;
        }
    }
    total
}

/// How far this host's rdma_rxe lets soft-dirty tracking follow the pages of MRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MrTracking {
    /// Not at all: every MR page is dirty in every round.
    None,
    /// The process's own writes (MR_WRPROTECT, patch 0032); RDMA's reach the final dump through
    /// the dirty log.
    Wrprotect,
    /// Also RDMA's, round by round (MR_WRPROTECT_F_LOG, patch 0033).
    WithLog,
}

pub(super) fn mr_tracking() -> MrTracking {
    let features = rdmig_rxe::Ctl::open().and_then(|c| c.version()).map_or(0, |v| v.features);
    tracking_of(features)
}

fn tracking_of(features: u32) -> MrTracking {
    use rdmig_rxe::abi::{FEAT_MR_WRPROTECT, FEAT_MR_WRPROTECT_LOG};
    match (features & FEAT_MR_WRPROTECT != 0, features & FEAT_MR_WRPROTECT_LOG != 0) {
        (false, _) => MrTracking::None,
        (true, false) => MrTracking::Wrprotect,
        (true, true) => MrTracking::WithLog,
    }
}

/// Write-protects the page table entries of every user MR of process `pid`, and with `log`
/// first moves each MR's dirty log into their soft-dirty bits (see `precopy`). Failures are
/// warnings: an MR left writable only stays dirty, and every round carries it; a log left in
/// place reaches the final dump. Returns the pages moved from the logs.
pub(super) fn wrprotect_mrs(pid: i32, log: bool) -> u64 {
    let (mut mrs, mut protected, mut skipped, mut logged) = (0, 0, 0, 0);
    each_user_mr(pid, |ctl, dev, idx| match ctl.mr_wrprotect(dev, idx, pid, log) {
        Ok(w) => {
            mrs += 1;
            protected += w.protected;
            skipped += w.skipped;
            logged += w.logged;
        }
        Err(e) => warn!(pid, mr = idx, "write-protecting the MR's pages for soft-dirty tracking: {e}"),
    });
    if mrs > 0 {
        tracing::info!(
            pid,
            mrs,
            protected,
            skipped,
            logged,
            "MR pages write-protected before the pre-dump (skipped ones stay dirty; logged ones RDMA wrote, now soft-dirty)"
        );
    }
    logged
}

/// Clears the driver's dirty log of every MR of process `pid`.
pub(super) fn clear_rdma_dirty_logs(pid: i32) {
    each_user_mr(pid, |ctl, dev, idx| {
        if let Err(e) = ctl.dirty(dev, idx, true) {
            warn!(pid, mr = idx, "clearing the MR's dirty log: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn mr_tracking_follows_the_driver_features() {
        use super::MrTracking;
        use rdmig_rxe::abi::{FEAT_MR_WRPROTECT as W, FEAT_MR_WRPROTECT_LOG as L};
        assert_eq!(super::tracking_of(0), MrTracking::None);
        // the log flag alone means nothing without the ioctl it belongs to
        assert_eq!(super::tracking_of(L), MrTracking::None);
        assert_eq!(super::tracking_of(W), MrTracking::Wrprotect);
        assert_eq!(super::tracking_of(W | L | 1), MrTracking::WithLog);
    }

    #[test]
    fn anonymous_memory_counts_resident_and_swapped() {
        let rollup = "55d0c8e0a000-7ffd5a1f2000 ---p 00000000 00:00 0    [rollup]\nRss:                2048 kB\nAnonymous:           512 kB\nLazyFree:              0 kB\nAnonHugePages:         0 kB\nSwap:                 64 kB\nSwapPss:              64 kB\n";
        assert_eq!(super::parse_anonymous(rollup), Some(576 * 1024));
        assert_eq!(super::parse_anonymous("Rss: 4 kB\n"), None);
        assert_eq!(super::parse_anonymous("Anonymous: x kB\n"), None);
    }

    #[test]
    fn registered_memory_is_counted_once_and_only_for_the_process() {
        let recs = rdmig_rxe::status::parse(
            "mr dev=rxe0 index=5 type=user iova=0x10000 length=8192 pid=42\n\
             mr dev=rxe0 index=6 type=user iova=0x11000 length=8192 pid=42\n\
             mr dev=rxe0 index=7 type=user iova=0x40000 length=4096 pid=42\n\
             mr dev=rxe0 index=8 type=user iova=0x10000 length=65536 pid=43\n\
             mr dev=rxe0 index=9 type=dma iova=0x0 length=65536 pid=42\n\
             mr dev=rxe0 index=10 type=user iova=0xffffffffffffffff length=2 pid=42\n",
        );
        let r = super::mr_ranges(&recs, 42);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(super::covered(&r), 12288 + 4096);
        assert_eq!(super::covered(&[(0, 10), (2, 5), (10, 12), (20, 20)]), 12);
        assert_eq!(super::covered(&[]), 0);
    }

    #[test]
    fn pre_copy_is_skipped_when_registered_memory_leaves_nothing_to_move() {
        const M: u64 = 1 << 20;
        // Small, no RDMA: the old rule, the old words.
        assert!(super::nothing_to_precopy(4 * M, 0, 8 * M).unwrap().starts_with("nothing to pre-copy: 4.0 MiB of anonymous memory"));
        // Large and unregistered: pre-copy.
        assert_eq!(super::nothing_to_precopy(256 * M, 0, 8 * M), None);
        // Large, nearly all registered: skipped, and the reason says why.
        let why = super::nothing_to_precopy(260 * M, 256 * M, 8 * M).unwrap();
        assert!(why.contains("256.0 MiB is registered for RDMA") && why.contains("4.0 MiB left"), "{why}");
        // Large, half registered: what is left is worth moving in advance.
        assert_eq!(super::nothing_to_precopy(512 * M, 256 * M, 8 * M), None);
        // Registered beyond the anonymous memory (MRs over file mappings): nothing left, no underflow.
        assert!(super::nothing_to_precopy(M, 4 * M, 0).unwrap().contains("1.0 MiB is registered"));
    }
}
