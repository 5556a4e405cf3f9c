//! The operating-system calls of the simulation: memfd pages, mappings,
//! fd passing, eventfds. The only `unsafe` of `sim` lives here.

use std::ffi::c_void;
use std::io::IoSlice;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::proto::MAX_FDS_PER_MSG;
use share_hal::error::{Error, Result};
use share_hal::platform::PAGE_SIZE;
use share_hal::volatile::SharedMem;

pub fn os(op: &'static str) -> impl Fn(rustix::io::Errno) -> Error {
    move |e| Error::Os {
        op,
        errno: e.raw_os_error(),
    }
}

/// A new page: a memfd of exactly one page, sealed so that no holder of
/// the descriptor (a hostile domain included) can shrink it under another
/// holder's mapping (which would SIGBUS the broker) or grow it.
pub fn new_page() -> Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(
        "xen-share-page",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(os("memfd_create"))?;
    rustix::fs::ftruncate(&fd, PAGE_SIZE as u64).map_err(os("ftruncate of a page"))?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(os("sealing a page"))?;
    Ok(fd)
}

/// A second descriptor of the same page that only allows reading: a
/// member given it cannot map the page writable (mmap fails with EACCES).
pub fn reopen_readonly(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = std::fs::File::open(path).map_err(|e| Error::Os {
        op: "reopening a page read-only",
        errno: e.raw_os_error().unwrap_or(0),
    })?;
    Ok(file.into())
}

/// A window of `count` pages, each mapped from its own page descriptor, at
/// consecutive addresses.
pub struct Region {
    ptr: NonNull<u8>,
    count: usize,
    writable: bool,
}

// SAFETY: the region is plain memory owned by this value; it is reached
// only through SharedMem (volatile/atomic), which is thread-safe.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only hands out SharedMem.
unsafe impl Sync for Region {}

impl Region {
    /// Reserves address space for `count` pages, inaccessible until
    /// [`Region::map_page`] fills each slot.
    pub fn reserve(count: usize, writable: bool) -> Result<Region> {
        let len = count
            .checked_mul(PAGE_SIZE)
            .filter(|&l| l > 0)
            .ok_or(Error::InvalidArgument { what: "page count" })?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // touches no existing memory.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(os("mmap (reserving pages)"))?;
        Ok(Region {
            ptr: NonNull::new(ptr.cast()).ok_or(Error::OutOfMemory)?,
            count,
            writable,
        })
    }

    /// Maps page descriptor `fd` into slot `index`.
    pub fn map_page(&mut self, index: usize, fd: BorrowedFd<'_>) -> Result<()> {
        if index >= self.count {
            return Err(Error::InvalidArgument {
                what: "page index beyond the region",
            });
        }
        let prot = if self.writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: slot `index` lies inside our own reservation (checked
        // above), so MAP_FIXED replaces only memory this Region owns and
        // that no Rust reference points into (it is reached via SharedMem
        // only, and none is handed out while `&mut self` is held).
        unsafe {
            rustix::mm::mmap(
                self.ptr.as_ptr().add(index * PAGE_SIZE).cast::<c_void>(),
                PAGE_SIZE,
                prot,
                MapFlags::SHARED | MapFlags::FIXED,
                fd,
                0,
            )
        }
        .map_err(os("mmap of a page"))?;
        Ok(())
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the whole reservation stays mapped until drop, which the
        // borrow of `self` outlives; it is never reached through a Rust
        // reference. Slots not yet filled are PROT_NONE: only
        // `map_page`'s caller can observe them, and it fills every slot
        // before handing the region out.
        unsafe { SharedMem::new(self.ptr, self.count * PAGE_SIZE) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping; every SharedMem over it borrowed `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.count * PAGE_SIZE) };
    }
}

/// Sends one datagram with `fds` attached.
pub fn send(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    debug_assert!(fds.len() <= MAX_FDS_PER_MSG);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MSG))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Error::InvalidArgument {
            what: "too many descriptors for one message",
        });
    }
    let n = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(os("sendmsg to the simulation socket"))?;
    if n != bytes.len() {
        return Err(Error::Protocol {
            what: "short send on a datagram socket",
        });
    }
    Ok(())
}

/// What one `recv` brought.
pub struct Received {
    /// Bytes of the datagram; 0 with `closed` when the peer went away.
    pub len: usize,
    pub closed: bool,
    /// The datagram did not fit the buffer (a protocol violation).
    pub truncated: bool,
    pub fds: Vec<OwnedFd>,
}

/// Receives one datagram. With `accept_fds` false, descriptors a peer
/// attaches are closed by the kernel, never installed.
pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8], accept_fds: bool) -> Result<Received> {
    recv_flags(sock, buf, accept_fds, RecvFlags::empty())?.ok_or(Error::Os {
        op: "recvmsg from the simulation socket",
        errno: rustix::io::Errno::AGAIN.raw_os_error(),
    })
}

/// As [`recv`], but first tries without blocking for up to `spin_ns`: the
/// answer of a peer that is running usually comes sooner than this
/// process's CPU, once idle, would wake up for it.
pub fn recv_spinning(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    accept_fds: bool,
    spin_ns: u64,
) -> Result<Received> {
    if spin_ns > 0 {
        let mut spin = crate::Spin::new(spin_ns, None);
        loop {
            if let Some(r) = recv_flags(sock, buf, accept_fds, RecvFlags::DONTWAIT)? {
                return Ok(r);
            }
            if !spin.go_on() {
                break;
            }
        }
    }
    recv(sock, buf, accept_fds)
}

/// One datagram, or None when `flags` has DONTWAIT and none is queued.
fn recv_flags(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    accept_fds: bool,
    flags: RecvFlags,
) -> Result<Option<Received>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MSG))];
    let space: &mut [MaybeUninit<u8>] = if accept_fds { &mut space } else { &mut [] };
    let mut control = RecvAncillaryBuffer::new(space);
    let msg = loop {
        match rustix::net::recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | flags,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) if flags.contains(RecvFlags::DONTWAIT) => {
                return Ok(None)
            }
            Err(rustix::io::Errno::CONNRESET) => {
                return Ok(Some(Received {
                    len: 0,
                    closed: true,
                    truncated: false,
                    fds: Vec::new(),
                }))
            }
            r => break r.map_err(os("recvmsg from the simulation socket"))?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    Ok(Some(Received {
        len: msg.bytes.min(buf.len()),
        closed: msg.bytes == 0,
        truncated: msg.flags.contains(ReturnFlags::TRUNC)
            || (accept_fds && msg.flags.contains(ReturnFlags::CTRUNC)),
        fds,
    }))
}

/// An eventfd both sides hold: the broker adds to it on a trigger, the
/// domain polls and drains it.
pub fn new_eventfd() -> Result<OwnedFd> {
    rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(os("eventfd"))
}

pub fn eventfd_signal(fd: BorrowedFd<'_>) {
    // The counter can only fail to take 1 when it is near 2^64; a wake is
    // pending then anyway.
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

pub fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

/// Blocks until `fd` is readable or `timeout_ns` passed (`None`: forever).
/// Returns whether it became readable.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout_ns: Option<u64>) -> Result<bool> {
    let ts = timeout_ns.map(|ns| rustix::event::Timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as _,
    });
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    match rustix::event::poll(&mut fds, ts.as_ref()) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(os("poll of the event channel eventfd")(e)),
    }
}

/// [`poll_readable`] of `fd` and of `others` at once: whether `fd`, and
/// whether any of `others`, became readable.
pub fn poll_readable_with<'a>(
    fd: BorrowedFd<'a>,
    others: impl Iterator<Item = BorrowedFd<'a>>,
    timeout_ns: Option<u64>,
) -> Result<(bool, bool)> {
    let ts = timeout_ns.map(|ns| rustix::event::Timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as _,
    });
    let others: Vec<BorrowedFd<'a>> = others.collect();
    let mut fds: Vec<rustix::event::PollFd<'_>> = std::iter::once(&fd)
        .chain(others.iter())
        .map(|f| rustix::event::PollFd::new(f, rustix::event::PollFlags::IN))
        .collect();
    match rustix::event::poll(&mut fds, ts.as_ref()) {
        Ok(_) => {
            let ready = |p: &rustix::event::PollFd<'_>| !p.revents().is_empty();
            Ok((ready(&fds[0]), fds[1..].iter().any(ready)))
        }
        Err(rustix::io::Errno::INTR) => Ok((false, false)),
        Err(e) => Err(os("poll of the event channel eventfd")(e)),
    }
}

pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// Lifts the descriptor limit to its hard maximum: the broker keeps one
/// descriptor per page of every domain.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}
