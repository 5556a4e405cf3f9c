//! The block share (xensblk): a control area, a request lane (member to
//! server) of 128-byte request slots and a response lane (server to
//! member) of 16-byte response slots.
//!
//! Data does not travel in the share: a request names pages the member
//! granted to the server (segments), and the server moves the data with
//! grant copy. An *indirect* request names pages that hold segment lists,
//! so one request can move many MiB.
//!
//! The server validates a request against its own [`ControlRepr`] (the disk
//! it serves), never against values read back from the share.

use super::{
    check_len, descriptor, get_u16, get_u32, get_u64, get_u8, prev_power_of_two, set_u16, set_u32,
    set_u64, set_u8, zero, Error, Field, LaneLayout, PAGE_SIZE,
};
use crate::platform::GrantRef;

/// `"XSBK"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"XSBK");
pub const VERSION: u16 = 1;
pub const SECTOR_SIZE: usize = 512;
/// Sectors of one 4 KiB page; `last_sect` is at most this minus one.
pub const SECTORS_PER_PAGE: u8 = (PAGE_SIZE / SECTOR_SIZE) as u8;
pub const CONTROL_LEN: usize = 64;
/// Offset of the request lane (its header) in page 0: the last 256 bytes,
/// so the request slots start page-aligned on page 1.
pub const REQUEST_LANE: usize = PAGE_SIZE - super::lane_header::LEN;
const _: () = assert!(CONTROL_LEN <= REQUEST_LANE);
pub const REQUEST_SIZE: usize = 128;
pub const RESPONSE_SIZE: usize = 16;
pub const SEGMENT_LEN: usize = 8;
/// Segments carried inside a direct request.
pub const MAX_INLINE_SEGMENTS: usize = (REQUEST_SIZE - request_field::SEGMENTS) / SEGMENT_LEN;
/// Indirect pages one request can name.
pub const MAX_INDIRECT_PAGES: usize = (REQUEST_SIZE - request_field::INDIRECT_GREFS) / 4;
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = PAGE_SIZE / SEGMENT_LEN;
/// The most segments any indirect request may carry (48 MiB).
pub const MAX_INDIRECT_SEGMENTS: u16 = (MAX_INDIRECT_PAGES * SEGMENTS_PER_INDIRECT_PAGE) as u16;

/// Features the server offers.
pub mod features {
    pub const FLUSH: u32 = 1 << 0;
    pub const DISCARD: u32 = 1 << 1;
    /// Force unit access on writes.
    pub const FUA: u32 = 1 << 2;
    pub const INDIRECT: u32 = 1 << 3;
    pub const ALL: u32 = FLUSH | DISCARD | FUA | INDIRECT;
}

/// Byte ranges of the control fields at the start of page 0, all written
/// by the server before it grants the share.
pub mod field {
    use super::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: Field = 4..6;
    /// Always 512.
    pub const SECTOR_SIZE: Field = 6..8;
    pub const FEATURES: Field = 8..12;
    /// Bit 0: the disk is served read-only.
    pub const FLAGS: Field = 12..16;
    /// Disk size in sectors.
    pub const CAPACITY: Field = 16..24;
    /// Segments an indirect request may carry; 0 without INDIRECT.
    pub const MAX_INDIRECT_SEGMENTS: Field = 24..26;
    pub const RESERVED: Field = 26..64;
}

/// Control flags.
pub mod control_flags {
    pub const READ_ONLY: u32 = 1 << 0;
}

/// A view of the control fields (a private copy).
#[derive(Debug, Clone)]
pub struct Control<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Control<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        check_len(buffer.as_ref(), CONTROL_LEN)?;
        Ok(Control { buffer })
    }

    /// Wraps without the length check, to emit; accessors stay total.
    pub fn new_unchecked(buffer: T) -> Self {
        Control { buffer }
    }

    pub fn magic(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::MAGIC.start)
    }
    pub fn version(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::VERSION.start)
    }
    pub fn sector_size(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SECTOR_SIZE.start)
    }
    pub fn features(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::FEATURES.start)
    }
    pub fn flags(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::FLAGS.start)
    }
    pub fn capacity(&self) -> u64 {
        get_u64(self.buffer.as_ref(), field::CAPACITY.start)
    }
    pub fn max_indirect_segments(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::MAX_INDIRECT_SEGMENTS.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Control<T> {
    pub fn set_magic(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::MAGIC.start, v)
    }
    pub fn set_version(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::VERSION.start, v)
    }
    pub fn set_sector_size(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::SECTOR_SIZE.start, v)
    }
    pub fn set_features(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::FEATURES.start, v)
    }
    pub fn set_flags(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::FLAGS.start, v)
    }
    pub fn set_capacity(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), field::CAPACITY.start, v)
    }
    pub fn set_max_indirect_segments(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::MAX_INDIRECT_SEGMENTS.start, v)
    }
}

/// The disk a server offers: the server's own configuration, written into
/// the share, and the member's validated reading of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRepr {
    pub features: u32,
    pub read_only: bool,
    /// Sectors of 512 bytes.
    pub capacity: u64,
    /// 0 unless `features` has INDIRECT; at most [`MAX_INDIRECT_SEGMENTS`].
    pub max_indirect_segments: u16,
}

impl ControlRepr {
    /// Validates the server's offer as a member reads it. Unknown feature
    /// and flag bits (a newer server) are dropped, never used.
    pub fn parse<T: AsRef<[u8]>>(c: &Control<T>) -> Result<Self, Error> {
        check_len(c.buffer.as_ref(), CONTROL_LEN)?;
        if c.magic() != MAGIC {
            return Err(Error::BadMagic {
                expected: MAGIC,
                found: c.magic(),
            });
        }
        if c.version() != VERSION {
            return Err(Error::UnsupportedVersion { found: c.version() });
        }
        if usize::from(c.sector_size()) != SECTOR_SIZE {
            return Err(Error::BadField {
                field: "blk sector size",
                value: c.sector_size().into(),
            });
        }
        let features = c.features() & features::ALL;
        let max_indirect_segments = if features & features::INDIRECT != 0 {
            c.max_indirect_segments()
        } else {
            0
        };
        let r = ControlRepr {
            features,
            read_only: c.flags() & control_flags::READ_ONLY != 0,
            capacity: c.capacity(),
            max_indirect_segments,
        };
        r.check()?;
        Ok(r)
    }

    fn check(&self) -> Result<(), Error> {
        if self.features & !features::ALL != 0 {
            return Err(Error::UnknownFlags {
                field: "blk features",
                bits: (self.features & !features::ALL).into(),
            });
        }
        let indirect = self.features & features::INDIRECT != 0;
        let n = self.max_indirect_segments;
        if n > MAX_INDIRECT_SEGMENTS || (indirect && n == 0) || (!indirect && n != 0) {
            return Err(Error::BadField {
                field: "blk max indirect segments",
                value: n.into(),
            });
        }
        // Byte offsets of the last sector must fit u64.
        if self.capacity > u64::MAX / SECTOR_SIZE as u64 {
            return Err(Error::BadField {
                field: "blk capacity",
                value: self.capacity,
            });
        }
        Ok(())
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, c: &mut Control<T>) -> Result<(), Error> {
        check_len(c.buffer.as_ref(), CONTROL_LEN)?;
        self.check()?;
        c.set_magic(MAGIC);
        c.set_version(VERSION);
        c.set_sector_size(SECTOR_SIZE as u16);
        c.set_features(self.features);
        c.set_flags(if self.read_only {
            control_flags::READ_ONLY
        } else {
            0
        });
        c.set_capacity(self.capacity);
        c.set_max_indirect_segments(self.max_indirect_segments);
        zero(c.buffer.as_mut(), field::RESERVED);
        Ok(())
    }

    fn require(&self, feature: u32, name: &'static str) -> Result<(), Error> {
        if self.features & feature == 0 {
            return Err(Error::NotOffered { feature: name });
        }
        Ok(())
    }

    /// Checks that `len` sectors from `start` lie on the disk.
    pub fn check_range(&self, start: u64, len: u64) -> Result<(), Error> {
        match start.checked_add(len) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(Error::OutOfRange {
                start,
                len,
                limit: self.capacity,
            }),
        }
    }
}

/// Where the lanes of a block share are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkLayout {
    pub numpages: u32,
    pub requests: LaneLayout,
    /// As many slots as the request lane: every request in flight has room
    /// for its response, so the server never waits on the member.
    pub responses: LaneLayout,
}

/// Smallest block share: page 0, a page of 32 requests, then the response
/// lane's header and 32 responses.
pub const MIN_PAGES: u32 = 3;
/// Fewest slots of a block share.
pub const MIN_SLOTS: u32 = (PAGE_SIZE / REQUEST_SIZE) as u32;

impl BlkLayout {
    /// The layout of a share of `numpages` pages, both lanes in the
    /// contiguous format of `share_hal::lane`:
    ///
    /// - page 0: control fields at 0, the request lane header at 3840;
    /// - from page 1: the S request slots (128 bytes);
    /// - right after them: the response lane header and its S slots
    ///   (16 bytes).
    ///
    /// `S` is the largest power of two (at least 32) that fits.
    pub fn new(numpages: u32) -> Result<Self, Error> {
        if numpages < MIN_PAGES {
            return Err(Error::BadField {
                field: "blk share numpages",
                value: numpages.into(),
            });
        }
        if numpages > descriptor::MAX_PAGES {
            return Err(Error::TooMany {
                field: "blk share numpages",
                count: numpages.into(),
                max: descriptor::MAX_PAGES.into(),
            });
        }
        let bytes_for = |slots: u32| {
            let slots = slots as usize;
            PAGE_SIZE + slots * REQUEST_SIZE + super::lane_header::LEN + slots * RESPONSE_SIZE
        };
        let have = numpages as usize * PAGE_SIZE;
        // Upper bound from the request slots alone, then step down.
        let mut slot_count = prev_power_of_two((numpages - 1) * MIN_SLOTS);
        while slot_count > MIN_SLOTS && bytes_for(slot_count) > have {
            slot_count /= 2;
        }
        let requests = LaneLayout::at(REQUEST_LANE, slot_count, REQUEST_SIZE);
        let responses = LaneLayout::at(
            requests.slots + requests.slots_len(),
            slot_count,
            RESPONSE_SIZE,
        );
        Ok(BlkLayout {
            numpages,
            requests,
            responses,
        })
    }

    pub fn len(&self) -> usize {
        self.numpages as usize * PAGE_SIZE
    }

    pub fn is_empty(&self) -> bool {
        self.numpages == 0
    }
}

/// Request operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    Read = 0,
    Write = 1,
    /// Make every completed write durable.
    Flush = 2,
    Discard = 3,
    /// Read or write with segment lists in separate pages.
    Indirect = 4,
}

impl Op {
    pub fn from_u8(v: u8) -> Option<Op> {
        Some(match v {
            0 => Op::Read,
            1 => Op::Write,
            2 => Op::Flush,
            3 => Op::Discard,
            4 => Op::Indirect,
            _ => return None,
        })
    }
}

/// Request flags.
pub mod request_flags {
    /// Writes: durable before the response (needs features::FUA).
    pub const FUA: u8 = 1 << 0;
    pub const ALL: u8 = FUA;
}

/// Byte ranges of a request slot.
pub mod request_field {
    use super::Field;
    pub const OP: Field = 0..1;
    pub const FLAGS: Field = 1..2;
    /// Read/write: inline segments. Indirect: segments in all its pages.
    pub const NR_SEGMENTS: Field = 2..4;
    pub const RESERVED0: Field = 4..8;
    /// Chosen by the member, echoed in the response.
    pub const ID: Field = 8..16;
    /// First sector.
    pub const SECTOR: Field = 16..24;
    /// Read/write: `nr_segments` segments of 8 bytes.
    pub const SEGMENTS: usize = 24;
    /// Discard: sectors to discard.
    pub const NR_SECTORS: Field = 24..32;
    /// Indirect: the real operation, Read or Write.
    pub const INDIRECT_OP: Field = 24..25;
    pub const INDIRECT_RESERVED: Field = 25..32;
    /// Indirect: grant refs (u32) of ceil(nr_segments / 512) pages.
    pub const INDIRECT_GREFS: usize = 32;
}

/// Byte ranges of a segment, relative to the segment.
pub mod segment_field {
    use super::Field;
    /// A page of the member granted to the server.
    pub const GREF: Field = 0..4;
    pub const FIRST_SECT: Field = 4..5;
    /// Inclusive; `first_sect <= last_sect <= 7`.
    pub const LAST_SECT: Field = 5..6;
    pub const RESERVED: Field = 6..8;
}

/// A validated segment: sectors `first_sect..=last_sect` of page `gref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub gref: GrantRef,
    pub first_sect: u8,
    pub last_sect: u8,
}

impl Segment {
    /// Parses 8 bytes of a segment. Reserved bytes are ignored.
    pub fn parse(b: &[u8]) -> Result<Segment, Error> {
        check_len(b, SEGMENT_LEN)?;
        let s = Segment {
            gref: GrantRef(get_u32(b, segment_field::GREF.start)),
            first_sect: get_u8(b, segment_field::FIRST_SECT.start),
            last_sect: get_u8(b, segment_field::LAST_SECT.start),
        };
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), Error> {
        if self.last_sect >= SECTORS_PER_PAGE || self.first_sect > self.last_sect {
            return Err(Error::BadField {
                field: "blk segment sectors (first_sect..=last_sect in 0..=7)",
                value: (u64::from(self.first_sect) << 8) | u64::from(self.last_sect),
            });
        }
        Ok(())
    }

    pub fn emit(&self, b: &mut [u8]) -> Result<(), Error> {
        check_len(b, SEGMENT_LEN)?;
        self.check()?;
        set_u32(b, segment_field::GREF.start, self.gref.0);
        set_u8(b, segment_field::FIRST_SECT.start, self.first_sect);
        set_u8(b, segment_field::LAST_SECT.start, self.last_sect);
        zero(b, segment_field::RESERVED);
        Ok(())
    }

    /// Sectors the segment covers, 1..=8.
    pub fn sectors(&self) -> u64 {
        u64::from(self.last_sect - self.first_sect) + 1
    }

    /// Byte offset of the segment in its page.
    pub fn page_offset(&self) -> u16 {
        u16::from(self.first_sect) * SECTOR_SIZE as u16
    }

    /// Bytes of the segment.
    pub fn byte_len(&self) -> u16 {
        self.sectors() as u16 * SECTOR_SIZE as u16
    }
}

/// Up to [`MAX_INLINE_SEGMENTS`] segments, without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineSegments {
    len: u8,
    segs: [Segment; MAX_INLINE_SEGMENTS],
}

impl InlineSegments {
    const NONE: Segment = Segment {
        gref: GrantRef(0),
        first_sect: 0,
        last_sect: 0,
    };

    pub fn new(segs: &[Segment]) -> Result<Self, Error> {
        if segs.is_empty() || segs.len() > MAX_INLINE_SEGMENTS {
            return Err(Error::TooMany {
                field: "blk inline segments",
                count: segs.len() as u64,
                max: MAX_INLINE_SEGMENTS as u64,
            });
        }
        let mut s = InlineSegments {
            len: segs.len() as u8,
            segs: [Self::NONE; MAX_INLINE_SEGMENTS],
        };
        for (d, v) in s.segs.iter_mut().zip(segs) {
            v.check()?;
            *d = *v;
        }
        Ok(s)
    }

    pub fn as_slice(&self) -> &[Segment] {
        &self.segs[..usize::from(self.len).min(MAX_INLINE_SEGMENTS)]
    }

    pub fn sectors(&self) -> u64 {
        self.as_slice().iter().map(Segment::sectors).sum()
    }
}

/// Grant refs of the indirect pages of one request, without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndirectPages {
    len: u8,
    grefs: [GrantRef; MAX_INDIRECT_PAGES],
}

impl IndirectPages {
    pub fn new(grefs: &[GrantRef]) -> Result<Self, Error> {
        if grefs.is_empty() || grefs.len() > MAX_INDIRECT_PAGES {
            return Err(Error::TooMany {
                field: "blk indirect pages",
                count: grefs.len() as u64,
                max: MAX_INDIRECT_PAGES as u64,
            });
        }
        let mut p = IndirectPages {
            len: grefs.len() as u8,
            grefs: [GrantRef(0); MAX_INDIRECT_PAGES],
        };
        p.grefs[..grefs.len()].copy_from_slice(grefs);
        Ok(p)
    }

    pub fn as_slice(&self) -> &[GrantRef] {
        &self.grefs[..usize::from(self.len).min(MAX_INDIRECT_PAGES)]
    }
}

/// Pages needed for `nr_segments` indirect segments.
pub fn indirect_pages_for(nr_segments: u16) -> usize {
    usize::from(nr_segments).div_ceil(SEGMENTS_PER_INDIRECT_PAGE)
}

/// A view of a request slot (a private copy).
#[derive(Debug, Clone)]
pub struct Request<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Request<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        check_len(buffer.as_ref(), REQUEST_SIZE)?;
        Ok(Request { buffer })
    }

    /// Wraps without the length check, to emit; accessors stay total.
    pub fn new_unchecked(buffer: T) -> Self {
        Request { buffer }
    }

    pub fn op(&self) -> u8 {
        get_u8(self.buffer.as_ref(), request_field::OP.start)
    }
    pub fn flags(&self) -> u8 {
        get_u8(self.buffer.as_ref(), request_field::FLAGS.start)
    }
    pub fn nr_segments(&self) -> u16 {
        get_u16(self.buffer.as_ref(), request_field::NR_SEGMENTS.start)
    }
    pub fn id(&self) -> u64 {
        get_u64(self.buffer.as_ref(), request_field::ID.start)
    }
    pub fn sector(&self) -> u64 {
        get_u64(self.buffer.as_ref(), request_field::SECTOR.start)
    }
    pub fn nr_sectors(&self) -> u64 {
        get_u64(self.buffer.as_ref(), request_field::NR_SECTORS.start)
    }
    pub fn indirect_op(&self) -> u8 {
        get_u8(self.buffer.as_ref(), request_field::INDIRECT_OP.start)
    }

    /// Raw bytes of inline segment `i` (`None` past the slot).
    pub fn segment_bytes(&self, i: usize) -> Option<&[u8]> {
        let at = request_field::SEGMENTS + i * SEGMENT_LEN;
        (i < MAX_INLINE_SEGMENTS)
            .then(|| self.buffer.as_ref().get(at..at + SEGMENT_LEN))
            .flatten()
    }

    /// Grant ref of indirect page `i` (`None` past the slot).
    pub fn indirect_gref(&self, i: usize) -> Option<GrantRef> {
        let at = request_field::INDIRECT_GREFS + 4 * i;
        (i < MAX_INDIRECT_PAGES && at + 4 <= self.buffer.as_ref().len())
            .then(|| GrantRef(get_u32(self.buffer.as_ref(), at)))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Request<T> {
    pub fn set_op(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), request_field::OP.start, v)
    }
    pub fn set_flags(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), request_field::FLAGS.start, v)
    }
    pub fn set_nr_segments(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), request_field::NR_SEGMENTS.start, v)
    }
    pub fn set_id(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), request_field::ID.start, v)
    }
    pub fn set_sector(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), request_field::SECTOR.start, v)
    }
    pub fn set_nr_sectors(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), request_field::NR_SECTORS.start, v)
    }
    pub fn set_indirect_op(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), request_field::INDIRECT_OP.start, v)
    }
    pub fn set_indirect_gref(&mut self, i: usize, g: GrantRef) {
        if i < MAX_INDIRECT_PAGES {
            set_u32(
                self.buffer.as_mut(),
                request_field::INDIRECT_GREFS + 4 * i,
                g.0,
            )
        }
    }
    fn segment_bytes_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let at = request_field::SEGMENTS + i * SEGMENT_LEN;
        if i < MAX_INLINE_SEGMENTS {
            self.buffer.as_mut().get_mut(at..at + SEGMENT_LEN)
        } else {
            None
        }
    }
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

/// A request validated against the served disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRepr {
    /// Read or write with the segments inline; the sector range is checked.
    Direct {
        id: u64,
        dir: Dir,
        fua: bool,
        sector: u64,
        segments: InlineSegments,
    },
    Flush {
        id: u64,
    },
    Discard {
        id: u64,
        sector: u64,
        nr_sectors: u64,
    },
    /// Read or write with segment lists in `pages`. The sector range can
    /// only be checked once the pages are copied: see
    /// [`RequestRepr::indirect_segments`].
    Indirect {
        id: u64,
        dir: Dir,
        fua: bool,
        sector: u64,
        nr_segments: u16,
        pages: IndirectPages,
    },
}

impl RequestRepr {
    pub fn id(&self) -> u64 {
        match self {
            RequestRepr::Direct { id, .. }
            | RequestRepr::Flush { id }
            | RequestRepr::Discard { id, .. }
            | RequestRepr::Indirect { id, .. } => *id,
        }
    }

    pub fn op(&self) -> Op {
        match self {
            RequestRepr::Direct { dir: Dir::Read, .. } => Op::Read,
            RequestRepr::Direct {
                dir: Dir::Write, ..
            } => Op::Write,
            RequestRepr::Flush { .. } => Op::Flush,
            RequestRepr::Discard { .. } => Op::Discard,
            RequestRepr::Indirect { .. } => Op::Indirect,
        }
    }

    /// The id of a request, even one that fails to parse, so the server
    /// can answer it with an error status.
    pub fn raw_id<T: AsRef<[u8]>>(r: &Request<T>) -> u64 {
        r.id()
    }

    /// Validates a request copied out of its slot, against `disk`.
    pub fn parse<T: AsRef<[u8]>>(r: &Request<T>, disk: &ControlRepr) -> Result<Self, Error> {
        check_len(r.buffer.as_ref(), REQUEST_SIZE)?;
        let op = Op::from_u8(r.op()).ok_or(Error::BadField {
            field: "blk request op",
            value: r.op().into(),
        })?;
        let flags = r.flags();
        if flags & !request_flags::ALL != 0 {
            return Err(Error::UnknownFlags {
                field: "blk request flags",
                bits: (flags & !request_flags::ALL).into(),
            });
        }
        let fua = flags & request_flags::FUA != 0;
        let id = r.id();
        let sector = r.sector();
        let nr_segments = r.nr_segments();
        let rw_dir = |op: Op| -> Result<Dir, Error> {
            let dir = match op {
                Op::Read => Dir::Read,
                Op::Write => Dir::Write,
                other => {
                    return Err(Error::BadField {
                        field: "blk indirect op",
                        value: other as u64,
                    })
                }
            };
            if dir == Dir::Write && disk.read_only {
                return Err(Error::ReadOnly);
            }
            if fua {
                if dir != Dir::Write {
                    return Err(Error::BadField {
                        field: "blk request flags (FUA on a read)",
                        value: flags.into(),
                    });
                }
                disk.require(features::FUA, "blk FUA")?;
            }
            Ok(dir)
        };
        let no_segments = |what: &'static str| {
            if nr_segments != 0 {
                return Err(Error::BadField {
                    field: what,
                    value: nr_segments.into(),
                });
            }
            if fua {
                return Err(Error::BadField {
                    field: "blk request flags (FUA on flush or discard)",
                    value: flags.into(),
                });
            }
            Ok(())
        };
        match op {
            Op::Read | Op::Write => {
                let dir = rw_dir(op)?;
                let n = usize::from(nr_segments);
                if n == 0 || n > MAX_INLINE_SEGMENTS {
                    return Err(Error::TooMany {
                        field: "blk request nr_segments",
                        count: n as u64,
                        max: MAX_INLINE_SEGMENTS as u64,
                    });
                }
                let mut segs = [InlineSegments::NONE; MAX_INLINE_SEGMENTS];
                for (i, s) in segs.iter_mut().enumerate().take(n) {
                    let bytes = r.segment_bytes(i).ok_or(Error::Truncated {
                        need: REQUEST_SIZE,
                        have: r.buffer.as_ref().len(),
                    })?;
                    *s = Segment::parse(bytes)?;
                }
                let segments = InlineSegments::new(&segs[..n])?;
                disk.check_range(sector, segments.sectors())?;
                Ok(RequestRepr::Direct {
                    id,
                    dir,
                    fua,
                    sector,
                    segments,
                })
            }
            Op::Flush => {
                disk.require(features::FLUSH, "blk flush")?;
                no_segments("blk flush nr_segments")?;
                Ok(RequestRepr::Flush { id })
            }
            Op::Discard => {
                disk.require(features::DISCARD, "blk discard")?;
                no_segments("blk discard nr_segments")?;
                if disk.read_only {
                    return Err(Error::ReadOnly);
                }
                let nr_sectors = r.nr_sectors();
                if nr_sectors == 0 {
                    return Err(Error::BadField {
                        field: "blk discard nr_sectors",
                        value: 0,
                    });
                }
                disk.check_range(sector, nr_sectors)?;
                Ok(RequestRepr::Discard {
                    id,
                    sector,
                    nr_sectors,
                })
            }
            Op::Indirect => {
                disk.require(features::INDIRECT, "blk indirect")?;
                let inner = Op::from_u8(r.indirect_op()).ok_or(Error::BadField {
                    field: "blk indirect op",
                    value: r.indirect_op().into(),
                })?;
                let dir = rw_dir(inner)?;
                if nr_segments == 0 || nr_segments > disk.max_indirect_segments {
                    return Err(Error::TooMany {
                        field: "blk indirect nr_segments",
                        count: nr_segments.into(),
                        max: disk.max_indirect_segments.into(),
                    });
                }
                let n_pages = indirect_pages_for(nr_segments);
                let mut grefs = [GrantRef(0); MAX_INDIRECT_PAGES];
                for (i, g) in grefs.iter_mut().enumerate().take(n_pages) {
                    *g = r.indirect_gref(i).ok_or(Error::TooMany {
                        field: "blk indirect pages",
                        count: n_pages as u64,
                        max: MAX_INDIRECT_PAGES as u64,
                    })?;
                }
                Ok(RequestRepr::Indirect {
                    id,
                    dir,
                    fua,
                    sector,
                    nr_segments,
                    pages: IndirectPages::new(&grefs[..n_pages])?,
                })
            }
        }
    }

    /// For an indirect request: validates all its segments from `pages`, the
    /// private copy of its indirect pages laid end to end (at least
    /// `pages.as_slice().len() * PAGE_SIZE` bytes), checks the sector range,
    /// and returns the segments' total sectors. The caller then reads each
    /// segment with [`indirect_segment`], which cannot fail after this.
    pub fn indirect_segments(&self, pages: &[u8], disk: &ControlRepr) -> Result<u64, Error> {
        let RequestRepr::Indirect {
            sector,
            nr_segments,
            ..
        } = self
        else {
            return Err(Error::BadField {
                field: "blk request is not indirect",
                value: self.op() as u64,
            });
        };
        check_len(pages, usize::from(*nr_segments) * SEGMENT_LEN)?;
        let mut total = 0u64;
        for i in 0..usize::from(*nr_segments) {
            total += indirect_segment(pages, i)?.sectors();
        }
        disk.check_range(*sector, total)?;
        Ok(total)
    }

    /// Writes the request into a slot; the emitted bytes parse back to
    /// `self` against a disk that allows it.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut Request<T>) -> Result<(), Error> {
        check_len(r.buffer.as_ref(), REQUEST_SIZE)?;
        if let Some(b) = r.buffer.as_mut().get_mut(..REQUEST_SIZE) {
            b.fill(0);
        }
        r.set_op(self.op() as u8);
        r.set_id(self.id());
        match self {
            RequestRepr::Direct {
                fua,
                sector,
                segments,
                ..
            } => {
                r.set_flags(if *fua { request_flags::FUA } else { 0 });
                r.set_sector(*sector);
                r.set_nr_segments(segments.as_slice().len() as u16);
                for (i, s) in segments.as_slice().iter().enumerate() {
                    if let Some(b) = r.segment_bytes_mut(i) {
                        s.emit(b)?;
                    }
                }
            }
            RequestRepr::Flush { .. } => {}
            RequestRepr::Discard {
                sector, nr_sectors, ..
            } => {
                r.set_sector(*sector);
                r.set_nr_sectors(*nr_sectors);
            }
            RequestRepr::Indirect {
                dir,
                fua,
                sector,
                nr_segments,
                pages,
                ..
            } => {
                if pages.as_slice().len() != indirect_pages_for(*nr_segments) {
                    return Err(Error::BadField {
                        field: "blk indirect pages for nr_segments",
                        value: pages.as_slice().len() as u64,
                    });
                }
                r.set_flags(if *fua { request_flags::FUA } else { 0 });
                r.set_sector(*sector);
                r.set_nr_segments(*nr_segments);
                r.set_indirect_op(match dir {
                    Dir::Read => Op::Read as u8,
                    Dir::Write => Op::Write as u8,
                });
                for (i, g) in pages.as_slice().iter().enumerate() {
                    r.set_indirect_gref(i, *g);
                }
            }
        }
        Ok(())
    }
}

/// Segment `i` of an indirect request's pages (private copy, end to end).
pub fn indirect_segment(pages: &[u8], i: usize) -> Result<Segment, Error> {
    let at = i.saturating_mul(SEGMENT_LEN);
    let b = pages
        .get(at..at.saturating_add(SEGMENT_LEN))
        .ok_or(Error::Truncated {
            need: at.saturating_add(SEGMENT_LEN),
            have: pages.len(),
        })?;
    Segment::parse(b)
}

/// Response status, as Xen's blkif.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum Status {
    Okay = 0,
    Error = -1,
    NotSupported = -2,
}

/// Byte ranges of a response slot.
pub mod response_field {
    use super::Field;
    pub const ID: Field = 0..8;
    pub const OP: Field = 8..9;
    pub const RESERVED0: Field = 9..10;
    pub const STATUS: Field = 10..12;
    pub const RESERVED1: Field = 12..16;
}

/// A view of a response slot (a private copy).
#[derive(Debug, Clone)]
pub struct Response<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Response<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        check_len(buffer.as_ref(), RESPONSE_SIZE)?;
        Ok(Response { buffer })
    }

    /// Wraps without the length check, to emit; accessors stay total.
    pub fn new_unchecked(buffer: T) -> Self {
        Response { buffer }
    }

    pub fn id(&self) -> u64 {
        get_u64(self.buffer.as_ref(), response_field::ID.start)
    }
    pub fn op(&self) -> u8 {
        get_u8(self.buffer.as_ref(), response_field::OP.start)
    }
    pub fn status(&self) -> i16 {
        get_u16(self.buffer.as_ref(), response_field::STATUS.start) as i16
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Response<T> {
    pub fn set_id(&mut self, v: u64) {
        set_u64(self.buffer.as_mut(), response_field::ID.start, v)
    }
    pub fn set_op(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), response_field::OP.start, v)
    }
    pub fn set_status(&mut self, v: i16) {
        set_u16(self.buffer.as_mut(), response_field::STATUS.start, v as u16)
    }
}

/// A validated response. The member still checks that `id` names a request
/// it has in flight, with this `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRepr {
    pub id: u64,
    /// The op of the request (raw: a failed request may have had a bad op).
    pub op: u8,
    pub status: Status,
}

impl ResponseRepr {
    pub fn parse<T: AsRef<[u8]>>(r: &Response<T>) -> Result<Self, Error> {
        check_len(r.buffer.as_ref(), RESPONSE_SIZE)?;
        let status = match r.status() {
            0 => Status::Okay,
            -1 => Status::Error,
            -2 => Status::NotSupported,
            s => {
                return Err(Error::BadField {
                    field: "blk response status",
                    value: s as u16 as u64,
                })
            }
        };
        Ok(ResponseRepr {
            id: r.id(),
            op: r.op(),
            status,
        })
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut Response<T>) -> Result<(), Error> {
        check_len(r.buffer.as_ref(), RESPONSE_SIZE)?;
        r.set_id(self.id);
        r.set_op(self.op);
        zero(r.buffer.as_mut(), response_field::RESERVED0);
        r.set_status(self.status as i16);
        zero(r.buffer.as_mut(), response_field::RESERVED1);
        Ok(())
    }

    /// The status a server answers a refused request with.
    pub fn status_for(e: &Error) -> Status {
        match e {
            Error::NotOffered { .. } => Status::NotSupported,
            _ => Status::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// 1 GiB disk with every feature, up to 512 indirect segments (2 MiB).
    const DISK: ControlRepr = ControlRepr {
        features: features::ALL,
        read_only: false,
        capacity: 1 << 21,
        max_indirect_segments: 512,
    };

    const CONTROL: [u8; 64] = {
        let mut c = [0u8; 64];
        let m = *b"XSBK";
        c[0] = m[0];
        c[1] = m[1];
        c[2] = m[2];
        c[3] = m[3];
        c[4] = 1; // version
        c[7] = 2; // sector size 512 = 0x200
        c[8] = 0x0f; // features
        c[18] = 0x20; // capacity 1 << 21
        c[25] = 2; // max indirect 512 = 0x200
        c
    };

    #[test]
    fn control_parses_and_emits_literal_bytes() {
        let r = ControlRepr::parse(&Control::new_checked(&CONTROL[..]).unwrap()).unwrap();
        assert_eq!(r, DISK);
        let mut out = [0xeeu8; 64];
        r.emit(&mut Control::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, CONTROL);
    }

    #[test]
    fn control_refuses_garbage() {
        let with = |at: usize, bytes: &[u8]| {
            let mut b = CONTROL;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            ControlRepr::parse(&Control::new_unchecked(&b[..]))
        };
        assert!(matches!(with(0, b"XSBX"), Err(Error::BadMagic { .. })));
        assert!(matches!(
            with(4, &[2]),
            Err(Error::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            with(6, &[0, 0x10]),
            Err(Error::BadField {
                field: "blk sector size",
                ..
            })
        ));
        // INDIRECT offered with 0 segments, or more than 24 pages' worth.
        assert!(with(24, &[0, 0]).is_err());
        assert!(with(24, &[0x01, 0x30]).is_err());
        assert_eq!(
            with(24, &[0x00, 0x30]).map(|r| r.max_indirect_segments),
            Ok(MAX_INDIRECT_SEGMENTS)
        );
        assert!(
            with(16, &[0, 0, 0, 0, 0, 0, 0, 0x80]).is_err(),
            "capacity in bytes overflows"
        );
        // Without INDIRECT the segment limit is ignored.
        assert_eq!(with(8, &[0x07]).map(|r| r.max_indirect_segments), Ok(0));
        // Unknown features are dropped, READ_ONLY is read.
        assert_eq!(with(8, &[0xff]).map(|r| r.features), Ok(features::ALL));
        assert_eq!(with(12, &[0xff]).map(|r| r.read_only), Ok(true));
    }

    #[test]
    fn layouts_from_numpages() {
        let l = BlkLayout::new(3).unwrap();
        assert_eq!(l.requests.slot_count, 32);
        assert_eq!((l.requests.header, l.requests.slots), (3840, 4096));
        assert_eq!(l.responses.header, 8192);
        assert_eq!(l.responses.slots, 8192 + 256);
        assert_eq!(l.responses.slots_len(), 512);
        // 256 slots: 32 KiB of requests, 256 + 4 KiB of responses.
        assert_eq!(BlkLayout::new(10).unwrap().requests.slot_count, 128);
        let l = BlkLayout::new(11).unwrap();
        assert_eq!(l.requests.slot_count, 256);
        assert_eq!(l.responses.header, 9 * 4096);
        assert_eq!(
            l.responses.header + l.responses.window_len(),
            10 * 4096 + 256
        );
        assert_eq!(BlkLayout::new(20).unwrap().requests.slot_count, 512);
        assert_eq!(BlkLayout::new(19).unwrap().requests.slot_count, 256);
        assert!(BlkLayout::new(2).is_err());
        assert!(BlkLayout::new(1017).is_err());
        assert_eq!(MAX_INLINE_SEGMENTS, 13);
        assert_eq!(MAX_INDIRECT_PAGES, 24);
        assert_eq!(MAX_INDIRECT_SEGMENTS, 12288);
    }

    /// Write id 0x1122 at sector 8: two segments, gref 0x30 sectors 0..=7
    /// and gref 0x31 sectors 2..=3, with FUA.
    const WRITE: [u8; 128] = {
        let mut r = [0u8; 128];
        r[0] = 1; // write
        r[1] = 1; // FUA
        r[2] = 2; // nr_segments
        r[8] = 0x22; // id
        r[9] = 0x11;
        r[16] = 8; // sector
        r[24] = 0x30; // gref
        r[28] = 0; // first
        r[29] = 7; // last
        r[32] = 0x31;
        r[36] = 2;
        r[37] = 3;
        r
    };

    fn parse(b: &[u8], disk: &ControlRepr) -> Result<RequestRepr, Error> {
        RequestRepr::parse(&Request::new_checked(b)?, disk)
    }

    #[test]
    fn direct_request_parses_and_emits_literal_bytes() {
        let r = parse(&WRITE, &DISK).unwrap();
        let segs = [
            Segment {
                gref: GrantRef(0x30),
                first_sect: 0,
                last_sect: 7,
            },
            Segment {
                gref: GrantRef(0x31),
                first_sect: 2,
                last_sect: 3,
            },
        ];
        assert_eq!(
            r,
            RequestRepr::Direct {
                id: 0x1122,
                dir: Dir::Write,
                fua: true,
                sector: 8,
                segments: InlineSegments::new(&segs).unwrap(),
            }
        );
        let RequestRepr::Direct { segments, .. } = r else {
            unreachable!()
        };
        assert_eq!(segments.sectors(), 10);
        assert_eq!(segments.as_slice()[1].page_offset(), 1024);
        assert_eq!(segments.as_slice()[1].byte_len(), 1024);
        let mut out = [0xffu8; 128];
        r.emit(&mut Request::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, WRITE);
    }

    #[test]
    fn direct_requests_refuse_every_broken_field() {
        let with = |at: usize, bytes: &[u8]| {
            let mut b = WRITE;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            parse(&b, &DISK)
        };
        assert_eq!(
            with(0, &[9]),
            Err(Error::BadField {
                field: "blk request op",
                value: 9
            })
        );
        assert!(matches!(with(1, &[0x81]), Err(Error::UnknownFlags { .. })));
        assert!(
            matches!(with(0, &[0]), Err(Error::BadField { .. })),
            "FUA on a read"
        );
        assert!(matches!(with(2, &[0]), Err(Error::TooMany { .. })));
        assert!(matches!(with(2, &[14]), Err(Error::TooMany { .. })));
        // Three segments announced: the third (all zero) is sectors 0..=0.
        assert!(with(2, &[3]).is_ok());
        assert!(
            matches!(with(29, &[8]), Err(Error::BadField { .. })),
            "last_sect 8"
        );
        assert!(
            matches!(with(36, &[4]), Err(Error::BadField { .. })),
            "first > last"
        );
        // Ends exactly at the end of the disk, then one sector past it.
        let end = DISK.capacity - 10;
        assert!(with(16, &end.to_le_bytes()).is_ok());
        assert_eq!(
            with(16, &(end + 1).to_le_bytes()),
            Err(Error::OutOfRange {
                start: end + 1,
                len: 10,
                limit: DISK.capacity
            })
        );
        assert!(matches!(
            with(16, &u64::MAX.to_le_bytes()),
            Err(Error::OutOfRange { .. })
        ));
        let ro = ControlRepr {
            read_only: true,
            ..DISK
        };
        assert_eq!(parse(&WRITE, &ro), Err(Error::ReadOnly));
        let no_fua = ControlRepr {
            features: features::FLUSH,
            max_indirect_segments: 0,
            ..DISK
        };
        assert!(matches!(
            parse(&WRITE, &no_fua),
            Err(Error::NotOffered { .. })
        ));
        assert!(parse(&WRITE[..127], &DISK).is_err());
    }

    #[test]
    fn flush_and_discard() {
        let mut f = [0u8; 128];
        f[0] = Op::Flush as u8;
        f[8] = 5;
        assert_eq!(parse(&f, &DISK), Ok(RequestRepr::Flush { id: 5 }));
        f[2] = 1;
        assert!(parse(&f, &DISK).is_err(), "flush with segments");
        f[2] = 0;
        f[1] = request_flags::FUA;
        assert!(parse(&f, &DISK).is_err(), "FUA on a flush");
        f[1] = 0;
        let plain = ControlRepr {
            features: 0,
            max_indirect_segments: 0,
            ..DISK
        };
        assert_eq!(
            parse(&f, &plain),
            Err(Error::NotOffered {
                feature: "blk flush"
            })
        );

        let d = RequestRepr::Discard {
            id: 6,
            sector: 100,
            nr_sectors: 2048,
        };
        let mut b = [0u8; 128];
        d.emit(&mut Request::new_unchecked(&mut b[..])).unwrap();
        assert_eq!(&b[..4], &[3, 0, 0, 0]);
        assert_eq!(&b[24..32], &2048u64.to_le_bytes());
        assert_eq!(parse(&b, &DISK), Ok(d));
        let with = |at: usize, bytes: &[u8], disk: &ControlRepr| {
            let mut c = b;
            c[at..at + bytes.len()].copy_from_slice(bytes);
            parse(&c, disk)
        };
        assert!(with(24, &[0, 0, 0], &DISK).is_err(), "nr_sectors 0");
        assert!(matches!(
            with(24, &u64::MAX.to_le_bytes(), &DISK),
            Err(Error::OutOfRange { .. })
        ));
        assert_eq!(
            with(
                0,
                &[3],
                &ControlRepr {
                    read_only: true,
                    ..DISK
                }
            ),
            Err(Error::ReadOnly)
        );
        assert!(matches!(
            with(0, &[3], &plain),
            Err(Error::NotOffered { .. })
        ));
    }

    /// An indirect read of `n` segments over pages 0x40.., whole pages each.
    fn indirect(n: u16) -> ([u8; 128], Vec<u8>) {
        let pages: Vec<GrantRef> = (0..indirect_pages_for(n) as u32)
            .map(|i| GrantRef(0x40 + i))
            .collect();
        let r = RequestRepr::Indirect {
            id: 9,
            dir: Dir::Read,
            fua: false,
            sector: 0,
            nr_segments: n,
            pages: IndirectPages::new(&pages).unwrap(),
        };
        let mut b = [0u8; 128];
        r.emit(&mut Request::new_unchecked(&mut b[..])).unwrap();
        let mut segs = vec![0u8; pages.len() * PAGE_SIZE];
        for i in 0..usize::from(n) {
            Segment {
                gref: GrantRef(0x1000 + i as u32),
                first_sect: 0,
                last_sect: 7,
            }
            .emit(&mut segs[i * 8..i * 8 + 8])
            .unwrap();
        }
        (b, segs)
    }

    #[test]
    fn one_indirect_request_moves_two_mib() {
        let (b, pages) = indirect(512);
        assert_eq!(b[0], Op::Indirect as u8);
        assert_eq!(&b[2..4], &512u16.to_le_bytes());
        assert_eq!(b[24], Op::Read as u8);
        assert_eq!(&b[32..36], &0x40u32.to_le_bytes());
        let r = parse(&b, &DISK).unwrap();
        assert_eq!(
            r.indirect_segments(&pages, &DISK),
            Ok(512 * 8),
            "512 segments of 4 KiB: 2 MiB in one request"
        );
        assert_eq!(
            indirect_segment(&pages, 511).unwrap().gref,
            GrantRef(0x1000 + 511)
        );
        assert!(
            indirect_segment(&pages, 512).is_err(),
            "512 segments fill the one page copied"
        );
        assert!(indirect_segment(&pages, usize::MAX).is_err());
        // Two pages for 513, as the disk allows 512: refused.
        let (b, _) = indirect(513);
        assert!(matches!(parse(&b, &DISK), Err(Error::TooMany { .. })));
        let big = ControlRepr {
            max_indirect_segments: MAX_INDIRECT_SEGMENTS,
            capacity: 1 << 40,
            ..DISK
        };
        let (b, pages) = indirect(MAX_INDIRECT_SEGMENTS);
        let r = parse(&b, &big).unwrap();
        assert_eq!(r.indirect_segments(&pages, &big), Ok(12288 * 8));
    }

    #[test]
    fn indirect_requests_refuse_every_broken_field() {
        let (b, pages) = indirect(16);
        let with = |at: usize, bytes: &[u8]| {
            let mut c = b;
            c[at..at + bytes.len()].copy_from_slice(bytes);
            parse(&c, &DISK)
        };
        assert!(with(24, &[2]).is_err(), "indirect flush");
        assert!(with(24, &[4]).is_err(), "indirect indirect");
        assert!(with(24, &[77]).is_err());
        assert!(with(2, &[0, 0]).is_err(), "no segments");
        assert!(with(1, &[request_flags::FUA]).is_err(), "FUA read");
        let r = parse(&b, &DISK).unwrap();
        // A bad segment deep in the list.
        let mut bad = pages.clone();
        bad[15 * 8 + 5] = 9;
        assert!(matches!(
            r.indirect_segments(&bad, &DISK),
            Err(Error::BadField { .. })
        ));
        // Pages shorter than the segments they should hold.
        assert!(matches!(
            r.indirect_segments(&pages[..16 * 8 - 1], &DISK),
            Err(Error::Truncated { .. })
        ));
        // Past the end of the disk.
        let near_end = with(16, &(DISK.capacity - 16 * 8 + 1).to_le_bytes()).unwrap();
        assert!(matches!(
            near_end.indirect_segments(&pages, &DISK),
            Err(Error::OutOfRange { .. })
        ));
        let no_indirect = ControlRepr {
            features: features::FLUSH,
            max_indirect_segments: 0,
            ..DISK
        };
        assert!(matches!(
            parse(&b, &no_indirect),
            Err(Error::NotOffered { .. })
        ));
        assert!(RequestRepr::Flush { id: 1 }
            .indirect_segments(&pages, &DISK)
            .is_err());
    }

    #[test]
    fn responses() {
        const RSP: [u8; 16] = [0x22, 0x11, 0, 0, 0, 0, 0, 0, 1, 0, 0xff, 0xff, 0, 0, 0, 0];
        let r = ResponseRepr::parse(&Response::new_checked(&RSP[..]).unwrap()).unwrap();
        assert_eq!(
            r,
            ResponseRepr {
                id: 0x1122,
                op: 1,
                status: Status::Error
            }
        );
        let mut out = [0x77u8; 16];
        r.emit(&mut Response::new_unchecked(&mut out[..])).unwrap();
        assert_eq!(out, RSP);
        let mut bad = RSP;
        bad[10] = 0xfd; // -3
        assert!(matches!(
            ResponseRepr::parse(&Response::new_unchecked(&bad[..])),
            Err(Error::BadField { .. })
        ));
        assert!(Response::new_checked(&RSP[..15]).is_err());
        assert_eq!(
            ResponseRepr::status_for(&Error::NotOffered { feature: "x" }),
            Status::NotSupported
        );
        assert_eq!(ResponseRepr::status_for(&Error::ReadOnly), Status::Error);
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            slot in proptest::collection::vec(any::<u8>(), 0..160),
            pages in proptest::collection::vec(any::<u8>(), 0..2 * PAGE_SIZE),
            read_only in any::<bool>(),
        ) {
            let disk = ControlRepr { read_only, ..DISK };
            if let Ok(req) = Request::new_checked(&slot[..]) {
                let _ = RequestRepr::raw_id(&req);
                if let Ok(r) = RequestRepr::parse(&req, &disk) {
                    match r {
                        RequestRepr::Direct { sector, segments, .. } => {
                            prop_assert!(sector + segments.sectors() <= disk.capacity);
                        }
                        RequestRepr::Indirect { nr_segments, pages: p, .. } => {
                            prop_assert_eq!(p.as_slice().len(), indirect_pages_for(nr_segments));
                            if let Ok(total) = r.indirect_segments(&pages, &disk) {
                                prop_assert!(total <= u64::from(nr_segments) * 8);
                            }
                        }
                        _ => {}
                    }
                    let mut out = [0u8; REQUEST_SIZE];
                    r.emit(&mut Request::new_unchecked(&mut out[..])).unwrap();
                    prop_assert_eq!(RequestRepr::parse(&Request::new_unchecked(&out[..]), &disk), Ok(r));
                }
            }
        }

        #[test]
        fn arbitrary_responses_and_controls_never_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(r) = Response::new_checked(&b[..]) {
                if let Ok(p) = ResponseRepr::parse(&r) {
                    let mut out = [0u8; RESPONSE_SIZE];
                    p.emit(&mut Response::new_unchecked(&mut out[..])).unwrap();
                    prop_assert_eq!(ResponseRepr::parse(&Response::new_unchecked(&out[..])), Ok(p));
                }
            }
            if let Ok(c) = Control::new_checked(&b[..]) {
                if let Ok(p) = ControlRepr::parse(&c) {
                    let mut out = [0u8; CONTROL_LEN];
                    p.emit(&mut Control::new_unchecked(&mut out[..])).unwrap();
                    prop_assert_eq!(ControlRepr::parse(&Control::new_unchecked(&out[..])), Ok(p));
                }
            }
        }

        #[test]
        fn layouts_never_overlap_or_overflow(numpages in 0u32..2000) {
            if let Ok(l) = BlkLayout::new(numpages) {
                prop_assert!(l.requests.slot_count.is_power_of_two());
                prop_assert!(l.requests.slot_count >= MIN_SLOTS);
                prop_assert_eq!(l.requests.slot_count, l.responses.slot_count);
                for lane in [l.requests, l.responses] {
                    prop_assert_eq!(lane.header % 64, 0);
                    prop_assert_eq!(lane.slots, lane.header + crate::wire::lane_header::LEN);
                }
                prop_assert!(l.requests.header >= CONTROL_LEN);
                prop_assert!(l.requests.slots + l.requests.slots_len() <= l.responses.header);
                prop_assert!(l.responses.header + l.responses.window_len() <= l.len());
                // Doubling would not fit.
                let s = 2 * l.requests.slot_count as usize;
                prop_assert!(4096 + s * 128 + 256 + s * 16 > l.len());
            }
        }
    }
}
