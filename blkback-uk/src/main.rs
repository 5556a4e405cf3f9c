//! The blkback-uk PVH image: boots, brings up the Xen platform, publishes
//! its vdevice page and waits for work.
//!
//! The block server (the library of this crate: `Server`, the stores,
//! `wiring::poll_vdevice`) runs on the host today (`blkback-file`). The
//! image serves nothing until it has a store of its own: the `vbd` store
//! (its own Xen disk) or a `ram` store from a boot module. Until then
//! every vdevice change is refused with `EOPNOTSUPP`, so dom0's tool gets
//! an honest answer instead of silence.
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

    use pvh_rt::image;
    use pvh_rt::{println, Runtime};
    use share_hal::vdevice::Applied;
    use share_hal::wire::vdevice::status;

    pvh_rt::entry!(main);

    fn main(rt: Runtime) -> ! {
        println!(
            "blkback-uk {}: xen-share block backend",
            env!("CARGO_PKG_VERSION")
        );
        let mut d = image::bring_up(&rt, "blkback-uk");
        println!("blkback-uk: ready");
        image::serve(
            &mut d,
            &mut |_, _, _| Applied::Refused(status::EOPNOTSUPP),
            &mut |_, port| log::warn!("trigger on unknown port {port}"),
        )
    }
}
