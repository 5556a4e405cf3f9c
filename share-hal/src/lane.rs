//! Lanes: single-producer single-consumer rings of fixed-size slots in
//! share pages.
//!
//! A lane is the share's equivalent of Xen's `io/ring.h` ring, cut in two:
//! one lane carries one direction. Both indexes are free-running `u32`s that
//! wrap; the slot of index `i` is `i % slot_count`.
//!
//! ```text
//! offset    0  prod        (written by the producer)
//! offset   64  prod_event  (written by the consumer: "trigger me when prod passes this")
//! offset  128  cons        (written by the consumer)
//! offset  192  cons_event  (written by the producer: "trigger me when cons passes this")
//! offset  256  slot 0, slot 1, ... slot (slot_count - 1), `slot_size` bytes each
//! ```
//!
//! Each index sits on its own cache line so that the producer's stores never
//! invalidate the line the consumer is spinning on, and the other way round.
//!
//! The peer is hostile. Each side keeps its own index privately and only
//! *publishes* it; the shared copy is never read back as truth. The peer's
//! index is read once per batch and checked (`prod - cons <= slot_count`,
//! wrapping) before any slot is touched; a violation is `Error::Protocol`.
//! The layout (slot count and size) comes from our own configuration, never
//! from the shared pages. All access goes through [`SharedMem`], so a peer
//! that scribbles over slots or indexes can make us read garbage, but never
//! make us touch memory outside the lane or panic.
//!
//! Triggers are suppressed as in `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: after
//! publishing, a side triggers its peer only if the peer's event index lies
//! in the range just published. A side that runs dry (consumer) or full
//! (producer) arms its event index and re-checks before it waits, so no
//! trigger is lost between the check and the wait.

use core::sync::atomic::{fence, Ordering};

use crate::error::{Error, Result};
use crate::volatile::SharedMem;

/// Byte offsets of the lane header: four free-running u32 indexes, each
/// alone on a 64-byte cache line so producer and consumer never write the
/// same line (layout in `docs/protocol.md`).
pub mod header {
    /// Producer index: slots `cons..prod` are full. Written by the producer.
    pub const PROD: usize = 0;
    /// Written by the consumer: trigger me when `prod` passes this.
    pub const PROD_EVENT: usize = 64;
    /// Consumer index: slots `prod..cons+slot_count` are free. Written by
    /// the consumer.
    pub const CONS: usize = 128;
    /// Written by the producer: trigger me when `cons` passes this.
    pub const CONS_EVENT: usize = 192;
    /// Bytes of a lane header.
    pub const LEN: usize = 256;
}

/// Size of the lane header, before the first slot.
pub const HEADER_LEN: usize = header::LEN;

/// Largest slot count: keeps `prod - cons <= slot_count` meaningful on
/// wrapping `u32` indexes.
pub const MAX_SLOTS: u32 = 1 << 30;

/// Shape of a lane, from the caller's own configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaneLayout {
    slot_count: u32,
    slot_size: usize,
}

impl LaneLayout {
    /// `slot_count` must be a power of two (at most [`MAX_SLOTS`]);
    /// `slot_size` a non-zero multiple of 8, so slots stay 8-aligned for
    /// the word-wise copies of [`SharedMem`].
    pub fn new(slot_count: u32, slot_size: usize) -> Result<Self> {
        if !slot_count.is_power_of_two() || slot_count > MAX_SLOTS {
            return Err(Error::InvalidArgument {
                what: "lane slot count must be a power of two of at most 2^30",
            });
        }
        if slot_size == 0 || !slot_size.is_multiple_of(8) {
            return Err(Error::InvalidArgument {
                what: "lane slot size must be a non-zero multiple of 8",
            });
        }
        let layout = LaneLayout {
            slot_count,
            slot_size,
        };
        if (slot_count as usize)
            .checked_mul(slot_size)
            .and_then(|b| b.checked_add(HEADER_LEN))
            .is_none()
        {
            return Err(Error::InvalidArgument {
                what: "lane does not fit the address space",
            });
        }
        Ok(layout)
    }

    /// The most slots of `slot_size` that fit `bytes` (e.g. a share's
    /// `numpages * PAGE_SIZE`) after the header, rounded down to a power of
    /// two.
    pub fn fit(bytes: usize, slot_size: usize) -> Result<Self> {
        if slot_size == 0 {
            return Err(Error::InvalidArgument {
                what: "lane slot size must be a non-zero multiple of 8",
            });
        }
        let room = bytes.saturating_sub(HEADER_LEN) / slot_size;
        if room == 0 {
            return Err(Error::InvalidArgument {
                what: "lane pages hold no slot",
            });
        }
        let count = 1u32 << (usize::BITS - 1 - room.leading_zeros()).min(30);
        LaneLayout::new(count, slot_size)
    }

    #[inline]
    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    #[inline]
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Bytes the lane occupies: header and slots.
    pub fn bytes(&self) -> usize {
        HEADER_LEN + self.slot_count as usize * self.slot_size
    }

    #[inline]
    fn slot_offset(&self, index: u32) -> usize {
        HEADER_LEN + (index & (self.slot_count - 1)) as usize * self.slot_size
    }

    fn window<'a>(&self, mem: SharedMem<'a>) -> Result<SharedMem<'a>> {
        if mem.len() < self.bytes() {
            return Err(Error::InvalidArgument {
                what: "lane window is smaller than its layout",
            });
        }
        if !(mem.as_ptr() as usize).is_multiple_of(64) {
            return Err(Error::InvalidArgument {
                what: "lane window must be 64-byte aligned",
            });
        }
        mem.slice(0, self.bytes())
    }
}

/// Whether publishing indexes `old..new` crossed the peer's `event` index:
/// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`'s rule, in wrapping arithmetic.
pub fn crossed(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Writes a fresh lane header with both indexes at `start`, events armed
/// for the first slot. Done by the owner before it grants the pages; `start`
/// is usually 0 (tests use values near `u32::MAX` to exercise wrapping).
pub fn init(mem: SharedMem<'_>, layout: LaneLayout, start: u32) -> Result<()> {
    let mem = layout.window(mem)?;
    mem.store_u32(header::PROD, start, Ordering::Relaxed)?;
    mem.store_u32(header::CONS, start, Ordering::Relaxed)?;
    mem.store_u32(header::PROD_EVENT, start.wrapping_add(1), Ordering::Relaxed)?;
    mem.store_u32(header::CONS_EVENT, start.wrapping_add(1), Ordering::Relaxed)?;
    fence(Ordering::Release);
    Ok(())
}

/// A producer's private indexes between two borrows of the lane
/// ([`Producer::park`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerState {
    prod: u32,
    published: u32,
    cons: u32,
}

/// A consumer's private indexes between two borrows of the lane
/// ([`Consumer::park`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerState {
    cons: u32,
    published: u32,
    prod: u32,
}

/// The writing end of a lane.
#[derive(Debug)]
pub struct Producer<'a> {
    mem: SharedMem<'a>,
    layout: LaneLayout,
    /// Next slot to fill (private truth).
    prod: u32,
    /// Value last stored to the shared `prod`.
    published: u32,
    /// Consumer index last read and validated.
    cons: u32,
}

impl<'a> Producer<'a> {
    /// Attaches to a lane whose header [`init`] wrote. Reads the shared
    /// `prod` once to learn where to start; from then on the private copy
    /// is the truth.
    pub fn attach(mem: SharedMem<'a>, layout: LaneLayout) -> Result<Self> {
        let mem = layout.window(mem)?;
        let prod = mem.load_u32(header::PROD, Ordering::Acquire)?;
        Ok(Producer {
            mem,
            layout,
            prod,
            published: prod,
            // No free slot is known until the consumer's index is read.
            cons: prod.wrapping_sub(layout.slot_count),
        })
    }

    pub fn layout(&self) -> LaneLayout {
        self.layout
    }

    /// Ends this borrow of the lane, keeping the private indexes, so that
    /// a long-lived owner (a switch port) can store them next to the share
    /// whose memory the lane borrows, and [`resume`](Self::resume) per
    /// batch without ever reading its own index back from the page.
    pub fn park(self) -> ProducerState {
        ProducerState {
            prod: self.prod,
            published: self.published,
            cons: self.cons,
        }
    }

    /// Picks up a lane [`park`](Self::park)ed earlier over the same window
    /// and layout; nothing is read from the page.
    pub fn resume(mem: SharedMem<'a>, layout: LaneLayout, state: ProducerState) -> Result<Self> {
        Ok(Producer {
            mem: layout.window(mem)?,
            layout,
            prod: state.prod,
            published: state.published,
            cons: state.cons,
        })
    }

    /// Slots known free without reading the consumer's index again.
    #[inline]
    pub fn free_cached(&self) -> u32 {
        self.layout.slot_count - self.prod.wrapping_sub(self.cons)
    }

    /// Slots filled but not yet published.
    pub fn unpublished(&self) -> u32 {
        self.prod.wrapping_sub(self.published)
    }

    /// Reads the consumer's index once and returns the free slots.
    pub fn refresh(&mut self) -> Result<u32> {
        let cons = self.mem.load_u32(header::CONS, Ordering::Acquire)?;
        if self.prod.wrapping_sub(cons) > self.layout.slot_count {
            return Err(Error::Protocol {
                what: "lane consumer index is ahead of the producer",
            });
        }
        self.cons = cons;
        Ok(self.free_cached())
    }

    /// Ensures `n` free slots, reading the consumer's index only when the
    /// cached view does not already show them.
    #[inline]
    pub fn reserve(&mut self, n: u32) -> Result<bool> {
        if self.free_cached() >= n {
            return Ok(true);
        }
        Ok(self.refresh()? >= n)
    }

    /// The `k`-th free slot after the last filled one, to write into before
    /// [`commit`](Self::commit). `k` must be below [`free_cached`](Self::free_cached).
    #[inline]
    pub fn slot(&self, k: u32) -> Result<SharedMem<'a>> {
        if k >= self.free_cached() {
            return Err(Error::InvalidArgument {
                what: "lane slot beyond the reserved free slots",
            });
        }
        let off = self.layout.slot_offset(self.prod.wrapping_add(k));
        self.mem.slice(off, self.layout.slot_size)
    }

    /// Asks the CPU to bring in, for writing, the first `bytes` (two
    /// cache lines at most) of the free slot `k` after the last filled
    /// one, if it is known free: a hint, nothing is written.
    #[inline]
    pub fn prefetch(&self, k: u32, bytes: usize) {
        if k < self.free_cached() {
            let off = self.layout.slot_offset(self.prod.wrapping_add(k));
            self.mem.prefetch_write(off);
            if bytes > 64 {
                self.mem.prefetch_write(off + 64);
            }
        }
    }

    /// Marks the next `n` slots filled (still private until published).
    #[inline]
    pub fn commit(&mut self, n: u32) -> Result<()> {
        if n > self.free_cached() {
            return Err(Error::InvalidArgument {
                what: "lane commit beyond the reserved free slots",
            });
        }
        self.prod = self.prod.wrapping_add(n);
        Ok(())
    }

    /// Copies `data` into the next slot and commits it; `Ok(false)` if the
    /// lane is full.
    pub fn push(&mut self, data: &[u8]) -> Result<bool> {
        if data.len() > self.layout.slot_size {
            return Err(Error::InvalidArgument {
                what: "lane push longer than a slot",
            });
        }
        if !self.reserve(1)? {
            return Ok(false);
        }
        self.slot(0)?.write_from(0, data)?;
        self.commit(1)?;
        Ok(true)
    }

    /// Publishes every committed slot with one index store. Returns whether
    /// the consumer asked to be triggered for them.
    pub fn publish(&mut self) -> Result<bool> {
        let old = self.published;
        let new = self.prod;
        if old == new {
            return Ok(false);
        }
        // Release: the slot contents are visible before the index is.
        self.mem.store_u32(header::PROD, new, Ordering::Release)?;
        self.published = new;
        // The index store must be globally visible before prod_event is
        // read (store-load order): otherwise the consumer may arm its event
        // and re-check prod in between, both seeing the old state, and the
        // trigger is lost. Only a full fence orders a store before a load.
        fence(Ordering::SeqCst);
        let event = self.mem.load_u32(header::PROD_EVENT, Ordering::Relaxed)?;
        Ok(crossed(old, new, event))
    }

    /// The final check before waiting for `needed` free slots: asks the
    /// consumer to trigger once it frees a slot beyond what we saw, then
    /// reads its index again. Returns the free slots; wait for a trigger
    /// only if they are fewer than `needed`, and then the trigger is armed.
    pub fn prepare_wait(&mut self, needed: u32) -> Result<u32> {
        // The event is relative to the consumer index we last saw. If the
        // consumer moved between that look and the arming, its release may
        // have missed the event, so arm again from the new index. An honest
        // consumer frees at least one slot per extra round, so this ends
        // within `needed` rounds; the bound stops a hostile one from keeping
        // us here.
        let mut free = self.refresh()?;
        for _ in 0..=self.layout.slot_count {
            if free >= needed {
                break;
            }
            let seen = self.cons;
            self.mem
                .store_u32(header::CONS_EVENT, seen.wrapping_add(1), Ordering::Relaxed)?;
            // Store-load order, as in publish.
            fence(Ordering::SeqCst);
            free = self.refresh()?;
            if self.cons == seen {
                break;
            }
        }
        Ok(free)
    }
}

/// The reading end of a lane.
#[derive(Debug)]
pub struct Consumer<'a> {
    mem: SharedMem<'a>,
    layout: LaneLayout,
    /// Next slot to read (private truth).
    cons: u32,
    /// Value last stored to the shared `cons`.
    published: u32,
    /// Producer index of the current batch, validated.
    prod: u32,
}

impl<'a> Consumer<'a> {
    /// Attaches to a lane whose header [`init`] wrote. Reads the shared
    /// `cons` once to learn where to start.
    pub fn attach(mem: SharedMem<'a>, layout: LaneLayout) -> Result<Self> {
        let mem = layout.window(mem)?;
        let cons = mem.load_u32(header::CONS, Ordering::Acquire)?;
        Ok(Consumer {
            mem,
            layout,
            cons,
            published: cons,
            prod: cons,
        })
    }

    pub fn layout(&self) -> LaneLayout {
        self.layout
    }

    /// Ends this borrow of the lane, keeping the private indexes (see
    /// [`Producer::park`]).
    pub fn park(self) -> ConsumerState {
        ConsumerState {
            cons: self.cons,
            published: self.published,
            prod: self.prod,
        }
    }

    /// Picks up a lane [`park`](Self::park)ed earlier over the same window
    /// and layout; nothing is read from the page.
    pub fn resume(mem: SharedMem<'a>, layout: LaneLayout, state: ConsumerState) -> Result<Self> {
        Ok(Consumer {
            mem: layout.window(mem)?,
            layout,
            cons: state.cons,
            published: state.published,
            prod: state.prod,
        })
    }

    /// Starts a batch: reads the producer's index once, checks it, and
    /// returns the slots ready to read. Slots beyond this snapshot are not
    /// read until the next `poll`, whatever the producer does meanwhile.
    pub fn poll(&mut self) -> Result<u32> {
        let prod = self.mem.load_u32(header::PROD, Ordering::Acquire)?;
        if prod.wrapping_sub(self.cons) > self.layout.slot_count {
            return Err(Error::Protocol {
                what: "lane producer index is more than a ring ahead of the consumer",
            });
        }
        self.prod = prod;
        Ok(self.pending())
    }

    /// Slots left in the current batch.
    #[inline]
    pub fn pending(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }

    /// The next slot of the batch, or `None` when the batch is done. The
    /// producer may still write it: copy what you need out once.
    #[inline]
    pub fn slot(&self) -> Result<Option<SharedMem<'a>>> {
        if self.pending() == 0 {
            return Ok(None);
        }
        let off = self.layout.slot_offset(self.cons);
        self.mem.slice(off, self.layout.slot_size).map(Some)
    }

    /// Asks the CPU to bring in the first `bytes` (two cache lines at
    /// most) of the slot `ahead` slots after the current one, if it is in
    /// the batch: a hint, nothing is read.
    #[inline]
    pub fn prefetch(&self, ahead: u32, bytes: usize) {
        if self.pending() > ahead {
            let off = self.layout.slot_offset(self.cons.wrapping_add(ahead));
            self.mem.prefetch(off);
            if bytes > 64 {
                self.mem.prefetch(off + 64);
            }
        }
    }

    /// The lane's window (header and slots), for a caller that keeps
    /// where a slot was ([`current_offset`](Self::current_offset)) to copy
    /// from it later, before it releases the slot.
    #[inline]
    pub fn window(&self) -> SharedMem<'a> {
        self.mem
    }

    /// Offset in [`window`](Self::window) of the slot [`slot`](Self::slot)
    /// returns.
    #[inline]
    pub fn current_offset(&self) -> usize {
        self.layout.slot_offset(self.cons)
    }

    /// Done with the current slot (still private until released).
    #[inline]
    pub fn advance(&mut self) {
        if self.pending() > 0 {
            self.cons = self.cons.wrapping_add(1);
        }
    }

    /// Copies the next slot's first `dst.len()` bytes out and advances;
    /// `Ok(false)` when the batch is done.
    pub fn pop_into(&mut self, dst: &mut [u8]) -> Result<bool> {
        if dst.len() > self.layout.slot_size {
            return Err(Error::InvalidArgument {
                what: "lane pop longer than a slot",
            });
        }
        match self.slot()? {
            None => Ok(false),
            Some(slot) => {
                slot.read_into(0, dst)?;
                self.advance();
                Ok(true)
            }
        }
    }

    /// Hands every slot read so far back to the producer with one index
    /// store. Returns whether the producer asked to be triggered.
    pub fn release(&mut self) -> Result<bool> {
        let old = self.published;
        let new = self.cons;
        if old == new {
            return Ok(false);
        }
        // Release: our reads of the slots finish before the producer may
        // reuse them.
        self.mem.store_u32(header::CONS, new, Ordering::Release)?;
        self.published = new;
        // Store-load order, as in Producer::publish.
        fence(Ordering::SeqCst);
        let event = self.mem.load_u32(header::CONS_EVENT, Ordering::Relaxed)?;
        Ok(crossed(old, new, event))
    }

    /// The final check before waiting for slots: asks the producer to
    /// trigger on its next publication, then polls again. Returns the slots
    /// ready; wait for a trigger only if it is 0.
    pub fn prepare_wait(&mut self) -> Result<u32> {
        let want = self.cons.wrapping_add(1);
        self.mem
            .store_u32(header::PROD_EVENT, want, Ordering::Relaxed)?;
        fence(Ordering::SeqCst);
        self.poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::ptr::NonNull;

    /// A 64-byte-aligned private buffer standing in for share pages.
    struct Pages(Vec<u64>);

    impl Pages {
        fn new(bytes: usize) -> Self {
            // Over-allocate so a 64-aligned window of `bytes` always fits.
            Pages(vec![0u64; bytes / 8 + 8])
        }
        fn mem(&mut self) -> SharedMem<'_> {
            let base = self.0.as_mut_ptr().cast::<u8>();
            let skip = base.align_offset(64);
            let len = self.0.len() * 8 - skip;
            // SAFETY: the window lies inside the exclusively borrowed Vec,
            // which nobody else accesses while the window lives.
            unsafe { SharedMem::new(NonNull::new(base.add(skip)).unwrap(), len) }
        }
    }

    fn lane(
        pages: &mut Pages,
        count: u32,
        size: usize,
        start: u32,
    ) -> (Producer<'_>, Consumer<'_>) {
        let layout = LaneLayout::new(count, size).unwrap();
        let mem = pages.mem();
        init(mem, layout, start).unwrap();
        (
            Producer::attach(mem, layout).unwrap(),
            Consumer::attach(mem, layout).unwrap(),
        )
    }

    #[test]
    fn layout_rejects_bad_shapes() {
        assert!(LaneLayout::new(3, 8).is_err());
        assert!(LaneLayout::new(0, 8).is_err());
        assert!(LaneLayout::new(4, 12).is_err());
        assert!(LaneLayout::new(4, 0).is_err());
        assert!(LaneLayout::new(1 << 31, 8).is_err());
        assert_eq!(LaneLayout::new(4, 16).unwrap().bytes(), 256 + 64);
        let fit = LaneLayout::fit(4 * 4096, 2048).unwrap();
        assert_eq!((fit.slot_count(), fit.slot_size()), (4, 2048));
        let fit = LaneLayout::fit(4096, 64).unwrap();
        assert_eq!(fit.slot_count(), 32);
        assert!(LaneLayout::fit(255, 8).is_err());
    }

    #[test]
    fn parked_lanes_resume_from_private_indexes() {
        let mut pages = Pages::new(256 + 4 * 8);
        let layout = LaneLayout::new(4, 8).unwrap();
        let mem = pages.mem();
        init(mem, layout, u32::MAX - 1).unwrap();
        let mut p = Producer::attach(mem, layout).unwrap();
        let mut c = Consumer::attach(mem, layout).unwrap();
        let mut want = 0u8;
        let mut next = 0u8;
        for _ in 0..6 {
            for _ in 0..3 {
                assert!(p.push(&[next]).unwrap());
                next += 1;
            }
            p.publish().unwrap();
            let ps = p.park();
            assert_eq!(c.poll(), Ok(3));
            let cs = c.park();
            // A peer scribbling the indexes changes nothing: the parked
            // state, not the page, is the truth.
            mem.store_u32(header::PROD, 7, Ordering::Relaxed).unwrap();
            mem.store_u32(header::CONS, 9, Ordering::Relaxed).unwrap();
            p = Producer::resume(mem, layout, ps).unwrap();
            c = Consumer::resume(mem, layout, cs).unwrap();
            let mut b = [0u8; 1];
            while c.pop_into(&mut b).unwrap() {
                assert_eq!(b[0], want);
                want += 1;
            }
            c.release().unwrap();
            mem.store_u32(header::PROD, p.prod, Ordering::Relaxed)
                .unwrap();
            assert_eq!(p.refresh(), Ok(4));
        }
        assert_eq!(want, next);
    }

    #[test]
    fn crossed_follows_ring_h() {
        assert!(crossed(0, 1, 1));
        assert!(!crossed(0, 1, 2));
        assert!(crossed(0, 5, 3));
        assert!(!crossed(3, 5, 3));
        assert!(crossed(u32::MAX - 1, 2, 0));
        assert!(!crossed(u32::MAX - 1, 2, 3));
    }

    #[test]
    fn push_publish_poll_pop_across_wrap() {
        let mut pages = Pages::new(256 + 4 * 16);
        let (mut p, mut c) = lane(&mut pages, 4, 16, u32::MAX - 2);
        let mut next = 0u64;
        let mut want = 0u64;
        for round in 0..10 {
            let n = round % 4 + 1;
            for _ in 0..n {
                assert!(p.push(&next.to_le_bytes()).unwrap());
                next += 1;
            }
            p.publish().unwrap();
            assert_eq!(c.poll().unwrap(), n);
            let mut buf = [0u8; 8];
            while c.pop_into(&mut buf).unwrap() {
                assert_eq!(u64::from_le_bytes(buf), want);
                want += 1;
            }
            c.release().unwrap();
        }
        assert_eq!(next, want);
    }

    #[test]
    fn full_lane_refuses_until_released() {
        let mut pages = Pages::new(256 + 4 * 8);
        let (mut p, mut c) = lane(&mut pages, 4, 8, 0);
        for i in 0..4u8 {
            assert!(p.push(&[i]).unwrap());
        }
        assert!(!p.push(&[9]).unwrap());
        p.publish().unwrap();
        assert_eq!(p.prepare_wait(1).unwrap(), 0);
        c.poll().unwrap();
        let mut b = [0u8; 1];
        assert!(c.pop_into(&mut b).unwrap());
        // The producer armed cons_event, so freeing one slot triggers it.
        assert!(c.release().unwrap());
        assert!(p.push(&[9]).unwrap());
        assert!(p.slot(0).is_err());
        assert!(p.commit(1).is_err());
    }

    #[test]
    fn triggers_only_when_the_consumer_waits() {
        let mut pages = Pages::new(256 + 8 * 8);
        let (mut p, mut c) = lane(&mut pages, 8, 8, 7);
        // init armed prod_event for the first slot.
        assert!(p.push(&[1]).unwrap());
        assert!(p.publish().unwrap());
        // Consumer is busy (has not re-armed): no trigger.
        assert!(p.push(&[2]).unwrap());
        assert!(!p.publish().unwrap());
        assert_eq!(c.poll().unwrap(), 2);
        c.advance();
        c.advance();
        assert_eq!(c.prepare_wait().unwrap(), 0);
        assert!(p.push(&[3]).unwrap());
        assert!(p.push(&[4]).unwrap());
        assert!(p.publish().unwrap());
        // Nothing new: no store, no trigger.
        assert!(!p.publish().unwrap());
        // The final check catches slots published after arming.
        assert_eq!(c.prepare_wait().unwrap(), 2);
    }

    #[test]
    fn hostile_indexes_are_protocol_errors() {
        let mut pages = Pages::new(256 + 4 * 8);
        let layout = LaneLayout::new(4, 8).unwrap();
        let (mut p, mut c) = lane(&mut pages, 4, 8, 100);
        let mem = p.mem;
        mem.store_u32(header::PROD, 105, Ordering::Relaxed).unwrap();
        assert!(matches!(c.poll(), Err(Error::Protocol { .. })));
        mem.store_u32(header::PROD, 99, Ordering::Relaxed).unwrap();
        assert!(matches!(c.poll(), Err(Error::Protocol { .. })));
        mem.store_u32(header::PROD, 104, Ordering::Relaxed).unwrap();
        assert_eq!(c.poll().unwrap(), 4);
        assert!(c.slot().unwrap().is_some());
        mem.store_u32(header::CONS, 101, Ordering::Relaxed).unwrap();
        assert!(matches!(p.refresh(), Err(Error::Protocol { .. })));
        // A failed refresh leaves the producer's view as it was.
        assert_eq!(p.free_cached(), 0);
        assert_eq!(layout.slot_offset(100), layout.slot_offset(104));
    }

    #[test]
    fn windows_must_hold_the_layout() {
        let mut pages = Pages::new(512);
        let layout = LaneLayout::new(4, 8).unwrap();
        let mem = pages.mem();
        assert!(init(mem.slice(0, 256 + 31).unwrap(), layout, 0).is_err());
        assert!(init(mem.slice(8, 256 + 32).unwrap(), layout, 0).is_err());
        assert!(init(mem.slice(0, 256 + 32).unwrap(), layout, 0).is_ok());
    }
}
