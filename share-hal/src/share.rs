//! Shares: pages of one owner domain granted to a set of member domains,
//! with triggers, watches and scatter-gather transfer.
//!
//! Generic over [`Platform`]; methods take the platform as `&mut P` (the
//! way smoltcp's interface takes its device), so the same code runs on the
//! simulation, on Linux userspace and in the PVH unikernels.
//!
//! Owner side: [`Share`]. For each member it grants every page read-write,
//! writes that member's descriptor page (layout: [`crate::wire::descriptor`],
//! `docs/protocol.md`) and grants it read-only, and opens one unbound event
//! port for the member. The member finds the share by its [`ShareRef`].
//!
//! Member side: [`Attached`]. It copies the descriptor out once, validates
//! the copy (the owner is a peer too: every field is hostile), maps the
//! pages and binds the port.
//!
//! Removing a member revokes its grants; a grant the member still maps
//! cannot be revoked (as on Xen), so the member stays *revoking* until
//! [`Share::reap`] succeeds. Pages are never released while any grant of
//! them is live: a share dropped with live grants leaks its pages rather
//! than let them be reused under a member.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::{Error, Result};
use crate::platform::{
    Access, Clock, CopyPtr, CopySeg, CopyStatus, DomId, EventChannels, Frame, GrantRef, GrantTable,
    Mapping, PageBlock, Platform, Port, PAGE_SIZE,
};
use crate::volatile::SharedMem;
use crate::wire::descriptor::{Descriptor, DescriptorRepr, MAX_PAGES};

/// How a member names a share: the owner and the grant of the member's
/// descriptor page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShareRef {
    pub owner: DomId,
    pub descriptor: GrantRef,
}

struct Member<P: Platform> {
    domid: DomId,
    /// The owner's port for this member; `None` once closed.
    port: Option<Port>,
    /// Grants not yet revoked: the pages', then the descriptor's last.
    grants: Vec<GrantRef>,
    descriptor: GrantRef,
    descriptor_page: Option<P::Pages>,
    revoking: bool,
}

/// The owner's side of a share.
pub struct Share<P: Platform> {
    pages: Option<P::Pages>,
    numpages: usize,
    members: Vec<Member<P>>,
}

impl<P: Platform> Share<P> {
    /// Allocates a share of `numpages` zeroed pages (at most
    /// [`MAX_PAGES`], what one descriptor page can list).
    pub fn create(p: &mut P, numpages: usize) -> Result<Self> {
        if numpages == 0 || numpages > MAX_PAGES as usize {
            return Err(Error::InvalidArgument {
                what: "share size (1..=1016 pages, what one descriptor page lists)",
            });
        }
        let pages = p.alloc_pages(numpages)?;
        Ok(Share {
            pages: Some(pages),
            numpages,
            members: Vec::new(),
        })
    }

    pub fn numpages(&self) -> usize {
        self.numpages
    }

    /// The share's pages; empty once destroyed.
    pub fn mem(&self) -> SharedMem<'_> {
        match &self.pages {
            Some(p) => p.mem(),
            None => SharedMem::from_slice(&mut []),
        }
    }

    /// The owner's frame of page `index`, for grant copies.
    pub fn frame(&self, index: usize) -> Option<Frame> {
        self.pages.as_ref()?.frame(index)
    }

    /// A grant-copy pointer to `offset` of page `index`.
    pub fn local(&self, index: usize, offset: u16) -> Option<CopyPtr> {
        Some(CopyPtr::Local {
            frame: self.frame(index)?,
            offset,
        })
    }

    fn find(&self, domid: DomId) -> Option<usize> {
        self.members.iter().position(|m| m.domid == domid)
    }

    fn active(&self, domid: DomId) -> Result<&Member<P>> {
        self.members
            .iter()
            .find(|m| m.domid == domid && !m.revoking)
            .ok_or(Error::NotAMember { domid })
    }

    /// Members in the share (not those being removed).
    pub fn members(&self) -> impl Iterator<Item = DomId> + '_ {
        self.members.iter().filter(|m| !m.revoking).map(|m| m.domid)
    }

    /// Members removed whose grants are still mapped.
    pub fn revoking(&self) -> impl Iterator<Item = DomId> + '_ {
        self.members.iter().filter(|m| m.revoking).map(|m| m.domid)
    }

    pub fn share_ref(&self, p: &P, member: DomId) -> Result<ShareRef> {
        let m = self.active(member)?;
        Ok(ShareRef {
            owner: p.domid(),
            descriptor: m.descriptor,
        })
    }

    /// The owner's port for `member` (triggers from it arrive there).
    pub fn port(&self, member: DomId) -> Result<Port> {
        self.active(member)?
            .port
            .ok_or(Error::NotAMember { domid: member })
    }

    /// Which member a fired port belongs to.
    pub fn member_for_port(&self, port: Port) -> Option<DomId> {
        self.members
            .iter()
            .find(|m| !m.revoking && m.port == Some(port))
            .map(|m| m.domid)
    }

    /// Adds `domid`: grants it every page read-write, writes and grants
    /// its descriptor, opens its port. Returns what the member needs to
    /// attach.
    pub fn add_member(&mut self, p: &mut P, domid: DomId) -> Result<ShareRef> {
        let Some(pages) = &self.pages else {
            return Err(Error::InvalidArgument {
                what: "share was destroyed",
            });
        };
        if self.find(domid).is_some() {
            return Err(Error::AlreadyAMember { domid });
        }
        let mut m = Member::<P> {
            domid,
            port: None,
            grants: Vec::with_capacity(self.numpages + 1),
            descriptor: GrantRef(0),
            descriptor_page: None,
            revoking: true,
        };
        let r = Self::grant_member(p, pages, self.numpages, &mut m);
        match r {
            Ok(share_ref) => {
                m.revoking = false;
                self.members.push(m);
                Ok(share_ref)
            }
            Err(e) => {
                // A hostile member may have mapped a fresh grant already;
                // what cannot be revoked now waits for `reap`.
                if let Some(port) = m.port.take() {
                    let _ = p.close(port);
                }
                if Self::revoke_member(p, &mut m).is_err() {
                    self.members.push(m);
                }
                Err(e)
            }
        }
    }

    fn grant_member(
        p: &mut P,
        pages: &P::Pages,
        numpages: usize,
        m: &mut Member<P>,
    ) -> Result<ShareRef> {
        for i in 0..numpages {
            let frame = pages.frame(i).ok_or(Error::InvalidArgument {
                what: "platform returned fewer pages than asked",
            })?;
            m.grants.push(p.grant(frame, m.domid, Access::ReadWrite)?);
        }
        let port = p.alloc_unbound(m.domid)?;
        m.port = Some(port);
        let repr = DescriptorRepr {
            owner: p.domid(),
            member: m.domid,
            numpages: numpages as u32,
            port,
        };
        let mut buf = vec![0u8; PAGE_SIZE];
        repr.emit(&mut Descriptor::new_unchecked(&mut buf[..]), &m.grants)?;
        let page = p.alloc_pages(1)?;
        page.mem().write_from(0, &buf)?;
        let frame = page.frame(0).ok_or(Error::InvalidArgument {
            what: "platform returned fewer pages than asked",
        })?;
        m.descriptor_page = Some(page);
        m.descriptor = p.grant(frame, m.domid, Access::ReadOnly)?;
        m.grants.push(m.descriptor);
        Ok(ShareRef {
            owner: p.domid(),
            descriptor: m.descriptor,
        })
    }

    /// Revokes what is left of `m`'s grants. `Err(GrantInUse)` names the
    /// first grant still mapped.
    fn revoke_member(p: &mut P, m: &mut Member<P>) -> Result<()> {
        let mut first_err = None;
        m.grants.retain(|&g| match p.revoke(g) {
            // Already gone is what we wanted.
            Ok(()) | Err(Error::NoGrant { .. }) => false,
            Err(e) => {
                first_err.get_or_insert(e);
                true
            }
        });
        match first_err {
            None => {
                m.descriptor_page = None;
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    /// Removes `member`: closes its port and revokes its grants. While the
    /// member still maps a page this returns `GrantInUse` and keeps it as
    /// *revoking*; call [`Share::reap`] later.
    pub fn remove_member(&mut self, p: &mut P, member: DomId) -> Result<()> {
        let i = self
            .find(member)
            .ok_or(Error::NotAMember { domid: member })?;
        let m = &mut self.members[i];
        m.revoking = true;
        let mut port_err = None;
        if let Some(port) = m.port.take() {
            port_err = p.close(port).err();
        }
        Self::revoke_member(p, m)?;
        self.members.swap_remove(i);
        match port_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Retries the revocations of removed members. Returns how many are
    /// still revoking (0: every grant of every removed member is gone).
    pub fn reap(&mut self, p: &mut P) -> Result<usize> {
        let mut first_err = None;
        let mut left = 0;
        let mut i = 0;
        while i < self.members.len() {
            let m = &mut self.members[i];
            if !m.revoking {
                i += 1;
                continue;
            }
            match Self::revoke_member(p, m) {
                Ok(()) => {
                    self.members.swap_remove(i);
                }
                Err(Error::GrantInUse { .. }) => {
                    left += 1;
                    i += 1;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                    left += 1;
                    i += 1;
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(left),
        }
    }

    /// Removes every member and, once no grant is live, frees the pages.
    /// Returns `GrantInUse` while some member still maps a page: call again
    /// (or [`Share::reap`], then `destroy`) later.
    pub fn destroy(&mut self, p: &mut P) -> Result<()> {
        let active: Vec<DomId> = self.members().collect();
        for d in active {
            match self.remove_member(p, d) {
                Ok(()) | Err(Error::GrantInUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.reap(p)?;
        if let Some(m) = self.members.first() {
            return Err(Error::GrantInUse {
                gref: m.grants.first().copied().unwrap_or(m.descriptor),
            });
        }
        self.pages = None;
        Ok(())
    }

    /// Triggers `member`.
    pub fn trigger(&mut self, p: &mut P, member: DomId) -> Result<()> {
        let port = self.port(member)?;
        p.notify(port)
    }

    /// Triggers every member; returns the first failure after trying all.
    pub fn trigger_all(&mut self, p: &mut P) -> Result<()> {
        let mut first_err = None;
        for m in self.members.iter().filter(|m| !m.revoking) {
            if let Some(port) = m.port {
                if let Err(e) = p.notify(port) {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<P: Platform> Drop for Share<P> {
    fn drop(&mut self) {
        // Without the platform we cannot revoke: pages still granted must
        // never return to the allocator while a member may map them.
        if !self.members.is_empty() {
            if let Some(pages) = self.pages.take() {
                core::mem::forget(pages);
            }
            for m in self.members.drain(..) {
                if let Some(page) = m.descriptor_page {
                    core::mem::forget(page);
                }
            }
        }
    }
}

/// A member's side of a share it attached to.
pub struct Attached<P: Platform> {
    owner: DomId,
    port: Option<Port>,
    mapping: Option<P::Mapping>,
    /// The owner's grant of each page, from the validated descriptor.
    grefs: Vec<GrantRef>,
}

impl<P: Platform> Attached<P> {
    /// Attaches to the share `share_ref` names: maps the descriptor, copies
    /// it out once and validates the copy (magic, version, size, that it
    /// was written by `share_ref.owner` for us), maps the pages and binds
    /// the owner's port.
    pub fn attach(p: &mut P, share_ref: ShareRef) -> Result<Self> {
        let owner = share_ref.owner;
        let desc = p.map(owner, &[share_ref.descriptor], Access::ReadOnly)?;
        let mut buf = vec![0u8; PAGE_SIZE];
        let copied = desc.mem().read_into(0, &mut buf);
        p.unmap(desc)?;
        copied?;
        let view = Descriptor::new_checked(&buf[..])?;
        let repr = DescriptorRepr::parse(&view)?;
        repr.check_parties(owner, p.domid())?;
        let grefs: Vec<GrantRef> = view.grefs().collect();
        if grefs.len() != repr.numpages as usize {
            return Err(Error::Protocol {
                what: "descriptor grant refs",
            });
        }
        let mapping = p.map(owner, &grefs, Access::ReadWrite)?;
        if mapping.count() != grefs.len() || mapping.mem().len() != grefs.len() * PAGE_SIZE {
            let _ = p.unmap(mapping);
            return Err(Error::InvalidArgument {
                what: "platform mapped another number of pages than asked",
            });
        }
        let port = match p.bind_interdomain(owner, repr.port) {
            Ok(port) => port,
            Err(e) => {
                let _ = p.unmap(mapping);
                return Err(e);
            }
        };
        Ok(Attached {
            owner,
            port: Some(port),
            mapping: Some(mapping),
            grefs,
        })
    }

    pub fn owner(&self) -> DomId {
        self.owner
    }

    pub fn numpages(&self) -> usize {
        self.grefs.len()
    }

    /// The owner's grant of page `index`.
    pub fn gref(&self, index: usize) -> Option<GrantRef> {
        self.grefs.get(index).copied()
    }

    /// A grant-copy pointer to `offset` of page `index` of the share (the
    /// owner granted it to us, so we may copy to and from it).
    pub fn foreign(&self, index: usize, offset: u16) -> Option<CopyPtr> {
        Some(CopyPtr::Foreign {
            domid: self.owner,
            gref: self.gref(index)?,
            offset,
        })
    }

    /// Our port bound to the owner (the owner's triggers arrive there).
    pub fn port(&self) -> Option<Port> {
        self.port
    }

    /// The share's pages; empty after detach.
    pub fn mem(&self) -> SharedMem<'_> {
        match &self.mapping {
            Some(m) => m.mem(),
            None => SharedMem::from_slice(&mut []),
        }
    }

    /// Triggers the owner.
    pub fn trigger(&mut self, p: &mut P) -> Result<()> {
        let port = self.port.ok_or(Error::NotAMember { domid: p.domid() })?;
        p.notify(port)
    }

    /// Closes the port and unmaps the pages (which lets the owner revoke
    /// its grants). Returns the first failure after trying both.
    pub fn detach(mut self, p: &mut P) -> Result<()> {
        let closed = match self.port.take() {
            Some(port) => p.close(port),
            None => Ok(()),
        };
        let unmapped = match self.mapping.take() {
            Some(m) => p.unmap(m),
            None => Ok(()),
        };
        closed.and(unmapped)
    }
}

/// A deadline `ns` nanoseconds from now.
pub fn deadline_in<P: Clock + ?Sized>(p: &P, ns: u64) -> Option<u64> {
    Some(p.now_ns().saturating_add(ns))
}

/// Blocks until at least one port fires or `deadline_ns` passes
/// (`Err(TimedOut)`); `on_trigger` sees each fired port. Returns how many
/// fired. A domain with several shares calls this once and dispatches
/// with [`Share::member_for_port`] and [`Attached::port`].
pub fn watch<P: EventChannels + ?Sized>(
    p: &mut P,
    deadline_ns: Option<u64>,
    mut on_trigger: impl FnMut(Port),
) -> Result<usize> {
    loop {
        let mut n = 0;
        p.wait(deadline_ns, &mut |port| {
            n += 1;
            on_trigger(port)
        })?;
        if n > 0 {
            return Ok(n);
        }
    }
}

/// Segments per `GrantTable::copy` call (one hypercall on Xen).
pub const SG_BATCH: usize = 128;

/// Outcome of [`sg_xfer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XferReport {
    pub done: usize,
    pub failed: usize,
}

fn ptr_in_page(ptr: &CopyPtr, len: u16) -> bool {
    let offset = match *ptr {
        CopyPtr::Local { offset, .. } | CopyPtr::Foreign { offset, .. } => offset,
    };
    usize::from(offset) + usize::from(len) <= PAGE_SIZE
}

/// Scatter-gather transfer: executes `segs` in batches of [`SG_BATCH`]
/// grant copies. A segment that leaves its page fails alone, without
/// reaching the platform; each segment's `status` tells its outcome.
/// `Err` only when a batch could not be submitted at all.
pub fn sg_xfer<P: GrantTable + ?Sized>(p: &mut P, segs: &mut [CopySeg]) -> Result<XferReport> {
    let mut scratch: Vec<CopySeg> = Vec::new();
    let mut report = XferReport::default();
    for batch in segs.chunks_mut(SG_BATCH) {
        let mut all_valid = true;
        for s in batch.iter_mut() {
            if ptr_in_page(&s.src, s.len) && ptr_in_page(&s.dst, s.len) {
                s.status = CopyStatus::Pending;
            } else {
                all_valid = false;
                s.status = CopyStatus::Failed(Error::InvalidArgument {
                    what: "copy segment leaves its page",
                });
            }
        }
        if all_valid {
            p.copy(batch)?;
        } else {
            scratch.clear();
            scratch.extend(
                batch
                    .iter()
                    .filter(|s| s.status == CopyStatus::Pending)
                    .cloned(),
            );
            if !scratch.is_empty() {
                p.copy(&mut scratch)?;
            }
            let mut results = scratch.iter();
            for s in batch.iter_mut().filter(|s| s.status == CopyStatus::Pending) {
                if let Some(r) = results.next() {
                    s.status = r.status;
                }
            }
        }
        for s in batch.iter_mut() {
            match s.status {
                CopyStatus::Done => report.done += 1,
                CopyStatus::Pending => {
                    // A platform that left a segment untouched did not
                    // execute it.
                    s.status = CopyStatus::Failed(Error::Hypervisor {
                        op: "grant copy left a segment unexecuted",
                        code: 0,
                    });
                    report.failed += 1;
                }
                CopyStatus::Failed(_) => report.failed += 1,
            }
        }
    }
    Ok(report)
}
