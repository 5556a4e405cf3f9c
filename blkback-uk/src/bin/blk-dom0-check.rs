//! `blk-dom0-check`: dom0 as a member of a blkback-uk disk, for the Xen
//! rig (`xen-rig/scenarios/blk.sh`).
//!
//! It owns dom0's vdevice page (granted with gntalloc, published under
//! `/local/domain/0/data/vdevice` with `xenstore-write`), waits for the
//! member entry dom0's tool writes (`vdevice create disk --backend N
//! --disk D 0`), joins that disk share (blkback-uk's member client over
//! share-hal's Linux platform), and then:
//!
//! - `write`: writes a pattern (from `--seed`) of `--kib` KiB from
//!   `--sector`, 16 requests of 32 KiB in flight, the last window with
//!   FUA, then a flush; reads everything back and compares; saves the
//!   pattern to `--save` so that dom0 can compare the disk file itself;
//! - `verify`: reads the range back and compares with the pattern; saves
//!   what it read to `--save`.
//!
//! Prints one line per stage and an FNV-1a 64 checksum of the data; exits
//! non-zero on the first failure.

use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use share_hal::platform::{Access, Clock, EventChannels, DOM0};
use share_hal::share::ShareRef;
use share_hal::vdevice::{Applied, VdeviceBus};
use share_hal::wire::blk::{features, Dir, InlineSegments, RequestRepr, Segment, Status};
use share_hal::wire::vdevice::{status, Kind, Role, BOOTSTRAP_KEY};
use share_hal::{DomId, Error};
use share_linux::{GrantedPages, LinuxXen};

use blkback_uk::client::{BlkClient, Completion};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Mode {
    Write,
    Verify,
}

#[derive(Parser, Debug)]
#[command(
    name = "blk-dom0-check",
    version,
    about = "dom0 as the member of a blkback-uk disk: write, flush, read back, verify"
)]
struct Args {
    mode: Mode,
    /// First sector of the range.
    #[arg(long, default_value_t = 2048)]
    sector: u64,
    /// Size of the range in KiB (a multiple of 32).
    #[arg(long, default_value_t = 4096)]
    kib: usize,
    /// Seed of the pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to save the pattern (write) or the data read (verify).
    #[arg(long)]
    save: Option<std::path::PathBuf>,
    /// Seconds to wait for the member entry, and for each window of I/O.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// Requests in flight, and pages per request.
const DEPTH: usize = 16;
const REQ_PAGES: usize = 8;
const REQ_BYTES: usize = REQ_PAGES * 4096;

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

type Res<T> = Result<T, String>;

fn ctx<T>(what: &str, r: share_hal::Result<T>) -> Res<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

struct Member {
    p: LinuxXen,
    client: BlkClient<LinuxXen>,
    buf: GrantedPages,
    timeout_ns: u64,
}

impl Member {
    /// Runs one window: up to DEPTH requests of REQ_BYTES from `sector`,
    /// data in `data` (writes) or filled from the disk (reads).
    fn window(&mut self, dir: Dir, fua: bool, sector: u64, data: &mut [u8]) -> Res<()> {
        if dir == Dir::Write {
            ctx("filling the buffer", self.buf.mem().write_from(0, data))?;
        }
        let grefs = self.buf.grefs().to_vec();
        let mut ids = Vec::new();
        for (k, chunk) in data.chunks(REQ_BYTES).enumerate() {
            let pages = chunk.len().div_ceil(4096);
            let segs: Vec<Segment> = (0..pages)
                .map(|i| {
                    let len = (chunk.len() - i * 4096).min(4096);
                    Segment {
                        gref: grefs[k * REQ_PAGES + i],
                        first_sect: 0,
                        last_sect: (len / 512 - 1) as u8,
                    }
                })
                .collect();
            let id = self.client.next_id();
            let req = RequestRepr::Direct {
                id,
                dir,
                fua,
                sector: sector + (k * REQ_BYTES / 512) as u64,
                segments: InlineSegments::new(&segs).map_err(|e| format!("segments: {e}"))?,
            };
            if !ctx("submit", self.client.submit(&req))? {
                return Err("the request lane is full".into());
            }
            ids.push(id);
        }
        ctx("kick", self.client.kick(&mut self.p))?;
        let deadline = self.p.now_ns() + self.timeout_ns;
        let mut done: Vec<Completion> = Vec::new();
        while done.len() < ids.len() {
            done.extend(ctx(
                "waiting for responses",
                self.client.wait(&mut self.p, deadline),
            )?);
        }
        if let Some(c) = done.iter().find(|c| c.status != Status::Okay) {
            return Err(format!("request {} answered {:?}", c.id, c.status));
        }
        if dir == Dir::Read {
            ctx("reading the buffer", self.buf.mem().read_into(0, data))?;
        }
        Ok(())
    }

    fn range(&mut self, dir: Dir, fua_last: bool, sector: u64, data: &mut [u8]) -> Res<()> {
        let win = DEPTH * REQ_BYTES;
        let n = data.len().div_ceil(win);
        for (w, chunk) in data.chunks_mut(win).enumerate() {
            let s = sector + (w * win / 512) as u64;
            self.window(dir, fua_last && w + 1 == n, s, chunk)?;
        }
        Ok(())
    }
}

/// Publishes dom0's vdevice page and waits for the disk member entry; joins
/// its share.
fn join(p: &mut LinuxXen, timeout: Duration) -> Res<BlkClient<LinuxXen>> {
    let page = ctx(
        "granting dom0's vdevice page",
        p.alloc_granted(DOM0, 1, Access::ReadWrite),
    )?;
    let gref = *page.grefs().first().ok_or("no grant")?;
    let port = ctx("allocating the vdevice port", p.alloc_unbound(DOM0))?;
    let mut bus = ctx(
        "vdevice page",
        VdeviceBus::with_granted_page(page, gref, port, DOM0, 16),
    )?;
    let key = format!("/local/domain/0/{BOOTSTRAP_KEY}");
    let out = Command::new("xenstore-write")
        .arg(&key)
        .arg(bus.bootstrap().to_string())
        .output()
        .map_err(|e| format!("xenstore-write: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "xenstore-write {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    println!("member: published {key} = {}", bus.bootstrap());
    let deadline = p.now_ns() + timeout.as_nanos() as u64;
    let mut client = None;
    while client.is_none() {
        match p.wait(Some(deadline), &mut |_| {}) {
            Ok(()) => {}
            Err(Error::TimedOut) => return Err("no member entry from dom0's tool in time".into()),
            Err(e) => return Err(format!("waiting: {e}")),
        }
        let mut failed = None;
        let change = bus.poll_with(p, &mut |p, index, _old, new| {
            if new.kind != Kind::Disk || new.role != Role::Member {
                return Applied::Refused(status::ENODEV);
            }
            let share = ShareRef {
                owner: new.peer,
                descriptor: new.share_ref,
            };
            match BlkClient::attach(p, share) {
                Ok(c) => {
                    println!(
                        "member: entry {index}: joined the disk share of domain {} (share_ref {})",
                        new.peer, new.share_ref.0
                    );
                    client = Some(c);
                    Applied::Ok { share_ref: None }
                }
                Err(e) => {
                    failed = Some(format!("attaching to domain {}'s share: {e}", new.peer));
                    Applied::Refused(status::EIO)
                }
            }
        });
        ctx("vdevice change", change)?;
        if let Some(f) = failed {
            return Err(f);
        }
    }
    // The page stays ours for as long as the process runs.
    std::mem::forget(bus);
    client.ok_or_else(|| "no client".into())
}

fn run(args: &Args) -> Res<()> {
    if args.kib == 0 || !args.kib.is_multiple_of(32) {
        return Err("--kib must be a positive multiple of 32".into());
    }
    let mut p = ctx("opening /dev/xen", LinuxXen::open(DOM0))?;
    let timeout = Duration::from_secs(args.timeout);
    let client = join(&mut p, timeout)?;
    let c = *client.control();
    println!(
        "member: disk of {} sectors ({} MiB), features {:#x}, {}, {} request slots",
        c.capacity,
        c.capacity / 2048,
        c.features,
        if c.read_only {
            "read-only"
        } else {
            "read-write"
        },
        client.slots()
    );
    let durable = features::FLUSH | features::FUA;
    if args.mode == Mode::Write && c.features & durable != durable {
        return Err(format!(
            "the disk offers no flush and FUA (features {:#x}): connect it with `vdevice create disk --features 15`",
            c.features
        ));
    }
    let server: DomId = client.server();
    let buf = ctx(
        "granting the I/O buffer",
        p.alloc_granted(server, DEPTH * REQ_PAGES, Access::ReadWrite),
    )?;
    let mut m = Member {
        p,
        client,
        buf,
        timeout_ns: timeout.as_nanos() as u64,
    };
    let len = args.kib * 1024;
    let expected = pattern(args.seed, len);
    let t = std::time::Instant::now();
    if args.mode == Mode::Write {
        let mut data = expected.clone();
        m.range(Dir::Write, true, args.sector, &mut data)?;
        println!(
            "member: wrote {} KiB from sector {} (last window FUA) in {:.1} s, fnv {:016x}",
            args.kib,
            args.sector,
            t.elapsed().as_secs_f64(),
            fnv(&expected)
        );
        let id = m.client.next_id();
        let deadline = m.p.now_ns() + m.timeout_ns;
        let st = ctx(
            "flush",
            m.client.run(&mut m.p, &RequestRepr::Flush { id }, deadline),
        )?;
        if st != Status::Okay {
            return Err(format!("flush answered {st:?}"));
        }
        println!("member: flush answered Okay");
        if let Some(path) = &args.save {
            std::fs::write(path, &expected).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let mut back = vec![0u8; len];
    m.range(Dir::Read, false, args.sector, &mut back)?;
    println!(
        "member: read back {} KiB, fnv {:016x}",
        args.kib,
        fnv(&back)
    );
    if args.mode == Mode::Verify {
        if let Some(path) = &args.save {
            std::fs::write(path, &back).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if back != expected {
        let at = back
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "read back differs from the pattern first at byte {at}"
        ));
    }
    println!("member: read back matches the pattern (seed {})", args.seed);
    let _ = m.client.detach(&mut m.p);
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {
            println!("member: PASS");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("member: FAIL {e}");
            ExitCode::FAILURE
        }
    }
}
