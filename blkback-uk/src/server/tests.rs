//! The server and the client in one process, over the simulation's broker
//! (owner domain 1, members 2 and 3), the server pumped by hand.

use super::*;
use crate::client::{BlkClient, Buffer, Completion};
use crate::ram::RamStore;
use share_hal::platform::{Access, Memory};
use share_hal::share::ShareRef;
use share_hal::wire::blk::{request_field, Op, MAX_INLINE_SEGMENTS};
use share_sim::{temp_socket_path, Broker, SimPlatform};
use std::vec::Vec;

const SERVER: DomId = 1;

fn disk_entry(disk: u64, peer: DomId, read_only: bool, numpages: u32) -> EntryRepr {
    EntryRepr {
        kind: Kind::Disk,
        role: Role::Owner,
        flags: if read_only { vd::flags::READ_ONLY } else { 0 },
        subtype: features::ALL,
        numpages,
        peer,
        share_ref: GrantRef(0),
        status: 0,
        param: disk,
    }
}

/// A RAM store that takes batches on the bounce pages (`shared`, as the
/// RAM store does) or only in the server's private buffer (as the file and
/// vbd stores do), so that both paths of the server are tested.
struct TestStore {
    ram: RamStore,
    shared: bool,
    /// What the server made the store do, counted by the store itself.
    work: StoreWork,
    /// Every operation fails with EIO (a failing disk).
    failing: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StoreWork {
    discarded_sectors: u64,
    /// Flushes, and batches with a FUA write: what costs a sync in the
    /// file store.
    syncs: u64,
}

impl StoreWork {
    fn count(&mut self, kinds: impl Iterator<Item = IoKind>) {
        let mut fua = false;
        for k in kinds {
            match k {
                IoKind::Discard { sectors } => self.discarded_sectors += sectors,
                IoKind::Flush => self.syncs += 1,
                IoKind::Write { fua: true } => fua = true,
                _ => {}
            }
        }
        self.syncs += u64::from(fua);
    }
}

impl TestStore {
    fn bytes(&self) -> &[u8] {
        self.ram.bytes()
    }
}

impl Store for TestStore {
    fn info(&self) -> crate::store::StoreInfo {
        self.ram.info()
    }

    fn execute(&mut self, ios: &mut [Io<'_>]) {
        self.work.count(ios.iter().map(|io| io.kind));
        if self.failing {
            for io in ios.iter_mut() {
                io.result = Err(StoreError::Io { errno: 5 });
            }
            return;
        }
        self.ram.execute(ios)
    }

    fn takes_shared(&self) -> bool {
        self.shared && !self.failing
    }

    fn execute_shared(&mut self, mem: &share_hal::SharedMem<'_>, ios: &mut [SharedIo]) {
        self.work.count(ios.iter().map(|io| io.kind));
        self.ram.execute_shared(mem, ios)
    }
}

struct Rig<S: Store = TestStore> {
    _broker: Broker,
    path: std::path::PathBuf,
    o: SimPlatform,
    server: Server<SimPlatform, S>,
    entries: Vec<EntryRepr>,
}

impl Rig {
    fn new(disks: &[u64]) -> Rig {
        Self::with_stores(disks, true)
    }

    fn with_stores(disks: &[u64], shared: bool) -> Rig {
        let stores = disks
            .iter()
            .map(|&s| TestStore {
                ram: RamStore::new(s),
                shared,
                work: StoreWork::default(),
                failing: false,
            })
            .collect();
        Rig::over(stores)
    }
}

impl<S: Store> Rig<S> {
    /// A server over `stores`, disk `i` the `i`th.
    fn over(stores: Vec<S>) -> Rig<S> {
        Rig::over_made(|_| stores)
    }

    /// A server over the stores `make` makes with the server's platform.
    fn over_made(make: impl FnOnce(&mut SimPlatform) -> Vec<S>) -> Rig<S> {
        let config = ServerConfig {
            bounce_pages: 600,
            max_indirect_segments: 512,
        };
        Rig::over_made_with(config, make)
    }

    fn over_made_with(
        config: ServerConfig,
        make: impl FnOnce(&mut SimPlatform) -> Vec<S>,
    ) -> Rig<S> {
        let path = temp_socket_path("blk-server");
        let broker = Broker::spawn(&path).unwrap();
        let mut o = SimPlatform::connect(&path, SERVER).unwrap();
        let stores = make(&mut o);
        let server = Server::new(&mut o, stores, config).unwrap();
        Rig {
            _broker: broker,
            path,
            o,
            server,
            entries: vec![EntryRepr::EMPTY; 8],
        }
    }

    fn apply(&mut self, index: u32, new: EntryRepr) -> Applied {
        let old = self.entries[index as usize];
        let a = self.server.apply(&mut self.o, index, &old, &new);
        if let Applied::Ok { .. } = a {
            self.entries[index as usize] = new;
        }
        a
    }

    /// Serves `entry` at `index` and attaches member `entry.peer` to it.
    fn member(&mut self, index: u32, entry: EntryRepr) -> (SimPlatform, BlkClient<SimPlatform>) {
        let mut m = SimPlatform::connect(&self.path, entry.peer).unwrap();
        let Applied::Ok { share_ref: Some(g) } = self.apply(index, entry) else {
            panic!("entry refused");
        };
        let c = BlkClient::attach(
            &mut m,
            ShareRef {
                owner: SERVER,
                descriptor: g,
            },
        )
        .unwrap();
        (m, c)
    }

    fn pump(&mut self) -> usize {
        let mut n = 0;
        for _ in 0..1000 {
            let pr = self.server.service(&mut self.o);
            n += pr.answered;
            if !pr.more {
                break;
            }
        }
        n
    }

    fn refused(&mut self, index: u32, entry: EntryRepr) -> i32 {
        match self.apply(index, entry) {
            Applied::Refused(code) => code,
            Applied::Ok { .. } => panic!("entry accepted"),
        }
    }
}

/// Submits, lets the server run, and returns the responses.
fn exchange<S: Store>(
    rig: &mut Rig<S>,
    m: &mut SimPlatform,
    c: &mut BlkClient<SimPlatform>,
    reqs: &[RequestRepr],
) -> Vec<Completion> {
    for r in reqs {
        assert!(c.submit(r).unwrap(), "lane full");
    }
    c.kick(m).unwrap();
    rig.pump();
    let mut out = Vec::new();
    c.poll(m, &mut out).unwrap();
    out
}

fn one<S: Store>(
    rig: &mut Rig<S>,
    m: &mut SimPlatform,
    c: &mut BlkClient<SimPlatform>,
    req: RequestRepr,
) -> Status {
    let out = exchange(rig, m, c, &[req]);
    assert_eq!(out.len(), 1, "one response");
    assert_eq!(out[0].id, req.id());
    out[0].status
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` at `sector` through a fresh buffer (indirect if needed).
fn write<S: Store>(
    rig: &mut Rig<S>,
    m: &mut SimPlatform,
    c: &mut BlkClient<SimPlatform>,
    sector: u64,
    data: &[u8],
    fua: bool,
) -> Status {
    rw(rig, m, c, Dir::Write, sector, &mut data.to_vec(), fua)
}

fn read<S: Store>(
    rig: &mut Rig<S>,
    m: &mut SimPlatform,
    c: &mut BlkClient<SimPlatform>,
    sector: u64,
    len: usize,
) -> (Status, Vec<u8>) {
    let mut buf = vec![0u8; len];
    let s = rw(rig, m, c, Dir::Read, sector, &mut buf, false);
    (s, buf)
}

fn rw<S: Store>(
    rig: &mut Rig<S>,
    m: &mut SimPlatform,
    c: &mut BlkClient<SimPlatform>,
    dir: Dir,
    sector: u64,
    data: &mut [u8],
    fua: bool,
) -> Status {
    let pages = data.len().div_ceil(PAGE_SIZE);
    let buf = Buffer::new(m, SERVER, pages, Access::ReadWrite).unwrap();
    let ind = Buffer::new(m, SERVER, 2, Access::ReadOnly).unwrap();
    buf.mem().write_from(0, data).unwrap();
    let req = c
        .rw_request(
            dir,
            fua,
            sector,
            &buf,
            0,
            (data.len() / 512) as u64,
            Some(&ind),
        )
        .unwrap();
    let s = one(rig, m, c, req);
    buf.mem().read_into(0, data).unwrap();
    buf.release(m).unwrap();
    ind.release(m).unwrap();
    s
}

#[test]
fn write_read_back_direct_and_one_mib_indirect() {
    write_read_back(Rig::new(&[4096]));
}

#[test]
fn write_read_back_through_the_private_buffer() {
    write_read_back(Rig::with_stores(&[4096], false));
}

fn write_read_back(mut rig: Rig) {
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 11));
    assert_eq!(c.control().capacity, 4096);
    assert_eq!(c.control().max_indirect_segments, 512);
    assert_eq!(c.control().features, features::ALL);
    // Direct: 13 pages; a single sector.
    let small = pattern(1, 13 * PAGE_SIZE);
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 100, &small, false),
        Status::Okay
    );
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 7, &pattern(2, 512), false),
        Status::Okay
    );
    // Indirect: 1 MiB (256 segments) and 2 MiB (512, two... one page).
    let big = pattern(3, 1 << 20);
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 1024, &big, false),
        Status::Okay
    );
    let two = pattern(4, 2 << 20);
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 0, &two[..], false),
        Status::Okay
    );
    // The 2 MiB write covered sectors 0..4096; rewrite the others on top.
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 1024, &big, false),
        Status::Okay
    );
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 100, &small, false),
        Status::Okay
    );
    let (s, back) = read(&mut rig, &mut m, &mut c, 1024, 1 << 20);
    assert_eq!(s, Status::Okay);
    assert!(back == big, "1 MiB indirect read back");
    let (s, back) = read(&mut rig, &mut m, &mut c, 100, small.len());
    assert_eq!(s, Status::Okay);
    assert!(back == small);
    let store = rig.server.store(0).unwrap().bytes();
    assert!(store[1024 * 512..1024 * 512 + (1 << 20)] == big[..]);
    assert!(store[..512] == two[..512]);
    assert_eq!(rig.server.stats().errors, 0);
}

#[test]
fn flush_fua_discard() {
    let mut rig = Rig::new(&[256]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 3));
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 8, &pattern(5, 4096), true),
        Status::Okay
    );
    let id = c.next_id();
    assert_eq!(
        one(&mut rig, &mut m, &mut c, RequestRepr::Flush { id }),
        Status::Okay
    );
    let id = c.next_id();
    let discard = RequestRepr::Discard {
        id,
        sector: 9,
        nr_sectors: 2,
    };
    assert_eq!(one(&mut rig, &mut m, &mut c, discard), Status::Okay);
    let (s, back) = read(&mut rig, &mut m, &mut c, 8, 4096);
    assert_eq!(s, Status::Okay);
    let want = pattern(5, 4096);
    assert!(back[..512] == want[..512]);
    assert!(back[512..1536].iter().all(|&b| b == 0), "discarded");
    assert!(back[1536..] == want[1536..]);
    // Discard past the end: refused; the lane goes on.
    let id = c.next_id();
    let far = RequestRepr::Discard {
        id,
        sector: 250,
        nr_sectors: 7,
    };
    assert_eq!(one(&mut rig, &mut m, &mut c, far), Status::Error);
}

#[test]
fn features_follow_dom0_policy_and_unoffered_ops_are_not_supported() {
    let mut rig = Rig::new(&[64]);
    let mut e = disk_entry(0, 2, false, 3);
    e.subtype = features::INDIRECT;
    let (mut m, mut c) = rig.member(0, e);
    assert_eq!(c.control().features, features::INDIRECT);
    // The member lies about the offer: the server still refuses.
    let mut raw = [0u8; REQUEST_SIZE];
    raw[request_field::OP.start] = Op::Flush as u8;
    raw[request_field::ID.start] = 77;
    assert!(c.submit_raw(&raw).unwrap());
    c.kick(&mut m).unwrap();
    rig.pump();
    let mut out = Vec::new();
    c.poll(&mut m, &mut out).unwrap();
    assert_eq!(
        out,
        [Completion {
            id: 77,
            op: Op::Flush as u8,
            status: Status::NotSupported
        }]
    );
}

#[test]
fn sixty_four_in_flight_then_read_back() {
    let mut rig = Rig::new(&[1024]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 11));
    assert_eq!(c.slots(), 256);
    let mut bufs = Vec::new();
    let mut reqs = Vec::new();
    for i in 0..64u64 {
        let b = Buffer::new(&mut m, SERVER, 1, Access::ReadWrite).unwrap();
        b.mem().write_from(0, &pattern(100 + i, PAGE_SIZE)).unwrap();
        let fua = i % 7 == 0;
        reqs.push(
            c.rw_request(Dir::Write, fua, i * 8, &b, 0, 8, None)
                .unwrap(),
        );
        bufs.push(b);
    }
    let id = c.next_id();
    reqs.push(RequestRepr::Flush { id });
    assert_eq!(c.in_flight(), 0);
    let out = exchange(&mut rig, &mut m, &mut c, &reqs);
    assert_eq!(out.len(), 65);
    for (r, o) in reqs.iter().zip(&out) {
        assert_eq!((o.id, o.status), (r.id(), Status::Okay), "in lane order");
    }
    assert_eq!(c.in_flight(), 0);
    for b in bufs {
        b.release(&mut m).unwrap();
    }
    let (s, back) = read(&mut rig, &mut m, &mut c, 0, 64 * PAGE_SIZE);
    assert_eq!(s, Status::Okay);
    for i in 0..64usize {
        assert!(back[i * PAGE_SIZE..(i + 1) * PAGE_SIZE] == pattern(100 + i as u64, PAGE_SIZE)[..]);
    }
}

#[test]
fn read_only_disk_many_members_writes_refused_writer_alone() {
    let mut rig = Rig::new(&[64, 64]);
    let (mut m2, mut c2) = rig.member(0, disk_entry(0, 2, true, 3));
    let (mut m3, mut c3) = rig.member(1, disk_entry(0, 3, true, 3));
    assert!(c2.control().read_only && c3.control().read_only);
    assert_eq!(c2.control().features & features::DISCARD, 0);
    assert_eq!(
        write(&mut rig, &mut m2, &mut c2, 0, &[1; 512], false),
        Status::Error
    );
    let (s, _) = read(&mut rig, &mut m3, &mut c3, 0, 512);
    assert_eq!(s, Status::Okay);
    // A writer on a disk with readers, a second writer, a duplicate.
    assert_eq!(rig.refused(2, disk_entry(0, 4, false, 3)), status::EBUSY);
    let (mut m4, mut c4) = rig.member(2, disk_entry(1, 4, false, 3));
    assert_eq!(rig.refused(3, disk_entry(1, 5, false, 3)), status::EBUSY);
    assert_eq!(rig.refused(3, disk_entry(1, 5, true, 3)), status::EBUSY);
    assert_eq!(rig.refused(3, disk_entry(0, 2, true, 3)), status::EEXIST);
    assert_eq!(
        write(&mut rig, &mut m4, &mut c4, 0, &[9; 512], true),
        Status::Okay
    );
    assert!(rig.server.store(0).unwrap().bytes().iter().all(|&b| b == 0));
    // Other refusals: no such disk, a network entry, a member entry, too
    // few pages, an entry over a used one.
    assert_eq!(rig.refused(3, disk_entry(7, 5, true, 3)), status::ENOENT);
    let mut net = disk_entry(0, 5, true, 3);
    net.kind = Kind::Network;
    assert_eq!(rig.refused(3, net), status::ENODEV);
    let mut member = disk_entry(0, 5, true, 3);
    member.role = Role::Member;
    assert_eq!(rig.refused(3, member), status::ENODEV);
    assert_eq!(rig.refused(3, disk_entry(0, 5, true, 2)), status::EINVAL);
    assert_eq!(rig.refused(0, disk_entry(0, 5, true, 3)), status::EEXIST);
    // Removing the writer lets another domain write.
    c4.detach(&mut m4).unwrap();
    assert!(matches!(
        rig.apply(2, EntryRepr::EMPTY),
        Applied::Ok { share_ref: None }
    ));
    assert_eq!(rig.server.connections().count(), 2);
    assert_eq!(rig.server.reap(&mut rig.o), 0);
    let (mut m5, mut c5) = rig.member(3, disk_entry(1, 5, false, 3));
    let (s, back) = read(&mut rig, &mut m5, &mut c5, 0, 512);
    assert_eq!((s, back), (Status::Okay, vec![9; 512]));
    c2.detach(&mut m2).unwrap();
    c3.detach(&mut m3).unwrap();
}

/// A request slot with `segs` inline, anything allowed.
fn raw_rw(id: u64, op: Op, sector: u64, segs: &[(GrantRef, u8, u8)]) -> [u8; REQUEST_SIZE] {
    let mut raw = [0u8; REQUEST_SIZE];
    raw[0] = op as u8;
    raw[2..4].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    raw[8..16].copy_from_slice(&id.to_le_bytes());
    raw[16..24].copy_from_slice(&sector.to_le_bytes());
    for (i, (g, f, l)) in segs.iter().enumerate().take(MAX_INLINE_SEGMENTS) {
        let at = 24 + 8 * i;
        raw[at..at + 4].copy_from_slice(&g.0.to_le_bytes());
        raw[at + 4] = *f;
        raw[at + 5] = *l;
    }
    raw
}

fn raw_one<S: Store>(
    rig: &mut Rig<S>,
    m: &mut SimPlatform,
    c: &mut BlkClient<SimPlatform>,
    raw: &[u8; REQUEST_SIZE],
) -> Status {
    assert!(c.submit_raw(raw).unwrap());
    c.kick(m).unwrap();
    rig.pump();
    let mut out = Vec::new();
    c.poll(m, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    out[0].status
}

#[test]
fn hostile_requests_get_errors_and_touch_nothing() {
    let mut rig = Rig::new(&[64, 64]);
    let (mut m, mut c) = rig.member(0, disk_entry(1, 2, false, 3));
    let buf = Buffer::new(&mut m, SERVER, 2, Access::ReadWrite).unwrap();
    buf.mem().fill(0, 2 * PAGE_SIZE, 0xee).unwrap();
    let g = buf.grefs()[0];
    let cases: &[(&str, [u8; REQUEST_SIZE])] = &[
        ("out of range", raw_rw(1, Op::Write, 63, &[(g, 0, 1)])),
        (
            "sector overflow",
            raw_rw(2, Op::Write, u64::MAX, &[(g, 0, 0)]),
        ),
        ("last_sect 8", raw_rw(3, Op::Write, 0, &[(g, 0, 8)])),
        ("first after last", raw_rw(4, Op::Write, 0, &[(g, 5, 2)])),
        ("no segments", raw_rw(5, Op::Write, 0, &[])),
        (
            "bogus grant",
            raw_rw(6, Op::Write, 0, &[(GrantRef(99_999), 0, 7)]),
        ),
        (
            "bogus grant among good",
            raw_rw(7, Op::Write, 0, &[(g, 0, 7), (GrantRef(12345), 0, 7)]),
        ),
        (
            "read into bogus grant",
            raw_rw(8, Op::Read, 0, &[(GrantRef(4242), 0, 7)]),
        ),
    ];
    for (what, raw) in cases {
        assert_eq!(
            raw_one(&mut rig, &mut m, &mut c, raw),
            Status::Error,
            "{what}"
        );
    }
    let mut bad_op = raw_rw(9, Op::Read, 0, &[(g, 0, 0)]);
    bad_op[0] = 17;
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &bad_op), Status::Error);
    let mut fua_read = raw_rw(10, Op::Read, 0, &[(g, 0, 0)]);
    fua_read[1] = 1;
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &fua_read), Status::Error);
    let mut flags = raw_rw(11, Op::Write, 0, &[(g, 0, 0)]);
    flags[1] = 0x80;
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &flags), Status::Error);
    // Nothing reached either disk.
    for d in 0..2 {
        assert!(rig.server.store(d).unwrap().bytes().iter().all(|&b| b == 0));
    }
    // Overlapping segments (the same page twice) are served: the member's
    // own business, inside its own grant.
    let overlap = raw_rw(12, Op::Write, 0, &[(g, 0, 7), (g, 2, 3)]);
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &overlap), Status::Okay);
    let store = rig.server.store(1).unwrap().bytes();
    assert!(store[..(8 + 2) * 512].iter().all(|&b| b == 0xee));
    assert!(store[10 * 512..].iter().all(|&b| b == 0));
    assert!(rig.server.store(0).unwrap().bytes().iter().all(|&b| b == 0));
    // Reads into a read-only grant fail; the page is unchanged.
    let ro = Buffer::new(&mut m, SERVER, 1, Access::ReadOnly).unwrap();
    let into_ro = raw_rw(13, Op::Read, 0, &[(ro.grefs()[0], 0, 7)]);
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &into_ro), Status::Error);
    assert_eq!(ro.mem().read_u64(0), Ok(0));
    buf.release(&mut m).unwrap();
    ro.release(&mut m).unwrap();
    assert_eq!(rig.server.stats().cut_off, 0);
}

/// An indirect request slot over `pages`, `n` segments.
fn raw_indirect(id: u64, dir: Op, sector: u64, n: u16, pages: &[GrantRef]) -> [u8; REQUEST_SIZE] {
    let mut raw = [0u8; REQUEST_SIZE];
    raw[0] = Op::Indirect as u8;
    raw[2..4].copy_from_slice(&n.to_le_bytes());
    raw[8..16].copy_from_slice(&id.to_le_bytes());
    raw[16..24].copy_from_slice(&sector.to_le_bytes());
    raw[24] = dir as u8;
    for (i, g) in pages.iter().enumerate().take(24) {
        raw[32 + 4 * i..36 + 4 * i].copy_from_slice(&g.0.to_le_bytes());
    }
    raw
}

#[test]
fn hostile_indirect_requests() {
    let mut rig = Rig::new(&[8192]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 3));
    let data = Buffer::new(&mut m, SERVER, 16, Access::ReadWrite).unwrap();
    data.mem().fill(0, 16 * PAGE_SIZE, 0x77).unwrap();
    let ind = Buffer::new(&mut m, SERVER, 1, Access::ReadOnly).unwrap();
    let write_list = |segs: &[(GrantRef, u8, u8)]| {
        let mut page = vec![0u8; PAGE_SIZE];
        for (i, (g, f, l)) in segs.iter().enumerate() {
            page[8 * i..8 * i + 4].copy_from_slice(&g.0.to_le_bytes());
            page[8 * i + 4] = *f;
            page[8 * i + 5] = *l;
        }
        ind.mem().write_from(0, &page).unwrap();
    };
    let good: Vec<_> = data.grefs().iter().map(|&g| (g, 0u8, 7u8)).collect();
    write_list(&good);
    let ig = ind.grefs()[0];
    // Honest one first: 16 segments.
    let ok = raw_indirect(1, Op::Write, 0, 16, &[ig]);
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &ok), Status::Okay);
    let cases: &[(&str, [u8; REQUEST_SIZE])] = &[
        (
            "bogus indirect page",
            raw_indirect(2, Op::Write, 0, 16, &[GrantRef(5555)]),
        ),
        (
            "too many segments",
            raw_indirect(3, Op::Write, 0, 513, &[ig, ig]),
        ),
        ("zero segments", raw_indirect(4, Op::Write, 0, 0, &[ig])),
        ("inner op flush", raw_indirect(5, Op::Flush, 0, 16, &[ig])),
        (
            "past the end",
            raw_indirect(6, Op::Write, 8192 - 127, 16, &[ig]),
        ),
        (
            "list shorter than claimed",
            raw_indirect(7, Op::Write, 0, 17, &[ig]),
        ),
    ];
    for (what, raw) in cases {
        assert_eq!(
            raw_one(&mut rig, &mut m, &mut c, raw),
            Status::Error,
            "{what}"
        );
    }
    // A bad segment inside the page, and a bogus data grant.
    let mut bad = good.clone();
    bad[9].2 = 9;
    write_list(&bad);
    assert_eq!(
        raw_one(
            &mut rig,
            &mut m,
            &mut c,
            &raw_indirect(8, Op::Write, 4000, 16, &[ig])
        ),
        Status::Error
    );
    let mut bogus = good.clone();
    bogus[15].0 = GrantRef(31337);
    write_list(&bogus);
    assert_eq!(
        raw_one(
            &mut rig,
            &mut m,
            &mut c,
            &raw_indirect(9, Op::Write, 4000, 16, &[ig])
        ),
        Status::Error
    );
    let store = rig.server.store(0).unwrap().bytes();
    assert!(store[..16 * PAGE_SIZE].iter().all(|&b| b == 0x77));
    assert!(
        store[16 * PAGE_SIZE..].iter().all(|&b| b == 0),
        "no refused write landed"
    );
    data.release(&mut m).unwrap();
    ind.release(&mut m).unwrap();
}

#[test]
fn a_member_that_revokes_mid_write_gets_an_error() {
    let mut rig = Rig::new(&[64]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 3));
    let buf = Buffer::new(&mut m, SERVER, 4, Access::ReadWrite).unwrap();
    buf.mem().fill(0, 4 * PAGE_SIZE, 0x11).unwrap();
    let req = c
        .rw_request(Dir::Write, false, 0, &buf, 0, 32, None)
        .unwrap();
    assert!(c.submit(&req).unwrap());
    c.kick(&mut m).unwrap();
    // Gone before the server looks.
    buf.release(&mut m).unwrap();
    rig.pump();
    let mut out = Vec::new();
    c.poll(&mut m, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, Status::Error);
    assert!(rig.server.store(0).unwrap().bytes().iter().all(|&b| b == 0));
}

#[test]
fn a_member_that_does_not_take_responses_cannot_get_more_in_flight() {
    let mut rig = Rig::new(&[64]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 3));
    let slots = c.slots() as u64;
    assert_eq!(slots, 32);
    // Fill the request lane with flushes, twice over: the server takes the
    // first lane-full (a response slot for each), then must stop.
    let mut submitted = 0u64;
    for round in 0..3 {
        loop {
            let id = c.next_id();
            if !c.submit(&RequestRepr::Flush { id }).unwrap() {
                break;
            }
            submitted += 1;
        }
        c.kick(&mut m).unwrap();
        rig.pump();
        if round == 0 {
            assert_eq!(submitted, slots);
        }
    }
    assert_eq!(
        submitted,
        2 * slots,
        "the server took one lane of requests, then stopped"
    );
    assert_eq!(rig.server.stats().requests, slots);
    // Taking the responses lets the rest through.
    let mut out = Vec::new();
    c.poll(&mut m, &mut out).unwrap();
    rig.pump();
    c.poll(&mut m, &mut out).unwrap();
    assert_eq!(out.len() as u64, 2 * slots);
    assert!(out.iter().all(|o| o.status == Status::Okay));
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn a_lying_lane_index_cuts_the_member_off_and_others_go_on() {
    let mut rig = Rig::new(&[64, 64]);
    let (mut m2, mut c2) = rig.member(0, disk_entry(0, 2, false, 3));
    let (mut m3, mut c3) = rig.member(1, disk_entry(1, 3, false, 3));
    // Member 2 claims 1000 requests in a 32-slot lane.
    let hdr = c2.layout().requests.header;
    c2.raw_share()
        .store_u32(hdr, 1000, core::sync::atomic::Ordering::Release)
        .unwrap();
    c2.raw_share()
        .store_u32(hdr + 64, 0, core::sync::atomic::Ordering::Release)
        .unwrap();
    rig.pump();
    assert_eq!(rig.server.stats().cut_off, 1);
    assert_eq!(
        write(&mut rig, &mut m3, &mut c3, 0, &[3; 512], false),
        Status::Okay
    );
    // Garbage in every slot of another member's lane: answered with errors.
    let _ = (&mut m2, &mut c2);
    let mut garbage = [0xffu8; REQUEST_SIZE];
    for i in 0..40u64 {
        garbage[8..16].copy_from_slice(&(1000 + i).to_le_bytes());
        if !c3.submit_raw(&garbage).unwrap() {
            break;
        }
    }
    c3.kick(&mut m3).unwrap();
    rig.pump();
    let mut out = Vec::new();
    c3.poll(&mut m3, &mut out).unwrap();
    assert_eq!(out.len(), 32);
    assert!(out.iter().all(|o| o.status == Status::Error));
    assert_eq!(rig.server.stats().cut_off, 1);
}

#[test]
fn partial_segments_are_packed_for_the_store_and_spread_back() {
    // A store taking shared batches too: these requests are not contiguous
    // in the bounce pages, so they go through the private buffer anyway.
    let mut rig = Rig::new(&[64]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 3));
    let buf = Buffer::new(&mut m, SERVER, 3, Access::ReadWrite).unwrap();
    let src = pattern(9, 3 * PAGE_SIZE);
    buf.mem().write_from(0, &src).unwrap();
    let [g0, g1, g2] = [buf.grefs()[0], buf.grefs()[1], buf.grefs()[2]];
    // Sectors 2..6 of page 0, 0..8 of page 1, 3..4 of page 2: 4 + 8 + 1
    // sectors, so segment 1 lands at 2 KiB of the packed data, not 4 KiB.
    let segs = [(g0, 2, 5), (g1, 0, 7), (g2, 3, 3)];
    let w = raw_rw(1, Op::Write, 10, &segs);
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &w), Status::Okay);
    let mut want = Vec::new();
    want.extend_from_slice(&src[2 * 512..6 * 512]);
    want.extend_from_slice(&src[PAGE_SIZE..2 * PAGE_SIZE]);
    want.extend_from_slice(&src[2 * PAGE_SIZE + 3 * 512..2 * PAGE_SIZE + 4 * 512]);
    let store = rig.server.store(0).unwrap().bytes();
    assert!(
        store[10 * 512..23 * 512] == want[..],
        "packed into the store"
    );
    // Read the same 13 sectors into other places of the pages.
    buf.mem().fill(0, 3 * PAGE_SIZE, 0).unwrap();
    let r = raw_rw(2, Op::Read, 10, &[(g0, 0, 0), (g1, 1, 7), (g2, 0, 4)]);
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &r), Status::Okay);
    let mut back = vec![0u8; 3 * PAGE_SIZE];
    buf.mem().read_into(0, &mut back).unwrap();
    assert!(back[..512] == want[..512]);
    assert!(back[PAGE_SIZE + 512..2 * PAGE_SIZE] == want[512..512 + 7 * 512]);
    assert!(back[2 * PAGE_SIZE..2 * PAGE_SIZE + 5 * 512] == want[8 * 512..13 * 512]);
    assert!(back[512..PAGE_SIZE].iter().all(|&b| b == 0));
    buf.release(&mut m).unwrap();
}

#[test]
fn a_disk_added_while_serving_gets_the_next_index() {
    let mut rig = Rig::new(&[64]);
    assert_eq!(rig.refused(0, disk_entry(1, 2, false, 3)), status::ENOENT);
    let store = TestStore {
        ram: RamStore::new(32),
        shared: false,
        work: StoreWork::default(),
        failing: false,
    };
    assert_eq!(rig.server.add_disk(store), 1);
    assert_eq!(rig.server.disk_count(), 2);
    let (mut m2, mut c2) = rig.member(0, disk_entry(1, 2, false, 3));
    assert_eq!(
        write(&mut rig, &mut m2, &mut c2, 0, &[7; 512], false),
        Status::Okay
    );
    assert!(rig.server.store(0).unwrap().bytes().iter().all(|&b| b == 0));
    assert_eq!(&rig.server.store(1).unwrap().bytes()[..512], &[7; 512][..]);
    c2.detach(&mut m2).unwrap();
}

/// Issue 17 item 6: one member's discards and syncs are bounded per
/// service pass, counted by the store itself: a lane of whole-disk
/// discards costs at most `DISCARD_SECTORS_PER_PASS` per pass (done in
/// pieces, each answered once, after its last piece), and a lane of
/// `[WRITE 512 B, FLUSH]` pairs at most `SYNCS_PER_PASS` syncs; the other
/// member is served in every pass meanwhile. Before: one pass zeroed the
/// whole disk once per discard in the lane (here 32 x 64 MiB), and synced
/// once per pair.
#[test]
fn one_member_cannot_monopolize_the_store_with_discards_or_flushes() {
    let sectors = 64 * 1024 * 1024 / 512;
    let mut rig = Rig::new(&[sectors, 64]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 3));
    let (mut q, mut d) = rig.member(1, disk_entry(1, 3, false, 3));
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 0, &[7u8; 4096], false),
        Status::Okay
    );
    let mut ids = Vec::new();
    loop {
        let id = c.next_id();
        let r = RequestRepr::Discard {
            id,
            sector: 0,
            nr_sectors: sectors,
        };
        if !c.submit(&r).unwrap() {
            break;
        }
        ids.push(id);
    }
    c.kick(&mut m).unwrap();
    let mut out = Vec::new();
    let mut passes = 0;
    let before = rig.server.store(0).unwrap().work;
    while out.len() < ids.len() {
        let quiet = d.next_id();
        assert!(d.submit(&RequestRepr::Flush { id: quiet }).unwrap());
        d.kick(&mut q).unwrap();
        // A request that arrives is taken on the pass after the one that
        // sees it: two passes, each within the bounds.
        for _ in 0..2 {
            let was = rig.server.store(0).unwrap().work;
            let pr = rig.server.service(&mut rig.o);
            let now = rig.server.store(0).unwrap().work;
            assert!(
                now.discarded_sectors - was.discarded_sectors <= DISCARD_SECTORS_PER_PASS,
                "pass {passes}: {} sectors discarded",
                now.discarded_sectors - was.discarded_sectors
            );
            assert!(pr.max_cost.discarded_sectors <= DISCARD_SECTORS_PER_PASS);
            passes += 1;
        }
        // The quiet member is served meanwhile.
        let mut answers = Vec::new();
        d.poll(&mut q, &mut answers).unwrap();
        assert_eq!(answers.len(), 1, "pass {passes}: the other member waits");
        assert_eq!((answers[0].id, answers[0].status), (quiet, Status::Okay));
        c.poll(&mut m, &mut out).unwrap();
        assert!(passes < 10_000, "the discards never finished");
    }
    let done = rig.server.store(0).unwrap().work;
    assert_eq!(
        done.discarded_sectors - before.discarded_sectors,
        sectors * ids.len() as u64,
        "every discard done whole, once"
    );
    assert!(out.iter().all(|o| o.status == Status::Okay));
    let mut got: Vec<u64> = out.iter().map(|o| o.id).collect();
    got.sort_unstable();
    assert_eq!(got, ids, "each answered once");
    assert!(rig.server.store(0).unwrap().bytes()[..4096]
        .iter()
        .all(|&b| b == 0));
    // [WRITE 512 B, FLUSH] pairs.
    let buf = Buffer::new(&mut m, SERVER, 1, Access::ReadWrite).unwrap();
    let mut n = 0;
    while c.slots() as usize - n >= 2 {
        let id = c.next_id();
        let w = c
            .rw_request(Dir::Write, false, 0, &buf, 0, 1, None)
            .unwrap();
        let _ = id;
        assert!(c.submit(&w).unwrap());
        let id = c.next_id();
        assert!(c.submit(&RequestRepr::Flush { id }).unwrap());
        n += 2;
    }
    c.kick(&mut m).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let was = rig.server.store(0).unwrap().work.syncs;
        rig.server.service(&mut rig.o);
        let syncs = rig.server.store(0).unwrap().work.syncs - was;
        assert!(
            syncs <= u64::from(SYNCS_PER_PASS),
            "{syncs} syncs in one pass"
        );
        c.poll(&mut m, &mut out).unwrap();
    }
    assert!(out.iter().all(|o| o.status == Status::Okay));
    buf.release(&mut m).unwrap();
}

/// Counts the log lines each test thread makes (the server is pumped on
/// the test's own thread).
mod log_count {
    use std::cell::Cell;

    thread_local!(static LINES: Cell<u64> = const { Cell::new(0) });

    struct Counter;

    impl log::Log for Counter {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                LINES.with(|n| n.set(n.get() + 1));
            }
        }
        fn flush(&self) {}
    }

    static COUNTER: Counter = Counter;

    /// Lines logged on this thread so far (at info level and above).
    pub fn lines() -> u64 {
        let _ = log::set_logger(&COUNTER);
        log::set_max_level(log::LevelFilter::Info);
        LINES.with(Cell::get)
    }
}

/// Issue 17 item 7: what a member's requests make the server log is
/// bounded: a member whose every write fails in the store (and whose
/// refused requests would each be worth a line) makes at most
/// `LogBudget::LINES` lines per window. Before: a line per failed request
/// (here 96), each of which can block the PVH image up to 50 ms on a full
/// console.
#[test]
fn a_member_cannot_make_the_server_log_without_bound() {
    let mut rig = Rig::new(&[64]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 3));
    let before = log_count::lines();
    rig.server.store_mut(0).unwrap().failing = true;
    let buf = Buffer::new(&mut m, SERVER, 1, Access::ReadWrite).unwrap();
    let mut answered = 0;
    for _ in 0..3 {
        for _ in 0..c.slots() {
            let w = c
                .rw_request(Dir::Write, false, 0, &buf, 0, 1, None)
                .unwrap();
            assert!(c.submit(&w).unwrap());
        }
        c.kick(&mut m).unwrap();
        rig.pump();
        let mut out = Vec::new();
        c.poll(&mut m, &mut out).unwrap();
        assert!(out.iter().all(|o| o.status == Status::Error));
        answered += out.len();
        // Refused requests: an unknown operation.
        let bad = raw_rw(c.next_id(), Op::Read, 1 << 40, &[]);
        assert_eq!(raw_one(&mut rig, &mut m, &mut c, &bad), Status::Error);
    }
    assert_eq!(answered, 96);
    let lines = log_count::lines() - before;
    assert!(
        lines <= u64::from(LogBudget::LINES),
        "{lines} lines for one member's failures"
    );
    buf.release(&mut m).unwrap();
}

/// The file store under the server, copy once: batches whose data lies end
/// to end in the bounce pages (a 4 KiB direct write and a 1 MiB indirect
/// one in one batch) go to the file straight from the bounce pages, and a
/// batch holding one request with partial segments goes through the
/// private buffer (packed, then spread back); every byte lands where the
/// member asked, both ways.
#[test]
fn the_file_store_serves_batches_on_the_bounce_pages_and_falls_back() {
    use crate::file::FileStore;
    let path = std::env::temp_dir().join(format!("blk-server-file-{}.img", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4096 * 512)
        .unwrap();
    let mut rig = Rig::over(vec![FileStore::open(&path, false).unwrap()]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 11));
    // One batch: 4 KiB at sector 8, 1 MiB at sector 1024.
    let small = pattern(21, PAGE_SIZE);
    let big = pattern(22, 1 << 20);
    let b1 = Buffer::new(&mut m, SERVER, 1, Access::ReadWrite).unwrap();
    let b2 = Buffer::new(&mut m, SERVER, 256, Access::ReadWrite).unwrap();
    let ind = Buffer::new(&mut m, SERVER, 1, Access::ReadOnly).unwrap();
    b1.mem().write_from(0, &small).unwrap();
    b2.mem().write_from(0, &big).unwrap();
    let w1 = c.rw_request(Dir::Write, false, 8, &b1, 0, 8, None).unwrap();
    let w2 = c
        .rw_request(Dir::Write, true, 1024, &b2, 0, 2048, Some(&ind))
        .unwrap();
    let out = exchange(&mut rig, &mut m, &mut c, &[w1, w2]);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|d| d.status == Status::Okay));
    assert_eq!(rig.server.stats().batches, 1, "one batch");
    let file = std::fs::read(&path).unwrap();
    assert!(file[8 * 512..8 * 512 + PAGE_SIZE] == small[..]);
    assert!(file[1024 * 512..1024 * 512 + (1 << 20)] == big[..]);
    // Read them back in one batch, swapped between the buffers' starts.
    b1.mem().fill(0, PAGE_SIZE, 0).unwrap();
    b2.mem().fill(0, 1 << 20, 0).unwrap();
    let r1 = c
        .rw_request(Dir::Read, false, 1024, &b1, 0, 8, None)
        .unwrap();
    let r2 = c
        .rw_request(Dir::Read, false, 1024, &b2, 0, 2048, Some(&ind))
        .unwrap();
    let out = exchange(&mut rig, &mut m, &mut c, &[r1, r2]);
    assert!(out.len() == 2 && out.iter().all(|d| d.status == Status::Okay));
    let mut back = vec![0u8; 1 << 20];
    b2.mem().read_into(0, &mut back).unwrap();
    assert!(back == big);
    b1.mem().read_into(0, &mut back[..PAGE_SIZE]).unwrap();
    assert!(back[..PAGE_SIZE] == big[..PAGE_SIZE]);

    // One batch: a whole page and a request of partial segments (sectors
    // 2..6 of page 0, 0..8 of page 1, 3..4 of page 2): not end to end in
    // the bounce pages, so the batch takes the private buffer.
    let buf = Buffer::new(&mut m, SERVER, 3, Access::ReadWrite).unwrap();
    let src = pattern(23, 3 * PAGE_SIZE);
    buf.mem().write_from(0, &src).unwrap();
    let [g0, g1, g2] = [buf.grefs()[0], buf.grefs()[1], buf.grefs()[2]];
    let whole = c
        .rw_request(Dir::Write, false, 200, &b1, 0, 8, None)
        .unwrap();
    assert!(c.submit(&whole).unwrap());
    let partial = raw_rw(77, Op::Write, 10, &[(g0, 2, 5), (g1, 0, 7), (g2, 3, 3)]);
    let out_before = rig.server.stats().batches;
    assert!(c.submit_raw(&partial).unwrap());
    c.kick(&mut m).unwrap();
    rig.pump();
    let mut out = Vec::new();
    c.poll(&mut m, &mut out).unwrap();
    assert!(out.len() == 2 && out.iter().all(|d| d.status == Status::Okay));
    assert_eq!(rig.server.stats().batches, out_before + 1, "one batch");
    let mut want = Vec::new();
    want.extend_from_slice(&src[2 * 512..6 * 512]);
    want.extend_from_slice(&src[PAGE_SIZE..2 * PAGE_SIZE]);
    want.extend_from_slice(&src[2 * PAGE_SIZE + 3 * 512..2 * PAGE_SIZE + 4 * 512]);
    let file = std::fs::read(&path).unwrap();
    assert!(file[10 * 512..23 * 512] == want[..], "packed into the file");
    assert!(file[200 * 512..200 * 512 + PAGE_SIZE] == big[..PAGE_SIZE]);
    buf.mem().fill(0, 3 * PAGE_SIZE, 0).unwrap();
    let r = raw_rw(78, Op::Read, 10, &[(g0, 0, 0), (g1, 1, 7), (g2, 0, 4)]);
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &r), Status::Okay);
    let mut back = vec![0u8; 3 * PAGE_SIZE];
    buf.mem().read_into(0, &mut back).unwrap();
    assert!(back[..512] == want[..512]);
    assert!(back[PAGE_SIZE + 512..2 * PAGE_SIZE] == want[512..512 + 7 * 512]);
    assert!(back[2 * PAGE_SIZE..2 * PAGE_SIZE + 5 * 512] == want[8 * 512..13 * 512]);
    assert!(back[512..PAGE_SIZE].iter().all(|&b| b == 0));
    assert_eq!(rig.server.stats().errors, 0);
    assert_eq!(rig.server.store(0).unwrap().syncs, 1, "the FUA write");
    for b in [b1, b2, ind, buf] {
        b.release(&mut m).unwrap();
    }
    std::fs::remove_file(&path).unwrap();
}

/// The indirect pages of a batch's indirect requests come in with one
/// grant copy (one `GNTTABOP_copy` on Xen, one broker round trip on the
/// simulation), not one per request; a request whose indirect page is not
/// granted fails alone, and the others' data lands where they asked.
/// Before: three indirect writes in a batch cost four grant copy calls
/// (three indirect, one data), now two.
#[test]
fn a_batch_fetches_its_indirect_pages_with_one_grant_copy() {
    let mut rig = Rig::new(&[8192]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 3));
    let mut reqs = Vec::new();
    let mut bufs = Vec::new();
    for k in 0..3u64 {
        // 16 pages: more than fit inline, so indirect.
        let data = Buffer::new(&mut m, SERVER, 16, Access::ReadWrite).unwrap();
        data.mem()
            .write_from(0, &pattern(40 + k, 16 * PAGE_SIZE))
            .unwrap();
        let ind = Buffer::new(&mut m, SERVER, 1, Access::ReadOnly).unwrap();
        let r = c
            .rw_request(Dir::Write, false, k * 128, &data, 0, 128, Some(&ind))
            .unwrap();
        assert!(matches!(r, RequestRepr::Indirect { .. }));
        reqs.push(r);
        bufs.push((data, ind));
    }
    // The middle one names an indirect page that was never granted.
    let id = reqs[1].id();
    let bogus = raw_indirect(id, Op::Write, 128, 16, &[GrantRef(31337)]);
    let before = server_copies(&rig);
    assert!(c.submit(&reqs[0]).unwrap());
    assert!(c.submit_raw(&bogus).unwrap());
    assert!(c.submit(&reqs[2]).unwrap());
    c.kick(&mut m).unwrap();
    rig.pump();
    let mut out = Vec::new();
    c.poll(&mut m, &mut out).unwrap();
    let status: Vec<_> = out.iter().map(|d| (d.id, d.status)).collect();
    assert_eq!(
        status,
        [
            (reqs[0].id(), Status::Okay),
            (id, Status::Error),
            (reqs[2].id(), Status::Okay)
        ]
    );
    assert_eq!(rig.server.stats().batches, 1);
    assert_eq!(
        server_copies(&rig) - before,
        2,
        "one grant copy for the indirect pages, one for the data"
    );
    let store = rig.server.store(0).unwrap().bytes();
    let len = 16 * PAGE_SIZE;
    assert!(store[..len] == pattern(40, len)[..]);
    assert!(store[len..2 * len].iter().all(|&b| b == 0), "refused");
    assert!(store[2 * len..3 * len] == pattern(42, len)[..]);
    for (d, i) in bufs {
        d.release(&mut m).unwrap();
        i.release(&mut m).unwrap();
    }
}

/// Grant copy calls the server has made so far.
fn server_copies<S: Store>(rig: &Rig<S>) -> u64 {
    rig._broker
        .op_counts()
        .into_iter()
        .find(|(d, _)| *d == SERVER)
        .map(|(_, c)| c.copy_calls)
        .unwrap_or(0)
}

/// A RAM store that lends its own pages to the server (as the vbd store
/// lends pages granted to its backend), counting batches that came on them
/// and elsewhere (the server's pages or its private buffer).
struct LendingStore {
    ram: RamStore,
    pages: Rc<share_sim::SimPages>,
    on_lent: usize,
    elsewhere: usize,
}

impl LendingStore {
    /// A store of `sectors` lending `pages` pages of the server's platform.
    fn new(o: &mut SimPlatform, sectors: u64, pages: usize) -> LendingStore {
        LendingStore {
            ram: RamStore::new(sectors),
            pages: Rc::new(o.alloc_pages(pages).unwrap()),
            on_lent: 0,
            elsewhere: 0,
        }
    }
}

impl Store for LendingStore {
    fn info(&self) -> crate::store::StoreInfo {
        self.ram.info()
    }
    fn execute(&mut self, ios: &mut [Io<'_>]) {
        self.elsewhere += 1;
        self.ram.execute(ios)
    }
    fn takes_shared(&self) -> bool {
        true
    }
    fn execute_shared(&mut self, mem: &share_hal::SharedMem<'_>, ios: &mut [SharedIo]) {
        if mem.as_ptr() == self.pages.mem().as_ptr() {
            self.on_lent += 1;
        } else {
            self.elsewhere += 1;
        }
        self.ram.execute_shared(mem, ios)
    }
    fn lent_pages(&self) -> Option<Rc<dyn core::any::Any>> {
        let pages: Rc<dyn core::any::Any> = self.pages.clone();
        Some(pages)
    }
}

#[test]
fn a_store_that_lends_its_pages_gets_the_data_there_and_nothing_else() {
    let mut rig = Rig::over_made(|o| vec![LendingStore::new(o, 4096, 300)]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 11));
    // 1 MiB: one indirect request, its segment list in an indirect page.
    let big = pattern(21, 1024 * 1024);
    assert_eq!(
        write(&mut rig, &mut m, &mut c, 8, &big, false),
        Status::Okay
    );
    assert_eq!(
        read(&mut rig, &mut m, &mut c, 8, big.len()),
        (Status::Okay, big.clone())
    );
    let store = rig.server.store(0).unwrap();
    assert_eq!((store.on_lent, store.elsewhere), (2, 0));
    assert!(store.ram.bytes()[8 * 512..8 * 512 + big.len()] == big[..]);
    // The lent pages held the data, and not the member's segment list
    // (it went to the server's own pages at the same index, 256).
    let lent = store.pages.mem();
    let mut after = vec![0u8; 44 * PAGE_SIZE];
    lent.read_into(256 * PAGE_SIZE, &mut after).unwrap();
    assert!(after.iter().all(|&b| b == 0), "only data in lent pages");
    // Segments that are not whole pages go through the server's pages.
    let buf = Buffer::new(&mut m, SERVER, 2, Access::ReadWrite).unwrap();
    buf.mem().fill(0, 2 * PAGE_SIZE, 5).unwrap();
    let (g0, g1) = (buf.grefs()[0], buf.grefs()[1]);
    let w = raw_rw(1, Op::Write, 2, &[(g0, 1, 2), (g1, 0, 7)]);
    assert_eq!(raw_one(&mut rig, &mut m, &mut c, &w), Status::Okay);
    buf.release(&mut m).unwrap();
    let store = rig.server.store(0).unwrap();
    assert_eq!((store.on_lent, store.elsewhere), (2, 1));
    assert!(store.ram.bytes()[2 * 512..12 * 512].iter().all(|&b| b == 5));
}

#[test]
fn four_one_mib_requests_fill_one_batch_on_lent_pages() {
    // blkback-uk's sizes: 1032 pages of its own, 1024 lent by the vbd
    // store. Four 1 MiB requests are 1024 data pages and 4 indirect pages:
    // one batch, the data on the lent pages, the lists on the server's.
    let config = ServerConfig {
        bounce_pages: 1032,
        max_indirect_segments: 256,
    };
    let mut rig = Rig::over_made_with(config, |o| vec![LendingStore::new(o, 16384, 1024)]);
    let (mut m, mut c) = rig.member(0, disk_entry(0, 2, false, 11));
    let mut bufs = Vec::new();
    let mut reqs = Vec::new();
    for k in 0..4u64 {
        let buf = Buffer::new(&mut m, SERVER, 256, Access::ReadWrite).unwrap();
        let ind = Buffer::new(&mut m, SERVER, 1, Access::ReadOnly).unwrap();
        buf.mem().write_from(0, &pattern(k, 1024 * 1024)).unwrap();
        let sector = k * 2048;
        reqs.push(
            c.rw_request(Dir::Write, false, sector, &buf, 0, 2048, Some(&ind))
                .unwrap(),
        );
        bufs.push((buf, ind));
    }
    let batches = rig.server.stats().batches;
    let out = exchange(&mut rig, &mut m, &mut c, &reqs);
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|o| o.status == Status::Okay));
    assert_eq!(rig.server.stats().batches - batches, 1);
    let store = rig.server.store(0).unwrap();
    assert_eq!((store.on_lent, store.elsewhere), (1, 0));
    for k in 0..4usize {
        let at = k * 1024 * 1024;
        assert!(store.ram.bytes()[at..at + 1024 * 1024] == pattern(k as u64, 1024 * 1024)[..]);
    }
    for (buf, ind) in bufs {
        buf.release(&mut m).unwrap();
        ind.release(&mut m).unwrap();
    }
}
