//! The plugin's image files, through everything the restore does with one before it touches a
//! device: decode (magic, version, CRC-32, JSON, blob bounds), the restore's checks, and the plan
//! that recreates every object at its handle, checked against a model of uverbs' lowest-free
//! handle allocation. Each input is also tried with its CRC-32 made right, so that mutations get
//! past the checksum to the JSON and the checks.
#![no_main]

use std::collections::BTreeSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rdmig_criu::handles::{self, Obj, Step};
use rdmig_criu::image::{self, FileKind};
use rdmig_criu::objects::{self, limits};

fn run(bytes: &[u8]) {
    let Ok(l) = image::decode(Path::new("fuzz"), bytes) else { return };
    // What decoded encodes and decodes to the same.
    let again = image::decode(Path::new("fuzz"), &image::encode(&l.image, &l.blob)).expect("a re-encoded image decodes");
    assert_eq!(again.image, l.image);
    let FileKind::Context(c) = &l.image.kind else {
        if let FileKind::EventFile(e) = &l.image.kind {
            let _ = limits::check_event_file(&l.image, e);
        }
        return;
    };
    if objects::check_image(&l).is_err() {
        return;
    }
    let objs = Obj::all(c);
    let steps = handles::plan_for(&objs);
    assert!(steps.len() <= objs.len() + 2 * limits::MAX_HANDLE as usize, "a plan of {} steps", steps.len());
    // Every step gets the handle it expects when uverbs gives out the lowest free one, and at the
    // end exactly the objects' handles are taken.
    let (mut used, mut freed, mut top) = (BTreeSet::new(), BTreeSet::new(), 0u32);
    for s in &steps {
        let lowest = freed.first().copied().unwrap_or(top);
        match *s {
            Step::Filler(h) | Step::Create(h) => {
                assert_eq!(lowest, h, "{s:?}");
                used.insert(h);
                if !freed.remove(&h) {
                    top = h + 1;
                }
            }
            Step::FreeFiller(h) => {
                assert!(used.remove(&h), "{s:?}");
                freed.insert(h);
            }
        }
    }
    assert_eq!(used, objs.iter().map(Obj::handle).collect::<BTreeSet<_>>());
    // The restore's lookups of what the checks let through.
    let _ = objects::qp::carried_rings_of(c);
    for q in c.qps.iter().filter_map(|q| q.mig_image) {
        assert!(objects::qp::blob_range(&l.blob, q.offset, q.len).is_some(), "a checked QP image is in the blob");
    }
}

fuzz_target!(|data: &[u8]| {
    run(data);
    if data.len() >= 28 {
        let mut fixed = data.to_vec();
        let n = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..n]);
        fixed[n..].copy_from_slice(&crc.to_le_bytes());
        run(&fixed);
    }
});
