//! The peer's view of a migration: its throughput over time, from the packet counters that
//! `rdmig rxe sample` recorded on the peer's node, and the longest time it received nothing.
//!
//! Rates are counts × message size / time, from one of two kinds of counts:
//! - messages (the default): completed SENDs received and sent (`rdma_recvs`, `rdma_sends`), so
//!   the rate is the payload rate, as perftest counts it;
//! - packets (`rcvd_pkts`, `sent_pkts`): every packet counted as a full message, including
//!   acknowledgements. rxe's requester asks for an ACK on the last packet of every message, so
//!   with one-packet messages (4 KiB messages, 4 KiB MTU) each direction carries about as many
//!   ACKs as data packets and this rate reads about twice the payload rate of a
//!   bidirectional run (measured in the lab: 301 364 packets received for 150 000 messages).
//!
//! The gap is always about packets: the longest time the peer received no packet at all (data,
//! ACK or NAK). MB are 2^20 bytes, as perftest's MB/sec.

use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::plot::{tick_label, tick_step_ms};
use super::text::{draw_text, plot_err, text_width, Area, CELL, GRID, INK};
use super::TimelineError;
use crate::sample::{Sample, SampleRun};

/// perftest's MB.
pub const MB: f64 = 1_048_576.0;

/// The longest time between two consecutive increases of a counter, as the samples saw them.
/// Both ends are seen up to one sampling interval late, so the true length is `duration_ns` ±
/// `resolution_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The sample that first saw the last packet before the gap, and the one that first saw a
    /// packet after it (CLOCK_MONOTONIC of the sampling node).
    pub start_ns: u64,
    pub end_ns: u64,
    pub duration_ns: u64,
    pub resolution_ns: u64,
}

/// The longest gap in `counter`, between two increases: the idle time before the first packet
/// and after the last is not a gap (the application had not started or had finished).
pub fn longest_gap(samples: &[Sample], counter: fn(&Sample) -> u64) -> Option<Gap> {
    let mut best: Option<Gap> = None;
    let mut prev_change: Option<usize> = None;
    for i in 1..samples.len() {
        if counter(&samples[i]) == counter(&samples[i - 1]) {
            continue;
        }
        if let Some(a) = prev_change {
            let (s, e) = (&samples[a], &samples[i]);
            let duration_ns = e.t_ns.saturating_sub(s.t_ns);
            if best.is_none_or(|b| duration_ns > b.duration_ns) {
                let resolution_ns = (s.t_ns - samples[a - 1].t_ns).max(e.t_ns - samples[i - 1].t_ns);
                best = Some(Gap { start_ns: s.t_ns, end_ns: e.t_ns, duration_ns, resolution_ns });
            }
        }
        prev_change = Some(i);
    }
    best
}

/// Which counters the rates are computed from (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    /// Completed SENDs (rdma_recvs, rdma_sends): the payload rate.
    #[default]
    Messages,
    /// Packets on the wire (rcvd_pkts, sent_pkts), ACKs included.
    Packets,
}

impl Count {
    fn rx(self, s: &Sample) -> u64 {
        match self {
            Count::Messages => s.rdma_recvs,
            Count::Packets => s.rcvd_pkts,
        }
    }
    fn tx(self, s: &Sample) -> u64 {
        match self {
            Count::Messages => s.rdma_sends,
            Count::Packets => s.sent_pkts,
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Count::Messages => "message counts: completed SENDs",
            Count::Packets => "packet counts, ACKs included",
        }
    }
}

/// A receive and send rate at a moment, MB/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub t_ns: u64,
    pub rx_mb_s: f64,
    pub tx_mb_s: f64,
}

fn rate(a: &Sample, b: &Sample, count: Count, msg_size: u64) -> Option<(f64, f64)> {
    let dt = b.t_ns.checked_sub(a.t_ns).filter(|d| *d > 0)? as f64 / 1e9;
    // A counter that went down (device re-created) has no rate for that window.
    let per = |x: u64, y: u64| y.saturating_sub(x) as f64 * msg_size as f64 / dt / MB;
    Some((per(count.rx(a), count.rx(b)), per(count.tx(a), count.tx(b))))
}

/// The rate of every window between consecutive samples, at the window's middle.
pub fn window_rates(samples: &[Sample], count: Count, msg_size: u64) -> Vec<Rate> {
    samples
        .windows(2)
        .filter_map(|w| {
            let (rx, tx) = rate(&w[0], &w[1], count, msg_size)?;
            Some(Rate { t_ns: w[0].t_ns + (w[1].t_ns - w[0].t_ns) / 2, rx_mb_s: rx, tx_mb_s: tx })
        })
        .collect()
}

/// A moving average centred on each sample: the packets counted between the samples at the
/// edges of a `width_ns` window (narrower at the ends of the run), over the time between them.
/// Counting from the cumulative counters makes it exact, whatever the windows' lengths.
pub fn smoothed_rates(samples: &[Sample], count: Count, msg_size: u64, width_ns: u64) -> Vec<Rate> {
    let half = width_ns / 2;
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        while samples[lo].t_ns + half < s.t_ns {
            lo += 1;
        }
        while hi + 1 < samples.len() && samples[hi + 1].t_ns <= s.t_ns + half {
            hi += 1;
        }
        if let Some((rx, tx)) = rate(&samples[lo], &samples[hi], count, msg_size) {
            out.push(Rate { t_ns: s.t_ns, rx_mb_s: rx, tx_mb_s: tx });
        }
    }
    out
}

/// The numbers of a samples file, for people and scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThroughputSummary {
    pub device: String,
    pub samples: usize,
    /// The first sample's time: every `*_s` below counts from it.
    pub origin_ns: u64,
    pub duration_s: f64,
    pub interval_ns: u64,
    pub median_interval_ns: u64,
    pub overruns: u64,
    pub count: Count,
    pub msg_size: u64,
    /// Over the whole run (first to last sample), MB/s from `count`.
    pub mean_rx_mb_s: f64,
    pub mean_tx_mb_s: f64,
    /// The longest time with no packet received (data, ACK or NAK).
    pub rx_gap: Option<Gap>,
    pub rx_gap_start_s: Option<f64>,
    pub rx_gap_end_s: Option<f64>,
    /// The longest time with no message received (no SEND completed): at least as long, since
    /// ACKs and NAKs may still arrive while no data does.
    pub rx_message_gap: Option<Gap>,
}

pub fn summarize(run: &SampleRun, count: Count, msg_size: u64) -> ThroughputSummary {
    let s = &run.samples;
    let origin_ns = s.first().map(|x| x.t_ns).unwrap_or(0);
    let (rx, tx) = match (s.first(), s.last()) {
        (Some(a), Some(b)) => rate(a, b, count, msg_size).unwrap_or((0.0, 0.0)),
        _ => (0.0, 0.0),
    };
    let gap = longest_gap(s, |x| x.rcvd_pkts);
    let rel = |t: u64| (t - origin_ns) as f64 / 1e9;
    ThroughputSummary {
        device: run.device.clone(),
        samples: s.len(),
        origin_ns,
        duration_s: s.last().map(|x| rel(x.t_ns)).unwrap_or(0.0),
        interval_ns: run.interval_ns,
        median_interval_ns: run.achieved.median_ns,
        overruns: run.overruns,
        count,
        msg_size,
        mean_rx_mb_s: rx,
        mean_tx_mb_s: tx,
        rx_gap: gap,
        rx_gap_start_s: gap.map(|g| rel(g.start_ns)),
        rx_gap_end_s: gap.map(|g| rel(g.end_ns)),
        rx_message_gap: longest_gap(s, |x| x.rdma_recvs),
    }
}

/// A labelled vertical line, `ms` after the first sample (`--mark-ms 1234:freeze`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at_ms: f64,
    pub label: String,
}

impl std::str::FromStr for Mark {
    type Err = String;
    fn from_str(s: &str) -> Result<Mark, String> {
        let (at, label) = s.split_once(':').ok_or_else(|| format!("{s:?} is not MS:LABEL"))?;
        let at_ms: f64 = at.trim().parse().map_err(|e| format!("{at:?} in {s:?} is not a number of ms: {e}"))?;
        if !at_ms.is_finite() {
            return Err(format!("{at:?} in {s:?} is not a finite number of ms"));
        }
        Ok(Mark { at_ms, label: label.to_string() })
    }
}

#[derive(Debug, Clone)]
pub struct ThroughputPlot {
    pub title: String,
    pub count: Count,
    pub msg_size: u64,
    /// Width of the moving average.
    pub smooth_ns: u64,
    pub marks: Vec<Mark>,
    /// Seconds since the first sample to show; default the whole run.
    pub x_range_s: Option<(f64, f64)>,
}

impl ThroughputPlot {
    pub fn new(title: &str) -> ThroughputPlot {
        ThroughputPlot { title: title.to_string(), count: Count::Messages, msg_size: 4096, smooth_ns: 50_000_000, marks: vec![], x_range_s: None }
    }
}

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 600;
const LEFT: i32 = 80;
const RIGHT: i32 = 30;
const TOP: i32 = 110;
const BOTTOM: i32 = 60;

const RX: RGBColor = RGBColor(30, 90, 200);
const RX_LIGHT: RGBColor = RGBColor(175, 200, 240);
const TX: RGBColor = RGBColor(215, 115, 20);
const TX_LIGHT: RGBColor = RGBColor(245, 210, 170);
const GAP: RGBColor = RGBColor(210, 30, 30);
const MARK: RGBColor = RGBColor(90, 90, 90);

/// Draws the peer's receive and send rates (per sampling window, light; moving average, dark)
/// with the longest receive gap shaded, to a PNG of WIDTH × HEIGHT at `path` (written beside
/// it and renamed, so a reader never sees a partial image). Returns the run's numbers.
pub fn plot_throughput(run: &SampleRun, o: &ThroughputPlot, path: &Path) -> Result<ThroughputSummary, TimelineError> {
    let summary = summarize(run, o.count, o.msg_size);
    if run.samples.len() < 2 {
        return Err(TimelineError::Plot(format!("{} sample(s): nothing to plot", run.samples.len())));
    }
    let io = |e| TimelineError::Io { path: path.display().to_string(), source: e };
    crate::atomic_file::replace_png(path, io, |tmp| draw(run, o, &summary, tmp))?;
    Ok(summary)
}

/// Maps (seconds since the first sample, MB/s) to pixels, clamping to the plot area so spikes
/// above the y range run along its top edge instead of over the labels.
struct Scale {
    xs: (f64, f64),
    ymax: f64,
    x0: i32,
    x1: i32,
    y0: i32,
    y1: i32,
}

impl Scale {
    fn x(&self, s: f64) -> i32 {
        let r = (s - self.xs.0) / (self.xs.1 - self.xs.0);
        (self.x0 as f64 + r * f64::from(self.x1 - self.x0)).round().clamp(f64::from(self.x0), f64::from(self.x1)) as i32
    }
    fn y(&self, v: f64) -> i32 {
        let r = (v / self.ymax).clamp(0.0, 1.0);
        (self.y1 as f64 - r * f64::from(self.y1 - self.y0)).round() as i32
    }
}

fn draw(run: &SampleRun, o: &ThroughputPlot, summary: &ThroughputSummary, tmp: &Path) -> Result<(), TimelineError> {
    let origin = summary.origin_ns;
    let rel = |t: u64| t.saturating_sub(origin) as f64 / 1e9;
    let xs = match o.x_range_s {
        Some((a, b)) if b > a => (a.max(0.0), b),
        _ => (0.0, summary.duration_s.max(1e-3)),
    };
    let in_range = |t: u64| (xs.0..=xs.1).contains(&rel(t));
    let raw = window_rates(&run.samples, o.count, o.msg_size);
    let smooth = smoothed_rates(&run.samples, o.count, o.msg_size, o.smooth_ns);

    // The y range follows the moving average only: the raw rate of a window shorter than the
    // kernel's counter refresh (or after a late sample) swings between 0 and several times the
    // real rate; those dots run along the top edge instead of squashing the averages.
    let smooth_max = smooth.iter().filter(|r| in_range(r.t_ns)).map(|r| r.rx_mb_s.max(r.tx_mb_s)).fold(0.0, f64::max);
    let top = (smooth_max * 1.2).max(1.0);
    let ystep = tick_step_ms(top);
    let ymax = (top / ystep).ceil() * ystep;
    let sc = Scale { xs, ymax, x0: LEFT, x1: WIDTH as i32 - RIGHT, y0: TOP, y1: HEIGHT as i32 - BOTTOM };

    let root: Area<'_> = BitMapBackend::new(tmp, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let line = |pts: Vec<(i32, i32)>, c: RGBColor| root.draw(&PathElement::new(pts, c.stroke_width(1))).map_err(plot_err);

    // Header: title, what was sampled, legend.
    // A title too long for the large font gets the small one rather than being cut.
    let title_scale = if text_width(&o.title, 2) <= WIDTH as i32 - 24 { 2 } else { 1 };
    draw_text(&root, 12, 10 + 4 * (2 - title_scale), &o.title, title_scale, INK)?;
    let gap_text = match summary.rx_gap {
        Some(g) => format!("longest receive gap {:.1} ms (+/- {:.1})", g.duration_ns as f64 / 1e6, g.resolution_ns as f64 / 1e6),
        None => "no receive gap (fewer than two bursts of packets)".into(),
    };
    let sub = format!(
        "{} samples of {} every {} us (median {} us, {} overruns); {gap_text}",
        summary.samples,
        run.device,
        run.interval_ns / 1000,
        summary.median_interval_ns / 1000,
        summary.overruns
    );
    draw_text(&root, 12, 36, &sub, 1, INK)?;
    let mut lx = 12;
    let smooth_ms = o.smooth_ns as f64 / 1e6;
    for (c, label) in [
        (RX, format!("received, {smooth_ms:.0} ms average")),
        (TX, format!("sent, {smooth_ms:.0} ms average")),
        (RX_LIGHT, "received, per sample".to_string()),
        (TX_LIGHT, "sent, per sample".to_string()),
    ] {
        root.draw(&Rectangle::new([(lx, 56), (lx + 18, 64)], c.filled())).map_err(plot_err)?;
        draw_text(&root, lx + 24, 56, &label, 1, INK)?;
        lx += 24 + text_width(&label, 1) + 24;
    }
    let ylabel = format!("MB/s = count x {} B / time (from {}; MB = 2^20 B)", o.msg_size, o.count.describe());
    draw_text(&root, 12, 80, &ylabel, 1, INK)?;

    // Grid and axes.
    let mut k = 0u32;
    while f64::from(k) * ystep <= ymax * 1.000_001 {
        let v = f64::from(k) * ystep;
        let y = sc.y(v);
        line(vec![(sc.x0, y), (sc.x1, y)], GRID)?;
        let l = tick_label(v, ystep);
        draw_text(&root, sc.x0 - 6 - text_width(&l, 1), y - CELL / 2, &l, 1, INK)?;
        k += 1;
    }
    let xstep = tick_step_ms(xs.1 - xs.0);
    let mut v = (xs.0 / xstep).ceil() * xstep;
    while v <= xs.1 * 1.000_001 {
        let x = sc.x(v);
        line(vec![(x, sc.y0), (x, sc.y1)], GRID)?;
        line(vec![(x, sc.y1), (x, sc.y1 + 5)], INK)?;
        let l = tick_label(v, xstep);
        draw_text(&root, x - text_width(&l, 1) / 2, sc.y1 + 9, &l, 1, INK)?;
        v += xstep;
    }
    line(vec![(sc.x0, sc.y0), (sc.x0, sc.y1), (sc.x1, sc.y1)], INK)?;
    let xlabel = "seconds since the first sample";
    draw_text(&root, (sc.x0 + sc.x1 - text_width(xlabel, 1)) / 2, sc.y1 + 26, xlabel, 1, INK)?;

    // The gaps under the lines: the time without a message (lighter; it contains the time
    // without any packet, since ACKs and NAKs can still arrive when data does not), then the
    // time without any packet.
    let visible = |g: &Gap| rel(g.end_ns) >= xs.0 && rel(g.start_ns) <= xs.1;
    if let Some(g) = summary.rx_message_gap.filter(visible) {
        let (a, b) = (sc.x(rel(g.start_ns)), sc.x(rel(g.end_ns)));
        root.draw(&Rectangle::new([(a, sc.y0), (b.max(a + 2), sc.y1)], GAP.mix(0.07).filled())).map_err(plot_err)?;
    }
    if let Some(g) = summary.rx_gap.filter(visible) {
        let (a, b) = (sc.x(rel(g.start_ns)), sc.x(rel(g.end_ns)));
        let b = b.max(a + 2);
        root.draw(&Rectangle::new([(a, sc.y0), (b, sc.y1)], GAP.mix(0.18).filled())).map_err(plot_err)?;
        line(vec![(a, sc.y0), (a, sc.y1)], GAP)?;
        line(vec![(b, sc.y0), (b, sc.y1)], GAP)?;
    }

    // Raw windows as dots (light): as lines, windows that alternate between nothing and twice
    // the rate (the counter refresh) would fill the whole area. The averages as lines over them.
    let series = |rates: &[Rate], pick: fn(&Rate) -> f64| -> Vec<(i32, i32)> {
        rates.iter().filter(|r| in_range(r.t_ns)).map(|r| (sc.x(rel(r.t_ns)), sc.y(pick(r)))).collect()
    };
    for (pick, c) in [((|r: &Rate| r.tx_mb_s) as fn(&Rate) -> f64, TX_LIGHT), (|r: &Rate| r.rx_mb_s, RX_LIGHT)] {
        let mut pts = series(&raw, pick);
        // Many windows share a pixel column: one dot per distinct pixel is enough.
        pts.sort_unstable();
        pts.dedup();
        for (x, y) in pts {
            root.draw(&Rectangle::new([(x, y - 1), (x + 1, y)], c.filled())).map_err(plot_err)?;
        }
    }
    for (pick, c) in [((|r: &Rate| r.tx_mb_s) as fn(&Rate) -> f64, TX), (|r: &Rate| r.rx_mb_s, RX)] {
        let pts = series(&smooth, pick);
        if pts.len() >= 2 {
            line(pts, c)?;
        }
    }

    // Labels last, on white, so the lines cannot hide them.
    let boxed = |x: i32, y: i32, text: &str, c: RGBColor| -> Result<(), TimelineError> {
        let w = text_width(text, 1);
        root.draw(&Rectangle::new([(x - 2, y - 2), (x + w + 2, y + CELL + 2)], WHITE.filled())).map_err(plot_err)?;
        draw_text(&root, x, y, text, 1, c)
    };
    for (i, (g, what)) in [(summary.rx_gap, "no packet"), (summary.rx_message_gap, "no message")].into_iter().enumerate() {
        let Some(g) = g.filter(visible) else { continue };
        let (a, b) = (sc.x(rel(g.start_ns)), sc.x(rel(g.end_ns)).max(sc.x(rel(g.start_ns)) + 2));
        let label = format!("{what} received: {:.1} ms", g.duration_ns as f64 / 1e6);
        let w = text_width(&label, 1);
        let lx = if b + 6 + w <= sc.x1 { b + 6 } else { (a - 6 - w).max(sc.x0 + 2) };
        boxed(lx, sc.y0 + 6 + 13 * i as i32, &label, GAP)?;
    }

    // Marks: dashed lines, labels stacked so neighbours do not overwrite each other.
    for (i, m) in o.marks.iter().enumerate() {
        let s = m.at_ms / 1e3;
        if !(xs.0..=xs.1).contains(&s) {
            continue;
        }
        let x = sc.x(s);
        let mut y = sc.y0;
        while y < sc.y1 {
            line(vec![(x, y), (x, (y + 6).min(sc.y1))], MARK)?;
            y += 10;
        }
        let w = text_width(&m.label, 1);
        let lx = if x + 4 + w <= sc.x1 { x + 4 } else { x - 4 - w };
        boxed(lx, sc.y0 + 36 + 13 * (i as i32 % 4), &m.label, MARK)?;
    }

    root.present().map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{interval_stats, Stop};

    /// 2 s sampled every 2 ms; the peer receives and sends 2 messages per ms, each with an ACK
    /// (so 4 packets per ms), except for `pause` (ms from, ms to) where nothing moves; idle for
    /// the first and last 100 ms.
    fn series(pause: (u64, u64)) -> Vec<Sample> {
        let mut s = vec![];
        let mut c = 0u64;
        for i in 0..=1000u64 {
            let t_ms = i * 2;
            if i > 0 && t_ms > 100 && t_ms <= 1900 && !(t_ms > pause.0 && t_ms <= pause.1) {
                c += 4;
            }
            s.push(Sample { t_ns: 5_000_000_000 + t_ms * 1_000_000, rcvd_pkts: 2 * c, sent_pkts: 2 * c, rdma_recvs: c, rdma_sends: c });
        }
        s
    }

    fn run_of(samples: Vec<Sample>) -> SampleRun {
        SampleRun {
            device: "rxe0".into(),
            port: 1,
            clock: "CLOCK_MONOTONIC".into(),
            interval_ns: 2_000_000,
            counter_lifespan_ms: Some(0),
            achieved: interval_stats(&samples),
            overruns: 0,
            missed_periods: 0,
            stop: Stop::Duration,
            samples,
        }
    }

    #[test]
    fn longest_gap_is_between_increases_not_at_the_ends() {
        let s = series((1000, 1300));
        let g = longest_gap(&s, |x| x.rcvd_pkts).unwrap();
        // Last increase seen at 1000 ms, the next at 1302 ms.
        assert_eq!(g.start_ns, 5_000_000_000 + 1_000_000_000);
        assert_eq!(g.end_ns, 5_000_000_000 + 1_302_000_000);
        assert_eq!(g.duration_ns, 302_000_000);
        assert_eq!(g.resolution_ns, 2_000_000);
        // Idle time before the first and after the last packet is no gap.
        let idle_ends = series((0, 0));
        assert_eq!(longest_gap(&idle_ends, |x| x.rcvd_pkts).unwrap().duration_ns, 2_000_000);
    }

    #[test]
    fn longest_gap_of_hand_made_counts() {
        let s: Vec<Sample> = [0u64, 0, 5, 10, 10, 10, 10, 15, 20, 20, 25, 25, 25]
            .iter()
            .enumerate()
            .map(|(i, &c)| Sample { t_ns: i as u64 * 10, rcvd_pkts: c, ..Default::default() })
            .collect();
        let g = longest_gap(&s, |x| x.rcvd_pkts).unwrap();
        assert_eq!((g.start_ns, g.end_ns, g.duration_ns), (30, 70, 40));
        assert_eq!(longest_gap(&s[..4], |x| x.rcvd_pkts).unwrap().duration_ns, 10);
        assert_eq!(longest_gap(&s[..3], |x| x.rcvd_pkts), None, "one increase has no gap");
        assert_eq!(longest_gap(&[], |x| x.rcvd_pkts), None);
    }

    #[test]
    fn rates_from_message_and_packet_counts() {
        let s = series((1000, 1300));
        // 2 packets per ms of 4096 B = 8192000 B/s.
        let want = 4.0 * 4096.0 / 0.002 / MB;
        let raw = window_rates(&s, Count::Messages, 4096);
        assert_eq!(raw.len(), 1000);
        assert!((raw[300].rx_mb_s - want).abs() < 1e-9);
        assert!((raw[300].tx_mb_s - want).abs() < 1e-9);
        // Packets count the ACKs as well.
        let pk = window_rates(&s, Count::Packets, 4096);
        assert!((pk[300].rx_mb_s - 2.0 * want).abs() < 1e-9);
        let sm = smoothed_rates(&s, Count::Messages, 4096, 50_000_000);
        let at = |ms: u64| sm.iter().find(|r| r.t_ns == 5_000_000_000 + ms * 1_000_000).unwrap();
        assert!((at(600).rx_mb_s - want).abs() < 1e-9, "steady part: {}", at(600).rx_mb_s);
        assert_eq!(at(1150).rx_mb_s, 0.0, "middle of the pause");
        assert!((at(1000).rx_mb_s - want / 2.0).abs() < want * 0.05, "half a window of traffic: {}", at(1000).rx_mb_s);
        let sum = summarize(&run_of(s), Count::Messages, 4096);
        assert_eq!(sum.rx_gap.unwrap().duration_ns, 302_000_000);
        assert_eq!(sum.rx_message_gap.unwrap().duration_ns, 302_000_000);
        assert_eq!(sum.rx_gap_start_s, Some(1.0));
        assert!((sum.mean_rx_mb_s - want * 0.75).abs() < want * 0.01, "1.5 s of traffic in 2 s: {}", sum.mean_rx_mb_s);
        assert!((sum.duration_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn marks_parse() {
        assert_eq!("1234.5:freeze".parse::<Mark>().unwrap(), Mark { at_ms: 1234.5, label: "freeze".into() });
        assert_eq!("10:a:b".parse::<Mark>().unwrap().label, "a:b");
        assert!("freeze".parse::<Mark>().is_err());
        assert!("x:freeze".parse::<Mark>().is_err());
    }

    fn png_size(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&b[12..16], b"IHDR");
        (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
    }

    #[test]
    fn renders_a_synthetic_series_whole_and_zoomed() {
        let d = tempfile::tempdir().unwrap();
        let run = run_of(series((1000, 1300)));
        let mut o = ThroughputPlot::new("peer throughput (synthetic)");
        o.marks = vec!["1000:freeze".parse().unwrap(), "1300:resume".parse().unwrap()];
        let whole = d.path().join("t.png");
        let sum = plot_throughput(&run, &o, &whole).unwrap();
        assert_eq!(sum.rx_gap.unwrap().duration_ns, 302_000_000);
        assert_eq!(png_size(&whole), (WIDTH, HEIGHT));
        o.x_range_s = Some((0.8, 1.5));
        let zoom = d.path().join("z.png");
        plot_throughput(&run, &o, &zoom).unwrap();
        assert_eq!(png_size(&zoom), (WIDTH, HEIGHT));
        assert_ne!(std::fs::read(&whole).unwrap(), std::fs::read(&zoom).unwrap());
        // Nothing but the two images: the temporary files were renamed.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn refuses_to_plot_nothing() {
        let d = tempfile::tempdir().unwrap();
        let run = run_of(vec![Sample::default()]);
        let e = plot_throughput(&run, &ThroughputPlot::new("x"), &d.path().join("t.png")).unwrap_err();
        assert!(e.to_string().contains("1 sample(s)"), "{e}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
