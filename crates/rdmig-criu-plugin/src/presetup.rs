//! Pre-setup (MigrRDMA's term): a context's verbs objects made before the blackout by another
//! process, `rdmig-presetup`, and taken over by the restore, which then only loads their final
//! state. Creating 64 QPs (and their CQs and PDs) and moving them through their states took
//! about a third of the plugin's restore in the lab.
//!
//! The two sides:
//! - [`build`] (in `rdmig-presetup`, before the restore): for every context image of a
//!   directory, makes the objects exactly as the restore would ([`crate::restore::create_objects`]:
//!   old handles, numbers and keys, QPs moved through their states, MRs hollow) and writes a
//!   [`Handoff`] beside the image, `rdmig-presetup-<id>.json`: its pid, its descriptors of the new
//!   files and where the new rings are. It keeps the files open until the restore took them or it
//!   gives up (a time limit): its exit destroys whatever nobody took.
//! - [`adopt`] (in the restored task, RESTORE_EXT_FILE): when a hand-off names the context, the
//!   image it was built from must describe the same objects as the one restored (what changes
//!   while a process runs, PSNs, event counts, ring contents, is left out of the comparison, and
//!   the QP state images loaded next carry it), and the process the hand-off names must be
//!   `rdmig-presetup` run by root (a hand-off is only a file beside the images, and the restore
//!   runs as root: it takes files from, and ends, no other process). Then the files are taken
//!   from the helper with `pidfd_getfd`, each checked for what it must be: the uverbs device of
//!   the image, event files, and the objects the image lists at their handles. Anything
//!   amiss: the helper is killed, its objects go with it, and the restore builds the context
//!   itself as without a hand-off.
//!
//! The helper made the objects, so the driver named it as their creator, and a hollow MR's
//! (empty) umem was its address space. Once the files are checked, the restored process adopts
//! the objects (`RXE_CTL_IOC_ADOPT`, softroce patch 0035): the driver names it as their creator,
//! as a later dump needs (it finds a process's objects by its pid), and MR_REPIN moves the
//! hollow MRs onto its pages as it would MRs it registered itself.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use serde::{Deserialize, Serialize};

use rustix::process::{pidfd_getfd, pidfd_open, pidfd_send_signal, Pid, PidfdFlags, PidfdGetfdFlags, Signal};

use crate::common::RestoreError;
use crate::dump::{classify, Claim};
use crate::image::{self, Context, FileKind, Loaded};
use crate::log::{debug, info, Steps};
use crate::objects::{self, events, mr};
use crate::restore::{create_objects, Made};
use crate::rxe::Ctl;
use crate::{device, uverbs};
use std::sync::Mutex;

/// Helpers whose objects this process adopted (one helper may have made several contexts of it).
static ADOPTED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The hand-off's format version.
pub const HANDOFF_VERSION: u32 = 1;
/// The prefix of hand-off files; the context's file id and `.json` follow.
pub const HANDOFF_PREFIX: &str = "rdmig-presetup-";

/// The name of the hand-off file for the context of file id `id`.
pub fn handoff_name(id: u32) -> String {
    format!("{HANDOFF_PREFIX}{id}.json")
}

/// What the helper leaves beside an image for the restore to take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub version: u32,
    /// The helper, which holds the files.
    pub pid: i32,
    /// The context's file id, and the image (a file name in the same directory) it was built from.
    pub ctx_id: u32,
    pub built_from: String,
    /// The helper's descriptors: the uverbs file, its async event file, and the completion
    /// channels by token.
    pub cmd_fd: RawFd,
    pub async_fd: RawFd,
    pub channels: Vec<(String, RawFd)>,
    /// The new page offset of each ring, by its old one.
    pub rings: Vec<(u64, u64)>,
}

// ---- the helper's side ----

/// A context made by [`build`]: its files stay open as long as this lives.
pub struct Built {
    pub handoff: Handoff,
    pub made: Made,
}

/// Makes the objects of every context image in `dir` and writes their hand-offs there. Refuses a
/// driver that cannot register MRs without pages (the helper's memory is not the process's).
pub fn build(dir: &Path) -> Result<Vec<Built>, RestoreError> {
    let all = image::read_dir(dir).map_err(|e| RestoreError::Refused(format!("{}: {e}", dir.display())))?;
    let mut out = vec![];
    for l in &all {
        let FileKind::Context(c) = &l.image.kind else { continue };
        let name = image::file_name(l.image.id);
        let who = format!("{name} (verbs context of pid {} fd {}, {})", l.image.pid, l.image.fd, c.ibdev);
        objects::check_image(l).map_err(|e| RestoreError::Refused(format!("{who}: {e}")))?;
        let ctl = device::open_ctl(None).map_err(|e| e.within(&who))?;
        if !mr::hollow_supported(&ctl) || !adopt_supported(&ctl) {
            return Err(RestoreError::Refused(format!("{who}: this rdma_rxe cannot hand objects over to another process (softroce patches 0034 and 0035)")));
        }
        let mut steps = Steps::new(image::timing::Kind::RestoreRdma);
        let made = create_objects(c, &l.blob, &ctl, true, &who, &mut steps)?;
        let handoff = Handoff {
            version: HANDOFF_VERSION,
            pid: std::process::id() as i32,
            ctx_id: l.image.id,
            built_from: name.clone(),
            cmd_fd: made.file.as_raw_fd(),
            async_fd: made.afile.as_raw_fd(),
            channels: made.chans.iter().map(|ch| (ch.token.clone(), ch.file.as_raw_fd())).collect(),
            rings: made.offsets.iter().map(|(old, (new, _))| (*old, *new)).collect(),
        };
        let json = serde_json::to_vec_pretty(&handoff).expect("a hand-off always serializes");
        write_new(dir, &handoff_name(l.image.id), &json)?;
        info!("{who}: {} QP(s), {} CQ(s), {} MR(s) made ahead; handed off in {}", c.qps.len(), c.cqs.len(), c.mrs.len(), handoff_name(l.image.id));
        out.push(Built { handoff, made });
    }
    Ok(out)
}

/// Writes `bytes` as `name` in `dir`, whole or not at all (a temporary file renamed), never
/// following a link at the name.
fn write_new(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), RestoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(RestoreError::sys(format!("create {}", tmp.display())))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(RestoreError::sys(format!("write {}", tmp.display())))?;
    fs::rename(&tmp, dir.join(name)).map_err(RestoreError::sys(format!("rename {} to {name}", tmp.display())))
}

// ---- the restore's side ----

/// Whether the driver lets a process adopt objects another made (softroce patch 0035).
pub fn adopt_supported(ctl: &Ctl) -> bool {
    ctl.has_features(crate::rxe::abi::FEAT_ADOPT)
}

/// The files and rings of context image `l` made ahead by a helper, if a hand-off in `dir` names
/// it and everything checks out; None (and the helper killed, its objects with it) otherwise.
pub fn adopt(dir: &Path, l: &Loaded, ctl: &Ctl, who: &str) -> Option<Made> {
    let path = dir.join(handoff_name(l.image.id));
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            info!("{who}: objects made ahead not used: {}: {e}", handoff_name(l.image.id));
            return None;
        }
    };
    let h: Handoff = match serde_json::from_slice(&bytes) {
        Ok(h) => h,
        Err(e) => {
            info!("{who}: objects made ahead not used: {}: {e}", handoff_name(l.image.id));
            return None;
        }
    };
    // The hand-off is a file beside the images, and the restore runs as root: it takes files
    // from, and ends, only a process that is rdmig's helper run by root.
    let helper = match open_helper(h.pid) {
        Ok(p) => p,
        Err(why) => {
            info!("{who}: objects made ahead not used: {why}");
            return None;
        }
    };
    match take(dir, &h, l, ctl, &helper) {
        Ok(made) => {
            // The helper's copies of the files go; ours keep the objects.
            let _ = pidfd_send_signal(&helper, Signal::TERM);
            info!("{who}: took the objects pid {} made ahead from {}", h.pid, h.built_from);
            Some(made)
        }
        Err(why) => {
            info!("{who}: objects made ahead by pid {} not used: {why}; making them here", h.pid);
            discard(&helper, h.pid);
            None
        }
    }
}

/// The helper's program name.
pub const HELPER: &str = "rdmig-presetup";

/// A pidfd of process `pid` once it is known to be `rdmig-presetup` run by root: checked after
/// the pidfd is open, so the files taken and the signals sent through it reach that process.
fn open_helper(pid: i32) -> Result<OwnedFd, String> {
    let p = Pid::from_raw(pid).filter(|_| pid > 1).ok_or_else(|| format!("pid {pid} cannot be a helper"))?;
    let pidfd = pidfd_open(p, PidfdFlags::empty()).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
    is_helper(pid)?;
    Ok(pidfd)
}

/// Whether process `pid` is `rdmig-presetup` run by root.
fn is_helper(pid: i32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    if pid <= 1 {
        return Err(format!("pid {pid} cannot be a helper"));
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| format!("pid {pid}: {e}"))?;
    if exe.file_name().is_none_or(|n| n != HELPER) {
        return Err(format!("pid {pid} runs {}, not {HELPER}", exe.display()));
    }
    let uid = fs::metadata(format!("/proc/{pid}")).map_err(|e| format!("pid {pid}: {e}"))?.uid();
    if uid != 0 {
        return Err(format!("pid {pid} runs as uid {uid}, not root"));
    }
    Ok(())
}

/// Takes the files of hand-off `h` for image `l`, checking each, and adopts the objects.
fn take(dir: &Path, h: &Handoff, l: &Loaded, ctl: &Ctl, helper: &OwnedFd) -> Result<Made, String> {
    if h.version != HANDOFF_VERSION {
        return Err(format!("hand-off format {}, this plugin reads {HANDOFF_VERSION}", h.version));
    }
    if h.ctx_id != l.image.id {
        return Err(format!("the hand-off is for file id {}", h.ctx_id));
    }
    let FileKind::Context(c) = &l.image.kind else { return Err("not a verbs context image".into()) };
    // The image the objects were made from: this one (nothing to compare), or an earlier one
    // beside it, which must describe the same objects.
    if h.built_from != image::file_name(l.image.id) {
        if h.built_from.contains('/') || !h.built_from.starts_with(image::FILE_PREFIX) {
            return Err(format!("{:?} is not an image of this directory", h.built_from));
        }
        let earlier = image::read_file(&dir.join(&h.built_from)).map_err(|e| e.to_string())?;
        objects::check_image(&earlier).map_err(|e| format!("{}: {e}", h.built_from))?;
        let FileKind::Context(from) = &earlier.image.kind else { return Err(format!("{} is not a verbs context image", h.built_from)) };
        same_objects(from, c)?;
    }

    let getfd = |fd: RawFd| pidfd_getfd(helper, fd, PidfdGetfdFlags::empty());
    let file = getfd(h.cmd_fd).map_err(|e| format!("the uverbs file (fd {} of pid {}): {e}", h.cmd_fd, h.pid))?;
    is_uverbs(&file, c)?;
    let afile = getfd(h.async_fd).map_err(|e| format!("the async event file (fd {} of pid {}): {e}", h.async_fd, h.pid))?;
    is_event_file(&afile)?;
    let mut chans = vec![];
    for ch in &c.channels {
        let (_, fd) = h.channels.iter().find(|(t, _)| t == &ch.token).ok_or_else(|| format!("no completion channel {}", ch.token))?;
        let f = getfd(*fd).map_err(|e| format!("completion channel {} (fd {fd} of pid {}): {e}", ch.token, h.pid))?;
        is_event_file(&f)?;
        chans.push(events::NewChannel { token: ch.token.clone(), file: f, target: ch.fd });
    }
    has_the_objects(&file, c)?;
    if !adopt_supported(ctl) {
        return Err("this rdma_rxe cannot hand objects over to another process (softroce patch 0035)".into());
    }
    let mut adopted = ADOPTED.lock().unwrap_or_else(|e| e.into_inner());
    if !adopted.contains(&h.pid) {
        let n = ctl.adopt(h.pid).map_err(|e| e.to_string())?;
        let made_here = c.qps.len() + c.mrs.len() + c.mws.len() + c.ahs.len();
        if (n as usize) < made_here {
            return Err(format!("adopted {n} objects of pid {}, the image has {made_here} QPs, MRs, MWs and AHs", h.pid));
        }
        adopted.push(h.pid);
    }
    // Where the rings are now, at the addresses the restored process maps them.
    let new: BTreeMap<u64, u64> = h.rings.iter().copied().collect();
    let mut offsets = BTreeMap::new();
    for q in &c.queues {
        let n = new.get(&q.pgoff).ok_or_else(|| format!("no new ring for the mapping at page offset {:#x}", q.pgoff))?;
        offsets.insert(q.pgoff, (*n, q.start));
    }
    Ok(Made { file, afile, chans, offsets })
}

/// Whether contexts `a` (made ahead) and `b` (restored) have the same objects made the same way.
/// Left out: what changes while the process runs and the restore loads or sets afterwards (QP
/// PSNs and the QP state images, event counts and queued events, ring contents, SRQ limits, MW
/// bindings).
pub fn same_objects(a: &Context, b: &Context) -> Result<(), String> {
    fn shape(c: &Context) -> Context {
        let mut c = c.clone();
        for q in &mut c.qps {
            q.attr.sq_psn = 0;
            q.attr.rq_psn = 0;
            q.mig_image = None;
            q.events_reported = 0;
        }
        for q in &mut c.cqs {
            q.comp_events_reported = 0;
            q.events_reported = 0;
        }
        for s in &mut c.srqs {
            s.srq_limit = 0;
        }
        for w in &mut c.mws {
            w.binding = None;
        }
        for q in &mut c.queues {
            q.blob_offset = 0;
            q.contents = Default::default();
        }
        for ch in &mut c.channels {
            ch.pending.clear();
        }
        c.async_pending.clear();
        c
    }
    let (a, b) = (shape(a), shape(b));
    let differs = |what: &str| Err(format!("the {what} differ from those made ahead"));
    if (&a.path, a.rdev_major, a.rdev_minor, &a.ibdev) != (&b.path, b.rdev_major, b.rdev_minor, &b.ibdev) {
        return differs("device");
    }
    if a.pds != b.pds {
        return differs("PDs");
    }
    if a.cqs != b.cqs {
        return differs("CQs");
    }
    if a.srqs != b.srqs {
        return differs("SRQs");
    }
    if a.mrs != b.mrs {
        return differs("MRs");
    }
    if a.mws != b.mws {
        return differs("MWs");
    }
    if a.ahs != b.ahs {
        return differs("AHs");
    }
    if a.qps != b.qps {
        return differs("QPs");
    }
    if a.channels != b.channels {
        return differs("completion channels");
    }
    if a.queues != b.queues {
        return differs("ring mappings");
    }
    Ok(())
}

/// `f` is the uverbs device `c` was saved on.
fn is_uverbs(f: &OwnedFd, c: &Context) -> Result<(), String> {
    match classify(f.as_raw_fd()) {
        Some(Claim::Uverbs { major, minor }) if (major, minor) == (c.rdev_major, c.rdev_minor) => Ok(()),
        other => Err(format!("the helper's fd is {other:?}, not the uverbs device {}:{} ({})", c.rdev_major, c.rdev_minor, c.path)),
    }
}

/// `f` is an infiniband event file.
fn is_event_file(f: &OwnedFd) -> Result<(), String> {
    match classify(f.as_raw_fd()) {
        Some(Claim::EventFile) => Ok(()),
        other => Err(format!("the helper's fd is {other:?}, not an infiniband event file")),
    }
}

/// The uverbs file holds exactly the objects `c` lists, at their handles.
fn has_the_objects(f: &OwnedFd, c: &Context) -> Result<(), String> {
    let kinds: [(u16, &str, Vec<u32>); 7] = [
        (uverbs::OBJ_PD, "PD", c.pds.iter().map(|p| p.handle).collect()),
        (uverbs::OBJ_CQ, "CQ", c.cqs.iter().map(|q| q.handle).collect()),
        (uverbs::OBJ_MR, "MR", c.mrs.iter().map(|m| m.handle).collect()),
        (uverbs::OBJ_SRQ, "SRQ", c.srqs.iter().map(|s| s.handle).collect()),
        (uverbs::OBJ_AH, "AH", c.ahs.iter().map(|a| a.handle).collect()),
        (uverbs::OBJ_MW, "MW", c.mws.iter().map(|w| w.handle).collect()),
        (uverbs::OBJ_QP, "QP", c.qps.iter().map(|q| q.handle).collect()),
    ];
    for (obj, name, mut want) in kinds {
        want.sort_unstable();
        let got = uverbs::info_handles(f.as_raw_fd(), obj).map_err(|e| format!("list the {name} handles: {e}"))?;
        if got != want {
            return Err(format!("the helper's file has {name} handles {got:?}, the image {want:?}"));
        }
    }
    Ok(())
}

/// Kills the helper and waits (2 s at most) until it is gone, and with it the objects it made,
/// whose numbers and keys the restore is about to take.
fn discard(helper: &OwnedFd, pid: i32) {
    if pidfd_send_signal(helper, Signal::KILL).is_err() {
        return;
    }
    // A pidfd turns readable once its process has exited (its files are closed by then).
    let mut p = libc::pollfd { fd: helper.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, 2000) };
    if n != 1 {
        debug!("helper pid {pid} did not exit within 2 s of SIGKILL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::tests::ctx;

    #[test]
    fn what_changes_while_a_process_runs_does_not_count() {
        let a = ctx();
        let mut b = a.clone();
        b.qps[0].attr.sq_psn += 100;
        b.qps[0].attr.rq_psn += 7;
        b.qps[0].events_reported += 1;
        b.cqs[0].comp_events_reported += 3;
        assert_eq!(same_objects(&a, &b), Ok(()));
        // What the objects were made with does.
        let mut b = a.clone();
        b.qps[0].qpn += 1;
        assert_eq!(same_objects(&a, &b), Err("the QPs differ from those made ahead".into()));
        let mut b = a.clone();
        b.qps[0].attr.max_send_wr += 1;
        assert!(same_objects(&a, &b).is_err());
        let mut b = a.clone();
        b.cqs[0].cqe = Some(511);
        assert_eq!(same_objects(&a, &b), Err("the CQs differ from those made ahead".into()));
        let mut b = a.clone();
        b.mrs[0].rkey ^= 1;
        assert!(same_objects(&a, &b).is_err());
        let mut b = a.clone();
        b.qps.clear();
        assert!(same_objects(&a, &b).is_err(), "a QP made ahead that the process no longer has");
    }

    #[test]
    fn only_rdmig_presetup_run_by_root_is_a_helper() {
        // This test's own process is not the helper, whoever runs it.
        let me = std::process::id() as i32;
        let e = is_helper(me).unwrap_err();
        assert!(e.contains("not rdmig-presetup"), "{e}");
        assert!(is_helper(1).is_err() && is_helper(0).is_err() && is_helper(-5).is_err());
        assert!(is_helper(i32::MAX).is_err(), "no such process");
    }

    #[test]
    fn a_handoff_reads_back_and_names_its_context() {
        let h = Handoff {
            version: HANDOFF_VERSION,
            pid: 4321,
            ctx_id: 7,
            built_from: image::file_name(7),
            cmd_fd: 3,
            async_fd: 4,
            channels: vec![("00ab".into(), 5)],
            rings: vec![(0x10, 0x99)],
        };
        let d = tempfile::tempdir().unwrap();
        write_new(d.path(), &handoff_name(7), &serde_json::to_vec(&h).unwrap()).unwrap();
        let back: Handoff = serde_json::from_slice(&fs::read(d.path().join("rdmig-presetup-7.json")).unwrap()).unwrap();
        assert_eq!(back, h);
        // Written again (a second helper run): replaced whole.
        write_new(d.path(), &handoff_name(7), b"{}").unwrap();
        assert_eq!(fs::read(d.path().join("rdmig-presetup-7.json")).unwrap(), b"{}");
    }
}
