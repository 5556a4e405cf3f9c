//! The share layout and messages of `xenshare-xfer` (its owner and member),
//! shared with the test-only `xenshare-liar`, which lies in this layout.
use share_hal::lane::LaneLayout;
use share_hal::platform::PAGE_SIZE;
use share_hal::{Error, SharedMem};

pub const LANE_PAGES: usize = 17;
pub const SLOT: usize = 2048;
pub const BULK_PAGES: usize = 16;
pub const BULK_BYTES: usize = BULK_PAGES * PAGE_SIZE;
/// Owner-to-member lane, member-to-owner lane, then the bulk regions.
pub const O2M_LANE: usize = 0;
pub const M2O_LANE: usize = LANE_PAGES;
pub const O2M_BULK: usize = 2 * LANE_PAGES;
pub const M2O_BULK: usize = O2M_BULK + BULK_PAGES;
pub const SHARE_PAGES: usize = M2O_BULK + BULK_PAGES;

/// Message header in a slot: kind, seq, len, reserved (u32 LE each).
pub const HDR: usize = 16;
pub const PAYLOAD: usize = SLOT - HDR;
pub const DATA: u32 = 1;
pub const DATA_END: u32 = 2;
pub const BULK: u32 = 3;
pub const ACK: u32 = 4;
pub const BULK_END: u32 = 5;

pub fn lane_layout() -> Result<LaneLayout, Error> {
    LaneLayout::fit(LANE_PAGES * PAGE_SIZE, SLOT)
}

pub fn lane_window(mem: SharedMem<'_>, first_page: usize) -> Result<SharedMem<'_>, Error> {
    mem.slice(first_page * PAGE_SIZE, LANE_PAGES * PAGE_SIZE)
}

/// A message: its header (`len` as claimed), then `payload`.
pub fn msg(kind: u32, seq: u32, payload: &[u8], len: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(HDR + payload.len());
    for v in [kind, seq, len, 0] {
        m.extend_from_slice(&v.to_le_bytes());
    }
    m.extend_from_slice(payload);
    m
}
