//! The named-device commands (`--create`, `--add`, `--remove`,
//! `--destroy`, `--list`) on the host simulation: netback-uk's switch in a
//! thread as the LAN backend, a disk server, member domains, and a fake
//! domain list with names.

use std::path::PathBuf;
use std::time::Instant;

use share_hal::wire::vdevice::{flags, Kind, PolicyItem, PortPolicyRepr, Role};
use vdevice::admin::{Admin, AdminError, CreateOpts};
use vdevice::record::{NetRate, Record, What};
use vdevice::{lan_of, ToolError};

mod common;
use common::{args, entries, silent, DomTool, SimHost};

fn owners_for(tool: &mut DomTool, backend: u16, member: u16) -> usize {
    entries(tool, backend)
        .iter()
        .filter(|e| e.role == Role::Owner && e.peer == member)
        .count()
}

#[test]
fn a_lans_policy_goes_in_its_owner_entries_and_the_switch_takes_it() {
    let sim = SimHost::new("vdevice-admin-policy");
    let _nb = sim.netback(1);
    let _a = sim.member(3, "guest-a", &[]);
    let mut tool = sim.tool();
    let mut h = sim.host.clone();
    let mut rec = Record::default();
    let mut log = |_: &str| {};
    let opts = CreateOpts {
        bind_addresses: true,
        private: true,
        rate: Some(NetRate::parse("100M/10ms").unwrap()),
        addresses: vec![("guest-a".into(), "192.168.5.7/32".into())],
        ..CreateOpts::default()
    };
    let mut admin = Admin {
        tool: &mut tool,
        host: &mut h,
    };
    let net0 = admin
        .create_net(&mut rec, &opts, &args(&["guest-a"]), &mut log)
        .unwrap();
    assert!(matches!(
        rec.device(&net0).unwrap().what,
        What::Net {
            bind_addresses: true,
            private: true,
            ..
        }
    ));
    let owner = entries(&mut tool, 1)
        .into_iter()
        .find(|e| e.role == Role::Owner && e.peer == 3 && !vdevice::is_policy_item(e))
        .unwrap();
    assert_eq!(owner.flags, flags::BIND_ADDRESSES | flags::PRIVATE);
    assert_eq!(owner.status, 0, "the switch accepted the policy");
    // The rate went in as an item of the same port, accepted too.
    let items: Vec<PortPolicyRepr> = entries(&mut tool, 1)
        .iter()
        .filter_map(|e| PortPolicyRepr::parse(e)?.ok().filter(|_| e.status == 0))
        .collect();
    assert_eq!(
        items,
        [
            PortPolicyRepr {
                lan: 0,
                member: 3,
                item: PolicyItem::Rate {
                    kbit_per_sec: 100_000,
                    burst_bytes: 125_000,
                    frames_per_sec: 0
                }
            },
            PortPolicyRepr {
                lan: 0,
                member: 3,
                item: PolicyItem::Ipv4 {
                    addr: [192, 168, 5, 7],
                    prefix: 32
                }
            }
        ]
    );
    let view = Admin {
        tool: &mut tool,
        host: &mut h,
    }
    .list(&rec)
    .unwrap();
    let shown = view[0].to_string();
    assert!(
        shown.contains(
            "bind-addresses, private, rate 100Mbit/s, burst 125000 B, guest-a 192.168.5.7/32"
        ),
        "{shown}"
    );
    // An --ip for a domain that is not a member changes nothing.
    let stranger = CreateOpts {
        bind_addresses: true,
        addresses: vec![("guest-z".into(), "10.0.0.1/32".into())],
        ..CreateOpts::default()
    };
    let before = entries(&mut tool, 1).len();
    let err = Admin {
        tool: &mut tool,
        host: &mut h,
    }
    .create_net(&mut rec, &stranger, &args(&["guest-a"]), &mut log)
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("guest-z is not one of the LAN's members"),
        "{err}"
    );
    assert_eq!(entries(&mut tool, 1).len(), before);
    // Destroying the LAN takes the items with the ports.
    Admin {
        tool: &mut tool,
        host: &mut h,
    }
    .destroy(&mut rec, &net0, &mut log)
    .unwrap();
    assert_eq!(entries(&mut tool, 1), []);
}

#[test]
fn lans_by_name_with_members_by_name_or_id() {
    let sim = SimHost::new("vdevice-admin-net");
    let _nb = sim.netback(1);
    let _a = sim.member(3, "guest-a", &[]);
    let _b = sim.member(4, "guest-b", &[]);
    let _c = sim.member(5, "guest-c", &[]);
    let _mute = silent(&sim.path, 9, &sim.published);
    sim.host.add(9, "mute");
    let mut tool = sim.tool();
    let mut h = sim.host.clone();
    let mut rec = Record::default();
    let mut lines = Vec::new();
    let mut log = |s: &str| lines.push(s.to_string());
    let opts = CreateOpts::default();

    let mut admin = Admin {
        tool: &mut tool,
        host: &mut h,
    };
    let net0 = admin
        .create_net(&mut rec, &opts, &args(&["guest-a", "4"]), &mut log)
        .unwrap();
    assert_eq!(net0, "net0");
    let net1 = admin
        .create_net(&mut rec, &opts, &args(&["3"]), &mut log)
        .unwrap();
    assert_eq!(net1, "net1");
    let d = rec.device("net0").unwrap();
    assert_eq!(
        d.what,
        What::Net {
            lan: 0,
            bind_addresses: false,
            private: false,
            rate: None,
            addresses: vec![],
            uplink: None,
            macs: vec![],
        }
    );
    assert_eq!(
        (d.backend.name.as_str(), d.backend.domid),
        ("netback-uk", Some(1))
    );
    let names: Vec<(&str, Option<u16>)> = d
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.domid))
        .collect();
    assert_eq!(names, [("guest-a", Some(3)), ("guest-b", Some(4))]);
    // guest-a is a port of both LANs; each of its entries names its LAN.
    let mut lans: Vec<u16> = entries(admin.tool, 3)
        .iter()
        .map(|e| {
            assert_eq!((e.kind, e.role, e.peer), (Kind::Network, Role::Member, 1));
            lan_of(e.param)
        })
        .collect();
    lans.sort();
    assert_eq!(lans, [0, 1]);
    assert_eq!(owners_for(admin.tool, 1, 3), 2);

    // --list: every connection as both domains acknowledged it, with the
    // switch's counters for each port.
    let views = admin.list(&rec).unwrap();
    assert_eq!(views.len(), 2);
    for m in &views[0].members {
        assert_eq!(m.state, "connected", "{:?}", views[0]);
        let c = m.counters.as_ref().expect("netback publishes counters");
        assert!(c.get("from_member_frames").is_some() && c.get("link").is_some());
        assert_eq!(c.0[0].0, "from_member_frames", "in the order published");
    }
    let text = views[0].to_string();
    assert!(text.contains("net0: LAN 0"), "{text}");
    assert!(
        text.contains("member guest-b (domain 4): connected"),
        "{text}"
    );
    let json = serde_json::to_value(&views).unwrap();
    assert_eq!(json[0]["members"][1]["name"], "guest-b");
    assert_eq!(json[0]["backend"]["state"], "running");

    // --add and its refusals, each naming the device or the domain.
    admin.add(&mut rec, "net0", "guest-c", &mut log).unwrap();
    assert_eq!(rec.device("net0").unwrap().members.len(), 3);
    assert_eq!(entries(admin.tool, 5).len(), 1);
    let e = admin.add(&mut rec, "net0", "5", &mut log).unwrap_err();
    assert!(matches!(e, AdminError::Duplicate { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("5 (guest-c) is already a member of net0"),
        "{e}"
    );
    let e = admin.add(&mut rec, "net0", "nobody", &mut log).unwrap_err();
    assert!(e.to_string().contains("\"nobody\""), "{e}");
    let e = admin
        .add(&mut rec, "net7", "guest-c", &mut log)
        .unwrap_err();
    assert!(e.to_string().contains("no device named \"net7\""), "{e}");
    let e = admin
        .add(&mut rec, "net0", "netback-uk", &mut log)
        .unwrap_err();
    assert!(matches!(e, AdminError::SelfServe(_)), "{e:?}");

    // Bad input to --create changes nothing: a domain twice, an unknown
    // one, a backend that is not running.
    let before = rec.clone();
    let nb_entries = entries(admin.tool, 1).len();
    let e = admin
        .create_net(&mut rec, &opts, &args(&["guest-b", "4"]), &mut log)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("4 (guest-b) is already a member of net2"),
        "{e}"
    );
    let e = admin
        .create_net(&mut rec, &opts, &args(&["guest-b", "12"]), &mut log)
        .unwrap_err();
    assert!(
        matches!(&e, AdminError::UnknownDomain(d) if d == "12"),
        "{e:?}"
    );
    let other = CreateOpts {
        backend: Some("netback-2".into()),
        ..CreateOpts::default()
    };
    let e = admin
        .create_net(&mut rec, &other, &args(&["guest-b"]), &mut log)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("backend domain \"netback-2\" is not running"),
        "{e}"
    );
    assert_eq!(rec, before);
    assert_eq!(entries(admin.tool, 1).len(), nb_entries);

    // A member that never acknowledges: the command fails in its time,
    // names the domain, and guest-b's port made before it is undone.
    admin.tool.timeout_ns = 300_000_000;
    let t0 = Instant::now();
    let e = admin
        .create_net(&mut rec, &opts, &args(&["guest-b", "mute"]), &mut log)
        .unwrap_err();
    assert!(t0.elapsed().as_secs() < 5);
    match &e {
        AdminError::Step {
            device,
            err: ToolError::NoAck { domid: 9, .. },
            who,
        } => assert_eq!((device.as_str(), who.as_deref()), ("net2", Some("mute"))),
        e => panic!("{e:?}"),
    }
    assert!(
        e.to_string().contains("domain 9 did not acknowledge"),
        "{e}"
    );
    assert_eq!(rec, before, "the record is unchanged");
    assert_eq!(
        entries(admin.tool, 1).len(),
        nb_entries,
        "no port left on netback"
    );
    assert_eq!(owners_for(admin.tool, 1, 9), 0);
    assert_eq!(entries(admin.tool, 4).len(), 1, "guest-b only on net0");
    assert!(admin.list(&rec).unwrap().iter().all(|v| v.name != "net2"));
    admin.tool.timeout_ns = 5_000_000_000;

    // --remove: the member leaves, the switch drops its port.
    admin.remove(&mut rec, "net0", "guest-b", &mut log).unwrap();
    assert!(entries(admin.tool, 4).is_empty());
    assert_eq!(owners_for(admin.tool, 1, 4), 0);
    let e = admin
        .remove(&mut rec, "net0", "guest-b", &mut log)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("4 (guest-b) is not a member of net0"),
        "{e}"
    );

    // --destroy: every member leaves; guest-a keeps its other LAN.
    admin.destroy(&mut rec, "net1", &mut log).unwrap();
    assert!(rec.device("net1").is_none());
    let left = entries(admin.tool, 3);
    assert_eq!(left.len(), 1);
    assert_eq!(lan_of(left[0].param), 0);
    assert_eq!(owners_for(admin.tool, 1, 3), 1);
    // The free name is used again.
    let again = admin
        .create_net(&mut rec, &opts, &args(&["guest-b"]), &mut log)
        .unwrap();
    assert_eq!(again, "net1");
    admin.destroy(&mut rec, "net0", &mut log).unwrap();
    admin.destroy(&mut rec, "net1", &mut log).unwrap();
    assert!(rec.devices.is_empty());
    for id in [3, 4, 5] {
        assert!(entries(admin.tool, id).is_empty(), "domain {id}");
    }
    assert!(entries(admin.tool, 1).is_empty());
}

fn temp_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("vdevice-admin-{tag}-{}.img", std::process::id()));
    std::fs::write(&p, vec![0u8; 4096]).unwrap();
    p
}

#[test]
fn disks_from_files_read_write_for_one_read_only_for_many() {
    let sim = SimHost::new("vdevice-admin-blk");
    let host = sim.host.clone();
    let _a = sim.member(3, "guest-a", &[]);
    // guest-b refuses disks from the server: a join that fails.
    let _b = sim.member(4, "guest-b", &[2]);
    let _c = sim.member(5, "guest-c", &[]);
    let mut tool = sim.tool();
    let mut h = sim.host.clone();
    let mut rec = Record::default();
    let mut log = |_: &str| {};
    let rw = CreateOpts::default();
    let ro = CreateOpts {
        read_only: true,
        ..CreateOpts::default()
    };
    let file = temp_file("rw");
    let shared = temp_file("ro");
    let mut admin = Admin {
        tool: &mut tool,
        host: &mut h,
    };

    // No blkback-uk running yet.
    let e = admin
        .create_block(&mut rec, &rw, &file, &args(&["guest-a"]), &mut log)
        .unwrap_err();
    assert!(
        e.to_string().contains("\"blkback-uk\" is not running"),
        "{e}"
    );
    let _server = sim.disk_server(2);

    let blk0 = admin
        .create_block(&mut rec, &rw, &file, &args(&["guest-a"]), &mut log)
        .unwrap();
    assert_eq!(blk0, "blk0");
    assert_eq!(host.disk_count(2), 1);
    let e = entries(admin.tool, 3);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].kind, e[0].role, e[0].peer, e[0].param, e[0].flags),
        (Kind::Disk, Role::Member, 2, 0, 0)
    );
    let views = admin.list(&rec).unwrap();
    assert_eq!(views[0].members[0].state, "connected");
    assert_eq!(views[0].read_only, Some(false));

    // The file is served already; a read-write disk has one member.
    let e = admin
        .create_block(&mut rec, &rw, &file, &args(&["guest-c"]), &mut log)
        .unwrap_err();
    assert!(
        matches!(&e, AdminError::AlreadyServed { device, .. } if device == "blk0"),
        "{e:?}"
    );
    let e = admin
        .add(&mut rec, "blk0", "guest-c", &mut log)
        .unwrap_err();
    assert!(e.to_string().contains("blk0 is a read-write disk"), "{e}");
    let e = admin
        .create_block(
            &mut rec,
            &rw,
            &shared,
            &args(&["guest-a", "guest-c"]),
            &mut log,
        )
        .unwrap_err();
    assert!(matches!(e, AdminError::Writer { .. }), "{e:?}");
    let missing = std::env::temp_dir().join("vdevice-no-such-file.img");
    let e = admin
        .create_block(&mut rec, &rw, &missing, &args(&["guest-c"]), &mut log)
        .unwrap_err();
    assert!(e.to_string().contains("vdevice-no-such-file.img"), "{e}");
    assert_eq!(host.disk_count(2), 1, "nothing given to the server");

    // A member that refuses: the members joined before it leave, nothing
    // is recorded. (The file stays given to the server, unserved: taking
    // it away would renumber the server's disks.)
    let before = rec.clone();
    let e = admin
        .create_block(
            &mut rec,
            &ro,
            &shared,
            &args(&["guest-c", "guest-b"]),
            &mut log,
        )
        .unwrap_err();
    assert!(e.to_string().contains("domain 4 refused"), "{e}");
    assert_eq!(rec, before);
    assert_eq!(host.disk_count(2), 2);
    assert!(entries(admin.tool, 5).is_empty());
    assert_eq!(entries(admin.tool, 2).len(), 1);

    // Read-only, shared by two.
    let blk1 = admin
        .create_block(
            &mut rec,
            &ro,
            &shared,
            &args(&["guest-c", "guest-a"]),
            &mut log,
        )
        .unwrap();
    assert_eq!(blk1, "blk1");
    for id in [3, 5] {
        let d = entries(admin.tool, id)
            .into_iter()
            .find(|e| e.param == 2)
            .unwrap();
        assert_eq!((d.kind, d.flags, d.peer), (Kind::Disk, flags::READ_ONLY, 2));
    }
    match &rec.device("blk1").unwrap().what {
        What::Block {
            read_only,
            disk,
            vdev,
            ..
        } => assert_eq!((*read_only, *disk, vdev.as_str()), (true, 2, "xvdd")),
        w => panic!("{w:?}"),
    }

    // --destroy takes every member out; the server serves nothing more.
    admin.destroy(&mut rec, "blk1", &mut log).unwrap();
    assert!(entries(admin.tool, 5).is_empty());
    assert_eq!(entries(admin.tool, 3).len(), 1);
    admin.destroy(&mut rec, "blk0", &mut log).unwrap();
    assert!(entries(admin.tool, 2).is_empty());
    assert!(entries(admin.tool, 3).is_empty());
    assert!(rec.devices.is_empty());
    // The same file can be served again (as the server's next disk).
    let again = admin
        .create_block(&mut rec, &rw, &file, &args(&["guest-c"]), &mut log)
        .unwrap();
    assert_eq!(again, "blk0");
    assert_eq!(entries(admin.tool, 5)[0].param, 3);
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(shared);
}
