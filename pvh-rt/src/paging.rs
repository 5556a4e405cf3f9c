//! Refines the boot page tables: the first 2 MiB get 4 KiB pages so that
//! two pages can be left unmapped, turning silent corruption into crash
//! reports:
//! - page 0, so a null pointer dereference faults;
//! - the guard page below the boot stack, so a stack overflow faults
//!   (on the IST stack, which still works) instead of overwriting the
//!   page tables below it.

/// Whether `addr` lies in the page unmapped below the boot stack.
pub fn is_stack_guard(addr: u64) -> bool {
    #[cfg(all(feature = "rt", panic = "abort", not(test)))]
    {
        let guard = imp::guard_page();
        addr >= guard && addr < guard + 4096
    }
    #[cfg(not(all(feature = "rt", panic = "abort", not(test))))]
    {
        let _ = addr;
        false
    }
}

#[cfg(all(feature = "rt", panic = "abort", not(test)))]
mod imp {
    use core::arch::asm;
    use core::cell::UnsafeCell;

    const PRESENT_WRITABLE: u64 = 0x3;

    #[repr(C, align(4096))]
    struct Table(UnsafeCell<[u64; 512]>);
    // SAFETY: written once by `init` before it is installed; afterwards
    // only the MMU reads it.
    unsafe impl Sync for Table {}
    static FIRST_2M: Table = Table(UnsafeCell::new([0; 512]));

    extern "C" {
        static mut pvh_pd: [u64; 2048];
        static pvh_stack_guard: u8;
    }

    pub fn guard_page() -> u64 {
        &raw const pvh_stack_guard as u64
    }

    /// Installs the 4 KiB table for the first 2 MiB.
    pub fn init() {
        let guard = guard_page();
        let table = FIRST_2M.0.get();
        // SAFETY: single vCPU, called once at boot before anything uses the
        // two unmapped pages; the new table maps every other page of the
        // first 2 MiB exactly as the 2 MiB page did (identity, writable),
        // so no live data moves. Reloading CR3 flushes the old mapping.
        unsafe {
            for (i, e) in (*table).iter_mut().enumerate() {
                let addr = i as u64 * 4096;
                *e = if addr == 0 || addr == guard {
                    0
                } else {
                    addr | PRESENT_WRITABLE
                };
            }
            let pd = &raw mut pvh_pd;
            (*pd)[0] = table as u64 | PRESENT_WRITABLE;
            asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack, preserves_flags));
        }
    }
}

#[cfg(all(feature = "rt", panic = "abort", not(test)))]
pub use imp::init;
