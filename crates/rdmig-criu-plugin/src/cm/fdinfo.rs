//! The CM IDs and queued events that rdmig's rdma_ucm shows in the fdinfo of an rdma_cm file
//! (`ucma_ckpt_abi.h` of softroce, version 2): an `rdmig_ucma:` version line, `moving:` when
//! the file is marked moving, then one `cm_id:` line per ID (a `cm_conn:` line right after that
//! of an ID in state connect) and one `event:` line per event not read yet, with its whole
//! response. Lines and keys not known here are ignored (the ABI asks readers to); a known line
//! that lacks a key or has a value that does not parse is refused with the line and the reason,
//! never half read.

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use crate::image::ucma::event_name;
use crate::image::ucma::{ConnParams, EventResp, Role};

/// Version of the fdinfo lines this plugin reads (`RDMIG_UCMA_ABI_VERSION`).
pub const ABI_VERSION: u32 = crate::rxe::ucma::ABI_VERSION;

/// `enum rdma_cm_state`, by the names the fdinfo prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelState {
    Idle,
    AddrQuery,
    AddrResolved,
    RouteQuery,
    RouteResolved,
    Connect,
    Disconnect,
    AddrBound,
    Listen,
    DeviceRemoval,
    Destroying,
}

impl KernelState {
    const NAMES: [(&'static str, KernelState); 11] = [
        ("idle", KernelState::Idle),
        ("addr_query", KernelState::AddrQuery),
        ("addr_resolved", KernelState::AddrResolved),
        ("route_query", KernelState::RouteQuery),
        ("route_resolved", KernelState::RouteResolved),
        ("connect", KernelState::Connect),
        ("disconnect", KernelState::Disconnect),
        ("addr_bound", KernelState::AddrBound),
        ("listen", KernelState::Listen),
        ("device_removal", KernelState::DeviceRemoval),
        ("destroying", KernelState::Destroying),
    ];

    pub fn parse(s: &str) -> Option<KernelState> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, st)| *st)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, st)| *st == self).map(|(n, _)| *n).expect("every state has a name")
    }
}

/// One `cm_id:` line. `ps` and `qp_type` are the kernel's numbers as printed: which of them the
/// plugin can restore is decided by the refusal rules, which name the ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmIdLine {
    pub id: u32,
    pub uid: u64,
    pub ps: u16,
    pub qp_type: u8,
    pub state: KernelState,
    /// The bound device and its port; `None` for `dev=-`.
    pub dev: Option<(String, u32)>,
    /// `None` for `-`: no address, or one of a family other than AF_INET and AF_INET6.
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    pub backlog: u32,
    pub qpn: u32,
    pub events_reported: u32,
    pub reuseaddr: bool,
    pub afonly: bool,
    /// `None` for `tos=-1`: never set.
    pub tos: Option<u8>,
    /// Multicast groups joined.
    pub mc: u32,
    /// The `cm_conn:` line that followed (IDs in state connect).
    pub conn: Option<ConnLine>,
}

/// A `cm_conn:` line: the IB CM state of a connect-state ID and, when it is established (with no
/// alternate path exchange under way), what recreates the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLine {
    /// `established`, or another `enum ib_cm_state` in lower case (`none`: no IB CM ID).
    pub cm_state: String,
    /// `None`: the line ends after `cm_state` (not established, or exchanging an alternate path).
    pub established: Option<(Role, ConnParams)>,
}

/// One `event:` line: an event queued on the file and not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine {
    pub id: u32,
    /// `enum rdma_cm_event_type`.
    pub event: u32,
    pub status: i32,
    /// The whole `struct rdma_ucm_event_resp` (`resp=`).
    pub resp: EventResp,
}

/// What the fdinfo of an rdma_cm file of rdmig's rdma_ucm says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UcmaInfo {
    pub ids: Vec<CmIdLine>,
    pub events: Vec<EventLine>,
    /// `dev_alias` lines: (a device's own node GUID, the GUID the file names it by).
    pub aliases: Vec<(u64, u64)>,
    /// `moving:\t1`: a dump marked the file moving (and nothing cleared the mark since).
    pub moving: bool,
}

impl UcmaInfo {
    /// The GUID by which the file's process knows the device whose own GUID is `own`.
    pub fn known_guid(&self, own: u64) -> u64 {
        self.aliases.iter().find(|(g, _)| *g == own).map_or(own, |(_, a)| *a)
    }
}

/// A line's `k=v` words.
struct Kv<'a> {
    line: &'a str,
    kv: BTreeMap<&'a str, &'a str>,
}

impl<'a> Kv<'a> {
    fn new(line: &'a str, rest: &'a str) -> Kv<'a> {
        Kv { line, kv: rest.split_whitespace().filter_map(|w| w.split_once('=')).collect() }
    }

    fn bad(&self, k: &str, why: &str) -> String {
        format!("rdma_cm fdinfo line {:?}: {k}{why}", self.line.chars().take(300).collect::<String>())
    }

    fn get(&self, k: &str) -> Result<&'a str, String> {
        self.kv.get(k).copied().ok_or_else(|| self.bad(k, " is missing"))
    }

    /// An unsigned number (decimal, or hexadecimal with `0x`) that fits `T`.
    fn num<T: TryFrom<u64>>(&self, k: &str) -> Result<T, String> {
        let v = self.get(k)?;
        crate::rxe::status::parse_num(v).and_then(|n| T::try_from(n).ok()).ok_or_else(|| self.bad(k, &format!("={v} is not a number in range")))
    }

    /// A signed decimal number that fits `T`.
    fn int<T: TryFrom<i64>>(&self, k: &str) -> Result<T, String> {
        let v = self.get(k)?;
        let digits = v.strip_prefix('-').unwrap_or(v);
        let ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| v.parse::<i64>().ok()).flatten().and_then(|n| T::try_from(n).ok()).ok_or_else(|| self.bad(k, &format!("={v} is not a number in range")))
    }

    fn flag(&self, k: &str) -> Result<bool, String> {
        match self.get(k)? {
            "0" => Ok(false),
            "1" => Ok(true),
            v => Err(self.bad(k, &format!("={v} is neither 0 nor 1"))),
        }
    }

    /// An address as `%pISpc` prints it, or `-`.
    fn addr(&self, k: &str) -> Result<Option<SocketAddr>, String> {
        match self.get(k)? {
            "-" => Ok(None),
            v => v.parse().map(Some).map_err(|_| self.bad(k, &format!("={v} is not an address with a port"))),
        }
    }
}

fn cm_id(line: &str, rest: &str) -> Result<CmIdLine, String> {
    let kv = Kv::new(line, rest);
    let state = kv.get("state")?;
    let dev = match kv.get("dev")? {
        "-" => None,
        d => Some((d.to_string(), kv.num("port")?)),
    };
    let tos: i16 = kv.int("tos")?;
    Ok(CmIdLine {
        id: kv.num("id")?,
        uid: kv.num("uid")?,
        ps: kv.num("ps")?,
        qp_type: kv.num("qp_type")?,
        state: KernelState::parse(state).ok_or_else(|| kv.bad("state", &format!("={state} is not a state of rdma_cm")))?,
        dev,
        src: kv.addr("src")?,
        dst: kv.addr("dst")?,
        backlog: kv.num("backlog")?,
        qpn: kv.num("qpn")?,
        events_reported: kv.num("events_reported")?,
        reuseaddr: kv.flag("reuseaddr")?,
        afonly: kv.flag("afonly")?,
        tos: match tos {
            -1 => None,
            t => Some(u8::try_from(t).map_err(|_| kv.bad("tos", &format!("={t} is neither -1 nor a type of service (0..=255)")))?),
        },
        mc: kv.num("mc")?,
        conn: None,
    })
}

/// A MAC as `aa:bb:cc:dd:ee:ff`.
fn mac(kv: &Kv, k: &str) -> Result<[u8; 6], String> {
    let v = kv.get(k)?;
    let parts: Vec<&str> = v.split(':').collect();
    let bad = || kv.bad(k, &format!("={v} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(&parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

fn cm_conn(line: &str, rest: &str) -> Result<(u32, ConnLine), String> {
    let kv = Kv::new(line, rest);
    let id = kv.num("id")?;
    let cm_state = kv.get("cm_state")?.to_string();
    // The values follow only for an established connection with no alternate path exchange
    // under way; an established one without them is exchanging one.
    if cm_state != "established" || !kv.kv.contains_key("role") {
        return Ok((id, ConnLine { cm_state, established: None }));
    }
    let role = kv.get("role")?;
    let role = Role::parse(role).ok_or_else(|| kv.bad("role", &format!("={role} is neither active nor passive")))?;
    let p = ConnParams {
        dmac: mac(&kv, "dmac")?,
        hop_limit: kv.num("hop_limit")?,
        srq: kv.flag("srq")?,
        local_comm_id: kv.num("local_comm_id")?,
        remote_comm_id: kv.num("remote_comm_id")?,
        remote_qpn: kv.num("remote_qpn")?,
        sq_psn: kv.num("sq_psn")?,
        rq_psn: kv.num("rq_psn")?,
        service_id: kv.num("service_id")?,
        path_mtu: kv.num("path_mtu")?,
        responder_resources: kv.num("responder_resources")?,
        initiator_depth: kv.num("initiator_depth")?,
        retry_count: kv.num("retry_count")?,
        rnr_retry_count: kv.num("rnr_retry_count")?,
        max_cm_retries: kv.num("max_cm_retries")?,
        remote_cm_response_timeout: kv.num("remote_cm_response_timeout")?,
        local_cm_response_timeout: kv.num("local_cm_response_timeout")?,
        service_timeout: kv.num("service_timeout")?,
        target_ack_delay: kv.num("target_ack_delay")?,
        packet_life_time: kv.num("packet_life_time")?,
        pkey: kv.num("pkey")?,
    };
    Ok((id, ConnLine { cm_state, established: Some((role, p)) }))
}

fn event(line: &str, rest: &str) -> Result<EventLine, String> {
    let kv = Kv::new(line, rest);
    let (id, event, status) = (kv.num("id")?, kv.num("event")?, kv.int("status")?);
    let resp = EventResp::from_hex(kv.get("resp")?).map_err(|e| kv.bad("resp", &format!(": {e}")))?;
    Ok(EventLine { id, event, status, resp })
}

/// Parses the fdinfo of an rdma_cm file: `Ok(None)` when it has no `rdmig_ucma:` line (a stock
/// rdma_ucm, which shows no CM IDs).
pub fn parse(text: &str) -> Result<Option<UcmaInfo>, String> {
    let mut info: Option<UcmaInfo> = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else { continue };
        match key.trim() {
            "rdmig_ucma" => {
                let v = rest.trim();
                match v.parse::<u32>() {
                    Ok(ABI_VERSION) => info = Some(UcmaInfo::default()),
                    Ok(n) if n < ABI_VERSION => {
                        return Err(format!(
                            "rdma_ucm shows rdmig fdinfo version {n}, this plugin reads version {ABI_VERSION}: the loaded rdmig rdma_ucm is older than \
                             the plugin; update it (reinstall rdmig's softroce DKMS package, or rebuild it with scripts/build-softroce.sh) and \
                             reload rdma_ucm before checkpointing"
                        ))
                    }
                    Ok(n) => {
                        return Err(format!(
                            "rdma_ucm shows rdmig fdinfo version {n}, this plugin reads version {ABI_VERSION}: the plugin is older than the loaded \
                             rdma_ucm; update rdmig"
                        ))
                    }
                    Err(_) => return Err(format!("rdma_cm fdinfo: bad rdmig_ucma version {v:?}")),
                }
            }
            "moving" => {
                let i = info.as_mut().ok_or("rdma_cm fdinfo: a moving line before the rdmig_ucma line")?;
                i.moving = match rest.trim() {
                    "0" => false,
                    "1" => true,
                    v => return Err(format!("rdma_cm fdinfo: moving is {v:?}, neither 0 nor 1")),
                };
            }
            "cm_id" => info.as_mut().ok_or("rdma_cm fdinfo: a cm_id line before the rdmig_ucma line")?.ids.push(cm_id(line, rest)?),
            "cm_conn" => {
                let i = info.as_mut().ok_or("rdma_cm fdinfo: a cm_conn line before the rdmig_ucma line")?;
                let (id, c) = cm_conn(line, rest)?;
                // Right after its ID's cm_id line.
                match i.ids.last_mut() {
                    Some(last) if last.id == id && last.conn.is_none() => last.conn = Some(c),
                    _ => return Err(format!("rdma_cm fdinfo line {line:?}: not right after the cm_id line of ID {id}")),
                }
            }
            "event" => {
                let i = info.as_mut().ok_or("rdma_cm fdinfo: an event line before the rdmig_ucma line")?;
                i.events.push(event(line, rest)?);
            }
            "dev_alias" => {
                let i = info.as_mut().ok_or("rdma_cm fdinfo: a dev_alias line before the rdmig_ucma line")?;
                let kv = Kv::new(line, rest);
                i.aliases.push((kv.num("node_guid")?, kv.num("alias")?));
            }
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The fdinfo of a file with a listening, a bound and an idle ID (and lines and keys of a
    /// later version).
    pub(crate) const GOOD: &str = "pos:\t0\nflags:\t02004002\nmnt_id:\t25\nino:\t1095\n\
        rdmig_ucma:\t2\n\
        cm_id:\tid=3 uid=0x55d0c0de1000 ps=262 qp_type=2 state=listen dev=rxe0 port=1 src=10.0.0.1:18515 dst=- backlog=1024 qpn=0 events_reported=0 reuseaddr=1 afonly=1 tos=32 mc=0 future=x\n\
        cm_id:\tid=4 uid=0x55d0c0de2000 ps=0x111 qp_type=4 state=addr_bound dev=- port=0 src=[fe80::1%2]:7471 dst=[::]:0 backlog=0 qpn=0 events_reported=2 reuseaddr=0 afonly=1 tos=-1 mc=0\n\
        cm_id:\tid=5 uid=0x0 ps=319 qp_type=4 state=idle dev=- port=0 src=- dst=- backlog=0 qpn=0 events_reported=0 reuseaddr=0 afonly=0 tos=-1 mc=0\n\
        newline:\tx=1\n";

    #[test]
    fn device_aliases_name_devices_by_the_guids_the_process_knows() {
        let text = GOOD.replace("rdmig_ucma:\t2\n", "rdmig_ucma:\t2\ndev_alias:\tnode_guid=0x3cd504fffe63917b alias=0x1122334455667788\n");
        let i = parse(&text).unwrap().unwrap();
        assert_eq!(i.aliases, vec![(0x3cd5_04ff_fe63_917b, 0x1122_3344_5566_7788)]);
        assert_eq!(i.known_guid(0x3cd5_04ff_fe63_917b), 0x1122_3344_5566_7788);
        assert_eq!(i.known_guid(7), 7);
        assert!(parse(GOOD).unwrap().unwrap().aliases.is_empty());
        let bad = GOOD.replace("rdmig_ucma:\t2\n", "rdmig_ucma:\t2\ndev_alias:\tnode_guid=x alias=0x1\n");
        assert!(parse(&bad).unwrap_err().contains("node_guid=x"));
        assert!(parse("dev_alias:\tnode_guid=0x1 alias=0x2\n").unwrap_err().contains("before the rdmig_ucma line"));
    }

    #[test]
    fn good_lines() {
        let i = parse(GOOD).unwrap().unwrap();
        assert!(i.events.is_empty());
        assert_eq!(i.ids.len(), 3);
        assert_eq!(
            i.ids[0],
            CmIdLine {
                id: 3,
                uid: 0x55d0_c0de_1000,
                ps: 0x0106,
                qp_type: 2,
                state: KernelState::Listen,
                dev: Some(("rxe0".into(), 1)),
                src: Some("10.0.0.1:18515".parse().unwrap()),
                dst: None,
                backlog: 1024,
                qpn: 0,
                events_reported: 0,
                reuseaddr: true,
                afonly: true,
                tos: Some(32),
                mc: 0,
                conn: None,
            }
        );
        let b = &i.ids[1];
        assert_eq!((b.ps, b.qp_type, b.state, b.dev.as_ref(), b.tos, b.events_reported), (0x0111, 4, KernelState::AddrBound, None, None, 2));
        let Some(SocketAddr::V6(src)) = b.src else { panic!("{:?}", b.src) };
        assert_eq!((src.ip().segments()[0], src.port(), src.scope_id()), (0xfe80, 7471, 2));
        assert_eq!(b.dst, Some("[::]:0".parse().unwrap()));
        assert_eq!((i.ids[2].state, i.ids[2].src, i.ids[2].ps), (KernelState::Idle, None, 0x013F));
        // Every state name the ABI lists.
        for n in [
            "idle",
            "addr_query",
            "addr_resolved",
            "route_query",
            "route_resolved",
            "connect",
            "disconnect",
            "addr_bound",
            "listen",
            "device_removal",
            "destroying",
        ] {
            assert_eq!(KernelState::parse(n).map(KernelState::name), Some(n));
        }
    }

    /// The `resp=` hex of a `struct rdma_ucm_event_resp` with this head (and a QP number in the
    /// parameters).
    pub(crate) fn resp_hex(uid: u64, id: u32, event: u32, status: i32) -> String {
        resp(uid, id, event, status).to_hex()
    }

    pub(crate) fn resp(uid: u64, id: u32, event: u32, status: i32) -> EventResp {
        let mut b = [0u8; crate::image::ucma::EVENT_RESP_LEN];
        b[0..8].copy_from_slice(&uid.to_ne_bytes());
        b[8..12].copy_from_slice(&id.to_ne_bytes());
        b[12..16].copy_from_slice(&event.to_ne_bytes());
        b[16..20].copy_from_slice(&status.to_ne_bytes());
        b[20..24].copy_from_slice(&0x11u32.to_ne_bytes());
        EventResp(b)
    }

    /// The connection values of [`CONNECTED`].
    pub(crate) fn conn() -> ConnParams {
        ConnParams {
            dmac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            hop_limit: 64,
            srq: false,
            local_comm_id: 0x1234_5678,
            remote_comm_id: 0x9abc_def0,
            remote_qpn: 17,
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

    /// A connected (active) ID's lines as the kernel prints them.
    pub(crate) const CONNECTED: &str = "cm_id:\tid=6 uid=0x55d0c0de3000 ps=262 qp_type=2 state=connect dev=rxe0 port=1 src=10.0.0.1:40000 dst=10.0.0.2:18515 \
        backlog=0 qpn=18 events_reported=2 reuseaddr=0 afonly=1 tos=-1 mc=0\n\
        cm_conn:\tid=6 cm_state=established role=active dmac=52:54:00:12:34:56 hop_limit=64 srq=0 local_comm_id=0x12345678 \
        remote_comm_id=0x9abcdef0 remote_qpn=17 sq_psn=11259375 rq_psn=1193046 service_id=0x106000000004853 path_mtu=3 responder_resources=1 \
        initiator_depth=1 retry_count=7 rnr_retry_count=7 max_cm_retries=15 remote_cm_response_timeout=20 local_cm_response_timeout=20 \
        service_timeout=0 target_ack_delay=0 packet_life_time=18 pkey=0xffff later=1\n";

    #[test]
    fn connected_ids_moving_and_events_with_their_response() {
        let text = format!("rdmig_ucma:\t2\nmoving:\t1\n{CONNECTED}event:\tid=6 event=9 status=0 resp={}\n", resp_hex(0x55d0_c0de_3000, 6, 9, 0));
        let i = parse(&text).unwrap().unwrap();
        assert!(i.moving);
        let c = i.ids[0].conn.as_ref().unwrap();
        assert_eq!(c.cm_state, "established");
        let (role, p) = c.established.unwrap();
        assert_eq!(role, Role::Active);
        assert_eq!(p, conn());
        assert_eq!(i.ids[0].qpn, 18);
        assert_eq!(i.events, vec![EventLine { id: 6, event: 9, status: 0, resp: resp(0x55d0_c0de_3000, 6, 9, 0) }]);
        assert!(!parse("rdmig_ucma:\t2\nmoving:\t0\n").unwrap().unwrap().moving);
        assert!(parse("rdmig_ucma:\t2\nmoving:\t2\n").unwrap_err().contains("moving is \"2\", neither 0 nor 1"));

        // Not established: the line ends after cm_state; established without the values: an
        // alternate path exchange.
        let (id_line, _) = CONNECTED.split_once("cm_conn").unwrap();
        for cs in ["req_sent", "rep_rcvd", "dreq_sent", "none", "established"] {
            let i = parse(&format!("rdmig_ucma:\t2\n{id_line}cm_conn:\tid=6 cm_state={cs}\n")).unwrap().unwrap();
            assert_eq!(i.ids[0].conn, Some(ConnLine { cm_state: cs.into(), established: None }));
        }
        // A cm_conn line must follow its ID's cm_id line.
        let e = parse(&format!("rdmig_ucma:\t2\n{id_line}cm_conn:\tid=7 cm_state=established\n")).unwrap_err();
        assert!(e.contains("not right after the cm_id line of ID 7"), "{e}");
        let e = parse("rdmig_ucma:\t2\ncm_conn:\tid=7 cm_state=none\n").unwrap_err();
        assert!(e.contains("not right after the cm_id line of ID 7"), "{e}");
        assert!(parse("cm_conn:\tid=7 cm_state=none\n").unwrap_err().contains("before the rdmig_ucma line"));
        // Bad values of the connection are refused naming the key.
        for (from, to, why) in [
            ("role=active", "role=both", "role=both is neither active nor passive"),
            ("dmac=52:54:00:12:34:56", "dmac=52:54:00:12:34", "dmac=52:54:00:12:34 is not a MAC address"),
            ("dmac=52:54:00:12:34:56", "dmac=52:54:00:12:34:zz", "is not a MAC address"),
            ("hop_limit=64", "hop_limit=256", "hop_limit=256 is not a number in range"),
            ("srq=0", "srq=2", "srq=2 is neither 0 nor 1"),
            (" pkey=0xffff", "", "pkey is missing"),
            ("service_id=0x106000000004853", "service_id=0x10600000000048531", "is not a number in range"),
        ] {
            let e = parse(&format!("rdmig_ucma:\t2\n{}", CONNECTED.replacen(from, to, 1))).unwrap_err();
            assert!(e.contains(why) && e.contains("cm_conn:"), "{from} -> {to}: {e}");
        }
        // An event's response must be whole.
        let e = parse("rdmig_ucma:\t2\nevent:\tid=6 event=9 status=0\n").unwrap_err();
        assert!(e.contains("resp is missing"), "{e}");
        let e = parse("rdmig_ucma:\t2\nevent:\tid=6 event=9 status=0 resp=00ff\n").unwrap_err();
        assert!(e.contains("resp: 4 hex digits, not the 672 of a struct rdma_ucm_event_resp"), "{e}");
    }

    #[test]
    fn events_and_stock_module() {
        let (a, b) = (resp_hex(1, 7, 4, 0), resp_hex(2, 8, 1, -110));
        let i = parse(&format!("rdmig_ucma:\t2\nevent:\tid=7 event=4 status=0 resp={a}\nevent:\tid=8 event=1 status=-110 resp={b}\n")).unwrap().unwrap();
        assert_eq!(
            i.events,
            vec![EventLine { id: 7, event: 4, status: 0, resp: resp(1, 7, 4, 0) }, EventLine { id: 8, event: 1, status: -110, resp: resp(2, 8, 1, -110) }]
        );
        assert_eq!(event_name(4), "RDMA_CM_EVENT_CONNECT_REQUEST");
        assert_eq!(event_name(99), "event 99");
        // A stock rdma_ucm: the usual lines only.
        assert_eq!(parse("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t7\n").unwrap(), None);
        // An empty file of rdmig's module: no IDs.
        assert_eq!(parse("rdmig_ucma:\t2\n").unwrap(), Some(UcmaInfo::default()));
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        let id3 = GOOD.lines().find(|l| l.contains("id=3")).unwrap();
        let with = |from: &str, to: &str| format!("rdmig_ucma:\t2\n{}\n", id3.replacen(from, to, 1));
        for (from, to, why) in [
            ("state=listen", "state=listening", "state=listening is not a state of rdma_cm"),
            ("id=3 ", "", "id is missing"),
            ("id=3", "id=x", "id=x is not a number"),
            ("id=3", "id=4294967296", "id=4294967296 is not a number in range"),
            ("uid=0x55d0c0de1000", "uid=0x", "uid=0x is not a number"),
            ("ps=262", "ps=70000", "ps=70000 is not a number in range"),
            ("qp_type=2", "qp_type=-2", "qp_type=-2 is not a number"),
            ("src=10.0.0.1:18515", "src=10.0.0.1", "src=10.0.0.1 is not an address with a port"),
            ("src=10.0.0.1:18515", "src=10.0.0.1:99999", "is not an address with a port"),
            ("src=10.0.0.1:18515", "src=fe80::1:5", "is not an address with a port"),
            ("dst=-", "dst=", "is not an address with a port"),
            ("reuseaddr=1", "reuseaddr=2", "reuseaddr=2 is neither 0 nor 1"),
            ("tos=32", "tos=256", "tos=256 is neither -1 nor a type of service"),
            ("tos=32", "tos=-2", "tos=-2 is neither -1"),
            ("tos=32", "tos=--1", "tos=--1 is not a number"),
            ("port=1", "port=x", "port=x is not a number"),
            (" mc=0", "", "mc is missing"),
        ] {
            let e = parse(&with(from, to)).unwrap_err();
            assert!(e.contains(why), "{from} -> {to}: {e}");
            assert!(e.contains("cm_id:"), "the line is named: {e}");
        }
        let e = parse("rdmig_ucma:\t1\n").unwrap_err();
        assert!(e.contains("version 1, this plugin reads version 2: the loaded rdmig rdma_ucm is older than the plugin"), "{e}");
        assert!(e.contains("DKMS") && e.contains("scripts/build-softroce.sh"), "{e}");
        assert!(parse("rdmig_ucma:\t3\n").unwrap_err().contains("version 3, this plugin reads version 2: the plugin is older"));
        assert!(parse("rdmig_ucma:\tx\n").unwrap_err().contains("bad rdmig_ucma version"));
        assert!(parse(id3).unwrap_err().contains("before the rdmig_ucma line"));
        assert!(parse("event:\tid=1 event=2 status=0 resp=00\n").unwrap_err().contains("before the rdmig_ucma line"));
        assert!(parse("rdmig_ucma:\t2\nevent:\tid=1 event=2\n").unwrap_err().contains("status is missing"));
        assert!(parse("rdmig_ucma:\t2\nevent:\tid=1 event=2 status=x\n").unwrap_err().contains("status=x"));
    }
}
