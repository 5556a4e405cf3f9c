//! The test-only hostile switch (feature `hostile`) on the in-process
//! platform: each mode's lie reaches a member's lanes as the mode says,
//! after the honest frames its `AFTER` count allows. The member here is
//! share-hal's own receiver (the rules xensnet's parse.c follows); the rig
//! scenario `hostile-net` runs the same lies against xensnet on real Xen.
//! A binary of its own: the mode is process-wide.
#![cfg(all(feature = "hostile", feature = "testing"))]

use core::sync::atomic::Ordering;

use netback_uk::hostile::{self, Mode};
use netback_uk::switch::{PortSpec, Switch, SwitchConfig, IMPLEMENTED};
use netback_uk::testing::{eth, TestMember};
use share_hal::frames::FrameMeta;
use share_hal::wire::lane_header as lh;
use share_hal::wire::net::{features, gso};
use share_local::{LocalHost, LocalPlatform};

type Member = TestMember<LocalPlatform>;

/// A switch with two ports that take GSO frames (no JUMBO: MTU 1500).
fn lan() -> (
    LocalHost,
    LocalPlatform,
    Switch<LocalPlatform>,
    Member,
    Member,
) {
    let host = LocalHost::new();
    let mut p = host.domain(1);
    let mut sw = Switch::new(SwitchConfig::default());
    let accept = features::CSUM_BLANK | features::DATA_VALIDATED | features::GSO;
    let join = |sw: &mut Switch<LocalPlatform>, p: &mut LocalPlatform, index, member| {
        let spec = PortSpec {
            lan: 1,
            member,
            mac: [0; 6],
            policy: IMPLEMENTED,
            numpages: 66,
        };
        let r = sw.add_port(p, index, spec).unwrap();
        TestMember::join(host.domain(member), r, accept)
    };
    let a = join(&mut sw, &mut p, 0, 2);
    let b = join(&mut sw, &mut p, 1, 3);
    pump(&mut sw, &mut p);
    assert!(a.link_up() && b.link_up());
    (host, p, sw, a, b)
}

fn pump(sw: &mut Switch<LocalPlatform>, p: &mut LocalPlatform) {
    for _ in 0..1000 {
        if !sw.poll(p).busy {
            return;
        }
    }
    panic!("switch still busy after 1000 rounds");
}

/// Whether a lane's `prod` and `cons` are out of bounds of each other.
fn out_of_bounds(m: &Member, header: usize, slots: u32) -> bool {
    let mem = m.att.mem();
    let prod = mem.load_u32(header + lh::PROD, Ordering::Acquire).unwrap();
    let cons = mem.load_u32(header + lh::CONS, Ordering::Acquire).unwrap();
    prod.wrapping_sub(cons) > slots
}

#[test]
fn each_lie_reaches_the_member_after_the_honest_frames() {
    for (name, mode) in hostile::MODES {
        hostile::set(mode, 1);
        let (_host, mut p, mut sw, mut a, mut b) = lan();
        // ARP is never lied about.
        let mut arp = eth(b.mac, a.mac, 60, 9);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        a.send(&[arp], FrameMeta::default());
        pump(&mut sw, &mut p);
        assert_eq!(b.recv().len(), 1, "{name}: ARP");
        // The first IPv4 frame is honest (AFTER = 1).
        a.send(&[eth(b.mac, a.mac, 1042, 1)], FrameMeta::default());
        pump(&mut sw, &mut p);
        let got = b.recv();
        assert_eq!(got.len(), 1, "{name}: the honest frame");
        assert_eq!(got[0].1, FrameMeta::default(), "{name}");
        a.send(&[eth(b.mac, a.mac, 1042, 2)], FrameMeta::default());
        pump(&mut sw, &mut p);
        let got = b.recv();
        let (rx_slots, tx_slots) = (b.layout.rx.slot_count, a.layout.tx.slot_count);
        match mode {
            Mode::LenZero
            | Mode::LenSlot
            | Mode::LenFrame
            | Mode::Chain
            | Mode::CsumStart
            | Mode::CsumOffset
            | Mode::GsoType
            | Mode::GsoZero
            | Mode::Scribble => assert!(got.is_empty(), "{name}: refused by the rules"),
            // Within the slot rules; the segment count is the lie.
            Mode::GsoUdp => {
                assert_eq!(got.len(), 1, "{name}");
                assert_eq!((got[0].1.gso_type, got[0].1.gso_size), (gso::UDP_L4, 1));
            }
            Mode::GsoTcp => {
                assert_eq!(got.len(), 1, "{name}");
                assert_eq!((got[0].1.gso_type, got[0].1.gso_size), (gso::TCPV4, 1));
                assert_eq!(got[0].0.len(), 60_000);
                assert_eq!(&got[0].0[..1042], &eth(b.mac, a.mac, 1042, 2)[..]);
                assert!(got[0].0[1042..].iter().all(|&x| x == 0), "zeroes after");
            }
            Mode::Index => {
                assert!(got.is_empty(), "{name}");
                assert!(out_of_bounds(&b, b.layout.rx.header, rx_slots), "{name}");
            }
            Mode::Cons => {
                assert_eq!(got.len(), 1, "{name}: frames still honest");
                assert!(out_of_bounds(&a, a.layout.tx.header, tx_slots), "{name}");
            }
            Mode::Flood => assert_eq!(got.len(), 1, "{name}"),
            Mode::Off => unreachable!(),
        }
        // Before the lie the lanes were sound.
        if !matches!(mode, Mode::Index | Mode::Cons) {
            assert!(!out_of_bounds(&b, b.layout.rx.header, rx_slots), "{name}");
            assert!(!out_of_bounds(&a, a.layout.tx.header, tx_slots), "{name}");
        }
    }
    hostile::set(Mode::Off, 0);
}
