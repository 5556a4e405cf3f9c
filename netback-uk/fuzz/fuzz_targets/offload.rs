//! The switch's offload path: a member's frame and offload info, as its
//! tx lane delivered them (or anything else), for a destination port with
//! arbitrary negotiated features and MTU (`netback_uk::offload::deliver`).
//! Every emitted frame must fit the destination (its MTU + 18, or the GSO
//! limit for a frame passed through to a GSO port) and carry only offload
//! fields the destination accepted, pointing inside the frame. And
//! `pass_through`, deciding on the frame's first `OFFLOAD_HEAD` bytes and
//! its length (as the switch does for a frame it copies once), must agree
//! with `deliver` on the whole frame.
//!
//! Input: bytes 0..2 the destination MTU, byte 2 its features, bytes 3..13
//! the meta (flags u16, csum_start u16, csum_offset u16, gso_type u8,
//! gso_size u16, gso_flags u8, all little-endian), byte 13 the room in the
//! destination's lane (frames it takes before reporting full), then the
//! frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback_uk::offload::{
    deliver, max_emitted, pass_through, DropCause, Pass, Scratch, Verdict, OFFLOAD_HEAD,
};
use share_hal::frames::FrameMeta;
use share_hal::wire::net::{self, features, flags};

fuzz_target!(|data: &[u8]| {
    let [m0, m1, feats, f0, f1, s0, s1, o0, o1, kind, z0, z1, gflags, room, frame @ ..] = data
    else {
        return;
    };
    let mtu = usize::from(u16::from_le_bytes([*m0, *m1])) % 9001;
    let dst_max = mtu.max(usize::from(net::MTU_MIN)) + net::FRAME_OVERHEAD;
    let dst_features = u32::from(*feats) & features::ALL;
    let meta = FrameMeta {
        flags: u16::from_le_bytes([*f0, *f1]),
        csum_start: u16::from_le_bytes([*s0, *s1]),
        csum_offset: u16::from_le_bytes([*o0, *o1]),
        gso_type: *kind,
        gso_size: u16::from_le_bytes([*z0, *z1]),
        gso_flags: *gflags,
    };
    let limit = max_emitted(dst_features, dst_max);
    let mut scratch = Scratch::new();
    // Twice with one scratch: a reused buffer must not leak state.
    let mut first: Vec<(Vec<u8>, FrameMeta)> = Vec::new();
    for round in 0..2 {
        let mut left = u32::from(*room);
        let mut got = Vec::new();
        let verdict = deliver(frame, &meta, dst_features, dst_max, &mut scratch, &mut |f, m| {
            assert!(f.len() >= net::FRAME_MIN && f.len() <= limit);
            assert_eq!(m.flags & !(flags::CSUM_BLANK | flags::DATA_VALIDATED), 0);
            if m.flags & flags::CSUM_BLANK != 0 {
                assert!(dst_features & features::CSUM_BLANK != 0);
                assert!(usize::from(m.csum_start) + usize::from(m.csum_offset) + 2 <= f.len());
            }
            if m.flags & flags::DATA_VALIDATED != 0 {
                assert!(dst_features & features::DATA_VALIDATED != 0);
            }
            match m.gso().expect("emitted GSO fields are well-formed") {
                Some(_) => {
                    assert!(dst_features & features::GSO != 0);
                    assert!(m.flags & flags::CSUM_BLANK != 0);
                    assert!(f.len() <= net::GSO_MAX_FRAME);
                }
                None => assert!(f.len() <= dst_max, "plain frame over the port's max"),
            }
            if left == 0 {
                return false;
            }
            left -= 1;
            got.push((f.to_vec(), m));
            true
        });
        match verdict {
            Verdict::Delivered { frames } => assert_eq!(frames as usize, got.len()),
            Verdict::Partial { frames, dropped } => {
                assert_eq!(frames as usize, got.len());
                assert!(frames > 0 && dropped > 0);
            }
            Verdict::Dropped(_) => assert!(got.is_empty()),
        }
        if round == 0 {
            let head = &frame[..frame.len().min(OFFLOAD_HEAD)];
            match pass_through(head, frame.len(), &meta, dst_features, dst_max) {
                Ok(Pass::As(m)) if *room > 0 => {
                    assert_eq!(verdict, Verdict::Delivered { frames: 1 });
                    assert_eq!(got, [(frame.to_vec(), m)]);
                }
                Ok(Pass::As(_)) => assert_eq!(verdict, Verdict::Dropped(DropCause::LaneFull)),
                Err(c) => assert_eq!(verdict, Verdict::Dropped(c)),
                Ok(Pass::NeedsWhole) => assert!(
                    !matches!(verdict, Verdict::Dropped(c) if c != DropCause::LaneFull),
                    "{verdict:?}"
                ),
            }
            first = got;
        } else {
            assert_eq!(first, got, "same input, same output");
        }
    }
});
