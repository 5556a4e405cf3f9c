//! The broker: the simulation's hypervisor.
//!
//! It owns every page (one memfd each, mapped here too so that it can
//! execute grant copies), every domain's grant table and every event
//! channel. Domains reach it over a `SOCK_SEQPACKET` Unix socket; each
//! connection is served by its own thread, all sharing one locked state.
//! A connection that closes (the process exited or crashed) or breaks the
//! protocol is a dead domain: its mappings are released, its ports closed,
//! its grants forgotten.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::proto::{
    self, put_u32, put_u64, Request, DOMID_LIMIT, MAX_COPY_SEGS, MAX_FDS_PER_MSG, MAX_MSG,
    MAX_PAGES_PER_REQ, MAX_PORTS,
};
use super::sys::{self, os, Region};
use share_hal::error::{Error, Result};
use share_hal::platform::{Access, CopyPtr, CopySeg, DomId, Frame, GrantRef, Port, PAGE_SIZE};
use share_hal::volatile::SharedMem;

/// Pages one domain may own at once (each costs the broker a descriptor
/// and a mapping).
const MAX_FRAMES: usize = 1 << 16;
/// Grant table size of one domain.
const MAX_GRANTS: u32 = 1 << 16;
/// The first grant references are reserved, as on Xen.
const FIRST_GREF: u32 = 8;
/// Live mappings one domain may hold.
const MAX_MAPPINGS: usize = 1 << 16;

/// A page: its descriptor (to hand to domains) and the broker's own
/// mapping of it (to copy).
struct Page {
    fd: OwnedFd,
    region: Region,
}

impl Page {
    fn new() -> Result<Arc<Page>> {
        let fd = sys::new_page()?;
        let mut region = Region::reserve(1, true)?;
        region.map_page(0, fd.as_fd())?;
        Ok(Arc::new(Page { fd, region }))
    }

    fn mem(&self) -> SharedMem<'_> {
        self.region.mem()
    }
}

struct Grant {
    page: Arc<Page>,
    to: DomId,
    access: Access,
    /// Live mappings by `to`; revoke fails while non-zero.
    maps: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PortState {
    Free,
    Unbound { remote: DomId },
    Interdomain { remote: DomId, remote_port: u32 },
}

/// A mapping a domain holds: the grants it pins, each named with the
/// granter's incarnation so that a granter that died and came back under
/// the same id is never touched.
type MappedGrants = Vec<(DomId, u64, GrantRef)>;

struct Dom {
    incarnation: u64,
    frames: HashMap<u64, Arc<Page>>,
    next_frame: u64,
    grants: Vec<Option<Grant>>,
    free_grefs: VecDeque<u32>,
    mappings: HashMap<u64, MappedGrants>,
    next_map: u64,
    ports: Vec<PortState>,
    eventfd: OwnedFd,
    /// Bit `p` set = port `p` fired and the domain has not seen it yet.
    pending: Page,
}

impl Dom {
    fn grant(&self, gref: GrantRef) -> Option<&Grant> {
        self.grants.get(gref.0 as usize).and_then(Option::as_ref)
    }

    fn grant_mut(&mut self, gref: GrantRef) -> Option<&mut Grant> {
        self.grants
            .get_mut(gref.0 as usize)
            .and_then(Option::as_mut)
    }

    fn port(&self, port: u32) -> PortState {
        self.ports
            .get(port as usize)
            .copied()
            .unwrap_or(PortState::Free)
    }

    fn alloc_port(&mut self, state: PortState) -> Result<u32> {
        // Port 0 is never handed out, as on Xen.
        let p = (1..MAX_PORTS)
            .find(|&p| self.port(p) == PortState::Free)
            .ok_or(Error::InvalidArgument {
                what: "too many ports",
            })?;
        if self.ports.len() <= p as usize {
            self.ports.resize(p as usize + 1, PortState::Free);
        }
        self.ports[p as usize] = state;
        Ok(p)
    }

    fn fire(&self, port: u32) {
        let word = (port / 32) as usize * 4;
        let _ = self
            .pending
            .mem()
            .fetch_or_u32(word, 1 << (port % 32), Ordering::SeqCst);
        sys::eventfd_signal(self.eventfd.as_fd());
    }
}

#[derive(Default)]
struct State {
    doms: HashMap<DomId, Dom>,
    next_incarnation: u64,
    /// What each domain asked of the hypervisor, by domain id (kept when
    /// the domain disconnects).
    counts: HashMap<DomId, OpCounts>,
}

/// The operations a domain asked the broker for that are hypercalls on
/// Xen: the figures a benchmark reports next to its rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Triggers sent (`EVTCHNOP_send`), delivered or not.
    pub triggers: u64,
    /// Grant copy batches (one `GNTTABOP_copy` each).
    pub copy_calls: u64,
    /// Grant copy segments (operations) in them, and their bytes.
    pub copy_segs: u64,
    pub copy_bytes: u64,
}

impl OpCounts {
    /// `self - earlier`, per field (saturating).
    pub fn since(&self, earlier: &OpCounts) -> OpCounts {
        OpCounts {
            triggers: self.triggers.saturating_sub(earlier.triggers),
            copy_calls: self.copy_calls.saturating_sub(earlier.copy_calls),
            copy_segs: self.copy_segs.saturating_sub(earlier.copy_segs),
            copy_bytes: self.copy_bytes.saturating_sub(earlier.copy_bytes),
        }
    }

    fn add(&mut self, o: &OpCounts) {
        self.triggers += o.triggers;
        self.copy_calls += o.copy_calls;
        self.copy_segs += o.copy_segs;
        self.copy_bytes += o.copy_bytes;
    }
}

/// What a reply carries besides its body.
enum Fds {
    None,
    Pages(Vec<Arc<Page>>),
    /// Read-only descriptors made for this reply.
    Owned(Vec<OwnedFd>),
}

impl State {
    fn dom(&mut self, d: DomId) -> Result<&mut Dom> {
        self.doms
            .get_mut(&d)
            .ok_or(Error::NoSuchDomain { domid: d })
    }

    fn hello(&mut self, domid: DomId) -> Result<(u64, OwnedFd, OwnedFd)> {
        if domid >= DOMID_LIMIT {
            return Err(Error::InvalidArgument {
                what: "domain id out of range",
            });
        }
        if self.doms.contains_key(&domid) {
            return Err(Error::InvalidArgument {
                what: "domain id already connected",
            });
        }
        let eventfd = sys::new_eventfd()?;
        let pending = Page::new()?;
        let pending = Arc::try_unwrap(pending).map_err(|_| Error::OutOfMemory)?;
        let theirs_ev = eventfd.try_clone().map_err(|e| Error::Os {
            op: "dup of an eventfd",
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        let theirs_pending = pending.fd.try_clone().map_err(|e| Error::Os {
            op: "dup of a page",
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        self.next_incarnation += 1;
        let incarnation = self.next_incarnation;
        self.doms.insert(
            domid,
            Dom {
                incarnation,
                frames: HashMap::new(),
                next_frame: 1,
                grants: Vec::new(),
                free_grefs: VecDeque::new(),
                mappings: HashMap::new(),
                next_map: 1,
                ports: Vec::new(),
                eventfd,
                pending,
            },
        );
        Ok((incarnation, theirs_ev, theirs_pending))
    }

    fn alloc(&mut self, me: DomId, pages: Vec<Arc<Page>>, body: &mut Vec<u8>) -> Result<Fds> {
        let d = self.dom(me)?;
        if d.frames.len() + pages.len() > MAX_FRAMES {
            return Err(Error::OutOfMemory);
        }
        put_u32(body, pages.len() as u32);
        for p in &pages {
            let f = d.next_frame;
            d.next_frame += 1;
            d.frames.insert(f, p.clone());
            put_u64(body, f);
        }
        Ok(Fds::Pages(pages))
    }

    fn free(&mut self, me: DomId, frames: &[Frame]) -> Result<()> {
        let d = self.dom(me)?;
        // A page still granted lives on in its grant entries: the domain
        // gives up its name for the page, never the page under a member.
        let mut unknown = false;
        for f in frames {
            unknown |= d.frames.remove(&f.0).is_none();
        }
        if unknown {
            return Err(Error::InvalidArgument {
                what: "frame is not one of the caller's pages",
            });
        }
        Ok(())
    }

    fn grant(&mut self, me: DomId, frame: Frame, to: DomId, access: Access) -> Result<GrantRef> {
        if to >= DOMID_LIMIT {
            return Err(Error::InvalidArgument {
                what: "domain id out of range",
            });
        }
        let d = self.dom(me)?;
        let page = d
            .frames
            .get(&frame.0)
            .cloned()
            .ok_or(Error::InvalidArgument {
                what: "frame is not one of the caller's pages",
            })?;
        let gref = match d.free_grefs.pop_front() {
            Some(g) => g,
            None => {
                let next = (d.grants.len() as u32).max(FIRST_GREF);
                if next >= MAX_GRANTS {
                    return Err(Error::GrantTableFull);
                }
                d.grants.resize_with(next as usize + 1, || None);
                next
            }
        };
        d.grants[gref as usize] = Some(Grant {
            page,
            to,
            access,
            maps: 0,
        });
        Ok(GrantRef(gref))
    }

    fn revoke(&mut self, me: DomId, gref: GrantRef) -> Result<()> {
        let d = self.dom(me)?;
        match d.grant(gref) {
            None => Err(Error::NoGrant { domid: me, gref }),
            Some(g) if g.maps > 0 => Err(Error::GrantInUse { gref }),
            Some(_) => {
                d.grants[gref.0 as usize] = None;
                // FIFO reuse: a stale reference names a fresh grant as late
                // as possible.
                d.free_grefs.push_back(gref.0);
                Ok(())
            }
        }
    }

    fn map(
        &mut self,
        me: DomId,
        from: DomId,
        access: Access,
        grefs: &[GrantRef],
        body: &mut Vec<u8>,
    ) -> Result<(u64, Vec<Arc<Page>>)> {
        if grefs.is_empty() || grefs.len() > MAX_PAGES_PER_REQ {
            return Err(Error::InvalidArgument {
                what: "page count (1..=1024 per request)",
            });
        }
        if self.dom(me)?.mappings.len() >= MAX_MAPPINGS {
            return Err(Error::OutOfMemory);
        }
        let granter = self.dom(from)?;
        let incarnation = granter.incarnation;
        let mut pages = Vec::with_capacity(grefs.len());
        for &gref in grefs {
            let g = granter
                .grant(gref)
                .filter(|g| g.to == me)
                .ok_or(Error::NoGrant { domid: from, gref })?;
            if access == Access::ReadWrite && g.access == Access::ReadOnly {
                return Err(Error::ReadOnlyGrant { domid: from, gref });
            }
            pages.push(g.page.clone());
        }
        for &gref in grefs {
            if let Some(g) = granter.grant_mut(gref) {
                g.maps += 1;
            }
        }
        let d = self.dom(me)?;
        let id = d.next_map;
        d.next_map += 1;
        d.mappings
            .insert(id, grefs.iter().map(|&g| (from, incarnation, g)).collect());
        put_u64(body, id);
        Ok((id, pages))
    }

    fn release(&mut self, grants: MappedGrants) {
        for (from, incarnation, gref) in grants {
            if let Some(g) = self
                .doms
                .get_mut(&from)
                .filter(|d| d.incarnation == incarnation)
                .and_then(|d| d.grant_mut(gref))
            {
                g.maps = g.maps.saturating_sub(1);
            }
        }
    }

    fn unmap(&mut self, me: DomId, map_id: u64) -> Result<()> {
        let grants = self
            .dom(me)?
            .mappings
            .remove(&map_id)
            .ok_or(Error::InvalidArgument { what: "mapping id" })?;
        self.release(grants);
        Ok(())
    }

    /// Resolves one side of a copy to a page the caller may use that way.
    fn resolve(&self, me: DomId, ptr: CopyPtr, write: bool) -> Result<(Arc<Page>, usize)> {
        match ptr {
            CopyPtr::Local { frame, offset } => {
                let d = self
                    .doms
                    .get(&me)
                    .ok_or(Error::NoSuchDomain { domid: me })?;
                let page = d.frames.get(&frame.0).ok_or(Error::InvalidArgument {
                    what: "frame is not one of the caller's pages",
                })?;
                Ok((page.clone(), offset.into()))
            }
            CopyPtr::Foreign {
                domid,
                gref,
                offset,
            } => {
                let g = self
                    .doms
                    .get(&domid)
                    .and_then(|d| d.grant(gref))
                    .filter(|g| g.to == me)
                    .ok_or(Error::NoGrant { domid, gref })?;
                if write && g.access == Access::ReadOnly {
                    return Err(Error::ReadOnlyGrant { domid, gref });
                }
                Ok((g.page.clone(), offset.into()))
            }
        }
    }

    fn copy_one(&self, me: DomId, seg: &CopySeg) -> Result<()> {
        let len = usize::from(seg.len);
        let (src, soff) = self.resolve(me, seg.src, false)?;
        let (dst, doff) = self.resolve(me, seg.dst, true)?;
        if soff + len > PAGE_SIZE || doff + len > PAGE_SIZE {
            return Err(Error::InvalidArgument {
                what: "segment leaves its page",
            });
        }
        if Arc::ptr_eq(&src, &dst) {
            // Overlapping ranges of one page: go through a private copy.
            let mut bounce = [0u8; PAGE_SIZE];
            src.mem().read_into(soff, &mut bounce[..len])?;
            dst.mem().write_from(doff, &bounce[..len])
        } else {
            dst.mem().copy_from(doff, &src.mem(), soff, len)
        }
    }

    fn copy(&mut self, me: DomId, segs: &[CopySeg], body: &mut Vec<u8>) -> Result<()> {
        if segs.len() > MAX_COPY_SEGS {
            return Err(Error::InvalidArgument {
                what: "copy batch too large",
            });
        }
        self.dom(me)?;
        let c = self.counts.entry(me).or_default();
        c.copy_calls += 1;
        c.copy_segs += segs.len() as u64;
        c.copy_bytes += segs.iter().map(|s| u64::from(s.len)).sum::<u64>();
        put_u32(body, segs.len() as u32);
        for seg in segs {
            proto::encode_error(body, self.copy_one(me, seg));
        }
        Ok(())
    }

    fn alloc_unbound(&mut self, me: DomId, remote: DomId) -> Result<Port> {
        if remote >= DOMID_LIMIT {
            return Err(Error::InvalidArgument {
                what: "domain id out of range",
            });
        }
        Ok(Port(
            self.dom(me)?.alloc_port(PortState::Unbound { remote })?,
        ))
    }

    fn bind(&mut self, me: DomId, remote: DomId, remote_port: Port) -> Result<Port> {
        if self.dom(remote)?.port(remote_port.0) != (PortState::Unbound { remote: me }) {
            return Err(Error::InvalidArgument {
                what: "port is not unbound for the caller",
            });
        }
        let local = self.dom(me)?.alloc_port(PortState::Interdomain {
            remote,
            remote_port: remote_port.0,
        })?;
        self.dom(remote)?.ports[remote_port.0 as usize] = PortState::Interdomain {
            remote: me,
            remote_port: local,
        };
        Ok(Port(local))
    }

    fn notify(&mut self, me: DomId, port: Port) {
        // Like Xen, a trigger on a port whose peer has not bound (or has
        // closed) is dropped silently.
        let Some(d) = self.doms.get(&me) else { return };
        self.counts.entry(me).or_default().triggers += 1;
        if let PortState::Interdomain {
            remote,
            remote_port,
        } = d.port(port.0)
        {
            if let Some(r) = self.doms.get(&remote) {
                if r.port(remote_port)
                    == (PortState::Interdomain {
                        remote: me,
                        remote_port: port.0,
                    })
                {
                    r.fire(remote_port);
                }
            }
        }
    }

    fn close(&mut self, me: DomId, port: Port) -> Result<()> {
        let d = self.dom(me)?;
        let state = d.port(port.0);
        if state == PortState::Free {
            return Err(Error::BadPort { port });
        }
        d.ports[port.0 as usize] = PortState::Free;
        if let PortState::Interdomain {
            remote,
            remote_port,
        } = state
        {
            self.unbind_peer(me, port.0, remote, remote_port);
        }
        Ok(())
    }

    /// The peer of a closed port goes back to unbound, as on Xen.
    fn unbind_peer(&mut self, me: DomId, port: u32, remote: DomId, remote_port: u32) {
        if let Some(r) = self.doms.get_mut(&remote) {
            if r.port(remote_port)
                == (PortState::Interdomain {
                    remote: me,
                    remote_port: port,
                })
            {
                r.ports[remote_port as usize] = PortState::Unbound { remote: me };
            }
        }
    }

    fn died(&mut self, me: DomId, incarnation: u64) {
        if self.doms.get(&me).map(|d| d.incarnation) != Some(incarnation) {
            return;
        }
        let Some(d) = self.doms.remove(&me) else {
            return;
        };
        // A dead member unmaps everything; its own grants die with it (the
        // pages live on in whichever mappings other members still hold).
        for (_, grants) in d.mappings {
            self.release(grants);
        }
        for (port, state) in d.ports.iter().enumerate() {
            if let PortState::Interdomain {
                remote,
                remote_port,
            } = *state
            {
                self.unbind_peer(me, port as u32, remote, remote_port);
            }
        }
    }
}

struct Shared {
    /// How long a domain's thread watches for its next request before it
    /// sleeps (`XEN_SHARE_SIM_SPIN_NS`, as the domains).
    spin_ns: u64,
    state: Mutex<State>,
    /// Connections, to hang up on drop; a thread that ends closes its own.
    conns: Mutex<Vec<Weak<OwnedFd>>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running broker: a listening socket and one thread per domain.
/// Dropping it stops the broker and disconnects every domain.
pub struct Broker {
    path: PathBuf,
    listener: Arc<OwnedFd>,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Broker {
    /// Starts a broker listening at `socket_path` (replacing a stale
    /// socket file there), serving domains from threads of this process.
    ///
    /// Raises this process's descriptor limit to its hard maximum: the
    /// broker holds one descriptor per page.
    pub fn spawn(socket_path: impl AsRef<Path>) -> Result<Broker> {
        let spin_ns = crate::spin_from_env()?;
        let path = socket_path.as_ref().to_path_buf();
        sys::raise_fd_limit();
        let _ = std::fs::remove_file(&path);
        let listener = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(os("socket"))?;
        let addr = SocketAddrUnix::new(&path).map_err(os("socket path"))?;
        rustix::net::bind(&listener, &addr).map_err(os("bind of the broker socket"))?;
        rustix::net::listen(&listener, 64).map_err(os("listen"))?;
        let listener = Arc::new(listener);
        let shared = Arc::new(Shared {
            spin_ns,
            state: Mutex::new(State::default()),
            conns: Mutex::new(Vec::new()),
        });
        let accept = {
            let listener = listener.clone();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("sim-broker".into())
                .spawn(move || accept_loop(&listener, &shared))
                .map_err(|_| Error::OutOfMemory)?
        };
        Ok(Broker {
            path,
            listener,
            shared,
            accept: Some(accept),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Domains connected now.
    pub fn domains(&self) -> Vec<DomId> {
        let mut v: Vec<DomId> = self.shared.state().doms.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The triggers and grant copies each domain asked for so far.
    pub fn op_counts(&self) -> Vec<(DomId, OpCounts)> {
        let mut v: Vec<(DomId, OpCounts)> = self
            .shared
            .state()
            .counts
            .iter()
            .map(|(d, c)| (*d, *c))
            .collect();
        v.sort_unstable_by_key(|(d, _)| *d);
        v
    }

    /// [`op_counts`](Self::op_counts) summed over every domain.
    pub fn op_totals(&self) -> OpCounts {
        let mut t = OpCounts::default();
        for (_, c) in self.shared.state().counts.iter() {
            t.add(c);
        }
        t
    }

    /// Blocks until the broker stops (it stops only when dropped from
    /// another thread or the process ends): for a broker process.
    pub fn join(mut self) {
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // shutdown() wakes a thread blocked in accept() on Linux.
        let _ = rustix::net::shutdown(&*self.listener, rustix::net::Shutdown::Both);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .filter_map(|c| c.upgrade())
        {
            let _ = rustix::net::shutdown(&*c, rustix::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: &OwnedFd, shared: &Arc<Shared>) {
    loop {
        let sock = match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(s) => Arc::new(s),
            Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
            Err(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE) => {
                eprintln!("sim broker: out of descriptors, refusing a domain");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            Err(_) => return,
        };
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.retain(|c| c.strong_count() > 0);
            conns.push(Arc::downgrade(&sock));
        }
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("sim-broker-domain".into())
            .spawn(move || serve(&shared, &sock));
        if spawned.is_err() {
            eprintln!("sim broker: cannot start a thread for a domain");
        }
    }
}

/// Serves one domain until it disconnects or breaks the protocol.
fn serve(shared: &Shared, sock: &OwnedFd) {
    let mut buf = vec![0u8; MAX_MSG];
    let mut me: Option<(DomId, u64)> = None;
    let why = loop {
        let r = match sys::recv_spinning(sock.as_fd(), &mut buf, false, shared.spin_ns) {
            Ok(r) => r,
            Err(e) => break Some(format!("{e}")),
        };
        if r.closed {
            break None;
        }
        if r.truncated {
            break Some("message larger than the protocol allows".into());
        }
        let req = match Request::decode(&buf[..r.len]) {
            Ok(q) => q,
            Err(e) => break Some(format!("{e}")),
        };
        match handle(shared, sock.as_fd(), &mut me, req) {
            Ok(()) => {}
            Err(e) => break Some(format!("{e}")),
        }
    };
    if let Some((d, incarnation)) = me {
        if let Some(why) = why {
            eprintln!("sim broker: dropping domain {d}: {why}");
        }
        shared.state().died(d, incarnation);
    }
}

/// Executes one request and sends its reply. `Err` only when the
/// connection itself is unusable.
fn handle(
    shared: &Shared,
    sock: BorrowedFd<'_>,
    me: &mut Option<(DomId, u64)>,
    req: Request,
) -> Result<()> {
    let mut body = Vec::new();
    let Some((domid, _)) = *me else {
        let Request::Hello { domid } = req else {
            return Err(Error::InvalidArgument {
                what: "first request must be Hello",
            });
        };
        let r = shared.state().hello(domid);
        return match r {
            Ok((incarnation, ev, pending)) => {
                *me = Some((domid, incarnation));
                put_u32(&mut body, MAX_PORTS);
                reply(sock, Ok(()), &body, Fds::Owned(vec![ev, pending]))
            }
            Err(e) => {
                reply(sock, Err(e), &[], Fds::None)?;
                Err(e)
            }
        };
    };
    let has_reply = req.has_reply();
    let r: Result<Fds> = match req {
        Request::Hello { .. } => Err(Error::InvalidArgument {
            what: "invalid request to the simulation broker",
        }),
        Request::Alloc { count } => {
            if count == 0 || count as usize > MAX_PAGES_PER_REQ {
                Err(Error::InvalidArgument {
                    what: "page count (1..=1024 per request)",
                })
            } else {
                // Creating pages needs no lock; other domains go on.
                (0..count)
                    .map(|_| Page::new())
                    .collect::<Result<Vec<_>>>()
                    .and_then(|pages| shared.state().alloc(domid, pages, &mut body))
            }
        }
        Request::Free { frames } => shared.state().free(domid, &frames).map(|()| Fds::None),
        Request::Grant { frame, to, access } => {
            shared.state().grant(domid, frame, to, access).map(|g| {
                put_u32(&mut body, g.0);
                Fds::None
            })
        }
        Request::Revoke { gref } => shared.state().revoke(domid, gref).map(|()| Fds::None),
        Request::Map {
            from,
            access,
            grefs,
        } => shared
            .state()
            .map(domid, from, access, &grefs, &mut body)
            .and_then(|(id, pages)| match access {
                Access::ReadWrite => Ok(Fds::Pages(pages)),
                Access::ReadOnly => pages
                    .iter()
                    .map(|p| sys::reopen_readonly(p.fd.as_fd()))
                    .collect::<Result<Vec<_>>>()
                    .map(Fds::Owned)
                    .inspect_err(|_| {
                        let _ = shared.state().unmap(domid, id);
                    }),
            }),
        Request::Unmap { map_id } => shared.state().unmap(domid, map_id).map(|()| Fds::None),
        Request::Copy { segs } => shared
            .state()
            .copy(domid, &segs, &mut body)
            .map(|()| Fds::None),
        Request::AllocUnbound { remote } => shared.state().alloc_unbound(domid, remote).map(|p| {
            put_u32(&mut body, p.0);
            Fds::None
        }),
        Request::Bind {
            remote,
            remote_port,
        } => shared.state().bind(domid, remote, remote_port).map(|p| {
            put_u32(&mut body, p.0);
            Fds::None
        }),
        Request::Notify { port } => {
            shared.state().notify(domid, port);
            Ok(Fds::None)
        }
        Request::Close { port } => shared.state().close(domid, port).map(|()| Fds::None),
    };
    if !has_reply {
        return Ok(());
    }
    match r {
        Ok(fds) => reply(sock, Ok(()), &body, fds),
        Err(e) => reply(sock, Err(e), &[], Fds::None),
    }
}

/// Sends a reply: status, descriptor total, body; descriptors beyond the
/// first datagram's share follow in one-byte datagrams (a zero-byte
/// datagram would read as end of stream).
fn reply(sock: BorrowedFd<'_>, status: Result<()>, body: &[u8], fds: Fds) -> Result<()> {
    let borrowed: Vec<BorrowedFd<'_>> = match &fds {
        Fds::None => Vec::new(),
        Fds::Pages(p) => p.iter().map(|p| p.fd.as_fd()).collect(),
        Fds::Owned(v) => v.iter().map(|f| f.as_fd()).collect(),
    };
    let mut msg = Vec::with_capacity(proto::ERROR_LEN + 4 + body.len());
    proto::encode_error(&mut msg, status);
    put_u32(&mut msg, borrowed.len() as u32);
    msg.extend_from_slice(body);
    let mut chunks = borrowed.chunks(MAX_FDS_PER_MSG);
    sys::send(sock, &msg, chunks.next().unwrap_or(&[]))?;
    for chunk in chunks {
        sys::send(sock, &[0xfd], chunk)?;
    }
    Ok(())
}
