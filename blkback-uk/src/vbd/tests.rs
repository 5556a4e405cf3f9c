//! The vbd store against a stand-in for dom0's blkback on the in-process
//! platform: the backend maps the store's grants as Xen would, keeps a
//! volatile cache (`disk`) and a durable image (`durable`, copied at each
//! flush), and can misbehave.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use core::cell::RefCell;

use share_hal::platform::{Clock, GrantTable, Mapping};
use share_local::{LocalHost, LocalPages, LocalPlatform};
use xen_pv::blkif::{back, AnyRequest};

use super::*;
use crate::store::{execute_one, SharedIo};
use share_hal::SharedMem;

const FRONT: DomId = 7;
const BACK: DomId = 0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Honest,
    /// Never answers: the batch deadline passes.
    Silent,
    /// Answers with an id never issued.
    BogusId,
    /// Publishes a producer index far ahead.
    TooMany,
    /// Answers every write with BLKIF_RSP_ERROR.
    FailWrites,
    /// Answers every flush with BLKIF_RSP_ERROR.
    FailFlush,
    /// Answers every read and write with operation BLKIF_OP_INDIRECT (for
    /// an indirect request as blkif.h reads, where Linux's blkback echoes
    /// its indirect_op; for a plain one, a lie).
    EchoIndirect,
    /// Answers an indirect request with an operation it was not.
    WrongIndirectOp,
}

#[derive(Default)]
struct Disk {
    cache: Vec<u8>,
    durable: Vec<u8>,
    /// (operation, sector, segments) in the order the backend saw them;
    /// an indirect request as its indirect_op, its segments counted.
    seen: Vec<(u8, u64, u16)>,
    /// Of which were BLKIF_OP_INDIRECT.
    indirect: usize,
    /// Segments the backend takes in an indirect request (as advertised).
    max_indirect: u16,
}

struct FakeBack {
    p: LocalPlatform,
    host: LocalHost,
    ring_ref: GrantRef,
    disk: Rc<RefCell<Disk>>,
    mode: Mode,
    req_cons: u32,
    rsp_prod: u32,
    notified: u32,
}

impl FakeBack {
    fn serve(&mut self) -> Result<()> {
        let ring = self.p.map(FRONT, &[self.ring_ref], Access::ReadWrite)?;
        let m = ring.mem();
        let mut reqs = Vec::new();
        back::take_any_requests(&m, &mut self.req_cons, &mut reqs)?;
        for any in reqs {
            let mut d = self.disk.borrow_mut();
            let mut status = BLKIF_RSP_OKAY;
            let (r, segs) = match any {
                AnyRequest::Direct(r) => (r, r.segments[..usize::from(r.nr_segments)].to_vec()),
                AnyRequest::Indirect(ind) => {
                    d.indirect += 1;
                    let n = usize::from(ind.nr_segments);
                    let mut segs = Vec::new();
                    if n == 0 || ind.nr_segments > d.max_indirect {
                        // Linux's blkback: BLKIF_RSP_ERROR, nothing done.
                        status = -1;
                    } else {
                        for k in 0..xen_pv::blkif::indirect_pages_for(n) {
                            let pg = self.p.map(
                                FRONT,
                                &[GrantRef(ind.indirect_grefs[k])],
                                Access::ReadOnly,
                            )?;
                            let here = (n - k * 512).min(512);
                            for i in 0..here {
                                let mut b = [0u8; 8];
                                pg.mem().read_into(i * 8, &mut b)?;
                                segs.push(BlkifSegment::parse(&b));
                            }
                            self.p.unmap(pg)?;
                        }
                    }
                    let mut r = BlkifRequest::bare(ind.indirect_op, ind.handle, ind.id);
                    r.sector = ind.sector;
                    (r, segs)
                }
            };
            let indirect = matches!(any, AnyRequest::Indirect(_));
            d.seen.push((r.operation, r.sector, segs.len() as u16));
            let mut at = r.sector as usize * SECTOR_SIZE;
            for s in &segs {
                let seg = self.p.map(FRONT, &[GrantRef(s.gref)], Access::ReadWrite)?;
                let off = usize::from(s.first_sect) * SECTOR_SIZE;
                let len = (usize::from(s.last_sect) + 1 - usize::from(s.first_sect)) * SECTOR_SIZE;
                match r.operation {
                    BLKIF_OP_READ => seg.mem().write_from(off, &d.cache[at..at + len])?,
                    BLKIF_OP_WRITE if self.mode == Mode::FailWrites => status = -1,
                    BLKIF_OP_WRITE => seg.mem().read_into(off, &mut d.cache[at..at + len])?,
                    _ => status = -1,
                }
                assert!(s.first_sect <= s.last_sect && s.last_sect < 8);
                at += len;
                self.p.unmap(seg)?;
            }
            if r.operation == BLKIF_OP_FLUSH_DISKCACHE {
                if self.mode == Mode::FailFlush {
                    status = -1;
                } else {
                    d.durable = d.cache.clone();
                }
            }
            let id = if self.mode == Mode::BogusId {
                r.id ^ 0x100
            } else {
                r.id
            };
            let operation = match self.mode {
                Mode::EchoIndirect if r.operation <= BLKIF_OP_WRITE => BLKIF_OP_INDIRECT,
                Mode::WrongIndirectOp if indirect => r.operation ^ 1,
                _ => r.operation,
            };
            back::respond(
                &m,
                &mut self.rsp_prod,
                &BlkifResponse {
                    id,
                    operation,
                    status,
                },
            )?;
        }
        if self.mode == Mode::TooMany {
            m.store_u32(
                xen_pv::abi::BLKIF_SRING_RSP_PROD,
                self.rsp_prod.wrapping_add(40),
                core::sync::atomic::Ordering::Release,
            )?;
        }
        self.p.unmap(ring)
    }
}

impl RingEvents for FakeBack {
    fn notify(&mut self) -> Result<()> {
        self.notified += 1;
        Ok(())
    }
    fn wait(&mut self, deadline_ns: u64) -> Result<()> {
        if self.mode == Mode::Silent {
            let now = self.p.now_ns();
            self.host.advance(deadline_ns.saturating_sub(now));
            return Err(Error::TimedOut);
        }
        self.serve()
    }
    fn now_ns(&self) -> u64 {
        self.p.now_ns()
    }
}

fn info(sectors: u64, flush: FlushKind) -> VbdInfo {
    VbdInfo {
        dev: "device/vbd/51712".into(),
        vdev: 51712,
        backend: BACK,
        sectors,
        sector_size: 512,
        read_only: false,
        flush,
        persistent: false,
        max_indirect_segments: 0,
    }
}

fn store(
    mode: Mode,
    sectors: u64,
    bounce: usize,
) -> (VbdStore<LocalPages, FakeBack>, Rc<RefCell<Disk>>) {
    store_with(mode, sectors, bounce, 0, 0)
}

/// A store whose backend offers `offered` indirect segments, and takes
/// `takes` (what Linux's blkback does when the two differ: refuses).
fn store_with(
    mode: Mode,
    sectors: u64,
    bounce: usize,
    offered: u16,
    takes: u16,
) -> (VbdStore<LocalPages, FakeBack>, Rc<RefCell<Disk>>) {
    let (host, mut front, set) = front_with_set(bounce);
    store_in(&host, &mut front, &set, mode, sectors, offered, takes)
}

/// A frontend domain with a set of `count` bounce pages granted to BACK.
fn front_with_set(count: usize) -> (LocalHost, LocalPlatform, SharedBounce<LocalPages>) {
    let host = LocalHost::new();
    let mut front = host.domain(FRONT);
    let set = VbdBounce::new(&mut front, BACK, count).unwrap();
    (host, front, set)
}

impl FakeBack {
    fn new(host: &LocalHost, ring_ref: GrantRef, disk: Rc<RefCell<Disk>>, mode: Mode) -> Self {
        FakeBack {
            p: host.domain(BACK),
            host: host.clone(),
            ring_ref,
            disk,
            mode,
            req_cons: 0,
            rsp_prod: 0,
            notified: 0,
        }
    }
}

/// A store on `host`, with its data through `set`: several stores may
/// share one set, as blkback-uk's vbds of one backend do.
fn store_in(
    host: &LocalHost,
    front: &mut LocalPlatform,
    set: &SharedBounce<LocalPages>,
    mode: Mode,
    sectors: u64,
    offered: u16,
    takes: u16,
) -> (VbdStore<LocalPages, FakeBack>, Rc<RefCell<Disk>>) {
    let pages = VbdPages::new(front, BACK).unwrap();
    let disk = Rc::new(RefCell::new(Disk {
        cache: vec![0; sectors as usize * SECTOR_SIZE],
        durable: vec![0; sectors as usize * SECTOR_SIZE],
        seen: Vec::new(),
        indirect: 0,
        max_indirect: takes,
    }));
    let back = FakeBack::new(host, pages.ring_ref(), disk.clone(), mode);
    let mut i = info(sectors, FlushKind::FlushCache);
    i.max_indirect_segments = offered;
    let s = VbdStore::new(pages, i, back, set.clone()).unwrap();
    (s, disk)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn writes_and_reads_of_any_size_reach_the_backend_in_chunks_of_11_pages() {
    let (mut s, disk) = store(Mode::Honest, 4096, 32);
    assert_eq!(
        s.info(),
        StoreInfo {
            capacity: 4096,
            read_only: false,
            flush: true,
            fua: true,
            discard: false
        }
    );
    // 1 MiB + 1 sector: 24 chunks through 32 bounce pages.
    let mut w = pattern(1024 * 1024 + 512, 3);
    assert_eq!(
        execute_one(&mut s, IoKind::Write { fua: false }, 5, &mut w),
        Ok(())
    );
    assert_eq!(&disk.borrow().cache[5 * 512..5 * 512 + w.len()], &w[..]);
    let mut r = vec![0u8; w.len()];
    assert_eq!(execute_one(&mut s, IoKind::Read, 5, &mut r), Ok(()));
    assert_eq!(r, w);
    let d = disk.borrow();
    assert!(d
        .seen
        .iter()
        .all(|&(_, _, n)| n as usize <= BLKIF_MAX_SEGMENTS_PER_REQUEST));
    assert_eq!(d.seen.iter().filter(|s| s.0 == BLKIF_OP_WRITE).count(), 24);
    assert_eq!(d.seen[1].1, 5 + 88, "the second chunk starts 44 KiB later");
    // Not flushed: nothing durable yet.
    assert!(d.durable.iter().all(|&b| b == 0));
    assert_eq!(s.stats().requests, 48);
}

#[test]
fn fua_writes_are_flushed_before_they_complete_and_flushes_order_the_batch() {
    let (mut s, disk) = store(Mode::Honest, 256, 64);
    let mut a = pattern(4096, 1);
    let mut b = pattern(8192, 2);
    let mut c = pattern(512, 3);
    let mut rd = vec![0u8; 4096];
    let mut ios = [
        Io::new(IoKind::Write { fua: false }, 0, &mut a),
        Io::new(IoKind::Write { fua: true }, 8, &mut b),
        Io::new(IoKind::Flush, 0, &mut []),
        Io::new(IoKind::Write { fua: false }, 100, &mut c),
        Io::new(IoKind::Read, 0, &mut rd),
    ];
    s.execute(&mut ios);
    assert!(ios.iter().all(|io| io.result.is_ok()), "{ios:?}");
    let d = disk.borrow();
    let ops: Vec<u8> = d.seen.iter().map(|s| s.0).collect();
    // Writes a and b (concurrent), the FUA flush, the batch's flush, then
    // the rest: nothing after a flush is sent before it answered.
    assert_eq!(
        ops,
        [
            BLKIF_OP_WRITE,
            BLKIF_OP_WRITE,
            BLKIF_OP_FLUSH_DISKCACHE,
            BLKIF_OP_FLUSH_DISKCACHE,
            BLKIF_OP_WRITE,
            BLKIF_OP_READ
        ]
    );
    assert_eq!(&d.durable[8 * 512..8 * 512 + 8192], &pattern(8192, 2)[..]);
    assert!(d.durable[100 * 512..100 * 512 + 512]
        .iter()
        .all(|&x| x == 0));
    let _ = ios;
    assert_eq!(rd, pattern(4096, 1));
}

#[test]
fn range_read_only_and_unsupported_fail_alone() {
    let (mut s, disk) = store(Mode::Honest, 16, 16);
    let mut ok = vec![7u8; 512];
    let mut out = vec![0u8; 1024];
    let mut ios = [
        Io::new(IoKind::Write { fua: false }, 15, &mut out),
        Io::new(IoKind::Discard { sectors: 1 }, 0, &mut []),
        Io::new(IoKind::Write { fua: false }, 15, &mut ok),
    ];
    s.execute(&mut ios);
    assert_eq!(ios[0].result, Err(StoreError::OutOfRange));
    assert_eq!(ios[1].result, Err(StoreError::Unsupported));
    assert_eq!(ios[2].result, Ok(()));
    assert_eq!(disk.borrow().seen.len(), 1);
    let (mut ro, _) = store(Mode::Honest, 16, 16);
    ro.info.read_only = true;
    assert_eq!(
        execute_one(&mut ro, IoKind::Write { fua: false }, 0, &mut [0u8; 512]),
        Err(StoreError::ReadOnly)
    );
    assert_eq!(
        execute_one(&mut ro, IoKind::Read, 0, &mut [0u8; 512]),
        Ok(())
    );
}

#[test]
fn backend_errors_fail_their_operation_and_a_lost_flush_fails_the_fua_write() {
    let (mut s, _) = store(Mode::FailWrites, 64, 16);
    let mut w = vec![1u8; 4096];
    let mut r = vec![0u8; 4096];
    let mut ios = [
        Io::new(IoKind::Write { fua: true }, 0, &mut w),
        Io::new(IoKind::Read, 8, &mut r),
    ];
    s.execute(&mut ios);
    assert_eq!(ios[0].result, Err(StoreError::Io { errno: 5 }));
    assert_eq!(ios[1].result, Ok(()));
    assert!(
        s.broken().is_none(),
        "an error response is not a protocol error"
    );
    let (mut s, disk) = store(Mode::FailFlush, 64, 16);
    let mut w = vec![1u8; 4096];
    let mut plain = vec![2u8; 512];
    let mut ios = [
        Io::new(IoKind::Write { fua: true }, 0, &mut w),
        Io::new(IoKind::Write { fua: false }, 8, &mut plain),
        Io::new(IoKind::Flush, 0, &mut []),
    ];
    s.execute(&mut ios);
    assert_eq!(
        ios[0].result,
        Err(StoreError::Io { errno: 5 }),
        "written, not durable"
    );
    assert_eq!(ios[1].result, Ok(()));
    assert_eq!(ios[2].result, Err(StoreError::Io { errno: 5 }));
    assert_eq!(disk.borrow().cache[0], 1);
    // Issue 17 item 5's class: after a failed flush nothing more is
    // acknowledged, though the backend would take a plain write now.
    assert!(s.broken().is_some(), "a failed flush takes the disk out");
    assert_eq!(
        execute_one(&mut s, IoKind::Write { fua: false }, 16, &mut plain),
        Err(StoreError::Io { errno: 5 })
    );
}

#[test]
fn a_silent_backend_times_the_batch_out_and_breaks_the_store() {
    let (mut s, _) = store(Mode::Silent, 64, 16);
    s.set_batch_timeout(1_000_000_000);
    assert_eq!(
        execute_one(&mut s, IoKind::Write { fua: false }, 0, &mut [1u8; 4096]),
        Err(StoreError::Io { errno: 110 })
    );
    assert!(s.broken().is_some());
    // The pages may still be written by the backend: nothing reuses them.
    assert_eq!(
        execute_one(&mut s, IoKind::Read, 0, &mut [0u8; 512]),
        Err(StoreError::Io { errno: 5 })
    );
    assert_eq!(s.stats().requests, 1);
}

#[test]
fn hostile_responses_break_the_store_without_panic() {
    for mode in [Mode::BogusId, Mode::TooMany] {
        let (mut s, _) = store(mode, 64, 16);
        let mut r = vec![0u8; 8192];
        let rc = execute_one(&mut s, IoKind::Read, 0, &mut r);
        if mode == Mode::TooMany {
            // The honest responses came first; the bogus index is seen on
            // the next pass, if any: either way nothing panics and a
            // broken store refuses what follows.
            let _ = rc;
            let _ = execute_one(&mut s, IoKind::Read, 0, &mut r);
        } else {
            assert_eq!(rc, Err(StoreError::Io { errno: 5 }));
        }
        assert!(s.broken().is_some(), "mode breaks the store");
        assert_eq!(
            execute_one(&mut s, IoKind::Flush, 0, &mut []),
            Err(StoreError::Io { errno: 5 })
        );
    }
}

#[test]
fn without_flush_features_writes_are_durable_when_answered() {
    let (mut s, disk) = store(Mode::Honest, 64, 16);
    s.info.flush = FlushKind::None;
    let i = s.info();
    assert!(!i.flush && !i.fua);
    assert_eq!(execute_one(&mut s, IoKind::Flush, 0, &mut []), Ok(()));
    assert!(disk.borrow().seen.is_empty());
}

/// dom0's side of xenstore for one vbd: the backend moves to Connected
/// when the frontend says Initialised.
struct FakeStore {
    keys: BTreeMap<String, String>,
    writes: Vec<(String, String)>,
    /// Backend state after the frontend's Initialised.
    then: &'static str,
    /// The backend's `feature-persistent`, written when it connects.
    persistent: Option<&'static str>,
    reads_left: u32,
}

const BE: &str = "/local/domain/0/backend/vbd/7/51712";

impl FakeStore {
    fn new(backend_state: &str) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert("device/vbd/51712/backend".into(), BE.into());
        keys.insert("device/vbd/51712/backend-id".into(), "0".into());
        keys.insert("device/vbd/51728/backend".into(), BE.into());
        keys.insert(format!("{BE}/state"), backend_state.into());
        // Linux's blkback writes this one when it probes the device.
        keys.insert(format!("{BE}/feature-max-indirect-segments"), "256".into());
        FakeStore {
            keys,
            writes: Vec::new(),
            then: "4",
            persistent: Some("1"),
            reads_left: 10_000,
        }
    }
}

impl Xenbus for FakeStore {
    fn read(&mut self, path: &str) -> Result<String> {
        self.reads_left = self.reads_left.checked_sub(1).ok_or(Error::TimedOut)?;
        self.keys.get(path).cloned().ok_or(Error::Hypervisor {
            op: "xenstore request",
            code: -2,
        })
    }
    fn write(&mut self, path: &str, value: &str) -> Result<()> {
        self.writes.push((path.into(), value.into()));
        self.keys.insert(path.into(), value.into());
        if path == "device/vbd/51712/state" && value == "3" {
            self.keys.insert(format!("{BE}/state"), self.then.into());
            self.keys.insert(format!("{BE}/sectors"), "2048".into());
            self.keys.insert(format!("{BE}/info"), "4".into());
            self.keys
                .insert(format!("{BE}/feature-barrier"), "1".into());
            // ... and this one only when it connects (after Initialised).
            if let Some(v) = self.persistent {
                self.keys
                    .insert(format!("{BE}/feature-persistent"), v.into());
            }
        }
        Ok(())
    }
    fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        assert_eq!(path, "device/vbd");
        Ok(vec!["51712".into(), "51728".into()])
    }
}

fn pages() -> VbdPages<LocalPages> {
    let host = LocalHost::new();
    let mut front = host.domain(FRONT);
    VbdPages::new(&mut front, BACK).unwrap()
}

#[test]
fn the_handshake_follows_the_xenbus_states() {
    let mut xs = FakeStore::new("2");
    assert_eq!(
        devices(&mut xs).unwrap(),
        ["device/vbd/51712", "device/vbd/51728"]
    );
    let pg = pages();
    let t = core::cell::Cell::new(0u64);
    let info = handshake(&mut xs, "device/vbd/51712", &pg, &|| t.get(), &mut |d| {
        t.set(d)
    })
    .unwrap();
    assert_eq!(
        info,
        VbdInfo {
            dev: "device/vbd/51712".into(),
            vdev: 51712,
            backend: 0,
            sectors: 2048,
            sector_size: 512,
            read_only: true,
            flush: FlushKind::Barrier,
            persistent: true,
            max_indirect_segments: 256,
        }
    );
    let keys: Vec<&str> = xs.writes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "device/vbd/51712/ring-ref",
            "device/vbd/51712/event-channel",
            "device/vbd/51712/protocol",
            "device/vbd/51712/feature-persistent",
            "device/vbd/51712/state",
            "device/vbd/51712/state",
        ]
    );
    assert_eq!(xs.writes[0].1, pg.ring_ref().0.to_string());
    assert_eq!(xs.writes[2].1, "x86_64-abi");
    assert_eq!(
        xs.writes[3].1, "1",
        "feature-persistent: we reuse our grants"
    );
    assert_eq!(xs.writes[5].1, "4");
}

#[test]
fn the_handshake_gives_up_on_bad_or_slow_backends() {
    let t = core::cell::Cell::new(0u64);
    // Never leaves Initialising: bounded by the handshake timeout.
    let mut xs = FakeStore::new("1");
    let e = handshake(
        &mut xs,
        "device/vbd/51712",
        &pages(),
        &|| t.get(),
        &mut |d| t.set(d),
    )
    .unwrap_err();
    assert!(e.0.contains("did not get ready"), "{e}");
    // Closes instead of connecting.
    let mut xs = FakeStore::new("2");
    xs.then = "6";
    let e = handshake(
        &mut xs,
        "device/vbd/51712",
        &pages(),
        &|| t.get(),
        &mut |d| t.set(d),
    )
    .unwrap_err();
    assert!(e.0.contains("closed"), "{e}");
    // Hostile values.
    for (key, value) in [
        ("device/vbd/51712/backend", "relative/path"),
        ("device/vbd/51712/backend-id", "70000"),
        ("device/vbd/51712/backend-id", "-1"),
        (&format!("{BE}/state") as &str, "99999999999999999999999"),
    ] {
        let mut xs = FakeStore::new("2");
        xs.keys.insert(key.into(), value.into());
        assert!(handshake(
            &mut xs,
            "device/vbd/51712",
            &pages(),
            &|| t.get(),
            &mut |d| t.set(d)
        )
        .is_err());
    }
    let mut xs = FakeStore::new("2");
    assert!(handshake(
        &mut xs,
        "device/vbd/xvda",
        &pages(),
        &|| t.get(),
        &mut |d| t.set(d)
    )
    .is_err());
    // Sectors missing, or a sector size not served.
    let mut xs = FakeStore::new("2");
    xs.keys.insert(format!("{BE}/sector-size"), "4096".into());
    let e = handshake(
        &mut xs,
        "device/vbd/51712",
        &pages(),
        &|| t.get(),
        &mut |d| t.set(d),
    )
    .unwrap_err();
    assert!(e.0.contains("4096"), "{e}");
}

fn connect_with(keys: &[(&str, Option<&str>)]) -> VbdInfo {
    let mut xs = FakeStore::new("2");
    for (k, v) in keys {
        match v {
            Some(v) => xs.keys.insert(format!("{BE}/{k}"), (*v).into()),
            None => xs.keys.remove(&format!("{BE}/{k}")),
        };
    }
    let t = core::cell::Cell::new(0u64);
    handshake(
        &mut xs,
        "device/vbd/51712",
        &pages(),
        &|| t.get(),
        &mut |d| t.set(d),
    )
    .unwrap()
}

#[test]
fn indirect_segments_and_persistence_follow_what_the_backend_offers_within_bounds() {
    let i = connect_with(&[]);
    assert_eq!((i.persistent, i.max_indirect_segments), (true, 256));
    // More than we use is our bound; 11 or fewer, garbage, absent: none.
    for (v, want) in [
        (Some("4096"), 256),
        (Some("18446744073709551615"), 256),
        (Some("99999999999999999999999"), 0),
        (Some("64"), 64),
        (Some("12"), 12),
        (Some("11"), 0),
        (Some("0"), 0),
        (Some("-5"), 0),
        (Some("lots"), 0),
        (None, 0),
    ] {
        let i = connect_with(&[("feature-max-indirect-segments", v)]);
        assert_eq!(i.max_indirect_segments, want, "{v:?}");
    }
    // A backend that connects without persistent grants (absent, 0, or
    // anything but 1) maps per request: not counted as persistent, and the
    // store works the same way (it only ever uses its own grants).
    let t = core::cell::Cell::new(0u64);
    for v in [None, Some("0"), Some("2"), Some("yes")] {
        let mut xs = FakeStore::new("2");
        xs.persistent = v;
        let i = handshake(
            &mut xs,
            "device/vbd/51712",
            &pages(),
            &|| t.get(),
            &mut |d| t.set(d),
        )
        .unwrap();
        assert!(!i.persistent, "{v:?}");
        assert!(xs
            .writes
            .contains(&("device/vbd/51712/feature-persistent".into(), "1".into())));
    }
}

#[test]
fn a_one_mib_write_is_one_indirect_request_and_reads_back() {
    let (mut s, disk) = store_with(Mode::Honest, 8192, 264, 256, 256);
    let mut w = pattern(1024 * 1024, 9);
    assert_eq!(
        execute_one(&mut s, IoKind::Write { fua: false }, 8, &mut w),
        Ok(())
    );
    let mut r = vec![0u8; w.len()];
    assert_eq!(execute_one(&mut s, IoKind::Read, 8, &mut r), Ok(()));
    assert_eq!(r, w);
    {
        let d = disk.borrow();
        assert_eq!(
            d.seen,
            [(BLKIF_OP_WRITE, 8, 256), (BLKIF_OP_READ, 8, 256)],
            "one request each way, not 24"
        );
        assert_eq!(d.indirect, 2);
    }
    assert_eq!(s.stats().requests, 2);
    assert_eq!(s.stats().indirect, 2);
    // 1 MiB + 3 sectors and 44 KiB: an indirect request of 256 segments
    // and a plain one of 1; 11 pages or fewer always go plain.
    let mut w2 = pattern(1024 * 1024 + 1536, 4);
    let mut small = pattern(44 * 1024, 5);
    let mut ios = [
        Io::new(IoKind::Write { fua: false }, 4000, &mut w2),
        Io::new(IoKind::Write { fua: true }, 100, &mut small),
    ];
    s.execute(&mut ios);
    assert!(ios.iter().all(|io| io.result.is_ok()), "{ios:?}");
    let d = disk.borrow();
    assert_eq!(
        d.seen[2..],
        [
            (BLKIF_OP_WRITE, 4000, 256),
            (BLKIF_OP_WRITE, 4000 + 2048, 1),
            (BLKIF_OP_WRITE, 100, 11),
            (BLKIF_OP_FLUSH_DISKCACHE, 0, 0),
        ]
    );
    assert_eq!(d.indirect, 3);
    assert_eq!(
        &d.cache[4000 * 512..4000 * 512 + w2.len()],
        &pattern(1024 * 1024 + 1536, 4)[..]
    );
    assert_eq!(
        &d.durable[100 * 512..100 * 512 + 44 * 1024],
        &pattern(44 * 1024, 5)[..]
    );
}

#[test]
fn indirect_requests_fit_the_bounce_pages_and_the_backend_offer() {
    // 64 offered, 40 bounce pages: requests of at most 40 pages; a full
    // ring's worth of them in flight at once still reads back right.
    let (mut s, disk) = store_with(Mode::Honest, 8192, 40, 64, 64);
    let mut w = pattern(1024 * 1024, 1);
    assert_eq!(
        execute_one(&mut s, IoKind::Write { fua: false }, 0, &mut w),
        Ok(())
    );
    let mut r = vec![0u8; w.len()];
    assert_eq!(execute_one(&mut s, IoKind::Read, 0, &mut r), Ok(()));
    assert_eq!(r, w);
    let d = disk.borrow();
    assert!(d.seen.iter().all(|&(_, _, n)| n <= 40), "{:?}", d.seen);
    assert_eq!(d.seen.iter().filter(|x| x.0 == BLKIF_OP_WRITE).count(), 7);
    drop(d);
    // A backend that offers more than it then takes: its error fails the
    // operation, the store stays usable.
    let (mut s, _) = store_with(Mode::Honest, 8192, 264, 256, 128);
    assert_eq!(
        execute_one(&mut s, IoKind::Read, 0, &mut vec![0u8; 1024 * 1024]),
        Err(StoreError::Io { errno: 5 })
    );
    assert!(s.broken().is_none());
    assert_eq!(
        execute_one(&mut s, IoKind::Read, 0, &mut vec![0u8; 4096]),
        Ok(())
    );
}

#[test]
fn indirect_answers_are_matched_like_any_other() {
    // blkif.h's echo (BLKIF_OP_INDIRECT) is as good as Linux's (the
    // indirect_op); another operation breaks the store.
    let (mut s, _) = store_with(Mode::EchoIndirect, 8192, 264, 256, 256);
    let mut w = pattern(512 * 1024, 2);
    assert_eq!(
        execute_one(&mut s, IoKind::Write { fua: false }, 0, &mut w),
        Ok(())
    );
    // ... but a plain request answered BLKIF_OP_INDIRECT is not one.
    assert_eq!(
        execute_one(&mut s, IoKind::Write { fua: false }, 0, &mut vec![0u8; 512]),
        Err(StoreError::Io { errno: 5 })
    );
    assert!(s.broken().is_some());
    for mode in [Mode::WrongIndirectOp, Mode::BogusId] {
        let (mut s, _) = store_with(mode, 8192, 264, 256, 256);
        assert_eq!(
            execute_one(&mut s, IoKind::Read, 0, &mut vec![0u8; 1024 * 1024]),
            Err(StoreError::Io { errno: 5 })
        );
        assert!(s.broken().is_some());
        assert_eq!(
            execute_one(&mut s, IoKind::Read, 0, &mut vec![0u8; 512]),
            Err(StoreError::Io { errno: 5 })
        );
    }
}

#[test]
fn batches_on_the_servers_bounce_pages_move_with_one_copy_each_way() {
    let (mut s, disk) = store_with(Mode::Honest, 8192, 264, 256, 256);
    assert!(s.takes_shared());
    // The server's window: 2 MiB + a page, data at page offsets.
    let mut window = vec![0u8; 2 * 1024 * 1024 + 4096];
    let mem = SharedMem::from_slice(&mut window);
    let w = pattern(1024 * 1024, 7);
    let small = pattern(3 * 512, 8);
    mem.write_from(4096, &w).unwrap();
    mem.write_from(4096 + 1024 * 1024, &small).unwrap();
    let io = SharedIo::new;
    let mut ios = [
        io(IoKind::Write { fua: false }, 16, 4096, w.len()),
        io(
            IoKind::Write { fua: true },
            5000,
            4096 + 1024 * 1024,
            small.len(),
        ),
        // Outside the window: fails alone.
        io(IoKind::Write { fua: false }, 0, 2 * 1024 * 1024, 8192),
        io(IoKind::Flush, 0, 0, 0),
    ];
    s.execute_shared(&mem, &mut ios);
    assert_eq!(ios[0].result, Ok(()));
    assert_eq!(ios[1].result, Ok(()));
    assert_eq!(ios[2].result, Err(StoreError::Io { errno: 5 }));
    assert_eq!(ios[3].result, Ok(()));
    {
        let d = disk.borrow();
        assert_eq!(&d.durable[16 * 512..16 * 512 + w.len()], &w[..]);
        assert_eq!(&d.durable[5000 * 512..5000 * 512 + small.len()], &small[..]);
        assert_eq!(d.indirect, 1);
    }
    // Read both back elsewhere in the window.
    mem.fill(0, mem.len(), 0).unwrap();
    let mut ios = [
        io(IoKind::Read, 16, 8192, w.len()),
        io(IoKind::Read, 5000, 0, small.len()),
    ];
    s.execute_shared(&mem, &mut ios);
    assert!(ios.iter().all(|io| io.result.is_ok()), "{ios:?}");
    let mut got = vec![0u8; w.len()];
    mem.read_into(8192, &mut got).unwrap();
    assert_eq!(got, w);
    let mut got = vec![0u8; small.len()];
    mem.read_into(0, &mut got).unwrap();
    assert_eq!(got, small);
    // Unsupported and out-of-range operations as through execute.
    let mut ios = [
        io(IoKind::Discard { sectors: 8 }, 0, 0, 0),
        io(IoKind::Read, 8190, 0, 4096),
    ];
    s.execute_shared(&mem, &mut ios);
    assert_eq!(ios[0].result, Err(StoreError::Unsupported));
    assert_eq!(ios[1].result, Err(StoreError::OutOfRange));
}

#[test]
fn vbds_of_one_backend_share_its_bounce_pages_and_a_broken_one_keeps_only_its_own() {
    let (host, mut front, set) = front_with_set(20);
    let (mut a, disk_a) = store_in(&host, &mut front, &set, Mode::Honest, 512, 64, 64);
    let (mut b, disk_b) = store_in(&host, &mut front, &set, Mode::Honest, 512, 64, 64);
    let (mut silent, _) = store_in(&host, &mut front, &set, Mode::Silent, 512, 64, 64);
    silent.set_batch_timeout(1_000_000_000);

    // Turn by turn through the same 20 pages: each disk gets its own data.
    let wa = pattern(80 * 1024, 1);
    let wb = pattern(80 * 1024, 2);
    assert_eq!(
        execute_one(&mut a, IoKind::Write { fua: false }, 0, &mut wa.clone()),
        Ok(())
    );
    assert_eq!(
        execute_one(&mut b, IoKind::Write { fua: false }, 0, &mut wb.clone()),
        Ok(())
    );
    assert_eq!(&disk_a.borrow().cache[..wa.len()], &wa[..]);
    assert_eq!(&disk_b.borrow().cache[..wb.len()], &wb[..]);
    // 80 KiB is one indirect request of all 20 pages.
    assert_eq!(disk_a.borrow().seen.last(), Some(&(BLKIF_OP_WRITE, 0, 20)));
    assert_eq!(set.borrow().free(), 20);

    // A backend that never answers keeps the 8 pages it was given.
    assert_eq!(
        execute_one(
            &mut silent,
            IoKind::Write { fua: false },
            0,
            &mut [7u8; 8 * 4096]
        ),
        Err(StoreError::Io { errno: 110 })
    );
    assert_eq!(set.borrow().free(), 12);

    // The others go on in requests of the 12 left, and never see those 8.
    let mut r = vec![0u8; wa.len()];
    assert_eq!(execute_one(&mut a, IoKind::Read, 0, &mut r), Ok(()));
    assert_eq!(r, wa);
    let seen = disk_a.borrow().seen.clone();
    assert!(seen
        .iter()
        .rev()
        .take(2)
        .all(|&(op, _, n)| op == BLKIF_OP_READ && n <= 12));
    assert_eq!(set.borrow().free(), 12);
    assert_eq!(execute_one(&mut b, IoKind::Read, 0, &mut r), Ok(()));
    assert_eq!(r, wb);
}

#[test]
fn a_set_with_no_pages_left_fails_io_without_waiting() {
    let (host, mut front, set) = front_with_set(11);
    let (mut silent, _) = store_in(&host, &mut front, &set, Mode::Silent, 512, 0, 0);
    let (mut a, disk_a) = store_in(&host, &mut front, &set, Mode::Honest, 512, 0, 0);
    silent.set_batch_timeout(1_000_000_000);
    assert_eq!(
        execute_one(&mut silent, IoKind::Read, 0, &mut [0u8; 11 * 4096]),
        Err(StoreError::Io { errno: 110 })
    );
    assert_eq!(set.borrow().free(), 0);
    assert_eq!(
        execute_one(&mut a, IoKind::Write { fua: false }, 0, &mut [1u8; 4096]),
        Err(StoreError::Io { errno: 5 })
    );
    assert!(disk_a.borrow().seen.is_empty());
    // A flush needs no page: still served.
    assert_eq!(execute_one(&mut a, IoKind::Flush, 0, &mut []), Ok(()));
    assert!(a.broken().is_none());
}

#[test]
fn a_store_takes_only_bounce_pages_granted_to_its_own_backend() {
    let host = LocalHost::new();
    let mut front = host.domain(FRONT);
    let other = VbdBounce::new(&mut front, BACK + 1, 11).unwrap();
    let pages = VbdPages::new(&mut front, BACK).unwrap();
    let disk = Rc::new(RefCell::new(Disk::default()));
    let back = FakeBack::new(&host, pages.ring_ref(), disk, Mode::Honest);
    assert!(matches!(
        VbdStore::new(pages, info(64, FlushKind::FlushCache), back, other),
        Err(Error::InvalidArgument { .. })
    ));
}

fn lent(s: &VbdStore<LocalPages, FakeBack>) -> Option<Rc<LocalPages>> {
    s.lent_pages().map(|l| l.downcast::<LocalPages>().unwrap())
}

#[test]
fn lent_pages_carry_the_data_in_place_until_a_broken_store_keeps_some() {
    let (host, mut front, set) = front_with_set(20);
    let (mut a, disk_a) = store_in(&host, &mut front, &set, Mode::Honest, 512, 64, 64);
    let (mut silent, _) = store_in(&host, &mut front, &set, Mode::Silent, 512, 64, 64);
    silent.set_batch_timeout(1_000_000_000);
    let pages = lent(&a).expect("a whole set is lent");
    let mem = pages.mem();

    // A write whose data the server put at page 4: no copy, the request
    // names pages 4..8 themselves.
    let w = pattern(4 * 4096, 9);
    mem.write_from(4 * 4096, &w).unwrap();
    let mut ios = [SharedIo::new(
        IoKind::Write { fua: false },
        16,
        4 * 4096,
        w.len(),
    )];
    a.execute_shared(&mem, &mut ios);
    assert_eq!(ios[0].result, Ok(()));
    assert_eq!(&disk_a.borrow().cache[16 * 512..16 * 512 + w.len()], &w[..]);
    // A read lands where the server wants it, and only there.
    mem.fill(0, 20 * 4096, 0).unwrap();
    let mut ios = [SharedIo::new(IoKind::Read, 16, 9 * 4096, w.len())];
    a.execute_shared(&mem, &mut ios);
    assert_eq!(ios[0].result, Ok(()));
    let mut all = vec![0u8; 20 * 4096];
    mem.read_into(0, &mut all).unwrap();
    assert_eq!(&all[9 * 4096..13 * 4096], &w[..]);
    assert!(all[..9 * 4096]
        .iter()
        .chain(&all[13 * 4096..])
        .all(|&b| b == 0));
    assert_eq!((a.stats().requests, a.stats().in_place), (2, 2));
    // Data not starting on a page of the set, or past its end, is refused.
    for at in [4 * 4096 + 512, 18 * 4096] {
        let mut ios = [SharedIo::new(IoKind::Write { fua: false }, 0, at, 4 * 4096)];
        a.execute_shared(&mem, &mut ios);
        assert_eq!(ios[0].result, Err(StoreError::Io { errno: 5 }), "at {at}");
    }
    assert_eq!(set.borrow().free(), 20);

    // A backend that never answers keeps lent pages 2..5: the set is lent
    // no more, and its copies avoid those pages.
    let mut ios = [SharedIo::new(
        IoKind::Write { fua: false },
        0,
        2 * 4096,
        3 * 4096,
    )];
    silent.execute_shared(&mem, &mut ios);
    assert_eq!(ios[0].result, Err(StoreError::Io { errno: 110 }));
    assert_eq!(set.borrow().free(), 17);
    assert!(set.borrow().free.iter().all(|pg| !(2..5).contains(pg)));
    assert!(lent(&a).is_none() && lent(&silent).is_none());
    // A batch on the set's pages after that is refused whole; through the
    // copy path the store goes on.
    let mut ios = [SharedIo::new(IoKind::Read, 16, 0, 4096)];
    a.execute_shared(&mem, &mut ios);
    assert_eq!(ios[0].result, Err(StoreError::Io { errno: 5 }));
    let mut r = vec![0u8; w.len()];
    assert_eq!(execute_one(&mut a, IoKind::Read, 16, &mut r), Ok(()));
    assert_eq!(r, w);
    assert_eq!((a.stats().requests, a.stats().in_place), (3, 2));
}
