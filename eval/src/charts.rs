//! Charts with plotters, each written as PNG and SVG: line charts (one line per setting) and
//! grouped bar charts. Text uses DejaVu Sans, embedded (no system fonts needed).

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{EvalError, Result};

/// Chart size in pixels (PNG) and SVG units.
pub const SIZE: (u32, u32) = (960, 600);

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        // The embedded font is valid; a failure would only lose the text, never the chart.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn err<E: std::fmt::Debug>(what: &Path) -> impl Fn(E) -> EvalError + '_ {
    move |e| EvalError::Chart(format!("cannot draw {}: {e:?}", what.display()))
}

/// A line chart description.
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    /// `(legend, points)` per line.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Draw a dashed horizontal reference line at this y (e.g. AR = 1×).
    pub reference: Option<(String, f64)>,
}

fn bounds(values: impl Iterator<Item = f64>, pad_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if pad_zero {
        lo = lo.min(0.0);
    }
    if (hi - lo).abs() < 1e-12 {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.08;
    (if pad_zero && lo >= 0.0 { lo } else { lo - pad }, hi + pad)
}

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    c: &LineChart,
    path: &Path,
) -> Result<()> {
    root.fill(&WHITE).map_err(err(path))?;
    let (x0, x1) = bounds(c.series.iter().flat_map(|s| s.1.iter().map(|p| p.0)), false);
    let (y0, y1) = bounds(
        c.series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .chain(c.reference.iter().map(|r| r.1)),
        true,
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err(path))?;
    chart
        .configure_mesh()
        .x_desc(c.x_label)
        .y_desc(c.y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(err(path))?;
    if let Some((name, y)) = &c.reference {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, *y), (x1, *y)],
                8,
                6,
                BLACK.stroke_width(2),
            ))
            .map_err(err(path))?
            .label(name.clone())
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], BLACK.stroke_width(2)));
    }
    for (i, (name, pts)) in c.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(3)))
            .map_err(err(path))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(err(path))?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))?;
    Ok(())
}

/// A grouped bar chart: one group per label on the x axis, one bar per series in each group.
pub struct BarChart<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub groups: Vec<String>,
    /// `(legend, one value per group)`.
    pub series: Vec<(String, Vec<f64>)>,
}

fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    c: &BarChart,
    path: &Path,
) -> Result<()> {
    root.fill(&WHITE).map_err(err(path))?;
    let n = c.groups.len().max(1);
    let (_, y1) = bounds(c.series.iter().flat_map(|s| s.1.iter().copied()), true);
    let mut chart = ChartBuilder::on(&root)
        .caption(c.title, ("sans-serif", 26))
        .margin(18)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..y1)
        .map_err(err(path))?;
    let groups = c.groups.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                groups.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(c.y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(err(path))?;
    let k = c.series.len().max(1) as f64;
    let width = 0.8 / k;
    for (j, (name, values)) in c.series.iter().enumerate() {
        let color = PALETTE[j % PALETTE.len()];
        let left = -0.4 + j as f64 * width;
        chart
            .draw_series(values.iter().enumerate().map(|(g, &v)| {
                let x = g as f64 + left;
                Rectangle::new([(x, 0.0), (x + width * 0.92, v)], color.filled())
            }))
            .map_err(err(path))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err(path))?;
    root.present().map_err(err(path))?;
    Ok(())
}

/// Writes `<stem>.png` and `<stem>.svg`; returns the PNG path.
pub fn write_line_chart(stem: &Path, c: &LineChart) -> Result<PathBuf> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw_lines(BitMapBackend::new(&png, SIZE).into_drawing_area(), c, &png)?;
    draw_lines(SVGBackend::new(&svg, SIZE).into_drawing_area(), c, &svg)?;
    Ok(png)
}

/// Writes `<stem>.png` and `<stem>.svg`; returns the PNG path.
pub fn write_bar_chart(stem: &Path, c: &BarChart) -> Result<PathBuf> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    draw_bars(BitMapBackend::new(&png, SIZE).into_drawing_area(), c, &png)?;
    draw_bars(SVGBackend::new(&svg, SIZE).into_drawing_area(), c, &svg)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Width and height from a PNG's IHDR chunk (after checking the signature).
    fn png_size(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&b[12..16], b"IHDR");
        (
            u32::from_be_bytes(b[16..20].try_into().unwrap()),
            u32::from_be_bytes(b[20..24].try_into().unwrap()),
        )
    }

    #[test]
    fn charts_are_valid_png_and_svg_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let png = write_line_chart(
            &dir.path().join("speedup"),
            &LineChart {
                title: "Speedup vs generated length",
                x_label: "generated tokens",
                y_label: "speedup (×)",
                series: vec![
                    ("tree auto".into(), vec![(1024.0, 1.2), (2048.0, 1.4)]),
                    ("tree 1,3,3,3".into(), vec![(1024.0, 0.6), (2048.0, 0.7)]),
                ],
                reference: Some(("AR".into(), 1.0)),
            },
        )
        .unwrap();
        assert_eq!(png_size(&png), SIZE);
        let svg = std::fs::read_to_string(png.with_extension("svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("Speedup vs generated length"));
        let png = write_bar_chart(
            &dir.path().join("distinct"),
            &BarChart {
                title: "Distinct-n",
                y_label: "unique / total n-grams",
                groups: vec!["D-1".into(), "D-2".into()],
                series: vec![
                    ("penalty".into(), vec![0.4, 0.7]),
                    ("none".into(), vec![0.1, 0.2]),
                ],
            },
        )
        .unwrap();
        assert_eq!(png_size(&png), SIZE);
        // A PNG with text and lines is far larger than a blank one.
        assert!(std::fs::metadata(&png).unwrap().len() > 5_000);
    }
}
