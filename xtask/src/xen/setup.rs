//! `cargo xtask xen setup`: fetch and unpack what the rig boots.
//!
//! Everything is downloaded with `apt-get download` into
//! `target/xen-rig/debs/` and unpacked with `dpkg-deb -x` into trees under
//! `target/xen-rig/`: Xen is never installed on the host. The only host
//! installs are the kernel headers (guest modules are built against them,
//! and their Makefile refers to the `-common` tree by absolute path).
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{ensure_apt, run_step, target_dir};

/// Xen 4.17 hypervisor, tools and the libraries `xl`, `xenstored` and
/// `xenconsoled` link against (bookworm folds libxenctrl, libxenguest and
/// libxenlight into libxenmisc4.17). Host libraries `ldd` finds outside this
/// set (libc, zlib, ...) are copied from the host, which is bookworm too.
const XEN_PACKAGES: &[&str] = &[
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxenmisc4.17",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxendevicemodel1",
    "libxengnttab1",
    "libxenhypfs1",
    "libxenstore4",
    "libxentoollog1",
    "libxentoolcore1",
    "libyajl2",
    // Userspace of both initramfs images (static: no libraries to chase).
    "busybox-static",
];

/// The meta package whose dependency names the current kernel ABI.
const KERNEL_META: &str = "linux-image-amd64";

/// What the rig needs, all on local disk once `setup` returned.
pub struct Setup {
    /// Root of the unpacked Xen, kernel and busybox packages.
    pub tree: PathBuf,
    /// The uncompressed hypervisor ELF (QEMU's multiboot loader needs it so).
    pub xen_elf: PathBuf,
    /// The Debian kernel, used for dom0 and every Linux domU.
    pub vmlinuz: PathBuf,
    /// `uname -r` of that kernel, e.g. `6.1.0-48-amd64`.
    pub kernel_release: String,
    pub qemu: Qemu,
}

/// How to start QEMU 7.2.
pub struct Qemu {
    pub program: PathBuf,
    /// Firmware directories (`-L`); empty for the host's own QEMU.
    pub data_dirs: Vec<PathBuf>,
    /// Library path of an unpacked QEMU whose libraries the host lacks.
    pub library_path: Option<String>,
}

impl Qemu {
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        for d in &self.data_dirs {
            c.arg("-L").arg(d);
        }
        if let Some(lp) = &self.library_path {
            c.env("LD_LIBRARY_PATH", lp);
        }
        c
    }
}

/// The rig's cache directory.
pub fn rig_dir() -> PathBuf {
    target_dir().join("xen-rig")
}

/// One package at the version apt would fetch now.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pkg {
    name: String,
    version: String,
    arch: String,
}

impl Pkg {
    /// The file name `apt-get download` gives it (an epoch's ':' is escaped).
    fn deb_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apt_update() -> Result<()> {
    let mut c = Command::new("apt-get");
    c.args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_step("apt-get update", &mut c)
}

/// Whether apt has any package list at all (a fresh container has none).
fn apt_lists_present() -> bool {
    fs::read_dir("/var/lib/apt/lists")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
        .unwrap_or(false)
}

/// Candidate versions of `names`, in one `apt-cache` call.
fn resolve(names: &[String]) -> Result<Vec<Pkg>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let text = output(
        Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(names),
    )
    .context("resolving package versions (is the package list current? try `apt-get update`)")?;
    let mut found = BTreeMap::new();
    for para in text.split("\n\n") {
        let field = |key: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        };
        if let (Some(name), Some(version), Some(arch)) =
            (field("Package:"), field("Version:"), field("Architecture:"))
        {
            found.entry(name.clone()).or_insert(Pkg {
                name,
                version,
                arch,
            });
        }
    }
    names
        .iter()
        .map(|n| {
            found
                .get(n)
                .cloned()
                .with_context(|| format!("package {n} is not in the apt lists"))
        })
        .collect()
}

/// The kernel package named by the meta package's dependency, e.g.
/// `linux-image-6.1.0-48-amd64`, and its release `6.1.0-48-amd64`.
fn kernel_package() -> Result<(String, String)> {
    let text = output(Command::new("apt-cache").args(["show", "--no-all-versions", KERNEL_META]))?;
    let dep = text
        .lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .with_context(|| format!("{KERNEL_META} has no Depends field"))?;
    let pkg = dep
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find(|d| d.starts_with("linux-image-"))
        .with_context(|| format!("{KERNEL_META} depends on no linux-image-*: {dep}"))?
        .to_string();
    let release = pkg["linux-image-".len()..].to_string();
    Ok((pkg, release))
}

/// `uname -r` of the rig kernel (the one `linux-image-amd64` names now),
/// without fetching anything else: what guest modules must build against.
pub fn kernel_release() -> Result<String> {
    if !apt_lists_present() {
        apt_update()?;
    }
    let (_, release) = match kernel_package() {
        Ok(found) => found,
        Err(e) => {
            eprintln!("xen setup: {e:#}; refreshing the package lists and retrying");
            apt_update()?;
            kernel_package()?
        }
    };
    Ok(release)
}

/// Installs the headers of kernel `release` (their Makefile includes the
/// -common tree by absolute path, so they are installed, not unpacked) and
/// returns the directory to build modules against.
pub fn kernel_headers(release: &str) -> Result<PathBuf> {
    ensure_apt(&[&format!("linux-headers-{release}")])?;
    let build = PathBuf::from(format!("/lib/modules/{release}/build"));
    if !build.join("Makefile").is_file() {
        bail!(
            "linux-headers-{release} is installed but {} has no Makefile",
            build.display()
        );
    }
    Ok(build)
}

/// Whether the host's QEMU is 7.2 (newer ones break PVH under nested Xen).
fn host_qemu_is_7_2() -> bool {
    if std::env::var_os("XEN_RIG_UNPACKED_QEMU").is_some() {
        return false;
    }
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("version 7.2."))
        .unwrap_or(false)
}

/// Firmware packages of QEMU (BIOS, option ROMs).
const QEMU_FIRMWARE: &[&str] = &["seabios", "ipxe-qemu"];

/// Packages of QEMU 7.2's dependency closure that the host lacks: the
/// unpacked QEMU uses the host's copy of everything else.
fn qemu_packages() -> Result<Vec<String>> {
    let text = output(Command::new("apt-cache").args([
        "depends",
        "--recurse",
        "--no-recommends",
        "--no-suggests",
        "--no-conflicts",
        "--no-breaks",
        "--no-replaces",
        "--no-enhances",
        "--no-pre-depends",
        "qemu-system-x86",
    ]))?;
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.contains(':'))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    // qemu itself and its firmware always come from the cache: the host's
    // may be another version, and `-L` replaces QEMU's firmware path.
    Ok(names
        .into_iter()
        .filter(|n| {
            n.starts_with("qemu-") || QEMU_FIRMWARE.contains(&n.as_str()) || !apt_installed(n)
        })
        .collect())
}

fn apt_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Downloads `pkg` into `debs` unless it is there.
fn download(pkg: &Pkg, debs: &Path) -> Result<bool> {
    if debs.join(pkg.deb_name()).is_file() {
        return Ok(false);
    }
    let spec = format!("{}={}", pkg.name, pkg.version);
    let out = Command::new("apt-get")
        .args(["download", "-q"])
        .arg(&spec)
        .current_dir(debs)
        .output()
        .context("could not start apt-get download")?;
    if !out.status.success() {
        bail!(
            "downloading package {spec} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !debs.join(pkg.deb_name()).is_file() {
        bail!(
            "apt-get download {spec} succeeded but {} is not in {}",
            pkg.deb_name(),
            debs.display()
        );
    }
    Ok(true)
}

/// Unpacks `pkgs` into `tree` unless the tree already holds exactly them.
fn unpack(pkgs: &[Pkg], debs: &Path, tree: &Path) -> Result<bool> {
    let stamp_text: String = pkgs.iter().map(|p| p.deb_name() + "\n").collect();
    let stamp = tree.join(".rig-unpacked");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_text.as_str()) {
        return Ok(false);
    }
    if tree.exists() {
        fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    fs::create_dir_all(tree)?;
    for p in pkgs {
        let deb = debs.join(p.deb_name());
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(tree)
            .output()
            .context("could not start dpkg-deb")?;
        if !out.status.success() {
            bail!(
                "unpacking {} failed: {}",
                deb.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    fs::write(&stamp, stamp_text)?;
    Ok(true)
}

/// What setup fetches, resolved against the current package lists.
struct Plan {
    kernel_pkg: String,
    release: String,
    pkgs: Vec<Pkg>,
    /// Empty when the host's QEMU is 7.2.
    qemu_pkgs: Vec<Pkg>,
    unpacked_qemu: bool,
}

fn make_plan() -> Result<Plan> {
    let (kernel_pkg, release) = kernel_package()?;
    let mut names: Vec<String> = XEN_PACKAGES.iter().map(|s| s.to_string()).collect();
    names.push(kernel_pkg.clone());
    let unpacked_qemu = !host_qemu_is_7_2();
    let qemu_names = if unpacked_qemu {
        qemu_packages()?
    } else {
        Vec::new()
    };
    let mut pkgs = resolve(&names)?;
    let mut qemu_pkgs = resolve(&qemu_names)?;
    // The headers are installed, not fetched, but must be in the lists with
    // the same ABI; a list that lacks them is stale.
    resolve(&[format!("linux-headers-{release}")])?;
    pkgs.sort();
    qemu_pkgs.sort();
    Ok(Plan {
        kernel_pkg,
        release,
        pkgs,
        qemu_pkgs,
        unpacked_qemu,
    })
}

/// Downloads what is missing; returns how many packages it fetched.
fn fetch(plan: &Plan, debs: &Path) -> Result<usize> {
    let mut fetched = 0;
    for p in plan.pkgs.iter().chain(plan.qemu_pkgs.iter()) {
        if download(p, debs)? {
            fetched += 1;
        }
    }
    Ok(fetched)
}

/// Removes cached packages the plan no longer names (older versions).
fn prune(plan: &Plan, debs: &Path) -> Result<()> {
    let keep: Vec<String> = plan
        .pkgs
        .iter()
        .chain(plan.qemu_pkgs.iter())
        .map(Pkg::deb_name)
        .collect();
    for e in fs::read_dir(debs)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") && !keep.contains(&name) {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Makes sure everything is downloaded and unpacked; a no-op when it is.
pub fn setup() -> Result<Setup> {
    let dir = rig_dir();
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    if !apt_lists_present() {
        apt_update()?;
    }
    let first = make_plan().and_then(|plan| {
        let fetched = fetch(&plan, &debs)?;
        Ok((plan, fetched))
    });
    let (plan, fetched) = match first {
        Ok(done) => done,
        // A stale list names versions the mirror has dropped: refresh once
        // and resolve again; a failure after that is final.
        Err(e) => {
            eprintln!("xen setup: {e:#}; refreshing the package lists and retrying");
            apt_update()?;
            let plan = make_plan()?;
            let fetched = fetch(&plan, &debs)?;
            (plan, fetched)
        }
    };
    let release = plan.release.clone();
    prune(&plan, &debs)?;

    let tree = dir.join("tree");
    let mut changed = unpack(&plan.pkgs, &debs, &tree)?;
    let qemu = if plan.unpacked_qemu {
        let qtree = dir.join("qemu");
        changed |= unpack(&plan.qemu_pkgs, &debs, &qtree)?;
        let lib = |p: &str| qtree.join(p).display().to_string();
        Qemu {
            program: qtree.join("usr/bin/qemu-system-x86_64"),
            data_dirs: vec![
                qtree.join("usr/share/qemu"),
                qtree.join("usr/share/seabios"),
                qtree.join("usr/lib/ipxe/qemu"),
            ],
            library_path: Some(format!(
                "{}:{}",
                lib("usr/lib/x86_64-linux-gnu"),
                lib("lib/x86_64-linux-gnu")
            )),
        }
    } else {
        Qemu {
            program: "qemu-system-x86_64".into(),
            data_dirs: Vec::new(),
            library_path: None,
        }
    };

    let xen_gz = tree.join("boot/xen-4.17-amd64.gz");
    let xen_elf = dir.join("xen-4.17-amd64.elf");
    if changed || !xen_elf.is_file() {
        let tmp = xen_elf.with_extension("tmp");
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(&xen_gz)
            .output()
            .context("could not start gzip")?;
        if !out.status.success() {
            bail!("unpacking {} failed", xen_gz.display());
        }
        fs::write(&tmp, out.stdout)?;
        fs::rename(&tmp, &xen_elf)?;
        changed = true;
    }
    // The package leaves modules.dep to its postinst; the images need it
    // for modprobe.
    let moddep = tree.join(format!("lib/modules/{release}/modules.dep"));
    if changed || !moddep.is_file() {
        ensure_apt(&["kmod"])?;
        let mut depmod = Command::new("depmod");
        depmod.arg("-b").arg(&tree).arg(&release);
        run_step("depmod", &mut depmod)?;
    }
    let vmlinuz = tree.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} holds no {}", plan.kernel_pkg, vmlinuz.display());
    }
    // Guest modules build against these (see kernel_headers).
    // e2fsprogs goes into both images from the host.
    kernel_headers(&release)?;
    ensure_apt(&["e2fsprogs"])?;

    let count = plan.pkgs.len() + plan.qemu_pkgs.len();
    let qemu_kind = if plan.unpacked_qemu {
        "unpacked QEMU 7.2"
    } else {
        "host QEMU 7.2"
    };
    if changed || fetched > 0 {
        eprintln!(
            "xen setup: {fetched} of {count} package(s) downloaded, unpacked under {} (kernel {release}, {qemu_kind})",
            dir.display()
        );
    } else {
        eprintln!("xen setup: up to date, nothing to do ({count} packages cached, kernel {release}, {qemu_kind})");
    }
    Ok(Setup {
        tree,
        xen_elf,
        vmlinuz,
        kernel_release: release,
        qemu,
    })
}
