//! `cargo xtask xen`: real Xen 4.17 nested in QEMU (TCG).
//!
//! `setup` fetches and unpacks the Debian packages, `build` makes the dom0
//! and domU initramfs images, `run SCENARIO` boots Xen and runs one of
//! `xen-rig/scenarios/*.sh` in dom0. See `xen-rig/README.md`.
use std::time::{Duration, Instant};

use anyhow::Result;

mod cpio;
mod image;
mod run;
pub mod setup;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Download and unpack Xen, the kernel and QEMU 7.2 under target/ (idempotent).
    Setup,
    /// Setup, build the guest modules, then the dom0 and domU initramfs images.
    Build,
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
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Setup => setup::setup().map(|_| ()),
        Cmd::Build => {
            let s = setup::setup()?;
            crate::modules::build(&s.kernel_release)?;
            image::build(&s).map(|_| ())
        }
        Cmd::Run {
            scenario,
            expect_fail,
            timeout,
            verbose,
        } => boot_and_run(run::Options {
            scenario,
            expect_fail,
            timeout: Duration::from_secs(timeout),
            verbose,
        }),
    }
}

/// Setup, fresh guest modules (the images carry them) and unikernel images
/// (dom0's /images/), the rig images, then one scenario.
fn boot_and_run(opts: run::Options) -> Result<()> {
    let s = setup::setup()?;
    crate::modules::build(&s.kernel_release)?;
    crate::images::build(&[])?;
    // Test-only backends (dom0's /images/ too), for the scenarios that
    // run them.
    if opts.scenario.starts_with("hostile") {
        crate::images::build_test_images()?;
    }
    let images = image::build(&s)?;
    run::run(&s, &images, &opts)
}

/// One scenario, booted fresh (for `cargo xtask demo`).
pub fn run_scenario(scenario: &str, timeout: Duration, verbose: bool) -> Result<()> {
    boot_and_run(run::Options {
        scenario: scenario.into(),
        expect_fail: None,
        timeout,
        verbose,
    })
}

pub use run::logs_dir;

/// The `xen` tier of `cargo xtask test`: smoke must pass, a scenario whose
/// domU command fails must fail at that step with its logs kept, the PVH
/// self-test must pass, netback-uk must switch two Linux domUs (`net`), and
/// the guest kernel transport must join and leave a share (`xenshare`).
/// Returns the number of scenarios that ended as expected.
pub fn tier() -> Result<u64> {
    let phase = |name: &str, t: Instant| {
        eprintln!("<== xen tier: {name} in {:.1} s", t.elapsed().as_secs_f64());
    };
    let t = Instant::now();
    let s = setup::setup()?;
    phase("setup", t);
    let t = Instant::now();
    crate::modules::build(&s.kernel_release)?;
    crate::images::build(&[])?;
    crate::images::build_test_images()?;
    let images = image::build(&s)?;
    phase("image build", t);
    let mut passed = 0;
    for (scenario, expect_fail) in [
        ("smoke", None),
        ("selftest-fail", Some("domu-false")),
        ("selftest", None),
        ("blk", None),
        ("blk-domu", None),
        ("net", None),
        ("xenshare", None),
        ("net-modules", None),
        ("blk-ram", None),
        ("blk-modules", None),
        ("xenshare-dev", None),
        ("xenshare-vma", None),
        ("hostile-blk", None),
        ("vdevice", None),
        ("save-restore", None),
        ("demo", None),
    ] {
        let t = Instant::now();
        run::run(
            &s,
            &images,
            &run::Options {
                scenario: scenario.into(),
                expect_fail: expect_fail.map(String::from),
                timeout: Duration::from_secs(900),
                verbose: false,
            },
        )?;
        phase(&format!("scenario {scenario}"), t);
        passed += 1;
    }
    Ok(passed)
}
