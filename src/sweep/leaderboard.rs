//! The leaderboard's Markdown (ranked table, seeds aggregated, failed and missing tasks)
//! and its plots, one per swept setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::pack::evidence::markdown_table;
use crate::pack::plots::{LineChart, Series, draw_line_chart};
use crate::sweep::plan::Plan;
use crate::sweep::task::{Status, TaskResult, TaskState};

/// One task's line of the leaderboard.
#[derive(Clone, Debug)]
pub struct Row {
    pub index: usize,
    /// `(setting, value)` of every varying setting.
    pub values: Vec<(String, String)>,
    /// None while the task has not finished.
    pub state: Option<TaskState>,
}

impl Row {
    pub fn result(&self) -> Option<&TaskResult> {
        self.state.as_ref().and_then(|s| s.result.as_ref())
    }

    /// The status as the files write it; "missing" while unfinished.
    pub fn status(&self) -> &'static str {
        self.state.as_ref().map_or("missing", |s| s.status.as_str())
    }

    pub fn failed(&self) -> bool {
        self.state
            .as_ref()
            .is_some_and(|s| s.status == Status::Failed)
    }
}

/// Mean and sample standard deviation.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

fn pm(values: &[f64]) -> String {
    let (mean, std) = mean_std(values);
    format!("{mean:.4} ± {std:.4}")
}

/// Finished tasks grouped by every varying setting but the seed.
fn by_setting(rows: &[Row]) -> Vec<(String, Vec<&TaskResult>)> {
    let mut groups: BTreeMap<String, Vec<&TaskResult>> = BTreeMap::new();
    for row in rows {
        if let Some(r) = row.result() {
            let key = row
                .values
                .iter()
                .filter(|(k, _)| k != "seed")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            groups.entry(key).or_default().push(r);
        }
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    let mean_acc = |g: &[&TaskResult]| mean_std(&g.iter().map(|r| r.val_acc).collect::<Vec<_>>()).0;
    groups.sort_by(|a, b| {
        mean_acc(&b.1)
            .partial_cmp(&mean_acc(&a.1))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    groups
}

/// `leaderboard.md`: the ranked table of `rows` (best first) and what did not finish; `plots`
/// are linked.
pub fn markdown(plan: &Plan, rows: &[Row], plots: &[PathBuf]) -> String {
    let finished = rows.iter().filter(|r| r.result().is_some()).count();
    let failed: Vec<&Row> = rows.iter().filter(|r| r.failed()).collect();
    let missing: Vec<&Row> = rows.iter().filter(|r| r.state.is_none()).collect();
    let mut md = format!(
        "# Sweep leaderboard\n\n{} tasks planned ({} in the full grid): {finished} finished, {} failed, {} missing.\n\
         Ranked by the validation accuracy of each task's kept epoch, then its validation loss\n\
         (the loss first when every task monitored val_loss); val acc and val loss are the kept\n\
         epoch's. The test accuracy of each task's chosen model is shown for reporting only: the\n\
         test set is not for choosing.\n\n",
        plan.tasks.len(),
        plan.grid_size,
        failed.len(),
        missing.len()
    );
    let mut header: Vec<&str> = vec!["rank", "task"];
    header.extend(plan.varying.iter().map(String::as_str));
    header.extend([
        "model",
        "val acc",
        "val loss",
        "best epoch",
        "test acc",
        "status",
    ]);
    let body: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|row| {
            let r = row.result()?;
            let mut line = vec![String::new(), format!("{:04}", row.index)];
            line.extend(row.values.iter().map(|(_, v)| v.clone()));
            line.extend([
                r.model.clone(),
                format!("{:.4}", r.val_acc),
                format!("{:.4}", r.val_loss),
                r.best_epoch.to_string(),
                format!("{:.4}", r.test_acc),
                row.status().to_string(),
            ]);
            Some(line)
        })
        .enumerate()
        .map(|(i, mut line)| {
            line[0] = (i + 1).to_string();
            line
        })
        .collect();
    md += &markdown_table(&header, &body);
    if plan.varying.iter().any(|k| k == "seed") {
        md += "\n## By setting, seeds aggregated (mean ± sample standard deviation)\n\n";
        let header = ["setting", "seeds", "val acc", "val loss", "test acc"];
        let body: Vec<Vec<String>> = by_setting(rows)
            .into_iter()
            .map(|(key, group)| {
                let pick =
                    |f: fn(&TaskResult) -> f64| group.iter().map(|r| f(r)).collect::<Vec<_>>();
                vec![
                    if key.is_empty() { "(all)".into() } else { key },
                    group.len().to_string(),
                    pm(&pick(|r| r.val_acc)),
                    pm(&pick(|r| r.val_loss)),
                    pm(&pick(|r| r.test_acc)),
                ]
            })
            .collect();
        md += &markdown_table(&header, &body);
    }
    if !failed.is_empty() {
        md += "\n## Failed\n\n";
        for row in &failed {
            let error = row
                .state
                .as_ref()
                .and_then(|s| s.error.clone())
                .unwrap_or_default();
            md += &format!(
                "- task {:04} ({}): {error}\n",
                row.index,
                settings_text(row)
            );
        }
    }
    if !missing.is_empty() {
        md += "\n## Missing (not run yet, running, or killed)\n\n";
        for row in &missing {
            md += &format!("- task {:04} ({})\n", row.index, settings_text(row));
        }
    }
    if !plots.is_empty() {
        md += "\n## Validation accuracy per swept setting\n\n";
        for plot in plots {
            let name = plot
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            md += &format!("![{name}]({name})\n\n");
        }
    }
    md
}

fn settings_text(row: &Row) -> String {
    row.values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sweep_<setting>.png`: each finished task's best validation accuracy (circles) and their
/// mean (line) against the setting's values, spaced evenly.
pub fn draw_plots(dir: &Path, plan: &Plan, rows: &[Row]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (column, key) in plan.varying.iter().enumerate() {
        let mut labels: Vec<String> = Vec::new();
        for row in rows {
            let v = &row.values[column].1;
            if !labels.contains(v) {
                labels.push(v.clone());
            }
        }
        // Numbers in numeric order, other values alphabetically; evenly spaced either way.
        let numeric = labels
            .iter()
            .all(|l| l.parse::<f64>().is_ok_and(f64::is_finite));
        if numeric {
            labels.sort_by(|a, b| {
                let (a, b) = (
                    a.parse::<f64>().unwrap_or(0.0),
                    b.parse::<f64>().unwrap_or(0.0),
                );
                a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
            });
        } else {
            labels.sort();
        }
        let x_of = |value: &str| labels.iter().position(|l| l == value).unwrap_or(0) as f64;
        let mut chart = LineChart::new(
            &format!("Validation accuracy against {key}"),
            key,
            "best validation accuracy",
        );
        chart.x_categories = labels.clone();
        let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for row in rows {
            if let Some(r) = row.result() {
                let v = &row.values[column].1;
                chart.marks.push(((x_of(v), r.val_acc), String::new()));
                groups.entry(v.clone()).or_default().push(r.val_acc);
            }
        }
        let mut mean: Vec<(f64, f64)> = groups
            .iter()
            .map(|(v, accs)| (x_of(v), mean_std(accs).0))
            .collect();
        mean.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        chart.series.push(Series {
            label: "mean (circles: each task)".into(),
            points: mean,
            dashed: false,
            colour: 0,
        });
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("sweep_{safe}.png"));
        if chart.marks.is_empty() {
            continue;
        }
        draw_line_chart(&path, &chart)?;
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Monitor;

    /// Task `index` with seed `seed`: finished with these figures, failed, or missing (None).
    pub(crate) fn row(
        index: usize,
        seed: &str,
        figures: Option<(f64, f64, Monitor)>,
        failed: bool,
    ) -> Row {
        let state = (figures.is_some() || failed).then(|| TaskState {
            index,
            plan_checksum: "x".into(),
            status: if failed { Status::Failed } else { Status::Done },
            error: failed.then(|| "it broke".to_string()),
            result: figures.map(|(val_acc, val_loss, monitor)| TaskResult {
                model: "tiny-cnn".into(),
                val_acc,
                val_loss,
                best_epoch: 1,
                test_acc: 0.5,
                monitor,
            }),
            wall_seconds: 1.0,
            host: "here".into(),
            backend: None,
            device: None,
        });
        Row {
            index,
            values: vec![
                ("lr_cnn".into(), "0.1".into()),
                ("seed".into(), seed.into()),
            ],
            state,
        }
    }

    #[test]
    fn seeds_of_one_setting_are_aggregated_as_mean_and_sample_spread() {
        let (mean, std) = mean_std(&[0.8, 0.9, 1.0]);
        assert!((mean - 0.9).abs() < 1e-12 && (std - 0.1).abs() < 1e-12);
        assert_eq!(mean_std(&[0.7]), (0.7, 0.0));
        assert_eq!(pm(&[0.8, 0.9, 1.0]), "0.9000 ± 0.1000");
        let rows = [
            row(0, "1", Some((0.8, 0.3, Monitor::ValAcc)), false),
            row(1, "2", Some((1.0, 0.3, Monitor::ValAcc)), false),
            row(2, "3", None, true),
        ];
        let groups = by_setting(&rows);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].0, "lr_cnn=0.1");
        assert_eq!(groups[0].1.len(), 2);
    }
}
