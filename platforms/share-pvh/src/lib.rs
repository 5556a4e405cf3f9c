//! The Xen PVH platform: raw hypercalls from a unikernel domain.
//!
//! A module per concern; `unsafe` lives only in [`cpu`], [`hypercall`] and
//! [`phys`] (plus the `SharedMem` windows the others open over pages Xen
//! placed, each with its `SAFETY` note). Every Xen structure is in [`abi`],
//! checked against Xen's public headers.
//!
//! Boot order (the runtime, `pvh-rt`, drives it): port 0xE9 works from the
//! first instruction; [`init`] installs the hypercall page, maps the shared
//! info page (PV clock, event bits) and moves the console to the PV console
//! ring; [`XenPvh::new`] then sets up the grant table and reads the domain
//! id with the one xenstore bootstrap client.
//!
//! The kernel runs identity-mapped with interrupts off; see `pvh-rt`.
#![cfg(target_arch = "x86_64")]
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod abi;
pub mod console;
pub mod cpu;
pub mod evtchn;
pub mod gnttab;
pub mod hypercall;
pub mod phys;
pub mod time;
pub mod xenstore;

use alloc::format;
use core::cell::UnsafeCell;

use share_hal::error::{Error, Result};
use share_hal::platform::{
    Access, Clock, CopySeg, DomId, EventChannels, Frame, GrantRef, GrantTable, Memory, Platform,
    Port,
};

pub use evtchn::Doorbell;
pub use gnttab::{XenMapping, XenPages};
pub use xenstore::XenStore;

/// What [`init`] found.
#[derive(Clone, Copy, Debug)]
pub struct XenInfo {
    pub version: (u32, u32),
    /// Whether the PV console ring is in use (else port 0xE9 only).
    pub console_ring: bool,
}

#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: Rust code never accesses the page itself: it is replaced by Xen's
// shared info page and reached only through a SharedMem window.
unsafe impl Sync for Page {}

/// The frame the shared info page is placed at (its RAM is given up).
static SHARED_INFO_PAGE: Page = Page(UnsafeCell::new([0; 4096]));

/// Why the domain stops, as `xl` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Finished normally (`xl` runs `on_poweroff`).
    Poweroff,
    /// Asks to be restarted (`on_reboot`).
    Reboot,
    /// Crashed (`on_crash`; `xl list` shows `c` with `preserve`).
    Crash,
}

/// QEMU's `isa-debug-exit` port, for development runs without Xen.
const QEMU_EXIT_PORT: u16 = 0xf4;

/// Stops the domain with `reason`. Without Xen (plain QEMU), exits QEMU
/// through `isa-debug-exit` if present (status 1 + 2 * code), else halts.
pub fn shutdown(reason: ShutdownReason) -> ! {
    let code = match reason {
        ShutdownReason::Poweroff => abi::SHUTDOWN_POWEROFF,
        ShutdownReason::Reboot => abi::SHUTDOWN_REBOOT,
        ShutdownReason::Crash => abi::SHUTDOWN_CRASH,
    };
    if hypercall::ready() {
        let rc = hypercall::sched_shutdown(code);
        console::emergency_write(format!("shutdown refused by Xen: {rc}\n").as_bytes());
    } else {
        cpu::outb(QEMU_EXIT_PORT, code as u8);
    }
    cpu::halt_forever()
}

/// Brings up what every later step needs: hypercall page, shared info
/// page (clock and event bits), PV console ring.
pub fn init() -> Result<XenInfo> {
    let version = hypercall::init()?;
    let gfn = SHARED_INFO_PAGE.0.get() as u64 / share_hal::platform::PAGE_SIZE as u64;
    // SAFETY: the static page is never accessed by Rust code; from now on it
    // is Xen's shared info page, reached only through the window below.
    unsafe { hypercall::add_to_physmap(abi::XENMAPSPACE_SHARED_INFO, 0, gfn)? };
    // SAFETY: as above.
    let si = unsafe { phys::window(gfn, 1)? };
    time::set_shared_info(si);
    let console_ring = match console::init_ring() {
        Ok(()) => true,
        Err(e) => {
            log::warn!("PV console ring unavailable ({e}); staying on port 0xE9");
            false
        }
    };
    Ok(XenInfo {
        version,
        console_ring,
    })
}

/// The Xen PVH platform: implements the share-hal platform traits.
pub struct XenPvh {
    domid: DomId,
    grants: gnttab::Grants,
    events: evtchn::Events,
}

impl XenPvh {
    /// Sets up the grant table and learns the domain id from xenstore.
    /// `ram_top` is the end of the domain's RAM (from the memory map): the
    /// window foreign grants are mapped into must lie above it.
    pub fn new(ram_top: u64, store: &mut XenStore) -> Result<XenPvh> {
        let window_base = gnttab::MAP_WINDOW_BASE * share_hal::platform::PAGE_SIZE as u64;
        let window_end =
            window_base + (gnttab::MAP_WINDOW_PAGES * share_hal::platform::PAGE_SIZE) as u64;
        if ram_top > window_base || window_end > phys::IDENTITY_LIMIT {
            return Err(Error::Unsupported {
                op: "mapping foreign grants",
                why: "the domain has RAM above 2 GiB, where the grant map window lies",
            });
        }
        let si = *time::shared_info().ok_or(Error::Unsupported {
            op: "event channels",
            why: "xen::init did not run",
        })?;
        let grants = gnttab::Grants::init()?;
        let domid = store.read("domid")?;
        let domid = domid.trim().parse::<DomId>().map_err(|_| Error::Protocol {
            what: "xenstore domid is not a number",
        })?;
        Ok(XenPvh {
            domid,
            grants,
            events: evtchn::Events::new(si),
        })
    }

    /// A doorbell for an open event channel `port`, usable without the
    /// platform (see [`Doorbell`]).
    pub fn doorbell(&self, port: Port) -> Result<Doorbell> {
        self.events.doorbell(port)
    }

    /// Entries of the grant table (the first 8 are the toolstack's).
    pub fn grant_capacity(&self) -> u32 {
        self.grants.capacity()
    }
}

impl Memory for XenPvh {
    type Pages = XenPages;

    fn alloc_pages(&mut self, count: usize) -> Result<XenPages> {
        XenPages::alloc(count, &self.grants.registry)
    }
}

impl GrantTable for XenPvh {
    type Mapping = XenMapping;

    fn grant(&mut self, frame: Frame, to: DomId, access: Access) -> Result<GrantRef> {
        self.grants.grant(frame, to, access)
    }

    fn revoke(&mut self, gref: GrantRef) -> Result<()> {
        self.grants.revoke(gref)
    }

    fn map(&mut self, from: DomId, grefs: &[GrantRef], access: Access) -> Result<XenMapping> {
        self.grants.map(from, grefs, access)
    }

    fn unmap(&mut self, mapping: XenMapping) -> Result<()> {
        self.grants.unmap(mapping)
    }

    fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()> {
        self.grants.copy(segs)
    }
}

impl EventChannels for XenPvh {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Port> {
        self.events.alloc_unbound(remote)
    }

    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port> {
        self.events.bind_interdomain(remote, remote_port)
    }

    fn notify(&mut self, port: Port) -> Result<()> {
        self.events.notify(port)
    }

    fn close(&mut self, port: Port) -> Result<()> {
        self.events.close(port)
    }

    fn wait(&mut self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()> {
        self.events.wait(deadline_ns, fired)
    }
}

impl Clock for XenPvh {
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }
}

impl Platform for XenPvh {
    fn domid(&self) -> DomId {
        self.domid
    }
}
