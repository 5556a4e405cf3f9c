//! The network share (xensnet): a control area, a tx lane (member to
//! switch) and an rx lane (switch to member) of 2 KiB slots holding frame
//! data inline.
//!
//! Page 0 holds the control fields and both lane headers; the slots follow.
//! Both sides compute where everything is from `numpages` alone
//! ([`NetLayout::new`]); no offset or count is read from the peer.

use super::{
    check_len, descriptor, get_bytes, get_u16, get_u32, get_u8, lane_header, prev_power_of_two,
    set_bytes, set_u16, set_u32, set_u8, zero, Error, Field, LaneLayout, PAGE_SIZE,
};

/// `"XSNT"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"XSNT");
pub const VERSION: u16 = 1;
/// Bytes of the control fields at the start of page 0.
pub const CONTROL_LEN: usize = 64;
/// Offset of the tx lane (its header) in page 0: the last 256 bytes, so
/// the tx slots start page-aligned on page 1.
pub const TX_LANE: usize = PAGE_SIZE - lane_header::LEN;
const _: () = assert!(CONTROL_LEN <= TX_LANE);

pub const SLOT_SIZE: usize = 2048;
pub const SLOT_HEADER_LEN: usize = 16;
/// Frame bytes one slot carries.
pub const SLOT_DATA_MAX: usize = SLOT_SIZE - SLOT_HEADER_LEN;

/// Smallest MTU (IPv4's minimum).
pub const MTU_MIN: u16 = 68;
pub const MTU_DEFAULT: u16 = 1500;
/// Largest MTU without [`features::JUMBO`].
pub const MTU_STANDARD_MAX: u16 = 1500;
/// Largest MTU with [`features::JUMBO`].
pub const MTU_MAX: u16 = 9000;
/// Ethernet header (14) plus one 802.1Q tag (4): frame bytes beyond the MTU.
pub const FRAME_OVERHEAD: usize = 18;
/// Shortest frame: an Ethernet header.
pub const FRAME_MIN: usize = 14;
/// Longest segmentation offload frame ([`features::GSO`]): an IP packet of
/// 65535 bytes with its Ethernet header and one VLAN tag, whatever the MTU.
pub const GSO_MAX_FRAME: usize = 65535 + FRAME_OVERHEAD;
/// Slots of the longest segmentation offload frame (33).
pub const GSO_MAX_SLOTS: u32 = GSO_MAX_FRAME.div_ceil(SLOT_DATA_MAX) as u32;
/// Most segments one TCP segmentation offload frame may make:
/// `⌈payload / gso_size⌉` (payload: the bytes after the TCP header). Bounds
/// the work one frame can cause a receiver that segments it (a `gso_size`
/// of 1 would make ~65 000). Linux TCP senders reach it only with an MSS
/// under 256 bytes, and xensnet's device takes at most
/// [`GSO_MAX_UDP_SEGS`] segments a frame anyway.
pub const GSO_MAX_SEGS: usize = 256;
/// Most segments (datagrams) one `UDP_L4` frame may make: Linux 6.1's
/// `UDP_MAX_SEGMENTS`, which its `virtio_net_hdr_to_skb` enforces on what
/// a TAP or virtio device receives (share-member's TAP), and which
/// xensnet keeps on receive.
pub const GSO_MAX_UDP_SEGS: usize = 64;

/// The most segments a GSO frame of `kind` may make.
pub fn gso_max_segs(kind: u8) -> usize {
    if kind == gso::UDP_L4 {
        GSO_MAX_UDP_SEGS
    } else {
        GSO_MAX_SEGS
    }
}
/// Smallest share on which a switch offers [`features::GSO`]: its lanes
/// must hold one [`GSO_MAX_FRAME`], so a sender never waits for room that
/// cannot exist (64 slots per lane, the first power of two >= 33).
pub const GSO_MIN_PAGES: u32 = GSO_MAX_SLOTS.next_power_of_two() + 2;

/// Feature bits: offered by the switch (its vdevice entry's `subtype`
/// filtered by what it implements), accepted by the member.
pub mod features {
    /// Frames may carry a partial checksum to complete ([`super::flags::CSUM_BLANK`]).
    pub const CSUM_BLANK: u32 = 1 << 0;
    /// Frames may be marked as already checksum-verified.
    pub const DATA_VALIDATED: u32 = 1 << 1;
    /// MTU above 1500, up to 9000.
    pub const JUMBO: u32 = 1 << 2;
    /// Segmentation offload: a TCP or UDP frame of up to
    /// [`super::GSO_MAX_FRAME`] bytes with its segment size (slot bytes
    /// 8..12). Needs [`CSUM_BLANK`] too (a GSO frame's checksum is partial),
    /// and a share of at least [`super::GSO_MIN_PAGES`] pages.
    pub const GSO: u32 = 1 << 3;
    pub const ALL: u32 = CSUM_BLANK | DATA_VALIDATED | JUMBO | GSO;
}

/// Byte ranges of the control fields in page 0.
pub mod field {
    use super::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: Field = 4..6;
    pub const RESERVED0: Field = 6..8;
    /// Written by the switch.
    pub const FEATURES_OFFERED: Field = 8..12;
    /// Written by the member, before it sets MEMBER_STATE to ready.
    pub const FEATURES_ACCEPTED: Field = 12..16;
    /// The port's MAC, assigned by the switch.
    pub const MAC: Field = 16..22;
    pub const MTU: Field = 22..24;
    /// Switch, atomic u32: [`super::LINK_DOWN`] or [`super::LINK_UP`].
    pub const LINK_STATE: Field = 24..28;
    /// Member, atomic u32: [`super::MEMBER_CLOSED`] or [`super::MEMBER_READY`].
    pub const MEMBER_STATE: Field = 28..32;
    pub const RESERVED1: Field = 32..64;
}

pub const LINK_DOWN: u32 = 0;
pub const LINK_UP: u32 = 1;
pub const MEMBER_CLOSED: u32 = 0;
pub const MEMBER_READY: u32 = 1;

/// A view of the control fields (a private copy of page 0's first bytes).
#[derive(Debug, Clone)]
pub struct Control<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Control<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        check_len(buffer.as_ref(), CONTROL_LEN)?;
        Ok(Control { buffer })
    }

    /// Wraps without the length check, to emit; accessors stay total.
    pub fn new_unchecked(buffer: T) -> Self {
        Control { buffer }
    }

    pub fn magic(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::MAGIC.start)
    }
    pub fn version(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::VERSION.start)
    }
    pub fn features_offered(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::FEATURES_OFFERED.start)
    }
    pub fn features_accepted(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::FEATURES_ACCEPTED.start)
    }
    pub fn mac(&self) -> [u8; 6] {
        get_bytes(self.buffer.as_ref(), field::MAC.start)
    }
    pub fn mtu(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::MTU.start)
    }
    pub fn link_state(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::LINK_STATE.start)
    }
    pub fn member_state(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::MEMBER_STATE.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Control<T> {
    pub fn set_magic(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::MAGIC.start, v)
    }
    pub fn set_version(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::VERSION.start, v)
    }
    pub fn set_features_offered(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::FEATURES_OFFERED.start, v)
    }
    pub fn set_features_accepted(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::FEATURES_ACCEPTED.start, v)
    }
    pub fn set_mac(&mut self, v: [u8; 6]) {
        set_bytes(self.buffer.as_mut(), field::MAC.start, v)
    }
    pub fn set_mtu(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::MTU.start, v)
    }
    pub fn set_link_state(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::LINK_STATE.start, v)
    }
    pub fn set_member_state(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::MEMBER_STATE.start, v)
    }
}

/// The switch's offer, as the member validates it when joining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRepr {
    /// Known feature bits only: unknown offered bits (a newer switch) are
    /// dropped, never accepted.
    pub features_offered: u32,
    pub mac: [u8; 6],
    pub mtu: u16,
}

impl ControlRepr {
    pub fn parse<T: AsRef<[u8]>>(c: &Control<T>) -> Result<Self, Error> {
        check_len(c.buffer.as_ref(), CONTROL_LEN)?;
        if c.magic() != MAGIC {
            return Err(Error::BadMagic {
                expected: MAGIC,
                found: c.magic(),
            });
        }
        if c.version() != VERSION {
            return Err(Error::UnsupportedVersion { found: c.version() });
        }
        let features_offered = c.features_offered() & features::ALL;
        let r = ControlRepr {
            features_offered,
            mac: c.mac(),
            mtu: c.mtu(),
        };
        r.check()?;
        Ok(r)
    }

    fn check(&self) -> Result<(), Error> {
        let max = if self.features_offered & features::JUMBO != 0 {
            MTU_MAX
        } else {
            MTU_STANDARD_MAX
        };
        if self.mtu < MTU_MIN || self.mtu > max {
            return Err(Error::BadField {
                field: "net mtu",
                value: self.mtu.into(),
            });
        }
        // A port's own address must be unicast; all zeros means unassigned.
        if self.mac[0] & 1 != 0 || self.mac == [0; 6] {
            return Err(Error::BadField {
                field: "net mac",
                value: mac_u64(self.mac),
            });
        }
        Ok(())
    }

    /// Writes the switch's side of a fresh control area: link down, member
    /// closed, nothing accepted yet.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, c: &mut Control<T>) -> Result<(), Error> {
        check_len(c.buffer.as_ref(), CONTROL_LEN)?;
        if self.features_offered & !features::ALL != 0 {
            return Err(Error::UnknownFlags {
                field: "net features offered",
                bits: (self.features_offered & !features::ALL).into(),
            });
        }
        self.check()?;
        c.set_magic(MAGIC);
        c.set_version(VERSION);
        zero(c.buffer.as_mut(), field::RESERVED0);
        c.set_features_offered(self.features_offered);
        c.set_features_accepted(0);
        c.set_mac(self.mac);
        c.set_mtu(self.mtu);
        c.set_link_state(LINK_DOWN);
        c.set_member_state(MEMBER_CLOSED);
        zero(c.buffer.as_mut(), field::RESERVED1);
        Ok(())
    }
}

fn mac_u64(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// The features in use, from the switch's own offer and the member's
/// `features_accepted` (read once). Accepting what was not offered is a
/// protocol error: the member is confused or hostile. So is accepting
/// [`features::GSO`] without [`features::CSUM_BLANK`]: every GSO frame
/// carries a partial checksum.
pub fn negotiate(offered: u32, accepted: u32) -> Result<u32, Error> {
    let extra = accepted & !offered;
    if extra != 0 {
        return Err(Error::UnknownFlags {
            field: "net features accepted",
            bits: extra.into(),
        });
    }
    if accepted & features::GSO != 0 && accepted & features::CSUM_BLANK == 0 {
        return Err(Error::BadField {
            field: "net features accepted (GSO without CSUM_BLANK)",
            value: accepted.into(),
        });
    }
    Ok(accepted)
}

/// Where the lanes of a network share are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetLayout {
    pub numpages: u32,
    /// Member to switch.
    pub tx: LaneLayout,
    /// Switch to member.
    pub rx: LaneLayout,
}

/// Smallest network share: page 0, a page of tx slots, the rx header page
/// and a page of rx slots (two slots per lane).
pub const MIN_PAGES: u32 = 4;

impl NetLayout {
    /// The layout of a share of `numpages` pages, both lanes in the
    /// contiguous format of `share_hal::lane` with page-aligned slots:
    ///
    /// - page 0: control fields at 0, the tx lane header at 3840;
    /// - pages `1 ..= S/2`: the S tx slots;
    /// - page `1 + S/2`: the rx lane header at 3840 (the rest reserved);
    /// - pages `2 + S/2 ..= 1 + S`: the S rx slots.
    ///
    /// `S`, the slots per lane, is the largest power of two with
    /// `S + 2 <= numpages`; pages left over stay unused.
    pub fn new(numpages: u32) -> Result<Self, Error> {
        if numpages < MIN_PAGES {
            return Err(Error::BadField {
                field: "net share numpages",
                value: numpages.into(),
            });
        }
        if numpages > descriptor::MAX_PAGES {
            return Err(Error::TooMany {
                field: "net share numpages",
                count: numpages.into(),
                max: descriptor::MAX_PAGES.into(),
            });
        }
        let slot_count = prev_power_of_two(numpages - 2);
        let lane_pages = slot_count as usize * SLOT_SIZE / PAGE_SIZE;
        let tx = LaneLayout::at(TX_LANE, slot_count, SLOT_SIZE);
        let rx = LaneLayout::at(
            PAGE_SIZE * (1 + lane_pages) + TX_LANE,
            slot_count,
            SLOT_SIZE,
        );
        Ok(NetLayout { numpages, tx, rx })
    }

    /// Bytes of the share.
    pub fn len(&self) -> usize {
        self.numpages as usize * PAGE_SIZE
    }

    pub fn is_empty(&self) -> bool {
        self.numpages == 0
    }

    /// Whether each lane holds one [`GSO_MAX_FRAME`]: the condition for a
    /// switch to offer, and a member to accept, [`features::GSO`].
    pub fn holds_gso(&self) -> bool {
        self.tx.slot_count >= GSO_MAX_SLOTS && self.rx.slot_count >= GSO_MAX_SLOTS
    }
}

/// Slot header flags.
pub mod flags {
    /// The frame continues in the next slot.
    pub const MORE: u16 = 1 << 0;
    /// The frame's checksum at `csum_start + csum_offset` is partial: the
    /// receiver (or the switch) completes it over `csum_start..`.
    pub const CSUM_BLANK: u16 = 1 << 1;
    /// The sender verified the frame's checksums.
    pub const DATA_VALIDATED: u16 = 1 << 2;
    pub const ALL: u16 = MORE | CSUM_BLANK | DATA_VALIDATED;
}

/// Byte ranges of a slot header; frame data follows at [`SLOT_HEADER_LEN`].
pub mod slot_field {
    use super::Field;
    /// Data bytes in this slot.
    pub const LEN: Field = 0..2;
    pub const FLAGS: Field = 2..4;
    pub const CSUM_START: Field = 4..6;
    pub const CSUM_OFFSET: Field = 6..8;
    /// Segment payload size (the MSS for TCP), with a `GSO_TYPE`.
    pub const GSO_SIZE: Field = 8..10;
    pub const GSO_TYPE: usize = 10;
    pub const GSO_FLAGS: usize = 11;
    pub const RESERVED: Field = 12..16;
}

/// Segmentation offload types (slot byte 10) and flags (slot byte 11).
pub mod gso {
    /// An ordinary frame.
    pub const NONE: u8 = 0;
    /// TCP over IPv4, cut at `gso_size` payload bytes per segment.
    pub const TCPV4: u8 = 1;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 2;
    /// UDP over IPv4 or IPv6, each segment its own datagram (Linux's
    /// `SKB_GSO_UDP_L4`), not IP fragments.
    pub const UDP_L4: u8 = 3;
    pub const TYPE_MAX: u8 = UDP_L4;
    /// Flag: the TCP stream uses ECN (virtio's `VIRTIO_NET_HDR_GSO_ECN`):
    /// a CWR in the header belongs on the first segment only.
    pub const FLAG_ECN: u8 = 1 << 0;
    pub const FLAGS_ALL: u8 = FLAG_ECN;
}

/// A view of a slot header (a private copy of a slot's first 16 bytes).
#[derive(Debug, Clone)]
pub struct SlotHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SlotHeader<T> {
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        check_len(buffer.as_ref(), SLOT_HEADER_LEN)?;
        Ok(SlotHeader { buffer })
    }

    /// Wraps without the length check, to emit; accessors stay total.
    pub fn new_unchecked(buffer: T) -> Self {
        SlotHeader { buffer }
    }

    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), slot_field::LEN.start)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), slot_field::FLAGS.start)
    }
    pub fn csum_start(&self) -> u16 {
        get_u16(self.buffer.as_ref(), slot_field::CSUM_START.start)
    }
    pub fn csum_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), slot_field::CSUM_OFFSET.start)
    }
    pub fn gso_size(&self) -> u16 {
        get_u16(self.buffer.as_ref(), slot_field::GSO_SIZE.start)
    }
    pub fn gso_type(&self) -> u8 {
        get_u8(self.buffer.as_ref(), slot_field::GSO_TYPE)
    }
    pub fn gso_flags(&self) -> u8 {
        get_u8(self.buffer.as_ref(), slot_field::GSO_FLAGS)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SlotHeader<T> {
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), slot_field::LEN.start, v)
    }
    pub fn set_flags(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), slot_field::FLAGS.start, v)
    }
    pub fn set_csum_start(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), slot_field::CSUM_START.start, v)
    }
    pub fn set_csum_offset(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), slot_field::CSUM_OFFSET.start, v)
    }
    pub fn set_gso_size(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), slot_field::GSO_SIZE.start, v)
    }
    pub fn set_gso_type(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), slot_field::GSO_TYPE, v)
    }
    pub fn set_gso_flags(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), slot_field::GSO_FLAGS, v)
    }
}

/// A validated slot header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRepr {
    /// Data bytes in this slot, `1..=SLOT_DATA_MAX`.
    pub len: u16,
    pub flags: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// `gso::NONE..=gso::TYPE_MAX`; with `gso_size` and `gso_flags`, counts
    /// in a frame's first slot only.
    pub gso_type: u8,
    pub gso_size: u16,
    /// Known [`gso`] flag bits only.
    pub gso_flags: u8,
}

impl SlotRepr {
    pub fn parse<T: AsRef<[u8]>>(h: &SlotHeader<T>) -> Result<Self, Error> {
        check_len(h.buffer.as_ref(), SLOT_HEADER_LEN)?;
        let flags = h.flags();
        if flags & !flags::ALL != 0 {
            return Err(Error::UnknownFlags {
                field: "net slot flags",
                bits: (flags & !flags::ALL).into(),
            });
        }
        let len = h.len();
        if len == 0 || usize::from(len) > SLOT_DATA_MAX {
            return Err(Error::BadField {
                field: "net slot len",
                value: len.into(),
            });
        }
        // Unknown values are refused in any slot, like unknown flag bits:
        // they have no meaning a later version could rely on us ignoring.
        let gso_type = h.gso_type();
        if gso_type > gso::TYPE_MAX {
            return Err(Error::BadField {
                field: "net slot gso_type",
                value: gso_type.into(),
            });
        }
        let gso_flags = h.gso_flags();
        if gso_flags & !gso::FLAGS_ALL != 0 {
            return Err(Error::UnknownFlags {
                field: "net slot gso_flags",
                bits: (gso_flags & !gso::FLAGS_ALL).into(),
            });
        }
        Ok(SlotRepr {
            len,
            flags,
            csum_start: h.csum_start(),
            csum_offset: h.csum_offset(),
            gso_type,
            gso_size: h.gso_size(),
            gso_flags,
        })
    }

    pub fn more(&self) -> bool {
        self.flags & flags::MORE != 0
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut SlotHeader<T>) -> Result<(), Error> {
        check_len(h.buffer.as_ref(), SLOT_HEADER_LEN)?;
        h.set_len(self.len);
        h.set_flags(self.flags);
        h.set_csum_start(self.csum_start);
        h.set_csum_offset(self.csum_offset);
        h.set_gso_size(self.gso_size);
        h.set_gso_type(self.gso_type);
        h.set_gso_flags(self.gso_flags);
        zero(h.buffer.as_mut(), slot_field::RESERVED);
        Ok(())
    }
}

/// Checksum to complete: the 16-bit ones' complement sum over
/// `start..` of the frame goes at `start + offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Csum {
    pub start: u16,
    pub offset: u16,
}

/// Segmentation offload request of a frame: cut its payload into segments
/// of `size` bytes, each with its own headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// [`gso::TCPV4`], [`gso::TCPV6`] or [`gso::UDP_L4`].
    pub kind: u8,
    /// Segment payload bytes, at least 1.
    pub size: u16,
    /// [`gso::FLAG_ECN`] or 0.
    pub flags: u8,
}

impl Gso {
    /// The request of a frame's first slot fields; `Ok(None)` for an
    /// ordinary frame. A size or flags without a type are refused, so a
    /// frame means one thing.
    pub fn from_fields(kind: u8, size: u16, flags: u8) -> Result<Option<Gso>, Error> {
        if kind == gso::NONE {
            if size != 0 || flags != 0 {
                return Err(Error::BadField {
                    field: "net gso_size/gso_flags without gso_type",
                    value: (u64::from(size) << 8) | u64::from(flags),
                });
            }
            return Ok(None);
        }
        if kind > gso::TYPE_MAX {
            return Err(Error::BadField {
                field: "net slot gso_type",
                value: kind.into(),
            });
        }
        if flags & !gso::FLAGS_ALL != 0 {
            return Err(Error::UnknownFlags {
                field: "net slot gso_flags",
                bits: (flags & !gso::FLAGS_ALL).into(),
            });
        }
        if flags & gso::FLAG_ECN != 0 && kind == gso::UDP_L4 {
            return Err(Error::BadField {
                field: "net gso_flags ECN on UDP",
                value: flags.into(),
            });
        }
        if size == 0 {
            return Err(Error::BadField {
                field: "net gso_size",
                value: 0,
            });
        }
        Ok(Some(Gso { kind, size, flags }))
    }

    pub fn ecn(&self) -> bool {
        self.flags & gso::FLAG_ECN != 0
    }
}

/// A complete, validated frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Frame bytes, `FRAME_MIN..=max_frame`.
    pub len: usize,
    /// Slots the frame spanned.
    pub slots: u32,
    pub csum: Option<Csum>,
    pub data_validated: bool,
    /// Segmentation offload; implies `csum`.
    pub gso: Option<Gso>,
}

/// What to do with the slot just fed to [`FrameAssembler::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAction {
    /// Copy the slot's `len` data bytes to offset `at` of the frame buffer
    /// (`at + len <= max_frame`); if `done`, the frame is complete.
    Append {
        at: usize,
        len: usize,
        done: Option<FrameInfo>,
    },
    /// The slot belongs to a frame already refused: consume and drop it.
    Skip,
}

/// Reassembles frames from slot headers, enforcing the receiver's limits:
/// the negotiated MTU (or [`GSO_MAX_FRAME`] for a segmentation offload
/// frame), the offload features, at most as many slots as the longest frame
/// of its kind needs. Pure state, no memory access: the caller copies data
/// as told, so the same rules run under fuzzing and in the switch.
///
/// After an error the rest of that frame's chain (up to a slot without
/// `MORE`) is skipped, so the lane keeps moving and one bad frame costs one
/// error. Garbage flags still count for `MORE`: a peer that never clears it
/// only makes us skip the slots it filled.
#[derive(Debug, Clone)]
pub struct FrameAssembler {
    /// Longest frame of any kind: the frame buffer's size.
    max_frame: usize,
    /// Longest frame without segmentation offload: MTU + 18.
    mtu_frame: usize,
    features: u32,
    /// Limits of the frame being assembled, from its first slot.
    frame_max: usize,
    frame_max_slots: u32,
    /// Ethernet rules (runts, checksum start past the header); off for
    /// bulk payloads.
    ethernet: bool,
    len: usize,
    slots: u32,
    first: Option<SlotRepr>,
    skipping: bool,
}

impl FrameAssembler {
    /// An assembler for frames of at most `mtu` (+ Ethernet header and one
    /// VLAN tag) with the negotiated `features`.
    pub fn new(mtu: u16, features: u32) -> Result<Self, Error> {
        let max = if features & features::JUMBO != 0 {
            MTU_MAX
        } else {
            MTU_STANDARD_MAX
        };
        if mtu < MTU_MIN || mtu > max {
            return Err(Error::BadField {
                field: "net mtu",
                value: mtu.into(),
            });
        }
        let mtu_frame = usize::from(mtu) + FRAME_OVERHEAD;
        let max_frame = if features & features::GSO != 0 {
            GSO_MAX_FRAME.max(mtu_frame)
        } else {
            mtu_frame
        };
        Ok(FrameAssembler {
            max_frame,
            mtu_frame,
            features,
            frame_max: 0,
            frame_max_slots: 0,
            ethernet: true,
            len: 0,
            slots: 0,
            first: None,
            skipping: false,
        })
    }

    /// An assembler for payloads other than Ethernet frames (bulk lanes,
    /// benchmarks): the same slot rules up to `max_frame` bytes (our own
    /// configuration), no runt limit, offload flags accepted as sent.
    pub fn bulk(max_frame: usize) -> Result<Self, Error> {
        if max_frame == 0 || max_frame > u32::MAX as usize {
            return Err(Error::BadField {
                field: "bulk max frame len",
                value: max_frame as u64,
            });
        }
        Ok(FrameAssembler {
            max_frame,
            mtu_frame: max_frame,
            features: features::CSUM_BLANK | features::DATA_VALIDATED,
            frame_max: 0,
            frame_max_slots: 0,
            ethernet: false,
            len: 0,
            slots: 0,
            first: None,
            skipping: false,
        })
    }

    /// Longest frame accepted, in bytes: the frame buffer's size.
    /// [`GSO_MAX_FRAME`] with [`features::GSO`].
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Longest frame without segmentation offload: MTU + 18.
    pub fn mtu_frame(&self) -> usize {
        self.mtu_frame
    }

    /// The negotiated features these rules apply.
    pub fn features(&self) -> u32 {
        self.features
    }

    /// Whether a frame is partly assembled (more slots expected).
    pub fn in_frame(&self) -> bool {
        self.first.is_some() || self.skipping
    }

    fn reset(&mut self) {
        self.len = 0;
        self.slots = 0;
        self.first = None;
        self.skipping = false;
    }

    /// Feeds the header of the next slot of the lane.
    ///
    /// The common case, a whole frame in one slot with no segmentation
    /// offload while no frame is in progress, is decided here in a few
    /// comparisons; everything else (and every refusal) goes through
    /// [`push_general`](Self::push_general), whose verdict the fast path
    /// equals (tested, and fuzzed by `net_slots`).
    #[inline]
    pub fn push<T: AsRef<[u8]>>(&mut self, h: &SlotHeader<T>) -> Result<SlotAction, Error> {
        let b = h.buffer.as_ref();
        if let Some(w) = b.get(..SLOT_HEADER_LEN) {
            let lo = u64::from_le_bytes(w[..8].try_into().unwrap_or([0; 8]));
            let hi = u64::from_le_bytes(w[8..].try_into().unwrap_or([0; 8]));
            if let Some(action) = self.push_fast(lo, hi) {
                return Ok(action);
            }
        }
        self.push_general(h)
    }

    /// [`push`](Self::push) of a header read as two little-endian words
    /// (`SharedMem::read_16`).
    #[inline]
    pub fn push_words(&mut self, h: [u64; 2]) -> Result<SlotAction, Error> {
        if let Some(action) = self.push_fast(h[0], h[1]) {
            return Ok(action);
        }
        let mut b = [0u8; SLOT_HEADER_LEN];
        b[..8].copy_from_slice(&h[0].to_le_bytes());
        b[8..].copy_from_slice(&h[1].to_le_bytes());
        self.push_general(&SlotHeader::new_unchecked(&b[..]))
    }

    /// The fast path of [`push`](Self::push), on the header's words:
    /// `None` if the slot needs the general rules.
    #[inline]
    fn push_fast(&self, lo: u64, hi: u64) -> Option<SlotAction> {
        let len = self.one_slot(lo, hi)?;
        let fl = (lo >> 16) as u16;
        let csum = (fl & flags::CSUM_BLANK != 0).then_some(Csum {
            start: (lo >> 32) as u16,
            offset: (lo >> 48) as u16,
        });
        Some(SlotAction::Append {
            at: 0,
            len,
            done: Some(FrameInfo {
                len,
                slots: 1,
                csum,
                data_validated: fl & flags::DATA_VALIDATED != 0,
                gso: None,
            }),
        })
    }

    /// The common case, decided on a slot header's two little-endian
    /// words (`SharedMem::read_16`) without changing any state: no frame
    /// in progress, and the slot holds a whole frame without segmentation
    /// offload that every rule accepts. `Some(len)`: the frame is the
    /// slot's `len` bytes, its flags only `CSUM_BLANK` and
    /// `DATA_VALIDATED`, its checksum fields (with `CSUM_BLANK`) the
    /// header's; [`push_words`](Self::push_words) would say the same.
    /// `None`: the general rules decide (feed the same words to
    /// [`push_words`](Self::push_words)).
    #[inline]
    pub fn one_slot(&self, lo: u64, hi: u64) -> Option<usize> {
        if self.skipping || self.first.is_some() {
            return None;
        }
        let len = usize::from(lo as u16);
        let fl = (lo >> 16) as u16;
        // No MORE, no unknown flag, no segmentation offload (bytes 8..12).
        if fl & !(flags::CSUM_BLANK | flags::DATA_VALIDATED) != 0 || hi as u32 != 0 {
            return None;
        }
        let min = if self.ethernet { FRAME_MIN } else { 1 };
        if len < min || len > self.mtu_frame.min(SLOT_DATA_MAX) {
            return None;
        }
        if fl & flags::DATA_VALIDATED != 0 && self.features & features::DATA_VALIDATED == 0 {
            return None;
        }
        if fl & flags::CSUM_BLANK != 0 {
            let start = (lo >> 32) as u16;
            let offset = (lo >> 48) as u16;
            let end = usize::from(start) + usize::from(offset) + 2;
            if self.features & features::CSUM_BLANK == 0
                || (self.ethernet && usize::from(start) < FRAME_MIN)
                || end > len
            {
                return None;
            }
        }
        Some(len)
    }

    /// [`push`](Self::push) without its fast path: every rule, in order.
    pub fn push_general<T: AsRef<[u8]>>(&mut self, h: &SlotHeader<T>) -> Result<SlotAction, Error> {
        let more = h.flags() & flags::MORE != 0;
        if self.skipping {
            if !more {
                self.reset();
            }
            return Ok(SlotAction::Skip);
        }
        match self.accept(h) {
            Ok(action) => Ok(action),
            Err(e) => {
                self.reset();
                self.skipping = more;
                Err(e)
            }
        }
    }

    fn accept<T: AsRef<[u8]>>(&mut self, h: &SlotHeader<T>) -> Result<SlotAction, Error> {
        let slot = SlotRepr::parse(h)?;
        let first = match self.first {
            Some(first) => first,
            None => {
                // The first slot says what kind of frame this is, and so
                // its limits: a GSO frame may be longer than the MTU.
                self.frame_max = if slot.gso_type != gso::NONE {
                    if self.features & features::GSO == 0 {
                        return Err(Error::NotOffered {
                            feature: "net segmentation offload (GSO)",
                        });
                    }
                    self.max_frame
                } else {
                    self.mtu_frame
                };
                self.frame_max_slots = self.frame_max.div_ceil(SLOT_DATA_MAX) as u32;
                self.first = Some(slot);
                slot
            }
        };
        let at = self.len;
        let len = usize::from(slot.len);
        let end = at + len;
        if end > self.frame_max {
            return Err(Error::TooMany {
                field: "net frame len",
                count: end as u64,
                max: self.frame_max as u64,
            });
        }
        // Short slots could otherwise keep a chain going for a whole lane.
        if self.slots >= self.frame_max_slots {
            return Err(Error::TooMany {
                field: "net frame slots",
                count: u64::from(self.slots) + 1,
                max: self.frame_max_slots.into(),
            });
        }
        self.len = end;
        self.slots += 1;
        if slot.more() {
            return Ok(SlotAction::Append {
                at,
                len,
                done: None,
            });
        }
        let frame = self.finish(&first)?;
        self.reset();
        Ok(SlotAction::Append {
            at,
            len,
            done: Some(frame),
        })
    }

    /// Frame-level rules, from the first slot's flags and the total length.
    fn finish(&self, first: &SlotRepr) -> Result<FrameInfo, Error> {
        if self.ethernet && self.len < FRAME_MIN {
            return Err(Error::BadField {
                field: "net frame len (runt)",
                value: self.len as u64,
            });
        }
        let csum = if first.flags & flags::CSUM_BLANK != 0 {
            if self.features & features::CSUM_BLANK == 0 {
                return Err(Error::NotOffered {
                    feature: "net checksum offload (CSUM_BLANK)",
                });
            }
            let end = usize::from(first.csum_start) + usize::from(first.csum_offset) + 2;
            if (self.ethernet && usize::from(first.csum_start) < FRAME_MIN) || end > self.len {
                return Err(Error::BadField {
                    field: "net csum_start + csum_offset",
                    value: end as u64,
                });
            }
            Some(Csum {
                start: first.csum_start,
                offset: first.csum_offset,
            })
        } else {
            None
        };
        let data_validated = first.flags & flags::DATA_VALIDATED != 0;
        if data_validated && self.features & features::DATA_VALIDATED == 0 {
            return Err(Error::NotOffered {
                feature: "net DATA_VALIDATED",
            });
        }
        // `accept` refused a GSO type without the feature already.
        let gso = Gso::from_fields(first.gso_type, first.gso_size, first.gso_flags)?;
        if gso.is_some() && csum.is_none() {
            return Err(Error::BadField {
                field: "net gso_type without CSUM_BLANK",
                value: first.gso_type.into(),
            });
        }
        Ok(FrameInfo {
            len: self.len,
            slots: self.slots,
            csum,
            data_validated,
            gso,
        })
    }
}

/// Splits a frame of `len` bytes into slot headers, the sender's half of
/// [`FrameAssembler`]: calls `slot(data_offset, header)` for each slot.
/// The first slot carries the frame's checksum request, flags and
/// segmentation offload. A GSO request needs a checksum request (the
/// receiver would refuse it); lengths are the caller's to check.
pub fn split_frame(
    len: usize,
    csum: Option<Csum>,
    data_validated: bool,
    gso: Option<Gso>,
    mut slot: impl FnMut(usize, SlotRepr),
) -> Result<u32, Error> {
    if len == 0 {
        return Err(Error::BadField {
            field: "net frame len",
            value: 0,
        });
    }
    let (gso_type, gso_size, gso_flags) = match gso {
        Some(g) => {
            // Through `from_fields`, so we never emit what we would refuse.
            Gso::from_fields(g.kind, g.size, g.flags)?;
            if csum.is_none() {
                return Err(Error::BadField {
                    field: "net gso_type without CSUM_BLANK",
                    value: g.kind.into(),
                });
            }
            (g.kind, g.size, g.flags)
        }
        None => (gso::NONE, 0, 0),
    };
    let mut first_flags = 0;
    let (csum_start, csum_offset) = match csum {
        Some(c) => {
            first_flags |= flags::CSUM_BLANK;
            (c.start, c.offset)
        }
        None => (0, 0),
    };
    if data_validated {
        first_flags |= flags::DATA_VALIDATED;
    }
    let mut at = 0;
    let mut n = 0;
    while at < len {
        let chunk = (len - at).min(SLOT_DATA_MAX);
        let last = at + chunk == len;
        let mut repr = SlotRepr {
            len: chunk as u16,
            flags: if last { 0 } else { flags::MORE },
            csum_start: 0,
            csum_offset: 0,
            gso_type: gso::NONE,
            gso_size: 0,
            gso_flags: 0,
        };
        if n == 0 {
            repr.flags |= first_flags;
            repr.csum_start = csum_start;
            repr.csum_offset = csum_offset;
            repr.gso_type = gso_type;
            repr.gso_size = gso_size;
            repr.gso_flags = gso_flags;
        }
        slot(at, repr);
        at += chunk;
        n += 1;
    }
    Ok(n)
}

/// Offsets of a lane's indexes relative to the share, for `SharedMem`
/// atomics: `lane.header + lane_header::PROD` etc.
pub fn lane_index_offsets(lane: &LaneLayout) -> [usize; 4] {
    [
        lane.header + lane_header::PROD,
        lane.header + lane_header::PROD_EVENT,
        lane.header + lane_header::CONS,
        lane.header + lane_header::CONS_EVENT,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// Switch's offer: checksum offload + jumbo, MAC 00:16:3e:00:00:07,
    /// MTU 9000, link up, member ready with CSUM_BLANK accepted.
    const CONTROL: [u8; 64] = {
        let mut c = [0u8; 64];
        let m = *b"XSNT";
        c[0] = m[0];
        c[1] = m[1];
        c[2] = m[2];
        c[3] = m[3];
        c[4] = 1;
        c[8] = 0b101; // offered
        c[12] = 0b001; // accepted
        c[16] = 0x00;
        c[17] = 0x16;
        c[18] = 0x3e;
        c[21] = 0x07;
        c[22] = 0x28; // 9000 = 0x2328
        c[23] = 0x23;
        c[24] = 1; // link up
        c[28] = 1; // member ready
        c
    };

    #[test]
    fn control_parses_literal_bytes() {
        let c = Control::new_checked(&CONTROL[..]).unwrap();
        let r = ControlRepr::parse(&c).unwrap();
        assert_eq!(
            r,
            ControlRepr {
                features_offered: features::CSUM_BLANK | features::JUMBO,
                mac: [0, 0x16, 0x3e, 0, 0, 7],
                mtu: 9000
            }
        );
        assert_eq!(c.link_state(), LINK_UP);
        assert_eq!(c.member_state(), MEMBER_READY);
        assert_eq!(
            negotiate(r.features_offered, c.features_accepted()),
            Ok(features::CSUM_BLANK)
        );

        let mut out = [0xffu8; 64];
        r.emit(&mut Control::new_unchecked(&mut out[..])).unwrap();
        let mut expect = CONTROL;
        expect[12] = 0; // nothing accepted yet
        expect[24] = 0; // link down
        expect[28] = 0; // member closed
        assert_eq!(out, expect);
    }

    #[test]
    fn control_refuses_garbage() {
        let with = |at: usize, bytes: &[u8]| {
            let mut b = CONTROL;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            ControlRepr::parse(&Control::new_unchecked(&b[..]))
        };
        assert!(matches!(with(0, b"XSNX"), Err(Error::BadMagic { .. })));
        assert_eq!(
            with(4, &[9, 0]),
            Err(Error::UnsupportedVersion { found: 9 })
        );
        assert_eq!(
            with(22, &[67, 0]),
            Err(Error::BadField {
                field: "net mtu",
                value: 67
            })
        );
        assert_eq!(
            with(22, &[0x29, 0x23]),
            Err(Error::BadField {
                field: "net mtu",
                value: 9001
            })
        );
        // 9000 without JUMBO offered.
        assert_eq!(
            with(8, &[0b001]),
            Err(Error::BadField {
                field: "net mtu",
                value: 9000
            })
        );
        assert!(matches!(
            with(16, &[0x01]),
            Err(Error::BadField {
                field: "net mac",
                ..
            })
        ));
        assert!(matches!(
            with(16, &[0, 0, 0, 0, 0, 0]),
            Err(Error::BadField {
                field: "net mac",
                ..
            })
        ));
        // Unknown offered bits are dropped, not an error.
        assert_eq!(
            with(8, &[0b101, 0, 0, 0x80]).map(|r| r.features_offered),
            Ok(0b101)
        );
        assert!(ControlRepr::parse(&Control::new_unchecked(&CONTROL[..63])).is_err());
    }

    #[test]
    fn negotiation_refuses_what_was_not_offered() {
        assert_eq!(negotiate(0b111, 0), Ok(0));
        assert_eq!(negotiate(0b111, 0b110), Ok(0b110));
        assert_eq!(
            negotiate(0b001, 0b011),
            Err(Error::UnknownFlags {
                field: "net features accepted",
                bits: 0b010
            })
        );
    }

    #[test]
    fn layouts_from_numpages() {
        let l = NetLayout::new(4).unwrap();
        assert_eq!(l.tx.slot_count, 2);
        assert_eq!((l.tx.header, l.tx.slots), (3840, 4096));
        assert_eq!((l.rx.header, l.rx.slots), (2 * 4096 + 3840, 3 * 4096));
        assert_eq!(l.rx.slots + l.rx.slots_len(), l.len());
        // 11 pages: 9 for slots, 8 used (4 per lane), one left over.
        let l = NetLayout::new(11).unwrap();
        assert_eq!(l.tx.slot_count, 8);
        assert_eq!(l.rx.slots, 6 * 4096);
        assert_eq!(l.rx.slots + l.rx.slots_len(), 10 * 4096);
        let l = NetLayout::new(66).unwrap();
        assert_eq!(l.tx.slot_count, 64);
        assert_eq!(l.rx.slots + l.rx.slots_len(), l.len());
        assert!(NetLayout::new(3).is_err());
        assert!(NetLayout::new(0).is_err());
        assert!(NetLayout::new(1017).is_err());
        let l = NetLayout::new(1016).unwrap();
        assert_eq!(l.tx.slot_count, 512);
        assert_eq!(
            lane_index_offsets(&l.tx),
            [3840, 3840 + 64, 3840 + 128, 3840 + 192]
        );
    }

    /// A 100-byte frame in one slot, checksum at 34+16.
    const ONE_SLOT: [u8; 16] = [100, 0, 0b010, 0, 34, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn slot_header_parses_and_emits_literal_bytes() {
        let h = SlotHeader::new_checked(&ONE_SLOT[..]).unwrap();
        let r = SlotRepr::parse(&h).unwrap();
        assert_eq!(
            r,
            SlotRepr {
                len: 100,
                flags: flags::CSUM_BLANK,
                csum_start: 34,
                csum_offset: 16,
                gso_type: 0,
                gso_size: 0,
                gso_flags: 0,
            }
        );
        let mut out = [0xffu8; 16];
        r.emit(&mut SlotHeader::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(out, ONE_SLOT);
        let mut bad = ONE_SLOT;
        bad[3] = 0x80;
        assert!(matches!(
            SlotRepr::parse(&SlotHeader::new_unchecked(&bad[..])),
            Err(Error::UnknownFlags { .. })
        ));
        bad = ONE_SLOT;
        bad[0] = 0;
        assert!(SlotRepr::parse(&SlotHeader::new_unchecked(&bad[..])).is_err());
        bad[0..2].copy_from_slice(&2033u16.to_le_bytes());
        assert!(SlotRepr::parse(&SlotHeader::new_unchecked(&bad[..])).is_err());
        assert!(SlotHeader::new_checked(&ONE_SLOT[..15]).is_err());
    }

    fn header(r: SlotRepr) -> [u8; 16] {
        let mut b = [0u8; 16];
        r.emit(&mut SlotHeader::new_unchecked(&mut b[..])).unwrap();
        b
    }

    fn slot(len: u16, flags: u16) -> [u8; 16] {
        header(SlotRepr {
            len,
            flags,
            csum_start: 0,
            csum_offset: 0,
            gso_type: 0,
            gso_size: 0,
            gso_flags: 0,
        })
    }

    fn feed(a: &mut FrameAssembler, h: [u8; 16]) -> Result<SlotAction, Error> {
        a.push(&SlotHeader::new_unchecked(&h[..]))
    }

    #[test]
    fn assembles_a_jumbo_frame() {
        let mut a = FrameAssembler::new(9000, features::JUMBO).unwrap();
        assert_eq!(a.max_frame(), 9018);
        let mut slots = Vec::new();
        let n = split_frame(9018, None, false, None, |at, r| slots.push((at, r))).unwrap();
        assert_eq!(n, 5);
        for (i, (at, r)) in slots.iter().enumerate() {
            let action = feed(&mut a, header(*r)).unwrap();
            let done = (i == 4).then_some(FrameInfo {
                len: 9018,
                slots: 5,
                csum: None,
                data_validated: false,
                gso: None,
            });
            assert_eq!(
                action,
                SlotAction::Append {
                    at: *at,
                    len: r.len.into(),
                    done
                }
            );
        }
        assert!(!a.in_frame());
    }

    #[test]
    fn bulk_mode_keeps_slot_rules_but_not_ethernet_rules() {
        let mut a = FrameAssembler::bulk(3000).unwrap();
        // A 1-byte payload is no runt, and a checksum may start at 0.
        let csum0 = header(SlotRepr {
            len: 4,
            flags: flags::CSUM_BLANK,
            csum_start: 0,
            csum_offset: 2,
            gso_type: 0,
            gso_size: 0,
            gso_flags: 0,
        });
        assert!(matches!(
            feed(&mut a, slot(1, 0)),
            Ok(SlotAction::Append { done: Some(_), .. })
        ));
        assert!(matches!(
            feed(&mut a, csum0),
            Ok(SlotAction::Append { done: Some(_), .. })
        ));
        // The length limit still holds.
        assert!(feed(&mut a, slot(2032, flags::MORE)).is_ok());
        assert_eq!(
            feed(&mut a, slot(969, 0)),
            Err(Error::TooMany {
                field: "net frame len",
                count: 3001,
                max: 3000
            })
        );
        assert!(FrameAssembler::bulk(0).is_err());
    }

    #[test]
    fn refuses_oversized_and_runt_frames_and_recovers() {
        let mut a = FrameAssembler::new(1500, 0).unwrap();
        // 1519 bytes: one byte past MTU + 18.
        assert!(feed(&mut a, slot(1500, flags::MORE)).is_ok());
        assert_eq!(
            feed(&mut a, slot(19, flags::MORE)),
            Err(Error::TooMany {
                field: "net frame len",
                count: 1519,
                max: 1518
            })
        );
        // The rest of that chain is skipped, then frames flow again.
        assert_eq!(feed(&mut a, slot(10, flags::MORE)), Ok(SlotAction::Skip));
        assert_eq!(feed(&mut a, slot(10, 0)), Ok(SlotAction::Skip));
        assert!(matches!(
            feed(&mut a, slot(60, 0)),
            Ok(SlotAction::Append {
                at: 0,
                len: 60,
                done: Some(FrameInfo { len: 60, .. })
            })
        ));
        assert!(matches!(
            feed(&mut a, slot(13, 0)),
            Err(Error::BadField {
                field: "net frame len (runt)",
                ..
            })
        ));
        assert!(!a.in_frame(), "an error on a last slot ends the frame");
    }

    #[test]
    fn endless_more_chains_are_cut() {
        let mut a = FrameAssembler::new(1500, 0).unwrap();
        // Small slots: the frame stays under the MTU but uses more slots
        // than any frame needs.
        assert!(feed(&mut a, slot(20, flags::MORE)).is_ok());
        assert_eq!(
            feed(&mut a, slot(20, flags::MORE)),
            Err(Error::TooMany {
                field: "net frame slots",
                count: 2,
                max: 1
            })
        );
        for _ in 0..100 {
            assert_eq!(feed(&mut a, slot(20, flags::MORE)), Ok(SlotAction::Skip));
        }
        assert_eq!(feed(&mut a, slot(20, 0)), Ok(SlotAction::Skip));
        assert!(!a.in_frame());
    }

    #[test]
    fn checksum_requests_are_checked() {
        let csum = |start, offset, feats| {
            let mut a = FrameAssembler::new(1500, feats).unwrap();
            feed(
                &mut a,
                header(SlotRepr {
                    len: 100,
                    flags: flags::CSUM_BLANK,
                    csum_start: start,
                    csum_offset: offset,
                    gso_type: 0,
                    gso_size: 0,
                    gso_flags: 0,
                }),
            )
        };
        assert!(matches!(
            csum(34, 16, features::CSUM_BLANK),
            Ok(SlotAction::Append {
                done: Some(FrameInfo {
                    csum: Some(Csum {
                        start: 34,
                        offset: 16
                    }),
                    ..
                }),
                ..
            })
        ));
        assert!(matches!(csum(34, 16, 0), Err(Error::NotOffered { .. })));
        assert!(
            csum(34, 64, features::CSUM_BLANK).is_ok(),
            "ends at the frame end"
        );
        assert!(
            csum(34, 65, features::CSUM_BLANK).is_err(),
            "past the frame"
        );
        assert!(csum(98, 0, features::CSUM_BLANK).is_ok());
        assert!(csum(99, 0, features::CSUM_BLANK).is_err());
        assert!(
            csum(2, 0, features::CSUM_BLANK).is_err(),
            "inside the Ethernet header"
        );
        assert!(csum(u16::MAX, u16::MAX, features::CSUM_BLANK).is_err());

        let mut a = FrameAssembler::new(1500, 0).unwrap();
        assert!(matches!(
            feed(&mut a, slot(100, flags::DATA_VALIDATED)),
            Err(Error::NotOffered { .. })
        ));
    }

    /// First slot of a TCPv4 GSO frame: 2032 bytes, MORE | CSUM_BLANK,
    /// checksum at 34 + 16, MSS 1448 (0x05a8), TCPV4, ECN.
    const GSO_FIRST: [u8; 16] = [
        0xf0, 0x07, 0b011, 0, 34, 0, 16, 0, 0xa8, 0x05, 1, 1, 0, 0, 0, 0,
    ];

    #[test]
    fn gso_slot_header_parses_and_emits_literal_bytes() {
        let h = SlotHeader::new_checked(&GSO_FIRST[..]).unwrap();
        assert_eq!((h.gso_size(), h.gso_type(), h.gso_flags()), (1448, 1, 1));
        let r = SlotRepr::parse(&h).unwrap();
        assert_eq!(
            r,
            SlotRepr {
                len: 2032,
                flags: flags::MORE | flags::CSUM_BLANK,
                csum_start: 34,
                csum_offset: 16,
                gso_type: gso::TCPV4,
                gso_size: 1448,
                gso_flags: gso::FLAG_ECN,
            }
        );
        let mut out = [0xffu8; 16];
        r.emit(&mut SlotHeader::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(out, GSO_FIRST);
        let with = |at: usize, v: u8| {
            let mut b = GSO_FIRST;
            b[at] = v;
            SlotRepr::parse(&SlotHeader::new_unchecked(&b[..]))
        };
        assert_eq!(
            with(10, 4),
            Err(Error::BadField {
                field: "net slot gso_type",
                value: 4
            })
        );
        assert!(with(10, 3).is_ok());
        assert_eq!(
            with(11, 0b10),
            Err(Error::UnknownFlags {
                field: "net slot gso_flags",
                bits: 0b10
            })
        );
        // Reserved bytes 12..16 stay ignored on input, zero on output.
        assert!(with(12, 0xff).is_ok());
    }

    #[test]
    fn gso_requests_are_checked() {
        assert_eq!(Gso::from_fields(0, 0, 0), Ok(None));
        assert_eq!(
            Gso::from_fields(gso::TCPV6, 1, 0),
            Ok(Some(Gso {
                kind: gso::TCPV6,
                size: 1,
                flags: 0
            }))
        );
        assert!(Gso::from_fields(0, 1448, 0).is_err(), "size without a type");
        assert!(Gso::from_fields(0, 0, 1).is_err(), "flags without a type");
        assert!(Gso::from_fields(gso::TCPV4, 0, 0).is_err(), "size 0");
        assert!(Gso::from_fields(gso::UDP_L4, 1400, gso::FLAG_ECN).is_err());
        assert!(Gso::from_fields(gso::TCPV4, u16::MAX, gso::FLAG_ECN).is_ok());
        assert!(Gso::from_fields(4, 1448, 0).is_err());
        assert!(Gso::from_fields(gso::TCPV4, 1448, 2).is_err());
        assert!(negotiate(features::ALL, features::GSO).is_err());
        assert_eq!(
            negotiate(features::ALL, features::GSO | features::CSUM_BLANK),
            Ok(features::GSO | features::CSUM_BLANK)
        );
    }

    fn gso_slot(len: u16, fl: u16, kind: u8, size: u16) -> [u8; 16] {
        header(SlotRepr {
            len,
            flags: fl,
            csum_start: 34,
            csum_offset: 16,
            gso_type: kind,
            gso_size: size,
            gso_flags: 0,
        })
    }

    #[test]
    fn assembles_a_max_gso_frame_over_a_standard_mtu() {
        let feats = features::GSO | features::CSUM_BLANK;
        let mut a = FrameAssembler::new(1500, feats).unwrap();
        assert_eq!((a.max_frame(), a.mtu_frame()), (GSO_MAX_FRAME, 1518));
        assert_eq!(GSO_MAX_FRAME, 65553);
        assert_eq!(GSO_MAX_SLOTS, 33);
        let g = Gso {
            kind: gso::TCPV4,
            size: 1448,
            flags: gso::FLAG_ECN,
        };
        let csum = Some(Csum {
            start: 34,
            offset: 16,
        });
        let mut last = None;
        let n = split_frame(GSO_MAX_FRAME, csum, false, Some(g), |at, r| {
            if at > 0 {
                // Later slots carry no offload fields.
                assert_eq!((r.gso_type, r.gso_size, r.gso_flags), (0, 0, 0));
            }
            last = Some(feed(&mut a, header(r)).unwrap());
        })
        .unwrap();
        assert_eq!(n, 33);
        assert_eq!(
            last,
            Some(SlotAction::Append {
                at: 32 * SLOT_DATA_MAX,
                len: GSO_MAX_FRAME - 32 * SLOT_DATA_MAX,
                done: Some(FrameInfo {
                    len: GSO_MAX_FRAME,
                    slots: 33,
                    csum,
                    data_validated: false,
                    gso: Some(g),
                })
            })
        );
        // One byte more: refused, the chain skipped, frames flow again.
        for _ in 0..32 {
            assert!(feed(
                &mut a,
                gso_slot(2032, flags::MORE | flags::CSUM_BLANK, 1, 1448)
            )
            .is_ok());
        }
        assert!(matches!(
            feed(&mut a, slot(530, 0)),
            Err(Error::TooMany {
                field: "net frame len",
                count: 65554,
                max: 65553
            })
        ));
        // A plain frame keeps the MTU limit and its one-slot chain.
        assert!(feed(&mut a, slot(1500, flags::MORE)).is_ok());
        assert!(matches!(
            feed(&mut a, slot(19, 0)),
            Err(Error::TooMany {
                field: "net frame len",
                ..
            })
        ));
        assert!(feed(&mut a, slot(20, flags::MORE)).is_ok());
        assert!(matches!(
            feed(&mut a, slot(20, 0)),
            Err(Error::TooMany {
                field: "net frame slots",
                ..
            })
        ));
        // GSO frames of 1-byte slots are cut at 33 slots.
        for _ in 0..33 {
            let h = gso_slot(1, flags::MORE | flags::CSUM_BLANK, 1, 1448);
            assert!(feed(&mut a, h).is_ok());
        }
        assert!(matches!(
            feed(&mut a, slot(1, 0)),
            Err(Error::TooMany {
                field: "net frame slots",
                count: 34,
                max: 33
            })
        ));
    }

    #[test]
    fn gso_frames_need_the_feature_a_checksum_and_a_size() {
        let cb = flags::CSUM_BLANK;
        let one = |feats: u32, h: [u8; 16]| {
            let mut a = FrameAssembler::new(1500, feats).unwrap();
            let r = feed(&mut a, h);
            (r, a.in_frame())
        };
        let both = features::GSO | features::CSUM_BLANK;
        // Without GSO negotiated: refused at the first slot, chain skipped.
        let (r, skipping) = one(
            features::CSUM_BLANK,
            gso_slot(2032, cb | flags::MORE, 1, 1448),
        );
        assert!(matches!(r, Err(Error::NotOffered { .. })));
        assert!(skipping);
        assert!(matches!(
            one(both, gso_slot(100, 0, 1, 1448)).0,
            Err(Error::BadField {
                field: "net gso_type without CSUM_BLANK",
                ..
            })
        ));
        assert!(matches!(
            one(both, gso_slot(100, cb, 1, 0)).0,
            Err(Error::BadField {
                field: "net gso_size",
                ..
            })
        ));
        assert!(matches!(
            one(both, gso_slot(100, cb, 0, 1448)).0,
            Err(Error::BadField { .. })
        ));
        assert!(matches!(
            one(both, gso_slot(100, cb, gso::UDP_L4, 1)).0,
            Ok(SlotAction::Append {
                done: Some(FrameInfo {
                    gso: Some(Gso {
                        kind: gso::UDP_L4,
                        size: 1,
                        flags: 0
                    }),
                    ..
                }),
                ..
            })
        ));
    }

    #[test]
    fn gso_is_offered_on_shares_that_hold_a_max_frame() {
        assert_eq!(GSO_MIN_PAGES, 66);
        assert!(!NetLayout::new(65).unwrap().holds_gso());
        assert!(NetLayout::new(GSO_MIN_PAGES).unwrap().holds_gso());
        assert!(NetLayout::new(1016).unwrap().holds_gso());
    }

    #[test]
    fn assembler_refuses_bad_mtus() {
        assert!(FrameAssembler::new(67, 0).is_err());
        assert!(FrameAssembler::new(1501, 0).is_err());
        assert!(FrameAssembler::new(1501, features::JUMBO).is_ok());
        assert!(FrameAssembler::new(9001, features::JUMBO).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_slot_headers_never_panic_or_overflow(
            mtu in MTU_MIN..=MTU_MAX,
            feats in 0u32..16,
            headers in proptest::collection::vec(any::<[u8; 16]>(), 0..64),
        ) {
            let Ok(mut a) = FrameAssembler::new(mtu, feats) else { return Ok(()) };
            for h in headers {
                match a.push(&SlotHeader::new_unchecked(&h[..])) {
                    Ok(SlotAction::Append { at, len, done }) => {
                        prop_assert!(at + len <= a.max_frame());
                        if let Some(f) = done {
                            prop_assert!(f.len >= FRAME_MIN && f.len <= a.max_frame());
                            if let Some(c) = f.csum {
                                prop_assert!(usize::from(c.start) + usize::from(c.offset) + 2 <= f.len);
                            }
                        }
                    }
                    Ok(SlotAction::Skip) | Err(_) => {}
                }
            }
        }

        /// The fast path of `push` decides as the general rules do, for
        /// headers near the fast path's edges (lengths around the runt,
        /// MTU and slot limits, checksum fields in and out of range, any
        /// flag, sometimes a segmentation offload field) and in sequences
        /// (a frame in progress or being skipped turns the fast path off).
        #[test]
        fn the_fast_path_agrees_with_the_general_rules(
            mtu in prop_oneof![Just(68u16), Just(1500u16), Just(9000u16), MTU_MIN..=MTU_MAX],
            feats in 0u32..16,
            bulk in any::<bool>(),
            slots in proptest::collection::vec(
                (
                    prop_oneof![0u16..20, 60u16..70, 1510u16..1530, 2025u16..2040, any::<u16>()],
                    0u16..16,
                    0u16..40,
                    0u16..40,
                    prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
                ),
                0..24,
            ),
        ) {
            let a = if bulk {
                FrameAssembler::bulk(usize::from(mtu) + FRAME_OVERHEAD)
            } else {
                FrameAssembler::new(mtu, feats)
            };
            let Ok(mut fast) = a else { return Ok(()) };
            let mut general = fast.clone();
            for (len, fl, start, offset, gso) in slots {
                let mut h = [0u8; 16];
                h[0..2].copy_from_slice(&len.to_le_bytes());
                h[2..4].copy_from_slice(&fl.to_le_bytes());
                h[4..6].copy_from_slice(&start.to_le_bytes());
                h[6..8].copy_from_slice(&offset.to_le_bytes());
                h[8..12].copy_from_slice(&gso.to_le_bytes());
                let view = SlotHeader::new_unchecked(&h[..]);
                let mut words = fast.clone();
                let w = [
                    u64::from_le_bytes(h[..8].try_into().unwrap()),
                    u64::from_le_bytes(h[8..].try_into().unwrap()),
                ];
                let verdict = general.push_general(&view);
                prop_assert_eq!(words.push_words(w), verdict);
                prop_assert_eq!(fast.push(&view), verdict);
                prop_assert_eq!(fast.in_frame(), general.in_frame());
                prop_assert_eq!(words.in_frame(), general.in_frame());
            }
        }

        #[test]
        fn split_then_assemble_round_trips(
            len in FRAME_MIN..=9018usize, validated in any::<bool>(), csum in any::<bool>(),
        ) {
            let mut a = FrameAssembler::new(9000, features::ALL).unwrap();
            let c = (csum && len >= 16).then_some(Csum { start: 14, offset: 0 });
            let mut covered = 0;
            let mut done = None;
            split_frame(len, c, validated, None, |at, r| {
                match a.push(&SlotHeader::new_unchecked(&header(r)[..])) {
                    Ok(SlotAction::Append { at: got, len, done: d }) => {
                        assert_eq!(got, at);
                        covered += len;
                        done = d;
                    }
                    other => panic!("{other:?}"),
                }
            }).unwrap();
            prop_assert_eq!(covered, len);
            let f = done.unwrap();
            prop_assert_eq!(f.len, len);
            prop_assert_eq!(f.csum, c);
            prop_assert_eq!(f.data_validated, validated);
            prop_assert_eq!(f.slots as usize, len.div_ceil(SLOT_DATA_MAX));
        }

        #[test]
        fn gso_frames_round_trip(
            // A GSO frame asks for a checksum at 14 + 0, whose 2 bytes must
            // lie in the frame (a 14-byte one is refused, rightly).
            len in FRAME_MIN + 2..=GSO_MAX_FRAME, kind in 1u8..=3, size in 1u16.., ecn in any::<bool>(),
            mtu in MTU_MIN..=MTU_STANDARD_MAX,
        ) {
            let mut a = FrameAssembler::new(mtu, features::ALL).unwrap();
            let g = Gso { kind, size, flags: u8::from(ecn && kind != gso::UDP_L4) };
            let c = Some(Csum { start: 14, offset: 0 });
            let mut done = None;
            split_frame(len, c, false, Some(g), |_, r| {
                match a.push(&SlotHeader::new_unchecked(&header(r)[..])) {
                    Ok(SlotAction::Append { done: d, .. }) => done = d,
                    other => panic!("{other:?}"),
                }
            }).unwrap();
            let f = done.unwrap();
            prop_assert_eq!((f.len, f.gso, f.csum), (len, Some(g), c));
            prop_assert_eq!(f.slots as usize, len.div_ceil(SLOT_DATA_MAX));
            let refused = split_frame(len, None, false, Some(g), |_, _| {}).is_err();
            prop_assert!(refused, "GSO without a checksum request");
        }

        #[test]
        fn layouts_never_overlap_or_overflow(numpages in 0u32..2000) {
            if let Ok(l) = NetLayout::new(numpages) {
                prop_assert!(l.tx.slot_count.is_power_of_two());
                prop_assert_eq!(l.tx.slot_count, l.rx.slot_count);
                prop_assert!(l.tx.header >= CONTROL_LEN);
                for lane in [l.tx, l.rx] {
                    prop_assert_eq!(lane.header % 64, 0);
                    prop_assert_eq!(lane.slots % PAGE_SIZE, 0, "slots are page-aligned");
                    prop_assert_eq!(lane.slots, lane.header + lane_header::LEN);
                }
                prop_assert!(l.tx.slots + l.tx.slots_len() <= l.rx.header);
                prop_assert!(l.rx.header + l.rx.window_len() <= l.len());
                // At least half the pages are slots.
                prop_assert!(2 * (l.tx.slots_len() + l.rx.slots_len()) >= l.len() - 2 * PAGE_SIZE);
            }
        }
    }
}
