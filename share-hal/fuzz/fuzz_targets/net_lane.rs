//! The receiving end of a network lane (`lane::Consumer` + `frames::
//! FrameReceiver`) against a hostile producer that may rewrite any byte of
//! the lane, indexes included, between any two of our calls.
//!
//! Input: byte 0 picks the slot count (1, 2, 4) and how many bytes of a
//! frame are copied privately as it is read (all, 0, 14, 128: the rest is
//! copied from the slots when asked, `next_lane`), byte 1 the max frame,
//! bytes 2..6 the starting index (to cross the u32 wrap), then a script:
//! 0 poll, 1 next frame (`next_lane`; its head and `rest_windows` add up
//! to it, inside the lane; the whole frame copied out twice, into a Vec
//! straight from the slots and into the receiver's buffer),
//! 2 release, 3 prepare_wait,
//! 4 <off u16> <len u8> <bytes>: the peer writes bytes anywhere in the lane,
//! 5 <which u8> <value u32>: the peer stores one of the four indexes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use share_hal::frames::FrameReceiver;
use share_hal::lane::{self, Consumer, LaneLayout};
use share_hal::wire::net::SLOT_SIZE;
use share_hal::SharedMem;

const MAX_SLOTS: usize = 4;
const WINDOW: usize = lane::HEADER_LEN + MAX_SLOTS * SLOT_SIZE;

/// Page-aligned, like a real share.
#[repr(C, align(4096))]
struct Window([u8; WINDOW]);

fuzz_target!(|data: &[u8]| {
    let [slots, frame, s0, s1, s2, s3, script @ ..] = data else {
        return;
    };
    let slot_count = 1u32 << (slots % 3);
    let max_frame = [64usize, 1518, 9018][usize::from(frame % 3)];
    let start = u32::from_le_bytes([*s0, *s1, *s2, *s3]);
    let shape = LaneLayout::new(slot_count, SLOT_SIZE).unwrap();

    let mut window = Box::new(Window([0; WINDOW]));
    let mem = SharedMem::from_slice(&mut window.0[..shape.bytes()]);
    lane::init(mem, shape, start).unwrap();
    let consumer = Consumer::attach(mem, shape).unwrap();
    let mut rx = FrameReceiver::new(consumer, max_frame).unwrap();
    rx.set_private_head([usize::MAX, 0, 14, 128][usize::from(slots / 3 % 4)]);

    let mut ops = script.iter().copied();
    while let Some(op) = ops.next() {
        match op % 6 {
            0 => {
                if let Ok(n) = rx.poll() {
                    assert!(n <= slot_count, "a batch larger than the lane");
                }
            }
            1 => {
                if let Ok(Some(mut f)) = rx.next_lane() {
                    let n = f.len();
                    assert!(n >= 1 && n <= max_frame);
                    assert!(f.head().len() <= n);
                    // What share-member hands the kernel: the head, then
                    // windows of the lane that add up to the frame.
                    let mut rest = 0;
                    for w in f.rest_windows() {
                        let w = w.expect("a frame's piece inside the lane");
                        let inside = w.as_ptr() as usize - mem.as_ptr() as usize;
                        assert!(inside + w.len() <= mem.len());
                        rest += w.len();
                    }
                    assert_eq!(f.head().len() + rest, n);
                    let mut copy = Vec::new();
                    f.copy_into(&mut copy).unwrap();
                    assert_eq!(copy.len(), n);
                    assert_eq!(f.whole().unwrap().len(), n);
                    assert!(f.is_whole());
                }
            }
            2 => {
                let _ = rx.release();
            }
            3 => {
                if let Ok(n) = rx.prepare_wait() {
                    assert!(n <= slot_count);
                }
            }
            4 => {
                let (Some(a), Some(b), Some(len)) = (ops.next(), ops.next(), ops.next()) else {
                    return;
                };
                let off = usize::from(u16::from_le_bytes([a, b])) % mem.len();
                let bytes: Vec<u8> = ops.by_ref().take(usize::from(len % 32)).collect();
                let n = bytes.len().min(mem.len() - off);
                mem.write_from(off, &bytes[..n]).unwrap();
            }
            _ => {
                let Some(which) = ops.next() else { return };
                let v: Vec<u8> = ops.by_ref().take(4).collect();
                let Ok(v) = <[u8; 4]>::try_from(v) else {
                    return;
                };
                let off = 64 * usize::from(which % 4);
                mem.store_u32(
                    off,
                    u32::from_le_bytes(v),
                    core::sync::atomic::Ordering::Release,
                )
                .unwrap();
            }
        }
    }
});
