//! The counter page: a domain's per-entry counters, one page it owns and
//! grants read-only to dom0 (its grant ref in the vdevice page header,
//! `stats_gref`). It is how dom0 reads what a backend did without
//! xenstore (`vdevice stats DOMID`); layout in docs/protocol.md.
//!
//! The writer updates under a sequence count (odd while writing); the
//! reader copies the whole page once and retries a bounded number of times
//! until it sees the same even count before and after.

use super::{check_len, get_u16, get_u32, get_u64, set_u16, set_u32, set_u64, Error};
use crate::platform::PAGE_SIZE;

pub const MAGIC: u32 = u32::from_le_bytes(*b"XSST");
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;
/// Counters per entry.
pub const COUNTERS: usize = 12;
pub const ENTRY_LEN: usize = COUNTERS * 8;
/// Entries one page holds.
pub const MAX_ENTRIES: u16 = ((PAGE_SIZE - HEADER_LEN) / ENTRY_LEN) as u16;

/// Byte offsets of the header.
pub mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const ENTRY_COUNT: usize = 6;
    /// Sequence count: odd while the domain writes.
    pub const SEQUENCE: usize = 8;
}

/// What the counters of a network port mean (netback-uk), by index.
pub const NET_COUNTERS: [&str; COUNTERS] = [
    "from_member_frames",
    "from_member_bytes",
    "to_member_frames",
    "to_member_bytes",
    "drop_rx_full",
    "drop_bad_frame",
    "drop_too_big",
    "drop_spoof",
    "drop_offload",
    "lane_errors",
    "link",
    "features",
];

/// What the counters of a LAN's uplink entry mean (netback-uk), by index:
/// the port layout, the "member" being the network behind the uplink
/// (docs/protocol.md, "Uplink").
pub const UPLINK_COUNTERS: [&str; COUNTERS] = [
    "from_network_frames",
    "from_network_bytes",
    "to_network_frames",
    "to_network_bytes",
    "drop_tx_full",
    "drop_bad_frame",
    "drop_too_big",
    "drop_spoof",
    "drop_offload",
    "unlearned",
    "link",
    "device",
];

/// Offset of entry `index`'s counters.
pub fn entry_offset(index: u16) -> usize {
    HEADER_LEN + usize::from(index) * ENTRY_LEN
}

/// Writes a fresh header (all counters zero) into a private page image.
pub fn emit_header(page: &mut [u8], entry_count: u16) -> Result<(), Error> {
    check_len(page, PAGE_SIZE)?;
    if entry_count == 0 || entry_count > MAX_ENTRIES {
        return Err(Error::BadField {
            field: "stats entry count",
            value: entry_count.into(),
        });
    }
    page.fill(0);
    set_u32(page, field::MAGIC, MAGIC);
    set_u16(page, field::VERSION, VERSION);
    set_u16(page, field::ENTRY_COUNT, entry_count);
    Ok(())
}

/// A consistent copy of the page, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsRepr {
    pub sequence: u32,
    pub entries: alloc::vec::Vec<[u64; COUNTERS]>,
}

impl StatsRepr {
    /// Parses a private copy of the page; `Ok(None)` if the copy was taken
    /// mid-update (odd sequence): copy again.
    pub fn parse(page: &[u8]) -> Result<Option<Self>, Error> {
        check_len(page, PAGE_SIZE)?;
        let magic = get_u32(page, field::MAGIC);
        if magic != MAGIC {
            return Err(Error::BadMagic {
                expected: MAGIC,
                found: magic,
            });
        }
        let version = get_u16(page, field::VERSION);
        if version != VERSION {
            return Err(Error::UnsupportedVersion { found: version });
        }
        let count = get_u16(page, field::ENTRY_COUNT);
        if count == 0 || count > MAX_ENTRIES {
            return Err(Error::BadField {
                field: "stats entry count",
                value: count.into(),
            });
        }
        let sequence = get_u32(page, field::SEQUENCE);
        if sequence % 2 == 1 {
            return Ok(None);
        }
        let entries = (0..count)
            .map(|i| {
                let at = entry_offset(i);
                core::array::from_fn(|k| get_u64(page, at + 8 * k))
            })
            .collect();
        Ok(Some(StatsRepr { sequence, entries }))
    }
}

/// Writes one entry's counters into a private image of its bytes.
pub fn emit_entry(out: &mut [u8; ENTRY_LEN], counters: &[u64; COUNTERS]) {
    for (k, c) in counters.iter().enumerate() {
        set_u64(out, 8 * k, *c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_round_trips_and_torn_copies_are_refused() {
        let mut page = alloc::vec![0xaau8; PAGE_SIZE];
        emit_header(&mut page, 3).unwrap();
        let mut e = [0u8; ENTRY_LEN];
        emit_entry(&mut e, &core::array::from_fn(|k| k as u64 * 10));
        page[entry_offset(2)..entry_offset(2) + ENTRY_LEN].copy_from_slice(&e);
        assert_eq!(&page[..8], b"XSST\x01\x00\x03\x00");
        let r = StatsRepr::parse(&page).unwrap().unwrap();
        assert_eq!(r.entries.len(), 3);
        assert_eq!(r.entries[2][11], 110);
        assert_eq!(r.entries[0], [0; COUNTERS]);
        page[field::SEQUENCE] = 1;
        assert_eq!(StatsRepr::parse(&page), Ok(None));
        page[field::ENTRY_COUNT] = 200;
        assert!(StatsRepr::parse(&page).is_err());
        assert!(emit_header(&mut page, MAX_ENTRIES + 1).is_err());
        assert_eq!(MAX_ENTRIES, 42);
        assert!(StatsRepr::parse(&page[..100]).is_err());
    }
}
