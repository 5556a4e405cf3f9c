//! The `file` store: a disk image in a file of the host (feature `host`).
//!
//! Writes are `pwrite`s into the page cache; durability comes from
//! `fdatasync`: a flush syncs when anything was written since the last
//! sync, and FUA writes are made durable by one `fdatasync` before the batch
//! that holds them returns (the server answers a batch only after
//! [`Store::execute`] returned, so the response of a FUA write is never
//! seen before its data is durable). Discard punches a hole
//! (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), so discarded sectors read back as
//! zeroes.
//!
//! **After a failed `fdatasync` nothing more is acknowledged.** Linux may
//! drop the dirty pages whose write-back failed and report the error only
//! once: a later `fdatasync` can succeed although data written before it
//! is lost. So the first failure fails the store: from then on every
//! write, flush and discard is answered `EIO` (reads still work) until the
//! file is opened again (blkback-file restarted, the disk attached anew).
//! A FUA write is acknowledged only if the sync that makes it durable
//! succeeded: a failed FLUSH in the same batch does not count as one.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::store::{byte_range, Io, IoKind, Store, StoreError, StoreInfo, SECTOR_SIZE};

pub struct FileStore {
    file: File,
    path: PathBuf,
    capacity: u64,
    read_only: bool,
    /// Written since the last fdatasync.
    dirty: bool,
    /// fdatasync calls, for tests and logs.
    pub syncs: u64,
    /// The error of the first failed fdatasync: the store acknowledges no
    /// write, flush or discard since.
    failed: Option<StoreError>,
    /// Tests: the next fdatasync fails with this errno (a disk's EIO
    /// cannot be had on demand).
    #[cfg(test)]
    fail_next_sync: Option<i32>,
}

fn io_err(e: &std::io::Error) -> StoreError {
    StoreError::Io {
        errno: e.raw_os_error().unwrap_or(0),
    }
}

impl FileStore {
    /// Opens `path`; its size, rounded down to whole sectors, is the
    /// disk's capacity.
    pub fn open(path: &Path, read_only: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let len = file.metadata()?.len();
        Ok(FileStore {
            file,
            path: path.to_path_buf(),
            capacity: len / SECTOR_SIZE as u64,
            read_only,
            dirty: false,
            syncs: 0,
            failed: None,
            #[cfg(test)]
            fail_next_sync: None,
        })
    }

    /// The error of the failed fdatasync that stopped this store from
    /// acknowledging writes, if one did.
    pub fn failed(&self) -> Option<StoreError> {
        self.failed
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.dirty {
            if let Err(e) = self.sync_data() {
                log::error!(
                    "{}: fdatasync failed ({e}): no write is acknowledged until the disk is attached again",
                    self.path.display()
                );
                self.failed = Some(io_err(&e));
                return Err(io_err(&e));
            }
            self.syncs += 1;
            self.dirty = false;
        }
        Ok(())
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(errno) = self.fail_next_sync.take() {
            return Err(std::io::Error::from_raw_os_error(errno));
        }
        self.file.sync_data()
    }

    fn one(&mut self, kind: IoKind, sector: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        if let (Some(e), IoKind::Write { .. } | IoKind::Flush | IoKind::Discard { .. }) =
            (self.failed, kind)
        {
            return Err(e);
        }
        match kind {
            IoKind::Read => {
                let at = byte_range(sector, buf.len(), self.capacity)?;
                self.file.read_exact_at(buf, at).map_err(|e| io_err(&e))
            }
            IoKind::Write { .. } => {
                if self.read_only {
                    return Err(StoreError::ReadOnly);
                }
                let at = byte_range(sector, buf.len(), self.capacity)?;
                // Dirty before the write: a write that fails half-way may
                // still have changed the file.
                self.dirty = true;
                self.file.write_all_at(buf, at).map_err(|e| io_err(&e))
            }
            IoKind::Flush => self.sync(),
            IoKind::Discard { sectors } => {
                if self.read_only {
                    return Err(StoreError::ReadOnly);
                }
                let len = sectors
                    .checked_mul(SECTOR_SIZE as u64)
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or(StoreError::OutOfRange)?;
                let at = byte_range(sector, len, self.capacity)?;
                self.dirty = true;
                rustix::fs::fallocate(
                    &self.file,
                    rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                    at,
                    len as u64,
                )
                .map_err(|e| StoreError::Io {
                    errno: e.raw_os_error(),
                })
            }
        }
    }
}

impl Store for FileStore {
    fn info(&self) -> StoreInfo {
        StoreInfo {
            capacity: self.capacity,
            read_only: self.read_only,
            flush: true,
            fua: true,
            discard: true,
        }
    }

    fn execute(&mut self, ios: &mut [Io<'_>]) {
        let mut fua_pending = Vec::new();
        for (i, io) in ios.iter_mut().enumerate() {
            io.result = self.one(io.kind, io.sector, io.buf);
            if let (IoKind::Write { fua: true }, Ok(())) = (io.kind, io.result) {
                fua_pending.push(i);
            }
            if io.kind == IoKind::Flush && io.result.is_ok() {
                // The flush synced every write before it, FUA ones too.
                fua_pending.clear();
            }
        }
        if !fua_pending.is_empty() {
            if let Err(e) = self.sync() {
                for i in fua_pending {
                    ios[i].result = Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::execute_one;

    const EIO: i32 = 5;

    /// Issue 17 item 5: a FUA write is not acknowledged when the flush
    /// after it in its batch failed (before: the failed flush cleared the
    /// FUA write's pending sync and it was answered OKAY), and after a
    /// failed fdatasync no write, flush or discard is acknowledged, even
    /// when a later fdatasync would succeed; reads still are. A store
    /// opened anew serves again.
    #[test]
    fn a_failed_sync_fails_every_write_after_it() {
        let path = temp_file("eio", 64 * 512);
        let mut s = FileStore::open(&path, false).unwrap();
        let mut w = vec![0x77u8; 512];
        let mut nothing: [u8; 0] = [];
        s.fail_next_sync = Some(EIO);
        let mut ios = [
            Io::new(IoKind::Write { fua: true }, 1, &mut w),
            Io::new(IoKind::Flush, 0, &mut nothing),
        ];
        s.execute(&mut ios);
        assert_eq!(ios[1].result, Err(StoreError::Io { errno: EIO }));
        assert_eq!(
            ios[0].result,
            Err(StoreError::Io { errno: EIO }),
            "the FUA write is not durable"
        );
        assert_eq!(s.failed(), Some(StoreError::Io { errno: EIO }));
        let mut w = vec![0x78u8; 512];
        for kind in [
            IoKind::Write { fua: false },
            IoKind::Write { fua: true },
            IoKind::Discard { sectors: 1 },
        ] {
            let buf: &mut [u8] = if matches!(kind, IoKind::Write { .. }) {
                &mut w
            } else {
                &mut []
            };
            assert_eq!(
                execute_one(&mut s, kind, 2, buf),
                Err(StoreError::Io { errno: EIO }),
                "{kind:?}"
            );
        }
        assert_eq!(
            execute_one(&mut s, IoKind::Flush, 0, &mut []),
            Err(StoreError::Io { errno: EIO }),
            "a flush that would succeed now still fails"
        );
        let mut r = vec![0u8; 512];
        assert_eq!(execute_one(&mut s, IoKind::Read, 1, &mut r), Ok(()));
        let mut again = FileStore::open(&path, false).unwrap();
        assert_eq!(
            execute_one(&mut again, IoKind::Write { fua: true }, 2, &mut w),
            Ok(())
        );
        std::fs::remove_file(&path).unwrap();
    }

    fn temp_file(tag: &str, len: u64) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("blkback-file-{tag}-{}.img", std::process::id()));
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        path
    }

    #[test]
    fn write_flush_fua_discard_read_back() {
        let path = temp_file("unit", 64 * 512 + 100);
        let mut s = FileStore::open(&path, false).unwrap();
        assert_eq!(s.info().capacity, 64, "a partial last sector is not served");
        let mut w = vec![0x5au8; 2048];
        assert_eq!(
            execute_one(&mut s, IoKind::Write { fua: false }, 8, &mut w),
            Ok(())
        );
        assert_eq!(s.syncs, 0);
        assert_eq!(execute_one(&mut s, IoKind::Flush, 0, &mut []), Ok(()));
        assert_eq!(s.syncs, 1);
        assert_eq!(execute_one(&mut s, IoKind::Flush, 0, &mut []), Ok(()));
        assert_eq!(s.syncs, 1, "nothing written since: no sync");
        assert_eq!(
            execute_one(&mut s, IoKind::Write { fua: true }, 60, &mut w),
            Ok(())
        );
        assert_eq!(s.syncs, 2, "FUA syncs before the batch returns");
        assert_eq!(
            execute_one(&mut s, IoKind::Write { fua: false }, 61, &mut w),
            Err(StoreError::OutOfRange)
        );
        assert_eq!(
            execute_one(&mut s, IoKind::Discard { sectors: 2 }, 9, &mut []),
            Ok(())
        );
        let mut r = vec![0u8; 2048];
        assert_eq!(execute_one(&mut s, IoKind::Read, 8, &mut r), Ok(()));
        assert!(r[..512].iter().all(|&b| b == 0x5a));
        assert!(r[512..1536].iter().all(|&b| b == 0), "discarded");
        assert!(r[1536..].iter().all(|&b| b == 0x5a));
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk[60 * 512..64 * 512].iter().all(|&b| b == 0x5a));
        let mut ro = FileStore::open(&path, true).unwrap();
        assert_eq!(
            execute_one(&mut ro, IoKind::Write { fua: false }, 0, &mut w),
            Err(StoreError::ReadOnly)
        );
        std::fs::remove_file(&path).unwrap();
    }
}
