//! The heap: the RAM above the image, in the RAM range that holds it,
//! less the boot modules and their list.

use crate::boot::{BootInfo, Region};

/// The range the heap may use: the largest run of whole pages from the
/// page after the image to the end of the RAM range containing the image
/// that holds none of `boot.reserved()` (the boot modules, which the
/// loader puts right above the image, and the module list). One range,
/// because the allocator takes one.
pub fn heap_region(boot: &BootInfo, image_end: u64) -> Option<Region> {
    let start = image_end.checked_add(4095)? & !4095;
    let ram = boot
        .ram()
        .iter()
        .find(|r| r.start <= image_end && image_end <= r.end)?;
    // The identity map covers 4 GiB; nothing above is reachable.
    let end = ram.end.min(1 << 32) & !4095;
    let mut best: Option<Region> = None;
    let mut from = start;
    // Each pass either ends or moves `from` past one reserved range, so
    // this runs at most once per reserved range plus one.
    loop {
        // The first reserved range that ends after `from` and starts
        // before the end: the hole is from `from` to its start.
        let next = boot
            .reserved()
            .filter(|r| r.end > from && r.start < end)
            .min_by_key(|r| r.start);
        let hole_end = next.map_or(end, |r| r.start.max(from));
        if hole_end > from && best.is_none_or(|b| hole_end - from > b.len()) {
            best = Some(Region {
                start: from,
                end: hole_end,
            });
        }
        match next {
            Some(r) => from = r.end.max(from),
            None => break,
        }
    }
    best
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
    use share_pvh::abi::{HvmMemmapEntry, HvmStartInfo, HVM_START_MAGIC_VALUE};

    fn boot(map: &[(u64, u64)]) -> BootInfo {
        boot_with_modules(map, 0, &[])
    }

    fn boot_with_modules(map: &[(u64, u64)], list_at: u64, modules: &[(u64, u64)]) -> BootInfo {
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
        let mut b = BootInfo::from_parts(&si, entries, core::iter::empty()).unwrap();
        let list: Vec<u8> = modules
            .iter()
            .flat_map(|&(at, size)| [at, size, 0, 0])
            .flat_map(u64::to_le_bytes)
            .collect();
        let image = Region {
            start: 0x100000,
            end: 0x140000,
        };
        b.add_modules(list_at, modules.len() as u32, &list, image);
        assert_eq!(b.refused_modules().count(), 0);
        b
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

    #[test]
    fn heap_leaves_the_modules_and_their_list_alone() {
        let ram = [(0, 0xa0000), (0x100000, 0xf00000)];
        // As xl lays out a PVH guest: image, the module right above it,
        // then the start info page with the module list.
        let b = boot_with_modules(&ram, 0x541000, &[(0x140000, 0x400123)]);
        assert_eq!(
            heap_region(&b, 0x140000),
            Some(Region {
                start: 0x542000,
                end: 0x1000000
            })
        );
        // A big module high up: the hole below it is the larger one.
        let b = boot_with_modules(&ram, 0x141000, &[(0xe00000, 0x200000)]);
        assert_eq!(
            heap_region(&b, 0x140000),
            Some(Region {
                start: 0x142000,
                end: 0xe00000
            })
        );
        // Two modules, unaligned, sharing a page with nothing else: the
        // heap starts after the page holding the second one's end.
        let b = boot_with_modules(&ram, 0x800000, &[(0x140800, 0x1000), (0x141800, 0x10)]);
        let h = heap_region(&b, 0x140000).unwrap();
        assert_eq!(h.start, 0x801000);
        for m in b.reserved() {
            assert!(!h.overlaps(&m), "{h:?} overlaps {m:?}");
        }
        // Everything taken: no heap.
        let b = boot_with_modules(&[(0x100000, 0x100000)], 0x1ff000, &[(0x140000, 0xbf000)]);
        assert_eq!(heap_region(&b, 0x140000), None);
    }
}
