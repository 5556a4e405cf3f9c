//! A LAN's uplink through the named-device commands (issue 21):
//! `--create net --uplink N`, `--attach-uplink` / `--detach-uplink`,
//! `--list` with the uplink's counters, `--destroy`, and the daemon making
//! the uplink again on a restarted netback-uk, on the host simulation
//! (netback-uk's switch with network devices that carry no traffic).

use share_hal::wire::vdevice::{EntryRepr, UplinkRepr};
use vdevice::admin::{Admin, AdminError, CreateOpts};
use vdevice::daemon::reconcile;
use vdevice::record::{host_mac, mac_text, parse_mac, Record, Uplink, What};
use vdevice::ToolError;

mod common;
use common::{args, entries, DomTool, SimHost};

fn uplinks(tool: &mut DomTool, backend: u16) -> Vec<UplinkRepr> {
    entries(tool, backend)
        .iter()
        .filter_map(|e| UplinkRepr::parse(e)?.ok())
        .collect()
}

#[test]
fn a_lan_made_with_an_uplink_keeps_it_and_gives_it_back() {
    let sim = SimHost::new("vdevice-uplink");
    let host = sim.host.clone();
    // netback-uk with network devices 0 and 1.
    let nb = sim.netback_with_uplinks(1, 2);
    let _a = sim.member(3, "guest-a", &[]);
    let _b = sim.member(4, "guest-b", &[]);
    let mut tool = sim.tool();
    let mut rec = Record::default();
    let mut log = |_: &str| {};
    let mut h = host.clone();
    let mut admin = Admin {
        tool: &mut tool,
        host: &mut h,
    };
    let with = |device, dhcp_server| CreateOpts {
        uplink: Some(Uplink {
            device,
            dhcp_server,
        }),
        ..CreateOpts::default()
    };
    let net0 = admin
        .create_net(&mut rec, &with(0, false), &args(&["guest-a"]), &mut log)
        .unwrap();
    assert_eq!(net0, "net0");
    assert!(matches!(
        rec.device("net0").unwrap().what,
        What::Net {
            uplink: Some(Uplink {
                device: 0,
                dhcp_server: false
            }),
            ..
        }
    ));
    // --list: the uplink attached, with its counters.
    let views = admin.list(&rec).unwrap();
    let up = views[0].uplink.as_ref().unwrap();
    assert_eq!((up.device, up.state.as_str()), (0, "attached"));
    let shown = views[0].to_string();
    assert!(
        shown.contains("uplink: the backend's network device 0: attached"),
        "{shown}"
    );
    // Counters are published once a second.
    let t = std::time::Instant::now();
    loop {
        let views = admin.list(&rec).unwrap();
        let c = views[0].uplink.as_ref().unwrap().counters.as_ref();
        if c.and_then(|c| c.get("link")) == Some(1) {
            assert_eq!(c.unwrap().get("device"), Some(0));
            assert!(c.unwrap().get("from_network_frames").is_some());
            break;
        }
        assert!(t.elapsed().as_secs() < 10, "no uplink counters");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // One LAN per uplink: another LAN may not have device 0; a device the
    // backend lacks is refused by it, and nothing is left behind.
    let err = admin
        .create_net(&mut rec, &with(0, false), &args(&["guest-b"]), &mut log)
        .unwrap_err();
    assert!(matches!(err, AdminError::Usage(_)), "{err}");
    let err = admin
        .create_net(&mut rec, &with(5, false), &args(&["guest-b"]), &mut log)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            AdminError::Step {
                err: ToolError::Refused { status: -19, .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(rec.devices.len(), 1);
    assert_eq!(entries(admin.tool, 4).len(), 0);
    // An island LAN gets device 1 later, loses it again.
    let net1 = admin
        .create_net(
            &mut rec,
            &CreateOpts::default(),
            &args(&["guest-b"]),
            &mut log,
        )
        .unwrap();
    assert!(admin
        .attach_uplink(
            &mut rec,
            &net1,
            Uplink {
                device: 0,
                dhcp_server: false
            },
            &mut log
        )
        .is_err());
    admin
        .attach_uplink(
            &mut rec,
            &net1,
            Uplink {
                device: 1,
                dhcp_server: true,
            },
            &mut log,
        )
        .unwrap();
    assert!(admin
        .attach_uplink(
            &mut rec,
            &net1,
            Uplink {
                device: 1,
                dhcp_server: true
            },
            &mut log
        )
        .is_err());
    let mut ups = uplinks(admin.tool, 1);
    ups.sort_by_key(|u| u.lan);
    assert_eq!(
        ups,
        [
            UplinkRepr {
                lan: 0,
                uplink: 0,
                dhcp_server: false
            },
            UplinkRepr {
                lan: 1,
                uplink: 1,
                dhcp_server: true
            }
        ]
    );
    admin.detach_uplink(&mut rec, &net1, &mut log).unwrap();
    assert!(admin.detach_uplink(&mut rec, &net1, &mut log).is_err());
    assert_eq!(uplinks(admin.tool, 1).len(), 1);
    assert!(matches!(
        rec.device(&net1).unwrap().what,
        What::Net { uplink: None, .. }
    ));
    // An uplink entry (peer 0) is never taken for dom0's port.
    let up = UplinkRepr {
        lan: 1,
        uplink: 1,
        dhcp_server: false,
    }
    .entry();
    assert!(!vdevice::is_port_entry(&up));
    assert!(vdevice::is_port_entry(&EntryRepr { flags: 0, ..up }));
    admin.destroy(&mut rec, &net1, &mut log).unwrap();
    // netback-uk destroyed and made again: the daemon gives the LAN its
    // uplink back before its port.
    nb.stop();
    host.gone(1);
    let mut lines = Vec::new();
    let mut h = host.clone();
    reconcile(&mut tool, &mut h, &mut rec, 5, 600, &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    let _nb = sim.netback_with_uplinks(7, 2);
    let p = reconcile(&mut tool, &mut h, &mut rec, 6, 600, &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert!(p.changed && !p.pending, "{p:?} {lines:?}");
    assert_eq!(
        uplinks(&mut tool, 7),
        [UplinkRepr {
            lan: 0,
            uplink: 0,
            dhcp_server: false
        }]
    );
    assert!(entries(&mut tool, 7).iter().all(|e| e.status == 0));
    // A second pass changes nothing; --destroy takes the uplink away.
    let p = reconcile(&mut tool, &mut h, &mut rec, 7, 600, &mut |_| {}).unwrap();
    assert!(!p.changed && !p.pending);
    let mut admin = Admin {
        tool: &mut tool,
        host: &mut h,
    };
    admin.destroy(&mut rec, &net0, &mut log).unwrap();
    assert!(uplinks(&mut tool, 7).is_empty());
    assert!(entries(&mut tool, 7).is_empty());
}

/// The port MACs of `backend`'s owner entries, by member domain.
fn port_macs(tool: &mut DomTool, backend: u16) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = entries(tool, backend)
        .iter()
        .filter(|e| vdevice::is_port_entry(e))
        .map(|e| {
            let b = e.param.to_le_bytes();
            (
                e.peer,
                vdevice::record::mac_text([b[0], b[1], b[2], b[3], b[4], b[5]]),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn members_of_an_uplinked_lan_get_macs_of_this_host_or_their_own() {
    let sim = SimHost::new("vdevice-uplink-macs");
    let host = sim.host.clone();
    let _nb = sim.netback_with_uplinks(1, 2);
    let _a = sim.member(3, "guest-a", &[]);
    let _b = sim.member(4, "guest-b", &[]);
    let _c = sim.member(5, "guest-c", &[]);
    let mut tool = sim.tool();
    let mut rec = Record::default();
    let mut log = |_: &str| {};
    let mut h = host.clone();
    let machine = vdevice::host::Host::machine_id(&h);
    let mut admin = Admin {
        tool: &mut tool,
        host: &mut h,
    };
    let made = |member: &str| mac_text(host_mac(&machine, "net0", member));
    // An uplinked LAN: b's MAC as given, a's made from this host's id.
    let opts = CreateOpts {
        uplink: Some(Uplink {
            device: 0,
            dhcp_server: false,
        }),
        macs: vec![("guest-b".into(), "02:16:3E:00:00:0B".into())],
        ..CreateOpts::default()
    };
    let net0 = admin
        .create_net(&mut rec, &opts, &args(&["guest-a", "guest-b"]), &mut log)
        .unwrap();
    assert_eq!(
        port_macs(admin.tool, 1),
        [(3, made("guest-a")), (4, "02:16:3e:00:00:0b".to_string())]
    );
    let a_mac = parse_mac(&made("guest-a")).unwrap();
    assert_eq!(a_mac[0] & 0x03, 0x02, "locally administered, unicast");
    assert_ne!(a_mac[..2], [0x02, 0x58], "not the switch's own form");
    assert_ne!(
        host_mac("another-host", "net0", "guest-a"),
        a_mac,
        "another host makes another MAC"
    );
    // --add: c's MAC made too; a MAC already on the LAN is refused, and
    // nothing changes.
    let e = admin
        .add_with_mac(
            &mut rec,
            &net0,
            "guest-c",
            Some("02:16:3e:00:00:0b"),
            &mut log,
        )
        .unwrap_err();
    assert!(e.to_string().contains("guest-b already has"), "{e}");
    admin.add(&mut rec, &net0, "guest-c", &mut log).unwrap();
    assert_eq!(port_macs(admin.tool, 1)[2], (5, made("guest-c")));
    // --list shows them; --remove forgets c's, --add with --mac gives it
    // its own.
    let views = admin.list(&rec).unwrap();
    let text = views[0].to_string();
    assert!(text.contains("mac 02:16:3e:00:00:0b"), "{text}");
    admin.remove(&mut rec, &net0, "guest-c", &mut log).unwrap();
    admin
        .add_with_mac(
            &mut rec,
            &net0,
            "guest-c",
            Some("02:00:00:00:00:0c"),
            &mut log,
        )
        .unwrap();
    assert_eq!(port_macs(admin.tool, 1)[2], (5, "02:00:00:00:00:0c".into()));
    // The record keeps them: the daemon's reconnects use them (spec_for).
    let dev = rec.device(&net0).unwrap().clone();
    let spec = vdevice::admin::spec_for(&dev, "guest-a");
    assert_eq!(spec.param, vdevice::port_param(a_mac, 0));
    assert_eq!(
        netback_uk::service::make_port_param(a_mac, 0),
        vdevice::port_param(a_mac, 0),
        "one layout of the port param"
    );
    // An isolated LAN leaves MACs to the switch unless given.
    let net1 = admin
        .create_net(
            &mut rec,
            &CreateOpts {
                macs: vec![("4".into(), "02:00:00:00:01:04".into())],
                ..CreateOpts::default()
            },
            &args(&["guest-a", "guest-b"]),
            &mut log,
        )
        .unwrap();
    let on_lan1: Vec<String> = entries(admin.tool, 1)
        .iter()
        .filter(|e| vdevice::is_port_entry(e) && vdevice::lan_of(e.param) == 1)
        .map(|e| format!("{:012x}", e.param & 0xffff_ffff_ffff))
        .collect();
    assert_eq!(on_lan1.len(), 2);
    assert!(on_lan1.contains(&"000000000000".to_string()), "{on_lan1:?}");
    let e = admin
        .create_net(
            &mut rec,
            &CreateOpts {
                macs: vec![("guest-c".into(), "02:00:00:00:00:01".into())],
                ..CreateOpts::default()
            },
            &args(&["guest-a"]),
            &mut log,
        )
        .unwrap_err();
    assert!(e.to_string().contains("not one of the members"), "{e}");
    admin.destroy(&mut rec, &net1, &mut log).unwrap();
    admin.destroy(&mut rec, &net0, &mut log).unwrap();
}
