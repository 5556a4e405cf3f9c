//! The dom0 and domU initramfs images (`cargo xtask xen build`).
//!
//! Both are busybox systems assembled from the unpacked packages, the
//! libraries of the release (the host's for the host's release, its build
//! root's for another: see [`Setup::libroot`]) and the project's own
//! files. What goes in is listed in `xen-rig/README.md`;
//! the constants below are the extension points other parts of the project
//! add to.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cpio::Archive;
use super::setup::{rig_dir, Setup};
use crate::test::HOST_FEATURES;
use crate::util::{cargo, root, run_step, target_dir};

/// Rust test programs of this workspace put into dom0's `/usr/bin`, as
/// (package, binary). Built for the host target with the host features, so
/// they reuse the test build. (`vdevice` is not one: dom0 runs
/// `/usr/sbin/vdevice` as the package installed it.)
pub const DOM0_BINARIES: &[(&str, &str)] = &[
    ("pvh-selftest", "share-selftest-dom0"),
    ("blkback-uk", "blk-dom0-check"),
];

/// Features the dom0 binaries need beyond the host test features
/// (`blk-dom0-check` is a std program over share-hal's Linux platform).
const DOM0_EXTRA_FEATURES: &str = "blkback-uk/dom0";

/// Rust binaries of this workspace put into the Linux domU image's
/// `/usr/bin`, as (package, binary): linked like [`DOM0_BINARIES`] (the
/// domU has the same Debian libraries, copied in with them), but built
/// with `--release`: a domU's image is loaded by `xl create` on every boot
/// (a debug share-member is 3x the size) and the member moves every frame
/// of the domain through TCG.
pub const DOMU_BINARIES: &[(&str, &str)] =
    &[("share-member", "share-member"), ("rig-bench", "rig-bench")];

/// Examples of this workspace put into the domU image's `/usr/bin`, as
/// (package, example), built and stripped like
/// [`DOMU_BINARIES`]: `xenshare-xfer` moves data between two domUs
/// through `/dev/xenshare` (scenario `xenshare-dev`); `xenshare-vma`
/// forks and mremaps a mapping of it (scenario `xenshare-vma`).
pub const DOMU_EXAMPLES: &[(&str, &str)] = &[
    ("share-linux", "xenshare-xfer"),
    ("share-linux", "xenshare-vma"),
    ("share-linux", "xenshare-liar"),
];

/// The test-only examples among [`DOMU_EXAMPLES`], as (example, feature):
/// built with a feature nothing shipped has (`xenshare-liar`, an owner
/// that lies to a `/dev/xenshare` user: scenario `hostile-xenshare`).
pub const DOMU_TEST_EXAMPLES: &[(&str, &str)] = &[("xenshare-liar", "hostile")];

/// Modules dom0 loads at boot, in order; the rig fails if one does not load.
pub const DOM0_MODULES: &[&str] = &[
    "xen-privcmd",
    "xenfs",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
];

/// Modules put into dom0 but loaded only by scenarios that want them (stock
/// backends to compare with, a bridge for vifs).
pub const DOM0_OPTIONAL_MODULES: &[&str] = &["xen-blkback", "xen-netback", "bridge", "loop", "tun"];

/// Modules a Linux domU loads at boot.
pub const DOMU_MODULES: &[&str] = &["xen-evtchn", "xen-gntdev", "xen-gntalloc"];

/// Modules put into the domU image, loaded by scenarios on demand.
/// (`tun`: share-member's TAP devices; `fuse` and `loop`: its disks, a
/// loop device over a FUSE file; `crc32c_generic`: ext4's metadata
/// checksums, which the kernel would load by alias, and the image has no
/// modules.alias.)
pub const DOMU_OPTIONAL_MODULES: &[&str] = &[
    "xen-blkfront",
    "xen-netfront",
    "ext4",
    "crc32c_generic",
    "tun",
    "fuse",
    "loop",
];

/// Host programs in both images (with their libraries): disk tests make
/// and check file systems.
const HOST_TOOLS: &[(&str, &[&str])] = &[
    ("/sbin/mke2fs", &["mkfs.ext4", "mkfs.ext2"]),
    ("/sbin/e2fsck", &["fsck.ext4", "fsck.ext2"]),
];

/// Xen programs left out of dom0: the OCaml xenstored (the C one runs) and
/// Python tools (no Python in dom0).
const SKIPPED_XEN_PROGRAMS: &[&str] = &[
    "oxenstored",
    "pygrub",
    "convert-legacy-stream",
    "verify-stream-v2",
    "xenpvnetboot",
];

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// A copy of `bin` without debug info (a debug build of a dom0 tool is
/// mostly DWARF, which only slows the boot), or `bin` itself when objcopy
/// is missing.
fn stripped(bin: &Path) -> Result<PathBuf> {
    let out = rig_dir().join("stripped").join(file_name(bin));
    fs::create_dir_all(rig_dir().join("stripped"))?;
    let ok = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(bin)
        .arg(&out)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    Ok(if ok { out } else { bin.to_path_buf() })
}

/// The built dom0 image (the domU image travels inside it, at
/// /boot/domu.cpio, and is also kept beside it for inspection).
pub struct Images {
    pub dom0: PathBuf,
}

/// Where the images take their programs' libraries from: the unpacked
/// packages first, then `libroot` (`/`, the host, for the host's release;
/// the release's build root for another).
#[derive(Clone, Copy)]
struct Libs<'a> {
    tree: &'a Path,
    libroot: &'a Path,
}

impl Libs<'_> {
    fn of(s: &Setup) -> Libs<'_> {
        Libs {
            tree: &s.tree,
            libroot: &s.libroot,
        }
    }

    fn host(&self) -> bool {
        self.libroot == Path::new("/")
    }

    /// Where a file the loader resolved comes from and where it ends up
    /// in the image: a library of the tree or of the root at its path
    /// there; a path outside both (the interpreter, `/lib64/ld-linux...`,
    /// as the program names it) from the root.
    fn locate(&self, path: &Path) -> Result<(PathBuf, String)> {
        for base in [self.tree, self.libroot] {
            if let Ok(rel) = path.strip_prefix(base) {
                return Ok((path.to_path_buf(), rel.display().to_string()));
            }
        }
        let rel = path.strip_prefix("/").unwrap_or(path);
        let src = self.libroot.join(rel);
        if !src.exists() {
            bail!("{} is not in {}", path.display(), self.libroot.display());
        }
        Ok((src, rel.display().to_string()))
    }

    /// What the loader lists for `src`: the host's `ldd` for the host's
    /// release, else the root's own loader (`ld.so --list`), searching
    /// the tree's and the root's library directories before anything of
    /// the host's.
    fn list(&self, src: &Path) -> Result<std::process::Output> {
        let dirs = |base: &Path| {
            ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
                .map(|d| base.join(d).display().to_string())
                .join(":")
        };
        let mut c = if self.host() {
            let mut c = Command::new("ldd");
            c.arg(src).env("LD_LIBRARY_PATH", dirs(self.tree));
            c
        } else {
            let mut c = Command::new(self.libroot.join("lib64/ld-linux-x86-64.so.2"));
            c.arg("--library-path")
                .arg(format!("{}:{}", dirs(self.tree), dirs(self.libroot)))
                .arg("--list")
                .arg(src)
                .env_remove("LD_LIBRARY_PATH");
            c
        };
        c.output()
            .with_context(|| format!("could not start {:?}", c.get_program()))
    }
}

/// Copies the ELF `src` to `at` with every library the loader resolves
/// for it (the Xen libraries from the unpacked tree, the rest from the
/// library root, see [`Libs`]).
fn add_program(a: &mut Archive, libs: Libs, at: &str, src: &Path) -> Result<()> {
    a.file(at, src)?;
    let head = fs::read(src)
        .map(|b| b.get(..4) == Some(b"\x7fELF"))
        .unwrap_or(false);
    if !head {
        return Ok(()); // a script: copied as it is
    }
    let is_static = Command::new("readelf")
        .arg("-l")
        .arg(src)
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).contains("INTERP"))
        .unwrap_or(false);
    if is_static {
        return Ok(());
    }
    let out = libs.list(src)?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") {
        return Ok(()); // static
    }
    if !out.status.success() {
        bail!(
            "listing the libraries of {} failed ({}): {}{}",
            src.display(),
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("{}: library {line}", src.display());
        }
        // "libx.so.1 => /path/libx.so.1 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        let Some(path) = path else { continue };
        let (lib, dest) = libs.locate(Path::new(path))?;
        if !a.contains(&dest) {
            a.file(&dest, &lib)?;
        }
    }
    Ok(())
}

/// busybox and a link for each of its applets.
fn add_busybox(a: &mut Archive, tree: &Path) -> Result<()> {
    let bb = tree.join("bin/busybox");
    a.file("bin/busybox", &bb)?;
    let out = Command::new(&bb)
        .arg("--list-full")
        .output()
        .context("running busybox --list-full")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "bin/busybox" && !applet.is_empty() {
            a.symlink(applet, "/bin/busybox");
        }
    }
    Ok(())
}

/// Modules `names` (and what modules.dep says they need) plus a modules.dep
/// for exactly them. Returns the names that are built into the kernel.
fn add_modules(
    a: &mut Archive,
    tree: &Path,
    release: &str,
    names: &[&str],
    extra: &[PathBuf],
) -> Result<()> {
    let moddir = tree.join(format!("lib/modules/{release}"));
    let dep = fs::read_to_string(moddir.join("modules.dep")).context("reading modules.dep")?;
    let builtin = fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let norm = |s: &str| s.replace('_', "-");
    let base = |p: &str| {
        let file = p.rsplit('/').next().unwrap_or(p);
        norm(file.trim_end_matches(".ko").trim_end_matches(".ko.xz"))
    };
    let kernel_line = |name: &str| {
        dep.lines()
            .find(|l| base(l.split(':').next().unwrap_or("")) == norm(name))
    };
    let mut want: BTreeSet<String> = BTreeSet::new();
    for name in names {
        match kernel_line(name) {
            Some(l) => {
                let (m, deps) = l.split_once(':').unwrap_or((l, ""));
                want.insert(m.to_string());
                want.extend(deps.split_whitespace().map(str::to_string));
            }
            None if builtin.lines().any(|l| base(l) == norm(name)) => {}
            None => bail!("kernel {release} has no module {name}"),
        }
    }
    // Project modules, with what they need (`modinfo`): other project
    // modules, or kernel modules that then go into the image too.
    let extra = extra_deps(extra)?;
    let project: BTreeMap<String, String> = extra
        .iter()
        .map(|(ko, _)| (base(&file_name(ko)), file_name(ko)))
        .collect();
    let mut extra_lines = String::new();
    for (ko, deps) in &extra {
        let name = file_name(ko);
        extra_lines.push_str(&format!("extra/{name}:"));
        for d in deps {
            if let Some(file) = project.get(&norm(d)) {
                extra_lines.push_str(&format!(" extra/{file}"));
                continue;
            }
            match kernel_line(d) {
                Some(l) => {
                    let (m, kdeps) = l.split_once(':').unwrap_or((l, ""));
                    want.insert(m.to_string());
                    want.extend(kdeps.split_whitespace().map(str::to_string));
                    extra_lines.push_str(&format!(" {m}{kdeps}"));
                }
                None if builtin.lines().any(|l| base(l) == norm(d)) => {}
                None => bail!("{name} needs module {d}, which kernel {release} lacks"),
            }
        }
        extra_lines.push('\n');
        a.file(&format!("lib/modules/{release}/extra/{name}"), ko)?;
    }
    let mut lines = String::new();
    for l in dep.lines() {
        let m = l.split(':').next().unwrap_or("");
        if want.contains(m) {
            lines.push_str(l);
            lines.push('\n');
            a.file(&format!("lib/modules/{release}/{m}"), &moddir.join(m))?;
        }
    }
    lines.push_str(&extra_lines);
    a.bytes(&format!("lib/modules/{release}/modules.dep"), 0o644, lines);
    a.bytes(
        &format!("lib/modules/{release}/modules.builtin"),
        0o644,
        builtin,
    );
    Ok(())
}

/// Project Linux guest modules built for the rig's kernel, if any
/// (`*.ko` under [`Setup::modules_dir`]: the repository's guest-drivers/
/// for the host's release, the build root's copy for another).
fn guest_modules(s: &Setup) -> Vec<PathBuf> {
    crate::modules::find_ko(&s.modules_dir)
}

/// Each project module with the modules it needs (what `modinfo -F
/// depends` names, transitively through project modules), in modules.dep
/// order: a module before the ones it needs, so `modprobe xensnet` loads
/// xenshare first. A name that is not a project module is a kernel module
/// (add_modules resolves it through the kernel's modules.dep).
fn extra_deps(extra: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<String>)>> {
    let norm = |s: &str| s.trim_end_matches(".ko").replace('_', "-");
    let mut direct: BTreeMap<String, (PathBuf, Vec<String>)> = BTreeMap::new();
    for ko in extra {
        let out = Command::new("modinfo")
            .args(["-F", "depends"])
            .arg(ko)
            .output()
            .context("could not start modinfo (kmod)")?;
        if !out.status.success() {
            bail!(
                "modinfo {}: {}",
                ko.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let deps = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(',')
            .filter(|d| !d.is_empty())
            .map(norm)
            .collect();
        direct.insert(norm(&file_name(ko)), (ko.clone(), deps));
    }
    let mut result = Vec::new();
    for (name, (ko, _)) in &direct {
        // Each name enters the stack once, so this ends even on a cycle.
        let mut order: Vec<String> = Vec::new();
        let mut stack = vec![name.clone()];
        while let Some(m) = stack.pop() {
            let Some((_, deps)) = direct.get(&m) else {
                continue;
            };
            for d in deps {
                if !order.contains(d) && d != name {
                    order.push(d.clone());
                    stack.push(d.clone());
                }
            }
        }
        result.push((ko.clone(), order));
    }
    Ok(result)
}

/// What every image has: busybox, a console node, the disk tools (from
/// the library root, with its libraries).
fn base(a: &mut Archive, libs: Libs) -> Result<()> {
    add_busybox(a, libs.tree)?;
    a.char_dev("dev/console", 0o600, 5, 1);
    a.char_dev("dev/null", 0o666, 1, 3);
    for dir in ["proc", "sys", "tmp", "run", "root", "mnt", "var/log"] {
        a.dir(dir);
    }
    a.bytes("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
    a.bytes("etc/group", 0o644, "root:x:0:\n");
    a.bytes("etc/hosts", 0o644, "127.0.0.1 localhost\n");
    for (prog, links) in HOST_TOOLS {
        let at = prog.trim_start_matches('/');
        add_program(a, libs, at, &libs.libroot.join(at))?;
        for l in *links {
            a.symlink(&format!("sbin/{l}"), prog);
        }
    }
    let conf = libs.libroot.join("etc/mke2fs.conf");
    if conf.is_file() {
        a.file("etc/mke2fs.conf", &conf)?;
    }
    Ok(())
}

/// Files of `dir` whose name ends with `ext`, sorted; none if it is absent.
fn files_in(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    Ok(v)
}

fn rig_file(name: &str) -> PathBuf {
    root().join("xen-rig").join(name)
}

fn domu_image(s: &Setup, bins: &[(String, PathBuf)]) -> Result<Vec<u8>> {
    let mut a = Archive::default();
    let libs = Libs::of(s);
    base(&mut a, libs)?;
    // busybox init reaps, respawns the agent and powers off on
    // `xl shutdown` (the kernel runs /sbin/poweroff, which signals init).
    a.symlink("init", "/bin/busybox");
    a.file("etc/inittab", &rig_file("domu/inittab"))?;
    a.file("etc/rig/rc", &rig_file("domu/rc.sh"))?;
    a.file("etc/rig/agent", &rig_file("domu/agent.sh"))?;
    let mut modules: Vec<&str> = DOMU_MODULES.to_vec();
    modules.extend_from_slice(DOMU_OPTIONAL_MODULES);
    add_modules(
        &mut a,
        &s.tree,
        &s.kernel_release,
        &modules,
        &guest_modules(s),
    )?;
    a.bytes("etc/rig/modules", 0o644, DOMU_MODULES.join("\n") + "\n");
    // udhcpc's hook: applies a lease with `ip` and logs it.
    a.file("etc/rig/udhcpc", &rig_file("domu/udhcpc.sh"))?;
    add_workspace_binaries(&mut a, libs, bins, DOMU_BINARIES)?;
    add_workspace_binaries(&mut a, libs, bins, DOMU_EXAMPLES)?;
    a.encode()
}

/// Builds [`DOM0_BINARIES`] (debug) and [`DOMU_BINARIES`] (release);
/// returns (binary, path) of each.
fn build_workspace_binaries() -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for (bins, release, extra) in [
        (DOM0_BINARIES, false, Some(DOM0_EXTRA_FEATURES)),
        (DOMU_BINARIES, true, None),
    ] {
        if bins.is_empty() {
            continue;
        }
        let mut c = cargo();
        c.arg("build");
        if release {
            c.arg("--release");
        }
        for (pkg, bin) in bins {
            c.args(["-p", pkg, "--bin", bin]);
        }
        let features: Vec<String> = rig_features(bins)
            .split(',')
            .chain(extra)
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        if !features.is_empty() {
            c.args(["--features", &features.join(",")]);
        }
        let what = if release { "domU" } else { "dom0" };
        run_step(&format!("build the {what} tools"), &mut c)?;
        let dir = target_dir().join(if release { "release" } else { "debug" });
        out.extend(bins.iter().map(|(_, bin)| (bin.to_string(), dir.join(bin))));
    }
    for (pkg, example) in DOMU_EXAMPLES {
        let mut c = cargo();
        c.args(["build", "--release", "-p", pkg, "--example", example]);
        if let Some((_, feature)) = DOMU_TEST_EXAMPLES.iter().find(|(e, _)| e == example) {
            c.args(["--features", feature]);
        }
        run_step(&format!("build the domU example {example}"), &mut c)?;
        let path = target_dir().join("release/examples").join(example);
        out.push((example.to_string(), path));
    }
    Ok(out)
}

/// The host features (`HOST_FEATURES`, so the build is the test build's)
/// that cargo accepts for `pkgs`: those of a selected package. (Naming an
/// unselected package's feature is an error.)
fn rig_features(pkgs: &[(&str, &str)]) -> String {
    let selected = |f: &str| {
        let owner = f.split_once('/').map_or("", |(p, _)| p);
        pkgs.iter().any(|(p, _)| *p == owner)
    };
    HOST_FEATURES
        .iter()
        .filter(|a| !a.starts_with("--"))
        .flat_map(|a| a.split(','))
        .filter(|f| selected(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds the binaries `wanted` names (from `built`) to `/usr/bin`, without
/// debug info, with their libraries.
fn add_workspace_binaries(
    a: &mut Archive,
    libs: Libs,
    built: &[(String, PathBuf)],
    wanted: &[(&str, &str)],
) -> Result<()> {
    for (_, bin) in wanted {
        let (_, path) = built
            .iter()
            .find(|(b, _)| b == bin)
            .with_context(|| format!("{bin} was not built"))?;
        let small = stripped(path)?;
        add_program(a, libs, &format!("usr/bin/{bin}"), &small)?;
    }
    Ok(())
}

fn dom0_image(s: &Setup, domu: &[u8], bins: &[(String, PathBuf)]) -> Result<Vec<u8>> {
    let tree = &s.tree;
    let libs = Libs::of(s);
    let mut a = Archive::default();
    base(&mut a, libs)?;
    a.file("init", &rig_file("dom0-init.sh"))?;
    a.file("rig/lib.sh", &rig_file("lib.sh"))?;
    for f in files_in(&root().join("xen-rig/scenarios"), ".sh")? {
        let name = file_name(&f);
        a.file(&format!("rig/scenarios/{name}"), &f)?;
    }
    for f in files_in(&root().join("xen-rig/domu"), ".cfg")? {
        let name = file_name(&f);
        a.file(&format!("rig/domu/{name}"), &f)?;
    }
    // Xen's tools: every program of the release's Xen tree, reachable from
    // /usr/sbin.
    let xlib = format!("usr/lib/xen-{}", s.release.xen);
    let xbin = tree.join(&xlib).join("bin");
    for f in files_in(&xbin, "")? {
        let name = file_name(&f);
        if SKIPPED_XEN_PROGRAMS.contains(&name.as_str()) {
            continue;
        }
        add_program(&mut a, libs, &format!("{xlib}/bin/{name}"), &f)?;
        a.symlink(&format!("usr/sbin/{name}"), &format!("/{xlib}/bin/{name}"));
    }
    for f in files_in(&tree.join("usr/bin"), "")? {
        let name = file_name(&f);
        if name.starts_with("xenstore") {
            add_program(&mut a, libs, &format!("usr/bin/{name}"), &f)?;
        }
    }
    a.tree("etc/xen", &tree.join("etc/xen"))?;
    // hvmloader for HVM guests; not xen-shim (PV-in-PVH), 6 MiB of boot time.
    let hvmloader = format!("{xlib}/boot/hvmloader");
    a.file(&hvmloader, &tree.join(&hvmloader))?;
    let mut modules: Vec<&str> = DOM0_MODULES.to_vec();
    modules.extend_from_slice(DOM0_OPTIONAL_MODULES);
    add_modules(&mut a, tree, &s.kernel_release, &modules, &guest_modules(s))?;
    a.bytes("etc/rig/modules", 0o644, DOM0_MODULES.join("\n") + "\n");
    // What dom0 hands to Linux domUs.
    a.file("boot/vmlinuz", &s.vmlinuz)?;
    a.bytes("boot/domu.cpio", 0o644, domu.to_vec());
    // Other parts of the project, when they have been built.
    for f in files_in(&target_dir().join("images"), "")? {
        let name = file_name(&f);
        a.file(&format!("images/{name}"), &f)?;
    }
    a.dir("images");
    let xl = root().join("xl-configs");
    if xl.is_dir() {
        a.tree("xl-configs", &xl)?;
    }
    add_dom0_package(&mut a, libs, s.release)?;
    add_workspace_binaries(&mut a, libs, bins, DOM0_BINARIES)?;
    // The domUs' share-member too: dom0 can be a member like any domain
    // (scenario vdevice; `tun` above is for its TAP devices).
    add_workspace_binaries(&mut a, libs, bins, DOMU_BINARIES)?;
    a.encode()
}

/// The files of the dom0 package (`cargo xtask dist`) as `dpkg -i`
/// installed them into a clean root of the release (the install test
/// keeps them): `/usr/sbin/vdevice`, the backend images under
/// /usr/lib/xen-share, their xl configs under /etc/xen and the daemon's
/// unit, so the walkthrough and every scenario run what ships.
fn add_dom0_package(a: &mut Archive, libs: Libs, rel: &crate::xen::setup::Release) -> Result<()> {
    let dir = crate::install::installed_tree(rel)?;
    let unit = format!("{}/vdevice.service", crate::dist::unit_dir(rel));
    for f in ["etc/xen/netback-uk.cfg", "etc/xen/blkback-uk.cfg", &unit] {
        a.file(f, &dir.join(f))?;
    }
    a.tree("usr/lib/xen-share", &dir.join("usr/lib/xen-share"))?;
    add_program(a, libs, "usr/sbin/vdevice", &dir.join("usr/sbin/vdevice"))
}

/// Builds both images (after `setup`), writing them under target/xen-rig/.
pub fn build(s: &Setup) -> Result<Images> {
    let dir = rig_dir().join(format!("debian-{}", s.release.number));
    fs::create_dir_all(&dir)?;
    let bins = build_workspace_binaries()?;
    let domu_bytes = domu_image(s, &bins).context("building the domU image")?;
    let domu = dir.join("domu.cpio");
    write_atomically(&domu, &domu_bytes)?;
    let dom0_bytes = dom0_image(s, &domu_bytes, &bins).context("building the dom0 image")?;
    let dom0 = dir.join("dom0.cpio");
    write_atomically(&dom0, &dom0_bytes)?;
    eprintln!(
        "xen build: dom0 image {:.1} MiB, domU image {:.1} MiB",
        dom0_bytes.len() as f64 / 1048576.0,
        domu_bytes.len() as f64 / 1048576.0
    );
    Ok(Images { dom0 })
}

/// Replaces `path` whole: a QEMU started by a concurrent run keeps reading
/// the old image instead of a half-written one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rig_features_name_only_selected_packages() {
        let f = rig_features(&[
            ("vdevice", "vdevice"),
            ("pvh-selftest", "share-selftest-dom0"),
        ]);
        let fs: Vec<&str> = f.split(',').collect();
        assert!(fs.contains(&"pvh-selftest/dom0"), "{f}");
        assert!(fs.iter().all(|x| !x.starts_with("netback-uk/")), "{f}");
        assert!(fs.iter().all(|x| !x.is_empty()), "{f}");
    }
}
