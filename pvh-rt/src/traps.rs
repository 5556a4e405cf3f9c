//! Exceptions: every CPU exception is fatal and produces a crash report
//! (vector, error code, registers, fault address) on the console, then
//! shuts the domain down as crashed so `xl list` shows it and `on_crash`
//! applies. Nothing here resumes the interrupted code.
//!
//! Every vector runs on an IST stack, so a fault caused by a broken `rsp`
//! (stack overflow) is still reported. The double fault has a stack of its
//! own: when delivering a fault onto the common exception stack fails, the
//! CPU raises #DF, which must not need that stack too (else the domain
//! triple-faults with no report).

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

/// Registers saved by the common exception stub, lowest address first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Name and mnemonic of an exception vector.
pub fn vector_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("divide error", "#DE"),
        1 => ("debug", "#DB"),
        2 => ("non-maskable interrupt", "NMI"),
        3 => ("breakpoint", "#BP"),
        4 => ("overflow", "#OF"),
        5 => ("bound range exceeded", "#BR"),
        6 => ("invalid opcode", "#UD"),
        7 => ("device not available", "#NM"),
        8 => ("double fault", "#DF"),
        10 => ("invalid TSS", "#TS"),
        11 => ("segment not present", "#NP"),
        12 => ("stack-segment fault", "#SS"),
        13 => ("general protection fault", "#GP"),
        14 => ("page fault", "#PF"),
        16 => ("x87 floating-point error", "#MF"),
        17 => ("alignment check", "#AC"),
        18 => ("machine check", "#MC"),
        19 => ("SIMD floating-point error", "#XM"),
        20 => ("virtualization exception", "#VE"),
        21 => ("control protection", "#CP"),
        _ => ("reserved exception", "#??"),
    }
}

/// Writes the crash report for `f` (with `cr2` for page faults).
pub fn report(out: &mut dyn Write, f: &TrapFrame, cr2: u64) -> core::fmt::Result {
    let (name, mnemonic) = vector_name(f.vector);
    writeln!(
        out,
        "\n*** CRASH: {name} ({mnemonic}, vector {}) ***",
        f.vector
    )?;
    writeln!(
        out,
        "error code {:#x}  rip {:#018x}  rflags {:#x}",
        f.error, f.rip, f.rflags
    )?;
    if f.vector == 14 {
        let e = f.error;
        writeln!(
            out,
            "fault address (cr2) {cr2:#018x}: {} on a {} page{}",
            if e & 2 != 0 { "write" } else { "read" },
            if e & 1 != 0 { "present" } else { "not-present" },
            if e & 16 != 0 {
                ", instruction fetch"
            } else {
                ""
            }
        )?;
        if cr2 < 4096 {
            writeln!(out, "(a null pointer dereference)")?;
        } else if crate::paging::is_stack_guard(cr2) {
            writeln!(out, "(the boot stack overflowed into its guard page)")?;
        }
    }
    writeln!(
        out,
        "rax {:#018x} rbx {:#018x} rcx {:#018x}",
        f.rax, f.rbx, f.rcx
    )?;
    writeln!(
        out,
        "rdx {:#018x} rsi {:#018x} rdi {:#018x}",
        f.rdx, f.rsi, f.rdi
    )?;
    writeln!(
        out,
        "rbp {:#018x} rsp {:#018x} r8  {:#018x}",
        f.rbp, f.rsp, f.r8
    )?;
    writeln!(
        out,
        "r9  {:#018x} r10 {:#018x} r11 {:#018x}",
        f.r9, f.r10, f.r11
    )?;
    writeln!(
        out,
        "r12 {:#018x} r13 {:#018x} r14 {:#018x}",
        f.r12, f.r13, f.r14
    )?;
    writeln!(out, "r15 {:#018x} cs {:#x} ss {:#x}", f.r15, f.cs, f.ss)?;
    Ok(())
}

/// Return addresses found by following the frame pointer chain from
/// `rbp`, reading through `read` (which returns `None` outside the stack).
/// Stops at the first frame that is not above the previous one, so a
/// corrupt chain ends the walk instead of looping.
pub fn backtrace(mut rbp: u64, read: &dyn Fn(u64) -> Option<u64>, out: &mut dyn FnMut(u64)) {
    // The chain only climbs (checked below), so the boot stack bounds it;
    // the count is a second bound.
    for _ in 0..4096 {
        let (Some(next), Some(ret)) = (read(rbp), read(rbp.wrapping_add(8))) else {
            return;
        };
        if ret == 0 {
            return;
        }
        out(ret);
        if next <= rbp {
            return;
        }
        rbp = next;
    }
}

/// Writes the return addresses of the interrupted code, if its frame
/// pointer chain lies in the boot stack. Resolve them with
/// `addr2line -f -e target/pvh-symbols/<image> <address>`.
#[cfg(all(feature = "rt", panic = "abort", not(test)))]
fn report_backtrace(out: &mut dyn Write, f: &TrapFrame) -> core::fmt::Result {
    extern "C" {
        static pvh_stack: u8;
        static pvh_stack_top: u8;
    }
    let lo = &raw const pvh_stack as u64;
    let hi = &raw const pvh_stack_top as u64;
    let read = |addr: u64| {
        if addr < lo || addr.checked_add(8)? > hi || addr % 8 != 0 {
            return None;
        }
        // SAFETY: an aligned 8-byte word inside the boot stack, which is
        // always mapped; the value is only printed.
        Some(unsafe { (addr as *const u64).read_volatile() })
    };
    write!(out, "backtrace: {:#x}", f.rip)?;
    // Recursion repeats one return address: print it once with a count.
    let mut result = Ok(());
    let mut last = (0u64, 0u32);
    let flush = |out: &mut dyn Write, (ret, n): (u64, u32)| match n {
        0 => Ok(()),
        1 => write!(out, " {ret:#x}"),
        _ => write!(out, " {ret:#x} (x{n})"),
    };
    backtrace(f.rbp, &read, &mut |ret| {
        if ret == last.0 {
            last.1 += 1;
        } else if result.is_ok() {
            result = flush(out, last);
            last = (ret, 1);
        }
    });
    result?;
    flush(out, last)?;
    writeln!(out)
}

static CRASHING: AtomicBool = AtomicBool::new(false);

/// Marks the domain as crashing; false if it already was (a fault inside
/// the crash path: stop at once rather than loop).
pub fn begin_crash() -> bool {
    !CRASHING.swap(true, Ordering::SeqCst)
}

/// Called by the exception stubs with the saved frame; never returns.
#[cfg(all(feature = "rt", panic = "abort", not(test)))]
#[no_mangle]
extern "C" fn pvh_rt_exception(frame: &TrapFrame) -> ! {
    use share_pvh::console::EmergencyWriter;
    use share_pvh::{cpu, shutdown, ShutdownReason};
    if begin_crash() {
        let _ = report(&mut EmergencyWriter, frame, cpu::cr2());
        let _ = report_backtrace(&mut EmergencyWriter, frame);
        let _ = writeln!(EmergencyWriter, "*** domain crashed ***");
    }
    shutdown(ShutdownReason::Crash)
}

#[cfg(all(feature = "rt", panic = "abort", not(test)))]
mod tables {
    use core::arch::{asm, global_asm};
    use core::cell::UnsafeCell;

    const IST_STACK: usize = 32 * 1024;

    #[repr(C, align(16))]
    struct Stack(UnsafeCell<[u8; IST_STACK]>);
    // SAFETY: only the CPU uses the stack (on exception entry); Rust code
    // takes nothing but its address.
    unsafe impl Sync for Stack {}
    static IST1: Stack = Stack(UnsafeCell::new([0; IST_STACK]));
    /// The double fault's own stack (IST2).
    static IST2: Stack = Stack(UnsafeCell::new([0; IST_STACK]));

    /// The 64-bit TSS: IST1 for every exception but #DF, IST2 for #DF.
    #[repr(C, packed(4))]
    struct Tss {
        reserved0: u32,
        rsp: [u64; 3],
        reserved1: u64,
        ist: [u64; 7],
        reserved2: u64,
        reserved3: u16,
        iomap_base: u16,
    }
    const _: () = assert!(core::mem::size_of::<Tss>() == 104);

    struct Tables {
        tss: Tss,
        gdt: [u64; 5],
        idt: [[u64; 2]; 32],
    }

    struct Cell(UnsafeCell<Tables>);
    // SAFETY: written once by `init` on the only vCPU before any exception
    // can use them; read by the CPU afterwards.
    unsafe impl Sync for Cell {}
    static TABLES: Cell = Cell(UnsafeCell::new(Tables {
        tss: Tss {
            reserved0: 0,
            rsp: [0; 3],
            reserved1: 0,
            ist: [0; 7],
            reserved2: 0,
            reserved3: 0,
            iomap_base: 104,
        },
        gdt: [0; 5],
        idt: [[0; 2]; 32],
    }));

    extern "C" {
        static pvh_rt_isr_table: u8;
    }

    // One 16-byte stub per vector: push a zero error code where the CPU
    // pushes none, push the vector, join the common path, which saves the
    // registers and calls pvh_rt_exception. The CPU aligned the IST stack
    // to 16; 22 pushed words keep the call 16-byte aligned.
    global_asm!(
        r#"
        .macro isr_stub vec, err
        .p2align 4
        .if \err == 0
        push 0
        .endif
        push \vec
        jmp pvh_rt_isr_common
        .endm

        .section .text.traps, "ax"
        .p2align 4
        .global pvh_rt_isr_table
    pvh_rt_isr_table:
        isr_stub 0, 0
        isr_stub 1, 0
        isr_stub 2, 0
        isr_stub 3, 0
        isr_stub 4, 0
        isr_stub 5, 0
        isr_stub 6, 0
        isr_stub 7, 0
        isr_stub 8, 1
        isr_stub 9, 0
        isr_stub 10, 1
        isr_stub 11, 1
        isr_stub 12, 1
        isr_stub 13, 1
        isr_stub 14, 1
        isr_stub 15, 0
        isr_stub 16, 0
        isr_stub 17, 1
        isr_stub 18, 0
        isr_stub 19, 0
        isr_stub 20, 0
        isr_stub 21, 1
        isr_stub 22, 0
        isr_stub 23, 0
        isr_stub 24, 0
        isr_stub 25, 0
        isr_stub 26, 0
        isr_stub 27, 0
        isr_stub 28, 0
        isr_stub 29, 1
        isr_stub 30, 1
        isr_stub 31, 0

    pvh_rt_isr_common:
        push rax
        push rbx
        push rcx
        push rdx
        push rsi
        push rdi
        push rbp
        push r8
        push r9
        push r10
        push r11
        push r12
        push r13
        push r14
        push r15
        mov rdi, rsp
        cld
        call pvh_rt_exception
        ud2
    "#
    );

    /// Installs GDT (with the TSS), TSS and IDT.
    pub fn init() {
        let t = TABLES.0.get();
        let ist_top = IST1.0.get() as u64 + IST_STACK as u64;
        // SAFETY: single vCPU, interrupts off, called once before anything
        // else touches the tables; the asm loads descriptors that point at
        // these statics, which live forever.
        unsafe {
            (*t).tss.ist[0] = ist_top;
            (*t).tss.ist[1] = IST2.0.get() as u64 + IST_STACK as u64;
            let tss = &raw const (*t).tss as u64;
            let limit = (core::mem::size_of::<Tss>() - 1) as u64;
            (*t).gdt = [
                0,
                0x00af_9a00_0000_ffff,
                0x00cf_9200_0000_ffff,
                // Available 64-bit TSS, present.
                (limit & 0xffff)
                    | ((tss & 0xff_ffff) << 16)
                    | (0x89 << 40)
                    | (((limit >> 16) & 0xf) << 48)
                    | (((tss >> 24) & 0xff) << 56),
                tss >> 32,
            ];
            let stubs = &raw const pvh_rt_isr_table as u64;
            for v in 0..32u64 {
                let h = stubs + v * 16;
                // Interrupt gate, present, DPL 0, selector 0x08, IST 1
                // (IST 2 for the double fault).
                let ist = if v == 8 { 2 } else { 1 };
                (*t).idt[v as usize] = [
                    (h & 0xffff)
                        | (0x08 << 16)
                        | (ist << 32)
                        | (0x8e << 40)
                        | ((h >> 16) & 0xffff) << 48,
                    h >> 32,
                ];
            }
            let gdtr: [u16; 5] = pseudo_descriptor(&raw const (*t).gdt as u64, 5 * 8 - 1);
            let idtr: [u16; 5] = pseudo_descriptor(&raw const (*t).idt as u64, 32 * 16 - 1);
            asm!(
                "lgdt [{gdtr}]",
                "lidt [{idtr}]",
                "mov ax, 0x18",
                "ltr ax",
                gdtr = in(reg) gdtr.as_ptr(),
                idtr = in(reg) idtr.as_ptr(),
                out("ax") _,
                options(nostack, preserves_flags)
            );
        }
    }

    /// Points the common exception stack (IST1) at the top of page 0,
    /// which is unmapped: the next exception cannot be delivered and the
    /// CPU raises a double fault. For the self-test of the #DF path only.
    ///
    /// # Safety
    /// Every exception after this is a double fault; the caller is about
    /// to fault on purpose.
    pub unsafe fn break_exception_stack() {
        let t = TABLES.0.get();
        // SAFETY: single vCPU; the CPU reads the TSS only on an exception,
        // and the caller wants the next one to fail.
        unsafe { (*t).tss.ist[0] = 4096 };
    }

    /// The 10-byte operand of LGDT/LIDT.
    fn pseudo_descriptor(base: u64, limit: u16) -> [u16; 5] {
        [
            limit,
            base as u16,
            (base >> 16) as u16,
            (base >> 32) as u16,
            (base >> 48) as u16,
        ]
    }
}

#[cfg(all(feature = "rt", panic = "abort", not(test)))]
pub use tables::{break_exception_stack, init};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fault_report_names_address_and_access() {
        let mut f: TrapFrame = TrapFrame {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rbp: 0,
            rdi: 0,
            rsi: 0,
            rdx: 0,
            rcx: 0,
            rbx: 0,
            rax: 0xdead,
            vector: 14,
            error: 2,
            rip: 0x1234,
            cs: 8,
            rflags: 2,
            rsp: 0x8000,
            ss: 0x10,
        };
        let mut s = String::new();
        report(&mut s, &f, 0xbad0).unwrap();
        assert!(s.contains("page fault (#PF, vector 14)"), "{s}");
        assert!(
            s.contains("cr2) 0x000000000000bad0: write on a not-present page"),
            "{s}"
        );
        assert!(s.contains("rax 0x000000000000dead"), "{s}");
        f.vector = 13;
        s.clear();
        report(&mut s, &f, 0).unwrap();
        assert!(s.contains("general protection fault"));
        assert!(!s.contains("cr2"));
    }

    #[test]
    fn backtrace_follows_frames_and_stops_on_corruption() {
        // A fake stack: frame at 0x100 -> 0x140 -> 0x180 -> 0x120 (goes
        // down: corrupt, the walk stops after 0x180's return address).
        let words: std::collections::HashMap<u64, u64> = [
            (0x100, 0x140),
            (0x108, 0xaaa),
            (0x140, 0x180),
            (0x148, 0xbbb),
            (0x180, 0x120),
            (0x188, 0xccc),
            (0x120, 0x200),
            (0x128, 0xddd),
        ]
        .into_iter()
        .collect();
        let read = |a: u64| words.get(&a).copied();
        let mut got = Vec::new();
        backtrace(0x100, &read, &mut |r| got.push(r));
        assert_eq!(got, vec![0xaaa, 0xbbb, 0xccc]);
        // Outside the stack: nothing.
        got.clear();
        backtrace(0x5000, &read, &mut |r| got.push(r));
        assert!(got.is_empty());
    }

    #[test]
    fn a_second_crash_does_not_report_again() {
        assert!(begin_crash());
        assert!(!begin_crash());
    }
}
