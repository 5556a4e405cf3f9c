//! Port policy: what a member may send beyond its own MAC (issue 22).
//!
//! - **Address binding**: with it on, a port's IPv4 sources and the sender
//!   of its ARP are limited to its active DHCP leases on the LAN and to the
//!   addresses dom0 assigned it; its IPv6 sources to the link-local
//!   address made from its MAC (EUI-64) and to assigned prefixes; a
//!   Neighbor Advertisement may only claim such an address. DHCP client
//!   traffic always passes (from `0.0.0.0` too), but only with the port's
//!   own MAC as `chaddr`. A member is no router and no DHCP server on the
//!   LAN: Router Advertisements and DHCP server replies from it are
//!   dropped. Other ethertypes (VLAN tags included, which would hide an
//!   address) are dropped.
//! - **Rate limits**, like Linux netback's `rate=`: a token bucket of bytes
//!   per second with a burst, and optionally one of frames per second, on
//!   what the member sends. A port out of credit is not read until it
//!   refills: its tx lane fills up, which its member sees as backpressure
//!   (TCP then runs at the rate, nothing is dropped).
//! - **Private ports**: a private port's frames reach only netback-uk's
//!   endpoint (and an uplink, when there is one), and no other member's
//!   frames reach it: Qubes' client isolation, a private VLAN.
//!
//! Everything here reads the switch's private copy of a frame; the checks
//! run once per frame (per GSO chain: every segment repeats its headers),
//! with work bounded by the frame's headers, never by its payload.
use alloc::vec::Vec;

use smoltcp::wire::{
    ArpHardware, ArpOperation, ArpPacket, DhcpPacket, EthernetProtocol, IpProtocol, Ipv6Packet,
    UdpPacket,
};

use share_hal::platform::DomId;
use share_hal::wire::vdevice::{PolicyItem, PortPolicyRepr};

use crate::fdb::Mac;

/// At most this many addresses (IPv4 and IPv6 together) assigned to one
/// port; more are refused when the port is made.
pub const MAX_ASSIGNED: usize = 8;

/// At most this many IPv6 extension headers are walked to find an ICMPv6
/// header; a chain longer than that is dropped when binding is on.
const MAX_EXT_HEADERS: usize = 4;

/// An IPv4 network a port may send from (`prefix` 32: one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: [u8; 4],
    pub prefix: u8,
}

/// An IPv6 network a port may send from (`prefix` 128: one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Net {
    pub addr: [u8; 16],
    pub prefix: u8,
}

/// A limit on what a member sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Bytes per second (Ethernet frames without FCS).
    pub bytes_per_sec: u64,
    /// Bytes that may be sent at once after a quiet period.
    pub burst_bytes: u64,
    /// Frames per second (0: no frame limit); a burst of one second's
    /// worth.
    pub frames_per_sec: u32,
}

/// dom0's policy for one port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortRules {
    pub bind_addresses: bool,
    pub ipv4: Vec<Ipv4Net>,
    pub ipv6: Vec<Ipv6Net>,
    pub rate: Option<Rate>,
    pub private: bool,
}

impl PortRules {
    /// Checks what dom0 asked for.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.ipv4.len() + self.ipv6.len() > MAX_ASSIGNED {
            return Err("more assigned addresses than a port takes");
        }
        if self.ipv4.iter().any(|n| n.prefix > 32) || self.ipv6.iter().any(|n| n.prefix > 128) {
            return Err("an assigned prefix longer than its address");
        }
        if let Some(r) = self.rate {
            if r.bytes_per_sec == 0 || r.burst_bytes == 0 {
                return Err("a rate limit of zero bytes");
            }
        }
        Ok(())
    }
}

/// The port policy items of a backend's vdevice page, by entry: each adds
/// to the rules of the port of its (LAN, member), whether that port exists
/// yet or not, so dom0 may write them before or after the port.
#[derive(Debug, Default)]
pub struct PolicyBook {
    items: Vec<(u32, PortPolicyRepr)>,
}

impl PolicyBook {
    /// Puts `item` at entry `index` (`None`: the entry was emptied).
    pub fn set(&mut self, index: u32, item: Option<PortPolicyRepr>) {
        self.items.retain(|(i, _)| *i != index);
        if let Some(item) = item {
            self.items.push((index, item));
        }
    }

    /// The item at entry `index`.
    pub fn get(&self, index: u32) -> Option<PortPolicyRepr> {
        self.items
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, it)| *it)
    }

    /// `base` (the port entry's own rules) with the items of (`lan`,
    /// `member`) added; the last rate item wins.
    pub fn rules(&self, lan: u16, member: DomId, base: &PortRules) -> PortRules {
        let mut r = base.clone();
        for (_, it) in self
            .items
            .iter()
            .filter(|(_, it)| it.lan == lan && it.member == member)
        {
            match it.item {
                PolicyItem::Rate {
                    kbit_per_sec,
                    burst_bytes,
                    frames_per_sec,
                } => {
                    r.rate = Some(Rate {
                        bytes_per_sec: u64::from(kbit_per_sec) * 125,
                        burst_bytes: u64::from(burst_bytes),
                        frames_per_sec,
                    })
                }
                PolicyItem::Ipv4 { addr, prefix } => r.ipv4.push(Ipv4Net { addr, prefix }),
                PolicyItem::Ipv6 { net, prefix } => {
                    let mut addr = [0u8; 16];
                    addr[..8].copy_from_slice(&net);
                    r.ipv6.push(Ipv6Net { addr, prefix });
                }
            }
        }
        r
    }
}

/// Why a frame was refused by a port's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An IPv4 source the port is not bound to.
    Ipv4Source,
    /// ARP whose sender (hardware or protocol address) is not the port's.
    ArpSender,
    /// An IPv6 source the port is not bound to.
    Ipv6Source,
    /// A Neighbor Advertisement for an address the port is not bound to.
    NdTarget,
    /// A DHCP request with another hardware address as `chaddr`.
    DhcpChaddr,
    /// A Router Advertisement or DHCP server reply from a member.
    RogueServer,
    /// An ethertype other than IPv4, ARP and IPv6 (VLAN tags too), or
    /// headers too short or too long to check.
    Unchecked,
    /// To or from a private port (between members).
    Private,
}

/// Frames dropped by policy, by [`Refusal`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyDrops {
    pub ipv4_source: u64,
    pub arp_sender: u64,
    pub ipv6_source: u64,
    pub nd_target: u64,
    pub dhcp_chaddr: u64,
    pub rogue_server: u64,
    pub unchecked: u64,
    pub private: u64,
}

impl PolicyDrops {
    pub fn count(&mut self, r: Refusal) {
        *match r {
            Refusal::Ipv4Source => &mut self.ipv4_source,
            Refusal::ArpSender => &mut self.arp_sender,
            Refusal::Ipv6Source => &mut self.ipv6_source,
            Refusal::NdTarget => &mut self.nd_target,
            Refusal::DhcpChaddr => &mut self.dhcp_chaddr,
            Refusal::RogueServer => &mut self.rogue_server,
            Refusal::Unchecked => &mut self.unchecked,
            Refusal::Private => &mut self.private,
        } += 1;
    }

    pub fn total(&self) -> u64 {
        self.ipv4_source
            + self.arp_sender
            + self.ipv6_source
            + self.nd_target
            + self.dhcp_chaddr
            + self.rogue_server
            + self.unchecked
            + self.private
    }
}

/// A leased address as the port's guard keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldLease {
    pub ip: [u8; 4],
    pub expires_ns: u64,
}

/// A token bucket on the switch's clock; the balance may go below zero by
/// one frame (the frame that took the last credit is sent whole).
#[derive(Clone, Copy, Debug)]
struct Bucket {
    per_sec: u64,
    depth: i64,
    tokens: i64,
    at_ns: u64,
}

impl Bucket {
    fn new(per_sec: u64, depth: u64, now: u64) -> Bucket {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        Bucket {
            per_sec,
            depth,
            tokens: depth,
            at_ns: now,
        }
    }

    fn refill(&mut self, now: u64) {
        let dt = now.saturating_sub(self.at_ns);
        // The common case on a busy port: the switch reads the clock once
        // per round, so every frame after the first sees the same time.
        if dt == 0 {
            return;
        }
        // dt * per_sec / 1e9 without overflow for any dt below ~584 years
        // at 100 Gbit/s (u128).
        let add = (u128::from(dt) * u128::from(self.per_sec) / 1_000_000_000) as u64;
        if add > 0 {
            let add = i64::try_from(add).unwrap_or(i64::MAX);
            self.tokens = self.tokens.saturating_add(add).min(self.depth);
            // Keep the remainder of a partial token: move the clock by
            // what `add` paid for, not to `now` (exactness at low rates).
            let paid = (u128::from(add as u64) * 1_000_000_000 / u128::from(self.per_sec)) as u64;
            self.at_ns = if self.tokens == self.depth {
                now
            } else {
                self.at_ns.saturating_add(paid).min(now)
            };
        }
    }

    /// `now` if the balance is above zero; else when it holds a quarter
    /// of the burst again: an out-of-credit port is read again in batches,
    /// not a frame per refill (each a wakeup of the whole switch).
    fn ready_at(&self, now: u64) -> u64 {
        if self.tokens > 0 {
            return now;
        }
        let quantum = (self.depth / 4).max(1);
        let owed = (quantum - self.tokens) as u128;
        let ns = (owed * 1_000_000_000).div_ceil(u128::from(self.per_sec.max(1)));
        self.at_ns
            .saturating_add(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// A port's policy at run time: its rules, its leases, its buckets.
#[derive(Debug)]
pub struct Guard {
    rules: PortRules,
    mac: Mac,
    link_local: [u8; 16],
    leases: Vec<HeldLease>,
    /// The assigned IPv4 networks as (network, mask), for the per-frame
    /// check.
    v4: Vec<(u32, u32)>,
    bytes: Option<Bucket>,
    frames: Option<Bucket>,
    pub drops: PolicyDrops,
}

impl Guard {
    pub fn new(rules: PortRules, mac: Mac, now: u64) -> Guard {
        let bytes = rules
            .rate
            .map(|r| Bucket::new(r.bytes_per_sec, r.burst_bytes, now));
        let frames = rules.rate.filter(|r| r.frames_per_sec > 0).map(|r| {
            Bucket::new(
                u64::from(r.frames_per_sec),
                u64::from(r.frames_per_sec),
                now,
            )
        });
        let v4 = rules
            .ipv4
            .iter()
            .map(|n| {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(n.prefix.min(32)))
                    .unwrap_or(0);
                (u32::from_be_bytes(n.addr) & mask, mask)
            })
            .collect();
        Guard {
            v4,
            link_local: link_local(&mac),
            rules,
            mac,
            leases: Vec::new(),
            bytes,
            frames,
            drops: PolicyDrops::default(),
        }
    }

    pub fn rules(&self) -> &PortRules {
        &self.rules
    }

    pub fn is_private(&self) -> bool {
        self.rules.private
    }

    /// The port's leases changed (the LAN's DHCP server bound, renewed or
    /// ended one): at most the server's per-port limit.
    pub fn set_leases(&mut self, leases: impl Iterator<Item = HeldLease>) {
        self.leases.clear();
        self.leases.extend(leases);
    }

    /// Whether the member may send now; if not, when it may again (the
    /// switch reads nothing from the port until then).
    pub fn ready(&mut self, now: u64) -> Result<(), u64> {
        let mut at = now;
        for b in [&mut self.bytes, &mut self.frames].into_iter().flatten() {
            b.refill(now);
            at = at.max(b.ready_at(now));
        }
        if at > now {
            Err(at)
        } else {
            Ok(())
        }
    }

    /// Whether the member has credit left at the time of the last
    /// [`Guard::ready`] (the switch's clock does not move within a round,
    /// so no refill is due between its frames).
    #[inline]
    pub fn has_credit(&self) -> bool {
        self.bytes.is_none_or(|b| b.tokens > 0) && self.frames.is_none_or(|b| b.tokens > 0)
    }

    /// Charges a frame the member sent (after [`Guard::ready`] allowed it).
    pub fn charge(&mut self, len: usize) {
        if let Some(b) = &mut self.bytes {
            b.tokens = b.tokens.saturating_sub(len as i64);
        }
        if let Some(b) = &mut self.frames {
            b.tokens -= 1;
        }
    }

    /// Checks a frame the member sent (source MAC already checked).
    pub fn check(&self, frame: &[u8], now: u64) -> Result<(), Refusal> {
        if !self.rules.bind_addresses {
            return Ok(());
        }
        let (Some(ethertype), Some(payload)) = (frame.get(12..14), frame.get(14..)) else {
            return Err(Refusal::Unchecked);
        };
        match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
            0x0800 => self.check_ipv4(payload, now),
            0x0806 => self.check_arp(payload, now),
            0x86dd => self.check_ipv6(payload),
            _ => Err(Refusal::Unchecked),
        }
    }

    fn ipv4_allowed(&self, ip: [u8; 4], now: u64) -> bool {
        let a = u32::from_be_bytes(ip);
        self.leases.iter().any(|l| l.ip == ip && now < l.expires_ns)
            || self.v4.iter().any(|&(net, mask)| a & mask == net)
    }

    fn ipv6_allowed(&self, ip: &[u8; 16]) -> bool {
        *ip == self.link_local
            || self
                .rules
                .ipv6
                .iter()
                .any(|n| in_net(ip, &n.addr, n.prefix))
    }

    /// Whether [`check`](Self::check) reads `frame` past its first
    /// [`crate::switch::PRIVATE_HEAD`] bytes, judged from those bytes
    /// (`head`): only for a DHCP request of a bound port (UDP to port 67,
    /// whose `chaddr` is checked in the whole datagram). Every other check
    /// reads the Ethernet header and the IPv4 (up to 60 bytes, then the
    /// UDP ports), IPv6 (40) or ARP (28) header.
    pub fn reads_whole_frame(&self, head: &[u8]) -> bool {
        if !self.rules.bind_addresses || head.get(12..14) != Some(&[0x08, 0x00]) {
            return false;
        }
        let Some(packet) = head.get(14..) else {
            return false;
        };
        let ihl = usize::from(packet.first().copied().unwrap_or(0) & 0x0f) * 4;
        packet.get(9) == Some(&17) && packet.get(ihl + 2..ihl + 4) == Some(&[0, 67])
    }

    /// Read by hand, not through smoltcp's checked views: this runs for
    /// every frame of a bound port (the 64-byte rate must not notice it),
    /// and only the source address, the protocol, the fragment offset and
    /// the UDP ports matter. The source sits at the same offset whatever
    /// the header length says; a header a receiver would refuse is its
    /// problem, not a way around the binding.
    fn check_ipv4(&self, packet: &[u8], now: u64) -> Result<(), Refusal> {
        let (Some(&vihl), Some(src)) = (packet.first(), packet.get(12..16)) else {
            return Err(Refusal::Unchecked);
        };
        let ihl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return Err(Refusal::Unchecked);
        }
        let src = [src[0], src[1], src[2], src[3]];
        let first_fragment = packet
            .get(6..8)
            .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x1fff == 0);
        let udp_ports = packet
            .get(ihl..ihl + 4)
            .filter(|_| first_fragment && packet.get(9) == Some(&17))
            .map(|p| {
                (
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                )
            });
        match udp_ports {
            // A DHCP client: before it has an address, and when it renews;
            // always with its own MAC as chaddr.
            Some((68, 67)) => {
                let udp = packet
                    .get(ihl..)
                    .and_then(|u| UdpPacket::new_checked(u).ok())
                    .ok_or(Refusal::Unchecked)?;
                let dhcp =
                    DhcpPacket::new_checked(udp.payload()).map_err(|_| Refusal::Unchecked)?;
                if dhcp.client_hardware_address().0 != self.mac {
                    return Err(Refusal::DhcpChaddr);
                }
                if src == [0; 4] {
                    return Ok(());
                }
            }
            Some((67, _)) => return Err(Refusal::RogueServer),
            _ => {}
        }
        if self.ipv4_allowed(src, now) {
            Ok(())
        } else {
            Err(Refusal::Ipv4Source)
        }
    }

    fn check_arp(&self, packet: &[u8], now: u64) -> Result<(), Refusal> {
        let arp = ArpPacket::new_checked(packet).map_err(|_| Refusal::Unchecked)?;
        if arp.hardware_type() != ArpHardware::Ethernet
            || arp.protocol_type() != EthernetProtocol::Ipv4
            || arp.hardware_len() != 6
            || arp.protocol_len() != 4
        {
            return Err(Refusal::Unchecked);
        }
        if arp.source_hardware_addr() != self.mac {
            return Err(Refusal::ArpSender);
        }
        let mut sender = [0u8; 4];
        sender.copy_from_slice(arp.source_protocol_addr());
        // An ARP probe (RFC 5227) asks from 0.0.0.0 before claiming.
        let probe = sender == [0; 4] && arp.operation() == ArpOperation::Request;
        if probe || self.ipv4_allowed(sender, now) {
            Ok(())
        } else {
            Err(Refusal::ArpSender)
        }
    }

    fn check_ipv6(&self, packet: &[u8]) -> Result<(), Refusal> {
        let ip = Ipv6Packet::new_checked(packet).map_err(|_| Refusal::Unchecked)?;
        let src = ip.src_addr().octets();
        let (next, l4) = upper_layer(ip.next_header(), ip.payload())?;
        let icmp_type = (next == IpProtocol::Icmpv6)
            .then(|| l4.first().copied())
            .flatten();
        match icmp_type {
            // Router Advertisement: a member is no router here.
            Some(134) => return Err(Refusal::RogueServer),
            // Neighbor Advertisement: its target is the address claimed.
            Some(136) => {
                let target: [u8; 16] = l4
                    .get(8..24)
                    .and_then(|t| t.try_into().ok())
                    .ok_or(Refusal::Unchecked)?;
                if !self.ipv6_allowed(&target) {
                    return Err(Refusal::NdTarget);
                }
            }
            _ => {}
        }
        // Duplicate address detection and MLD reports before an address
        // is up come from `::` (ICMPv6 only).
        if src == [0; 16] && icmp_type.is_some() {
            return Ok(());
        }
        if self.ipv6_allowed(&src) {
            Ok(())
        } else {
            Err(Refusal::Ipv6Source)
        }
    }
}

/// The upper-layer protocol and its bytes, past at most
/// [`MAX_EXT_HEADERS`] hop-by-hop, routing and destination options
/// headers. A fragment header is not walked: neighbor discovery is never
/// fragmented (RFC 6980), so a fragmented ICMPv6 claim is refused.
fn upper_layer(mut next: IpProtocol, mut bytes: &[u8]) -> Result<(IpProtocol, &[u8]), Refusal> {
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                let (Some(&nh), Some(&len)) = (bytes.first(), bytes.get(1)) else {
                    return Err(Refusal::Unchecked);
                };
                let skip = (usize::from(len) + 1) * 8;
                bytes = bytes.get(skip..).ok_or(Refusal::Unchecked)?;
                next = IpProtocol::from(nh);
            }
            IpProtocol::Ipv6Frag => {
                let nh = *bytes.first().ok_or(Refusal::Unchecked)?;
                return if IpProtocol::from(nh) == IpProtocol::Icmpv6 {
                    Err(Refusal::Unchecked)
                } else {
                    Ok((IpProtocol::Ipv6Frag, bytes))
                };
            }
            _ => return Ok((next, bytes)),
        }
    }
    Err(Refusal::Unchecked)
}

/// Whether `addr` lies in `net/prefix` (both the same length).
fn in_net(addr: &[u8], net: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if addr.len() != net.len() || full > addr.len() || addr[..full] != net[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (addr.get(full), net.get(full)) {
        (Some(a), Some(n)) => a & mask == n & mask,
        _ => false,
    }
}

/// The IPv6 link-local address made from `mac` (modified EUI-64, RFC
/// 4291 appendix A): what Linux assigns by default.
pub fn link_local(mac: &Mac) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8] = mac[0] ^ 0x02;
    a[9] = mac[1];
    a[10] = mac[2];
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13] = mac[3];
    a[14] = mac[4];
    a[15] = mac[5];
    a
}

#[cfg(test)]
mod tests;
