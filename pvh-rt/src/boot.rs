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

use share_pvh::abi::{
    HvmMemmapEntry, HvmModlistEntry, HvmStartInfo, HVM_MEMMAP_TYPE_RAM, HVM_START_MAGIC_VALUE,
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

impl Region {
    /// The range widened to whole pages (what the heap must leave alone).
    pub fn pages(&self) -> Region {
        Region {
            start: self.start & !4095,
            end: self.end.saturating_add(4095) & !4095,
        }
    }

    pub fn overlaps(&self, other: &Region) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

const MAX_REGIONS: usize = 32;
const MAX_CMDLINE: usize = 256;
/// Boot modules used; more are refused (xl gives a PVH guest one).
pub const MAX_MODULES: usize = 8;
/// Bytes of one `hvm_modlist_entry`.
pub const MODLIST_ENTRY_SIZE: usize = core::mem::size_of::<HvmModlistEntry>();
/// The identity map covers 4 GiB; nothing above is reachable.
const MAPPED_TOP: u64 = 1 << 32;

/// A boot module the loader announced but the runtime does not use, and
/// why (printed on the console at boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedModule {
    pub index: u32,
    pub why: &'static str,
}

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
    modules: [Region; MAX_MODULES],
    nr_modules: usize,
    refused: [Option<RefusedModule>; MAX_MODULES],
    /// The loader's module list, page-rounded; empty without modules.
    modlist: Region,
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

    /// The boot modules (`ramdisk=` of the xl config), in the loader's
    /// order, each checked: inside one RAM range below 4 GiB, not empty,
    /// overlapping neither the image, the module list nor another module.
    /// Their memory (page-rounded) is not part of the heap.
    pub fn modules(&self) -> &[Region] {
        &self.modules[..self.nr_modules]
    }

    /// Modules the loader announced that were not accepted, and why.
    pub fn refused_modules(&self) -> impl Iterator<Item = RefusedModule> + '_ {
        self.refused.iter().flatten().copied()
    }

    /// What the heap must not take: every module and the module list,
    /// page-rounded.
    pub fn reserved(&self) -> impl Iterator<Item = Region> + '_ {
        self.modules()
            .iter()
            .map(Region::pages)
            .chain((!self.modlist.is_empty()).then_some(self.modlist))
    }

    fn refuse(&mut self, index: u32, why: &'static str) {
        if let Some(slot) = self.refused.iter_mut().find(|r| r.is_none()) {
            *slot = Some(RefusedModule { index, why });
        }
    }

    /// Takes the boot modules from `list`, the bytes of the loader's
    /// module list (`hvm_modlist_entry` each, little-endian), which sits at
    /// `list_at` and announces `nr_modules` entries; `image` is the range
    /// the image occupies. Never fails: a module that cannot be used is
    /// refused (see [`BootInfo::refused_modules`]) and the others are kept.
    pub fn add_modules(&mut self, list_at: u64, nr_modules: u32, list: &[u8], image: Region) {
        if nr_modules == 0 {
            return;
        }
        let wanted = (nr_modules as usize).saturating_mul(MODLIST_ENTRY_SIZE);
        // A copy, so that the checks can run while modules are added.
        let (ram, nr_ram) = (self.ram, self.nr_ram);
        let in_ram = |r: &Region| {
            r.end <= MAPPED_TOP
                && ram[..nr_ram]
                    .iter()
                    .any(|ram| ram.start <= r.start && r.end <= ram.end)
        };
        let list_region = match list_at.checked_add(wanted as u64) {
            Some(end) if list_at != 0 => Region {
                start: list_at,
                end,
            },
            _ => {
                self.refuse(0, "the module list address is 0 or overflows");
                return;
            }
        };
        if !in_ram(&list_region) || list_region.overlaps(&image) {
            self.refuse(
                0,
                "the module list is not in RAM below 4 GiB outside the image",
            );
            return;
        }
        self.modlist = list_region.pages();
        for (i, entry) in list.chunks_exact(MODLIST_ENTRY_SIZE).enumerate() {
            let index = i as u32;
            if index >= nr_modules {
                break;
            }
            let word = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&entry[at..at + 8]);
                u64::from_le_bytes(b)
            };
            let (paddr, size) = (word(0), word(8));
            let why = match paddr.checked_add(size) {
                _ if size == 0 => Some("it is empty"),
                None => Some("its end overflows"),
                Some(end) => {
                    let r = Region { start: paddr, end };
                    if !in_ram(&r) {
                        Some("it is not inside one RAM range below 4 GiB")
                    } else if r.overlaps(&image) {
                        Some("it overlaps the image")
                    } else if r.overlaps(&list_region) {
                        Some("it overlaps the module list")
                    } else if self.modules().iter().any(|m| m.overlaps(&r)) {
                        Some("it overlaps an earlier module")
                    } else if self.nr_modules == MAX_MODULES {
                        Some("too many modules")
                    } else {
                        self.modules[self.nr_modules] = r;
                        self.nr_modules += 1;
                        None
                    }
                }
            };
            if let Some(why) = why {
                self.refuse(index, why);
            }
        }
        let read = (list.len() / MODLIST_ENTRY_SIZE) as u32;
        if read < nr_modules {
            self.refuse(read, "beyond the entries the runtime reads");
        }
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
            modules: [Region::default(); MAX_MODULES],
            nr_modules: 0,
            refused: [None; MAX_MODULES],
            modlist: Region::default(),
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

/// Reads `hvm_start_info` at physical address `addr`, with its memory
/// map, command line and module list; `image` is the range the image
/// occupies.
///
/// # Safety
/// `addr` is what the PVH loader passed in `ebx`, the identity map is live,
/// and the structures it points at have not been overwritten (the heap is
/// not set up yet).
#[cfg(all(feature = "rt", panic = "abort", not(test)))]
pub unsafe fn read_start_info(addr: u64, image: Region) -> Result<BootInfo, &'static str> {
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
    let mut info = BootInfo::from_parts(&si, memmap, cmdline)?;
    // One entry more than used, so that a list too long is reported.
    let mut list = [0u8; (MAX_MODULES + 1) * MODLIST_ENTRY_SIZE];
    let entries = (si.nr_modules as usize).min(MAX_MODULES + 1);
    let list_len = entries * MODLIST_ENTRY_SIZE;
    let list_region = Region {
        start: si.modlist_paddr,
        end: si.modlist_paddr.saturating_add(list_len as u64),
    };
    // Read only what lies in RAM below 4 GiB (add_modules refuses the rest
    // with a reason): no stray reads of MMIO or unmapped addresses.
    let readable = si.modlist_paddr != 0
        && list_region.end <= MAPPED_TOP
        && info
            .ram()
            .iter()
            .any(|r| r.start <= list_region.start && list_region.end <= r.end);
    if readable {
        for (i, b) in list[..list_len].iter_mut().enumerate() {
            // SAFETY: the loader's module list, checked above to lie in
            // RAM that the identity map covers.
            *b = unsafe { ((si.modlist_paddr as usize + i) as *const u8).read_volatile() };
        }
    }
    info.add_modules(si.modlist_paddr, si.nr_modules, &list[..list_len], image);
    Ok(info)
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

    fn list(entries: &[(u64, u64)]) -> alloc::vec::Vec<u8> {
        entries
            .iter()
            .flat_map(|&(at, size)| [at, size, 0, 0])
            .flat_map(u64::to_le_bytes)
            .collect()
    }

    fn with_ram() -> BootInfo {
        let map = [
            HvmMemmapEntry {
                addr: 0,
                size: 0xa0000,
                kind: 1,
                reserved: 0,
            },
            HvmMemmapEntry {
                addr: 0x100000,
                size: 0x1f00000,
                kind: 1,
                reserved: 0,
            },
        ];
        BootInfo::from_parts(&si(), map.into_iter(), core::iter::empty()).unwrap()
    }

    const IMAGE: Region = Region {
        start: 0x100000,
        end: 0x140000,
    };

    #[test]
    fn modules_are_read_from_the_list_bytes() {
        let mut b = with_ram();
        let bytes = list(&[(0x140000, 0x800000), (0x940000, 0x1234)]);
        assert_eq!(bytes.len(), 2 * MODLIST_ENTRY_SIZE);
        b.add_modules(0x942000, 2, &bytes, IMAGE);
        assert_eq!(b.refused_modules().count(), 0);
        assert_eq!(
            b.modules(),
            &[
                Region {
                    start: 0x140000,
                    end: 0x940000
                },
                Region {
                    start: 0x940000,
                    end: 0x941234
                }
            ]
        );
        let reserved: alloc::vec::Vec<Region> = b.reserved().collect();
        assert_eq!(
            reserved,
            [
                Region {
                    start: 0x140000,
                    end: 0x940000
                },
                Region {
                    start: 0x940000,
                    end: 0x942000
                },
                Region {
                    start: 0x942000,
                    end: 0x943000
                }
            ]
        );
        // No modules: nothing reserved, nothing refused.
        let mut none = with_ram();
        none.add_modules(0, 0, &[], IMAGE);
        assert_eq!(none.modules().len(), 0);
        assert_eq!(none.reserved().count(), 0);
        assert_eq!(none.refused_modules().count(), 0);
    }

    #[test]
    fn garbage_modules_are_refused_one_by_one() {
        let mut b = with_ram();
        let bytes = list(&[
            (0x200000, 0),          // empty
            (u64::MAX - 10, 0x100), // end overflows
            (0x90000, 0x20000),     // across the hole below 1 MiB
            (0x1fff000, 0x2000),    // past the end of RAM
            (0x13f000, 0x2000),     // into the image
            (0x400000, 0x1000),     // fine
            (0x400800, 0x1000),     // overlaps the one before
            (0x3ff000, 0x1000),     // fine, right below it
            (0x500010, 0x10),       // overlaps the module list
        ]);
        b.add_modules(0x500000, 9, &bytes, IMAGE);
        assert_eq!(
            b.modules(),
            &[
                Region {
                    start: 0x400000,
                    end: 0x401000
                },
                Region {
                    start: 0x3ff000,
                    end: 0x400000
                }
            ]
        );
        let refused: alloc::vec::Vec<u32> = b.refused_modules().map(|r| r.index).collect();
        assert_eq!(refused, [0, 1, 2, 3, 4, 6, 8]);
        assert!(b
            .refused_modules()
            .any(|r| r.index == 4 && r.why == "it overlaps the image"));
    }

    #[test]
    fn a_bad_list_is_refused_whole_and_a_long_one_cut() {
        let bytes = list(&[(0x400000, 0x1000)]);
        for (at, nr) in [
            (0, 1),               // no list
            (u64::MAX - 8, 1),    // end overflows
            (0x120000, 1),        // in the image
            (0x2000000 - 16, 1),  // past the end of RAM
            (0x500000, u32::MAX), // an absurd count
        ] {
            let mut b = with_ram();
            b.add_modules(at, nr, &bytes, IMAGE);
            assert_eq!(b.modules().len(), 0, "list at {at:#x}, {nr} entries");
            assert_eq!(b.refused_modules().count(), 1);
            assert_eq!(b.reserved().count(), 0);
        }
        // More entries announced than read: the ones read are used, the
        // rest reported.
        let mut b = with_ram();
        let many: alloc::vec::Vec<(u64, u64)> = (0..(MAX_MODULES as u64 + 1))
            .map(|i| (0x400000 + i * 0x1000, 0x1000))
            .collect();
        b.add_modules(0x800000, 20, &list(&many), IMAGE);
        assert_eq!(b.modules().len(), MAX_MODULES);
        let refused: alloc::vec::Vec<RefusedModule> = b.refused_modules().collect();
        assert_eq!(
            refused,
            [
                RefusedModule {
                    index: MAX_MODULES as u32,
                    why: "too many modules"
                },
                RefusedModule {
                    index: MAX_MODULES as u32 + 1,
                    why: "beyond the entries the runtime reads"
                }
            ]
        );
        // Fewer bytes than announced entries (a truncated read) never
        // index past the bytes.
        let mut b = with_ram();
        b.add_modules(
            0x800000,
            3,
            &list(&[(0x400000, 0x1000), (0x500000, 0x1000)])[..40],
            IMAGE,
        );
        assert_eq!(b.modules().len(), 1);
    }

    proptest::proptest! {
        /// Whatever the list says, what is kept lies in RAM below 4 GiB,
        /// overlaps nothing else kept, the image or the list, and the
        /// heap never touches it.
        #[test]
        fn any_module_list_keeps_only_sound_modules(
            entries in proptest::collection::vec(
                (
                    proptest::prop_oneof![0u64..0x3000000, proptest::num::u64::ANY],
                    proptest::prop_oneof![0u64..0x1000000, proptest::num::u64::ANY],
                ),
                0..12,
            ),
            list_at in proptest::prop_oneof![0u64..0x3000000, proptest::num::u64::ANY],
            nr in proptest::prop_oneof![0u32..12, proptest::num::u32::ANY],
            cut in 0usize..400,
        ) {
            let bytes = list(&entries);
            let bytes = &bytes[..cut.min(bytes.len())];
            let mut b = with_ram();
            b.add_modules(list_at, nr, bytes, IMAGE);
            let kept = b.modules();
            proptest::prop_assert!(kept.len() <= MAX_MODULES);
            for (i, m) in kept.iter().enumerate() {
                proptest::prop_assert!(!m.is_empty() && m.end <= MAPPED_TOP);
                proptest::prop_assert!(b.ram().iter().any(|r| r.start <= m.start && m.end <= r.end));
                proptest::prop_assert!(!m.overlaps(&IMAGE));
                for o in &kept[i + 1..] {
                    proptest::prop_assert!(!m.overlaps(o));
                }
            }
            if let Some(h) = crate::heap::heap_region(&b, IMAGE.end) {
                for r in b.reserved() {
                    proptest::prop_assert!(!h.overlaps(&r), "{:?} overlaps {:?}", h, r);
                }
                proptest::prop_assert!(h.start >= IMAGE.end);
            }
        }
    }
}
