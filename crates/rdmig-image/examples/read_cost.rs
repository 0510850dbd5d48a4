//! What reading a verbs context image costs, the way a restore reads it, side by side in one
//! process: as before (the file's bytes grown while read, then a copy of its blob) and as now
//! (one buffer sized from the file, the blob kept in it), and the CRC-32 and JSON parts alone.
//! The image is shaped like a 64-QP context of `rdmig-workload` (a QP state image of 40 kB per
//! QP, one CQ per QP, one MR).
//!
//!     read_cost [QPS] [DIR] [ROUNDS]      (inside a lab node: experiments/image-read.sh)
//!
//! Prints one JSON object: per variant, the median of ROUNDS reads in microseconds.

use rdmig_image::*;
use std::path::Path;
use std::time::Instant;

fn image(nq: usize) -> (FileImage, Vec<u8>) {
    let qp = |i: usize| Qp {
        handle: i as u32 + 2,
        qpn: 17 + i as u32,
        qpn_source: "status".into(),
        qp_type: "rc".into(),
        attr: QpAttr { state: 3, path_mtu: 3, max_send_wr: 128, max_recv_wr: 512, max_send_sge: 1, max_recv_sge: 1, ..Default::default() },
        links: Some(QpLinks {
            pd: 0,
            send_cq: 1000 + i as u32,
            recv_cq: 1000 + i as u32,
            sq_pgoff: 3 + i as u64,
            rq_pgoff: 100 + i as u64,
            ..Default::default()
        }),
        sgid: Some("0000:0000:0000:0000:0000:ffff:0a00:010b".into()),
        sgid_type: Some("RoCE v2".into()),
        mig_image: Some(BlobRef { offset: (i * 40_000) as u64, len: 40_000 }),
        user_handle: 0x55d0_0000 + i as u64,
        events_reported: 0,
    };
    let ctx = Context {
        path: "/dev/infiniband/uverbs0".into(),
        rdev_major: 231,
        rdev_minor: 192,
        ibdev: "rxe0".into(),
        flags: 2,
        pds: vec![Handle { handle: 0 }],
        cqs: (0..nq).map(|i| Cq { handle: 1000 + i as u32, pgoff: Some(500 + i as u64), cqe: Some(255), ..Default::default() }).collect(),
        srqs: vec![],
        qps: (0..nq).map(qp).collect(),
        mrs: vec![Mr { handle: 1, lkey: 0x1234, rkey: 0x1234, iova: 0x7000_0000, length: 64 << 20, access: Some(7), pd: Some(0) }],
        mws: vec![],
        ahs: vec![],
        comp_channels: 0,
        async_event_files: 1,
        events_saved: true,
        channels: vec![],
        async_pending: vec![],
        queues: vec![],
        file_token: None,
    };
    let blob = (0..40_000 * nq).map(|i| (i * 7 % 251) as u8).collect();
    (FileImage { id: 7, pid: 42, fd: 3, ns_pid: None, kind: FileKind::Context(Box::new(ctx)) }, blob)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The old way: the file read into a growing vector, then decoded from a copy.
fn read_copied(p: &Path) -> Loaded {
    use std::io::Read;
    let mut b = vec![];
    std::fs::File::open(p).unwrap().read_to_end(&mut b).unwrap();
    decode(p, &b).unwrap()
}

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let nq: usize = arg(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let dir = arg(2).unwrap_or_else(|| std::env::temp_dir().display().to_string());
    let rounds: usize = arg(3).and_then(|s| s.parse().ok()).unwrap_or(9).max(1);
    let (img, blob) = image(nq);
    let bytes = encode(&img, &blob);
    let jlen = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
    let p = Path::new(&dir).join(file_name(7));
    std::fs::write(&p, &bytes).unwrap();
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e6
    };
    let names = ["copied", "in_place", "crc32", "json"];
    let mut rows: Vec<Vec<f64>> = vec![vec![]; names.len()];
    // Interleaved round by round, so that whatever the emulator does meanwhile hits all alike.
    for _ in 0..rounds {
        rows[0].push(time(&mut || {
            std::hint::black_box(read_copied(&p));
        }));
        rows[1].push(time(&mut || {
            std::hint::black_box(read_file(&p).unwrap());
        }));
        rows[2].push(time(&mut || {
            std::hint::black_box(crc32fast::hash(&bytes[..bytes.len() - 4]));
        }));
        rows[3].push(time(&mut || {
            std::hint::black_box(serde_json::from_slice::<FileImage>(&bytes[24..24 + jlen]).unwrap());
        }));
    }
    let _ = std::fs::remove_file(&p);
    let medians: Vec<String> = names.iter().zip(rows).map(|(n, v)| format!("\"{n}\": {:.0}", median(v))).collect();
    println!("{{\"qps\": {nq}, \"image_bytes\": {}, \"json_bytes\": {jlen}, \"rounds\": {rounds}, \"median_us\": {{{}}}}}", bytes.len(), medians.join(", "));
}
