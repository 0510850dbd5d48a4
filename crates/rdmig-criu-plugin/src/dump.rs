//! Dump side: runs in the criu master, single threaded, while the tasks are frozen.
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

use crate::common::PAGE;
pub use crate::common::{gid, DumpError, EVENT_LINK, UVERBS_MAJOR};
use crate::fdinfo::{self, EventInfo, Link, UverbsInfo};
use crate::image::{
    self, Ah, AhAv, AsyncEvent, BlobRef, Channel, Context, Cq, EventFile, FileImage, FileKind, Handle, Mr, Mw, MwBinding, Qp, QpLinks, QueueVma, Srq,
};
use crate::log::{debug, info};
use crate::procfs::{comm, fd_flags, owner};
use crate::rxe;
use crate::uverbs;

/// Byte offsets in `struct rxe_queue_buf` (rdma_user_rxe.h): index mask, producer, consumer.
pub const RING_INDEX_MASK: usize = 4;
pub const RING_PRODUCER: usize = 128;
pub const RING_CONSUMER: usize = 256;

/// QPs this dump stopped (device, QPN): resumed again if the dump fails or the process is left
/// running.
static STOPPED: Mutex<Vec<(String, u32)>> = Mutex::new(Vec::new());

/// Takes the list of QPs stopped by this dump.
pub fn take_stopped() -> Vec<(String, u32)> {
    std::mem::take(&mut *STOPPED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// What DUMP_EXT_FILE is looking at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Uverbs { major: u32, minor: u32 },
    EventFile,
}

/// Whether a file (CRIU's copy of it) is ours: a uverbs char device or an infiniband event file.
pub fn classify(fd: RawFd) -> Option<Claim> {
    // SAFETY: fstat writes into the zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; fd is a valid descriptor passed by CRIU.
    if unsafe { libc::fstat(fd, &mut st) } == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFCHR {
        let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
        return (major == UVERBS_MAJOR).then_some(Claim::Uverbs { major, minor });
    }
    let link = fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    (link.as_os_str() == EVENT_LINK).then_some(Claim::EventFile)
}

/// Owner pid and the uverbs file's token (softroce patch 0014; `None` without it).
type ContextKey = (i32, Option<String>);

/// Context files dumped so far in this criu run, by [`ContextKey`]: (file id, completion
/// channels).
static CONTEXTS: Mutex<BTreeMap<ContextKey, (u32, u32)>> = Mutex::new(BTreeMap::new());

pub fn reset() {
    CONTEXTS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// DUMP_EXT_FILE. `Ok(false)`: not ours. `Ok(true)`: saved. `Err`: ours but it cannot be saved.
pub fn dump_file(fd: RawFd, id: u32, dir: RawFd) -> Result<bool, DumpError> {
    match classify(fd) {
        None => Ok(false),
        Some(Claim::Uverbs { major, minor }) => {
            dump_context(fd, id, dir, major, minor)?;
            Ok(true)
        }
        Some(Claim::EventFile) => {
            dump_event_file(fd, id, dir)?;
            Ok(true)
        }
    }
}

fn write_image(dir: RawFd, img: &FileImage, blob: &[u8]) -> Result<(), DumpError> {
    let name = image::file_name(img.id);
    let c = CString::new(name.clone()).expect("no NUL");
    // SAFETY: openat with a NUL-terminated relative name on CRIU's images dir fd.
    let f = unsafe { libc::openat(dir, c.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o600) };
    if f < 0 {
        return Err(DumpError::sys(format!("create {name} in the images directory"))(std::io::Error::last_os_error()));
    }
    // SAFETY: f was just opened and is owned by this File from here on.
    let file = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(f) };
    let bytes = image::encode(img, blob);
    file.write_all_at(&bytes, 0).map_err(DumpError::sys(format!("write {name}")))?;
    file.sync_all().map_err(DumpError::sys(format!("sync {name}")))?;
    Ok(())
}

/// Object types rxe user contexts can hold that this plugin does not save.
const UNSUPPORTED_TYPES: &[(u16, &str)] = &[
    (uverbs::OBJ_FLOW, "flow"),
    (uverbs::OBJ_XRCD, "XRC domain"),
    (uverbs::OBJ_RWQ_IND_TBL, "RWQ indirection table"),
    (uverbs::OBJ_WQ, "work queue (WQ)"),
    (uverbs::OBJ_FLOW_ACTION, "flow action"),
    (uverbs::OBJ_DM, "device memory"),
    (uverbs::OBJ_COUNTERS, "counters"),
];

fn dump_context(fd: RawFd, id: u32, dir: RawFd, major: u32, minor: u32) -> Result<(), DumpError> {
    let (pid, pfd) = owner(fd, &format!("uverbs file {major}:{minor} (file id {id})"))?;
    let path = fs::read_link(format!("/proc/self/fd/{fd}")).map_err(DumpError::sys("readlink of the uverbs fd"))?;
    let path = path.display().to_string();
    let who = format!("process {pid} ({}), {path} fd {pfd}", comm(pid));
    let unsupported = |why: String| DumpError::Unsupported(format!("{who}: {why}"));

    // One verbs context per process: the status names objects by process, not by file.
    let others = crate::procfs::other_uverbs_fds(pid, pfd)?;

    let ibdev = crate::procfs::ibdev_of(&path)?;
    let status = match rxe::status::read() {
        Ok(s) => s,
        Err(rxe::CtlError::NotLoaded) => {
            return Err(unsupported(format!(
                "{} is missing: this is not rdmig's rdma_rxe, so the QP numbers and MR keys could not be recreated on restore",
                rxe::CTL_DEV
            )))
        }
        Err(e) => return Err(DumpError::sys(format!("read {}", rxe::CTL_DEV))(e)),
    };
    if !status.iter().any(|r| r.kind == "dev" && r.get("name") == Some(ibdev.as_str())) {
        return Err(unsupported(format!("device {ibdev} is not an rxe device ({} does not list it)", rxe::CTL_DEV)));
    }

    let handles =
        |obj: u16, name: &str| uverbs::info_handles(fd, obj).map_err(DumpError::sys(format!("{who}: list the {name} handles (UVERBS_METHOD_INFO_HANDLES)")));
    // PD first: every verbs device has PDs, so an error here is a real one (a type the device
    // does not implement at all answers EINVAL/EOPNOTSUPP, and then it holds none of them).
    let pds: Vec<Handle> = handles(uverbs::OBJ_PD, "PD")?.into_iter().map(|handle| Handle { handle }).collect();
    for (obj, name) in UNSUPPORTED_TYPES {
        let h = match uverbs::info_handles(fd, *obj) {
            Ok(h) => h,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOMSG | libc::ENOENT)) => {
                debug!("{who}: {name} objects: {e}: the device has no such type");
                vec![]
            }
            Err(e) => return Err(DumpError::sys(format!("{who}: list the {name} handles (UVERBS_METHOD_INFO_HANDLES)"))(e)),
        };
        if !h.is_empty() {
            return Err(unsupported(format!("holds {} {name} object(s) (handles {h:?}), which this plugin cannot save", h.len())));
        }
    }

    let mr_recs = rxe::status::owned(&status, "mr", pid, &ibdev);
    let mut mrs = vec![];
    for h in handles(uverbs::OBJ_MR, "MR")? {
        let (lkey, rkey, length, iova) = uverbs::query_mr(fd, h).map_err(DumpError::sys(format!("{who}: query MR handle {h}")))?;
        let access = mr_recs.iter().find(|r| r.num("lkey") == Some(lkey as u64)).and_then(|r| r.num("access")).map(|a| a as u32);
        mrs.push(Mr { handle: h, lkey, rkey, iova, length, access, pd: None });
    }

    // MWs: the status names each MW's handle, rkey and binding (softroce patch 0013).
    let mw_recs = rxe::status::owned(&status, "mw", pid, &ibdev);
    let mut mws: Vec<Mw> = vec![];
    for h in handles(uverbs::OBJ_MW, "MW")? {
        let rec = mw_recs.iter().find(|r| r.num("handle") == Some(h as u64)).ok_or_else(|| {
            unsupported(format!(
                "MW handle {h} is not in {}'s list with its handle and binding (this rdma_rxe lacks rdmig's softroce patch 0013)",
                rxe::CTL_DEV
            ))
        })?;
        let num = |k: &str| rec.num(k).ok_or_else(|| unsupported(format!("MW handle {h}: {} gives no {k}", rxe::CTL_DEV)));
        let binding = match rec.get("state") {
            Some("free") => None,
            Some("bound") if rec.get("mr") != Some("-") => Some(MwBinding {
                mr_index: num("mr")? as u32,
                addr: num("addr")?,
                length: num("length")?,
                access: num("access")? as u32,
                qpn: rec.num("qpn").map(|q| q as u32),
            }),
            s => return Err(unsupported(format!("MW handle {h} is in state {s:?} (not free, nor bound to an MR); it cannot be saved"))),
        };
        mws.push(Mw { handle: h, rkey: Some(num("rkey")? as u32), mw_type: num("type")? as u32, pd: None, binding });
    }
    // AHs: the status names each AH's handle and address vector (softroce patch 0012).
    let ah_recs = rxe::status::owned(&status, "ah", pid, &ibdev);
    let mut ahs: Vec<Ah> = vec![];
    for h in handles(uverbs::OBJ_AH, "AH")? {
        let rec = ah_recs.iter().find(|r| r.num("handle") == Some(h as u64)).ok_or_else(|| {
            unsupported(format!(
                "AH handle {h} is not in {}'s list with its handle and address (this rdma_rxe lacks rdmig's softroce patch 0012)",
                rxe::CTL_DEV
            ))
        })?;
        let num = |k: &str| rec.num(k).ok_or_else(|| unsupported(format!("AH handle {h}: {} gives no {k}", rxe::CTL_DEV)));
        let port = num("port")? as u8;
        let sgid_index = num("sgid_index")? as u8;
        let dgid = rec.get("dgid").and_then(rxe::parse_gid).ok_or_else(|| unsupported(format!("AH handle {h}: bad dgid in {}", rxe::CTL_DEV)))?;
        let (sgid, sgid_type) = gid(&ibdev, port, sgid_index).map_err(DumpError::sys(format!("{who}: read the source GID {sgid_index} of AH handle {h}")))?;
        let av = AhAv {
            port,
            sgid,
            sgid_type,
            dgid,
            flow_label: num("flow_label")? as u32,
            hop_limit: num("hop_limit")? as u8,
            traffic_class: num("tclass")? as u8,
        };
        ahs.push(Ah { handle: h, ah_num: Some(num("index")? as u32), av: Some(av), ..Default::default() });
    }
    let mut srqs: Vec<Srq> = vec![];
    for h in handles(uverbs::OBJ_SRQ, "SRQ")? {
        let a = uverbs::query_srq(fd, h).map_err(DumpError::sys(format!("{who}: query SRQ handle {h}")))?;
        srqs.push(Srq { handle: h, max_wr: a.max_wr, max_sge: a.max_sge, srq_limit: a.srq_limit, ..Default::default() });
    }
    let comp_channels = handles(uverbs::OBJ_COMP_CHANNEL, "completion channel")?.len() as u32;
    let async_event_files = handles(uverbs::OBJ_ASYNC_EVENT, "async event file")?.len() as u32;

    // Refuse what cannot be restored before anything is stopped.
    for w in &mws {
        if let Some(b) = &w.binding {
            if !mrs.iter().any(|m| m.lkey >> 8 == b.mr_index) {
                return Err(unsupported(format!("MW handle {} is bound to MR index {}, which is not one of the process's MRs", w.handle, b.mr_index)));
            }
        }
    }
    if let Some(m) = mrs.iter().find(|m| m.access.is_none()) {
        return Err(unsupported(format!("MR handle {} (lkey {:#x}) is not in {}'s list; its access flags are unknown", m.handle, m.lkey, rxe::CTL_DEV)));
    }
    // The event state (user handles, event counters, which CQ uses which channel), from the
    // fdinfo of rdmig's ib_uverbs; a stock ib_uverbs shows none of it.
    let text = fdinfo::read(0, fd).map_err(DumpError::sys(format!("{who}: read the fdinfo of the uverbs file")))?;
    let uvinfo: Option<UverbsInfo> = fdinfo::parse_uverbs(&text).map_err(|e| unsupported(format!("fdinfo of the uverbs file: {e}")))?;
    // Several uverbs files: which QPs (numbers) and event files are this file's, ib_uverbs says.
    let file_token = uvinfo.as_ref().and_then(|i| i.file.clone());
    if !others.is_empty() && file_token.is_none() {
        return Err(unsupported(format!(
            "the process has more uverbs files (fds {others:?}); telling their objects and event files apart needs \
             rdmig's ib_uverbs with softroce patch 0014"
        )));
    }
    if comp_channels > 0 && uvinfo.is_none() {
        return Err(unsupported(format!(
            "holds {comp_channels} completion channel(s), but this ib_uverbs does not show which CQ uses which channel nor \
             the CQs' event counters (it lacks rdmig's softroce patch 0010)"
        )));
    }

    // Which PD each MR and QP uses: from the fdinfo of rdmig's ib_uverbs (softroce patch 0011),
    // or the only PD there is.
    let pd_of = |type_id: u16, h: u32, what: &str| -> Result<u32, DumpError> {
        match uvinfo.as_ref().and_then(|i| i.obj_of_type(type_id, h)).and_then(|o| o.pd) {
            Some(Link::Handle(p)) if pds.iter().any(|x| x.handle == p) => Ok(p),
            Some(Link::Handle(p)) => Err(unsupported(format!("{what} uses PD handle {p}, which is not among the process's PDs"))),
            Some(Link::Busy) => Err(unsupported(format!("{what} was being changed or destroyed while its PD was read"))),
            Some(Link::None) => Err(unsupported(format!("{what} has no PD"))),
            None if pds.len() == 1 => Ok(pds[0].handle),
            None => Err(unsupported(format!(
                "holds {} PDs, and this ib_uverbs does not show which PD {what} uses (it lacks rdmig's softroce patch 0011)",
                pds.len()
            ))),
        }
    };
    for m in &mut mrs {
        m.pd = Some(pd_of(uverbs::OBJ_MR, m.handle, &format!("MR handle {} (lkey {:#x})", m.handle, m.lkey))?);
    }
    for w in &mut mws {
        w.pd = Some(pd_of(uverbs::OBJ_MW, w.handle, &format!("MW handle {}", w.handle))?);
    }
    for a in &mut ahs {
        a.pd = Some(pd_of(uverbs::OBJ_AH, a.handle, &format!("AH handle {}", a.handle))?);
        a.user_handle = uvinfo.as_ref().and_then(|i| i.obj_of_type(uverbs::OBJ_AH, a.handle)).map(|o| o.user_handle).unwrap_or(0);
    }
    for q in &mut srqs {
        q.pd = Some(pd_of(uverbs::OBJ_SRQ, q.handle, &format!("SRQ handle {}", q.handle))?);
        if let Some(e) = uvinfo.as_ref().and_then(|i| i.obj("srq", q.handle)) {
            q.user_handle = e.user_handle;
            q.events_reported = e.events_reported;
        } else if uvinfo.is_some() {
            return Err(unsupported(format!("SRQ handle {} is missing from the fdinfo of the uverbs file", q.handle)));
        }
    }

    // The process's mappings of this uverbs file: the rxe rings (CQ, SQ, RQ), by page offset.
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).map_err(DumpError::sys(format!("read /proc/{pid}/maps")))?;
    let mut vmas: Vec<(u64, u64, u64, String)> = vec![];
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || f[5] != path {
            continue;
        }
        let (s, e) = f[0].split_once('-').unwrap_or(("0", "0"));
        let start = u64::from_str_radix(s, 16).unwrap_or(0);
        let end = u64::from_str_radix(e, 16).unwrap_or(0);
        let off = u64::from_str_radix(f[2], 16).unwrap_or(0);
        vmas.push((start, end, off / PAGE, f[1].to_string()));
    }
    vmas.sort_by_key(|v| v.2);

    // QPs: ib_uverbs names each QP's number (patch 0014); without it, handles in creation order
    // pair with the process's QPNs in creation order.
    let qp_handles = handles(uverbs::OBJ_QP, "QP")?;
    let all_qp_recs = rxe::status::owned(&status, "qp", pid, &ibdev);
    let shown_qpns: Option<Vec<u32>> = qp_handles.iter().map(|h| uvinfo.as_ref().and_then(|i| i.obj_of_type(uverbs::OBJ_QP, *h)).and_then(|o| o.qpn)).collect();
    let (qp_recs, qpn_source): (Vec<&rxe::Record>, &str) = match &shown_qpns {
        Some(ns) => {
            let mut v = vec![];
            for (h, n) in qp_handles.iter().zip(ns) {
                v.push(
                    *all_qp_recs
                        .iter()
                        .find(|r| r.num("qpn") == Some(*n as u64))
                        .ok_or_else(|| unsupported(format!("QP handle {h} has QPN {n}, which {} does not list for the process on {ibdev}", rxe::CTL_DEV)))?,
                );
            }
            (v, "ib_uverbs fdinfo")
        }
        None if !others.is_empty() => {
            return Err(unsupported(format!(
                "the process has more uverbs files (fds {others:?}), and this ib_uverbs does not show the QPNs of its QPs (softroce patch 0014)"
            )))
        }
        None => (all_qp_recs.clone(), if qp_handles.len() == 1 { "only QP of the process" } else { "creation order" }),
    };
    if qp_recs.len() != qp_handles.len() {
        return Err(unsupported(format!(
            "has {} QP handles but {} lists {} QPs of the process on {ibdev}; cannot tell their numbers",
            qp_handles.len(),
            rxe::CTL_DEV,
            qp_recs.len()
        )));
    }
    // The rings of the process's other uverbs files are not this file's.
    let foreign: Vec<u64> = all_qp_recs
        .iter()
        .filter(|r| !qp_recs.iter().any(|m| m.num("qpn") == r.num("qpn")))
        .flat_map(|r| ["sq_off", "rq_off", "scq_off", "rcq_off", "srq_off"].map(|k| r.num(k).map(|o| o / PAGE)))
        .flatten()
        .collect();
    vmas.retain(|v| !foreign.contains(&v.2));
    let mut blob = vec![];
    let mut qp_pds: Vec<u32> = vec![]; // the PD of each QP, by qp index
    let mut qp_srqs: Vec<Option<u32>> = vec![]; // the SRQ of each QP, by qp index
    let mut qps = vec![];
    let mut ring_of_qp = vec![]; // (qp index, sq pgoff, rq pgoff, scq pgoff, rcq pgoff)
    let mut to_dump: Vec<(usize, String)> = vec![]; // connected QPs: (qp index, state)
    let mut qctl: Option<rxe::Ctl> = None; // opened at the first connected QP
    for (h, rec) in qp_handles.iter().zip(&qp_recs) {
        let qpn = rec.num("qpn").unwrap_or(0) as u32;
        let qp_type = rec.get("type").unwrap_or("?").to_string();
        let ctl_state = rec.get("state").unwrap_or("?");
        let connected = matches!(ctl_state, "rtr" | "rts");
        if !matches!(qp_type.as_str(), "rc" | "ud") {
            return Err(unsupported(format!(
                "QP handle {h} (QPN {qpn}) is of type {qp_type} in state {}; only RC and UD QPs can be saved",
                ctl_state.to_uppercase()
            )));
        }
        if !matches!(ctl_state, "reset" | "init" | "rtr" | "rts") {
            return Err(unsupported(format!(
                "QP handle {h} (QPN {qpn}) is in state {}; only QPs in RESET, INIT, RTR or RTS can be saved",
                ctl_state.to_uppercase()
            )));
        }
        let off = |k: &str| -> Result<Option<u64>, DumpError> {
            match rec.get(k) {
                Some("-") => Ok(None),
                Some(_) => Ok(rec.num(k).map(|o| o / PAGE)),
                None => Err(unsupported(format!("{} does not give the ring offsets of QP {qpn} ({k}): this rdma_rxe lacks rdmig patch 0007", rxe::CTL_DEV))),
            }
        };
        let (sq, mut rq, scq, rcq, srq_ring) = (off("sq_off")?, off("rq_off")?, off("scq_off")?, off("rcq_off")?, off("srq_off")?);
        // A QP on an SRQ receives from the SRQ's ring: which SRQ that is, ib_uverbs says (patch
        // 0011); with one SRQ it can only be that one. The ring names the SRQ's mapping.
        let mut srq = None;
        if let Some(ring) = srq_ring {
            let shown = uvinfo.as_ref().and_then(|i| i.obj_of_type(uverbs::OBJ_QP, *h)).and_then(|o| o.srq);
            let sh = match shown {
                Some(Link::Handle(s)) => s,
                None if srqs.len() == 1 => srqs[0].handle,
                _ => {
                    return Err(unsupported(format!(
                        "QP {qpn} uses an SRQ, and this ib_uverbs does not show which of the {} SRQs (it lacks rdmig's softroce patch 0011)",
                        srqs.len()
                    )))
                }
            };
            let s = srqs
                .iter_mut()
                .find(|s| s.handle == sh)
                .ok_or_else(|| unsupported(format!("QP {qpn} uses SRQ handle {sh}, which the process does not hold")))?;
            if s.pgoff.is_some_and(|o| o != ring) {
                return Err(unsupported(format!("SRQ handle {sh}: its QPs name different rings")));
            }
            s.pgoff = Some(ring);
            srq = Some(sh);
            rq = Some(ring);
        }
        let (Some(sq), Some(rq), Some(scq), Some(rcq)) = (sq, rq, scq, rcq) else {
            return Err(unsupported(format!("QP {qpn} has a ring that is not mapped by the process; cannot save it")));
        };
        for r in [sq, rq, scq, rcq] {
            if !vmas.iter().any(|v| v.2 == r) {
                return Err(unsupported(format!("QP {qpn}: no mapping of {path} at page offset {r:#x} in the process (a ring was unmapped or moved)")));
            }
        }
        qp_pds.push(pd_of(uverbs::OBJ_QP, *h, &format!("QP handle {h} (QPN {qpn})"))?);
        let attr = uverbs::query_qp(fd, *h).map_err(DumpError::sys(format!("{who}: query QP handle {h}")))?;
        let port = if attr.port_num == 0 { 1 } else { attr.port_num };
        let (sgid, sgid_type) = if connected && qp_type == "rc" {
            let g = gid(&ibdev, port, attr.sgid_index).map_err(DumpError::sys(format!("{who}: read the source GID {} of QP {qpn}", attr.sgid_index)))?;
            (Some(g.0), Some(g.1))
        } else {
            (None, None)
        };
        if connected {
            to_dump.push((qps.len(), ctl_state.to_uppercase()));
        }
        let mig_image = None;
        let ev = uvinfo.as_ref().and_then(|i| i.obj("qp", *h));
        if uvinfo.is_some() && ev.is_none() {
            return Err(unsupported(format!("QP handle {h} (QPN {qpn}) is missing from the fdinfo of the uverbs file")));
        }
        ring_of_qp.push((qps.len(), sq, rq, scq, rcq));
        qp_srqs.push(srq);
        qps.push(Qp {
            handle: *h,
            qpn,
            qpn_source: qpn_source.into(),
            qp_type,
            attr,
            links: None,
            sgid,
            sgid_type,
            mig_image,
            user_handle: ev.map(|e| e.user_handle).unwrap_or(0),
            events_reported: ev.map(|e| e.events_reported).unwrap_or(0),
        });
    }

    if let Some(s) = srqs.iter().find(|s| s.pgoff.is_none()) {
        return Err(unsupported(format!("SRQ handle {} is used by no QP: its ring cannot be told apart from the CQs' rings", s.handle)));
    }
    // Every connected QP is stopped, then each is dumped: QPs share CQs (and SRQs), and a QP's
    // image carries those rings, which other QPs still running would keep filling.
    for (i, _) in &to_dump {
        let qpn = qps[*i].qpn;
        if qctl.is_none() {
            qctl = Some(rxe::Ctl::open().map_err(DumpError::sys(format!("open {}", rxe::CTL_DEV)))?);
        }
        let c = qctl.as_ref().expect("opened just above");
        c.qp_stop(&ibdev, qpn).map_err(|e| {
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) && qps[*i].qp_type == "ud" {
                unsupported(format!("UD QP {qpn} is past INIT, and this rdma_rxe cannot stop UD QPs (it lacks rdmig's softroce patch 0012)"))
            } else {
                DumpError::sys(format!("{who}: stop QP {qpn} (RXE_CTL_IOC_QP_STOP)"))(e)
            }
        })?;
        STOPPED.lock().unwrap_or_else(|e| e.into_inner()).push((ibdev.clone(), qpn));
    }
    for (i, state) in to_dump {
        let qpn = qps[i].qpn;
        let c = qctl.as_ref().expect("a QP to dump was stopped through it");
        let img = c.qp_dump(&ibdev, qpn).map_err(DumpError::sys(format!("{who}: dump QP {qpn} (RXE_CTL_IOC_QP_DUMP)")))?;
        qps[i].mig_image = Some(BlobRef { offset: blob.len() as u64, len: img.len() as u64 });
        blob.extend_from_slice(&img);
        info!("{who}: stopped QP {qpn} ({state}) and saved its driver state ({} bytes)", img.len());
    }

    // Pages rxe wrote into since the driver's dirty log was last cleared (by rdmig before a
    // pre-dump round): rewritten in place so their soft-dirty bit is set and an incremental
    // dump (`--track-mem` with a parent) includes them. rxe writes through kernel mappings,
    // which soft-dirty tracking does not see. Done after the QPs stopped: nothing writes now.
    if !mrs.is_empty() {
        let n = mark_rdma_written(pid, &ibdev, &mrs, &who).map_err(|e| unsupported(format!("cannot mark the pages written by RDMA: {e}")))?;
        if n > 0 {
            info!("{who}: {n} page(s) written by RDMA since the last dirty-log read marked for this dump");
        }
    }

    // The rings, read now that every connected QP is stopped (nothing changes them any more).
    let mem = fs::File::open(format!("/proc/{pid}/mem")).map_err(DumpError::sys(format!("open /proc/{pid}/mem")))?;
    let mut queues = vec![];
    for (start, end, pgoff, prot) in &vmas {
        let len = end.saturating_sub(*start);
        let mut buf = vec![0u8; len as usize];
        mem.read_exact_at(&mut buf, *start)
            .map_err(|e| DumpError::Unsupported(format!("{who}: cannot read the queue mapping {start:#x}-{end:#x} from /proc/{pid}/mem: {e}")))?;
        queues.push(QueueVma { start: *start, end: *end, pgoff: *pgoff, prot: prot.clone(), blob_offset: blob.len() as u64, len });
        blob.extend_from_slice(&buf);
    }
    let ring_u32 = |pgoff: u64, at: usize| -> Option<u32> {
        let q = queues.iter().find(|q| q.pgoff == pgoff)?;
        let b = blob.get(q.blob_offset as usize + at..q.blob_offset as usize + at + 4)?;
        Some(u32::from_ne_bytes(b.try_into().ok()?))
    };

    // CQs: the rings that are not a QP's SQ or RQ, paired with the CQ handles by creation order.
    let cq_handles = handles(uverbs::OBJ_CQ, "CQ")?;
    let qp_rings: Vec<u64> = ring_of_qp.iter().flat_map(|r| [r.1, r.2]).collect();
    let cq_rings: Vec<u64> = vmas.iter().map(|v| v.2).filter(|o| !qp_rings.contains(o)).collect();
    if cq_rings.len() != cq_handles.len() {
        return Err(unsupported(format!(
            "has {} CQ handles but {} ring mappings that are not send or receive queues of its QPs; cannot pair them",
            cq_handles.len(),
            cq_rings.len()
        )));
    }
    let mut cqs: Vec<Cq> = vec![];
    for (h, o) in cq_handles.iter().zip(&cq_rings) {
        let mut cq = Cq { handle: *h, pgoff: Some(*o), cqe: ring_u32(*o, RING_INDEX_MASK), ..Default::default() };
        if let Some(i) = &uvinfo {
            let e = i.cq(*h).ok_or_else(|| unsupported(format!("CQ handle {h} is missing from the fdinfo of the uverbs file")))?;
            cq.user_handle = e.user_handle;
            cq.channel = e.channel.clone();
            cq.comp_events_reported = e.comp_events_reported;
            cq.events_reported = e.events_reported;
        }
        cqs.push(cq);
    }
    // The completion channels and the events queued on them and on the async event file, read
    // now that no connected QP completes work any more.
    let (channels, async_pending) = match &uvinfo {
        Some(_) => event_files(pid, file_token.as_deref(), &who)?,
        None => (vec![], vec![]),
    };
    if channels.len() != comp_channels as usize {
        return Err(unsupported(format!(
            "holds {comp_channels} completion channel(s) but has fds for {} of them (fds {:?}); a channel without an fd cannot be restored",
            channels.len(),
            channels.iter().map(|c| c.fd).collect::<Vec<_>>()
        )));
    }
    check_events(&cqs, &qps, &srqs, &channels, &async_pending).map_err(unsupported)?;
    // The rings the driver's QP images do not carry are copied back as they are; that is exact
    // only while the driver's private index of the ring is still 0.
    let covered: Vec<u64> = ring_of_qp.iter().filter(|r| qps[r.0].mig_image.is_some()).flat_map(|r| [r.1, r.2, r.3, r.4]).collect();
    for (i, sq, rq, scq, rcq) in &ring_of_qp {
        let q = &mut qps[*i];
        let pd = qp_pds[*i];
        let cq_of = |o: &u64| cqs.iter().find(|c| c.pgoff == Some(*o)).map(|c| c.handle);
        let (Some(send_cq), Some(recv_cq)) = (cq_of(scq), cq_of(rcq)) else {
            return Err(unsupported(format!("QP {}: its CQ rings are not among the process's CQ mappings", q.qpn)));
        };
        // The CQ handles were paired with their rings by creation order; where ib_uverbs names
        // the QP's CQs (patch 0011), they must agree.
        if let Some(o) = uvinfo.as_ref().and_then(|u| u.obj_of_type(uverbs::OBJ_QP, q.handle)) {
            for (what, shown, paired) in [("send", o.send_cq, send_cq), ("receive", o.recv_cq, recv_cq)] {
                if let Some(Link::Handle(s)) = shown {
                    if s != paired {
                        return Err(unsupported(format!(
                            "QP {}: its {what} CQ is handle {s}, but its ring is the one paired with CQ handle {paired}; cannot tell the CQs' rings apart",
                            q.qpn
                        )));
                    }
                }
            }
        }
        q.links = Some(QpLinks { pd, send_cq, recv_cq, sq_pgoff: *sq, rq_pgoff: *rq, srq: qp_srqs[*i] });
        if q.mig_image.is_none() {
            for (o, what) in [(sq, "send queue"), (rq, "receive queue")] {
                if !covered.contains(o) && ring_u32(*o, RING_CONSUMER) != Some(0) {
                    return Err(unsupported(format!(
                        "QP {} ({}) has consumed work requests of its {what} before being connected; its ring cannot be restored",
                        q.qpn,
                        image::qp_state_name(q.attr.state)
                    )));
                }
            }
        }
    }
    for c in &cqs {
        let o = c.pgoff.unwrap_or(0);
        if !covered.contains(&o) && ring_u32(o, RING_PRODUCER) != Some(0) {
            return Err(unsupported(format!("CQ handle {} holds completions but belongs to no connected QP; its ring cannot be restored", c.handle)));
        }
        // Whether the CQ is armed (ibv_req_notify_cq) is the driver's; it is saved with the
        // image of a connected QP only.
        if !covered.contains(&o) && c.channel.is_some() {
            return Err(unsupported(format!(
                "CQ handle {} delivers to a completion channel but belongs to no connected QP; whether it is armed \
                 (ibv_req_notify_cq) is only saved with a connected QP's driver state",
                c.handle
            )));
        }
    }
    let ctx = Context {
        path: path.clone(),
        rdev_major: major,
        rdev_minor: minor,
        ibdev,
        flags: fd_flags(fd),
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
    let img = FileImage { id, pid, fd: pfd, kind: FileKind::Context(Box::new(ctx)) };
    write_image(dir, &img, &blob)?;
    CONTEXTS.lock().unwrap_or_else(|e| e.into_inner()).insert((pid, file_token), (id, comp_channels));
    info!("{who}: saved verbs context as {}: {summary}", image::file_name(id));
    Ok(())
}

/// The process's completion channels (each with its lowest fd and the events queued on it) and
/// the events queued on its async event file (the one with the lowest fd), from their fdinfo.
/// With `file` (the uverbs file's token), only the event files of that uverbs file.
fn event_files(pid: i32, file: Option<&str>, who: &str) -> Result<(Vec<Channel>, Vec<AsyncEvent>), DumpError> {
    let mut channels: Vec<Channel> = vec![];
    let mut async_pending: Option<Vec<AsyncEvent>> = None;
    for n in crate::procfs::event_fds(pid)? {
        let text = fdinfo::read(pid, n).map_err(DumpError::sys(format!("{who}: read /proc/{pid}/fdinfo/{n}")))?;
        if file.is_some() && fdinfo::file_token(&text).as_deref() != file {
            continue;
        }
        match fdinfo::parse_event_file(&text).map_err(|e| DumpError::Unsupported(format!("{who}: fdinfo of event fd {n}: {e}")))? {
            EventInfo::CompChannel { token, pending } => {
                if !channels.iter().any(|c| c.token == token) {
                    channels.push(Channel { token, fd: n, pending });
                }
            }
            EventInfo::Async { pending } => {
                async_pending.get_or_insert(
                    pending.into_iter().map(|e| AsyncEvent { event_type: e.event_type, element: e.element, object: e.object, handle: e.handle }).collect(),
                );
            }
            EventInfo::Unknown => {
                return Err(DumpError::Unsupported(format!("{who}: event fd {n} shows no rdmig lines in its fdinfo, unlike its uverbs file")))
            }
        }
    }
    Ok((channels, async_pending.unwrap_or_default()))
}

/// Checks that the saved event state refers only to objects the image holds: each CQ's channel is
/// one of the process's channels, each queued completion event is of a CQ, each queued async
/// event is of a CQ, QP or SRQ of the image or of the device.
pub fn check_events(cqs: &[Cq], qps: &[Qp], srqs: &[Srq], channels: &[Channel], async_pending: &[AsyncEvent]) -> Result<(), String> {
    for c in cqs {
        if let Some(t) = &c.channel {
            if !channels.iter().any(|ch| &ch.token == t) {
                return Err(format!("CQ handle {} delivers to completion channel {t}, of which the process holds no fd", c.handle));
            }
        }
    }
    for ch in channels {
        for h in &ch.pending {
            if !cqs.iter().any(|c| c.handle == *h && c.channel.as_ref() == Some(&ch.token)) {
                return Err(format!("completion channel fd {} holds an event of CQ handle {h}, which does not deliver to it", ch.fd));
            }
        }
    }
    for e in async_pending {
        let known = match (e.object as u16, e.handle) {
            (0, None) => true,
            (uverbs::OBJ_CQ, Some(h)) => cqs.iter().any(|c| c.handle == h),
            (uverbs::OBJ_QP, Some(h)) => qps.iter().any(|q| q.handle == h),
            (uverbs::OBJ_SRQ, Some(h)) => srqs.iter().any(|q| q.handle == h),
            _ => false,
        };
        if !known {
            return Err(format!(
                "the async event file holds an unread event (type {}) of object type {} handle {:?}, which cannot be restored",
                e.event_type, e.object, e.handle
            ));
        }
    }
    Ok(())
}

/// Rewrites one byte of every page the driver logged as written by RDMA, through
/// /proc/PID/mem (a write fault sets the page's soft-dirty bit); returns the pages touched.
fn mark_rdma_written(pid: i32, ibdev: &str, mrs: &[Mr], who: &str) -> std::io::Result<usize> {
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

fn dump_event_file(fd: RawFd, id: u32, dir: RawFd) -> Result<(), DumpError> {
    let (pid, pfd) = owner(fd, &format!("infiniband event file (file id {id})"))?;
    let who = format!("process {pid} ({}), event file fd {pfd}", comm(pid));
    let event_fds = crate::procfs::event_fds(pid)?;
    // rdmig's ib_uverbs says what the file is; otherwise it is guessed.
    let text = fdinfo::read(0, fd).map_err(DumpError::sys(format!("{who}: read its fdinfo")))?;
    // Its context: the one of its uverbs file (patch 0014), else the process's only one.
    let file_token = fdinfo::file_token(&text);
    let ctx = {
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
    };
    let info = fdinfo::parse_event_file(&text).map_err(|e| DumpError::Unsupported(format!("{who}: fdinfo: {e}")))?;
    let mut channel = None;
    let (role, role_source) = match info {
        EventInfo::CompChannel { token, .. } => {
            channel = Some(token);
            ("comp_channel", "fdinfo (rdmig's ib_uverbs)")
        }
        EventInfo::Async { .. } => ("async", "fdinfo (rdmig's ib_uverbs)"),
        EventInfo::Unknown => match ctx {
            Some((_, 0)) => ("async", "the process's context has no completion channel"),
            _ if event_fds.first() == Some(&pfd) => ("async", "lowest event fd of the process (libibverbs opens it with the device)"),
            _ => ("comp_channel", "not the lowest event fd of the process"),
        },
    };
    let img = FileImage {
        id,
        pid,
        fd: pfd,
        kind: FileKind::EventFile(EventFile {
            context_id: ctx.map(|c| c.0),
            role: role.into(),
            role_source: role_source.into(),
            flags: fd_flags(fd),
            channel,
            file_token,
        }),
    };
    write_image(dir, &img, &[])?;
    info!("{who}: saved as {} ({role})", image::file_name(id));
    Ok(())
}
