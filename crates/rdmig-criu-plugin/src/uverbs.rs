//! The few uverbs ioctl methods the dump needs, issued on CRIU's copy of the process's uverbs
//! file (same `struct file`, so the same handles). The ioctl path has no credential check, unlike
//! `write()`. ABI: `rdma/rdma_user_ioctl_cmds.h`, `rdma/ib_user_ioctl_cmds.h`, `rdma/ib_user_verbs.h`.

use std::io;
use std::os::fd::RawFd;

use crate::image::QpAttr;

/// `_IOWR(0x1b, 1, struct ib_uverbs_ioctl_hdr)` (header size 24).
const RDMA_VERBS_IOCTL: libc::c_ulong = 0xC018_1B01;
const ATTR_F_MANDATORY: u16 = 1;
/// `RDMA_DRIVER_RXE` (enum rdma_driver_id): the kernel refuses a header naming another driver.
pub const RDMA_DRIVER_RXE: u32 = 14;

// enum uverbs_default_objects
pub const OBJ_DEVICE: u16 = 0;
pub const OBJ_PD: u16 = 1;
pub const OBJ_COMP_CHANNEL: u16 = 2;
pub const OBJ_CQ: u16 = 3;
pub const OBJ_QP: u16 = 4;
pub const OBJ_SRQ: u16 = 5;
pub const OBJ_AH: u16 = 6;
pub const OBJ_MR: u16 = 7;
pub const OBJ_MW: u16 = 8;
pub const OBJ_FLOW: u16 = 9;
pub const OBJ_XRCD: u16 = 10;
pub const OBJ_RWQ_IND_TBL: u16 = 11;
pub const OBJ_WQ: u16 = 12;
pub const OBJ_FLOW_ACTION: u16 = 13;
pub const OBJ_DM: u16 = 14;
pub const OBJ_COUNTERS: u16 = 15;
pub const OBJ_ASYNC_EVENT: u16 = 16;

// enum uverbs_methods_device / uverbs_methods_mr
const METHOD_INVOKE_WRITE: u16 = 0;
const METHOD_INFO_HANDLES: u16 = 1;
const METHOD_QUERY_MR: u16 = 3;
// IB_USER_VERBS_CMD_QUERY_QP
const CMD_QUERY_QP: u64 = 25;

/// `struct ib_uverbs_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Attr {
    attr_id: u16,
    len: u16,
    flags: u16,
    reserved: u16,
    data: u64,
}

/// `struct ib_uverbs_ioctl_hdr` followed by room for the attributes of one call.
#[repr(C)]
struct Call<const N: usize> {
    length: u16,
    object_id: u16,
    method_id: u16,
    num_attrs: u16,
    reserved1: u64,
    driver_id: u32,
    reserved2: u32,
    attrs: [Attr; N],
}

fn invoke<const N: usize>(fd: RawFd, object_id: u16, method_id: u16, attrs: [Attr; N]) -> io::Result<()> {
    let mut call =
        Call::<N> { length: (24 + 16 * N) as u16, object_id, method_id, num_attrs: N as u16, reserved1: 0, driver_id: RDMA_DRIVER_RXE, reserved2: 0, attrs };
    // SAFETY: `call` is a correctly laid out ib_uverbs_ioctl_hdr with N attributes; every pointer
    // attribute the callers put in points to a live buffer of the stated length for this call.
    let r = unsafe { libc::ioctl(fd, RDMA_VERBS_IOCTL as _, &mut call as *mut Call<N>) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A legacy write command `code` through UVERBS_METHOD_INVOKE_WRITE: `cmd` in (attribute
/// CORE_IN 0), `resp` out (CORE_OUT 1), the command number as WRITE_CMD 2.
fn invoke_write<C, R>(fd: RawFd, code: u64, cmd: &mut C, resp: &mut R) -> io::Result<()> {
    invoke(fd, OBJ_DEVICE, METHOD_INVOKE_WRITE, [ptr(0, cmd, std::mem::size_of::<C>()), ptr(1, resp, std::mem::size_of::<R>()), const_in(2, code)])
}

fn const_in(id: u16, v: u64) -> Attr {
    Attr { attr_id: id, len: 8, flags: ATTR_F_MANDATORY, reserved: 0, data: v }
}

fn ptr<T>(id: u16, p: *mut T, len: usize) -> Attr {
    Attr { attr_id: id, len: len as u16, flags: ATTR_F_MANDATORY, reserved: 0, data: p as u64 }
}

fn idr(id: u16, handle: u32) -> Attr {
    Attr { attr_id: id, len: 0, flags: ATTR_F_MANDATORY, reserved: 0, data: handle as u64 }
}

/// All handles of object type `obj` on the file (UVERBS_METHOD_INFO_HANDLES).
pub fn info_handles(fd: RawFd, obj: u16) -> io::Result<Vec<u32>> {
    let mut cap = 256usize;
    loop {
        let mut list = vec![0u32; cap];
        let mut total: u32 = 0;
        // attrs: INFO_OBJECT_ID 0 (const), INFO_TOTAL_HANDLES 1 (out u32), INFO_HANDLES_LIST 2 (out)
        invoke(fd, OBJ_DEVICE, METHOD_INFO_HANDLES, [const_in(0, obj as u64), ptr(1, &mut total, 4), ptr(2, list.as_mut_ptr(), cap * 4)])?;
        let n = total as usize;
        if n < cap || cap >= 16384 {
            list.truncate(n.min(cap));
            list.sort_unstable();
            return Ok(list);
        }
        cap *= 4;
    }
}

/// UVERBS_METHOD_QUERY_MR: (lkey, rkey, length, iova).
pub fn query_mr(fd: RawFd, handle: u32) -> io::Result<(u32, u32, u64, u64)> {
    let (mut lkey, mut rkey, mut length, mut iova) = (0u32, 0u32, 0u64, 0u64);
    // attrs: HANDLE 0, LKEY 1, RKEY 2, LENGTH 3, IOVA 4
    invoke(fd, OBJ_MR, METHOD_QUERY_MR, [idr(0, handle), ptr(1, &mut lkey, 4), ptr(2, &mut rkey, 4), ptr(3, &mut length, 8), ptr(4, &mut iova, 8)])?;
    Ok((lkey, rkey, length, iova))
}

/// `struct ib_uverbs_query_qp` (without the trailing driver data).
#[repr(C)]
struct QueryQpCmd {
    response: u64,
    qp_handle: u32,
    attr_mask: u32,
}

/// `struct ib_uverbs_qp_dest`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub struct QpDest {
    pub dgid: [u8; 16],
    pub flow_label: u32,
    pub dlid: u16,
    pub reserved: u16,
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub sl: u8,
    pub src_path_bits: u8,
    pub static_rate: u8,
    pub is_global: u8,
    pub port_num: u8,
}

/// `struct ib_uverbs_query_qp_resp`.
#[repr(C)]
#[derive(Default)]
struct QueryQpResp {
    dest: QpDest,
    alt_dest: QpDest,
    max_send_wr: u32,
    max_recv_wr: u32,
    max_send_sge: u32,
    max_recv_sge: u32,
    max_inline_data: u32,
    qkey: u32,
    rq_psn: u32,
    sq_psn: u32,
    dest_qp_num: u32,
    qp_access_flags: u32,
    pkey_index: u16,
    alt_pkey_index: u16,
    qp_state: u8,
    cur_qp_state: u8,
    path_mtu: u8,
    path_mig_state: u8,
    sq_draining: u8,
    max_rd_atomic: u8,
    max_dest_rd_atomic: u8,
    min_rnr_timer: u8,
    port_num: u8,
    timeout: u8,
    retry_cnt: u8,
    rnr_retry: u8,
    alt_port_num: u8,
    alt_timeout: u8,
    sq_sig_all: u8,
    reserved: [u8; 5],
}

/// QUERY_QP through UVERBS_METHOD_INVOKE_WRITE (all attributes).
pub fn query_qp(fd: RawFd, handle: u32) -> io::Result<QpAttr> {
    let mut cmd = QueryQpCmd { response: 0, qp_handle: handle, attr_mask: 0x1f_ffff };
    let mut r = QueryQpResp::default();
    invoke_write(fd, CMD_QUERY_QP, &mut cmd, &mut r)?;
    Ok(QpAttr {
        state: r.qp_state,
        path_mtu: r.path_mtu,
        qkey: r.qkey,
        rq_psn: r.rq_psn,
        sq_psn: r.sq_psn,
        dest_qp_num: r.dest_qp_num,
        access_flags: r.qp_access_flags,
        pkey_index: r.pkey_index,
        port_num: r.port_num,
        max_send_wr: r.max_send_wr,
        max_recv_wr: r.max_recv_wr,
        max_send_sge: r.max_send_sge,
        max_recv_sge: r.max_recv_sge,
        max_inline_data: r.max_inline_data,
        max_rd_atomic: r.max_rd_atomic,
        max_dest_rd_atomic: r.max_dest_rd_atomic,
        min_rnr_timer: r.min_rnr_timer,
        timeout: r.timeout,
        retry_cnt: r.retry_cnt,
        rnr_retry: r.rnr_retry,
        sq_sig_all: r.sq_sig_all,
        dgid: r.dest.dgid,
        sgid_index: r.dest.sgid_index,
        hop_limit: r.dest.hop_limit,
        traffic_class: r.dest.traffic_class,
        flow_label: r.dest.flow_label,
        is_global: r.dest.is_global,
        sl: r.dest.sl,
    })
}

// IB_USER_VERBS_CMD_QUERY_SRQ
const CMD_QUERY_SRQ: u64 = 34;

/// `struct ib_uverbs_query_srq` (without the trailing driver data).
#[repr(C)]
struct QuerySrqCmd {
    response: u64,
    srq_handle: u32,
    reserved: u32,
}

/// `struct ib_uverbs_query_srq_resp`.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrqAttr {
    pub max_wr: u32,
    pub max_sge: u32,
    pub srq_limit: u32,
    reserved: u32,
}

/// QUERY_SRQ through UVERBS_METHOD_INVOKE_WRITE: capacity (rxe: the ring's index mask), SGEs
/// per WQE, and the armed limit (0: not armed).
pub fn query_srq(fd: RawFd, handle: u32) -> io::Result<SrqAttr> {
    let mut cmd = QuerySrqCmd { response: 0, srq_handle: handle, reserved: 0 };
    let mut r = SrqAttr::default();
    invoke_write(fd, CMD_QUERY_SRQ, &mut cmd, &mut r)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes() {
        assert_eq!(std::mem::size_of::<QuerySrqCmd>(), 16);
        assert_eq!(std::mem::size_of::<SrqAttr>(), 16);
        assert_eq!(std::mem::size_of::<Attr>(), 16);
        assert_eq!(std::mem::size_of::<Call<3>>(), 24 + 48);
        assert_eq!(std::mem::size_of::<QpDest>(), 32);
        assert_eq!(std::mem::size_of::<QueryQpResp>(), 128);
        assert_eq!(std::mem::size_of::<QueryQpCmd>(), 16);
    }
}
