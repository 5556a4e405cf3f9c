//! `cargo xtask bench`: each benchmark is a release-built binary that
//! measures its own baseline in the same run and writes its raw figures
//! under `target/bench/`.
use anyhow::Result;

use crate::util::{build_sim_example, run_step, target_dir};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand)]
enum Which {
    /// Lanes between two processes over a simulated share: frames/s for
    /// 64 B and 1500 B, GB/s for 64 KiB, one way and round trip, next to
    /// memcpy. Writes target/bench/ring.json.
    Ring {
        /// Seconds per one-way case (round trips get half).
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Polls before a side arms its trigger and sleeps.
        #[arg(long, default_value_t = 200)]
        spin: u32,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Which::Ring { secs, spin } => ring(secs, spin),
    }
}

fn ring(secs: f64, spin: u32) -> Result<()> {
    let bin = build_sim_example("ring-bench")?;
    let json = target_dir().join("bench").join("ring.json");
    run_step(
        "ring-bench",
        std::process::Command::new(bin)
            .arg("--secs")
            .arg(secs.to_string())
            .arg("--spin")
            .arg(spin.to_string())
            .arg("--json")
            .arg(&json),
    )
}
