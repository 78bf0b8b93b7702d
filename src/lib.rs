//! `trainer`: the workshop "build a PyTorch training evidence pack" as a Rust tool on burn.
//!
//! The folders are the architecture; dependencies point one way, from the commands down:
//! - `main.rs` parses the command line and dispatches; [`cli`] declares it (every command
//!   and flag, with clap), and only `main.rs` and [`cmd`] read it.
//! - [`cmd`]: one module per command (the workshop run, evaluate and predict, parity, bench,
//!   compare, devices, sweep): flags in, configuration built, run, result printed.
//! - [`pack`]: the evidence pack's writers (CSV, JSON, Markdown, plots) and the output
//!   folder's safety (staging, marker, lock, atomic writes); [`report`] is what they read.
//! - [`train`]: the one training loop, evaluation and the best epoch; [`memory`] decides
//!   batch sizes.
//! - [`model`]: the two networks and their checkpoints; [`data`]: stripe images and image
//!   folders.
//! - [`device`]: choosing and describing the backend, and the hand-written CPU and GPU
//!   kernels.
//! - Shared by all: [`config`] (settings and every constant), [`recipe`] (optimizer,
//!   schedule, label smoothing), [`console`], [`error`],
//!   [`interrupt`], [`rng`], [`checksum`].

pub mod checksum;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod console;
pub mod data;
pub mod device;
pub mod error;
pub mod export;
pub mod interrupt;
pub mod memory;
pub mod model;
pub mod pack;
pub mod recipe;
pub mod report;
pub mod rng;
pub mod shell;
pub mod sweep;
pub mod train;

pub use error::{Result, TrainerError};
