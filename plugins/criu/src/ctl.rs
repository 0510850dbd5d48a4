//! What the dump reads from rdmig's rdma_rxe control device: the text status, which lists every
//! user QP, MR, MW and AH with its number and creating process (softroce/README.md). The plugin
//! cannot use the main crate's client (the main crate depends on this one), so this is a small
//! reader of its own.

use std::collections::BTreeMap;

pub const CTL_DEV: &str = "/dev/rxe_ctl";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub fields: BTreeMap<String, String>,
}

impl Record {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    pub fn num(&self, k: &str) -> Option<u64> {
        let v = self.get(k)?;
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    }
}

/// Parses the status; unknown record types and keys are kept (the ABI says to ignore them).
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

/// The status, or None when the control device is missing (stock rdma_rxe).
pub fn read() -> std::io::Result<Option<Vec<Record>>> {
    match std::fs::read_to_string(CTL_DEV) {
        Ok(t) => Ok(Some(parse(&t))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records of `kind` created by `pid` on device `dev`, in index order.
pub fn owned<'a>(recs: &'a [Record], kind: &str, pid: i32, dev: &str) -> Vec<&'a Record> {
    let mut v: Vec<&Record> = recs
        .iter()
        .filter(|r| r.kind == kind && r.num("pid") == Some(pid as u64) && r.get("dev") == Some(dev))
        .collect();
    v.sort_by_key(|r| r.num("index").unwrap_or(0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_filters() {
        let t = "rxe_ctl abi=1 dirty_log=1 page_shift=12\n\
                 dev name=rxe0 netdev=eth0\n\
                 qp dev=rxe0 index=16 qpn=1 type=gsi state=rts pid=0\n\
                 qp dev=rxe0 index=18 qpn=18 type=rc state=init pid=42\n\
                 qp dev=rxe0 index=17 qpn=17 type=rc state=init pid=42\n\
                 mr dev=rxe0 index=5 lkey=0x0000050a rkey=0x0000050a type=user access=0xf iova=0x7f00 length=4096 pid=42 pages=1 dirty=0\n";
        let r = parse(t);
        let qps = owned(&r, "qp", 42, "rxe0");
        assert_eq!(qps.iter().map(|q| q.num("qpn").unwrap()).collect::<Vec<_>>(), vec![17, 18]);
        let mr = owned(&r, "mr", 42, "rxe0");
        assert_eq!(mr[0].num("lkey"), Some(0x50a));
        assert!(owned(&r, "qp", 42, "rxe1").is_empty());
    }
}
