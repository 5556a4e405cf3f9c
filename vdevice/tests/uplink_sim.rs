//! A LAN's uplink through the named-device commands (issue 21):
//! `--create net --uplink N`, `--attach-uplink` / `--detach-uplink`,
//! `--list` with the uplink's counters, `--destroy`, and the daemon making
//! the uplink again on a restarted netback-uk, on the host simulation
//! (netback-uk's switch with network devices that carry no traffic).

use share_hal::wire::vdevice::{EntryRepr, UplinkRepr};
use vdevice::admin::{Admin, AdminError, CreateOpts};
use vdevice::daemon::reconcile;
use vdevice::record::{Record, Uplink, What};
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
