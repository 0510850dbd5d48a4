//! A plain XY chart of a few named series (lines with point markers), for experiment sweeps:
//! downtime against memory size, against a dirty rate. `rdmig plot series` draws one from JSON.

use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::plot::{tick_label, tick_step_ms};
use super::text::{draw_text, plot_err, text_width, Area, CELL, GRID, INK};
use super::TimelineError;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 600;
const LEFT: i32 = 90;
const RIGHT: i32 = 30;
const TOP: i32 = 100;
const BOTTOM: i32 = 60;

/// Colours of the series, in order (then again).
const PALETTE: [RGBColor; 6] =
    [RGBColor(30, 90, 200), RGBColor(215, 115, 20), RGBColor(40, 150, 60), RGBColor(190, 40, 40), RGBColor(120, 70, 170), RGBColor(90, 90, 90)];

/// One named series of (x, y) points; drawn in the order given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The chart as `rdmig plot series --data FILE` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesChart {
    pub title: String,
    #[serde(default)]
    pub subtitle: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

struct Scale {
    xs: (f64, f64),
    ys: (f64, f64),
    x0: i32,
    x1: i32,
    y0: i32,
    y1: i32,
}

impl Scale {
    fn x(&self, v: f64) -> i32 {
        let r = (v - self.xs.0) / (self.xs.1 - self.xs.0);
        (f64::from(self.x0) + r * f64::from(self.x1 - self.x0)).round() as i32
    }
    fn y(&self, v: f64) -> i32 {
        let r = (v - self.ys.0) / (self.ys.1 - self.ys.0);
        (f64::from(self.y1) - r * f64::from(self.y1 - self.y0)).round() as i32
    }
}

/// The range of `vals` widened to whole ticks, starting at zero when all are positive (a
/// downtime axis that does not start at zero exaggerates differences).
fn axis(vals: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64, f64) {
    let (mut lo, mut hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if from_zero && lo > 0.0 {
        lo = 0.0;
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    let step = tick_step_ms(hi - lo);
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

/// Draws `chart` to a PNG at `path` (written beside it and renamed).
pub fn plot_series(chart: &SeriesChart, path: &Path) -> Result<(), TimelineError> {
    let finite = |s: &Series| s.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).count();
    if chart.series.iter().map(finite).sum::<usize>() == 0 {
        return Err(TimelineError::Plot("no finite point in any series: nothing to plot".into()));
    }
    let io = |e| TimelineError::Io { path: path.display().to_string(), source: e };
    crate::atomic_file::replace_png(path, io, |tmp| draw(chart, tmp))
}

fn draw(chart: &SeriesChart, tmp: &Path) -> Result<(), TimelineError> {
    let pts = || chart.series.iter().flat_map(|s| s.points.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (xlo, xhi, xstep) = axis(pts().map(|p| p.0), false);
    let (ylo, yhi, ystep) = axis(pts().map(|p| p.1), true);
    let sc = Scale { xs: (xlo, xhi), ys: (ylo, yhi), x0: LEFT, x1: WIDTH as i32 - RIGHT, y0: TOP, y1: HEIGHT as i32 - BOTTOM };

    let root: Area<'_> = BitMapBackend::new(tmp, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let line = |pts: Vec<(i32, i32)>, c: RGBColor, w: u32| root.draw(&PathElement::new(pts, c.stroke_width(w))).map_err(plot_err);

    let title_scale = if text_width(&chart.title, 2) <= WIDTH as i32 - 24 { 2 } else { 1 };
    draw_text(&root, 12, 10 + 4 * (2 - title_scale), &chart.title, title_scale, INK)?;
    draw_text(&root, 12, 36, &chart.subtitle, 1, INK)?;
    let mut lx = 12;
    let mut ly = 56;
    for (i, s) in chart.series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let w = 24 + text_width(&s.name, 1) + 24;
        if lx + w > WIDTH as i32 - 12 && lx > 12 {
            lx = 12;
            ly += 14;
        }
        root.draw(&Rectangle::new([(lx, ly), (lx + 18, ly + 8)], c.filled())).map_err(plot_err)?;
        draw_text(&root, lx + 24, ly, &s.name, 1, INK)?;
        lx += w;
    }
    draw_text(&root, 12, TOP - 16, &chart.y_label, 1, INK)?;

    let mut k = 0u32;
    while ylo + f64::from(k) * ystep <= yhi * 1.000_001 + 1e-12 {
        let v = ylo + f64::from(k) * ystep;
        let y = sc.y(v);
        line(vec![(sc.x0, y), (sc.x1, y)], GRID, 1)?;
        let l = tick_label(v, ystep);
        draw_text(&root, sc.x0 - 6 - text_width(&l, 1), y - CELL / 2, &l, 1, INK)?;
        k += 1;
    }
    let mut k = 0u32;
    while xlo + f64::from(k) * xstep <= xhi * 1.000_001 + 1e-12 {
        let v = xlo + f64::from(k) * xstep;
        let x = sc.x(v);
        line(vec![(x, sc.y0), (x, sc.y1)], GRID, 1)?;
        line(vec![(x, sc.y1), (x, sc.y1 + 5)], INK, 1)?;
        let l = tick_label(v, xstep);
        draw_text(&root, x - text_width(&l, 1) / 2, sc.y1 + 9, &l, 1, INK)?;
        k += 1;
    }
    line(vec![(sc.x0, sc.y0), (sc.x0, sc.y1), (sc.x1, sc.y1)], INK, 1)?;
    draw_text(&root, (sc.x0 + sc.x1 - text_width(&chart.x_label, 1)) / 2, sc.y1 + 26, &chart.x_label, 1, INK)?;

    for (i, s) in chart.series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let mut p: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let px: Vec<(i32, i32)> = p.iter().map(|&(x, y)| (sc.x(x), sc.y(y))).collect();
        if px.len() >= 2 {
            line(px.clone(), c, 2)?;
        }
        for (x, y) in px {
            root.draw(&Rectangle::new([(x - 3, y - 3), (x + 3, y + 3)], c.filled())).map_err(plot_err)?;
        }
    }
    root.present().map_err(plot_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> SeriesChart {
        SeriesChart {
            title: "downtime against memory (synthetic)".into(),
            subtitle: "two series".into(),
            x_label: "MiB".into(),
            y_label: "ms".into(),
            series: vec![
                Series { name: "ours".into(), points: vec![(64.0, 900.0), (256.0, 1100.0), (512.0, 1500.0)] },
                Series { name: "baseline".into(), points: vec![(512.0, 9000.0), (64.0, 2000.0), (256.0, f64::NAN)] },
            ],
        }
    }

    #[test]
    fn renders_and_reads_back_from_json() {
        let d = tempfile::tempdir().unwrap();
        // (JSON has no NaN: a chart read back has finite points only, so take the first series.)
        let mut finite = chart();
        finite.series.truncate(1);
        let c: SeriesChart = serde_json::from_str(&serde_json::to_string(&finite).unwrap()).unwrap();
        assert_eq!(c, finite);
        let p = d.path().join("s.png");
        plot_series(&chart(), &p).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), WIDTH);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_single_point_still_gets_axes() {
        let (lo, hi, step) = axis([5.0].into_iter(), false);
        assert!(lo <= 5.0 && hi > lo && step > 0.0);
        let (lo, _, _) = axis([300.0, 900.0].into_iter(), true);
        assert_eq!(lo, 0.0);
    }

    #[test]
    fn refuses_to_plot_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut c = chart();
        for s in &mut c.series {
            s.points.clear();
        }
        assert!(plot_series(&c, &d.path().join("s.png")).is_err());
    }
}
