//! rdma_cm files (rdmig_criu::cm): the fdinfo lines of rdmig's rdma_ucm (version 2: `cm_conn:`,
//! events with their `resp=`, `moving:`) through the dump's parser and refusal rules into an
//! image, and `rdmig-ucma-<id>.img` files through the restore's decode (magic, version, CRC-32,
//! JSON) and checks into the commands and ioctls it would issue (BIND, LISTEN, CONNECT,
//! QUEUE_EVENT). Each input
//! is read both ways, and as an image also with its CRC-32 made right, so that mutations get past
//! the checksum to the JSON and the checks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rdmig_criu::cm::{self, abi, fdinfo};
use rdmig_criu::image::ucma::{self, CmFile, CmState};

/// What the restore does with a decoded image before it touches a device, and the commands it
/// would write for each ID.
fn restore_side(f: &CmFile) {
    let again = ucma::decode(Path::new("fuzz"), &ucma::encode(f)).expect("a re-encoded image decodes");
    assert_eq!(&again.file, f);
    if cm::restore::check(f).is_err() {
        return;
    }
    assert!(f.ids.len() <= cm::restore::MAX_IDS);
    for c in &f.ids {
        assert!(c.ps.allows(c.qp_type));
        if let Some(src) = c.state.bind_to() {
            let b = abi::encode(&abi::bind_cmd(c.id, &src));
            assert_eq!(b.len(), 8 + 136);
        }
        if let CmState::Listen { backlog, .. } = c.state {
            assert!(backlog <= i32::MAX as u32);
            assert_eq!(abi::encode(&abi::Listen { id: c.id, backlog }).len(), 16);
        }
        if let CmState::Connected { role, src, dst, qpn, conn } = &c.state {
            assert!(*qpn != 0 && *qpn <= 0x00ff_ffff && (1..=5).contains(&conn.path_mtu));
            let k = cm::restore::conn_cmd(c.id, *role, src, dst, *qpn, conn);
            let b = abi::bytes_of(&k);
            assert_eq!(b.len(), 328);
            assert_eq!(b[4], role.value());
            assert!(b[12..16].iter().chain(&b[318..328]).all(|x| *x == 0), "reserved bytes are zero");
        }
    }
    for e in &f.events {
        let owner = f.ids.iter().find(|c| c.id == e.id).expect("the checks keep events to IDs of the file");
        assert_eq!((e.resp.id(), e.resp.uid()), (e.id, owner.uid));
        let k = cm::restore::event_cmd(e);
        let b = abi::bytes_of(&k);
        assert_eq!((b.len(), &b[8..]), (344, &e.resp.0[..]));
    }
}

fn image(bytes: &[u8]) {
    if let Ok(l) = ucma::decode(Path::new("fuzz"), bytes) {
        restore_side(&l.file);
    }
}

fuzz_target!(|data: &[u8]| {
    // As fdinfo text: what the dump would save restores through the same checks.
    let text = String::from_utf8_lossy(data);
    if let Ok(Some(info)) = fdinfo::parse(&text) {
        if let Ok(cm::Saved { ids, events }) = cm::saved(&info) {
            assert_eq!((ids.len(), events.len()), (info.ids.len(), info.events.len()));
            restore_side(&CmFile { id: 1, pid: 2, fd: 3, ns_pid: None, flags: 2, ids, devices: Vec::new(), events });
        }
    }
    // As an image file.
    image(data);
    if data.len() >= 28 {
        let mut fixed = data.to_vec();
        let n = fixed.len() - 4;
        let crc = crc32fast::hash(&fixed[..n]);
        fixed[n..].copy_from_slice(&crc.to_le_bytes());
        image(&fixed);
    }
});
