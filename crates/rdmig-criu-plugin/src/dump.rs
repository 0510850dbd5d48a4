//! Dump side: runs in the criu master, single threaded, while the tasks are frozen. This file
//! only orders the steps; each kind of object saves itself in [`crate::objects`].
//!
//! DUMP_EXT_FILE hands us CRIU's copy of one fd (drained from the task) and a file id, not the
//! task: the owner is found by comparing the file with every fd of every process (`kcmp`). The
//! uverbs file's objects are listed with UVERBS_METHOD_INFO_HANDLES, MRs and QPs are queried,
//! the numbers rxe gave them come from /dev/rxe_ctl's status (which names the creating pid), and
//! the queue rings are read from the task's memory.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use crate::cm;
pub use crate::common::DumpError;
use crate::common::{EVENT_LINK, UVERBS_MAJOR};
use crate::image::{self, Context, FileImage, FileKind};
use crate::log::{info, Steps};
use crate::objects::{self, ah, cq, events, mr, mw, pd, qp, rings, srq, DumpCx};
use crate::procfs;

/// QPs this dump stopped (device, QPN): resumed again if the dump fails or the process is left
/// running.
static STOPPED: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

/// Takes the list of QPs stopped by this dump.
pub fn take_stopped() -> Vec<(String, u32)> {
    std::mem::take(&mut *STOPPED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Owner pid and the uverbs file's token (softroce patch 0014; `None` without it).
type ContextKey = (i32, Option<String>);

/// Context files dumped so far in this criu run, by [`ContextKey`]: (file id, completion
/// channels).
static CONTEXTS: Mutex<BTreeMap<ContextKey, (u32, u32)>> = Mutex::new(BTreeMap::new());

pub fn reset() {
    CONTEXTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    procfs::forget_candidates();
}

/// What DUMP_EXT_FILE is looking at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Uverbs {
        major: u32,
        minor: u32,
    },
    EventFile,
    /// `/dev/infiniband/rdma_cm` (see [`crate::cm`]).
    RdmaCm,
}

/// Whether a file (CRIU's copy of it) is ours: a uverbs or rdma_cm char device or an infiniband
/// event file.
pub fn classify(fd: RawFd) -> Option<Claim> {
    // SAFETY: fstat writes into the zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd is a valid descriptor passed by CRIU.
    if unsafe { libc::fstat(fd, &mut st) } == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFCHR {
        let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        if major == UVERBS_MAJOR {
            return Some(Claim::Uverbs { major, minor });
        }
        return cm::is_rdma_cm(major, minor).then_some(Claim::RdmaCm);
    }
    let link = fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    (link.as_os_str() == EVENT_LINK).then_some(Claim::EventFile)
}

/// DUMP_EXT_FILE for a file [`classify`] claimed: `Err` when it cannot be saved.
pub fn dump_file(claim: Claim, fd: RawFd, id: u32, dir: RawFd) -> Result<(), DumpError> {
    match claim {
        Claim::Uverbs { major, minor } => dump_context(fd, id, dir, major, minor),
        Claim::EventFile => dump_event_file(fd, id, dir),
        Claim::RdmaCm => cm::dump_file(fd, id, dir),
    }
}

/// Saves the verbs context of uverbs file `fd` (CRIU file id `id`) into the images directory
/// `dir`. Everything that can be refused is refused before any QP is stopped.
fn dump_context(fd: RawFd, id: u32, dir: RawFd, major: u32, minor: u32) -> Result<(), DumpError> {
    let mut steps = Steps::new(image::timing::Kind::DumpRdma);
    // Claim: the process holding the file, its rxe device, the driver's status.
    let cx = DumpCx::claim(fd, id, major, minor)?;
    steps.mark("claim");

    // The objects as the device and the driver list them. PDs first: every verbs device has PDs.
    let pds = pd::save(&cx)?;
    objects::refuse_unsupported_kinds(&cx)?;
    let mut mrs = mr::save(&cx)?;
    let mut mws = mw::save(&cx)?;
    let mut ahs = ah::save(&cx)?;
    let mut srqs = srq::save(&cx)?;
    let (comp_channels, async_event_files) = events::count(&cx)?;
    mw::refuse_foreign_bindings(&cx, &mws, &mrs)?;
    mr::refuse_unlisted(&cx, &mrs)?;
    steps.mark("list");

    // Their links and event state, from the fdinfo of rdmig's ib_uverbs (none from a stock one).
    let uvinfo = cx.read_fdinfo()?;
    let uv = uvinfo.as_ref();
    let file_token = uv.and_then(|i| i.file.clone());
    events::refuse_untold_channels(&cx, uv, comp_channels)?;
    mr::link(&cx, uv, &pds, &mut mrs)?;
    mw::link(&cx, uv, &pds, &mut mws)?;
    ah::link(&cx, uv, &pds, &mut ahs)?;
    srq::link(&cx, uv, &pds, &mut srqs)?;
    steps.mark("fdinfo");

    // QPs, with the rings they name among the file's mappings (SRQs get theirs here).
    let mut vmas = rings::mappings(&cx)?;
    let numbered = qp::number(&cx, uv)?;
    rings::forget(&mut vmas, &numbered.foreign);
    steps.mark("qp_number");
    let (mut qps, wiring) = qp::save(&cx, uv, &pds, &mut srqs, &numbered, &vmas)?;
    srq::refuse_unused(&cx, &srqs)?;
    steps.mark("qp_query");

    // Every connected QP is stopped, then each is dumped: QPs share CQs (and SRQs), and a QP's
    // image carries those rings, which other QPs still running would keep filling.
    let ctl = qp::stop(&cx, &qps, &wiring, |qpn| STOPPED.lock().unwrap_or_else(|e| e.into_inner()).push((cx.ibdev.clone(), qpn)))?;
    steps.mark("stop_qp");
    let mut blob = vec![];
    qp::save_driver_state(&cx, &mut qps, &wiring, ctl.as_ref(), &mut blob)?;
    steps.mark("qp_state");
    mr::mark_rdma_written(&cx, &mrs)?;
    steps.mark("mr_log");

    // Now that nothing changes them: the rings, then what is read from them (CQs), and the
    // events queued on the channels and the async event file.
    let mut queues = rings::read(&cx, &vmas, &mut blob)?;
    let saved = rings::Saved { queues: &queues, blob: &blob };
    let cqs = cq::save(&cx, uv, &vmas, &qp::queue_rings(&wiring), &saved)?;
    let (channels, async_pending) = events::save(&cx, uv, file_token.as_deref(), comp_channels)?;
    events::check(&cqs, &qps, &srqs, &channels, &async_pending).map_err(|e| cx.unsupported(e))?;
    // The rings the driver's QP images do not carry are copied back as they are; that is exact
    // only while the driver's private index of the ring is still 0.
    let carried = qp::carried_rings(&qps, &wiring);
    qp::link(&cx, uv, &mut qps, &wiring, &cqs, &carried, &saved)?;
    cq::refuse_unconnected(&cx, &cqs, &carried, &saved)?;
    // What the QPs' driver images carry is not saved twice (image version 3).
    let qp_images_end = qps.iter().filter_map(|q| q.mig_image).map(|m| m.offset.saturating_add(m.len)).max().unwrap_or(0);
    rings::leave_out(&mut queues, &mut blob, &carried, qp_images_end);
    steps.mark("rings_events");

    // The image.
    let DumpCx { pid, pfd, path, ibdev, who, .. } = cx;
    let ctx = Context {
        path,
        rdev_major: major,
        rdev_minor: minor,
        ibdev,
        flags: procfs::fd_flags(fd),
        pds,
        cqs,
        srqs,
        qps,
        mrs,
        mws,
        ahs,
        comp_channels,
        async_event_files,
        events_saved: uvinfo.is_some(),
        channels,
        async_pending,
        queues,
        file_token: file_token.clone(),
    };
    let summary = format!(
        "{} PD, {} CQ, {} QP, {} SRQ, {} MR, {} MW, {} AH, {} completion channel(s), {} queue mapping(s) ({} bytes)",
        ctx.pds.len(),
        ctx.cqs.len(),
        ctx.qps.len(),
        ctx.srqs.len(),
        ctx.mrs.len(),
        ctx.mws.len(),
        ctx.ahs.len(),
        ctx.comp_channels,
        ctx.queues.len(),
        blob.len()
    );
    let img = FileImage { id, pid, fd: pfd, ns_pid: procfs::ns_pid(pid), kind: FileKind::Context(Box::new(ctx)) };
    write_image(dir, &img, &blob)?;
    steps.mark("write");
    steps.write();
    CONTEXTS.lock().unwrap_or_else(|e| e.into_inner()).insert((pid, file_token), (id, comp_channels));
    info!("{who}: saved verbs context as {}: {summary}", image::file_name(id));
    Ok(())
}

/// Saves event file `fd` (CRIU file id `id`): the context it belongs to and its role.
fn dump_event_file(fd: RawFd, id: u32, dir: RawFd) -> Result<(), DumpError> {
    let (pid, pfd) = procfs::owner(fd, &format!("infiniband event file (file id {id})"))?;
    let who = format!("process {pid} ({}), event file fd {pfd}", procfs::comm(pid));
    let ev = events::save_file(fd, pid, pfd, &who, |token| dumped_context(pid, token))?;
    let role = ev.role.clone();
    let img = FileImage { id, pid, fd: pfd, ns_pid: procfs::ns_pid(pid), kind: FileKind::EventFile(ev) };
    write_image(dir, &img, &[])?;
    info!("{who}: saved as {} ({role})", image::file_name(id));
    Ok(())
}

/// The context of process `pid` dumped so far in this run that an event file belongs to: the
/// one of its uverbs file (token `file_token`, patch 0014), else the process's only one.
fn dumped_context(pid: i32, file_token: &Option<String>) -> Option<(u32, u32)> {
    let all = CONTEXTS.lock().unwrap_or_else(|e| e.into_inner());
    match all.get(&(pid, file_token.clone())) {
        Some(c) => Some(*c),
        None => {
            let mine: Vec<_> = all.iter().filter(|((p, _), _)| *p == pid).collect();
            match mine.as_slice() {
                [(_, c)] if file_token.is_none() => Some(**c),
                _ => None,
            }
        }
    }
}

fn write_image(dir: RawFd, img: &FileImage, blob: &[u8]) -> Result<(), DumpError> {
    write_bytes(dir, &image::file_name(img.id), &image::encode(img, blob))
}

/// Writes (and syncs) image file `name` into the images directory `dir`.
pub fn write_bytes(dir: RawFd, name: &str, bytes: &[u8]) -> Result<(), DumpError> {
    let c = CString::new(name).expect("no NUL");
    // SAFETY: openat with a NUL-terminated relative name on CRIU's images dir fd.
    let f = unsafe { libc::openat(dir, c.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o600) };
    if f < 0 {
        return Err(DumpError::sys(format!("create {name} in the images directory"))(std::io::Error::last_os_error()));
    }
    // SAFETY: f was just opened and is owned by this File from here on.
    let file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(f) };
    file.write_all_at(bytes, 0).map_err(DumpError::sys(format!("write {name}")))?;
    file.sync_all().map_err(DumpError::sys(format!("sync {name}")))?;
    Ok(())
}
