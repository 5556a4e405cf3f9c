//! Access to memory that another domain can write at any moment.
//!
//! Shared pages are never handed out as `&[u8]`: a peer's concurrent write
//! would be a data race, undefined behaviour in Rust. Instead [`SharedMem`]
//! is a bounds-checked window reached only through volatile copies and
//! atomics (the discipline of rust-vmm's `VolatileSlice`). Protocol code
//! copies a request out once with [`SharedMem::read_into`], then parses the
//! private copy; indexes are read once with [`SharedMem::load_u32`].
//!
//! This module and the platforms' mapping code are the only places that turn
//! raw pointers into shared memory.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A window of `len` bytes of shared memory, valid for lifetime `'a`.
///
/// All accesses are bounds-checked against the window; none panics.
#[derive(Clone, Copy, Debug)]
pub struct SharedMem<'a> {
    ptr: NonNull<u8>,
    len: usize,
    _lifetime: PhantomData<&'a ()>,
}

// SAFETY: SharedMem only performs volatile and atomic accesses, which are
// sound to issue from any thread concurrently with any other party.
unsafe impl Send for SharedMem<'_> {}
// SAFETY: as above; `&SharedMem` gives no more access than `SharedMem`.
unsafe impl Sync for SharedMem<'_> {}

impl<'a> SharedMem<'a> {
    /// Wraps `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped, readable and writable for `'a`, and
    /// must not be accessed through Rust references (`&`/`&mut` of any type)
    /// by this program while any `SharedMem` over it exists.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Self {
        SharedMem {
            ptr,
            len,
            _lifetime: PhantomData,
        }
    }

    /// Wraps a private buffer, e.g. to run protocol code in tests without
    /// a second party.
    pub fn from_slice(buf: &'a mut [u8]) -> Self {
        let len = buf.len();
        // SAFETY: the exclusive borrow lasts 'a, so nobody else touches the
        // buffer through a reference while this window exists.
        unsafe {
            SharedMem::new(
                NonNull::new(buf.as_mut_ptr()).unwrap_or(NonNull::dangling()),
                len,
            )
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start address, for platforms that pass it to the hypervisor.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    fn check_aligned(&self, offset: usize, len: usize, align: usize) -> Result<()> {
        self.check(offset, len)?;
        if !(self.ptr.as_ptr() as usize + offset).is_multiple_of(align) {
            return Err(Error::Misaligned { offset, align });
        }
        Ok(())
    }

    /// A sub-window of `len` bytes at `offset`.
    #[inline]
    pub fn slice(&self, offset: usize, len: usize) -> Result<SharedMem<'a>> {
        self.check(offset, len)?;
        // SAFETY: bounds checked above, so the sub-window lies inside ours
        // and inherits our validity.
        Ok(unsafe { SharedMem::new(self.ptr.add(offset), len) })
    }

    /// Copies `dst.len()` bytes at `offset` out of shared memory.
    #[inline]
    pub fn read_into(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check(offset, dst.len())?;
        // SAFETY: in bounds; volatile_copy reads each byte once with
        // volatile loads, so a concurrent peer write is not a data race.
        unsafe { volatile_copy(self.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into shared memory at `offset`.
    #[inline]
    pub fn write_from(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.check(offset, src.len())?;
        // SAFETY: in bounds; the stores are volatile.
        unsafe { volatile_copy(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len()) };
        Ok(())
    }

    /// Reads 16 bytes at `offset` (a slot header) as two little-endian
    /// words: one 16-byte volatile load where the address is 16-aligned
    /// (lane slots are), else the general copy. Words in registers, not
    /// bytes in memory: a caller parsing fields by shifts does not wait on
    /// a narrow store forwarded to a wide load.
    #[inline]
    pub fn read_16(&self, offset: usize) -> Result<[u64; 2]> {
        self.check(offset, 16)?;
        // SAFETY: in bounds (checked above).
        let src = unsafe { self.ptr.as_ptr().add(offset) };
        #[cfg(target_arch = "x86_64")]
        if (src as usize).is_multiple_of(16) {
            use core::arch::x86_64::{__m128i, _mm_cvtsi128_si64, _mm_srli_si128};
            // SAFETY: 16 readable bytes at a 16-aligned address; a volatile
            // load, so a concurrent peer write is not a data race (it may
            // tear; the caller parses only the returned copy). SSE2 is part
            // of every x86_64 CPU.
            let v = unsafe { src.cast::<__m128i>().read_volatile() };
            // SAFETY: SSE2 register operations only.
            let (lo, hi) = unsafe {
                (
                    _mm_cvtsi128_si64(v),
                    _mm_cvtsi128_si64(_mm_srli_si128(v, 8)),
                )
            };
            return Ok([lo as u64, hi as u64]);
        }
        let mut out = [0u8; 16];
        // SAFETY: in bounds; volatile loads as in read_into.
        unsafe { volatile_copy(src, out.as_mut_ptr(), 16) };
        let (lo, hi) = out.split_at(8);
        Ok([
            u64::from_le_bytes(lo.try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(hi.try_into().unwrap_or([0; 8])),
        ])
    }

    /// Writes 16 bytes at `offset` (a slot header) from two little-endian
    /// words: one 16-byte volatile store where the address is 16-aligned,
    /// else the general copy.
    #[inline]
    pub fn write_16(&self, offset: usize, v: [u64; 2]) -> Result<()> {
        self.check(offset, 16)?;
        // SAFETY: in bounds (checked above).
        let dst = unsafe { self.ptr.as_ptr().add(offset) };
        #[cfg(target_arch = "x86_64")]
        if (dst as usize).is_multiple_of(16) {
            use core::arch::x86_64::{__m128i, _mm_set_epi64x};
            // SAFETY: 16 writable bytes at a 16-aligned address, a volatile
            // store; SSE2 as above.
            unsafe {
                let w = _mm_set_epi64x(v[1] as i64, v[0] as i64);
                dst.cast::<__m128i>().write_volatile(w);
            }
            return Ok(());
        }
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&v[0].to_le_bytes());
        bytes[8..].copy_from_slice(&v[1].to_le_bytes());
        // SAFETY: in bounds; the stores are volatile.
        unsafe { volatile_copy(bytes.as_ptr(), dst, 16) };
        Ok(())
    }

    /// Asks the CPU to bring the cache line holding byte `offset` closer
    /// (a hint: no access is made, nothing happens out of bounds).
    #[inline]
    pub fn prefetch(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        if offset < self.len {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: offset < len, so the address lies in the window; a
            // prefetch reads nothing architecturally (it cannot fault or
            // race with a peer's stores).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(self.ptr.as_ptr().add(offset).cast()) }
        }
    }

    /// [`prefetch`](Self::prefetch) for a line about to be written.
    #[inline]
    pub fn prefetch_write(&self, offset: usize) {
        #[cfg(target_arch = "x86_64")]
        if offset < self.len {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
            // SAFETY: as in `prefetch`.
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(self.ptr.as_ptr().add(offset).cast()) }
        }
    }

    /// Copies `len` bytes from `src` at `src_offset` to `self` at `offset`.
    #[inline]
    pub fn copy_from(
        &self,
        offset: usize,
        src: &SharedMem<'_>,
        src_offset: usize,
        len: usize,
    ) -> Result<()> {
        self.check(offset, len)?;
        src.check(src_offset, len)?;
        // SAFETY: both ranges are in bounds of live windows; all accesses are
        // volatile, so overlap with a peer's writes is not a data race.
        unsafe {
            volatile_copy(
                src.ptr.as_ptr().add(src_offset),
                self.ptr.as_ptr().add(offset),
                len,
            )
        };
        Ok(())
    }

    /// Fills `len` bytes at `offset` with `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<()> {
        self.check(offset, len)?;
        for i in 0..len {
            // SAFETY: offset + i < offset + len, checked above.
            unsafe { self.ptr.as_ptr().add(offset + i).write_volatile(byte) };
        }
        Ok(())
    }

    pub fn read_u8(&self, offset: usize) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read_into(offset, &mut b)?;
        Ok(b[0])
    }

    pub fn read_u16(&self, offset: usize) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_into(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn read_u32(&self, offset: usize) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_into(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn read_u64(&self, offset: usize) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_into(offset, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn write_u8(&self, offset: usize, v: u8) -> Result<()> {
        self.write_from(offset, &[v])
    }

    pub fn write_u16(&self, offset: usize, v: u16) -> Result<()> {
        self.write_from(offset, &v.to_le_bytes())
    }

    pub fn write_u32(&self, offset: usize, v: u32) -> Result<()> {
        self.write_from(offset, &v.to_le_bytes())
    }

    pub fn write_u64(&self, offset: usize, v: u64) -> Result<()> {
        self.write_from(offset, &v.to_le_bytes())
    }

    fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32> {
        self.check_aligned(offset, 4, 4)?;
        // SAFETY: in bounds and 4-aligned; AtomicU32 has the layout of u32
        // and every access through it is atomic, so concurrent peer access
        // is not a data race. The reference lives no longer than `self`.
        Ok(unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset).cast()) })
    }

    fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        self.check_aligned(offset, 8, 8)?;
        // SAFETY: as for atomic_u32, with 8-byte size and alignment.
        Ok(unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast()) })
    }

    /// Atomic load of a little-endian u32 index (x86 and the ABI are LE).
    pub fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32> {
        Ok(u32::from_le(self.atomic_u32(offset)?.load(order)))
    }

    pub fn store_u32(&self, offset: usize, v: u32, order: Ordering) -> Result<()> {
        self.atomic_u32(offset)?.store(v.to_le(), order);
        Ok(())
    }

    pub fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64> {
        Ok(u64::from_le(self.atomic_u64(offset)?.load(order)))
    }

    pub fn store_u64(&self, offset: usize, v: u64, order: Ordering) -> Result<()> {
        self.atomic_u64(offset)?.store(v.to_le(), order);
        Ok(())
    }

    /// Atomically sets `bits` in a u32, returning the previous value.
    pub fn fetch_or_u32(&self, offset: usize, bits: u32, order: Ordering) -> Result<u32> {
        Ok(u32::from_le(
            self.atomic_u32(offset)?.fetch_or(bits.to_le(), order),
        ))
    }

    /// Atomically replaces a u32 equal to `current` by `new`; returns the
    /// value found (`Ok` if it was `current`). For flags a peer (or the
    /// hypervisor) may change at the same moment, e.g. ending a grant.
    pub fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
        order: Ordering,
    ) -> Result<core::result::Result<u32, u32>> {
        let failure = match order {
            Ordering::AcqRel | Ordering::Acquire => Ordering::Acquire,
            Ordering::SeqCst => Ordering::SeqCst,
            _ => Ordering::Relaxed,
        };
        Ok(self
            .atomic_u32(offset)?
            .compare_exchange(current.to_le(), new.to_le(), order, failure)
            .map(u32::from_le)
            .map_err(u32::from_le))
    }

    /// Atomically clears `bits` in a u32, returning the previous value.
    pub fn fetch_and_not_u32(&self, offset: usize, bits: u32, order: Ordering) -> Result<u32> {
        Ok(u32::from_le(
            self.atomic_u32(offset)?.fetch_and(!bits.to_le(), order),
        ))
    }
}

/// Volatile copy of `len` bytes, 64 bytes per step (four 16-byte SSE
/// accesses) where both sides are 16-aligned alike, else 8 bytes at a time
/// where both sides allow.
///
/// Word-sized volatile copies reached only 4-11 GB/s on the development
/// machine against 40 GB/s for four 16-byte accesses per step
/// (`docs/performance.md`); lane slots and frame buffers are 16-aligned, so
/// frames take the wide path. No access needs to be atomic: the peer may
/// tear any of them, and callers parse only their private copy.
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable; the ranges
/// may be shared with another party but must not overlap each other.
unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if (src as usize) % 16 == (dst as usize) % 16 {
        use core::arch::x86_64::__m128i;
        while i < len && !(src as usize + i).is_multiple_of(16) {
            // SAFETY: i < len, within both ranges per the contract.
            unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
            i += 1;
        }
        while i + 64 <= len {
            // SAFETY: src+i and dst+i are 16-aligned here (same alignment,
            // src aligned above) and 64 bytes remain in both ranges. SSE2 is
            // part of every x86_64 CPU (the PVH kernel enables it at boot).
            unsafe {
                let s = src.add(i).cast::<__m128i>();
                let d = dst.add(i).cast::<__m128i>();
                let (a, b) = (s.read_volatile(), s.add(1).read_volatile());
                let (c, e) = (s.add(2).read_volatile(), s.add(3).read_volatile());
                d.write_volatile(a);
                d.add(1).write_volatile(b);
                d.add(2).write_volatile(c);
                d.add(3).write_volatile(e);
            }
            i += 64;
        }
        while i + 16 <= len {
            // SAFETY: as above, with 16 bytes remaining.
            unsafe {
                let w = src.add(i).cast::<__m128i>().read_volatile();
                dst.add(i).cast::<__m128i>().write_volatile(w);
            }
            i += 16;
        }
    }
    if (src as usize) % 8 == (dst as usize) % 8 {
        while i < len && !(src as usize + i).is_multiple_of(8) {
            // SAFETY: i < len, within both ranges per the contract.
            unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
            i += 1;
        }
        while i + 8 <= len {
            // SAFETY: src+i and dst+i are 8-aligned here and 8 bytes remain.
            unsafe {
                let w = src.add(i).cast::<u64>().read_volatile();
                dst.add(i).cast::<u64>().write_volatile(w);
            }
            i += 8;
        }
    }
    while i < len {
        // SAFETY: i < len, within both ranges per the contract.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_without_panics() {
        let mut buf = [0u8; 16];
        let m = SharedMem::from_slice(&mut buf);
        assert!(m.write_u32(12, 7).is_ok());
        assert_eq!(m.read_u32(12), Ok(7));
        assert_eq!(
            m.read_u32(13),
            Err(Error::OutOfBounds {
                offset: 13,
                len: 4,
                size: 16
            })
        );
        assert!(m.read_into(usize::MAX, &mut [0u8; 2]).is_err());
        assert!(m.slice(8, 9).is_err());
        assert!(m.slice(8, 8).is_ok());
    }

    #[test]
    fn atomics_demand_alignment() {
        let mut buf = [0u64; 2];
        // SAFETY: buf is a live, exclusively borrowed local.
        let m = unsafe { SharedMem::new(NonNull::new(buf.as_mut_ptr().cast()).unwrap(), 16) };
        m.store_u32(4, 9, Ordering::Release).unwrap();
        assert_eq!(m.load_u32(4, Ordering::Acquire), Ok(9));
        assert_eq!(
            m.load_u32(2, Ordering::Acquire),
            Err(Error::Misaligned {
                offset: 2,
                align: 4
            })
        );
        assert!(m.load_u64(12, Ordering::Relaxed).is_err());
    }

    #[test]
    fn wide_copies_handle_every_alignment() {
        let mut a = [0u8; 512];
        for (i, b) in a.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        for src_off in 0..33 {
            for dst_off in 0..33 {
                for len in [15, 16, 17, 63, 64, 65, 127, 200, 300] {
                    let mut b = [0u8; 512];
                    let src = SharedMem::from_slice(&mut a);
                    let dst = SharedMem::from_slice(&mut b);
                    dst.copy_from(dst_off, &src, src_off, len).unwrap();
                    let mut out = [0u8; 512];
                    dst.read_into(0, &mut out).unwrap();
                    assert!(out[..dst_off].iter().all(|&x| x == 0));
                    assert!(out[dst_off + len..].iter().all(|&x| x == 0));
                    for i in 0..len {
                        assert_eq!(out[dst_off + i], ((src_off + i) * 7 + 3) as u8);
                    }
                }
            }
        }
    }

    #[test]
    fn sixteen_byte_accesses_at_any_alignment() {
        let mut a = [0u8; 64];
        let m = SharedMem::from_slice(&mut a);
        let v = [0x0807_0605_0403_0201u64, 0x100f_0e0d_0c0b_0a09];
        for off in 0..=48 {
            m.fill(0, 64, 0).unwrap();
            m.write_16(off, v).unwrap();
            assert_eq!(m.read_16(off), Ok(v));
            // Little-endian bytes 1..=16 at off, nothing after them.
            for k in 0..16 {
                assert_eq!(m.read_u8(off + k), Ok(k as u8 + 1));
            }
            assert_eq!(m.read_u8(off + 16).unwrap_or(0), 0);
        }
        assert!(m.read_16(49).is_err());
        assert!(m.write_16(usize::MAX, v).is_err());
    }

    #[test]
    fn copies_handle_every_alignment() {
        for src_off in 0..9 {
            for dst_off in 0..9 {
                for len in [0, 1, 7, 8, 9, 33] {
                    let mut a: [u8; 64] = core::array::from_fn(|i| i as u8);
                    let mut b = [0u8; 64];
                    let src = SharedMem::from_slice(&mut a);
                    let dst = SharedMem::from_slice(&mut b);
                    dst.copy_from(dst_off, &src, src_off, len).unwrap();
                    let mut out = [0u8; 64];
                    dst.read_into(0, &mut out).unwrap();
                    for i in 0..len {
                        assert_eq!(out[dst_off + i], (src_off + i) as u8);
                    }
                }
            }
        }
    }
}
