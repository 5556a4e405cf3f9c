//! PVH entry: the ELF note naming the 32-bit entry point, the switch to
//! long mode, and reading Xen's `hvm_start_info`.
//!
//! Xen (and QEMU's PVH loader) start the image in 32-bit protected mode,
//! paging off, with `ebx` = physical address of `hvm_start_info`. The stub
//! builds page tables identity-mapping 0-4 GiB with 2 MiB pages, enables
//! PAE, long mode and SSE (the host target's code uses SSE), loads a flat
//! GDT and calls `pvh_rt_start` on the boot stack.
//!
//! Interrupts stay disabled for the life of the domain: the host target's
//! code uses the red zone below `rsp`, which an interrupt would overwrite.
//! Events are polled (`SCHEDOP_poll`), exceptions are fatal and run on
//! their own IST stack (see `traps`).

use share_hal::xen::abi::{
    HvmMemmapEntry, HvmStartInfo, HVM_MEMMAP_TYPE_RAM, HVM_START_MAGIC_VALUE,
};

#[cfg(all(feature = "rt", panic = "abort", not(test)))]
core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4                 /* namesz: "Xen\0" */
    .long 8                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_start32       /* QEMU reads 8 bytes, Xen 4 or 8 */
    .p2align 2

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov esp, offset pvh_stack_top   /* the PVH ABI gives no stack */
    mov esi, ebx

    mov eax, offset pvh_pdpt
    or eax, 3
    mov dword ptr [pvh_pml4], eax

    mov eax, offset pvh_pd
    or eax, 3
    xor ecx, ecx
.Lpdpt_loop:
    mov dword ptr [pvh_pdpt + ecx * 8], eax
    add eax, 4096
    inc ecx
    cmp ecx, 4
    jb .Lpdpt_loop

    mov eax, 0x83           /* present, writable, 2 MiB page */
    xor ecx, ecx
.Lpd_loop:
    mov dword ptr [pvh_pd + ecx * 8], eax
    mov dword ptr [pvh_pd + ecx * 8 + 4], 0
    add eax, 0x200000
    inc ecx
    cmp ecx, 2048
    jb .Lpd_loop

    mov eax, offset pvh_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x620           /* PAE, OSFXSR, OSXMMEXCPT */
    mov cr4, eax
    mov ecx, 0xC0000080     /* EFER */
    rdmsr
    or eax, 0x100           /* LME */
    wrmsr
    mov eax, cr0
    and eax, 0xFFFFFFFB     /* no x87 emulation */
    or eax, 0x80000023      /* PG, NE, MP, PE */
    mov cr0, eax
    lgdt [pvh_gdt_ptr]
    mov eax, offset pvh_start64
    push 0x08
    push eax
    retf

    .code64
pvh_start64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + pvh_stack_top]
    mov edi, esi
    call pvh_rt_start
    ud2

    .section .rodata.boot, "a"
    .p2align 4
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
pvh_gdt_ptr:
    .word 23
    .long pvh_gdt

    .section .bss.boot, "aw", @nobits
    .p2align 12
pvh_pml4:
    .skip 4096
pvh_pdpt:
    .skip 4096
pvh_pd:
    .skip 16384
    .global pvh_pd
    .global pvh_stack_guard
    .global pvh_stack
    .global pvh_stack_top
    .p2align 12
pvh_stack_guard:            /* unmapped by paging::init */
    .skip 4096
pvh_stack:
    .skip 131072
pvh_stack_top:
"#
);

/// A RAM range of the domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
}

const MAX_REGIONS: usize = 32;
const MAX_CMDLINE: usize = 256;

/// What the boot loader told us, copied out of its structures so that the
/// memory they occupy can become heap.
#[derive(Clone, Debug)]
pub struct BootInfo {
    ram: [Region; MAX_REGIONS],
    nr_ram: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// `hvm_start_info.version`.
    pub start_info_version: u32,
}

impl BootInfo {
    pub fn ram(&self) -> &[Region] {
        &self.ram[..self.nr_ram]
    }

    /// End of the highest RAM range.
    pub fn ram_top(&self) -> u64 {
        self.ram().iter().map(|r| r.end).max().unwrap_or(0)
    }

    /// Total RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram().iter().map(|r| r.end - r.start).sum()
    }

    /// The kernel command line (`cmdline=` of the xl config), lossy.
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len];
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Whether word `flag` appears on the command line.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.cmdline().split_ascii_whitespace().any(|w| w == flag)
    }

    /// The value of the first `key=value` word on the command line.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.cmdline()
            .split_ascii_whitespace()
            .find_map(|w| w.split_once('=').filter(|(k, _)| *k == key))
            .map(|(_, v)| v)
    }

    /// Builds the info from the start info structure and its memory map
    /// entries (read by the caller), and the command line bytes.
    pub fn from_parts(
        si: &HvmStartInfo,
        memmap: impl Iterator<Item = HvmMemmapEntry>,
        cmdline: impl Iterator<Item = u8>,
    ) -> Result<BootInfo, &'static str> {
        if si.magic != HVM_START_MAGIC_VALUE {
            return Err("hvm_start_info has a bad magic value");
        }
        let mut info = BootInfo {
            ram: [Region::default(); MAX_REGIONS],
            nr_ram: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            start_info_version: si.version,
        };
        for e in memmap {
            if e.kind != HVM_MEMMAP_TYPE_RAM || e.size == 0 {
                continue;
            }
            let Some(end) = e.addr.checked_add(e.size) else {
                continue;
            };
            if info.nr_ram == MAX_REGIONS {
                break;
            }
            info.ram[info.nr_ram] = Region { start: e.addr, end };
            info.nr_ram += 1;
        }
        for b in cmdline.take_while(|&b| b != 0).take(MAX_CMDLINE) {
            info.cmdline[info.cmdline_len] = b;
            info.cmdline_len += 1;
        }
        Ok(info)
    }
}

/// Reads `hvm_start_info` at physical address `addr`.
///
/// # Safety
/// `addr` is what the PVH loader passed in `ebx`, the identity map is live,
/// and the structures it points at have not been overwritten (the heap is
/// not set up yet).
#[cfg(all(feature = "rt", panic = "abort", not(test)))]
pub unsafe fn read_start_info(addr: u64) -> Result<BootInfo, &'static str> {
    use core::ptr::read_unaligned;
    if addr == 0 || addr >= 1 << 32 {
        return Err("no hvm_start_info");
    }
    // SAFETY: per the contract, the loader placed the structure there.
    let si: HvmStartInfo = unsafe { read_unaligned(addr as *const HvmStartInfo) };
    let entries = if si.version >= 1 && si.memmap_paddr != 0 && si.memmap_paddr < 1 << 32 {
        si.memmap_entries.min(128) as usize
    } else {
        0
    };
    let memmap = (0..entries).map(|i| {
        let at = si.memmap_paddr as usize + i * core::mem::size_of::<HvmMemmapEntry>();
        // SAFETY: the loader's memory map table, `memmap_entries` long.
        unsafe { read_unaligned(at as *const HvmMemmapEntry) }
    });
    let cmdline_at = si.cmdline_paddr;
    let cmdline = (0..MAX_CMDLINE).map_while(|i| {
        if cmdline_at == 0 || cmdline_at >= 1 << 32 {
            return None;
        }
        // SAFETY: a NUL-terminated string placed by the loader; reading
        // stops at the NUL (take_while in from_parts) or MAX_CMDLINE.
        Some(unsafe { ((cmdline_at as usize + i) as *const u8).read_volatile() })
    });
    BootInfo::from_parts(&si, memmap, cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn si() -> HvmStartInfo {
        HvmStartInfo {
            magic: HVM_START_MAGIC_VALUE,
            version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_ram_ranges_and_the_command_line() {
        let map = [
            HvmMemmapEntry {
                addr: 0,
                size: 0xa0000,
                kind: 1,
                reserved: 0,
            },
            HvmMemmapEntry {
                addr: 0xf0000,
                size: 0x10000,
                kind: 2,
                reserved: 0,
            },
            HvmMemmapEntry {
                addr: 0x100000,
                size: 0xf00000,
                kind: 1,
                reserved: 0,
            },
            HvmMemmapEntry {
                addr: u64::MAX,
                size: 2,
                kind: 1,
                reserved: 0,
            },
        ];
        let info = BootInfo::from_parts(
            &si(),
            map.into_iter(),
            b"selftest fault storm=40 storm=2\0junk".iter().copied(),
        )
        .unwrap();
        assert_eq!(
            info.ram(),
            &[
                Region {
                    start: 0,
                    end: 0xa0000
                },
                Region {
                    start: 0x100000,
                    end: 0x1000000
                }
            ]
        );
        assert_eq!(info.ram_top(), 0x1000000);
        assert_eq!(info.cmdline(), "selftest fault storm=40 storm=2");
        assert!(info.has_flag("fault"));
        assert!(!info.has_flag("faul"));
        assert_eq!(info.value("storm"), Some("40"));
        assert_eq!(info.value("stor"), None);
        assert_eq!(info.value("fault"), None);
    }

    #[test]
    fn rejects_a_bad_magic_and_bounds_everything() {
        let bad = HvmStartInfo { magic: 1, ..si() };
        assert!(BootInfo::from_parts(&bad, core::iter::empty(), core::iter::empty()).is_err());
        let many = (0..100).map(|i| HvmMemmapEntry {
            addr: i << 20,
            size: 4096,
            kind: 1,
            reserved: 0,
        });
        let info = BootInfo::from_parts(&si(), many, core::iter::repeat(b'x')).unwrap();
        assert_eq!(info.ram().len(), MAX_REGIONS);
        assert_eq!(info.cmdline().len(), MAX_CMDLINE);
    }
}
