//! rdma_cm files (issue 19): `/dev/infiniband/rdma_cm`, the event channel of librdmacm, a misc
//! char device (major 10, a minor given at load). CRIU refuses such a file unless a plugin
//! claims it, which DUMP_EXT_FILE does here when the device number is rdma_cm's.
//!
//! The dump reads the file's CM IDs and queued events from its fdinfo (rdmig's rdma_ucm,
//! `ucma_ckpt_abi.h` version 2) and saves them into `rdmig-ucma-<id>.img`
//! ([`crate::image::ucma`]): idle, bound (`rdma_bind_addr`), listening and connected IDs
//! (established RC connections of port space TCP or IB), without multicast groups, and the
//! events not read yet with their whole responses; anything else is refused, naming the ID, its
//! state and why. A file with connected IDs is then marked moving, so that the source's copy,
//! killed after the move, forgets its connections without disconnecting the peers. The restore
//! ([`restore`]) recreates the IDs on a new rdma_cm file with their old numbers, options,
//! addresses, backlogs and connections, and queues the events again.

pub use crate::rxe::ucma as abi;
pub mod fdinfo;
pub mod restore;

use std::fs;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::common::DumpError;
use crate::image::ucma::{BoundDev, CmFile, CmId, CmOptions, CmState, KnownDevice, PortSpace, QpType, QueuedEvent};
use crate::log::info;
use crate::procfs;
use fdinfo::{event_name, CmIdLine, KernelState, UcmaInfo};

/// Where the rdma_cm device is and where sysfs gives its number (its minor is dynamic).
pub const DEV_PATH: &str = crate::rxe::ucma::DEV_PATH;
pub const SYS_DEV: &str = crate::rxe::ucma::SYS_DEV;
/// Where the RDMA devices and their node GUIDs are.
pub const SYS_IB: &str = "/sys/class/infiniband";
/// The most devices an image names (the restore refuses more).
pub const MAX_DEVICES: usize = 64;

/// rdma_cm's device number on this host (`None`: rdma_ucm is not loaded).
pub fn devno() -> Option<(u32, u32)> {
    crate::rxe::ucma::devno()
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
    let Saved { ids, events } = saved(&info).map_err(|e| DumpError::Unsupported(format!("{who}: {e}")))?;
    let summary = summary(&ids, &events);
    let connected = ids.iter().filter(|c| matches!(c.state, CmState::Connected { .. })).count();
    let devices = known_devices(&info);
    let img = CmFile { id, pid, fd: pfd, ns_pid: procfs::ns_pid(pid), flags: procfs::fd_flags(fd), ids, devices, events };
    let name = crate::image::ucma::file_name(id);
    crate::dump::write_bytes(dir, &name, &crate::image::ucma::encode(&img))?;
    // Last, once everything of the file passed: a refusal above leaves no mark behind.
    if connected > 0 {
        mark_moving(fd).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENOTTY) {
                ": this rdma_ucm has no RDMIG_UCMA_IOC_MOVING (older than the plugin; update rdmig's softroce DKMS package or rebuild it with \
                 scripts/build-softroce.sh)"
            } else {
                ""
            };
            DumpError::Sys { what: format!("{who}: marking the file moving{hint}"), source: e }
        })?;
        info!("{who}: marked moving: its {connected} connection(s) now belong to the destination; the source's copy, once killed, does not disconnect them");
    } else if info.moving {
        info!("{who}: already marked moving (an earlier dump's mark nothing cleared)");
    }
    info!("{who}: saved as {name}: {summary}");
    Ok(())
}

/// Marks rdma_cm file `fd` moving (`RDMIG_UCMA_IOC_MOVING` 1).
fn mark_moving(fd: RawFd) -> std::io::Result<()> {
    abi::set_moving(fd, true)
}

/// What the image keeps of a file: its IDs and its queued events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub ids: Vec<CmId>,
    pub events: Vec<QueuedEvent>,
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

/// "2 CM ID(s): 3 listen on 10.0.0.1:18515, 6 connect on 10.0.0.1:40000 to 10.0.0.2:18515; 1
/// queued event(s)".
fn summary(ids: &[CmId], events: &[QueuedEvent]) -> String {
    let each: Vec<String> = ids
        .iter()
        .map(|i| match (i.state, i.state.src()) {
            (CmState::Connected { dst, .. }, Some(a)) => format!("{} {} on {a} to {dst}", i.id, i.state.name()),
            (_, Some(a)) => format!("{} {} on {a}", i.id, i.state.name()),
            (_, None) => format!("{} {}", i.id, i.state.name()),
        })
        .collect();
    let events = if events.is_empty() { String::new() } else { format!("; {} queued event(s)", events.len()) };
    format!("{} CM ID(s){}{}{events}", ids.len(), if each.is_empty() { "" } else { ": " }, each.join(", "))
}

/// The refusal rules: the IDs and queued events of a file as the image keeps them, or why the
/// file cannot be moved (the first reason found, naming the ID).
pub fn saved(info: &UcmaInfo) -> Result<Saved, String> {
    // The IDs' states first: a connection being set up is the reason that says most (its
    // events are only a consequence).
    let ids = info.ids.iter().map(saved_id).collect::<Result<Vec<_>, _>>()?;
    let events = saved_events(info)?;
    Ok(Saved { ids, events })
}

/// The events queued on the file, in order, each checked against its ID (its response names the
/// ID and carries its user context), or why one cannot be queued again on the new file.
fn saved_events(info: &UcmaInfo) -> Result<Vec<QueuedEvent>, String> {
    if info.events.len() > restore::MAX_EVENTS {
        return Err(format!("{} events queued and not read yet, more than the {} rdmig moves", info.events.len(), restore::MAX_EVENTS));
    }
    let mut out = Vec::with_capacity(info.events.len());
    for e in &info.events {
        let line = info.ids.iter().find(|i| i.id == e.id);
        let whose = match line {
            Some(i) => format!("CM ID {} (uid {:#x})", i.id, i.uid),
            None => format!("CM ID {}", e.id),
        };
        let name = event_name(e.event);
        let what = format!("{whose} has {name} (status {}) queued and not read yet ({} event(s) queued on the file)", e.status, info.events.len());
        if let Some(why) = abi::not_requeueable(e.event) {
            return Err(format!("{what}: {why}; checkpoint when the process has read its events"));
        }
        let Some(l) = line else {
            return Err(format!("{what}, but the file holds no such ID"));
        };
        let r = &e.resp;
        if r.id() != e.id || r.uid() != l.uid {
            return Err(format!("{what}: its response names ID {} with uid {:#x}, not this ID: the fdinfo does not hold together", r.id(), r.uid()));
        }
        if r.event() != e.event || r.status() != e.status {
            return Err(format!("{what}: its response is {} with status {}: the fdinfo does not hold together", event_name(r.event()), r.status()));
        }
        out.push(QueuedEvent { id: e.id, resp: r.clone() });
    }
    Ok(out)
}

/// An address the restore can bind again (or give RDMIG_UCMA_IOC_CONNECT), or why not.
fn usable_addr(who: &str, state: &str, what: &str, a: Option<SocketAddr>, key: &str) -> Result<SocketAddr, String> {
    let Some(a) = a else {
        return Err(format!(
            "{who} {what} (state {state}) an address that is neither IPv4 nor IPv6 (fdinfo {key}=-): rdmig can only recreate IDs on IPv4 and IPv6 addresses"
        ));
    };
    if let SocketAddr::V6(v6) = a {
        // rdma_bind_addr refuses a link-local address without the interface it is on.
        if v6.ip().segments()[0] & 0xffc0 == 0xfe80 && v6.scope_id() == 0 {
            return Err(format!("{who} {what} (state {state}) link-local address {a} whose interface the fdinfo does not show: it could not be bound again"));
        }
    }
    Ok(a)
}

/// A connect-state ID as the image keeps it, or why it cannot be moved.
fn connected(l: &CmIdLine, who: &str, ps: PortSpace, qp_type: QpType) -> Result<CmState, String> {
    let peer = l.dst.map(|d| format!(" to {d}")).unwrap_or_default();
    let Some(c) = &l.conn else {
        return Err(format!(
            "{who} is in state connect{peer} but the fdinfo shows no cm_conn line for it: the loaded rdmig rdma_ucm is older than the plugin; update it \
             (rdmig's softroce DKMS package, or scripts/build-softroce.sh)"
        ));
    };
    let Some((role, conn)) = c.established else {
        let why = if c.cm_state == "established" {
            "its IB CM is exchanging an alternate path".to_string()
        } else {
            format!("the connection is being set up or torn down (IB CM state {})", c.cm_state)
        };
        return Err(format!(
            "{who} is connecting{peer} (state connect): {why}; rdmig moves established connections only, a retry of the checkpoint later may succeed"
        ));
    };
    if !matches!(ps, PortSpace::Tcp | PortSpace::Ib) || qp_type != QpType::Rc {
        return Err(format!(
            "{who} is connected{peer} with QP type {qp_type:?} in port space {ps:?}: rdmig moves RC connections of port spaces TCP and IB only"
        ));
    }
    if l.qpn == 0 || l.qpn > 0x00ff_ffff {
        return Err(format!("{who} is connected{peer} with QP number {}, not a QP number", l.qpn));
    }
    let src = usable_addr(who, "connect", "is connected from", l.src, "src")?;
    let dst = usable_addr(who, "connect", "is connected to", l.dst, "dst")?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(format!("{who} is connected from {src} to {dst}, addresses of two families"));
    }
    Ok(CmState::Connected { role, src, dst, qpn: l.qpn, conn })
}

/// One ID as the image keeps it, or why it cannot be moved.
fn saved_id(l: &CmIdLine) -> Result<CmId, String> {
    let who = format!("CM ID {} (uid {:#x})", l.id, l.uid);
    let state = l.state.name();
    let peer = |how: &str| l.dst.map(|d| format!(" {how} {d}")).unwrap_or_default();
    let refuse = |what: String, why: &str| Err(format!("{who} {what}: rdmig cannot move {why} yet"));
    let ps = PortSpace::from_value(l.ps).ok_or_else(|| format!("{who} has port space {:#06x}, which rdmig does not know", l.ps))?;
    let qp_type = QpType::from_value(l.qp_type).ok_or_else(|| format!("{who} has QP type {}, which rdmig does not know (RC 2 and UD 4 only)", l.qp_type))?;
    if !ps.allows(qp_type) {
        return Err(format!("{who} has QP type {qp_type:?} in port space {ps:?}, which rdma_ucm does not create"));
    }
    if l.mc > 0 {
        return refuse(format!("has joined {} multicast group(s) (state {state})", l.mc), "multicast members");
    }
    let cm_state = match l.state {
        KernelState::Idle => CmState::Idle,
        KernelState::AddrBound | KernelState::Listen => {
            let src = usable_addr(&who, state, "is bound to", l.src, "src")?;
            if l.state == KernelState::Listen {
                CmState::Listen { src, backlog: l.backlog }
            } else {
                CmState::AddrBound { src }
            }
        }
        KernelState::AddrQuery | KernelState::AddrResolved | KernelState::RouteQuery | KernelState::RouteResolved => {
            return refuse(format!("is resolving an address or route (state {state}){}", peer("to")), "rdma_cm IDs that are being connected");
        }
        KernelState::Connect => connected(l, &who, ps, qp_type)?,
        KernelState::Disconnect => {
            return Err(format!(
                "{who} is disconnecting (state {state}){}: the connection is being torn down; a retry of the checkpoint later may succeed",
                peer("from")
            ))
        }
        KernelState::DeviceRemoval => return refuse(format!("lost its device (state {state})"), "rdma_cm IDs whose device was removed"),
        KernelState::Destroying => return refuse(format!("is being destroyed (state {state})"), "rdma_cm IDs being destroyed; retry the checkpoint"),
    };
    if l.qpn != 0 && !matches!(cm_state, CmState::Connected { .. }) {
        return refuse(format!("is tied to QP {} (state {state})", l.qpn), "rdma_cm IDs with a QP");
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
/// set. A passive connected ID is not bound by the restore (it is connected idle), so its AFONLY
/// is set as an idle one's.
fn options(l: &CmIdLine, state: &CmState) -> CmOptions {
    let afonly = match state.bind_to() {
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
        saved(&parsed(&format!("rdmig_ucma:\t2\n{}", line(kv)))).map(|mut v| v.ids.remove(0))
    }

    #[test]
    fn idle_bound_and_listening_ids_are_saved() {
        let Saved { ids, events } = saved(&parsed(fdinfo::tests::GOOD)).unwrap();
        assert!(events.is_empty());
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
        assert_eq!(summary(&ids, &[]), "3 CM ID(s): 3 listen on 10.0.0.1:18515, 4 addr_bound on [fe80::1%2]:7471, 5 idle");
        assert_eq!(summary(&[], &[]), "0 CM ID(s)");
        // A file without IDs (an event channel only) is saved too.
        assert_eq!(saved(&parsed("rdmig_ucma:\t2\n")).unwrap(), Saved { ids: vec![], events: vec![] });
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
                "state=disconnect dst=10.0.0.2:18515",
                "CM ID 3 (uid 0x55d0c0de1000) is disconnecting (state disconnect) from 10.0.0.2:18515: the connection is being torn down; a retry of the \
                 checkpoint later may succeed",
            ),
            (
                "state=connect src=10.0.0.1:40000 dst=10.0.0.2:18515 qpn=17",
                "is in state connect to 10.0.0.2:18515 but the fdinfo shows no cm_conn line for it: the loaded rdmig rdma_ucm is older than the plugin",
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
            ("state=addr_bound", "is bound to (state addr_bound) an address that is neither IPv4 nor IPv6"),
            ("state=listen src=[fe80::1]:5", "is bound to (state listen) link-local address [fe80::1]:5 whose interface the fdinfo does not show"),
            ("ps=263", "has port space 0x0107, which rdmig does not know"),
            ("qp_type=3", "has QP type 3, which rdmig does not know"),
            ("qp_type=4", "has QP type Ud in port space Tcp, which rdma_ucm does not create"),
        ] {
            let e = one(kv).unwrap_err();
            assert!(e.contains(want), "{kv}: {e}");
            assert!(e.starts_with("CM ID 3 (uid 0x55d0c0de1000) "), "{kv}: {e}");
        }
    }

    use fdinfo::tests::{resp_hex, CONNECTED};

    #[test]
    fn established_connections_are_saved_with_their_values() {
        let Saved { ids, events } = saved(&parsed(&format!("rdmig_ucma:\t2\n{CONNECTED}"))).unwrap();
        assert!(events.is_empty());
        let c = &ids[0];
        assert_eq!(
            c.state,
            CmState::Connected {
                role: crate::image::ucma::Role::Active,
                src: "10.0.0.1:40000".parse().unwrap(),
                dst: "10.0.0.2:18515".parse().unwrap(),
                qpn: 18,
                conn: fdinfo::tests::conn(),
            }
        );
        assert_eq!((c.id, c.uid, c.events_reported, c.ps, c.qp_type), (6, 0x55d0_c0de_3000, 2, PortSpace::Tcp, QpType::Rc));
        // What binding the IPv4 source gives back: no AFONLY to set.
        assert_eq!(c.options, CmOptions::default());
        assert_eq!(summary(&ids, &[]), "1 CM ID(s): 6 connect on 10.0.0.1:40000 to 10.0.0.2:18515");
        // A passive one, and one in port space IB.
        let passive = CONNECTED.replace("role=active", "role=passive").replace("ps=262", "ps=319");
        let s = saved(&parsed(&format!("rdmig_ucma:\t2\n{passive}"))).unwrap();
        assert!(matches!(s.ids[0].state, CmState::Connected { role: crate::image::ucma::Role::Passive, .. }), "{:?}", s.ids[0].state);
        assert_eq!(s.ids[0].options.afonly, Some(true), "not bound by the restore: AFONLY set as on an idle ID");
        assert_eq!(s.ids[0].ps, PortSpace::Ib);
    }

    #[test]
    fn connections_being_set_up_or_torn_down_and_others_are_refused() {
        let (id_line, _) = CONNECTED.split_once("cm_conn").unwrap();
        let refused = |text: String| saved(&parsed(&format!("rdmig_ucma:\t2\n{text}"))).unwrap_err();
        let e = refused(format!("{id_line}cm_conn:\tid=6 cm_state=rep_rcvd\n"));
        assert_eq!(
            e,
            "CM ID 6 (uid 0x55d0c0de3000) is connecting to 10.0.0.2:18515 (state connect): the connection is being set up or torn down (IB CM \
             state rep_rcvd); rdmig moves established connections only, a retry of the checkpoint later may succeed"
        );
        let e = refused(format!("{id_line}cm_conn:\tid=6 cm_state=established\n"));
        assert!(e.contains("its IB CM is exchanging an alternate path; rdmig moves established connections only, a retry"), "{e}");
        for (from, to, why) in [
            ("qp_type=2", "qp_type=4", "has QP type Ud in port space Tcp"),
            ("ps=262 qp_type=2", "ps=319 qp_type=4", "is connected to 10.0.0.2:18515 with QP type Ud in port space Ib: rdmig moves RC connections"),
            ("mc=0", "mc=1", "has joined 1 multicast group(s) (state connect)"),
            ("qpn=18", "qpn=0", "with QP number 0, not a QP number"),
            ("src=10.0.0.1:40000", "src=-", "is connected from (state connect) an address that is neither IPv4 nor IPv6"),
            ("dst=10.0.0.2:18515", "dst=[2001:db8::2]:18515", "addresses of two families"),
        ] {
            let e = refused(CONNECTED.replacen(from, to, 1));
            assert!(e.contains(why) && e.starts_with("CM ID 6 (uid 0x55d0c0de3000) "), "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn queued_events_are_saved_in_order_and_checked_against_their_id() {
        let uid = 0x55d0_c0de_3000;
        let ev = |event: u32, r: String| format!("event:\tid=6 event={event} status=0 resp={r}\n");
        let text = format!("rdmig_ucma:\t2\n{CONNECTED}{}{}", ev(9, resp_hex(uid, 6, 9, 0)), ev(10, resp_hex(uid, 6, 10, 0)));
        let s = saved(&parsed(&text)).unwrap();
        assert_eq!(s.events.iter().map(|e| (e.id, e.resp.event())).collect::<Vec<_>>(), vec![(6, 9), (6, 10)]);
        assert_eq!(s.events[0].resp, fdinfo::tests::resp(uid, 6, 9, 0));
        assert!(summary(&s.ids, &s.events).ends_with("; 2 queued event(s)"));

        let refused = |events: String| saved(&parsed(&format!("rdmig_ucma:\t2\n{CONNECTED}{events}"))).unwrap_err();
        let e = refused(ev(4, resp_hex(uid, 6, 4, 0)));
        assert_eq!(
            e,
            "CM ID 6 (uid 0x55d0c0de3000) has RDMA_CM_EVENT_CONNECT_REQUEST (status 0) queued and not read yet (1 event(s) queued on the file): \
             an unaccepted connection request, whose new ID rdmig cannot recreate with it; checkpoint when the process has read its events"
        );
        assert!(refused(ev(12, resp_hex(uid, 6, 12, 0)))
            .contains("RDMA_CM_EVENT_MULTICAST_JOIN (status 0) queued and not read yet (1 event(s) queued on the file): a multicast event"));
        assert!(refused(ev(13, resp_hex(uid, 6, 13, 0))).contains("a multicast event"));
        assert!(refused(ev(11, resp_hex(uid, 6, 11, 0)))
            .contains("RDMA_CM_EVENT_DEVICE_REMOVAL (status 0) queued and not read yet (1 event(s) queued on the file): the removal of its device"));
        let e = refused(ev(9, resp_hex(uid, 7, 9, 0)));
        assert!(e.contains("its response names ID 7 with uid 0x55d0c0de3000, not this ID"), "{e}");
        let e = refused(ev(9, resp_hex(0x1, 6, 9, 0)));
        assert!(e.contains("its response names ID 6 with uid 0x1, not this ID"), "{e}");
        let e = refused(ev(9, resp_hex(uid, 6, 10, 0)));
        assert!(e.contains("its response is RDMA_CM_EVENT_DISCONNECTED with status 0"), "{e}");
        let e = refused(format!("event:\tid=8 event=1 status=-110 resp={}\n", resp_hex(1, 8, 1, -110)));
        assert!(
            e.starts_with(
                "CM ID 8 has RDMA_CM_EVENT_ADDR_ERROR (status -110) queued and not read yet (1 event(s) queued on the file), but the file holds no such ID"
            ),
            "{e}"
        );
        // A connection being set up is named before the events it left queued.
        let (id_line, _) = CONNECTED.split_once("cm_conn").unwrap();
        let e = saved(&parsed(&format!("rdmig_ucma:\t2\n{id_line}cm_conn:\tid=6 cm_state=req_sent\n{}", ev(4, resp_hex(uid, 6, 4, 0))))).unwrap_err();
        assert!(e.contains("IB CM state req_sent"), "{e}");
    }

    #[test]
    fn node_guids_read_as_sysfs_shows_them() {
        assert_eq!(super::parse_node_guid("3cd5:04ff:fe63:917b\n"), Some(0x3cd5_04ff_fe63_917b));
        for bad in ["", "3cd5:04ff:fe63", "3cd5:04ff:fe63:917b:0000", "3cd5:04ff:fe63:917", "3cd5:04ff:fe63:+17b", "zzzz:04ff:fe63:917b"] {
            assert_eq!(super::parse_node_guid(bad), None, "{bad:?}");
        }
    }
}
