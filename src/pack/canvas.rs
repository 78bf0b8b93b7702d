//! The one canvas every plot draws on: plotters' bitmap backend, with every piece of text
//! it draws (titles, tick labels, legends, captions, annotations) passing through one place
//! that can record the text's box. A test records the boxes of a plot and checks that no two
//! overlap.

use std::cell::RefCell;
use std::path::Path;

use plotters::prelude::BitMapBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// A piece of text drawn, and the box it takes: `[left, right) x [top, bottom)` in pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct TextBox {
    pub text: String,
    pub left: i32,
    pub top: i32,
    pub right: i32,
    pub bottom: i32,
}

impl TextBox {
    /// Whether two boxes share a pixel.
    pub fn overlaps(&self, other: &TextBox) -> bool {
        self.left < other.right
            && other.left < self.right
            && self.top < other.bottom
            && other.top < self.bottom
    }
}

thread_local! {
    static RECORDED: RefCell<Option<Vec<TextBox>>> = const { RefCell::new(None) };
}

/// Runs `draw` and returns, beside its result, the box of every text it drew on a canvas of
/// this thread.
pub fn record_text<T>(draw: impl FnOnce() -> T) -> (T, Vec<TextBox>) {
    RECORDED.with(|r| *r.borrow_mut() = Some(Vec::new()));
    let result = draw();
    let boxes = RECORDED.with(|r| r.borrow_mut().take()).unwrap_or_default();
    (result, boxes)
}

/// The bitmap backend that writes `path`, its text recorded while [`record_text`] runs.
pub struct Canvas<'a> {
    inner: BitMapBackend<'a>,
}

impl<'a> Canvas<'a> {
    pub fn new(path: &'a Path, size: (u32, u32)) -> Canvas<'a> {
        Canvas {
            inner: BitMapBackend::new(path, size),
        }
    }
}

/// The box plotters draws `text` in at `pos` (its anchor), as its default `draw_text` lays
/// it out: the font's layout box, moved by the anchor, then turned by the style's transform.
fn text_box<S: BackendTextStyle>(text: &str, style: &S, pos: BackendCoord) -> Option<TextBox> {
    let ((min_x, min_y), (max_x, max_y)) = style.layout_box(text).ok()?;
    let (width, height) = (max_x - min_x, max_y - min_y);
    let anchor = style.anchor();
    let dx = match anchor.h_pos {
        HPos::Left => 0,
        HPos::Right => -width,
        HPos::Center => -width / 2,
    };
    let dy = match anchor.v_pos {
        VPos::Top => 0,
        VPos::Center => -height / 2,
        VPos::Bottom => -height,
    };
    let transform = style.transform();
    let corners = [(dx, dy), (dx + width, dy + height)].map(|(x, y)| transform.transform(x, y));
    let xs = corners.map(|c| pos.0 + c.0);
    let ys = corners.map(|c| pos.1 + c.1);
    Some(TextBox {
        text: text.to_string(),
        left: xs[0].min(xs[1]),
        right: xs[0].max(xs[1]),
        top: ys[0].min(ys[1]),
        bottom: ys[0].max(ys[1]),
    })
}

type Failure<'a> = DrawingErrorKind<<BitMapBackend<'a> as DrawingBackend>::ErrorType>;

impl<'a> DrawingBackend for Canvas<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), Failure<'a>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), Failure<'a>> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), Failure<'a>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), Failure<'a>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), Failure<'a>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), Failure<'a>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), Failure<'a>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), Failure<'a>> {
        self.inner.fill_polygon(vert, style)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), Failure<'a>> {
        if style.color().alpha > 0.0 && !text.trim().is_empty() {
            RECORDED.with(|r| {
                if let Some(boxes) = r.borrow_mut().as_mut()
                    && let Some(found) = text_box(text, style, pos)
                {
                    boxes.push(found);
                }
            });
        }
        self.inner.draw_text(text, style, pos)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), Failure<'a>> {
        self.inner.estimate_text_size(text, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), Failure<'a>> {
        self.inner.blit_bitmap(pos, size, src)
    }
}

/// Every pair of boxes that overlap, by their texts.
pub fn overlapping(boxes: &[TextBox]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            if a.overlaps(b) {
                pairs.push((a.text.clone(), b.text.clone()));
            }
        }
    }
    pairs
}
