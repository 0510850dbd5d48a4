//! A Gantt-like PNG: one row per (node, phase kind), a ms axis, the downtime shaded.

use std::path::Path;

use plotters::prelude::*;

use super::text::{draw_text, plot_err, text_width, Area, CELL, GRID, INK};
use super::{Edge, Phase, Summary, Timeline, TimelineError};

const WIDTH: u32 = 1200;
/// Bounds of the row-label column: labels longer than the widest are cut short.
const LEFT_MIN: i32 = 160;
const LEFT_MAX: i32 = 420;
const LABEL_SCALE: i32 = 2;
const RIGHT_MARGIN: i32 = 40;
const TOP: i32 = 70;
const ROW_H: i32 = 30;
const BAR_H: i32 = 20;
const BOTTOM: i32 = 50;

const DOWNTIME: RGBColor = RGBColor(210, 30, 30);

fn color(phase: &Phase, alternate: bool) -> RGBColor {
    let c = match phase {
        Phase::Startup => RGBColor(190, 190, 190),
        Phase::Check => RGBColor(140, 140, 140),
        Phase::PrecopyRound(_) => RGBColor(60, 110, 200),
        Phase::Freeze => RGBColor(230, 140, 30),
        Phase::FinalDump => RGBColor(140, 80, 180),
        Phase::Transfer => RGBColor(30, 150, 150),
        Phase::Restore => RGBColor(60, 160, 70),
        Phase::Resume => RGBColor(20, 100, 40),
        Phase::Rollback => RGBColor(190, 40, 40),
        Phase::Cleanup => RGBColor(140, 100, 60),
        Phase::Other(_) => RGBColor(100, 120, 140),
    };
    // Consecutive pre-copy rounds share a row; alternating shades keep them apart.
    if alternate {
        RGBColor(c.0 / 2 + 64, c.1 / 2 + 64, c.2 / 2 + 64)
    } else {
        c
    }
}

/// Maps reference-clock ns to x pixels.
struct XScale {
    origin_ns: u64,
    span_ns: u64,
    x0: i32,
    x1: i32,
}

impl XScale {
    fn x(&self, t_ns: u64) -> i32 {
        let rel = t_ns.saturating_sub(self.origin_ns) as f64 / self.span_ns as f64;
        self.x0 + (rel * f64::from(self.x1 - self.x0)).round() as i32
    }
}

/// A tick step of 1, 2 or 5 × 10^k (ms here; any unit for the throughput chart) giving at most
/// about 10 ticks.
pub(super) fn tick_step_ms(span_ms: f64) -> f64 {
    let raw = (span_ms / 10.0).max(1e-6);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

pub(super) fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10()).ceil() as usize };
    format!("{v:.decimals$}")
}

/// Draws the timeline to a PNG at `path` (any name: it is written to a temporary `.png` beside
/// it and renamed, so a reader never sees a partial image).
///
/// Labels use a built-in bitmap font, so no system fonts are needed. Instant events are short
/// dark ticks on their row.
pub fn plot_png(timeline: &Timeline, summary: &Summary, path: &Path) -> Result<(), TimelineError> {
    let rows = rows(timeline, summary);
    let height = (TOP + ROW_H * rows.len().max(1) as i32 + BOTTOM) as u32;
    let io = |e| TimelineError::Io { path: path.display().to_string(), source: e };
    crate::atomic_file::replace_png(path, io, |tmp| draw(timeline, summary, &rows, tmp, height))
}

/// Row keys, (node, phase kind), in order of first appearance.
fn rows(timeline: &Timeline, summary: &Summary) -> Vec<(String, String)> {
    let mut keys: Vec<(u64, String, String)> = vec![];
    let mut add = |t: u64, node: &str, kind: &str| {
        if !keys.iter().any(|(_, n, k)| n == node && k == kind) {
            keys.push((t, node.to_string(), kind.to_string()));
        }
    };
    for s in &summary.spans {
        add(s.start_ns, &s.node, s.phase.kind());
    }
    for te in timeline.events.iter().filter(|te| te.event.edge == Edge::Instant) {
        add(te.t_ns, &te.event.node, te.event.phase.kind());
    }
    keys.sort_by_key(|k| k.0);
    keys.into_iter().map(|(_, n, k)| (n, k)).collect()
}

fn draw(timeline: &Timeline, summary: &Summary, rows: &[(String, String)], tmp: &Path, height: u32) -> Result<(), TimelineError> {
    let root: Area<'_> = BitMapBackend::new(tmp, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let labels: Vec<String> = rows.iter().map(|(node, kind)| format!("{node} {kind}")).collect();
    let left = (labels.iter().map(|l| text_width(l, LABEL_SCALE)).max().unwrap_or(0) + 24).clamp(LEFT_MIN, LEFT_MAX);
    let xs = XScale { origin_ns: summary.origin_ns, span_ns: summary.total_ns.max(1), x0: left, x1: WIDTH as i32 - RIGHT_MARGIN };
    let rows_bottom = TOP + ROW_H * rows.len() as i32;
    let row_of = |node: &str, kind: &str| rows.iter().position(|(n, k)| n == node && k == kind).map(|i| TOP + ROW_H * i as i32);
    let line = |pts: Vec<(i32, i32)>, c: RGBColor| root.draw(&PathElement::new(pts, c.stroke_width(1))).map_err(plot_err);
    let rect = |x0: i32, y0: i32, x1: i32, y1: i32, c: RGBColor| root.draw(&Rectangle::new([(x0, y0), (x1, y1)], c.filled())).map_err(plot_err);

    // Title: the numbers the chart is about.
    let title = format!(
        "downtime {} ms +/- {}    total {} ms    clock of {}",
        super::summary::ms(summary.downtime_ns),
        super::summary::uncertainty(summary.downtime_uncertainty_ns, "us"),
        super::summary::ms(summary.total_ns),
        summary.reference_node
    );
    draw_text(&root, 12, 12, &title, 2, INK)?;

    // Axis and grid.
    let span_ms = summary.total_ns as f64 / 1e6;
    let step = tick_step_ms(span_ms);
    let axis_y = rows_bottom + 6;
    line(vec![(xs.x0, axis_y), (xs.x1, axis_y)], INK)?;
    let mut k = 0u32;
    loop {
        let v = step * f64::from(k);
        if v > span_ms * 1.000_001 {
            break;
        }
        let x = xs.x(summary.origin_ns + (v * 1e6).round() as u64);
        line(vec![(x, TOP - 4), (x, rows_bottom)], GRID)?;
        line(vec![(x, axis_y), (x, axis_y + 5)], INK)?;
        let label = tick_label(v, step);
        draw_text(&root, x - text_width(&label, 1) / 2, axis_y + 9, &label, 1, INK)?;
        k += 1;
    }
    draw_text(&root, xs.x1 - text_width("ms", 1) / 2, axis_y + 24, "ms", 1, INK)?;

    // Row labels and separators.
    for (i, label) in labels.iter().enumerate() {
        let y = TOP + ROW_H * i as i32;
        let max_chars = ((left - 20) / (CELL * LABEL_SCALE)) as usize;
        let label = if label.chars().count() > max_chars { label.chars().take(max_chars - 1).collect::<String>() + "~" } else { label.clone() };
        draw_text(&root, 10, y + (ROW_H - CELL * LABEL_SCALE) / 2, &label, LABEL_SCALE, INK)?;
    }

    // The downtime under the bars, so the bars stay readable.
    for s in &summary.stops {
        let (x0, x1) = (xs.x(s.start_ns), xs.x(s.end_ns).max(xs.x(s.start_ns) + 1));
        root.draw(&Rectangle::new([(x0, TOP - 8), (x1, rows_bottom)], DOWNTIME.mix(0.15).filled())).map_err(plot_err)?;
        line(vec![(x0, TOP - 8), (x0, rows_bottom)], DOWNTIME)?;
        line(vec![(x1, TOP - 8), (x1, rows_bottom)], DOWNTIME)?;
        let label = format!("downtime {} ms", super::summary::ms(s.duration_ns));
        let lx = x0.min(WIDTH as i32 - 4 - text_width(&label, 1)).max(left);
        draw_text(&root, lx, TOP - 20, &label, 1, DOWNTIME)?;
    }

    // Bars, with their duration (or round number) inside when it fits.
    let mut alternate = false;
    for (i, s) in summary.spans.iter().enumerate() {
        let Some(y) = row_of(&s.node, s.phase.kind()) else { continue };
        if let Phase::PrecopyRound(_) = s.phase {
            alternate = !alternate;
        }
        let (x0, x1) = (xs.x(s.start_ns), xs.x(s.end_ns).max(xs.x(s.start_ns) + 2));
        let top = y + (ROW_H - BAR_H) / 2;
        rect(x0, top, x1, top + BAR_H, color(&s.phase, alternate && matches!(s.phase, Phase::PrecopyRound(_))))?;
        let dur = super::summary::ms(s.duration_ns);
        let label = match s.phase {
            Phase::PrecopyRound(n) if text_width(&format!("#{n} {dur}"), 1) + 6 > x1 - x0 => format!("#{n}"),
            Phase::PrecopyRound(n) => format!("#{n} {dur}"),
            _ => dur,
        };
        let w = text_width(&label, 1);
        let ty = top + (BAR_H - CELL) / 2;
        if w + 6 <= x1 - x0 {
            draw_text(&root, x0 + 3, ty, &label, 1, WHITE)?;
        } else {
            // Beside the bar, if nothing later on this row is in the way.
            let later = summary.spans[i + 1..].iter().any(|o| o.node == s.node && o.phase.kind() == s.phase.kind());
            if !later && x1 + 4 + w <= WIDTH as i32 - 4 {
                draw_text(&root, x1 + 4, ty, &label, 1, INK)?;
            }
        }
    }

    for te in timeline.events.iter().filter(|te| te.event.edge == Edge::Instant) {
        let Some(y) = row_of(&te.event.node, te.event.phase.kind()) else { continue };
        let x = xs.x(te.t_ns);
        rect(x - 1, y + 3, x + 1, y + ROW_H - 3, INK)?;
    }

    root.present().map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks() {
        assert_eq!(tick_step_ms(1000.0), 100.0);
        assert_eq!(tick_step_ms(850.0), 100.0);
        assert_eq!(tick_step_ms(120.0), 20.0);
        assert_eq!(tick_step_ms(3.0), 0.5);
        assert_eq!(tick_label(0.5, 0.5), "0.5");
        assert_eq!(tick_label(200.0, 100.0), "200");
    }
}
