//! The tool's logic against real domain-side vdevice buses, on the host
//! simulation: a backend domain and a member domain each run a
//! `VdeviceBus` in their own thread; dom0 connects and disconnects them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use share_hal::platform::{Clock, DomId, EventChannels, GrantRef, DOM0};
use share_hal::vdevice::{Applied, VdeviceBus};
use share_hal::wire::vdevice::{status, EntryRepr, Kind, Role};
use share_sim::{temp_socket_path, Broker, SimPlatform};
use vdevice::{DeviceSpec, Tool, ToolError};

mod common;
use common::{dom0_tool, Published};

/// A domain that applies every change, answering owner entries with a
/// share_ref, and refusing disks.
fn domain(
    path: &std::path::Path,
    domid: DomId,
    published: &Published,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<EntryRepr>> {
    let mut p = SimPlatform::connect(path, domid).unwrap();
    let mut bus = VdeviceBus::create(&mut p, 8).unwrap();
    published.0.lock().unwrap().insert(domid, bus.bootstrap());
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = p.wait(Some(p.now_ns() + 20_000_000), &mut |_| {});
            let mut apply = |i: u32, _old: &EntryRepr, new: &EntryRepr| match (new.kind, new.role) {
                (Kind::Disk, _) => Applied::Refused(status::ENODEV),
                (_, Role::Owner) => Applied::Ok {
                    share_ref: Some(GrantRef(500 + i)),
                },
                _ => Applied::Ok { share_ref: None },
            };
            bus.poll(&mut p, &mut apply).unwrap();
        }
        bus.entries().to_vec()
    })
}

#[test]
fn connect_then_disconnect_a_member() {
    let path = temp_socket_path("vdevice-tool");
    let _broker = Broker::spawn(&path).unwrap();
    let published = Published::default();
    let stop = Arc::new(AtomicBool::new(false));
    let backend = domain(&path, 1, &published, stop.clone());
    let member = domain(&path, 3, &published, stop.clone());
    let mut tool = dom0_tool(&path, &published);
    let net = DeviceSpec {
        kind: Kind::Network,
        subtype: 1,
        numpages: 16,
        flags: 0,
        param: 0,
        rate: None,
        ips: vdevice::NO_IPS,
    };
    let mut lines = Vec::new();
    tool.connect(1, 3, net, &mut |s| lines.push(s.to_string()))
        .unwrap();
    let listing = tool.show(3).unwrap();
    assert!(listing.garbled.is_empty());
    let used = listing.used;
    assert_eq!(used.len(), 1);
    assert_eq!(
        (used[0].1.role, used[0].1.peer, used[0].1.share_ref),
        (Role::Member, 1, GrantRef(500))
    );

    // The same pair twice is refused before anything changes.
    let again = tool.connect(1, 3, net, &mut |_| {});
    assert!(
        matches!(again, Err(ToolError::Exists { domid: 1, peer: 3 })),
        "{again:?}"
    );

    // A refusal by the backend is reported with its status.
    let disk = DeviceSpec {
        kind: Kind::Disk,
        ..net
    };
    let refused = tool.connect(1, 3, disk, &mut |_| {});
    assert!(
        matches!(
            refused,
            Err(ToolError::Refused {
                domid: 1,
                status: status::ENODEV
            })
        ),
        "{refused:?}"
    );

    // An unknown domain: a clear error, nothing touched.
    let e = tool.connect(1, 9, net, &mut |_| {}).unwrap_err();
    assert!(
        e.to_string()
            .contains("domain 9 has not published a vdevice page"),
        "{e}"
    );
    // ...and the backend's half was undone.
    assert_eq!(tool.show(1).unwrap().used.len(), 1);

    tool.disconnect(1, 3, Kind::Network, &mut |s| lines.push(s.to_string()))
        .unwrap();
    assert!(tool.show(1).unwrap().used.is_empty());
    assert!(tool.show(3).unwrap().used.is_empty());
    let missing = tool.disconnect(1, 3, Kind::Network, &mut |_| {});
    assert!(
        matches!(missing, Err(ToolError::NotFound { domid: 3, peer: 1 })),
        "{missing:?}"
    );

    stop.store(true, Ordering::Relaxed);
    let b = backend.join().unwrap();
    let m = member.join().unwrap();
    assert!(b.iter().chain(&m).all(|e| e.kind == Kind::Empty));
    assert_eq!(lines.len(), 4, "{lines:?}");
}

/// A domain that publishes its page but never serves its port.
fn silent_domain(path: &std::path::Path, domid: DomId, published: &Published) -> SimPlatform {
    let mut p = SimPlatform::connect(path, domid).unwrap();
    let bus = VdeviceBus::create(&mut p, 8).unwrap();
    published.0.lock().unwrap().insert(domid, bus.bootstrap());
    std::mem::forget(bus);
    p
}

#[test]
fn a_domain_that_never_acknowledges_gets_a_clear_error_in_time() {
    let path = temp_socket_path("vdevice-tool-noack");
    let _broker = Broker::spawn(&path).unwrap();
    let published = Published::default();
    let _backend = silent_domain(&path, 1, &published);
    let _member = silent_domain(&path, 3, &published);
    let mut tool = Tool {
        platform: SimPlatform::connect(&path, DOM0).unwrap(),
        lookup: published.clone(),
        timeout_ns: 200_000_000,
    };
    let net = DeviceSpec {
        kind: Kind::Network,
        subtype: 0,
        numpages: 16,
        flags: 0,
        param: 0,
        rate: None,
        ips: vdevice::NO_IPS,
    };
    let t0 = tool.platform.now_ns();
    let e = tool.connect(1, 3, net, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ToolError::NoAck { domid: 1, .. }), "{e:?}");
    assert!(e.to_string().contains("did not acknowledge"), "{e}");
    assert!(tool.platform.now_ns() - t0 < 5_000_000_000);
    // The change stays pending: the next one is refused, nothing piles up.
    let again = tool.connect(1, 3, net, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            again,
            ToolError::Pending {
                domid: 1,
                serial: 1
            }
        ),
        "{again:?}"
    );
    assert!(
        again.to_string().contains("has not acknowledged change 1"),
        "{again}"
    );
}

#[test]
fn the_longest_timeout_does_not_overflow_the_deadline() {
    let path = temp_socket_path("vdevice-tool-timeout");
    let _broker = Broker::spawn(&path).unwrap();
    let published = Published::default();
    let stop = Arc::new(AtomicBool::new(false));
    let backend = domain(&path, 1, &published, stop.clone());
    let member = domain(&path, 3, &published, stop.clone());
    let mut tool = Tool {
        platform: SimPlatform::connect(&path, DOM0).unwrap(),
        lookup: published.clone(),
        timeout_ns: u64::MAX,
    };
    let net = DeviceSpec {
        kind: Kind::Network,
        subtype: 0,
        numpages: 16,
        flags: 0,
        param: 0,
        rate: None,
        ips: vdevice::NO_IPS,
    };
    tool.connect(1, 3, net, &mut |_| {}).unwrap();
    stop.store(true, Ordering::Relaxed);
    backend.join().unwrap();
    member.join().unwrap();
}

#[test]
fn a_second_connect_with_a_policy_leaves_the_first_ports_items_alone() {
    let path = temp_socket_path("vdevice-tool-policy");
    let _broker = Broker::spawn(&path).unwrap();
    let published = Published::default();
    let stop = Arc::new(AtomicBool::new(false));
    let backend = domain(&path, 1, &published, stop.clone());
    let member = domain(&path, 3, &published, stop.clone());
    let mut tool = dom0_tool(&path, &published);
    let rate = share_hal::wire::vdevice::PolicyItem::Rate {
        kbit_per_sec: 1000,
        burst_bytes: 6250,
        frames_per_sec: 0,
    };
    let net = DeviceSpec {
        kind: Kind::Network,
        subtype: 1,
        numpages: 16,
        flags: 0,
        param: 0,
        rate: Some(rate),
        ips: vdevice::NO_IPS,
    };
    tool.connect(1, 3, net, &mut |_| {}).unwrap();
    let items = |tool: &mut vdevice::Tool<SimPlatform, common::Published>| {
        tool.show(1)
            .unwrap()
            .used
            .iter()
            .filter(|(_, e)| vdevice::is_policy_item(e))
            .count()
    };
    assert_eq!(items(&mut tool), 1);
    // The port exists: refused, and its item neither doubled nor removed.
    let again = tool.connect(1, 3, net, &mut |_| {});
    assert!(matches!(again, Err(ToolError::Exists { .. })), "{again:?}");
    assert_eq!(items(&mut tool), 1);
    // Disconnecting takes the item with the port.
    tool.disconnect(1, 3, Kind::Network, &mut |_| {}).unwrap();
    assert_eq!(items(&mut tool), 0);
    stop.store(true, Ordering::Relaxed);
    backend.join().unwrap();
    member.join().unwrap();
}
