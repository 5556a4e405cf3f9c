//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp`: the host target's
//! precompiled `core` expects libc to provide them, and there is no libc.
//!
//! Copies and fills use `rep movsb` / `rep stosb` (fast on every CPU with
//! ERMSB, and it cannot be turned back into a call to itself by the
//! optimizer, unlike a plain loop).

use core::arch::asm;

/// # Safety
/// As C's `memcpy`: both ranges valid, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: per the C contract; DF is clear (the ABI guarantees it).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// As C's `memmove`: both ranges valid; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst below src, or no overlap: a forward copy is safe.
        // SAFETY: per the C contract.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: per the C contract; copies backwards from the last byte with
    // DF set, and clears DF again as the ABI requires.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack))
    };
    dst
}

/// # Safety
/// As C's `memset`.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: per the C contract.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// As C's `memcmp`.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n, within both ranges per the C contract.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// As C's `bcmp`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// Referenced by the precompiled `core` (built with unwinding); never
/// called, since the images are built with `panic = "abort"`.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    share_pvh::shutdown(share_pvh::ShutdownReason::Crash)
}

/// As `_Unwind_Resume`.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
