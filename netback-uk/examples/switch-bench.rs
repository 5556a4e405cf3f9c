//! The switch core alone: ns per forwarded frame, single thread, no
//! processes (the in-process platform, share-local), next to a same-run copy of the
//! same bytes (plain memcpy and the volatile copy shared pages need).
//!
//! Members fill their tx lanes and drain their rx lanes outside the timed
//! region; only `Switch::poll` is timed: reading each frame out of the
//! source's tx slots into a private buffer, learning and looking up the
//! MAC table, writing the frame into the destination's rx slots,
//! publishing, triggering.
//!
//! Next to the wall time it reports the polling thread's CPU time per
//! frame (`CLOCK_THREAD_CPUTIME_ID`: what other processes on a shared
//! machine do not add to) and the triggers the switch sent per 1000
//! frames. The switch owns its ports' pages and maps them, so it makes no
//! grant copies (0 per MiB).
//!
//! `cargo xtask bench net` runs it; by hand:
//! `cargo run --release -p netback-uk --features testing --example switch-bench -- [--secs S] [--sizes 64,1500] [--json PATH]`

#[cfg(not(feature = "testing"))]
fn main() {
    eprintln!("switch-bench needs the `testing` feature: --features netback-uk/testing");
    std::process::exit(2);
}

#[cfg(feature = "testing")]
fn main() {
    bench::main()
}

#[cfg(feature = "testing")]
mod bench {
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use netback_uk::policy::{Ipv4Net, PortRules, Rate};
    use netback_uk::switch::{PortSpec, Switch, SwitchConfig};
    use netback_uk::testing::{udp4, TestMember};
    use share_hal::frames::FrameMeta;
    use share_hal::SharedMem;
    use share_local::{LocalHost, LocalPlatform};

    /// The vdevice tool's default net share: 128 slots per lane.
    const PAGES: u32 = 258;
    /// Pages of each port's share (`--pages`, default [`PAGES`]): smaller
    /// shares, shorter lanes, fewer slot headers in play.
    static SHARE_PAGES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(PAGES);

    fn share_pages() -> u32 {
        SHARE_PAGES.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Frames each sender puts in its lane per round (`--batch`; default
    /// as many as fit).
    static BATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(usize::MAX);
    /// Runs of each case, alternating policy off and on.
    const REPEATS: usize = 5;
    /// Whether the policy-on runs are made (`--no-policy` skips them,
    /// e.g. under callgrind, to count the plain path only).
    static POLICY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

    struct Case {
        size: usize,
        flows: usize,
        ns_per_frame: f64,
        /// With every port's policy on: addresses bound (an assigned
        /// address each), a rate limit too high to hold anything back.
        policy_ns_per_frame: f64,
        /// CPU time of the polling thread per frame (policy off): what
        /// the other load on a shared machine does not add to.
        cpu_ns_per_frame: f64,
        /// Triggers the switch sent per 1000 frames forwarded.
        triggers_per_1000: f64,
        memcpy_ns: f64,
        volatile_ns: f64,
    }

    struct Opts {
        secs: f64,
        json: Option<String>,
        sizes: Vec<usize>,
        flows: Vec<usize>,
    }

    fn opts() -> Opts {
        let mut secs = 1.0;
        let mut json = None;
        let mut sizes = vec![64, 1500];
        let mut flows = vec![1, 4];
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--secs" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
                "--json" => json = args.next(),
                "--batch" => {
                    let n = args
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(usize::MAX);
                    BATCH.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
                }
                "--pages" => {
                    let n = args.next().and_then(|v| v.parse().ok()).unwrap_or(PAGES);
                    SHARE_PAGES.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                "--sizes" => sizes = list(args.next()),
                "--flows" => flows = list(args.next()),
                "--no-policy" => POLICY.store(false, std::sync::atomic::Ordering::Relaxed),
                _ => {
                    eprintln!(
                        "usage: switch-bench [--secs S] [--sizes 64,1500] [--flows 1,4] [--pages N] [--batch N] [--no-policy] [--json PATH]"
                    );
                    std::process::exit(2);
                }
            }
        }
        Opts {
            secs,
            json,
            sizes,
            flows,
        }
    }

    /// A comma-separated list of numbers (non-numbers left out).
    fn list(arg: Option<String>) -> Vec<usize> {
        arg.unwrap_or_default()
            .split(',')
            .filter_map(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .collect()
    }

    /// Port `k`'s address in the bench.
    fn ip_of(k: usize) -> [u8; 4] {
        [10, 88, (k / 250) as u8, (k % 250) as u8 + 1]
    }

    /// Every check of a port's policy, none of which refuses a frame.
    fn full_policy(k: usize) -> PortRules {
        PortRules {
            bind_addresses: true,
            ipv4: vec![Ipv4Net {
                addr: ip_of(k),
                prefix: 32,
            }],
            rate: Some(Rate {
                bytes_per_sec: u64::MAX / 4,
                burst_bytes: u64::MAX / 4,
                frames_per_sec: u32::MAX,
            }),
            ..PortRules::default()
        }
    }

    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }

    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }

    /// Linux's `CLOCK_THREAD_CPUTIME_ID`.
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

    /// CPU time this thread has used, in ns.
    fn thread_cpu_ns() -> u64 {
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec (two longs on x86_64
        // Linux, as declared) through a valid pointer to a local.
        let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// One run's figures per frame forwarded.
    struct Run {
        wall_ns: f64,
        cpu_ns: f64,
        triggers_per_1000: f64,
        /// Frames forwarded.
        frames: u64,
    }

    /// `flows` sender/receiver pairs on one LAN; each round every sender
    /// fills its lane with `size`-byte IPv4/UDP frames to its receiver.
    fn switched(size: usize, flows: usize, secs: f64, policy: bool) -> Run {
        let host = LocalHost::new();
        let mut p = host.domain(1);
        let mut sw: Switch<LocalPlatform> = Switch::new(SwitchConfig::default());
        let mut members = Vec::new();
        for k in 0..2 * flows {
            let spec = PortSpec {
                lan: 1,
                member: 2 + k as u16,
                mac: [0; 6],
                policy: 0,
                numpages: share_pages(),
            };
            let r = sw.add_port(&mut p, k as u16, spec).unwrap();
            if policy {
                sw.set_port_rules(&mut p, k as u16, full_policy(k)).unwrap();
            }
            members.push(TestMember::join(host.domain(2 + k as u16), r, 0));
        }
        while sw.poll(&mut p).busy {}
        let frames: Vec<Vec<u8>> = (0..flows)
            .map(|f| {
                let (s, d) = (2 * f, 2 * f + 1);
                udp4(
                    members[d].mac,
                    members[s].mac,
                    ip_of(s),
                    ip_of(d),
                    size,
                    f as u8,
                )
            })
            .collect();
        let mut timed = Duration::ZERO;
        let mut cpu = 0u64;
        let mut triggers = 0u64;
        let mut forwarded = 0u64;
        let wall = Instant::now();
        while wall.elapsed().as_secs_f64() < secs {
            for f in 0..flows {
                let frame = &frames[f];
                let batch = BATCH.load(std::sync::atomic::Ordering::Relaxed);
                members[2 * f].send_with(batch, |_| (&frame[..], FrameMeta::default()));
            }
            let c = thread_cpu_ns();
            let t = Instant::now();
            loop {
                let r = sw.poll(&mut p);
                forwarded += r.frames;
                triggers += r.triggers;
                if !r.busy {
                    break;
                }
            }
            timed += t.elapsed();
            cpu += thread_cpu_ns() - c;
            for f in 0..flows {
                members[2 * f + 1].recv_with(|d, _| {
                    black_box(d);
                });
            }
        }
        let drops: u64 = sw
            .ports()
            .map(|q| q.counters.drop_rx_full + q.counters.drop_policy.total())
            .sum();
        assert_eq!(drops, 0, "the bench must not overrun the receivers");
        Run {
            wall_ns: timed.as_nanos() as f64 / forwarded as f64,
            cpu_ns: cpu as f64 / forwarded as f64,
            triggers_per_1000: 1000.0 * triggers as f64 / forwarded as f64,
            frames: forwarded,
        }
    }

    fn copy_ns(size: usize, volatile: bool) -> f64 {
        let src = vec![7u8; size];
        let mut dst = vec![0u64; size / 8 + 2];
        let n = 2_000_000usize.min(400_000_000 / size.max(1));
        let t = Instant::now();
        if volatile {
            let mem = SharedMem::from_slice(bytemuck_bytes(&mut dst));
            for _ in 0..n {
                mem.write_from(0, black_box(&src)).unwrap();
                black_box(&mem);
            }
        } else {
            let d = bytemuck_bytes(&mut dst);
            for _ in 0..n {
                d[..size].copy_from_slice(black_box(&src));
                black_box(&d);
            }
        }
        t.elapsed().as_nanos() as f64 / n as f64
    }

    fn bytemuck_bytes(v: &mut [u64]) -> &mut [u8] {
        let len = v.len() * 8;
        // SAFETY: u64 has no invalid bit patterns and u8 no alignment.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), len) }
    }

    pub fn main() {
        let Opts {
            secs,
            json,
            sizes,
            flows: flow_counts,
        } = opts();
        let policy = POLICY.load(std::sync::atomic::Ordering::Relaxed);
        let mut cases = Vec::new();
        let mut total = 0u64;
        for size in sizes {
            for &flows in &flow_counts {
                // Policy off and on in turns, the best of each: on a
                // shared machine the other load only ever adds time.
                let (mut off, mut on, mut cpu) = (f64::MAX, f64::MAX, f64::MAX);
                let mut triggers = 0.0;
                for _ in 0..REPEATS {
                    let r = switched(size, flows, secs / REPEATS as f64, false);
                    off = off.min(r.wall_ns);
                    cpu = cpu.min(r.cpu_ns);
                    triggers += r.triggers_per_1000 / REPEATS as f64;
                    total += r.frames;
                    if policy {
                        let r = switched(size, flows, secs / REPEATS as f64, true);
                        on = on.min(r.wall_ns);
                        total += r.frames;
                    }
                }
                cases.push(Case {
                    size,
                    flows,
                    ns_per_frame: off,
                    // Not measured with --no-policy.
                    policy_ns_per_frame: if policy { on } else { f64::NAN },
                    cpu_ns_per_frame: cpu,
                    triggers_per_1000: triggers,
                    memcpy_ns: copy_ns(size, false),
                    volatile_ns: copy_ns(size, true),
                });
            }
        }
        println!(
            "switch core alone (one thread, local platform, {}-page shares)",
            share_pages()
        );
        println!(
            "{:>6} {:>5} {:>12} {:>14} {:>11} {:>12} {:>14} {:>8} {:>16} {:>18}",
            "bytes",
            "flows",
            "ns/frame",
            "M frames/s",
            "cpu ns/fr",
            "trig/1000fr",
            "policy ns/fr",
            "policy",
            "memcpy ns",
            "volatile copy ns"
        );
        for c in &cases {
            println!(
                "{:>6} {:>5} {:>12.1} {:>14.2} {:>11.1} {:>12.2} {:>14.1} {:>+7.1}% {:>16.1} {:>18.1}",
                c.size,
                c.flows,
                c.ns_per_frame,
                1e3 / c.ns_per_frame,
                c.cpu_ns_per_frame,
                c.triggers_per_1000,
                c.policy_ns_per_frame,
                100.0 * (c.policy_ns_per_frame / c.ns_per_frame - 1.0),
                c.memcpy_ns,
                c.volatile_ns
            );
        }
        // For instruction counts per frame (callgrind around `Switch::poll`).
        println!("frames forwarded in all timed runs: {total}");
        if let Some(path) = json {
            let rows: Vec<String> = cases
                .iter()
                .map(|c| {
                    format!(
                        "{{\"bytes\":{},\"flows\":{},\"ns_per_frame\":{:.2},\"mframes_per_s\":{:.3},\"policy_ns_per_frame\":{:.2},\"cpu_ns_per_frame\":{:.2},\"triggers_per_1000_frames\":{:.3},\"grant_copies_per_mib\":0,\"memcpy_ns\":{:.2},\"volatile_copy_ns\":{:.2}}}",
                        c.size, c.flows, c.ns_per_frame, 1e3 / c.ns_per_frame, c.policy_ns_per_frame, c.cpu_ns_per_frame, c.triggers_per_1000, c.memcpy_ns, c.volatile_ns
                    )
                })
                .collect();
            let body = format!("{{\"switch_core\":[{}]}}\n", rows.join(","));
            if let Some(dir) = std::path::Path::new(&path).parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::write(&path, body).expect("writing the JSON");
            println!("wrote {path}");
        }
    }
}
