//! vdevice: the dom0 tool. It manages each domain's vdevice page, one
//! acknowledged change at a time (docs/protocol.md).
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use share_hal::linux::LinuxXen;
use share_hal::platform::{DomId, DOM0};
use share_hal::wire::vdevice::{flags, Bootstrap, Kind, BOOTSTRAP_KEY};
use vdevice::{status_name, DeviceSpec, Lookup, Tool, ToolError};

#[derive(Parser)]
#[command(
    version,
    about = "Connect Xen domains to xen-share backend domains through their vdevice pages",
    after_help = "Examples:\n  vdevice create net --backend 1 3 4     # domains 3 and 4 become ports of LAN 0 of netback-uk (domain 1)\n  vdevice create net --backend 1 --lan 7 5 6\n  vdevice create disk --backend 2 --disk 0 3\n  vdevice reconnect disk --backend 5 --disk 0 3   # blkback-uk restarted as domain 5: domain 3's disk 0 moves to it\n  vdevice remove net --backend 1 4\n  vdevice show 3\n  vdevice stats 1                        # netback-uk's per-port counters"
)]
struct Cli {
    /// Seconds to wait for each domain's acknowledgement.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum DevKind {
    Net,
    Disk,
}

impl From<DevKind> for Kind {
    fn from(k: DevKind) -> Kind {
        match k {
            DevKind::Net => Kind::Network,
            DevKind::Disk => Kind::Disk,
        }
    }
}

/// What `reconnect` moves (only disks: a network port is simply created
/// again).
#[derive(Clone, Copy, ValueEnum)]
enum ReconnectKind {
    Disk,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a domain's vdevice entries.
    Show { domid: DomId },
    /// Print the counters a backend publishes for its entries (netback-uk:
    /// frames and bytes each way and drops by cause, per port), read from
    /// its counter page without xenstore.
    Stats { domid: DomId },
    /// Give each member domain a device served by the backend domain.
    Create {
        kind: DevKind,
        /// The backend domain (netback-uk or blkback-uk).
        #[arg(long)]
        backend: DomId,
        /// Shared pages per device (default: 258 for net, 34 for disk).
        #[arg(long)]
        pages: Option<u32>,
        /// Feature bits offered (the entry's subtype; docs/protocol.md).
        /// Default for net: CSUM_BLANK | DATA_VALIDATED | GSO (0xb; add
        /// JUMBO, 0x4, only if every member of the LAN takes MTU 9000);
        /// for disk: FLUSH | DISCARD | FUA | INDIRECT (0xf).
        #[arg(long)]
        features: Option<u32>,
        /// Net: the LAN the ports join (ports with the same id are one LAN).
        #[arg(long, default_value_t = 0)]
        lan: u16,
        /// Disk: which of the backend's disks to serve.
        #[arg(long, default_value_t = 0)]
        disk: u64,
        /// Disk: serve it read-only.
        #[arg(long)]
        read_only: bool,
        /// Member domains.
        #[arg(required = true)]
        members: Vec<DomId>,
    },
    /// Move each member's disk to a restarted disk server: the new backend
    /// makes a share for the member (same flags, features and pages as
    /// the member's entry), and the member's disk entry is rewritten in
    /// place with it, so the member keeps its block device and re-issues
    /// the requests the old server left unanswered.
    Reconnect {
        kind: ReconnectKind,
        /// The new backend domain (the restarted blkback-uk).
        #[arg(long)]
        backend: DomId,
        /// Which of the backend's disks (the member's entry must name the
        /// same one).
        #[arg(long, default_value_t = 0)]
        disk: u64,
        /// The old backend's domain id, needed only if the member has this
        /// disk number from several backends.
        #[arg(long)]
        from: Option<DomId>,
        #[arg(required = true)]
        members: Vec<DomId>,
    },
    /// Remove the device between each member domain and the backend.
    Remove {
        kind: DevKind,
        #[arg(long)]
        backend: DomId,
        #[arg(required = true)]
        members: Vec<DomId>,
    },
}

/// Reads bootstrap keys with the xenstore-read of the Xen tools.
struct XenstoreLookup;

impl Lookup for XenstoreLookup {
    fn bootstrap(&mut self, domid: DomId) -> Result<Bootstrap, ToolError> {
        let path = format!("/local/domain/{domid}/{BOOTSTRAP_KEY}");
        let out = Command::new("xenstore-read")
            .arg(&path)
            .output()
            .map_err(|e| ToolError::NoBootstrap {
                domid,
                detail: format!("cannot run xenstore-read: {e}"),
            })?;
        if !out.status.success() {
            return Err(ToolError::NoBootstrap {
                domid,
                detail: format!("{path}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Bootstrap::parse(value.as_bytes()).map_err(|e| ToolError::NoBootstrap {
            domid,
            detail: format!("{path} = {value:?} is malformed: {e}"),
        })
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let platform = LinuxXen::open(DOM0)?;
    let mut tool = Tool {
        platform,
        lookup: XenstoreLookup,
        timeout_ns: cli.timeout.saturating_mul(1_000_000_000),
    };
    let mut log = |s: &str| println!("{s}");
    match cli.cmd {
        Cmd::Stats { domid } => match tool.stats(domid)? {
            None => println!("domain {domid} publishes no counters"),
            Some((listing, stats)) => {
                println!("domain {domid}: counters (update {})", stats.sequence / 2);
                for (i, e) in listing.used {
                    let Some(c) = stats.entries.get(i as usize) else {
                        continue;
                    };
                    let names: &[&str] = match e.kind {
                        Kind::Network => &share_hal::wire::stats::NET_COUNTERS,
                        _ => &[],
                    };
                    let values: Vec<String> = c
                        .iter()
                        .enumerate()
                        .map(|(k, v)| match names.get(k) {
                            Some(n) => format!("{n}={v}"),
                            None => format!("c{k}={v}"),
                        })
                        .collect();
                    println!("  [{i}] {:?} peer={} {}", e.kind, e.peer, values.join(" "));
                }
            }
        },
        Cmd::Show { domid } => {
            let listing = tool.show(domid)?;
            println!("domain {domid}: {} device(s)", listing.used.len());
            for (i, e) in listing.used {
                println!(
                    "  [{i}] {:?} {:?} peer={} share_ref={} pages={} features={:#x} flags={:#x} param={} status={}",
                    e.kind, e.role, e.peer, e.share_ref.0, e.numpages, e.subtype, e.flags, e.param, status_name(e.status)
                );
            }
            for i in listing.garbled {
                println!("  [{i}] garbled by the domain (ignored)");
            }
        }
        Cmd::Create {
            kind,
            backend,
            pages,
            features,
            lan,
            disk,
            read_only,
            members,
        } => {
            let kind = Kind::from(kind);
            let net = kind == Kind::Network;
            let numpages = pages.unwrap_or(if net { 258 } else { 34 });
            let dev = DeviceSpec {
                kind,
                subtype: features.unwrap_or(if net { 0xb } else { 0xf }),
                numpages,
                flags: if read_only { flags::READ_ONLY } else { 0 },
                // Net: the port's MAC (zero: the switch assigns one) in
                // bytes 0..6 and the LAN id in bytes 6..8 (protocol.md,
                // "Network ports in vdevice entries").
                param: if net { u64::from(lan) << 48 } else { disk },
            };
            for m in members {
                tool.connect(backend, m, dev, &mut log)?;
            }
        }
        Cmd::Reconnect {
            kind: ReconnectKind::Disk,
            backend,
            disk,
            from,
            members,
        } => {
            for m in members {
                tool.reconnect_disk(backend, m, disk, from, &mut log)?;
            }
        }
        Cmd::Remove {
            kind,
            backend,
            members,
        } => {
            for m in members {
                tool.disconnect(backend, m, kind.into(), &mut log)?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vdevice: {e}");
            ExitCode::FAILURE
        }
    }
}
