//! Plots to PNG with plotters: loss curves, heat maps, scatter plots.
//!
//! Plotters draws into an RGB buffer, which is encoded as PNG and written
//! atomically. Text needs a font given as bytes (plotters' `ab_glyph` backend
//! reads no system fonts), so DejaVu Sans is compiled in from
//! `assets/fonts/` (licence beside it) and registered once as `sans-serif`.

use std::path::Path;
use std::sync::Once;

use ndarray::ArrayRef2;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::atomic::write_atomic;
use super::image_grid::encode_png;
use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;

/// A named line: `(x, y)` points, e.g. `(step, loss)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from points.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points }
    }

    /// A series from values at x = 0, 1, 2, ...
    pub fn from_values(name: impl Into<String>, values: &[f32]) -> Self {
        Series::new(name, values.iter().enumerate().map(|(i, &v)| (i as f64, v as f64)).collect())
    }
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in, so failing to parse it is a build defect, not bad input.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("assets/fonts/DejaVuSans.ttf is not a valid font");
        }
    });
}

fn plot_error(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Msg(format!("plot {}: {e}", path.display()))
}

/// Runs `draw` on a white `w x h` canvas and writes the result as a PNG.
fn render_png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(|e| plot_error(path)(&e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| Error::Msg("plot buffer has the wrong size".into()))?;
    write_atomic(path, &encode_png(&img)?)
}

/// `(min, max)` of the finite values, widened when they are all equal.
fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return None;
    }
    if lo == hi {
        return Some((lo - 0.5, hi + 0.5));
    }
    Some((lo, hi))
}

/// Draws one or more series as lines with a legend (e.g. train and test loss
/// against step). With `log_y`, y is plotted as `log10(y)` (points `<= 0` are skipped).
pub fn plot_lines(path: impl AsRef<Path>, title: &str, x_label: &str, y_label: &str, series: &[Series], log_y: bool) -> Result<()> {
    let path = path.as_ref();
    let transform = |y: f64| if log_y { if y > 0.0 { y.log10() } else { f64::NAN } } else { y };
    let lines: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().map(|&(x, y)| (x, transform(y))).filter(|(x, y)| x.is_finite() && y.is_finite()).collect())
        .collect();
    let xs = finite_range(lines.iter().flatten().map(|p| p.0));
    let ys = finite_range(lines.iter().flatten().map(|p| p.1));
    let (Some((x0, x1)), Some((y0, y1))) = (xs, ys) else {
        return Err(Error::Config(format!("plot {}: no finite points to draw in {} series", path.display(), series.len())));
    };
    let margin = 0.05 * (y1 - y0);
    let y_desc = if log_y { format!("log10({y_label})") } else { y_label.to_string() };
    let err = plot_error(path);
    render_png(path, (WIDTH, HEIGHT), |root| {
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, (y0 - margin)..(y1 + margin))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_desc.as_str())
            .x_label_formatter(&tick_label)
            .y_label_formatter(&tick_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (s, points)) in series.iter().zip(lines).enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        Ok(())
    })
}

/// An axis tick: `500` rather than `500.0`, `0.25` rather than `0.250000001`.
fn tick_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{}", (v * 1e4).round() / 1e4)
    }
}

/// Viridis-like colour map: `t` in `[0, 1]` from dark purple to yellow.
pub fn viridis(t: f32) -> RGBColor {
    const STOPS: [(f32, f32, f32); 5] =
        [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) } * (STOPS.len() - 1) as f32;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f32, y: f32| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Draws `matrix` `(rows, cols)` as coloured cells (viridis, min to max) with a
/// colour bar; e.g. CLIP's image-text similarity matrix or a grid of predictions
/// over a 2-D input plane. Row and column labels are optional (empty slices:
/// indices are shown); cells of 30 px or more show their value.
pub fn plot_heatmap(path: impl AsRef<Path>, title: &str, matrix: &ArrayRef2<f32>, row_labels: &[String], col_labels: &[String]) -> Result<()> {
    let path = path.as_ref();
    let (rows, cols) = matrix.dim();
    if rows == 0 || cols == 0 {
        return Err(Error::shape("plot_heatmap", format!("matrix is {rows}x{cols}, expected at least 1x1")));
    }
    let Some((lo, hi)) = finite_range(matrix.iter().map(|&v| v as f64)) else {
        return Err(Error::Config(format!("plot {}: the matrix has no finite value", path.display())));
    };
    let label = |labels: &[String], i: usize| labels.get(i).cloned().unwrap_or_else(|| i.to_string());
    let row_names: Vec<String> = (0..rows).map(|i| label(row_labels, i)).collect();
    let longest_row = row_names.iter().map(|s| s.chars().count()).max().unwrap_or(1).min(32);
    let (left, top, right, bottom) = (16 + 8 * longest_row as i32, 50, 110, 40);
    let cell = ((WIDTH as i32 - left - right) / cols as i32).min((HEIGHT as i32 + 200 - top - bottom) / rows as i32).clamp(2, 80);
    let (w, h) = ((left + right + cell * cols as i32) as u32, (top + bottom + cell * rows as i32) as u32);
    let err = plot_error(path);
    render_png(path, (w.max(320), h), |root| {
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let font = ("sans-serif", 13).into_font().color(&BLACK);
        root.draw(&Text::new(title.to_string(), (10, 12), ("sans-serif", 20).into_font().color(&BLACK))).map_err(|e| err(&e))?;
        let t = |v: f32| ((v as f64 - lo) / (hi - lo)) as f32;
        for ((i, j), &v) in matrix.indexed_iter() {
            let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
            let colour = viridis(t(v));
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], colour.filled())).map_err(|e| err(&e))?;
            if cell >= 30 {
                let ink = if t(v) > 0.6 { &BLACK } else { &WHITE };
                let style = ("sans-serif", 11).into_font().color(ink).pos(Pos::new(HPos::Center, VPos::Center));
                root.draw(&Text::new(format!("{v:.2}"), (x + cell / 2, y + cell / 2), style)).map_err(|e| err(&e))?;
            }
        }
        let right_aligned = font.pos(Pos::new(HPos::Right, VPos::Center));
        for (i, name) in row_names.iter().enumerate() {
            let name: String = name.chars().take(32).collect();
            root.draw(&Text::new(name, (left - 6, top + i as i32 * cell + cell / 2), right_aligned.clone())).map_err(|e| err(&e))?;
        }
        let centred = font.pos(Pos::new(HPos::Center, VPos::Top));
        let max_chars = (cell / 8).max(1) as usize;
        for j in 0..cols {
            let name: String = label(col_labels, j).chars().take(max_chars).collect();
            root.draw(&Text::new(name, (left + j as i32 * cell + cell / 2, top + rows as i32 * cell + 6), centred.clone()))
                .map_err(|e| err(&e))?;
        }
        // Colour bar: max at the top, min at the bottom.
        let (bx, bh) = (left + cols as i32 * cell + 20, rows as i32 * cell);
        for k in 0..bh {
            let colour = viridis(1.0 - k as f32 / (bh - 1).max(1) as f32);
            root.draw(&Rectangle::new([(bx, top + k), (bx + 16, top + k + 1)], colour.filled())).map_err(|e| err(&e))?;
        }
        let side = font.pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(format!("{hi:.3}"), (bx + 20, top + 6), side.clone())).map_err(|e| err(&e))?;
        root.draw(&Text::new(format!("{lo:.3}"), (bx + 20, top + bh - 6), side)).map_err(|e| err(&e))?;
        Ok(())
    })
}

/// Draws 2-D points coloured by group (e.g. embeddings projected to 2-D, by
/// class), with a legend from `group_names` (indexed by group).
pub fn plot_scatter(path: impl AsRef<Path>, title: &str, points: &[(f64, f64)], groups: &[usize], group_names: &[String]) -> Result<()> {
    let path = path.as_ref();
    if points.len() != groups.len() {
        return Err(Error::shape("plot_scatter", format!("{} points but {} group indices", points.len(), groups.len())));
    }
    let (Some((x0, x1)), Some((y0, y1))) = (finite_range(points.iter().map(|p| p.0)), finite_range(points.iter().map(|p| p.1))) else {
        return Err(Error::Config(format!("plot {}: no finite points to draw", path.display())));
    };
    let (mx, my) = (0.05 * (x1 - x0), 0.05 * (y1 - y0));
    let err = plot_error(path);
    render_png(path, (WIDTH, HEIGHT + 100), |root| {
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d((x0 - mx)..(x1 + mx), (y0 - my)..(y1 + my))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick_label)
            .y_label_formatter(&tick_label)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        let n_groups = groups.iter().max().map_or(0, |g| g + 1).max(group_names.len());
        for g in 0..n_groups {
            let colour = Palette99::pick(g).to_rgba();
            let members = points.iter().zip(groups).filter(|(_, &k)| k == g).map(|(&p, _)| p);
            let name = group_names.get(g).cloned().unwrap_or_else(|| g.to_string());
            chart
                .draw_series(members.map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(|e| err(&e))?;
        Ok(())
    })
}
