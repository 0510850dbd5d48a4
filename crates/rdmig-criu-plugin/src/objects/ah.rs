//! Address handles. Dump: number and address vector from `/dev/rxe_ctl`'s status (softroce
//! patch 0012), the source GID's text from sysfs, PD and user handle from ib_uverbs' fdinfo.
//! Restore: created with their old number (EXPECT), the source GID found again by its text.

use super::{limits, pd, DumpCx, RestoreCx};
use crate::cmd;
use crate::common::{gid, gid_index, DumpError, RestoreError};
use crate::fdinfo::UverbsInfo;
use crate::image::{Ah, AhAv, Context, Handle};
use crate::rxe;
use crate::uverbs;

// ---- dump ----

/// The file's AHs with their numbers and addresses (no PD yet).
pub fn save(cx: &DumpCx) -> Result<Vec<Ah>, DumpError> {
    let recs = cx.records("ah");
    let mut ahs: Vec<Ah> = vec![];
    for h in cx.handles(uverbs::OBJ_AH, "AH")? {
        let rec = recs.iter().find(|r| r.num("handle") == Some(h as u64)).ok_or_else(|| {
            cx.unsupported(format!(
                "AH handle {h} is not in {}'s list with its handle and address (this rdma_rxe lacks rdmig's softroce patch 0012)",
                rxe::CTL_DEV
            ))
        })?;
        let num = |k: &str| rec.num(k).ok_or_else(|| cx.unsupported(format!("AH handle {h}: {} gives no {k}", rxe::CTL_DEV)));
        let port = num("port")? as u8;
        let sgid_index = num("sgid_index")? as u8;
        let dgid = rec.get("dgid").and_then(rxe::parse_gid).ok_or_else(|| cx.unsupported(format!("AH handle {h}: bad dgid in {}", rxe::CTL_DEV)))?;
        let (sgid, sgid_type) =
            gid(&cx.ibdev, port, sgid_index).map_err(DumpError::sys(format!("{}: read the source GID {sgid_index} of AH handle {h}", cx.who)))?;
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
    Ok(ahs)
}

/// Gives each AH its PD and user handle.
pub fn link(cx: &DumpCx, uv: Option<&UverbsInfo>, pds: &[Handle], ahs: &mut [Ah]) -> Result<(), DumpError> {
    for a in ahs {
        a.pd = Some(pd::of(cx, uv, pds, uverbs::OBJ_AH, a.handle, &format!("AH handle {}", a.handle))?);
        a.user_handle = uv.and_then(|i| i.obj_of_type(uverbs::OBJ_AH, a.handle)).map(|o| o.user_handle).unwrap_or(0);
    }
    Ok(())
}

// ---- image checks ----

/// Each AH has its number, address and a PD of the image.
pub fn check_image(c: &Context) -> Result<(), String> {
    for a in &c.ahs {
        if a.ah_num.is_none() || a.av.is_none() || !a.pd.is_some_and(|p| c.pds.iter().any(|x| x.handle == p)) {
            return Err(format!("AH handle {} was saved without its number, address or PD (image of an older plugin?)", a.handle));
        }
        let (num, av) = (a.ah_num.unwrap_or(0), a.av.as_ref().expect("checked just above"));
        let what = |f: &str| format!("AH handle {}: {f}", a.handle);
        limits::range(&what("ah_num"), num, 1, limits::MAX_24BIT)?;
        limits::range(&what("port"), av.port, 1, 1)?;
        limits::range(&what("flow_label"), av.flow_label, 0, limits::MAX_FLOW_LABEL)?;
        if rxe::parse_gid(&av.sgid).is_none() {
            return Err(format!("{} {:?} is not a GID", what("sgid"), av.sgid.chars().take(80).collect::<String>()));
        }
        limits::gid_type(&what("sgid_type"), &av.sgid_type)?;
    }
    Ok(())
}

// ---- restore ----

/// Creates AH `a` with its old number (`/dev/rxe_ctl` EXPECT) and address, the source GID found
/// again by its text; returns its handle.
pub fn create(cx: &RestoreCx, a: &Ah) -> Result<u32, RestoreError> {
    let ibdev = &cx.c.ibdev;
    let (num, av) = (a.ah_num.expect("checked"), a.av.as_ref().expect("checked"));
    let sgid_index = gid_index(ibdev, av.port, &av.sgid, &av.sgid_type)?;
    cx.ctl.expect(rxe::Obj::Ah, 0, num, None, ibdev, false).map_err(RestoreError::sys(format!("EXPECT AH number {num}")))?;
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
    let r = cmd::create_ah(cx.fd, a.pd.expect("checked"), attr, a.user_handle).map_err(RestoreError::sys(format!("CREATE_AH number {num}")))?;
    if r.ah_num != num {
        return Err(RestoreError::Refused(format!("AH got number {} instead of {num}", r.ah_num)));
    }
    Ok(r.ah_handle)
}
