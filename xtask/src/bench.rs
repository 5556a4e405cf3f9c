//! `cargo xtask bench`: each benchmark is a release-built binary that
//! measures its own baseline in the same run and writes its raw figures
//! under `target/bench/`.
use anyhow::Result;

use crate::util::{build_sim_example, cargo, ensure_apt, have, run_step, target_dir};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(clap::Subcommand)]
enum Which {
    /// Lanes between two processes over a simulated share: frames/s for
    /// 64 B and 1500 B, GB/s for 64 KiB, one way and round trip, next to
    /// memcpy. Writes target/bench/ring.json.
    Ring {
        /// Seconds per one-way case (round trips get half).
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Polls before a side arms its trigger and sleeps.
        #[arg(long, default_value_t = 200)]
        spin: u32,
    },
    /// Disk I/O over a blk share (blkback-uk's client and server, RAM
    /// or file store, two processes on the simulation): 4 KiB random
    /// read/write IOPS at queue depth 1 and 32, 1 MiB sequential read/write
    /// at queue depth 8, next to fio on a tmpfs file in the same run
    /// (installs fio if missing). Writes target/bench/blk.json.
    Blk {
        /// Seconds per case (each side).
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// The server's store: `ram`, or `file` (blkback-file's file store
        /// over a tmpfs file, as fio's).
        #[arg(long, default_value = "ram")]
        store: String,
        /// How long each process of the simulation (member, broker,
        /// server) looks for its peer's answer before it sleeps, in ns
        /// (`XEN_SHARE_SIM_SPIN_NS`). 0, the default, as everything else
        /// runs: 100000 is about twice as fast on idle CPUs and ruins it
        /// on busy ones (docs/performance.md).
        #[arg(long, default_value_t = 0)]
        spin_ns: u64,
    },
    /// netback-uk: the switch core alone (ns/frame next to memcpy),
    /// switched frames/s between synthetic members across processes on the
    /// simulation, and iperf3 TCP between namespaces through share-member
    /// and netback-sim next to a Linux bridge with veth pairs (root; makes
    /// and removes its namespaces). Writes target/bench/net.json.
    Net {
        /// Seconds per switched-frames case (switch core and simulation).
        #[arg(long, default_value_t = 2.0)]
        secs: f64,
        /// Seconds of each iperf3 run.
        #[arg(long, default_value_t = 5)]
        iperf_secs: u32,
        /// Only the switch core and the simulation, no TCP.
        #[arg(long)]
        skip_tcp: bool,
    },
    /// On the Xen rig (real Xen nested in QEMU TCG), in one boot: two Linux
    /// domUs over xensnet + netback-uk and over Linux's netfront + dom0's
    /// netback + a dom0 bridge (ping, TCP stream, 64-byte UDP), and one's
    /// disk over xensblk + blkback-uk and over xen-blkfront + dom0's
    /// blkback on the same file (4 KiB random IOPS, 1 MiB sequential),
    /// each case with every domain's CPU seconds per GiB moved (xl list).
    /// The same tool (rig-bench, busybox ping) on both paths. Not part of
    /// `cargo xtask test`; takes the rig for ~10-20 minutes (wrap it in
    /// `flock` where others use the rig). Writes target/bench/xen.json.
    Xen {
        #[command(flatten)]
        debian: crate::xen::Debian,
        /// Upper bound for the whole boot, in seconds.
        #[arg(long, default_value_t = 2400)]
        timeout: u64,
        /// Echo the serial console (Xen and dom0) as it comes.
        #[arg(short, long)]
        verbose: bool,
        /// Do not boot: read the record (bench.txt) a run kept, e.g.
        /// target/xen-logs/bench-xen/bench.txt, and write the JSON again.
        #[arg(long, value_name = "BENCH_TXT")]
        from: Option<std::path::PathBuf>,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Which::Ring { secs, spin } => ring(secs, spin),
        Which::Blk {
            secs,
            store,
            spin_ns,
        } => blk(secs, &store, spin_ns),
        Which::Net {
            secs,
            iperf_secs,
            skip_tcp,
        } => net(secs, iperf_secs, skip_tcp),
        Which::Xen {
            debian,
            timeout,
            verbose,
            from,
        } => crate::xen::bench::run(debian.release()?, timeout, verbose, from),
    }
}

fn blk(secs: f64, store: &str, spin_ns: u64) -> Result<()> {
    ensure_apt(&["fio"])?;
    run_step(
        "build blk-bench (release)",
        cargo().args([
            "build",
            "--release",
            "-p",
            "blkback-uk",
            "--features",
            "host",
            "--example",
            "blk-bench",
        ]),
    )?;
    let bin = target_dir()
        .join("release")
        .join("examples")
        .join("blk-bench");
    let json = target_dir().join("bench").join("blk.json");
    run_step(
        "blk-bench",
        std::process::Command::new(bin)
            .env("XEN_SHARE_SIM_SPIN_NS", spin_ns.to_string())
            .arg("--secs")
            .arg(secs.to_string())
            .arg("--json")
            .arg(&json)
            .arg("--store")
            .arg(store),
    )
}

fn ring(secs: f64, spin: u32) -> Result<()> {
    let bin = build_sim_example("ring-bench")?;
    let json = target_dir().join("bench").join("ring.json");
    run_step(
        "ring-bench",
        std::process::Command::new(bin)
            .arg("--secs")
            .arg(secs.to_string())
            .arg("--spin")
            .arg(spin.to_string())
            .arg("--json")
            .arg(&json),
    )
}

fn net(secs: f64, iperf_secs: u32, skip_tcp: bool) -> Result<()> {
    if !skip_tcp && !have("iperf3") {
        ensure_apt(&["iperf3"])?;
    }
    run_step(
        "build netback-sim, share-member and the network benches (release)",
        cargo().args([
            "build",
            "--release",
            "-p",
            "netback-uk",
            "-p",
            "share-member",
            "--features",
            "netback-uk/sim,netback-uk/testing",
            "--bin",
            "netback-sim",
            "--bin",
            "share-member",
            "--example",
            "switch-bench",
            "--example",
            "net-bench",
        ]),
    )?;
    let release = target_dir().join("release");
    let bench = target_dir().join("bench");
    let core = bench.join("net-switch-core.json");
    // The machine is shared: the load goes next to the figures.
    let _ = run_step("uptime", &mut std::process::Command::new("uptime"));
    run_step(
        "switch-bench (the switch core alone)",
        std::process::Command::new(release.join("examples").join("switch-bench"))
            .arg("--secs")
            .arg(secs.to_string())
            .arg("--json")
            .arg(&core),
    )?;
    let mut cmd = std::process::Command::new(release.join("examples").join("net-bench"));
    cmd.arg("--netback")
        .arg(release.join("netback-sim"))
        .arg("--member")
        .arg(release.join("share-member"))
        .arg("--secs")
        .arg(secs.to_string())
        .arg("--iperf-secs")
        .arg(iperf_secs.to_string())
        .arg("--core-json")
        .arg(&core)
        .arg("--json")
        .arg(bench.join("net.json"));
    if skip_tcp {
        cmd.arg("--skip-tcp");
    }
    run_step("net-bench (across processes, and TCP)", &mut cmd)
}
