//! CRIU plugin scenarios (issue 5): Debian's stock CRIU loads rdmig's plugin, other processes are
//! dumped and restored as before, a verbs process is saved (and keeps running with
//! --leave-running, its stopped QPs resumed), dumped mid-run, killed and restored with every
//! iteration delivered exactly once (also when it sleeps on completion events, uses several PDs,
//! receives from an SRQ, sends over UD with an AH, is written through a memory window, or holds
//! a second verbs context), and one the plugin cannot save is refused with a message naming the
//! object and keeps running.

use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

use crate::harness::{perftest_calibration, perftest_iterations as iterations, proc_state, share, spawn, wait_until, Ctx, Scenario, PERFTEST_KEEP_GOING};

pub const SCENARIOS: &[Scenario] = &[
    ("plugin_loads_and_plain_process_dumps_and_restores", plugin_loads_and_plain_process_dumps_and_restores),
    ("plugin_saves_waiting_ib_send_bw_with_leave_running", plugin_saves_waiting_ib_send_bw_with_leave_running),
    ("plugin_refuses_idle_srq_and_process_keeps_running", plugin_refuses_idle_srq_and_process_keeps_running),
    ("plugin_restores_waiting_ib_send_bw", plugin_restores_waiting_ib_send_bw),
    ("plugin_leave_running_mid_run_resumes_the_qp", plugin_leave_running_mid_run_resumes_the_qp),
    ("plugin_ib_send_bw_dump_kill_restore_same_node", plugin_ib_send_bw_dump_kill_restore_same_node),
    ("plugin_restore_takes_over_objects_made_ahead", plugin_restore_takes_over_objects_made_ahead),
    ("plugin_ib_send_bw_events_dump_kill_restore_same_node", plugin_ib_send_bw_events_dump_kill_restore_same_node),
    ("plugin_ib_send_bw_restored_on_another_node", plugin_ib_send_bw_restored_on_another_node),
    ("plugin_vtest_checked_traffic_survives_dump_and_restore", plugin_vtest_checked_traffic_survives_dump_and_restore),
    ("plugin_vtest_several_pds_dump_kill_restore", plugin_vtest_several_pds_dump_kill_restore),
    ("plugin_ib_send_bw_srq_dump_kill_restore_same_node", plugin_ib_send_bw_srq_dump_kill_restore_same_node),
    ("plugin_ib_send_bw_ud_sender_dump_kill_restore", plugin_ib_send_bw_ud_sender_dump_kill_restore),
    ("plugin_vtest_memory_window_dump_kill_restore", plugin_vtest_memory_window_dump_kill_restore),
    ("plugin_vtest_two_contexts_dump_kill_restore", plugin_vtest_two_contexts_dump_kill_restore),
];

/// The address that moves with the restored server in the cross-node scenario.
const MOVING_ADDR: &str = "10.0.1.7";

/// The lab's shared directory on the host; /mnt/lab in the nodes.
/// Prints `rdmig image show` of image directory `name` in the lab share, indented (without its
/// VMA lines unless `vmas`), and returns the text.
fn print_image_show(name: &str, vmas: bool) -> Result<String> {
    let shown = rdmig_image::show::show(&share().join(name))?;
    println!(
        "  rdmig image show:\n{}",
        shown.trim_end().lines().filter(|l| vmas || !l.contains(" vma ")).map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    );
    Ok(shown)
}

/// The `kind` of the (first) verbs context image in `j`, what `rdmig image show --json` gives.
fn context_kind(j: &serde_json::Value) -> Result<&serde_json::Value> {
    let ctx = j["images"].as_array().into_iter().flatten().find(|i| i["kind"]["type"] == "context").with_context(|| format!("no context image: {j}"))?;
    Ok(&ctx["kind"])
}

/// The plugin directory to give CRIU (`-L`): CRIU's own, where the installed package put the
/// plugin, when the nodes run that package (the suite's lab); with `up --from-build`, a
/// directory of the share with a copy of the built plugin alone (CRIU loads every *.so of its
/// plugin directory).
fn plugin_dir(c: &Ctx) -> Result<&'static str> {
    if c.lab.load()?.installed.is_some() {
        return Ok(rdmig::criu::CRIU_PLUGIN_DIR);
    }
    let so = c.bin.with_file_name("librdmig_criu.so");
    ensure!(so.exists(), "{} is missing: run `cargo build --workspace` first", so.display());
    let dir = share().join("criu-plugins");
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(&so, dir.join("librdmig_criu.so")).with_context(|| format!("copy {}", so.display()))?;
    Ok("/mnt/lab/criu-plugins")
}

/// A fresh image directory `name` in the share; returns its path in the nodes.
fn image_dir(name: &str) -> Result<String> {
    let d = share().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(format!("/mnt/lab/{name}"))
}

fn log_of(name: &str, log: &str) -> String {
    std::fs::read_to_string(share().join(name).join(log)).unwrap_or_default()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn kill(c: &Ctx, node: &str, pid: i32) {
    let _ = c.rdmig(&["exec", node, "--", "kill", "-9", &pid.to_string()]);
}

fn criu(c: &Ctx, node: &str, args: &[&str]) -> Result<Output> {
    let mut a = vec!["exec", node, "--timeout", "120", "--", "criu"];
    a.extend_from_slice(args);
    c.rdmig(&a)
}

/// (a) CRIU loads the plugin for dump and restore, and a plain process (a shell loop) is dumped,
/// restored and continues counting, exactly as without the plugin.
fn plugin_loads_and_plain_process_dumps_and_restores(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let dir = image_dir("plugin-plain")?;
    let pid = spawn(c, "node1", None, &["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /tmp/plugin-cnt; sleep 0.2; done"])?;
    thread::sleep(Duration::from_secs(1));
    let o = criu(c, "node1", &["dump", "-t", &pid.to_string(), "-D", &dir, "-L", plugins, "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-plain", "dump.log");
    ensure!(o.status.success(), "plain dump failed: {}\n{log}", text(&o));
    ensure!(log.contains("Plugin \"rdmig_rxe\" (version 512 hooks 10)"), "CRIU did not load the plugin for dump:\n{log}");
    ensure!(log.contains("rdmig_criu: loaded for dump"), "the plugin's init did not log through CRIU:\n{log}");
    ensure!(!log.contains("rdmig_criu: saved"), "the plugin claimed something of a shell loop:\n{log}");
    ensure!(proc_state(c, "node1", pid)?.is_none(), "the dumped process still runs");
    let o = criu(c, "node1", &["restore", "-D", &dir, "-L", plugins, "-d", "-v4", "-o", "restore.log"])?;
    let log = log_of("plugin-plain", "restore.log");
    ensure!(o.status.success(), "plain restore failed: {}\n{log}", text(&o));
    ensure!(log.contains("rdmig_criu: loaded for restore"), "CRIU did not load the plugin for restore:\n{log}");
    // The loop rewrites the file every 0.2 s: a read may catch it empty, so read until a number.
    let count = || -> Result<u64> {
        for _ in 0..10 {
            if let Ok(n) = c.exec_ok("node1", &["cat", "/tmp/plugin-cnt"])?.trim().parse() {
                return Ok(n);
            }
            thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("/tmp/plugin-cnt never held a number")
    };
    let n0 = count()?;
    thread::sleep(Duration::from_secs(2));
    let n1 = count()?;
    ensure!(n1 > n0, "the restored loop does not count: {n0} then {n1}");
    ensure!(proc_state(c, "node1", pid)?.is_some(), "restored under another pid");
    kill(c, "node1", pid);
    Ok(())
}

struct Gids {
    server: String,
    client: String,
}

fn gids(c: &Ctx) -> Result<Gids> {
    let bin = c.lab.load()?.rdmig_bin.display().to_string();
    let g = |n: &str, ip: &str| -> Result<String> { Ok(c.exec_ok(n, &[&bin, "rxe", "gid-index", "--ip", ip])?.trim().to_string()) };
    Ok(Gids { server: g("node1", "10.0.1.11")?, client: g("node2", "10.0.1.12")? })
}

/// Starts an ib_send_bw server on node1 (output to /mnt/lab/<log>) and waits until it listens.
fn send_bw_server(c: &Ctx, g: &Gids, iters: &str, log: &str) -> Result<i32> {
    send_bw_server_with(c, g, &["-n", iters], log)
}

/// The same with other perftest options (`-n N` among them).
fn send_bw_server_with(c: &Ctx, g: &Gids, opts: &[&str], log: &str) -> Result<i32> {
    let _ = std::fs::remove_file(share().join(log));
    let mut argv = vec!["ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &g.server, "-s", "4096"];
    argv.extend_from_slice(opts);
    let pid = spawn(c, "node1", Some(&format!("/mnt/lab/{log}")), &argv)?;
    wait_until("ib_send_bw to listen", Duration::from_secs(30), || Ok(!c.exec_ok("node1", &["ss", "-Hltn", "sport = :18515"])?.trim().is_empty()))?;
    Ok(pid)
}

/// A client on node2 that sends the waiting server on node1 its 500 messages and reports them all.
fn client_500(c: &Ctx, g: &Gids) -> Result<()> {
    let argv =
        ["exec", "node2", "--timeout", "120", "--", "ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &g.client, "-n", "500", "-s", "4096", "10.0.1.11"];
    let co = c.rdmig(&argv)?;
    ensure!(co.status.success() && iterations(&String::from_utf8_lossy(&co.stdout)) == Some(500), "client: {}", text(&co));
    Ok(())
}

fn wait_exit(c: &Ctx, node: &str, pid: i32, timeout: Duration) -> Result<()> {
    crate::harness::wait_gone(c, node, pid, timeout)
}

/// A waiting ib_send_bw server holds a verbs context and its async event file: the plugin saves
/// both (`criu dump --leave-running`), `rdmig image show` lists them, and the server, left
/// running, then serves a client: both sides finish all iterations.
fn plugin_saves_waiting_ib_send_bw_with_leave_running(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let g = gids(c)?;
    let dir = image_dir("plugin-wait")?;
    let srv = send_bw_server(c, &g, "500", "plugin-wait-server.log")?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--leave-running", "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-wait", "dump.log");
    ensure!(o.status.success(), "dump --leave-running of a waiting ib_send_bw failed: {}\n{log}", text(&o));
    ensure!(log.contains("saved verbs context"), "the plugin did not save the context:\n{log}");
    let shown = print_image_show("plugin-wait", true)?;
    ensure!(shown.contains("verbs context on rxe0 (/dev/infiniband/uverbs0"), "{shown}");
    ensure!(shown.contains("infiniband event file") && shown.contains(": async"), "{shown}");
    let j = rdmig_image::show::show_json(&share().join("plugin-wait"))?;
    ensure!(j["images"][0]["pid"] == srv, "image of another pid: {j}");
    ensure!(proc_state(c, "node1", srv)?.is_some_and(|s| !s.starts_with('T')), "the server is not running after --leave-running");
    client_500(c, &g)?;
    wait_exit(c, "node1", srv, Duration::from_secs(30))?;
    let so = std::fs::read_to_string(share().join("plugin-wait-server.log"))?;
    ensure!(iterations(&so) == Some(500), "server after the dump: {so}");
    Ok(())
}

/// (b) A process the plugin cannot save (the vtest server holding an SRQ that no QP uses: its
/// ring cannot be told from the CQs' rings) is refused with a message naming the object and the
/// reason; nothing is stopped, the server keeps running and its checked traffic arrives intact.
fn plugin_refuses_idle_srq_and_process_keeps_running(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let dir = image_dir("plugin-refuse")?;
    let (srv, cli, count) = start_vtest(c, "plugin-refuse", "--idle-srq")?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--tcp-established", "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-refuse", "dump.log");
    ensure!(!o.status.success(), "dump of a process with an idle SRQ succeeded:\n{log}");
    let line = log.lines().find(|l| l.contains("rdmig_criu: cannot dump verbs state")).with_context(|| format!("no plugin error in the log:\n{log}"))?;
    println!("  {line}");
    ensure!(line.contains(&format!("process {srv} (rdmig-vtest)")) && line.contains("SRQ handle") && line.contains("used by no QP"), "{line}");
    ensure!(!log.contains("stopped QP"), "a QP was stopped although the process was refused:\n{log}");
    let st = proc_state(c, "node1", srv)?;
    ensure!(st.as_deref().is_some_and(|s| !s.starts_with('T')), "server after the refused dump: {st:?}");
    traffic_goes_on(c, cli, "refused dump")?;
    finish_vtest(c, "plugin-refuse", srv, cli, count)
}

/// The vtest server with a second verbs context (`--second-context`: another uverbs file of the
/// same device with its own PD, CQ, QP in INIT with mapped rings, MR and async event file) is
/// dumped mid-transfer, killed and restored: each context is saved on its own with its event
/// file (told apart by the uverbs file's token, softroce patch 0014), both come back with the
/// same objects (the fdinfo of both uverbs files compared line by line, QPNs included), and the
/// checked traffic on the first continues intact.
fn plugin_vtest_two_contexts_dump_kill_restore(c: &Ctx) -> Result<()> {
    let before = std::cell::RefCell::new(vec![]);
    let before_dump = |srv: i32| -> Result<()> {
        let l = uverbs_fdinfo(c, "node1", srv)?;
        ensure!(
            l.iter().filter(|l| l.starts_with("qp:") && l.contains(" qpn=")).count() == 2,
            "expected two QPs with their QPNs (patch 0014):\n{}",
            l.join("\n")
        );
        *before.borrow_mut() = l;
        Ok(())
    };
    let after_dump = |srv: i32| -> Result<()> {
        ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
        print_image_show("plugin-ctx2", false)?;
        let j = rdmig_image::show::show_json(&share().join("plugin-ctx2"))?;
        let imgs = j["images"].as_array().context("no images")?;
        let ctxs: Vec<&serde_json::Value> = imgs.iter().filter(|i| i["kind"]["type"] == "context").collect();
        ensure!(ctxs.len() == 2 && ctxs[0]["kind"]["file_token"] != ctxs[1]["kind"]["file_token"], "two contexts with their own tokens expected: {j}");
        for x in &ctxs {
            ensure!(x["kind"]["qps"].as_array().is_some_and(|q| q.len() == 1), "each context has one QP: {x}");
            let asyncs = imgs
                .iter()
                .filter(|e| e["kind"]["role"] == "async" && (e["kind"]["context_id"] == x["id"] || e["kind"]["file_token"] == x["kind"]["file_token"]))
                .count();
            ensure!(asyncs == 1, "context {} has {asyncs} async event files: {j}", x["id"]);
        }
        Ok(())
    };
    let after_restore = |srv: i32| -> Result<()> {
        let now = uverbs_fdinfo(c, "node1", srv)?;
        let was = before.borrow();
        ensure!(*was == now, "the restored objects differ:\nbefore the dump:\n{}\nafter the restore:\n{}", was.join("\n"), now.join("\n"));
        println!("  {} verbs objects of two contexts restored with the same handles, QPNs, PDs and CQs", now.len());
        Ok(())
    };
    vtest_dump_restore(c, "plugin-ctx2", "--second-context", Hooks { before_dump: &before_dump, after_dump: &after_dump, after_restore: &after_restore })
}

/// An `ib_send_bw --use-srq -q 2` server (two RC QPs receiving from one SRQ) is dumped mid-run,
/// killed and restored on the same node: the image holds the SRQ (its ring, limit and PD) and
/// which QPs use it, the driver's QP images carry the SRQ ring and the shared CQ's rings once
/// (the second QP's image leaves them out, softroce patch 0036), and both sides finish with
/// exactly N iterations per QP and no error.
fn plugin_ib_send_bw_srq_dump_kill_restore_same_node(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let g = gids(c)?;
    let dir = image_dir("plugin-srq")?;
    let iters = 50000u64;
    let (srv, cli) = send_bw_pair_running(c, &g, &["-n", &iters.to_string(), "--use-srq", "-q", "2"], "plugin-srq")?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--tcp-established", "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-srq", "dump.log");
    ensure!(o.status.success(), "dump of ib_send_bw --use-srq mid-run failed: {}\n{log}", text(&o));
    ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
    print_image_show("plugin-srq", true)?;
    let j = rdmig_image::show::show_json(&share().join("plugin-srq"))?;
    let k = context_kind(&j)?;
    let srqs = k["srqs"].as_array().context("no SRQs")?;
    ensure!(srqs.len() == 1 && srqs[0]["pgoff"].is_u64() && srqs[0]["max_wr"].as_u64().is_some_and(|w| w > 0), "the SRQ was not saved: {k}");
    let qps = k["qps"].as_array().context("no QPs")?;
    ensure!(
        qps.len() == 2 && qps.iter().all(|q| q["links"]["srq"] == srqs[0]["handle"] && q["mig_image"].is_object()),
        "the QPs are not saved on the SRQ with their driver state: {k}"
    );
    // perftest gives both QPs one CQ: the first QP's image carries its ring and the SRQ's, the
    // second leaves them out
    let image_len = |q: &serde_json::Value| q["mig_image"]["len"].as_u64().unwrap_or(0);
    ensure!(
        log.contains("its CQs' and SRQ's rings in an earlier QP's") && image_len(&qps[1]) > 0 && image_len(&qps[1]) < image_len(&qps[0]),
        "the second QP's driver image did not leave out the rings the first carries ({} and {} bytes):\n{log}",
        image_len(&qps[0]),
        image_len(&qps[1])
    );
    println!("  driver images of {} and {} bytes: the shared rings saved once", image_len(&qps[0]), image_len(&qps[1]));
    let o = criu(c, "node1", &["restore", "-D", &dir, "-L", plugins, "-d", "--tcp-established", "-v4", "-o", "restore.log"])?;
    let log = log_of("plugin-srq", "restore.log");
    ensure!(o.status.success(), "restore failed: {}\n{log}", text(&o));
    ensure!(log.contains("1 SRQ") && log.contains("2 QP(s) resumed"), "the plugin did not rebuild the SRQ and resume both QPs:\n{log}");
    both_finish(c, srv, cli, iters * 2, "plugin-srq")
}

/// Starts an ib_send_bw pair (server node1, client node2) with perftest options `opts` (both
/// sides) and waits until the server's QP is connected; returns (server pid, client pid).
fn send_bw_pair_running(c: &Ctx, g: &Gids, opts: &[&str], tag: &str) -> Result<(i32, i32)> {
    let srv = send_bw_server_with(c, g, opts, &format!("{tag}-server.log"))?;
    let _ = std::fs::remove_file(share().join(format!("{tag}-client.log")));
    let mut argv = vec!["ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &g.client, "-s", "4096"];
    argv.extend_from_slice(opts);
    argv.push("10.0.1.11");
    let cli = spawn(c, "node2", Some(&format!("/mnt/lab/{tag}-client.log")), &argv)?;
    // perftest's output is block-buffered into its log, so it says nothing until the end; the
    // driver's status shows the server's QP connected.
    let bin = c.lab_tool("rdmig");
    wait_until("the transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok("node1", &[&bin, "softroce", "status"])?;
        Ok(st.lines().any(|l| l.starts_with("qp") && l.contains(&format!("pid={srv}")) && (l.contains("state=rts") || l.contains("state=rtr"))))
    })?;
    thread::sleep(Duration::from_secs(2));
    Ok((srv, cli))
}

/// Waits for both sides and checks that each reports exactly `iters` iterations.
fn both_finish(c: &Ctx, srv: i32, cli: i32, iters: u64, tag: &str) -> Result<()> {
    wait_exit(c, "node1", srv, Duration::from_secs(400))?;
    wait_exit(c, "node2", cli, Duration::from_secs(60))?;
    let so = std::fs::read_to_string(share().join(format!("{tag}-server.log")))?;
    let co = std::fs::read_to_string(share().join(format!("{tag}-client.log")))?;
    perftest_calibration("server", &so);
    perftest_calibration("client", &co);
    ensure!(iterations(&so) == Some(iters) && iterations(&co) == Some(iters), "after the dump:\nserver: {so}\nclient: {co}");
    for (who, out) in [("server", &so), ("client", &co)] {
        ensure!(!out.to_lowercase().contains("error") && !out.contains("Couldn't"), "{who} reported an error:\n{out}");
    }
    println!("  both sides finished {iters} iterations");
    Ok(())
}

/// `criu dump --leave-running` of a bidirectional ib_send_bw server mid-run: the plugin stops the
/// connected QP, saves it with the driver's state image, and resumes it when the dump is done;
/// the peer, paused meanwhile, continues, and both sides finish every iteration.
fn plugin_leave_running_mid_run_resumes_the_qp(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let g = gids(c)?;
    let dir = image_dir("plugin-lr")?;
    // The dump comes 2-4 s into the traffic; 50000 messages each way last 12-25 s in the lab.
    let iters = 50000;
    let (srv, cli) = send_bw_pair_running(c, &g, &["-n", &iters.to_string(), "-b"], "plugin-lr")?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--leave-running", "--tcp-established", "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-lr", "dump.log");
    ensure!(o.status.success(), "dump --leave-running mid-run failed: {}\n{log}", text(&o));
    ensure!(log.contains("and saved its driver state") && log.contains("resumed"), "the plugin did not stop, save and resume the QP:\n{log}");
    both_finish(c, srv, cli, iters, "plugin-lr")
}

/// A waiting ib_send_bw server (QP created, not connected) is dumped, killed and restored on the
/// same node; the restored server then serves a client: both finish every iteration.
fn plugin_restores_waiting_ib_send_bw(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let g = gids(c)?;
    let dir = image_dir("plugin-restore")?;
    let srv = send_bw_server(c, &g, "500", "plugin-restore-server.log")?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "-v4", "-o", "dump.log"])?;
    ensure!(o.status.success(), "dump failed: {}\n{}", text(&o), log_of("plugin-restore", "dump.log"));
    ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
    let o = criu(c, "node1", &["restore", "-D", &dir, "-L", plugins, "-d", "-v4", "-o", "restore.log"])?;
    let log = log_of("plugin-restore", "restore.log");
    ensure!(o.status.success(), "restore failed: {}\n{log}", text(&o));
    ensure!(log.contains("recreated") && log.contains("pinned on the restored pages"), "the plugin did not rebuild the context:\n{log}");
    ensure!(proc_state(c, "node1", srv)?.is_some(), "the restored server is not running");
    client_500(c, &g)?;
    wait_exit(c, "node1", srv, Duration::from_secs(30))?;
    let so = std::fs::read_to_string(share().join("plugin-restore-server.log"))?;
    ensure!(iterations(&so) == Some(500), "restored server: {so}");
    Ok(())
}

/// The test: an unmodified bidirectional `ib_send_bw -n N` server is dumped mid-run,
/// killed, and restored on the same node; its peer is paused meanwhile and continues after the
/// restored QP's RESUME; both sides finish with exactly N iterations and no error.
fn plugin_ib_send_bw_dump_kill_restore_same_node(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let g = gids(c)?;
    let dir = image_dir("plugin-mid")?;
    // The dump comes 2-4 s into the traffic; 50000 messages each way last 12-25 s in the lab.
    let iters = 50000;
    let (srv, cli) = send_bw_pair_running(c, &g, &["-n", &iters.to_string(), "-b"], "plugin-mid")?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--tcp-established", "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-mid", "dump.log");
    ensure!(o.status.success(), "dump mid-run failed: {}\n{log}", text(&o));
    ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
    print_image_show("plugin-mid", true)?;
    let t0 = Instant::now();
    let o = criu(c, "node1", &["restore", "-D", &dir, "-L", plugins, "-d", "--tcp-established", "-v4", "-o", "restore.log"])?;
    let log = log_of("plugin-mid", "restore.log");
    ensure!(o.status.success(), "restore failed: {}\n{log}", text(&o));
    println!("  restore took {:?}", t0.elapsed());
    ensure!(log.contains("QP(s) resumed"), "the plugin did not resume the QP:\n{log}");
    both_finish(c, srv, cli, iters, "plugin-mid")
}

/// Pre-setup (issue 18): a bidirectional `ib_send_bw -q 4` server is dumped mid-run and killed;
/// before `criu restore`, `rdmig-presetup` makes its verbs objects from the images (the 4 QPs
/// with their numbers, moved to RTS, their CQs, the MR hollow) and hands them off. The restore
/// takes them over instead of making them (its log says so), loads their state, adopts them
/// (softroce patch 0035) and ends the helper. The restored server is then saved again with
/// `--leave-running`, which needs its objects to be its own; both sides finish every iteration.
fn plugin_restore_takes_over_objects_made_ahead(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let g = gids(c)?;
    let dir = image_dir("plugin-pre")?;
    let iters = 30000;
    let (srv, cli) = send_bw_pair_running(c, &g, &["-n", &iters.to_string(), "-b", "-q", "4"], "plugin-pre")?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--tcp-established", "-v4", "-o", "dump.log"])?;
    ensure!(o.status.success(), "dump mid-run failed: {}\n{}", text(&o), log_of("plugin-pre", "dump.log"));
    ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
    let helper_log = "plugin-pre-helper.log";
    let _ = std::fs::remove_file(share().join(helper_log));
    // The package's helper, or the build's (`up --from-build`).
    let presetup = if c.lab.load()?.installed.is_some() { "/usr/lib/rdmig/rdmig-presetup".to_string() } else { c.lab_tool("rdmig-presetup") };
    let helper = spawn(c, "node1", Some(&format!("/mnt/lab/{helper_log}")), &[&presetup, &dir, "--hold", "300"])?;
    let helper_said = || std::fs::read_to_string(share().join(helper_log)).unwrap_or_default();
    wait_until("rdmig-presetup to make the objects", Duration::from_secs(60), || {
        ensure!(proc_state(c, "node1", helper)?.is_some() || helper_said().contains("ready"), "rdmig-presetup ended: {}", helper_said());
        Ok(helper_said().contains("ready 1"))
    })?;
    let o = criu(c, "node1", &["restore", "-D", &dir, "-L", plugins, "-d", "--tcp-established", "-v4", "-o", "restore.log"])?;
    let log = log_of("plugin-pre", "restore.log");
    ensure!(o.status.success(), "restore failed: {}\n{log}\nrdmig-presetup: {}", text(&o), helper_said());
    ensure!(
        log.contains(&format!("took the objects pid {helper} made ahead")) && log.contains("4 QP(s) resumed"),
        "the restore did not take over the objects made ahead and resume the 4 QPs:\n{log}\nrdmig-presetup: {}",
        helper_said()
    );
    // Taken over, the objects are the restored process's: the restore ended the helper, and
    // the driver names the restored server as their creator, so it can be saved again (the
    // dump finds a process's QPs and MRs by its pid) while it keeps running.
    wait_exit(c, "node1", helper, Duration::from_secs(10))?;
    let again = image_dir("plugin-pre-again")?;
    thread::sleep(Duration::from_secs(1));
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &again, "-L", plugins, "--leave-running", "--tcp-established", "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-pre-again", "dump.log");
    ensure!(o.status.success(), "the restored server could not be saved again: {}\n{log}", text(&o));
    ensure!(log.contains("4 QP"), "the second dump did not save the 4 QPs:\n{log}");
    let times = std::fs::read_to_string(share().join("plugin-pre").join(rdmig_image::timing::FILE)).unwrap_or_default();
    println!("  the plugin's restore steps:\n{}", times.lines().filter(|l| l.contains("restore")).map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n"));
    // perftest counts the iterations of all its QPs.
    both_finish(c, srv, cli, iters * 4, "plugin-pre")
}

/// The same with `ib_send_bw -e`: both sides sleep on a completion channel (ibv_get_cq_event,
/// ack, re-arm). The image holds the channel, the CQs' user handles and the counts of events
/// the server had read; the restored CQs deliver to the restored channel with the old user
/// handles and counters and the same armed state, so the server wakes up, finishes with exactly
/// N iterations and exits: ibv_destroy_cq did not wait for events the kernel no longer counted.
fn plugin_ib_send_bw_events_dump_kill_restore_same_node(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let g = gids(c)?;
    let dir = image_dir("plugin-ev")?;
    // The dump comes 2-4 s into the traffic; 50000 messages each way last 12-25 s in the lab.
    let iters = 50000;
    let (srv, cli) = send_bw_pair_running(c, &g, &["-n", &iters.to_string(), "-b", "-e"], "plugin-ev")?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--tcp-established", "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-ev", "dump.log");
    ensure!(o.status.success(), "dump of ib_send_bw -e mid-run failed: {}\n{log}", text(&o));
    ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
    print_image_show("plugin-ev", true)?;
    let j = rdmig_image::show::show_json(&share().join("plugin-ev"))?;
    let k = context_kind(&j)?;
    ensure!(k["comp_channels"] == 1 && k["channels"].as_array().is_some_and(|c| c.len() == 1), "the channel was not saved: {k}");
    let token = k["channels"][0]["token"].clone();
    let cqs = k["cqs"].as_array().context("no CQs")?;
    ensure!(
        !cqs.is_empty() && cqs.iter().all(|q| q["channel"] == token && q["user_handle"].as_u64().is_some_and(|u| u != 0)),
        "CQs without channel or user handle: {k}"
    );
    // Without restored counters the server would hang in ibv_destroy_cq at exit.
    ensure!(cqs.iter().any(|q| q["comp_events_reported"].as_u64().is_some_and(|n| n > 0)), "no completion event read before the dump: {k}");
    ensure!(
        j["images"].as_array().into_iter().flatten().any(|i| i["kind"]["role"] == "comp_channel" && i["kind"]["channel"] == token),
        "no event file image of the channel: {j}"
    );
    let o = criu(c, "node1", &["restore", "-D", &dir, "-L", plugins, "-d", "--tcp-established", "-v4", "-o", "restore.log"])?;
    let log = log_of("plugin-ev", "restore.log");
    ensure!(o.status.success(), "restore failed: {}\n{log}", text(&o));
    ensure!(log.contains("1 completion channel(s)") && log.contains("QP(s) resumed"), "the plugin did not rebuild the channel and resume the QP:\n{log}");
    both_finish(c, srv, cli, iters, "plugin-ev")
}

/// The cross-node test: the ib_send_bw server runs on node1 on the overlay address
/// 10.0.1.7; mid-run it is dumped and killed, the address moves to node3, and the server is
/// restored there (QPN, keys and TCP connection included). The client on node2 is paused
/// meanwhile, learns the new place from the restored QP's RESUME, and both sides finish with
/// exactly N iterations.
fn plugin_ib_send_bw_restored_on_another_node(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let bin = c.lab.load()?.rdmig_bin.display().to_string();
    let dir = image_dir("plugin-x")?;
    for n in ["node1", "node2", "node3"] {
        let _ = c.rdmig(&["addr", "del", n, MOVING_ADDR]);
    }
    c.rdmig_ok(&["addr", "add", "node1", MOVING_ADDR])?;
    let gid = |n: &str, ip: &str| -> Result<String> { Ok(c.exec_ok(n, &[&bin, "rxe", "gid-index", "--ip", ip])?.trim().to_string()) };
    let (sg, cg) = (gid("node1", MOVING_ADDR)?, gid("node2", "10.0.1.12")?);
    // The dump comes 2-4 s into the traffic; 50000 messages each way last 12-25 s in the lab.
    let iters = 50000u64;
    let n = iters.to_string();
    let _ = std::fs::remove_file(share().join("plugin-x-server.log"));
    let _ = std::fs::remove_file(share().join("plugin-x-client.log"));
    let srv =
        spawn(c, "node1", Some("/mnt/lab/plugin-x-server.log"), &["ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &sg, "-s", "4096", "-n", &n, "-b"])?;
    wait_until("ib_send_bw to listen", Duration::from_secs(30), || Ok(!c.exec_ok("node1", &["ss", "-Hltn", "sport = :18515"])?.trim().is_empty()))?;
    let cli = spawn(
        c,
        "node2",
        Some("/mnt/lab/plugin-x-client.log"),
        &["ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &cg, "-s", "4096", "-n", &n, "-b", MOVING_ADDR],
    )?;
    let tool = c.lab_tool("rdmig");
    wait_until("the transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok("node1", &[&tool, "softroce", "status"])?;
        Ok(st.lines().any(|l| l.starts_with("qp") && l.contains(&format!("pid={srv}")) && l.contains("state=rts")))
    })?;
    thread::sleep(Duration::from_secs(2));
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--tcp-established", "-v4", "-o", "dump.log"])?;
    ensure!(o.status.success(), "dump mid-run failed: {}\n{}", text(&o), log_of("plugin-x", "dump.log"));
    ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
    c.rdmig_ok(&["addr", "move", MOVING_ADDR, "--to", "node3"])?;
    let t0 = Instant::now();
    let o = criu(c, "node3", &["restore", "-D", &dir, "-L", plugins, "-d", "--tcp-established", "-v4", "-o", "restore.log"])?;
    let log = log_of("plugin-x", "restore.log");
    ensure!(o.status.success(), "restore on node3 failed: {}\n{log}", text(&o));
    println!("  restore on node3 took {:?}", t0.elapsed());
    ensure!(proc_state(c, "node3", srv)?.is_some(), "the server does not run on node3");
    wait_exit(c, "node3", srv, Duration::from_secs(400))?;
    wait_exit(c, "node2", cli, Duration::from_secs(60))?;
    let so = std::fs::read_to_string(share().join("plugin-x-server.log"))?;
    let co = std::fs::read_to_string(share().join("plugin-x-client.log"))?;
    ensure!(iterations(&so) == Some(iters) && iterations(&co) == Some(iters), "after the move:\nserver: {so}\nclient: {co}");
    let _ = c.rdmig(&["addr", "del", "node3", MOVING_ADDR]);
    println!("  both sides finished {iters} iterations, the server on node3");
    Ok(())
}

/// The verbs test program (checked SENDs and RDMA WRITEs into the server's MR, every message
/// and block verified) survives a dump, kill and restore of its server mid-transfer: nothing is
/// lost, duplicated or corrupted. It polls its CQ (`--busy-poll`); completion channels are
/// covered by the `ib_send_bw -e` scenario.
fn plugin_vtest_checked_traffic_survives_dump_and_restore(c: &Ctx) -> Result<()> {
    let none = |_: i32| -> Result<()> { Ok(()) };
    vtest_dump_restore(c, "plugin-vt", "", Hooks { before_dump: &none, after_dump: &none, after_restore: &none })
}

/// The verbs lines of the fdinfo of a process's uverbs files (rdmig's ib_uverbs: one line per
/// object with its handle, user handle, counters and, with patch 0011, the handles of its PD,
/// CQs and SRQ), sorted: the order is that of creation, which a restore does not keep.
fn uverbs_fdinfo(c: &Ctx, node: &str, pid: i32) -> Result<Vec<String>> {
    let script = format!("for f in /proc/{pid}/fd/*; do case $(readlink $f) in /dev/infiniband/uverbs*) cat /proc/{pid}/fdinfo/${{f##*/}};; esac; done");
    let t = c.exec_ok(node, &["sh", "-c", &script])?;
    let mut l: Vec<String> = t.lines().filter(|l| ["cq:", "qp:", "srq:", "obj:"].iter().any(|k| l.starts_with(k))).map(str::to_string).collect();
    l.sort();
    Ok(l)
}

/// The vtest server with several PDs (`--spread-pds`: two spare PDs before the QP's, and a page
/// registered on a PD of its own whose MR has a lower handle than that PD) is dumped mid-transfer,
/// killed and restored: the image says which PD each MR and QP uses, the restored process has
/// every object on the same PD as before (the fdinfo of rdmig's ib_uverbs, patch 0011, compared
/// line by line), and the checked traffic continues with nothing lost, duplicated or corrupted.
fn plugin_vtest_several_pds_dump_kill_restore(c: &Ctx) -> Result<()> {
    let before = std::cell::RefCell::new(vec![]);
    let before_dump = |srv: i32| -> Result<()> {
        let l = uverbs_fdinfo(c, "node1", srv)?;
        ensure!(l.iter().any(|l| l.starts_with("obj:\ttype=7") && l.contains(" pd=")), "this ib_uverbs shows no PD of MRs (patch 0011):\n{}", l.join("\n"));
        *before.borrow_mut() = l;
        Ok(())
    };
    let after_dump = |srv: i32| -> Result<()> {
        ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
        print_image_show("plugin-pds", true)?;
        let j = rdmig_image::show::show_json(&share().join("plugin-pds"))?;
        let k = context_kind(&j)?;
        let pds: Vec<u64> = k["pds"].as_array().context("no PDs")?.iter().filter_map(|p| p["handle"].as_u64()).collect();
        ensure!(pds.len() == 4, "the server holds 4 PDs, the image {pds:?}: {k}");
        let mrs = k["mrs"].as_array().context("no MRs")?;
        let mr_pds: std::collections::BTreeSet<u64> = mrs.iter().filter_map(|m| m["pd"].as_u64()).collect();
        ensure!(mrs.len() == 3 && mr_pds.len() == 2, "3 MRs on 2 PDs expected: {k}");
        ensure!(mrs.iter().any(|m| m["pd"].as_u64() > m["handle"].as_u64()), "no MR with a lower handle than its PD: {k}");
        let qp_pd = k["qps"][0]["links"]["pd"].as_u64().context("QP without a PD")?;
        ensure!(qp_pd != pds[0] && mrs.iter().filter(|m| m["pd"].as_u64() == Some(qp_pd)).count() == 2, "the QP is not on the PD of its two MRs: {k}");
        Ok(())
    };
    let after_restore = |srv: i32| -> Result<()> {
        let now = uverbs_fdinfo(c, "node1", srv)?;
        let was = before.borrow();
        ensure!(
            *was == now,
            "the restored objects differ (handles, user handles, PDs, CQs):\nbefore the dump:\n{}\nafter the restore:\n{}",
            was.join("\n"),
            now.join("\n")
        );
        println!("  {} verbs objects restored with the same handles, PDs and CQs", now.len());
        Ok(())
    };
    vtest_dump_restore(c, "plugin-pds", "--spread-pds", Hooks { before_dump: &before_dump, after_dump: &after_dump, after_restore: &after_restore })
}

/// The vtest server lets its client write through a memory window (`--mw`: type 1, bound to the
/// written region with ibv_bind_mw) and is dumped mid-transfer, killed and restored: the image
/// holds the MW with its rkey and binding, the restored MW is bound again without a work request
/// (softroce patch 0013) once the MR is on its final pages, and the client's RDMA WRITEs through
/// the old rkey keep landing, every block checked.
fn plugin_vtest_memory_window_dump_kill_restore(c: &Ctx) -> Result<()> {
    let none = |_: i32| -> Result<()> { Ok(()) };
    let after_dump = |srv: i32| -> Result<()> {
        ensure!(proc_state(c, "node1", srv)?.is_none(), "the dumped server still runs");
        print_image_show("plugin-mw", false)?;
        let j = rdmig_image::show::show_json(&share().join("plugin-mw"))?;
        let k = context_kind(&j)?;
        let mws = k["mws"].as_array().context("no MWs")?;
        ensure!(mws.len() == 1 && mws[0]["mw_type"] == 1 && mws[0]["binding"]["length"].as_u64().is_some_and(|l| l > 0), "the bound MW was not saved: {k}");
        let mr = mws[0]["binding"]["mr_index"].as_u64();
        ensure!(k["mrs"].as_array().is_some_and(|m| m.iter().any(|m| m["lkey"].as_u64().map(|l| l >> 8) == mr)), "the MW's MR is not in the image: {k}");
        Ok(())
    };
    vtest_dump_restore(c, "plugin-mw", "--mw", Hooks { before_dump: &none, after_dump: &after_dump, after_restore: &none })
}

/// Checks run by [`vtest_dump_restore`] with the server's pid.
struct Hooks<'a> {
    before_dump: &'a dyn Fn(i32) -> Result<()>,
    after_dump: &'a dyn Fn(i32) -> Result<()>,
    after_restore: &'a dyn Fn(i32) -> Result<()>,
}

/// The checked vtest traffic between a server on node1 (with `server_flags`) and a client on
/// node3, running: (server pid, client pid, messages).
fn start_vtest(c: &Ctx, tag: &str, server_flags: &str) -> Result<(i32, i32, u64)> {
    let bin = c.lab.load()?.rdmig_bin.display().to_string();
    let vt = c.lab_tool("rdmig-vtest");
    let gid = |n: &str, ip: &str| -> Result<String> { Ok(c.exec_ok(n, &[&bin, "rxe", "gid-index", "--ip", ip])?.trim().to_string()) };
    let (sg, cg) = (gid("node1", "10.0.1.11")?, gid("node3", "10.0.1.13")?);
    for f in ["server.json", "client.json"] {
        let _ = std::fs::remove_file(share().join(format!("{tag}-{f}")));
    }
    // 400 a second: 20 s of traffic. The dump (or its refusal) begins 5 s in and, with the
    // restore, took 2 to 5 s (2026-12-05): the traffic spans it with a margin of 2 or more, and
    // `traffic_goes_on` makes a scenario fail rather than test less if it ever does not.
    let count = 8000u64;
    let srv = spawn(
        c,
        "node1",
        None,
        &["sh", "-c", &format!("exec {vt} server --listen 10.0.1.11:9300 --gid-index {sg} --busy-poll {server_flags} > /mnt/lab/{tag}-server.json 2> /mnt/lab/{tag}-server.err")],
    )?;
    wait_until("vtest to listen", Duration::from_secs(30), || Ok(!c.exec_ok("node1", &["ss", "-Hltn", "sport = :9300"])?.trim().is_empty()))?;
    let cli = spawn(
        c,
        "node3",
        None,
        &[
            "sh",
            "-c",
            &format!(
                "exec {vt} client --connect 10.0.1.11:9300 --gid-index {cg} --busy-poll --count {count} --write-every 3 --rate 400 > /mnt/lab/{tag}-client.json 2> /mnt/lab/{tag}-client.err"
            ),
        ],
    )?;
    let tool = c.lab_tool("rdmig");
    wait_until("the transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok("node1", &[&tool, "softroce", "status"])?;
        Ok(st.lines().any(|l| l.starts_with("qp") && l.contains(&format!("pid={srv}")) && l.contains("state=rts")))
    })?;
    thread::sleep(Duration::from_secs(5));
    Ok((srv, cli, count))
}

/// The vtest client on node3 still runs after a dump and restore (or a refused dump) of the
/// server: the traffic went on across it, which is what the scenario is meant to check.
fn traffic_goes_on(c: &Ctx, cli: i32, after: &str) -> Result<()> {
    ensure!(
        proc_state(c, "node3", cli)?.is_some(),
        "the vtest client had finished all its messages before the {after} ended: the traffic did not span it (start_vtest's count is too small for this machine)"
    );
    Ok(())
}

/// Waits for the vtest pair and checks that every message and write arrived intact.
fn finish_vtest(c: &Ctx, tag: &str, srv: i32, cli: i32, count: u64) -> Result<()> {
    wait_exit(c, "node1", srv, Duration::from_secs(300))?;
    wait_exit(c, "node3", cli, Duration::from_secs(60))?;
    let read = |f: &str| -> Result<serde_json::Value> {
        let t = std::fs::read_to_string(share().join(f))?;
        serde_json::from_str(&t).with_context(|| format!("{f}: {t}\n{}", std::fs::read_to_string(share().join(f.replace(".json", ".err"))).unwrap_or_default()))
    };
    let (s, cl) = (read(&format!("{tag}-server.json"))?, read(&format!("{tag}-client.json"))?);
    ensure!(s["ok"] == true && s["lost"] == 0 && s["duplicated"] == 0 && s["corrupted"] == 0 && s["writes_bad"] == 0 && s["messages"] == count, "server: {s}");
    ensure!(cl["ok"] == true, "client: {cl}");
    println!("  {} messages and {} RDMA WRITEs checked, all intact", s["messages"], s["writes"]);
    Ok(())
}

/// Runs the checked vtest traffic and dumps, kills and restores the server mid-transfer (image
/// directory and logs named `tag`).
fn vtest_dump_restore(c: &Ctx, tag: &str, server_flags: &str, hooks: Hooks) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let dir = image_dir(tag)?;
    let (srv, cli, count) = start_vtest(c, tag, server_flags)?;
    (hooks.before_dump)(srv)?;
    let o = criu(c, "node1", &["dump", "-t", &srv.to_string(), "-D", &dir, "-L", plugins, "--tcp-established", "-v4", "-o", "dump.log"])?;
    ensure!(o.status.success(), "dump of the vtest server failed: {}\n{}", text(&o), log_of(tag, "dump.log"));
    (hooks.after_dump)(srv)?;
    let o = criu(c, "node1", &["restore", "-D", &dir, "-L", plugins, "-d", "--tcp-established", "-v4", "-o", "restore.log"])?;
    ensure!(o.status.success(), "restore of the vtest server failed: {}\n{}", text(&o), log_of(tag, "restore.log"));
    traffic_goes_on(c, cli, "restore")?;
    (hooks.after_restore)(srv)?;
    finish_vtest(c, tag, srv, cli, count)
}

/// The sender of a UD `ib_send_bw -c UD` (client on node2: a UD QP in RTS and an AH, whose number
/// librxe puts into every work request) is dumped mid-run, killed and restored on the same node:
/// the image holds the AH (number, address, PD) and the UD QP's driver state, and both sides
/// finish with exactly N iterations. The sender is rate-limited (perftest's software limiter):
/// at full speed UD drops messages in this lab even without a migration, and a UD receiver
/// that misses one waits forever.
fn plugin_ib_send_bw_ud_sender_dump_kill_restore(c: &Ctx) -> Result<()> {
    let plugins = plugin_dir(c)?;
    let g = gids(c)?;
    let dir = image_dir("plugin-ud")?;
    let iters = 40000u64;
    let opts = ["-n", &iters.to_string(), "-c", "UD", "--rate_limit=1500", "--rate_units=p", "--rate_limit_type=SW"];
    let (srv, cli) = send_bw_pair_running(c, &g, &opts, "plugin-ud")?;
    let o = criu(c, "node2", &["dump", "-t", &cli.to_string(), "-D", &dir, "-L", plugins, "--tcp-established", "-v4", "-o", "dump.log"])?;
    let log = log_of("plugin-ud", "dump.log");
    ensure!(o.status.success(), "dump of the UD sender mid-run failed: {}\n{log}", text(&o));
    ensure!(proc_state(c, "node2", cli)?.is_none(), "the dumped client still runs");
    print_image_show("plugin-ud", true)?;
    let j = rdmig_image::show::show_json(&share().join("plugin-ud"))?;
    let k = context_kind(&j)?;
    let ahs = k["ahs"].as_array().context("no AHs")?;
    ensure!(ahs.len() == 1 && ahs[0]["ah_num"].is_u64() && ahs[0]["av"]["sgid"].is_string(), "the AH was not saved: {k}");
    ensure!(
        k["qps"].as_array().is_some_and(|q| q.len() == 1 && q[0]["qp_type"] == "ud" && q[0]["attr"]["state"] == 3 && q[0]["mig_image"].is_object()),
        "the UD QP was not saved in RTS with its driver state: {k}"
    );
    let o = criu(c, "node2", &["restore", "-D", &dir, "-L", plugins, "-d", "--tcp-established", "-v4", "-o", "restore.log"])?;
    let log = log_of("plugin-ud", "restore.log");
    ensure!(o.status.success(), "restore failed: {}\n{log}", text(&o));
    ensure!(log.contains("1 AH") && log.contains("1 QP(s) resumed"), "the plugin did not rebuild the AH and resume the QP:\n{log}");
    both_finish(c, srv, cli, iters, "plugin-ud")
}
