//! The blkif front end (`xen_pv::blkif::FrontRing`) against a hostile
//! backend that may write any word of the shared ring page, indexes and
//! entries alike, between our pushes, publishes, takes and waits. Input: a
//! script, one operation per byte plus its operands.
//!
//! Checked besides "no panic": no more than `RING_SIZE` requests are ever
//! outstanding; `push` refuses a full ring and a request of more than 11
//! segments; `push_indirect` refuses a full ring, no segments, more than 8
//! indirect pages' worth and an operation other than read or write; `take` never yields more responses than were outstanding and
//! consumes exactly what it yields; parking and resuming keeps the indexes.
#![no_main]

use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use share_hal::SharedMem;
use xen_pv::abi::{BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_READ, BLKIF_OP_WRITE};
use xen_pv::blkif::{BlkifIndirectRequest, BlkifRequest, BlkifSegment, FrontRing, RING_SIZE};

#[path = "../script.rs"]
mod script;
use script::{Page, Script};

fuzz_target!(|data: &[u8]| {
    let mut page = Box::new(Page([0; 4096]));
    let mem = SharedMem::from_slice(&mut page.0);
    // The backend's window on the same page (a copy of ours).
    let peer = mem;
    let Ok(mut ring) = FrontRing::init(mem) else {
        panic!("a 4096-byte page holds a blkif ring");
    };
    let mut s = Script::new(data);
    let mut next_id = 0u64;
    let mut out = Vec::new();
    while let Some(op) = s.byte() {
        assert!(ring.outstanding() <= RING_SIZE);
        match op % 8 {
            0 => {
                let nr_segments = s.byte().unwrap_or(0) % 16;
                let mut req = BlkifRequest::bare(s.byte().unwrap_or(0), 51712, next_id);
                req.sector = u64::from(s.word());
                req.nr_segments = nr_segments;
                for (i, seg) in req.segments.iter_mut().enumerate() {
                    *seg = BlkifSegment {
                        gref: i as u32,
                        first_sect: 0,
                        last_sect: 7,
                    };
                }
                next_id += 1;
                let free = ring.free();
                match ring.push(&req) {
                    Ok(true) => {
                        assert!(free > 0);
                        assert!(usize::from(nr_segments) <= BLKIF_MAX_SEGMENTS_PER_REQUEST);
                        assert_eq!(ring.free(), free - 1);
                    }
                    Ok(false) => assert_eq!(free, 0, "a ring with room refused a request"),
                    Err(_) => {
                        assert!(usize::from(nr_segments) > BLKIF_MAX_SEGMENTS_PER_REQUEST);
                        assert_eq!(ring.free(), free);
                    }
                }
            }
            1 => {
                let _ = ring.publish();
            }
            2 | 3 => {
                // The backend writes any aligned word of the page: an
                // index, a response, a request it should only read.
                let at = usize::from(s.byte().unwrap_or(0)) * 16
                    + usize::from(s.byte().unwrap_or(0) % 4) * 4;
                let v = s.word();
                peer.store_u32(at, v, Ordering::Release)
                    .expect("an aligned word inside the page");
            }
            4 => {
                let before = ring.outstanding();
                out.clear();
                match ring.take(&mut out) {
                    Ok(n) => {
                        assert_eq!(n, out.len());
                        assert!(n as u32 <= before);
                        assert_eq!(ring.outstanding(), before - n as u32);
                    }
                    Err(_) => {
                        assert!(out.is_empty());
                        assert_eq!(ring.outstanding(), before);
                    }
                }
            }
            5 => {
                let _ = ring.prepare_wait();
            }
            7 => {
                let indirect_op = s.byte().unwrap_or(0) % 4;
                let nr_segments = (s.word() % 5000) as u16;
                let req = BlkifIndirectRequest {
                    indirect_op,
                    nr_segments,
                    id: next_id,
                    sector: u64::from(s.word()),
                    handle: 51712,
                    indirect_grefs: [1, 2, 3, 4, 5, 6, 7, 8],
                };
                next_id += 1;
                let valid = (indirect_op == BLKIF_OP_READ || indirect_op == BLKIF_OP_WRITE)
                    && nr_segments >= 1
                    && nr_segments <= 4096;
                let free = ring.free();
                match ring.push_indirect(&req) {
                    Ok(true) => {
                        assert!(free > 0 && valid);
                        assert_eq!(ring.free(), free - 1);
                    }
                    Ok(false) => assert_eq!(free, 0, "a ring with room refused a request"),
                    Err(_) => {
                        assert!(!valid);
                        assert_eq!(ring.free(), free);
                    }
                }
            }
            _ => {
                let (outstanding, free) = (ring.outstanding(), ring.free());
                let st = ring.park();
                let Ok(again) = FrontRing::resume(mem, st) else {
                    panic!("resuming on the same page failed");
                };
                ring = again;
                assert_eq!((ring.outstanding(), ring.free()), (outstanding, free));
            }
        }
    }
});
