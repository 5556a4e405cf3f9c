//! `cargo xtask xen setup`: fetch and unpack what the rig boots.
//!
//! Everything is downloaded with `apt-get download` into
//! `target/xen-rig/debian-N/debs/` and unpacked with `dpkg-deb -x` into
//! trees beside it: Xen is never installed on the host. The only host
//! installs are the kernel headers (guest modules are built against them,
//! and their Makefile refers to the `-common` tree by absolute path).
//!
//! The host's release comes from the host's apt. Another release (Debian
//! 13 on a bookworm host) comes from apt in its debootstrap build root
//! ([`build_root`]), which downloads its packages and holds its headers
//! and the libraries its images carry; its rig runs the host release's
//! QEMU 7.2.
//!
//! What a run resolved (the kernel ABI, every package's version) is recorded
//! in `target/xen-rig/debian-N/resolved.json`. Later runs take the record
//! and never ask the archive while its packages are cached; they refresh the
//! package lists and resolve again only when asked (`xen setup --refresh`)
//! or when a recorded package can no longer be fetched. Resolving always
//! starts with `apt-get update`: a machine's lists may be months old and
//! name packages the archive dropped long ago.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::util::{ensure_apt, root, run_step, target_dir};

/// A Debian release the rig can be made from: its Xen, its kernel series
/// and the packages of both.
#[derive(Debug)]
pub struct Release {
    /// 12, 13.
    pub number: u32,
    pub codename: &'static str,
    /// The Xen version the release ships (`4.17`): its package names and
    /// paths (`/usr/lib/xen-4.17`) carry it.
    pub xen: &'static str,
    /// The kernel series (`6.1`): every kernel ABI of the release is in it.
    pub kernel: &'static str,
    /// Xen's hypervisor, tools and the libraries `xl`, `xenstored` and
    /// `xenconsoled` link against, and busybox for both initramfs images.
    xen_packages: &'static [&'static str],
}

/// Debian 12 "bookworm": Xen 4.17, Linux 6.1 (bookworm folds libxenctrl,
/// libxenguest and libxenlight into libxenmisc4.17). Host libraries `ldd`
/// finds outside this set (libc, zlib, ...) are copied from the host, which
/// is bookworm too.
pub static DEBIAN_12: Release = Release {
    number: 12,
    codename: "bookworm",
    xen: "4.17",
    kernel: "6.1",
    xen_packages: &[
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
    ],
};

/// Debian 13 "trixie": Xen 4.20, Linux 6.12 (kernel ABIs named like
/// `6.12.43+deb13`).
pub static DEBIAN_13: Release = Release {
    number: 13,
    codename: "trixie",
    xen: "4.20",
    kernel: "6.12",
    xen_packages: &[
        "xen-hypervisor-4.20-amd64",
        "xen-utils-4.20",
        "xen-utils-common",
        "xenstore-utils",
        "libxenmisc4.20",
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
        "busybox-static",
    ],
};

pub static RELEASES: [&Release; 2] = [&DEBIAN_12, &DEBIAN_13];

/// The release the rig is made from unless one is named: Debian's stable
/// release, what a Xen user installing today gets.
pub static DEFAULT_RELEASE: &Release = &DEBIAN_13;

/// The release numbered `number`.
pub fn release(number: u32) -> Result<&'static Release> {
    RELEASES
        .iter()
        .copied()
        .find(|r| r.number == number)
        .with_context(|| {
            let known: Vec<String> = RELEASES.iter().map(|r| r.number.to_string()).collect();
            format!(
                "Debian {number} is not a release the rig knows (known: {})",
                known.join(", ")
            )
        })
}

/// The releases numbered `numbers`, or every release if none is named.
pub fn releases(numbers: &[u32]) -> Result<Vec<&'static Release>> {
    if numbers.is_empty() {
        return Ok(RELEASES.to_vec());
    }
    numbers.iter().map(|&n| release(n)).collect()
}

impl Release {
    /// `Debian 12 (bookworm)`.
    pub fn describe(&self) -> String {
        format!("Debian {} ({})", self.number, self.codename)
    }

    /// The kernel ABI in a kernel package's name (`linux-image-ABI-amd64`),
    /// if it is one of this release's standard amd64 kernels: `6.1.0-57` for
    /// Debian 12, `6.12.43+deb13` for Debian 13. Flavours (`-cloud`, `-rt`),
    /// `-dbg` and `-unsigned` packages and other series are not.
    fn abi_of<'a>(&self, package: &'a str, prefix: &str) -> Option<&'a str> {
        let abi = package.strip_prefix(prefix)?.strip_suffix("-amd64")?;
        let rest = abi.strip_prefix(self.kernel)?.strip_prefix('.')?;
        let (dotted, tail) = rest.split_at(rest.find(['-', '+'])?);
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !dotted.split('.').all(digits) {
            return None;
        }
        let ok = match tail.strip_prefix('-') {
            Some(n) => digits(n),
            None => tail
                .strip_prefix("+deb")
                .is_some_and(|n| n == self.number.to_string()),
        };
        ok.then_some(abi)
    }

    /// The hypervisor's file in the unpacked tree.
    fn xen_gz(&self) -> String {
        format!("boot/xen-{}-amd64.gz", self.xen)
    }

    fn hypervisor_package(&self) -> String {
        format!("xen-hypervisor-{}-amd64", self.xen)
    }
}

/// The numbers of a kernel ABI, for ordering: `6.1.0-57` -> [6, 1, 0, 57],
/// `6.12.43+deb13` -> [6, 12, 43, 13].
fn abi_key(abi: &str) -> Vec<u64> {
    abi.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The kernel ABIs of `rel` that have both a `linux-image-ABI-amd64` and a
/// `linux-headers-ABI-amd64` package, newest first. `images` and
/// `headers` are what `apt-cache pkgnames linux-image-` and `apt-cache
/// pkgnames linux-headers-` answered. An error names what is missing.
pub fn kernel_abis(rel: &Release, images: &str, headers: &str) -> Result<Vec<String>> {
    let names = |text: &str, prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter_map(|l| rel.abi_of(l.trim(), prefix))
            .map(str::to_string)
            .collect();
        v.sort_by_key(|a| std::cmp::Reverse(abi_key(a)));
        v.dedup();
        v
    };
    let image_abis = names(images, "linux-image-");
    let header_abis = names(headers, "linux-headers-");
    if image_abis.is_empty() {
        bail!(
            "the package lists hold no linux-image-{}.*-amd64 ({} kernel)",
            rel.kernel,
            rel.describe()
        );
    }
    let both: Vec<String> = image_abis
        .iter()
        .filter(|a| header_abis.contains(a))
        .cloned()
        .collect();
    if both.is_empty() {
        bail!(
            "no kernel of {} has both its image and its headers in the package lists \
             (images: {}; headers: {})",
            rel.describe(),
            image_abis.join(" "),
            if header_abis.is_empty() {
                "none".to_string()
            } else {
                header_abis.join(" ")
            }
        );
    }
    Ok(both)
}

/// One package at the version apt would fetch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub arch: String,
}

impl Pkg {
    /// The file name `apt-get download` gives it (an epoch's ':' is escaped).
    pub fn deb_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }

    /// `name=version`, as apt takes it.
    fn spec(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// The packages in `apt-cache show --no-all-versions` output, by name.
fn parse_show(text: &str) -> BTreeMap<String, Pkg> {
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
    found
}

/// What was resolved for a release: the rig is made of exactly these
/// packages until it is resolved again. Saved as `resolved.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The release's number (12, 13).
    pub debian: u32,
    /// `uname -r` of the rig kernel, e.g. `6.1.0-57-amd64`.
    pub kernel_release: String,
    /// The headers the guest modules build against (installed on the host).
    pub headers: Pkg,
    /// Xen, the kernel and busybox, unpacked into the rig's tree.
    pub pkgs: Vec<Pkg>,
    /// QEMU 7.2 and what of its dependencies the host lacks; empty when
    /// the host's QEMU is 7.2.
    pub qemu_pkgs: Vec<Pkg>,
    pub unpacked_qemu: bool,
}

impl Resolved {
    fn kernel_pkg(&self) -> String {
        format!("linux-image-{}", self.kernel_release)
    }

    /// The version of package `name`, if the record has it.
    pub fn version(&self, name: &str) -> Option<&str> {
        self.pkgs
            .iter()
            .chain(std::iter::once(&self.headers))
            .find(|p| p.name == name)
            .map(|p| p.version.as_str())
    }
}

/// What setup asks of apt. [`HostApt`] runs the commands; the tests answer
/// with recorded outputs.
pub trait Archive {
    /// `apt-get update`.
    fn update(&mut self) -> Result<()>;
    /// `apt-cache pkgnames PREFIX`.
    fn pkgnames(&mut self, prefix: &str) -> Result<String>;
    /// `apt-cache show --no-all-versions NAMES`.
    fn show(&mut self, names: &[String]) -> Result<String>;
    /// The names of the QEMU 7.2 packages to unpack (its dependency closure
    /// less what the host has).
    fn qemu_closure(&mut self) -> Result<Vec<String>>;
    /// `apt-get download NAME=VERSION` into `dir` (which then holds the
    /// package's [`Pkg::deb_name`]).
    fn download(&mut self, pkg: &Pkg, dir: &Path) -> Result<()>;
    /// Whether `pkg` is installed on the host at its version.
    fn installed(&mut self, pkg: &Pkg) -> bool;
    /// `apt-get install NAME=VERSION`.
    fn install(&mut self, pkg: &Pkg) -> Result<()>;
}

/// Candidates of `names` in one `show`; an error names what is missing.
fn show_all(a: &mut dyn Archive, names: &[String]) -> Result<Vec<Pkg>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let found = parse_show(&a.show(names)?);
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match found.get(n) {
            Some(p) => out.push(p.clone()),
            None => missing.push(n.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!("not in the package lists: {}", missing.join(" "));
    }
    out.sort();
    Ok(out)
}

/// Resolves every package of the rig from the lists as they are now: the
/// newest kernel ABI with both image and headers, Xen, QEMU.
fn resolve(a: &mut dyn Archive, rel: &Release, unpacked_qemu: bool) -> Result<Resolved> {
    let images = a.pkgnames("linux-image-")?;
    let headers = a.pkgnames("linux-headers-")?;
    let mut why = Vec::new();
    for abi in kernel_abis(rel, &images, &headers)? {
        let kernel_release = format!("{abi}-amd64");
        let kernel = vec![
            format!("linux-image-{kernel_release}"),
            format!("linux-headers-{kernel_release}"),
        ];
        // A name pkgnames lists may still have no candidate (a virtual
        // package, a removed one): then the next ABI.
        let found = match show_all(a, &kernel) {
            Ok(found) => found,
            Err(e) => {
                why.push(format!("{abi}: {e:#}"));
                continue;
            }
        };
        let (headers, image): (Vec<Pkg>, Vec<Pkg>) = found
            .into_iter()
            .partition(|p| p.name.starts_with("linux-headers-"));
        let mut names: Vec<String> = rel.xen_packages.iter().map(|s| s.to_string()).collect();
        names.retain(|n| !image.iter().any(|p| &p.name == n));
        let mut pkgs = show_all(a, &names)?;
        pkgs.extend(image);
        pkgs.sort();
        let qemu_pkgs = if unpacked_qemu {
            let names = a.qemu_closure()?;
            show_all(a, &names)?
        } else {
            Vec::new()
        };
        return Ok(Resolved {
            debian: rel.number,
            kernel_release,
            headers: headers.into_iter().next().context("headers vanished")?,
            pkgs,
            qemu_pkgs,
            unpacked_qemu,
        });
    }
    bail!(
        "no kernel of {} can be fetched: {}",
        rel.describe(),
        why.join("; ")
    )
}

/// Where a release's packages, trees and record live.
pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    pub fn new(rel: &Release) -> Cache {
        Cache {
            dir: rig_dir().join(format!("debian-{}", rel.number)),
        }
    }

    fn debs(&self) -> PathBuf {
        self.dir.join("debs")
    }

    fn record(&self) -> PathBuf {
        self.dir.join("resolved.json")
    }

    /// The record, if there is one that fits `rel` and `unpacked_qemu`.
    fn load(&self, rel: &Release, unpacked_qemu: bool) -> Option<Resolved> {
        let text = fs::read_to_string(self.record()).ok()?;
        match serde_json::from_str::<Resolved>(&text) {
            Ok(r) if r.debian == rel.number && r.unpacked_qemu == unpacked_qemu => Some(r),
            Ok(_) => None,
            Err(e) => {
                eprintln!(
                    "xen setup: ignoring {} ({e}); resolving again",
                    self.record().display()
                );
                None
            }
        }
    }

    fn save(&self, r: &Resolved) -> Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.record().with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_string_pretty(r)? + "\n")?;
        fs::rename(&tmp, self.record())
            .with_context(|| format!("writing {}", self.record().display()))
    }
}

/// How far [`ensure`] goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Only the kernel headers (guest modules).
    Headers,
    /// Every package of the rig, downloaded, and the headers.
    Everything,
    /// Only the unpacked QEMU's packages, downloaded (another release's
    /// rig runs the host release's QEMU 7.2).
    Qemu,
}

/// Makes sure what `need` asks for is on local disk and returns the
/// resolution it follows. A record of an earlier resolution is followed
/// without asking the archive while its packages are cached; without one,
/// with `refresh`, or when a recorded package can no longer be fetched,
/// the lists are refreshed and everything resolved again. Errors name the
/// step that failed.
pub fn ensure(
    a: &mut dyn Archive,
    rel: &Release,
    cache: &Cache,
    unpacked_qemu: bool,
    refresh: bool,
    need: Need,
) -> Result<Resolved> {
    let recorded = if refresh {
        None
    } else {
        cache.load(rel, unpacked_qemu)
    };
    if let Some(r) = recorded {
        match fetch(a, &r, cache, need) {
            Ok(_) => return Ok(r),
            Err(e) => eprintln!(
                "xen setup: a package recorded in {} can no longer be fetched ({e:#}); \
                 refreshing the package lists and resolving again",
                cache.record().display()
            ),
        }
    }
    a.update()
        .context("step 'refresh the package lists' (apt-get update) failed")?;
    let r = resolve(a, rel, unpacked_qemu).with_context(|| {
        format!(
            "step 'resolve the packages of {}' failed after refreshing the package lists",
            rel.describe()
        )
    })?;
    fetch(a, &r, cache, need)?;
    cache.save(&r)?;
    Ok(r)
}

/// Fetches what `need` asks for and is not cached (installs the headers);
/// returns how many packages it fetched.
fn fetch(a: &mut dyn Archive, r: &Resolved, cache: &Cache, need: Need) -> Result<usize> {
    let mut fetched = 0;
    let wanted: Vec<&Pkg> = match need {
        Need::Headers => Vec::new(),
        Need::Everything => r.pkgs.iter().chain(r.qemu_pkgs.iter()).collect(),
        Need::Qemu => r.qemu_pkgs.iter().collect(),
    };
    if !wanted.is_empty() {
        let debs = cache.debs();
        fs::create_dir_all(&debs)?;
        for p in wanted {
            if debs.join(p.deb_name()).is_file() {
                continue;
            }
            a.download(p, &debs)
                .with_context(|| format!("step 'download {}' failed", p.spec()))?;
            if !debs.join(p.deb_name()).is_file() {
                bail!(
                    "step 'download {}': apt-get download succeeded but {} is not in {}",
                    p.spec(),
                    p.deb_name(),
                    debs.display()
                );
            }
            fetched += 1;
        }
    }
    if fetched > 0 {
        eprintln!(
            "xen setup: downloaded {fetched} package(s) into {}",
            cache.debs().display()
        );
    }
    if need != Need::Qemu && !a.installed(&r.headers) {
        a.install(&r.headers)
            .with_context(|| format!("step 'install {}' failed", r.headers.spec()))?;
        fetched += 1;
    }
    Ok(fetched)
}

/// The host's apt.
pub struct HostApt;

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

impl Archive for HostApt {
    fn update(&mut self) -> Result<()> {
        let mut c = Command::new("apt-get");
        c.args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_step("apt-get update", &mut c)
    }

    fn pkgnames(&mut self, prefix: &str) -> Result<String> {
        output(Command::new("apt-cache").args(["pkgnames", prefix]))
    }

    fn show(&mut self, names: &[String]) -> Result<String> {
        output(
            Command::new("apt-cache")
                .args(["show", "--no-all-versions"])
                .args(names),
        )
    }

    fn qemu_closure(&mut self) -> Result<Vec<String>> {
        qemu_packages()
    }

    fn download(&mut self, pkg: &Pkg, dir: &Path) -> Result<()> {
        let out = Command::new("apt-get")
            .args(["download", "-q"])
            .arg(pkg.spec())
            .current_dir(dir)
            .output()
            .context("could not start apt-get download")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    fn installed(&mut self, pkg: &Pkg) -> bool {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status} ${Version}", &pkg.name])
            .output()
            .map(|o| {
                let s = String::from_utf8_lossy(&o.stdout);
                o.status.success()
                    && s.contains("install ok installed")
                    && s.ends_with(&format!(" {}", pkg.version))
            })
            .unwrap_or(false)
    }

    fn install(&mut self, pkg: &Pkg) -> Result<()> {
        let mut c = Command::new("apt-get");
        c.args(["install", "-y", "-qq", "--no-install-recommends"])
            .arg(pkg.spec())
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_step(&format!("apt-get install {}", pkg.spec()), &mut c)
    }
}

/// apt inside a build root of another release (`chroot ROOT apt-get ...`):
/// what it installs stays in the root, the host is untouched. It installs
/// the headers (guest modules build there) and downloads the rig's
/// packages of that release (the host's apt does not list them).
pub struct ChrootApt {
    pub root: PathBuf,
}

impl ChrootApt {
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.root)
            .arg(program)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c
    }
}

/// What the images take from a build root beyond its libc: e2fsprogs
/// (the disk tools of both images; the host's would run on the root's
/// libc) and the library `xentop` needs that a minbase root lacks.
const ROOT_PACKAGES: &[&str] = &["e2fsprogs", "libncurses6"];

impl ChrootApt {
    /// Whether package `name` is installed in the root (any version).
    fn has(&self, name: &str) -> bool {
        self.cmd("dpkg-query")
            .args(["-W", "-f=${Status}", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
            .unwrap_or(false)
    }

    /// `apt-get install NAMES` at the root's candidate versions (tools the
    /// images take from the root, not part of the record).
    fn install_names(&self, names: &[&str]) -> Result<()> {
        let mut c = self.cmd("apt-get");
        c.args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(names);
        run_step(
            &format!(
                "apt-get install {} in {}",
                names.join(" "),
                self.root.display()
            ),
            &mut c,
        )
    }
}

impl Archive for ChrootApt {
    fn update(&mut self) -> Result<()> {
        let mut c = self.cmd("apt-get");
        c.args(["update", "-qq"]);
        run_step(
            &format!("apt-get update in {}", self.root.display()),
            &mut c,
        )
    }

    fn pkgnames(&mut self, prefix: &str) -> Result<String> {
        output(self.cmd("apt-cache").args(["pkgnames", prefix]))
    }

    fn show(&mut self, names: &[String]) -> Result<String> {
        output(
            self.cmd("apt-cache")
                .args(["show", "--no-all-versions"])
                .args(names),
        )
    }

    fn qemu_closure(&mut self) -> Result<Vec<String>> {
        bail!("a build root has no QEMU of its own")
    }

    /// `apt-get download` in the root's `/var/cache/xen-share-download`,
    /// then the `.deb` is moved to `dir`.
    fn download(&mut self, pkg: &Pkg, dir: &Path) -> Result<()> {
        const INSIDE: &str = "/var/cache/xen-share-download";
        let staging = self.root.join(INSIDE.trim_start_matches('/'));
        fs::create_dir_all(&staging)?;
        let out = self
            .cmd("sh")
            .args(["-c", "cd \"$1\" && exec apt-get download -q \"$2\"", "sh"])
            .arg(INSIDE)
            .arg(pkg.spec())
            .output()
            .context("could not start chroot apt-get download")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let from = staging.join(pkg.deb_name());
        let to = dir.join(pkg.deb_name());
        if fs::rename(&from, &to).is_err() {
            // Another file system: copy, then remove the staged file.
            fs::copy(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
            fs::remove_file(&from)?;
        }
        Ok(())
    }

    fn installed(&mut self, pkg: &Pkg) -> bool {
        self.cmd("dpkg-query")
            .args(["-W", "-f=${Status} ${Version}", &pkg.name])
            .output()
            .map(|o| {
                let s = String::from_utf8_lossy(&o.stdout);
                o.status.success()
                    && s.contains("install ok installed")
                    && s.ends_with(&format!(" {}", pkg.version))
            })
            .unwrap_or(false)
    }

    fn install(&mut self, pkg: &Pkg) -> Result<()> {
        let mut c = self.cmd("apt-get");
        c.args(["install", "-y", "-qq", "--no-install-recommends"])
            .arg(pkg.spec());
        run_step(
            &format!("apt-get install {} in {}", pkg.spec(), self.root.display()),
            &mut c,
        )
    }
}

/// The release the host runs (`VERSION_ID` of /etc/os-release).
pub fn host_release() -> Option<&'static Release> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    let id = text.lines().find_map(|l| l.strip_prefix("VERSION_ID="))?;
    let n: u32 = id.trim_matches('"').parse().ok()?;
    RELEASES.iter().copied().find(|r| r.number == n)
}

/// A Debian system of `rel` under `target/xen-rig/debian-N/root`
/// (debootstrap, minbase, with make and gcc), with the headers of the
/// release's newest kernel installed in it: guest modules for a release
/// the host does not run are built there. Made once; the headers follow
/// the release's `resolved.json` as [`ensure`] does. Returns the root and
/// the kernel's `uname -r`.
pub fn build_root(rel: &Release, refresh: bool) -> Result<(PathBuf, String)> {
    let (root, r) = root_of(rel, refresh, Need::Headers)?;
    Ok((root, r.kernel_release))
}

/// The debootstrap root of `rel` in `cache`, made if missing.
fn make_root(rel: &Release, cache: &Cache) -> Result<PathBuf> {
    let root = cache.dir.join("root");
    let stamp = root.join(".xen-share-root");
    if !stamp.is_file() {
        ensure_apt(&["debootstrap"]).context("step 'install debootstrap' failed")?;
        let tmp = cache.dir.join("root.tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&cache.dir)?;
        let mut c = Command::new("debootstrap");
        c.args([
            "--variant=minbase",
            "--include=make,gcc,libc6-dev,perl",
            rel.codename,
        ])
        .arg(&tmp)
        .arg("http://deb.debian.org/debian");
        run_step(&format!("debootstrap {}", rel.codename), &mut c)
            .with_context(|| format!("step 'debootstrap {}' failed", rel.codename))?;
        // Point releases and security updates carry the newest kernels.
        fs::write(
            tmp.join("etc/apt/sources.list"),
            format!(
                "deb http://deb.debian.org/debian {c} main
                 deb http://deb.debian.org/debian {c}-updates main
                 deb http://deb.debian.org/debian-security {c}-security main
",
                c = rel.codename
            ),
        )?;
        fs::write(
            tmp.join(".xen-share-root"),
            format!(
                "{}
",
                rel.describe()
            ),
        )?;
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::rename(&tmp, &root)?;
    }
    Ok(root)
}

/// Where `cargo xtask modules` builds the guest modules in a build root.
pub const MODULES_IN_ROOT: &str = "build/guest-drivers";

/// The build root of `rel` (made by [`build_root`] if missing) and what
/// `need` asks of it, through its own apt: the record is the release's
/// `resolved.json`, as for the host's release (never with an unpacked
/// QEMU: a build root has none).
fn root_of(rel: &Release, refresh: bool, need: Need) -> Result<(PathBuf, Resolved)> {
    let cache = Cache::new(rel);
    let root = make_root(rel, &cache)?;
    let r = ensure(
        &mut ChrootApt { root: root.clone() },
        rel,
        &cache,
        false,
        refresh,
        need,
    )?;
    Ok((root, r))
}

/// Whether the host runs `rel` (its apt lists `rel`'s packages).
pub fn is_host_release(rel: &Release) -> bool {
    host_release().is_some_and(|h| h.number == rel.number)
}

/// QEMU 7.2 unpacked from `r`'s QEMU packages in `cache`; whether it was
/// unpacked now.
fn unpacked_qemu(r: &Resolved, cache: &Cache) -> Result<(Qemu, bool)> {
    let qtree = cache.dir.join("qemu");
    let changed =
        unpack(&r.qemu_pkgs, &cache.debs(), &qtree).context("step 'unpack QEMU' failed")?;
    let lib = |p: &str| qtree.join(p).display().to_string();
    let q = Qemu {
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
    };
    Ok((q, changed))
}

/// What the rig needs, all on local disk once `setup` returned.
pub struct Setup {
    pub release: &'static Release,
    /// What it was made of.
    pub resolved: Resolved,
    /// Root of the unpacked Xen, kernel and busybox packages.
    pub tree: PathBuf,
    /// Where the images take every library (and e2fsprogs) the unpacked
    /// packages do not hold: `/` (the host) for the host's release, the
    /// release's build root for another (Xen 4.20's tools need trixie's
    /// glibc; the workspace binaries, built on the host, run on it too).
    pub libroot: PathBuf,
    /// Where the guest modules for this kernel are built (`*.ko` under
    /// it): the repository's `guest-drivers/` for the host's release, the
    /// copy in the build root for another (`cargo xtask modules`).
    pub modules_dir: PathBuf,
    /// The uncompressed hypervisor ELF (QEMU's multiboot loader needs it so).
    pub xen_elf: PathBuf,
    /// The Debian kernel, used for dom0 and every Linux domU.
    pub vmlinuz: PathBuf,
    /// `uname -r` of that kernel, e.g. `6.1.0-57-amd64`.
    pub kernel_release: String,
    pub qemu: Qemu,
}

impl Setup {
    /// `Debian 12 (bookworm): Xen 4.17 (xen-hypervisor-4.17-amd64
    /// 4.17.5+72-g01ba...), kernel 6.1.0-57-amd64 (6.1.192-3)`.
    pub fn describe(&self) -> String {
        let rel = self.release;
        let ver = |n: &str| self.resolved.version(n).unwrap_or("?").to_string();
        format!(
            "{}: Xen {} ({} {}), kernel {} ({})",
            rel.describe(),
            rel.xen,
            rel.hypervisor_package(),
            ver(&rel.hypervisor_package()),
            self.kernel_release,
            ver(&self.resolved.kernel_pkg())
        )
    }
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

/// `uname -r` of the rig kernel of `rel` with its headers installed,
/// without fetching anything else: what guest modules build against.
pub fn kernel_release(rel: &Release) -> Result<String> {
    if !is_host_release(rel) {
        return build_root(rel, false).map(|(_, release)| release);
    }
    let r = ensure(
        &mut HostApt,
        rel,
        &Cache::new(rel),
        !host_qemu_is_7_2(),
        false,
        Need::Headers,
    )?;
    Ok(r.kernel_release)
}

/// The directory to build modules against for kernel `release` (whose
/// headers [`kernel_release`] or [`setup`] installed: their Makefile
/// includes the -common tree by absolute path, so they are installed, not
/// unpacked).
pub fn kernel_headers(release: &str) -> Result<PathBuf> {
    let build = PathBuf::from(format!("/lib/modules/{release}/build"));
    if !build.join("Makefile").is_file() {
        bail!(
            "{} has no Makefile: are linux-headers-{release} installed? \
             (`cargo xtask xen setup` installs them)",
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

/// Debian 13's packages install under `/usr` only (`usr/bin/busybox`,
/// `usr/lib/modules`), its systems link `/bin`, `/lib` and `/sbin` there:
/// so does a tree that has `usr/X` and no `X` (Debian 12's packages still
/// use `/bin` and `/lib`, and get no links).
fn merge_usr(tree: &Path) -> Result<()> {
    for d in ["bin", "lib", "sbin"] {
        let link = tree.join(d);
        if tree.join("usr").join(d).is_dir() && fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("usr/{d}"), &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(())
}

/// Removes cached packages the record no longer names (older versions).
fn prune(r: &Resolved, debs: &Path) -> Result<()> {
    let keep: Vec<String> = r
        .pkgs
        .iter()
        .chain(r.qemu_pkgs.iter())
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

/// Makes sure everything the rig of `rel` needs is downloaded and
/// unpacked; a no-op when it is (the archive is not asked). With
/// `refresh`, the package lists are refreshed and everything resolved
/// again first.
pub fn setup(rel: &'static Release, refresh: bool) -> Result<Setup> {
    let cache = Cache::new(rel);
    let debs = cache.debs();
    let host_qemu = host_qemu_is_7_2();
    let step = |name: &str| format!("step '{name}' failed");
    // The host's release comes from the host's apt; another release from
    // apt in its build root (the host's lists do not name its packages),
    // whose libraries the images then carry.
    let native = is_host_release(rel);
    let (before, r, libroot, modules_dir) = if native {
        let before = cache.load(rel, !host_qemu);
        let r = ensure(
            &mut HostApt,
            rel,
            &cache,
            !host_qemu,
            refresh,
            Need::Everything,
        )?;
        (before, r, PathBuf::from("/"), root().join("guest-drivers"))
    } else {
        let before = cache.load(rel, false);
        let (sysroot, r) = root_of(rel, refresh, Need::Everything)?;
        let apt = ChrootApt {
            root: sysroot.clone(),
        };
        let missing: Vec<&str> = ROOT_PACKAGES
            .iter()
            .copied()
            .filter(|p| !apt.has(p))
            .collect();
        if !missing.is_empty() {
            apt.install_names(&missing)
                .with_context(|| step(&format!("install {}", missing.join(" "))))?;
        }
        let modules = sysroot.join(MODULES_IN_ROOT);
        (before, r, sysroot, modules)
    };
    let release = r.kernel_release.clone();
    prune(&r, &debs)?;

    let tree = cache.dir.join("tree");
    let mut changed = unpack(&r.pkgs, &debs, &tree).with_context(|| step("unpack"))?;
    merge_usr(&tree).with_context(|| step("merged /usr links"))?;
    let qemu = if host_qemu {
        Qemu {
            program: "qemu-system-x86_64".into(),
            data_dirs: Vec::new(),
            library_path: None,
        }
    } else if native {
        let (q, c) = unpacked_qemu(&r, &cache)?;
        changed |= c;
        q
    } else {
        // QEMU 7.2 is bookworm's: another release's rig runs the one the
        // host's release unpacks (trixie's QEMU 10 breaks PVH under nested
        // Xen).
        let host = host_release().with_context(|| {
            format!(
                "{}: the host's QEMU is not 7.2 and the host's release is not one the rig \
                 knows, so there is no QEMU 7.2 to unpack",
                step("QEMU")
            )
        })?;
        let hcache = Cache::new(host);
        let hr = ensure(&mut HostApt, host, &hcache, true, refresh, Need::Qemu)?;
        unpacked_qemu(&hr, &hcache)?.0
    };

    let xen_gz = tree.join(rel.xen_gz());
    let xen_elf = cache.dir.join(format!("xen-{}-amd64.elf", rel.xen));
    if changed || !xen_elf.is_file() {
        let tmp = xen_elf.with_extension("tmp");
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(&xen_gz)
            .output()
            .context("could not start gzip")?;
        if !out.status.success() {
            bail!("{}: unpacking {}", step("hypervisor ELF"), xen_gz.display());
        }
        fs::write(&tmp, out.stdout)?;
        fs::rename(&tmp, &xen_elf)?;
        changed = true;
    }
    // The package leaves modules.dep to its postinst; the images need it
    // for modprobe.
    let moddep = tree.join(format!("lib/modules/{release}/modules.dep"));
    if changed || !moddep.is_file() {
        ensure_apt(&["kmod"]).with_context(|| step("install kmod"))?;
        let mut depmod = Command::new("depmod");
        depmod.arg("-b").arg(&tree).arg(&release);
        run_step("depmod", &mut depmod)?;
    }
    let vmlinuz = tree.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} holds no {}", r.kernel_pkg(), vmlinuz.display());
    }
    if native {
        // Guest modules build against the headers ensure() installed.
        kernel_headers(&release)?;
        // e2fsprogs goes into both images from the host.
        ensure_apt(&["e2fsprogs"]).with_context(|| step("install e2fsprogs"))?;
    }

    let count = r.pkgs.len() + r.qemu_pkgs.len();
    let qemu_kind = if host_qemu {
        "host QEMU 7.2"
    } else if native {
        "unpacked QEMU 7.2"
    } else {
        "the host release's unpacked QEMU 7.2"
    };
    let what = format!(
        "{} Xen {}, kernel {release}, {qemu_kind}",
        rel.describe(),
        rel.xen
    );
    if before.as_ref() != Some(&r) {
        eprintln!(
            "xen setup: resolved {count} package(s) for {what}, recorded in {}",
            cache.record().display()
        );
    }
    if changed {
        eprintln!("xen setup: unpacked under {}", cache.dir.display());
    } else {
        eprintln!("xen setup: up to date, nothing to do ({count} packages cached; {what})");
    }
    Ok(Setup {
        release: rel,
        resolved: r,
        tree,
        libroot,
        modules_dir,
        xen_elf,
        vmlinuz,
        kernel_release: release,
        qemu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `apt-cache pkgnames linux-image-` as bookworm's lists answer it
    /// (abridged): the standard kernels, other flavours, the meta packages.
    fn images(abis: &[&str]) -> String {
        let mut s = String::from("linux-image-amd64\nlinux-image-cloud-amd64\n");
        for a in abis {
            s += &format!(
                "linux-image-{a}-amd64\nlinux-image-{a}-amd64-unsigned\nlinux-image-{a}-amd64-dbg\n\
                 linux-image-{a}-cloud-amd64\nlinux-image-{a}-rt-amd64\n"
            );
        }
        s
    }

    fn headers(abis: &[&str]) -> String {
        let mut s = String::from("linux-headers-amd64\n");
        for a in abis {
            s += &format!(
                "linux-headers-{a}-amd64\nlinux-headers-{a}-common\nlinux-headers-{a}-cloud-amd64\n"
            );
        }
        s
    }

    #[test]
    fn the_newest_abi_with_image_and_headers_is_picked() {
        let r = &DEBIAN_12;
        let abis = kernel_abis(
            r,
            &images(&["6.1.0-9", "6.1.0-57", "6.1.0-10"]),
            &headers(&["6.1.0-57", "6.1.0-10", "6.1.0-9"]),
        )
        .unwrap();
        // Numeric order, not text order (10 > 9, 57 > 10).
        assert_eq!(abis, ["6.1.0-57", "6.1.0-10", "6.1.0-9"]);
        // Headers missing for the newest image: the one before it.
        let abis = kernel_abis(
            r,
            &images(&["6.1.0-57", "6.1.0-58"]),
            &headers(&["6.1.0-57"]),
        )
        .unwrap();
        assert_eq!(abis, ["6.1.0-57"]);
        // No headers at all: an error naming both sides.
        let e = kernel_abis(r, &images(&["6.1.0-58"]), &headers(&[])).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("images: 6.1.0-58") && e.contains("headers: none"),
            "{e}"
        );
        // Only flavours, meta packages and another series: nothing.
        let e = kernel_abis(
            r,
            "linux-image-amd64\nlinux-image-6.1.0-57-cloud-amd64\nlinux-image-6.12.12+bpo-amd64\n",
            &headers(&["6.1.0-57"]),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("no linux-image-6.1.*-amd64"),
            "{e:#}"
        );
    }

    #[test]
    fn debian_13_names_its_kernels_by_upstream_version() {
        let r = &DEBIAN_13;
        let abis = kernel_abis(
            r,
            &images(&["6.12.38+deb13", "6.12.43+deb13", "6.12.9+deb13", "6.1.0-57"]),
            &headers(&["6.12.9+deb13", "6.12.38+deb13", "6.12.43+deb13"]),
        )
        .unwrap();
        assert_eq!(abis, ["6.12.43+deb13", "6.12.38+deb13", "6.12.9+deb13"]);
        // 6.1's ABIs are not 6.12's, nor backports' or another release's.
        assert_eq!(
            DEBIAN_12.abi_of("linux-image-6.12.43+deb13-amd64", "linux-image-"),
            None
        );
        assert_eq!(
            r.abi_of("linux-image-6.12.12+bpo-amd64", "linux-image-"),
            None
        );
        assert_eq!(
            r.abi_of("linux-image-6.12.43+deb14-amd64", "linux-image-"),
            None
        );
        assert_eq!(
            r.abi_of("linux-image-6.12.43+deb13-rt-amd64", "linux-image-"),
            None
        );
        assert_eq!(release(13).unwrap().xen, "4.20");
        assert_eq!(release(12).unwrap().kernel, "6.1");
        assert!(release(11).is_err());
    }

    /// An archive and the host's package lists, from recorded answers: the
    /// lists show `listed` until `apt-get update` makes them show what the
    /// archive holds (`current`); only what the archive holds downloads.
    struct FakeApt {
        listed: Vec<(String, String)>,
        current: Vec<(String, String)>,
        installed: BTreeSet<Pkg>,
        calls: Vec<String>,
        /// `apt-get update` leaves the lists as they are.
        stuck: bool,
    }

    const XEN_VERSION: &str = "4.17.5+72-g01ba-0+deb12u1";

    /// Every package of a Debian 12 rig with kernel ABI `abi` (image and,
    /// if `with_headers`, headers), as (name, version).
    fn archive(abis: &[(&str, bool)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = DEBIAN_12
            .xen_packages
            .iter()
            .map(|n| (n.to_string(), XEN_VERSION.to_string()))
            .collect();
        for (abi, with_headers) in abis {
            let ver = format!("6.1.{}-1", abi.rsplit('-').next().unwrap());
            v.push((format!("linux-image-{abi}-amd64"), ver.clone()));
            if *with_headers {
                v.push((format!("linux-headers-{abi}-amd64"), ver));
            }
        }
        v
    }

    impl FakeApt {
        fn new(listed: Vec<(String, String)>, current: Vec<(String, String)>) -> Self {
            FakeApt {
                listed,
                current,
                installed: BTreeSet::new(),
                calls: Vec::new(),
                stuck: false,
            }
        }

        fn pkg(list: &[(String, String)], name: &str) -> Option<Pkg> {
            list.iter().find(|(n, _)| n == name).map(|(n, v)| Pkg {
                name: n.clone(),
                version: v.clone(),
                arch: "amd64".into(),
            })
        }

        fn in_archive(&self, p: &Pkg) -> bool {
            Self::pkg(&self.current, &p.name).as_ref() == Some(p)
        }
    }

    impl Archive for FakeApt {
        fn update(&mut self) -> Result<()> {
            self.calls.push("update".into());
            if !self.stuck {
                self.listed = self.current.clone();
            }
            Ok(())
        }
        fn pkgnames(&mut self, prefix: &str) -> Result<String> {
            self.calls.push(format!("pkgnames {prefix}"));
            Ok(self
                .listed
                .iter()
                .filter(|(n, _)| n.starts_with(prefix))
                .map(|(n, _)| format!("{n}\n"))
                .collect())
        }
        fn show(&mut self, names: &[String]) -> Result<String> {
            self.calls.push(format!("show {}", names.join(" ")));
            let mut out = String::new();
            for n in names {
                match Self::pkg(&self.listed, n) {
                    Some(p) => {
                        out += &format!(
                            "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: x\n\n",
                            p.name, p.version
                        )
                    }
                    None => bail!("E: No packages found ({n})"),
                }
            }
            Ok(out)
        }
        fn qemu_closure(&mut self) -> Result<Vec<String>> {
            self.calls.push("qemu_closure".into());
            Ok(self
                .listed
                .iter()
                .filter(|(n, _)| n.starts_with("qemu-"))
                .map(|(n, _)| n.clone())
                .collect())
        }
        fn download(&mut self, pkg: &Pkg, dir: &Path) -> Result<()> {
            self.calls.push(format!("download {}", pkg.spec()));
            if !self.in_archive(pkg) {
                bail!(
                    "E: Can't find a source to download version '{}' of '{}:amd64'",
                    pkg.version,
                    pkg.name
                );
            }
            fs::write(dir.join(pkg.deb_name()), b"deb")?;
            Ok(())
        }
        fn installed(&mut self, pkg: &Pkg) -> bool {
            self.installed.contains(pkg)
        }
        fn install(&mut self, pkg: &Pkg) -> Result<()> {
            self.calls.push(format!("install {}", pkg.spec()));
            if !self.in_archive(pkg) {
                bail!(
                    "E: Version '{}' for '{}' was not found",
                    pkg.version,
                    pkg.name
                );
            }
            self.installed.insert(pkg.clone());
            Ok(())
        }
    }

    fn cache(test: &str) -> Cache {
        let dir = std::env::temp_dir().join(format!("xtask-setup-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Cache { dir }
    }

    fn run(a: &mut FakeApt, c: &Cache, refresh: bool) -> Result<Resolved> {
        ensure(a, &DEBIAN_12, c, false, refresh, Need::Everything)
    }

    #[test]
    fn stale_lists_are_refreshed_before_anything_is_resolved() {
        // The lists are months old: they name 6.1.0-48, which the archive
        // dropped (the first run of issue 19).
        let c = cache("stale");
        let mut a = FakeApt::new(
            archive(&[("6.1.0-47", true), ("6.1.0-48", true)]),
            archive(&[("6.1.0-56", true), ("6.1.0-57", true)]),
        );
        let r = run(&mut a, &c, false).unwrap();
        assert_eq!(r.kernel_release, "6.1.0-57-amd64");
        assert_eq!(r.headers.name, "linux-headers-6.1.0-57-amd64");
        assert_eq!(a.calls[0], "update", "{:?}", a.calls);
        assert!(
            a.calls.iter().all(|c| !c.contains("6.1.0-48")),
            "{:?}",
            a.calls
        );
        // What was resolved is recorded.
        let saved: Resolved =
            serde_json::from_str(&fs::read_to_string(c.record()).unwrap()).unwrap();
        assert_eq!(saved, r);
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn a_kernel_whose_headers_are_missing_is_passed_over() {
        let c = cache("headers");
        let current = archive(&[("6.1.0-57", true), ("6.1.0-58", false)]);
        let mut a = FakeApt::new(current.clone(), current);
        let r = run(&mut a, &c, false).unwrap();
        assert_eq!(r.kernel_release, "6.1.0-57-amd64");
        assert!(r
            .pkgs
            .iter()
            .any(|p| p.name == "linux-image-6.1.0-57-amd64"));
        assert!(r.pkgs.iter().all(|p| !p.name.contains("6.1.0-58")));
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn the_record_is_reused_until_a_refresh_is_asked_for() {
        let c = cache("record");
        let mut a = FakeApt::new(Vec::new(), archive(&[("6.1.0-57", true)]));
        let first = run(&mut a, &c, false).unwrap();
        // A newer ABI reaches the archive (and the host's lists).
        let newer = archive(&[("6.1.0-57", true), ("6.1.0-58", true)]);
        a.current = newer.clone();
        a.listed = newer;
        a.calls.clear();
        let again = run(&mut a, &c, false).unwrap();
        assert_eq!(again, first, "the cached rig is kept");
        assert!(a.calls.is_empty(), "the archive was asked: {:?}", a.calls);
        let refreshed = run(&mut a, &c, true).unwrap();
        assert_eq!(refreshed.kernel_release, "6.1.0-58-amd64");
        assert_eq!(a.calls[0], "update");
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn a_recorded_package_that_cannot_be_fetched_is_resolved_again() {
        let c = cache("gone");
        let mut a = FakeApt::new(Vec::new(), archive(&[("6.1.0-48", true)]));
        run(&mut a, &c, false).unwrap();
        // The cached packages are lost (a cleaned target/), and the archive
        // has moved on: the recorded 6.1.0-48 cannot be downloaded.
        fs::remove_dir_all(c.debs()).unwrap();
        a.current = archive(&[("6.1.0-57", true)]);
        a.calls.clear();
        let r = run(&mut a, &c, false).unwrap();
        assert_eq!(r.kernel_release, "6.1.0-57-amd64");
        let update = a
            .calls
            .iter()
            .position(|c| c == "update")
            .expect("no update");
        assert!(a.calls[..update].iter().any(|c| c.starts_with("download ")));
        let saved: Resolved =
            serde_json::from_str(&fs::read_to_string(c.record()).unwrap()).unwrap();
        assert_eq!(saved.kernel_release, "6.1.0-57-amd64");
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn another_release_s_rig_fetches_only_the_host_s_qemu() {
        // Debian 13's rig runs the host release's QEMU 7.2: from the
        // host's record it downloads QEMU's packages, neither Xen nor the
        // kernel, and installs no headers on the host.
        let c = cache("qemu");
        let mut current = archive(&[("6.1.0-57", true)]);
        current.push(("qemu-system-x86".into(), "1:7.2+dfsg-7+deb12u18".into()));
        let mut a = FakeApt::new(current.clone(), current);
        let r = ensure(&mut a, &DEBIAN_12, &c, true, false, Need::Qemu).unwrap();
        assert_eq!(r.qemu_pkgs.len(), 1, "{r:?}");
        let downloads: Vec<&String> = a
            .calls
            .iter()
            .filter(|c| c.starts_with("download "))
            .collect();
        assert_eq!(
            downloads,
            ["download qemu-system-x86=1:7.2+dfsg-7+deb12u18"],
            "{:?}",
            a.calls
        );
        assert!(a.installed.is_empty(), "headers installed: {:?}", a.calls);
        assert!(c.debs().join(r.qemu_pkgs[0].deb_name()).is_file());
        // The same record serves the host's own rig, which then fetches
        // the rest.
        a.calls.clear();
        let again = ensure(&mut a, &DEBIAN_12, &c, true, false, Need::Everything).unwrap();
        assert_eq!(again, r);
        assert!(a.calls.iter().all(|c| !c.starts_with("update")));
        assert!(a.installed.contains(&r.headers));
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn a_merged_usr_tree_gets_the_root_links_and_an_old_one_none() {
        let c = cache("usr");
        let new = c.dir.join("13");
        fs::create_dir_all(new.join("usr/bin")).unwrap();
        fs::create_dir_all(new.join("usr/lib/modules")).unwrap();
        merge_usr(&new).unwrap();
        assert_eq!(
            fs::read_link(new.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert!(new.join("lib/modules").is_dir());
        assert!(fs::symlink_metadata(new.join("sbin")).is_err());
        merge_usr(&new).unwrap(); // again: nothing to do
        let old = c.dir.join("12");
        fs::create_dir_all(old.join("lib/modules")).unwrap();
        fs::create_dir_all(old.join("usr/lib")).unwrap();
        merge_usr(&old).unwrap();
        assert!(!fs::symlink_metadata(old.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
        fs::remove_dir_all(&c.dir).unwrap();
    }

    #[test]
    fn a_failed_step_is_named_with_its_reason() {
        let c = cache("fail");
        // The lists name headers the archive no longer holds, and a refresh
        // does not help (a mirror out of sync).
        let listed = archive(&[("6.1.0-57", true)]);
        let mut current = listed.clone();
        current.retain(|(n, _)| !n.starts_with("linux-headers-"));
        let mut a = FakeApt::new(listed, current);
        a.stuck = true;
        let e = run(&mut a, &c, false).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("step 'install linux-headers-6.1.0-57-amd64=6.1.57-1' failed")
                && e.contains("was not found"),
            "{e}"
        );
        assert!(!c.record().exists(), "a failed resolution was recorded");
        let _ = fs::remove_dir_all(&c.dir);
    }
}
