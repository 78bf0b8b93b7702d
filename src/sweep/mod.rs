//! Sweeps: many runs, one leaderboard. The engine is the scheduler people already have:
//! [`plan`] turns a TOML grid ([`grid`]) into `plan.json` and the launchers of [`launchers`]
//! for Slurm and Kubernetes, [`task`] runs any one task by index into `runs/NNNN/` (idempotent,
//! claimed so that two workers never write the same task), [`local`] runs them all on this
//! machine, and [`collect`] ranks what finished by validation into `leaderboard.csv` and,
//! by [`leaderboard`], `leaderboard.md` and plots.
//!
//! A sweep folder holds: `plan.json`, `slurm.sbatch`, `k8s-job.yaml`, `runs/NNNN/` (evidence
//! packs), `state/NNNN.json` (one per finished task), `logs/`, and after `collect` the
//! leaderboard files and `sweep_*.png`.

pub mod collect;
pub mod grid;
pub mod launchers;
pub mod leaderboard;
pub mod local;
pub mod plan;
pub mod task;

pub use plan::{Plan, PlanConfig};
