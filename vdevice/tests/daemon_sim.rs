//! `vdevice daemon`'s passes on the host simulation: the record and the
//! domains (netback-uk's switch, a disk server, members) made to agree
//! again after a guest restarts under a new id, a backend is destroyed and
//! re-created, and a guest is destroyed for good.

use share_hal::platform::DomId;
use share_hal::wire::vdevice::{EntryRepr, Kind, Role};
use vdevice::admin::{Admin, CreateOpts};
use vdevice::daemon::{reconcile, Pass};
use vdevice::lan_of;
use vdevice::record::{Record, What};

mod common;
use common::{disk_server, entries, member, netback, preset, Dom, DomTool as T, FakeHost, SimHost};

fn used(tool: &mut T, domid: DomId) -> Vec<(u32, EntryRepr)> {
    tool.show(domid).unwrap().used
}

fn owners(tool: &mut T, backend: DomId) -> Vec<DomId> {
    let mut v: Vec<DomId> = entries(tool, backend)
        .iter()
        .filter(|e| e.role == Role::Owner)
        .map(|e| e.peer)
        .collect();
    v.sort();
    v
}

fn member_id(rec: &Record, dev: &str, name: &str) -> Option<DomId> {
    rec.device(dev)
        .unwrap()
        .members
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.domid)
}

fn pass(
    tool: &mut T,
    host: &FakeHost,
    rec: &mut Record,
    now: u64,
    lines: &mut Vec<String>,
) -> Pass {
    let mut h = host.clone();
    reconcile(tool, &mut h, rec, now, 600, &mut |s| {
        lines.push(s.to_string())
    })
    .unwrap()
}

/// Every member of every device is connected, as `--list` reads the pages.
fn all_connected(tool: &mut T, host: &FakeHost, rec: &Record) -> bool {
    let mut h = host.clone();
    let mut admin = Admin { tool, host: &mut h };
    admin
        .list(rec)
        .unwrap()
        .iter()
        .all(|v| v.members.iter().all(|m| m.state == "connected"))
}

/// netback-uk (1), a disk server (2), guest-a (3) and guest-b (4) on the
/// simulation; net0 of both guests and blk0 (a file) of guest-a, made
/// with the `--create` commands.
struct Lab {
    sim: SimHost,
    tool: T,
    rec: Record,
    file: std::path::PathBuf,
    nb: Option<Dom>,
    bb: Option<Dom>,
    a: Option<Dom>,
    b: Option<Dom>,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let sim = SimHost::new(name);
        let nb = sim.netback(1);
        let bb = sim.disk_server(2);
        let a = sim.member(3, "guest-a", &[]);
        let b = sim.member(4, "guest-b", &[]);
        let mut tool = sim.tool();
        let mut rec = Record::default();
        let file = std::env::temp_dir().join(format!("{name}-{}.img", std::process::id()));
        std::fs::write(&file, [0u8; 512]).unwrap();
        {
            let mut h = sim.host.clone();
            let mut admin = Admin {
                tool: &mut tool,
                host: &mut h,
            };
            let mut log = |_: &str| {};
            let opts = CreateOpts::default();
            let names = ["guest-a".to_string(), "guest-b".to_string()];
            admin.create_net(&mut rec, &opts, &names, &mut log).unwrap();
            admin
                .create_block(&mut rec, &opts, &file, &names[..1], &mut log)
                .unwrap();
        }
        Lab {
            sim,
            tool,
            rec,
            file,
            nb: Some(nb),
            bb: Some(bb),
            a: Some(a),
            b: Some(b),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

#[test]
fn devices_come_back_to_restarted_domains() {
    let mut lab = Lab::new("vdevice-daemon");
    let mut lines = Vec::new();
    let (path, published, host) = (
        lab.sim.path.clone(),
        lab.sim.published.clone(),
        lab.sim.host.clone(),
    );
    let (a, nb, bb) = (
        lab.a.take().unwrap(),
        lab.nb.take().unwrap(),
        lab.bb.take().unwrap(),
    );
    let (tool, rec) = (&mut lab.tool, &mut lab.rec);
    // Nothing to do while the domains are as recorded.
    assert_eq!(pass(tool, &host, rec, 1000, &mut lines), Pass::default());

    // guest-a reboots: gone first (what the backends held for it is
    // freed at once), then back as domain 7, before and after it publishes
    // its page.
    a.stop();
    host.gone(3);
    let p = pass(tool, &host, rec, 1001, &mut lines);
    assert!(p.changed && p.pending, "{p:?}");
    assert_eq!(owners(tool, 1), [4]);
    assert!(owners(tool, 2).is_empty());
    assert_eq!(member_id(rec, "net0", "guest-a"), None);
    assert!(rec.device("net0").unwrap().members[0].away_since == Some(1001));
    host.add(7, "guest-a");
    let p = pass(tool, &host, rec, 1002, &mut lines);
    assert!(p.pending, "guest-a has not published its page yet: {p:?}");
    assert_eq!(member_id(rec, "net0", "guest-a"), None);
    let _a = member(&path, 7, &published, &[]);
    let p = pass(tool, &host, rec, 1003, &mut lines);
    assert!(p.changed && !p.pending, "{p:?} {lines:?}");
    assert_eq!(member_id(rec, "net0", "guest-a"), Some(7));
    assert_eq!(member_id(rec, "blk0", "guest-a"), Some(7));
    assert_eq!(owners(tool, 1), [4, 7]);
    assert_eq!(owners(tool, 2), [7]);
    assert_eq!(entries(tool, 7).len(), 2);
    assert!(all_connected(tool, &host, rec));
    let disk_index_a = used(tool, 7)
        .iter()
        .find(|(_, e)| e.kind == Kind::Disk)
        .unwrap()
        .0;

    // netback-uk is destroyed: the members' ports are freed. It is
    // created again as domain 8: both LANs' ports are made again.
    nb.stop();
    host.gone(1);
    let p = pass(tool, &host, rec, 1010, &mut lines);
    assert!(p.changed && p.pending);
    for id in [4, 7] {
        assert!(
            entries(tool, id).iter().all(|e| e.kind != Kind::Network),
            "domain {id}'s port of the dead switch is freed"
        );
    }
    let _nb = netback(&path, 8, &published);
    host.add(8, "netback-uk");
    let p = pass(tool, &host, rec, 1011, &mut lines);
    assert!(p.changed && !p.pending, "{p:?} {lines:?}");
    assert_eq!(rec.device("net0").unwrap().backend.domid, Some(8));
    assert_eq!(owners(tool, 8), [4, 7]);
    for id in [4, 7] {
        let net: Vec<EntryRepr> = entries(tool, id)
            .into_iter()
            .filter(|e| e.kind == Kind::Network)
            .collect();
        assert_eq!(net.len(), 1);
        assert_eq!((net[0].peer, lan_of(net[0].param)), (8, 0));
    }
    assert!(all_connected(tool, &host, rec));

    // blkback-uk is destroyed and created again as domain 9: the file is
    // given to it again and guest-a's disk entry is rewritten in place
    // (same entry, new server), so it keeps its block device.
    bb.stop();
    host.gone(2);
    host.disks.lock().unwrap().retain(|d| d.0 != 2);
    let p = pass(tool, &host, rec, 1020, &mut lines);
    assert!(p.pending);
    let disk = entries(tool, 7)
        .into_iter()
        .find(|e| e.kind == Kind::Disk)
        .unwrap();
    assert_eq!(disk.peer, 2, "the disk entry waits for the server");
    let _bb = disk_server(&path, 9, &published, &host);
    host.add(9, "blkback-uk");
    let p = pass(tool, &host, rec, 1021, &mut lines);
    assert!(p.changed && !p.pending, "{p:?} {lines:?}");
    assert_eq!(host.disk_count(9), 1);
    let (i, disk) = used(tool, 7)
        .into_iter()
        .find(|(_, e)| e.kind == Kind::Disk)
        .unwrap();
    assert_eq!((i, disk.peer, disk.param), (disk_index_a, 9, 0));
    assert_eq!(owners(tool, 9), [7]);
    let blk = rec.device("blk0").unwrap();
    assert_eq!(blk.backend.domid, Some(9));
    assert!(blk.stale.is_none());
    assert!(matches!(&blk.what, What::Block { vdev, .. } if vdev == "xvdb"));
    assert!(all_connected(tool, &host, rec));

    // guest-b is destroyed for good: its port is freed at once, and it
    // leaves the record after the grace period.
    drop(lab.b.take());
    host.gone(4);
    pass(tool, &host, rec, 2000, &mut lines);
    assert_eq!(owners(tool, 8), [7]);
    assert_eq!(rec.device("net0").unwrap().members.len(), 2);
    let p = pass(tool, &host, rec, 2000 + 599, &mut lines);
    assert!(p.pending);
    assert_eq!(rec.device("net0").unwrap().members.len(), 2);
    let p = pass(tool, &host, rec, 2000 + 600, &mut lines);
    assert!(p.changed && !p.pending, "{p:?}");
    let names: Vec<&str> = rec
        .device("net0")
        .unwrap()
        .members
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["guest-a"]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("guest-b has been gone 600 s")),
        "{lines:?}"
    );
}

#[test]
fn a_backend_restarted_between_two_passes_is_caught_up() {
    let sim = SimHost::new("vdevice-daemon-missed");
    let (path, published, host) = (sim.path.clone(), sim.published.clone(), sim.host.clone());
    let nb = sim.netback(1);
    let _a = sim.member(3, "guest-a", &[]);
    let mut tool = sim.tool();
    let mut rec = Record::default();
    let mut lines = Vec::new();
    {
        let mut h = host.clone();
        let mut admin = Admin {
            tool: &mut tool,
            host: &mut h,
        };
        // With a policy, which the re-made LAN must keep.
        let opts = CreateOpts {
            bind_addresses: true,
            rate: Some(vdevice::record::NetRate::parse("50M").unwrap()),
            addresses: vec![("3".into(), "192.168.7.3/32".into())],
            ..CreateOpts::default()
        };
        admin
            .create_net(&mut rec, &opts, &["3".to_string()], &mut |_| {})
            .unwrap();
    }
    // Gone and back before the daemon looked: guest-a still holds its
    // port of the dead switch; it is replaced, not added to.
    nb.stop();
    host.gone(1);
    let _nb = netback(&path, 6, &published);
    host.add(6, "netback-uk");
    let p = pass(&mut tool, &host, &mut rec, 10, &mut lines);
    assert!(p.changed && !p.pending, "{p:?} {lines:?}");
    let e = entries(&mut tool, 3);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].kind, e[0].peer), (Kind::Network, 6));
    assert!(all_connected(&mut tool, &host, &rec));
    assert!(rec.device("net0").unwrap().stale.is_none());
    // The new switch got the port's flags and items again, all accepted.
    let backend = entries(&mut tool, 6);
    let port = backend
        .iter()
        .find(|e| e.role == Role::Owner && !vdevice::is_policy_item(e))
        .unwrap();
    assert_eq!(port.flags, share_hal::wire::vdevice::flags::BIND_ADDRESSES);
    let items: Vec<_> = backend
        .iter()
        .filter_map(|e| share_hal::wire::vdevice::PortPolicyRepr::parse(e)?.ok())
        .collect();
    assert_eq!(items.len(), 2, "{backend:?}");
    assert!(items.iter().all(|it| it.member == 3));
    assert!(backend.iter().all(|e| e.status == 0));
    // A second pass has nothing to do.
    assert_eq!(
        pass(&mut tool, &host, &mut rec, 11, &mut lines),
        Pass::default()
    );
}

/// `xl save` then `xl restore`: the guest comes back under a new id with
/// its page as it was (entries naming shares made for its old id). Each
/// entry is rewritten in place with a share for the new id, so the guest
/// keeps its network and block devices.
#[test]
fn a_restored_guest_keeps_its_entries_rewritten_in_place() {
    let mut lab = Lab::new("vdevice-daemon-restore");
    let mut lines = Vec::new();
    let (path, published, host) = (
        lab.sim.path.clone(),
        lab.sim.published.clone(),
        lab.sim.host.clone(),
    );
    let a = lab.a.take().unwrap();
    let (tool, rec) = (&mut lab.tool, &mut lab.rec);
    let before = used(tool, 3);
    assert_eq!(before.len(), 2);

    // Saved: gone, and what the backends held for domain 3 is freed.
    a.stop();
    host.gone(3);
    pass(tool, &host, rec, 1001, &mut lines);
    assert_eq!(owners(tool, 1), [4]);
    assert!(owners(tool, 2).is_empty());

    // Restored as domain 7, its page as it was.
    let _a = member(&path, 7, &published, &[]);
    preset(&mut tool.platform, &published, 7, &before);
    host.add(7, "guest-a");
    let p = pass(tool, &host, rec, 1002, &mut lines);
    assert!(p.changed && !p.pending, "{p:?} {lines:?}");
    assert_eq!(member_id(rec, "net0", "guest-a"), Some(7));
    assert_eq!(member_id(rec, "blk0", "guest-a"), Some(7));
    assert_eq!(owners(tool, 1), [4, 7]);
    assert_eq!(owners(tool, 2), [7]);
    let after = used(tool, 7);
    assert_eq!(after.len(), 2, "rewritten, not added: {after:?}");
    for ((i, old), (j, new)) in before.iter().zip(after.iter()) {
        assert_eq!(
            (i, old.kind, old.peer, old.param),
            (j, new.kind, new.peer, new.param)
        );
    }
    // Each names the share its backend made for domain 7.
    let served: Vec<EntryRepr> = [1, 2]
        .iter()
        .flat_map(|&b| entries(tool, b))
        .filter(|e| e.role == Role::Owner && e.peer == 7)
        .collect();
    for (_, e) in &after {
        assert!(
            served
                .iter()
                .any(|o| o.kind == e.kind && o.share_ref == e.share_ref),
            "{e:?} names a share made for domain 7: {served:?}"
        );
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("rewritten in place"))
            .count(),
        2,
        "{lines:?}"
    );
    assert!(all_connected(tool, &host, rec));
}
