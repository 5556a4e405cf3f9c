//! `cargo xtask modules`: build the Linux guest modules (`guest-drivers/`)
//! against the headers of each Debian release's kernel (12: Linux 6.1, 13:
//! Linux 6.12), `W=1`, and fail on any warning.
//!
//! The host's release builds against headers installed on the host (the
//! rig kernel's); another release builds in a debootstrap root of it under
//! `target/xen-rig/debian-N/root`, with that release's compiler and headers
//! (its kbuild tools link against its own libc).
//!
//! `cargo xtask xen build` and `xen run` call [`build`] first, so the rig
//! images always carry modules built from the current sources.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::root;
use crate::xen::setup;

#[derive(clap::Args)]
pub struct Args {
    /// The Debian release to build for (12, 13); repeat for several.
    /// Default: every release the rig knows.
    #[arg(long = "debian", value_name = "N")]
    debian: Vec<u32>,
}

pub fn run(args: Args) -> Result<()> {
    let mut failed = Vec::new();
    for rel in setup::releases(&args.debian)? {
        if let Err(e) = build_for(rel) {
            eprintln!("xtask modules: {}: {e:#}", rel.describe());
            failed.push(rel.describe());
        }
    }
    if !failed.is_empty() {
        bail!("the guest modules do not build for {}", failed.join(", "));
    }
    Ok(())
}

/// Builds the guest modules for `rel`: against the host's headers when
/// the host runs `rel`, else in a build root of it.
pub fn build_for(rel: &setup::Release) -> Result<()> {
    if setup::host_release().is_some_and(|h| h.number == rel.number) {
        let release = setup::kernel_release(rel)?;
        build(&release).map(|_| ())
    } else {
        build_in_root(rel)
    }
}

/// Builds a copy of guest-drivers/ in the build root of `rel` (whose
/// kernel the host does not run), W=1, and fails on an error or warning.
fn build_in_root(rel: &setup::Release) -> Result<()> {
    let (sysroot, release) = setup::build_root(rel, false)?;
    let copy = sysroot.join("build/guest-drivers");
    if copy.exists() {
        fs::remove_dir_all(&copy)?;
    }
    // The sources only, as the DKMS package ships them.
    crate::dist::copy_sources(&root().join("guest-drivers"), &copy)?;
    let mut make = Command::new("chroot");
    make.arg(&sysroot)
        .args(["make", "-k", "-C"])
        .arg(format!("/lib/modules/{release}/build"))
        .args(["M=/build/guest-drivers", "W=1", "modules"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let what = format!("guest modules for {} ({release})", rel.describe());
    eprintln!("==> {what}: {make:?}");
    let start = Instant::now();
    let out = make.output().context("could not start chroot make")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{text}");
    let problems = warning_lines(&text);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(" error: ")).collect();
    if !out.status.success() || !problems.is_empty() || !errors.is_empty() {
        bail!(
            "{what}: make {} with {} error(s) and {} warning(s):\n{}",
            if out.status.success() {
                "succeeded"
            } else {
                "failed"
            },
            errors.len(),
            problems.len(),
            errors
                .iter()
                .chain(problems.iter())
                .map(|l| l.replacen("/build/guest-drivers/", "guest-drivers/", 1))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let kos = find_ko(&copy);
    if kos.is_empty() {
        bail!(
            "{what}: make succeeded but left no .ko under {}",
            copy.display()
        );
    }
    eprintln!(
        "<== {what}: {} built in {:.1} s, no warnings (in {})",
        kos.len(),
        start.elapsed().as_secs_f64(),
        copy.display()
    );
    Ok(())
}

/// Builds every module under guest-drivers/ for kernel `release` (headers
/// installed if missing) and returns the .ko files.
pub fn build(release: &str) -> Result<Vec<PathBuf>> {
    let kdir = setup::kernel_headers(release)?;
    let src = root().join("guest-drivers");
    let mut make = Command::new("make");
    make.arg("-C")
        .arg(&kdir)
        .arg(format!("M={}", src.display()))
        .args(["W=1", "modules"]);
    eprintln!("==> guest modules: {make:?}");
    let start = Instant::now();
    let out = make.output().context("could not start make")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{text}");
    if !out.status.success() {
        bail!("building the guest modules failed ({})", out.status);
    }
    let warnings = warning_lines(&text);
    if !warnings.is_empty() {
        bail!(
            "the guest modules build with {} warning(s) (W=1 must be clean):\n{}",
            warnings.len(),
            warnings.join("\n")
        );
    }
    let kos = find_ko(&src);
    if kos.is_empty() {
        bail!("make succeeded but left no .ko under {}", src.display());
    }
    for ko in &kos {
        let bytes = fs::metadata(ko).map(|m| m.len()).unwrap_or(0);
        let loaded = loaded_size(ko)
            .map(|n| format!(", {n} bytes loaded (text+data+bss)"))
            .unwrap_or_default();
        eprintln!(
            "    {}: {bytes} bytes on disk{loaded}",
            ko.strip_prefix(root()).unwrap_or(ko).display()
        );
    }
    eprintln!(
        "<== guest modules: {} built in {:.1} s, no warnings",
        kos.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(kos)
}

/// The compiler's and modpost's warnings in a build log.
fn warning_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.to_ascii_lowercase().contains("warning:"))
        .collect()
}

/// `size`'s dec column: what loading the module costs, without debug info.
fn loaded_size(ko: &Path) -> Option<u64> {
    let out = Command::new("size").arg(ko).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

/// Every .ko under `dir`, sorted.
pub fn find_ko(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        let mut es: Vec<_> = rd.flatten().collect();
        es.sort_by_key(|e| e.file_name());
        for e in es {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "ko") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_found_in_compiler_and_modpost_output() {
        let log = "  CC [M]  a.o\n\
                   a.c:3:5: warning: no previous prototype for 'f' [-Wmissing-prototypes]\n\
                   WARNING: modpost: missing MODULE_LICENSE() in b.o\n\
                   \x20 LD [M]  a.ko\n";
        assert_eq!(
            warning_lines(log),
            [
                "a.c:3:5: warning: no previous prototype for 'f' [-Wmissing-prototypes]",
                "WARNING: modpost: missing MODULE_LICENSE() in b.o"
            ]
        );
        assert!(warning_lines("  CC [M]  a.o\n  LD [M]  a.ko\n").is_empty());
    }
}
