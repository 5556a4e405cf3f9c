//! `cargo xtask demo`: the main job. It runs the seed's walkthrough on real
//! Xen (nested in QEMU, `xen-rig/scenarios/demo.sh`): netback-uk and
//! blkback-uk from their xl configs, two Linux guests, a LAN made with
//! `vdevice --create net`, guests and dom0 joining it with `modprobe
//! xensnet`, a member removed and added back while the others talk, a disk
//! with ext4 that survives a restart of its server mid-write, a read-only
//! disk shared by both guests, data through `/dev/xenshare`, and a summary.
//! Each step is shown as it starts and ends, with the commands it ran as a
//! user types them and what they showed (`@@SAY` lines of the scenario);
//! a failure names the step, why, and where the logs are. The summary names
//! the Debian release, Xen and kernel it ran on.
//!
//! `--sim` keeps the earlier demo: the share transport between processes on
//! the host simulation (no Xen needed).
use std::fs;
use std::path::Path;
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
    #[command(flatten)]
    debian: crate::xen::Debian,
}

pub fn run(args: Args) -> Result<()> {
    if args.sim {
        let exe = build_sim_example("share-demo")?;
        return run_step(
            "share transport demo (host simulation)",
            &mut std::process::Command::new(exe),
        );
    }
    // A set-up failure ends the command here, naming its step and reason.
    let rel = args.debian.release()?;
    let (setup, images) = crate::xen::prepare_for(rel, false)?;
    let ran_on = setup.describe();
    eprintln!("==> xen-share demo on {ran_on}, nested in QEMU (TCG: slow, but every step is real)");
    let result = crate::xen::run_prepared(
        &setup,
        &images,
        "demo",
        Duration::from_secs(args.timeout),
        args.verbose,
    );
    finish(result, &crate::xen::logs_dir_for(rel, "demo"), &ran_on)
}

/// Prints the summary of a run that got as far as booting, then returns
/// the run's own result: a missing or unreadable log never hides why the
/// run failed.
fn finish(result: Result<()>, logs: &Path, ran_on: &str) -> Result<()> {
    match (print_summary(logs, ran_on), &result) {
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(_)) => {
            eprintln!("xtask: no summary of the demo ({e:#})");
            result
        }
        (Ok(()), _) => result,
    }
}

/// Each step with the commands it ran and what they showed, then what the
/// scenario's `summary` step printed (image sizes, memory of every domain).
fn print_summary(logs: &Path, ran_on: &str) -> Result<()> {
    let serial = fs::read(logs.join("serial.log"))
        .with_context(|| format!("reading {}", logs.join("serial.log").display()))?;
    let serial = String::from_utf8_lossy(&serial);
    let steps = fs::read_to_string(logs.join("summary.txt")).unwrap_or_default();
    println!("\n==== xen-share demo: steps ====");
    print!("{steps}");
    let mut inside = false;
    let mut lines = Vec::new();
    for l in serial.lines() {
        let l = l.trim_end_matches('\r');
        if l.starts_with("@@STEP summary BEGIN") {
            inside = true;
        } else if l.starts_with("@@STEP summary ") {
            inside = false;
        } else if inside && !l.starts_with("(XEN)") && !l.starts_with("@@") {
            lines.push(l.to_string());
        }
    }
    if !lines.is_empty() {
        println!("==== what it costs ====");
        for l in lines {
            println!("{l}");
        }
    }
    println!("ran on {ran_on}");
    println!("logs: {}", logs.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_failed_before_its_serial_log_keeps_its_own_error() {
        let logs = std::env::temp_dir().join(format!("xtask-demo-nolog-{}", std::process::id()));
        let e = finish(
            Err(anyhow::anyhow!("starting QEMU: No such file or directory")),
            &logs,
            "Debian 12 (bookworm)",
        )
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("starting QEMU"), "{text}");
        assert!(!text.contains("serial.log"), "{text}");
        // A run that passed but left no log is still an error.
        let e = finish(Ok(()), &logs, "Debian 12 (bookworm)").unwrap_err();
        assert!(format!("{e:#}").contains("serial.log"));
    }
}
