//! The front end of one Xen shared ring (`io/ring.h`) in one page, for
//! any entry size: requests produced by us, responses by the backend.
//! The blkif and netif front ends are this ring with their entries.
//!
//! Everything the backend writes is hostile: `rsp_prod` is read once per
//! take and must not claim more responses than requests outstanding; each
//! response is copied out whole before anyone parses it; our request
//! indexes are only ever written by us, never trusted back.

use core::sync::atomic::{fence, Ordering};

use super::abi::{
    BLKIF_SRING_REQ_EVENT as REQ_EVENT, BLKIF_SRING_REQ_PROD as REQ_PROD, BLKIF_SRING_RING as RING,
    BLKIF_SRING_RSP_EVENT as RSP_EVENT, BLKIF_SRING_RSP_PROD as RSP_PROD,
};
use share_hal::error::{Error, Result};
use share_hal::volatile::SharedMem;

/// Our private indexes, kept between borrows of the page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingState {
    req_prod_pvt: u32,
    rsp_cons: u32,
}

/// Entries of a ring of `entry`-byte entries in a page of `page_len`
/// bytes (`__RING_SIZE`: what fits after the header, rounded down to a
/// power of two).
pub const fn ring_size(page_len: usize, entry: usize) -> u32 {
    let n = (page_len - RING) / entry;
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// The front end of a ring whose entries (the larger of request and
/// response) are `E` bytes.
pub struct FrontRing<'a, const E: usize> {
    page: SharedMem<'a>,
    st: RingState,
}

impl<'a, const E: usize> FrontRing<'a, E> {
    /// Entries of the ring (a constant: index arithmetic stays cheap).
    pub const SIZE: u32 = ring_size(4096, E);

    fn check(page: &SharedMem<'a>) -> Result<()> {
        if page.len() < 4096 || Self::SIZE == 0 {
            return Err(Error::InvalidArgument {
                what: "a ring takes one 4096-byte page",
            });
        }
        Ok(())
    }

    /// Sets up a fresh ring in `page` (`SHARED_RING_INIT`).
    pub fn init(page: SharedMem<'a>) -> Result<Self> {
        Self::check(&page)?;
        page.fill(0, page.len(), 0)?;
        page.store_u32(REQ_EVENT, 1, Ordering::Relaxed)?;
        page.store_u32(RSP_EVENT, 1, Ordering::Release)?;
        Ok(FrontRing {
            page,
            st: RingState::default(),
        })
    }

    /// Continues with indexes parked earlier.
    pub fn resume(page: SharedMem<'a>, st: RingState) -> Result<Self> {
        Self::check(&page)?;
        Ok(FrontRing { page, st })
    }

    pub fn park(&self) -> RingState {
        self.st
    }

    /// Requests made and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.st.req_prod_pvt.wrapping_sub(self.st.rsp_cons)
    }

    pub fn free(&self) -> u32 {
        Self::SIZE.saturating_sub(self.outstanding())
    }

    fn offset(&self, idx: u32) -> usize {
        RING + (idx % Self::SIZE) as usize * E
    }

    /// Writes one request (at most `E` bytes) into the next entry, to be
    /// published by [`FrontRing::publish`]; `Ok(false)`: the ring is full.
    pub fn push(&mut self, req: &[u8]) -> Result<bool> {
        if req.len() > E {
            return Err(Error::InvalidArgument {
                what: "a ring request longer than its entries",
            });
        }
        if self.free() == 0 {
            return Ok(false);
        }
        self.page
            .write_from(self.offset(self.st.req_prod_pvt), req)?;
        self.st.req_prod_pvt = self.st.req_prod_pvt.wrapping_add(1);
        Ok(true)
    }

    /// Publishes the pushed requests (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`);
    /// whether the backend asked to be notified.
    pub fn publish(&mut self) -> Result<bool> {
        let old = self.page.load_u32(REQ_PROD, Ordering::Relaxed)?;
        let new = self.st.req_prod_pvt;
        if old == new {
            return Ok(false);
        }
        self.page.store_u32(REQ_PROD, new, Ordering::Release)?;
        fence(Ordering::SeqCst);
        // Peer-written; any value only changes whether we notify.
        let event = self.page.load_u32(REQ_EVENT, Ordering::Acquire)?;
        Ok(new.wrapping_sub(event) < new.wrapping_sub(old))
    }

    /// Responses published and not yet taken; a producer index that claims
    /// more than the requests outstanding is a protocol error (the ring is
    /// unusable after it).
    pub fn available(&self) -> Result<u32> {
        // Peer-written: read once, checked.
        let prod = self.page.load_u32(RSP_PROD, Ordering::Acquire)?;
        let avail = prod.wrapping_sub(self.st.rsp_cons);
        if avail > self.outstanding() {
            return Err(Error::Protocol {
                what: "a Xen backend published responses to requests never made",
            });
        }
        Ok(avail)
    }

    /// Copies the next response (its first `out.len()` bytes, at most an
    /// entry) out and consumes it (only after [`FrontRing::available`] said
    /// there is one).
    pub fn take_one(&mut self, out: &mut [u8]) -> Result<()> {
        if self.outstanding() == 0 || out.len() > E {
            return Err(Error::InvalidArgument {
                what: "no response to take, or one longer than an entry",
            });
        }
        self.page.read_into(self.offset(self.st.rsp_cons), out)?;
        self.st.rsp_cons = self.st.rsp_cons.wrapping_add(1);
        Ok(())
    }

    /// Asks to be notified of the next response
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`); whether responses are waiting
    /// already (take them instead of sleeping).
    pub fn prepare_wait(&mut self) -> Result<bool> {
        self.page.store_u32(
            RSP_EVENT,
            self.st.rsp_cons.wrapping_add(1),
            Ordering::Release,
        )?;
        fence(Ordering::SeqCst);
        let prod = self.page.load_u32(RSP_PROD, Ordering::Acquire)?;
        Ok(prod != self.st.rsp_cons)
    }
}

/// The backend side, for tests and fuzz targets: reads requests and
/// writes responses as dom0's backends do, at the backend's private
/// indexes.
pub mod back {
    use super::*;

    /// The requests published and not yet taken at `req_cons`, each its
    /// `E` bytes.
    pub fn take_requests<const E: usize>(
        page: &SharedMem<'_>,
        req_cons: &mut u32,
        mut f: impl FnMut([u8; E]),
    ) -> Result<()> {
        let size = ring_size(4096, E);
        let prod = page.load_u32(REQ_PROD, Ordering::Acquire)?;
        let n = prod.wrapping_sub(*req_cons).min(size);
        for _ in 0..n {
            let mut b = [0u8; E];
            page.read_into(RING + (*req_cons % size) as usize * E, &mut b)?;
            f(b);
            *req_cons = req_cons.wrapping_add(1);
        }
        page.store_u32(REQ_EVENT, req_cons.wrapping_add(1), Ordering::Release)
    }

    /// Writes one response at `rsp_prod_pvt` and publishes it.
    pub fn respond<const E: usize>(
        page: &SharedMem<'_>,
        rsp_prod_pvt: &mut u32,
        rsp: &[u8],
    ) -> Result<()> {
        let size = ring_size(4096, E);
        page.write_from(RING + (*rsp_prod_pvt % size) as usize * E, rsp)?;
        *rsp_prod_pvt = rsp_prod_pvt.wrapping_add(1);
        page.store_u32(RSP_PROD, *rsp_prod_pvt, Ordering::Release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{BLKIF_RING_SIZE_1_PAGE, BLKIF_SRING_ENTRY_SIZE};

    #[test]
    fn ring_sizes_are_those_of_the_c_macros() {
        assert_eq!(
            ring_size(4096, BLKIF_SRING_ENTRY_SIZE),
            BLKIF_RING_SIZE_1_PAGE
        );
        assert_eq!(ring_size(4096, 12), crate::abi::NETIF_TX_RING_SIZE);
        assert_eq!(ring_size(4096, 8), crate::abi::NETIF_RX_RING_SIZE);
    }
}
