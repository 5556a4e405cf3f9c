//! The front end of a Xen block device ring (`blkif`, `xen/io/blkif.h`):
//! one page shared with a block backend (dom0's `blkback`), requests
//! produced by us, responses produced by the backend.
//!
//! This is a plain ring over a [`SharedMem`] page, without hypercalls, so
//! that tests and the fuzz target (`blkback-uk/fuzz/fuzz_targets/vbd_ring.rs`)
//! drive it over any memory. Everything the backend writes is hostile:
//! `rsp_prod` is read once per pass and must not claim more responses than
//! requests we have outstanding; each response is copied out (16 bytes)
//! before it is parsed; the request indexes in the page are only ever
//! written by us, never trusted back.

use alloc::vec::Vec;

use super::abi::*;
use crate::ring::{self, RingState};
use share_hal::error::{Error, Result};
use share_hal::volatile::SharedMem;

/// Entries of a one-page ring.
pub const RING_SIZE: u32 = BLKIF_RING_SIZE_1_PAGE;
const _: () = assert!(ring::ring_size(4096, BLKIF_SRING_ENTRY_SIZE) == RING_SIZE);

/// One segment of a request: `first..=last` sectors of a granted page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifSegment {
    pub gref: u32,
    pub first_sect: u8,
    pub last_sect: u8,
}

/// A `blkif_request` (read, write, flush, barrier).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkifRequest {
    pub operation: u8,
    /// The device's `virtual-device` number.
    pub handle: u16,
    pub id: u64,
    /// In 512-byte sectors (we never announce `feature-large-sector-size`).
    pub sector: u64,
    pub nr_segments: u8,
    pub segments: [BlkifSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

impl BlkifRequest {
    /// A request without data (flush, barrier).
    pub fn bare(operation: u8, handle: u16, id: u64) -> Self {
        BlkifRequest {
            operation,
            handle,
            id,
            sector: 0,
            nr_segments: 0,
            segments: [BlkifSegment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST],
        }
    }

    /// The request's bytes, as the ring entry holds them.
    pub fn emit(&self) -> Result<[u8; BLKIF_REQUEST_SIZE]> {
        let n = usize::from(self.nr_segments);
        if n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            return Err(Error::InvalidArgument {
                what: "blkif request with more than 11 segments",
            });
        }
        let mut b = [0u8; BLKIF_REQUEST_SIZE];
        b[BLKIF_REQUEST_OPERATION] = self.operation;
        b[BLKIF_REQUEST_NR_SEGMENTS] = self.nr_segments;
        b[BLKIF_REQUEST_HANDLE..BLKIF_REQUEST_HANDLE + 2]
            .copy_from_slice(&self.handle.to_le_bytes());
        b[BLKIF_REQUEST_ID..BLKIF_REQUEST_ID + 8].copy_from_slice(&self.id.to_le_bytes());
        b[BLKIF_REQUEST_SECTOR_NUMBER..BLKIF_REQUEST_SECTOR_NUMBER + 8]
            .copy_from_slice(&self.sector.to_le_bytes());
        for (i, s) in self.segments[..n].iter().enumerate() {
            let at = BLKIF_REQUEST_SEG + i * BLKIF_SEGMENT_SIZE;
            b[at + BLKIF_SEGMENT_GREF..at + BLKIF_SEGMENT_GREF + 4]
                .copy_from_slice(&s.gref.to_le_bytes());
            b[at + BLKIF_SEGMENT_FIRST_SECT] = s.first_sect;
            b[at + BLKIF_SEGMENT_LAST_SECT] = s.last_sect;
        }
        Ok(b)
    }

    /// Parses request bytes (the backend side of tests; never used on
    /// peer-written memory by the front end).
    pub fn parse(b: &[u8; BLKIF_REQUEST_SIZE]) -> BlkifRequest {
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let mut segments = [BlkifSegment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST];
        for (i, s) in segments.iter_mut().enumerate() {
            let at = BLKIF_REQUEST_SEG + i * BLKIF_SEGMENT_SIZE;
            let mut g = [0u8; 4];
            g.copy_from_slice(&b[at..at + 4]);
            *s = BlkifSegment {
                gref: u32::from_le_bytes(g),
                first_sect: b[at + BLKIF_SEGMENT_FIRST_SECT],
                last_sect: b[at + BLKIF_SEGMENT_LAST_SECT],
            };
        }
        BlkifRequest {
            operation: b[BLKIF_REQUEST_OPERATION],
            nr_segments: b[BLKIF_REQUEST_NR_SEGMENTS],
            handle: u16::from_le_bytes([b[BLKIF_REQUEST_HANDLE], b[BLKIF_REQUEST_HANDLE + 1]]),
            id: u64_at(BLKIF_REQUEST_ID),
            sector: u64_at(BLKIF_REQUEST_SECTOR_NUMBER),
            segments,
        }
    }
}

/// Indirect pages a request of `nr_segments` segments needs
/// (`ceil(nr_segments / 512)`, blkif.h's rule).
pub const fn indirect_pages_for(nr_segments: usize) -> usize {
    nr_segments.div_ceil(BLKIF_SEGMENTS_PER_INDIRECT_PAGE)
}

impl BlkifSegment {
    /// The segment's 8 bytes (`struct blkif_request_segment`), as an
    /// indirect page holds them; the two bytes after `last_sect` are
    /// padding, zero.
    pub fn emit(&self) -> [u8; BLKIF_SEGMENT_SIZE] {
        let mut b = [0u8; BLKIF_SEGMENT_SIZE];
        b[BLKIF_SEGMENT_GREF..BLKIF_SEGMENT_GREF + 4].copy_from_slice(&self.gref.to_le_bytes());
        b[BLKIF_SEGMENT_FIRST_SECT] = self.first_sect;
        b[BLKIF_SEGMENT_LAST_SECT] = self.last_sect;
        b
    }

    pub fn parse(b: &[u8; BLKIF_SEGMENT_SIZE]) -> BlkifSegment {
        BlkifSegment {
            gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            first_sect: b[BLKIF_SEGMENT_FIRST_SECT],
            last_sect: b[BLKIF_SEGMENT_LAST_SECT],
        }
    }
}

/// A `blkif_request_indirect` (`BLKIF_OP_INDIRECT`): a read or write of
/// `nr_segments` segments listed in the indirect pages `indirect_grefs`
/// (`struct blkif_request_segment` arrays, 512 to a page; the caller
/// writes them, see [`BlkifSegment::emit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkifIndirectRequest {
    /// `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
    pub indirect_op: u8,
    pub nr_segments: u16,
    pub id: u64,
    pub sector: u64,
    pub handle: u16,
    /// The first [`indirect_pages_for`]`(nr_segments)` are used.
    pub indirect_grefs: [u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
}

impl BlkifIndirectRequest {
    /// The request's bytes as the ring entry holds them (the entry's bytes
    /// past the 64 of the struct are zero). Refuses an operation other than
    /// read or write, no segments, or more than 8 indirect pages' worth.
    pub fn emit(&self) -> Result<[u8; BLKIF_REQUEST_SIZE]> {
        if self.indirect_op != BLKIF_OP_READ && self.indirect_op != BLKIF_OP_WRITE {
            return Err(Error::InvalidArgument {
                what: "blkif indirect request neither read nor write",
            });
        }
        let n = usize::from(self.nr_segments);
        if n == 0 || indirect_pages_for(n) > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST {
            return Err(Error::InvalidArgument {
                what: "blkif indirect request with no segments or more than 8 pages of them",
            });
        }
        let mut b = [0u8; BLKIF_REQUEST_SIZE];
        b[BLKIF_INDIRECT_OPERATION] = BLKIF_OP_INDIRECT;
        b[BLKIF_INDIRECT_INDIRECT_OP] = self.indirect_op;
        b[BLKIF_INDIRECT_NR_SEGMENTS..BLKIF_INDIRECT_NR_SEGMENTS + 2]
            .copy_from_slice(&self.nr_segments.to_le_bytes());
        b[BLKIF_INDIRECT_ID..BLKIF_INDIRECT_ID + 8].copy_from_slice(&self.id.to_le_bytes());
        b[BLKIF_INDIRECT_SECTOR_NUMBER..BLKIF_INDIRECT_SECTOR_NUMBER + 8]
            .copy_from_slice(&self.sector.to_le_bytes());
        b[BLKIF_INDIRECT_HANDLE..BLKIF_INDIRECT_HANDLE + 2]
            .copy_from_slice(&self.handle.to_le_bytes());
        for (i, g) in self.indirect_grefs[..indirect_pages_for(n)]
            .iter()
            .enumerate()
        {
            let at = BLKIF_INDIRECT_GREFS + 4 * i;
            b[at..at + 4].copy_from_slice(&g.to_le_bytes());
        }
        Ok(b)
    }

    /// Parses ring entry bytes whose operation is `BLKIF_OP_INDIRECT` (the
    /// backend side of tests; never used on peer-written memory by the
    /// front end). Every gref slot is read, used or not.
    pub fn parse(b: &[u8; BLKIF_REQUEST_SIZE]) -> BlkifIndirectRequest {
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let mut indirect_grefs = [0u32; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST];
        for (i, g) in indirect_grefs.iter_mut().enumerate() {
            let at = BLKIF_INDIRECT_GREFS + 4 * i;
            *g = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        }
        BlkifIndirectRequest {
            indirect_op: b[BLKIF_INDIRECT_INDIRECT_OP],
            nr_segments: u16::from_le_bytes([
                b[BLKIF_INDIRECT_NR_SEGMENTS],
                b[BLKIF_INDIRECT_NR_SEGMENTS + 1],
            ]),
            id: u64_at(BLKIF_INDIRECT_ID),
            sector: u64_at(BLKIF_INDIRECT_SECTOR_NUMBER),
            handle: u16::from_le_bytes([b[BLKIF_INDIRECT_HANDLE], b[BLKIF_INDIRECT_HANDLE + 1]]),
            indirect_grefs,
        }
    }
}

/// A request as the backend side of tests sees it in a ring entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnyRequest {
    Direct(BlkifRequest),
    Indirect(BlkifIndirectRequest),
}

impl AnyRequest {
    pub fn parse(b: &[u8; BLKIF_REQUEST_SIZE]) -> AnyRequest {
        if b[BLKIF_REQUEST_OPERATION] == BLKIF_OP_INDIRECT {
            AnyRequest::Indirect(BlkifIndirectRequest::parse(b))
        } else {
            AnyRequest::Direct(BlkifRequest::parse(b))
        }
    }

    pub fn id(&self) -> u64 {
        match self {
            AnyRequest::Direct(r) => r.id,
            AnyRequest::Indirect(r) => r.id,
        }
    }
}

/// A `blkif_response`, parsed from our private copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkifResponse {
    pub id: u64,
    pub operation: u8,
    pub status: i16,
}

impl BlkifResponse {
    pub fn parse(b: &[u8; BLKIF_RESPONSE_SIZE]) -> BlkifResponse {
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[BLKIF_RESPONSE_ID..BLKIF_RESPONSE_ID + 8]);
        BlkifResponse {
            id: u64::from_le_bytes(id),
            operation: b[BLKIF_RESPONSE_OPERATION],
            status: i16::from_le_bytes([b[BLKIF_RESPONSE_STATUS], b[BLKIF_RESPONSE_STATUS + 1]]),
        }
    }

    pub fn emit(&self) -> [u8; BLKIF_RESPONSE_SIZE] {
        let mut b = [0u8; BLKIF_RESPONSE_SIZE];
        b[BLKIF_RESPONSE_ID..BLKIF_RESPONSE_ID + 8].copy_from_slice(&self.id.to_le_bytes());
        b[BLKIF_RESPONSE_OPERATION] = self.operation;
        b[BLKIF_RESPONSE_STATUS..BLKIF_RESPONSE_STATUS + 2]
            .copy_from_slice(&self.status.to_le_bytes());
        b
    }
}

/// Our private ring indexes, kept between borrows of the page.
pub type FrontState = RingState;

/// The front end's view of the ring page: the generic ring of
/// [`crate::ring`] with blkif's entries.
pub struct FrontRing<'a> {
    ring: ring::FrontRing<'a, BLKIF_SRING_ENTRY_SIZE>,
}

impl<'a> FrontRing<'a> {
    /// Sets up a fresh ring in `page` (`SHARED_RING_INIT`).
    #[inline]
    pub fn init(page: SharedMem<'a>) -> Result<FrontRing<'a>> {
        Ok(FrontRing {
            ring: ring::FrontRing::init(page)?,
        })
    }

    /// Continues with indexes parked earlier.
    pub fn resume(page: SharedMem<'a>, st: FrontState) -> Result<FrontRing<'a>> {
        Ok(FrontRing {
            ring: ring::FrontRing::resume(page, st)?,
        })
    }

    pub fn park(&self) -> FrontState {
        self.ring.park()
    }

    /// Requests made and not yet answered.
    pub fn outstanding(&self) -> u32 {
        self.ring.outstanding()
    }

    /// Entries free for new requests.
    pub fn free(&self) -> u32 {
        self.ring.free()
    }

    /// Writes `req` into the next entry (published by [`publish`]).
    /// `Ok(false)`: the ring is full.
    ///
    /// [`publish`]: FrontRing::publish
    pub fn push(&mut self, req: &BlkifRequest) -> Result<bool> {
        if self.free() == 0 {
            return Ok(false);
        }
        self.ring.push(&req.emit()?)
    }

    /// As [`push`](FrontRing::push), for an indirect request (whose
    /// indirect pages the caller filled first).
    pub fn push_indirect(&mut self, req: &BlkifIndirectRequest) -> Result<bool> {
        if self.free() == 0 {
            return Ok(false);
        }
        self.ring.push(&req.emit()?)
    }

    /// Publishes the pushed requests (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`);
    /// returns whether the backend asked to be notified.
    pub fn publish(&mut self) -> Result<bool> {
        self.ring.publish()
    }

    /// Takes every response published so far into `out`. A producer index
    /// that claims more responses than requests outstanding is a protocol
    /// error (the ring is unusable after it).
    pub fn take(&mut self, out: &mut Vec<BlkifResponse>) -> Result<usize> {
        let avail = self.ring.available()?;
        for _ in 0..avail {
            let mut b = [0u8; BLKIF_RESPONSE_SIZE];
            self.ring.take_one(&mut b)?;
            out.push(BlkifResponse::parse(&b));
        }
        Ok(avail as usize)
    }

    /// Asks to be notified of the next response
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`); returns whether responses are
    /// already waiting (take them instead of sleeping).
    pub fn prepare_wait(&mut self) -> Result<bool> {
        self.ring.prepare_wait()
    }
}

/// The backend side, for tests and the fuzz target only: reads requests
/// and writes responses the way dom0's blkback does.
pub mod back {
    use super::*;

    /// Requests published and not yet taken by the backend at `req_cons`.
    pub fn take_requests(
        page: &SharedMem<'_>,
        req_cons: &mut u32,
        out: &mut Vec<BlkifRequest>,
    ) -> Result<()> {
        ring::back::take_requests::<BLKIF_SRING_ENTRY_SIZE>(page, req_cons, |b| {
            let mut req = [0u8; BLKIF_REQUEST_SIZE];
            req.copy_from_slice(&b[..BLKIF_REQUEST_SIZE]);
            out.push(BlkifRequest::parse(&req));
        })
    }

    /// As [`take_requests`], direct and indirect requests alike.
    pub fn take_any_requests(
        page: &SharedMem<'_>,
        req_cons: &mut u32,
        out: &mut Vec<AnyRequest>,
    ) -> Result<()> {
        ring::back::take_requests::<BLKIF_SRING_ENTRY_SIZE>(page, req_cons, |b| {
            let mut req = [0u8; BLKIF_REQUEST_SIZE];
            req.copy_from_slice(&b[..BLKIF_REQUEST_SIZE]);
            out.push(AnyRequest::parse(&req));
        })
    }

    /// Writes `rsp` at the backend's private producer index `rsp_prod_pvt`
    /// and publishes it.
    pub fn respond(
        page: &SharedMem<'_>,
        rsp_prod_pvt: &mut u32,
        rsp: &BlkifResponse,
    ) -> Result<()> {
        ring::back::respond::<BLKIF_SRING_ENTRY_SIZE>(page, rsp_prod_pvt, &rsp.emit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;

    #[repr(align(4096))]
    struct Page([u8; 4096]);

    fn req(id: u64) -> BlkifRequest {
        let mut r = BlkifRequest::bare(BLKIF_OP_WRITE, 51712, id);
        r.sector = 0x1122_3344_5566;
        r.nr_segments = 2;
        r.segments[0] = BlkifSegment {
            gref: 9,
            first_sect: 0,
            last_sect: 7,
        };
        r.segments[1] = BlkifSegment {
            gref: 10,
            first_sect: 1,
            last_sect: 3,
        };
        r
    }

    #[test]
    fn requests_round_trip_and_bound_segments() {
        let r = req(77);
        let b = r.emit().unwrap();
        assert_eq!(BlkifRequest::parse(&b), r);
        assert_eq!(
            b[BLKIF_REQUEST_HANDLE..BLKIF_REQUEST_HANDLE + 2],
            [0x00, 0xca]
        );
        let bad = BlkifRequest {
            nr_segments: 12,
            ..r
        };
        assert!(bad.emit().is_err());
        let rsp = BlkifResponse {
            id: u64::MAX - 1,
            operation: 3,
            status: -2,
        };
        assert_eq!(BlkifResponse::parse(&rsp.emit()), rsp);
    }

    #[test]
    fn a_ring_round_trip_with_notify_rules_and_wrap() {
        let mut page = Page([0xee; 4096]);
        let m = SharedMem::from_slice(&mut page.0);
        let mut f = FrontRing::init(m).unwrap();
        let mut req_cons = 0u32;
        let mut rsp_prod = 0u32;
        let mut got = Vec::new();
        for round in 0..5u64 {
            for i in 0..RING_SIZE as u64 {
                assert!(f.push(&req(round * 100 + i)).unwrap());
            }
            assert!(!f.push(&req(999)).unwrap(), "the ring is full");
            // The backend asked for an event at 1 (init) or after its last take.
            assert!(f.publish().unwrap());
            let mut reqs = Vec::new();
            back::take_requests(&m, &mut req_cons, &mut reqs).unwrap();
            assert_eq!(reqs.len(), RING_SIZE as usize);
            assert_eq!(reqs[3], req(round * 100 + 3));
            for r in &reqs {
                let rsp = BlkifResponse {
                    id: r.id,
                    operation: r.operation,
                    status: 0,
                };
                back::respond(&m, &mut rsp_prod, &rsp).unwrap();
            }
            got.clear();
            assert_eq!(f.take(&mut got).unwrap(), RING_SIZE as usize);
            assert_eq!(got[5].id, round * 100 + 5);
            assert!(!f.prepare_wait().unwrap());
            assert_eq!(f.outstanding(), 0);
        }
    }

    #[test]
    fn a_backend_claiming_too_many_responses_is_refused() {
        let mut page = Page([0; 4096]);
        let m = SharedMem::from_slice(&mut page.0);
        let mut f = FrontRing::init(m).unwrap();
        assert!(f.push(&req(1)).unwrap());
        f.publish().unwrap();
        m.store_u32(BLKIF_SRING_RSP_PROD, 2, Ordering::Relaxed)
            .unwrap();
        let mut out = Vec::new();
        assert!(matches!(f.take(&mut out), Err(Error::Protocol { .. })));
        assert!(out.is_empty());
        // A producer index behind ours (wrapping to a huge count) too.
        m.store_u32(BLKIF_SRING_RSP_PROD, u32::MAX, Ordering::Relaxed)
            .unwrap();
        assert!(matches!(f.take(&mut out), Err(Error::Protocol { .. })));
        m.store_u32(BLKIF_SRING_RSP_PROD, 1, Ordering::Relaxed)
            .unwrap();
        assert_eq!(f.take(&mut out), Ok(1));
    }

    #[test]
    fn indirect_requests_sit_where_blkif_h_puts_them() {
        let r = BlkifIndirectRequest {
            indirect_op: BLKIF_OP_WRITE,
            nr_segments: 513,
            id: 0x0102_0304_0506_0708,
            sector: 0x1122_3344_5566_7788,
            handle: 51712,
            indirect_grefs: [11, 12, 0xdead, 0, 0, 0, 0, 0xbeef],
        };
        let b = r.emit().unwrap();
        // The offsets the C compiler gives (abi.rs checks the constants
        // against the installed header), here spelled out byte by byte.
        assert_eq!(b[0], 6, "operation: BLKIF_OP_INDIRECT");
        assert_eq!(b[1], 1, "indirect_op");
        assert_eq!(b[2..4], [0x01, 0x02], "nr_segments: 513, little-endian u16");
        assert_eq!(b[4..8], [0; 4], "padding before id");
        assert_eq!(b[8..16], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(b[16..24], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(b[24..26], 51712u16.to_le_bytes());
        assert_eq!(b[26..28], [0; 2], "padding before indirect_grefs");
        assert_eq!(b[28..32], 11u32.to_le_bytes());
        assert_eq!(b[32..36], 12u32.to_le_bytes());
        // 513 segments take 2 pages: only two grefs are written.
        assert!(b[36..].iter().all(|&x| x == 0), "{:?}", &b[36..]);
        let back = BlkifIndirectRequest::parse(&b);
        assert_eq!(
            back,
            BlkifIndirectRequest {
                indirect_grefs: [11, 12, 0, 0, 0, 0, 0, 0],
                ..r
            }
        );
        assert_eq!(AnyRequest::parse(&b), AnyRequest::Indirect(back));
        assert_eq!(AnyRequest::parse(&b).id(), r.id);
        // Bounds: 8 pages of 512 segments, at least one, read or write.
        let full = BlkifIndirectRequest {
            nr_segments: 4096,
            ..r
        };
        assert_eq!(BlkifIndirectRequest::parse(&full.emit().unwrap()), full);
        for bad in [
            BlkifIndirectRequest {
                nr_segments: 4097,
                ..r
            },
            BlkifIndirectRequest {
                nr_segments: 0,
                ..r
            },
            BlkifIndirectRequest {
                indirect_op: BLKIF_OP_FLUSH_DISKCACHE,
                ..r
            },
            BlkifIndirectRequest {
                indirect_op: BLKIF_OP_INDIRECT,
                ..r
            },
        ] {
            assert!(bad.emit().is_err(), "{bad:?}");
        }
        assert_eq!(indirect_pages_for(0), 0);
        assert_eq!(indirect_pages_for(1), 1);
        assert_eq!(indirect_pages_for(512), 1);
        assert_eq!(indirect_pages_for(513), 2);
        assert_eq!(indirect_pages_for(4096), 8);
    }

    #[test]
    fn indirect_segments_are_8_bytes_each() {
        let s = BlkifSegment {
            gref: 0xa0b0_c0d0,
            first_sect: 2,
            last_sect: 7,
        };
        assert_eq!(s.emit(), [0xd0, 0xc0, 0xb0, 0xa0, 2, 7, 0, 0]);
        assert_eq!(BlkifSegment::parse(&s.emit()), s);
        // Segment i of a page is at i * 8: a page holds 512.
        assert_eq!(BLKIF_SEGMENTS_PER_INDIRECT_PAGE, 512);
    }

    #[test]
    fn indirect_requests_go_through_the_ring() {
        let mut page = Page([0xee; 4096]);
        let m = SharedMem::from_slice(&mut page.0);
        let mut f = FrontRing::init(m).unwrap();
        let ind = BlkifIndirectRequest {
            indirect_op: BLKIF_OP_READ,
            nr_segments: 256,
            id: 5,
            sector: 64,
            handle: 51712,
            indirect_grefs: [40, 0, 0, 0, 0, 0, 0, 0],
        };
        assert!(f.push(&req(4)).unwrap());
        assert!(f.push_indirect(&ind).unwrap());
        assert!(f
            .push_indirect(&BlkifIndirectRequest {
                nr_segments: 0,
                ..ind
            })
            .is_err());
        assert_eq!(f.outstanding(), 2);
        f.publish().unwrap();
        let mut got = Vec::new();
        let mut req_cons = 0;
        back::take_any_requests(&m, &mut req_cons, &mut got).unwrap();
        assert_eq!(got, [AnyRequest::Direct(req(4)), AnyRequest::Indirect(ind)]);
        // The old entry's 0xee bytes past the struct are overwritten.
        let mut entry = [0u8; BLKIF_SRING_ENTRY_SIZE];
        m.read_into(BLKIF_SRING_RING + BLKIF_SRING_ENTRY_SIZE, &mut entry)
            .unwrap();
        assert!(entry[64..].iter().all(|&x| x == 0));
        // A full ring refuses an indirect request as a plain one.
        for i in 0..RING_SIZE as u64 - 2 {
            assert!(f.push(&req(10 + i)).unwrap());
        }
        assert!(!f.push_indirect(&ind).unwrap());
    }

    proptest::proptest! {
        #[test]
        fn any_response_bytes_parse(b: [u8; 16]) {
            let r = BlkifResponse::parse(&b);
            proptest::prop_assert_eq!(r.emit(), {
                let mut c = b;
                c[9] = 0;
                c[12..].fill(0);
                c
            });
        }
    }
}
