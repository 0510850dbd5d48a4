//! Restore side. This file only orders the steps; each kind of object rebuilds itself in
//! [`crate::objects`], and [`crate::handles`] plans the order that gives every object its old
//! handle. Three steps, in the order CRIU reaches them:
//!
//! 1. `RESTORE_EXT_FILE` (inside the restored task, before its memory is in place and before
//!    its credentials are restored): the first file id of a verbs context (the uverbs file or
//!    its async event file) rebuilds the whole context on a new uverbs file: PDs and CQs, then
//!    MRs and then QPs on their PDs, each in handle order (dummy PDs hold the lower handles that
//!    are free, so every object gets its old handle),
//!    QPs and MRs with their old numbers and keys (`/dev/rxe_ctl` EXPECT), QPs moved through
//!    their states with their old attributes and, when they were connected, loaded with the
//!    driver's state image (QP_RESTORE: queues, PSNs, responder resources); they stay stopped.
//!    MRs are registered with their old iova and keys without pages (hollow, softroce patch
//!    0034; on a driver without it, on placeholder pages), because the process's pages are not
//!    at their final addresses yet. The new files are put at the fd
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

use rdmig_image::HOLD_ENV;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::cmd;
pub use crate::common::RestoreError;
use crate::device;
use crate::handles::{self, Obj, Step};
use crate::image::{self, Context, FileKind, Loaded};
use crate::log::{debug, info, Steps};
use crate::objects::{self, ah, cq, events, limits, mr, mw, pd, qp, rings, srq, RestoreCx};

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
    /// Where the rings are now (see [`rings::Offsets`]).
    pgoffs: rings::Offsets,
}

static BUILT: Mutex<Vec<Built>> = Mutex::new(Vec::new());

/// The images directory's verbs images, read once: CRIU calls RESTORE_EXT_FILE once per file id,
/// and each call, the context's build and RESUME_DEVICES_LATE used to read (and check the
/// checksum of, and parse) every image again. In the lab a context image of 64 QPs is 2.5 MB
/// and took about 50 ms each time, inside the blackout. [`preload`] reads them in CRIU's master
/// before it forks the tasks, which inherit them.
static IMAGES: Mutex<Option<Arc<Vec<Loaded>>>> = Mutex::new(None);

/// The context images (by file id) that passed [`objects::check_image`] in this process or in
/// CRIU's master before it forked this task (which inherits the list with the images): the
/// build in the task and RESUME_DEVICES_LATE in the master used to check the same bytes again,
/// inside the blackout (8-16 ms each at 64 QPs in the lab).
static CHECKED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// [`objects::check_image`] of `l`, once per process (and its forks) for the images read once.
fn check_once(l: &Loaded) -> Result<(), String> {
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if checked.contains(&l.image.id) {
        return Ok(());
    }
    objects::check_image(l)?;
    checked.push(l.image.id);
    Ok(())
}

/// The verbs images in `dir` (this process's images directory), read on first use.
fn images(dir: &Path) -> Result<Arc<Vec<Loaded>>, RestoreError> {
    let mut cached = IMAGES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(all) = &*cached {
        return Ok(Arc::clone(all));
    }
    let all = Arc::new(image::read_dir(dir)?);
    *cached = Some(Arc::clone(&all));
    Ok(all)
}

/// Reads the images at the start of a restore (the plugin's init, in CRIU's master). Best
/// effort: when they cannot be read, nothing is kept, and the hooks that need them read them
/// again and say why they cannot.
/// The time counts in RestoreRDMA (`rdmig_image::timing`), as step `read_images`.
pub fn preload() {
    let Ok(dir) = images_dir() else { return };
    let mut steps = Steps::new(image::timing::Kind::RestoreRdma);
    let t = std::time::Instant::now();
    match images(&dir) {
        Ok(all) if !all.is_empty() => {
            steps.mark("read_images");
            // Checked here, once, for the task's build and for RESUME_DEVICES_LATE; an image
            // that fails is checked again where it is used, which refuses it with its reason.
            for l in all.iter().filter(|l| matches!(l.image.kind, FileKind::Context(_))) {
                if let Err(e) = check_once(l) {
                    debug!("{}: {e}", image::file_name(l.image.id));
                }
            }
            steps.mark("check_images");
            crate::log::times(image::timing::Kind::RestoreRdma, t.elapsed());
            steps.write();
            debug!("read {} verbs image(s) for the restore", all.len());
        }
        Ok(_) => {}
        Err(e) => debug!("verbs images not read ahead: {e}"),
    }
}

/// The image of file `id` among `all`: the one at the file's name, which must hold that id;
/// None when there is none. Matched by the name alone: the directory is named through a
/// descriptor whose number may differ between CRIU's master, which read the images, and the
/// task.
fn image_of(all: &[Loaded], id: u32) -> Result<Option<&Loaded>, RestoreError> {
    let name = image::file_name(id);
    let Some(l) = all.iter().find(|l| l.path.file_name().is_some_and(|n| n == name.as_str())) else { return Ok(None) };
    if l.image.id != id {
        return Err(RestoreError::Refused(format!("{name}: holds file id {}, not {id}", l.image.id)));
    }
    Ok(Some(l))
}

fn images_dir() -> Result<PathBuf, RestoreError> {
    let fd = crate::log::image_dir_fd().ok_or_else(|| RestoreError::Refused("criu_get_image_dir() gave no directory".into()))?;
    Ok(PathBuf::from(format!("/proc/self/fd/{fd}")))
}

/// RESTORE_EXT_FILE: `Ok(None)` when the file id is not ours.
pub fn restore_file(id: u32) -> Result<Option<RawFd>, RestoreError> {
    let dir = images_dir()?;
    let all = images(&dir)?;
    let Some(l) = image_of(&all, id)? else {
        // Not a verbs file: an rdma_cm file, or none of ours.
        return crate::cm::restore::restore_file(id, &dir);
    };
    match &l.image.kind {
        FileKind::Context(_) => Ok(Some(ensure_built(id, &dir)?.0)),
        FileKind::EventFile(e) => {
            let name = image::file_name(id);
            limits::check_event_file(&l.image, e).map_err(|why| RestoreError::Refused(format!("{name}: {why}")))?;
            // The event file may have been dumped before its context was: then its pid names it.
            let ctx = match e.context_id {
                Some(c) => c,
                None => all
                    .iter()
                    .find(|o| events::belongs_to(l, o))
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
    if target < 0 {
        return std::os::fd::IntoRawFd::into_raw_fd(fd);
    }
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

/// Rebuilds context image `ctx_id` on a new uverbs file: channels, then the objects level by
/// level at their old handles, the connected QPs' driver state, the event state, and the files
/// at their old fd numbers. Any error drops the new file, which destroys what was made on it.
fn build(ctx_id: u32, dir: &Path) -> Result<Built, RestoreError> {
    let mut steps = Steps::new(image::timing::Kind::RestoreRdma);
    let ev_images = images(dir)?;
    let l =
        image_of(&ev_images, ctx_id)?.ok_or_else(|| RestoreError::Refused(format!("{}: no such image in the images directory", image::file_name(ctx_id))))?;
    let c = context_of(l)?;
    // Nothing of the image is used before it is checked; until then it is named by its file.
    let name = image::file_name(ctx_id);
    check_once(l).map_err(|e| RestoreError::Refused(format!("{name} (verbs context of pid {}): {e}", l.image.pid)))?;
    let who = format!("verbs context of pid {} fd {} ({}, {})", l.image.pid, l.image.fd, c.path, c.ibdev);
    // The async event file of this context, to put its new fd at the old number.
    for e in ev_images.iter() {
        if let FileKind::EventFile(ev) = &e.image.kind {
            if events::belongs_to(e, l) {
                limits::check_event_file(&e.image, ev).map_err(|why| RestoreError::Refused(format!("{who}: {}: {why}", image::file_name(e.image.id))))?;
            }
        }
    }
    let async_target = events::async_target(&ev_images, l);
    steps.mark("images");

    let ctl = device::open_ctl(crate::log::image_dir_fd()).map_err(|e| e.within(&who))?;
    let hollow_mrs = mr::hollow_supported(&ctl);
    if !hollow_mrs {
        mr::check_pinnable(c, ram_bytes()).map_err(|e| RestoreError::Refused(format!("{who}: {e}")))?;
    }
    // Built before the blackout by `rdmig-presetup` (see [`crate::presetup`]) when it matches
    // this image; else built here. Dropping the files (on any error below) destroys every
    // object created on them.
    let made = match crate::presetup::adopt(dir, l, &ctl, &who) {
        Some(made) => {
            steps.mark("adopt");
            made
        }
        None => create_objects(c, &l.blob, &ctl, hollow_mrs, &who, &mut steps)?,
    };
    let Made { file, afile, chans, offsets } = made;
    let fd = file.as_raw_fd();
    let cx = RestoreCx { fd, ctl: &ctl, c, blob: &l.blob, hollow_mrs, stopped_qps: qp::stopped_supported(&ctl) };

    // Connected QPs get their driver state; then the event counters and queued events.
    qp::load_driver_state(&cx).map_err(|e| e.within(&who))?;
    steps.mark("qp_state");
    let nev = events::restore_counters(fd, c).map_err(|e| e.within(&who))?;

    // The event files' status flags, and every file at the fd number the process had.
    events::set_flags(&afile, &chans, &ev_images, l).map_err(|e| e.within(&who))?;
    let target = l.image.fd;
    let cmd_fd = place(file, target);
    let async_fd = match async_target {
        Some(t) => place(afile, t),
        None => std::os::fd::IntoRawFd::into_raw_fd(afile),
    };
    let channels: Vec<(String, RawFd)> = chans.into_iter().map(|ch| (ch.token, place(ch.file, ch.target))).collect();
    steps.mark("events");
    steps.write();
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
    Ok(Built { ctx_id, target_fd: target, cmd_fd, async_fd, channels, pgoffs: offsets })
}

/// A context's new files and objects, made by [`create_objects`] (here, or before the blackout
/// in `rdmig-presetup`): the uverbs file, its async event file, the completion channels, and
/// where the new rings are.
pub struct Made {
    pub file: OwnedFd,
    pub afile: OwnedFd,
    pub chans: Vec<events::NewChannel>,
    pub offsets: rings::Offsets,
}

/// Opens a new uverbs file for context `c` (whose image's blob is `blob`) and creates its
/// channels and objects level by level at their old handles, numbers and keys; the QPs are
/// moved through their states and stay stopped. Any error drops the new file, which destroys
/// what was made on it.
pub fn create_objects(c: &Context, blob: &[u8], ctl: &crate::rxe::Ctl, hollow_mrs: bool, who: &str, steps: &mut Steps) -> Result<Made, RestoreError> {
    let file = device::open_uverbs(&c.path, c.rdev_major, c.rdev_minor, &c.ibdev).map_err(|e| e.within(who))?;
    let fd = file.as_raw_fd();
    let afd = cmd::get_context(fd).map_err(RestoreError::sys(format!("{who}: GET_CONTEXT")))?;
    // SAFETY: GET_CONTEXT returned a new descriptor that we own.
    let afile = unsafe { OwnedFd::from_raw_fd(afd) };
    let cx = RestoreCx { fd, ctl, c, blob, hollow_mrs, stopped_qps: qp::stopped_supported(ctl) };
    steps.mark("open");

    // Completion channels first: CREATE_CQ names its channel by fd.
    let chans = events::create_channels(fd, c).map_err(|e| e.within(who))?;
    steps.mark("channels");

    // PDs and CQs, then MRs, SRQs, AHs and MWs, then QPs, each at its old handle.
    let objs = Obj::all(c);
    let mut rings = rings::NewRings::new(c);
    for step in handles::plan_for(&objs) {
        let h = match step {
            Step::Filler(want) => {
                pd::fill(fd, want).map_err(|e| e.within(who))?;
                steps.mark("fillers");
                continue;
            }
            Step::FreeFiller(h) => {
                pd::free_filler(fd, h).map_err(|e| e.within(who))?;
                steps.mark("fillers");
                continue;
            }
            Step::Create(h) => h,
        };
        let o = objs.binary_search_by_key(&h, Obj::handle).map(|i| &objs[i]).expect("the plan creates only objects of the image");
        let got = match o {
            Obj::Pd(_) => pd::create(fd),
            Obj::Cq(q) => cq::create(fd, q, &chans, &mut rings),
            Obj::Mr(m) => mr::create(&cx, m),
            Obj::Srq(q) => srq::create(fd, q, &mut rings),
            Obj::Ah(a) => ah::create(&cx, a),
            Obj::Mw(w) => mw::create(&cx, w),
            Obj::Qp(q) => qp::create(&cx, q, &mut rings),
        }
        .map_err(|e| e.within(who))?;
        let what = o.what();
        if got != o.handle() {
            return Err(RestoreError::Refused(format!("{who}: {what} got handle {got} instead of {}", o.handle())));
        }
        debug!("{who}: recreated {what} as handle {got}");
        steps.mark(o.step_name());
    }
    let offsets = rings.offsets;
    Ok(Made { file, afile, chans, offsets })
}

/// This node's memory in bytes (`sysinfo`), the most the MRs' placeholder pages can take.
fn ram_bytes() -> u64 {
    // SAFETY: sysinfo fills an owned, zeroed struct.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to it.
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return u64::MAX;
    }
    (si.totalram as u64).saturating_mul(si.mem_unit.max(1) as u64)
}

/// UPDATE_VMA_MAP: the new file offset (CRIU's "pgoff" is in bytes) and the fd to map from, for
/// a ring we recreated.
pub fn vma_map(addr: u64, old_offset: u64) -> Option<(u64, RawFd)> {
    let built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    built.iter().find_map(|b| Some((rings::new_offset(&b.pgoffs, addr, old_offset)?, b.target_fd)))
}

/// RESUME_DEVICES_LATE for `pid`: re-pin MRs, copy the rings the QP images do not carry, bind
/// MWs, resume the QPs. Returns how many contexts were finished.
pub fn resume_late(pid: i32) -> Result<usize, RestoreError> {
    let all = images(&images_dir()?)?;
    // CRIU names the task by its pid on this host; a container's task has another one than at
    // the dump (its pid in the container's namespace is the same), so images are matched by
    // the namespace pid when they carry it.
    let ns_pid = crate::procfs::ns_pid(pid);
    let mut n = 0;
    for l in all.iter().filter(|l| restored_as(&l.image, pid, ns_pid)) {
        let FileKind::Context(c) = &l.image.kind else { continue };
        // Checked before CRIU forked the task that rebuilt it, or checked here.
        check_once(l).map_err(|e| RestoreError::Refused(format!("{} (verbs context of pid {pid}): {e}", image::file_name(l.image.id))))?;
        let who = format!("pid {pid}, verbs context fd {} on {}", l.image.fd, c.ibdev);
        let mut steps = Steps::new(image::timing::Kind::RestoreRdma);
        let ctl = device::open_ctl(None).map_err(|e| e.within(&who))?;
        mr::repin(&ctl, c, pid, &who)?;
        steps.mark("repin_mr");
        // Rings of QPs that were not connected, and their CQs: copied back as saved (the dump
        // checked that the driver's private index of each is still 0).
        rings::copy_back(c, &l.blob, &qp::carried_rings_of(c), pid, &who)?;
        steps.mark("copy_rings");
        // MWs are bound once their MRs are on the final pages, before any QP can use them.
        mw::bind(&ctl, c, &who)?;
        steps.mark("bind_mw");
        // A held restore (rdmig's agent, until the migration commits): the QPs stay stopped
        // with the process; whoever restored it resumes both.
        if std::env::var_os(HOLD_ENV).is_some() {
            info!("{who}: {} MR(s) pinned on the restored pages, QPs left stopped ({HOLD_ENV})", c.mrs.len());
            steps.write();
            n += 1;
            continue;
        }
        let resumed = qp::resume(&ctl, c, &who)?;
        steps.mark("resume_qp");
        steps.write();
        info!("{who}: {} MR(s) pinned on the restored pages, {resumed} QP(s) resumed", c.mrs.len());
        n += 1;
    }
    Ok(n)
}

/// Whether `image` belongs to the restored task CRIU calls `pid` (on this host), whose pid in
/// its own namespace is `ns_pid`.
fn restored_as(image: &image::FileImage, pid: i32, ns_pid: Option<i32>) -> bool {
    match image.ns_pid {
        Some(p) => Some(p) == ns_pid,
        None => image.pid == pid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_file() -> image::EventFile {
        image::EventFile { context_id: None, role: "async".into(), role_source: "test".into(), flags: 0, channel: None, file_token: None }
    }

    #[test]
    fn a_container_task_is_found_by_its_namespace_pid() {
        let img = |pid, ns_pid| image::FileImage { id: 1, pid, fd: 3, ns_pid, kind: image::FileKind::EventFile(event_file()) };
        // Outside containers: the same pid on both sides.
        assert!(restored_as(&img(700, Some(700)), 700, Some(700)));
        // A container's task: pid 1 in its namespace, 5678 on the source host, 9012 here.
        assert!(restored_as(&img(5678, Some(1)), 9012, Some(1)));
        assert!(!restored_as(&img(5678, Some(1)), 5678, Some(5678)), "another process that happens to have the old host pid");
        assert!(!restored_as(&img(5678, Some(1)), 9012, Some(2)));
        // Images of older plugins carry no namespace pid: the host pid, as before.
        assert!(restored_as(&img(700, None), 700, Some(700)));
        assert!(!restored_as(&img(700, None), 701, Some(700)));
    }
    #[test]
    fn an_image_is_found_by_its_file_name_whatever_names_the_directory() {
        let loaded = |dir: &str, name_id: u32, id: u32| Loaded {
            path: PathBuf::from(format!("/proc/self/fd/{dir}")).join(image::file_name(name_id)),
            version: image::FORMAT_VERSION,
            image: image::FileImage { id, pid: 7, fd: 3, ns_pid: None, kind: image::FileKind::EventFile(event_file()) },
            blob: vec![],
        };
        // Read by CRIU's master through its descriptor 12; the task may have it at another number.
        let all = vec![loaded("12", 4, 4), loaded("12", 9, 10)];
        assert_eq!(image_of(&all, 4).unwrap().map(|l| l.image.id), Some(4));
        assert!(image_of(&all, 5).unwrap().is_none(), "no such file: not ours");
        assert!(image_of(&all, 9).is_err(), "the file of id 9 holds id 10");
        assert!(image_of(&all, 10).unwrap().is_none(), "id 10 is held by another file's name");
    }

    #[test]
    fn an_image_that_fails_its_checks_is_checked_again_where_it_is_used() {
        let event_file = |id| Loaded {
            path: PathBuf::from(image::file_name(id)),
            version: image::FORMAT_VERSION,
            image: image::FileImage { id, pid: 7, fd: 3, ns_pid: None, kind: image::FileKind::EventFile(event_file()) },
            blob: vec![],
        };
        // Not a context: refused, and refused again (a failure is not remembered as checked).
        assert!(check_once(&event_file(4711)).is_err());
        assert!(check_once(&event_file(4711)).is_err());
        assert!(!CHECKED.lock().unwrap().contains(&4711));
    }

    use crate::common::PAGE;
    use std::collections::BTreeMap;

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
