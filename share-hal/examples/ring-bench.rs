//! Lane throughput and latency between two processes over a real share of
//! the simulation platform (pages granted by the owner and mapped by the
//! member, triggers through the broker), next to a same-run memcpy
//! baseline.
//!
//! The owner (this process, with the broker on its threads) creates a share
//! holding two frame lanes, `out` (owner to member) and `back`, and
//! re-executes itself as the member. The member is a dumb sink/echo server;
//! the owner drives every case by the tag in each frame's first byte.
//!
//! `cargo xtask bench ring` runs it in release mode and keeps the JSON.
//! By hand: `cargo run --release -p share-hal --example
//! ring-bench -- [--secs S] [--spin N] [--json PATH]`.

fn main() {
    if let Err(e) = bench::main() {
        eprintln!("ring-bench: {e}");
        std::process::exit(1);
    }
}

mod bench {
    use std::hint::black_box;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use share_hal::frames::{FrameMeta, FrameReceiver, FrameSender, NET_SLOT_SIZE};
    use share_hal::lane::{init, Consumer, LaneLayout, Producer};
    use share_hal::platform::{EventChannels, Port, PAGE_SIZE};
    use share_hal::share::{deadline_in, watch, Attached, Share, ShareRef};
    use share_hal::{Error, GrantRef, Result, SharedMem};
    use share_sim::{temp_socket_path, Broker, OpCounts, SimPlatform};

    const OWNER: u16 = 1;
    const MEMBER: u16 = 2;
    const SLOTS: u32 = 256;
    const MAX_FRAME: usize = 64 * 1024;
    const SECOND: u64 = 1_000_000_000;

    /// First byte of every frame: what the member does with it.
    const TAG_DATA: u8 = 0;
    const TAG_ECHO: u8 = 1;
    /// Report the counts since the last report; second byte 1: then exit.
    const TAG_STOP: u8 = 2;

    const SIZES: [usize; 3] = [64, 1500, 64 * 1024];

    fn layout() -> LaneLayout {
        LaneLayout::new(SLOTS, NET_SLOT_SIZE).expect("bench lane layout")
    }

    /// Page offset of the `back` lane, and the share's page count.
    fn geometry() -> (usize, usize) {
        let lane_pages = layout().bytes().div_ceil(PAGE_SIZE);
        (lane_pages * PAGE_SIZE, 2 * lane_pages)
    }

    struct Opts {
        secs: f64,
        spin: u32,
        json: Option<String>,
        /// Payload sizes to run (default: all of SIZES).
        sizes: Vec<usize>,
    }

    fn opts() -> Opts {
        let mut o = Opts {
            secs: 2.0,
            spin: 200,
            json: None,
            sizes: SIZES.to_vec(),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().unwrap_or_default();
            match a.as_str() {
                "--secs" => o.secs = val().parse().unwrap_or(o.secs),
                "--spin" => o.spin = val().parse().unwrap_or(o.spin),
                "--json" => o.json = Some(val()),
                "--sizes" => o.sizes = val().split(',').filter_map(|x| x.parse().ok()).collect(),
                _ => eprintln!("ring-bench: ignoring argument {a}"),
            }
        }
        o
    }

    /// One end of the pair of lanes, with its platform and trigger port.
    struct End<'a> {
        p: &'a mut SimPlatform,
        port: Port,
        tx: FrameSender<'a>,
        rx: FrameReceiver<'a>,
        spin: u32,
        /// Triggers sent and waits that blocked, for the analysis.
        triggers: u64,
        blocks: u64,
    }

    impl<'a> End<'a> {
        fn new(
            p: &'a mut SimPlatform,
            port: Port,
            mem: SharedMem<'a>,
            owner: bool,
            spin: u32,
        ) -> Result<Self> {
            let (back, _) = geometry();
            let out_mem = mem.slice(0, layout().bytes())?;
            let back_mem = mem.slice(back, layout().bytes())?;
            let (tx_mem, rx_mem) = if owner {
                (out_mem, back_mem)
            } else {
                (back_mem, out_mem)
            };
            Ok(End {
                p,
                port,
                tx: FrameSender::new(Producer::attach(tx_mem, layout())?, MAX_FRAME)?,
                rx: FrameReceiver::new(Consumer::attach(rx_mem, layout())?, MAX_FRAME)?,
                spin,
                triggers: 0,
                blocks: 0,
            })
        }

        fn trigger_if(&mut self, needed: bool) -> Result<()> {
            if needed {
                self.triggers += 1;
                self.p.notify(self.port)?;
            }
            Ok(())
        }

        fn publish(&mut self) -> Result<()> {
            let t = self.tx.publish()?;
            self.trigger_if(t)
        }

        fn release(&mut self) -> Result<()> {
            let t = self.rx.release()?;
            self.trigger_if(t)
        }

        fn block(&mut self) -> Result<()> {
            self.blocks += 1;
            let dl = deadline_in(self.p, 10 * SECOND);
            watch(self.p, dl, |_| {}).map(drop)
        }

        /// Sends `frame`, waiting for room: spin a little, then arm the
        /// trigger and sleep.
        fn send(&mut self, frame: &[u8]) -> Result<()> {
            loop {
                if self.tx.send(frame, FrameMeta::default())? {
                    return Ok(());
                }
                self.publish()?;
                let need = self.tx.slots_for(frame.len());
                let mut spun = 0;
                while spun < self.spin && self.tx.lane().refresh()? < need {
                    std::hint::spin_loop();
                    spun += 1;
                }
                if spun == self.spin && !self.tx.prepare_wait(frame.len())? {
                    self.block()?;
                }
            }
        }

        /// Starts a receive batch, waiting for one: spin, then sleep.
        fn poll(&mut self) -> Result<u32> {
            for _ in 0..self.spin {
                let n = self.rx.poll()?;
                if n > 0 {
                    return Ok(n);
                }
                std::hint::spin_loop();
            }
            loop {
                let n = self.rx.prepare_wait()?;
                if n > 0 {
                    return Ok(n);
                }
                self.block()?;
            }
        }
    }

    pub fn main() -> Result<()> {
        if let Ok(sock) = std::env::var("XS_RING_SOCK") {
            return member(&sock);
        }
        let o = opts();
        let path = temp_socket_path("ring-bench");
        let _broker = Broker::spawn(&path)?;
        let mut plat = SimPlatform::connect(&path, OWNER)?;
        let (_, pages) = geometry();
        let mut share = Share::create(&mut plat, pages)?;
        let (back, _) = geometry();
        init(share.mem(), layout(), 0)?;
        init(share.mem().slice(back, layout().bytes())?, layout(), 0)?;
        let r = share.add_member(&mut plat, MEMBER)?;
        let port = share.port(MEMBER)?;
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env("XS_RING_SOCK", &path)
            .env("XS_RING_GREF", r.descriptor.0.to_string())
            .env("XS_RING_SPIN", o.spin.to_string())
            .spawn()
            .expect("spawn the member");
        // On failure the member times out waiting and exits too.
        let results = {
            End::new(&mut plat, port, share.mem(), true, o.spin)
                .and_then(|mut end| measure(&mut end, &o, &_broker))
        };
        let status = child.wait().expect("member exit");
        let results = results?;
        if !status.success() {
            return Err(Error::InvalidArgument {
                what: "the member process failed",
            });
        }
        share.remove_member(&mut plat, MEMBER)?;
        share.destroy(&mut plat)?;
        report(&o, &results);
        Ok(())
    }

    struct Case {
        size: usize,
        /// One way: frames/s at the receiver, triggers and blocked waits
        /// per frame on both sides.
        oneway_fps: f64,
        oneway_triggers: f64,
        /// One way, counted by the broker (both processes): triggers sent
        /// per 1000 frames, grant copy segments and batches per MiB.
        ops: OpRates,
        /// Ping-pong: round trips/s and mean round trip.
        rtt_per_s: f64,
        rtt_ns: f64,
        memcpy_ops: f64,
        volatile_ops: f64,
        /// Both ends in this thread over private memory: the codec's own
        /// cost per frame, without cache lines moving between cores.
        local_fps: f64,
        /// The same, in the thread's CPU time per frame (what other
        /// processes on a shared machine do not add to).
        local_cpu_ns: f64,
    }

    /// Hypercall figures of a run, from the broker's counts.
    #[derive(Clone, Copy, Default)]
    struct OpRates {
        triggers_per_1000: f64,
        copy_segs_per_mib: f64,
        copy_calls_per_mib: f64,
    }

    impl OpRates {
        fn of(ops: OpCounts, units: u64, bytes: u64) -> OpRates {
            let mib = bytes as f64 / (1u64 << 20) as f64;
            OpRates {
                triggers_per_1000: ops.triggers as f64 * 1000.0 / units.max(1) as f64,
                copy_segs_per_mib: ops.copy_segs as f64 / mib.max(f64::MIN_POSITIVE),
                copy_calls_per_mib: ops.copy_calls as f64 / mib.max(f64::MIN_POSITIVE),
            }
        }
    }

    fn measure(end: &mut End<'_>, o: &Opts, broker: &Broker) -> Result<Vec<Case>> {
        let mut cases = Vec::new();
        for &size in &o.sizes {
            let before = broker.op_totals();
            let (fps, trig, sent) = one_way(end, size, o.secs)?;
            let ops = OpRates::of(broker.op_totals().since(&before), sent, sent * size as u64);
            let (rps, rtt) = round_trip(end, size, o.secs / 2.0)?;
            let local = local_rate(size, o.secs / 4.0)?;
            cases.push(Case {
                size,
                oneway_fps: fps,
                oneway_triggers: trig,
                ops,
                rtt_per_s: rps,
                rtt_ns: rtt,
                memcpy_ops: copy_rate(size, false),
                local_fps: local.0,
                local_cpu_ns: local.1,
                volatile_ops: copy_rate(size, true),
            });
        }
        let mut stop = vec![0u8; 2];
        stop[0] = TAG_STOP;
        stop[1] = 1;
        end.send(&stop)?;
        end.publish()?;
        stats(end)?;
        Ok(cases)
    }

    /// Counts the member reports on a stop frame.
    struct Stats {
        frames: u64,
        bytes: u64,
        ns: u64,
        triggers: u64,
    }

    fn stats(end: &mut End<'_>) -> Result<Stats> {
        loop {
            end.poll()?;
            if let Some(f) = end.rx.next()? {
                let w = |i: usize| u64::from_le_bytes(f.data[8 * i..8 * i + 8].try_into().unwrap());
                let s = Stats {
                    frames: w(0),
                    bytes: w(1),
                    ns: w(2),
                    triggers: w(3),
                };
                end.release()?;
                return Ok(s);
            }
        }
    }

    fn one_way(end: &mut End<'_>, size: usize, secs: f64) -> Result<(f64, f64, u64)> {
        let mut frame = vec![0x5au8; size];
        frame[0] = TAG_DATA;
        let (t0, b0) = (end.triggers, end.blocks);
        let start = Instant::now();
        let limit = Duration::from_secs_f64(secs);
        let mut sent = 0u64;
        while start.elapsed() < limit {
            // A batch: as many frames as fit, one publication.
            for _ in 0..SLOTS {
                if !end.tx.send(&frame, FrameMeta::default())? {
                    break;
                }
                sent += 1;
            }
            end.publish()?;
            if end.tx.lane().free_cached() < end.tx.slots_for(size) {
                // Full: the blocking path of send waits for room.
                end.send(&frame)?;
                sent += 1;
            }
        }
        let stop = [TAG_STOP, 0];
        end.send(&stop)?;
        end.publish()?;
        let s = stats(end)?;
        if s.frames != sent || s.bytes != sent * size as u64 {
            return Err(Error::Protocol {
                what: "member counted other frames than were sent",
            });
        }
        let fps = s.frames as f64 / (s.ns as f64 / 1e9);
        let per_frame = (end.triggers - t0 + end.blocks - b0 + s.triggers) as f64 / sent as f64;
        Ok((fps, per_frame, sent))
    }

    fn round_trip(end: &mut End<'_>, size: usize, secs: f64) -> Result<(f64, f64)> {
        let mut frame = vec![0xa5u8; size];
        frame[0] = TAG_ECHO;
        let start = Instant::now();
        let limit = Duration::from_secs_f64(secs);
        let mut n = 0u64;
        while start.elapsed() < limit {
            end.send(&frame)?;
            end.publish()?;
            loop {
                end.poll()?;
                if let Some(f) = end.rx.next()? {
                    if f.data.len() != size {
                        return Err(Error::Protocol {
                            what: "echo of another length",
                        });
                    }
                    break;
                }
            }
            end.release()?;
            n += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        Ok((n as f64 / secs, secs * 1e9 / n as f64))
    }

    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }

    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }

    /// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`), in ns.
    fn thread_cpu_ns() -> u64 {
        let mut ts = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec (two longs on x86_64
        // Linux, as declared) through a valid pointer to a local.
        let rc = unsafe { clock_gettime(3, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Frames/s of wall time and CPU ns per frame, each the best of five
    /// windows.
    fn local_rate(size: usize, secs: f64) -> Result<(f64, f64)> {
        let mut buf = vec![0u8; layout().bytes() + 64];
        let skip = buf.as_ptr().align_offset(64);
        let mem = SharedMem::from_slice(&mut buf[skip..]);
        init(mem, layout(), 0)?;
        let mut tx = FrameSender::new(Producer::attach(mem, layout())?, MAX_FRAME)?;
        let mut rx = FrameReceiver::new(Consumer::attach(mem, layout())?, MAX_FRAME)?;
        let frame = vec![0x33u8; size];
        // Best of five windows: other processes on the machine only ever
        // slow a window down.
        let mut best = 0f64;
        let mut best_cpu = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            let cpu = thread_cpu_ns();
            let mut n = 0u64;
            while start.elapsed().as_secs_f64() < secs / 5.0 {
                while tx.send(&frame, FrameMeta::default())? {}
                tx.publish()?;
                rx.poll()?;
                while let Some(f) = rx.next()? {
                    black_box(f.data);
                    n += 1;
                }
                rx.release()?;
            }
            best = best.max(n as f64 / start.elapsed().as_secs_f64());
            best_cpu = best_cpu.min((thread_cpu_ns() - cpu) as f64 / n.max(1) as f64);
        }
        Ok((best, best_cpu))
    }

    /// Copies/s of `size` bytes, hot cache: `memcpy` (`copy_from_slice`) or
    /// the volatile copy every lane access uses.
    fn copy_rate(size: usize, volatile: bool) -> f64 {
        let src = vec![0x11u8; size];
        let mut dst = vec![0u8; size];
        let reps = (1usize << 26) / size.max(64);
        let mut best = 0f64;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                if volatile {
                    let m = SharedMem::from_slice(&mut dst);
                    m.write_from(0, black_box(&src)).unwrap();
                } else {
                    dst.copy_from_slice(black_box(&src));
                }
                black_box(&mut dst);
            }
            best = best.max(reps as f64 / t.elapsed().as_secs_f64());
        }
        best
    }

    fn member(sock: &str) -> Result<()> {
        let mut p = SimPlatform::connect(sock, MEMBER)?;
        let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<u32>().ok());
        let gref = env("XS_RING_GREF").ok_or(Error::InvalidArgument {
            what: "XS_RING_GREF",
        })?;
        let spin = env("XS_RING_SPIN").unwrap_or(200);
        let a = Attached::attach(
            &mut p,
            ShareRef {
                owner: OWNER,
                descriptor: GrantRef(gref),
            },
        )?;
        let port = a.port().ok_or(Error::NotAMember { domid: MEMBER })?;
        let mut end = End::new(&mut p, port, a.mem(), false, spin)?;
        let (mut frames, mut bytes) = (0u64, 0u64);
        let mut first: Option<Instant> = None;
        let mut echo = vec![0u8; MAX_FRAME];
        loop {
            end.poll()?;
            loop {
                // Copy what must outlive the receiver's buffer borrow.
                let (tag, exit, len) = match end.rx.next()? {
                    None => break,
                    Some(f) => {
                        let tag = f.data[0];
                        if tag == TAG_ECHO {
                            echo[..f.data.len()].copy_from_slice(f.data);
                        }
                        (tag, f.data.get(1) == Some(&1), f.data.len())
                    }
                };
                match tag {
                    TAG_DATA => {
                        first.get_or_insert_with(Instant::now);
                        frames += 1;
                        bytes += len as u64;
                    }
                    TAG_ECHO => end.send(&echo[..len])?,
                    _ => {
                        let ns = first.map_or(0, |t| t.elapsed().as_nanos() as u64);
                        let mut s = Vec::new();
                        for v in [frames, bytes, ns, end.triggers + end.blocks] {
                            s.extend_from_slice(&v.to_le_bytes());
                        }
                        end.release()?;
                        end.send(&s)?;
                        end.publish()?;
                        if exit {
                            drop(end);
                            return a.detach(&mut p);
                        }
                        (frames, bytes, first) = (0, 0, None);
                        end.triggers = 0;
                        end.blocks = 0;
                    }
                }
            }
            end.release()?;
            end.publish()?;
        }
    }

    fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    }

    fn report(o: &Opts, cases: &[Case]) {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu = cpu_model();
        // Other work on the machine skews every figure: record it.
        let load = std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split(' ').next().unwrap_or("?").to_string())
            .unwrap_or_else(|_| "?".into());
        println!(
            "ring-bench: {nproc} CPUs ({cpu}), load {load}, lanes of {SLOTS} x {NET_SLOT_SIZE} B slots, spin {}",
            o.spin
        );
        println!(
            "{:>8} | {:>14} {:>10} {:>9} {:>11} {:>10} | {:>12} {:>9} | {:>14} {:>10} | {:>14} | {:>14} {:>12}",
            "payload",
            "one-way fr/s",
            "GB/s",
            "trig/fr",
            "trig/1000fr",
            "gcopy/MiB",
            "rtt/s",
            "rtt us",
            "memcpy cp/s",
            "GB/s",
            "volatile GB/s",
            "1-thread fr/s",
            "cpu ns/fr"
        );
        for c in cases {
            let gb = |rate: f64| rate * c.size as f64 / 1e9;
            println!(
                "{:>8} | {:>14.0} {:>10.2} {:>9.4} {:>11.2} {:>10.2} | {:>12.0} {:>9.2} | {:>14.0} {:>10.2} | {:>14.2} | {:>14.0} {:>12.1}",
                c.size,
                c.oneway_fps,
                gb(c.oneway_fps),
                c.oneway_triggers,
                c.ops.triggers_per_1000,
                c.ops.copy_segs_per_mib,
                c.rtt_per_s,
                c.rtt_ns / 1e3,
                c.memcpy_ops,
                gb(c.memcpy_ops),
                gb(c.volatile_ops),
                c.local_fps,
                c.local_cpu_ns,
            );
        }
        let Some(path) = &o.json else { return };
        let mut j = String::new();
        j.push_str("{\n");
        j.push_str(&format!(
            "  \"machine\": {{ \"nproc\": {nproc}, \"cpu_model\": \"{}\", \"loadavg_1min_at_end\": \"{load}\" }},\n",
            cpu.replace('"', "'")
        ));
        j.push_str(&format!(
            "  \"config\": {{ \"transport\": \"sim share, two processes\", \"slot_count\": {SLOTS}, \"slot_size\": {NET_SLOT_SIZE}, \"secs_per_case\": {}, \"spin\": {} }},\n",
            o.secs, o.spin
        ));
        j.push_str("  \"cases\": [\n");
        for (i, c) in cases.iter().enumerate() {
            let gb = |rate: f64| rate * c.size as f64 / 1e9;
            j.push_str(&format!(
                "    {{ \"payload\": {}, \"oneway_frames_per_s\": {:.0}, \"oneway_gb_per_s\": {:.4}, \"oneway_triggers_and_blocks_per_frame\": {:.6}, \"oneway_triggers_per_1000_frames\": {:.3}, \"oneway_grant_copy_segs_per_mib\": {:.3}, \"oneway_grant_copy_calls_per_mib\": {:.3}, \"roundtrips_per_s\": {:.0}, \"roundtrip_ns\": {:.0}, \"memcpy_copies_per_s\": {:.0}, \"memcpy_gb_per_s\": {:.4}, \"volatile_copies_per_s\": {:.0}, \"volatile_gb_per_s\": {:.4}, \"single_thread_frames_per_s\": {:.0}, \"single_thread_cpu_ns_per_frame\": {:.1} }}{}\n",
                c.size,
                c.oneway_fps,
                gb(c.oneway_fps),
                c.oneway_triggers,
                c.ops.triggers_per_1000,
                c.ops.copy_segs_per_mib,
                c.ops.copy_calls_per_mib,
                c.rtt_per_s,
                c.rtt_ns,
                c.memcpy_ops,
                gb(c.memcpy_ops),
                c.volatile_ops,
                gb(c.volatile_ops),
                c.local_fps,
                c.local_cpu_ns,
                if i + 1 < cases.len() { "," } else { "" }
            ));
        }
        j.push_str("  ]\n}\n");
        if let Some(dir) = std::path::Path::new(path).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::write(path, j) {
            Ok(()) => println!("raw figures: {path}"),
            Err(e) => eprintln!("ring-bench: cannot write {path}: {e}"),
        }
    }
}
