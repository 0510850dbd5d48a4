//! The `rdmig` command line.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "rdmig",
    version,
    about = "Live migration of unmodified RDMA (SoftRoCE) applications between hosts",
    long_about = "rdmig moves a running RDMA application from one host to another while its peers \
                  keep running. Each host runs `rdmig agent`; `rdmig migrate PID --to HOST:PORT` moves \
                  a process. No RDMA hardware? `rdmig-lab` (a separate tool) gives you SoftRoCE hosts \
                  to try it on: virtual machines on this machine."
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
    /// Destination agent, HOST:PORT.
    #[arg(long, env = "RDMIG_TO")]
    to: String,
    /// The cluster secret shared with the agents.
    #[arg(long, env = "RDMIG_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Local address whose RoCE v2 GID carries RDMA data (none: TCP only).
    #[arg(long, env = "RDMIG_RDMA_ADDR")]
    rdma_addr: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value = "rxe0", env = "RDMIG_RDMA_DEVICE")]
    rdma_device: String,
    /// RC QPs ("lanes") the RDMA data path stripes its chunks over (1 to 4).
    #[arg(long, default_value_t = rdmig::transport::rdma::DEFAULT_LANES, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u8).range(1..=rdmig::transport::rdma::MAX_LANES as i64), usize::from))]
    rdma_qps: usize,
}

impl PeerArgs {
    fn addr(&self) -> Result<std::net::SocketAddr> {
        self.to.parse().with_context(|| format!("--to {:?} is not HOST:PORT", self.to))
    }

    fn secret(&self) -> Result<rdmig_proto::wire::Secret> {
        let f = self.secret_file.as_ref().context("--secret-file is required (the cluster secret shared with the agents)")?;
        Ok(rdmig_proto::wire::Secret::load(f)?)
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
    #[arg(long, value_name = "FILE", env = "RDMIG_SSH_CONFIG")]
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
        obj: rdmig_rxe::Obj,
        first: u32,
        last: u32,
    },
    /// The next OBJ created by process PID gets exactly INDEX (and key byte KEY for MR/MW);
    /// that creation fails with EBUSY if the number is taken. Persistent until consumed or dropped.
    Expect {
        #[arg(value_enum)]
        obj: rdmig_rxe::Obj,
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
    let daemon = matches!(&cli.cmd, Cmd::Agent { .. });
    let filter = if daemon { "info".to_string() } else { cli.log.clone() };
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
        Cmd::Agent { listen, secret_file, work_dir, keep_images, rdma_addr, rdma_device, number_range } => {
            let secret = rdmig_proto::wire::Secret::load(&secret_file)?;
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
                print_json(&rdmig_image::show::show_json(&dir)?)?;
            } else {
                print!("{}", rdmig_image::show::show(&dir)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench { cmd: BenchCmd::Transfer { peer, size_mib, transports, json } } => {
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
                RxeCmd::GidIndex { device, ip } => println!("{}", rdmig_rxe::gid_index(&device, ip)?),
                RxeCmd::Gids { device } => {
                    for g in rdmig_rxe::gid_table(&device, 1)? {
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
            let run = rdmig::sample::SampleRun::read(&samples)?;
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

async fn migrate(a: MigrateArgs) -> Result<ExitCode> {
    use rdmig::migrate::{Hooks, MigrateOptions, Outcome};
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
    use rdmig_rxe as sr;
    match cmd {
        SoftroceCmd::Status { json } => {
            let records = sr::status::read()?;
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
                sr::sysctl::set("last_qpn", v)?;
            }
            if let Some(v) = last_mrn {
                sr::sysctl::set("last_mrn", v)?;
            }
            println!("last_qpn={} last_mrn={}", sr::sysctl::get("last_qpn")?, sr::sysctl::get("last_mrn")?);
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
fn sample(
    device: &str,
    port: u32,
    interval_us: u64,
    out: &std::path::Path,
    until_exit: Option<i32>,
    duration_s: Option<f64>,
    keep_lifespan: bool,
) -> Result<ExitCode> {
    use rdmig::sample::{run, stop_on_signals, SampleOptions, Stop};
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
