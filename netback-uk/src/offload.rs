//! What the switch does to a frame for one destination port, given the
//! offloads that port negotiated (`docs/protocol.md`, "Feature
//! negotiation"): pass checksum offload and segmentation offload through to
//! a port that accepted them, finish the work in software for one that did
//! not, and drop what the destination cannot take.
//!
//! The source frame is the switch's private copy (never shared memory) and
//! everything in it, offload fields included, comes from a possibly hostile
//! member: every length and offset is checked against the frame, work is
//! bounded by the frame's size, and a frame that does not hold what its
//! offload claims is dropped with a [`DropCause`] the switch counts.
//!
//! Headers are read and written through smoltcp's `wire` views, checksums
//! with its `wire::checksum`. One thing is read by hand: the inner
//! EtherType of an 802.1Q tag (2 bytes after the tag; smoltcp has no VLAN
//! view).

// Here rather than at the crate root, which this module leaves alone.

use alloc::vec::Vec;

use share_hal::frames::FrameMeta;
use share_hal::wire::net::{
    features, flags, gso, gso_max_segs, Gso, FRAME_MIN, GSO_MAX_FRAME, GSO_MAX_SEGS,
};
use smoltcp::wire::{
    checksum, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv6Packet,
    TcpPacket, TcpSeqNumber, UdpPacket, IPV6_HEADER_LEN, UDP_HEADER_LEN,
};

/// What happened to a frame for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// All of it went: one frame, or the segments of a segmented one.
    Delivered {
        frames: u32,
    },
    /// Software segmentation stopped when the destination's lane filled:
    /// `frames` segments went, the `dropped` ones after them did not (to
    /// TCP, a loss like any other).
    Partial {
        frames: u32,
        dropped: u32,
    },
    Dropped(DropCause),
}

/// Why a frame was not delivered to a destination; per-port counters
/// index by [`DropCause::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// Longer than the destination takes: a plain frame over its MTU + 18
    /// (jumbo source, standard destination), a frame over
    /// [`GSO_MAX_FRAME`], or a UDP segment size the destination's MTU
    /// cannot carry.
    TooBig,
    /// Offload fields that do not hold for the frame: checksum offsets past
    /// its end, unknown flags, a GSO request without a partial checksum or
    /// with size 0, or headers that are not what the GSO type says (wrong
    /// protocol, lying IP/UDP lengths, IP fragments, short TCP header,
    /// checksum request not at the L4 header).
    BadOffload,
    /// A GSO frame over IPv6 with extension headers: not segmented (no
    /// Linux sender produces them for TSO/USO traffic), dropped and counted
    /// apart so a real need shows up.
    Ipv6Extensions,
    /// Shorter than an Ethernet header.
    Runt,
    /// The destination's lane had no room for the first frame.
    LaneFull,
    /// A GSO frame whose `gso_size` would make more segments than its
    /// type allows ([`GSO_MAX_SEGS`] for TCP, 64 for UDP;
    /// docs/protocol.md): dropped before any segment is made, for every
    /// destination.
    TooManySegments,
}

impl DropCause {
    pub const ALL: [DropCause; 6] = [
        DropCause::TooBig,
        DropCause::BadOffload,
        DropCause::Ipv6Extensions,
        DropCause::Runt,
        DropCause::LaneFull,
        DropCause::TooManySegments,
    ];

    /// Position in [`DropCause::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            DropCause::TooBig => "too big",
            DropCause::BadOffload => "bad offload",
            DropCause::Ipv6Extensions => "ipv6 extension headers",
            DropCause::Runt => "runt",
            DropCause::LaneFull => "lane full",
            DropCause::TooManySegments => "too many segments",
        }
    }
}

/// Reused across calls: segments and completed checksums are built here,
/// so the steady state allocates nothing (the buffer grows to the largest
/// destination frame once).
#[derive(Debug, Default)]
pub struct Scratch {
    buf: Vec<u8>,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch { buf: Vec::new() }
    }

    fn take(&mut self, len: usize) -> &mut [u8] {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        &mut self.buf[..len]
    }
}

/// Emits `frame` (with its offload info `meta`) for a destination that
/// accepted `dst_features` and takes plain frames of up to `dst_max_frame`
/// bytes (its MTU + 18): as it is, with its checksum completed, or cut into
/// segments. `out` gets each frame to put on the destination's lane and
/// returns `false` when the lane is full (the rest is then dropped).
///
/// Frames emitted are at most `dst_max_frame` bytes, or [`GSO_MAX_FRAME`]
/// for a GSO frame passed through to a port that accepted `GSO`; their
/// meta carries only what the destination accepted.
pub fn deliver(
    frame: &[u8],
    meta: &FrameMeta,
    dst_features: u32,
    dst_max_frame: usize,
    scratch: &mut Scratch,
    out: &mut dyn FnMut(&[u8], FrameMeta) -> bool,
) -> Verdict {
    match deliver_checked(frame, meta, dst_features, dst_max_frame, scratch, out) {
        Ok(v) => v,
        Err(cause) => Verdict::Dropped(cause),
    }
}

/// A frame's offload fields, checked against its length, and what of them
/// a destination with `dst_features` keeps.
struct Offloads {
    /// `CSUM_BLANK`: (csum_start, csum_offset), within the frame.
    csum: Option<(usize, usize)>,
    gso: Option<Gso>,
    /// The meta every frame out starts from (`DATA_VALIDATED` if both
    /// sides have it).
    base: FrameMeta,
    /// The destination takes partial checksums.
    dst_csum: bool,
}

/// What [`deliver`] and [`pass_through`] check first, the same for both.
#[inline]
fn offloads(meta: &FrameMeta, len: usize, dst_features: u32) -> Result<Offloads, DropCause> {
    if meta.flags & !(flags::CSUM_BLANK | flags::DATA_VALIDATED) != 0 {
        return Err(DropCause::BadOffload);
    }
    let csum = if meta.flags & flags::CSUM_BLANK != 0 {
        let (start, offset) = (usize::from(meta.csum_start), usize::from(meta.csum_offset));
        if start + offset + 2 > len {
            return Err(DropCause::BadOffload);
        }
        Some((start, offset))
    } else {
        None
    };
    // An ordinary frame (all three fields 0) needs no parse.
    let gso = if (meta.gso_type, meta.gso_size, meta.gso_flags) == (0, 0, 0) {
        None
    } else {
        Gso::from_fields(meta.gso_type, meta.gso_size, meta.gso_flags)
            .map_err(|_| DropCause::BadOffload)?
    };
    // What the source says survives only where the destination takes it.
    let mut base = FrameMeta::default();
    if meta.flags & flags::DATA_VALIDATED != 0 && dst_features & features::DATA_VALIDATED != 0 {
        base.flags |= flags::DATA_VALIDATED;
    }
    Ok(Offloads {
        csum,
        gso,
        base,
        dst_csum: dst_features & features::CSUM_BLANK != 0,
    })
}

fn deliver_checked(
    frame: &[u8],
    meta: &FrameMeta,
    dst_features: u32,
    dst_max_frame: usize,
    scratch: &mut Scratch,
    out: &mut dyn FnMut(&[u8], FrameMeta) -> bool,
) -> Result<Verdict, DropCause> {
    if frame.len() < FRAME_MIN {
        return Err(DropCause::Runt);
    }
    let Offloads {
        csum,
        gso,
        base,
        dst_csum,
    } = offloads(meta, frame.len(), dst_features)?;
    match gso {
        None => {
            if frame.len() > dst_max_frame {
                return Err(DropCause::TooBig);
            }
            match csum {
                None => Ok(send(out, frame, base)),
                Some((start, offset)) if dst_csum => {
                    let m = FrameMeta {
                        flags: base.flags | flags::CSUM_BLANK,
                        csum_start: start as u16,
                        csum_offset: offset as u16,
                        ..base
                    };
                    Ok(send(out, frame, m))
                }
                Some((start, offset)) => {
                    let buf = scratch.take(frame.len());
                    buf.copy_from_slice(frame);
                    complete_checksum(buf, start, offset);
                    Ok(send(out, buf, base))
                }
            }
        }
        Some(g) => {
            if frame.len() > GSO_MAX_FRAME {
                return Err(DropCause::TooBig);
            }
            let csum = csum.ok_or(DropCause::BadOffload)?;
            let h = parse_gso(frame, csum, g)?;
            // The sender's segment count, checked before anything is made:
            // the work a frame causes is bounded whatever its destination.
            if gso_segments(frame.len() - h.hdr_end, g.size) > gso_max_segs(g.kind) {
                return Err(DropCause::TooManySegments);
            }
            // Payload bytes per segment the destination's MTU allows.
            let room = dst_max_frame.saturating_sub(h.hdr_end);
            let size = usize::from(g.size);
            let seg_size = if size <= room {
                size
            } else if h.tcp && room > 0 {
                // TCP does not care where segments are cut.
                room
            } else {
                // A UDP segment is a datagram: its size is the sender's.
                return Err(DropCause::TooBig);
            };
            // Lowered for a destination with a tiny MTU, the count could
            // grow past the bound again: too big for that destination.
            if gso_segments(frame.len() - h.hdr_end, seg_size as u16) > GSO_MAX_SEGS {
                return Err(DropCause::TooBig);
            }
            if dst_features & features::GSO != 0 && dst_csum {
                let m = FrameMeta {
                    flags: base.flags | flags::CSUM_BLANK,
                    csum_start: meta.csum_start,
                    csum_offset: meta.csum_offset,
                    gso_type: g.kind,
                    gso_size: seg_size as u16,
                    gso_flags: g.flags,
                };
                return Ok(send(out, frame, m));
            }
            Ok(segment(frame, &h, seg_size, base, dst_csum, scratch, out))
        }
    }
}

/// Bytes of a frame [`pass_through`] may read: an Ethernet header with an
/// 802.1Q tag (18), an IPv4 header with options (60; IPv6's is 40), a TCP
/// header with options (60; UDP's is 8).
pub const OFFLOAD_HEAD: usize = 18 + 60 + 60;

/// What [`pass_through`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// [`deliver`] would send the frame unchanged with this meta.
    As(FrameMeta),
    /// [`deliver`] would change the frame for this destination (complete
    /// its checksum, cut it into segments): it needs all of its bytes.
    NeedsWhole,
}

/// [`deliver`]'s decision for a frame of `len` bytes of which only the
/// first are at hand, in `head` (all of them, or at least
/// [`OFFLOAD_HEAD`]): whether it goes unchanged, and with what meta, or
/// is dropped, and why. Every byte it reads is in `head`, so a switch can
/// decide on its private copy of a frame's first bytes and copy the rest
/// once, straight to the destination. Agrees with [`deliver`] (tested,
/// and fuzzed).
pub fn pass_through(
    head: &[u8],
    len: usize,
    meta: &FrameMeta,
    dst_features: u32,
    dst_max_frame: usize,
) -> Result<Pass, DropCause> {
    if len < FRAME_MIN {
        return Err(DropCause::Runt);
    }
    if head.len() < len.min(OFFLOAD_HEAD) || head.len() > len {
        // Not the frame's first bytes as promised: decide on all of it.
        return Ok(Pass::NeedsWhole);
    }
    let Offloads {
        csum,
        gso,
        base,
        dst_csum,
    } = offloads(meta, len, dst_features)?;
    let Some(g) = gso else {
        if len > dst_max_frame {
            return Err(DropCause::TooBig);
        }
        return Ok(match csum {
            None => Pass::As(base),
            Some((start, offset)) if dst_csum => Pass::As(FrameMeta {
                flags: base.flags | flags::CSUM_BLANK,
                csum_start: start as u16,
                csum_offset: offset as u16,
                ..base
            }),
            Some(_) => Pass::NeedsWhole,
        });
    };
    if len > GSO_MAX_FRAME {
        return Err(DropCause::TooBig);
    }
    let csum = csum.ok_or(DropCause::BadOffload)?;
    let h = parse_gso_at(head, len, csum, g)?;
    if gso_segments(len - h.hdr_end, g.size) > gso_max_segs(g.kind) {
        return Err(DropCause::TooManySegments);
    }
    let room = dst_max_frame.saturating_sub(h.hdr_end);
    let size = usize::from(g.size);
    let seg_size = if size <= room {
        size
    } else if h.tcp && room > 0 {
        room
    } else {
        return Err(DropCause::TooBig);
    };
    if gso_segments(len - h.hdr_end, seg_size as u16) > GSO_MAX_SEGS {
        return Err(DropCause::TooBig);
    }
    if dst_features & features::GSO != 0 && dst_csum {
        return Ok(Pass::As(FrameMeta {
            flags: base.flags | flags::CSUM_BLANK,
            csum_start: meta.csum_start,
            csum_offset: meta.csum_offset,
            gso_type: g.kind,
            gso_size: seg_size as u16,
            gso_flags: g.flags,
        }));
    }
    Ok(Pass::NeedsWhole)
}

/// [`parse_gso`]'s checks on a frame of `len` bytes whose first bytes are
/// `head` (at least [`OFFLOAD_HEAD`] of them, or all): the lengths the
/// headers claim are checked against `len`, every header byte is read
/// from `head`. By hand rather than through smoltcp's checked views,
/// which check against the slice they are given. Agrees with
/// [`parse_gso`] on whole frames (tested).
fn parse_gso_at(
    head: &[u8],
    len: usize,
    csum: (usize, usize),
    g: Gso,
) -> Result<GsoHeaders, DropCause> {
    let bad = DropCause::BadOffload;
    let byte = |i: usize| head.get(i).copied().ok_or(bad);
    let be16 = |i: usize| Ok::<u16, DropCause>(u16::from_be_bytes([byte(i)?, byte(i + 1)?]));
    if len < 14 {
        return Err(bad);
    }
    let (ethertype, l3) = match be16(12)? {
        ETHERTYPE_VLAN => {
            if len < 18 {
                return Err(bad);
            }
            (be16(16)?, 18)
        }
        t => (t, 14),
    };
    let rest = len - l3;
    let (ipv4, l4, proto) = match ethertype {
        0x0800 => {
            if rest < 20 {
                return Err(bad);
            }
            let vihl = byte(l3)?;
            let hl = usize::from(vihl & 0x0f) * 4;
            let frag = be16(l3 + 6)?;
            if vihl >> 4 != 4
                || hl < 20
                || rest < hl
                || usize::from(be16(l3 + 2)?) != rest
                || frag & 0x2000 != 0
                || frag & 0x1fff != 0
            {
                return Err(bad);
            }
            (true, l3 + hl, byte(l3 + 9)?)
        }
        0x86dd => {
            if rest < IPV6_HEADER_LEN
                || byte(l3)? >> 4 != 6
                || IPV6_HEADER_LEN + usize::from(be16(l3 + 4)?) != rest
            {
                return Err(bad);
            }
            let next = byte(l3 + 6)?;
            // Hop-by-hop, routing, fragment, destination options, AH.
            if matches!(next, 0 | 43 | 44 | 60 | 51) {
                return Err(DropCause::Ipv6Extensions);
            }
            (false, l3 + IPV6_HEADER_LEN, next)
        }
        _ => return Err(bad),
    };
    let tcp = match (g.kind, ipv4, proto) {
        (gso::TCPV4, true, 6) | (gso::TCPV6, false, 6) => true,
        (gso::UDP_L4, _, 17) => false,
        _ => return Err(bad),
    };
    let seg = len - l4;
    let (hdr_end, csum_offset) = if tcp {
        let hl = usize::from(byte(l4 + 12)? >> 4) * 4;
        if seg < 20 || hl < 20 || seg < hl {
            return Err(bad);
        }
        (l4 + hl, TCP_CSUM_OFFSET)
    } else {
        if seg < UDP_HEADER_LEN || usize::from(be16(l4 + 4)?) != seg {
            return Err(bad);
        }
        (l4 + UDP_HEADER_LEN, UDP_CSUM_OFFSET)
    };
    if csum != (l4, csum_offset) {
        return Err(bad);
    }
    Ok(GsoHeaders {
        l3,
        ipv4,
        l4,
        tcp,
        hdr_end,
    })
}

/// Segments a GSO payload of `payload` bytes makes at `size` bytes each
/// (at least one: headers alone are one segment).
pub fn gso_segments(payload: usize, size: u16) -> usize {
    payload.div_ceil(usize::from(size).max(1)).max(1)
}

fn send(out: &mut dyn FnMut(&[u8], FrameMeta) -> bool, frame: &[u8], meta: FrameMeta) -> Verdict {
    if out(frame, meta) {
        Verdict::Delivered { frames: 1 }
    } else {
        Verdict::Dropped(DropCause::LaneFull)
    }
}

/// Where the headers of a GSO frame are, checked against its type.
#[derive(Debug, Clone, Copy)]
struct GsoHeaders {
    /// IP header offset (after the Ethernet header and any VLAN tag).
    l3: usize,
    ipv4: bool,
    /// TCP or UDP header offset: `csum_start`.
    l4: usize,
    tcp: bool,
    /// End of the headers every segment repeats; the payload follows.
    hdr_end: usize,
}

const ETHERTYPE_VLAN: u16 = 0x8100;
/// TCP and UDP checksum fields, from the L4 header.
const TCP_CSUM_OFFSET: usize = 16;
const UDP_CSUM_OFFSET: usize = 6;

fn parse_gso(frame: &[u8], csum: (usize, usize), g: Gso) -> Result<GsoHeaders, DropCause> {
    let bad = DropCause::BadOffload;
    let eth = EthernetFrame::new_checked(frame).map_err(|_| bad)?;
    let (ethertype, l3) = match u16::from(eth.ethertype()) {
        ETHERTYPE_VLAN => {
            let inner = frame.get(16..18).ok_or(bad)?;
            (u16::from_be_bytes([inner[0], inner[1]]), 18)
        }
        t => (t, 14),
    };
    let rest = frame.get(l3..).ok_or(bad)?;
    let (ipv4, l4, proto) = match EthernetProtocol::from(ethertype) {
        EthernetProtocol::Ipv4 => {
            let ip = Ipv4Packet::new_checked(rest).map_err(|_| bad)?;
            let hl = usize::from(ip.header_len());
            // smoltcp's check_len does not bound the header length below.
            if ip.version() != 4
                || hl < 20
                || usize::from(ip.total_len()) != rest.len()
                || ip.more_frags()
                || ip.frag_offset() != 0
            {
                return Err(bad);
            }
            (true, l3 + hl, ip.next_header())
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(rest).map_err(|_| bad)?;
            if ip.version() != 6 || ip.total_len() != rest.len() {
                return Err(bad);
            }
            let next = ip.next_header();
            if matches!(
                next,
                IpProtocol::HopByHop
                    | IpProtocol::Ipv6Route
                    | IpProtocol::Ipv6Frag
                    | IpProtocol::Ipv6Opts
                    | IpProtocol::IpSecAh
            ) {
                return Err(DropCause::Ipv6Extensions);
            }
            (false, l3 + IPV6_HEADER_LEN, next)
        }
        _ => return Err(bad),
    };
    let tcp = match (g.kind, ipv4, proto) {
        (gso::TCPV4, true, IpProtocol::Tcp) | (gso::TCPV6, false, IpProtocol::Tcp) => true,
        (gso::UDP_L4, _, IpProtocol::Udp) => false,
        _ => return Err(bad),
    };
    let seg = frame.get(l4..).ok_or(bad)?;
    let (hdr_end, csum_offset) = if tcp {
        let t = TcpPacket::new_checked(seg).map_err(|_| bad)?;
        (l4 + usize::from(t.header_len()), TCP_CSUM_OFFSET)
    } else {
        let u = UdpPacket::new_checked(seg).map_err(|_| bad)?;
        if usize::from(u.len()) != seg.len() {
            return Err(bad);
        }
        (l4 + UDP_HEADER_LEN, UDP_CSUM_OFFSET)
    };
    if csum != (l4, csum_offset) {
        return Err(bad);
    }
    Ok(GsoHeaders {
        l3,
        ipv4,
        l4,
        tcp,
        hdr_end,
    })
}

/// Cuts a checked GSO frame into segments of `seg_size` payload bytes.
fn segment(
    frame: &[u8],
    h: &GsoHeaders,
    seg_size: usize,
    base: FrameMeta,
    partial: bool,
    scratch: &mut Scratch,
    out: &mut dyn FnMut(&[u8], FrameMeta) -> bool,
) -> Verdict {
    let payload = &frame[h.hdr_end..];
    // At least one: a GSO frame with no payload is one segment of headers.
    let count = payload.len().div_ceil(seg_size).max(1);
    let ip = &frame[h.l3..];
    let (src, dst, ident0) = if h.ipv4 {
        let p = Ipv4Packet::new_unchecked(ip);
        (
            IpAddress::Ipv4(p.src_addr()),
            IpAddress::Ipv4(p.dst_addr()),
            p.ident(),
        )
    } else {
        let p = Ipv6Packet::new_unchecked(ip);
        (
            IpAddress::Ipv6(p.src_addr()),
            IpAddress::Ipv6(p.dst_addr()),
            0,
        )
    };
    let (seq0, fin, psh, cwr) = if h.tcp {
        let t = TcpPacket::new_unchecked(&frame[h.l4..]);
        (t.seq_number().0, t.fin(), t.psh(), t.cwr())
    } else {
        (0, false, false, false)
    };
    let (proto, csum_offset) = if h.tcp {
        (IpProtocol::Tcp, TCP_CSUM_OFFSET)
    } else {
        (IpProtocol::Udp, UDP_CSUM_OFFSET)
    };
    let mut meta = base;
    if partial {
        meta.flags |= flags::CSUM_BLANK;
        meta.csum_start = h.l4 as u16;
        meta.csum_offset = csum_offset as u16;
    }

    let buf = scratch.take(h.hdr_end + seg_size.min(payload.len()));
    // Headers once: every field that differs is rewritten per segment.
    buf[..h.hdr_end].copy_from_slice(&frame[..h.hdr_end]);
    for i in 0..count {
        let at = i * seg_size;
        let chunk = seg_size.min(payload.len() - at);
        let len = h.hdr_end + chunk;
        buf[h.hdr_end..len].copy_from_slice(&payload[at..at + chunk]);
        let seg = &mut buf[..len];
        // Lengths fit u16: the segment is no longer than the frame, whose
        // IP length was checked to be exact.
        if h.ipv4 {
            let mut p = Ipv4Packet::new_unchecked(&mut seg[h.l3..]);
            p.set_total_len((len - h.l3) as u16);
            p.set_ident(ident0.wrapping_add(i as u16));
            p.fill_checksum();
        } else {
            let mut p = Ipv6Packet::new_unchecked(&mut seg[h.l3..]);
            p.set_payload_len((len - h.l3 - IPV6_HEADER_LEN) as u16);
        }
        let l4_len = len - h.l4;
        let last = i + 1 == count;
        if h.tcp {
            let mut t = TcpPacket::new_unchecked(&mut seg[h.l4..]);
            t.set_seq_number(TcpSeqNumber(seq0.wrapping_add(at as i32)));
            t.set_fin(fin && last);
            t.set_psh(psh && last);
            // Linux's tcp_gso_segment: congestion window reduced is said
            // once, on the first segment (with or without the ECN flag).
            t.set_cwr(cwr && i == 0);
            if partial {
                // Linux's CHECKSUM_PARTIAL: the folded pseudo-header sum.
                t.set_checksum(checksum::pseudo_header(&src, &dst, proto, l4_len as u32));
            } else {
                t.fill_checksum(&src, &dst);
            }
        } else {
            let mut u = UdpPacket::new_unchecked(&mut seg[h.l4..]);
            u.set_len(l4_len as u16);
            if partial {
                u.set_checksum(checksum::pseudo_header(&src, &dst, proto, l4_len as u32));
            } else {
                u.fill_checksum(&src, &dst);
            }
        }
        if !out(seg, meta) {
            return if i == 0 {
                Verdict::Dropped(DropCause::LaneFull)
            } else {
                Verdict::Partial {
                    frames: i as u32,
                    dropped: (count - i) as u32,
                }
            };
        }
    }
    Verdict::Delivered {
        frames: count as u32,
    }
}

/// Completes a partial checksum (Linux's `skb_checksum_help`): the field
/// at `start + offset` holds the pseudo-header sum; the sum over
/// `start..`, folded and complemented, replaces it. 0 is sent as 0xffff
/// (the same in ones' complement; for UDP, 0 would mean "no checksum").
/// The caller checked `start + offset + 2 <= frame.len()`.
fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) {
    let sum = !checksum::data(&frame[start..]);
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[start + offset..start + offset + 2].copy_from_slice(&sum.to_be_bytes());
}

/// The longest frame `deliver` may emit for a destination: for fuzzing and
/// the switch's own assertions.
pub fn max_emitted(dst_features: u32, dst_max_frame: usize) -> usize {
    if dst_features & features::GSO != 0 && dst_features & features::CSUM_BLANK != 0 {
        GSO_MAX_FRAME.max(dst_max_frame)
    } else {
        dst_max_frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;
    use share_hal::wire::net::SLOT_DATA_MAX;
    use smoltcp::wire::{EthernetAddress, Ipv4Address, Ipv6Address};

    const CB: u16 = flags::CSUM_BLANK;

    fn run(
        frame: &[u8],
        meta: FrameMeta,
        feats: u32,
        max: usize,
    ) -> (Verdict, Vec<(Vec<u8>, FrameMeta)>) {
        let mut got = Vec::new();
        let mut scratch = Scratch::new();
        let v = deliver(frame, &meta, feats, max, &mut scratch, &mut |f, m| {
            got.push((f.to_vec(), m));
            true
        });
        (v, got)
    }

    /// What a Linux sender puts on the wire for a TSO/USO super-frame,
    /// built with smoltcp's setters (independently of the segmenter).
    #[derive(Debug, Clone)]
    struct Spec {
        v6: bool,
        udp: bool,
        vlan: bool,
        /// 32-bit words of IPv4 options / TCP options.
        ip_opts: usize,
        tcp_opts: usize,
        fin: bool,
        psh: bool,
        cwr: bool,
        seq: u32,
        ident: u16,
        payload: Vec<u8>,
    }

    const SRC4: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
    const DST4: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
    const SRC6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const DST6: Ipv6Address = Ipv6Address::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

    impl Spec {
        fn addrs(&self) -> (IpAddress, IpAddress) {
            if self.v6 {
                (IpAddress::Ipv6(SRC6), IpAddress::Ipv6(DST6))
            } else {
                (IpAddress::Ipv4(SRC4), IpAddress::Ipv4(DST4))
            }
        }
        fn l3(&self) -> usize {
            if self.vlan {
                18
            } else {
                14
            }
        }
        fn l4(&self) -> usize {
            self.l3() + if self.v6 { 40 } else { 20 + 4 * self.ip_opts }
        }
        fn hdr_end(&self) -> usize {
            self.l4() + if self.udp { 8 } else { 20 + 4 * self.tcp_opts }
        }
        fn kind(&self) -> u8 {
            match (self.udp, self.v6) {
                (true, _) => gso::UDP_L4,
                (false, false) => gso::TCPV4,
                (false, true) => gso::TCPV6,
            }
        }
        fn build(&self) -> Vec<u8> {
            let (l3, l4, end) = (self.l3(), self.l4(), self.hdr_end());
            let len = end + self.payload.len();
            let mut f = vec![0u8; len];
            let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
            eth.set_dst_addr(EthernetAddress([2, 0, 0, 0, 0, 2]));
            eth.set_src_addr(EthernetAddress([2, 0, 0, 0, 0, 1]));
            let inner = if self.v6 {
                EthernetProtocol::Ipv6
            } else {
                EthernetProtocol::Ipv4
            };
            if self.vlan {
                eth.set_ethertype(EthernetProtocol::Unknown(ETHERTYPE_VLAN));
                f[14..16].copy_from_slice(&[0x00, 0x07]);
                f[16..18].copy_from_slice(&u16::from(inner).to_be_bytes());
            } else {
                eth.set_ethertype(inner);
            }
            let proto = if self.udp {
                IpProtocol::Udp
            } else {
                IpProtocol::Tcp
            };
            if self.v6 {
                let mut ip = Ipv6Packet::new_unchecked(&mut f[l3..]);
                ip.set_version(6);
                ip.set_payload_len((len - l4) as u16);
                ip.set_next_header(proto);
                ip.set_hop_limit(64);
                ip.set_src_addr(SRC6);
                ip.set_dst_addr(DST6);
            } else {
                let mut ip = Ipv4Packet::new_unchecked(&mut f[l3..]);
                ip.set_version(4);
                ip.set_header_len((20 + 4 * self.ip_opts) as u8);
                ip.set_total_len((len - l3) as u16);
                ip.set_ident(self.ident);
                ip.clear_flags();
                ip.set_dont_frag(true);
                ip.set_hop_limit(64);
                ip.set_next_header(proto);
                ip.set_src_addr(SRC4);
                ip.set_dst_addr(DST4);
                f[l3 + 20..l4].fill(1); // NOP options
                Ipv4Packet::new_unchecked(&mut f[l3..]).fill_checksum();
            }
            let (src, dst) = self.addrs();
            let partial = checksum::pseudo_header(&src, &dst, proto, (len - l4) as u32);
            if self.udp {
                let mut u = UdpPacket::new_unchecked(&mut f[l4..]);
                u.set_src_port(5000);
                u.set_dst_port(6000);
                u.set_len((len - l4) as u16);
                u.set_checksum(partial);
            } else {
                let mut t = TcpPacket::new_unchecked(&mut f[l4..]);
                t.set_src_port(8080);
                t.set_dst_port(50000);
                t.set_seq_number(TcpSeqNumber(self.seq as i32));
                t.set_ack_number(TcpSeqNumber(1));
                t.set_header_len((20 + 4 * self.tcp_opts) as u8);
                t.clear_flags();
                t.set_ack(true);
                t.set_fin(self.fin);
                t.set_psh(self.psh);
                t.set_cwr(self.cwr);
                t.set_window_len(0xffff);
                t.set_checksum(partial);
                f[l4 + 20..end].fill(1);
            }
            f[end..].copy_from_slice(&self.payload);
            f
        }
        fn meta(&self, size: u16) -> FrameMeta {
            FrameMeta {
                flags: CB,
                csum_start: self.l4() as u16,
                csum_offset: if self.udp { 6 } else { 16 },
                gso_type: self.kind(),
                gso_size: size,
                gso_flags: 0,
            }
        }
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0usize..=10,
                0usize..=10,
            ),
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<u32>(),
                any::<u16>(),
            ),
            0usize..=65400,
            any::<u8>(),
        )
            .prop_map(
                |((v6, udp, vlan, ip_opts, tcp_opts), (fin, psh, cwr, seq, ident), n, seed)| {
                    let mut s = Spec {
                        v6,
                        udp,
                        vlan,
                        ip_opts: if v6 { 0 } else { ip_opts },
                        tcp_opts: if udp { 0 } else { tcp_opts },
                        fin,
                        psh,
                        cwr,
                        seq,
                        ident,
                        payload: Vec::new(),
                    };
                    // The IP packet stays within 65535 bytes.
                    let room = 65535 - (s.hdr_end() - s.l3());
                    s.payload = (0..n.min(room))
                        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                        .collect();
                    s
                },
            )
    }

    /// Checks every segment against the super-frame; returns the payload
    /// they carry, in order.
    fn check_segments(
        s: &Spec,
        sup: &[u8],
        segs: &[(Vec<u8>, FrameMeta)],
        seg_size: usize,
        feats: u32,
        max: usize,
    ) -> Vec<u8> {
        let (l3, l4, end) = (s.l3(), s.l4(), s.hdr_end());
        let (src, dst) = s.addrs();
        let mut payload = Vec::new();
        for (i, (seg, meta)) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            assert!(seg.len() <= max, "segment {} > {max}", seg.len());
            assert_eq!((meta.gso_type, meta.gso_size, meta.gso_flags), (0, 0, 0));
            let mut seg = seg.clone();
            if meta.flags & CB != 0 {
                assert!(feats & features::CSUM_BLANK != 0);
                assert_eq!(usize::from(meta.csum_start), l4);
                complete_checksum(&mut seg, l4, meta.csum_offset.into());
            } else {
                assert!(feats & features::CSUM_BLANK == 0);
            }
            assert_eq!(&seg[..14], &sup[..14]);
            if s.v6 {
                let ip = Ipv6Packet::new_checked(&seg[l3..]).unwrap();
                assert_eq!(ip.total_len(), seg.len() - l3);
            } else {
                let ip = Ipv4Packet::new_checked(&seg[l3..]).unwrap();
                assert!(ip.verify_checksum());
                assert_eq!(usize::from(ip.total_len()), seg.len() - l3);
                assert_eq!(ip.ident(), s.ident.wrapping_add(i as u16));
                assert_eq!(&seg[l3 + 20..l4], &sup[l3 + 20..l4], "options kept");
            }
            if s.udp {
                let u = UdpPacket::new_checked(&seg[l4..]).unwrap();
                assert_ne!(u.checksum(), 0);
                assert!(u.verify_checksum(&src, &dst));
                assert_eq!(usize::from(u.len()), seg.len() - l4);
            } else {
                let t = TcpPacket::new_checked(&seg[l4..]).unwrap();
                assert!(t.verify_checksum(&src, &dst));
                let at = (i * seg_size) as u32;
                assert_eq!(t.seq_number().0 as u32, s.seq.wrapping_add(at));
                assert_eq!(t.fin(), s.fin && last);
                assert_eq!(t.psh(), s.psh && last);
                assert_eq!(t.cwr(), s.cwr && i == 0);
                assert!(t.ack());
                assert_eq!(t.options(), &sup[l4 + 20..end]);
            }
            payload.extend_from_slice(&seg[end..]);
        }
        payload
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn segments_rebuild_the_payload_and_verify(
            s in spec(),
            size in prop_oneof![1u16..64, 64u16..=9000, any::<u16>().prop_map(|v| v.max(1))],
            mtu in 68usize..=9000,
            feats in prop_oneof![Just(0u32), Just(features::CSUM_BLANK),
                Just(features::DATA_VALIDATED | features::CSUM_BLANK), Just(features::JUMBO)],
        ) {
            // Payload sizes of 1 byte make 65k segments: keep those small.
            let mut s = s;
            if size < 64 {
                s.payload.truncate(2000);
            }
            let sup = s.build();
            let max = mtu + 18;
            let (v, segs) = run(&sup, s.meta(size), feats, max);
            let room = max.saturating_sub(s.hdr_end());
            let size = usize::from(size);
            let max_segs = if s.udp { share_hal::wire::net::GSO_MAX_UDP_SEGS } else { GSO_MAX_SEGS };
            if s.payload.len().div_ceil(size) > max_segs {
                prop_assert_eq!(v, Verdict::Dropped(DropCause::TooManySegments));
                return Ok(());
            }
            if room == 0 || (s.udp && size > room) {
                prop_assert_eq!(v, Verdict::Dropped(DropCause::TooBig));
                return Ok(());
            }
            let seg_size = size.min(room);
            let count = s.payload.len().div_ceil(seg_size).max(1);
            if count > GSO_MAX_SEGS {
                prop_assert_eq!(v, Verdict::Dropped(DropCause::TooBig));
                return Ok(());
            }
            prop_assert_eq!(v, Verdict::Delivered { frames: count as u32 });
            prop_assert_eq!(segs.len(), count);
            let payload = check_segments(&s, &sup, &segs, seg_size, feats, max);
            prop_assert_eq!(payload, s.payload.clone());
        }

        #[test]
        fn completed_checksums_verify_with_smoltcp(s in spec(), validated in any::<bool>()) {
            // A plain frame with a partial checksum, to a port without
            // CSUM_BLANK, standard or jumbo.
            let mut s = s;
            s.payload.truncate(9000 - (s.hdr_end() - 18));
            let sup = s.build();
            let mut meta = s.meta(0);
            meta.gso_type = 0;
            if validated {
                meta.flags |= flags::DATA_VALIDATED;
            }
            let (v, got) = run(&sup, meta, features::JUMBO, 9018);
            prop_assert_eq!(v, Verdict::Delivered { frames: 1 });
            let (f, m) = &got[0];
            prop_assert_eq!(*m, FrameMeta::default(), "no CSUM_BLANK, no DATA_VALIDATED");
            let (src, dst) = s.addrs();
            let l4 = s.l4();
            if s.udp {
                prop_assert!(UdpPacket::new_checked(&f[l4..]).unwrap().verify_checksum(&src, &dst));
            } else {
                prop_assert!(TcpPacket::new_checked(&f[l4..]).unwrap().verify_checksum(&src, &dst));
            }
            // Only the checksum field changed.
            let at = l4 + usize::from(meta.csum_offset);
            prop_assert_eq!(&f[..at], &sup[..at]);
            prop_assert_eq!(&f[at + 2..], &sup[at + 2..]);
            // Passed through as it came to a port that takes CSUM_BLANK.
            let (_, got) = run(&sup, meta, features::ALL, 9018);
            prop_assert_eq!(&got[0].0, &sup);
            prop_assert_eq!(got[0].1, meta);
        }

        #[test]
        fn arbitrary_frames_and_meta_never_panic(
            frame in proptest::collection::vec(any::<u8>(), 0..3000),
            m in (any::<u16>(), any::<u16>(), any::<u16>(), 0u8..5, any::<u16>(), 0u8..3),
            feats in 0u32..16,
            mtu in 68usize..=9000,
        ) {
            let meta = FrameMeta {
                flags: m.0 & 7, csum_start: m.1 % 3000, csum_offset: m.2 % 100,
                gso_type: m.3, gso_size: m.4, gso_flags: m.5,
            };
            let max = mtu + 18;
            let (_, got) = run(&frame, meta, feats, max);
            for (f, m) in got {
                prop_assert!(f.len() <= max_emitted(feats, max));
                prop_assert!(f.len() >= FRAME_MIN);
                prop_assert!(m.flags & !(CB | flags::DATA_VALIDATED) == 0);
                if m.flags & CB != 0 {
                    prop_assert!(feats & features::CSUM_BLANK != 0);
                    prop_assert!(usize::from(m.csum_start) + usize::from(m.csum_offset) + 2 <= f.len());
                }
                if m.flags & flags::DATA_VALIDATED != 0 {
                    prop_assert!(feats & features::DATA_VALIDATED != 0);
                }
                if m.gso_type != 0 {
                    prop_assert!(feats & features::GSO != 0);
                } else if f.len() > max {
                    prop_assert!(false, "plain frame over the port's max");
                }
            }
        }
    }

    /// `pass_through` on the frame's first [`OFFLOAD_HEAD`] bytes and its
    /// length decides as `deliver` does on the whole frame, and
    /// `parse_gso_at` as `parse_gso`.
    fn agrees(frame: &[u8], meta: FrameMeta, feats: u32, max: usize) -> Result<(), TestCaseError> {
        let head = &frame[..frame.len().min(OFFLOAD_HEAD)];
        let p = pass_through(head, frame.len(), &meta, feats, max);
        let (v, got) = run(frame, meta, feats, max);
        match p {
            Ok(Pass::As(m)) => {
                prop_assert_eq!(v, Verdict::Delivered { frames: 1 });
                prop_assert_eq!(&got[0].0[..], frame);
                prop_assert_eq!(got[0].1, m);
            }
            Err(c) => prop_assert_eq!(v, Verdict::Dropped(c)),
            Ok(Pass::NeedsWhole) => prop_assert!(
                matches!(v, Verdict::Delivered { .. } | Verdict::Partial { .. }),
                "{:?}",
                v
            ),
        }
        if let Ok(Some(g)) = meta.gso() {
            let csum = (usize::from(meta.csum_start), usize::from(meta.csum_offset));
            let key = |h: GsoHeaders| (h.l3, h.ipv4, h.l4, h.tcp, h.hdr_end);
            prop_assert_eq!(
                parse_gso_at(head, frame.len(), csum, g).map(key),
                parse_gso(frame, csum, g).map(key)
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Super-frames as Linux makes them, and the same with header
        /// bytes, lengths and offload fields changed.
        #[test]
        fn pass_through_on_the_head_agrees_with_deliver(
            s in spec(),
            size in prop_oneof![1u16..64, 64u16..=9000],
            mtu in 68usize..=9000,
            feats in 0u32..16,
            changes in proptest::collection::vec((0u8..7, any::<usize>(), any::<u8>()), 1..3),
            short in proptest::option::of(0usize..40),
            plain in any::<bool>(),
        ) {
            let mut s = s;
            if size < 64 {
                s.payload.truncate(2000);
            }
            if let Some(n) = short {
                s.payload.truncate(n);
            }
            let mut frame = s.build();
            let (l3, l4, end) = (s.l3(), s.l4(), s.hdr_end());
            for (kind, at, v) in changes {
                let set = |f: &mut Vec<u8>, i: usize, b: u8| if let Some(x) = f.get_mut(i) { *x = b };
                match kind {
                    // Any header byte.
                    0 => set(&mut frame, at % end, v),
                    // IPv4: more fragments, or a fragment offset.
                    1 if !s.v6 => {
                        if at % 2 == 0 {
                            let df = frame.get(l3 + 6).map_or(0, |b| b & 0x40);
                            set(&mut frame, l3 + 6, 0x20 | df);
                        } else {
                            set(&mut frame, l3 + 7, v);
                        }
                    }
                    // IPv6: an extension header next.
                    1 => set(&mut frame, l3 + 6, [0, 43, 44, 60, 51][at % 5]),
                    // Version and header length / IPv6 payload length.
                    2 => set(&mut frame, l3 + at % 6, v),
                    // TCP data offset (maybe past a short segment) / UDP length.
                    3 if s.udp => set(&mut frame, l4 + 4 + at % 2, v),
                    3 => set(&mut frame, l4 + 12, (v % 16) << 4),
                    // The frame shorter or longer than its headers say.
                    4 => frame.truncate(frame.len().saturating_sub(1 + at % 64)),
                    5 => frame.extend(core::iter::repeat_n(v, 1 + at % 8)),
                    // Protocol / next header.
                    _ => set(&mut frame, l3 + if s.v6 { 6 } else { 9 }, v),
                }
            }
            let mut meta = s.meta(size);
            if plain {
                meta.gso_type = 0;
                meta.gso_size = 0;
            }
            agrees(&frame, meta, feats, mtu + 18)?;
        }

        #[test]
        fn pass_through_agrees_on_arbitrary_frames(
            frame in proptest::collection::vec(any::<u8>(), 0..400),
            m in (any::<u16>(), any::<u16>(), any::<u16>(), 0u8..5, any::<u16>(), 0u8..3),
            feats in 0u32..16,
            mtu in 68usize..=9000,
        ) {
            let meta = FrameMeta {
                flags: m.0 & 7, csum_start: m.1 % 400, csum_offset: m.2 % 100,
                gso_type: m.3, gso_size: m.4, gso_flags: m.5,
            };
            agrees(&frame, meta, feats, mtu + 18)?;
        }
    }

    #[test]
    fn pass_through_with_too_short_a_head_asks_for_the_whole_frame() {
        let s = Spec {
            v6: false,
            udp: false,
            vlan: true,
            ip_opts: 10,
            tcp_opts: 10,
            fin: false,
            psh: false,
            cwr: false,
            seq: 1,
            ident: 1,
            payload: vec![7; 3000],
        };
        let frame = s.build();
        assert_eq!(
            s.hdr_end(),
            OFFLOAD_HEAD,
            "the longest headers fill the head"
        );
        let meta = s.meta(1448);
        let all = features::ALL;
        assert_eq!(
            pass_through(&frame[..OFFLOAD_HEAD], frame.len(), &meta, all, 9018),
            Ok(Pass::As(meta))
        );
        assert_eq!(
            pass_through(&frame[..OFFLOAD_HEAD - 1], frame.len(), &meta, all, 9018),
            Ok(Pass::NeedsWhole)
        );
    }

    // Reference bytes from an independent implementation (Python's struct
    // and RFC 1071 arithmetic). The super-frame: TCPv4, seq 0xfffffffe (to
    // wrap), ACK|PSH|FIN|CWR, 10 payload bytes, partial checksum, a stale
    // IPv4 header checksum (0xbeef) the segmenter must not keep.
    const SUPER: [u8; 64] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x32, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0xbe, 0xef, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x1f, 0x90, 0xc3, 0x50, 0xff, 0xff, 0xff, 0xfe, 0x00, 0x00, 0x00,
        0x01, 0x50, 0x99, 0xff, 0xff, 0x14, 0x27, 0x00, 0x00, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66,
        0x67, 0x68, 0x69, 0x6a,
    ];
    const SEG0: [u8; 58] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x14, 0x96, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x1f, 0x90, 0xc3, 0x50, 0xff, 0xff, 0xff, 0xfe, 0x00, 0x00, 0x00,
        0x01, 0x50, 0x90, 0xff, 0xff, 0xf3, 0xa6, 0x00, 0x00, 0x61, 0x62, 0x63, 0x64,
    ];
    const SEG1: [u8; 58] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2c, 0x12, 0x35, 0x40, 0x00, 0x40, 0x06, 0x14, 0x95, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x1f, 0x90, 0xc3, 0x50, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x01, 0x50, 0x10, 0xff, 0xff, 0xec, 0x1b, 0x00, 0x00, 0x65, 0x66, 0x67, 0x68,
    ];
    const SEG2: [u8; 56] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2a, 0x12, 0x36, 0x40, 0x00, 0x40, 0x06, 0x14, 0x96, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x1f, 0x90, 0xc3, 0x50, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00,
        0x01, 0x50, 0x19, 0xff, 0xff, 0x4f, 0x75, 0x00, 0x00, 0x69, 0x6a,
    ];
    const SEG1_PARTIAL: [u8; 58] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2c, 0x12, 0x35, 0x40, 0x00, 0x40, 0x06, 0x14, 0x95, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x1f, 0x90, 0xc3, 0x50, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x01, 0x50, 0x10, 0xff, 0xff, 0x14, 0x21, 0x00, 0x00, 0x65, 0x66, 0x67, 0x68,
    ];
    #[test]
    fn tcpv4_segments_match_reference_bytes() {
        let meta = FrameMeta {
            flags: CB,
            csum_start: 34,
            csum_offset: 16,
            gso_type: gso::TCPV4,
            gso_size: 4,
            gso_flags: gso::FLAG_ECN,
        };
        let (v, got) = run(&SUPER, meta, 0, 1518);
        assert_eq!(v, Verdict::Delivered { frames: 3 });
        assert_eq!(got[0], (SEG0.to_vec(), FrameMeta::default()));
        assert_eq!(got[1], (SEG1.to_vec(), FrameMeta::default()));
        assert_eq!(got[2], (SEG2.to_vec(), FrameMeta::default()));
        // To a port with CSUM_BLANK the checksum stays partial.
        let (_, got) = run(&SUPER, meta, features::CSUM_BLANK, 1518);
        let partial = FrameMeta {
            flags: CB,
            csum_start: 34,
            csum_offset: 16,
            ..FrameMeta::default()
        };
        assert_eq!(got[1], (SEG1_PARTIAL.to_vec(), partial));
        // To a port with GSO: as it came.
        let (v, got) = run(&SUPER, meta, features::ALL, 1518);
        assert_eq!(v, Verdict::Delivered { frames: 1 });
        assert_eq!(got[0], (SUPER.to_vec(), meta));
        // A port whose MTU leaves room for 3 payload bytes: TCP is cut
        // smaller (4 segments), and a GSO port gets gso_size 3.
        let (v, _) = run(&SUPER, meta, 0, 54 + 3);
        assert_eq!(v, Verdict::Delivered { frames: 4 });
        let (_, got) = run(&SUPER, meta, features::ALL, 57);
        assert_eq!(got[0].1.gso_size, 3);
        let (v, _) = run(&SUPER, meta, features::ALL, 54);
        assert_eq!(v, Verdict::Dropped(DropCause::TooBig));
    }

    #[test]
    fn hostile_gso_frames_are_dropped_with_a_cause() {
        let meta = FrameMeta {
            flags: CB,
            csum_start: 34,
            csum_offset: 16,
            gso_type: gso::TCPV4,
            gso_size: 4,
            gso_flags: 0,
        };
        let bad = |f: &[u8], m: FrameMeta| run(f, m, 0, 1518).0;
        let dropped = Verdict::Dropped(DropCause::BadOffload);
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    gso_size: 0,
                    ..meta
                }
            ),
            dropped
        );
        assert_eq!(
            bad(&SUPER, FrameMeta { flags: 0, ..meta }),
            dropped,
            "no CSUM_BLANK"
        );
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    gso_type: 4,
                    ..meta
                }
            ),
            dropped
        );
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    gso_flags: 2,
                    ..meta
                }
            ),
            dropped
        );
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    gso_type: gso::TCPV6,
                    ..meta
                }
            ),
            dropped
        );
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    gso_type: gso::UDP_L4,
                    csum_offset: 6,
                    ..meta
                }
            ),
            dropped
        );
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    csum_start: 30,
                    ..meta
                }
            ),
            dropped
        );
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    csum_offset: 6,
                    ..meta
                }
            ),
            dropped
        );
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    csum_start: 60,
                    csum_offset: 3,
                    ..meta
                }
            ),
            dropped
        );
        assert_eq!(
            bad(
                &SUPER,
                FrameMeta {
                    flags: CB | flags::MORE,
                    ..meta
                }
            ),
            dropped
        );
        let with = |at: usize, b: &[u8]| {
            let mut f = SUPER.to_vec();
            f[at..at + b.len()].copy_from_slice(b);
            bad(&f, meta)
        };
        assert_eq!(
            with(16, &[0, 0x33]),
            dropped,
            "IP total length longer than the frame"
        );
        assert_eq!(with(16, &[0, 0x31]), dropped, "IP total length shorter");
        assert_eq!(with(14, &[0x44]), dropped, "IHL 4");
        assert_eq!(with(14, &[0x65]), dropped, "version 6 in an IPv4 frame");
        assert_eq!(with(20, &[0x20]), dropped, "more fragments");
        assert_eq!(with(21, &[0x01]), dropped, "fragment offset");
        assert_eq!(with(23, &[17]), dropped, "UDP behind a TCPV4 claim");
        assert_eq!(with(46, &[0x40]), dropped, "TCP data offset 4");
        assert_eq!(with(46, &[0xf0]), dropped, "TCP header past the frame");
        assert_eq!(with(12, &[0x08, 0x06]), dropped, "ARP");
        assert_eq!(
            bad(&SUPER[..40], meta),
            Verdict::Dropped(DropCause::BadOffload)
        );
        assert_eq!(bad(&SUPER[..13], meta), Verdict::Dropped(DropCause::Runt));

        // IPv6 with a hop-by-hop header: its own cause.
        let s = Spec {
            v6: true,
            udp: false,
            vlan: false,
            ip_opts: 0,
            tcp_opts: 0,
            fin: false,
            psh: false,
            cwr: false,
            seq: 0,
            ident: 0,
            payload: vec![7; 3000],
        };
        let mut f = s.build();
        let m = s.meta(1000);
        assert!(matches!(
            run(&f, m, 0, 1518).0,
            Verdict::Delivered { frames: 3 }
        ));
        f[20] = 0; // next header: hop-by-hop
        assert_eq!(
            run(&f, m, 0, 1518).0,
            Verdict::Dropped(DropCause::Ipv6Extensions)
        );
        // UDP: a lying length, and a datagram too big for the port.
        let u = Spec {
            udp: true,
            ..s.clone()
        };
        let f = u.build();
        let m = u.meta(1400);
        assert!(matches!(
            run(&f, m, 0, 1518).0,
            Verdict::Delivered { frames: 3 }
        ));
        assert_eq!(run(&f, m, 0, 1400).0, Verdict::Dropped(DropCause::TooBig));
        let mut lying = f.clone();
        lying[58] ^= 1; // UDP length
        assert_eq!(
            run(&lying, m, 0, 1518).0,
            Verdict::Dropped(DropCause::BadOffload)
        );
        // Over the GSO limit.
        let big = vec![0u8; GSO_MAX_FRAME + 1];
        assert_eq!(
            run(&big, meta, features::ALL, 1518).0,
            Verdict::Dropped(DropCause::TooBig)
        );
    }

    #[test]
    fn plain_frames_keep_the_port_limits() {
        let frame = vec![0x55u8; 9018];
        let validated = FrameMeta {
            flags: flags::DATA_VALIDATED,
            ..FrameMeta::default()
        };
        // Jumbo source, standard port: too big; jumbo port: delivered.
        assert_eq!(
            run(&frame, validated, features::ALL, 1518).0,
            Verdict::Dropped(DropCause::TooBig)
        );
        let (v, got) = run(&frame, validated, features::DATA_VALIDATED, 9018);
        assert_eq!(v, Verdict::Delivered { frames: 1 });
        assert_eq!(got[0].1, validated);
        // DATA_VALIDATED cleared for a port that did not accept it.
        let (_, got) = run(&frame[..1518], validated, features::CSUM_BLANK, 1518);
        assert_eq!(got[0], (frame[..1518].to_vec(), FrameMeta::default()));
        // Checksum offsets past the frame.
        let m = FrameMeta {
            flags: CB,
            csum_start: 1500,
            csum_offset: 17,
            ..FrameMeta::default()
        };
        assert_eq!(
            run(&frame[..1518], m, 0, 1518).0,
            Verdict::Dropped(DropCause::BadOffload)
        );
        let m = FrameMeta {
            csum_offset: 16,
            ..m
        };
        assert!(matches!(
            run(&frame[..1518], m, 0, 1518).0,
            Verdict::Delivered { .. }
        ));
        // A plain frame with a gso_size but no type.
        let m = FrameMeta {
            gso_size: 1,
            ..FrameMeta::default()
        };
        assert_eq!(
            run(&frame[..60], m, 0, 1518).0,
            Verdict::Dropped(DropCause::BadOffload)
        );
    }

    #[test]
    fn a_full_lane_stops_segmentation() {
        let meta = FrameMeta {
            flags: CB,
            csum_start: 34,
            csum_offset: 16,
            gso_type: gso::TCPV4,
            gso_size: 4,
            gso_flags: 0,
        };
        let mut scratch = Scratch::new();
        let mut room = 1;
        let v = deliver(&SUPER, &meta, 0, 1518, &mut scratch, &mut |_, _| {
            room -= 1;
            room >= 0
        });
        assert_eq!(
            v,
            Verdict::Partial {
                frames: 1,
                dropped: 2
            }
        );
        let v = deliver(&SUPER, &meta, 0, 1518, &mut scratch, &mut |_, _| false);
        assert_eq!(v, Verdict::Dropped(DropCause::LaneFull));
        let v = deliver(
            &SUPER[..60],
            &FrameMeta::default(),
            0,
            1518,
            &mut scratch,
            &mut |_, _| false,
        );
        assert_eq!(v, Verdict::Dropped(DropCause::LaneFull));
        assert_eq!(DropCause::ALL.map(DropCause::index), [0, 1, 2, 3, 4, 5]);
    }

    /// `cargo test --release -p netback-uk -- --ignored --nocapture
    /// segmentation_cost`: ns per 1500-byte segment of a 64 KiB TCP frame,
    /// next to a plain copy of the same bytes.
    #[test]
    #[ignore = "measurement; run in release"]
    fn segmentation_cost() {
        use std::time::Instant;
        let s = Spec {
            v6: false,
            udp: false,
            vlan: false,
            ip_opts: 0,
            tcp_opts: 3, // timestamps, as Linux sends
            fin: false,
            psh: true,
            cwr: false,
            seq: 1,
            ident: 1,
            payload: (0..65483).map(|i| i as u8).collect(),
        };
        let sup = s.build();
        let mss = 1500 - 20 - 32;
        let meta = s.meta(mss as u16);
        let mut scratch = Scratch::new();
        let mut sink = vec![0u8; 1518];
        let rounds = 2000;
        for (feats, name) in [
            (0, "full checksum"),
            (features::CSUM_BLANK, "partial checksum"),
        ] {
            let mut segs = 0u64;
            let t = Instant::now();
            for _ in 0..rounds {
                let v = deliver(&sup, &meta, feats, 1518, &mut scratch, &mut |f, _| {
                    // The switch copies each segment into a lane slot.
                    sink[..f.len()].copy_from_slice(f);
                    true
                });
                let Verdict::Delivered { frames } = v else {
                    panic!("{v:?}")
                };
                segs += u64::from(frames);
            }
            let ns = t.elapsed().as_nanos() as f64 / segs as f64;
            std::println!(
                "segmenting 64 KiB TCP into {} segments, {name}: {ns:.0} ns/segment",
                segs / rounds
            );
        }
        let t = Instant::now();
        let mut n = 0u64;
        for _ in 0..rounds {
            for c in sup.chunks(1500) {
                sink[..c.len()].copy_from_slice(std::hint::black_box(c));
                n += 1;
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        std::println!("baseline memcpy of 1500-byte chunks: {ns:.0} ns/chunk");
        let _ = SLOT_DATA_MAX;
    }
}
