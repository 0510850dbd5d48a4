//! Shared receive queues. Dump: queried for their sizes and limit; PD, user handle and event
//! counter from ib_uverbs' fdinfo; the ring is the one their QPs name (see [`super::qp::save`]).
//! Restore: created on their PD with their old sizes, the new ring mapped where the old one was;
//! the ring's contents come back with the first connected QP's driver image.

use std::os::fd::RawFd;

use super::rings::NewRings;
use super::{limits, pd, DumpCx};
use crate::cmd;
use crate::common::{DumpError, RestoreError};
use crate::fdinfo::UverbsInfo;
use crate::image::{Context, Handle, Srq};
use crate::uverbs;

// ---- dump ----

/// The file's SRQs with their sizes (no PD or ring yet).
pub fn save(cx: &DumpCx) -> Result<Vec<Srq>, DumpError> {
    let mut srqs: Vec<Srq> = vec![];
    for h in cx.handles(uverbs::OBJ_SRQ, "SRQ")? {
        let a = uverbs::query_srq(cx.fd, h).map_err(DumpError::sys(format!("{}: query SRQ handle {h}", cx.who)))?;
        srqs.push(Srq { handle: h, max_wr: a.max_wr, max_sge: a.max_sge, srq_limit: a.srq_limit, ..Default::default() });
    }
    Ok(srqs)
}

/// Gives each SRQ its PD, user handle and event counter.
pub fn link(cx: &DumpCx, uv: Option<&UverbsInfo>, pds: &[Handle], srqs: &mut [Srq]) -> Result<(), DumpError> {
    for q in srqs {
        q.pd = Some(pd::of(cx, uv, pds, uverbs::OBJ_SRQ, q.handle, &format!("SRQ handle {}", q.handle))?);
        if let Some(e) = uv.and_then(|i| i.obj("srq", q.handle)) {
            q.user_handle = e.user_handle;
            q.events_reported = e.events_reported;
        } else if uv.is_some() {
            return Err(cx.unsupported(format!("SRQ handle {} is missing from the fdinfo of the uverbs file", q.handle)));
        }
    }
    Ok(())
}

/// Refuses an SRQ no QP uses: only a QP names an SRQ's ring.
pub fn refuse_unused(cx: &DumpCx, srqs: &[Srq]) -> Result<(), DumpError> {
    if let Some(s) = srqs.iter().find(|s| s.pgoff.is_none()) {
        return Err(cx.unsupported(format!("SRQ handle {} is used by no QP: its ring cannot be told apart from the CQs' rings", s.handle)));
    }
    Ok(())
}

// ---- image checks ----

/// Each SRQ has a PD of the image and its ring.
pub fn check_image(c: &Context) -> Result<(), String> {
    let is_pd = |h: u32| c.pds.iter().any(|p| p.handle == h);
    for q in &c.srqs {
        match q.pd {
            Some(p) if is_pd(p) => {}
            _ => return Err(format!("SRQ handle {} was saved without its PD or ring (image of an older plugin?)", q.handle)),
        }
        if q.pgoff.is_none() || q.max_wr == 0 {
            return Err(format!("SRQ handle {} was saved without its ring (image of an older plugin?)", q.handle));
        }
        let what = |f: &str| format!("SRQ handle {}: {f}", q.handle);
        limits::range(&what("max_wr"), q.max_wr, 1, limits::MAX_WR)?;
        limits::range(&what("max_sge"), q.max_sge, 1, limits::MAX_SGE)?;
        limits::range(&what("srq_limit"), q.srq_limit, 0, q.max_wr)?;
    }
    Ok(())
}

// ---- restore ----

/// Creates SRQ `q` on its PD and records where its new ring is; returns its handle.
pub fn create(fd: RawFd, q: &Srq, rings: &mut NewRings) -> Result<u32, RestoreError> {
    let r = cmd::create_srq(fd, q.pd.expect("checked"), q.max_wr, q.max_sge, q.srq_limit, q.user_handle)
        .map_err(RestoreError::sys(format!("CREATE_SRQ (handle {}, {} WRs of {} SGEs)", q.handle, q.max_wr, q.max_sge)))?;
    rings.add(&format!("SRQ handle {}", q.handle), q.pgoff.expect("checked"), &r.mi)?;
    Ok(r.srq_handle)
}
