//! The heap: all RAM above the image, in the RAM range that holds it.

use crate::boot::{BootInfo, Region};

/// The range the heap may use: from the page after the image to the end of
/// the RAM range containing the image.
pub fn heap_region(boot: &BootInfo, image_end: u64) -> Option<Region> {
    let start = image_end.checked_add(4095)? & !4095;
    let ram = boot
        .ram()
        .iter()
        .find(|r| r.start <= image_end && image_end <= r.end)?;
    // The identity map covers 4 GiB; nothing above is reachable.
    let end = ram.end.min(1 << 32) & !4095;
    (end > start).then_some(Region { start, end })
}

#[cfg(all(feature = "rt", panic = "abort", not(test)))]
mod global {
    use linked_list_allocator::LockedHeap;

    #[global_allocator]
    static ALLOCATOR: LockedHeap = LockedHeap::empty();

    /// Hands `region` to the allocator.
    ///
    /// # Safety
    /// The region is RAM that nothing else uses, for the rest of the
    /// domain's life; called once.
    pub unsafe fn init(region: super::Region) {
        // SAFETY: per the contract.
        unsafe {
            ALLOCATOR.lock().init(
                region.start as *mut u8,
                (region.end - region.start) as usize,
            )
        };
    }

    /// Bytes in use and free.
    pub fn usage() -> (usize, usize) {
        let h = ALLOCATOR.lock();
        (h.used(), h.free())
    }
}

#[cfg(all(feature = "rt", panic = "abort", not(test)))]
pub use global::{init, usage};

#[cfg(test)]
mod tests {
    use super::*;
    use share_hal::xen::abi::{HvmMemmapEntry, HvmStartInfo, HVM_START_MAGIC_VALUE};

    fn boot(map: &[(u64, u64)]) -> BootInfo {
        let si = HvmStartInfo {
            magic: HVM_START_MAGIC_VALUE,
            version: 1,
            ..Default::default()
        };
        let entries = map.iter().map(|&(addr, size)| HvmMemmapEntry {
            addr,
            size,
            kind: 1,
            reserved: 0,
        });
        BootInfo::from_parts(&si, entries, core::iter::empty()).unwrap()
    }

    #[test]
    fn heap_is_the_rest_of_the_image_range() {
        let b = boot(&[(0, 0xa0000), (0x100000, 0xf00000)]);
        assert_eq!(
            heap_region(&b, 0x180123),
            Some(Region {
                start: 0x181000,
                end: 0x1000000
            })
        );
        assert_eq!(heap_region(&b, 0x2000000), None);
        assert_eq!(heap_region(&b, u64::MAX), None);
        let tiny = boot(&[(0x100000, 0x1000)]);
        assert_eq!(heap_region(&tiny, 0x101000), None);
    }
}
