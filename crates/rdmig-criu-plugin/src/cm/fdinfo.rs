//! The CM IDs and queued events that rdmig's rdma_ucm shows in the fdinfo of an rdma_cm file
//! (`ucma_ckpt_abi.h` of softroce): an `rdmig_ucma:` version line, then one `cm_id:` line per ID
//! and one `event:` line per event not read yet. Lines and keys not known here are ignored (the
//! ABI asks readers to); a known line that lacks a key or has a value that does not parse is
//! refused with the line and the reason, never half read.

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Version of the fdinfo lines this plugin reads (`RDMIG_UCMA_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;

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
}

/// One `event:` line: an event queued on the file and not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLine {
    pub id: u32,
    /// `enum rdma_cm_event_type`.
    pub event: u32,
    pub status: i32,
}

/// What the fdinfo of an rdma_cm file of rdmig's rdma_ucm says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UcmaInfo {
    pub ids: Vec<CmIdLine>,
    pub events: Vec<EventLine>,
    /// `dev_alias` lines: (a device's own node GUID, the GUID the file names it by).
    pub aliases: Vec<(u64, u64)>,
}

impl UcmaInfo {
    /// The GUID by which the file's process knows the device whose own GUID is `own`.
    pub fn known_guid(&self, own: u64) -> u64 {
        self.aliases.iter().find(|(g, _)| *g == own).map_or(own, |(_, a)| *a)
    }
}

/// `enum rdma_cm_event_type`, for messages.
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
    })
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
                    Ok(n) => return Err(format!("rdma_ucm shows rdmig fdinfo version {n}, this plugin reads version {ABI_VERSION}")),
                    Err(_) => return Err(format!("rdma_cm fdinfo: bad rdmig_ucma version {v:?}")),
                }
            }
            "cm_id" => info.as_mut().ok_or("rdma_cm fdinfo: a cm_id line before the rdmig_ucma line")?.ids.push(cm_id(line, rest)?),
            "event" => {
                let i = info.as_mut().ok_or("rdma_cm fdinfo: an event line before the rdmig_ucma line")?;
                let kv = Kv::new(line, rest);
                i.events.push(EventLine { id: kv.num("id")?, event: kv.num("event")?, status: kv.int("status")? });
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
        rdmig_ucma:\t1\n\
        cm_id:\tid=3 uid=0x55d0c0de1000 ps=262 qp_type=2 state=listen dev=rxe0 port=1 src=10.0.0.1:18515 dst=- backlog=1024 qpn=0 events_reported=0 reuseaddr=1 afonly=1 tos=32 mc=0 future=x\n\
        cm_id:\tid=4 uid=0x55d0c0de2000 ps=0x111 qp_type=4 state=addr_bound dev=- port=0 src=[fe80::1%2]:7471 dst=[::]:0 backlog=0 qpn=0 events_reported=2 reuseaddr=0 afonly=1 tos=-1 mc=0\n\
        cm_id:\tid=5 uid=0x0 ps=319 qp_type=4 state=idle dev=- port=0 src=- dst=- backlog=0 qpn=0 events_reported=0 reuseaddr=0 afonly=0 tos=-1 mc=0\n\
        newline:\tx=1\n";

    #[test]
    fn device_aliases_name_devices_by_the_guids_the_process_knows() {
        let text = GOOD.replace("rdmig_ucma:\t1\n", "rdmig_ucma:\t1\ndev_alias:\tnode_guid=0x3cd504fffe63917b alias=0x1122334455667788\n");
        let i = parse(&text).unwrap().unwrap();
        assert_eq!(i.aliases, vec![(0x3cd5_04ff_fe63_917b, 0x1122_3344_5566_7788)]);
        assert_eq!(i.known_guid(0x3cd5_04ff_fe63_917b), 0x1122_3344_5566_7788);
        assert_eq!(i.known_guid(7), 7);
        assert!(parse(GOOD).unwrap().unwrap().aliases.is_empty());
        let bad = GOOD.replace("rdmig_ucma:\t1\n", "rdmig_ucma:\t1\ndev_alias:\tnode_guid=x alias=0x1\n");
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

    #[test]
    fn events_and_stock_module() {
        let i = parse("rdmig_ucma:\t1\nevent:\tid=7 event=4 status=0\nevent:\tid=8 event=1 status=-110\n").unwrap().unwrap();
        assert_eq!(i.events, vec![EventLine { id: 7, event: 4, status: 0 }, EventLine { id: 8, event: 1, status: -110 }]);
        assert_eq!(event_name(4), "RDMA_CM_EVENT_CONNECT_REQUEST");
        assert_eq!(event_name(99), "event 99");
        // A stock rdma_ucm: the usual lines only.
        assert_eq!(parse("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t7\n").unwrap(), None);
        // An empty file of rdmig's module: no IDs.
        assert_eq!(parse("rdmig_ucma:\t1\n").unwrap(), Some(UcmaInfo::default()));
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        let id3 = GOOD.lines().find(|l| l.contains("id=3")).unwrap();
        let with = |from: &str, to: &str| format!("rdmig_ucma:\t1\n{}\n", id3.replacen(from, to, 1));
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
        assert!(parse("rdmig_ucma:\t2\n").unwrap_err().contains("version 2, this plugin reads version 1"));
        assert!(parse("rdmig_ucma:\tx\n").unwrap_err().contains("bad rdmig_ucma version"));
        assert!(parse(id3).unwrap_err().contains("before the rdmig_ucma line"));
        assert!(parse("event:\tid=1 event=2 status=0\n").unwrap_err().contains("before the rdmig_ucma line"));
        assert!(parse("rdmig_ucma:\t1\nevent:\tid=1 event=2\n").unwrap_err().contains("status is missing"));
        assert!(parse("rdmig_ucma:\t1\nevent:\tid=1 event=2 status=x\n").unwrap_err().contains("status=x"));
    }
}
