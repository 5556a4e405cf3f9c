//! The grant table: v1 grant entries for our own pages, mapping pages other
//! domains granted us, and batched grant copy.
//!
//! Safety rules kept here, because a grant hands memory to another domain:
//! - only frames of pages allocated through the platform (`XenPages`) can
//!   be granted or named as the local side of a copy; never kernel memory;
//! - pages still granted are never freed: if their owner drops them first,
//!   they are leaked (and logged), since a peer may still map them;
//! - foreign pages are mapped into a window of guest-physical frames above
//!   all RAM, so mapping and unmapping never punches holes into the heap.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::Ordering;

use super::abi::*;
use super::hypercall;
use super::phys::{self, HeapPages};
use share_hal::error::{Error, Result};
use share_hal::platform::{
    Access, CopyPtr, CopySeg, CopyStatus, DomId, Frame, GrantRef, Mapping, PageBlock, PAGE_SIZE,
};
use share_hal::volatile::SharedMem;

/// Grant table frames we ask Xen for: 8 frames = 4096 v1 entries (xl's
/// default limit is 32). 4 frames (2040 usable) held netback-uk's eight
/// default ports (259 grants each) only without an uplink's 130; the rig's
/// `uplink` scenario made the eighth port and was refused "grant table is
/// full".
const WANTED_FRAMES: u32 = 8;
const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / GRANT_ENTRY_V1_SIZE) as u32;
/// First guest-physical frame of the window foreign grants are mapped at:
/// 2 GiB, above the RAM of any domain this runtime is meant for.
pub const MAP_WINDOW_BASE: u64 = 0x8_0000;
/// Pages in the window (64 MiB).
pub const MAP_WINDOW_PAGES: usize = 16 * 1024;
/// Copy segments per hypercall.
const COPY_BATCH: usize = 128;
/// A status Xen never writes: marks operations it did not reach.
const NOT_DONE: i16 = 1;

/// Our frames that may be granted, with how many grants each has.
///
/// Both maps of this module are `BTreeMap<u64, u64>` (counts and grant
/// references are widened): one key and value type is one copy of the
/// B-tree's code in the images, 5.7 KiB less in each than a `<u64, u32>`
/// map beside a `<u32, u64>` one.
#[derive(Default)]
pub struct FrameRegistry {
    grants: BTreeMap<u64, u64>,
}

impl FrameRegistry {
    pub fn is_ours(&self, frame: u64) -> bool {
        self.grants.contains_key(&frame)
    }
}

/// Pages of our own that may be granted; see the module notes for what
/// happens when they are dropped while granted.
pub struct XenPages {
    pages: Option<HeapPages>,
    registry: Rc<RefCell<FrameRegistry>>,
}

impl XenPages {
    pub(super) fn alloc(count: usize, registry: &Rc<RefCell<FrameRegistry>>) -> Result<XenPages> {
        let pages = HeapPages::alloc(count)?;
        let mut reg = registry.borrow_mut();
        for f in 0..count as u64 {
            reg.grants.insert(pages.first_frame() + f, 0);
        }
        Ok(XenPages {
            pages: Some(pages),
            registry: registry.clone(),
        })
    }
}

impl PageBlock for XenPages {
    fn mem(&self) -> SharedMem<'_> {
        match &self.pages {
            Some(p) => p.mem(),
            None => SharedMem::from_slice(&mut []),
        }
    }

    fn count(&self) -> usize {
        self.pages.as_ref().map(HeapPages::count).unwrap_or(0)
    }

    fn frame(&self, index: usize) -> Option<Frame> {
        let p = self.pages.as_ref()?;
        (index < p.count()).then(|| Frame(p.first_frame() + index as u64))
    }
}

impl Drop for XenPages {
    fn drop(&mut self) {
        let Some(pages) = self.pages.take() else {
            return;
        };
        let mut reg = self.registry.borrow_mut();
        let frames = pages.first_frame()..pages.first_frame() + pages.count() as u64;
        let granted = frames
            .clone()
            .any(|f| reg.grants.get(&f).copied().unwrap_or(0) > 0);
        if granted {
            // A member may still map these pages: never reuse them. The
            // frames stay registered so the grants can still be revoked.
            log::warn!(
                "pages at frame {:#x} dropped while granted: leaked",
                pages.first_frame()
            );
            pages.leak();
        } else {
            for f in frames {
                reg.grants.remove(&f);
            }
        }
    }
}

/// First-fit allocator of runs of window frames.
pub struct MapWindow {
    used: Vec<bool>,
}

impl MapWindow {
    pub fn new(pages: usize) -> MapWindow {
        MapWindow {
            used: vec![false; pages],
        }
    }

    /// Index of the first page of a free run of `count` pages.
    pub fn alloc(&mut self, count: usize) -> Option<usize> {
        if count == 0 || count > self.used.len() {
            return None;
        }
        let mut start = 0;
        while start + count <= self.used.len() {
            match self.used[start..start + count].iter().rposition(|&u| u) {
                Some(busy) => start += busy + 1,
                None => {
                    self.used[start..start + count].fill(true);
                    return Some(start);
                }
            }
        }
        None
    }

    pub fn free(&mut self, start: usize, count: usize) {
        if let Some(run) = self.used.get_mut(start..start.saturating_add(count)) {
            run.fill(false);
        }
    }
}

/// Foreign pages mapped contiguously in the window; unmapped on drop.
pub struct XenMapping {
    first: usize,
    handles: Vec<u32>,
    window: Rc<RefCell<MapWindow>>,
}

impl XenMapping {
    fn gfn(&self) -> u64 {
        MAP_WINDOW_BASE + self.first as u64
    }

    fn unmap_now(&mut self) -> Result<()> {
        if self.handles.is_empty() {
            return Ok(());
        }
        let base = self.gfn();
        let mut ops: Vec<GnttabUnmapGrantRef> = self
            .handles
            .iter()
            .enumerate()
            .map(|(i, &handle)| GnttabUnmapGrantRef {
                host_addr: (base + i as u64) * PAGE_SIZE as u64,
                dev_bus_addr: 0,
                handle,
                status: NOT_DONE,
            })
            .collect();
        let rc = hypercall::gnttab_unmap(&mut ops);
        let count = self.handles.len();
        self.handles.clear();
        let failed = ops.iter().find(|op| op.status != GNTST_OKAY);
        if rc < 0 || failed.is_some() {
            // The window frames may still hold foreign pages: never reuse.
            let code = if rc < 0 {
                rc
            } else {
                failed.map(|o| i64::from(o.status)).unwrap_or(0)
            };
            return Err(Error::Hypervisor {
                op: "GNTTABOP_unmap_grant_ref",
                code,
            });
        }
        self.window.borrow_mut().free(self.first, count);
        Ok(())
    }
}

impl Mapping for XenMapping {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the window frames hold the mapped foreign pages for as
        // long as `self` lives (unmapped only in unmap_now, which empties
        // `handles`), and are reached only through SharedMem.
        unsafe { phys::window(self.gfn(), self.handles.len()) }
            .unwrap_or_else(|_| SharedMem::from_slice(&mut []))
    }

    fn count(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for XenMapping {
    fn drop(&mut self) {
        if let Err(e) = self.unmap_now() {
            log::warn!("unmapping foreign pages failed ({e}); their frames are not reused");
        }
    }
}

/// Our grant table and the bookkeeping around it.
pub struct Grants {
    entries: SharedMem<'static>,
    nr_entries: u32,
    free: Vec<u32>,
    /// Which frame each live grant (its reference, widened: see
    /// [`FrameRegistry`]) gives.
    live: BTreeMap<u64, u64>,
    pub(super) registry: Rc<RefCell<FrameRegistry>>,
    window: Rc<RefCell<MapWindow>>,
}

fn gntst_error(status: i16, domid: DomId, gref: GrantRef, op: &'static str) -> Error {
    match status {
        GNTST_BAD_DOMAIN => Error::NoSuchDomain { domid },
        GNTST_BAD_GNTREF => Error::NoGrant { domid, gref },
        GNTST_PERMISSION_DENIED => Error::ReadOnlyGrant { domid, gref },
        _ => Error::Hypervisor {
            op,
            code: status.into(),
        },
    }
}

impl Grants {
    /// Maps our grant table frames into heap pages given up to Xen.
    pub(super) fn init() -> Result<Grants> {
        let (_, max) = hypercall::gnttab_query_size()?;
        let frames = WANTED_FRAMES.min(max).max(1);
        let pages = HeapPages::alloc(frames as usize)?;
        let gfn = pages.first_frame();
        for i in 0..frames {
            // SAFETY: these heap pages are given up below (leaked) and are
            // reached only through the SharedMem window from now on.
            unsafe {
                hypercall::add_to_physmap(XENMAPSPACE_GRANT_TABLE, i.into(), gfn + u64::from(i))?
            };
        }
        pages.leak();
        // SAFETY: the grant table frames Xen just placed at these frames;
        // only SharedMem reaches them.
        let entries = unsafe { phys::window(gfn, frames as usize)? };
        let nr_entries = frames * ENTRIES_PER_FRAME;
        // Pop from the end: hand out low references first.
        let free = (GNTTAB_NR_RESERVED_ENTRIES..nr_entries).rev().collect();
        Ok(Grants {
            entries,
            nr_entries,
            free,
            live: BTreeMap::new(),
            registry: Rc::new(RefCell::new(FrameRegistry::default())),
            window: Rc::new(RefCell::new(MapWindow::new(MAP_WINDOW_PAGES))),
        })
    }

    pub fn capacity(&self) -> u32 {
        self.nr_entries
    }

    pub fn grant(&mut self, frame: Frame, to: DomId, access: Access) -> Result<GrantRef> {
        if !self.registry.borrow().is_ours(frame.0) {
            return Err(Error::InvalidArgument {
                what: "only pages allocated from the platform can be granted",
            });
        }
        let frame32 = u32::try_from(frame.0).map_err(|_| Error::InvalidArgument {
            what: "frame beyond the v1 grant entry",
        })?;
        let gref = self.free.pop().ok_or(Error::GrantTableFull)?;
        let off = gref as usize * GRANT_ENTRY_V1_SIZE;
        let mut flags = GTF_PERMIT_ACCESS;
        if access == Access::ReadOnly {
            flags |= GTF_READONLY;
        }
        // Frame first; flags and domid together last, so Xen never sees a
        // usable entry with a stale frame.
        self.entries
            .write_u32(off + GRANT_ENTRY_V1_FRAME, frame32)?;
        self.entries.store_u32(
            off + GRANT_ENTRY_V1_FLAGS,
            u32::from(flags) | (u32::from(to) << 16),
            Ordering::Release,
        )?;
        self.live.insert(gref.into(), frame.0);
        if let Some(n) = self.registry.borrow_mut().grants.get_mut(&frame.0) {
            *n += 1;
        }
        Ok(GrantRef(gref))
    }

    pub fn revoke(&mut self, gref: GrantRef) -> Result<()> {
        let Some(&frame) = self.live.get(&gref.0.into()) else {
            return Err(Error::InvalidArgument {
                what: "revoking a grant reference that is not live",
            });
        };
        let off = gref.0 as usize * GRANT_ENTRY_V1_SIZE;
        loop {
            let entry = self.entries.load_u32(off, Ordering::Acquire)?;
            if entry as u16 & (GTF_READING | GTF_WRITING) != 0 {
                return Err(Error::GrantInUse { gref });
            }
            // Xen sets the reading/writing bits with a compare-exchange too:
            // if ours wins, no new mapping or copy can start.
            if self
                .entries
                .compare_exchange_u32(off, entry, 0, Ordering::AcqRel)?
                .is_ok()
            {
                break;
            }
        }
        self.live.remove(&gref.0.into());
        self.free.push(gref.0);
        if let Some(n) = self.registry.borrow_mut().grants.get_mut(&frame) {
            *n = n.saturating_sub(1);
        }
        Ok(())
    }

    pub fn map(&mut self, from: DomId, grefs: &[GrantRef], access: Access) -> Result<XenMapping> {
        let count = grefs.len();
        if count == 0 {
            return Err(Error::InvalidArgument {
                what: "mapping no pages",
            });
        }
        let first = self
            .window
            .borrow_mut()
            .alloc(count)
            .ok_or(Error::OutOfMemory)?;
        let base = MAP_WINDOW_BASE + first as u64;
        let mut flags = GNTMAP_HOST_MAP;
        if access == Access::ReadOnly {
            flags |= GNTMAP_READONLY;
        }
        let mut ops: Vec<GnttabMapGrantRef> = grefs
            .iter()
            .enumerate()
            .map(|(i, g)| GnttabMapGrantRef {
                host_addr: (base + i as u64) * PAGE_SIZE as u64,
                flags,
                gref: g.0,
                dom: from,
                // Not a GNTST value: tells "Xen never got to this one".
                status: NOT_DONE,
                ..Default::default()
            })
            .collect();
        // SAFETY: the window frames are above all RAM (checked at platform
        // init), allocated to this mapping only, and reached only through
        // SharedMem.
        let rc = unsafe { hypercall::gnttab_map(&mut ops) };
        if rc >= 0 && ops.iter().all(|op| op.status == GNTST_OKAY) {
            return Ok(XenMapping {
                first,
                handles: ops.iter().map(|op| op.handle).collect(),
                window: self.window.clone(),
            });
        }
        // Undo the part that succeeded, then report the first failure.
        let mut undo: Vec<GnttabUnmapGrantRef> = ops
            .iter()
            .filter(|op| op.status == GNTST_OKAY)
            .map(|op| GnttabUnmapGrantRef {
                host_addr: op.host_addr,
                dev_bus_addr: 0,
                handle: op.handle,
                status: NOT_DONE,
            })
            .collect();
        let undone = undo.is_empty()
            || (hypercall::gnttab_unmap(&mut undo) >= 0
                && undo.iter().all(|u| u.status == GNTST_OKAY));
        if undone {
            self.window.borrow_mut().free(first, count);
        } else {
            log::warn!("could not undo part of a failed map batch; its frames are not reused");
        }
        if rc < 0 {
            return Err(match -rc {
                XEN_ESRCH => Error::NoSuchDomain { domid: from },
                _ => Error::Hypervisor {
                    op: "GNTTABOP_map_grant_ref",
                    code: rc,
                },
            });
        }
        let i = ops
            .iter()
            .position(|op| op.status != GNTST_OKAY)
            .unwrap_or(0);
        Err(gntst_error(
            ops[i].status,
            from,
            grefs[i],
            "GNTTABOP_map_grant_ref",
        ))
    }

    pub fn unmap(&mut self, mut mapping: XenMapping) -> Result<()> {
        mapping.unmap_now()
    }

    fn copy_side(&self, ptr: &CopyPtr, len: u16) -> Result<(GnttabCopyPtr, bool)> {
        let (side, is_gref, offset) = match *ptr {
            CopyPtr::Local { frame, offset } => {
                if !self.registry.borrow().is_ours(frame.0) {
                    return Err(Error::InvalidArgument {
                        what: "copy to or from a frame not allocated from the platform",
                    });
                }
                (
                    GnttabCopyPtr {
                        u: frame.0,
                        domid: DOMID_SELF,
                        offset,
                    },
                    false,
                    offset,
                )
            }
            CopyPtr::Foreign {
                domid,
                gref,
                offset,
            } => (
                GnttabCopyPtr {
                    u: gref.0.into(),
                    domid,
                    offset,
                },
                true,
                offset,
            ),
        };
        if usize::from(offset) + usize::from(len) > PAGE_SIZE {
            return Err(Error::InvalidArgument {
                what: "copy segment crosses a page",
            });
        }
        Ok((side, is_gref))
    }

    pub fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()> {
        for chunk in segs.chunks_mut(COPY_BATCH) {
            let mut ops = Vec::with_capacity(chunk.len());
            let mut index = Vec::with_capacity(chunk.len());
            for (i, seg) in chunk.iter_mut().enumerate() {
                let sides = self
                    .copy_side(&seg.src, seg.len)
                    .and_then(|s| Ok((s, self.copy_side(&seg.dst, seg.len)?)));
                match sides {
                    Ok(((source, src_gref), (dest, dst_gref))) => {
                        let mut flags = 0;
                        if src_gref {
                            flags |= GNTCOPY_SOURCE_GREF;
                        }
                        if dst_gref {
                            flags |= GNTCOPY_DEST_GREF;
                        }
                        ops.push(GnttabCopy {
                            source,
                            dest,
                            len: seg.len,
                            flags,
                            status: NOT_DONE,
                        });
                        index.push(i);
                    }
                    Err(e) => seg.status = CopyStatus::Failed(e),
                }
            }
            if ops.is_empty() {
                continue;
            }
            // SAFETY: every local frame was checked to be a page allocated
            // from the platform, which is reached only through SharedMem.
            let rc = unsafe { hypercall::gnttab_copy(&mut ops) };
            hypercall::check("GNTTABOP_copy", rc)?;
            for (op, &i) in ops.iter().zip(&index) {
                let seg = &mut chunk[i];
                seg.status = if op.status == GNTST_OKAY {
                    CopyStatus::Done
                } else {
                    let (domid, gref) = match (seg.src, seg.dst) {
                        (CopyPtr::Foreign { domid, gref, .. }, _)
                        | (_, CopyPtr::Foreign { domid, gref, .. }) => (domid, gref),
                        _ => (DOMID_SELF, GrantRef(0)),
                    };
                    CopyStatus::Failed(gntst_error(op.status, domid, gref, "GNTTABOP_copy"))
                };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_allocates_first_fit_runs() {
        let mut w = MapWindow::new(8);
        assert_eq!(w.alloc(3), Some(0));
        assert_eq!(w.alloc(3), Some(3));
        assert_eq!(w.alloc(3), None);
        w.free(0, 3);
        assert_eq!(w.alloc(2), Some(0));
        assert_eq!(w.alloc(2), Some(6));
        assert_eq!(w.alloc(1), Some(2));
        assert_eq!(w.alloc(0), None);
        assert_eq!(w.alloc(9), None);
        // Freeing out of range is ignored, not a panic.
        w.free(7, usize::MAX);
        w.free(100, 1);
    }

    proptest::proptest! {
        #[test]
        fn window_runs_never_overlap(ops in proptest::collection::vec((1usize..6, proptest::bool::ANY), 1..60)) {
            let mut w = MapWindow::new(32);
            let mut live: Vec<(usize, usize)> = Vec::new();
            for (count, free) in ops {
                if free && !live.is_empty() {
                    let (s, c) = live.remove(0);
                    w.free(s, c);
                } else if let Some(s) = w.alloc(count) {
                    for &(ls, lc) in &live {
                        proptest::prop_assert!(s + count <= ls || ls + lc <= s);
                    }
                    proptest::prop_assert!(s + count <= 32);
                    live.push((s, count));
                }
            }
        }
    }
}
