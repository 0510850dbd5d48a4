//! Queue pairs (RC and UD). Dump: numbered from ib_uverbs' fdinfo (patch 0014) or by creation
//! order, queried for their attributes; rings, type and state from `/dev/rxe_ctl`'s status; PD,
//! CQs and SRQ from ib_uverbs' fdinfo (patch 0011) and the rings. Connected QPs (RTR, RTS) are
//! stopped, all of them before the first one's driver state image is taken (QPs share CQs and
//! SRQs, whose rings the image carries). Restore: created with their old number (EXPECT) and
//! moved through their states with their old attributes, connected ones loaded with their
//! driver image (QP_RESTORE) and left stopped; they resume once memory is final.

use super::rings::{self, NewRings, Vma};
use super::{limits, pd, DumpCx, RestoreCx};
use crate::cmd;
use crate::common::{gid, gid_index, DumpError, RestoreError, PAGE};
use crate::fdinfo::{Link, UverbsInfo};
use crate::image::{self, BlobRef, Context, Cq, Handle, Qp, QpLinks, Srq};
use crate::log::info;
use crate::rxe::{self, Ctl};
use crate::uverbs;

// ---- dump ----

/// The file's QP handles and, for each, its record in the driver's status.
pub struct Numbered<'a> {
    pub handles: Vec<u32>,
    pub recs: Vec<&'a rxe::Record>,
    /// How the handles were paired with the records.
    pub source: &'static str,
    /// Ring page offsets of the process's QPs on its other uverbs files.
    pub foreign: Vec<u64>,
}

/// Pairs the file's QP handles with the process's QPs in the driver's status: ib_uverbs names
/// each QP's number (patch 0014); without it, handles in creation order pair with the process's
/// QPNs in creation order.
pub fn number<'a>(cx: &'a DumpCx, uv: Option<&UverbsInfo>) -> Result<Numbered<'a>, DumpError> {
    let qp_handles = cx.handles(uverbs::OBJ_QP, "QP")?;
    let all_qp_recs = cx.records("qp");
    let shown_qpns: Option<Vec<u32>> = qp_handles.iter().map(|h| uv.and_then(|i| i.obj_of_type(uverbs::OBJ_QP, *h)).and_then(|o| o.qpn)).collect();
    let (qp_recs, qpn_source): (Vec<&rxe::Record>, &str) = match &shown_qpns {
        Some(ns) => {
            let mut v = vec![];
            for (h, n) in qp_handles.iter().zip(ns) {
                v.push(*all_qp_recs.iter().find(|r| r.num("qpn") == Some(*n as u64)).ok_or_else(|| {
                    cx.unsupported(format!("QP handle {h} has QPN {n}, which {} does not list for the process on {}", rxe::CTL_DEV, cx.ibdev))
                })?);
            }
            (v, "ib_uverbs fdinfo")
        }
        None if !cx.others.is_empty() => {
            return Err(cx.unsupported(format!(
                "the process has more uverbs files (fds {:?}), and this ib_uverbs does not show the QPNs of its QPs (softroce patch 0014)",
                cx.others
            )))
        }
        None => (all_qp_recs.clone(), if qp_handles.len() == 1 { "only QP of the process" } else { "creation order" }),
    };
    if qp_recs.len() != qp_handles.len() {
        return Err(cx.unsupported(format!(
            "has {} QP handles but {} lists {} QPs of the process on {}; cannot tell their numbers",
            qp_handles.len(),
            rxe::CTL_DEV,
            qp_recs.len(),
            cx.ibdev
        )));
    }
    // The rings of the process's other uverbs files are not this file's.
    let foreign: Vec<u64> = all_qp_recs
        .iter()
        .filter(|r| !qp_recs.iter().any(|m| m.num("qpn") == r.num("qpn")))
        .flat_map(|r| ["sq_off", "rq_off", "scq_off", "rcq_off", "srq_off"].map(|k| r.num(k).map(|o| o / PAGE)))
        .flatten()
        .collect();
    Ok(Numbered { handles: qp_handles, recs: qp_recs, source: qpn_source, foreign })
}

/// What the dump learns of a QP before its CQs are known: its PD and SRQ, the page offsets of
/// its rings, and whether it is connected (its state then, as the status shows it).
pub struct Wiring {
    pub pd: u32,
    pub srq: Option<u32>,
    pub sq: u64,
    pub rq: u64,
    pub scq: u64,
    pub rcq: u64,
    pub connected: Option<String>,
}

/// The file's QPs (no links or driver image yet) and their [`Wiring`], in handle order. A QP on
/// an SRQ gives the SRQ its ring. Refuses QPs of other types or states, and rings the process
/// does not map (at none of `vmas`).
pub fn save(
    cx: &DumpCx,
    uv: Option<&UverbsInfo>,
    pds: &[Handle],
    srqs: &mut [Srq],
    numbered: &Numbered,
    vmas: &[Vma],
) -> Result<(Vec<Qp>, Vec<Wiring>), DumpError> {
    let unsupported = |why: String| cx.unsupported(why);
    let mut qps = vec![];
    let mut wiring = vec![];
    for (h, rec) in numbered.handles.iter().zip(&numbered.recs) {
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
            let shown = uv.and_then(|i| i.obj_of_type(uverbs::OBJ_QP, *h)).and_then(|o| o.srq);
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
            if !vmas.iter().any(|v| v.pgoff == r) {
                return Err(unsupported(format!("QP {qpn}: no mapping of {} at page offset {r:#x} in the process (a ring was unmapped or moved)", cx.path)));
            }
        }
        let pd = pd::of(cx, uv, pds, uverbs::OBJ_QP, *h, &format!("QP handle {h} (QPN {qpn})"))?;
        let attr = uverbs::query_qp(cx.fd, *h).map_err(DumpError::sys(format!("{}: query QP handle {h}", cx.who)))?;
        let port = if attr.port_num == 0 { 1 } else { attr.port_num };
        let (sgid, sgid_type) = if connected && qp_type == "rc" {
            let g =
                gid(&cx.ibdev, port, attr.sgid_index).map_err(DumpError::sys(format!("{}: read the source GID {} of QP {qpn}", cx.who, attr.sgid_index)))?;
            (Some(g.0), Some(g.1))
        } else {
            (None, None)
        };
        let ev = uv.and_then(|i| i.obj("qp", *h));
        if uv.is_some() && ev.is_none() {
            return Err(unsupported(format!("QP handle {h} (QPN {qpn}) is missing from the fdinfo of the uverbs file")));
        }
        wiring.push(Wiring { pd, srq, sq, rq, scq, rcq, connected: connected.then(|| ctl_state.to_uppercase()) });
        qps.push(Qp {
            handle: *h,
            qpn,
            qpn_source: numbered.source.into(),
            qp_type,
            attr,
            links: None,
            sgid,
            sgid_type,
            mig_image: None,
            user_handle: ev.map(|e| e.user_handle).unwrap_or(0),
            events_reported: ev.map(|e| e.events_reported).unwrap_or(0),
        });
    }
    Ok((qps, wiring))
}

/// Stops every connected QP (`RXE_CTL_IOC_QP_STOP`; their peers pause), calling `on_stopped`
/// with each QPN as soon as it is stopped. Returns `/dev/rxe_ctl` when it opened it.
pub fn stop(cx: &DumpCx, qps: &[Qp], wiring: &[Wiring], mut on_stopped: impl FnMut(u32)) -> Result<Option<Ctl>, DumpError> {
    let mut qctl: Option<Ctl> = None; // opened at the first connected QP
    for (i, _) in wiring.iter().enumerate().filter(|(_, w)| w.connected.is_some()) {
        let qpn = qps[i].qpn;
        if qctl.is_none() {
            qctl = Some(Ctl::open().map_err(DumpError::sys(format!("open {}", rxe::CTL_DEV)))?);
        }
        let c = qctl.as_ref().expect("opened just above");
        c.qp_stop(&cx.ibdev, qpn).map_err(|e| {
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) && qps[i].qp_type == "ud" {
                cx.unsupported(format!("UD QP {qpn} is past INIT, and this rdma_rxe cannot stop UD QPs (it lacks rdmig's softroce patch 0012)"))
            } else {
                DumpError::sys(format!("{}: stop QP {qpn} (RXE_CTL_IOC_QP_STOP)", cx.who))(e)
            }
        })?;
        on_stopped(qpn);
    }
    Ok(qctl)
}

/// Where the rings of a connected QP's CQs are in the driver images: several QPs may share
/// CQs (perftest `-q N` gives all its QPs one), and one image carrying a CQ's ring is enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CqRings {
    /// Neither CQ is in an earlier QP's image: this one carries both.
    Here,
    /// Both are in earlier QPs' images: this one may leave them out.
    Earlier,
    /// One of two distinct CQs is in an earlier image and the other is not. The driver restores
    /// both CQs of a QP or none, so this image carries both and the restore refuses it.
    Split,
}

/// Which rings each connected QP's driver image is to carry, in the order the dump takes the
/// images and the restore loads them (the image's QP order): a CQ's and an SRQ's ring go with
/// the first QP that uses them. Each item is a QP's send and receive CQ and its SRQ, by any key
/// that tells them apart (ring offsets at the dump, handles at the restore). Returns, for
/// each, how its CQ rings are carried and whether it carries its SRQ's ring.
pub fn shared_rings<C: PartialEq + Copy, S: PartialEq + Copy>(qps: impl IntoIterator<Item = ([C; 2], Option<S>)>) -> Vec<(CqRings, bool)> {
    let mut cqs_seen: Vec<C> = vec![];
    let mut srqs_seen: Vec<S> = vec![];
    qps.into_iter()
        .map(|(cqs, srq)| {
            let cq = match cqs.iter().filter(|c| cqs_seen.contains(c)).count() {
                0 => CqRings::Here,
                n if n == 2 || cqs[0] == cqs[1] => CqRings::Earlier,
                _ => CqRings::Split,
            };
            cqs_seen.extend(cqs);
            let carries_srq = match srq {
                Some(s) if !srqs_seen.contains(&s) => {
                    srqs_seen.push(s);
                    true
                }
                _ => false,
            };
            (cq, carries_srq)
        })
        .collect()
}

/// Set in CRIU's environment, every QP's image carries its CQ and SRQ rings, as before patch
/// 0036: for `experiments/shared-rings.sh`, which compares the two in one run.
pub const EVERY_RING_ENV: &str = "RDMIG_DUMP_EVERY_RING";

/// Appends the driver's state image of every connected (stopped) QP to `blob`. A QP whose CQs
/// (or SRQ) an earlier image carries leaves their rings out where the driver can (patch 0036):
/// with 64 QPs on one CQ of 1 MB the images were 64 MB, written and read inside the blackout.
pub fn save_driver_state(cx: &DumpCx, qps: &mut [Qp], wiring: &[Wiring], ctl: Option<&Ctl>, blob: &mut Vec<u8>) -> Result<(), DumpError> {
    let Some(c) = ctl else {
        debug_assert!(wiring.iter().all(|w| w.connected.is_none()), "a QP to dump was stopped through the ctl");
        return Ok(());
    };
    let leave_out = c.has_features(rxe::FEAT_QP_DUMP_SHARED) && std::env::var_os(EVERY_RING_ENV).is_none();
    let connected: Vec<(usize, &Wiring)> = wiring.iter().enumerate().filter(|(_, w)| w.connected.is_some()).collect();
    let rings = shared_rings(connected.iter().map(|(_, w)| ([w.scq, w.rcq], w.srq)));
    for ((i, w), (cq, carries_srq)) in connected.into_iter().zip(rings) {
        let state = w.connected.as_deref().unwrap_or_default();
        let qpn = qps[i].qpn;
        let mut flags = 0;
        if leave_out && cq == CqRings::Earlier {
            flags |= rxe::QP_F_NO_CQ;
        }
        if leave_out && w.srq.is_some() && !carries_srq {
            flags |= rxe::QP_F_NO_SRQ;
        }
        let img = c.qp_dump(&cx.ibdev, qpn, flags).map_err(DumpError::sys(format!("{}: dump QP {qpn} (RXE_CTL_IOC_QP_DUMP)", cx.who)))?;
        qps[i].mig_image = Some(BlobRef { offset: blob.len() as u64, len: img.len() as u64 });
        blob.extend_from_slice(&img);
        let left_out = match flags {
            0 => "",
            f if f == rxe::QP_F_NO_CQ => ", its CQs' rings in an earlier QP's",
            f if f == rxe::QP_F_NO_SRQ => ", its SRQ's ring in an earlier QP's",
            _ => ", its CQs' and SRQ's rings in an earlier QP's",
        };
        info!("{}: stopped QP {qpn} ({state}) and saved its driver state ({} bytes{left_out})", cx.who, img.len());
    }
    Ok(())
}

/// The page offsets of the QPs' send and receive queues (an SRQ's ring for a QP on an SRQ).
pub fn queue_rings(wiring: &[Wiring]) -> Vec<u64> {
    wiring.iter().flat_map(|w| [w.sq, w.rq]).collect()
}

/// The page offsets of the rings the QPs' driver images carry (queues and CQs of connected QPs).
pub fn carried_rings(qps: &[Qp], wiring: &[Wiring]) -> Vec<u64> {
    qps.iter().zip(wiring).filter(|(q, _)| q.mig_image.is_some()).flat_map(|(_, w)| [w.sq, w.rq, w.scq, w.rcq]).collect()
}

/// Gives each QP its links (PD, CQs, rings, SRQ), its CQs found by their rings among `cqs`.
/// Refuses a QP whose CQs ib_uverbs names otherwise, and an unconnected QP that consumed work
/// requests of a ring no driver image carries (copied back as saved, the ring would be wrong).
pub fn link(
    cx: &DumpCx,
    uv: Option<&UverbsInfo>,
    qps: &mut [Qp],
    wiring: &[Wiring],
    cqs: &[Cq],
    carried: &[u64],
    saved: &rings::Saved,
) -> Result<(), DumpError> {
    for (q, w) in qps.iter_mut().zip(wiring) {
        let cq_of = |o: &u64| cqs.iter().find(|c| c.pgoff == Some(*o)).map(|c| c.handle);
        let (Some(send_cq), Some(recv_cq)) = (cq_of(&w.scq), cq_of(&w.rcq)) else {
            return Err(cx.unsupported(format!("QP {}: its CQ rings are not among the process's CQ mappings", q.qpn)));
        };
        // The CQ handles were paired with their rings by creation order; where ib_uverbs names
        // the QP's CQs (patch 0011), they must agree.
        if let Some(o) = uv.and_then(|u| u.obj_of_type(uverbs::OBJ_QP, q.handle)) {
            for (what, shown, paired) in [("send", o.send_cq, send_cq), ("receive", o.recv_cq, recv_cq)] {
                if let Some(Link::Handle(s)) = shown {
                    if s != paired {
                        return Err(cx.unsupported(format!(
                            "QP {}: its {what} CQ is handle {s}, but its ring is the one paired with CQ handle {paired}; cannot tell the CQs' rings apart",
                            q.qpn
                        )));
                    }
                }
            }
        }
        q.links = Some(QpLinks { pd: w.pd, send_cq, recv_cq, sq_pgoff: w.sq, rq_pgoff: w.rq, srq: w.srq });
        if q.mig_image.is_none() {
            for (o, what) in [(&w.sq, "send queue"), (&w.rq, "receive queue")] {
                if !carried.contains(o) && saved.word(*o, rings::RING_CONSUMER) != Some(0) {
                    return Err(cx.unsupported(format!(
                        "QP {} ({}) has consumed work requests of its {what} before being connected; its ring cannot be restored",
                        q.qpn,
                        image::qp_state_name(q.attr.state)
                    )));
                }
            }
        }
    }
    Ok(())
}

// ---- image checks ----

/// Each QP was saved with its links.
pub fn check_image_links(c: &Context) -> Result<(), String> {
    if let Some(q) = c.qps.iter().find(|q| q.links.is_none()) {
        return Err(format!("QP {} was saved without its CQ and ring links (image of an older plugin)", q.qpn));
    }
    Ok(())
}

/// Each QP's SRQ and PD are the image's.
pub fn check_image_refs(c: &Context) -> Result<(), String> {
    let is_pd = |h: u32| c.pds.iter().any(|p| p.handle == h);
    if let Some(q) = c.qps.iter().find(|q| q.links.and_then(|l| l.srq).is_some_and(|s| !c.srqs.iter().any(|x| x.handle == s))) {
        return Err(format!("QP {} uses an SRQ the image does not hold", q.qpn));
    }
    if let Some(q) = c.qps.iter().find(|q| q.links.is_some_and(|l| !is_pd(l.pd))) {
        return Err(format!("QP {} uses PD handle {}, which the image does not hold", q.qpn, q.links.map(|l| l.pd).unwrap_or(0)));
    }
    Ok(())
}

/// Each QP's type, number, CQs and attributes are ones the restore can give it: the type and
/// state pick what the restore does, the rest goes to CREATE_QP and MODIFY_QP.
pub fn check_image_values(c: &Context) -> Result<(), String> {
    for q in &c.qps {
        let what = |f: &str| format!("QP {}: {f}", q.qpn);
        let rc = match q.qp_type.as_str() {
            "rc" => true,
            "ud" => false,
            t => return Err(format!("{} {:?} is not rc or ud", what("qp_type"), t.chars().take(80).collect::<String>())),
        };
        limits::range(&format!("QP handle {}: qpn", q.handle), q.qpn, 2, limits::MAX_24BIT)?;
        if let Some(l) = q.links {
            for (f, h) in [("send_cq", l.send_cq), ("recv_cq", l.recv_cq)] {
                if !c.cqs.iter().any(|x| x.handle == h) {
                    return Err(format!("{} is handle {h}, which is not a CQ of the image", what(f)));
                }
            }
        }
        let a = &q.attr;
        let r = |f: &str, v: u32, hi: u32| limits::range(&what(f), v, 0, hi);
        r("state", a.state.into(), 3)?;
        if rc && a.state >= 2 {
            limits::range(&what("path_mtu"), a.path_mtu, 1, 5)?;
            if q.sgid.as_deref().and_then(rxe::parse_gid).is_none() {
                return Err(format!("{} {:?} is not a GID", what("sgid"), q.sgid.as_deref().unwrap_or("").chars().take(80).collect::<String>()));
            }
        }
        limits::gid_type(&what("sgid_type"), q.sgid_type.as_deref().unwrap_or(""))?;
        r("port_num", a.port_num.into(), 1)?;
        r("dest_qp_num", a.dest_qp_num, limits::MAX_24BIT)?;
        r("rq_psn", a.rq_psn, limits::MAX_24BIT)?;
        r("sq_psn", a.sq_psn, limits::MAX_24BIT)?;
        limits::access(&what("access_flags"), a.access_flags)?;
        r("pkey_index", a.pkey_index.into(), 63)?;
        r("max_send_wr", a.max_send_wr, limits::MAX_WR)?;
        r("max_recv_wr", a.max_recv_wr, limits::MAX_WR)?;
        r("max_send_sge", a.max_send_sge, limits::MAX_SGE)?;
        r("max_recv_sge", a.max_recv_sge, limits::MAX_SGE)?;
        r("max_inline_data", a.max_inline_data, limits::MAX_INLINE)?;
        r("timeout", a.timeout.into(), 31)?;
        r("retry_cnt", a.retry_cnt.into(), 7)?;
        r("rnr_retry", a.rnr_retry.into(), 7)?;
        r("min_rnr_timer", a.min_rnr_timer.into(), 31)?;
        r("sq_sig_all", a.sq_sig_all.into(), 1)?;
        r("sl", a.sl.into(), 15)?;
        r("flow_label", a.flow_label, limits::MAX_FLOW_LABEL)?;
    }
    Ok(())
}

// ---- restore ----

/// Creates QP `q` and records where its new send queue (and receive queue, without an SRQ) is;
/// returns its handle.
pub fn create(cx: &RestoreCx, q: &Qp, rings: &mut NewRings) -> Result<u32, RestoreError> {
    let (h, r) = create_qp(cx, q)?;
    let links = q.links.expect("checked");
    rings.add(&format!("QP {} send queue", q.qpn), links.sq_pgoff, &r.sq_mi)?;
    if links.srq.is_none() {
        rings.add(&format!("QP {} receive queue", q.qpn), links.rq_pgoff, &r.rq_mi)?;
    }
    Ok(h)
}

/// Whether this node's rdma_rxe creates a QP stopped when asked (`RXE_CTL_F_STOPPED`, softroce
/// patch 0037).
pub fn stopped_supported(ctl: &Ctl) -> bool {
    ctl.has_features(rxe::FEAT_QP_STOPPED)
}

/// Creates QP `q` with its old number (EXPECT) on its PD, CQs and SRQ, and moves it through its
/// states with its old attributes up to the one it had; returns its handle and the driver's answer.
fn create_qp(cx: &RestoreCx, q: &Qp) -> Result<(u32, cmd::CreateQpResp), RestoreError> {
    let (fd, ctl, ibdev) = (cx.fd, cx.ctl, cx.c.ibdev.as_str());
    let links = q.links.expect("checked");
    let a = &q.attr;
    let qp_type = match q.qp_type.as_str() {
        "rc" => 2,
        "ud" => 4,
        t => return Err(RestoreError::Refused(format!("QP {} is of type {t}", q.qpn))),
    };
    // A connected RC QP starts stopped where the driver can (patch 0037): its peer may have
    // missed the PAUSE and retransmit into it before its state is loaded, and acted on, such a
    // request would break the restore (a fresh responder, MRs not in place: the error state).
    let stopped = cx.stopped_qps && q.mig_image.is_some() && qp_type == 2;
    if stopped {
        ctl.expect_stopped_qp(0, q.qpn, ibdev).map_err(RestoreError::sys(format!("EXPECT QPN {} (stopped)", q.qpn)))?;
    } else {
        ctl.expect(rxe::Obj::Qp, 0, q.qpn, None, ibdev, false).map_err(RestoreError::sys(format!("EXPECT QPN {}", q.qpn)))?;
    }
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

/// Loads the driver state image of every connected QP (QP_RESTORE: queues, PSNs, responder
/// resources); CQs and SRQs shared by several QPs are loaded once. The QPs stay stopped.
pub fn load_driver_state(cx: &RestoreCx) -> Result<(), RestoreError> {
    let loaded: Vec<(&Qp, BlobRef, QpLinks)> = cx.c.qps.iter().filter_map(|q| Some((q, q.mig_image?, q.links?))).collect();
    let rings = shared_rings(loaded.iter().map(|(_, _, l)| ([l.send_cq, l.recv_cq], l.srq)));
    for ((q, m, _), (cq, carries_srq)) in loaded.into_iter().zip(rings) {
        let img = blob_range(cx.blob, m.offset, m.len).ok_or_else(|| RestoreError::Refused(format!("QP {}: its state image is not within the blob", q.qpn)))?;
        let mut flags = match cq {
            CqRings::Here => rxe::QP_F_CQ,
            CqRings::Earlier => 0,
            CqRings::Split => {
                return Err(RestoreError::Refused(format!(
                    "QP {} shares one of its two CQs with an earlier QP; the driver restores both CQs of a QP or none",
                    q.qpn
                )))
            }
        };
        if carries_srq {
            flags |= rxe::QP_F_SRQ;
        }
        cx.ctl.qp_restore(&cx.c.ibdev, q.qpn, img, flags).map_err(RestoreError::sys(format!("QP_RESTORE of QP {}", q.qpn)))?;
    }
    Ok(())
}

/// Bytes `offset..offset+len` of `blob`, if they are all in it.
pub fn blob_range(blob: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    blob.get(start..start.checked_add(usize::try_from(len).ok()?)?)
}

/// The page offsets of the rings the QPs' driver images in context `c` carry (queues and CQs of
/// connected QPs): the dump checked that the others can be copied back as saved.
pub fn carried_rings_of(c: &Context) -> Vec<u64> {
    c.qps
        .iter()
        .filter(|q| q.mig_image.is_some())
        .filter_map(|q| q.links)
        .flat_map(|k| {
            let cq = |h: u32| c.cqs.iter().find(|x| x.handle == h).and_then(|x| x.pgoff).unwrap_or(u64::MAX);
            [k.sq_pgoff, k.rq_pgoff, cq(k.send_cq), cq(k.recv_cq)]
        })
        .collect()
}

/// Resumes the connected QPs of context `c` (`RXE_CTL_IOC_QP_RESUME`: they tell their peers,
/// which were paused, where they are now); returns how many.
pub fn resume(ctl: &Ctl, c: &Context, who: &str) -> Result<usize, RestoreError> {
    let mut n = 0;
    for q in c.qps.iter().filter(|q| q.mig_image.is_some()) {
        ctl.qp_resume(&c.ibdev, q.qpn, 0).map_err(RestoreError::sys(format!("{who}: resume QP {} (RXE_CTL_IOC_QP_RESUME)", q.qpn)))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_qp_of_a_cq_or_srq_carries_its_ring() {
        // perftest -q 3: three QPs, one CQ for sending and receiving, no SRQ
        let one_cq = shared_rings([([7u64, 7], None::<u32>); 3]);
        assert_eq!(one_cq, vec![(CqRings::Here, false), (CqRings::Earlier, false), (CqRings::Earlier, false)]);
        // two QPs on their own CQ pairs, a third on the first pair, all on SRQ 5
        let pairs = shared_rings([([1u32, 2], Some(5u32)), ([3, 4], Some(5)), ([1, 2], Some(5))]);
        assert_eq!(pairs, vec![(CqRings::Here, true), (CqRings::Here, false), (CqRings::Earlier, false)]);
        // the same rings, the other way round: a QP whose receive CQ is another's send CQ
        assert_eq!(shared_rings([([1u32, 2], None::<u32>), ([2, 1], None)])[1].0, CqRings::Earlier);
        // one CQ carried and one not: carried whole, which the restore refuses
        assert_eq!(shared_rings([([1u32, 2], None::<u32>), ([2, 3], None)])[1].0, CqRings::Split);
        assert!(shared_rings(std::iter::empty::<([u32; 2], Option<u32>)>()).is_empty());
    }
}
