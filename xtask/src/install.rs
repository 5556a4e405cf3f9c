//! `cargo xtask install-test`: the packages of `cargo xtask dist`,
//! installed with `dpkg -i` into a clean root of each Debian release, as
//! an administrator gets them.
//!
//! The root is a copy of the release's build root (debootstrap minbase with
//! gcc, make and the release's newest kernel headers, see
//! [`setup::build_root`]) with what the packages depend on and the tools
//! the checks use (dkms, kmod, systemd, Xen's common tools) installed once
//! and cached. Each run copies it, installs both packages and checks:
//!
//! - DKMS built and installed the three modules for the release's kernel
//!   (`modinfo -k`);
//! - `systemd-analyze verify` (the release's own systemd) accepts the
//!   daemon's unit;
//! - `/usr/sbin/vdevice --help` runs;
//! - the xl configs point at images that were installed;
//! - `dpkg -P` leaves no file behind (the root's file list before and after,
//!   apart from dpkg's and apt's own state and logs), and depmod's index
//!   names none of the modules any more.
//!
//! Before the purge, the files `dpkg -i` installed from the dom0 package
//! (`dpkg -L xen-share`) are kept under `target/xen-rig/debian-N/installed`:
//! the rig's dom0 runs those ([`installed_tree`]), not an unpacked copy.
//!
//! A chroot has no running kernel of its own (`uname -r` is the host's), so
//! Debian's DKMS helper would build for no kernel there; the copy sets
//! DKMS's documented `autoinstall_all_kernels`, as an administrator building
//! a root or an image does.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::dist;
use crate::util::run_step;
use crate::xen::setup::{self, Release};

#[derive(clap::Args)]
pub struct Args {
    /// The Debian release to test (12, 13); repeat for several. Default:
    /// every release.
    #[arg(long = "debian", value_name = "N")]
    debian: Vec<u32>,
}

/// The modules the DKMS package builds.
const MODULES: &[&str] = &["xenshare", "xensnet", "xensblk"];

/// Installed once into the cached root: the packages' dependencies (dkms;
/// Xen's common tools and xenstore-utils for the dom0 package) and the
/// checks' tools (modinfo, systemd-analyze).
const BASE_PACKAGES: &[&str] = &[
    "dkms",
    "kmod",
    "systemd",
    "xen-utils-common",
    "xenstore-utils",
];

/// State that installing and purging a package changes by design: dpkg's
/// and apt's databases, logs and caches, and the chroot's scratch dirs.
const NOT_COMPARED: &[&str] = &[
    "var/lib/dpkg",
    "var/lib/apt",
    "var/log",
    "var/cache",
    "tmp",
    "run",
    "proc",
    "sys",
    "dev",
];

pub fn run(args: Args) -> Result<()> {
    for rel in setup::releases(&args.debian)? {
        run_for(rel)?;
    }
    Ok(())
}

/// Builds the packages for `rel` and checks them in a clean root of it.
pub fn run_for(rel: &Release) -> Result<()> {
    let start = Instant::now();
    let what = format!("package install test on {}", rel.describe());
    eprintln!("==> {what}");
    let debs = dist::build(rel, false)?;
    let (base, kernel) = setup::build_root(rel, false)?;
    ensure_base_packages(&base)?;
    let scratch = base.with_file_name("install-test");
    copy_root(&base, &scratch)?;
    let result = Mounts::new(&scratch).and_then(|_mounts| check(rel, &scratch, &debs, &kernel));
    match &result {
        Ok(()) => {
            remove_root(&scratch)?;
            eprintln!("<== {what}: ok in {:.1} s", start.elapsed().as_secs_f64());
        }
        Err(_) => eprintln!("{what}: the root is kept in {}", scratch.display()),
    }
    result.with_context(|| format!("{what} failed"))
}

fn check(rel: &Release, root: &Path, debs: &dist::Packages, kernel: &str) -> Result<()> {
    fs::create_dir_all(root.join("etc/dkms"))?;
    fs::write(
        root.join("etc/dkms/framework.conf"),
        "# install test: a chroot's uname -r is the host's kernel\nautoinstall_all_kernels=\"yes\"\n",
    )?;
    let before = listing(root)?;

    let mut inside = Vec::new();
    for deb in [&debs.dkms, &debs.dom0] {
        let name = deb.file_name().context("package without a name")?;
        fs::copy(deb, root.join("tmp").join(name))?;
        inside.push(format!("/tmp/{}", name.to_string_lossy()));
    }
    let out = chroot(root, "dpkg", &["-i"], &inside)?;
    expect_ok("dpkg -i", &out)?;

    for m in MODULES {
        let out = chroot(root, "modinfo", &["-k", kernel, "-F", "filename", m], &[])?;
        expect_ok(&format!("modinfo -k {kernel} {m}"), &out)?;
        let file = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !file.starts_with(&format!("/lib/modules/{kernel}/"))
            && !file.starts_with(&format!("/usr/lib/modules/{kernel}/"))
        {
            bail!("modinfo found {m} at {file:?}, not under {kernel}'s modules");
        }
        eprintln!("    {m}: {file}");
    }

    let unit = format!("/{}/vdevice.service", dist::unit_dir(rel));
    let out = chroot(root, "systemd-analyze", &["verify", &unit], &[])?;
    expect_ok(&format!("systemd-analyze verify {unit}"), &out)?;
    let said = text(&out);
    if said.contains("vdevice") {
        bail!("systemd-analyze verify {unit} warned about the unit:\n{said}");
    }
    eprintln!("    systemd-analyze verify {unit}: accepted");

    let out = chroot(root, "/usr/sbin/vdevice", &["--help"], &[])?;
    expect_ok("vdevice --help", &out)?;
    if !text(&out).contains("Usage") {
        bail!("vdevice --help printed no usage:\n{}", text(&out));
    }
    eprintln!("    /usr/sbin/vdevice --help: runs");

    for cfg in ["netback-uk", "blkback-uk"] {
        let path = root.join(format!("etc/xen/{cfg}.cfg"));
        let cfg_text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let image = xl_kernel(&cfg_text)
            .with_context(|| format!("/etc/xen/{cfg}.cfg has no kernel line"))?;
        let installed = root.join(image.trim_start_matches('/'));
        if !installed.is_file() {
            bail!("/etc/xen/{cfg}.cfg names kernel {image}, which was not installed");
        }
        eprintln!("    /etc/xen/{cfg}.cfg: kernel {image} installed");
    }

    keep_installed(rel, root, &debs.dom0)?;

    let out = chroot(root, "dpkg", &["-P", "xen-share", "xen-share-dkms"], &[])?;
    expect_ok("dpkg -P", &out)?;
    let after = listing(root)?;
    let left: Vec<&String> = after.difference(&before).collect();
    let lost: Vec<&String> = before.difference(&after).collect();
    if !left.is_empty() || !lost.is_empty() {
        bail!("install and purge changed the root's files: left behind {left:?}, removed {lost:?}");
    }
    let dep = root.join(format!("lib/modules/{kernel}/modules.dep"));
    let index = fs::read_to_string(&dep).unwrap_or_default();
    if let Some(m) = MODULES.iter().find(|m| index.contains(&format!("/{m}.ko"))) {
        bail!("{} still names {m} after the purge", dep.display());
    }
    eprintln!("    dpkg -P: no file left behind");
    Ok(())
}

/// Where the files of the dom0 package, as `dpkg -i` installed them on
/// `rel`, are kept for the rig, and the copy of the package they came from
/// (what tells whether they are still the current package's).
fn installed_paths(rel: &Release) -> (PathBuf, PathBuf) {
    let dir = setup::rig_dir().join(format!("debian-{}", rel.number));
    (dir.join("installed"), dir.join("installed.deb"))
}

/// Copies every regular file `dpkg -L xen-share` names in `root` (where
/// `dpkg -i` just installed `deb`) to [`installed_paths`], replacing what
/// was kept before.
fn keep_installed(rel: &Release, root: &Path, deb: &Path) -> Result<()> {
    let out = chroot(root, "dpkg", &["-L", "xen-share"], &[])?;
    expect_ok("dpkg -L xen-share", &out)?;
    let (kept, kept_deb) = installed_paths(rel);
    let fresh = kept.with_extension("new");
    remove_root(&fresh)?;
    let mut files = 0;
    for path in String::from_utf8_lossy(&out.stdout).lines() {
        let rel_path = path.trim().trim_start_matches('/');
        let from = root.join(rel_path);
        let is_file = fs::symlink_metadata(&from).is_ok_and(|m| m.file_type().is_file());
        if rel_path.is_empty() || !is_file {
            continue; // directories (and /. itself)
        }
        let to = fresh.join(rel_path);
        fs::create_dir_all(to.parent().context("a file without a directory")?)?;
        fs::copy(&from, &to).with_context(|| format!("keeping {} for the rig", from.display()))?;
        files += 1;
    }
    if files == 0 {
        bail!("dpkg -L xen-share named no installed file");
    }
    remove_root(&kept)?;
    fs::rename(&fresh, &kept)?;
    fs::copy(deb, &kept_deb)?;
    eprintln!(
        "    {files} files of xen-share as installed kept for the rig in {}",
        kept.display()
    );
    Ok(())
}

/// The files of `rel`'s dom0 package as `dpkg -i` installed them into a
/// clean root of the release: kept by the last install test, or, when that
/// was of another package than `dist` builds now, by running the install
/// test again. The rig's dom0 takes these files.
pub fn installed_tree(rel: &Release) -> Result<PathBuf> {
    let debs = dist::build(rel, false)?;
    let (kept, kept_deb) = installed_paths(rel);
    let same = |a: &Path, b: &Path| match (fs::read(a), fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    };
    if !(kept.is_dir() && same(&debs.dom0, &kept_deb)) {
        eprintln!(
            "==> the rig's dom0 runs what dpkg -i installs: installing this build's packages on {}",
            rel.describe()
        );
        run_for(rel)?;
    }
    Ok(kept)
}

/// The `kernel = "..."` of an xl config.
fn xl_kernel(cfg: &str) -> Option<&str> {
    cfg.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "kernel").then(|| v.trim().trim_matches('"'))
    })
}

fn chroot(root: &Path, program: &str, args: &[&str], more: &[String]) -> Result<Output> {
    Command::new("chroot")
        .arg(root)
        .arg(program)
        .args(args)
        .args(more)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("could not run chroot {program}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn expect_ok(what: &str, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!("{what} failed ({}):\n{}", out.status, text(out));
    }
    Ok(())
}

/// Installs [`BASE_PACKAGES`] into the build root once (a stamp names
/// them), with services kept from starting in the chroot.
fn ensure_base_packages(root: &Path) -> Result<()> {
    let stamp = root.join(".xen-share-install-base");
    let want = BASE_PACKAGES.join(" ") + "\n";
    if fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    let policy = root.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))?;
    }
    let apt = |args: &[&str]| {
        let mut c = Command::new("chroot");
        c.arg(root)
            .arg("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    };
    run_step(
        &format!("apt-get update in {}", root.display()),
        &mut apt(&["update", "-qq"]),
    )?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(BASE_PACKAGES);
    run_step(
        &format!("install {} in {}", BASE_PACKAGES.join(", "), root.display()),
        &mut install,
    )
    .context("step 'install the install test's base packages' failed")?;
    fs::write(&stamp, want)?;
    Ok(())
}

/// `to` becomes a copy of `from` (cp -a: owners, modes, links kept).
fn copy_root(from: &Path, to: &Path) -> Result<()> {
    remove_root(to)?;
    run_step(
        "copy the clean root",
        Command::new("cp").arg("-a").arg(from).arg(to),
    )
}

/// /proc and /dev in the copied root while it is in use (DKMS reads
/// /proc/cpuinfo and /dev/fd); unmounted when dropped.
struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    fn new(root: &Path) -> Result<Mounts> {
        let mut m = Mounts { points: Vec::new() };
        for (what, args) in [
            ("proc", ["-t", "proc", "proc"]),
            ("dev", ["--bind", "/dev", ""]),
        ] {
            let point = root.join(what);
            fs::create_dir_all(&point)?;
            let mut c = Command::new("mount");
            c.args(args.iter().filter(|a| !a.is_empty())).arg(&point);
            run_step(&format!("mount /{what} in the root"), &mut c)?;
            m.points.push(point);
        }
        Ok(m)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for p in self.points.iter().rev() {
            let _ = Command::new("umount").arg(p).status();
        }
    }
}

/// The mount points at or under `dir` (from /proc/self/mounts).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Removes a copied root, after unmounting what an interrupted run left
/// mounted in it: removing through a bind mount of /dev would remove the
/// host's device nodes.
fn remove_root(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for p in mounts_under(dir).iter().rev() {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        bail!(
            "{} still has mounts ({left:?}); not removing it",
            dir.display()
        );
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Every path under `root` (relative, with a `/` after directories and the
/// target after symlinks), apart from [`NOT_COMPARED`] and depmod's index
/// files (rebuilt whenever a module comes or goes; checked apart).
fn listing(root: &Path) -> Result<BTreeSet<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let path = e.path();
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            if NOT_COMPARED.contains(&rel.as_str()) || is_depmod_index(&rel) {
                continue;
            }
            let ty = e.file_type()?;
            if ty.is_symlink() {
                out.insert(format!("{rel} -> {}", fs::read_link(&path)?.display()));
            } else if ty.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &path, out)?;
            } else {
                out.insert(rel);
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

fn is_depmod_index(rel: &str) -> bool {
    let Some(in_modules) = rel
        .strip_prefix("lib/modules/")
        .or_else(|| rel.strip_prefix("usr/lib/modules/"))
    else {
        return false;
    };
    in_modules
        .split_once('/')
        .is_some_and(|(_kernel, file)| !file.contains('/') && file.starts_with("modules."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_of_an_installed_xl_config_is_found() {
        let cfg = dist::installed_xl_config(
            &fs::read_to_string(crate::util::root().join("xl-configs/netback-uk.cfg")).unwrap(),
            "netback-uk",
        )
        .unwrap();
        assert_eq!(xl_kernel(&cfg), Some("/usr/lib/xen-share/netback-uk"));
        assert_eq!(xl_kernel("memory = 4\n"), None);
    }

    #[test]
    fn depmod_index_files_are_told_from_modules() {
        assert!(is_depmod_index("lib/modules/6.1.0-57-amd64/modules.dep"));
        assert!(is_depmod_index(
            "usr/lib/modules/6.12.43+deb13-amd64/modules.alias.bin"
        ));
        assert!(!is_depmod_index(
            "lib/modules/6.1.0-57-amd64/updates/dkms/xensnet.ko"
        ));
        assert!(!is_depmod_index(
            "lib/modules/6.1.0-57-amd64/modules.dep.extra/xensnet.ko"
        ));
        assert!(!is_depmod_index("etc/modules.conf"));
    }

    #[test]
    fn the_listing_sees_what_a_package_leaves_and_skips_dpkg_state() {
        let dir = std::env::temp_dir().join(format!("install-listing-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for d in ["var/lib/dpkg/info", "lib/modules/6.1.0-57-amd64", "etc/xen"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::write(dir.join("var/lib/dpkg/status"), "").unwrap();
        fs::write(dir.join("lib/modules/6.1.0-57-amd64/modules.dep"), "").unwrap();
        let before = listing(&dir).unwrap();
        fs::write(dir.join("etc/xen/netback-uk.cfg"), "").unwrap();
        std::os::unix::fs::symlink("/usr/sbin/vdevice", dir.join("etc/xen/link")).unwrap();
        fs::write(dir.join("var/lib/dpkg/info/xen-share.list"), "").unwrap();
        fs::write(dir.join("lib/modules/6.1.0-57-amd64/modules.alias"), "").unwrap();
        let after = listing(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let left: Vec<&String> = after.difference(&before).collect();
        assert_eq!(
            left,
            [
                "etc/xen/link -> /usr/sbin/vdevice",
                "etc/xen/netback-uk.cfg"
            ]
        );
        assert!(before.contains("etc/xen/"));
    }

    #[test]
    fn units_go_under_usr_from_debian_13() {
        assert_eq!(dist::unit_dir(&setup::DEBIAN_12), "lib/systemd/system");
        assert_eq!(dist::unit_dir(&setup::DEBIAN_13), "usr/lib/systemd/system");
    }
}
