//! rdma_cm files (issue 19, first step): `/dev/infiniband/rdma_cm`, the event channel of
//! librdmacm, a misc char device (major 10, a minor given at load). CRIU refuses such a file
//! unless a plugin claims it, which DUMP_EXT_FILE does here when the device number is rdma_cm's.
//!
//! The dump reads the file's CM IDs from its fdinfo (rdmig's rdma_ucm, `ucma_ckpt_abi.h`) and
//! saves them into `rdmig-ucma-<id>.img` ([`crate::image::ucma`]). This step moves IDs that
//! hold no connection: idle, bound (`rdma_bind_addr`) and listening ones, without multicast
//! groups and with no event waiting to be read; anything else is refused, naming the ID, its
//! state and why. The restore ([`restore`]) recreates them on a new rdma_cm file with their old
//! numbers, options, addresses and backlogs.

pub mod abi;
pub mod fdinfo;
pub mod restore;

use std::fs;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::common::DumpError;
use crate::image::ucma::{BoundDev, CmFile, CmId, CmOptions, CmState, KnownDevice, PortSpace, QpType};
use crate::log::info;
use crate::procfs;
use fdinfo::{event_name, CmIdLine, KernelState, UcmaInfo};

/// Where the rdma_cm device is and where sysfs gives its number (its minor is dynamic).
pub const DEV_PATH: &str = "/dev/infiniband/rdma_cm";
pub const SYS_DEV: &str = "/sys/class/misc/rdma_cm/dev";
/// Where the RDMA devices and their node GUIDs are.
pub const SYS_IB: &str = "/sys/class/infiniband";
/// The most devices an image names (the restore refuses more).
pub const MAX_DEVICES: usize = 64;

/// rdma_cm's device number on this host (`None`: rdma_ucm is not loaded).
pub fn devno() -> Option<(u32, u32)> {
    crate::device::parse_devno(&fs::read_to_string(SYS_DEV).ok()?)
}

/// Whether a char device number is rdma_cm's on this host.
pub fn is_rdma_cm(major: u32, minor: u32) -> bool {
    devno() == Some((major, minor))
}

/// DUMP_EXT_FILE for an rdma_cm file `fd` (CRIU's copy), file id `id`: saves its CM IDs into the
/// images directory `dir`, or refuses.
pub fn dump_file(fd: RawFd, id: u32, dir: RawFd) -> Result<(), DumpError> {
    let (pid, pfd) = procfs::owner(fd, &format!("rdma_cm file (file id {id})"))?;
    let who = format!("process {pid} ({}), rdma_cm file fd {pfd}", procfs::comm(pid));
    let text = crate::fdinfo::read(0, fd).map_err(DumpError::sys(format!("{who}: read /proc/self/fdinfo/{fd}")))?;
    let info = fdinfo::parse(&text).map_err(|e| DumpError::Unsupported(format!("{who}: {e}")))?.ok_or_else(|| {
        DumpError::Unsupported(format!(
            "{who}: its fdinfo lists no CM IDs (no `rdmig_ucma:` line): this is the stock rdma_ucm module; load rdmig's rdma_ucm (softroce) before \
             starting the process to checkpoint rdma_cm files"
        ))
    })?;
    let ids = saved_ids(&info).map_err(|e| DumpError::Unsupported(format!("{who}: {e}")))?;
    let summary = summary(&ids);
    let devices = known_devices(&info);
    let img = CmFile { id, pid, fd: pfd, ns_pid: procfs::ns_pid(pid), flags: procfs::fd_flags(fd), ids, devices };
    let name = crate::image::ucma::file_name(id);
    crate::dump::write_bytes(dir, &name, &crate::image::ucma::encode(&img))?;
    info!("{who}: saved as {name}: {summary}");
    Ok(())
}

/// This host's RDMA devices by the GUIDs the file's process knows them by: their own, or those
/// a restore aliased them to (the process came from elsewhere and knows the GUIDs of there).
fn known_devices(info: &UcmaInfo) -> Vec<KnownDevice> {
    let Ok(dir) = fs::read_dir(SYS_IB) else { return Vec::new() };
    let mut v: Vec<KnownDevice> = dir
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let own = parse_node_guid(&fs::read_to_string(format!("{SYS_IB}/{name}/node_guid")).ok()?)?;
            Some(KnownDevice { name, node_guid: info.known_guid(own) })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v.truncate(MAX_DEVICES);
    v
}

/// A node GUID as sysfs shows it (`0123:4567:89ab:cdef`), as one number.
pub fn parse_node_guid(text: &str) -> Option<u64> {
    let groups: Vec<&str> = text.trim().split(':').collect();
    if groups.len() != 4 || groups.iter().any(|g| g.len() != 4 || !g.bytes().all(|b| b.is_ascii_hexdigit())) {
        return None;
    }
    groups.iter().try_fold(0u64, |acc, g| Some(acc << 16 | u64::from_str_radix(g, 16).ok()?))
}

/// "2 CM ID(s): 3 listen on 10.0.0.1:18515, 5 idle".
fn summary(ids: &[CmId]) -> String {
    let each: Vec<String> = ids
        .iter()
        .map(|i| match i.state.src() {
            Some(a) => format!("{} {} on {a}", i.id, i.state.name()),
            None => format!("{} {}", i.id, i.state.name()),
        })
        .collect();
    format!("{} CM ID(s){}{}", ids.len(), if each.is_empty() { "" } else { ": " }, each.join(", "))
}

/// The refusal rules: the IDs of a file as the image keeps them, or why the file cannot be moved
/// (the first reason found, naming the ID).
pub fn saved_ids(info: &UcmaInfo) -> Result<Vec<CmId>, String> {
    // The IDs' states first: a connection is the reason that says most (its events, e.g. an
    // ESTABLISHED a process never reads, are only a consequence).
    let ids = info.ids.iter().map(saved_id).collect::<Result<Vec<_>, _>>()?;
    // An event not read yet would have to be queued again on the new file, which rdma_ucm offers
    // no way to do.
    if let Some(e) = info.events.first() {
        let whose = match info.ids.iter().find(|i| i.id == e.id) {
            Some(i) => format!("CM ID {} (uid {:#x})", i.id, i.uid),
            None => format!("CM ID {}", e.id),
        };
        return Err(format!(
            "{whose} has {} (status {}) queued and not read yet ({} event(s) queued on the file): rdmig cannot move queued rdma_cm events yet; \
             checkpoint when the process has read its events",
            event_name(e.event),
            e.status,
            info.events.len()
        ));
    }
    Ok(ids)
}

/// One ID as the image keeps it, or why it cannot be moved.
fn saved_id(l: &CmIdLine) -> Result<CmId, String> {
    let who = format!("CM ID {} (uid {:#x})", l.id, l.uid);
    let state = l.state.name();
    let peer = |how: &str| l.dst.map(|d| format!(" {how} {d}")).unwrap_or_default();
    let refuse = |what: String, why: &str| Err(format!("{who} {what}: rdmig cannot move {why} yet"));
    let cm_state = match l.state {
        KernelState::Idle => CmState::Idle,
        KernelState::AddrBound | KernelState::Listen => {
            let Some(src) = l.src else {
                return Err(format!(
                    "{who} is bound (state {state}) to an address that is neither IPv4 nor IPv6 (fdinfo src=-): rdmig can only bind IPv4 and IPv6 addresses again"
                ));
            };
            if let SocketAddr::V6(a) = src {
                // rdma_bind_addr refuses a link-local address without the interface it is on.
                if a.ip().segments()[0] & 0xffc0 == 0xfe80 && a.scope_id() == 0 {
                    return Err(format!(
                        "{who} is bound (state {state}) to link-local address {src} whose interface the fdinfo does not show: it could not be bound again"
                    ));
                }
            }
            if l.state == KernelState::Listen {
                CmState::Listen { src, backlog: l.backlog }
            } else {
                CmState::AddrBound { src }
            }
        }
        KernelState::AddrQuery | KernelState::AddrResolved | KernelState::RouteQuery | KernelState::RouteResolved => {
            return refuse(format!("is resolving an address or route (state {state}){}", peer("to")), "rdma_cm IDs that are being connected");
        }
        KernelState::Connect => return refuse(format!("is connected (state {state}){}", peer("to")), "connected rdma_cm IDs"),
        KernelState::Disconnect => return refuse(format!("is disconnecting (state {state}){}", peer("from")), "connected rdma_cm IDs"),
        KernelState::DeviceRemoval => return refuse(format!("lost its device (state {state})"), "rdma_cm IDs whose device was removed"),
        KernelState::Destroying => return refuse(format!("is being destroyed (state {state})"), "rdma_cm IDs being destroyed; retry the checkpoint"),
    };
    if l.mc > 0 {
        return refuse(format!("has joined {} multicast group(s) (state {state})", l.mc), "multicast members");
    }
    if l.qpn != 0 {
        return refuse(format!("is tied to QP {} (state {state})", l.qpn), "rdma_cm IDs with a QP");
    }
    let ps = PortSpace::from_value(l.ps).ok_or_else(|| format!("{who} has port space {:#06x}, which rdmig does not know", l.ps))?;
    let qp_type = QpType::from_value(l.qp_type).ok_or_else(|| format!("{who} has QP type {}, which rdmig does not know (RC 2 and UD 4 only)", l.qp_type))?;
    if !ps.allows(qp_type) {
        return Err(format!("{who} has QP type {qp_type:?} in port space {ps:?}, which rdma_ucm does not create"));
    }
    Ok(CmId {
        id: l.id,
        uid: l.uid,
        ps,
        qp_type,
        events_reported: l.events_reported,
        options: options(l, &cm_state),
        state: cm_state,
        dev: l.dev.as_ref().map(|(name, port)| BoundDev { name: name.clone(), port: u8::try_from(*port).unwrap_or(u8::MAX) }),
    })
}

/// The options to set on the new ID before it is bound so that, once bound, it has the old one's.
/// The fdinfo shows each option's value, not whether the process set it, so the rule is on the
/// values: REUSEADDR and TOS are off (never set) by default; AFONLY is 0 on an unbound ID, and
/// the bind sets it to 1 on an IPv4 address and to the host's `net.ipv6.bindv6only` on an IPv6
/// one (unless it was set), which the restoring host may have otherwise: an IPv6 ID's is always
/// set.
fn options(l: &CmIdLine, state: &CmState) -> CmOptions {
    let afonly = match state.src() {
        None => l.afonly.then_some(true),
        Some(SocketAddr::V4(_)) => (!l.afonly).then_some(false),
        Some(SocketAddr::V6(_)) => Some(l.afonly),
    };
    CmOptions { reuseaddr: l.reuseaddr, afonly, tos: l.tos }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> UcmaInfo {
        fdinfo::parse(text).unwrap().unwrap()
    }

    fn line(kv: &str) -> String {
        let mut base: Vec<(String, String)> =
            "id=3 uid=0x55d0c0de1000 ps=262 qp_type=2 state=idle dev=- port=0 src=- dst=- backlog=0 qpn=0 events_reported=0 reuseaddr=0 afonly=0 tos=-1 mc=0"
                .split(' ')
                .map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
                .collect();
        for w in kv.split_whitespace() {
            let (k, v) = w.split_once('=').unwrap();
            base.iter_mut().find(|(bk, _)| bk == k).unwrap().1 = v.to_string();
        }
        format!("cm_id:\t{}\n", base.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "))
    }

    fn one(kv: &str) -> Result<CmId, String> {
        saved_ids(&parsed(&format!("rdmig_ucma:\t1\n{}", line(kv)))).map(|mut v| v.remove(0))
    }

    #[test]
    fn idle_bound_and_listening_ids_are_saved() {
        let ids = saved_ids(&parsed(fdinfo::tests::GOOD)).unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(
            ids[0],
            CmId {
                id: 3,
                uid: 0x55d0_c0de_1000,
                ps: PortSpace::Tcp,
                qp_type: QpType::Rc,
                events_reported: 0,
                options: CmOptions { reuseaddr: true, afonly: None, tos: Some(32) },
                state: CmState::Listen { src: "10.0.0.1:18515".parse().unwrap(), backlog: 1024 },
                dev: Some(BoundDev { name: "rxe0".into(), port: 1 }),
            }
        );
        assert_eq!(ids[1].state, CmState::AddrBound { src: "[fe80::1%2]:7471".parse().unwrap() });
        assert_eq!((ids[1].ps, ids[1].qp_type, ids[1].events_reported), (PortSpace::Udp, QpType::Ud, 2));
        assert_eq!(ids[1].options, CmOptions { reuseaddr: false, afonly: Some(true), tos: None }, "an IPv6 ID's AFONLY is always set");
        assert_eq!((ids[2].state, ids[2].ps, ids[2].options), (CmState::Idle, PortSpace::Ib, CmOptions::default()));
        assert_eq!(summary(&ids), "3 CM ID(s): 3 listen on 10.0.0.1:18515, 4 addr_bound on [fe80::1%2]:7471, 5 idle");
        assert_eq!(summary(&[]), "0 CM ID(s)");
        // A file without IDs (an event channel only) is saved too.
        assert_eq!(saved_ids(&parsed("rdmig_ucma:\t1\n")).unwrap(), vec![]);
    }

    #[test]
    fn afonly_is_set_where_the_bind_would_not_give_it_back() {
        let o = |kv: &str| one(kv).unwrap().options.afonly;
        assert_eq!(o("afonly=0"), None, "idle, the default");
        assert_eq!(o("afonly=1"), Some(true), "idle, set by the process");
        assert_eq!(o("state=addr_bound src=10.0.0.1:1 afonly=1"), None, "what binding an IPv4 address gives");
        assert_eq!(o("state=addr_bound src=10.0.0.1:1 afonly=0"), Some(false));
        assert_eq!(o("state=addr_bound src=[::]:1 afonly=0"), Some(false), "IPv6: the sysctl of the restoring host must not decide");
        assert_eq!(o("state=listen src=[2001:db8::1]:1 afonly=1 backlog=5"), Some(true));
    }

    #[test]
    fn everything_else_is_refused_naming_the_id_its_state_and_why() {
        for (kv, want) in [
            (
                "state=connect src=10.0.0.1:40000 dst=10.0.0.2:18515 qpn=17",
                "CM ID 3 (uid 0x55d0c0de1000) is connected (state connect) to 10.0.0.2:18515: rdmig cannot move connected rdma_cm IDs yet",
            ),
            (
                "state=disconnect dst=10.0.0.2:18515",
                "CM ID 3 (uid 0x55d0c0de1000) is disconnecting (state disconnect) from 10.0.0.2:18515: rdmig cannot move connected",
            ),
            (
                "state=addr_query dst=[2001:db8::2]:1",
                "is resolving an address or route (state addr_query) to [2001:db8::2]:1: rdmig cannot move rdma_cm IDs that are being connected",
            ),
            ("state=route_resolved", "(state route_resolved): rdmig cannot move"),
            ("state=addr_resolved", "(state addr_resolved)"),
            ("state=route_query", "(state route_query)"),
            ("state=device_removal", "lost its device (state device_removal)"),
            ("state=destroying", "is being destroyed (state destroying): rdmig cannot move rdma_cm IDs being destroyed; retry"),
            (
                "ps=273 qp_type=4 state=addr_bound src=10.0.0.1:5 mc=2",
                "has joined 2 multicast group(s) (state addr_bound): rdmig cannot move multicast members yet",
            ),
            ("state=listen src=10.0.0.1:5 qpn=9", "is tied to QP 9 (state listen)"),
            ("state=addr_bound", "is bound (state addr_bound) to an address that is neither IPv4 nor IPv6"),
            ("state=listen src=[fe80::1]:5", "link-local address [fe80::1]:5 whose interface the fdinfo does not show"),
            ("ps=263", "has port space 0x0107, which rdmig does not know"),
            ("qp_type=3", "has QP type 3, which rdmig does not know"),
            ("qp_type=4", "has QP type Ud in port space Tcp, which rdma_ucm does not create"),
        ] {
            let e = one(kv).unwrap_err();
            assert!(e.contains(want), "{kv}: {e}");
            assert!(e.starts_with("CM ID 3 (uid 0x55d0c0de1000) "), "{kv}: {e}");
        }
        // A queued event refuses the file, naming the event's ID.
        let text = format!("rdmig_ucma:\t1\n{}event:\tid=3 event=4 status=0\nevent:\tid=9 event=9 status=0\n", line("state=listen src=10.0.0.1:5 backlog=4"));
        let e = saved_ids(&parsed(&text)).unwrap_err();
        assert!(
            e.starts_with("CM ID 3 (uid 0x55d0c0de1000) has RDMA_CM_EVENT_CONNECT_REQUEST (status 0) queued and not read yet (2 event(s) queued on the file)"),
            "{e}"
        );
        let e = saved_ids(&parsed("rdmig_ucma:\t1\nevent:\tid=8 event=1 status=-110\n")).unwrap_err();
        assert!(e.starts_with("CM ID 8 has RDMA_CM_EVENT_ADDR_ERROR (status -110)"), "{e}");
        // A connection is named before the ESTABLISHED event it left queued (perftest -R never
        // reads that of its control connection).
        let text = format!("rdmig_ucma:\t1\n{}event:\tid=3 event=9 status=0\n", line("state=connect src=10.0.1.7:18515 dst=10.0.1.12:40000 qpn=9"));
        let e = saved_ids(&parsed(&text)).unwrap_err();
        assert!(e.contains("is connected (state connect) to 10.0.1.12:40000"), "{e}");
    }

    #[test]
    fn node_guids_read_as_sysfs_shows_them() {
        assert_eq!(super::parse_node_guid("3cd5:04ff:fe63:917b\n"), Some(0x3cd5_04ff_fe63_917b));
        for bad in ["", "3cd5:04ff:fe63", "3cd5:04ff:fe63:917b:0000", "3cd5:04ff:fe63:917", "3cd5:04ff:fe63:+17b", "zzzz:04ff:fe63:917b"] {
            assert_eq!(super::parse_node_guid(bad), None, "{bad:?}");
        }
    }
}
