//! `trainer compare RUN_A RUN_B`: the comparison ([`crate::compare`]), what changed (a
//! warning when more than one setting did) and the suggested next step.

use crate::cli::CompareArgs;
use crate::compare::compare;
use crate::console::{say, warn};
use crate::error::Result;

/// `trainer compare`: the comparison, what changed (a warning when more than one setting did)
/// and the suggested next step.
pub fn main(args: CompareArgs) -> Result<()> {
    let result = compare(&args.run_a, &args.run_b)?;
    if result.differences.is_empty() {
        say("changed: nothing");
    }
    for d in &result.differences {
        say(&format!("changed: {}: {} -> {}", d.key, d.a, d.b));
    }
    if result.differences.len() > 1 {
        warn(&format!(
            "{} settings changed; change one variable at a time to know what each does",
            result.differences.len()
        ));
    }
    say(&format!("next: {}", result.suggestion));
    say(&result.notes_path.display().to_string());
    Ok(())
}
