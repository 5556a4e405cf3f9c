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

    /// Builds the bus over a page the caller already granted read-write to
    /// dom0 (`gref`) and a port it already allocated unbound for dom0: the
    /// path of platforms that can grant only fresh pages (Linux userspace,
    /// whose gntalloc grants a page from birth, see
    /// `share_linux::LinuxXen::alloc_granted`). Writes the header.
    pub fn with_granted_page(
        page: Pages,
        gref: GrantRef,
        port: Port,
        domid: DomId,
        entry_count: u16,
    ) -> Result<Self> {
        let mut hdr = [0u8; HEADER_LEN];
        HeaderRepr::new(domid, entry_count)
            .emit(&mut Header::new_unchecked(&mut hdr[..]))
            .map_err(|_| Error::InvalidArgument {
                what: "vdevice entry count",
            })?;
        page.mem().write_from(0, &hdr)?;
        Ok(VdeviceBus {
            page,
            bootstrap: Bootstrap { gref, port },
            entries: alloc::vec![EntryRepr::EMPTY; entry_count.into()],
            acked: 0,
        })
    }

    /// Names the domain's counter page (`crate::stats::StatsPage`) in the
    /// header, for dom0 to map read-only.
    pub fn publish_stats(&self, gref: GrantRef) -> Result<()> {
        self.page
            .mem()
            .store_u32(field::STATS_GREF.start, gref.0, Ordering::Release)
    }

    /// The value to publish in the domain's bootstrap key.
    pub fn bootstrap(&self) -> Bootstrap {
        self.bootstrap
    }

    /// The domain's own page, for callers that read or write it beyond the
    /// protocol (the tests, playing a dom0 that garbles it).
    pub fn mem(&self) -> SharedMem<'_> {
        self.page.mem()
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
    pub fn poll<P: Platform>(
        &mut self,
        p: &mut P,
        apply: &mut dyn FnMut(u32, &EntryRepr, &EntryRepr) -> Applied,
    ) -> Result<Option<Change>> {
        self.poll_with(p, &mut |_, index, old, new| apply(index, old, new))
    }

    /// [`VdeviceBus::poll`] for a handler that needs the platform itself
    /// (to attach to a share, open ports): `apply` gets it lent for the
    /// call.
    pub fn poll_with<P: Platform>(
        &mut self,
        p: &mut P,
        apply: &mut dyn FnMut(&mut P, u32, &EntryRepr, &EntryRepr) -> Applied,
    ) -> Result<Option<Change>> {
        let mem = self.page.mem();
        let serial = mem.load_u32(field::CHANGE_SERIAL.start, Ordering::Acquire)?;
        if serial == self.acked {
            return Ok(None);
        }
        let index = mem.load_u32(field::CHANGE_INDEX.start, Ordering::Relaxed)?;
        let count = self.entries.len() as u16;
        // An index out of our own range: refused whole, no entry touched.
        let slot = entry_offset(index, count)
            .ok()
            .and_then(|off| Some((off, *self.entries.get(index as usize)?)));
        let (status_code, change) = match slot {
            None => (status::EINVAL, None),
            Some((off, old)) => {
                let mut raw = [0u8; ENTRY_LEN];
                mem.read_into(off, &mut raw)?;
                match EntryRepr::parse(&Entry::new_unchecked(&raw[..])) {
                    // A garbled entry: the entry as it was before goes
                    // back into the page, with EINVAL; nothing is applied.
                    Err(_) => {
                        let result = EntryRepr {
                            status: status::EINVAL,
                            ..old
                        };
                        // Acknowledged even if the write-back fails: a
                        // change is handled once.
                        self.acked = serial;
                        Self::write_entry(mem, off, &result)?;
                        (status::EINVAL, None)
                    }
                    Ok(new) => {
                        let (code, share_ref) = match apply(p, index, &old, &new) {
                            Applied::Ok { share_ref } => (status::OK, share_ref),
                            Applied::Refused(code) => (code, None),
                        };
                        // A refused change leaves the entry as it was, so the
                        // page keeps telling the truth; the status says why.
                        let mut result = if code == status::OK { new } else { old };
                        result.status = code;
                        if let (Role::Owner, Some(r)) = (new.role, share_ref) {
                            result.share_ref = r;
                        }
                        // Applied: recorded before any write to the page can
                        // fail, so the change is never applied twice.
                        self.acked = serial;
                        if code == status::OK {
                            if let Some(e) = self.entries.get_mut(index as usize) {
                                *e = result;
                            }
                        }
                        Self::write_entry(mem, off, &result)?;
                        (code, Some((old, result)))
                    }
                }
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

    fn write_entry(mem: SharedMem<'_>, off: usize, entry: &EntryRepr) -> Result<()> {
        let mut raw = [0u8; ENTRY_LEN];
        entry
            .emit(&mut Entry::new_unchecked(&mut raw[..]))
            .map_err(|_| Error::Protocol {
                what: "vdevice entry result",
            })?;
        mem.write_from(off, &raw)
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

    /// The event port bound to the domain's.
    pub fn port(&self) -> Port {
        self.port
    }

    /// dom0's mapping of the domain's page, for callers that read or write
    /// it beyond the protocol (the tests, playing a domain that garbles it).
    pub fn mem(&self) -> SharedMem<'_> {
        self.page.mem()
    }

    /// Copies the page out once and parses it. A page whose header names
    /// another domain is refused.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut raw = alloc::vec![0u8; self.mem().len().min(crate::platform::PAGE_SIZE)];
        self.mem().read_into(0, &mut raw)?;
        let header = HeaderRepr::parse(&Header::new_unchecked(&raw[..]))?;
        if header.domid != self.domid {
            return Err(Error::Protocol {
                what: "vdevice page header names another domain than the one it was read from",
            });
        }
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
    /// acknowledgement (`Err(TimedOut)` once the deadline passed, however
    /// often the domain triggers meanwhile). Returns the entry as the domain
    /// acknowledged it (with its status and, for an owner entry, the
    /// share_ref); a non-zero `ack_status` in the header is the status
    /// returned, whatever the entry says.
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
        // Only an entry the domain can parse is written: anything else
        // would only come back refused.
        EntryRepr::parse(&Entry::new_unchecked(&raw[..])).map_err(|_| Error::InvalidArgument {
            what: "vdevice entry (kind, role, flags or numpages out of range)",
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
            // A domain that keeps triggering without acknowledging must not
            // keep us here past the deadline.
            let waited = if p.now_ns() >= deadline_ns {
                Err(Error::TimedOut)
            } else {
                p.wait(Some(deadline_ns), &mut |_| {})
            };
            match waited {
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
        // Read once each, after the acquire of the serial.
        let ack_status = mem.load_u32(field::ACK_STATUS.start, Ordering::Relaxed)? as i32;
        let mut back = [0u8; ENTRY_LEN];
        mem.read_into(off, &mut back)?;
        let acked = EntryRepr::parse(&Entry::new_unchecked(&back[..]));
        match acked {
            // The header's refusal wins over whatever the entry says (a
            // domain that refused a garbled entry may leave it untouched).
            Ok(e) if ack_status != status::OK => Ok(EntryRepr {
                status: ack_status,
                ..e
            }),
            Err(_) if ack_status != status::OK => Ok(EntryRepr {
                status: ack_status,
                ..*entry
            }),
            Ok(e)
                if e.status == status::OK
                    && (e.kind, e.role, e.peer) != (entry.kind, entry.role, entry.peer) =>
            {
                Err(Error::Protocol {
                    what: "the domain acknowledged another entry than the one written",
                })
            }
            Ok(e) => Ok(e),
            Err(e) => Err(e.into()),
        }
    }

    /// Unbinds and unmaps.
    pub fn detach<P: Platform<Mapping = M>>(self, p: &mut P) -> Result<()> {
        let r = p.close(self.port);
        p.unmap(self.page)?;
        r
    }
}
