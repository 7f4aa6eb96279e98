//! The PNG chart of the ratios: for each row compared with execnet, how many times better
//! execnet-rs is (execnet's time / ours, or our rate / execnet's), the target as a black
//! tick, parity as a grey line; green when the row's target is met, red when not. Text uses DejaVu Sans compiled into the binary, so no
//! system font is needed.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{num, Row};

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

const GREEN: RGBColor = RGBColor(46, 160, 67);
const RED: RGBColor = RGBColor(214, 39, 40);
const BLUE: RGBColor = RGBColor(66, 120, 200);
const GREY: RGBColor = RGBColor(150, 150, 150);

/// Draws the chart of the rows that have a ratio; `subtitle` says when and under what load.
/// Returns false, drawing nothing, when no row has one.
pub fn draw(path: &Path, rows: &[Row], subtitle: &str) -> Result<bool> {
    register_fonts();
    let bars: Vec<(&Row, f64)> = rows.iter().filter_map(|r| r.advantage().map(|a| (r, a))).collect();
    if bars.is_empty() {
        return Ok(false);
    }
    let n = bars.len();
    let xmax = bars
        .iter()
        .flat_map(|(r, a)| [*a, r.target_advantage().unwrap_or(0.0)])
        .fold(1.0f64, f64::max)
        * 1.35;
    let height = 150 + 46 * n as u32;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let (title_area, rest) = root.split_vertically(58);
    title_area
        .draw(&Text::new(
            "execnet-rs vs execnet: times better (bar), target (black tick)",
            (16, 8),
            ("sans-serif", 21).into_font().style(FontStyle::Bold).color(&BLACK),
        ))
        .map_err(e)?;
    title_area
        .draw(&Text::new(subtitle.to_string(), (16, 36), ("sans-serif", 14).into_font().color(&GREY)))
        .map_err(e)?;
    let mut chart = ChartBuilder::on(&rest)
        .margin_left(250)
        .margin_right(30)
        .margin_bottom(10)
        .x_label_area_size(40)
        .build_cartesian_2d(0f64..xmax, 0f64..n as f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_max_light_lines(1)
        .x_desc("times better than execnet (1 = same)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(e)?;
    // Row i is the band from top - i - 1 to top - i: the first row at the top.
    let top = n as f64;
    let band = |i: usize| (top - i as f64 - 0.82, top - i as f64 - 0.18);
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (r, a))| {
            let color = match r.met {
                Some(true) => GREEN,
                Some(false) => RED,
                None => BLUE,
            };
            let (lo, hi) = band(i);
            Rectangle::new([(0.0, lo), (*a, hi)], color.filled())
        }))
        .map_err(e)?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, (r, _))| {
            r.target_advantage().map(|t| {
                let (lo, hi) = band(i);
                PathElement::new(vec![(t, lo - 0.1), (t, hi + 0.1)], BLACK.stroke_width(3))
            })
        }))
        .map_err(e)?;
    chart
        .draw_series(std::iter::once(PathElement::new(vec![(1.0, 0.0), (1.0, top)], GREY.stroke_width(1))))
        .map_err(e)?;
    let value_style = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (r, a))| {
            let text = match (r.target_advantage(), r.met) {
                (Some(t), _) => format!("{}x (target {}x)", num(*a), num(t)),
                (None, Some(true)) => format!("{}x (absolute target {}: met)", num(*a), r.target_text),
                (None, Some(false)) => format!("{}x (absolute target {}: missed)", num(*a), r.target_text),
                (None, None) => format!("{}x", num(*a)),
            };
            // right of the bar and of the target tick, whichever is further
            let x = r.target_advantage().map_or(*a, |t| a.max(t));
            EmptyElement::at((x, top - i as f64 - 0.5)) + Text::new(text, (8, 0), value_style.clone())
        }))
        .map_err(e)?;
    // Row labels left of the plotting area, placed through the chart's own mapping (the
    // chart clips what it draws to its area, so they are drawn on the root).
    let label_style = ("sans-serif", 15).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, (r, _)) in bars.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, top - i as f64 - 0.5));
        root.draw(&Text::new(r.label.clone(), (x - 10, y), label_style.clone())).map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(true)
}
