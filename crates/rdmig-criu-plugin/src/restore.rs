//! Restore side. Three steps, in the order CRIU reaches them:
//!
//! 1. `RESTORE_EXT_FILE` (inside the restored task, before its memory is in place and before
//!    its credentials are restored): the first file id of a verbs context (the uverbs file or
//!    its async event file) rebuilds the whole context on a new uverbs file: PDs and CQs, then
//!    MRs and then QPs on their PDs, each in handle order (dummy PDs hold the lower handles that
//!    are free, so every object gets its old handle),
//!    QPs and MRs with their old numbers and keys (`/dev/rxe_ctl` EXPECT), QPs moved through
//!    their states with their old attributes and, when they were connected, loaded with the
//!    driver's state image (QP_RESTORE: queues, PSNs, responder resources); they stay stopped.
//!    MRs are registered with their old iova and keys on placeholder pages, because the
//!    process's pages are not at their final addresses yet. The new files are put at the fd
//!    numbers the process had, and CRIU keeps them there.
//! 2. `UPDATE_VMA_MAP` (same task): the rings are mapped at their old addresses from the new
//!    file, at the page offsets the driver gave the new rings.
//! 3. `RESUME_DEVICES_LATE` (criu master, task stopped with its final memory): the MRs are
//!    re-pinned on the process's pages at their old addresses (`RXE_CTL_IOC_MR_REPIN`), rings the
//!    QP images do not carry are copied back through `/proc/PID/mem`, and the QPs resume (they
//!    tell their peers, which were paused, where they are now). CRIU ignores this hook's result,
//!    so when it fails the process is killed rather than left running with dead verbs objects.
//!
//! Anything that fails in step 1 closes the new uverbs file, which destroys every object made
//! on it: nothing is left half-created on the device.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cmd;
use crate::handles::{self, Obj, Step};
use crate::image::{self, Context, FileKind, Loaded, Qp};
use crate::log::{debug, info};
use crate::uverbs;
use rdmig_rxe::{self as rxe, Ctl};

pub use crate::common::RestoreError;
use crate::common::{gid_index, PAGE};

/// A context rebuilt in this task.
struct Built {
    ctx_id: u32,
    /// The fd number the process had for the uverbs file (CRIU keeps the file there).
    target_fd: RawFd,
    /// The fds we return for the context's file ids.
    cmd_fd: RawFd,
    async_fd: RawFd,
    /// Completion channels: (token, fd we return for it).
    channels: Vec<(String, RawFd)>,
    /// Old ring page offset -> (new page offset, mapping address).
    pgoffs: BTreeMap<u64, (u64, u64)>,
}

static BUILT: Mutex<Vec<Built>> = Mutex::new(Vec::new());

fn images_dir() -> Result<PathBuf, RestoreError> {
    let fd = crate::log::image_dir_fd().ok_or_else(|| RestoreError::Refused("criu_get_image_dir() gave no directory".into()))?;
    Ok(PathBuf::from(format!("/proc/self/fd/{fd}")))
}

/// RESTORE_EXT_FILE: `Ok(None)` when the file id is not ours.
pub fn restore_file(id: u32) -> Result<Option<RawFd>, RestoreError> {
    let dir = images_dir()?;
    let path = dir.join(image::file_name(id));
    if !path.exists() {
        return Ok(None);
    }
    let l = image::read_file(&path)?;
    match &l.image.kind {
        FileKind::Context(_) => Ok(Some(ensure_built(id, &dir)?.0)),
        FileKind::EventFile(e) => {
            let name = image::file_name(id);
            // The event file may have been dumped before its context was: then its pid names it.
            let ctx = match e.context_id {
                Some(c) => c,
                None => image::read_dir(&dir)?
                    .iter()
                    .find(|o| belongs_to(&l, o))
                    .map(|o| o.image.id)
                    .ok_or_else(|| RestoreError::Refused(format!("{name}: no verbs context of pid {} in the images", l.image.pid)))?,
            };
            if e.role == "async" {
                return Ok(Some(ensure_built(ctx, &dir)?.1));
            }
            let token = e.channel.as_ref().ok_or_else(|| {
                RestoreError::Refused(format!(
                    "{name}: a completion channel (fd {} of pid {}) saved without its token (dumped with a stock ib_uverbs or an older plugin)",
                    l.image.fd, l.image.pid
                ))
            })?;
            let (_, _, channels) = ensure_built(ctx, &dir)?;
            let fd = channels
                .iter()
                .find(|c| &c.0 == token)
                .map(|c| c.1)
                .ok_or_else(|| RestoreError::Refused(format!("{name}: completion channel {token} is not among the channels of its verbs context")))?;
            Ok(Some(fd))
        }
    }
}

/// Whether event file image `ev` belongs to context image `ctx`: as the dump recorded, or, when
/// the event file was dumped before its context, by pid and the uverbs file's token.
fn belongs_to(ev: &Loaded, ctx: &Loaded) -> bool {
    let (FileKind::EventFile(e), FileKind::Context(c)) = (&ev.image.kind, &ctx.image.kind) else { return false };
    match e.context_id {
        Some(id) => id == ctx.image.id,
        None => ev.image.pid == ctx.image.pid && (e.file_token.is_none() || e.file_token == c.file_token),
    }
}

/// The fds we return for a context's files: uverbs file, async event file, completion channels
/// (token, fd).
type Fds = (RawFd, RawFd, Vec<(String, RawFd)>);

/// The fds of context `ctx_id`, rebuilding it on first use.
fn ensure_built(ctx_id: u32, dir: &Path) -> Result<Fds, RestoreError> {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = built.iter().find(|b| b.ctx_id == ctx_id) {
        return Ok((b.cmd_fd, b.async_fd, b.channels.clone()));
    }
    let b = build(ctx_id, dir)?;
    let r = (b.cmd_fd, b.async_fd, b.channels.clone());
    built.push(b);
    Ok(r)
}

/// Moves `fd` to number `target` when that number is free (else leaves it for CRIU to move).
fn place(fd: OwnedFd, target: RawFd) -> RawFd {
    let raw = fd.as_raw_fd();
    if raw == target {
        return std::os::fd::IntoRawFd::into_raw_fd(fd);
    }
    // SAFETY: F_GETFD only queries the descriptor table.
    let busy = unsafe { libc::fcntl(target, libc::F_GETFD) } != -1;
    // SAFETY: dup2 onto a number that is free; `fd` is closed when dropped below.
    if !busy && unsafe { libc::dup2(raw, target) } == target {
        drop(fd);
        return target;
    }
    std::os::fd::IntoRawFd::into_raw_fd(fd)
}

fn context_of(l: &Loaded) -> Result<&Context, RestoreError> {
    match &l.image.kind {
        FileKind::Context(c) => Ok(c),
        FileKind::EventFile(_) => Err(RestoreError::Refused(format!("{}: not a verbs context image", l.path.display()))),
    }
}

/// Checks that an image holds only what [`build`] can recreate.
pub fn check_restorable(c: &Context) -> Result<(), String> {
    for w in &c.mws {
        if w.rkey.is_none() || !matches!(w.mw_type, 1 | 2) || !w.pd.is_some_and(|p| c.pds.iter().any(|x| x.handle == p)) {
            return Err(format!("MW handle {} was saved without its rkey, type or PD (image of an older plugin?)", w.handle));
        }
        if let Some(b) = &w.binding {
            if !c.mrs.iter().any(|m| m.lkey >> 8 == b.mr_index) {
                return Err(format!("MW handle {} is bound to MR index {}, which the image does not hold", w.handle, b.mr_index));
            }
            if (w.mw_type == 2) != b.qpn.is_some() || b.qpn.is_some_and(|n| !c.qps.iter().any(|q| q.qpn == n)) {
                return Err(format!("MW handle {} (type {}) is bound to QP {:?}, which the image does not hold", w.handle, w.mw_type, b.qpn));
            }
        }
    }
    for a in &c.ahs {
        if a.ah_num.is_none() || a.av.is_none() || !a.pd.is_some_and(|p| c.pds.iter().any(|x| x.handle == p)) {
            return Err(format!("AH handle {} was saved without its number, address or PD (image of an older plugin?)", a.handle));
        }
    }
    if c.comp_channels as usize != c.channels.len() {
        return Err(format!(
            "holds {} completion channel(s), {} of them saved with their CQs and events (dumped with a stock ib_uverbs or an older plugin?)",
            c.comp_channels,
            c.channels.len()
        ));
    }
    crate::dump::check_events(&c.cqs, &c.qps, &c.srqs, &c.channels, &c.async_pending)?;
    if let Some(q) = c.qps.iter().find(|q| q.links.is_none()) {
        return Err(format!("QP {} was saved without its CQ and ring links (image of an older plugin)", q.qpn));
    }
    let is_pd = |h: u32| c.pds.iter().any(|p| p.handle == h);
    for m in &c.mrs {
        match mr_pd(c, m) {
            Some(p) if is_pd(p) => {}
            Some(p) => return Err(format!("MR lkey {:#x} uses PD handle {p}, which the image does not hold", m.lkey)),
            None => return Err(format!("MR lkey {:#x} was saved without its PD, and the image holds {} PDs", m.lkey, c.pds.len())),
        }
    }
    for q in &c.srqs {
        match q.pd {
            Some(p) if is_pd(p) => {}
            _ => return Err(format!("SRQ handle {} was saved without its PD or ring (image of an older plugin?)", q.handle)),
        }
        if q.pgoff.is_none() || q.max_wr == 0 {
            return Err(format!("SRQ handle {} was saved without its ring (image of an older plugin?)", q.handle));
        }
    }
    if let Some(q) = c.qps.iter().find(|q| q.links.and_then(|l| l.srq).is_some_and(|s| !c.srqs.iter().any(|x| x.handle == s))) {
        return Err(format!("QP {} uses an SRQ the image does not hold", q.qpn));
    }
    if let Some(q) = c.qps.iter().find(|q| q.links.is_some_and(|l| !is_pd(l.pd))) {
        return Err(format!("QP {} uses PD handle {}, which the image does not hold", q.qpn, q.links.map(|l| l.pd).unwrap_or(0)));
    }
    if let Some(cq) = c.cqs.iter().find(|cq| cq.pgoff.is_none() || cq.cqe.is_none()) {
        return Err(format!("CQ handle {} was saved without its ring", cq.handle));
    }
    if let Some(m) = c.mrs.iter().find(|m| m.access.is_none()) {
        return Err(format!("MR lkey {:#x} was saved without its access flags", m.lkey));
    }
    Ok(())
}

/// The PD of an MR: saved with it, or the only PD of an image of an older plugin.
fn mr_pd(c: &Context, m: &image::Mr) -> Option<u32> {
    m.pd.or(match c.pds.as_slice() {
        [p] => Some(p.handle),
        _ => None,
    })
}

fn build(ctx_id: u32, dir: &Path) -> Result<Built, RestoreError> {
    let l = image::read_file(&dir.join(image::file_name(ctx_id)))?;
    let c = context_of(&l)?;
    let who = format!("verbs context of pid {} fd {} ({}, {})", l.image.pid, l.image.fd, c.path, c.ibdev);
    check_restorable(c).map_err(|e| RestoreError::Refused(format!("{who}: {e}")))?;
    // The async event file of this context, to put its new fd at the old number.
    let ev_images = image::read_dir(dir)?;
    let async_target =
        ev_images.iter().find(|e| matches!(&e.image.kind, FileKind::EventFile(ev) if ev.role == "async") && belongs_to(e, &l)).map(|e| e.image.fd);

    let cpath = CString::new(c.path.clone()).map_err(|_| RestoreError::Refused(format!("{who}: bad device path")))?;
    // SAFETY: open with a NUL-terminated path; the result is owned right below.
    let raw = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(RestoreError::sys(format!("{who}: open {}", c.path))(std::io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh descriptor nobody else owns. Dropping it (on any error below)
    // destroys every object created on it.
    let file = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = file.as_raw_fd();
    let afd = cmd::get_context(fd).map_err(RestoreError::sys(format!("{who}: GET_CONTEXT")))?;
    // SAFETY: GET_CONTEXT returned a new descriptor that we own.
    let afile = unsafe { OwnedFd::from_raw_fd(afd) };
    let ctl = Ctl::open().map_err(RestoreError::sys(format!("{who}: open {}", rxe::CTL_DEV)))?;
    // Completion channels first: CREATE_CQ names its channel by fd.
    let mut chans: Vec<(String, OwnedFd, RawFd)> = vec![];
    for ch in &c.channels {
        let cfd = cmd::create_comp_channel(fd).map_err(RestoreError::sys(format!("{who}: CREATE_COMP_CHANNEL (for fd {})", ch.fd)))?;
        // SAFETY: CREATE_COMP_CHANNEL returned a new descriptor that we own.
        chans.push((ch.token.clone(), unsafe { OwnedFd::from_raw_fd(cfd) }, ch.fd));
    }
    let chan_fd = |t: &Option<String>| -> Result<RawFd, RestoreError> {
        match t {
            None => Ok(-1),
            Some(t) => chans.iter().find(|c| &c.0 == t).map(|c| c.1.as_raw_fd()).ok_or_else(|| RestoreError::Refused(format!("{who}: no channel {t}"))),
        }
    };

    let objs = Obj::all(c);

    let vma_len = |pgoff: u64| c.queues.iter().find(|q| q.pgoff == pgoff).map(|q| (q.len, q.start));
    let mut pgoffs = BTreeMap::new();
    let mut map_ring = |what: &str, old: u64, mi: &cmd::MmInfo| -> Result<(), RestoreError> {
        let (len, start) = vma_len(old).ok_or_else(|| RestoreError::Refused(format!("{who}: {what}: no saved mapping at page offset {old:#x}")))?;
        if (mi.size as u64) < len {
            return Err(RestoreError::Refused(format!("{who}: {what}: the new ring has {} bytes, the old mapping {len}: sizes differ", mi.size)));
        }
        pgoffs.insert(old, (mi.offset / PAGE, start));
        Ok(())
    };

    for step in handles::plan_for(&objs) {
        let h = match step {
            Step::Filler(want) => {
                let h = cmd::alloc_pd(fd).map_err(RestoreError::sys(format!("{who}: ALLOC_PD (handle filler)")))?;
                if h != want {
                    return Err(RestoreError::Refused(format!("{who}: the filler for handle {want} got handle {h}")));
                }
                continue;
            }
            Step::FreeFiller(h) => {
                cmd::dealloc_pd(fd, h).map_err(RestoreError::sys(format!("{who}: DEALLOC_PD of filler {h}")))?;
                continue;
            }
            Step::Create(h) => h,
        };
        let o = objs.iter().find(|o| o.handle() == h).expect("the plan creates only objects of the image");
        let (what, got) = match o {
            Obj::Pd(_) => ("PD".to_string(), cmd::alloc_pd(fd).map_err(RestoreError::sys(format!("{who}: ALLOC_PD")))?),
            Obj::Cq(cq) => {
                let cqe = cq.cqe.unwrap_or(0);
                let r = cmd::create_cq(fd, cqe, cq.user_handle, chan_fd(&cq.channel)?)
                    .map_err(RestoreError::sys(format!("{who}: CREATE_CQ (handle {}, {cqe} entries)", cq.handle)))?;
                map_ring(&format!("CQ handle {}", cq.handle), cq.pgoff.unwrap_or(0), &r.mi)?;
                (format!("CQ ({cqe} entries)"), r.cq_handle)
            }
            Obj::Mr(m) => (format!("MR lkey {:#x}", m.lkey), reg_mr(fd, &ctl, &c.ibdev, mr_pd(c, m), m).map_err(|e| e.within(&who))?),
            Obj::Srq(q) => {
                let r = cmd::create_srq(fd, q.pd.expect("checked"), q.max_wr, q.max_sge, q.srq_limit, q.user_handle)
                    .map_err(RestoreError::sys(format!("{who}: CREATE_SRQ (handle {}, {} WRs of {} SGEs)", q.handle, q.max_wr, q.max_sge)))?;
                map_ring(&format!("SRQ handle {}", q.handle), q.pgoff.expect("checked"), &r.mi)?;
                (format!("SRQ ({} WRs, limit {})", q.max_wr, q.srq_limit), r.srq_handle)
            }
            Obj::Ah(a) => {
                let h = create_ah(fd, &ctl, &c.ibdev, a).map_err(|e| e.within(&who))?;
                (format!("AH {}", a.ah_num.unwrap_or(0)), h)
            }
            Obj::Mw(w) => {
                let rkey = w.rkey.expect("checked");
                ctl.expect(rxe::Obj::Mw, 0, rkey >> 8, Some((rkey & 0xff) as u8), &c.ibdev, false).map_err(RestoreError::sys(format!(
                    "{who}: EXPECT MW index {} key {:#x}",
                    rkey >> 8,
                    rkey & 0xff
                )))?;
                let r = cmd::alloc_mw(fd, w.pd.expect("checked"), w.mw_type as u8).map_err(RestoreError::sys(format!("{who}: ALLOC_MW rkey {rkey:#x}")))?;
                if r.rkey != rkey {
                    return Err(RestoreError::Refused(format!("{who}: MW got rkey {:#x} instead of {rkey:#x}", r.rkey)));
                }
                (format!("MW rkey {rkey:#x}"), r.mw_handle)
            }
            Obj::Qp(q) => {
                let (h, r) = create_qp(fd, &ctl, &c.ibdev, q).map_err(|e| e.within(&who))?;
                let links = q.links.expect("checked");
                map_ring(&format!("QP {} send queue", q.qpn), links.sq_pgoff, &r.sq_mi)?;
                if links.srq.is_none() {
                    map_ring(&format!("QP {} receive queue", q.qpn), links.rq_pgoff, &r.rq_mi)?;
                }
                (format!("QP {}", q.qpn), h)
            }
        };
        if got != o.handle() {
            return Err(RestoreError::Refused(format!("{who}: {what} got handle {got} instead of {}", o.handle())));
        }
        debug!("{who}: recreated {what} as handle {got}");
    }
    // Connected QPs get their driver state; CQs and SRQs shared by several QPs are loaded once.
    let mut cqs_done: Vec<u32> = vec![];
    let mut srqs_done: Vec<u32> = vec![];
    for q in &c.qps {
        let (Some(m), Some(links)) = (q.mig_image, q.links) else { continue };
        let img = &l.blob[m.offset as usize..(m.offset + m.len) as usize];
        let cqs = [links.send_cq, links.recv_cq];
        let flags = match cqs.iter().filter(|h| cqs_done.contains(h)).count() {
            0 => rxe::QP_F_CQ,
            n if n == 2 || (links.send_cq == links.recv_cq) => 0,
            _ => {
                return Err(RestoreError::Refused(format!(
                    "{who}: QP {} shares one of its two CQs with an earlier QP; the driver restores both CQs of a QP or none",
                    q.qpn
                )))
            }
        };
        let flags = match links.srq {
            Some(s) if !srqs_done.contains(&s) => {
                srqs_done.push(s);
                flags | rxe::QP_F_SRQ
            }
            _ => flags,
        };
        ctl.qp_restore(&c.ibdev, q.qpn, img, flags).map_err(RestoreError::sys(format!("{who}: QP_RESTORE of QP {}", q.qpn)))?;
        cqs_done.extend(cqs);
    }
    let nev = restore_events(fd, c).map_err(|e| e.within(&who))?;

    // File status flags (O_NONBLOCK) of the event files, as the process had set them.
    let flags_of = |pick: &dyn Fn(&image::EventFile) -> bool| {
        ev_images.iter().find_map(|e| match &e.image.kind {
            FileKind::EventFile(ev) if pick(ev) && belongs_to(e, &l) => Some(ev.flags),
            _ => None,
        })
    };
    let nonblock = |f: &OwnedFd, flags: Option<i32>| -> Result<(), RestoreError> {
        if flags.is_some_and(|fl| fl & libc::O_NONBLOCK != 0) {
            // SAFETY: fcntl on a descriptor we own.
            if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
                return Err(RestoreError::sys(format!("{who}: set O_NONBLOCK on an event file"))(std::io::Error::last_os_error()));
            }
        }
        Ok(())
    };
    nonblock(&afile, flags_of(&|e| e.role == "async"))?;
    for (t, f, _) in &chans {
        nonblock(f, flags_of(&|e| e.channel.as_ref() == Some(t)))?;
    }

    let target = l.image.fd;
    let cmd_fd = place(file, target);
    let async_fd = match async_target {
        Some(t) => place(afile, t),
        None => std::os::fd::IntoRawFd::into_raw_fd(afile),
    };
    let channels: Vec<(String, RawFd)> = chans.into_iter().map(|(t, f, target)| (t, place(f, target))).collect();
    info!(
        "{who}: recreated {} PD, {} CQ, {} MR, {} SRQ, {} AH, {} MW, {} QP with their handles, numbers and keys, {} completion channel(s) and {nev} event \
         counter(s) and queued event(s); QPs stay stopped until the process's memory is in place",
        c.pds.len(),
        c.cqs.len(),
        c.mrs.len(),
        c.srqs.len(),
        c.ahs.len(),
        c.mws.len(),
        c.qps.len(),
        channels.len()
    );
    Ok(Built { ctx_id, target_fd: target, cmd_fd, async_fd, channels, pgoffs })
}

/// Gives the recreated CQs and QPs the event counters they had and queues the events that were
/// queued at the dump, in their order (RDMIG_UVERBS_IOC_EVENTS of softroce patch 0010). Returns
/// how many calls it made (none when there is nothing to restore, so a context without events
/// restores on a stock ib_uverbs too).
fn restore_events(fd: RawFd, c: &Context) -> Result<usize, RestoreError> {
    let mut calls: Vec<(String, cmd::EvCtl)> = vec![];
    let ev = |op, object: u16, handle| cmd::EvCtl { op, object: object as u32, handle, ..Default::default() };
    for cq in c.cqs.iter().filter(|cq| cq.comp_events_reported != 0 || cq.events_reported != 0) {
        let e = cmd::EvCtl {
            events_reported: cq.events_reported,
            comp_events_reported: cq.comp_events_reported,
            ..ev(cmd::EV_SET_COUNTERS, uverbs::OBJ_CQ, cq.handle)
        };
        calls.push((format!("set the event counters of CQ handle {} ({} completion, {} async)", cq.handle, cq.comp_events_reported, cq.events_reported), e));
    }
    for q in c.srqs.iter().filter(|q| q.events_reported != 0) {
        let e = cmd::EvCtl { events_reported: q.events_reported, ..ev(cmd::EV_SET_COUNTERS, uverbs::OBJ_SRQ, q.handle) };
        calls.push((format!("set the event counter of SRQ handle {} ({})", q.handle, q.events_reported), e));
    }
    for q in c.qps.iter().filter(|q| q.events_reported != 0) {
        let e = cmd::EvCtl { events_reported: q.events_reported, ..ev(cmd::EV_SET_COUNTERS, uverbs::OBJ_QP, q.handle) };
        calls.push((format!("set the event counter of QP {} ({})", q.qpn, q.events_reported), e));
    }
    for ch in &c.channels {
        for h in &ch.pending {
            calls.push((format!("queue a completion event of CQ handle {h} on the channel of fd {}", ch.fd), ev(cmd::EV_QUEUE_COMP, uverbs::OBJ_CQ, *h)));
        }
    }
    for a in &c.async_pending {
        let e = cmd::EvCtl { event_type: a.event_type, element: a.element, ..ev(cmd::EV_QUEUE_ASYNC, a.object as u16, a.handle.unwrap_or(0)) };
        calls.push((format!("queue async event type {} (object type {} handle {:?})", a.event_type, a.object, a.handle), e));
    }
    for (what, e) in &calls {
        cmd::events(fd, e).map_err(|err| {
            let hint = if err.raw_os_error() == Some(libc::ENOTTY) { " (this ib_uverbs lacks rdmig's softroce patch 0010)" } else { "" };
            RestoreError::Refused(format!("{what}: RDMIG_UVERBS_IOC_EVENTS: {err}{hint}"))
        })?;
    }
    Ok(calls.len())
}

/// Registers MR `m` with its old number, key and iova on placeholder pages (re-pinned to the
/// process's pages in RESUME_DEVICES_LATE).
fn reg_mr(fd: RawFd, ctl: &Ctl, ibdev: &str, pd: Option<u32>, m: &image::Mr) -> Result<u32, RestoreError> {
    let pd = pd.ok_or_else(|| RestoreError::Refused("an MR without a PD".into()))?;
    ctl.expect(rxe::Obj::Mr, 0, m.lkey >> 8, Some((m.lkey & 0xff) as u8), ibdev, false).map_err(RestoreError::sys(format!(
        "EXPECT MR index {} key {:#x}",
        m.lkey >> 8,
        m.lkey & 0xff
    )))?;
    let in_page = m.iova % PAGE;
    let len = (in_page + m.length).div_ceil(PAGE) * PAGE;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it. It is left mapped:
    // CRIU's restorer unmaps everything that is not part of the process, and the MR's pin
    // keeps the pages until the re-pin releases them.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), len as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(RestoreError::sys(format!("placeholder pages for MR lkey {:#x} ({len} bytes)", m.lkey))(std::io::Error::last_os_error()));
    }
    let r = cmd::reg_mr(fd, pd, base as u64 + in_page, m.length, m.iova, m.access.unwrap_or(0))
        .map_err(RestoreError::sys(format!("REG_MR lkey {:#x} ({} bytes at iova {:#x})", m.lkey, m.length, m.iova)))?;
    if r.lkey != m.lkey || r.rkey != m.rkey {
        return Err(RestoreError::Refused(format!("MR got lkey {:#x}/rkey {:#x} instead of {:#x}/{:#x}", r.lkey, r.rkey, m.lkey, m.rkey)));
    }
    Ok(r.mr_handle)
}

/// Creates AH `a` with its old number (`/dev/rxe_ctl` EXPECT) and address, the source GID found
/// again by its text; returns its handle.
fn create_ah(fd: RawFd, ctl: &Ctl, ibdev: &str, a: &image::Ah) -> Result<u32, RestoreError> {
    let (num, av) = (a.ah_num.expect("checked"), a.av.as_ref().expect("checked"));
    let sgid_index = gid_index(ibdev, av.port, &av.sgid, &av.sgid_type)?;
    ctl.expect(rxe::Obj::Ah, 0, num, None, ibdev, false).map_err(RestoreError::sys(format!("EXPECT AH number {num}")))?;
    let attr = cmd::AhAttr {
        dgid: av.dgid,
        flow_label: av.flow_label,
        sgid_index,
        hop_limit: av.hop_limit,
        traffic_class: av.traffic_class,
        is_global: 1,
        port_num: av.port,
        ..Default::default()
    };
    let r = cmd::create_ah(fd, a.pd.expect("checked"), attr, a.user_handle).map_err(RestoreError::sys(format!("CREATE_AH number {num}")))?;
    if r.ah_num != num {
        return Err(RestoreError::Refused(format!("AH got number {} instead of {num}", r.ah_num)));
    }
    Ok(r.ah_handle)
}

fn create_qp(fd: RawFd, ctl: &Ctl, ibdev: &str, q: &Qp) -> Result<(u32, cmd::CreateQpResp), RestoreError> {
    let links = q.links.expect("checked");
    let a = &q.attr;
    let qp_type = match q.qp_type.as_str() {
        "rc" => 2,
        "ud" => 4,
        t => return Err(RestoreError::Refused(format!("QP {} is of type {t}", q.qpn))),
    };
    ctl.expect(rxe::Obj::Qp, 0, q.qpn, None, ibdev, false).map_err(RestoreError::sys(format!("EXPECT QPN {}", q.qpn)))?;
    let r = cmd::create_qp(
        fd,
        cmd::CreateQp {
            pd_handle: links.pd,
            send_cq_handle: links.send_cq,
            recv_cq_handle: links.recv_cq,
            max_send_wr: a.max_send_wr,
            max_recv_wr: a.max_recv_wr,
            max_send_sge: a.max_send_sge,
            max_recv_sge: a.max_recv_sge,
            max_inline_data: a.max_inline_data,
            sq_sig_all: a.sq_sig_all,
            qp_type,
            user_handle: q.user_handle,
            srq_handle: links.srq.unwrap_or(0),
            is_srq: links.srq.is_some() as u8,
            ..Default::default()
        },
    )
    .map_err(RestoreError::sys(format!("CREATE_QP QPN {}", q.qpn)))?;
    if r.qpn != q.qpn {
        return Err(RestoreError::Refused(format!("QP got QPN {} instead of {}", r.qpn, q.qpn)));
    }
    let port = if a.port_num == 0 { 1 } else { a.port_num };
    let modify = |state: u8, mask: u32, f: &dyn Fn(&mut cmd::ModifyQp)| -> Result<(), RestoreError> {
        let mut m = cmd::ModifyQp { qp_handle: r.qp_handle, attr_mask: cmd::QP_STATE | mask, qp_state: state, ..Default::default() };
        f(&mut m);
        cmd::modify_qp(fd, m).map_err(RestoreError::sys(format!("MODIFY_QP QPN {} to {}", q.qpn, image::qp_state_name(state))))
    };
    if a.state >= 1 {
        if qp_type == 2 {
            modify(1, cmd::QP_PKEY_INDEX | cmd::QP_PORT | cmd::QP_ACCESS_FLAGS, &|m| {
                m.pkey_index = a.pkey_index;
                m.port_num = port;
                m.qp_access_flags = a.access_flags;
            })?;
        } else {
            modify(1, cmd::QP_PKEY_INDEX | cmd::QP_PORT | cmd::QP_QKEY, &|m| {
                m.pkey_index = a.pkey_index;
                m.port_num = port;
                m.qkey = a.qkey;
            })?;
        }
    }
    // A UD QP has no peer: RTR and RTS take only the send PSN (the driver's image, loaded
    // next, overrides it anyway).
    if qp_type == 4 {
        if a.state >= 2 {
            modify(2, 0, &|_| {})?;
        }
        if a.state >= 3 {
            modify(3, cmd::QP_SQ_PSN, &|m| m.sq_psn = a.sq_psn)?;
        }
        return Ok((r.qp_handle, r));
    }
    if a.state >= 2 {
        let sgid = gid_index(ibdev, port, q.sgid.as_deref().unwrap_or(""), q.sgid_type.as_deref().unwrap_or(""))?;
        modify(2, cmd::QP_AV | cmd::QP_PATH_MTU | cmd::QP_DEST_QPN | cmd::QP_RQ_PSN | cmd::QP_MAX_DEST_RD_ATOMIC | cmd::QP_MIN_RNR_TIMER, &|m| {
            m.dest.dgid = a.dgid;
            m.dest.flow_label = a.flow_label;
            m.dest.sgid_index = sgid;
            m.dest.hop_limit = a.hop_limit;
            m.dest.traffic_class = a.traffic_class;
            m.dest.sl = a.sl;
            m.dest.is_global = 1;
            m.dest.port_num = port;
            m.path_mtu = a.path_mtu;
            m.dest_qp_num = a.dest_qp_num;
            m.rq_psn = a.rq_psn;
            m.max_dest_rd_atomic = a.max_dest_rd_atomic;
            m.min_rnr_timer = a.min_rnr_timer;
        })?;
    }
    if a.state >= 3 {
        modify(3, cmd::QP_TIMEOUT | cmd::QP_RETRY_CNT | cmd::QP_RNR_RETRY | cmd::QP_SQ_PSN | cmd::QP_MAX_QP_RD_ATOMIC, &|m| {
            m.timeout = a.timeout;
            m.retry_cnt = a.retry_cnt;
            m.rnr_retry = a.rnr_retry;
            m.sq_psn = a.sq_psn;
            m.max_rd_atomic = a.max_rd_atomic;
        })?;
    }
    Ok((r.qp_handle, r))
}

/// UPDATE_VMA_MAP: the new file offset (CRIU's "pgoff" is in bytes) and the fd to map from, for
/// a ring we recreated.
pub fn vma_map(addr: u64, old_offset: u64) -> Option<(u64, RawFd)> {
    if old_offset % PAGE != 0 {
        return None;
    }
    let built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built.iter().find_map(|b| {
        let (new, start) = b.pgoffs.get(&(old_offset / PAGE))?;
        (*start == addr).then_some((*new * PAGE, b.target_fd))
    })
}

/// RESUME_DEVICES_LATE for `pid`: re-pin MRs, copy the rings the QP images do not carry,
/// resume the QPs. Returns how many contexts were finished.
pub fn resume_late(pid: i32) -> Result<usize, RestoreError> {
    let dir = crate::log::image_dir_fd().ok_or_else(|| RestoreError::Refused("criu_get_image_dir() gave no directory".into()))?;
    let all = image::read_dir(Path::new(&format!("/proc/self/fd/{dir}")))?;
    let mut n = 0;
    for l in all.iter().filter(|l| l.image.pid == pid) {
        let FileKind::Context(c) = &l.image.kind else { continue };
        let who = format!("pid {pid}, verbs context fd {} on {}", l.image.fd, c.ibdev);
        let ctl = Ctl::open().map_err(RestoreError::sys(format!("{who}: open {}", rxe::CTL_DEV)))?;
        for m in &c.mrs {
            let pages = ctl
                .mr_repin(&c.ibdev, m.lkey >> 8, pid, m.iova)
                .map_err(RestoreError::sys(format!("{who}: re-pin MR lkey {:#x} on the process's pages at {:#x} (RXE_CTL_IOC_MR_REPIN)", m.lkey, m.iova)))?;
            debug!("{who}: MR lkey {:#x} pinned on {pages} page(s) at {:#x}", m.lkey, m.iova);
        }
        // Rings of QPs that were not connected, and their CQs: copied back as saved (the dump
        // checked that the driver's private index of each is still 0).
        let covered: Vec<u64> = c
            .qps
            .iter()
            .filter(|q| q.mig_image.is_some())
            .filter_map(|q| q.links)
            .flat_map(|k| {
                let cq = |h: u32| c.cqs.iter().find(|x| x.handle == h).and_then(|x| x.pgoff).unwrap_or(u64::MAX);
                [k.sq_pgoff, k.rq_pgoff, cq(k.send_cq), cq(k.recv_cq)]
            })
            .collect();
        let mem = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map_err(RestoreError::sys(format!("{who}: open /proc/{pid}/mem")))?;
        for q in c.queues.iter().filter(|q| !covered.contains(&q.pgoff)) {
            let data = &l.blob[q.blob_offset as usize..(q.blob_offset + q.len) as usize];
            // The header (element size and index mask) is the driver's: check, do not write; the
            // rest (indices, elements) is as saved.
            let mut hdr = [0u8; 8];
            mem.read_exact_at(&mut hdr, q.start).map_err(RestoreError::sys(format!("{who}: read the ring at {:#x}", q.start)))?;
            if hdr[..] != data[..8] {
                return Err(RestoreError::Refused(format!("{who}: the new ring at {:#x} has another element size or capacity", q.start)));
            }
            mem.write_all_at(&data[64..], q.start + 64).map_err(RestoreError::sys(format!("{who}: write the ring at {:#x}", q.start)))?;
        }
        // MWs are bound once their MRs are on the final pages (MR_REPIN refuses an MR an MW
        // uses), before any QP can use them.
        for w in &c.mws {
            let (Some(b), Some(rkey)) = (&w.binding, w.rkey) else { continue };
            ctl.mw_bind(&c.ibdev, rkey, b.mr_index, b.qpn.unwrap_or(0), b.addr, b.length, b.access).map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::ENOTTY) { " (this rdma_rxe lacks rdmig's softroce patch 0013)" } else { "" };
                RestoreError::Refused(format!("{who}: bind MW rkey {rkey:#x} to MR index {} (RXE_CTL_IOC_MW_BIND): {e}{hint}", b.mr_index))
            })?;
        }
        for q in c.qps.iter().filter(|q| q.mig_image.is_some()) {
            ctl.qp_resume(&c.ibdev, q.qpn, 0).map_err(RestoreError::sys(format!("{who}: resume QP {} (RXE_CTL_IOC_QP_RESUME)", q.qpn)))?;
        }
        info!("{who}: {} MR(s) pinned on the restored pages, {} QP(s) resumed", c.mrs.len(), c.qps.iter().filter(|q| q.mig_image.is_some()).count());
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{AsyncEvent, Channel, Cq, Handle, Mr, QpLinks, Srq};

    fn ctx() -> Context {
        Context {
            path: "/dev/infiniband/uverbs0".into(),
            rdev_major: 231,
            rdev_minor: 192,
            ibdev: "rxe0".into(),
            flags: 2,
            pds: vec![Handle { handle: 0 }],
            cqs: vec![Cq { handle: 2, pgoff: Some(0x10), cqe: Some(255), ..Default::default() }],
            srqs: vec![],
            qps: vec![Qp {
                handle: 3,
                qpn: 17,
                links: Some(QpLinks { pd: 0, send_cq: 2, recv_cq: 2, sq_pgoff: 0x20, rq_pgoff: 0x30, srq: None }),
                ..Default::default()
            }],
            mrs: vec![Mr { handle: 1, lkey: 0x105, rkey: 0x105, iova: 0x7000, length: 4096, access: Some(7), pd: Some(0) }],
            mws: vec![],
            ahs: vec![],
            comp_channels: 0,
            async_event_files: 1,
            events_saved: true,
            channels: vec![],
            async_pending: vec![],
            queues: vec![],
            file_token: None,
        }
    }

    /// ctx() with CQ 2 on a completion channel that has one of its events queued.
    fn ctx_with_channel() -> Context {
        let mut c = ctx();
        c.comp_channels = 1;
        c.channels = vec![Channel { token: "00000000a1b2c3d4".into(), fd: 5, pending: vec![2] }];
        c.cqs[0].channel = Some("00000000a1b2c3d4".into());
        c.cqs[0].comp_events_reported = 41;
        c
    }

    #[test]
    fn only_what_can_be_rebuilt_passes() {
        assert_eq!(check_restorable(&ctx()), Ok(()));
        let mut c = ctx();
        c.comp_channels = 1;
        assert!(check_restorable(&c).unwrap_err().contains("1 completion channel(s), 0 of them saved"), "an image of a stock ib_uverbs");
        assert_eq!(check_restorable(&ctx_with_channel()), Ok(()));
        let mut c = ctx_with_channel();
        c.cqs[0].channel = Some("ffff".into());
        assert!(check_restorable(&c).unwrap_err().contains("CQ handle 2 delivers to completion channel ffff"));
        let mut c = ctx_with_channel();
        c.channels[0].pending = vec![2, 7];
        assert!(check_restorable(&c).unwrap_err().contains("event of CQ handle 7"));
        let mut c = ctx_with_channel();
        c.async_pending = vec![AsyncEvent { event_type: 18, element: 1, object: 0, handle: None }];
        assert_eq!(check_restorable(&c), Ok(()), "a device event");
        c.async_pending.push(AsyncEvent { event_type: 5, element: 0x10, object: 4, handle: Some(3) });
        assert_eq!(check_restorable(&c), Ok(()), "an event of QP handle 3");
        c.async_pending.push(AsyncEvent { event_type: 15, element: 0x10, object: 5, handle: Some(9) });
        assert!(check_restorable(&c).unwrap_err().contains("object type 5 handle Some(9)"), "an event of an SRQ it does not hold");
        c.srqs.push(Srq { handle: 9, pd: Some(0), pgoff: Some(0x40), max_wr: 255, max_sge: 1, ..Default::default() });
        assert_eq!(check_restorable(&c), Ok(()), "an event of its SRQ");
        c.async_pending.push(AsyncEvent { event_type: 19, element: 0x10, object: 12, handle: Some(9) });
        assert!(check_restorable(&c).unwrap_err().contains("object type 12"), "a WQ's event");
        // SRQs: need their PD and ring; a QP's SRQ must be in the image.
        let mut c = ctx();
        c.srqs.push(Srq { handle: 9, pd: Some(0), pgoff: Some(0x40), max_wr: 255, max_sge: 1, ..Default::default() });
        c.qps[0].links.as_mut().unwrap().srq = Some(9);
        assert_eq!(check_restorable(&c), Ok(()));
        c.qps[0].links.as_mut().unwrap().srq = Some(8);
        assert!(check_restorable(&c).unwrap_err().contains("QP 17 uses an SRQ"));
        c.srqs[0].pgoff = None;
        assert!(check_restorable(&c).unwrap_err().contains("SRQ handle 9"));
        c.srqs[0] = Srq { handle: 9, ..Default::default() };
        assert!(check_restorable(&c).unwrap_err().contains("SRQ handle 9 was saved without its PD"), "an older image's SRQ");
        // MWs: rkey, type and PD; a binding to an MR (and, type 2, a QP) of the image.
        let mut c = ctx();
        c.mws.push(crate::image::Mw { handle: 9, rkey: None, ..Default::default() });
        assert!(check_restorable(&c).unwrap_err().contains("MW handle 9 was saved without"), "an older image's MW");
        let bound = crate::image::MwBinding { mr_index: 1, addr: 0x7000, length: 4096, access: 2, qpn: None };
        c.mws[0] = crate::image::Mw { handle: 9, rkey: Some(0x80_0105), mw_type: 1, pd: Some(0), binding: Some(bound.clone()) };
        assert_eq!(check_restorable(&c), Ok(()));
        c.mws[0].binding = Some(crate::image::MwBinding { mr_index: 2, ..bound.clone() });
        assert!(check_restorable(&c).unwrap_err().contains("MR index 2"));
        c.mws[0].mw_type = 2;
        c.mws[0].binding = Some(crate::image::MwBinding { qpn: Some(17), ..bound.clone() });
        assert_eq!(check_restorable(&c), Ok(()), "type 2 on QP 17");
        c.mws[0].binding = Some(bound);
        assert!(check_restorable(&c).unwrap_err().contains("type 2"), "type 2 without its QP");
        // AHs: need their number, address and PD.
        let mut c = ctx();
        let av = crate::image::AhAv { port: 1, sgid: "fe80".into(), hop_limit: 64, ..Default::default() };
        c.ahs.push(crate::image::Ah { handle: 9, ah_num: Some(3), pd: Some(0), user_handle: 0x10, av: Some(av) });
        assert_eq!(check_restorable(&c), Ok(()));
        c.ahs[0].pd = Some(7);
        assert!(check_restorable(&c).unwrap_err().contains("AH handle 9"));
        c.ahs[0] = crate::image::Ah { handle: 9, ah_num: Some(3), ..Default::default() };
        assert!(check_restorable(&c).unwrap_err().contains("AH handle 9 was saved without"), "an older image's AH");
        // Several PDs: each MR and QP names its own.
        let mut c = ctx();
        c.pds.push(Handle { handle: 4 });
        assert_eq!(check_restorable(&c), Ok(()));
        c.mrs[0].pd = Some(4);
        c.qps[0].links.as_mut().unwrap().pd = 4;
        assert_eq!(check_restorable(&c), Ok(()));
        c.mrs[0].pd = Some(5);
        assert!(check_restorable(&c).unwrap_err().contains("MR lkey 0x105 uses PD handle 5"));
        c.mrs[0].pd = None;
        assert!(check_restorable(&c).unwrap_err().contains("without its PD, and the image holds 2 PDs"));
        c.pds.pop();
        assert_eq!(mr_pd(&c, &c.mrs[0]), Some(0), "an older image with one PD");
        c.qps[0].links.as_mut().unwrap().pd = 4;
        assert!(check_restorable(&c).unwrap_err().contains("QP 17 uses PD handle 4"));
        let mut c = ctx();
        c.qps[0].links = None;
        assert!(check_restorable(&c).unwrap_err().contains("QP 17"));
        let mut c = ctx();
        c.cqs[0].cqe = None;
        assert!(check_restorable(&c).unwrap_err().contains("CQ handle 2"));
        let mut c = ctx();
        c.mrs[0].access = None;
        assert!(check_restorable(&c).unwrap_err().contains("access flags"));
    }

    #[test]
    fn vma_offsets_are_bytes_and_page_aligned() {
        BUILT.lock().unwrap().push(Built {
            ctx_id: 99,
            target_fd: 3,
            cmd_fd: 3,
            async_fd: 4,
            channels: vec![],
            pgoffs: BTreeMap::from([(0x4d, (0x99, 0x7f00_0000_0000))]),
        });
        assert_eq!(vma_map(0x7f00_0000_0000, 0x4d * PAGE), Some((0x99 * PAGE, 3)));
        assert_eq!(vma_map(0x7f00_0000_1000, 0x4d * PAGE), None, "another address");
        assert_eq!(vma_map(0x7f00_0000_0000, 0x4d * PAGE + 1), None, "not page aligned");
        assert_eq!(vma_map(0x7f00_0000_0000, 0x4e * PAGE), None, "not ours");
        BUILT.lock().unwrap().retain(|b| b.ctx_id != 99);
    }
}
