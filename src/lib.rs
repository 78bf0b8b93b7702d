//! `trainer`: the workshop "build a PyTorch training evidence pack" as a Rust tool on burn.
//!
//! The folders are the architecture; dependencies point one way, from the commands down:
//! - `main.rs` parses the command line and dispatches; [`cli`] declares it (every command
//!   and flag, with clap), and only `main.rs` and [`cmd`] read it.
//! - [`cmd`]: one module per command (the workshop run, evaluate and predict, parity, bench,
//!   compare, devices, sweep, lr-find): flags in, configuration built, the library called,
//!   result printed. What the commands do lives below them: [`workshop`] (the run: data,
//!   models, test, pack, the state that `--resume` continues),
//!   [`parity`] (runs on each backend, their comparison, the verdict, its report),
//!   [`bench`] (measuring a row, the rows, the report's writers), [`compare`] (two packs
//!   read, their differences, the suggestion, the notes), [`sweep`] (plan, launchers, task
//!   claims and state, the local runner, the leaderboard), [`lr_find`] (the lr-find folder);
//!   [`setup`] loads a run's data and its first model, [`shell`] quotes words for a shell.
//! - [`pack`]: the evidence pack's writers (CSV, JSON, Markdown, plots) and the output
//!   folder's safety (staging, marker, lock, atomic writes); [`report`] is what they read.
//! - [`train`]: the one training loop, evaluation, the best epoch, per-class metrics and
//!   label issues; [`memory`] decides batch sizes.
//! - [`inference`]: a checkpoint alone scored on its recorded test set or on a labelled
//!   folder, and images classified in batches (`evaluate`, `predict`).
//! - [`model`]: the two networks and their checkpoints; [`data`]: stripe images and image
//!   folders.
//! - [`device`]: choosing and describing the backend, and the hand-written CPU and GPU
//!   kernels.
//! - Shared by all: [`config`] (settings and every constant), [`recipe`] (optimizer,
//!   schedule, label smoothing), [`console`], [`error`],
//!   [`interrupt`], [`rng`], [`checksum`].

pub mod bench;
pub mod checksum;
pub mod cli;
pub mod cmd;
pub mod compare;
pub mod config;
pub mod console;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod inference;
pub mod interrupt;
pub mod lr_find;
pub mod memory;
pub mod model;
pub mod pack;
pub mod parity;
pub mod recipe;
pub mod report;
pub mod rng;
pub mod setup;
pub mod shell;
pub mod sweep;
pub mod train;
pub mod workshop;

pub use error::{Result, TrainerError};
