//! The load test's chart: latency and throughput against concurrency, as
//! SVG. Text goes into the SVG as `<text>` for the viewer to render, so no
//! font file is needed (plotters' naive font backend only estimates sizes).

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::LevelStats;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 480;

/// A linear f64 axis whose ticks are exactly the given points. plotters'
/// own `with_key_points` wrapper loses the label formatting that
/// `configure_mesh` needs, hence this small axis type.
struct TickedAxis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range.clone()).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

struct Series<'a> {
    label: &'a str,
    color: RGBColor,
    values: Vec<f64>,
}

/// Two panels side by side: avg and p95 latency, and audio seconds per
/// second, each against concurrency on a log2 axis labelled with the levels.
pub fn render(levels: &[LevelStats], title: &str) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 22))?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let x: Vec<u32> = levels.iter().map(|l| l.concurrency).collect();
        panel(
            &left,
            "Latency",
            "seconds",
            &x,
            &[
                Series { label: "avg", color: BLUE, values: levels.iter().map(|l| l.avg_latency_s).collect() },
                Series { label: "p95", color: RED, values: levels.iter().map(|l| l.p95_latency_s).collect() },
            ],
        )?;
        panel(
            &right,
            "Throughput",
            "audio seconds per second",
            &x,
            &[Series {
                label: "audio s/s",
                color: RGBColor(0, 140, 70),
                values: levels.iter().map(|l| l.audio_s_per_s).collect(),
            }],
        )?;
        root.present()?;
    }
    Ok(svg)
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    levels: &[u32],
    series: &[Series<'_>],
) -> anyhow::Result<()> {
    // Levels grow geometrically, so log2 spacing keeps 4..512 readable;
    // ticks sit exactly on the levels that were run.
    let xs: Vec<f64> = levels.iter().map(|&c| f64::from(c.max(1)).log2()).collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() { (lo - 0.5, hi + 0.5) } else { (0.0, 1.0) };
    let y_max = series.iter().flat_map(|s| s.values.iter().copied()).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };

    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 26))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(TickedAxis { range: lo..hi, ticks: xs.clone() }, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("concurrency")
        .y_desc(y_desc)
        .label_style(("sans-serif", 18))
        .axis_desc_style(("sans-serif", 20))
        .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
        .draw()?;
    for s in series {
        let points: Vec<(f64, f64)> = xs.iter().copied().zip(s.values.iter().copied()).collect();
        let color = s.color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 18))
        .draw()?;
    Ok(())
}
