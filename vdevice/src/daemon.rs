//! `vdevice daemon`: devices that come back. Each pass compares the record
//! with the running domains (by name) and makes the pages agree again:
//!
//! - a member running under a new id (rebooted, restored) gets its devices
//!   back: the backend's share for its old id is freed, a new one made;
//! - a backend running under a new id (destroyed and re-created) gets its
//!   LANs and disks back (a disk's file given to it again), and each member
//!   is reconnected: a network port is made again, a disk entry is
//!   rewritten in place so the member keeps its block device;
//! - a member that is gone has what it held freed at once (the backend's
//!   share for it), and leaves the record once it has been gone longer
//!   than the grace period (a saved domain is gone until restored).
//!
//! A pass is level-triggered and idempotent: the watches on
//! `@introduceDomain` / `@releaseDomain` only say when to run one, and a
//! step that cannot be made yet (a new domain that has not published its
//! vdevice page) is simply tried again on the next pass.

use share_hal::platform::{DomId, Platform};
use share_hal::wire::vdevice::{Kind, Role, UplinkRepr};

use crate::admin::{free_owner, spec, AdminError};
use crate::host::{by_name, DomainInfo, Host};
use crate::record::{Device, Record, Stale, What};
use crate::{Log, Lookup, Tool, ToolError};

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// The record changed (save it).
    pub changed: bool,
    /// Something is left for a later pass (a domain not ready yet, a step
    /// that failed).
    pub pending: bool,
}

/// One reconciliation pass over every device of `record`. `now_s` is the
/// wall clock (seconds since the epoch; the record keeps when a domain
/// went away), `forget_after_s` the grace period before a member that is
/// gone leaves the record.
pub fn reconcile<P: Platform, L: Lookup, H: Host>(
    tool: &mut Tool<P, L>,
    host: &mut H,
    record: &mut Record,
    now_s: u64,
    forget_after_s: u64,
    log: Log<'_>,
) -> Result<Pass, AdminError> {
    let domains = host.domains().map_err(AdminError::Host)?;
    let mut pass = Pass::default();
    for dev in record.devices.iter_mut() {
        device(
            tool,
            host,
            &domains,
            dev,
            now_s,
            forget_after_s,
            &mut pass,
            log,
        );
    }
    Ok(pass)
}

#[allow(clippy::too_many_arguments)]
fn device<P: Platform, L: Lookup, H: Host>(
    tool: &mut Tool<P, L>,
    host: &mut H,
    domains: &[DomainInfo],
    dev: &mut Device,
    now_s: u64,
    forget_after_s: u64,
    pass: &mut Pass,
    log: Log<'_>,
) {
    let name = dev.name.clone();
    let Some(b) = by_name(domains, &dev.backend.name).map(|d| d.domid) else {
        backend_gone(tool, domains, dev, now_s, pass, log);
        return;
    };
    if dev.backend.domid != Some(b) && !backend_back(tool, host, dev, b, pass, log) {
        return;
    }
    let s = spec(dev);
    let mut keep = Vec::with_capacity(dev.members.len());
    for mut m in std::mem::take(&mut dev.members) {
        let running = by_name(domains, &m.name).map(|d| d.domid);
        // What the backend holds for an id the member no longer has.
        if let Some(old) = m.domid.filter(|&old| running != Some(old)) {
            match free_owner(tool, b, old, s, log) {
                Ok(()) => {
                    m.domid = None;
                    pass.changed = true;
                }
                Err(e) => {
                    log(&format!("{name}: freeing what domain {old} held: {e}"));
                    pass.pending = true;
                }
            }
        }
        match running {
            None => {
                let since = *m.away_since.get_or_insert(now_s);
                pass.changed |= since == now_s;
                if m.domid.is_none() && now_s.saturating_sub(since) >= forget_after_s {
                    log(&format!(
                        "{name}: domain {} has been gone {} s: no longer a member",
                        m.name,
                        now_s.saturating_sub(since)
                    ));
                    pass.changed = true;
                    continue;
                }
                pass.pending = true;
            }
            Some(id) if m.domid == Some(id) => {
                if m.away_since.take().is_some() {
                    pass.changed = true;
                }
            }
            Some(id) if m.domid.is_none() => match join(
                tool,
                dev.stale,
                b,
                id,
                crate::admin::spec_for(dev, &m.name),
                log,
            ) {
                Ok(()) => {
                    log(&format!(
                        "{name}: domain {} ({id}) is connected again",
                        m.name
                    ));
                    m.domid = Some(id);
                    m.away_since = None;
                    pass.changed = true;
                }
                Err(ToolError::NoBootstrap { .. }) => {
                    log(&format!(
                        "{name}: domain {} ({id}) has not published its vdevice page yet",
                        m.name
                    ));
                    pass.pending = true;
                }
                Err(e) => {
                    log(&format!(
                        "{name}: reconnecting domain {} ({id}): {e}",
                        m.name
                    ));
                    pass.pending = true;
                }
            },
            // Its old id's share is still held (freeing failed): later.
            Some(_) => {}
        }
        keep.push(m);
    }
    dev.members = keep;
    if dev.stale.is_some()
        && dev
            .members
            .iter()
            .all(|m| m.domid.is_some() || m.away_since.is_some())
    {
        dev.stale = None;
        pass.changed = true;
    }
}

/// The backend is not running: what members hold of it is freed (network
/// ports; a disk entry stays, to be rewritten in place when the backend
/// is back, so the member keeps its block device and its waiting
/// requests).
fn backend_gone<P: Platform, L: Lookup>(
    tool: &mut Tool<P, L>,
    domains: &[DomainInfo],
    dev: &mut Device,
    now_s: u64,
    pass: &mut Pass,
    log: Log<'_>,
) {
    pass.pending = true;
    if dev.backend.away_since.is_some() {
        return;
    }
    dev.backend.away_since = Some(now_s);
    pass.changed = true;
    log(&format!(
        "{}: backend {} is gone; waiting for it",
        dev.name, dev.backend.name
    ));
    let (s, Some(old_b)) = (spec(dev), dev.backend.domid) else {
        return;
    };
    if s.kind != Kind::Network {
        return;
    }
    for m in &dev.members {
        let Some(id) = m.domid else { continue };
        if by_name(domains, &m.name).is_some_and(|d| d.domid == id) {
            match tool.clear(id, s.kind, Role::Member, old_b, Some(s.param)) {
                Ok(()) | Err(ToolError::NotFound { .. }) => {}
                Err(e) => log(&format!("{}: freeing domain {id}'s port: {e}", dev.name)),
            }
        }
    }
}

/// The backend runs under a new id `b`: it gets the device again (a disk's
/// file), and every member is to be joined to it (their entries for the
/// old backend are stale). False if that could not be done yet.
fn backend_back<P: Platform, L: Lookup, H: Host>(
    tool: &mut Tool<P, L>,
    host: &mut H,
    dev: &mut Device,
    b: DomId,
    pass: &mut Pass,
    log: Log<'_>,
) -> bool {
    // Its vdevice page must be there before anything is given to it.
    if let Err(e) = tool.lookup.bootstrap(b) {
        log(&format!(
            "{}: backend {} ({b}): {e}",
            dev.name, dev.backend.name
        ));
        pass.pending = true;
        return false;
    }
    let old = spec(dev);
    if let What::Block {
        source,
        read_only,
        vdev,
        disk,
    } = &mut dev.what
    {
        match host.attach_disk(b, source, *read_only) {
            Ok(a) => {
                log(&format!(
                    "{}: domain {b} has {} again as {} (disk {})",
                    dev.name,
                    source.display(),
                    a.vdev,
                    a.index
                ));
                *vdev = a.vdev;
                *disk = a.index;
            }
            Err(e) => {
                log(&format!(
                    "{}: giving {} to domain {b}: {e}",
                    dev.name,
                    source.display()
                ));
                pass.pending = true;
                return false;
            }
        }
    }
    // A LAN's uplink before its ports: the LAN never runs without it.
    if let What::Net {
        lan,
        uplink: Some(up),
        ..
    } = &dev.what
    {
        let has = tool.show(b).map(|l| {
            l.used.iter().any(|(_, e)| {
                matches!(UplinkRepr::parse(e), Some(Ok(u)) if u.lan == *lan && u.uplink == up.device)
            })
        });
        let made = match has {
            Ok(true) => Ok(()),
            Ok(false) => tool
                .set_uplink(b, crate::admin::uplink_repr(*lan, *up), log)
                .map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            log(&format!(
                "{}: giving domain {b} the LAN's uplink {}: {e}",
                dev.name, up.device
            ));
            pass.pending = true;
            return false;
        }
    }
    log(&format!(
        "{}: backend {} is back as domain {b}; reconnecting its members",
        dev.name, dev.backend.name
    ));
    if let Some(old_b) = dev.backend.domid {
        dev.stale = Some(Stale {
            backend: old_b,
            param: old.param,
        });
    }
    dev.backend.domid = Some(b);
    dev.backend.away_since = None;
    for m in dev.members.iter_mut() {
        m.domid = None;
    }
    pass.changed = true;
    true
}

/// Joins member `m` to backend `b`'s device: an entry it still has for the
/// device (of the backend's previous run, or its own previous run) is
/// replaced: a disk entry of the old backend rewritten in place, anything
/// else removed before the new one is made.
fn join<P: Platform, L: Lookup>(
    tool: &mut Tool<P, L>,
    stale: Option<Stale>,
    b: DomId,
    m: DomId,
    s: crate::DeviceSpec,
    log: Log<'_>,
) -> Result<(), ToolError> {
    tool.lookup.bootstrap(m)?;
    let listing = tool.show(m)?;
    let of_old_backend = stale.and_then(|st| {
        listing.used.iter().find(|(_, e)| {
            e.kind == s.kind
                && e.role == Role::Member
                && e.peer == st.backend
                && crate::same_device(s.kind, e.param, st.param)
        })
    });
    if let (Some((_, e)), Some(st)) = (of_old_backend, stale) {
        if s.kind == Kind::Disk {
            return tool.reconnect_disk_as(b, m, e.param, s.param, Some(st.backend), log);
        }
        tool.clear(m, s.kind, Role::Member, st.backend, Some(st.param))?;
    }
    // Its own previous run's entry for this backend: a domain restored
    // from a save keeps its device, the entry rewritten in place.
    let own_old = listing.used.iter().any(|(_, e)| {
        e.kind == s.kind
            && e.role == Role::Member
            && e.peer == b
            && crate::same_device(s.kind, e.param, s.param)
    });
    if own_old {
        return tool.rejoin(b, m, s, log);
    }
    tool.connect(b, m, s, log)
}
