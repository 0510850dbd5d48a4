//! The event state that rdmig's ib_uverbs (softroce patch 0010) shows in `/proc/PID/fdinfo`:
//! per CQ its user handle, completion channel and event counters, per QP (SRQ, WQ) its user
//! handle and counter, and the events queued on each completion channel and async event file.
//! Format: `uverbs_ckpt_abi.h` of the patch; lines and keys not known here are ignored.

use std::collections::BTreeMap;

/// Version of the fdinfo lines and of `RDMIG_UVERBS_IOC_EVENTS` this plugin speaks.
pub const ABI_VERSION: u32 = 1;

/// A CQ as the uverbs file's fdinfo shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CqInfo {
    pub handle: u32,
    pub user_handle: u64,
    /// Token of its completion channel (the same in the channel's fdinfo), `None` without one.
    pub channel: Option<String>,
    pub comp_events_reported: u32,
    pub events_reported: u32,
}

/// A handle an object's line names (softroce patch 0011: `pd=`, `send_cq=`, `recv_cq=`, `srq=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// `-`: the object uses none.
    None,
    Handle(u32),
    /// `?`: the object was locked for a change or its destruction when the fdinfo was read.
    Busy,
}

/// A QP, SRQ or WQ (`kind`), or another object with a user handle (`kind` "obj", `type_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjInfo {
    pub kind: String,
    pub type_id: Option<u32>,
    pub handle: u32,
    pub user_handle: u64,
    pub events_reported: u32,
    /// The PD it uses (MR, MW, AH, QP, SRQ, WQ), and a QP's CQs and SRQ; `None` when the line
    /// does not say (an ib_uverbs without patch 0011, or an object without a PD).
    pub pd: Option<Link>,
    /// A QP's number (softroce patch 0014).
    pub qpn: Option<u32>,
    pub send_cq: Option<Link>,
    pub recv_cq: Option<Link>,
    pub srq: Option<Link>,
}

/// What the fdinfo of a uverbs file says beyond the usual lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UverbsInfo {
    pub abi: u32,
    /// The file's token (softroce patch 0014), the same in the fdinfo of its event files.
    pub file: Option<String>,
    pub cqs: Vec<CqInfo>,
    pub objs: Vec<ObjInfo>,
}

impl UverbsInfo {
    pub fn cq(&self, handle: u32) -> Option<&CqInfo> {
        self.cqs.iter().find(|c| c.handle == handle)
    }

    pub fn obj(&self, kind: &str, handle: u32) -> Option<&ObjInfo> {
        self.objs.iter().find(|o| o.kind == kind && o.handle == handle)
    }

    /// The object of uverbs type `type_id` (an "obj" line, or a qp/srq/wq line) with `handle`.
    pub fn obj_of_type(&self, type_id: u16, handle: u32) -> Option<&ObjInfo> {
        let kind = match type_id {
            crate::uverbs::OBJ_QP => "qp",
            crate::uverbs::OBJ_SRQ => "srq",
            crate::uverbs::OBJ_WQ => "wq",
            _ => "obj",
        };
        self.objs.iter().find(|o| o.kind == kind && o.handle == handle && (kind != "obj" || o.type_id == Some(type_id as u32)))
    }
}

/// One event queued on an async event file and not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncEvent {
    pub event_type: u32,
    pub element: u64,
    /// The uverbs object type (UVERBS_OBJECT_*) and handle of the object it is about; object 0
    /// and no handle for a device (port) event.
    pub object: u32,
    pub handle: Option<u32>,
}

/// What the fdinfo of an infiniband event file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventInfo {
    /// A completion channel: its token and the CQ handles of its queued events, oldest first.
    CompChannel { token: String, pending: Vec<u32> },
    /// An async event file and its queued events, oldest first.
    Async { pending: Vec<AsyncEvent> },
    /// No rdmig lines: a stock ib_uverbs.
    Unknown,
}

/// "key:\tv" or "key:\tk=v k=v" lines: (key, first word, k=v pairs).
fn lines(text: &str) -> impl Iterator<Item = (&str, &str, BTreeMap<&str, &str>)> {
    text.lines().filter_map(|l| {
        let (key, rest) = l.split_once(':')?;
        let first = rest.split_whitespace().next().unwrap_or("");
        let kv = rest.split_whitespace().filter_map(|w| w.split_once('=')).collect();
        Some((key.trim(), first, kv))
    })
}

fn num<T: TryFrom<u64>>(kv: &BTreeMap<&str, &str>, k: &str, line: &str) -> Result<T, String> {
    let v = kv.get(k).ok_or_else(|| format!("fdinfo line {line:?} has no {k}"))?;
    crate::rxe::status::parse_num(v).and_then(|n| T::try_from(n).ok()).ok_or_else(|| format!("fdinfo line {line:?}: bad {k}={v}"))
}

/// An optional link key: absent, `-`, `?` or a handle.
fn link(kv: &BTreeMap<&str, &str>, k: &str, line: &str) -> Result<Option<Link>, String> {
    Ok(match kv.get(k) {
        None => None,
        Some(&"-") => Some(Link::None),
        Some(&"?") => Some(Link::Busy),
        Some(_) => Some(Link::Handle(num(kv, k, line)?)),
    })
}

fn abi(first: &str) -> Result<u32, String> {
    let v: u32 = first.parse().map_err(|_| format!("bad rdmig fdinfo version {first:?}"))?;
    if v != ABI_VERSION {
        return Err(format!("ib_uverbs shows rdmig fdinfo version {v}, this plugin reads version {ABI_VERSION}"));
    }
    Ok(v)
}

/// Parses the fdinfo of a uverbs file: `Ok(None)` when it has no rdmig lines (stock ib_uverbs).
pub fn parse_uverbs(text: &str) -> Result<Option<UverbsInfo>, String> {
    let mut info: Option<UverbsInfo> = None;
    for (key, first, kv) in lines(text) {
        let line = || format!("{key}: {first}...");
        match key {
            "rdmig_uverbs" => info = Some(UverbsInfo { abi: abi(first)?, ..Default::default() }),
            "rdmig_uverbs_file" => {
                if let Some(i) = info.as_mut() {
                    i.file = Some(first.to_string()).filter(|t| !t.is_empty());
                }
            }
            "cq" => {
                let i = info.as_mut().ok_or("cq line before the rdmig_uverbs line")?;
                let channel = match kv.get("channel") {
                    Some(&"-") => None,
                    Some(t) => Some(t.to_string()),
                    None => return Err(format!("fdinfo line {:?} has no channel", line())),
                };
                i.cqs.push(CqInfo {
                    handle: num(&kv, "handle", &line())?,
                    user_handle: num(&kv, "user_handle", &line())?,
                    channel,
                    comp_events_reported: num(&kv, "comp_events_reported", &line())?,
                    events_reported: num(&kv, "events_reported", &line())?,
                });
            }
            "qp" | "srq" | "wq" | "obj" => {
                let i = info.as_mut().ok_or("object line before the rdmig_uverbs line")?;
                i.objs.push(ObjInfo {
                    kind: key.to_string(),
                    type_id: if key == "obj" { Some(num(&kv, "type", &line())?) } else { None },
                    handle: num(&kv, "handle", &line())?,
                    user_handle: num(&kv, "user_handle", &line())?,
                    events_reported: if key == "obj" { 0 } else { num(&kv, "events_reported", &line())? },
                    pd: link(&kv, "pd", &line())?,
                    qpn: match kv.get("qpn") {
                        Some(_) => Some(num(&kv, "qpn", &line())?),
                        None => None,
                    },
                    send_cq: link(&kv, "send_cq", &line())?,
                    recv_cq: link(&kv, "recv_cq", &line())?,
                    srq: link(&kv, "srq", &line())?,
                });
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Parses the fdinfo of an `anon_inode:[infinibandevent]` file.
pub fn parse_event_file(text: &str) -> Result<EventInfo, String> {
    let mut info = EventInfo::Unknown;
    for (key, first, kv) in lines(text) {
        let line = || format!("{key}: {first}...");
        match (key, &mut info) {
            ("rdmig_uverbs_comp_channel", _) => {
                if first.is_empty() {
                    return Err("a completion channel without a token".into());
                }
                info = EventInfo::CompChannel { token: first.to_string(), pending: vec![] };
            }
            ("rdmig_uverbs_async_event_file", _) => {
                abi(first)?;
                info = EventInfo::Async { pending: vec![] };
            }
            ("event", EventInfo::CompChannel { pending, .. }) => pending.push(num(&kv, "cq", &line())?),
            ("event", EventInfo::Async { pending }) => pending.push(AsyncEvent {
                event_type: num(&kv, "type", &line())?,
                element: num(&kv, "element", &line())?,
                object: num(&kv, "object", &line())?,
                handle: match kv.get("handle") {
                    Some(&"-") => None,
                    _ => Some(num(&kv, "handle", &line())?),
                },
            }),
            ("event", EventInfo::Unknown) => return Err("an event line before the rdmig header line".into()),
            _ => {}
        }
    }
    Ok(info)
}

/// The token of the uverbs file an event file (or a uverbs file) belongs to, from its fdinfo
/// (softroce patch 0014); `None` without one.
pub fn file_token(text: &str) -> Option<String> {
    lines(text).find(|(k, _, _)| *k == "rdmig_uverbs_file").map(|(_, first, _)| first.to_string()).filter(|t| !t.is_empty())
}

/// Reads `/proc/<pid>/fdinfo/<fd>` ("self" for pid 0).
pub fn read(pid: i32, fd: i32) -> std::io::Result<String> {
    let p = if pid == 0 { format!("/proc/self/fdinfo/{fd}") } else { format!("/proc/{pid}/fdinfo/{fd}") };
    std::fs::read_to_string(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UVERBS: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1064\n\
        rdmig_uverbs:\t1\n\
        cq:\thandle=2 user_handle=0x55d0c0de1200 channel=00000000a1b2c3d4 comp_events_reported=41 events_reported=0\n\
        cq:\thandle=1 user_handle=0x55d0c0de1000 channel=- comp_events_reported=0 events_reported=3 future=7\n\
        qp:\thandle=3 user_handle=0x55d0c0de2000 events_reported=1\n\
        rdmig_uverbs_file:\t00000000feedf00d\n\
        qp:\thandle=8 user_handle=0x55d0c0de3000 events_reported=0 pd=6 qpn=17 send_cq=2 recv_cq=1 srq=-\n\
        obj:\ttype=6 handle=5 user_handle=0x42\n\
        obj:\ttype=7 handle=7 user_handle=0x0 pd=6\n\
        obj:\ttype=7 handle=9 user_handle=0x0 pd=?\n\
        newthing:\tx=1\n";

    #[test]
    fn uverbs_file() {
        let i = parse_uverbs(UVERBS).unwrap().unwrap();
        assert_eq!(i.abi, 1);
        assert_eq!(
            i.cq(2),
            Some(&CqInfo { handle: 2, user_handle: 0x55d0_c0de_1200, channel: Some("00000000a1b2c3d4".into()), comp_events_reported: 41, events_reported: 0 })
        );
        assert_eq!(i.cq(1).unwrap().channel, None);
        assert_eq!(i.cq(1).unwrap().events_reported, 3);
        assert_eq!(i.obj("qp", 3).unwrap().user_handle, 0x55d0_c0de_2000);
        assert_eq!(i.obj("qp", 3).unwrap().events_reported, 1);
        assert_eq!(i.obj("obj", 5).unwrap().type_id, Some(6));
        assert!(i.obj("qp", 5).is_none());
        // Links (patch 0011): absent on an older module's lines, "-", "?" or a handle.
        let q = i.obj("qp", 3).unwrap();
        assert_eq!((q.pd, q.send_cq, q.srq), (None, None, None));
        let q = i.obj_of_type(crate::uverbs::OBJ_QP, 8).unwrap();
        assert_eq!((q.pd, q.send_cq, q.recv_cq, q.srq), (Some(Link::Handle(6)), Some(Link::Handle(2)), Some(Link::Handle(1)), Some(Link::None)));
        assert_eq!(i.obj_of_type(crate::uverbs::OBJ_MR, 7).unwrap().pd, Some(Link::Handle(6)));
        assert_eq!((q.qpn, i.obj("qp", 3).unwrap().qpn), (Some(17), None));
        assert_eq!(i.file.as_deref(), Some("00000000feedf00d"));
        assert_eq!(file_token(UVERBS).as_deref(), Some("00000000feedf00d"));
        assert_eq!(file_token("rdmig_uverbs_comp_channel:\tab\nrdmig_uverbs_file:\tcafe\n").as_deref(), Some("cafe"));
        assert_eq!(file_token("pos:\t0\n"), None);
        assert_eq!(i.obj_of_type(crate::uverbs::OBJ_MR, 9).unwrap().pd, Some(Link::Busy));
        assert!(i.obj_of_type(crate::uverbs::OBJ_MR, 5).is_none(), "handle 5 is an AH");
        assert!(parse_uverbs("rdmig_uverbs:\t1\nobj:\ttype=7 handle=1 user_handle=0 pd=x\n").unwrap_err().contains("bad pd"));
    }

    #[test]
    fn stock_module_and_bad_lines() {
        assert_eq!(parse_uverbs("pos:\t0\nflags:\t02\nmnt_id:\t15\n").unwrap(), None);
        assert!(parse_uverbs("rdmig_uverbs:\t2\n").unwrap_err().contains("version 2"));
        assert!(parse_uverbs("rdmig_uverbs:\t1\ncq:\thandle=2 user_handle=0x1 comp_events_reported=1 events_reported=0\n").unwrap_err().contains("no channel"));
        assert!(parse_uverbs("rdmig_uverbs:\t1\nqp:\thandle=x user_handle=0x1 events_reported=0\n").unwrap_err().contains("bad handle"));
        assert!(parse_uverbs("cq:\thandle=1\n").is_err(), "a cq line without the header");
        assert!(parse_uverbs("rdmig_uverbs:\t1\nqp:\thandle=4294967296 user_handle=0 events_reported=0\n").is_err(), "handle beyond u32");
        assert!(parse_uverbs("rdmig_uverbs:\t1\nqp:\thandle=+3 user_handle=0 events_reported=0\n").unwrap_err().contains("bad handle=+3"), "a sign");
        assert!(parse_uverbs("rdmig_uverbs:\t1\nqp:\thandle=3 user_handle=0x+1 events_reported=0\n").unwrap_err().contains("bad user_handle"));
    }

    #[test]
    fn event_files() {
        let c = "pos:\t0\nflags:\t02\nrdmig_uverbs_comp_channel:\t00000000a1b2c3d4\nevent:\tcq=2 user_handle=0x55d0c0de1200\nevent:\tcq=4 user_handle=0x10\n";
        assert_eq!(parse_event_file(c).unwrap(), EventInfo::CompChannel { token: "00000000a1b2c3d4".into(), pending: vec![2, 4] });
        let a = "rdmig_uverbs_async_event_file:\t1\nevent:\ttype=18 element=0x1 object=0 handle=-\nevent:\ttype=5 element=0x55d0 object=4 handle=3\n";
        assert_eq!(
            parse_event_file(a).unwrap(),
            EventInfo::Async {
                pending: vec![
                    AsyncEvent { event_type: 18, element: 1, object: 0, handle: None },
                    AsyncEvent { event_type: 5, element: 0x55d0, object: 4, handle: Some(3) }
                ]
            }
        );
        assert_eq!(parse_event_file("pos:\t0\nflags:\t02\n").unwrap(), EventInfo::Unknown);
        assert!(parse_event_file("event:\tcq=1\n").is_err());
        assert!(parse_event_file("rdmig_uverbs_comp_channel:\t\n").is_err());
        assert!(parse_event_file("rdmig_uverbs_comp_channel:\tab\nevent:\tuser_handle=0x1\n").unwrap_err().contains("no cq"));
    }
}
