//! The command line refuses what it cannot do before it touches anything.

use std::process::Command;

/// `rdmig migrate ARGS` with no environment that could point it at a real cluster.
fn migrate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rdmig"))
        .arg("migrate")
        .args(args)
        .env_remove("RDMIG_TO")
        .env_remove("RDMIG_TLS_DIR")
        .env("RDMIG_JOURNAL", "/nonexistent/rdmig-test/journal.db")
        .output()
        .expect("run rdmig")
}

#[test]
fn a_container_with_a_page_stream_is_refused_with_the_reason() {
    let o = migrate(&["--container", "web", "--page-stream", "--to", "127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted: {err}");
    assert!(err.contains("container web's pages travel in Podman's checkpoint archive"), "{err}");
}

#[test]
fn help_says_which_strategy_is_the_default() {
    let o = migrate(&["--help"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(out.contains("precopy for a process, stop-and-copy for a container"), "{out}");
    assert!(out.contains("--pre-checkpoint"), "{out}");
}
