//! The control device's text status: one record per line, a type and `key=value` fields, for
//! the cursors, every rxe device and each user QP, MR, MW and AH with its numbers and creating
//! process (softroce/README.md). Unknown record types and keys are kept, as the ABI asks.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ctl::{CtlError, CTL_DEV};

/// One line of the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    pub kind: String,
    pub fields: BTreeMap<String, String>,
}

impl Record {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    /// A numeric field, decimal or `0x` hexadecimal: digits only (Rust's parsers would take a
    /// sign, so `0x+5` or `+5` would read as 5).
    pub fn num(&self, k: &str) -> Option<u64> {
        parse_num(self.get(k)?)
    }
}

/// A number as the kernel prints it: decimal, or `0x` and hexadecimal digits; nothing else.
pub fn parse_num(v: &str) -> Option<u64> {
    let (digits, radix) = match v.strip_prefix("0x") {
        Some(h) => (h, 16),
        None => (v, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Parses the status text.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let kind = w.next()?.to_string();
            let fields = w.filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Some(Record { kind, fields })
        })
        .collect()
}

/// Reads the status; [`CtlError::NotLoaded`] when the device is missing (stock rdma_rxe).
pub fn read() -> Result<Vec<Record>, CtlError> {
    let text = std::fs::read_to_string(CTL_DEV).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CtlError::NotLoaded,
        _ => CtlError::Open(e),
    })?;
    Ok(parse(&text))
}

/// Records of `kind` created by `pid` on device `dev`, in index order.
pub fn owned<'a>(recs: &'a [Record], kind: &str, pid: i32, dev: &str) -> Vec<&'a Record> {
    let mut v: Vec<&Record> = recs.iter().filter(|r| r.kind == kind && r.num("pid") == Some(pid as u64) && r.get("dev") == Some(dev)).collect();
    v.sort_by_key(|r| r.num("index").unwrap_or(0));
    v
}

/// A GID as the kernel prints it with %pI6 (and sysfs shows it): eight groups of four hex digits.
pub fn parse_gid(text: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = text.split(':').collect();
    if groups.len() != 8 || groups.iter().any(|g| g.len() != 4 || !g.bytes().all(|b| b.is_ascii_hexdigit())) {
        return None;
    }
    let mut g = [0u8; 16];
    for (i, w) in groups.iter().enumerate() {
        let v = u16::from_str_radix(w, 16).ok()?;
        g[2 * i..2 * i + 2].copy_from_slice(&v.to_be_bytes());
    }
    Some(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_keeps_unknowns() {
        let t = "rxe_ctl abi=1 dirty_log=1 page_shift=12\nqp dev=rxe0 index=1000 qpn=1000 type=rc state=rts pid=4242 sq_off=0x3000 rq_off=- scq_off=0x1000 rcq_off=0x2000 srq_off=0x5000 sig_all=1\nfuture x=1\n\n";
        let r = parse(t);
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].kind, "qp");
        assert_eq!(r[1].fields["pid"], "4242");
        assert_eq!(r[1].get("rq_off"), Some("-"));
        assert_eq!(r[1].num("srq_off"), Some(0x5000));
        assert_eq!(r[1].num("rq_off"), None);
        assert_eq!(r[2].kind, "future");
    }

    #[test]
    fn filters_by_owner_and_device_in_index_order() {
        let t = "rxe_ctl abi=1 dirty_log=1 page_shift=12\n\
                 dev name=rxe0 netdev=eth0\n\
                 qp dev=rxe0 index=16 qpn=1 type=gsi state=rts pid=0\n\
                 qp dev=rxe0 index=18 qpn=18 type=rc state=init pid=42\n\
                 qp dev=rxe0 index=17 qpn=17 type=rc state=init pid=42\n\
                 mr dev=rxe0 index=5 lkey=0x0000050a rkey=0x0000050a type=user access=0xf iova=0x7f00 length=4096 pid=42 pages=1 dirty=0\n";
        let r = parse(t);
        let qps = owned(&r, "qp", 42, "rxe0");
        assert_eq!(qps.iter().map(|q| q.num("qpn").unwrap()).collect::<Vec<_>>(), vec![17, 18]);
        assert_eq!(owned(&r, "mr", 42, "rxe0")[0].num("lkey"), Some(0x50a));
        assert!(owned(&r, "qp", 42, "rxe1").is_empty());
    }

    #[test]
    fn ah_records_and_gids() {
        let t = "ah dev=rxe0 index=3 pid=42 handle=5 port=1 sgid_index=1 dgid=0000:0000:0000:0000:0000:ffff:0a00:010b flow_label=0x0 hop_limit=64 tclass=0\n";
        let r = parse(t);
        let a = owned(&r, "ah", 42, "rxe0");
        assert_eq!((a[0].num("handle"), a[0].num("index"), a[0].num("hop_limit")), (Some(5), Some(3), Some(64)));
        let g = parse_gid(a[0].get("dgid").unwrap()).unwrap();
        assert_eq!(&g[10..], &[0xff, 0xff, 10, 0, 1, 11]);
        assert_eq!(parse_gid("fe80:0000:0000:0000:5054:00ff:fe12:3401").unwrap()[0..2], [0xfe, 0x80]);
        assert!(parse_gid("fe80::1").is_none());
        assert!(parse_gid("0000:0000:0000:0000:0000:ffff:0a00:zzzz").is_none());
        // u16::from_str_radix takes a sign: "+fff" is four characters and would read as 0x0fff.
        assert!(parse_gid("+fff:0000:0000:0000:0000:ffff:0a00:010b").is_none());
        assert!(parse_gid("-000:0000:0000:0000:0000:ffff:0a00:010b").is_none());
    }

    #[test]
    fn numbers_are_digits_only() {
        let r = &parse("qp a=17 b=0x1f c=+5 d=0x+5 e=0x f= g=18446744073709551616 h=0X10 i=-1\n")[0];
        assert_eq!((r.num("a"), r.num("b")), (Some(17), Some(0x1f)));
        for k in ["c", "d", "e", "f", "g", "h", "i", "missing"] {
            assert_eq!(r.num(k), None, "{k}");
        }
        assert_eq!(parse_num("18446744073709551615"), Some(u64::MAX));
    }
}
