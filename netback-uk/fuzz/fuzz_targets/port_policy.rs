//! A bound port's guard (netback-uk's port policy) fed any frame a member
//! could send.
//!
//! Input: byte 0 picks the rules (bit 0: an assigned IPv4 /24, bit 1: an
//! assigned IPv6 /64, bit 2: a lease), the rest is the frame. The guard
//! must never panic, and whatever it lets through must keep the binding:
//! an IPv4 frame's source is an allowed address (or `0.0.0.0` from a DHCP
//! client), an ARP's sender is the port's MAC with an allowed address (or
//! a probe), an IPv6 frame's source is the link-local address from the
//! MAC, an assigned address or `::`; every other ethertype is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback_uk::policy::{link_local, Guard, HeldLease, Ipv4Net, Ipv6Net, PortRules};

const MAC: [u8; 6] = [0x02, 0x58, 0, 1, 0, 7];
const NET4: [u8; 4] = [10, 77, 1, 0];
const NET6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const LEASE: [u8; 4] = [10, 77, 0, 101];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let mut rules = PortRules {
        bind_addresses: true,
        ..PortRules::default()
    };
    if pick & 1 != 0 {
        rules.ipv4.push(Ipv4Net {
            addr: NET4,
            prefix: 24,
        });
    }
    if pick & 2 != 0 {
        rules.ipv6.push(Ipv6Net {
            addr: NET6,
            prefix: 64,
        });
    }
    let mut g = Guard::new(rules.clone(), MAC, 0);
    if pick & 4 != 0 {
        g.set_leases(
            [HeldLease {
                ip: LEASE,
                expires_ns: u64::MAX,
            }]
            .into_iter(),
        );
    }
    if g.check(frame, 1).is_err() {
        return;
    }
    let v4_ok =
        |ip: &[u8]| (pick & 1 != 0 && ip[..3] == NET4[..3]) || (pick & 4 != 0 && ip == LEASE);
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => {
            let src = &frame[26..30];
            let dhcp_client = frame.len() >= 14 + 20 + 4 && frame[14 + 9] == 17;
            assert!(
                v4_ok(src) || (dhcp_client && src == [0; 4]),
                "IPv4 from {src:?}"
            );
        }
        0x0806 => {
            assert_eq!(&frame[22..28], &MAC, "ARP sender MAC");
            let sender = &frame[28..32];
            assert!(v4_ok(sender) || sender == [0; 4], "ARP sender {sender:?}");
        }
        0x86dd => {
            let src: [u8; 16] = frame[22..38].try_into().unwrap();
            assert!(
                src == link_local(&MAC)
                    || src == [0; 16]
                    || (pick & 2 != 0 && src[..8] == NET6[..8]),
                "IPv6 from {src:?}"
            );
        }
        t => panic!("ethertype {t:#06x} let through"),
    }
});
