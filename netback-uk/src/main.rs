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

#[cfg(not(panic = "abort"))]
fn main() {
    eprintln!("netback-uk is a PVH image: build it with `cargo xtask images`");
    std::process::exit(2);
}

#[cfg(panic = "abort")]
mod image_main {

    use netback_uk::service::Netback;
    use netback_uk::switch::SwitchConfig;
    use pvh_rt::image;
    use pvh_rt::{println, Runtime};
    use share_hal::platform::Clock;
    use share_pvh::{shutdown, ShutdownReason};

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
            mut pvh, vdevice, ..
        } = image::bring_up(&rt, "netback-uk");
        let config = SwitchConfig {
            // Keys the forwarding database's hash: unknown to members.
            seed: pvh.now_ns() ^ 0x6e65_7462_6163_6b21,
            ..SwitchConfig::default()
        };
        let mut nb = match Netback::new(&mut pvh, vdevice, config) {
            Ok(nb) => nb,
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
