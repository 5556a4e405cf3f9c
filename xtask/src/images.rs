//! `cargo xtask images`: the PVH unikernel images under `target/images/`.
//!
//! The images are `#![no_std]` binaries for the host target
//! (`x86_64-unknown-linux-gnu`: stable Rust ships no `x86_64-unknown-none`
//! here and `build-std` is nightly-only), linked by `rust-lld` with
//! `pvh-rt/link.ld` into a PVH ELF. The flags go through
//! `CARGO_ENCODED_RUSTFLAGS` with an explicit `--target` and their own
//! target directory (`target/pvh`), so build scripts and every host build
//! are untouched.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, ensure_apt, root, run_step, target_dir};

/// Host target the images are compiled for.
const TARGET: &str = "x86_64-unknown-linux-gnu";

/// (package, binary) of every image.
pub const IMAGES: &[(&str, &str)] = &[
    ("netback-uk", "netback-uk"),
    ("blkback-uk", "blkback-uk"),
    ("pvh-selftest", "pvh-selftest"),
];

#[derive(clap::Args)]
pub struct Args {
    /// Build only these images (default: all).
    names: Vec<String>,
}

/// `rust-lld` of the active toolchain.
fn rust_lld() -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lld = sysroot
        .join("lib/rustlib")
        .join(TARGET)
        .join("bin/rust-lld");
    if !lld.exists() {
        bail!(
            "{} is missing: the PVH images are linked with the toolchain's rust-lld",
            lld.display()
        );
    }
    Ok(lld)
}

fn rustflags(lld: &Path) -> String {
    let script = root().join("pvh-rt/link.ld");
    [
        format!("-Clinker={}", lld.display()),
        "-Clinker-flavor=ld.lld".into(),
        "-Crelocation-model=static".into(),
        "-Ctarget-feature=+crt-static".into(),
        // Crash reports walk the frame pointer chain for a backtrace.
        "-Cforce-frame-pointers=yes".into(),
        format!("-Clink-arg=-T{}", script.display()),
        "-Clink-arg=--gc-sections".into(),
        "-Clink-arg=-znoexecstack".into(),
    ]
    .join("\x1f")
}

/// Builds the images and returns their paths.
pub fn build(names: &[String]) -> Result<Vec<PathBuf>> {
    let lld = rust_lld()?;
    // `strip` (binutils) makes the images from the unstripped builds.
    ensure_apt(&["binutils"])?;
    let pvh_target = target_dir().join("pvh");
    let out_dir = target_dir().join("images");
    std::fs::create_dir_all(&out_dir)?;
    let chosen: Vec<&(&str, &str)> = IMAGES
        .iter()
        .filter(|(_, bin)| names.is_empty() || names.iter().any(|n| n == bin))
        .collect();
    if chosen.is_empty() {
        bail!("no image named {names:?}; images: {IMAGES:?}");
    }
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", TARGET])
        .arg("--target-dir")
        .arg(&pvh_target)
        .args([
            "--config",
            "profile.release.panic=\"abort\"",
            // Symbols and line tables stay in target/pvh-symbols/ (for
            // addr2line on a crash report's backtrace); the images are
            // stripped copies.
            "--config",
            "profile.release.strip=false",
            "--config",
            "profile.release.debug=\"line-tables-only\"",
            "--config",
            "profile.release.lto=true",
            "--config",
            "profile.release.codegen-units=1",
            "--config",
            "profile.release.opt-level=\"s\"",
        ])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags(&lld))
        .env_remove("RUSTFLAGS");
    for (pkg, bin) in &chosen {
        cmd.args(["-p", pkg, "--bin", bin, "--features", &format!("{pkg}/pvh")]);
    }
    run_step("PVH images", &mut cmd)?;
    let sym_dir = target_dir().join("pvh-symbols");
    std::fs::create_dir_all(&sym_dir)?;
    let mut built = Vec::new();
    for (_, bin) in chosen {
        let from = pvh_target.join(TARGET).join("release").join(bin);
        let sym = sym_dir.join(bin);
        std::fs::copy(&from, &sym)
            .with_context(|| format!("copying {} to {}", from.display(), sym.display()))?;
        let to = out_dir.join(bin);
        // Written aside and renamed, so a reader never sees half an image.
        let tmp = out_dir.join(format!(".{bin}.tmp"));
        run_step(
            &format!("strip {bin}"),
            Command::new("strip")
                .arg("--strip-all")
                .arg("-o")
                .arg(&tmp)
                .arg(&sym),
        )?;
        std::fs::rename(&tmp, &to)?;
        let size = std::fs::metadata(&to)?.len();
        eprintln!("    {}: {} KiB", to.display(), size.div_ceil(1024));
        built.push(to);
    }
    Ok(built)
}

pub fn run(args: Args) -> Result<()> {
    build(&args.names).map(drop)
}
