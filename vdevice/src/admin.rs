//! The administrator's commands over named devices (the seed's spelling:
//! `--create`, `--add`, `--remove`, `--destroy`, `--list`): each checks
//! its input against the running domains and the record, makes its
//! changes one acknowledged step at a time, and either completes every
//! step or undoes the ones it made. The record (in memory here; the caller
//! saves it) changes only when the command succeeds.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use share_hal::platform::{DomId, Platform};
use share_hal::wire::stats::{NET_COUNTERS, UPLINK_COUNTERS};
use share_hal::wire::vdevice::{flags, status, EntryRepr, Kind, Role, UplinkRepr};

use crate::host::{by_name, resolve, DomainInfo, Host};
use crate::record::{host_mac, mac_text, parse_mac, MemberMac, NetRate, Uplink};
use crate::record::{Device, Domain, Record, RecordError, What};
use crate::{
    is_port_entry, lan_param, same_device, status_name, DeviceSpec, Listing, Log, Lookup, Tool,
    ToolError,
};
use share_hal::wire::vdevice::PolicyItem;

/// The backend a new LAN goes to unless `--backend` names another.
pub const NETBACK: &str = "netback-uk";
/// The backend a new disk goes to unless `--backend` names another.
pub const BLKBACK: &str = "blkback-uk";

/// Net: CSUM_BLANK | DATA_VALIDATED | GSO (docs/protocol.md).
pub const NET_FEATURES: u32 = 0xb;
/// Disk: FLUSH | DISCARD | FUA | INDIRECT.
pub const DISK_FEATURES: u32 = 0xf;
pub const NET_PAGES: u32 = 258;
pub const DISK_PAGES: u32 = 34;

/// What went wrong, naming the domain or the device.
#[derive(Debug)]
pub enum AdminError {
    /// No running domain has this id or name.
    UnknownDomain(String),
    /// No device of this name in the record.
    UnknownDevice(String),
    /// The backend domain is not running.
    BackendNotRunning(String),
    /// The file or device to serve cannot be used.
    NoSource {
        path: PathBuf,
        detail: String,
    },
    /// Another device already serves this file.
    AlreadyServed {
        path: PathBuf,
        device: String,
    },
    /// A domain named twice, or already a member.
    Duplicate {
        device: String,
        member: String,
    },
    /// A domain that is not a member of the device.
    NotMember {
        device: String,
        member: String,
    },
    /// A domain named as both backend and member.
    SelfServe(String),
    /// A read-write disk has one member.
    Writer {
        device: String,
        member: String,
    },
    /// The host refused (giving a disk, listing domains).
    Host(String),
    /// An option that does not hold (said before anything changes).
    Usage(String),
    /// A step on a domain's page failed; what was done was undone. `who`
    /// is that domain's name, when known.
    Step {
        device: String,
        err: ToolError,
        who: Option<String>,
    },
    Record(RecordError),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::UnknownDomain(d) => write!(f, "no running domain has the id or name {d:?}"),
            AdminError::UnknownDevice(n) => write!(f, "no device named {n:?} (see vdevice --list)"),
            AdminError::BackendNotRunning(b) => {
                write!(f, "the backend domain {b:?} is not running")
            }
            AdminError::NoSource { path, detail } => {
                write!(f, "{}: {detail}", path.display())
            }
            AdminError::AlreadyServed { path, device } => write!(
                f,
                "{} is already served as {device}; give it more members with vdevice --add {device} DOM",
                path.display()
            ),
            AdminError::Duplicate { device, member } => {
                write!(f, "domain {member} is already a member of {device}")
            }
            AdminError::NotMember { device, member } => {
                write!(f, "domain {member} is not a member of {device}")
            }
            AdminError::SelfServe(d) => {
                write!(f, "domain {d} cannot be a member of a device it serves")
            }
            AdminError::Writer { device, member } => write!(
                f,
                "{device} is a read-write disk and domain {member} already has it; a disk shared \
                 by several domains is made read-only (--ro)"
            ),
            AdminError::Host(e) | AdminError::Usage(e) => write!(f, "{e}"),
            AdminError::Step { device, err, who } => {
                write!(f, "{device}: {err}")?;
                if let Some(name) = who {
                    write!(f, " (domain {} is {name})", err.domid())?;
                }
                write!(f, "; every step made was undone")
            }
            AdminError::Record(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<RecordError> for AdminError {
    fn from(e: RecordError) -> Self {
        AdminError::Record(e)
    }
}

/// Options of `--create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// The backend domain (id or name); default netback-uk / blkback-uk.
    pub backend: Option<String>,
    pub features: Option<u32>,
    pub pages: Option<u32>,
    /// Block: a read-only disk, shareable by many.
    pub read_only: bool,
    /// Net: each port's IP sources and ARP senders bound to its addresses.
    pub bind_addresses: bool,
    /// Net: ports reach netback-uk's endpoint, not each other.
    pub private: bool,
    /// Net: what each member may send.
    pub rate: Option<NetRate>,
    /// Net: (member as typed: name or id, `ADDR/PREFIX`) each member may
    /// send from besides its leases.
    pub addresses: Vec<(String, String)>,
    /// Net: the LAN's uplink, a network device of the backend.
    pub uplink: Option<Uplink>,
    /// Net: (member as typed: name or id, `xx:xx:xx:xx:xx:xx`) port MACs.
    /// On an uplinked LAN the others get [`crate::record::host_mac`]s.
    pub macs: Vec<(String, String)>,
}

/// A device of `backend` that a recorded LAN other than `except` has as
/// its uplink (one LAN per uplink).
fn uplink_taken<'r>(
    record: &'r Record,
    backend: &str,
    device: u16,
    except: Option<&str>,
) -> Option<&'r Device> {
    record.devices.iter().find(|d| {
        d.backend.name == backend
            && Some(d.name.as_str()) != except
            && matches!(&d.what, What::Net { uplink: Some(u), .. } if u.device == device)
    })
}

fn uplink_in_use(device: u16, other: &Device) -> AdminError {
    AdminError::Usage(format!(
        "the backend's network device {device} is already the uplink of {} (one LAN per uplink)",
        other.name
    ))
}

/// The `--ip` networks, checked and given to the members by name; an
/// unknown member or a malformed network is refused before anything
/// changes.
fn assigned(
    addresses: &[(String, String)],
    members: &[DomainInfo],
) -> Result<Vec<crate::record::Assigned>, AdminError> {
    let mut out: Vec<crate::record::Assigned> = Vec::new();
    for (who, net) in addresses {
        let Some(m) = resolve(members, who) else {
            return Err(AdminError::Usage(format!(
                "--ip {who}={net}: {who} is not one of the LAN's members"
            )));
        };
        crate::record::parse_net(0, 0, net).map_err(AdminError::Usage)?;
        if out.iter().filter(|a| a.member == m.name).count() >= crate::record::MAX_ADDRESSES {
            return Err(AdminError::Usage(format!(
                "--ip: at most {} networks for {}",
                crate::record::MAX_ADDRESSES,
                m.name
            )));
        }
        out.push(crate::record::Assigned {
            member: m.name.clone(),
            net: net.clone(),
        });
    }
    Ok(out)
}

/// The members' port MACs: those `--mac` named, then on an uplinked LAN a
/// [`host_mac`] for each other member. A MAC twice, or a member twice, is
/// refused.
fn member_macs(
    given: &[(String, String)],
    members: &[DomainInfo],
    uplinked: bool,
    host_id: &str,
    device: &str,
    mut taken: Vec<MemberMac>,
) -> Result<Vec<MemberMac>, AdminError> {
    for (who, text) in given {
        let Some(m) = resolve(members, who) else {
            return Err(AdminError::Usage(format!(
                "--mac {who}={text}: {who} is not one of the members named"
            )));
        };
        let mac = mac_text(parse_mac(text).map_err(|e| AdminError::Usage(format!("--mac: {e}")))?);
        if let Some(t) = taken.iter().find(|t| t.member == m.name || t.mac == mac) {
            return Err(AdminError::Usage(format!(
                "--mac {who}={text}: {} already has {}",
                t.member, t.mac
            )));
        }
        taken.push(MemberMac {
            member: m.name.clone(),
            mac,
        });
    }
    if uplinked {
        for m in members {
            if !taken.iter().any(|t| t.member == m.name) {
                taken.push(MemberMac {
                    member: m.name.clone(),
                    mac: mac_text(host_mac(host_id, device, &m.name)),
                });
            }
        }
    }
    Ok(taken)
}

/// Member `member`'s port MAC in the record, if it has one.
fn recorded_mac(dev: &Device, member: &str) -> Option<String> {
    match &dev.what {
        What::Net { macs, .. } => macs
            .iter()
            .find(|m| m.member == member)
            .map(|m| m.mac.clone()),
        What::Block { .. } => None,
    }
}

/// The entry spec of a recorded device for one of its members: [`spec`]
/// with the networks assigned to that member.
pub fn spec_for(dev: &Device, member: &str) -> DeviceSpec {
    let mut s = spec(dev);
    if let What::Net {
        lan,
        addresses,
        macs,
        ..
    } = &dev.what
    {
        if let Some(mac) = macs
            .iter()
            .find(|m| m.member == member)
            .and_then(|m| parse_mac(&m.mac).ok())
        {
            s.param = crate::port_param(mac, *lan);
        }
        let mine = addresses
            .iter()
            .filter(|a| a.member == member)
            .filter_map(|a| crate::record::parse_net(*lan, 0, &a.net).ok());
        for (slot, item) in s.ips.iter_mut().zip(mine) {
            *slot = Some(item.item);
        }
    }
    s
}

/// The entry spec of a recorded device.
pub fn spec(dev: &Device) -> DeviceSpec {
    match &dev.what {
        What::Net {
            lan,
            bind_addresses,
            private,
            rate,
            ..
        } => DeviceSpec {
            ips: crate::NO_IPS,
            rate: rate.map(|r| PolicyItem::Rate {
                kbit_per_sec: r.kbit_per_sec,
                burst_bytes: r.burst_bytes,
                frames_per_sec: 0,
            }),
            kind: Kind::Network,
            subtype: dev.features,
            numpages: dev.pages,
            flags: if *bind_addresses {
                flags::BIND_ADDRESSES
            } else {
                0
            } | if *private { flags::PRIVATE } else { 0 },
            param: lan_param(*lan),
        },
        What::Block {
            read_only, disk, ..
        } => DeviceSpec {
            kind: Kind::Disk,
            subtype: dev.features,
            numpages: dev.pages,
            flags: if *read_only { flags::READ_ONLY } else { 0 },
            param: *disk,
            rate: None,
            ips: crate::NO_IPS,
        },
    }
}

/// The commands, over a tool (the pages) and a host (the domains).
pub struct Admin<'a, P: Platform, L: Lookup, H: Host> {
    pub tool: &'a mut Tool<P, L>,
    pub host: &'a mut H,
}

/// The backend named (or the default), running.
fn backend(
    domains: &[DomainInfo],
    arg: Option<&str>,
    default: &str,
) -> Result<DomainInfo, AdminError> {
    match arg {
        Some(a) => resolve(domains, a)
            .cloned()
            .ok_or_else(|| AdminError::BackendNotRunning(a.to_string())),
        None => by_name(domains, default)
            .cloned()
            .ok_or_else(|| AdminError::BackendNotRunning(default.to_string())),
    }
}

/// The members named, running, each once, none the backend.
fn members(
    domains: &[DomainInfo],
    backend: &DomainInfo,
    device: &str,
    args: &[String],
) -> Result<Vec<DomainInfo>, AdminError> {
    let mut out: Vec<DomainInfo> = Vec::new();
    for a in args {
        let d = resolve(domains, a).ok_or_else(|| AdminError::UnknownDomain(a.clone()))?;
        if d.domid == backend.domid {
            return Err(AdminError::SelfServe(describe(d)));
        }
        if out.iter().any(|o| o.domid == d.domid) {
            return Err(AdminError::Duplicate {
                device: device.to_string(),
                member: describe(d),
            });
        }
        out.push(d.clone());
    }
    Ok(out)
}

/// The file or block device `--create block` is to serve: its canonical
/// path. It must exist and not be a directory. Needs neither Xen nor the
/// record, so it is checked first.
pub fn check_source(source: &Path) -> Result<PathBuf, AdminError> {
    let path = source.canonicalize().map_err(|e| AdminError::NoSource {
        path: source.to_path_buf(),
        detail: e.to_string(),
    })?;
    let meta = std::fs::metadata(&path).map_err(|e| AdminError::NoSource {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    if meta.is_dir() {
        return Err(AdminError::NoSource {
            path,
            detail: "a directory, not a file or block device".into(),
        });
    }
    Ok(path)
}

/// A `--create` checked against the record and the running domains.
#[derive(Debug)]
pub struct NewDevice {
    /// `net0`, `blk1`, ...
    pub name: String,
    /// Net: its LAN id.
    pub lan: u16,
    /// Block: the canonical path of its file.
    pub source: Option<PathBuf>,
    pub backend: DomainInfo,
    pub members: Vec<DomainInfo>,
}

/// Everything `--create net` (`source` None) or `--create block SOURCE`
/// checks before its first step: the file, the backend running, each
/// member running, named once and not the backend, one member for a
/// read-write disk, a file no other device serves. Needs no Xen device,
/// only the record and the running domains (`xl list`).
pub fn check_create(
    record: &Record,
    domains: &[DomainInfo],
    opts: &CreateOpts,
    source: Option<&Path>,
    member_args: &[String],
) -> Result<NewDevice, AdminError> {
    let Some(source) = source else {
        let backend = backend(domains, opts.backend.as_deref(), NETBACK)?;
        if let Some(u) = opts.uplink {
            if let Some(other) = uplink_taken(record, &backend.name, u.device, None) {
                return Err(uplink_in_use(u.device, other));
            }
        }
        let (name, lan) = record.free_name("net");
        let members = members(domains, &backend, &name, member_args)?;
        return Ok(NewDevice {
            name,
            lan,
            source: None,
            backend,
            members,
        });
    };
    let backend = backend(domains, opts.backend.as_deref(), BLKBACK)?;
    let source = check_source(source)?;
    if let Some(d) = record
        .devices
        .iter()
        .find(|d| matches!(&d.what, What::Block { source: s, .. } if *s == source))
    {
        return Err(AdminError::AlreadyServed {
            path: source,
            device: d.name.clone(),
        });
    }
    let (name, lan) = record.free_name("blk");
    let members = members(domains, &backend, &name, member_args)?;
    if !opts.read_only && members.len() > 1 {
        return Err(AdminError::Writer {
            device: name,
            member: describe(&members[0]),
        });
    }
    Ok(NewDevice {
        name,
        lan,
        source: Some(source),
        backend,
        members,
    })
}

/// Everything `--add NAME DOM` checks before its first step: the device
/// is recorded and its backend runs under the id its entries were made
/// for; DOM runs, is not the backend and not yet a member; a read-write
/// disk has no member yet. Returns the device, its backend's id and DOM.
pub fn check_add(
    record: &Record,
    domains: &[DomainInfo],
    name: &str,
    member: &str,
) -> Result<(Device, DomId, DomainInfo), AdminError> {
    let dev = recorded(record, name)?;
    let backend = live_backend(domains, &dev)
        .ok_or_else(|| AdminError::BackendNotRunning(dev.backend.name.clone()))?;
    let m = resolve(domains, member)
        .cloned()
        .ok_or_else(|| AdminError::UnknownDomain(member.to_string()))?;
    if m.domid == backend {
        return Err(AdminError::SelfServe(describe(&m)));
    }
    if dev.members.iter().any(|d| d.name == m.name) {
        return Err(AdminError::Duplicate {
            device: name.to_string(),
            member: describe(&m),
        });
    }
    if let (
        What::Block {
            read_only: false, ..
        },
        Some(first),
    ) = (&dev.what, dev.members.first())
    {
        return Err(AdminError::Writer {
            device: name.to_string(),
            member: first.name.clone(),
        });
    }
    Ok((dev, backend, m))
}

/// The LAN entry of uplink `up` of LAN `lan`.
pub fn uplink_repr(lan: u16, up: Uplink) -> UplinkRepr {
    UplinkRepr {
        lan,
        uplink: up.device,
        dhcp_server: up.dhcp_server,
    }
}

/// What `--attach-uplink NAME N` (`up` given) and `--detach-uplink NAME`
/// check first: NAME is a recorded LAN; to attach, it has no uplink, its
/// backend runs under the id its entries were made for, and no other LAN
/// of that backend has the device; to detach, it has one. Returns the
/// device, its LAN id and the backend's id (0 if not running, detach
/// only).
pub fn check_uplink(
    record: &Record,
    domains: &[DomainInfo],
    name: &str,
    up: Option<Uplink>,
) -> Result<(Device, u16, DomId), AdminError> {
    let dev = recorded(record, name)?;
    let What::Net { lan, uplink, .. } = &dev.what else {
        return Err(AdminError::Usage(format!(
            "{name} is a disk; an uplink is for a LAN"
        )));
    };
    let lan = *lan;
    match (up, uplink) {
        (Some(_), Some(have)) => {
            return Err(AdminError::Usage(format!(
                "{name} already has the uplink {} (--detach-uplink {name} first)",
                have.device
            )))
        }
        (None, None) => return Err(AdminError::Usage(format!("{name} has no uplink"))),
        _ => {}
    }
    let backend = live_backend(domains, &dev);
    if let Some(u) = up {
        if let Some(other) = uplink_taken(record, &dev.backend.name, u.device, Some(name)) {
            return Err(uplink_in_use(u.device, other));
        }
        let Some(b) = backend else {
            return Err(AdminError::BackendNotRunning(dev.backend.name.clone()));
        };
        return Ok((dev, lan, b));
    }
    Ok((dev, lan, backend.unwrap_or(0)))
}

/// What `--remove NAME DOM` checks first: the device is recorded and DOM
/// is one of its members (running or not). Returns the device and the
/// member's position in it.
pub fn check_remove(
    record: &Record,
    domains: &[DomainInfo],
    name: &str,
    member: &str,
) -> Result<(Device, usize), AdminError> {
    let dev = recorded(record, name)?;
    let running = resolve(domains, member);
    let wanted = running.map(|d| d.name.as_str()).unwrap_or(member);
    match dev.members.iter().position(|d| d.name == wanted) {
        Some(pos) => Ok((dev, pos)),
        None => Err(match running {
            Some(d) => AdminError::NotMember {
                device: name.to_string(),
                member: describe(d),
            },
            None => AdminError::UnknownDomain(member.to_string()),
        }),
    }
}

impl<P: Platform, L: Lookup, H: Host> Admin<'_, P, L, H> {
    fn domains(&mut self) -> Result<Vec<DomainInfo>, AdminError> {
        self.host.domains().map_err(AdminError::Host)
    }

    /// Connects each member; on a failure undoes those connected.
    fn connect_all(
        &mut self,
        device: &str,
        backend: DomId,
        members: &[DomainInfo],
        device_record: &Device,
        log: Log<'_>,
    ) -> Result<(), AdminError> {
        let dev = spec(device_record);
        for (i, m) in members.iter().enumerate() {
            let mine = spec_for(device_record, &m.name);
            if let Err(err) = self.tool.connect(backend, m.domid, mine, log) {
                for done in &members[..i] {
                    let _ = self.tool.disconnect_device(
                        backend,
                        done.domid,
                        dev.kind,
                        Some(dev.param),
                        log,
                    );
                }
                let who = members
                    .iter()
                    .find(|m| m.domid == err.domid())
                    .map(|m| m.name.clone());
                return Err(AdminError::Step {
                    device: device.to_string(),
                    err,
                    who,
                });
            }
        }
        Ok(())
    }

    /// `--create net DOM...`: a new LAN on the backend with these members;
    /// returns its name.
    pub fn create_net(
        &mut self,
        record: &mut Record,
        opts: &CreateOpts,
        members: &[String],
        log: Log<'_>,
    ) -> Result<String, AdminError> {
        let domains = self.domains()?;
        let NewDevice {
            name,
            lan,
            backend,
            members,
            ..
        } = check_create(record, &domains, opts, None, members)?;
        let dev = Device {
            name: name.clone(),
            what: What::Net {
                lan,
                bind_addresses: opts.bind_addresses,
                private: opts.private,
                rate: opts.rate,
                addresses: assigned(&opts.addresses, &members)?,
                uplink: opts.uplink,
                macs: member_macs(
                    &opts.macs,
                    &members,
                    opts.uplink.is_some(),
                    &self.host.machine_id(),
                    &name,
                    Vec::new(),
                )?,
            },
            backend: Domain::new(&backend.name, backend.domid),
            features: opts.features.unwrap_or(NET_FEATURES),
            pages: opts.pages.unwrap_or(NET_PAGES),
            members: members
                .iter()
                .map(|m| Domain::new(&m.name, m.domid))
                .collect(),
            stale: None,
        };
        // The uplink first: the LAN never runs without it (nor with
        // netback-uk's DHCP server answering before the network's).
        if let Some(u) = opts.uplink {
            self.tool
                .set_uplink(backend.domid, uplink_repr(lan, u), log)
                .map_err(|err| AdminError::Step {
                    device: name.clone(),
                    err,
                    who: Some(backend.name.clone()),
                })?;
        }
        if let Err(e) = self.connect_all(&name, backend.domid, &members, &dev, log) {
            if opts.uplink.is_some() {
                let _ = self.tool.clear_uplink(backend.domid, lan, log);
            }
            return Err(e);
        }
        record.devices.push(dev);
        Ok(name)
    }

    /// `--attach-uplink NAME N`: LAN NAME gets the backend's network
    /// device N as its uplink.
    pub fn attach_uplink(
        &mut self,
        record: &mut Record,
        name: &str,
        up: Uplink,
        log: Log<'_>,
    ) -> Result<(), AdminError> {
        let domains = self.domains()?;
        let (dev, lan, backend) = check_uplink(record, &domains, name, Some(up))?;
        self.tool
            .set_uplink(backend, uplink_repr(lan, up), log)
            .map_err(|err| AdminError::Step {
                device: name.to_string(),
                err,
                who: Some(dev.backend.name.clone()),
            })?;
        if let Some(What::Net { uplink, .. }) = record.device_mut(name).map(|d| &mut d.what) {
            *uplink = Some(up);
        }
        let unmade: Vec<&str> = dev
            .members
            .iter()
            .filter(|m| recorded_mac(&dev, &m.name).is_none())
            .map(|m| m.name.as_str())
            .collect();
        if !unmade.is_empty() {
            log(&format!(
                "{name}: {} keep the switch's MACs (02:58:<LAN>:<domid>), which another \
                 host's LAN may also give: on a shared network, --remove and --add them \
                 for MACs of this host",
                unmade.join(", ")
            ));
        }
        Ok(())
    }

    /// `--detach-uplink NAME`: LAN NAME is an island again (netback-uk's
    /// DHCP server answers again).
    pub fn detach_uplink(
        &mut self,
        record: &mut Record,
        name: &str,
        log: Log<'_>,
    ) -> Result<(), AdminError> {
        let domains = self.domains()?;
        let (dev, lan, _) = check_uplink(record, &domains, name, None)?;
        if let Some(b) = live_backend(&domains, &dev) {
            match self.tool.clear_uplink(b, lan, log) {
                Ok(()) | Err(ToolError::NotFound { .. }) => {}
                Err(err) => {
                    return Err(AdminError::Step {
                        device: name.to_string(),
                        err,
                        who: Some(dev.backend.name.clone()),
                    })
                }
            }
        }
        if let Some(What::Net { uplink, .. }) = record.device_mut(name).map(|d| &mut d.what) {
            *uplink = None;
        }
        Ok(())
    }

    /// `--create block SOURCE DOM...`: SOURCE given to the backend as a
    /// disk, served to these members; returns its name.
    pub fn create_block(
        &mut self,
        record: &mut Record,
        opts: &CreateOpts,
        source: &Path,
        members: &[String],
        log: Log<'_>,
    ) -> Result<String, AdminError> {
        let domains = self.domains()?;
        let new = check_create(record, &domains, opts, Some(source), members)?;
        let NewDevice {
            name,
            backend,
            members,
            ..
        } = new;
        let source = new.source.unwrap_or_else(|| source.to_path_buf());
        let attached = self
            .host
            .attach_disk(backend.domid, &source, opts.read_only)
            .map_err(|e| {
                AdminError::Host(format!(
                    "{name}: giving {} to domain {} failed: {e}",
                    source.display(),
                    describe(&backend)
                ))
            })?;
        log(&format!(
            "domain {}: has {} as {} (disk {})",
            backend.domid,
            source.display(),
            attached.vdev,
            attached.index
        ));
        let dev = Device {
            name: name.clone(),
            what: What::Block {
                source,
                read_only: opts.read_only,
                vdev: attached.vdev.clone(),
                disk: attached.index,
            },
            backend: Domain::new(&backend.name, backend.domid),
            features: opts.features.unwrap_or(DISK_FEATURES),
            pages: opts.pages.unwrap_or(DISK_PAGES),
            members: members
                .iter()
                .map(|m| Domain::new(&m.name, m.domid))
                .collect(),
            stale: None,
        };
        if let Err(e) = self.connect_all(&name, backend.domid, &members, &dev, log) {
            log(&format!(
                "domain {}: keeps {} unserved until it restarts (see Host::attach_disk)",
                backend.domid, attached.vdev
            ));
            return Err(e);
        }
        record.devices.push(dev);
        Ok(name)
    }

    /// `--add NAME DOM`.
    pub fn add(
        &mut self,
        record: &mut Record,
        name: &str,
        member: &str,
        log: Log<'_>,
    ) -> Result<(), AdminError> {
        self.add_with_mac(record, name, member, None, log)
    }

    /// `--add NAME DOM [--mac DOM=MAC]`: on a LAN, the member's port gets
    /// `mac`, or on an uplinked LAN a [`host_mac`].
    pub fn add_with_mac(
        &mut self,
        record: &mut Record,
        name: &str,
        member: &str,
        mac: Option<&str>,
        log: Log<'_>,
    ) -> Result<(), AdminError> {
        let domains = self.domains()?;
        let (mut dev, backend, m) = check_add(record, &domains, name, member)?;
        let host_id = self.host.machine_id();
        if let What::Net { uplink, macs, .. } = &mut dev.what {
            let given: Vec<(String, String)> = mac
                .map(|t| (m.name.clone(), t.to_string()))
                .into_iter()
                .collect();
            macs.retain(|t| t.member != m.name);
            *macs = member_macs(
                &given,
                std::slice::from_ref(&m),
                uplink.is_some(),
                &host_id,
                name,
                std::mem::take(macs),
            )?;
        } else if mac.is_some() {
            return Err(AdminError::Usage("--mac is for net devices".into()));
        }
        self.connect_all(name, backend, std::slice::from_ref(&m), &dev, log)?;
        if let Some(d) = record.device_mut(name) {
            d.members.push(Domain::new(&m.name, m.domid));
            d.what = dev.what;
        }
        Ok(())
    }

    /// `--remove NAME DOM`: the member leaves, the backend drops its share.
    /// A member that is not running (its entries already freed, or its id
    /// gone) only leaves the record.
    pub fn remove(
        &mut self,
        record: &mut Record,
        name: &str,
        member: &str,
        log: Log<'_>,
    ) -> Result<(), AdminError> {
        let domains = self.domains()?;
        let (dev, pos) = check_remove(record, &domains, name, member)?;
        let running = resolve(&domains, member);
        let rec_member = &dev.members[pos];
        let s = spec(&dev);
        let backend = live_backend(&domains, &dev);
        let live = running.filter(|r| Some(r.domid) == rec_member.domid);
        match (backend, live, rec_member.domid) {
            (Some(b), Some(m), _) => self
                .tool
                .disconnect_device(b, m.domid, s.kind, Some(s.param), log)
                .map_err(|err| AdminError::Step {
                    device: name.to_string(),
                    err,
                    who: None,
                })?,
            // The member is gone: free the backend's half.
            (Some(b), None, Some(old)) => {
                free_owner(self.tool, b, old, s, log).map_err(|err| AdminError::Step {
                    device: name.to_string(),
                    err,
                    who: None,
                })?
            }
            // The backend is gone (its entries went with it): the member's
            // half is freed, so nothing of it points at the dead backend.
            (None, Some(m), _) => {
                if let Some(old_b) = dev.backend.domid {
                    match self
                        .tool
                        .clear(m.domid, s.kind, Role::Member, old_b, Some(s.param))
                    {
                        Ok(()) | Err(ToolError::NotFound { .. }) => {}
                        Err(err) => {
                            return Err(AdminError::Step {
                                device: name.to_string(),
                                err,
                                who: None,
                            })
                        }
                    }
                }
            }
            _ => {}
        }
        if let Some(d) = record.device_mut(name) {
            let gone = d.members.remove(pos);
            if let What::Net { macs, .. } = &mut d.what {
                macs.retain(|m| m.member != gone.name);
            }
        }
        Ok(())
    }

    /// `--destroy NAME`: every member leaves, the backend drops the shares.
    /// (A disk's file stays given to a running backend: see
    /// [`Host::attach_disk`].) If a member refuses, the
    /// members already removed are connected again and the device stays.
    pub fn destroy(
        &mut self,
        record: &mut Record,
        name: &str,
        log: Log<'_>,
    ) -> Result<(), AdminError> {
        let domains = self.domains()?;
        let dev = recorded(record, name)?;
        let s = spec(&dev);
        let backend = live_backend(&domains, &dev);
        if let Some(b) = backend {
            let mut removed: Vec<(DomId, String)> = Vec::new();
            for m in &dev.members {
                let Some(old) = m.domid else { continue };
                let live = by_name(&domains, &m.name).is_some_and(|d| d.domid == old);
                let r = if live {
                    self.tool
                        .disconnect_device(b, old, s.kind, Some(s.param), log)
                } else {
                    free_owner(self.tool, b, old, s, log)
                };
                match r {
                    Ok(()) if live => removed.push((old, m.name.clone())),
                    Ok(()) => {}
                    Err(err) => return Err(self.undo_destroy(name, b, &dev, &removed, err, log)),
                }
            }
            if let What::Net {
                lan,
                uplink: Some(_),
                ..
            } = &dev.what
            {
                match self.tool.clear_uplink(b, *lan, log) {
                    Ok(()) | Err(ToolError::NotFound { .. }) => {}
                    Err(err) => return Err(self.undo_destroy(name, b, &dev, &removed, err, log)),
                }
            }
            if let What::Block { vdev, .. } = &dev.what {
                log(&format!(
                    "domain {b}: keeps {vdev} unserved until it restarts (its disk numbers \
                     are the order of its disks; taking one away would renumber the others)"
                ));
            }
        } else {
            // The backend is gone: free the members' halves.
            for m in &dev.members {
                let (Some(old), Some(old_b)) = (m.domid, dev.backend.domid) else {
                    continue;
                };
                if by_name(&domains, &m.name).is_some_and(|d| d.domid == old) {
                    let _ = self
                        .tool
                        .clear(old, s.kind, Role::Member, old_b, Some(s.param));
                }
            }
        }
        record.devices.retain(|d| d.name != name);
        log(&format!("{name}: destroyed"));
        Ok(())
    }

    /// A `--destroy` step failed: the members it already removed are
    /// connected again (the device stays as recorded), and the error names
    /// the device.
    fn undo_destroy(
        &mut self,
        name: &str,
        backend: DomId,
        dev: &Device,
        removed: &[(DomId, String)],
        err: ToolError,
        log: Log<'_>,
    ) -> AdminError {
        for (again, who) in removed {
            let _ = self.tool.connect(backend, *again, spec_for(dev, who), log);
        }
        AdminError::Step {
            device: name.to_string(),
            err,
            who: None,
        }
    }

    /// `--list`: each device as the domains acknowledged it.
    pub fn list(&mut self, record: &Record) -> Result<Vec<DeviceView>, AdminError> {
        let domains = self.domains()?;
        let mut views = Vec::new();
        for dev in &record.devices {
            views.push(self.view(&domains, dev));
        }
        Ok(views)
    }

    fn view(&mut self, domains: &[DomainInfo], dev: &Device) -> DeviceView {
        let s = spec(dev);
        let backend_live = live_backend(domains, dev);
        let backend_state = match (by_name(domains, &dev.backend.name), backend_live) {
            (_, Some(_)) => "running".to_string(),
            (Some(d), None) => format!("restarted as domain {}, not reconnected yet", d.domid),
            (None, None) => "not running".to_string(),
        };
        // The backend's page (and counters) once for all members.
        let backend_page: Result<(Listing, Option<crate::StatsRepr>), String> = match backend_live {
            Some(b) => match self.tool.stats(b) {
                Ok(Some((l, st))) => Ok((l, Some(st))),
                Ok(None) => self
                    .tool
                    .show(b)
                    .map(|l| (l, None))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
            None => Err("backend not running".into()),
        };
        let mut members = Vec::new();
        for m in &dev.members {
            let live = m
                .domid
                .filter(|&id| by_name(domains, &m.name).is_some_and(|d| d.domid == id));
            let mut view = MemberView {
                name: m.name.clone(),
                domid: m.domid,
                state: String::new(),
                mac: recorded_mac(dev, &m.name),
                backend_entry: None,
                member_entry: None,
                counters: None,
            };
            let owner = match (&backend_page, m.domid) {
                (Ok((l, _)), Some(id)) => find(l, s.kind, Role::Owner, id, s.param),
                _ => None,
            };
            if let Some((i, e)) = owner {
                view.backend_entry = Some(EntryView::of(i, &e));
                if let Ok((_, Some(st))) = &backend_page {
                    view.counters = st.entries.get(i as usize).map(|c| counters(s.kind, c));
                }
            }
            let member_page = match (live, backend_live.or(dev.backend.domid)) {
                (Some(id), Some(b)) => Some(
                    self.tool
                        .show(id)
                        .map(|l| find(&l, s.kind, Role::Member, b, s.param))
                        .map_err(|e| e.to_string()),
                ),
                _ => None,
            };
            if let Some(Ok(Some((i, e)))) = &member_page {
                view.member_entry = Some(EntryView::of(*i, e));
            }
            view.state = match (live, &backend_page, &member_page) {
                (None, _, _) if m.away_since.is_some() || m.domid.is_none() => {
                    "away (domain not running; the daemon reconnects it when it is back)".into()
                }
                (None, _, _) => "not running".into(),
                (_, Err(e), _) => format!("backend page unreadable: {e}"),
                (_, _, Some(Err(e))) => format!("member page unreadable: {e}"),
                (Some(_), Ok(_), Some(Ok(me))) => match (owner, me) {
                    (Some((_, o)), Some((_, me)))
                        if o.status == status::OK
                            && me.status == status::OK
                            && me.share_ref == o.share_ref =>
                    {
                        "connected".into()
                    }
                    (Some(_), Some(_)) => "entries disagree (share_ref or status)".into(),
                    (Some(_), None) => "backend serves it, member has not joined".into(),
                    (None, Some(_)) => "member entry only (backend does not serve it)".into(),
                    (None, None) => "not connected".into(),
                },
                _ => "not connected".into(),
            };
            members.push(view);
        }
        let mut view = DeviceView::of(
            dev,
            BackendView {
                name: dev.backend.name.clone(),
                domid: dev.backend.domid,
                state: backend_state,
                error: None,
            },
            members,
        );
        if let (Some(up), What::Net { lan, .. }) = (view.uplink.as_mut(), &dev.what) {
            up.state = match &backend_page {
                Err(e) => format!("backend page unreadable: {e}"),
                Ok((l, stats)) => match l
                    .used
                    .iter()
                    .find(|(_, e)| matches!(UplinkRepr::parse(e), Some(Ok(u)) if u.lan == *lan))
                {
                    Some((i, e)) => {
                        up.entry = Some(EntryView::of(*i, e));
                        up.counters = stats
                            .as_ref()
                            .and_then(|st| st.entries.get(*i as usize))
                            .map(|c| uplink_counters(c));
                        if e.status == status::OK {
                            "attached".into()
                        } else {
                            format!("refused ({})", status_name(e.status))
                        }
                    }
                    None => "not attached (the backend has no entry for it)".into(),
                },
            };
        }
        view.backend.error = backend_page.err();
        view
    }
}

/// `--list` where the live state cannot be read (no Xen, no gntdev): each
/// recorded device with its backend and members as recorded, their state
/// marked unavailable with `why`.
pub fn list_unavailable(record: &Record, why: &str) -> Vec<DeviceView> {
    let state = format!("unavailable ({why})");
    record
        .devices
        .iter()
        .map(|dev| {
            let members = dev
                .members
                .iter()
                .map(|m| MemberView {
                    name: m.name.clone(),
                    domid: m.domid,
                    state: state.clone(),
                    mac: recorded_mac(dev, &m.name),
                    backend_entry: None,
                    member_entry: None,
                    counters: None,
                })
                .collect();
            DeviceView::of(
                dev,
                BackendView {
                    name: dev.backend.name.clone(),
                    domid: dev.backend.domid,
                    state: state.clone(),
                    error: None,
                },
                members,
            )
        })
        .collect()
}

/// A copy of the recorded device `name`.
pub fn recorded(record: &Record, name: &str) -> Result<Device, AdminError> {
    record
        .device(name)
        .cloned()
        .ok_or_else(|| AdminError::UnknownDevice(name.to_string()))
}

/// The id of `dev`'s backend, if it runs under the id its entries were
/// made for.
fn live_backend(domains: &[DomainInfo], dev: &Device) -> Option<DomId> {
    by_name(domains, &dev.backend.name)
        .filter(|b| Some(b.domid) == dev.backend.domid)
        .map(|b| b.domid)
}

/// Frees the backend's owner entry for a member that is gone (a missing
/// entry is already free).
pub fn free_owner<P: Platform, L: Lookup>(
    tool: &mut Tool<P, L>,
    backend: DomId,
    member: DomId,
    s: DeviceSpec,
    log: Log<'_>,
) -> Result<(), ToolError> {
    match tool.clear(backend, s.kind, Role::Owner, member, Some(s.param)) {
        Ok(()) => {
            log(&format!(
                "domain {backend}: removed the {:?} share of domain {member} (gone)",
                s.kind
            ));
            Ok(())
        }
        Err(ToolError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn find(l: &Listing, kind: Kind, role: Role, peer: DomId, param: u64) -> Option<(u32, EntryRepr)> {
    l.used
        .iter()
        .find(|(_, e)| {
            e.kind == kind
                && e.role == role
                && e.peer == peer
                && is_port_entry(e)
                && same_device(kind, e.param, param)
        })
        .copied()
}

fn counters(kind: Kind, c: &[u64]) -> Counters {
    c.iter()
        .enumerate()
        .map(|(k, v)| {
            let name = match (kind, NET_COUNTERS.get(k)) {
                (Kind::Network, Some(n)) => n.to_string(),
                _ => format!("c{k}"),
            };
            (name, *v)
        })
        .collect()
}

fn uplink_counters(c: &[u64]) -> Counters {
    c.iter()
        .enumerate()
        .map(|(k, v)| {
            let name = UPLINK_COUNTERS
                .get(k)
                .map_or(format!("c{k}"), |n| n.to_string());
            (name, *v)
        })
        .collect()
}

fn describe(d: &DomainInfo) -> String {
    format!("{} ({})", d.domid, d.name)
}

/// A device as `--list` shows it.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    pub name: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lan: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Net: the ports' policy (`bind-addresses`, `private`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// Net: the LAN's uplink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkView>,
    pub backend: BackendView,
    pub members: Vec<MemberView>,
}

impl DeviceView {
    fn of(dev: &Device, backend: BackendView, members: Vec<MemberView>) -> DeviceView {
        let mut policy = Vec::new();
        let mut uplink_view = None;
        let (kind, lan, source, read_only, disk) = match &dev.what {
            What::Net {
                lan,
                bind_addresses,
                private,
                rate,
                addresses,
                uplink,
                macs: _,
            } => {
                uplink_view = uplink.map(|u| UplinkView {
                    device: u.device,
                    dhcp_server: u.dhcp_server,
                    state: "recorded".into(),
                    entry: None,
                    counters: None,
                });
                if *bind_addresses {
                    policy.push("bind-addresses".to_string());
                }
                if *private {
                    policy.push("private".to_string());
                }
                if let Some(r) = rate {
                    policy.push(format!("rate {r}"));
                }
                for a in addresses {
                    policy.push(format!("{} {}", a.member, a.net));
                }
                ("net", Some(*lan), None, None, None)
            }
            What::Block {
                source,
                read_only,
                disk,
                ..
            } => (
                "block",
                None,
                Some(source.display().to_string()),
                Some(*read_only),
                Some(*disk),
            ),
        };
        DeviceView {
            name: dev.name.clone(),
            kind,
            lan,
            source,
            read_only,
            policy,
            disk,
            uplink: uplink_view,
            backend,
            members,
        }
    }
}

/// A LAN's uplink as `--list` shows it: the backend's device, and its
/// entry and counters as the backend acknowledged them.
#[derive(Debug, Serialize)]
pub struct UplinkView {
    pub device: u16,
    pub dhcp_server: bool,
    pub state: String,
    pub entry: Option<EntryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
}

#[derive(Debug, Serialize)]
pub struct BackendView {
    pub name: String,
    pub domid: Option<DomId>,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One member's connection: the state both pages agree on, each side's
/// entry as acknowledged, and the backend's counters for it.
#[derive(Debug, Serialize)]
pub struct MemberView {
    pub name: String,
    pub domid: Option<DomId>,
    pub state: String,
    /// Net: the port's MAC as recorded (`--mac`, or made for an uplinked
    /// LAN); none: the switch's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub backend_entry: Option<EntryView>,
    pub member_entry: Option<EntryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
}

/// A backend's counters for one entry, in the order it publishes them
/// (a JSON object keeps that order).
#[derive(Debug, Default)]
pub struct Counters(pub Vec<(String, u64)>);

impl Counters {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

impl FromIterator<(String, u64)> for Counters {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(iter: I) -> Self {
        Counters(iter.into_iter().collect())
    }
}

impl Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Debug, Serialize)]
pub struct EntryView {
    pub index: u32,
    pub share_ref: u32,
    pub status: String,
}

impl EntryView {
    fn of(index: u32, e: &EntryRepr) -> Self {
        EntryView {
            index,
            share_ref: e.share_ref.0,
            status: status_name(e.status),
        }
    }
}

impl fmt::Display for DeviceView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.lan, &self.source) {
            (Some(lan), _) => {
                write!(f, "{}: LAN {lan}", self.name)?;
                if !self.policy.is_empty() {
                    write!(f, " ({})", self.policy.join(", "))?;
                }
            }
            (_, Some(src)) => write!(
                f,
                "{}: disk {} ({}, disk {} of the backend)",
                self.name,
                src,
                if self.read_only == Some(true) {
                    "read-only"
                } else {
                    "read-write"
                },
                self.disk.unwrap_or(0)
            )?,
            _ => write!(f, "{}", self.name)?,
        }
        let id = |d: Option<DomId>| d.map_or("-".to_string(), |d| d.to_string());
        writeln!(
            f,
            "\n  backend {} (domain {}): {}",
            self.backend.name,
            id(self.backend.domid),
            self.backend.state
        )?;
        if let Some(e) = &self.backend.error {
            if self.backend.state == "running" {
                writeln!(f, "    page: {e}")?;
            }
        }
        if let Some(u) = &self.uplink {
            write!(
                f,
                "  uplink: the backend's network device {}{}: {}",
                u.device,
                if u.dhcp_server {
                    " (netback-uk's DHCP server kept on)"
                } else {
                    ""
                },
                u.state
            )?;
            if let Some(e) = &u.entry {
                write!(f, " [backend entry {} {}]", e.index, e.status)?;
            }
            writeln!(f)?;
            if let Some(c) = &u.counters {
                let line: Vec<String> = c.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
                writeln!(f, "    {}", line.join(" "))?;
            }
        }
        if self.members.is_empty() {
            writeln!(f, "  no members")?;
        }
        for m in &self.members {
            write!(
                f,
                "  member {} (domain {}): {}",
                m.name,
                id(m.domid),
                m.state
            )?;
            if let Some(mac) = &m.mac {
                write!(f, " mac {mac}")?;
            }
            if let (Some(b), Some(me)) = (&m.backend_entry, &m.member_entry) {
                write!(
                    f,
                    " [backend entry {} {}, member entry {} {}, share_ref {}]",
                    b.index, b.status, me.index, me.status, me.share_ref
                )?;
            }
            writeln!(f)?;
            if let Some(c) = &m.counters {
                let line: Vec<String> = c.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
                writeln!(f, "    {}", line.join(" "))?;
            }
        }
        Ok(())
    }
}
