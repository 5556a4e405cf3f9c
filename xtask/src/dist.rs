//! `cargo xtask dist`: what an administrator installs, as Debian packages
//! under `target/dist/`.
//!
//! - `xen-share_<version>_amd64.deb`, for dom0: the `vdevice` tool and its
//!   daemon's systemd unit, the two backend images under
//!   `/usr/lib/xen-share/`, their xl configs under `/etc/xen/` (conffiles,
//!   `kernel` pointing at the installed image).
//! - `xen-share-dkms_<version>_all.deb`, for guests (and dom0 as a member):
//!   the guest module sources under `/usr/src/xen-share-<version>/` with a
//!   `dkms.conf`, built for each installed kernel by DKMS.
//!
//! Packages are built per Debian release (`--debian 12|13`, default
//! both), under `target/dist/debian-N/`, versioned `<version>+debN`: the
//! releases differ in the Xen tools they recommend (4.17, 4.20) and in
//! where the unit goes (Debian 13 ships units under /usr only, DEP 17).
//! `cargo xtask install-test` installs them into a clean root of each
//! release.
//!
//! Both are assembled in a staging tree and packed with `dpkg-deb
//! --root-owner-group`, so no root or fakeroot is needed; the control files
//! are generated here, from the workspace, so the packages cannot drift
//! from what the tests run.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, root, run_step, target_dir};
use crate::xen::setup::{self, Release};

#[derive(clap::Args)]
pub struct Args {
    /// Only check the staged trees and print what would be packed.
    #[arg(long)]
    dry_run: bool,
    /// The Debian release to build for (12, 13); repeat for several.
    /// Default: every release.
    #[arg(long = "debian", value_name = "N")]
    debian: Vec<u32>,
}

/// The backend images the dom0 package ships, with their xl configs.
const BACKENDS: &[&str] = &["netback-uk", "blkback-uk"];

/// Where the dom0 package puts the images.
pub const IMAGE_DIR: &str = "/usr/lib/xen-share";

/// The systemd unit of `vdevice daemon`, in the repository.
const DAEMON_UNIT: &str = "vdevice/vdevice.service";

/// The guest module sources the DKMS package ships (under guest-drivers/).
const MODULE_DIRS: &[&str] = &["xenshare", "xensnet", "xensblk"];

/// The packages `dist` built.
#[derive(Clone)]
pub struct Packages {
    pub dom0: PathBuf,
    pub dkms: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    for rel in setup::releases(&args.debian)? {
        let p = build(rel, args.dry_run)?;
        list(&p, args.dry_run)?;
    }
    Ok(())
}

fn list(p: &Packages, dry_run: bool) -> Result<()> {
    for deb in [&p.dom0, &p.dkms] {
        if dry_run {
            continue;
        }
        let size = fs::metadata(deb)?.len();
        println!("{} ({} KiB)", deb.display(), size.div_ceil(1024));
        let out = Command::new("dpkg-deb")
            .arg("--contents")
            .arg(deb)
            .output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "perms owner size date time path": keep size and path.
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 6 && !cols[5].ends_with('/') {
                println!("  {:>9}  {}", cols[2], cols[5]);
            }
        }
    }
    Ok(())
}

/// The version every package carries: the vdevice crate's.
fn version() -> Result<String> {
    let toml = fs::read_to_string(root().join("vdevice/Cargo.toml"))?;
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .context("no version in vdevice/Cargo.toml")
}

/// Where the dom0 package puts the daemon's unit on `rel`: Debian 13
/// moved every file to /usr (merged /usr, DEP 17), and its packages must
/// not ship under the /lib alias any more; Debian 12's units are in /lib.
pub fn unit_dir(rel: &Release) -> &'static str {
    if rel.number >= 13 {
        "usr/lib/systemd/system"
    } else {
        "lib/systemd/system"
    }
}

/// Builds both packages for `rel`; returns their paths.
pub fn build(rel: &Release, dry_run: bool) -> Result<Packages> {
    // The sources do not change while xtask runs: the xen tier's install
    // test and each rig image of a release take the same packages, built
    // (and their DKMS tree compiled) once.
    static BUILT: std::sync::Mutex<Vec<(u32, Packages)>> = std::sync::Mutex::new(Vec::new());
    if !dry_run {
        if let Some((_, p)) = BUILT.lock().unwrap().iter().find(|(n, _)| *n == rel.number) {
            return Ok(p.clone());
        }
    }
    let p = build_uncached(rel, dry_run)?;
    if !dry_run {
        BUILT.lock().unwrap().push((rel.number, p.clone()));
    }
    Ok(p)
}

fn build_uncached(rel: &Release, dry_run: bool) -> Result<Packages> {
    let version = format!("{}+deb{}", version()?, rel.number);
    let out = target_dir().join(format!("dist/debian-{}", rel.number));
    fs::create_dir_all(&out)?;
    let dom0_tree = out.join("stage-dom0");
    let dkms_tree = out.join("stage-dkms");
    stage_dom0(rel, &dom0_tree, &version)?;
    stage_dkms(&dkms_tree, &version)?;
    let dom0 = out.join(format!("xen-share_{version}_amd64.deb"));
    let dkms = out.join(format!("xen-share-dkms_{version}_all.deb"));
    check_dkms_tree(rel, &dkms_tree, &version)?;
    if !dry_run {
        pack(&dom0_tree, &dom0)?;
        pack(&dkms_tree, &dkms)?;
    }
    Ok(Packages { dom0, dkms })
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir)?;
    Ok(())
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(path.parent().unwrap())?;
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to.parent().unwrap())?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// An xl config from the repository with `kernel` pointing at the
/// installed image; refuses a config whose kernel line it cannot find, so
/// a renamed image is not shipped with a dangling path.
pub fn installed_xl_config(text: &str, image: &str) -> Result<String> {
    let mut out = String::new();
    let mut found = false;
    for l in text.lines() {
        if l.trim_start().starts_with("kernel") && l.contains('=') {
            found = true;
            out.push_str(&format!("kernel = \"{IMAGE_DIR}/{image}\"\n"));
        } else if l.starts_with("# Build the image with") {
            out.push_str(&format!(
                "# Installed by the xen-share package (image in {IMAGE_DIR}/).\n"
            ));
        } else if l.starts_with("# rig puts it at") {
            // The rest of the repository's build hint.
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !found {
        bail!("no `kernel = ...` line in the xl config of {image}");
    }
    Ok(out)
}

fn stage_dom0(rel: &Release, tree: &Path, version: &str) -> Result<()> {
    fresh_dir(tree)?;
    let images = crate::images::build(&BACKENDS.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    for (name, path) in BACKENDS.iter().zip(&images) {
        crate::images::refuse_test_build(path)?;
        copy(path, &tree.join(&IMAGE_DIR[1..]).join(name), 0o644)?;
        let cfg = fs::read_to_string(root().join("xl-configs").join(format!("{name}.cfg")))?;
        write(
            &tree.join(format!("etc/xen/{name}.cfg")),
            &installed_xl_config(&cfg, name)?,
            0o644,
        )?;
    }
    run_step(
        "build vdevice (release)",
        cargo().args(["build", "--release", "-p", "vdevice", "--bin", "vdevice"]),
    )?;
    let vdevice = target_dir().join("release/vdevice");
    copy(&vdevice, &tree.join("usr/sbin/vdevice"), 0o755)?;
    run_step(
        "strip vdevice",
        Command::new("strip").arg(tree.join("usr/sbin/vdevice")),
    )?;
    let unit = root().join(DAEMON_UNIT);
    if !unit.is_file() {
        bail!(
            "{} is missing: the dom0 package ships the daemon's unit",
            unit.display()
        );
    }
    copy(
        &unit,
        &tree.join(unit_dir(rel)).join("vdevice.service"),
        0o644,
    )?;
    let doc = tree.join("usr/share/doc/xen-share");
    copy(&root().join("README.md"), &doc.join("README.md"), 0o644)?;
    copy(
        &root().join("docs/protocol.md"),
        &doc.join("protocol.md"),
        0o644,
    )?;
    write(&doc.join("copyright"), &copyright(), 0o644)?;

    let size_kib = dir_size(tree)?.div_ceil(1024);
    let conffiles: String = BACKENDS
        .iter()
        .map(|n| format!("/etc/xen/{n}.cfg\n"))
        .collect();
    write(&tree.join("DEBIAN/conffiles"), &conffiles, 0o644)?;
    write(
        &tree.join("DEBIAN/control"),
        &format!(
            "Package: xen-share\n\
             Version: {version}\n\
             Architecture: amd64\n\
             Maintainer: xen-share developers <xen-share@localhost>\n\
             Installed-Size: {size_kib}\n\
             Depends: libc6, xen-utils-common, xenstore-utils\n\
             Recommends: xen-utils-{xen}\n\
             Section: admin\n\
             Priority: optional\n\
             Description: xen-share driver domains and the vdevice tool for dom0\n \
             Tiny Rust unikernel driver domains for Xen: netback-uk (a multi-way\n \
             LAN switch, xensnet) and blkback-uk (a disk server, xensblk), and\n \
             vdevice, which connects domains to them through each domain's\n \
             vdevice page (no xenbus). Start the backends with\n \
             `xl create /etc/xen/netback-uk.cfg` and `xl create\n \
             /etc/xen/blkback-uk.cfg`; guests load the modules of xen-share-dkms.\n",
            xen = rel.xen
        ),
        0o644,
    )?;
    // The daemon is enabled on install but only started where systemd runs
    // (not in a chroot or a container build).
    write(
        &tree.join("DEBIAN/postinst"),
        "#!/bin/sh\nset -e\n\
         if [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then\n\
         \tsystemctl daemon-reload || true\n\
         \tsystemctl enable --now vdevice.service || true\n\
         fi\n",
        0o755,
    )?;
    write(
        &tree.join("DEBIAN/prerm"),
        "#!/bin/sh\nset -e\n\
         if [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n\
         \tsystemctl disable --now vdevice.service || true\n\
         fi\n",
        0o755,
    )?;
    Ok(())
}

fn stage_dkms(tree: &Path, version: &str) -> Result<()> {
    fresh_dir(tree)?;
    let drivers = root().join("guest-drivers");
    let src = tree.join(format!("usr/src/xen-share-{version}"));
    let mut modules = Vec::new();
    for dir in ["include"].iter().chain(MODULE_DIRS) {
        let from = drivers.join(dir);
        if !from.is_dir() {
            bail!("{} is missing", from.display());
        }
        copy_sources(&from, &src.join(dir))?;
        if *dir != "include" {
            modules.push(*dir);
        }
    }
    for f in ["Kbuild", "Makefile"] {
        copy(&drivers.join(f), &src.join(f), 0o644)?;
    }
    write(&src.join("dkms.conf"), &dkms_conf(version, &modules), 0o644)?;
    write(
        &tree.join("usr/share/doc/xen-share-dkms/copyright"),
        &copyright(),
        0o644,
    )?;
    let size_kib = dir_size(tree)?.div_ceil(1024);
    write(
        &tree.join("DEBIAN/control"),
        &format!(
            "Package: xen-share-dkms\n\
             Version: {version}\n\
             Architecture: all\n\
             Maintainer: xen-share developers <xen-share@localhost>\n\
             Installed-Size: {size_kib}\n\
             Depends: dkms\n\
             Section: kernel\n\
             Priority: optional\n\
             Description: xen-share guest modules (DKMS sources)\n \
             xenshare (the share transport of a Xen guest and /dev/xenshare),\n \
             xensnet (a port of a netback-uk LAN) and xensblk (a disk served by\n \
             blkback-uk), built by DKMS for each installed kernel.\n \
             `modprobe xensnet` / `modprobe xensblk` in the guest.\n"
        ),
        0o644,
    )?;
    let m = format!("-m xen-share -v {version}");
    // Debian's DKMS helper (what dh_dkms packages call): adds the sources,
    // builds and installs for the running kernel and the newest installed
    // one, and says so.
    write(
        &tree.join("DEBIAN/postinst"),
        &format!(
            "#!/bin/sh\nset -e\n\
             if [ \"$1\" = configure ]; then\n\
             \t/usr/lib/dkms/common.postinst xen-share {version} \"\" \"\" \"$2\"\n\
             fi\n"
        ),
        0o755,
    )?;
    write(
        &tree.join("DEBIAN/prerm"),
        &format!("#!/bin/sh\nset -e\ndkms remove {m} --all 2>/dev/null || true\n"),
        0o755,
    )?;
    Ok(())
}

/// Builds the DKMS source tree as DKMS would (its `MAKE` line, in a copy),
/// against the headers of `rel`'s kernel (the host's when the host runs
/// `rel`, else in the release's build root, as `cargo xtask modules`
/// does), so a package whose sources do not build on their own (a file
/// left out, a path into the repository) is never packed.
fn check_dkms_tree(rel: &Release, tree: &Path, version: &str) -> Result<()> {
    use crate::xen::setup;
    let sources = tree.join(format!("usr/src/xen-share-{version}"));
    let on_host = setup::host_release().is_some_and(|h| h.number == rel.number);
    let (build, release, mut make) = if on_host {
        let release = setup::kernel_release(rel)?;
        let build = tree.with_file_name("dkms-check");
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(setup::kernel_headers(&release)?)
            .arg(format!("M={}", build.display()));
        (build, release, make)
    } else {
        let (sysroot, release) = setup::build_root(rel, false)?;
        let build = sysroot.join("build/dkms-check");
        let mut make = Command::new("chroot");
        make.arg(&sysroot)
            .args(["make", "-C"])
            .arg(format!("/lib/modules/{release}/build"))
            .arg("M=/build/dkms-check")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        (build, release, make)
    };
    if build.exists() {
        fs::remove_dir_all(&build)?;
    }
    copy_sources(&sources, &build)?;
    run_step(
        &format!("build the DKMS sources against {release}"),
        make.arg("modules"),
    )?;
    for m in MODULE_DIRS {
        let ko = build.join(m).join(format!("{m}.ko"));
        if !ko.is_file() {
            bail!("the DKMS sources built no {}", ko.display());
        }
    }
    Ok(())
}

/// dkms.conf for the module directories (each builds `<dir>.ko`).
pub fn dkms_conf(version: &str, modules: &[&str]) -> String {
    let mut s = format!(
        "PACKAGE_NAME=\"xen-share\"\n\
         PACKAGE_VERSION=\"{version}\"\n\
         MAKE[0]=\"make -C ${{kernel_source_dir}} M=${{dkms_tree}}/${{PACKAGE_NAME}}/${{PACKAGE_VERSION}}/build modules\"\n\
         CLEAN=\"make -C ${{kernel_source_dir}} M=${{dkms_tree}}/${{PACKAGE_NAME}}/${{PACKAGE_VERSION}}/build clean\"\n\
         AUTOINSTALL=\"yes\"\n"
    );
    for (i, m) in modules.iter().enumerate() {
        s.push_str(&format!(
            "BUILT_MODULE_NAME[{i}]=\"{m}\"\n\
             BUILT_MODULE_LOCATION[{i}]=\"{m}/\"\n\
             DEST_MODULE_LOCATION[{i}]=\"/updates/dkms\"\n"
        ));
    }
    s
}

/// Sources only: no build outputs of a local `make` in the tree.
pub fn copy_sources(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            copy_sources(&path, &to.join(&name))?;
        } else if is_source(&name) {
            copy(&path, &to.join(&name), 0o644)?;
        }
    }
    Ok(())
}

fn is_source(name: &str) -> bool {
    // `*.mod.c` is generated by modpost.
    (name.ends_with(".c") && !name.ends_with(".mod.c"))
        || name.ends_with(".h")
        || name == "Kbuild"
        || name == "Makefile"
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: xen-share\n\n\
     Files: *\n\
     License: GPL-2.0-only\n \
     On Debian systems, the full text is in /usr/share/common-licenses/GPL-2.\n"
        .into()
}

/// Packs `tree` reproducibly: the same files make the same bytes
/// (dpkg-deb clamps every time to `SOURCE_DATE_EPOCH`: the caller's, or
/// the last commit's), which is how the rig tells whether what the install
/// test installed is still this build's package.
fn pack(tree: &Path, deb: &Path) -> Result<()> {
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().or_else(|| {
        let out = Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(root())
            .output()
            .ok()?;
        let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !t.is_empty()).then_some(t)
    });
    let mut c = Command::new("dpkg-deb");
    c.args(["--root-owner-group", "-Zxz", "--build"])
        .arg(tree)
        .arg(deb);
    if let Some(e) = epoch {
        c.env("SOURCE_DATE_EPOCH", e);
    }
    run_step(&format!("dpkg-deb --build {}", deb.display()), &mut c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_config_points_at_the_installed_image() {
        let repo = fs::read_to_string(root().join("xl-configs/netback-uk.cfg")).unwrap();
        let cfg = installed_xl_config(&repo, "netback-uk").unwrap();
        assert!(
            cfg.contains("kernel = \"/usr/lib/xen-share/netback-uk\""),
            "{cfg}"
        );
        assert!(!cfg.contains("/images/"), "{cfg}");
        assert!(cfg.contains("tsc_mode = \"native\""), "{cfg}");
        assert!(installed_xl_config("name = \"x\"\n", "x").is_err());
    }

    #[test]
    fn dkms_conf_names_every_module() {
        let c = dkms_conf("1.2.3", &["xenshare", "xensnet"]);
        assert!(c.contains("PACKAGE_VERSION=\"1.2.3\""));
        assert!(c.contains("BUILT_MODULE_NAME[1]=\"xensnet\""));
        assert!(c.contains("BUILT_MODULE_LOCATION[0]=\"xenshare/\""));
        assert!(c.contains("M=${dkms_tree}/${PACKAGE_NAME}/${PACKAGE_VERSION}/build"));
    }

    #[test]
    fn only_sources_are_shipped() {
        for (n, ok) in [
            ("core.c", true),
            ("wire.h", true),
            ("Kbuild", true),
            ("core.o", false),
            ("xenshare.mod.c", false),
            ("xenshare.ko", false),
            (".core.o.cmd", false),
            ("Module.symvers", false),
        ] {
            assert_eq!(is_source(n), ok, "{n}");
        }
    }
}
