//! Network frames over a lane.
//!
//! A frame goes into one or more 2 KiB slots, each starting with a slot
//! header (layout in `docs/protocol.md`, view in [`SlotHeader`]); a frame
//! longer than one slot's data continues in the next slot, every slot but
//! the last flagged `MORE`. Checksum offload fields count in the first slot
//! of a frame only.
//!
//! The sender fills as many frames as fit and publishes them with one index
//! store; the receiver reads the producer index once per batch and pops
//! frames until the batch is used up. A malformed frame is consumed whole
//! (up to its last `MORE` slot) and reported as one error, so one bad frame
//! never stalls the lane.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::lane::{Consumer, Producer};

/// Slot size of network lanes: a standard frame fits in one slot.
pub const NET_SLOT_SIZE: usize = 2048;

/// Slot header: a view over a private copy of a slot's first bytes.
///
/// ```text
/// 0  len          u16 LE  data bytes in this slot
/// 2  flags        u16 LE  MORE | CSUM_BLANK | DATA_VALIDATED
/// 4  csum_start   u16 LE  first frame only: where checksumming starts
/// 6  csum_offset  u16 LE  first frame only: checksum field, from csum_start
/// 8  reserved     8 bytes, written 0, ignored
/// 16 data
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHeader<T: AsRef<[u8]>> {
    buf: T,
}

mod field {
    use core::ops::Range;
    pub const LEN: Range<usize> = 0..2;
    pub const FLAGS: Range<usize> = 2..4;
    pub const CSUM_START: Range<usize> = 4..6;
    pub const CSUM_OFFSET: Range<usize> = 6..8;
    pub const HEADER_LEN: usize = 16;
}

/// Bytes of slot header before the data.
pub const SLOT_HEADER_LEN: usize = field::HEADER_LEN;

/// Slot flags.
pub mod flags {
    /// The frame continues in the next slot.
    pub const MORE: u16 = 1 << 0;
    /// The checksum at `csum_start + csum_offset` is not filled in yet.
    pub const CSUM_BLANK: u16 = 1 << 1;
    /// The sender verified the checksums already.
    pub const DATA_VALIDATED: u16 = 1 << 2;
}

impl<T: AsRef<[u8]>> SlotHeader<T> {
    /// Wraps `buf`, checking that it holds a whole header.
    pub fn new_checked(buf: T) -> Result<Self> {
        if buf.as_ref().len() < SLOT_HEADER_LEN {
            return Err(Error::Protocol {
                what: "slot header truncated",
            });
        }
        Ok(SlotHeader { buf })
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        let b = self.buf.as_ref();
        u16::from_le_bytes([b[r.start], b[r.start + 1]])
    }

    pub fn len(&self) -> u16 {
        self.u16_at(field::LEN)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn flags(&self) -> u16 {
        self.u16_at(field::FLAGS)
    }

    pub fn csum_start(&self) -> u16 {
        self.u16_at(field::CSUM_START)
    }

    pub fn csum_offset(&self) -> u16 {
        self.u16_at(field::CSUM_OFFSET)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SlotHeader<T> {
    fn set_u16(&mut self, r: core::ops::Range<usize>, v: u16) {
        self.buf.as_mut()[r].copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_len(&mut self, v: u16) {
        self.set_u16(field::LEN, v)
    }

    pub fn set_flags(&mut self, v: u16) {
        self.set_u16(field::FLAGS, v)
    }

    pub fn set_csum_start(&mut self, v: u16) {
        self.set_u16(field::CSUM_START, v)
    }

    pub fn set_csum_offset(&mut self, v: u16) {
        self.set_u16(field::CSUM_OFFSET, v)
    }
}

/// Per-frame offload information.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// `CSUM_BLANK` and/or `DATA_VALIDATED`; `MORE` is the codec's own.
    pub flags: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Data bytes one slot of `slot_size` carries.
fn slot_capacity(slot_size: usize) -> usize {
    slot_size
        .saturating_sub(SLOT_HEADER_LEN)
        .min(u16::MAX as usize)
}

fn check_shape(slot_size: usize, max_frame: usize) -> Result<usize> {
    let cap = slot_capacity(slot_size);
    if cap == 0 {
        return Err(Error::InvalidArgument {
            what: "frame lane slots hold no data",
        });
    }
    if max_frame == 0 || max_frame > u32::MAX as usize {
        return Err(Error::InvalidArgument {
            what: "max frame length out of range",
        });
    }
    Ok(cap)
}

/// The sending side: frames into a lane.
#[derive(Debug)]
pub struct FrameSender<'a> {
    lane: Producer<'a>,
    cap: usize,
    max_frame: usize,
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
        })
    }

    /// Slots a frame of `len` bytes takes.
    pub fn slots_for(&self, len: usize) -> u32 {
        len.div_ceil(self.cap).max(1) as u32
    }

    /// Writes `frame` into the lane without publishing it. `Ok(false)`:
    /// not enough free slots, nothing written.
    pub fn send(&mut self, frame: &[u8], meta: FrameMeta) -> Result<bool> {
        if frame.is_empty() || frame.len() > self.max_frame {
            return Err(Error::InvalidArgument {
                what: "frame empty or longer than the max frame",
            });
        }
        let slots = self.slots_for(frame.len());
        if !self.lane.reserve(slots)? {
            return Ok(false);
        }
        let first_flags = meta.flags & !flags::MORE;
        for (k, chunk) in frame.chunks(self.cap).enumerate() {
            let last = k as u32 + 1 == slots;
            let mut hdr = SlotHeader {
                buf: [0u8; SLOT_HEADER_LEN],
            };
            hdr.set_len(chunk.len() as u16);
            let more = if last { 0 } else { flags::MORE };
            if k == 0 {
                hdr.set_flags(first_flags | more);
                hdr.set_csum_start(meta.csum_start);
                hdr.set_csum_offset(meta.csum_offset);
            } else {
                hdr.set_flags(more);
            }
            let slot = self.lane.slot(k as u32)?;
            slot.write_from(0, &hdr.buf)?;
            slot.write_from(SLOT_HEADER_LEN, chunk)?;
        }
        self.lane.commit(slots)?;
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

/// A frame popped from a lane, in the receiver's private buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RxFrame<'b> {
    pub data: &'b [u8],
    pub meta: FrameMeta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxState {
    /// Between frames.
    Idle,
    /// Inside a frame: `filled` bytes over `slots` slots so far.
    Assembling {
        meta: FrameMeta,
        filled: usize,
        slots: u32,
    },
    /// Skipping the rest of a bad frame's `MORE` chain.
    Discarding,
}

/// The receiving side: frames out of a lane, into a private buffer.
#[derive(Debug)]
pub struct FrameReceiver<'a> {
    lane: Consumer<'a>,
    cap: usize,
    max_frame: usize,
    max_slots: u32,
    /// Frame buffer; the frame starts at `base`, 16-aligned like the slot
    /// data, so copies take the wide path of `SharedMem`.
    buf: Vec<u8>,
    base: usize,
    state: RxState,
}

impl<'a> FrameReceiver<'a> {
    /// `max_frame` as for [`FrameSender::new`], from our own configuration.
    pub fn new(lane: Consumer<'a>, max_frame: usize) -> Result<Self> {
        let cap = check_shape(lane.layout().slot_size(), max_frame)?;
        Ok(FrameReceiver {
            lane,
            cap,
            max_frame,
            max_slots: max_frame.div_ceil(cap) as u32,
            buf: vec![0u8; max_frame + 15],
            base: 0,
            state: RxState::Idle,
        })
        .map(|mut rx| {
            // The Vec never grows, so its address (and the offset) stays.
            rx.base = rx.buf.as_ptr().align_offset(16).min(15);
            rx
        })
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
        loop {
            let Some(slot) = self.lane.slot()? else {
                return Ok(None);
            };
            // One copy of the header; every decision below uses it only.
            let mut raw = [0u8; SLOT_HEADER_LEN];
            slot.read_into(0, &mut raw)?;
            let hdr = SlotHeader::new_checked(&raw[..])?;
            let len = hdr.len() as usize;
            let more = hdr.flags() & flags::MORE != 0;

            let (meta, filled, slots) = match self.state {
                RxState::Discarding => {
                    self.lane.advance();
                    if !more {
                        self.state = RxState::Idle;
                    }
                    continue;
                }
                RxState::Idle => (
                    FrameMeta {
                        flags: hdr.flags() & (flags::CSUM_BLANK | flags::DATA_VALIDATED),
                        csum_start: hdr.csum_start(),
                        csum_offset: hdr.csum_offset(),
                    },
                    0,
                    1,
                ),
                RxState::Assembling {
                    meta,
                    filled,
                    slots,
                } => (meta, filled, slots + 1),
            };

            let bad = if len > self.cap {
                Some("slot length past the slot's data")
            } else if filled + len > self.max_frame {
                Some("frame longer than the max frame")
            } else if slots > self.max_slots {
                Some("MORE chain longer than the max frame")
            } else {
                None
            };
            if let Some(what) = bad {
                self.lane.advance();
                self.state = if more {
                    RxState::Discarding
                } else {
                    RxState::Idle
                };
                return Err(Error::Protocol { what });
            }

            let at = self.base + filled;
            slot.read_into(SLOT_HEADER_LEN, &mut self.buf[at..at + len])?;
            self.lane.advance();
            let filled = filled + len;
            if more {
                self.state = RxState::Assembling {
                    meta,
                    filled,
                    slots,
                };
                continue;
            }
            self.state = RxState::Idle;
            if filled == 0 {
                return Err(Error::Protocol {
                    what: "empty frame",
                });
            }
            if meta.flags & flags::CSUM_BLANK != 0
                && meta.csum_start as usize + meta.csum_offset as usize + 2 > filled
            {
                return Err(Error::Protocol {
                    what: "checksum field past the frame end",
                });
            }
            return Ok(Some(RxFrame {
                data: &self.buf[self.base..self.base + filled],
                meta,
            }));
        }
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
    fn raw_slot(tx: &mut FrameSender<'_>, len: u16, fl: u16, body: &[u8]) {
        let lane = tx.lane();
        assert!(lane.reserve(1).unwrap());
        let slot = lane.slot(0).unwrap();
        let mut hdr = SlotHeader {
            buf: [0u8; SLOT_HEADER_LEN],
        };
        hdr.set_len(len);
        hdr.set_flags(fl);
        slot.write_from(0, &hdr.buf).unwrap();
        slot.write_from(SLOT_HEADER_LEN, body).unwrap();
        lane.commit(1).unwrap();
    }

    #[test]
    fn bad_frames_are_consumed_and_reported_once() {
        let mut pages = Pages(Vec::new());
        let (mut tx, mut rx) = pair(&mut pages, 16, 5);
        // len past the slot
        raw_slot(&mut tx, 3000, 0, &[]);
        // endless chain of empty MORE slots, then its end
        for _ in 0..5 {
            raw_slot(&mut tx, 0, flags::MORE, &[]);
        }
        raw_slot(&mut tx, 0, 0, &[]);
        // empty frame
        raw_slot(&mut tx, 0, 0, &[]);
        // checksum offload pointing past the frame
        let lane = tx.lane();
        let slot = lane.slot(0).unwrap();
        let mut hdr = SlotHeader {
            buf: [0u8; SLOT_HEADER_LEN],
        };
        hdr.set_len(10);
        hdr.set_flags(flags::CSUM_BLANK);
        hdr.set_csum_start(8);
        hdr.set_csum_offset(1);
        slot.write_from(0, &hdr.buf).unwrap();
        lane.commit(1).unwrap();
        // a good frame after all of it
        tx.send(&frame(100, 9), FrameMeta::default()).unwrap();
        tx.publish().unwrap();

        rx.poll().unwrap();
        let mut errors = Vec::new();
        let mut good = Vec::new();
        loop {
            match rx.next() {
                Ok(Some(f)) => good.push(f.data.to_vec()),
                Ok(None) => break,
                Err(Error::Protocol { what }) => errors.push(what),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            errors,
            [
                "slot length past the slot's data",
                "MORE chain longer than the max frame",
                "empty frame",
                "checksum field past the frame end"
            ]
        );
        assert_eq!(good, [frame(100, 9)]);
        assert_eq!(rx.lane().pending(), 0);
    }

    #[test]
    fn half_frames_complete_in_a_later_batch() {
        let mut pages = Pages(Vec::new());
        let (mut tx, mut rx) = pair(&mut pages, 4, 0);
        raw_slot(&mut tx, 3, flags::MORE, &[1, 2, 3]);
        tx.publish().unwrap();
        rx.poll().unwrap();
        assert_eq!(rx.next(), Ok(None));
        rx.release().unwrap();
        raw_slot(&mut tx, 2, 0, &[4, 5]);
        tx.publish().unwrap();
        rx.poll().unwrap();
        assert_eq!(rx.next().unwrap().unwrap().data, &[1, 2, 3, 4, 5]);
    }
}
