//! Linux userspace on Xen over `/dev/xenshare` (xenshare.ko), the whole
//! [`Platform`]: unlike `/dev/xen/gntalloc`, the device grants any page
//! the caller allocated through it and revokes one grant at a time, so
//! [`Share`](share_hal::share::Share) (the owner's side) works here exactly as
//! on the simulation and in the unikernels. The ABI is
//! `guest-drivers/include/uapi/linux/xenshare.h`, documented in
//! `docs/xenshare-uapi.md`; the structures below mirror it byte for byte
//! (the tests check sizes and ioctl numbers against the values the C
//! header gives).
//!
//! A [`Frame`] here is a page of the device file: the mmap offset of a
//! block divided by the page size, plus the page's index. The kernel
//! resolves it to the page, so a frame never names memory the caller did
//! not allocate through this file.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::{foreign_error, mapped_window, poll_timeout_ms, sys};
use share_hal::error::{Error, Result};
use share_hal::platform::{
    Access, Clock, CopyPtr, CopySeg, CopyStatus, DomId, EventChannels, Frame, GrantRef, GrantTable,
    Mapping, Memory, PageBlock, Platform, Port, PAGE_SIZE,
};
use share_hal::share::ShareRef;
use share_hal::volatile::SharedMem;

/// The ABI of `uapi/linux/xenshare.h`.
pub mod abi {
    /// Pages in one ALLOC or MAP.
    pub const MAX_OBJECT_PAGES: usize = 1024;
    /// Segments in one COPY.
    pub const MAX_COPY_SEGS: usize = 128;
    /// Bit 31 of an event: a joined share's event, not a port.
    pub const EVENT_SHARE: u32 = 0x8000_0000;
    pub const READ_ONLY: u16 = 1;
    pub const COPY_SRC_FOREIGN: u16 = 1;
    pub const COPY_DST_FOREIGN: u16 = 2;

    #[repr(C)]
    #[derive(Default)]
    pub struct Alloc {
        pub count: u32,
        pub flags: u32,
        pub offset: u64,
    }

    #[repr(C)]
    pub struct Release {
        pub offset: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    pub struct Grant {
        pub page: u64,
        pub domid: u16,
        pub flags: u16,
        pub gref: u32,
    }

    #[repr(C)]
    pub struct Revoke {
        pub gref: u32,
        pub pad: u32,
    }

    #[repr(C)]
    pub struct Map {
        pub refs: u64,
        pub count: u32,
        pub domid: u16,
        pub flags: u16,
        pub offset: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    pub struct Join {
        pub owner: u16,
        pub flags: u16,
        pub share_ref: u32,
        pub numpages: u32,
        pub event: u32,
        pub offset: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CopyPtr {
        pub page: u64,
        pub gref: u32,
        pub domid: u16,
        pub offset: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CopySeg {
        pub src: CopyPtr,
        pub dst: CopyPtr,
        pub len: u16,
        pub flags: u16,
        pub status: i16,
        pub pad: u16,
    }

    #[repr(C)]
    pub struct Copy {
        pub segs: u64,
        pub count: u32,
        pub pad: u32,
    }

    #[repr(C)]
    #[derive(Default)]
    pub struct Evtchn {
        pub domid: u16,
        pub pad: u16,
        pub remote_port: u32,
        pub port: u32,
        pub pad2: u32,
    }

    #[repr(C)]
    pub struct PortArg {
        pub port: u32,
        pub pad: u32,
    }

    /// `_IOC(dir, 'X', nr, size)` on x86 (dir 1 write, 2 read).
    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | ((b'X' as u64) << 8) | nr
    }
    const W: u64 = 1;
    const RW: u64 = 3;

    pub const IOC_ALLOC: u64 = ioc(RW, 0xa0, size_of::<Alloc>());
    pub const IOC_RELEASE: u64 = ioc(W, 0xa1, size_of::<Release>());
    pub const IOC_GRANT: u64 = ioc(RW, 0xa2, size_of::<Grant>());
    pub const IOC_REVOKE: u64 = ioc(W, 0xa3, size_of::<Revoke>());
    pub const IOC_MAP: u64 = ioc(RW, 0xa4, size_of::<Map>());
    pub const IOC_JOIN: u64 = ioc(RW, 0xa5, size_of::<Join>());
    pub const IOC_COPY: u64 = ioc(W, 0xa6, size_of::<Copy>());
    pub const IOC_EVTCHN_ALLOC_UNBOUND: u64 = ioc(RW, 0xa7, size_of::<Evtchn>());
    pub const IOC_EVTCHN_BIND: u64 = ioc(RW, 0xa8, size_of::<Evtchn>());
    pub const IOC_NOTIFY: u64 = ioc(W, 0xa9, size_of::<PortArg>());
    pub const IOC_EVTCHN_CLOSE: u64 = ioc(W, 0xaa, size_of::<PortArg>());
}

/// One segment in the device's form. A local side names a page of this
/// file by its frame; a foreign side a peer's grant.
fn encode_seg(s: &CopySeg) -> Result<abi::CopySeg> {
    fn side(p: &CopyPtr, len: u16, foreign_flag: u16) -> Result<(abi::CopyPtr, u16)> {
        let offset = match *p {
            CopyPtr::Local { offset, .. } | CopyPtr::Foreign { offset, .. } => offset,
        };
        if usize::from(offset) + usize::from(len) > PAGE_SIZE {
            return Err(Error::InvalidArgument {
                what: "copy segment leaves its page",
            });
        }
        Ok(match *p {
            CopyPtr::Local { frame, offset } => (
                abi::CopyPtr {
                    page: frame.0,
                    offset,
                    ..Default::default()
                },
                0,
            ),
            CopyPtr::Foreign {
                domid,
                gref,
                offset,
            } => (
                abi::CopyPtr {
                    page: 0,
                    gref: gref.0,
                    domid,
                    offset,
                },
                foreign_flag,
            ),
        })
    }
    if s.len == 0 || usize::from(s.len) > PAGE_SIZE {
        return Err(Error::InvalidArgument {
            what: "copy segment length (1..=4096)",
        });
    }
    let (src, fs) = side(&s.src, s.len, abi::COPY_SRC_FOREIGN)?;
    let (dst, fd) = side(&s.dst, s.len, abi::COPY_DST_FOREIGN)?;
    Ok(abi::CopySeg {
        src,
        dst,
        len: s.len,
        flags: fs | fd,
        status: 0,
        pad: 0,
    })
}

/// The outcome of a segment from its GNTST_* status.
fn seg_status(s: &CopySeg, status: i16) -> CopyStatus {
    if status == 0 {
        return CopyStatus::Done;
    }
    let (domid, gref) = match (s.src, s.dst) {
        (CopyPtr::Foreign { domid, gref, .. }, _) | (_, CopyPtr::Foreign { domid, gref, .. }) => {
            (domid, gref)
        }
        _ => (0, GrantRef(0)),
    };
    CopyStatus::Failed(foreign_error(status, domid, gref))
}

fn os_error(e: Error, errno_to: impl Fn(i32) -> Option<Error>) -> Error {
    match e {
        Error::Os { errno, .. } => errno_to(errno).unwrap_or(e),
        e => e,
    }
}

/// The `/dev/xenshare` platform.
pub struct XenShareDev {
    domid: DomId,
    fd: Arc<OwnedFd>,
    fired: VecDeque<u32>,
}

impl XenShareDev {
    /// Opens `/dev/xenshare`. `domid` is the caller's own domain.
    pub fn open(domid: DomId) -> Result<Self> {
        let fd = sys::open(
            "/dev/xenshare",
            "open /dev/xenshare (is xenshare.ko loaded?)",
        )?;
        sys::set_nonblocking(&fd)?;
        Ok(XenShareDev {
            domid,
            fd: Arc::new(fd),
            fired: VecDeque::new(),
        })
    }

    /// The device (non-blocking), for a program that polls it with its
    /// own descriptors; once readable, [`EventChannels::wait`] with a
    /// deadline already passed collects the events without sleeping.
    pub fn event_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// # Safety
    /// `arg` must be the structure `req` names (uapi/linux/xenshare.h).
    unsafe fn ioctl<T>(&self, req: u64, arg: &mut T, op: &'static str) -> Result<i32> {
        // SAFETY: forwarded to the caller's contract; `arg` is live for the
        // call.
        unsafe { sys::ioctl(&self.fd, req as libc::c_ulong, arg as *mut T, op) }
    }

    fn release(fd: &OwnedFd, offset: u64) {
        let mut r = abi::Release { offset };
        // SAFETY: `r` is `struct xenshare_release`.
        let res = unsafe {
            sys::ioctl(
                fd,
                abi::IOC_RELEASE as libc::c_ulong,
                &mut r,
                "xenshare: release",
            )
        };
        if let Err(e) = res {
            eprintln!("share-hal: {e}");
        }
    }

    fn mmap(&self, offset: u64, count: usize, access: Access) -> Result<*mut u8> {
        let len = count * PAGE_SIZE;
        match access {
            Access::ReadWrite => sys::mmap_shared(&self.fd, len, offset, "mmap of /dev/xenshare"),
            Access::ReadOnly => {
                sys::mmap_shared_read_only(&self.fd, len, offset, "mmap of /dev/xenshare")
            }
        }
    }

    /// Joins the share `share_ref` names through xenshare.ko's share code
    /// (the kernel maps and validates the descriptor and the pages, and
    /// binds the owner's port). `numpages` 0 takes the descriptor's.
    /// The pages are mapped into this process where the kernel can
    /// (auto-translated domains: PVH, HVM); in a PV domain
    /// [`JoinedShare::mem`] is `None` and triggers still work.
    pub fn join(&mut self, share_ref: ShareRef, numpages: u32) -> Result<JoinedShare> {
        let mut j = abi::Join {
            owner: share_ref.owner,
            share_ref: share_ref.descriptor.0,
            numpages,
            ..Default::default()
        };
        // SAFETY: `j` is `struct xenshare_join`.
        unsafe { self.ioctl(abi::IOC_JOIN, &mut j, "xenshare: join") }.map_err(|e| {
            os_error(e, |errno| match errno {
                libc::ENOENT | libc::EACCES => Some(Error::NoGrant {
                    domid: share_ref.owner,
                    gref: share_ref.descriptor,
                }),
                libc::ESRCH => Some(Error::NoSuchDomain {
                    domid: share_ref.owner,
                }),
                _ => None,
            })
        })?;
        let count = j.numpages as usize;
        if count == 0 || count > share_hal::wire::descriptor::MAX_PAGES as usize {
            Self::release(&self.fd, j.offset);
            return Err(Error::Protocol {
                what: "kernel reported a share size out of range",
            });
        }
        let ptr = match self.mmap(j.offset, count, Access::ReadWrite) {
            Ok(p) => Some(p),
            Err(Error::Os { errno, .. }) if errno == libc::EOPNOTSUPP => None,
            Err(e) => {
                Self::release(&self.fd, j.offset);
                return Err(e);
            }
        };
        Ok(JoinedShare {
            fd: self.fd.clone(),
            ptr,
            count,
            offset: j.offset,
            event: Port(j.event),
        })
    }
}

/// A share joined with [`XenShareDev::join`].
pub struct JoinedShare {
    fd: Arc<OwnedFd>,
    ptr: Option<*mut u8>,
    count: usize,
    offset: u64,
    event: Port,
}

impl JoinedShare {
    /// The share's pages, where this domain type lets them be mapped.
    pub fn mem(&self) -> Option<SharedMem<'_>> {
        // SAFETY: our own mapping of `count` pages, unmapped only in drop,
        // which the window's borrow of `self` outlives.
        self.ptr.map(|p| unsafe { mapped_window(p, self.count) })
    }

    pub fn numpages(&self) -> usize {
        self.count
    }

    /// The value `EventChannels::wait` reports when the owner triggers,
    /// and what [`EventChannels::notify`] takes to trigger the owner.
    pub fn event(&self) -> Port {
        self.event
    }
}

impl Drop for JoinedShare {
    fn drop(&mut self) {
        if let Some(p) = self.ptr {
            // SAFETY: our own mapping; `mem()` borrows self.
            unsafe { sys::munmap(p, self.count * PAGE_SIZE) };
        }
        XenShareDev::release(&self.fd, self.offset);
    }
}

/// Pages of this domain allocated through the device.
pub struct XsPages {
    fd: Arc<OwnedFd>,
    ptr: *mut u8,
    count: usize,
    offset: u64,
}

impl PageBlock for XsPages {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: our own mapping of `count` pages, unmapped only in drop,
        // which the window's borrow of `self` outlives.
        unsafe { mapped_window(self.ptr, self.count) }
    }

    fn count(&self) -> usize {
        self.count
    }

    fn frame(&self, index: usize) -> Option<Frame> {
        (index < self.count).then(|| Frame(self.offset / PAGE_SIZE as u64 + index as u64))
    }
}

impl Drop for XsPages {
    fn drop(&mut self) {
        // SAFETY: our own mapping; `mem()` borrows self.
        unsafe { sys::munmap(self.ptr, self.count * PAGE_SIZE) };
        // Pages still granted stay alive in the kernel until revoked.
        XenShareDev::release(&self.fd, self.offset);
    }
}

/// A peer's grants mapped through the device.
pub struct XsMapping {
    fd: Arc<OwnedFd>,
    ptr: *mut u8,
    count: usize,
    offset: u64,
}

impl Mapping for XsMapping {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: as for XsPages.
        unsafe { mapped_window(self.ptr, self.count) }
    }

    fn count(&self) -> usize {
        self.count
    }
}

impl Drop for XsMapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; `mem()` borrows self.
        unsafe { sys::munmap(self.ptr, self.count * PAGE_SIZE) };
        XenShareDev::release(&self.fd, self.offset);
    }
}

impl Memory for XenShareDev {
    type Pages = XsPages;

    fn alloc_pages(&mut self, count: usize) -> Result<XsPages> {
        if count == 0 || count > abi::MAX_OBJECT_PAGES {
            return Err(Error::InvalidArgument {
                what: "page count (1..=1024)",
            });
        }
        let mut a = abi::Alloc {
            count: count as u32,
            ..Default::default()
        };
        // SAFETY: `a` is `struct xenshare_alloc`.
        unsafe { self.ioctl(abi::IOC_ALLOC, &mut a, "xenshare: alloc") }.map_err(|e| {
            os_error(e, |errno| {
                (errno == libc::ENOMEM || errno == libc::ENOSPC).then_some(Error::OutOfMemory)
            })
        })?;
        match self.mmap(a.offset, count, Access::ReadWrite) {
            Ok(ptr) => Ok(XsPages {
                fd: self.fd.clone(),
                ptr,
                count,
                offset: a.offset,
            }),
            Err(e) => {
                Self::release(&self.fd, a.offset);
                Err(e)
            }
        }
    }
}

impl GrantTable for XenShareDev {
    type Mapping = XsMapping;

    fn grant(&mut self, frame: Frame, to: DomId, access: Access) -> Result<GrantRef> {
        let mut g = abi::Grant {
            page: frame.0,
            domid: to,
            flags: if access == Access::ReadOnly {
                abi::READ_ONLY
            } else {
                0
            },
            gref: 0,
        };
        // SAFETY: `g` is `struct xenshare_grant`.
        unsafe { self.ioctl(abi::IOC_GRANT, &mut g, "xenshare: grant") }.map_err(|e| {
            os_error(e, |errno| match errno {
                libc::ENOENT => Some(Error::InvalidArgument {
                    what: "frame not allocated through /dev/xenshare",
                }),
                libc::ENOSPC => Some(Error::GrantTableFull),
                _ => None,
            })
        })?;
        Ok(GrantRef(g.gref))
    }

    fn revoke(&mut self, gref: GrantRef) -> Result<()> {
        let mut r = abi::Revoke {
            gref: gref.0,
            pad: 0,
        };
        // SAFETY: `r` is `struct xenshare_revoke`.
        unsafe { self.ioctl(abi::IOC_REVOKE, &mut r, "xenshare: revoke") }
            .map(drop)
            .map_err(|e| {
                os_error(e, |errno| match errno {
                    libc::EBUSY => Some(Error::GrantInUse { gref }),
                    libc::ENOENT => Some(Error::NoGrant {
                        domid: self.domid,
                        gref,
                    }),
                    _ => None,
                })
            })
    }

    fn map(&mut self, from: DomId, grefs: &[GrantRef], access: Access) -> Result<XsMapping> {
        let count = grefs.len();
        if count == 0 || count > abi::MAX_OBJECT_PAGES {
            return Err(Error::InvalidArgument {
                what: "grant count (1..=1024)",
            });
        }
        let refs: Vec<u32> = grefs.iter().map(|g| g.0).collect();
        let mut m = abi::Map {
            refs: refs.as_ptr() as u64,
            count: count as u32,
            domid: from,
            flags: if access == Access::ReadOnly {
                abi::READ_ONLY
            } else {
                0
            },
            offset: 0,
        };
        let refused = |errno| match errno {
            libc::EACCES => Some(Error::NoGrant {
                domid: from,
                gref: grefs[0],
            }),
            libc::ESRCH => Some(Error::NoSuchDomain { domid: from }),
            libc::ENOSPC | libc::ENOMEM => Some(Error::OutOfMemory),
            _ => None,
        };
        // SAFETY: `m` is `struct xenshare_map`; `refs` outlives the call.
        unsafe { self.ioctl(abi::IOC_MAP, &mut m, "xenshare: map") }
            .map_err(|e| os_error(e, refused))?;
        // A PV domain maps the grants here, so a refusal shows up now.
        match self.mmap(m.offset, count, access) {
            Ok(ptr) => Ok(XsMapping {
                fd: self.fd.clone(),
                ptr,
                count,
                offset: m.offset,
            }),
            Err(e) => {
                Self::release(&self.fd, m.offset);
                Err(os_error(e, refused))
            }
        }
    }

    fn unmap(&mut self, mapping: XsMapping) -> Result<()> {
        drop(mapping);
        Ok(())
    }

    fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()> {
        for chunk in segs.chunks_mut(abi::MAX_COPY_SEGS) {
            let mut raw = Vec::with_capacity(chunk.len());
            let mut slot_of = Vec::with_capacity(chunk.len());
            for (i, s) in chunk.iter_mut().enumerate() {
                match encode_seg(s) {
                    Ok(r) => {
                        raw.push(r);
                        slot_of.push(i);
                    }
                    Err(e) => s.status = CopyStatus::Failed(e),
                }
            }
            if raw.is_empty() {
                continue;
            }
            let mut c = abi::Copy {
                segs: raw.as_mut_ptr() as u64,
                count: raw.len() as u32,
                pad: 0,
            };
            // SAFETY: `c` is `struct xenshare_copy` pointing at `raw`, live
            // and writable for the call (the kernel writes the statuses).
            unsafe { self.ioctl(abi::IOC_COPY, &mut c, "xenshare: grant copy")? };
            for (r, &i) in raw.iter().zip(&slot_of) {
                chunk[i].status = seg_status(&chunk[i], r.status);
            }
        }
        Ok(())
    }
}

impl XenShareDev {
    /// The device's COPY as it is: one batch of at most
    /// [`abi::MAX_COPY_SEGS`] segments in the kernel's own form, each
    /// checked by the kernel, every `status` written back (a GNTST code).
    /// For callers that build segments themselves; [`GrantTable::copy`]
    /// is the checked, typed way.
    pub fn copy_raw(&mut self, segs: &mut [abi::CopySeg]) -> Result<()> {
        if segs.is_empty() || segs.len() > abi::MAX_COPY_SEGS {
            return Err(Error::InvalidArgument {
                what: "copy batch (1..=128 segments)",
            });
        }
        let mut c = abi::Copy {
            segs: segs.as_mut_ptr() as u64,
            count: segs.len() as u32,
            pad: 0,
        };
        // SAFETY: `c` is `struct xenshare_copy` pointing at `segs`, live
        // and writable for the call.
        unsafe { self.ioctl(abi::IOC_COPY, &mut c, "xenshare: grant copy") }.map(drop)
    }

    fn evtchn(&mut self, req: u64, mut e: abi::Evtchn, op: &'static str) -> Result<Port> {
        let remote = e.domid;
        // SAFETY: `e` is `struct xenshare_evtchn`.
        unsafe { self.ioctl(req, &mut e, op) }.map_err(|err| {
            os_error(err, |errno| match errno {
                libc::ESRCH => Some(Error::NoSuchDomain { domid: remote }),
                _ => None,
            })
        })?;
        Ok(Port(e.port))
    }

    fn port_op(&mut self, req: u64, port: Port, op: &'static str) -> Result<()> {
        let mut a = abi::PortArg {
            port: port.0,
            pad: 0,
        };
        // SAFETY: `a` is `struct xenshare_port`.
        unsafe { self.ioctl(req, &mut a, op) }
            .map(drop)
            .map_err(|_| Error::BadPort { port })
    }

    fn read_events(&mut self) -> Result<()> {
        let mut evs = [0u32; 64];
        let n = sys::read_ports(&self.fd, &mut evs).map_err(|e| match e {
            Error::Os { errno, .. } => Error::Os {
                op: "read of /dev/xenshare",
                errno,
            },
            e => e,
        })?;
        self.fired.extend(&evs[..n]);
        Ok(())
    }
}

impl EventChannels for XenShareDev {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Port> {
        let e = abi::Evtchn {
            domid: remote,
            ..Default::default()
        };
        self.evtchn(
            abi::IOC_EVTCHN_ALLOC_UNBOUND,
            e,
            "xenshare: allocate unbound port",
        )
    }

    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port> {
        let e = abi::Evtchn {
            domid: remote,
            remote_port: remote_port.0,
            ..Default::default()
        };
        self.evtchn(abi::IOC_EVTCHN_BIND, e, "xenshare: bind interdomain")
    }

    /// Also triggers a joined share's owner, given [`JoinedShare::event`].
    fn notify(&mut self, port: Port) -> Result<()> {
        self.port_op(abi::IOC_NOTIFY, port, "xenshare: notify")
    }

    fn close(&mut self, port: Port) -> Result<()> {
        self.fired.retain(|&p| p != port.0);
        self.port_op(abi::IOC_EVTCHN_CLOSE, port, "xenshare: close port")
    }

    fn wait(&mut self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()> {
        loop {
            self.read_events()?;
            if !self.fired.is_empty() {
                // The kernel reports each source once per read already.
                for p in self.fired.drain(..) {
                    fired(Port(p));
                }
                return Ok(());
            }
            let timeout_ms = poll_timeout_ms(deadline_ns, self.now_ns())?;
            sys::poll_readable(&self.fd, timeout_ms)?;
        }
    }
}

impl Clock for XenShareDev {
    fn now_ns(&self) -> u64 {
        sys::monotonic_ns()
    }
}

impl Platform for XenShareDev {
    fn domid(&self) -> DomId {
        self.domid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ioctl number, size and offset against what a C compiler
    /// makes of `guest-drivers/include/uapi/linux/xenshare.h`, the header
    /// the module is built with.
    #[test]
    fn abi_matches_the_c_header() {
        let include = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest-drivers/include");
        let dir = std::env::temp_dir().join(format!("share-hal-xenshare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("abi.c");
        std::fs::write(
            &src,
            r#"#include <stdio.h>
#include <stddef.h>
#include "uapi/linux/xenshare.h"
#define N(x) printf("%lu\n", (unsigned long)(x))
int main(void) {
    N(XENSHARE_IOC_ALLOC); N(XENSHARE_IOC_RELEASE); N(XENSHARE_IOC_GRANT);
    N(XENSHARE_IOC_REVOKE); N(XENSHARE_IOC_MAP); N(XENSHARE_IOC_JOIN);
    N(XENSHARE_IOC_COPY); N(XENSHARE_IOC_EVTCHN_ALLOC_UNBOUND);
    N(XENSHARE_IOC_EVTCHN_BIND); N(XENSHARE_IOC_NOTIFY); N(XENSHARE_IOC_EVTCHN_CLOSE);
    N(sizeof(struct xenshare_copy_ptr)); N(sizeof(struct xenshare_copy_seg));
    N(offsetof(struct xenshare_copy_seg, len)); N(offsetof(struct xenshare_copy_seg, status));
    N(offsetof(struct xenshare_join, event)); N(offsetof(struct xenshare_map, domid));
    N(XENSHARE_MAX_OBJECT_PAGES); N(XENSHARE_MAX_COPY_SEGS); N(XENSHARE_EVENT_SHARE);
    N(XENSHARE_READ_ONLY); N(XENSHARE_COPY_SRC_FOREIGN); N(XENSHARE_COPY_DST_FOREIGN);
    return 0;
}
"#,
        )
        .unwrap();
        let exe = dir.join("abi");
        let status = std::process::Command::new("cc")
            .arg("-I")
            .arg(include)
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status()
            .expect("a C compiler is required to check the ABI");
        assert!(status.success(), "compiling the ABI check failed");
        let out = std::process::Command::new(&exe).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let got: Vec<u64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let want: Vec<u64> = vec![
            abi::IOC_ALLOC,
            abi::IOC_RELEASE,
            abi::IOC_GRANT,
            abi::IOC_REVOKE,
            abi::IOC_MAP,
            abi::IOC_JOIN,
            abi::IOC_COPY,
            abi::IOC_EVTCHN_ALLOC_UNBOUND,
            abi::IOC_EVTCHN_BIND,
            abi::IOC_NOTIFY,
            abi::IOC_EVTCHN_CLOSE,
            size_of::<abi::CopyPtr>() as u64,
            size_of::<abi::CopySeg>() as u64,
            std::mem::offset_of!(abi::CopySeg, len) as u64,
            std::mem::offset_of!(abi::CopySeg, status) as u64,
            std::mem::offset_of!(abi::Join, event) as u64,
            std::mem::offset_of!(abi::Map, domid) as u64,
            abi::MAX_OBJECT_PAGES as u64,
            abi::MAX_COPY_SEGS as u64,
            abi::EVENT_SHARE.into(),
            abi::READ_ONLY.into(),
            abi::COPY_SRC_FOREIGN.into(),
            abi::COPY_DST_FOREIGN.into(),
        ];
        assert_eq!(got, want);
        // The numbers as the header's table in docs/xenshare-uapi.md lists them.
        assert_eq!(abi::IOC_ALLOC, 0xc010_58a0);
        assert_eq!(abi::IOC_COPY, 0x4010_58a6);
    }

    #[test]
    fn structures_have_the_c_layout() {
        assert_eq!(size_of::<abi::Alloc>(), 16);
        assert_eq!(size_of::<abi::Release>(), 8);
        assert_eq!(size_of::<abi::Grant>(), 16);
        assert_eq!(size_of::<abi::Revoke>(), 8);
        assert_eq!(size_of::<abi::Map>(), 24);
        assert_eq!(size_of::<abi::Join>(), 24);
        assert_eq!(size_of::<abi::Copy>(), 16);
        assert_eq!(size_of::<abi::Evtchn>(), 16);
        assert_eq!(size_of::<abi::PortArg>(), 8);
    }

    fn seg(src: CopyPtr, dst: CopyPtr, len: u16) -> CopySeg {
        CopySeg {
            src,
            dst,
            len,
            status: CopyStatus::Pending,
        }
    }

    #[test]
    fn copy_segments_name_local_pages_by_frame_and_peers_by_grant() {
        let s = seg(
            CopyPtr::Local {
                frame: Frame(17),
                offset: 96,
            },
            CopyPtr::Foreign {
                domid: 5,
                gref: GrantRef(300),
                offset: 8,
            },
            4000,
        );
        let r = encode_seg(&s).unwrap();
        assert_eq!(
            r,
            abi::CopySeg {
                src: abi::CopyPtr {
                    page: 17,
                    gref: 0,
                    domid: 0,
                    offset: 96
                },
                dst: abi::CopyPtr {
                    page: 0,
                    gref: 300,
                    domid: 5,
                    offset: 8
                },
                len: 4000,
                flags: abi::COPY_DST_FOREIGN,
                status: 0,
                pad: 0,
            }
        );
        let back = seg(s.dst, s.src, 4000);
        assert_eq!(encode_seg(&back).unwrap().flags, abi::COPY_SRC_FOREIGN);
    }

    #[test]
    fn copy_segments_that_leave_a_page_never_reach_the_kernel() {
        let local = CopyPtr::Local {
            frame: Frame(1),
            offset: 4000,
        };
        let foreign = CopyPtr::Foreign {
            domid: 1,
            gref: GrantRef(2),
            offset: 0,
        };
        assert!(encode_seg(&seg(local, foreign, 96)).is_ok());
        assert!(encode_seg(&seg(local, foreign, 97)).is_err());
        assert!(encode_seg(&seg(foreign, local, 97)).is_err());
        assert!(encode_seg(&seg(foreign, foreign, 0)).is_err());
    }

    #[test]
    fn segment_statuses_become_typed_errors() {
        let s = seg(
            CopyPtr::Foreign {
                domid: 3,
                gref: GrantRef(9),
                offset: 0,
            },
            CopyPtr::Local {
                frame: Frame(1),
                offset: 0,
            },
            8,
        );
        assert_eq!(seg_status(&s, 0), CopyStatus::Done);
        assert_eq!(
            seg_status(&s, -3),
            CopyStatus::Failed(Error::NoGrant {
                domid: 3,
                gref: GrantRef(9)
            })
        );
        assert_eq!(
            seg_status(&s, -2),
            CopyStatus::Failed(Error::NoSuchDomain { domid: 3 })
        );
    }

    #[test]
    fn opening_without_the_module_names_it() {
        if std::path::Path::new("/dev/xenshare").exists() {
            return;
        }
        let e = XenShareDev::open(0).err().expect("no /dev/xenshare here");
        assert!(e.to_string().contains("xenshare"), "{e}");
    }
}
