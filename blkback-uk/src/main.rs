//! The blkback-uk PVH image: boots, connects its own Xen disks (the `vbd`
//! store: the `disk = [...]` of its xl config), takes its boot modules as
//! RAM disks (the `ram` store: `ramdisk=` of its xl config, **volatile**),
//! publishes its vdevice page and runs the disk server (the library of
//! this crate) over them.
//!
//! Disk numbers (the `param` of dom0's owner entries, `--disk` of the
//! vdevice tool): first the vbds, disk `i` being the `i`-th vbd in the
//! order xenstore lists `device/vbd/` (libxl creates them in the order of
//! the xl config); then the boot modules in the loader's order. So adding
//! a `ramdisk=` to a config never renumbers its vbds. A vbd whose
//! handshake fails keeps its index and refuses every entry naming it, so
//! the others keep their numbers.
//!
//! Only the image build (`cargo xtask images`, the one build with
//! `panic = "abort"`) is the kernel; any other build of this binary (e.g.
//! `cargo clippy --all-features`) is a stub that says so.
#![cfg_attr(panic = "abort", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(panic = "abort"))]
fn main() {
    eprintln!("blkback-uk is a PVH image: build it with `cargo xtask images`");
    std::process::exit(2);
}

#[cfg(panic = "abort")]
mod image_main {
    extern crate alloc;

    use alloc::string::String;
    use alloc::vec::Vec;

    use blkback_uk::ram::RamStore;
    use blkback_uk::store::{Io, SharedIo, Store, StoreError, StoreInfo, SECTOR_SIZE};
    use blkback_uk::vbd::{self, SharedBounce, VbdBounce, VbdPages, VbdStore};
    use blkback_uk::wiring::poll_vdevice;
    use blkback_uk::{Server, ServerConfig};
    use pvh_rt::image;
    use pvh_rt::{println, Runtime};
    use share_hal::platform::{Clock, EventChannels};
    use share_hal::vdevice::Change;
    use share_hal::{Error, SharedMem};
    use share_pvh::{shutdown, time, Doorbell, ShutdownReason, XenPages, XenPvh, XenStore};

    pvh_rt::entry!(main);

    /// Bounce pages of the vbds of one backend domain (one set for all of
    /// them: a batch runs on one disk at a time), tried in this order
    /// until one fits. 1024 (4 MiB): the data of a server batch of four
    /// 1 MiB requests (all in flight at dom0, where one was the limit of
    /// 1 MiB I/O: docs/performance.md); with a vbd's 32 indirect pages
    /// 1056 grants, the most Linux's blkback keeps persistent per ring
    /// (`max_persistent_grants`).
    const VBD_BOUNCE_PAGES: [usize; 3] = [1024, 264, 11];

    /// The server's bounce pages (a batch: four 1 MiB requests, 1024 data
    /// pages, and their 4 indirect pages) and largest indirect request
    /// (1 MiB): the server's data buffers are 2 x 1032 pages, about 8 MiB.
    /// In a domain with less memory, one 1 MiB request per batch (2 x 264
    /// pages, 2 MiB).
    const SERVER_SIZES: [ServerConfig; 2] = [
        ServerConfig {
            bounce_pages: 1032,
            max_indirect_segments: 256,
        },
        ServerConfig {
            bounce_pages: 264,
            max_indirect_segments: 256,
        },
    ];

    /// Heap left for what serving allocates besides the data buffers
    /// (shares, batches; the four-disk peak was under 1 MiB).
    const SERVING_HEAP: usize = 1024 * 1024;

    /// The largest server that leaves [`SERVING_HEAP`] of the heap free.
    fn server_config() -> ServerConfig {
        let (_, free) = pvh_rt::heap::usage();
        let fits = |c: &&ServerConfig| {
            2 * c.bounce_pages * share_hal::platform::PAGE_SIZE + SERVING_HEAP <= free
        };
        let last = SERVER_SIZES[SERVER_SIZES.len() - 1];
        *SERVER_SIZES.iter().find(fits).unwrap_or(&last)
    }

    /// A disk of this image.
    enum Disk {
        Vbd(VbdStore<XenPages, Doorbell>),
        /// A boot module, served in place: volatile, gone with the domain.
        Ram(RamStore<&'static mut [u8]>),
        /// Its handshake failed: every entry naming it is refused.
        Absent,
    }

    impl Store for Disk {
        fn info(&self) -> StoreInfo {
            match self {
                Disk::Vbd(s) => s.info(),
                Disk::Ram(s) => s.info(),
                Disk::Absent => StoreInfo {
                    capacity: 0,
                    read_only: true,
                    flush: false,
                    fua: false,
                    discard: false,
                },
            }
        }

        fn execute(&mut self, ios: &mut [Io<'_>]) {
            match self {
                Disk::Vbd(s) => s.execute(ios),
                Disk::Ram(s) => s.execute(ios),
                Disk::Absent => {
                    for io in ios.iter_mut() {
                        io.result = Err(StoreError::Io { errno: 19 });
                    }
                }
            }
        }

        fn takes_shared(&self) -> bool {
            match self {
                Disk::Ram(s) => s.takes_shared(),
                Disk::Vbd(s) => s.takes_shared(),
                _ => false,
            }
        }

        fn lent_pages(&self) -> Option<alloc::rc::Rc<dyn core::any::Any>> {
            match self {
                Disk::Vbd(s) => s.lent_pages(),
                _ => None,
            }
        }

        fn execute_shared(&mut self, mem: &SharedMem<'_>, ios: &mut [SharedIo]) {
            match self {
                Disk::Ram(s) => s.execute_shared(mem, ios),
                Disk::Vbd(s) => s.execute_shared(mem, ios),
                // Never asked (takes_shared): refused, not served.
                _ => {
                    for io in ios.iter_mut() {
                        io.result = Err(StoreError::Unsupported);
                    }
                }
            }
        }
    }

    /// The bounce pages granted to `backend`, made (and kept in `sets`)
    /// when its first vbd connects.
    fn bounce_for(
        pvh: &mut XenPvh,
        sets: &mut Vec<SharedBounce<XenPages>>,
        backend: u16,
    ) -> Result<SharedBounce<XenPages>, String> {
        if let Some(b) = sets.iter().find(|b| b.borrow().backend() == backend) {
            return Ok(b.clone());
        }
        let mut last = None;
        for count in VBD_BOUNCE_PAGES {
            match VbdBounce::new(pvh, backend, count) {
                Ok(b) => {
                    println!(
                        "blkback-uk: {count} bounce pages granted to backend domain {backend}, for all its vbds"
                    );
                    sets.push(b.clone());
                    return Ok(b);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(alloc::format!(
            "granting bounce pages to backend domain {backend}: {}",
            last.map_or(String::new(), |e| alloc::format!("{e}"))
        ))
    }

    fn connect(
        pvh: &mut XenPvh,
        xs: &mut XenStore,
        sets: &mut Vec<SharedBounce<XenPages>>,
        dev: &str,
    ) -> Result<Disk, String> {
        let backend = xs
            .read(&alloc::format!("{dev}/backend-id"))
            .ok()
            .and_then(|v| v.trim().parse::<u16>().ok())
            .ok_or_else(|| alloc::format!("{dev}: no usable backend-id"))?;
        let bounce = bounce_for(pvh, sets, backend).map_err(|e| alloc::format!("{dev}: {e}"))?;
        let pages = VbdPages::new(pvh, backend)
            .map_err(|e| alloc::format!("{dev}: granting the ring and indirect pages: {e}"))?;
        let bell = pvh
            .doorbell(pages.port())
            .map_err(|e| alloc::format!("{dev}: {e}"))?;
        let info = vbd::handshake(xs, dev, &pages, &time::now_ns, &mut |deadline| {
            // Backends do not notify state changes: a bounded sleep.
            let _ = bell.wait(deadline);
        })
        .map_err(|e| alloc::format!("{e}"))?;
        VbdStore::new(pages, info, bell, bounce)
            .map(Disk::Vbd)
            .map_err(|e| alloc::format!("{dev}: {e}"))
    }

    /// Connects each vbd listed under `device/vbd` that is not in `known`
    /// yet, as the next disk (disks are numbered in the order first seen,
    /// never renumbered: dom0's entries keep naming the disk they named).
    /// A vbd that is taken away keeps its number (its I/O fails).
    fn attach_new(
        pvh: &mut XenPvh,
        store: &mut XenStore,
        known: &mut Vec<String>,
        sets: &mut Vec<SharedBounce<XenPages>>,
        server: &mut Server<XenPvh, Disk>,
    ) {
        let devs = match vbd::devices(store) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("blkback-uk: listing device/vbd failed: {e}");
                return;
            }
        };
        // Bounded by the listing (itself bounded by the xenstore reply).
        for dev in devs {
            if known.contains(&dev) {
                continue;
            }
            let i = server.disk_count();
            let disk = match connect(pvh, store, sets, &dev) {
                Ok(Disk::Vbd(s)) => {
                    let v = s.vbd();
                    println!(
                        "blkback-uk: disk {i}: vbd {} (backend domain {}) attached at run time: {} sectors ({} MiB), {}, persistent grants {}, indirect segments {}",
                        v.vdev,
                        v.backend,
                        v.sectors,
                        v.sectors / 2048,
                        if v.read_only { "read-only" } else { "read-write" },
                        if v.persistent { "yes" } else { "no" },
                        v.max_indirect_segments
                    );
                    Disk::Vbd(s)
                }
                Ok(other) => other,
                Err(e) => {
                    println!("blkback-uk: disk {i}: not connected: {e}");
                    Disk::Absent
                }
            };
            server.add_disk(disk);
            known.push(dev);
        }
    }

    fn main(mut rt: Runtime) -> ! {
        println!(
            "blkback-uk {}: xen-share block backend",
            env!("CARGO_PKG_VERSION")
        );
        #[cfg(feature = "hostile")]
        {
            println!("{}", blkback_uk::hostile::MARKER);
            match rt.boot.value("hostile").map(blkback_uk::hostile::parse) {
                Some(Some((mode, after))) => {
                    println!("blkback-uk: hostile mode {mode:?} after {after} request(s)");
                    blkback_uk::hostile::set(mode, after);
                }
                Some(None) => println!("blkback-uk: unknown hostile= mode: honest"),
                None => println!("blkback-uk: no hostile= mode: honest"),
            }
        }
        let modules = rt.take_boot_modules();
        let image::Domain {
            mut pvh,
            mut store,
            mut vdevice,
        } = image::bring_up(&rt, "blkback-uk");
        let devs = vbd::devices(&mut store).unwrap_or_else(|e| {
            log::error!("blkback-uk: listing device/vbd failed: {e}");
            Vec::new()
        });
        let mut disks = Vec::new();
        let mut bounce_sets = Vec::new();
        for (i, dev) in devs.iter().enumerate() {
            match connect(&mut pvh, &mut store, &mut bounce_sets, dev) {
                Ok(Disk::Vbd(s)) => {
                    let v = s.vbd();
                    println!(
                        "blkback-uk: disk {i}: vbd {} (backend domain {}): {} sectors ({} MiB), {}, flush {:?}, port {}, persistent grants {}, indirect segments {}",
                        v.vdev,
                        v.backend,
                        v.sectors,
                        v.sectors / 2048,
                        if v.read_only { "read-only" } else { "read-write" },
                        v.flush,
                        s.port().0,
                        if v.persistent { "yes" } else { "no" },
                        v.max_indirect_segments
                    );
                    disks.push(Disk::Vbd(s));
                }
                Ok(other) => disks.push(other),
                Err(e) => {
                    println!("blkback-uk: disk {i}: not connected: {e}");
                    disks.push(Disk::Absent)
                }
            }
        }
        for m in modules {
            let i = disks.len();
            let ram = RamStore::over(m.data, false);
            let sectors = ram.info().capacity;
            if sectors == 0 {
                println!(
                    "blkback-uk: disk {i}: boot module {} not served: smaller than a sector",
                    m.index
                );
                disks.push(Disk::Absent);
                continue;
            }
            println!(
                "blkback-uk: disk {i}: ram from boot module {} at {:#x}: {sectors} sectors ({} KiB{}), read-write, VOLATILE (gone when this domain stops)",
                m.index,
                m.paddr,
                sectors * SECTOR_SIZE as u64 / 1024,
                match ram.tail() {
                    0 => String::new(),
                    t => alloc::format!(", last {t} bytes not served: not a whole sector"),
                }
            );
            disks.push(Disk::Ram(ram));
        }
        let n = disks.len();
        let mut known = devs;
        let config = server_config();
        println!(
            "blkback-uk: {} bounce pages for the server's batches",
            config.bounce_pages
        );
        let mut server = match Server::new(&mut pvh, disks, config) {
            Ok(s) => s,
            Err(e) => {
                log::error!("blkback-uk: setting up the server failed: {e}");
                shutdown(ShutdownReason::Crash)
            }
        };
        let (used, free) = pvh_rt::heap::usage();
        println!(
            "blkback-uk: ready: {n} disk(s), heap {} KiB used, {} KiB free",
            used / 1024,
            free / 1024
        );
        let vport = vdevice.port();
        let mut last_reap = pvh.now_ns();
        let mut heap_peak = used;
        loop {
            let progress = server.service(&mut pvh);
            let deadline = if progress.more {
                pvh.now_ns()
            } else {
                pvh.now_ns().saturating_add(1_000_000_000)
            };
            let mut vdevice_fired = false;
            match pvh.wait(Some(deadline), &mut |port| vdevice_fired |= port == vport) {
                Ok(()) | Err(Error::TimedOut) => {}
                Err(e) => {
                    log::error!("blkback-uk: waiting for triggers failed: {e}");
                    shutdown(ShutdownReason::Crash)
                }
            }
            if vdevice_fired {
                // A vbd given at run time (`xl block-attach`, as `vdevice
                // --create block` does) is connected before the change
                // that may name it.
                attach_new(
                    &mut pvh,
                    &mut store,
                    &mut known,
                    &mut bounce_sets,
                    &mut server,
                );
                match poll_vdevice(&mut vdevice, &mut pvh, &mut server) {
                    Ok(Some(Change {
                        serial,
                        index,
                        status,
                        new,
                        ..
                    })) => {
                        println!(
                            "blkback-uk: vdevice change {serial}: entry {index} ({:?} for domain {}, disk {}): status {status}",
                            new.kind, new.peer, new.param
                        );
                        // Memory in use as shares come and go
                        // (docs/performance.md, "Image size and memory").
                        let (used, free) = pvh_rt::heap::usage();
                        println!(
                            "blkback-uk: heap {} KiB used, {} KiB free, {} share(s) served",
                            used / 1024,
                            free / 1024,
                            server.connections().count()
                        );
                    }
                    Ok(None) => {}
                    Err(e) => log::warn!("vdevice change could not be handled: {e}"),
                }
            }
            if pvh.now_ns().saturating_sub(last_reap) > 1_000_000_000 {
                last_reap = pvh.now_ns();
                server.reap(&mut pvh);
                // The most the heap held so far, once a second at most and
                // only when it grew: what serving costs under load.
                let (used, free) = pvh_rt::heap::usage();
                if used > heap_peak {
                    heap_peak = used;
                    println!(
                        "blkback-uk: heap peak {} KiB used, {} KiB free, {} share(s) served",
                        used / 1024,
                        free / 1024,
                        server.connections().count()
                    );
                }
            }
        }
    }
}
