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

/// Whether Debian package `pkg` is installed.
fn apt_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

/// Installs the Debian packages of `pkgs` that are missing (idempotent: does
/// nothing when all are there). Runs `apt-get update` first, once, only when
/// something must be installed.
#[allow(dead_code)] // used by the test, images and xen subcommands as they land
pub fn ensure_apt(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !apt_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sudo = |c: &mut Command| {
        c.env("DEBIAN_FRONTEND", "noninteractive");
    };
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    sudo(&mut update);
    run_step("apt-get update", &mut update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing);
    sudo(&mut install);
    run_step(
        &format!("apt-get install {}", missing.join(" ")),
        &mut install,
    )
    .with_context(|| format!("installing Debian packages {missing:?}"))
}

/// Builds share-hal's simulation example `name` in release mode and
/// returns the path of its binary.
pub fn build_sim_example(name: &str) -> Result<PathBuf> {
    run_step(
        &format!("build {name} (release)"),
        cargo().args([
            "build",
            "--release",
            "-p",
            "share-hal",
            "--features",
            "sim",
            "--example",
            name,
        ]),
    )?;
    Ok(target_dir().join("release").join("examples").join(name))
}
