//! `cargo xtask test`: every test this machine can run.
use anyhow::Result;

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
    /// Real Xen 4.17 nested in QEMU: `xen run smoke`, and a broken scenario
    /// that must fail at its step with the logs kept (minutes, downloads once).
    Xen,
}

/// Features of the host build: every platform that runs as a Linux process.
/// Not `--all-features`: the PVH images' features only link with their own
/// linker script (`cargo xtask images`).
pub const HOST_FEATURES: &[&str] = &[
    "--features",
    "share-hal/sim,share-hal/linux,share-hal/xen-pvh,pvh-selftest/dom0",
];

pub fn run(args: Args) -> Result<()> {
    let all = args.tier.is_none();
    if all || args.tier == Some(Tier::Unit) {
        // Xen's public headers: share-hal's Xen ABI test compares its
        // structures with them.
        crate::util::ensure_apt(&["libxen-dev"])?;
        run_step("fmt", cargo().args(["fmt", "--all", "--check"]))?;
        run_step(
            "clippy",
            cargo()
                .args(["clippy", "--workspace", "--all-targets"])
                .args(HOST_FEATURES)
                .args(["--", "-D", "warnings"]),
        )?;
        run_step(
            "unit, property and cross-process tests",
            cargo().args(["test", "--workspace"]).args(HOST_FEATURES),
        )?;
        // The PVH images must keep building (and linking) too.
        crate::images::build(&[])?;
    }
    if all || args.tier == Some(Tier::Fuzz) {
        crate::fuzz::smoke(FUZZ_SECONDS_PER_TARGET)?;
    }
    if all || args.tier == Some(Tier::Xen) {
        crate::xen::tier()?;
    }
    Ok(())
}

/// Long enough to find shallow bugs in each parser, short enough for CI
/// (2 minutes for 6 targets, plus one build).
const FUZZ_SECONDS_PER_TARGET: u64 = 20;
