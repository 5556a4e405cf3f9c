//! The PVH platform self-test image: exercises every part of share-hal's
//! Xen platform on real Xen, with `share-selftest-dom0` as the other side
//! (protocol: platforms/share-pvh/SELFTEST.md).
//!
//! Each item prints `selftest: <item> ok`; the first failure prints
//! `selftest: FAIL <item>: <why>` and crashes the domain. All passed:
//! `selftest: PASS`, then power off. With `cmdline="fault"` the image
//! instead dereferences an unmapped address right after boot, to show the
//! crash report and the crashed state in `xl list`; `cmdline="overflow"`
//! overflows the boot stack into its guard page; `cmdline="gp-native"`
//! reads a non-canonical address (a #GP the CPU raises in the domain) and
//! `cmdline="gp-injected"` reads an MSR Xen does not implement (a #GP
//! that Xen injects on the way back from the MSR intercept, the path any
//! exception Xen raises for an emulated instruction takes). `cmdline="double-fault"`
//! unmaps the exception stack and faults (the #DF on its own stack);
//! `cmdline="storm=SECS"`
//! runs the clock storm (see `storm`) instead of the test.
//!
//! Only the image build (`cargo xtask images`, the one build with
//! `panic = "abort"`) is the kernel; any other build is a stub.
#![cfg_attr(panic = "abort", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(panic = "abort"))]
fn main() {
    eprintln!("pvh-selftest is a PVH image: build it with `cargo xtask images`");
    std::process::exit(2);
}

#[cfg(panic = "abort")]
mod image_main {
    use alloc::format;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use core::sync::atomic::Ordering;

    use pvh_rt::xen::{shutdown, ShutdownReason, XenPvh, XenStore};
    use pvh_rt::{println, Runtime};
    use pvh_selftest::*;
    use share_hal::platform::{
        Access, Clock, CopyPtr, CopySeg, CopyStatus, EventChannels, GrantTable, Mapping, Memory,
        PageBlock, Platform, DOM0,
    };
    use share_hal::{Error, GrantRef, Port, SharedMem};

    extern crate alloc;

    pvh_rt::entry!(main);

    type Outcome = core::result::Result<(), (&'static str, String)>;

    /// Ends the test on the first failure.
    trait Item<T> {
        fn item(self, name: &'static str) -> core::result::Result<T, (&'static str, String)>;
    }

    impl<T> Item<T> for share_hal::Result<T> {
        fn item(self, name: &'static str) -> core::result::Result<T, (&'static str, String)> {
            self.map_err(|e| (name, e.to_string()))
        }
    }

    /// Times 1 MiB moved 16 times each way: as 256 grant-copy segments of
    /// dom0's page `gref` into 256 of our pages (Xen's copy, the hypercall
    /// and the grant checks), and as one volatile copy between two sets of
    /// our own pages; prints the median per MiB.
    fn measure_copies(p: &mut XenPvh, gref: GrantRef) -> Result<(), Error> {
        const PAGES: usize = 256;
        const ROUNDS: usize = 16;
        let a = p.alloc_pages(PAGES)?;
        let b = p.alloc_pages(PAGES)?;
        let mut grant_ns = Vec::with_capacity(ROUNDS);
        let mut copy_ns = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let mut segs = Vec::with_capacity(PAGES);
            for i in 0..PAGES {
                segs.push(CopySeg {
                    src: CopyPtr::Foreign {
                        domid: DOM0,
                        gref,
                        offset: 0,
                    },
                    dst: CopyPtr::Local {
                        frame: a.frame(i).ok_or(Error::OutOfMemory)?,
                        offset: 0,
                    },
                    len: 4096,
                    status: CopyStatus::Pending,
                });
            }
            let t0 = p.now_ns();
            p.copy(&mut segs)?;
            grant_ns.push(p.now_ns() - t0);
            if segs.iter().any(|s| s.status != CopyStatus::Done) {
                return Err(Error::InvalidArgument {
                    what: "a measured grant copy segment failed",
                });
            }
            let t0 = p.now_ns();
            b.mem().copy_from(0, &a.mem(), 0, PAGES * 4096)?;
            copy_ns.push(p.now_ns() - t0);
        }
        grant_ns.sort_unstable();
        copy_ns.sort_unstable();
        println!(
            "selftest: measure: 1 MiB by grant copy (256 segments) {} us, by copy between our pages {} us (median of {ROUNDS})",
            grant_ns[ROUNDS / 2] / 1000,
            copy_ns[ROUNDS / 2] / 1000
        );
        Ok(())
    }

    fn ok(name: &str) {
        println!("selftest: {name} ok");
    }

    fn fail(name: &'static str, why: String) -> (&'static str, String) {
        (name, why)
    }

    /// Waits for triggers on `port` until `done` holds, or `secs` pass.
    fn wait_until(
        p: &mut XenPvh,
        port: Port,
        secs: u64,
        name: &'static str,
        done: &mut dyn FnMut() -> bool,
    ) -> Outcome {
        let deadline = p.now_ns() + secs * 1_000_000_000;
        while !done() {
            match p.wait(Some(deadline), &mut |_| {}) {
                Ok(()) => {}
                Err(Error::TimedOut) => {
                    return Err(fail(name, format!("nothing from dom0 within {secs} s")))
                }
                Err(e) => return Err(fail(name, e.to_string())),
            }
        }
        let _ = port;
        Ok(())
    }

    fn deliberate_fault() -> ! {
        println!("selftest: deliberate fault: reading unmapped address 0x40_0000_0000");
        let bad = 0x40_0000_0000usize as *const u64;
        // SAFETY: not safe on purpose: the address is outside the identity
        // map, so this read page-faults and the crash handler reports it.
        let v = unsafe { bad.read_volatile() };
        println!("selftest: FAIL the fault did not fault (read {v:#x})");
        shutdown(ShutdownReason::Poweroff)
    }

    fn deliberate_gp(injected: bool) -> ! {
        if injected {
            println!(
                "selftest: deliberate #GP: RDMSR {UNKNOWN_MSR:#x}, which Xen refuses with #GP"
            );
            let (lo, hi): (u32, u32);
            // SAFETY: not safe on purpose: the MSR exists nowhere, so Xen
            // (which intercepts every MSR outside the permission map)
            // injects #GP and the crash handler reports it.
            unsafe {
                core::arch::asm!("rdmsr", in("ecx") UNKNOWN_MSR, out("eax") lo, out("edx") hi,
                                 options(nomem, nostack))
            };
            println!("selftest: FAIL RDMSR {UNKNOWN_MSR:#x} did not fault (read {hi:#x}:{lo:#x})");
        } else {
            println!(
                "selftest: deliberate #GP: reading non-canonical address 0x8000_0000_0000_0000"
            );
            let bad = 0x8000_0000_0000_0000usize as *const u64;
            // SAFETY: not safe on purpose: a non-canonical address raises
            // #GP, which the crash handler reports.
            let v = unsafe { bad.read_volatile() };
            println!("selftest: FAIL the non-canonical read did not fault (read {v:#x})");
        }
        shutdown(ShutdownReason::Poweroff)
    }

    /// An MSR number no CPU or hypervisor defines.
    const UNKNOWN_MSR: u32 = 0x2bad_0001;

    /// Recurses until the boot stack runs into its guard page.
    fn recurse(n: u64) -> u64 {
        let frame = core::hint::black_box([n; 64]);
        if n == u64::MAX {
            return 0;
        }
        recurse(n + 1).wrapping_add(frame[n as usize % 64])
    }

    /// The clock storm: for `secs` seconds, what a busy event loop does
    /// (netback-uk's step loop when its switch has work every round): read
    /// the clock and poll the open ports with a deadline that has passed,
    /// so no hypercall is made and every round is two RDTSCs. Prints the
    /// TSC mode Xen gave the domain (whether RDTSC exits to Xen) and the
    /// cost of a round, every 5 s, then `selftest: storm PASS`.
    fn storm(rt: &Runtime, secs: u64) -> Outcome {
        match pvh_rt::xen::time::tsc_mode() {
            Some(m) => println!(
                "selftest: storm: tsc_mode {} ({}), RDTSC {}, guest TSC {} kHz",
                m.mode,
                m.mode_name(),
                if m.emulated {
                    "emulated (exits to Xen)"
                } else {
                    "native"
                },
                m.khz
            ),
            None => println!("selftest: storm: Xen reports no TSC mode"),
        }
        let (mut p, _store) = rt.platform().item("platform bring-up")?;
        let _port = p.alloc_unbound(DOM0).item("event channel alloc_unbound")?;
        let t0 = p.now_ns();
        let end = t0 + secs * 1_000_000_000;
        let mut next_report = t0 + 5_000_000_000;
        let (mut rounds, mut last_rounds, mut last_t) = (0u64, 0u64, t0);
        loop {
            let now = p.now_ns();
            if now >= end {
                break;
            }
            match p.wait(Some(now), &mut |_| {}) {
                Err(Error::TimedOut) | Ok(()) => {}
                Err(e) => return Err(fail("storm wait", e.to_string())),
            }
            rounds += 1;
            if now >= next_report {
                let n = rounds - last_rounds;
                println!(
                    "selftest: storm: {} s, {rounds} rounds, {} ns per round",
                    (now - t0) / 1_000_000_000,
                    (now - last_t) / n.max(1)
                );
                (last_rounds, last_t) = (rounds, now);
                next_report += 5_000_000_000;
            }
        }
        println!(
            "selftest: storm: {rounds} rounds in {secs} s ({} ns per round)",
            secs * 1_000_000_000 / rounds.max(1)
        );
        Ok(())
    }

    fn main(rt: Runtime) -> ! {
        println!(
            "pvh-selftest {}: share-hal Xen PVH platform self-test",
            env!("CARGO_PKG_VERSION")
        );
        if rt.boot.has_flag("fault") {
            deliberate_fault();
        }
        if rt.boot.has_flag("gp-native") {
            deliberate_gp(false);
        }
        if rt.boot.has_flag("gp-injected") {
            deliberate_gp(true);
        }
        if rt.boot.has_flag("double-fault") {
            println!(
                "selftest: deliberate double fault: exception stack unmapped, then a page fault"
            );
            // SAFETY: not safe on purpose: the fault below cannot be
            // delivered, so the CPU raises #DF on its own stack.
            unsafe { pvh_rt::traps::break_exception_stack() };
            deliberate_fault();
        }
        if rt.boot.has_flag("overflow") {
            println!("selftest: deliberate stack overflow");
            let depth = recurse(1);
            println!("selftest: FAIL the stack did not overflow ({depth})");
            shutdown(ShutdownReason::Poweroff)
        }
        if let Some(v) = rt.boot.value("storm") {
            let secs = v.parse::<u64>().unwrap_or(30).clamp(1, 3600);
            match storm(&rt, secs) {
                Ok(()) => {
                    println!("selftest: storm PASS");
                    shutdown(ShutdownReason::Poweroff)
                }
                Err((name, why)) => {
                    println!("selftest: FAIL {name}: {why}");
                    shutdown(ShutdownReason::Crash)
                }
            }
        }
        match run(&rt) {
            Ok(()) => {
                println!("selftest: PASS");
                shutdown(ShutdownReason::Poweroff)
            }
            Err((name, why)) => {
                println!("selftest: FAIL {name}: {why}");
                shutdown(ShutdownReason::Crash)
            }
        }
    }

    fn run(rt: &Runtime) -> Outcome {
        let (mut p, mut store): (XenPvh, XenStore) = rt.platform().item("platform bring-up")?;
        println!(
            "selftest: platform up: domain {}, {} grant entries, heap {} KiB",
            p.domid(),
            p.grant_capacity(),
            rt.heap_bytes / 1024
        );
        ok("xenstore read (domid)");

        // Clock and timed wait: a port is open but nobody knows it yet, so
        // the wait must end by its deadline, not earlier, not much later.
        let port = p.alloc_unbound(DOM0).item("event channel alloc_unbound")?;
        ok("event channel alloc_unbound");
        let t0 = p.now_ns();
        let deadline = t0 + TIMED_WAIT_MS * 1_000_000;
        match p.wait(Some(deadline), &mut |_| {}) {
            Err(Error::TimedOut) => {}
            other => {
                return Err(fail(
                    "timed wait",
                    format!("expected a timeout, got {other:?}"),
                ))
            }
        }
        let waited_ms = (p.now_ns() - t0) / 1_000_000;
        if waited_ms < TIMED_WAIT_MS || waited_ms > TIMED_WAIT_MS + TIMED_WAIT_SLACK_MS {
            return Err(fail(
                "timed wait",
                format!("waited {waited_ms} ms for {TIMED_WAIT_MS}"),
            ));
        }
        println!("selftest: timed wait ok ({waited_ms} ms for a {TIMED_WAIT_MS} ms deadline)");

        // The mailbox: granted to dom0, pattern A for it to read.
        let mailbox = p.alloc_pages(1).item("alloc pages")?;
        let m: SharedMem<'_> = mailbox.mem();
        let mut a = [0u8; field::PATTERN_A_LEN];
        fill(SEED_A, &mut a);
        m.write_from(field::PATTERN_A, &a).item("mailbox")?;
        m.write_u32(field::MAGIC, MAGIC).item("mailbox")?;
        let frame = mailbox.frame(0).ok_or(fail("grant", "no frame".into()))?;
        let gref = p
            .grant(frame, DOM0, Access::ReadWrite)
            .item("grant to dom0")?;
        m.store_u32(field::UK_STATE, uk_state::PUBLISHED, Ordering::Release)
            .item("mailbox")?;
        let published = Published {
            gref: gref.0,
            port: port.0,
        };
        store
            .write(KEY, &published.to_string())
            .item("xenstore write")?;
        println!("selftest: published {KEY} = {published}");

        // dom0 read pattern A, bound the port, granted C and D.
        wait_until(
            &mut p,
            port,
            120,
            "dom0 reads the granted page",
            &mut || m.load_u32(field::DOM0_STATE, Ordering::Acquire) == Ok(dom0_state::GRANTED),
        )?;
        ok("grant to dom0 (dom0 read pattern A)");
        ok("event channel: dom0 bound our port and triggered it");
        // Peer-written grant references: read once each, used as given
        // (Xen checks them).
        let gref_c = GrantRef(
            m.load_u32(field::GREF_C, Ordering::Acquire)
                .item("mailbox")?,
        );
        let gref_d = GrantRef(
            m.load_u32(field::GREF_D, Ordering::Acquire)
                .item("mailbox")?,
        );

        // Bind the port dom0 allocated for us and trigger it once.
        let theirs = Port(
            m.load_u32(field::DOM0_PORT, Ordering::Acquire)
                .item("mailbox")?,
        );
        let bound = p
            .bind_interdomain(DOM0, theirs)
            .item("event channel bind_interdomain")?;
        p.notify(bound).item("event channel notify")?;
        println!("selftest: event channel bind_interdomain ok (dom0 port {theirs} is our {bound})");

        // Map C and check it.
        let mapping = p
            .map(DOM0, &[gref_c], Access::ReadOnly)
            .item("map dom0's grant")?;
        let mut c = [0u8; 4096];
        mapping
            .mem()
            .read_into(0, &mut c)
            .item("map dom0's grant")?;
        if let Some(i) = first_mismatch(SEED_C, &c) {
            return Err(fail(
                "map dom0's grant",
                format!("pattern C differs at byte {i}"),
            ));
        }
        p.unmap(mapping).item("unmap")?;
        ok("map and unmap dom0's grant");

        // Grant copy in (C -> local) and out (local -> D), one batch each
        // way, in page halves so a batch has several segments.
        let local = p.alloc_pages(2).item("alloc pages")?;
        let (f0, f1) = (local.frame(0).unwrap(), local.frame(1).unwrap());
        let mut segs = [0u16, 2048].map(|off| CopySeg {
            src: CopyPtr::Foreign {
                domid: DOM0,
                gref: gref_c,
                offset: off,
            },
            dst: CopyPtr::Local {
                frame: f0,
                offset: off,
            },
            len: 2048,
            status: CopyStatus::Pending,
        });
        p.copy(&mut segs).item("grant copy in")?;
        for s in &segs {
            if s.status != CopyStatus::Done {
                return Err(fail("grant copy in", format!("segment {s:?}")));
            }
        }
        local.mem().read_into(0, &mut c).item("grant copy in")?;
        if let Some(i) = first_mismatch(SEED_C, &c) {
            return Err(fail(
                "grant copy in",
                format!("pattern C differs at byte {i}"),
            ));
        }
        ok("grant copy from dom0's page");
        let mut d = [0u8; 4096];
        fill(SEED_D, &mut d);
        local.mem().write_from(4096, &d).item("grant copy out")?;
        let mut segs = [0u16, 1024, 2048, 3072].map(|off| CopySeg {
            src: CopyPtr::Local {
                frame: f1,
                offset: off,
            },
            dst: CopyPtr::Foreign {
                domid: DOM0,
                gref: gref_d,
                offset: off,
            },
            len: 1024,
            status: CopyStatus::Pending,
        });
        p.copy(&mut segs).item("grant copy out")?;
        for s in &segs {
            if s.status != CopyStatus::Done {
                return Err(fail("grant copy out", format!("segment {s:?}")));
            }
        }
        // A segment that crosses a page is refused locally, the batch goes on.
        let mut bad = [CopySeg {
            src: CopyPtr::Local {
                frame: f1,
                offset: 4000,
            },
            dst: CopyPtr::Foreign {
                domid: DOM0,
                gref: gref_d,
                offset: 0,
            },
            len: 200,
            status: CopyStatus::Pending,
        }];
        p.copy(&mut bad).item("grant copy check")?;
        if !matches!(
            bad[0].status,
            CopyStatus::Failed(Error::InvalidArgument { .. })
        ) {
            return Err(fail(
                "grant copy check",
                format!("crossing segment gave {:?}", bad[0].status),
            ));
        }
        m.store_u32(field::UK_STATE, uk_state::COPIED, Ordering::Release)
            .item("mailbox")?;
        p.notify(port).item("event channel notify")?;
        wait_until(&mut p, port, 60, "dom0 checks page D", &mut || {
            m.load_u32(field::DOM0_STATE, Ordering::Acquire) == Ok(dom0_state::CHECKED_D)
        })?;
        ok("grant copy to dom0's page (dom0 found pattern D)");

        // What a disk server's 1 MiB costs here: one grant copy of 256
        // segments from a granted page, against one copy of the same bytes
        // between our own pages (docs/performance.md reads these lines).
        measure_copies(&mut p, gref_c).item("copy costs")?;

        // Ping-pong: answer each ping with its number.
        let t0 = p.now_ns();
        let mut answered = 0u32;
        while answered < PINGS {
            let mut ping = 0;
            wait_until(&mut p, port, 30, "event channel ping-pong", &mut || {
                ping = m.load_u32(field::PING, Ordering::Acquire).unwrap_or(0);
                ping == answered + 1
            })?;
            m.store_u32(field::PONG, ping, Ordering::Release)
                .item("mailbox")?;
            p.notify(port).item("event channel notify")?;
            answered = ping;
        }
        let us = (p.now_ns() - t0) / 1000;
        println!(
            "selftest: event channel ping-pong ok ({PINGS} round trips, {} us each)",
            us / u64::from(PINGS)
        );

        // dom0 is done and unmaps the mailbox: revoke succeeds once it has
        // (GrantInUse until then).
        wait_until(&mut p, port, 60, "dom0 done", &mut || {
            m.load_u32(field::DOM0_STATE, Ordering::Acquire) == Ok(dom0_state::DONE)
        })?;
        let deadline = p.now_ns() + 30_000_000_000;
        let mut in_use = 0;
        loop {
            match p.revoke(gref) {
                Ok(()) => break,
                Err(Error::GrantInUse { .. }) if p.now_ns() < deadline => {
                    in_use += 1;
                    let _ = p.wait(Some(p.now_ns() + 50_000_000), &mut |_| {});
                }
                Err(e) => return Err(fail("revoke", e.to_string())),
            }
        }
        println!("selftest: revoke ok (in use {in_use} times before dom0 unmapped)");
        match p.revoke(gref) {
            Err(Error::InvalidArgument { .. }) => {}
            other => return Err(fail("revoke twice", format!("{other:?}"))),
        }
        p.close(port).item("event channel close")?;
        p.close(bound).item("event channel close")?;
        match p.notify(port) {
            Err(Error::BadPort { .. }) => {}
            other => return Err(fail("notify after close", format!("{other:?}"))),
        }
        ok("event channel close");
        drop(local);
        drop(mailbox);
        Ok(())
    }
}
