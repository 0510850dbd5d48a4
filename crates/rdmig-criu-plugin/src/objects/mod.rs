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
use crate::image::Context;
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
}

/// Checks that an image holds only what the restore can recreate (images of older plugins or
/// of a stock ib_uverbs can lack what is needed).
pub fn check_restorable(c: &Context) -> Result<(), String> {
    mw::check_image(c)?;
    ah::check_image(c)?;
    events::check_image(c)?;
    qp::check_image_links(c)?;
    mr::check_image_pds(c)?;
    srq::check_image(c)?;
    qp::check_image_refs(c)?;
    cq::check_image(c)?;
    mr::check_image_access(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{AsyncEvent, Channel, Cq, Handle, Mr, Qp, QpLinks, Srq};

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
}
