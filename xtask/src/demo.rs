//! `cargo xtask demo`: the main job. It runs the seed's walkthrough on real
//! Xen (nested in QEMU, `xen-rig/scenarios/demo.sh`): netback-uk and
//! blkback-uk from their xl configs, two Linux guests, a LAN made with
//! `vdevice --create net`, guests and dom0 joining it with `modprobe
//! xensnet`, a member removed and added back while the others talk, a disk
//! with ext4 that survives a restart of its server mid-write, a read-only
//! disk shared by both guests, data through `/dev/xenshare`, and a summary.
//! Each step is shown as it starts and ends; a failure names the step, why,
//! and where the logs are.
//!
//! `--sim` keeps the earlier demo: the share transport between processes on
//! the host simulation (no Xen needed).
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::util::{build_sim_example, run_step};

#[derive(clap::Args)]
pub struct Args {
    /// Show the share transport on the host simulation instead of real Xen.
    #[arg(long)]
    sim: bool,
    /// Upper bound for the whole walkthrough on Xen, in seconds.
    #[arg(long, default_value_t = 2400)]
    timeout: u64,
    /// Echo the serial console (Xen and dom0) as it comes.
    #[arg(short, long)]
    verbose: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.sim {
        let exe = build_sim_example("share-demo")?;
        return run_step(
            "share transport demo (host simulation)",
            &mut std::process::Command::new(exe),
        );
    }
    eprintln!(
        "==> xen-share demo on real Xen 4.17 nested in QEMU (TCG: slow, but every step is real)"
    );
    let result = crate::xen::run_scenario("demo", Duration::from_secs(args.timeout), args.verbose);
    let logs = crate::xen::logs_dir("demo");
    print_summary(&logs)?;
    result
}

/// The steps and their times, then what the scenario's `summary` step
/// printed (image sizes, memory of every domain).
fn print_summary(logs: &std::path::Path) -> Result<()> {
    let steps = fs::read_to_string(logs.join("summary.txt")).unwrap_or_default();
    println!("\n==== xen-share demo: steps ====");
    print!("{steps}");
    let serial = fs::read(logs.join("serial.log"))
        .with_context(|| format!("reading {}", logs.join("serial.log").display()))?;
    let serial = String::from_utf8_lossy(&serial);
    let mut inside = false;
    let mut lines = Vec::new();
    for l in serial.lines() {
        let l = l.trim_end_matches('\r');
        if l.starts_with("@@STEP summary BEGIN") {
            inside = true;
        } else if l.starts_with("@@STEP summary ") {
            inside = false;
        } else if inside && !l.starts_with("(XEN)") {
            lines.push(l.to_string());
        }
    }
    if !lines.is_empty() {
        println!("==== what it costs ====");
        for l in lines {
            println!("{l}");
        }
    }
    println!("logs: {}", logs.display());
    Ok(())
}
