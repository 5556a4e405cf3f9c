use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use share_hal::wire::net::features;
use share_linux::LinuxXen;
use share_sim::{SimPlatform, SimStore};

use std::os::fd::OwnedFd;

use share_member::host::{Host, KeyStore, OwnerLock};
use share_member::member::{signal_fd, Config, Member};
use share_member::xenbus::XenBus;

/// The userspace member of xen-share: this domain's vdevice page, a TAP
/// device for each LAN and a block device for each disk dom0 connects it
/// to.
///
/// It creates the domain's vdevice page, publishes `data/vdevice`, and
/// applies dom0's entries: a network member entry joins that switch's
/// share and appears as a TAP device (`xsn0`, ...) with the port's MAC and
/// MTU; a disk member entry joins that disk server's share and appears as
/// a block device (a loop device over a FUSE file, linked from
/// <run-dir>/disk<entry>.dev); an empty entry removes it again. One member
/// per domain: it refuses to start while another one
/// runs. SIGINT/SIGTERM leave every share and remove the key.
#[derive(Parser, Debug)]
#[command(
    name = "share-member",
    version,
    after_help = "\
Examples:
  # In Linux domUs 3 and 4 on Xen (domain id read from xenstore):
  share-member
  # then in dom0: both become ports of netback-uk (domain 1), TAP xsn0 appears
  vdevice create net --backend 1 3 4
  vdevice remove net --backend 1 4      # xsn0 of domain 4 goes away
  # a disk of blkback-uk (domain 2) as /run/share-member/disk<entry>.dev;
  # after blkback-uk was re-created as domain 5, the same device goes on:
  vdevice create disk --backend 2 --disk 0 3
  vdevice reconnect disk --backend 5 --disk 0 3

  # On the host simulation, as domain 3, against a broker at /tmp/sim.sock:
  share-member --sim /tmp/sim.sock --domid 3
  # in a network namespace, TAP named lan0, without checksum offload:
  ip netns exec ns3 share-member --sim /tmp/sim.sock --domid 3 \\
      --ifname lan0 --no-csum-offload"
)]
struct Cli {
    /// Run on the host simulation, against the broker at this socket
    /// (default: Linux on Xen, /dev/xen/*).
    #[arg(long, value_name = "SOCKET")]
    sim: Option<PathBuf>,
    /// This domain's id (required with --sim; on Xen read from xenstore's
    /// `domid` when omitted).
    #[arg(long)]
    domid: Option<u16>,
    /// TAP device name; `%d` lets the kernel pick the number.
    #[arg(long, default_value = "xsn%d")]
    ifname: String,
    /// Entries of the vdevice page (1..=126).
    #[arg(long, default_value_t = 16)]
    entries: u16,
    /// Do not accept partial checksums (CSUM_BLANK): the kernel completes
    /// every checksum before a frame leaves.
    #[arg(long)]
    no_csum_offload: bool,
    /// Do not accept DATA_VALIDATED (every received frame is checked again
    /// by the kernel).
    #[arg(long)]
    no_data_validated: bool,
    /// Do not accept jumbo frames (a switch port with an MTU above 1500 is
    /// refused).
    #[arg(long)]
    no_jumbo: bool,
    /// The owner lock file (default: next to the sim store, or
    /// /run/share-member.lock on Xen).
    #[arg(long, value_name = "PATH")]
    lock: Option<PathBuf>,
    /// Where disks appear: disk<entry> (the FUSE file) and disk<entry>.dev
    /// (a link to the block device). Default: next to the sim store, or
    /// /run/share-member on Xen.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
}

fn run<H: Host>(
    p: H,
    keys: KeyStore,
    lock: OwnerLock,
    signals: OwnedFd,
    cfg: Config,
) -> Result<(), String> {
    Member::start(p, keys, lock, cfg)?.run(&signals)
}

fn xen_domid(xs: &mut XenBus) -> Result<u16, String> {
    let v = xs
        .read("domid")
        .map_err(|e| format!("reading this domain's id from xenstore: {e}"))?
        .ok_or("xenstore has no `domid` for this domain; pass --domid")?;
    String::from_utf8_lossy(&v)
        .trim_end_matches('\0')
        .trim()
        .parse()
        .map_err(|_| "xenstore's `domid` is not a number; pass --domid".to_string())
}

fn main_() -> Result<(), String> {
    let cli = Cli::parse();
    let mut accept = features::ALL;
    if cli.no_csum_offload {
        accept &= !features::CSUM_BLANK;
    }
    if cli.no_data_validated {
        accept &= !features::DATA_VALIDATED;
    }
    if cli.no_jumbo {
        accept &= !features::JUMBO;
    }
    let cfg = Config {
        entries: cli.entries,
        ifname: cli.ifname,
        accept,
        lock: cli.lock,
        run_dir: cli.run_dir,
    };
    // Signals are blocked before anything is claimed or published, so
    // none can end the process between publishing and cleaning up.
    let signals = signal_fd().map_err(|e| format!("signalfd: {e}"))?;
    match cli.sim {
        Some(sock) => {
            let domid = cli.domid.ok_or("--sim needs --domid")?;
            let mut keys = KeyStore::Sim {
                store: SimStore::for_broker(&sock),
                domid,
            };
            let mut lock = Member::<SimPlatform>::claim(&mut keys, &cfg)?;
            let p = SimPlatform::connect(&sock, domid).map_err(|e| {
                lock.release();
                format!("joining the simulation at {}: {e}", sock.display())
            })?;
            run(p, keys, lock, signals, cfg)
        }
        None => {
            let mut xs = XenBus::open().map_err(|e| format!("xenstore: {e}"))?;
            let domid = match cli.domid {
                Some(d) => d,
                None => xen_domid(&mut xs)?,
            };
            let mut keys = KeyStore::Xen(xs);
            let mut lock = Member::<LinuxXen>::claim(&mut keys, &cfg)?;
            let p = LinuxXen::open(domid).map_err(|e| {
                lock.release();
                e.to_string()
            })?;
            run(p, keys, lock, signals, cfg)
        }
    }
}

fn main() -> ExitCode {
    match main_() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("share-member: {e}");
            ExitCode::FAILURE
        }
    }
}
