//! What a platform provides: memory, grant table, event channels, time,
//! console.
//!
//! The share logic, the rings and the backends are generic over these
//! traits, the way smoltcp's interface is generic over `phy::Device`. The
//! platforms implementing them are crates of their own (`platforms/`): the
//! host simulation (`share-sim`), the in-process one (`share-local`), the
//! Xen PVH unikernel (`share-pvh`, raw hypercalls) and Linux userspace on
//! Xen (`share-linux`, `/dev/xen/*` or `/dev/xenshare`).

use core::fmt;

use crate::error::Result;
use crate::volatile::SharedMem;

/// A domain identifier, as Xen's `domid_t`.
pub type DomId = u16;

/// The domain of the control tools (dom0 on Xen).
pub const DOM0: DomId = 0;

/// A grant reference: an index into the granting domain's grant table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An event channel port, local to one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u32);

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A frame of the caller's own memory, as the hypervisor names it (a GFN on
/// Xen, a page index on the simulation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frame(pub u64);

/// Page size of every platform (x86).
pub const PAGE_SIZE: usize = 4096;

/// Access a grant gives its member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// Page-aligned memory of the caller's own, which it may grant.
pub trait PageBlock {
    /// The pages as one window (`count() * PAGE_SIZE` bytes).
    fn mem(&self) -> SharedMem<'_>;
    fn count(&self) -> usize;
    /// The frame of page `index`, to grant it.
    fn frame(&self, index: usize) -> Option<Frame>;
}

/// Foreign pages mapped into the caller's address space.
pub trait Mapping {
    fn mem(&self) -> SharedMem<'_>;
    fn count(&self) -> usize;
}

/// Allocation of the caller's own pages.
pub trait Memory {
    /// Owned pages (no borrow inside): a store may lend them to the disk
    /// server as `dyn Any` (blkback-uk's `Store::lent_pages`).
    type Pages: PageBlock + 'static;
    /// Allocates `count` zeroed, page-aligned pages.
    fn alloc_pages(&mut self, count: usize) -> Result<Self::Pages>;
}

/// One side of a grant copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyPtr {
    /// The caller's own frame.
    Local { frame: Frame, offset: u16 },
    /// A page another domain granted to the caller.
    Foreign {
        domid: DomId,
        gref: GrantRef,
        offset: u16,
    },
}

/// Outcome of one segment of a grant copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyStatus {
    /// Not yet executed.
    Pending,
    Done,
    /// The segment failed; other segments of the batch are unaffected.
    Failed(crate::error::Error),
}

/// One segment of a scatter-gather transfer; never crosses a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySeg {
    pub src: CopyPtr,
    pub dst: CopyPtr,
    pub len: u16,
    pub status: CopyStatus,
}

/// The grant table: giving pages to other domains and using theirs.
pub trait GrantTable {
    type Mapping: Mapping;

    /// Grants the caller's `frame` to `to`.
    fn grant(&mut self, frame: Frame, to: DomId, access: Access) -> Result<GrantRef>;
    /// Ends a grant. Fails with `GrantInUse` while the member maps it; after
    /// success the member can neither map nor copy the page again.
    fn revoke(&mut self, gref: GrantRef) -> Result<()>;
    /// Maps pages `grefs` that `from` granted to the caller, contiguously.
    fn map(&mut self, from: DomId, grefs: &[GrantRef], access: Access) -> Result<Self::Mapping>;
    fn unmap(&mut self, mapping: Self::Mapping) -> Result<()>;
    /// Executes a batch of copy segments (one hypercall on Xen); each
    /// segment's `status` tells its outcome. Returns `Err` only when the
    /// batch as a whole could not be submitted.
    fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()>;
}

/// Event channels: triggers and watches.
pub trait EventChannels {
    /// Opens a port that `remote` may bind to.
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Port>;
    /// Connects to `remote`'s unbound port; returns the caller's port.
    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port>;
    /// Triggers the peer of `port`.
    fn notify(&mut self, port: Port) -> Result<()>;
    fn close(&mut self, port: Port) -> Result<()>;
    /// Blocks until a trigger arrives on any port or the clock passes
    /// `deadline_ns` (`None`: no deadline). Calls `fired` once for each port
    /// that fired since the last wait (pending state is cleared). Returns
    /// `Err(TimedOut)` when the deadline passed with nothing pending.
    fn wait(&mut self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()>;
}

/// Monotonic time.
pub trait Clock {
    /// Nanoseconds since an arbitrary origin; never goes backwards.
    fn now_ns(&self) -> u64;
}

/// Everything a share needs from its platform.
pub trait Platform: Memory + GrantTable + EventChannels + Clock {
    /// The caller's own domain id.
    fn domid(&self) -> DomId;
}
