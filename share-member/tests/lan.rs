//! One LAN of netback-uk on the host simulation with three Linux network
//! stacks on it: `netback-sim` is domain 1, three `share-member` processes
//! (domains 3, 4, 5) each run in a network namespace this test creates,
//! and dom0 connects them with vdevice entries. The namespaces get their
//! addresses by DHCP from netback-uk's management endpoint, ping each
//! other, and move TCP data with iperf3; member 5 is removed while 3 and 4
//! transfer, then comes back; a hostile member (domain 6, a fourth
//! process) floods and scribbles its share during a transfer, and the
//! good pair's throughput is compared with its quiet figure.
//!
//! It lives with share-member because share-member is what it proves (the
//! userspace member serving real stacks through netback-uk) and cargo
//! builds share-member's binary for it. `netback-sim` belongs to
//! netback-uk: cargo builds it into the same target directory when the
//! workspace is tested with `netback-uk/sim` (as `cargo xtask test` does).
//!
//! Needs root, `ip` and `/dev/net/tun` (otherwise it says why and passes
//! without running); installs busybox (udhcpc, ping) and iperf3 with
//! apt-get when they are missing. The hostile member is this test binary
//! re-executed with `XSL_ROLE=hostile`.

mod harness;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use harness::*;
use netback_uk::testing::{eth, TestMember};
use share_hal::frames::FrameMeta;
use share_hal::lane::header;
use share_hal::platform::DomId;
use share_hal::share::ShareRef;
use share_hal::sim::{temp_socket_path, Broker, SimPlatform};
use share_hal::wire::net::{features, field};
use share_hal::GrantRef;

const TEST: &str =
    "three_namespaces_on_one_lan_get_leases_ping_move_tcp_and_survive_a_hostile_member";
const LAN: u16 = 7;
const MEMBERS: [DomId; 3] = [3, 4, 5];
const HOSTILE: DomId = 6;
/// 128 slots per lane (the vdevice tool's default share).
const PAGES: u32 = 258;
const POLICY: u32 = features::ALL;
const IPERF_PORT: u16 = 5201;
const IPERF_SECS: u32 = 3;
/// The good pair keeps at least this share of its quiet throughput while
/// the hostile member floods and scribbles (the switch serves ports round
/// robin, so a flood costs the pair at most a share of the switch; on a
/// 2-core host the hostile process also takes CPU time from the others).
const HOSTILE_FACTOR: f64 = 0.3;
/// How long the hostile member keeps at it.
const HOSTILE_SECS: f64 = 5.0;

fn exe_dir() -> PathBuf {
    // target/<profile>/deps/<test>: the binaries are in target/<profile>.
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf()
}

fn netback_bin() -> PathBuf {
    let bin = exe_dir().join("netback-sim");
    assert!(
        bin.is_file(),
        "{} is not built: test the workspace with --features netback-uk/sim \
         (cargo xtask test does), or `cargo build -p netback-uk --features sim` first",
        bin.display()
    );
    bin
}

// ---- the hostile member (a fourth process) -----------------------------------

/// xorshift64: garbage that differs every run of the loop.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Joins the share it is given, then for [`HOSTILE_SECS`]: floods its tx
/// lane with valid frames (broadcast, unicast to the victims, the victims'
/// source MACs spoofed), then publishes slots of random bytes, then
/// writes a producer index far past the lane and random control fields,
/// triggering the switch as fast as it can. Prints what it did.
fn hostile() {
    let sock: PathBuf = std::env::var("XSL_SOCK").unwrap().into();
    let descriptor: u32 = std::env::var("XSL_REF").unwrap().parse().unwrap();
    let victims: Vec<[u8; 6]> = std::env::var("XSL_VICTIMS")
        .unwrap()
        .split(',')
        .map(|m| {
            let b: Vec<u8> = m
                .split(':')
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect();
            b.try_into().unwrap()
        })
        .collect();
    let p = SimPlatform::connect(&sock, HOSTILE).unwrap();
    let r = ShareRef {
        owner: NETBACK,
        descriptor: GrantRef(descriptor),
    };
    let mut m = TestMember::join(p, r, features::ALL);
    let t = Instant::now();
    while !m.link_up() {
        assert!(t.elapsed() < Duration::from_secs(10), "no link");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("HOSTILE JOINED");
    let mut frames: Vec<Vec<u8>> = vec![eth([0xff; 6], m.mac, 60, 0xee)];
    for v in &victims {
        frames.push(eth(*v, m.mac, 1514, 0xaa));
        frames.push(eth(*v, m.mac, 60, 0xab));
        // Someone else's source address: the switch must not learn it.
        frames.push(eth([0xff; 6], *v, 60, 0xac));
        frames.push(eth(victims[0], *v, 1514, 0xad));
    }
    frames.push(eth([0x01, 0x00, 0x5e, 0, 0, 1], m.mac, 1514, 0xae));
    let (mut flooded, mut garbage, mut scribbles) = (0u64, 0u64, 0u64);
    let mut x = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let tx = m.layout.tx;
    let start = Instant::now();
    let mut k = 0usize;
    loop {
        let at = start.elapsed().as_secs_f64() / HOSTILE_SECS;
        if at >= 1.0 {
            break;
        }
        if at < 0.5 {
            let n = m.send_with(usize::MAX, |_| {
                k += 1;
                (&frames[k % frames.len()][..], FrameMeta::default())
            });
            flooded += n as u64;
            if n == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
            continue;
        }
        let mem = m.att.mem();
        if at < 0.8 {
            // Random bytes in every free slot, published as frames.
            let prod = mem
                .load_u32(tx.header + header::PROD, Ordering::Relaxed)
                .unwrap();
            let cons = mem
                .load_u32(tx.header + header::CONS, Ordering::Acquire)
                .unwrap();
            let free = tx
                .slot_count
                .wrapping_sub(prod.wrapping_sub(cons))
                .min(tx.slot_count);
            let mut slot = vec![0u8; tx.slot_size];
            for i in 0..free {
                for c in slot.chunks_mut(8) {
                    c.copy_from_slice(&next(&mut x).to_le_bytes()[..c.len()]);
                }
                // Mostly small lengths, so the switch reads the frames.
                slot[0] = (next(&mut x) % 2100) as u8;
                let s = (prod.wrapping_add(i) % tx.slot_count) as usize;
                mem.write_from(tx.slots + s * tx.slot_size, &slot).unwrap();
            }
            mem.store_u32(
                tx.header + header::PROD,
                prod.wrapping_add(free),
                Ordering::Release,
            )
            .unwrap();
            garbage += u64::from(free);
            if free == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        } else {
            // An index far past the lane, control fields flapping.
            let prod = next(&mut x) as u32;
            mem.store_u32(tx.header + header::PROD, prod, Ordering::Release)
                .unwrap();
            mem.store_u32(tx.header + header::CONS_EVENT, prod, Ordering::Release)
                .unwrap();
            mem.store_u32(
                field::MEMBER_STATE.start,
                next(&mut x) as u32 & 1,
                Ordering::Release,
            )
            .unwrap();
            mem.store_u32(
                field::FEATURES_ACCEPTED.start,
                next(&mut x) as u32,
                Ordering::Release,
            )
            .unwrap();
            scribbles += 1;
            std::thread::sleep(Duration::from_micros(20));
        }
        let _ = m.att.trigger(&mut m.p);
    }
    println!("HOSTILE DONE flooded {flooded} garbage {garbage} scribbles {scribbles}");
}

/// The hostile member as a child process, once it has joined.
fn spawn_hostile(sock: &std::path::Path, r: ShareRef, victims: &[String]) -> std::process::Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env("XSL_ROLE", "hostile")
        .env("XSL_SOCK", sock)
        .env("XSL_REF", r.descriptor.0.to_string())
        .env("XSL_VICTIMS", victims.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = line.find("HOSTILE ") {
                eprintln!("[hostile] {}", &line[i..]);
                let _ = tx.send(line[i..].to_string());
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the hostile member joined");
    assert_eq!(first, "HOSTILE JOINED");
    child
}

// ---- the test ---------------------------------------------------------------

fn mac_in(link: &str) -> String {
    link.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn mbit(t: &Tcp) -> f64 {
    t.bps / 1e6
}

/// iperf3 from `a` to `b` (server bound to `to` in `b`).
fn transfer(a: &str, b: &str, to: Ipv4Addr, port: u16) -> Result<Tcp, String> {
    let _server = IperfServer::start(b, to, port);
    iperf(a, to, port, IPERF_SECS, 1)
}

#[test]
fn three_namespaces_on_one_lan_get_leases_ping_move_tcp_and_survive_a_hostile_member() {
    if std::env::var("XSL_ROLE").as_deref() == Ok("hostile") {
        hostile();
        return;
    }
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED {TEST}: {why}");
        return;
    }
    ensure_tools(&[("busybox", "busybox"), ("iperf3", "iperf3")]).unwrap();
    let started = Instant::now();
    let netback_bin = netback_bin();
    let member_bin = PathBuf::from(env!("CARGO_BIN_EXE_share-member"));

    let sock = temp_socket_path("lan");
    let mut ns = Netns::create("xsl", MEMBERS.len()).unwrap();
    ns.clean_sim(&sock);
    let ns = ns;
    let _broker = Broker::spawn(&sock).unwrap();
    let tmp = sock.with_extension("d");
    std::fs::create_dir_all(&tmp).unwrap();
    let script = udhcpc_script(&tmp);
    let mut nb = netback(&netback_bin, &sock, 1, false);
    let mut members: Vec<Proc> = MEMBERS
        .iter()
        .zip(&ns.names)
        .map(|(&d, n)| member(&member_bin, n, &sock, d, false))
        .collect();
    let mut dom0 = Dom0::join(&sock);

    // dom0 puts the three on LAN 7: ports 0..3 of netback, entry 0 of each.
    for (k, &d) in MEMBERS.iter().enumerate() {
        dom0.plug(k as u32, d, LAN, PAGES, POLICY);
    }
    let mut macs = Vec::new();
    for n in &ns.names {
        let link = plugged(n, "xsn0");
        assert!(link.contains("mtu 9000"), "jumbo MTU on the TAP: {link}");
        macs.push(mac_in(&link));
    }

    // Leases from netback-uk: three distinct addresses in the pool.
    let mut addrs = Vec::new();
    for n in &ns.names {
        let (a, out) = dhcp(n, "xsn0", &script).unwrap();
        let o = a.octets();
        assert_eq!(
            o[..3],
            lan_prefix(LAN),
            "{a} outside LAN {LAN}'s subnet: {out}"
        );
        assert!((100..=199).contains(&o[3]), "{a} outside the pool");
        assert!(out.contains(&format!("from {}", mgmt_addr(LAN))), "{out}");
        eprintln!("{n}: lease {a}");
        addrs.push(a);
    }
    let mut sorted = addrs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "leases not distinct: {addrs:?}");
    // netback-sim's own report lists the three leases.
    wait_for("netback's report to list the leases", 5, || {
        let line = nb.last_line(&format!("lan {LAN} mgmt"))?;
        addrs
            .iter()
            .zip(&macs)
            .all(|(a, m)| line.contains(&format!("{m} {a}")))
            .then_some(())
    });

    // Every pair, and the management endpoint, answer pings.
    for (i, from) in ns.names.iter().enumerate() {
        for (j, to) in addrs.iter().enumerate() {
            if i != j {
                assert_eq!(ping(from, *to, 3), Ok(3), "{from} -> {to}");
            }
        }
        assert_eq!(ping(from, mgmt_addr(LAN), 3), Ok(3), "{from} -> netback");
    }

    // TCP between 3 and 4, quiet.
    let (a, b) = (&ns.names[0], &ns.names[1]);
    let quiet = transfer(a, b, addrs[1], IPERF_PORT).unwrap();
    eprintln!("iperf3 dom3 -> dom4, quiet: {:.0} Mbit/s", mbit(&quiet));
    assert!(quiet.bytes > 0);

    // Member 5 is removed while 3 and 4 transfer; their transfer completes.
    let during = {
        let (a, b) = (a.clone(), b.clone());
        let to = addrs[1];
        let t = std::thread::spawn(move || {
            let _server = IperfServer::start(&b, to, IPERF_PORT + 1);
            iperf(&a, to, IPERF_PORT + 1, 4, 1)
        });
        std::thread::sleep(Duration::from_millis(1500));
        dom0.unplug(2, 5);
        wait_for("member 5's device to go", 5, || {
            ip(&["-n", &ns.names[2], "link", "show", "xsn0"])
                .is_err()
                .then_some(())
        });
        t.join().unwrap().unwrap()
    };
    eprintln!(
        "iperf3 dom3 -> dom4 while dom5 was removed: {:.0} Mbit/s",
        mbit(&during)
    );
    assert!(
        during.bps > 0.1 * quiet.bps,
        "the pair stalled while member 5 left"
    );
    assert!(members[2].alive(), "member 5's program died");

    // Member 5 comes back, gets its lease again, and pings both.
    dom0.plug(2, 5, LAN, PAGES, POLICY);
    plugged(&ns.names[2], "xsn0");
    let (again, out) = dhcp(&ns.names[2], "xsn0", &script).unwrap();
    assert_eq!(again, addrs[2], "member 5 got another address: {out}");
    for to in &addrs[..2] {
        assert_eq!(ping(&ns.names[2], *to, 3), Ok(3), "dom5 -> {to}");
    }
    assert_eq!(ping(a, addrs[2], 3), Ok(3), "dom3 -> dom5");

    // A hostile member joins (port 3) and attacks during a transfer.
    let r = dom0.add_port(3, HOSTILE, LAN, PAGES, POLICY, [0; 6]);
    let mut bad = spawn_hostile(&sock, r, &macs);
    let attacked = transfer(a, b, addrs[1], IPERF_PORT + 2);
    let hostile_ok = bad.wait().unwrap();
    let attacked = attacked.unwrap();
    assert!(hostile_ok.success(), "the hostile member itself failed");
    let quiet2 = transfer(a, b, addrs[1], IPERF_PORT + 3).unwrap();
    let baseline = (quiet.bps + quiet2.bps) / 2.0;
    let factor = attacked.bps / baseline;
    eprintln!(
        "iperf3 dom3 -> dom4: quiet {:.0} and {:.0} Mbit/s, with the hostile member {:.0} Mbit/s: {factor:.2} x (must be >= {HOSTILE_FACTOR})",
        mbit(&quiet),
        mbit(&quiet2),
        mbit(&attacked)
    );
    assert!(nb.alive(), "netback-sim died: {}", nb.log_text());
    assert!(
        factor >= HOSTILE_FACTOR,
        "the hostile member cut the pair to {factor:.2} of its quiet throughput"
    );
    // What the switch saw of it: frames in, spoofs dropped, garbage refused.
    let port = wait_for("netback's report on the hostile port", 5, || {
        nb.last_line(&format!("port 3 lan {LAN} dom {HOSTILE}"))
            .filter(|l| !l.contains("from-member 0 frames"))
    });
    eprintln!("netback on the hostile port: {port}");
    assert!(
        !port.contains("spoof 0 "),
        "no spoofed frame dropped: {port}"
    );
    assert!(
        port.contains(" broken") || !port.contains("lane errors 0"),
        "the scribbled lane went unnoticed: {port}"
    );
    // The good members still reach each other and netback.
    for to in [addrs[1], addrs[2], mgmt_addr(LAN)] {
        assert_eq!(ping(a, to, 3), Ok(3), "dom3 -> {to} after the attack");
    }
    dom0.change(NETBACK, 3, &share_hal::wire::vdevice::EntryRepr::EMPTY);

    // Clean exits.
    for m in members.iter_mut() {
        m.terminate().unwrap();
        let log = m.log_text();
        assert!(log.contains("joined the LAN of domain 1"), "{log}");
    }
    assert!(nb.alive(), "netback-sim died: {}", nb.log_text());
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!(
        "{TEST}: leases {addrs:?}; quiet {:.0}/{:.0} Mbit/s, during removal {:.0}, hostile {:.0} ({factor:.2} x); {:.1} s",
        mbit(&quiet),
        mbit(&quiet2),
        mbit(&during),
        mbit(&attacked),
        started.elapsed().as_secs_f64()
    );
}
