//! Lanes and frames against a hostile peer: whatever it writes into the
//! shared pages, and whenever, our side returns errors or garbage data but
//! never panics, never loops forever and never touches memory past the lane
//! (the lane ends at a guard page, so a stray access would crash the test).

mod lane_common;

use std::sync::atomic::{AtomicBool, Ordering};

use lane_common::{Rng, SharedPages};
use proptest::prelude::*;
use share_hal::frames::{flags, FrameMeta, FrameReceiver, FrameSender, NET_SLOT_SIZE};
use share_hal::lane::{init, Consumer, LaneLayout, Producer, HEADER_LEN};
use share_hal::{Error, SharedMem};

const MAX_FRAME: usize = 1514;

#[derive(Clone, Debug)]
enum Op {
    /// The peer writes `bytes` at `offset` (taken modulo the lane size).
    Scribble {
        offset: usize,
        bytes: Vec<u8>,
    },
    /// The peer sets an index field to a value.
    Index {
        field: usize,
        value: u32,
    },
    Poll,
    Take,
    Release,
    PrepareWait,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(offset, bytes)| Op::Scribble { offset, bytes }),
        (0usize..4, any::<u32>()).prop_map(|(f, value)| Op::Index {
            field: f * 64,
            value
        }),
        (0usize..4, 0u32..40).prop_map(|(f, d)| Op::Index {
            field: f * 64,
            value: d.wrapping_sub(20)
        }),
        Just(Op::Poll),
        Just(Op::Take),
        Just(Op::Take),
        Just(Op::Release),
        Just(Op::PrepareWait),
    ];
    prop::collection::vec(op, 1..200)
}

/// The index ops write relative to the start (0) or anywhere; a relative
/// value lets the prod index land just inside or outside the valid window.
fn apply_peer(mem: SharedMem<'_>, op: &Op) -> bool {
    match op {
        Op::Scribble { offset, bytes } => {
            let off = offset % mem.len();
            let n = bytes.len().min(mem.len() - off);
            mem.write_from(off, &bytes[..n]).unwrap();
            true
        }
        Op::Index { field, value } => {
            mem.store_u32(*field, *value, Ordering::Relaxed).unwrap();
            true
        }
        _ => false,
    }
}

fn accept_peer_error(e: Error) {
    assert!(
        matches!(e, Error::Protocol { .. }),
        "only protocol errors may come from peer data, got {e:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn scribbled_lane_never_panics(slot_log2 in 0u32..5, ops in ops()) {
        let layout = LaneLayout::new(1 << slot_log2, 64).unwrap();
        let pages = SharedPages::new(layout.bytes());
        let mem = pages.mem();
        init(mem, layout, 0).unwrap();
        let mut c = Consumer::attach(mem, layout).unwrap();
        let mut buf = [0u8; 64];
        for op in &ops {
            if apply_peer(mem, op) {
                continue;
            }
            let r = match op {
                Op::Poll => c.poll().map(|n| assert!(n <= layout.slot_count())),
                Op::Take => c.pop_into(&mut buf).map(drop),
                Op::Release => c.release().map(drop),
                Op::PrepareWait => c.prepare_wait().map(|n| assert!(n <= layout.slot_count())),
                _ => unreachable!(),
            };
            if let Err(e) = r {
                accept_peer_error(e);
            }
            prop_assert!(c.pending() <= layout.slot_count());
        }
    }

    #[test]
    fn scribbled_lane_never_panics_the_producer(slot_log2 in 0u32..5, ops in ops()) {
        let layout = LaneLayout::new(1 << slot_log2, 64).unwrap();
        let pages = SharedPages::new(layout.bytes());
        let mem = pages.mem();
        init(mem, layout, 0).unwrap();
        let mut p = Producer::attach(mem, layout).unwrap();
        for op in &ops {
            if apply_peer(mem, op) {
                continue;
            }
            let r = match op {
                Op::Poll => p.refresh().map(drop),
                Op::Take => p.push(&[7u8; 64]).map(drop),
                Op::Release => p.publish().map(drop),
                Op::PrepareWait => p.prepare_wait(2).map(drop),
                _ => unreachable!(),
            };
            if let Err(e) = r {
                accept_peer_error(e);
            }
            prop_assert!(p.free_cached() <= layout.slot_count());
        }
    }

    #[test]
    fn scribbled_frames_never_panic(slot_log2 in 0u32..4, ops in ops()) {
        let layout = LaneLayout::new(1 << slot_log2, NET_SLOT_SIZE).unwrap();
        let pages = SharedPages::new(layout.bytes());
        let mem = pages.mem();
        init(mem, layout, 0).unwrap();
        let mut rx = FrameReceiver::new(Consumer::attach(mem, layout).unwrap(), MAX_FRAME).unwrap();
        // Scribbles aimed at slot headers are the interesting ones.
        let aim = |op: &Op| match op {
            Op::Scribble { offset, bytes } if offset % 2 == 0 => Op::Scribble {
                offset: HEADER_LEN + (offset / 2 % layout.slot_count() as usize) * NET_SLOT_SIZE,
                bytes: bytes.clone(),
            },
            other => other.clone(),
        };
        for op in ops.iter().map(aim) {
            if apply_peer(mem, &op) {
                continue;
            }
            let r = match op {
                Op::Poll => rx.poll().map(drop),
                Op::Take => rx.next().map(|f| {
                    if let Some(f) = f {
                        assert!(!f.data.is_empty() && f.data.len() <= MAX_FRAME);
                    }
                }),
                Op::Release => rx.release().map(drop),
                Op::PrepareWait => rx.prepare_wait().map(drop),
                _ => unreachable!(),
            };
            if let Err(e) = r {
                accept_peer_error(e);
            }
        }
    }
}

#[test]
fn prod_far_ahead_is_an_error_every_time() {
    let layout = LaneLayout::new(8, 64).unwrap();
    let pages = SharedPages::new(layout.bytes());
    let mem = pages.mem();
    init(mem, layout, u32::MAX - 1).unwrap();
    let mut c = Consumer::attach(mem, layout).unwrap();
    for bad in [7u32, 100, u32::MAX - 2, u32::MAX / 2] {
        mem.store_u32(0, bad, Ordering::Release).unwrap();
        assert!(
            matches!(c.poll(), Err(Error::Protocol { .. })),
            "prod {bad}"
        );
        assert_eq!(c.pending(), 0);
        assert!(c.slot().unwrap().is_none());
    }
    // A sane index again: the lane works on.
    mem.store_u32(0, 6, Ordering::Release).unwrap();
    assert_eq!(c.poll().unwrap(), 8);
}

/// The peer fills the lane with one endless MORE chain, again and again;
/// the receiver reports it, discards it slot by slot, and still gets the
/// good frame that follows.
#[test]
fn endless_more_chain_is_discarded() {
    let layout = LaneLayout::new(4, NET_SLOT_SIZE).unwrap();
    let pages = SharedPages::new(layout.bytes());
    let mem = pages.mem();
    init(mem, layout, 0).unwrap();
    let mut peer = Producer::attach(mem, layout).unwrap();
    let mut rx = FrameReceiver::new(Consumer::attach(mem, layout).unwrap(), MAX_FRAME).unwrap();
    let mut errors = 0;
    for _round in 0..10 {
        while peer.reserve(1).unwrap() {
            let slot = peer.slot(0).unwrap();
            slot.write_u16(0, 2000).unwrap();
            slot.write_u16(2, flags::MORE).unwrap();
            peer.commit(1).unwrap();
        }
        peer.publish().unwrap();
        rx.poll().unwrap();
        loop {
            match rx.next() {
                Ok(None) => break,
                Ok(Some(f)) => panic!("frame out of a MORE chain: {} bytes", f.data.len()),
                Err(e) => {
                    accept_peer_error(e);
                    errors += 1;
                }
            }
        }
        rx.release().unwrap();
    }
    assert_eq!(errors, 1, "one error per bad frame");
    // The chain ends; then a good frame.
    let slot = {
        assert!(peer.reserve(1).unwrap());
        peer.slot(0).unwrap()
    };
    slot.write_u16(0, 0).unwrap();
    slot.write_u16(2, 0).unwrap();
    peer.commit(1).unwrap();
    let mut tx = FrameSender::new(peer, MAX_FRAME).unwrap();
    assert!(tx.send(&[0xab; 60], FrameMeta::default()).unwrap());
    tx.publish().unwrap();
    rx.poll().unwrap();
    assert_eq!(rx.next().unwrap().unwrap().data, &[0xab; 60]);
}

/// A scribbler thread rewrites the producer index and the slot headers as
/// fast as it can while the receiver works: errors and garbage, no panic,
/// no hang, no frame over the max.
#[test]
fn indexes_changing_under_the_receiver() {
    let layout = LaneLayout::new(8, NET_SLOT_SIZE).unwrap();
    let pages = SharedPages::new(layout.bytes());
    let mem = pages.mem();
    init(mem, layout, 0).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng::new(42);
            while !stop.load(Ordering::Relaxed) {
                let r = rng.next();
                match r % 4 {
                    // Near the consumer's published index: mostly valid.
                    0 => mem.load_u32(128, Ordering::Acquire).and_then(|cons| {
                        let ahead = (r >> 32) as u32 % 12;
                        mem.store_u32(0, cons.wrapping_add(ahead), Ordering::Release)
                    }),
                    1 => mem.store_u32(0, (r >> 32) as u32, Ordering::Release),
                    _ => {
                        let slot = (r >> 8) as usize % 8;
                        let off = HEADER_LEN + slot * NET_SLOT_SIZE;
                        // len up to 2047 (some past the slot), MORE or not.
                        mem.write_u32(off, (r >> 32) as u32 & 0x0001_07ff)
                    }
                }
                .unwrap();
            }
        });
        let mut rx = FrameReceiver::new(Consumer::attach(mem, layout).unwrap(), MAX_FRAME).unwrap();
        let (mut frames, mut errors) = (0u64, 0u64);
        // On a loaded machine the scribbler may sleep for long stretches:
        // run until both outcomes were seen (or 20 s passed).
        let start = std::time::Instant::now();
        let mut rounds = 0u64;
        while (rounds < 20_000 || frames == 0 || errors == 0)
            && start.elapsed() < std::time::Duration::from_secs(20)
        {
            rounds += 1;
            match rx.poll() {
                Ok(_) => loop {
                    match rx.next() {
                        Ok(None) => break,
                        Ok(Some(f)) => {
                            assert!(f.data.len() <= MAX_FRAME);
                            frames += 1;
                        }
                        Err(e) => {
                            accept_peer_error(e);
                            errors += 1;
                        }
                    }
                },
                Err(e) => {
                    accept_peer_error(e);
                    errors += 1;
                }
            }
            if let Err(e) = rx.release() {
                accept_peer_error(e);
            }
        }
        stop.store(true, Ordering::Relaxed);
        // Both kinds of outcome happened, so the test exercised something.
        assert!(frames > 0 && errors > 0, "frames {frames}, errors {errors}");
    });
}
