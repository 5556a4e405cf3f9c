//! Linux userspace on Xen: the platform of dom0 tools (and of programs in
//! Linux domUs), over `/dev/xen/gntdev`, `/dev/xen/gntalloc` and
//! `/dev/xen/evtchn`.
//!
//! Linux userspace cannot grant an arbitrary page it already has: gntalloc
//! allocates pages that are granted to one domain from birth. So
//! [`GrantTable::grant`] and [`GrantTable::revoke`] are unsupported here and
//! [`LinuxXen::alloc_granted`] is the way to give pages to a domain; mapping
//! foreign grants, grant copy and event channels are complete.
//!
//! [`xenshare::XenShareDev`] is the whole platform over `/dev/xenshare`
//! (xenshare.ko), where a domain has that module: any allocated page can be
//! granted and revoked, so a Linux program can own shares too.
#![deny(unsafe_op_in_unsafe_fn)]

mod sys;
pub mod xenshare;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;

use share_hal::error::{Error, Result};
use share_hal::platform::{
    Access, Clock, CopyPtr, CopySeg, CopyStatus, DomId, EventChannels, Frame, GrantRef, GrantTable,
    Mapping, Memory, PageBlock, Platform, Port, PAGE_SIZE,
};
use share_hal::volatile::SharedMem;

/// Most segments handed to the kernel in one grant-copy ioctl.
const COPY_BATCH: usize = 256;

/// Xen's GNTST_* codes (`xen/grant_table.h`) that mean "no such grant for
/// you" (-4 is GNTST_bad_handle, which grant copy never returns).
const GNTST_BAD_GNTREF: i16 = -3;
const GNTST_PERMISSION_DENIED: i16 = -8;
const GNTST_BAD_DOMAIN: i16 = -2;

/// The Linux userspace platform.
pub struct LinuxXen {
    domid: DomId,
    gntdev: Arc<OwnedFd>,
    gntalloc: Option<Arc<OwnedFd>>,
    evtchn: OwnedFd,
    fired: VecDeque<u32>,
}

impl LinuxXen {
    /// Opens the Xen devices. `domid` is the caller's own domain (0 in dom0).
    ///
    /// `/dev/xen/gntalloc` is optional (only [`alloc_granted`] needs it).
    ///
    /// [`alloc_granted`]: LinuxXen::alloc_granted
    pub fn open(domid: DomId) -> Result<Self> {
        let gntdev = sys::open(
            "/dev/xen/gntdev",
            "open /dev/xen/gntdev (is xen-gntdev loaded?)",
        )?;
        let evtchn = sys::open(
            "/dev/xen/evtchn",
            "open /dev/xen/evtchn (is xen-evtchn loaded?)",
        )?;
        sys::set_nonblocking(&evtchn)?;
        let gntalloc = sys::open("/dev/xen/gntalloc", "open /dev/xen/gntalloc")
            .ok()
            .map(Arc::new);
        Ok(LinuxXen {
            domid,
            gntdev: Arc::new(gntdev),
            gntalloc,
            evtchn,
            fired: VecDeque::new(),
        })
    }

    /// `/dev/xen/evtchn` (non-blocking), for a program that polls it
    /// together with its own descriptors. Once it is readable, call
    /// [`EventChannels::wait`] with a deadline already passed: it reads and
    /// unmasks the fired ports without sleeping.
    pub fn event_fd(&self) -> BorrowedFd<'_> {
        self.evtchn.as_fd()
    }

    /// Allocates `count` zeroed pages granted to `to` (gntalloc). The grants
    /// end when the returned value is dropped; Linux keeps a page that `to`
    /// still maps until it unmaps it, and never reuses it before.
    pub fn alloc_granted(
        &mut self,
        to: DomId,
        count: usize,
        access: Access,
    ) -> Result<GrantedPages> {
        let fd = self.gntalloc.clone().ok_or(Error::Unsupported {
            op: "granting pages",
            why: "/dev/xen/gntalloc could not be opened (is xen-gntalloc loaded?)",
        })?;
        if count == 0 || count > 1024 {
            return Err(Error::InvalidArgument {
                what: "page count (1..=1024)",
            });
        }
        // Header (16 bytes) then `count` u32 grant ids, 8-aligned.
        let mut buf = vec![0u64; 2 + count.div_ceil(2)];
        let req = buf.as_mut_ptr().cast::<sys::GntallocAlloc<1>>();
        // SAFETY: `buf` is 8-aligned and large enough for the header and
        // `count` gref slots; the ioctl reads the header and writes the ids.
        let grefs = unsafe {
            (*req).domid = to;
            (*req).flags = if access == Access::ReadWrite {
                sys::GNTALLOC_FLAG_WRITABLE
            } else {
                0
            };
            (*req).count = count as u32;
            sys::ioctl(
                &fd,
                sys::IOCTL_GNTALLOC_ALLOC_GREF,
                req,
                "gntalloc: grant pages",
            )?;
            let ids = std::ptr::addr_of!((*req).gref_ids).cast::<u32>();
            (0..count)
                .map(|i| GrantRef(ids.add(i).read()))
                .collect::<Vec<_>>()
        };
        // SAFETY: the ioctl succeeded, so the header's index field is set.
        let index = unsafe { (*req).index };
        let ptr = match sys::mmap_shared(&fd, count * PAGE_SIZE, index, "mmap of granted pages") {
            Ok(p) => p,
            Err(e) => {
                let mut d = sys::GntallocDealloc {
                    index,
                    count: count as u32,
                };
                // SAFETY: `d` is the dealloc request the header defines.
                let _ = unsafe {
                    sys::ioctl(
                        &fd,
                        sys::IOCTL_GNTALLOC_DEALLOC_GREF,
                        &mut d,
                        "gntalloc: end grants",
                    )
                };
                return Err(e);
            }
        };
        Ok(GrantedPages {
            fd,
            ptr,
            count,
            index,
            grefs,
        })
    }
}

/// The window over `count` pages this module mapped at `ptr`.
///
/// # Safety
/// `ptr` must be a live mapping of `count` pages made by `sys::mmap_*`, not
/// unmapped before the window's lifetime `'a` ends, and reached only through
/// `SharedMem`.
unsafe fn mapped_window<'a>(ptr: *mut u8, count: usize) -> SharedMem<'a> {
    // mmap reports failure as MAP_FAILED, never as a null address.
    let ptr = NonNull::new(ptr).expect("mmap never returns null");
    // SAFETY: forwarded to the caller's contract.
    unsafe { SharedMem::new(ptr, count * PAGE_SIZE) }
}

/// Pages granted to one domain through gntalloc.
pub struct GrantedPages {
    fd: Arc<OwnedFd>,
    ptr: *mut u8,
    count: usize,
    index: u64,
    grefs: Vec<GrantRef>,
}

impl GrantedPages {
    /// The grant reference of each page, in order.
    pub fn grefs(&self) -> &[GrantRef] {
        &self.grefs
    }

    pub fn mem(&self) -> SharedMem<'_> {
        // SAFETY: `ptr` is our own mapping of `count` pages, unmapped only
        // in drop, which the window's borrow of `self` outlives.
        unsafe { mapped_window(self.ptr, self.count) }
    }
}

/// Pages granted through gntalloc are the caller's own pages too: a frame
/// is the virtual page number, as for [`LinuxPages`], so they can be the
/// local side of grant copies and hold structures such as a vdevice page.
impl PageBlock for GrantedPages {
    fn mem(&self) -> SharedMem<'_> {
        GrantedPages::mem(self)
    }

    fn count(&self) -> usize {
        self.count
    }

    fn frame(&self, index: usize) -> Option<Frame> {
        (index < self.count).then(|| Frame((self.ptr as u64 / PAGE_SIZE as u64) + index as u64))
    }
}

impl Drop for GrantedPages {
    fn drop(&mut self) {
        // SAFETY: our own mapping; `mem()` borrows self, so none outlives us.
        unsafe { sys::munmap(self.ptr, self.count * PAGE_SIZE) };
        let mut d = sys::GntallocDealloc {
            index: self.index,
            count: self.count as u32,
        };
        // SAFETY: `d` is the dealloc request the header defines.
        if let Err(e) = unsafe {
            sys::ioctl(
                &self.fd,
                sys::IOCTL_GNTALLOC_DEALLOC_GREF,
                &mut d,
                "gntalloc: end grants",
            )
        } {
            eprintln!("share-hal: {e}");
        }
    }
}

/// The caller's own pages (anonymous memory), usable as the local side of
/// grant copies.
pub struct LinuxPages {
    ptr: *mut u8,
    count: usize,
}

impl PageBlock for LinuxPages {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: `ptr` is our own mapping of `count` pages, unmapped only
        // in drop, which the window's borrow of `self` outlives.
        unsafe { mapped_window(self.ptr, self.count) }
    }

    fn count(&self) -> usize {
        self.count
    }

    /// Userspace has no guest frame numbers; a frame here is the virtual
    /// page number, which is what the gntdev grant-copy ioctl takes.
    fn frame(&self, index: usize) -> Option<Frame> {
        (index < self.count).then(|| Frame((self.ptr as u64 / PAGE_SIZE as u64) + index as u64))
    }
}

impl Drop for LinuxPages {
    fn drop(&mut self) {
        // SAFETY: our own mapping; `mem()` borrows self, so none outlives us.
        unsafe { sys::munmap(self.ptr, self.count * PAGE_SIZE) };
    }
}

/// Foreign pages mapped with gntdev.
pub struct LinuxMapping {
    fd: Arc<OwnedFd>,
    ptr: *mut u8,
    count: usize,
    index: u64,
}

impl Mapping for LinuxMapping {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: `ptr` is our own mapping of `count` pages, unmapped only
        // in drop, which the window's borrow of `self` outlives.
        unsafe { mapped_window(self.ptr, self.count) }
    }

    fn count(&self) -> usize {
        self.count
    }
}

impl Drop for LinuxMapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; `mem()` borrows self, so none outlives us.
        unsafe { sys::munmap(self.ptr, self.count * PAGE_SIZE) };
        let mut u = sys::GntdevUnmap {
            index: self.index,
            count: self.count as u32,
            pad: 0,
        };
        // SAFETY: `u` is the unmap request the header defines.
        if let Err(e) = unsafe {
            sys::ioctl(
                &self.fd,
                sys::IOCTL_GNTDEV_UNMAP_GRANT_REF,
                &mut u,
                "gntdev: unmap",
            )
        } {
            eprintln!("share-hal: {e}");
        }
    }
}

impl Memory for LinuxXen {
    type Pages = LinuxPages;

    fn alloc_pages(&mut self, count: usize) -> Result<LinuxPages> {
        if count == 0 {
            return Err(Error::InvalidArgument {
                what: "page count 0",
            });
        }
        let len = count.checked_mul(PAGE_SIZE).ok_or(Error::OutOfMemory)?;
        Ok(LinuxPages {
            ptr: sys::mmap_anon(len)?,
            count,
        })
    }
}

/// poll(2)'s timeout for a wait until `deadline_ns` (none: -1, forever),
/// rounded up to whole milliseconds so a wait never ends early;
/// `TimedOut` once the deadline has passed.
fn poll_timeout_ms(deadline_ns: Option<u64>, now_ns: u64) -> Result<i32> {
    match deadline_ns {
        None => Ok(-1),
        Some(d) if now_ns >= d => Err(Error::TimedOut),
        Some(d) => Ok(i32::try_from((d - now_ns).div_ceil(1_000_000)).unwrap_or(i32::MAX)),
    }
}

fn foreign_error(code: i16, domid: DomId, gref: GrantRef) -> Error {
    match code {
        GNTST_BAD_GNTREF | GNTST_PERMISSION_DENIED => Error::NoGrant { domid, gref },
        GNTST_BAD_DOMAIN => Error::NoSuchDomain { domid },
        _ => Error::Hypervisor {
            op: "grant copy",
            code: code.into(),
        },
    }
}

fn copy_side(p: &CopyPtr, len: u16) -> Result<(sys::CopySide, u16)> {
    match *p {
        CopyPtr::Local { frame, offset } => {
            let addr = frame
                .0
                .checked_mul(PAGE_SIZE as u64)
                .and_then(|a| a.checked_add(offset.into()));
            let addr = addr.ok_or(Error::InvalidArgument {
                what: "local frame",
            })?;
            Ok((
                sys::CopySide {
                    virt: addr as *mut u8,
                },
                0,
            ))
        }
        CopyPtr::Foreign {
            domid,
            gref,
            offset,
        } => {
            if usize::from(offset) + usize::from(len) > PAGE_SIZE {
                return Err(Error::InvalidArgument {
                    what: "copy segment crosses a foreign page",
                });
            }
            Ok((
                sys::CopySide {
                    foreign: sys::ForeignSide {
                        gref: gref.0,
                        offset,
                        domid,
                    },
                },
                1,
            ))
        }
    }
}

impl GrantTable for LinuxXen {
    type Mapping = LinuxMapping;

    fn grant(&mut self, _frame: Frame, _to: DomId, _access: Access) -> Result<GrantRef> {
        Err(Error::Unsupported {
            op: "granting an existing page",
            why: "Linux userspace grants only fresh pages: use LinuxXen::alloc_granted",
        })
    }

    fn revoke(&mut self, _gref: GrantRef) -> Result<()> {
        Err(Error::Unsupported {
            op: "revoking one grant",
            why: "grants from LinuxXen::alloc_granted end when their GrantedPages is dropped",
        })
    }

    fn map(&mut self, from: DomId, grefs: &[GrantRef], access: Access) -> Result<LinuxMapping> {
        let count = grefs.len();
        if count == 0 || count > 1024 {
            return Err(Error::InvalidArgument {
                what: "grant count (1..=1024)",
            });
        }
        // Header (16 bytes) then `count` {domid, ref} pairs of 8 bytes.
        let mut buf = vec![0u64; 2 + count];
        let req = buf.as_mut_ptr().cast::<sys::GntdevMap<1>>();
        // SAFETY: `buf` is 8-aligned with room for the header and `count`
        // references; the ioctl reads them and writes `index`.
        let index = unsafe {
            (*req).count = count as u32;
            let refs = std::ptr::addr_of_mut!((*req).refs).cast::<sys::GntdevGrantRef>();
            for (i, g) in grefs.iter().enumerate() {
                refs.add(i).write(sys::GntdevGrantRef {
                    domid: from.into(),
                    gref: g.0,
                });
            }
            sys::ioctl(
                &self.gntdev,
                sys::IOCTL_GNTDEV_MAP_GRANT_REF,
                req,
                "gntdev: reserve mapping",
            )?;
            (*req).index
        };
        // A read-only grant (a share descriptor) is mapped read-only, as
        // the simulation does: the window reads; a write through it faults.
        let ptr = match access {
            Access::ReadWrite => sys::mmap_shared(
                &self.gntdev,
                count * PAGE_SIZE,
                index,
                "mmap of foreign grants",
            ),
            Access::ReadOnly => sys::mmap_shared_read_only(
                &self.gntdev,
                count * PAGE_SIZE,
                index,
                "read-only mmap of foreign grants",
            ),
        };
        match ptr {
            Ok(ptr) => Ok(LinuxMapping {
                fd: self.gntdev.clone(),
                ptr,
                count,
                index,
            }),
            Err(e) => {
                let mut u = sys::GntdevUnmap {
                    index,
                    count: count as u32,
                    pad: 0,
                };
                // SAFETY: `u` is the unmap request the header defines.
                let _ = unsafe {
                    sys::ioctl(
                        &self.gntdev,
                        sys::IOCTL_GNTDEV_UNMAP_GRANT_REF,
                        &mut u,
                        "gntdev: unmap",
                    )
                };
                // The hypervisor refuses the map itself at mmap time.
                Err(match e {
                    Error::Os { errno, .. } if errno == libc::EINVAL || errno == libc::EFAULT => {
                        Error::NoGrant {
                            domid: from,
                            gref: grefs[0],
                        }
                    }
                    e => e,
                })
            }
        }
    }

    fn unmap(&mut self, mapping: LinuxMapping) -> Result<()> {
        drop(mapping);
        Ok(())
    }

    fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()> {
        for chunk in segs.chunks_mut(COPY_BATCH) {
            let mut raw = Vec::with_capacity(chunk.len());
            let mut slot_of = Vec::with_capacity(chunk.len());
            for (i, s) in chunk.iter_mut().enumerate() {
                let sides =
                    copy_side(&s.src, s.len).and_then(|src| Ok((src, copy_side(&s.dst, s.len)?)));
                match sides {
                    Ok(((source, fs), (dest, fd))) => {
                        let flags = (fs * sys::GNTCOPY_SOURCE_GREF) | (fd * sys::GNTCOPY_DEST_GREF);
                        raw.push(sys::GntdevCopySegment {
                            source,
                            dest,
                            len: s.len,
                            flags,
                            status: 0,
                        });
                        slot_of.push(i);
                    }
                    Err(e) => s.status = CopyStatus::Failed(e),
                }
            }
            if raw.is_empty() {
                continue;
            }
            let mut req = sys::GntdevCopy {
                count: raw.len() as u32,
                segments: raw.as_mut_ptr(),
            };
            // SAFETY: `req` points at `raw`, live for the call; local sides
            // are addresses of the caller's own pages (`LinuxPages` frames),
            // which the kernel checks with access_ok/get_user_pages.
            unsafe {
                sys::ioctl(
                    &self.gntdev,
                    sys::IOCTL_GNTDEV_GRANT_COPY,
                    &mut req,
                    "gntdev: grant copy",
                )?
            };
            for (r, &i) in raw.iter().zip(&slot_of) {
                let s = &mut chunk[i];
                s.status = if r.status == 0 {
                    CopyStatus::Done
                } else {
                    let (domid, gref) = match (s.src, s.dst) {
                        (CopyPtr::Foreign { domid, gref, .. }, _)
                        | (_, CopyPtr::Foreign { domid, gref, .. }) => (domid, gref),
                        _ => (0, GrantRef(0)),
                    };
                    CopyStatus::Failed(foreign_error(r.status, domid, gref))
                };
            }
        }
        Ok(())
    }
}

impl EventChannels for LinuxXen {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Port> {
        let mut a: u32 = remote.into();
        // SAFETY: the argument is `struct ioctl_evtchn_bind_unbound_port`.
        let port = unsafe {
            sys::ioctl(
                &self.evtchn,
                sys::IOCTL_EVTCHN_BIND_UNBOUND_PORT,
                &mut a,
                "evtchn: allocate unbound port",
            )?
        };
        Ok(Port(port as u32))
    }

    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port> {
        let mut a: [u32; 2] = [remote.into(), remote_port.0];
        // SAFETY: the argument is `struct ioctl_evtchn_bind_interdomain`.
        let port = unsafe {
            sys::ioctl(
                &self.evtchn,
                sys::IOCTL_EVTCHN_BIND_INTERDOMAIN,
                &mut a,
                "evtchn: bind interdomain",
            )?
        };
        Ok(Port(port as u32))
    }

    fn notify(&mut self, port: Port) -> Result<()> {
        let mut a = port.0;
        // SAFETY: the argument is `struct ioctl_evtchn_notify`.
        unsafe {
            sys::ioctl(
                &self.evtchn,
                sys::IOCTL_EVTCHN_NOTIFY,
                &mut a,
                "evtchn: notify",
            )
        }
        .map(drop)
        .map_err(|_| Error::BadPort { port })
    }

    fn close(&mut self, port: Port) -> Result<()> {
        let mut a = port.0;
        // SAFETY: the argument is `struct ioctl_evtchn_unbind`.
        unsafe {
            sys::ioctl(
                &self.evtchn,
                sys::IOCTL_EVTCHN_UNBIND,
                &mut a,
                "evtchn: unbind",
            )
        }
        .map(drop)
        .map_err(|_| Error::BadPort { port })
    }

    fn wait(&mut self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()> {
        loop {
            let mut ports = [0u32; 64];
            let n = sys::read_ports(&self.evtchn, &mut ports)?;
            if n > 0 {
                // Unmask first: a trigger arriving after this is kept pending.
                sys::unmask_ports(&self.evtchn, &ports[..n])?;
                self.fired.extend(&ports[..n]);
            }
            if !self.fired.is_empty() {
                let mut seen = Vec::new();
                for p in self.fired.drain(..) {
                    if !seen.contains(&p) {
                        seen.push(p);
                        fired(Port(p));
                    }
                }
                return Ok(());
            }
            let timeout_ms = poll_timeout_ms(deadline_ns, self.now_ns())?;
            sys::poll_readable(&self.evtchn, timeout_ms)?;
        }
    }
}

impl Clock for LinuxXen {
    fn now_ns(&self) -> u64 {
        sys::monotonic_ns()
    }
}

impl Platform for LinuxXen {
    fn domid(&self) -> DomId {
        self.domid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeout_rounds_up_and_times_out_at_the_deadline() {
        assert_eq!(poll_timeout_ms(None, 5).unwrap(), -1);
        assert_eq!(poll_timeout_ms(Some(1_000_001), 0).unwrap(), 2);
        assert_eq!(poll_timeout_ms(Some(2_000_000), 1_000_000).unwrap(), 1);
        assert_eq!(poll_timeout_ms(Some(u64::MAX), 0).unwrap(), i32::MAX);
        assert!(matches!(poll_timeout_ms(Some(7), 7), Err(Error::TimedOut)));
        assert!(matches!(poll_timeout_ms(Some(7), 8), Err(Error::TimedOut)));
    }

    #[test]
    fn own_pages_are_frames_of_virtual_pages() {
        let p = LinuxPages {
            ptr: sys::mmap_anon(2 * PAGE_SIZE).unwrap(),
            count: 2,
        };
        let f0 = p.frame(0).unwrap();
        assert_eq!(p.frame(1), Some(Frame(f0.0 + 1)));
        assert_eq!(p.frame(2), None);
        p.mem().write_u32(PAGE_SIZE, 5).unwrap();
        assert_eq!(p.mem().read_u32(PAGE_SIZE), Ok(5));
    }

    #[test]
    fn foreign_copy_sides_must_stay_in_one_page() {
        let p = CopyPtr::Foreign {
            domid: 1,
            gref: GrantRef(8),
            offset: 4000,
        };
        assert!(copy_side(&p, 96).is_ok());
        assert_eq!(
            copy_side(&p, 97).err(),
            Some(Error::InvalidArgument {
                what: "copy segment crosses a foreign page"
            })
        );
    }

    /// The status codes as `xen/grant_table.h` defines them: a copy from a
    /// reference the peer never granted (GNTST_bad_gntref, -3) is NoGrant,
    /// not an anonymous hypervisor error.
    #[test]
    fn grant_copy_statuses_map_to_typed_errors() {
        let g = GrantRef(77);
        assert_eq!(
            foreign_error(-3, 4, g),
            Error::NoGrant { domid: 4, gref: g }
        );
        assert_eq!(
            foreign_error(-8, 4, g),
            Error::NoGrant { domid: 4, gref: g }
        );
        assert_eq!(foreign_error(-2, 4, g), Error::NoSuchDomain { domid: 4 });
        assert_eq!(
            foreign_error(-4, 4, g),
            Error::Hypervisor {
                op: "grant copy",
                code: -4
            }
        );
    }

    #[test]
    fn opening_without_xen_says_which_device_is_missing() {
        if std::path::Path::new("/dev/xen/gntdev").exists() {
            return; // running inside a Xen domain: nothing to show here
        }
        let e = LinuxXen::open(0)
            .err()
            .expect("no Xen devices on this host");
        assert!(e.to_string().contains("/dev/xen/gntdev"), "{e}");
    }
}
