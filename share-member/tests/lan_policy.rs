//! Port policy on real Linux stacks (issue 22): one LAN of `netback-sim`
//! with four `share-member` namespaces whose ports dom0 made with the
//! owner entry flags `BIND_ADDRESSES` (all four) and `PRIVATE` (the
//! fourth). Each gets its address by DHCP through its bound port. Then:
//!
//! - a spoofer puts its neighbour's address on its interface and claims
//!   it (gratuitous ARP, ARP replies, pings from it): a witness that knew
//!   the neighbour keeps its MAC for that address and still reaches it,
//!   and netback-uk counts the spoofer's frames as policy drops;
//! - the private member reaches netback-uk's endpoint (its lease, pings)
//!   but no member, and no member reaches it.
//!
//! Needs root, `ip` and `/dev/net/tun` (otherwise it says why and passes
//! without running); installs busybox with apt-get when missing.

mod harness;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use harness::*;
use share_hal::platform::DomId;
use share_hal::wire::net::features;
use share_hal::wire::vdevice::{flags, PolicyItem, PortPolicyRepr};

const LAN: u16 = 9;
const VICTIM: usize = 0;
const SPOOFER: usize = 1;
const WITNESS: usize = 2;
const PRIVATE: usize = 3;
const MEMBERS: [DomId; 4] = [3, 4, 5, 6];
const PAGES: u32 = 258;

fn netback_bin() -> PathBuf {
    // target/<profile>/deps/<test>: netback-sim is in target/<profile>.
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("netback-sim")
}

fn member_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_share-member"))
}

fn mac_of(ns: &str) -> String {
    let link = ip(&["-n", ns, "link", "show", "xsn0"]).unwrap();
    link.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// The MAC `ns` holds for `addr` (None: no usable neighbour entry).
fn neighbour(ns: &str, addr: Ipv4Addr) -> Option<String> {
    let out = ip(&["-n", ns, "neigh", "show", &addr.to_string(), "dev", "xsn0"]).ok()?;
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string)
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// The policy drops netback-sim's report gives port `port`.
fn policy_drops(nb: &Proc, port: usize) -> Option<u64> {
    let line = nb.last_line(&format!("port {port} lan {LAN} "))?;
    let at = line.find(" policy ")?;
    line[at + 8..].split([' ', ',']).next()?.parse().ok()
}

#[test]
fn bound_ports_keep_their_addresses_and_private_ports_reach_only_netback() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED lan_policy: {why}");
        return;
    }
    ensure_tools(&[("busybox", "busybox")]).unwrap();
    let started = Instant::now();
    let mut lan = SimLan::start("xsp", &MEMBERS, &netback_bin(), &member_bin());
    for (k, &d) in MEMBERS.iter().enumerate() {
        let mut f = flags::BIND_ADDRESSES;
        if k == PRIVATE {
            f |= flags::PRIVATE;
        }
        lan.dom0
            .plug_with(k as u32, d, LAN, PAGES, features::ALL, f);
    }
    let addrs = lan.leases();
    let n = &lan.ns.names;
    let victim = addrs[VICTIM];
    let victim_mac = mac_of(&n[VICTIM]);

    // The bound members reach each other and netback.
    assert_eq!(ping(&n[WITNESS], victim, 3), Ok(3));
    assert_eq!(ping(&n[SPOOFER], addrs[WITNESS], 3), Ok(3));
    assert_eq!(
        neighbour(&n[WITNESS], victim).as_deref(),
        Some(&*victim_mac)
    );

    // The witness's entry for the victim is stale and past its lock time
    // (1 s): an unsolicited ARP would now replace it.
    ip(&[
        "-n",
        &n[WITNESS],
        "neigh",
        "replace",
        &victim.to_string(),
        "lladdr",
        &victim_mac,
        "nud",
        "stale",
        "dev",
        "xsn0",
    ])
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The spoofer takes the victim's address as far as its own stack goes.
    let claim = format!("{victim}/32");
    in_ns(&n[SPOOFER], &["ip", "addr", "add", &claim, "dev", "xsn0"]).unwrap();
    let v = victim.to_string();
    // Gratuitous ARP requests and replies (arping -U / -A), then traffic
    // from the address: what would move the witness's entry.
    let _ = in_ns(
        &n[SPOOFER],
        &[
            "busybox", "arping", "-U", "-c", "3", "-I", "xsn0", "-s", &v, &v,
        ],
    );
    let _ = in_ns(
        &n[SPOOFER],
        &[
            "busybox", "arping", "-A", "-c", "3", "-I", "xsn0", "-s", &v, &v,
        ],
    );
    let _ = in_ns(
        &n[SPOOFER],
        &[
            "busybox",
            "ping",
            "-c",
            "3",
            "-W",
            "1",
            "-I",
            &v,
            &addrs[WITNESS].to_string(),
        ],
    );
    assert_eq!(
        neighbour(&n[WITNESS], victim).as_deref(),
        Some(&*victim_mac),
        "the witness's entry for {victim} moved to another MAC"
    );
    assert_eq!(
        ping(&n[WITNESS], victim, 3),
        Ok(3),
        "the victim still answers"
    );
    let drops = wait_for("netback to count the spoofer's frames", 5, || {
        policy_drops(&lan.nb, SPOOFER).filter(|&d| d >= 6)
    });
    eprintln!("spoofer: {drops} frames dropped by its port's policy");
    assert_eq!(
        policy_drops(&lan.nb, VICTIM),
        Some(0),
        "the victim lost nothing"
    );

    // The private member: its lease and netback's endpoint, nobody else.
    let private = addrs[PRIVATE];
    assert_eq!(ping(&n[PRIVATE], mgmt_addr(LAN), 3), Ok(3));
    assert_eq!(ping(&n[PRIVATE], victim, 2), Ok(0));
    assert_eq!(ping(&n[WITNESS], private, 2), Ok(0));

    lan.check_alive();
    eprintln!("lan_policy: {:.1} s", started.elapsed().as_secs_f64());
}

/// The rate test's LAN and domains: 0 -> 1 limited (0 sends), 2 -> 3
/// unlimited.
const RATE_LAN: u16 = 10;
const DOMS: [DomId; 4] = [13, 14, 15, 16];

/// The rate of the limited member, as `vdevice --rate 200M` gives it.
const LIMIT_MBIT: f64 = 200.0;

#[test]
fn a_rate_limited_member_sends_at_its_rate_and_an_unlimited_pair_keeps_going() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED lan_policy rate: {why}");
        return;
    }
    ensure_tools(&[("busybox", "busybox"), ("iperf3", "iperf3")]).unwrap();
    let mut lan = SimLan::start("xsr", &DOMS, &netback_bin(), &member_bin());
    // The rate item first (entry 10), as vdevice writes it: 200 Mbit/s,
    // a 50 ms burst.
    let rate = PortPolicyRepr {
        lan: RATE_LAN,
        member: DOMS[0],
        item: PolicyItem::Rate {
            kbit_per_sec: (LIMIT_MBIT * 1000.0) as u32,
            burst_bytes: (LIMIT_MBIT * 1e6 / 8.0 * 0.05) as u32,
            frames_per_sec: 0,
        },
    };
    let back = lan.dom0.change(NETBACK, 10, &rate.entry());
    assert_eq!(back.status, 0, "netback refused the rate item");
    for (k, &d) in DOMS.iter().enumerate() {
        lan.dom0.plug(k as u32, d, RATE_LAN, PAGES, features::ALL);
    }
    let addrs = lan.leases();
    let n = &lan.ns.names;
    let run = |from: usize, to: usize, port: u16| {
        let _server = IperfServer::start(&n[to], addrs[to], port);
        iperf(&n[from], addrs[to], port, 4, 1).unwrap()
    };
    // Each pair alone, then both at once.
    let limited_alone = run(0, 1, 5301).bps / 1e6;
    let free_alone = run(2, 3, 5302).bps / 1e6;
    let (limited, free) = std::thread::scope(|s| {
        let a = s.spawn(|| run(0, 1, 5303).bps / 1e6);
        let b = s.spawn(|| run(2, 3, 5304).bps / 1e6);
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!(
        "rate limit {LIMIT_MBIT} Mbit/s: limited member {limited_alone:.0} Mbit/s alone, \
         {limited:.0} beside the free pair; free pair {free_alone:.0} alone, {free:.0} beside"
    );
    for got in [limited_alone, limited] {
        assert!(
            (got - LIMIT_MBIT).abs() <= 0.1 * LIMIT_MBIT,
            "the limited member measured {got:.0} Mbit/s, not {LIMIT_MBIT} +- 10 %"
        );
    }
    // The limit is the limit, not the simulation's speed; the free pair
    // keeps at least half of what it does alone (it shares two cores
    // with everything else).
    assert!(
        free_alone > 1.5 * LIMIT_MBIT,
        "the free pair only does {free_alone:.0} Mbit/s"
    );
    assert!(
        free > 0.5 * free_alone,
        "the free pair fell to {free:.0} Mbit/s"
    );
    lan.check_alive();
}
