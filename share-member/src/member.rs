//! The member's event loop: the vdevice page, its entries, and a TAP
//! device per network share, all driven by one poll(2).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use share_hal::platform::Port;
use share_hal::vdevice::{Applied, VdeviceBus};
use share_hal::wire::vdevice::{status, EntryRepr, MAX_ENTRIES};
use share_hal::Error;

use crate::dispatch::{classify, Action};
use crate::host::{Found, Host, KeyStore, OwnerLock};
use crate::port::{fmt_mac, NetPort};

/// How the member runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Entries of the vdevice page.
    pub entries: u16,
    /// TAP name template (`%d`: the kernel picks the number).
    pub ifname: String,
    /// Features the member may accept (further limited by what the switch
    /// offers and what a TAP device can honour).
    pub accept: u32,
    /// Where the owner lock lives (default: [`KeyStore::default_lock_path`]).
    pub lock: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entries: 16,
            ifname: "xsn%d".into(),
            accept: crate::port::SUPPORTED,
            lock: None,
        }
    }
}

/// Blocks SIGINT and SIGTERM and returns a descriptor that reads them, so
/// the event loop ends cleanly between two steps, never inside one.
pub fn signal_fd() -> io::Result<OwnedFd> {
    // SAFETY: plain libc calls on a local, zero-initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The member of one domain.
pub struct Member<H: Host> {
    p: H,
    bus: VdeviceBus<H::BusPage>,
    ports: BTreeMap<u32, NetPort<H>>,
    keys: KeyStore,
    lock: OwnerLock,
    cfg: Config,
}

impl<H: Host> Member<H> {
    /// Claims the domain's vdevice page: takes the owner lock, refusing
    /// if the page has a live owner (see [`OwnerLock`]). Done before the
    /// platform is opened, so a second member is told why it cannot run.
    pub fn claim(keys: &mut KeyStore, cfg: &Config) -> Result<OwnerLock, String> {
        if cfg.entries == 0 || cfg.entries > MAX_ENTRIES {
            return Err(format!("--entries must be 1..={MAX_ENTRIES}"));
        }
        let lock_path = cfg.lock.clone().unwrap_or_else(|| keys.default_lock_path());
        let (lock, found) = OwnerLock::acquire(&lock_path, || keys.read())?;
        if let Found::Stale(pid) = found {
            eprintln!(
                "share-member: {} was left by a share-member that is gone{}; taking over",
                keys.describe(),
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            );
        }
        Ok(lock)
    }

    /// Becomes the owner of the domain's vdevice page under `lock` (from
    /// [`Member::claim`]): creates the page and publishes the bootstrap key.
    pub fn start(
        mut p: H,
        mut keys: KeyStore,
        mut lock: OwnerLock,
        cfg: Config,
    ) -> Result<Self, String> {
        let bus = match p.create_bus(cfg.entries) {
            Ok(b) => b,
            Err(e) => {
                lock.release();
                return Err(format!("creating the vdevice page: {e}"));
            }
        };
        let value = bus.bootstrap().to_string();
        if let Err(e) = keys.write(&value) {
            lock.release();
            return Err(format!("publishing {}: {e}", keys.describe()));
        }
        eprintln!(
            "share-member: domain {} published {} = {value:?}",
            p.domid(),
            keys.describe()
        );
        Ok(Member {
            p,
            bus,
            ports: BTreeMap::new(),
            keys,
            lock,
            cfg,
        })
    }

    pub fn platform(&mut self) -> &mut H {
        &mut self.p
    }

    /// Applies a pending vdevice change, if any.
    fn apply_changes(&mut self) -> Result<(), Error> {
        let me = self.p.domid();
        let ports = &mut self.ports;
        let cfg = &self.cfg;
        let change = self.bus.poll_with(&mut self.p, &mut |p, index, old, new| {
            apply(p, me, ports, cfg, index, old, new)
        })?;
        if let Some(c) = change {
            eprintln!(
                "share-member: change {} of entry {}: {:?} -> status {}",
                c.serial, c.index, c.new.kind, c.status
            );
        }
        Ok(())
    }

    /// Runs until SIGINT/SIGTERM on `signals`, then leaves every share and
    /// removes the bootstrap key.
    pub fn run(mut self, signals: &OwnedFd) -> Result<(), String> {
        let r = self.event_loop(signals);
        self.shutdown();
        r
    }

    fn event_loop(&mut self, signals: &OwnedFd) -> Result<(), String> {
        // A change dom0 made before we were polling is picked up at once.
        self.apply_changes()
            .map_err(|e| format!("vdevice page: {e}"))?;
        let mut busy = false;
        let mut tap_interest: BTreeMap<u32, bool> = BTreeMap::new();
        loop {
            let indexes: Vec<u32> = self.ports.keys().copied().collect();
            let mut fds = Vec::with_capacity(2 + indexes.len());
            fds.push(libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            fds.push(libc::pollfd {
                fd: self.p.event_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            for i in &indexes {
                let want = *tap_interest.get(i).unwrap_or(&true);
                fds.push(libc::pollfd {
                    fd: self.ports[i].tap().as_fd().as_raw_fd(),
                    events: if want { libc::POLLIN } else { 0 },
                    revents: 0,
                });
            }
            // Busy: more work queued; otherwise sleep, waking once a second
            // to follow the switch's link state.
            let timeout = if busy { 0 } else { 1000 };
            // SAFETY: `fds` is a valid array of pollfd for the call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            if fds[0].revents & libc::POLLIN != 0 {
                let mut info = [0u8; 128];
                // SAFETY: a read of one signalfd_siginfo into a buffer of
                // its size.
                let _ = unsafe { libc::read(signals.as_raw_fd(), info.as_mut_ptr().cast(), 128) };
                let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
                eprintln!("share-member: signal {signo}, leaving");
                return Ok(());
            }
            let mut fired: Vec<Port> = Vec::new();
            if fds[1].revents != 0 {
                self.p
                    .take_fired(&mut |port| fired.push(port))
                    .map_err(|e| format!("event channels: {e}"))?;
            }
            if fired.contains(&self.bus.port()) {
                // A broken page is dom0's problem, not a reason to stop
                // serving the devices we have.
                if let Err(e) = self.apply_changes() {
                    eprintln!("share-member: vdevice page: {e}");
                }
                // Ports may have come or gone: rebuild the poll set first.
                tap_interest.retain(|i, _| self.ports.contains_key(i));
                busy = true;
                continue;
            }
            busy = false;
            let readable: BTreeMap<u32, bool> = indexes
                .iter()
                .enumerate()
                .map(|(k, i)| (*i, fds[2 + k].revents & libc::POLLIN != 0))
                .collect();
            for i in indexes {
                let Some(port) = self.ports.get_mut(&i) else {
                    continue;
                };
                match port.service(&mut self.p, readable[&i]) {
                    Ok(interest) => {
                        busy |= interest.busy;
                        tap_interest.insert(i, interest.tap_readable);
                    }
                    Err(e) => {
                        let port = self.ports.remove(&i).expect("present above");
                        eprintln!(
                            "share-member: entry {i}: {}: the share with domain {} broke ({e}); device closed",
                            port.ifname(),
                            port.peer()
                        );
                        tap_interest.remove(&i);
                        if let Err(e) = port.close(&mut self.p) {
                            eprintln!("share-member: entry {i}: leaving the share: {e}");
                        }
                    }
                }
            }
        }
    }

    fn shutdown(&mut self) {
        let ports = std::mem::take(&mut self.ports);
        for (i, port) in ports {
            let name = port.ifname().to_string();
            let c = port.counters;
            if let Err(e) = port.close(&mut self.p) {
                eprintln!("share-member: entry {i}: leaving the share: {e}");
            }
            eprintln!(
                "share-member: entry {i}: {name} closed (tx {} frames, rx {}, dropped tx {} rx {}, bad rx {})",
                c.tx_frames, c.rx_frames, c.tx_dropped, c.rx_dropped, c.rx_bad
            );
        }
        if let Err(e) = self.keys.remove() {
            eprintln!("share-member: removing {}: {e}", self.keys.describe());
        }
        self.lock.release();
    }
}

/// Applies one change of entry `index` (the handler of `VdeviceBus`).
fn apply<H: Host>(
    p: &mut H,
    me: share_hal::DomId,
    ports: &mut BTreeMap<u32, NetPort<H>>,
    cfg: &Config,
    index: u32,
    old: &EntryRepr,
    new: &EntryRepr,
) -> Applied {
    match classify(me, old, new) {
        Action::Nothing => Applied::Ok { share_ref: None },
        Action::Refuse(code) => {
            eprintln!(
                "share-member: entry {index}: refused {:?}/{:?} with status {code}",
                new.kind, new.role
            );
            Applied::Refused(code)
        }
        Action::Leave => {
            if let Some(port) = ports.remove(&index) {
                let name = port.ifname().to_string();
                let c = port.counters;
                if let Err(e) = port.close(p) {
                    eprintln!("share-member: entry {index}: leaving the share: {e}");
                }
                eprintln!(
                    "share-member: entry {index}: {name} removed (tx {} frames, rx {}, dropped tx {} rx {}, bad rx {})",
                    c.tx_frames, c.rx_frames, c.tx_dropped, c.rx_dropped, c.rx_bad
                );
            }
            Applied::Ok { share_ref: None }
        }
        Action::JoinNet(join) => match NetPort::join(p, &join, &cfg.ifname, cfg.accept) {
            Ok(port) => {
                eprintln!(
                    "share-member: entry {index}: {} joined the LAN of domain {} (MAC {}, MTU {}, features {:#x})",
                    port.ifname(),
                    port.peer(),
                    fmt_mac(port.mac()),
                    port.mtu(),
                    port.accepted()
                );
                ports.insert(index, port);
                Applied::Ok { share_ref: None }
            }
            Err(r) => {
                eprintln!("share-member: entry {index}: refused: {}", r.why);
                Applied::Refused(if r.status == status::OK {
                    status::EIO
                } else {
                    r.status
                })
            }
        },
    }
}
