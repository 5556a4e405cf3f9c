//! `cargo xtask demo`: the main job. Until the backends run on Xen, it shows
//! the share transport between processes on the host simulation, and says
//! so.
use anyhow::Result;

use crate::util::{build_sim_example, run_step};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    let exe = build_sim_example("share-demo")?;
    run_step(
        "share transport demo (host simulation)",
        &mut std::process::Command::new(exe),
    )
}
