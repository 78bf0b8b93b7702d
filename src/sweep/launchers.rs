//! The two launchers a plan comes with: a Slurm job array and a Kubernetes Indexed Job. Each
//! starts `trainer sweep run DIR` once per task; the task reads its index from the scheduler
//! (`SLURM_ARRAY_TASK_ID`, `JOB_COMPLETION_INDEX`).

use crate::shell::shell_quote;
use crate::sweep::plan::Plan;

pub const SLURM_FILE: &str = "slurm.sbatch";
pub const K8S_FILE: &str = "k8s-job.yaml";

/// `slurm.sbatch`: `sbatch DIR/slurm.sbatch` from any folder of any node that sees DIR.
pub fn slurm(plan: &Plan) -> String {
    let launch = &plan.launch;
    let dir = launch.dir.display().to_string();
    let gres = if launch.gpu {
        "#SBATCH --gres=gpu:1\n"
    } else {
        ""
    };
    format!(
        "#!/bin/bash
# A Slurm job array for the sweep planned in {dir}: one array task per task of plan.json
# ({n} in all, at most {p} at once). Every node must see this folder and the trainer binary.
#   submit:   sbatch {sbatch}
#   results:  trainer sweep collect {dir_q}
# A task that finished is skipped when resubmitted; one killed or preempted mid-run (Slurm
# sends SIGTERM first) goes on from its last finished epoch when requeued or resubmitted.
#SBATCH --job-name=trainer-sweep
#SBATCH --requeue
#SBATCH --array=0-{last}%{p}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={cpus}
{gres}#SBATCH --output={output}
set -euo pipefail
# The CPU backend uses as many threads as the task was given (also what --local does).
export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-{cpus}}}\"
# trainer sweep run reads the task's index from SLURM_ARRAY_TASK_ID.
exec {trainer} sweep run {dir_q}
",
        n = plan.tasks.len(),
        p = launch.parallel,
        sbatch = shell_quote(&format!("{dir}/{SLURM_FILE}")),
        dir_q = shell_quote(&dir),
        last = plan.tasks.len().saturating_sub(1),
        cpus = launch.cpus_per_task,
        trainer = shell_quote(&launch.trainer.display().to_string()),
        // sbatch reads a directive's value as a shell word: a path with spaces is quoted.
        output = match dir.contains(char::is_whitespace) {
            true => format!("\"{dir}/logs/slurm-%A_%a.out\""),
            false => format!("{dir}/logs/slurm-%A_%a.out"),
        },
    )
}

/// A host path a pod needs: mounted at the same path, so plan.json's paths stay valid.
struct HostMount {
    path: String,
    /// `Directory` or `File` (the hostPath type checks it exists on the node).
    kind: &'static str,
}

/// Every host path the tasks read besides the sweep folder: the trainer binary the Slurm
/// script also runs, and each image folder a task trains on (unless it is inside the sweep
/// folder, which is mounted already).
fn host_mounts(plan: &Plan) -> Vec<HostMount> {
    let dir = &plan.launch.dir;
    let mut mounts = vec![HostMount {
        path: plan.launch.trainer.display().to_string(),
        kind: "File",
    }];
    let mut folders: Vec<String> = plan
        .tasks
        .iter()
        .filter_map(|t| t.settings.data.as_ref())
        .filter(|d| !d.starts_with(dir))
        .map(|d| d.display().to_string())
        .collect();
    folders.sort();
    folders.dedup();
    mounts.extend(folders.into_iter().map(|path| HostMount {
        path,
        kind: "Directory",
    }));
    mounts
}

/// `k8s-job.yaml`: an Indexed Job with the image and the shared volume left for the user.
/// It mounts every path the plan names at the same path inside the pods: the sweep folder (a
/// shared volume), and as host paths the trainer binary (the one the Slurm script runs) and
/// every image folder.
pub fn kubernetes(plan: &Plan) -> String {
    let launch = &plan.launch;
    let dir = launch.dir.display().to_string();
    let yaml = |text: &str| serde_json::to_string(text).unwrap_or_default();
    let gpu = if launch.gpu {
        "\n            limits:\n              nvidia.com/gpu: 1"
    } else {
        ""
    };
    let hosts = host_mounts(plan);
    let mut mounts = String::new();
    let mut volumes = String::new();
    for (i, host) in hosts.iter().enumerate() {
        mounts += &format!(
            "            - name: host-{i}\n              mountPath: {}\n              readOnly: true\n",
            yaml(&host.path)
        );
        volumes += &format!(
            "        - name: host-{i}\n          hostPath:\n            path: {}\n            type: {}\n",
            yaml(&host.path),
            host.kind
        );
    }
    format!(
        "# A Kubernetes Indexed Job for the sweep planned in {dir}: one pod per task of plan.json
# ({n} in all, at most {p} at once); each pod reads its index from JOB_COMPLETION_INDEX.
# Every path the plan names is mounted at the same path inside the pods, so plan.json stays
# valid there: this folder from a shared volume, and as read-only host paths the trainer
# binary (the one slurm.sbatch runs) and every image folder the tasks train on (each node
# must have them, e.g. from a shared file system).
# Fill in the two placeholders, then: kubectl apply -f k8s-job.yaml
#   TRAINER_IMAGE   any image that can run the trainer binary (e.g. debian:12 for a binary
#                   built on Debian 12); the binary itself comes from the host path
#   SWEEP_PVC       a PersistentVolumeClaim (ReadWriteMany) every pod mounts, holding this
#                   folder
# When the job is done (or at any time): trainer sweep collect {dir}
apiVersion: batch/v1
kind: Job
metadata:
  name: trainer-sweep-{id}
  labels:
    app: trainer-sweep
spec:
  completionMode: Indexed
  completions: {n}
  parallelism: {p}
  # A failed index is retried once; a finished task is skipped when a pod reruns it, and a
  # pod evicted or preempted mid-run (SIGTERM first) goes on from its last finished epoch.
  backoffLimitPerIndex: 1
  template:
    metadata:
      labels:
        app: trainer-sweep
    spec:
      restartPolicy: Never
      containers:
        - name: trainer
          image: TRAINER_IMAGE
          command: [{trainer}, \"sweep\", \"run\", {dir_yaml}]
          env:
            - name: RAYON_NUM_THREADS
              value: \"{cpus}\"
          resources:
            requests:
              cpu: \"{cpus}\"{gpu}
          volumeMounts:
            - name: sweep
              mountPath: {dir_yaml}
{mounts}      volumes:
        - name: sweep
          persistentVolumeClaim:
            claimName: SWEEP_PVC
{volumes}",
        n = plan.tasks.len(),
        p = launch.parallel,
        id = &plan.checksum[..8.min(plan.checksum.len())],
        cpus = launch.cpus_per_task,
        trainer = yaml(&launch.trainer.display().to_string()),
        dir_yaml = yaml(&dir),
    )
}
