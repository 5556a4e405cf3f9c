//! A LAN bridged to a real Linux network through its uplink (issue 21),
//! on the host simulation: `netback-sim` runs in a network namespace of
//! this test (`far`, the host's network) with `--uplink 0=xsup0`, so its
//! device 0 is a TAP there; `far` gives the TAP an address and runs a DHCP
//! server (busybox udhcpd). Two share-member domains (3 and 4), each in a
//! namespace of its own, are ports of LAN 7, which dom0 uplinks to device
//! 0; a third (5) is alone on LAN 8, an island. The test checks that:
//!
//! - both members of LAN 7 get leases from far's udhcpd (not from
//!   netback-uk), ping far's address and each other, and move 8 MiB over
//!   TCP (member to far, member to member) with equal SHA-256; member 3's
//!   port is bound to its addresses (`BIND_ADDRESSES`), which the switch
//!   learns from far's DHCPACK on the uplink (DHCP snooping);
//! - the island member gets its lease from netback-uk as before and sees
//!   none of the uplink's frames (a packet socket in its namespace sees its
//!   own endpoint's replies and nothing from far or LAN 7);
//! - a member sending from the other member's MAC gets nothing onto the
//!   uplink (a packet socket in `far` sees its marked datagrams while it
//!   uses its own MAC, none once it spoofs), and the switch counts them.
//!
//! Needs root, `ip` and `/dev/net/tun` (otherwise it says why and passes
//! without running); installs busybox (udhcpd, udhcpc, ping, nc,
//! sha256sum) with apt-get when it is missing. All traffic stays in the
//! namespaces it makes.

mod harness;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::*;
use share_hal::platform::DomId;
use share_hal::wire::net::features;
use share_hal::wire::vdevice::{flags, status, UplinkRepr};
use share_sim::{temp_socket_path, Broker};

const TEST: &str = "a_lan_with_an_uplink_reaches_the_far_network_and_nothing_else";
const LAN: u16 = 7;
const ISLAND: u16 = 8;
const MEMBERS: [DomId; 2] = [3, 4];
const LONE: DomId = 5;
const PAGES: u32 = 258;
const POLICY: u32 = features::CSUM_BLANK | features::DATA_VALIDATED | features::GSO;
/// Where the uplink entry goes in netback's page (ports are 0..3).
const UPLINK_ENTRY: u32 = 10;
const TAP: &str = "xsup0";
const FAR_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const TCP_BYTES: usize = 8 << 20;
/// The payload of the datagrams the spoofing member sends.
const MARK: &[u8] = b"xen-share-uplink-spoof-mark";
/// The VXLAN test's underlay MTU: 1500-byte frames plus VXLAN's 50 bytes.
const UNDERLAY_MTU: &str = "1550";

fn netback_bin() -> PathBuf {
    // target/<profile>/deps/<test>: the binaries are in target/<profile>.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("netback-sim");
    assert!(
        bin.is_file(),
        "{} is not built: test the workspace with --features netback-uk/sim \
         (cargo xtask test does), or `cargo build -p netback-uk --features sim` first",
        bin.display()
    );
    bin
}

fn netns(ns: &str, script: &str) -> Result<String, String> {
    run(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]))
}

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let link = ip(&["-n", ns, "link", "show", dev]).unwrap();
    let word = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link}"));
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(word.split(':')) {
        *m = u8::from_str_radix(h, 16).unwrap();
    }
    mac
}

fn mac_str(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

// ---- a packet socket in a namespace ---------------------------------------------

/// Frames received (not sent) on `dev` in namespace `ns`, from a packet
/// socket a thread opens there, until dropped.
struct Capture {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    fn start(ns: &str, dev: &str) -> Capture {
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frames.clone(), stop.clone());
        let (ns, dev) = (ns.to_string(), dev.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sock = match open_packet_socket(&ns, &dev) {
                Ok(sock) => {
                    let _ = tx.send(Ok(()));
                    sock
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd of ours.
                if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                    continue;
                }
                // SAFETY: an all-zero sockaddr_ll is a valid value.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf` and `from` are ours, of the lengths given.
                let n = unsafe {
                    libc::recvfrom(
                        sock.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                    f.lock().unwrap().push(buf[..n as usize].to_vec());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the capture thread started")
            .unwrap();
        Capture {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self, f: impl Fn(&[u8]) -> bool) -> usize {
        self.frames.lock().unwrap().iter().filter(|x| f(x)).count()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Enters `ns` (this thread only) and opens a packet socket bound to `dev`
/// there.
fn open_packet_socket(ns: &str, dev: &str) -> Result<OwnedFd, String> {
    let f = std::fs::File::open(Path::new("/run/netns").join(ns))
        .map_err(|e| format!("/run/netns/{ns}: {e}"))?;
    // SAFETY: setns on a namespace file we hold; it moves this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: a plain socket call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if raw < 0 {
        return Err(format!(
            "packet socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `raw` is a descriptor we just opened and own alone.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(format!("{dev} in {ns}: no such interface"));
    }
    // SAFETY: an all-zero sockaddr_ll is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the length given.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(format!(
            "bind to {dev}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(sock)
}

fn src_mac(f: &[u8]) -> [u8; 6] {
    f.get(6..12)
        .and_then(|m| m.try_into().ok())
        .unwrap_or([0; 6])
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---- TCP with checksums ---------------------------------------------------------

/// netback-sim in namespace `ns` on the broker at `sock`, its network
/// device 0 the TAP [`TAP`] there, once it has published its page.
fn netback_with_tap(tag: &str, ns: &str, bin: &Path, sock: &Path) -> Proc {
    let nb = Proc::spawn(
        tag,
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .arg("--sim")
            .arg(sock)
            .args(["--domid", &NETBACK.to_string()])
            .args(["--report-secs", "1"])
            .args(["--uplink", &format!("0={TAP}")]),
        false,
    );
    let store = share_sim::SimStore::for_broker(sock);
    wait_for("netback-sim to publish its vdevice page", 10, || {
        store
            .read(NETBACK, share_hal::wire::vdevice::BOOTSTRAP_KEY)
            .unwrap()
    });
    nb
}

/// busybox udhcpd in namespace `ns` serving 192.168.77.50-60 on `iface`
/// (600 s leases), its files in `tmp`.
fn udhcpd(ns: &str, iface: &str, tmp: &Path) -> Proc {
    let conf = tmp.join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 192.168.77.50\nend 192.168.77.60\ninterface {iface}\n\
             lease_file {}\npidfile {}\noption subnet 255.255.255.0\noption lease 600\n",
            tmp.join("udhcpd.leases").display(),
            tmp.join("udhcpd.pid").display()
        ),
    )
    .unwrap();
    std::fs::write(tmp.join("udhcpd.leases"), b"").unwrap();
    Proc::spawn(
        "udhcpd",
        Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "udhcpd", "-f"])
            .arg(&conf),
        false,
    )
}

/// `bytes` of random data sent over TCP from `from` to `to_addr` (a
/// listener in `to_ns`); the SHA-256 of what was sent and of what arrived.
fn tcp_sha256(
    tmp: &Path,
    from: &str,
    to_ns: &str,
    to_addr: Ipv4Addr,
    port: u16,
) -> (String, String) {
    let file = tmp.join(format!("tcp-{from}-{port}.bin"));
    let mut data = vec![0u8; TCP_BYTES];
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(port);
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&file, &data).unwrap();
    let sent = run(Command::new("busybox").arg("sha256sum").arg(&file)).unwrap();
    let sent = sent.split_whitespace().next().unwrap().to_string();
    // busybox's small nc ends a connection at EOF on its own stdin, so
    // the listener hands the connection to a script (-e) instead.
    let out_file = tmp.join(format!("tcp-{port}.sha256"));
    let script = tmp.join(format!("tcp-{port}.sh"));
    std::fs::write(
        &script,
        format!("#!/bin/sh\nbusybox sha256sum > {}\n", out_file.display()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut listener = Command::new("ip")
        .args([
            "netns", "exec", to_ns, "timeout", "60", "busybox", "nc", "-l",
        ])
        .args(["-p", &port.to_string(), "-e"])
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The listener is up once the port is bound.
    wait_for(&format!("nc listening on {port} in {to_ns}"), 10, || {
        netns(to_ns, "cat /proc/net/tcp /proc/net/tcp6")
            .ok()
            .filter(|t| {
                t.lines().any(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    w.len() > 3 && w[1].ends_with(&format!(":{port:04X}")) && w[3] == "0A"
                })
            })
    });
    let send = run(Command::new("ip")
        .args(["netns", "exec", from, "sh", "-c"])
        .arg(format!(
            "timeout 60 busybox nc {to_addr} {port} < {}",
            file.display()
        )));
    let _ = listener.wait();
    let got = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    if let Err(e) = send {
        panic!("sending {TCP_BYTES} bytes {from} -> {to_addr}: {e}");
    }
    let got = got.split_whitespace().next().unwrap_or("").to_string();
    (sent, got)
}

#[test]
fn a_lan_with_an_uplink_reaches_the_far_network_and_nothing_else() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED {TEST}: {why}");
        return;
    }
    ensure_tools(&[("busybox", "busybox"), ("bash", "bash")]).unwrap();
    let started = Instant::now();
    let netback_bin = netback_bin();
    let member_bin = PathBuf::from(env!("CARGO_BIN_EXE_share-member"));

    let sock = temp_socket_path("uplink");
    // Namespaces: far, the two members of LAN 7, the island member.
    let mut ns = Netns::create("xsu", 4).unwrap();
    ns.clean_sim(&sock);
    let ns = ns;
    let (far, m1, m2, lone) = (&ns.names[0], &ns.names[1], &ns.names[2], &ns.names[3]);
    let _broker = Broker::spawn(&sock).unwrap();
    let tmp = sock.with_extension("d");
    std::fs::create_dir_all(&tmp).unwrap();
    let script = udhcpc_script(&tmp);

    // netback-sim in far: its device 0 is the TAP xsup0 there.
    let nb = netback_with_tap("netback", far, &netback_bin, &sock);
    // far: the host side, with its DHCP server on the TAP.
    netns(
        far,
        &format!("ip addr add {FAR_ADDR}/24 dev {TAP} && ip link set {TAP} up"),
    )
    .unwrap();
    let udhcpd = udhcpd(far, TAP, &tmp);

    let mut members: Vec<Proc> = MEMBERS
        .iter()
        .chain([&LONE])
        .zip([m1, m2, lone])
        .map(|(&d, n)| member(&member_bin, n, &sock, d, false))
        .collect();
    let mut dom0 = Dom0::join(&sock);
    // The uplink first, then the ports.
    let up = UplinkRepr {
        lan: LAN,
        uplink: 0,
        dhcp_server: false,
    };
    let back = dom0.change(NETBACK, UPLINK_ENTRY, &up.entry());
    assert_eq!(back.status, status::OK, "netback refused the uplink");
    // A device it does not have is refused.
    let other = UplinkRepr {
        lan: 9,
        uplink: 1,
        dhcp_server: false,
    };
    let back = dom0.change(NETBACK, UPLINK_ENTRY + 1, &other.entry());
    assert_eq!(back.status, status::ENODEV);
    // m1's port is bound to its addresses: it sends only from what far's
    // server leases it, which the switch learns from the ACK on the uplink.
    dom0.plug_with(0, MEMBERS[0], LAN, PAGES, POLICY, flags::BIND_ADDRESSES);
    dom0.plug(1, MEMBERS[1], LAN, PAGES, POLICY);
    dom0.plug(2, LONE, ISLAND, PAGES, POLICY);
    // The island's packet socket, open before any of the traffic below.
    plugged(lone, "xsn0");
    let island = Capture::start(lone, "xsn0");

    let far_mac = mac_of(far, TAP);
    let mut macs = Vec::new();
    for n in [m1, m2] {
        plugged(n, "xsn0");
        macs.push(mac_of(n, "xsn0"));
    }

    // Leases from far's udhcpd, not from netback-uk.
    let mut addrs = Vec::new();
    for n in [m1, m2] {
        let (a, out) = dhcp(n, "xsn0", &script).unwrap();
        assert!(
            (50..=60).contains(&a.octets()[3]) && a.octets()[..3] == [192, 168, 77],
            "{n}: {a} is not from far's pool: {out}"
        );
        assert!(out.contains(&format!("from {FAR_ADDR}")), "{out}");
        eprintln!("{n}: lease {a} from far's udhcpd ({FAR_ADDR})");
        addrs.push(a);
    }
    assert_ne!(addrs[0], addrs[1]);
    let snooped = format!(
        "port 0 (domain {}): the uplink's DHCP server leased {}",
        MEMBERS[0], addrs[0]
    );
    wait_for("netback-sim to learn m1's lease from the uplink", 5, || {
        nb.last_line(&snooped).map(|_| ())
    });
    // The island keeps netback-uk's DHCP server.
    let (la, out) = dhcp(lone, "xsn0", &script).unwrap();
    assert_eq!(la.octets()[..3], lan_prefix(ISLAND), "{out}");
    assert!(
        out.contains(&format!("from {}", mgmt_addr(ISLAND))),
        "{out}"
    );

    // Pings: far, each other; far pings a member (the uplink's side asks).
    for (n, other) in [(m1, addrs[1]), (m2, addrs[0])] {
        assert_eq!(ping(n, FAR_ADDR, 3), Ok(3), "{n} -> far");
        assert_eq!(ping(n, other, 3), Ok(3), "{n} -> {other}");
    }
    assert_eq!(ping(far, addrs[0], 3), Ok(3), "far -> {}", addrs[0]);
    // The island reaches its own endpoint only.
    assert_eq!(ping(lone, mgmt_addr(ISLAND), 2), Ok(2));
    // Far's subnet on the island's link: its ARP requests go unanswered.
    ip(&["-n", lone, "route", "add", "192.168.77.0/24", "dev", "xsn0"]).unwrap();
    assert_eq!(ping(lone, FAR_ADDR, 1), Ok(0));

    // 8 MiB over TCP: member to far, member to member.
    let (sent, got) = tcp_sha256(&tmp, m1, far, FAR_ADDR, 5001);
    if sent != got {
        std::thread::sleep(Duration::from_millis(1500));
        for l in nb.log.lock().unwrap().iter().rev().take(8) {
            eprintln!("netback-sim said: {l}");
        }
    }
    assert_eq!(sent, got, "{m1} -> far: SHA-256 differs");
    eprintln!("{m1} -> far: {TCP_BYTES} bytes, sha256 {sent} = {got}");
    let (sent, got) = tcp_sha256(&tmp, m2, m1, addrs[0], 5002);
    assert_eq!(sent, got, "{m2} -> {m1}: SHA-256 differs");
    eprintln!("{m2} -> {m1}: {TCP_BYTES} bytes, sha256 {sent} = {got}");

    // A member spoofing the other's MAC: first its marked datagrams with
    // its own MAC reach far, then none with m1's MAC. (UDP through bash's
    // /dev/udp: busybox's small nc has no UDP.)
    let to_far = format!(
        "bash -c 'printf {} > /dev/udp/{FAR_ADDR}/7777'",
        std::str::from_utf8(MARK).unwrap()
    );
    let seen = Capture::start(far, TAP);
    for _ in 0..3 {
        let _ = netns(m2, &to_far);
    }
    // All three: one still on its way would count as spoofed below.
    wait_for("far to see m2's three marked datagrams", 5, || {
        (seen.count(|f| contains(f, MARK)) >= 3).then_some(())
    });
    let honest = seen.count(|f| contains(f, MARK));
    let spoof_before = nb_spoofs(&nb, 1);
    netns(
        m2,
        &format!("ip link set xsn0 address {}", mac_str(macs[0])),
    )
    .unwrap();
    // A new MAC flushes the neighbours: far's entry again, so the
    // datagrams go out without ARP.
    netns(
        m2,
        &format!(
            "ip neigh replace {FAR_ADDR} lladdr {} dev xsn0 nud permanent",
            mac_str(far_mac)
        ),
    )
    .unwrap();
    for _ in 0..5 {
        let _ = netns(m2, &to_far);
    }
    wait_for("the switch to count the spoofed frames", 5, || {
        (nb_spoofs(&nb, 1) >= spoof_before + 5).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        seen.count(|f| contains(f, MARK)),
        honest,
        "a datagram sent from m1's MAC by m2 reached far"
    );
    assert_eq!(
        seen.count(|f| src_mac(f) == macs[0] && contains(f, MARK)),
        0
    );
    drop(seen);

    // The uplink's network floods: ARP requests (broadcast) from far.
    let _ = netns(
        far,
        &format!("busybox arping -c 3 -w 3 -I {TAP} 192.168.77.99"),
    );
    std::thread::sleep(Duration::from_millis(300));
    // The island saw its endpoint and nothing of LAN 7 or far.
    let lan7: Vec<[u8; 6]> = vec![far_mac, macs[0], macs[1]];
    let from_lan7 = island.count(|f| lan7.contains(&src_mac(f)) || contains(f, &[192, 168, 77]));
    let from_endpoint = island.count(|f| src_mac(f)[..4] == [0x02, 0x78, 0x73, 0x6d]);
    assert!(
        from_endpoint >= 2,
        "the island's capture saw its endpoint's replies"
    );
    assert_eq!(
        from_lan7, 0,
        "the island saw {from_lan7} frame(s) of LAN 7 or far"
    );
    drop(island);

    // netback-sim's report: the uplink's counters and the spoofs.
    let line = nb
        .last_line(&format!("uplink 0 lan {LAN}"))
        .expect("netback-sim reports the uplink");
    eprintln!("netback-sim: {line}");
    assert!(line.contains("DHCP server off"), "{line}");
    for m in &mut members {
        assert!(m.alive(), "{} died: {}", m.tag, m.log_text());
    }
    let mut nb = nb;
    assert!(nb.alive(), "netback-sim died: {}", nb.log_text());
    drop(udhcpd);
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("{TEST}: passed in {:.1} s", started.elapsed().as_secs_f64());
}

/// drop_spoof of port `port` in netback-sim's last report.
fn nb_spoofs(nb: &Proc, port: u32) -> u64 {
    nb.last_line(&format!("port {port} lan"))
        .and_then(|l| {
            let i = l.find(" spoof ")?;
            l[i + 7..].split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// One host of [`a_lan_spans_two_hosts_over_vxlan_on_the_uplinks_bridges`]:
/// its broker, netback-sim (device 0 a TAP on the host's bridge `br0`, as
/// a vif on dom0's xenbr0) and one member on LAN 7, uplinked to device 0.
struct Host {
    ns: Netns,
    _broker: Broker,
    nb: Proc,
    member: Proc,
    tmp: PathBuf,
}

impl Host {
    /// `mac`: the member's port MAC. Each host's switch would assign
    /// `02:58:<LAN>:<domid>`, the same on both (same LAN id, same domid):
    /// on one segment the hosts' members need MACs of their own.
    fn start(tag: &str, mac: [u8; 6], netback_bin: &Path, member_bin: &Path) -> Host {
        let sock = temp_socket_path(tag);
        let mut ns = Netns::create(tag, 2).unwrap();
        ns.clean_sim(&sock);
        let broker = Broker::spawn(&sock).unwrap();
        let tmp = sock.with_extension("d");
        std::fs::create_dir_all(&tmp).unwrap();
        let (host, guest) = (ns.names[0].clone(), ns.names[1].clone());
        let nb = netback_with_tap(&format!("{tag}-netback"), &host, netback_bin, &sock);
        // dom0's bridge with netback-uk's vif on it.
        netns(
            &host,
            &format!(
                "ip link add br0 type bridge && ip link set {TAP} master br0 && \
                 ip link set {TAP} up && ip link set br0 up"
            ),
        )
        .unwrap();
        let member = member(member_bin, &guest, &sock, MEMBERS[0], false);
        let mut dom0 = Dom0::join(&sock);
        let up = UplinkRepr {
            lan: LAN,
            uplink: 0,
            dhcp_server: false,
        };
        let back = dom0.change(NETBACK, UPLINK_ENTRY, &up.entry());
        assert_eq!(back.status, status::OK, "netback refused the uplink");
        let port = dom0.add_port_with(0, MEMBERS[0], LAN, PAGES, POLICY, mac, 0);
        dom0.join_port(MEMBERS[0], PAGES, port);
        plugged(&guest, "xsn0");
        assert_eq!(
            mac_of(&guest, "xsn0"),
            mac,
            "the member took its port's MAC"
        );
        Host {
            ns,
            _broker: broker,
            nb,
            member,
            tmp,
        }
    }

    fn host(&self) -> &str {
        &self.ns.names[0]
    }

    fn guest(&self) -> &str {
        &self.ns.names[1]
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// docs/design.md's recipe for several hosts, run: two "hosts" (network
/// namespaces, each with its own simulation: broker, netback-sim, one
/// member) whose uplinks are TAPs on a bridge `br0`, joined by the
/// recipe's VXLAN device (VNI 42, multicast group 239.1.1.42) over an
/// underlay veth pair. Host A's bridge runs the LAN's DHCP server: the
/// member on host B gets its lease from it across the overlay, pings host
/// A's bridge and the member on host A, and moves 8 MiB to it over TCP
/// with equal SHA-256, the frames counted on host B's VXLAN device.
#[test]
fn a_lan_spans_two_hosts_over_vxlan_on_the_uplinks_bridges() {
    const VXTEST: &str = "a_lan_spans_two_hosts_over_vxlan_on_the_uplinks_bridges";
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED {VXTEST}: {why}");
        return;
    }
    ensure_tools(&[("busybox", "busybox")]).unwrap();
    let started = Instant::now();
    let netback_bin = netback_bin();
    let member_bin = PathBuf::from(env!("CARGO_BIN_EXE_share-member"));
    let a = Host::start("xsva", [0x02, 0xa0, 0, 0, 0, 3], &netback_bin, &member_bin);
    let b = Host::start("xsvb", [0x02, 0xb0, 0, 0, 0, 3], &netback_bin, &member_bin);
    // The underlay between the hosts, then the recipe on each.
    ip(&[
        "link",
        "add",
        "under0",
        "netns",
        a.host(),
        "mtu",
        UNDERLAY_MTU,
        "type",
        "veth",
        "peer",
        "name",
        "under0",
        "netns",
        b.host(),
        "mtu",
        UNDERLAY_MTU,
    ])
    .unwrap();
    for (h, addr) in [(&a, "10.99.0.1/24"), (&b, "10.99.0.2/24")] {
        netns(
            h.host(),
            &format!(
                "ip addr add {addr} dev under0 && ip link set under0 up && \
                 ip link add vxlan42 type vxlan id 42 dstport 4789 group 239.1.1.42 dev under0 && \
                 ip link set vxlan42 master br0 up"
            ),
        )
        .unwrap();
    }
    // Host A's network: an address on its bridge and a DHCP server.
    let tmp = &a.tmp;
    netns(a.host(), &format!("ip addr add {FAR_ADDR}/24 dev br0")).unwrap();
    let udhcpd = udhcpd(a.host(), "br0", tmp);
    let script = udhcpc_script(tmp);
    let (addr_a, _) = dhcp(a.guest(), "xsn0", &script).unwrap();
    let (addr_b, out) = dhcp(b.guest(), "xsn0", &script).unwrap();
    assert!(
        out.contains(&format!("from {FAR_ADDR}")),
        "host B's member leased from host A's server: {out}"
    );
    assert_ne!(addr_a, addr_b);
    eprintln!("host B's member: lease {addr_b} from host A ({FAR_ADDR}) over VXLAN");
    assert_eq!(ping(b.guest(), FAR_ADDR, 3), Ok(3), "B's member -> host A");
    assert_eq!(
        ping(b.guest(), addr_a, 3),
        Ok(3),
        "B's member -> A's member"
    );
    let (sent, got) = tcp_sha256(tmp, b.guest(), a.guest(), addr_a, 5011);
    assert_eq!(
        sent, got,
        "B's member -> A's member over VXLAN: SHA-256 differs"
    );
    eprintln!("B's member -> A's member: {TCP_BYTES} bytes, sha256 {sent} = {got}");
    // The overlay carried it: host B's VXLAN device sent the bytes.
    let tx = netns(b.host(), "cat /sys/class/net/vxlan42/statistics/tx_bytes").unwrap();
    let tx: u64 = tx.trim().parse().unwrap();
    eprintln!("host B's vxlan42 sent {tx} bytes");
    assert!(tx >= TCP_BYTES as u64, "vxlan42 sent {tx} bytes");
    let (mut a, mut b) = (a, b);
    for h in [&mut a, &mut b] {
        assert!(h.nb.alive(), "netback-sim died: {}", h.nb.log_text());
        assert!(h.member.alive(), "member died: {}", h.member.log_text());
    }
    drop(udhcpd);
    eprintln!(
        "{VXTEST}: passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
