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

/// Test-only images, as (package, binary, feature, image name): builds
/// with a feature no shipped image has, for rig scenarios only. Never
/// built by `cargo xtask images`; `dist` and [`build`] refuse any image
/// that carries a [`TEST_MARKERS`] string.
pub const TEST_IMAGES: &[(&str, &str, &str, &str)] = &[
    ("blkback-uk", "blkback-uk", "hostile", "blkback-uk-hostile"),
    ("netback-uk", "netback-uk", "hostile", "netback-uk-hostile"),
];

/// What each test-only build prints at boot and so carries in its bytes
/// (`blkback_uk::hostile::MARKER`, `netback_uk::hostile::MARKER`), in the
/// order of [`TEST_IMAGES`].
pub const TEST_MARKERS: &[&str] = &[
    "blkback-uk HOSTILE TEST BUILD",
    "netback-uk HOSTILE TEST BUILD",
];

/// Test-only programs (rig domU examples with feature `hostile`), as
/// (source, the marker it prints and so carries): `dist` refuses a
/// shipped file carrying one like an image's.
pub const TEST_PROGRAM_MARKERS: &[(&str, &str)] = &[(
    "platforms/share-linux/examples/xenshare-liar.rs",
    "xenshare-liar HOSTILE TEST BUILD",
)];

/// Fails if the image (or program) at `path` is a test-only build.
pub fn refuse_test_build(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let programs = TEST_PROGRAM_MARKERS.iter().map(|(_, m)| m);
    for m in TEST_MARKERS.iter().chain(programs) {
        if bytes.windows(m.len()).any(|w| w == m.as_bytes()) {
            bail!(
                "{} is a test-only build ({m:?}): it must never be shipped",
                path.display()
            );
        }
    }
    Ok(())
}

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
    if let Some(t) = TEST_IMAGES.iter().find(|t| names.iter().any(|n| n == t.3)) {
        bail!(
            "{} is a test-only image (feature {}): only the rig builds it",
            t.3,
            t.2
        );
    }
    let chosen: Vec<&(&str, &str)> = IMAGES
        .iter()
        .filter(|(_, bin)| names.is_empty() || names.iter().any(|n| n == bin))
        .collect();
    if chosen.is_empty() {
        bail!("no image named {names:?}; images: {IMAGES:?}");
    }
    let features: Vec<String> = chosen.iter().map(|(pkg, _)| format!("{pkg}/pvh")).collect();
    let built = build_into("pvh", &chosen, &features, |bin| bin.to_string())?;
    for b in &built {
        refuse_test_build(b)?;
    }
    Ok(built)
}

/// Builds [`TEST_IMAGES`] (their own target directory, so the shipped
/// images are not rebuilt) into `target/images/` under their test names.
pub fn build_test_images() -> Result<Vec<PathBuf>> {
    let chosen: Vec<(&str, &str)> = TEST_IMAGES.iter().map(|t| (t.0, t.1)).collect();
    let chosen: Vec<&(&str, &str)> = chosen.iter().collect();
    let features: Vec<String> = TEST_IMAGES
        .iter()
        .map(|t| format!("{0}/pvh,{0}/{1}", t.0, t.2))
        .collect();
    build_into("pvh-test", &chosen, &features, |bin| {
        TEST_IMAGES
            .iter()
            .find(|t| t.1 == bin)
            .map_or(bin.to_string(), |t| t.3.to_string())
    })
}

/// Builds `chosen` with `features[i]` each, in `target/<dir>`, strips each
/// into `target/images/<name(bin)>`.
fn build_into(
    dir: &str,
    chosen: &[&(&str, &str)],
    features: &[String],
    name: impl Fn(&str) -> String,
) -> Result<Vec<PathBuf>> {
    let lld = rust_lld()?;
    // `strip` (binutils) makes the images from the unstripped builds.
    ensure_apt(&["binutils"])?;
    let pvh_target = target_dir().join(dir);
    let out_dir = target_dir().join("images");
    std::fs::create_dir_all(&out_dir)?;
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
    for ((pkg, bin), f) in chosen.iter().zip(features) {
        cmd.args(["-p", pkg, "--bin", bin, "--features", f]);
    }
    run_step(&format!("PVH images ({dir})"), &mut cmd)?;
    let sym_dir = target_dir().join("pvh-symbols");
    std::fs::create_dir_all(&sym_dir)?;
    let mut built = Vec::new();
    for (_, bin) in chosen {
        let from = pvh_target.join(TARGET).join("release").join(bin);
        let bin = name(bin);
        let bin = bin.as_str();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_build_is_refused_and_a_shipped_one_is_not() {
        let dir = std::env::temp_dir().join(format!("xtask-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shipped = dir.join("blkback-uk");
        let test = dir.join("blkback-uk-hostile");
        std::fs::write(
            &shipped,
            b"\x7fELF blkback-uk 0.1.0: xen-share block backend",
        )
        .unwrap();
        assert!(refuse_test_build(&shipped).is_ok());
        let programs = TEST_PROGRAM_MARKERS.iter().map(|(_, m)| m);
        for m in TEST_MARKERS.iter().chain(programs) {
            let mut bytes = b"\x7fELF ... ".to_vec();
            bytes.extend_from_slice(m.as_bytes());
            std::fs::write(&test, &bytes).unwrap();
            let e = refuse_test_build(&test).unwrap_err().to_string();
            assert!(e.contains("test-only build"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_markers_are_the_test_builds_own() {
        // What each hostile module prints at boot (its MARKER).
        assert_eq!(TEST_MARKERS.len(), TEST_IMAGES.len());
        for ((pkg, ..), m) in TEST_IMAGES.iter().zip(TEST_MARKERS) {
            let src = std::fs::read_to_string(root().join(pkg).join("src/hostile.rs")).unwrap();
            assert!(src.contains(&format!("MARKER: &str = \"{m}\"")), "{pkg}");
        }
        for (file, m) in TEST_PROGRAM_MARKERS {
            let src = std::fs::read_to_string(root().join(file)).unwrap();
            assert!(src.contains(&format!("MARKER: &str = \"{m}\"")), "{file}");
        }
    }

    #[test]
    fn images_refuses_to_build_a_test_image() {
        for (.., name) in TEST_IMAGES {
            let e = build(&[name.to_string()]).unwrap_err().to_string();
            assert!(e.contains("test-only image"), "{e}");
        }
    }
}
