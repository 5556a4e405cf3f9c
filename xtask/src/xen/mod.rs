//! `cargo xtask xen`.
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

pub fn run(_args: Args) -> Result<()> {
    bail!("`cargo xtask xen` is not implemented yet")
}
