//! The `ram` store: a disk in the server's own memory.
//!
//! **Volatile**: its contents are gone when the server stops. It is for
//! demos, tests and benchmarks (in the PVH image, an image given as a boot
//! module). Flush and FUA are offered and complete at once: once a write
//! has completed, every later read sees it, which is all the durability a
//! RAM disk has. Discard zeroes the range.

use alloc::vec;
use alloc::vec::Vec;

use crate::store::{byte_range, Io, IoKind, Store, StoreError, StoreInfo, SECTOR_SIZE};

pub struct RamStore {
    data: Vec<u8>,
    read_only: bool,
}

impl RamStore {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sectors: u64) -> Self {
        RamStore {
            data: vec![0; (sectors as usize).saturating_mul(SECTOR_SIZE)],
            read_only: false,
        }
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

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    fn one(&mut self, io: &mut Io<'_>) -> Result<(), StoreError> {
        let capacity = (self.data.len() / SECTOR_SIZE) as u64;
        match io.kind {
            IoKind::Flush => Ok(()),
            IoKind::Read => {
                let at = byte_range(io.sector, io.buf.len(), capacity)? as usize;
                io.buf.copy_from_slice(&self.data[at..at + io.buf.len()]);
                Ok(())
            }
            IoKind::Write { .. } => {
                if self.read_only {
                    return Err(StoreError::ReadOnly);
                }
                let at = byte_range(io.sector, io.buf.len(), capacity)? as usize;
                self.data[at..at + io.buf.len()].copy_from_slice(io.buf);
                Ok(())
            }
            IoKind::Discard { sectors } => {
                if self.read_only {
                    return Err(StoreError::ReadOnly);
                }
                let len = usize::try_from(sectors)
                    .ok()
                    .and_then(|s| s.checked_mul(SECTOR_SIZE))
                    .ok_or(StoreError::OutOfRange)?;
                let at = byte_range(io.sector, len, capacity)? as usize;
                self.data[at..at + len].fill(0);
                Ok(())
            }
        }
    }
}

impl Store for RamStore {
    fn info(&self) -> StoreInfo {
        StoreInfo {
            capacity: (self.data.len() / SECTOR_SIZE) as u64,
            read_only: self.read_only,
            flush: true,
            fua: true,
            discard: true,
        }
    }

    fn execute(&mut self, ios: &mut [Io<'_>]) {
        for io in ios.iter_mut() {
            io.result = self.one(io);
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
}
