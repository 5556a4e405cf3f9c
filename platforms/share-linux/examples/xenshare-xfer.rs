//! Two Linux domains move data through `/dev/xenshare` (xenshare.ko) with
//! share-hal's ordinary API: [`Share`] on the owner's side, [`Attached`]
//! and [`sg_xfer`] on the member's, over [`XenShareDev`], the same calls
//! the simulation and the unikernels make.
//!
//! ```text
//! xenshare-xfer owner  --domid D --peer M [--mib N]   # prints SHARE_REF D R
//! xenshare-xfer member --domid M --owner D --ref R [--mib N] [--join] [--stall S]
//! xenshare-xfer refusals --domid D --peer P
//! ```
//!
//! `refusals` checks that the device refuses what it must (pages, grants,
//! ports and mappings that are not the caller's, copy segments out of
//! bounds) with the documented errors, and that a valid copy in the same
//! batch still happens.
//!
//! The share (66 pages) holds two lanes of 32 slots of 2 KiB (owner to
//! member, member to owner) and two bulk regions of 16 pages. Each side
//! sends N MiB of random bytes through its lane and N MiB through a bulk
//! region: the owner writes its region in place; the member grant-copies
//! (`sg_xfer`) between pages of its own, allocated through the device, and
//! the owner's pages of the share, both ways. A lane message announces each
//! bulk chunk and one acknowledges it. Both sides print an FNV-1a checksum
//! of what they sent and of what they received, for the caller to compare:
//!
//! ```text
//! lane sent BYTES fnv=HEX / lane received BYTES fnv=HEX
//! bulk sent BYTES fnv=HEX / bulk received BYTES fnv=HEX
//! ```
//!
//! With `--join` the member joins through the device's JOIN call instead
//! (xenshare.ko maps and validates the share; [`XenShareDev::join`]) and
//! moves its bulk chunks in place through that mapping, which needs an
//! auto-translated (PVH) domain.
//!
//! Everything the peer writes is checked (message kinds, lengths, sequence
//! numbers) and a peer that stalls for 60 s ends the run with an error.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use share_hal::lane::{self, Consumer, Producer};
use share_hal::platform::{
    Clock, CopyPtr, CopySeg, CopyStatus, DomId, EventChannels, GrantRef, Memory, PageBlock, Port,
    PAGE_SIZE,
};
use share_hal::share::{sg_xfer, Attached, Share, ShareRef};
use share_hal::{Error, SharedMem};
use share_linux::xenshare::XenShareDev;

#[path = "common/xfer.rs"]
mod xfer;
use xfer::*;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const STALL: Duration = Duration::from_secs(60);

struct Fnv(u64, u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325, 0)
    }
    fn add(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.1 += data.len() as u64;
    }
    fn show(&self) -> String {
        format!("{} fnv={:016x}", self.1, self.0)
    }
}

/// xorshift64*: the bytes to send, seeded from /dev/urandom so no run
/// can pass by sending what the checker expects anyway.
struct Rng(u64);

impl Rng {
    fn new() -> Res<Self> {
        let mut seed = [0u8; 8];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)?;
        Ok(Rng(u64::from_le_bytes(seed) | 1))
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// How one side moves bulk chunks: the owner reads and writes its region
/// of the share in place; the member grant-copies through its own pages.
trait Bulk {
    /// Puts chunk data (at most BULK_BYTES) where the peer will read it.
    fn put(&mut self, p: &mut XenShareDev, data: &[u8]) -> Res<()>;
    /// Takes `len` bytes the peer put.
    fn take(&mut self, p: &mut XenShareDev, len: usize, out: &mut [u8]) -> Res<()>;
}

struct Side<'a, B: Bulk> {
    name: &'static str,
    stall: Duration,
    to: Producer<'a>,
    from: Consumer<'a>,
    port: Port,
    bulk: B,
    rng: Rng,
    outbox: VecDeque<Vec<u8>>,
    stream_left: u64,
    stream_end_sent: bool,
    chunks_left: u64,
    chunk_out: Option<u32>,
    bulk_seq: u32,
    bulk_end_sent: bool,
    peer_stream_done: bool,
    peer_bulk_done: bool,
    peer_bulk_seq: u32,
    data_seq: u32,
    peer_data_seq: u32,
    lane_sent: Fnv,
    lane_got: Fnv,
    bulk_sent: Fnv,
    bulk_got: Fnv,
    buf: Vec<u8>,
}

impl<'a, B: Bulk> Side<'a, B> {
    fn done(&self) -> bool {
        self.stream_end_sent
            && self.bulk_end_sent
            && self.outbox.is_empty()
            && self.peer_stream_done
            && self.peer_bulk_done
    }

    /// Queues what is next to send when the outbox is empty.
    fn refill(&mut self, p: &mut XenShareDev) -> Res<()> {
        if self.outbox.is_empty() && self.stream_left > 0 {
            let n = self.stream_left.min(PAYLOAD as u64) as usize;
            let mut payload = vec![0u8; n];
            self.rng.fill(&mut payload);
            self.lane_sent.add(&payload);
            self.outbox
                .push_back(msg(DATA, self.data_seq, &payload, n as u32));
            self.data_seq = self.data_seq.wrapping_add(1);
            self.stream_left -= n as u64;
        } else if self.stream_left == 0 && !self.stream_end_sent {
            self.outbox.push_back(msg(DATA_END, self.data_seq, &[], 0));
            self.stream_end_sent = true;
        }
        if self.chunk_out.is_none() && self.chunks_left > 0 {
            let mut data = vec![0u8; BULK_BYTES];
            self.rng.fill(&mut data);
            self.bulk.put(p, &data)?;
            self.bulk_sent.add(&data);
            self.outbox
                .push_back(msg(BULK, self.bulk_seq, &[], BULK_BYTES as u32));
            self.chunk_out = Some(self.bulk_seq);
            self.bulk_seq = self.bulk_seq.wrapping_add(1);
            self.chunks_left -= 1;
        } else if self.chunk_out.is_none() && self.chunks_left == 0 && !self.bulk_end_sent {
            self.outbox.push_back(msg(BULK_END, self.bulk_seq, &[], 0));
            self.bulk_end_sent = true;
        }
        Ok(())
    }

    fn handle(&mut self, p: &mut XenShareDev, m: &[u8]) -> Res<()> {
        let word = |i: usize| u32::from_le_bytes(m[4 * i..4 * i + 4].try_into().unwrap());
        let (kind, seq, len) = (word(0), word(1), word(2));
        match kind {
            DATA => {
                if seq != self.peer_data_seq || len as usize > PAYLOAD || len == 0 {
                    return Err(format!("bad data message (seq {seq}, len {len})").into());
                }
                self.lane_got.add(&m[HDR..HDR + len as usize]);
                self.peer_data_seq = seq.wrapping_add(1);
            }
            DATA_END => {
                if seq != self.peer_data_seq {
                    return Err(format!("stream ended at {seq}, not {}", self.peer_data_seq).into());
                }
                self.peer_stream_done = true;
            }
            BULK => {
                if seq != self.peer_bulk_seq || len as usize > BULK_BYTES || len == 0 {
                    return Err(format!("bad bulk message (seq {seq}, len {len})").into());
                }
                let mut data = std::mem::take(&mut self.buf);
                data.resize(len as usize, 0);
                self.bulk.take(p, len as usize, &mut data)?;
                self.bulk_got.add(&data);
                self.buf = data;
                self.peer_bulk_seq = seq.wrapping_add(1);
                self.outbox.push_back(msg(ACK, seq, &[], 0));
            }
            ACK => {
                if self.chunk_out != Some(seq) {
                    return Err(format!("acknowledgement of chunk {seq} not in flight").into());
                }
                self.chunk_out = None;
            }
            BULK_END => {
                if seq != self.peer_bulk_seq {
                    return Err("bulk ended early".into());
                }
                self.peer_bulk_done = true;
            }
            k => return Err(format!("unknown message kind {k}").into()),
        }
        Ok(())
    }

    fn run(&mut self, p: &mut XenShareDev) -> Res<()> {
        let start = Instant::now();
        let mut last_progress = Instant::now();
        let mut slot = vec![0u8; SLOT];
        while !self.done() {
            let mut moved = 0u32;
            self.refill(p)?;
            while let Some(m) = self.outbox.front() {
                if !self.to.push(m)? {
                    break;
                }
                self.outbox.pop_front();
                moved += 1;
                self.refill(p)?;
            }
            if self.from.poll()? > 0 {
                while self.from.pop_into(&mut slot)? {
                    self.handle(p, &slot)?;
                    moved += 1;
                }
            }
            let t1 = self.to.publish()?;
            let t2 = self.from.release()?;
            if t1 || t2 {
                p.notify(self.port)?;
            }
            if moved > 0 {
                last_progress = Instant::now();
                continue;
            }
            if self.done() {
                break;
            }
            // Arm both events, re-check, then sleep until a trigger.
            let room = if self.outbox.is_empty() {
                0
            } else {
                self.to.prepare_wait(1)?
            };
            if self.from.prepare_wait()? > 0 || room > 0 {
                continue;
            }
            if last_progress.elapsed() > self.stall {
                return Err(format!("{}: no progress for {:?}", self.name, self.stall).into());
            }
            match p.wait(Some(p.now_ns() + 1_000_000_000), &mut |_| {}) {
                Ok(()) | Err(Error::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!("lane sent {}", self.lane_sent.show());
        println!("lane received {}", self.lane_got.show());
        println!("bulk sent {}", self.bulk_sent.show());
        println!("bulk received {}", self.bulk_got.show());
        let total = self.lane_sent.1 + self.lane_got.1 + self.bulk_sent.1 + self.bulk_got.1;
        println!(
            "{}: moved {total} bytes in {secs:.2} s ({:.1} MiB/s)",
            self.name,
            total as f64 / secs / (1 << 20) as f64
        );
        Ok(())
    }
}

/// The owner's bulk: its own pages of the share.
struct OwnerBulk<'a> {
    mem: SharedMem<'a>,
}

impl Bulk for OwnerBulk<'_> {
    fn put(&mut self, _p: &mut XenShareDev, data: &[u8]) -> Res<()> {
        self.mem.write_from(O2M_BULK * PAGE_SIZE, data)?;
        Ok(())
    }
    fn take(&mut self, _p: &mut XenShareDev, len: usize, out: &mut [u8]) -> Res<()> {
        self.mem.read_into(M2O_BULK * PAGE_SIZE, &mut out[..len])?;
        Ok(())
    }
}

/// The member's bulk: grant copy between its registered pages and the
/// owner's grants of the bulk regions.
struct MemberBulk<P: PageBlock> {
    buf: P,
    owner: DomId,
    o2m: Vec<GrantRef>,
    m2o: Vec<GrantRef>,
}

impl<P: PageBlock> MemberBulk<P> {
    fn xfer(&self, p: &mut XenShareDev, len: usize, to_owner: bool) -> Res<()> {
        let refs = if to_owner { &self.m2o } else { &self.o2m };
        let mut segs = Vec::with_capacity(BULK_PAGES);
        let pages = len.div_ceil(PAGE_SIZE);
        if pages > refs.len() {
            return Err("bulk chunk larger than its region".into());
        }
        for (i, &gref) in refs.iter().enumerate().take(pages) {
            let n = (len - i * PAGE_SIZE).min(PAGE_SIZE) as u16;
            let local = CopyPtr::Local {
                frame: self.buf.frame(i).ok_or("bulk buffer too small")?,
                offset: 0,
            };
            let foreign = CopyPtr::Foreign {
                domid: self.owner,
                gref,
                offset: 0,
            };
            let (src, dst) = if to_owner {
                (local, foreign)
            } else {
                (foreign, local)
            };
            segs.push(CopySeg {
                src,
                dst,
                len: n,
                status: CopyStatus::Pending,
            });
        }
        let r = sg_xfer(p, &mut segs)?;
        if r.failed > 0 {
            let first = segs.iter().find(|s| s.status != CopyStatus::Done);
            return Err(format!("grant copy: {} segment(s) failed: {first:?}", r.failed).into());
        }
        Ok(())
    }
}

impl<P: PageBlock> Bulk for MemberBulk<P> {
    fn put(&mut self, p: &mut XenShareDev, data: &[u8]) -> Res<()> {
        self.buf.mem().write_from(0, data)?;
        self.xfer(p, data.len(), true)
    }
    fn take(&mut self, p: &mut XenShareDev, len: usize, out: &mut [u8]) -> Res<()> {
        self.xfer(p, len, false)?;
        self.buf.mem().read_into(0, &mut out[..len])?;
        Ok(())
    }
}

struct Args {
    domid: DomId,
    peer: DomId,
    share_ref: u32,
    mib: u64,
    join: bool,
    stall: Duration,
}

fn parse(args: &[String], peer_flag: &str, want_ref: bool) -> Res<Args> {
    let mut a = Args {
        domid: 0,
        peer: 0,
        share_ref: 0,
        mib: 8,
        join: false,
        stall: STALL,
    };
    let (mut got_domid, mut got_peer, mut got_ref) = (false, false, !want_ref);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--join" && want_ref {
            a.join = true;
            continue;
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--domid" => (a.domid, got_domid) = (v.parse()?, true),
            f if f == peer_flag => (a.peer, got_peer) = (v.parse()?, true),
            "--ref" if want_ref => (a.share_ref, got_ref) = (v.parse()?, true),
            "--mib" => a.mib = v.parse()?,
            "--stall" => a.stall = Duration::from_secs(v.parse()?),
            f => return Err(format!("unknown option {f}").into()),
        }
    }
    if !(got_domid && got_peer && got_ref) || a.mib == 0 || a.mib > 1024 {
        return Err(USAGE.into());
    }
    Ok(a)
}

const USAGE: &str = "usage: xenshare-xfer owner --domid D --peer M [--mib N]\n       \
                     xenshare-xfer member --domid M --owner D --ref R [--mib N] [--join] [--stall S]\n       \
                     xenshare-xfer refusals --domid D --peer P";

fn owner(a: Args) -> Res<()> {
    let mut p = XenShareDev::open(a.domid)?;
    let mut share = Share::create(&mut p, SHARE_PAGES)?;
    let layout = lane_layout()?;
    lane::init(lane_window(share.mem(), O2M_LANE)?, layout, 0)?;
    lane::init(lane_window(share.mem(), M2O_LANE)?, layout, 0)?;
    let r = share.add_member(&mut p, a.peer)?;
    println!(
        "owner: share of {SHARE_PAGES} pages for domain {} (lanes of {} slots)",
        a.peer,
        layout.slot_count()
    );
    println!("SHARE_REF {} {}", r.owner, r.descriptor.0);
    let port = share.port(a.peer)?;
    let result = {
        let mem = share.mem();
        side(
            &a,
            "owner",
            mem,
            (O2M_LANE, M2O_LANE),
            port,
            OwnerBulk { mem },
        )?
        .run(&mut p)
    };
    // Revoke everything; the member unmaps when it leaves.
    let deadline = Instant::now() + a.stall;
    loop {
        match share.destroy(&mut p) {
            Ok(()) => break,
            Err(Error::GrantInUse { gref }) if Instant::now() < deadline => {
                let _ = gref;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("destroying the share: {e}").into()),
        }
    }
    println!("owner: share destroyed, every grant revoked");
    result
}

/// The joined member's bulk: the owner's pages, mapped by the kernel.
struct JoinedBulk<'a> {
    mem: SharedMem<'a>,
}

impl Bulk for JoinedBulk<'_> {
    fn put(&mut self, _p: &mut XenShareDev, data: &[u8]) -> Res<()> {
        self.mem.write_from(M2O_BULK * PAGE_SIZE, data)?;
        Ok(())
    }
    fn take(&mut self, _p: &mut XenShareDev, len: usize, out: &mut [u8]) -> Res<()> {
        self.mem.read_into(O2M_BULK * PAGE_SIZE, &mut out[..len])?;
        Ok(())
    }
}

/// One end of the transfer: it sends on lane `lanes.0`, receives on
/// `lanes.1`, and moves bulk chunks through `bulk`.
fn side<'a, B: Bulk>(
    a: &Args,
    name: &'static str,
    mem: SharedMem<'a>,
    lanes: (usize, usize),
    port: Port,
    bulk: B,
) -> Res<Side<'a, B>> {
    let layout = lane_layout()?;
    Ok(Side {
        name,
        stall: a.stall,
        to: Producer::attach(lane_window(mem, lanes.0)?, layout)?,
        from: Consumer::attach(lane_window(mem, lanes.1)?, layout)?,
        port,
        bulk,
        rng: Rng::new()?,
        outbox: VecDeque::new(),
        stream_left: a.mib << 20,
        stream_end_sent: false,
        chunks_left: (a.mib << 20) / BULK_BYTES as u64,
        chunk_out: None,
        bulk_seq: 0,
        bulk_end_sent: false,
        peer_stream_done: false,
        peer_bulk_done: false,
        peer_bulk_seq: 0,
        data_seq: 0,
        peer_data_seq: 0,
        lane_sent: Fnv::new(),
        lane_got: Fnv::new(),
        bulk_sent: Fnv::new(),
        bulk_got: Fnv::new(),
        buf: Vec::new(),
    })
}

fn member_side<'a, B: Bulk>(a: &Args, mem: SharedMem<'a>, port: Port, bulk: B) -> Res<Side<'a, B>> {
    side(a, "member", mem, (M2O_LANE, O2M_LANE), port, bulk)
}

fn member_join(a: Args) -> Res<()> {
    let mut p = XenShareDev::open(a.domid)?;
    let r = ShareRef {
        owner: a.peer,
        descriptor: GrantRef(a.share_ref),
    };
    let joined = p.join(r, SHARE_PAGES as u32)?;
    let mem = joined
        .mem()
        .ok_or("the kernel cannot map a joined share into a process here (PV domain)")?;
    println!(
        "member: joined domain {}'s share of {} pages through JOIN",
        a.peer,
        joined.numpages()
    );
    let result = member_side(&a, mem, joined.event(), JoinedBulk { mem })?.run(&mut p);
    drop(joined);
    println!("member: left the share");
    result
}

fn member(a: Args) -> Res<()> {
    if a.join {
        return member_join(a);
    }
    let mut p = XenShareDev::open(a.domid)?;
    let r = ShareRef {
        owner: a.peer,
        descriptor: GrantRef(a.share_ref),
    };
    let att = Attached::attach(&mut p, r)?;
    if att.numpages() != SHARE_PAGES {
        return Err(format!("share has {} pages, not {SHARE_PAGES}", att.numpages()).into());
    }
    let port = att.port().ok_or("share has no port")?;
    println!(
        "member: joined domain {}'s share of {} pages",
        att.owner(),
        att.numpages()
    );
    let grefs = |first: usize| -> Res<Vec<GrantRef>> {
        (first..first + BULK_PAGES)
            .map(|i| att.gref(i).ok_or_else(|| "share too small".into()))
            .collect()
    };
    let bulk = MemberBulk {
        buf: p.alloc_pages(BULK_PAGES)?,
        owner: a.peer,
        o2m: grefs(O2M_BULK)?,
        m2o: grefs(M2O_BULK)?,
    };
    let result = member_side(&a, att.mem(), port, bulk).and_then(|mut side| side.run(&mut p));
    att.detach(&mut p)?;
    println!("member: left the share");
    result
}

/// The one errno the example names (share-hal's errors carry raw ones).
mod libc_eio {
    pub const EIO: i32 = 5;
}

fn refusals(a: Args) -> Res<()> {
    use share_hal::platform::{Access, Frame, GrantTable};
    use share_linux::xenshare::abi;

    let mut p = XenShareDev::open(a.domid)?;
    let peer = a.peer;
    let mut passed = 0;
    let mut check = |what: &str, ok: bool, got: String| -> Res<()> {
        if !ok {
            return Err(format!("{what}: got {got}").into());
        }
        println!("ok: {what}: {got}");
        passed += 1;
        Ok(())
    };
    let pages = p.alloc_pages(2)?;
    let f0 = pages.frame(0).ok_or("no frame")?;
    let f1 = pages.frame(1).ok_or("no frame")?;

    let r = p.grant(Frame(f0.0 + 4096), peer, Access::ReadWrite);
    check(
        "grant of a page this file did not allocate",
        matches!(r, Err(Error::InvalidArgument { .. })),
        format!("{r:?}"),
    )?;
    let g = p.grant(f0, peer, Access::ReadWrite)?;
    p.revoke(g)?;
    let r = p.revoke(g);
    check(
        "revoke of a grant already ended",
        matches!(r, Err(Error::NoGrant { .. })),
        format!("{r:?}"),
    )?;
    // The peer's ref 0 is its console page, granted to dom0 only.
    let r = p.map(peer, &[GrantRef(0)], Access::ReadOnly).map(drop);
    check(
        "map of a grant meant for another domain",
        matches!(r, Err(Error::NoGrant { .. })),
        format!("{r:?}"),
    )?;
    let r = p
        .join(
            ShareRef {
                owner: peer,
                descriptor: GrantRef(0),
            },
            0,
        )
        .map(drop);
    // xenshare's share code answers Xen's GNTST_general_error (a ref
    // granted to another domain) with EIO, not ENOENT.
    check(
        "join through a descriptor not granted to us",
        matches!(
            r,
            Err(Error::NoGrant { .. })
                | Err(Error::Os {
                    errno: libc_eio::EIO,
                    ..
                })
        ),
        format!("{r:?}"),
    )?;

    // One batch: out of page, a page not ours, a grant not ours, and a
    // valid copy from page 0 to page 1, which must still happen.
    let pattern: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    pages.mem().write_from(0, &pattern)?;
    let local = |frame: Frame, offset: u16| abi::CopyPtr {
        page: frame.0,
        offset,
        ..Default::default()
    };
    let seg = |src, dst, len, flags| abi::CopySeg {
        src,
        dst,
        len,
        flags,
        status: 0,
        pad: 0,
    };
    let foreign = abi::CopyPtr {
        gref: 0,
        domid: peer,
        ..Default::default()
    };
    let mut segs = [
        seg(local(f0, 4000), local(f1, 0), 200, 0),
        seg(local(Frame(f1.0 + 4096), 0), local(f1, 0), 64, 0),
        seg(foreign, local(f1, 0), 64, abi::COPY_SRC_FOREIGN),
        seg(local(f0, 0), local(f1, 100), 64, 0),
    ];
    p.copy_raw(&mut segs)?;
    let st: Vec<i16> = segs.iter().map(|s| s.status).collect();
    let mut back = vec![0u8; 64];
    pages.mem().read_into(PAGE_SIZE + 100, &mut back)?;
    check(
        "copy batch: out of page -10, foreign page -3, peer's grant refused, valid copy 0",
        st[0] == -10 && st[1] == -3 && st[2] < 0 && st[3] == 0 && back == pattern,
        format!("statuses {st:?}, copied bytes match: {}", back == pattern),
    )?;

    let r = p.notify(Port(1));
    check(
        "notify of a port this file does not own",
        matches!(r, Err(Error::BadPort { .. })),
        format!("{r:?}"),
    )?;
    let port = p.alloc_unbound(peer)?;
    p.close(port)?;
    let r = p.notify(port);
    check(
        "notify of a closed port",
        matches!(r, Err(Error::BadPort { .. })),
        format!("{r:?}"),
    )?;
    let r = p.wait(Some(p.now_ns()), &mut |_| {});
    check(
        "wait with nothing fired",
        matches!(r, Err(Error::TimedOut)),
        format!("{r:?}"),
    )?;
    println!("refusals: {passed} checks passed");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("owner") => parse(&args[2..], "--peer", false).and_then(owner),
        Some("member") => parse(&args[2..], "--owner", true).and_then(member),
        Some("refusals") => parse(&args[2..], "--peer", false).and_then(refusals),
        _ => Err(USAGE.into()),
    };
    if let Err(e) = r {
        eprintln!("xenshare-xfer: {e}");
        std::process::exit(1);
    }
}
