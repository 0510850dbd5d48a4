//! The image of an rdma_cm file (`/dev/infiniband/rdma_cm`, librdmacm's event channel): the CM
//! IDs on it, as rdmig's rdma_ucm shows them (`ucma_ckpt_abi.h` of softroce), in the states the
//! plugin can recreate (idle, bound, listening and, since format 2, connected), and the events
//! queued on it and not read yet.
//!
//! One file per dumped file id, `rdmig-ucma-<id>.img`, framed as the verbs images are (see the
//! crate's documentation) with its own magic `RDMIGUCM` and version ([`FORMAT_VERSION`]), a JSON
//! [`CmFile`] and no blob. A file of its own rather than a new kind of `rdmig-rxe-<id>.img`:
//! readers of verbs images that predate it (`rdmig image show`, the plugin's restore listing a
//! directory) pass over it instead of failing on a kind they do not know.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{frame, read_bytes_max, unframe, Framed, Framing, ImageError};

pub const MAGIC: &[u8; 8] = b"RDMIGUCM";
/// 2: connected IDs and queued events. A format-1 image (idle, bound and listening IDs, no
/// events) reads as one of format 2; a reader of format 1 refuses a format-2 image by its version.
pub const FORMAT_VERSION: u32 = 2;
pub const FILE_PREFIX: &str = "rdmig-ucma-";
/// The largest rdma_cm image read: a CM ID takes a few hundred bytes of JSON, and the restore
/// refuses files of more than a few thousand IDs anyway.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

const FRAMING: Framing = Framing { magic: MAGIC, kind: "rdmig rdma_cm image", max_version: FORMAT_VERSION, checksummed_since: 1 };

/// Name of the rdma_cm image file of CRIU file id `id`.
pub fn file_name(id: u32) -> String {
    format!("{FILE_PREFIX}{id}{}", crate::FILE_SUFFIX)
}

/// An rdma_cm file and its CM IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmFile {
    /// CRIU's file id (the `id` of DUMP_EXT_FILE / RESTORE_EXT_FILE).
    pub id: u32,
    /// The process that held the file, its fd number there and its pid in its own namespace, as
    /// seen at the dump (for messages: CRIU puts the file back at its fd itself).
    pub pid: i32,
    pub fd: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<i32>,
    /// The file's status flags (`F_GETFL`): CRIU does not restore those of a plugin's file, and a
    /// non-blocking event channel (`O_NONBLOCK`) must stay one.
    pub flags: i32,
    pub ids: Vec<CmId>,
    /// The RDMA devices of the dumping host by the node GUIDs the process knows them by:
    /// librdmacm finds an ID's device by GUID among those it listed when the process started,
    /// so a restore elsewhere names the new host's devices by these (softroce patch 24).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<KnownDevice>,
    /// The events queued on the file and not read yet, in queue order (format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<QueuedEvent>,
}

/// An event queued on the file and not read yet: for ID `id`, the `struct rdma_ucm_event_resp`
/// that `UCMA_CMD_GET_EVENT` would copy out for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEvent {
    pub id: u32,
    pub resp: EventResp,
}

/// Size of `struct rdma_ucm_event_resp` (rdma/rdma_user_cm.h).
pub const EVENT_RESP_LEN: usize = 336;

/// A whole `struct rdma_ucm_event_resp`, in host order as the kernel copies it out; in the JSON
/// as lower-case hex (the fdinfo's spelling), which must be exactly [`EVENT_RESP_LEN`] bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct EventResp(pub [u8; EVENT_RESP_LEN]);

impl EventResp {
    /// Reads the fdinfo's (or the image's) hex: exactly `2 * EVENT_RESP_LEN` hex digits.
    pub fn from_hex(h: &str) -> Result<EventResp, String> {
        if h.len() != 2 * EVENT_RESP_LEN {
            return Err(format!("{} hex digits, not the {} of a struct rdma_ucm_event_resp", h.len(), 2 * EVENT_RESP_LEN));
        }
        let mut b = [0u8; EVENT_RESP_LEN];
        for (i, pair) in h.as_bytes().chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).ok_or_else(|| format!("{:?} is not a hex digit", c as char));
            b[i] = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        Ok(EventResp(b))
    }

    pub fn to_hex(&self) -> String {
        use std::fmt::Write as _;
        self.0.iter().fold(String::with_capacity(2 * EVENT_RESP_LEN), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    fn u32_at(&self, o: usize) -> u32 {
        u32::from_ne_bytes([self.0[o], self.0[o + 1], self.0[o + 2], self.0[o + 3]])
    }

    /// The ID's user context (`uid`, offset 0).
    pub fn uid(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[0..8]);
        u64::from_ne_bytes(b)
    }

    /// The ID's number (`id`, offset 8).
    pub fn id(&self) -> u32 {
        self.u32_at(8)
    }

    /// `enum rdma_cm_event_type` (`event`, offset 12).
    pub fn event(&self) -> u32 {
        self.u32_at(12)
    }

    /// `status`, offset 16.
    pub fn status(&self) -> i32 {
        self.u32_at(16) as i32
    }
}

impl std::fmt::Debug for EventResp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EventResp(uid {:#x} id {} event {} status {})", self.uid(), self.id(), self.event(), self.status())
    }
}

impl Serialize for EventResp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EventResp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventResp, D::Error> {
        let h = String::deserialize(d)?;
        EventResp::from_hex(&h).map_err(serde::de::Error::custom)
    }
}

/// A device by its name and the node GUID the process knows it by (a number as sysfs shows it:
/// its four groups of hex digits read as one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDevice {
    pub name: String,
    pub node_guid: u64,
}

/// A CM ID: what `UCMA_CMD_CREATE_ID` was given, what was read of it, its options and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmId {
    /// The number the process names the ID by in its commands (global on a host).
    pub id: u32,
    /// The process's context for it (librdmacm's `struct cma_id_private *`), in every event.
    pub uid: u64,
    pub ps: PortSpace,
    pub qp_type: QpType,
    /// Events of the ID the process has read (what `UCMA_CMD_DESTROY_ID` reports and librdmacm
    /// waits for).
    pub events_reported: u32,
    pub options: CmOptions,
    pub state: CmState,
    /// The device and port the ID was bound to at the dump (`None`: a wildcard address, or an
    /// idle ID). Recorded to be shown: the bind finds the device from the address again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<BoundDev>,
}

/// The states the plugin recreates, each with what it needs: a bound or listening ID has its
/// source address, a listening one its backlog, a connected one (kernel state `connect`, its IB
/// CM ID established) its role, both ends, its QP and the IB CM's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CmState {
    Idle,
    AddrBound { src: SocketAddr },
    Listen { src: SocketAddr, backlog: u32 },
    Connected { role: Role, src: SocketAddr, dst: SocketAddr, qpn: u32, conn: ConnParams },
}

impl CmState {
    /// The kernel's name of the state (as rdma_ucm's fdinfo prints it).
    pub fn name(&self) -> &'static str {
        match self {
            CmState::Idle => "idle",
            CmState::AddrBound { .. } => "addr_bound",
            CmState::Listen { .. } => "listen",
            CmState::Connected { .. } => "connect",
        }
    }

    /// The ID's own address (for a passive connected ID, the one the connection came to).
    pub fn src(&self) -> Option<SocketAddr> {
        match self {
            CmState::Idle => None,
            CmState::AddrBound { src } | CmState::Listen { src, .. } | CmState::Connected { src, .. } => Some(*src),
        }
    }

    /// The address the restore binds the new ID to before what the state needs next: a
    /// passive connected ID holds no port of its own and is connected unbound.
    pub fn bind_to(&self) -> Option<SocketAddr> {
        match self {
            CmState::Connected { role: Role::Passive, .. } => None,
            s => s.src(),
        }
    }
}

/// How a connected ID came to be (`RDMIG_UCMA_ROLE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// It connected (`rdma_connect()`) and holds its bound port.
    Active,
    /// A connection request on a listening ID created it; it holds no port of its own.
    Passive,
}

impl Role {
    /// `RDMIG_UCMA_ROLE_*`.
    pub fn value(self) -> u8 {
        match self {
            Role::Active => 1,
            Role::Passive => 2,
        }
    }

    /// The fdinfo's word.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "active" => Some(Role::Active),
            "passive" => Some(Role::Passive),
            _ => None,
        }
    }
}

/// The `cm_conn:` values of an established connection (`struct rdmig_ucma_conn` less the ID,
/// role, addresses and QPN): the route's, and the IB CM ID's as it was set up. Numbers in host
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnParams {
    /// The peer's MAC, as the route has it.
    pub dmac: [u8; 6],
    pub hop_limit: u8,
    /// The QP uses an SRQ.
    pub srq: bool,
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub remote_qpn: u32,
    pub sq_psn: u32,
    pub rq_psn: u32,
    pub service_id: u64,
    /// `enum ib_mtu`.
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
    pub pkey: u16,
}

/// `RDMA_OPTION_ID_*` options to set on the new ID before it is bound (`None`: leave the kernel's
/// default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmOptions {
    pub reuseaddr: bool,
    pub afonly: Option<bool>,
    pub tos: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundDev {
    pub name: String,
    pub port: u8,
}

/// `enum rdma_ucm_port_space`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortSpace {
    Ipoib,
    Ib,
    Tcp,
    Udp,
}

impl PortSpace {
    pub const ALL: [PortSpace; 4] = [PortSpace::Ipoib, PortSpace::Ib, PortSpace::Tcp, PortSpace::Udp];

    /// The kernel's number (`RDMA_PS_*`).
    pub fn value(self) -> u16 {
        match self {
            PortSpace::Ipoib => 0x0002,
            PortSpace::Ib => 0x013F,
            PortSpace::Tcp => 0x0106,
            PortSpace::Udp => 0x0111,
        }
    }

    pub fn from_value(v: u16) -> Option<PortSpace> {
        PortSpace::ALL.into_iter().find(|p| p.value() == v)
    }

    /// The QP types rdma_ucm lets an ID of this port space have (`ucma_get_qp_type`): TCP's are
    /// RC, UDP's and IPoIB's UD, IB's either.
    pub fn allows(self, t: QpType) -> bool {
        match self {
            PortSpace::Tcp => t == QpType::Rc,
            PortSpace::Udp | PortSpace::Ipoib => t == QpType::Ud,
            PortSpace::Ib => true,
        }
    }
}

/// The `enum ib_qp_type` values a CM ID can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QpType {
    Rc,
    Ud,
}

impl QpType {
    pub fn value(self) -> u8 {
        match self {
            QpType::Rc => 2,
            QpType::Ud => 4,
        }
    }

    pub fn from_value(v: u8) -> Option<QpType> {
        [QpType::Rc, QpType::Ud].into_iter().find(|t| t.value() == v)
    }
}

/// A loaded rdma_cm image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub path: PathBuf,
    pub version: u32,
    pub file: CmFile,
}

pub fn encode(f: &CmFile) -> Vec<u8> {
    let json = serde_json::to_vec(f).expect("image types always serialize");
    frame(MAGIC, FORMAT_VERSION, &json, &[])
}

/// Decodes an rdma_cm image file's bytes (`path` only names it in errors).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Loaded, ImageError> {
    let Framed { version, json, blob } = unframe(path, bytes, &FRAMING)?;
    if !blob.is_empty() {
        return Err(ImageError::Trailing { path: path.to_path_buf(), len: blob.len() });
    }
    let file = serde_json::from_slice(&bytes[json]).map_err(|e| ImageError::Json { path: path.to_path_buf(), source: e })?;
    Ok(Loaded { path: path.to_path_buf(), version, file })
}

pub fn read_file(path: &Path) -> Result<Loaded, ImageError> {
    decode(path, &read_bytes_max(path, MAX_FILE_BYTES)?)
}

/// Every rdma_cm image file in a CRIU image directory, sorted by file id.
pub fn read_dir(dir: &Path) -> Result<Vec<Loaded>, ImageError> {
    crate::file_ids(dir, FILE_PREFIX)?.iter().map(|id| read_file(&dir.join(file_name(*id)))).collect()
}

/// What `rdmig image show` prints of an rdma_cm image.
pub fn describe(l: &Loaded) -> String {
    use std::fmt::Write as _;
    let name = l.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let f = &l.file;
    let mut out = format!(
        "{name} (format {}): file id {}, rdma_cm file, pid {} fd {}, {} CM ID(s){}\n",
        l.version,
        f.id,
        f.pid,
        f.fd,
        f.ids.len(),
        if f.events.is_empty() { String::new() } else { format!(", {} queued event(s)", f.events.len()) }
    );
    for c in &f.ids {
        let state = match c.state {
            CmState::Idle => "idle".to_string(),
            CmState::AddrBound { src } => format!("addr_bound {src}"),
            CmState::Listen { src, backlog } => format!("listen {src} backlog {backlog}"),
            CmState::Connected { role, src, dst, qpn, conn } => format!(
                "connected ({}) {src} -> {dst} qpn {qpn} peer qpn {} comm ids {:#x}/{:#x} peer mac {}",
                match role {
                    Role::Active => "active",
                    Role::Passive => "passive",
                },
                conn.remote_qpn,
                conn.local_comm_id,
                conn.remote_comm_id,
                conn.dmac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
            ),
        };
        let o = c.options;
        let mut opts = vec![];
        if o.reuseaddr {
            opts.push("reuseaddr".to_string());
        }
        if let Some(a) = o.afonly {
            opts.push(format!("afonly={}", u8::from(a)));
        }
        if let Some(t) = o.tos {
            opts.push(format!("tos={t}"));
        }
        let dev = c.dev.as_ref().map(|d| format!(" on {} port {}", d.name, d.port)).unwrap_or_default();
        let _ = writeln!(
            out,
            "  cm_id {} {state}{dev} ps {:?} qp_type {:?} uid {:#x} events read {}{}",
            c.id,
            c.ps,
            c.qp_type,
            c.uid,
            c.events_reported,
            if opts.is_empty() { String::new() } else { format!(" options {}", opts.join(",")) }
        );
    }
    for e in &f.events {
        let _ = writeln!(out, "  event for cm_id {}: {} status {}", e.id, event_name(e.resp.event()), e.resp.status());
    }
    out
}

/// `enum rdma_cm_event_type` by its name (`RDMA_CM_EVENT_ESTABLISHED`), for messages.
pub fn event_name(e: u32) -> String {
    const NAMES: [&str; 16] = [
        "ADDR_RESOLVED",
        "ADDR_ERROR",
        "ROUTE_RESOLVED",
        "ROUTE_ERROR",
        "CONNECT_REQUEST",
        "CONNECT_RESPONSE",
        "CONNECT_ERROR",
        "UNREACHABLE",
        "REJECTED",
        "ESTABLISHED",
        "DISCONNECTED",
        "DEVICE_REMOVAL",
        "MULTICAST_JOIN",
        "MULTICAST_ERROR",
        "ADDR_CHANGE",
        "TIMEWAIT_EXIT",
    ];
    NAMES.get(e as usize).map(|n| format!("RDMA_CM_EVENT_{n}")).unwrap_or_else(|| format!("event {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CmFile {
        CmFile {
            id: 9,
            pid: 42,
            fd: 5,
            ns_pid: Some(42),
            flags: 0o4002,
            ids: vec![
                CmId {
                    id: 3,
                    uid: 0x55d0_c0de_1000,
                    ps: PortSpace::Tcp,
                    qp_type: QpType::Rc,
                    events_reported: 0,
                    options: CmOptions { reuseaddr: true, afonly: None, tos: Some(32) },
                    state: CmState::Listen { src: "10.0.0.1:18515".parse().unwrap(), backlog: 1024 },
                    dev: Some(BoundDev { name: "rxe0".into(), port: 1 }),
                },
                CmId {
                    id: 4,
                    uid: 0x55d0_c0de_2000,
                    ps: PortSpace::Udp,
                    qp_type: QpType::Ud,
                    events_reported: 2,
                    options: CmOptions { reuseaddr: false, afonly: Some(true), tos: None },
                    state: CmState::AddrBound { src: "[fe80::1%2]:7471".parse().unwrap() },
                    dev: None,
                },
                CmId {
                    id: 5,
                    uid: 0,
                    ps: PortSpace::Ib,
                    qp_type: QpType::Ud,
                    events_reported: 0,
                    options: CmOptions::default(),
                    state: CmState::Idle,
                    dev: None,
                },
            ],
            devices: vec![KnownDevice { name: "rxe0".into(), node_guid: 0x3cd5_04ff_fe63_917b }],
            events: vec![],
        }
    }

    pub(crate) fn conn() -> ConnParams {
        ConnParams {
            dmac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            hop_limit: 64,
            srq: false,
            local_comm_id: 0x1234_5678,
            remote_comm_id: 0x9abc_def0,
            remote_qpn: 0x11,
            sq_psn: 0x00ab_cdef,
            rq_psn: 0x0012_3456,
            service_id: 0x0106_0000_0000_4853,
            path_mtu: 3,
            responder_resources: 1,
            initiator_depth: 1,
            retry_count: 7,
            rnr_retry_count: 7,
            max_cm_retries: 15,
            remote_cm_response_timeout: 20,
            local_cm_response_timeout: 20,
            service_timeout: 0,
            target_ack_delay: 0,
            packet_life_time: 18,
            pkey: 0xffff,
        }
    }

    fn resp(uid: u64, id: u32, event: u32, status: i32) -> EventResp {
        let mut b = [0u8; EVENT_RESP_LEN];
        b[0..8].copy_from_slice(&uid.to_ne_bytes());
        b[8..12].copy_from_slice(&id.to_ne_bytes());
        b[12..16].copy_from_slice(&event.to_ne_bytes());
        b[16..20].copy_from_slice(&status.to_ne_bytes());
        b[20..24].copy_from_slice(&0x11u32.to_ne_bytes());
        EventResp(b)
    }

    /// A file with a connected (active) ID and its ESTABLISHED event not read yet.
    fn connected() -> CmFile {
        let mut f = sample();
        f.ids.push(CmId {
            id: 6,
            uid: 0x55d0_c0de_3000,
            ps: PortSpace::Tcp,
            qp_type: QpType::Rc,
            events_reported: 2,
            options: CmOptions::default(),
            state: CmState::Connected {
                role: Role::Active,
                src: "10.0.0.1:40000".parse().unwrap(),
                dst: "10.0.0.2:18515".parse().unwrap(),
                qpn: 0x12,
                conn: conn(),
            },
            dev: Some(BoundDev { name: "rxe0".into(), port: 1 }),
        });
        f.events.push(QueuedEvent { id: 6, resp: resp(0x55d0_c0de_3000, 6, 9, 0) });
        f
    }

    #[test]
    fn connected_ids_and_queued_events_round_trip() {
        let bytes = encode(&connected());
        let l = decode(Path::new("x"), &bytes).unwrap();
        assert_eq!(l.file, connected());
        let e = &l.file.events[0];
        assert_eq!((e.resp.uid(), e.resp.id(), e.resp.event(), e.resp.status()), (0x55d0_c0de_3000, 6, 9, 0));
        let j = String::from_utf8_lossy(&bytes);
        assert!(j.contains(r#""state":{"kind":"connected","role":"active","src":"10.0.0.1:40000","dst":"10.0.0.2:18515","qpn":18,"conn":{"#), "{j}");
        assert!(j.contains(&format!(r#""resp":"{}""#, e.resp.to_hex())), "{j}");
        assert_eq!(EventResp::from_hex(&e.resp.to_hex()).unwrap(), e.resp);
        assert_eq!(
            CmState::Connected { role: Role::Passive, src: "10.0.0.1:5".parse().unwrap(), dst: "10.0.0.2:6".parse().unwrap(), qpn: 1, conn: conn() }.bind_to(),
            None
        );
        assert_eq!(l.file.ids[3].state.bind_to(), Some("10.0.0.1:40000".parse().unwrap()));
        assert_eq!((Role::Active.value(), Role::Passive.value(), Role::parse("passive"), Role::parse("x")), (1, 2, Some(Role::Passive), None));

        let s = describe(&l);
        assert!(s.contains(", 4 CM ID(s), 1 queued event(s)\n"), "{s}");
        assert!(
            s.contains(
                "  cm_id 6 connected (active) 10.0.0.1:40000 -> 10.0.0.2:18515 qpn 18 peer qpn 17 comm ids 0x12345678/0x9abcdef0 peer mac 52:54:00:12:34:56 on rxe0"
            ),
            "{s}"
        );
        assert!(s.ends_with("  event for cm_id 6: RDMA_CM_EVENT_ESTABLISHED status 0\n"), "{s}");
    }

    #[test]
    fn a_format_1_image_reads_and_bad_connections_and_events_do_not() {
        // What the previous plugin wrote: format 1, no events.
        let json = serde_json::to_vec(&sample()).unwrap();
        let l = decode(Path::new("x"), &crate::frame(MAGIC, 1, &json, &[])).unwrap();
        assert_eq!((l.version, l.file), (1, sample()));

        let json = serde_json::to_string(&connected()).unwrap();
        let hex = connected().events[0].resp.to_hex();
        for (from, to, why) in [
            (r#""role":"active","#, "", "missing field `role`"),
            (r#""role":"active""#, r#""role":"both""#, "unknown variant `both`"),
            (r#""dst":"10.0.0.2:18515","#, "", "missing field `dst`"),
            (r#""qpn":18,"#, r#""qpn":-1,"#, "invalid value"),
            (r#""pkey":65535"#, r#""pkey":65536"#, "invalid value"),
            (r#""dmac":[82,84,0,18,52,86]"#, r#""dmac":[82,84,0,18,52]"#, "invalid length 5"),
            (&format!(r#""resp":"{hex}""#), &format!(r#""resp":"{}""#, &hex[2..]), "670 hex digits, not the 672 of a struct rdma_ucm_event_resp"),
            (&format!(r#""resp":"{hex}""#), &format!(r#""resp":"zz{}""#, &hex[2..]), "'z' is not a hex digit"),
            (r#""events":[{"id":6,"#, r#""events":[{"#, "missing field `id`"),
        ] {
            assert!(json.contains(from), "{from} not in {json}");
            let bad = json.replacen(from, to, 1);
            let e = decode(Path::new("x"), &crate::frame(MAGIC, 2, bad.as_bytes(), &[])).unwrap_err();
            let chain = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
            assert!(chain.contains(why), "{from} -> {to}: {chain}");
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample());
        let l = decode(Path::new("x"), &bytes).unwrap();
        assert_eq!(l.file, sample());
        assert_eq!(l.version, FORMAT_VERSION);
        // The scope of a link-local address survives (the bind needs it).
        let CmState::AddrBound { src: SocketAddr::V6(a) } = l.file.ids[1].state else { panic!("{:?}", l.file.ids[1].state) };
        assert_eq!(a.scope_id(), 2);
        // States, port spaces and QP types are words in the JSON, for `rdmig image show` and
        // people.
        let j = String::from_utf8_lossy(&bytes);
        assert!(j.contains(r#""state":{"kind":"listen","src":"10.0.0.1:18515","backlog":1024}"#), "{j}");
        assert!(j.contains(r#""ps":"tcp","qp_type":"rc""#), "{j}");
        assert_eq!(file_name(9), "rdmig-ucma-9.img");
    }

    #[test]
    fn damage_and_foreign_files_are_refused() {
        let bytes = encode(&sample());
        for i in 8..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(Path::new("x"), &b).is_err(), "flipping byte {i} went unnoticed");
        }
        let mut b = bytes.clone();
        b[30] ^= 1;
        let e = decode(Path::new("x"), &b).unwrap_err();
        assert!(matches!(e, ImageError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("the file was damaged"), "{e}");
        // A verbs image is not an rdma_cm image, and the other way round.
        let e = decode(Path::new("x"), &crate::frame(crate::MAGIC, 2, b"{}", &[])).unwrap_err();
        assert_eq!(e.to_string(), "x: not an rdmig rdma_cm image (bad magic)");
        assert!(matches!(crate::decode(Path::new("x"), &bytes), Err(ImageError::Magic { kind: "rdmig verbs image", .. })));
        let mut newer = bytes[..bytes.len() - 4].to_vec();
        newer[8] = 3;
        let crc = crc32fast::hash(&newer);
        newer.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(Path::new("x"), &newer).unwrap_err().to_string(), "x: format version 3, this build reads up to 2");
        // Bytes after the JSON (a blob this kind does not have).
        let json = serde_json::to_vec(&sample()).unwrap();
        let e = decode(Path::new("x"), &crate::frame(MAGIC, 1, &json, &[0])).unwrap_err();
        assert!(matches!(e, ImageError::Trailing { len: 1, .. }), "{e}");
    }

    #[test]
    fn states_and_numbers_outside_the_types_do_not_decode() {
        let json = serde_json::to_string(&sample()).unwrap();
        for (from, to, why) in [
            (r#""kind":"idle""#, r#""kind":"connect""#, "unknown variant `connect`"),
            (r#""kind":"addr_bound","src":"[fe80::1%2]:7471""#, r#""kind":"addr_bound""#, "missing field `src`"),
            (r#","backlog":1024"#, "", "missing field `backlog`"),
            (r#""ps":"tcp""#, r#""ps":"sdp""#, "unknown variant `sdp`"),
            (r#""qp_type":"rc""#, r#""qp_type":"uc""#, "unknown variant `uc`"),
            (r#""src":"10.0.0.1:18515""#, r#""src":"10.0.0.1""#, "invalid socket address"),
        ] {
            assert!(json.contains(from), "{from} not in {json}");
            let bad = json.replacen(from, to, 1);
            let e = decode(Path::new("x"), &crate::frame(MAGIC, 1, bad.as_bytes(), &[])).unwrap_err();
            let chain = format!("{e}: {}", std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default());
            assert!(chain.contains(why), "{from} -> {to}: {chain}");
        }
    }

    #[test]
    fn a_directory_lists_its_rdma_cm_images_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(file_name(12)), encode(&CmFile { id: 12, ..sample() })).unwrap();
        std::fs::write(d.path().join(file_name(9)), encode(&sample())).unwrap();
        std::fs::write(d.path().join(crate::file_name(9)), b"not ours").unwrap();
        let all = read_dir(d.path()).unwrap();
        assert_eq!(all.iter().map(|l| l.file.id).collect::<Vec<_>>(), vec![9, 12]);
        let s = describe(&all[0]);
        assert!(s.starts_with("rdmig-ucma-9.img (format 2): file id 9, rdma_cm file, pid 42 fd 5, 3 CM ID(s)\n"), "{s}");
        assert!(
            s.contains(
                "  cm_id 3 listen 10.0.0.1:18515 backlog 1024 on rxe0 port 1 ps Tcp qp_type Rc uid 0x55d0c0de1000 events read 0 options reuseaddr,tos=32\n"
            ),
            "{s}"
        );
        assert!(s.contains("  cm_id 4 addr_bound [fe80::1%2]:7471 ps Udp qp_type Ud uid 0x55d0c0de2000 events read 2 options afonly=1\n"), "{s}");
        assert!(s.contains("  cm_id 5 idle ps Ib qp_type Ud uid 0x0 events read 0\n"), "{s}");
    }

    #[test]
    fn kernel_numbers() {
        assert_eq!(PortSpace::Tcp.value(), 0x0106);
        assert_eq!(PortSpace::Udp.value(), 0x0111);
        assert_eq!(PortSpace::Ipoib.value(), 0x0002);
        assert_eq!(PortSpace::Ib.value(), 0x013F);
        for p in PortSpace::ALL {
            assert_eq!(PortSpace::from_value(p.value()), Some(p));
        }
        assert_eq!(PortSpace::from_value(0x0107), None);
        assert_eq!((QpType::from_value(2), QpType::from_value(4), QpType::from_value(3)), (Some(QpType::Rc), Some(QpType::Ud), None));
        assert!(PortSpace::Tcp.allows(QpType::Rc) && !PortSpace::Tcp.allows(QpType::Ud));
        assert!(PortSpace::Udp.allows(QpType::Ud) && !PortSpace::Ipoib.allows(QpType::Rc));
        assert!(PortSpace::Ib.allows(QpType::Rc) && PortSpace::Ib.allows(QpType::Ud));
    }
}
