//! The member side of a blk share: attach, submit requests naming pages
//! the member granted to the server, match responses by id.
//!
//! The server is a peer too: the control fields are copied once on attach
//! and parsed; each response slot is copied once, parsed, and its id must
//! name a request in flight with the same op (an unknown or repeated id is
//! a protocol error, the lesson of Qubes' QSB #23).

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use share_hal::lane::{Consumer, ConsumerState, Producer, ProducerState};
use share_hal::platform::{Access, PageBlock, Platform, PAGE_SIZE};
use share_hal::share::{Attached, ShareRef};
use share_hal::wire::blk::{
    self, features, BlkLayout, Control, ControlRepr, Dir, IndirectPages, InlineSegments, Request,
    RequestRepr, Response, ResponseRepr, Segment, Status, REQUEST_SIZE, RESPONSE_SIZE,
    SECTORS_PER_PAGE, SEGMENT_LEN,
};
use share_hal::{DomId, Error, GrantRef, Result, SharedMem};

/// One answered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub id: u64,
    pub op: u8,
    pub status: Status,
}

/// Pages of the member granted to the server for one or more requests.
pub struct Buffer<P: Platform> {
    pages: Option<P::Pages>,
    grefs: Vec<GrantRef>,
}

impl<P: Platform> Buffer<P> {
    /// Allocates `count` pages and grants each to `server`.
    pub fn new(p: &mut P, server: DomId, count: usize, access: Access) -> Result<Self> {
        let pages = p.alloc_pages(count)?;
        let mut b = Buffer {
            pages: None,
            grefs: Vec::with_capacity(count),
        };
        for i in 0..count {
            let frame = pages.frame(i).ok_or(Error::OutOfMemory)?;
            match p.grant(frame, server, access) {
                Ok(g) => b.grefs.push(g),
                Err(e) => {
                    b.pages = Some(pages);
                    let _ = b.release(p);
                    return Err(e);
                }
            }
        }
        b.pages = Some(pages);
        Ok(b)
    }

    pub fn mem(&self) -> SharedMem<'_> {
        match &self.pages {
            Some(p) => p.mem(),
            None => SharedMem::from_slice(&mut []),
        }
    }

    pub fn grefs(&self) -> &[GrantRef] {
        &self.grefs
    }

    /// Segments covering `sectors` sectors from the start of page `first`,
    /// whole pages but the last.
    pub fn segments(&self, first: usize, sectors: u64) -> Result<Vec<Segment>> {
        let per = u64::from(SECTORS_PER_PAGE);
        let pages = sectors.div_ceil(per) as usize;
        if sectors == 0 || first + pages > self.grefs.len() {
            return Err(Error::InvalidArgument {
                what: "buffer too small for the request",
            });
        }
        Ok((0..pages)
            .map(|k| {
                let left = sectors - k as u64 * per;
                Segment {
                    gref: self.grefs[first + k],
                    first_sect: 0,
                    last_sect: (left.min(per) - 1) as u8,
                }
            })
            .collect())
    }

    /// Ends the grants; the pages are freed once none is in use (else kept
    /// forever, never reused under the server).
    pub fn release(mut self, p: &mut P) -> Result<()> {
        let mut first = None;
        for g in self.grefs.drain(..) {
            if let Err(e) = p.revoke(g) {
                first.get_or_insert(e);
            }
        }
        if first.is_some() {
            if let Some(pages) = self.pages.take() {
                core::mem::forget(pages);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl<P: Platform> Drop for Buffer<P> {
    fn drop(&mut self) {
        // Without the platform the grants cannot be ended: the pages must
        // never be reused while the server may still copy to them.
        if !self.grefs.is_empty() {
            if let Some(pages) = self.pages.take() {
                core::mem::forget(pages);
            }
        }
    }
}

/// A member's connection to one disk.
pub struct BlkClient<P: Platform> {
    share: Attached<P>,
    layout: BlkLayout,
    control: ControlRepr,
    requests: ProducerState,
    responses: ConsumerState,
    /// id -> op byte of every request submitted and not yet answered.
    in_flight: BTreeMap<u64, u8>,
    next_id: u64,
}

impl<P: Platform> BlkClient<P> {
    /// Attaches to the disk share `share_ref` names.
    pub fn attach(p: &mut P, share_ref: ShareRef) -> Result<Self> {
        let share = Attached::attach(p, share_ref)?;
        match Self::setup(&share) {
            Ok((layout, control, requests, responses)) => Ok(BlkClient {
                share,
                layout,
                control,
                requests,
                responses,
                in_flight: BTreeMap::new(),
                next_id: 1,
            }),
            Err(e) => {
                let _ = share.detach(p);
                Err(e)
            }
        }
    }

    fn setup(
        share: &Attached<P>,
    ) -> Result<(BlkLayout, ControlRepr, ProducerState, ConsumerState)> {
        let layout = BlkLayout::new(share.numpages() as u32)?;
        let mem = share.mem();
        let mut c = [0u8; blk::CONTROL_LEN];
        mem.read_into(0, &mut c)?;
        let control = ControlRepr::parse(&Control::new_unchecked(&c[..]))?;
        let prod = Producer::attach(layout.requests.window(mem)?, layout.requests.lane()?)?;
        let cons = Consumer::attach(layout.responses.window(mem)?, layout.responses.lane()?)?;
        Ok((layout, control, prod.park(), cons.park()))
    }

    /// The disk as the server offered it (validated copy).
    pub fn control(&self) -> &ControlRepr {
        &self.control
    }

    pub fn server(&self) -> DomId {
        self.share.owner()
    }

    /// The share's pages as mapped, to play a hostile member in tests
    /// (rewrite lane indexes, slots); an honest member never needs it.
    pub fn raw_share(&self) -> SharedMem<'_> {
        self.share.mem()
    }

    /// Where the lanes are.
    pub fn layout(&self) -> &BlkLayout {
        &self.layout
    }

    /// Request slots of the lane: the most requests in flight.
    pub fn slots(&self) -> u32 {
        self.layout.requests.slot_count
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }

    /// Queues `req` (not yet published: [`kick`](Self::kick)). `Ok(false)`
    /// when the request lane is full.
    pub fn submit(&mut self, req: &RequestRepr) -> Result<bool> {
        let mut raw = [0u8; REQUEST_SIZE];
        req.emit(&mut Request::new_unchecked(&mut raw[..]))?;
        self.submit_raw(&raw)
    }

    /// Queues a request slot as given, however malformed (tests of hostile
    /// members); its id and op are remembered to match the response.
    pub fn submit_raw(&mut self, raw: &[u8; REQUEST_SIZE]) -> Result<bool> {
        let view = Request::new_unchecked(&raw[..]);
        let (id, op) = (view.id(), view.op());
        if self.in_flight.contains_key(&id) {
            return Err(Error::InvalidArgument {
                what: "request id already in flight",
            });
        }
        if self.with_requests(|prod| prod.push(raw))?? {
            self.in_flight.insert(id, op);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Publishes queued requests and triggers the server if it asked.
    pub fn kick(&mut self, p: &mut P) -> Result<()> {
        if self.with_requests(|prod| prod.publish())?? {
            self.share.trigger(p)?;
        }
        Ok(())
    }

    /// Runs `f` on the request lane, resumed from and parked back into
    /// our private indexes.
    fn with_requests<R>(&mut self, f: impl FnOnce(&mut Producer<'_>) -> R) -> Result<R> {
        let mem = self.share.mem();
        let mut prod = Producer::resume(
            self.layout.requests.window(mem)?,
            self.layout.requests.lane()?,
            self.requests,
        )?;
        let r = f(&mut prod);
        self.requests = prod.park();
        Ok(r)
    }

    /// Runs `f` on the response lane (and the ids in flight), resumed from
    /// and parked back into our private indexes.
    fn with_responses<R>(
        &mut self,
        f: impl FnOnce(&mut Consumer<'_>, &mut BTreeMap<u64, u8>) -> R,
    ) -> Result<R> {
        let mem = self.share.mem();
        let mut cons = Consumer::resume(
            self.layout.responses.window(mem)?,
            self.layout.responses.lane()?,
            self.responses,
        )?;
        let r = f(&mut cons, &mut self.in_flight);
        self.responses = cons.park();
        Ok(r)
    }

    /// Takes every response published so far. A response whose id is not
    /// in flight, or whose op differs, is a protocol error.
    pub fn poll(&mut self, p: &mut P, out: &mut Vec<Completion>) -> Result<usize> {
        let (r, released) = self.with_responses(|cons, in_flight| {
            let r = Self::take(cons, in_flight, out);
            (r, cons.release())
        })?;
        let n = r?;
        if released? {
            self.share.trigger(p)?;
        }
        Ok(n)
    }

    fn take(
        cons: &mut Consumer<'_>,
        in_flight: &mut BTreeMap<u64, u8>,
        out: &mut Vec<Completion>,
    ) -> Result<usize> {
        let mut n = 0;
        cons.poll()?;
        let mut raw = [0u8; RESPONSE_SIZE];
        while cons.pop_into(&mut raw)? {
            let r = ResponseRepr::parse(&Response::new_unchecked(&raw[..]))?;
            match in_flight.get(&r.id) {
                Some(&op) if op == r.op => {
                    in_flight.remove(&r.id);
                }
                _ => {
                    return Err(Error::Protocol {
                        what: "blk response id not in flight (or op differs)",
                    })
                }
            }
            out.push(Completion {
                id: r.id,
                op: r.op,
                status: r.status,
            });
            n += 1;
        }
        Ok(n)
    }

    /// The final check before the caller sleeps on its own (an event
    /// loop polling the platform's descriptor): asks the server to trigger
    /// on its next response and returns the responses already waiting;
    /// sleep only if it is 0, else [`poll`](Self::poll) again.
    pub fn prepare_wait(&mut self) -> Result<u32> {
        self.with_responses(|cons, _| cons.prepare_wait())?
    }

    /// Waits until at least one response arrives or `deadline_ns` passes
    /// (`Err(TimedOut)`).
    pub fn wait(&mut self, p: &mut P, deadline_ns: u64) -> Result<Vec<Completion>> {
        let mut out = Vec::new();
        loop {
            if self.poll(p, &mut out)? > 0 {
                return Ok(out);
            }
            if self.prepare_wait()? > 0 {
                continue;
            }
            if p.now_ns() >= deadline_ns {
                return Err(Error::TimedOut);
            }
            match p.wait(Some(deadline_ns), &mut |_| {}) {
                Ok(()) | Err(Error::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for the response to `id` (others that arrive are returned in
    /// `others`).
    pub fn wait_for(
        &mut self,
        p: &mut P,
        id: u64,
        deadline_ns: u64,
        others: &mut Vec<Completion>,
    ) -> Result<Status> {
        loop {
            for c in self.wait(p, deadline_ns)? {
                if c.id == id {
                    return Ok(c.status);
                } else {
                    others.push(c);
                }
            }
        }
    }

    /// A read or write request of `sectors` sectors from page `first` of
    /// `buf`: direct when it fits a slot, else indirect (the segment list
    /// is written into `indirect`, granted to the server).
    #[allow(clippy::too_many_arguments)]
    pub fn rw_request(
        &mut self,
        dir: Dir,
        fua: bool,
        sector: u64,
        buf: &Buffer<P>,
        first: usize,
        sectors: u64,
        indirect: Option<&Buffer<P>>,
    ) -> Result<RequestRepr> {
        let id = self.next_id();
        let segs = buf.segments(first, sectors)?;
        if segs.len() <= blk::MAX_INLINE_SEGMENTS {
            return Ok(RequestRepr::Direct {
                id,
                dir,
                fua,
                sector,
                segments: InlineSegments::new(&segs)?,
            });
        }
        let ind = indirect.ok_or(Error::InvalidArgument {
            what: "request needs indirect pages",
        })?;
        if self.control.features & features::INDIRECT == 0
            || segs.len() > usize::from(self.control.max_indirect_segments)
        {
            return Err(Error::InvalidArgument {
                what: "request larger than the server's indirect limit",
            });
        }
        let n_pages = blk::indirect_pages_for(segs.len() as u16);
        if ind.grefs().len() < n_pages {
            return Err(Error::InvalidArgument {
                what: "too few indirect pages",
            });
        }
        let mut list = vec![0u8; n_pages * PAGE_SIZE];
        for (i, s) in segs.iter().enumerate() {
            s.emit(&mut list[i * SEGMENT_LEN..(i + 1) * SEGMENT_LEN])?;
        }
        ind.mem().write_from(0, &list)?;
        Ok(RequestRepr::Indirect {
            id,
            dir,
            fua,
            sector,
            nr_segments: segs.len() as u16,
            pages: IndirectPages::new(&ind.grefs()[..n_pages])?,
        })
    }

    /// Reads `out.len()` bytes (whole sectors) from `sector`, and waits.
    pub fn read(
        &mut self,
        p: &mut P,
        sector: u64,
        out: &mut [u8],
        deadline_ns: u64,
    ) -> Result<Status> {
        self.sync_rw(p, Dir::Read, false, sector, out, deadline_ns)
    }

    /// Writes `data` (whole sectors) at `sector`, and waits.
    pub fn write(
        &mut self,
        p: &mut P,
        sector: u64,
        data: &[u8],
        fua: bool,
        deadline_ns: u64,
    ) -> Result<Status> {
        let mut copy = data.to_vec();
        self.sync_rw(p, Dir::Write, fua, sector, &mut copy, deadline_ns)
    }

    fn sync_rw(
        &mut self,
        p: &mut P,
        dir: Dir,
        fua: bool,
        sector: u64,
        data: &mut [u8],
        deadline_ns: u64,
    ) -> Result<Status> {
        if data.is_empty() || !data.len().is_multiple_of(blk::SECTOR_SIZE) {
            return Err(Error::InvalidArgument {
                what: "I/O of whole sectors",
            });
        }
        let owner = self.server();
        let pages = data.len().div_ceil(PAGE_SIZE);
        let buf = Buffer::new(p, owner, pages, Access::ReadWrite)?;
        let ind_pages = if pages > blk::MAX_INLINE_SEGMENTS {
            blk::indirect_pages_for(pages.min(usize::from(u16::MAX)) as u16)
        } else {
            0
        };
        let ind = if ind_pages > 0 {
            Some(Buffer::new(p, owner, ind_pages, Access::ReadOnly)?)
        } else {
            None
        };
        let r = (|| -> Result<Status> {
            if dir == Dir::Write {
                buf.mem().write_from(0, data)?;
            }
            let sectors = (data.len() / blk::SECTOR_SIZE) as u64;
            let req = self.rw_request(dir, fua, sector, &buf, 0, sectors, ind.as_ref())?;
            let st = self.run(p, &req, deadline_ns)?;
            if dir == Dir::Read && st == Status::Okay {
                buf.mem().read_into(0, data)?;
            }
            Ok(st)
        })();
        let released = buf.release(p);
        if let Some(i) = ind {
            let _ = i.release(p);
        }
        let st = r?;
        released?;
        Ok(st)
    }

    /// Flushes, and waits.
    pub fn flush(&mut self, p: &mut P, deadline_ns: u64) -> Result<Status> {
        let id = self.next_id();
        self.run(p, &RequestRepr::Flush { id }, deadline_ns)
    }

    /// Discards, and waits.
    pub fn discard(
        &mut self,
        p: &mut P,
        sector: u64,
        sectors: u64,
        deadline_ns: u64,
    ) -> Result<Status> {
        let id = self.next_id();
        self.run(
            p,
            &RequestRepr::Discard {
                id,
                sector,
                nr_sectors: sectors,
            },
            deadline_ns,
        )
    }

    /// Submits one request, publishes, and waits for its response.
    pub fn run(&mut self, p: &mut P, req: &RequestRepr, deadline_ns: u64) -> Result<Status> {
        if !self.submit(req)? {
            return Err(Error::InvalidArgument {
                what: "request lane full",
            });
        }
        self.kick(p)?;
        let mut others = Vec::new();
        let st = self.wait_for(p, req.id(), deadline_ns, &mut others)?;
        if !others.is_empty() {
            return Err(Error::InvalidArgument {
                what: "synchronous I/O while other requests were in flight",
            });
        }
        Ok(st)
    }

    /// Closes the port and unmaps the share (requests in flight are
    /// forgotten).
    pub fn detach(self, p: &mut P) -> Result<()> {
        self.share.detach(p)
    }
}
