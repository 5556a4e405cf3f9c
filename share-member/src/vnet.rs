//! The kernel's offload metadata (`struct virtio_net_hdr`, what a TAP
//! device opened with `IFF_VNET_HDR` reads and writes before each frame)
//! and its mapping to the network share's slot flags.
//!
//! Pure functions over private buffers, so the mapping is tested without
//! a TAP device. The kernel is trusted here (it is our own kernel); the
//! share's side of the mapping is hostile, but [`FrameReceiver`] has
//! validated every frame against the negotiated rules before [`rx_header`]
//! sees its metadata.
//!
//! Segmentation offload: the share's `GSO` feature maps to `gso_type`,
//! `gso_size` and the ECN bit in both directions, and to the `TUN_F_TSO*`
//! and `TUN_F_USO*` bits of [`tun_offload`], so a Linux TCP stream crosses
//! the share in 64 KiB frames. Without the feature the kernel is never
//! asked for such frames (those TUN bits stay clear), and one that comes
//! anyway is dropped.
//!
//! [`FrameReceiver`]: share_hal::frames::FrameReceiver

use share_hal::frames::FrameMeta;
use share_hal::wire::net::{self, features, flags, FRAME_MIN};

/// Bytes of `struct virtio_net_hdr` (no `num_buffers`: the TAP device is
/// told this size with `TUNSETVNETHDRSZ`).
pub const VNET_HDR_LEN: usize = 10;

/// `virtio_net_hdr.flags`.
pub mod hdr_flags {
    /// The checksum at `csum_start + csum_offset` is partial.
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was verified already.
    pub const DATA_VALID: u8 = 2;
}

/// `virtio_net_hdr.gso_type`.
pub mod gso {
    pub const NONE: u8 = 0;
    pub const TCPV4: u8 = 1;
    pub const UDP: u8 = 3;
    pub const TCPV6: u8 = 4;
    pub const UDP_L4: u8 = 5;
    pub const ECN: u8 = 0x80;
}

/// `TUNSETOFFLOAD` bits (`linux/if_tun.h`).
pub mod tun_f {
    pub const CSUM: u32 = 0x01;
    pub const TSO4: u32 = 0x02;
    pub const TSO6: u32 = 0x04;
    pub const TSO_ECN: u32 = 0x08;
    pub const UFO: u32 = 0x10;
    pub const USO4: u32 = 0x20;
    pub const USO6: u32 = 0x40;
    /// Both USO bits, which older kernels do not know.
    pub const USO: u32 = USO4 | USO6;
}

/// A `virtio_net_hdr`, little-endian (the TAP device's order on the
/// little-endian hosts this runs on; `TUNSETVNETLE` is not needed there).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHeader {
    pub fn parse(b: &[u8]) -> Option<VnetHeader> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// The segmentation request, if any: (type without ECN, segment size).
    pub fn gso(&self) -> Option<(u8, u16)> {
        (self.gso_type & !gso::ECN != gso::NONE)
            .then_some((self.gso_type & !gso::ECN, self.gso_size))
    }
}

/// The offloads the TAP device may hand us, from the accepted features:
/// partial checksums only if the switch completes them for us, TCP and
/// UDP segmentation only if the share carries GSO frames (which needs
/// partial checksums too). Kernels before 6.2 refuse the USO bits: the
/// caller retries without [`tun_f::USO`].
pub fn tun_offload(accepted: u32) -> u32 {
    let mut f = 0;
    if accepted & features::CSUM_BLANK != 0 {
        f |= tun_f::CSUM;
        if accepted & features::GSO != 0 {
            f |= tun_f::TSO4 | tun_f::TSO6 | tun_f::TSO_ECN | tun_f::USO4 | tun_f::USO6;
        }
    }
    f
}

/// Why a frame from the kernel is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxDrop {
    /// A segmentation request, but the share has no segmentation feature.
    Gso,
    /// A partial checksum whose range lies outside the frame.
    BadCsum,
}

/// What to do with a frame the kernel gave us, decided from its header
/// and its length alone (the frame's bytes may sit in a lane's slots,
/// where they are not to be read: see [`tx_plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxPlan {
    /// The slot flags.
    pub meta: FrameMeta,
    /// A partial checksum to complete here first: (start, field offset),
    /// both inside the frame.
    pub complete: Option<(usize, usize)>,
}

/// The slot flags for a frame of `len` bytes the kernel gave us with
/// `hdr`, against the `accepted` features. A partial checksum the switch
/// cannot take (the feature not accepted, or a range the wire format
/// cannot express) is to be completed here in software
/// ([`TxPlan::complete`]), so the frame goes out whole. Only the length
/// is needed: nothing here reads the frame.
pub fn tx_plan(hdr: &VnetHeader, len: usize, accepted: u32) -> Result<TxPlan, TxDrop> {
    let mut meta = FrameMeta::default();
    if let Some((kind, size)) = hdr.gso() {
        // A super-frame: only with the feature, and its checksum partial
        // (the segments' checksums are computed where it is cut).
        if accepted & features::GSO == 0 || hdr.flags & hdr_flags::NEEDS_CSUM == 0 {
            return Err(TxDrop::Gso);
        }
        meta.gso_type = match kind {
            gso::TCPV4 => net::gso::TCPV4,
            gso::TCPV6 => net::gso::TCPV6,
            gso::UDP_L4 => net::gso::UDP_L4,
            // UFO (IP fragmentation of UDP) has no place on the share.
            _ => return Err(TxDrop::Gso),
        };
        meta.gso_size = size;
        if hdr.gso_type & gso::ECN != 0 {
            meta.gso_flags = net::gso::FLAG_ECN;
        }
        let start = usize::from(hdr.csum_start);
        if start < FRAME_MIN || start + usize::from(hdr.csum_offset) + 2 > len {
            return Err(TxDrop::BadCsum);
        }
        meta.flags = flags::CSUM_BLANK;
        meta.csum_start = hdr.csum_start;
        meta.csum_offset = hdr.csum_offset;
        return Ok(TxPlan {
            meta,
            complete: None,
        });
    }
    let mut complete = None;
    if hdr.flags & hdr_flags::NEEDS_CSUM != 0 {
        let start = usize::from(hdr.csum_start);
        let at = start + usize::from(hdr.csum_offset);
        if at + 2 > len {
            return Err(TxDrop::BadCsum);
        }
        if accepted & features::CSUM_BLANK != 0 && start >= FRAME_MIN {
            meta.flags |= flags::CSUM_BLANK;
            meta.csum_start = hdr.csum_start;
            meta.csum_offset = hdr.csum_offset;
        } else {
            complete = Some((start, at));
            // Completed here: the receiver may trust it as if verified.
            if accepted & features::DATA_VALIDATED != 0 {
                meta.flags |= flags::DATA_VALIDATED;
            }
        }
    } else if hdr.flags & hdr_flags::DATA_VALID != 0 && accepted & features::DATA_VALIDATED != 0 {
        meta.flags |= flags::DATA_VALIDATED;
    }
    Ok(TxPlan { meta, complete })
}

/// [`tx_plan`] for a frame in a private buffer, completing a partial
/// checksum in `frame` where the plan says so.
pub fn tx_meta(hdr: &VnetHeader, frame: &mut [u8], accepted: u32) -> Result<FrameMeta, TxDrop> {
    let plan = tx_plan(hdr, frame.len(), accepted)?;
    if let Some((start, at)) = plan.complete {
        complete_csum(frame, start, at);
    }
    Ok(plan.meta)
}

/// The header for a frame the switch delivered with `meta` (already
/// validated against the negotiated features by the frame receiver).
pub fn rx_header(meta: &FrameMeta) -> VnetHeader {
    let mut h = VnetHeader::default();
    if meta.flags & flags::CSUM_BLANK != 0 {
        h.flags = hdr_flags::NEEDS_CSUM;
        h.csum_start = meta.csum_start;
        h.csum_offset = meta.csum_offset;
    } else if meta.flags & flags::DATA_VALIDATED != 0 {
        h.flags = hdr_flags::DATA_VALID;
    }
    let kind = match meta.gso_type {
        net::gso::TCPV4 => gso::TCPV4,
        net::gso::TCPV6 => gso::TCPV6,
        net::gso::UDP_L4 => gso::UDP_L4,
        _ => return h,
    };
    h.gso_type = kind;
    if meta.gso_flags & net::gso::FLAG_ECN != 0 {
        h.gso_type |= gso::ECN;
    }
    h.gso_size = meta.gso_size;
    // A hint of the headers' length; the kernel widens it to cover the
    // checksum field if it must.
    h.hdr_len = meta
        .csum_start
        .saturating_add(meta.csum_offset)
        .saturating_add(2);
    h
}

/// Completes a partial checksum as the kernel's `skb_checksum_help` does:
/// the field at `at` holds the pseudo-header sum, the ones' complement sum
/// over `start..` (field included) is folded, inverted and stored there.
/// The caller checked `start <= at` and `at + 2 <= frame.len()`.
pub fn complete_csum(frame: &mut [u8], start: usize, at: usize) {
    let Some(data) = frame.get(start..) else {
        return;
    };
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !(sum as u16);
    if let Some(f) = frame.get_mut(at..at + 2) {
        f.copy_from_slice(&csum.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u32 = features::CSUM_BLANK | features::DATA_VALIDATED;

    #[test]
    fn header_bytes_round_trip() {
        let raw = [1, 0x81, 0x36, 0, 0xa8, 0x05, 34, 0, 16, 0];
        let h = VnetHeader::parse(&raw).unwrap();
        assert_eq!(
            h,
            VnetHeader {
                flags: hdr_flags::NEEDS_CSUM,
                gso_type: gso::TCPV4 | gso::ECN,
                hdr_len: 54,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert_eq!(h.emit(), raw);
        assert_eq!(h.gso(), Some((gso::TCPV4, 1448)));
        assert_eq!(VnetHeader::parse(&raw[..9]), None);
    }

    #[test]
    fn needs_csum_becomes_csum_blank_when_accepted() {
        let mut frame = vec![0u8; 60];
        let h = VnetHeader {
            flags: hdr_flags::NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        let m = tx_meta(&h, &mut frame, ALL).unwrap();
        assert_eq!(
            m,
            FrameMeta {
                flags: flags::CSUM_BLANK,
                csum_start: 34,
                csum_offset: 16,
                ..FrameMeta::default()
            }
        );
        assert!(frame.iter().all(|&b| b == 0), "left partial for the switch");
    }

    #[test]
    fn needs_csum_is_completed_here_when_not_accepted() {
        // A UDP datagram over IPv4: the checksum field (offset 34 + 6)
        // holds the pseudo-header sum the kernel put there.
        let mut frame = vec![0u8; 14 + 20 + 8 + 4];
        frame[34..36].copy_from_slice(&1234u16.to_be_bytes());
        frame[36..38].copy_from_slice(&53u16.to_be_bytes());
        frame[38..40].copy_from_slice(&12u16.to_be_bytes());
        frame[40..42].copy_from_slice(&0x1c2du16.to_be_bytes());
        frame[42..46].copy_from_slice(b"ping");
        let h = VnetHeader {
            flags: hdr_flags::NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        let m = tx_meta(&h, &mut frame, features::DATA_VALIDATED).unwrap();
        assert_eq!(m.flags, flags::DATA_VALIDATED);
        // The receiver's check: the covered range with the result in
        // place, plus the pseudo-header sum, folds to 0xffff.
        let mut sum: u32 = 0x1c2d;
        sum += frame[34..]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum::<u32>();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        let m = tx_meta(&h, &mut frame.clone(), 0).unwrap();
        assert_eq!(m, FrameMeta::default());
    }

    #[test]
    fn a_checksum_start_inside_the_ethernet_header_is_completed_not_sent() {
        let mut frame = vec![0u8; 40];
        let h = VnetHeader {
            flags: hdr_flags::NEEDS_CSUM,
            csum_start: 4,
            csum_offset: 2,
            ..Default::default()
        };
        let m = tx_meta(&h, &mut frame, ALL).unwrap();
        assert_eq!(m.flags, flags::DATA_VALIDATED);
        assert_eq!(&frame[6..8], &[0xff, 0xff]);
    }

    #[test]
    fn bad_ranges_and_gso_are_dropped() {
        let mut frame = vec![0u8; 40];
        let h = VnetHeader {
            flags: hdr_flags::NEEDS_CSUM,
            csum_start: 30,
            csum_offset: 9,
            ..Default::default()
        };
        assert_eq!(tx_meta(&h, &mut frame, ALL), Err(TxDrop::BadCsum));
        let h = VnetHeader {
            csum_start: u16::MAX,
            csum_offset: u16::MAX,
            ..h
        };
        assert_eq!(tx_meta(&h, &mut frame, ALL), Err(TxDrop::BadCsum));
        let h = VnetHeader {
            gso_type: gso::TCPV6,
            gso_size: 1440,
            ..Default::default()
        };
        assert_eq!(tx_meta(&h, &mut frame, ALL), Err(TxDrop::Gso));
        // ECN alone is no segmentation request.
        let h = VnetHeader {
            gso_type: gso::ECN,
            ..Default::default()
        };
        assert!(tx_meta(&h, &mut frame, ALL).is_ok());
    }

    #[test]
    fn data_valid_maps_both_ways_only_when_accepted() {
        let mut frame = vec![0u8; 60];
        let h = VnetHeader {
            flags: hdr_flags::DATA_VALID,
            ..Default::default()
        };
        assert_eq!(
            tx_meta(&h, &mut frame, ALL).unwrap().flags,
            flags::DATA_VALIDATED
        );
        assert_eq!(
            tx_meta(&h, &mut frame, features::CSUM_BLANK).unwrap().flags,
            0
        );
        let rx = rx_header(&FrameMeta {
            flags: flags::DATA_VALIDATED,
            ..Default::default()
        });
        assert_eq!(rx.flags, hdr_flags::DATA_VALID);
        let rx = rx_header(&FrameMeta {
            flags: flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 16,
            ..FrameMeta::default()
        });
        assert_eq!(
            (rx.flags, rx.csum_start, rx.csum_offset, rx.gso_type),
            (hdr_flags::NEEDS_CSUM, 34, 16, gso::NONE)
        );
        assert_eq!(rx_header(&FrameMeta::default()), VnetHeader::default());
    }

    #[test]
    fn tun_offload_follows_the_accepted_features() {
        assert_eq!(tun_offload(0), 0);
        assert_eq!(tun_offload(features::DATA_VALIDATED), 0);
        assert_eq!(tun_offload(ALL | features::JUMBO), tun_f::CSUM);
        assert_eq!(
            tun_offload(ALL | features::GSO),
            tun_f::CSUM | tun_f::TSO4 | tun_f::TSO6 | tun_f::TSO_ECN | tun_f::USO
        );
        assert_eq!(tun_offload(features::GSO), 0, "GSO needs partial checksums");
    }

    #[test]
    fn segmentation_requests_map_both_ways() {
        let mut frame = vec![0u8; 9000];
        let h = VnetHeader {
            flags: hdr_flags::NEEDS_CSUM,
            gso_type: gso::TCPV4 | gso::ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let m = tx_meta(&h, &mut frame, ALL | features::GSO).unwrap();
        assert_eq!(
            m,
            FrameMeta {
                flags: flags::CSUM_BLANK,
                csum_start: 34,
                csum_offset: 16,
                gso_type: net::gso::TCPV4,
                gso_size: 1448,
                gso_flags: net::gso::FLAG_ECN,
            }
        );
        let back = rx_header(&m);
        assert_eq!(
            (
                back.flags,
                back.gso_type,
                back.gso_size,
                back.csum_start,
                back.csum_offset
            ),
            (hdr_flags::NEEDS_CSUM, gso::TCPV4 | gso::ECN, 1448, 34, 16)
        );
        let udp = VnetHeader {
            gso_type: gso::UDP_L4,
            csum_offset: 6,
            ..h
        };
        assert_eq!(
            tx_meta(&udp, &mut frame, ALL | features::GSO)
                .unwrap()
                .gso_type,
            net::gso::UDP_L4
        );
        // UFO, a request without a partial checksum, or no GSO feature: dropped.
        let ufo = VnetHeader {
            gso_type: gso::UDP,
            ..h
        };
        assert_eq!(
            tx_meta(&ufo, &mut frame, ALL | features::GSO),
            Err(TxDrop::Gso)
        );
        let whole = VnetHeader { flags: 0, ..h };
        assert_eq!(
            tx_meta(&whole, &mut frame, ALL | features::GSO),
            Err(TxDrop::Gso)
        );
        assert_eq!(tx_meta(&h, &mut frame, ALL), Err(TxDrop::Gso));
    }
}
