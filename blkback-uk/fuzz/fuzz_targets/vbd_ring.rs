//! blkback-uk's `vbd` store (a Xen block frontend) against a hostile
//! blkback: the backend answers from the fuzz input: echoed or invented
//! ids and operations, any status, producer indexes anywhere, or silence
//! (the batch deadline). The store's ring parsing (xen_pv::blkif)
//! and its response matching must never panic, never loop without bound,
//! and once broken refuse everything. The backend may offer indirect
//! segments (any count; the store bounds it), and answers an indirect
//! request with its indirect_op, BLKIF_OP_INDIRECT or anything else.
//! Batches come in private buffers or (input bit) on the bounce pages the
//! store lends to the server, in place.
#![no_main]

use std::sync::atomic::Ordering;

use blkback_uk::store::{Io, IoKind, SharedIo, Store, StoreError};
use blkback_uk::vbd::{FlushKind, RingEvents, VbdBounce, VbdInfo, VbdPages, VbdStore};
use libfuzzer_sys::fuzz_target;
use share_local::{LocalHost, LocalPages, LocalPlatform};
use share_hal::platform::{Access, Clock, GrantTable, Mapping, PageBlock};
use xen_pv::abi::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_INDIRECT, BLKIF_RESPONSE_SIZE, BLKIF_SRING_RING,
    BLKIF_SRING_RSP_PROD,
};
use xen_pv::blkif::{back, AnyRequest, BlkifResponse, RING_SIZE};
use share_hal::{Error, GrantRef, Result};

struct Hostile {
    p: LocalPlatform,
    host: LocalHost,
    ring_ref: GrantRef,
    input: Vec<u8>,
    at: usize,
    req_cons: u32,
    rsp_prod: u32,
    seen: Vec<AnyRequest>,
    /// What the store may use: the offer within its bounds.
    offered: u16,
}

impl Hostile {
    fn byte(&mut self) -> Option<u8> {
        let b = self.input.get(self.at).copied();
        self.at += 1;
        b
    }
    fn word(&mut self) -> u32 {
        u32::from_le_bytes([(); 4].map(|_| self.byte().unwrap_or(0)))
    }
}

impl RingEvents for Hostile {
    fn notify(&mut self) -> Result<()> {
        Ok(())
    }
    fn wait(&mut self, deadline_ns: u64) -> Result<()> {
        let Some(op) = self.byte() else {
            let now = self.p.now_ns();
            self.host.advance(deadline_ns.saturating_sub(now));
            return Err(Error::TimedOut);
        };
        let ring = self.p.map(7, &[self.ring_ref], Access::ReadWrite)?;
        let m = ring.mem();
        let before = self.seen.len();
        back::take_any_requests(&m, &mut self.req_cons, &mut self.seen)?;
        for r in &self.seen[before..] {
            match r {
                AnyRequest::Direct(r) => {
                    assert!(usize::from(r.nr_segments) <= BLKIF_MAX_SEGMENTS_PER_REQUEST)
                }
                AnyRequest::Indirect(r) => {
                    // Never more than we use, the backend offered, or 12
                    // or fewer (those go plain).
                    assert!(r.nr_segments > 11 && r.nr_segments <= 256);
                    assert!(r.nr_segments <= self.offered);
                }
            }
        }
        match op % 4 {
            // Answer the oldest request seen, with any status.
            0 | 1 => {
                if !self.seen.is_empty() {
                    let r = self.seen.remove(0);
                    let b = self.byte().unwrap_or(0);
                    let status = i16::from(b as i8 % 3);
                    let operation = match r {
                        AnyRequest::Direct(r) => r.operation,
                        // Linux's echo, blkif.h's, or another.
                        AnyRequest::Indirect(r) => match b >> 6 {
                            0 | 1 => r.indirect_op,
                            2 => BLKIF_OP_INDIRECT,
                            _ => b & 7,
                        },
                    };
                    back::respond(&m, &mut self.rsp_prod, &BlkifResponse { id: r.id(), operation, status })?;
                }
            }
            // An invented response.
            2 => {
                let mut b = [0u8; BLKIF_RESPONSE_SIZE];
                for x in b.iter_mut() {
                    *x = self.byte().unwrap_or(0);
                }
                let at = BLKIF_SRING_RING + (self.rsp_prod % RING_SIZE) as usize * 112;
                m.write_from(at, &b)?;
                self.rsp_prod = self.rsp_prod.wrapping_add(1);
                m.store_u32(BLKIF_SRING_RSP_PROD, self.rsp_prod, Ordering::Release)?;
            }
            // A producer index anywhere.
            _ => {
                let v = self.word();
                m.store_u32(BLKIF_SRING_RSP_PROD, v, Ordering::Release)?;
            }
        }
        self.p.unmap(ring)
    }
    fn now_ns(&self) -> u64 {
        self.p.now_ns()
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let host = LocalHost::new();
    let mut front = host.domain(7);
    // 0: none; otherwise 12..=300 offered (the store bounds it by 256 and
    // its 48 bounce pages).
    let offered = match data[2] {
        0 => 0u16,
        x => 11 + u16::from(x),
    };
    let set = VbdBounce::new(&mut front, 0, 48).unwrap();
    let pages = VbdPages::new(&mut front, 0).unwrap();
    let backend = Hostile {
        p: host.domain(0),
        host: host.clone(),
        ring_ref: pages.ring_ref(),
        input: data[3..].to_vec(),
        offered: offered.min(48),
        at: 0,
        req_cons: 0,
        rsp_prod: 0,
        seen: Vec::new(),
    };
    let info = VbdInfo {
        dev: "device/vbd/51712".into(),
        vdev: 51712,
        backend: 0,
        sectors: 1024,
        sector_size: 512,
        read_only: false,
        flush: if data[0] & 1 == 0 { FlushKind::FlushCache } else { FlushKind::Barrier },
        persistent: data[2] & 1 == 1,
        max_indirect_segments: offered.min(256),
    };
    let mut s = VbdStore::new(pages, info, backend, set.clone()).unwrap();
    s.set_batch_timeout(1_000_000_000);
    for round in 0..2 {
        // Up to 80 pages: plain and indirect requests, more than the
        // bounce pages hold at once.
        let mut w = vec![0x5au8; 512 * (1 + usize::from(data[1] & 0x7f) * 5)];
        let mut r = vec![0u8; 8192];
        let wlen = w.len();
        let mut ios = [
            Io::new(IoKind::Write { fua: data[1] & 0x80 != 0 }, u64::from(data[0] >> 1), &mut w),
            Io::new(IoKind::Read, 100, &mut r),
            Io::new(IoKind::Flush, 0, &mut []),
        ];
        let was_broken = s.broken().is_some();
        let lent = s.lent_pages().map(|l| l.downcast::<LocalPages>().unwrap());
        assert!(lent.is_none() || set.borrow().free() == 48);
        match lent {
            Some(l) if data[0] & 2 != 0 => {
                // As the server lays a batch out: the write's pages from 0,
                // the read's after them.
                let wpages = wlen.div_ceil(4096);
                let mut shared = [
                    SharedIo::new(ios[0].kind, ios[0].sector, 0, wlen),
                    SharedIo::new(IoKind::Read, 100, wpages * 4096, 8192),
                    SharedIo::new(IoKind::Flush, 0, 0, 0),
                ];
                s.execute_shared(&l.mem(), &mut shared);
                assert!(!was_broken);
            }
            _ => {
                s.execute(&mut ios);
                if was_broken {
                    assert!(ios.iter().all(|io| io.result == Err(StoreError::Io { errno: 5 })));
                }
            }
        }
        // Pages only ever leave the set (a broken store's), never return.
        assert!(set.borrow().free() <= 48);
        let _ = round;
    }
    let _ = s.info();
});
