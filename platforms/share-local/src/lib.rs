//! An in-process platform: several domains in one address space and one
//! thread, with the grant and event-channel rules of the others but no
//! broker and no system calls.
//!
//! It exists to run protocol code at full speed where processes would
//! measure the simulation instead of the code (the switch core's
//! ns/frame), and to fuzz code that needs a platform (a fuzz target cannot
//! fork a broker per input). It is not an isolation boundary: every
//! domain's pages live in this process. The rules it does check:
//! - a map or copy names a grant that exists, was made to the caller, and
//!   allows the access; a revoke fails while the grant is mapped;
//! - a local copy pointer names a frame the caller owns;
//! - event ports are per domain, bound before use, and closed ports fire
//!   nothing.
//!
//! Time is virtual: it starts at 0 and moves only when a wait with a
//! deadline finds nothing pending (it jumps to the deadline), or by
//! [`LocalHost::advance`].
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ptr::NonNull;

use share_hal::error::{Error, Result};
use share_hal::platform::{
    Access, Clock, CopyPtr, CopySeg, CopyStatus, DomId, EventChannels, Frame, GrantRef, GrantTable,
    Mapping, Memory, PageBlock, Platform, Port, PAGE_SIZE,
};
use share_hal::volatile::SharedMem;

struct Grant {
    frame: u64,
    to: DomId,
    access: Access,
    maps: u32,
}

#[derive(Clone, Copy)]
enum PortEnd {
    Unbound { remote: DomId },
    Bound { remote: DomId, remote_port: u32 },
}

#[derive(Default)]
struct World {
    /// Frame (page address >> 12) to owning domain.
    frames: BTreeMap<u64, DomId>,
    grants: BTreeMap<(DomId, u32), Grant>,
    next_gref: BTreeMap<DomId, u32>,
    ports: BTreeMap<(DomId, u32), PortEnd>,
    next_port: BTreeMap<DomId, u32>,
    pending: BTreeMap<DomId, BTreeSet<u32>>,
    now_ns: u64,
}

/// The shared world of a set of in-process domains.
#[derive(Clone, Default)]
pub struct LocalHost {
    world: Rc<RefCell<World>>,
}

impl LocalHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle for domain `domid` (several handles of one domain share
    /// its grants and ports).
    pub fn domain(&self, domid: DomId) -> LocalPlatform {
        LocalPlatform {
            world: self.world.clone(),
            domid,
        }
    }

    /// Moves virtual time forward.
    pub fn advance(&self, ns: u64) {
        let mut w = self.world.borrow_mut();
        w.now_ns = w.now_ns.saturating_add(ns);
    }
}

/// One domain of a [`LocalHost`].
pub struct LocalPlatform {
    world: Rc<RefCell<World>>,
    domid: DomId,
}

/// Pages of a local domain: one zeroed, page-aligned allocation.
pub struct LocalPages {
    ptr: NonNull<u8>,
    count: usize,
    world: Rc<RefCell<World>>,
}

impl PageBlock for LocalPages {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the allocation lives as long as self, and this module
        // never makes a Rust reference into it.
        unsafe { SharedMem::new(self.ptr, self.count * PAGE_SIZE) }
    }
    fn count(&self) -> usize {
        self.count
    }
    fn frame(&self, index: usize) -> Option<Frame> {
        (index < self.count)
            .then(|| Frame(((self.ptr.as_ptr() as usize) >> 12) as u64 + index as u64))
    }
}

impl Drop for LocalPages {
    fn drop(&mut self) {
        let first = (self.ptr.as_ptr() as usize >> 12) as u64;
        let mut w = self.world.borrow_mut();
        for f in first..first + self.count as u64 {
            w.frames.remove(&f);
        }
        // Shares forget pages that are still granted instead of dropping
        // them, so no mapping outlives this.
        if let Ok(layout) = Layout::from_size_align(self.count * PAGE_SIZE, PAGE_SIZE) {
            // SAFETY: allocated in alloc_pages with this very layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

/// Granted pages mapped by the grantee: a window onto the granter's
/// allocation (one address space).
pub struct LocalMapping {
    ptr: NonNull<u8>,
    count: usize,
    grants: Vec<(DomId, u32)>,
}

impl Mapping for LocalMapping {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the granter cannot free or reuse pages whose grants are
        // mapped (revoke fails, shares forget such pages).
        unsafe { SharedMem::new(self.ptr, self.count * PAGE_SIZE) }
    }
    fn count(&self) -> usize {
        self.count
    }
}

impl LocalPlatform {
    fn no_grant(&self, domid: DomId, gref: GrantRef) -> Error {
        let _ = self;
        Error::NoGrant { domid, gref }
    }

    /// The frame behind a copy pointer, checked against the caller's rights.
    fn resolve(&self, w: &World, ptr: &CopyPtr, write: bool) -> Result<(u64, u16)> {
        match *ptr {
            CopyPtr::Local { frame, offset } => match w.frames.get(&frame.0) {
                Some(&d) if d == self.domid => Ok((frame.0, offset)),
                _ => Err(Error::InvalidArgument {
                    what: "copy names a frame the caller does not own",
                }),
            },
            CopyPtr::Foreign {
                domid,
                gref,
                offset,
            } => match w.grants.get(&(domid, gref.0)) {
                Some(g) if g.to == self.domid => {
                    if write && g.access == Access::ReadOnly {
                        Err(Error::ReadOnlyGrant { domid, gref })
                    } else {
                        Ok((g.frame, offset))
                    }
                }
                _ => Err(self.no_grant(domid, gref)),
            },
        }
    }
}

impl Memory for LocalPlatform {
    type Pages = LocalPages;
    fn alloc_pages(&mut self, count: usize) -> Result<LocalPages> {
        let layout = Layout::from_size_align(count.max(1) * PAGE_SIZE, PAGE_SIZE)
            .map_err(|_| Error::OutOfMemory)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).ok_or(Error::OutOfMemory)?;
        let first = (ptr.as_ptr() as usize >> 12) as u64;
        let mut w = self.world.borrow_mut();
        for f in first..first + count as u64 {
            w.frames.insert(f, self.domid);
        }
        Ok(LocalPages {
            ptr,
            count,
            world: self.world.clone(),
        })
    }
}

impl GrantTable for LocalPlatform {
    type Mapping = LocalMapping;

    fn grant(&mut self, frame: Frame, to: DomId, access: Access) -> Result<GrantRef> {
        let mut w = self.world.borrow_mut();
        if w.frames.get(&frame.0) != Some(&self.domid) {
            return Err(Error::InvalidArgument {
                what: "grant of a frame the caller does not own",
            });
        }
        let next = w.next_gref.entry(self.domid).or_insert(8);
        let gref = *next;
        *next += 1;
        w.grants.insert(
            (self.domid, gref),
            Grant {
                frame: frame.0,
                to,
                access,
                maps: 0,
            },
        );
        Ok(GrantRef(gref))
    }

    fn revoke(&mut self, gref: GrantRef) -> Result<()> {
        let mut w = self.world.borrow_mut();
        match w.grants.get(&(self.domid, gref.0)) {
            None => Err(self.no_grant(self.domid, gref)),
            Some(g) if g.maps > 0 => Err(Error::GrantInUse { gref }),
            Some(_) => {
                w.grants.remove(&(self.domid, gref.0));
                Ok(())
            }
        }
    }

    fn map(&mut self, from: DomId, grefs: &[GrantRef], access: Access) -> Result<LocalMapping> {
        let mut w = self.world.borrow_mut();
        let mut first = None;
        for (k, gref) in grefs.iter().enumerate() {
            let g = match w.grants.get(&(from, gref.0)) {
                Some(g) if g.to == self.domid => g,
                _ => return Err(self.no_grant(from, *gref)),
            };
            if access == Access::ReadWrite && g.access == Access::ReadOnly {
                return Err(Error::ReadOnlyGrant {
                    domid: from,
                    gref: *gref,
                });
            }
            let f0 = *first.get_or_insert(g.frame);
            if g.frame != f0 + k as u64 {
                return Err(Error::Unsupported {
                    op: "mapping grants of scattered frames",
                    why: "the local platform maps only frames that are contiguous in the granter",
                });
            }
        }
        let f0 = first.ok_or(Error::InvalidArgument {
            what: "map of no grant",
        })?;
        for gref in grefs {
            if let Some(g) = w.grants.get_mut(&(from, gref.0)) {
                g.maps += 1;
            }
        }
        let ptr = NonNull::new((f0 << 12) as usize as *mut u8)
            .ok_or(Error::InvalidArgument { what: "frame 0" })?;
        Ok(LocalMapping {
            ptr,
            count: grefs.len(),
            grants: grefs.iter().map(|g| (from, g.0)).collect(),
        })
    }

    fn unmap(&mut self, mapping: LocalMapping) -> Result<()> {
        let mut w = self.world.borrow_mut();
        for key in &mapping.grants {
            if let Some(g) = w.grants.get_mut(key) {
                g.maps = g.maps.saturating_sub(1);
            }
        }
        Ok(())
    }

    fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()> {
        let w = self.world.borrow();
        for s in segs.iter_mut() {
            let r = self.resolve(&w, &s.src, false).and_then(|src| {
                let dst = self.resolve(&w, &s.dst, true)?;
                let len = usize::from(s.len);
                if usize::from(src.1) + len > PAGE_SIZE || usize::from(dst.1) + len > PAGE_SIZE {
                    return Err(Error::InvalidArgument {
                        what: "copy segment leaves its page",
                    });
                }
                let at = |(f, o): (u64, u16)| ((f << 12) as usize + usize::from(o)) as *mut u8;
                // SAFETY: both pages are live frames of this world (owned
                // or granted, checked above), the ranges stay inside their
                // pages, and `copy` tolerates overlap.
                unsafe { core::ptr::copy(at(src), at(dst), len) };
                Ok(())
            });
            s.status = match r {
                Ok(()) => CopyStatus::Done,
                Err(e) => CopyStatus::Failed(e),
            };
        }
        Ok(())
    }
}

impl EventChannels for LocalPlatform {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Port> {
        let mut w = self.world.borrow_mut();
        let next = w.next_port.entry(self.domid).or_insert(1);
        let port = *next;
        *next += 1;
        w.ports
            .insert((self.domid, port), PortEnd::Unbound { remote });
        Ok(Port(port))
    }

    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port> {
        let mut w = self.world.borrow_mut();
        match w.ports.get(&(remote, remote_port.0)) {
            Some(PortEnd::Unbound { remote: r }) if *r == self.domid => {}
            _ => return Err(Error::BadPort { port: remote_port }),
        }
        let next = w.next_port.entry(self.domid).or_insert(1);
        let port = *next;
        *next += 1;
        w.ports.insert(
            (self.domid, port),
            PortEnd::Bound {
                remote,
                remote_port: remote_port.0,
            },
        );
        w.ports.insert(
            (remote, remote_port.0),
            PortEnd::Bound {
                remote: self.domid,
                remote_port: port,
            },
        );
        Ok(Port(port))
    }

    fn notify(&mut self, port: Port) -> Result<()> {
        let mut w = self.world.borrow_mut();
        match w.ports.get(&(self.domid, port.0)).copied() {
            Some(PortEnd::Bound {
                remote,
                remote_port,
            }) => {
                if w.ports.contains_key(&(remote, remote_port)) {
                    w.pending.entry(remote).or_default().insert(remote_port);
                }
                Ok(())
            }
            Some(PortEnd::Unbound { .. }) => Ok(()),
            None => Err(Error::BadPort { port }),
        }
    }

    fn close(&mut self, port: Port) -> Result<()> {
        let mut w = self.world.borrow_mut();
        match w.ports.remove(&(self.domid, port.0)) {
            Some(PortEnd::Bound {
                remote,
                remote_port,
            }) => {
                // The peer's end stays open but unbound, as on Xen.
                if let Some(end) = w.ports.get_mut(&(remote, remote_port)) {
                    *end = PortEnd::Unbound { remote: self.domid };
                }
                Ok(())
            }
            Some(PortEnd::Unbound { .. }) => Ok(()),
            None => Err(Error::BadPort { port }),
        }
    }

    fn wait(&mut self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()> {
        let pending = {
            let mut w = self.world.borrow_mut();
            let p = w.pending.remove(&self.domid).unwrap_or_default();
            if p.is_empty() {
                // Nothing will ever fire in a single thread: time jumps.
                match deadline_ns {
                    Some(d) => {
                        w.now_ns = w.now_ns.max(d);
                        return Err(Error::TimedOut);
                    }
                    None => {
                        return Err(Error::InvalidArgument {
                            what: "a wait without deadline on the local platform never ends",
                        })
                    }
                }
            }
            p
        };
        for port in pending {
            fired(Port(port));
        }
        Ok(())
    }
}

impl Clock for LocalPlatform {
    fn now_ns(&self) -> u64 {
        self.world.borrow().now_ns
    }
}

impl Platform for LocalPlatform {
    fn domid(&self) -> DomId {
        self.domid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use share_hal::share::{sg_xfer, Attached, Share};

    #[test]
    fn share_attach_copy_trigger_and_revoke_rules() {
        let host = LocalHost::new();
        let mut o = host.domain(1);
        let mut m = host.domain(2);
        let mut x = host.domain(3);
        let mut share = Share::create(&mut o, 3).unwrap();
        let r = share.add_member(&mut o, 2).unwrap();
        assert!(matches!(
            Attached::attach(&mut x, r),
            Err(Error::NoGrant { .. })
        ));
        let mut att = Attached::attach(&mut m, r).unwrap();
        share.mem().write_u32(4096 * 2 + 8, 77).unwrap();
        assert_eq!(att.mem().read_u32(4096 * 2 + 8), Ok(77));
        att.trigger(&mut m).unwrap();
        let mut got = Vec::new();
        o.wait(Some(0), &mut |p| got.push(p)).unwrap();
        assert_eq!(share.member_for_port(got[0]), Some(2));
        assert_eq!(o.wait(Some(5), &mut |_| {}), Err(Error::TimedOut));
        assert_eq!(o.now_ns(), 5);
        // Grant copy from the member's page into the share.
        let page = m.alloc_pages(1).unwrap();
        page.mem().fill(0, 16, 0xab).unwrap();
        let g = m
            .grant(page.frame(0).unwrap(), 1, Access::ReadOnly)
            .unwrap();
        let mut segs = [CopySeg {
            src: CopyPtr::Foreign {
                domid: 2,
                gref: g,
                offset: 0,
            },
            dst: share.local(0, 100).unwrap(),
            len: 16,
            status: CopyStatus::Pending,
        }];
        sg_xfer(&mut o, &mut segs).unwrap();
        assert_eq!(segs[0].status, CopyStatus::Done);
        assert_eq!(share.mem().read_u8(115), Ok(0xab));
        // Writing into a read-only grant is refused.
        segs[0].dst = segs[0].src;
        segs[0].src = share.local(0, 0).unwrap();
        sg_xfer(&mut o, &mut segs).unwrap();
        assert!(matches!(
            segs[0].status,
            CopyStatus::Failed(Error::ReadOnlyGrant { .. })
        ));
        // Revoke waits for the unmap.
        assert!(matches!(
            share.remove_member(&mut o, 2),
            Err(Error::GrantInUse { .. })
        ));
        att.detach(&mut m).unwrap();
        assert_eq!(share.reap(&mut o), Ok(0));
        assert!(matches!(
            Attached::attach(&mut m, r),
            Err(Error::NoGrant { .. })
        ));
        share.destroy(&mut o).unwrap();
    }
}
