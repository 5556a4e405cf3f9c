//! The `ram` store: a disk in the server's own memory.
//!
//! **Volatile**: its contents are gone when the server stops. It is for
//! demos, tests and benchmarks (in the PVH image, an image given as a boot
//! module: `ramdisk=` of its xl config, served in place, in the module's
//! own memory). Flush and FUA are offered and complete at once: once a
//! write has completed, every later read sees it, which is all the
//! durability a RAM disk has. Discard zeroes the range.

use alloc::vec;
use alloc::vec::Vec;

use share_hal::SharedMem;

use crate::store::{byte_range, Io, IoKind, SharedIo, Store, StoreError, StoreInfo, SECTOR_SIZE};

/// A disk over memory `M`: its own `Vec` by default, or memory the store
/// is given (the PVH image's boot modules, `&'static mut [u8]`).
pub struct RamStore<M = Vec<u8>> {
    data: M,
    read_only: bool,
}

impl<M: AsRef<[u8]> + AsMut<[u8]>> RamStore<M> {
    /// A disk over `memory` as it is, in whole sectors: a tail shorter
    /// than a sector is not part of the disk (see [`RamStore::tail`]).
    pub fn over(memory: M, read_only: bool) -> Self {
        RamStore {
            data: memory,
            read_only,
        }
    }

    /// Bytes of the memory past the last whole sector (not served).
    pub fn tail(&self) -> usize {
        self.data.as_ref().len() % SECTOR_SIZE
    }

    pub fn bytes(&self) -> &[u8] {
        let len = self.data.as_ref().len();
        &self.data.as_ref()[..len - len % SECTOR_SIZE]
    }

    fn capacity(&self) -> u64 {
        (self.data.as_ref().len() / SECTOR_SIZE) as u64
    }

    /// One operation: `data` moves the bytes between the disk's range and
    /// the operation's buffer (`reading`: into the buffer).
    fn one(
        &mut self,
        kind: IoKind,
        sector: u64,
        len: usize,
        data: impl FnOnce(&mut [u8], bool) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let capacity = self.capacity();
        let disk = self.data.as_mut();
        match kind {
            IoKind::Flush => Ok(()),
            IoKind::Read => {
                let at = byte_range(sector, len, capacity)? as usize;
                data(&mut disk[at..at + len], true)
            }
            IoKind::Write { .. } => {
                if self.read_only {
                    return Err(StoreError::ReadOnly);
                }
                let at = byte_range(sector, len, capacity)? as usize;
                data(&mut disk[at..at + len], false)
            }
            IoKind::Discard { sectors } => {
                if self.read_only {
                    return Err(StoreError::ReadOnly);
                }
                let len = usize::try_from(sectors)
                    .ok()
                    .and_then(|s| s.checked_mul(SECTOR_SIZE))
                    .ok_or(StoreError::OutOfRange)?;
                let at = byte_range(sector, len, capacity)? as usize;
                disk[at..at + len].fill(0);
                Ok(())
            }
        }
    }
}

impl RamStore {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: u64) -> Self {
        RamStore {
            data: vec![0; (sectors as usize).saturating_mul(SECTOR_SIZE)],
            read_only: false,
        }
    }

    /// As [`RamStore::new`], asking Linux for transparent huge pages
    /// (`MADV_HUGEPAGE`, which the default `madvise` mode of THP needs) for
    /// the memory before it is first touched. Random I/O over a large RAM
    /// disk otherwise pays a TLB miss and page walk per 4 KiB, which
    /// neither the PVH image (its identity map has 2 MiB pages) nor a
    /// tmpfs file (the kernel's direct map) pays. Advice only: where it is
    /// refused the disk works the same on small pages.
    #[cfg(feature = "host")]
    pub fn new_hugepages(sectors: u64) -> Self {
        const PAGE: usize = 4096;
        let mut s = Self::new(sectors);
        // madvise wants a page-aligned start; malloc's large blocks start
        // just past a header. The whole pages inside the Vec.
        let at = s.data.as_mut_ptr();
        let skip = at.align_offset(PAGE);
        let len = s.data.len().saturating_sub(skip) / PAGE * PAGE;
        if len > 0 {
            // SAFETY: `at + skip .. + len` lies inside the Vec's own
            // allocation; MADV_HUGEPAGE changes how its pages are backed,
            // never their contents.
            let _ = unsafe {
                rustix::mm::madvise(at.add(skip).cast(), len, rustix::mm::Advice::LinuxHugepage)
            };
        }
        s
    }

    /// A disk holding `image`, padded with zeroes to whole sectors.
    pub fn from_image(mut image: Vec<u8>, read_only: bool) -> Self {
        let len = image.len().div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        image.resize(len, 0);
        RamStore {
            data: image,
            read_only,
        }
    }
}

impl<M: AsRef<[u8]> + AsMut<[u8]>> Store for RamStore<M> {
    fn info(&self) -> StoreInfo {
        StoreInfo {
            capacity: self.capacity(),
            read_only: self.read_only,
            flush: true,
            fua: true,
            discard: true,
        }
    }

    fn execute(&mut self, ios: &mut [Io<'_>]) {
        for io in ios.iter_mut() {
            let buf = &mut *io.buf;
            io.result = self.one(io.kind, io.sector, buf.len(), |disk, reading| {
                if reading {
                    buf.copy_from_slice(disk);
                } else {
                    disk.copy_from_slice(buf);
                }
                Ok(())
            });
        }
    }

    fn takes_shared(&self) -> bool {
        true
    }

    fn execute_shared(&mut self, mem: &SharedMem<'_>, ios: &mut [SharedIo]) {
        for io in ios.iter_mut() {
            let at = io.at;
            io.result = self.one(io.kind, io.sector, io.len, |disk, reading| {
                let moved = if reading {
                    mem.write_from(at, disk)
                } else {
                    mem.read_into(at, disk)
                };
                // Only a range outside the window fails: the server's bug,
                // answered as an error of this operation alone.
                moved.map_err(|_| StoreError::OutOfRange)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::execute_one;

    #[test]
    fn write_read_discard_and_bounds() {
        let mut s = RamStore::new(16);
        assert_eq!(s.info().capacity, 16);
        let mut w = vec![0xabu8; 1024];
        assert_eq!(
            execute_one(&mut s, IoKind::Write { fua: true }, 14, &mut w),
            Ok(())
        );
        assert_eq!(
            execute_one(&mut s, IoKind::Write { fua: false }, 15, &mut w),
            Err(StoreError::OutOfRange)
        );
        let mut r = vec![0u8; 1536];
        assert_eq!(execute_one(&mut s, IoKind::Read, 13, &mut r), Ok(()));
        assert!(r[..512].iter().all(|&b| b == 0) && r[512..].iter().all(|&b| b == 0xab));
        assert_eq!(
            execute_one(&mut s, IoKind::Discard { sectors: 1 }, 15, &mut []),
            Ok(())
        );
        assert_eq!(
            execute_one(&mut s, IoKind::Discard { sectors: u64::MAX }, 1, &mut []),
            Err(StoreError::OutOfRange)
        );
        assert_eq!(
            execute_one(&mut s, IoKind::Read, 14, &mut r[..1024]),
            Ok(())
        );
        assert!(r[..512].iter().all(|&b| b == 0xab) && r[512..1024].iter().all(|&b| b == 0));
        let mut ro = RamStore::from_image(vec![1; 700], true);
        assert_eq!(ro.info().capacity, 2);
        assert_eq!(
            execute_one(&mut ro, IoKind::Write { fua: false }, 0, &mut w[..512]),
            Err(StoreError::ReadOnly)
        );
    }

    #[test]
    fn shared_batches_move_data_through_the_window() {
        let mut s = RamStore::new(8);
        assert!(s.takes_shared());
        let mut window = vec![0u8; 2048];
        window[..1024].fill(0x5a);
        let mem = SharedMem::from_slice(&mut window);
        let io = SharedIo::new;
        let mut ios = [
            io(IoKind::Write { fua: false }, 2, 0, 1024),
            io(IoKind::Flush, 0, 0, 0),
            io(IoKind::Read, 2, 1024, 1024),
            io(IoKind::Read, 7, 1024, 1024),
            io(IoKind::Write { fua: true }, 0, 1536, 1024),
        ];
        s.execute_shared(&mem, &mut ios);
        let results: Vec<_> = ios.iter().map(|i| i.result).collect();
        assert_eq!(
            results,
            [
                Ok(()),
                Ok(()),
                Ok(()),
                Err(StoreError::OutOfRange),
                Err(StoreError::OutOfRange)
            ]
        );
        assert!(s.bytes()[1024..2048].iter().all(|&b| b == 0x5a));
        assert!(s.bytes()[..1024].iter().all(|&b| b == 0));
        assert!(window[1024..].iter().all(|&b| b == 0x5a));
    }

    #[test]
    fn memory_given_is_served_in_place_in_whole_sectors() {
        let mut memory = vec![7u8; 1300];
        {
            let mut s = RamStore::over(&mut memory[..], false);
            assert_eq!(s.info().capacity, 2);
            assert_eq!(s.tail(), 276);
            assert_eq!(s.bytes().len(), 1024);
            let mut w = vec![9u8; 512];
            assert_eq!(
                execute_one(&mut s, IoKind::Write { fua: true }, 1, &mut w),
                Ok(())
            );
            assert_eq!(
                execute_one(&mut s, IoKind::Read, 2, &mut w),
                Err(StoreError::OutOfRange),
                "the tail is not a sector of the disk"
            );
        }
        assert!(memory[..512].iter().all(|&b| b == 7));
        assert!(memory[512..1024].iter().all(|&b| b == 9));
        assert!(memory[1024..].iter().all(|&b| b == 7));
    }
}
