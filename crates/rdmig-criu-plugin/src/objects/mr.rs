//! Memory regions. Dump: queried for keys, iova and length, access flags from `/dev/rxe_ctl`'s
//! status, the PD from ib_uverbs' fdinfo; pages rxe wrote into are marked for incremental dumps.
//! Restore: registered with their old keys (EXPECT) and iova on placeholder pages, since the
//! process's pages are not at their final addresses yet; re-pinned on the process's pages once
//! they are (RESUME_DEVICES_LATE).

use std::fs;
use std::os::unix::fs::FileExt;

use super::{limits, pd, DumpCx, RestoreCx};
use crate::cmd;
use crate::common::{DumpError, RestoreError, PAGE};
use crate::fdinfo::UverbsInfo;
use crate::image::{Context, Handle, Mr};
use crate::log::{debug, info};
use crate::rxe::{self, Ctl};
use crate::uverbs;

// ---- dump ----

/// The file's MRs, with their access flags where the driver's status lists them (no PD yet).
pub fn save(cx: &DumpCx) -> Result<Vec<Mr>, DumpError> {
    let recs = cx.records("mr");
    let mut mrs = vec![];
    for h in cx.handles(uverbs::OBJ_MR, "MR")? {
        let (lkey, rkey, length, iova) = uverbs::query_mr(cx.fd, h).map_err(DumpError::sys(format!("{}: query MR handle {h}", cx.who)))?;
        let access = recs.iter().find(|r| r.num("lkey") == Some(lkey as u64)).and_then(|r| r.num("access")).map(|a| a as u32);
        mrs.push(Mr { handle: h, lkey, rkey, iova, length, access, pd: None });
    }
    Ok(mrs)
}

/// Refuses an MR the driver's status does not list: its access flags are unknown.
pub fn refuse_unlisted(cx: &DumpCx, mrs: &[Mr]) -> Result<(), DumpError> {
    if let Some(m) = mrs.iter().find(|m| m.access.is_none()) {
        return Err(cx.unsupported(format!("MR handle {} (lkey {:#x}) is not in {}'s list; its access flags are unknown", m.handle, m.lkey, rxe::CTL_DEV)));
    }
    Ok(())
}

/// Gives each MR its PD.
pub fn link(cx: &DumpCx, uv: Option<&UverbsInfo>, pds: &[Handle], mrs: &mut [Mr]) -> Result<(), DumpError> {
    for m in mrs {
        m.pd = Some(pd::of(cx, uv, pds, uverbs::OBJ_MR, m.handle, &format!("MR handle {} (lkey {:#x})", m.handle, m.lkey))?);
    }
    Ok(())
}

/// Pages rxe wrote into since the driver's dirty log was last cleared (by rdmig before a
/// pre-dump round): rewritten in place so their soft-dirty bit is set and an incremental dump
/// (`--track-mem` with a parent) includes them. rxe writes through kernel mappings, which
/// soft-dirty tracking does not see. Called once the QPs are stopped: nothing writes now.
pub fn mark_rdma_written(cx: &DumpCx, mrs: &[Mr]) -> Result<(), DumpError> {
    if mrs.is_empty() {
        return Ok(());
    }
    let n = touch_logged_pages(cx.pid, &cx.ibdev, mrs, &cx.who).map_err(|e| cx.unsupported(format!("cannot mark the pages written by RDMA: {e}")))?;
    if n > 0 {
        info!("{}: {n} page(s) written by RDMA since the last dirty-log read marked for this dump", cx.who);
    }
    Ok(())
}

/// Rewrites one byte of every page the driver logged as written by RDMA, through
/// /proc/PID/mem (a write fault sets the page's soft-dirty bit); returns the pages touched.
fn touch_logged_pages(pid: i32, ibdev: &str, mrs: &[Mr], who: &str) -> std::io::Result<usize> {
    let ctl = rxe::Ctl::open()?;
    let mem = fs::OpenOptions::new().read(true).write(true).open(format!("/proc/{pid}/mem"))?;
    let mut n = 0;
    for m in mrs {
        let (va, psize, pages) = match ctl.dirty(ibdev, m.lkey >> 8, true) {
            Ok(d) => (d.va, d.page_size, d.pages),
            Err(e) => {
                // No log (the module's dirty_log was off when the MR was registered): a full
                // dump is still exact; an incremental one may miss pages RDMA wrote.
                info!("{who}: MR lkey {:#x} has no dirty log ({e}); an incremental dump may miss pages RDMA wrote into it", m.lkey);
                continue;
            }
        };
        for p in pages {
            // Page 0 starts at the MR's first byte's page; touch a byte inside the MR.
            let addr = (va + p * psize).max(m.iova);
            let mut b = [0u8; 1];
            mem.read_exact_at(&mut b, addr)?;
            mem.write_all_at(&b, addr)?;
            n += 1;
        }
    }
    Ok(n)
}

// ---- image checks ----

/// The PD of an MR: saved with it, or the only PD of an image of an older plugin.
pub fn pd_of(c: &Context, m: &Mr) -> Option<u32> {
    m.pd.or(match c.pds.as_slice() {
        [p] => Some(p.handle),
        _ => None,
    })
}

/// Each MR's PD is one of the image's.
pub fn check_image_pds(c: &Context) -> Result<(), String> {
    let is_pd = |h: u32| c.pds.iter().any(|p| p.handle == h);
    for m in &c.mrs {
        match pd_of(c, m) {
            Some(p) if is_pd(p) => {}
            Some(p) => return Err(format!("MR lkey {:#x} uses PD handle {p}, which the image does not hold", m.lkey)),
            None => return Err(format!("MR lkey {:#x} was saved without its PD, and the image holds {} PDs", m.lkey, c.pds.len())),
        }
    }
    Ok(())
}

/// Each MR was saved with access flags the kernel knows, a key with an index, and a length that
/// stays in user space.
pub fn check_image_access(c: &Context) -> Result<(), String> {
    for m in &c.mrs {
        let Some(access) = m.access else {
            return Err(format!("MR lkey {:#x} was saved without its access flags", m.lkey));
        };
        let what = |f: &str| format!("MR lkey {:#x}: {f}", m.lkey);
        limits::access(&what("access"), access)?;
        if m.lkey >> 8 == 0 {
            return Err(format!("{} has index 0, which no rxe MR has", what("lkey")));
        }
        if m.length == 0 {
            return Err(what("length is 0"));
        }
        limits::user_range(&what("iova"), m.iova, m.length)?;
    }
    Ok(())
}

/// Whether this node's rdma_rxe registers an MR without pages until MR_REPIN gives it the
/// process's (`RXE_CTL_F_HOLLOW`, softroce patch 0034).
pub fn hollow_supported(ctl: &Ctl) -> bool {
    ctl.has_features(rxe::abi::FEAT_MR_HOLLOW)
}

/// Without hollow MRs, the MRs of context `c` are pinned on placeholder pages until the
/// process's memory is in place: refuses MRs that together are larger than this node's memory
/// (`ram` bytes).
pub fn check_pinnable(c: &Context, ram: u64) -> Result<(), String> {
    let total = c.mrs.iter().fold(0u64, |t, m| t.saturating_add(m.length.saturating_add(PAGE)));
    if total > ram {
        return Err(format!("its {} MRs total {total} bytes (length), more than this node's memory ({ram} bytes)", c.mrs.len()));
    }
    Ok(())
}

// ---- restore ----

/// Registers MR `m` with its old number, key and iova, without pages (hollow) or on
/// placeholder pages, to be moved onto the process's pages by [`repin`]; returns its handle.
pub fn create(cx: &RestoreCx, m: &Mr) -> Result<u32, RestoreError> {
    let pd = pd_of(cx.c, m).ok_or_else(|| RestoreError::Refused("an MR without a PD".into()))?;
    let (index, key) = (m.lkey >> 8, (m.lkey & 0xff) as u8);
    let expected =
        if cx.hollow_mrs { cx.ctl.expect_hollow_mr(0, index, key, &cx.c.ibdev) } else { cx.ctl.expect(rxe::Obj::Mr, 0, index, Some(key), &cx.c.ibdev, false) };
    expected.map_err(RestoreError::sys(format!("EXPECT MR index {index} key {key:#x}")))?;
    // Hollow: registered on its own range, which is not mapped yet and need not be; the MR
    // refuses every access until the re-pin. Allocating and zeroing placeholder pages as large
    // as the MR would cost as much time inside the blackout as CRIU's filling of the process.
    let start = if cx.hollow_mrs { m.iova } else { placeholder(m)? };
    let r = cmd::reg_mr(cx.fd, pd, start, m.length, m.iova, m.access.unwrap_or(0))
        .map_err(RestoreError::sys(format!("REG_MR lkey {:#x} ({} bytes at iova {:#x})", m.lkey, m.length, m.iova)))?;
    if r.lkey != m.lkey || r.rkey != m.rkey {
        return Err(RestoreError::Refused(format!("MR got lkey {:#x}/rkey {:#x} instead of {:#x}/{:#x}", r.lkey, r.rkey, m.lkey, m.rkey)));
    }
    Ok(r.mr_handle)
}

/// Fresh pages for MR `m` to be registered on until the re-pin, at its offset within a page;
/// returns the address to register.
fn placeholder(m: &Mr) -> Result<u64, RestoreError> {
    let in_page = m.iova % PAGE;
    let len = (in_page + m.length).div_ceil(PAGE) * PAGE;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it. It is left mapped:
    // CRIU's restorer unmaps everything that is not part of the process, and the MR's pin
    // keeps the pages until the re-pin releases them.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), len as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(RestoreError::sys(format!("placeholder pages for MR lkey {:#x} ({len} bytes)", m.lkey))(std::io::Error::last_os_error()));
    }
    Ok(base as u64 + in_page)
}

/// Moves every MR of context `c` from its placeholder pages onto the pages of process `pid` at
/// its old address (`RXE_CTL_IOC_MR_REPIN`), now that the process's memory is final.
pub fn repin(ctl: &Ctl, c: &Context, pid: i32, who: &str) -> Result<(), RestoreError> {
    for m in &c.mrs {
        let pages = ctl
            .mr_repin(&c.ibdev, m.lkey >> 8, pid, m.iova)
            .map_err(RestoreError::sys(format!("{who}: re-pin MR lkey {:#x} on the process's pages at {:#x} (RXE_CTL_IOC_MR_REPIN)", m.lkey, m.iova)))?;
        debug!("{who}: MR lkey {:#x} pinned on {pages} page(s) at {:#x}", m.lkey, m.iova);
    }
    Ok(())
}
