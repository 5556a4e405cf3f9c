//! The vdevice page: how dom0 tells a domain which shares to serve or join.
//!
//! Each domain owns one page, grants it to dom0 and publishes it in xenstore
//! (see [`Bootstrap`]). dom0 changes one entry at a time and waits for the
//! domain's acknowledgement; the protocol is in `docs/protocol.md`.
//!
//! Both sides are hostile to each other here: the domain parses entries
//! written by dom0's tool, and the tool parses results written by a domain
//! that may be buggy or compromised.

use core::fmt;

use super::{
    check_len, descriptor, get_u16, get_u32, get_u64, get_u8, set_u16, set_u32, set_u64, set_u8,
    zero, Error, Field,
};
use crate::platform::{DomId, GrantRef, Port, PAGE_SIZE};

/// `"XSVD"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"XSVD");
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
pub const ENTRY_LEN: usize = 32;
/// Entries that fit the page after the header.
pub const MAX_ENTRIES: u16 = ((PAGE_SIZE - HEADER_LEN) / ENTRY_LEN) as u16;
/// The xenstore key, relative to the domain's home `/local/domain/<domid>/`.
pub const BOOTSTRAP_KEY: &str = "data/vdevice";

/// Byte ranges of the page header.
pub mod field {
    use super::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: Field = 4..6;
    /// Entry slots after the header; the domain writes it at boot.
    pub const ENTRY_COUNT: Field = 6..8;
    /// dom0 bumps it (release) to announce a change.
    pub const CHANGE_SERIAL: Field = 8..12;
    /// The domain sets it to the change serial it applied (release).
    pub const ACK_SERIAL: Field = 12..16;
    /// dom0: the entry the pending change is about.
    pub const CHANGE_INDEX: Field = 16..20;
    /// The domain: outcome of the last change (a [`status`](super::status)).
    pub const ACK_STATUS: Field = 20..24;
    /// The domain's own id, written at boot so dom0 can tell pages apart.
    pub const DOMID: Field = 24..26;
    pub const RESERVED0: Field = 26..28;
    /// Grant ref of the domain's counter page (`wire::stats`), granted
    /// read-only to dom0; 0: none.
    pub const STATS_GREF: Field = 28..32;
    pub const RESERVED: Field = 32..64;
}

/// Byte ranges of one entry, relative to the entry.
pub mod entry_field {
    use super::Field;
    pub const KIND: Field = 0..2;
    pub const ROLE: Field = 2..3;
    pub const FLAGS: Field = 3..4;
    /// Feature bits of the share type (`net::features`, `blk::features`).
    pub const SUBTYPE: Field = 4..8;
    pub const NUMPAGES: Field = 8..12;
    pub const PEER: Field = 12..14;
    pub const RESERVED: Field = 14..16;
    /// Member entry: written by dom0. Owner entry: written by the domain.
    pub const SHARE_REF: Field = 16..20;
    /// Written by the domain on acknowledgement.
    pub const STATUS: Field = 20..24;
    /// Type-specific: the MAC of a network port, the disk index of a disk.
    pub const PARAM: Field = 24..32;
}

/// Status codes a domain writes: 0 or a negated Linux errno value.
pub mod status {
    pub const OK: i32 = 0;
    /// No such peer domain or share.
    pub const ENOENT: i32 = -2;
    pub const EIO: i32 = -5;
    pub const ENOMEM: i32 = -12;
    pub const EBUSY: i32 = -16;
    /// An entry of that index already holds something else.
    pub const EEXIST: i32 = -17;
    /// This domain does not serve or use that kind of device.
    pub const ENODEV: i32 = -19;
    /// The change was malformed (bad index, kind, role, flags, counts).
    pub const EINVAL: i32 = -22;
    pub const EOPNOTSUPP: i32 = -95;
    pub const ETIMEDOUT: i32 = -110;
}

/// Byte offset of entry `index` in a page with `entry_count` entries.
///
/// `index` comes from dom0 (`change_index`) and `entry_count` from the
/// domain's own configuration: both are checked here.
pub fn entry_offset(index: u32, entry_count: u16) -> Result<usize, Error> {
    if entry_count > MAX_ENTRIES {
        return Err(Error::TooMany {
            field: "vdevice entry count",
            count: entry_count.into(),
            max: MAX_ENTRIES.into(),
        });
    }
    if index >= u32::from(entry_count) {
        return Err(Error::TooMany {
            field: "vdevice change index",
            count: index.into(),
            max: u64::from(entry_count).saturating_sub(1),
        });
    }
    Ok(HEADER_LEN + index as usize * ENTRY_LEN)
}

/// A view of the page header (a private copy of its first 64 bytes).
#[derive(Debug, Clone)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        check_len(buffer.as_ref(), HEADER_LEN)?;
        Ok(Header { buffer })
    }

    /// Wraps without the length check, to emit; accessors stay total.
    pub fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, f: Field) -> u16 {
        get_u16(self.buffer.as_ref(), f.start)
    }

    fn u32_at(&self, f: Field) -> u32 {
        get_u32(self.buffer.as_ref(), f.start)
    }

    pub fn magic(&self) -> u32 {
        self.u32_at(field::MAGIC)
    }
    pub fn version(&self) -> u16 {
        self.u16_at(field::VERSION)
    }
    pub fn entry_count(&self) -> u16 {
        self.u16_at(field::ENTRY_COUNT)
    }
    pub fn change_serial(&self) -> u32 {
        self.u32_at(field::CHANGE_SERIAL)
    }
    pub fn ack_serial(&self) -> u32 {
        self.u32_at(field::ACK_SERIAL)
    }
    pub fn change_index(&self) -> u32 {
        self.u32_at(field::CHANGE_INDEX)
    }
    pub fn ack_status(&self) -> i32 {
        self.u32_at(field::ACK_STATUS) as i32
    }
    pub fn domid(&self) -> DomId {
        self.u16_at(field::DOMID)
    }
    pub fn stats_gref(&self) -> u32 {
        self.u32_at(field::STATS_GREF)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    fn set_u16_at(&mut self, f: Field, v: u16) {
        set_u16(self.buffer.as_mut(), f.start, v)
    }

    fn set_u32_at(&mut self, f: Field, v: u32) {
        set_u32(self.buffer.as_mut(), f.start, v)
    }

    pub fn set_magic(&mut self, v: u32) {
        self.set_u32_at(field::MAGIC, v)
    }
    pub fn set_version(&mut self, v: u16) {
        self.set_u16_at(field::VERSION, v)
    }
    pub fn set_entry_count(&mut self, v: u16) {
        self.set_u16_at(field::ENTRY_COUNT, v)
    }
    pub fn set_change_serial(&mut self, v: u32) {
        self.set_u32_at(field::CHANGE_SERIAL, v)
    }
    pub fn set_ack_serial(&mut self, v: u32) {
        self.set_u32_at(field::ACK_SERIAL, v)
    }
    pub fn set_change_index(&mut self, v: u32) {
        self.set_u32_at(field::CHANGE_INDEX, v)
    }
    pub fn set_ack_status(&mut self, v: i32) {
        self.set_u32_at(field::ACK_STATUS, v as u32)
    }
    pub fn set_domid(&mut self, v: DomId) {
        self.set_u16_at(field::DOMID, v)
    }
    pub fn set_stats_gref(&mut self, v: u32) {
        self.set_u32_at(field::STATS_GREF, v)
    }
}

/// The validated header, as dom0 reads it from a domain's page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    pub entry_count: u16,
    pub change_serial: u32,
    pub ack_serial: u32,
    pub change_index: u32,
    pub ack_status: i32,
    pub domid: DomId,
    /// The domain's counter page, if it publishes one (grant refs 0..8 are
    /// reserved on Xen, so 0 means none).
    pub stats: Option<GrantRef>,
}

impl HeaderRepr {
    /// A fresh page's header, as the domain writes it at boot.
    pub fn new(domid: DomId, entry_count: u16) -> Self {
        HeaderRepr {
            entry_count,
            change_serial: 0,
            ack_serial: 0,
            change_index: 0,
            ack_status: status::OK,
            domid,
            stats: None,
        }
    }

    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> Result<Self, Error> {
        check_len(h.buffer.as_ref(), HEADER_LEN)?;
        if h.magic() != MAGIC {
            return Err(Error::BadMagic {
                expected: MAGIC,
                found: h.magic(),
            });
        }
        if h.version() != VERSION {
            return Err(Error::UnsupportedVersion { found: h.version() });
        }
        let entry_count = h.entry_count();
        if entry_count == 0 || entry_count > MAX_ENTRIES {
            return Err(Error::BadField {
                field: "vdevice entry count",
                value: entry_count.into(),
            });
        }
        Ok(HeaderRepr {
            entry_count,
            change_serial: h.change_serial(),
            ack_serial: h.ack_serial(),
            change_index: h.change_index(),
            ack_status: h.ack_status(),
            domid: h.domid(),
            stats: match h.stats_gref() {
                0 => None,
                g => Some(GrantRef(g)),
            },
        })
    }

    /// Whether the domain acknowledged the last change.
    pub fn idle(&self) -> bool {
        self.ack_serial == self.change_serial
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut Header<T>) -> Result<(), Error> {
        check_len(h.buffer.as_ref(), HEADER_LEN)?;
        if self.entry_count == 0 || self.entry_count > MAX_ENTRIES {
            return Err(Error::BadField {
                field: "vdevice entry count",
                value: self.entry_count.into(),
            });
        }
        h.set_magic(MAGIC);
        h.set_version(VERSION);
        h.set_entry_count(self.entry_count);
        h.set_change_serial(self.change_serial);
        h.set_ack_serial(self.ack_serial);
        h.set_change_index(self.change_index);
        h.set_ack_status(self.ack_status);
        h.set_domid(self.domid);
        h.set_stats_gref(self.stats.map_or(0, |g| g.0));
        zero(h.buffer.as_mut(), field::RESERVED0);
        zero(h.buffer.as_mut(), field::RESERVED);
        Ok(())
    }
}

/// A view of one 32-byte entry (a private copy).
#[derive(Debug, Clone)]
pub struct Entry<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Entry<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        check_len(buffer.as_ref(), ENTRY_LEN)?;
        Ok(Entry { buffer })
    }

    /// Wraps without the length check, to emit; accessors stay total.
    pub fn new_unchecked(buffer: T) -> Self {
        Entry { buffer }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn kind(&self) -> u16 {
        get_u16(self.buffer.as_ref(), entry_field::KIND.start)
    }
    pub fn role(&self) -> u8 {
        get_u8(self.buffer.as_ref(), entry_field::ROLE.start)
    }
    pub fn flags(&self) -> u8 {
        get_u8(self.buffer.as_ref(), entry_field::FLAGS.start)
    }
    pub fn subtype(&self) -> u32 {
        get_u32(self.buffer.as_ref(), entry_field::SUBTYPE.start)
    }
    pub fn numpages(&self) -> u32 {
        get_u32(self.buffer.as_ref(), entry_field::NUMPAGES.start)
    }
    pub fn peer(&self) -> DomId {
        get_u16(self.buffer.as_ref(), entry_field::PEER.start)
    }
    pub fn share_ref(&self) -> GrantRef {
        GrantRef(get_u32(self.buffer.as_ref(), entry_field::SHARE_REF.start))
    }
    pub fn status(&self) -> i32 {
        get_u32(self.buffer.as_ref(), entry_field::STATUS.start) as i32
    }
    pub fn param(&self) -> u64 {
        get_u64(self.buffer.as_ref(), entry_field::PARAM.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Entry<T> {
    pub fn set_kind(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), entry_field::KIND.start, v)
    }
    pub fn set_role(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), entry_field::ROLE.start, v)
    }
    pub fn set_flags(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), entry_field::FLAGS.start, v)
    }
    pub fn set_subtype(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), entry_field::SUBTYPE.start, v)
    }
    pub fn set_numpages(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), entry_field::NUMPAGES.start, v)
    }
    pub fn set_peer(&mut self, v: DomId) {
        set_u16(self.buffer.as_mut(), entry_field::PEER.start, v)
    }
    pub fn set_share_ref(&mut self, v: GrantRef) {
        set_u32(self.buffer.as_mut(), entry_field::SHARE_REF.start, v.0)
    }
    pub fn set_status(&mut self, v: i32) {
        set_u32(self.buffer.as_mut(), entry_field::STATUS.start, v as u32)
    }
    pub fn set_param(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), entry_field::PARAM.start, v)
    }
}

/// What an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    /// Nothing: writing an empty entry over a used one removes that device.
    Empty = 0,
    /// A network share (`wire::net`).
    Network = 1,
    /// A block share (`wire::blk`).
    Disk = 2,
}

/// Which side of the share this domain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Join the share `share_ref` owned by `peer`.
    Member = 0,
    /// Create and serve a share for member `peer`; report its share_ref.
    Owner = 1,
}

/// Entry flags.
pub mod flags {
    /// Disk only: the member may read but not write or discard.
    pub const READ_ONLY: u8 = 0x01;
    /// Network owner entries only (a port's policy): the member's IP
    /// sources and ARP senders are bound to its addresses.
    pub const BIND_ADDRESSES: u8 = 0x02;
    /// Network owner entries only: the port reaches netback-uk's endpoint
    /// but no other member, and no member reaches it.
    pub const PRIVATE: u8 = 0x04;
    /// Network owner entries only, alone: not a port but one item of the
    /// policy of the port (`peer`, LAN) ([`PortPolicyRepr`]).
    pub const PORT_POLICY: u8 = 0x08;
    /// Network owner entries only, alone: not a port but the LAN's uplink,
    /// one of the backend's own network devices bridged into the LAN
    /// ([`UplinkRepr`]).
    pub const UPLINK: u8 = 0x10;
    /// The bits only network owner entries carry.
    pub const NET_OWNER: u8 = BIND_ADDRESSES | PRIVATE | PORT_POLICY | UPLINK;
    pub const ALL: u8 = READ_ONLY | NET_OWNER;
}

/// The validated meaning of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRepr {
    pub kind: Kind,
    pub role: Role,
    pub flags: u8,
    pub subtype: u32,
    /// Owner: pages of the share to create (1..=descriptor::MAX_PAGES).
    /// Member: the page count expected, or 0 to take the descriptor's.
    pub numpages: u32,
    pub peer: DomId,
    pub share_ref: GrantRef,
    pub status: i32,
    pub param: u64,
}

impl EntryRepr {
    /// An empty entry (removes what the slot held).
    pub const EMPTY: EntryRepr = EntryRepr {
        kind: Kind::Empty,
        role: Role::Member,
        flags: 0,
        subtype: 0,
        numpages: 0,
        peer: 0,
        share_ref: GrantRef(0),
        status: status::OK,
        param: 0,
    };

    /// Validates an entry copied out of the page. Fields of an empty entry
    /// other than `status` are not looked at and read back as zero.
    pub fn parse<T: AsRef<[u8]>>(e: &Entry<T>) -> Result<Self, Error> {
        check_len(e.buffer.as_ref(), ENTRY_LEN)?;
        let kind = match e.kind() {
            0 => Kind::Empty,
            1 => Kind::Network,
            2 => Kind::Disk,
            k => {
                return Err(Error::BadField {
                    field: "vdevice entry kind",
                    value: k.into(),
                })
            }
        };
        if kind == Kind::Empty {
            return Ok(EntryRepr {
                status: e.status(),
                ..EntryRepr::EMPTY
            });
        }
        let role = match e.role() {
            0 => Role::Member,
            1 => Role::Owner,
            r => {
                return Err(Error::BadField {
                    field: "vdevice entry role",
                    value: r.into(),
                })
            }
        };
        let flags = e.flags();
        if flags & !flags::ALL != 0 {
            return Err(Error::UnknownFlags {
                field: "vdevice entry flags",
                bits: (flags & !flags::ALL).into(),
            });
        }
        if flags & flags::READ_ONLY != 0 && kind != Kind::Disk {
            return Err(Error::BadField {
                field: "vdevice entry flags (read-only is for disks)",
                value: flags.into(),
            });
        }
        if flags & flags::NET_OWNER != 0 && (kind != Kind::Network || role != Role::Owner) {
            return Err(Error::BadField {
                field: "vdevice entry flags (port policy is for network owner entries)",
                value: flags.into(),
            });
        }
        let numpages = e.numpages();
        if flags & flags::PORT_POLICY != 0 && flags != flags::PORT_POLICY {
            return Err(Error::BadField {
                field: "vdevice entry flags (a port policy item has no other flag)",
                value: flags.into(),
            });
        }
        if flags & flags::UPLINK != 0 && flags != flags::UPLINK {
            return Err(Error::BadField {
                field: "vdevice entry flags (an uplink has no other flag)",
                value: flags.into(),
            });
        }
        // A port policy item's numpages is one of its values, not pages;
        // an uplink has none.
        let item = flags & (flags::PORT_POLICY | flags::UPLINK) != 0;
        if numpages > descriptor::MAX_PAGES && !item {
            return Err(Error::TooMany {
                field: "vdevice entry numpages",
                count: numpages.into(),
                max: descriptor::MAX_PAGES.into(),
            });
        }
        if role == Role::Owner && numpages == 0 && !item {
            return Err(Error::BadField {
                field: "vdevice entry numpages",
                value: 0,
            });
        }
        Ok(EntryRepr {
            kind,
            role,
            flags,
            subtype: e.subtype(),
            numpages,
            peer: e.peer(),
            share_ref: e.share_ref(),
            status: e.status(),
            param: e.param(),
        })
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, e: &mut Entry<T>) -> Result<(), Error> {
        check_len(e.buffer.as_ref(), ENTRY_LEN)?;
        e.set_kind(self.kind as u16);
        e.set_role(self.role as u8);
        e.set_flags(self.flags);
        e.set_subtype(self.subtype);
        e.set_numpages(self.numpages);
        e.set_peer(self.peer);
        zero(e.buffer.as_mut(), entry_field::RESERVED);
        e.set_share_ref(self.share_ref);
        e.set_status(self.status);
        e.set_param(self.param);
        Ok(())
    }
}

/// What one port policy item sets (docs/protocol.md, "Port policy").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyItem {
    /// What the member may send: `kbit_per_sec` (>= 1) with a burst of
    /// `burst_bytes` (>= 1), and at most `frames_per_sec` frames a second
    /// (0: no frame limit).
    Rate {
        kbit_per_sec: u32,
        burst_bytes: u32,
        frames_per_sec: u32,
    },
    /// An IPv4 network the member may send from.
    Ipv4 { addr: [u8; 4], prefix: u8 },
    /// An IPv6 network the member may send from: its first 8 bytes (a
    /// prefix of at most 64 bits; the rest is the interface's).
    Ipv6 { net: [u8; 8], prefix: u8 },
}

/// Port policy item types (the entry's subtype).
pub mod policy_item {
    pub const RATE: u32 = 1;
    pub const IPV4: u32 = 2;
    pub const IPV6: u32 = 3;
}

/// A port policy item: a network owner entry with flags
/// [`flags::PORT_POLICY`], for the port of member `member` on LAN `lan`
/// (whether or not that port exists yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPolicyRepr {
    pub lan: u16,
    pub member: DomId,
    pub item: PolicyItem,
}

impl PortPolicyRepr {
    /// The item an entry holds, checked; `None` if the entry is no item.
    pub fn parse(e: &EntryRepr) -> Option<Result<Self, Error>> {
        if e.kind != Kind::Network || e.role != Role::Owner || e.flags != flags::PORT_POLICY {
            return None;
        }
        Some(Self::parse_item(e))
    }

    fn parse_item(e: &EntryRepr) -> Result<Self, Error> {
        let p = e.param.to_le_bytes();
        let bad = |field, value: u64| Err(Error::BadField { field, value });
        if p[5] != 0 {
            return bad("port policy param byte 5", p[5].into());
        }
        let item = match e.subtype {
            policy_item::RATE => {
                let kbit_per_sec = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                if kbit_per_sec == 0 || e.numpages == 0 || p[4] != 0 {
                    return bad(
                        "port policy rate (zero, or bytes 4..6 set)",
                        kbit_per_sec.into(),
                    );
                }
                PolicyItem::Rate {
                    kbit_per_sec,
                    burst_bytes: e.numpages,
                    frames_per_sec: e.share_ref.0,
                }
            }
            policy_item::IPV4 => {
                if p[4] > 32 || e.numpages != 0 || e.share_ref.0 != 0 {
                    return bad("port policy IPv4 prefix", p[4].into());
                }
                PolicyItem::Ipv4 {
                    addr: [p[0], p[1], p[2], p[3]],
                    prefix: p[4],
                }
            }
            policy_item::IPV6 => {
                if p[4] > 64 || p[..4] != [0; 4] {
                    return bad("port policy IPv6 prefix", p[4].into());
                }
                let (a, b) = (e.numpages.to_le_bytes(), e.share_ref.0.to_le_bytes());
                PolicyItem::Ipv6 {
                    net: [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]],
                    prefix: p[4],
                }
            }
            t => return bad("port policy item type", t.into()),
        };
        Ok(PortPolicyRepr {
            lan: u16::from_le_bytes([p[6], p[7]]),
            member: e.peer,
            item,
        })
    }

    /// The entry dom0 writes for this item.
    pub fn entry(&self) -> EntryRepr {
        let l = self.lan.to_le_bytes();
        let (subtype, numpages, share_ref, head, prefix) = match self.item {
            PolicyItem::Rate {
                kbit_per_sec,
                burst_bytes,
                frames_per_sec,
            } => (
                policy_item::RATE,
                burst_bytes,
                frames_per_sec,
                kbit_per_sec.to_le_bytes(),
                0,
            ),
            PolicyItem::Ipv4 { addr, prefix } => (policy_item::IPV4, 0, 0, addr, prefix),
            PolicyItem::Ipv6 { net, prefix } => (
                policy_item::IPV6,
                u32::from_le_bytes([net[0], net[1], net[2], net[3]]),
                u32::from_le_bytes([net[4], net[5], net[6], net[7]]),
                [0; 4],
                prefix,
            ),
        };
        EntryRepr {
            kind: Kind::Network,
            role: Role::Owner,
            flags: flags::PORT_POLICY,
            subtype,
            numpages,
            peer: self.member,
            share_ref: GrantRef(share_ref),
            param: u64::from_le_bytes([head[0], head[1], head[2], head[3], prefix, 0, l[0], l[1]]),
            ..EntryRepr::EMPTY
        }
    }
}

/// Bits of an uplink entry's subtype.
pub mod uplink_flags {
    /// The backend's own DHCP server keeps serving the LAN (off by
    /// default on an uplinked LAN: the uplink's network has its own).
    pub const DHCP_SERVER: u32 = 0x1;
    pub const ALL: u32 = DHCP_SERVER;
}

/// A LAN's uplink: a network owner entry with flags [`flags::UPLINK`]
/// (docs/protocol.md, "Uplink"). It names one of the backend's own
/// network devices (for netback-uk on Xen, the index of a `vif=` of its
/// xl config) and the LAN it is bridged into at layer 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UplinkRepr {
    pub lan: u16,
    /// The backend's device index (`device/vif/<uplink>` on Xen).
    pub uplink: u16,
    /// [`uplink_flags::DHCP_SERVER`]: the backend's DHCP server stays on.
    pub dhcp_server: bool,
}

impl UplinkRepr {
    /// The uplink an entry holds, checked; `None` if the entry is no
    /// uplink.
    pub fn parse(e: &EntryRepr) -> Option<Result<Self, Error>> {
        if e.kind != Kind::Network || e.role != Role::Owner || e.flags != flags::UPLINK {
            return None;
        }
        Some(Self::parse_uplink(e))
    }

    fn parse_uplink(e: &EntryRepr) -> Result<Self, Error> {
        let p = e.param.to_le_bytes();
        if e.subtype & !uplink_flags::ALL != 0 {
            return Err(Error::UnknownFlags {
                field: "uplink subtype",
                bits: (e.subtype & !uplink_flags::ALL).into(),
            });
        }
        if e.numpages != 0 || e.peer != 0 || e.share_ref.0 != 0 || p[2..6] != [0; 4] {
            return Err(Error::BadField {
                field: "uplink entry (numpages, peer, share_ref and param bytes 2..6 are zero)",
                value: u64::from(e.numpages) | u64::from(e.peer) << 32,
            });
        }
        Ok(UplinkRepr {
            lan: u16::from_le_bytes([p[6], p[7]]),
            uplink: u16::from_le_bytes([p[0], p[1]]),
            dhcp_server: e.subtype & uplink_flags::DHCP_SERVER != 0,
        })
    }

    /// The entry dom0 writes for this uplink.
    pub fn entry(&self) -> EntryRepr {
        let (u, l) = (self.uplink.to_le_bytes(), self.lan.to_le_bytes());
        EntryRepr {
            kind: Kind::Network,
            role: Role::Owner,
            flags: flags::UPLINK,
            subtype: if self.dhcp_server {
                uplink_flags::DHCP_SERVER
            } else {
                0
            },
            param: u64::from_le_bytes([u[0], u[1], 0, 0, 0, 0, l[0], l[1]]),
            ..EntryRepr::EMPTY
        }
    }
}

/// The value of the xenstore key [`BOOTSTRAP_KEY`]: `gref=<n> port=<p>`,
/// both decimal u32 without sign or leading zeros, one space between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bootstrap {
    /// Grant ref of the vdevice page, granted to dom0.
    pub gref: GrantRef,
    /// The domain's unbound event port for dom0.
    pub port: Port,
}

/// Longest bootstrap value: `gref=4294967295 port=4294967295`.
pub const BOOTSTRAP_MAX_LEN: usize = 31;

impl Bootstrap {
    /// Parses the value dom0 read from the domain's xenstore home (which the
    /// domain wrote: hostile).
    pub fn parse(value: &[u8]) -> Result<Self, Error> {
        let bad = |value: u64| Error::BadField {
            field: "vdevice bootstrap value",
            value,
        };
        if value.len() > BOOTSTRAP_MAX_LEN {
            return Err(bad(value.len() as u64));
        }
        let rest = value.strip_prefix(b"gref=").ok_or(bad(0))?;
        let space = rest.iter().position(|&c| c == b' ').ok_or(bad(1))?;
        let (gref, rest) = rest.split_at(space);
        let port = rest.strip_prefix(b" port=").ok_or(bad(2))?;
        Ok(Bootstrap {
            gref: GrantRef(parse_decimal_u32(gref).ok_or(bad(3))?),
            port: Port(parse_decimal_u32(port).ok_or(bad(4))?),
        })
    }
}

impl fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gref={} port={}", self.gref.0, self.port.0)
    }
}

/// Canonical decimal only, so one value has one spelling.
fn parse_decimal_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || (s.len() > 1 && s[0] == b'0') {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    /// Domain 5, 126 entries, change 3 pending on entry 2, ack 2 with -22.
    const HEADER: [u8; 64] = {
        let mut h = [0u8; 64];
        let b = *b"XSVD";
        h[0] = b[0];
        h[1] = b[1];
        h[2] = b[2];
        h[3] = b[3];
        h[4] = 1; // version
        h[6] = 126; // entry_count
        h[8] = 3; // change_serial
        h[12] = 2; // ack_serial
        h[16] = 2; // change_index
        h[20] = 0xea; // ack_status = -22
        h[21] = 0xff;
        h[22] = 0xff;
        h[23] = 0xff;
        h[24] = 5; // domid
        h
    };

    /// Owner entry: serve a network share of 9 pages for domain 7, MAC
    /// 00:16:3e:00:00:07 in param, feature bits 0b101, acked with share_ref
    /// 0x20 and status 0.
    const NET_OWNER: [u8; 32] = [
        1, 0, // kind: network
        1, // role: owner
        0, // flags
        5, 0, 0, 0, // subtype
        9, 0, 0, 0, // numpages
        7, 0, // peer
        0, 0, // reserved
        0x20, 0, 0, 0, // share_ref
        0, 0, 0, 0, // status
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x07, 0, 0, // param
    ];

    #[test]
    fn header_parses_and_emits_literal_bytes() {
        let r = HeaderRepr::parse(&Header::new_checked(&HEADER[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            HeaderRepr {
                entry_count: 126,
                change_serial: 3,
                ack_serial: 2,
                change_index: 2,
                ack_status: status::EINVAL,
                domid: 5,
                stats: None,
            }
        );
        assert!(!r.idle());
        let mut out = [0xaau8; 64];
        r.emit(&mut Header::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, HEADER);
        assert_eq!(MAX_ENTRIES, 126);
    }

    #[test]
    fn header_refuses_garbage() {
        let with = |at: usize, bytes: &[u8]| {
            let mut b = HEADER;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            HeaderRepr::parse(&Header::new_unchecked(&b[..]))
        };
        assert!(matches!(with(0, b"XSVX"), Err(Error::BadMagic { .. })));
        assert_eq!(
            with(4, &[0, 1]),
            Err(Error::UnsupportedVersion { found: 256 })
        );
        assert_eq!(
            with(6, &[0, 0]),
            Err(Error::BadField {
                field: "vdevice entry count",
                value: 0
            })
        );
        assert_eq!(
            with(6, &[127, 0]),
            Err(Error::BadField {
                field: "vdevice entry count",
                value: 127
            })
        );
        assert_eq!(
            Header::new_checked(&HEADER[..63]).map(|_| ()),
            Err(Error::Truncated { need: 64, have: 63 })
        );
        assert!(HeaderRepr::new(1, 0)
            .emit(&mut Header::new_unchecked(&mut [0u8; 64][..]))
            .is_err());
    }

    #[test]
    fn entry_parses_and_emits_literal_bytes() {
        let r = EntryRepr::parse(&Entry::new_checked(&NET_OWNER[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            EntryRepr {
                kind: Kind::Network,
                role: Role::Owner,
                flags: 0,
                subtype: 5,
                numpages: 9,
                peer: 7,
                share_ref: GrantRef(0x20),
                status: 0,
                param: 0x0700_003e_1600,
            }
        );
        let mut out = [0x55u8; 32];
        r.emit(&mut Entry::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, NET_OWNER);
    }

    #[test]
    fn entry_refuses_every_broken_field() {
        let with = |at: usize, bytes: &[u8]| {
            let mut b = NET_OWNER;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            EntryRepr::parse(&Entry::new_unchecked(&b[..]))
        };
        assert_eq!(
            with(0, &[3, 0]),
            Err(Error::BadField {
                field: "vdevice entry kind",
                value: 3
            })
        );
        assert_eq!(
            with(2, &[2]),
            Err(Error::BadField {
                field: "vdevice entry role",
                value: 2
            })
        );
        assert_eq!(
            with(3, &[0x82]),
            Err(Error::UnknownFlags {
                field: "vdevice entry flags",
                bits: 0x80
            })
        );
        assert!(matches!(
            with(3, &[flags::READ_ONLY]),
            Err(Error::BadField { .. })
        ));
        // A port policy item: alone, numpages not pages.
        let item = PortPolicyRepr {
            lan: 7,
            member: 3,
            item: PolicyItem::Rate {
                kbit_per_sec: 100_000,
                burst_bytes: 625_000,
                frames_per_sec: 0,
            },
        };
        let mut raw = [0u8; ENTRY_LEN];
        item.entry()
            .emit(&mut Entry::new_unchecked(&mut raw[..]))
            .unwrap();
        let back = EntryRepr::parse(&Entry::new_unchecked(&raw[..])).unwrap();
        assert_eq!(PortPolicyRepr::parse(&back), Some(Ok(item)));
        raw[3] = flags::PORT_POLICY | flags::PRIVATE;
        assert!(EntryRepr::parse(&Entry::new_unchecked(&raw[..])).is_err());
        raw[3] = flags::PORT_POLICY | flags::UPLINK;
        assert!(EntryRepr::parse(&Entry::new_unchecked(&raw[..])).is_err());
        // Port policy on a network owner entry, and nowhere else.
        assert_eq!(
            with(3, &[flags::BIND_ADDRESSES | flags::PRIVATE]).map(|e| e.flags),
            Ok(flags::BIND_ADDRESSES | flags::PRIVATE)
        );
        let mut member = NET_OWNER;
        member[2] = 0;
        member[3] = flags::PRIVATE;
        assert!(matches!(
            EntryRepr::parse(&Entry::new_unchecked(&member[..])),
            Err(Error::BadField { .. })
        ));
        let mut disk = NET_OWNER;
        disk[0] = 2;
        disk[3] = flags::BIND_ADDRESSES;
        assert!(matches!(
            EntryRepr::parse(&Entry::new_unchecked(&disk[..])),
            Err(Error::BadField { .. })
        ));
        assert_eq!(
            with(8, &[0, 0, 0, 0]),
            Err(Error::BadField {
                field: "vdevice entry numpages",
                value: 0
            })
        );
        assert_eq!(
            with(8, &[0xf9, 0x03, 0, 0]),
            Err(Error::TooMany {
                field: "vdevice entry numpages",
                count: 1017,
                max: 1016
            })
        );
        // A member entry may leave numpages 0 (take the descriptor's).
        let member = with(2, &[0]).unwrap();
        assert_eq!(member.role, Role::Member);
        let mut b = NET_OWNER;
        b[2] = 0;
        b[8] = 0;
        assert_eq!(
            EntryRepr::parse(&Entry::new_unchecked(&b[..])).map(|e| e.numpages),
            Ok(0)
        );
        // A read-only disk is fine.
        let mut d = NET_OWNER;
        d[0] = 2;
        d[3] = flags::READ_ONLY;
        assert_eq!(
            EntryRepr::parse(&Entry::new_unchecked(&d[..])).map(|e| e.kind),
            Ok(Kind::Disk)
        );
        assert!(EntryRepr::parse(&Entry::new_unchecked(&NET_OWNER[..31])).is_err());
    }

    /// Uplink 2 of the backend bridged into LAN 5, DHCP server kept on.
    const UPLINK: [u8; 32] = [
        1, 0,    // kind: network
        1,    // role: owner
        0x10, // flags: UPLINK
        1, 0, 0, 0, // subtype: DHCP_SERVER
        0, 0, 0, 0, // numpages
        0, 0, // peer
        0, 0, // reserved
        0, 0, 0, 0, // share_ref
        0, 0, 0, 0, // status
        2, 0, 0, 0, 0, 0, // param: uplink 2
        5, 0, // param: LAN 5
    ];

    #[test]
    fn an_uplink_entry_parses_and_emits_literal_bytes() {
        let e = EntryRepr::parse(&Entry::new_checked(&UPLINK[..]).unwrap()).unwrap();
        let up = UplinkRepr {
            lan: 5,
            uplink: 2,
            dhcp_server: true,
        };
        assert_eq!(UplinkRepr::parse(&e), Some(Ok(up)));
        let mut raw = [0u8; ENTRY_LEN];
        up.entry()
            .emit(&mut Entry::new_unchecked(&mut raw[..]))
            .unwrap();
        assert_eq!(raw, UPLINK);
        // Not an uplink: a port, a policy item.
        let port = EntryRepr::parse(&Entry::new_checked(&NET_OWNER[..]).unwrap()).unwrap();
        assert_eq!(UplinkRepr::parse(&port), None);
        // Every field that must be zero, an unknown subtype bit, a second
        // flag.
        for (at, v) in [(4, 2u8), (8, 1), (12, 1), (16, 1), (26, 1), (29, 1)] {
            let mut b = UPLINK;
            b[at] = v;
            let r = EntryRepr::parse(&Entry::new_unchecked(&b[..]))
                .ok()
                .and_then(|e| UplinkRepr::parse(&e));
            assert!(matches!(r, Some(Err(_))), "byte {at} = {v}: {r:?}");
        }
        let mut b = UPLINK;
        b[3] = flags::UPLINK | flags::PRIVATE;
        assert!(EntryRepr::parse(&Entry::new_unchecked(&b[..])).is_err());
        let mut b = UPLINK;
        b[2] = 0;
        assert!(EntryRepr::parse(&Entry::new_unchecked(&b[..])).is_err());
    }

    #[test]
    fn empty_entries_ignore_the_rest() {
        let mut b = [0xffu8; 32];
        b[0] = 0;
        b[1] = 0;
        let r = EntryRepr::parse(&Entry::new_unchecked(&b[..])).unwrap();
        assert_eq!(
            r,
            EntryRepr {
                status: -1,
                ..EntryRepr::EMPTY
            }
        );
    }

    #[test]
    fn entry_offsets_are_bounded_by_our_own_count() {
        assert_eq!(entry_offset(0, 126), Ok(64));
        assert_eq!(entry_offset(125, 126), Ok(64 + 125 * 32));
        assert!(entry_offset(126, 126).is_err());
        assert!(entry_offset(3, 3).is_err());
        assert!(entry_offset(u32::MAX, 126).is_err());
        assert!(entry_offset(0, 0).is_err());
        assert!(entry_offset(0, 127).is_err());
        assert!(entry_offset(125, 126).unwrap() + ENTRY_LEN <= PAGE_SIZE);
    }

    #[test]
    fn bootstrap_value_round_trips_and_is_strict() {
        let b = Bootstrap {
            gref: GrantRef(8),
            port: Port(3),
        };
        assert_eq!(b.to_string(), "gref=8 port=3");
        assert_eq!(Bootstrap::parse(b"gref=8 port=3"), Ok(b));
        let max = Bootstrap {
            gref: GrantRef(u32::MAX),
            port: Port(u32::MAX),
        };
        assert_eq!(max.to_string().len(), BOOTSTRAP_MAX_LEN);
        assert_eq!(Bootstrap::parse(max.to_string().as_bytes()), Ok(max));
        for bad in [
            &b""[..],
            b"gref=8",
            b"gref=8 port=",
            b"gref= port=3",
            b"gref=08 port=3",
            b"gref=8  port=3",
            b"gref=8 port=3 ",
            b"gref=8 port=3\0",
            b"gref=+8 port=3",
            b"gref=-8 port=3",
            b"port=3 gref=8",
            b"gref=4294967296 port=3",
            b"gref=8 port=99999999999",
            b"GREF=8 port=3",
        ] {
            assert!(Bootstrap::parse(bad).is_err(), "{:?}", bad);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..PAGE_SIZE)) {
            if let Ok(h) = Header::new_checked(&bytes[..]) {
                if let Ok(r) = HeaderRepr::parse(&h) {
                    prop_assert!(r.entry_count >= 1 && r.entry_count <= MAX_ENTRIES);
                    if let Ok(at) = entry_offset(r.change_index, r.entry_count) {
                        prop_assert!(at + ENTRY_LEN <= PAGE_SIZE);
                        if let Some(e) = bytes.get(at..at + ENTRY_LEN) {
                            let _ = EntryRepr::parse(&Entry::new_unchecked(e));
                        }
                    }
                }
            }
            if let Ok(e) = Entry::new_checked(&bytes[..]) {
                if let Ok(r) = EntryRepr::parse(&e) {
                    let mut out = [0u8; ENTRY_LEN];
                    r.emit(&mut Entry::new_unchecked(&mut out[..])).unwrap();
                    prop_assert_eq!(EntryRepr::parse(&Entry::new_unchecked(&out[..])), Ok(r));
                }
            }
            if let Ok(b) = Bootstrap::parse(&bytes) {
                let shown = b.to_string();
                prop_assert_eq!(shown.as_bytes(), &bytes[..]);
            }
        }

        #[test]
        fn bootstrap_round_trips(gref in any::<u32>(), port in any::<u32>()) {
            let b = Bootstrap { gref: GrantRef(gref), port: Port(port) };
            prop_assert_eq!(Bootstrap::parse(b.to_string().as_bytes()), Ok(b));
        }
    }
}
