//! `trainer sweep`: a 2 x 2 x 2 grid planned, run by the local executor and by a real
//! single-node Slurm job array, collected into the same leaderboard; killed tasks redone;
//! claims respected; every bad input refused with one line and nothing written.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Learning rate x batch size x seed, a few epochs of the Tiny CNN on the CPU.
const GRID: &str = "backend = \"cpu\"
models = [\"cnn\"]
samples_per_class = 20
epochs_cnn = 2
lr_cnn = [0.003, 0.01]
batch_size = [16, 32]
seed = [1, 2]
";

/// `trainer sweep COMMAND DIR`.
fn sweep(command: &str, dir: &Path) -> Trainer {
    trainer().subcommand(&format!("sweep {command}")).arg(dir)
}

/// The leaderboard without its wall-time column, which differs from run to run.
fn leaderboard_without_time(dir: &Path) -> Vec<Vec<String>> {
    let (header, rows) = read_csv(&dir.join("leaderboard.csv"));
    let time = header.iter().position(|h| h == "wall_seconds").unwrap();
    std::iter::once(header)
        .chain(rows)
        .map(|mut r| {
            r.remove(time);
            r
        })
        .collect()
}

fn check_leaderboard(dir: &Path) {
    let text = fs::read_to_string(dir.join("leaderboard.csv")).unwrap();
    assert!(text.contains("\r\n"), "the seed's CRLF line ends");
    let (header, rows) = read_csv(&dir.join("leaderboard.csv"));
    for column in [
        "rank",
        "task",
        "batch_size",
        "lr_cnn",
        "seed",
        "status",
        "val_acc",
        "val_loss",
        "test_acc",
        "backend",
        "device",
    ] {
        assert!(
            header.iter().any(|h| h == column),
            "column {column} in {header:?}"
        );
    }
    assert_eq!(rows.len(), 8);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut last = f64::INFINITY;
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[col("rank")], (i + 1).to_string());
        assert_eq!(row[col("status")], "done");
        assert_eq!(row[col("backend")], "cpu");
        let acc: f64 = row[col("val_acc")].parse().unwrap();
        let test: f64 = row[col("test_acc")].parse().unwrap();
        assert!((0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&test));
        assert!(acc <= last, "ranked by validation accuracy");
        last = acc;
        // The validation figures are those of the task's kept epoch, as its pack logs them.
        let (log_header, log) = read_csv(
            &dir.join("runs")
                .join(&row[col("task")])
                .join("outputs/training_log.csv"),
        );
        let at = |name: &str| log_header.iter().position(|h| h == name).unwrap();
        let kept = log
            .iter()
            .find(|r| r[at("epoch")] == row[col("best_epoch")])
            .expect("the kept epoch is logged");
        assert_eq!(
            kept[at("val_loss")],
            row[col("val_loss")],
            "task {}",
            row[col("task")]
        );
        assert_eq!(kept[at("val_acc")], row[col("val_acc")]);
    }
    let md = fs::read_to_string(dir.join("leaderboard.md")).unwrap();
    assert!(md.contains("seeds aggregated"), "{md}");
    for key in ["batch_size", "lr_cnn", "seed"] {
        let png = fs::read(dir.join(format!("sweep_{key}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}

/// The Kubernetes manifest runs the binary the Slurm script runs, and mounts every path
/// plan.json names (the sweep folder, the binary, each image folder) at the same path.
fn check_every_path_is_mounted(dir: &Path) {
    let plan: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    let job: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(dir.join("k8s-job.yaml")).unwrap()).unwrap();
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let trainer = plan["launch"]["trainer"].as_str().unwrap();
    assert_eq!(container["command"][0].as_str(), Some(trainer));
    let sbatch = fs::read_to_string(dir.join("slurm.sbatch")).unwrap();
    assert!(
        sbatch.contains(&format!("exec '{trainer}' sweep run"))
            || sbatch.contains(&format!("exec {trainer} sweep run")),
        "{sbatch}"
    );
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    let volumes = job["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap();
    assert_eq!(volumes.len(), mounts.len(), "a volume for every mount");
    let mut paths = vec![plan["launch"]["dir"].as_str().unwrap(), trainer];
    for task in plan["tasks"].as_array().unwrap() {
        if let Some(data) = task["settings"]["data"].as_str() {
            paths.push(data);
        }
    }
    for path in paths {
        assert!(
            mounts.iter().any(|m| Path::new(path).starts_with(m)),
            "{path} is under no mount of k8s-job.yaml: {mounts:?}"
        );
    }
}

#[test]
fn a_kubernetes_job_mounts_the_image_folders_and_the_binary() {
    let root = temp();
    let data = image_folder(root.path(), 6);
    let toml = format!(
        "backend = \"cpu\"\nmodels = [\"cnn\"]\nimage_size = 12\ndata = [{:?}]\nseed = [1, 2]\n",
        data.to_str().unwrap()
    );
    let bin = root.path().join("bin dir/trainer");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::write(&bin, "").unwrap();
    sweep_plan(root.path(), &toml, "k8s")
        .arg("--trainer-bin")
        .arg(&bin)
        .run_ok();
    let dir = root.path().join("k8s");
    check_every_path_is_mounted(&dir);
    let yaml = fs::read_to_string(dir.join("k8s-job.yaml")).unwrap();
    assert!(yaml.contains(bin.to_str().unwrap()), "{yaml}");
    assert!(yaml.contains(data.to_str().unwrap()), "{yaml}");
}

/// Whether a single-node Slurm answers; without one the Slurm part is skipped (printing
/// why), unless TRAINER_REQUIRE_SLURM=1, when it fails.
fn slurm_available() -> bool {
    let up = Command::new("scontrol")
        .arg("ping")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("UP"));
    if !up {
        if std::env::var("TRAINER_REQUIRE_SLURM").as_deref() == Ok("1") {
            panic!(
                "no Slurm answers, and TRAINER_REQUIRE_SLURM=1 requires one (scripts/slurm-local.sh start)"
            );
        }
        eprintln!("sweep through Slurm: skipped: no Slurm answers (scripts/slurm-local.sh start)");
    }
    up
}

fn submit_and_wait(dir: &Path) {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(dir.join("slurm.sbatch"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let started = Instant::now();
    loop {
        let queue = Command::new("squeue")
            .args(["-h", "-j", &id])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&queue.stdout).trim().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "job {id} still queued after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_grid_runs_locally_and_through_slurm_into_the_same_leaderboard() {
    let root = temp();
    sweep_plan(root.path(), GRID, "local")
        .args(["--parallel", "3"])
        .run_ok();
    let dir = root.path().join("local");
    let planned: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    let tasks = &planned["tasks"];
    assert_eq!(tasks.as_array().unwrap().len(), 8);
    assert_eq!(
        planned["varying"],
        serde_json::json!(["batch_size", "lr_cnn", "seed"])
    );
    // The last setting varies fastest: task 5 = batch 32, lr 0.003, seed 2.
    assert_eq!(tasks[5]["settings"]["batch_size"], 32);
    assert_eq!(tasks[5]["settings"]["lr_cnn"], 0.003);
    assert_eq!(tasks[5]["settings"]["seed"], 2);

    let sbatch = fs::read_to_string(dir.join("slurm.sbatch")).unwrap();
    assert!(sbatch.contains("#SBATCH --array=0-7%3"), "{sbatch}");
    assert!(sbatch.contains("#SBATCH --cpus-per-task=1"));
    assert!(
        !sbatch.contains("--gres"),
        "no GPU asked for on the CPU backend"
    );
    let job: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(dir.join("k8s-job.yaml")).unwrap()).unwrap();
    assert_eq!(job["kind"].as_str(), Some("Job"));
    assert_eq!(job["spec"]["completionMode"].as_str(), Some("Indexed"));
    assert_eq!(job["spec"]["completions"].as_u64(), Some(8));
    assert_eq!(job["spec"]["parallelism"].as_u64(), Some(3));
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> = container["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&command[1..], ["sweep", "run", dir.to_str().unwrap()]);
    check_every_path_is_mounted(&dir);

    let output = sweep("run", &dir).args(["--local", "--jobs", "2"]).run_ok();
    assert!(
        stdout(&output).contains("ran 8, 0 finished earlier, 0 failed"),
        "{}",
        stdout(&output)
    );
    sweep("collect", &dir).run_ok();
    check_leaderboard(&dir);
    for i in 0..8 {
        assert!(
            dir.join(format!("runs/{i:04}/outputs/metrics_summary.json"))
                .is_file()
        );
        // Each task writes its own TensorBoard runs: `tensorboard --logdir DIR/runs`.
        let board = dir.join(format!("runs/{i:04}/tensorboard/cnn"));
        let events: Vec<_> = fs::read_dir(&board).unwrap().flatten().collect();
        assert_eq!(events.len(), 1, "{}", board.display());
        assert!(
            events[0]
                .file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        );
    }
    // Rerunning finds every task finished.
    let again = sweep("run", &dir).arg("--local").run_ok();
    assert!(
        stdout(&again).contains("ran 0, 8 finished earlier"),
        "{}",
        stdout(&again)
    );

    if !slurm_available() {
        return;
    }
    sweep_plan(root.path(), GRID, "slurm")
        .args(["--parallel", "4"])
        .run_ok();
    let slurm_dir = root.path().join("slurm");
    submit_and_wait(&slurm_dir);
    sweep("collect", &slurm_dir).run_ok();
    check_leaderboard(&slurm_dir);
    assert_eq!(
        leaderboard_without_time(&slurm_dir),
        leaderboard_without_time(&dir)
    );
    let logs = fs::read_dir(slurm_dir.join("logs")).unwrap().count();
    assert_eq!(logs, 8, "one Slurm output file per array task");
}

#[test]
fn a_task_killed_mid_run_is_redone_and_a_claimed_task_is_left_alone() {
    let root = temp();
    // One task long enough to be killed while it trains.
    let long = "backend = \"cpu\"\nmodels = [\"cnn\"]\nsamples_per_class = 3000\nepochs_cnn = 80\nlr_cnn = [0.006]\n";
    sweep_plan(root.path(), long, "kill").run_ok();
    let dir = root.path().join("kill");
    let mut child = sweep("run", &dir)
        .args(["--task-index", "0"])
        .command()
        .spawn()
        .unwrap();
    let claim = dir.join("state/0000.claim");
    let started = Instant::now();
    while !claim.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the task never claimed itself"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed once its run holds the pack's lock, that is, while it trains.
    wait_for(
        &lock_of(&dir.join("runs/0000")),
        Duration::from_secs(60),
        "the task's run",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.join("state/0000.json").exists(),
        "killed before it finished"
    );
    assert!(
        !dir.join("runs/0000/outputs").exists(),
        "no half pack in place"
    );

    // A claim held by a live process (this test) is left alone: nothing runs, nothing written.
    let host = fs::read_to_string(&claim).unwrap();
    let host = host.split_whitespace().next().unwrap().to_string();
    fs::write(&claim, format!("{host} {}\n", std::process::id())).unwrap();
    let busy = sweep("run", &dir).args(["--task-index", "0"]).run_ok();
    assert!(stdout(&busy).contains("being run by"), "{}", stdout(&busy));
    assert!(!dir.join("state/0000.json").exists());

    // Another host's claim counts while its heartbeat is fresh, and not after 2 minutes.
    fs::write(&claim, "another-host 1\n").unwrap();
    let busy = sweep("run", &dir).args(["--task-index", "0"]).run_ok();
    assert!(stdout(&busy).contains("being run by"), "{}", stdout(&busy));
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(180);
    fs::File::options()
        .append(true)
        .open(&claim)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let taken = sweep("run", &dir).args(["--task-index", "0"]).run_ok();
    assert!(
        stdout(&taken).contains("task 0000: done"),
        "{}",
        stdout(&taken)
    );
    fs::remove_dir_all(dir.join("runs/0000")).unwrap();
    fs::remove_file(dir.join("state/0000.json")).unwrap();

    // The killed worker's claim (its process is gone) is taken over and the task redone.
    fs::write(&claim, format!("{host} 4194303\n")).unwrap();
    let redo = sweep("run", &dir).args(["--task-index", "0"]).run_ok();
    assert!(
        stdout(&redo).contains("task 0000: done"),
        "{}",
        stdout(&redo)
    );
    assert!(!claim.exists(), "the claim is released");
    let skipped = sweep("run", &dir).args(["--task-index", "0"]).run();
    assert!(
        stdout(&skipped).contains("done earlier, skipped"),
        "{}",
        stdout(&skipped)
    );
    sweep("collect", &dir).run_ok();
}

#[test]
fn failed_and_missing_tasks_are_listed_and_the_others_still_run() {
    let root = temp();
    let data = image_folder(root.path(), 8);
    let copy = root.path().join("gone");
    fs::create_dir_all(&copy).unwrap();
    for class in ["diagonal", "horizontal", "vertical"] {
        fs::create_dir_all(copy.join(class)).unwrap();
        for entry in fs::read_dir(data.join(class)).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), copy.join(class).join(entry.file_name())).unwrap();
        }
    }
    // Relative data folders are read from the TOML's folder.
    let toml = "backend = \"cpu\"\nmodels = [\"baseline\"]\nepochs_baseline = 1\nimage_size = 8\ndata = [\"gone\", \"my images\"]\nseed = [1, 2]\n";
    sweep_plan(root.path(), toml, "mixed").run_ok();
    let dir = root.path().join("mixed");
    fs::remove_dir_all(&copy).unwrap();
    // Task 0 (gone, seed 1) fails, task 1 (gone, seed 2) also; 2 runs; 3 is never run.
    let failed = sweep("run", &dir).args(["--task-index", "0"]).run_fail(1);
    assert_eq!(
        stderr(&failed).trim().lines().count(),
        1,
        "{}",
        stderr(&failed)
    );
    sweep("run", &dir).args(["--task-index", "2"]).run_ok();
    let collected = sweep("collect", &dir).run_fail(1);
    assert!(
        stderr(&collected).contains("1 of 4 tasks failed and 2 are missing"),
        "{}",
        stderr(&collected)
    );
    let (header, rows) = read_csv(&dir.join("leaderboard.csv"));
    let status = header.iter().position(|h| h == "status").unwrap();
    let statuses: Vec<&str> = rows.iter().map(|r| r[status].as_str()).collect();
    assert_eq!(statuses, ["done", "failed", "missing", "missing"]);
    let md = fs::read_to_string(dir.join("leaderboard.md")).unwrap();
    assert!(
        md.contains("## Failed") && md.contains("## Missing"),
        "{md}"
    );
}

/// `cnn_widths` sweeps as a list of width lists: one task per shape, each pack and the
/// leaderboard naming its CNN.
#[test]
fn a_sweep_over_cnn_shapes_runs_one_task_per_shape() {
    let root = temp();
    let toml = "backend = \"cpu\"\nmodels = [\"cnn\"]\nsamples_per_class = 10\nepochs_cnn = 1\ncnn_widths = [[8, 16], [4, 6, 8]]\n";
    sweep_plan(root.path(), toml, "shapes").run_ok();
    let dir = root.path().join("shapes");
    let plan: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["tasks"].as_array().unwrap().len(), 2, "{plan}");
    sweep("run", &dir).args(["--local", "--quiet"]).run_ok();
    sweep("collect", &dir).run_ok();
    let (header, rows) = read_csv(&dir.join("leaderboard.csv"));
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let mut shapes: Vec<&str> = rows.iter().map(|r| r[col("cnn_widths")].as_str()).collect();
    shapes.sort();
    assert_eq!(shapes.len(), 2, "{header:?} {rows:?}");
    assert_ne!(shapes[0], shapes[1]);
    let models: Vec<&str> = rows.iter().map(|r| r[col("model")].as_str()).collect();
    assert!(
        models.contains(&"cnn-4-6-8") && models.contains(&"cnn"),
        "{rows:?}"
    );
    let png = fs::read(dir.join("sweep_cnn_widths.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // A bad value is named with its key and line; an axis that changes no task is refused.
    let bad = sweep_plan(
        root.path(),
        "models = [\"cnn\"]\ncolor = [\"gray\", \"purple\"]\n",
        "purple",
    )
    .run_fail(2);
    assert!(
        stderr(&bad).contains("line 2: 'color' = \"purple\""),
        "{}",
        stderr(&bad)
    );
    let idle = sweep_plan(
        root.path(),
        "models = [\"baseline\"]\ncnn_widths = [[8, 16], [4, 8]]\n",
        "idle",
    )
    .run_fail(2);
    assert!(
        stderr(&idle).contains("'cnn_widths' varies but changes no task"),
        "{}",
        stderr(&idle)
    );
    assert!(!root.path().join("idle").exists());
}

/// Bad input: one line, exit 2, nothing written or removed.
#[test]
fn bad_sweeps_are_refused_with_one_line() {
    let root = temp();
    let cases = [
        ("unknown", "lr = [0.1, 0.2]\n", "unknown setting 'lr'"),
        ("empty", "seed = []\n", "'seed' is an empty list"),
        (
            "bad value",
            "lr_cnn = [0.01, -1.0]\n",
            "--lr-cnn must be a positive",
        ),
        ("no folder", "data = [\"nowhere\"]\n", "the image folder"),
    ];
    for (name, toml, message) in cases {
        let output = sweep_plan(root.path(), toml, name).run_fail(2);
        assert!(
            stderr(&output).contains(message),
            "{name}: {}",
            stderr(&output)
        );
        assert_eq!(stderr(&output).trim().lines().count(), 1);
        assert!(!root.path().join(name).exists(), "{name}: nothing written");
    }
    let seeds: Vec<String> = (0..101).map(|s| s.to_string()).collect();
    let lrs: Vec<String> = (1..=100).map(|l| format!("0.{l:03}")).collect();
    let huge = format!(
        "seed = [{}]\nlr_cnn = [{}]\n",
        seeds.join(", "),
        lrs.join(", ")
    );
    let output = sweep_plan(root.path(), &huge, "huge").run_fail(2);
    assert!(
        stderr(&output).contains("more than 10000"),
        "{}",
        stderr(&output)
    );
    sweep_plan(root.path(), &huge, "drawn")
        .args(["--max-runs", "5", "--draw-seed", "7"])
        .run_ok();
    let first = fs::read_to_string(root.path().join("drawn/plan.json")).unwrap();
    assert!(first.contains("\"grid_size\": 10100"));

    // Outside the plan, not a sweep, no index.
    let dir = root.path().join("drawn");
    let outside = sweep("run", &dir).args(["--task-index", "5"]).run_fail(2);
    assert!(
        stderr(&outside).contains("outside the plan (0 to 4)"),
        "{}",
        stderr(&outside)
    );
    let not_sweep = sweep("collect", root.path()).run_fail(2);
    assert!(stderr(&not_sweep).contains("is not a sweep"));
    let no_index = sweep("run", &dir).run_fail(2);
    assert!(stderr(&no_index).contains("no task index"));

    // A plan edited by hand is refused, and stays as the user left it.
    let edited = first.replacen("\"seed\": ", "\"seed\": 9", 1);
    fs::write(dir.join("plan.json"), &edited).unwrap();
    let output = sweep("run", &dir).args(["--task-index", "0"]).run_fail(2);
    assert!(
        stderr(&output).contains("was edited"),
        "{}",
        stderr(&output)
    );
    assert_eq!(fs::read_to_string(dir.join("plan.json")).unwrap(), edited);
    assert!(fs::read_dir(dir.join("runs")).unwrap().next().is_none());

    // A folder that is not a sweep is not planned into.
    let foreign = root.path().join("foreign");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "mine").unwrap();
    sweep_plan(root.path(), "seed = [1, 2]\n", "foreign").run_fail(2);
    assert_eq!(fs::read_dir(&foreign).unwrap().count(), 1);

    // A folder another live process holds (this test, through the packs' lock) is not planned
    // into; once the lock is gone, it is.
    let lock = root.path().join(".busy.lock");
    fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let output = sweep_plan(root.path(), "seed = [1, 2]\n", "busy").run_fail(2);
    assert!(
        stderr(&output).contains("another trainer run"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stderr(&output).trim().lines().count(), 1);
    assert!(!root.path().join("busy").exists(), "nothing written");
    fs::remove_file(&lock).unwrap();
    sweep_plan(root.path(), "seed = [1, 2]\n", "busy").run_ok();
    assert!(!lock.exists(), "the lock is released");
}

/// `--local --devices 0` gives every task the listed adapter (lavapipe is one adapter) and
/// the global switches reach the tasks: each task's run_info.json records the adapter and
/// `--no-gpu-kernels`, and the leaderboard names the adapter. A device that does not exist
/// is refused in one line before any task runs.
#[test]
fn local_tasks_get_the_listed_device_and_the_global_switches() {
    if !wgpu_available("local_tasks_get_the_listed_device_and_the_global_switches") {
        return;
    }
    let root = temp();
    let toml = "backend = \"wgpu\"\nmodels = [\"baseline\"]\nsamples_per_class = 10\nimage_size = 8\nepochs_baseline = 1\nseed = [1, 2]\n";
    sweep_plan(root.path(), toml, "devices").run_ok();
    let dir = root.path().join("devices");
    // A wgpu plan asks each task for one GPU in both launchers.
    let sbatch = fs::read_to_string(dir.join("slurm.sbatch")).unwrap();
    assert!(sbatch.contains("#SBATCH --gres=gpu:1"), "{sbatch}");
    let job = fs::read_to_string(dir.join("k8s-job.yaml")).unwrap();
    assert!(job.contains("nvidia.com/gpu: 1"), "{job}");
    let missing = trainer()
        .subcommand("sweep run")
        .arg(&dir)
        .args(["--local", "--devices", "0,7"])
        .run_fail(2);
    assert!(
        stderr(&missing).contains("--devices 7 does not exist") && stderr(&missing).contains("0 "),
        "{}",
        stderr(&missing)
    );
    assert!(!dir.join("state").join("0000.json").exists());
    trainer()
        .subcommand("sweep run")
        .arg(&dir)
        .args([
            "--local",
            "--quiet",
            "--devices",
            "0",
            "--jobs",
            "2",
            "--no-gpu-kernels",
        ])
        .run_ok();
    for task in ["0000", "0001"] {
        let info: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(dir.join("runs").join(task).join("outputs/run_info.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(info["device"]["adapter_index"], 0, "{info}");
        assert_eq!(info["device"]["adapter_chosen_by_flag"], true, "{info}");
        assert_eq!(info["gpu_kernels"], false, "{info}");
    }
    sweep("collect", &dir).run_ok();
    let (header, rows) = read_csv(&dir.join("leaderboard.csv"));
    let device = header.iter().position(|h| h == "device").unwrap();
    let host = header.iter().position(|h| h == "host").unwrap();
    for row in &rows {
        assert!(row[device].ends_with("(wgpu adapter 0)"), "{row:?}");
        assert!(!row[host].is_empty(), "{row:?}");
    }
}

/// A sweep of overfit checks: the task whose check fails (a learning rate of 1e-7) is a
/// failed task with the verdict as its error; the other is done.
#[test]
fn a_failed_overfit_check_fails_its_task() {
    let root = temp();
    let toml = "backend = \"cpu\"\nmodels = [\"cnn\"]\nsamples_per_class = 20\noverfit_batches = 1\nlr_cnn = [1e-7, 0.006]\n";
    sweep_plan(root.path(), toml, "overfit").run_ok();
    let dir = root.path().join("overfit");
    sweep("run", &dir).args(["--local", "--quiet"]).run_fail(1);
    let (header, rows) = {
        sweep("collect", &dir).run_fail(1);
        read_csv(&dir.join("leaderboard.csv"))
    };
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let failed: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[col("status")] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{rows:?}");
    assert_eq!(failed[0][col("lr_cnn")], "1e-7", "{rows:?}");
    assert!(
        failed[0][col("error")].contains("overfit check failed"),
        "{rows:?}"
    );
}

/// A task Slurm requeues mid-run (as preemption does: SIGTERM, then the task again) goes on
/// from its last finished epoch instead of starting over.
#[test]
fn a_task_slurm_requeues_goes_on_from_its_last_epoch() {
    if !slurm_available() {
        return;
    }
    let root = temp();
    sweep_plan(
        root.path(),
        "backend = \"cpu\"\nmodels = [\"cnn\"]\nsamples_per_class = 2000\nepochs_cnn = 60\n",
        "requeue",
    )
    .run_ok();
    let dir = root.path().join("requeue");
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(dir.join("slurm.sbatch"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let run = dir.join("runs/0000");
    wait_for(
        &run.join("checkpoints/last.json"),
        Duration::from_secs(300),
        "the task's first epoch",
    );
    let requeue = Command::new("scontrol")
        .args(["requeue", &format!("{id}_0")])
        .status()
        .unwrap();
    assert!(requeue.success());
    let started = Instant::now();
    while !dir.join("state/0000.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "job {id} did not finish"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    // Slurm starts the requeued task's log afresh: it says where it went on from.
    assert!(
        log.contains("resuming ") && log.contains(" epoch(s) trained"),
        "{log}"
    );
    let info = fs::read_to_string(run.join("outputs/run_info.json")).unwrap();
    assert!(info.contains("\"resumed\": true"), "{info}");
    let (_, rows) = read_csv(&run.join("outputs/training_log.csv"));
    assert_eq!(rows.len(), 60);
}
