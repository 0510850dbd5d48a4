//! rdmig as a site installs it (issue 21). The suite's lab runs the rdmig package installed on
//! the host (this build's, as scripts/test.sh installs it with `packaging/build-deb.sh --profile
//! dev --install`; `up` checks that it is): every node's agent started as the installed
//! `rdmig-agent.service` starts it, with the node's own `/etc/rdmig/agent.env`, `/usr/bin/rdmig`,
//! and the CRIU plugin from CRIU's own directory, found by CRIU without `-L`. So every migration
//! of the suite, the `ib_send_bw` moves of e2e.rs among them, runs what dpkg installed.
//!
//! This scenario checks that, late in the suite: after the fault scenarios have killed and
//! restarted agents, and after the suite's migrations, none of which may have made a copy of a
//! plugin for `-L`.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};

use crate::harness::{share, spawn, wait_until, Ctx, Scenario};
use crate::migration::{kill, migrate, start_workload, verify_workload};

pub const SCENARIOS: &[Scenario] = &[("installed_package_agent_and_plugin_on_every_node", installed_package_agent_and_plugin_on_every_node)];

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

/// The installed rdmig and plugin are the ones built beside this test's rdmig-lab, so the suite
/// checks this tree's code and not whatever package was installed before.
pub(crate) fn installed_is_this_build(c: &Ctx) -> Result<()> {
    let built = c.bin.parent().context("rdmig-lab has no directory")?;
    for (installed, name) in
        [("/usr/bin/rdmig", "rdmig"), ("/usr/lib/criu/librdmig_criu.so", "librdmig_criu.so"), ("/usr/lib/rdmig/rdmig-presetup", "rdmig-presetup")]
    {
        ensure!(Path::new(installed).is_file(), "{installed} is missing: the rdmig package is not installed on this host: {INSTALL}");
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

fn installed_package_agent_and_plugin_on_every_node(c: &Ctx) -> Result<()> {
    // (That the installed package is this build, the suite's `up` checked.)
    let version = installed_version()?;
    installed_man_pages()?;
    let st = c.lab.load()?;
    ensure!(st.installed.as_deref() == Some(version.as_str()), "the lab does not run the installed package {version}: {:?}", st.installed);
    ensure!(st.rdmig_bin == Path::new("/usr/bin/rdmig"), "the nodes' rdmig: {}", st.rdmig_bin.display());
    let unit = rdmig_lab::find_installed()?.unit.display().to_string();
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

    // A migration of its own (the suite's ib_send_bw moves came before it): a workload that
    // checks every byte of its memory, node1 -> node3.
    let pid = start_workload(c, "node1", "16M", "1M", "inst-workload.json")?;
    let moved = (|| -> Result<()> {
        let (code, r) = migrate(c, pid, "node1", "node3", &[])?;
        ensure!(code == 0 && r["outcome"]["outcome"] == "migrated", "migration node1 -> node3: exit {code}, {}", r["outcome"]);
        let v = verify_workload(c, "node3", pid, "inst-workload.json")?;
        ensure!(v["ok"] == true && v["verified_pages"] == 4096 && v["bad_pages"] == 0, "the workload's memory at node3: {v}");
        Ok(())
    })();
    kill(c, "node3", pid);
    kill(c, "node1", pid);
    moved?;
    println!("  a workload moved node1 -> node3 with every byte intact");
    // No copy of a plugin was made for -L on any node, by this migration or any of the suite's:
    // CRIU used the installed one (a copy, once made, stays in its work directory).
    for node in ["node1", "node2", "node3"] {
        let found = c.rdmig(&["exec", node, "--", "find", "/tmp/rdmig-migrate", "/tmp/rdmig-agent", "-name", "criu-plugins"])?;
        ensure!(String::from_utf8_lossy(&found.stdout).trim().is_empty(), "{node} made a plugin directory for -L: {}", String::from_utf8_lossy(&found.stdout));
    }
    println!("  no migration on any node made a copy of the plugin for -L");
    Ok(())
}
