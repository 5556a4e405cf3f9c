//! Pages by physical address: the kernel runs identity-mapped (virtual ==
//! guest-physical for the first 4 GiB, set up by the boot code), so a frame
//! number names both.
//!
//! One of the small modules allowed `unsafe`: it is where page-aligned
//! memory becomes [`SharedMem`] windows.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;

use share_hal::error::{Error, Result};
use share_hal::platform::PAGE_SIZE;
use share_hal::volatile::SharedMem;

/// The identity map covers guest-physical 0..4 GiB.
pub const IDENTITY_LIMIT: u64 = 1 << 32;

/// A window over `count` pages at guest-physical frame `gfn`.
///
/// # Safety
/// The pages must lie in the identity map, and this program must reach
/// them only through `SharedMem` for `'a` (pages Xen placed there: shared
/// info, grant table frames, console and xenstore rings, mapped grants).
pub unsafe fn window<'a>(gfn: u64, count: usize) -> Result<SharedMem<'a>> {
    let len = count
        .checked_mul(PAGE_SIZE)
        .ok_or(Error::InvalidArgument { what: "page count" })?;
    let start = gfn.checked_mul(PAGE_SIZE as u64);
    match start.and_then(|s| s.checked_add(len as u64)) {
        Some(end) if end <= IDENTITY_LIMIT && gfn != 0 => {}
        _ => {
            return Err(Error::InvalidArgument {
                what: "frame outside the identity map",
            })
        }
    }
    let ptr = NonNull::new((gfn * PAGE_SIZE as u64) as *mut u8)
        .ok_or(Error::InvalidArgument { what: "frame 0" })?;
    // SAFETY: mapped (identity map, checked above) and accessed only through
    // SharedMem per the caller's contract.
    Ok(unsafe { SharedMem::new(ptr, len) })
}

/// Zeroed, page-aligned pages from the heap, freed on drop.
pub struct HeapPages {
    ptr: NonNull<u8>,
    count: usize,
}

impl HeapPages {
    pub fn alloc(count: usize) -> Result<HeapPages> {
        let layout = Self::layout(count)?;
        // SAFETY: the layout has non-zero size (checked in `layout`).
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or(Error::OutOfMemory)?;
        if ptr.as_ptr() as u64 + layout.size() as u64 > IDENTITY_LIMIT {
            // Cannot happen with the boot code's heap; checked so that the
            // frame numbers below are always right.
            // SAFETY: allocated just above with this layout.
            unsafe { dealloc(ptr.as_ptr(), layout) };
            return Err(Error::OutOfMemory);
        }
        Ok(HeapPages { ptr, count })
    }

    fn layout(count: usize) -> Result<Layout> {
        let size = count
            .checked_mul(PAGE_SIZE)
            .filter(|&s| s > 0)
            .ok_or(Error::InvalidArgument { what: "page count" })?;
        Layout::from_size_align(size, PAGE_SIZE)
            .map_err(|_| Error::InvalidArgument { what: "page count" })
    }

    pub fn first_frame(&self) -> u64 {
        self.ptr.as_ptr() as u64 / PAGE_SIZE as u64
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the allocation is live while `self` is, is never handed
        // out as a reference, and Xen or peers touching it concurrently is
        // what SharedMem's volatile accesses are for.
        unsafe { SharedMem::new(self.ptr, self.count * PAGE_SIZE) }
    }

    /// Gives the pages up for good without freeing them: for pages a peer
    /// may still reach (a grant that could not be revoked), or that Xen
    /// replaced in our physical address space.
    pub fn leak(self) {
        core::mem::forget(self);
    }
}

impl Drop for HeapPages {
    fn drop(&mut self) {
        if let Ok(layout) = Self::layout(self.count) {
            // SAFETY: allocated by `alloc` with this same layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}
