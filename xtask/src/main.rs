//! `cargo xtask`: build, test, benchmark and demonstrate xen-share.
//!
//! Each subcommand lives in its own module; this file only dispatches.
use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod dist;
mod fuzz;
mod images;
mod install;
mod modules;
mod test;
mod util;
mod xen;

#[derive(Parser)]
#[command(about = "xen-share task runner", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Demonstrate the project (the main job).
    Demo(demo::Args),
    /// Run every test this machine can run, installing what they need.
    Test(test::Args),
    /// Run a benchmark and print figures next to a same-run baseline.
    Bench(bench::Args),
    /// Build the unikernel images under target/images/.
    Images(images::Args),
    /// Debian packages for dom0 and (DKMS) for guests, under target/dist/.
    Dist(dist::Args),
    /// Install the packages with dpkg into a clean root of each Debian
    /// release and check what they installed, then purge them.
    InstallTest(install::Args),
    /// Build the Linux guest modules (guest-drivers/) against the rig kernel, W=1 clean.
    Modules(modules::Args),
    /// Real Xen nested in QEMU: fetch, build and run scenarios.
    Xen(xen::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Demo(a) => demo::run(a),
        Cmd::Test(a) => test::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Images(a) => images::run(a),
        Cmd::Dist(a) => dist::run(a),
        Cmd::InstallTest(a) => install::run(a),
        Cmd::Modules(a) => modules::run(a),
        Cmd::Xen(a) => xen::run(a),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}
