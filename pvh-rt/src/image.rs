//! What every backend image does around its own logic: bring up the
//! platform, publish its vdevice page (`data/vdevice`, the one xenstore
//! write, docs/design.md), say it is ready, and serve vdevice changes as
//! triggers arrive.

use alloc::string::ToString;

use share_hal::platform::{EventChannels, Platform};
use share_hal::vdevice::{Applied, Change, VdeviceBus};
use share_hal::wire::vdevice::EntryRepr;
use share_hal::{Port, Result};
use share_pvh::{shutdown, ShutdownReason, XenPages, XenPvh, XenStore};

use crate::Runtime;

/// A backend domain, up and published.
pub struct Domain {
    pub pvh: XenPvh,
    pub store: XenStore,
    pub vdevice: VdeviceBus<XenPages>,
}

/// Entries of a backend's vdevice page.
pub const VDEVICE_ENTRIES: u16 = 32;

fn try_bring_up(rt: &Runtime) -> Result<Domain> {
    let (mut pvh, mut store) = rt.platform()?;
    let vdevice = VdeviceBus::create(&mut pvh, VDEVICE_ENTRIES)?;
    store.write("data/vdevice", &vdevice.bootstrap().to_string())?;
    Ok(Domain {
        pvh,
        store,
        vdevice,
    })
}

/// Brings the domain up; a failure is reported and crashes the domain (a
/// backend that cannot publish itself is of no use to anyone).
pub fn bring_up(rt: &Runtime, name: &str) -> Domain {
    match try_bring_up(rt) {
        Ok(d) => {
            log::info!(
                "{name}: domain {} published data/vdevice = {}",
                d.pvh.domid(),
                d.vdevice.bootstrap()
            );
            d
        }
        Err(e) => {
            log::error!("{name}: bringing up the platform failed: {e}");
            shutdown(ShutdownReason::Crash)
        }
    }
}

/// Waits for triggers forever: vdevice changes go to `apply`, every other
/// port to `other`.
pub fn serve(
    d: &mut Domain,
    apply: &mut dyn FnMut(u32, &EntryRepr, &EntryRepr) -> Applied,
    other: &mut dyn FnMut(&mut XenPvh, Port),
) -> ! {
    let vport = d.vdevice.port();
    loop {
        let mut fired = alloc::vec::Vec::new();
        if let Err(e) = d.pvh.wait(None, &mut |p| fired.push(p)) {
            log::error!("waiting for triggers failed: {e}");
            shutdown(ShutdownReason::Crash)
        }
        for port in fired {
            if port != vport {
                other(&mut d.pvh, port);
                continue;
            }
            match d.vdevice.poll(&mut d.pvh, apply) {
                Ok(Some(Change {
                    serial,
                    index,
                    status,
                    ..
                })) => {
                    log::info!("vdevice change {serial} (entry {index}): status {status}")
                }
                Ok(None) => {}
                Err(e) => log::warn!("vdevice change could not be handled: {e}"),
            }
        }
    }
}
