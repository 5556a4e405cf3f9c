//! DHCP snooping on a LAN's uplink.
//!
//! On an uplinked LAN the network's DHCP server leases the members their
//! addresses, not netback-uk's; a port with `BIND_ADDRESSES` may send only
//! from addresses it holds a lease for, so the switch learns those leases
//! from the server's answers as they come in through the uplink, as a
//! hardware switch's DHCP snooping does. Only the uplink is believed: a
//! member's DHCP server messages never get past the port policy (its
//! `rogue_server` refusal), so no member can hand itself an address.
//!
//! [`snoop`] reads a frame the uplink delivered (a private copy) and says
//! whether it is a DHCPACK leasing an address to a client hardware address,
//! or a DHCPNAK telling one to stop using its address. [`Snooped`] keeps
//! what a port learned, bounded to [`MAX_SNOOPED_PER_PORT`] addresses.

use smoltcp::wire::{
    DhcpMessageType, DhcpPacket, DhcpRepr, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet,
    UdpPacket, DHCP_CLIENT_PORT, DHCP_SERVER_PORT,
};

use crate::policy::HeldLease;

/// Addresses a port may hold from the network's server at once; a new one
/// beyond takes the place of the one that expires first.
pub const MAX_SNOOPED_PER_PORT: usize = 4;

/// The longest lease believed (a week): a server's "infinite" lease
/// (0xffff_ffff s) still ends, and `now + lease` cannot overflow.
pub const MAX_LEASE_SECS: u64 = 7 * 24 * 3600;

/// What a DHCP server's frame says about a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerSaid {
    /// DHCPACK: `ip` is leased to `chaddr` for `secs` seconds.
    Ack {
        chaddr: [u8; 6],
        ip: [u8; 4],
        secs: u32,
    },
    /// DHCPNAK: `chaddr` must stop using the address it asked for.
    Nak { chaddr: [u8; 6] },
}

/// Whether `frame` (Ethernet, untagged) is a DHCP server's ACK leasing an
/// address or its NAK. Anything else, malformed or not DHCP, is `None`:
/// the frame is switched as any other, only nothing is learned from it.
pub fn snoop(frame: &[u8]) -> Option<ServerSaid> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let udp = UdpPacket::new_checked(ip.payload()).ok()?;
    if udp.src_port() != DHCP_SERVER_PORT || udp.dst_port() != DHCP_CLIENT_PORT {
        return None;
    }
    let dhcp = DhcpPacket::new_checked(udp.payload()).ok()?;
    let repr = DhcpRepr::parse(&dhcp).ok()?;
    let chaddr = repr.client_hardware_address.0;
    match repr.message_type {
        // An ACK to DHCPINFORM leases nothing: no address, no lease time.
        DhcpMessageType::Ack => {
            let secs = repr.lease_duration?;
            let ip = repr.your_ip.octets();
            (ip != [0; 4] && secs > 0).then_some(ServerSaid::Ack { chaddr, ip, secs })
        }
        DhcpMessageType::Nak => Some(ServerSaid::Nak { chaddr }),
        _ => None,
    }
}

/// The addresses a port holds from the network's DHCP server.
#[derive(Clone, Debug, Default)]
pub struct Snooped {
    leases: [Option<HeldLease>; MAX_SNOOPED_PER_PORT],
    /// ACKs taken for this port: the network may send any number, so the
    /// switch says so at each power of two only.
    acks: u64,
}

impl Snooped {
    /// The server leased `ip` for `secs` seconds at `now_ns`. A renewal
    /// of an address held moves its end; a new address takes a free place,
    /// or an expired one's, or the one ending first. Returns whether this
    /// ACK is worth a log line (the 1st, 2nd, 4th, 8th... of the port).
    pub fn ack(&mut self, ip: [u8; 4], secs: u32, now_ns: u64) -> bool {
        let secs = u64::from(secs).min(MAX_LEASE_SECS);
        let lease = HeldLease {
            ip,
            expires_ns: now_ns.saturating_add(secs * 1_000_000_000),
        };
        let place = self
            .leases
            .iter()
            .position(|l| l.is_some_and(|l| l.ip == ip))
            .or_else(|| {
                self.leases
                    .iter()
                    .position(|l| l.is_none_or(|l| l.expires_ns <= now_ns))
            })
            .unwrap_or_else(|| {
                (0..MAX_SNOOPED_PER_PORT)
                    .min_by_key(|&i| self.leases[i].map_or(0, |l| l.expires_ns))
                    .unwrap_or(0)
            });
        self.leases[place] = Some(lease);
        self.acks = self.acks.saturating_add(1);
        self.acks.is_power_of_two()
    }

    /// The server said NAK: the client uses none of its addresses from it.
    pub fn nak(&mut self) {
        self.leases = Default::default();
    }

    /// ACKs taken for this port so far.
    pub fn acks(&self) -> u64 {
        self.acks
    }

    /// The leases not yet expired at `now_ns`.
    pub fn live(&self, now_ns: u64) -> impl Iterator<Item = HeldLease> + '_ {
        self.leases
            .iter()
            .flatten()
            .copied()
            .filter(move |l| now_ns < l.expires_ns)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{EthernetAddress, EthernetRepr, IpAddress, Ipv4Address, Ipv4Repr, UdpRepr};

    const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 3];
    const SERVER: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];

    fn dhcp(kind: DhcpMessageType, yiaddr: [u8; 4], lease: Option<u32>, sport: u16) -> Vec<u8> {
        server_msg(kind, CLIENT, yiaddr, lease, sport)
    }

    /// A DHCP server's message `kind` for `chaddr` from UDP port `sport`,
    /// broadcast, leasing `yiaddr` for `lease` seconds.
    pub(crate) fn server_msg(
        kind: DhcpMessageType,
        chaddr: [u8; 6],
        yiaddr: [u8; 4],
        lease: Option<u32>,
        sport: u16,
    ) -> Vec<u8> {
        let repr = DhcpRepr {
            message_type: kind,
            transaction_id: 7,
            secs: 0,
            client_hardware_address: EthernetAddress(chaddr),
            client_ip: Ipv4Address::UNSPECIFIED,
            your_ip: Ipv4Address::from(yiaddr),
            server_ip: Ipv4Address::new(10, 9, 0, 1),
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(Ipv4Address::new(10, 9, 0, 1)),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: lease,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let udp = UdpRepr {
            src_port: sport,
            dst_port: DHCP_CLIENT_PORT,
        };
        let src = Ipv4Address::new(10, 9, 0, 1);
        let dst = Ipv4Address::BROADCAST;
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Udp,
            payload_len: 8 + repr.buffer_len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress(SERVER),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0u8; 14 + 20 + 8 + repr.buffer_len()];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut frame);
        let caps = ChecksumCapabilities::default();
        let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
        ip.emit(&mut packet, &caps);
        let mut u = UdpPacket::new_unchecked(packet.payload_mut());
        udp.emit(
            &mut u,
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            repr.buffer_len(),
            |b| repr.emit(&mut DhcpPacket::new_unchecked(b)).unwrap(),
            &caps,
        );
        buf
    }

    #[test]
    fn an_ack_leases_its_address_to_its_client() {
        let f = dhcp(
            DhcpMessageType::Ack,
            [10, 9, 0, 50],
            Some(600),
            DHCP_SERVER_PORT,
        );
        assert_eq!(
            snoop(&f),
            Some(ServerSaid::Ack {
                chaddr: CLIENT,
                ip: [10, 9, 0, 50],
                secs: 600
            })
        );
        let nak = dhcp(DhcpMessageType::Nak, [0; 4], None, DHCP_SERVER_PORT);
        assert_eq!(snoop(&nak), Some(ServerSaid::Nak { chaddr: CLIENT }));
    }

    #[test]
    fn offers_informs_other_ports_and_broken_frames_teach_nothing() {
        let offer = dhcp(DhcpMessageType::Offer, [10, 9, 0, 50], Some(600), 67);
        assert_eq!(snoop(&offer), None, "an offer leases nothing yet");
        let inform_ack = dhcp(DhcpMessageType::Ack, [0; 4], None, 67);
        assert_eq!(snoop(&inform_ack), None);
        let no_time = dhcp(DhcpMessageType::Ack, [10, 9, 0, 50], None, 67);
        assert_eq!(snoop(&no_time), None);
        let from_client_port = dhcp(DhcpMessageType::Ack, [10, 9, 0, 50], Some(600), 68);
        assert_eq!(snoop(&from_client_port), None);
        let good = dhcp(DhcpMessageType::Ack, [10, 9, 0, 50], Some(600), 67);
        for cut in 0..good.len() {
            // Shorter than the DHCP message's fixed part or its options:
            // nothing, and no panic.
            let _ = snoop(&good[..cut]);
        }
        let mut fragment = good.clone();
        fragment[14 + 6] |= 0x20; // more fragments
        assert_eq!(snoop(&fragment), None);
    }

    #[test]
    fn a_port_holds_a_bounded_set_renewals_in_place() {
        let mut s = Snooped::default();
        let sec = 1_000_000_000u64;
        assert!(s.ack([10, 0, 0, 1], 10, 0), "the first is said");
        assert!(s.ack([10, 0, 0, 1], 20, 5 * sec));
        assert_eq!(
            s.live(0).collect::<Vec<_>>(),
            vec![HeldLease {
                ip: [10, 0, 0, 1],
                expires_ns: 25 * sec
            }]
        );
        let said: Vec<bool> = (2..=10u8)
            .map(|i| s.ack([10, 0, 0, i], 100 + u32::from(i), 0))
            .collect();
        // ACKs 3..=11: the 4th and the 8th are said.
        assert_eq!(said.iter().filter(|&&x| x).count(), 2);
        assert_eq!(s.acks(), 11);
        let live: Vec<_> = s.live(0).map(|l| l.ip[3]).collect();
        assert_eq!(live.len(), MAX_SNOOPED_PER_PORT);
        assert!(live.contains(&10), "the newest is held: {live:?}");
        assert_eq!(s.live(200 * sec).count(), 0, "all expired");
        s.ack([10, 0, 0, 11], u32::MAX, u64::MAX - 1);
        assert_eq!(s.live(u64::MAX - 1).count(), 1, "no overflow");
        s.nak();
        assert_eq!(s.live(0).count(), 0);
    }
}
