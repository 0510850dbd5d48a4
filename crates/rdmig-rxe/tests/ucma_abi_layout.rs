//! `rdmig_rxe::ucma` against the C header rdmig's rdma_ucm includes: a C program built from
//! `softroce/include/uapi/rdma/ucma_ckpt_abi.h` (with the system's `rdma/rdma_user_cm.h`) prints
//! the sizes, offsets and ioctl numbers of the structs the plugin and rdmig hand the kernel, and
//! they must equal the Rust ones. Needs a C compiler and the uapi headers (build-essential,
//! linux-libc-dev), as `abi_layout.rs`.

use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use rdmig_rxe::ucma::{Conn, CreateId, DevAlias, Event, EVENT_RESP_LEN, IOC_CONNECT, IOC_CREATE_ID, IOC_DEV_ALIAS, IOC_MOVING, IOC_QUEUE_EVENT};

macro_rules! fields {
    ($t:ty, $c:literal: $($f:ident),*) => {
        vec![(format!("size {}", $c), size_of::<$t>() as u64) $(, (format!("offset {}.{}", $c, stringify!($f)), offset_of!($t, $f) as u64))*]
    };
}

#[test]
fn rust_layout_matches_the_ucma_header() {
    let mut want: Vec<(String, u64)> = vec![];
    want.extend(fields!(Conn, "rdmig_ucma_conn": id, role, hop_limit, dst_mac, reserved0, src, dst, qpn, local_comm_id, remote_comm_id, remote_qpn,
        sq_psn, rq_psn, service_id, pkey, srq, path_mtu, responder_resources, initiator_depth, retry_count, rnr_retry_count, max_cm_retries,
        remote_cm_response_timeout, local_cm_response_timeout, service_timeout, target_ack_delay, packet_life_time, reserved1));
    want.extend(fields!(Event, "rdmig_ucma_event": id, reserved, resp));
    want.extend(fields!(CreateId, "rdmig_ucma_create_id": uid, id, ps, qp_type, reserved0, events_reported, reserved1));
    want.extend(fields!(DevAlias, "rdmig_ucma_dev_alias": node_guid, alias_guid));
    want.push(("size rdma_ucm_event_resp".into(), EVENT_RESP_LEN as u64));
    for (n, v) in [
        ("RDMIG_UCMA_IOC_CONNECT", IOC_CONNECT),
        ("RDMIG_UCMA_IOC_MOVING", IOC_MOVING),
        ("RDMIG_UCMA_IOC_QUEUE_EVENT", IOC_QUEUE_EVENT),
        ("RDMIG_UCMA_IOC_CREATE_ID", IOC_CREATE_ID),
        ("RDMIG_UCMA_IOC_DEV_ALIAS", IOC_DEV_ALIAS),
    ] {
        want.push((format!("ioctl {n}"), v));
    }
    let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"ucma_ckpt_abi.h\"\nint main(void) {\n");
    for (k, _) in &want {
        let expr = if let Some(st) = k.strip_prefix("size ") {
            format!("sizeof(struct {st})")
        } else if let Some(sf) = k.strip_prefix("offset ") {
            let (st, f) = sf.split_once('.').unwrap();
            format!("offsetof(struct {st}, {f})")
        } else {
            k.strip_prefix("ioctl ").unwrap().to_string()
        };
        c.push_str(&format!("  printf(\"{k} %lu\\n\", (unsigned long)({expr}));\n"));
    }
    c.push_str("  return 0;\n}\n");

    let dir = std::env::temp_dir().join(format!("rdmig-ucma-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, exe) = (dir.join("layout.c"), dir.join("layout"));
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let hdr = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../softroce/include/uapi/rdma");
    let built = Command::new(&cc)
        .arg("-I")
        .arg(&hdr)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} ({e}): apt-get install build-essential"));
    assert!(built.status.success(), "compiling the header failed:\n{}", String::from_utf8_lossy(&built.stderr));
    let out = Command::new(&exe).output().expect("run the layout program");
    let _ = std::fs::remove_dir_all(&dir);
    let got: Vec<(String, u64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(got, want);
}
