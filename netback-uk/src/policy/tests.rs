//! Every spoofing form against a bound port, assigned addresses, rate
//! limits. Frames are built byte by byte (the layouts of RFC 791, 826,
//! 2131, 8200, 4861), so the guard is not checked against the parser it
//! uses.
use super::*;
use alloc::vec;

const MAC: Mac = [0x02, 0x58, 0, 1, 0, 7];
const OTHER_MAC: Mac = [0x02, 0x58, 0, 1, 0, 8];
const LEASED: [u8; 4] = [10, 77, 0, 101];
const NEIGHBOUR: [u8; 4] = [10, 77, 0, 102];
const SEC: u64 = 1_000_000_000;

fn bound() -> Guard {
    let mut g = Guard::new(
        PortRules {
            bind_addresses: true,
            ..PortRules::default()
        },
        MAC,
        0,
    );
    g.set_leases(
        [HeldLease {
            ip: LEASED,
            expires_ns: 3600 * SEC,
        }]
        .into_iter(),
    );
    g
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(src: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[10, 77, 0, 1]);
    h.extend_from_slice(payload);
    eth(0x0800, &h)
}

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&src_port.to_be_bytes());
    u.extend_from_slice(&dst_port.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A BOOTREQUEST with `chaddr` and the magic cookie (no options needed by
/// the guard).
fn dhcp_request(chaddr: Mac) -> Vec<u8> {
    let mut d = vec![0u8; 240];
    d[0] = 1; // BOOTREQUEST
    d[1] = 1; // Ethernet
    d[2] = 6;
    d[28..34].copy_from_slice(&chaddr);
    d[236..240].copy_from_slice(&[99, 130, 83, 99]);
    d.push(255);
    d
}

fn arp(op: u16, sender_mac: Mac, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender_ip);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target_ip);
    eth(0x0806, &a)
}

fn ipv6(src: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 255]);
    h.extend_from_slice(&src);
    let mut dst = [0u8; 16];
    dst[0] = 0xff;
    dst[1] = 0x02;
    dst[15] = 1;
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    eth(0x86dd, &h)
}

/// An ICMPv6 message of `ty` whose bytes 8..24 are `target` (NS, NA).
fn icmpv6(ty: u8, target: [u8; 16]) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0, 0x60, 0, 0, 0];
    m.extend_from_slice(&target);
    m
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<core::net::Ipv6Addr>().unwrap().octets()
}

#[test]
fn an_unbound_port_may_send_anything() {
    let g = Guard::new(PortRules::default(), MAC, 0);
    assert_eq!(g.check(&ipv4(NEIGHBOUR, 17, &udp(1, 2, &[])), 0), Ok(()));
    assert_eq!(g.check(&eth(0x8100, &[0; 40]), 0), Ok(()));
}

#[test]
fn ipv4_sources_are_the_lease_or_assigned() {
    let g = bound();
    let frame = |src| ipv4(src, 17, &udp(5000, 5001, b"x"));
    assert_eq!(g.check(&frame(LEASED), SEC), Ok(()));
    assert_eq!(g.check(&frame(NEIGHBOUR), SEC), Err(Refusal::Ipv4Source));
    assert_eq!(g.check(&frame([0; 4]), SEC), Err(Refusal::Ipv4Source));
    // The lease ran out.
    assert_eq!(
        g.check(&frame(LEASED), 3600 * SEC),
        Err(Refusal::Ipv4Source)
    );

    let g = Guard::new(
        PortRules {
            bind_addresses: true,
            ipv4: vec![Ipv4Net {
                addr: [192, 168, 5, 0],
                prefix: 24,
            }],
            ..PortRules::default()
        },
        MAC,
        0,
    );
    assert_eq!(g.check(&frame([192, 168, 5, 9]), 0), Ok(()));
    assert_eq!(
        g.check(&frame([192, 168, 6, 9]), 0),
        Err(Refusal::Ipv4Source)
    );
}

#[test]
fn dhcp_clients_pass_with_their_own_chaddr_only() {
    let g = bound();
    let discover = |chaddr, src| ipv4(src, 17, &udp(68, 67, &dhcp_request(chaddr)));
    assert_eq!(g.check(&discover(MAC, [0; 4]), 0), Ok(()));
    assert_eq!(g.check(&discover(MAC, LEASED), 0), Ok(()));
    assert_eq!(
        g.check(&discover(OTHER_MAC, [0; 4]), 0),
        Err(Refusal::DhcpChaddr)
    );
    // A renewal from a neighbour's address.
    assert_eq!(
        g.check(&discover(MAC, NEIGHBOUR), 0),
        Err(Refusal::Ipv4Source)
    );
    // A member answering DHCP (a rogue server), even from its own address.
    assert_eq!(
        g.check(&ipv4(LEASED, 17, &udp(67, 68, &dhcp_request(MAC))), 0),
        Err(Refusal::RogueServer)
    );
}

#[test]
fn arp_may_only_claim_the_ports_addresses() {
    let g = bound();
    assert_eq!(g.check(&arp(1, MAC, LEASED, NEIGHBOUR), 0), Ok(()));
    assert_eq!(g.check(&arp(2, MAC, LEASED, NEIGHBOUR), 0), Ok(()));
    // A probe before claiming.
    assert_eq!(g.check(&arp(1, MAC, [0; 4], LEASED), 0), Ok(()));
    // A reply claiming the neighbour's address.
    assert_eq!(
        g.check(&arp(2, MAC, NEIGHBOUR, LEASED), 0),
        Err(Refusal::ArpSender)
    );
    // Gratuitous ARP for the neighbour's address.
    assert_eq!(
        g.check(&arp(1, MAC, NEIGHBOUR, NEIGHBOUR), 0),
        Err(Refusal::ArpSender)
    );
    // Another sender MAC inside the ARP than the port's.
    assert_eq!(
        g.check(&arp(1, OTHER_MAC, LEASED, NEIGHBOUR), 0),
        Err(Refusal::ArpSender)
    );
    // A reply "from" 0.0.0.0 is no probe.
    assert_eq!(
        g.check(&arp(2, MAC, [0; 4], LEASED), 0),
        Err(Refusal::ArpSender)
    );
}

#[test]
fn ipv6_sources_are_the_link_local_from_the_mac_or_assigned() {
    let g = bound();
    let ll = v6("fe80::58:ff:fe01:7");
    assert_eq!(link_local(&MAC), ll);
    let udp6 = udp(5000, 5001, b"x");
    assert_eq!(g.check(&ipv6(ll, 17, &udp6), 0), Ok(()));
    assert_eq!(
        g.check(&ipv6(v6("fe80::58:ff:fe01:8"), 17, &udp6), 0),
        Err(Refusal::Ipv6Source)
    );
    assert_eq!(
        g.check(&ipv6([0; 16], 17, &udp6), 0),
        Err(Refusal::Ipv6Source)
    );
    // DAD from :: is ICMPv6.
    assert_eq!(g.check(&ipv6([0; 16], 58, &icmpv6(135, ll)), 0), Ok(()));

    let g = Guard::new(
        PortRules {
            bind_addresses: true,
            ipv6: vec![Ipv6Net {
                addr: v6("2001:db8:5::"),
                prefix: 64,
            }],
            ..PortRules::default()
        },
        MAC,
        0,
    );
    assert_eq!(g.check(&ipv6(v6("2001:db8:5::9"), 17, &udp6), 0), Ok(()));
    assert_eq!(
        g.check(&ipv6(v6("2001:db8:6::9"), 17, &udp6), 0),
        Err(Refusal::Ipv6Source)
    );
}

#[test]
fn neighbor_advertisements_may_only_claim_the_ports_addresses() {
    let g = bound();
    let ll = link_local(&MAC);
    let theirs = v6("fe80::58:ff:fe01:8");
    assert_eq!(g.check(&ipv6(ll, 58, &icmpv6(136, ll)), 0), Ok(()));
    assert_eq!(
        g.check(&ipv6(ll, 58, &icmpv6(136, theirs)), 0),
        Err(Refusal::NdTarget)
    );
    // The same claim behind a hop-by-hop header.
    let mut hbh = vec![58, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&icmpv6(136, theirs));
    assert_eq!(g.check(&ipv6(ll, 0, &hbh), 0), Err(Refusal::NdTarget));
    // Or in a fragment: neighbor discovery is never fragmented.
    let mut frag = vec![58, 0, 0, 0, 0, 0, 0, 1];
    frag.extend_from_slice(&icmpv6(136, theirs));
    assert_eq!(g.check(&ipv6(ll, 44, &frag), 0), Err(Refusal::Unchecked));
    // A chain longer than the guard walks.
    let mut long = Vec::new();
    for _ in 0..MAX_EXT_HEADERS {
        long.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    long.extend_from_slice(&icmpv6(136, ll));
    assert_eq!(g.check(&ipv6(ll, 60, &long), 0), Err(Refusal::Unchecked));
    // A router advertisement from a member.
    assert_eq!(
        g.check(&ipv6(ll, 58, &icmpv6(134, ll)), 0),
        Err(Refusal::RogueServer)
    );
}

#[test]
fn other_ethertypes_and_short_headers_are_refused_when_bound() {
    let g = bound();
    // A VLAN tag would hide the address behind it.
    let mut tagged = vec![0, 5, 0x08, 0x00];
    tagged.extend_from_slice(&ipv4(NEIGHBOUR, 17, &[])[14..]);
    assert_eq!(g.check(&eth(0x8100, &tagged), 0), Err(Refusal::Unchecked));
    assert_eq!(g.check(&eth(0x88cc, &[0; 46]), 0), Err(Refusal::Unchecked));
    assert_eq!(
        g.check(&eth(0x0800, &[0x45, 0]), 0),
        Err(Refusal::Unchecked)
    );
    assert_eq!(g.check(&MAC, 0), Err(Refusal::Unchecked));
}

#[test]
fn assigned_prefixes_match_bit_by_bit() {
    assert!(in_net(&[10, 0, 0, 129], &[10, 0, 0, 128], 25));
    assert!(!in_net(&[10, 0, 0, 127], &[10, 0, 0, 128], 25));
    assert!(in_net(&[1, 2, 3, 4], &[9, 9, 9, 9], 0));
    assert!(in_net(&[1, 2, 3, 4], &[1, 2, 3, 4], 32));
    assert!(!in_net(&[1, 2, 3, 5], &[1, 2, 3, 4], 32));
    // A prefix longer than the address never matches (refused earlier).
    assert!(!in_net(&[1, 2, 3, 4], &[1, 2, 3, 4], 40));
    let too_many = PortRules {
        ipv4: vec![
            Ipv4Net {
                addr: [10, 0, 0, 1],
                prefix: 32
            };
            MAX_ASSIGNED + 1
        ],
        ..PortRules::default()
    };
    assert!(too_many.validate().is_err());
}

#[test]
fn a_rate_limit_admits_its_rate_and_burst_and_says_when_to_come_back() {
    let rate = Rate {
        bytes_per_sec: 1_000_000,
        burst_bytes: 10_000,
        frames_per_sec: 0,
    };
    let mut g = Guard::new(
        PortRules {
            rate: Some(rate),
            ..PortRules::default()
        },
        MAC,
        0,
    );
    // The burst goes at once (the last frame takes the balance below 0).
    let mut sent = 0;
    while g.ready(0).is_ok() {
        g.charge(1500);
        sent += 1500;
    }
    assert_eq!(sent, 10_500);
    // 500 bytes owed at 1 MB/s, and back in batches of a quarter burst
    // (2500 bytes): after 3 ms.
    assert_eq!(g.ready(0), Err(3_000_000));
    assert!(
        g.ready(2_999_000).is_ok(),
        "credit, though the switch waits"
    );
    assert_eq!(g.ready(3_000_000), Ok(()));
    // Over a simulated second of a greedy sender: the rate plus the burst.
    let mut now = 3_000_000;
    let mut bytes = 0u64;
    while now < SEC + 3_000_000 {
        match g.ready(now) {
            Ok(()) => {
                g.charge(1500);
                bytes += 1500;
            }
            Err(at) => now = at,
        }
    }
    assert!(
        (1_000_000..=1_000_000 + 10_000 + 1500).contains(&bytes),
        "{bytes} bytes in one second"
    );
}

#[test]
fn a_frame_rate_limit_counts_frames() {
    let mut g = Guard::new(
        PortRules {
            rate: Some(Rate {
                bytes_per_sec: u64::MAX / 4,
                burst_bytes: u64::MAX / 4,
                frames_per_sec: 100,
            }),
            ..PortRules::default()
        },
        MAC,
        0,
    );
    let mut frames = 0;
    let mut now = 0;
    while now < SEC {
        match g.ready(now) {
            Ok(()) => {
                g.charge(64);
                frames += 1;
            }
            Err(at) => now = at,
        }
    }
    // A second's burst (100) and a second's rate (100), less at most the
    // quarter burst (25) the last refill waits for.
    assert!((175..=201).contains(&frames), "{frames} frames");
}
