//! `rdmig-lab`: SoftRoCE nodes in qemu virtual machines, for trying and testing rdmig without
//! RDMA hardware. The product (`rdmig`) knows nothing of it: the nodes run the same `rdmig` a
//! site would, and `rdmig-lab on NODE -- ARGS` runs it there with the lab's facts (the
//! destination agent's address and node name, the node's TLS directory, its RDMA address) given as the
//! environment variables `rdmig` reads, its arguments passed through untouched.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use rdmig_lab::perftest::{PerftestOptions, PerftestReport};
use rdmig_lab::proto::{ExecSpec, NodeStatus};
use rdmig_lab::{Accel, Lab, Output, Product, RootCache, RxeChoice, UpOptions, DEFAULT_BASE, TCG_CPU};

#[derive(Parser)]
#[command(
    name = "rdmig-lab",
    version,
    about = "A lab of SoftRoCE nodes in virtual machines (root needed), to run rdmig on",
    long_about = "rdmig-lab boots SoftRoCE nodes as qemu virtual machines on this machine (TCG, \
                  Debian's 6.1 kernel, the host's root read-only), joined by a VXLAN overlay in a \
                  network namespace of their own; each node runs rdmig's agent, from the rdmig \
                  package installed on this machine (or, with `up --from-build`, from the build \
                  beside rdmig-lab). Nothing it sends leaves this machine."
)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, global = true, env = "RDMIG_LOG", default_value = "warn")]
    log: String,
    #[command(flatten)]
    lab: LabArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let guest = matches!(cli.lab.cmd, LabCmd::GuestAgent { .. });
    let filter = if guest { "info".to_string() } else { cli.log.clone() };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(lab(cli.lab)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RxeArg {
    Rdmig,
    Stock,
}

#[derive(Args)]
struct LabArgs {
    /// Lab name, so several labs can exist side by side (1 to 8 lowercase letters or digits).
    #[arg(long, global = true, env = "RDMIG_LAB", default_value = "lab")]
    name: String,
    /// Where labs keep their state, consoles and node shares.
    #[arg(long, global = true, env = "RDMIG_LAB_DIR", default_value = DEFAULT_BASE)]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: LabCmd,
}

#[derive(Subcommand)]
enum LabCmd {
    /// Boot the lab's nodes in parallel (cleans up a stale lab of the same name first).
    Up {
        /// Number of nodes (node1 .. nodeN).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Memory of each node, MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Memory of one node instead, MiB (repeat for several): `--node-memory node2=1024`.
        #[arg(long = "node-memory", value_name = "NODE=MIB", value_parser = parse_node_memory)]
        node_memory: Vec<(String, u32)>,
        /// Virtual CPUs of each node.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Accelerator: auto uses KVM only where it is known to work.
        #[arg(long, value_enum, default_value = "auto")]
        accel: Accel,
        /// QEMU's CPU model under TCG (`qemu-system-x86_64 -cpu help`). The default leaves out
        /// ERMS, whose string copies TCG emulates a byte at a time: the lab runs much faster
        /// without it. For experiments that compare models.
        #[arg(long, default_value = TCG_CPU, value_name = "MODEL")]
        tcg_cpu: String,
        /// Kernel release to boot (default: the newest installed Debian 6.1 kernel).
        #[arg(long)]
        kernel: Option<String>,
        /// Give up if a node is not ready after this many seconds.
        #[arg(long, default_value_t = 300)]
        boot_timeout: u64,
        /// Leave a lab that failed to start as it is, for inspection (`rdmig lab logs`).
        #[arg(long)]
        keep_on_failure: bool,
        /// Which rdma_rxe the nodes load: rdmig (our ib_uverbs and rdma_rxe, from
        /// scripts/build-softroce.sh) or stock.
        #[arg(long, value_enum, default_value = "rdmig")]
        rxe: RxeArg,
        /// Load these module files instead (repeat, in load order; absolute paths).
        #[arg(long = "rxe-module", conflicts_with = "rxe")]
        rxe_modules: Vec<PathBuf>,
        /// Developer's shortcut: the nodes run the rdmig built beside this rdmig-lab (target/),
        /// copied into the lab, with its plugin given to CRIU by -L. Without it (the default)
        /// they run the rdmig package installed on this host, as a site would: its
        /// /usr/bin/rdmig, its CRIU plugin from CRIU's own directory, and its agent started as
        /// rdmig-agent.service starts it, with each node's own /etc/rdmig/agent.env
        /// (packaging/build-deb.sh --install makes and installs the package; scripts/test.sh
        /// and scripts/demo.sh do for their build).
        #[arg(long)]
        from_build: bool,
        /// The installed package (the default; for scripts that say so).
        #[arg(long, hide = true, conflicts_with = "from_build")]
        installed: bool,
        /// How the nodes cache the host's root (9p, read-only). loose is much faster under TCG;
        /// with it, a host file changed while the lab is up may stay stale in the nodes (restart
        /// the lab, or use none).
        #[arg(long, value_enum, default_value = "loose")]
        root_cache: RootCache,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop every node and remove the lab's namespace, devices and directory.
    Down {
        #[arg(long)]
        json: bool,
    },
    /// Show each node: qemu running, set-up status, agent reachable.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run a command on a node; its output streams back and its exit code becomes ours.
    Exec {
        /// Node name (node1, node2, ...).
        node: String,
        /// Kill the command after this many seconds (exit code 124).
        #[arg(long)]
        timeout: Option<u64>,
        /// Extra environment variables, KEY=VALUE (repeatable).
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Working directory on the node.
        #[arg(long)]
        cwd: Option<String>,
        /// Capture the output and print {node, code, signal, timed_out, stdout, stderr} as JSON.
        #[arg(long)]
        json: bool,
        /// The command and its arguments (after --).
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Run the node's own `rdmig` with ARGS, untouched, and the lab's facts in the environment
    /// variables rdmig reads: RDMIG_TO and RDMIG_TO_NAME (the agent of --to-node and its node
    /// name), RDMIG_TLS_DIR (the node's certificate of the lab CA), RDMIG_RDMA_ADDR (the node's
    /// overlay address), RDMIG_JOURNAL (the node's journal), RDMIG_AGENTS (every node's agent),
    /// RDMIG_SSH_CONFIG (the
    /// lab's ssh keys, for --transport scp). Its output and exit code come through. Example:
    /// `rdmig-lab on node1 --to-node node3 -- migrate 10042 --move-addr 10.0.1.7`.
    On {
        /// The node to run rdmig on (for a migration: the source).
        node: String,
        /// The node whose agent rdmig talks to (for a migration: the destination).
        #[arg(long)]
        to_node: Option<String>,
        /// rdmig's arguments (after --).
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Print the last lines of a node's console and agent logs.
    Logs {
        node: String,
        #[arg(long, default_value_t = 100)]
        lines: usize,
    },
    /// Extra overlay ("container") addresses such as 10.0.1.7 that can move between nodes.
    Addr {
        #[command(subcommand)]
        cmd: AddrCmd,
    },
    /// Run perftest between two nodes over overlay addresses and report both sides.
    Perftest {
        #[arg(long, default_value = "node1")]
        server: String,
        #[arg(long, default_value = "node2")]
        client: String,
        /// perftest program: ib_send_bw, ib_write_bw, ib_read_bw, ib_send_lat, ...
        #[arg(long, default_value = "ib_send_bw")]
        test: String,
        /// Overlay address the server uses (default: its node's own).
        #[arg(long)]
        server_addr: Option<Ipv4Addr>,
        #[arg(long)]
        client_addr: Option<Ipv4Addr>,
        /// Iterations (perftest -n).
        #[arg(short = 'n', long, default_value_t = 1000)]
        iters: u64,
        /// Message size in bytes (perftest -s).
        #[arg(short = 's', long, default_value_t = 65536)]
        size: u64,
        /// Bidirectional (perftest -b).
        #[arg(short = 'b', long)]
        bidirectional: bool,
        /// Queue pairs (perftest -q).
        #[arg(short = 'q', long, default_value_t = 1)]
        qps: u32,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Start a detached process on a node (own session, stdio to /dev/null or --log); prints its
    /// pid. This is how to start an application you want to migrate.
    Spawn {
        node: String,
        /// Append the program's output to this file on the node (e.g. under /mnt/lab).
        #[arg(long)]
        output: Option<String>,
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// (inside a node) The guest agent, started by the node's init.
    #[command(hide = true)]
    GuestAgent {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AddrCmd {
    /// Add an extra overlay address to a node and announce it (gratuitous ARP).
    Add { node: String, addr: Ipv4Addr },
    /// Remove an extra overlay address from a node.
    Del { node: String, addr: Ipv4Addr },
    /// Move an extra overlay address to another node.
    Move {
        addr: Ipv4Addr,
        #[arg(long)]
        to: String,
    },
    /// List the extra overlay addresses of every node.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty KEY"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `NODE=MIB` of `up --node-memory`.
fn parse_node_memory(s: &str) -> Result<(String, u32), String> {
    let (node, mib) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NODE=MIB"))?;
    let mib: u32 = mib.parse().map_err(|_| format!("{mib:?} is not a number of MiB"))?;
    if node.is_empty() || mib < 256 {
        return Err(format!("{s:?}: a node name and at least 256 MiB"));
    }
    Ok((node.to_string(), mib))
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn lab(args: LabArgs) -> Result<ExitCode> {
    let lab = Lab::new(&args.dir, &args.name)?;
    match args.cmd {
        LabCmd::GuestAgent { config } => {
            rdmig_lab::guest::run(&config).await?;
        }
        LabCmd::Up {
            nodes,
            memory,
            node_memory,
            cpus,
            accel,
            tcg_cpu,
            kernel,
            boot_timeout,
            keep_on_failure,
            rxe,
            rxe_modules,
            from_build,
            installed: _,
            root_cache,
            json,
        } => {
            let rxe = if !rxe_modules.is_empty() {
                RxeChoice::Modules(rxe_modules)
            } else if rxe == RxeArg::Stock {
                RxeChoice::Stock
            } else {
                RxeChoice::Rdmig
            };
            let o = UpOptions {
                nodes,
                memory_mb: memory,
                memory_of: node_memory,
                cpus,
                accel,
                tcg_cpu,
                kernel,
                boot_timeout: Duration::from_secs(boot_timeout),
                keep_on_failure,
                rxe,
                progress: !json,
                product: if from_build { Product::Build } else { Product::Installed },
                root_cache,
            };
            if !json {
                let other: Vec<String> = o.memory_of.iter().map(|(n, m)| format!("{n} {m} MiB")).collect();
                let other = if other.is_empty() { String::new() } else { format!(" ({})", other.join(", ")) };
                eprintln!("starting lab {:?}: {nodes} nodes, {memory} MiB each{other}", lab.name);
            }
            let r = lab.up(&o).await.context("lab up")?;
            if json {
                print_json(&r)?;
            } else {
                if r.cleaned_stale {
                    println!("removed a stale lab of the same name first");
                }
                println!("lab {:?} is up in {:.1} s (kernel {}, {:?}: {})", r.lab, r.total_ms as f64 / 1000.0, r.kernel, r.accel, r.accel_reason);
                match r.rxe.as_slice() {
                    [] => println!("  rdma_rxe: Debian's stock module"),
                    m => println!("  rxe modules: {}", m.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
                }
                match &r.installed {
                    Some(i) => println!(
                        "  rdmig: the installed package {} ({}, plugin {}, agent as {} starts it)",
                        i.version,
                        i.rdmig.display(),
                        i.plugin.display(),
                        i.unit.display()
                    ),
                    None => println!("  rdmig: the build's snapshot ({})", r.rdmig.display()),
                }
                for n in &r.nodes {
                    println!(
                        "  {:6} underlay {:12} overlay {:12} ready in {:.1} s",
                        n.node,
                        n.underlay_ip.to_string(),
                        n.overlay_ip.to_string(),
                        n.boot_ms as f64 / 1000.0
                    );
                }
                println!("try: rdmig lab exec node1 -- ibv_devinfo -d rxe0");
            }
        }
        LabCmd::Down { json } => {
            let r = lab.down().context("lab down")?;
            if json {
                print_json(&r)?;
            } else if r.stopped_pids.is_empty() && !r.netns_deleted && !r.dir_removed {
                println!("lab {:?} was not up; nothing to remove", lab.name);
            } else {
                println!(
                    "lab {:?} is down: stopped {} VM(s){}{}",
                    lab.name,
                    r.stopped_pids.len(),
                    if r.netns_deleted { ", removed its network namespace" } else { "" },
                    if r.dir_removed { ", removed its directory" } else { "" }
                );
            }
        }
        LabCmd::Status { json } => {
            let r = lab.status().await?;
            if json {
                print_json(&r)?;
            } else {
                println!("lab {:?} in {} (kernel {}, {:?})", r.lab, r.dir.display(), r.kernel, r.accel);
                for n in &r.nodes {
                    let st = match &n.status {
                        Some(NodeStatus::Ready { rxe_active, .. }) => format!("ready, rxe0 {}", if *rxe_active { "ACTIVE" } else { "not active" }),
                        Some(NodeStatus::SettingUp { step }) => format!("setting up ({step})"),
                        Some(NodeStatus::Failed { step, error }) => format!("FAILED at {step}: {error}"),
                        None => "booting".into(),
                    };
                    println!(
                        "  {:6} pid {:>7} {:8} {:12} {:12} {} {}",
                        n.node,
                        n.pid.map(|p| p.to_string()).unwrap_or("-".into()),
                        if n.running { "running" } else { "stopped" },
                        n.underlay_ip.to_string(),
                        n.overlay_ip.to_string(),
                        st,
                        if n.reachable { "" } else { "(agent unreachable)" }
                    );
                }
                if r.nodes.iter().any(|n| !n.running || !n.reachable) {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        LabCmd::Exec { node, timeout, env, cwd, json, argv } => {
            let spec = ExecSpec { argv, env: env.into_iter().collect::<BTreeMap<_, _>>(), cwd, timeout_ms: timeout.map(|s| s * 1000) };
            let out = lab.exec(&node, spec, if json { Output::Capture } else { Output::Forward }).await?;
            if json {
                print_json(&out)?;
            } else if out.timed_out {
                eprintln!("rdmig: the command timed out on {node} and was killed");
            }
            return Ok(ExitCode::from(out.shell_code().clamp(0, 255) as u8));
        }
        LabCmd::On { node, to_node, args } => {
            let st = lab.load()?;
            let mut env = BTreeMap::new();
            env.insert("RDMIG_TLS_DIR".to_string(), Lab::NODE_TLS_DIR.to_string());
            env.insert("RDMIG_RDMA_ADDR".to_string(), st.plan.node(&node)?.overlay_ip.to_string());
            env.insert("RDMIG_SSH_CONFIG".to_string(), rdmig_lab::ssh::node_ssh_config());
            env.insert("RDMIG_JOURNAL".to_string(), rdmig_lab::guest::NODE_JOURNAL.to_string());
            // Every node's agent, for `rdmig events` and `rdmig status`.
            let agents: Vec<String> = st.plan.nodes.iter().map(|n| SocketAddr::from((n.underlay_ip, rdmig_lab::guest::MIGRATION_PORT)).to_string()).collect();
            env.insert("RDMIG_AGENTS".to_string(), agents.join(","));
            if let Some(d) = &to_node {
                env.insert("RDMIG_TO".to_string(), lab.agent_addr(&st, d)?.to_string());
                env.insert("RDMIG_TO_NAME".to_string(), st.plan.node(d)?.name.clone());
            }
            let mut argv = vec![st.rdmig_bin.display().to_string()];
            argv.extend(args);
            let out = lab.exec(&node, ExecSpec { argv, env, ..Default::default() }, Output::Forward).await?;
            return Ok(ExitCode::from(out.shell_code().clamp(0, 255) as u8));
        }
        LabCmd::Logs { node, lines } => print!("{}", lab.logs(&node, lines)?),
        LabCmd::Spawn { node, output, env, cwd, argv } => {
            let spec = rdmig_lab::proto::SpawnSpec { argv, env: env.into_iter().collect(), cwd, log: output };
            println!("{}", lab.spawn(&node, spec).await?);
        }
        LabCmd::Addr { cmd } => match cmd {
            AddrCmd::Add { node, addr } => {
                lab.addr_add(&node, addr).await?;
                println!("{addr} is on {node}");
            }
            AddrCmd::Del { node, addr } => {
                lab.addr_del(&node, addr).await?;
                println!("{addr} removed from {node}");
            }
            AddrCmd::Move { addr, to } => {
                let from = lab.addr_move(addr, &to).await?;
                println!("{addr} moved from {from} to {to}");
            }
            AddrCmd::List { json } => {
                let m = lab.overlay_addrs().await?;
                if json {
                    print_json(&m)?;
                } else {
                    for (n, a) in m {
                        let a: Vec<String> = a.iter().map(|x| x.to_string()).collect();
                        println!("{n:6} {}", if a.is_empty() { "-".into() } else { a.join(" ") });
                    }
                }
            }
        },
        LabCmd::Perftest { server, client, test, server_addr, client_addr, iters, size, bidirectional, qps, timeout, json } => {
            let o = PerftestOptions { test, server, client, server_addr, client_addr, iters, size, bidirectional, qps, timeout: Duration::from_secs(timeout) };
            let r = lab.perftest(&o).await?;
            if json {
                print_json(&r)?;
            } else {
                print_perftest(&r);
            }
            if !r.complete() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_perftest(r: &PerftestReport) {
    println!("{} {} x {} bytes ({:.1} s wall)", r.test, r.iters, r.size, r.wall_ms as f64 / 1000.0);
    for (role, s) in [("server", &r.server), ("client", &r.client)] {
        let res = match &s.result {
            Some(row) => row.0.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("  "),
            None => "no result table".into(),
        };
        println!("  {role} {} ({}, gid {}): exit {}  {res}", s.node, s.addr, s.gid_index, s.exit_code);
        if s.exit_code != 0 {
            for l in s.output.lines().chain(s.stderr.lines()).rev().take(10).collect::<Vec<_>>().into_iter().rev() {
                println!("    | {l}");
            }
        }
    }
    println!("{}", if r.complete() { "complete: both sides ran every iteration" } else { "INCOMPLETE" });
}
