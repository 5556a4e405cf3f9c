//! A LAN on the host simulation with real Linux network stacks on top:
//! netback-sim as the switch domain, share-member processes in network
//! namespaces, dom0's vdevice changes, and the stock tools (busybox
//! `udhcpc` and `ping`, `iperf3`) run inside the namespaces.
//!
//! Shared by the LAN test (`tests/lan.rs`) and the network benchmark
//! (`examples/net-bench.rs`); each uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use share_hal::platform::{Clock, DomId, DOM0};
use share_hal::share::ShareRef;
use share_hal::vdevice::VdeviceClient;
use share_hal::wire::vdevice::{status, Bootstrap, EntryRepr, Kind, Role, BOOTSTRAP_KEY};
use share_sim::{SimPlatform, SimStore};

/// netback-sim's domain.
pub const NETBACK: DomId = 1;

/// The management endpoint's subnet of LAN `lan` (docs/protocol.md,
/// "Management endpoint"): `10.(77 + lan/256).(lan % 256).0/24`.
pub fn lan_prefix(lan: u16) -> [u8; 3] {
    [10, (77 + lan / 256) as u8, (lan % 256) as u8]
}

/// The management endpoint's address on LAN `lan`.
pub fn mgmt_addr(lan: u16) -> Ipv4Addr {
    let [a, b, c] = lan_prefix(lan);
    Ipv4Addr::new(a, b, c, 1)
}

// ---- commands ---------------------------------------------------------------

pub fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Runs `cmd` (bounded by its own timeouts); its output, or why it failed.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd:?} failed ({}): {text}", out.status))
    }
}

pub fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// Installs the Debian package of each `(program, package)` whose program
/// is not on PATH, the way `cargo xtask` installs what tests need
/// (`apt-get install`, after `apt-get update` only if the first attempt
/// fails). Does nothing when every program is there.
pub fn ensure_tools(tools: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(prog, _)| !have(prog))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = || {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing))
    };
    eprintln!("installing {missing:?} (apt-get)");
    install()
        .or_else(|_| {
            run(Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["update", "-qq"]))?;
            install()
        })
        .map(|_| ())
        .map_err(|e| format!("installing {missing:?}: {e}"))
}

/// Why namespaces with TAP devices cannot be made here, if they cannot.
pub fn skip_reason() -> Option<String> {
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

pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- namespaces and processes -------------------------------------------------

/// Network namespaces this process made, removed however it ends, with
/// the broker's socket and store.
pub struct Netns {
    pub names: Vec<String>,
    sock: Option<PathBuf>,
}

impl Netns {
    /// `count` namespaces named `<tag><pid>-<k>`, each with `lo` up.
    pub fn create(tag: &str, count: usize) -> Result<Netns, String> {
        let mut ns = Netns {
            names: Vec::new(),
            sock: None,
        };
        for k in 0..count {
            let name = format!("{tag}{}-{k}", std::process::id());
            ip(&["netns", "add", &name])?;
            ns.names.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    /// Also remove the broker's socket and store at `sock` at the end.
    pub fn clean_sim(&mut self, sock: &Path) {
        self.sock = Some(sock.to_path_buf());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
        if let Some(sock) = &self.sock {
            let _ = std::fs::remove_file(sock);
            let _ = std::fs::remove_dir_all(SimStore::for_broker(sock).dir());
        }
    }
}

/// A child process whose stderr lines are kept (and echoed with a tag).
pub struct Proc {
    pub tag: String,
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(tag: &str, cmd: &mut Command, echo: bool) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {tag} ({cmd:?}): {e}"));
        let err = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let tag2 = tag.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{tag2}] {line}");
                }
                log2.lock().unwrap().push(line);
            }
        });
        Proc {
            tag: tag.to_string(),
            child,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The last line containing `pat`.
    pub fn last_line(&self, pat: &str) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|l| l.contains(pat))
            .cloned()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then up to 10 s for a clean exit.
    pub fn terminate(&mut self) -> Result<(), String> {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("{} exited with {st}", self.tag))
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("{} did not exit on SIGTERM", self.tag))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// netback-sim as domain [`NETBACK`], once it has published its page.
pub fn netback(bin: &Path, sock: &Path, report_secs: u64, echo: bool) -> Proc {
    let nb = Proc::spawn(
        "netback",
        Command::new(bin)
            .arg("--sim")
            .arg(sock)
            .args(["--domid", &NETBACK.to_string()])
            .args(["--report-secs", &report_secs.to_string()]),
        echo,
    );
    let store = SimStore::for_broker(sock);
    wait_for("netback-sim to publish its vdevice page", 10, || {
        store.read(NETBACK, BOOTSTRAP_KEY).unwrap()
    });
    nb
}

/// share-member as domain `domid` in namespace `ns`, once it has
/// published its page.
pub fn member(bin: &Path, ns: &str, sock: &Path, domid: DomId, echo: bool) -> Proc {
    let m = Proc::spawn(
        &format!("dom{domid}"),
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin)
            .arg("--sim")
            .arg(sock)
            .args(["--domid", &domid.to_string()]),
        echo,
    );
    let store = SimStore::for_broker(sock);
    wait_for("share-member to publish its vdevice page", 10, || {
        store.read(domid, BOOTSTRAP_KEY).unwrap()
    });
    m
}

// ---- dom0 -------------------------------------------------------------------

/// dom0: vdevice changes in any domain's page, as the vdevice tool makes
/// them (through `VdeviceClient`).
pub struct Dom0 {
    pub p: SimPlatform,
    store: SimStore,
}

impl Dom0 {
    pub fn join(sock: &Path) -> Dom0 {
        Dom0 {
            p: SimPlatform::connect(sock, DOM0).expect("dom0 joins the simulation"),
            store: SimStore::for_broker(sock),
        }
    }

    /// Writes entry `index` of `domid`'s page and returns the acknowledged
    /// entry.
    pub fn change(&mut self, domid: DomId, index: u32, entry: &EntryRepr) -> EntryRepr {
        let boot = self
            .store
            .read(domid, BOOTSTRAP_KEY)
            .unwrap()
            .unwrap_or_else(|| panic!("domain {domid} has no vdevice page"));
        let boot = Bootstrap::parse(boot.as_bytes()).unwrap();
        let mut c = VdeviceClient::attach(&mut self.p, domid, boot).unwrap();
        let deadline = self.p.now_ns() + 10_000_000_000;
        let r = c.change(&mut self.p, index, entry, deadline).unwrap();
        c.detach(&mut self.p).unwrap();
        r
    }

    /// A port of LAN `lan` for `member` at entry `index` of netback's page
    /// (the switch picks the MAC unless `mac` is given); its share.
    pub fn add_port(
        &mut self,
        index: u32,
        member: DomId,
        lan: u16,
        numpages: u32,
        policy: u32,
        mac: [u8; 6],
    ) -> ShareRef {
        self.add_port_with(index, member, lan, numpages, policy, mac, 0)
    }

    /// [`Dom0::add_port`] with the owner entry's `flags` (port policy).
    #[allow(clippy::too_many_arguments)]
    pub fn add_port_with(
        &mut self,
        index: u32,
        member: DomId,
        lan: u16,
        numpages: u32,
        policy: u32,
        mac: [u8; 6],
        flags: u8,
    ) -> ShareRef {
        let owner = EntryRepr {
            kind: Kind::Network,
            role: Role::Owner,
            flags,
            subtype: policy,
            numpages,
            peer: member,
            param: netback_uk::service::make_port_param(mac, lan),
            ..EntryRepr::EMPTY
        };
        let back = self.change(NETBACK, index, &owner);
        assert_eq!(
            back.status,
            status::OK,
            "netback refused a port for {member}"
        );
        ShareRef {
            owner: NETBACK,
            descriptor: back.share_ref,
        }
    }

    /// Connects share-member `member` to LAN `lan`: the owner entry in
    /// netback's page, then the member entry (entry 0) in the member's.
    pub fn plug(&mut self, index: u32, member: DomId, lan: u16, numpages: u32, policy: u32) {
        self.plug_with(index, member, lan, numpages, policy, 0);
    }

    /// [`Dom0::plug`] with the owner entry's `flags` (port policy).
    pub fn plug_with(
        &mut self,
        index: u32,
        member: DomId,
        lan: u16,
        numpages: u32,
        policy: u32,
        flags: u8,
    ) {
        let r = self.add_port_with(index, member, lan, numpages, policy, [0; 6], flags);
        self.join_port(member, numpages, r);
    }

    /// The member entry (entry 0) in `member`'s page joining `port`.
    pub fn join_port(&mut self, member: DomId, numpages: u32, port: ShareRef) {
        let join = EntryRepr {
            kind: Kind::Network,
            role: Role::Member,
            numpages,
            peer: NETBACK,
            share_ref: port.descriptor,
            ..EntryRepr::EMPTY
        };
        let back = self.change(member, 0, &join);
        assert_eq!(back.status, status::OK, "member {member} refused to join");
    }

    /// Removes `member`'s port: the owner entry first (the switch revokes
    /// it at once), then the member's own entry (its TAP device goes).
    pub fn unplug(&mut self, index: u32, member: DomId) {
        let back = self.change(NETBACK, index, &EntryRepr::EMPTY);
        assert_eq!(back.status, status::OK);
        let back = self.change(member, 0, &EntryRepr::EMPTY);
        assert_eq!(back.status, status::OK);
    }
}

// ---- inside a namespace -----------------------------------------------------

/// Waits for `dev` in `ns` with carrier; returns `ip link show`.
pub fn plugged(ns: &str, dev: &str) -> String {
    wait_for(&format!("{dev} with carrier in {ns}"), 10, || {
        ip(&["-n", ns, "link", "show", dev])
            .ok()
            .filter(|s| s.contains("LOWER_UP"))
    })
}

/// The first IPv4 address of `dev` in `ns`.
pub fn addr_of(ns: &str, dev: &str) -> Option<Ipv4Addr> {
    let out = ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", dev]).ok()?;
    let word = out.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
    word.split('/').next()?.parse().ok()
}

/// The script busybox `udhcpc` runs on a lease: sets the address with
/// iproute2 (no default script is installed with busybox alone).
pub const UDHCPC_SCRIPT: &str = "#!/bin/sh
case \"$1\" in
  deconfig) ip -4 addr flush dev \"$interface\" ;;
  bound|renew) ip -4 addr flush dev \"$interface\"
               ip addr add \"$ip/${mask:-24}\" dev \"$interface\"
               echo \"LEASE $ip/${mask:-24} from $serverid\" ;;
esac
";

/// Gets `dev`'s address in `ns` by DHCP (busybox udhcpc, at most 5
/// discovers a second apart, then it gives up); returns it and udhcpc's
/// output.
pub fn dhcp(ns: &str, dev: &str, script: &Path) -> Result<(Ipv4Addr, String), String> {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "busybox", "udhcpc"])
        .args(["-i", dev, "-f", "-q", "-n", "-t", "5", "-T", "1"])
        .arg("-s")
        .arg(script))?;
    let a = addr_of(ns, dev).ok_or_else(|| format!("no address on {dev} after udhcpc: {out}"))?;
    Ok((a, out))
}

/// Writes [`UDHCPC_SCRIPT`] to a file under `dir`.
pub fn udhcpc_script(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("udhcpc.script");
    std::fs::write(&path, UDHCPC_SCRIPT).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `count` echo requests from `ns` to `to`, each sent once the last was
/// answered (busybox ping, 2 s for the last reply, 10 s in all); the
/// replies received.
pub fn ping(ns: &str, to: Ipv4Addr, count: u32) -> Result<u32, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "busybox", "ping", "-q", "-A"])
        .args(["-c", &count.to_string(), "-W", "2", "-w", "10"])
        .arg(to.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| {
            let i = l.find(" packets received")?;
            l[..i].rsplit(' ').next()?.parse().ok()
        })
        .ok_or_else(|| {
            format!(
                "ping {to} from {ns}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// An `iperf3 -s -1` in `ns` bound to `addr`: one test, then it exits.
pub struct IperfServer {
    child: Child,
}

impl IperfServer {
    pub fn start(ns: &str, addr: Ipv4Addr, port: u16) -> IperfServer {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "iperf3", "-s", "-1", "--forceflush"])
            .args(["-B", &addr.to_string(), "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning iperf3 -s");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(());
                }
            }
        });
        // If the line never comes, the client's connect says why.
        let _ = rx.recv_timeout(Duration::from_secs(5));
        IperfServer { child }
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an iperf3 TCP run measured.
#[derive(Clone, Copy, Debug)]
pub struct Tcp {
    /// Received by the server, bits per second.
    pub bps: f64,
    pub bytes: u64,
    pub retransmits: u64,
}

/// `iperf3 -c to -t secs -P streams` from `ns` (bounded by `timeout`);
/// the receiver's figures from its JSON.
pub fn iperf(ns: &str, to: Ipv4Addr, port: u16, secs: u32, streams: u32) -> Result<Tcp, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", &(secs + 20).to_string()])
        .args(["iperf3", "-J", "--connect-timeout", "3000"])
        .args(["-c", &to.to_string(), "-p", &port.to_string()])
        .args(["-t", &secs.to_string(), "-P", &streams.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("iperf3 output is not JSON ({e}): {text}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("iperf3 to {to} from {ns}: {err}"));
    }
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("iperf3 gave no receiver rate: {text}"))?;
    Ok(Tcp {
        bps,
        bytes: end["sum_received"]["bytes"].as_u64().unwrap_or(0),
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

// ---- a whole simulated LAN ------------------------------------------------------

/// A broker, `netback-sim` (reporting every second), one `share-member`
/// per domain each in a namespace of its own, dom0, and a udhcpc script:
/// what a LAN test starts with. Dropped members first, namespaces last.
pub struct SimLan {
    pub members: Vec<Proc>,
    pub nb: Proc,
    pub dom0: Dom0,
    pub script: PathBuf,
    _broker: share_sim::Broker,
    pub ns: Netns,
}

impl SimLan {
    /// `tag` names the namespaces and the socket; `netback_bin` is
    /// `netback-sim`, `member_bin` share-member's binary.
    pub fn start(tag: &str, doms: &[DomId], netback_bin: &Path, member_bin: &Path) -> SimLan {
        assert!(
            netback_bin.is_file(),
            "{} is not built: test with --features netback-uk/sim (cargo xtask test does)",
            netback_bin.display()
        );
        let sock = share_sim::temp_socket_path(tag);
        let mut ns = Netns::create(tag, doms.len()).unwrap();
        ns.clean_sim(&sock);
        let broker = share_sim::Broker::spawn(&sock).unwrap();
        let tmp = sock.with_extension("d");
        std::fs::create_dir_all(&tmp).unwrap();
        let script = udhcpc_script(&tmp);
        let nb = netback(netback_bin, &sock, 1, false);
        let members = doms
            .iter()
            .zip(&ns.names)
            .map(|(&d, n)| member(member_bin, n, &sock, d, false))
            .collect();
        let dom0 = Dom0::join(&sock);
        SimLan {
            members,
            nb,
            dom0,
            script,
            _broker: broker,
            ns,
        }
    }

    /// Every member's xsn0 up with a lease, in order; their addresses.
    pub fn leases(&self) -> Vec<Ipv4Addr> {
        self.ns
            .names
            .iter()
            .map(|n| {
                plugged(n, "xsn0");
                dhcp(n, "xsn0", &self.script).expect("a lease").0
            })
            .collect()
    }

    /// Fails if a process of the LAN died.
    pub fn check_alive(&mut self) {
        for m in &mut self.members {
            assert!(m.alive(), "{} died: {}", m.tag, m.log_text());
        }
        assert!(self.nb.alive(), "netback-sim died: {}", self.nb.log_text());
    }
}
