//! pvh-rt: the runtime of the xen-share unikernel domains.
//!
//! A PVH guest kernel in Rust on the stable toolchain, for the host target
//! (`x86_64-unknown-linux-gnu`, linked with `rust-lld` and `link.ld`; see
//! `cargo xtask images`): no `build-std`, no `x86_64-unknown-none`, no
//! Hermit (which needs both and has no Xen support).
//!
//! What it provides, with feature `rt` (the images):
//! - PVH boot ([`boot`]): ELF note, 32-bit entry, identity paging, long
//!   mode, SSE; the memory map and command line from `hvm_start_info`;
//! - the boot modules (`ramdisk=` of xl) from `hvm_start_info`'s module
//!   list, checked, kept out of the heap and handed to the image
//!   ([`Runtime::take_boot_modules`]);
//! - the heap ([`heap`]): the RAM above the image, less the modules;
//! - fatal exception handlers with crash reports ([`traps`]) and a panic
//!   handler, both ending in `SCHEDOP_shutdown(crash)`;
//! - `mem*` symbols ([`mem`]);
//! - then calls the image's main (see [`entry!`]) with a [`Runtime`].
//!
//! The Xen platform itself (hypercalls, console, grant table, events,
//! clock, xenstore) is the `share-pvh` crate (`platforms/share-pvh`), re-exported
//! as [`xen`].
//!
//! Discipline kept for the red zone (the host target's code uses the 128
//! bytes below `rsp`): interrupts are never enabled, every exception runs
//! on an IST stack and never returns, hypercalls move `rsp` first.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod boot;
pub mod heap;
pub mod image;
#[cfg(all(feature = "rt", panic = "abort", not(test)))]
pub mod mem;
pub mod paging;
pub mod traps;

pub use boot::BootInfo;
pub use share_pvh as xen;

use share_pvh::{XenInfo, XenPvh, XenStore};

/// What the runtime hands the image's main.
pub struct Runtime {
    pub boot: BootInfo,
    /// `None` when not running on Xen (development runs under plain QEMU).
    pub xen: Option<XenInfo>,
    /// The heap, in bytes.
    pub heap_bytes: u64,
    /// Whether `Runtime::take_boot_modules` handed them out already.
    #[cfg(all(feature = "rt", panic = "abort", not(test)))]
    modules_taken: bool,
}

/// A boot module's memory, handed to the image once.
#[cfg(all(feature = "rt", panic = "abort", not(test)))]
pub struct BootModule {
    /// Its index in the loader's module list.
    pub index: usize,
    /// Its physical (and virtual: identity-mapped) address.
    pub paddr: u64,
    pub data: &'static mut [u8],
}

impl Runtime {
    /// Brings up the share-hal platform (grant table, events, domain id)
    /// and the xenstore bootstrap client.
    pub fn platform(&self) -> share_hal::Result<(XenPvh, XenStore)> {
        if self.xen.is_none() {
            return Err(share_hal::Error::Unsupported {
                op: "the Xen platform",
                why: "not running on Xen",
            });
        }
        let mut store = XenStore::connect()?;
        let pvh = XenPvh::new(self.boot.ram_top(), &mut store)?;
        Ok((pvh, store))
    }

    /// The boot modules' memory ([`BootInfo::modules`]), for the image to
    /// keep: the first call returns them, later calls nothing, so each
    /// module has exactly one owner.
    #[cfg(all(feature = "rt", panic = "abort", not(test)))]
    pub fn take_boot_modules(&mut self) -> alloc::vec::Vec<BootModule> {
        if core::mem::replace(&mut self.modules_taken, true) {
            return alloc::vec::Vec::new();
        }
        let mut modules = alloc::vec::Vec::new();
        for (index, m) in self.boot.modules().iter().enumerate() {
            // SAFETY: BootInfo::add_modules accepted the range: RAM below
            // 4 GiB (identity-mapped), overlapping neither the image, the
            // module list nor another module; the heap was kept off its
            // pages (heap::heap_region), and this runs once, so the slice
            // is the only reference to that memory for the domain's life.
            let data =
                unsafe { core::slice::from_raw_parts_mut(m.start as *mut u8, m.len() as usize) };
            modules.push(BootModule {
                index,
                paddr: m.start,
                data,
            });
        }
        modules
    }
}

/// Declares the image's main: `pvh_rt::entry!(main)` with
/// `fn main(rt: pvh_rt::Runtime) -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        pub extern "Rust" fn __pvh_rt_main(rt: $crate::Runtime) -> ! {
            let main: fn($crate::Runtime) -> ! = $main;
            main(rt)
        }
    };
}

/// Writes to the console (ring once up, else port 0xE9), with a newline.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::xen::console::Writer, $($arg)*);
    }};
}

#[cfg(all(feature = "rt", panic = "abort", not(test)))]
mod start {
    use core::fmt::Write;

    use share_pvh::console::{self, EmergencyWriter, Writer};
    use share_pvh::{self as xen, ShutdownReason};

    use super::*;

    extern "Rust" {
        fn __pvh_rt_main(rt: Runtime) -> !;
    }

    extern "C" {
        static __image_start: u8;
        static __image_end: u8;
    }

    fn fail(what: &str) -> ! {
        let _ = writeln!(EmergencyWriter, "pvh-rt: {what}");
        xen::shutdown(ShutdownReason::Crash)
    }

    /// Called by the boot code in long mode, on the boot stack.
    #[no_mangle]
    extern "C" fn pvh_rt_start(start_info: u64) -> ! {
        console::emergency_write(b"pvh-rt: long mode\n");
        traps::init();
        let image_start = &raw const __image_start as u64;
        let image_end = &raw const __image_end as u64;
        let image = boot::Region {
            start: image_start,
            end: image_end,
        };
        // SAFETY: the address the loader passed; nothing was allocated yet.
        let boot = match unsafe { boot::read_start_info(start_info, image) } {
            Ok(b) => b,
            Err(e) => fail(e),
        };
        // After reading the start info: loaders put it in page 0.
        paging::init();
        let Some(region) = heap::heap_region(&boot, image_end) else {
            fail("no RAM above the image for the heap")
        };
        // SAFETY: RAM above the image (the boot structures were copied out
        // just above), used by nothing else, for good.
        unsafe { heap::init(region) };
        let xen = match xen::init() {
            Ok(info) => Some(info),
            Err(e) => {
                let _ = writeln!(EmergencyWriter, "pvh-rt: no Xen platform ({e})");
                None
            }
        };
        console::init_log(log::LevelFilter::Info);
        let _ = writeln!(
            Writer,
            "pvh-rt: image {:#x}-{:#x} ({} KiB), RAM {} KiB, heap {} KiB, start_info v{}{}",
            image_start,
            image_end,
            (image_end - image_start) / 1024,
            boot.ram_bytes() / 1024,
            (region.end - region.start) / 1024,
            boot.start_info_version,
            match xen {
                Some(x) => alloc::format!(
                    ", Xen {}.{}, console {}",
                    x.version.0,
                    x.version.1,
                    if x.console_ring { "ring" } else { "port 0xE9" }
                ),
                None => alloc::string::String::new(),
            }
        );
        for (i, m) in boot.modules().iter().enumerate() {
            let _ = writeln!(
                Writer,
                "pvh-rt: boot module {i}: {:#x}-{:#x} ({} KiB)",
                m.start,
                m.end,
                m.len() / 1024
            );
        }
        for r in boot.refused_modules() {
            let _ = writeln!(
                Writer,
                "pvh-rt: boot module {} refused: {} (not used; its memory may become heap)",
                r.index, r.why
            );
        }
        let rt = Runtime {
            boot,
            xen,
            heap_bytes: region.end - region.start,
            modules_taken: false,
        };
        // SAFETY: declared by the image with `entry!`, with this signature.
        unsafe { __pvh_rt_main(rt) }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        if traps::begin_crash() {
            let _ = writeln!(
                EmergencyWriter,
                "\n*** PANIC: {info} ***\n*** domain crashed ***"
            );
        }
        xen::shutdown(ShutdownReason::Crash)
    }
}
