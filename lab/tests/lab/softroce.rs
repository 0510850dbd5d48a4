//! softroce part 1 scenarios (issue 3): number control with unmodified perftest, reservations,
//! exact numbers, and the dirty log of pages that rxe writes, all on our rdma_rxe in the nodes;
//! and what a restore needs (patches 0007, 0008): ring offsets in the status, MR_REPIN, and our
//! ib_uverbs accepting write() after an equivalent credential change (stock refusing it); and
//! our rdma_ucm (patch 0023): CM IDs in fdinfo, RDMIG_UCMA_IOC_CREATE_ID.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

use crate::harness::{Ctx, Scenario, LAB_BASE, LAB_NAME};

pub const SCENARIOS: &[Scenario] = &[
    ("softroce_smoke_test_passes", softroce_smoke_test_passes),
    ("softroce_migros_rule_with_unmodified_perftest", softroce_migros_rule_with_unmodified_perftest),
    ("softroce_reserved_range_is_never_handed_out", softroce_reserved_range_is_never_handed_out),
    ("softroce_exact_qpn_for_an_unmodified_process", softroce_exact_qpn_for_an_unmodified_process),
    ("softroce_remote_writes_mark_exactly_their_pages", softroce_remote_writes_mark_exactly_their_pages),
    ("softroce_status_gives_the_ring_offsets_of_qps", softroce_status_gives_the_ring_offsets_of_qps),
    ("softroce_mr_repin_moves_an_mr_to_other_pages", softroce_mr_repin_moves_an_mr_to_other_pages),
    ("softroce_hollow_mr_pins_nothing_until_repin", softroce_hollow_mr_pins_nothing_until_repin),
    ("softroce_restored_qp_starts_stopped", softroce_restored_qp_starts_stopped),
    ("softroce_mr_wrprotect_lets_soft_dirty_track_mr_pages", softroce_mr_wrprotect_lets_soft_dirty_track_mr_pages),
    ("softroce_uverbs_write_after_equivalent_creds", softroce_uverbs_write_after_equivalent_creds),
    ("softroce_ucma_shows_cm_ids_and_creates_one_at_a_number", softroce_ucma_shows_cm_ids_and_creates_one_at_a_number),
];

fn bin(c: &Ctx) -> Result<String> {
    Ok(c.lab.load()?.rdmig_bin.display().to_string())
}

/// QPN and MR index from perftest's "local address: ... QPN 0x0050 ... RKey 0x004123 ..." line.
fn local_numbers(output: &str) -> Option<(u32, Option<u32>)> {
    let line = output.lines().find(|l| l.contains("local address"))?;
    let field = |name: &str| {
        let mut w = line.split_whitespace();
        w.position(|x| x == name)?;
        u32::from_str_radix(w.next()?.trim_start_matches("0x"), 16).ok()
    };
    Some((field("QPN")?, field("RKey").map(|k| k >> 8)))
}

fn perftest(c: &Ctx, server: &str, client: &str, test: &str) -> Result<Value> {
    let out = c.rdmig_ok(&["perftest", "--test", test, "--server", server, "--client", client, "-n", "200", "-s", "4096", "--json"])?;
    serde_json::from_str(&out).context("perftest JSON")
}

/// The C smoke test of the patches (softroce/tools): sysctls, EBUSY/ERANGE/EINVAL, exact QP,
/// MR, MW and AH numbers and keys, reservations dropped on close, dirty bits for WRITE, SEND,
/// atomics and READ. It needs numbers nobody uses yet, so it runs on a node no test used.
fn softroce_smoke_test_passes(c: &Ctx) -> Result<()> {
    let smoke = c.bin.ancestors().nth(3).context("repo root")?.join("softroce/tools/rxe-ctl-smoke");
    ensure!(smoke.is_file(), "{} is not built (scripts/test.sh builds it: make -C softroce/tools)", smoke.display());
    let smoke = c.stage(&smoke)?;
    let o = c.rdmig(&["exec", "node3", "--timeout", "120", "--", &smoke, "-d", "rxe0", "-g", "1"])?;
    let out = String::from_utf8_lossy(&o.stdout);
    let summary = out.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("");
    ensure!(o.status.success() && summary.ends_with(" 0 failed"), "smoke test: {summary}\n{out}{}", String::from_utf8_lossy(&o.stderr));
    let passed: u32 = summary.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    ensure!(passed >= 30, "only {passed} smoke checks ran");
    // Leave node3's counters where a fresh node has them for the next users.
    c.exec_ok("node3", &[&bin(c)?, "softroce", "sysctl", "--last-qpn", "0", "--last-mrn", "0"])?;
    Ok(())
}

/// MigrOS's rule, unchanged: after `echo 64 > last_qpn` and `echo 64 > last_mrn` the next QP
/// is 80 and the next MR index 65; with 16, QP 32 and MR 17. Unmodified ib_write_bw reports them.
fn softroce_migros_rule_with_unmodified_perftest(c: &Ctx) -> Result<()> {
    for (node, v) in [("node2", "64"), ("node1", "16")] {
        c.exec_ok(node, &["sh", "-c", &format!("echo {v} > /proc/sys/net/rdma_rxe/last_qpn && echo {v} > /proc/sys/net/rdma_rxe/last_mrn")])?;
    }
    let r = perftest(c, "node2", "node1", "ib_write_bw")?;
    ensure!(r["server"]["exit_code"] == 0 && r["client"]["exit_code"] == 0, "perftest failed: {r}");
    let s = local_numbers(r["server"]["output"].as_str().unwrap_or("")).context("no local address line (server)")?;
    let cl = local_numbers(r["client"]["output"].as_str().unwrap_or("")).context("no local address line (client)")?;
    ensure!(s == (80, Some(65)), "server got QPN {} and MR index {:?}; MigrOS's rule says 80 and 65", s.0, s.1);
    ensure!(cl == (32, Some(17)), "client got QPN {} and MR index {:?}; MigrOS's rule says 32 and 17", cl.0, cl.1);
    // The sysctl reads back the position after the last allocation.
    let back = c.exec_ok("node2", &["cat", "/proc/sys/net/rdma_rxe/last_qpn"])?;
    ensure!(back.trim().parse::<u32>().is_ok_and(|v| v >= 65), "last_qpn reads {back:?}");
    Ok(())
}

/// A reserved range is skipped by the allocator for every other process: with the search
/// starting inside QPNs 100-199, unmodified perftest gets 200.
fn softroce_reserved_range_is_never_handed_out(c: &Ctx) -> Result<()> {
    let b = bin(c)?;
    let out = c.exec_ok("node2", &[&b, "softroce", "reserve", "qp", "100", "199"])?;
    let id: String = out.split_whitespace().nth(1).unwrap_or("").trim_end_matches(':').to_string();
    ensure!(id.parse::<u32>().is_ok(), "reserve printed {out:?}");
    c.exec_ok("node2", &[&b, "softroce", "sysctl", "--last-qpn", "90"])?; // search starts at QPN 106
    let status = c.exec_ok("node2", &[&b, "softroce", "status"])?;
    ensure!(status.lines().any(|l| l.starts_with("reserve") && l.contains("first=100") && l.contains("last=199")), "status: {status}");
    let r = perftest(c, "node2", "node1", "ib_send_bw");
    c.exec_ok("node2", &[&b, "softroce", "drop", &id])?;
    let r = r?;
    let (qpn, _) = local_numbers(r["server"]["output"].as_str().unwrap_or("")).context("no local address line")?;
    ensure!(qpn == 200, "the server got QPN {qpn} while 100-199 were reserved and the search started at 106");
    Ok(())
}

/// An exact-number request for a process that does not know about it: the next QP that pid
/// creates gets the asked number (what the CRIU plugin relies on).
fn softroce_exact_qpn_for_an_unmodified_process(c: &Ctx) -> Result<()> {
    let b = bin(c)?;
    let st = c.lab.load()?;
    let gid = c.exec_ok("node1", &[&b, "rxe", "gid-index", "--ip", &st.plan.node("node1")?.overlay_ip.to_string()])?;
    // The shell waits, so its pid (kept by exec) is known before perftest creates its QP.
    let log = "/mnt/lab/exact-qpn.log";
    let cmd = format!("sleep 3; exec ib_send_bw -d rxe0 -x {} -F -n 10 -s 64 -p 18600", gid.trim());
    let pid = c.rdmig_ok(&["spawn", "node1", "--output", log, "--", "sh", "-c", &cmd])?;
    let pid = pid.trim();
    c.exec_ok("node1", &[&b, "softroce", "expect", "qp", "777", "--pid", pid])?;
    // perftest creates its QP once a client connects: connect one from node2.
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.exec_ok("node1", &["ss", "-Hltn", "sport = :18600"])?.trim().is_empty() {
        ensure!(Instant::now() < deadline, "perftest did not listen on node1");
        thread::sleep(Duration::from_millis(300));
    }
    let saddr = st.plan.node("node1")?.overlay_ip.to_string();
    let cgid = c.exec_ok("node2", &[&b, "rxe", "gid-index", "--ip", &st.plan.node("node2")?.overlay_ip.to_string()])?;
    c.exec_ok("node2", &["ib_send_bw", "-d", "rxe0", "-x", cgid.trim(), "-F", "-n", "10", "-s", "64", "-p", "18600", &saddr])?;
    let host_log = PathBuf::from(LAB_BASE).join(LAB_NAME).join("shared/exact-qpn.log");
    let text = std::fs::read_to_string(&host_log).unwrap_or_default();
    let (qpn, _) = local_numbers(&text).with_context(|| format!("the server printed no local address: {text}"))?;
    let _ = c.rdmig(&["exec", "node1", "--", "kill", pid]);
    ensure!(qpn == 777, "the process got QPN {qpn}, not the requested 777");
    Ok(())
}

/// RDMA WRITEs from a peer on another node mark exactly the written pages of the target MR,
/// and reading the log with reset clears it.
fn softroce_remote_writes_mark_exactly_their_pages(c: &Ctx) -> Result<()> {
    let st = c.lab.load()?;
    let b = bin(c)?;
    let vt = c.lab_tool("rdmig-vtest");
    let saddr = st.plan.node("node1")?.overlay_ip.to_string();
    let caddr = st.plan.node("node2")?.overlay_ip.to_string();
    let sgid = c.exec_ok("node1", &[&b, "rxe", "gid-index", "--ip", &saddr])?;
    let cgid = c.exec_ok("node2", &[&b, "rxe", "gid-index", "--ip", &caddr])?;
    let listen = format!("{saddr}:9200");
    // The server keeps its MR registered for a while after the traffic, so the log can be read.
    let spid = c.rdmig_ok(&["spawn", "node1", "--", &vt, "server", "--listen", &listen, "--gid-index", sgid.trim(), "--mr-pages", "16", "--linger", "60"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.exec_ok("node1", &["ss", "-Hltn", "sport = :9200"])?.trim().is_empty() {
        ensure!(Instant::now() < deadline, "vtest server did not listen");
        thread::sleep(Duration::from_millis(200));
    }
    let out = c.exec_ok("node2", &[&vt, "client", "--connect", &listen, "--gid-index", cgid.trim(), "--pages", "3,7,8"])?;
    let rep: Value = serde_json::from_str(&out).context("client report")?;
    ensure!(rep["ok"] == true && rep["writes"] == 3, "client: {rep}");
    let mr = rep["mr_index"].as_u64().context("mr_index")?.to_string();
    let first: Value = serde_json::from_str(&c.exec_ok("node1", &[&b, "softroce", "dirty", &mr, "--json"])?)?;
    let second: Value = serde_json::from_str(&c.exec_ok("node1", &[&b, "softroce", "dirty", &mr, "--json"])?)?;
    let _ = c.rdmig(&["exec", "node1", "--", "kill", spid.trim()]);
    ensure!(first["pages"] == serde_json::json!([3, 7, 8]), "dirty pages after writes to 3, 7, 8: {}", first["pages"]);
    ensure!(first["mr_pages"] == 16, "MR size: {first}");
    ensure!(second["pages"] == serde_json::json!([]), "the read did not reset the log: {}", second["pages"]);
    Ok(())
}

/// Runs softroce/tools/rxe-restore-test (staged into the lab) on `node` with the GID index of the
/// node's overlay address; an error unless every check passed and at least `min` ran.
fn restore_test(c: &Ctx, node: &str, args: &[&str], min: u32) -> Result<String> {
    let tool = c.bin.ancestors().nth(3).context("repo root")?.join("softroce/tools/rxe-restore-test");
    ensure!(tool.is_file(), "{} is not built (scripts/setup.sh builds it: make -C softroce/tools)", tool.display());
    let tool = c.stage(&tool)?;
    let b = bin(c)?;
    let ip = c.lab.load()?.plan.node(node)?.overlay_ip.to_string();
    let gid = c.exec_ok(node, &[&b, "rxe", "gid-index", "--ip", &ip])?;
    let mut argv = vec!["exec", node, "--timeout", "120", "--", &tool];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["-d", "rxe0", "-g", gid.trim()]);
    let o = c.rdmig(&argv)?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let summary = out.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("");
    ensure!(
        o.status.success() && summary.ends_with(" 0 failed"),
        "rxe-restore-test {}: {summary}\n{out}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    let passed: u32 = summary.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    ensure!(passed >= min, "only {passed} checks of rxe-restore-test {} ran:\n{out}", args.join(" "));
    Ok(out)
}

/// The qp records of /dev/rxe_ctl carry the mmap offsets of the SQ, RQ, both CQs and the SRQ,
/// exactly those of the mappings librxe made (/proc/self/maps), also after a CQ resize; "-" for
/// what has no user mapping (the RQ of a QP on an SRQ, the kernel's GSI QP); and sig_all.
fn softroce_status_gives_the_ring_offsets_of_qps(c: &Ctx) -> Result<()> {
    restore_test(c, "node3", &["offsets"], 10)?;
    Ok(())
}

/// MR_REPIN moves a registered MR from buffer A to buffer B of the same process: RDMA READ,
/// WRITE, SEND and local use with the unchanged keys go to B, the dirty log survives, VmPin
/// stays balanced; EBUSY while an MW is bound, and ENOENT, ENODEV, EINVAL, ESRCH, EFAULT.
fn softroce_mr_repin_moves_an_mr_to_other_pages(c: &Ctx) -> Result<()> {
    restore_test(c, "node3", &["repin"], 27)?;
    Ok(())
}

/// A hollow MR (EXPECT with RXE_CTL_F_HOLLOW, patch 0034; what a restore registers before
/// the process's memory is in place): it registers on an unmapped range with its expected key,
/// counts in VmPin, refuses RDMA READ and MR_WRPROTECT until MR_REPIN moves it onto the
/// process's pages, and then RDMA READ and WRITE reach them; EINVAL for a QP.
fn softroce_hollow_mr_pins_nothing_until_repin(c: &Ctx) -> Result<()> {
    restore_test(c, "node3", &["hollow"], 13)?;
    Ok(())
}

/// EXPECT with F_STOPPED (patch 0037): the QP created with the number starts stopped; connected,
/// it answers its peer's RDMA WRITEs (one with a bad rkey) with PAUSE, writes nothing and stays
/// in RTS, until QP_RESUME; EINVAL for an MR, and the next QP is not stopped.
fn softroce_restored_qp_starts_stopped(c: &Ctx) -> Result<()> {
    restore_test(c, "node3", &["stopped"], 11)?;
    Ok(())
}

/// MR_WRPROTECT (patch 0032): clear_refs leaves an MR's pinned pages soft-dirty until they are
/// write-protected, then cleans them; a write by the process dirties that page only and the
/// MR keeps its pages (RDMA READ sees the write, RDMA WRITE lands in the process). With F_LOG
/// (patch 0033) the page RDMA wrote moves from the dirty log to soft-dirty, no data changes, and
/// a later RDMA WRITE is logged again; counts, EINVAL (flags, pid 0, another process), ENOENT.
fn softroce_mr_wrprotect_lets_soft_dirty_track_mr_pages(c: &Ctx) -> Result<()> {
    restore_test(c, "node3", &["wrprotect"], 19)?;
    Ok(())
}

/// The staged copies of our modules, as the nodes see them.
fn staged_module(name: &str) -> String {
    format!("{}/modules/{name}", rdmig_lab::LAB_SHARE_IN_NODE)
}

/// Replaces node3's rxe0 and modules: rdma_rxe and rdma_ucm are always ours (our rdma_ucm
/// loads on Debian's ib_uverbs too: same symbol versions), ib_uverbs ours or Debian's.
fn swap_uverbs(c: &Ctx, ours: bool) -> Result<()> {
    let uverbs = if ours { format!("insmod {}", staged_module("ib_uverbs.ko")) } else { "modprobe ib_uverbs".to_string() };
    let script = format!(
        "set -e; rdma link delete rxe0; ucm=; if [ -e /sys/module/rdma_ucm ]; then ucm=1; rmmod rdma_ucm; fi; \
         rmmod rdma_rxe ib_uverbs; {uverbs}; insmod {}; if [ -n \"$ucm\" ]; then insmod {}; fi; \
         rdma link add rxe0 type rxe netdev vxlan0; \
         for i in $(seq 200); do grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state && exit 0; sleep 0.1; done; \
         echo rxe0 is not ACTIVE >&2; exit 1",
        staged_module("rdma_rxe.ko"),
        staged_module("rdma_ucm.ko")
    );
    c.exec_ok("node3", &["sh", "-c", &script])?;
    Ok(())
}

/// Taint flags of a loaded module ("OE" for our out-of-tree, unsigned ones; "" for Debian's).
fn taint(c: &Ctx, module: &str) -> Result<String> {
    Ok(c.exec_ok("node3", &["cat", &format!("/sys/module/{module}/taint")])?.trim().to_string())
}

/// The nodes run our ib_uverbs under our rdma_rxe. After a process changes its credentials to
/// equivalent ones (capset, setgroups, PR_SET_SECUREBITS with the same values, as CRIU's restorer
/// does), ibv_post_send (librxe's write() doorbell) still works; after changes that are not
/// equivalent it fails with EACCES. With Debian's ib_uverbs (node3 switched for the test and
/// back) the same program gets EACCES after every change: the test sees the difference.
fn softroce_uverbs_write_after_equivalent_creds(c: &Ctx) -> Result<()> {
    ensure!(taint(c, "ib_uverbs")?.contains('O'), "node3 does not run our (out-of-tree) ib_uverbs");
    ensure!(taint(c, "rdma_rxe")?.contains('O'), "node3 does not run our rdma_rxe");
    let holders = c.exec_ok("node3", &["ls", "/sys/module/ib_uverbs/holders"])?;
    ensure!(holders.split_whitespace().any(|h| h == "rdma_rxe"), "rdma_rxe is not loaded on our ib_uverbs: {holders}");
    restore_test(c, "node3", &["creds"], 8)?;

    swap_uverbs(c, false)?;
    let stock = (|| -> Result<()> {
        ensure!(taint(c, "ib_uverbs")?.is_empty(), "the stock ib_uverbs did not load");
        restore_test(c, "node3", &["creds", "-s"], 8)?;
        Ok(())
    })();
    let back = swap_uverbs(c, true);
    stock.context("with Debian's ib_uverbs")?;
    back.context("switching node3 back to our ib_uverbs")?;
    ensure!(taint(c, "ib_uverbs")?.contains('O'), "node3 did not get our ib_uverbs back");
    Ok(())
}

/// Our rdma_ucm (patches 0023, 0024) on node3, with softroce/tools/ucma-ckpt-test: CM IDs made with
/// write() (one bound to the node's overlay address and listening, one idle with REUSEADDR, one
/// resolved with its event queued) appear in the file's fdinfo with their state, addresses,
/// backlog and options, the event too until it is read; RDMIG_UCMA_IOC_CREATE_ID on a second
/// file makes an ID at a chosen number with events_reported 5 (EBUSY for a number in use,
/// EINVAL for reserved fields), which write() then binds and makes listen; a process without
/// CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE gets EPERM but may still write (its credentials are
/// within the opener's), one as nobody gets EPERM and EACCES. RDMIG_UCMA_IOC_DEV_ALIAS (patch
/// 0024) makes that file's query of its ID name rxe0 by another GUID and no index (the other
/// file's query is unchanged), fdinfo shows the alias, EEXIST, EINVAL and ENOSPC where due.
/// Connected IDs (patches 0026-0029, our ib_cm and rdma_cm too), on the node alone over loopback:
/// both ends of a connection show cm_conn lines (comm IDs crosswise); an event queued again with
/// RDMIG_UCMA_IOC_QUEUE_EVENT is shown whole and read back unchanged; RDMIG_UCMA_IOC_CONNECT
/// refuses bad requests and a comm ID still in use (EADDRINUSE); a closed file disconnects its
/// peer, one marked moving does not, and its active ID, recreated in a new file from its saved
/// cm_conn line, receives the peer's later DREQ (RDMA_CM_EVENT_DISCONNECTED) and answers it; so
/// does the passive side of another connection, recreated idle with its listener's file gone.
fn softroce_ucma_shows_cm_ids_and_creates_one_at_a_number(c: &Ctx) -> Result<()> {
    ensure!(taint(c, "rdma_ucm")?.contains('O'), "node3 does not run our (out-of-tree) rdma_ucm");
    let version = c.exec_ok("node3", &["cat", "/sys/module/rdma_ucm/version"])?;
    ensure!(version.trim() == "0.1.0-rdmig", "node3's rdma_ucm has version {version:?}");
    let holders = c.exec_ok("node3", &["ls", "/sys/module/ib_uverbs/holders"])?;
    ensure!(holders.split_whitespace().any(|h| h == "rdma_ucm"), "rdma_ucm is not loaded on our ib_uverbs: {holders}");
    for m in ["ib_cm", "rdma_cm"] {
        ensure!(taint(c, m)?.contains('O'), "node3 does not run our (out-of-tree) {m}");
        let version = c.exec_ok("node3", &["cat", &format!("/sys/module/{m}/version")])?;
        ensure!(version.trim() == "0.1.0-rdmig", "node3's {m} has version {version:?}");
    }

    let tool = c.bin.ancestors().nth(3).context("repo root")?.join("softroce/tools/ucma-ckpt-test");
    ensure!(tool.is_file(), "{} is not built (scripts/setup.sh builds it: make -C softroce/tools)", tool.display());
    let tool = c.stage(&tool)?;
    let ip = c.lab.load()?.plan.node("node3")?.overlay_ip.to_string();
    let o = c.rdmig(&["exec", "node3", "--timeout", "60", "--", &tool, "-a", &ip, "-p", "7471", "-d", "rxe0"])?;
    let out = String::from_utf8_lossy(&o.stdout);
    let summary = out.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("");
    ensure!(o.status.success() && summary.ends_with(" 0 failed"), "ucma-ckpt-test: {summary}\n{out}{}", String::from_utf8_lossy(&o.stderr));
    let passed: u32 = summary.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    ensure!(passed >= 180, "only {passed} checks of ucma-ckpt-test ran:\n{out}");
    println!("{out}");
    Ok(())
}
