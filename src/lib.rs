//! `trainer`: the workshop "build a PyTorch training evidence pack" as a Rust tool on burn.
//!
//! Read top to bottom: [`data`] makes the stripe images, [`models`] holds the two networks,
//! [`train`] is the one training loop, [`memory`] decides batch sizes, [`backend`] picks and
//! describes the device, [`workshop`] runs it all, [`evidence`] and [`plots`] write the pack,
//! [`pack`] keeps the user's folders safe, [`checkpoint`] and [`inference`] reload models.
//! [`cpu_kernels`] and [`gpu_kernels`] are the hand-written operations for the CPU and wgpu.
//! [`sweep`] plans many runs, runs any one of them by index (Slurm, Kubernetes, locally) and
//! collects one leaderboard.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod console;
pub mod cpu_kernels;
pub mod data;
pub mod error;
pub mod evidence;
pub mod gpu_kernels;
pub mod inference;
pub mod interrupt;
pub mod memory;
pub mod models;
pub mod pack;
pub mod parity;
pub mod plots;
pub mod report;
pub mod rng;
pub mod sweep;
pub mod train;
pub mod workshop;

pub use error::{Result, TrainerError};
