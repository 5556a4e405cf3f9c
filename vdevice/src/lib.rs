//! The dom0 tool's logic: connecting member domains to backend domains by
//! changing their vdevice pages, one acknowledged change at a time.
//!
//! Generic over the share-hal platform, so it runs unchanged over
//! `/dev/xen/*` in dom0 and over the host simulation in tests.

use std::fmt;

use share_hal::platform::{Access, DomId, GrantRef, Mapping, Platform};
use share_hal::vdevice::VdeviceClient;
pub use share_hal::wire::stats::StatsRepr;
use share_hal::wire::vdevice::{
    flags, status, Bootstrap, EntryRepr, Kind, PolicyItem, PortPolicyRepr, Role, UplinkRepr,
};
use share_hal::Error;

pub mod admin;
pub mod daemon;
pub mod host;
pub mod record;

/// Finds a domain's bootstrap value (`data/vdevice` in its xenstore home).
pub trait Lookup {
    fn bootstrap(&mut self, domid: DomId) -> Result<Bootstrap, ToolError>;
}

/// What went wrong, in words a dom0 administrator can act on.
#[derive(Debug)]
pub enum ToolError {
    /// The domain has not published its vdevice page (not running, or its
    /// kernel has no vdevice support yet).
    NoBootstrap { domid: DomId, detail: String },
    /// A share-hal operation failed.
    Share {
        domid: DomId,
        what: &'static str,
        err: Error,
    },
    /// The domain refused the change with a status code.
    Refused { domid: DomId, status: i32 },
    /// The domain did not acknowledge the change before the timeout.
    NoAck { domid: DomId, timeout_ns: u64 },
    /// An earlier change to the domain is still unacknowledged.
    Pending { domid: DomId, serial: u32 },
    /// Every entry of the domain's page is in use.
    PageFull { domid: DomId },
    /// No such device entry to remove.
    NotFound { domid: DomId, peer: DomId },
    /// A device for this pair already exists.
    Exists { domid: DomId, peer: DomId },
    /// The member has no disk entry for that disk (of that backend).
    NoDisk {
        domid: DomId,
        disk: u64,
        from: Option<DomId>,
    },
    /// The member has that disk from several backends; name the old one.
    Ambiguous {
        domid: DomId,
        disk: u64,
        peers: Vec<DomId>,
    },
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolError::NoBootstrap { domid, detail } => write!(
                f,
                "domain {domid} has not published a vdevice page ({detail}); is it running a xen-share capable kernel?"
            ),
            ToolError::Share { domid, what, err } => write!(f, "domain {domid}: {what}: {err}"),
            ToolError::Refused { domid, status } => {
                write!(f, "domain {domid} refused the change: {}", status_name(*status))
            }
            ToolError::NoAck { domid, timeout_ns } => write!(
                f,
                "domain {domid} did not acknowledge the change within {:.1} s; it stays pending and \
                 the domain's page refuses further changes until the domain acknowledges it (is the \
                 domain running and serving its vdevice port?)",
                *timeout_ns as f64 / 1e9
            ),
            ToolError::Pending { domid, serial } => write!(
                f,
                "domain {domid} has not acknowledged change {serial} yet; no further change is made \
                 to it until it does"
            ),
            ToolError::PageFull { domid } => {
                write!(f, "domain {domid}: every vdevice entry is in use")
            }
            ToolError::NotFound { domid, peer } => {
                write!(f, "domain {domid} has no device shared with domain {peer}")
            }
            ToolError::Exists { domid, peer } => {
                write!(f, "domain {domid} already has such a device shared with domain {peer}")
            }
            ToolError::NoDisk { domid, disk, from } => match from {
                Some(b) => write!(f, "domain {domid} has no disk {disk} of domain {b}"),
                None => write!(f, "domain {domid} has no disk {disk}"),
            },
            ToolError::Ambiguous { domid, disk, peers } => write!(
                f,
                "domain {domid} has disk {disk} from domains {peers:?}; say which with --from"
            ),
        }
    }
}

impl std::error::Error for ToolError {}

impl ToolError {
    /// The domain the error is about.
    pub fn domid(&self) -> DomId {
        match self {
            ToolError::NoBootstrap { domid, .. }
            | ToolError::Share { domid, .. }
            | ToolError::Refused { domid, .. }
            | ToolError::NoAck { domid, .. }
            | ToolError::Pending { domid, .. }
            | ToolError::PageFull { domid }
            | ToolError::NotFound { domid, .. }
            | ToolError::Exists { domid, .. }
            | ToolError::NoDisk { domid, .. }
            | ToolError::Ambiguous { domid, .. } => *domid,
        }
    }
}

/// A status code as a name and its meaning.
pub fn status_name(code: i32) -> String {
    let name = match code {
        status::OK => "ok",
        status::ENOENT => "ENOENT (no such share)",
        status::EIO => "EIO (I/O error)",
        status::ENOMEM => "ENOMEM (out of memory or grant entries)",
        status::EBUSY => "EBUSY (in use)",
        status::EEXIST => "EEXIST (already present)",
        status::ENODEV => "ENODEV (no such device or disk)",
        status::EINVAL => "EINVAL (entry not understood)",
        status::EOPNOTSUPP => "EOPNOTSUPP (device type or feature not supported)",
        status::ETIMEDOUT => "ETIMEDOUT",
        _ => return format!("error {code}"),
    };
    name.to_string()
}

/// A device to connect: what kind, with which features and pages.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSpec {
    pub kind: Kind,
    pub subtype: u32,
    pub numpages: u32,
    pub flags: u8,
    pub param: u64,
    /// Network: each port's rate limit, a port policy item written before
    /// the port (docs/protocol.md, "Port policy").
    pub rate: Option<PolicyItem>,
    /// Network: the networks this member may send from besides its
    /// leases (`--ip`), items written before the port too.
    pub ips: [Option<PolicyItem>; record::MAX_ADDRESSES],
}

/// A [`DeviceSpec`] without assigned networks.
pub const NO_IPS: [Option<PolicyItem>; record::MAX_ADDRESSES] = [None; record::MAX_ADDRESSES];

/// Whether `e` is a port policy item (not a device).
pub fn is_policy_item(e: &EntryRepr) -> bool {
    e.flags & flags::PORT_POLICY != 0
}

/// Whether an owner entry is a port (not a policy item, not an uplink,
/// whose peer is 0 like dom0's port).
pub fn is_port_entry(e: &EntryRepr) -> bool {
    e.flags & (flags::PORT_POLICY | flags::UPLINK) == 0
}

/// The entries of one domain's page as dom0 read them.
#[derive(Debug, Default)]
pub struct Listing {
    /// (index, entry) of each entry in use.
    pub used: Vec<(u32, EntryRepr)>,
    /// Indexes of entries the domain garbled (ignored).
    pub garbled: Vec<u32>,
}

impl Listing {
    /// The entries in use and the garbled ones, by index.
    fn of(entries: &Entries) -> Self {
        let mut listing = Listing::default();
        for (i, e) in entries.iter().enumerate() {
            match e {
                Ok(e) if e.kind != Kind::Empty => listing.used.push((i as u32, *e)),
                Ok(_) => {}
                Err(_) => listing.garbled.push(i as u32),
            }
        }
        listing
    }
}

/// Every entry of a page, each parsed or refused.
type Entries = [Result<EntryRepr, share_hal::wire::Error>];

/// One line of progress, for the log.
pub type Log<'a> = &'a mut dyn FnMut(&str);

/// The member's entry for a share the backend made for `owner`: the same
/// kind, features and pages; the port policy bits stay the backend's.
fn member_entry(owner: &EntryRepr, backend: DomId, share_ref: GrantRef) -> EntryRepr {
    EntryRepr {
        role: Role::Member,
        flags: owner.flags & !flags::NET_OWNER,
        peer: backend,
        share_ref,
        ..*owner
    }
}

/// The tool: a platform, a way to find bootstrap values, a timeout.
pub struct Tool<P: Platform, L: Lookup> {
    pub platform: P,
    pub lookup: L,
    pub timeout_ns: u64,
}

impl<P: Platform, L: Lookup> Tool<P, L> {
    fn client(&mut self, domid: DomId) -> Result<VdeviceClient<P::Mapping>, ToolError> {
        let boot = self.lookup.bootstrap(domid)?;
        VdeviceClient::attach(&mut self.platform, domid, boot).map_err(|err| ToolError::Share {
            domid,
            what: "mapping its vdevice page",
            err,
        })
    }

    /// The entries of `domid`'s page: (index, entry) of those in use, and
    /// the indexes of entries the domain garbled.
    pub fn show(&mut self, domid: DomId) -> Result<Listing, ToolError> {
        let client = self.client(domid)?;
        let snap = client.snapshot();
        let _ = client.detach(&mut self.platform);
        let snap = snap.map_err(|err| ToolError::Share {
            domid,
            what: "reading its vdevice page",
            err,
        })?;
        Ok(Listing::of(&snap.entries))
    }

    /// The counters `domid` publishes for its entries (its counter page,
    /// named in its vdevice page header), with the entries in use;
    /// `Ok(None)` if it publishes none.
    pub fn stats(&mut self, domid: DomId) -> Result<Option<(Listing, StatsRepr)>, ToolError> {
        let client = self.client(domid)?;
        let snap = client.snapshot();
        let _ = client.detach(&mut self.platform);
        let snap = snap.map_err(|err| ToolError::Share {
            domid,
            what: "reading its vdevice page",
            err,
        })?;
        let Some(gref) = snap.header.stats else {
            return Ok(None);
        };
        let page = self
            .platform
            .map(domid, &[gref], Access::ReadOnly)
            .map_err(|err| ToolError::Share {
                domid,
                what: "mapping its counter page",
                err,
            })?;
        let read = share_hal::stats::read(page.mem());
        let _ = self.platform.unmap(page);
        let stats = read.map_err(|err| ToolError::Share {
            domid,
            what: "reading its counter page",
            err,
        })?;
        Ok(Some((Listing::of(&snap.entries), stats)))
    }

    /// One change on `domid`'s page: `find` picks the entry index from the
    /// current entries.
    fn change(
        &mut self,
        domid: DomId,
        entry: &EntryRepr,
        find: &dyn Fn(&Entries) -> Result<u32, ToolError>,
    ) -> Result<EntryRepr, ToolError> {
        let mut client = self.client(domid)?;
        let result = (|| {
            let snap = client.snapshot().map_err(|err| ToolError::Share {
                domid,
                what: "reading its vdevice page",
                err,
            })?;
            // A pending change first: its entry is dom0's, not the domain's.
            if !snap.header.idle() {
                return Err(ToolError::Pending {
                    domid,
                    serial: snap.header.change_serial,
                });
            }
            let index = find(&snap.entries)?;
            let deadline = self.platform.now_ns().saturating_add(self.timeout_ns);
            let acked = client
                .change(&mut self.platform, index, entry, deadline)
                .map_err(|err| match err {
                    Error::TimedOut => ToolError::NoAck {
                        domid,
                        timeout_ns: self.timeout_ns,
                    },
                    err => ToolError::Share {
                        domid,
                        what: "changing its vdevice page",
                        err,
                    },
                })?;
            if acked.status != status::OK {
                return Err(ToolError::Refused {
                    domid,
                    status: acked.status,
                });
            }
            Ok(acked)
        })();
        let _ = client.detach(&mut self.platform);
        result
    }

    /// The owner entry `owner` (for member `owner.peer`) in `backend`'s
    /// page, in a free entry; refused if the backend already serves that
    /// kind for that member. Returns the acknowledged entry (its
    /// share_ref).
    fn serve(&mut self, backend: DomId, owner: &EntryRepr) -> Result<EntryRepr, ToolError> {
        let (kind, member, param) = (owner.kind, owner.peer, owner.param);
        self.change(backend, owner, &|entries| {
            if entries.iter().any(|e| matches!(e, Ok(e) if e.kind == kind && e.role == Role::Owner && e.peer == member && is_port_entry(e) && same_device(kind, e.param, param))) {
                return Err(ToolError::Exists { domid: backend, peer: member });
            }
            free_index(entries).ok_or(ToolError::PageFull { domid: backend })
        })
    }

    /// Connects `member` to the backend domain `backend`: the backend
    /// creates a share for the member, then the member joins it.
    pub fn connect(
        &mut self,
        backend: DomId,
        member: DomId,
        dev: DeviceSpec,
        log: Log<'_>,
    ) -> Result<(), ToolError> {
        let owner = EntryRepr {
            kind: dev.kind,
            role: Role::Owner,
            flags: dev.flags,
            subtype: dev.subtype,
            numpages: dev.numpages,
            peer: member,
            param: dev.param,
            ..EntryRepr::EMPTY
        };
        let kind = dev.kind;
        // Both domains must have published their pages before either changes.
        self.lookup.bootstrap(member)?;
        let acked = self.serve_with_policy(backend, &owner, dev.rate, &dev.ips, log)?;
        log(&format!(
            "domain {backend}: serves a {kind:?} share for domain {member} (share_ref {}, {} pages)",
            acked.share_ref.0, acked.numpages
        ));
        let joiner = member_entry(&owner, backend, acked.share_ref);
        let param = dev.param;
        let joined = self.change(member, &joiner, &|entries| {
            if entries.iter().any(|e| matches!(e, Ok(e) if e.kind == kind && e.role == Role::Member && e.peer == backend && same_device(kind, e.param, param))) {
                return Err(ToolError::Exists { domid: member, peer: backend });
            }
            free_index(entries).ok_or(ToolError::PageFull { domid: member })
        });
        match joined {
            Ok(_) => {
                log(&format!(
                    "domain {member}: joined the {kind:?} share of domain {backend}"
                ));
                Ok(())
            }
            Err(e) => {
                // Undo the backend's half so nothing is left dangling.
                log(&format!(
                    "domain {member} did not join ({e}); removing the share from domain {backend}"
                ));
                let _ = self.clear(backend, kind, Role::Owner, member, Some(param));
                Err(e)
            }
        }
    }

    /// Moves `member`'s disk `disk` to the backend domain `backend`, its
    /// server restarted under a new domain id (or a replacement): the
    /// backend makes a share for the member, with the flags, features and
    /// pages of the member's current entry, then the member's disk entry is
    /// rewritten in place with the new share. The member keeps its block
    /// device and re-issues what the old server left unanswered. `from`
    /// names the old backend when the member has disk `disk` from several.
    /// The old backend is not touched (it is gone); if the member refuses,
    /// the new backend's share is removed again and the entry stays as it
    /// was.
    pub fn reconnect_disk(
        &mut self,
        backend: DomId,
        member: DomId,
        disk: u64,
        from: Option<DomId>,
        log: Log<'_>,
    ) -> Result<(), ToolError> {
        self.reconnect_disk_as(backend, member, disk, disk, from, log)
    }

    /// [`Tool::reconnect_disk`], the disk being `new_disk` on the new
    /// backend (a file given to it again may have another index there).
    pub fn reconnect_disk_as(
        &mut self,
        backend: DomId,
        member: DomId,
        disk: u64,
        new_disk: u64,
        from: Option<DomId>,
        log: Log<'_>,
    ) -> Result<(), ToolError> {
        let is_ours = move |e: &EntryRepr| {
            e.kind == Kind::Disk
                && e.role == Role::Member
                && e.param == disk
                && from.is_none_or(|b| e.peer == b)
        };
        let listing = self.show(member)?;
        let found: Vec<&(u32, EntryRepr)> =
            listing.used.iter().filter(|(_, e)| is_ours(e)).collect();
        let (index, old) = match found.as_slice() {
            [] => {
                return Err(ToolError::NoDisk {
                    domid: member,
                    disk,
                    from,
                })
            }
            [one] => **one,
            many => {
                return Err(ToolError::Ambiguous {
                    domid: member,
                    disk,
                    peers: many.iter().map(|(_, e)| e.peer).collect(),
                })
            }
        };
        if old.peer == backend {
            return Err(ToolError::Exists {
                domid: member,
                peer: backend,
            });
        }
        let owner = EntryRepr {
            kind: Kind::Disk,
            role: Role::Owner,
            flags: old.flags,
            subtype: old.subtype,
            numpages: old.numpages,
            peer: member,
            param: new_disk,
            ..EntryRepr::EMPTY
        };
        let still = |e: &EntryRepr| is_ours(e) && e.peer == old.peer;
        let gone = || ToolError::NoDisk {
            domid: member,
            disk,
            from: Some(old.peer),
        };
        self.serve_in_place(backend, owner, None, index, &still, &gone, log)?;
        log(&format!(
            "domain {member}: disk {disk} (entry {index}) moved from domain {} to the share of domain {backend}",
            old.peer
        ));
        Ok(())
    }

    /// Gives `member`, restored from a save under a new domain id, its
    /// device of `backend` again: the backend makes a share for the new
    /// id, and the entry the member still has for the device (its own,
    /// from before the save, which names the share made for its old id) is
    /// rewritten in place with it. The member keeps its network or block
    /// device and what it had in flight. If the member refuses, the new
    /// share is removed again.
    pub fn rejoin(
        &mut self,
        backend: DomId,
        member: DomId,
        dev: DeviceSpec,
        log: Log<'_>,
    ) -> Result<(), ToolError> {
        let (kind, param) = (dev.kind, dev.param);
        let is_ours = move |e: &EntryRepr| {
            e.kind == kind
                && e.role == Role::Member
                && e.peer == backend
                && same_device(kind, e.param, param)
        };
        self.lookup.bootstrap(member)?;
        let listing = self.show(member)?;
        let Some(&(index, _)) = listing.used.iter().find(|(_, e)| is_ours(e)) else {
            return Err(ToolError::NotFound {
                domid: member,
                peer: backend,
            });
        };
        let owner = EntryRepr {
            kind,
            role: Role::Owner,
            flags: dev.flags,
            subtype: dev.subtype,
            numpages: dev.numpages,
            peer: member,
            param,
            ..EntryRepr::EMPTY
        };
        let gone = || ToolError::NotFound {
            domid: member,
            peer: backend,
        };
        self.serve_in_place(backend, owner, Some(&dev), index, &is_ours, &gone, log)?;
        log(&format!(
            "domain {member}: entry {index} rewritten in place with the new {kind:?} share of domain {backend}"
        ));
        Ok(())
    }

    /// The backend serves `owner` (for member `owner.peer`), then the
    /// member's entry `index` is rewritten in place with that share, if
    /// `still` holds for it yet (else the error `gone` makes). If the
    /// member refuses, the backend's new share is removed again.
    #[allow(clippy::too_many_arguments)]
    fn serve_in_place(
        &mut self,
        backend: DomId,
        owner: EntryRepr,
        policy: Option<&DeviceSpec>,
        index: u32,
        still: &dyn Fn(&EntryRepr) -> bool,
        gone: &dyn Fn() -> ToolError,
        log: Log<'_>,
    ) -> Result<(), ToolError> {
        let member = owner.peer;
        let (rate, ips) = policy.map_or((None, &NO_IPS[..]), |d| (d.rate, &d.ips[..]));
        let acked = self.serve_with_policy(backend, &owner, rate, ips, log)?;
        log(&format!(
            "domain {backend}: serves a {:?} share for domain {member} (share_ref {}, {} pages)",
            owner.kind, acked.share_ref.0, acked.numpages
        ));
        let joiner = member_entry(&owner, backend, acked.share_ref);
        // The entry the caller found, unless the page changed meanwhile.
        let rewritten = self.change(
            member,
            &joiner,
            &|entries| match entries.get(index as usize) {
                Some(Ok(e)) if still(e) => Ok(index),
                _ => Err(gone()),
            },
        );
        if let Err(e) = &rewritten {
            log(&format!(
                "domain {member} did not take the new share ({e}); removing it from domain {backend}"
            ));
            let _ = self.clear(backend, owner.kind, Role::Owner, member, Some(owner.param));
        }
        rewritten.map(drop)
    }

    /// Disconnects `member` from `backend`: the member leaves first, then
    /// the backend destroys the share.
    pub fn disconnect(
        &mut self,
        backend: DomId,
        member: DomId,
        kind: Kind,
        log: Log<'_>,
    ) -> Result<(), ToolError> {
        self.disconnect_device(backend, member, kind, None, log)
    }

    /// Disconnects `member` from `backend`'s device `param` (any of that
    /// kind if `None`; a network device is its LAN): the member leaves
    /// first, then the backend destroys the share.
    pub fn disconnect_device(
        &mut self,
        backend: DomId,
        member: DomId,
        kind: Kind,
        param: Option<u64>,
        log: Log<'_>,
    ) -> Result<(), ToolError> {
        self.clear(member, kind, Role::Member, backend, param)?;
        log(&format!(
            "domain {member}: left the {kind:?} share of domain {backend}"
        ));
        self.clear(backend, kind, Role::Owner, member, param)?;
        log(&format!(
            "domain {backend}: removed the {kind:?} share of domain {member}"
        ));
        Ok(())
    }

    /// [`Tool::serve`], a network port's rate item written first (no frame
    /// passes unlimited) and removed again if the port is not made.
    fn serve_with_policy(
        &mut self,
        backend: DomId,
        owner: &EntryRepr,
        rate: Option<PolicyItem>,
        ips: &[Option<PolicyItem>],
        log: Log<'_>,
    ) -> Result<EntryRepr, ToolError> {
        let (member, lan) = (owner.peer, lan_of(owner.param));
        let items: Vec<PolicyItem> = rate
            .into_iter()
            .chain(ips.iter().flatten().copied())
            .filter(|_| owner.kind == Kind::Network)
            .collect();
        if items.is_empty() {
            return self.serve(backend, owner);
        }
        // A port that exists already must not get (or lose) items on the
        // way to the refusal `serve` would give.
        let listing = self.show(backend)?;
        if listing.used.iter().any(|(_, e)| {
            e.kind == owner.kind
                && e.role == Role::Owner
                && e.peer == member
                && is_port_entry(e)
                && same_device(owner.kind, e.param, owner.param)
        }) {
            return Err(ToolError::Exists {
                domid: backend,
                peer: member,
            });
        }
        let mut written = Vec::new();
        let mut result = Ok(());
        for item in &items {
            match self.add_policy_item(backend, member, lan, *item, log) {
                Ok(index) => written.push(index),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let served = result.and_then(|()| self.serve(backend, owner));
        if served.is_err() {
            // Only what this call wrote.
            for index in written {
                let _ = self.change(backend, &EntryRepr::EMPTY, &|entries| match entries
                    .get(index as usize)
                {
                    Some(Ok(e)) if is_policy_item(e) && e.peer == member => Ok(index),
                    _ => Err(ToolError::NotFound {
                        domid: backend,
                        peer: member,
                    }),
                });
            }
        }
        served
    }

    /// Writes a port policy item for `member`'s port on LAN `lan` in a free
    /// entry of `backend`'s page; returns the entry's index.
    pub fn add_policy_item(
        &mut self,
        backend: DomId,
        member: DomId,
        lan: u16,
        item: PolicyItem,
        log: Log<'_>,
    ) -> Result<u32, ToolError> {
        let entry = PortPolicyRepr { lan, member, item }.entry();
        let chosen = core::cell::Cell::new(0);
        self.change(backend, &entry, &|entries| {
            let i = free_index(entries).ok_or(ToolError::PageFull { domid: backend })?;
            chosen.set(i);
            Ok(i)
        })?;
        log(&format!(
            "domain {backend}: port policy for domain {member} on LAN {lan}: {item:?}"
        ));
        Ok(chosen.get())
    }

    /// Writes LAN `up.lan`'s uplink entry in a free entry of `backend`'s
    /// page (refused by the backend if the LAN has one or the device is
    /// another LAN's); returns the entry's index.
    pub fn set_uplink(
        &mut self,
        backend: DomId,
        up: UplinkRepr,
        log: Log<'_>,
    ) -> Result<u32, ToolError> {
        let chosen = core::cell::Cell::new(0);
        self.change(backend, &up.entry(), &|entries| {
            let i = free_index(entries).ok_or(ToolError::PageFull { domid: backend })?;
            chosen.set(i);
            Ok(i)
        })?;
        log(&format!(
            "domain {backend}: LAN {} uplinked to its network device {}{}",
            up.lan,
            up.uplink,
            if up.dhcp_server {
                " (its DHCP server kept on)"
            } else {
                ""
            }
        ));
        Ok(chosen.get())
    }

    /// Empties LAN `lan`'s uplink entry in `backend`'s page.
    pub fn clear_uplink(
        &mut self,
        backend: DomId,
        lan: u16,
        log: Log<'_>,
    ) -> Result<(), ToolError> {
        self.change(backend, &EntryRepr::EMPTY, &|entries| {
            entries
                .iter()
                .position(|e| {
                    matches!(e, Ok(e) if matches!(UplinkRepr::parse(e), Some(Ok(u)) if u.lan == lan))
                })
                .map(|i| i as u32)
                .ok_or(ToolError::NotFound {
                    domid: backend,
                    peer: 0,
                })
        })?;
        log(&format!("domain {backend}: LAN {lan}'s uplink removed"));
        Ok(())
    }

    /// Empties every port policy item of `member`'s port on LAN `lan` (any
    /// LAN if `None`) in `backend`'s page (best effort: an item left
    /// behind only adds to a port that no longer exists).
    pub fn clear_policy(&mut self, backend: DomId, member: DomId, lan: Option<u16>) {
        // At most one item per entry of the page.
        for _ in 0..share_hal::wire::vdevice::MAX_ENTRIES {
            let cleared = self.change(backend, &EntryRepr::EMPTY, &|entries| {
                entries
                    .iter()
                    .position(|e| {
                        matches!(e, Ok(e) if is_policy_item(e)
                            && matches!(PortPolicyRepr::parse(e), Some(Ok(it))
                                if it.member == member && lan.is_none_or(|l| it.lan == l)))
                    })
                    .map(|i| i as u32)
                    .ok_or(ToolError::NotFound {
                        domid: backend,
                        peer: member,
                    })
            });
            if cleared.is_err() {
                break;
            }
        }
    }

    /// Empties `domid`'s entry of that kind, role and peer (and device
    /// `param`, if given); a network port's policy items go with it.
    pub fn clear(
        &mut self,
        domid: DomId,
        kind: Kind,
        role: Role,
        peer: DomId,
        param: Option<u64>,
    ) -> Result<(), ToolError> {
        let cleared = self.change(domid, &EntryRepr::EMPTY, &|entries| {
            entries
                .iter()
                .position(|e| {
                    matches!(e, Ok(e) if e.kind == kind && e.role == role && e.peer == peer
                        && is_port_entry(e)
                        && param.is_none_or(|p| same_device(kind, e.param, p)))
                })
                .map(|i| i as u32)
                .ok_or(ToolError::NotFound { domid, peer })
        });
        if cleared.is_ok() && kind == Kind::Network && role == Role::Owner {
            self.clear_policy(domid, peer, param.map(lan_of));
        }
        cleared.map(drop)
    }
}

/// Whether two entries' params name the same device: for a network port
/// its LAN (the MAC bytes may differ), for a disk its index.
pub fn same_device(kind: Kind, a: u64, b: u64) -> bool {
    match kind {
        Kind::Network => lan_of(a) == lan_of(b),
        _ => a == b,
    }
}

/// The LAN id of a network entry's param (bytes 6..8, little-endian;
/// docs/protocol.md, "Network ports in vdevice entries").
pub fn lan_of(param: u64) -> u16 {
    (param >> 48) as u16
}

/// The param of a network owner entry on LAN `lan`, MAC left to the
/// switch.
pub fn lan_param(lan: u16) -> u64 {
    u64::from(lan) << 48
}

/// The param of a network owner entry on LAN `lan` whose port has `mac`
/// (docs/protocol.md: bytes 0..6 the MAC in wire order, 6..8 the LAN id,
/// little-endian).
pub fn port_param(mac: [u8; 6], lan: u16) -> u64 {
    let l = lan.to_le_bytes();
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], l[0], l[1]])
}

fn free_index(entries: &Entries) -> Option<u32> {
    entries
        .iter()
        .position(|e| matches!(e, Ok(e) if e.kind == Kind::Empty))
        .map(|i| i as u32)
}
