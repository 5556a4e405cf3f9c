//! The `vbd` store: blkback-uk's own Xen disks, as a standard block
//! frontend of dom0's blkback (`xen/io/blkif.h`, the ABI authority).
//!
//! The disks are the ordinary `disk = [...]` of blkback-uk's xl config;
//! libxl creates `device/vbd/<vdev>/` for each. [`connect`] runs the
//! xenbus frontend handshake for one of them:
//!
//! 1. read `backend` and `backend-id` of the device, and wait (polling,
//!    bounded) for the backend's `state` to be InitWait (2) or later;
//! 2. grant one ring page and its indirect pages (one per ring slot) to
//!    the backend (the bounce pages were granted to that backend domain
//!    once, [`VbdBounce`]), allocate an unbound event channel, write
//!    `ring-ref`, `event-channel`, `protocol` = `x86_64-abi`,
//!    `feature-persistent` = 1, then `state` = Initialised (3);
//! 3. wait (bounded) for the backend's Connected (4), read `sectors`,
//!    `sector-size`, `info` (read-only bit), `feature-flush-cache`,
//!    `feature-barrier`, `feature-persistent`,
//!    `feature-max-indirect-segments`, and write `state` = Connected (4).
//!
//! **Persistent grants** (blkif.h "feature-persistent"): the frontend's
//! part is to use a bounded set of grants over and over, which this store
//! always does (the pages granted in [`VbdPages::new`] and
//! [`VbdBounce::new`], nothing else, for the store's life), so it says 1
//! without waiting for the backend's key (Linux's xen-blkback writes its
//! own only in `connect()`, after our Initialised; both must say 1). The
//! backend then maps each page once and keeps it mapped (Linux: up to
//! `max_persistent_grants`, 1056 per ring, the least used unmapped by its
//! LRU purge beyond that or after 60 s unused: transparent to us), instead
//! of mapping and unmapping every page of every request. It can then write a page at any time, which changes
//! nothing here: the bounce pages were always treated as backend-writable
//! (data is copied in before a request, out once after its answer) and
//! hold nothing but data of disks that same backend domain serves, which
//! it has anyway.
//!
//! **One set of bounce pages per backend domain** ([`VbdBounce`]), lent to
//! each of its vbds for the length of one batch: [`Store::execute`] is
//! synchronous (a batch is answered before the next starts, whatever the
//! disk), so only one vbd ever has pages in flight, and one large set
//! (1024 pages, 4 MiB: four 1 MiB requests in flight) costs what a small
//! one per disk would. A domain serves its pages to the backend it
//! granted them to only: vbds of another backend get their own set.
//!
//! **Indirect segments** (blkif.h "feature-max-indirect-segments"): with
//! more than 11 offered, a read or write of more than 11 pages goes as
//! one `BLKIF_OP_INDIRECT` request of up to min(offer, 256, bounce pages)
//! segments, its segment list in its ring slot's own indirect page
//! (granted once like the bounce pages; read-write because Linux maps a
//! persistent grant writable). 1 MiB is one request instead of 24.
//!
//! The store then runs each batch ([`Store::execute`]) as blkif requests:
//! reads and writes split into requests of up to 11 pages (or the indirect
//! segments in use), data through the backend's bounce pages, at most a
//! ring's worth (32) and the bounce pages' worth in flight. Responses are
//! polled (the event channel only wakes a sleep), with a deadline per
//! batch.
//!
//! Durability: blkif has no FUA bit, so a FUA write is followed by a
//! `BLKIF_OP_FLUSH_DISKCACHE` (or a zero-segment `BLKIF_OP_WRITE_BARRIER`
//! when only `feature-barrier` is offered) issued after the write and
//! everything before it completed; the write's result is set only after
//! that flush answered. A flush of the batch is issued only after every
//! earlier operation completed, and nothing after it starts before it
//! answered. A backend offering neither feature has no volatile cache to
//! flush (blkif.h: writes are durable when answered); the store then
//! offers neither flush nor FUA, so the server does not either.
//!
//! Everything the backend writes is hostile: xenstore values are parsed
//! with bounds (numbers, paths), the ring's producer index is checked
//! against what is outstanding (`xen_pv::blkif`), each response's
//! id must name a request in flight with the same operation (an indirect
//! request's `indirect_op`, which Linux's blkback echoes, or
//! `BLKIF_OP_INDIRECT`); a value of `feature-max-indirect-segments` that is
//! not a number, or more than we use, is none or our bound. A backend
//! that breaks the protocol or misses the deadline leaves the store
//! broken: the bounce pages it had in flight may still be written, so
//! they are never reused (the set's other vbds go on with the rest, and a
//! request that no longer fits fails with EIO), and every later operation
//! of the broken store fails with EIO.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use share_hal::platform::PAGE_SIZE;
use share_hal::platform::{Access, PageBlock, Platform, Port};
use share_hal::{DomId, Error, GrantRef, Result};
use xen_pv::abi::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ,
    BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_OKAY,
    BLKIF_SEGMENT_SIZE, VDISK_READONLY, XENBUS_STATE_CONNECTED, XENBUS_STATE_INITIALISED,
    XENBUS_STATE_INIT_WAIT,
};
use xen_pv::blkif::{
    indirect_pages_for, BlkifIndirectRequest, BlkifRequest, BlkifResponse, BlkifSegment, FrontRing,
    FrontState, RING_SIZE,
};
use xen_pv::xenbus::{self, DeviceError, Frontend};

use core::any::Any;
use core::cell::RefCell;

use crate::store::{byte_range, Io, IoKind, SharedIo, Store, StoreError, StoreInfo, SECTOR_SIZE};
use share_hal::SharedMem;

pub use xen_pv::xenbus::Xenbus;

/// The event channel to the backend, as the store uses it inside a store
/// call (without the platform).
pub trait RingEvents {
    fn notify(&mut self) -> Result<()>;
    /// Sleeps until the backend notifies or `deadline_ns` passes
    /// (`Err(TimedOut)`); may return early.
    fn wait(&mut self, deadline_ns: u64) -> Result<()>;
    fn now_ns(&self) -> u64;
}

#[cfg(all(target_arch = "x86_64", feature = "vbd"))]
impl RingEvents for share_pvh::Doorbell {
    fn notify(&mut self) -> Result<()> {
        share_pvh::Doorbell::notify(self)
    }
    fn wait(&mut self, deadline_ns: u64) -> Result<()> {
        share_pvh::Doorbell::wait(self, deadline_ns)
    }
    fn now_ns(&self) -> u64 {
        share_pvh::time::now_ns()
    }
}

/// How long the backend may take to reach a state, and a batch to finish:
/// dom0 in the nested test rig is slow.
pub const HANDSHAKE_TIMEOUT_NS: u64 = 120_000_000_000;
pub const BATCH_TIMEOUT_NS: u64 = 60_000_000_000;

/// How the backend makes writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushKind {
    /// `feature-flush-cache`: `BLKIF_OP_FLUSH_DISKCACHE`.
    FlushCache,
    /// `feature-barrier` only: a zero-segment `BLKIF_OP_WRITE_BARRIER`.
    Barrier,
    /// Neither: the backend's writes are durable when answered.
    None,
}

/// Segments of one indirect request at most (1 MiB: one indirect page;
/// Linux's blkback offers 256 by default and refuses more than it offers).
pub const MAX_INDIRECT_SEGMENTS: usize = 256;
/// Indirect pages each ring slot owns (granted once, like the bounce pages).
const INDIRECT_PAGES_PER_SLOT: usize = indirect_pages_for(MAX_INDIRECT_SEGMENTS);

/// The disk as the backend describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbdInfo {
    /// The device directory, `device/vbd/<vdev>`.
    pub dev: String,
    /// `virtual-device` number (the requests' `handle`).
    pub vdev: u16,
    pub backend: DomId,
    pub sectors: u64,
    pub sector_size: u32,
    pub read_only: bool,
    pub flush: FlushKind,
    /// Both ends said `feature-persistent` = 1: the backend keeps our
    /// grants mapped between requests (we only ever use the same ones).
    pub persistent: bool,
    /// Segments per `BLKIF_OP_INDIRECT` request: the backend's
    /// `feature-max-indirect-segments`, at most [`MAX_INDIRECT_SEGMENTS`];
    /// 0 (not offered, or not more than 11): no indirect requests.
    pub max_indirect_segments: u16,
}

/// Bounce pages granted once to one backend domain, lent to each of its
/// vbds for one batch at a time (module doc). Shared as [`SharedBounce`].
pub struct VbdBounce<Pg> {
    backend: DomId,
    /// Lent whole to the disk server while every page is free
    /// ([`Store::lent_pages`]).
    pages: Rc<Pg>,
    grefs: Vec<GrantRef>,
    /// Pages no request holds. A page a broken store had in flight is
    /// never put back.
    free: Vec<usize>,
}

/// One backend domain's bounce pages, as each of its vbd stores holds them.
pub type SharedBounce<Pg> = Rc<RefCell<VbdBounce<Pg>>>;

impl<Pg: PageBlock> VbdBounce<Pg> {
    /// Allocates `count` pages and grants each to `backend` (read-write:
    /// reads land in them). On failure, what was granted stays granted and
    /// its pages are leaked, as in [`VbdPages::new`].
    pub fn new<P: Platform<Pages = Pg>>(
        p: &mut P,
        backend: DomId,
        count: usize,
    ) -> Result<SharedBounce<Pg>> {
        if count < BLKIF_MAX_SEGMENTS_PER_REQUEST {
            return Err(Error::InvalidArgument {
                what: "vbd store: fewer bounce pages than one request's 11 segments",
            });
        }
        let pages = p.alloc_pages(count)?;
        let grefs = grant_each(p, &pages, count, backend)?;
        Ok(Rc::new(RefCell::new(VbdBounce {
            backend,
            pages: Rc::new(pages),
            grefs,
            free: (0..count).rev().collect(),
        })))
    }

    pub fn backend(&self) -> DomId {
        self.backend
    }

    /// Pages of the set (granted).
    pub fn count(&self) -> usize {
        self.grefs.len()
    }

    /// Pages free now: the set less what broken stores left in flight.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// No page is held by a request or was kept by a broken store's
    /// backend: the set may be lent whole.
    fn all_free(&self) -> bool {
        self.free.len() == self.count()
    }

    /// Whether `mem` is this set's pages, whole (the server lent them back).
    fn is(&self, mem: &SharedMem<'_>) -> bool {
        let own = self.pages.mem();
        mem.as_ptr() == own.as_ptr() && mem.len() == own.len()
    }
}

/// What the handshake needs of a vbd's own pages: the ring page and the
/// indirect pages, granted to the backend.
pub struct VbdPages<Pg> {
    backend: DomId,
    ring_page: Pg,
    ring_ref: GrantRef,
    /// [`INDIRECT_PAGES_PER_SLOT`] per ring slot, slot `i`'s first at
    /// `i * INDIRECT_PAGES_PER_SLOT`: segment lists, nothing else.
    indirect: Pg,
    indirect_grefs: Vec<GrantRef>,
    port: Port,
}

impl<Pg: PageBlock> VbdPages<Pg> {
    /// Allocates and grants the ring page and the indirect pages to
    /// `backend`, and an unbound event channel for it. On failure, what
    /// was granted stays granted and its pages are leaked (never reused),
    /// which is what a half-made frontend must do.
    pub fn new<P: Platform<Pages = Pg>>(p: &mut P, backend: DomId) -> Result<Self> {
        let ring_page = p.alloc_pages(1)?;
        let frame = ring_page.frame(0).ok_or(Error::OutOfMemory)?;
        let ring_ref = p.grant(frame, backend, Access::ReadWrite)?;
        // Read-write though the backend only reads them: Linux's blkback
        // maps a grant it keeps (persistent) writable whatever the request.
        let n_indirect = RING_SIZE as usize * INDIRECT_PAGES_PER_SLOT;
        let indirect = p.alloc_pages(n_indirect)?;
        let indirect_grefs = grant_each(p, &indirect, n_indirect, backend)?;
        let port = p.alloc_unbound(backend)?;
        Ok(VbdPages {
            backend,
            ring_page,
            ring_ref,
            indirect,
            indirect_grefs,
            port,
        })
    }

    pub fn port(&self) -> Port {
        self.port
    }

    pub fn ring_ref(&self) -> GrantRef {
        self.ring_ref
    }

    pub fn backend(&self) -> DomId {
        self.backend
    }
}

/// Grants the first `count` pages of `pages` to `backend`, read-write,
/// one grant each. On failure the grants made stay made (the callers leak
/// the pages: a half-made frontend never reuses them).
fn grant_each<P: Platform>(
    p: &mut P,
    pages: &P::Pages,
    count: usize,
    backend: DomId,
) -> Result<Vec<GrantRef>> {
    let mut grefs = Vec::with_capacity(count);
    for i in 0..count {
        let frame = pages.frame(i).ok_or(Error::OutOfMemory)?;
        grefs.push(p.grant(frame, backend, Access::ReadWrite)?);
    }
    Ok(grefs)
}

/// Why a disk could not be connected (the device and what failed).
pub type VbdError = DeviceError;

/// The vbd devices of this domain, in the order xenstore lists them
/// (`device/vbd/`: libxl creates them in the order of the xl config).
pub fn devices<X: Xenbus>(xs: &mut X) -> Result<Vec<String>> {
    Ok(xenbus::devices(xs, "vbd")?
        .into_iter()
        .map(|(_, path)| path)
        .collect())
}

/// Runs the frontend handshake for `dev` (`device/vbd/<vdev>`) with the
/// pages from [`VbdPages::new`], granted to the backend `dev` names.
/// `sleep(deadline)` pauses between polls of the backend's state.
pub fn handshake<X: Xenbus, Pg: PageBlock>(
    xs: &mut X,
    dev: &str,
    pages: &VbdPages<Pg>,
    now: &dyn Fn() -> u64,
    sleep: &mut dyn FnMut(u64),
) -> core::result::Result<VbdInfo, VbdError> {
    let vdev = xenbus::device_number(dev).ok_or_else(|| {
        xenbus::device_error(dev, "the device name is not a virtual-device number")
    })?;
    let mut f = Frontend::open(xs, dev, HANDSHAKE_TIMEOUT_NS, now, sleep)?;
    let backend = f.backend();
    f.wait_state(XENBUS_STATE_INIT_WAIT, "ready (InitWait)")?;
    f.write("ring-ref", &format!("{}", pages.ring_ref.0))?;
    f.write("event-channel", &format!("{}", pages.port.0))?;
    f.write("protocol", "x86_64-abi")?;
    // We only ever use the grants made in VbdPages::new, which is all
    // persistent grants ask of a frontend; Linux's blkback writes its own
    // `feature-persistent` only when it connects, after this, so ours is
    // said unconditionally and the backend's read below.
    f.write("feature-persistent", "1")?;
    f.write("state", &format!("{XENBUS_STATE_INITIALISED}"))?;
    f.wait_state(XENBUS_STATE_CONNECTED, "connected")?;
    let sectors = f
        .backend_num("sectors")?
        .ok_or_else(|| f.error("the backend gave no sectors"))?;
    let sector_size = f.backend_num("sector-size")?.unwrap_or(512);
    if sector_size != SECTOR_SIZE as u64 {
        // Requests would have to be aligned to it; not done (yet).
        return Err(f.error(format!("sector-size {sector_size} (only 512 is served)")));
    }
    let info = f.backend_num("info")?.unwrap_or(0);
    let flush = if f.backend_num("feature-flush-cache")?.unwrap_or(0) == 1 {
        FlushKind::FlushCache
    } else if f.backend_num("feature-barrier")?.unwrap_or(0) == 1 {
        FlushKind::Barrier
    } else {
        FlushKind::None
    };
    let persistent = f.offered("feature-persistent");
    // Hostile like every backend value: malformed or absent is "none",
    // anything above our own bound is our bound.
    let max_indirect_segments = match f.backend_num("feature-max-indirect-segments") {
        Ok(Some(n)) if n > BLKIF_MAX_SEGMENTS_PER_REQUEST as u64 => {
            n.min(MAX_INDIRECT_SEGMENTS as u64) as u16
        }
        _ => 0,
    };
    f.write("state", &format!("{XENBUS_STATE_CONNECTED}"))?;
    Ok(VbdInfo {
        dev: String::from(dev),
        vdev,
        backend,
        sectors,
        sector_size: sector_size as u32,
        read_only: info & u64::from(VDISK_READONLY) != 0,
        flush,
        persistent,
        max_indirect_segments,
    })
}

/// One blkif request in flight.
#[derive(Clone)]
struct InFlight {
    id: u64,
    /// The operation (an indirect request's `indirect_op`).
    op: u8,
    /// Sent as `BLKIF_OP_INDIRECT`.
    indirect: bool,
    /// The batch operation it belongs to (None: a flush of the store's own).
    io: Option<usize>,
    /// Byte offset in the operation's buffer, and length.
    buf_off: usize,
    len: usize,
    /// Bounce pages it holds.
    pages: Vec<usize>,
    /// The pages are where the server put the data (lent), not taken from
    /// the free list: nothing to copy, nothing to give back.
    in_place: bool,
}

/// A chunk of a read or write still to be submitted.
#[derive(Clone, Copy)]
struct Chunk {
    io: usize,
    write: bool,
    sector: u64,
    buf_off: usize,
    len: usize,
}

/// Counters, for the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VbdStats {
    pub requests: u64,
    /// Of which `BLKIF_OP_INDIRECT`.
    pub indirect: u64,
    /// Of which on pages lent to the server (no copy in this domain).
    pub in_place: u64,
    pub flushes: u64,
    pub errors: u64,
}

/// A connected vbd disk.
pub struct VbdStore<Pg: PageBlock, E: RingEvents> {
    pages: VbdPages<Pg>,
    ring: FrontState,
    events: E,
    info: VbdInfo,
    slots: Vec<Option<InFlight>>,
    bounce: SharedBounce<Pg>,
    next_id: u64,
    /// Pages one request may carry: 11, or the indirect segments in use.
    max_pages: usize,
    broken: Option<&'static str>,
    batch_timeout_ns: u64,
    stats: VbdStats,
}

const EIO: i32 = 5;
const ETIMEDOUT: i32 = 110;

impl<Pg: PageBlock, E: RingEvents> VbdStore<Pg, E> {
    /// A store over the connected ring (`pages` after [`handshake`]),
    /// its data through `bounce`, the set granted to the same backend.
    pub fn new(
        pages: VbdPages<Pg>,
        info: VbdInfo,
        events: E,
        bounce: SharedBounce<Pg>,
    ) -> Result<Self> {
        if bounce.borrow().backend != pages.backend {
            return Err(Error::InvalidArgument {
                what: "vbd store: bounce pages granted to another backend domain",
            });
        }
        let ring = FrontRing::init(pages.ring_page.mem())?.park();
        let n = bounce.borrow().count();
        let max_pages = if usize::from(info.max_indirect_segments) > BLKIF_MAX_SEGMENTS_PER_REQUEST
        {
            usize::from(info.max_indirect_segments)
                .min(MAX_INDIRECT_SEGMENTS)
                .min(n)
        } else {
            BLKIF_MAX_SEGMENTS_PER_REQUEST
        };
        Ok(VbdStore {
            pages,
            ring,
            events,
            info,
            slots: vec![None; xen_pv::blkif::RING_SIZE as usize],
            bounce,
            next_id: 1,
            max_pages,
            broken: None,
            batch_timeout_ns: BATCH_TIMEOUT_NS,
            stats: VbdStats::default(),
        })
    }

    pub fn vbd(&self) -> &VbdInfo {
        &self.info
    }

    pub fn stats(&self) -> VbdStats {
        self.stats
    }

    /// Why the store refuses all I/O, if it does.
    pub fn broken(&self) -> Option<&'static str> {
        self.broken
    }

    pub fn port(&self) -> Port {
        self.pages.port
    }

    /// Shortens the deadline of a batch (tests).
    pub fn set_batch_timeout(&mut self, ns: u64) {
        self.batch_timeout_ns = ns;
    }

    fn break_with(&mut self, why: &'static str) {
        if self.broken.is_none() {
            log::error!(
                "vbd {}: {why}; the disk is out of service (its pages stay with the backend)",
                self.info.dev
            );
            self.broken = Some(why);
        }
    }

    fn id_for(&mut self, slot: usize) -> u64 {
        // Slot in the low byte, a sequence above: a stale or replayed
        // response never names a live request.
        let id = (self.next_id << 8) | slot as u64;
        self.next_id = self.next_id.wrapping_add(1) & ((1 << 56) - 1);
        id
    }

    /// Submits one request holding `pages`; the caller checked that a slot
    /// is free. With more than 11 segments it goes as `BLKIF_OP_INDIRECT`,
    /// the segments in the slot's own indirect page(s).
    fn submit(&mut self, mut req: BlkifRequest, segs: &[BlkifSegment], f: InFlight) -> Result<()> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(Error::InvalidArgument {
                what: "vbd: no free slot",
            })?;
        req.id = self.id_for(slot);
        let indirect = segs.len() > BLKIF_MAX_SEGMENTS_PER_REQUEST;
        let pushed = if indirect {
            if segs.len() > self.max_pages || segs.len() > MAX_INDIRECT_SEGMENTS {
                return Err(Error::InvalidArgument {
                    what: "vbd: more segments than the backend takes",
                });
            }
            let mut list = Vec::with_capacity(segs.len() * BLKIF_SEGMENT_SIZE);
            for s in segs {
                list.extend_from_slice(&s.emit());
            }
            // One volatile copy into the slot's pages (contiguous in
            // `indirect`), which nothing else uses while the slot is taken.
            let first = slot * INDIRECT_PAGES_PER_SLOT;
            self.pages
                .indirect
                .mem()
                .write_from(first * PAGE_SIZE, &list)?;
            let mut ind = BlkifIndirectRequest {
                indirect_op: req.operation,
                nr_segments: segs.len() as u16,
                id: req.id,
                sector: req.sector,
                handle: req.handle,
                indirect_grefs: [0; xen_pv::abi::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
            };
            for k in 0..indirect_pages_for(segs.len()) {
                ind.indirect_grefs[k] = self.pages.indirect_grefs[first + k].0;
            }
            let mut ring = FrontRing::resume(self.pages.ring_page.mem(), self.ring)?;
            let pushed = ring.push_indirect(&ind);
            self.ring = ring.park();
            pushed
        } else {
            req.nr_segments = segs.len() as u8;
            req.segments[..segs.len()].copy_from_slice(segs);
            let mut ring = FrontRing::resume(self.pages.ring_page.mem(), self.ring)?;
            let pushed = ring.push(&req);
            self.ring = ring.park();
            pushed
        };
        if !pushed? {
            return Err(Error::InvalidArgument {
                what: "vbd: ring full",
            });
        }
        if f.in_place && self.stats.in_place == 0 {
            log::info!(
                "vbd {}: requests now name the pages the server put the data in (no copy here)",
                self.info.dev
            );
        }
        self.stats.in_place += u64::from(f.in_place);
        self.slots[slot] = Some(InFlight {
            id: req.id,
            indirect,
            ..f
        });
        self.stats.requests += 1;
        self.stats.indirect += u64::from(indirect);
        Ok(())
    }

    fn publish(&mut self) -> Result<()> {
        let mut ring = FrontRing::resume(self.pages.ring_page.mem(), self.ring)?;
        let notify = ring.publish();
        self.ring = ring.park();
        if notify? {
            self.events.notify()?;
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Waits for and returns the next completions (at least one), matched
    /// to their requests. `Err`: the store is broken.
    fn complete(&mut self, deadline: u64) -> core::result::Result<Vec<(InFlight, i16)>, ()> {
        loop {
            let mut rsps = Vec::new();
            let mut ring = match FrontRing::resume(self.pages.ring_page.mem(), self.ring) {
                Ok(r) => r,
                Err(_) => {
                    self.break_with("the ring page is unusable");
                    return Err(());
                }
            };
            let taken = ring.take(&mut rsps);
            let waiting = if rsps.is_empty() && taken.is_ok() {
                ring.prepare_wait()
            } else {
                Ok(false)
            };
            self.ring = ring.park();
            if taken.is_err() || waiting.is_err() {
                self.break_with("the backend published more responses than requests");
                return Err(());
            }
            if !rsps.is_empty() {
                let mut done = Vec::with_capacity(rsps.len());
                for r in rsps {
                    match self.match_response(&r) {
                        Some(f) => done.push((f, r.status)),
                        None => {
                            self.break_with("the backend answered a request not in flight (or with another operation)");
                            return Err(());
                        }
                    }
                }
                return Ok(done);
            }
            if waiting == Ok(true) {
                continue;
            }
            match self.events.wait(deadline) {
                Ok(()) => {}
                Err(Error::TimedOut) => {
                    self.break_with("the backend did not answer within the deadline");
                    return Err(());
                }
                Err(_) => {
                    self.break_with("waiting for the backend failed");
                    return Err(());
                }
            }
        }
    }

    fn match_response(&mut self, r: &BlkifResponse) -> Option<InFlight> {
        let slot = (r.id & 0xff) as usize;
        let f = self.slots.get_mut(slot)?;
        match f {
            // Linux's blkback echoes an indirect request's indirect_op,
            // blkif.h would have BLKIF_OP_INDIRECT: either is taken.
            Some(x)
                if x.id == r.id
                    && (x.op == r.operation
                        || (x.indirect && r.operation == BLKIF_OP_INDIRECT)) =>
            {
                f.take()
            }
            _ => None,
        }
    }

    /// Runs the reads and writes of `ios[range]` (no flush among them)
    /// with as many requests in flight as ring and bounce pages allow.
    fn run_group<B: Batch>(
        &mut self,
        b: &mut VbdBounce<Pg>,
        ios: &mut B,
        range: core::ops::Range<usize>,
        deadline: u64,
    ) {
        let capacity = self.info.sectors;
        let mut chunks = Vec::new();
        let mut failed: Vec<Option<StoreError>> = vec![None; ios.count()];
        // Chunks of each operation not yet answered.
        let mut remaining = vec![0usize; ios.count()];
        for i in range.clone() {
            let (kind, sector, bytes) = (ios.kind(i), ios.sector(i), ios.bytes(i));
            let write = match kind {
                IoKind::Read => false,
                IoKind::Write { .. } => true,
                IoKind::Flush => continue,
                IoKind::Discard { .. } => {
                    failed[i] = Some(StoreError::Unsupported);
                    continue;
                }
            };
            if write && self.info.read_only {
                failed[i] = Some(StoreError::ReadOnly);
                continue;
            }
            if byte_range(sector, bytes, capacity).is_err() {
                failed[i] = Some(StoreError::OutOfRange);
                continue;
            }
            // Nothing of ours is in flight between groups: every page the
            // set still has is free, fewer than it was granted only when a
            // broken store kept some. Requests shrink to what is left.
            let max = self.max_pages.min(b.free.len()) * PAGE_SIZE;
            if max == 0 {
                failed[i] = Some(StoreError::Io { errno: EIO });
                continue;
            }
            let mut off = 0;
            while off < bytes {
                let len = (bytes - off).min(max);
                chunks.push(Chunk {
                    io: i,
                    write,
                    sector: sector + (off / SECTOR_SIZE) as u64,
                    buf_off: off,
                    len,
                });
                off += len;
                remaining[i] += 1;
            }
        }
        let in_place = ios.in_place();
        let mut next = 0;
        while next < chunks.len() || self.in_flight() > 0 {
            if self.broken.is_some() {
                break;
            }
            // Submit what fits.
            let mut submitted = false;
            while next < chunks.len() {
                let c = chunks[next];
                let npages = c.len.div_ceil(PAGE_SIZE);
                if self.in_flight() == self.slots.len() {
                    break;
                }
                let pages: Vec<usize> = if in_place {
                    // The operation's own pages of the set, where the
                    // server put (or wants) its data.
                    match ios.first_page(c.io, c.buf_off, c.len, b.count()) {
                        Some(first) => (first..first + npages).collect(),
                        None => {
                            remaining[c.io] -= 1;
                            failed[c.io].get_or_insert(StoreError::Io { errno: EIO });
                            next += 1;
                            continue;
                        }
                    }
                } else {
                    if b.free.len() < npages {
                        if self.in_flight() > 0 {
                            break;
                        }
                        // Nothing of ours in flight to give pages back: the
                        // set lost them to a broken store, for good.
                        remaining[c.io] -= 1;
                        failed[c.io].get_or_insert(StoreError::Io { errno: EIO });
                        next += 1;
                        continue;
                    }
                    (0..npages).filter_map(|_| b.free.pop()).collect()
                };
                let mut req = BlkifRequest::bare(
                    if c.write {
                        BLKIF_OP_WRITE
                    } else {
                        BLKIF_OP_READ
                    },
                    self.info.vdev,
                    0,
                );
                req.sector = c.sector;
                let mut segs = Vec::with_capacity(npages);
                let mut ok = true;
                for (k, &pg) in pages.iter().enumerate() {
                    let seg_len = (c.len - k * PAGE_SIZE).min(PAGE_SIZE);
                    segs.push(BlkifSegment {
                        gref: b.grefs[pg].0,
                        first_sect: 0,
                        last_sect: (seg_len / SECTOR_SIZE - 1) as u8,
                    });
                    if c.write && !in_place {
                        let at = c.buf_off + k * PAGE_SIZE;
                        ok &= ios
                            .data_out(c.io, at, &b.pages.mem(), pg * PAGE_SIZE, seg_len)
                            .is_ok();
                    }
                }
                let f = InFlight {
                    id: 0,
                    op: req.operation,
                    indirect: false,
                    io: Some(c.io),
                    buf_off: c.buf_off,
                    len: c.len,
                    pages,
                    in_place,
                };
                if !ok || self.submit(req, &segs, f.clone()).is_err() {
                    if !in_place {
                        b.free.extend(f.pages);
                    }
                    remaining[c.io] -= 1;
                    failed[c.io].get_or_insert(StoreError::Io { errno: EIO });
                } else {
                    submitted = true;
                }
                next += 1;
            }
            if submitted && self.publish().is_err() {
                self.break_with("notifying the backend failed");
                break;
            }
            if self.in_flight() == 0 {
                continue;
            }
            let Ok(done) = self.complete(deadline) else {
                break;
            };
            for (f, status) in done {
                let Some(i) = f.io else { continue };
                remaining[i] = remaining[i].saturating_sub(1);
                if status != BLKIF_RSP_OKAY {
                    self.stats.errors += 1;
                    failed[i].get_or_insert(if status == BLKIF_RSP_EOPNOTSUPP {
                        StoreError::Unsupported
                    } else {
                        StoreError::Io { errno: EIO }
                    });
                } else if f.op == BLKIF_OP_READ && !f.in_place {
                    // Copied once out of the (backend-writable) bounce pages.
                    for (k, &pg) in f.pages.iter().enumerate() {
                        let at = f.buf_off + k * PAGE_SIZE;
                        let seg_len = (f.len - k * PAGE_SIZE).min(PAGE_SIZE);
                        if ios
                            .data_in(i, at, &b.pages.mem(), pg * PAGE_SIZE, seg_len)
                            .is_err()
                        {
                            failed[i].get_or_insert(StoreError::Io { errno: EIO });
                        }
                    }
                }
                if !f.in_place {
                    b.free.extend(f.pages);
                }
            }
        }
        if self.broken.is_some() {
            // Lent pages the backend still holds are the set's no more
            // (those of the free list left it when taken).
            let had = b.free.len();
            for f in self.slots.iter().flatten().filter(|f| f.in_place) {
                b.free.retain(|pg| !f.pages.contains(pg));
            }
            if b.free.len() < had {
                log::warn!(
                    "vbd {}: {} bounce pages stay with backend domain {}; its vbds copy through the {} left, lent no more",
                    self.info.dev,
                    had - b.free.len(),
                    b.backend,
                    b.free.len()
                );
            }
        }
        let lost = self.broken.map(|why| {
            if why.contains("deadline") {
                StoreError::Io { errno: ETIMEDOUT }
            } else {
                StoreError::Io { errno: EIO }
            }
        });
        for i in range {
            if matches!(ios.kind(i), IoKind::Flush) {
                continue;
            }
            let result = match (failed[i], lost) {
                (Some(e), _) => Err(e),
                // Unanswered when the backend failed us.
                (None, Some(e)) if remaining[i] > 0 => Err(e),
                (None, None) if remaining[i] > 0 => Err(StoreError::Io { errno: EIO }),
                _ => Ok(()),
            };
            ios.set_result(i, result);
        }
    }

    /// One flush of everything completed so far.
    fn flush(&mut self, deadline: u64) -> core::result::Result<(), StoreError> {
        let op = match self.info.flush {
            FlushKind::None => return Ok(()),
            FlushKind::FlushCache => BLKIF_OP_FLUSH_DISKCACHE,
            FlushKind::Barrier => BLKIF_OP_WRITE_BARRIER,
        };
        if self.broken.is_some() {
            return Err(StoreError::Io { errno: EIO });
        }
        let f = InFlight {
            id: 0,
            op,
            indirect: false,
            io: None,
            buf_off: 0,
            len: 0,
            pages: Vec::new(),
            in_place: false,
        };
        self.stats.flushes += 1;
        if self
            .submit(BlkifRequest::bare(op, self.info.vdev, 0), &[], f)
            .is_err()
            || self.publish().is_err()
        {
            self.break_with("submitting a flush failed");
            return Err(StoreError::Io { errno: EIO });
        }
        // Nothing else is in flight: the first completion is the flush.
        loop {
            let Ok(done) = self.complete(deadline) else {
                return Err(StoreError::Io { errno: EIO });
            };
            if let Some((_, status)) = done.into_iter().find(|(f, _)| f.io.is_none()) {
                return match status {
                    BLKIF_RSP_OKAY => Ok(()),
                    _ => {
                        // Behind dom0's backend the failed write-back may
                        // be dropped and a later flush succeed: nothing
                        // written since the last good flush is known to be
                        // durable, so nothing more is acknowledged.
                        self.stats.errors += 1;
                        self.break_with(
                            "a flush failed (writes since the last good one may be lost)",
                        );
                        Err(StoreError::Io { errno: EIO })
                    }
                };
            }
        }
    }
}

impl<Pg: PageBlock + 'static, E: RingEvents> Store for VbdStore<Pg, E> {
    fn info(&self) -> StoreInfo {
        let flush = self.info.flush != FlushKind::None;
        StoreInfo {
            capacity: self.info.sectors,
            read_only: self.info.read_only,
            flush,
            fua: flush,
            discard: false,
        }
    }

    fn execute(&mut self, ios: &mut [Io<'_>]) {
        self.run(&mut Private(ios));
    }

    /// Data moves between the server's bounce pages and this store's own
    /// granted pages with one copy each way (instead of bounce pages ->
    /// private buffer -> our pages, and back).
    fn takes_shared(&self) -> bool {
        true
    }

    fn execute_shared(&mut self, mem: &SharedMem<'_>, ios: &mut [SharedIo]) {
        let lent = self.bounce.borrow().is(mem);
        self.run(&mut Shared { mem, ios, lent });
    }

    /// The set's pages, while every one of them is free: a page a broken
    /// store left with the backend may still be written by it, so a set
    /// that lost one is lent no more (its vbds copy through the rest).
    fn lent_pages(&self) -> Option<Rc<dyn Any>> {
        let b = self.bounce.try_borrow().ok()?;
        if self.broken.is_some() || !b.all_free() {
            return None;
        }
        let pages: Rc<dyn Any> = b.pages.clone();
        Some(pages)
    }
}

impl<Pg: PageBlock, E: RingEvents> VbdStore<Pg, E> {
    fn run<B: Batch>(&mut self, ios: &mut B) {
        let n = ios.count();
        // The set is ours for this batch: no other store of it runs
        // meanwhile (execute is synchronous), so the borrow cannot fail; if
        // it ever did, the batch fails rather than the domain. A lent batch
        // needs every page of the set (the server chose them).
        let bounce = Rc::clone(&self.bounce);
        let mut b = match bounce.try_borrow_mut() {
            Ok(b) if self.broken.is_none() && (!ios.in_place() || b.all_free()) => b,
            _ => {
                for i in 0..n {
                    ios.set_result(i, Err(StoreError::Io { errno: EIO }));
                }
                return;
            }
        };
        let deadline = self.events.now_ns().saturating_add(self.batch_timeout_ns);
        let mut i = 0;
        while i < n {
            let mut j = i;
            while j < n && !matches!(ios.kind(j), IoKind::Flush) {
                j += 1;
            }
            self.run_group(&mut b, ios, i..j, deadline);
            // FUA writes of the group are durable once a flush after them
            // answered; their result waits for it.
            let fua: Vec<usize> = (i..j)
                .filter(|&k| {
                    matches!(ios.kind(k), IoKind::Write { fua: true }) && ios.result(k).is_ok()
                })
                .collect();
            if !fua.is_empty() {
                if let Err(e) = self.flush(deadline) {
                    for k in fua {
                        ios.set_result(k, Err(e));
                    }
                }
            }
            if j < n {
                let r = self.flush(deadline);
                ios.set_result(j, r);
                j += 1;
            }
            i = j;
        }
    }
}

/// The operations of one batch and where their data is: private buffers
/// ([`Store::execute`]) or the server's bounce pages
/// ([`Store::execute_shared`]). Offsets are within an operation's data;
/// the store only asks for ranges inside `bytes(i)`.
trait Batch {
    fn count(&self) -> usize;
    fn kind(&self, i: usize) -> IoKind;
    fn sector(&self, i: usize) -> u64;
    fn bytes(&self, i: usize) -> usize;
    fn result(&self, i: usize) -> core::result::Result<(), StoreError>;
    fn set_result(&mut self, i: usize, r: core::result::Result<(), StoreError>);
    /// The data lies in the set's own pages (lent to the server): requests
    /// name those pages, nothing is copied.
    fn in_place(&self) -> bool {
        false
    }
    /// With [`Batch::in_place`]: the set's page where bytes `off..off +
    /// len` of operation `i`'s data start, if they start on a page and
    /// end within the set's `count` pages.
    fn first_page(&self, i: usize, off: usize, len: usize, count: usize) -> Option<usize> {
        let _ = (i, off, len, count);
        None
    }
    /// Copies `len` bytes of operation `i`'s data from `off` to `dst` at
    /// `dst_off` (a write's data, into our granted pages).
    fn data_out(
        &self,
        i: usize,
        off: usize,
        dst: &SharedMem<'_>,
        dst_off: usize,
        len: usize,
    ) -> Result<()>;
    /// Copies `len` bytes from `src` at `src_off` to operation `i`'s data
    /// at `off` (a read's data, out of our granted pages).
    fn data_in(
        &mut self,
        i: usize,
        off: usize,
        src: &SharedMem<'_>,
        src_off: usize,
        len: usize,
    ) -> Result<()>;
}

struct Private<'b, 'a>(&'b mut [Io<'a>]);

fn data_range(bytes: usize, off: usize, len: usize) -> Result<core::ops::Range<usize>> {
    match off.checked_add(len) {
        Some(end) if end <= bytes => Ok(off..end),
        _ => Err(Error::InvalidArgument {
            what: "vbd: a range outside the operation's data",
        }),
    }
}

impl Batch for Private<'_, '_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn kind(&self, i: usize) -> IoKind {
        self.0[i].kind
    }
    fn sector(&self, i: usize) -> u64 {
        self.0[i].sector
    }
    fn bytes(&self, i: usize) -> usize {
        self.0[i].buf.len()
    }
    fn result(&self, i: usize) -> core::result::Result<(), StoreError> {
        self.0[i].result
    }
    fn set_result(&mut self, i: usize, r: core::result::Result<(), StoreError>) {
        self.0[i].result = r;
    }
    fn data_out(
        &self,
        i: usize,
        off: usize,
        dst: &SharedMem<'_>,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        let r = data_range(self.0[i].buf.len(), off, len)?;
        dst.write_from(dst_off, &self.0[i].buf[r])
    }
    fn data_in(
        &mut self,
        i: usize,
        off: usize,
        src: &SharedMem<'_>,
        src_off: usize,
        len: usize,
    ) -> Result<()> {
        let r = data_range(self.0[i].buf.len(), off, len)?;
        src.read_into(src_off, &mut self.0[i].buf[r])
    }
}

/// The server's bounce pages: one volatile copy between them and ours; or
/// ours, lent to the server (`lent`): none.
struct Shared<'b, 'm> {
    mem: &'b SharedMem<'m>,
    ios: &'b mut [SharedIo],
    lent: bool,
}

impl Shared<'_, '_> {
    /// Where bytes `off..off + len` of operation `i`'s data lie in the
    /// server's bounce pages.
    fn window_at(&self, i: usize, off: usize, len: usize) -> Result<usize> {
        let r = data_range(self.ios[i].len, off, len)?;
        self.ios[i]
            .at
            .checked_add(r.start)
            .ok_or(Error::InvalidArgument {
                what: "vbd: a range outside the window",
            })
    }
}

impl Batch for Shared<'_, '_> {
    fn count(&self) -> usize {
        self.ios.len()
    }
    fn kind(&self, i: usize) -> IoKind {
        self.ios[i].kind
    }
    fn sector(&self, i: usize) -> u64 {
        self.ios[i].sector
    }
    fn bytes(&self, i: usize) -> usize {
        self.ios[i].len
    }
    fn result(&self, i: usize) -> core::result::Result<(), StoreError> {
        self.ios[i].result
    }
    fn set_result(&mut self, i: usize, r: core::result::Result<(), StoreError>) {
        self.ios[i].result = r;
    }
    fn in_place(&self) -> bool {
        self.lent
    }
    fn first_page(&self, i: usize, off: usize, len: usize, count: usize) -> Option<usize> {
        let at = self.window_at(i, off, len).ok()?;
        let first = at / PAGE_SIZE;
        let end = first.checked_add(len.div_ceil(PAGE_SIZE))?;
        (self.lent && at.is_multiple_of(PAGE_SIZE) && end <= count).then_some(first)
    }
    fn data_out(
        &self,
        i: usize,
        off: usize,
        dst: &SharedMem<'_>,
        dst_off: usize,
        len: usize,
    ) -> Result<()> {
        let at = self.window_at(i, off, len)?;
        // Bounds of both windows checked by copy_from.
        dst.copy_from(dst_off, self.mem, at, len)
    }
    fn data_in(
        &mut self,
        i: usize,
        off: usize,
        src: &SharedMem<'_>,
        src_off: usize,
        len: usize,
    ) -> Result<()> {
        let at = self.window_at(i, off, len)?;
        self.mem.copy_from(at, src, src_off, len)
    }
}

#[cfg(test)]
mod tests;
