//! The switch (or a member) reassembling frames from a lane's slot headers,
//! and a member validating the switch's control area.
//! Input: byte 0..2 pick the MTU, byte 2 the negotiated features (bit 3
//! GSO), then 16-byte slot headers (bytes 8..12 segmentation offload); the
//! whole input is also tried as a control area.
#![no_main]

use libfuzzer_sys::fuzz_target;
use share_hal::wire::net::{
    self, Control, ControlRepr, FrameAssembler, SlotAction, SlotHeader, SlotRepr, FRAME_MIN,
    SLOT_DATA_MAX, SLOT_HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Control::new_checked(data) {
        if let Ok(r) = ControlRepr::parse(&c) {
            let mut out = [0u8; net::CONTROL_LEN];
            r.emit(&mut Control::new_unchecked(&mut out[..])).unwrap();
            assert_eq!(ControlRepr::parse(&Control::new_unchecked(&out[..])), Ok(r));
            let _ = net::negotiate(r.features_offered, c.features_accepted());
        }
    }

    let [m0, m1, feats, rest @ ..] = data else {
        return;
    };
    let mtu = u16::from_le_bytes([*m0, *m1]);
    let Ok(mut a) = FrameAssembler::new(mtu, u32::from(*feats)) else {
        return;
    };
    // The frame buffer the caller copies into: every Append must fit it,
    // and a completed frame must have had every byte written once.
    let mut written = 0usize;
    // The same rules without their fast path, fed the same slots: both
    // must decide alike.
    let mut general = a.clone();
    for chunk in rest.chunks_exact(SLOT_HEADER_LEN) {
        let h = SlotHeader::new_checked(chunk).unwrap();
        let verdict = a.push(&h);
        assert_eq!(
            verdict,
            general.push_general(&h),
            "fast path and rules differ"
        );
        match verdict {
            Ok(SlotAction::Append { at, len, done }) => {
                assert!(len >= 1 && len <= SLOT_DATA_MAX);
                assert!(at + len <= a.max_frame());
                assert_eq!(at, written, "slots append in order");
                written = at + len;
                if let Some(f) = done {
                    assert_eq!(f.len, written);
                    assert!(f.len >= FRAME_MIN && f.len <= a.max_frame());
                    if let Some(c) = f.csum {
                        assert!(usize::from(c.start) + usize::from(c.offset) + 2 <= f.len);
                    }
                    match f.gso {
                        // Only a GSO frame may pass the MTU.
                        None => assert!(f.len <= a.mtu_frame()),
                        Some(g) => {
                            assert!(a.features() & net::features::GSO != 0);
                            assert!(f.len <= net::GSO_MAX_FRAME);
                            assert!(f.csum.is_some() && g.size >= 1);
                            assert!(g.kind >= 1 && g.kind <= net::gso::TYPE_MAX);
                            assert_eq!(net::Gso::from_fields(g.kind, g.size, g.flags), Ok(Some(g)));
                        }
                    }
                    let kind_max = if f.gso.is_some() {
                        a.max_frame()
                    } else {
                        a.mtu_frame()
                    };
                    assert!(f.slots as usize <= kind_max.div_ceil(SLOT_DATA_MAX));
                    written = 0;
                }
            }
            Ok(SlotAction::Skip) => written = 0,
            Err(_) => written = 0,
        }
        if let Ok(s) = SlotRepr::parse(&h) {
            let mut out = [0u8; SLOT_HEADER_LEN];
            s.emit(&mut SlotHeader::new_unchecked(&mut out[..]))
                .unwrap();
            assert_eq!(SlotRepr::parse(&SlotHeader::new_unchecked(&out[..])), Ok(s));
        }
    }
});
