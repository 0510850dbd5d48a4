//! Completion queues. Dump: the file's ring mappings that are no QP's send or receive queue,
//! paired with the CQ handles by creation order; size from the ring's index mask; user handle,
//! channel and event counters from ib_uverbs' fdinfo. Restore: created with their old size on
//! their channel, the new ring mapped where the old one was; the ring's contents come back with
//! a connected QP's driver image, or as saved (see [`super::rings::copy_back`]).

use std::os::fd::RawFd;

use super::events::{self, NewChannel};
use super::rings::{self, NewRings, Vma};
use super::{limits, DumpCx};
use crate::cmd;
use crate::common::{DumpError, RestoreError};
use crate::fdinfo::UverbsInfo;
use crate::image::{Context, Cq};
use crate::uverbs;

// ---- dump ----

/// The file's CQs: the mappings `vmas` that are not at one of `qp_queues` (the QPs' send and
/// receive queues), paired with the CQ handles by creation order; `saved` holds the rings.
pub fn save(cx: &DumpCx, uv: Option<&UverbsInfo>, vmas: &[Vma], qp_queues: &[u64], saved: &rings::Saved) -> Result<Vec<Cq>, DumpError> {
    let cq_handles = cx.handles(uverbs::OBJ_CQ, "CQ")?;
    let cq_rings: Vec<u64> = vmas.iter().map(|v| v.pgoff).filter(|o| !qp_queues.contains(o)).collect();
    if cq_rings.len() != cq_handles.len() {
        return Err(cx.unsupported(format!(
            "has {} CQ handles but {} ring mappings that are not send or receive queues of its QPs; cannot pair them",
            cq_handles.len(),
            cq_rings.len()
        )));
    }
    let mut cqs: Vec<Cq> = vec![];
    for (h, o) in cq_handles.iter().zip(&cq_rings) {
        let mut cq = Cq { handle: *h, pgoff: Some(*o), cqe: saved.word(*o, rings::RING_INDEX_MASK), ..Default::default() };
        if let Some(i) = uv {
            let e = i.cq(*h).ok_or_else(|| cx.unsupported(format!("CQ handle {h} is missing from the fdinfo of the uverbs file")))?;
            cq.user_handle = e.user_handle;
            cq.channel = e.channel.clone();
            cq.comp_events_reported = e.comp_events_reported;
            cq.events_reported = e.events_reported;
        }
        cqs.push(cq);
    }
    Ok(cqs)
}

/// Refuses a CQ whose ring no QP state image carries (at none of `carried`) when copying it back
/// as saved would not be exact: it holds completions, or it delivers to a completion channel
/// (whether it is armed is the driver's, saved with a connected QP's image only).
pub fn refuse_unconnected(cx: &DumpCx, cqs: &[Cq], carried: &[u64], saved: &rings::Saved) -> Result<(), DumpError> {
    for c in cqs {
        let o = c.pgoff.unwrap_or(0);
        if !carried.contains(&o) && saved.word(o, rings::RING_PRODUCER) != Some(0) {
            return Err(cx.unsupported(format!("CQ handle {} holds completions but belongs to no connected QP; its ring cannot be restored", c.handle)));
        }
        if !carried.contains(&o) && c.channel.is_some() {
            return Err(cx.unsupported(format!(
                "CQ handle {} delivers to a completion channel but belongs to no connected QP; whether it is armed \
                 (ibv_req_notify_cq) is only saved with a connected QP's driver state",
                c.handle
            )));
        }
    }
    Ok(())
}

// ---- image checks ----

/// Each CQ was saved with its ring and a size rxe can make.
pub fn check_image(c: &Context) -> Result<(), String> {
    for cq in &c.cqs {
        let Some(cqe) = cq.cqe.filter(|_| cq.pgoff.is_some()) else {
            return Err(format!("CQ handle {} was saved without its ring", cq.handle));
        };
        limits::range(&format!("CQ handle {}: cqe", cq.handle), cqe, 1, limits::MAX_WR)?;
    }
    Ok(())
}

// ---- restore ----

/// Creates CQ `cq` on its recreated channel (of `chans`) and records where its new ring is;
/// returns its handle.
pub fn create(fd: RawFd, cq: &Cq, chans: &[NewChannel], rings: &mut NewRings) -> Result<u32, RestoreError> {
    let cqe = cq.cqe.unwrap_or(0);
    let r = cmd::create_cq(fd, cqe, cq.user_handle, events::channel_fd(chans, &cq.channel)?)
        .map_err(RestoreError::sys(format!("CREATE_CQ (handle {}, {cqe} entries)", cq.handle)))?;
    rings.add(&format!("CQ handle {}", cq.handle), cq.pgoff.unwrap_or(0), &r.mi)?;
    Ok(r.cq_handle)
}
