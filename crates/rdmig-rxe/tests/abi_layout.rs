//! The Rust translation of the control device's ABI against the C header the kernel patches
//! include: a C program built from `softroce/include/uapi/rdma/rxe_ctl_abi.h` prints every
//! struct's size, every field's offset, every ioctl number and constant, and they must equal
//! `rdmig_rxe::abi`'s. Needs a C compiler and the kernel's uapi headers (build-essential,
//! linux-libc-dev); without them the test fails and says so.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use rdmig_rxe::abi::{CONSTANTS, IOCTLS, LAYOUT};

fn header_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../softroce/include/uapi/rdma")
}

#[test]
fn rust_layout_matches_the_c_header() {
    let mut c = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"rxe_ctl_abi.h\"\nint main(void) {\n");
    for (st, _, fields) in LAYOUT {
        writeln!(c, "  printf(\"size {st} %zu\\n\", sizeof(struct {st}));").unwrap();
        for (f, _) in *fields {
            writeln!(c, "  printf(\"offset {st}.{f} %zu\\n\", offsetof(struct {st}, {f}));").unwrap();
        }
    }
    for (name, _) in IOCTLS {
        writeln!(c, "  printf(\"ioctl {name} %lu\\n\", (unsigned long){name});").unwrap();
    }
    for (name, _) in CONSTANTS {
        writeln!(c, "  printf(\"const {name} %lu\\n\", (unsigned long){name});").unwrap();
    }
    c.push_str("  return 0;\n}\n");

    let dir = std::env::temp_dir().join(format!("rdmig-rxe-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, exe) = (dir.join("layout.c"), dir.join("layout"));
    std::fs::write(&src, c).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let built = Command::new(&cc)
        .arg("-I")
        .arg(header_dir())
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?} ({e}): apt-get install build-essential"));
    assert!(built.status.success(), "compiling the header failed:\n{}", String::from_utf8_lossy(&built.stderr));
    let out = Command::new(&exe).output().expect("run the layout program");
    let _ = std::fs::remove_dir_all(&dir);
    let got: std::collections::BTreeMap<String, u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();

    let mut want = std::collections::BTreeMap::new();
    for (st, size, fields) in LAYOUT {
        want.insert(format!("size {st}"), *size as u64);
        for (f, off) in *fields {
            want.insert(format!("offset {st}.{f}"), *off as u64);
        }
    }
    for (name, nr) in IOCTLS {
        want.insert(format!("ioctl {name}"), *nr);
    }
    for (name, v) in CONSTANTS {
        want.insert(format!("const {name}"), *v);
    }
    let diff: Vec<String> = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).map(|(k, v)| format!("{k}: Rust {v}, C {:?}", got.get(k))).collect();
    assert!(diff.is_empty(), "rdmig_rxe::abi differs from rxe_ctl_abi.h:\n{}", diff.join("\n"));
    assert_eq!(got.len(), want.len());
}

/// Every struct the header defines is translated (a struct added to the header without a Rust
/// twin would otherwise go unchecked).
#[test]
fn every_struct_of_the_header_is_translated() {
    let h = std::fs::read_to_string(header_dir().join("rxe_ctl_abi.h")).unwrap();
    let in_header: std::collections::BTreeSet<&str> = h.lines().filter_map(|l| l.strip_prefix("struct ")?.strip_suffix(" {")).collect();
    let in_rust: std::collections::BTreeSet<&str> = LAYOUT.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(in_header, in_rust);
    let ioctls_in_header = h.lines().filter(|l| l.starts_with("#define RXE_CTL_IOC_") && l.contains("(RXE_CTL_IOC_MAGIC,")).count();
    assert_eq!(ioctls_in_header, IOCTLS.len());
}
