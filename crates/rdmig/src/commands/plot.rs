//! `rdmig plot throughput`: a peer's receive and send rates around a migration, as a PNG;
//! `rdmig plot series`: an XY chart of an experiment's sweep, from JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::print_json;

#[derive(Args)]
pub struct PlotArgs {
    #[command(subcommand)]
    cmd: PlotCmd,
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
    /// Chart a few named series of (x, y) points as lines (an experiment's sweep, e.g. downtime
    /// against memory size). The data file is JSON: {"title", "subtitle" (optional), "x_label",
    /// "y_label", "series": [{"name", "points": [[x, y], ...]}, ...]}; y starts at zero.
    Series {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: PlotArgs) -> Result<ExitCode> {
    let (samples, out, title, count, msg_size, smooth_ms, marks, around_gap_ms, json) = match a.cmd {
        PlotCmd::Throughput { samples, out, title, count, msg_size, smooth_ms, marks, around_gap_ms, json } => {
            (samples, out, title, count, msg_size, smooth_ms, marks, around_gap_ms, json)
        }
        PlotCmd::Series { data, out } => {
            let text = std::fs::read(&data).with_context(|| format!("reading {}", data.display()))?;
            let chart: rdmig::timeline::series::SeriesChart =
                serde_json::from_slice(&text).with_context(|| format!("{} is not a series chart", data.display()))?;
            rdmig::timeline::series::plot_series(&chart, &out).with_context(|| format!("plot {}", out.display()))?;
            println!("wrote {}", out.display());
            return Ok(ExitCode::SUCCESS);
        }
    };
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
            (Some(g), Some(a), Some(b)) => {
                println!("longest receive gap: {:.1} ms (+/- {:.1} ms), from {a:.3} s to {b:.3} s", g.duration_ns as f64 / 1e6, g.resolution_ns as f64 / 1e6)
            }
            _ => println!("no receive gap: fewer than two changes of rcvd_pkts"),
        }
        if let Some(g) = s.rx_message_gap {
            println!("longest time without a message received: {:.1} ms", g.duration_ns as f64 / 1e6);
        }
        println!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
