//! `share-selftest-dom0 DOMID`: dom0's side of the PVH platform self-test
//! (platforms/share-pvh/SELFTEST.md), over share-hal's Linux userspace
//! platform (`/dev/xen/gntdev`, `gntalloc`, `evtchn`).
//!
//! Reads the domU's published mailbox grant and port from xenstore (with
//! `xenstore-read`), then walks the protocol: checks pattern A in the
//! granted page, grants pages C and D, checks pattern D after the domU's
//! grant copy, plays event channel ping-pong, and says it is done. Prints
//! one line per item; exits non-zero on the first failure.

#[cfg(feature = "dom0")]
fn main() {
    if let Err(e) = dom0::run() {
        eprintln!("dom0 selftest: FAIL {e}");
        std::process::exit(1);
    }
    println!("dom0 selftest: PASS");
}

#[cfg(not(feature = "dom0"))]
fn main() {}

#[cfg(feature = "dom0")]
mod dom0 {
    use std::process::Command;
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use pvh_selftest::*;
    use share_hal::platform::{Access, DomId, EventChannels, GrantTable, Mapping, Port, DOM0};
    use share_hal::{Error, GrantRef, SharedMem};
    use share_linux::LinuxXen;

    type Result<T> = std::result::Result<T, String>;

    fn ctx<T>(what: &str, r: share_hal::Result<T>) -> Result<T> {
        r.map_err(|e| format!("{what}: {e}"))
    }

    /// Waits for triggers until `done` holds, or `secs` pass; records the
    /// ports that fired in `fired`.
    fn wait_until(
        x: &mut LinuxXen,
        secs: u64,
        what: &str,
        fired: &mut Vec<Port>,
        done: &mut dyn FnMut() -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        while !done() {
            let left = Duration::from_secs(secs).saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!("{what}: nothing from the domU within {secs} s"));
            }
            let deadline = share_hal::platform::Clock::now_ns(x) + left.as_nanos() as u64;
            match x.wait(Some(deadline), &mut |p| fired.push(p)) {
                Ok(()) | Err(Error::TimedOut) => {}
                Err(e) => return Err(format!("{what}: {e}")),
            }
        }
        Ok(())
    }

    fn read_key(domid: DomId) -> Result<Published> {
        let path = format!("/local/domain/{domid}/{KEY}");
        let out = Command::new("xenstore-read")
            .arg(&path)
            .output()
            .map_err(|e| format!("running xenstore-read: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "xenstore-read {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let value = String::from_utf8_lossy(&out.stdout);
        Published::parse(value.trim()).ok_or(format!("{path} holds {value:?}"))
    }

    fn check_pattern(
        mem: &SharedMem<'_>,
        at: usize,
        len: usize,
        seed: u8,
        what: &str,
    ) -> Result<()> {
        let mut buf = vec![0u8; len];
        ctx(what, mem.read_into(at, &mut buf))?;
        match first_mismatch(seed, &buf) {
            None => Ok(()),
            Some(i) => Err(format!(
                "{what}: pattern differs at byte {i} ({:#x})",
                buf[i]
            )),
        }
    }

    pub fn run() -> Result<()> {
        let domid: DomId = std::env::args()
            .nth(1)
            .and_then(|a| a.parse().ok())
            .ok_or("usage: share-selftest-dom0 DOMID")?;
        let published = read_key(domid)?;
        println!("dom0: {KEY} of domain {domid} = {published}");
        let mut x = ctx("opening /dev/xen", LinuxXen::open(DOM0))?;

        let mailbox = ctx(
            "mapping the mailbox",
            x.map(domid, &[GrantRef(published.gref)], Access::ReadWrite),
        )?;
        let m = mailbox.mem();
        let magic = ctx("mailbox", m.load_u32(field::MAGIC, Ordering::Acquire))?;
        if magic != MAGIC {
            return Err(format!("mailbox magic {magic:#x}"));
        }
        check_pattern(
            &m,
            field::PATTERN_A,
            field::PATTERN_A_LEN,
            SEED_A,
            "page granted by the domU",
        )?;
        println!("dom0: read the page the domU granted: ok");

        let local = ctx(
            "binding the domU's port",
            x.bind_interdomain(domid, Port(published.port)),
        )?;
        let mut fired = Vec::new();
        let theirs = ctx("allocating a port for the domU", x.alloc_unbound(domid))?;
        ctx(
            "mailbox",
            m.store_u32(field::DOM0_PORT, theirs.0, Ordering::Relaxed),
        )?;
        let pages = ctx(
            "granting pages C and D",
            x.alloc_granted(domid, 2, Access::ReadWrite),
        )?;
        let mut c = vec![0u8; 4096];
        fill(SEED_C, &mut c);
        ctx("page C", pages.mem().write_from(0, &c))?;
        let grefs = pages.grefs().to_vec();
        ctx(
            "mailbox",
            m.store_u32(field::GREF_C, grefs[0].0, Ordering::Relaxed),
        )?;
        ctx(
            "mailbox",
            m.store_u32(field::GREF_D, grefs[1].0, Ordering::Relaxed),
        )?;
        ctx(
            "mailbox",
            m.store_u32(field::DOM0_STATE, dom0_state::GRANTED, Ordering::Release),
        )?;
        ctx("notify", x.notify(local))?;
        println!(
            "dom0: granted C={} D={}, bound port {local}",
            grefs[0], grefs[1]
        );

        wait_until(
            &mut x,
            120,
            "the domU's grant copies",
            &mut fired,
            &mut || m.load_u32(field::UK_STATE, Ordering::Acquire) == Ok(uk_state::COPIED),
        )?;
        check_pattern(
            &pages.mem(),
            4096,
            4096,
            SEED_D,
            "page D after the domU's grant copy",
        )?;
        println!("dom0: found pattern D the domU grant-copied: ok");
        // The domU triggered `theirs` before its copies, but dom0 reads
        // pending ports only while it waits, and the copies may have been
        // done before dom0 waited at all: collect what is pending now.
        let start = Instant::now();
        while !fired.contains(&theirs) {
            let left = Duration::from_secs(30).saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "the domU never triggered port {theirs}, which dom0 allocated for it to bind"
                ));
            }
            let deadline = share_hal::platform::Clock::now_ns(&x) + left.as_nanos() as u64;
            match x.wait(Some(deadline), &mut |p| fired.push(p)) {
                Ok(()) | Err(Error::TimedOut) => {}
                Err(e) => return Err(format!("waiting for the domU's trigger: {e}")),
            }
        }
        println!("dom0: the domU bound dom0's port {theirs} and triggered it: ok");
        ctx(
            "mailbox",
            m.store_u32(field::DOM0_STATE, dom0_state::CHECKED_D, Ordering::Release),
        )?;
        ctx("notify", x.notify(local))?;

        let t0 = Instant::now();
        for ping in 1..=PINGS {
            ctx("mailbox", m.store_u32(field::PING, ping, Ordering::Release))?;
            ctx("notify", x.notify(local))?;
            wait_until(&mut x, 30, "ping-pong", &mut fired, &mut || {
                m.load_u32(field::PONG, Ordering::Acquire) == Ok(ping)
            })?;
        }
        println!(
            "dom0: event channel ping-pong: ok ({PINGS} round trips, {} us each)",
            t0.elapsed().as_micros() / u128::from(PINGS)
        );

        ctx(
            "mailbox",
            m.store_u32(field::DOM0_STATE, dom0_state::DONE, Ordering::Release),
        )?;
        ctx("notify", x.notify(local))?;
        ctx("unmapping the mailbox", x.unmap(mailbox))?;
        ctx("closing the port", x.close(local))?;
        ctx("closing the port", x.close(theirs))?;
        // The domU unmapped C before copying; the grants end here.
        drop(pages);
        Ok(())
    }
}
