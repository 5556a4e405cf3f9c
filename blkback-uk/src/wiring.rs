//! The vdevice wiring every way of running the server shares (the PVH
//! image, `blkback-file`): dom0's changes to the domain's vdevice page go
//! to [`Server::apply`].
//!
//! `VdeviceBus::poll` takes the platform (to acknowledge) and a handler
//! that does not get it, but creating a share needs the platform too. The
//! two uses never overlap (poll does not touch the platform while the
//! handler runs), so the platform is lent to both through a `RefCell`: the
//! bus gets a [`Lent`] handle that borrows it for each call, the handler
//! borrows it while it applies the change.

use core::cell::RefCell;

use share_hal::platform::{
    Access, Clock, CopySeg, DomId, EventChannels, Frame, GrantRef, GrantTable, Memory, Platform,
    Port,
};
use share_hal::vdevice::{Applied, Change, VdeviceBus};
use share_hal::wire::vdevice::status;
use share_hal::{Error, Result};

use crate::server::Server;
use crate::store::Store;

/// Applies a pending vdevice change, if any, to `server`, and
/// acknowledges it. Call after each trigger on the bus's port.
pub fn poll_vdevice<P: Platform, S: Store>(
    bus: &mut VdeviceBus<P::Pages>,
    p: &mut P,
    server: &mut Server<P, S>,
) -> Result<Option<Change>> {
    let cell = RefCell::new(p);
    let mut lent = Lent(&cell);
    bus.poll(
        &mut lent,
        &mut |index, old, new| match cell.try_borrow_mut() {
            Ok(mut p) => server.apply(&mut **p, index, old, new),
            // Cannot happen (poll holds no borrow while it calls us); refused
            // rather than panicking if it ever did.
            Err(_) => Applied::Refused(status::EIO),
        },
    )
}

/// A platform lent through a `RefCell`, borrowed for each call.
struct Lent<'a, 'p, P>(&'a RefCell<&'p mut P>);

fn busy() -> Error {
    Error::InvalidArgument {
        what: "platform already borrowed (vdevice handler re-entered)",
    }
}

impl<P: Platform> Lent<'_, '_, P> {
    fn with<T>(&mut self, f: impl FnOnce(&mut P) -> Result<T>) -> Result<T> {
        let mut p = self.0.try_borrow_mut().map_err(|_| busy())?;
        f(&mut **p)
    }
}

impl<P: Platform> Memory for Lent<'_, '_, P> {
    type Pages = P::Pages;
    fn alloc_pages(&mut self, count: usize) -> Result<P::Pages> {
        self.with(|p| p.alloc_pages(count))
    }
}

impl<P: Platform> GrantTable for Lent<'_, '_, P> {
    type Mapping = P::Mapping;
    fn grant(&mut self, frame: Frame, to: DomId, access: Access) -> Result<GrantRef> {
        self.with(|p| p.grant(frame, to, access))
    }
    fn revoke(&mut self, gref: GrantRef) -> Result<()> {
        self.with(|p| p.revoke(gref))
    }
    fn map(&mut self, from: DomId, grefs: &[GrantRef], access: Access) -> Result<P::Mapping> {
        self.with(|p| p.map(from, grefs, access))
    }
    fn unmap(&mut self, mapping: P::Mapping) -> Result<()> {
        self.with(|p| p.unmap(mapping))
    }
    fn copy(&mut self, segs: &mut [CopySeg]) -> Result<()> {
        self.with(|p| p.copy(segs))
    }
}

impl<P: Platform> EventChannels for Lent<'_, '_, P> {
    fn alloc_unbound(&mut self, remote: DomId) -> Result<Port> {
        self.with(|p| p.alloc_unbound(remote))
    }
    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port> {
        self.with(|p| p.bind_interdomain(remote, remote_port))
    }
    fn notify(&mut self, port: Port) -> Result<()> {
        self.with(|p| p.notify(port))
    }
    fn close(&mut self, port: Port) -> Result<()> {
        self.with(|p| p.close(port))
    }
    fn wait(&mut self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()> {
        self.with(|p| p.wait(deadline_ns, fired))
    }
}

impl<P: Platform> Clock for Lent<'_, '_, P> {
    fn now_ns(&self) -> u64 {
        // A clock read cannot fail; while borrowed elsewhere (never, see
        // the module doc) time is reported as not having moved.
        self.0.try_borrow().map(|p| p.now_ns()).unwrap_or(0)
    }
}

impl<P: Platform> Platform for Lent<'_, '_, P> {
    fn domid(&self) -> DomId {
        self.0.try_borrow().map(|p| p.domid()).unwrap_or(0)
    }
}
