//! Plots that read at 10 classes with long names and 30 epochs: every kind of plot the
//! packs draw is rendered with such data, the box of every text it draws is recorded (the
//! plots' one canvas), and no two boxes may overlap or leave the picture.

use std::path::Path;

use trainer::pack::canvas::{TextBox, overlapping, record_text};
use trainer::pack::plots::{self, GridCell, LineChart, Series};

mod common;
use common::temp;

const CLASSES: [&str; 10] = [
    "t-shirt-top",
    "trouser",
    "pullover-long-name",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

fn classes() -> Vec<String> {
    CLASSES.iter().map(|c| c.to_string()).collect()
}

/// Draws with `draw`, then checks the recorded text: some was drawn, none overlaps, all of it
/// inside the picture at `path`.
fn check(path: &Path, draw: impl FnOnce() -> trainer::Result<()>) -> Vec<TextBox> {
    let (result, boxes) = record_text(draw);
    result.unwrap();
    assert!(!boxes.is_empty(), "{}: no text recorded", path.display());
    let clashes = overlapping(&boxes);
    assert!(
        clashes.is_empty(),
        "{}: overlapping text {clashes:?}",
        path.display()
    );
    let (width, height) = image::image_dimensions(path).unwrap();
    for b in &boxes {
        assert!(
            b.left >= 0 && b.top >= 0 && b.right <= width as i32 && b.bottom <= height as i32,
            "{}: {b:?} leaves the {width}x{height} picture",
            path.display()
        );
    }
    boxes
}

/// Two models' train and validation curves over 30 epochs, as the pack's loss and accuracy
/// plots draw them.
fn curves(metric: &str, value: impl Fn(f64, bool) -> f64) -> LineChart {
    let mut chart = LineChart::new(
        &format!("Training and validation {metric}"),
        "epoch",
        metric,
    );
    for (i, model) in ["Flatten baseline", "Tiny CNN"].iter().enumerate() {
        for val in [false, true] {
            chart.series.push(Series {
                label: format!("{model} {}_{metric}", if val { "val" } else { "train" }),
                points: (1..=30)
                    .map(|e| (e as f64, value(e as f64 + i as f64, val)))
                    .collect(),
                dashed: val,
                colour: i,
            });
        }
    }
    chart
}

#[test]
fn every_plot_reads_at_ten_long_class_names_and_thirty_epochs() {
    let dir = temp();
    let at = |name: &str| dir.path().join(name);

    let loss = curves("loss", |e, val| {
        2.3 / e.sqrt() + if val { 0.1 } else { 0.0 }
    });
    let boxes = check(&at("loss_curve.png"), || {
        plots::draw_line_chart(&at("loss_curve.png"), &loss)
    });
    // Everything plotters draws itself is recorded too: title, axis names, ticks, legend.
    for text in [
        "Training and validation loss",
        "epoch",
        "30",
        "Tiny CNN val_loss",
    ] {
        assert!(
            boxes.iter().any(|b| b.text == text),
            "{text} not recorded: {boxes:?}"
        );
    }
    // Accuracy climbs into the upper right corner, where a legend on the plot sat.
    let accuracy = curves("accuracy", |e, val| {
        0.99 - 0.8 / e - if val { 0.02 } else { 0.0 }
    });
    check(&at("accuracy_curve.png"), || {
        plots::draw_line_chart(&at("accuracy_curve.png"), &accuracy)
    });

    // A cosine schedule from 1e-3 with warm-up, 30 epochs of 40 steps.
    let mut lr = LineChart::new(
        "Learning rate per step (adamw, cosine, 2 warm-up epoch(s))",
        "epoch",
        "learning rate",
    );
    for (i, model) in ["Flatten baseline", "Tiny CNN"].iter().enumerate() {
        lr.series.push(Series {
            label: model.to_string(),
            points: (0..1200)
                .map(|s| {
                    let t = s as f64 / 1200.0;
                    let warm = (s as f64 / 80.0).min(1.0);
                    (
                        t * 30.0,
                        warm * 1e-3 * (1.0 + i as f64) * 0.5 * (1.0 + (t * 3.14159).cos()),
                    )
                })
                .collect(),
            dashed: false,
            colour: i,
        });
    }
    check(&at("lr_schedule.png"), || {
        plots::draw_line_chart(&at("lr_schedule.png"), &lr)
    });

    // lr-find: loss against log10(lr), the suggestion marked near the right edge.
    let mut find = LineChart::new(
        "Learning-rate range test: Tiny CNN",
        "log10(learning rate)",
        "training loss",
    );
    let curve = |smooth: bool| -> Vec<(f64, f64)> {
        (0..100)
            .map(|s| {
                let x = -7.0 + s as f64 * 0.08;
                let y = 2.3 - 1.5 / (1.0 + (-(x + 3.0) * 2.0).exp())
                    + if smooth { 0.0 } else { 0.05 * (s % 3) as f64 };
                (x, y)
            })
            .collect()
    };
    find.series.push(Series {
        label: "loss".into(),
        points: curve(false),
        dashed: true,
        colour: 0,
    });
    find.series.push(Series {
        label: "smoothed loss".into(),
        points: curve(true),
        dashed: false,
        colour: 1,
    });
    find.marks.push(((-3.2, 1.6), "suggested 6.31e-4".into()));
    find.marks.push(((0.5, 0.8), "lowest loss 3.16e+0".into()));
    check(&at("lr_find.png"), || {
        plots::draw_line_chart(&at("lr_find.png"), &find)
    });

    // Confusion matrix: 10 long names, counts up to four digits.
    let counts: Vec<Vec<usize>> = (0..10)
        .map(|r| {
            (0..10)
                .map(|c| {
                    if r == c {
                        1000 - 37 * r
                    } else {
                        (r * 7 + c * 3) % 40
                    }
                })
                .collect()
        })
        .collect();
    let boxes = check(&at("confusion_matrix.png"), || {
        plots::draw_confusion(
            &at("confusion_matrix.png"),
            "Confusion matrix: Tiny CNN on the test set",
            &classes(),
            &counts,
        )
    });
    let upright = boxes
        .iter()
        .filter(|b| b.text == "pullover-long-name" && b.bottom - b.top > b.right - b.left);
    assert_eq!(upright.count(), 1, "the column label is turned upright");

    // Review grid and top losses: captions with long names.
    let cells: Vec<GridCell> = (0..16)
        .map(|i| GridCell {
            pixels: std::borrow::Cow::Owned(
                (0..28 * 28).map(|p| ((p * (i + 3)) % 17) as f32).collect(),
            ),
            size: 28,
            channels: 1,
            caption: vec![
                format!("label: {}", CLASSES[i % 10]),
                format!("predicted: {} (0.97)", CLASSES[(i + 2) % 10]),
                format!("train, loss {:.2}", 6.0 - i as f64 * 0.1),
                format!("...{}/img_{i:05}.png", CLASSES[(i + 2) % 10]),
            ],
        })
        .collect();
    check(&at("top_losses.png"), || {
        plots::draw_image_grid(
            &at("top_losses.png"),
            "Top losses: 16 training/validation images the kept model puts in another class",
            &cells,
        )
    });
    check(&at("review_grid.png"), || {
        plots::draw_image_grid(
            &at("review_grid.png"),
            "Tiny CNN: wrong test predictions",
            &cells[..10],
        )
    });
    if let Ok(keep) = std::env::var("TRAINER_KEEP_PLOTS") {
        for name in [
            "loss_curve",
            "accuracy_curve",
            "lr_schedule",
            "lr_find",
            "confusion_matrix",
            "top_losses",
            "review_grid",
        ] {
            std::fs::copy(
                at(&format!("{name}.png")),
                Path::new(&keep).join(format!("{name}.png")),
            )
            .unwrap();
        }
    }
}

#[test]
fn the_check_sees_text_drawn_over_other_text() {
    let dir = temp();
    let path = dir.path().join("clash.png");
    let mut chart = LineChart::new("clash", "x", "y");
    chart.series.push(Series {
        label: "line".into(),
        points: vec![(0.0, 0.0), (1.0, 1.0)],
        dashed: false,
        colour: 0,
    });
    chart.marks.push(((0.2, 0.5), "first mark".into()));
    chart.marks.push(((0.21, 0.5), "second mark".into()));
    let (result, boxes) = record_text(|| plots::draw_line_chart(&path, &chart));
    result.unwrap();
    assert_eq!(
        overlapping(&boxes),
        [("  first mark".to_string(), "  second mark".to_string())]
    );
}

/// The series colours of the first two models (the plots' palette: matplotlib's tab10).
const MODEL_COLOURS: [[u8; 3]; 2] = [[31, 119, 180], [255, 127, 14]];

/// The pack's loss chart of two models trained for `epochs` each: train (solid) and
/// validation (dashed) loss by epoch.
fn loss_by_epoch(epochs: [usize; 2]) -> LineChart {
    let mut chart = LineChart::by_epoch("Training and validation loss", "loss");
    for (i, (model, n)) in ["Flatten baseline", "Tiny CNN"]
        .iter()
        .zip(epochs)
        .enumerate()
    {
        for val in [false, true] {
            chart.series.push(Series {
                label: format!("{model} {}_loss", if val { "val" } else { "train" }),
                points: (1..=n)
                    .map(|e| {
                        (
                            e as f64,
                            1.0 / e as f64 + i as f64 * 0.3 + val as u8 as f64 * 0.1,
                        )
                    })
                    .collect(),
                dashed: val,
                colour: i,
            });
        }
    }
    chart
}

/// Pixels of `rgb` in the plot part of the picture at `path` (left of the legend column).
fn pixels_of(path: &Path, rgb: [u8; 3]) -> usize {
    let picture = image::open(path).unwrap().to_rgb8();
    picture
        .enumerate_pixels()
        .filter(|(x, _, p)| *x < 1000 && p.0 == rgb)
        .count()
}

/// The x axis' tick labels: the text between the plot and the axis name "epoch".
fn epoch_ticks(boxes: &[TextBox]) -> Vec<String> {
    let name = boxes.iter().find(|b| b.text == "epoch").unwrap();
    boxes
        .iter()
        .filter(|b| b.text != "epoch" && b.left > 100 && b.right < 1000)
        .filter(|b| b.bottom <= name.top + 2 && b.top >= name.top - 40)
        .map(|b| b.text.clone())
        .collect()
}

#[test]
fn curves_of_one_or_two_epochs_draw_every_series_on_whole_epoch_ticks() {
    let dir = temp();
    for epochs in [[1, 1], [2, 1], [1, 3], [30, 7]] {
        let path = dir
            .path()
            .join(format!("loss_{}_{}.png", epochs[0], epochs[1]));
        let chart = loss_by_epoch(epochs);
        let boxes = check(&path, || plots::draw_line_chart(&path, &chart));
        for (model, rgb) in MODEL_COLOURS.iter().enumerate() {
            let count = pixels_of(&path, *rgb);
            // A marker is a disc of radius 4 (about 50 pixels), a validation one a ring.
            assert!(
                count >= 30 * epochs[model],
                "{epochs:?}: model {model} has {count} pixels of its colour on the plot"
            );
        }
        let ticks = epoch_ticks(&boxes);
        assert!(!ticks.is_empty(), "{epochs:?}: no epoch ticks in {boxes:?}");
        for tick in &ticks {
            assert!(
                tick.parse::<u32>().is_ok(),
                "{epochs:?}: epoch tick {tick} in {ticks:?}"
            );
        }
        let last = epochs[0].max(epochs[1]).to_string();
        assert!(
            ticks.contains(&"1".to_string()) || epochs[0] > 10,
            "{ticks:?}"
        );
        assert!(ticks.contains(&last) || epochs[0] > 10, "{ticks:?}");
        if let Ok(keep) = std::env::var("TRAINER_KEEP_PLOTS") {
            std::fs::copy(&path, Path::new(&keep).join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn a_schedule_of_one_step_is_drawn() {
    let dir = temp();
    let path = dir.path().join("lr_schedule.png");
    let mut chart = LineChart::by_epoch("Learning rate per step (sgd, constant)", "learning rate");
    for (i, model) in ["Flatten baseline", "Tiny CNN"].iter().enumerate() {
        chart.series.push(Series {
            label: model.to_string(),
            points: vec![(0.0, 1e-3 * (i + 1) as f64)],
            dashed: false,
            colour: i,
        });
    }
    let boxes = check(&path, || plots::draw_line_chart(&path, &chart));
    for rgb in MODEL_COLOURS {
        assert!(pixels_of(&path, rgb) >= 30, "{rgb:?} not drawn");
    }
    let ticks = epoch_ticks(&boxes);
    assert!(
        !ticks.is_empty() && ticks.iter().all(|t| t.parse::<i32>().is_ok()),
        "{ticks:?}"
    );
}
