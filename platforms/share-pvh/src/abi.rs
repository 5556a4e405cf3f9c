//! Xen's public ABI, as far as this platform uses it.
//!
//! Transcribed from Xen's public headers (`/usr/include/xen/*.h` of
//! Debian's `libxen-dev`, the authority). Every structure is checked by
//! size and field offset twice: against the figures below, and against the
//! C compiler reading the installed headers (test
//! `layouts_match_the_c_compiler`).
#![allow(dead_code)] // the whole ABI is transcribed, not all of it is called yet

/// `DOMID_SELF`: "the calling domain" in hypercall arguments.
pub const DOMID_SELF: u16 = 0x7ff0;

// Hypercall numbers (xen.h).
pub const HYPERVISOR_MEMORY_OP: u32 = 12;
pub const HYPERVISOR_XEN_VERSION: u32 = 17;
pub const HYPERVISOR_CONSOLE_IO: u32 = 18;
pub const HYPERVISOR_GRANT_TABLE_OP: u32 = 20;
pub const HYPERVISOR_SCHED_OP: u32 = 29;
pub const HYPERVISOR_EVENT_CHANNEL_OP: u32 = 32;
pub const HYPERVISOR_HVM_OP: u32 = 34;

// Xen's errno values (errno.h) that this platform tells apart.
pub const XEN_EPERM: i64 = 1;
pub const XEN_ENOENT: i64 = 2;
pub const XEN_ESRCH: i64 = 3;
pub const XEN_ENOMEM: i64 = 12;
pub const XEN_EBUSY: i64 = 16;
pub const XEN_EINVAL: i64 = 22;
pub const XEN_ENOSPC: i64 = 28;
pub const XEN_ENOSYS: i64 = 38;

// sched.h
pub const SCHEDOP_YIELD: u32 = 0;
pub const SCHEDOP_SHUTDOWN: u32 = 2;
pub const SCHEDOP_POLL: u32 = 3;
pub const SHUTDOWN_POWEROFF: u32 = 0;
pub const SHUTDOWN_REBOOT: u32 = 1;
pub const SHUTDOWN_CRASH: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedShutdown {
    pub reason: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SchedPoll {
    /// `XEN_GUEST_HANDLE(evtchn_port_t)`: address of an array of ports.
    pub ports: u64,
    pub nr_ports: u32,
    /// Absolute Xen system time in ns; 0 means no timeout.
    pub timeout: u64,
}

/// Xen refuses `SCHEDOP_poll` with more ports than this.
pub const SCHED_POLL_MAX_PORTS: usize = 128;

// event_channel.h
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
pub const EVTCHNOP_CLOSE: u32 = 3;
pub const EVTCHNOP_SEND: u32 = 4;
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    pub port: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: u16,
    pub remote_port: u32,
    pub local_port: u32,
}

/// `evtchn_send` and `evtchn_close` both carry just the port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EvtchnPort {
    pub port: u32,
}

/// Ports of the 2-level event channel ABI on a 64-bit guest (64 x 64).
pub const EVTCHN_2L_NR_PORTS: u32 = 4096;

// grant_table.h
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
pub const GNTTABOP_COPY: u32 = 5;
pub const GNTTABOP_QUERY_SIZE: u32 = 6;

pub const GTF_PERMIT_ACCESS: u16 = 1 << 0;
pub const GTF_READONLY: u16 = 1 << 2;
pub const GTF_READING: u16 = 1 << 3;
pub const GTF_WRITING: u16 = 1 << 4;

pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
pub const GNTMAP_READONLY: u32 = 1 << 2;

pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// The first grant references belong to the toolstack (console, xenstore).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

pub const GNTST_OKAY: i16 = 0;
pub const GNTST_GENERAL_ERROR: i16 = -1;
pub const GNTST_BAD_DOMAIN: i16 = -2;
pub const GNTST_BAD_GNTREF: i16 = -3;
pub const GNTST_BAD_HANDLE: i16 = -4;
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
pub const GNTST_PERMISSION_DENIED: i16 = -8;
pub const GNTST_BAD_PAGE: i16 = -9;
pub const GNTST_BAD_COPY_ARG: i16 = -10;
pub const GNTST_EAGAIN: i16 = -12;
pub const GNTST_NO_SPACE: i16 = -13;

/// `grant_entry_v1`: one entry of our own grant table (8 bytes).
pub const GRANT_ENTRY_V1_SIZE: usize = 8;
pub const GRANT_ENTRY_V1_FLAGS: usize = 0;
pub const GRANT_ENTRY_V1_DOMID: usize = 2;
pub const GRANT_ENTRY_V1_FRAME: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabQuerySize {
    pub dom: u16,
    pub nr_frames: u32,
    pub max_nr_frames: u32,
    pub status: i16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabMapGrantRef {
    /// For a PVH guest: the guest-physical address to map the page at.
    pub host_addr: u64,
    pub flags: u32,
    pub gref: u32,
    pub dom: u16,
    pub status: i16,
    pub handle: u32,
    pub dev_bus_addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    pub status: i16,
}

/// One side of `gnttab_copy`: a grant reference or our own frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabCopyPtr {
    /// `union { grant_ref_t ref; xen_pfn_t gmfn; }`
    pub u: u64,
    pub domid: u16,
    pub offset: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
}

// memory.h
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;
pub const XENMEM_MEMORY_MAP: u32 = 9;
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenAddToPhysmap {
    pub domid: u16,
    pub size: u16,
    pub space: u32,
    pub idx: u64,
    pub gpfn: u64,
}

// hvm/hvm_op.h, hvm/params.h
pub const HVMOP_GET_PARAM: u32 = 1;
pub const HVM_PARAM_STORE_PFN: u32 = 1;
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XenHvmParam {
    pub domid: u16,
    pub index: u32,
    pub value: u64,
}

// xen.h, arch-x86/xen.h: the shared info page.
/// `shared_info.vcpu_info[0].time`: the PV clock of vCPU 0.
pub const SHARED_INFO_VCPU0_TIME: usize = 32;
/// `shared_info.evtchn_pending`: 64 words of pending bits.
pub const SHARED_INFO_EVTCHN_PENDING: usize = 2048;
/// `shared_info.evtchn_mask`.
pub const SHARED_INFO_EVTCHN_MASK: usize = 2560;

/// `vcpu_time_info` fields, relative to its start (32 bytes).
pub const VCPU_TIME_VERSION: usize = 0;
pub const VCPU_TIME_TSC_TIMESTAMP: usize = 8;
pub const VCPU_TIME_SYSTEM_TIME: usize = 16;
pub const VCPU_TIME_TSC_TO_SYSTEM_MUL: usize = 24;
pub const VCPU_TIME_TSC_SHIFT: usize = 28;
pub const VCPU_TIME_SIZE: usize = 32;

// io/console.h: `xencons_interface`.
pub const XENCONS_IN: usize = 0;
pub const XENCONS_IN_SIZE: usize = 1024;
pub const XENCONS_OUT: usize = 1024;
pub const XENCONS_OUT_SIZE: usize = 2048;
pub const XENCONS_IN_CONS: usize = 3072;
pub const XENCONS_IN_PROD: usize = 3076;
pub const XENCONS_OUT_CONS: usize = 3080;
pub const XENCONS_OUT_PROD: usize = 3084;

// io/xs_wire.h: `xenstore_domain_interface` and `xsd_sockmsg`.
pub const XENSTORE_REQ: usize = 0;
pub const XENSTORE_RSP: usize = 1024;
pub const XENSTORE_RING_SIZE: usize = 1024;
pub const XENSTORE_REQ_CONS: usize = 2048;
pub const XENSTORE_REQ_PROD: usize = 2052;
pub const XENSTORE_RSP_CONS: usize = 2056;
pub const XENSTORE_RSP_PROD: usize = 2060;
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
pub const XSD_SOCKMSG_SIZE: usize = 16;
pub const XS_DIRECTORY: u32 = 1;
pub const XS_READ: u32 = 2;
pub const XS_WRITE: u32 = 11;
pub const XS_ERROR: u32 = 16;

// arch-x86/hvm/start_info.h
pub const HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmStartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    /// From version 1 on.
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct HvmMemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub reserved: u32,
}

/// `struct hvm_modlist_entry`: one boot module (`ramdisk=` of xl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HvmModlistEntry {
    pub paddr: u64,
    pub size: u64,
    pub cmdline_paddr: u64,
    pub reserved: u64,
}

/// `XEN_HVM_MEMMAP_TYPE_RAM`.
pub const HVM_MEMMAP_TYPE_RAM: u32 = 1;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the ELF note naming the PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

#[cfg(test)]
#[path = "../../xen-header-check.rs"]
mod xen_headers;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    /// (name, Rust value) pairs, in the order the C program prints them.
    fn rust_layouts() -> Vec<(&'static str, usize)> {
        vec![
            ("sched_shutdown", size_of::<SchedShutdown>()),
            ("sched_poll", size_of::<SchedPoll>()),
            ("sched_poll.nr_ports", offset_of!(SchedPoll, nr_ports)),
            ("sched_poll.timeout", offset_of!(SchedPoll, timeout)),
            ("evtchn_alloc_unbound", size_of::<EvtchnAllocUnbound>()),
            (
                "evtchn_alloc_unbound.port",
                offset_of!(EvtchnAllocUnbound, port),
            ),
            (
                "evtchn_bind_interdomain",
                size_of::<EvtchnBindInterdomain>(),
            ),
            (
                "evtchn_bind_interdomain.remote_port",
                offset_of!(EvtchnBindInterdomain, remote_port),
            ),
            (
                "evtchn_bind_interdomain.local_port",
                offset_of!(EvtchnBindInterdomain, local_port),
            ),
            ("evtchn_send", size_of::<EvtchnPort>()),
            ("grant_entry_v1", size_of::<GrantEntryV1>()),
            ("grant_entry_v1.flags", GRANT_ENTRY_V1_FLAGS),
            ("grant_entry_v1.domid", GRANT_ENTRY_V1_DOMID),
            ("grant_entry_v1.frame", GRANT_ENTRY_V1_FRAME),
            ("gnttab_query_size", size_of::<GnttabQuerySize>()),
            (
                "gnttab_query_size.max_nr_frames",
                offset_of!(GnttabQuerySize, max_nr_frames),
            ),
            (
                "gnttab_query_size.status",
                offset_of!(GnttabQuerySize, status),
            ),
            ("gnttab_map_grant_ref", size_of::<GnttabMapGrantRef>()),
            (
                "gnttab_map_grant_ref.flags",
                offset_of!(GnttabMapGrantRef, flags),
            ),
            (
                "gnttab_map_grant_ref.ref",
                offset_of!(GnttabMapGrantRef, gref),
            ),
            (
                "gnttab_map_grant_ref.dom",
                offset_of!(GnttabMapGrantRef, dom),
            ),
            (
                "gnttab_map_grant_ref.status",
                offset_of!(GnttabMapGrantRef, status),
            ),
            (
                "gnttab_map_grant_ref.handle",
                offset_of!(GnttabMapGrantRef, handle),
            ),
            (
                "gnttab_map_grant_ref.dev_bus_addr",
                offset_of!(GnttabMapGrantRef, dev_bus_addr),
            ),
            ("gnttab_unmap_grant_ref", size_of::<GnttabUnmapGrantRef>()),
            (
                "gnttab_unmap_grant_ref.handle",
                offset_of!(GnttabUnmapGrantRef, handle),
            ),
            (
                "gnttab_unmap_grant_ref.status",
                offset_of!(GnttabUnmapGrantRef, status),
            ),
            ("gnttab_copy", size_of::<GnttabCopy>()),
            ("gnttab_copy.source.domid", offset_of!(GnttabCopyPtr, domid)),
            (
                "gnttab_copy.source.offset",
                offset_of!(GnttabCopyPtr, offset),
            ),
            ("gnttab_copy.dest", offset_of!(GnttabCopy, dest)),
            ("gnttab_copy.len", offset_of!(GnttabCopy, len)),
            ("gnttab_copy.flags", offset_of!(GnttabCopy, flags)),
            ("gnttab_copy.status", offset_of!(GnttabCopy, status)),
            ("xen_add_to_physmap", size_of::<XenAddToPhysmap>()),
            (
                "xen_add_to_physmap.space",
                offset_of!(XenAddToPhysmap, space),
            ),
            ("xen_add_to_physmap.idx", offset_of!(XenAddToPhysmap, idx)),
            ("xen_add_to_physmap.gpfn", offset_of!(XenAddToPhysmap, gpfn)),
            ("xen_hvm_param", size_of::<XenHvmParam>()),
            ("xen_hvm_param.index", offset_of!(XenHvmParam, index)),
            ("xen_hvm_param.value", offset_of!(XenHvmParam, value)),
            ("shared_info.vcpu_info[0].time", SHARED_INFO_VCPU0_TIME),
            ("shared_info.evtchn_pending", SHARED_INFO_EVTCHN_PENDING),
            ("shared_info.evtchn_mask", SHARED_INFO_EVTCHN_MASK),
            ("vcpu_time_info", VCPU_TIME_SIZE),
            ("vcpu_time_info.tsc_timestamp", VCPU_TIME_TSC_TIMESTAMP),
            ("vcpu_time_info.system_time", VCPU_TIME_SYSTEM_TIME),
            (
                "vcpu_time_info.tsc_to_system_mul",
                VCPU_TIME_TSC_TO_SYSTEM_MUL,
            ),
            ("vcpu_time_info.tsc_shift", VCPU_TIME_TSC_SHIFT),
            ("xencons_interface.out", XENCONS_OUT),
            ("xencons_interface.in_cons", XENCONS_IN_CONS),
            ("xencons_interface.in_prod", XENCONS_IN_PROD),
            ("xencons_interface.out_cons", XENCONS_OUT_CONS),
            ("xencons_interface.out_prod", XENCONS_OUT_PROD),
            ("xenstore_domain_interface.rsp", XENSTORE_RSP),
            ("xenstore_domain_interface.req_cons", XENSTORE_REQ_CONS),
            ("xenstore_domain_interface.req_prod", XENSTORE_REQ_PROD),
            ("xenstore_domain_interface.rsp_cons", XENSTORE_RSP_CONS),
            ("xenstore_domain_interface.rsp_prod", XENSTORE_RSP_PROD),
            ("XENSTORE_RING_SIZE", XENSTORE_RING_SIZE),
            ("XENSTORE_PAYLOAD_MAX", XENSTORE_PAYLOAD_MAX),
            ("xsd_sockmsg", XSD_SOCKMSG_SIZE),
            ("XS_READ", XS_READ as usize),
            ("XS_WRITE", XS_WRITE as usize),
            ("XS_ERROR", XS_ERROR as usize),
            ("XS_DIRECTORY", XS_DIRECTORY as usize),
            ("hvm_start_info", size_of::<HvmStartInfo>()),
            (
                "hvm_start_info.memmap_paddr",
                offset_of!(HvmStartInfo, memmap_paddr),
            ),
            (
                "hvm_start_info.memmap_entries",
                offset_of!(HvmStartInfo, memmap_entries),
            ),
            (
                "hvm_start_info.nr_modules",
                offset_of!(HvmStartInfo, nr_modules),
            ),
            (
                "hvm_start_info.modlist_paddr",
                offset_of!(HvmStartInfo, modlist_paddr),
            ),
            ("hvm_modlist_entry", size_of::<HvmModlistEntry>()),
            (
                "hvm_modlist_entry.paddr",
                offset_of!(HvmModlistEntry, paddr),
            ),
            ("hvm_modlist_entry.size", offset_of!(HvmModlistEntry, size)),
            (
                "hvm_modlist_entry.cmdline_paddr",
                offset_of!(HvmModlistEntry, cmdline_paddr),
            ),
            ("hvm_memmap_table_entry", size_of::<HvmMemmapEntry>()),
            (
                "hvm_memmap_table_entry.type",
                offset_of!(HvmMemmapEntry, kind),
            ),
            ("XEN_HVM_START_MAGIC_VALUE", HVM_START_MAGIC_VALUE as usize),
            (
                "XEN_ELFNOTE_PHYS32_ENTRY",
                XEN_ELFNOTE_PHYS32_ENTRY as usize,
            ),
            (
                "GNTTAB_NR_RESERVED_ENTRIES",
                GNTTAB_NR_RESERVED_ENTRIES as usize,
            ),
            ("GTF_readonly", GTF_READONLY as usize),
            ("GTF_reading", GTF_READING as usize),
            ("GTF_writing", GTF_WRITING as usize),
            ("GNTMAP_host_map", GNTMAP_HOST_MAP as usize),
            ("GNTMAP_readonly", GNTMAP_READONLY as usize),
            ("GNTCOPY_dest_gref", GNTCOPY_DEST_GREF as usize),
            ("GNTST_bad_copy_arg", (-GNTST_BAD_COPY_ARG) as usize),
            ("GNTST_eagain", (-GNTST_EAGAIN) as usize),
            ("HVM_PARAM_CONSOLE_PFN", HVM_PARAM_CONSOLE_PFN as usize),
            (
                "HVM_PARAM_CONSOLE_EVTCHN",
                HVM_PARAM_CONSOLE_EVTCHN as usize,
            ),
            ("HVM_PARAM_STORE_PFN", HVM_PARAM_STORE_PFN as usize),
            ("HVM_PARAM_STORE_EVTCHN", HVM_PARAM_STORE_EVTCHN as usize),
            ("DOMID_SELF", DOMID_SELF as usize),
            ("EVTCHN_2L_NR_PORTS", EVTCHN_2L_NR_PORTS as usize),
        ]
    }

    #[test]
    fn layouts_match_the_c_compiler() {
        xen_headers::check_against_headers(
            "share-pvh",
            "#include <xen/xen.h>\n#include <xen/sched.h>\n#include <xen/event_channel.h>\n#include <xen/grant_table.h>\n#include <xen/memory.h>\n#include <xen/hvm/hvm_op.h>\n#include <xen/hvm/params.h>\n#include <xen/io/console.h>\n#include <xen/io/xs_wire.h>\n#include <xen/arch-x86/hvm/start_info.h>\n#include <xen/elfnote.h>\n#include <xen/event_channel.h>\n#define EVTCHN_2L_NR_PORTS (sizeof(xen_ulong_t) * 8 * sizeof(xen_ulong_t) * 8)\n",
            &rust_layouts(),
        );
    }

    #[test]
    fn sizes_without_a_c_compiler() {
        assert_eq!(size_of::<SchedPoll>(), 24);
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 12);
        assert_eq!(size_of::<GrantEntryV1>(), GRANT_ENTRY_V1_SIZE);
        assert_eq!(size_of::<GnttabMapGrantRef>(), 32);
        assert_eq!(size_of::<GnttabUnmapGrantRef>(), 24);
        assert_eq!(size_of::<GnttabCopy>(), 40);
        assert_eq!(size_of::<XenAddToPhysmap>(), 24);
        assert_eq!(size_of::<XenHvmParam>(), 16);
        assert_eq!(size_of::<HvmStartInfo>(), 56);
        assert_eq!(size_of::<HvmMemmapEntry>(), 24);
    }
}
