//! Two `share-member` processes on the host simulation, each in a network
//! namespace this test creates (and removes), joined into one LAN by a
//! stand-in switch; the real Linux network stack pings and moves TCP data
//! across it, then dom0 removes one member.
//!
//! The **stand-in switch** ([`TestHub`]) is test scaffolding: a 2-port hub
//! that creates one network share per member, writes the control fields,
//! marks the link up once the member is ready, and copies slots verbatim
//! from each member's tx lane to the other's rx lane. netback-uk's switch
//! replaces it later.
//!
//! Helpers that must run inside a namespace (ICMP echo, the TCP pair) are
//! this test binary re-executed with `ip netns exec` and `XSM_ROLE` set.
//!
//! Needs root, `ip` and `/dev/net/tun`; otherwise it says why and passes
//! without running.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use share_hal::lane::{self, Consumer, ConsumerState, Producer, ProducerState};
use share_hal::platform::{Clock, DomId, EventChannels};
use share_hal::share::{Share, ShareRef};
use share_hal::vdevice::VdeviceClient;
use share_hal::wire::net::{
    features, field, Control, ControlRepr, NetLayout, CONTROL_LEN, LINK_DOWN, LINK_UP,
    MEMBER_READY, SLOT_SIZE,
};
use share_hal::wire::vdevice::{status, Bootstrap, EntryRepr, Kind, Role, BOOTSTRAP_KEY};
use share_sim::{temp_socket_path, Broker, SimPlatform, SimStore};

const TEST: &str = "two_members_ping_and_move_tcp_data_through_a_stand_in_hub";
const HUB: DomId = 1;
const MEMBERS: [DomId; 2] = [3, 4];
const NUMPAGES: usize = 66;
const TCP_BYTES: usize = 4 << 20;
const TCP_PORT: u16 = 5001;

fn ip_of(domid: DomId) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, domid as u8)
}

fn mac_of(domid: DomId) -> [u8; 6] {
    [0x02, 0x58, 0x53, 0x00, 0x00, domid as u8]
}

// ---- helpers run inside a namespace ---------------------------------------

/// FNV-1a over the stream, to compare both ends.
fn fnv(h: &mut u64, data: &[u8]) {
    for &b in data {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

fn icmp_checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `count` ICMP echo requests to `to`, each answered within 2 s, over a
/// raw socket (root); returns the replies seen.
fn ping(to: Ipv4Addr, count: u16) -> u16 {
    // SAFETY: plain socket calls with checked results and local buffers.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(s >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        libc::setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let mut dst: libc::sockaddr_in = std::mem::zeroed();
        dst.sin_family = libc::AF_INET as u16;
        dst.sin_addr.s_addr = u32::from_ne_bytes(to.octets());
        let id = (std::process::id() & 0xffff) as u16;
        let mut replies = 0;
        for seq in 1..=count {
            let mut req = [0u8; 64];
            req[0] = 8;
            req[4..6].copy_from_slice(&id.to_be_bytes());
            req[6..8].copy_from_slice(&seq.to_be_bytes());
            for (i, b) in req[8..].iter_mut().enumerate() {
                *b = i as u8;
            }
            let c = icmp_checksum(&req);
            req[2..4].copy_from_slice(&c.to_be_bytes());
            libc::sendto(
                s,
                req.as_ptr().cast(),
                req.len(),
                0,
                (&dst as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                let mut buf = [0u8; 256];
                let n = libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n < 28 {
                    continue;
                }
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let icmp = &buf[ihl..n as usize];
                if icmp.len() >= 8
                    && icmp[0] == 0
                    && icmp[4..6] == id.to_be_bytes()
                    && icmp[6..8] == seq.to_be_bytes()
                    && buf[12..16] == to.octets()
                {
                    replies += 1;
                    break;
                }
            }
        }
        libc::close(s);
        replies
    }
}

fn tcp_server(at: Ipv4Addr) {
    let l = TcpListener::bind((at, TCP_PORT)).expect("bind");
    println!("LISTENING");
    std::io::stdout().flush().unwrap();
    let (mut s, _) = l.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut n, mut h) = (0usize, 0xcbf2_9ce4_8422_2325u64);
    let mut buf = vec![0u8; 65536];
    loop {
        let k = s.read(&mut buf).expect("read");
        if k == 0 {
            break;
        }
        fnv(&mut h, &buf[..k]);
        n += k;
    }
    println!("TCP {n} {h:016x}");
}

fn tcp_client(to: Ipv4Addr) {
    let addr = SocketAddr::from((to, TCP_PORT));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let (mut n, mut h) = (0usize, 0xcbf2_9ce4_8422_2325u64);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 65536];
    let started = Instant::now();
    while n < TCP_BYTES {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let k = buf.len().min(TCP_BYTES - n);
        s.write_all(&buf[..k]).expect("write");
        fnv(&mut h, &buf[..k]);
        n += k;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    // Wait for the server to close, so the transfer is complete.
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = s.read(&mut [0u8; 1]);
    let secs = started.elapsed().as_secs_f64();
    println!("TCP {n} {h:016x}");
    println!("RATE {:.1} Mbit/s", n as f64 * 8.0 / secs / 1e6);
}

/// Runs the helper `XSM_ROLE` names and exits; `false` in the parent.
fn helper_role() -> bool {
    let Ok(role) = std::env::var("XSM_ROLE") else {
        return false;
    };
    let arg: Ipv4Addr = std::env::var("XSM_ADDR").unwrap().parse().unwrap();
    match role.as_str() {
        "ping" => println!("PING {}", ping(arg, 3)),
        "tcp-server" => tcp_server(arg),
        "tcp-client" => tcp_client(arg),
        r => panic!("unknown role {r}"),
    }
    true
}

// ---- the stand-in switch ----------------------------------------------------

/// What the test asks of the hub, by port index.
enum HubCmd {
    /// Set the port's link_state.
    Link(usize, bool),
    /// Act as a broken switch on that port: claim a thousand frames more
    /// in its rx lane than the lane holds.
    BreakRx(usize),
}

/// One port of the hub: the share it owns for a member.
struct HubPort {
    member: DomId,
    share: Share<SimPlatform>,
    layout: NetLayout,
    tx: ConsumerState,
    rx: ProducerState,
    ready: bool,
    /// Set by [`HubCmd::BreakRx`]: the hub no longer produces into it.
    broken: bool,
}

/// Test scaffolding, not the switch: a 2-port hub, see the file comment.
struct TestHub {
    stop: Arc<AtomicBool>,
    cmds: mpsc::Sender<HubCmd>,
    thread: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl TestHub {
    /// Starts the hub as domain 1; returns it and each member's share_ref.
    fn start(sock: &Path) -> (TestHub, Vec<ShareRef>) {
        let (refs_tx, refs_rx) = mpsc::channel();
        let (cmds, cmds_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let sock = sock.to_path_buf();
        let thread = std::thread::spawn(move || hub_main(&sock, refs_tx, cmds_rx, &stop2));
        let refs = refs_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("hub created its shares");
        (
            TestHub {
                stop,
                cmds,
                thread: Some(thread),
            },
            refs,
        )
    }

    fn send(&self, cmd: HubCmd) {
        self.cmds.send(cmd).expect("hub running");
    }

    fn stop(&mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "hub panicked".to_string())?,
            None => Ok(0),
        }
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn hub_port(p: &mut SimPlatform, member: DomId) -> Result<(HubPort, ShareRef), String> {
    let e = |e: share_hal::Error| e.to_string();
    let mut share = Share::create(p, NUMPAGES).map_err(e)?;
    let layout = NetLayout::new(NUMPAGES as u32).map_err(|x| x.to_string())?;
    let mut raw = [0u8; CONTROL_LEN];
    ControlRepr {
        features_offered: features::CSUM_BLANK | features::DATA_VALIDATED,
        mac: mac_of(member),
        mtu: 1500,
    }
    .emit(&mut Control::new_unchecked(&mut raw[..]))
    .map_err(|x| x.to_string())?;
    let (tx, rx) = {
        let mem = share.mem();
        mem.write_from(0, &raw).map_err(e)?;
        let txw = layout.tx.window(mem).map_err(e)?;
        let rxw = layout.rx.window(mem).map_err(e)?;
        let l = layout.tx.lane().map_err(e)?;
        lane::init(txw, l, 0).map_err(e)?;
        lane::init(rxw, l, 0).map_err(e)?;
        (
            Consumer::attach(txw, l).map_err(e)?.park(),
            Producer::attach(rxw, l).map_err(e)?.park(),
        )
    };
    let r = share.add_member(p, member).map_err(e)?;
    Ok((
        HubPort {
            member,
            share,
            layout,
            tx,
            rx,
            ready: false,
            broken: false,
        },
        r,
    ))
}

fn hub_main(
    sock: &Path,
    refs: mpsc::Sender<Vec<ShareRef>>,
    cmds: mpsc::Receiver<HubCmd>,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let e = |e: share_hal::Error| e.to_string();
    let mut p = SimPlatform::connect(sock, HUB).map_err(e)?;
    let mut ports = Vec::new();
    let mut share_refs = Vec::new();
    for m in MEMBERS {
        let (port, r) = hub_port(&mut p, m)?;
        ports.push(port);
        share_refs.push(r);
    }
    refs.send(share_refs).map_err(|x| x.to_string())?;
    let mut copied = 0u64;
    let mut slot = vec![0u8; SLOT_SIZE];
    // Whether the last pass left work: then the hub does not sleep.
    let mut again = false;
    while !stop.load(Ordering::Relaxed) {
        if !again {
            let deadline = p.now_ns() + 20_000_000;
            match p.wait(Some(deadline), &mut |_| {}) {
                Ok(()) | Err(share_hal::Error::TimedOut) => {}
                Err(x) => return Err(x.to_string()),
            }
        }
        again = false;
        while let Ok(cmd) = cmds.try_recv() {
            let (i, link) = match cmd {
                HubCmd::Link(i, up) => (i, Some(up)),
                HubCmd::BreakRx(i) => (i, None),
            };
            let port = ports.get_mut(i).ok_or("no such hub port")?;
            let mem = port.share.mem();
            match link {
                Some(up) => {
                    let v = if up { LINK_UP } else { LINK_DOWN };
                    mem.store_u32(field::LINK_STATE.start, v, Ordering::Release)
                        .map_err(e)?;
                }
                None => {
                    port.broken = true;
                    let at = port.layout.rx.header + share_hal::lane::header::PROD;
                    let prod = mem.load_u32(at, Ordering::Relaxed).map_err(e)?;
                    mem.store_u32(at, prod.wrapping_add(1000), Ordering::Release)
                        .map_err(e)?;
                }
            }
            let _ = port.share.trigger(&mut p, port.member);
        }
        // Readiness: the link goes up once the member says it is ready.
        for port in ports.iter_mut() {
            let ctl = port.share.mem();
            let ready = ctl
                .load_u32(field::MEMBER_STATE.start, Ordering::Acquire)
                .map_err(e)?
                == MEMBER_READY;
            if ready && !port.ready {
                let accepted = ctl.read_u32(field::FEATURES_ACCEPTED.start).map_err(e)?;
                share_hal::wire::net::negotiate(
                    features::CSUM_BLANK | features::DATA_VALIDATED,
                    accepted,
                )
                .map_err(|x| format!("member {} accepted {accepted:#x}: {x}", port.member))?;
                ctl.store_u32(field::LINK_STATE.start, LINK_UP, Ordering::Release)
                    .map_err(e)?;
                let _ = port.share.trigger(&mut p, port.member);
            }
            port.ready = ready;
        }
        // Each direction: the source's tx slots, verbatim, into the
        // destination's rx lane; dropped while the destination is not ready.
        for (a, b) in [(0usize, 1usize), (1, 0)] {
            let (src, dst) = if a < b {
                let (l, r) = ports.split_at_mut(b);
                (&mut l[a], &mut r[0])
            } else {
                let (l, r) = ports.split_at_mut(a);
                (&mut r[0], &mut l[b])
            };
            let l = src.layout.tx.lane().map_err(e)?;
            let src_mem = src.share.mem();
            let dst_mem = dst.share.mem();
            let mut cons = Consumer::resume(src.layout.tx.window(src_mem).map_err(e)?, l, src.tx)
                .map_err(e)?;
            let mut prod = Producer::resume(dst.layout.rx.window(dst_mem).map_err(e)?, l, dst.rx)
                .map_err(e)?;
            let n = cons.poll().map_err(e)?;
            let mut full = false;
            for _ in 0..n {
                if dst.ready && !dst.broken {
                    if !prod.reserve(1).map_err(e)? {
                        full = true;
                        break;
                    }
                    let s = cons.slot().map_err(e)?.ok_or("slot vanished")?;
                    s.read_into(0, &mut slot).map_err(e)?;
                    prod.slot(0).map_err(e)?.write_from(0, &slot).map_err(e)?;
                    prod.commit(1).map_err(e)?;
                    copied += 1;
                }
                cons.advance();
            }
            if full {
                // Wait for the destination to free a slot, unless it did.
                again |= prod.prepare_wait(1).map_err(e)? > 0;
            } else {
                // Drained: arm the source's trigger, unless more came.
                again |= cons.prepare_wait().map_err(e)? > 0;
            }
            let wake_src = cons.release().map_err(e)?;
            let wake_dst = prod.publish().map_err(e)?;
            src.tx = cons.park();
            dst.rx = prod.park();
            if wake_src {
                let _ = src.share.trigger(&mut p, src.member);
            }
            if wake_dst {
                let _ = dst.share.trigger(&mut p, dst.member);
            }
        }
    }
    Ok(copied)
}

// ---- the parent -----------------------------------------------------------

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Runs `cmd` (bounded by its own timeouts); its output, or why it failed.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd:?} failed: {text}"))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// A member process and its stderr lines.
struct MemberProc {
    domid: DomId,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl MemberProc {
    fn spawn(ns: &str, sock: &Path, domid: DomId) -> MemberProc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_share-member")])
            .arg("--sim")
            .arg(sock)
            .args(["--domid", &domid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn share-member");
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[dom{domid}] {line}");
                log2.lock().unwrap().push(line);
            }
        });
        MemberProc { domid, child, log }
    }

    /// Sends SIGTERM and waits up to 10 s for a clean exit.
    fn terminate(&mut self) -> Result<(), String> {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("member {} exited with {st}", self.domid))
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("member {} did not exit on SIGTERM", self.domid))
    }
}

impl Drop for MemberProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Namespaces and the broker's files, removed however the test ends.
struct Cleanup {
    namespaces: Vec<String>,
    sock: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = std::fs::remove_file(&self.sock);
        let _ = std::fs::remove_dir_all(SimStore::for_broker(&self.sock).dir());
    }
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test binary, re-executed in namespace `ns` as helper `role`.
fn helper(ns: &str, role: &str, addr: Ipv4Addr) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env("XSM_ROLE", role)
        .env("XSM_ADDR", addr.to_string());
    c
}

/// The line of a helper's output from `tag` on (the harness prints
/// "test NAME ... " before a helper's first line).
fn tagged(out: &str, tag: &str) -> String {
    out.lines()
        .find_map(|l| l.find(tag).map(|i| l[i..].to_string()))
        .unwrap_or_default()
}

/// Waits for member `d`'s TAP device in `ns` with carrier, checks its MAC
/// and MTU, and gives it its address.
fn plugged(ns: &str, d: DomId) {
    let link = wait_for("the TAP device with carrier", 10, || {
        ip(&["-n", ns, "link", "show", "xsn0"])
            .ok()
            .filter(|s| s.contains("LOWER_UP"))
    });
    let mac = mac_of(d)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(link.contains(&mac), "MAC {mac} not set: {link}");
    assert!(link.contains("mtu 1500"), "{link}");
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{}/24", ip_of(d)),
        "dev",
        "xsn0",
    ])
    .unwrap();
}

fn ping_ok(ns: &str, to: Ipv4Addr) {
    let out = run(&mut helper(ns, "ping", to)).unwrap();
    assert_eq!(tagged(&out, "PING "), "PING 3", "{ns} pinging {to}: {out}");
}

fn skip_reason() -> Option<String> {
    // SAFETY: a plain getter.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces and TAP devices need it)".into());
    }
    if !have("ip") {
        return Some("no `ip` (iproute2) on PATH".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    None
}

fn dom0_change(
    dom0: &mut SimPlatform,
    store: &SimStore,
    domid: DomId,
    entry: &EntryRepr,
) -> EntryRepr {
    let boot = store
        .read(domid, BOOTSTRAP_KEY)
        .unwrap()
        .expect("bootstrap key published");
    let boot = Bootstrap::parse(boot.as_bytes()).unwrap();
    let mut c = VdeviceClient::attach(dom0, domid, boot).unwrap();
    let deadline = dom0.now_ns() + 10_000_000_000;
    let r = c.change(dom0, 0, entry, deadline).unwrap();
    c.detach(dom0).unwrap();
    r
}

#[test]
fn two_members_ping_and_move_tcp_data_through_a_stand_in_hub() {
    if helper_role() {
        return;
    }
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED {TEST}: {why}");
        return;
    }
    let started = Instant::now();
    let sock = temp_socket_path("member-netns");
    let ns: Vec<String> = MEMBERS
        .iter()
        .map(|d| format!("xsm{}-{d}", std::process::id()))
        .collect();
    let _cleanup = Cleanup {
        namespaces: ns.clone(),
        sock: sock.clone(),
    };
    for n in &ns {
        ip(&["netns", "add", n]).unwrap();
        ip(&["-n", n, "link", "set", "lo", "up"]).unwrap();
    }
    let _broker = Broker::spawn(&sock).unwrap();
    let store = SimStore::for_broker(&sock);
    let (mut hub, refs) = TestHub::start(&sock);

    let mut members: Vec<MemberProc> = MEMBERS
        .iter()
        .zip(&ns)
        .map(|(&d, n)| MemberProc::spawn(n, &sock, d))
        .collect();
    for &d in &MEMBERS {
        wait_for("bootstrap keys published", 10, || {
            store.read(d, BOOTSTRAP_KEY).unwrap()
        });
    }

    // One owner per domain: a second member for domain 3 is refused.
    let second = Command::new(env!("CARGO_BIN_EXE_share-member"))
        .arg("--sim")
        .arg(&sock)
        .args(["--domid", "3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second owner started: {msg}");
    assert!(msg.contains("another share-member"), "{msg}");

    // dom0 connects each member to the hub (the hub's owner entries are
    // what netback-uk acknowledges; here the hub made the shares itself).
    let mut dom0 = SimPlatform::connect(&sock, 0).unwrap();
    let entries: Vec<EntryRepr> = MEMBERS
        .iter()
        .zip(&refs)
        .map(|(&d, r)| EntryRepr {
            kind: Kind::Network,
            role: Role::Member,
            peer: HUB,
            share_ref: r.descriptor,
            param: u64::from_le_bytes({
                let mut b = [0u8; 8];
                b[..6].copy_from_slice(&mac_of(d));
                b
            }),
            ..EntryRepr::EMPTY
        })
        .collect();
    for (k, &d) in MEMBERS.iter().enumerate() {
        let back = dom0_change(&mut dom0, &store, d, &entries[k]);
        assert_eq!(back.status, status::OK, "member {d} refused its entry");
        plugged(&ns[k], d);
    }

    // Ping both ways.
    ping_ok(&ns[0], ip_of(4));
    ping_ok(&ns[1], ip_of(3));

    // TCP: 4 MiB from member 3 to member 4, checksums compared.
    let mut server = helper(&ns[1], "tcp-server", ip_of(4))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut server_out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("LISTENING") {
        line.clear();
        assert!(
            server_out.read_line(&mut line).unwrap() > 0,
            "tcp server ended early"
        );
    }
    let client = run(&mut helper(&ns[0], "tcp-client", ip_of(4))).unwrap();
    let mut rest = String::new();
    server_out.read_to_string(&mut rest).unwrap();
    let _ = server.wait();
    let sent = tagged(&client, "TCP ");
    let got = tagged(&rest, "TCP ");
    assert_eq!(
        sent,
        format!("TCP {TCP_BYTES} {}", &sent[sent.len().saturating_sub(16)..])
    );
    assert_eq!(got, sent, "client: {client}\nserver: {rest}");
    eprintln!("member 3 -> member 4: {}", tagged(&client, "RATE "));

    // dom0 removes member 4's device: its TAP disappears.
    let back = dom0_change(&mut dom0, &store, 4, &EntryRepr::EMPTY);
    assert_eq!(back.status, status::OK);
    assert!(
        ip(&["-n", &ns[1], "link", "show", "xsn0"]).is_err(),
        "xsn0 still exists in {} after its entry was emptied",
        ns[1]
    );
    assert!(
        ip(&["-n", &ns[0], "link", "show", "xsn0"]).is_ok(),
        "member 3 lost its device"
    );

    // The carrier follows the switch's link state.
    hub.send(HubCmd::Link(0, false));
    wait_for("NO-CARRIER after link down", 10, || {
        ip(&["-n", &ns[0], "link", "show", "xsn0"])
            .ok()
            .filter(|s| s.contains("NO-CARRIER"))
    });
    hub.send(HubCmd::Link(0, true));
    wait_for("carrier after link up", 10, || {
        ip(&["-n", &ns[0], "link", "show", "xsn0"])
            .ok()
            .filter(|s| s.contains("LOWER_UP"))
    });

    // Member 4 comes back with the same share and pings again.
    let back = dom0_change(&mut dom0, &store, 4, &entries[1]);
    assert_eq!(back.status, status::OK, "member 4 refused to rejoin");
    plugged(&ns[1], 4);
    ping_ok(&ns[0], ip_of(4));

    // A broken switch (an rx index a thousand frames ahead) closes member
    // 4's device with a log line; the program and member 3 go on.
    hub.send(HubCmd::BreakRx(1));
    wait_for("member 4's device closed by the broken lane", 10, || {
        ip(&["-n", &ns[1], "link", "show", "xsn0"])
            .is_err()
            .then_some(())
    });
    assert!(
        members[1].child.try_wait().unwrap().is_none(),
        "member 4 died"
    );
    let log4 = members[1].log.lock().unwrap().join("\n");
    assert!(
        log4.contains("broke") && log4.contains("device closed"),
        "{log4}"
    );
    assert!(ip(&["-n", &ns[0], "link", "show", "xsn0"]).is_ok());

    // Clean exit: SIGTERM, each key removed.
    for m in members.iter_mut() {
        m.terminate().unwrap();
        assert_eq!(store.read(m.domid, BOOTSTRAP_KEY).unwrap(), None);
        let log = m.log.lock().unwrap().join("\n");
        assert!(log.contains("joined the LAN of domain 1"), "{log}");
    }
    let copied = hub.stop().unwrap();
    assert!(
        copied > (TCP_BYTES / 2048) as u64,
        "hub copied {copied} slots"
    );
    eprintln!(
        "{TEST}: done in {:.1} s, hub copied {copied} slots",
        started.elapsed().as_secs_f64()
    );
}
