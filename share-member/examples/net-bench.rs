//! The network benchmark across processes, each figure next to its
//! same-run baseline (`cargo xtask bench net` builds everything in release
//! mode and runs it; it needs root for the namespaces):
//!
//! - **switched frames/s** of 64 B and 1500 B frames, one flow and four,
//!   between synthetic members (`netback_uk::testing::TestMember`) in two
//!   processes (all senders in one, all receivers in the other) through
//!   `netback-sim` on the simulation, next to the switch core alone (the
//!   `switch-bench` figures given with `--core-json`);
//! - **TCP** (iperf3, one and four streams) between two network
//!   namespaces through `share-member` and `netback-sim`, next to the same
//!   iperf3 between two namespaces on a Linux bridge with veth pairs; and
//!   from a member to the far side of the LAN's uplink (netback-sim runs
//!   in a namespace of its own with `--uplink 0=xnbup0`, the TAP's
//!   namespace is the far side; issue 21).
//!
//! Member processes are this binary re-executed with `XNB_ROLE` set.
//! By hand: `net-bench --netback PATH --member PATH [--secs S]
//! [--iperf-secs T] [--core-json PATH] [--json PATH]`.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::*;
use netback_uk::testing::{eth, TestMember};
use share_hal::frames::FrameMeta;
use share_hal::platform::{DomId, EventChannels};
use share_hal::share::ShareRef;
use share_hal::wire::net::features;
use share_hal::GrantRef;
use share_sim::{temp_socket_path, Broker, SimPlatform};

const LAN: u16 = 9;
/// 128 slots per lane, as switch-bench and the vdevice tool's default.
const PAGES: u32 = 258;
const SIZES: [usize; 2] = [64, 1500];
const FLOWS: [usize; 2] = [1, 4];
/// First domain of the synthetic members.
const SYNTH: DomId = 10;
/// TCP: the members' ports offer what a TAP device can use at MTU 1500,
/// as the bridge's veth devices have.
const TCP_POLICY: u32 = features::CSUM_BLANK | features::DATA_VALIDATED | features::GSO;
const IPERF_PORT: u16 = 5301;

struct Opts {
    netback: PathBuf,
    member: PathBuf,
    secs: f64,
    iperf_secs: u32,
    core_json: Option<PathBuf>,
    json: Option<PathBuf>,
    skip_tcp: bool,
    skip_sim: bool,
    tcp_pages: u32,
}

fn opts() -> Opts {
    let mut o = Opts {
        netback: PathBuf::new(),
        member: PathBuf::new(),
        secs: 2.0,
        iperf_secs: 5,
        core_json: None,
        json: None,
        skip_tcp: false,
        skip_sim: false,
        tcp_pages: PAGES,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--netback" => o.netback = val().into(),
            "--member" => o.member = val().into(),
            "--secs" => o.secs = val().parse().unwrap_or_else(|_| usage()),
            "--iperf-secs" => o.iperf_secs = val().parse().unwrap_or_else(|_| usage()),
            "--core-json" => o.core_json = Some(val().into()),
            "--json" => o.json = Some(val().into()),
            "--skip-tcp" => o.skip_tcp = true,
            "--skip-sim" => o.skip_sim = true,
            "--tcp-pages" => o.tcp_pages = val().parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if !o.netback.is_file() || (!o.skip_tcp && !o.member.is_file()) {
        usage()
    }
    o
}

fn usage() -> ! {
    eprintln!(
        "usage: net-bench --netback PATH --member PATH [--secs S] [--iperf-secs T] \
         [--core-json PATH] [--json PATH] [--skip-tcp] [--skip-sim]"
    );
    std::process::exit(2)
}

fn mac_of(domid: DomId) -> [u8; 6] {
    [0x02, 0x42, 0x00, 0x00, (domid >> 8) as u8, domid as u8]
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> [u8; 6] {
    let b: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("MAC"))
        .collect();
    b.try_into().expect("MAC of 6 bytes")
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---- synthetic members (child processes) ----------------------------------------

/// `domid:descriptor` pairs from `XNB_PORTS`, joined as test members.
fn join_all(sock: &Path) -> Vec<TestMember<SimPlatform>> {
    let ports = std::env::var("XNB_PORTS").expect("XNB_PORTS");
    let members: Vec<_> = ports
        .split(',')
        .map(|p| {
            let (d, r) = p.split_once(':').expect("domid:descriptor");
            let domid: DomId = d.parse().unwrap();
            let r = ShareRef {
                owner: NETBACK,
                descriptor: GrantRef(r.parse().unwrap()),
            };
            TestMember::join(SimPlatform::connect(sock, domid).unwrap(), r, 0)
        })
        .collect();
    let t = Instant::now();
    while !members.iter().all(|m| m.link_up()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "links did not come up"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    members
}

/// Fills each sender's lane with frames to its receiver, round robin,
/// from "GO" on stdin for `XNB_SECS`; prints the frames sent.
fn senders(sock: &Path) {
    let size: usize = std::env::var("XNB_SIZE").unwrap().parse().unwrap();
    let secs: f64 = std::env::var("XNB_SECS").unwrap().parse().unwrap();
    let dsts: Vec<[u8; 6]> = std::env::var("XNB_DSTS")
        .unwrap()
        .split(',')
        .map(parse_mac)
        .collect();
    let mut members = join_all(sock);
    let frames: Vec<Vec<u8>> = members
        .iter()
        .zip(&dsts)
        .enumerate()
        .map(|(k, (m, d))| eth(*d, m.mac, size, k as u8))
        .collect();
    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut sent = 0u64;
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        let mut any = 0;
        for (m, f) in members.iter_mut().zip(&frames) {
            any += m.send_with(usize::MAX, |_| (&f[..], FrameMeta::default()));
        }
        sent += any as u64;
        if any == 0 {
            // A test member cannot arm its tx trigger: give the switch the
            // CPU instead of spinning on a full lane.
            std::thread::yield_now();
        }
    }
    println!("SENT {sent}");
}

/// Drains every receiver's lane until stdin closes; prints the frames
/// received and the seconds from the first to the last.
fn receivers(sock: &Path) {
    let mut members = join_all(sock);
    // One broadcast from each, so the switch knows where they are.
    for m in members.iter_mut() {
        let f = eth([0xff; 6], m.mac, 60, 0);
        m.send(&[f], FrameMeta::default());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop2.store(true, Ordering::Relaxed);
    });
    println!("READY");
    std::io::stdout().flush().unwrap();
    let (mut frames, mut bytes) = (0u64, 0u64);
    let (mut first, mut last) = (None, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        let mut got = 0;
        for m in members.iter_mut() {
            got += m.recv_with(|f, _| {
                bytes += f.len() as u64;
            });
        }
        if got > 0 {
            frames += got as u64;
            last = Instant::now();
            first.get_or_insert(last);
            continue;
        }
        // Every rx trigger is armed (recv_with does it): sleep on them.
        let mut fds: Vec<libc::pollfd> = members
            .iter()
            .map(|m| libc::pollfd {
                fd: m.p.event_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfd for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        for (m, fd) in members.iter_mut().zip(&fds) {
            if fd.revents != 0 {
                let mut b = [0u8; 8];
                // SAFETY: an 8-byte read of a non-blocking eventfd into a
                // local buffer.
                unsafe { libc::read(fd.fd, b.as_mut_ptr().cast(), 8) };
                let _ = m.p.wait(Some(0), &mut |_| {});
            }
        }
    }
    let secs = first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0);
    println!("RECV {frames} {bytes} {secs:.6}");
}

// ---- the parent ---------------------------------------------------------------------

struct Role {
    child: std::process::Child,
    out: std::sync::mpsc::Receiver<String>,
}

impl Role {
    fn spawn(role: &str, envs: &[(&str, String)]) -> Role {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env("XNB_ROLE", role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning a member process");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Role { child, out: rx }
    }

    fn expect(&self, tag: &str, secs: u64) -> String {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let line = self
                .out
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {tag} from a member process"));
            if line.starts_with(tag) {
                return line;
            }
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct SimCase {
    bytes: usize,
    flows: usize,
    sent: u64,
    received: u64,
    fps: f64,
    core_fps: Option<f64>,
    /// Counted by the broker from GO to the receivers' report (senders,
    /// netback-sim, receivers): triggers sent per 1000 frames that
    /// arrived, grant copy segments and batches per MiB that arrived.
    triggers_per_1000: f64,
    copy_segs_per_mib: f64,
    copy_calls_per_mib: f64,
}

/// One case: a fresh netback-sim, `flows` sender/receiver ports.
fn sim_case(o: &Opts, size: usize, flows: usize) -> SimCase {
    let sock = temp_socket_path("net-bench");
    let broker = Broker::spawn(&sock).unwrap();
    let mut nb = netback(&o.netback, &sock, 0, false);
    let mut dom0 = Dom0::join(&sock);
    let mut tx_ports = Vec::new();
    let mut rx_ports = Vec::new();
    let mut dsts = Vec::new();
    for f in 0..flows {
        for (k, list) in [(0, &mut tx_ports), (1, &mut rx_ports)] {
            let d = SYNTH + (2 * f + k) as DomId;
            let r = dom0.add_port((2 * f + k) as u32, d, LAN, PAGES, 0, mac_of(d));
            list.push(format!("{d}:{}", r.descriptor.0));
            if k == 1 {
                dsts.push(fmt_mac(mac_of(d)));
            }
        }
    }
    let sock_s = sock.to_string_lossy().to_string();
    let rx = Role::spawn(
        "receivers",
        &[
            ("XNB_SOCK", sock_s.clone()),
            ("XNB_PORTS", rx_ports.join(",")),
        ],
    );
    rx.expect("READY", 20);
    let mut tx = Role::spawn(
        "senders",
        &[
            ("XNB_SOCK", sock_s),
            ("XNB_PORTS", tx_ports.join(",")),
            ("XNB_DSTS", dsts.join(",")),
            ("XNB_SIZE", size.to_string()),
            ("XNB_SECS", o.secs.to_string()),
        ],
    );
    tx.expect("READY", 20);
    // Let the receivers' broadcasts be learned before the clock starts.
    std::thread::sleep(Duration::from_millis(100));
    let ops_before = broker.op_totals();
    writeln!(tx.child.stdin.as_mut().unwrap(), "GO").unwrap();
    let sent: u64 = tx.expect("SENT", o.secs as u64 + 20)[5..]
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut rx = rx;
    drop(rx.child.stdin.take());
    let line = rx.expect("RECV", 10);
    let v: Vec<f64> = line[5..]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let received = v[0] as u64;
    let ops = broker.op_totals().since(&ops_before);
    let mib = (received as f64 * size as f64 / (1u64 << 20) as f64).max(f64::MIN_POSITIVE);
    assert!(nb.alive(), "netback-sim died: {}", nb.log_text());
    drop(tx);
    drop(rx);
    drop(nb);
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_dir_all(share_sim::SimStore::for_broker(&sock).dir());
    SimCase {
        bytes: size,
        flows,
        sent,
        received,
        fps: if v[2] > 0.0 { v[0] / v[2] } else { 0.0 },
        core_fps: None,
        triggers_per_1000: ops.triggers as f64 * 1000.0 / received.max(1) as f64,
        copy_segs_per_mib: ops.copy_segs as f64 / mib,
        copy_calls_per_mib: ops.copy_calls as f64 / mib,
    }
}

struct TcpCase {
    streams: u32,
    members: Tcp,
    bridge: Tcp,
    /// A member to the far side of the uplink TAP.
    uplink: Tcp,
}

const UPLINK_TAP: &str = "xnbup0";

/// Two namespaces through share-member and netback-sim, two on a bridge;
/// iperf3 with 1 and 4 streams on each, alternating.
fn tcp(o: &Opts) -> Result<Vec<TcpCase>, String> {
    let sock = temp_socket_path("net-bench-tcp");
    let mut ns = Netns::create("xnb", 6)?;
    ns.clean_sim(&sock);
    let (m0, m1, b0, b1, br, far) = (
        &ns.names[0],
        &ns.names[1],
        &ns.names[2],
        &ns.names[3],
        &ns.names[4],
        &ns.names[5],
    );
    let _broker = Broker::spawn(&sock).unwrap();
    // netback-sim in `far`: its uplink TAP is there.
    let mut nb = Proc::spawn(
        "netback",
        Command::new("ip")
            .args(["netns", "exec", far])
            .arg(&o.netback)
            .arg("--sim")
            .arg(&sock)
            .args(["--domid", &NETBACK.to_string(), "--report-secs", "1"])
            .args(["--uplink", &format!("0={UPLINK_TAP}")]),
        false,
    );
    let store = share_sim::SimStore::for_broker(&sock);
    wait_for("netback-sim to publish its vdevice page", 10, || {
        store
            .read(NETBACK, share_hal::wire::vdevice::BOOTSTRAP_KEY)
            .unwrap()
    });
    let mut members = [
        member(&o.member, m0, &sock, 3, false),
        member(&o.member, m1, &sock, 4, false),
    ];
    let mut dom0 = Dom0::join(&sock);
    let [a, b, c] = lan_prefix(LAN);
    let maddr = [
        std::net::Ipv4Addr::new(a, b, c, 10),
        std::net::Ipv4Addr::new(a, b, c, 11),
    ];
    for (k, (n, d)) in [(m0, 3), (m1, 4)].into_iter().enumerate() {
        dom0.plug(k as u32, d, LAN, o.tcp_pages, TCP_POLICY);
        plugged(n, "xsn0");
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/24", maddr[k]),
            "dev",
            "xsn0",
        ])?;
    }
    // The LAN's uplink: netback-sim's device 0, the TAP in `far`.
    let up = share_hal::wire::vdevice::UplinkRepr {
        lan: LAN,
        uplink: 0,
        dhcp_server: false,
    };
    let back = dom0.change(NETBACK, 10, &up.entry());
    if back.status != 0 {
        return Err(format!("netback-sim refused the uplink: {}", back.status));
    }
    let faddr = std::net::Ipv4Addr::new(a, b, c, 20);
    ip(&[
        "-n",
        far,
        "addr",
        "add",
        &format!("{faddr}/24"),
        "dev",
        UPLINK_TAP,
    ])?;
    ip(&["-n", far, "link", "set", UPLINK_TAP, "up"])?;
    // The bridge: br0 in its own namespace, a veth pair to each end.
    ip(&["-n", br, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", br, "link", "set", "br0", "up"])?;
    let baddr = [
        std::net::Ipv4Addr::new(10, 99, 0, 1),
        std::net::Ipv4Addr::new(10, 99, 0, 2),
    ];
    for (k, n) in [b0, b1].into_iter().enumerate() {
        let port = format!("p{k}");
        ip(&[
            "-n", br, "link", "add", &port, "type", "veth", "peer", "name", "v0", "netns", n,
        ])?;
        ip(&["-n", br, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{}/24", baddr[k]),
            "dev",
            "v0",
        ])?;
        ip(&["-n", n, "link", "set", "v0", "up"])?;
    }
    // Warm both paths (ARP, the switch's table, the bridge's).
    for (n, to) in [(m0, maddr[1]), (b0, baddr[1]), (m0, faddr)] {
        if ping(n, to, 3)? == 0 {
            return Err(format!("{n} cannot reach {to}"));
        }
    }
    let mut cases = Vec::new();
    let mut port = IPERF_PORT;
    for streams in [1u32, 4] {
        let mut run = |from: &str, srv: &str, to| {
            port += 1;
            let _s = IperfServer::start(srv, to, port);
            iperf(from, to, port, o.iperf_secs, streams)
        };
        let members = run(m0, m1, maddr[1])?;
        let bridge = run(b0, b1, baddr[1])?;
        let uplink = run(m0, far, faddr)?;
        eprintln!(
            "tcp {streams} stream(s): members {:.2} Gbit/s, bridge {:.2} Gbit/s, member to the uplink's far side {:.2} Gbit/s",
            members.bps / 1e9,
            bridge.bps / 1e9,
            uplink.bps / 1e9
        );
        cases.push(TcpCase {
            streams,
            members,
            bridge,
            uplink,
        });
    }
    if !nb.alive() {
        return Err(format!("netback-sim died: {}", nb.log_text()));
    }
    // Where frames were lost, if they were: the switch's last report and
    // each member's counters as it leaves.
    std::thread::sleep(Duration::from_millis(1100));
    for k in 0..2 {
        if let Some(l) = nb.last_line(&format!("port {k} lan {LAN}")) {
            eprintln!("{l}");
        }
    }
    if let Some(l) = nb.last_line(&format!("uplink 0 lan {LAN}")) {
        eprintln!("{l}");
    }
    for m in members.iter_mut() {
        m.terminate()?;
        if let Some(l) = m.last_line("closed (") {
            eprintln!("[{}] {l}", m.tag);
        }
    }
    Ok(cases)
}

fn main() {
    match std::env::var("XNB_ROLE").as_deref() {
        Ok("senders") => return senders(Path::new(&std::env::var("XNB_SOCK").unwrap())),
        Ok("receivers") => return receivers(Path::new(&std::env::var("XNB_SOCK").unwrap())),
        _ => {}
    }
    let o = opts();
    let load_before = load();
    let core: Option<serde_json::Value> = o.core_json.as_ref().map(|p| {
        let text = std::fs::read_to_string(p).expect("reading --core-json");
        serde_json::from_str(&text).expect("--core-json is JSON")
    });
    let core_fps = |bytes: usize, flows: usize| -> Option<f64> {
        core.as_ref()?["switch_core"]
            .as_array()?
            .iter()
            .find(|c| c["bytes"] == bytes && c["flows"] == flows)
            .and_then(|c| c["mframes_per_s"].as_f64())
            .map(|m| m * 1e6)
    };

    let mut sim = Vec::new();
    for size in SIZES.into_iter().filter(|_| !o.skip_sim) {
        for flows in FLOWS {
            let mut c = sim_case(&o, size, flows);
            c.core_fps = core_fps(size, flows);
            eprintln!(
                "sim {size} B x {flows}: {:.3} M frames/s ({} of {} sent arrived)",
                c.fps / 1e6,
                c.received,
                c.sent
            );
            sim.push(c);
        }
    }
    let tcp = if o.skip_tcp {
        Vec::new()
    } else if let Some(why) = skip_reason() {
        eprintln!("net-bench: TCP skipped: {why}");
        Vec::new()
    } else {
        ensure_tools(&[("iperf3", "iperf3"), ("busybox", "busybox")]).unwrap();
        tcp(&o).unwrap_or_else(|e| {
            eprintln!("net-bench: TCP failed: {e}");
            std::process::exit(1)
        })
    };
    let load_after = load();

    println!();
    println!(
        "switched frames between synthetic members, netback-sim across processes (simulation),"
    );
    println!("next to the switch core alone (one thread, switch-bench, same run)");
    println!(
        "{:>6} {:>5} {:>16} {:>12} {:>10} {:>20} {:>8}",
        "bytes",
        "flows",
        "sim M frames/s",
        "trig/1000fr",
        "gcopy/MiB",
        "core alone M fr/s",
        "ratio"
    );
    for c in &sim {
        let core = c.core_fps.map(|f| format!("{:.2}", f / 1e6));
        println!(
            "{:>6} {:>5} {:>16.3} {:>12.2} {:>10.2} {:>20} {:>8}",
            c.bytes,
            c.flows,
            c.fps / 1e6,
            c.triggers_per_1000,
            c.copy_segs_per_mib,
            core.unwrap_or_else(|| "-".into()),
            c.core_fps
                .map(|f| format!("{:.3}", c.fps / f))
                .unwrap_or_else(|| "-".into())
        );
    }
    if !tcp.is_empty() {
        println!();
        println!(
            "TCP, iperf3 -t {} between two namespaces: share-member + netback-sim, next to a Linux bridge + veth;",
            o.iperf_secs
        );
        println!("uplink: a member to the far side of netback-sim's uplink TAP (same run)");
        println!(
            "{:>8} {:>16} {:>16} {:>8} {:>14} {:>15}",
            "streams",
            "members Gbit/s",
            "bridge Gbit/s",
            "ratio",
            "member retrans",
            "uplink Gbit/s"
        );
        for c in &tcp {
            println!(
                "{:>8} {:>16.2} {:>16.2} {:>8.2} {:>14} {:>15.2}",
                c.streams,
                c.members.bps / 1e9,
                c.bridge.bps / 1e9,
                c.members.bps / c.bridge.bps,
                c.members.retransmits,
                c.uplink.bps / 1e9
            );
        }
    }
    println!("load average before {load_before}, after {load_after}");

    if let Some(path) = &o.json {
        let v = serde_json::json!({
            "load_before": load_before,
            "load_after": load_after,
            "switch_core": core.as_ref().map(|c| c["switch_core"].clone()),
            "sim_switched": sim.iter().map(|c| serde_json::json!({
                "bytes": c.bytes, "flows": c.flows, "frames_per_s": c.fps,
                "sent": c.sent, "received": c.received,
                "core_alone_frames_per_s": c.core_fps,
                "triggers_per_1000_frames": c.triggers_per_1000,
                "grant_copy_segs_per_mib": c.copy_segs_per_mib,
                "grant_copy_calls_per_mib": c.copy_calls_per_mib,
            })).collect::<Vec<_>>(),
            "tcp": tcp.iter().map(|c| serde_json::json!({
                "streams": c.streams, "secs": o.iperf_secs,
                "members_bits_per_s": c.members.bps,
                "members_retransmits": c.members.retransmits,
                "bridge_bits_per_s": c.bridge.bps,
                "bridge_retransmits": c.bridge.retransmits,
                "uplink_bits_per_s": c.uplink.bps,
                "uplink_retransmits": c.uplink.retransmits,
            })).collect::<Vec<_>>(),
        });
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, serde_json::to_string_pretty(&v).unwrap() + "\n")
            .expect("writing the JSON");
        println!("wrote {}", path.display());
    }
}
