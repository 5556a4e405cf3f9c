//! Helpers shared by the subcommands.
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}

/// The workspace's target directory.
#[allow(dead_code)] // used by the bench, images and xen subcommands as they land
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A `cargo` command run from the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `cmd`, printing it and its duration; fails naming `step`.
pub fn run_step(step: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {step}: {cmd:?}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start {:?}", cmd.get_program()))?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{step} failed ({status}) after {secs:.1} s");
    }
    eprintln!("<== {step}: ok in {secs:.1} s");
    Ok(())
}

/// Whether `program` is on PATH.
#[allow(dead_code)] // used by the test and xen subcommands as they land
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
