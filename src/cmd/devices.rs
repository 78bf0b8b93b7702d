//! `trainer devices`: the backends and wgpu adapters this machine offers.

use crate::console::say;
use crate::device;
use crate::error::Result;

/// Prints one line per backend or adapter.
pub fn main() -> Result<()> {
    for line in device::describe_all() {
        say(&line);
    }
    Ok(())
}
