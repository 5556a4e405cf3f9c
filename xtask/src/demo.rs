//! `cargo xtask demo`: the main job. Until the backends run on Xen, it shows
//! the share transport between processes on the host simulation, and says
//! so.
use anyhow::Result;

use crate::util::{cargo, run_step, target_dir};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    run_step(
        "build the demo",
        cargo().args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "share-hal",
            "--features",
            "sim",
            "--example",
            "share-demo",
        ]),
    )?;
    let exe = target_dir().join("release/examples/share-demo");
    run_step(
        "share transport demo (host simulation)",
        &mut std::process::Command::new(exe),
    )
}
