//! The vif frontend against dom0 played here: xenstore as a map, and a
//! backend that reads and answers the rings byte by byte (the layouts of
//! `io/netif.h`, through xen-pv's backend helpers), honest, then lying.
use super::*;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::ToString;
use alloc::vec;
use share_local::{LocalHost, LocalPages};
use xen_pv::abi::NETIF_RSP_OKAY;
use xen_pv::ring::back::{respond, take_requests};

const FRONT: DomId = 5;
const BACK: DomId = 0;
const BE: &str = "/local/domain/0/backend/vif/5/0";

struct FakeStore {
    keys: BTreeMap<String, String>,
    writes: Vec<(String, String)>,
    /// The backend's state once the front says Connected.
    then: &'static str,
}

impl FakeStore {
    fn new(state: &str) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert("device/vif/0/backend".into(), BE.into());
        keys.insert("device/vif/0/backend-id".into(), "0".into());
        keys.insert("device/vif/0/mac".into(), "00:16:3e:12:34:56".into());
        keys.insert(format!("{BE}/state"), state.into());
        keys.insert(format!("{BE}/feature-rx-copy"), "1".into());
        FakeStore {
            keys,
            writes: Vec::new(),
            then: "4",
        }
    }
}

impl Xenbus for FakeStore {
    fn read(&mut self, path: &str) -> Result<String> {
        self.keys.get(path).cloned().ok_or(Error::Hypervisor {
            op: "xenstore request",
            code: -2,
        })
    }
    fn write(&mut self, path: &str, value: &str) -> Result<()> {
        self.writes.push((path.into(), value.into()));
        self.keys.insert(path.into(), value.into());
        if path == "device/vif/0/state" && value == "4" {
            self.keys.insert(format!("{BE}/state"), self.then.into());
        }
        Ok(())
    }
    fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        assert_eq!(path, "device/vif");
        Ok(vec!["1".into(), "0".into(), "x".into()])
    }
}

#[derive(Default)]
struct Rings {
    notified: u32,
}

struct CountingBell(alloc::rc::Rc<core::cell::RefCell<Rings>>);

impl Bell for CountingBell {
    fn notify(&mut self) -> Result<()> {
        self.0.borrow_mut().notified += 1;
        Ok(())
    }
}

fn pages() -> (LocalHost, VifPages<LocalPages>) {
    let host = LocalHost::new();
    let mut front = host.domain(FRONT);
    let pg = VifPages::new(&mut front, BACK).unwrap();
    (host, pg)
}

fn shake(xs: &mut FakeStore, pg: &VifPages<LocalPages>) -> core::result::Result<VifInfo, VifError> {
    let t = core::cell::Cell::new(0u64);
    handshake(xs, "device/vif/0", pg, &|| t.get(), &mut |d| t.set(d))
}

#[test]
fn the_handshake_asks_for_rx_copy_and_ipv4_checksum_offload() {
    let mut xs = FakeStore::new("2");
    assert_eq!(
        devices(&mut xs).unwrap(),
        [
            (0, "device/vif/0".to_string()),
            (1, "device/vif/1".to_string())
        ]
    );
    let (_host, pg) = pages();
    let info = shake(&mut xs, &pg).unwrap();
    assert_eq!(
        info,
        VifInfo {
            dev: "device/vif/0".into(),
            index: 0,
            backend: 0,
            mac: Some([0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]),
            offloads: Offloads::default(),
        }
    );
    let w: Vec<(&str, &str)> = xs
        .writes
        .iter()
        .map(|(k, v)| (k.strip_prefix("device/vif/0/").unwrap(), v.as_str()))
        .collect();
    assert_eq!(
        w,
        [
            ("tx-ring-ref", pg.tx_ring_ref.0.to_string().as_str()),
            ("rx-ring-ref", pg.rx_ring_ref.0.to_string().as_str()),
            ("event-channel", pg.port.0.to_string().as_str()),
            ("request-rx-copy", "1"),
            ("feature-rx-notify", "1"),
            ("feature-no-csum-offload", "0"),
            ("feature-ipv6-csum-offload", "0"),
            ("feature-sg", "0"),
            ("feature-gso-tcpv4", "0"),
            ("feature-gso-tcpv6", "0"),
            ("state", "4"),
        ]
    );
}

#[test]
fn the_handshake_refuses_what_it_cannot_use() {
    let (_host, pg) = pages();
    // No rx-copy.
    let mut xs = FakeStore::new("2");
    xs.keys.remove(&format!("{BE}/feature-rx-copy"));
    assert!(shake(&mut xs, &pg)
        .unwrap_err()
        .0
        .contains("feature-rx-copy"));
    // A backend that closes, one that never comes, garbage.
    let mut xs = FakeStore::new("2");
    xs.then = "6";
    assert!(shake(&mut xs, &pg).unwrap_err().0.contains("closed"));
    let mut xs = FakeStore::new("1");
    assert!(shake(&mut xs, &pg).unwrap_err().0.contains("within"));
    let mut xs = FakeStore::new("two");
    assert!(shake(&mut xs, &pg).unwrap_err().0.contains("not a number"));
    let mut xs = FakeStore::new("2");
    xs.keys
        .insert("device/vif/0/backend".into(), "../../etc".into());
    assert!(shake(&mut xs, &pg).unwrap_err().0.contains("malformed"));
    // A bad MAC is left out, not trusted.
    let mut xs = FakeStore::new("2");
    xs.keys
        .insert("device/vif/0/mac".into(), "00:16:3e:12:34:5g".into());
    assert_eq!(shake(&mut xs, &pg).unwrap().mac, None);
}

/// dom0's netback over the front's pages (the bytes it would map).
#[derive(Default)]
struct Back {
    tx_cons: u32,
    tx_prod: u32,
    rx_cons: u32,
    rx_prod: u32,
    /// Rx buffers posted to it: (id, gref), in order.
    posted: VecDeque<(u16, u32)>,
}

type V = Vif<LocalPages, CountingBell>;

impl Back {
    /// The frames the front sent: (id, gref, bytes).
    fn take_tx(&mut self, v: &V) -> Vec<(u16, u32, Vec<u8>)> {
        self.take_tx_flags(v)
            .into_iter()
            .map(|(id, gref, b, _)| (id, gref, b))
            .collect()
    }

    /// The frames the front sent, over one slot or several: (bytes, the
    /// first request's flags, the GSO extra info (type, size), the ids).
    #[allow(clippy::type_complexity)]
    fn take_frames(&mut self, v: &V) -> Vec<(Vec<u8>, u16, Option<(u8, u16)>, Vec<u16>)> {
        let mut reqs = Vec::new();
        take_requests::<12>(&v.pages.ring(0).unwrap(), &mut self.tx_cons, |r| {
            reqs.push(r)
        })
        .unwrap();
        let word = |r: &[u8; 12], at: usize| u16::from_le_bytes([r[at], r[at + 1]]);
        let mut out = Vec::new();
        let mut it = reqs.iter();
        while let Some(first) = it.next() {
            let flags = word(first, 6);
            let total = usize::from(word(first, 10));
            let gso = (flags & xen_pv::abi::NETTXF_EXTRA_INFO != 0).then(|| {
                let e = it.next().unwrap();
                assert_eq!(e[0], xen_pv::abi::XEN_NETIF_EXTRA_TYPE_GSO);
                assert_eq!(e[1], 0, "no more extras");
                (e[4], word(e, 2))
            });
            let mut slots = vec![*first];
            let mut more = flags & xen_pv::abi::NETTXF_MORE_DATA != 0;
            while more {
                let r = it.next().unwrap();
                more = word(r, 6) & xen_pv::abi::NETTXF_MORE_DATA != 0;
                slots.push(*r);
            }
            let rest: usize = slots[1..].iter().map(|r| usize::from(word(r, 10))).sum();
            let mut bytes = Vec::new();
            let mut ids = Vec::new();
            for (k, r) in slots.iter().enumerate() {
                let id = word(r, 8);
                let len = if k == 0 {
                    total - rest
                } else {
                    usize::from(word(r, 10))
                };
                let mut b = vec![0u8; len];
                v.pages
                    .tx_buf(id)
                    .unwrap()
                    .read_into(usize::from(word(r, 4)), &mut b)
                    .unwrap();
                bytes.extend_from_slice(&b);
                ids.push(id);
            }
            assert_eq!(bytes.len(), total);
            out.push((bytes, flags, gso, ids));
        }
        out
    }

    /// The same with each request's flags.
    fn take_tx_flags(&mut self, v: &V) -> Vec<(u16, u32, Vec<u8>, u16)> {
        let mut reqs = Vec::new();
        take_requests::<12>(&v.pages.ring(0).unwrap(), &mut self.tx_cons, |r| {
            reqs.push(r)
        })
        .unwrap();
        reqs.iter()
            .map(|r| {
                let gref = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
                let offset = u16::from_le_bytes([r[4], r[5]]);
                let flags = u16::from_le_bytes([r[6], r[7]]);
                let id = u16::from_le_bytes([r[8], r[9]]);
                let len = u16::from_le_bytes([r[10], r[11]]);
                // The grant names our tx buffer `id`.
                assert_eq!(gref, v.pages.grefs[usize::from(id)].0);
                let mut b = vec![0u8; usize::from(len)];
                v.pages
                    .tx_buf(id)
                    .unwrap()
                    .read_into(usize::from(offset), &mut b)
                    .unwrap();
                (id, gref, b, flags)
            })
            .collect()
    }

    fn answer_tx(&mut self, v: &V, id: u16, status: i16) {
        let mut b = [0u8; 4];
        b[..2].copy_from_slice(&id.to_le_bytes());
        b[2..].copy_from_slice(&status.to_le_bytes());
        respond::<12>(&v.pages.ring(0).unwrap(), &mut self.tx_prod, &b).unwrap();
    }

    fn take_posted(&mut self, v: &V) {
        let posted = &mut self.posted;
        take_requests::<8>(&v.pages.ring(1).unwrap(), &mut self.rx_cons, |r| {
            posted.push_back((
                u16::from_le_bytes([r[0], r[1]]),
                u32::from_le_bytes([r[4], r[5], r[6], r[7]]),
            ))
        })
        .unwrap();
    }

    /// Copies `frame` into the next posted buffer at `offset` and answers
    /// it (as rx-copy does); or answers with a raw response.
    fn deliver(&mut self, v: &V, offset: u16, frame: &[u8]) {
        let (id, gref) = self.posted.pop_front().expect("a posted buffer");
        let i = usize::from(TX_BUFS) + usize::from(id);
        assert_eq!(gref, v.pages.grefs[i].0);
        v.pages
            .rx_buf(id)
            .unwrap()
            .write_from(usize::from(offset), frame)
            .unwrap();
        self.answer_rx(v, id, offset, 0, frame.len() as i16);
    }

    fn answer_rx(&mut self, v: &V, id: u16, offset: u16, flags: u16, status: i16) {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&id.to_le_bytes());
        b[2..4].copy_from_slice(&offset.to_le_bytes());
        b[4..6].copy_from_slice(&flags.to_le_bytes());
        b[6..].copy_from_slice(&status.to_le_bytes());
        respond::<8>(&v.pages.ring(1).unwrap(), &mut self.rx_prod, &b).unwrap();
    }
}

fn vif() -> (
    LocalHost,
    V,
    Back,
    alloc::rc::Rc<core::cell::RefCell<Rings>>,
) {
    let (host, pg) = pages();
    let mut xs = FakeStore::new("2");
    let info = shake(&mut xs, &pg).unwrap();
    let rings = alloc::rc::Rc::new(core::cell::RefCell::new(Rings::default()));
    let v = Vif::start(pg, info, CountingBell(rings.clone())).unwrap();
    let mut back = Back::default();
    back.take_posted(&v);
    (host, v, back, rings)
}

fn frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![tag; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f
}

#[test]
fn frames_go_both_ways_through_an_honest_backend() {
    let (_host, v, mut back, rings) = vif();
    assert_eq!(
        back.posted.len(),
        usize::from(RX_BUFS),
        "every rx buffer posted"
    );
    assert_eq!(
        rings.borrow().notified,
        1,
        "a fresh backend asked to be told"
    );
    // Out: queued, published at flush.
    let mut up = VifUplinks { vifs: vec![v] };
    assert!(up.has(0) && !up.has(1));
    assert!(up.send(0, &frame(60, 1), FrameMeta::default()));
    assert!(up.send(0, &frame(1514, 2), FrameMeta::default()));
    assert!(
        !up.send(0, &frame(4097, 3), FrameMeta::default()),
        "longer than a page"
    );
    assert!(
        !up.send(1, &frame(60, 4), FrameMeta::default()),
        "no such device"
    );
    assert!(back.take_tx(&up.vifs[0]).is_empty(), "not before the flush");
    up.flush();
    let sent = back.take_tx(&up.vifs[0]);
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].2, frame(1514, 2));
    // In: a frame at an offset, a buffer back without one.
    back.deliver(&up.vifs[0], 10, &frame(98, 5));
    let (id, _) = back.posted.pop_front().unwrap();
    back.answer_rx(&up.vifs[0], id, 0, 0, xen_pv::abi::NETIF_RSP_ERROR);
    back.deliver(&up.vifs[0], 0, &frame(1514, 6));
    let mut buf = [0u8; 1518];
    assert_eq!(up.recv(0, &mut buf).map(|r| r.0), Some(98));
    assert_eq!(&buf[..98], &frame(98, 5)[..]);
    assert_eq!(up.recv(0, &mut buf).map(|r| r.0), Some(1514));
    assert_eq!(buf[100], 6);
    assert_eq!(up.recv(0, &mut buf), None);
    assert_eq!(up.vifs[0].counters.rx_empty, 1);
    // Nothing waiting: a flush says so; a response published before the
    // flush renewed the event is reported by it (no notification comes
    // for it).
    assert!(!up.flush());
    back.deliver(&up.vifs[0], 0, &frame(60, 9));
    assert!(up.flush(), "the final check saw the waiting frame");
    assert_eq!(up.recv(0, &mut buf).map(|r| r.0), Some(60));
    // The three buffers go back to the backend at the flush.
    up.flush();
    back.take_posted(&up.vifs[0]);
    assert_eq!(back.posted.len(), usize::from(RX_BUFS) - 4 + 4);
    // Tx ids come back with their responses; with all in flight, no room.
    for (id, _, _) in &sent {
        back.answer_tx(&up.vifs[0], *id, NETIF_RSP_OKAY);
    }
    let mut n = 0;
    while up.send(0, &frame(60, 7), FrameMeta::default()) {
        n += 1;
    }
    assert_eq!(
        n,
        usize::from(TX_BUFS),
        "every buffer, once the two came back"
    );
    assert!(up.vifs[0].broken().is_none());
}

#[test]
fn a_lying_backend_stops_the_device_and_nothing_more() {
    // An rx answer for a buffer never posted.
    let (_host, mut v, mut back, _) = vif();
    back.answer_rx(&v, RX_BUFS + 3, 0, 0, 60);
    let mut buf = [0u8; 1518];
    assert_eq!(v.recv(&mut buf), None);
    assert!(v.broken().is_some());
    assert!(
        !v.send(&frame(60, 1), FrameMeta::default()),
        "a broken device sends nothing"
    );
    v.flush();
    // A frame outside its page.
    let (_host, mut v, mut back, _) = vif();
    let (id, _) = back.posted.pop_front().unwrap();
    back.answer_rx(&v, id, 4000, 0, 200);
    assert_eq!(v.recv(&mut buf), None);
    assert_eq!(
        v.broken(),
        Some("netif backend put an rx frame outside its page")
    );
    // Flags we never allowed (more data, extra info).
    let (_host, mut v, mut back, _) = vif();
    let (id, _) = back.posted.pop_front().unwrap();
    back.answer_rx(&v, id, 0, xen_pv::abi::NETRXF_MORE_DATA, 60);
    assert_eq!(v.recv(&mut buf), None);
    assert!(v.broken().is_some());
    // A tx answer for an id not in flight (nothing was sent).
    let (_host, mut v, mut back, _) = vif();
    back.answer_tx(&v, 9, NETIF_RSP_OKAY);
    assert_eq!(v.recv(&mut buf), None);
    assert_eq!(
        v.broken(),
        Some("a Xen backend published responses to requests never made")
    );
    assert!(!v.send(&frame(60, 1), FrameMeta::default()));
    // A frame longer than the switch's buffer: its length says so.
    let (_host, mut v, mut back, _) = vif();
    back.deliver(&v, 0, &frame(3000, 8));
    assert_eq!(v.recv(&mut buf).map(|r| r.0), Some(3000));
    assert!(v.broken().is_none());
}

/// A TCP/IPv4 frame (untagged) from `src` to `dst` with `payload` bytes,
/// its checksum field holding the pseudo-header sum only (a partial
/// checksum, as Linux leaves it for `CHECKSUM_PARTIAL`), or complete.
fn tcp4(dst: [u8; 6], src: [u8; 6], payload: usize, partial: bool) -> Vec<u8> {
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket,
    };
    let (sip, dip) = (Ipv4Address::new(10, 0, 0, 1), Ipv4Address::new(10, 0, 0, 2));
    let mut f = vec![0u8; 14 + 20 + 20 + payload];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(smoltcp::wire::EthernetAddress(dst));
    eth.set_src_addr(smoltcp::wire::EthernetAddress(src));
    eth.set_ethertype(EthernetProtocol::Ipv4);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len((40 + payload) as u16);
    ip.set_dont_frag(true);
    ip.set_hop_limit(64);
    ip.set_next_header(IpProtocol::Tcp);
    ip.set_src_addr(sip);
    ip.set_dst_addr(dip);
    ip.fill_checksum();
    let mut tcp = TcpPacket::new_unchecked(&mut f[34..]);
    tcp.set_src_port(40000);
    tcp.set_dst_port(5001);
    tcp.set_seq_number(smoltcp::wire::TcpSeqNumber(7));
    tcp.set_header_len(20);
    tcp.set_ack(true);
    tcp.set_window_len(1000);
    for (i, b) in tcp.payload_mut().iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    if partial {
        let sum = smoltcp::wire::checksum::pseudo_header_v4(
            &sip,
            &dip,
            IpProtocol::Tcp,
            (20 + payload) as u32,
        );
        tcp.set_checksum(sum);
    } else {
        tcp.fill_checksum(&IpAddress::Ipv4(sip), &IpAddress::Ipv4(dip));
    }
    f
}

/// The same over IPv6.
fn tcp6(dst: [u8; 6], src: [u8; 6], payload: usize, partial: bool) -> Vec<u8> {
    use smoltcp::wire::{IpAddress, IpProtocol, Ipv6Address, Ipv6Packet, TcpPacket};
    let sip = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    let dip = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    let mut f = vec![0u8; 14 + 40 + 20 + payload];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    let mut ip = Ipv6Packet::new_unchecked(&mut f[14..]);
    ip.set_version(6);
    ip.set_payload_len((20 + payload) as u16);
    ip.set_next_header(IpProtocol::Tcp);
    ip.set_hop_limit(64);
    ip.set_src_addr(sip);
    ip.set_dst_addr(dip);
    let mut tcp = TcpPacket::new_unchecked(&mut f[54..]);
    tcp.set_src_port(40000);
    tcp.set_dst_port(5001);
    tcp.set_header_len(20);
    tcp.set_ack(true);
    for (i, b) in tcp.payload_mut().iter_mut().enumerate() {
        *b = (i * 3) as u8;
    }
    if partial {
        let sum = smoltcp::wire::checksum::pseudo_header_v6(
            &sip,
            &dip,
            IpProtocol::Tcp,
            (20 + payload) as u32,
        );
        tcp.set_checksum(sum);
    } else {
        tcp.fill_checksum(&IpAddress::Ipv6(sip), &IpAddress::Ipv6(dip));
    }
    f
}

fn tcp4_checksum_ok(f: &[u8]) -> bool {
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket};
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    tcp.verify_checksum(
        &IpAddress::Ipv4(ip.src_addr()),
        &IpAddress::Ipv4(ip.dst_addr()),
    )
}

mod through_the_switch {
    //! The vif as a LAN's uplink: dom0's frames, flags and all, reach
    //! members as the members negotiated.
    use super::*;
    use crate::switch::{PortSpec, Switch, SwitchConfig, IMPLEMENTED};
    use crate::testing::TestMember;
    use share_hal::frames::FrameMeta;
    use share_hal::platform::Clock;
    use share_hal::wire::net::{features, flags};
    use share_local::LocalPlatform;
    use xen_pv::abi::{NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED};

    const LAN: u16 = 7;
    const HOST: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x10];

    struct Lan {
        p: LocalPlatform,
        sw: Switch<LocalPlatform>,
        up: VifUplinks<LocalPages, CountingBell>,
        back: Back,
        plain: TestMember<LocalPlatform>,
        offload: TestMember<LocalPlatform>,
        /// Takes GSO frames too.
        gso: TestMember<LocalPlatform>,
    }

    impl Lan {
        fn new() -> (LocalHost, Lan) {
            let (host, v, back, _) = vif();
            let mut p = host.domain(1);
            let mut sw = Switch::new(SwitchConfig::default());
            let mut join = |sw: &mut Switch<LocalPlatform>, i: u16, dom: DomId, accept| {
                let spec = PortSpec {
                    lan: LAN,
                    member: dom,
                    mac: [0; 6],
                    policy: IMPLEMENTED,
                    numpages: if accept & features::GSO != 0 {
                        share_hal::wire::net::GSO_MIN_PAGES
                    } else {
                        10
                    },
                };
                let r = sw.add_port(&mut p, i, spec).unwrap();
                TestMember::join(host.domain(dom), r, accept)
            };
            let plain = join(&mut sw, 0, 2, 0);
            let offload = join(
                &mut sw,
                1,
                3,
                features::CSUM_BLANK | features::DATA_VALIDATED,
            );
            let gso = join(&mut sw, 2, 4, features::ALL & !features::JUMBO);
            sw.attach_uplink(LAN, v.info().index, 9, false).unwrap();
            let mut lan = Lan {
                p,
                sw,
                up: VifUplinks { vifs: vec![v] },
                back,
                plain,
                offload,
                gso,
            };
            lan.pump();
            assert!(lan.plain.link_up() && lan.offload.link_up() && lan.gso.link_up());
            (host, lan)
        }

        fn pump(&mut self) {
            for _ in 0..100 {
                let now = self.p.now_ns();
                if !self.sw.poll_with(&mut self.p, now, &mut self.up).busy {
                    return;
                }
            }
            panic!("switch still busy");
        }

        /// dom0 copies `frame` into the next posted buffer with `flags`.
        fn dom0_sends(&mut self, frame: &[u8], flags: u16) {
            let v = &self.up.vifs[0];
            let (id, _) = self.back.posted.pop_front().unwrap();
            v.pages.rx_buf(id).unwrap().write_from(0, frame).unwrap();
            self.back.answer_rx(v, id, 0, flags, frame.len() as i16);
        }
    }

    #[test]
    fn a_blank_checksum_from_dom0_is_completed_or_passed_on_as_partial() {
        let (_host, mut lan) = Lan::new();
        // Unknown unicast: both members get it.
        let dst = [0x02, 0, 0, 0, 0, 0x42];
        let partial = tcp4(dst, HOST, 1000, true);
        assert!(!tcp4_checksum_ok(&partial));
        lan.dom0_sends(&partial, NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED);
        lan.pump();
        // Without checksum offload: complete, every other byte as sent.
        let got = lan.plain.recv();
        assert_eq!(got.len(), 1);
        assert!(tcp4_checksum_ok(&got[0].0), "completed by the switch");
        assert_eq!(got[0].0, tcp4(dst, HOST, 1000, false));
        assert_eq!(got[0].1, FrameMeta::default());
        // With it: partial, with where to complete it.
        let got = lan.offload.recv();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, partial);
        let m = got[0].1;
        assert_eq!(m.flags & flags::CSUM_BLANK, flags::CSUM_BLANK);
        assert_eq!((m.csum_start, m.csum_offset), (34, 16));
        assert!(lan.up.vifs[0].broken().is_none());
    }

    #[test]
    fn validated_frames_say_so_to_members_that_take_it() {
        let (_host, mut lan) = Lan::new();
        let dst = [0x02, 0, 0, 0, 0, 0x42];
        let f = tcp4(dst, HOST, 100, false);
        lan.dom0_sends(&f, NETRXF_DATA_VALIDATED);
        lan.pump();
        assert_eq!(lan.plain.recv(), [(f.clone(), FrameMeta::default())]);
        let got = lan.offload.recv();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.flags, flags::DATA_VALIDATED);
    }

    #[test]
    fn a_blank_checksum_nobody_can_find_is_dropped_and_counted() {
        let (_host, mut lan) = Lan::new();
        let dst = [0x02, 0, 0, 0, 0, 0x42];
        // Not TCP or UDP over IP: where would the checksum be?
        let arp = crate::testing::eth(dst, HOST, 60, 1);
        let mut arp = arp;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        lan.dom0_sends(&arp, NETRXF_CSUM_BLANK);
        // An IPv4 fragment: its L4 header is not all there.
        let mut frag = tcp4(dst, HOST, 100, true);
        frag[20] = 0x20; // more fragments
        lan.dom0_sends(&frag, NETRXF_CSUM_BLANK);
        // A TCP header cut short.
        let cut = tcp4(dst, HOST, 0, true)[..50].to_vec();
        lan.dom0_sends(&cut, NETRXF_CSUM_BLANK);
        lan.pump();
        assert!(lan.plain.recv().is_empty() && lan.offload.recv().is_empty());
        assert_eq!(lan.up.vifs[0].counters.rx_bad_csum, 3);
        assert!(lan.up.vifs[0].broken().is_none(), "a frame, not the device");
        // The device goes on.
        let f = tcp4(dst, HOST, 100, false);
        lan.dom0_sends(&f, 0);
        lan.pump();
        assert_eq!(lan.plain.recv().len(), 1);
    }

    fn partial_meta(start: u16) -> FrameMeta {
        FrameMeta {
            flags: flags::CSUM_BLANK,
            csum_start: start,
            csum_offset: 16,
            ..FrameMeta::default()
        }
    }

    #[test]
    fn partial_checksums_go_to_dom0_partial_where_it_finds_them_else_complete() {
        use xen_pv::abi::{NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED};
        let (_host, mut lan) = Lan::new();
        let src = lan.offload.mac;
        let both = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
        // Untagged TCP over IPv4: partial, the backend completes it.
        let v4 = tcp4(HOST, src, 1000, true);
        lan.offload
            .send(core::slice::from_ref(&v4), partial_meta(34));
        // Over IPv6, which this backend did not offer: completed here.
        let v6 = tcp6(HOST, src, 1000, true);
        lan.offload
            .send(core::slice::from_ref(&v6), partial_meta(54));
        // Tagged: Linux's netback would not find it (it drops such a
        // frame); completed here.
        let mut tagged = tcp4(HOST, src, 100, true);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        lan.offload
            .send(core::slice::from_ref(&tagged), partial_meta(38));
        lan.pump();
        let sent = lan.back.take_tx_flags(&lan.up.vifs[0]);
        assert_eq!(sent.len(), 3);
        assert_eq!((&sent[0].2, sent[0].3), (&v4, both));
        assert_eq!(sent[1].3, 0);
        assert_eq!(sent[1].2, tcp6(HOST, src, 1000, false));
        assert_eq!(sent[2].3, 0);
        let mut want = tcp4(HOST, src, 100, false);
        want.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(sent[2].2, want);
        // The member without checksum offload got all three complete.
        let got = lan.plain.recv();
        assert_eq!(got.len(), 3);
        assert!(tcp4_checksum_ok(&got[0].0));
        // A backend that offers IPv6 checksum offload gets IPv6 partial.
        lan.up.vifs[0].info.offloads.tx_ipv6_csum = true;
        lan.offload
            .send(core::slice::from_ref(&v6), partial_meta(54));
        lan.pump();
        let sent = lan.back.take_tx_flags(&lan.up.vifs[0]);
        assert_eq!((&sent[0].2, sent[0].3), (&v6, both));
    }

    #[test]
    fn a_partial_checksum_where_dom0_would_not_look_is_completed() {
        let (_host, mut lan) = Lan::new();
        let src = lan.offload.mac;
        // A partial sum over the TCP payload, not from its header: the
        // member may ask it, dom0 would fill in the TCP field instead.
        let mut f = tcp4(HOST, src, 100, false);
        f[60..62].copy_from_slice(&[0x12, 0x34]);
        let meta = FrameMeta {
            flags: flags::CSUM_BLANK,
            csum_start: 58,
            csum_offset: 2,
            ..FrameMeta::default()
        };
        lan.offload.send(core::slice::from_ref(&f), meta);
        lan.pump();
        let sent = lan.back.take_tx_flags(&lan.up.vifs[0]);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].3, 0, "no csum_blank");
        let mut want = f.clone();
        let sum = crate::csum_setup::complete(&f, 58);
        want[60..62].copy_from_slice(&sum);
        assert_eq!(sent[0].2, want);
        assert_ne!(sent[0].2, f);
    }
    fn gso_meta(size: u16) -> FrameMeta {
        FrameMeta {
            gso_type: share_hal::wire::net::gso::TCPV4,
            gso_size: size,
            ..partial_meta(34)
        }
    }

    #[test]
    fn a_gso_frame_goes_to_dom0_whole_over_several_slots_where_it_offered_gso() {
        use xen_pv::abi::{
            NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA,
        };
        let (_host, mut lan) = Lan::new();
        lan.up.vifs[0].info.offloads = Offloads {
            tx_sg: true,
            tx_gso_tcpv4: true,
            ..Offloads::default()
        };
        let src = lan.gso.mac;
        let big = tcp4(HOST, src, 20000, true);
        lan.gso.send(core::slice::from_ref(&big), gso_meta(1448));
        lan.pump();
        let sent = lan.back.take_frames(&lan.up.vifs[0]);
        assert_eq!(sent.len(), 1, "one frame, not 14 segments");
        let (bytes, flags, gso, ids) = &sent[0];
        assert_eq!(bytes, &big);
        assert_eq!(
            *flags,
            NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_MORE_DATA | NETTXF_EXTRA_INFO
        );
        assert_eq!(*gso, Some((xen_pv::abi::XEN_NETIF_GSO_TYPE_TCPV4, 1448)));
        assert_eq!(ids.len(), 5, "20054 bytes in 5 pages");
        // The ids come back with the backend's answers (a NULL for the
        // extra slot), and all 64 buffers serve again.
        let v = &lan.up.vifs[0];
        lan.back.answer_tx(v, ids[0], NETIF_RSP_OKAY);
        lan.back.answer_tx(v, 0x7777, xen_pv::abi::NETIF_RSP_NULL);
        for id in &ids[1..] {
            lan.back.answer_tx(v, *id, NETIF_RSP_OKAY);
        }
        let mut n = 0;
        while lan.up.vifs[0].send(&tcp4(HOST, src, 10, false), FrameMeta::default()) {
            n += 1;
        }
        assert_eq!(n, usize::from(TX_BUFS));
        assert!(lan.up.vifs[0].broken().is_none());
    }

    #[test]
    fn a_gso_frame_dom0_cannot_take_is_segmented_by_the_switch() {
        let (_host, mut lan) = Lan::new();
        let src = lan.gso.mac;
        let big = tcp4(HOST, src, 20000, true);
        // Without GSO offered; then offered, but the frame carries ECN
        // (netif cannot say so).
        lan.gso.send(core::slice::from_ref(&big), gso_meta(1448));
        lan.pump();
        lan.up.vifs[0].info.offloads = Offloads {
            tx_sg: true,
            tx_gso_tcpv4: true,
            ..Offloads::default()
        };
        let ecn = FrameMeta {
            gso_flags: share_hal::wire::net::gso::FLAG_ECN,
            ..gso_meta(1448)
        };
        lan.gso.send(core::slice::from_ref(&big), ecn);
        lan.pump();
        let sent = lan.back.take_frames(&lan.up.vifs[0]);
        assert_eq!(sent.len(), 2 * 14, "1448-byte segments");
        for (bytes, flags, gso, ids) in &sent {
            assert!(bytes.len() <= 1514 && ids.len() == 1 && gso.is_none());
            // Partial, for the backend to complete (untagged TCP/IPv4).
            let cb = xen_pv::abi::NETTXF_CSUM_BLANK;
            assert_eq!(flags & cb, cb);
        }
    }
}

#[test]
fn the_backends_offers_are_read_and_only_a_plain_1_is_yes() {
    let (_host, pg) = pages();
    let mut xs = FakeStore::new("2");
    for (k, v) in [
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "1"),
        ("feature-gso-tcpv6", "yes"),
        ("feature-ipv6-csum-offload", "1"),
    ] {
        xs.keys.insert(format!("{BE}/{k}"), v.into());
    }
    let o = shake(&mut xs, &pg).unwrap().offloads;
    assert_eq!(
        o,
        Offloads {
            tx_ipv6_csum: true,
            tx_sg: true,
            tx_gso_tcpv4: true,
            tx_gso_tcpv6: false,
        }
    );
    assert_eq!(
        o.to_string(),
        "offloads: csum-ipv4 both ways; to dom0 csum-ipv6 sg gso-tcpv4; from dom0 one page a frame, no gso"
    );
    assert_eq!(
        Offloads::default().to_string(),
        "offloads: csum-ipv4 both ways; from dom0 one page a frame, no gso"
    );
    // GSO without scatter-gather is no GSO.
    let (_host, pg) = pages();
    let mut xs = FakeStore::new("2");
    xs.keys
        .insert(format!("{BE}/feature-gso-tcpv4"), "1".into());
    let o = shake(&mut xs, &pg).unwrap().offloads;
    assert!(!o.tx_sg && !o.tx_gso_tcpv4);
}
