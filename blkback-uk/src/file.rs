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
//!
//! **Copy once.** The store takes batches on the server's bounce pages
//! ([`Store::execute_shared`]): `pread`/`pwrite` go straight between the
//! file and the bounce pages, given to the kernel as a pointer and a length
//! (as share-member's TAP `readv`/`writev` give it a share's slots), so the
//! kernel's copy to or from the page cache is the only one in this domain;
//! no `&[u8]` is ever formed over those pages. The server still hands a
//! batch whose data does not lie end to end in the bounce pages (partial
//! segments) to [`Store::execute`] through its private buffer.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use share_hal::SharedMem;

use crate::store::{byte_range, Io, IoKind, SharedIo, Store, StoreError, StoreInfo, SECTOR_SIZE};

const EIO: i32 = 5;
const EINTR: i32 = 4;

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

    /// One operation of `len` bytes (reads and writes); `moved(file,
    /// at, reading)` moves the data at byte `at` of the file once the
    /// range and the store's state allow it.
    fn one(
        &mut self,
        kind: IoKind,
        sector: u64,
        len: usize,
        moved: impl FnOnce(&File, u64, bool) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if let (Some(e), IoKind::Write { .. } | IoKind::Flush | IoKind::Discard { .. }) =
            (self.failed, kind)
        {
            return Err(e);
        }
        match kind {
            IoKind::Read => {
                let at = byte_range(sector, len, self.capacity)?;
                moved(&self.file, at, true)
            }
            IoKind::Write { .. } => {
                if self.read_only {
                    return Err(StoreError::ReadOnly);
                }
                let at = byte_range(sector, len, self.capacity)?;
                // Dirty before the write: a write that fails half-way may
                // still have changed the file.
                self.dirty = true;
                moved(&self.file, at, false)
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
        let mut fua = FuaPending::default();
        for (i, io) in ios.iter_mut().enumerate() {
            let buf = &mut *io.buf;
            io.result = self.one(io.kind, io.sector, buf.len(), |file, at, reading| {
                if reading {
                    file.read_exact_at(buf, at)
                } else {
                    file.write_all_at(buf, at)
                }
                .map_err(|e| io_err(&e))
            });
            fua.note(i, io.kind, io.result);
        }
        if let Some((failed, e)) = fua.settle(self) {
            for i in failed {
                ios[i].result = Err(e);
            }
        }
    }

    fn takes_shared(&self) -> bool {
        true
    }

    /// As [`FileStore::execute`], each operation's data `pread` into or
    /// `pwrite` from bytes `at .. at + len` of `mem` (the server's bounce
    /// pages) by the kernel.
    fn execute_shared(&mut self, mem: &SharedMem<'_>, ios: &mut [SharedIo]) {
        let mut fua = FuaPending::default();
        for (i, io) in ios.iter_mut().enumerate() {
            let (win_at, len) = (io.at, io.len);
            io.result = self.one(io.kind, io.sector, len, |file, at, reading| {
                // Only a range outside the window fails here: the server's
                // bug, answered as an error of this operation alone.
                let window = mem.slice(win_at, len).map_err(|_| StoreError::OutOfRange)?;
                if reading {
                    pread_shared(file, &window, at)
                } else {
                    pwrite_shared(file, &window, at)
                }
            });
            fua.note(i, io.kind, io.result);
        }
        if let Some((failed, e)) = fua.settle(self) {
            for i in failed {
                ios[i].result = Err(e);
            }
        }
    }
}

/// The FUA writes of a batch not yet made durable by a flush after them.
#[derive(Default)]
struct FuaPending(Vec<usize>);

impl FuaPending {
    /// Operation `i` of the batch ran with `result`.
    fn note(&mut self, i: usize, kind: IoKind, result: Result<(), StoreError>) {
        if let (IoKind::Write { fua: true }, Ok(())) = (kind, result) {
            self.0.push(i);
        }
        if kind == IoKind::Flush && result.is_ok() {
            // The flush synced every write before it, FUA ones too.
            self.0.clear();
        }
    }

    /// Syncs for the FUA writes still pending; the ones to fail, and why,
    /// when that sync failed.
    fn settle(self, s: &mut FileStore) -> Option<(Vec<usize>, StoreError)> {
        if self.0.is_empty() {
            return None;
        }
        s.sync().err().map(|e| (self.0, e))
    }
}

/// The file offset `at + done` as the kernel takes it.
fn file_offset(at: u64, done: usize) -> Result<libc::off_t, StoreError> {
    at.checked_add(done as u64)
        .and_then(|o| libc::off_t::try_from(o).ok())
        .ok_or(StoreError::OutOfRange)
}

/// The errno of the last failed call.
fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(EIO)
}

/// Fills `window` (shared memory) from the file at byte `at`: `pread`
/// into the window's memory, the kernel's copy the only one. A file that
/// ends before the window is filled (it shrank under us) is an I/O error.
fn pread_shared(file: &File, window: &SharedMem<'_>, at: u64) -> Result<(), StoreError> {
    move_shared(window, at, |rest, off| {
        // SAFETY: `rest` is mapped and writable for `rest.len()` bytes for
        // the whole call (`SharedMem`'s contract: its lifetime outlives this
        // borrow), and no Rust reference to it exists: the kernel writes it
        // with its own copy routine, not a Rust access. The window is the
        // server's own bounce pages, which only the hypervisor writes, on
        // the server's own grant copies, never while a batch is at the
        // store; nothing here reads the bytes back to decide anything.
        unsafe { libc::pread(file.as_raw_fd(), rest.as_ptr().cast(), rest.len(), off) }
    })
}

/// Writes `window` (shared memory) to the file at byte `at`: `pwrite`
/// from the window's memory, the kernel's copy the only one.
fn pwrite_shared(file: &File, window: &SharedMem<'_>, at: u64) -> Result<(), StoreError> {
    move_shared(window, at, |rest, off| {
        // SAFETY: `rest` is mapped and readable for `rest.len()` bytes for
        // the whole call (`SharedMem`'s contract) and the kernel only reads
        // it, with its own copy routine, not a Rust access; no Rust
        // reference to it is formed. Its bytes are data the store only
        // moves, never decides on.
        unsafe { libc::pwrite(file.as_raw_fd(), rest.as_ptr().cast(), rest.len(), off) }
    })
}

/// Moves all of `window` with `call` (a `pread` or `pwrite` of the rest
/// of the window at its file offset), again after a short or interrupted
/// call; a call that moves nothing (the file's end) is an I/O error.
fn move_shared(
    window: &SharedMem<'_>,
    at: u64,
    mut call: impl FnMut(&SharedMem<'_>, libc::off_t) -> isize,
) -> Result<(), StoreError> {
    let mut done = 0usize;
    while done < window.len() {
        let rest = window
            .slice(done, window.len() - done)
            .map_err(|_| StoreError::OutOfRange)?;
        let off = file_offset(at, done)?;
        match call(&rest, off) {
            n if n < 0 => match last_errno() {
                EINTR => continue,
                errno => return Err(StoreError::Io { errno }),
            },
            0 => return Err(StoreError::Io { errno: EIO }),
            n => done += n as usize,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::execute_one;

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

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn shared(kind: IoKind, sector: u64, at: usize, len: usize) -> SharedIo {
        SharedIo::new(kind, sector, at, len)
    }

    /// Copy once: a batch on the bounce pages (a private buffer standing in
    /// for them here) is written to and read from the file by the kernel
    /// straight from and into the window, both ways, at the window offsets
    /// the server gives; the bytes around them stay untouched. Before the
    /// file store took shared batches every operation here was answered
    /// `Unsupported`.
    #[test]
    fn shared_batches_move_data_both_ways_through_the_kernel() {
        let path = temp_file("shared", 64 * 512);
        let mut s = FileStore::open(&path, false).unwrap();
        assert!(s.takes_shared());
        let mut window = vec![0u8; 6 * 4096];
        let one = pattern(1, 4096);
        let two = pattern(2, 2 * 4096 + 1024);
        window[..4096].copy_from_slice(&one);
        window[4096..4096 + two.len()].copy_from_slice(&two);
        {
            let mem = SharedMem::from_slice(&mut window);
            let mut ios = [
                shared(IoKind::Write { fua: false }, 8, 0, 4096),
                shared(IoKind::Write { fua: true }, 20, 4096, two.len()),
            ];
            s.execute_shared(&mem, &mut ios);
            assert_eq!(ios.map(|i| i.result), [Ok(()), Ok(())]);
        }
        assert_eq!(
            s.syncs, 1,
            "the FUA write was synced before the batch returned"
        );
        let file = std::fs::read(&path).unwrap();
        assert!(file[8 * 512..8 * 512 + 4096] == one[..]);
        assert!(file[20 * 512..20 * 512 + two.len()] == two[..]);
        assert!(file[..8 * 512].iter().all(|&b| b == 0));

        // Read both back into other places of the window.
        let mut window = vec![0xeeu8; 6 * 4096];
        {
            let mem = SharedMem::from_slice(&mut window);
            let mut ios = [
                shared(IoKind::Read, 20, 0, two.len()),
                shared(IoKind::Read, 8, 3 * 4096, 4096),
            ];
            s.execute_shared(&mem, &mut ios);
            assert_eq!(ios.map(|i| i.result), [Ok(()), Ok(())]);
        }
        assert!(window[..two.len()] == two[..]);
        assert!(window[two.len()..3 * 4096].iter().all(|&b| b == 0xee));
        assert!(window[3 * 4096..4 * 4096] == one[..]);
        assert!(window[4 * 4096..].iter().all(|&b| b == 0xee));
        std::fs::remove_file(&path).unwrap();
    }

    /// A failed operation fails alone in a shared batch: a range past the
    /// disk, a window past the bounce pages (the server's bug), a read the
    /// file cannot fill (it shrank under the store), a write to a
    /// read-only store; the others run, flushes order the batch, and a FUA
    /// write whose sync failed is not acknowledged. Nothing outside an
    /// operation's own window is written.
    #[test]
    fn shared_batches_fail_operations_alone() {
        let path = temp_file("shared-fail", 64 * 512);
        let mut s = FileStore::open(&path, false).unwrap();
        let mut window = pattern(7, 4 * 4096);
        let before = window.clone();
        {
            let mem = SharedMem::from_slice(&mut window);
            let mut ios = [
                shared(IoKind::Write { fua: false }, 0, 0, 4096),
                shared(IoKind::Write { fua: false }, 60, 4096, 4096),
                shared(IoKind::Read, 0, 3 * 4096 + 512, 4096),
                shared(IoKind::Read, u64::MAX, 4096, 512),
                shared(IoKind::Flush, 0, 0, 0),
                shared(IoKind::Write { fua: false }, 16, 4096, 1024),
            ];
            s.execute_shared(&mem, &mut ios);
            assert_eq!(
                ios.map(|i| i.result),
                [
                    Ok(()),
                    Err(StoreError::OutOfRange),
                    Err(StoreError::OutOfRange),
                    Err(StoreError::OutOfRange),
                    Ok(()),
                    Ok(())
                ]
            );
        }
        assert!(window == before, "no failed read wrote the window");
        assert_eq!(s.syncs, 1);
        let file = std::fs::read(&path).unwrap();
        assert!(file[..4096] == before[..4096]);
        assert!(file[16 * 512..16 * 512 + 1024] == before[4096..4096 + 1024]);
        assert!(file[60 * 512..].iter().all(|&b| b == 0));

        // The file shrinks to 10 sectors: a read of sectors 8..16 gets 2
        // sectors and then the end of the file, an error; the read before
        // it still works.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10 * 512)
            .unwrap();
        let mut window = vec![0u8; 2 * 4096];
        {
            let mem = SharedMem::from_slice(&mut window);
            let mut ios = [
                shared(IoKind::Read, 0, 0, 4096),
                shared(IoKind::Read, 8, 4096, 4096),
            ];
            s.execute_shared(&mem, &mut ios);
            assert_eq!(
                ios.map(|i| i.result),
                [Ok(()), Err(StoreError::Io { errno: EIO })]
            );
        }
        assert!(window[..4096] == before[..4096]);

        // A failed sync: the FUA write is not acknowledged, and no write
        // after it is.
        s.fail_next_sync = Some(EIO);
        let mut window = pattern(9, 4096);
        {
            let mem = SharedMem::from_slice(&mut window);
            let mut ios = [shared(IoKind::Write { fua: true }, 0, 0, 512)];
            s.execute_shared(&mem, &mut ios);
            assert_eq!(ios[0].result, Err(StoreError::Io { errno: EIO }));
            let mut ios = [
                shared(IoKind::Write { fua: false }, 1, 0, 512),
                shared(IoKind::Read, 0, 512, 512),
            ];
            s.execute_shared(&mem, &mut ios);
            assert_eq!(
                ios.map(|i| i.result),
                [Err(StoreError::Io { errno: EIO }), Ok(())],
                "reads still work"
            );
        }
        let mut ro = FileStore::open(&path, true).unwrap();
        let mut window = vec![0u8; 512];
        let mem = SharedMem::from_slice(&mut window);
        let mut ios = [shared(IoKind::Write { fua: false }, 0, 0, 512)];
        ro.execute_shared(&mem, &mut ios);
        assert_eq!(ios[0].result, Err(StoreError::ReadOnly));
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
