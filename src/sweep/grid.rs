//! The grid of a sweep: a TOML's settings as axes (any of them a list), checked value by
//! value; the grid points to run (all, or a seeded random subset); the settings at a point.

use std::path::Path;

use serde_json::Value;

use crate::config::{self, Settings};
use crate::device::BackendChoice;
use crate::error::{Result, TrainerError};

/// The largest grid planned without `--max-runs`, and the most runs `--max-runs` may ask for.
pub const MAX_RUNS: usize = 10_000;
/// Settings whose one value is already a list: a sweep over them is a list of lists.
const LIST_VALUED: [&str; 3] = ["split", "models", "cnn_widths"];

/// One setting's values.
pub struct Axis {
    pub key: String,
    pub values: Vec<Value>,
}

/// A setting's value as one short text: numbers and strings bare, lists comma-separated.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "none".to_string(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The file's settings as axes, in key order; a setting the file leaves out is not an axis.
pub fn axes(
    file: config::ConfigFile,
    defaults: &Settings,
    base_dir: &Path,
    backend: Option<BackendChoice>,
) -> Result<Vec<Axis>> {
    let known =
        serde_json::to_value(defaults).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    let mut axes = Vec::new();
    let lines: Vec<Option<usize>> = file.values.keys().map(|k| file.line_of(k)).collect();
    for ((key, value), line) in file.values.into_iter().zip(lines) {
        if known.get(&key).is_none() {
            let names: Vec<&str> = known
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(TrainerError::bad_input(format!(
                "sweep config: unknown setting '{key}' (known: {})",
                names.join(", ")
            )));
        }
        let is_list = match &value {
            Value::Array(items) if LIST_VALUED.contains(&key.as_str()) => {
                items.is_empty() || items.iter().all(Value::is_array)
            }
            Value::Array(_) => true,
            _ => false,
        };
        let mut values = match value {
            Value::Array(items) if is_list => items,
            single => vec![single],
        };
        if values.is_empty() {
            return Err(TrainerError::bad_input(format!(
                "sweep config: '{key}' is an empty list; give at least one value"
            )));
        }
        if let Some(twice) = values
            .iter()
            .enumerate()
            .find(|(i, v)| values[..*i].contains(v))
            .map(|(_, v)| v)
        {
            return Err(TrainerError::bad_input(format!(
                "sweep config: '{key}' lists {} twice; each value once (two identical tasks would only repeat each other)",
                value_text(twice)
            )));
        }
        if key == "data" {
            for v in &mut values {
                if let Value::String(s) = v {
                    let path = base_dir.join(&*s);
                    let path = std::path::absolute(&path).unwrap_or(path);
                    *s = path.display().to_string();
                }
            }
        }
        check_each(&known, &key, &values, line)?;
        axes.push(Axis { key, values });
    }
    if let Some(choice) = backend {
        let value =
            serde_json::to_value(choice).map_err(|e| TrainerError::Serialize(e.to_string()))?;
        axes.retain(|a| a.key != "backend");
        axes.push(Axis {
            key: "backend".into(),
            values: vec![value],
        });
        axes.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Ok(axes)
}

/// The grid points to run: all of them, or `max_runs` drawn with `seed`, in grid order.
pub fn choose(grid_size: Option<usize>, max_runs: Option<usize>, seed: u64) -> Result<Vec<usize>> {
    match (grid_size, max_runs) {
        (Some(n), None) if n <= MAX_RUNS => Ok((0..n).collect()),
        (Some(n), Some(m)) if m >= n => Ok((0..n).collect()),
        (n, None) => Err(TrainerError::bad_input(format!(
            "the grid has {} runs, more than {MAX_RUNS}; give --max-runs N to draw a random subset",
            n.map(|n| n.to_string())
                .unwrap_or_else(|| "too many".into())
        ))),
        (n, Some(m)) => {
            let n = n.unwrap_or(usize::MAX) as u64;
            let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
            let mut picked = std::collections::BTreeSet::new();
            while picked.len() < m {
                state = splitmix64(state);
                picked.insert((state % n) as usize);
            }
            Ok(picked.into_iter().collect())
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A swept key that changes no task (`cnn_widths` where no task trains the CNN, `color`
/// where every task trains on the stripes) would only repeat the same runs: refused.
pub fn refuse_idle_axes(varying: &[String], tasks: &[&Settings]) -> Result<()> {
    for key in varying {
        let idle = match key.as_str() {
            "cnn_widths" | "head" | "hidden" | "dropout" | "batch_norm" => !tasks
                .iter()
                .any(|t| t.models.contains(&crate::model::ModelKind::Cnn)),
            "color" => tasks.iter().all(|t| t.data.is_none()),
            _ => false,
        };
        if idle {
            return Err(TrainerError::bad_input(format!(
                "sweep config: '{key}' varies but changes no task ({}): the tasks would only repeat each other",
                if key == "color" {
                    "every task trains on the gray stripe images"
                } else {
                    "no task trains the CNN"
                }
            )));
        }
    }
    Ok(())
}

/// Each value of a swept key on its own against the settings, so that a bad one is named
/// with its key and line rather than found later in a task.
fn check_each(known: &Value, key: &str, values: &[Value], line: Option<usize>) -> Result<()> {
    for value in values {
        let mut one = known.clone();
        one[key] = value.clone();
        if let Err(e) = serde_json::from_value::<Settings>(one) {
            return Err(TrainerError::bad_input(format!(
                "sweep config:{} '{key}' = {value}: {}",
                line.map(|l| format!(" line {l}:")).unwrap_or_default(),
                crate::error::first_line(&e.to_string())
            )));
        }
    }
    Ok(())
}

/// The settings at one grid point (mixed radix, the last axis fastest), checked.
pub fn settings_at(
    axes: &[Axis],
    point: usize,
    defaults: &Value,
    index: usize,
) -> Result<Settings> {
    let mut json = defaults.clone();
    let mut rest = point;
    let mut chosen = Vec::new();
    for axis in axes.iter().rev() {
        let value = axis.values[rest % axis.values.len()].clone();
        rest /= axis.values.len();
        if axis.values.len() > 1 {
            chosen.push(format!("{}={}", axis.key, value_text(&value)));
        }
        json[axis.key.as_str()] = value;
    }
    if let (Value::Object(values), false) =
        (&mut json, axes.iter().any(|a| a.key == "weight_decay"))
    {
        config::fill_weight_decay(values);
    }
    chosen.reverse();
    let what = if chosen.is_empty() {
        format!("task {index}")
    } else {
        format!("task {index} ({})", chosen.join(", "))
    };
    let settings: Settings = serde_json::from_value(json).map_err(|e| {
        TrainerError::bad_input(format!(
            "sweep config: {what}: {}",
            crate::error::first_line(&e.to_string())
        ))
    })?;
    settings
        .validate()
        .map_err(|e| TrainerError::bad_input(format!("sweep config: {what}: {e}")))?;
    if let Some(folder) = &settings.data
        && !folder.is_dir()
    {
        return Err(TrainerError::bad_input(format!(
            "sweep config: {what}: the image folder '{}' does not exist",
            folder.display()
        )));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(key: &str, values: Vec<Value>) -> Axis {
        Axis {
            key: key.into(),
            values,
        }
    }

    #[test]
    fn grid_points_are_mixed_radix_with_the_last_axis_fastest() {
        let axes = [
            axis("lr_cnn", vec![0.1.into(), 0.2.into()]),
            axis("seed", vec![1.into(), 2.into(), 3.into()]),
        ];
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let at = |point| {
            let s = settings_at(&axes, point, &defaults, point).unwrap();
            (s.lr_cnn, s.seed)
        };
        assert_eq!(at(0), (0.1, 1));
        assert_eq!(at(1), (0.1, 2));
        assert_eq!(at(3), (0.2, 1));
        assert_eq!(at(5), (0.2, 3));
        // A value the settings refuse names its task and the values that made it.
        let bad = [axis("lr_cnn", vec![0.1.into(), (-1.0).into()])];
        let e = settings_at(&bad, 1, &defaults, 1).unwrap_err().to_string();
        assert!(e.contains("task 1 (lr_cnn=-1.0)"), "{e}");
    }

    #[test]
    fn a_subset_is_drawn_by_its_seed_and_a_huge_grid_needs_one() {
        assert_eq!(choose(Some(4), None, 0).unwrap(), [0, 1, 2, 3]);
        assert_eq!(choose(Some(4), Some(10), 0).unwrap(), [0, 1, 2, 3]);
        let drawn = choose(Some(1000), Some(5), 7).unwrap();
        assert_eq!(drawn.len(), 5);
        assert!(drawn.windows(2).all(|w| w[0] < w[1]) && drawn[4] < 1000);
        assert_eq!(choose(Some(1000), Some(5), 7).unwrap(), drawn);
        assert_ne!(choose(Some(1000), Some(5), 8).unwrap(), drawn);
        let e = choose(Some(MAX_RUNS + 1), None, 0).unwrap_err().to_string();
        assert!(e.contains("give --max-runs N"), "{e}");
        assert!(choose(None, Some(3), 0).unwrap().len() == 3);
    }

    #[test]
    fn values_read_as_short_text() {
        assert_eq!(value_text(&serde_json::json!("cpu")), "cpu");
        assert_eq!(value_text(&serde_json::json!(0.003)), "0.003");
        assert_eq!(value_text(&serde_json::json!([8, 16])), "8,16");
        assert_eq!(value_text(&Value::Null), "none");
    }
}
