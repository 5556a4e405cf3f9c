//! The hypercall page and typed hypercall wrappers.
//!
//! Xen writes the hypercall stubs (`vmcall` or `vmmcall`, whichever this
//! CPU needs) into a page of ours when we name it in the MSR from CPUID leaf
//! `base + 2`; hypercall `n` is a call to `page + 32 * n`.
//!
//! Red zone: this kernel is built for the host target, whose code may keep
//! data in the 128 bytes below `rsp`. The `call` of a hypercall pushes a
//! return address there, so the asm moves `rsp` below the red zone first.
//!
//! One of the small modules allowed `unsafe`: the raw calls are `unsafe`
//! (Xen reads and writes the memory their arguments point at); the typed
//! wrappers are safe because each passes a pointer to a live, exclusively
//! borrowed argument structure of exactly the layout Xen expects.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use super::abi::*;
use super::cpu;
use share_hal::error::{Error, Result};

#[repr(C, align(4096))]
struct HypercallPage(UnsafeCell<[u8; 4096]>);

// SAFETY: Rust code never reads or writes the page; only Xen writes it (once,
// at `init`) and the CPU executes it.
unsafe impl Sync for HypercallPage {}

static HYPERCALL_PAGE: HypercallPage = HypercallPage(UnsafeCell::new([0; 4096]));
static READY: AtomicBool = AtomicBool::new(false);

/// Whether Xen is present and the hypercall page is set up.
pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// Detects Xen and installs the hypercall page. Returns Xen's version
/// (major, minor).
///
/// The kernel runs identity-mapped, so the page's address is also its
/// guest-physical address.
pub fn init() -> Result<(u32, u32)> {
    let base = cpu::xen_cpuid_base().ok_or(Error::Unsupported {
        op: "hypercalls",
        why: "not running on Xen (no Xen CPUID leaves)",
    })?;
    let (pages, msr, _, _) = cpu::cpuid(base + 2);
    if pages == 0 {
        return Err(Error::Unsupported {
            op: "hypercalls",
            why: "Xen offers no hypercall page",
        });
    }
    let addr = HYPERCALL_PAGE.0.get() as u64;
    // SAFETY: this MSR only makes Xen fill our dedicated hypercall page,
    // which Rust code never accesses.
    unsafe { cpu::wrmsr(msr, addr) };
    READY.store(true, Ordering::Release);
    let (version, _, _, _) = cpu::cpuid(base + 1);
    Ok((version >> 16, version & 0xffff))
}

/// Issues hypercall `op` with up to five arguments.
///
/// # Safety
/// `init` succeeded, and every pointer argument points at memory that Xen
/// may read and write as hypercall `op` defines, for the call's duration.
unsafe fn hypercall(op: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    if !ready() {
        return -XEN_ENOSYS;
    }
    let entry = HYPERCALL_PAGE.0.get() as u64 + u64::from(op) * 32;
    let ret: i64;
    // SAFETY: `entry` is a stub Xen wrote into the hypercall page (`ready`);
    // `rsp` moves below the red zone before the call and back after it and
    // stays 16-byte aligned; every register Xen may change is declared
    // clobbered; the argument memory is the caller's contract.
    unsafe {
        asm!(
            "sub rsp, 128",
            "call {entry}",
            "add rsp, 128",
            entry = in(reg) entry,
            lateout("rax") ret,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// Turns a negative Xen errno into this crate's error for `op`.
pub fn check(op: &'static str, rc: i64) -> Result<i64> {
    if rc >= 0 {
        return Ok(rc);
    }
    Err(match -rc {
        XEN_ENOMEM => Error::OutOfMemory,
        _ => Error::Hypervisor { op, code: rc },
    })
}

/// `HYPERVISOR_event_channel_op` over one argument structure.
pub fn event_channel_op<T: EventChannelArg>(cmd: u32, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a live exclusive borrow of the structure of `cmd`
    // (EventChannelArg is only implemented for those).
    unsafe {
        hypercall(
            HYPERVISOR_EVENT_CHANNEL_OP,
            cmd.into(),
            arg as *mut T as u64,
            0,
            0,
            0,
        )
    }
}

/// Structures `event_channel_op` may pass.
pub trait EventChannelArg {}
impl EventChannelArg for EvtchnAllocUnbound {}
impl EventChannelArg for EvtchnBindInterdomain {}
impl EventChannelArg for EvtchnPort {}

/// `HYPERVISOR_sched_op(SCHEDOP_poll)`: blocks until one of `ports` is
/// pending or Xen's system time passes `timeout_ns` (0: no timeout).
pub fn sched_poll(ports: &[u32], timeout_ns: u64) -> i64 {
    if ports.len() > SCHED_POLL_MAX_PORTS {
        return -XEN_EINVAL;
    }
    let mut poll = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: ports.len() as u32,
        timeout: timeout_ns,
    };
    // SAFETY: `poll` and the port array it points at are live for the call;
    // Xen only reads them.
    unsafe {
        hypercall(
            HYPERVISOR_SCHED_OP,
            SCHEDOP_POLL.into(),
            &mut poll as *mut SchedPoll as u64,
            0,
            0,
            0,
        )
    }
}

/// `HYPERVISOR_sched_op(SCHEDOP_yield)`.
pub fn sched_yield() {
    // SAFETY: SCHEDOP_yield takes no argument memory.
    unsafe { hypercall(HYPERVISOR_SCHED_OP, SCHEDOP_YIELD.into(), 0, 0, 0, 0) };
}

/// `HYPERVISOR_sched_op(SCHEDOP_shutdown)`: ends this domain with `reason`
/// (`SHUTDOWN_*`), so that `xl list` and `on_poweroff`/`on_crash` see it.
/// Returns only if Xen refused (or is absent).
pub fn sched_shutdown(reason: u32) -> i64 {
    let mut arg = SchedShutdown { reason };
    // SAFETY: `arg` is live for the call; Xen only reads it.
    unsafe {
        hypercall(
            HYPERVISOR_SCHED_OP,
            SCHEDOP_SHUTDOWN.into(),
            &mut arg as *mut SchedShutdown as u64,
            0,
            0,
            0,
        )
    }
}

/// `HYPERVISOR_hvm_op(HVMOP_get_param)` for our own domain.
pub fn hvm_get_param(index: u32) -> Result<u64> {
    let mut arg = XenHvmParam {
        domid: DOMID_SELF,
        index,
        value: 0,
    };
    // SAFETY: `arg` is live for the call; Xen reads and writes only it.
    let rc = unsafe {
        hypercall(
            HYPERVISOR_HVM_OP,
            HVMOP_GET_PARAM.into(),
            &mut arg as *mut XenHvmParam as u64,
            0,
            0,
            0,
        )
    };
    check("HVMOP_get_param", rc)?;
    Ok(arg.value)
}

/// `XENMEM_add_to_physmap`: makes Xen-owned page `idx` of `space` (shared
/// info, a grant table frame) appear at our frame `gpfn`.
///
/// # Safety
/// Whatever was at `gpfn` is replaced: it must be a page this program
/// reaches only through `SharedMem` from now on.
pub unsafe fn add_to_physmap(space: u32, idx: u64, gpfn: u64) -> Result<()> {
    let mut arg = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space,
        idx,
        gpfn,
    };
    // SAFETY: `arg` is live for the call; the page replaced is the caller's
    // contract.
    let rc = unsafe {
        hypercall(
            HYPERVISOR_MEMORY_OP,
            XENMEM_ADD_TO_PHYSMAP.into(),
            &mut arg as *mut XenAddToPhysmap as u64,
            0,
            0,
            0,
        )
    };
    check("XENMEM_add_to_physmap", rc).map(drop)
}

/// `GNTTABOP_query_size` for our own grant table: (frames, max frames).
pub fn gnttab_query_size() -> Result<(u32, u32)> {
    let mut arg = GnttabQuerySize {
        dom: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: one live argument structure, count 1.
    let rc = unsafe {
        hypercall(
            HYPERVISOR_GRANT_TABLE_OP,
            GNTTABOP_QUERY_SIZE.into(),
            &mut arg as *mut GnttabQuerySize as u64,
            1,
            0,
            0,
        )
    };
    check("GNTTABOP_query_size", rc)?;
    if arg.status != GNTST_OKAY {
        return Err(Error::Hypervisor {
            op: "GNTTABOP_query_size",
            code: arg.status.into(),
        });
    }
    Ok((arg.nr_frames, arg.max_nr_frames))
}

/// `GNTTABOP_map_grant_ref` over a batch; each entry's `status` tells its
/// outcome.
///
/// # Safety
/// Each `host_addr` must be a guest-physical page that no Rust reference
/// covers and that nothing else is mapped at (the grant replaces it).
pub unsafe fn gnttab_map(ops: &mut [GnttabMapGrantRef]) -> i64 {
    // SAFETY: the array is live and exclusively borrowed; the target pages
    // are the caller's contract.
    unsafe {
        hypercall(
            HYPERVISOR_GRANT_TABLE_OP,
            GNTTABOP_MAP_GRANT_REF.into(),
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
            0,
            0,
        )
    }
}

/// `GNTTABOP_unmap_grant_ref` over a batch.
pub fn gnttab_unmap(ops: &mut [GnttabUnmapGrantRef]) -> i64 {
    // SAFETY: the array is live and exclusively borrowed; unmapping only
    // removes pages from our physical address space (the caller stops using
    // them before, see gnttab.rs).
    unsafe {
        hypercall(
            HYPERVISOR_GRANT_TABLE_OP,
            GNTTABOP_UNMAP_GRANT_REF.into(),
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
            0,
            0,
        )
    }
}

/// `GNTTABOP_copy` over a batch.
///
/// # Safety
/// Every local frame named as a destination must be memory this program
/// reaches only through `SharedMem` (Xen writes it like a device would).
pub unsafe fn gnttab_copy(ops: &mut [GnttabCopy]) -> i64 {
    // SAFETY: the array is live and exclusively borrowed; destinations are
    // the caller's contract.
    unsafe {
        hypercall(
            HYPERVISOR_GRANT_TABLE_OP,
            GNTTABOP_COPY.into(),
            ops.as_mut_ptr() as u64,
            ops.len() as u64,
            0,
            0,
        )
    }
}
