//! `trainer parity`: the backends, tolerances and the hidden `--perturb-init` hook from the
//! flags; the run and its verdict are [`crate::parity`].

use crate::cli::ParityArgs;
use crate::cmd::command_line;
use crate::console::Console;
use crate::device::{BackendChoice, BackendName};
use crate::error::{Result, TrainerError};
use crate::parity::{self, ParityConfig, Tolerances};

/// `trainer parity`: the backends, tolerances and the hidden `--perturb-init` hook from the
/// flags, the run, and its verdict.
pub fn main(args: ParityArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let backends = args
        .backends
        .iter()
        .map(|b| BackendName::parse(b))
        .collect::<Result<Vec<_>>>()?;
    let perturb = match &args.perturb_init {
        None => None,
        Some(spec) => {
            let (backend, epsilon) = spec
                .split_once('=')
                .ok_or_else(|| TrainerError::bad_input("--perturb-init takes BACKEND=EPSILON"))?;
            let epsilon: f32 = epsilon
                .parse()
                .map_err(|_| TrainerError::bad_input("--perturb-init: EPSILON must be a number"))?;
            Some((BackendName::parse(backend)?, epsilon))
        }
    };
    let config = ParityConfig {
        backends,
        out: args.out,
        settings: args.train.settings(BackendChoice::Cpu),
        tolerances: Tolerances {
            loss_rtol: args.loss_rtol,
            logits_atol: args.logits_atol,
            param_atol: args.param_atol,
            min_agreement: args.min_agreement,
            sensitivity_factor: args.sensitivity_factor,
        },
        perturb,
        command: command_line(),
    };
    let out = config.out.clone();
    let report = parity::run(config, &console)?;
    console.result(&report.verdict);
    console.result(&out.join("parity/parity_report.md").display().to_string());
    Ok(())
}
