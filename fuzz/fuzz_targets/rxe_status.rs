//! `/dev/rxe_ctl`'s text status (rdmig_rxe::status::parse, Record::num, owned) and GIDs as sysfs
//! and the status print them (parse_gid): no panic, and what is accepted is exactly what the
//! kernel prints (a number's digits, a GID's eight groups of four hex digits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdmig_rxe::status::{self, parse_gid};

fn gid_text(g: &[u8; 16]) -> String {
    g.chunks(2).map(|w| format!("{:02x}{:02x}", w[0], w[1])).collect::<Vec<_>>().join(":")
}

fn check_gid(s: &str) {
    if let Some(g) = parse_gid(s) {
        assert_eq!(gid_text(&g), s.to_ascii_lowercase(), "parse_gid({s:?})");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let recs = status::parse(&text);
    assert!(recs.len() <= text.lines().count());
    for r in &recs {
        for (k, v) in &r.fields {
            if let Some(n) = r.num(k) {
                let printed = match v.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16).ok().filter(|_| h.bytes().all(|b| b.is_ascii_hexdigit())),
                    None => v.parse().ok().filter(|_| v.bytes().all(|b| b.is_ascii_digit())),
                };
                assert_eq!(printed, Some(n), "{k}={v}");
            }
            check_gid(v);
        }
    }
    for kind in ["qp", "mr", "mw", "ah"] {
        let _ = status::owned(&recs, kind, 42, "rxe0");
    }
    for w in text.split_whitespace() {
        check_gid(w);
    }
});
