//! The front end of a Xen network device (`netif`, `xen/io/netif.h`): a tx
//! ring and an rx ring, one page each, shared with a network backend
//! (dom0's `netback`), as netback-uk's uplink will be (issue 21).
//!
//! The mode is the simplest the protocol has, and the one every Linux
//! netback serves: rx-copy (the backend copies each received frame into a
//! page we granted), one slot per frame both ways (we announce neither
//! `feature-sg` nor GSO, so frames are at most one page), checksum flags
//! passed through. Every response is the backend's word and is checked
//! before it is used: a response to a request we never made (an id not in
//! flight, a producer index beyond what is outstanding), a status the
//! protocol does not define, a frame outside its page, or flags we never
//! allowed (more data, extra info) is a protocol error, and the device is
//! unusable after it.

use share_hal::error::{Error, Result};
use share_hal::volatile::SharedMem;

use crate::abi::*;
use crate::ring::{FrontRing, RingState};

/// A page's bytes: rx buffers and tx frames are one page each at most.
const PAGE: u32 = 4096;

/// Tx requests and responses share 12-byte entries.
pub type TxRing<'a> = FrontRing<'a, NETIF_TX_REQUEST_SIZE>;
/// Rx requests and responses share 8-byte entries.
pub type RxRing<'a> = FrontRing<'a, NETIF_RX_RESPONSE_SIZE>;

/// Ids in flight on one ring: a bit per id (the ring's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ids([u64; 4]);

impl Ids {
    const NONE: Ids = Ids([0; 4]);

    fn test(&self, id: u16) -> bool {
        self.0
            .get(usize::from(id / 64))
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn set(&mut self, id: u16, on: bool) {
        if let Some(w) = self.0.get_mut(usize::from(id / 64)) {
            if on {
                *w |= 1 << (id % 64);
            } else {
                *w &= !(1 << (id % 64));
            }
        }
    }
}

/// Ids go from 0 to the ring's size (each a buffer of ours).
pub const MAX_IDS: u16 = NETIF_TX_RING_SIZE as u16;

/// One frame to send: `len` bytes at `offset` in our page `gref`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFrame {
    pub id: u16,
    pub gref: u32,
    pub offset: u16,
    pub len: u16,
    /// [`NETTXF_CSUM_BLANK`] and [`NETTXF_DATA_VALIDATED`] only.
    pub flags: u16,
}

/// One slot of a frame sent over several ([`NetFront::send_frame`]):
/// `len` bytes at `offset` in our page `gref`, tx id `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxSlot {
    pub id: u16,
    pub gref: u32,
    pub offset: u16,
    pub len: u16,
}

/// A segmentation offload request for the backend (an extra-info slot of
/// type `XEN_NETIF_EXTRA_TYPE_GSO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxGso {
    /// `XEN_NETIF_GSO_TYPE_TCPV4` or `_TCPV6`.
    pub kind: u8,
    /// The segment payload size (MSS), not 0.
    pub size: u16,
}

/// The most data slots of one frame: Linux's netback takes at most
/// `XEN_NETBK_LEGACY_SLOTS_MAX` (18) and disables the device past 20; a
/// frame of at most 65535 bytes from offset 0 needs 16.
pub const TX_MAX_SLOTS: usize = 17;

/// What the backend said of one of our rx buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxDone {
    /// A frame of `len` bytes at `offset` in buffer `id`.
    Frame {
        id: u16,
        offset: u16,
        len: u16,
        /// [`NETRXF_DATA_VALIDATED`], [`NETRXF_CSUM_BLANK`].
        flags: u16,
    },
    /// Buffer `id` came back without a frame (an error status).
    Empty { id: u16, status: i16 },
}

impl RxDone {
    pub fn id(&self) -> u16 {
        match *self {
            RxDone::Frame { id, .. } | RxDone::Empty { id, .. } => id,
        }
    }
}

/// Our indexes and ids in flight, kept between borrows of the pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetFrontState {
    tx: RingState,
    rx: RingState,
    tx_busy: Ids,
    rx_posted: Ids,
    tx_extra: u32,
}

/// The front end over its two ring pages.
pub struct NetFront<'a> {
    tx: TxRing<'a>,
    rx: RxRing<'a>,
    tx_busy: Ids,
    rx_posted: Ids,
    /// Extra-info slots sent and not yet answered (each gets a response
    /// of status `NETIF_RSP_NULL`, whose id means nothing).
    tx_extra: u32,
}

fn bad(what: &'static str) -> Error {
    Error::Protocol { what }
}

impl<'a> NetFront<'a> {
    /// Fresh rings in `tx_page` and `rx_page`.
    pub fn init(tx_page: SharedMem<'a>, rx_page: SharedMem<'a>) -> Result<Self> {
        Ok(NetFront {
            tx: TxRing::init(tx_page)?,
            rx: RxRing::init(rx_page)?,
            tx_busy: Ids::NONE,
            rx_posted: Ids::NONE,
            tx_extra: 0,
        })
    }

    pub fn resume(
        tx_page: SharedMem<'a>,
        rx_page: SharedMem<'a>,
        st: NetFrontState,
    ) -> Result<Self> {
        Ok(NetFront {
            tx: TxRing::resume(tx_page, st.tx)?,
            rx: RxRing::resume(rx_page, st.rx)?,
            tx_busy: st.tx_busy,
            rx_posted: st.rx_posted,
            tx_extra: st.tx_extra,
        })
    }

    pub fn park(&self) -> NetFrontState {
        NetFrontState {
            tx: self.tx.park(),
            rx: self.rx.park(),
            tx_busy: self.tx_busy,
            rx_posted: self.rx_posted,
            tx_extra: self.tx_extra,
        }
    }

    /// Whether tx id `id` is in flight (its page still the backend's).
    pub fn tx_busy(&self, id: u16) -> bool {
        self.tx_busy.test(id)
    }

    /// Whether rx buffer `id` is with the backend.
    pub fn rx_posted(&self, id: u16) -> bool {
        self.rx_posted.test(id)
    }

    /// Queues `f` on the tx ring (published by [`NetFront::publish`]);
    /// `Ok(false)`: the ring is full. Refused: an id out of range or in
    /// flight, a frame that does not fit its page or is empty, other
    /// flags.
    pub fn send(&mut self, f: &TxFrame) -> Result<bool> {
        let what = |w| Err(Error::InvalidArgument { what: w });
        if f.id >= MAX_IDS || self.tx_busy.test(f.id) {
            return what("netif tx id out of range or in flight");
        }
        if f.len == 0 || u32::from(f.offset) + u32::from(f.len) > PAGE {
            return what("netif tx frame empty or not within its page");
        }
        if f.flags & !(NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED) != 0 {
            return what("netif tx flags beyond checksum offload");
        }
        let mut b = [0u8; NETIF_TX_REQUEST_SIZE];
        b[NETIF_TX_REQUEST_GREF..][..4].copy_from_slice(&f.gref.to_le_bytes());
        b[NETIF_TX_REQUEST_OFFSET..][..2].copy_from_slice(&f.offset.to_le_bytes());
        b[NETIF_TX_REQUEST_FLAGS..][..2].copy_from_slice(&f.flags.to_le_bytes());
        b[NETIF_TX_REQUEST_ID..][..2].copy_from_slice(&f.id.to_le_bytes());
        b[NETIF_TX_REQUEST_SIZE_FIELD..][..2].copy_from_slice(&f.len.to_le_bytes());
        if !self.tx.push(&b)? {
            return Ok(false);
        }
        self.tx_busy.set(f.id, true);
        Ok(true)
    }

    /// Queues one frame over `slots` (`NETTXF_more_data` on all but the
    /// last), with a GSO extra-info slot after the first if `gso`; the
    /// first request's size is the frame's total, as the protocol has it.
    /// `flags`: [`NETTXF_CSUM_BLANK`] and [`NETTXF_DATA_VALIDATED`] only
    /// (GSO needs both). All of it or nothing: `Ok(false)` when the ring
    /// lacks room for every slot. Refused: no slot or more than
    /// [`TX_MAX_SLOTS`], an empty slot or one beyond its page, ids out of
    /// range, in flight or repeated, a total over 65535 bytes, a GSO type
    /// other than TCPv4/v6 or a size of 0.
    pub fn send_frame(&mut self, slots: &[TxSlot], flags: u16, gso: Option<TxGso>) -> Result<bool> {
        let what = |w| Err(Error::InvalidArgument { what: w });
        if slots.is_empty() || slots.len() > TX_MAX_SLOTS {
            return what("netif tx frame of no slot or too many");
        }
        if flags & !(NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED) != 0 {
            return what("netif tx flags beyond checksum offload");
        }
        let mut ids = Ids::NONE;
        let mut total = 0u32;
        for s in slots {
            if s.id >= MAX_IDS || self.tx_busy.test(s.id) || ids.test(s.id) {
                return what("netif tx id out of range, in flight or repeated");
            }
            if s.len == 0 || u32::from(s.offset) + u32::from(s.len) > PAGE {
                return what("netif tx slot empty or not within its page");
            }
            ids.set(s.id, true);
            total += u32::from(s.len);
        }
        let Ok(total) = u16::try_from(total) else {
            return what("netif tx frame over 65535 bytes");
        };
        if let Some(g) = gso {
            if !matches!(g.kind, XEN_NETIF_GSO_TYPE_TCPV4 | XEN_NETIF_GSO_TYPE_TCPV6)
                || g.size == 0
                || flags & NETTXF_CSUM_BLANK == 0
            {
                return what("netif tx GSO of another type, size 0 or without csum_blank");
            }
        }
        let need = slots.len() as u32 + u32::from(gso.is_some());
        if self.tx.free() < need {
            return Ok(false);
        }
        let req = |s: &TxSlot, len: u16, flags: u16| {
            let mut b = [0u8; NETIF_TX_REQUEST_SIZE];
            b[NETIF_TX_REQUEST_GREF..][..4].copy_from_slice(&s.gref.to_le_bytes());
            b[NETIF_TX_REQUEST_OFFSET..][..2].copy_from_slice(&s.offset.to_le_bytes());
            b[NETIF_TX_REQUEST_FLAGS..][..2].copy_from_slice(&flags.to_le_bytes());
            b[NETIF_TX_REQUEST_ID..][..2].copy_from_slice(&s.id.to_le_bytes());
            b[NETIF_TX_REQUEST_SIZE_FIELD..][..2].copy_from_slice(&len.to_le_bytes());
            b
        };
        let more = |i: usize| {
            if i + 1 < slots.len() {
                NETTXF_MORE_DATA
            } else {
                0
            }
        };
        let mut first = flags | more(0);
        if gso.is_some() {
            first |= NETTXF_EXTRA_INFO;
        }
        // Room for all was checked: every push below succeeds.
        let mut pushed = self.tx.push(&req(&slots[0], total, first))?;
        if let Some(g) = gso {
            let mut b = [0u8; NETIF_TX_REQUEST_SIZE];
            b[0] = XEN_NETIF_EXTRA_TYPE_GSO;
            b[2..4].copy_from_slice(&g.size.to_le_bytes());
            b[4] = g.kind;
            pushed &= self.tx.push(&b)?;
            self.tx_extra += 1;
        }
        for (i, s) in slots.iter().enumerate().skip(1) {
            pushed &= self.tx.push(&req(s, s.len, more(i)))?;
        }
        if !pushed {
            return Err(Error::Protocol {
                what: "netif tx ring lost room while a frame was queued",
            });
        }
        for s in slots {
            self.tx_busy.set(s.id, true);
        }
        Ok(true)
    }

    /// Gives rx buffer `id` (our page `gref`) to the backend; `Ok(false)`:
    /// the ring is full.
    pub fn post(&mut self, id: u16, gref: u32) -> Result<bool> {
        if id >= MAX_IDS || self.rx_posted.test(id) {
            return Err(Error::InvalidArgument {
                what: "netif rx id out of range or posted",
            });
        }
        let mut b = [0u8; NETIF_RX_REQUEST_SIZE];
        b[..2].copy_from_slice(&id.to_le_bytes());
        b[NETIF_RX_REQUEST_GREF..][..4].copy_from_slice(&gref.to_le_bytes());
        if !self.rx.push(&b)? {
            return Ok(false);
        }
        self.rx_posted.set(id, true);
        Ok(true)
    }

    /// Publishes both rings; whether the backend asked to be notified.
    pub fn publish(&mut self) -> Result<bool> {
        let tx = self.tx.publish()?;
        let rx = self.rx.publish()?;
        Ok(tx || rx)
    }

    /// Takes the tx responses published so far: `done(id, status)` for
    /// each (the id's page is ours again). At most the ring's size.
    pub fn take_tx(&mut self, mut done: impl FnMut(u16, i16)) -> Result<u32> {
        let n = self.tx.available()?;
        for _ in 0..n {
            let mut b = [0u8; NETIF_TX_RESPONSE_SIZE];
            self.tx.take_one(&mut b)?;
            let id = u16::from_le_bytes([b[0], b[1]]);
            let status = i16::from_le_bytes([b[2], b[3]]);
            // NULL answers an extra-info slot (its id is not one of ours):
            // at most one per extra slot sent.
            if status == NETIF_RSP_NULL {
                if self.tx_extra == 0 {
                    return Err(bad("netif backend answered an extra-info slot never sent"));
                }
                self.tx_extra -= 1;
                continue;
            }
            if !self.tx_busy.test(id) {
                return Err(bad("netif backend answered a tx id not in flight"));
            }
            if !matches!(status, NETIF_RSP_OKAY | NETIF_RSP_ERROR | NETIF_RSP_DROPPED) {
                return Err(bad("netif backend gave a tx status no protocol defines"));
            }
            self.tx_busy.set(id, false);
            done(id, status);
        }
        Ok(n)
    }

    /// Takes the rx responses published so far: `done` for each buffer
    /// (ours again, with or without a frame). At most the ring's size.
    pub fn take_rx(&mut self, mut done: impl FnMut(RxDone)) -> Result<u32> {
        let n = self.rx.available()?;
        for _ in 0..n {
            let mut b = [0u8; NETIF_RX_RESPONSE_SIZE];
            self.rx.take_one(&mut b)?;
            let id = u16::from_le_bytes([b[0], b[1]]);
            let word = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
            let (offset, flags) = (
                word(NETIF_RX_RESPONSE_OFFSET),
                word(NETIF_RX_RESPONSE_FLAGS),
            );
            let status = word(NETIF_RX_RESPONSE_STATUS) as i16;
            if !self.rx_posted.test(id) {
                return Err(bad("netif backend answered an rx buffer not posted"));
            }
            // Without feature-sg and GSO a frame is one slot and carries no
            // extra info; a GSO prefix is never asked for.
            if flags & !(NETRXF_DATA_VALIDATED | NETRXF_CSUM_BLANK) != 0 {
                return Err(bad("netif backend set rx flags we never allowed"));
            }
            let r = if status > 0 {
                if u32::from(offset) + status as u32 > PAGE {
                    return Err(bad("netif backend put an rx frame outside its page"));
                }
                RxDone::Frame {
                    id,
                    offset,
                    len: status as u16,
                    flags,
                }
            } else if matches!(status, NETIF_RSP_ERROR | NETIF_RSP_DROPPED | NETIF_RSP_OKAY) {
                RxDone::Empty { id, status }
            } else {
                return Err(bad("netif backend gave an rx status no protocol defines"));
            };
            self.rx_posted.set(id, false);
            done(r);
        }
        Ok(n)
    }

    /// Asks to be notified of the next response on either ring; whether
    /// some are waiting already.
    pub fn prepare_wait(&mut self) -> Result<bool> {
        let tx = self.tx.prepare_wait()?;
        let rx = self.rx.prepare_wait()?;
        Ok(tx || rx)
    }
}

#[cfg(test)]
mod tests;
