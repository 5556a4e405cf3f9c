//! The real `netback-sim` process on the host simulation: dom0 makes ports
//! with owner entries in its vdevice page, members in this process attach
//! and exchange frames through it, and a removed port goes down while the
//! others keep forwarding.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netback_uk::service::make_port_param;
use netback_uk::testing::{eth, TestMember};
use share_hal::frames::FrameMeta;
use share_hal::platform::{Access, Clock, DomId, GrantRef, GrantTable, Mapping, DOM0};
use share_hal::share::ShareRef;
use share_hal::vdevice::VdeviceClient;
use share_hal::wire::vdevice::{status, Bootstrap, EntryRepr, Kind, Role, BOOTSTRAP_KEY};
use share_sim::{temp_socket_path, Broker, SimPlatform, SimStore};

const NETBACK: DomId = 1;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

fn owner_entry(member: DomId, lan: u16) -> EntryRepr {
    EntryRepr {
        kind: Kind::Network,
        role: Role::Owner,
        numpages: 10,
        peer: member,
        param: make_port_param([0; 6], lan),
        ..EntryRepr::EMPTY
    }
}

#[test]
fn netback_sim_switches_between_members_and_removes_ports() {
    let path = temp_socket_path("netback-sim");
    let _broker = Broker::spawn(&path).unwrap();
    let _nb = Kill(
        Command::new(env!("CARGO_BIN_EXE_netback-sim"))
            .args([
                "--sim",
                path.to_str().unwrap(),
                "--domid",
                "1",
                "--report-secs",
                "0",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let store = SimStore::for_broker(&path);
    let boot = until("netback-sim to publish", || {
        store.read(NETBACK, BOOTSTRAP_KEY).unwrap()
    });
    let boot = Bootstrap::parse(boot.as_bytes()).unwrap();
    let mut dom0 = SimPlatform::connect(&path, DOM0).unwrap();
    let mut client = VdeviceClient::attach(&mut dom0, NETBACK, boot).unwrap();
    let change =
        |client: &mut VdeviceClient<_>, dom0: &mut SimPlatform, index: u32, e: &EntryRepr| {
            let deadline = dom0.now_ns() + 5_000_000_000;
            client.change(dom0, index, e, deadline).unwrap()
        };

    // Ports for domains 2 and 3 on LAN 5; a disk entry is refused.
    let mut members = Vec::new();
    for (index, member) in [(0u32, 2), (1, 3)] {
        let acked = change(&mut client, &mut dom0, index, &owner_entry(member, 5));
        assert_eq!(acked.status, status::OK);
        let r = ShareRef {
            owner: NETBACK,
            descriptor: acked.share_ref,
        };
        let p = SimPlatform::connect(&path, member).unwrap();
        members.push(TestMember::join(p, r, 0));
    }
    let disk = EntryRepr {
        kind: Kind::Disk,
        ..owner_entry(4, 5)
    };
    assert_eq!(
        change(&mut client, &mut dom0, 2, &disk).status,
        status::ENODEV
    );
    let dup = owner_entry(2, 5);
    assert_eq!(
        change(&mut client, &mut dom0, 3, &dup).status,
        status::EEXIST
    );
    let tiny = EntryRepr {
        numpages: 2,
        ..owner_entry(6, 5)
    };
    assert_eq!(
        change(&mut client, &mut dom0, 3, &tiny).status,
        status::EINVAL
    );

    let mut b = members.pop().unwrap();
    let mut a = members.pop().unwrap();
    until("both links up", || {
        (a.link_up() && b.link_up()).then_some(())
    });
    // 200 frames each way, in bursts that fit the 8-slot lanes.
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for burst in 0..50u8 {
        let to_b: Vec<_> = (0..4).map(|k| eth(b.mac, a.mac, 60 + k, burst)).collect();
        let to_a: Vec<_> = (0..4).map(|k| eth(a.mac, b.mac, 1514 - k, burst)).collect();
        assert_eq!(a.send(&to_b, FrameMeta::default()), 4);
        assert_eq!(b.send(&to_a, FrameMeta::default()), 4);
        until("the burst to arrive", || {
            got_b.extend(b.recv());
            got_a.extend(a.recv());
            (got_b.len() == 4 * (burst as usize + 1) && got_a.len() == 4 * (burst as usize + 1))
                .then_some(())
        });
    }
    assert!(got_b
        .iter()
        .all(|(f, _)| f[6..12] == a.mac && f.len() < 64 + 4));
    assert!(got_a
        .iter()
        .all(|(f, _)| f[6..12] == b.mac && f.len() > 1500));

    // dom0 reads the per-port counters from netback's counter page (the
    // housekeeping refreshes it every second), no xenstore involved.
    let gref = client
        .snapshot()
        .unwrap()
        .header
        .stats
        .expect("a counter page");
    let counters = until("the counters to show the traffic", || {
        let page = dom0.map(NETBACK, &[gref], Access::ReadOnly).unwrap();
        let r = share_hal::stats::read(page.mem()).unwrap();
        dom0.unmap(page).unwrap();
        (r.entries[0][0] == 200 && r.entries[1][0] == 200).then_some(r)
    });
    assert_eq!(counters.entries[0][2], 200, "to_member_frames of port 0");
    assert_eq!(counters.entries[1][10], 1, "port 1 up");
    assert!(
        counters.entries[0][4..10].iter().all(|&d| d == 0),
        "no drops"
    );
    assert!(assert_no_write(&mut dom0, gref));

    // dom0 removes b's port: its link goes down, a's traffic no longer
    // reaches it, and a grant copy from its share is refused once b lets go.
    assert_eq!(
        change(&mut client, &mut dom0, 1, &EntryRepr::EMPTY).status,
        status::OK
    );
    until("b's link down", || (!b.link_up()).then_some(()));
    a.send(&[eth([0xff; 6], a.mac, 60, 99)], FrameMeta::default());
    std::thread::sleep(Duration::from_millis(100));
    assert!(b.recv().is_empty());
    client.detach(&mut dom0).unwrap();
}

/// The counter page is read-only for dom0.
fn assert_no_write(dom0: &mut SimPlatform, gref: GrantRef) -> bool {
    dom0.map(NETBACK, &[gref], Access::ReadWrite).is_err()
}
