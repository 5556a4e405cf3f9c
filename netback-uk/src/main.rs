//! The netback-uk PVH image: boots, brings up the Xen platform, publishes
//! its vdevice page, and runs the switch (the library of this crate):
//! owner entries dom0 writes become ports, frames move between members'
//! lanes, and per-port counters go to the console every 10 s.
//!
//! Only the image build (`cargo xtask images`, the one build with
//! `panic = "abort"`) is the kernel; any other build of this binary (e.g.
//! `cargo clippy --all-features`) is a stub that says so.
#![cfg_attr(panic = "abort", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(panic = "abort")]
extern crate alloc;

#[cfg(not(panic = "abort"))]
fn main() {
    eprintln!("netback-uk is a PVH image: build it with `cargo xtask images`");
    std::process::exit(2);
}

#[cfg(panic = "abort")]
mod image_main {

    use alloc::vec::Vec;
    use netback_uk::service::Netback;
    use netback_uk::switch::SwitchConfig;
    use netback_uk::vif::{self, Vif, VifPages, VifUplinks};
    use pvh_rt::image;
    use pvh_rt::{println, Runtime};
    use share_hal::platform::Clock;
    use share_pvh::{shutdown, time, Doorbell, ShutdownReason, XenPages, XenPvh, XenStore};

    /// Connects `dev` (`device/vif/<N>`): its pages granted to its
    /// backend, the xenbus handshake, every rx buffer posted.
    fn connect(
        pvh: &mut XenPvh,
        xs: &mut XenStore,
        dev: &str,
    ) -> Result<Vif<XenPages, Doorbell>, alloc::string::String> {
        let backend = xs
            .read(&alloc::format!("{dev}/backend-id"))
            .ok()
            .and_then(|v| v.trim_end_matches('\0').trim().parse::<u16>().ok())
            .ok_or_else(|| alloc::format!("{dev}: no usable backend-id"))?;
        let pages = VifPages::new(pvh, backend)
            .map_err(|e| alloc::format!("{dev}: granting the rings and buffers: {e}"))?;
        let bell = pvh
            .doorbell(pages.port())
            .map_err(|e| alloc::format!("{dev}: {e}"))?;
        let info = vif::handshake(xs, dev, &pages, &time::now_ns, &mut |deadline| {
            // Backends do not notify state changes: a bounded sleep.
            let _ = bell.wait(deadline);
        })
        .map_err(|e| alloc::format!("{e}"))?;
        Vif::start(pages, info, bell).map_err(|e| alloc::format!("{dev}: {e}"))
    }

    pvh_rt::entry!(main);

    fn main(rt: Runtime) -> ! {
        println!(
            "netback-uk {}: xen-share multi-way LAN backend",
            env!("CARGO_PKG_VERSION")
        );
        #[cfg(feature = "hostile")]
        {
            println!("{}", netback_uk::hostile::MARKER);
            match rt
                .boot
                .value("hostile")
                .map(netback_uk::hostile::parse_list)
            {
                Some(Some((modes, after))) if modes.len() == 1 => {
                    let mode = modes[0];
                    println!("netback-uk: hostile mode {mode:?} after {after} IPv4 frame(s)");
                    netback_uk::hostile::set(mode, after);
                }
                Some(Some((modes, after))) => {
                    println!(
                        "netback-uk: hostile modes {modes:?}, one a port in turn, each after {after} IPv4 frame(s)"
                    );
                    netback_uk::hostile::set_sequence(&modes, after);
                }
                Some(None) => println!("netback-uk: unknown hostile= mode: honest"),
                None => println!("netback-uk: no hostile= mode: honest"),
            }
        }
        let image::Domain {
            mut pvh,
            mut store,
            vdevice,
        } = image::bring_up(&rt, "netback-uk");
        // Its own network devices (`vif=`): the LANs' possible uplinks.
        let devs = vif::devices(&mut store).unwrap_or_else(|e| {
            log::error!("netback-uk: listing device/vif failed: {e}");
            Vec::new()
        });
        let mut vifs = Vec::new();
        for (n, dev) in &devs {
            match connect(&mut pvh, &mut store, dev) {
                Ok(v) => {
                    let i = v.info();
                    let mac = i.mac.map(netback_uk::switch::MacFmt);
                    match mac {
                        Some(m) => println!(
                            "netback-uk: uplink device {n}: vif {dev} (backend domain {}, mac {m}), rx-copy, {} tx / {} rx buffers; {}",
                            i.backend, vif::TX_BUFS, vif::RX_BUFS, i.offloads
                        ),
                        None => println!(
                            "netback-uk: uplink device {n}: vif {dev} (backend domain {}), rx-copy; {}",
                            i.backend, i.offloads
                        ),
                    }
                    vifs.push(v);
                }
                Err(e) => println!("netback-uk: uplink device {n} not connected: {e}"),
            }
        }
        let config = SwitchConfig {
            // Keys the forwarding database's hash: unknown to members.
            seed: pvh.now_ns() ^ 0x6e65_7462_6163_6b21,
            ..SwitchConfig::default()
        };
        let mut nb = match Netback::new(&mut pvh, vdevice, config) {
            Ok(nb) => nb.with_uplinks(VifUplinks { vifs }),
            Err(e) => {
                log::error!("netback-uk: creating the counter page failed: {e}");
                shutdown(ShutdownReason::Crash)
            }
        };
        println!("netback-uk: ready");
        loop {
            let mut reported = false;
            let mut report = |line: &str| {
                reported = true;
                println!("netback-uk: {line}");
            };
            if let Err(e) = nb.step(&mut pvh, &mut report) {
                log::error!("netback-uk: the switch loop failed: {e}");
                shutdown(ShutdownReason::Crash)
            }
            if reported {
                let (used, free) = pvh_rt::heap::usage();
                println!(
                    "netback-uk: heap {} KiB used, {} KiB free",
                    used / 1024,
                    free / 1024
                );
            }
        }
    }
}
