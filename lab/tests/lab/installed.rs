//! rdmig as a site installs it (issue 21): the lab is brought up again with `--installed`, so the
//! nodes run the rdmig package installed on the host (this build's, as scripts/test.sh installs
//! it with `packaging/build-deb.sh --profile dev --install`): the agent started as the installed
//! `rdmig-agent.service` starts it, with each node's own `/etc/rdmig/agent.env`, `/usr/bin/rdmig`,
//! and the CRIU plugin from CRIU's own directory, found by CRIU without `-L`. An `ib_send_bw`
//! server then migrates mid-run and both sides finish with exactly the iterations they were asked
//! for.
//!
//! It replaces the suite's lab, so it runs after the other scenarios (before the last two, which
//! bring up and remove labs of their own).

use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

use crate::harness::{perftest_iterations, proc_state, share, spawn, wait_gone, wait_until, Ctx, Scenario, LAB_BASE, LAB_NAME};

pub const SCENARIOS: &[Scenario] = &[("installed_package_agent_and_plugin_migrate_ib_send_bw", installed_package_agent_and_plugin_migrate_ib_send_bw)];

const SERVICE_ADDR: &str = "10.0.1.7";
const ITERS: u64 = 100_000;

/// How to install this build's package, as scripts/test.sh does before the lab tests.
const INSTALL: &str = "cargo build --workspace --all-targets --locked && packaging/build-deb.sh --profile dev --install (scripts/test.sh does)";

/// dpkg's idea of the installed rdmig package: "0.1.0-1".
fn installed_version() -> Result<String> {
    let o = std::process::Command::new("dpkg-query").args(["-W", "-f=${Version}", "rdmig"]).output()?;
    ensure!(o.status.success(), "the rdmig package is not installed on this host: {INSTALL}");
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The GNU build ID of an ELF file (`readelf -n`); stripping the package's copy keeps it.
fn build_id(path: &Path) -> Result<String> {
    let o = std::process::Command::new("readelf").arg("-n").arg(path).output().context("run readelf (binutils)")?;
    ensure!(o.status.success(), "readelf -n {}: {}", path.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .with_context(|| format!("{} has no GNU build ID", path.display()))
}

/// The installed rdmig and plugin are the ones built beside this test's rdmig-lab, so the test
/// checks this tree's code and not whatever package was installed before.
fn installed_is_this_build(c: &Ctx) -> Result<()> {
    let built = c.bin.parent().context("rdmig-lab has no directory")?;
    for (installed, name) in [("/usr/bin/rdmig", "rdmig"), ("/usr/lib/criu/librdmig_criu.so", "librdmig_criu.so")] {
        let (i, b) = (build_id(Path::new(installed))?, build_id(&built.join(name))?);
        ensure!(i == b, "the installed {installed} (build ID {i}) is not this build's {} ({b}): {INSTALL}", built.join(name).display());
    }
    Ok(())
}

/// The package's man pages (issue 21): one per command, as dpkg installed them, each naming
/// its command.
fn installed_man_pages() -> Result<()> {
    let o = std::process::Command::new("dpkg").args(["-L", "rdmig"]).output()?;
    ensure!(o.status.success(), "dpkg -L rdmig: {}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout);
    let pages: Vec<&str> = listed.lines().filter(|l| l.starts_with("/usr/share/man/man1/rdmig") && l.ends_with(".1.gz")).collect();
    for cmd in ["rdmig", "rdmig-agent", "rdmig-migrate", "rdmig-recover", "rdmig-ca-issue"] {
        let page = format!("/usr/share/man/man1/{cmd}.1.gz");
        ensure!(pages.contains(&page.as_str()), "the package has no {page}: {pages:?}");
        let text = std::process::Command::new("zcat").arg(&page).output()?;
        ensure!(text.status.success(), "zcat {page}: {}", String::from_utf8_lossy(&text.stderr));
        ensure!(String::from_utf8_lossy(&text.stdout).contains(&format!(".TH {cmd} 1")), "{page} is not {cmd}'s page");
    }
    println!("  {} man pages installed (man rdmig-migrate)", pages.len());
    Ok(())
}

fn installed_package_agent_and_plugin_migrate_ib_send_bw(c: &Ctx) -> Result<()> {
    let version = installed_version()?;
    installed_is_this_build(c)?;
    installed_man_pages()?;
    let r: Value = serde_json::from_str(&c.rdmig_ok(&["up", "--nodes", "3", "--memory", "1536", "--installed", "--json"])?)?;
    ensure!(r["installed"]["version"] == version.as_str(), "up did not use the installed package {version}: {}", r["installed"]);
    ensure!(r["rdmig"] == "/usr/bin/rdmig", "the nodes' rdmig: {}", r["rdmig"]);
    let unit = r["installed"]["unit"].as_str().context("no unit")?.to_string();
    println!("  package rdmig {version}, agent unit {unit}");

    // The snapshot holds only the lab's own programs, not rdmig or its plugin.
    let snap: Vec<String> = std::fs::read_dir(share().join("bin"))?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    ensure!(!snap.iter().any(|n| n == "rdmig" || n.ends_with(".so")), "the snapshot still holds the product: {snap:?}");

    for i in 1..=3u32 {
        let node = format!("node{i}");
        // The node's own settings, where the unit reads them.
        let env = c.exec_ok(&node, &["cat", "/etc/rdmig/agent.env"])?;
        ensure!(env.lines().any(|l| l == format!("RDMIG_LISTEN=10.99.0.{i}:7800")), "{node}'s /etc/rdmig/agent.env:\n{env}");
        // The agent runs the installed binary with exactly what ExecStart makes of those settings,
        // and the unit's variables in its environment, as systemd starts it.
        let mut pid = String::new();
        wait_until(&format!("the agent on {node}"), Duration::from_secs(30), || {
            pid = c
                .rdmig(&["exec", &node, "--", "pgrep", "-o", "-f", "^/usr/bin/rdmig agent"])?
                .stdout
                .iter()
                .map(|&b| b as char)
                .collect::<String>()
                .trim()
                .to_string();
            Ok(!pid.is_empty())
        })?;
        let exe = c.exec_ok(&node, &["readlink", &format!("/proc/{pid}/exe")])?;
        ensure!(exe.trim() == "/usr/bin/rdmig", "{node}'s agent runs {exe}");
        let argv: Vec<String> =
            c.exec_ok(&node, &["cat", &format!("/proc/{pid}/cmdline")])?.split('\0').filter(|a| !a.is_empty()).map(str::to_string).collect();
        let want = [
            "/usr/bin/rdmig".to_string(),
            "agent".into(),
            "--listen".into(),
            format!("10.99.0.{i}:7800"),
            "--rdma-addr".into(),
            format!("10.0.1.{}", 10 + i),
            "--number-range".into(),
            format!("{i}/3"),
            "--work-dir".into(),
            "/tmp/rdmig-agent".into(),
        ];
        ensure!(argv == want, "{node}'s agent runs {argv:?}, the unit says {want:?}");
        let environ = c.exec_ok(&node, &["cat", &format!("/proc/{pid}/environ")])?;
        ensure!(environ.split('\0').any(|v| v == format!("RDMIG_NUMBER_RANGE={i}/3")), "{node}'s agent environment: {environ:?}");
        // The journal on the node's own /run (the default, under /var/lib, is the host's, read-only).
        ensure!(environ.split('\0').any(|v| v == "RDMIG_JOURNAL=/run/rdmig/journal.db"), "{node}'s agent environment: {environ:?}");
        // Its TLS identity and the peers it lets in, from the node's settings file.
        ensure!(environ.split('\0').any(|v| v == "RDMIG_TLS_DIR=/mnt/node/tls"), "{node}'s agent environment: {environ:?}");
        ensure!(environ.split('\0').any(|v| v == "RDMIG_ALLOW_PEERS=node1,node2,node3"), "{node}'s agent environment: {environ:?}");
        // rdmig itself says which modules run: rdmig's.
        let m = c.exec_ok(&node, &["/usr/bin/rdmig", "softroce", "modules"])?;
        ensure!(m.lines().any(|l| l.starts_with("rdma_rxe") && l.contains("loaded:    rdmig's 0.1.0-rdmig")), "{node}: {m}");
    }
    println!("  every node's agent: /usr/bin/rdmig as {unit} starts it, with the node's own settings");

    // CRIU loads the installed plugin from its own directory, given no -L.
    let sleeper = spawn(c, "node1", None, &["sleep", "600"])?;
    c.exec_ok("node1", &["mkdir", "-p", "/tmp/probe"])?;
    let o = c.rdmig(&["exec", "node1", "--", "criu", "dump", "-t", &sleeper.to_string(), "-D", "/tmp/probe", "-v4", "-o", "dump.log", "--leave-running"])?;
    let log = c.exec_ok("node1", &["cat", "/tmp/probe/dump.log"])?;
    let _ = c.rdmig(&["exec", "node1", "--", "kill", "-9", &sleeper.to_string()]);
    ensure!(o.status.success(), "criu dump of a plain process failed:\n{log}");
    ensure!(log.contains("rdmig_rxe") && log.contains("loaded for dump"), "the installed plugin did not load by itself:\n{log}");
    println!("  criu dump without -L loaded rdmig's plugin from /usr/lib/criu");

    // The migration: ib_send_bw -b, server on the movable address on node1, client on node2.
    let gid = |node: &str, ip: &str| -> Result<String> { Ok(c.exec_ok(node, &["/usr/bin/rdmig", "rxe", "gid-index", "--ip", ip])?.trim().to_string()) };
    c.rdmig_ok(&["addr", "add", "node1", SERVICE_ADDR])?;
    let (sg, cg) = (gid("node1", SERVICE_ADDR)?, gid("node2", "10.0.1.12")?);
    let n = ITERS.to_string();
    for f in ["inst-server.log", "inst-client.log"] {
        let _ = std::fs::remove_file(share().join(f));
    }
    let server = spawn(
        c,
        "node1",
        Some("/mnt/lab/inst-server.log"),
        &["ib_send_bw", crate::harness::PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &sg, "-s", "4096", "-n", &n, "-b"],
    )?;
    wait_until("ib_send_bw to listen", Duration::from_secs(30), || Ok(!c.exec_ok("node1", &["ss", "-Hltn", "sport = :18515"])?.trim().is_empty()))?;
    let client = spawn(
        c,
        "node2",
        Some("/mnt/lab/inst-client.log"),
        &["ib_send_bw", crate::harness::PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &cg, "-s", "4096", "-n", &n, "-b", SERVICE_ADDR],
    )?;
    wait_until("the transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok("node1", &["/usr/bin/rdmig", "softroce", "status"])?;
        Ok(st.lines().any(|l| l.starts_with("qp") && l.contains(&format!("pid={server}")) && l.contains("state=rts")))
    })?;
    thread::sleep(Duration::from_secs(2));

    let p = server.to_string();
    let o = std::process::Command::new(&c.bin)
        .args([
            "--name",
            LAB_NAME,
            "--dir",
            LAB_BASE,
            "on",
            "node1",
            "--to-node",
            "node3",
            "--",
            "migrate",
            &p,
            "--json",
            "--tcp-established",
            "--move-addr",
            SERVICE_ADDR,
        ])
        .output()?;
    let code = o.status.code().unwrap_or(-1);
    let rep: Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("migrate printed no report (exit {code}):\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))?;
    ensure!(code == 0 && rep["outcome"]["outcome"] == "migrated", "migration node1 -> node3: exit {code}, {}", rep["outcome"]);
    ensure!(proc_state(c, "node1", server)?.is_none(), "the source copy still exists on node1");
    ensure!(proc_state(c, "node3", server)?.is_some(), "pid {server} does not run on node3");
    println!("  node1 -> node3: downtime {:.0} ms", rep["summary"]["downtime_ns"].as_f64().unwrap_or(f64::NAN) / 1e6);
    // No copy of a plugin was made for -L on either side: CRIU used the installed one.
    for (node, dir) in [("node1", "/tmp/rdmig-migrate"), ("node3", "/tmp/rdmig-agent")] {
        let found = c.rdmig(&["exec", node, "--", "find", dir, "-name", "criu-plugins"])?;
        ensure!(String::from_utf8_lossy(&found.stdout).trim().is_empty(), "{node} made a plugin directory for -L: {}", String::from_utf8_lossy(&found.stdout));
    }

    for (node, pid) in [("node3", server), ("node2", client)] {
        wait_gone(c, node, pid, Duration::from_secs(400))?;
    }
    for (who, f) in [("server", "inst-server.log"), ("client", "inst-client.log")] {
        let out = std::fs::read_to_string(share().join(f))?;
        ensure!(perftest_iterations(&out) == Some(ITERS), "{who} did not finish {ITERS} iterations:\n{out}");
        ensure!(!out.to_lowercase().contains("error") && !out.contains("Couldn't"), "{who} reported an error:\n{out}");
    }
    println!("  both sides finished {ITERS} iterations");
    let _ = c.rdmig(&["addr", "del", "node3", SERVICE_ADDR]);
    Ok(())
}
