//! `cargo xtask images`.
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

pub fn run(_args: Args) -> Result<()> {
    bail!("`cargo xtask images` is not implemented yet")
}
