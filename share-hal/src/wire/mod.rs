//! Wire formats: bounds-checked views over private copies of peer-written
//! bytes, with byte layouts in `docs/protocol.md`.
//!
//! Everything a peer domain can write is hostile. Protocol code copies a
//! structure out of shared memory once (`SharedMem::read_into`) and parses
//! the private copy here, so a peer changing the bytes under us cannot make
//! a check and a use see different values (the double-fetch bugs of
//! XSA-155). The views follow smoltcp's `wire` module: a view
//! `X<T: AsRef<[u8]>>` wraps a buffer, `new_checked` proves the length once,
//! accessors read fields in place, and a `Repr` type is the validated, typed
//! meaning (`parse`) that can be written back (`emit`).
//!
//! Accessors are total: they read through `slice::get`, so even a view whose
//! length invariant were broken yields zeros rather than a panic. All
//! integers are little-endian (x86 is the only architecture of the ABI).
//!
//! Fields that live on as atomics in a mapped page (lane indexes, serials,
//! link state) are not read through these views but through
//! `SharedMem::load_u32` at the offsets exported by each module's `field`.

use core::fmt;
use core::ops::Range;

pub mod blk;
pub mod descriptor;
pub mod net;
pub mod stats;
pub mod vdevice;

pub use crate::platform::PAGE_SIZE;

/// A byte range of a structure, as in smoltcp's `field` modules.
pub type Field = Range<usize>;

/// Why bytes written by a peer (or handed to `emit`) were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the structure needs.
    Truncated { need: usize, have: usize },
    /// The magic number does not name the expected structure.
    BadMagic { expected: u32, found: u32 },
    /// A protocol version this code does not speak.
    UnsupportedVersion { found: u16 },
    /// A field holds a value outside its allowed set or range.
    BadField { field: &'static str, value: u64 },
    /// Bits are set that the protocol reserves.
    UnknownFlags { field: &'static str, bits: u64 },
    /// A count is above its limit.
    TooMany {
        field: &'static str,
        count: u64,
        max: u64,
    },
    /// A sector range overflows or ends past the disk.
    OutOfRange { start: u64, len: u64, limit: u64 },
    /// The request needs a feature the serving side did not offer.
    NotOffered { feature: &'static str },
    /// A write or discard to a disk served read-only.
    ReadOnly,
}

impl Error {
    /// The field or rule that was broken, for `crate::Error::Protocol`.
    pub fn what(&self) -> &'static str {
        match self {
            Error::Truncated { .. } => "structure truncated",
            Error::BadMagic { .. } => "magic number",
            Error::UnsupportedVersion { .. } => "protocol version",
            Error::BadField { field, .. } => field,
            Error::UnknownFlags { field, .. } => field,
            Error::TooMany { field, .. } => field,
            Error::OutOfRange { .. } => "sector range",
            Error::NotOffered { feature } => feature,
            Error::ReadOnly => "write to a read-only disk",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { need, have } => {
                write!(f, "structure needs {need} bytes, buffer has {have}")
            }
            Error::BadMagic { expected, found } => write!(
                f,
                "magic {:?} where {:?} was expected",
                MagicStr(*found),
                MagicStr(*expected)
            ),
            Error::UnsupportedVersion { found } => {
                write!(f, "protocol version {found} is not supported")
            }
            Error::BadField { field, value } => write!(f, "{field} = {value} is not allowed"),
            Error::UnknownFlags { field, bits } => {
                write!(f, "{field} has reserved bits {bits:#x} set")
            }
            Error::TooMany { field, count, max } => {
                write!(f, "{field} = {count} is above the limit {max}")
            }
            Error::OutOfRange { start, len, limit } => write!(
                f,
                "sectors {start}+{len} do not fit in a disk of {limit} sectors"
            ),
            Error::NotOffered { feature } => {
                write!(f, "{feature} was used but not offered by the serving side")
            }
            Error::ReadOnly => write!(f, "write or discard on a disk served read-only"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        crate::Error::Protocol { what: e.what() }
    }
}

/// Shows a magic number as its four ASCII bytes when printable.
struct MagicStr(u32);

impl fmt::Debug for MagicStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_le_bytes();
        if b.iter().all(|c| c.is_ascii_graphic()) {
            write!(f, "\"")?;
            for c in b {
                write!(f, "{}", c as char)?;
            }
            write!(f, "\"")
        } else {
            write!(f, "{:#010x}", self.0)
        }
    }
}

/// Fails unless `buf` holds at least `need` bytes.
pub(crate) fn check_len(buf: &[u8], need: usize) -> Result<(), Error> {
    if buf.len() < need {
        return Err(Error::Truncated {
            need,
            have: buf.len(),
        });
    }
    Ok(())
}

fn get_array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    if let Some(s) = at.checked_add(N).and_then(|end| buf.get(at..end)) {
        b.copy_from_slice(s);
    }
    b
}

fn set_array<const N: usize>(buf: &mut [u8], at: usize, b: [u8; N]) {
    if let Some(s) = at.checked_add(N).and_then(|end| buf.get_mut(at..end)) {
        s.copy_from_slice(&b);
    }
}

pub(crate) fn get_u8(buf: &[u8], at: usize) -> u8 {
    buf.get(at).copied().unwrap_or(0)
}

pub(crate) fn set_u8(buf: &mut [u8], at: usize, v: u8) {
    if let Some(b) = buf.get_mut(at) {
        *b = v;
    }
}

pub(crate) fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(get_array(buf, at))
}

pub(crate) fn set_u16(buf: &mut [u8], at: usize, v: u16) {
    set_array(buf, at, v.to_le_bytes())
}

pub(crate) fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(get_array(buf, at))
}

pub(crate) fn set_u32(buf: &mut [u8], at: usize, v: u32) {
    set_array(buf, at, v.to_le_bytes())
}

pub(crate) fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(get_array(buf, at))
}

pub(crate) fn set_u64(buf: &mut [u8], at: usize, v: u64) {
    set_array(buf, at, v.to_le_bytes())
}

pub(crate) fn get_bytes<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    get_array(buf, at)
}

pub(crate) fn set_bytes<const N: usize>(buf: &mut [u8], at: usize, b: [u8; N]) {
    set_array(buf, at, b)
}

/// Zeroes `range` of `buf` (reserved bytes are written as zero).
pub(crate) fn zero(buf: &mut [u8], range: Field) {
    if let Some(s) = buf.get_mut(range) {
        s.fill(0);
    }
}

/// The lane header's byte offsets (one definition, in `crate::lane`).
pub use crate::lane::header as lane_header;

/// Where one lane lives in a share. Computed by both sides from `numpages`
/// and the share type's constants; nothing here is read from peer memory.
///
/// A lane is one contiguous window, the format of `share_hal::lane`: the
/// 256-byte header, then the slots (`slots == header + lane_header::LEN`).
/// Hand `share.slice(header, window_len())` to `lane::Producer::attach` or
/// `lane::Consumer::attach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneLayout {
    /// Byte offset of the lane header (the window) from the start of the
    /// share; 64-byte aligned.
    pub header: usize,
    /// Byte offset of slot 0.
    pub slots: usize,
    /// Number of slots, a power of two.
    pub slot_count: u32,
    /// Bytes of one slot.
    pub slot_size: usize,
}

impl LaneLayout {
    /// A lane whose window starts at `header`.
    pub(crate) fn at(header: usize, slot_count: u32, slot_size: usize) -> Self {
        LaneLayout {
            header,
            slots: header + lane_header::LEN,
            slot_count,
            slot_size,
        }
    }

    /// The lane's shape, for `lane::Producer::attach` / `Consumer::attach`.
    pub fn lane(&self) -> crate::Result<crate::lane::LaneLayout> {
        crate::lane::LaneLayout::new(self.slot_count, self.slot_size)
    }

    /// The lane's window (header and slots) within the share's memory.
    pub fn window<'a>(&self, share: crate::SharedMem<'a>) -> crate::Result<crate::SharedMem<'a>> {
        share.slice(self.header, self.window_len())
    }

    /// Bytes of the lane's window: header and slots.
    pub fn window_len(&self) -> usize {
        lane_header::LEN + self.slots_len()
    }

    /// Bytes of all slots.
    pub fn slots_len(&self) -> usize {
        self.slot_count as usize * self.slot_size
    }

    /// Byte offset, from the start of the share, of the slot that
    /// free-running index `index` names.
    pub fn slot_offset(&self, index: u32) -> usize {
        let i = (index & self.slot_count.wrapping_sub(1)) as usize;
        self.slots + i * self.slot_size
    }
}

/// The largest power of two `<= n` (`n >= 1`), or 0 for 0.
pub(crate) fn prev_power_of_two(n: u32) -> u32 {
    if n == 0 {
        0
    } else {
        1 << (31 - n.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_are_total() {
        let mut b = [1u8, 2, 3];
        assert_eq!(get_u16(&b, 1), 0x0302);
        assert_eq!(get_u32(&b, 0), 0, "short reads yield zero, not a panic");
        assert_eq!(get_u64(&b, usize::MAX), 0);
        set_u32(&mut b, 0, 0xdead_beef);
        assert_eq!(b, [1, 2, 3], "short writes are dropped");
        set_u16(&mut b, 1, 0xabcd);
        assert_eq!(b, [1, 0xcd, 0xab]);
        assert_eq!(get_u8(&b, 3), 0);
    }

    #[test]
    fn lane_slot_offsets_wrap() {
        let l = LaneLayout::at(3840, 4, 2048);
        assert_eq!(l.slots, 4096);
        assert_eq!(l.slot_offset(0), 4096);
        assert_eq!(l.slot_offset(5), 4096 + 2048);
        assert_eq!(l.slot_offset(u32::MAX), 4096 + 3 * 2048);
        assert_eq!(l.slots_len(), 8192);
        assert_eq!(l.window_len(), 256 + 8192);
    }

    /// A lane placed by a share layout attaches as `share_hal::lane`
    /// expects, and its slots are where the layout says.
    #[test]
    fn layouts_fit_the_lane_module() {
        use crate::lane;
        #[repr(C, align(4096))]
        struct Page([u8; PAGE_SIZE]);
        let mut share: alloc::vec::Vec<Page> = (0..4).map(|_| Page([0; PAGE_SIZE])).collect();
        // SAFETY: the vector is a live, exclusively borrowed local that
        // outlives `mem`, and is not touched through references meanwhile.
        let mem = unsafe {
            crate::SharedMem::new(
                core::ptr::NonNull::new(share.as_mut_ptr().cast()).unwrap(),
                4 * PAGE_SIZE,
            )
        };
        let l = net::NetLayout::new(4).unwrap().rx;
        let window = l.window(mem).unwrap();
        let shape = l.lane().unwrap();
        lane::init(window, shape, 0).unwrap();
        let mut p = lane::Producer::attach(window, shape).unwrap();
        let mut c = lane::Consumer::attach(window, shape).unwrap();
        assert!(p.push(&[7u8; 64]).unwrap());
        p.publish().unwrap();
        // The slot the lane module wrote is where the layout says.
        assert_eq!(mem.read_u8(l.slot_offset(0)), Ok(7));
        assert_eq!(c.poll(), Ok(1));
    }

    #[test]
    fn powers_of_two() {
        assert_eq!(prev_power_of_two(0), 0);
        assert_eq!(prev_power_of_two(1), 1);
        assert_eq!(prev_power_of_two(7), 4);
        assert_eq!(prev_power_of_two(8), 8);
        assert_eq!(prev_power_of_two(u32::MAX), 1 << 31);
    }

    #[test]
    fn errors_convert_to_protocol_errors() {
        let e: crate::Error = Error::BadField {
            field: "vdevice entry type",
            value: 9,
        }
        .into();
        assert_eq!(
            e,
            crate::Error::Protocol {
                what: "vdevice entry type"
            }
        );
        let shown = alloc::format!(
            "{}",
            Error::BadMagic {
                expected: u32::from_le_bytes(*b"XSVD"),
                found: 7
            }
        );
        assert_eq!(shown, "magic 0x00000007 where \"XSVD\" was expected");
    }
}
