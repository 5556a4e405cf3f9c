//! netback-uk's own Xen network devices: the `vif = [...]` of its xl
//! config, each a netif frontend (`xen/io/netif.h`, xen-pv's [`NetFront`])
//! of dom0's netback, on a dom0 bridge. A LAN whose uplink names device N
//! (docs/protocol.md, "Uplink") is bridged to `device/vif/N` at layer 2:
//! the switch reaches it through [`Uplinks`].
//!
//! libxl creates `device/vif/<N>/` for the N-th `vif=` entry. [`handshake`]
//! runs the xenbus frontend handshake for one, as blkback-uk's `vbd` store
//! does for its disks:
//!
//! 1. read `backend` and `backend-id`, wait (polling, bounded) for the
//!    backend's `state` to be InitWait (2) or later, and require
//!    `feature-rx-copy` = 1 (the only receive mode here);
//! 2. grant the two ring pages (read-write), the tx buffers (read-only:
//!    the backend copies frames out of them) and the rx buffers
//!    (read-write: it copies frames into them), allocate an unbound event
//!    channel, read the backend's offers (`feature-ipv6-csum-offload`,
//!    `feature-sg`, `feature-gso-tcpv4`/`-tcpv6`: [`Offloads`]), write
//!    `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy` =
//!    1, `feature-rx-notify` = 1, `feature-no-csum-offload` = 0 (partial
//!    IPv4 checksums welcome: the switch completes them for members that
//!    take none), `feature-ipv6-csum-offload` = 0, `feature-sg` = 0,
//!    `feature-gso-tcpv4` = 0, `feature-gso-tcpv6` = 0, then `state` =
//!    Connected (4), as Linux's netfront does;
//! 3. wait (bounded) for the backend's Connected.
//!
//! Checksum offload: a frame from the backend flagged `csum_blank` gets
//! the place of its checksum found ([`csum_setup::find`]) and goes to the
//! switch as a partial one; a partial frame to the backend goes out
//! `csum_blank` where the backend finds the checksum itself (untagged TCP
//! or UDP over IPv4; IPv6 if offered), otherwise it is completed first.
//!
//! Frames are one slot each way, at most a page (the switch's uplink
//! frames are at most 1518 bytes): scatter-gather and GSO are not
//! negotiated yet, so the switch segments a member's GSO frame for the
//! uplink and dom0 segments its own. Every response is dom0's word and is
//! checked by [`NetFront`] (ids in flight, offsets and lengths within the
//! page, statuses and flags); a device that breaks the protocol stops (no
//! frame in or out, its pages never reused) and says so once. The work a
//! round costs is bounded: the switch reads at most its budget of frames
//! from an uplink, and each call takes at most a ring's worth of
//! responses.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use share_hal::frames::FrameMeta;
use share_hal::platform::{Access, PageBlock, Platform, Port, PAGE_SIZE};
use share_hal::wire::net::{features, flags, gso};
use share_hal::{DomId, Error, GrantRef, Result, SharedMem};
use xen_pv::abi::{
    NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
    XENBUS_STATE_CONNECTED, XENBUS_STATE_INIT_WAIT, XEN_NETIF_GSO_TYPE_TCPV4,
    XEN_NETIF_GSO_TYPE_TCPV6,
};
use xen_pv::netif::{NetFront, NetFrontState, RxDone, TxGso, TxSlot, TX_MAX_SLOTS};
use xen_pv::xenbus::{self, DeviceError, Frontend};

use crate::csum_setup;
use crate::switch::Uplinks;

pub use xen_pv::xenbus::Xenbus;

/// Rings the backend's event channel without the platform (inside a
/// switch round).
pub trait Bell {
    fn notify(&mut self) -> Result<()>;
}

#[cfg(all(target_arch = "x86_64", feature = "pvh"))]
impl Bell for share_pvh::Doorbell {
    fn notify(&mut self) -> Result<()> {
        share_pvh::Doorbell::notify(self)
    }
}

/// Frames in flight to the backend, and buffers posted for it (a page
/// each).
pub const TX_BUFS: u16 = 64;
pub const RX_BUFS: u16 = 64;
/// How long dom0's backend may take to reach a state (the nested rig is
/// slow).
pub const HANDSHAKE_TIMEOUT_NS: u64 = 120_000_000_000;

/// The pages of one device, granted to its backend: the tx and rx ring
/// pages, then the tx and rx buffers.
pub struct VifPages<Pg> {
    rings: Pg,
    bufs: Pg,
    tx_ring_ref: GrantRef,
    rx_ring_ref: GrantRef,
    /// Tx buffers first (`TX_BUFS`), then rx buffers (`RX_BUFS`).
    grefs: Vec<GrantRef>,
    port: Port,
}

impl<Pg: PageBlock> VifPages<Pg> {
    /// Allocates and grants the pages to `backend`, and an unbound event
    /// channel for it. On failure what was granted stays granted and its
    /// pages are leaked (never reused).
    pub fn new<P: Platform<Pages = Pg>>(p: &mut P, backend: DomId) -> Result<Self> {
        let rings = p.alloc_pages(2)?;
        let n = usize::from(TX_BUFS) + usize::from(RX_BUFS);
        let bufs = p.alloc_pages(n)?;
        let frame = |pg: &Pg, i| pg.frame(i).ok_or(Error::OutOfMemory);
        let tx_ring_ref = p.grant(frame(&rings, 0)?, backend, Access::ReadWrite)?;
        let rx_ring_ref = p.grant(frame(&rings, 1)?, backend, Access::ReadWrite)?;
        let mut grefs = Vec::with_capacity(n);
        for i in 0..n {
            let access = if i < usize::from(TX_BUFS) {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            grefs.push(p.grant(frame(&bufs, i)?, backend, access)?);
        }
        let port = p.alloc_unbound(backend)?;
        Ok(VifPages {
            rings,
            bufs,
            tx_ring_ref,
            rx_ring_ref,
            grefs,
            port,
        })
    }

    pub fn port(&self) -> Port {
        self.port
    }

    fn ring(&self, i: usize) -> Result<SharedMem<'_>> {
        self.rings.mem().slice(i * PAGE_SIZE, PAGE_SIZE)
    }

    fn tx_buf(&self, id: u16) -> Result<SharedMem<'_>> {
        self.bufs
            .mem()
            .slice(usize::from(id) * PAGE_SIZE, PAGE_SIZE)
    }

    fn rx_buf(&self, id: u16) -> Result<SharedMem<'_>> {
        let i = usize::from(TX_BUFS) + usize::from(id);
        self.bufs.mem().slice(i * PAGE_SIZE, PAGE_SIZE)
    }
}

/// A device as its backend described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifInfo {
    /// `device/vif/<index>`.
    pub dev: String,
    pub index: u16,
    pub backend: DomId,
    /// The MAC libxl gave the device (`mac` in its directory), if it did.
    pub mac: Option<[u8; 6]>,
    /// What the backend offered and what is used.
    pub offloads: Offloads,
}

/// A device's offloads, as negotiated. Partial IPv4 TCP/UDP checksums go
/// both ways (Xen's default, which every netback takes on tx; we ask for
/// them on rx with `feature-no-csum-offload` = 0). Toward the backend, as
/// it offers them: partial IPv6 checksums (`feature-ipv6-csum-offload`),
/// frames over several pages (`feature-sg`) and, with those, TCP
/// segmentation offload (`feature-gso-tcpv4`/`-tcpv6`). From the backend
/// frames stay one page without GSO (we write `feature-sg` = 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// The backend takes partial IPv6 checksums.
    pub tx_ipv6_csum: bool,
    /// The backend takes frames over several slots.
    pub tx_sg: bool,
    /// The backend takes TCP GSO frames (only with `tx_sg`).
    pub tx_gso_tcpv4: bool,
    pub tx_gso_tcpv6: bool,
}

impl core::fmt::Display for Offloads {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("offloads: csum-ipv4 both ways")?;
        let mut none = true;
        for (on, name) in [
            (self.tx_ipv6_csum, "csum-ipv6"),
            (self.tx_sg, "sg"),
            (self.tx_gso_tcpv4, "gso-tcpv4"),
            (self.tx_gso_tcpv6, "gso-tcpv6"),
        ] {
            if on {
                f.write_str(if none { "; to dom0 " } else { " " })?;
                f.write_str(name)?;
                none = false;
            }
        }
        f.write_str("; from dom0 one page a frame, no gso")
    }
}

/// Why a device could not be connected (the device and what failed).
pub type VifError = DeviceError;

/// This domain's vif devices (`device/vif/<N>`), by index, in order.
pub fn devices<X: Xenbus>(xs: &mut X) -> Result<Vec<(u16, String)>> {
    let mut out: Vec<(u16, String)> = xenbus::devices(xs, "vif")?
        .into_iter()
        .filter_map(|(n, path)| Some((n.parse::<u16>().ok()?, path)))
        .collect();
    out.sort();
    out.dedup_by_key(|(i, _)| *i);
    Ok(out)
}

/// `aa:bb:cc:dd:ee:ff`, strictly.
fn parse_mac(v: &str) -> Option<[u8; 6]> {
    let v = v.trim_end_matches('\0').trim();
    if v.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, part) in v.split(':').enumerate() {
        if i >= 6 || part.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// Runs the frontend handshake for `dev` (`device/vif/<N>`) with the
/// pages from [`VifPages::new`], granted to the backend `dev` names.
/// `sleep(deadline)` pauses between polls of the backend's state.
pub fn handshake<X: Xenbus, Pg: PageBlock>(
    xs: &mut X,
    dev: &str,
    pages: &VifPages<Pg>,
    now: &dyn Fn() -> u64,
    sleep: &mut dyn FnMut(u64),
) -> core::result::Result<VifInfo, VifError> {
    let index = xenbus::device_number(dev)
        .ok_or_else(|| xenbus::device_error(dev, "the device name is not an index"))?;
    let mut f = Frontend::open(xs, dev, HANDSHAKE_TIMEOUT_NS, now, sleep)?;
    let backend = f.backend();
    f.wait_state(XENBUS_STATE_INIT_WAIT, "ready (InitWait)")?;
    if f.backend_num("feature-rx-copy")? != Some(1) {
        return Err(f.error("the backend does not offer feature-rx-copy"));
    }
    // The backend's offers; anything but "1" is no.
    let tx_sg = f.offered("feature-sg");
    let offloads = Offloads {
        tx_ipv6_csum: f.offered("feature-ipv6-csum-offload"),
        tx_sg,
        tx_gso_tcpv4: tx_sg && f.offered("feature-gso-tcpv4"),
        tx_gso_tcpv6: tx_sg && f.offered("feature-gso-tcpv6"),
    };
    f.write("tx-ring-ref", &format!("{}", pages.tx_ring_ref.0))?;
    f.write("rx-ring-ref", &format!("{}", pages.rx_ring_ref.0))?;
    f.write("event-channel", &format!("{}", pages.port.0))?;
    f.write("request-rx-copy", "1")?;
    f.write("feature-rx-notify", "1")?;
    // Partial IPv4 checksums from the backend: the switch completes them
    // for members that take none (csum_setup finds them). Not IPv6 ones:
    // csum_setup does not walk extension headers, so the backend
    // completes those.
    f.write("feature-no-csum-offload", "0")?;
    f.write("feature-ipv6-csum-offload", "0")?;
    f.write("feature-sg", "0")?;
    f.write("feature-gso-tcpv4", "0")?;
    f.write("feature-gso-tcpv6", "0")?;
    f.write("state", &format!("{XENBUS_STATE_CONNECTED}"))?;
    f.wait_state(XENBUS_STATE_CONNECTED, "connected")?;
    let mac = f.read_own("mac").and_then(|v| parse_mac(&v));
    Ok(VifInfo {
        dev: String::from(dev),
        index,
        backend,
        mac,
        offloads,
    })
}

/// Counters of one device (beside the switch's per-uplink ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VifCounters {
    /// Rx buffers the backend gave back without a frame.
    pub rx_empty: u64,
    /// Tx frames the backend answered with an error or dropped.
    pub tx_errors: u64,
    /// Frames the backend flagged with a blank checksum (`csum_blank`)
    /// where no TCP or UDP checksum could be found: dropped (Linux's
    /// netfront drops them too).
    pub rx_bad_csum: u64,
}

/// One connected device.
pub struct Vif<Pg: PageBlock, B: Bell> {
    info: VifInfo,
    pages: VifPages<Pg>,
    bell: B,
    st: NetFrontState,
    tx_free: Vec<u16>,
    /// Rx buffers taken back and not yet posted again.
    rx_idle: Vec<u16>,
    /// Responses taken from the rx ring and not yet handed to the switch.
    rx_done: VecDeque<RxDone>,
    dirty: bool,
    broken: Option<&'static str>,
    pub counters: VifCounters,
}

impl<Pg: PageBlock, B: Bell> Vif<Pg, B> {
    /// Fresh rings, every rx buffer posted.
    pub fn start(pages: VifPages<Pg>, info: VifInfo, bell: B) -> Result<Self> {
        let st = NetFront::init(pages.ring(0)?, pages.ring(1)?)?.park();
        let mut v = Vif {
            info,
            pages,
            bell,
            st,
            tx_free: (0..TX_BUFS).rev().collect(),
            rx_idle: (0..RX_BUFS).rev().collect(),
            rx_done: VecDeque::with_capacity(usize::from(RX_BUFS)),
            dirty: false,
            broken: None,
            counters: VifCounters::default(),
        };
        v.flush_now()?;
        Ok(v)
    }

    pub fn info(&self) -> &VifInfo {
        &self.info
    }

    /// Why the device stopped, if it did.
    pub fn broken(&self) -> Option<&'static str> {
        self.broken
    }

    /// The tx and rx ring pages, as the backend sees them (for the
    /// backend side of tests and fuzz targets).
    pub fn rings(&self) -> Result<(SharedMem<'_>, SharedMem<'_>)> {
        Ok((self.pages.ring(0)?, self.pages.ring(1)?))
    }

    fn break_with(&mut self, e: Error) {
        let why = match e {
            Error::Protocol { what } => what,
            _ => "the rings could not be accessed",
        };
        if self.broken.is_none() {
            log::warn!(
                "vif {} (backend domain {}): {why}; the uplink stops (its pages are never reused)",
                self.info.index,
                self.info.backend
            );
        }
        self.broken = Some(why);
    }

    /// Takes the responses the backend published (bounded by the rings).
    fn reap(&mut self) -> Result<()> {
        let mut nf = NetFront::resume(self.pages.ring(0)?, self.pages.ring(1)?, self.st)?;
        let (free, done, counters) = (&mut self.tx_free, &mut self.rx_done, &mut self.counters);
        let r = nf
            .take_tx(|id, status| {
                if status < 0 {
                    counters.tx_errors += 1;
                }
                free.push(id);
            })
            .and_then(|_| nf.take_rx(|d| done.push_back(d)));
        self.st = nf.park();
        r.map(drop)
    }

    /// Posts idle rx buffers, publishes, and notifies the backend if it
    /// asked; then asks to be notified of the next response. `true`: some
    /// arrived meanwhile (the ring's final check), so look again before
    /// sleeping: no notification will come for them.
    fn flush_now(&mut self) -> Result<bool> {
        let mut nf = NetFront::resume(self.pages.ring(0)?, self.pages.ring(1)?, self.st)?;
        let mut r = Ok(());
        while let Some(id) = self.rx_idle.pop() {
            let gref = self.pages.grefs[usize::from(TX_BUFS) + usize::from(id)];
            match nf.post(id, gref.0) {
                Ok(true) => {}
                Ok(false) => {
                    self.rx_idle.push(id);
                    break;
                }
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        let r = r
            .and_then(|()| nf.publish())
            .and_then(|notify| Ok((notify, nf.prepare_wait()?)));
        self.st = nf.park();
        self.dirty = false;
        let (notify, waiting) = r?;
        if notify {
            self.bell.notify()?;
        }
        Ok(waiting || !self.rx_done.is_empty())
    }

    /// The next frame from the backend into `buf`: its length (more than
    /// `buf.len()` if it did not fit; then only the start was copied) and
    /// its offload fields. A frame flagged `csum_blank` gets the place of
    /// its TCP or UDP checksum ([`csum_setup::find`]), for the switch to
    /// complete it or pass it on partial; one where none is found is
    /// dropped and counted ([`VifCounters::rx_bad_csum`]).
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<(usize, FrameMeta)> {
        if self.broken.is_some() {
            return None;
        }
        if self.rx_done.is_empty() {
            if let Err(e) = self.reap() {
                self.break_with(e);
                return None;
            }
        }
        // Bounded: what one reap took.
        while let Some(d) = self.rx_done.pop_front() {
            self.rx_idle.push(d.id());
            self.dirty = true;
            let RxDone::Frame {
                id,
                offset,
                len,
                flags: rx_flags,
            } = d
            else {
                self.counters.rx_empty += 1;
                continue;
            };
            let n = usize::from(len).min(buf.len());
            // NetFront checked offset + len against the page.
            let copied = self
                .pages
                .rx_buf(id)
                .and_then(|m| m.read_into(usize::from(offset), &mut buf[..n]));
            if let Err(e) = copied {
                self.break_with(e);
                return None;
            }
            if n < usize::from(len) {
                // Too long for the switch: it drops it by its length.
                return Some((usize::from(len), FrameMeta::default()));
            }
            match rx_meta(&buf[..n], rx_flags) {
                Some((n, meta)) => return Some((n, meta)),
                None => self.counters.rx_bad_csum += 1,
            }
        }
        None
    }

    /// What the device takes for `frame` (`wire::net::features`):
    /// partial checksums and the validated mark always (a partial checksum
    /// it cannot pass on is completed by [`Vif::send`]); a GSO frame as it
    /// is where the backend takes it ([`takes_gso`]).
    pub fn features(&self, frame: &[u8], meta: &FrameMeta) -> u32 {
        let mut f = features::CSUM_BLANK | features::DATA_VALIDATED;
        if meta.gso_type != gso::NONE && takes_gso(frame, meta, &self.info.offloads) {
            f |= features::GSO;
        }
        f
    }

    /// Queues one frame to the backend (published at [`Vif::flush`]);
    /// `false`: no room, too long, offload fields the backend cannot take,
    /// or the device stopped. A frame over a page goes in several slots
    /// (the backend offered `feature-sg`), a GSO frame with its extra-info
    /// slot. A partial checksum (`meta`) goes out as `NETTXF_csum_blank`
    /// where the backend will find it where `meta` says (it finds it
    /// itself, as [`csum_setup::find`] does: untagged TCP or UDP over
    /// IPv4, or IPv6 if it offered that); otherwise it is completed here
    /// first.
    pub fn send(&mut self, frame: &[u8], meta: FrameMeta) -> bool {
        let o = self.info.offloads;
        let max = if o.tx_sg {
            usize::from(u16::MAX)
        } else {
            PAGE_SIZE
        };
        if self.broken.is_some() || frame.is_empty() || frame.len() > max {
            return false;
        }
        let gso = if meta.gso_type == gso::NONE {
            None
        } else if takes_gso(frame, &meta, &o) {
            Some(TxGso {
                kind: if meta.gso_type == gso::TCPV4 {
                    XEN_NETIF_GSO_TYPE_TCPV4
                } else {
                    XEN_NETIF_GSO_TYPE_TCPV6
                },
                size: meta.gso_size,
            })
        } else {
            return false;
        };
        let Some((tx_flags, fill)) = tx_offload(frame, &meta, &o) else {
            return false;
        };
        let pages = frame.len().div_ceil(PAGE_SIZE);
        if self.tx_free.len() < pages {
            if let Err(e) = self.reap() {
                self.break_with(e);
                return false;
            }
            if self.tx_free.len() < pages {
                return false;
            }
        }
        let mut slots = [TxSlot {
            id: 0,
            gref: 0,
            offset: 0,
            len: 0,
        }; TX_MAX_SLOTS];
        let slots = &mut slots[..pages];
        let mut r = Ok(());
        for (k, (s, chunk)) in slots.iter_mut().zip(frame.chunks(PAGE_SIZE)).enumerate() {
            let Some(id) = self.tx_free.pop() else {
                // Checked above: there were enough.
                self.tx_free.extend(slots[..k].iter().map(|s| s.id));
                return false;
            };
            *s = TxSlot {
                id,
                gref: self.pages.grefs[usize::from(id)].0,
                offset: 0,
                len: chunk.len() as u16,
            };
            if r.is_ok() {
                r = self.pages.tx_buf(id).and_then(|m| m.write_from(0, chunk));
            }
        }
        if let (Ok(()), Some((at, sum))) = (&r, fill) {
            // The field may straddle two pages.
            for (i, b) in sum.iter().enumerate() {
                let (page, off) = ((at + i) / PAGE_SIZE, (at + i) % PAGE_SIZE);
                if let Some(s) = slots.get(page) {
                    r = r.and_then(|()| {
                        self.pages
                            .tx_buf(s.id)
                            .and_then(|m| m.write_from(off, core::slice::from_ref(b)))
                    });
                }
            }
        }
        let r = r.and_then(|()| {
            let mut nf = NetFront::resume(self.pages.ring(0)?, self.pages.ring(1)?, self.st)?;
            let sent = nf.send_frame(slots, tx_flags, gso);
            self.st = nf.park();
            sent
        });
        match r {
            Ok(true) => {
                self.dirty = true;
                true
            }
            Ok(false) => {
                self.tx_free.extend(slots.iter().map(|s| s.id));
                false
            }
            Err(e) => {
                self.break_with(e);
                false
            }
        }
    }

    /// End of a round: rx buffers back to the backend, tx frames
    /// published, the backend notified if it asked, and our wish to be
    /// notified renewed. `true`: responses are waiting already.
    pub fn flush(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        match self.flush_now() {
            Ok(waiting) => waiting,
            Err(e) => {
                self.break_with(e);
                false
            }
        }
    }
}

/// A received frame's offload fields from its rx flags: `csum_blank` with
/// the place of its checksum (the frame then ends where its IP packet
/// does: Ethernet padding is not checksummed); `None`: flagged blank and
/// no checksum found.
fn rx_meta(frame: &[u8], rx_flags: u16) -> Option<(usize, FrameMeta)> {
    let mut meta = FrameMeta::default();
    if rx_flags & NETRXF_DATA_VALIDATED != 0 {
        meta.flags |= flags::DATA_VALIDATED;
    }
    let mut len = frame.len();
    if rx_flags & NETRXF_CSUM_BLANK != 0 {
        let p = csum_setup::find(frame)?;
        meta.flags |= flags::CSUM_BLANK;
        meta.csum_start = p.start;
        meta.csum_offset = p.offset;
        len = p.len;
    }
    Some((len, meta))
}

/// Whether the backend takes `frame`, a GSO frame (`meta`), as it is: it
/// offered scatter-gather and the frame's GSO type, the frame fits a
/// request's 16-bit size, carries no ECN flag (netif has none), and the
/// backend will find its partial checksum where `meta` says (untagged TCP
/// over the IP version of the type, no padding). Otherwise the switch
/// segments it.
fn takes_gso(frame: &[u8], meta: &FrameMeta, o: &Offloads) -> bool {
    let v6 = match meta.gso_type {
        gso::TCPV4 if o.tx_gso_tcpv4 => false,
        gso::TCPV6 if o.tx_gso_tcpv6 => true,
        _ => return false,
    };
    o.tx_sg
        && frame.len() <= usize::from(u16::MAX)
        && meta.gso_flags == 0
        && meta.gso_size != 0
        && meta.flags & flags::CSUM_BLANK != 0
        && csum_setup::find(frame).is_some_and(|p| {
            !p.vlan
                && p.ipv6 == v6
                && p.offset == csum_setup::TCP_CSUM_OFFSET
                && p.len == frame.len()
                && (p.start, p.offset) == (meta.csum_start, meta.csum_offset)
        })
}

/// A completed checksum to write into a frame's copy: where, its bytes.
type Fill = Option<(usize, [u8; 2])>;

/// A frame's tx flags for the backend, and the completed checksum to put
/// in the copy (where, its bytes) when the partial one cannot go as it
/// is; `None`: the offload fields do not hold for the frame (the switch
/// checked them; refused again here rather than trusted).
fn tx_offload(frame: &[u8], meta: &FrameMeta, offloads: &Offloads) -> Option<(u16, Fill)> {
    let mut tx_flags = 0;
    if meta.flags & flags::DATA_VALIDATED != 0 {
        tx_flags |= NETTXF_DATA_VALIDATED;
    }
    if meta.flags & flags::CSUM_BLANK == 0 {
        return Some((tx_flags, None));
    }
    let (start, offset) = (usize::from(meta.csum_start), usize::from(meta.csum_offset));
    if start + offset + 2 > frame.len() {
        return None;
    }
    let passes = csum_setup::find(frame).is_some_and(|p| {
        !p.vlan
            && p.len == frame.len()
            && (p.start, p.offset) == (meta.csum_start, meta.csum_offset)
            && (!p.ipv6 || offloads.tx_ipv6_csum)
    });
    if passes {
        return Some((tx_flags | NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED, None));
    }
    Some((
        tx_flags,
        Some((start + offset, csum_setup::complete(frame, start))),
    ))
}

/// The domain's devices, by index, as the switch's uplinks.
pub struct VifUplinks<Pg: PageBlock, B: Bell> {
    pub vifs: Vec<Vif<Pg, B>>,
}

impl<Pg: PageBlock, B: Bell> VifUplinks<Pg, B> {
    fn vif(&mut self, device: u16) -> Option<&mut Vif<Pg, B>> {
        self.vifs.iter_mut().find(|v| v.info.index == device)
    }
}

impl<Pg: PageBlock, B: Bell> Uplinks for VifUplinks<Pg, B> {
    fn recv(&mut self, device: u16, buf: &mut [u8]) -> Option<(usize, FrameMeta)> {
        self.vif(device)?.recv(buf)
    }
    fn send(&mut self, device: u16, frame: &[u8], meta: FrameMeta) -> bool {
        self.vif(device).is_some_and(|v| v.send(frame, meta))
    }
    fn features(&self, device: u16, frame: &[u8], meta: &FrameMeta) -> u32 {
        self.vifs
            .iter()
            .find(|v| v.info.index == device)
            .map_or(0, |v| v.features(frame, meta))
    }
    fn flush(&mut self) -> bool {
        let mut more = false;
        for v in &mut self.vifs {
            more |= v.flush();
        }
        more
    }
    fn has(&self, device: u16) -> bool {
        self.vifs.iter().any(|v| v.info.index == device)
    }
}

#[cfg(test)]
mod tests;
