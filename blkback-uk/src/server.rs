//! The disk server: one blk share per (disk, member), requests served in
//! batches.
//!
//! Per member lane, one batch is:
//!
//! 1. **take**: copy each 128-byte request slot out once and parse it with
//!    `RequestRepr::parse` against our own [`ControlRepr`]; a request is only
//!    taken while its response has a free slot and its data fits the bounce
//!    pages, so a member can never have more in flight than its lanes hold;
//! 2. **indirect**: grant-copy the indirect pages of every indirect request
//!    of the batch into bounce pages (one `sg_xfer` for the batch, up to 24
//!    pages per request), copy each request's into a private buffer and
//!    validate every segment and the sector range there, before any of its
//!    data moves;
//! 3. **data in**: grant-copy the data of every write in the batch from the
//!    member's pages into bounce pages (one `sg_xfer`), then into the
//!    private data buffer;
//! 4. **store**: the whole batch goes to the disk's [`Store`] in lane order
//!    (flushes order it: see the store module);
//! 5. **data out**: read data goes to bounce pages and, with one `sg_xfer`,
//!    to the member's pages.
//!
//!    A store that copies the data anyway (the RAM store:
//!    [`Store::takes_shared`]) gets the batch on the bounce pages
//!    themselves when every request's data lies there end to end (whole
//!    pages but the last, as every Linux and share-member request is): no
//!    private buffer, one copy fewer each way, through the bounce pages'
//!    volatile accessors like every other access. A store whose own pages
//!    are where its I/O goes (the vbd store: granted to its backend) may
//!    lend them ([`Store::lent_pages`]): the data is grant-copied there
//!    instead, and no copy is left in this domain; the indirect pages stay
//!    in ours;
//! 6. **respond**: one response per request, ids echoed, published with one
//!    index store and at most one trigger per lane.
//!
//! No member page is ever mapped: the bounce pages are the server's own, and
//! the hypervisor (or the simulation's broker) checks every grant on each
//! copy. A copy that fails (a bogus or revoked grant, a member that went
//! away) fails its request alone; a write whose data did not all arrive never
//! reaches the store.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use share_hal::lane::{self, Consumer, ConsumerState, Producer, ProducerState};
use share_hal::platform::{CopyPtr, CopySeg, CopyStatus, PageBlock, Platform, PAGE_SIZE};
use share_hal::share::{sg_xfer, Share};
use share_hal::vdevice::Applied;
use share_hal::wire::blk::{
    self, features, indirect_segment, BlkLayout, Control, ControlRepr, Dir, Request, RequestRepr,
    Response, ResponseRepr, Segment, Status, REQUEST_SIZE, RESPONSE_SIZE,
};
use share_hal::wire::vdevice::{self as vd, status, EntryRepr, Kind, Role};
use share_hal::{DomId, Error, GrantRef, Port, Result};

use crate::store::{execute_one, Io, IoKind, SharedIo, Store, StoreError};

/// How a server is sized.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// The server's own pages that data passes through on its way between
    /// a member's pages and the store; bounds the data of one batch.
    pub bounce_pages: usize,
    /// Segments one indirect request may carry (512: 2 MiB per request).
    pub max_indirect_segments: u16,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bounce_pages: 1024,
            max_indirect_segments: 512,
        }
    }
}

/// Bounce pages the largest request of `max_indirect_segments` needs: one
/// per segment plus its indirect pages.
fn pages_for_largest(max_indirect_segments: u16) -> usize {
    usize::from(max_indirect_segments) + blk::indirect_pages_for(max_indirect_segments)
}

struct Disk<S> {
    store: S,
}

/// One member's share of one disk.
struct Conn<P: Platform> {
    /// The vdevice entry that created it.
    entry: u32,
    member: DomId,
    disk: usize,
    share: Share<P>,
    layout: BlkLayout,
    control: ControlRepr,
    requests: ConsumerState,
    responses: ProducerState,
    /// Why this member is no longer served (a broken lane, a vanished
    /// domain); it stays cut off until dom0 removes the entry.
    cut_off: Option<&'static str>,
    /// A discard larger than one pass's budget, done in pieces: the
    /// request (as last copied) and the sectors done. Its slot is not
    /// consumed until the last piece, so it is answered once.
    discard: Option<DiscardCursor>,
    /// What this member's requests may make the server log.
    log: LogBudget,
}

/// How far a discard done in pieces got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DiscardCursor {
    id: u64,
    sector: u64,
    sectors: u64,
    done: u64,
}

/// Sectors one member may discard per service pass (16 MiB: the RAM store
/// zeroes them, ~2 ms); a larger discard is done in pieces over passes.
pub const DISCARD_SECTORS_PER_PASS: u64 = 16 * 1024 * 1024 / 512;
/// Flushes, and batches holding a FUA write, one member may have served
/// per pass: each may cost an `fdatasync`.
pub const SYNCS_PER_PASS: u32 = 2;

/// What one member's requests cost in one service pass, against the
/// bounds above; the data of reads and writes is bounded by the bounce
/// pages (one batch's worth) and [`BATCHES_PER_SERVICE`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassCost {
    pub discarded_sectors: u64,
    pub syncs: u32,
}

/// Log lines a member's requests may cause: [`LogBudget::LINES`] per
/// [`LogBudget::WINDOW_NS`], then one line saying how many were left out.
/// A full console blocks the logging domain per line: what a peer can make
/// us print is work it makes us do.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogBudget {
    window_start_ns: u64,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub const LINES: u32 = 5;
    pub const WINDOW_NS: u64 = 10_000_000_000;

    /// Whether a line may be printed at `now_ns`; `Some(n)`: yes, and `n`
    /// lines were left out before it (say so).
    pub fn allow(&mut self, now_ns: u64) -> Option<u64> {
        if now_ns.saturating_sub(self.window_start_ns) >= Self::WINDOW_NS {
            self.window_start_ns = now_ns;
            self.used = 0;
        }
        if self.used >= Self::LINES {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(core::mem::take(&mut self.suppressed))
    }
}

/// What [`Server::service`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Requests answered.
    pub answered: usize,
    /// Some lane still has requests waiting: call again before sleeping.
    pub more: bool,
    /// The costliest member's pass ([`PassCost`]), for tests and fuzzing.
    pub max_cost: PassCost,
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub batches: u64,
    pub cut_off: u64,
}

/// The disk server: disks by index, and the shares serving them.
pub struct Server<P: Platform, S: Store> {
    disks: Vec<Disk<S>>,
    conns: Vec<Conn<P>>,
    /// Shares of removed members that still map a page: never reused,
    /// retried by [`Server::reap`].
    retired: Vec<Share<P>>,
    bounce: P::Pages,
    /// Private copy of a batch's data, `bounce_pages * PAGE_SIZE` bytes.
    data: Vec<u8>,
    config: ServerConfig,
    stats: Stats,
}

/// One request of a batch, from parse to response.
struct Work {
    id: u64,
    op: u8,
    status: Option<Status>,
    action: Action,
    /// Segments of the member's pages (reads and writes).
    segs: Vec<Segment>,
    /// First bounce page of this request's segments (one per segment).
    first_page: usize,
    /// First of the server's own bounce pages holding its indirect pages
    /// (counted from the top: never among the data pages, lent or not).
    indirect_page: usize,
    /// Offset of its data in the private data buffer.
    data_off: usize,
    data_len: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Refused at parse; only answered.
    None,
    Read {
        sector: u64,
    },
    Write {
        sector: u64,
        fua: bool,
    },
    Flush,
    Discard {
        sector: u64,
        sectors: u64,
    },
}

impl Work {
    fn fail(&mut self, s: Status) {
        if self.status.is_none() {
            self.status = Some(s);
        }
    }
}

/// Responses of one lane and requests that may wait: at most one lane's
/// worth per batch, and at most this many batches per lane per call, so a
/// flooding member cannot keep the others waiting.
const BATCHES_PER_SERVICE: usize = 4;

impl<P: Platform, S: Store> Server<P, S> {
    /// A server of `stores` (disk `i` is `stores[i]`, the `param` of a
    /// vdevice entry), with its bounce pages allocated.
    pub fn new(p: &mut P, stores: Vec<S>, config: ServerConfig) -> Result<Self> {
        if config.max_indirect_segments == 0
            || config.max_indirect_segments > blk::MAX_INDIRECT_SEGMENTS
            || config.bounce_pages < pages_for_largest(config.max_indirect_segments)
            || config.bounce_pages < blk::MAX_INLINE_SEGMENTS
        {
            return Err(Error::InvalidArgument {
                what: "server config: bounce pages must hold the largest request (max indirect segments + their pages)",
            });
        }
        let bounce = p.alloc_pages(config.bounce_pages)?;
        Ok(Server {
            disks: stores.into_iter().map(|store| Disk { store }).collect(),
            conns: Vec::new(),
            retired: Vec::new(),
            bounce,
            data: vec![0; config.bounce_pages * PAGE_SIZE],
            config,
            stats: Stats::default(),
        })
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn disk_count(&self) -> usize {
        self.disks.len()
    }

    /// Adds a disk while serving (a vbd given to the domain at run time,
    /// `xl block-attach`); it gets the next index. Indexes never move, so
    /// dom0's entries keep naming the disks they named.
    pub fn add_disk(&mut self, store: S) -> usize {
        self.disks.push(Disk { store });
        self.disks.len() - 1
    }

    /// The store of disk `i` (tests check what reached it).
    pub fn store(&self, i: usize) -> Option<&S> {
        self.disks.get(i).map(|d| &d.store)
    }

    #[cfg(test)]
    fn store_mut(&mut self, i: usize) -> Option<&mut S> {
        self.disks.get_mut(i).map(|d| &mut d.store)
    }

    /// Members served: (vdevice entry, member, disk).
    pub fn connections(&self) -> impl Iterator<Item = (u32, DomId, usize)> + '_ {
        self.conns.iter().map(|c| (c.entry, c.member, c.disk))
    }

    /// Whether `port` is the server's port of some member's share.
    pub fn owns_port(&self, port: Port) -> bool {
        self.conns
            .iter()
            .any(|c| c.share.member_for_port(port).is_some())
    }

    /// Applies one vdevice change (the handler `VdeviceBus::poll` calls):
    /// an owner entry of kind Disk creates the share for its member and
    /// returns its share_ref; an empty entry over it tears it down.
    ///
    /// - `param`: the disk index; `flags` READ_ONLY: serve it read-only
    ///   (a read-only disk may be served to many members at once, a
    ///   read-write one to a single member and nobody else);
    /// - `subtype`: dom0's feature policy, intersected with the store's;
    /// - `numpages`: the share's size (`BlkLayout`, at least 3).
    pub fn apply(&mut self, p: &mut P, index: u32, old: &EntryRepr, new: &EntryRepr) -> Applied {
        match self.try_apply(p, index, old, new) {
            Ok(a) => a,
            Err(code) => Applied::Refused(code),
        }
    }

    fn try_apply(
        &mut self,
        p: &mut P,
        index: u32,
        old: &EntryRepr,
        new: &EntryRepr,
    ) -> core::result::Result<Applied, i32> {
        if new.kind == Kind::Empty {
            if let Some(i) = self.conns.iter().position(|c| c.entry == index) {
                let c = self.conns.swap_remove(i);
                log::info!(
                    "disk {}: member {} removed (entry {index})",
                    c.disk,
                    c.member
                );
                self.retire(p, c.share);
            }
            return Ok(Applied::Ok { share_ref: None });
        }
        if new.kind != Kind::Disk || new.role != Role::Owner {
            return Err(status::ENODEV);
        }
        if old.kind != Kind::Empty || self.conns.iter().any(|c| c.entry == index) {
            return Err(status::EEXIST);
        }
        let disk = usize::try_from(new.param)
            .ok()
            .filter(|&d| d < self.disks.len())
            .ok_or_else(|| {
                log::warn!("entry {index}: no disk {} here", new.param);
                status::ENOENT
            })?;
        let read_only = new.flags & vd::flags::READ_ONLY != 0;
        let info = self.disks[disk].store.info();
        if info.capacity == 0 {
            // A disk that is not there (the image's vbd whose handshake
            // failed) keeps its index but serves nobody.
            log::warn!("entry {index}: disk {disk} has no storage");
            return Err(status::ENODEV);
        }
        if !read_only && info.read_only {
            log::warn!("entry {index}: disk {disk} is read-only here, the entry asks read-write");
            return Err(status::EINVAL);
        }
        let users = self.conns.iter().filter(|c| c.disk == disk);
        for c in users {
            if c.member == new.peer {
                return Err(status::EEXIST);
            }
            // One writer and nobody else, or any number of readers.
            if !read_only || !c.control.read_only {
                log::warn!(
                    "entry {index}: disk {disk} is served to member {} ({}): refusing member {} ({})",
                    c.member,
                    if c.control.read_only { "read-only" } else { "read-write" },
                    new.peer,
                    if read_only { "read-only" } else { "read-write" },
                );
                return Err(status::EBUSY);
            }
        }
        let layout = BlkLayout::new(new.numpages).map_err(|_| status::EINVAL)?;
        let mut offered = features::INDIRECT;
        if info.flush {
            offered |= features::FLUSH;
        }
        if info.fua {
            offered |= features::FUA;
        }
        if info.discard && !read_only {
            offered |= features::DISCARD;
        }
        let feats = new.subtype & offered;
        let control = ControlRepr {
            features: feats,
            read_only,
            capacity: info.capacity,
            max_indirect_segments: if feats & features::INDIRECT != 0 {
                self.config.max_indirect_segments
            } else {
                0
            },
        };
        let platform_status = |e: Error| match e {
            Error::OutOfMemory | Error::GrantTableFull => status::ENOMEM,
            Error::NoSuchDomain { .. } => status::ENOENT,
            _ => status::EIO,
        };
        let mut share = Share::create(p, layout.numpages as usize).map_err(platform_status)?;
        let lanes = match Self::init_share(&share, &layout, &control) {
            Ok(l) => l,
            Err(e) => {
                log::error!("entry {index}: writing the share's control fields failed: {e}");
                self.retire(p, share);
                return Err(status::EIO);
            }
        };
        let share_ref = match share.add_member(p, new.peer) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "entry {index}: granting the share to {} failed: {e}",
                    new.peer
                );
                self.retire(p, share);
                return Err(platform_status(e));
            }
        };
        log::info!(
            "disk {disk}: serving member {} ({}, {} sectors, features {:#x}, {} request slots), share_ref {}",
            new.peer,
            if read_only { "read-only" } else { "read-write" },
            control.capacity,
            control.features,
            layout.requests.slot_count,
            share_ref.descriptor
        );
        self.conns.push(Conn {
            entry: index,
            member: new.peer,
            disk,
            share,
            layout,
            control,
            requests: lanes.0,
            responses: lanes.1,
            cut_off: None,
            discard: None,
            log: LogBudget::default(),
        });
        Ok(Applied::Ok {
            share_ref: Some(share_ref.descriptor),
        })
    }

    /// Control fields and both lane headers, written before any grant.
    fn init_share(
        share: &Share<P>,
        layout: &BlkLayout,
        control: &ControlRepr,
    ) -> Result<(ConsumerState, ProducerState)> {
        let mem = share.mem();
        let mut c = [0u8; blk::CONTROL_LEN];
        control.emit(&mut Control::new_unchecked(&mut c[..]))?;
        mem.write_from(0, &c)?;
        let req = layout.requests.lane()?;
        let rsp = layout.responses.lane()?;
        lane::init(layout.requests.window(mem)?, req, 0)?;
        lane::init(layout.responses.window(mem)?, rsp, 0)?;
        let cons = Consumer::attach(layout.requests.window(mem)?, req)?;
        let prod = Producer::attach(layout.responses.window(mem)?, rsp)?;
        Ok((cons.park(), prod.park()))
    }

    fn retire(&mut self, p: &mut P, mut share: Share<P>) {
        match share.destroy(p) {
            Ok(()) => {}
            Err(Error::GrantInUse { .. }) => self.retired.push(share),
            Err(e) => {
                log::warn!("destroying a disk share failed: {e}; its pages stay retired");
                self.retired.push(share);
            }
        }
    }

    /// Retries destroying shares whose members still mapped them. Returns
    /// how many are left.
    pub fn reap(&mut self, p: &mut P) -> usize {
        self.retired.retain_mut(|s| s.destroy(p).is_err());
        self.retired.len()
    }

    /// Serves every member's request lane once around (a bounded number of
    /// batches each), then arms each lane's trigger before the caller
    /// sleeps. `more` says some lane has requests left.
    pub fn service(&mut self, p: &mut P) -> Progress {
        let mut progress = Progress::default();
        #[cfg(feature = "hostile")]
        if crate::hostile::silent(self.stats.requests) {
            return progress;
        }
        for ci in 0..self.conns.len() {
            if self.conns[ci].cut_off.is_some() {
                continue;
            }
            let mut cost = PassCost::default();
            let served = self.serve_conn(p, ci, &mut cost);
            progress.max_cost.discarded_sectors = progress
                .max_cost
                .discarded_sectors
                .max(cost.discarded_sectors);
            progress.max_cost.syncs = progress.max_cost.syncs.max(cost.syncs);
            match served {
                Ok((n, more)) => {
                    progress.answered += n;
                    progress.more |= more;
                }
                Err(e) => {
                    let c = &mut self.conns[ci];
                    let why = match e {
                        Error::Protocol { what } => what,
                        Error::BadPort { .. } | Error::NoSuchDomain { .. } => {
                            "member's port is gone"
                        }
                        _ => "the platform failed serving it",
                    };
                    log::warn!("disk {}: member {} cut off: {why} ({e})", c.disk, c.member);
                    c.cut_off = Some(why);
                    self.stats.cut_off += 1;
                }
            }
        }
        progress
    }

    /// Serves up to [`BATCHES_PER_SERVICE`] batches of one lane. Returns
    /// the requests answered and whether more are waiting. `Err` cuts the
    /// member off.
    fn serve_conn(&mut self, p: &mut P, ci: usize, cost: &mut PassCost) -> Result<(usize, bool)> {
        let Server {
            disks,
            conns,
            bounce,
            data,
            stats,
            ..
        } = self;
        let conn = &mut conns[ci];
        let mem = conn.share.mem();
        let req_layout = conn.layout.requests.lane()?;
        let rsp_layout = conn.layout.responses.lane()?;
        let mut cons =
            Consumer::resume(conn.layout.requests.window(mem)?, req_layout, conn.requests)?;
        let mut prod = Producer::resume(
            conn.layout.responses.window(mem)?,
            rsp_layout,
            conn.responses,
        )?;
        let mut answered = 0;
        let mut more = false;
        let mut kick = false;
        let mut result = Ok(());
        let now = p.now_ns();
        let mut discard = conn.discard.take();
        let mut log = core::mem::take(&mut conn.log);
        for round in 0..BATCHES_PER_SERVICE {
            let mut ctx = BatchCtx {
                discard: &mut discard,
                log: &mut log,
                now,
                cost: &mut *cost,
                spent: false,
            };
            let r = Self::batch(
                p,
                &*conn,
                &mut ctx,
                &mut disks[conn.disk].store,
                bounce,
                data,
                stats,
                &mut cons,
                &mut prod,
            );
            let spent = ctx.spent;
            let n = match r {
                Ok(n) => n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            answered += n;
            match (prod.publish(), cons.release()) {
                (Ok(a), Ok(b)) => kick |= a | b,
                (Err(e), _) | (_, Err(e)) => {
                    result = Err(e);
                    break;
                }
            }
            let waiting = match cons.poll() {
                Ok(w) => w,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if spent {
                // The member's budget for this pass is used up: the others
                // get their turn, then it goes on.
                more = true;
                break;
            }
            if waiting == 0 {
                // Arm the trigger; requests that slipped in meanwhile are
                // served on the next call.
                match cons.prepare_wait() {
                    Ok(w) => more = w > 0,
                    Err(e) => result = Err(e),
                }
                break;
            }
            if n == 0 {
                // Requests wait but none could be taken: the member has not
                // consumed its responses. Its release of response slots
                // triggers us (cons_event), so sleep until then.
                match prod.prepare_wait(1) {
                    Ok(free) => more = free > 0,
                    Err(e) => result = Err(e),
                }
                break;
            }
            more = round + 1 == BATCHES_PER_SERVICE;
        }
        conn.discard = discard;
        conn.log = log;
        #[cfg(feature = "hostile")]
        if let Some(raw) = crate::hostile::replay() {
            if prod.reserve(1)? {
                prod.slot(0)?.write_from(0, &raw)?;
                prod.commit(1)?;
                kick |= prod.publish()?;
            }
        }
        conn.requests = cons.park();
        conn.responses = prod.park();
        #[cfg(feature = "hostile")]
        if let Some(bogus) = crate::hostile::bogus_prod(stats.requests) {
            conn.layout.responses.window(mem)?.store_u32(
                lane::header::PROD,
                bogus,
                core::sync::atomic::Ordering::Release,
            )?;
            kick = true;
        }
        if kick {
            conn.share.trigger(p, conn.member)?;
        }
        #[cfg(feature = "hostile")]
        for _ in 0..crate::hostile::flood(stats.requests) {
            conn.share.trigger(p, conn.member)?;
        }
        result.map(|()| (answered, more))
    }

    /// Takes, executes and answers one batch of requests. Returns how many.
    /// Stops taking when the member's budget for the pass is spent
    /// (`ctx.spent`): discards and syncs are charged as they are taken.
    #[allow(clippy::too_many_arguments)]
    fn batch(
        p: &mut P,
        conn: &Conn<P>,
        ctx: &mut BatchCtx<'_>,
        store: &mut S,
        bounce: &P::Pages,
        data: &mut [u8],
        stats: &mut Stats,
        cons: &mut Consumer<'_>,
        prod: &mut Producer<'_>,
    ) -> Result<usize> {
        // The store's own pages when it lends them: the batch's data goes
        // there, its indirect pages (the member's segment lists, which are
        // nobody else's business) stay in ours.
        let lent: Option<Rc<P::Pages>> = if store.takes_shared() {
            store
                .lent_pages()
                .and_then(|l| l.downcast::<P::Pages>().ok())
        } else {
            None
        };
        // Data pages count up from the first bounce page, indirect pages
        // down from the last of ours: the data may go to lent pages (of
        // their own count), the indirect pages never do, and without
        // lending both share ours.
        let own = bounce.count();
        let data_pool = match &lent {
            Some(l) => own.min(l.count()),
            None => own,
        };
        let mut works: Vec<Work> = Vec::new();
        let mut data_used = 0usize;
        let mut indirect_used = 0usize;
        let mut batch_fua = false;
        // Indirect requests taken (index in `works`), fetched in phase 2.
        let mut indirect_todo: Vec<(usize, RequestRepr)> = Vec::new();
        // 1. take
        while cons.pending() > 0 {
            // A response slot for every request taken: never more in flight
            // than the response lane holds.
            if !prod.reserve(works.len() as u32 + 1)? {
                break;
            }
            let Some(slot) = cons.slot()? else { break };
            let mut raw = [0u8; REQUEST_SIZE];
            slot.read_into(0, &mut raw)?;
            let req = Request::new_unchecked(&raw[..]);
            let mut w = Work {
                id: RequestRepr::raw_id(&req),
                op: req.op(),
                status: None,
                action: Action::None,
                segs: Vec::new(),
                first_page: 0,
                indirect_page: 0,
                data_off: 0,
                data_len: 0,
            };
            let mut indirect = None;
            match RequestRepr::parse(&req, &conn.control) {
                Err(e) => {
                    if let Some(left_out) = ctx.log.allow(ctx.now) {
                        log::info!(
                            "member {}: request {:#x} refused: {e}{}",
                            conn.member,
                            w.id,
                            LeftOut(left_out)
                        );
                    }
                    w.status = Some(ResponseRepr::status_for(&e));
                }
                Ok(RequestRepr::Direct {
                    dir,
                    fua,
                    sector,
                    segments,
                    ..
                }) => {
                    w.segs = segments.as_slice().to_vec();
                    w.action = match dir {
                        Dir::Read => Action::Read { sector },
                        Dir::Write => Action::Write { sector, fua },
                    };
                }
                Ok(RequestRepr::Flush { .. }) => w.action = Action::Flush,
                Ok(RequestRepr::Discard {
                    sector, nr_sectors, ..
                }) => {
                    w.action = Action::Discard {
                        sector,
                        sectors: nr_sectors,
                    }
                }
                Ok(
                    r @ RequestRepr::Indirect {
                        dir,
                        fua,
                        sector,
                        nr_segments,
                        ..
                    },
                ) => {
                    w.action = match dir {
                        Dir::Read => Action::Read { sector },
                        Dir::Write => Action::Write { sector, fua },
                    };
                    indirect = Some((r, usize::from(nr_segments)));
                }
            }
            // Bounce pages: one per segment, and the indirect pages.
            let (data_need, indirect_need) = match indirect {
                Some((r, n)) => (n, indirect_grefs(&r).len()),
                None => (w.segs.len(), 0),
            };
            if data_used + data_need > data_pool
                || data_used + data_need + indirect_used + indirect_need > own
            {
                // Served in the next batch; nothing of this copy is kept.
                break;
            }
            if !Self::charge(ctx, store, &mut w, works.is_empty(), batch_fua) {
                // Next pass; nothing of this copy is kept but a discard's
                // progress.
                ctx.spent = true;
                break;
            }
            batch_fua |= matches!(w.action, Action::Write { fua: true, .. });
            cons.advance();
            w.first_page = data_used;
            data_used += data_need;
            if let Some((r, n)) = indirect {
                indirect_used += indirect_need;
                w.indirect_page = own - indirect_used;
                // Empty until phase 2 fills them.
                w.segs = Vec::with_capacity(n);
                indirect_todo.push((works.len(), r));
            }
            works.push(w);
        }
        if works.is_empty() {
            return Ok(0);
        }
        // 2. indirect
        Self::fetch_indirect(p, conn, bounce, &indirect_todo, &mut works)?;
        stats.batches += 1;
        // Data offsets in the private buffer: segment k of a request at
        // k * PAGE_SIZE from its first page, so pages and data line up.
        for w in works.iter_mut() {
            w.data_off = w.first_page * PAGE_SIZE;
            w.data_len = w.segs.iter().map(|s| usize::from(s.byte_len())).sum();
        }
        // The store may work on the bounce pages themselves when every
        // request's data lies there end to end (whole pages but the last):
        // one copy fewer each way.
        let direct = store.takes_shared() && works.iter().all(|w| contiguous(&w.segs));
        let data_pages = match &lent {
            Some(l) if direct => &**l,
            _ => bounce,
        };
        // 3. data in
        Self::move_data(p, conn, data_pages, data, &mut works, true, direct)?;
        // 4. store
        let failed = if direct {
            Self::run_store_shared(store, &data_pages.mem(), &mut works)
        } else {
            Self::run_store(store, data, &mut works)
        };
        if let Some((count, id, e)) = failed {
            if let Some(left_out) = ctx.log.allow(ctx.now) {
                log::warn!(
                    "member {}: {count} request(s) failed in the store, {id:#x} first: {e}{}",
                    conn.member,
                    LeftOut(left_out)
                );
            }
        }
        // 5. data out
        Self::move_data(p, conn, data_pages, data, &mut works, false, direct)?;
        // 6. respond
        for (k, w) in works.iter().enumerate() {
            let status = w.status.unwrap_or(Status::Error);
            stats.requests += 1;
            if status != Status::Okay {
                stats.errors += 1;
            }
            let mut raw = [0u8; RESPONSE_SIZE];
            ResponseRepr {
                id: w.id,
                op: w.op,
                status,
            }
            .emit(&mut Response::new_unchecked(&mut raw[..]))?;
            #[cfg(feature = "hostile")]
            {
                crate::hostile::response(&mut raw, stats.requests);
                if let Some(seg) = w.segs.first() {
                    if crate::hostile::pin(stats.requests) {
                        match p.map(
                            conn.member,
                            &[seg.gref],
                            share_hal::platform::Access::ReadOnly,
                        ) {
                            // Never unmapped: kept until this domain dies.
                            Ok(m) => core::mem::forget(m),
                            Err(e) => log::warn!("hostile pin: mapping {:?} failed: {e}", seg.gref),
                        }
                    }
                }
            }
            prod.slot(k as u32)?.write_from(0, &raw)?;
        }
        prod.commit(works.len() as u32)?;
        Ok(works.len())
    }

    /// Charges request `w` to its member's pass; `false`: not now (the
    /// budget is spent), the request stays in the lane. A flush, or the
    /// first FUA write of a batch, is a sync; a discard costs its sectors,
    /// and one larger than what the pass has left is done a piece per
    /// pass when it comes first in its batch (answered after the last).
    fn charge(
        ctx: &mut BatchCtx<'_>,
        store: &mut S,
        w: &mut Work,
        first: bool,
        batch_fua: bool,
    ) -> bool {
        match w.action {
            Action::Flush | Action::Write { fua: true, .. }
                if !(batch_fua && matches!(w.action, Action::Write { .. })) =>
            {
                if ctx.cost.syncs >= SYNCS_PER_PASS {
                    return false;
                }
                ctx.cost.syncs += 1;
                true
            }
            Action::Discard { sector, sectors } => {
                let start = match ctx.discard.take() {
                    Some(c) if (c.id, c.sector, c.sectors) == (w.id, sector, sectors) => c.done,
                    // Another request than the one in pieces (the member
                    // rewrote the slot): it starts from its beginning.
                    _ => 0,
                };
                let cursor = |done| DiscardCursor {
                    id: w.id,
                    sector,
                    sectors,
                    done,
                };
                let left = sectors - start;
                let room = DISCARD_SECTORS_PER_PASS.saturating_sub(ctx.cost.discarded_sectors);
                if left <= room {
                    ctx.cost.discarded_sectors += left;
                    w.action = Action::Discard {
                        sector: sector + start,
                        sectors: left,
                    };
                    return true;
                }
                if !first || room == 0 {
                    if start > 0 {
                        *ctx.discard = Some(cursor(start));
                    }
                    return false;
                }
                ctx.cost.discarded_sectors += room;
                match execute_one(
                    store,
                    IoKind::Discard { sectors: room },
                    sector + start,
                    &mut [],
                ) {
                    Ok(()) => {
                        *ctx.discard = Some(cursor(start + room));
                        false
                    }
                    Err(e) => {
                        let mut failed = None;
                        w.status = Some(status_of(w.id, Err(e), &mut failed));
                        true
                    }
                }
            }
            _ => true,
        }
    }

    /// Phase 2: copies the indirect pages of every indirect request of the
    /// batch (`todo`: index in `works`, request) into bounce pages with one
    /// `sg_xfer`, then each request's into a private buffer, and validates
    /// its segments and sector range from that copy. A request whose pages
    /// did not all arrive, or whose list is bad, fails alone.
    fn fetch_indirect(
        p: &mut P,
        conn: &Conn<P>,
        bounce: &P::Pages,
        todo: &[(usize, RequestRepr)],
        works: &mut [Work],
    ) -> Result<()> {
        // The request's indirect pages in our own bounce pages, and its
        // segment count.
        let base_of = |w: &Work, r: &RequestRepr| match r {
            RequestRepr::Indirect { nr_segments, .. } => {
                Some((w.indirect_page, usize::from(*nr_segments)))
            }
            _ => None,
        };
        let mut segs = Vec::new();
        // The entry of `todo` each segment belongs to.
        let mut owner = Vec::new();
        for (t, (wi, r)) in todo.iter().enumerate() {
            let Some(w) = works.get_mut(*wi) else {
                continue;
            };
            let Some((base, _)) = base_of(w, r) else {
                continue;
            };
            for (i, g) in indirect_grefs(r).iter().enumerate() {
                let Some(frame) = bounce.frame(base + i) else {
                    w.fail(Status::Error);
                    break;
                };
                segs.push(CopySeg {
                    src: CopyPtr::Foreign {
                        domid: conn.member,
                        gref: *g,
                        offset: 0,
                    },
                    dst: CopyPtr::Local { frame, offset: 0 },
                    len: PAGE_SIZE as u16,
                    status: CopyStatus::Pending,
                });
                owner.push(t);
            }
        }
        if segs.is_empty() {
            return Ok(());
        }
        let mut arrived = vec![sg_xfer(p, &mut segs).is_ok(); todo.len()];
        for (s, &t) in segs.iter().zip(&owner) {
            if s.status != CopyStatus::Done {
                arrived[t] = false;
            }
        }
        for (t, (wi, r)) in todo.iter().enumerate() {
            let Some(w) = works.get_mut(*wi) else {
                continue;
            };
            let Some((base, nr_segments)) = base_of(w, r) else {
                continue;
            };
            if w.status.is_some() {
                continue;
            }
            if !arrived[t] {
                log::debug!(
                    "member {}: indirect pages of request {:#x} could not be copied",
                    conn.member,
                    w.id
                );
                w.fail(Status::Error);
                continue;
            }
            let grefs = indirect_grefs(r);
            let mut pages = vec![0u8; grefs.len() * PAGE_SIZE];
            bounce.mem().read_into(base * PAGE_SIZE, &mut pages[..])?;
            match r.indirect_segments(&pages, &conn.control) {
                Ok(_) => {
                    for i in 0..nr_segments {
                        match indirect_segment(&pages, i) {
                            Ok(s) => w.segs.push(s),
                            Err(_) => {
                                w.segs.clear();
                                w.fail(Status::Error);
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    log::debug!(
                        "member {}: indirect request {:#x} refused: {e}",
                        conn.member,
                        w.id
                    );
                    w.fail(ResponseRepr::status_for(&e));
                }
            }
        }
        Ok(())
    }

    /// Phase 3 (`inbound`: writes, member to data buffer) or 5 (reads, data
    /// buffer to member): one `sg_xfer` for the whole batch. A request with
    /// any failed segment fails. `direct`: the store works on the bounce
    /// pages, the data buffer is not used.
    fn move_data(
        p: &mut P,
        conn: &Conn<P>,
        bounce: &P::Pages,
        data: &mut [u8],
        works: &mut [Work],
        inbound: bool,
        direct: bool,
    ) -> Result<()> {
        let bmem = bounce.mem();
        let moves = |w: &Work| match w.action {
            Action::Write { .. } => inbound && w.status.is_none(),
            Action::Read { .. } => !inbound && w.status == Some(Status::Okay),
            _ => false,
        };
        let mut segs = Vec::new();
        let mut owner = Vec::new();
        for (wi, w) in works.iter().enumerate() {
            if !moves(w) {
                continue;
            }
            for (k, s) in w.segs.iter().enumerate() {
                let page = w.first_page + k;
                let frame = bounce.frame(page).ok_or(Error::InvalidArgument {
                    what: "bounce page index",
                })?;
                let local = CopyPtr::Local { frame, offset: 0 };
                let foreign = CopyPtr::Foreign {
                    domid: conn.member,
                    gref: s.gref,
                    offset: s.page_offset(),
                };
                let len = s.byte_len();
                if !inbound && !direct {
                    let at = w.data_off + k * PAGE_SIZE;
                    let src =
                        data.get(at..at + usize::from(len))
                            .ok_or(Error::InvalidArgument {
                                what: "data buffer range",
                            })?;
                    bmem.write_from(page * PAGE_SIZE, src)?;
                }
                let (src, dst) = if inbound {
                    (foreign, local)
                } else {
                    (local, foreign)
                };
                segs.push(CopySeg {
                    src,
                    dst,
                    len,
                    status: CopyStatus::Pending,
                });
                owner.push((wi, page, k));
            }
        }
        if segs.is_empty() {
            return Ok(());
        }
        let submitted = sg_xfer(p, &mut segs);
        for (s, &(wi, page, k)) in segs.iter().zip(&owner) {
            let w = &mut works[wi];
            let done = submitted.is_ok() && s.status == CopyStatus::Done;
            if !done {
                if let CopyStatus::Failed(e) = s.status {
                    log::debug!(
                        "member {}: request {:#x}: grant copy failed: {e}",
                        conn.member,
                        w.id
                    );
                }
                // A write that did not fully arrive never reaches the
                // store; a read that did not fully leave is an error.
                if inbound {
                    w.fail(Status::Error);
                } else {
                    w.status = Some(Status::Error);
                }
                continue;
            }
            if inbound && !direct && w.status.is_none() {
                let at = w.data_off + k * PAGE_SIZE;
                let dst =
                    data.get_mut(at..at + usize::from(s.len))
                        .ok_or(Error::InvalidArgument {
                            what: "data buffer range",
                        })?;
                bmem.read_into(page * PAGE_SIZE, dst)?;
            }
        }
        Ok(())
    }

    /// Phase 4: every request still standing goes to the store, in lane
    /// order, as one batch. Segment data lies at `k * PAGE_SIZE` steps in
    /// the data buffer; the store wants it contiguous, so it is packed
    /// before and unpacked after (in place, towards the front).
    fn run_store(store: &mut S, data: &mut [u8], works: &mut [Work]) -> Option<StoreFailures> {
        for w in works.iter_mut() {
            if w.status.is_none() && matches!(w.action, Action::Read { .. } | Action::Write { .. })
            {
                pack(data, w, true);
            }
        }
        // Disjoint slices of the data buffer, in order of data_off.
        let mut ios: Vec<Io<'_>> = Vec::new();
        let mut which = Vec::new();
        let mut rest: &mut [u8] = data;
        let mut consumed = 0usize;
        for (wi, w) in works.iter().enumerate() {
            if w.status.is_some() {
                continue;
            }
            let (kind, sector) = match w.action {
                Action::None => continue,
                Action::Read { sector } => (IoKind::Read, sector),
                Action::Write { sector, fua } => (IoKind::Write { fua }, sector),
                Action::Flush => (IoKind::Flush, 0),
                Action::Discard { sector, sectors } => (IoKind::Discard { sectors }, sector),
            };
            let len = match kind {
                IoKind::Read | IoKind::Write { .. } => w.data_len,
                _ => 0,
            };
            let skip = w.data_off.saturating_sub(consumed);
            let taken = core::mem::take(&mut rest);
            if skip + len > taken.len() {
                rest = taken;
                continue;
            }
            let (_, tail) = taken.split_at_mut(skip);
            let (buf, tail) = tail.split_at_mut(len);
            rest = tail;
            consumed = w.data_off + len;
            ios.push(Io::new(kind, sector, buf));
            which.push(wi);
        }
        store.execute(&mut ios);
        let results: Vec<_> = ios.iter().map(|io| io.result).collect();
        drop(ios);
        let mut failed = None;
        for (wi, r) in which.into_iter().zip(results) {
            let w = &mut works[wi];
            w.status = Some(status_of(w.id, r, &mut failed));
        }
        for w in works.iter_mut() {
            if w.status == Some(Status::Okay) && matches!(w.action, Action::Read { .. }) {
                pack(data, w, false);
            }
        }
        failed
    }
}

/// Phase 4 when the store works on the bounce pages: a request's data
/// is bytes `first_page * PAGE_SIZE ..` of them, `data_len` long (only
/// batches whose requests are all [`contiguous`] come here).
impl<P: Platform, S: Store> Server<P, S> {
    fn run_store_shared(
        store: &mut S,
        mem: &share_hal::SharedMem<'_>,
        works: &mut [Work],
    ) -> Option<StoreFailures> {
        let mut ios = Vec::with_capacity(works.len());
        let mut which = Vec::with_capacity(works.len());
        for (wi, w) in works.iter().enumerate() {
            if w.status.is_some() {
                continue;
            }
            let (kind, sector, len) = match w.action {
                Action::None => continue,
                Action::Read { sector } => (IoKind::Read, sector, w.data_len),
                Action::Write { sector, fua } => (IoKind::Write { fua }, sector, w.data_len),
                Action::Flush => (IoKind::Flush, 0, 0),
                Action::Discard { sector, sectors } => (IoKind::Discard { sectors }, sector, 0),
            };
            ios.push(SharedIo::new(kind, sector, w.first_page * PAGE_SIZE, len));
            which.push(wi);
        }
        store.execute_shared(mem, &mut ios);
        let mut failed = None;
        for (wi, io) in which.into_iter().zip(ios) {
            let w = &mut works[wi];
            w.status = Some(status_of(w.id, io.result, &mut failed));
        }
        failed
    }
}

/// Store failures of a batch: how many, and the first one's request id
/// and error (logged once per batch, within the member's log budget).
type StoreFailures = (u32, u64, StoreError);

/// The response status of a store result; failures are counted in `failed`.
fn status_of(
    id: u64,
    r: core::result::Result<(), StoreError>,
    failed: &mut Option<StoreFailures>,
) -> Status {
    match r {
        Ok(()) => Status::Okay,
        Err(StoreError::Unsupported) => Status::NotSupported,
        Err(e) => {
            match failed {
                Some((n, _, _)) => *n += 1,
                None => *failed = Some((1, id, e)),
            }
            Status::Error
        }
    }
}

/// ", N similar lines left out" when a log budget dropped some.
struct LeftOut(u64);

impl core::fmt::Display for LeftOut {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} lines from this member left out before this one)"),
        }
    }
}

/// A batch's view of its member's pass: what it may still cost.
struct BatchCtx<'a> {
    discard: &'a mut Option<DiscardCursor>,
    log: &'a mut LogBudget,
    now: u64,
    cost: &'a mut PassCost,
    /// The pass budget stopped the batch: serve the others first.
    spent: bool,
}

/// Whether segments' data, each at the start of its own bounce page, lies
/// end to end: every segment but the last a whole page.
fn contiguous(segs: &[Segment]) -> bool {
    segs.iter()
        .take(segs.len().saturating_sub(1))
        .all(|s| usize::from(s.byte_len()) == PAGE_SIZE)
}

/// The grant refs of an indirect request's pages.
fn indirect_grefs(r: &RequestRepr) -> &[GrantRef] {
    match r {
        RequestRepr::Indirect { pages, .. } => pages.as_slice(),
        _ => &[],
    }
}

/// Moves a request's segment data between the spread layout (segment `k`
/// at `data_off + k * PAGE_SIZE`) and the packed one (segments end to end
/// from `data_off`). Packing moves data towards the front, so it runs
/// front to back; unpacking back to front.
fn pack(data: &mut [u8], w: &Work, packing: bool) {
    // Every segment but the last a whole page: the two layouts are the
    // same bytes (the usual case: 4 KiB and 1 MiB I/O), and moving each
    // page onto itself cost 15% of a 1 MiB write.
    if contiguous(&w.segs) {
        return;
    }
    let mut packed_at = Vec::with_capacity(w.segs.len());
    let mut at = w.data_off;
    for s in &w.segs {
        packed_at.push(at);
        at += usize::from(s.byte_len());
    }
    let order: Vec<usize> = if packing {
        (0..w.segs.len()).collect()
    } else {
        (0..w.segs.len()).rev().collect()
    };
    for k in order {
        let len = usize::from(w.segs[k].byte_len());
        let spread = w.data_off + k * PAGE_SIZE;
        let packed = packed_at[k];
        if spread + len > data.len() || packed + len > data.len() {
            continue;
        }
        if packing {
            data.copy_within(spread..spread + len, packed);
        } else {
            data.copy_within(packed..packed + len, spread);
        }
    }
}

#[cfg(test)]
mod tests;
