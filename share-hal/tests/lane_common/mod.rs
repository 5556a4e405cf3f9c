//! Test and bench scaffolding for lanes: pages shared by threads or
//! processes, and triggers between them.
//!
//! Pages are a memfd mapped `MAP_SHARED`, so a child process that inherits
//! the fd maps the very same memory; a `PROT_NONE` guard page on each side
//! turns any access past the lane into a crash instead of a silent read.
//! Triggers are eventfds, the host's nearest thing to an event channel.
#![allow(dead_code)] // each test binary uses a different part

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use rustix::mm::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use share_hal::SharedMem;

const PAGE: usize = 4096;

/// `len` bytes of shared memory between guard pages.
pub struct SharedPages {
    fd: OwnedFd,
    base: NonNull<u8>,
    total: usize,
    /// Window start: the end of the window touches the upper guard page.
    start: usize,
    len: usize,
}

impl SharedPages {
    /// New zeroed pages for a window of `len` bytes.
    pub fn new(len: usize) -> Self {
        let fd = memfd_create("lane-test", MemfdFlags::empty()).expect("memfd_create");
        ftruncate(&fd, len.next_multiple_of(PAGE) as u64).expect("ftruncate");
        Self::map(fd, len)
    }

    /// Maps pages another process created (fd inherited across exec).
    pub fn inherit(raw: RawFd, len: usize) -> Self {
        // SAFETY: the parent passes in the environment the number of an fd
        // it left open across exec for us; nothing else in this process
        // owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Self::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Self {
        let body = len.next_multiple_of(PAGE);
        let total = body + 2 * PAGE;
        // SAFETY: a fresh anonymous reservation; no Rust object lives there.
        let base = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                total,
                ProtFlags::empty(),
                MapFlags::PRIVATE,
            )
        }
        .expect("reserve guard area");
        // SAFETY: MAP_FIXED replaces pages inside our own reservation only.
        unsafe {
            mmap(
                base.cast::<u8>().add(PAGE).cast(),
                body,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::FIXED,
                &fd,
                0,
            )
        }
        .expect("map memfd");
        // Lanes want 64-byte alignment; the window's end stays within 63
        // bytes of the guard page.
        let start = PAGE + (body - len) / 64 * 64;
        SharedPages {
            fd,
            base: NonNull::new(base.cast()).expect("mmap returned null"),
            total,
            start,
            len,
        }
    }

    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the window lies inside the read-write part of our mapping,
        // which lives as long as `self`; it is only reached through
        // SharedMem (volatile and atomic accesses), never through references.
        unsafe {
            SharedMem::new(
                NonNull::new(self.base.as_ptr().add(self.start)).unwrap(),
                self.len,
            )
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for SharedPages {
    fn drop(&mut self) {
        // SAFETY: the whole reservation is ours and no SharedMem borrowing
        // it outlives `self`.
        let _ = unsafe { munmap(self.base.as_ptr().cast(), self.total) };
    }
}

// SAFETY: the pages are only reached through SharedMem, which is Sync.
unsafe impl Send for SharedPages {}
// SAFETY: as above.
unsafe impl Sync for SharedPages {}

/// One direction of triggers: an eventfd.
pub struct Trigger {
    fd: OwnedFd,
}

impl Trigger {
    pub fn new() -> Self {
        Trigger {
            fd: eventfd(0, EventfdFlags::empty()).expect("eventfd"),
        }
    }

    pub fn inherit(raw: RawFd) -> Self {
        // SAFETY: as in SharedPages::inherit.
        Trigger {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn notify(&self) {
        rustix::io::write(&self.fd, &1u64.to_ne_bytes()).expect("eventfd write");
    }

    /// Waits for a trigger; `false` on timeout. Consumes all pending ones.
    pub fn wait(&self, timeout: Duration) -> bool {
        let ts = Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => false,
            Ok(_) => {
                let mut b = [0u8; 8];
                rustix::io::read(self.fd.as_fd(), &mut b).expect("eventfd read");
                true
            }
            Err(rustix::io::Errno::INTR) => true,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Deterministic generator shared by both ends of a test, so a child process
/// can recompute what the parent sent from the seed alone (xorshift64*).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `i`-th frame of stream `seed`: length in `1..=max_len`, content
/// naming its index, so loss, duplication and reordering all show.
pub fn stream_frame(seed: u64, i: u64, max_len: usize, out: &mut Vec<u8>) {
    let mut r = Rng::new(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let len = 1 + r.below(max_len as u64) as usize;
    out.clear();
    out.extend_from_slice(&i.to_le_bytes());
    let fill = r.next() as u8;
    out.extend((0..len.saturating_sub(8)).map(|k| fill.wrapping_add(k as u8)));
    out.truncate(len);
}
