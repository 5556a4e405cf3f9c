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
//! re-executed with `XSL_ROLE=hostile` (at `nice 19`); `XSL_ONLY=N` runs
//! only its attack phase N (0 flood, 1 GSO, 2 DHCP, 3 MORE chain, 4
//! garbage slots, 5 scribbled indexes), to see what each one costs.

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
use share_hal::wire::net::{self as net, features, field};
use share_hal::GrantRef;
use share_sim::{temp_socket_path, Broker, SimPlatform};

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
/// On a 2-vCPU AMD EPYC the fair outcome itself measured 0.44-0.62 (CPU
/// shared with the flooder, 2026-12-06; 0.50 failed a CI-like run at the
/// earlier bound of 0.5), so the bound sits below that: a switch that let
/// a port's flood crowd out the others' slots would leave the pair a
/// small fraction of it.
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

/// An IPv4 frame from `src` to `dst` carrying `l4` (a TCP or UDP header
/// and payload, `proto` 6 or 17), the L4 checksum field holding the
/// pseudo-header sum as for a partial checksum.
fn ipv4_frame(dst: [u8; 6], src: [u8; 6], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + l4.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + l4.len()) as u16;
    let (sa, da) = ([10u8, 99, 0, 66], [255u8, 255, 255, 255]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&sa);
    ip[16..20].copy_from_slice(&da);
    let sum = |b: &[u8], mut acc: u32| {
        for c in b.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        acc
    };
    let fold = |mut acc: u32| {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    };
    let c = !fold(sum(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let start = f.len();
    f.extend_from_slice(l4);
    let pseudo = fold(sum(&sa, sum(&da, u32::from(proto) + l4.len() as u32)));
    let at = start + if proto == 6 { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    f
}

/// A DHCP message of `len` bytes (type `kind`: 1 DISCOVER, 3 REQUEST, 4
/// DECLINE, 7 RELEASE) from client `chaddr`, naming `ip` (ciaddr for a
/// RELEASE, the requested address otherwise) and the server `server`.
fn dhcp_msg(kind: u8, chaddr: [u8; 6], ip: [u8; 4], server: [u8; 4], len: usize) -> Vec<u8> {
    let mut m = vec![0u8; len.max(300)];
    m[0] = 1;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&0x5eed_f00du32.to_be_bytes());
    if kind == 7 {
        m[12..16].copy_from_slice(&ip);
    }
    m[28..34].copy_from_slice(&chaddr);
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    let mut o = 240;
    for opt in [
        &[53u8, 1, kind][..],
        &[50, 4, ip[0], ip[1], ip[2], ip[3]],
        &[54, 4, server[0], server[1], server[2], server[3]],
    ] {
        m[o..o + opt.len()].copy_from_slice(opt);
        o += opt.len();
    }
    m[o] = 255;
    m.truncate(len.max(300));
    m
}

/// A UDP datagram 68 -> 67 holding `payload`.
fn dhcp_udp(payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&68u16.to_be_bytes());
    u[2..4].copy_from_slice(&67u16.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

/// The member's own tx lane as it writes it by hand: its producer index
/// and the slots the switch has handed back.
fn free_slots(mem: share_hal::SharedMem<'_>, tx: share_hal::wire::LaneLayout) -> (u32, u32) {
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
    (prod, free)
}

/// Joins the share it is given, then for [`HOSTILE_SECS`], triggering the
/// switch as fast as it can, in turn: floods its tx lane with valid
/// frames (broadcast, unicast to the victims, the victims' source MACs
/// spoofed); sends 64 KiB GSO frames of 1-byte TCP segments to netback's
/// endpoint and to everyone, and UDP GSO frames packed with DHCP
/// DISCOVERs (issue 17 item 2); sends DHCP RELEASEs and DECLINEs for the
/// victims' leases with their `chaddr`, and REQUESTs for every pool
/// address from made-up clients (item 3); keeps a chain of `MORE` slots
/// going, moving `prod` ahead as fast as the switch consumes (item 1);
/// publishes slots of random bytes; writes a producer index far past the
/// lane and random control fields. Prints what it did. (The attacks that
/// write the lane by hand come last: they leave the member's own sender
/// out of step with the lane.)
fn hostile() {
    let sock: PathBuf = std::env::var("XSL_SOCK").unwrap().into();
    let descriptor: u32 = std::env::var("XSL_REF").unwrap().parse().unwrap();
    let victim_ips: Vec<[u8; 4]> = std::env::var("XSL_VICTIM_IPS")
        .unwrap()
        .split(',')
        .map(|a| a.parse::<Ipv4Addr>().unwrap().octets())
        .collect();
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
    // Item 2: 64 KiB TCP of 1-byte segments, to the endpoint and to all.
    let endpoint = netback_uk::mgmt::MgmtConfig::for_lan(LAN);
    let server = endpoint.addr;
    let mut tcp = vec![0u8; 20];
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    tcp.resize(65_535 - 20, 0x5a);
    let gso_tcp = |dst| ipv4_frame(dst, m.mac, 6, &tcp);
    let tcp_meta = FrameMeta {
        flags: net::flags::CSUM_BLANK,
        csum_start: 34,
        csum_offset: 16,
        gso_type: net::gso::TCPV4,
        gso_size: 1,
        gso_flags: 0,
    };
    let mut gso_frames = vec![
        (gso_tcp(endpoint.mac), tcp_meta),
        (gso_tcp([0xff; 6]), tcp_meta),
    ];
    // A UDP GSO frame whose every 300-byte segment is a DISCOVER of
    // another made-up client.
    let mut discovers = Vec::new();
    for n in 0..net::GSO_MAX_UDP_SEGS as u16 {
        let [hi, lo] = n.to_be_bytes();
        discovers.extend(dhcp_msg(1, [0x02, 0x66, 0, 1, hi, lo], [0; 4], server, 300));
    }
    gso_frames.push((
        ipv4_frame([0xff; 6], m.mac, 17, &dhcp_udp(&discovers)),
        FrameMeta {
            csum_offset: 6,
            gso_type: net::gso::UDP_L4,
            gso_size: 300,
            ..tcp_meta
        },
    ));
    // Item 3: the victims' leases released and declined in their name, and
    // every pool address requested by made-up clients.
    let mut dhcp_frames = Vec::new();
    let dhcp_frame = |msg: Vec<u8>| {
        let mut f = ipv4_frame([0xff; 6], m.mac, 17, &dhcp_udp(&msg));
        // Sent plain: the UDP checksum is left zero (none, for IPv4).
        f[40..42].copy_from_slice(&[0, 0]);
        f
    };
    for (v, ip) in victims.iter().zip(&victim_ips) {
        dhcp_frames.push(dhcp_frame(dhcp_msg(7, *v, *ip, server, 300)));
        dhcp_frames.push(dhcp_frame(dhcp_msg(4, *v, *ip, server, 300)));
    }
    for last in endpoint.pool_first[3]..=endpoint.pool_last[3] {
        let mut ip = endpoint.pool_first;
        ip[3] = last;
        dhcp_frames.push(dhcp_frame(dhcp_msg(
            3,
            [0x02, 0x66, 0, 2, 0, last],
            ip,
            [0; 4],
            300,
        )));
    }
    let (mut flooded, mut garbage, mut scribbles) = (0u64, 0u64, 0u64);
    let (mut chained, mut gso_sent, mut dhcp_sent) = (0u64, 0u64, 0u64);
    let mut x = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let tx = m.layout.tx;
    let start = Instant::now();
    let mut k = 0usize;
    loop {
        let at = start.elapsed().as_secs_f64() / HOSTILE_SECS;
        if at >= 1.0 {
            break;
        }
        if let Ok(only) = std::env::var("XSL_ONLY") {
            let phase = [0.2, 0.35, 0.5, 0.65, 0.85, 1.0]
                .iter()
                .position(|&e| at < e)
                .unwrap_or(5);
            if phase.to_string() != only {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        if at < 0.2 {
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
        if (0.2..0.35).contains(&at) {
            let n = m.send_with(gso_frames.len(), |k| {
                (&gso_frames[k].0[..], gso_frames[k].1)
            });
            gso_sent += n as u64;
            if n == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
            let _ = m.att.trigger(&mut m.p);
            continue;
        }
        if (0.35..0.5).contains(&at) {
            let n = m.send_with(dhcp_frames.len(), |k| {
                (&dhcp_frames[k][..], FrameMeta::default())
            });
            dhcp_sent += n as u64;
            std::thread::sleep(Duration::from_millis(5));
            let _ = m.att.trigger(&mut m.p);
            continue;
        }
        let mem = m.att.mem();
        if at < 0.65 {
            // Every slot the switch hands back goes out again as one more
            // link of a chain that never ends.
            let (prod, free) = free_slots(mem, tx);
            for i in 0..free {
                let s = (prod.wrapping_add(i) % tx.slot_count) as usize;
                let at = tx.slots + s * tx.slot_size;
                mem.write_u16(at, 2032).unwrap();
                mem.write_u16(at + 2, net::flags::MORE).unwrap();
            }
            mem.store_u32(
                tx.header + header::PROD,
                prod.wrapping_add(free),
                Ordering::Release,
            )
            .unwrap();
            chained += u64::from(free);
            // As fast as the switch reads: it hands slots back per round.
            std::thread::sleep(Duration::from_micros(20));
        } else if at < 0.85 {
            // Random bytes in every free slot, published as frames.
            let (prod, free) = free_slots(mem, tx);
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
    println!(
        "HOSTILE DONE flooded {flooded} chained {chained} gso {gso_sent} dhcp {dhcp_sent} garbage {garbage} scribbles {scribbles}"
    );
}

/// The hostile member as a child process, once it has joined.
fn spawn_hostile(
    sock: &std::path::Path,
    r: ShareRef,
    victims: &[String],
    victim_ips: &[Ipv4Addr],
) -> std::process::Child {
    let ips: Vec<String> = victim_ips.iter().map(Ipv4Addr::to_string).collect();
    // At the lowest CPU priority: on a real host the hostile domain spins
    // on a vCPU of its own; here it would take its victims' CPU time,
    // which says nothing about the switch.
    let mut child = Command::new("nice")
        .args(["-n", "19"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env("XSL_ROLE", "hostile")
        .env("XSL_SOCK", sock)
        .env("XSL_REF", r.descriptor.0.to_string())
        .env("XSL_VICTIMS", victims.join(","))
        .env("XSL_VICTIM_IPS", ips.join(","))
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
    let mut bad = spawn_hostile(&sock, r, &macs, &addrs);
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
        "the hostile member cut the pair to {factor:.2} of its quiet throughput; netback: {}",
        nb.log_text()
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
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
    // Their leases survived the RELEASEs and DECLINEs in their name; the
    // made-up clients hold no more than one port's share of the pool.
    let leases = wait_for(
        "netback's report on the leases after the attack",
        15,
        || {
            // netback reports its LANs, then its ports, every 10 s: the
            // LAN's line of the report after one that shows the hostile
            // port broken (the attack over).
            let log = nb.log_text();
            let hostile = format!("port 3 lan {LAN} dom {HOSTILE}");
            let lan = format!("lan {LAN} mgmt");
            let line = log
                .lines()
                .skip_while(|l| !(l.contains(&hostile) && l.contains(" broken: ")))
                .find(|l| l.contains(&lan))?;
            Some(line.to_string())
        },
    );
    for (a, m) in addrs.iter().zip(&macs) {
        assert!(
            leases.contains(&format!("{m} {a}")),
            "{m}'s lease {a} is gone: {leases}"
        );
    }
    let made_up = leases.matches("02:66:").count();
    assert!(
        made_up <= netback_uk::mgmt::MAX_HELD_PER_PORT,
        "the hostile port holds {made_up} leases: {leases}"
    );
    let (again, out) = dhcp(&ns.names[0], "xsn0", &script).unwrap();
    assert_eq!(again, addrs[0], "dom3 renewed to another address: {out}");
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
