//! The management endpoint of one LAN: netback-uk's own address on it.
//!
//! The switch hands this endpoint the frames it [`Mgmt::wants`] (broadcast,
//! or unicast to its MAC) as private copies and forwards its replies like
//! frames from a port. The endpoint answers:
//!
//! - **ARP** requests for its own address (never for a member's leased
//!   address: members answer for themselves);
//! - **ICMP echo** requests to its own address, with replies of at most
//!   [`MAX_FRAME`] bytes (no fragment reassembly: fragments are dropped and
//!   counted, so is an echo whose reply would not fit one frame);
//! - **DHCP** (RFC 2131) as the LAN's only, authoritative server: it leases
//!   addresses from the pool of its [`MgmtConfig`] so members need no
//!   manual set-up.
//!
//! Every frame is hostile: it is parsed with smoltcp's `wire` types
//! (Ethernet, ARP, IPv4, ICMPv4, UDP, DHCP), bad input is dropped and
//! counted by cause in [`MgmtCounters`], and the work per frame is bounded
//! (one pass over the frame, one over the lease table, which is never
//! larger than the pool, at most [`MAX_POOL`] addresses).
//!
//! # DHCP
//!
//! - Offers and acknowledgements carry the subnet mask, the server
//!   identifier (the endpoint's address), the lease time and the renewal
//!   (T1 = lease/2) and rebinding (T2 = 7/8 lease) times. There is **no
//!   router option** and no DNS server: a LAN is an isolated layer-2
//!   segment between member domains and netback-uk forwards nothing
//!   beyond it, so members get no default route from it.
//! - A client is known by its hardware address (`chaddr`). The address
//!   chosen for a DISCOVER is, in order: the one this client holds or held
//!   (bound, offered, expired or released, as long as nobody took it since),
//!   the requested address if it is in the pool and free, the unclaimed
//!   address unused the longest, and only when none is left the address
//!   whose lease ended the longest ago.
//! - An offer holds its address for [`OFFER_HOLD_SECS`]. A REQUEST in
//!   SELECTING (server identifier present) naming another server gives the
//!   offer up; naming this one binds the requested address if the client
//!   holds it or it is free. Being the LAN's only server, the endpoint is
//!   authoritative for INIT-REBOOT and RENEWING/REBINDING requests: it ACKs
//!   an address in the pool that the client holds or that is free and NAKs
//!   any other (outside the subnet, outside the pool, held by another
//!   client, declined).
//! - RELEASE ends the lease at once but remembers the client, which gets
//!   the same address back if nobody took it meanwhile. DECLINE takes the
//!   address out of service for [`DECLINE_HOLD_SECS`] (someone else uses
//!   it) and forgets the client's claim on it. INFORM gets an ACK with the
//!   subnet mask and server identifier and no lease.
//! - Replies go per RFC 2131 section 4.1: broadcast (to `ff:ff:ff:ff:ff:ff`,
//!   255.255.255.255) when the client sets the broadcast flag, and every
//!   NAK; otherwise unicast to `chaddr` at `ciaddr` when the client has an
//!   address, or at `yiaddr` when it has none yet (a client that cannot
//!   receive that sets the broadcast flag).
//! - **A client is also its port**: the switch tells the endpoint which
//!   port a frame came from, and every offer, lease and decline records
//!   it. A lease is renewed, released or declined only from the port
//!   that holds it (a member cannot end another's lease by writing its
//!   `chaddr`); a port holds at most [`MAX_HELD_PER_PORT`] live offers,
//!   leases and declines together (a member inventing `chaddr`s, with
//!   DISCOVERs or straight REQUESTs, holds that many addresses, not the
//!   pool). A removed port's leases end ([`Mgmt::forget_port`]): its
//!   client gets the address back from any port if nobody took it.
//! - **Full pool**: the lease table has one slot per pool address and never
//!   grows. Slots held by a live offer, a live lease or a recent decline are
//!   never taken from their holder, so a client flooding DISCOVERs from
//!   made-up MACs holds at most the whole pool, for [`OFFER_HOLD_SECS`] at
//!   most, and cannot disturb bound members (they keep renewing). While no
//!   slot is free a DISCOVER from a new client gets no OFFER and a REQUEST
//!   for an address it does not hold gets a NAK; both are counted
//!   (`drops.pool_full`, `dhcp_naks`).
//! - Relayed messages (`giaddr` set) are not served: there are no relays on
//!   a LAN.
//!
//! The time base is the caller's `now_ns` (monotonic nanoseconds); lease
//! expiry times are in the same base.
extern crate alloc;

use alloc::vec::Vec;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr,
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
    IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr, DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
};

/// Largest frame the endpoint sends (Ethernet header + 1500 bytes).
pub const MAX_FRAME: usize = 1514;
/// Shortest Ethernet frame (without FCS); shorter replies are padded.
const MIN_FRAME: usize = 60;
/// Largest DHCP pool: bounds the lease table (about 24 bytes a slot) and
/// the work per DHCP message.
pub const MAX_POOL: usize = 1024;
/// How long an OFFER keeps its address for the client.
pub const OFFER_HOLD_SECS: u64 = 60;
/// How long a declined address stays out of service.
pub const DECLINE_HOLD_SECS: u64 = 600;
/// Shortest lease accepted in a configuration (a shorter one makes members
/// renew every few seconds).
pub const MIN_LEASE_SECS: u32 = 60;
/// Live offers, leases and declines one port may hold at once: a member
/// with a few DHCP clients of its own (containers, a bridge) is served, a
/// member inventing clients takes this many addresses, not the pool.
pub const MAX_HELD_PER_PORT: usize = 4;
/// TTL of the endpoint's IPv4 packets.
const HOP_LIMIT: u8 = 64;

const NS_PER_SEC: u64 = 1_000_000_000;
const ETH_HEADER: usize = 14;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const ICMP_ECHO_HEADER: usize = 8;
/// RFC 2132 option codes smoltcp's `DhcpRepr` does not emit itself.
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_REBINDING_TIME: u8 = 59;

/// Addressing of the management endpoint on one LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MgmtConfig {
    /// The endpoint's MAC on this LAN (unicast).
    pub mac: [u8; 6],
    /// Its IPv4 address, a host address of the subnet.
    pub addr: [u8; 4],
    /// Prefix length of the LAN's subnet (8..=30).
    pub prefix_len: u8,
    /// First address of the DHCP pool (inclusive).
    pub pool_first: [u8; 4],
    /// Last address of the DHCP pool (inclusive).
    pub pool_last: [u8; 4],
    /// Lease time handed to members, at least [`MIN_LEASE_SECS`].
    pub lease_secs: u32,
}

impl MgmtConfig {
    /// Lease time of the default plan: members renew every half hour.
    pub const DEFAULT_LEASE_SECS: u32 = 3600;

    /// The default plan for LAN `lan`: subnet `10.H.L.0/24` with
    /// `H = (77 + lan / 256) mod 256` and `L = lan mod 256`, the endpoint at
    /// `.1`, the pool `.100`-`.199`, one-hour leases, and the MAC
    /// `02:78:73:6d:<lan high byte>:<lan low byte>` (locally administered,
    /// "xsm"; members must not use the `02:78:73:6d` prefix).
    ///
    /// LANs 0..=45823 get `10.77.0.0/24`..`10.255.255.0/24`; higher ids wrap
    /// to `10.0.0.0/24`..`10.76.255.0/24`, so every LAN id has its own
    /// subnet.
    pub fn for_lan(lan: u16) -> Self {
        let [hi, lo] = lan.to_be_bytes();
        let net = [10, hi.wrapping_add(77), lo];
        Self {
            mac: [0x02, 0x78, 0x73, 0x6d, hi, lo],
            addr: [net[0], net[1], net[2], 1],
            prefix_len: 24,
            pool_first: [net[0], net[1], net[2], 100],
            pool_last: [net[0], net[1], net[2], 199],
            lease_secs: Self::DEFAULT_LEASE_SECS,
        }
    }
}

/// Why a [`MgmtConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// The MAC is multicast, broadcast or all zeroes.
    MacNotUnicast,
    /// `prefix_len` is outside 8..=30.
    BadPrefix,
    /// The address is the subnet's network or broadcast address.
    AddrNotHost,
    /// A pool end is outside the subnet, is its network or broadcast
    /// address, or the pool runs backwards.
    BadPool,
    /// The endpoint's own address lies in the pool.
    PoolHasEndpoint,
    /// The pool has more than [`MAX_POOL`] addresses.
    PoolTooLarge,
    /// `lease_secs` is below [`MIN_LEASE_SECS`].
    LeaseTooShort,
}

/// One address of the pool bound to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The member's hardware address (DHCP `chaddr`).
    pub mac: [u8; 6],
    /// The leased address.
    pub ip: [u8; 4],
    /// The switch port it was leased on (`None`: that port was removed).
    pub port: Option<ClientPort>,
    /// End of the lease, in the `now_ns` base. A lease that ended (expired
    /// or released) stays listed with its end in the past until its
    /// address goes to another member.
    pub expires_ns: u64,
}

impl Lease {
    /// Whether the lease still runs at `now_ns`.
    pub fn is_active(&self, now_ns: u64) -> bool {
        now_ns < self.expires_ns
    }
}

/// Frames dropped, by cause (each dropped frame is counted once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MgmtDrops {
    /// Did not parse: truncated, inconsistent lengths, bad checksum, bad
    /// DHCP magic or options, a REQUEST naming no address.
    pub malformed: u64,
    /// Neither IPv4 nor ARP.
    pub ethertype: u64,
    /// Valid but addressed elsewhere: another MAC, IP address, UDP port or
    /// DHCP server, an ARP for another address, a RELEASE or DECLINE of an
    /// address the client does not hold.
    pub not_for_us: u64,
    /// A sender no reply can go to: multicast, zero or the endpoint's own
    /// MAC, an unusable IPv4 source.
    pub bad_source: u64,
    /// IPv4 fragments (no reassembly).
    pub fragment: u64,
    /// An echo request whose reply would exceed [`MAX_FRAME`].
    pub too_big: u64,
    /// Valid but not served: ARP replies, ICMP other than echo requests,
    /// IP protocols other than ICMP and UDP, relayed or server-side DHCP
    /// messages.
    pub unsupported: u64,
    /// A DISCOVER that got no OFFER because every pool address is held.
    pub pool_full: u64,
    /// DHCP from a port for a client another port holds a lease or offer
    /// for, or from a port that holds [`MAX_HELD_PER_PORT`] addresses
    /// already (a DISCOVER; a REQUEST gets a NAK).
    pub port_limit: u64,
}

impl MgmtDrops {
    /// All dropped frames.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.ethertype
            + self.not_for_us
            + self.bad_source
            + self.fragment
            + self.too_big
            + self.unsupported
            + self.pool_full
            + self.port_limit
    }
}

/// What the endpoint did with the frames it was handed.
///
/// Every frame is counted in `frames_in` and in exactly one of: a reply
/// kind (`arp_replies`, `echo_replies`, `dhcp_offers`, `dhcp_acks`,
/// `dhcp_naks`, `dhcp_informs`), a silent DHCP action (`dhcp_releases`,
/// `dhcp_declines`), or `drops`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MgmtCounters {
    /// Frames handed to [`Mgmt::receive`].
    pub frames_in: u64,
    /// Frames sent through `out`.
    pub replies_out: u64,
    pub arp_replies: u64,
    pub echo_replies: u64,
    pub dhcp_offers: u64,
    /// ACKs to REQUESTs (not to INFORMs).
    pub dhcp_acks: u64,
    pub dhcp_naks: u64,
    /// ACKs to INFORMs.
    pub dhcp_informs: u64,
    pub dhcp_releases: u64,
    pub dhcp_declines: u64,
    pub drops: MgmtDrops,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drop {
    Malformed,
    Ethertype,
    NotForUs,
    BadSource,
    Fragment,
    TooBig,
    Unsupported,
    PoolFull,
    PortLimit,
}

/// What became of a frame that was not dropped.
enum Handled {
    /// A reply of this many bytes is in the buffer.
    Reply(usize),
    /// Acted on, nothing to send (RELEASE, DECLINE).
    Silent,
}

/// The switch port a DHCP message came from (`None`: a port since removed).
pub type ClientPort = u16;

/// One pool address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Never handed out (or given up by a client choosing another server).
    Free,
    /// Offered to `mac` on `port` until `until_ns`.
    Offered {
        mac: [u8; 6],
        port: ClientPort,
        until_ns: u64,
    },
    /// Leased to `mac` on `port` until `until_ns`; after that remembered
    /// for `mac` until someone else needs the address (`port` `None` once
    /// its port is gone).
    Bound {
        mac: [u8; 6],
        port: Option<ClientPort>,
        until_ns: u64,
    },
    /// Declined (in use by someone unknown) until `until_ns`, charged to
    /// the port that declined it while that port lives.
    Declined {
        port: Option<ClientPort>,
        until_ns: u64,
    },
}

impl Slot {
    /// The port this slot is charged to while it is live.
    fn port(&self) -> Option<ClientPort> {
        match *self {
            Slot::Free => None,
            Slot::Offered { port, .. } => Some(port),
            Slot::Bound { port, .. } | Slot::Declined { port, .. } => port,
        }
    }

    fn owner(&self) -> Option<[u8; 6]> {
        match *self {
            Slot::Offered { mac, .. } | Slot::Bound { mac, .. } => Some(mac),
            Slot::Free | Slot::Declined { .. } => None,
        }
    }

    /// When the slot stops being held (0 for a free slot).
    fn until_ns(&self) -> u64 {
        match *self {
            Slot::Free => 0,
            Slot::Offered { until_ns, .. }
            | Slot::Bound { until_ns, .. }
            | Slot::Declined { until_ns, .. } => until_ns,
        }
    }

    /// Whether the address may go to a client other than its owner.
    fn takeable(&self, now_ns: u64) -> bool {
        now_ns >= self.until_ns()
    }
}

/// The management endpoint of one LAN.
pub struct Mgmt {
    cfg: MgmtConfig,
    mac: EthernetAddress,
    addr: Ipv4Address,
    mask: u32,
    first: u32,
    slots: Vec<Slot>,
    counters: MgmtCounters,
    /// The port of the frame being handled.
    from: ClientPort,
    /// Bumped whenever a lease is bound, renewed, released, declined or
    /// ended: the switch then refreshes the port's address binding.
    lease_changes: u64,
    /// Whether DHCP is answered (off on a LAN whose uplink's network has
    /// its own server; ARP and ping are answered either way).
    dhcp_server: bool,
}

fn ip_u32(ip: Ipv4Address) -> u32 {
    u32::from_be_bytes(ip.octets())
}

fn is_usable_mac(mac: EthernetAddress) -> bool {
    mac.is_unicast() && mac.0 != [0; 6]
}

impl Mgmt {
    /// An endpoint for `cfg`, after checking that its addresses make sense.
    pub fn new(cfg: MgmtConfig) -> Result<Self, ConfigError> {
        let mac = EthernetAddress(cfg.mac);
        if !is_usable_mac(mac) {
            return Err(ConfigError::MacNotUnicast);
        }
        if !(8..=30).contains(&cfg.prefix_len) {
            return Err(ConfigError::BadPrefix);
        }
        let mask = u32::MAX << (32 - u32::from(cfg.prefix_len));
        let addr = u32::from_be_bytes(cfg.addr);
        let net = addr & mask;
        let bcast = net | !mask;
        let host = |a: u32| a & mask == net && a != net && a != bcast;
        if !host(addr) {
            return Err(ConfigError::AddrNotHost);
        }
        let first = u32::from_be_bytes(cfg.pool_first);
        let last = u32::from_be_bytes(cfg.pool_last);
        if !host(first) || !host(last) || first > last {
            return Err(ConfigError::BadPool);
        }
        if (first..=last).contains(&addr) {
            return Err(ConfigError::PoolHasEndpoint);
        }
        let size = (last - first) as usize + 1;
        if size > MAX_POOL {
            return Err(ConfigError::PoolTooLarge);
        }
        if cfg.lease_secs < MIN_LEASE_SECS {
            return Err(ConfigError::LeaseTooShort);
        }
        let mut slots = Vec::new();
        slots.resize(size, Slot::Free);
        Ok(Self {
            cfg,
            mac,
            addr: Ipv4Address::from_octets(cfg.addr),
            mask,
            first,
            slots,
            counters: MgmtCounters::default(),
            from: 0,
            lease_changes: 0,
            dhcp_server: true,
        })
    }

    /// Turns the DHCP server on or off. Off, every DHCP message is left
    /// alone (counted as not for us); leases already made run out.
    pub fn set_dhcp_server(&mut self, on: bool) {
        self.dhcp_server = on;
    }

    /// Whether the DHCP server is on.
    pub fn dhcp_server(&self) -> bool {
        self.dhcp_server
    }

    /// The configuration this endpoint serves.
    pub fn config(&self) -> &MgmtConfig {
        &self.cfg
    }

    /// The endpoint's MAC on this LAN.
    pub fn mac(&self) -> [u8; 6] {
        self.cfg.mac
    }

    /// Whether the switch must hand it a frame sent to `dst_mac`: broadcast,
    /// or unicast to its MAC (the endpoint joins no IPv4 multicast group).
    pub fn wants(&self, dst_mac: [u8; 6]) -> bool {
        dst_mac == self.cfg.mac || dst_mac == [0xff; 6]
    }

    /// Handles a frame the switch delivers to the endpoint (a private copy,
    /// any content). A reply, at most one whole Ethernet frame of at most
    /// [`MAX_FRAME`] bytes from [`Mgmt::mac`], goes to `out`. Never panics;
    /// the work is bounded by the frame's length and the pool's size.
    /// `port`: the switch port the frame came from; DHCP state is charged
    /// to it.
    pub fn receive(
        &mut self,
        now_ns: u64,
        port: ClientPort,
        frame: &[u8],
        out: &mut dyn FnMut(&[u8]),
    ) {
        self.counters.frames_in += 1;
        let mut buf = [0u8; MAX_FRAME];
        match self.handle(now_ns, port, frame, &mut buf) {
            Ok(Handled::Reply(len)) => {
                // Every reply length is checked before emission; a short
                // one (ARP) is zero-padded to the Ethernet minimum.
                if let Some(reply) = buf.get(..len.max(MIN_FRAME)) {
                    self.counters.replies_out += 1;
                    out(reply);
                }
            }
            Ok(Handled::Silent) => {}
            Err(drop) => {
                let d = &mut self.counters.drops;
                *match drop {
                    Drop::Malformed => &mut d.malformed,
                    Drop::Ethertype => &mut d.ethertype,
                    Drop::NotForUs => &mut d.not_for_us,
                    Drop::BadSource => &mut d.bad_source,
                    Drop::Fragment => &mut d.fragment,
                    Drop::TooBig => &mut d.too_big,
                    Drop::Unsupported => &mut d.unsupported,
                    Drop::PoolFull => &mut d.pool_full,
                    Drop::PortLimit => &mut d.port_limit,
                } += 1;
            }
        }
    }

    /// Leases held or remembered, for status output: see
    /// [`Lease::expires_ns`] and [`Lease::is_active`].
    pub fn leases(&self) -> impl Iterator<Item = Lease> + '_ {
        let first = self.first;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| match *s {
                Slot::Bound {
                    mac,
                    port,
                    until_ns,
                } => Some(Lease {
                    port,
                    mac,
                    // `i` < MAX_POOL and the pool lies inside the subnet.
                    ip: first.wrapping_add(i as u32).to_be_bytes(),
                    expires_ns: until_ns,
                }),
                _ => None,
            })
    }

    /// Changes a port's leases may have seen: compare two readings to
    /// know whether to look at [`Mgmt::leases`] again.
    pub fn lease_changes(&self) -> u64 {
        self.lease_changes
    }

    /// Counters since creation.
    pub fn counters(&self) -> MgmtCounters {
        self.counters
    }

    /// Port `port` is gone: its offers lapse, its leases end now (each
    /// remembered for its client, which gets the address back from any
    /// port if nobody took it), its declines stay but are no longer
    /// charged to it. A new port with the same number starts with nothing.
    pub fn forget_port(&mut self, port: ClientPort, now_ns: u64) {
        self.lease_changes = self.lease_changes.wrapping_add(1);
        for s in &mut self.slots {
            match *s {
                Slot::Offered { port: p, .. } if p == port => *s = Slot::Free,
                Slot::Bound {
                    mac,
                    port: Some(p),
                    until_ns,
                } if p == port => {
                    *s = Slot::Bound {
                        mac,
                        port: None,
                        until_ns: until_ns.min(now_ns),
                    }
                }
                Slot::Declined {
                    port: Some(p),
                    until_ns,
                } if p == port => {
                    *s = Slot::Declined {
                        port: None,
                        until_ns,
                    }
                }
                _ => {}
            }
        }
    }

    fn handle(
        &mut self,
        now_ns: u64,
        port: ClientPort,
        frame: &[u8],
        buf: &mut [u8],
    ) -> Result<Handled, Drop> {
        self.from = port;
        let eth = EthernetFrame::new_checked(frame).map_err(|_| Drop::Malformed)?;
        let eth_repr = EthernetRepr::parse(&eth).map_err(|_| Drop::Malformed)?;
        if !self.wants(eth_repr.dst_addr.0) {
            return Err(Drop::NotForUs);
        }
        if !is_usable_mac(eth_repr.src_addr) || eth_repr.src_addr == self.mac {
            return Err(Drop::BadSource);
        }
        match eth_repr.ethertype {
            EthernetProtocol::Arp => self.arp(eth_repr.src_addr, eth.payload(), buf),
            EthernetProtocol::Ipv4 => self.ipv4(now_ns, eth_repr.src_addr, eth.payload(), buf),
            _ => Err(Drop::Ethertype),
        }
    }

    fn arp(
        &mut self,
        src_mac: EthernetAddress,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Handled, Drop> {
        let packet = ArpPacket::new_checked(payload).map_err(|_| Drop::Malformed)?;
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = ArpRepr::parse(&packet).map_err(|_| Drop::Malformed)?
        else {
            return Err(Drop::Malformed);
        };
        if operation != ArpOperation::Request {
            return Err(Drop::Unsupported);
        }
        // Members' addresses, leased or not, are theirs to answer for.
        if target_protocol_addr != self.addr {
            return Err(Drop::NotForUs);
        }
        // The reply goes to the sender the switch vouched for, not to an
        // address the payload names: a member cannot aim replies at
        // another member.
        if !is_usable_mac(source_hardware_addr) || source_hardware_addr != src_mac {
            return Err(Drop::BadSource);
        }
        let reply = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: self.mac,
            source_protocol_addr: self.addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        let len = ETH_HEADER + reply.buffer_len();
        let frame = buf.get_mut(..len).ok_or(Drop::TooBig)?;
        let mut eth = EthernetFrame::new_unchecked(frame);
        EthernetRepr {
            src_addr: self.mac,
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut eth);
        reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        self.counters.arp_replies += 1;
        Ok(Handled::Reply(len))
    }

    fn subnet_broadcast(&self) -> Ipv4Address {
        Ipv4Address::from_bits(ip_u32(self.addr) | !self.mask)
    }

    fn in_subnet(&self, ip: Ipv4Address) -> bool {
        ip_u32(ip) & self.mask == ip_u32(self.addr) & self.mask
    }

    /// Whether a reply can be addressed to `ip`: a host of this subnet
    /// other than the endpoint.
    fn is_member_addr(&self, ip: Ipv4Address) -> bool {
        let net = ip_u32(self.addr) & self.mask;
        self.in_subnet(ip) && ip != self.addr && ip_u32(ip) != net && ip != self.subnet_broadcast()
    }

    fn ipv4(
        &mut self,
        now_ns: u64,
        src_mac: EthernetAddress,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Handled, Drop> {
        let packet = Ipv4Packet::new_checked(payload).map_err(|_| Drop::Malformed)?;
        // Checked here, not left to `Ipv4Repr::parse`, whose answer depends
        // on smoltcp's fragmentation feature.
        if packet.more_frags() || packet.frag_offset() != 0 {
            return Err(Drop::Fragment);
        }
        let caps = ChecksumCapabilities::default();
        let ip = Ipv4Repr::parse(&packet, &caps).map_err(|_| Drop::Malformed)?;
        let to_us = ip.dst_addr == self.addr;
        let to_all =
            ip.dst_addr == Ipv4Address::BROADCAST || ip.dst_addr == self.subnet_broadcast();
        if !to_us && !to_all {
            return Err(Drop::NotForUs);
        }
        match ip.next_header {
            IpProtocol::Icmp if to_us => self.icmp(src_mac, &ip, packet.payload(), buf),
            // No replies to broadcast pings.
            IpProtocol::Icmp => Err(Drop::NotForUs),
            IpProtocol::Udp => self.udp(now_ns, &ip, packet.payload(), buf),
            _ => Err(Drop::Unsupported),
        }
    }

    fn icmp(
        &mut self,
        src_mac: EthernetAddress,
        ip: &Ipv4Repr,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Handled, Drop> {
        let caps = ChecksumCapabilities::default();
        let packet = Icmpv4Packet::new_checked(payload).map_err(|_| Drop::Malformed)?;
        let Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        } = Icmpv4Repr::parse(&packet, &caps).map_err(|_| Drop::Malformed)?
        else {
            return Err(Drop::Unsupported);
        };
        // The reply goes back to the sending MAC (no neighbour cache): the
        // source address only has to be a plausible host.
        let src = ip.src_addr;
        if src.is_unspecified()
            || src.is_multicast()
            || src == Ipv4Address::BROADCAST
            || src == self.addr
            || src == self.subnet_broadcast()
        {
            return Err(Drop::BadSource);
        }
        let reply = Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        };
        let icmp_len = ICMP_ECHO_HEADER + data.len();
        let len = ETH_HEADER + IPV4_HEADER + icmp_len;
        if len > MAX_FRAME {
            return Err(Drop::TooBig);
        }
        let frame = buf.get_mut(..len).ok_or(Drop::TooBig)?;
        self.emit_ipv4(frame, src_mac, ip.src_addr, IpProtocol::Icmp, icmp_len);
        let mut icmp = Icmpv4Packet::new_unchecked(&mut frame[ETH_HEADER + IPV4_HEADER..]);
        reply.emit(&mut icmp, &caps);
        self.counters.echo_replies += 1;
        Ok(Handled::Reply(len))
    }

    /// Ethernet and IPv4 headers of a reply whose frame is exactly `frame`.
    fn emit_ipv4(
        &self,
        frame: &mut [u8],
        dst_mac: EthernetAddress,
        dst_ip: Ipv4Address,
        protocol: IpProtocol,
        payload_len: usize,
    ) {
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        EthernetRepr {
            src_addr: self.mac,
            dst_addr: dst_mac,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        Ipv4Repr {
            src_addr: self.addr,
            dst_addr: dst_ip,
            next_header: protocol,
            payload_len,
            hop_limit: HOP_LIMIT,
        }
        .emit(
            &mut Ipv4Packet::new_unchecked(eth.payload_mut()),
            &ChecksumCapabilities::default(),
        );
    }

    fn udp(
        &mut self,
        now_ns: u64,
        ip: &Ipv4Repr,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Handled, Drop> {
        let packet = UdpPacket::new_checked(payload).map_err(|_| Drop::Malformed)?;
        let udp = UdpRepr::parse(
            &packet,
            &ip.src_addr.into(),
            &ip.dst_addr.into(),
            &ChecksumCapabilities::default(),
        )
        .map_err(|_| Drop::Malformed)?;
        if udp.dst_port != DHCP_SERVER_PORT || udp.src_port != DHCP_CLIENT_PORT || !self.dhcp_server
        {
            return Err(Drop::NotForUs);
        }
        let dhcp = DhcpPacket::new_checked(packet.payload()).map_err(|_| Drop::Malformed)?;
        let req = DhcpRepr::parse(&dhcp).map_err(|_| Drop::Malformed)?;
        self.dhcp(now_ns, &req, buf)
    }

    fn dhcp(&mut self, now_ns: u64, req: &DhcpRepr, buf: &mut [u8]) -> Result<Handled, Drop> {
        if !is_usable_mac(req.client_hardware_address) || req.client_hardware_address == self.mac {
            return Err(Drop::BadSource);
        }
        if !req.relay_agent_ip.is_unspecified() {
            return Err(Drop::Unsupported);
        }
        if req
            .server_identifier
            .is_some_and(|server| server != self.addr)
        {
            // Addressed to another server; in SELECTING this is the
            // client's choice of another server's offer.
            if req.message_type == DhcpMessageType::Request {
                self.give_up_offer(req.client_hardware_address.0);
            }
            return Err(Drop::NotForUs);
        }
        match req.message_type {
            DhcpMessageType::Discover => self.discover(now_ns, req, buf),
            DhcpMessageType::Request => self.request(now_ns, req, buf),
            DhcpMessageType::Release => self.release(now_ns, req),
            DhcpMessageType::Decline => self.decline(now_ns, req),
            DhcpMessageType::Inform => self.inform(req, buf),
            _ => Err(Drop::Unsupported),
        }
    }

    fn pool_index(&self, ip: Ipv4Address) -> Option<usize> {
        let i = ip_u32(ip).checked_sub(self.first)? as usize;
        (i < self.slots.len()).then_some(i)
    }

    fn pool_addr(&self, i: usize) -> Ipv4Address {
        Ipv4Address::from_bits(self.first.wrapping_add(i as u32))
    }

    fn slot_of(&self, mac: [u8; 6]) -> Option<usize> {
        self.slots.iter().position(|s| s.owner() == Some(mac))
    }

    /// Whether slot `i` is live and charged to a port other than the
    /// sender's: its client is another port's, not the sender's to use.
    fn held_elsewhere(&self, i: usize, now_ns: u64) -> bool {
        let s = self.slots[i];
        !s.takeable(now_ns) && s.port() != Some(self.from)
    }

    /// Whether the sender may take slot `i` on top of what it holds: it
    /// holds that slot already, or fewer than [`MAX_HELD_PER_PORT`].
    fn port_may_take(&self, i: usize, now_ns: u64) -> bool {
        let mine = |s: &Slot| s.port() == Some(self.from) && !s.takeable(now_ns);
        mine(&self.slots[i]) || self.slots.iter().filter(|s| mine(s)).count() < MAX_HELD_PER_PORT
    }

    /// Puts `slot` at `i`; a client owns at most one slot, so its other
    /// claims go.
    fn assign(&mut self, i: usize, slot: Slot) {
        self.lease_changes = self.lease_changes.wrapping_add(1);
        if let Some(mac) = slot.owner() {
            for (j, s) in self.slots.iter_mut().enumerate() {
                if j != i && s.owner() == Some(mac) {
                    *s = Slot::Free;
                }
            }
        }
        if let Some(s) = self.slots.get_mut(i) {
            *s = slot;
        }
    }

    fn give_up_offer(&mut self, mac: [u8; 6]) {
        for s in &mut self.slots {
            if matches!(*s, Slot::Offered { mac: m, .. } if m == mac) {
                *s = Slot::Free;
            }
        }
    }

    /// The address for `mac` (RFC 2131 section 4.3.1), or `None` when the
    /// pool is full.
    fn choose(&self, now_ns: u64, mac: [u8; 6], requested: Option<Ipv4Address>) -> Option<usize> {
        if let Some(i) = self.slot_of(mac) {
            return Some(i);
        }
        if let Some(i) = requested.and_then(|ip| self.pool_index(ip)) {
            if self.slots[i].takeable(now_ns) {
                return Some(i);
            }
        }
        // Unclaimed addresses before ended leases, and least recently held
        // first, so a client whose lease ended finds its address again for
        // as long as possible.
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.takeable(now_ns))
            .min_by_key(|(_, s)| (s.owner().is_some(), s.until_ns()))
            .map(|(i, _)| i)
    }

    fn secs_from(&self, now_ns: u64, secs: u64) -> u64 {
        now_ns.saturating_add(secs.saturating_mul(NS_PER_SEC))
    }

    fn discover(&mut self, now_ns: u64, req: &DhcpRepr, buf: &mut [u8]) -> Result<Handled, Drop> {
        let mac = req.client_hardware_address.0;
        let i = self
            .choose(now_ns, mac, req.requested_ip)
            .ok_or(Drop::PoolFull)?;
        if self.held_elsewhere(i, now_ns) || !self.port_may_take(i, now_ns) {
            return Err(Drop::PortLimit);
        }
        let hold = self.secs_from(now_ns, OFFER_HOLD_SECS);
        match self.slots[i] {
            // A live lease stays bound while the client asks again.
            Slot::Bound { until_ns, .. } if until_ns > now_ns => {}
            _ => self.assign(
                i,
                Slot::Offered {
                    mac,
                    port: self.from,
                    until_ns: hold,
                },
            ),
        }
        let len = self.emit_dhcp(buf, req, DhcpMessageType::Offer, self.pool_addr(i))?;
        self.counters.dhcp_offers += 1;
        Ok(Handled::Reply(len))
    }

    fn request(&mut self, now_ns: u64, req: &DhcpRepr, buf: &mut [u8]) -> Result<Handled, Drop> {
        let mac = req.client_hardware_address.0;
        // SELECTING and INIT-REBOOT name the address in the option,
        // RENEWING and REBINDING in `ciaddr`.
        let ip = match req.requested_ip {
            Some(ip) => ip,
            None if !req.client_ip.is_unspecified() => req.client_ip,
            None => return Err(Drop::Malformed),
        };
        let bindable = match self.pool_index(ip) {
            Some(i)
                if (self.slots[i].owner() == Some(mac) || self.slots[i].takeable(now_ns))
                    && !self.held_elsewhere(i, now_ns)
                    && self.port_may_take(i, now_ns) =>
            {
                Some(i)
            }
            _ => None,
        };
        let Some(i) = bindable else {
            let len = self.emit_nak(buf, req)?;
            self.counters.dhcp_naks += 1;
            return Ok(Handled::Reply(len));
        };
        let until_ns = self.secs_from(now_ns, u64::from(self.cfg.lease_secs));
        let port = Some(self.from);
        self.assign(
            i,
            Slot::Bound {
                mac,
                port,
                until_ns,
            },
        );
        let len = self.emit_dhcp(buf, req, DhcpMessageType::Ack, ip)?;
        self.counters.dhcp_acks += 1;
        Ok(Handled::Reply(len))
    }

    /// Whether slot `i` is `mac`'s, held from the sender's port: only the
    /// holder ends or declines a lease.
    fn is_senders(&self, i: usize, mac: [u8; 6]) -> bool {
        let s = self.slots[i];
        s.owner() == Some(mac) && s.port() == Some(self.from)
    }

    fn release(&mut self, now_ns: u64, req: &DhcpRepr) -> Result<Handled, Drop> {
        let mac = req.client_hardware_address.0;
        let i = self
            .pool_index(req.client_ip)
            .filter(|&i| self.is_senders(i, mac))
            .ok_or(Drop::NotForUs)?;
        // Remembered as an ended lease: the client gets it back if nobody
        // took it meanwhile.
        self.slots[i] = Slot::Bound {
            mac,
            port: Some(self.from),
            until_ns: now_ns,
        };
        self.lease_changes = self.lease_changes.wrapping_add(1);
        self.counters.dhcp_releases += 1;
        Ok(Handled::Silent)
    }

    fn decline(&mut self, now_ns: u64, req: &DhcpRepr) -> Result<Handled, Drop> {
        let mac = req.client_hardware_address.0;
        let ip = req.requested_ip.ok_or(Drop::Malformed)?;
        let i = self
            .pool_index(ip)
            .filter(|&i| self.is_senders(i, mac))
            .ok_or(Drop::NotForUs)?;
        self.slots[i] = Slot::Declined {
            port: Some(self.from),
            until_ns: self.secs_from(now_ns, DECLINE_HOLD_SECS),
        };
        self.lease_changes = self.lease_changes.wrapping_add(1);
        self.counters.dhcp_declines += 1;
        Ok(Handled::Silent)
    }

    fn inform(&mut self, req: &DhcpRepr, buf: &mut [u8]) -> Result<Handled, Drop> {
        if !self.is_member_addr(req.client_ip) {
            return Err(Drop::BadSource);
        }
        let len = self.emit_dhcp(buf, req, DhcpMessageType::Ack, Ipv4Address::UNSPECIFIED)?;
        self.counters.dhcp_informs += 1;
        Ok(Handled::Reply(len))
    }

    /// An OFFER or ACK (`yiaddr` unspecified: the ACK to an INFORM, without
    /// lease) for `req`.
    fn emit_dhcp(
        &self,
        buf: &mut [u8],
        req: &DhcpRepr,
        message_type: DhcpMessageType,
        yiaddr: Ipv4Address,
    ) -> Result<usize, Drop> {
        let lease = self.cfg.lease_secs;
        let t1 = (lease / 2).to_be_bytes();
        let t2 = ((u64::from(lease) * 7 / 8) as u32).to_be_bytes();
        let times = [
            DhcpOption {
                kind: OPT_RENEWAL_TIME,
                data: &t1,
            },
            DhcpOption {
                kind: OPT_REBINDING_TIME,
                data: &t2,
            },
        ];
        let with_lease = !yiaddr.is_unspecified();
        let reply = DhcpRepr {
            message_type,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: req.client_hardware_address,
            // RFC 2131 table 3: ciaddr 0 in an OFFER, the client's in an ACK.
            client_ip: if message_type == DhcpMessageType::Ack {
                req.client_ip
            } else {
                Ipv4Address::UNSPECIFIED
            },
            your_ip: yiaddr,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: None,
            subnet_mask: Some(Ipv4Address::from_bits(self.mask)),
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: req.broadcast,
            requested_ip: None,
            // RFC 6842: the client identifier comes back.
            client_identifier: req.client_identifier,
            server_identifier: Some(self.addr),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: with_lease.then_some(lease),
            renew_duration: None,
            rebind_duration: None,
            additional_options: if with_lease { &times } else { &[] },
        };
        // Callers make sure one of these is a member address (an INFORM
        // without a usable `ciaddr` is dropped before).
        let (dst_mac, dst_ip) = if req.broadcast {
            (EthernetAddress::BROADCAST, Ipv4Address::BROADCAST)
        } else if self.is_member_addr(req.client_ip) {
            (req.client_hardware_address, req.client_ip)
        } else if self.is_member_addr(yiaddr) {
            (req.client_hardware_address, yiaddr)
        } else {
            return Err(Drop::BadSource);
        };
        self.emit_udp_dhcp(buf, dst_mac, dst_ip, &reply)
    }

    fn emit_nak(&self, buf: &mut [u8], req: &DhcpRepr) -> Result<usize, Drop> {
        let reply = DhcpRepr {
            message_type: DhcpMessageType::Nak,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: req.client_hardware_address,
            client_ip: Ipv4Address::UNSPECIFIED,
            your_ip: Ipv4Address::UNSPECIFIED,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: req.broadcast,
            requested_ip: None,
            client_identifier: req.client_identifier,
            server_identifier: Some(self.addr),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        // RFC 2131 section 4.1: a NAK is broadcast (the client's address
        // is the one being refused).
        self.emit_udp_dhcp(
            buf,
            EthernetAddress::BROADCAST,
            Ipv4Address::BROADCAST,
            &reply,
        )
    }

    fn emit_udp_dhcp(
        &self,
        buf: &mut [u8],
        dst_mac: EthernetAddress,
        dst_ip: Ipv4Address,
        reply: &DhcpRepr,
    ) -> Result<usize, Drop> {
        let dhcp_len = reply.buffer_len();
        let udp_len = UDP_HEADER + dhcp_len;
        let len = ETH_HEADER + IPV4_HEADER + udp_len;
        if len > MAX_FRAME {
            return Err(Drop::TooBig);
        }
        let frame = buf.get_mut(..len).ok_or(Drop::TooBig)?;
        self.emit_ipv4(frame, dst_mac, dst_ip, IpProtocol::Udp, udp_len);
        let mut emitted = Err(Drop::Malformed);
        UdpRepr {
            src_port: DHCP_SERVER_PORT,
            dst_port: DHCP_CLIENT_PORT,
        }
        .emit(
            &mut UdpPacket::new_unchecked(&mut frame[ETH_HEADER + IPV4_HEADER..]),
            &self.addr.into(),
            &dst_ip.into(),
            dhcp_len,
            |payload| {
                emitted = reply
                    .emit(&mut DhcpPacket::new_unchecked(payload))
                    .map_err(|_| Drop::TooBig);
            },
            &ChecksumCapabilities::default(),
        );
        emitted.map(|()| len)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{HashSet, VecDeque};
    use std::vec;
    use std::vec::Vec;

    use proptest::prelude::*;
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
    use smoltcp::socket::{dhcpv4, icmp};
    use smoltcp::time::Instant;
    use smoltcp::wire::{IpAddress, IpCidr};

    const SEC: u64 = NS_PER_SEC;
    pub(crate) const LAN: u16 = 3;
    pub(crate) const SERVER: Ipv4Address = Ipv4Address::new(10, 77, 3, 1);

    fn member(n: u16) -> [u8; 6] {
        let [hi, lo] = n.to_be_bytes();
        [0x02, 0x11, 0x22, 0x33, hi, lo]
    }

    /// The default plan of LAN 3 with a pool of `size` addresses from
    /// 10.77.3.100 and two-minute leases.
    fn cfg(size: u8) -> MgmtConfig {
        let mut c = MgmtConfig::for_lan(LAN);
        c.pool_last = [10, 77, 3, 100 + size - 1];
        c.lease_secs = 120;
        c
    }

    /// The port a test frame comes from: its source MAC's last two bytes
    /// (`member(n)` sends from port `n`).
    fn port_of(frame: &[u8]) -> ClientPort {
        frame
            .get(10..12)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn feed(m: &mut Mgmt, now_ns: u64, frame: &[u8]) -> Vec<Vec<u8>> {
        feed_from(m, now_ns, port_of(frame), frame)
    }

    fn feed_from(m: &mut Mgmt, now_ns: u64, port: ClientPort, frame: &[u8]) -> Vec<Vec<u8>> {
        let mut replies = Vec::new();
        m.receive(now_ns, port, frame, &mut |f| replies.push(f.to_vec()));
        for r in &replies {
            check_reply(m.mac(), r);
        }
        assert!(replies.len() <= 1);
        replies
    }

    /// A reply is a whole Ethernet frame from the endpoint with valid
    /// checksums at every layer.
    fn check_reply(mac: [u8; 6], f: &[u8]) {
        assert!(
            (MIN_FRAME..=MAX_FRAME).contains(&f.len()),
            "{} bytes",
            f.len()
        );
        let eth = EthernetFrame::new_checked(f).unwrap();
        assert_eq!(eth.src_addr().0, mac);
        assert!(is_usable_mac(eth.dst_addr()) || eth.dst_addr().is_broadcast());
        let caps = ChecksumCapabilities::default();
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
            }
            EthernetProtocol::Ipv4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                let repr = Ipv4Repr::parse(&ip, &caps).unwrap();
                match repr.next_header {
                    IpProtocol::Icmp => {
                        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
                        Icmpv4Repr::parse(&icmp, &caps).unwrap();
                    }
                    IpProtocol::Udp => {
                        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                        UdpRepr::parse(&udp, &repr.src_addr.into(), &repr.dst_addr.into(), &caps)
                            .unwrap();
                        let dhcp = DhcpPacket::new_checked(udp.payload()).unwrap();
                        DhcpRepr::parse(&dhcp).unwrap();
                    }
                    p => panic!("reply of protocol {p}"),
                }
            }
            t => panic!("reply of ethertype {t}"),
        }
    }

    /// Every frame counted once, every reply counted once.
    fn check_counters(m: &Mgmt) {
        let c = m.counters();
        let replies = c.arp_replies
            + c.echo_replies
            + c.dhcp_offers
            + c.dhcp_acks
            + c.dhcp_naks
            + c.dhcp_informs;
        assert_eq!(c.replies_out, replies, "{c:?}");
        assert_eq!(
            c.frames_in,
            replies + c.dhcp_releases + c.dhcp_declines + c.drops.total(),
            "{c:?}"
        );
        assert!(m.slots.len() <= MAX_POOL);
        let mut owners = HashSet::new();
        for s in &m.slots {
            if let Some(mac) = s.owner() {
                assert!(owners.insert(mac), "a client holds two addresses");
            }
        }
    }

    pub(crate) fn ethernet(
        src: [u8; 6],
        dst: [u8; 6],
        ethertype: EthernetProtocol,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![0; ETH_HEADER + payload.len()];
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        EthernetRepr {
            src_addr: EthernetAddress(src),
            dst_addr: EthernetAddress(dst),
            ethertype,
        }
        .emit(&mut eth);
        eth.payload_mut().copy_from_slice(payload);
        f
    }

    pub(crate) fn ipv4(
        src: Ipv4Address,
        dst: Ipv4Address,
        protocol: IpProtocol,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0; IPV4_HEADER + payload.len()];
        let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
        Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: protocol,
            payload_len: payload.len(),
            hop_limit: 64,
        }
        .emit(&mut ip, &ChecksumCapabilities::default());
        ip.payload_mut().copy_from_slice(payload);
        p
    }

    pub(crate) fn udp(
        src: Ipv4Address,
        dst: Ipv4Address,
        ports: (u16, u16),
        payload: &[u8],
    ) -> Vec<u8> {
        let mut p = vec![0; UDP_HEADER + payload.len()];
        UdpRepr {
            src_port: ports.0,
            dst_port: ports.1,
        }
        .emit(
            &mut UdpPacket::new_unchecked(&mut p[..]),
            &src.into(),
            &dst.into(),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
        p
    }

    pub(crate) fn client_msg(message_type: DhcpMessageType, mac: [u8; 6]) -> DhcpRepr<'static> {
        DhcpRepr {
            message_type,
            transaction_id: 0x5eed_0001,
            secs: 0,
            client_hardware_address: EthernetAddress(mac),
            client_ip: Ipv4Address::UNSPECIFIED,
            your_ip: Ipv4Address::UNSPECIFIED,
            server_ip: Ipv4Address::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: None,
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        }
    }

    pub(crate) fn dhcp_payload(req: &DhcpRepr) -> Vec<u8> {
        let mut p = vec![0; req.buffer_len()];
        req.emit(&mut DhcpPacket::new_unchecked(&mut p[..]))
            .unwrap();
        p
    }

    /// A client's DHCP message as it goes on the wire: broadcast from
    /// 0.0.0.0 without an address, unicast to the server with one.
    pub(crate) fn dhcp_frame(req: &DhcpRepr) -> Vec<u8> {
        let src = req.client_ip;
        let (dst, dst_mac) = if src.is_unspecified() {
            (Ipv4Address::BROADCAST, [0xff; 6])
        } else {
            (SERVER, MgmtConfig::for_lan(LAN).mac)
        };
        let payload = dhcp_payload(req);
        let u = udp(src, dst, (DHCP_CLIENT_PORT, DHCP_SERVER_PORT), &payload);
        let ip = ipv4(src, dst, IpProtocol::Udp, &u);
        ethernet(
            req.client_hardware_address.0,
            dst_mac,
            EthernetProtocol::Ipv4,
            &ip,
        )
    }

    /// The fields of a DHCP reply the tests look at.
    #[derive(Debug)]
    struct Reply {
        eth_dst: [u8; 6],
        ip_dst: Ipv4Address,
        message_type: DhcpMessageType,
        yiaddr: Ipv4Address,
        ciaddr: Ipv4Address,
        mask: Option<Ipv4Address>,
        router: Option<Ipv4Address>,
        server: Option<Ipv4Address>,
        lease: Option<u32>,
        t1: Option<u32>,
        t2: Option<u32>,
        xid: u32,
    }

    fn parse_reply(f: &[u8]) -> Reply {
        let eth = EthernetFrame::new_checked(f).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
        let packet = DhcpPacket::new_checked(udp.payload()).unwrap();
        let d = DhcpRepr::parse(&packet).unwrap();
        Reply {
            eth_dst: eth.dst_addr().0,
            ip_dst: ip.dst_addr(),
            message_type: d.message_type,
            yiaddr: d.your_ip,
            ciaddr: d.client_ip,
            mask: d.subnet_mask,
            router: d.router,
            server: d.server_identifier,
            lease: d.lease_duration,
            t1: d.renew_duration,
            t2: d.rebind_duration,
            xid: d.transaction_id,
        }
    }

    fn dhcp(m: &mut Mgmt, now_ns: u64, req: &DhcpRepr) -> Option<Reply> {
        let replies = feed(m, now_ns, &dhcp_frame(req));
        check_counters(m);
        replies.first().map(|f| parse_reply(f))
    }

    /// `req` sent from `port` (whatever its `chaddr` says).
    fn dhcp_from(m: &mut Mgmt, now_ns: u64, port: ClientPort, req: &DhcpRepr) -> Option<Reply> {
        let replies = feed_from(m, now_ns, port, &dhcp_frame(req));
        check_counters(m);
        replies.first().map(|f| parse_reply(f))
    }

    fn discover(m: &mut Mgmt, now_ns: u64, mac: [u8; 6]) -> Option<Reply> {
        dhcp(m, now_ns, &client_msg(DhcpMessageType::Discover, mac))
    }

    /// SELECTING: the REQUEST after an OFFER of `ip`.
    fn select(m: &mut Mgmt, now_ns: u64, mac: [u8; 6], ip: Ipv4Address) -> Option<Reply> {
        let mut req = client_msg(DhcpMessageType::Request, mac);
        req.requested_ip = Some(ip);
        req.server_identifier = Some(SERVER);
        dhcp(m, now_ns, &req)
    }

    /// DISCOVER, OFFER, REQUEST, ACK; the leased address.
    fn lease(m: &mut Mgmt, now_ns: u64, mac: [u8; 6]) -> Ipv4Address {
        let offer = discover(m, now_ns, mac).expect("an offer");
        assert_eq!(offer.message_type, DhcpMessageType::Offer);
        let ack = select(m, now_ns, mac, offer.yiaddr).expect("an ack");
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.yiaddr, offer.yiaddr);
        ack.yiaddr
    }

    fn renew(m: &mut Mgmt, now_ns: u64, mac: [u8; 6], ip: Ipv4Address) -> Option<Reply> {
        let mut req = client_msg(DhcpMessageType::Request, mac);
        req.client_ip = ip;
        dhcp(m, now_ns, &req)
    }

    fn arp_request(src: [u8; 6], src_ip: Ipv4Address, target: Ipv4Address) -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(src),
            source_protocol_addr: src_ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let mut p = vec![0; repr.buffer_len()];
        repr.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
        ethernet(src, [0xff; 6], EthernetProtocol::Arp, &p)
    }

    fn echo_request(src: [u8; 6], src_ip: Ipv4Address, dst: Ipv4Address, data: &[u8]) -> Vec<u8> {
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x77,
            seq_no: 5,
            data,
        };
        let mut p = vec![0; repr.buffer_len()];
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(&mut p[..]),
            &ChecksumCapabilities::default(),
        );
        let ip = ipv4(src_ip, dst, IpProtocol::Icmp, &p);
        ethernet(
            src,
            MgmtConfig::for_lan(LAN).mac,
            EthernetProtocol::Ipv4,
            &ip,
        )
    }

    fn ip(last: u8) -> Ipv4Address {
        Ipv4Address::new(10, 77, 3, last)
    }

    #[test]
    fn default_plan_gives_every_lan_its_own_valid_subnet_and_mac() {
        let c = MgmtConfig::for_lan(0);
        assert_eq!(c.addr, [10, 77, 0, 1]);
        assert_eq!(
            (c.pool_first, c.pool_last),
            ([10, 77, 0, 100], [10, 77, 0, 199])
        );
        assert_eq!(c.mac, [0x02, 0x78, 0x73, 0x6d, 0, 0]);
        assert_eq!(MgmtConfig::for_lan(258).addr, [10, 78, 2, 1]);
        assert_eq!(MgmtConfig::for_lan(45823).addr, [10, 255, 255, 1]);
        assert_eq!(MgmtConfig::for_lan(45824).addr, [10, 0, 0, 1]);
        assert_eq!(MgmtConfig::for_lan(u16::MAX).addr, [10, 76, 255, 1]);
        let mut nets = HashSet::new();
        let mut macs = HashSet::new();
        for lan in 0..=u16::MAX {
            let c = MgmtConfig::for_lan(lan);
            let m = Mgmt::new(c).unwrap();
            assert_eq!(m.slots.len(), 100);
            assert!(nets.insert([c.addr[1], c.addr[2]]));
            assert!(macs.insert(c.mac));
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let ok = cfg(10);
        let with = |f: &dyn Fn(&mut MgmtConfig)| {
            let mut c = ok;
            f(&mut c);
            Mgmt::new(c).err()
        };
        assert_eq!(with(&|_| {}), None);
        assert_eq!(
            with(&|c| c.mac = [0x03, 0, 0, 0, 0, 1]),
            Some(ConfigError::MacNotUnicast)
        );
        assert_eq!(with(&|c| c.mac = [0; 6]), Some(ConfigError::MacNotUnicast));
        assert_eq!(with(&|c| c.prefix_len = 31), Some(ConfigError::BadPrefix));
        assert_eq!(with(&|c| c.prefix_len = 7), Some(ConfigError::BadPrefix));
        assert_eq!(
            with(&|c| c.addr = [10, 77, 3, 0]),
            Some(ConfigError::AddrNotHost)
        );
        assert_eq!(
            with(&|c| c.addr = [10, 77, 3, 255]),
            Some(ConfigError::AddrNotHost)
        );
        assert_eq!(
            with(&|c| c.pool_last = [10, 77, 3, 255]),
            Some(ConfigError::BadPool)
        );
        assert_eq!(
            with(&|c| c.pool_last = [10, 77, 4, 5]),
            Some(ConfigError::BadPool)
        );
        assert_eq!(
            with(&|c| c.pool_last = [10, 77, 3, 99]),
            Some(ConfigError::BadPool)
        );
        assert_eq!(
            with(&|c| c.addr = [10, 77, 3, 105]),
            Some(ConfigError::PoolHasEndpoint)
        );
        assert_eq!(
            with(&|c| {
                c.prefix_len = 16;
                c.pool_first = [10, 77, 4, 0];
                c.pool_last = [10, 77, 8, 0];
            }),
            Some(ConfigError::PoolTooLarge)
        );
        assert_eq!(
            with(&|c| c.lease_secs = 59),
            Some(ConfigError::LeaseTooShort)
        );
    }

    #[test]
    fn wants_broadcast_and_its_own_mac_only() {
        let m = Mgmt::new(cfg(4)).unwrap();
        assert!(m.wants([0xff; 6]));
        assert!(m.wants(m.mac()));
        assert!(!m.wants(member(1)));
        assert!(!m.wants([0x01, 0x00, 0x5e, 0, 0, 1]));
    }

    #[test]
    fn arp_for_the_endpoint_is_answered() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let replies = feed(&mut m, 0, &arp_request(member(1), ip(100), SERVER));
        assert_eq!(replies.len(), 1);
        let f = &replies[0];
        assert_eq!(f.len(), MIN_FRAME);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.dst_addr().0, member(1));
        let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!(
            repr,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(m.mac()),
                source_protocol_addr: SERVER,
                target_hardware_addr: EthernetAddress(member(1)),
                target_protocol_addr: ip(100),
            }
        );
        assert_eq!(m.counters().arp_replies, 1);
        check_counters(&m);
        // A request naming another member as its sender (in the ARP
        // payload) is not answered: the reply would go to that member.
        let mut forged = arp_request(member(2), ip(101), SERVER);
        forged[6..12].copy_from_slice(&member(1));
        assert!(feed(&mut m, 0, &forged).is_empty());
        assert_eq!(m.counters().drops.bad_source, 1);
        check_counters(&m);
    }

    #[test]
    fn with_the_dhcp_server_off_dhcp_goes_unanswered_and_arp_still_works() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        m.set_dhcp_server(false);
        assert!(!m.dhcp_server());
        assert!(discover(&mut m, 0, member(1)).is_none());
        assert_eq!(m.counters().dhcp_offers, 0);
        assert_eq!(m.counters().drops.not_for_us, 1);
        assert_eq!(
            feed(&mut m, 0, &arp_request(member(1), ip(100), SERVER)).len(),
            1
        );
        check_counters(&m);
        m.set_dhcp_server(true);
        assert!(discover(&mut m, 0, member(1)).is_some());
    }

    #[test]
    fn arp_for_members_and_other_addresses_is_not_answered() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let leased = lease(&mut m, 0, member(1));
        assert!(feed(&mut m, 1, &arp_request(member(2), ip(101), leased)).is_empty());
        assert!(feed(&mut m, 1, &arp_request(member(2), ip(101), ip(2))).is_empty());
        assert_eq!(m.counters().drops.not_for_us, 2);
        // An ARP reply, or a request from a multicast sender, gets nothing.
        let mut reply = arp_request(member(2), ip(101), SERVER);
        reply[ETH_HEADER + 7] = 2;
        assert!(feed(&mut m, 1, &reply).is_empty());
        assert_eq!(m.counters().drops.unsupported, 1);
        let mut mcast = arp_request(member(2), ip(101), SERVER);
        mcast[ETH_HEADER + 8] = 0x01;
        assert!(feed(&mut m, 1, &mcast).is_empty());
        assert_eq!(m.counters().drops.bad_source, 1);
        assert_eq!(m.counters().arp_replies, 0);
        check_counters(&m);
    }

    #[test]
    fn echo_requests_to_the_endpoint_are_answered_within_one_frame() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        for len in [0usize, 56, 1472] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let replies = feed(&mut m, 0, &echo_request(member(1), ip(100), SERVER, &data));
            assert_eq!(replies.len(), 1, "{len} bytes");
            let f = &replies[0];
            assert_eq!(f.len(), (ETH_HEADER + IPV4_HEADER + 8 + len).max(MIN_FRAME));
            let eth = EthernetFrame::new_checked(&f[..]).unwrap();
            assert_eq!(eth.dst_addr().0, member(1));
            let ipp = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert_eq!((ipp.src_addr(), ipp.dst_addr()), (SERVER, ip(100)));
            let icmp = Icmpv4Packet::new_checked(ipp.payload()).unwrap();
            assert_eq!(
                Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap(),
                Icmpv4Repr::EchoReply {
                    ident: 0x77,
                    seq_no: 5,
                    data: &data
                }
            );
        }
        assert_eq!(m.counters().echo_replies, 3);
        // One more byte and the reply would not fit 1514 bytes.
        let big = vec![0u8; 1473];
        assert!(feed(&mut m, 0, &echo_request(member(1), ip(100), SERVER, &big)).is_empty());
        assert_eq!(m.counters().drops.too_big, 1);
        // Jumbo pings too.
        let jumbo = vec![0u8; 8000];
        assert!(feed(&mut m, 0, &echo_request(member(1), ip(100), SERVER, &jumbo)).is_empty());
        assert_eq!(m.counters().drops.too_big, 2);
        // Not to its address, to the subnet broadcast, from a broadcast
        // source: nothing.
        assert!(feed(&mut m, 0, &echo_request(member(1), ip(100), ip(7), &[1])).is_empty());
        assert!(feed(&mut m, 0, &echo_request(member(1), ip(100), ip(255), &[1])).is_empty());
        assert_eq!(m.counters().drops.not_for_us, 2);
        assert!(feed(&mut m, 0, &echo_request(member(1), ip(255), SERVER, &[1])).is_empty());
        assert_eq!(m.counters().drops.bad_source, 1);
        check_counters(&m);
    }

    #[test]
    fn ipv4_fragments_are_dropped_and_counted() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let whole = echo_request(member(1), ip(100), SERVER, &[9; 64]);
        for (flags_and_offset, name) in [(0x2000u16, "first"), (0x0010, "last"), (0x2010, "middle")]
        {
            let mut f = whole.clone();
            let mut ipp = Ipv4Packet::new_unchecked(&mut f[ETH_HEADER..]);
            ipp.set_more_frags(flags_and_offset & 0x2000 != 0);
            ipp.set_frag_offset((flags_and_offset & 0x1fff) * 8);
            ipp.fill_checksum();
            assert!(feed(&mut m, 0, &f).is_empty(), "{name}");
        }
        assert_eq!(m.counters().drops.fragment, 3);
        assert_eq!(feed(&mut m, 0, &whole).len(), 1);
        check_counters(&m);
    }

    #[test]
    fn discover_gets_an_offer_and_request_an_ack_with_the_options() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let offer = discover(&mut m, 0, member(1)).unwrap();
        assert_eq!(offer.message_type, DhcpMessageType::Offer);
        assert_eq!(offer.xid, 0x5eed_0001);
        assert_eq!(offer.yiaddr, ip(100));
        assert_eq!(offer.ciaddr, Ipv4Address::UNSPECIFIED);
        // No address yet, no broadcast flag: unicast to chaddr at yiaddr.
        assert_eq!((offer.eth_dst, offer.ip_dst), (member(1), ip(100)));
        assert_eq!(offer.mask, Some(Ipv4Address::new(255, 255, 255, 0)));
        assert_eq!(offer.server, Some(SERVER));
        assert_eq!(offer.router, None);
        assert_eq!(
            (offer.lease, offer.t1, offer.t2),
            (Some(120), Some(60), Some(105))
        );
        // The offer is not a lease yet.
        assert_eq!(m.leases().count(), 0);

        let ack = select(&mut m, SEC, member(1), ip(100)).unwrap();
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!((ack.eth_dst, ack.ip_dst), (member(1), ip(100)));
        assert_eq!(
            (ack.lease, ack.t1, ack.t2),
            (Some(120), Some(60), Some(105))
        );
        assert_eq!(ack.router, None);
        assert_eq!(
            m.leases().collect::<Vec<_>>(),
            [Lease {
                mac: member(1),
                ip: ip(100).octets(),
                port: Some(1),
                expires_ns: 121 * SEC
            }]
        );

        // The broadcast flag makes replies broadcast.
        let mut req = client_msg(DhcpMessageType::Discover, member(2));
        req.broadcast = true;
        let offer = dhcp(&mut m, 2 * SEC, &req).unwrap();
        assert_eq!(
            (offer.eth_dst, offer.ip_dst),
            ([0xff; 6], Ipv4Address::BROADCAST)
        );
        assert_eq!(offer.yiaddr, ip(101));
        let c = m.counters();
        assert_eq!((c.dhcp_offers, c.dhcp_acks, c.replies_out), (2, 1, 3));
    }

    #[test]
    fn a_client_gets_its_address_back() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let a = lease(&mut m, 0, member(1));
        let b = lease(&mut m, 0, member(2));
        assert_ne!(a, b);
        // Asking again while bound, after expiry, after release.
        assert_eq!(discover(&mut m, SEC, member(1)).unwrap().yiaddr, a);
        assert_eq!(m.leases().filter(|l| l.is_active(SEC)).count(), 2);
        assert_eq!(lease(&mut m, 500 * SEC, member(1)), a);
        let mut rel = client_msg(DhcpMessageType::Release, member(1));
        rel.client_ip = a;
        rel.server_identifier = Some(SERVER);
        assert!(dhcp(&mut m, 501 * SEC, &rel).is_none());
        assert_eq!(m.counters().dhcp_releases, 1);
        let l = m.leases().find(|l| l.mac == member(1)).unwrap();
        assert!(!l.is_active(501 * SEC));
        assert_eq!(lease(&mut m, 502 * SEC, member(1)), a);
        // Another client's release of that address does nothing.
        let mut rel = client_msg(DhcpMessageType::Release, member(2));
        rel.client_ip = a;
        assert!(dhcp(&mut m, 503 * SEC, &rel).is_none());
        assert_eq!(m.counters().dhcp_releases, 1);
        assert!(m
            .leases()
            .any(|l| l.mac == member(1) && l.is_active(503 * SEC)));
    }

    #[test]
    fn a_requested_address_is_honoured_when_free_and_in_the_pool() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let mut req = client_msg(DhcpMessageType::Discover, member(1));
        req.requested_ip = Some(ip(102));
        assert_eq!(dhcp(&mut m, 0, &req).unwrap().yiaddr, ip(102));
        // Held by member 1's offer: member 2 gets another.
        req.client_hardware_address = EthernetAddress(member(2));
        assert_eq!(dhcp(&mut m, 0, &req).unwrap().yiaddr, ip(100));
        // Outside the pool: ignored.
        req.client_hardware_address = EthernetAddress(member(3));
        req.requested_ip = Some(ip(50));
        assert_eq!(dhcp(&mut m, 0, &req).unwrap().yiaddr, ip(101));
    }

    #[test]
    fn requests_in_each_client_state() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        // SELECTING another server's offer gives ours up, silently.
        let offer = discover(&mut m, 0, member(1)).unwrap();
        let mut req = client_msg(DhcpMessageType::Request, member(1));
        req.requested_ip = Some(Ipv4Address::new(192, 168, 1, 50));
        req.server_identifier = Some(Ipv4Address::new(192, 168, 1, 1));
        assert!(dhcp(&mut m, 0, &req).is_none());
        assert_eq!(m.slots[m.pool_index(offer.yiaddr).unwrap()], Slot::Free);
        assert_eq!(m.counters().drops.not_for_us, 1);

        let a = lease(&mut m, 0, member(1));
        // INIT-REBOOT: its own address, a free one, one outside the
        // subnet or pool, another member's.
        let b = lease(&mut m, 0, member(2));
        let mut reboot = client_msg(DhcpMessageType::Request, member(1));
        reboot.requested_ip = Some(a);
        let ack = dhcp(&mut m, SEC, &reboot).unwrap();
        assert_eq!((ack.message_type, ack.yiaddr), (DhcpMessageType::Ack, a));
        for wrong in [Ipv4Address::new(192, 168, 7, 7), ip(50), b] {
            reboot.requested_ip = Some(wrong);
            let nak = dhcp(&mut m, SEC, &reboot).unwrap();
            assert_eq!(nak.message_type, DhcpMessageType::Nak, "{wrong}");
            assert_eq!(
                (nak.eth_dst, nak.ip_dst),
                ([0xff; 6], Ipv4Address::BROADCAST)
            );
            assert_eq!(
                (nak.yiaddr, nak.lease, nak.server),
                (Ipv4Address::UNSPECIFIED, None, Some(SERVER))
            );
        }
        assert_eq!(m.counters().dhcp_naks, 3);
        // Member 1 still holds `a`.
        assert!(m.leases().any(|l| l.mac == member(1) && l.ip == a.octets()));
        reboot.requested_ip = Some(ip(103));
        assert_eq!(dhcp(&mut m, SEC, &reboot).unwrap().yiaddr, ip(103));
        // It holds one address only.
        assert_eq!(m.leases().filter(|l| l.mac == member(1)).count(), 1);

        // RENEWING: unicast to ciaddr, lease extended.
        let ack = renew(&mut m, 50 * SEC, member(1), ip(103)).unwrap();
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!(
            (ack.eth_dst, ack.ip_dst, ack.ciaddr),
            (member(1), ip(103), ip(103))
        );
        let l = m.leases().find(|l| l.mac == member(1)).unwrap();
        assert_eq!(l.expires_ns, 170 * SEC);
        // Renewing another member's address: NAK.
        let nak = renew(&mut m, 50 * SEC, member(1), b).unwrap();
        assert_eq!(nak.message_type, DhcpMessageType::Nak);
        // A REQUEST naming no address at all is malformed.
        assert!(dhcp(
            &mut m,
            50 * SEC,
            &client_msg(DhcpMessageType::Request, member(1))
        )
        .is_none());
        assert_eq!(m.counters().drops.malformed, 1);
    }

    #[test]
    fn a_declined_address_stays_out_of_service_for_a_while() {
        let mut m = Mgmt::new(cfg(2)).unwrap();
        let a = lease(&mut m, 0, member(1));
        let mut dec = client_msg(DhcpMessageType::Decline, member(1));
        dec.requested_ip = Some(a);
        dec.server_identifier = Some(SERVER);
        assert!(dhcp(&mut m, SEC, &dec).is_none());
        assert_eq!(m.counters().dhcp_declines, 1);
        // Member 1 gets the other address, then nobody gets any.
        let b = lease(&mut m, 2 * SEC, member(1));
        assert_ne!(a, b);
        assert!(discover(&mut m, 3 * SEC, member(2)).is_none());
        assert_eq!(m.counters().drops.pool_full, 1);
        // After the hold the declined address comes back.
        let later = SEC + DECLINE_HOLD_SECS * SEC;
        assert_eq!(discover(&mut m, later, member(2)).unwrap().yiaddr, a);
        // Declining someone else's address does nothing.
        dec.client_hardware_address = EthernetAddress(member(3));
        dec.requested_ip = Some(b);
        assert!(dhcp(&mut m, later, &dec).is_none());
        assert_eq!(m.counters().dhcp_declines, 1);
    }

    #[test]
    fn inform_is_acked_without_a_lease() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let mut inf = client_msg(DhcpMessageType::Inform, member(1));
        inf.client_ip = ip(20);
        let ack = dhcp(&mut m, 0, &inf).unwrap();
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!((ack.yiaddr, ack.ciaddr), (Ipv4Address::UNSPECIFIED, ip(20)));
        assert_eq!((ack.eth_dst, ack.ip_dst), (member(1), ip(20)));
        assert_eq!(ack.mask, Some(Ipv4Address::new(255, 255, 255, 0)));
        assert_eq!(ack.server, Some(SERVER));
        assert_eq!((ack.lease, ack.t1, ack.t2), (None, None, None));
        assert_eq!(m.leases().count(), 0);
        assert_eq!(m.counters().dhcp_informs, 1);
        // Without a usable ciaddr there is nowhere to answer.
        inf.client_ip = ip(255);
        let f = dhcp_frame(&inf);
        assert!(feed(&mut m, 0, &f).is_empty());
        assert_eq!(m.counters().drops.bad_source, 1);
    }

    #[test]
    fn made_up_macs_cannot_take_more_than_the_pool_or_disturb_bound_members() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let a = lease(&mut m, 0, member(1));
        for n in 100..1100 {
            discover(&mut m, SEC, member(n));
        }
        let c = m.counters();
        assert_eq!((c.dhcp_offers, c.drops.pool_full), (1 + 3, 997));
        assert_eq!(m.slots.len(), 4);
        // The bound member renews; a new one gets nothing, its REQUEST a NAK.
        assert_eq!(
            renew(&mut m, 60 * SEC, member(1), a).unwrap().message_type,
            DhcpMessageType::Ack
        );
        assert!(discover(&mut m, 60 * SEC, member(2)).is_none());
        let mut req = client_msg(DhcpMessageType::Request, member(2));
        req.requested_ip = Some(ip(101));
        assert_eq!(
            dhcp(&mut m, 60 * SEC, &req).unwrap().message_type,
            DhcpMessageType::Nak
        );
        // Once the offers lapse, new members are served.
        let after = SEC + OFFER_HOLD_SECS * SEC;
        let b = lease(&mut m, after, member(2));
        assert_ne!(a, b);
        assert!(m.leases().count() <= 4);
        check_counters(&m);
        // An expired lease is taken only when nothing else is free, and
        // the least recently held first.
        let mut m = Mgmt::new(cfg(2)).unwrap();
        let a = lease(&mut m, 0, member(1));
        let b = lease(&mut m, 10 * SEC, member(2));
        assert!(discover(&mut m, 20 * SEC, member(3)).is_none());
        assert_eq!(lease(&mut m, 200 * SEC, member(3)), a);
        assert_eq!(lease(&mut m, 200 * SEC, member(2)), b);
        assert!(discover(&mut m, 200 * SEC, member(1)).is_none());
    }

    /// Issue 17 item 3: a member writing another member's `chaddr` can
    /// neither release nor decline that member's lease (before: the
    /// address was blocked for 600 s and the victim's renewal NAKed).
    #[test]
    fn a_port_cannot_end_or_decline_another_ports_lease() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let victim = member(1);
        let a = lease(&mut m, 0, victim);
        let attacker: ClientPort = 7;
        let mut dec = client_msg(DhcpMessageType::Decline, victim);
        dec.requested_ip = Some(a);
        dec.server_identifier = Some(SERVER);
        assert!(dhcp_from(&mut m, SEC, attacker, &dec).is_none());
        let mut rel = client_msg(DhcpMessageType::Release, victim);
        rel.client_ip = a;
        rel.server_identifier = Some(SERVER);
        assert!(dhcp_from(&mut m, SEC, attacker, &rel).is_none());
        let c = m.counters();
        assert_eq!((c.dhcp_declines, c.dhcp_releases), (0, 0));
        // Nor take it over: a DISCOVER or REQUEST for the victim's client.
        assert!(dhcp_from(
            &mut m,
            SEC,
            attacker,
            &client_msg(DhcpMessageType::Discover, victim)
        )
        .is_none());
        let mut req = client_msg(DhcpMessageType::Request, victim);
        req.requested_ip = Some(a);
        let nak = dhcp_from(&mut m, SEC, attacker, &req).unwrap();
        assert_eq!(nak.message_type, DhcpMessageType::Nak);
        assert_eq!(m.counters().drops.port_limit, 1);
        // The victim renews as before, and can still release its own.
        let ack = renew(&mut m, 2 * SEC, victim, a).unwrap();
        assert_eq!((ack.message_type, ack.yiaddr), (DhcpMessageType::Ack, a));
        rel.client_ip = a;
        assert!(dhcp(&mut m, 3 * SEC, &rel).is_none());
        assert_eq!(m.counters().dhcp_releases, 1);
    }

    /// Issue 17 item 3: one port inventing clients holds at most
    /// `MAX_HELD_PER_PORT` addresses, whether it DISCOVERs or REQUESTs
    /// addresses straight away (INIT-REBOOT, no offer) and renews them for
    /// ever; the others are served (before: the whole pool, for an hour).
    #[test]
    fn one_port_inventing_clients_holds_only_its_share() {
        let mut m = Mgmt::new(cfg(16)).unwrap();
        let attacker: ClientPort = 900;
        for n in 0..16u8 {
            let mut req = client_msg(DhcpMessageType::Request, member(1000 + u16::from(n)));
            req.requested_ip = Some(ip(100 + n));
            dhcp_from(&mut m, 0, attacker, &req);
        }
        for n in 0..16 {
            let disc = client_msg(DhcpMessageType::Discover, member(2000 + n));
            dhcp_from(&mut m, 0, attacker, &disc);
        }
        assert_eq!(m.counters().dhcp_acks, MAX_HELD_PER_PORT as u64);
        assert_eq!(m.counters().dhcp_offers, 0);
        assert_eq!(m.leases().count(), MAX_HELD_PER_PORT);
        // Every other member still gets an address.
        for n in 1..=(16 - MAX_HELD_PER_PORT as u16) {
            lease(&mut m, SEC, member(n));
        }
        // Its own lease is its own: it renews, and can end one to take
        // another.
        let mut rel = client_msg(DhcpMessageType::Release, member(1000));
        rel.client_ip = ip(100);
        rel.server_identifier = Some(SERVER);
        assert!(dhcp_from(&mut m, 2 * SEC, attacker, &rel).is_none());
        assert_eq!(m.counters().dhcp_releases, 1);
        check_counters(&m);
    }

    /// A removed port's leases end: its client gets its address back from
    /// the port it comes back on; nothing stays charged to the old port.
    #[test]
    fn a_removed_ports_leases_end_and_come_back_to_their_client() {
        let mut m = Mgmt::new(cfg(2)).unwrap();
        let a = lease(&mut m, 0, member(1));
        m.forget_port(1, SEC);
        let mut req = client_msg(DhcpMessageType::Request, member(1));
        req.requested_ip = Some(a);
        let ack = dhcp_from(&mut m, 2 * SEC, 5, &req).unwrap();
        assert_eq!((ack.message_type, ack.yiaddr), (DhcpMessageType::Ack, a));
    }

    /// Valid frames of every kind the endpoint serves.
    fn valid_frames() -> Vec<Vec<u8>> {
        let mut req = client_msg(DhcpMessageType::Request, member(1));
        req.requested_ip = Some(ip(100));
        req.server_identifier = Some(SERVER);
        vec![
            dhcp_frame(&client_msg(DhcpMessageType::Discover, member(1))),
            dhcp_frame(&req),
            arp_request(member(1), ip(100), SERVER),
            echo_request(member(1), ip(100), SERVER, &[0x42; 56]),
        ]
    }

    #[test]
    fn hostile_frames_are_dropped_and_counted() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        let mut dropped = 0;
        let mut expect_drop = |m: &mut Mgmt, f: &[u8], what: &str| {
            let before = m.counters().drops.total();
            assert!(feed(m, 0, f).is_empty(), "{what}");
            assert_eq!(m.counters().drops.total(), before + 1, "{what}");
            check_counters(m);
            dropped += 1;
        };
        for f in valid_frames() {
            // Every truncation (the frames carry no padding, so each cut
            // loses part of the ARP or IPv4 packet).
            for len in 0..f.len() {
                expect_drop(&mut m, &f[..len], &format!("cut at {len}"));
            }
            // A flipped bit in the total length, the header checksum or
            // the destination address breaks the header checksum.
            if f[12..14] == [0x08, 0x00] {
                for byte in [
                    ETH_HEADER + 2,
                    ETH_HEADER + 3,
                    ETH_HEADER + 10,
                    ETH_HEADER + 16,
                ] {
                    let mut g = f.clone();
                    g[byte] ^= 0x04;
                    expect_drop(&mut m, &g, &format!("flip in byte {byte}"));
                }
                // A total length beyond the frame or below the header.
                for total in [f.len() as u16, 19, 0] {
                    let mut g = f.clone();
                    g[ETH_HEADER + 2..ETH_HEADER + 4].copy_from_slice(&total.to_be_bytes());
                    Ipv4Packet::new_unchecked(&mut g[ETH_HEADER..]).fill_checksum();
                    expect_drop(&mut m, &g, &format!("total length {total}"));
                }
                // A header length beyond the packet.
                let mut g = f.clone();
                g[ETH_HEADER] = 0x4f;
                expect_drop(&mut m, &g, "ihl 15");
            }
            // Wrong ethertypes.
            for t in [[0x86, 0xdd], [0x81, 0x00], [0x88, 0xcc], [0x00, 0x2e]] {
                let mut g = f.clone();
                g[12..14].copy_from_slice(&t);
                expect_drop(&mut m, &g, "ethertype");
            }
            // Another destination, a multicast or own source MAC.
            let mut g = f.clone();
            g[..6].copy_from_slice(&member(9));
            expect_drop(&mut m, &g, "dst mac");
            let mut g = f.clone();
            g[6] |= 1;
            expect_drop(&mut m, &g, "multicast src");
            let mut g = f.clone();
            g[6..12].copy_from_slice(&m.mac());
            expect_drop(&mut m, &g, "own src");
        }
        let c = m.counters();
        assert_eq!(c.drops.total(), dropped);
        assert_eq!(c.replies_out, 0);
        assert!(c.drops.malformed > 0 && c.drops.ethertype > 0 && c.drops.not_for_us > 0);
        assert!(c.drops.bad_source > 0);
    }

    /// A DHCP DISCOVER carrying `options` after the magic cookie.
    fn discover_with_options(options: &[u8]) -> Vec<u8> {
        let mut payload = dhcp_payload(&client_msg(DhcpMessageType::Discover, member(1)));
        payload.truncate(240);
        payload.extend_from_slice(options);
        let u = udp(
            Ipv4Address::UNSPECIFIED,
            Ipv4Address::BROADCAST,
            (DHCP_CLIENT_PORT, DHCP_SERVER_PORT),
            &payload,
        );
        let ipp = ipv4(
            Ipv4Address::UNSPECIFIED,
            Ipv4Address::BROADCAST,
            IpProtocol::Udp,
            &u,
        );
        ethernet(member(1), [0xff; 6], EthernetProtocol::Ipv4, &ipp)
    }

    #[test]
    fn dhcp_option_garbage_is_dropped() {
        let mut m = Mgmt::new(cfg(4)).unwrap();
        // The well-formed one is served.
        assert_eq!(
            feed(&mut m, 0, &discover_with_options(&[53, 1, 1, 255])).len(),
            1
        );
        for (options, what) in [
            (&[][..], "no options"),
            (&[255][..], "no message type"),
            (&[53, 1][..], "message type cut short"),
            (&[53, 2, 1, 1, 255][..], "message type of two bytes"),
            (&[53, 1, 2, 255][..], "an OFFER in a BOOTREQUEST"),
            (
                &[53, 1, 1, 61, 7, 9, 1, 2, 3, 4, 5, 6, 255][..],
                "non-Ethernet client id",
            ),
            (&[53, 200, 1][..], "option longer than the packet"),
            (&[0; 300][..], "only padding"),
        ] {
            assert!(
                feed(&mut m, 0, &discover_with_options(options)).is_empty(),
                "{what}"
            );
        }
        // Bad magic cookie, hardware length, BOOTREPLY opcode, relayed.
        let good = discover_with_options(&[53, 1, 1, 255]);
        let dhcp_at = ETH_HEADER + IPV4_HEADER + UDP_HEADER;
        for (offset, value, what) in [
            (236, 0x62, "magic"),
            (2, 16, "hlen"),
            (1, 6, "htype"),
            (0, 2, "op"),
        ] {
            let mut g = good.clone();
            g[dhcp_at + offset] = value;
            refill_udp(&mut g);
            assert!(feed(&mut m, 0, &g).is_empty(), "{what}");
        }
        // A message type smoltcp does not know.
        assert!(feed(&mut m, 0, &discover_with_options(&[53, 1, 9, 255])).is_empty());
        assert_eq!(m.counters().drops.malformed, 8 + 4 + 1);
        // Another server's OFFER (BOOTREPLY), a relayed DISCOVER: not served.
        let mut g = discover_with_options(&[53, 1, 2, 255]);
        g[dhcp_at] = 2;
        refill_udp(&mut g);
        assert!(feed(&mut m, 0, &g).is_empty());
        let mut g = good.clone();
        g[dhcp_at + 24] = 10; // giaddr 10.0.0.0
        refill_udp(&mut g);
        assert!(feed(&mut m, 0, &g).is_empty());
        assert_eq!(m.counters().drops.unsupported, 1 + 1);
        // Another UDP port.
        let mut g = good.clone();
        g[ETH_HEADER + IPV4_HEADER + 3] = 68;
        refill_udp(&mut g);
        assert!(feed(&mut m, 0, &g).is_empty());
        assert_eq!(m.counters().drops.not_for_us, 1);
        check_counters(&m);
    }

    fn refill_udp(f: &mut [u8]) {
        let mut ipp = Ipv4Packet::new_unchecked(&mut f[ETH_HEADER..]);
        let (src, dst) = (ipp.src_addr(), ipp.dst_addr());
        UdpPacket::new_unchecked(ipp.payload_mut()).fill_checksum(&src.into(), &dst.into());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any frame, made up or a valid one damaged: no panic, replies
        /// well-formed, every frame counted.
        #[test]
        fn arbitrary_frames_never_panic(
            random in proptest::collection::vec(any::<u8>(), 0..1600),
            pick in 0usize..4,
            flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
            cut in any::<u16>(),
            step in 0u64..1000,
        ) {
            let mut m = Mgmt::new(cfg(4)).unwrap();
            feed(&mut m, 0, &random);
            let mut f = valid_frames().swap_remove(pick);
            for (at, x) in flips {
                let i = usize::from(at) % f.len();
                f[i] ^= x;
            }
            f.truncate(usize::from(cut) % (f.len() + 200));
            feed(&mut m, step * SEC, &f);
            check_counters(&m);
            prop_assert_eq!(m.counters().frames_in, 2);
        }
    }

    /// An in-memory Ethernet link between a smoltcp interface and the
    /// endpoint.
    #[derive(Default)]
    struct Link {
        to_iface: VecDeque<Vec<u8>>,
        from_iface: VecDeque<Vec<u8>>,
    }

    struct Rx(Vec<u8>);
    struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

    impl RxToken for Rx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }

    impl TxToken for Tx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut frame = vec![0; len];
            let r = f(&mut frame);
            self.0.push_back(frame);
            r
        }
    }

    impl Device for Link {
        type RxToken<'a> = Rx;
        type TxToken<'a> = Tx<'a>;

        fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
            let frame = self.to_iface.pop_front()?;
            Some((Rx(frame), Tx(&mut self.from_iface)))
        }

        fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
            Some(Tx(&mut self.from_iface))
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = MAX_FRAME;
            caps
        }
    }

    /// A smoltcp member with a DHCP client on the endpoint's LAN.
    struct Member {
        mac: [u8; 6],
        link: Link,
        iface: Interface,
        sockets: SocketSet<'static>,
        dhcp: smoltcp::iface::SocketHandle,
        now_ns: u64,
        /// Frames the member sent, for the tests to inspect.
        sent: Vec<Vec<u8>>,
    }

    impl Member {
        fn new(mac: [u8; 6]) -> Self {
            let mut link = Link::default();
            let mut config = Config::new(EthernetAddress(mac).into());
            config.random_seed = 0x5eed;
            let iface = Interface::new(config, &mut link, Instant::from_micros(0));
            let mut sockets = SocketSet::new(vec![]);
            let dhcp = sockets.add(dhcpv4::Socket::new());
            Self {
                mac,
                link,
                iface,
                sockets,
                dhcp,
                now_ns: 0,
                sent: Vec::new(),
            }
        }

        fn instant(&self) -> Instant {
            Instant::from_micros((self.now_ns / 1000) as i64)
        }

        /// One round: the interface runs, the switch hands the endpoint
        /// what it wants and the member what is addressed to it. Returns
        /// the DHCP client's event.
        fn step(&mut self, m: &mut Mgmt) -> Option<bool> {
            let now = self.instant();
            self.iface.poll(now, &mut self.link, &mut self.sockets);
            while let Some(f) = self.link.from_iface.pop_front() {
                let dst = EthernetFrame::new_checked(&f[..]).unwrap().dst_addr().0;
                if m.wants(dst) {
                    let mut replies = Vec::new();
                    m.receive(self.now_ns, port_of(&f), &f, &mut |r| {
                        replies.push(r.to_vec())
                    });
                    for r in replies {
                        check_reply(m.mac(), &r);
                        let dst = EthernetFrame::new_checked(&r[..]).unwrap().dst_addr().0;
                        if dst == self.mac || dst == [0xff; 6] {
                            self.link.to_iface.push_back(r);
                        }
                    }
                }
                self.sent.push(f);
            }
            self.iface.poll(now, &mut self.link, &mut self.sockets);
            match self.sockets.get_mut::<dhcpv4::Socket>(self.dhcp).poll() {
                Some(dhcpv4::Event::Configured(c)) => {
                    let cidr = c.address;
                    assert_eq!(c.router, None);
                    self.iface.update_ip_addrs(|a| {
                        a.clear();
                        a.push(IpCidr::Ipv4(cidr)).unwrap();
                    });
                    Some(true)
                }
                Some(dhcpv4::Event::Deconfigured) => {
                    self.iface.update_ip_addrs(|a| a.clear());
                    Some(false)
                }
                None => None,
            }
        }

        fn address(&self) -> Option<(Ipv4Address, u8)> {
            self.iface.ipv4_addr().map(|a| {
                let cidr = self.iface.ip_addrs()[0];
                (a, cidr.prefix_len())
            })
        }

        /// Steps of `step_ns` until `done` or `limit_ns` (simulated time).
        fn run(
            &mut self,
            m: &mut Mgmt,
            step_ns: u64,
            limit_ns: u64,
            mut done: impl FnMut(&mut Self, Option<bool>) -> bool,
        ) -> bool {
            while self.now_ns < limit_ns {
                let event = self.step(m);
                if done(self, event) {
                    return true;
                }
                self.now_ns += step_ns;
            }
            false
        }
    }

    #[test]
    fn smoltcp_dhcp_client_gets_a_lease_and_renews_it() {
        let mut m = Mgmt::new(cfg(8)).unwrap();
        let mut c = Member::new(member(1));
        assert!(
            c.run(&mut m, 10_000_000, 10 * SEC, |_, e| e == Some(true)),
            "no lease"
        );
        let (addr, prefix) = c.address().unwrap();
        assert_eq!(prefix, 24);
        assert_eq!(addr, ip(100));
        let leases: Vec<Lease> = m.leases().collect();
        assert_eq!(leases.len(), 1);
        assert_eq!((leases[0].mac, leases[0].ip), (member(1), addr.octets()));
        let first_expiry = leases[0].expires_ns;
        let counters = m.counters();
        assert_eq!((counters.dhcp_offers, counters.dhcp_acks), (1, 1));

        // Past T1 (60 s of 120) the client renews by unicast to the
        // endpoint, which means it resolved the endpoint's MAC by ARP.
        let sent_before = c.sent.len();
        let lost = c.run(&mut m, 100_000_000, 200 * SEC, |_, e| e == Some(false));
        assert!(!lost, "the client lost its lease");
        assert_eq!(c.address().unwrap().0, addr);
        let l = m.leases().next().unwrap();
        assert!(
            l.expires_ns > first_expiry && l.is_active(c.now_ns),
            "{l:?}"
        );
        let counters = m.counters();
        assert!(counters.dhcp_acks >= 3, "{counters:?}");
        assert!(counters.arp_replies >= 1, "{counters:?}");
        assert_eq!(counters.dhcp_naks, 0);
        let renewals = c.sent[sent_before..]
            .iter()
            .filter(|f| {
                let eth = EthernetFrame::new_checked(&f[..]).unwrap();
                eth.dst_addr().0 == m.mac()
                    && eth.ethertype() == EthernetProtocol::Ipv4
                    && Ipv4Packet::new_checked(eth.payload()).unwrap().dst_addr() == SERVER
            })
            .count();
        assert!(renewals >= 2, "{renewals} unicast renewals");
        check_counters(&m);
    }

    #[test]
    fn smoltcp_ping_gets_replies() {
        let mut m = Mgmt::new(cfg(8)).unwrap();
        let mut c = Member::new(member(2));
        assert!(c.run(&mut m, 10_000_000, 10 * SEC, |_, e| e == Some(true)));
        let icmp_socket = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        );
        let h = c.sockets.add(icmp_socket);
        c.sockets
            .get_mut::<icmp::Socket>(h)
            .bind(icmp::Endpoint::Ident(0x22))
            .unwrap();
        let caps = ChecksumCapabilities::default();
        for seq_no in 0..3u16 {
            let data = [seq_no as u8; 100];
            let req = Icmpv4Repr::EchoRequest {
                ident: 0x22,
                seq_no,
                data: &data,
            };
            let s = c.sockets.get_mut::<icmp::Socket>(h);
            let buf = s.send(req.buffer_len(), IpAddress::Ipv4(SERVER)).unwrap();
            req.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
            let mut reply = None;
            c.run(&mut m, 1_000_000, c.now_ns + SEC, |c, _| {
                let s = c.sockets.get_mut::<icmp::Socket>(h);
                if s.can_recv() {
                    let (p, from) = s.recv().unwrap();
                    reply = Some((p.to_vec(), from));
                    true
                } else {
                    false
                }
            });
            let (p, from) = reply.expect("an echo reply");
            assert_eq!(from, IpAddress::Ipv4(SERVER));
            let r = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&p[..]).unwrap(), &caps).unwrap();
            assert_eq!(
                r,
                Icmpv4Repr::EchoReply {
                    ident: 0x22,
                    seq_no,
                    data: &data
                }
            );
        }
        assert_eq!(m.counters().echo_replies, 3);
        check_counters(&m);
    }

    #[test]
    fn two_smoltcp_members_get_different_addresses() {
        let mut m = Mgmt::new(cfg(8)).unwrap();
        let mut a = Member::new(member(1));
        let mut b = Member::new(member(2));
        assert!(a.run(&mut m, 10_000_000, 10 * SEC, |_, e| e == Some(true)));
        b.now_ns = a.now_ns;
        assert!(b.run(&mut m, 10_000_000, 20 * SEC, |_, e| e == Some(true)));
        let (x, y) = (a.address().unwrap().0, b.address().unwrap().0);
        assert_ne!(x, y);
        for addr in [x, y] {
            assert!(m.pool_index(addr).is_some());
        }
    }
}
