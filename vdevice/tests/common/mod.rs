//! What the simulation tests of the tool share: a `Lookup` over the
//! bootstrap values the test's domains published, a fake host (the domain
//! list and the disks given to backends), and domains running in threads:
//! netback-uk's switch (the real one), a disk server, and members.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use share_hal::platform::{Clock, DomId, EventChannels, GrantRef};
use share_hal::vdevice::{Applied, VdeviceBus};
use share_hal::wire::vdevice::{status, Bootstrap, EntryRepr, Kind, Role};
use share_sim::{temp_socket_path, Broker, SimPlatform};
use vdevice::host::{AttachedDisk, DomainInfo, Host};
use vdevice::{Lookup, Tool, ToolError};

/// dom0's tool over the simulation.
pub type DomTool = Tool<SimPlatform, Published>;

/// One simulated host: its broker, the bootstrap values its domains
/// publish, and its domain list. Each helper starts a domain and names it
/// in the list, as xl would.
pub struct SimHost {
    pub path: PathBuf,
    pub published: Published,
    pub host: FakeHost,
    _broker: Broker,
}

impl SimHost {
    /// A broker on a fresh socket named after `tag`.
    pub fn new(tag: &str) -> SimHost {
        let path = temp_socket_path(tag);
        let broker = Broker::spawn(&path).unwrap();
        SimHost {
            path,
            published: Published::default(),
            host: FakeHost::default(),
            _broker: broker,
        }
    }

    /// netback-uk (the real switch) as `domid`, without network devices.
    pub fn netback(&self, domid: DomId) -> Dom {
        self.netback_with_uplinks(domid, 0)
    }

    /// netback-uk as `domid`, with network devices 0..`devices`.
    pub fn netback_with_uplinks(&self, domid: DomId, devices: u16) -> Dom {
        let d = netback_with_uplinks(&self.path, domid, &self.published, devices);
        self.host.add(domid, "netback-uk");
        d
    }

    /// A member named `name` that refuses member entries naming a domain
    /// in `refuse_from`.
    pub fn member(&self, domid: DomId, name: &str, refuse_from: &[DomId]) -> Dom {
        let d = member(&self.path, domid, &self.published, refuse_from);
        self.host.add(domid, name);
        d
    }

    /// A disk server named "blkback-uk" serving the disks `host` gave it.
    pub fn disk_server(&self, domid: DomId) -> Dom {
        let d = disk_server(&self.path, domid, &self.published, &self.host);
        self.host.add(domid, "blkback-uk");
        d
    }

    /// dom0's tool on this host.
    pub fn tool(&self) -> DomTool {
        dom0_tool(&self.path, &self.published)
    }
}

/// The entries in use on `domid`'s page.
pub fn entries(tool: &mut DomTool, domid: DomId) -> Vec<EntryRepr> {
    tool.show(domid)
        .unwrap()
        .used
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// Command-line words.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[derive(Clone, Default)]
pub struct Published(pub Arc<Mutex<HashMap<DomId, Bootstrap>>>);

impl Lookup for Published {
    fn bootstrap(&mut self, domid: DomId) -> Result<Bootstrap, ToolError> {
        self.0
            .lock()
            .unwrap()
            .get(&domid)
            .copied()
            .ok_or(ToolError::NoBootstrap {
                domid,
                detail: "not published".into(),
            })
    }
}

/// A disk given to a backend: (backend, vdev, source, read_only).
pub type GivenDisk = (DomId, String, PathBuf, bool);

/// The running domains and the disks given to backends, as a test sets
/// them.
#[derive(Clone, Default)]
pub struct FakeHost {
    pub domains: Arc<Mutex<Vec<DomainInfo>>>,
    /// (backend, vdev, source, read_only) of each disk given; a backend's
    /// disk index is its position among that backend's.
    pub disks: Arc<Mutex<Vec<GivenDisk>>>,
}

impl FakeHost {
    pub fn add(&self, domid: DomId, name: &str) {
        self.domains.lock().unwrap().push(DomainInfo {
            domid,
            name: name.to_string(),
        });
    }

    pub fn gone(&self, domid: DomId) {
        self.domains.lock().unwrap().retain(|d| d.domid != domid);
    }

    /// The disk indexes `backend` has.
    pub fn disk_count(&self, backend: DomId) -> usize {
        self.disks
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.0 == backend)
            .count()
    }
}

impl Host for FakeHost {
    fn domains(&mut self) -> Result<Vec<DomainInfo>, String> {
        Ok(self.domains.lock().unwrap().clone())
    }

    fn attach_disk(
        &mut self,
        backend: DomId,
        source: &Path,
        read_only: bool,
    ) -> Result<AttachedDisk, String> {
        let mut disks = self.disks.lock().unwrap();
        let index = disks.iter().filter(|d| d.0 == backend).count();
        let vdev = format!("xvd{}", (b'b' + index as u8) as char);
        disks.push((backend, vdev.clone(), source.to_path_buf(), read_only));
        Ok(AttachedDisk {
            vdev,
            index: index as u64,
        })
    }
}

/// A domain running in a thread until stopped.
pub struct Dom {
    pub domid: DomId,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<EntryRepr>>>,
    published: Published,
}

impl Dom {
    /// Stops it (as if destroyed): its page is gone with it.
    pub fn stop(mut self) -> Vec<EntryRepr> {
        self.halt()
    }

    fn halt(&mut self) -> Vec<EntryRepr> {
        self.stop.store(true, Ordering::Relaxed);
        self.published.0.lock().unwrap().remove(&self.domid);
        self.handle
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Dom {
    fn drop(&mut self) {
        if self.handle.is_some() {
            self.halt();
        }
    }
}

fn spawn(
    mut p: SimPlatform,
    domid: DomId,
    published: &Published,
    run: impl FnMut(&mut SimPlatform) -> Vec<EntryRepr> + Send + 'static,
    bootstrap: Bootstrap,
    stop: Arc<AtomicBool>,
) -> Dom {
    published.0.lock().unwrap().insert(domid, bootstrap);
    let mut run = run;
    Dom {
        domid,
        stop,
        handle: Some(std::thread::spawn(move || run(&mut p))),
        published: published.clone(),
    }
}

/// netback-uk's switch and vdevice handling (the library the image runs).
/// Network devices 0..n of a test netback-uk that carry no traffic: an
/// uplink entry naming one is accepted, any other refused (ENODEV).
pub struct NoTraffic(pub u16);

impl netback_uk::switch::Uplinks for NoTraffic {
    fn recv(&mut self, _: u16, _: &mut [u8]) -> Option<(usize, share_hal::frames::FrameMeta)> {
        None
    }
    fn send(&mut self, _: u16, _: &[u8], _: share_hal::frames::FrameMeta) -> bool {
        true
    }
    fn has(&self, device: u16) -> bool {
        device < self.0
    }
}

pub fn netback(path: &Path, domid: DomId, published: &Published) -> Dom {
    netback_with_uplinks(path, domid, published, 0)
}

/// netback-uk with network devices 0..`devices` ([`NoTraffic`]).
pub fn netback_with_uplinks(path: &Path, domid: DomId, published: &Published, devices: u16) -> Dom {
    let mut p = SimPlatform::connect(path, domid).unwrap();
    let bus = VdeviceBus::create(&mut p, 16).unwrap();
    let boot = bus.bootstrap();
    let config = netback_uk::switch::SwitchConfig {
        seed: u64::from(domid),
        ..Default::default()
    };
    let mut nb = netback_uk::service::Netback::new(&mut p, bus, config)
        .unwrap()
        .with_uplinks(NoTraffic(devices));
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    spawn(
        p,
        domid,
        published,
        move |p| {
            while !s.load(Ordering::Relaxed) {
                nb.step(p, &mut |_| {}).unwrap();
            }
            nb.bus.entries().to_vec()
        },
        boot,
        stop,
    )
}

/// How a test domain answers each change.
type Apply = Box<dyn FnMut(u32, &EntryRepr, &EntryRepr) -> Applied + Send>;

fn bus_domain(path: &Path, domid: DomId, published: &Published, mut apply: Apply) -> Dom {
    let mut p = SimPlatform::connect(path, domid).unwrap();
    let mut bus = VdeviceBus::create(&mut p, 16).unwrap();
    let boot = bus.bootstrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    spawn(
        p,
        domid,
        published,
        move |p| {
            while !s.load(Ordering::Relaxed) {
                let _ = p.wait(Some(p.now_ns() + 20_000_000), &mut |_| {});
                bus.poll(p, &mut *apply).unwrap();
            }
            bus.entries().to_vec()
        },
        boot,
        stop,
    )
}

/// A member: joins what it is told to (an entry may be rewritten in place
/// with the same kind, as xenshare.ko takes it), refuses member entries
/// naming a domain in `refuse_from` (EINVAL), and serves nothing.
pub fn member(path: &Path, domid: DomId, published: &Published, refuse_from: &[DomId]) -> Dom {
    let refuse: Vec<DomId> = refuse_from.to_vec();
    bus_domain(
        path,
        domid,
        published,
        Box::new(move |_, old, new| {
            let in_place = old.kind == new.kind;
            if old.kind != Kind::Empty && new.kind != Kind::Empty && !in_place {
                return Applied::Refused(status::EEXIST);
            }
            match new.role {
                Role::Owner if new.kind != Kind::Empty => Applied::Refused(status::ENODEV),
                Role::Member if new.kind != Kind::Empty && refuse.contains(&new.peer) => {
                    Applied::Refused(status::EINVAL)
                }
                _ => Applied::Ok { share_ref: None },
            }
        }),
    )
}

/// A disk server: serves disk owner entries for the disks `host` gave it
/// (by index), one share per entry.
pub fn disk_server(path: &Path, domid: DomId, published: &Published, host: &FakeHost) -> Dom {
    let host = host.clone();
    bus_domain(
        path,
        domid,
        published,
        Box::new(move |i, old, new| {
            if old.kind != Kind::Empty && new.kind != Kind::Empty {
                return Applied::Refused(status::EEXIST);
            }
            match (new.kind, new.role) {
                (Kind::Empty, _) => Applied::Ok { share_ref: None },
                (Kind::Disk, Role::Owner) if (new.param as usize) < host.disk_count(domid) => {
                    Applied::Ok {
                        share_ref: Some(GrantRef(1000 + i)),
                    }
                }
                _ => Applied::Refused(status::ENODEV),
            }
        }),
    )
}

/// A domain that publishes its page but never serves its port.
pub fn silent(path: &Path, domid: DomId, published: &Published) -> SimPlatform {
    let mut p = SimPlatform::connect(path, domid).unwrap();
    let bus = VdeviceBus::create(&mut p, 8).unwrap();
    published.0.lock().unwrap().insert(domid, bus.bootstrap());
    std::mem::forget(bus);
    p
}

/// Writes `entries` (index, entry) into running domain `domid`'s page as
/// dom0 would: what a domain restored from a save finds in its page.
pub fn preset(
    dom0: &mut SimPlatform,
    published: &Published,
    domid: DomId,
    entries: &[(u32, EntryRepr)],
) {
    let boot = *published.0.lock().unwrap().get(&domid).unwrap();
    let mut client = share_hal::vdevice::VdeviceClient::attach(dom0, domid, boot).unwrap();
    for (i, e) in entries {
        let deadline = dom0.now_ns() + 5_000_000_000;
        client.change(dom0, *i, e, deadline).unwrap();
    }
    client.detach(dom0).unwrap();
}

/// dom0's vdevice tool on the simulation, with a 5 s acknowledgement
/// timeout.
pub fn dom0_tool(path: &Path, published: &Published) -> DomTool {
    Tool {
        platform: SimPlatform::connect(path, share_hal::platform::DOM0).unwrap(),
        lookup: published.clone(),
        timeout_ns: 5_000_000_000,
    }
}
