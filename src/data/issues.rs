//! What the loader did with the files it did not train on as they were: every file left out
//! or merged is one [`DataIssue`], written to the pack's `outputs/data_issues.csv` and
//! counted on one console line.

use serde::Serialize;

/// Why a file is not used as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// Byte-identical to a file of another class: one image cannot have two labels.
    ConflictingLabels,
    /// Byte-identical to a file of the same class.
    Duplicate,
    /// Byte-identical to a file of a later split (a copy in train of a test image).
    CopyAcrossSplits,
    /// Cannot be read or decoded as an image.
    Unreadable,
}

impl IssueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::ConflictingLabels => "conflicting_labels",
            IssueKind::Duplicate => "duplicate",
            IssueKind::CopyAcrossSplits => "copy_across_splits",
            IssueKind::Unreadable => "unreadable",
        }
    }

    /// What the loader does with a file of this kind.
    pub fn action(self) -> Action {
        match self {
            IssueKind::ConflictingLabels => Action::LeftOut,
            IssueKind::Duplicate => Action::Merged,
            IssueKind::CopyAcrossSplits => Action::DroppedFromEarlierSplit,
            IssueKind::Unreadable => Action::Skipped,
        }
    }
}

/// What was done with a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Left out of training and evaluation.
    LeftOut,
    /// Kept once: this path is not read, the original is.
    Merged,
    /// Kept in the later split only (test over val over train), so nothing leaks.
    DroppedFromEarlierSplit,
    /// Not trained on (`--skip-bad-images`).
    Skipped,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::LeftOut => "left out of training and evaluation",
            Action::Merged => "merged: kept once",
            Action::DroppedFromEarlierSplit => "dropped from this split: kept in the later one",
            Action::Skipped => "skipped (--skip-bad-images)",
        }
    }
}

/// One file the loader did not use as it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataIssue {
    /// The path relative to the `--data` folder, `/`-separated.
    pub path: String,
    pub issue: IssueKind,
    /// Which file it copies, or why it cannot be read.
    pub detail: String,
}

impl DataIssue {
    pub fn action(&self) -> Action {
        self.issue.action()
    }
}

/// "data: 3 file(s) left out or merged (2 duplicate, 1 conflicting_labels); ..." for the
/// console, or none when there is nothing to say.
pub fn summary(issues: &[DataIssue]) -> Option<String> {
    if issues.is_empty() {
        return None;
    }
    let mut counts: std::collections::BTreeMap<IssueKind, usize> = Default::default();
    for issue in issues {
        *counts.entry(issue.issue).or_default() += 1;
    }
    let kinds: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.as_str()))
        .collect();
    Some(format!(
        "data: {} file(s) left out or merged ({}); each is a row of outputs/data_issues.csv",
        issues.len(),
        kinds.join(", ")
    ))
}

/// The rows of `outputs/data_issues.csv`: path, issue, detail, action.
pub fn rows(issues: &[DataIssue]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "path".to_string(),
        "issue".to_string(),
        "detail".to_string(),
        "action".to_string(),
    ]];
    for issue in issues {
        rows.push(vec![
            issue.path.clone(),
            issue.issue.as_str().to_string(),
            issue.detail.clone(),
            issue.action().as_str().to_string(),
        ]);
    }
    rows
}
