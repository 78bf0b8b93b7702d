//! The two launchers a plan comes with: a Slurm job array and a Kubernetes Indexed Job. Each
//! starts `trainer sweep run DIR` once per task; the task reads its index from the scheduler
//! (`SLURM_ARRAY_TASK_ID`, `JOB_COMPLETION_INDEX`).

use crate::cmd::shell_quote;
use crate::cmd::sweep::plan::Plan;

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
# A task that finished is skipped when resubmitted; one killed mid-run is redone from scratch.
#SBATCH --job-name=trainer-sweep
#SBATCH --array=0-{last}%{p}
#SBATCH --ntasks=1
#SBATCH --cpus-per-task={cpus}
{gres}#SBATCH --output={dir}/logs/slurm-%A_%a.out
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
    )
}

/// `k8s-job.yaml`: an Indexed Job with the image and the shared volume left for the user.
pub fn kubernetes(plan: &Plan) -> String {
    let launch = &plan.launch;
    let dir = launch.dir.display().to_string();
    let gpu = if launch.gpu {
        "\n            limits:\n              nvidia.com/gpu: 1"
    } else {
        ""
    };
    format!(
        "# A Kubernetes Indexed Job for the sweep planned in {dir}: one pod per task of plan.json
# ({n} in all, at most {p} at once); each pod reads its index from JOB_COMPLETION_INDEX.
# Fill in the two placeholders, then: kubectl apply -f k8s-job.yaml
#   TRAINER_IMAGE   an image with the trainer binary on its PATH
#   SWEEP_PVC       a PersistentVolumeClaim (ReadWriteMany) every pod mounts, holding this
#                   folder; it is mounted at the same path as here, so plan.json's paths
#                   (an image folder given as data, too) stay valid inside the pods.
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
  # A failed index is retried once; a finished task is skipped when a pod reruns it.
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
          command: [\"trainer\", \"sweep\", \"run\", {dir_yaml}]
          env:
            - name: RAYON_NUM_THREADS
              value: \"{cpus}\"
          resources:
            requests:
              cpu: \"{cpus}\"{gpu}
          volumeMounts:
            - name: sweep
              mountPath: {dir_yaml}
      volumes:
        - name: sweep
          persistentVolumeClaim:
            claimName: SWEEP_PVC
",
        n = plan.tasks.len(),
        p = launch.parallel,
        id = &plan.checksum[..8.min(plan.checksum.len())],
        cpus = launch.cpus_per_task,
        dir_yaml = serde_json::to_string(&dir).unwrap_or_default(),
    )
}
