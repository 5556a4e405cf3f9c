//! One disk of this domain: a disk share it joined as a member, exposed to
//! the local kernel as a block device (a loop device over a FUSE file).
//!
//! ```text
//!  ext4 ─ /dev/loopN ─(direct I/O)─ FUSE file ─ /dev/fuse ─ this program
//!        ─ blk share (requests, grant copy) ─ the disk server
//! ```
//!
//! Why this stack: what a Linux domain always has is FUSE and loop
//! (`/dev/fuse`, `/dev/loop-control`); nbd and ublk are modules that a
//! domain (or a CI machine) often lacks and cannot load. The loop driver
//! with `DIRECT_IO` hands the FUSE file asynchronous direct I/O, so many
//! requests are in flight at once and nothing is cached twice; a flush of
//! the block device (ext4's journal commits, `fsync`, FUA writes, which the
//! block layer turns into write + flush for a loop device) becomes an
//! `fsync` of the FUSE file, which becomes a blk flush.
//!
//! Each FUSE read or write is one blk request through one *slot*: pages
//! granted once to the server when the share is joined (`max_pages` of
//! data and one indirect page), so no grant is made per request. The data
//! of a write is kept in a private copy until the server answers it, so
//! that it can be re-issued: the buffer the kernel's request was read into
//! (the next request is read into a spare one), copied once into the slot.
//! Read data goes from the slot to the kernel with one `writev` over the
//! slot's pages: the kernel's copy is the only one in this domain. So each
//! byte is copied once by this program on writes (buffer to slot), never
//! on reads, besides the kernel's own copy to or from `/dev/fuse`.
//!
//! **The server restarts.** Its share dies with it; requests in flight get
//! no answer and the kernel's requests simply wait (FUSE and loop have no
//! timeout). When dom0 rewrites the entry with the new server's share
//! ([`crate::dispatch::Action::ReattachDisk`]), the member attaches to it,
//! grants fresh slots to the (possibly new) server domain, and re-issues
//! every request that had not been answered, writes and flushes alike, in
//! the order they were first issued. A write answered by the old server is
//! not re-issued: it is the kernel's business to flush it, and a flush the
//! old server did not answer is re-issued after the writes it followed.
//! The block device never goes away, so a mounted file system carries on.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use blkback_uk::client::{BlkClient, Completion};
use share_hal::platform::{Access, DomId, PAGE_SIZE};
use share_hal::wire::blk::{
    self, features, ControlRepr, Dir, IndirectPages, InlineSegments, RequestRepr, Segment, Status,
};
use share_hal::wire::vdevice::status;
use share_hal::Error;

use crate::dispatch::{status_of, DiskJoin};
use crate::fuse::{self, fopen, init, Attr, FuseDev, Request};
use crate::host::{Granted, Host};
use crate::loopdev::LoopDev;
use crate::port::Refusal;

/// Data pages of one slot: the largest FUSE read or write (`max_pages`).
pub const SLOT_PAGES: usize = 32;
const SLOT_BYTES: usize = SLOT_PAGES * PAGE_SIZE;
/// At most this many requests in flight to the server per disk.
const MAX_SLOTS: usize = 32;
/// Fewer slots than this (grants ran out) and the disk is refused.
const MIN_SLOTS: usize = 4;
/// FUSE requests read per service round before the event loop looks at the
/// other devices again.
const BUDGET: usize = 64;

fn refuse(status: i32, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// What a FUSE request asks of the server.
#[derive(Debug)]
enum OpKind {
    Read { sector: u64, len: usize },
    Write { sector: u64, data: WriteData },
    Flush,
}

/// A write's data: bytes `range` of the buffer the kernel's request was
/// read into, kept (not copied) until the server answered it.
#[derive(Debug)]
struct WriteData {
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
}

impl WriteData {
    fn bytes(&self) -> &[u8] {
        self.buf.get(self.range.clone()).unwrap_or(&[])
    }
}

/// Bytes of a buffer one FUSE request is read into: the largest write and
/// its headers, with room.
const REQUEST_BUF_BYTES: usize = SLOT_BYTES + 8192;

/// What to do with one FUSE request.
enum Decision {
    /// Answer now: error (0 or a negative errno) and body.
    Reply(i32, Vec<u8>),
    /// Needs the server.
    Queue(OpKind),
    /// A write of bytes `data` of the request buffer: needs the server.
    QueueWrite {
        sector: u64,
        data: std::ops::Range<usize>,
    },
    /// No answer is expected.
    Silent,
}

/// A FUSE request waiting for the server.
#[derive(Debug)]
struct Op {
    /// Order of arrival: re-issue keeps it.
    seq: u64,
    unique: u64,
    kind: OpKind,
}

/// Pages granted to the server for one request at a time.
struct Slot<P: Host> {
    data: P::Granted,
    indirect: P::Granted,
    op: Option<Op>,
}

/// Counters of one disk.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    /// Requests the server answered with an error.
    pub errors: u64,
    /// Kernel requests the member refused itself (fallocate, unknown
    /// opcodes, misaligned I/O), without the server.
    pub refused: u64,
    /// Requests issued again after a re-attach.
    pub reissued: u64,
}

/// What a service round left to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Poll the FUSE device for requests.
    pub fuse_readable: bool,
    /// Work is left over: service again without sleeping.
    pub busy: bool,
    /// The loop device is being set up: look again soon.
    pub attaching: bool,
}

/// A joined disk share and its block device.
pub struct DiskPort<P: Host> {
    index: u32,
    client: Option<BlkClient<P>>,
    control: ControlRepr,
    read_only: bool,
    slots: Vec<Slot<P>>,
    free: Vec<usize>,
    /// Blk request id -> slot.
    in_flight: BTreeMap<u64, usize>,
    /// Requests waiting for a slot (or for a server after a re-attach).
    queue: VecDeque<Op>,
    next_seq: u64,
    fuse: Option<FuseDev>,
    /// The next FUSE request is read into this.
    buf: Vec<u8>,
    /// Request buffers finished writes gave back, for the next ones (at
    /// most [`MAX_SLOTS`] kept).
    spare: Vec<Vec<u8>>,
    mountpoint: PathBuf,
    link: PathBuf,
    attach: Option<JoinHandle<io::Result<LoopDev>>>,
    loopdev: Option<LoopDev>,
    pub counters: Counters,
}

fn grant_slots<P: Host>(p: &mut P, server: DomId, n: usize) -> Result<Vec<Slot<P>>, Error> {
    let mut slots: Vec<Slot<P>> = Vec::with_capacity(n);
    for _ in 0..n {
        let made = p
            .grant_pages(server, SLOT_PAGES, Access::ReadWrite)
            .and_then(|data| match p.grant_pages(server, 1, Access::ReadOnly) {
                Ok(indirect) => Ok(Slot {
                    data,
                    indirect,
                    op: None,
                }),
                Err(e) => {
                    p.end_grants(data);
                    Err(e)
                }
            });
        match made {
            Ok(s) => slots.push(s),
            // Grants are a limited resource (on Linux, gntalloc's `limit`
            // module parameter, 1024 pages by default, for the whole
            // domain): fewer requests in flight rather than no disk.
            Err(e) if slots.len() >= MIN_SLOTS => {
                eprintln!(
                    "share-member: granting slot {} of {n} to domain {server} failed ({e}); \
                     going on with {} requests in flight (on Linux raise \
                     /sys/module/xen_gntalloc/parameters/limit: {} pages a slot)",
                    slots.len(),
                    slots.len(),
                    SLOT_PAGES + 1
                );
                break;
            }
            Err(e) => {
                release_slots(p, slots);
                return Err(e);
            }
        }
    }
    Ok(slots)
}

fn release_slots<P: Host>(p: &mut P, slots: Vec<Slot<P>>) {
    for s in slots {
        // A grant the server still uses keeps its pages (Host::end_grants).
        p.end_grants(s.data);
        p.end_grants(s.indirect);
    }
}

/// The blk request for `sectors` sectors at `sector` through `slot`'s
/// pages: inline segments when they fit, else the segment list in the
/// slot's indirect page.
fn slot_request<P: Host>(
    client: &mut BlkClient<P>,
    dir: Dir,
    sector: u64,
    slot: &Slot<P>,
    sectors: u64,
) -> Result<RequestRepr, Error> {
    let per = u64::from(blk::SECTORS_PER_PAGE);
    let pages = sectors.div_ceil(per) as usize;
    let grefs = slot.data.grefs();
    if sectors == 0 || pages > grefs.len() {
        return Err(Error::InvalidArgument {
            what: "request larger than a slot",
        });
    }
    let segs: Vec<Segment> = (0..pages)
        .map(|k| Segment {
            gref: grefs[k],
            first_sect: 0,
            last_sect: ((sectors - k as u64 * per).min(per) - 1) as u8,
        })
        .collect();
    let id = client.next_id();
    if segs.len() <= blk::MAX_INLINE_SEGMENTS {
        return Ok(RequestRepr::Direct {
            id,
            dir,
            fua: false,
            sector,
            segments: InlineSegments::new(&segs)?,
        });
    }
    let c = client.control();
    if c.features & features::INDIRECT == 0 || segs.len() > usize::from(c.max_indirect_segments) {
        return Err(Error::InvalidArgument {
            what: "request larger than the server's indirect limit",
        });
    }
    let n_pages = blk::indirect_pages_for(segs.len() as u16);
    let ind = slot.indirect.grefs();
    if ind.len() < n_pages {
        return Err(Error::InvalidArgument {
            what: "too few indirect pages",
        });
    }
    let mut list = vec![0u8; n_pages * PAGE_SIZE];
    for (i, s) in segs.iter().enumerate() {
        s.emit(&mut list[i * blk::SEGMENT_LEN..(i + 1) * blk::SEGMENT_LEN])?;
    }
    slot.indirect.mem().write_from(0, &list)?;
    Ok(RequestRepr::Indirect {
        id,
        dir,
        fua: false,
        sector,
        nr_segments: segs.len() as u16,
        pages: IndirectPages::new(&ind[..n_pages])?,
    })
}

impl<P: Host> DiskPort<P> {
    /// Joins the disk share `join` names and sets up its block device:
    /// mounts the FUSE file at `<run_dir>/disk<index>` and starts putting
    /// a loop device on it (a thread: opening the file needs this loop to
    /// answer FUSE). Once it is up, `<run_dir>/disk<index>.dev` links to it.
    pub fn join(p: &mut P, index: u32, join: &DiskJoin, run_dir: &Path) -> Result<Self, Refusal> {
        let client = BlkClient::attach(p, join.share_ref).map_err(|e| {
            refuse(
                status_of(&e),
                format!(
                    "attaching to disk share {} of domain {}: {e}",
                    join.share_ref.descriptor, join.share_ref.owner
                ),
            )
        })?;
        match Self::plug(p, client, index, join, run_dir) {
            Ok(d) => Ok(d),
            Err((client, r)) => {
                let _ = client.detach(p);
                Err(r)
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn plug(
        p: &mut P,
        client: BlkClient<P>,
        index: u32,
        join: &DiskJoin,
        run_dir: &Path,
    ) -> Result<Self, (BlkClient<P>, Refusal)> {
        let control = *client.control();
        if let Err(r) = Self::check(&client, join, None) {
            return Err((client, r));
        }
        let n = (client.slots() as usize).min(MAX_SLOTS);
        let slots = match grant_slots(p, client.server(), n) {
            Ok(s) => s,
            Err(e) => {
                return Err((
                    client,
                    refuse(status_of(&e), format!("granting slot pages: {e}")),
                ))
            }
        };
        let read_only = join.read_only || control.read_only;
        let mountpoint = run_dir.join(format!("disk{index}"));
        let link = run_dir.join(format!("disk{index}.dev"));
        let fuse = match Self::mount(&mountpoint, read_only) {
            Ok(f) => f,
            Err(e) => {
                release_slots(p, slots);
                return Err((
                    client,
                    refuse(
                        status::EIO,
                        format!("mounting the FUSE file {}: {e}", mountpoint.display()),
                    ),
                ));
            }
        };
        let _ = std::fs::remove_file(&link);
        let mp = mountpoint.clone();
        let bytes = control.capacity * 512;
        let attach = std::thread::Builder::new()
            .name(format!("loop-attach-{index}"))
            .spawn(move || LoopDev::attach(&mp, read_only, bytes));
        let attach = match attach {
            Ok(h) => h,
            Err(e) => {
                drop(fuse);
                fuse::unmount(&mountpoint);
                release_slots(p, slots);
                return Err((client, refuse(status::ENOMEM, format!("thread: {e}"))));
            }
        };
        Ok(DiskPort {
            index,
            client: Some(client),
            control,
            read_only,
            free: (0..slots.len()).rev().collect(),
            slots,
            in_flight: BTreeMap::new(),
            queue: VecDeque::new(),
            next_seq: 0,
            fuse: Some(fuse),
            buf: vec![0u8; REQUEST_BUF_BYTES],
            spare: Vec::new(),
            mountpoint,
            link,
            attach: Some(attach),
            loopdev: None,
            counters: Counters::default(),
        })
    }

    /// The share's layout and offer against the entry (and, on a
    /// re-attach, against the disk the kernel already knows).
    fn check(
        client: &BlkClient<P>,
        join: &DiskJoin,
        known: Option<&ControlRepr>,
    ) -> Result<(), Refusal> {
        let c = client.control();
        let numpages = client.layout().numpages;
        if join.numpages != 0 && join.numpages != numpages {
            return Err(refuse(
                status::EINVAL,
                format!(
                    "the share has {numpages} pages, the entry expects {}",
                    join.numpages
                ),
            ));
        }
        if c.capacity == 0 {
            return Err(refuse(status::EINVAL, "the disk is empty"));
        }
        if c.capacity > u64::MAX / 512 {
            return Err(refuse(status::EINVAL, "the disk's capacity overflows"));
        }
        if SLOT_PAGES > blk::MAX_INLINE_SEGMENTS
            && (c.features & features::INDIRECT == 0
                || usize::from(c.max_indirect_segments) < SLOT_PAGES)
        {
            return Err(refuse(
                status::EOPNOTSUPP,
                format!(
                    "the server takes no {SLOT_PAGES}-segment requests (indirect segments: {})",
                    c.max_indirect_segments
                ),
            ));
        }
        if let Some(k) = known {
            if c.capacity != k.capacity || (c.read_only && !k.read_only) {
                return Err(refuse(
                    status::EINVAL,
                    format!(
                        "the new share is not the same disk ({} sectors{}, was {}{})",
                        c.capacity,
                        if c.read_only { ", read-only" } else { "" },
                        k.capacity,
                        if k.read_only { ", read-only" } else { "" }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn mount(mountpoint: &Path, read_only: bool) -> io::Result<FuseDev> {
        if let Some(d) = mountpoint.parent() {
            std::fs::create_dir_all(d)?;
        }
        // A mount left by a member that died (its connection is gone).
        fuse::unmount(mountpoint);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(mountpoint)?;
        FuseDev::mount(mountpoint, read_only)
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn server(&self) -> Option<DomId> {
        self.client.as_ref().map(|c| c.server())
    }

    pub fn capacity(&self) -> u64 {
        self.control.capacity
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn fuse_fd(&self) -> Option<i32> {
        self.fuse.as_ref().map(|f| f.raw_fd())
    }

    /// The block device, once it is set up.
    pub fn device(&self) -> Option<&Path> {
        self.loopdev.as_ref().map(|l| l.path())
    }

    fn attr(&self) -> Attr {
        Attr {
            size: self.control.capacity * 512,
            read_only: self.read_only,
        }
    }

    /// Moves the disk to the share `join` names (its server restarted):
    /// attaches, grants fresh slots to the server, and puts every request
    /// not answered back in the queue, in the order it first came, to be
    /// issued again. On failure the disk stays as it was (its requests
    /// wait for the next rewrite).
    pub fn reattach(&mut self, p: &mut P, join: &DiskJoin) -> Result<(), Refusal> {
        let client = BlkClient::attach(p, join.share_ref).map_err(|e| {
            refuse(
                status_of(&e),
                format!(
                    "attaching to disk share {} of domain {}: {e}",
                    join.share_ref.descriptor, join.share_ref.owner
                ),
            )
        })?;
        if let Err(r) = Self::check(&client, join, Some(&self.control)) {
            let _ = client.detach(p);
            return Err(r);
        }
        let n = (client.slots() as usize).min(MAX_SLOTS);
        let slots = match grant_slots(p, client.server(), n) {
            Ok(s) => s,
            Err(e) => {
                let _ = client.detach(p);
                return Err(refuse(status_of(&e), format!("granting slot pages: {e}")));
            }
        };
        self.drop_share(p);
        eprintln!(
            "share-member: disk {}: re-issuing {} request(s) to domain {} ({} re-issued so far)",
            self.index,
            self.queue.len(),
            client.server(),
            self.counters.reissued
        );
        self.free = (0..slots.len()).rev().collect();
        self.slots = slots;
        self.control = *client.control();
        self.client = Some(client);
        self.read_only |= join.read_only || self.control.read_only;
        Ok(())
    }

    /// Leaves the current share (dead or broken): what it had in flight
    /// goes back to the queue, in order, to be issued again.
    fn drop_share(&mut self, p: &mut P) {
        let mut back: Vec<Op> = Vec::new();
        for s in &mut self.slots {
            if let Some(op) = s.op.take() {
                back.push(op);
            }
        }
        self.counters.reissued += back.len() as u64;
        back.extend(self.queue.drain(..));
        back.sort_by_key(|o| o.seq);
        self.queue = back.into();
        self.in_flight.clear();
        self.free.clear();
        release_slots(p, std::mem::take(&mut self.slots));
        if let Some(c) = self.client.take() {
            // The server is gone or broken; the share may be too.
            let _ = c.detach(p);
        }
    }

    fn reply(&mut self, unique: u64, error: i32, body: &[&[u8]]) {
        if let Some(f) = &self.fuse {
            if let Err(e) = f.reply(unique, error, body) {
                eprintln!(
                    "share-member: disk {}: answering the kernel: {e}",
                    self.index
                );
            }
        }
    }

    /// Answers what needs no server at once; queues reads, writes and
    /// flushes.
    fn take_request(&mut self, n: usize) {
        let inc = match fuse::parse(&self.buf[..n]) {
            Ok(i) => i,
            Err(why) => {
                // Cannot answer what we cannot parse (no unique); the
                // kernel's own bytes, so say so loudly.
                eprintln!("share-member: disk {}: {why}", self.index);
                return;
            }
        };
        match self.decide(inc.req, n) {
            Decision::Reply(err, body) => {
                if err != 0 {
                    self.counters.refused += 1;
                }
                self.reply(inc.unique, err, &[&body])
            }
            Decision::Queue(kind) => self.enqueue(inc.unique, kind),
            Decision::QueueWrite { sector, data } => {
                // The write keeps the buffer its data was read into; the
                // next request goes into a spare one.
                let spare = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| vec![0u8; REQUEST_BUF_BYTES]);
                let buf = std::mem::replace(&mut self.buf, spare);
                self.enqueue(
                    inc.unique,
                    OpKind::Write {
                        sector,
                        data: WriteData { buf, range: data },
                    },
                );
            }
            Decision::Silent => {}
        }
    }

    fn enqueue(&mut self, unique: u64, kind: OpKind) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(Op { seq, unique, kind });
    }

    fn decide(&self, req: Request, n: usize) -> Decision {
        use Decision::{Queue, QueueWrite, Reply, Silent};
        let cap = self.control.capacity * 512;
        let err = |e: i32| Reply(-e, Vec::new());
        match req {
            Request::Init {
                major,
                minor,
                flags,
                ..
            } => {
                if major != fuse::MAJOR || minor < 28 {
                    eprintln!(
                        "share-member: disk {}: kernel FUSE {major}.{minor} too old (7.28 needed)",
                        self.index
                    );
                    return err(libc::EPROTO);
                }
                let want = init::ASYNC_READ | init::BIG_WRITES | init::ASYNC_DIO | init::MAX_PAGES;
                Reply(
                    0,
                    fuse::init_out(
                        flags & want,
                        SLOT_BYTES as u32,
                        SLOT_PAGES as u16,
                        (2 * MAX_SLOTS) as u16,
                    ),
                )
            }
            Request::Getattr | Request::Setattr { size: None } => {
                Reply(0, fuse::attr_out(self.attr()))
            }
            Request::Setattr { size: Some(s) } if s == cap => Reply(0, fuse::attr_out(self.attr())),
            Request::Setattr { .. } => err(libc::EPERM),
            Request::Open { flags } => {
                let acc = flags & libc::O_ACCMODE as u32;
                if self.read_only && acc != libc::O_RDONLY as u32 {
                    err(libc::EROFS)
                } else {
                    Reply(
                        0,
                        fuse::open_out(
                            1,
                            fopen::DIRECT_IO | fopen::NOFLUSH | fopen::PARALLEL_DIRECT_WRITES,
                        ),
                    )
                }
            }
            Request::Read { offset, size } => {
                let size = u64::from(size);
                if !offset.is_multiple_of(512)
                    || !size.is_multiple_of(512)
                    || size > SLOT_BYTES as u64
                {
                    err(libc::EINVAL)
                } else if offset >= cap || size == 0 {
                    Reply(0, Vec::new())
                } else {
                    Queue(OpKind::Read {
                        sector: offset / 512,
                        len: size.min(cap - offset) as usize,
                    })
                }
            }
            Request::Write { offset, data } => {
                let len = data.len() as u64;
                if self.read_only {
                    err(libc::EROFS)
                } else if !offset.is_multiple_of(512)
                    || !len.is_multiple_of(512)
                    || len > SLOT_BYTES as u64
                {
                    err(libc::EINVAL)
                } else if len == 0 {
                    Reply(0, fuse::write_out(0))
                } else if data.end > n || offset.checked_add(len).is_none_or(|end| end > cap) {
                    err(libc::ENOSPC)
                } else {
                    QueueWrite {
                        sector: offset / 512,
                        data,
                    }
                }
            }
            Request::Fsync => {
                if self.control.features & features::FLUSH != 0 && !self.read_only {
                    Queue(OpKind::Flush)
                } else {
                    // No write cache to flush: answered writes are as
                    // durable as this server makes them.
                    Reply(0, Vec::new())
                }
            }
            Request::Flush | Request::Release | Request::Destroy => Reply(0, Vec::new()),
            Request::Statfs => Reply(0, fuse::statfs_out(self.attr())),
            // A blk discard may leave the old data, a punched hole must
            // read as zeroes: not mapped. The loop driver then writes
            // zeroes itself where it needs them.
            Request::Fallocate { .. } => err(libc::EOPNOTSUPP),
            Request::Forget | Request::Interrupt => Silent,
            Request::Other(_) => err(libc::ENOSYS),
        }
    }

    /// Issues queued requests while slots are free; publishes them.
    fn issue(&mut self, p: &mut P) -> Result<(), Error> {
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let mut issued = false;
        while let (Some(&slot), Some(op)) = (self.free.last(), self.queue.front()) {
            let s = &self.slots[slot];
            let req = match &op.kind {
                OpKind::Read { sector, len } => {
                    slot_request(client, Dir::Read, *sector, s, (*len / 512) as u64)?
                }
                OpKind::Write { sector, data } => {
                    let data = data.bytes();
                    s.data.mem().write_from(0, data)?;
                    slot_request(client, Dir::Write, *sector, s, (data.len() / 512) as u64)?
                }
                OpKind::Flush => RequestRepr::Flush {
                    id: client.next_id(),
                },
            };
            if !client.submit(&req)? {
                break;
            }
            self.free.pop();
            let op = self.queue.pop_front().expect("front seen above");
            self.in_flight.insert(req.id(), slot);
            self.slots[slot].op = Some(op);
            issued = true;
        }
        if issued {
            client.kick(p)?;
        }
        Ok(())
    }

    /// Answers the kernel for each completion.
    fn complete(&mut self, done: &[Completion]) -> Result<(), Error> {
        for c in done {
            let Some(slot) = self.in_flight.remove(&c.id) else {
                continue;
            };
            let Some(op) = self.slots[slot].op.take() else {
                continue;
            };
            self.free.push(slot);
            let err = match c.status {
                Status::Okay => 0,
                Status::NotSupported => -libc::EOPNOTSUPP,
                Status::Error => -libc::EIO,
            };
            if err != 0 {
                self.counters.errors += 1;
            }
            match op.kind {
                OpKind::Read { len, .. } => {
                    self.counters.reads += 1;
                    if err == 0 {
                        // Straight from the slot's pages to the kernel.
                        let mem = self.slots[slot].data.mem();
                        let body = mem.slice(0, len)?;
                        if let Some(f) = &self.fuse {
                            if let Err(e) = f.reply_shared(op.unique, &body) {
                                eprintln!(
                                    "share-member: disk {}: answering the kernel: {e}",
                                    self.index
                                );
                            }
                        }
                    } else {
                        self.reply(op.unique, err, &[]);
                    }
                }
                OpKind::Write { data, .. } => {
                    self.counters.writes += 1;
                    if err == 0 {
                        let w = fuse::write_out(data.bytes().len() as u32);
                        self.reply(op.unique, 0, &[&w]);
                    } else {
                        self.reply(op.unique, err, &[]);
                    }
                    if self.spare.len() < MAX_SLOTS {
                        self.spare.push(data.buf);
                    }
                }
                OpKind::Flush => {
                    self.counters.flushes += 1;
                    self.reply(op.unique, err, &[]);
                }
            }
        }
        Ok(())
    }

    /// One round: answers completions, reads the kernel's requests,
    /// issues them, and arms the response lane's trigger before the caller
    /// sleeps. A broken share is left (its requests wait for dom0 to point
    /// the entry at a new share); a broken FUSE connection is an error:
    /// close the disk.
    pub fn service(&mut self, p: &mut P, fuse_readable: bool) -> Result<Interest, String> {
        let mut busy = false;
        if let Err(e) = self.share_round(p, &mut busy) {
            eprintln!(
                "share-member: disk {}: the share with domain {} broke ({e}); {} request(s) wait for dom0 to name a new share",
                self.index,
                self.server().unwrap_or(0),
                self.in_flight.len() + self.queue.len()
            );
            self.drop_share(p);
        }
        if fuse_readable {
            let mut n = 0;
            while n < BUDGET && self.queue.len() < 2 * MAX_SLOTS {
                let Some(fuse) = &self.fuse else { break };
                match fuse.read(&mut self.buf) {
                    Ok(Some(len)) => self.take_request(len),
                    Ok(None) => break,
                    Err(e) => return Err(format!("the FUSE connection ended ({e})")),
                }
                n += 1;
            }
            busy |= n == BUDGET;
            if let Err(e) = self.share_round(p, &mut busy) {
                eprintln!(
                    "share-member: disk {}: the share with domain {} broke ({e})",
                    self.index,
                    self.server().unwrap_or(0)
                );
                self.drop_share(p);
            }
        }
        let mut attaching = false;
        if let Some(h) = self.attach.take() {
            if h.is_finished() {
                match h.join() {
                    Ok(Ok(l)) => {
                        let _ = std::fs::remove_file(&self.link);
                        if let Err(e) = std::os::unix::fs::symlink(l.path(), &self.link) {
                            eprintln!(
                                "share-member: disk {}: linking {}: {e}",
                                self.index,
                                self.link.display()
                            );
                        }
                        eprintln!(
                            "share-member: disk {}: block device {} ({} sectors{}, {} I/O) -> {}",
                            self.index,
                            l.path().display(),
                            self.control.capacity,
                            if self.read_only { ", read-only" } else { "" },
                            if l.direct_io() { "direct" } else { "buffered" },
                            self.link.display()
                        );
                        self.loopdev = Some(l);
                    }
                    Ok(Err(e)) => return Err(format!("no loop device over the FUSE file: {e}")),
                    Err(_) => return Err("the loop attach thread panicked".into()),
                }
            } else {
                self.attach = Some(h);
                attaching = true;
            }
        }
        Ok(Interest {
            fuse_readable: self.queue.len() < 2 * MAX_SLOTS,
            busy,
            attaching,
        })
    }

    fn share_round(&mut self, p: &mut P, busy: &mut bool) -> Result<(), Error> {
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let mut done = Vec::new();
        client.poll(p, &mut done)?;
        self.complete(&done)?;
        self.issue(p)?;
        if let Some(client) = self.client.as_mut() {
            if !self.in_flight.is_empty() && client.prepare_wait()? > 0 {
                *busy = true;
            }
        }
        if !self.queue.is_empty() && !self.free.is_empty() {
            *busy = true;
        }
        Ok(())
    }

    /// Removes the device: the kernel's requests still waiting fail with
    /// EIO, the FUSE connection is aborted (the loop device then fails
    /// its I/O; it is freed once nobody holds it: a file system still
    /// mounted on it must be unmounted), the FUSE file is unmounted and
    /// the share left.
    pub fn close(mut self, p: &mut P) -> Result<(), Error> {
        let mut waiting: Vec<u64> = self.queue.drain(..).map(|o| o.unique).collect();
        for s in &mut self.slots {
            if let Some(op) = s.op.take() {
                waiting.push(op.unique);
            }
        }
        for u in waiting {
            self.reply(u, -libc::EIO, &[]);
        }
        // Closing the device's descriptor aborts the connection: nothing
        // below can block on us any more.
        drop(self.fuse.take());
        if let Some(h) = self.attach.take() {
            if let Ok(Ok(l)) = h.join() {
                l.release();
            }
        }
        fuse::unmount(&self.mountpoint);
        let _ = std::fs::remove_file(&self.mountpoint);
        let _ = std::fs::remove_file(&self.link);
        if let Some(l) = self.loopdev.take() {
            l.release();
        }
        self.in_flight.clear();
        release_slots(p, std::mem::take(&mut self.slots));
        match self.client.take() {
            Some(c) => c.detach(p),
            None => Ok(()),
        }
    }
}
