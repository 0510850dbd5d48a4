//! rdmig's rdma_ucm (`/dev/infiniband/rdma_cm`): the write() commands of Linux's
//! `rdma/rdma_user_cm.h` that the CRIU plugin's restore issues on its new rdma_cm file (`struct
//! rdma_ucm_cmd_hdr`, then the command; none of these has a response), `struct
//! rdma_ucm_event_resp`, and rdmig's ioctls of `ucma_ckpt_abi.h` (softroce, version 2):
//! `RDMIG_UCMA_IOC_CREATE_ID`, `_DEV_ALIAS`, `_CONNECT`, `_MOVING` and `_QUEUE_EVENT`. Each
//! kernel struct is defined once here, with its layout asserted by the tests; the plugin (both
//! sides) and rdmig (clearing the moving mark of a process that stays) use them.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use nix::libc;

/// Where sysfs gives the rdma_cm device's number (a misc device: its minor is dynamic).
pub const SYS_DEV: &str = "/sys/class/misc/rdma_cm/dev";

/// rdma_cm's device number on this host (`None`: rdma_ucm is not loaded).
pub fn devno() -> Option<(u32, u32)> {
    parse_devno(&std::fs::read_to_string(SYS_DEV).ok()?)
}

/// A device number as sysfs shows it (`10:123`).
pub fn parse_devno(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The rdma_cm device librdmacm opens.
pub const DEV_PATH: &str = "/dev/infiniband/rdma_cm";

/// `RDMIG_UCMA_ABI_VERSION` of `ucma_ckpt_abi.h`: what the plugin reads and writes.
pub const ABI_VERSION: u32 = 2;

/// The version of rdmig's rdma_ucm loaded here, as the `rdmig_ucma:` line of an rdma_cm file's
/// fdinfo says: opens [`DEV_PATH`] and reads its own fdinfo. `Ok(None)`: a stock rdma_ucm (no
/// such line); an error: no rdma_cm device (rdma_ucm not loaded) or none this process may open.
pub fn loaded_abi_version() -> io::Result<Option<u32>> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(DEV_PATH)?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))?;
    Ok(abi_version_of(&info))
}

/// Whether an rdma_cm file's fdinfo text says the file is marked moving (`moving:\t1`).
pub fn marked_moving(fdinfo: &str) -> bool {
    fdinfo.lines().any(|l| l == "moving:\t1")
}

/// The `rdmig_ucma:` version of an rdma_cm file's fdinfo text, if it has one.
pub fn abi_version_of(fdinfo: &str) -> Option<u32> {
    fdinfo.lines().find_map(|l| l.strip_prefix("rdmig_ucma:")).and_then(|v| v.trim().parse().ok())
}

// enum of rdma_user_cm.h (RDMA_USER_CM_CMD_*).
const CMD_LISTEN: u32 = 7;
const CMD_SET_OPTION: u32 = 14;
const CMD_BIND: u32 = 20;

/// `RDMA_OPTION_ID`, and its options.
const OPTION_ID: u32 = 0;
pub const OPTION_ID_TOS: u32 = 0;
pub const OPTION_ID_REUSEADDR: u32 = 1;
pub const OPTION_ID_AFONLY: u32 = 2;
/// (Not restored: the fdinfo does not show an ID's ACK timeout.)
pub const OPTION_ID_ACK_TIMEOUT: u32 = 3;

/// `enum rdma_cm_event_type` values the restore cannot queue again (`RDMIG_UCMA_IOC_QUEUE_EVENT`
/// refuses them).
pub const EVENT_CONNECT_REQUEST: u32 = 4;
pub const EVENT_DEVICE_REMOVAL: u32 = 11;
pub const EVENT_MULTICAST_JOIN: u32 = 12;
pub const EVENT_MULTICAST_ERROR: u32 = 13;

/// Why an event of type `event` cannot be queued again (`RDMIG_UCMA_IOC_QUEUE_EVENT` refuses
/// it), or `None` when it can: the one list the dump's refusal and the restore's check share.
pub fn not_requeueable(event: u32) -> Option<&'static str> {
    match event {
        EVENT_CONNECT_REQUEST => Some("an unaccepted connection request, whose new ID rdmig cannot recreate with it"),
        EVENT_MULTICAST_JOIN | EVENT_MULTICAST_ERROR => Some("a multicast event, which rdmig cannot move"),
        EVENT_DEVICE_REMOVAL => Some("the removal of its device, which rdmig cannot move"),
        _ => None,
    }
}

/// Size of `struct rdma_ucm_event_resp` (rdma_user_cm.h): uid@0 (u64), id@8, event@12,
/// status@16, the connection or UD parameters@20, reserved@324, ece@328.
pub const EVENT_RESP_LEN: usize = 336;

/// `RDMIG_UCMA_ROLE_*`.
pub const ROLE_ACTIVE: u8 = 1;
pub const ROLE_PASSIVE: u8 = 2;

/// `struct rdma_ucm_cmd_hdr`: `in` is the size in bytes of the command after the header.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CmdHdr {
    pub cmd: u32,
    pub in_: u16,
    pub out: u16,
}

/// `struct __kernel_sockaddr_storage`: 128 bytes, aligned as a pointer.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct SockaddrStorage {
    pub bytes: [u8; 128],
}

/// `struct rdma_ucm_bind`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Bind {
    pub id: u32,
    pub addr_size: u16,
    pub reserved: u16,
    pub addr: SockaddrStorage,
}

/// `struct rdma_ucm_listen`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    pub id: u32,
    pub backlog: u32,
}

/// `struct rdma_ucm_set_option`: `optval` is the address of the option's value, `optlen` its
/// size (an `int` for REUSEADDR and AFONLY, a `u8` for TOS).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SetOption {
    pub optval: u64,
    pub id: u32,
    pub level: u32,
    pub optname: u32,
    pub optlen: u32,
}

/// `struct rdmig_ucma_create_id` of `ucma_ckpt_abi.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateId {
    pub uid: u64,
    pub id: u32,
    pub ps: u16,
    pub qp_type: u8,
    pub reserved0: u8,
    pub events_reported: u32,
    pub reserved1: u32,
}

/// `struct rdmig_ucma_dev_alias` of `ucma_ckpt_abi.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DevAlias {
    pub node_guid: u64,
    pub alias_guid: u64,
}

/// `struct rdmig_ucma_conn` of `ucma_ckpt_abi.h`: a connection for `RDMIG_UCMA_IOC_CONNECT`.
/// Numbers in host order except inside the sockaddrs.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub id: u32,
    pub role: u8,
    pub hop_limit: u8,
    pub dst_mac: [u8; 6],
    pub reserved0: [u8; 4],
    pub src: SockaddrStorage,
    pub dst: SockaddrStorage,
    pub qpn: u32,
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub remote_qpn: u32,
    pub sq_psn: u32,
    pub rq_psn: u32,
    pub service_id: u64,
    pub pkey: u16,
    pub srq: u8,
    pub path_mtu: u8,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub max_cm_retries: u8,
    pub remote_cm_response_timeout: u8,
    pub local_cm_response_timeout: u8,
    pub service_timeout: u8,
    pub target_ack_delay: u8,
    pub packet_life_time: u8,
    pub reserved1: [u8; 10],
}

/// `struct rdmig_ucma_event` of `ucma_ckpt_abi.h`: an event to queue again, its `struct
/// rdma_ucm_event_resp` as bytes (aligned as the kernel's, whose `uid` is an `__aligned_u64`).
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub id: u32,
    pub reserved: u32,
    pub resp: [u8; EVENT_RESP_LEN],
}

/// The header fields of a `struct rdma_ucm_event_resp` (host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespHead {
    pub uid: u64,
    pub id: u32,
    pub event: u32,
    pub status: i32,
}

/// The uid, id, event and status of a `struct rdma_ucm_event_resp`.
pub fn resp_head(resp: &[u8; EVENT_RESP_LEN]) -> RespHead {
    let u32_at = |o: usize| u32::from_ne_bytes([resp[o], resp[o + 1], resp[o + 2], resp[o + 3]]);
    let mut uid = [0u8; 8];
    uid.copy_from_slice(&resp[0..8]);
    RespHead { uid: u64::from_ne_bytes(uid), id: u32_at(8), event: u32_at(12), status: u32_at(16) as i32 }
}

/// `_IOW(0xB8, 0x51, struct rdmig_ucma_dev_alias)` (rdmig's ioctls share one magic).
pub const IOC_DEV_ALIAS: crate::abi::IoctlNr = nix::request_code_write!(crate::abi::IOC_MAGIC, 0x51, std::mem::size_of::<DevAlias>());

/// `_IOW(0xB8, 0x50, struct rdmig_ucma_create_id)`.
pub const IOC_CREATE_ID: crate::abi::IoctlNr = nix::request_code_write!(crate::abi::IOC_MAGIC, 0x50, std::mem::size_of::<CreateId>());

/// `_IOW(0xB8, 0x52, struct rdmig_ucma_conn)`.
pub const IOC_CONNECT: crate::abi::IoctlNr = nix::request_code_write!(crate::abi::IOC_MAGIC, 0x52, std::mem::size_of::<Conn>());
/// `_IOW(0xB8, 0x53, __u32)`.
pub const IOC_MOVING: crate::abi::IoctlNr = nix::request_code_write!(crate::abi::IOC_MAGIC, 0x53, std::mem::size_of::<u32>());
/// `_IOW(0xB8, 0x54, struct rdmig_ucma_event)`.
pub const IOC_QUEUE_EVENT: crate::abi::IoctlNr = nix::request_code_write!(crate::abi::IOC_MAGIC, 0x54, std::mem::size_of::<Event>());

nix::ioctl_write_ptr_bad!(ioc_create_id, IOC_CREATE_ID, CreateId);
nix::ioctl_write_ptr_bad!(ioc_dev_alias, IOC_DEV_ALIAS, DevAlias);
nix::ioctl_write_ptr_bad!(ioc_connect, IOC_CONNECT, Conn);
nix::ioctl_write_ptr_bad!(ioc_moving, IOC_MOVING, u32);
nix::ioctl_write_ptr_bad!(ioc_queue_event, IOC_QUEUE_EVENT, Event);

/// A `#[repr(C)]` struct of this module made of integers (and byte arrays) without padding
/// (each one's size is asserted to be the sum of its fields' in the tests), so all of its bytes
/// are initialised. Private: nothing else can claim it.
trait Plain: Copy {}

impl Plain for CmdHdr {}
impl Plain for Bind {}
impl Plain for Listen {}
impl Plain for SetOption {}
impl Plain for Conn {}
impl Plain for Event {}

/// A write() command.
#[allow(private_bounds)]
pub trait Command: Plain {
    const CMD: u32;
}

impl Command for Bind {
    const CMD: u32 = CMD_BIND;
}
impl Command for Listen {
    const CMD: u32 = CMD_LISTEN;
}
impl Command for SetOption {
    const CMD: u32 = CMD_SET_OPTION;
}

/// The bytes of a plain struct (what an ioctl or write() hands the kernel).
#[allow(private_bounds)]
pub fn bytes_of<T: Plain>(v: &T) -> &[u8] {
    // SAFETY: `Plain` types are `#[repr(C)]` structs of integers (and byte arrays) without
    // padding bytes, so every byte is initialised; the slice borrows `v`.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// What write() is given for command `c`: the header, then the command.
pub fn encode<C: Command>(c: &C) -> Vec<u8> {
    let len = std::mem::size_of::<C>();
    let hdr = CmdHdr { cmd: C::CMD, in_: u16::try_from(len).expect("commands are small"), out: 0 };
    let mut buf = Vec::with_capacity(8 + len);
    buf.extend_from_slice(bytes_of(&hdr));
    buf.extend_from_slice(bytes_of(c));
    buf
}

/// The result of a write() of `want` bytes that returned `n`: rdma_ucm takes a command whole or
/// not at all, so a short write is an error too, never taken for success.
fn written(n: isize, want: usize) -> io::Result<()> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != want {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write to the rdma_cm file: {n} of {want} bytes")));
    }
    Ok(())
}

fn write_cmd<C: Command>(fd: RawFd, c: &C) -> io::Result<()> {
    let buf = encode(c);
    // SAFETY: write() reads our buffer only; none of these commands has a response, and the only
    // address one holds (SET_OPTION's optval) is of a value the caller keeps alive for the call.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    written(n, buf.len())
}

/// A socket address as `struct sockaddr_in` or `sockaddr_in6` in a sockaddr storage, and its
/// size (BIND's `addr_size`, which rdma_ucm checks against the family).
pub fn sockaddr(a: &SocketAddr) -> (SockaddrStorage, u16) {
    let mut s = SockaddrStorage { bytes: [0; 128] };
    match a {
        SocketAddr::V4(v4) => {
            // struct sockaddr_in: family (host order), port and address (network order), zero.
            s.bytes[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            s.bytes[2..4].copy_from_slice(&v4.port().to_be_bytes());
            s.bytes[4..8].copy_from_slice(&v4.ip().octets());
            (s, std::mem::size_of::<libc::sockaddr_in>() as u16)
        }
        SocketAddr::V6(v6) => {
            // struct sockaddr_in6: family, port, flow info (network order), address, scope id
            // (an interface index, host order).
            s.bytes[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            s.bytes[2..4].copy_from_slice(&v6.port().to_be_bytes());
            s.bytes[4..8].copy_from_slice(&v6.flowinfo().to_be_bytes());
            s.bytes[8..24].copy_from_slice(&v6.ip().octets());
            s.bytes[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
            (s, std::mem::size_of::<libc::sockaddr_in6>() as u16)
        }
    }
}

pub fn bind_cmd(id: u32, a: &SocketAddr) -> Bind {
    let (addr, addr_size) = sockaddr(a);
    Bind { id, addr_size, reserved: 0, addr }
}

/// UCMA_CMD_BIND: binds ID `id` to `a`.
pub fn bind(fd: RawFd, id: u32, a: &SocketAddr) -> io::Result<()> {
    write_cmd(fd, &bind_cmd(id, a))
}

/// UCMA_CMD_LISTEN.
pub fn listen(fd: RawFd, id: u32, backlog: u32) -> io::Result<()> {
    write_cmd(fd, &Listen { id, backlog })
}

/// UCMA_CMD_SET_OPTION of an `int` option (REUSEADDR, AFONLY).
pub fn set_int_option(fd: RawFd, id: u32, optname: u32, v: bool) -> io::Result<()> {
    let val = libc::c_int::from(v);
    let c = SetOption { optval: &val as *const libc::c_int as u64, id, level: OPTION_ID, optname, optlen: std::mem::size_of::<libc::c_int>() as u32 };
    write_cmd(fd, &c)
}

/// UCMA_CMD_SET_OPTION of the type of service.
pub fn set_tos(fd: RawFd, id: u32, tos: u8) -> io::Result<()> {
    let c = SetOption { optval: &tos as *const u8 as u64, id, level: OPTION_ID, optname: OPTION_ID_TOS, optlen: 1 };
    write_cmd(fd, &c)
}

/// RDMIG_UCMA_IOC_CREATE_ID.
pub fn create_id(fd: RawFd, c: &CreateId) -> io::Result<()> {
    // SAFETY: `c` is a correctly laid out rdmig_ucma_create_id (layout asserted in the tests)
    // that the kernel only reads during the call.
    unsafe { ioc_create_id(fd, c) }.map(drop).map_err(io::Error::from)
}

/// RDMIG_UCMA_IOC_DEV_ALIAS.
pub fn dev_alias(fd: RawFd, a: &DevAlias) -> io::Result<()> {
    // SAFETY: `a` is a correctly laid out rdmig_ucma_dev_alias (layout asserted in the tests)
    // that the kernel only reads during the call.
    unsafe { ioc_dev_alias(fd, a) }.map(drop).map_err(io::Error::from)
}

/// RDMIG_UCMA_IOC_CONNECT.
pub fn connect(fd: RawFd, c: &Conn) -> io::Result<()> {
    // SAFETY: `c` is a correctly laid out rdmig_ucma_conn (layout asserted in the tests) that
    // the kernel only reads during the call.
    unsafe { ioc_connect(fd, c) }.map(drop).map_err(io::Error::from)
}

/// RDMIG_UCMA_IOC_MOVING: marks the file moving (`true`) or clears the mark.
pub fn set_moving(fd: RawFd, moving: bool) -> io::Result<()> {
    let v = u32::from(moving);
    // SAFETY: the kernel reads one __u32 from a live local during the call.
    unsafe { ioc_moving(fd, &v) }.map(drop).map_err(io::Error::from)
}

/// RDMIG_UCMA_IOC_QUEUE_EVENT.
pub fn queue_event(fd: RawFd, e: &Event) -> io::Result<()> {
    // SAFETY: `e` is a correctly laid out rdmig_ucma_event (layout asserted in the tests) that
    // the kernel only reads during the call.
    unsafe { ioc_queue_event(fd, e) }.map(drop).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_abi_version_is_read_from_the_fdinfo_line() {
        assert_eq!(abi_version_of("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t7\nrdmig_ucma:\t2\ncm_id:\tid=1\n"), Some(2));
        assert_eq!(abi_version_of("pos:\t0\nflags:\t02\n"), None);
        assert_eq!(abi_version_of("rdmig_ucma:\tx\n"), None);
        assert!(marked_moving("pos:\t0\nrdmig_ucma:\t2\nmoving:\t1\ncm_id:\tid=1\n"));
        assert!(!marked_moving("pos:\t0\nrdmig_ucma:\t2\ncm_id:\tid=1\n"));
    }

    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn dev_alias_is_the_kernels() {
        assert_eq!((size_of::<DevAlias>(), offset_of!(DevAlias, alias_guid)), (16, 8));
        // _IOW(0xB8, 0x51, 16 bytes)
        assert_eq!(IOC_DEV_ALIAS, 0x4010_B851);
    }

    #[test]
    fn layouts_are_the_kernels() {
        assert_eq!((size_of::<CmdHdr>(), offset_of!(CmdHdr, in_), offset_of!(CmdHdr, out)), (8, 4, 6));
        assert_eq!((size_of::<SockaddrStorage>(), align_of::<SockaddrStorage>()), (128, 8));
        assert_eq!((size_of::<Bind>(), offset_of!(Bind, addr_size), offset_of!(Bind, reserved), offset_of!(Bind, addr)), (136, 4, 6, 8));
        assert_eq!((size_of::<Listen>(), offset_of!(Listen, backlog)), (8, 4));
        assert_eq!(size_of::<SetOption>(), 24);
        assert_eq!((offset_of!(SetOption, id), offset_of!(SetOption, level), offset_of!(SetOption, optname), offset_of!(SetOption, optlen)), (8, 12, 16, 20));
        assert_eq!(size_of::<CreateId>(), 24);
        assert_eq!(
            (
                offset_of!(CreateId, id),
                offset_of!(CreateId, ps),
                offset_of!(CreateId, qp_type),
                offset_of!(CreateId, reserved0),
                offset_of!(CreateId, events_reported),
                offset_of!(CreateId, reserved1)
            ),
            (8, 12, 14, 15, 16, 20)
        );
        assert_eq!(IOC_CREATE_ID, 0x4018_b850);
        // No padding anywhere (bytes_of relies on it): each size is the sum of the fields'.
        assert_eq!(size_of::<Bind>(), 4 + 2 + 2 + 128);
        assert_eq!(size_of::<SetOption>(), 8 + 4 * 4);
        assert_eq!(size_of::<CmdHdr>(), 4 + 2 + 2);
        assert_eq!(size_of::<Listen>(), 4 + 4);
        assert_eq!(size_of::<CreateId>(), 8 + 4 + 2 + 1 + 1 + 4 + 4);
    }

    #[test]
    fn connected_stage_layouts_are_the_kernels() {
        assert_eq!((size_of::<Conn>(), align_of::<Conn>()), (328, 8));
        assert_eq!(
            [
                offset_of!(Conn, id),
                offset_of!(Conn, role),
                offset_of!(Conn, hop_limit),
                offset_of!(Conn, dst_mac),
                offset_of!(Conn, reserved0),
                offset_of!(Conn, src),
                offset_of!(Conn, dst),
                offset_of!(Conn, qpn),
                offset_of!(Conn, local_comm_id),
                offset_of!(Conn, remote_comm_id),
                offset_of!(Conn, remote_qpn),
                offset_of!(Conn, sq_psn),
                offset_of!(Conn, rq_psn),
                offset_of!(Conn, service_id),
                offset_of!(Conn, pkey),
                offset_of!(Conn, srq),
                offset_of!(Conn, path_mtu),
                offset_of!(Conn, responder_resources),
                offset_of!(Conn, initiator_depth),
                offset_of!(Conn, retry_count),
                offset_of!(Conn, rnr_retry_count),
                offset_of!(Conn, max_cm_retries),
                offset_of!(Conn, remote_cm_response_timeout),
                offset_of!(Conn, local_cm_response_timeout),
                offset_of!(Conn, service_timeout),
                offset_of!(Conn, target_ack_delay),
                offset_of!(Conn, packet_life_time),
                offset_of!(Conn, reserved1),
            ],
            [0, 4, 5, 6, 12, 16, 144, 272, 276, 280, 284, 288, 292, 296, 304, 306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318]
        );
        // No padding (bytes_of relies on it): the fields' sizes add up to the struct's.
        assert_eq!(size_of::<Conn>(), 4 + 1 + 1 + 6 + 4 + 128 + 128 + 6 * 4 + 8 + 2 + 12 + 10);
        assert_eq!((size_of::<Event>(), align_of::<Event>(), offset_of!(Event, reserved), offset_of!(Event, resp)), (344, 8, 4, 8));
        assert_eq!(size_of::<Event>(), 4 + 4 + EVENT_RESP_LEN);
        // _IOW(0xB8, nr, size)
        assert_eq!(IOC_CONNECT, 0x4148_B852);
        assert_eq!(IOC_MOVING, 0x4004_B853);
        assert_eq!(IOC_QUEUE_EVENT, 0x4158_B854);
    }

    #[test]
    fn device_numbers_read_as_sysfs_shows_them() {
        assert_eq!(parse_devno("10:123\n"), Some((10, 123)));
        assert_eq!(parse_devno("10"), None);
        assert_eq!(parse_devno("x:1"), None);
    }

    #[test]
    fn a_response_head_reads_in_host_order() {
        let mut r = [0u8; EVENT_RESP_LEN];
        r[0..8].copy_from_slice(&0x55d0_c0de_1000u64.to_ne_bytes());
        r[8..12].copy_from_slice(&7u32.to_ne_bytes());
        r[12..16].copy_from_slice(&9u32.to_ne_bytes());
        r[16..20].copy_from_slice(&(-110i32).to_ne_bytes());
        assert_eq!(resp_head(&r), RespHead { uid: 0x55d0_c0de_1000, id: 7, event: 9, status: -110 });
        // The ioctls on a file without them fail with the errno, never succeed.
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        assert_eq!(set_moving(fd, true).unwrap_err().raw_os_error(), Some(libc::ENOTTY));
        assert_eq!(queue_event(fd, &Event { id: 7, reserved: 0, resp: r }).unwrap_err().raw_os_error(), Some(libc::ENOTTY));
    }

    #[test]
    fn a_bind_write_is_the_header_then_the_command() {
        let b = encode(&bind_cmd(5, &"10.0.0.1:18515".parse().unwrap()));
        assert_eq!(b.len(), 8 + 136);
        // Header: cmd 20, in 136, out 0 (host order).
        assert_eq!(&b[0..8], &[&20u32.to_ne_bytes()[..], &136u16.to_ne_bytes(), &0u16.to_ne_bytes()].concat()[..]);
        // id 5, addr_size 16 (sockaddr_in), reserved 0.
        assert_eq!(&b[8..16], &[&5u32.to_ne_bytes()[..], &16u16.to_ne_bytes(), &[0, 0]].concat()[..]);
        // sockaddr_in: AF_INET, port 18515 = 0x4853 big endian, 10.0.0.1, zeros.
        assert_eq!(&b[16..18], &2u16.to_ne_bytes());
        assert_eq!(&b[18..24], &[0x48, 0x53, 10, 0, 0, 1]);
        assert!(b[24..].iter().all(|x| *x == 0));

        let b = encode(&bind_cmd(7, &"[fe80::1%3]:7471".parse().unwrap()));
        assert_eq!(&b[12..14], &28u16.to_ne_bytes(), "addr_size of a sockaddr_in6");
        assert_eq!(&b[16..18], &10u16.to_ne_bytes(), "AF_INET6");
        assert_eq!(&b[18..20], &[0x1d, 0x2f]);
        assert_eq!(&b[20..24], &[0, 0, 0, 0], "flow info");
        assert_eq!(&b[24..40], &[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&b[40..44], &3u32.to_ne_bytes(), "scope id");
        assert!(b[44..].iter().all(|x| *x == 0));
    }

    #[test]
    fn a_listen_write_is_the_header_then_the_command() {
        let b = encode(&Listen { id: 3, backlog: 1024 });
        let want: Vec<u8> = [
            7u32.to_ne_bytes().to_vec(),
            8u16.to_ne_bytes().to_vec(),
            0u16.to_ne_bytes().to_vec(),
            3u32.to_ne_bytes().to_vec(),
            1024u32.to_ne_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(b, want);
        let o = encode(&SetOption { optval: 0x1000, id: 3, level: 0, optname: OPTION_ID_REUSEADDR, optlen: 4 });
        assert_eq!((&o[0..4], &o[4..6], o.len()), (&14u32.to_ne_bytes()[..], &24u16.to_ne_bytes()[..], 32));
    }

    #[test]
    fn short_and_failed_writes_are_errors() {
        assert!(written(16, 16).is_ok());
        let e = written(8, 16).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        assert!(e.to_string().contains("short write to the rdma_cm file: 8 of 16 bytes"), "{e}");
        // A write that fails is an error with its errno (a read-only file: EBADF).
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = listen(std::os::fd::AsRawFd::as_raw_fd(&f), 1, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        // And an ioctl on a file without it.
        let e = create_id(std::os::fd::AsRawFd::as_raw_fd(&f), &CreateId::default()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY), "{e}");
    }
}
