//! The vdevice protocol between dom0 and a domain of the simulation
//! platform, in two threads.
use std::sync::atomic::Ordering;

use share_hal::error::{Error, Result};
use share_hal::platform::{Access, Clock, DomId, EventChannels, GrantRef, Platform, Port, DOM0};
use share_hal::vdevice::*;
use share_hal::wire::vdevice::*;
use share_sim::{temp_socket_path, Broker, SimPlatform};

fn net_owner_entry(peer: DomId) -> EntryRepr {
    EntryRepr {
        kind: Kind::Network,
        role: Role::Owner,
        numpages: 8,
        peer,
        ..EntryRepr::EMPTY
    }
}

/// dom0 and domain 7 in two threads: each change is applied and
/// acknowledged before the next; a garbled index is refused with EINVAL.
#[test]
fn changes_are_applied_and_acknowledged_one_at_a_time() {
    let path = temp_socket_path("vdevice");
    let _broker = Broker::spawn(&path).unwrap();
    let mut dom = SimPlatform::connect(&path, 7).unwrap();
    let mut bus = VdeviceBus::create(&mut dom, 16).unwrap();
    let boot = bus.bootstrap();
    let domain = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while bus.acked_serial() < 3 {
            dom.wait(Some(dom.now_ns() + 5_000_000_000), &mut |_| {})
                .unwrap();
            let mut apply = |i: u32, _old: &EntryRepr, new: &EntryRepr| {
                if new.peer == 99 {
                    Applied::Refused(status::ENODEV)
                } else {
                    Applied::Ok {
                        share_ref: Some(GrantRef(1000 + i)),
                    }
                }
            };
            if let Some(c) = bus.poll(&mut dom, &mut apply).unwrap() {
                seen.push(c);
            }
        }
        (seen, bus.entries().to_vec())
    });
    let mut d0 = SimPlatform::connect(&path, DOM0).unwrap();
    let mut client = VdeviceClient::attach(&mut d0, 7, boot).unwrap();
    let dl = d0.now_ns() + 5_000_000_000;
    let acked = client.change(&mut d0, 3, &net_owner_entry(5), dl).unwrap();
    assert_eq!(
        (acked.status, acked.share_ref),
        (status::OK, GrantRef(1003))
    );
    let refused = client.change(&mut d0, 4, &net_owner_entry(99), dl).unwrap();
    assert_eq!(refused.status, status::ENODEV);
    // A change index past the entries: the domain refuses it whole.
    let snap = client.snapshot().unwrap();
    let mem = client.mem();
    mem.store_u32(field::CHANGE_INDEX.start, 500, Ordering::Relaxed)
        .unwrap();
    let serial = snap.header.change_serial + 1;
    mem.store_u32(field::CHANGE_SERIAL.start, serial, Ordering::Release)
        .unwrap();
    d0.notify(client.port()).unwrap();
    let (seen, entries) = domain.join().unwrap();
    assert_eq!(
        seen.len(),
        2,
        "the garbled change is acknowledged but yields no Change"
    );
    let snap = client.snapshot().unwrap();
    assert_eq!(snap.header.ack_serial, serial);
    assert_eq!(snap.header.ack_status, status::EINVAL);
    assert_eq!(entries[3].share_ref, GrantRef(1003));
    assert_eq!(
        entries[4],
        EntryRepr::EMPTY,
        "a refused change leaves the entry as it was"
    );
    client.detach(&mut d0).unwrap();
}

/// dom0 over a platform on which a trigger is always pending: a domain
/// that triggers dom0 without end (and never acknowledges).
struct Chatty(SimPlatform);

impl share_hal::platform::Memory for Chatty {
    type Pages = share_sim::SimPages;
    fn alloc_pages(&mut self, count: usize) -> Result<Self::Pages> {
        self.0.alloc_pages(count)
    }
}

impl share_hal::platform::GrantTable for Chatty {
    type Mapping = share_sim::SimMapping;
    fn grant(&mut self, f: share_hal::platform::Frame, to: DomId, a: Access) -> Result<GrantRef> {
        self.0.grant(f, to, a)
    }
    fn revoke(&mut self, g: GrantRef) -> Result<()> {
        self.0.revoke(g)
    }
    fn map(&mut self, from: DomId, g: &[GrantRef], a: Access) -> Result<Self::Mapping> {
        self.0.map(from, g, a)
    }
    fn unmap(&mut self, m: Self::Mapping) -> Result<()> {
        self.0.unmap(m)
    }
    fn copy(&mut self, segs: &mut [share_hal::platform::CopySeg]) -> Result<()> {
        self.0.copy(segs)
    }
}

impl EventChannels for Chatty {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Port> {
        self.0.alloc_unbound(remote)
    }
    fn bind_interdomain(&mut self, remote: DomId, port: Port) -> Result<Port> {
        self.0.bind_interdomain(remote, port)
    }
    fn notify(&mut self, port: Port) -> Result<()> {
        self.0.notify(port)
    }
    fn close(&mut self, port: Port) -> Result<()> {
        self.0.close(port)
    }
    fn wait(&mut self, _deadline: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()> {
        fired(Port(1));
        Ok(())
    }
}

impl Clock for Chatty {
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
}

impl Platform for Chatty {
    fn domid(&self) -> DomId {
        self.0.domid()
    }
}

#[test]
fn a_domain_that_triggers_without_acknowledging_cannot_hold_dom0_past_the_deadline() {
    let path = temp_socket_path("vdevice-chatty");
    let _broker = Broker::spawn(&path).unwrap();
    let mut dom = SimPlatform::connect(&path, 7).unwrap();
    let bus = VdeviceBus::create(&mut dom, 4).unwrap();
    let mut d0 = Chatty(SimPlatform::connect(&path, DOM0).unwrap());
    let mut client = VdeviceClient::attach(&mut d0, 7, bus.bootstrap()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dl = d0.now_ns() + 100_000_000;
        let _ = tx.send(client.change(&mut d0, 1, &net_owner_entry(5), dl));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("dom0 still waiting 10 s after a 100 ms deadline");
    assert_eq!(r, Err(Error::TimedOut));
    drop(bus);
}

/// Broker, domain 7's bus (not polled) and dom0's client.
fn domain_and_dom0(
    tag: &str,
) -> (
    Broker,
    SimPlatform,
    VdeviceBus<share_sim::SimPages>,
    SimPlatform,
    VdeviceClient<share_sim::SimMapping>,
) {
    let path = temp_socket_path(tag);
    let broker = Broker::spawn(&path).unwrap();
    let mut dom = SimPlatform::connect(&path, 7).unwrap();
    let bus = VdeviceBus::create(&mut dom, 4).unwrap();
    let mut d0 = SimPlatform::connect(&path, DOM0).unwrap();
    let client = VdeviceClient::attach(&mut d0, 7, bus.bootstrap()).unwrap();
    (broker, dom, bus, d0, client)
}

#[test]
fn a_garbled_entry_is_refused_and_the_old_entry_written_back() {
    let (_b, mut dom, mut bus, _d0, client) = domain_and_dom0("vdevice-garbled");
    let mem = client.mem();
    let mut raw = [0u8; ENTRY_LEN];
    net_owner_entry(5)
        .emit(&mut Entry::new_unchecked(&mut raw[..]))
        .unwrap();
    raw[0] = 9; // no such kind
    mem.write_from(entry_offset(2, 4).unwrap(), &raw).unwrap();
    mem.store_u32(field::CHANGE_INDEX.start, 2, Ordering::Relaxed)
        .unwrap();
    mem.store_u32(field::CHANGE_SERIAL.start, 1, Ordering::Release)
        .unwrap();
    let mut applied = 0;
    let mut apply = |_: u32, _: &EntryRepr, _: &EntryRepr| {
        applied += 1;
        Applied::Ok { share_ref: None }
    };
    assert_eq!(bus.poll(&mut dom, &mut apply).unwrap(), None);
    assert_eq!(bus.poll(&mut dom, &mut apply).unwrap(), None);
    assert_eq!(applied, 0);
    let snap = client.snapshot().unwrap();
    assert_eq!(snap.header.ack_serial, 1);
    assert_eq!(snap.header.ack_status, status::EINVAL);
    assert_eq!(
        snap.entries[2],
        Ok(EntryRepr {
            status: status::EINVAL,
            ..EntryRepr::EMPTY
        }),
        "the entry as it was, with EINVAL"
    );
}

#[test]
fn a_refusal_in_the_header_is_reported_whatever_the_entry_says() {
    let (_b, mut dom, bus, mut d0, mut client) = domain_and_dom0("vdevice-ackstatus");
    // A domain that acknowledges with EINVAL but never writes the entry
    // back, so the entry still holds what dom0 wrote (status 0).
    let domain = std::thread::spawn(move || {
        dom.wait(Some(dom.now_ns() + 5_000_000_000), &mut |_| {})
            .unwrap();
        let mem = bus.mem();
        let serial = mem
            .load_u32(field::CHANGE_SERIAL.start, Ordering::Acquire)
            .unwrap();
        mem.write_u32(field::ACK_STATUS.start, status::EINVAL as u32)
            .unwrap();
        mem.store_u32(field::ACK_SERIAL.start, serial, Ordering::Release)
            .unwrap();
        dom.notify(bus.port()).unwrap();
        (dom, bus)
    });
    let dl = d0.now_ns() + 5_000_000_000;
    let acked = client.change(&mut d0, 1, &net_owner_entry(5), dl).unwrap();
    assert_eq!(acked.status, status::EINVAL);
    let _ = domain.join().unwrap();
}

#[test]
fn a_page_naming_another_domain_is_refused() {
    let (_b, _dom, _bus, mut d0, mut client) = domain_and_dom0("vdevice-domid");
    client.mem().write_u16(field::DOMID.start, 8).unwrap();
    let dl = d0.now_ns() + 100_000_000;
    let r = client.change(&mut d0, 1, &net_owner_entry(5), dl);
    assert!(matches!(r, Err(Error::Protocol { .. })), "{r:?}");
    assert_eq!(
        client
            .mem()
            .load_u32(field::CHANGE_SERIAL.start, Ordering::Acquire),
        Ok(0),
        "nothing written"
    );
}

#[test]
fn dom0_refuses_to_write_an_entry_the_domain_could_not_parse() {
    let (_b, _dom, _bus, mut d0, mut client) = domain_and_dom0("vdevice-badentry");
    let bad = EntryRepr {
        numpages: 5000,
        ..net_owner_entry(5)
    };
    let dl = d0.now_ns() + 100_000_000;
    let r = client.change(&mut d0, 1, &bad, dl);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    assert_eq!(
        client
            .mem()
            .load_u32(field::CHANGE_SERIAL.start, Ordering::Acquire),
        Ok(0),
        "nothing written"
    );
}
