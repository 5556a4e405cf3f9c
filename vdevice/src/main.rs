//! vdevice: the dom0 tool. It manages each domain's vdevice page, one
//! acknowledged change at a time (docs/protocol.md), and keeps a record of
//! the devices it made so that `vdevice daemon` can give them back when a
//! domain restarts.
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use share_hal::platform::{DomId, DOM0};
use share_hal::wire::vdevice::{flags, Bootstrap, Kind, BOOTSTRAP_KEY};
use share_linux::LinuxXen;
use vdevice::admin::{self, Admin, CreateOpts};
use vdevice::host::{AttachedDisk, DomainInfo, Host};
use vdevice::record::{Record, RecordFile, Uplink};
use vdevice::{daemon, status_name, DeviceSpec, Lookup, Tool, ToolError};

const EXAMPLES: &str = "\
Named devices (recorded in /var/lib/xen-share/vdevice.json, or --record / $VDEVICE_RECORD):
  vdevice --create net 0 guest-a 5         # a new LAN (prints its name: net0) served by
                                           # netback-uk; dom0, guest-a and domain 5 its ports
  vdevice --create net a b --backend nb2   # served by the domain nb2 instead
  vdevice --create block /srv/a.img guest  # /srv/a.img given to blkback-uk (xl block-attach),
                                           # served to guest as a read-write disk (blk0)
  vdevice --create block /srv/base.img a b c --ro   # one read-only disk for three domains
  vdevice --create net a b --bind-addresses --private   # a LAN whose ports keep to their
                                           # DHCP addresses and reach only netback-uk
  vdevice --create net a b --rate 100M     # each member sends at most 100 Mbit/s
  vdevice --create net a b --bind-addresses --ip a=192.168.5.7/32   # a may also send
                                           # from 192.168.5.7
  vdevice --create net a b --uplink 0      # a LAN bridged to netback-uk's first vif= (on
                                           # dom0's bridge): a and b get their addresses
                                           # from the host's network, not from netback-uk;
                                           # each port a MAC made from this host's
                                           # machine-id (unlike another host's)
  vdevice --create net a b --mac a=02:16:3e:00:00:0a   # a's port has that MAC
  vdevice --attach-uplink net1 0           # an existing LAN gets that uplink (--detach-uplink
                                           # net1: an island again, netback-uk's DHCP back)
  vdevice --add net0 guest-b               # guest-b joins the LAN
  vdevice --add net0 c --mac c=02:00:00:00:00:0c   # with its own MAC
  vdevice --remove net0 5                  # domain 5 leaves it
  vdevice --destroy blk0                   # every member leaves (blkback-uk keeps the file,
                                           # unserved, until it restarts: its disk numbers
                                           # are the order it got its disks in)
  vdevice --list                           # devices, backends, members, each connection as
                                           # both domains acknowledged it, the backend's counters
  vdevice --list --json                    # the same for scripts
  vdevice daemon                           # give devices back to restarted domains (systemd:
                                           # vdevice.service)
Domains are ids or xl names. A LAN netN is LAN id N on netback-uk; a disk blkN is the
backend's disk its file was given as. A command either completes every step or undoes
the steps it made and leaves the record as it was; an error names the domain or device.

By domain id, unrecorded (the daemon does not restore these):
  vdevice create net --backend 1 3 4     # domains 3 and 4 become ports of LAN 0 of netback-uk (domain 1)
  vdevice create net --backend 1 --lan 7 5 6
  vdevice create disk --backend 2 --disk 0 3
  vdevice reconnect disk --backend 5 --disk 0 3   # blkback-uk restarted as domain 5: domain 3's disk 0 moves to it
  vdevice remove net --backend 1 4
  vdevice show 3
  vdevice stats 1                        # netback-uk's per-port counters";

#[derive(Parser)]
#[command(
    version,
    about = "Connect Xen domains to xen-share backend domains through their vdevice pages",
    after_help = EXAMPLES,
    group(ArgGroup::new("action").args(["create", "add", "remove", "destroy", "list", "attach_uplink", "detach_uplink"])),
)]
struct Cli {
    /// Seconds to wait for each domain's acknowledgement.
    #[arg(long, default_value_t = 10, global = true)]
    timeout: u64,
    /// The record of named devices [default: $VDEVICE_RECORD, else
    /// /var/lib/xen-share/vdevice.json].
    #[arg(long, global = true, value_name = "PATH")]
    record: Option<PathBuf>,
    /// Create a device and print its name: `net DOM...` (a LAN of
    /// netback-uk) or `block FILE|DEVICE DOM...` (a disk of blkback-uk).
    #[arg(long, num_args = 1.., value_names = ["KIND", "ARGS"], allow_hyphen_values = false)]
    create: Option<Vec<String>>,
    /// Make domain DOM a member of device NAME.
    #[arg(long, num_args = 2, value_names = ["NAME", "DOM"])]
    add: Option<Vec<String>>,
    /// Take domain DOM out of device NAME.
    #[arg(long, num_args = 2, value_names = ["NAME", "DOM"])]
    remove: Option<Vec<String>>,
    /// Take every member out of device NAME and forget it.
    #[arg(long, value_name = "NAME")]
    destroy: Option<String>,
    /// Each device, its backend, its members and the state of each
    /// connection as the domains acknowledged it, with the backend's
    /// counters.
    #[arg(long)]
    list: bool,
    /// With --list: JSON for scripts.
    #[arg(long, requires = "list")]
    json: bool,
    /// With --create block: a read-only disk, which many domains may share.
    #[arg(long, requires = "create")]
    ro: bool,
    /// With --create net: each port's IPv4 sources and ARP senders are
    /// bound to its DHCP leases, its IPv6 sources to its link-local
    /// address; spoofed frames are dropped and counted.
    #[arg(long, requires = "create")]
    bind_addresses: bool,
    /// With --create net: what each member may send, `RATE[/WINDOW]` in
    /// bits per second (e.g. 100M, 1G/10ms; burst: WINDOW at the rate,
    /// default 50ms); more waits in the member's queue, nothing is dropped.
    #[arg(long, value_name = "RATE", requires = "create")]
    rate: Option<String>,
    /// With --create net: MEMBER may also send from ADDR/PREFIX (IPv4, or
    /// an IPv6 network of at most 64 bits), besides its DHCP leases;
    /// repeat for more (at most 8 a member). With --bind-addresses.
    #[arg(
        long = "ip",
        value_name = "MEMBER=ADDR/PREFIX",
        requires = "bind_addresses"
    )]
    ips: Vec<String>,
    /// With --create net: the ports reach netback-uk's endpoint (DHCP,
    /// ping) but not each other (client isolation).
    #[arg(long, requires = "create")]
    private: bool,
    /// With --create net: the LAN is bridged to the backend's network
    /// device N (netback-uk: the N-th `vif=` of its xl config, on a dom0
    /// bridge); its DHCP server is then off (the network's serves).
    #[arg(long, value_name = "N", requires = "create")]
    uplink: Option<u16>,
    /// With --create net or --add: MEMBER's port has MAC (unicast, e.g.
    /// 02:16:3e:00:00:01), which the member's interface takes; repeat for
    /// more members. Otherwise the switch gives 02:58:<LAN>:<domid>, or on
    /// an uplinked LAN vdevice a MAC made from this host's machine-id, the
    /// LAN's name and the member's (two hosts on one network must not
    /// give the same MAC).
    #[arg(long = "mac", value_name = "MEMBER=MAC")]
    macs: Vec<String>,
    /// With --uplink or --attach-uplink: netback-uk's DHCP server stays on
    /// beside the uplink.
    #[arg(long)]
    dhcp_server: bool,
    /// LAN NAME gets the backend's network device N as its uplink.
    #[arg(long, num_args = 2, value_names = ["NAME", "N"])]
    attach_uplink: Option<Vec<String>>,
    /// LAN NAME loses its uplink (an island again).
    #[arg(long, value_name = "NAME")]
    detach_uplink: Option<String>,
    /// With --create: the backend domain (id or name) instead of the
    /// running netback-uk / blkback-uk.
    #[arg(long = "backend", value_name = "DOM", requires = "create")]
    with_backend: Option<String>,
    /// With --create: pages of each member's share (default 258 for net, 34
    /// for block).
    #[arg(long = "pages", value_name = "N", requires = "create")]
    with_pages: Option<u32>,
    /// With --create: feature bits offered (default 0xb for net, 0xf for
    /// block; docs/protocol.md).
    #[arg(long = "features", value_name = "BITS", requires = "create")]
    with_features: Option<u32>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
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
    /// Give recorded devices back to domains that come back: a guest
    /// restarted or restored under a new id, a backend destroyed and
    /// re-created; free what a destroyed domain held. Runs until killed,
    /// woken by xenstore's @introduceDomain and @releaseDomain watches.
    Daemon {
        /// Seconds a member may be gone (saved, rebooting) before it
        /// leaves the record.
        #[arg(long, default_value_t = 600)]
        forget_after: u64,
        /// Seconds between passes while something is left to do (a new
        /// domain that has not published its vdevice page yet).
        #[arg(long, default_value_t = 2)]
        retry: u64,
        /// One pass, then exit (for scripts and tests).
        #[arg(long)]
        once: bool,
    },
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
    if cli.cmd.is_some()
        && (cli.create.is_some()
            || cli.add.is_some()
            || cli.remove.is_some()
            || cli.destroy.is_some()
            || cli.list)
    {
        return Err("--create, --add, --remove, --destroy and --list are commands of their own, not options of a subcommand".into());
    }
    let Some(cmd) = cli.cmd else {
        return seed(&cli_actions(&cli)?, &cli);
    };
    let platform = LinuxXen::open(DOM0)?;
    let mut tool = Tool {
        platform,
        lookup: XenstoreLookup,
        timeout_ns: cli.timeout.saturating_mul(1_000_000_000),
    };
    let mut log = |s: &str| println!("{s}");
    match cmd {
        Cmd::Daemon {
            forget_after,
            retry,
            once,
        } => {
            return run_daemon(
                &mut tool,
                &RecordFile::path_from(cli.record),
                forget_after,
                retry,
                once,
            )
        }
        Cmd::Stats { domid } => match tool.stats(domid)? {
            None => println!("domain {domid} publishes no counters"),
            Some((listing, stats)) => {
                println!("domain {domid}: counters (update {})", stats.sequence / 2);
                for (i, e) in listing.used {
                    let Some(c) = stats.entries.get(i as usize) else {
                        continue;
                    };
                    let names: &[&str] = match e.kind {
                        Kind::Network if e.flags & flags::UPLINK != 0 => {
                            &share_hal::wire::stats::UPLINK_COUNTERS
                        }
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
                rate: None,
                ips: vdevice::NO_IPS,
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

/// The seed's spelling, parsed.
enum Action {
    CreateNet(Vec<String>),
    CreateBlock(PathBuf, Vec<String>),
    Add(String, String),
    Remove(String, String),
    Destroy(String),
    List,
    AttachUplink(String, u16),
    DetachUplink(String),
}

/// `--mac MEMBER=MAC` options, each checked.
fn mac_options(macs: &[String]) -> Result<Vec<(String, String)>, String> {
    macs.iter()
        .map(|o| {
            let (who, mac) = o
                .split_once('=')
                .filter(|(w, _)| !w.is_empty())
                .ok_or_else(|| format!("--mac {o}: MEMBER=MAC"))?;
            vdevice::record::parse_mac(mac).map_err(|e| format!("--mac {o}: {e}"))?;
            Ok((who.to_string(), mac.to_string()))
        })
        .collect()
}

/// `--ip MEMBER=ADDR/PREFIX` options, each checked.
fn ip_options(ips: &[String]) -> Result<Vec<(String, String)>, String> {
    ips.iter()
        .map(|o| {
            let (who, net) = o
                .split_once('=')
                .filter(|(w, _)| !w.is_empty())
                .ok_or_else(|| format!("--ip {o}: MEMBER=ADDR/PREFIX"))?;
            vdevice::record::parse_net(0, 0, net)?;
            Ok((who.to_string(), net.to_string()))
        })
        .collect()
}

fn cli_actions(cli: &Cli) -> Result<Action, String> {
    ip_options(&cli.ips)?;
    let macs = mac_options(&cli.macs)?;
    let net_create = cli
        .create
        .as_ref()
        .is_some_and(|c| c.first().is_some_and(|k| k == "net"));
    if !macs.is_empty() && !net_create && cli.add.is_none() {
        return Err("--mac goes with --create net or --add".into());
    }
    if let Some(v) = &cli.add {
        if macs.len() > 1 || macs.first().is_some_and(|(who, _)| *who != v[1]) {
            return Err(format!(
                "--add {} {}: --mac names {} only",
                v[0], v[1], v[1]
            ));
        }
    }
    if (cli.bind_addresses || cli.private || cli.rate.is_some()) && cli.create.is_none() {
        return Err("--bind-addresses, --private and --rate go with --create net".into());
    }
    if cli.uplink.is_some() && cli.create.is_none() {
        return Err("--uplink goes with --create net (an existing LAN: --attach-uplink)".into());
    }
    if let Some(r) = &cli.rate {
        vdevice::record::NetRate::parse(r)?;
    }
    if cli.dhcp_server && cli.uplink.is_none() && cli.attach_uplink.is_none() {
        return Err("--dhcp-server goes with --uplink or --attach-uplink".into());
    }
    if let Some(args) = &cli.create {
        return match args.split_first() {
            Some((k, rest)) if k == "net" => {
                if cli.ro {
                    return Err("--ro is for block devices".into());
                }
                Ok(Action::CreateNet(rest.to_vec()))
            }
            Some((k, _))
                if k == "block"
                    && (cli.bind_addresses
                        || cli.private
                        || cli.rate.is_some()
                        || cli.uplink.is_some()) =>
            {
                Err("--bind-addresses, --private, --rate and --uplink are for net devices".into())
            }
            Some((k, rest)) if k == "block" => match rest.split_first() {
                Some((file, members)) => {
                    Ok(Action::CreateBlock(PathBuf::from(file), members.to_vec()))
                }
                None => {
                    Err("--create block needs a FILE or DEVICE (then the member domains)".into())
                }
            },
            Some((k, _)) => Err(format!("--create {k}: the kinds are net and block")),
            None => Err("--create needs a kind: net or block".into()),
        };
    }
    let pair = |v: &Vec<String>| (v[0].clone(), v[1].clone());
    if let Some(v) = &cli.add {
        let (n, d) = pair(v);
        return Ok(Action::Add(n, d));
    }
    if let Some(v) = &cli.remove {
        let (n, d) = pair(v);
        return Ok(Action::Remove(n, d));
    }
    if let Some(n) = &cli.destroy {
        return Ok(Action::Destroy(n.clone()));
    }
    if let Some(v) = &cli.attach_uplink {
        let (n, d) = pair(v);
        let device = d
            .parse::<u16>()
            .map_err(|_| format!("--attach-uplink {n} {d}: the device is a number (0..=65535)"))?;
        return Ok(Action::AttachUplink(n, device));
    }
    if let Some(n) = &cli.detach_uplink {
        return Ok(Action::DetachUplink(n.clone()));
    }
    if cli.list {
        return Ok(Action::List);
    }
    Err("nothing to do: give a command (vdevice --help lists them)".into())
}

/// Checks `action` against what it names before any of Xen's devices is
/// opened: the record (a device name), then the running domains (`xl
/// list`). (`seed` checks a file to serve first, before taking the
/// record's lock.) Bad input is reported as such on any host.
fn check_first(
    action: &Action,
    record: &Record,
    opts: &CreateOpts,
    host: &mut dyn Host,
) -> Result<(), Box<dyn std::error::Error>> {
    match action {
        Action::Add(name, _)
        | Action::Remove(name, _)
        | Action::Destroy(name)
        | Action::AttachUplink(name, _)
        | Action::DetachUplink(name) => {
            admin::recorded(record, name)?;
        }
        _ => {}
    }
    if matches!(action, Action::List | Action::Destroy(_)) {
        return Ok(());
    }
    let domains = host.domains().map_err(|e| {
        format!("cannot check the domains named: listing the running domains failed: {e}")
    })?;
    match action {
        Action::CreateNet(members) => {
            admin::check_create(record, &domains, opts, None, members)?;
        }
        Action::CreateBlock(source, members) => {
            admin::check_create(record, &domains, opts, Some(source), members)?;
        }
        Action::Add(name, dom) => {
            admin::check_add(record, &domains, name, dom)?;
        }
        Action::Remove(name, dom) => {
            admin::check_remove(record, &domains, name, dom)?;
        }
        Action::AttachUplink(name, device) => {
            let up = Uplink {
                device: *device,
                dhcp_server: false,
            };
            admin::check_uplink(record, &domains, name, Some(up))?;
        }
        Action::DetachUplink(name) => {
            admin::check_uplink(record, &domains, name, None)?;
        }
        Action::List | Action::Destroy(_) => {}
    }
    Ok(())
}

fn print_list(views: &[admin::DeviceView], json: bool) -> Result<(), Box<dyn std::error::Error>> {
    if json {
        println!("{}", serde_json::to_string_pretty(views)?);
    } else if views.is_empty() {
        println!("no devices");
    } else {
        for v in views {
            print!("{v}");
        }
    }
    Ok(())
}

/// Runs one of the seed's commands under the record's lock; the record is
/// saved only if the command succeeded. Its input is checked before Xen's
/// devices are opened; `--list` without them shows the record, the live
/// state marked unavailable.
fn seed(action: &Action, cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let opts = CreateOpts {
        backend: cli.with_backend.clone(),
        features: cli.with_features,
        pages: cli.with_pages,
        read_only: cli.ro,
        bind_addresses: cli.bind_addresses,
        private: cli.private,
        rate: cli
            .rate
            .as_deref()
            .map(vdevice::record::NetRate::parse)
            .transpose()?,
        addresses: ip_options(&cli.ips)?,
        uplink: cli.uplink.map(|device| Uplink {
            device,
            dhcp_server: cli.dhcp_server,
        }),
        macs: mac_options(&cli.macs)?,
    };
    if let Action::CreateBlock(source, _) = action {
        admin::check_source(source)?;
    }
    let file = RecordFile::lock(&RecordFile::path_from(cli.record.clone()))?;
    let mut record = file.load()?;
    let mut host = XlHost;
    check_first(action, &record, &opts, &mut host)?;
    let platform = match LinuxXen::open(DOM0) {
        Ok(p) => p,
        Err(e) if matches!(action, Action::List) => {
            let why = format!("cannot open Xen's devices: {e}");
            print_list(&admin::list_unavailable(&record, &why), cli.json)?;
            eprintln!(
                "vdevice: the record {} as saved; the live state is unavailable ({why})",
                file.path().display()
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut tool = Tool {
        platform,
        lookup: XenstoreLookup,
        timeout_ns: cli.timeout.saturating_mul(1_000_000_000),
    };
    let mut admin = Admin {
        tool: &mut tool,
        host: &mut host,
    };
    // Progress goes to stderr: stdout is the device name (or the list).
    let mut log = |s: &str| eprintln!("{s}");
    match action {
        Action::List => {
            let views = admin.list(&record)?;
            return print_list(&views, cli.json);
        }
        Action::CreateNet(members) => {
            let name = admin.create_net(&mut record, &opts, members, &mut log)?;
            file.save(&record)?;
            println!("{name}");
        }
        Action::CreateBlock(source, members) => {
            let name = admin.create_block(&mut record, &opts, source, members, &mut log)?;
            file.save(&record)?;
            println!("{name}");
        }
        Action::Add(name, dom) => {
            let mac = opts.macs.first().map(|(_, m)| m.as_str());
            admin.add_with_mac(&mut record, name, dom, mac, &mut log)?;
            file.save(&record)?;
        }
        Action::Remove(name, dom) => {
            admin.remove(&mut record, name, dom, &mut log)?;
            file.save(&record)?;
        }
        Action::Destroy(name) => {
            admin.destroy(&mut record, name, &mut log)?;
            file.save(&record)?;
        }
        Action::AttachUplink(name, device) => {
            let up = Uplink {
                device: *device,
                dhcp_server: cli.dhcp_server,
            };
            admin.attach_uplink(&mut record, name, up, &mut log)?;
            file.save(&record)?;
        }
        Action::DetachUplink(name) => {
            admin.detach_uplink(&mut record, name, &mut log)?;
            file.save(&record)?;
        }
    }
    Ok(())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts `xenstore-watch PATH`; each line it prints (one per firing) is
/// sent on `tx`. A watcher that ends is reported once and the daemon goes
/// on polling.
fn watch(
    path: &'static str,
    tx: mpsc::Sender<&'static str>,
) -> std::io::Result<std::process::Child> {
    let mut child = Command::new("xenstore-watch")
        .arg(path)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if line.is_err() || tx.send(path).is_err() {
                break;
            }
        }
        let _ = tx.send("watcher-ended");
    });
    Ok(child)
}

fn run_daemon(
    tool: &mut Tool<LinuxXen, XenstoreLookup>,
    path: &Path,
    forget_after: u64,
    retry: u64,
    once: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let (tx, rx) = mpsc::channel();
    let mut watchers = Vec::new();
    if !once {
        for p in ["@introduceDomain", "@releaseDomain"] {
            match watch(p, tx.clone()) {
                Ok(c) => watchers.push(c),
                Err(e) => {
                    eprintln!("vdevice daemon: cannot watch {p} ({e}); polling every {retry} s")
                }
            }
        }
        println!(
            "vdevice daemon: record {}, watching @introduceDomain and @releaseDomain",
            path.display()
        );
    }
    let mut host = XlHost;
    let mut polling = watchers.len() < 2;
    let mut repeats = Repeats::default();
    loop {
        let pass = {
            let file = RecordFile::lock(path)?;
            let mut record = file.load()?;
            let mut log = |s: &str| {
                if repeats.fresh(s) {
                    println!("vdevice daemon: {s}");
                }
            };
            let pass = daemon::reconcile(
                tool,
                &mut host,
                &mut record,
                now_s(),
                forget_after,
                &mut log,
            );
            match pass {
                Ok(pass) => {
                    if pass.changed {
                        file.save(&record)?;
                    }
                    pass
                }
                Err(e) => {
                    println!("vdevice daemon: pass failed: {e}");
                    daemon::Pass {
                        changed: false,
                        pending: true,
                    }
                }
            }
        };
        repeats.end_pass();
        if once {
            return Ok(());
        }
        // Woken by a watch; while something is pending, or without
        // watches, also every `retry` seconds.
        let wait = if pass.pending || polling {
            Duration::from_secs(retry.max(1))
        } else {
            Duration::from_secs(3600)
        };
        match rx.recv_timeout(wait) {
            Ok("watcher-ended") => {
                eprintln!("vdevice daemon: a xenstore watcher ended; polling every {retry} s");
                polling = true;
            }
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => polling = true,
        }
        // Domains come and go in bursts (a reboot releases and introduces):
        // one pass for the burst.
        while let Ok(m) = rx.recv_timeout(Duration::from_millis(200)) {
            if m == "watcher-ended" {
                polling = true;
            }
        }
    }
}

/// The daemon's log without its retries: a line the previous pass said
/// too (a domain still not ready, a step still failing) is not repeated.
#[derive(Default)]
struct Repeats {
    said: HashSet<String>,
    saying: HashSet<String>,
}

impl Repeats {
    /// Whether to print `line` in this pass.
    fn fresh(&mut self, line: &str) -> bool {
        self.saying.insert(line.to_string());
        !self.said.contains(line)
    }

    fn end_pass(&mut self) {
        self.said = std::mem::take(&mut self.saying);
    }
}

/// The host as `xl` and xenstore show it in dom0.
struct XlHost;

fn run_tool(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The backend's vbd device ids, in xenstore's order (blkback-uk's disk
/// order).
fn vbds(backend: DomId) -> Vec<u32> {
    run_tool(
        "xenstore-list",
        &[&format!("/local/domain/{backend}/device/vbd")],
    )
    .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
    .unwrap_or_default()
}

/// `xvd<letter>`'s vbd device id (major 202, 16 minors per disk).
fn xvd_devid(letter: u8) -> u32 {
    202 * 256 + u32::from(letter - b'a') * 16
}

impl Host for XlHost {
    fn domains(&mut self) -> Result<Vec<DomainInfo>, String> {
        let out = run_tool("xl", &["list"])?;
        Ok(parse_xl_list(&out))
    }

    fn attach_disk(
        &mut self,
        backend: DomId,
        source: &Path,
        read_only: bool,
    ) -> Result<AttachedDisk, String> {
        let target = source.to_str().ok_or("the path is not UTF-8")?;
        if target.contains(',') {
            return Err("xl cannot take a path with a comma".into());
        }
        let before = vbds(backend);
        let letter = (b'b'..=b'z')
            .find(|&l| !before.contains(&xvd_devid(l)))
            .ok_or("the backend has no free xvd name")?;
        let vdev = format!("xvd{}", letter as char);
        let access = if read_only { "ro" } else { "rw" };
        run_tool(
            "xl",
            &[
                "block-attach",
                &backend.to_string(),
                &format!("format=raw,vdev={vdev},access={access},target={target}"),
            ],
        )?;
        let devid = xvd_devid(letter);
        match vbds(backend).iter().position(|&d| d == devid) {
            Some(i) => Ok(AttachedDisk {
                vdev,
                index: i as u64,
            }),
            None => {
                // Not listed: the backend cannot have numbered it.
                let _ = run_tool("xl", &["block-detach", &backend.to_string(), &vdev]);
                Err(format!(
                    "{vdev} did not appear under the backend's device/vbd"
                ))
            }
        }
    }
}

/// `xl list`'s table: a header, then `NAME ID MEM VCPUS STATE TIME`.
fn parse_xl_list(out: &str) -> Vec<DomainInfo> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            let domid = f.next()?.parse().ok()?;
            Some(DomainInfo {
                domid,
                name: name.to_string(),
            })
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_line_said_again_in_the_next_pass_is_not_repeated() {
        let mut r = Repeats::default();
        assert!(r.fresh("vd-b (5) has not published its vdevice page yet"));
        r.end_pass();
        assert!(!r.fresh("vd-b (5) has not published its vdevice page yet"));
        assert!(r.fresh("vd-b (5) is connected again"));
        r.end_pass();
        // Gone for a pass, then said again: printed again.
        r.end_pass();
        assert!(r.fresh("vd-b (5) has not published its vdevice page yet"));
    }

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vdevice").chain(args.iter().copied()))
    }

    #[test]
    fn macs_go_with_create_net_or_add_each_checked() {
        let ok = |a: &[&str]| cli_actions(&parse(a).unwrap());
        assert!(ok(&["--create", "net", "a", "--mac", "a=02:00:00:00:00:01"]).is_ok());
        assert!(ok(&["--add", "net0", "c", "--mac", "c=02:00:00:00:00:0c"]).is_ok());
        let err = |a: &[&str]| ok(a).err().expect("refused");
        assert!(err(&["--create", "net", "a", "--mac", "a"]).contains("MEMBER=MAC"));
        assert!(err(&["--create", "net", "a", "--mac", "a=01:00:5e:00:00:01"]).contains("group"));
        assert!(err(&[
            "--create",
            "block",
            "/f",
            "a",
            "--mac",
            "a=02:00:00:00:00:01"
        ])
        .contains("--mac goes with --create net or --add"));
        assert!(
            err(&["--remove", "net0", "a", "--mac", "a=02:00:00:00:00:01"])
                .contains("--mac goes with")
        );
        assert!(err(&["--add", "net0", "c", "--mac", "d=02:00:00:00:00:0d"])
            .contains("--mac names c only"));
    }

    #[test]
    fn the_seeds_spelling_parses() {
        let c = parse(&["--create", "net", "0", "guest", "2"]).unwrap();
        assert!(matches!(cli_actions(&c), Ok(Action::CreateNet(m)) if m == ["0", "guest", "2"]));
        let c = parse(&["--create", "block", "/f", "1", "--ro"]).unwrap();
        assert!(c.ro);
        let c = parse(&["--ro", "--create", "block", "/f", "1", "2"]).unwrap();
        assert!(
            matches!(cli_actions(&c), Ok(Action::CreateBlock(f, m)) if f == Path::new("/f") && m == ["1", "2"])
        );
        let c = parse(&["--add", "net0", "guest"]).unwrap();
        assert!(matches!(cli_actions(&c), Ok(Action::Add(n, d)) if n == "net0" && d == "guest"));
        // Port policy: net only.
        let c = parse(&["--create", "net", "a", "--bind-addresses", "--private"]).unwrap();
        assert!(c.bind_addresses && c.private);
        assert!(matches!(cli_actions(&c), Ok(Action::CreateNet(_))));
        let c = parse(&[
            "--create",
            "net",
            "a",
            "--bind-addresses",
            "--ip",
            "a=10.1.0.5/32",
            "--ip",
            "a=2001:db8::/64",
        ])
        .unwrap();
        assert_eq!(ip_options(&c.ips).unwrap().len(), 2);
        // --ip needs --bind-addresses, and a member and a network.
        assert!(parse(&["--create", "net", "a", "--ip", "a=10.1.0.5/32"]).is_err());
        let c = parse(&[
            "--create",
            "net",
            "a",
            "--bind-addresses",
            "--ip",
            "10.1.0.5/32",
        ])
        .unwrap();
        assert!(cli_actions(&c).is_err());
        let c = parse(&["--create", "block", "/f", "a", "--private"]).unwrap();
        assert_eq!(
            cli_actions(&c).err().as_deref(),
            Some("--bind-addresses, --private, --rate and --uplink are for net devices")
        );
        // The uplink: with --create net, or on an existing LAN.
        let c = parse(&["--create", "net", "a", "b", "--uplink", "0"]).unwrap();
        assert_eq!(c.uplink, Some(0));
        assert!(matches!(cli_actions(&c), Ok(Action::CreateNet(m)) if m.len() == 2));
        let c = parse(&["--create", "block", "/f", "a", "--uplink", "0"]).unwrap();
        assert!(cli_actions(&c).is_err());
        let c = parse(&["--list", "--uplink", "0"]);
        assert!(c.is_err() || cli_actions(&c.unwrap()).is_err());
        assert!(parse(&["--create", "net", "a", "--uplink", "x"]).is_err());
        let c = parse(&["--create", "net", "a", "--dhcp-server"]).unwrap();
        assert!(cli_actions(&c).is_err(), "--dhcp-server without an uplink");
        assert!(matches!(
            cli_actions(&parse(&["--attach-uplink", "net1", "2", "--dhcp-server"]).unwrap()),
            Ok(Action::AttachUplink(n, 2)) if n == "net1"
        ));
        assert!(cli_actions(&parse(&["--attach-uplink", "net1", "eth0"]).unwrap()).is_err());
        assert!(matches!(
            cli_actions(&parse(&["--detach-uplink", "net1"]).unwrap()),
            Ok(Action::DetachUplink(n)) if n == "net1"
        ));
        assert!(parse(&["--detach-uplink", "net1", "--list"]).is_err());
        let c = parse(&["--list", "--private"]);
        assert!(c.is_err() || cli_actions(&c.unwrap()).is_err());
        assert!(matches!(
            cli_actions(&parse(&["--list", "--json"]).unwrap()),
            Ok(Action::List)
        ));
        assert!(
            matches!(cli_actions(&parse(&["--destroy", "blk0"]).unwrap()), Ok(Action::Destroy(n)) if n == "blk0")
        );
        // One action at a time, and not with a subcommand.
        assert!(parse(&["--list", "--destroy", "net0"]).is_err());
        assert!(parse(&["--timeout", "60", "show", "1"]).is_ok());
        assert!(parse(&["daemon", "--timeout", "60", "--record", "/r"]).is_ok());
        assert!(parse(&["--add", "net0"]).is_err());
        assert!(cli_actions(&parse(&["--create", "tape", "1"]).unwrap()).is_err());
        assert!(cli_actions(&parse(&["--create", "block"]).unwrap()).is_err());
        // The old spelling still works.
        assert!(matches!(
            parse(&["create", "net", "--backend", "1", "3"])
                .unwrap()
                .cmd,
            Some(Cmd::Create { .. })
        ));
    }

    #[test]
    fn every_example_of_the_help_parses() {
        let mut n = 0;
        for line in EXAMPLES.lines() {
            let Some(cmd) = line.trim_start().strip_prefix("vdevice ") else {
                continue;
            };
            let args: Vec<&str> = cmd.split('#').next().unwrap().split_whitespace().collect();
            let cli = parse(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            if cli.cmd.is_none() {
                assert!(cli_actions(&cli).is_ok(), "{line}");
            }
            n += 1;
        }
        assert!(n >= 15, "only {n} examples found");
    }

    #[test]
    fn xl_list_names_and_ids() {
        let out = "Name                                        ID   Mem VCPUs\tState\tTime(s)\n\
Domain-0                                     0  1024     2     r-----      12.3\n\
netback-uk                                   3    16     1     -b----       0.4\n";
        let d = parse_xl_list(out);
        assert_eq!(d.len(), 2);
        assert_eq!((d[1].domid, d[1].name.as_str()), (3, "netback-uk"));
        assert_eq!(xvd_devid(b'a'), 51712);
        assert_eq!(xvd_devid(b'b'), 51728);
    }
}
