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
extern crate alloc;

use alloc::vec::Vec;

use share_hal::frames::FrameMeta;
use share_hal::wire::net::{features, flags, gso, Gso, FRAME_MIN, GSO_MAX_FRAME};
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
}

impl DropCause {
    pub const ALL: [DropCause; 5] = [
        DropCause::TooBig,
        DropCause::BadOffload,
        DropCause::Ipv6Extensions,
        DropCause::Runt,
        DropCause::LaneFull,
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
    if meta.flags & !(flags::CSUM_BLANK | flags::DATA_VALIDATED) != 0 {
        return Err(DropCause::BadOffload);
    }
    let csum = if meta.flags & flags::CSUM_BLANK != 0 {
        let (start, offset) = (usize::from(meta.csum_start), usize::from(meta.csum_offset));
        if start + offset + 2 > frame.len() {
            return Err(DropCause::BadOffload);
        }
        Some((start, offset))
    } else {
        None
    };
    let gso = Gso::from_fields(meta.gso_type, meta.gso_size, meta.gso_flags)
        .map_err(|_| DropCause::BadOffload)?;
    // What the source says survives only where the destination takes it.
    let mut base = FrameMeta::default();
    if meta.flags & flags::DATA_VALIDATED != 0 && dst_features & features::DATA_VALIDATED != 0 {
        base.flags |= flags::DATA_VALIDATED;
    }
    let dst_csum = dst_features & features::CSUM_BLANK != 0;
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
