//! The SVG charts of a benchmark report: cost per operation, and the scaling
//! curves.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use wyvern_abi::bench::{Cpus, spec};
use wyvern_tests::bench::Figure;

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

fn label(f: &Figure) -> String {
    format!(
        "{} ({} CPU{})",
        f.name,
        f.cpus,
        if f.cpus == 1 { "" } else { "s" }
    )
}

/// One bar of the cost chart: a Wyvern figure, or Linux's beside it.
struct Bar<'a> {
    label: String,
    fig: &'a Figure,
    linux: bool,
    text: String,
}

/// Horizontal bars of the median cost per operation of every figure (whiskers
/// from min to max), on a log scale. `beside[i]`, when there is one, is
/// Linux's figure for `figs[i]`: its bar goes under Wyvern's, with the ratio.
pub fn cost(
    path: &Path,
    title: &str,
    unit: &str,
    figs: &[&Figure],
    beside: &[Option<&Figure>],
) -> Result<()> {
    let mut bars = Vec::new();
    for (i, &f) in figs.iter().enumerate() {
        bars.push(Bar {
            label: label(f),
            fig: f,
            linux: false,
            text: format!("  {:.0}", f.median),
        });
        if let Some(&Some(l)) = beside.get(i) {
            bars.push(Bar {
                label: "Linux".into(),
                fig: l,
                linux: true,
                text: format!(
                    "  {:.0} (Linux / Wyvern {:.2}x)",
                    l.median,
                    l.median / f.median
                ),
            });
        }
    }
    let with_linux = bars.iter().any(|b| b.linux);
    let n = bars.len().max(1);
    let root = SVGBackend::new(path, (1000, 110 + 26 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let hi = bars.iter().map(|b| b.fig.max).fold(10.0, f64::max) * 3.0;
    let lo = bars
        .iter()
        .map(|b| b.fig.min)
        .fold(f64::INFINITY, f64::min)
        .clamp(1.0, hi)
        / 3.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(240)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n as i32 - 1).into_segmented())
        .map_err(err)?;
    // Row 0 is at the bottom: list the first figure at the top.
    let row = |i: usize| (n - 1 - i) as i32;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(r) => usize::try_from(n as i32 - 1 - *r)
                .ok()
                .and_then(|i| bars.get(i))
                .map(|b| b.label.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc(format!(
            "{unit} per operation (log scale; bar: median, line: min to max){}",
            if with_linux {
                "; blue: Wyvern, orange: Linux"
            } else {
                ""
            }
        ))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let mut bar = Rectangle::new(
                [
                    (lo, SegmentValue::Exact(row(i))),
                    (b.fig.median, SegmentValue::Exact(row(i) + 1)),
                ],
                if b.linux {
                    RGBColor(255, 127, 14).mix(0.6).filled()
                } else {
                    BLUE.mix(0.55).filled()
                },
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            PathElement::new(
                vec![
                    (b.fig.min, SegmentValue::CenterOf(row(i))),
                    (b.fig.max, SegmentValue::CenterOf(row(i))),
                ],
                BLACK.stroke_width(2),
            )
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                b.text.clone(),
                (b.fig.max, SegmentValue::CenterOf(row(i))),
                ("sans-serif", 13),
            )
        }))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One scaling series: a benchmark's (CPUs, median) points.
struct Series {
    name: String,
    points: Vec<(u32, f64)>,
    /// Linux's line beside Wyvern's of the same name (same colour, thin,
    /// hollow points).
    linux: bool,
}

fn scaling_series(figs: &[Figure], linux: bool) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for f in figs {
        if spec(&f.name).is_none_or(|s| s.cpus != Cpus::Scaling) {
            continue;
        }
        match out.iter_mut().find(|s| s.name == f.name) {
            Some(s) => s.points.push((f.cpus, f.median)),
            None => out.push(Series {
                name: f.name.clone(),
                points: vec![(f.cpus, f.median)],
                linux,
            }),
        }
    }
    out
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    series: &[Series],
    caption: &str,
    y_desc: &str,
    value: impl Fn(&Series, f64) -> f64,
) -> Result<()> {
    let max_cpus = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(2);
    let x_hi = f64::from(max_cpus).log2();
    let y_hi = series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(_, y)| value(s, y)))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.2..x_hi + 0.2, 0.0..y_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(x_hi as usize + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 && *x >= 0.0 {
                format!("{}", 1u32 << x.round() as u32)
            } else {
                String::new()
            }
        })
        .x_desc("CPUs")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    let wyvern: Vec<&str> = series
        .iter()
        .filter(|s| !s.linux)
        .map(|s| s.name.as_str())
        .collect();
    for (i, s) in series.iter().enumerate() {
        // Linux's line takes the colour of Wyvern's of the same benchmark.
        let at = wyvern.iter().position(|&n| n == s.name).unwrap_or(i);
        let color = COLORS[at % COLORS.len()];
        let (width, label) = if s.linux {
            (1, format!("Linux {}", s.name))
        } else {
            (2, s.name.clone())
        };
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|&(k, y)| (f64::from(k).log2(), value(s, y)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(width))
            });
        let style = if s.linux {
            color.stroke_width(1)
        } else {
            color.filled()
        };
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, style)))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The scaling curves: cost per operation against CPUs (left) and the same
/// relative to one CPU (right). In instructions, flat at 1 is perfect scaling;
/// in wall-clock time (`elapsed`), 1/k on k CPUs would be. `linux`, when
/// not empty, adds Linux's curves beside Wyvern's. Returns false when the
/// report has no scaling benchmark.
pub fn scaling(
    path: &Path,
    title: &str,
    unit: &str,
    elapsed: bool,
    figs: &[Figure],
    linux: &[Figure],
) -> Result<bool> {
    let mut series = scaling_series(figs, false);
    series.extend(scaling_series(linux, true));
    if series.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(err)?;
    let halves = root.split_evenly((1, 2));
    panel(
        &halves[0],
        &series,
        if elapsed {
            "elapsed time per operation, all CPUs together"
        } else {
            "total cost per operation, all CPUs"
        },
        &format!("{unit} per operation"),
        |_, y| y,
    )?;
    panel(
        &halves[1],
        &series,
        if elapsed {
            "relative to 1 CPU (1/k = perfect scaling)"
        } else {
            "relative to 1 CPU (flat = perfect scaling)"
        },
        "cost / cost on 1 CPU",
        |s, y| y / s.points.first().map_or(1.0, |p| p.1).max(f64::MIN_POSITIVE),
    )?;
    root.present().map_err(err)?;
    Ok(true)
}
