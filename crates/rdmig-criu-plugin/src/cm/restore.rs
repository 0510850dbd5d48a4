//! RESTORE_EXT_FILE of an rdma_cm file (inside the restored task, with CRIU's credentials): opens
//! a new `/dev/infiniband/rdma_cm` and recreates every saved CM ID on it: the ID with its old
//! number, user context and events read (`RDMIG_UCMA_IOC_CREATE_ID`), its options, its address
//! (`UCMA_CMD_BIND`) and, for a listening one, its backlog (`UCMA_CMD_LISTEN`). The file is
//! returned for CRIU to put at the process's fd. On any failure the new file is closed, which
//! destroys every ID made on it.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::abi;
use crate::common::RestoreError;
use crate::image::ucma::{self, CmFile, CmId, CmState, KnownDevice};
use crate::log::info;
use crate::objects::limits;

/// CM IDs of one file. librdmacm programs hold a handful (a listener, its connections); each
/// ID is a kernel object the restore creates as root.
pub const MAX_IDS: usize = 4096;
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
    set_flags(&file, l.file.flags).map_err(|e| e.within(&who))?;
    info!("{who}: recreated {} CM ID(s) with their numbers, options and addresses", l.file.ids.len());
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
    let mut seen = std::collections::BTreeSet::new();
    for c in &f.ids {
        if !seen.insert(c.id) {
            return Err(format!("CM ID {} is saved twice", c.id));
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
    Ok(())
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
    if let Some(src) = c.state.src() {
        abi::bind(fd, c.id, &src).map_err(|e| failed(bind_hint(e.raw_os_error(), &src))(e))?;
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
        CmFile { id: 9, pid: 42, fd: 5, ns_pid: None, flags: 2, ids, devices: Vec::new() }
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
        assert!(e.contains("rdmig-ucma-9.img: bad JSON header: unknown variant `connect`, expected one of `idle`, `addr_bound`, `listen`"), "{e}");
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

    /// The seeds of the fuzz target `ucma` (fuzz/corpus/ucma/): the fdinfo of a listening, a bound
    /// and an idle ID, and the image the dump saves from it, which passes the restore's checks
    /// (`RDMIG_WRITE_FUZZ_SEEDS=1 cargo test` rewrites them).
    #[test]
    fn fuzz_seeds_are_current() {
        let text = crate::cm::fdinfo::tests::GOOD;
        let ids = crate::cm::saved_ids(&crate::cm::fdinfo::parse(text).unwrap().unwrap()).unwrap();
        let f = CmFile { id: 9, pid: 4242, fd: 5, ns_pid: Some(4242), flags: 0o4002, ids, devices: Vec::new() };
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
