//! Host simulation platform: domains are ordinary Linux processes and a
//! [`Broker`] plays the hypervisor.
//!
//! - Every page is its own memfd. Mapping a grant passes exactly that
//!   page's descriptor over the domain's socket (`SCM_RIGHTS`), so a member
//!   can reach the pages granted to it and nothing else; a read-only grant
//!   passes a read-only descriptor, which cannot be mapped writable.
//! - The broker keeps every domain's grant table and checks each map and
//!   copy against it (the grant exists, names the requester, allows the
//!   access). Revoke fails with `GrantInUse` while the member maps the
//!   page; a member process that dies has unmapped everything.
//! - Grant copy runs in the broker, which maps every page; one request per
//!   batch of up to [`proto::MAX_COPY_SEGS`] segments.
//! - Event channels: the broker routes triggers by setting a bit in the
//!   domain's pending page and adding to the domain's eventfd; `wait`
//!   polls that eventfd, so it sleeps until a trigger or its deadline.
//!   With a spin time ([`SimPlatform::set_spin_ns`], or
//!   `XEN_SHARE_SIM_SPIN_NS` in the environment of every process of the
//!   simulation), `wait`, a call's wait for the broker's reply and the
//!   broker's wait for a domain's next request first look without
//!   sleeping for that long: waking a process whose CPU went idle costs
//!   tens of microseconds, more than a busy peer takes to answer. Off by
//!   default: it pays only where CPUs would otherwise idle (`cargo xtask
//!   bench blk --spin-ns`), and ruins throughput on a busy machine
//!   ([`Spin`]; docs/performance.md, "Polling before sleeping on the
//!   simulation").
//! - Time is `CLOCK_MONOTONIC`.
//!
//! Limits, honestly: the broker trusts the domain id a process claims when
//! it connects (like a VM config); and a hostile process may keep the
//! descriptor it got for a mapping and map it again after unmapping, which
//! the broker cannot see (Xen would refuse). Each page is one mapping in
//! the broker and in each process mapping it, so the kernel's
//! `vm.max_map_count` (65530 by default) bounds the pages in play.
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod broker;
pub mod proto;
pub mod store;
mod sys;

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

pub use broker::{Broker, OpCounts};
use proto::{Reader, Request, MAX_COPY_SEGS, MAX_MSG, MAX_PAGES_PER_REQ, MAX_PORTS};
pub use store::SimStore;
use sys::{os, Region};

use share_hal::error::{Error, Result};
use share_hal::platform::{
    Access, Clock, CopySeg, CopyStatus, DomId, EventChannels, Frame, GrantRef, GrantTable, Mapping,
    Memory, PageBlock, Platform, Port,
};
use share_hal::volatile::SharedMem;

/// The connection to the broker, shared with pages and mappings so that
/// dropping them can tell the broker.
struct Conn {
    sock: OwnedFd,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// How long a call watches for the broker's reply before it sleeps.
    spin_ns: u64,
}

fn broker_gone() -> Error {
    Error::Os {
        op: "talking to the simulation broker (it closed the connection)",
        errno: rustix::io::Errno::CONNRESET.raw_os_error(),
    }
}

impl Conn {
    fn send(&mut self, req: &Request) -> Result<()> {
        req.encode(&mut self.out);
        sys::send(self.sock.as_fd(), &self.out, &[])
    }

    /// Sends `req` and waits for its reply; `on_fd` receives each attached
    /// descriptor with its index. Returns the reply body.
    fn call(
        &mut self,
        req: &Request,
        on_fd: &mut dyn FnMut(usize, OwnedFd) -> Result<()>,
    ) -> Result<Vec<u8>> {
        match self.call_fds(req, on_fd)? {
            (body, None) => Ok(body),
            (_, Some(e)) => Err(e),
        }
    }

    /// As [`Conn::call`], but when the broker did the request and only
    /// taking a descriptor failed here, returns the body with that error,
    /// so that the caller can undo what the broker did (unmap, free).
    fn call_fds(
        &mut self,
        req: &Request,
        on_fd: &mut dyn FnMut(usize, OwnedFd) -> Result<()>,
    ) -> Result<(Vec<u8>, Option<Error>)> {
        self.send(req)?;
        let r = sys::recv_spinning(self.sock.as_fd(), &mut self.inbuf, true, self.spin_ns)?;
        if r.closed {
            return Err(broker_gone());
        }
        if r.truncated {
            return Err(Error::Protocol {
                what: "broker reply larger than the protocol allows",
            });
        }
        let mut rd = Reader::new(&self.inbuf[..r.len]);
        let status = rd.error()?;
        let total = rd.u32()? as usize;
        let body = self.inbuf[proto::ERROR_LEN + 4..r.len].to_vec();
        let mut status_err = status.err();
        let mut fd_err = None;
        let mut index = 0;
        let mut fds = r.fds;
        loop {
            for fd in fds.drain(..) {
                if status_err.is_none() && fd_err.is_none() && index < total {
                    if let Err(e) = on_fd(index, fd) {
                        fd_err = Some(e);
                    }
                }
                index += 1;
            }
            if index >= total {
                break;
            }
            let more = sys::recv(self.sock.as_fd(), &mut self.inbuf, true)?;
            if more.closed {
                return Err(broker_gone());
            }
            fds = more.fds;
        }
        match status_err.take() {
            Some(e) => Err(e),
            None => Ok((body, fd_err)),
        }
    }

    fn call_plain(&mut self, req: &Request) -> Result<Vec<u8>> {
        self.call(req, &mut |_, _| {
            Err(Error::Protocol {
                what: "unexpected descriptor in a broker reply",
            })
        })
    }
}

fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

/// A domain of the simulation: the [`Platform`] of one process.
pub struct SimPlatform {
    domid: DomId,
    conn: Arc<Mutex<Conn>>,
    eventfd: OwnedFd,
    /// One bit per port, set by the broker when the port fires.
    pending: Region,
    ports: BTreeSet<u32>,
    /// Descriptors of the domain's own devices (an uplink's TAP): `wait`
    /// also returns when one is readable.
    wake_fds: Vec<OwnedFd>,
    /// How long `wait` watches the pending page before it sleeps.
    spin_ns: u64,
}

/// How long [`EventChannels::wait`] watches for a trigger before it sleeps
/// by default: not at all (see the crate's documentation).
pub const DEFAULT_SPIN_NS: u64 = 0;

/// A bounded look for a peer's answer before sleeping: each round yields
/// the CPU (a runnable task of this machine may go first) until the spin
/// time is up. It pays only while CPUs would otherwise idle: a task that
/// does not sleep loses the scheduler's preference for tasks that wake
/// up, so on a busy machine every hand-off waits for a time slice (with
/// two busy loops beside the disk benchmark, a 100 us spin fell to 1-19 k
/// IOPS against 8.6-281 k without; docs/performance.md). Hence off by
/// default.
pub struct Spin {
    end_ns: u64,
}

impl Spin {
    /// A spin of `spin_ns` from now, ending at `deadline_ns` at the latest
    /// (0 or a deadline passed: over at once).
    pub fn new(spin_ns: u64, deadline_ns: Option<u64>) -> Spin {
        let end = sys::now_ns().saturating_add(spin_ns);
        Spin {
            end_ns: deadline_ns.map_or(end, |d| d.min(end)),
        }
    }

    /// Yields the CPU once; false when the spin time is up.
    pub fn go_on(&mut self) -> bool {
        if sys::now_ns() >= self.end_ns {
            return false;
        }
        std::thread::yield_now();
        true
    }
}

/// The environment variable that sets the spin time, in nanoseconds, of
/// the domains and the broker a process starts.
pub const SPIN_ENV: &str = "XEN_SHARE_SIM_SPIN_NS";

pub(crate) fn spin_from_env() -> Result<u64> {
    parse_spin(std::env::var(SPIN_ENV).ok().as_deref())
}

fn parse_spin(v: Option<&str>) -> Result<u64> {
    match v {
        None => Ok(DEFAULT_SPIN_NS),
        Some(v) => v.trim().parse::<u64>().map_err(|_| Error::InvalidArgument {
            what: "XEN_SHARE_SIM_SPIN_NS is not a number of nanoseconds",
        }),
    }
}

impl SimPlatform {
    /// Makes [`Platform::wait`] also return (having fired no port) when
    /// `fd` is readable: a domain's own device (netback-sim's uplink TAP)
    /// wakes it as an event channel would. The descriptor is duplicated.
    pub fn wake_on(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        let dup = fd.try_clone_to_owned().map_err(|e| Error::Os {
            op: "dup of a wake descriptor",
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        self.wake_fds.push(dup);
        Ok(())
    }

    /// Connects to the broker at `socket_path` as domain `domid`.
    pub fn connect(socket_path: impl AsRef<Path>, domid: DomId) -> Result<SimPlatform> {
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(os("socket"))?;
        let addr = SocketAddrUnix::new(socket_path.as_ref()).map_err(os("socket path"))?;
        rustix::net::connect(&sock, &addr)
            .map_err(os("connecting to the simulation broker (is it running?)"))?;
        let spin_ns = spin_from_env()?;
        let mut conn = Conn {
            sock,
            out: Vec::with_capacity(MAX_MSG),
            inbuf: vec![0u8; MAX_MSG],
            spin_ns,
        };
        let mut got: [Option<OwnedFd>; 2] = [None, None];
        let body = conn.call(&Request::Hello { domid }, &mut |i, fd| {
            match got.get_mut(i) {
                Some(slot) => *slot = Some(fd),
                None => {
                    return Err(Error::Protocol {
                        what: "hello reply descriptors",
                    })
                }
            }
            Ok(())
        })?;
        let [Some(eventfd), Some(pending_fd)] = got else {
            return Err(Error::Protocol {
                what: "hello reply descriptors",
            });
        };
        if Reader::new(&body).u32()? != MAX_PORTS {
            return Err(Error::Protocol {
                what: "broker of another protocol version",
            });
        }
        let mut pending = Region::reserve(1, true)?;
        pending.map_page(0, pending_fd.as_fd())?;
        Ok(SimPlatform {
            domid,
            conn: Arc::new(Mutex::new(conn)),
            eventfd,
            wake_fds: Vec::new(),
            pending,
            ports: BTreeSet::new(),
            spin_ns,
        })
    }

    /// How long [`EventChannels::wait`] watches for a trigger, and a call
    /// for the broker's reply, before it sleeps (0: at once).
    pub fn spin_ns(&self) -> u64 {
        self.spin_ns
    }

    /// Sets [`SimPlatform::spin_ns`].
    pub fn set_spin_ns(&mut self, ns: u64) {
        self.spin_ns = ns;
        self.conn().spin_ns = ns;
    }

    /// Watches the pending page until a port fires, the spin time is over
    /// or the deadline passed; true when ports fired.
    fn spin(&self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> bool {
        if self.spin_ns == 0 {
            return false;
        }
        let mut spin = Spin::new(self.spin_ns, deadline_ns);
        loop {
            if self.scan(fired) {
                return true;
            }
            if !spin.go_on() {
                return false;
            }
        }
    }

    fn conn(&self) -> MutexGuard<'_, Conn> {
        lock(&self.conn)
    }

    /// The eventfd the broker signals on every trigger, for a program that
    /// polls it together with its own descriptors (a TAP device). Once it is
    /// readable, drain it (read 8 bytes; it is non-blocking) and then call
    /// [`EventChannels::wait`] with a deadline already passed to collect
    /// the fired ports without sleeping.
    pub fn event_fd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// Takes the fired ports out of the pending page.
    fn scan(&self, fired: &mut dyn FnMut(Port)) -> bool {
        let mem = self.pending.mem();
        let mut any = false;
        for w in 0..(MAX_PORTS / 32) as usize {
            let Ok(v) = mem.load_u32(w * 4, Ordering::Acquire) else {
                continue;
            };
            if v == 0 {
                continue;
            }
            let _ = mem.fetch_and_not_u32(w * 4, v, Ordering::AcqRel);
            for bit in 0..32 {
                let port = (w * 32 + bit) as u32;
                // A port closed since it fired is not reported.
                if v & (1 << bit) != 0 && self.ports.contains(&port) {
                    any = true;
                    fired(Port(port));
                }
            }
        }
        any
    }
}

/// Pages of the caller's own, each a memfd the broker also holds.
pub struct SimPages {
    region: Region,
    frames: Vec<Frame>,
    conn: Arc<Mutex<Conn>>,
}

impl PageBlock for SimPages {
    fn mem(&self) -> SharedMem<'_> {
        self.region.mem()
    }

    fn count(&self) -> usize {
        self.region.count()
    }

    fn frame(&self, index: usize) -> Option<Frame> {
        self.frames.get(index).copied()
    }
}

fn free_frames(conn: &Mutex<Conn>, frames: &[Frame]) {
    let mut c = lock(conn);
    for chunk in frames.chunks(MAX_PAGES_PER_REQ) {
        let _ = c.call_plain(&Request::Free {
            frames: chunk.to_vec(),
        });
    }
}

impl Drop for SimPages {
    fn drop(&mut self) {
        free_frames(&self.conn, &self.frames);
    }
}

/// Pages another domain granted, mapped here.
pub struct SimMapping {
    region: Region,
    map_ids: Vec<u64>,
    conn: Arc<Mutex<Conn>>,
}

impl SimMapping {
    fn release(&mut self) -> Result<()> {
        let mut c = lock(&self.conn);
        let mut r = Ok(());
        for id in self.map_ids.drain(..) {
            if let Err(e) = c.call_plain(&Request::Unmap { map_id: id }) {
                r = Err(e);
            }
        }
        r
    }
}

impl Mapping for SimMapping {
    /// For a read-only mapping the window is mapped `PROT_READ`: writing
    /// through it faults.
    fn mem(&self) -> SharedMem<'_> {
        self.region.mem()
    }

    fn count(&self) -> usize {
        self.region.count()
    }
}

impl Drop for SimMapping {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

impl Memory for SimPlatform {
    type Pages = SimPages;

    fn alloc_pages(&mut self, count: usize) -> Result<SimPages> {
        let mut pages = SimPages {
            region: Region::reserve(count, true)?,
            frames: Vec::with_capacity(count),
            conn: self.conn.clone(),
        };
        let mut c = self.conn();
        while pages.frames.len() < count {
            let n = (count - pages.frames.len()).min(MAX_PAGES_PER_REQ);
            let base = pages.frames.len();
            let region = &mut pages.region;
            let (body, fd_err) =
                c.call_fds(&Request::Alloc { count: n as u32 }, &mut |i, fd| {
                    if i >= n {
                        return Err(Error::Protocol {
                            what: "alloc reply descriptors",
                        });
                    }
                    region.map_page(base + i, fd.as_fd())
                })?;
            if let Some(e) = fd_err {
                // The broker made the pages: give them back, or they stay
                // charged to us until we disconnect.
                let mut rd = Reader::new(&body);
                let frames: Vec<Frame> = match rd.u32() {
                    Ok(k) => (0..k).map_while(|_| rd.u64().ok().map(Frame)).collect(),
                    Err(_) => Vec::new(),
                };
                if !frames.is_empty() {
                    let _ = c.call_plain(&Request::Free { frames });
                }
                return Err(e);
            }
            let mut rd = Reader::new(&body);
            if rd.u32()? as usize != n {
                return Err(Error::Protocol {
                    what: "alloc reply count",
                });
            }
            for _ in 0..n {
                pages.frames.push(Frame(rd.u64()?));
            }
        }
        Ok(pages)
    }
}

impl GrantTable for SimPlatform {
    type Mapping = SimMapping;

    fn grant(&mut self, frame: Frame, to: DomId, access: Access) -> Result<GrantRef> {
        let body = self
            .conn()
            .call_plain(&Request::Grant { frame, to, access })?;
        Ok(GrantRef(Reader::new(&body).u32()?))
    }

    fn revoke(&mut self, gref: GrantRef) -> Result<()> {
        self.conn().call_plain(&Request::Revoke { gref })?;
        Ok(())
    }

    fn map(&mut self, from: DomId, grefs: &[GrantRef], access: Access) -> Result<SimMapping> {
        let mut m = SimMapping {
            region: Region::reserve(grefs.len(), access == Access::ReadWrite)?,
            map_ids: Vec::new(),
            conn: self.conn.clone(),
        };
        // On any error `m` drops, unmapping the chunks already mapped.
        let mut c = self.conn();
        for (k, chunk) in grefs.chunks(MAX_PAGES_PER_REQ).enumerate() {
            let base = k * MAX_PAGES_PER_REQ;
            let region = &mut m.region;
            let body = c.call_fds(
                &Request::Map {
                    from,
                    access,
                    grefs: chunk.to_vec(),
                },
                &mut |i, fd| {
                    if i >= chunk.len() {
                        return Err(Error::Protocol {
                            what: "map reply descriptors",
                        });
                    }
                    region.map_page(base + i, fd.as_fd())
                },
            );
            match body {
                Ok((body, None)) => m.map_ids.push(Reader::new(&body).u64()?),
                Ok((body, Some(e))) => {
                    // The broker pinned the grants: unpin them, or the
                    // granter can never revoke them while we live.
                    if let Ok(map_id) = Reader::new(&body).u64() {
                        let _ = c.call_plain(&Request::Unmap { map_id });
                    }
                    drop(c);
                    return Err(e);
                }
                Err(e) => {
                    drop(c);
                    return Err(e);
                }
            }
        }
        drop(c);
        Ok(m)
    }

    fn unmap(&mut self, mut mapping: SimMapping) -> Result<()> {
        mapping.release()
    }

    fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()> {
        let mut c = self.conn();
        for chunk in segs.chunks_mut(MAX_COPY_SEGS) {
            let body = c.call_plain(&Request::Copy {
                segs: chunk.to_vec(),
            })?;
            let mut rd = Reader::new(&body);
            if rd.u32()? as usize != chunk.len() {
                return Err(Error::Protocol {
                    what: "copy reply count",
                });
            }
            for seg in chunk.iter_mut() {
                seg.status = match rd.error()? {
                    Ok(()) => CopyStatus::Done,
                    Err(e) => CopyStatus::Failed(e),
                };
            }
        }
        Ok(())
    }
}

impl EventChannels for SimPlatform {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Port> {
        let body = self.conn().call_plain(&Request::AllocUnbound { remote })?;
        let port = Reader::new(&body).u32()?;
        self.ports.insert(port);
        Ok(Port(port))
    }

    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port> {
        let body = self.conn().call_plain(&Request::Bind {
            remote,
            remote_port,
        })?;
        let port = Reader::new(&body).u32()?;
        self.ports.insert(port);
        Ok(Port(port))
    }

    fn notify(&mut self, port: Port) -> Result<()> {
        if !self.ports.contains(&port.0) {
            return Err(Error::BadPort { port });
        }
        // No reply: a trigger costs one datagram.
        self.conn().send(&Request::Notify { port })
    }

    fn close(&mut self, port: Port) -> Result<()> {
        self.conn().call_plain(&Request::Close { port })?;
        self.ports.remove(&port.0);
        Ok(())
    }

    fn wait(&mut self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()> {
        loop {
            // The broker sets the bit before it signals the eventfd, and we
            // drain the eventfd before scanning: a trigger is never missed,
            // at worst one wake finds nothing new.
            if self.scan(fired) || self.spin(deadline_ns, fired) {
                return Ok(());
            }
            let timeout = match deadline_ns {
                None => None,
                Some(d) => {
                    let now = sys::now_ns();
                    if now >= d {
                        return Err(Error::TimedOut);
                    }
                    Some(d - now)
                }
            };
            if self.wake_fds.is_empty() {
                if sys::poll_readable(self.eventfd.as_fd(), timeout)? {
                    sys::eventfd_drain(self.eventfd.as_fd());
                }
                continue;
            }
            let (event, other) = sys::poll_readable_with(
                self.eventfd.as_fd(),
                self.wake_fds.iter().map(|f| f.as_fd()),
                timeout,
            )?;
            if event {
                sys::eventfd_drain(self.eventfd.as_fd());
            }
            if other {
                // The fired ports are collected first, then the device's
                // work is the caller's.
                self.scan(fired);
                return Ok(());
            }
        }
    }
}

impl Clock for SimPlatform {
    fn now_ns(&self) -> u64 {
        sys::now_ns()
    }
}

impl Platform for SimPlatform {
    fn domid(&self) -> DomId {
        self.domid
    }
}

/// A fresh socket path for a broker, unique to this process and call.
pub fn temp_socket_path(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "xen-share-{tag}-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use share_hal::platform::PAGE_SIZE;

    fn two_domains() -> (Broker, SimPlatform, SimPlatform) {
        let path = temp_socket_path("unit");
        let b = Broker::spawn(&path).unwrap();
        let a = SimPlatform::connect(&path, 1).unwrap();
        let m = SimPlatform::connect(&path, 2).unwrap();
        (b, a, m)
    }

    #[test]
    fn spin_time_comes_from_the_environment_or_the_default() {
        assert_eq!(parse_spin(None), Ok(DEFAULT_SPIN_NS));
        assert_eq!(parse_spin(Some("0")), Ok(0));
        assert_eq!(parse_spin(Some(" 40000\n")), Ok(40_000));
        assert!(matches!(
            parse_spin(Some("25us")),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn a_trigger_is_seen_with_or_without_spinning() {
        let (_b, mut a, mut m) = two_domains();
        let pa = a.alloc_unbound(2).unwrap();
        let pm = m.bind_interdomain(1, pa).unwrap();
        for spin in [0, 25_000, 50_000_000] {
            m.set_spin_ns(spin);
            a.notify(pa).unwrap();
            let mut got = Vec::new();
            let deadline = m.now_ns() + 5_000_000_000;
            m.wait(Some(deadline), &mut |p| got.push(p)).unwrap();
            assert_eq!(got, vec![pm], "spin {spin} ns");
            // Nothing more: a short wait times out, spinning or not.
            let d = m.now_ns() + 1_000_000;
            assert_eq!(m.wait(Some(d), &mut |_| {}), Err(Error::TimedOut));
        }
    }

    #[test]
    fn grant_map_write_read_revoke() {
        let (_b, mut a, mut m) = two_domains();
        let pages = a.alloc_pages(2).unwrap();
        pages.mem().write_u32(PAGE_SIZE + 8, 0xfeed).unwrap();
        let g = a
            .grant(pages.frame(1).unwrap(), 2, Access::ReadWrite)
            .unwrap();
        let map = m.map(1, &[g], Access::ReadWrite).unwrap();
        assert_eq!(map.mem().read_u32(8), Ok(0xfeed));
        map.mem().write_u32(12, 7).unwrap();
        assert_eq!(pages.mem().read_u32(PAGE_SIZE + 12), Ok(7));
        assert_eq!(a.revoke(g), Err(Error::GrantInUse { gref: g }));
        m.unmap(map).unwrap();
        a.revoke(g).unwrap();
        assert_eq!(
            m.map(1, &[g], Access::ReadOnly).err(),
            Some(Error::NoGrant { domid: 1, gref: g })
        );
    }

    #[test]
    fn read_only_grants_refuse_write_access() {
        let (_b, mut a, mut m) = two_domains();
        let pages = a.alloc_pages(1).unwrap();
        let g = a
            .grant(pages.frame(0).unwrap(), 2, Access::ReadOnly)
            .unwrap();
        assert_eq!(
            m.map(1, &[g], Access::ReadWrite).err(),
            Some(Error::ReadOnlyGrant { domid: 1, gref: g })
        );
        let map = m.map(1, &[g], Access::ReadOnly).unwrap();
        pages.mem().write_u8(5, 9).unwrap();
        assert_eq!(map.mem().read_u8(5), Ok(9));
        drop(map);
        // Dropping a mapping unmaps it.
        a.revoke(g).unwrap();
    }

    #[test]
    fn wait_times_out_then_wakes_on_trigger() {
        let (_b, mut a, mut m) = two_domains();
        let pa = a.alloc_unbound(2).unwrap();
        let pm = m.bind_interdomain(1, pa).unwrap();
        let t0 = a.now_ns();
        let r = a.wait(Some(t0 + 20_000_000), &mut |_| {});
        assert_eq!(r, Err(Error::TimedOut));
        assert!(a.now_ns() - t0 >= 20_000_000);
        m.notify(pm).unwrap();
        let mut got = Vec::new();
        a.wait(Some(a.now_ns() + 5_000_000_000), &mut |p| got.push(p))
            .unwrap();
        assert_eq!(got, vec![pa]);
        a.notify(pa).unwrap();
        let mut got = Vec::new();
        m.wait(None, &mut |p| got.push(p)).unwrap();
        assert_eq!(got, vec![pm]);
        m.close(pm).unwrap();
        assert_eq!(m.notify(pm), Err(Error::BadPort { port: pm }));
    }

    #[test]
    fn a_wake_descriptor_ends_a_wait_and_triggers_still_count() {
        use std::io::{Read, Write};
        let (_b, mut a, mut m) = two_domains();
        let (mut far, near) = std::os::unix::net::UnixStream::pair().unwrap();
        a.wake_on(near.as_fd()).unwrap();
        let t0 = a.now_ns();
        assert_eq!(
            a.wait(Some(t0 + 20_000_000), &mut |_| {}),
            Err(Error::TimedOut)
        );
        far.write_all(b"x").unwrap();
        let mut got = Vec::new();
        a.wait(Some(a.now_ns() + 5_000_000_000), &mut |p| got.push(p))
            .unwrap();
        assert!(got.is_empty(), "no port fired, the device woke it");
        assert!(a.now_ns() - t0 < 2_000_000_000);
        // Readable until read; a trigger meanwhile is reported with it.
        let pa = a.alloc_unbound(2).unwrap();
        let pm = m.bind_interdomain(1, pa).unwrap();
        m.notify(pm).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut got = Vec::new();
        a.wait(None, &mut |p| got.push(p)).unwrap();
        assert_eq!(got, vec![pa]);
        let mut b = [0u8; 1];
        (&near).read_exact(&mut b).unwrap();
        assert_eq!(
            a.wait(Some(a.now_ns() + 20_000_000), &mut |_| {}),
            Err(Error::TimedOut)
        );
    }

    /// The broker counts each domain's triggers and grant copies (batches,
    /// segments, bytes), delivered or not, as the benchmarks report them.
    #[test]
    fn the_broker_counts_triggers_and_grant_copies_per_domain() {
        let (b, mut a, mut m) = two_domains();
        assert_eq!(b.op_totals(), OpCounts::default());
        let pa = a.alloc_unbound(2).unwrap();
        let pm = m.bind_interdomain(1, pa).unwrap();
        for _ in 0..3 {
            m.notify(pm).unwrap();
        }
        a.notify(pa).unwrap();
        let own = a.alloc_pages(1).unwrap();
        let theirs = m.alloc_pages(1).unwrap();
        let g = m
            .grant(theirs.frame(0).unwrap(), 1, Access::ReadOnly)
            .unwrap();
        use share_hal::platform::CopyPtr::*;
        let seg = |offset: u16, len: u16| CopySeg {
            src: Foreign {
                domid: 2,
                gref: g,
                offset,
            },
            dst: Local {
                frame: own.frame(0).unwrap(),
                offset,
            },
            len,
            status: CopyStatus::Pending,
        };
        // One batch of two segments, one failing (it leaves its page):
        // both count, as a hypervisor would have checked both.
        let mut segs = [seg(0, 512), seg(4000, 512)];
        a.copy(&mut segs).unwrap();
        // Notify has no reply: wait for the broker to have read them.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.op_counts().iter().map(|(_, c)| c.triggers).sum::<u64>() < 4 {
            assert!(std::time::Instant::now() < until, "triggers not counted");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let counts = b.op_counts();
        let of = |d: DomId| counts.iter().find(|(x, _)| *x == d).map(|(_, c)| *c);
        assert_eq!(
            of(1),
            Some(OpCounts {
                triggers: 1,
                copy_calls: 1,
                copy_segs: 2,
                copy_bytes: 1024,
            })
        );
        assert_eq!(
            of(2),
            Some(OpCounts {
                triggers: 3,
                ..OpCounts::default()
            })
        );
        let t = b.op_totals();
        assert_eq!((t.triggers, t.copy_segs), (4, 2));
        assert_eq!(t.since(&t), OpCounts::default());
    }

    #[test]
    fn bogus_arguments_get_errors_and_the_broker_carries_on() {
        let (b, mut a, mut m) = two_domains();
        assert!(matches!(
            a.grant(Frame(999), 2, Access::ReadWrite),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            a.grant(Frame(1), proto::DOMID_LIMIT, Access::ReadWrite),
            Err(Error::InvalidArgument { .. })
        ));
        assert_eq!(
            a.revoke(GrantRef(u32::MAX)),
            Err(Error::NoGrant {
                domid: 1,
                gref: GrantRef(u32::MAX)
            })
        );
        assert!(matches!(
            m.map(1, &[GrantRef(0), GrantRef(u32::MAX)], Access::ReadOnly),
            Err(Error::NoGrant { .. })
        ));
        assert_eq!(
            m.map(77, &[GrantRef(8)], Access::ReadOnly).err(),
            Some(Error::NoSuchDomain { domid: 77 })
        );
        assert!(m.map(1, &[], Access::ReadOnly).is_err());
        assert!(matches!(
            m.bind_interdomain(1, Port(4000)),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            m.bind_interdomain(99, Port(1)),
            Err(Error::NoSuchDomain { domid: 99 })
        ));
        assert_eq!(m.close(Port(0)), Err(Error::BadPort { port: Port(0) }));
        // The same domain id cannot connect twice.
        assert!(SimPlatform::connect(b.path(), 2).is_err());
        // A port bound to someone else's unbound port is refused.
        let pa = a.alloc_unbound(3).unwrap();
        assert!(m.bind_interdomain(1, pa).is_err());
        // Still serving.
        let pages = a.alloc_pages(1).unwrap();
        let g = a
            .grant(pages.frame(0).unwrap(), 2, Access::ReadOnly)
            .unwrap();
        let map = m.map(1, &[g], Access::ReadOnly).unwrap();
        m.unmap(map).unwrap();
        assert_eq!(b.domains(), vec![1, 2]);
    }

    #[test]
    fn copy_checks_each_segment() {
        let (_b, mut a, mut m) = two_domains();
        let own = a.alloc_pages(1).unwrap();
        let theirs = m.alloc_pages(1).unwrap();
        theirs.mem().fill(0, 64, 0xab).unwrap();
        let g = m
            .grant(theirs.frame(0).unwrap(), 1, Access::ReadOnly)
            .unwrap();
        let f = own.frame(0).unwrap();
        let seg = |src, dst, len| CopySeg {
            src,
            dst,
            len,
            status: CopyStatus::Pending,
        };
        use share_hal::platform::CopyPtr::*;
        let mut segs = [
            seg(
                Foreign {
                    domid: 2,
                    gref: g,
                    offset: 0,
                },
                Local {
                    frame: f,
                    offset: 100,
                },
                64,
            ),
            // Writing a read-only grant.
            seg(
                Local {
                    frame: f,
                    offset: 0,
                },
                Foreign {
                    domid: 2,
                    gref: g,
                    offset: 0,
                },
                8,
            ),
            // Leaving the page.
            seg(
                Local {
                    frame: f,
                    offset: 4090,
                },
                Local {
                    frame: f,
                    offset: 0,
                },
                8,
            ),
            // Overlap within one page.
            seg(
                Local {
                    frame: f,
                    offset: 100,
                },
                Local {
                    frame: f,
                    offset: 104,
                },
                64,
            ),
        ];
        a.copy(&mut segs).unwrap();
        assert_eq!(segs[0].status, CopyStatus::Done);
        assert_eq!(
            segs[1].status,
            CopyStatus::Failed(Error::ReadOnlyGrant { domid: 2, gref: g })
        );
        assert!(matches!(
            segs[2].status,
            CopyStatus::Failed(Error::InvalidArgument { .. })
        ));
        assert_eq!(segs[3].status, CopyStatus::Done);
        assert_eq!(own.mem().read_u8(104 + 63), Ok(0xab));
        assert_eq!(own.mem().read_u8(99), Ok(0));
    }

    /// A domain talking to a scripted broker on the other end of a socket
    /// pair: `script` answers each request; the requests are returned.
    fn scripted(
        script: impl FnMut(&Request) -> (Vec<u8>, Vec<OwnedFd>) + Send + 'static,
    ) -> (SimPlatform, std::thread::JoinHandle<Vec<Request>>) {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let mut script = script;
        let broker = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; MAX_MSG];
            loop {
                let r = sys::recv(theirs.as_fd(), &mut buf, false).unwrap();
                if r.closed {
                    return seen;
                }
                let req = Request::decode(&buf[..r.len]).unwrap();
                let (body, fds) = script(&req);
                let mut msg = Vec::new();
                proto::encode_error(&mut msg, Ok(()));
                proto::put_u32(&mut msg, fds.len() as u32);
                msg.extend_from_slice(&body);
                let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                sys::send(theirs.as_fd(), &msg, &borrowed).unwrap();
                seen.push(req);
            }
        });
        let p = SimPlatform {
            domid: 2,
            conn: Arc::new(Mutex::new(Conn {
                sock: ours,
                out: Vec::new(),
                inbuf: vec![0u8; MAX_MSG],
                spin_ns: 0,
            })),
            eventfd: sys::new_eventfd().unwrap(),
            pending: Region::reserve(1, true).unwrap(),
            ports: BTreeSet::new(),
            wake_fds: Vec::new(),
            spin_ns: 0,
        };
        (p, broker)
    }

    /// A descriptor that mmap refuses (an eventfd), as a page that cannot
    /// be mapped here (e.g. at vm.max_map_count).
    fn unmappable() -> OwnedFd {
        sys::new_eventfd().unwrap()
    }

    #[test]
    fn a_mapping_that_fails_here_is_unmapped_at_the_broker() {
        let (mut p, broker) = scripted(|req| match req {
            Request::Map { .. } => (42u64.to_le_bytes().to_vec(), vec![unmappable()]),
            _ => (Vec::new(), Vec::new()),
        });
        assert!(matches!(
            p.map(1, &[GrantRef(8)], Access::ReadWrite),
            Err(Error::Os { .. })
        ));
        drop(p);
        let seen = broker.join().unwrap();
        assert_eq!(
            seen.last(),
            Some(&Request::Unmap { map_id: 42 }),
            "the grants stay pinned: {seen:?}"
        );
    }

    #[test]
    fn pages_that_fail_to_map_here_are_freed_at_the_broker() {
        let (mut p, broker) = scripted(|req| match req {
            Request::Alloc { .. } => {
                let mut body = Vec::new();
                proto::put_u32(&mut body, 1);
                proto::put_u64(&mut body, 5);
                (body, vec![unmappable()])
            }
            _ => (Vec::new(), Vec::new()),
        });
        assert!(matches!(p.alloc_pages(1), Err(Error::Os { .. })));
        drop(p);
        let seen = broker.join().unwrap();
        assert_eq!(
            seen.last(),
            Some(&Request::Free {
                frames: vec![Frame(5)]
            }),
            "the pages stay charged to the domain: {seen:?}"
        );
    }
}
