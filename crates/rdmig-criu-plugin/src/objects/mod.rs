//! One module per kind of verbs object, each with its save side (dump: read the object from the
//! device, `/dev/rxe_ctl`'s status and ib_uverbs' fdinfo, refuse what cannot come back) next to
//! its restore side (recreate it on the new uverbs file with its old handle, number and keys,
//! and finish it once the process's memory is final). [`crate::dump`] and [`crate::restore`]
//! only order these steps.
//!
//! - [`pd`], [`cq`], [`mr`], [`mw`], [`ah`], [`srq`], [`qp`]: the objects with uverbs handles;
//! - [`events`]: completion channels, the async event file, event counters and queued events;
//! - [`rings`]: the queue mappings (CQ, SQ, RQ and SRQ rings) the process shares with rxe.
//!
//! Here: what both sides hand the object modules ([`DumpCx`], [`RestoreCx`]), the object kinds
//! the plugin refuses, and the check that an image holds only what the restore can rebuild.

pub mod ah;
pub mod cq;
pub mod events;
pub mod limits;
pub mod mr;
pub mod mw;
pub mod pd;
pub mod qp;
pub mod rings;
pub mod srq;

use std::fs;
use std::os::fd::RawFd;

use crate::common::DumpError;
use crate::fdinfo::{self, UverbsInfo};
use crate::image::{Context, FileKind, Loaded};
use crate::log::debug;
use crate::procfs;
use crate::rxe::{self, Ctl};
use crate::uverbs;

/// The uverbs file being dumped, as every object's save side sees it.
pub struct DumpCx {
    /// CRIU's copy of the uverbs file (same `struct file`, so the same handles).
    pub fd: RawFd,
    /// The process holding the file, and its fd number there.
    pub pid: i32,
    pub pfd: i32,
    /// `/dev/infiniband/uverbsN`, and the rxe device behind it.
    pub path: String,
    pub ibdev: String,
    /// What every message starts with: process, command, path and fd.
    pub who: String,
    /// `/dev/rxe_ctl`'s status (numbers, keys and rings of the objects, by creating pid).
    pub status: Vec<rxe::Record>,
    /// The process's fds of other uverbs files.
    pub others: Vec<i32>,
}

impl DumpCx {
    /// Claims uverbs file `fd` (CRIU file id `id`, char device `major:minor`): finds the process
    /// holding it and its rxe device, and reads the driver's status, refusing a device that is
    /// not rdmig's rdma_rxe.
    pub fn claim(fd: RawFd, id: u32, major: u32, minor: u32) -> Result<DumpCx, DumpError> {
        let (pid, pfd) = procfs::owner(fd, &format!("uverbs file {major}:{minor} (file id {id})"))?;
        let path = fs::read_link(format!("/proc/self/fd/{fd}")).map_err(DumpError::sys("readlink of the uverbs fd"))?;
        let path = path.display().to_string();
        let who = format!("process {pid} ({}), {path} fd {pfd}", procfs::comm(pid));
        let unsupported = |why: String| DumpError::Unsupported(format!("{who}: {why}"));

        // One verbs context per process: the status names objects by process, not by file.
        let others = procfs::other_uverbs_fds(pid, pfd)?;

        let ibdev = procfs::ibdev_of(&path)?;
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
        Ok(DumpCx { fd, pid, pfd, path, ibdev, who, status, others })
    }

    /// A refusal: `why` this file cannot be saved.
    pub fn unsupported(&self, why: String) -> DumpError {
        DumpError::Unsupported(format!("{}: {why}", self.who))
    }

    /// The handles of the file's objects of uverbs type `obj` (UVERBS_METHOD_INFO_HANDLES).
    pub fn handles(&self, obj: u16, name: &str) -> Result<Vec<u32>, DumpError> {
        uverbs::info_handles(self.fd, obj).map_err(DumpError::sys(format!("{}: list the {name} handles (UVERBS_METHOD_INFO_HANDLES)", self.who)))
    }

    /// The status records of `kind` (`qp`, `mr`, `mw`, `ah`) of the process on the device.
    pub fn records(&self, kind: &str) -> Vec<&rxe::Record> {
        rxe::status::owned(&self.status, kind, self.pid, &self.ibdev)
    }

    /// The file's state in the fdinfo of rdmig's ib_uverbs (user handles, event counters, which
    /// CQ uses which channel, each object's PD and QPN, the file's token); `None` from a stock
    /// ib_uverbs. With more uverbs files in the process, which objects and event files are this
    /// file's only that fdinfo says: refused without it.
    pub fn read_fdinfo(&self) -> Result<Option<UverbsInfo>, DumpError> {
        let text = fdinfo::read(0, self.fd).map_err(DumpError::sys(format!("{}: read the fdinfo of the uverbs file", self.who)))?;
        let uvinfo = fdinfo::parse_uverbs(&text).map_err(|e| self.unsupported(format!("fdinfo of the uverbs file: {e}")))?;
        if !self.others.is_empty() && uvinfo.as_ref().and_then(|i| i.file.as_ref()).is_none() {
            return Err(self.unsupported(format!(
                "the process has more uverbs files (fds {:?}); telling their objects and event files apart needs \
                 rdmig's ib_uverbs with softroce patch 0014",
                self.others
            )));
        }
        Ok(uvinfo)
    }
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

/// Refuses a file holding objects of a kind this plugin does not save. A type the device does
/// not implement at all answers EINVAL/EOPNOTSUPP: then it holds none of them.
pub fn refuse_unsupported_kinds(cx: &DumpCx) -> Result<(), DumpError> {
    for (obj, name) in UNSUPPORTED_TYPES {
        let h = match uverbs::info_handles(cx.fd, *obj) {
            Ok(h) => h,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOMSG | libc::ENOENT)) => {
                debug!("{}: {name} objects: {e}: the device has no such type", cx.who);
                vec![]
            }
            Err(e) => return Err(DumpError::sys(format!("{}: list the {name} handles (UVERBS_METHOD_INFO_HANDLES)", cx.who))(e)),
        };
        if !h.is_empty() {
            return Err(cx.unsupported(format!("holds {} {name} object(s) (handles {h:?}), which this plugin cannot save", h.len())));
        }
    }
    Ok(())
}

/// The new uverbs file a saved context is rebuilt on, as every object's restore side sees it.
pub struct RestoreCx<'a> {
    /// The new uverbs file (objects are created with its write() commands).
    pub fd: RawFd,
    /// `/dev/rxe_ctl`, for EXPECT (old numbers and keys) and the QP state images.
    pub ctl: &'a Ctl,
    /// The saved context, and its image's blob (QP state images, ring contents).
    pub c: &'a Context,
    pub blob: &'a [u8],
    /// The driver registers MRs without pages until MR_REPIN (softroce patch 0034), so they
    /// need no placeholder pages.
    pub hollow_mrs: bool,
    /// The driver creates a QP stopped when asked (softroce patch 0037): connected QPs are.
    pub stopped_qps: bool,
}

/// Checks, before anything of it is used, that context image `l` holds only values the restore
/// can use: first the counts, handles and places in the blob that bound everything after them
/// ([`limits::check_context`]), then each object's fields ([`check_restorable`]).
pub fn check_image(l: &Loaded) -> Result<(), String> {
    let FileKind::Context(c) = &l.image.kind else { return Err("not a verbs context image".into()) };
    limits::check_context(&l.image, c, l.blob.len() as u64)?;
    check_restorable(c)
}

/// Checks that an image holds only what the restore can recreate (images of older plugins or
/// of a stock ib_uverbs can lack what is needed), with values in range. Call it only on a
/// context that passed [`limits::check_context`]: its checks compare objects pairwise.
pub fn check_restorable(c: &Context) -> Result<(), String> {
    qp::check_image_values(c)?;
    mw::check_image(c)?;
    ah::check_image(c)?;
    events::check_image(c)?;
    qp::check_image_links(c)?;
    mr::check_image_pds(c)?;
    srq::check_image(c)?;
    qp::check_image_refs(c)?;
    cq::check_image(c)?;
    rings::check_contents(c)?;
    mr::check_image_access(c)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::{AsyncEvent, Channel, Cq, Handle, Mr, Qp, QpLinks, Srq};

    /// A small context that passes every check: a PD, a CQ, an MR and a connected RC QP.
    pub(crate) fn ctx() -> Context {
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
                qp_type: "rc".into(),
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
        let av = crate::image::AhAv { port: 1, sgid: "fe80:0000:0000:0000:5054:00ff:fe12:3401".into(), hop_limit: 64, ..Default::default() };
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
        assert_eq!(mr::pd_of(&c, &c.mrs[0]), Some(0), "an older image with one PD");
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

    /// Each field the restore hands to the kernel or branches on is refused out of range, with
    /// its name in the error.
    #[test]
    fn out_of_range_values_are_refused_naming_the_field() {
        let refused = |f: &dyn Fn(&mut Context), want: &str| {
            let mut c = ctx();
            f(&mut c);
            let e = check_restorable(&c).expect_err(want);
            assert!(e.contains(want), "wanted {want:?} in {e:?}");
        };
        // QPs.
        refused(&|c| c.qps[0].qp_type = "xrc".into(), "QP 17: qp_type \"xrc\" is not rc or ud");
        refused(&|c| c.qps[0].qpn = 1, "QP handle 3: qpn is 1");
        refused(&|c| c.qps[0].qpn = 1 << 24, "qpn is 16777216, out of range");
        refused(&|c| c.qps[0].links.as_mut().unwrap().send_cq = 9, "QP 17: send_cq is handle 9, which is not a CQ");
        refused(&|c| c.qps[0].links.as_mut().unwrap().recv_cq = 0, "QP 17: recv_cq is handle 0");
        refused(&|c| c.qps[0].attr.state = 6, "QP 17: state is 6");
        refused(&|c| c.qps[0].attr.state = 255, "QP 17: state is 255");
        refused(
            &|c| {
                c.qps[0].attr.state = 3;
                c.qps[0].attr.path_mtu = 5;
                c.qps[0].sgid = Some("../../x".into());
            },
            "QP 17: sgid \"../../x\" is not a GID",
        );
        refused(
            &|c| {
                c.qps[0].attr.state = 2;
                c.qps[0].attr.path_mtu = 9;
            },
            "QP 17: path_mtu is 9",
        );
        refused(&|c| c.qps[0].sgid_type = Some("x\ny".into()), "QP 17: sgid_type");
        refused(&|c| c.qps[0].attr.port_num = 2, "QP 17: port_num is 2");
        refused(&|c| c.qps[0].attr.dest_qp_num = u32::MAX, "QP 17: dest_qp_num");
        refused(&|c| c.qps[0].attr.rq_psn = 1 << 24, "QP 17: rq_psn");
        refused(&|c| c.qps[0].attr.sq_psn = 1 << 24, "QP 17: sq_psn");
        refused(&|c| c.qps[0].attr.access_flags = 1 << 31, "QP 17: access_flags 0x80000000 has unknown bits");
        refused(&|c| c.qps[0].attr.pkey_index = 64, "QP 17: pkey_index");
        refused(&|c| c.qps[0].attr.max_send_wr = u32::MAX, "QP 17: max_send_wr");
        refused(&|c| c.qps[0].attr.max_recv_wr = limits::MAX_WR + 1, "QP 17: max_recv_wr");
        refused(&|c| c.qps[0].attr.max_send_sge = 33, "QP 17: max_send_sge");
        refused(&|c| c.qps[0].attr.max_recv_sge = 33, "QP 17: max_recv_sge");
        refused(&|c| c.qps[0].attr.max_inline_data = u32::MAX, "QP 17: max_inline_data");
        refused(&|c| c.qps[0].attr.timeout = 32, "QP 17: timeout");
        refused(&|c| c.qps[0].attr.retry_cnt = 8, "QP 17: retry_cnt");
        refused(&|c| c.qps[0].attr.rnr_retry = 8, "QP 17: rnr_retry");
        refused(&|c| c.qps[0].attr.min_rnr_timer = 32, "QP 17: min_rnr_timer");
        refused(&|c| c.qps[0].attr.sq_sig_all = 2, "QP 17: sq_sig_all");
        refused(&|c| c.qps[0].attr.sl = 16, "QP 17: sl");
        refused(&|c| c.qps[0].attr.flow_label = 1 << 20, "QP 17: flow_label");
        let mut c = ctx();
        c.qps[0].attr = crate::image::QpAttr { state: 3, path_mtu: 5, max_send_wr: 256, max_send_sge: 1, timeout: 14, retry_cnt: 7, ..Default::default() };
        c.qps[0].sgid = Some("fe80:0000:0000:0000:5054:00ff:fe12:3401".into());
        c.qps[0].sgid_type = Some("RoCE v2".into());
        assert_eq!(check_restorable(&c), Ok(()), "a connected RC QP");
        // CQs.
        refused(&|c| c.cqs[0].cqe = Some(0), "CQ handle 2: cqe is 0");
        refused(&|c| c.cqs[0].cqe = Some(u32::MAX), "CQ handle 2: cqe is 4294967295");
        // SRQs.
        let srq = Srq { handle: 9, pd: Some(0), pgoff: Some(0x40), max_wr: 255, max_sge: 1, ..Default::default() };
        let with_srq = |f: fn(&mut Srq)| {
            let s = srq.clone();
            move |c: &mut Context| {
                c.srqs.push(s.clone());
                f(&mut c.srqs[0]);
            }
        };
        refused(&with_srq(|s| s.max_wr = u32::MAX), "SRQ handle 9: max_wr");
        refused(&with_srq(|s| s.max_sge = 0), "SRQ handle 9: max_sge is 0");
        refused(&with_srq(|s| s.max_sge = 1000), "SRQ handle 9: max_sge is 1000");
        refused(&with_srq(|s| s.srq_limit = 256), "SRQ handle 9: srq_limit is 256");
        // MRs.
        refused(&|c| c.mrs[0].access = Some(0x8000_0000), "MR lkey 0x105: access 0x80000000 has unknown bits");
        refused(&|c| c.mrs[0].length = 0, "MR lkey 0x105: length is 0");
        refused(&|c| c.mrs[0].length = u64::MAX, "MR lkey 0x105: iova 0x7000 + 0xffffffffffffffff bytes is beyond user space");
        refused(&|c| c.mrs[0].iova = limits::USER_VA_END, "MR lkey 0x105: iova");
        refused(
            &|c| {
                c.mrs[0].lkey = 0x05;
                c.mrs[0].rkey = 0x05;
            },
            "MR lkey 0x5: lkey has index 0",
        );
        let mut c = ctx();
        assert_eq!(mr::check_pinnable(&c, 1 << 30), Ok(()));
        c.mrs[0].length = 1 << 40;
        assert!(mr::check_pinnable(&c, 1 << 30).unwrap_err().contains("more than this node's memory"));
        // MWs.
        let bound = crate::image::MwBinding { mr_index: 1, addr: 0x7000, length: 4096, access: 2, qpn: None };
        let mw = crate::image::Mw { handle: 9, rkey: Some(0x80_0105), mw_type: 1, pd: Some(0), binding: Some(bound) };
        let with_mw = |f: fn(&mut crate::image::MwBinding)| {
            let w = mw.clone();
            move |c: &mut Context| {
                c.mws.push(w.clone());
                f(c.mws[0].binding.as_mut().unwrap());
            }
        };
        refused(&with_mw(|b| b.access = 1 << 12), "MW handle 9: binding access 0x1000 has unknown bits");
        refused(&with_mw(|b| b.length = u64::MAX), "MW handle 9: binding addr");
        refused(&with_mw(|b| b.qpn = Some(u32::MAX)), "MW handle 9: binding qpn");
        refused(
            &|c| {
                c.mws.push(crate::image::Mw { mw_type: 3, ..mw.clone() });
            },
            "MW handle 9 was saved without its rkey, type or PD",
        );
        // AHs.
        let av = crate::image::AhAv { port: 1, sgid: "fe80:0000:0000:0000:5054:00ff:fe12:3401".into(), sgid_type: "RoCE v2".into(), ..Default::default() };
        let ah = crate::image::Ah { handle: 9, ah_num: Some(3), pd: Some(0), user_handle: 0, av: Some(av) };
        let with_ah = |f: fn(&mut crate::image::Ah)| {
            let a = ah.clone();
            move |c: &mut Context| {
                c.ahs.push(a.clone());
                f(&mut c.ahs[0]);
            }
        };
        refused(&with_ah(|a| a.ah_num = Some(0)), "AH handle 9: ah_num is 0");
        refused(&with_ah(|a| a.av.as_mut().unwrap().port = 2), "AH handle 9: port is 2");
        refused(&with_ah(|a| a.av.as_mut().unwrap().port = 0), "AH handle 9: port is 0");
        refused(&with_ah(|a| a.av.as_mut().unwrap().flow_label = u32::MAX), "AH handle 9: flow_label");
        refused(&with_ah(|a| a.av.as_mut().unwrap().sgid = "fe80::1".into()), "AH handle 9: sgid \"fe80::1\" is not a GID");
        refused(&with_ah(|a| a.av.as_mut().unwrap().sgid_type = "x".repeat(100)), "AH handle 9: sgid_type");
        // Completion channels and queued events.
        let refused_ch = |f: &dyn Fn(&mut Context), want: &str| {
            refused(
                &|c| {
                    *c = ctx_with_channel();
                    f(c)
                },
                want,
            )
        };
        refused_ch(&|c| c.channels[0].fd = -5, "completion channel 00000000a1b2c3d4 is fd -5");
        refused_ch(&|c| c.channels[0].fd = i32::MAX, "is fd 2147483647");
        refused_ch(
            &|c| {
                c.channels[0].token = "zz/..".into();
                c.cqs[0].channel = Some("zz/..".into());
            },
            "completion channel token \"zz/..\" is not a token",
        );
        refused_ch(
            &|c| {
                c.comp_channels = 2;
                c.channels.push(c.channels[0].clone());
            },
            "two channels have this token or fd",
        );
        refused_ch(&|c| c.async_pending = vec![AsyncEvent { event_type: 20, element: 1, object: 0, handle: None }], "queued async event: event_type is 20");
    }

    #[test]
    fn an_event_file_image_is_not_a_context() {
        let e = crate::image::EventFile { context_id: Some(1), role: "async".into(), role_source: "x".into(), flags: 0, channel: None, file_token: None };
        let l = Loaded {
            path: "x".into(),
            version: crate::image::FORMAT_VERSION,
            image: crate::image::FileImage { id: 2, pid: 42, fd: 4, ns_pid: None, kind: FileKind::EventFile(e) },
            blob: vec![],
        };
        assert_eq!(check_image(&l), Err("not a verbs context image".into()));
    }

    /// A context with one object of every kind (a hole at handle 6 for a filler), connected,
    /// that passes every check: the image the fuzz target `image_decode` starts from
    /// (fuzz/corpus/image_decode/context.img; `RDMIG_WRITE_FUZZ_SEEDS=1 cargo test` rewrites it).
    #[test]
    fn fuzz_seed_image_is_current() {
        use crate::common::PAGE;
        use crate::image::{AhAv, BlobRef, FileImage, Mw, MwBinding, QpAttr, QueueVma};
        let mut c = ctx_with_channel();
        c.cqs[0].handle = 1;
        c.channels[0].pending = vec![1];
        c.mrs[0].handle = 2;
        c.srqs = vec![Srq { handle: 4, pd: Some(0), pgoff: Some(0x40), max_wr: 255, max_sge: 1, srq_limit: 16, user_handle: 0x55d0_0400, events_reported: 1 }];
        let gid = "fe80:0000:0000:0000:5054:00ff:fe12:3401";
        c.qps[0] = Qp {
            handle: 3,
            qpn: 17,
            qpn_source: "ib_uverbs fdinfo".into(),
            qp_type: "rc".into(),
            attr: QpAttr {
                state: 3,
                path_mtu: 5,
                max_send_wr: 255,
                max_send_sge: 1,
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                rq_psn: 0x1234,
                sq_psn: 0x5678,
                dest_qp_num: 18,
                ..Default::default()
            },
            links: Some(QpLinks { pd: 0, send_cq: 1, recv_cq: 1, sq_pgoff: 0x20, rq_pgoff: 0x40, srq: Some(4) }),
            sgid: Some(gid.into()),
            sgid_type: Some("RoCE v2".into()),
            mig_image: Some(BlobRef { offset: 3 * PAGE, len: 64 }),
            user_handle: 0x55d0_0300,
            events_reported: 0,
        };
        c.mws = vec![Mw {
            handle: 5,
            rkey: Some(0x80_0105),
            mw_type: 1,
            pd: Some(0),
            binding: Some(MwBinding { mr_index: 1, addr: 0x7000, length: 4096, access: 2, qpn: None }),
        }];
        c.ahs = vec![crate::image::Ah {
            handle: 7,
            ah_num: Some(1),
            pd: Some(0),
            user_handle: 0x55d0_0700,
            av: Some(AhAv { port: 1, sgid: gid.into(), sgid_type: "RoCE v2".into(), dgid: [0xfe; 16], flow_label: 0, hop_limit: 64, traffic_class: 0 }),
        }];
        c.async_pending = vec![AsyncEvent { event_type: 15, element: 0x55d0_0400, object: uverbs::OBJ_SRQ as u32, handle: Some(4) }];
        c.queues = [0x10, 0x20, 0x40]
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let start = 0x7f00_0000_0000 + i as u64 * PAGE;
                QueueVma { start, end: start + PAGE, pgoff: *o, prot: "rw-s".into(), blob_offset: i as u64 * PAGE, len: PAGE, contents: Default::default() }
            })
            .collect();
        c.file_token = Some("00000000feedf00d".into());
        let mut blob = vec![0u8; 3 * PAGE as usize + 64];
        blob[4..8].copy_from_slice(&255u32.to_ne_bytes()); // the CQ ring's index mask
        let img = FileImage { id: 7, pid: 4242, fd: 3, ns_pid: None, kind: crate::image::FileKind::Context(Box::new(c)) };
        let bytes = crate::image::encode(&img, &blob);
        let l = crate::image::decode(std::path::Path::new("seed"), &bytes).unwrap();
        assert_eq!(check_image(&l), Ok(()));
        // And the image of its completion channel's event file.
        let ev = crate::image::EventFile {
            context_id: Some(7),
            role: "comp_channel".into(),
            role_source: "rdmig ib_uverbs fdinfo".into(),
            flags: 0o4002,
            channel: Some("00000000a1b2c3d4".into()),
            file_token: Some("00000000feedf00d".into()),
        };
        let ev = crate::image::encode(&FileImage { id: 8, pid: 4242, fd: 5, ns_pid: None, kind: crate::image::FileKind::EventFile(ev) }, &[]);
        for (name, bytes) in [("context.img", bytes), ("event_file.img", ev)] {
            let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/image_decode").join(name);
            if std::env::var_os("RDMIG_WRITE_FUZZ_SEEDS").is_some() {
                std::fs::write(&seed, &bytes).unwrap();
            }
            assert!(
                std::fs::read(&seed).is_ok_and(|b| b == bytes),
                "{} is not the image this test builds: RDMIG_WRITE_FUZZ_SEEDS=1 cargo test rewrites it",
                seed.display()
            );
        }
    }
}
