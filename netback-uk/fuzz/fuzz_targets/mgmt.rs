//! netback-uk's management endpoint (ARP, ping, DHCP server) fed frames a
//! member wrote, in sequence, with time passing between them so offers,
//! leases and declines lapse.
//!
//! Input: byte 0 picks the pool size (1..=16), then records of
//! `<port:2 bits, seconds:6 bits> <length u16 BE> <frame>` (a short last
//! record takes what is left): four switch ports sending. Every reply must be one whole, well-formed Ethernet frame of
//! at most 1514 bytes from the endpoint's MAC with valid IPv4, ICMP and UDP
//! checksums and a DHCP message that parses; the lease table stays within
//! the pool with one address per client, and no port holds more than
//! `MAX_HELD_PER_PORT` live leases.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use netback_uk::mgmt::{Mgmt, MgmtConfig, MAX_FRAME, MAX_HELD_PER_PORT};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpPacket, DhcpRepr, EthernetFrame, EthernetProtocol,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

fn check_reply(mac: [u8; 6], f: &[u8]) {
    assert!((60..=MAX_FRAME).contains(&f.len()), "{} bytes", f.len());
    let eth = EthernetFrame::new_checked(f).unwrap();
    assert_eq!(eth.src_addr().0, mac);
    let dst = eth.dst_addr();
    assert!(dst.is_broadcast() || (dst.is_unicast() && dst.0 != [0; 6]));
    let caps = ChecksumCapabilities::default();
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let ArpRepr::EthernetIpv4 { operation, .. } =
                ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap()
            else {
                panic!("not an Ethernet/IPv4 ARP");
            };
            assert_eq!(operation, ArpOperation::Reply);
        }
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let repr = Ipv4Repr::parse(&ip, &caps).unwrap();
            match repr.next_header {
                IpProtocol::Icmp => {
                    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
                    let r = Icmpv4Repr::parse(&icmp, &caps).unwrap();
                    assert!(matches!(r, Icmpv4Repr::EchoReply { .. }));
                }
                IpProtocol::Udp => {
                    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
                    let r =
                        UdpRepr::parse(&udp, &repr.src_addr.into(), &repr.dst_addr.into(), &caps)
                            .unwrap();
                    assert_eq!((r.src_port, r.dst_port), (67, 68));
                    DhcpRepr::parse(&DhcpPacket::new_checked(udp.payload()).unwrap()).unwrap();
                }
                p => panic!("reply of protocol {p}"),
            }
        }
        t => panic!("reply of ethertype {t}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pool, mut rest)) = data.split_first() else {
        return;
    };
    let mut cfg = MgmtConfig::for_lan(3);
    cfg.pool_last[3] = cfg.pool_first[3] + pool % 16;
    cfg.lease_secs = 60;
    let pool_size = usize::from(pool % 16) + 1;
    let mut m = Mgmt::new(cfg).unwrap();
    let mut now_ns = 0u64;
    let mut frames = 0u64;
    let mut replies = 0u64;
    while let Some((&head, record)) = rest.split_first() {
        let port = u16::from(head >> 6);
        now_ns += u64::from(head & 0x3f) * 1_000_000_000;
        let frame = match record {
            [hi, lo, tail @ ..] => {
                let (frame, next) =
                    tail.split_at(usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len()));
                rest = next;
                frame
            }
            short => {
                rest = &[];
                short
            }
        };
        let mut n = 0;
        m.receive(now_ns, port, frame, &mut |r| {
            check_reply(cfg.mac, r);
            n += 1;
        });
        assert!(n <= 1);
        frames += 1;
        replies += n;
    }
    let c = m.counters();
    assert_eq!((c.frames_in, c.replies_out), (frames, replies));
    assert_eq!(
        c.frames_in,
        c.arp_replies
            + c.echo_replies
            + c.dhcp_offers
            + c.dhcp_acks
            + c.dhcp_naks
            + c.dhcp_informs
            + c.dhcp_releases
            + c.dhcp_declines
            + c.drops.total()
    );
    let first = u32::from_be_bytes(cfg.pool_first);
    let mut macs = HashSet::new();
    let mut ips = HashSet::new();
    for l in m.leases() {
        let ip = u32::from_be_bytes(l.ip);
        assert!(ip >= first && ip - first < pool_size as u32);
        assert!(macs.insert(l.mac) && ips.insert(l.ip));
    }
    assert!(macs.len() <= pool_size);
    for port in 0..4 {
        let live = m
            .leases()
            .filter(|l| l.port == Some(port) && l.is_active(now_ns))
            .count();
        assert!(live <= MAX_HELD_PER_PORT, "port {port} holds {live} leases");
    }
});
