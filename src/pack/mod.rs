//! The output folder, kept safe: a run writes its pack into a staging folder beside the
//! target and swaps it in only when the pack is complete. An existing folder is replaced only
//! if it carries the marker of an earlier trainer run; a lock file beside it keeps two runs
//! from writing the same pack at once.

pub mod advice;
pub mod board;
pub mod canvas;
pub mod evaluation;
pub mod evidence;
pub mod label_issues;
pub mod plots;
pub mod run_state;
pub mod tensorboard;

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainerError};
use crate::interrupt;

/// The file that marks a folder as a trainer run (and so as safe to replace).
pub const MARKER: &str = crate::data::folder::PACK_MARKER;

/// Which command wrote a pack: a rerun of the same command replaces it; another command
/// refuses to (a bench into a workshop pack would lose its model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackKind {
    Workshop,
    Bench,
    Parity,
    LrFind,
    Evaluation,
}

impl PackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PackKind::Workshop => "workshop",
            PackKind::Bench => "bench",
            PackKind::Parity => "parity",
            PackKind::LrFind => "lr-find",
            PackKind::Evaluation => "evaluation",
        }
    }

    /// The command that writes it, as a user types it.
    fn command(self) -> &'static str {
        match self {
            PackKind::Workshop => "trainer",
            PackKind::Bench => "trainer bench",
            PackKind::Parity => "trainer parity",
            PackKind::LrFind => "trainer lr-find",
            PackKind::Evaluation => "trainer evaluate",
        }
    }

    fn parse(text: &str) -> Option<PackKind> {
        [
            PackKind::Workshop,
            PackKind::Bench,
            PackKind::Parity,
            PackKind::LrFind,
            PackKind::Evaluation,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// What an existing pack's marker says: the command that wrote it and the files it wrote
/// (both absent in packs written before the marker listed them).
#[derive(Debug, Default)]
struct MarkerContent {
    kind: Option<PackKind>,
    files: Option<Vec<String>>,
}

fn read_marker(pack: &Path) -> MarkerContent {
    match fs::read_to_string(pack.join(MARKER)) {
        Ok(text) => parse_marker(pack, &text),
        Err(_) => MarkerContent::default(),
    }
}

/// The marker `text` of `pack`.
fn parse_marker(pack: &Path, text: &str) -> MarkerContent {
    let mut content = MarkerContent::default();
    for line in text.lines() {
        if let Some(kind) = line.strip_prefix("command: ") {
            content.kind = PackKind::parse(kind.trim());
        } else if let Some(file) = line.strip_prefix("file: ") {
            content
                .files
                .get_or_insert_with(Vec::new)
                .push(file.to_string());
        }
    }
    if content.kind.is_none() {
        // Written before the marker named its command: what it holds says.
        content.kind = if pack.join("bench").is_dir() {
            Some(PackKind::Bench)
        } else if pack.join("parity").is_dir() {
            Some(PackKind::Parity)
        } else if pack.join("outputs").is_dir() {
            Some(PackKind::Workshop)
        } else {
            None
        };
    }
    content
}

/// Refuses to replace a pack another command wrote (its files would be lost).
fn check_kind(target: &Path, kind: PackKind) -> Result<()> {
    if !target.join(MARKER).is_file() {
        return Ok(());
    }
    match read_marker(target).kind {
        Some(other) if other != kind => Err(TrainerError::bad_input(format!(
            "--out '{}' holds a {} pack (written by `{}`); `{}` would replace it and lose its files: choose another --out",
            target.display(),
            other.as_str(),
            other.command(),
            kind.command()
        ))),
        _ => Ok(()),
    }
}

/// Adds files another command wrote into a pack (`compare`'s notes) to its marker's list, so
/// a rerun replaces them as trainer's own instead of keeping them as the user's.
pub fn record_written(pack: &Path, files: &[&str]) -> Result<()> {
    let marker = pack.join(MARKER);
    let mut text =
        fs::read_to_string(&marker).map_err(|e| TrainerError::io("reading", &marker, e))?;
    let content = parse_marker(pack, &text);
    for file in files {
        if content
            .files
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == file))
        {
            continue;
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("file: {file}\n"));
    }
    write_atomic(&marker, text)
}

/// What trainer writes at the top of a pack (a workshop run, bench or parity), for packs
/// whose marker does not list its files: a rerun replaces these whole, and keeps anything
/// else at the top.
pub const OWNED: [&str; 9] = [
    MARKER,
    "README.md",
    "outputs",
    "curves",
    "checkpoints",
    "reports",
    "tensorboard",
    "bench",
    "parity",
];

/// Refuses output paths that must never be replaced: a file, the filesystem root, the home
/// folder, the current folder or one of its ancestors, folders that are not trainer runs, and
/// packs another command than `kind`'s wrote. Commands call it before any work, so a refusal
/// loses nothing.
pub fn check_target(target: &Path, kind: PackKind) -> Result<()> {
    if target.as_os_str().is_empty() {
        return Err(TrainerError::bad_input("--out must not be empty"));
    }
    if target.exists() && !target.is_dir() {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' is a file, not a folder",
            target.display()
        )));
    }
    let absolute = absolute(target)?;
    if absolute.parent().is_none() {
        return Err(TrainerError::bad_input(
            "--out must not be the filesystem root",
        ));
    }
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from)
        && same_path(&absolute, &home)
    {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' is your home folder; choose a folder inside it",
            target.display()
        )));
    }
    if let Ok(cwd) = std::env::current_dir()
        && cwd.ancestors().any(|a| same_path(&absolute, a))
    {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' is the current folder or contains it; choose a new folder",
            target.display()
        )));
    }
    if target.is_dir() && !target.join(MARKER).is_file() && !is_empty_dir(target) {
        return Err(TrainerError::ForeignOutput(target.to_path_buf()));
    }
    check_kind(target, kind)
}

/// Refuses an output folder inside the image folder `data`: the pack would be read as data by
/// the next run (and change the folder the checkpoint records).
pub fn check_outside(out: &Path, data: &Path) -> Result<()> {
    let resolve = |p: &Path| -> Result<PathBuf> {
        let p = absolute(p)?;
        // The nearest existing ancestor, canonical, with the rest appended.
        let mut existing = p.as_path();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                _ => break,
            }
        }
        let mut resolved = fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
        resolved.extend(rest.iter().rev());
        Ok(resolved)
    };
    if resolve(out)?.starts_with(resolve(data)?) {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' is inside --data '{}': the pack would be read as training data by the next run; choose a folder outside it",
            out.display(),
            data.display()
        )));
    }
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| TrainerError::io("resolving", path, e))
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// The folder that holds `target` (created if missing) and the target's file name.
fn parent_and_name(target: &Path) -> Result<(PathBuf, String)> {
    let absolute = absolute(target)?;
    let parent = absolute
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| TrainerError::bad_input("--out must not be the filesystem root"))?;
    let name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| TrainerError::bad_input("--out must name a folder"))?;
    fs::create_dir_all(&parent).map_err(|e| {
        out_refused(target, &parent, &e)
            .unwrap_or_else(|| TrainerError::io("creating folder", &parent, e))
    })?;
    Ok((parent, name))
}

/// The error for an output folder whose parent takes no new files: a permission, a read-only
/// or virtual filesystem (/sys, /proc) is the user's choice of --out (one line, exit 2); any
/// other failure (a full disk) stays an I/O error of the run (None).
fn out_refused(target: &Path, parent: &Path, e: &std::io::Error) -> Option<TrainerError> {
    use std::io::ErrorKind::{NotFound, PermissionDenied, ReadOnlyFilesystem};
    if !matches!(e.kind(), NotFound | PermissionDenied | ReadOnlyFilesystem) {
        return None;
    }
    let reason = e.to_string();
    let reason = reason.split(" (os error").next().unwrap_or_default();
    Some(TrainerError::bad_input(format!(
        "--out '{}' cannot be written: no file can be made in '{}' ({reason}); choose a folder you can write",
        target.display(),
        parent.display()
    )))
}

/// A lock on an output folder, held for the whole run: `.<name>.lock` beside it, holding the
/// process id. Released (deleted) on drop.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
}

impl OutputLock {
    /// Takes the lock, or refuses with a clear message when a live process holds it. A lock
    /// left by a process that no longer runs is taken over.
    pub fn acquire(target: &Path) -> Result<OutputLock> {
        let (parent, name) = parent_and_name(target)?;
        let path = parent.join(format!(".{name}.lock"));
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    let _ = writeln!(file, "{}", std::process::id());
                    interrupt::register_cleanup(path.clone());
                    // A killed run's earlier pack, moved aside, goes back before this run
                    // writes anything into the target (its state after each epoch).
                    remove_stale(&parent, &name);
                    return Ok(OutputLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if process_alive(pid) => {
                            return Err(TrainerError::bad_input(format!(
                                "another trainer run (process {pid}) is writing '{}'; wait for it to finish or choose another --out",
                                target.display()
                            )));
                        }
                        _ => {
                            // Stale: its process is gone.
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => {
                    return Err(out_refused(target, &parent, &e)
                        .unwrap_or_else(|| TrainerError::io("creating lock file", &path, e)));
                }
            }
        }
        Err(TrainerError::bad_input(format!(
            "could not take the lock '{}'",
            path.display()
        )))
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        interrupt::unregister_cleanup(&self.path);
    }
}

/// Whether a process with this id runs: /proc on Linux, kill(pid, 0) on the other Unixes
/// (macOS), `tasklist` on Windows; assumed alive where none of them answers (a lock is then
/// never taken over, nothing is removed).
pub fn process_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        Path::new(&format!("/proc/{pid}")).exists()
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let answer = unsafe { libc::kill(pid as libc::pid_t, 0) };
        answer == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(windows)]
    {
        let filter = format!("PID eq {pid}");
        std::process::Command::new("tasklist")
            .args(["/FI", &filter, "/NH", "/FO", "CSV"])
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).contains(&format!("\"{pid}\"")))
            .unwrap_or(true)
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = pid;
        true
    }
}

/// A pack being written. Dropped without [`Staging::commit`], it removes itself.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    target: PathBuf,
    kind: PackKind,
    /// Every file written, relative to the pack (the marker lists them).
    written: std::sync::Mutex<Vec<String>>,
    committed: bool,
}

impl Staging {
    /// Creates `.<name>.staging-<pid>` beside the target. The caller holds the target's
    /// [`OutputLock`], whose taking already cleaned up after earlier, killed runs.
    pub fn begin(target: &Path, kind: PackKind) -> Result<Staging> {
        let (parent, name) = parent_and_name(target)?;
        let dir = parent.join(format!(".{name}.staging-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| TrainerError::io("removing", &dir, e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| TrainerError::io("creating folder", &dir, e))?;
        interrupt::register_cleanup(dir.clone());
        Ok(Staging {
            dir,
            target: target.to_path_buf(),
            kind,
            written: std::sync::Mutex::new(Vec::new()),
            committed: false,
        })
    }

    /// Where a file of the pack goes while it is written; creates its folder.
    pub fn path(&self, relative: &str) -> Result<PathBuf> {
        if let Ok(mut written) = self.written.lock() {
            written.push(relative.to_string());
        }
        let path = self.dir.join(relative);
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder)
                .map_err(|e| TrainerError::io("creating folder", folder, e))?;
        }
        Ok(path)
    }

    /// Writes text to a file of the pack.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = self.path(relative)?;
        fs::write(&path, contents).map_err(|e| TrainerError::io("writing", &path, e))
    }

    /// Marks the pack as a trainer run (the marker names the command and lists every file
    /// it wrote) and swaps it in place of the target. What the user added to the earlier
    /// pack (every file its marker does not list) is linked into the new one first (a hard
    /// link, or a copy where the file system has none), never moved: until the swap each of
    /// those files stays where the user put it, after it the new pack has it, so a failure or
    /// a kill at any moment leaves every file of the user's in the target or in the earlier
    /// pack moved aside (`.<name>.old-<pid>`, which the next run puts back). Their paths
    /// are returned. The earlier pack is removed only after the new one is in place.
    pub fn commit(mut self) -> Result<Vec<String>> {
        let mut marker = format!(
            "written by trainer; a later `{}` may replace this folder, keeping the files you add to it\ncommand: {}\n",
            self.kind.command(),
            self.kind.as_str()
        );
        let mut written = self.written.lock().map(|w| w.clone()).unwrap_or_default();
        written.sort();
        written.dedup();
        for file in written {
            marker.push_str(&format!("file: {file}\n"));
        }
        swap_step();
        self.write(MARKER, marker)?;
        check_target(&self.target, self.kind)?;
        let (parent, name) = parent_and_name(&self.target)?;
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        let had_old = self.target.exists();
        let kept = if had_old {
            self.carry_over_user_files()?
        } else {
            Vec::new()
        };
        if had_old {
            swap_step();
            fs::rename(&self.target, &old)
                .map_err(|e| TrainerError::io("moving the earlier pack aside", &self.target, e))?;
        }
        swap_step();
        if let Err(e) = fs::rename(&self.dir, &self.target) {
            if had_old {
                let _ = fs::rename(&old, &self.target);
            }
            return Err(TrainerError::io(
                "moving the new pack into place",
                &self.target,
                e,
            ));
        }
        self.committed = true;
        interrupt::unregister_cleanup(&self.dir);
        if had_old {
            swap_step();
            fs::remove_dir_all(&old)
                .map_err(|e| TrainerError::io("removing the earlier pack", &old, e))?;
        }
        Ok(kept)
    }

    /// Links every file of the earlier pack that trainer did not write (and the new pack
    /// does not have) into the new pack, at the same place; returns their paths, sorted. The
    /// originals stay where they are. The earlier marker's list says what trainer wrote; a
    /// marker without one (an older pack) leaves everything under trainer's top-level folders
    /// ([`OWNED`]) to be replaced.
    fn carry_over_user_files(&self) -> Result<Vec<String>> {
        let listed = read_marker(&self.target).files;
        let mut files = Vec::new();
        collect_files(&self.target, &self.target, &mut files);
        let mut kept = Vec::new();
        for relative in files {
            let owned = match &listed {
                Some(list) => relative == MARKER || list.contains(&relative),
                None => OWNED.contains(&relative.split('/').next().unwrap_or_default()),
            };
            let into = self.dir.join(&relative);
            if owned || into.exists() {
                continue;
            }
            if let Some(folder) = into.parent() {
                fs::create_dir_all(folder)
                    .map_err(|e| TrainerError::io("creating folder", folder, e))?;
            }
            let from = self.target.join(&relative);
            swap_step();
            link_or_copy(&from, &into)
                .map_err(|e| TrainerError::io("keeping your file", &from, e))?;
            kept.push(relative);
        }
        kept.sort();
        Ok(kept)
    }
}

/// A second name for the file `from` at `into` (a hard link: no bytes copied, the original
/// untouched); a copy where the file system cannot link. A symbolic link stays a link.
fn link_or_copy(from: &Path, into: &Path) -> std::io::Result<()> {
    let is_link = fs::symlink_metadata(from).is_ok_and(|m| m.file_type().is_symlink());
    #[cfg(unix)]
    if is_link {
        return std::os::unix::fs::symlink(fs::read_link(from)?, into);
    }
    let _ = is_link;
    match fs::hard_link(from, into) {
        Ok(()) => Ok(()),
        Err(_) => fs::copy(from, into).map(|_| ()),
    }
}

/// `TRAINER_KILL_AT_SWAP_STEP=N` (for tests): the process kills itself (SIGKILL; elsewhere
/// an abort) just before the Nth change to the file system of [`Staging::commit`]: each
/// file of the user's linked, the earlier pack moved aside, the new one moved in, the
/// earlier one removed. tests/claims.rs kills a rerun at every step and checks every file
/// of the user's after each.
fn swap_step() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static STEP: AtomicUsize = AtomicUsize::new(0);
    let Some(at) = std::env::var("TRAINER_KILL_AT_SWAP_STEP")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if STEP.fetch_add(1, Ordering::SeqCst) + 1 == at {
        #[cfg(unix)]
        // SAFETY: kill(2) on this process's own id; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

/// Every file under `dir` (links as files, not followed), as `/`-separated paths relative
/// to `root`.
fn collect_files(dir: &Path, root: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            collect_files(&path, root, out);
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The files of the pack in `pack` (as its marker lists them, with the marker), one line
/// per folder: `outputs/: config.json, metrics_summary.json, ...`.
pub fn listing(pack: &Path) -> Vec<String> {
    let mut files = read_marker(pack).files.unwrap_or_default();
    files.push(MARKER.to_string());
    files.sort();
    files.dedup();
    let mut folders: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for file in files {
        let (folder, name) = match file.rsplit_once('/') {
            Some((folder, name)) => (format!("{folder}/"), name.to_string()),
            None => ("./".to_string(), file),
        };
        folders.entry(folder).or_default().push(name);
    }
    folders
        .into_iter()
        .map(|(folder, names)| format!("  {folder} {}", names.join(", ")))
        .collect()
}

/// The console line for files kept from an earlier pack, if any (at most ten named).
pub fn kept_note(kept: &[String]) -> Option<String> {
    (!kept.is_empty()).then(|| {
        let more = kept.len().saturating_sub(10);
        format!(
            "kept from the earlier pack (not written by trainer): {}{}",
            kept[..kept.len().min(10)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    })
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
            interrupt::unregister_cleanup(&self.dir);
        }
    }
}

/// Cleans up after runs that were killed: removes `.<name>.staging-<pid>` folders whose
/// process is gone, and puts an earlier pack moved aside to `.<name>.old-<pid>` back in place
/// when the swap did not finish (removes it when it did).
fn remove_stale(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        for kind in ["staging", "old"] {
            let prefix = format!(".{name}.{kind}-");
            if let Some(pid) = file_name
                .strip_prefix(&prefix)
                .and_then(|p| p.parse::<u32>().ok())
                && pid != std::process::id()
                && !process_alive(pid)
            {
                let target = parent.join(name);
                if kind == "old" && !target.exists() {
                    let _ = fs::rename(entry.path(), &target);
                } else {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

/// Writes a file whole or not at all (a temporary beside it, then a rename), so a failed or
/// interrupted write never leaves half a file and a reader never sees one.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    // Errors name the file asked for, not the temporary.
    std::fs::write(&tmp, contents).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TrainerError::io("writing", path, e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TrainerError::io("writing", path, e)
    })
}

// /proc is Linux's.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn an_unwritable_out_is_bad_input_naming_out_not_the_lock_file() {
        for out in ["/proc/x", "/proc/trainer-no-such/x"] {
            let err = OutputLock::acquire(Path::new(out)).unwrap_err();
            let message = err.to_string();
            assert_eq!(err.exit_code(), 2, "{message}");
            assert!(
                message.starts_with(&format!("--out '{out}' cannot be written")),
                "{message}"
            );
            assert!(
                !message.contains("lock") && message.lines().count() == 1,
                "{message}"
            );
        }
    }
}
