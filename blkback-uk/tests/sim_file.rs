//! blkback-file as a real process on the simulation: the test process runs
//! the broker, plays dom0 (writes owner entries into the server's vdevice
//! page) and the members.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blkback_uk::client::{BlkClient, Buffer, Completion};
use share_hal::platform::{Access, Clock, PAGE_SIZE};
use share_hal::share::ShareRef;
use share_hal::vdevice::VdeviceClient;
use share_hal::wire::blk::{features, Dir, RequestRepr, Status};
use share_hal::wire::vdevice::{flags, status, Bootstrap, EntryRepr, Kind, Role, BOOTSTRAP_KEY};
use share_hal::{DomId, Error, GrantRef};
use share_sim::{temp_socket_path, Broker, SimMapping, SimPlatform, SimStore};

const SERVER: DomId = 1;
const SECOND: u64 = 1_000_000_000;

struct Server {
    child: Child,
}

impl Server {
    fn spawn(sock: &Path, disks: &[String]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_blkback-file"));
        cmd.arg("--sim").arg(sock).args(["--domid", "1"]);
        for d in disks {
            cmd.args(["--disk", d]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Server { child }
    }

    fn kill9(&mut self) {
        // Child::kill is SIGKILL.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bootstrap(sock: &Path) -> Bootstrap {
    let store = SimStore::for_broker(sock);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = store.read(SERVER, BOOTSTRAP_KEY).unwrap() {
            if let Ok(b) = Bootstrap::parse(v.as_bytes()) {
                return b;
            }
        }
        assert!(Instant::now() < until, "blkback-file never published");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Dom0 {
    p: SimPlatform,
    vd: VdeviceClient<SimMapping>,
}

impl Dom0 {
    fn attach(sock: &Path) -> Dom0 {
        let boot = bootstrap(sock);
        let mut p = SimPlatform::connect(sock, 0).unwrap();
        let vd = VdeviceClient::attach(&mut p, SERVER, boot).unwrap();
        Dom0 { p, vd }
    }

    fn change(&mut self, index: u32, e: EntryRepr) -> EntryRepr {
        let dl = self.p.now_ns() + 10 * SECOND;
        self.vd.change(&mut self.p, index, &e, dl).unwrap()
    }

    /// Serves disk `disk` to `peer`; returns the share_ref.
    fn serve(
        &mut self,
        index: u32,
        disk: u64,
        peer: DomId,
        read_only: bool,
        numpages: u32,
    ) -> ShareRef {
        let e = self.change(index, entry(disk, peer, read_only, numpages));
        assert_eq!(e.status, status::OK, "owner entry refused");
        ShareRef {
            owner: SERVER,
            descriptor: e.share_ref,
        }
    }
}

fn entry(disk: u64, peer: DomId, read_only: bool, numpages: u32) -> EntryRepr {
    EntryRepr {
        kind: Kind::Disk,
        role: Role::Owner,
        flags: if read_only { flags::READ_ONLY } else { 0 },
        subtype: features::ALL,
        numpages,
        peer,
        share_ref: GrantRef(0),
        status: 0,
        param: disk,
    }
}

fn image(tag: &str, bytes: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("blkback-it-{tag}-{}.img", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(bytes).unwrap();
    path
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

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn member(sock: &Path, domid: DomId, r: ShareRef) -> (SimPlatform, BlkClient<SimPlatform>) {
    let mut p = SimPlatform::connect(sock, domid).unwrap();
    let c = BlkClient::attach(&mut p, r).unwrap();
    (p, c)
}

#[test]
fn files_served_through_vdevice_entries() {
    let sock = temp_socket_path("blkback-file");
    let _broker = Broker::spawn(&sock).unwrap();
    let rw = image("rw", 8 << 20);
    let ro = image("ro", 1 << 20);
    std::fs::write(&ro, pattern(42, 1 << 20)).unwrap();
    let _server = Server::spawn(
        &sock,
        &[rw.display().to_string(), format!("ro:{}", ro.display())],
    );
    let mut dom0 = Dom0::attach(&sock);
    let r5 = dom0.serve(0, 0, 5, false, 11);
    let (mut p, mut c) = member(&sock, 5, r5);
    assert_eq!(c.control().capacity, (8 << 20) / 512);
    let dl = |p: &SimPlatform| p.now_ns() + 10 * SECOND;

    // 1 MiB through one indirect request, read back, and in the file.
    let big = pattern(1, 1 << 20);
    let d = dl(&p);
    assert_eq!(c.write(&mut p, 2048, &big, false, d), Ok(Status::Okay));
    let d = dl(&p);
    assert_eq!(c.flush(&mut p, d), Ok(Status::Okay));
    let mut back = vec![0u8; 1 << 20];
    let d = dl(&p);
    assert_eq!(c.read(&mut p, 2048, &mut back, d), Ok(Status::Okay));
    assert!(back == big);
    let file = std::fs::read(&rw).unwrap();
    assert!(file[2048 * 512..2048 * 512 + (1 << 20)] == big[..]);
    // FUA, discard.
    let d = dl(&p);
    assert_eq!(
        c.write(&mut p, 0, &pattern(2, 4096), true, d),
        Ok(Status::Okay)
    );
    assert!(std::fs::read(&rw).unwrap()[..4096] == pattern(2, 4096)[..]);
    let d = dl(&p);
    assert_eq!(c.discard(&mut p, 2048, 8, d), Ok(Status::Okay));
    assert!(std::fs::read(&rw).unwrap()[2048 * 512..2049 * 512 + 3584]
        .iter()
        .all(|&b| b == 0));
    // Out of range: an error, the connection goes on.
    let d = dl(&p);
    assert_eq!(
        c.write(&mut p, 16383, &[1; 1024], false, d),
        Ok(Status::Error)
    );

    // 64 writes in flight at once, one kick.
    let mut bufs = Vec::new();
    let mut reqs = Vec::new();
    for i in 0..64u64 {
        let b = Buffer::new(&mut p, SERVER, 1, Access::ReadWrite).unwrap();
        b.mem().write_from(0, &pattern(100 + i, PAGE_SIZE)).unwrap();
        reqs.push(
            c.rw_request(Dir::Write, false, 8192 + 8 * i, &b, 0, 8, None)
                .unwrap(),
        );
        bufs.push(b);
    }
    for r in &reqs {
        assert!(c.submit(r).unwrap());
    }
    assert_eq!(c.in_flight(), 64);
    c.kick(&mut p).unwrap();
    let mut done: Vec<Completion> = Vec::new();
    while done.len() < 64 {
        let d = dl(&p);
        done.extend(c.wait(&mut p, d).unwrap());
    }
    assert!(done.iter().all(|x| x.status == Status::Okay));
    for b in bufs {
        b.release(&mut p).unwrap();
    }
    let file = std::fs::read(&rw).unwrap();
    for i in 0..64usize {
        let at = (8192 + 8 * i) * 512;
        assert!(file[at..at + PAGE_SIZE] == pattern(100 + i as u64, PAGE_SIZE)[..]);
    }

    // The read-only file: two readers, writes refused; a writer refused.
    let r6 = dom0.serve(1, 1, 6, true, 3);
    let r7 = dom0.serve(2, 1, 7, true, 3);
    assert_eq!(dom0.change(3, entry(1, 8, false, 3)).status, status::EINVAL);
    assert_eq!(dom0.change(3, entry(0, 8, true, 3)).status, status::EBUSY);
    let (mut p6, mut c6) = member(&sock, 6, r6);
    let (mut p7, mut c7) = member(&sock, 7, r7);
    assert!(c6.control().read_only);
    let d = dl(&p6);
    assert_eq!(c6.write(&mut p6, 0, &[0; 512], false, d), Ok(Status::Error));
    let mut head = vec![0u8; 8192];
    let d = dl(&p7);
    assert_eq!(c7.read(&mut p7, 0, &mut head, d), Ok(Status::Okay));
    assert!(head == pattern(42, 1 << 20)[..8192]);
    assert!(std::fs::read(&ro).unwrap() == pattern(42, 1 << 20));

    // A member that vanishes with writes in flight: the server goes on.
    let r9 = dom0.serve(4, 1, 9, true, 3);
    {
        let (mut p9, mut c9) = member(&sock, 9, r9);
        let b = Buffer::new(&mut p9, SERVER, 13, Access::ReadWrite).unwrap();
        for i in 0..20 {
            let req = c9
                .rw_request(Dir::Read, false, i * 8, &b, 0, 104, None)
                .unwrap();
            assert!(c9.submit(&req).unwrap());
        }
        c9.kick(&mut p9).unwrap();
        // The process's connection dies with everything it had.
        std::mem::forget(b);
        std::mem::forget(c9);
        drop(p9);
    }
    let d = dl(&p7);
    assert_eq!(c7.read(&mut p7, 8, &mut head, d), Ok(Status::Okay));

    // Removing member 5: its share is gone for good.
    c.detach(&mut p).unwrap();
    assert_eq!(dom0.change(0, EntryRepr::EMPTY).status, status::OK);
    assert!(matches!(
        BlkClient::attach(&mut p, r5),
        Err(Error::NoGrant { .. })
    ));
    let _ = std::fs::remove_file(&rw);
    let _ = std::fs::remove_file(&ro);
}

/// One write of the stream: where, what.
#[derive(Clone, Copy)]
struct W {
    sector: u64,
    seed: u64,
    fua: bool,
}

const W_SECTORS: u64 = 64; // 32 KiB: 8 segments, direct
const DEPTH: usize = 16;

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let sock = temp_socket_path("blkback-crash");
    let _broker = Broker::spawn(&sock).unwrap();
    let path = image("crash", 64 << 20);
    let disks = [path.display().to_string()];
    let mut server = Server::spawn(&sock, &disks);
    let mut dom0 = Dom0::attach(&sock);
    let r = dom0.serve(0, 0, 5, false, 11);
    let (mut p, mut c) = member(&sock, 5, r);

    // The stream: up to DEPTH writes in flight, each to its own place; a
    // flush after every 8 writes; every 5th write with FUA. The server is
    // killed with writes in flight once `kill_at` writes were answered.
    let seed0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let kill_at = 150 + (seed0 % 200) as usize;
    let capacity_writes = (64 << 20) / 512 / W_SECTORS;
    let mut writes: Vec<W> = Vec::new();
    // id -> (write index or None for a flush, buffer slot)
    let mut pending: std::collections::HashMap<u64, (Option<usize>, usize, Vec<usize>)> =
        Default::default();
    let bufs: Vec<Buffer<SimPlatform>> = (0..DEPTH + 1)
        .map(|_| Buffer::new(&mut p, SERVER, (W_SECTORS / 8) as usize, Access::ReadWrite).unwrap())
        .collect();
    let mut free: Vec<usize> = (0..DEPTH).collect();
    let mut acked: Vec<usize> = Vec::new();
    let mut durable: std::collections::BTreeSet<usize> = Default::default();
    let mut since_flush = 0;
    let mut killed = false;
    let mut flushes_acked = 0;
    'stream: for _ in 0..100_000 {
        // Fill the pipeline.
        while let Some(slot) = free.pop() {
            let i = writes.len();
            if i as u64 >= capacity_writes {
                free.push(slot);
                break;
            }
            let w = W {
                sector: i as u64 * W_SECTORS,
                seed: seed0 ^ (i as u64).wrapping_mul(0x1234_5678_9abc),
                fua: i % 5 == 4,
            };
            writes.push(w);
            bufs[slot]
                .mem()
                .write_from(0, &pattern(w.seed, (W_SECTORS * 512) as usize))
                .unwrap();
            let req = c
                .rw_request(Dir::Write, w.fua, w.sector, &bufs[slot], 0, W_SECTORS, None)
                .unwrap();
            assert!(c.submit(&req).unwrap());
            pending.insert(req.id(), (Some(i), slot, Vec::new()));
            since_flush += 1;
            if since_flush == 8 {
                since_flush = 0;
                let id = c.next_id();
                assert!(c.submit(&RequestRepr::Flush { id }).unwrap());
                // What a flush covers: every write answered before it was
                // sent.
                pending.insert(id, (None, usize::MAX, acked.clone()));
            }
        }
        c.kick(&mut p).unwrap();
        if !killed && acked.len() >= kill_at {
            server.kill9();
            killed = true;
        }
        let dl = p.now_ns() + if killed { SECOND / 2 } else { 10 * SECOND };
        let done = match c.wait(&mut p, dl) {
            Ok(d) => d,
            Err(Error::TimedOut) if killed => break 'stream,
            Err(e) => panic!("member failed: {e}"),
        };
        for x in done {
            let (write, slot, covers) = pending.remove(&x.id).expect("answer to a request sent");
            assert_eq!(x.status, Status::Okay);
            match write {
                Some(i) => {
                    acked.push(i);
                    if writes[i].fua {
                        durable.insert(i);
                    }
                    free.push(slot);
                }
                None => {
                    flushes_acked += 1;
                    durable.extend(covers);
                }
            }
        }
    }
    assert!(killed, "the stream ended before the kill");
    assert!(flushes_acked > 0 && !durable.is_empty());
    eprintln!(
        "killed after {} answered writes ({} durable, {} flushes answered), {} in flight",
        acked.len(),
        durable.len(),
        flushes_acked,
        pending.len()
    );
    let len = (W_SECTORS * 512) as usize;
    let check = |bytes: &[u8], what: &str| {
        for &i in &durable {
            let w = writes[i];
            let at = (w.sector * 512) as usize;
            assert_eq!(
                fnv(&bytes[at..at + len]),
                fnv(&pattern(w.seed, len)),
                "{what}: acknowledged durable write {i} (sector {}) lost",
                w.sector
            );
        }
    };
    check(&std::fs::read(&path).unwrap(), "file after kill -9");

    // Restart on the same file; dom0 connects the member again; the member
    // re-issues what was in flight, flushes, and reads everything back.
    SimStore::for_broker(&sock)
        .remove(SERVER, BOOTSTRAP_KEY)
        .unwrap();
    let _ = c.detach(&mut p);
    let _server2 = Server::spawn(&sock, &disks);
    // dom0's tool keeps no state: a fresh run against the new page.
    drop(dom0);
    let mut dom0 = Dom0::attach(&sock);
    let r = dom0.serve(0, 0, 5, false, 11);
    let mut c = BlkClient::attach(&mut p, r).unwrap();
    let mut reissued: Vec<usize> = pending.values().filter_map(|v| v.0).collect();
    reissued.sort();
    for &i in &reissued {
        let w = writes[i];
        let dl = p.now_ns() + 10 * SECOND;
        assert_eq!(
            c.write(&mut p, w.sector, &pattern(w.seed, len), w.fua, dl),
            Ok(Status::Okay)
        );
    }
    let dl = p.now_ns() + 10 * SECOND;
    assert_eq!(c.flush(&mut p, dl), Ok(Status::Okay));
    let mut through = vec![0u8; 64 << 20];
    for (k, chunk) in through.chunks_mut(1 << 20).enumerate() {
        let dl = p.now_ns() + 10 * SECOND;
        assert_eq!(c.read(&mut p, k as u64 * 2048, chunk, dl), Ok(Status::Okay));
    }
    check(&through, "fresh attach after restart");
    for &i in &reissued {
        let w = writes[i];
        let at = (w.sector * 512) as usize;
        assert_eq!(
            fnv(&through[at..at + len]),
            fnv(&pattern(w.seed, len)),
            "re-issued write {i}"
        );
    }
    for b in bufs {
        let _ = b.release(&mut p);
    }
    let _ = std::fs::remove_file(&path);
}
