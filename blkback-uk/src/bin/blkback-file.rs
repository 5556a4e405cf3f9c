//! blkback-file: the disk server as a host program, serving files.
//!
//! The same server as the blkback-uk image, on the host simulation: it
//! connects to the simulation's broker as domain `--domid`, publishes its
//! vdevice page under `data/vdevice` in the simulation's store, and serves
//! each `--disk` (disk index = order on the command line) to whichever
//! member dom0's owner entries name.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use share_hal::platform::{Clock, EventChannels, Platform};
use share_hal::vdevice::{Change, VdeviceBus};
use share_hal::wire::vdevice::BOOTSTRAP_KEY;
use share_hal::Error;
use share_sim::{SimPlatform, SimStore};

use blkback_uk::file::FileStore;
use blkback_uk::wiring::poll_vdevice;
use blkback_uk::{Server, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "blkback-file",
    version,
    about = "Serve files as xen-share disks (blk shares) on the host simulation",
    long_about = "Serve files as xen-share disks (blk shares) on the host simulation.\n\n\
        Connects to the simulation broker at SOCKET as domain N, publishes its vdevice \
        page (key data/vdevice of the simulation store), and serves every --disk to the \
        members that dom0's owner entries name (entry param = disk index, in the order \
        given; flag READ_ONLY serves it read-only to any number of members, otherwise to \
        one member only).\n\n\
        Durability: a write answered with FUA, or followed by an answered flush, is on \
        the file's storage (fdatasync) before its answer is published."
)]
struct Args {
    /// The simulation broker's socket.
    #[arg(long, value_name = "SOCKET")]
    sim: PathBuf,
    /// This server's domain id.
    #[arg(long, value_name = "N")]
    domid: u16,
    /// A disk image file; repeat for more disks (index = order). Prefix
    /// `ro:` to open it read-only (then only read-only entries are served).
    #[arg(long = "disk", value_name = "PATH", required = true)]
    disks: Vec<String>,
    /// Entries of the vdevice page (members served at once).
    #[arg(long, default_value_t = 32)]
    entries: u16,
    /// Bounce pages (4 KiB each) the data of one batch passes through.
    #[arg(long, default_value_t = 1024)]
    bounce_pages: usize,
    /// Log every refused request too.
    #[arg(short, long)]
    verbose: bool,
}

struct StderrLog {
    level: log::LevelFilter,
}

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let _ = writeln!(
                std::io::stderr().lock(),
                "blkback-file: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = if args.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger: &'static StderrLog = Box::leak(Box::new(StderrLog { level }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            log::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let mut stores = Vec::new();
    for (i, spec) in args.disks.iter().enumerate() {
        let (ro, path) = match spec.strip_prefix("ro:") {
            Some(p) => (true, PathBuf::from(p)),
            None => (false, PathBuf::from(spec)),
        };
        let s = FileStore::open(&path, ro)
            .map_err(|e| format!("disk {i}: cannot open {}: {e}", path.display()))?;
        if s.info_capacity() == 0 {
            return Err(format!(
                "disk {i}: {} is smaller than one 512-byte sector",
                path.display()
            ));
        }
        log::info!(
            "disk {i}: {} ({} sectors{})",
            path.display(),
            s.info_capacity(),
            if ro { ", read-only" } else { "" }
        );
        stores.push(s);
    }
    let mut p = SimPlatform::connect(&args.sim, args.domid).map_err(|e| {
        format!(
            "cannot connect to the simulation broker at {} as domain {}: {e}",
            args.sim.display(),
            args.domid
        )
    })?;
    let config = ServerConfig {
        bounce_pages: args.bounce_pages,
        ..ServerConfig::default()
    };
    let mut server =
        Server::new(&mut p, stores, config).map_err(|e| format!("setting up the server: {e}"))?;
    let mut bus = VdeviceBus::create(&mut p, args.entries)
        .map_err(|e| format!("creating the vdevice page: {e}"))?;
    let boot = bus.bootstrap().to_string();
    SimStore::for_broker(&args.sim)
        .write(p.domid(), BOOTSTRAP_KEY, &boot)
        .map_err(|e| format!("publishing {BOOTSTRAP_KEY}: {e}"))?;
    log::info!(
        "domain {} ready: {BOOTSTRAP_KEY} = {boot}, {} disk(s)",
        p.domid(),
        server.disk_count()
    );
    let vport = bus.port();
    let mut last_reap = p.now_ns();
    loop {
        let progress = server.service(&mut p);
        // Busy lanes are served again at once; the vdevice port and other
        // lanes are still looked at between rounds (a zero deadline).
        let deadline = if progress.more {
            Some(0)
        } else {
            Some(p.now_ns().saturating_add(1_000_000_000))
        };
        let mut vdevice_fired = false;
        match p.wait(deadline, &mut |port| vdevice_fired |= port == vport) {
            Ok(()) | Err(Error::TimedOut) => {}
            Err(e) => return Err(format!("waiting for triggers: {e} (broker gone?)")),
        }
        if vdevice_fired {
            match poll_vdevice(&mut bus, &mut p, &mut server) {
                Ok(Some(Change {
                    serial,
                    index,
                    status: 0,
                    new,
                    ..
                })) => log::info!(
                    "vdevice change {serial}: entry {index} is now {:?} for domain {}",
                    new.kind,
                    new.peer
                ),
                Ok(Some(Change {
                    serial,
                    index,
                    status,
                    ..
                })) => log::info!(
                    "vdevice change {serial}: entry {index} refused with status {status}"
                ),
                Ok(None) => {}
                Err(e) => log::warn!("vdevice change could not be handled: {e}"),
            }
        }
        if p.now_ns().saturating_sub(last_reap) > 1_000_000_000 {
            last_reap = p.now_ns();
            server.reap(&mut p);
        }
    }
}

trait Capacity {
    fn info_capacity(&self) -> u64;
}

impl Capacity for FileStore {
    fn info_capacity(&self) -> u64 {
        blkback_uk::Store::info(self).capacity
    }
}
