//! Charts to SVG with plotters' SVG backend only. Text is written as SVG
//! `<text>` in a generic `sans-serif` family and laid out with plotters'
//! built-in estimate, so no system font is read: the viewer's browser
//! picks the font.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::error::LabError;
use crate::experiment::{Chart, GuideAxis, Legend, SeriesStyle};

/// Width and height of every chart, in pixels.
pub const SIZE: (u32, u32) = (860, 500);

/// Colour-blind-safe series colours (Okabe–Ito).
const SERIES: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// Colours of reference lines.
const GUIDES: [RGBColor; 3] = [
    RGBColor(80, 80, 80),
    RGBColor(170, 51, 119),
    RGBColor(34, 136, 51),
];

/// Renders `chart` as an SVG document.
pub fn render_svg(chart: &Chart) -> Result<String, LabError> {
    let err = |message: String| LabError::Chart {
        id: chart.id.clone(),
        message,
    };
    let (xr, yr) = ranges(chart);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let r = match (chart.x.log, chart.y.log) {
            (false, false) => draw(&root, chart, xr.0..xr.1, yr.0..yr.1, xr, yr),
            (true, false) => draw(&root, chart, (xr.0..xr.1).log_scale(), yr.0..yr.1, xr, yr),
            (false, true) => draw(&root, chart, xr.0..xr.1, (yr.0..yr.1).log_scale(), xr, yr),
            (true, true) => draw(
                &root,
                chart,
                (xr.0..xr.1).log_scale(),
                (yr.0..yr.1).log_scale(),
                xr,
                yr,
            ),
        };
        r.map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Axis ranges covering every point and guide, padded; positive on log
/// axes (non-positive values are left out there).
fn ranges(chart: &Chart) -> ((f64, f64), (f64, f64)) {
    let usable = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
    let mut xs: Vec<f64> = Vec::new();
    let mut ys: Vec<f64> = Vec::new();
    for s in &chart.series {
        for p in &s.points {
            if usable(p[0], chart.x.log) && usable(p[1], chart.y.log) {
                xs.push(p[0]);
                ys.push(p[1]);
            }
        }
    }
    for g in &chart.guides {
        match g.axis {
            GuideAxis::X if usable(g.value, chart.x.log) => xs.push(g.value),
            GuideAxis::Y if usable(g.value, chart.y.log) => ys.push(g.value),
            _ => {}
        }
    }
    let x = if chart.x.categories.is_empty() {
        span(&xs, chart.x.log)
    } else {
        (0.5, chart.x.categories.len() as f64 + 0.5)
    };
    (x, span(&ys, chart.y.log))
}

/// The name of category position `v`, or nothing between positions.
fn category(names: &[String], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() > 1e-6 || i < 1.0 {
        return String::new();
    }
    names.get(i as usize - 1).cloned().unwrap_or_default()
}

fn span(values: &[f64], log: bool) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        // Whole decades, so the axis always has labelled powers of ten.
        let lo = 10f64.powf(lo.log10().floor());
        let hi = 10f64.powf(hi.log10().ceil());
        if hi / lo < 10.0 - 1e-9 {
            (lo, lo * 10.0)
        } else {
            (lo, hi)
        }
    } else if (hi - lo).abs() < f64::EPSILON {
        (lo - 1.0, hi + 1.0)
    } else {
        let pad = (hi - lo) * 0.05;
        let lo = if lo >= 0.0 {
            (lo - pad).max(0.0)
        } else {
            lo - pad
        };
        (lo, hi + pad)
    }
}

/// Compact tick labels: `0.25`, `1.5`, `120`, `2000`.
fn label(v: &f64) -> String {
    let v = *v;
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn draw<X, Y>(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &Chart,
    x: X,
    y: Y,
    xr: (f64, f64),
    yr: (f64, f64),
) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let names = &chart.x.categories;
    let x_label = |v: &f64| {
        if names.is_empty() {
            label(v)
        } else {
            category(names, *v)
        }
    };
    // Key points at every half step, so that each whole position gets one.
    let x_ticks = if names.is_empty() {
        10
    } else {
        names.len() * 2 + 1
    };
    let dot = if names.is_empty() { 3 } else { 6 };
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(|x| e(&x))?;
    ctx.configure_mesh()
        .x_desc(chart.x.label.as_str())
        .y_desc(chart.y.label.as_str())
        .x_labels(x_ticks)
        .x_label_formatter(&x_label)
        .y_label_formatter(&label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(|x| e(&x))?;
    let keep = |p: &[f64; 2]| {
        p[0].is_finite()
            && p[1].is_finite()
            && (!chart.x.log || p[0] > 0.0)
            && (!chart.y.log || p[1] > 0.0)
    };
    for (i, s) in chart.series.iter().enumerate() {
        let color = SERIES[i % SERIES.len()];
        let points = s.points.iter().filter(|p| keep(p)).map(|p| (p[0], p[1]));
        match s.style {
            SeriesStyle::Line => {
                ctx.draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(|x| e(&x))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
            SeriesStyle::Points => {
                ctx.draw_series(points.map(|p| Circle::new(p, dot, color.mix(0.65).filled())))
                    .map_err(|x| e(&x))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
            }
        }
    }
    for (i, g) in chart.guides.iter().enumerate() {
        let color = GUIDES[i % GUIDES.len()];
        let line = match g.axis {
            GuideAxis::X => vec![(g.value, yr.0), (g.value, yr.1)],
            GuideAxis::Y => vec![(xr.0, g.value), (xr.1, g.value)],
        };
        ctx.draw_series(DashedLineSeries::new(line, 8, 5, color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(g.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    ctx.configure_series_labels()
        .position(match chart.legend {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        })
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::experiment::{Axis, Guide, Series};

    #[test]
    fn renders_every_axis_kind_without_fonts() {
        for (xlog, ylog) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut chart = Chart::new(
                "t",
                "A test chart",
                Axis {
                    label: "x (ms)".into(),
                    log: xlog,
                    categories: Vec::new(),
                },
                Axis {
                    label: "y".into(),
                    log: ylog,
                    categories: Vec::new(),
                },
            )
            .with_series(Series::line(
                "line",
                vec![[0.5, 1.0], [2.0, 50.0], [40.0, 100.0]],
            ))
            .with_series(Series::points("dots", vec![[1.0, 0.0], [3.0, 7.0]]))
            .with_guide(Guide::y("timeout", 20.0))
            .with_guide(Guide::x("start", 1.5));
            let svg = render_svg(&chart).unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
            assert!(svg.contains("A test chart") && svg.contains("timeout"));
            chart.series.clear();
            chart.guides.clear();
            assert!(render_svg(&chart).unwrap().starts_with("<svg"));
        }
        let grouped = Chart::new(
            "g",
            "Grouped",
            Axis::categories("condition", &["healthy", "slow", "down"]),
            Axis::log("p50 (ms)"),
        )
        .with_series(Series::points("a", vec![[0.9, 1.0], [1.9, 2000.0]]))
        .with_series(Series::points("b", vec![[1.1, 2.0], [3.1, 3.0]]));
        let svg = render_svg(&grouped).unwrap();
        assert!(svg.contains("healthy") && svg.contains("slow") && svg.contains("down"));
        assert_eq!(category(&grouped.x.categories, 2.0), "slow");
        assert_eq!(category(&grouped.x.categories, 2.5), "");
        assert_eq!(label(&2000.0), "2000");
        assert_eq!(label(&1.5), "1.5");
        assert_eq!(label(&0.25), "0.25");
        assert_eq!(label(&10.0), "10");
    }
}
