//! The `rdmig` command line.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use rdmig::lab::perftest::{PerftestOptions, PerftestReport};
use rdmig::lab::proto::{ExecSpec, NodeStatus};
use rdmig::lab::{Accel, Lab, Output, RxeChoice, UpOptions, DEFAULT_BASE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RxeArg {
    Rdmig,
    Stock,
}

#[derive(Parser)]
#[command(
    name = "rdmig",
    version,
    about = "Live migration of unmodified RDMA (SoftRoCE) applications between hosts",
    long_about = "rdmig moves a running RDMA application from one host to another while its peers \
                  keep running. `rdmig lab` gives you SoftRoCE hosts to try it on: virtual machines \
                  on this machine, no RDMA hardware needed."
)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as rdmig=debug).
    #[arg(long, global = true, env = "RDMIG_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A lab of SoftRoCE nodes in virtual machines (root needed).
    Lab(LabArgs),
    /// Receive migrations on this node: the per-node daemon (root). It binds only where it is
    /// told and talks only to peers holding the cluster secret.
    Agent {
        /// Address to listen on, e.g. 10.99.0.2:7800 (no default: bind where you mean to).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// File with the cluster's shared secret (at least 32 bytes, mode 0600).
        #[arg(long)]
        secret_file: PathBuf,
        /// Where incoming images are kept until the migration is committed.
        #[arg(long, default_value = "/var/lib/rdmig/incoming")]
        work_dir: PathBuf,
        /// Keep images after a committed migration (for inspection).
        #[arg(long)]
        keep_images: bool,
        /// Local address whose RoCE v2 GID carries migration data over RDMA (none: TCP only).
        #[arg(long)]
        rdma_addr: Option<std::net::Ipv4Addr>,
        #[arg(long, default_value = "rxe0")]
        rdma_device: String,
        /// This node's share of the QP and MR numbers, I/N (node I of N): the agent reserves
        /// the other nodes' shares in rdmig's rdma_rxe, so processes migrated between the N nodes
        /// always find their numbers free.
        #[arg(long, value_name = "I/N")]
        number_range: Option<rdmig::agent::numbers::NumberRange>,
    },
    /// Move a running process to another node: checks, pre-copy, freeze, transfer, restore,
    /// resume; or roll back so it keeps running here. Exit codes: 0 migrated, 2 refused before
    /// anything was touched, 3 rolled back (runs here again), 4 in doubt (left stopped here).
    Migrate(MigrateArgs),
    /// Inspect checkpoint images: `image show DIR` lists the verbs objects rdmig's CRIU plugin
    /// saved there (like CRIU's crit does for its own images).
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Measure things: `bench transfer` moves data to an agent over TCP and over RDMA.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// rdmig's rdma_rxe: number control, reservations, dirty pages (needs our module; root).
    Softroce {
        #[command(subcommand)]
        cmd: SoftroceCmd,
    },
    /// SoftRoCE facts on this host (or inside a lab node).
    Rxe {
        #[command(subcommand)]
        cmd: RxeCmd,
    },
    /// Charts: `plot throughput` draws a peer's receive and send rates around a migration.
    Plot {
        #[command(subcommand)]
        cmd: PlotCmd,
    },
}

/// Where the destination agent is and how to reach it; shared by `migrate` and `bench transfer`.
#[derive(Args)]
struct PeerArgs {
    /// Destination agent, HOST:PORT; with --from, a lab node name.
    #[arg(long)]
    to: String,
    /// (lab) Run the command on this lab node, the source (from the host).
    #[arg(long)]
    from: Option<String>,
    /// Lab name and directory, with --from.
    #[arg(long, default_value = "lab", env = "RDMIG_LAB")]
    lab: String,
    #[arg(long, default_value = DEFAULT_BASE, env = "RDMIG_LAB_DIR")]
    lab_dir: PathBuf,
    /// The cluster secret shared with the agents (default in a lab node: its agent secret).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Local address whose RoCE v2 GID carries RDMA data (with --from: the source node's own).
    #[arg(long)]
    rdma_addr: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value = "rxe0")]
    rdma_device: String,
    /// RC QPs ("lanes") the RDMA data path stripes its chunks over (1 to 4).
    #[arg(long, default_value_t = rdmig::transport::rdma::DEFAULT_LANES, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u8).range(1..=rdmig::transport::rdma::MAX_LANES as i64), usize::from))]
    rdma_qps: usize,
}

impl PeerArgs {
    fn addr(&self) -> Result<std::net::SocketAddr> {
        self.to.parse().with_context(|| format!("--to {:?} is not HOST:PORT (a lab node name needs --from)", self.to))
    }

    fn secret(&self) -> Result<rdmig::agent::wire::Secret> {
        let f = self.secret_file.as_ref().context("--secret-file is required (the cluster secret shared with the agents)")?;
        Ok(rdmig::agent::wire::Secret::load(f)?)
    }

    /// Lab mode: runs `rdmig ARGS --to <agent> --secret-file .. --rdma-addr .. REST` on node `from`,
    /// pointed at the destination node's agent; its output and exit code come through.
    async fn run_on_lab_node(&self, from: &str, args: &[String], rest: Vec<String>) -> Result<ExitCode> {
        let lab = Lab::new(&self.lab_dir, &self.lab)?;
        let st = lab.load()?;
        let to = lab.agent_addr(&st, &self.to)?;
        let rdma_addr = self.rdma_addr.unwrap_or(st.plan.node(from)?.overlay_ip);
        let mut argv: Vec<String> = vec![st.rdmig_bin.display().to_string()];
        argv.extend_from_slice(args);
        argv.extend(["--to".into(), to.to_string(), "--secret-file".into(), Lab::NODE_AGENT_SECRET.into()]);
        argv.extend(["--rdma-addr".into(), rdma_addr.to_string(), "--rdma-device".into(), self.rdma_device.clone()]);
        argv.extend(["--rdma-qps".into(), self.rdma_qps.to_string()]);
        argv.extend(rest);
        let out = lab.exec(from, ExecSpec { argv, ..Default::default() }, Output::Forward).await?;
        Ok(ExitCode::from(out.shell_code().clamp(0, 255) as u8))
    }
}

#[derive(Args)]
struct MigrateArgs {
    /// The process to move.
    pid: i32,
    #[command(flatten)]
    peer: PeerArgs,
    #[arg(long, value_enum, default_value = "precopy")]
    strategy: rdmig::migrate::Strategy,
    /// Pre-copy rounds at most.
    #[arg(long, default_value_t = 8)]
    max_rounds: u32,
    /// Pre-copy has converged when a round carries no more than this many MiB.
    #[arg(long, default_value_t = 4)]
    converge_mib: u64,
    /// Where the source keeps images while they are sent.
    #[arg(long, default_value = "/tmp/rdmig-migrate")]
    work_dir: PathBuf,
    /// Commands run with the migration's facts in RDMIG_* environment variables: before
    /// (failure refuses), after success, after failure.
    #[arg(long)]
    hook_pre: Option<String>,
    #[arg(long)]
    hook_post: Option<String>,
    #[arg(long)]
    hook_fail: Option<String>,
    /// Seconds a CRIU dump may take.
    #[arg(long, default_value_t = 600)]
    dump_timeout: u64,
    #[arg(long)]
    allow_kernel_mismatch: bool,
    /// How memory images travel: rdma, tcp, or auto (measure both briefly, keep the faster);
    /// scp copies them over ssh instead (the MigrOS artifact's baseline; needs sshd at the
    /// destination, see --ssh-host and --ssh-config).
    #[arg(long, value_enum, default_value = "auto")]
    transport: rdmig::transport::TransportChoice,
    /// With --transport scp: where scp copies to ([user@]host; default: the destination
    /// agent's address).
    #[arg(long, value_name = "[USER@]HOST")]
    ssh_host: Option<String>,
    /// With --transport scp: an ssh client configuration file (scp -F): key, known hosts, user.
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// Stream CRIU's pages to the destination's page server while it dumps, instead of writing
    /// page images here and sending them after each dump. Needs no local room for the pages;
    /// measured slower in the emulated lab (see README), so not the default. scp never streams.
    #[arg(long)]
    page_stream: bool,
    /// Write the timeline (JSON) and its chart (PNG) next to this path: X.json, X.png.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Print the report as JSON (the timeline included).
    #[arg(long)]
    json: bool,
    /// Checkpoint and restore the process's established TCP connections (CRIU's
    /// --tcp-established); their local addresses must exist at the destination (--move-addr).
    #[arg(long)]
    tcp_established: bool,
    /// An address of the source host that moves with the process (e.g. the overlay address
    /// its peers use): removed here once the process is frozen, added at the destination
    /// before the restore, taken back on rollback.
    #[arg(long, value_name = "IPV4")]
    move_addr: Option<std::net::Ipv4Addr>,
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
        /// Virtual CPUs of each node.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Accelerator: auto uses KVM only where it is known to work.
        #[arg(long, value_enum, default_value = "auto")]
        accel: Accel,
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

#[derive(Subcommand)]
enum ImageCmd {
    /// Print the verbs objects saved in a CRIU image directory.
    Show {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Send SIZE MiB to a destination agent over each transport and report MB/s.
    Transfer {
        #[command(flatten)]
        peer: PeerArgs,
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Transports to measure, in order (default both).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "tcp,rdma")]
        transports: Vec<rdmig::transport::TransportChoice>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SoftroceCmd {
    /// Control interface version, sysctls, reservations, pending requests and every QP, MR, MW
    /// and AH with its number and owning process.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Read or set the MigrOS-compatible sysctls (the next search starts at VALUE + minimum).
    Sysctl {
        #[arg(long)]
        last_qpn: Option<u32>,
        #[arg(long)]
        last_mrn: Option<u32>,
    },
    /// Reserve an index range so the normal allocator never hands it out (persistent until
    /// `drop`, since this command exits).
    Reserve {
        #[arg(value_enum)]
        obj: rdmig::softroce::Obj,
        first: u32,
        last: u32,
    },
    /// The next OBJ created by process PID gets exactly INDEX (and key byte KEY for MR/MW);
    /// that creation fails with EBUSY if the number is taken. Persistent until consumed or dropped.
    Expect {
        #[arg(value_enum)]
        obj: rdmig::softroce::Obj,
        index: u32,
        #[arg(long)]
        pid: i32,
        #[arg(long)]
        key: Option<u8>,
        #[arg(long, default_value = "")]
        device: String,
    },
    /// Drop a reservation or request by id, or --all of everybody's.
    Drop {
        id: Option<u32>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Pages of MR INDEX (lkey >> 8) that rxe wrote since the last read; reading clears them
    /// unless --keep.
    Dirty {
        index: u32,
        #[arg(long, default_value = "rxe0")]
        device: String,
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Move user MR INDEX to the pages at VA in process PID (the one that registered it), e.g.
    /// after a restore registered it on placeholder pages; its QPs must be quiet (stopped).
    Repin {
        index: u32,
        #[arg(long)]
        pid: i32,
        /// New address of the MR's first byte (hex with 0x, or decimal).
        #[arg(long, value_parser = parse_u64_auto)]
        va: u64,
        #[arg(long, default_value = "rxe0")]
        device: String,
    },
}

#[derive(Subcommand)]
enum RxeCmd {
    /// Print the GID index of an IPv4 address's RoCE v2 GID (what perftest's -x wants).
    GidIndex {
        #[arg(long, default_value = "rxe0")]
        device: String,
        #[arg(long)]
        ip: Ipv4Addr,
    },
    /// List a device's GIDs.
    Gids {
        #[arg(long, default_value = "rxe0")]
        device: String,
    },
    /// Record a port's packet counters (hw_counters) at a fixed period into a JSON file, until a
    /// process exits, a duration is over, or SIGTERM/SIGINT (the file is written in every case).
    Sample {
        #[arg(long, default_value = "rxe0")]
        device: String,
        #[arg(long, default_value_t = 1)]
        port: u32,
        /// Sampling period, µs (100 to 5000).
        #[arg(long, default_value_t = 2000)]
        interval_us: u64,
        #[arg(long)]
        out: PathBuf,
        /// Stop when this process exits.
        #[arg(long, value_name = "PID")]
        until_exit: Option<i32>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "S")]
        duration_s: Option<f64>,
        /// Leave the kernel's counter cache lifespan as it is (by default it is set to 0 for the
        /// run, so readings are at most a jiffy old, and restored afterwards).
        #[arg(long)]
        keep_lifespan: bool,
    },
}

#[derive(Subcommand)]
enum PlotCmd {
    /// Chart a peer's receive and send rates from `rdmig rxe sample`'s file, the longest time it
    /// received nothing shaded; prints that gap.
    Throughput {
        #[arg(long)]
        samples: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        title: Option<String>,
        /// What the rates count: messages (completed SENDs: the payload rate, as perftest) or
        /// packets (ACKs included, each taken as a full message).
        #[arg(long, value_enum, default_value = "messages")]
        count: rdmig::timeline::throughput::Count,
        /// Bytes per counted message or packet (perftest -s).
        #[arg(long, default_value_t = 4096)]
        msg_size: u64,
        /// Width of the moving average, ms.
        #[arg(long, default_value_t = 50.0)]
        smooth_ms: f64,
        /// A labelled vertical line, MS after the first sample (repeatable).
        #[arg(long = "mark-ms", value_name = "MS:LABEL")]
        marks: Vec<rdmig::timeline::throughput::Mark>,
        /// Show only this many ms either side of the longest receive gap.
        #[arg(long, value_name = "MS")]
        around_gap_ms: Option<f64>,
        /// Print the numbers as JSON.
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

/// A number in hex (with 0x) or decimal.
fn parse_u64_auto(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let guest = matches!(&cli.cmd, Cmd::Lab(LabArgs { cmd: LabCmd::GuestAgent { .. }, .. }) | Cmd::Agent { .. });
    let filter = if guest { "info".to_string() } else { cli.log.clone() };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Lab(args) => lab(args).await,
        Cmd::Agent { listen, secret_file, work_dir, keep_images, rdma_addr, rdma_device, number_range } => {
            let secret = rdmig::agent::wire::Secret::load(&secret_file)?;
            rdmig::agent::serve(rdmig::agent::AgentConfig {
                listen,
                rdma_addr,
                rdma_device,
                secret,
                work_dir,
                keep_images,
                restore_timeout: Duration::from_secs(600),
                numbers: number_range,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Softroce { cmd } => softroce(cmd),
        Cmd::Migrate(args) => migrate(args).await,
        Cmd::Image { cmd: ImageCmd::Show { dir, json } } => {
            if json {
                print_json(&rdmig::image::show_json(&dir)?)?;
            } else {
                print!("{}", rdmig::image::show(&dir)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench { cmd: BenchCmd::Transfer { peer, size_mib, transports, json } } => {
            if let Some(from) = &peer.from {
                let ts: Vec<String> = transports.iter().map(|t| format!("{t:?}").to_lowercase()).collect();
                let mut rest = vec!["--size-mib".into(), size_mib.to_string(), "--transports".into(), ts.join(",")];
                if json {
                    rest.push("--json".into());
                }
                return peer.run_on_lab_node(from, &["bench".into(), "transfer".into()], rest).await;
            }
            let (to, secret) = (peer.addr()?, peer.secret()?);
            let (rdma_addr, rdma_device) = (peer.rdma_addr, peer.rdma_device);
            let r = rdmig::migrate::bench_transfer(to, &secret, rdma_addr, &rdma_device, peer.rdma_qps, size_mib << 20, &transports).await?;
            if json {
                print_json(&r)?;
            } else {
                for row in &r {
                    let qps = row.rdma_qps.map(|n| format!(", {n} QP(s)")).unwrap_or_default();
                    println!("{:5} {:>8.1} MB/s  ({} MiB in {:.2} s{qps})", row.transport, row.mb_s, row.bytes >> 20, row.secs);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Rxe { cmd } => {
            match cmd {
                RxeCmd::GidIndex { device, ip } => println!("{}", rdmig::rxe::gid_index(&device, ip)?),
                RxeCmd::Gids { device } => {
                    for g in rdmig::rxe::gid_table(&device, 1)? {
                        println!("{:>3} {} {}", g.index, g.gid, g.kind);
                    }
                }
                RxeCmd::Sample { device, port, interval_us, out, until_exit, duration_s, keep_lifespan } => {
                    return sample(&device, port, interval_us, &out, until_exit, duration_s, keep_lifespan);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plot { cmd: PlotCmd::Throughput { samples, out, title, count, msg_size, smooth_ms, marks, around_gap_ms, json } } => {
            use rdmig::timeline::throughput::{plot_throughput, summarize, ThroughputPlot};
            let run = rdmig::rxe::sample::SampleRun::read(&samples)?;
            let mut o = ThroughputPlot::new(title.as_deref().unwrap_or("peer throughput"));
            o.count = count;
            o.msg_size = msg_size;
            o.smooth_ns = (smooth_ms * 1e6) as u64;
            o.marks = marks;
            if let Some(w) = around_gap_ms {
                let s = summarize(&run, count, msg_size);
                let (a, b) = s.rx_gap_start_s.zip(s.rx_gap_end_s).context("--around-gap-ms: the samples have no receive gap")?;
                o.x_range_s = Some((a - w / 1e3, b + w / 1e3));
            }
            let s = plot_throughput(&run, &o, &out).with_context(|| format!("plot {}", out.display()))?;
            if json {
                print_json(&s)?;
            } else {
                println!("{} samples over {:.3} s (median interval {} us, {} overruns)", s.samples, s.duration_s, s.median_interval_ns / 1000, s.overruns);
                println!("mean: received {:.2} MB/s, sent {:.2} MB/s ({count:?} x {msg_size} B)", s.mean_rx_mb_s, s.mean_tx_mb_s);
                match (s.rx_gap, s.rx_gap_start_s, s.rx_gap_end_s) {
                    (Some(g), Some(a), Some(b)) => println!(
                        "longest receive gap: {:.1} ms (+/- {:.1} ms), from {a:.3} s to {b:.3} s",
                        g.duration_ns as f64 / 1e6,
                        g.resolution_ns as f64 / 1e6
                    ),
                    _ => println!("no receive gap: fewer than two changes of rcvd_pkts"),
                }
                if let Some(g) = s.rx_message_gap {
                    println!("longest time without a message received: {:.1} ms", g.duration_ns as f64 / 1e6);
                }
                println!("wrote {}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn lab(args: LabArgs) -> Result<ExitCode> {
    let lab = Lab::new(&args.dir, &args.name)?;
    match args.cmd {
        LabCmd::GuestAgent { config } => {
            rdmig::lab::guest::run(&config).await?;
        }
        LabCmd::Up { nodes, memory, cpus, accel, kernel, boot_timeout, keep_on_failure, rxe, rxe_modules, json } => {
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
                cpus,
                accel,
                kernel,
                boot_timeout: Duration::from_secs(boot_timeout),
                keep_on_failure,
                rxe,
                progress: !json,
            };
            if !json {
                eprintln!("starting lab {:?}: {nodes} nodes, {memory} MiB each", lab.name);
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
                for n in &r.nodes {
                    println!("  {:6} underlay {:12} overlay {:12} ready in {:.1} s", n.node, n.underlay_ip.to_string(), n.overlay_ip.to_string(), n.boot_ms as f64 / 1000.0);
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
            let spec = ExecSpec {
                argv,
                env: env.into_iter().collect::<BTreeMap<_, _>>(),
                cwd,
                timeout_ms: timeout.map(|s| s * 1000),
            };
            let out = lab.exec(&node, spec, if json { Output::Capture } else { Output::Forward }).await?;
            if json {
                print_json(&out)?;
            } else if out.timed_out {
                eprintln!("rdmig: the command timed out on {node} and was killed");
            }
            return Ok(ExitCode::from(out.shell_code().clamp(0, 255) as u8));
        }
        LabCmd::Logs { node, lines } => print!("{}", lab.logs(&node, lines)?),
        LabCmd::Spawn { node, output, env, cwd, argv } => {
            let spec = rdmig::lab::proto::SpawnSpec { argv, env: env.into_iter().collect(), cwd, log: output };
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
            let o = PerftestOptions {
                test,
                server,
                client,
                server_addr,
                client_addr,
                iters,
                size,
                bidirectional,
                qps,
                timeout: Duration::from_secs(timeout),
            };
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

async fn migrate(a: MigrateArgs) -> Result<ExitCode> {
    use rdmig::migrate::{Hooks, MigrateOptions, Outcome};
    if let Some(from) = &a.peer.from {
        let mut rest: Vec<String> = vec!["--strategy".into(), format!("{:?}", a.strategy).to_lowercase().replace("stopandcopy", "stop-and-copy")];
        rest.extend(["--max-rounds".into(), a.max_rounds.to_string(), "--converge-mib".into(), a.converge_mib.to_string()]);
        rest.extend(["--work-dir".into(), a.work_dir.display().to_string(), "--dump-timeout".into(), a.dump_timeout.to_string()]);
        rest.extend(["--transport".into(), format!("{:?}", a.transport).to_lowercase()]);
        for (flag, v) in [("--hook-pre", &a.hook_pre), ("--hook-post", &a.hook_post), ("--hook-fail", &a.hook_fail)] {
            if let Some(v) = v {
                rest.extend([flag.to_string(), v.clone()]);
            }
        }
        if let Some(t) = &a.timeline {
            rest.extend(["--timeline".into(), t.display().to_string()]);
        }
        if a.allow_kernel_mismatch {
            rest.push("--allow-kernel-mismatch".into());
        }
        if a.json {
            rest.push("--json".into());
        }
        if a.tcp_established {
            rest.push("--tcp-established".into());
        }
        if let Some(m) = a.move_addr {
            rest.extend(["--move-addr".into(), m.to_string()]);
        }
        if let Some(h) = &a.ssh_host {
            rest.extend(["--ssh-host".into(), h.clone()]);
        }
        if a.page_stream {
            rest.push("--page-stream".into());
        }
        // In a lab, scp uses the lab's own keys (the nodes' sshd trusts them) unless told otherwise.
        match &a.ssh_config {
            Some(c) => rest.extend(["--ssh-config".into(), c.display().to_string()]),
            None if a.transport == rdmig::transport::TransportChoice::Scp => rest.extend(["--ssh-config".into(), rdmig::lab::ssh::node_ssh_config()]),
            None => {}
        }
        return a.peer.run_on_lab_node(from, &["migrate".into(), a.pid.to_string()], rest).await;
    }
    let o = MigrateOptions {
        pid: a.pid,
        to: a.peer.addr()?,
        secret: a.peer.secret()?,
        strategy: a.strategy,
        max_rounds: a.max_rounds,
        converge_bytes: a.converge_mib << 20,
        work_dir: a.work_dir.clone(),
        hooks: Hooks { pre: a.hook_pre.clone(), post: a.hook_post.clone(), fail: a.hook_fail.clone() },
        dump_timeout: Duration::from_secs(a.dump_timeout),
        allow_kernel_mismatch: a.allow_kernel_mismatch,
        transport: a.transport,
        rdma_addr: a.peer.rdma_addr,
        rdma_device: a.peer.rdma_device.clone(),
        rdma_qps: a.peer.rdma_qps,
        progress: !a.json,
        tcp_established: a.tcp_established,
        move_addr: a.move_addr,
        ssh_host: a.ssh_host.clone(),
        ssh_config: a.ssh_config.clone(),
        page_stream: a.page_stream,
    };
    let r = rdmig::migrate::migrate(&o).await;
    if let Some(t) = &a.timeline {
        r.timeline.write_json(&t.with_extension("json"))?;
        if let Some(s) = &r.summary {
            if let Err(e) = rdmig::timeline::plot_png(&r.timeline, s, &t.with_extension("png")) {
                eprintln!("rdmig: chart not written: {e}");
            }
        }
    }
    if a.json {
        print_json(&r)?;
    } else {
        match &r.outcome {
            Outcome::Migrated { restored_pid } => println!("migrated pid {} to {} (pid {restored_pid} there)", r.pid, a.peer.to),
            Outcome::Refused { reason } => println!("REFUSED, nothing was touched: {reason}"),
            Outcome::RolledBack { reason } => println!("ROLLED BACK, pid {} runs here again: {reason}", r.pid),
            Outcome::InDoubt { reason } => println!("IN DOUBT: {reason}"),
        }
        if let Some(s) = &r.summary {
            print!("{}", s.render_text());
        }
    }
    Ok(ExitCode::from(match r.outcome {
        Outcome::Migrated { .. } => 0,
        Outcome::Refused { .. } => 2,
        Outcome::RolledBack { .. } => 3,
        Outcome::InDoubt { .. } => 4,
    }))
}

fn softroce(cmd: SoftroceCmd) -> Result<ExitCode> {
    use rdmig::softroce as sr;
    match cmd {
        SoftroceCmd::Status { json } => {
            let records = sr::status()?;
            if json {
                print_json(&records)?;
            } else {
                for r in records {
                    let f: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("{:8} {}", r.kind, f.join(" "));
                }
            }
        }
        SoftroceCmd::Sysctl { last_qpn, last_mrn } => {
            if let Some(v) = last_qpn {
                sr::sysctl_set("last_qpn", v)?;
            }
            if let Some(v) = last_mrn {
                sr::sysctl_set("last_mrn", v)?;
            }
            println!("last_qpn={} last_mrn={}", sr::sysctl_get("last_qpn")?, sr::sysctl_get("last_mrn")?);
        }
        SoftroceCmd::Reserve { obj, first, last } => {
            let (id, busy) = sr::Ctl::open()?.reserve(obj, first, last, true)?;
            println!("reservation {id}: {obj:?} {first}-{last} ({busy} already in use)");
        }
        SoftroceCmd::Expect { obj, index, pid, key, device } => {
            let id = sr::Ctl::open()?.expect(obj, pid, index, key, &device, true)?;
            println!("request {id}: the next {obj:?} of pid {pid} gets {index}");
        }
        SoftroceCmd::Drop { id, all } => {
            let ctl = sr::Ctl::open()?;
            let n = match (id, all) {
                (Some(id), _) => ctl.drop_id(id)?,
                (None, true) => ctl.drop_all()?,
                (None, false) => anyhow::bail!("give an id or --all"),
            };
            println!("dropped {n}");
        }
        SoftroceCmd::Repin { index, pid, va, device } => {
            let n = sr::Ctl::open()?.mr_repin(&device, index, pid, va)?;
            println!("MR {index} on {device} now uses the {n} pages at {va:#x} of pid {pid}");
        }
        SoftroceCmd::Dirty { index, device, keep, json } => {
            let d = sr::Ctl::open()?.dirty(&device, index, !keep)?;
            if json {
                print_json(&d)?;
            } else {
                let p: Vec<String> = d.pages.iter().map(u64::to_string).collect();
                println!("MR {index} (lkey {:#x}, {} pages at {:#x}): {} dirty: {}", d.lkey, d.mr_pages, d.va, d.pages.len(), p.join(","));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rdmig rxe sample`: the file is written however the run ends; a counter that failed to read
/// mid-run makes the exit code non-zero after that.
fn sample(device: &str, port: u32, interval_us: u64, out: &std::path::Path, until_exit: Option<i32>, duration_s: Option<f64>, keep_lifespan: bool) -> Result<ExitCode> {
    use rdmig::rxe::sample::{run, stop_on_signals, SampleOptions, Stop};
    let mut o = SampleOptions::new(device, port, Duration::from_micros(interval_us));
    o.until_exit = until_exit;
    o.duration = duration_s.map(Duration::try_from_secs_f64).transpose().context("--duration-s must be a non-negative number of seconds")?;
    o.fresh_counters = !keep_lifespan;
    let stop = stop_on_signals()?;
    let r = run(&o, stop)?;
    r.write(out)?;
    let span = match (r.samples.first(), r.samples.last()) {
        (Some(a), Some(b)) => (b.t_ns - a.t_ns) as f64 / 1e9,
        _ => 0.0,
    };
    let why = match &r.stop {
        Stop::PidExited { pid } => format!("pid {pid} exited"),
        Stop::Duration => "duration reached".into(),
        Stop::Signal => "signal".into(),
        Stop::Error { error } => format!("ERROR: {error}"),
    };
    println!(
        "{} samples over {span:.3} s every {interval_us} us: median {} us, p99 {} us, max {} us; {} overruns ({} periods missed); counter lifespan {}; stopped: {why}; wrote {}",
        r.samples.len(),
        r.achieved.median_ns / 1000,
        r.achieved.p99_ns / 1000,
        r.achieved.max_ns / 1000,
        r.overruns,
        r.missed_periods,
        r.counter_lifespan_ms.map(|l| format!("{l} ms")).unwrap_or("n/a".into()),
        out.display()
    );
    Ok(if matches!(r.stop, Stop::Error { .. }) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
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
