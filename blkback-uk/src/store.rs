//! What the disk server needs from the storage behind a disk.
//!
//! A store executes a **batch** of operations per call ([`Store::execute`]).
//! The server collects one batch from a member's request lane, moves the
//! write data in with one grant copy, hands the whole batch to the store,
//! then moves the read data out with one grant copy. A synchronous store
//! (RAM, a file) simply runs the batch in order; an asynchronous one (the
//! PVH image's `vbd` store over a Xen blkfront ring, later) submits the
//! batch to its ring at once and polls completions until the batch is done,
//! so the disk below still sees the whole batch in flight. docs/design.md
//! ("Disk durability") says why the batch, not a per-request token, is the
//! unit.
//!
//! Ordering rules every store keeps within a batch (the server relies on
//! them for the durability guarantee):
//! - an operation after a [`IoKind::Flush`] starts only after the flush
//!   completed, and a flush completes only after every write before it in
//!   the batch completed and is durable;
//! - a write with `fua` is durable when its result is set;
//! - a failed operation sets its own `result` only; the others still run.

use alloc::rc::Rc;
use core::any::Any;
use core::fmt;

use share_hal::SharedMem;

/// Bytes of one sector.
pub const SECTOR_SIZE: usize = 512;

/// What a store is and can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreInfo {
    /// Size in 512-byte sectors.
    pub capacity: u64,
    /// The store itself refuses writes (e.g. a file opened read-only).
    pub read_only: bool,
    /// Flush makes earlier writes durable (false: writes are durable, or
    /// can never be, as in a RAM store, and flush is not offered).
    pub flush: bool,
    /// Writes can be forced to durable media one by one.
    pub fua: bool,
    pub discard: bool,
}

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The range leaves the store (the server checks ranges first; a store
    /// still refuses rather than trust it).
    OutOfRange,
    /// The store cannot do this operation.
    Unsupported,
    ReadOnly,
    /// The medium failed; `errno` as the OS said, or 0.
    Io {
        errno: i32,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::OutOfRange => write!(f, "sector range outside the store"),
            StoreError::Unsupported => write!(f, "operation not supported by the store"),
            StoreError::ReadOnly => write!(f, "store is read-only"),
            StoreError::Io { errno } => write!(f, "I/O error (errno {errno})"),
        }
    }
}

/// One operation of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Fill `buf` from `sector`.
    Read,
    /// Write `buf` at `sector`; with `fua`, durable before completion.
    Write { fua: bool },
    /// Make every write completed before it durable.
    Flush,
    /// The store may forget `sectors` sectors from `sector`; reads of them
    /// afterwards return zeroes or the old data.
    Discard { sectors: u64 },
}

/// One operation and its data. For reads and writes `buf.len()` is a
/// multiple of [`SECTOR_SIZE`]; for flush and discard it is empty.
#[derive(Debug)]
pub struct Io<'a> {
    pub kind: IoKind,
    pub sector: u64,
    pub buf: &'a mut [u8],
    /// Set by [`Store::execute`].
    pub result: Result<(), StoreError>,
}

impl<'a> Io<'a> {
    pub fn new(kind: IoKind, sector: u64, buf: &'a mut [u8]) -> Self {
        Io {
            kind,
            sector,
            buf,
            // Not yet executed.
            result: Err(StoreError::Io { errno: 0 }),
        }
    }
}

/// One operation of a batch whose data stays in the server's bounce pages
/// ([`Store::execute_shared`]): bytes `at .. at + len` of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedIo {
    pub kind: IoKind,
    pub sector: u64,
    pub at: usize,
    pub len: usize,
    /// Set by [`Store::execute_shared`].
    pub result: Result<(), StoreError>,
}

impl SharedIo {
    pub fn new(kind: IoKind, sector: u64, at: usize, len: usize) -> Self {
        SharedIo {
            kind,
            sector,
            at,
            len,
            // Not yet executed.
            result: Err(StoreError::Io { errno: 0 }),
        }
    }
}

/// Storage behind one disk.
pub trait Store {
    fn info(&self) -> StoreInfo;

    /// Executes `ios` in order, under the ordering rules of this module,
    /// setting each `result`. Returns when every operation has completed.
    fn execute(&mut self, ios: &mut [Io<'_>]);

    /// Whether the store takes batches with [`Store::execute_shared`]. A
    /// store that copies the data anyway (RAM) saves the server's copy
    /// between its bounce pages and a private buffer that way.
    fn takes_shared(&self) -> bool {
        false
    }

    /// As [`Store::execute`], the data read from / written to `mem` (the
    /// server's own bounce pages: only the hypervisor writes them, on the
    /// server's grant copies, never while a batch is at the store) through
    /// its volatile accessors. Called only when [`Store::takes_shared`].
    fn execute_shared(&mut self, mem: &SharedMem<'_>, ios: &mut [SharedIo]) {
        let _ = mem;
        for io in ios.iter_mut() {
            io.result = Err(StoreError::Unsupported);
        }
    }

    /// Pages the store works on in place (the platform's page block, the
    /// server's `P::Pages`), already granted to where its I/O goes: the
    /// server may put a batch's data there instead of in its own bounce
    /// pages (each operation's data from a page boundary, end to end),
    /// and then passes them as `mem` to [`Store::execute_shared`]. No copy
    /// is left between the member's pages and the store's. `None` (the
    /// default): the store takes the server's pages. Asked once per batch,
    /// so a store can stop lending (e.g. when it can no longer vouch for
    /// every page).
    fn lent_pages(&self) -> Option<Rc<dyn Any>> {
        None
    }
}

/// The sector range `sector .. sector + len_bytes/512`, checked against
/// `capacity`; the byte offset of its start.
pub fn byte_range(sector: u64, len_bytes: usize, capacity: u64) -> Result<u64, StoreError> {
    if !len_bytes.is_multiple_of(SECTOR_SIZE) {
        return Err(StoreError::OutOfRange);
    }
    let sectors = (len_bytes / SECTOR_SIZE) as u64;
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => sector
            .checked_mul(SECTOR_SIZE as u64)
            .ok_or(StoreError::OutOfRange),
        _ => Err(StoreError::OutOfRange),
    }
}

/// Runs one operation alone (tests, tools).
pub fn execute_one<S: Store + ?Sized>(
    s: &mut S,
    kind: IoKind,
    sector: u64,
    buf: &mut [u8],
) -> Result<(), StoreError> {
    let mut ios = [Io::new(kind, sector, buf)];
    s.execute(&mut ios);
    ios[0].result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_without_overflow() {
        assert_eq!(byte_range(0, 1024, 2), Ok(0));
        assert_eq!(byte_range(1, 512, 2), Ok(512));
        assert_eq!(byte_range(1, 1024, 2), Err(StoreError::OutOfRange));
        assert_eq!(byte_range(0, 100, 2), Err(StoreError::OutOfRange));
        assert_eq!(
            byte_range(u64::MAX, 512, u64::MAX),
            Err(StoreError::OutOfRange)
        );
        assert_eq!(
            byte_range(u64::MAX / 2, 0, u64::MAX),
            Err(StoreError::OutOfRange),
            "the byte offset overflows u64"
        );
    }
}
