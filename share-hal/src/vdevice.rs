//! The vdevice change protocol, both sides (layout: `wire::vdevice`,
//! protocol: `docs/protocol.md`).
//!
//! - [`VdeviceBus`]: the domain side. The domain owns its page, grants it to
//!   dom0, and applies dom0's changes one at a time, acknowledging each.
//! - [`VdeviceClient`]: dom0's side. It maps a domain's page, makes one
//!   change, and waits for the acknowledgement before the next.
//!
//! Each side keeps its own serial privately and treats the page as hostile:
//! the serials and the change index are read once each, the changed entry
//! is copied out once and then parsed.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::platform::{Access, DomId, GrantRef, Mapping, PageBlock, Platform, Port, DOM0};
use crate::volatile::SharedMem;
use crate::wire::vdevice::{
    entry_offset, field, status, Bootstrap, Entry, EntryRepr, Header, HeaderRepr, Role, ENTRY_LEN,
    HEADER_LEN,
};

/// What the domain's handler did with one change.
pub enum Applied {
    /// Done; for an owner entry, the share_ref of the share created.
    Ok { share_ref: Option<GrantRef> },
    /// Refused, with a `wire::vdevice::status` code (negative errno).
    Refused(i32),
}

/// One acknowledged change, as the domain saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub serial: u32,
    pub index: u32,
    /// The entry before and after (after includes the results written back).
    pub old: EntryRepr,
    pub new: EntryRepr,
    pub status: i32,
}

/// The domain side of the vdevice page.
pub struct VdeviceBus<Pages: PageBlock> {
    page: Pages,
    bootstrap: Bootstrap,
    entries: Vec<EntryRepr>,
    /// The last change serial acknowledged; our own copy, never read back.
    acked: u32,
}

impl<Pages: PageBlock> VdeviceBus<Pages> {
    /// Allocates and grants the page and the event port for dom0. Publish
    /// [`VdeviceBus::bootstrap`] under `data/vdevice` afterwards.
    pub fn create<P: Platform<Pages = Pages>>(p: &mut P, entry_count: u16) -> Result<Self> {
        let page = p.alloc_pages(1)?;
        let mut hdr = [0u8; HEADER_LEN];
        HeaderRepr::new(p.domid(), entry_count)
            .emit(&mut Header::new_unchecked(&mut hdr[..]))
            .map_err(|_| Error::InvalidArgument {
                what: "vdevice entry count",
            })?;
        page.mem().write_from(0, &hdr)?;
        let frame = page.frame(0).ok_or(Error::OutOfMemory)?;
        let gref = p.grant(frame, DOM0, Access::ReadWrite)?;
        let port = match p.alloc_unbound(DOM0) {
            Ok(port) => port,
            Err(e) => {
                let _ = p.revoke(gref);
                return Err(e);
            }
        };
        Ok(VdeviceBus {
            page,
            bootstrap: Bootstrap { gref, port },
            entries: alloc::vec![EntryRepr::EMPTY; entry_count.into()],
            acked: 0,
        })
    }

    /// The value to publish in the domain's bootstrap key.
    pub fn bootstrap(&self) -> Bootstrap {
        self.bootstrap
    }

    /// The port dom0 triggers after each change.
    pub fn port(&self) -> Port {
        self.bootstrap.port
    }

    /// The serial of the last change acknowledged.
    pub fn acked_serial(&self) -> u32 {
        self.acked
    }

    /// The entries as last applied.
    pub fn entries(&self) -> &[EntryRepr] {
        &self.entries
    }

    /// Applies a pending change, if any, through `apply(index, old, new)`,
    /// acknowledges it and triggers dom0. Call after each trigger on
    /// [`VdeviceBus::port`]. A garbled change is refused with `EINVAL`
    /// (acknowledged, so dom0 learns of it), never applied.
    pub fn poll<P: Platform<Pages = Pages>>(
        &mut self,
        p: &mut P,
        apply: &mut dyn FnMut(u32, &EntryRepr, &EntryRepr) -> Applied,
    ) -> Result<Option<Change>> {
        let mem = self.page.mem();
        let serial = mem.load_u32(field::CHANGE_SERIAL.start, Ordering::Acquire)?;
        if serial == self.acked {
            return Ok(None);
        }
        let index = mem.load_u32(field::CHANGE_INDEX.start, Ordering::Relaxed)?;
        let count = self.entries.len() as u16;
        let parsed = entry_offset(index, count).and_then(|off| {
            let mut raw = [0u8; ENTRY_LEN];
            mem.read_into(off, &mut raw)
                .map_err(|_| crate::wire::Error::Truncated {
                    need: off + ENTRY_LEN,
                    have: mem.len(),
                })?;
            EntryRepr::parse(&Entry::new_unchecked(&raw[..])).map(|e| (off, e))
        });
        let (status_code, change) = match parsed {
            Err(_) => (status::EINVAL, None),
            Ok((off, new)) => {
                let old = self.entries[index as usize];
                let (code, share_ref) = match apply(index, &old, &new) {
                    Applied::Ok { share_ref } => (status::OK, share_ref),
                    Applied::Refused(code) => (code, None),
                };
                // A refused change leaves the entry as it was, so the page
                // keeps telling the truth; the status says why.
                let mut result = if code == status::OK { new } else { old };
                result.status = code;
                if let (Role::Owner, Some(r)) = (new.role, share_ref) {
                    result.share_ref = r;
                }
                let mut raw = [0u8; ENTRY_LEN];
                result
                    .emit(&mut Entry::new_unchecked(&mut raw[..]))
                    .map_err(|_| Error::Protocol {
                        what: "vdevice entry result",
                    })?;
                mem.write_from(off, &raw)?;
                if code == status::OK {
                    self.entries[index as usize] = result;
                }
                (code, Some((old, result)))
            }
        };
        mem.write_u32(field::ACK_STATUS.start, status_code as u32)?;
        mem.store_u32(field::ACK_SERIAL.start, serial, Ordering::Release)?;
        self.acked = serial;
        p.notify(self.bootstrap.port)?;
        Ok(change.map(|(old, new)| Change {
            serial,
            index,
            old,
            new,
            status: status_code,
        }))
    }
}

/// What dom0 read of a domain's page: header and each entry (an entry the
/// domain garbled is reported, not trusted).
pub struct Snapshot {
    pub header: HeaderRepr,
    pub entries: Vec<core::result::Result<EntryRepr, crate::wire::Error>>,
}

/// dom0's side of one domain's vdevice page.
pub struct VdeviceClient<M: Mapping> {
    domid: DomId,
    page: M,
    port: Port,
}

impl<M: Mapping> VdeviceClient<M> {
    /// Maps `domid`'s page and binds its port, from its bootstrap value.
    pub fn attach<P: Platform<Mapping = M>>(
        p: &mut P,
        domid: DomId,
        boot: Bootstrap,
    ) -> Result<Self> {
        let page = p.map(domid, &[boot.gref], Access::ReadWrite)?;
        let port = match p.bind_interdomain(domid, boot.port) {
            Ok(port) => port,
            Err(e) => {
                let _ = p.unmap(page);
                return Err(e);
            }
        };
        Ok(VdeviceClient { domid, page, port })
    }

    pub fn domid(&self) -> DomId {
        self.domid
    }

    fn mem(&self) -> SharedMem<'_> {
        self.page.mem()
    }

    /// Copies the page out once and parses it.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut raw = alloc::vec![0u8; self.mem().len().min(crate::platform::PAGE_SIZE)];
        self.mem().read_into(0, &mut raw)?;
        let header = HeaderRepr::parse(&Header::new_unchecked(&raw[..]))?;
        let entries = (0..u32::from(header.entry_count))
            .map(|i| {
                let off = entry_offset(i, header.entry_count)?;
                let bytes = raw.get(off..off + ENTRY_LEN).unwrap_or(&[]);
                EntryRepr::parse(&Entry::new_checked(bytes)?)
            })
            .collect();
        Ok(Snapshot { header, entries })
    }

    /// Makes one change: writes `entry` at `index`, bumps the change serial,
    /// triggers the domain, and waits until `deadline_ns` for its
    /// acknowledgement. Returns the entry as the domain acknowledged it
    /// (with its status and, for an owner entry, the share_ref).
    pub fn change<P: Platform<Mapping = M>>(
        &mut self,
        p: &mut P,
        index: u32,
        entry: &EntryRepr,
        deadline_ns: u64,
    ) -> Result<EntryRepr> {
        let snap = self.snapshot()?;
        if !snap.header.idle() {
            return Err(Error::Protocol {
                what: "the domain has not acknowledged the previous vdevice change",
            });
        }
        let off = entry_offset(index, snap.header.entry_count)?;
        let mut raw = [0u8; ENTRY_LEN];
        entry
            .emit(&mut Entry::new_unchecked(&mut raw[..]))
            .map_err(|_| Error::InvalidArgument {
                what: "vdevice entry",
            })?;
        let mem = self.mem();
        mem.write_from(off, &raw)?;
        mem.store_u32(field::CHANGE_INDEX.start, index, Ordering::Relaxed)?;
        let serial = snap.header.change_serial.wrapping_add(1);
        mem.store_u32(field::CHANGE_SERIAL.start, serial, Ordering::Release)?;
        p.notify(self.port)?;
        loop {
            if mem.load_u32(field::ACK_SERIAL.start, Ordering::Acquire)? == serial {
                break;
            }
            match p.wait(Some(deadline_ns), &mut |_| {}) {
                Ok(()) => {}
                Err(Error::TimedOut) => {
                    if mem.load_u32(field::ACK_SERIAL.start, Ordering::Acquire)? == serial {
                        break;
                    }
                    return Err(Error::TimedOut);
                }
                Err(e) => return Err(e),
            }
        }
        let mut back = [0u8; ENTRY_LEN];
        mem.read_into(off, &mut back)?;
        let acked = EntryRepr::parse(&Entry::new_unchecked(&back[..]))?;
        Ok(acked)
    }

    /// Unbinds and unmaps.
    pub fn detach<P: Platform<Mapping = M>>(self, p: &mut P) -> Result<()> {
        let r = p.close(self.port);
        p.unmap(self.page)?;
        r
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::platform::{Clock, EventChannels};
    use crate::sim::{temp_socket_path, Broker, SimPlatform};
    use crate::wire::vdevice::Kind;

    fn net_owner_entry(peer: DomId) -> EntryRepr {
        EntryRepr {
            kind: Kind::Network,
            role: Role::Owner,
            numpages: 8,
            peer,
            ..EntryRepr::EMPTY
        }
    }

    /// dom0 and domain 7 in two threads: each change is applied and
    /// acknowledged before the next; a garbled index is refused with EINVAL.
    #[test]
    fn changes_are_applied_and_acknowledged_one_at_a_time() {
        let path = temp_socket_path("vdevice");
        let _broker = Broker::spawn(&path).unwrap();
        let mut dom = SimPlatform::connect(&path, 7).unwrap();
        let mut bus = VdeviceBus::create(&mut dom, 16).unwrap();
        let boot = bus.bootstrap();
        let domain = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while bus.acked_serial() < 3 {
                dom.wait(Some(dom.now_ns() + 5_000_000_000), &mut |_| {})
                    .unwrap();
                let mut apply = |i: u32, _old: &EntryRepr, new: &EntryRepr| {
                    if new.peer == 99 {
                        Applied::Refused(status::ENODEV)
                    } else {
                        Applied::Ok {
                            share_ref: Some(GrantRef(1000 + i)),
                        }
                    }
                };
                if let Some(c) = bus.poll(&mut dom, &mut apply).unwrap() {
                    seen.push(c);
                }
            }
            (seen, bus.entries().to_vec())
        });
        let mut d0 = SimPlatform::connect(&path, DOM0).unwrap();
        let mut client = VdeviceClient::attach(&mut d0, 7, boot).unwrap();
        let dl = d0.now_ns() + 5_000_000_000;
        let acked = client.change(&mut d0, 3, &net_owner_entry(5), dl).unwrap();
        assert_eq!(
            (acked.status, acked.share_ref),
            (status::OK, GrantRef(1003))
        );
        let refused = client.change(&mut d0, 4, &net_owner_entry(99), dl).unwrap();
        assert_eq!(refused.status, status::ENODEV);
        // A change index past the entries: the domain refuses it whole.
        let snap = client.snapshot().unwrap();
        let mem = client.mem();
        mem.store_u32(field::CHANGE_INDEX.start, 500, Ordering::Relaxed)
            .unwrap();
        let serial = snap.header.change_serial + 1;
        mem.store_u32(field::CHANGE_SERIAL.start, serial, Ordering::Release)
            .unwrap();
        d0.notify(client.port).unwrap();
        let (seen, entries) = domain.join().unwrap();
        assert_eq!(
            seen.len(),
            2,
            "the garbled change is acknowledged but yields no Change"
        );
        let snap = client.snapshot().unwrap();
        assert_eq!(snap.header.ack_serial, serial);
        assert_eq!(snap.header.ack_status, status::EINVAL);
        assert_eq!(entries[3].share_ref, GrantRef(1003));
        assert_eq!(
            entries[4],
            EntryRepr::EMPTY,
            "a refused change leaves the entry as it was"
        );
        client.detach(&mut d0).unwrap();
    }
}
