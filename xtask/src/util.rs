//! Helpers shared by the subcommands.
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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

/// One of the commands [`run_steps_parallel`] runs.
pub struct Step {
    pub name: String,
    pub cmd: Command,
    /// Said after the error when it fails (where its input is, how to
    /// replay it).
    pub on_failure: String,
}

/// Runs `steps`, `jobs` at a time, each one's output in a file of `logs`
/// (named after the step); prints each start and end as [`run_step`]
/// does. The first failure stops the others and fails naming the step,
/// with the end of its output.
pub fn run_steps_parallel(steps: Vec<Step>, logs: &Path, jobs: usize) -> Result<()> {
    std::fs::create_dir_all(logs)?;
    let mut pending = steps.into_iter();
    let mut running: Vec<(String, String, PathBuf, Instant, Child)> = Vec::new();
    loop {
        while running.len() < jobs.max(1) {
            let Some(mut step) = pending.next() else {
                break;
            };
            let file: String = step
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let log = logs.join(format!("{file}.log"));
            let out = std::fs::File::create(&log)?;
            eprintln!("==> {} (output in {})", step.name, log.display());
            let child = step
                .cmd
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("{}: could not start it", step.name))?;
            running.push((step.name, step.on_failure, log, Instant::now(), child));
        }
        if running.is_empty() {
            return Ok(());
        }
        let mut i = 0;
        while i < running.len() {
            let Some(status) = running[i].4.try_wait()? else {
                i += 1;
                continue;
            };
            let (name, on_failure, log, start, _) = running.remove(i);
            let secs = start.elapsed().as_secs_f64();
            if status.success() {
                eprintln!("<== {name}: ok in {secs:.1} s");
                continue;
            }
            for (_, _, _, _, child) in running.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {} ---", log.display());
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
            bail!("{name} failed ({status}) after {secs:.1} s; {on_failure}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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

/// Builds share-hal's example `name` (over the simulation) in release mode and
/// returns the path of its binary.
pub fn build_sim_example(name: &str) -> Result<PathBuf> {
    run_step(
        &format!("build {name} (release)"),
        cargo().args(["build", "--release", "-p", "share-hal", "--example", name]),
    )?;
    Ok(target_dir().join("release").join("examples").join(name))
}
