//! `reconnect_disk` against real domain-side vdevice buses on the host
//! simulation: disk servers that answer owner entries with a share, and a
//! member that takes a disk member entry rewritten in place (as
//! share-member does) and refuses what it is told to refuse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use share_hal::platform::{Clock, DomId, EventChannels, GrantRef};
use share_hal::vdevice::{Applied, VdeviceBus};
use share_hal::wire::vdevice::{flags, status, EntryRepr, Kind, Role};
use share_sim::{temp_socket_path, Broker, SimPlatform};
use vdevice::{DeviceSpec, ToolError};

mod common;
use common::{dom0_tool, Published};

/// Every change a domain applied: (index, old, new).
type Changes = Arc<Mutex<Vec<(u32, EntryRepr, EntryRepr)>>>;

/// A domain running its vdevice bus in a thread until `stop`. Owner
/// entries get share_ref `base + index`; a disk member entry may replace a
/// disk member entry in place (the member's re-attach); member entries
/// naming a domain in `refuse_from` are refused with EINVAL.
fn domain(
    path: &std::path::Path,
    domid: DomId,
    base: u32,
    refuse_from: &'static [DomId],
    published: &Published,
    stop: Arc<AtomicBool>,
) -> (JoinHandle<Vec<EntryRepr>>, Changes) {
    let mut p = SimPlatform::connect(path, domid).unwrap();
    let mut bus = VdeviceBus::create(&mut p, 8).unwrap();
    published.0.lock().unwrap().insert(domid, bus.bootstrap());
    let changes: Changes = Arc::default();
    let seen = changes.clone();
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = p.wait(Some(p.now_ns() + 20_000_000), &mut |_| {});
            let mut apply = |i: u32, old: &EntryRepr, new: &EntryRepr| {
                let in_place = old.kind == Kind::Disk
                    && old.role == Role::Member
                    && new.kind == Kind::Disk
                    && new.role == Role::Member;
                if old.kind != Kind::Empty && new.kind != Kind::Empty && !in_place {
                    return Applied::Refused(status::EEXIST);
                }
                if new.role == Role::Member && refuse_from.contains(&new.peer) {
                    return Applied::Refused(status::EINVAL);
                }
                seen.lock().unwrap().push((i, *old, *new));
                match new.role {
                    Role::Owner if new.kind != Kind::Empty => Applied::Ok {
                        share_ref: Some(GrantRef(base + i)),
                    },
                    _ => Applied::Ok { share_ref: None },
                }
            };
            bus.poll(&mut p, &mut apply).unwrap();
        }
        bus.entries().to_vec()
    });
    (h, changes)
}

const DISK: DeviceSpec = DeviceSpec {
    kind: Kind::Disk,
    subtype: 0xf,
    numpages: 34,
    flags: flags::READ_ONLY,
    param: 2,
    rate: None,
    ips: vdevice::NO_IPS,
};

#[test]
fn a_disk_moves_to_a_restarted_server_in_place() {
    let path = temp_socket_path("vdevice-reconnect");
    let _broker = Broker::spawn(&path).unwrap();
    let published = Published::default();
    let old_stop = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // The old server (1), its restart (5), a server the member refuses
    // (6), another server (7); the member (3).
    let (old, _) = domain(&path, 1, 100, &[], &published, old_stop.clone());
    let (member, member_changes) = domain(&path, 3, 0, &[6], &published, stop.clone());
    let mut tool = dom0_tool(&path, &published);
    // Another entry first, so the disk is not at index 0.
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
    tool.connect(1, 3, DISK, &mut |_| {}).unwrap();
    let before = tool.show(3).unwrap().used;
    let (index, was) = before
        .iter()
        .copied()
        .find(|(_, e)| e.kind == Kind::Disk)
        .unwrap();
    assert_eq!((index, was.peer, was.share_ref), (1, 1, GrantRef(101)));

    // The old server is gone (its page is not read again).
    old_stop.store(true, Ordering::Relaxed);
    old.join().unwrap();
    let (new, new_changes) = domain(&path, 5, 500, &[], &published, stop.clone());
    let mut lines = Vec::new();
    tool.reconnect_disk(5, 3, 2, None, &mut |s| lines.push(s.to_string()))
        .unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].contains("moved from domain 1"), "{lines:?}");

    // The new server's owner entry has the old entry's flags, features,
    // pages and disk.
    let served = tool.show(5).unwrap().used;
    assert_eq!(served.len(), 1);
    let o = served[0].1;
    assert_eq!(
        (o.kind, o.role, o.peer, o.flags, o.subtype, o.numpages, o.param),
        (Kind::Disk, Role::Owner, 3, flags::READ_ONLY, 0xf, 34, 2)
    );
    // The member's entry was rewritten in place: same index, one change
    // from the old share to the new one, nothing else touched.
    let after = tool.show(3).unwrap().used;
    assert_eq!(after.len(), 2);
    let m = after.iter().find(|(i, _)| *i == index).unwrap().1;
    assert_eq!(
        (m.kind, m.role, m.peer, m.share_ref, m.param, m.flags),
        (
            Kind::Disk,
            Role::Member,
            5,
            GrantRef(500),
            2,
            flags::READ_ONLY
        )
    );
    let last = *member_changes.lock().unwrap().last().unwrap();
    assert_eq!((last.0, last.1.peer, last.2.peer), (index, 1, 5));
    assert_eq!(new_changes.lock().unwrap().len(), 1);

    // Nothing to move: no such disk, a wrong old backend, the same backend.
    let e = tool.reconnect_disk(5, 3, 9, None, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ToolError::NoDisk { disk: 9, .. }), "{e:?}");
    let e = tool
        .reconnect_disk(5, 3, 2, Some(1), &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("no disk 2 of domain 1"), "{e}");
    let e = tool.reconnect_disk(5, 3, 2, None, &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, ToolError::Exists { domid: 3, peer: 5 }),
        "{e:?}"
    );

    // The member refuses the new share: the new server's half is undone
    // and the member's entry stays on the share it had.
    let (refused, _) = domain(&path, 6, 600, &[], &published, stop.clone());
    let e = tool.reconnect_disk(6, 3, 2, None, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            e,
            ToolError::Refused {
                domid: 3,
                status: status::EINVAL
            }
        ),
        "{e:?}"
    );
    assert!(tool.show(6).unwrap().used.is_empty());
    let m = tool
        .show(3)
        .unwrap()
        .used
        .into_iter()
        .find(|(i, _)| *i == index)
        .unwrap()
        .1;
    assert_eq!((m.peer, m.share_ref), (5, GrantRef(500)));

    // Disk 2 from two servers: the old one must be named.
    let (other, _) = domain(&path, 7, 700, &[], &published, stop.clone());
    tool.connect(7, 3, DISK, &mut |_| {}).unwrap();
    let (again, _) = domain(&path, 8, 800, &[], &published, stop.clone());
    let e = tool.reconnect_disk(8, 3, 2, None, &mut |_| {}).unwrap_err();
    match &e {
        ToolError::Ambiguous { peers, .. } => assert_eq!(peers, &[5, 7]),
        e => panic!("{e:?}"),
    }
    assert!(tool.show(8).unwrap().used.is_empty(), "nothing was made");
    tool.reconnect_disk(8, 3, 2, Some(7), &mut |_| {}).unwrap();
    let peers: Vec<DomId> = tool
        .show(3)
        .unwrap()
        .used
        .iter()
        .filter(|(_, e)| e.kind == Kind::Disk)
        .map(|(_, e)| e.peer)
        .collect();
    assert_eq!(peers, [5, 8]);

    stop.store(true, Ordering::Relaxed);
    for h in [member, new, refused, other, again] {
        h.join().unwrap();
    }
}
