//! The member's event loop: the vdevice page, its entries, and a TAP
//! device per network share, all driven by one poll(2).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use share_hal::platform::Port;
use share_hal::vdevice::{Applied, VdeviceBus};
use share_hal::wire::vdevice::{status, EntryRepr, MAX_ENTRIES};
use share_hal::Error;

use crate::disk::DiskPort;
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
    /// Where disks appear: `disk<entry>` (the FUSE file) and
    /// `disk<entry>.dev` (a link to the block device). Default:
    /// [`KeyStore::default_run_dir`].
    pub run_dir: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entries: 16,
            ifname: "xsn%d".into(),
            accept: crate::port::SUPPORTED,
            lock: None,
            run_dir: None,
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
    disks: BTreeMap<u32, DiskPort<H>>,
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
        mut cfg: Config,
    ) -> Result<Self, String> {
        if cfg.run_dir.is_none() {
            cfg.run_dir = Some(keys.default_run_dir());
        }
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
            disks: BTreeMap::new(),
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
        let mut devs = Devices {
            ports: &mut self.ports,
            disks: &mut self.disks,
        };
        let cfg = &self.cfg;
        let change = self.bus.poll_with(&mut self.p, &mut |p, index, old, new| {
            apply(p, me, &mut devs, cfg, index, old, new)
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
        let mut fuse_interest: BTreeMap<u32, bool> = BTreeMap::new();
        let mut attaching = false;
        loop {
            let indexes: Vec<u32> = self.ports.keys().copied().collect();
            let disk_indexes: Vec<u32> = self.disks.keys().copied().collect();
            let mut fds = Vec::with_capacity(2 + indexes.len() + disk_indexes.len());
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
            let disk_base = fds.len();
            for i in &disk_indexes {
                let want = *fuse_interest.get(i).unwrap_or(&true);
                fds.push(libc::pollfd {
                    fd: self.disks[i].fuse_fd().unwrap_or(-1),
                    events: if want { libc::POLLIN } else { 0 },
                    revents: 0,
                });
            }
            // Busy: more work queued; a loop device being set up: look
            // again soon; otherwise sleep, waking once a second to follow
            // the switch's link state.
            let timeout = if busy {
                0
            } else if attaching {
                20
            } else {
                1000
            };
            let r = poll_spinning(&mut fds, timeout, self.p.spin_ns());
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
                fuse_interest.retain(|i, _| self.disks.contains_key(i));
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
            attaching = false;
            for (k, i) in disk_indexes.into_iter().enumerate() {
                let Some(disk) = self.disks.get_mut(&i) else {
                    continue;
                };
                let readable = fds[disk_base + k].revents & (libc::POLLIN | libc::POLLERR) != 0;
                match disk.service(&mut self.p, readable) {
                    Ok(interest) => {
                        busy |= interest.busy;
                        attaching |= interest.attaching;
                        fuse_interest.insert(i, interest.fuse_readable);
                    }
                    Err(e) => {
                        let disk = self.disks.remove(&i).expect("present above");
                        eprintln!("share-member: entry {i}: disk closed: {e}");
                        fuse_interest.remove(&i);
                        if let Err(e) = disk.close(&mut self.p) {
                            eprintln!("share-member: entry {i}: leaving the share: {e}");
                        }
                    }
                }
            }
        }
    }

    fn shutdown(&mut self) {
        let disks = std::mem::take(&mut self.disks);
        for (i, disk) in disks {
            let c = disk.counters;
            if let Err(e) = disk.close(&mut self.p) {
                eprintln!("share-member: entry {i}: leaving the share: {e}");
            }
            eprintln!(
                "share-member: entry {i}: disk closed (reads {}, writes {}, flushes {}, errors {}, refused {}, re-issued {})",
                c.reads, c.writes, c.flushes, c.errors, c.refused, c.reissued
            );
        }
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

/// The devices the entries hold.
struct Devices<'a, H: Host> {
    ports: &'a mut BTreeMap<u32, NetPort<H>>,
    disks: &'a mut BTreeMap<u32, DiskPort<H>>,
}

/// Applies one change of entry `index` (the handler of `VdeviceBus`).
fn apply<H: Host>(
    p: &mut H,
    me: share_hal::DomId,
    devs: &mut Devices<'_, H>,
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
            if let Some(disk) = devs.disks.remove(&index) {
                let dev = disk.device().map(|d| d.display().to_string());
                let c = disk.counters;
                if let Err(e) = disk.close(p) {
                    eprintln!("share-member: entry {index}: leaving the share: {e}");
                }
                eprintln!(
                    "share-member: entry {index}: disk {} removed (reads {}, writes {}, flushes {}, errors {}, refused {}, re-issued {})",
                    dev.as_deref().unwrap_or("(no block device yet)"),
                    c.reads, c.writes, c.flushes, c.errors, c.refused, c.reissued
                );
            }
            if let Some(port) = devs.ports.remove(&index) {
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
        Action::JoinDisk(join) => {
            let run_dir = cfg
                .run_dir
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from("/run/share-member"));
            match DiskPort::join(p, index, &join, &run_dir) {
                Ok(disk) => {
                    eprintln!(
                        "share-member: entry {index}: joined disk share of domain {} ({} sectors{}), block device coming up",
                        join.share_ref.owner,
                        disk.capacity(),
                        if disk.read_only() { ", read-only" } else { "" }
                    );
                    devs.disks.insert(index, disk);
                    Applied::Ok { share_ref: None }
                }
                Err(r) => refused(index, "refused", &r),
            }
        }
        Action::ReattachDisk(join) => {
            let Some(disk) = devs.disks.get_mut(&index) else {
                // The earlier join failed after all; nothing to move.
                return Applied::Refused(status::ENOENT);
            };
            match disk.reattach(p, &join) {
                Ok(()) => {
                    eprintln!(
                        "share-member: entry {index}: disk moved to share {} of domain {}; re-issuing what was in flight",
                        join.share_ref.descriptor, join.share_ref.owner
                    );
                    Applied::Ok { share_ref: None }
                }
                Err(r) => refused(index, "re-attach refused", &r),
            }
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
                devs.ports.insert(index, port);
                Applied::Ok { share_ref: None }
            }
            Err(r) => refused(index, "refused", &r),
        },
    }
}

/// Logs a refused entry and gives dom0 its status (EIO when the refusal
/// carries none).
fn refused(index: u32, what: &str, r: &crate::port::Refusal) -> Applied {
    eprintln!("share-member: entry {index}: {what}: {}", r.why);
    Applied::Refused(if r.status == status::OK {
        status::EIO
    } else {
        r.status
    })
}

/// poll(2) over `fds`, first without sleeping for up to `spin_ns` when
/// the call would sleep (share-sim's [`share_sim::Spin`]: a peer that is
/// busy answers sooner than this process, once its CPU went idle, would
/// wake up).
fn poll_spinning(fds: &mut [libc::pollfd], timeout_ms: libc::c_int, spin_ns: u64) -> libc::c_int {
    let poll = |fds: &mut [libc::pollfd], t: libc::c_int| {
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd
        // for the call, of the length passed.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, t) }
    };
    if timeout_ms != 0 && spin_ns > 0 {
        let mut spin = share_sim::Spin::new(spin_ns, None);
        loop {
            let r = poll(fds, 0);
            if r != 0 {
                return r;
            }
            if !spin.go_on() {
                break;
            }
        }
    }
    poll(fds, timeout_ms)
}
