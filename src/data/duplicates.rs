//! Byte-identical files, as data rather than a refusal: copies of one class are kept once,
//! copies that carry different labels are left out (of training and evaluation alike), and a
//! copy in two splits of a pre-split folder is kept in the later split only (test over val
//! over train), so nothing leaks. `--strict-data` refuses copies across classes instead.

use std::collections::HashMap;

use crate::data::issues::{DataIssue, IssueKind};
use crate::error::{Result, TrainerError};

/// What makes two files the same bytes: two independent 64-bit hashes and the length (no
/// second read to compare them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// FNV-1a 64-bit, hex: the manifest's checksum.
    pub checksum: String,
    /// SipHash of the bytes.
    pub second: u64,
    pub len: u64,
}

impl Fingerprint {
    /// The fingerprint of a file's bytes.
    pub fn of(bytes: &[u8]) -> Fingerprint {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut hasher);
        Fingerprint {
            checksum: crate::checksum::checksum(bytes),
            second: hasher.finish(),
            len: bytes.len() as u64,
        }
    }
}

/// One readable image file, as the duplicate check sees it.
pub struct Member<'a> {
    pub id: &'a str,
    pub label: usize,
    /// Which split folder it is in (0 train, 1 val, 2 test; 0 for a folder of classes): the
    /// copy in the highest is kept.
    pub rank: u8,
    pub fingerprint: &'a Fingerprint,
}

/// Which files to keep (`keep[i]` for `files[i]`), and a row for each one not kept.
#[derive(Debug)]
pub struct Resolution {
    pub keep: Vec<bool>,
    pub issues: Vec<DataIssue>,
}

/// Resolves the copies among `files` (sorted by id); `strict` refuses copies across classes.
pub fn resolve(files: &[Member], classes: &[String], strict: bool) -> Result<Resolution> {
    let mut groups: HashMap<&Fingerprint, Vec<usize>> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        groups.entry(file.fingerprint).or_default().push(i);
    }
    let mut keep = vec![true; files.len()];
    let mut issues = Vec::new();
    let mut seen = vec![false; files.len()];
    for (i, file) in files.iter().enumerate() {
        if seen[i] {
            continue;
        }
        let group = &groups[file.fingerprint];
        for &j in group {
            seen[j] = true;
        }
        if group.len() < 2 {
            continue;
        }
        if group.iter().any(|&j| files[j].label != file.label) {
            conflict(files, group, classes, strict, &mut keep, &mut issues)?;
        } else {
            merge(files, group, &mut keep, &mut issues);
        }
    }
    issues.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Resolution { keep, issues })
}

/// Copies with different labels: every one is left out (or, strict, the run refused).
fn conflict(
    files: &[Member],
    group: &[usize],
    classes: &[String],
    strict: bool,
    keep: &mut [bool],
    issues: &mut Vec<DataIssue>,
) -> Result<()> {
    let first = &files[group[0]];
    if strict {
        let other = group
            .iter()
            .map(|&j| &files[j])
            .find(|f| f.label != first.label)
            .unwrap_or(first);
        return Err(TrainerError::bad_input(format!(
            "'{}' and '{}' are the same image (identical bytes) in two classes ('{}' and '{}'); an image can have one label only: remove one of them (without --strict-data such copies are left out and listed)",
            first.id, other.id, classes[first.label], classes[other.label]
        )));
    }
    let mut labels: Vec<&str> = group
        .iter()
        .map(|&j| classes[files[j].label].as_str())
        .collect();
    labels.sort();
    labels.dedup();
    for &j in group {
        keep[j] = false;
        let others: Vec<&str> = group
            .iter()
            .filter(|&&k| k != j)
            .map(|&k| files[k].id)
            .collect();
        issues.push(DataIssue {
            path: files[j].id.to_string(),
            issue: IssueKind::ConflictingLabels,
            detail: format!(
                "identical bytes to {} (classes {})",
                quoted(&others),
                labels.join(", ")
            ),
        });
    }
    Ok(())
}

/// Copies of one class: the one in the latest split is kept; among equals the shortest path
/// (`photo.png` over `photo (1).png`), then the first.
fn merge(files: &[Member], group: &[usize], keep: &mut [bool], issues: &mut Vec<DataIssue>) {
    let kept = group
        .iter()
        .copied()
        .max_by(|&a, &b| {
            let (x, y) = (&files[a], &files[b]);
            x.rank
                .cmp(&y.rank)
                .then(y.id.len().cmp(&x.id.len()))
                .then(b.cmp(&a))
        })
        .unwrap_or(group[0]);
    for &j in group.iter().filter(|&&j| j != kept) {
        keep[j] = false;
        let issue = if files[j].rank < files[kept].rank {
            IssueKind::CopyAcrossSplits
        } else {
            IssueKind::Duplicate
        };
        issues.push(DataIssue {
            path: files[j].id.to_string(),
            issue,
            detail: format!("identical bytes to '{}', which is kept", files[kept].id),
        });
    }
}

/// "'a/1.png', 'b/1.png'" (at most five, then "and N more").
fn quoted(ids: &[&str]) -> String {
    let mut text: Vec<String> = ids.iter().take(5).map(|id| format!("'{id}'")).collect();
    if ids.len() > 5 {
        text.push(format!("and {} more", ids.len() - 5));
    }
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn copies_of_one_class_are_kept_once_and_across_classes_left_out() {
        let (x, y) = (Fingerprint::of(b"x"), Fingerprint::of(b"y"));
        let files = [
            Member {
                id: "a/1.png",
                label: 0,
                rank: 0,
                fingerprint: &x,
            },
            Member {
                id: "a/2.png",
                label: 0,
                rank: 0,
                fingerprint: &x,
            },
            Member {
                id: "a/3.png",
                label: 0,
                rank: 0,
                fingerprint: &y,
            },
            Member {
                id: "b/3.png",
                label: 1,
                rank: 0,
                fingerprint: &y,
            },
        ];
        let r = resolve(&files, &classes(), false).unwrap();
        assert_eq!(r.keep, [true, false, false, false]);
        let kinds: Vec<IssueKind> = r.issues.iter().map(|i| i.issue).collect();
        assert_eq!(
            kinds,
            [
                IssueKind::Duplicate,
                IssueKind::ConflictingLabels,
                IssueKind::ConflictingLabels
            ]
        );
        let err = resolve(&files, &classes(), true).unwrap_err().to_string();
        assert!(err.contains("two classes"), "{err}");
    }

    #[test]
    fn a_copy_in_train_and_test_is_kept_in_test() {
        let x = Fingerprint::of(b"x");
        let files = [
            Member {
                id: "test/a/1.png",
                label: 0,
                rank: 2,
                fingerprint: &x,
            },
            Member {
                id: "train/a/9.png",
                label: 0,
                rank: 0,
                fingerprint: &x,
            },
        ];
        let r = resolve(&files, &classes(), false).unwrap();
        assert_eq!(r.keep, [true, false]);
        assert_eq!(r.issues[0].issue, IssueKind::CopyAcrossSplits);
        assert_eq!(r.issues[0].path, "train/a/9.png");
    }
}
