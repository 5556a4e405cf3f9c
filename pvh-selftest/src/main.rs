#![cfg_attr(panic = "abort", no_std, no_main)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(panic = "abort"))]
fn main() {
    eprintln!("pvh-selftest is a PVH image: build it with `cargo xtask images`");
    std::process::exit(2);
}

#[cfg(panic = "abort")]
mod image_main {
    use pvh_rt::{println, Runtime};

    pvh_rt::entry!(main);

    fn main(_rt: Runtime) -> ! {
        println!("pvh-selftest");
        pvh_rt::xen::shutdown(pvh_rt::xen::ShutdownReason::Poweroff)
    }
}
