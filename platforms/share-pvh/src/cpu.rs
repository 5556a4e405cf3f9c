//! The few x86 instructions the platform needs: port output, CPUID, MSRs,
//! the time-stamp counter, halting.
//!
//! One of the small modules allowed `unsafe`; each wrapper is safe because
//! its instruction has no memory effects on this program.

use core::arch::asm;
use core::arch::x86_64::{__cpuid, _rdtsc};

/// Writes `byte` to I/O port `port`.
pub fn outb(port: u16, byte: u8) {
    // SAFETY: port output has no effect on this program's memory; the ports
    // used (0xE9 debug console, 0xF4 QEMU's debug exit) are write-only
    // devices.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") byte, options(nomem, nostack, preserves_flags))
    };
}

/// CPUID leaf `leaf`: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = __cpuid(leaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Writes model-specific register `msr`.
///
/// # Safety
/// The write must not change how the CPU executes this program (paging,
/// segments, ...); e.g. Xen's hypercall-page MSR is fine.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: per the caller's contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter (CR4.TSD is clear in this kernel).
    unsafe { _rdtsc() }
}

/// CR2: the address of the last page fault.
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects (ring 0 only, and this kernel
    // runs in ring 0).
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Stops this vCPU for good, as a last resort when even shutdown failed.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts disabled HLT only stops the vCPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// The base of Xen's CPUID leaves, if running on Xen.
///
/// Xen puts its leaves at 0x40000000 or, when it also offers Viridian,
/// at 0x40000100 (and so on).
pub fn xen_cpuid_base() -> Option<u32> {
    (0x4000_0000u32..0x4001_0000).step_by(0x100).find(|&base| {
        let (max, b, c, d) = cpuid(base);
        // "XenVMMXenVMM"
        b == 0x566e_6558 && c == 0x65584d4d && d == 0x4d4d_566e && max >= base + 2
    })
}
