//! The disk server's whole request path (blkback-uk's `Server`: take,
//! indirect pages, grant copies, store, responses) against a hostile
//! member, over an in-memory platform whose grant copy checks every grant.
//!
//! Input: byte 0 configures the disk (bit 0 read-only, bits 1..5 dom0's
//! feature policy, bit 5 response lane never drained); then 4096 bytes of
//! the member's page 0 and 4096 of its page 1 (granted to the server as
//! grant refs 0 and 1: indirect segment lists or data); then request slots
//! of 128 bytes, their ids replaced by their index. A slot whose first byte
//! is 0xff instead stores bytes 1..5 as the request lane's producer index.
//!
//! Invariants besides "no panic": every request queued is answered at most
//! once, with its own id (the client checks); a read-only disk is never
//! written; nothing is written past what a valid request names; a service
//! pass costs at most `DISCARD_SECTORS_PER_PASS` discarded sectors and
//! `SYNCS_PER_PASS` syncs for the member, and at most [`MAX_PASS`] of wall
//! time (issue 17).
#![no_main]

use std::cell::RefCell;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use blkback_uk::client::BlkClient;
use blkback_uk::ram::RamStore;
use blkback_uk::server::{Progress, DISCARD_SECTORS_PER_PASS, SYNCS_PER_PASS};
use blkback_uk::{Server, ServerConfig};
use std::time::Duration;

/// The most CPU time one service pass may take: this thread's, not wall
/// time (a loaded machine preempting the fuzzer is not the server doing
/// too much work).
const MAX_PASS: Duration = Duration::from_millis(250);

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One service pass, checked against its bounds.
fn pass<P: Platform>(server: &mut Server<P, RamStore>, p: &mut P) -> Progress {
    let t = thread_cpu_time();
    let pr = server.service(p);
    let took = thread_cpu_time().saturating_sub(t);
    assert!(pr.max_cost.discarded_sectors <= DISCARD_SECTORS_PER_PASS, "{pr:?}");
    assert!(pr.max_cost.syncs <= SYNCS_PER_PASS, "{pr:?}");
    assert!(took <= MAX_PASS, "a pass took {took:?} of CPU time");
    pr
}
use libfuzzer_sys::fuzz_target;
use share_hal::platform::{
    Access, Clock, CopyPtr, CopySeg, CopyStatus, DomId, EventChannels, Frame, GrantTable, Mapping,
    Memory, PageBlock, Platform, Port, PAGE_SIZE,
};
use share_hal::share::ShareRef;
use share_hal::vdevice::Applied;
use share_hal::wire::blk::{features, REQUEST_SIZE};
use share_hal::wire::vdevice::{flags, EntryRepr, Kind, Role};
use share_hal::{Error, GrantRef, Result, SharedMem};

const SERVER: DomId = 1;
const MEMBER: DomId = 2;
const SECTORS: u64 = 256;

#[repr(C, align(4096))]
struct Page([u8; PAGE_SIZE]);

struct Grant {
    frame: u64,
    to: DomId,
    access: Access,
    by: DomId,
}

/// Every page of both parties, by frame number.
#[derive(Default)]
struct World {
    /// Blocks as allocated (freed when the world drops).
    blocks: Vec<(*mut Page, usize)>,
    /// Frame number -> its page.
    frames: Vec<*mut Page>,
    grants: Vec<Option<Grant>>,
}

impl World {
    fn ptr(&self, frame: u64) -> Option<*mut u8> {
        self.frames.get(frame as usize).map(|p| p.cast::<u8>())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for &(ptr, len) in &self.blocks {
            // SAFETY: each block came from Box::into_raw of a boxed slice
            // of `len` pages and is freed once, after every user of its
            // pages (pages, mappings, server, client) was dropped.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
        }
    }
}

/// One party of the fake: both share the world, each with its own domid.
struct Fake {
    me: DomId,
    world: Rc<RefCell<World>>,
}

struct FakePages {
    /// Frames allocated together are contiguous: one allocation.
    base: NonNull<u8>,
    first: u64,
    count: usize,
}

impl PageBlock for FakePages {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: the pages live in the world, which the fuzz iteration
        // drops only after every block and mapping; every access to them goes through
        // SharedMem or the raw copies below, never through references.
        unsafe { SharedMem::new(self.base, self.count * PAGE_SIZE) }
    }
    fn count(&self) -> usize {
        self.count
    }
    fn frame(&self, index: usize) -> Option<Frame> {
        (index < self.count).then(|| Frame(self.first + index as u64))
    }
}

struct FakeMapping {
    base: NonNull<u8>,
    count: usize,
}

impl Mapping for FakeMapping {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: as for FakePages: the frames outlive every mapping (the
        // world is dropped last).
        unsafe { SharedMem::new(self.base, self.count * PAGE_SIZE) }
    }
    fn count(&self) -> usize {
        self.count
    }
}

impl Memory for Fake {
    type Pages = FakePages;
    fn alloc_pages(&mut self, count: usize) -> Result<FakePages> {
        if count == 0 || count > 4096 {
            return Err(Error::OutOfMemory);
        }
        let mut w = self.world.borrow_mut();
        let first = w.frames.len() as u64;
        // Pages of one block lie back to back, as a share's mapping needs.
        let block: Box<[Page]> = (0..count).map(|_| Page([0; PAGE_SIZE])).collect();
        let ptr = Box::into_raw(block).cast::<Page>();
        w.blocks.push((ptr, count));
        for i in 0..count {
            w.frames.push(ptr.wrapping_add(i));
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(Error::OutOfMemory)?;
        Ok(FakePages {
            base,
            first,
            count,
        })
    }
}

impl GrantTable for Fake {
    type Mapping = FakeMapping;
    fn grant(&mut self, frame: Frame, to: DomId, access: Access) -> Result<GrantRef> {
        let mut w = self.world.borrow_mut();
        let g = w.grants.len() as u32;
        w.grants.push(Some(Grant {
            frame: frame.0,
            to,
            access,
            by: self.me,
        }));
        Ok(GrantRef(g))
    }
    fn revoke(&mut self, gref: GrantRef) -> Result<()> {
        let mut w = self.world.borrow_mut();
        match w.grants.get_mut(gref.0 as usize) {
            Some(g @ Some(_)) => {
                *g = None;
                Ok(())
            }
            _ => Err(Error::NoGrant {
                domid: self.me,
                gref,
            }),
        }
    }
    fn map(&mut self, from: DomId, grefs: &[GrantRef], _access: Access) -> Result<FakeMapping> {
        let w = self.world.borrow();
        let mut frames = Vec::new();
        for g in grefs {
            match w.grants.get(g.0 as usize) {
                Some(Some(gr)) if gr.by == from && gr.to == self.me => frames.push(gr.frame),
                _ => return Err(Error::NoGrant { domid: from, gref: *g }),
            }
        }
        let first = *frames.first().ok_or(Error::InvalidArgument { what: "map nothing" })?;
        // Pages of one allocation lie back to back; a share is one.
        let base = w.ptr(first).ok_or(Error::OutOfMemory)?;
        for (k, f) in frames.iter().enumerate() {
            let p = w.ptr(*f).ok_or(Error::OutOfMemory)?;
            if p != base.wrapping_add(k * PAGE_SIZE) {
                return Err(Error::Unsupported {
                    op: "map",
                    why: "fake maps contiguous frames only",
                });
            }
        }
        Ok(FakeMapping {
            base: NonNull::new(base).ok_or(Error::OutOfMemory)?,
            count: frames.len(),
        })
    }
    fn unmap(&mut self, _m: FakeMapping) -> Result<()> {
        Ok(())
    }
    fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()> {
        let w = self.world.borrow();
        for s in segs.iter_mut() {
            let resolve = |p: CopyPtr, write: bool| -> Result<*mut u8> {
                let (frame, off) = match p {
                    CopyPtr::Local { frame, offset } => (frame.0, offset),
                    CopyPtr::Foreign { domid, gref, offset } => match w.grants.get(gref.0 as usize)
                    {
                        Some(Some(g))
                            if g.by == domid
                                && g.to == self.me
                                && (!write || g.access == Access::ReadWrite) =>
                        {
                            (g.frame, offset)
                        }
                        Some(Some(g)) if g.by == domid && g.to == self.me => {
                            return Err(Error::ReadOnlyGrant { domid, gref })
                        }
                        _ => return Err(Error::NoGrant { domid, gref }),
                    },
                };
                assert!(usize::from(off) + usize::from(s.len) <= PAGE_SIZE, "sg_xfer let a segment leave its page");
                let base = w.ptr(frame).ok_or(Error::InvalidArgument { what: "frame" })?;
                Ok(base.wrapping_add(usize::from(off)))
            };
            s.status = match (resolve(s.src, false), resolve(s.dst, true)) {
                (Ok(src), Ok(dst)) => {
                    // SAFETY: both ranges lie inside live pages of the world
                    // (checked above); `copy` allows overlap.
                    unsafe { std::ptr::copy(src, dst, usize::from(s.len)) };
                    CopyStatus::Done
                }
                (Err(e), _) | (_, Err(e)) => CopyStatus::Failed(e),
            };
        }
        Ok(())
    }
}

impl EventChannels for Fake {
    fn alloc_unbound(&mut self, _remote: DomId) -> Result<Port> {
        Ok(Port(1))
    }
    fn bind_interdomain(&mut self, _remote: DomId, _port: Port) -> Result<Port> {
        Ok(Port(2))
    }
    fn notify(&mut self, _port: Port) -> Result<()> {
        Ok(())
    }
    fn close(&mut self, _port: Port) -> Result<()> {
        Ok(())
    }
    fn wait(&mut self, _deadline: Option<u64>, _fired: &mut dyn FnMut(Port)) -> Result<()> {
        Err(Error::TimedOut)
    }
}

impl Clock for Fake {
    fn now_ns(&self) -> u64 {
        0
    }
}

impl Platform for Fake {
    fn domid(&self) -> DomId {
        self.me
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 1 + 2 * PAGE_SIZE {
        return;
    }
    let cfg = data[0];
    let read_only = cfg & 1 != 0;
    let policy = u32::from(cfg >> 1) & features::ALL;
    let never_drain = cfg & 0x20 != 0;
    let world = Rc::new(RefCell::new(World::default()));
    {
        let mut o = Fake {
            me: SERVER,
            world: world.clone(),
        };
        let mut m = Fake {
            me: MEMBER,
            world: world.clone(),
        };
        // The member's two pages: grant refs 0 and 1, read-write.
        let pages = m.alloc_pages(2).unwrap();
        pages.mem().write_from(0, &data[1..1 + 2 * PAGE_SIZE]).unwrap();
        for i in 0..2 {
            m.grant(pages.frame(i).unwrap(), SERVER, Access::ReadWrite)
                .unwrap();
        }
        // A small server (64 indirect segments, 80 bounce pages) keeps
        // each run cheap; the limits are checked the same way at any size.
        let config = ServerConfig {
            bounce_pages: 80,
            max_indirect_segments: 64,
        };
        let mut server = Server::new(&mut o, vec![RamStore::new(SECTORS)], config).unwrap();
        let entry = EntryRepr {
            kind: Kind::Disk,
            role: Role::Owner,
            flags: if read_only { flags::READ_ONLY } else { 0 },
            subtype: policy,
            numpages: 3,
            peer: MEMBER,
            share_ref: GrantRef(0),
            status: 0,
            param: 0,
        };
        let Applied::Ok {
            share_ref: Some(g),
        } = server.apply(&mut o, 0, &EntryRepr::EMPTY, &entry)
        else {
            panic!("the entry was refused");
        };
        let mut c = BlkClient::attach(
            &mut m,
            ShareRef {
                owner: SERVER,
                descriptor: g,
            },
        )
        .unwrap();
        let mut answered = Vec::new();
        let mut queued = 0u64;
        let mut lying = false;
        for (i, slot) in data[1 + 2 * PAGE_SIZE..].chunks(REQUEST_SIZE).enumerate() {
            if slot.len() < REQUEST_SIZE {
                break;
            }
            if slot[0] == 0xff {
                let v = u32::from_le_bytes([slot[1], slot[2], slot[3], slot[4]]);
                let hdr = c.layout().requests.header;
                c.raw_share().store_u32(hdr, v, Ordering::Release).unwrap();
                lying = true;
            } else {
                let mut raw = [0u8; REQUEST_SIZE];
                raw.copy_from_slice(slot);
                raw[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                match c.submit_raw(&raw) {
                    Ok(true) => queued += 1,
                    Ok(false) => {}
                    Err(_) => {}
                }
                let _ = c.kick(&mut m);
            }
            if i % 8 == 7 {
                for _ in 0..4 {
                    pass(&mut server, &mut o);
                }
                if !never_drain && !lying {
                    c.poll(&mut m, &mut answered)
                        .expect("a response the member did not ask for");
                }
            }
        }
        for _ in 0..8 {
            pass(&mut server, &mut o);
            pass(&mut server, &mut o);
            if !never_drain && !lying {
                c.poll(&mut m, &mut answered)
                    .expect("a response the member did not ask for");
            }
        }
        if !never_drain && !lying {
            assert!(answered.len() as u64 <= queued);
            if server.stats().cut_off == 0 {
                assert_eq!(answered.len() as u64, queued, "a request was never answered");
            }
        }
        if read_only {
            assert!(
                server.store(0).unwrap().bytes().iter().all(|&b| b == 0),
                "a read-only disk was written"
            );
        }
        drop(c);
        drop(server);
        drop(pages);
    }
    drop(world);
});
