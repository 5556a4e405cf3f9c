//! `cargo xtask test`: every test this machine can run.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, run_step};

#[derive(clap::Args)]
pub struct Args {
    /// Run only this tier.
    #[arg(long, value_enum)]
    tier: Option<Tier>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Tier {
    /// Formatting, lints, unit and property tests.
    Unit,
    /// Every parser of peer-written memory under libFuzzer, ~20 s each.
    Fuzz,
    /// Real Xen nested in QEMU (Debian 13's Xen 4.20, Debian 12's 4.17): the
    /// guest modules, the packages under dpkg, the scenarios, and broken ones
    /// that must fail at their step with the logs kept (downloads once).
    Xen,
}

/// Features of the host build: every program that runs as a Linux process
/// (each brings its platforms; the platform crates are workspace members,
/// tested as they are). Not `--all-features`: the PVH images' features only
/// link with their own linker script (`cargo xtask images`).
pub const HOST_FEATURES: &[&str] = &[
    "--features",
    "pvh-selftest/dom0,netback-uk/sim,netback-uk/testing,netback-uk/hostile,blkback-uk/hostile",
];

pub fn run(args: Args) -> Result<()> {
    let all = args.tier.is_none();
    // Everything that ran and passed: cargo's tests, fuzz targets, Xen
    // scenarios. Printed last as one plain "N passed, 0 failed" line.
    let mut passed = 0u64;
    if all || args.tier == Some(Tier::Unit) {
        // Xen's public headers: share-pvh's and xen-pv's ABI tests compare their
        // structures with them. e2fsprogs: share-member's disk test makes
        // and checks an ext4 file system.
        crate::util::ensure_apt(&["libxen-dev", "e2fsprogs"])?;
        run_step("fmt", cargo().args(["fmt", "--all", "--check"]))?;
        run_step(
            "clippy",
            cargo()
                .args(["clippy", "--workspace", "--all-targets"])
                .args(HOST_FEATURES)
                .args(["--", "-D", "warnings"]),
        )?;
        passed += run_cargo_tests(
            "unit, property and cross-process tests",
            cargo().args(["test", "--workspace"]).args(HOST_FEATURES),
        )?;
        // The PVH images must keep building (and linking) too.
        crate::images::build(&[])?;
    }
    if all || args.tier == Some(Tier::Fuzz) {
        crate::fuzz::smoke(FUZZ_SECONDS_PER_TARGET)?;
        passed += fuzz_targets()?;
    }
    if all || args.tier == Some(Tier::Xen) {
        passed += crate::xen::tier()?;
    }
    println!("summary: {passed} passed, 0 failed");
    Ok(())
}

/// Runs `cargo test`, echoing its output, and returns how many tests
/// passed (the sum of its "test result" lines); fails if any failed.
fn run_cargo_tests(step: &str, cmd: &mut Command) -> Result<u64> {
    eprintln!("==> {step}: {cmd:?}");
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let out = child.stdout.take().context("cargo test has no stdout")?;
    let mut passed = 0;
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count_before(rest, " passed").unwrap_or(0);
        }
    }
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{step} failed ({status}) after {secs:.1} s");
    }
    eprintln!("<== {step}: {passed} passed in {secs:.1} s");
    Ok(passed)
}

/// The number just before `word` in `s`, e.g. 12 in "ok. 12 passed; ...".
fn count_before(s: &str, word: &str) -> Option<u64> {
    let head = &s[..s.find(word)?];
    head.rsplit(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The fuzz targets, one passed item each once the fuzz tier succeeded.
fn fuzz_targets() -> Result<u64> {
    let mut n = 0;
    for project in crate::fuzz::projects()? {
        n += crate::fuzz::targets(&project)?.len() as u64;
    }
    Ok(n)
}

/// Long enough to find shallow bugs in each parser, short enough for CI
/// (2 minutes for 6 targets, plus one build).
const FUZZ_SECONDS_PER_TARGET: u64 = 20;

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn counts_passed_tests_in_cargo_summaries() {
        let line = "ok. 98 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(count_before(line, " passed"), Some(98));
        assert_eq!(
            count_before("FAILED. 3 passed; 1 failed", " failed"),
            Some(1)
        );
        assert_eq!(count_before("nothing here", " passed"), None);
    }
}
