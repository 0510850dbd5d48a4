//! What the product binary must not contain: the CRIU plugin (CRIU loads `librdmig_criu.so`
//! itself; a binary that links it would carry a second `CR_PLUGIN_DESC`) and the lab (the VMs,
//! their guest agent and protocol live in the `rdmig-lab` crate).

fn binary() -> Vec<u8> {
    std::fs::read(env!("CARGO_BIN_EXE_rdmig")).expect("read the rdmig binary")
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn rdmig_does_not_contain_the_criu_plugin() {
    let b = binary();
    assert!(!contains(&b, "CR_PLUGIN_DESC"), "the rdmig binary links the CRIU plugin");
}

#[test]
fn rdmig_does_not_contain_the_lab() {
    let b = binary();
    for lab_only in ["rdmig_lab", "guest-agent", "qemu-system-x86_64"] {
        assert!(!contains(&b, lab_only), "the rdmig binary contains lab code ({lab_only:?})");
    }
}
