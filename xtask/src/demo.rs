//! `cargo xtask demo`.
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`cargo xtask demo` is not implemented yet")
}
