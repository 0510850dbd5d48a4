//! Memory windows. Dump: rkey, type and binding from `/dev/rxe_ctl`'s status (softroce patch
//! 0013), the PD from ib_uverbs' fdinfo. Restore: allocated with their old rkey (EXPECT), and
//! bound again (`RXE_CTL_IOC_MW_BIND`) once their MRs are on the process's final pages.

use super::{limits, pd, DumpCx, RestoreCx};
use crate::cmd;
use crate::common::{DumpError, RestoreError};
use crate::fdinfo::UverbsInfo;
use crate::image::{Context, Handle, Mr, Mw, MwBinding};
use crate::rxe::{self, Ctl};
use crate::uverbs;

// ---- dump ----

/// The file's MWs with their rkeys, types and bindings (no PD yet).
pub fn save(cx: &DumpCx) -> Result<Vec<Mw>, DumpError> {
    let recs = cx.records("mw");
    let mut mws: Vec<Mw> = vec![];
    for h in cx.handles(uverbs::OBJ_MW, "MW")? {
        let rec = recs.iter().find(|r| r.num("handle") == Some(h as u64)).ok_or_else(|| {
            cx.unsupported(format!(
                "MW handle {h} is not in {}'s list with its handle and binding (this rdma_rxe lacks rdmig's softroce patch 0013)",
                rxe::CTL_DEV
            ))
        })?;
        let num = |k: &str| rec.num(k).ok_or_else(|| cx.unsupported(format!("MW handle {h}: {} gives no {k}", rxe::CTL_DEV)));
        let binding = match rec.get("state") {
            Some("free") => None,
            Some("bound") if rec.get("mr") != Some("-") => Some(MwBinding {
                mr_index: num("mr")? as u32,
                addr: num("addr")?,
                length: num("length")?,
                access: num("access")? as u32,
                qpn: rec.num("qpn").map(|q| q as u32),
            }),
            s => return Err(cx.unsupported(format!("MW handle {h} is in state {s:?} (not free, nor bound to an MR); it cannot be saved"))),
        };
        mws.push(Mw { handle: h, rkey: Some(num("rkey")? as u32), mw_type: num("type")? as u32, pd: None, binding });
    }
    Ok(mws)
}

/// Refuses an MW bound to an MR the process does not hold.
pub fn refuse_foreign_bindings(cx: &DumpCx, mws: &[Mw], mrs: &[Mr]) -> Result<(), DumpError> {
    for w in mws {
        if let Some(b) = &w.binding {
            if !mrs.iter().any(|m| m.lkey >> 8 == b.mr_index) {
                return Err(cx.unsupported(format!("MW handle {} is bound to MR index {}, which is not one of the process's MRs", w.handle, b.mr_index)));
            }
        }
    }
    Ok(())
}

/// Gives each MW its PD.
pub fn link(cx: &DumpCx, uv: Option<&UverbsInfo>, pds: &[Handle], mws: &mut [Mw]) -> Result<(), DumpError> {
    for w in mws {
        w.pd = Some(pd::of(cx, uv, pds, uverbs::OBJ_MW, w.handle, &format!("MW handle {}", w.handle))?);
    }
    Ok(())
}

// ---- image checks ----

/// Each MW has its rkey, type and PD, and a binding to an MR (and, type 2, a QP) of the image.
pub fn check_image(c: &Context) -> Result<(), String> {
    for w in &c.mws {
        if w.rkey.is_none() || !matches!(w.mw_type, 1 | 2) || !w.pd.is_some_and(|p| c.pds.iter().any(|x| x.handle == p)) {
            return Err(format!("MW handle {} was saved without its rkey, type or PD (image of an older plugin?)", w.handle));
        }
        if let Some(b) = &w.binding {
            let what = |f: &str| format!("MW handle {}: binding {f}", w.handle);
            limits::access(&what("access"), b.access)?;
            limits::user_range(&what("addr"), b.addr, b.length)?;
            if let Some(q) = b.qpn {
                limits::range(&what("qpn"), q, 0, limits::MAX_24BIT)?;
            }
            if !c.mrs.iter().any(|m| m.lkey >> 8 == b.mr_index) {
                return Err(format!("MW handle {} is bound to MR index {}, which the image does not hold", w.handle, b.mr_index));
            }
            if (w.mw_type == 2) != b.qpn.is_some() || b.qpn.is_some_and(|n| !c.qps.iter().any(|q| q.qpn == n)) {
                return Err(format!("MW handle {} (type {}) is bound to QP {:?}, which the image does not hold", w.handle, w.mw_type, b.qpn));
            }
        }
    }
    Ok(())
}

// ---- restore ----

/// Allocates MW `w` with its old rkey (EXPECT); returns its handle. It is bound by [`bind`].
pub fn create(cx: &RestoreCx, w: &Mw) -> Result<u32, RestoreError> {
    let rkey = w.rkey.expect("checked");
    cx.ctl.expect(rxe::Obj::Mw, 0, rkey >> 8, Some((rkey & 0xff) as u8), &cx.c.ibdev, false).map_err(RestoreError::sys(format!(
        "EXPECT MW index {} key {:#x}",
        rkey >> 8,
        rkey & 0xff
    )))?;
    let r = cmd::alloc_mw(cx.fd, w.pd.expect("checked"), w.mw_type as u8).map_err(RestoreError::sys(format!("ALLOC_MW rkey {rkey:#x}")))?;
    if r.rkey != rkey {
        return Err(RestoreError::Refused(format!("MW got rkey {:#x} instead of {rkey:#x}", r.rkey)));
    }
    Ok(r.mw_handle)
}

/// Binds the MWs of context `c` as they were. Called once their MRs are on the final pages
/// (MR_REPIN refuses an MR an MW uses), before any QP can use them.
pub fn bind(ctl: &Ctl, c: &Context, who: &str) -> Result<(), RestoreError> {
    for w in &c.mws {
        let (Some(b), Some(rkey)) = (&w.binding, w.rkey) else { continue };
        ctl.mw_bind(&c.ibdev, rkey, b.mr_index, b.qpn.unwrap_or(0), b.addr, b.length, b.access).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENOTTY) { " (this rdma_rxe lacks rdmig's softroce patch 0013)" } else { "" };
            RestoreError::Refused(format!("{who}: bind MW rkey {rkey:#x} to MR index {} (RXE_CTL_IOC_MW_BIND): {e}{hint}", b.mr_index))
        })?;
    }
    Ok(())
}
