//! Disk I/O through the share transport on the simulation, next to fio on
//! a tmpfs file in the same run.
//!
//! This process runs the broker (on its threads), plays dom0 (an owner
//! entry in the server's vdevice page) and the member: blkback-uk's
//! `BlkClient` with one pre-granted buffer per request in flight, as the
//! userspace member uses it. The server is this program re-executed with
//! `--serve`: blkback-uk's `Server` over a RAM store (`--store ram`, the
//! default) or blkback-file's file store over a file in `/dev/shm` (`--store
//! file`: tmpfs, as fio's file), the service loop of `blkback-file`. Cases: 4 KiB random read and write at queue depth 1 and
//! 32, 1 MiB sequential read and write at queue depth 8. Then fio runs the
//! same cases on a tmpfs file (io_uring if the kernel allows it, else
//! libaio, else psync; direct I/O, which tmpfs has since Linux 6.6, else
//! buffered; the JSON says which), the limit a user compares with.
//!
//! `cargo xtask bench blk` runs it in release mode and keeps the JSON.
//! By hand: `cargo run --release -p blkback-uk --features host --example
//! blk-bench -- [--secs S] [--json PATH] [--no-fio] [--only CASE]
//! [--store ram|file]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blkback_uk::client::{BlkClient, Buffer};
use blkback_uk::file::FileStore;
use blkback_uk::ram::RamStore;
use blkback_uk::wiring::poll_vdevice;
use blkback_uk::{Server, ServerConfig, Store};
use share_hal::platform::{Access, Clock, EventChannels, PAGE_SIZE};
use share_hal::share::ShareRef;
use share_hal::vdevice::{VdeviceBus, VdeviceClient};
use share_hal::wire::blk::{self, features, Dir, Status};
use share_hal::wire::vdevice::{status, Bootstrap, EntryRepr, Kind, Role, BOOTSTRAP_KEY};
use share_hal::{DomId, Error, GrantRef};
use share_sim::{temp_socket_path, Broker, OpCounts, SimPlatform, SimStore};

const SERVER: DomId = 1;
const MEMBER: DomId = 5;
/// Request lane of 288 slots: room for every case's queue depth.
const NUMPAGES: u32 = 11;
const DISK_BYTES: u64 = 256 << 20;
const SECOND: u64 = 1_000_000_000;

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    dir: Dir,
    bs: usize,
    qd: usize,
    random: bool,
}

const CASES: [Case; 6] = [
    Case {
        name: "randread-4k-qd1",
        dir: Dir::Read,
        bs: 4096,
        qd: 1,
        random: true,
    },
    Case {
        name: "randread-4k-qd32",
        dir: Dir::Read,
        bs: 4096,
        qd: 32,
        random: true,
    },
    Case {
        name: "randwrite-4k-qd1",
        dir: Dir::Write,
        bs: 4096,
        qd: 1,
        random: true,
    },
    Case {
        name: "randwrite-4k-qd32",
        dir: Dir::Write,
        bs: 4096,
        qd: 32,
        random: true,
    },
    Case {
        name: "read-1m-qd8",
        dir: Dir::Read,
        bs: 1 << 20,
        qd: 8,
        random: false,
    },
    Case {
        name: "write-1m-qd8",
        dir: Dir::Write,
        bs: 1 << 20,
        qd: 8,
        random: false,
    },
];

struct Opts {
    secs: f64,
    json: Option<PathBuf>,
    fio: bool,
    /// Run only the cases whose name contains this (profiling).
    only: Option<String>,
    /// The server's store: "ram" or "file".
    store: String,
}

/// The file store's file: tmpfs, as fio's.
fn store_file_path() -> PathBuf {
    PathBuf::from(format!("/dev/shm/blk-bench-store-{}", std::process::id()))
}

/// Removes the file store's file when the bench ends.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        let Some(sock) = args.get(2) else {
            eprintln!("blk-bench: --serve SOCKET [FILE]");
            std::process::exit(2);
        };
        let served = match args.get(3) {
            None => {
                // Huge pages, as the PVH image's RAM disks have (2 MiB
                // identity map) and fio's tmpfs file (the kernel's direct
                // map).
                serve(Path::new(sock), RamStore::new_hugepages(DISK_BYTES / 512))
            }
            Some(file) => match FileStore::open(Path::new(file), false) {
                Ok(s) => serve(Path::new(sock), s),
                Err(e) => Err(format!("{file}: {e}")),
            },
        };
        if let Err(e) = served {
            eprintln!("blk-bench server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut o = Opts {
        secs: 2.0,
        json: None,
        fio: true,
        only: None,
        store: "ram".into(),
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--secs" => o.secs = val().parse().unwrap_or(2.0),
            "--json" => o.json = Some(PathBuf::from(val())),
            "--no-fio" => o.fio = false,
            "--only" => o.only = Some(val()),
            "--store" => o.store = val(),
            other => {
                eprintln!("blk-bench: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = bench(&o) {
        eprintln!("blk-bench: {e}");
        std::process::exit(1);
    }
}

/// The server process: blkback-file's service loop over `store`. Ends
/// when the broker goes (the bench process is done).
fn serve<S: Store>(sock: &Path, store: S) -> Result<(), String> {
    let mut p = SimPlatform::connect(sock, SERVER).map_err(|e| e.to_string())?;
    let mut server = Server::new(&mut p, vec![store], ServerConfig::default())
        .map_err(|e| format!("server: {e}"))?;
    let mut bus = VdeviceBus::create(&mut p, 4).map_err(|e| format!("vdevice page: {e}"))?;
    SimStore::for_broker(sock)
        .write(SERVER, BOOTSTRAP_KEY, &bus.bootstrap().to_string())
        .map_err(|e| e.to_string())?;
    let vport = bus.port();
    loop {
        let progress = server.service(&mut p);
        let deadline = if progress.more {
            Some(0)
        } else {
            Some(p.now_ns().saturating_add(SECOND))
        };
        let mut fired = false;
        match p.wait(deadline, &mut |port| fired |= port == vport) {
            Ok(()) | Err(Error::TimedOut) => {}
            Err(_) => return Ok(()),
        }
        if fired {
            poll_vdevice(&mut bus, &mut p, &mut server).map_err(|e| e.to_string())?;
        }
    }
}

struct ServerProc(Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bootstrap(sock: &Path) -> Result<Bootstrap, String> {
    let store = SimStore::for_broker(sock);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = store
            .read(SERVER, BOOTSTRAP_KEY)
            .map_err(|e| e.to_string())?
        {
            if let Ok(b) = Bootstrap::parse(v.as_bytes()) {
                return Ok(b);
            }
        }
        if Instant::now() > until {
            return Err("the server never published its vdevice page".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Figures of one case.
#[derive(Clone, Copy, Default)]
struct Figures {
    iops: f64,
    mib_s: f64,
    /// Counted by the broker over the case (member and server): triggers
    /// sent per 1000 requests, grant copy segments and batches per MiB
    /// moved (what become hypercalls on Xen). None for fio.
    ops: Option<OpRates>,
}

#[derive(Clone, Copy, Default)]
struct OpRates {
    triggers_per_1000: f64,
    copy_segs_per_mib: f64,
    copy_calls_per_mib: f64,
}

impl OpRates {
    fn of(ops: OpCounts, requests: u64, bytes: u64) -> OpRates {
        let mib = (bytes as f64 / (1u64 << 20) as f64).max(f64::MIN_POSITIVE);
        OpRates {
            triggers_per_1000: ops.triggers as f64 * 1000.0 / requests.max(1) as f64,
            copy_segs_per_mib: ops.copy_segs as f64 / mib,
            copy_calls_per_mib: ops.copy_calls as f64 / mib,
        }
    }
}

fn bench(o: &Opts) -> Result<(), String> {
    let store_file = match o.store.as_str() {
        "ram" => None,
        "file" => Some(store_file_path()),
        other => return Err(format!("--store {other}: ram or file")),
    };
    let _remove = RemoveOnDrop(store_file.clone());
    if let Some(f) = &store_file {
        std::fs::File::create(f)
            .and_then(|h| h.set_len(DISK_BYTES))
            .map_err(|e| format!("{}: {e}", f.display()))?;
    }
    let sock = temp_socket_path("blk-bench");
    let broker = Broker::spawn(&sock).map_err(|e| format!("broker: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let _server = ServerProc(
        Command::new(exe)
            .arg("--serve")
            .arg(&sock)
            .args(store_file.iter())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the server: {e}"))?,
    );
    let mut dom0 = SimPlatform::connect(&sock, 0).map_err(|e| e.to_string())?;
    let boot = bootstrap(&sock)?;
    let mut vd = VdeviceClient::attach(&mut dom0, SERVER, boot).map_err(|e| e.to_string())?;
    let entry = EntryRepr {
        kind: Kind::Disk,
        role: Role::Owner,
        flags: 0,
        subtype: features::ALL,
        numpages: NUMPAGES,
        peer: MEMBER,
        share_ref: GrantRef(0),
        status: 0,
        param: 0,
    };
    let dl = dom0.now_ns() + 10 * SECOND;
    let e = vd
        .change(&mut dom0, 0, &entry, dl)
        .map_err(|e| e.to_string())?;
    if e.status != status::OK {
        return Err(format!("the server refused the disk: status {}", e.status));
    }
    let mut p = SimPlatform::connect(&sock, MEMBER).map_err(|e| e.to_string())?;
    let mut c = BlkClient::attach(
        &mut p,
        ShareRef {
            owner: SERVER,
            descriptor: e.share_ref,
        },
    )
    .map_err(|e| e.to_string())?;
    if (c.slots() as usize) < 32 {
        return Err(format!("only {} request slots", c.slots()));
    }

    // Every sector written once, as fio lays its file out first.
    let fill = Case {
        name: "fill",
        dir: Dir::Write,
        bs: 1 << 20,
        qd: 8,
        random: false,
    };
    run_case(&mut p, &mut c, &fill, None).map_err(|e| format!("fill: {e}"))?;

    let mut ours = Vec::new();
    for case in &CASES {
        if o.only.as_deref().is_some_and(|n| !case.name.contains(n)) {
            ours.push(Figures::default());
            continue;
        }
        let before = broker.op_totals();
        let (mut f, requests) = run_case(&mut p, &mut c, case, Some(o.secs))
            .map_err(|e| format!("{}: {e}", case.name))?;
        let ops = broker.op_totals().since(&before);
        f.ops = Some(OpRates::of(ops, requests, requests * case.bs as u64));
        ours.push(f);
    }
    let (fio, engine, direct) = if o.fio {
        match run_fio(o.secs) {
            Ok((f, e, d)) => (Some(f), e, d),
            Err(e) => {
                eprintln!("blk-bench: fio: {e}");
                (None, String::new(), false)
            }
        }
    } else {
        (None, String::new(), false)
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);

    let spin = std::env::var(share_sim::SPIN_ENV).unwrap_or_else(|_| "0".into());
    println!(
        "disk I/O over a blk share on the simulation ({} store, {} MiB), {} s per case, spin {spin} ns before sleeping; fio: {}",
        if store_file.is_some() {
            "file (tmpfs)"
        } else {
            "RAM"
        },
        DISK_BYTES >> 20,
        o.secs,
        if fio.is_some() {
            format!(
                "{engine}, {} I/O on a tmpfs file",
                if direct { "direct" } else { "buffered" }
            )
        } else {
            "not run".into()
        }
    );
    println!(
        "{:<20} {:>12} {:>10} {:>11} {:>10} {:>12} {:>10} {:>7}",
        "case", "share IOPS", "MiB/s", "trig/1000rq", "gcopy/MiB", "fio IOPS", "MiB/s", "ratio"
    );
    for (i, case) in CASES.iter().enumerate() {
        let s = ours[i];
        let f = fio.as_ref().map(|v| v[i]).unwrap_or_default();
        println!(
            "{:<20} {:>12.0} {:>10.1} {:>11.1} {:>10.1} {:>12.0} {:>10.1} {:>7}",
            case.name,
            s.iops,
            s.mib_s,
            s.ops.unwrap_or_default().triggers_per_1000,
            s.ops.unwrap_or_default().copy_segs_per_mib,
            f.iops,
            f.mib_s,
            if f.iops > 0.0 {
                format!("{:.2}", s.iops / f.iops)
            } else {
                "-".into()
            }
        );
    }
    println!("load average (1, 5, 15 min) at the end: {load}; {nproc} CPUs");

    if let Some(path) = &o.json {
        let mut j = String::from("{\n");
        j.push_str(&format!(
            "  \"machine\": {{ \"nproc\": {nproc}, \"loadavg_at_end\": \"{load}\" }},\n"
        ));
        j.push_str(&format!(
            "  \"config\": {{ \"transport\": \"blk share on the sim, member and server in two processes\", \"store\": \"{}\", \"disk_mib\": {}, \"secs_per_case\": {}, \"spin_ns\": \"{spin}\", \"fio_engine\": \"{engine}\", \"fio_direct\": {direct}, \"fio_file\": \"tmpfs (/dev/shm)\" }},\n",
            o.store,
            DISK_BYTES >> 20,
            o.secs
        ));
        j.push_str("  \"cases\": [\n");
        for (i, case) in CASES.iter().enumerate() {
            let s = ours[i];
            let f = fio.as_ref().map(|v| v[i]);
            j.push_str(&format!(
                "    {{ \"case\": \"{}\", \"block_size\": {}, \"queue_depth\": {}, \"share_iops\": {:.0}, \"share_mib_per_s\": {:.1}, \"share_triggers_per_1000_requests\": {:.2}, \"share_grant_copy_segs_per_mib\": {:.2}, \"share_grant_copy_calls_per_mib\": {:.3}, \"fio_iops\": {}, \"fio_mib_per_s\": {} }}{}\n",
                case.name,
                case.bs,
                case.qd,
                s.iops,
                s.mib_s,
                s.ops.unwrap_or_default().triggers_per_1000,
                s.ops.unwrap_or_default().copy_segs_per_mib,
                s.ops.unwrap_or_default().copy_calls_per_mib,
                f.map(|f| format!("{:.0}", f.iops)).unwrap_or("null".into()),
                f.map(|f| format!("{:.1}", f.mib_s)).unwrap_or("null".into()),
                if i + 1 < CASES.len() { "," } else { "" }
            ));
        }
        j.push_str("  ]\n}\n");
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        std::fs::write(path, j).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("raw figures: {}", path.display());
    }
    Ok(())
}

/// One buffer (and its indirect page) per request in flight.
struct Slot {
    data: Buffer<SimPlatform>,
    indirect: Option<Buffer<SimPlatform>>,
}

/// Runs `case` for `secs` (None: one pass over the disk). Closed loop: a
/// request is issued again as soon as one is answered.
fn run_case(
    p: &mut SimPlatform,
    c: &mut BlkClient<SimPlatform>,
    case: &Case,
    secs: Option<f64>,
) -> Result<(Figures, u64), Error> {
    let pages = case.bs / PAGE_SIZE;
    let sectors = (case.bs / blk::SECTOR_SIZE) as u64;
    let blocks = DISK_BYTES / case.bs as u64;
    let mut slots = Vec::with_capacity(case.qd);
    for k in 0..case.qd {
        let data = Buffer::new(p, SERVER, pages, Access::ReadWrite)?;
        let fill: Vec<u8> = (0..case.bs)
            .map(|i| (i as u64 * 31 + k as u64) as u8)
            .collect();
        data.mem().write_from(0, &fill)?;
        let indirect = if pages > blk::MAX_INLINE_SEGMENTS {
            Some(Buffer::new(
                p,
                SERVER,
                blk::indirect_pages_for(pages as u16),
                Access::ReadOnly,
            )?)
        } else {
            None
        };
        slots.push(Slot { data, indirect });
    }
    let mut free: Vec<usize> = (0..case.qd).collect();
    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next_block = 0u64;
    let mut done_ops = 0u64;
    let start = Instant::now();
    let end = secs.map(|s| start + Duration::from_secs_f64(s));
    let mut issuing = true;
    loop {
        if issuing {
            while let Some(slot) = free.pop() {
                let block = if case.random {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % blocks
                } else {
                    let b = next_block % blocks;
                    next_block += 1;
                    b
                };
                let s = &slots[slot];
                let req = c.rw_request(
                    case.dir,
                    false,
                    block * sectors,
                    &s.data,
                    0,
                    sectors,
                    s.indirect.as_ref(),
                )?;
                if !c.submit(&req)? {
                    free.push(slot);
                    break;
                }
                in_flight.insert(req.id(), slot);
            }
            c.kick(p)?;
        }
        if in_flight.is_empty() {
            break;
        }
        let dl = p.now_ns() + 10 * SECOND;
        for d in c.wait(p, dl)? {
            if d.status != Status::Okay {
                return Err(Error::Protocol {
                    what: "the server answered an I/O with an error",
                });
            }
            if let Some(slot) = in_flight.remove(&d.id) {
                free.push(slot);
                done_ops += 1;
            }
        }
        issuing = match end {
            Some(e) => Instant::now() < e,
            None => next_block < blocks,
        };
    }
    let elapsed = start.elapsed().as_secs_f64();
    for s in slots {
        let _ = s.data.release(p);
        if let Some(i) = s.indirect {
            let _ = i.release(p);
        }
    }
    let iops = done_ops as f64 / elapsed;
    Ok((
        Figures {
            iops,
            mib_s: iops * case.bs as f64 / (1 << 20) as f64,
            ops: None,
        },
        done_ops,
    ))
}

/// fio on a tmpfs file, the same cases; returns the figures, the engine
/// and whether I/O was direct.
fn run_fio(secs: f64) -> Result<(Vec<Figures>, String, bool), String> {
    let file = PathBuf::from(format!("/dev/shm/blk-bench-fio-{}", std::process::id()));
    let fio = |case: &Case, engine: &str, direct: bool, secs: f64| -> Result<Figures, String> {
        let rw = match (case.dir, case.random) {
            (Dir::Read, true) => "randread",
            (Dir::Write, true) => "randwrite",
            (Dir::Read, false) => "read",
            (Dir::Write, false) => "write",
        };
        let out = Command::new("fio")
            .arg("--name=blk-bench")
            .arg(format!("--filename={}", file.display()))
            .arg(format!("--size={}", DISK_BYTES))
            .arg(format!("--rw={rw}"))
            .arg(format!("--bs={}", case.bs))
            .arg(format!("--iodepth={}", case.qd))
            .arg(format!("--ioengine={engine}"))
            .arg(format!("--direct={}", u8::from(direct)))
            .arg(format!("--runtime={secs}"))
            .args(["--time_based", "--minimal", "--randrepeat=0"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running fio: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        // Terse format v3: field 8 (1-based) read IOPS, 49 write IOPS.
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("3;"))
            .ok_or("no terse line in fio's output")?;
        let f: Vec<&str> = line.split(';').collect();
        let at = if case.dir == Dir::Read { 7 } else { 48 };
        let iops: f64 = f
            .get(at)
            .and_then(|v| v.parse().ok())
            .ok_or("fio's terse output has no IOPS field")?;
        Ok(Figures {
            iops,
            mib_s: iops * case.bs as f64 / (1 << 20) as f64,
            ops: None,
        })
    };
    // The engine and mode the machine allows, probed on a short case.
    let probe = CASES[0];
    let mut chosen = None;
    'probe: for engine in ["io_uring", "libaio", "psync"] {
        for direct in [true, false] {
            if fio(&probe, engine, direct, 0.2).is_ok() {
                chosen = Some((engine, direct));
                break 'probe;
            }
        }
    }
    let Some((engine, direct)) = chosen else {
        let _ = std::fs::remove_file(&file);
        return Err("no fio engine works here".into());
    };
    let r = CASES
        .iter()
        .map(|c| fio(c, engine, direct, secs))
        .collect::<Result<Vec<_>, _>>();
    let _ = std::fs::remove_file(&file);
    Ok((r?, engine.to_string(), direct))
}
