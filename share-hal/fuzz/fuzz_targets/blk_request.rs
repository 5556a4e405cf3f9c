//! The block server validating a request copied out of its request lane,
//! and for an indirect request the segment pages it copied from the member.
//! Input: byte 0 picks the disk (read-only, features), then the 128-byte
//! request slot, then the indirect pages laid end to end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use share_hal::wire::blk::{
    features, indirect_pages_for, indirect_segment, ControlRepr, Request, RequestRepr,
    MAX_INDIRECT_SEGMENTS, REQUEST_SIZE,
};

fuzz_target!(|data: &[u8]| {
    let [cfg, rest @ ..] = data else {
        return;
    };
    let feats = u32::from(cfg & 0x0f);
    let disk = ControlRepr {
        features: feats,
        read_only: cfg & 0x10 != 0,
        capacity: if cfg & 0x20 != 0 {
            u64::MAX / 512
        } else {
            1 << 21
        },
        max_indirect_segments: if feats & features::INDIRECT != 0 {
            if cfg & 0x40 != 0 {
                MAX_INDIRECT_SEGMENTS
            } else {
                512
            }
        } else {
            0
        },
    };
    let Ok(req) = Request::new_checked(rest) else {
        return;
    };
    let _ = RequestRepr::raw_id(&req);
    let Ok(r) = RequestRepr::parse(&req, &disk) else {
        return;
    };
    let pages = &rest[REQUEST_SIZE..];
    match r {
        RequestRepr::Direct {
            sector, segments, ..
        } => {
            let n = segments.as_slice().len();
            assert!((1..=13).contains(&n));
            assert!(sector + segments.sectors() <= disk.capacity);
        }
        RequestRepr::Indirect {
            nr_segments,
            pages: p,
            sector,
            ..
        } => {
            assert!(nr_segments >= 1 && nr_segments <= disk.max_indirect_segments);
            assert_eq!(p.as_slice().len(), indirect_pages_for(nr_segments));
            if let Ok(total) = r.indirect_segments(pages, &disk) {
                assert!(total >= u64::from(nr_segments) && total <= 8 * u64::from(nr_segments));
                assert!(sector + total <= disk.capacity);
                // After validation every segment reads back without error.
                for i in 0..usize::from(nr_segments) {
                    indirect_segment(pages, i).unwrap();
                }
            }
        }
        RequestRepr::Discard {
            sector, nr_sectors, ..
        } => assert!(!disk.read_only && sector + nr_sectors <= disk.capacity),
        RequestRepr::Flush { .. } => assert!(feats & features::FLUSH != 0),
    }
    let mut out = [0u8; REQUEST_SIZE];
    r.emit(&mut Request::new_unchecked(&mut out[..])).unwrap();
    assert_eq!(
        RequestRepr::parse(&Request::new_unchecked(&out[..]), &disk),
        Ok(r)
    );
});
