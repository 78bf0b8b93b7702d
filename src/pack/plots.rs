//! PNG plots with embedded fonts, so text renders on machines with no system fonts: DejaVu
//! Sans, and for text it has no glyph for (a class named in Chinese, Japanese or Korean)
//! WenQuanYi Micro Hei, which covers Latin and CJK alike.
//!
//! Laid out to stay readable at 10 classes with long names and 30 epochs: legends beside
//! the plot, never on the data; tick labels with as many digits as their spacing needs;
//! confusion-matrix column labels turned 90 degrees and every font fitted to its cell. All text
//! is drawn on [`Canvas`], which can record each text's box (a test checks that none
//! overlap).

use std::path::Path;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform, register_font};

use super::canvas::Canvas;
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

/// The width in pixels of `text` drawn at `px` in the font [`family_for`] picks for it (the
/// advance widths plotters lays it out with).
pub fn text_width(text: &str, px: f64) -> i32 {
    use ab_glyph::{Font, ScaleFont};
    let bytes = if family_for(text) == FAMILY {
        FONT
    } else {
        CJK_FONT
    };
    let Ok(font) = ab_glyph::FontRef::try_from_slice(bytes) else {
        return (text.chars().count() as f64 * px * 0.6).ceil() as i32;
    };
    let scaled = font.as_scaled(px as f32);
    let mut width = 0f32;
    let mut previous = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        width += scaled.h_advance(id);
        if let Some(p) = previous {
            width += scaled.kern(p, id);
        }
        previous = Some(id);
    }
    width.ceil() as i32
}

/// The largest font size from `largest` down to `smallest` at which `text` fits in `width`
/// pixels (`smallest` when none does).
fn fitting_size(text: &str, width: i32, largest: u32, smallest: u32) -> u32 {
    (smallest..=largest)
        .rev()
        .find(|&px| text_width(text, px as f64) <= width)
        .unwrap_or(smallest)
}

/// `text` cut to fit `width` pixels at `px`, ending in "..." when cut.
fn fit_text(text: &str, width: i32, px: f64) -> String {
    if text_width(text, px) <= width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    (1..chars.len())
        .rev()
        .map(|n| format!("{}...", chars[..n].iter().collect::<String>()))
        .find(|t| text_width(t, px) <= width)
        .unwrap_or_else(|| "...".to_string())
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
    /// Names of x = 0, 1, 2, ...: when given, the x axis shows them instead of numbers.
    pub x_categories: Vec<String>,
    /// The x axis counts whole things (epochs): its ticks fall on whole numbers only, and it
    /// reaches half a unit past the first and last point, so markers there are drawn whole.
    pub integer_x: bool,
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
            x_categories: Vec::new(),
            integer_x: false,
        }
    }

    /// A chart by epoch: x ticks on whole epochs only.
    pub fn by_epoch(title: &str, y_label: &str) -> LineChart {
        LineChart {
            integer_x: true,
            ..LineChart::new(title, "epoch", y_label)
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

/// The legend's font size and the widest a legend may be.
const LEGEND_PX: f64 = 15.0;
const LEGEND_MAX_WIDTH: i32 = 380;

/// The width of the legend column beside a chart: its longest label, the line sample and
/// margins (none without series).
fn legend_width(chart: &LineChart) -> i32 {
    chart
        .series
        .iter()
        .map(|s| text_width(&s.label, LEGEND_PX) + 60)
        .max()
        .map_or(0, |w| w.clamp(120, LEGEND_MAX_WIDTH))
}

/// Draws charts one above the other into one PNG file, each with its legend beside it.
pub fn draw_stacked(path: &Path, charts: &[LineChart]) -> Result<()> {
    ensure_font();
    let err = |e: &dyn std::fmt::Display| plot_error(path, e);
    let legend = charts.iter().map(legend_width).max().unwrap_or(0);
    let height = 620 * charts.len().max(1) as u32;
    let root = Canvas::new(path, ((1000 + legend) as u32, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    for (area, chart) in root
        .split_evenly((charts.len().max(1), 1))
        .iter()
        .zip(charts)
    {
        let (plot, beside) = area.split_horizontally(1000);
        draw_on(&plot, chart).map_err(|e| err(&e))?;
        draw_legend(&beside, chart).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<Canvas<'a>, plotters::coord::Shift>;
type DrawResult<T> = std::result::Result<T, String>;

/// The legend in its own column: a line sample (dashed where the series is) and the label of
/// each series, one a row, clear of the data.
fn draw_legend(area: &Area, chart: &LineChart) -> DrawResult<()> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let width = area.dim_in_pixel().0 as i32;
    for (i, series) in chart.series.iter().enumerate() {
        let y = 70 + i as i32 * 26;
        let style = colour(series.colour).stroke_width(2);
        let segments: Vec<(i32, i32)> = if series.dashed {
            vec![(4, 12), (18, 26)]
        } else {
            vec![(4, 26)]
        };
        for (a, b) in segments {
            area.draw(&PathElement::new(vec![(a, y), (b, y)], style))
                .map_err(|e| err(&e))?;
        }
        if has_markers(series) {
            area.draw(&Circle::new((15, y), 4, colour(series.colour).filled()))
                .map_err(|e| err(&e))?;
            if series.dashed {
                area.draw(&Circle::new((15, y), 2, WHITE.filled()))
                    .map_err(|e| err(&e))?;
            }
        }
        let text = fit_text(&series.label, width - 40, LEGEND_PX);
        area.draw(&Text::new(
            text,
            (34, y),
            TextStyle::from((family_for(&series.label), LEGEND_PX).into_font())
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(|e| err(&e))?;
    }
    Ok(())
}

fn draw_on(root: &Area, chart: &LineChart) -> DrawResult<()> {
    let err = |e: &dyn std::fmt::Display| e.to_string();

    let points = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .chain(chart.marks.iter().map(|m| m.0));
    let ys = points.clone().map(|p| p.1);
    let finite = |v: &f64| v.is_finite();
    let (x_min, x_max) = x_range(chart);
    let (y_min, y_max) = bounds(ys.filter(finite));
    let y_pad = (y_max - y_min) * 0.08;
    let (y_lo, y_hi) = (y_min - y_pad, y_max + y_pad);

    let mut ctx = ChartBuilder::on(root)
        .caption(fit_text(&chart.title, 960, 26.0), (FAMILY, 26))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(x_min..x_max, y_lo..y_hi)
        .map_err(|e| err(&e))?;
    let log2_x = chart.log2_x;
    let categories = chart.x_categories.clone();
    let x_ticks = match chart.integer_x {
        true => whole_ticks(x_min, x_max),
        false => X_LABELS,
    };
    let x_step = tick_step(x_min, x_max, x_ticks);
    let x_formatter = move |x: &f64| x_label(*x, &categories, log2_x, x_step);
    let y_formatter = tick_formatter(y_lo, y_hi, Y_LABELS);
    ctx.configure_mesh()
        .x_labels(x_ticks)
        .y_labels(Y_LABELS)
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 18))
        .x_label_formatter(&x_formatter)
        .y_label_formatter(&y_formatter)
        .draw()
        .map_err(|e| err(&e))?;

    for series in &chart.series {
        draw_series(&mut ctx, chart, series)?;
    }
    for ((x, y), text) in &chart.marks {
        draw_mark(&mut ctx, (x_at(chart, *x), *y), text, (x_min + x_max) / 2.0)?;
    }
    Ok(())
}

/// `x` where the chart draws it: its log2 on a log2 axis.
fn x_at(chart: &LineChart, x: f64) -> f64 {
    if chart.log2_x { x.max(1e-9).log2() } else { x }
}

/// The x axis' range: the categories' slots, half a unit past the first and last whole
/// number (an axis by epoch), or the points' bounds.
fn x_range(chart: &LineChart) -> (f64, f64) {
    if !chart.x_categories.is_empty() {
        return (-0.5, chart.x_categories.len() as f64 - 0.5);
    }
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(chart.marks.iter().map(|m| m.0.0))
        .filter(|x| x.is_finite())
        .map(|x| x_at(chart, x));
    if chart.integer_x {
        let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        if lo.is_finite() && hi.is_finite() {
            return (lo.floor() - 0.5, hi.ceil() + 0.5);
        }
        return (0.5, 1.5);
    }
    bounds(xs)
}

/// The most ticks (up to [`X_LABELS`]) plotters can be asked for on `lo..hi` and put every
/// one on a whole number.
pub fn whole_ticks(lo: f64, hi: f64) -> usize {
    use plotters::coord::ranged1d::Ranged;
    (1..=X_LABELS)
        .rev()
        .find(|&n| {
            let points = RangedCoordf64::from(lo..hi).key_points(n);
            !points.is_empty() && points.iter().all(|x| (x - x.round()).abs() < 1e-9)
        })
        .unwrap_or(1)
}

/// A series with at most this many points has a marker at each point (a series of one point
/// draws no line, and a few epochs read better as dots).
const MARKER_MAX_POINTS: usize = 30;

/// Whether `series` is drawn with a marker at each point.
fn has_markers(series: &Series) -> bool {
    let drawn = series
        .points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    drawn.count() <= MARKER_MAX_POINTS
}

/// One series: its line (dashed where asked), and a marker at each point when it has few
/// (filled for solid lines, a ring for dashed ones).
fn draw_series(ctx: &mut Ctx, chart: &LineChart, series: &Series) -> DrawResult<()> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let colour = colour(series.colour);
    let style = colour.stroke_width(2);
    let points: Vec<(f64, f64)> = series
        .points
        .iter()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .map(|p| (x_at(chart, p.0), p.1))
        .collect();
    if series.dashed {
        ctx.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))
            .map_err(|e| err(&e))?;
    } else {
        ctx.draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| err(&e))?;
    }
    if has_markers(series) {
        ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(|e| err(&e))?;
        if series.dashed {
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, 2, WHITE.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    Ok(())
}

/// Tick labels asked of plotters on each axis (it draws at most this many).
const X_LABELS: usize = 10;
const Y_LABELS: usize = 8;

/// The x axis' label at `x`: the category there (categorical charts), the batch size at
/// whole powers of two (log2 charts; none between them, where a rounded size would repeat),
/// or a number with as many decimals as the ticks' spacing `step` needs.
fn x_label(x: f64, categories: &[String], log2_x: bool, step: f64) -> String {
    let whole = (x - x.round()).abs() < 1e-6;
    if !categories.is_empty() {
        let i = x.round();
        match categories.get(i as usize) {
            Some(name) if whole && i >= 0.0 => name.clone(),
            _ => String::new(),
        }
    } else if log2_x {
        match whole {
            true => format!("{}", 2f64.powf(x.round())),
            false => String::new(),
        }
    } else {
        fixed(x, decimals_for(step))
    }
}

/// The spacing of the ticks plotters puts on an axis from `lo` to `hi` when asked for at most
/// `ticks` of them.
fn tick_step(lo: f64, hi: f64, ticks: usize) -> f64 {
    use plotters::coord::ranged1d::Ranged;
    let points = RangedCoordf64::from(lo..hi).key_points(ticks);
    let step = points
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min);
    if step.is_finite() && step > 0.0 {
        step
    } else {
        (hi - lo).abs().max(f64::MIN_POSITIVE)
    }
}

/// Decimals that tell apart numbers `step` apart.
fn decimals_for(step: f64) -> usize {
    if !(step.is_finite() && step > 0.0) {
        return 2;
    }
    // A step of 0.25 needs two decimals, one of 0.5 one: the digits of the step itself.
    (0..=12)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(12) as usize
}

fn fixed(v: f64, decimals: usize) -> String {
    if v.abs() < 1e-300 {
        return "0".to_string();
    }
    format!("{v:.decimals$}")
}

/// A y-axis formatter for the range `lo..hi` with about `ticks` ticks: as many digits as the
/// ticks' spacing needs (so no two ticks read the same), in thousands or millions for big
/// values and in scientific notation for tiny ones.
fn tick_formatter(lo: f64, hi: f64, ticks: usize) -> impl Fn(&f64) -> String {
    let step = tick_step(lo, hi, ticks);
    let largest = lo.abs().max(hi.abs());
    move |v: &f64| {
        let v = *v;
        if largest >= 1e4 {
            let (unit, suffix) = if largest >= 1e6 {
                (1e6, "M")
            } else {
                (1e3, "k")
            };
            return format!("{}{suffix}", fixed(v / unit, decimals_for(step / unit)));
        }
        if largest < 1e-2 && largest > 0.0 {
            let digits =
                ((largest / step.max(f64::MIN_POSITIVE)).log10().ceil() as usize).clamp(1, 8);
            return format!("{v:.digits$e}");
        }
        fixed(v, decimals_for(step))
    }
}

type Ctx<'a, 'b> = ChartContext<'a, Canvas<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A red circle at `at` and its label; a label right of `x_mid` is written leftwards, so it
/// stays inside the chart.
fn draw_mark(ctx: &mut Ctx, at: (f64, f64), text: &str, x_mid: f64) -> DrawResult<()> {
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

/// Where the parts of a confusion matrix go, from its class names: row labels right-aligned
/// left of the matrix, column labels turned 90 degrees below it, each as wide as it needs.
struct ConfusionLayout {
    left: i32,
    top: i32,
    size: i32,
    cell: i32,
    /// Room below the matrix for the column labels.
    column_labels: i32,
    label_px: u32,
    width: i32,
    height: i32,
}

impl ConfusionLayout {
    fn new(classes: &[String]) -> ConfusionLayout {
        let n = classes.len().max(1) as i32;
        let size = 540;
        let cell = size / n;
        // Names no taller than a cell's width (upright) or height (rows).
        let label_px = ((cell as f64 * 0.6) as u32).clamp(9, 16);
        let widest = classes
            .iter()
            .map(|c| text_width(c, label_px as f64))
            .max()
            .unwrap_or(0);
        let left = 50 + widest + 14;
        let column_labels = widest + 14;
        ConfusionLayout {
            left,
            top: 80,
            size,
            cell,
            column_labels,
            label_px,
            width: left + size + 40,
            height: 80 + size + column_labels + 60,
        }
    }
}

/// A labelled heatmap of a square count matrix (rows: actual, columns: predicted), drawn
/// cell by cell so that every label sits on its row or column; counts are sized to fit
/// their cells and column labels are turned 90 degrees.
pub fn draw_confusion(
    path: &Path,
    title: &str,
    classes: &[String],
    counts: &[Vec<usize>],
) -> Result<()> {
    ensure_font();
    let err = |e: &dyn std::fmt::Display| plot_error(path, e);
    let layout = ConfusionLayout::new(classes);
    let (left, top, size, cell) = (layout.left, layout.top, layout.size, layout.cell);
    let root = Canvas::new(path, (layout.width as u32, layout.height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let centred = |px: u32| {
        TextStyle::from((FAMILY, px).into_font()).pos(Pos::new(HPos::Center, VPos::Center))
    };
    let title_px = fitting_size(title, layout.width - 20, 24, 12);
    root.draw(&Text::new(
        title.to_string(),
        (layout.width / 2, 36),
        centred(title_px),
    ))
    .map_err(|e| err(&e))?;
    draw_cells(&root, &layout, counts).map_err(|e| err(&e))?;
    for (i, name) in classes.iter().enumerate() {
        let middle = i as i32 * cell + cell / 2;
        let font = || (family_for(name), layout.label_px).into_font();
        root.draw(&Text::new(
            name.clone(),
            (left - 10, top + middle),
            TextStyle::from(font()).pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(|e| err(&e))?;
        // Upright, read from the bottom up, ending just below its column.
        root.draw(&Text::new(
            name.clone(),
            (left + middle, top + size + 8),
            TextStyle::from(font().transform(FontTransform::Rotate270))
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(|e| err(&e))?;
    }
    let below = top + size + layout.column_labels + 24;
    root.draw(&Text::new(
        "predicted",
        (left + size / 2, below),
        centred(18),
    ))
    .map_err(|e| err(&e))?;
    root.draw(&Text::new(
        "actual",
        (22, top + size / 2),
        TextStyle::from((FAMILY, 18).into_font().transform(FontTransform::Rotate270))
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The matrix's cells: each shaded by its count, the count written in a font that fits it.
fn draw_cells(root: &Area, layout: &ConfusionLayout, counts: &[Vec<usize>]) -> DrawResult<()> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let (left, top, cell) = (layout.left, layout.top, layout.cell);
    let max = counts.iter().flatten().copied().max().unwrap_or(1).max(1);
    let count_px = fitting_size(&max.to_string(), cell - 8, 30, 8)
        .min((cell as f64 * 0.6) as u32)
        .max(8);
    for (row, values) in counts.iter().enumerate() {
        for (col, &count) in values.iter().enumerate() {
            let (x, y) = (left + col as i32 * cell, top + row as i32 * cell);
            let shade = count as f64 / max as f64;
            let fill = RGBColor(
                (255.0 - 224.0 * shade) as u8,
                (255.0 - 136.0 * shade) as u8,
                (255.0 - 75.0 * shade) as u8,
            );
            let corners = [(x, y), (x + cell, y + cell)];
            root.draw(&Rectangle::new(corners, fill.filled()))
                .map_err(|e| err(&e))?;
            root.draw(&Rectangle::new(corners, BLACK.stroke_width(1)))
                .map_err(|e| err(&e))?;
            let text = if shade > 0.6 { WHITE } else { BLACK };
            root.draw(&Text::new(
                count.to_string(),
                (x + cell / 2, y + cell / 2),
                TextStyle::from((FAMILY, count_px).into_font())
                    .color(&text)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))
            .map_err(|e| err(&e))?;
        }
    }
    Ok(())
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

/// Draws images in a grid, five per row, each scaled to its own value range, with captions
/// fitted to their column (a smaller font, then cut with "...", never into the next one).
pub fn draw_image_grid(path: &Path, title: &str, cells: &[GridCell]) -> Result<()> {
    ensure_font();
    let err = |e: &dyn std::fmt::Display| plot_error(path, e);
    let per_row = 5usize;
    let rows = cells.len().div_ceil(per_row).max(1);
    let lines = cells.iter().map(|c| c.caption.len()).max().unwrap_or(0) as i32;
    let (side, column, margin, top) = (150i32, 230i32, 20i32, 60i32);
    let caption_height = (lines * 18 + 4).max(58);
    let width = per_row as i32 * column + margin;
    let height = top + rows as i32 * (side + caption_height + margin);
    let root = Canvas::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title_px = fitting_size(title, width - 20, 22, 12);
    root.draw(&Text::new(
        title.to_string(),
        (width / 2, 18),
        TextStyle::from((FAMILY, title_px).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
    ))
    .map_err(|e| err(&e))?;
    for (i, cell) in cells.iter().enumerate() {
        let x0 = margin + (i % per_row) as i32 * column + (column - margin - side) / 2;
        let y0 = top + (i / per_row) as i32 * (side + caption_height + margin);
        draw_picture(&root, cell, (x0, y0), side).map_err(|e| err(&e))?;
        let room = column - margin;
        for (line, text) in cell.caption.iter().enumerate() {
            let px = fitting_size(text, room, 14, 11);
            root.draw(&Text::new(
                fit_text(text, room, px as f64),
                (x0 + side / 2, y0 + side + 4 + line as i32 * 18),
                TextStyle::from((family_for(text), px).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// One picture of a grid, `side` pixels square at `(x0, y0)`, framed.
fn draw_picture(root: &Area, cell: &GridCell, (x0, y0): (i32, i32), side: i32) -> DrawResult<()> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::coord::ranged1d::Ranged;

    /// The labels plotters would write on an axis from `lo` to `hi`.
    fn labels(lo: f64, hi: f64, ticks: usize, format: impl Fn(&f64) -> String) -> Vec<String> {
        RangedCoordf64::from(lo..hi)
            .key_points(ticks)
            .iter()
            .map(format)
            .collect()
    }

    fn distinct(labels: &[String]) -> bool {
        let mut seen = std::collections::HashSet::new();
        labels
            .iter()
            .all(|l| l.is_empty() || seen.insert(l.clone()))
    }

    #[test]
    fn tick_labels_are_distinct_on_linear_log_and_tiny_axes() {
        // A learning rate from 0.001 down to nearly 0 (cosine), a narrow band, big counts.
        for (lo, hi) in [
            (-0.00008, 0.00108),
            (0.000_95, 0.001_05),
            (0.0, 2.4),
            (0.91, 0.99),
            (0.02, 0.07),
            (9_000.0, 51_000.0),
            (1.2e6, 1.6e6),
        ] {
            let found = labels(lo, hi, Y_LABELS, tick_formatter(lo, hi, Y_LABELS));
            assert!(distinct(&found), "{lo}..{hi}: {found:?}");
        }
        // Epochs 1..30, and batch sizes 8..512 on a log2 axis.
        let step = tick_step(1.0, 30.0, X_LABELS);
        let epochs = labels(1.0, 30.0, X_LABELS, |x| x_label(*x, &[], false, step));
        assert!(distinct(&epochs), "{epochs:?}");
        let (lo, hi) = (3.0, 9.0);
        let step = tick_step(lo, hi, X_LABELS);
        let sizes = labels(lo, hi, X_LABELS, |x| x_label(*x, &[], true, step));
        assert!(distinct(&sizes), "{sizes:?}");
        assert!(sizes.contains(&"64".to_string()), "{sizes:?}");
    }

    #[test]
    fn decimals_follow_the_step() {
        assert_eq!(decimals_for(0.25), 2);
        assert_eq!(decimals_for(0.5), 1);
        assert_eq!(decimals_for(5.0), 0);
        assert_eq!(decimals_for(0.0002), 4);
    }

    #[test]
    fn long_text_is_cut_to_fit() {
        let text = "predicted: pullover-long-name-of-a-class (0.93)";
        let cut = fit_text(text, 200, 14.0);
        assert!(
            text_width(&cut, 14.0) <= 200 && cut.ends_with("..."),
            "{cut}"
        );
        assert_eq!(fit_text("ok", 200, 14.0), "ok");
    }
}
