//! `rdmig rxe`: SoftRoCE facts of this host (GIDs) and `rxe sample`, a peer's packet counters
//! over time.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct RxeArgs {
    #[command(subcommand)]
    cmd: RxeCmd,
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

pub fn run(a: RxeArgs) -> Result<ExitCode> {
    let cmd = a.cmd;
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
