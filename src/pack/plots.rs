//! PNG plots with embedded fonts, so text renders on machines with no system fonts: DejaVu
//! Sans, and for text it has no glyph for (a class named in Chinese, Japanese or Korean)
//! WenQuanYi Micro Hei, which covers Latin and CJK alike.

use std::path::Path;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{Result, TrainerError};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
static CJK_FONT: &[u8] = include_bytes!("../../assets/fonts/WenQuanYiMicroHei.ttf");
const CJK_FAMILY: &str = "wenquanyi-micro-hei";

fn ensure_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The fonts are compiled in; registering them cannot meet a missing file.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
        let _ = register_font(CJK_FAMILY, FontStyle::Normal, CJK_FONT);
    });
}

/// The font family that draws every character of `text`: DejaVu Sans when it can (the plots
/// of Latin class names stay as they were), else WenQuanYi Micro Hei.
pub fn family_for(text: &str) -> &'static str {
    use ab_glyph::Font;
    static DEJAVU: std::sync::OnceLock<Option<ab_glyph::FontRef<'static>>> =
        std::sync::OnceLock::new();
    let covered = DEJAVU
        .get_or_init(|| ab_glyph::FontRef::try_from_slice(FONT).ok())
        .as_ref()
        .is_some_and(|font| {
            text.chars()
                .all(|c| c.is_whitespace() || font.glyph_id(c).0 != 0)
        });
    if covered { FAMILY } else { CJK_FAMILY }
}

/// Whether the font of `family_for(text)` has a glyph for every character of `text`: no
/// missing-glyph box is drawn.
pub fn every_glyph_drawn(text: &str) -> bool {
    use ab_glyph::Font;
    let bytes = if family_for(text) == FAMILY {
        FONT
    } else {
        CJK_FONT
    };
    ab_glyph::FontRef::try_from_slice(bytes).is_ok_and(|font| {
        text.chars()
            .all(|c| c.is_whitespace() || font.glyph_id(c).0 != 0)
    })
}

/// One line of a chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Lines with the same colour index share a colour.
    pub colour: usize,
}

/// A line chart.
#[derive(Clone, Debug)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Plot x on a log2 axis (x values must be positive).
    pub log2_x: bool,
    /// Points to mark with a circle and a label.
    pub marks: Vec<((f64, f64), String)>,
    /// Put the legend in the lower right corner instead of the upper right.
    pub legend_lower_right: bool,
    /// Names of x = 0, 1, 2, ...: when given, the x axis shows them instead of numbers.
    pub x_categories: Vec<String>,
}

impl LineChart {
    /// A chart with no series yet.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> LineChart {
        LineChart {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            series: Vec::new(),
            log2_x: false,
            marks: Vec::new(),
            legend_lower_right: false,
            x_categories: Vec::new(),
        }
    }
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> TrainerError {
    TrainerError::io("drawing", path, std::io::Error::other(e.to_string()))
}

fn colour(index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    PALETTE[index % PALETTE.len()]
}

/// Draws `chart` to a PNG file.
pub fn draw_line_chart(path: &Path, chart: &LineChart) -> Result<()> {
    draw_stacked(path, std::slice::from_ref(chart))
}

/// Draws charts one above the other into one PNG file.
pub fn draw_stacked(path: &Path, charts: &[LineChart]) -> Result<()> {
    ensure_font();
    let err = |e: &dyn std::fmt::Display| plot_error(path, e);
    let height = 620 * charts.len().max(1) as u32;
    let root = BitMapBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    for (area, chart) in root
        .split_evenly((charts.len().max(1), 1))
        .iter()
        .zip(charts)
    {
        draw_on(area, chart).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult<T> = std::result::Result<T, String>;

fn draw_on(root: &Area, chart: &LineChart) -> DrawResult<()> {
    let err = |e: &dyn std::fmt::Display| e.to_string();

    let points = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .chain(chart.marks.iter().map(|m| m.0));
    let xs = points.clone().map(|p| p.0);
    let ys = points.map(|p| p.1);
    let finite = |v: &f64| v.is_finite();
    let transform = |x: f64| if chart.log2_x { x.max(1e-9).log2() } else { x };
    let categories = chart.x_categories.clone();
    let (x_min, x_max) = if categories.is_empty() {
        bounds(xs.filter(finite).map(transform))
    } else {
        (-0.5, categories.len() as f64 - 0.5)
    };
    let (y_min, y_max) = bounds(ys.filter(finite));
    let y_pad = (y_max - y_min) * 0.08;

    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, (FAMILY, 26))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_min..x_max, (y_min - y_pad)..(y_max + y_pad))
        .map_err(|e| err(&e))?;
    let log2_x = chart.log2_x;
    let x_formatter = move |x: &f64| x_label(*x, &categories, log2_x);
    let tiny = (y_max - y_min).abs() < 1e-2 && y_max.abs() < 1e-2;
    let y_formatter = move |y: &f64| {
        if tiny { format!("{y:.1e}") } else { human(*y) }
    };
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .x_label_formatter(&x_formatter)
        .y_label_formatter(&y_formatter)
        .draw()
        .map_err(|e| err(&e))?;

    for series in &chart.series {
        let style = colour(series.colour).stroke_width(2);
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|p| (transform(p.0), p.1))
            .collect();
        let legend_style = style;
        let anno = if series.dashed {
            ctx.draw_series(DashedLineSeries::new(points, 8, 5, style))
                .map_err(|e| err(&e))?
        } else {
            ctx.draw_series(LineSeries::new(points, style))
                .map_err(|e| err(&e))?
        };
        let dashed = series.dashed;
        anno.label(&series.label).legend(move |(x, y)| {
            let end = if dashed { x + 10 } else { x + 24 };
            PathElement::new(vec![(x, y), (end, y)], legend_style)
        });
    }
    for ((x, y), text) in &chart.marks {
        draw_mark(&mut ctx, (transform(*x), *y), text, (x_min + x_max) / 2.0)?;
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 16))
        .position(if chart.legend_lower_right {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

/// The x axis' label at `x`: the category there (categorical charts), the batch size (log2
/// charts), a whole number, or two decimals.
fn x_label(x: f64, categories: &[String], log2_x: bool) -> String {
    if !categories.is_empty() {
        let i = x.round();
        match categories.get(i as usize) {
            Some(name) if (x - i).abs() < 1e-6 && i >= 0.0 => name.clone(),
            _ => String::new(),
        }
    } else if log2_x {
        format!("{}", 2f64.powf(x).round())
    } else if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round())
    } else {
        format!("{x:.2}")
    }
}

type Ctx<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A red circle at `at` and its label; a label right of `x_mid` is written leftwards, so it
/// stays inside the chart.
fn draw_mark(ctx: &mut Ctx, at: (f64, f64), text: &str, x_mid: f64) -> DrawResult<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let err = |e: &dyn std::fmt::Display| e.to_string();
    ctx.draw_series(std::iter::once(Circle::new(at, 7, RED.stroke_width(3))))
        .map_err(|e| err(&e))?;
    let right_half = at.0 > x_mid;
    let anchor = Pos::new(
        if right_half { HPos::Right } else { HPos::Left },
        VPos::Bottom,
    );
    let label = if right_half {
        format!("{text}  ")
    } else {
        format!("  {text}")
    };
    ctx.draw_series(std::iter::once(Text::new(
        label,
        at,
        TextStyle::from((FAMILY, 16).into_font())
            .color(&RED)
            .pos(anchor),
    )))
    .map_err(|e| err(&e))?;
    Ok(())
}

/// A labelled heatmap of a square count matrix (rows: actual, columns: predicted), drawn
/// cell by cell so that every label sits on its row or column.
pub fn draw_confusion(
    path: &Path,
    title: &str,
    classes: &[String],
    counts: &[Vec<usize>],
) -> Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    ensure_font();
    let err = |e: &dyn std::fmt::Display| plot_error(path, e);
    let n = classes.len().max(1) as i32;
    let (left, top, size) = (210, 80, 540);
    let cell = size / n;
    let root = BitMapBackend::new(path, (800, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let centred = |px: u32| {
        TextStyle::from((FAMILY, px).into_font()).pos(Pos::new(HPos::Center, VPos::Center))
    };
    root.draw(&Text::new(
        title.to_string(),
        (left + size / 2, 36),
        centred(24),
    ))
    .map_err(|e| err(&e))?;
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    for (row, values) in counts.iter().enumerate() {
        for (col, &count) in values.iter().enumerate() {
            let (x, y) = (left + col as i32 * cell, top + row as i32 * cell);
            let shade = count as f64 / max;
            let fill = RGBColor(
                (255.0 - 224.0 * shade) as u8,
                (255.0 - 136.0 * shade) as u8,
                (255.0 - 75.0 * shade) as u8,
            );
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                fill.filled(),
            ))
            .map_err(|e| err(&e))?;
            root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| err(&e))?;
            let text = if shade > 0.6 { WHITE } else { BLACK };
            root.draw(&Text::new(
                count.to_string(),
                (x + cell / 2, y + cell / 2),
                centred(30).color(&text),
            ))
            .map_err(|e| err(&e))?;
        }
    }
    for (i, name) in classes.iter().enumerate() {
        let middle = i as i32 * cell + cell / 2;
        let family = family_for(name);
        root.draw(&Text::new(
            name.clone(),
            (left - 10, top + middle),
            TextStyle::from((family, 16).into_font()).pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(|e| err(&e))?;
        root.draw(&Text::new(
            name.clone(),
            (left + middle, top + size + 18),
            TextStyle::from((family, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(|e| err(&e))?;
    }
    root.draw(&Text::new(
        "predicted",
        (left + size / 2, top + size + 52),
        centred(18),
    ))
    .map_err(|e| err(&e))?;
    root.draw(&Text::new("actual", (40, top + size / 2), centred(18)))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A readable axis number: 12k, 3.5M, 0.250.
fn human(y: f64) -> String {
    let a = y.abs();
    if a == 0.0 {
        "0".to_string()
    } else if a >= 1e6 {
        format!("{:.1}M", y / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", y / 1e3)
    } else if a >= 100.0 {
        format!("{y:.0}")
    } else {
        format!("{y:.3}")
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1e-300) {
        let half = if hi == 0.0 { 0.5 } else { hi.abs() * 0.5 };
        return (lo - half, hi + half);
    }
    (lo, hi)
}

/// One picture of an image grid: its values (one `size` x `size` plane a channel,
/// row-major) and caption lines under it. One channel is drawn gray, scaled to its own value
/// range; three are drawn in colour, as values in [0, 1].
pub struct GridCell<'a> {
    pub pixels: std::borrow::Cow<'a, [f32]>,
    pub size: usize,
    pub channels: usize,
    pub caption: Vec<String>,
}

impl GridCell<'_> {
    /// The colour of pixel (`r`, `c`), given the cell's value range for gray.
    fn colour(&self, r: usize, c: usize, (lo, span): (f32, f32)) -> RGBColor {
        let n = self.size.max(1);
        let at = |channel: usize| {
            self.pixels
                .get(channel * n * n + r * n + c)
                .copied()
                .unwrap_or(0.0)
        };
        if self.channels == 3 {
            let byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            return RGBColor(byte(at(0)), byte(at(1)), byte(at(2)));
        }
        let shade = (((at(0) - lo) / span) * 255.0).round().clamp(0.0, 255.0) as u8;
        RGBColor(shade, shade, shade)
    }
}

/// Draws images in a grid, five per row, each scaled to its own value range, with captions.
pub fn draw_image_grid(path: &Path, title: &str, cells: &[GridCell]) -> Result<()> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    ensure_font();
    let err = |e: &dyn std::fmt::Display| plot_error(path, e);
    let per_row = 5usize;
    let rows = cells.len().div_ceil(per_row).max(1);
    let (side, column, caption_height, margin, top) = (150i32, 230i32, 58i32, 20i32, 60i32);
    let width = per_row as i32 * column + margin;
    let height = top + rows as i32 * (side + caption_height + margin);
    let root = BitMapBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let centred =
        |px: u32| TextStyle::from((FAMILY, px).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(title.to_string(), (width / 2, 18), centred(22)))
        .map_err(|e| err(&e))?;
    for (i, cell) in cells.iter().enumerate() {
        let x0 = margin + (i % per_row) as i32 * column + (column - margin - side) / 2;
        let y0 = top + (i / per_row) as i32 * (side + caption_height + margin);
        let (lo, hi) = cell
            .pixels
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                (a.min(*v), b.max(*v))
            });
        let range = (lo, (hi - lo).max(1e-6));
        let n = cell.size.max(1) as i32;
        for r in 0..n {
            for c in 0..n {
                let (xa, ya) = (x0 + c * side / n, y0 + r * side / n);
                let (xb, yb) = (x0 + (c + 1) * side / n, y0 + (r + 1) * side / n);
                let colour = cell.colour(r as usize, c as usize, range);
                root.draw(&Rectangle::new([(xa, ya), (xb, yb)], colour.filled()))
                    .map_err(|e| err(&e))?;
            }
        }
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + side, y0 + side)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| err(&e))?;
        for (line, text) in cell.caption.iter().enumerate() {
            root.draw(&Text::new(
                text.clone(),
                (x0 + side / 2, y0 + side + 4 + line as i32 * 18),
                TextStyle::from((family_for(text), 14).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
