//! The rdma_ucm commands the restore issues on its new rdma_cm file: the write() commands of
//! Linux's `rdma/rdma_user_cm.h` (`struct rdma_ucm_cmd_hdr`, then the command; none of these has
//! a response) and rdmig's `RDMIG_UCMA_IOC_CREATE_ID` (`ucma_ckpt_abi.h` of softroce). Each
//! kernel struct is defined once here, with its layout asserted by the tests.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

// enum of rdma_user_cm.h (RDMA_USER_CM_CMD_*).
const CMD_LISTEN: u32 = 7;
const CMD_SET_OPTION: u32 = 14;
const CMD_BIND: u32 = 20;

/// `RDMA_OPTION_ID`, and its options.
const OPTION_ID: u32 = 0;
pub const OPTION_ID_TOS: u32 = 0;
pub const OPTION_ID_REUSEADDR: u32 = 1;
pub const OPTION_ID_AFONLY: u32 = 2;

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

/// `_IOW(0xB8, 0x51, struct rdmig_ucma_dev_alias)` (rdmig's ioctls share one magic).
pub const IOC_DEV_ALIAS: crate::rxe::abi::IoctlNr = nix::request_code_write!(crate::rxe::abi::IOC_MAGIC, 0x51, std::mem::size_of::<DevAlias>());

/// `_IOW(0xB8, 0x50, struct rdmig_ucma_create_id)`.
pub const IOC_CREATE_ID: crate::rxe::abi::IoctlNr = nix::request_code_write!(crate::rxe::abi::IOC_MAGIC, 0x50, std::mem::size_of::<CreateId>());

nix::ioctl_write_ptr_bad!(ioc_create_id, IOC_CREATE_ID, CreateId);
nix::ioctl_write_ptr_bad!(ioc_dev_alias, IOC_DEV_ALIAS, DevAlias);

/// A `#[repr(C)]` struct of this module made of integers (and byte arrays) without padding
/// (each one's size is asserted to be the sum of its fields' in the tests), so all of its bytes
/// are initialised. Private: nothing else can claim it.
trait Plain: Copy {}

impl Plain for CmdHdr {}
impl Plain for Bind {}
impl Plain for Listen {}
impl Plain for SetOption {}

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

/// The bytes of a plain struct.
fn bytes_of<T: Plain>(v: &T) -> &[u8] {
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

#[cfg(test)]
mod tests {
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
