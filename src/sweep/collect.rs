//! `trainer sweep collect DIR`: one leaderboard from whatever finished. Ranked by validation
//! only (the test set is for reporting the chosen model, never for choosing); seeds of one
//! setting aggregated as mean and spread; one plot per swept setting; failed and missing
//! tasks listed. Writes what it has, and says (exit 1) when tasks failed or are missing.

use std::path::{Path, PathBuf};

use crate::config::Monitor;
use crate::error::{Result, TrainerError};
use crate::pack::evidence::{csv_text, py_float};
use crate::pack::write_atomic;
use crate::sweep::leaderboard::{Row, draw_plots, markdown};
use crate::sweep::plan::Plan;
use crate::sweep::task;

/// What collect found.
#[derive(Debug)]
pub struct Leaderboard {
    /// Finished tasks best first, then failed, then missing.
    pub rows: Vec<Row>,
    pub failed: usize,
    pub missing: usize,
    pub files: Vec<PathBuf>,
}

/// Reads every task's state, writes the leaderboard files and plots into `dir`.
pub fn collect(dir: &Path) -> Result<Leaderboard> {
    let plan = Plan::read(dir)?;
    let mut rows: Vec<Row> = plan
        .tasks
        .iter()
        .map(|t| Row {
            index: t.index,
            values: plan.varying_values(t),
            state: task::read_state(dir, &plan, t.index),
        })
        .collect();
    rank(&mut rows);
    let failed = rows.iter().filter(|r| r.failed()).count();
    let missing = rows.iter().filter(|r| r.state.is_none()).count();
    let mut files = vec![dir.join("leaderboard.csv"), dir.join("leaderboard.md")];
    write_atomic(&files[0], csv_text(csv_rows(&plan, &rows))?)?;
    let plots = draw_plots(dir, &plan, &rows)?;
    write_atomic(&files[1], markdown(&plan, &rows, &plots))?;
    files.extend(plots);
    Ok(Leaderboard {
        rows,
        failed,
        missing,
        files,
    })
}

/// Sorts the rows best first, by [`rank_key`].
fn rank(rows: &mut [Row]) {
    let by_loss = rows
        .iter()
        .filter_map(|r| r.result())
        .all(|r| r.monitor == Monitor::ValLoss)
        && rows.iter().any(|r| r.result().is_some());
    rows.sort_by(|a, b| {
        rank_key(a, by_loss)
            .partial_cmp(&rank_key(b, by_loss))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// Finished tasks by their kept epoch's validation accuracy (higher first), then its
/// validation loss (lower first), then index; by the loss first when every task monitored
/// val_loss; failed, then missing, after them.
fn rank_key(row: &Row, by_loss: bool) -> (u8, f64, f64, usize) {
    match (row.result(), row.state.as_ref()) {
        (Some(r), _) if by_loss => (0, r.val_loss, -r.val_acc, row.index),
        (Some(r), _) => (0, -r.val_acc, r.val_loss, row.index),
        (None, Some(_)) => (1, 0.0, 0.0, row.index),
        (None, None) => (2, 0.0, 0.0, row.index),
    }
}

const COLUMNS: [&str; 11] = [
    "status",
    "model",
    "val_acc",
    "val_loss",
    "best_epoch",
    "test_acc",
    "wall_seconds",
    "backend",
    "device",
    "host",
    "error",
];

fn csv_rows(plan: &Plan, rows: &[Row]) -> Vec<Vec<String>> {
    let mut header = vec!["rank".to_string(), "task".to_string()];
    header.extend(plan.varying.iter().cloned());
    header.extend(COLUMNS.iter().map(|c| c.to_string()));
    let mut out = vec![header];
    for (i, row) in rows.iter().enumerate() {
        let rank = if row.result().is_some() {
            (i + 1).to_string()
        } else {
            String::new()
        };
        let mut line = vec![rank, format!("{:04}", row.index)];
        line.extend(row.values.iter().map(|(_, v)| v.clone()));
        let r = row.result();
        let s = row.state.as_ref();
        line.extend([
            row.status().to_string(),
            r.map(|r| r.model.clone()).unwrap_or_default(),
            r.map(|r| py_float(r.val_acc)).unwrap_or_default(),
            r.map(|r| py_float(r.val_loss)).unwrap_or_default(),
            r.map(|r| r.best_epoch.to_string()).unwrap_or_default(),
            r.map(|r| py_float(r.test_acc)).unwrap_or_default(),
            s.map(|s| format!("{:.2}", s.wall_seconds))
                .unwrap_or_default(),
            s.and_then(|s| s.backend.clone()).unwrap_or_default(),
            s.and_then(|s| s.device.clone()).unwrap_or_default(),
            s.map(|s| s.host.clone()).unwrap_or_default(),
            s.and_then(|s| s.error.clone()).unwrap_or_default(),
        ]);
        out.push(line);
    }
    out
}

/// The one-line verdict of a collect: an error (exit 1) when tasks failed or are missing.
pub fn verdict(board: &Leaderboard) -> Result<()> {
    if board.failed + board.missing > 0 {
        return Err(TrainerError::VerdictFailed(format!(
            "{} of {} tasks failed and {} are missing; the leaderboard shows what finished",
            board.failed,
            board.rows.len(),
            board.missing
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::leaderboard::tests::row;

    fn order(rows: &mut [Row]) -> Vec<usize> {
        rank(rows);
        rows.iter().map(|r| r.index).collect()
    }

    #[test]
    fn the_leaderboard_ranks_by_validation_then_failed_then_missing() {
        let acc = Monitor::ValAcc;
        let mut rows = vec![
            row(0, "1", None, false),
            row(1, "1", Some((0.90, 0.30, acc)), false),
            row(2, "1", None, true),
            row(3, "1", Some((0.95, 0.40, acc)), false),
            row(4, "1", Some((0.90, 0.20, acc)), false),
        ];
        // Accuracy first, the loss breaks the tie; failed, then missing, last.
        assert_eq!(order(&mut rows), [3, 4, 1, 2, 0]);
        // Every task monitored val_loss: the loss ranks first.
        let loss = Monitor::ValLoss;
        let mut rows = vec![
            row(0, "1", Some((0.95, 0.40, loss)), false),
            row(1, "1", Some((0.90, 0.20, loss)), false),
        ];
        assert_eq!(order(&mut rows), [1, 0]);
    }

    #[test]
    fn failed_or_missing_tasks_fail_the_collect() {
        let board = |failed, missing| Leaderboard {
            rows: Vec::new(),
            failed,
            missing,
            files: Vec::new(),
        };
        assert!(verdict(&board(0, 0)).is_ok());
        let e = verdict(&board(1, 2)).unwrap_err().to_string();
        assert!(e.contains("1 of 0 tasks failed and 2 are missing"), "{e}");
    }
}
