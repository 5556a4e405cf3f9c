//! Where a frame's partial checksum is, when the frame came flagged as
//! partial without saying where: Xen's netif carries only a flag
//! (`NETRXF_csum_blank`), and the receiver finds the TCP or UDP checksum
//! field itself, as Linux's netfront does (`skb_checksum_setup`). The
//! switch's frames say where (`csum_start`, `csum_offset`), so a frame
//! from an uplink gets them here before it is switched; and a frame for
//! an uplink whose backend finds them the same way may go out partial
//! only if this finds what the frame says.
//!
//! The frame is the switch's private copy of what a peer sent: every
//! length and offset is checked against it, nothing is trusted, and the
//! work is a fixed number of header reads.
//!
//! The field holds the pseudo-header sum (Linux's `CHECKSUM_PARTIAL`
//! convention, which netback and netfront both keep); it is not
//! recomputed: a peer that lies there only makes its own frame's checksum
//! wrong, which it could do anyway.

use smoltcp::wire::{
    checksum, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, Ipv6Packet,
};

const ETHERTYPE_VLAN: u16 = 0x8100;
const IPV6_HEADER_LEN: usize = 40;
/// The checksum fields, from the L4 header.
pub const TCP_CSUM_OFFSET: u16 = 16;
pub const UDP_CSUM_OFFSET: u16 = 6;
const TCP_HEADER_MIN: usize = 20;
const UDP_HEADER_LEN: usize = 8;

/// A partial TCP or UDP checksum found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    /// Where the checksummed bytes start (the L4 header).
    pub start: u16,
    /// The checksum field, from `start`.
    pub offset: u16,
    /// The frame's length without Ethernet padding (the IP packet's own
    /// length plus the link headers): the checksum covers `start..len`.
    pub len: usize,
    /// Whether the frame carries an 802.1Q tag.
    pub vlan: bool,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
}

/// The TCP or UDP checksum of an (optionally 802.1Q-tagged) IPv4 or IPv6
/// frame. `None`: not TCP or UDP directly over IP, an IPv4 fragment, IPv6
/// extension headers (Linux's netfront would walk them; no sender of
/// ours produces them with a partial checksum), or headers that do not
/// fit the frame or contradict its length.
pub fn find(frame: &[u8]) -> Option<Partial> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (ethertype, l3, vlan) = match u16::from(eth.ethertype()) {
        ETHERTYPE_VLAN => {
            let inner = frame.get(16..18)?;
            (u16::from_be_bytes([inner[0], inner[1]]), 18, true)
        }
        t => (t, 14, false),
    };
    let rest = frame.get(l3..)?;
    let ipv6 = ethertype == u16::from(EthernetProtocol::Ipv6);
    let (l4, proto, len) = match EthernetProtocol::from(ethertype) {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(rest).ok()?;
            let hl = usize::from(ip.header_len());
            let total = usize::from(ip.total_len());
            // smoltcp's check_len does not bound the header length below.
            if ip.version() != 4
                || hl < 20
                || total < hl
                || total > rest.len()
                || ip.more_frags()
                || ip.frag_offset() != 0
            {
                return None;
            }
            (l3 + hl, ip.next_header(), l3 + total)
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(rest).ok()?;
            let total = IPV6_HEADER_LEN + usize::from(ip.payload_len());
            if ip.version() != 6 || total > rest.len() {
                return None;
            }
            (l3 + IPV6_HEADER_LEN, ip.next_header(), l3 + total)
        }
        _ => return None,
    };
    let (offset, min) = match proto {
        IpProtocol::Tcp => (TCP_CSUM_OFFSET, TCP_HEADER_MIN),
        IpProtocol::Udp => (UDP_CSUM_OFFSET, UDP_HEADER_LEN),
        _ => return None,
    };
    if l4 + min > len {
        return None;
    }
    Some(Partial {
        start: u16::try_from(l4).ok()?,
        offset,
        len,
        vlan,
        ipv6,
    })
}

/// The completed checksum of a partial one starting at `start` (Linux's
/// `skb_checksum_help`): the ones' complement sum over `start..`, the
/// field holding the pseudo-header sum, folded and complemented; 0 is
/// sent as 0xffff (the same in ones' complement; for UDP, 0 would mean
/// "no checksum"). `start` is within the frame (the caller checked).
pub fn complete(frame: &[u8], start: usize) -> [u8; 2] {
    let sum = !checksum::data(frame.get(start..).unwrap_or(&[]));
    let sum = if sum == 0 { 0xffff } else { sum };
    sum.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn ipv4(proto: u8, ihl: u8, payload: usize) -> Vec<u8> {
        let hl = usize::from(ihl) * 4;
        let mut f = vec![0u8; 14 + hl + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x40 | ihl;
        f[16..18].copy_from_slice(&((hl + payload) as u16).to_be_bytes());
        f[14 + 9] = proto;
        f
    }

    fn ipv6(next: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + payload];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&(payload as u16).to_be_bytes());
        f[20] = next;
        f
    }

    #[test]
    fn tcp_and_udp_over_ipv4_and_ipv6() {
        let p = find(&ipv4(6, 5, 20)).unwrap();
        assert_eq!((p.start, p.offset, p.len, p.vlan), (34, 16, 54, false));
        let p = find(&ipv4(17, 6, 8)).unwrap();
        assert_eq!((p.start, p.offset, p.len), (38, 6, 46));
        let p = find(&ipv6(6, 100)).unwrap();
        assert_eq!((p.start, p.offset, p.len), (54, 16, 154));
        let p = find(&ipv6(17, 8)).unwrap();
        assert_eq!((p.start, p.offset), (54, 6));
    }

    #[test]
    fn a_vlan_tag_and_padding() {
        let mut f = ipv4(6, 5, 20);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let p = find(&f).unwrap();
        assert_eq!((p.start, p.offset, p.len, p.vlan), (38, 16, 58, true));
        // Ethernet padding after the packet is not checksummed.
        let mut f = ipv4(17, 5, 8);
        f.resize(60, 0);
        assert_eq!(find(&f).unwrap().len, 42);
    }

    #[test]
    fn what_has_no_checksum_to_find() {
        let mut arp = ipv4(6, 5, 20);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(find(&arp), None, "not IP");
        assert_eq!(find(&ipv4(1, 5, 20)), None, "ICMP");
        assert_eq!(find(&ipv4(6, 4, 20)), None, "IHL under 5");
        assert_eq!(find(&ipv4(6, 5, 19)), None, "a TCP header cut short");
        assert_eq!(find(&ipv4(17, 5, 7)), None, "a UDP header cut short");
        let mut frag = ipv4(6, 5, 20);
        frag[20] = 0x20;
        assert_eq!(find(&frag), None, "more fragments");
        let mut frag = ipv4(6, 5, 20);
        frag[21] = 1;
        assert_eq!(find(&frag), None, "a later fragment");
        let mut long = ipv4(6, 5, 20);
        long[17] += 1;
        assert_eq!(find(&long), None, "IP longer than the frame");
        let mut short = ipv4(6, 5, 20);
        short[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(find(&short), None, "IP shorter than its header");
        assert_eq!(find(&ipv6(0, 60)), None, "hop-by-hop");
        assert_eq!(find(&ipv6(44, 60)), None, "a fragment header");
        let mut v = ipv4(6, 5, 20);
        v[14] = 0x65;
        assert_eq!(find(&v), None, "IPv4 ethertype, version 6");
        assert_eq!(find(&[0u8; 13]), None);
    }

    proptest! {
        #[test]
        fn never_out_of_the_frame(f in proptest::collection::vec(any::<u8>(), 0..200),
                                  kind in 0u8..3) {
            let mut f = f;
            if f.len() >= 14 {
                let t: [u8; 2] = match kind {
                    0 => [0x08, 0x00],
                    1 => [0x86, 0xdd],
                    _ => [0x81, 0x00],
                };
                f[12..14].copy_from_slice(&t);
            }
            if let Some(p) = find(&f) {
                prop_assert!(p.len <= f.len());
                prop_assert!(usize::from(p.start) + usize::from(p.offset) + 2 <= p.len);
            }
        }
    }
}
