//! A tiny test harness for lab scenarios: ordered, sharing one lab, with a summary line that CI
//! reads ("N passed, N failed") and the nodes' logs printed when something fails.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Output};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use rdmig_lab::Lab;
use rdmig_proto::msg::{Reply, Request};
use rdmig_proto::wire::{Channel, Limits};

/// Lab name and directory of the tests, apart from a user's own lab.
pub const LAB_NAME: &str = "citest";
pub const LAB_BASE: &str = "/run/rdmig-test";

/// The lab share on this host (the nodes see it as /mnt/lab).
pub fn share() -> std::path::PathBuf {
    std::path::PathBuf::from(LAB_BASE).join(LAB_NAME).join("shared")
}

/// `o`'s stdout if it exited 0; else an error naming `what`, with everything it printed.
pub fn stdout_if_ok(what: &str, o: Output) -> Result<String> {
    if !o.status.success() {
        bail!("{what} failed ({}):\n{}{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

pub struct Ctx {
    pub bin: PathBuf,
    pub lab: Lab,
    pub rt: tokio::runtime::Runtime,
}

pub type Scenario = (&'static str, fn(&Ctx) -> Result<()>);

impl Ctx {
    /// A connection from the host to `node`'s migration agent, made as node1's `rdmig migrate`
    /// makes one (mutual TLS with node1's certificate), `idle` its idle bound: for scenarios
    /// that speak the agents' protocol themselves.
    pub fn agent_channel(&self, node: &str, idle: std::time::Duration) -> Result<Channel<tokio::net::TcpStream>> {
        let st = self.lab.load()?;
        let agent = self.lab.agent_addr(&st, node)?;
        let tls = rdmig_proto::tls::Identity::load(&PathBuf::from(LAB_BASE).join(LAB_NAME).join("node1/share/tls"))?.client(Some(node))?;
        let sock = rdmig_lab::host::connect_in_netns(&st.netns, agent, std::time::Duration::from_secs(5))?;
        sock.set_nonblocking(true)?;
        self.rt.block_on(async { Ok(Channel::client_within(tokio::net::TcpStream::from_std(sock)?, &tls, tls.named(node)?, Limits::idle(idle)).await?) })
    }

    /// `req` to `node`'s agent on a connection of its own (see `agent_channel`); the reply.
    pub fn ask_agent(&self, node: &str, req: &Request, idle: std::time::Duration) -> Result<Reply> {
        let mut ch = self.agent_channel(node, idle)?;
        self.rt.block_on(async {
            ch.send_msg(req).await?;
            Ok(ch.recv_msg::<Reply>().await?)
        })
    }

    /// A program's path as the nodes see it: "rdmig" (the installed one, or the build's with
    /// `up --from-build`), or one of the lab's own tools, e.g. "rdmig-vtest" (the snapshot).
    pub fn lab_tool(&self, name: &str) -> String {
        let st = self.lab.load().expect("the lab is up");
        if name == "rdmig" {
            // The installed /usr/bin/rdmig, or the build's snapshot (`up --from-build`).
            return st.rdmig_bin.display().to_string();
        }
        // The lab's own programs are in the share's snapshot whatever rdmig the nodes run.
        std::path::Path::new(rdmig_lab::LAB_SHARE_IN_NODE).join("bin").join(name).display().to_string()
    }

    /// Copies a host file into the lab share and returns its path in the nodes: the nodes cannot
    /// see host paths under /tmp, /run or /root (their own tmpfs is mounted there).
    pub fn stage(&self, host: &std::path::Path) -> Result<String> {
        let name = host.file_name().context("staged file has no name")?;
        let dir = std::path::PathBuf::from(LAB_BASE).join(LAB_NAME).join("shared/staged");
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(host, dir.join(name)).with_context(|| format!("copy {}", host.display()))?;
        Ok(format!("/mnt/lab/staged/{}", name.to_string_lossy()))
    }

    /// Runs `rdmig lab <args>` for the test lab and returns its output (any exit code).
    pub fn rdmig(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin).args(["--name", LAB_NAME, "--dir", LAB_BASE]).args(args).output().with_context(|| format!("run rdmig lab {}", args.join(" ")))
    }

    /// Like `rdmig`, but an error unless it exits 0; returns stdout.
    pub fn rdmig_ok(&self, args: &[&str]) -> Result<String> {
        stdout_if_ok(&format!("`rdmig lab {}`", args.join(" ")), self.rdmig(args)?)
    }

    /// `rdmig lab exec NODE -- argv`, an error unless it exits 0; returns stdout.
    pub fn exec_ok(&self, node: &str, argv: &[&str]) -> Result<String> {
        let mut a = vec!["exec", node, "--timeout", "120", "--"];
        a.extend_from_slice(argv);
        self.rdmig_ok(&a)
    }

    pub fn dump_logs(&self) {
        for n in ["node1", "node2", "node3"] {
            if let Ok(o) = self.rdmig(&["logs", n, "--lines", "40"]) {
                eprintln!("{}", String::from_utf8_lossy(&o.stdout));
            }
            // The nodes' consoles show errors only (loglevel=4); rxe's warnings (a responder's
            // class C error, a pause ended at the bound) are in the kernel's ring buffer.
            if let Ok(o) = self.rdmig(&["exec", n, "--timeout", "10", "--", "sh", "-c", "dmesg --level=err,warn | tail -n 20"]) {
                eprintln!("=== {n} kernel warnings (dmesg --level=err,warn) ===\n{}", String::from_utf8_lossy(&o.stdout));
            }
        }
    }
}

/// `text` on one line, cut to at most `max` characters (a failure's reason in the summary).
fn in_brief(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{} [...]", &line[..at]),
        None => line,
    }
}

/// Polls `f` every 300 ms until it says true; an error naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: std::time::Duration, f: impl FnMut() -> Result<bool>) -> Result<()> {
    wait_until_every(what, timeout, std::time::Duration::from_millis(300), f)
}

/// The same, polling every `every`: short for windows that last about a second (a restore).
pub fn wait_until_every(what: &str, timeout: std::time::Duration, every: std::time::Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// `rdmig-lab exec NODE --` as a command to complete with the program and its arguments: for
/// threads that watch or act on nodes while a scenario's migration runs (they hold the lab
/// tool's path, `Ctx::bin`, not the context).
pub fn lab_exec(bin: &std::path::Path, node: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--name", LAB_NAME, "--dir", LAB_BASE, "exec", node, "--"]);
    cmd
}

/// Waits until process `pid` on `node` has exited, without polling the node from here.
///
/// Polling with `ps` every few hundred milliseconds runs a new process in the node each time,
/// on the node's only vCPU, next to the application being waited for. perftest calibrates its
/// cycle counter against gettimeofday() when it reports (200 samples, r^2 must reach 0.9): one
/// sample whose first or last clock read is preempted by such a process for a guest tick (4 ms,
/// more than the whole 0.1-2.1 ms range sampled) drops r^2 below 0.9 and perftest produces no
/// report. So one `tail --pid` waits in the node instead, waking only to check the pid.
pub fn wait_gone(c: &Ctx, node: &str, pid: i32, timeout: std::time::Duration) -> Result<()> {
    let secs = timeout.as_secs().max(1).to_string();
    let o = c.rdmig(&["exec", node, "--timeout", &secs, "--", "tail", "--pid", &pid.to_string(), "-s", "1", "-f", "/dev/null"])?;
    if o.status.code() == Some(124) {
        bail!("timed out after {timeout:?} waiting for pid {pid} on {node} to finish");
    }
    if let Some(st) = proc_state(c, node, pid)? {
        bail!("pid {pid} on {node} still exists (state {st}) after waiting for it to finish: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

/// perftest's `-F`, which every lab scenario passes (see `rdmig_lab::perftest::KEEP_GOING`).
pub const PERFTEST_KEEP_GOING: &str = rdmig_lab::perftest::KEEP_GOING;

/// perftest's complaint about its clock calibration (see `PERFTEST_KEEP_GOING`), if any; printed
/// so that a run's void bandwidth figures are not mistaken for measurements.
pub fn perftest_calibration(who: &str, out: &str) {
    if let Some(l) = out.lines().find_map(|l| l.find("Correlation coefficient").map(|i| &l[i..])) {
        println!("  note: {who}: perftest's clock calibration failed ({}): the VM was descheduled; its bandwidth is void, its count is checked", l.trim());
    }
}

/// The #iterations column of a finished perftest output.
pub fn perftest_iterations(out: &str) -> Option<u64> {
    let mut lines = out.lines().skip_while(|l| !l.contains("#iterations"));
    lines.next()?;
    lines.next()?.split_whitespace().nth(1)?.parse().ok()
}

/// `rdmig lab spawn NODE [--output FILE] -- ARGV`: the detached process's pid.
pub fn spawn(c: &Ctx, node: &str, output: Option<&str>, argv: &[&str]) -> Result<i32> {
    let mut a = vec!["spawn", node];
    if let Some(o) = output {
        a.extend_from_slice(&["--output", o]);
    }
    a.push("--");
    a.extend_from_slice(argv);
    let out = c.rdmig_ok(&a)?;
    out.trim().parse().with_context(|| format!("spawn printed {out:?}"))
}

/// The process state letter on a node (R, S, T...), None if there is no such process.
pub fn proc_state(c: &Ctx, node: &str, pid: i32) -> Result<Option<String>> {
    let o = c.rdmig(&["exec", node, "--", "ps", "-o", "stat=", "-p", &pid.to_string()])?;
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    Ok((!s.is_empty()).then_some(s))
}

/// What the command line asks for: every scenario, those whose names contain a filter, or
/// (`--repeat N FILTER...`) the matching ones N times each with a failure rate.
struct Plan {
    filters: Vec<String>,
    repeat: usize,
}

fn plan_from_args(args: &[String]) -> Result<Plan, String> {
    let mut filters = vec![];
    let mut repeat = 1;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--repeat" => {
                let n = it.next().ok_or("--repeat needs a count")?;
                repeat = n.parse().ok().filter(|n| *n >= 1).ok_or_else(|| format!("--repeat {n:?}: not a count of 1 or more"))?;
            }
            // cargo test passes its own flags (--nocapture, --test-threads ...): not ours.
            f if f.starts_with('-') => {}
            f => filters.push(f.to_string()),
        }
    }
    if repeat > 1 && filters.is_empty() {
        return Err("--repeat needs the names (or parts of names) of the scenarios to repeat".into());
    }
    Ok(Plan { filters, repeat })
}

pub fn main(groups: &[&[Scenario]]) -> ExitCode {
    let all: Vec<Scenario> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = match plan_from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("lab tests: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_rdmig-lab"));
    let ctx = Ctx {
        bin,
        lab: Lab::new(LAB_BASE, LAB_NAME).expect("valid lab name"),
        rt: tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime"),
    };
    // `up` and the final `down` always run: the others need the lab, and nothing may be left.
    let frame = |name: &str| name == "up" || name == "down_leaves_nothing";
    // In the suite's order (some scenarios must come before `up`).
    let mut selected: Vec<&Scenario> = vec![];
    for s in &all {
        if frame(s.0) {
            selected.push(s);
        } else if plan.filters.is_empty() || plan.filters.iter().any(|f| s.0.contains(f.as_str())) {
            selected.extend(std::iter::repeat_n(s, plan.repeat));
        }
    }
    println!(
        "running {} lab scenarios{}",
        selected.len(),
        if plan.repeat > 1 { format!(" ({} repeated {} times)", plan.filters.join(", "), plan.repeat) } else { String::new() }
    );
    let t0 = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    // Each failed run's name and why, repeated at the end: CI may show only the output's tail,
    // and the logs dumped after a failure push its reason far from there.
    let mut failures: Vec<(&str, String)> = vec![];
    // Per scenario: runs, failures, seconds.
    let mut stats: Vec<(&str, usize, usize, f64)> = vec![];
    for (name, f) in selected {
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| f(&ctx)));
        let secs = t.elapsed().as_secs_f64();
        let ok = matches!(r, Ok(Ok(())));
        match r {
            Ok(Ok(())) => {
                passed += 1;
                println!("lab {name} ... ok ({secs:.1} s)");
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("lab {name} ... FAILED ({secs:.1} s)\n  {e:#}");
                failures.push((*name, format!("{e:#}")));
                ctx.dump_logs();
            }
            Err(_) => {
                failed += 1;
                println!("lab {name} ... FAILED ({secs:.1} s): panicked");
                failures.push((*name, "panicked (its message is above)".into()));
                ctx.dump_logs();
            }
        }
        match stats.iter_mut().find(|s| s.0 == *name) {
            Some(s) => {
                s.1 += 1;
                s.2 += usize::from(!ok);
                s.3 += secs;
            }
            None => stats.push((name, 1, usize::from(!ok), secs)),
        }
    }
    // Whatever happened, leave nothing behind.
    if !ctx.lab.leftovers().is_empty() {
        if let Err(e) = ctx.lab.down() {
            println!("final teardown failed: {e}");
            failed += 1;
        }
    }
    let total = t0.elapsed().as_secs_f64();
    if plan.repeat > 1 {
        println!("failure rates:");
        for (name, runs, fails, _) in stats.iter().filter(|s| !frame(s.0)) {
            println!("  {name}: {fails} of {runs} runs failed ({:.0} %)", 100.0 * *fails as f64 / *runs as f64);
        }
    }
    // Where the time goes: the slowest scenarios first, with their share of the whole.
    let mut by_time = stats.clone();
    by_time.sort_by(|a, b| b.3.total_cmp(&a.3));
    println!("slowest scenarios:");
    for (name, runs, _, secs) in by_time.iter().take(10) {
        let runs = if *runs > 1 { format!(" over {runs} runs") } else { String::new() };
        println!("  {secs:7.1} s {:4.1} %  {name}{runs}", 100.0 * secs / total.max(1e-9));
    }
    println!("lab scenarios took {total:.1} s");
    if !failures.is_empty() {
        let names: Vec<&str> = failures.iter().map(|f| f.0).collect();
        println!("failed: {}", names.join(", "));
        for (name, why) in &failures {
            println!("  {name}: {}", in_brief(why, 600));
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The report's summary span of `phase` on the source's node (`at_source`) or on the other one.
pub fn span<'a>(r: &'a serde_json::Value, phase: &str, at_source: bool) -> Option<&'a serde_json::Value> {
    let src = r["source"]["hostname"].as_str().unwrap_or("");
    r["summary"]["spans"].as_array()?.iter().find(|s| s["phase"] == phase && (s["node"].as_str() == Some(src)) == at_source)
}

/// The report's timeline as `phase s` per span, in order (where the time goes).
pub fn spans(r: &serde_json::Value) -> String {
    let mut open: Vec<(String, f64)> = vec![];
    let mut out = vec![];
    for e in r["timeline"]["events"].as_array().into_iter().flatten() {
        let (phase, edge, t) = (e["event"]["phase"].to_string(), e["event"]["edge"].as_str().unwrap_or(""), e["t_ns"].as_f64().unwrap_or(0.0));
        match edge {
            "start" => open.push((phase, t)),
            "end" => {
                if let Some(i) = open.iter().position(|(p, _)| *p == phase) {
                    let (p, t0) = open.remove(i);
                    out.push(format!("{} {:.1} s", p.trim_matches('"'), (t - t0) / 1e9));
                }
            }
            _ => {}
        }
    }
    out.join(", ")
}
