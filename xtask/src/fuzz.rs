//! Fuzzing of every parser of peer-written memory: each crate's fuzz
//! targets sit beside it, in `<crate>/fuzz` (a cargo-fuzz project of its
//! own: `share-hal/fuzz`, `platforms/share-sim/fuzz`,
//! `platforms/share-pvh/fuzz`, `xen-pv/fuzz`, `netback-uk/fuzz`,
//! `blkback-uk/fuzz`), and the guest modules' C targets in
//! `guest-drivers/fuzz`.
//!
//! cargo-fuzz is installed under `target/tools` (once; later runs reuse
//! it), every project's targets build into `target/fuzz` (one target
//! directory, so what they share builds once), and the corpus grows in
//! `target/fuzz/corpus/<target>` across runs, seeded from
//! `<crate>/fuzz/seeds/<target>`. A crash leaves its input in
//! `target/fuzz/artifacts/<target>/`.
//!
//! libFuzzer needs rustc's `-Z` sanitizer flags, so this is the one place
//! the project builds with nightly features. It uses the `nightly`
//! toolchain when rustup has one; otherwise stable with `RUSTC_BOOTSTRAP=1`
//! for the fuzz build alone, because machines of this project's kind may
//! carry only the stable toolchain and cannot download another. Both paths
//! were run on this machine.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{ensure_apt, root, run_step, run_steps_parallel, target_dir, Step};

/// The cargo-fuzz release the project is tested with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The cargo-fuzz projects: every `<crate>/fuzz` of the repository (a
/// crate at the top or in [`CRATE_FOLDERS`]) with a `Cargo.toml` and a
/// `fuzz_targets` folder, so a crate's new fuzz project joins the run by
/// existing.
pub fn projects() -> Result<Vec<PathBuf>> {
    let root = root();
    let mut dirs = Vec::new();
    for parent in std::iter::once(root.clone()).chain(CRATE_FOLDERS.iter().map(|f| root.join(f))) {
        let list =
            std::fs::read_dir(&parent).with_context(|| format!("listing {}", parent.display()))?;
        for entry in list {
            let fuzz = entry?.path().join("fuzz");
            if fuzz.join("Cargo.toml").is_file() && fuzz.join("fuzz_targets").is_dir() {
                dirs.push(fuzz);
            }
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "no fuzz projects (<crate>/fuzz/Cargo.toml) in {}",
            root.display()
        );
    }
    Ok(dirs)
}

/// Folders of sibling crates (each crate one level down).
const CRATE_FOLDERS: &[&str] = &["platforms"];

/// Every fuzz target of a project, from the files in its `fuzz_targets`,
/// so a new target joins the smoke run by existing.
pub fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

/// The toolchain to fuzz with, and whether it needs `RUSTC_BOOTSTRAP`.
fn toolchain() -> (&'static str, bool) {
    let nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if nightly {
        ("nightly", false)
    } else {
        ("stable", true)
    }
}

/// Installs cargo-fuzz into `target/tools` unless it is already there.
fn ensure_cargo_fuzz(tools: &Path) -> Result<PathBuf> {
    let bin = tools.join("bin");
    if bin.join("cargo-fuzz").is_file() {
        return Ok(bin);
    }
    run_step(
        "install cargo-fuzz",
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "cargo-fuzz", "--locked", "--version"])
            .arg(CARGO_FUZZ_VERSION)
            .arg("--root")
            .arg(tools),
    )?;
    Ok(bin)
}

/// `rustup run <toolchain> cargo fuzz <args>`, with cargo-fuzz on PATH and
/// none of the outer cargo's settings leaking in (the PVH images' flags
/// must not reach a sanitizer build, nor our flags theirs).
fn cargo_fuzz(tools_bin: &Path, toolchain: &str, bootstrap: bool) -> Result<Command> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![tools_bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let mut c = Command::new("rustup");
    c.args(["run", toolchain, "cargo", "fuzz"])
        .current_dir(root())
        .env("PATH", std::env::join_paths(dirs)?);
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        c.env_remove(var);
    }
    if bootstrap {
        c.env("RUSTC_BOOTSTRAP", "1");
    }
    Ok(c)
}

/// Builds every fuzz target and runs each for `seconds_per_target`.
/// Fails naming the target and the crashing input if any finds a bug.
pub fn smoke(seconds_per_target: u64) -> Result<()> {
    let root = root();
    let target = target_dir();
    let work = target.join("fuzz");
    let tools_bin = ensure_cargo_fuzz(&target.join("tools"))?;
    let (toolchain, bootstrap) = toolchain();
    eprintln!(
        "==> fuzzing with the {toolchain} toolchain{}",
        if bootstrap {
            " (RUSTC_BOOTSTRAP=1 for the fuzz build only: no nightly installed)"
        } else {
            ""
        }
    );
    let mut steps = Vec::new();
    for fuzz_dir in projects()? {
        let dirs = |c: &mut Command| {
            c.arg("--fuzz-dir")
                .arg(&fuzz_dir)
                .arg("--target-dir")
                .arg(&work);
        };
        let project = fuzz_dir
            .strip_prefix(&root)
            .unwrap_or(&fuzz_dir)
            .display()
            .to_string();
        let mut build = cargo_fuzz(&tools_bin, toolchain, bootstrap)?;
        build.arg("build");
        dirs(&mut build);
        run_step(&format!("build fuzz targets of {project}"), &mut build)?;
        steps.extend(rust_steps(
            &fuzz_dir,
            &project,
            &work,
            seconds_per_target,
            || {
                let mut run = cargo_fuzz(&tools_bin, toolchain, bootstrap)?;
                run.arg("run");
                dirs(&mut run);
                Ok(run)
            },
        )?);
    }
    steps.extend(c_steps(seconds_per_target)?);
    // libFuzzer is single-threaded: one target per core.
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_steps_parallel(steps, &work.join("logs"), jobs)
}

/// How to run each target of the cargo-fuzz project `fuzz_dir` for
/// `seconds_per_target`, its corpus and artifacts under `work`;
/// `cargo_fuzz_run` makes the project's `cargo fuzz run` command.
fn rust_steps(
    fuzz_dir: &Path,
    project: &str,
    work: &Path,
    seconds_per_target: u64,
    cargo_fuzz_run: impl Fn() -> Result<Command>,
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for t in targets(fuzz_dir)? {
        let corpus = work.join("corpus").join(&t);
        let artifacts = work.join("artifacts").join(&t);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let seeds = fuzz_dir.join("seeds").join(&t);
        let mut run = cargo_fuzz_run()?;
        run.arg(&t).arg(&corpus);
        if seeds.is_dir() {
            run.arg(&seeds);
        }
        run.arg("--")
            .arg(format!("-max_total_time={seconds_per_target}"))
            // A slow input is a bug too: parsers are linear in their input.
            .arg("-timeout=10")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        steps.push(Step {
            name: format!("fuzz {t} for {seconds_per_target} s"),
            cmd: run,
            on_failure: format!(
                "its input is in {} (replay: cargo +nightly fuzz run --fuzz-dir {project} \
                 {t} <input>)",
                artifacts.display()
            ),
        });
    }
    Ok(steps)
}

/// The C fuzz targets of the guest modules' parsers
/// (`guest-drivers/fuzz/*.c`), built with clang's libFuzzer; returns how
/// to run each, like the Rust ones. Each target names the module sources it links in its
/// first line, `// sources: xenshare/parse.c ...` (paths under
/// `guest-drivers/`): the modules' parsers of backend-written bytes build
/// unchanged in userspace (`xenshare/kcompat.h`).
fn c_steps(seconds_per_target: u64) -> Result<Vec<Step>> {
    let drivers = root().join("guest-drivers");
    let targets = c_targets(&drivers.join("fuzz"))?;
    let mut steps = Vec::new();
    if targets.is_empty() {
        eprintln!("==> no C fuzz targets in guest-drivers/fuzz");
        return Ok(steps);
    }
    let clang = ensure_clang()?;
    let work = target_dir().join("fuzz-c");
    for (name, src, sources) in targets {
        let bin = work.join("bin").join(&name);
        std::fs::create_dir_all(bin.parent().unwrap())?;
        let mut build = Command::new(&clang);
        build
            .args(["-g", "-O1", "-std=gnu11", "-Wall", "-Wextra", "-Werror"])
            .args([
                "-fsanitize=fuzzer,address,undefined",
                "-fno-sanitize-recover=undefined",
            ])
            .arg("-I")
            .arg(drivers.join("include"))
            .arg(&src)
            .args(sources.iter().map(|s| drivers.join(s)))
            .arg("-o")
            .arg(&bin);
        run_step(&format!("build C fuzz target {name}"), &mut build)?;
        let corpus = work.join("corpus").join(&name);
        let artifacts = work.join("artifacts").join(&name);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let mut run = Command::new(&bin);
        run.arg(&corpus);
        let seeds = drivers.join("fuzz/seeds").join(&name);
        if seeds.is_dir() {
            run.arg(&seeds);
        }
        run.arg(format!("-max_total_time={seconds_per_target}"))
            .arg("-timeout=10")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        steps.push(Step {
            name: format!("fuzz {name} (C) for {seconds_per_target} s"),
            cmd: run,
            on_failure: format!(
                "its input is in {} (replay: {} <input>)",
                artifacts.display(),
                bin.display()
            ),
        });
    }
    Ok(steps)
}

/// `(name, file, module sources)` of each `guest-drivers/fuzz/*.c`.
fn c_targets(dir: &Path) -> Result<Vec<(String, PathBuf, Vec<String>)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "c") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let sources = parse_sources(&text)
            .with_context(|| format!("{}: first line must be `// sources: ...`", path.display()))?;
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        out.push((name, path, sources));
    }
    out.sort();
    Ok(out)
}

/// The module sources a C fuzz target names in its first line.
fn parse_sources(text: &str) -> Option<Vec<String>> {
    let list = text.lines().next()?.strip_prefix("// sources:")?;
    let sources: Vec<String> = list.split_whitespace().map(str::to_string).collect();
    (!sources.is_empty()
        && sources
            .iter()
            .all(|s| s.ends_with(".c") && !s.contains("..")))
    .then_some(sources)
}

/// clang and its libFuzzer runtime (Debian splits it into
/// `libclang-rt-<major>-dev`), installed once.
fn ensure_clang() -> Result<PathBuf> {
    ensure_apt(&["clang"])?;
    let out = Command::new("clang")
        .arg("--version")
        .output()
        .context("running clang --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("no version in clang --version: {text}"))?;
    ensure_apt(&[&format!("libclang-rt-{major}-dev")])?;
    Ok(PathBuf::from("clang"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_fuzz_target_beside_its_crate() {
        let projects = projects().unwrap();
        let names = |p: &str| targets(&root().join(p).join("fuzz")).unwrap();
        assert_eq!(
            projects,
            [
                "blkback-uk",
                "netback-uk",
                "platforms/share-pvh",
                "platforms/share-sim",
                "share-hal",
                "xen-pv"
            ]
            .map(|p| root().join(p).join("fuzz"))
        );
        for (p, t) in [
            ("platforms/share-pvh", "xenstore"),
            ("platforms/share-sim", "sim_request"),
            ("xen-pv", "blkif_front"),
            ("share-hal", "blk_request"),
            ("share-hal", "blk_response"),
            ("share-hal", "descriptor"),
            ("share-hal", "net_lane"),
            ("share-hal", "net_slots"),
            ("share-hal", "vdevice"),
            ("netback-uk", "switch_input"),
            ("netback-uk", "offload"),
            ("netback-uk", "mgmt"),
            ("netback-uk", "vif"),
            ("blkback-uk", "blk_serve"),
            ("blkback-uk", "vbd_ring"),
        ] {
            assert!(
                names(p).iter().any(|n| n == t),
                "{t} missing from {p}'s fuzz"
            );
        }
    }

    #[test]
    fn c_target_sources_come_from_the_first_line() {
        assert_eq!(
            parse_sources("// sources: xenshare/parse.c xensnet/parse.c\n#include <x>"),
            Some(vec!["xenshare/parse.c".into(), "xensnet/parse.c".into()])
        );
        assert_eq!(parse_sources("#include <x>\n// sources: a.c"), None);
        assert_eq!(parse_sources("// sources:"), None);
        assert_eq!(parse_sources("// sources: ../../etc/x.c"), None);
        assert_eq!(parse_sources("// sources: parse.h"), None);
    }
}
