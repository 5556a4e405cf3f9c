//! `cargo xtask xen`: real Xen nested in QEMU (TCG), from Debian 13's
//! packages (Xen 4.20, Linux 6.12; the default, Debian's stable release) or
//! Debian 12's (Xen 4.17, Linux 6.1; `--debian 12`).
//!
//! `setup` fetches and unpacks the Debian packages, `build` makes the dom0
//! and domU initramfs images, `run SCENARIO` boots Xen and runs one of
//! `xen-rig/scenarios/*.sh` in dom0. See `xen-rig/README.md`.
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub mod bench;
mod cpio;
pub mod image;
mod run;
pub mod setup;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--debian N`: the release the rig is made from.
#[derive(clap::Args)]
pub struct Debian {
    /// The Debian release whose Xen and kernel the rig runs (13, 12).
    /// Default: 13.
    #[arg(long = "debian", value_name = "N")]
    debian: Option<u32>,
}

impl Debian {
    pub fn release(&self) -> Result<&'static setup::Release> {
        match self.debian {
            Some(n) => setup::release(n),
            None => Ok(setup::DEFAULT_RELEASE),
        }
    }
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Download and unpack Xen, the kernel and QEMU 7.2 under target/
    /// (idempotent: once resolved, the recorded packages are reused without
    /// asking the archive).
    Setup {
        /// Refresh the package lists and resolve every package again (a
        /// newer kernel ABI, a security update of Xen).
        #[arg(long)]
        refresh: bool,
        #[command(flatten)]
        debian: Debian,
    },
    /// Setup, build the guest modules, then the dom0 and domU initramfs images.
    Build {
        #[command(flatten)]
        debian: Debian,
    },
    /// Setup, build, boot Xen and run xen-rig/scenarios/SCENARIO.sh in dom0.
    Run {
        scenario: String,
        /// Pass only if the scenario fails at exactly this step (tests the rig).
        #[arg(long)]
        expect_fail: Option<String>,
        /// Upper bound for the whole run, in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Echo the serial console (Xen and dom0) as it comes.
        #[arg(short, long)]
        verbose: bool,
        #[command(flatten)]
        debian: Debian,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Setup { refresh, debian } => {
            let s = rig_setup(debian.release()?, refresh)?;
            eprintln!("xen setup: {}", s.describe());
            Ok(())
        }
        Cmd::Build { debian } => {
            let s = rig_setup(debian.release()?, false)?;
            crate::modules::build_for(s.release)?;
            image::build(&s).map(|_| ())
        }
        Cmd::Run {
            scenario,
            expect_fail,
            timeout,
            verbose,
            debian,
        } => {
            let rel = debian.release()?;
            let (s, images) = prepare_for(rel, scenario.starts_with("hostile"))?;
            run::run(
                &s,
                &images,
                &run::Options {
                    scenario,
                    expect_fail,
                    timeout: Duration::from_secs(timeout),
                    verbose,
                },
            )
        }
    }
}

/// The rig of `rel`, set up; an error says it was the set-up that
/// failed, and at which step.
fn rig_setup(rel: &'static setup::Release, refresh: bool) -> Result<setup::Setup> {
    setup::setup(rel, refresh).with_context(|| format!("rig set-up failed ({})", rel.describe()))
}

/// The rig of `rel` set up, fresh guest modules for its kernel (the
/// images carry them) and unikernel images (dom0's /images/; with
/// `test_images`, the test-only hostile backends too), the rig images:
/// what a scenario boots. Each part's error names it.
pub fn prepare_for(
    rel: &'static setup::Release,
    test_images: bool,
) -> Result<(setup::Setup, image::Images)> {
    let s = rig_setup(rel, false)?;
    crate::modules::build_for(rel).context("building the guest modules failed")?;
    crate::images::build(&[]).context("building the unikernel images failed")?;
    if test_images {
        crate::images::build_test_images().context("building the test-only images failed")?;
    }
    let images = image::build(&s).context("building the rig images failed")?;
    Ok((s, images))
}

/// One scenario on a prepared rig (for `cargo xtask demo`).
pub fn run_prepared(
    s: &setup::Setup,
    images: &image::Images,
    scenario: &str,
    timeout: Duration,
    verbose: bool,
) -> Result<()> {
    run::run(
        s,
        images,
        &run::Options {
            scenario: scenario.into(),
            expect_fail: None,
            timeout,
            verbose,
        },
    )
}

pub use run::logs_dir_for;

/// The `xen` tier of `cargo xtask test`: the guest modules build for every
/// release's kernel, the packages install into a clean root of every
/// release and purge without a trace, then every scenario of
/// [`FULL_TIER`] on the default release's rig (Debian 13: Xen 4.20, Linux
/// 6.12) and those of [`OLDSTABLE_TIER`] on the other's (Debian 12: Xen
/// 4.17, Linux 6.1). Returns the number of checks that ended as expected.
pub fn tier() -> Result<u64> {
    let mut passed = 0;
    for rel in setup::RELEASES {
        let t = Instant::now();
        crate::modules::build_for(rel)?;
        phase(&format!("guest modules for {}", rel.describe()), t);
        passed += 1;
    }
    // The packages, installed by dpkg into a clean root of each release.
    for rel in setup::RELEASES {
        let t = Instant::now();
        crate::install::run_for(rel)?;
        phase(&format!("package install test on {}", rel.describe()), t);
        passed += 1;
    }
    passed += scenarios_on(setup::DEFAULT_RELEASE, FULL_TIER)?;
    for rel in setup::RELEASES
        .iter()
        .filter(|r| r.number != setup::DEFAULT_RELEASE.number)
    {
        passed += scenarios_on(rel, OLDSTABLE_TIER)?;
    }
    Ok(passed)
}

fn phase(name: &str, t: Instant) {
    eprintln!("<== xen tier: {name} in {:.1} s", t.elapsed().as_secs_f64());
}

/// Boots `rel`'s rig once per scenario of `list` (name, the step it must
/// fail at, if any) and returns how many ended as expected; the first that
/// does not ends the tier with its error.
fn scenarios_on(rel: &'static setup::Release, list: &[(&str, Option<&str>)]) -> Result<u64> {
    let t = Instant::now();
    let (s, images) = prepare_for(rel, true)?;
    phase(&format!("set-up and image build for {}", rel.describe()), t);
    let mut passed = 0;
    for (scenario, expect_fail) in list {
        let t = Instant::now();
        let opts = run::Options {
            scenario: scenario.to_string(),
            expect_fail: expect_fail.map(String::from),
            timeout: Duration::from_secs(900),
            verbose: false,
        };
        let what = format!("scenario {scenario} on {}", rel.describe());
        if let Err(e) = run::run(&s, &images, &opts) {
            let logs = run::logs_dir_for(rel, scenario);
            let Some(artifact) = rig_artifact(&logs) else {
                return Err(e.context(what));
            };
            // Once, and said: a second failure, of any kind, ends the tier.
            let kept = logs.with_extension(artifact.kind);
            let _ = std::fs::remove_dir_all(&kept);
            std::fs::rename(&logs, &kept)?;
            eprintln!(
                "==> xen tier: {what} failed ({e:#}) and {}: the nested rig's artifact \
                 (xen-rig/README.md, \"{}\"); running it once more (that run's logs in {})",
                artifact.what,
                artifact.readme,
                kept.display()
            );
            run::run(&s, &images, &opts).with_context(|| what.clone())?;
        }
        phase(&what, t);
        passed += 1;
    }
    Ok(passed)
}

/// A failure of the nested rig itself, seen in a failed run's logs.
struct RigArtifact {
    /// The extension the run's logs directory is kept under.
    kind: &'static str,
    /// What happened, with the line that shows it.
    what: String,
    /// The section of xen-rig/README.md that explains it.
    readme: &'static str,
}

/// A triple fault (Xen's line), or a stock domU kernel that died in its
/// own boot, before its agent started (so before anything of ours ran in
/// it) and with no driver of ours or Linux's split drivers in its trace.
fn rig_artifact(logs: &std::path::Path) -> Option<RigArtifact> {
    if let Some(line) = triple_faulted(logs) {
        return Some(RigArtifact {
            kind: "triple-fault",
            what: format!("a domain triple-faulted ({})", line.trim()),
            readme: "RDTSC exits and the triple fault",
        });
    }
    if let Some(line) = dom0_died_booting(logs) {
        return Some(RigArtifact {
            kind: "dom0-fault",
            what: format!("dom0's kernel died in its boot, before its init ({line})"),
            readme: "A stock domU kernel that dies in its boot",
        });
    }
    let (guest, line) = guest_died_booting(logs)?;
    Some(RigArtifact {
        kind: "guest-fault",
        what: format!("domU {guest}'s kernel died in its boot, before its agent ({line})"),
        readme: "A stock domU kernel that dies in its boot",
    })
}

/// dom0's kernel panic line, when it panicked before its init said
/// `@@RIG BOOT`: only Xen and the stock kernel had run, nothing of ours.
fn dom0_died_booting(logs: &std::path::Path) -> Option<String> {
    let serial = std::fs::read_to_string(logs.join("serial.log")).ok()?;
    if serial.lines().any(|l| l.starts_with("@@RIG BOOT")) {
        return None;
    }
    kernel_panic_line(&serial)
}

/// A Linux kernel's panic line (stamped `[  time]`, so a program's own
/// words do not count), trimmed.
fn kernel_panic_line(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| l.starts_with('[') && l.contains("] Kernel panic - not syncing"))
        .map(|l| l.trim().to_string())
}

/// The domU (from `guest-NAME.log`) whose kernel panicked before its
/// agent said `@@READY`, and the panic line. Such a console holds only
/// the kernel's and rc's output, so the guest cannot fake it; a trace that
/// names a split driver (ours or Linux's netfront and blkfront, which talk
/// to backends that may be ours) does not count.
fn guest_died_booting(logs: &std::path::Path) -> Option<(String, String)> {
    let mut names: Vec<_> = std::fs::read_dir(logs)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("guest-") && n.ends_with(".log"))
        .collect();
    names.sort();
    for name in names {
        let Ok(text) = std::fs::read_to_string(logs.join(&name)) else {
            continue;
        };
        if text.contains("@@READY") {
            continue;
        }
        let ours = ["xensnet", "xensblk", "xenshare", "netfront", "blkfront"];
        if ours.iter().any(|d| text.contains(d)) {
            continue;
        }
        let Some(line) = kernel_panic_line(&text) else {
            continue;
        };
        let guest = name["guest-".len()..name.len() - ".log".len()].to_string();
        return Some((guest, line));
    }
    None
}

/// Xen's line saying a domain triple-faulted, from a failed run's serial
/// log. On this nested stack (Xen on QEMU TCG's SVM) stock Linux PVH
/// domUs triple-fault too, rarely: interrupt delivery reads the IDT and
/// faults, with the IDT mapped (cr2 = the IDT's entry 8 in Linux's
/// cpu_entry_area as in our runtime's tables). Such a run says nothing
/// about the scenario, so the tier runs it once more.
fn triple_faulted(logs: &std::path::Path) -> Option<String> {
    let serial = std::fs::read_to_string(logs.join("serial.log")).ok()?;
    serial
        .lines()
        .find(|l| l.starts_with("(XEN) ") && l.contains(" Triple fault - "))
        .map(str::to_string)
}

/// Every scenario, on the default release (Debian's stable): smoke must
/// pass, a scenario whose domU command fails must fail at that step with
/// its logs kept, the PVH self-test must pass, and so on to the demo.
const FULL_TIER: &[(&str, Option<&str>)] = &[
    ("smoke", None),
    ("selftest-fail", Some("domu-false")),
    // The rig's own step timeout (lib.sh's watchdog) must still kill a step.
    ("selftest-timeout", Some("hang")),
    ("selftest", None),
    ("blk", None),
    ("blk-domu", None),
    ("net", None),
    ("xenshare", None),
    ("net-modules", None),
    ("net-policy", None),
    ("uplink", None),
    ("blk-ram", None),
    ("blk-modules", None),
    ("xenshare-dev", None),
    ("xenshare-vma", None),
    ("hostile-blk", None),
    ("hostile-net", None),
    ("hostile-xenshare", None),
    ("vdevice", None),
    ("save-restore", None),
    ("demo", None),
];

/// On the older release (Debian 12, oldstable): what a user of it runs,
/// the demo: both backends on Xen 4.17 (the PVH runtime's hypercalls), the
/// three guest modules on Linux 6.1 (xensnet, xensblk, and xenshare with
/// data through `/dev/xenshare`), vdevice and its daemon, as the release's
/// packages installed them. Every other scenario passes there too (`cargo
/// xtask xen run --debian 12 SCENARIO`); they stay out to keep `cargo
/// xtask test` in its 50 min.
const OLDSTABLE_TIER: &[(&str, Option<&str>)] = &[("demo", None)];

#[cfg(test)]
mod triple_fault_tests {
    use super::{dom0_died_booting, guest_died_booting, rig_artifact, triple_faulted};

    #[test]
    fn dom0_dying_counts_only_before_its_init() {
        let dir = std::env::temp_dir().join(format!("xtask-d0-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let panic = "[    4.389306] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n\
                     [    4.399661] Kernel panic - not syncing: Fatal exception in interrupt\n";
        std::fs::write(dir.join("serial.log"), panic).unwrap();
        assert_eq!(
            dom0_died_booting(&dir).as_deref(),
            Some("[    4.399661] Kernel panic - not syncing: Fatal exception in interrupt")
        );
        assert_eq!(rig_artifact(&dir).unwrap().kind, "dom0-fault");
        std::fs::write(dir.join("serial.log"), format!("@@RIG BOOT\n{panic}")).unwrap();
        assert_eq!(dom0_died_booting(&dir), None, "after init, our code ran");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_domu_kernel_dying_in_its_boot_counts_only_before_its_agent() {
        let dir = std::env::temp_dir().join(format!("xtask-gf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(guest_died_booting(&dir), None, "no guest log");
        let panic = "[    2.277208] BUG: kernel NULL pointer dereference, address: 0\n\
                     [    2.277208]  ? net_ns_init+0xd9/0x1f0\n\
                     [    2.277208] Kernel panic - not syncing: Attempted to kill the idle task!\n";
        std::fs::write(dir.join("guest-a.log"), panic).unwrap();
        let (guest, line) = guest_died_booting(&dir).unwrap();
        assert_eq!(guest, "a");
        assert!(line.ends_with("Attempted to kill the idle task!"));
        assert_eq!(rig_artifact(&dir).unwrap().kind, "guest-fault");
        // After its agent started, the guest ran our code: no artifact.
        std::fs::write(dir.join("guest-a.log"), format!("@@READY a\n{panic}")).unwrap();
        assert_eq!(guest_died_booting(&dir), None);
        // A trace through a split driver: no artifact.
        std::fs::write(
            dir.join("guest-a.log"),
            format!("[    3.1] ? blkif_queue_rq+0x1/0x2 [xen_blkfront]\n{panic}"),
        )
        .unwrap();
        assert_eq!(guest_died_booting(&dir), None);
        // A guest's own words (not stamped by the kernel) do not count.
        std::fs::write(dir.join("guest-a.log"), "Kernel panic - not syncing: no\n").unwrap();
        assert!(rig_artifact(&dir).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_xens_triple_fault_line_counts() {
        let dir = std::env::temp_dir().join(format!("xtask-tf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(triple_faulted(&dir), None, "no serial log");
        std::fs::write(
            dir.join("serial.log"),
            "@@STEP verify BEGIN 600\n@@O guest says Triple fault - invoking\n",
        )
        .unwrap();
        assert_eq!(triple_faulted(&dir), None, "a guest's words are not Xen's");
        std::fs::write(
            dir.join("serial.log"),
            "@@STEP verify BEGIN 600\n(XEN) d3v0 Triple fault - invoking HVM shutdown action 1\n",
        )
        .unwrap();
        assert_eq!(
            triple_faulted(&dir).as_deref(),
            Some("(XEN) d3v0 Triple fault - invoking HVM shutdown action 1")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
