//! Network frames over a lane.
//!
//! A frame goes into one or more 2 KiB slots, each starting with a slot
//! header (layout in `docs/protocol.md`, view in [`SlotHeader`]); a frame
//! longer than one slot's data continues in the next slot, every slot but
//! the last flagged `MORE`. Checksum offload fields count in the first slot
//! of a frame only, and so do segmentation offload fields.
//!
//! The sender fills as many frames as fit and publishes them with one index
//! store; the receiver reads the producer index once per batch and pops
//! frames until the batch is used up. A malformed frame is consumed whole
//! (up to its last `MORE` slot) and reported as one error, so one bad frame
//! never stalls the lane.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::lane::{Consumer, ConsumerState, LaneLayout, Producer, ProducerState};
use crate::volatile::SharedMem;
use crate::wire;
pub use crate::wire::net::{flags, SlotHeader, SLOT_HEADER_LEN};
use crate::wire::net::{Csum, FrameAssembler, Gso, SlotAction, GSO_MAX_FRAME, SLOT_DATA_MAX};

/// A slot header's private copy, 16-aligned like the slot, so the
/// volatile copy moves it in one SSE step instead of byte by byte.
#[repr(C, align(16))]
struct HeaderBuf([u8; SLOT_HEADER_LEN]);

/// How many slots ahead of the one it reads `next_lane` prefetches.
const PREFETCH_AHEAD: u32 = 4;

/// Slot size of network lanes: a standard frame fits in one slot.
pub const NET_SLOT_SIZE: usize = crate::wire::net::SLOT_SIZE;

/// Per-frame offload information.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// `CSUM_BLANK` and/or `DATA_VALIDATED`; `MORE` is the codec's own.
    pub flags: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// Segmentation offload (`wire::net::gso`): `NONE` (0) for an ordinary
    /// frame; otherwise `CSUM_BLANK` is set too.
    pub gso_type: u8,
    /// Segment payload size (the MSS for TCP); 0 without `gso_type`.
    pub gso_size: u16,
    /// `wire::net::gso::FLAG_ECN` or 0.
    pub gso_flags: u8,
}

impl FrameMeta {
    /// The segmentation offload request, checked as a receiver would.
    #[inline]
    pub fn gso(&self) -> Result<Option<Gso>> {
        // An ordinary frame: all three fields 0, nothing to parse.
        if (self.gso_type, self.gso_size, self.gso_flags) == (0, 0, 0) {
            return Ok(None);
        }
        Ok(Gso::from_fields(
            self.gso_type,
            self.gso_size,
            self.gso_flags,
        )?)
    }
}

fn check_shape(slot_size: usize, max_frame: usize) -> Result<usize> {
    if slot_size != NET_SLOT_SIZE {
        return Err(Error::InvalidArgument {
            what: "frame lanes have 2048-byte slots",
        });
    }
    if max_frame == 0 || max_frame > u32::MAX as usize {
        return Err(Error::InvalidArgument {
            what: "max frame length out of range",
        });
    }
    Ok(SLOT_DATA_MAX)
}

/// The sending side: frames into a lane.
#[derive(Debug)]
pub struct FrameSender<'a> {
    lane: Producer<'a>,
    cap: usize,
    max_frame: usize,
    /// Whether segmentation offload frames (up to `GSO_MAX_FRAME`) may go.
    gso: bool,
}

impl<'a> FrameSender<'a> {
    /// `max_frame` is the negotiated MTU plus link headers; longer frames
    /// are refused here, since the receiver would drop them.
    pub fn new(lane: Producer<'a>, max_frame: usize) -> Result<Self> {
        let cap = check_shape(lane.layout().slot_size(), max_frame)?;
        if max_frame.div_ceil(cap) > lane.layout().slot_count() as usize {
            return Err(Error::InvalidArgument {
                what: "a max frame does not fit in the lane",
            });
        }
        Ok(FrameSender {
            lane,
            cap,
            max_frame,
            gso: false,
        })
    }

    /// Lets segmentation offload frames (`FrameMeta::gso_type`, up to
    /// `GSO_MAX_FRAME` bytes) go, once the receiver accepted
    /// `features::GSO`. The lane must hold one such frame.
    pub fn with_gso(mut self) -> Result<Self> {
        if GSO_MAX_FRAME.div_ceil(self.cap) > self.lane.layout().slot_count() as usize {
            return Err(Error::InvalidArgument {
                what: "a segmentation offload frame does not fit in the lane",
            });
        }
        self.gso = true;
        Ok(self)
    }

    /// Slots a frame of `len` bytes takes.
    pub fn slots_for(&self, len: usize) -> u32 {
        len.div_ceil(self.cap).max(1) as u32
    }

    /// Writes `frame` into the lane without publishing it. `Ok(false)`:
    /// not enough free slots, nothing written.
    pub fn send(&mut self, frame: &[u8], meta: FrameMeta) -> Result<bool> {
        let gso = self.check(frame.len(), &meta)?;
        let data = |slot: &SharedMem<'a>, at: usize, end: usize| {
            slot.write_from(SLOT_HEADER_LEN, frame.get(at..end).unwrap_or(&[]))
        };
        if frame.len() <= self.cap && gso.is_none() {
            return self.send_one(frame.len(), meta, data);
        }
        self.send_split(frame.len(), gso, meta, data)
    }

    /// Writes a frame read by [`FrameReceiver::next_lane`] into this lane
    /// without publishing it, with `meta` (what the destination gets):
    /// its private head from the receiver's buffer, the rest copied once
    /// from the sender's slots to ours. `Ok(false)`: not enough free
    /// slots, nothing written.
    ///
    /// A plain frame of one slot (no offload but `DATA_VALIDATED`, the
    /// common case) is written here, inlined into the caller; the rest
    /// goes through [`send`](Self::send)'s general checks and split.
    #[inline]
    pub fn send_lane(&mut self, frame: &LaneFrame<'_, '_>, meta: FrameMeta) -> Result<bool> {
        let len = frame.len();
        if meta.flags & !flags::DATA_VALIDATED == 0
            && (meta.gso_type, meta.gso_size, meta.gso_flags) == (0, 0, 0)
            && len != 0
            && len <= self.cap.min(self.max_frame)
        {
            // What `check` accepts and `send_one` writes for such a frame.
            let meta = FrameMeta {
                flags: meta.flags,
                ..FrameMeta::default()
            };
            return self.send_one(len, meta, lane_data(frame));
        }
        self.send_lane_general(frame, meta)
    }

    fn send_lane_general(&mut self, frame: &LaneFrame<'_, '_>, meta: FrameMeta) -> Result<bool> {
        let gso = self.check(frame.len(), &meta)?;
        let data = lane_data(frame);
        if frame.len() <= self.cap && gso.is_none() {
            return self.send_one(frame.len(), meta, data);
        }
        self.send_split(frame.len(), gso, meta, data)
    }

    /// Reserves free slots for a frame of up to `max` bytes that is to be
    /// written in place, e.g. by the kernel's `readv` straight into the
    /// slots' data ([`slot_data`](Self::slot_data)); `Ok(false)`: not that
    /// many free slots. Nothing is written or committed: the frame goes
    /// with [`commit_in_place`](Self::commit_in_place).
    pub fn reserve_in_place(&mut self, max: usize) -> Result<bool> {
        let slots = self.slots_for(max);
        self.lane.reserve(slots)
    }

    /// The data window of the `k`-th slot reserved by
    /// [`reserve_in_place`](Self::reserve_in_place): frame bytes
    /// `k * cap..(k + 1) * cap` go there, `cap` being the window's length
    /// (what [`send`](Self::send) would put in that slot).
    pub fn slot_data(&self, k: u32) -> Result<SharedMem<'a>> {
        self.lane.slot(k)?.slice(SLOT_HEADER_LEN, self.cap)
    }

    /// Sends the frame of `len` bytes written in place into the slots
    /// [`reserve_in_place`](Self::reserve_in_place) reserved: writes its
    /// slot headers (the same as [`send`](Self::send) would) and commits
    /// them, without publishing. The frame's bytes are not read: whatever
    /// the slots hold goes. `Ok(false)`: the frame needs more slots than
    /// are free (more than were reserved for it).
    pub fn commit_in_place(&mut self, len: usize, meta: FrameMeta) -> Result<bool> {
        let gso = self.check(len, &meta)?;
        let data = |_: &SharedMem<'a>, _: usize, _: usize| Ok(());
        if len <= self.cap && gso.is_none() {
            return self.send_one(len, meta, data);
        }
        self.send_split(len, gso, meta, data)
    }

    /// The checks of a frame of `len` bytes before it is written.
    fn check(&self, len: usize, meta: &FrameMeta) -> Result<Option<Gso>> {
        let gso = meta.gso()?;
        if gso.is_some() && !self.gso {
            return Err(Error::InvalidArgument {
                what: "segmentation offload frame on a lane without GSO",
            });
        }
        if gso.is_some() && meta.flags & flags::CSUM_BLANK == 0 {
            return Err(Error::InvalidArgument {
                what: "segmentation offload frame without CSUM_BLANK",
            });
        }
        let max = if gso.is_some() {
            GSO_MAX_FRAME
        } else {
            self.max_frame
        };
        if len == 0 || len > max {
            return Err(Error::InvalidArgument {
                what: "frame empty or longer than the max frame",
            });
        }
        Ok(gso)
    }

    /// Writes the slot headers of a checked frame of `len` bytes and, for
    /// each slot, has `data(slot, at, end)` write frame bytes `at..end`
    /// at the slot's data offset.
    fn send_split(
        &mut self,
        len: usize,
        gso: Option<Gso>,
        meta: FrameMeta,
        mut data: impl FnMut(&SharedMem<'a>, usize, usize) -> Result<()>,
    ) -> Result<bool> {
        let slots = self.slots_for(len);
        if !self.lane.reserve(slots)? {
            return Ok(false);
        }
        let csum = (meta.flags & flags::CSUM_BLANK != 0).then_some(Csum {
            start: meta.csum_start,
            offset: meta.csum_offset,
        });
        let validated = meta.flags & flags::DATA_VALIDATED != 0;
        let lane = &self.lane;
        let mut result = Ok(());
        let mut k = 0u32;
        wire::net::split_frame(len, csum, validated, gso, |at, repr| {
            let mut raw = HeaderBuf([0u8; SLOT_HEADER_LEN]);
            let raw = &mut raw.0;
            let end = at + usize::from(repr.len);
            let written = repr
                .emit(&mut SlotHeader::new_unchecked(&mut raw[..]))
                .map_err(Error::from)
                .and_then(|()| lane.slot(k))
                .and_then(|slot| {
                    slot.write_from(0, &raw[..])?;
                    data(&slot, at, end)
                });
            if result.is_ok() {
                result = written;
            }
            k += 1;
        })?;
        result?;
        self.lane.commit(slots)?;
        Ok(true)
    }

    /// A checked frame of one slot without segmentation offload: the slot
    /// header [`wire::net::split_frame`] would make, written in one store.
    /// `data(slot, 0, len)` writes the frame's bytes.
    #[inline]
    fn send_one(
        &mut self,
        len: usize,
        meta: FrameMeta,
        data: impl FnOnce(&SharedMem<'a>, usize, usize) -> Result<()>,
    ) -> Result<bool> {
        if !self.lane.reserve(1)? {
            return Ok(false);
        }
        let fl = meta.flags & (flags::CSUM_BLANK | flags::DATA_VALIDATED);
        let (start, offset) = if fl & flags::CSUM_BLANK != 0 {
            (meta.csum_start, meta.csum_offset)
        } else {
            (0, 0)
        };
        // len, flags, csum_start, csum_offset; the rest 0 (no GSO).
        let lo =
            len as u64 | u64::from(fl) << 16 | u64::from(start) << 32 | u64::from(offset) << 48;
        let slot = self.lane.slot(0)?;
        // Frames go into the slots in turn: ask for a later one now.
        self.lane.prefetch(PREFETCH_AHEAD, SLOT_HEADER_LEN + len);
        slot.write_16(0, [lo, 0])?;
        data(&slot, 0, len)?;
        self.lane.commit(1)?;
        Ok(true)
    }

    /// Publishes every frame sent since the last call; returns whether the
    /// receiver must be triggered.
    pub fn publish(&mut self) -> Result<bool> {
        self.lane.publish()
    }

    /// Final check before waiting for room for a frame of `len` bytes:
    /// `true` if it fits now; `false` if the receiver's trigger is armed
    /// and the caller may wait for it.
    pub fn prepare_wait(&mut self, len: usize) -> Result<bool> {
        let slots = self.slots_for(len);
        Ok(self.lane.prepare_wait(slots)? >= slots)
    }

    pub fn lane(&mut self) -> &mut Producer<'a> {
        &mut self.lane
    }
}

/// The bytes of a frame read by [`FrameReceiver::next_lane`], for the
/// sender's split (`data(slot, at, end)`: frame bytes `at..end` into the
/// slot's data): the private head from the receiver's buffer, the rest
/// copied once from the source's slots.
#[inline]
fn lane_data<'f, 'a>(
    frame: &'f LaneFrame<'_, '_>,
) -> impl FnMut(&SharedMem<'a>, usize, usize) -> Result<()> + 'f {
    let head = frame.head();
    let (src, pieces) = frame.rest();
    move |slot: &SharedMem<'a>, at: usize, end: usize| {
        let mine = end.min(head.len());
        if at < mine {
            slot.write_from(SLOT_HEADER_LEN, head.get(at..mine).unwrap_or(&[]))?;
        }
        // Pieces are in frame order and few (a frame's slots).
        for p in pieces {
            let (from, to) = (p.at.max(at).max(mine), (p.at + p.len).min(end));
            if from < to {
                let n = to - from;
                slot.copy_from(SLOT_HEADER_LEN + from - at, &src, p.offset + from - p.at, n)?;
            }
        }
        Ok(())
    }
}

/// A frame popped from a lane, in the receiver's private buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RxFrame<'b> {
    pub data: &'b [u8],
    pub meta: FrameMeta,
}

/// A frame popped from a lane whose first bytes are in the receiver's
/// private buffer ([`head`](Self::head)) and the rest still in the
/// sender's slots ([`FrameReceiver::set_private_head`]). The slots stay
/// consumed but unreleased while it lives; their sender may still rewrite
/// them, so only [`head`](Self::head) may be decided on.
#[derive(Debug)]
pub struct LaneFrame<'b, 'a> {
    /// The frame's length and offloads are the receiver's `frame_len`
    /// and `frame_meta`: a frame is one pointer, which a caller gets in a
    /// register, not a struct copied through the stack.
    rx: &'b mut FrameReceiver<'a>,
}

impl<'b, 'a> LaneFrame<'b, 'a> {
    /// Frame bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.rx.frame_len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn meta(&self) -> FrameMeta {
        unpack_meta(self.rx.frame_meta)
    }

    /// The frame's first bytes, private: as many as the receiver's
    /// private head, or the whole frame once [`whole`](Self::whole) ran.
    #[inline]
    pub fn head(&self) -> &[u8] {
        let rx = &*self.rx;
        rx.buf.get(rx.base..rx.base + rx.private).unwrap_or(&[])
    }

    /// Whether every byte is private.
    #[inline]
    pub fn is_whole(&self) -> bool {
        self.rx.private >= self.len()
    }

    /// Copies the rest of the frame into the private buffer (once) and
    /// returns all of it.
    pub fn whole(&mut self) -> Result<&[u8]> {
        self.rx.copy_pieces()?;
        Ok(self.head())
    }

    /// Appends the whole frame to `out`: its head, and the rest read once
    /// from the sender's slots.
    pub fn copy_into(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(self.head());
        out.resize(start + self.len(), 0);
        let (src, pieces) = self.rest();
        for p in pieces {
            let at = start + p.at;
            let dst = out.get_mut(at..at + p.len).ok_or(Error::Protocol {
                what: "frame piece past the frame's length",
            })?;
            src.read_into(p.offset, dst)?;
        }
        Ok(())
    }

    /// The frame's bytes past [`head`](Self::head): windows of the
    /// sender's slots, in frame order, for moving only (a volatile copy,
    /// or an iovec the kernel copies from), never to decide on: the
    /// sender may rewrite them at any moment.
    pub fn rest_windows(&self) -> impl Iterator<Item = Result<SharedMem<'a>>> + '_ {
        let (src, pieces) = self.rest();
        pieces.iter().map(move |p| src.slice(p.offset, p.len))
    }

    /// [`whole`](Self::whole), keeping the buffer's borrow.
    pub fn into_whole(self) -> Result<RxFrame<'b>> {
        self.rx.copy_pieces()?;
        let meta = self.meta();
        let rx = self.rx;
        let data = rx
            .buf
            .get(rx.base..rx.base + rx.private)
            .ok_or(Error::Protocol {
                what: "frame assembler overran the frame buffer",
            })?;
        Ok(RxFrame { data, meta })
    }

    /// Where the bytes not in [`head`](Self::head) are: the sender's
    /// lane window and the pieces in it, in frame order.
    #[inline]
    fn rest(&self) -> (SharedMem<'a>, &[Piece]) {
        (self.rx.lane.window(), &self.rx.pieces)
    }
}

/// The receiving side: frames out of a lane, into a private buffer.
#[derive(Debug)]
pub struct FrameReceiver<'a> {
    lane: Consumer<'a>,
    rules: FrameAssembler,
    /// Frame buffer; the frame starts at `base`, 16-aligned like the slot
    /// data, so copies take the wide path of `SharedMem`.
    buf: Vec<u8>,
    base: usize,
    /// Slots [`next`](Self::next) may still consume before it reports the
    /// batch used up: what a caller charges a peer for, counted in slots
    /// (a skipped slot costs as much as one that ends a frame).
    slot_budget: u32,
    /// Bytes of each frame copied into `buf` as its slots are read
    /// ([`set_private_head`](Self::set_private_head)); `usize::MAX`: all.
    private_head: usize,
    /// The frame being read: bytes `0..private` are in `buf`, the rest in
    /// the lane's slots at `pieces` (consumed, not yet released).
    private: usize,
    pieces: Vec<Piece>,
    /// The frame last returned by [`next_lane`](Self::next_lane): its
    /// length, and its offloads packed in two words ([`pack_meta`]) so
    /// that they are stored and loaded whole.
    frame_len: usize,
    frame_meta: [u64; 2],
}

/// A frame's offloads in two words: flags, `csum_start` and `csum_offset`
/// in bits 0..48 of the first (as bits 16..64 of a slot header's first
/// word); `gso_size`, `gso_type`, `gso_flags` in bits 0..32 of the second.
#[inline]
fn pack_meta(m: &FrameMeta) -> [u64; 2] {
    [
        u64::from(m.flags) | u64::from(m.csum_start) << 16 | u64::from(m.csum_offset) << 32,
        u64::from(m.gso_size) | u64::from(m.gso_type) << 16 | u64::from(m.gso_flags) << 24,
    ]
}

#[inline]
fn unpack_meta(w: [u64; 2]) -> FrameMeta {
    FrameMeta {
        flags: w[0] as u16,
        csum_start: (w[0] >> 16) as u16,
        csum_offset: (w[0] >> 32) as u16,
        gso_size: w[1] as u16,
        gso_type: (w[1] >> 16) as u8,
        gso_flags: (w[1] >> 24) as u8,
    }
}

/// Frame bytes `at..at + len` sit at `offset` of the lane's window.
#[derive(Clone, Copy, Debug)]
struct Piece {
    at: usize,
    offset: usize,
    len: usize,
}

impl<'a> FrameReceiver<'a> {
    /// A receiver of payloads up to `max_frame` bytes, from our own
    /// configuration, with the slot rules of the network protocol but no
    /// MTU or offload negotiation (see [`FrameReceiver::net`]).
    pub fn new(lane: Consumer<'a>, max_frame: usize) -> Result<Self> {
        check_shape(lane.layout().slot_size(), max_frame)?;
        let rules = FrameAssembler::bulk(max_frame)?;
        Ok(Self::with_rules(lane, rules, max_frame))
    }

    /// A receiver for a network port: frames as `docs/protocol.md`
    /// specifies for the negotiated MTU and features.
    pub fn net(lane: Consumer<'a>, rules: FrameAssembler) -> Result<Self> {
        let max = rules.max_frame();
        check_shape(lane.layout().slot_size(), max)?;
        Ok(Self::with_rules(lane, rules, max))
    }

    fn with_rules(lane: Consumer<'a>, rules: FrameAssembler, max_frame: usize) -> Self {
        let buf = vec![0u8; max_frame + 15];
        // The Vec never grows, so its address (and the offset) stays.
        let base = buf.as_ptr().align_offset(16).min(15);
        FrameReceiver {
            lane,
            rules,
            buf,
            base,
            slot_budget: u32::MAX,
            private_head: usize::MAX,
            private: 0,
            pieces: Vec::new(),
            frame_len: 0,
            frame_meta: [0; 2],
        }
    }

    /// From now on [`next_lane`](Self::next_lane) copies only each frame's
    /// first `bytes` into the private buffer as it reads the slots; the
    /// rest stays in the slots until the caller copies it once, straight
    /// to where it goes ([`FrameSender::send_lane`]) or into the private
    /// buffer ([`LaneFrame::whole`]). Whatever the caller decides on must
    /// lie in those first bytes. [`next`](Self::next) still returns whole
    /// frames.
    pub fn set_private_head(&mut self, bytes: usize) {
        self.private_head = bytes;
    }

    /// Bounds the slots [`next`](Self::next) consumes from now on (until
    /// the next call): when they are used up it returns `Ok(None)` as at
    /// the end of a batch, whatever the producer keeps publishing. Without
    /// it the bound is the producer's: a member that keeps moving `prod`
    /// ahead of a chain of `MORE` slots would keep the caller reading.
    pub fn set_slot_budget(&mut self, slots: u32) {
        self.slot_budget = slots;
    }

    /// Slots left of the budget set by [`set_slot_budget`](Self::set_slot_budget).
    #[inline]
    pub fn slot_budget(&self) -> u32 {
        self.slot_budget
    }

    /// Starts a batch (reads the producer index once); returns the slots in
    /// it. A `Protocol` error here means the lane itself is broken.
    pub fn poll(&mut self) -> Result<u32> {
        self.lane.poll()
    }

    /// The next whole frame of the batch. `Ok(None)`: the batch is used up
    /// (a frame may be half-assembled; it completes in a later batch).
    /// `Err(Protocol)`: one bad frame was consumed; call again for the rest.
    // Not `Iterator::next`: each frame borrows the receiver's buffer (a
    // lending iterator), and errors do not end the sequence.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<RxFrame<'_>>> {
        match self.next_lane()? {
            Some(f) => f.into_whole().map(Some),
            None => Ok(None),
        }
    }

    /// [`next`](Self::next), with only the first bytes of the frame copied
    /// privately ([`set_private_head`](Self::set_private_head)); the rest
    /// is copied once when the caller asks, before it reads another frame
    /// or releases the slots (the borrow sees to that).
    ///
    /// The common case (a whole frame in one slot, no segmentation
    /// offload, nothing refused: [`FrameAssembler::one_slot`]) is decided
    /// here, inlined into the caller, so the frame's length and offloads
    /// stay in registers; everything else goes through the general rules
    /// with the same header words (read once either way).
    #[inline]
    pub fn next_lane(&mut self) -> Result<Option<LaneFrame<'_, 'a>>> {
        if self.slot_budget == 0 {
            return self.next_lane_general();
        }
        let Some(slot) = self.lane.slot()? else {
            return self.next_lane_general();
        };
        let offset = self.lane.current_offset();
        // One copy of the header; every decision below uses it only.
        let words = slot.read_16(0)?;
        let Some(len) = self.rules.one_slot(words[0], words[1]) else {
            return self.next_lane_from(slot, offset, words);
        };
        self.lane.advance();
        self.slot_budget -= 1;
        // The slots of a batch are read in turn: ask for a later one's
        // header and first bytes now.
        self.lane
            .prefetch(PREFETCH_AHEAD, SLOT_HEADER_LEN + len.min(self.private_head));
        self.pieces.clear();
        // `one_slot` bounds len by the max frame, the buffer's size;
        // `get_mut` keeps it panic-free.
        let n = len.min(self.private_head);
        let dst = self
            .buf
            .get_mut(self.base..self.base + n)
            .ok_or(Error::Protocol {
                what: "frame assembler overran the frame buffer",
            })?;
        slot.read_into(SLOT_HEADER_LEN, dst)?;
        self.private = n;
        if n < len {
            self.pieces.push(Piece {
                at: n,
                offset: offset + SLOT_HEADER_LEN + n,
                len: len - n,
            });
        }
        // The flags `one_slot` accepted, and the checksum fields with
        // CSUM_BLANK, as the general rules report them: the header's
        // bytes 2..8, as `pack_meta` lays them out.
        let packed = words[0] >> 16;
        self.frame_meta = [
            if packed & u64::from(flags::CSUM_BLANK) != 0 {
                packed
            } else {
                packed & u64::from(flags::DATA_VALIDATED)
            },
            0,
        ];
        self.frame_len = len;
        Ok(Some(LaneFrame { rx: self }))
    }

    /// [`next_lane`](Self::next_lane) for a slot whose header (`words`,
    /// read once) needs the general rules, then the slots after it.
    #[inline(never)]
    fn next_lane_from(
        &mut self,
        slot: SharedMem<'a>,
        offset: usize,
        words: [u64; 2],
    ) -> Result<Option<LaneFrame<'_, 'a>>> {
        match self.take_slot(slot, offset, words)? {
            Some((len, meta)) => Ok(Some(self.frame(len, &meta))),
            None => self.next_lane_general(),
        }
    }

    /// [`next_lane`](Self::next_lane) by the general rules only.
    #[inline(never)]
    fn next_lane_general(&mut self) -> Result<Option<LaneFrame<'_, 'a>>> {
        loop {
            if self.slot_budget == 0 {
                self.keep_pieces()?;
                return Ok(None);
            }
            let Some(slot) = self.lane.slot()? else {
                // The slots of a half-assembled frame may be released now.
                self.keep_pieces()?;
                return Ok(None);
            };
            let offset = self.lane.current_offset();
            // One copy of the header; every decision below uses it only.
            let words = slot.read_16(0)?;
            if let Some((len, meta)) = self.take_slot(slot, offset, words)? {
                return Ok(Some(self.frame(len, &meta)));
            }
        }
    }

    /// The frame the general rules ended, as [`next_lane`](Self::next_lane)
    /// returns it.
    fn frame(&mut self, len: usize, meta: &FrameMeta) -> LaneFrame<'_, 'a> {
        self.frame_len = len;
        self.frame_meta = pack_meta(meta);
        LaneFrame { rx: self }
    }

    /// Feeds the current slot, whose header is `words`, to the rules and
    /// consumes it: copies its data privately or notes where it is (a
    /// piece); `Some`: it ended a frame of that length and offloads.
    fn take_slot(
        &mut self,
        slot: SharedMem<'a>,
        offset: usize,
        words: [u64; 2],
    ) -> Result<Option<(usize, FrameMeta)>> {
        let action = self.rules.push_words(words);
        // Consumed whatever the verdict, so a bad slot never stalls us.
        self.lane.advance();
        self.slot_budget -= 1;
        let (at, len, done) = match action? {
            SlotAction::Skip => return Ok(None),
            SlotAction::Append { at, len, done } => (at, len, done),
        };
        if at == 0 {
            self.private = 0;
            self.pieces.clear();
        }
        // The assembler bounds at + len by the max frame, the buffer's
        // size, and appends in order, so these cannot fail; `get_mut`
        // keeps it panic-free.
        let mut n = 0;
        if self.pieces.is_empty() && at == self.private && at < self.private_head {
            n = len.min(self.private_head - at);
            let dst = self.base + at;
            let dst = self.buf.get_mut(dst..dst + n).ok_or(Error::Protocol {
                what: "frame assembler overran the frame buffer",
            })?;
            slot.read_into(SLOT_HEADER_LEN, dst)?;
            self.private = at + n;
        }
        if n < len {
            self.pieces.push(Piece {
                at: at + n,
                offset: offset + SLOT_HEADER_LEN + n,
                len: len - n,
            });
        }
        let Some(info) = done else { return Ok(None) };
        let mut meta = FrameMeta::default();
        if let Some(c) = info.csum {
            meta.flags |= flags::CSUM_BLANK;
            meta.csum_start = c.start;
            meta.csum_offset = c.offset;
        }
        if info.data_validated {
            meta.flags |= flags::DATA_VALIDATED;
        }
        if let Some(g) = info.gso {
            meta.gso_type = g.kind;
            meta.gso_size = g.size;
            meta.gso_flags = g.flags;
        }
        Ok(Some((info.len, meta)))
    }

    /// Copies the pieces of a half-assembled frame into the private
    /// buffer, before its slots can be released.
    fn keep_pieces(&mut self) -> Result<()> {
        if self.rules.in_frame() {
            self.copy_pieces()?;
        }
        Ok(())
    }

    /// Copies every piece of the current frame into the private buffer.
    fn copy_pieces(&mut self) -> Result<()> {
        let mem = self.lane.window();
        for p in self.pieces.drain(..) {
            let dst = self.base + p.at;
            let dst = self.buf.get_mut(dst..dst + p.len).ok_or(Error::Protocol {
                what: "frame piece overran the frame buffer",
            })?;
            mem.read_into(p.offset, dst)?;
            self.private = p.at + p.len;
        }
        Ok(())
    }

    /// Hands the consumed slots back; returns whether the sender must be
    /// triggered.
    pub fn release(&mut self) -> Result<bool> {
        self.lane.release()
    }

    /// Final check before waiting for frames: returns the slots ready after
    /// arming the sender's trigger.
    pub fn prepare_wait(&mut self) -> Result<u32> {
        self.lane.prepare_wait()
    }

    pub fn lane(&mut self) -> &mut Consumer<'a> {
        &mut self.lane
    }
}

/// A [`FrameSender`] between two borrows of its lane ([`FrameSender::park`]).
#[derive(Clone, Copy, Debug)]
pub struct ParkedSender {
    lane: ProducerState,
    cap: usize,
    max_frame: usize,
    gso: bool,
}

/// A [`FrameReceiver`] between two borrows of its lane, keeping a
/// half-assembled frame and its buffer ([`FrameReceiver::park`]).
#[derive(Debug)]
pub struct ParkedReceiver {
    lane: ConsumerState,
    rules: FrameAssembler,
    buf: Vec<u8>,
    base: usize,
    slot_budget: u32,
    private_head: usize,
    private: usize,
    /// Kept for its allocation: a parked receiver holds no piece of a
    /// frame in progress (`next_lane` copies them before it stops).
    pieces: Vec<Piece>,
}

// Park/resume lets a long-lived owner (a switch port) keep sender and
// receiver next to the share whose memory they borrow.
impl<'a> FrameSender<'a> {
    pub fn park(self) -> ParkedSender {
        ParkedSender {
            lane: self.lane.park(),
            cap: self.cap,
            max_frame: self.max_frame,
            gso: self.gso,
        }
    }

    /// Picks up a sender parked over the same lane window and layout.
    pub fn resume(mem: SharedMem<'a>, layout: LaneLayout, parked: ParkedSender) -> Result<Self> {
        Ok(FrameSender {
            lane: Producer::resume(mem, layout, parked.lane)?,
            cap: parked.cap,
            max_frame: parked.max_frame,
            gso: parked.gso,
        })
    }

    /// The longest frame [`send`](Self::send) takes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl<'a> FrameReceiver<'a> {
    pub fn park(self) -> ParkedReceiver {
        ParkedReceiver {
            lane: self.lane.park(),
            rules: self.rules,
            buf: self.buf,
            base: self.base,
            slot_budget: self.slot_budget,
            private_head: self.private_head,
            private: self.private,
            pieces: self.pieces,
        }
    }

    /// Picks up a receiver parked over the same lane window and layout.
    pub fn resume(mem: SharedMem<'a>, layout: LaneLayout, parked: ParkedReceiver) -> Result<Self> {
        Ok(FrameReceiver {
            lane: Consumer::resume(mem, layout, parked.lane)?,
            rules: parked.rules,
            buf: parked.buf,
            base: parked.base,
            slot_budget: parked.slot_budget,
            private_head: parked.private_head,
            private: parked.private,
            pieces: parked.pieces,
            frame_len: 0,
            frame_meta: [0; 2],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane::{init, LaneLayout};
    use crate::volatile::SharedMem;
    use alloc::vec::Vec;
    use core::ptr::NonNull;

    struct Pages(Vec<u64>);

    impl Pages {
        fn mem(&mut self) -> SharedMem<'_> {
            let base = self.0.as_mut_ptr().cast::<u8>();
            let skip = base.align_offset(64);
            let len = self.0.len() * 8 - skip;
            // SAFETY: inside the exclusively borrowed Vec.
            unsafe { SharedMem::new(NonNull::new(base.add(skip)).unwrap(), len) }
        }
    }

    const MAX: usize = 1514;

    fn pair(pages: &mut Pages, count: u32, start: u32) -> (FrameSender<'_>, FrameReceiver<'_>) {
        let layout = LaneLayout::new(count, NET_SLOT_SIZE).unwrap();
        *pages = Pages(vec![0u64; layout.bytes() / 8 + 8]);
        let mem = pages.mem();
        init(mem, layout, start).unwrap();
        (
            FrameSender::new(Producer::attach(mem, layout).unwrap(), MAX * 3).unwrap(),
            FrameReceiver::new(Consumer::attach(mem, layout).unwrap(), MAX * 3).unwrap(),
        )
    }

    fn frame(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    #[test]
    fn frames_round_trip_with_chains() {
        let mut pages = Pages(Vec::new());
        let (mut tx, mut rx) = pair(&mut pages, 8, u32::MAX - 3);
        let meta = FrameMeta {
            flags: flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 6,
            ..FrameMeta::default()
        };
        let sizes = [60, 2032, 2033, 4000, 1];
        let meta_for = |n: usize| if n >= 42 { meta } else { FrameMeta::default() };
        for (i, &n) in sizes.iter().enumerate() {
            assert!(tx.send(&frame(n, i as u8), meta_for(n)).unwrap());
        }
        // 1 + 1 + 2 + 2 + 1 slots: 7 of 8, so a 2-slot frame no longer fits.
        assert!(!tx.send(&frame(2033, 0), meta).unwrap());
        tx.publish().unwrap();
        assert_eq!(rx.poll().unwrap(), 7);
        for (i, &n) in sizes.iter().enumerate() {
            let f = rx.next().unwrap().unwrap();
            assert_eq!(f.data, &frame(n, i as u8)[..]);
            assert_eq!(f.meta, meta_for(n));
        }
        assert_eq!(rx.next(), Ok(None));
    }

    /// The one-slot path writes the header `split_frame` specifies.
    #[test]
    fn one_slot_frames_carry_the_split_frame_header() {
        let metas = [
            FrameMeta::default(),
            FrameMeta {
                flags: flags::CSUM_BLANK | flags::DATA_VALIDATED | flags::MORE | 0x100,
                csum_start: 34,
                csum_offset: 6,
                ..FrameMeta::default()
            },
            FrameMeta {
                flags: flags::DATA_VALIDATED,
                csum_start: 9,
                csum_offset: 9,
                ..FrameMeta::default()
            },
        ];
        for meta in metas {
            for n in [1, 60, 1514, SLOT_DATA_MAX] {
                let layout = LaneLayout::new(4, NET_SLOT_SIZE).unwrap();
                let mut pages = Pages(vec![0u64; layout.bytes() / 8 + 8]);
                let mem = pages.mem();
                init(mem, layout, 0).unwrap();
                let lane = Producer::attach(mem, layout).unwrap();
                let mut tx = FrameSender::new(lane, MAX * 3).unwrap();
                assert!(tx.send(&frame(n, 3), meta).unwrap());
                let mut got = [0u8; SLOT_HEADER_LEN];
                mem.read_into(crate::lane::HEADER_LEN, &mut got).unwrap();
                let csum = (meta.flags & flags::CSUM_BLANK != 0).then_some(wire::net::Csum {
                    start: meta.csum_start,
                    offset: meta.csum_offset,
                });
                let validated = meta.flags & flags::DATA_VALIDATED != 0;
                let mut want = [0u8; SLOT_HEADER_LEN];
                wire::net::split_frame(n, csum, validated, None, |_, r| {
                    r.emit(&mut SlotHeader::new_unchecked(&mut want[..]))
                        .unwrap()
                })
                .unwrap();
                assert_eq!(got, want, "{n} bytes, {meta:?}");
                let mut body = vec![0u8; n];
                mem.read_into(crate::lane::HEADER_LEN + SLOT_HEADER_LEN, &mut body)
                    .unwrap();
                assert_eq!(body, frame(n, 3));
            }
        }
    }

    #[test]
    fn sender_refuses_what_cannot_fit() {
        let mut pages = Pages(Vec::new());
        let (mut tx, _rx) = pair(&mut pages, 4, 0);
        let meta = FrameMeta::default();
        assert!(tx.send(&[], meta).is_err());
        assert!(tx.send(&frame(MAX * 3 + 1, 0), meta).is_err());
        assert!(tx.send(&frame(MAX * 3, 0), meta).unwrap());
        assert!(!tx.send(&frame(2033, 0), meta).unwrap());
        assert!(tx.send(&frame(2032, 0), meta).unwrap());
        assert!(!tx.send(&frame(1, 0), meta).unwrap());
        // A lane that cannot hold one max frame is a configuration error.
        let layout = LaneLayout::new(2, NET_SLOT_SIZE).unwrap();
        let mut small = Pages(vec![0u64; layout.bytes() / 8 + 8]);
        let mem = small.mem();
        init(mem, layout, 0).unwrap();
        let lane = Producer::attach(mem, layout).unwrap();
        assert!(FrameSender::new(lane, MAX * 3).is_err());
    }

    /// Writes a raw slot as a hostile sender would.
    fn raw_slot(tx: &mut FrameSender<'_>, len: u16, fl: u16, csum: (u16, u16), body: &[u8]) {
        let lane = tx.lane();
        assert!(lane.reserve(1).unwrap());
        let slot = lane.slot(0).unwrap();
        let mut raw = [0u8; SLOT_HEADER_LEN];
        let mut hdr = SlotHeader::new_unchecked(&mut raw[..]);
        hdr.set_len(len);
        hdr.set_flags(fl);
        hdr.set_csum_start(csum.0);
        hdr.set_csum_offset(csum.1);
        slot.write_from(0, &raw).unwrap();
        slot.write_from(SLOT_HEADER_LEN, body).unwrap();
        lane.commit(1).unwrap();
    }

    fn drain(rx: &mut FrameReceiver<'_>) -> (Vec<Vec<u8>>, Vec<&'static str>) {
        rx.poll().unwrap();
        let (mut good, mut errors) = (Vec::new(), Vec::new());
        loop {
            match rx.next() {
                Ok(Some(f)) => good.push(f.data.to_vec()),
                Ok(None) => break,
                Err(Error::Protocol { what }) => errors.push(what),
                Err(e) => panic!("{e}"),
            }
        }
        (good, errors)
    }

    #[test]
    fn bad_frames_are_consumed_and_reported_once() {
        let mut pages = Pages(Vec::new());
        let (mut tx, mut rx) = pair(&mut pages, 16, 5);
        raw_slot(&mut tx, 3000, 0, (0, 0), &[]);
        // A chain of 1-byte MORE slots longer than a max frame needs
        // (3 slots), then its end: one error, the rest skipped.
        for _ in 0..5 {
            raw_slot(&mut tx, 1, flags::MORE, (0, 0), &[1]);
        }
        raw_slot(&mut tx, 1, 0, (0, 0), &[1]);
        raw_slot(&mut tx, 0, 0, (0, 0), &[]);
        raw_slot(&mut tx, 4, 1 << 5, (0, 0), &[1, 2, 3, 4]);
        raw_slot(&mut tx, 10, flags::CSUM_BLANK, (8, 1), &[0; 10]);
        tx.send(&frame(100, 9), FrameMeta::default()).unwrap();
        tx.publish().unwrap();
        let (good, errors) = drain(&mut rx);
        assert_eq!(
            errors,
            [
                "net slot len",
                "net frame slots",
                "net slot len",
                "net slot flags",
                "net csum_start + csum_offset"
            ]
        );
        assert_eq!(good, [frame(100, 9)]);
        assert_eq!(rx.lane().pending(), 0);
    }

    #[test]
    fn network_rules_apply_the_mtu() {
        let layout = LaneLayout::new(8, NET_SLOT_SIZE).unwrap();
        let mut pages = Pages(vec![0u64; layout.bytes() / 8 + 8]);
        let mem = pages.mem();
        init(mem, layout, 0).unwrap();
        let mut tx = FrameSender::new(Producer::attach(mem, layout).unwrap(), 4000).unwrap();
        let rules = FrameAssembler::new(1500, 0).unwrap();
        let mut rx = FrameReceiver::net(Consumer::attach(mem, layout).unwrap(), rules).unwrap();
        for n in [1518, 1519, 13, 14] {
            assert!(tx.send(&frame(n, 1), FrameMeta::default()).unwrap());
        }
        tx.publish().unwrap();
        let (good, errors) = drain(&mut rx);
        assert_eq!(good, [frame(1518, 1), frame(14, 1)]);
        assert_eq!(errors, ["net frame len", "net frame len (runt)"]);
    }

    #[test]
    fn gso_frames_round_trip_through_a_lane() {
        use crate::wire::net::{features, gso, GSO_MAX_FRAME};
        let layout = LaneLayout::new(64, NET_SLOT_SIZE).unwrap();
        let mut pages = Pages(vec![0u64; layout.bytes() / 8 + 8]);
        let mem = pages.mem();
        init(mem, layout, u32::MAX - 10).unwrap();
        let plain = FrameSender::new(Producer::attach(mem, layout).unwrap(), 1518).unwrap();
        let meta = FrameMeta {
            flags: flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 16,
            gso_type: gso::TCPV4,
            gso_size: 1448,
            gso_flags: gso::FLAG_ECN,
        };
        let mut tx = plain;
        assert!(tx.send(&frame(3000, 1), meta).is_err(), "GSO not enabled");
        let mut tx = tx.with_gso().unwrap();
        let rules = FrameAssembler::new(1500, features::CSUM_BLANK | features::GSO).unwrap();
        let mut rx = FrameReceiver::net(Consumer::attach(mem, layout).unwrap(), rules).unwrap();
        assert!(tx.send(&frame(GSO_MAX_FRAME, 2), meta).unwrap());
        assert!(tx.send(&frame(1518, 3), FrameMeta::default()).unwrap());
        // A plain frame keeps the MTU limit; GSO needs its checksum request.
        assert!(tx.send(&frame(1519, 3), FrameMeta::default()).is_err());
        let no_csum = FrameMeta { flags: 0, ..meta };
        assert!(tx.send(&frame(3000, 1), no_csum).is_err());
        let bad = FrameMeta {
            gso_size: 0,
            ..meta
        };
        assert!(tx.send(&frame(3000, 1), bad).is_err());
        tx.publish().unwrap();
        assert_eq!(rx.poll().unwrap(), 34);
        let f = rx.next().unwrap().unwrap();
        assert_eq!((f.data, f.meta), (&frame(GSO_MAX_FRAME, 2)[..], meta));
        let f = rx.next().unwrap().unwrap();
        assert_eq!(
            (f.data, f.meta),
            (&frame(1518, 3)[..], FrameMeta::default())
        );

        // A lane of 32 slots cannot take a max GSO frame.
        let small = LaneLayout::new(32, NET_SLOT_SIZE).unwrap();
        let mut pages = Pages(vec![0u64; small.bytes() / 8 + 8]);
        let mem = pages.mem();
        init(mem, small, 0).unwrap();
        let tx = FrameSender::new(Producer::attach(mem, small).unwrap(), 1518).unwrap();
        assert!(tx.with_gso().is_err());
    }

    /// Two lanes in one buffer: a source (sender -> receiver) and a
    /// destination the receiver's frames are forwarded into.
    fn two_lanes(pages: &mut Pages, count: u32) -> (SharedMem<'_>, SharedMem<'_>, LaneLayout) {
        let layout = LaneLayout::new(count, NET_SLOT_SIZE).unwrap();
        *pages = Pages(vec![0u64; layout.bytes() / 4 + 16]);
        let mem = pages.mem();
        let a = mem.slice(0, layout.bytes()).unwrap();
        let b = mem.slice(layout.bytes(), layout.bytes()).unwrap();
        init(a, layout, 0).unwrap();
        init(b, layout, u32::MAX - 2).unwrap();
        (a, b, layout)
    }

    #[test]
    fn lane_frames_forward_with_their_head_private_and_the_rest_copied_once() {
        let mut pages = Pages(Vec::new());
        let (a, b, layout) = two_lanes(&mut pages, 16);
        let mut tx = FrameSender::new(Producer::attach(a, layout).unwrap(), MAX * 3).unwrap();
        let mut rx = FrameReceiver::new(Consumer::attach(a, layout).unwrap(), MAX * 3).unwrap();
        rx.set_private_head(20);
        let mut fwd = FrameSender::new(Producer::attach(b, layout).unwrap(), MAX * 3).unwrap();
        let mut out = FrameReceiver::new(Consumer::attach(b, layout).unwrap(), MAX * 3).unwrap();
        let sizes = [14, 20, 21, 64, 2032, 2033, 4100];
        for (i, &n) in sizes.iter().enumerate() {
            assert!(tx.send(&frame(n, i as u8), FrameMeta::default()).unwrap());
        }
        // A frame of short slots (a hostile sender's split): 5, 30, 7.
        raw_slot(&mut tx, 5, flags::MORE, (0, 0), &frame(42, 9)[..5]);
        raw_slot(&mut tx, 30, flags::MORE, (0, 0), &frame(42, 9)[5..35]);
        raw_slot(&mut tx, 7, 0, (0, 0), &frame(42, 9)[35..]);
        tx.publish().unwrap();
        rx.poll().unwrap();
        let mut expect = Vec::new();
        while let Some(f) = rx.next_lane().unwrap() {
            assert_eq!(f.head().len(), f.len().min(20));
            assert_eq!(f.is_whole(), f.len() <= 20);
            assert!(fwd.send_lane(&f, f.meta()).unwrap());
            expect.push(f.len());
        }
        fwd.publish().unwrap();
        let mut wanted: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| frame(n, i as u8))
            .collect();
        wanted.push(frame(42, 9));
        assert_eq!(expect, wanted.iter().map(Vec::len).collect::<Vec<_>>());
        let (good, errors) = drain(&mut out);
        assert!(errors.is_empty());
        assert_eq!(good, wanted);
    }

    #[test]
    fn a_rewritten_slot_changes_only_the_bytes_not_decided_on() {
        let mut pages = Pages(Vec::new());
        let (a, b, layout) = two_lanes(&mut pages, 8);
        let mut tx = FrameSender::new(Producer::attach(a, layout).unwrap(), MAX).unwrap();
        let mut rx = FrameReceiver::new(Consumer::attach(a, layout).unwrap(), MAX).unwrap();
        rx.set_private_head(14);
        let mut fwd = FrameSender::new(Producer::attach(b, layout).unwrap(), MAX).unwrap();
        let mut out = FrameReceiver::new(Consumer::attach(b, layout).unwrap(), MAX).unwrap();
        assert!(tx.send(&frame(100, 1), FrameMeta::default()).unwrap());
        tx.publish().unwrap();
        rx.poll().unwrap();
        let f = rx.next_lane().unwrap().unwrap();
        // The sender rewrites its whole slot after the header was read.
        a.fill(crate::lane::HEADER_LEN + SLOT_HEADER_LEN, 100, 0xee)
            .unwrap();
        assert!(fwd.send_lane(&f, f.meta()).unwrap());
        fwd.publish().unwrap();
        let (good, _) = drain(&mut out);
        let mut want = frame(100, 1);
        want[14..].fill(0xee);
        assert_eq!(good, [want]);
    }

    #[test]
    fn half_lane_frames_are_kept_private_before_their_slots_go_back() {
        let mut pages = Pages(Vec::new());
        let (a, b, layout) = two_lanes(&mut pages, 4);
        let mut tx = FrameSender::new(Producer::attach(a, layout).unwrap(), MAX * 3).unwrap();
        let rx = FrameReceiver::new(Consumer::attach(a, layout).unwrap(), MAX * 3).unwrap();
        let mut fwd = FrameSender::new(Producer::attach(b, layout).unwrap(), MAX * 3).unwrap();
        let mut out = FrameReceiver::new(Consumer::attach(b, layout).unwrap(), MAX * 3).unwrap();
        let mut rx = rx;
        rx.set_private_head(16);
        let f = frame(3000, 4);
        raw_slot(&mut tx, 2032, flags::MORE, (0, 0), &f[..2032]);
        tx.publish().unwrap();
        rx.poll().unwrap();
        assert!(rx.next_lane().unwrap().is_none());
        rx.release().unwrap();
        // Parked between batches, as the switch does.
        let parked = rx.park();
        // The sender reuses the released slot before the frame ends.
        a.fill(crate::lane::HEADER_LEN + SLOT_HEADER_LEN, 2032, 0x55)
            .unwrap();
        raw_slot(&mut tx, 968, 0, (0, 0), &f[2032..]);
        tx.publish().unwrap();
        let mut rx = FrameReceiver::resume(a, layout, parked).unwrap();
        rx.poll().unwrap();
        let lf = rx.next_lane().unwrap().unwrap();
        assert!(fwd.send_lane(&lf, lf.meta()).unwrap());
        fwd.publish().unwrap();
        let (good, _) = drain(&mut out);
        assert_eq!(good, [f]);
    }

    #[test]
    fn half_frames_complete_in_a_later_batch() {
        let mut pages = Pages(Vec::new());
        let (mut tx, mut rx) = pair(&mut pages, 4, 0);
        raw_slot(&mut tx, 3, flags::MORE, (0, 0), &[1, 2, 3]);
        tx.publish().unwrap();
        rx.poll().unwrap();
        assert_eq!(rx.next(), Ok(None));
        rx.release().unwrap();
        raw_slot(&mut tx, 2, 0, (0, 0), &[4, 5]);
        tx.publish().unwrap();
        rx.poll().unwrap();
        assert_eq!(rx.next().unwrap().unwrap().data, &[1, 2, 3, 4, 5]);
    }

    /// Frames written in place into reserved slots (as the kernel's
    /// `readv` does) arrive as `send` would have sent them; the slot
    /// headers are the same.
    #[test]
    fn frames_written_in_place_arrive_as_sent() {
        use crate::wire::net::{features, gso, GSO_MAX_FRAME};
        let layout = LaneLayout::new(64, NET_SLOT_SIZE).unwrap();
        let mut pages = Pages(vec![0u64; layout.bytes() / 8 + 8]);
        let mem = pages.mem();
        init(mem, layout, u32::MAX - 40).unwrap();
        let mut tx = FrameSender::new(Producer::attach(mem, layout).unwrap(), 1518)
            .unwrap()
            .with_gso()
            .unwrap();
        let rules = FrameAssembler::new(1500, features::CSUM_BLANK | features::GSO).unwrap();
        let mut rx = FrameReceiver::net(Consumer::attach(mem, layout).unwrap(), rules).unwrap();
        let tso = FrameMeta {
            flags: flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 16,
            gso_type: gso::TCPV4,
            gso_size: 1448,
            gso_flags: 0,
        };
        let cases = [
            (14, FrameMeta::default()),
            (1518, FrameMeta::default()),
            (2033, tso),
            (GSO_MAX_FRAME, tso),
        ];
        for (i, &(n, meta)) in cases.iter().enumerate() {
            assert!(tx.reserve_in_place(GSO_MAX_FRAME).unwrap());
            let f = frame(n, i as u8);
            for (k, chunk) in f.chunks(SLOT_DATA_MAX).enumerate() {
                let w = tx.slot_data(k as u32).unwrap();
                assert_eq!(w.len(), SLOT_DATA_MAX);
                assert_eq!(w.as_ptr() as usize % 16, 0, "slot data 16-aligned");
                w.write_from(0, chunk).unwrap();
            }
            assert!(tx.commit_in_place(n, meta).unwrap());
            // Room for the next in-place frame comes from the consumer.
            tx.publish().unwrap();
            rx.poll().unwrap();
            let got = rx.next().unwrap().unwrap();
            assert_eq!((got.data, got.meta), (&f[..], meta), "{n} bytes");
            rx.release().unwrap();
        }
        // The same checks as `send`: a plain frame over the MTU, GSO
        // without its checksum request.
        assert!(tx.reserve_in_place(GSO_MAX_FRAME).unwrap());
        assert!(tx.commit_in_place(1519, FrameMeta::default()).is_err());
        assert!(tx
            .commit_in_place(3000, FrameMeta { flags: 0, ..tso })
            .is_err());
        assert!(tx.commit_in_place(0, FrameMeta::default()).is_err());
        // Slots past those reserved are refused.
        assert!(tx.slot_data(64).is_err());
    }

    /// With no private head, a frame is all in `rest_windows`, in order,
    /// also when it was split over two batches (its first part is kept
    /// private then, before its slots go back).
    #[test]
    fn rest_windows_cover_the_bytes_past_the_head() {
        let mut pages = Pages(Vec::new());
        let (mut tx, mut rx) = pair(&mut pages, 8, u32::MAX - 1);
        rx.set_private_head(0);
        let gather = |f: &LaneFrame<'_, '_>| {
            let mut v = f.head().to_vec();
            for w in f.rest_windows() {
                let w = w.unwrap();
                let at = v.len();
                v.resize(at + w.len(), 0);
                w.read_into(0, &mut v[at..]).unwrap();
            }
            v
        };
        for n in [14, 2032, 2033, 4100] {
            assert!(tx.send(&frame(n, 1), FrameMeta::default()).unwrap());
            tx.publish().unwrap();
            rx.poll().unwrap();
            let f = rx.next_lane().unwrap().unwrap();
            assert!(f.head().is_empty());
            assert_eq!(gather(&f), frame(n, 1));
            rx.release().unwrap();
        }
        let f = frame(3000, 2);
        raw_slot(&mut tx, 2032, flags::MORE, (0, 0), &f[..2032]);
        tx.publish().unwrap();
        rx.poll().unwrap();
        assert!(rx.next_lane().unwrap().is_none());
        rx.release().unwrap();
        raw_slot(&mut tx, 968, 0, (0, 0), &f[2032..]);
        tx.publish().unwrap();
        rx.poll().unwrap();
        let lf = rx.next_lane().unwrap().unwrap();
        assert_eq!(lf.head().len(), 2032);
        assert_eq!(gather(&lf), f);
    }

    /// What one receiver made of a lane, frame by frame: a frame (its
    /// length, offloads, private head and every byte) or an error; the
    /// bytes each frame left in a destination lane it was forwarded to.
    type Outcome = (
        Vec<core::result::Result<(usize, FrameMeta, Vec<u8>, Vec<u8>), Error>>,
        Vec<u8>,
    );

    /// Reads every frame of `slots` (raw headers and data, written in
    /// turn) from a fresh lane with the network rules and private head
    /// `head`, the inline fast path on or off, and forwards each into a
    /// second lane (`send_lane`, fast path on or off).
    fn read_all(slots: &[([u8; 16], Vec<u8>)], head: usize, fast: bool) -> Outcome {
        use crate::wire::net::features;
        let mut pages = Pages(Vec::new());
        let (a, b, layout) = two_lanes(&mut pages, 64);
        let mut lane = Producer::attach(a, layout).unwrap();
        for (h, data) in slots {
            assert!(lane.reserve(1).unwrap());
            let slot = lane.slot(0).unwrap();
            slot.write_from(0, h).unwrap();
            slot.write_from(SLOT_HEADER_LEN, data).unwrap();
            lane.commit(1).unwrap();
        }
        lane.publish().unwrap();
        let fl = features::CSUM_BLANK | features::DATA_VALIDATED | features::GSO;
        let rules = FrameAssembler::new(1500, fl).unwrap();
        let mut rx = FrameReceiver::net(Consumer::attach(a, layout).unwrap(), rules).unwrap();
        rx.set_private_head(head);
        let mut fwd = FrameSender::new(Producer::attach(b, layout).unwrap(), 1518)
            .unwrap()
            .with_gso()
            .unwrap();
        rx.poll().unwrap();
        let mut out = Vec::new();
        loop {
            let got = if fast {
                rx.next_lane()
            } else {
                rx.next_lane_general()
            };
            match got {
                Ok(None) => break,
                Ok(Some(f)) => {
                    let mut all = Vec::new();
                    f.copy_into(&mut all).unwrap();
                    let sent = if fast {
                        fwd.send_lane(&f, f.meta())
                    } else {
                        fwd.send_lane_general(&f, f.meta())
                    };
                    assert!(sent.unwrap_or(true));
                    out.push(Ok((f.len(), f.meta(), f.head().to_vec(), all)));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let mut dst = vec![0u8; layout.bytes()];
        b.read_into(0, &mut dst).unwrap();
        // The destination's producer index is published by neither.
        (out, dst)
    }

    proptest::proptest! {
        /// The inline fast paths of `next_lane` (a one-slot frame) and
        /// `send_lane` (a plain one-slot frame) make exactly what the
        /// general rules make: the same frames, offloads, private heads and
        /// errors, the same bytes in the destination's slots.
        #[test]
        fn the_inline_fast_paths_agree_with_the_general_rules(
            slots in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        proptest::strategy::Just(0u16), proptest::strategy::Just(13),
                        proptest::strategy::Just(14), proptest::strategy::Just(60),
                        proptest::strategy::Just(1518), proptest::strategy::Just(2032),
                        proptest::strategy::Just(2033), 0u16..2100, proptest::num::u16::ANY
                    ],
                    proptest::prop_oneof![
                        proptest::strategy::Just(0u16),
                        proptest::strategy::Just(flags::MORE),
                        proptest::strategy::Just(flags::CSUM_BLANK),
                        proptest::strategy::Just(flags::DATA_VALIDATED),
                        proptest::strategy::Just(flags::CSUM_BLANK | flags::DATA_VALIDATED),
                        proptest::strategy::Just(flags::CSUM_BLANK | flags::MORE),
                        proptest::num::u16::ANY
                    ],
                    0u16..80, 0u16..80,
                    proptest::prop_oneof![
                        4 => proptest::strategy::Just([0u8; 4]),
                        1 => proptest::strategy::Just([0u8, 6, 1, 0]),
                        1 => proptest::array::uniform4(proptest::num::u8::ANY)
                    ],
                    proptest::num::u8::ANY,
                ),
                1..40,
            ),
            head in proptest::prop_oneof![
                proptest::strategy::Just(0usize), proptest::strategy::Just(14),
                proptest::strategy::Just(64), proptest::strategy::Just(144),
                proptest::strategy::Just(usize::MAX), 0usize..3000
            ],
        ) {
            let raw: Vec<([u8; 16], Vec<u8>)> = slots
                .iter()
                .map(|&(len, fl, start, offset, gso, seed)| {
                    let mut h = [0u8; 16];
                    h[0..2].copy_from_slice(&len.to_le_bytes());
                    h[2..4].copy_from_slice(&fl.to_le_bytes());
                    h[4..6].copy_from_slice(&start.to_le_bytes());
                    h[6..8].copy_from_slice(&offset.to_le_bytes());
                    h[8..12].copy_from_slice(&gso);
                    let n = usize::from(len).min(SLOT_DATA_MAX);
                    (h, frame(n, seed))
                })
                .collect();
            let fast = read_all(&raw, head, true);
            let general = read_all(&raw, head, false);
            proptest::prop_assert_eq!(fast.0, general.0);
            proptest::prop_assert!(fast.1 == general.1, "destination slots differ");
        }
    }
}
