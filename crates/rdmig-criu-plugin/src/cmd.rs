//! The uverbs write() commands the restore issues on its freshly opened uverbs file, inside the
//! restored task (RESTORE_EXT_FILE). They are the legacy command ABI of `rdma/ib_user_verbs.h`:
//! `struct ib_uverbs_cmd_hdr`, then the command (whose first member is the address of the
//! response buffer, when it has one), then the driver's input; the response is followed by the
//! driver's output (rxe: the `mminfo` of each ring). `write()` on a uverbs file checks that the
//! writer's credentials are the opener's; at RESTORE_EXT_FILE time both are CRIU's.
//!
//! librxe's create verbs are not used on purpose: they would mmap the rings, and rxe lets each
//! ring be mapped only once, which CRIU must do at the original address.

use std::io;
use std::os::fd::RawFd;

use crate::uverbs::QpDest;

const CMD_GET_CONTEXT: u32 = 0;
const CMD_ALLOC_PD: u32 = 3;
const CMD_CREATE_AH: u32 = 5;
const CMD_DEALLOC_PD: u32 = 4;
const CMD_REG_MR: u32 = 9;
const CMD_ALLOC_MW: u32 = 14;
const CMD_CREATE_COMP_CHANNEL: u32 = 17;
const CMD_CREATE_CQ: u32 = 18;
const CMD_CREATE_QP: u32 = 24;
const CMD_MODIFY_QP: u32 = 26;
const CMD_CREATE_SRQ: u32 = 32;

/// `struct mminfo` of rdma_user_rxe.h: where the ring can be mmapped, and its size.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MmInfo {
    pub offset: u64,
    pub size: u32,
    pub pad: u32,
}

/// Issues command `cmd` (a `#[repr(C)]` struct starting with the `response` address when it has
/// a response) with `resp` as the response buffer.
fn write_cmd<C, R>(fd: RawFd, command: u32, cmd: &mut C, resp: Option<&mut R>) -> io::Result<()> {
    let clen = std::mem::size_of::<C>();
    let rlen = if resp.is_some() { std::mem::size_of::<R>() } else { 0 };
    assert!(clen % 4 == 0 && rlen % 4 == 0, "uverbs commands are counted in 32-bit words");
    if let Some(r) = resp {
        // SAFETY: every command with a response starts with `__aligned_u64 response`.
        unsafe { *(cmd as *mut C as *mut u64) = r as *mut R as u64 };
    }
    let mut buf = Vec::with_capacity(8 + clen);
    buf.extend_from_slice(&command.to_ne_bytes());
    buf.extend_from_slice(&(((8 + clen) / 4) as u16).to_ne_bytes());
    buf.extend_from_slice(&((rlen / 4) as u16).to_ne_bytes());
    // SAFETY: C is a plain #[repr(C)] struct of integers; reading its bytes is sound.
    buf.extend_from_slice(unsafe { std::slice::from_raw_parts(cmd as *const C as *const u8, clen) });
    // SAFETY: writes our buffer; the kernel writes the response into `resp`, which outlives the call.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    written(n, buf.len())
}

/// The result of a `write()` of `want` bytes that returned `n`: uverbs takes a command whole or
/// not at all, so a short write is an error too (never taken for success).
fn written(n: isize, want: usize) -> io::Result<()> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != want {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write to the uverbs file: {n} of {want} bytes")));
    }
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct RespOnly {
    response: u64,
}

#[repr(C)]
#[derive(Default)]
struct GetContextResp {
    async_fd: u32,
    num_comp_vectors: u32,
}

/// GET_CONTEXT: creates the file's user context; returns the async event fd.
pub fn get_context(fd: RawFd) -> io::Result<RawFd> {
    let mut r = GetContextResp::default();
    write_cmd(fd, CMD_GET_CONTEXT, &mut RespOnly::default(), Some(&mut r))?;
    Ok(r.async_fd as RawFd)
}

#[repr(C)]
#[derive(Default)]
struct U32Resp {
    v: u32,
}

pub fn alloc_pd(fd: RawFd) -> io::Result<u32> {
    let mut r = U32Resp::default();
    write_cmd(fd, CMD_ALLOC_PD, &mut RespOnly::default(), Some(&mut r))?;
    Ok(r.v)
}

#[repr(C)]
struct DeallocPd {
    pd_handle: u32,
}

pub fn dealloc_pd(fd: RawFd, handle: u32) -> io::Result<()> {
    write_cmd::<_, U32Resp>(fd, CMD_DEALLOC_PD, &mut DeallocPd { pd_handle: handle }, None)
}

#[repr(C)]
struct RegMr {
    response: u64,
    start: u64,
    length: u64,
    hca_va: u64,
    pd_handle: u32,
    access_flags: u32,
}

#[repr(C)]
#[derive(Default, Debug)]
pub struct RegMrResp {
    pub mr_handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

pub fn reg_mr(fd: RawFd, pd: u32, start: u64, length: u64, iova: u64, access: u32) -> io::Result<RegMrResp> {
    let mut r = RegMrResp::default();
    let mut c = RegMr { response: 0, start, length, hca_va: iova, pd_handle: pd, access_flags: access };
    write_cmd(fd, CMD_REG_MR, &mut c, Some(&mut r))?;
    Ok(r)
}

#[repr(C)]
struct CreateCq {
    response: u64,
    user_handle: u64,
    cqe: u32,
    comp_vector: u32,
    comp_channel: i32,
    reserved: u32,
}

#[repr(C)]
#[derive(Default, Debug)]
pub struct CreateCqResp {
    pub cq_handle: u32,
    pub cqe: u32,
    pub mi: MmInfo,
}

/// CREATE_CQ; `comp_channel` is the fd (in this process) of its completion channel, or -1.
pub fn create_cq(fd: RawFd, cqe: u32, user_handle: u64, comp_channel: RawFd) -> io::Result<CreateCqResp> {
    let mut r = CreateCqResp::default();
    let mut c = CreateCq { response: 0, user_handle, cqe, comp_vector: 0, comp_channel, reserved: 0 };
    write_cmd(fd, CMD_CREATE_CQ, &mut c, Some(&mut r))?;
    Ok(r)
}

/// CREATE_COMP_CHANNEL: returns the new channel's fd (owned by the caller).
pub fn create_comp_channel(fd: RawFd) -> io::Result<RawFd> {
    let mut r = U32Resp::default();
    write_cmd(fd, CMD_CREATE_COMP_CHANNEL, &mut RespOnly::default(), Some(&mut r))?;
    Ok(r.v as RawFd)
}

#[repr(C)]
struct AllocMw {
    response: u64,
    pd_handle: u32,
    mw_type: u8,
    reserved: [u8; 3],
}

#[repr(C)]
#[derive(Default, Debug)]
pub struct AllocMwResp {
    pub mw_handle: u32,
    pub rkey: u32,
}

/// ALLOC_MW of type `mw_type` (1 or 2) on PD `pd`.
pub fn alloc_mw(fd: RawFd, pd: u32, mw_type: u8) -> io::Result<AllocMwResp> {
    let mut r = AllocMwResp::default();
    let mut c = AllocMw { response: 0, pd_handle: pd, mw_type, reserved: [0; 3] };
    write_cmd(fd, CMD_ALLOC_MW, &mut c, Some(&mut r))?;
    Ok(r)
}

/// `struct ib_uverbs_ah_attr`.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct AhAttr {
    pub dgid: [u8; 16],
    pub flow_label: u32,
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub reserved: u8,
    pub dlid: u16,
    pub sl: u8,
    pub src_path_bits: u8,
    pub static_rate: u8,
    pub is_global: u8,
    pub port_num: u8,
    pub reserved2: u8,
}

#[repr(C)]
struct CreateAh {
    response: u64,
    user_handle: u64,
    pd_handle: u32,
    reserved: u32,
    attr: AhAttr,
}

#[repr(C)]
#[derive(Default, Debug)]
pub struct CreateAhResp {
    pub ah_handle: u32,
    /// rxe's `struct rxe_create_ah_resp`.
    pub ah_num: u32,
    pub reserved: u32,
}

/// CREATE_AH on PD `pd`.
pub fn create_ah(fd: RawFd, pd: u32, attr: AhAttr, user_handle: u64) -> io::Result<CreateAhResp> {
    let mut r = CreateAhResp::default();
    let mut c = CreateAh { response: 0, user_handle, pd_handle: pd, reserved: 0, attr };
    write_cmd(fd, CMD_CREATE_AH, &mut c, Some(&mut r))?;
    Ok(r)
}

#[repr(C)]
struct CreateSrq {
    response: u64,
    user_handle: u64,
    pd_handle: u32,
    max_wr: u32,
    max_sge: u32,
    srq_limit: u32,
}

#[repr(C)]
#[derive(Default, Debug)]
pub struct CreateSrqResp {
    pub srq_handle: u32,
    pub max_wr: u32,
    pub max_sge: u32,
    pub srqn: u32,
    /// rxe's `struct rxe_create_srq_resp`: the ring, the SRQ's number, reserved.
    pub mi: MmInfo,
    pub srq_num: u32,
    pub reserved: u32,
}

/// CREATE_SRQ (a basic SRQ); `srq_limit` non-zero arms it as ibv_modify_srq(IBV_SRQ_LIMIT) does.
pub fn create_srq(fd: RawFd, pd: u32, max_wr: u32, max_sge: u32, srq_limit: u32, user_handle: u64) -> io::Result<CreateSrqResp> {
    let mut r = CreateSrqResp::default();
    let mut c = CreateSrq { response: 0, user_handle, pd_handle: pd, max_wr, max_sge, srq_limit };
    write_cmd(fd, CMD_CREATE_SRQ, &mut c, Some(&mut r))?;
    Ok(r)
}

/// `struct rdmig_uverbs_ev_ctl` of softroce patch 0010 (`uverbs_ckpt_abi.h`).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct EvCtl {
    pub op: u32,
    pub object: u32,
    pub handle: u32,
    pub event_type: u32,
    pub element: u64,
    pub events_reported: u32,
    pub comp_events_reported: u32,
    pub reserved: u64,
}

const _: () = assert!(std::mem::size_of::<EvCtl>() == 40);

/// `_IOW(0xB8, 0x40, struct rdmig_uverbs_ev_ctl)` (rdmig's ioctls share one magic).
pub const IOC_EVENTS: crate::rxe::abi::IoctlNr = nix::request_code_write!(crate::rxe::abi::IOC_MAGIC, 0x40, std::mem::size_of::<EvCtl>());

nix::ioctl_write_ptr_bad!(ioc_events, IOC_EVENTS, EvCtl);
pub const EV_SET_COUNTERS: u32 = 1;
pub const EV_QUEUE_COMP: u32 = 2;
pub const EV_QUEUE_ASYNC: u32 = 3;

/// RDMIG_UVERBS_IOC_EVENTS on a uverbs file: sets an object's event counters or queues an event.
pub fn events(fd: RawFd, c: &EvCtl) -> io::Result<()> {
    // SAFETY: `c` is a correctly laid out rdmig_uverbs_ev_ctl (size asserted above) that the
    // kernel only reads.
    unsafe { ioc_events(fd, c) }.map(drop).map_err(io::Error::from)
}

#[repr(C)]
#[derive(Default)]
pub struct CreateQp {
    pub response: u64,
    pub user_handle: u64,
    pub pd_handle: u32,
    pub send_cq_handle: u32,
    pub recv_cq_handle: u32,
    pub srq_handle: u32,
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
    pub sq_sig_all: u8,
    pub qp_type: u8,
    pub is_srq: u8,
    pub reserved: u8,
}

#[repr(C)]
#[derive(Default, Debug)]
pub struct CreateQpResp {
    pub qp_handle: u32,
    pub qpn: u32,
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
    pub reserved: u32,
    /// rxe's `struct rxe_create_qp_resp`: receive ring first, then send ring.
    pub rq_mi: MmInfo,
    pub sq_mi: MmInfo,
}

pub fn create_qp(fd: RawFd, mut c: CreateQp) -> io::Result<CreateQpResp> {
    let mut r = CreateQpResp::default();
    write_cmd(fd, CMD_CREATE_QP, &mut c, Some(&mut r))?;
    Ok(r)
}

/// `struct ib_uverbs_modify_qp`.
#[repr(C)]
#[derive(Default)]
pub struct ModifyQp {
    pub dest: QpDest,
    pub alt_dest: QpDest,
    pub qp_handle: u32,
    pub attr_mask: u32,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: u32,
    pub qp_access_flags: u32,
    pub pkey_index: u16,
    pub alt_pkey_index: u16,
    pub qp_state: u8,
    pub cur_qp_state: u8,
    pub path_mtu: u8,
    pub path_mig_state: u8,
    pub en_sqd_async_notify: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub port_num: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub alt_port_num: u8,
    pub alt_timeout: u8,
    pub reserved: [u8; 2],
}

pub fn modify_qp(fd: RawFd, mut c: ModifyQp) -> io::Result<()> {
    write_cmd::<_, U32Resp>(fd, CMD_MODIFY_QP, &mut c, None)
}

// enum ib_qp_attr_mask
pub const QP_STATE: u32 = 1;
pub const QP_ACCESS_FLAGS: u32 = 1 << 3;
pub const QP_PKEY_INDEX: u32 = 1 << 4;
pub const QP_PORT: u32 = 1 << 5;
pub const QP_QKEY: u32 = 1 << 6;
pub const QP_AV: u32 = 1 << 7;
pub const QP_PATH_MTU: u32 = 1 << 8;
pub const QP_TIMEOUT: u32 = 1 << 9;
pub const QP_RETRY_CNT: u32 = 1 << 10;
pub const QP_RNR_RETRY: u32 = 1 << 11;
pub const QP_RQ_PSN: u32 = 1 << 12;
pub const QP_MAX_QP_RD_ATOMIC: u32 = 1 << 13;
pub const QP_MIN_RNR_TIMER: u32 = 1 << 15;
pub const QP_SQ_PSN: u32 = 1 << 16;
pub const QP_MAX_DEST_RD_ATOMIC: u32 = 1 << 17;
pub const QP_DEST_QPN: u32 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_writes_are_errors() {
        assert!(written(24, 24).is_ok());
        let e = written(8, 24).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        assert!(e.to_string().contains("short write to the uverbs file: 8 of 24 bytes"));
        assert!(written(0, 24).is_err());
        // A write that fails is an error, with its errno.
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = alloc_pd(std::os::fd::AsRawFd::as_raw_fd(&f)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
    }

    #[test]
    fn abi_sizes() {
        assert_eq!(std::mem::size_of::<CreateCq>(), 32);
        assert_eq!(std::mem::size_of::<CreateCqResp>(), 8 + 16);
        assert_eq!(std::mem::size_of::<CreateQp>(), 56);
        assert_eq!(std::mem::size_of::<CreateQpResp>(), 32 + 32);
        assert_eq!(std::mem::size_of::<ModifyQp>(), 112);
        assert_eq!(std::mem::size_of::<RegMr>(), 40);
        assert_eq!(std::mem::size_of::<RegMrResp>(), 12);
        assert_eq!(std::mem::size_of::<CreateSrq>(), 32);
        assert_eq!(std::mem::size_of::<AhAttr>(), 32);
        assert_eq!(std::mem::size_of::<AllocMw>(), 16);
        assert_eq!(std::mem::size_of::<AllocMwResp>(), 8);
        assert_eq!(std::mem::size_of::<CreateAh>(), 56);
        assert_eq!(std::mem::size_of::<CreateAhResp>(), 12);
        assert_eq!(std::mem::size_of::<CreateSrqResp>(), 16 + 24);
        assert_eq!(IOC_EVENTS, 0x4028_b840);
    }
}
