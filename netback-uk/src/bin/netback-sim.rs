//! netback-uk on the host simulation: the same switch and vdevice handling
//! as the PVH image, as a process that joins a simulation broker as a
//! domain. For tests, benchmarks and trying things without Xen.

use std::process::ExitCode;

#[path = "../sim_tap.rs"]
mod tap;

use clap::Parser;
use netback_uk::service::Netback;
use netback_uk::switch::SwitchConfig;
use share_hal::platform::{Clock, DomId};
use share_hal::vdevice::VdeviceBus;
use share_hal::wire::vdevice::BOOTSTRAP_KEY;
use share_sim::{SimPlatform, SimStore};

#[derive(Parser)]
#[command(
    version,
    about = "netback-uk, the xen-share LAN switch, as a domain of the host simulation",
    after_help = "Example:\n  netback-sim --sim /tmp/xs.sock --domid 1\n  netback-sim --sim /tmp/xs.sock --uplink 0=xsup0   # device 0: the TAP xsup0\n\nIt publishes its vdevice page under the simulation's store (SOCKET.store/DOMID/data/vdevice);\ndom0's vdevice tool then makes ports with owner entries of kind net, and uplinks\n(vdevice --create net ... --uplink N) bridge a LAN to device N."
)]
struct Cli {
    /// The simulation broker's socket.
    #[arg(long)]
    sim: std::path::PathBuf,
    /// This domain's id.
    #[arg(long, default_value_t = 1)]
    domid: DomId,
    /// Entries of the vdevice page (ports it can serve).
    #[arg(long, default_value_t = 32)]
    entries: u16,
    /// Seconds between per-port counter reports on stderr (0: never).
    #[arg(long, default_value_t = 10)]
    report_secs: u64,
    /// Network device N is the TAP device NAME (created in netback-sim's
    /// network namespace if it does not exist): a LAN's uplink names it by
    /// N. Repeat for more.
    #[arg(long = "uplink", value_name = "N=NAME", value_parser = parse_uplink)]
    uplinks: Vec<(u16, String)>,
    /// Log every port event (debug level).
    #[arg(long, short)]
    verbose: bool,
}

fn parse_uplink(s: &str) -> Result<(u16, String), String> {
    let (n, name) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: N=NAME (e.g. 0=xsup0)"))?;
    let n = n
        .parse::<u16>()
        .map_err(|_| format!("{s:?}: N is a device number, 0..=65535"))?;
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(format!("{s:?}: NAME is an interface name of 1 to 15 bytes"));
    }
    Ok((n, name.to_string()))
}

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("netback-sim: {}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

fn run(cli: Cli) -> Result<(), String> {
    let mut p = SimPlatform::connect(&cli.sim, cli.domid)
        .map_err(|e| format!("joining the simulation at {}: {e}", cli.sim.display()))?;
    let bus = VdeviceBus::create(&mut p, cli.entries)
        .map_err(|e| format!("creating the vdevice page: {e}"))?;
    let boot = bus.bootstrap().to_string();
    SimStore::for_broker(&cli.sim)
        .write(cli.domid, BOOTSTRAP_KEY, &boot)
        .map_err(|e| format!("publishing {BOOTSTRAP_KEY}: {e}"))?;
    log::info!("domain {} published {BOOTSTRAP_KEY} = {boot}", cli.domid);
    let config = SwitchConfig {
        seed: p.now_ns() ^ u64::from(std::process::id()),
        ..SwitchConfig::default()
    };
    let nb =
        Netback::new(&mut p, bus, config).map_err(|e| format!("creating the counter page: {e}"))?;
    let mut taps = Vec::new();
    for (n, name) in &cli.uplinks {
        if taps.iter().any(|(d, _)| d == n) {
            return Err(format!("--uplink {n}={name}: device {n} given twice"));
        }
        let t = tap::Tap::open(name).map_err(|e| format!("--uplink {n}={name}: {e}"))?;
        p.wake_on(t.fd())
            .map_err(|e| format!("--uplink {n}={name}: {e}"))?;
        log::info!("network device {n}: TAP {name}");
        taps.push((*n, t));
    }
    let mut nb = nb.with_uplinks(tap::TapUplinks { taps });
    nb.report_every_s = cli.report_secs;
    eprintln!("netback-sim: ready");
    loop {
        nb.step(&mut p, &mut |line| eprintln!("netback-sim: {line}"))
            .map_err(|e| format!("the switch loop failed: {e}"))?;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::set_max_level(if cli.verbose {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
    let _ = log::set_logger(&StderrLog);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netback-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
