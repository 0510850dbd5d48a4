//! RESTORE_EXT_FILE of an rdma_cm file (inside the restored task, with CRIU's credentials): opens
//! a new `/dev/infiniband/rdma_cm` and recreates every saved CM ID on it: the ID with its old
//! number, user context and events read (`RDMIG_UCMA_IOC_CREATE_ID`), its options, its address
//! (`UCMA_CMD_BIND`; not for a passive connected ID, which holds no port of its own), for a
//! listening one its backlog (`UCMA_CMD_LISTEN`), for a connected one its connection
//! (`RDMIG_UCMA_IOC_CONNECT`, no handshake). Then the events the process had not read are queued
//! again, in order (`RDMIG_UCMA_IOC_QUEUE_EVENT`), and O_NONBLOCK set where it was. The file is
//! returned for CRIU to put at the process's fd. On any failure the new file is closed, which
//! destroys every ID made on it.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::abi;
use crate::common::RestoreError;
use crate::image::ucma::{self, CmFile, CmId, CmState, ConnParams, KnownDevice, QueuedEvent, Role};
use crate::log::info;
use crate::objects::limits;

/// CM IDs of one file. librdmacm programs hold a handful (a listener, its connections); each
/// ID is a kernel object the restore creates as root.
pub const MAX_IDS: usize = 4096;
/// Events queued on one file and not read yet that the dump saves and the restore queues again.
pub const MAX_EVENTS: usize = 4096;
/// Longest device name (`IB_DEVICE_NAME_MAX` - 1).
const MAX_DEV_NAME: usize = limits::MAX_NAME;
/// rdma_listen takes an `int`; rdma_ucm lowers anything above its `max_backlog` to it.
const MAX_BACKLOG: u32 = i32::MAX as u32;

/// RESTORE_EXT_FILE for file id `id` with CRIU's images directory at `dir`: `Ok(None)` when it
/// has no rdma_cm image.
pub fn restore_file(id: u32, dir: &Path) -> Result<Option<RawFd>, RestoreError> {
    let path = dir.join(ucma::file_name(id));
    if !path.exists() {
        return Ok(None);
    }
    // With the reason (serde's, the system's): CRIU's log shows only the message.
    let l = ucma::read_file(&path).map_err(|e| RestoreError::Refused(with_sources(&e)))?;
    let name = ucma::file_name(id);
    if l.file.id != id {
        return Err(RestoreError::Refused(format!("{name}: holds file id {}, not {id}", l.file.id)));
    }
    check(&l.file).map_err(|e| RestoreError::Refused(format!("{name}: {e}")))?;
    let who = format!("rdma_cm file of pid {} fd {}", l.file.pid, l.file.fd);
    let file = open_rdma_cm().map_err(|e| e.within(&who))?;
    alias_devices(file.as_raw_fd(), &l.file.devices).map_err(|e| e.within(&who))?;
    for cm in &l.file.ids {
        recreate(file.as_raw_fd(), cm).map_err(|e| e.within(&who))?;
    }
    // After every ID: each event is for an ID of the file.
    for (n, e) in l.file.events.iter().enumerate() {
        requeue(file.as_raw_fd(), n, e).map_err(|e| e.within(&who))?;
    }
    set_flags(&file, l.file.flags).map_err(|e| e.within(&who))?;
    let connected = l.file.ids.iter().filter(|c| matches!(c.state, CmState::Connected { .. })).count();
    info!(
        "{who}: recreated {} CM ID(s) ({connected} connected) with their numbers, options and addresses, and queued {} event(s) again",
        l.file.ids.len(),
        l.file.events.len()
    );
    Ok(Some(file.into_raw_fd()))
}

/// Names this host's devices by the GUIDs the process knows (those of the image's devices with
/// the same name), so that librdmacm finds its device for the IDs that reach them. The aliases
/// are the process's (the caller's: this runs in the restored task), for all of its rdma_cm
/// files: the restore of an earlier file of the process has made them already (EEXIST).
fn alias_devices(fd: RawFd, devices: &[KnownDevice]) -> Result<(), RestoreError> {
    for d in devices {
        let Some(own) = std::fs::read_to_string(format!("{}/{}/node_guid", super::SYS_IB, d.name)).ok().and_then(|t| super::parse_node_guid(&t)) else {
            info!("no RDMA device {} here: nothing to name by its GUID {:#018x}", d.name, d.node_guid);
            continue;
        };
        if own == d.node_guid {
            continue;
        }
        match abi::dev_alias(fd, &abi::DevAlias { node_guid: own, alias_guid: d.node_guid }) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            r => r,
        }
        .map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENOTTY) { " (this rdma_ucm lacks softroce patch 24: load rdmig's rdma_ucm)" } else { "" };
            RestoreError::Refused(format!("naming device {} ({own:#018x}) by the GUID the process knows, {:#018x}: {e}{hint}", d.name, d.node_guid))
        })?;
        info!("device {} ({own:#018x}) is named {:#018x} to the process, as where it was dumped", d.name, d.node_guid);
    }
    Ok(())
}

/// An error's message followed by those of its sources.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

/// The restore's checks of an image's values before anything is created: the count of IDs,
/// their numbers, and every value the kernel is given. (The image's types already keep the
/// states, port spaces and QP types to the ones the restore knows.)
pub fn check(f: &CmFile) -> Result<(), String> {
    if f.ids.len() > MAX_IDS {
        return Err(format!("{} CM IDs, more than the {MAX_IDS} a file may have", f.ids.len()));
    }
    limits::fd("the rdma_cm file", f.fd)?;
    if f.devices.len() > super::MAX_DEVICES {
        return Err(format!("{} devices, more than {}", f.devices.len(), super::MAX_DEVICES));
    }
    for d in &f.devices {
        // A name goes into a sysfs path: one plain component.
        if d.name.is_empty()
            || d.name.len() > MAX_DEV_NAME
            || d.name.starts_with('.')
            || !d.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("device name {:?} is not a device name", d.name.chars().take(80).collect::<String>()));
        }
    }
    if f.events.len() > MAX_EVENTS {
        return Err(format!("{} queued events, more than the {MAX_EVENTS} a file may have", f.events.len()));
    }
    let mut seen = std::collections::BTreeMap::new();
    for c in &f.ids {
        if seen.insert(c.id, c.uid).is_some() {
            return Err(format!("CM ID {} is saved twice", c.id));
        }
        if c.id > i32::MAX as u32 {
            return Err(format!("CM ID {} is above {}, the largest ID number", c.id, i32::MAX));
        }
        if let CmState::Connected { qpn, src, dst, conn, .. } = &c.state {
            check_conn(c, *qpn, src, dst, conn).map_err(|e| format!("CM ID {} (connected to {dst}): {e}", c.id))?;
        }
        if !c.ps.allows(c.qp_type) {
            return Err(format!("CM ID {}: QP type {:?} in port space {:?}, which rdma_ucm does not create", c.id, c.qp_type, c.ps));
        }
        if let CmState::Listen { backlog, .. } = c.state {
            limits::range(&format!("CM ID {}: backlog", c.id), backlog, 0, MAX_BACKLOG)?;
        }
        if let Some(d) = &c.dev {
            if d.name.len() > MAX_DEV_NAME {
                return Err(format!("CM ID {}: device name of {} bytes, more than {MAX_DEV_NAME}", c.id, d.name.len()));
            }
        }
    }
    for (n, e) in f.events.iter().enumerate() {
        let name = ucma::event_name(e.resp.event());
        let Some(uid) = seen.get(&e.id) else {
            return Err(format!("queued event {n} ({name}) is for CM ID {}, which the image does not hold", e.id));
        };
        if e.resp.id() != e.id || e.resp.uid() != *uid {
            return Err(format!(
                "queued event {n} ({name}) for CM ID {}: its response names ID {} with uid {:#x}, not that ID",
                e.id,
                e.resp.id(),
                e.resp.uid()
            ));
        }
        if abi::not_requeueable(e.resp.event()).is_some() {
            return Err(format!("queued event {n} for CM ID {} is {name}, which cannot be queued again", e.id));
        }
    }
    Ok(())
}

/// The values of a connected ID against what the IB CM can hold (the kernel checks them too;
/// these are the ones whose width the IB spec fixes).
fn check_conn(c: &CmId, qpn: u32, src: &std::net::SocketAddr, dst: &std::net::SocketAddr, p: &ConnParams) -> Result<(), String> {
    if !matches!(c.ps, ucma::PortSpace::Tcp | ucma::PortSpace::Ib) || c.qp_type != ucma::QpType::Rc {
        return Err(format!("QP type {:?} in port space {:?}: connections are RC in port space TCP or IB", c.qp_type, c.ps));
    }
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(format!("from {src}: addresses of two families"));
    }
    limits::range("QP number", qpn, 1, 0x00ff_ffff)?;
    limits::range("remote QP number", p.remote_qpn, 0, 0x00ff_ffff)?;
    limits::range("send PSN", p.sq_psn, 0, 0x00ff_ffff)?;
    limits::range("receive PSN", p.rq_psn, 0, 0x00ff_ffff)?;
    limits::range("path MTU", u32::from(p.path_mtu), 1, 5)?;
    limits::range("retry count", u32::from(p.retry_count), 0, 7)?;
    limits::range("RNR retry count", u32::from(p.rnr_retry_count), 0, 7)?;
    limits::range("max CM retries", u32::from(p.max_cm_retries), 0, 15)?;
    limits::range("remote CM response timeout", u32::from(p.remote_cm_response_timeout), 0, 31)?;
    limits::range("local CM response timeout", u32::from(p.local_cm_response_timeout), 0, 31)?;
    Ok(())
}

/// `struct rdmig_ucma_conn` for connected ID `id`: the one place its fields are filled.
pub fn conn_cmd(id: u32, role: Role, src: &std::net::SocketAddr, dst: &std::net::SocketAddr, qpn: u32, p: &ConnParams) -> abi::Conn {
    abi::Conn {
        id,
        role: role.value(),
        hop_limit: p.hop_limit,
        dst_mac: p.dmac,
        reserved0: [0; 4],
        src: abi::sockaddr(src).0,
        dst: abi::sockaddr(dst).0,
        qpn,
        local_comm_id: p.local_comm_id,
        remote_comm_id: p.remote_comm_id,
        remote_qpn: p.remote_qpn,
        sq_psn: p.sq_psn,
        rq_psn: p.rq_psn,
        service_id: p.service_id,
        pkey: p.pkey,
        srq: u8::from(p.srq),
        path_mtu: p.path_mtu,
        responder_resources: p.responder_resources,
        initiator_depth: p.initiator_depth,
        retry_count: p.retry_count,
        rnr_retry_count: p.rnr_retry_count,
        max_cm_retries: p.max_cm_retries,
        remote_cm_response_timeout: p.remote_cm_response_timeout,
        local_cm_response_timeout: p.local_cm_response_timeout,
        service_timeout: p.service_timeout,
        target_ack_delay: p.target_ack_delay,
        packet_life_time: p.packet_life_time,
        reserved1: [0; 10],
    }
}

/// `struct rdmig_ucma_event` for a saved event.
pub fn event_cmd(e: &QueuedEvent) -> abi::Event {
    abi::Event { id: e.id, reserved: 0, resp: e.resp.0 }
}

/// Queues saved event `n` again on rdma_cm file `fd`.
fn requeue(fd: RawFd, n: usize, e: &QueuedEvent) -> Result<(), RestoreError> {
    abi::queue_event(fd, &event_cmd(e)).map_err(|err| {
        let hint = match err.raw_os_error() {
            Some(libc::ENOTTY) => ": this rdma_ucm has no RDMIG_UCMA_IOC_QUEUE_EVENT (older than the plugin): update rdmig's rdma_ucm",
            _ => "",
        };
        RestoreError::Sys { what: format!("queueing event {n} ({}) for CM ID {} again{hint}", ucma::event_name(e.resp.event()), e.id), source: err }
    })
}

/// What RDMIG_UCMA_IOC_CONNECT failing with `errno` means on the restoring host.
fn connect_hint(errno: Option<i32>, src: &std::net::SocketAddr, local_comm_id: u32) -> String {
    match errno {
        Some(libc::EADDRNOTAVAIL) => format!("connecting: {src} is not an address of this host (was it moved?)"),
        Some(libc::ENODEV) => format!("connecting: address {src} is on no RDMA device of this host"),
        Some(libc::EADDRINUSE) => format!("connecting: another IB CM ID of this host has local communication ID {local_comm_id:#x}"),
        Some(libc::ENOTTY) => "connecting: this rdma_ucm has no RDMIG_UCMA_IOC_CONNECT (older than the plugin): update rdmig's rdma_ucm".into(),
        Some(libc::EINVAL) => "connecting: rdma_ucm refused a value of the connection (RDMIG_UCMA_IOC_CONNECT: EINVAL)".into(),
        _ => "connecting (RDMIG_UCMA_IOC_CONNECT)".into(),
    }
}

/// What the bind of an address failing with `errno` means on the restoring host.
fn bind_hint(errno: Option<i32>, addr: &std::net::SocketAddr) -> String {
    match errno {
        Some(libc::EADDRNOTAVAIL) => format!("address {addr} is not on this host (was it moved?)"),
        Some(libc::EADDRINUSE) => format!("address {addr} is in use on this host"),
        Some(libc::ENODEV) => format!("address {addr} is on no RDMA device of this host"),
        _ => format!("binding address {addr} failed"),
    }
}

/// Recreates CM ID `c` on rdma_cm file `fd`: the ID, then its options (REUSEADDR only while it
/// is unbound, as rdma_cm requires), its address, and its listen.
fn recreate(fd: RawFd, c: &CmId) -> Result<(), RestoreError> {
    let who = format!("CM ID {} (uid {:#x}, {})", c.id, c.uid, c.state.name());
    let who = &who;
    let failed = |what: String| move |e: std::io::Error| RestoreError::Sys { what: format!("{who}: {what}"), source: e };
    let req = abi::CreateId { uid: c.uid, id: c.id, ps: c.ps.value(), qp_type: c.qp_type.value(), events_reported: c.events_reported, ..Default::default() };
    abi::create_id(fd, &req).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EBUSY) => format!("ID number {} is taken on this host", c.id),
            Some(libc::ENOTTY) => "this rdma_ucm has no RDMIG_UCMA_IOC_CREATE_ID: load rdmig's rdma_ucm (softroce)".into(),
            Some(libc::EPERM) => "creating an ID with a given number needs CAP_CHECKPOINT_RESTORE in the initial user namespace".into(),
            _ => "RDMIG_UCMA_IOC_CREATE_ID failed".into(),
        };
        failed(hint)(e)
    })?;
    let o = c.options;
    if o.reuseaddr {
        abi::set_int_option(fd, c.id, abi::OPTION_ID_REUSEADDR, true).map_err(failed("set RDMA_OPTION_ID_REUSEADDR".into()))?;
    }
    if let Some(v) = o.afonly {
        abi::set_int_option(fd, c.id, abi::OPTION_ID_AFONLY, v).map_err(failed(format!("set RDMA_OPTION_ID_AFONLY to {}", u8::from(v))))?;
    }
    if let Some(t) = o.tos {
        abi::set_tos(fd, c.id, t).map_err(failed(format!("set RDMA_OPTION_ID_TOS to {t}")))?;
    }
    // The ACK timeout (RDMA_OPTION_ID_ACK_TIMEOUT) is not in the fdinfo: left at the default.
    if let Some(src) = c.state.bind_to() {
        abi::bind(fd, c.id, &src).map_err(|e| failed(bind_hint(e.raw_os_error(), &src))(e))?;
    }
    if let CmState::Connected { role, src, dst, qpn, conn } = &c.state {
        abi::connect(fd, &conn_cmd(c.id, *role, src, dst, *qpn, conn)).map_err(|e| failed(connect_hint(e.raw_os_error(), src, conn.local_comm_id))(e))?;
    }
    if let CmState::Listen { src, backlog } = c.state {
        abi::listen(fd, c.id, backlog).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EADDRINUSE) { format!("listen on {src}: in use on this host") } else { format!("listen on {src}") };
            failed(hint)(e)
        })?;
    }
    Ok(())
}

/// O_NONBLOCK where the process had set it (CRIU does not restore a plugin file's status flags).
fn set_flags(f: &OwnedFd, flags: i32) -> Result<(), RestoreError> {
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: fcntl on a descriptor we own; F_SETFL has no memory effects.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(RestoreError::sys("set O_NONBLOCK")(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Opens this host's rdma_cm device, following no symlink, and checks that what was opened is
/// the char device sysfs names.
pub fn open_rdma_cm() -> Result<OwnedFd, RestoreError> {
    let (major, minor) = super::devno().ok_or_else(|| {
        RestoreError::Refused(format!(
            "this host has no rdma_cm device ({} is missing or unreadable): load rdmig's rdma_ucm module (softroce) before restoring",
            super::SYS_DEV
        ))
    })?;
    open_checked(super::DEV_PATH, major, minor)
}

/// Opens `path` read-write, following no symlink, and checks with `fstat` that it is char
/// device `major:minor`.
fn open_checked(path: &str, major: u32, minor: u32) -> Result<OwnedFd, RestoreError> {
    crate::device::open_device(path, |mode, rdev| check_stat(mode, rdev, major, minor))
}

/// Whether a file's `st_mode` and `st_rdev` are those of char device `major:minor`.
fn check_stat(mode: libc::mode_t, rdev: libc::dev_t, major: u32, minor: u32) -> Result<(), String> {
    if mode & libc::S_IFMT != libc::S_IFCHR {
        return Err(format!("is not a character device (mode {mode:#o})"));
    }
    let (ma, mi) = (libc::major(rdev), libc::minor(rdev));
    if (ma, mi) != (major, minor) {
        return Err(format!("is char device {ma}:{mi}, not rdma_cm ({major}:{minor} on this host)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ucma::{CmOptions, PortSpace, QpType};

    fn file(ids: Vec<CmId>) -> CmFile {
        CmFile { id: 9, pid: 42, fd: 5, ns_pid: None, flags: 2, ids, devices: Vec::new(), events: Vec::new() }
    }

    fn id(n: u32, state: CmState) -> CmId {
        CmId { id: n, uid: 0x10, ps: PortSpace::Tcp, qp_type: QpType::Rc, events_reported: 0, options: CmOptions::default(), state, dev: None }
    }

    #[test]
    fn image_values_are_checked_before_use() {
        let listen = CmState::Listen { src: "10.0.0.1:18515".parse().unwrap(), backlog: 128 };
        assert!(check(&file(vec![id(1, CmState::Idle), id(2, listen)])).is_ok());
        let many: Vec<CmId> = (0..=MAX_IDS as u32).map(|n| id(n, CmState::Idle)).collect();
        assert_eq!(check(&file(many)).unwrap_err(), "4097 CM IDs, more than the 4096 a file may have");
        assert_eq!(check(&file(vec![id(1, CmState::Idle), id(1, listen)])).unwrap_err(), "CM ID 1 is saved twice");
        let big = CmState::Listen { src: "10.0.0.1:1".parse().unwrap(), backlog: u32::MAX };
        assert!(check(&file(vec![id(1, big)])).unwrap_err().contains("CM ID 1: backlog is 4294967295, out of range"));
        let mut ud = id(1, CmState::Idle);
        ud.qp_type = QpType::Ud;
        assert!(check(&file(vec![ud])).unwrap_err().contains("QP type Ud in port space Tcp"));
        let mut long = id(1, CmState::Idle);
        long.dev = Some(crate::image::ucma::BoundDev { name: "x".repeat(64), port: 1 });
        assert!(check(&file(vec![long])).unwrap_err().contains("device name of 64 bytes"));
        let mut f = file(vec![]);
        f.fd = -1;
        assert!(check(&f).unwrap_err().contains("is fd -1"));
    }

    fn connected(role: Role) -> CmState {
        CmState::Connected {
            role,
            src: "10.0.0.1:40000".parse().unwrap(),
            dst: "10.0.0.2:18515".parse().unwrap(),
            qpn: 0x12,
            conn: crate::cm::fdinfo::tests::conn(),
        }
    }

    #[test]
    fn a_connection_is_encoded_at_the_kernels_offsets() {
        let p = crate::cm::fdinfo::tests::conn();
        let c = conn_cmd(6, Role::Active, &"10.0.0.1:40000".parse().unwrap(), &"10.0.0.2:18515".parse().unwrap(), 0x12, &p);
        let b = abi::bytes_of(&c);
        assert_eq!(b.len(), 328);
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(u32_at(0), 6, "id@0");
        assert_eq!((b[4], b[5]), (1, 64), "role@4 (active), hop_limit@5");
        assert_eq!(&b[6..12], &[0x52, 0x54, 0, 0x12, 0x34, 0x56], "dst_mac@6");
        assert_eq!(&b[12..16], &[0; 4], "reserved0@12");
        // src@16: sockaddr_in AF_INET, port 40000 (0x9c40) big endian, 10.0.0.1.
        assert_eq!(&b[16..18], &(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(&b[18..24], &[0x9c, 0x40, 10, 0, 0, 1]);
        assert!(b[24..144].iter().all(|x| *x == 0));
        // dst@144: port 18515 (0x4853), 10.0.0.2.
        assert_eq!(&b[146..152], &[0x48, 0x53, 10, 0, 0, 2]);
        assert!(b[152..272].iter().all(|x| *x == 0));
        assert_eq!(
            [u32_at(272), u32_at(276), u32_at(280), u32_at(284), u32_at(288), u32_at(292)],
            [0x12, 0x1234_5678, 0x9abc_def0, 17, 0x00ab_cdef, 0x0012_3456],
            "qpn@272 local_comm_id@276 remote_comm_id@280 remote_qpn@284 sq_psn@288 rq_psn@292"
        );
        assert_eq!(u64::from_ne_bytes(b[296..304].try_into().unwrap()), 0x0106_0000_0000_4853, "service_id@296");
        assert_eq!(u16::from_ne_bytes(b[304..306].try_into().unwrap()), 0xffff, "pkey@304");
        // srq@306 path_mtu@307 responder_resources@308 initiator_depth@309 retry_count@310
        // rnr_retry_count@311 max_cm_retries@312 remote_cm_response_timeout@313
        // local_cm_response_timeout@314 service_timeout@315 target_ack_delay@316
        // packet_life_time@317.
        assert_eq!(&b[306..318], &[0, 3, 1, 1, 7, 7, 15, 20, 20, 0, 0, 18]);
        assert_eq!(&b[318..328], &[0; 10], "reserved1@318");
        let c = conn_cmd(7, Role::Passive, &"[2001:db8::1]:18515".parse().unwrap(), &"[2001:db8::2]:40000".parse().unwrap(), 1, &ConnParams { srq: true, ..p });
        let b = abi::bytes_of(&c);
        assert_eq!((b[4], b[306]), (2, 1), "passive, srq");
        assert_eq!(&b[16..18], &(libc::AF_INET6 as u16).to_ne_bytes());
        assert_eq!(&b[144..146], &(libc::AF_INET6 as u16).to_ne_bytes());

        // An event: id@0 reserved@4 resp@8, 344 bytes.
        let r = crate::cm::fdinfo::tests::resp(0x55d0_c0de_3000, 6, 9, 0);
        let e = event_cmd(&QueuedEvent { id: 6, resp: r.clone() });
        let b = abi::bytes_of(&e);
        assert_eq!(b.len(), 344);
        assert_eq!((&b[0..4], &b[4..8]), (&6u32.to_ne_bytes()[..], &[0u8; 4][..]));
        assert_eq!(&b[8..], &r.0[..]);
    }

    #[test]
    fn connections_and_events_in_an_image_are_checked_before_use() {
        let uid = 0x10;
        let ok = |f: &CmFile| check(f);
        let mut f = file(vec![id(6, connected(Role::Active)), id(7, connected(Role::Passive))]);
        f.events = vec![QueuedEvent { id: 6, resp: crate::cm::fdinfo::tests::resp(uid, 6, 9, 0) }];
        assert_eq!(ok(&f), Ok(()));
        let with = |edit: &dyn Fn(&mut CmState)| {
            let mut g = f.clone();
            edit(&mut g.ids[0].state);
            check(&g).unwrap_err()
        };
        let conn = |edit: &dyn Fn(&mut ConnParams)| {
            with(&|s: &mut CmState| {
                if let CmState::Connected { conn, .. } = s {
                    edit(conn)
                }
            })
        };
        assert_eq!(conn(&|c| c.path_mtu = 6), "CM ID 6 (connected to 10.0.0.2:18515): path MTU is 6, out of range (1..=5)");
        assert!(conn(&|c| c.path_mtu = 0).contains("path MTU is 0"));
        assert!(conn(&|c| c.remote_qpn = 1 << 24).contains("remote QP number is 16777216, out of range"));
        assert!(conn(&|c| c.sq_psn = 1 << 24).contains("send PSN"));
        assert!(conn(&|c| c.rq_psn = u32::MAX).contains("receive PSN"));
        assert!(conn(&|c| c.retry_count = 8).contains("retry count is 8"));
        assert!(conn(&|c| c.rnr_retry_count = 8).contains("RNR retry count is 8"));
        assert!(conn(&|c| c.max_cm_retries = 16).contains("max CM retries is 16"));
        assert!(conn(&|c| c.remote_cm_response_timeout = 32).contains("remote CM response timeout is 32"));
        assert!(conn(&|c| c.local_cm_response_timeout = 255).contains("local CM response timeout is 255"));
        assert!(with(&|s| if let CmState::Connected { qpn, .. } = s {
            *qpn = 0
        })
        .contains("QP number is 0, out of range"));
        assert!(with(&|s| if let CmState::Connected { dst, .. } = s {
            *dst = "[::1]:5".parse().unwrap()
        })
        .contains("addresses of two families"));
        let mut ud = f.clone();
        ud.ids[0].ps = crate::image::ucma::PortSpace::Ib;
        ud.ids[0].qp_type = crate::image::ucma::QpType::Ud;
        assert!(check(&ud).unwrap_err().contains("QP type Ud in port space Ib: connections are RC in port space TCP or IB"));
        let mut big = f.clone();
        big.ids[1].id = i32::MAX as u32 + 1;
        assert!(check(&big).unwrap_err().contains("is above 2147483647"));

        // Events: for an ID of the file, whose number and uid their response carries, of a kind
        // that can be queued again, and not too many.
        let ev = |e: QueuedEvent| {
            let mut g = f.clone();
            g.events = vec![e];
            check(&g)
        };
        let resp = crate::cm::fdinfo::tests::resp;
        assert!(ev(QueuedEvent { id: 9, resp: resp(uid, 9, 9, 0) })
            .unwrap_err()
            .contains("queued event 0 (RDMA_CM_EVENT_ESTABLISHED) is for CM ID 9, which the image does not hold"));
        assert!(ev(QueuedEvent { id: 6, resp: resp(uid, 7, 9, 0) }).unwrap_err().contains("its response names ID 7 with uid 0x10, not that ID"));
        assert!(ev(QueuedEvent { id: 6, resp: resp(0x11, 6, 9, 0) }).unwrap_err().contains("its response names ID 6 with uid 0x11"));
        for kind in [4, 11, 12, 13] {
            assert!(ev(QueuedEvent { id: 6, resp: resp(uid, 6, kind, 0) }).unwrap_err().contains("which cannot be queued again"), "{kind}");
        }
        let mut many = f.clone();
        many.events = vec![f.events[0].clone(); MAX_EVENTS + 1];
        assert_eq!(check(&many).unwrap_err(), "4097 queued events, more than the 4096 a file may have");
    }

    #[test]
    fn restore_order_binds_only_what_holds_a_port() {
        assert_eq!(connected(Role::Active).bind_to(), Some("10.0.0.1:40000".parse().unwrap()));
        assert_eq!(connected(Role::Passive).bind_to(), None, "a passive ID is connected idle");
        assert!(connect_hint(Some(libc::EADDRINUSE), &"10.0.0.1:1".parse().unwrap(), 0x1234).contains("local communication ID 0x1234"));
        assert!(connect_hint(Some(libc::EADDRNOTAVAIL), &"10.0.0.1:1".parse().unwrap(), 1).contains("10.0.0.1:1 is not an address of this host"));
    }

    #[test]
    fn device_names_in_an_image_are_single_plain_components() {
        let mut f = file(vec![id(3, CmState::Idle)]);
        f.devices = vec![KnownDevice { name: "rxe0".into(), node_guid: 1 }, KnownDevice { name: "mlx5_0".into(), node_guid: 2 }];
        assert!(check(&f).is_ok());
        for bad in ["", "..", "../../etc", "rxe0/x", ".hidden", "a b", &"x".repeat(200)] {
            f.devices = vec![KnownDevice { name: bad.into(), node_guid: 1 }];
            assert!(check(&f).unwrap_err().contains("is not a device name"), "{bad:?}");
        }
        f.devices = (0..=super::super::MAX_DEVICES).map(|i| KnownDevice { name: format!("rxe{i}"), node_guid: 1 }).collect();
        assert!(check(&f).unwrap_err().contains("devices, more than"));
    }

    #[test]
    fn an_unknown_state_in_an_image_is_refused_by_the_decode() {
        let json = serde_json::to_string(&file(vec![id(3, CmState::Idle)])).unwrap().replace(r#""kind":"idle""#, r#""kind":"connect""#);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(ucma::file_name(9));
        // Framed and checksummed right: only the state is wrong.
        let mut bytes = ucma::MAGIC.to_vec();
        bytes.extend_from_slice(&ucma::FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(json.as_bytes());
        let crc = crc32(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let e = restore_file(9, d.path()).unwrap_err().to_string();
        assert!(e.contains("rdmig-ucma-9.img: bad JSON header: unknown variant `connect`, expected one of `idle`, `addr_bound`, `listen`, `connected`"), "{e}");
    }

    /// CRC-32 (IEEE), bit by bit: the image's checksum without a dependency of the plugin.
    fn crc32(b: &[u8]) -> u32 {
        let mut c = !0u32;
        for x in b {
            c ^= u32::from(*x);
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
            }
        }
        !c
    }

    #[test]
    fn other_files_and_other_ids_are_not_restored_here() {
        let d = tempfile::tempdir().unwrap();
        assert!(restore_file(9, d.path()).unwrap().is_none(), "no rdma_cm image for this id");
        std::fs::write(d.path().join(ucma::file_name(9)), ucma::encode(&file(vec![]))).unwrap();
        std::fs::rename(d.path().join(ucma::file_name(9)), d.path().join(ucma::file_name(10))).unwrap();
        assert_eq!(restore_file(10, d.path()).unwrap_err().to_string(), "rdmig-ucma-10.img: holds file id 9, not 10");
    }

    #[test]
    fn a_host_without_rdma_cm_gives_a_clear_error() {
        if super::super::devno().is_some() {
            return; // a host with rdma_ucm loaded: nothing to show here
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(ucma::file_name(9)), ucma::encode(&file(vec![id(3, CmState::Idle)]))).unwrap();
        let e = restore_file(9, d.path()).unwrap_err().to_string();
        assert_eq!(
            e,
            "rdma_cm file of pid 42 fd 5: this host has no rdma_cm device (/sys/class/misc/rdma_cm/dev is missing or unreadable): load rdmig's \
             rdma_ucm module (softroce) before restoring"
        );
    }

    #[test]
    fn only_the_rdma_cm_char_device_is_used() {
        assert!(check_stat(libc::S_IFCHR | 0o600, libc::makedev(10, 123), 10, 123).is_ok());
        assert_eq!(check_stat(libc::S_IFCHR, libc::makedev(10, 124), 10, 123).unwrap_err(), "is char device 10:124, not rdma_cm (10:123 on this host)");
        assert!(check_stat(libc::S_IFREG, libc::makedev(10, 123), 10, 123).unwrap_err().contains("not a character device"));
        let e = open_checked("/dev/null", 10, 123).unwrap_err().to_string();
        assert!(e.starts_with("/dev/null is char device 1:3, not rdma_cm"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("rdma_cm");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let e = open_checked(link.to_str().unwrap(), 10, 123).unwrap_err().to_string();
        assert!(e.contains("a symlink: refused"), "{e}");
        assert!(bind_hint(Some(libc::EADDRNOTAVAIL), &"10.0.0.1:18515".parse().unwrap()).contains("address 10.0.0.1:18515 is not on this host (was it moved?)"));
    }

    /// The seeds of the fuzz target `ucma` (fuzz/corpus/ucma/): the fdinfo of a listening, a
    /// bound, an idle and a connected ID with a queued event, and the image the dump saves from
    /// it, which passes the restore's checks (`RDMIG_WRITE_FUZZ_SEEDS=1 cargo test` rewrites them).
    #[test]
    fn fuzz_seeds_are_current() {
        let text = format!(
            "{}{}event:\tid=6 event=9 status=0 resp={}\n",
            crate::cm::fdinfo::tests::GOOD,
            crate::cm::fdinfo::tests::CONNECTED,
            crate::cm::fdinfo::tests::resp_hex(0x55d0_c0de_3000, 6, 9, 0)
        );
        let crate::cm::Saved { ids, events } = crate::cm::saved(&crate::cm::fdinfo::parse(&text).unwrap().unwrap()).unwrap();
        assert_eq!((ids.len(), events.len()), (4, 1));
        let f = CmFile { id: 9, pid: 4242, fd: 5, ns_pid: Some(4242), flags: 0o4002, ids, devices: Vec::new(), events };
        assert_eq!(check(&f), Ok(()));
        for (name, bytes) in [("fdinfo.txt", text.as_bytes().to_vec()), ("file.img", ucma::encode(&f))] {
            let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ucma").join(name);
            if std::env::var_os("RDMIG_WRITE_FUZZ_SEEDS").is_some() {
                std::fs::write(&seed, &bytes).unwrap();
            }
            assert!(
                std::fs::read(&seed).is_ok_and(|b| b == bytes),
                "{} is not the seed this test builds: RDMIG_WRITE_FUZZ_SEEDS=1 cargo test rewrites it",
                seed.display()
            );
        }
    }
}
