//! The counter page of a domain (layout: [`crate::wire::stats`]): the
//! domain writes, dom0 reads through a read-only grant.

use alloc::vec;
use core::sync::atomic::{fence, Ordering};

use crate::error::{Error, Result};
use crate::platform::{Access, GrantRef, PageBlock, Platform, DOM0, PAGE_SIZE};
use crate::volatile::SharedMem;
use crate::wire::stats::{self, StatsRepr, COUNTERS, ENTRY_LEN};

/// The domain's side: one page granted read-only to dom0.
pub struct StatsPage<Pages: PageBlock> {
    page: Pages,
    gref: GrantRef,
    entry_count: u16,
    /// Our own copy of the sequence count (never read back).
    sequence: u32,
}

impl<Pages: PageBlock> StatsPage<Pages> {
    /// Allocates the page, writes its header and grants it to dom0; put
    /// [`StatsPage::gref`] in the vdevice page header
    /// (`VdeviceBus::publish_stats`).
    pub fn create<P: Platform<Pages = Pages>>(p: &mut P, entry_count: u16) -> Result<Self> {
        let page = p.alloc_pages(1)?;
        let mut img = vec![0u8; PAGE_SIZE];
        stats::emit_header(&mut img, entry_count)?;
        page.mem().write_from(0, &img)?;
        let frame = page.frame(0).ok_or(Error::OutOfMemory)?;
        let gref = p.grant(frame, DOM0, Access::ReadOnly)?;
        Ok(StatsPage {
            page,
            gref,
            entry_count,
            sequence: 0,
        })
    }

    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Writes every entry's counters (`counters(index)`; `None`: zeros)
    /// as one update: sequence odd, entries, sequence even.
    pub fn update(
        &mut self,
        mut counters: impl FnMut(u16) -> Option<[u64; COUNTERS]>,
    ) -> Result<()> {
        let mem = self.page.mem();
        self.sequence = self.sequence.wrapping_add(1) | 1;
        mem.store_u32(stats::field::SEQUENCE, self.sequence, Ordering::Relaxed)?;
        fence(Ordering::Release);
        let mut raw = [0u8; ENTRY_LEN];
        for i in 0..self.entry_count {
            stats::emit_entry(&mut raw, &counters(i).unwrap_or([0; COUNTERS]));
            mem.write_from(stats::entry_offset(i), &raw)?;
        }
        self.sequence = self.sequence.wrapping_add(1);
        mem.store_u32(stats::field::SEQUENCE, self.sequence, Ordering::Release)
    }
}

/// dom0's side: a consistent copy of a mapped counter page. Copies the
/// page once per try; a writer that never finishes an update (or a
/// hostile one) yields `Protocol` after a few tries.
pub fn read(mem: SharedMem<'_>) -> Result<StatsRepr> {
    let mut img = vec![0u8; PAGE_SIZE];
    for _ in 0..16 {
        let before = mem.load_u32(stats::field::SEQUENCE, Ordering::Acquire)?;
        mem.read_into(0, &mut img)?;
        fence(Ordering::Acquire);
        let after = mem.load_u32(stats::field::SEQUENCE, Ordering::Relaxed)?;
        if before != after {
            continue;
        }
        if let Some(r) = StatsRepr::parse(&img)? {
            return Ok(r);
        }
    }
    Err(Error::Protocol {
        what: "the counter page kept changing while it was read",
    })
}
