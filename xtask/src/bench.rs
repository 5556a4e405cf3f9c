//! `cargo xtask bench`: each benchmark is a release-built binary that
//! measures its own baseline in the same run and writes its raw figures
//! under `target/bench/`.
use anyhow::Result;

use crate::util::{build_sim_example, cargo, ensure_apt, run_step, target_dir};

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
    /// Disk I/O over a blk share (blkback-uk's client and server, RAM
    /// store, two processes on the simulation): 4 KiB random read/write
    /// IOPS at queue depth 1 and 32, 1 MiB sequential read/write at queue
    /// depth 8, next to fio on a tmpfs file in the same run (installs fio
    /// if missing). Writes target/bench/blk.json.
    Blk {
        /// Seconds per case (each side).
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Which::Ring { secs, spin } => ring(secs, spin),
        Which::Blk { secs } => blk(secs),
    }
}

fn blk(secs: f64) -> Result<()> {
    ensure_apt(&["fio"])?;
    run_step(
        "build blk-bench (release)",
        cargo().args([
            "build",
            "--release",
            "-p",
            "blkback-uk",
            "--features",
            "host",
            "--example",
            "blk-bench",
        ]),
    )?;
    let bin = target_dir()
        .join("release")
        .join("examples")
        .join("blk-bench");
    let json = target_dir().join("bench").join("blk.json");
    run_step(
        "blk-bench",
        std::process::Command::new(bin)
            .arg("--secs")
            .arg(secs.to_string())
            .arg("--json")
            .arg(&json),
    )
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
