//! netback-sim's uplinks: TAP devices (Ethernet frames, no packet
//! information, each behind a `virtio_net_hdr`: `IFF_VNET_HDR`), one per
//! `--uplink N=NAME`. The switch sees them through [`Uplinks`]: a frame
//! read from the TAP came from the network on the other side (the Linux
//! stack of the TAP's namespace, and whatever it bridges or routes to), a
//! frame written to it goes there.
//!
//! Offloads pass through the header both ways, as to a member that took
//! them: the kernel may hand us partial checksums and TCP GSO frames of
//! up to 64 KiB (`TUNSETOFFLOAD`: `TUN_F_CSUM`, `TSO4`, `TSO6`,
//! `TSO_ECN`), which the switch passes to members that accepted them and
//! segments or completes for the others; and takes the same from us, so a
//! member's 64 KiB TSO frame is one write instead of ~45. The header the
//! kernel writes is checked by the switch like a member's offload fields.
//!
//! The descriptors are non-blocking; a full TAP queue drops the frame (as
//! a NIC with a full ring would), counted by the switch.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use netback_uk::switch::Uplinks;
use share_hal::frames::FrameMeta;
use share_hal::wire::net::{features, flags, gso};

// linux/if_tun.h: _IOW('T', 202, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
// _IOW('T', 208, unsigned int).
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const TUN_F_TSO_ECN: libc::c_ulong = 0x08;

/// `struct virtio_net_hdr` (linux/virtio_net.h; a TAP's default header
/// size, little-endian on the hosts we build for).
const VNET_HDR_LEN: usize = 10;
const VNET_NEEDS_CSUM: u8 = 1;
const VNET_DATA_VALID: u8 = 2;
const VNET_GSO_NONE: u8 = 0;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_TCPV6: u8 = 4;
const VNET_GSO_ECN: u8 = 0x80;

/// A frame's offload fields from the header the kernel wrote. A GSO type
/// we did not enable (UFO, USO) becomes one no member takes (the switch
/// drops the frame as a bad offload); the switch checks the rest against
/// the frame.
fn rx_meta(h: &[u8; VNET_HDR_LEN]) -> FrameMeta {
    let word = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    let mut meta = FrameMeta::default();
    if h[0] & VNET_NEEDS_CSUM != 0 {
        meta.flags |= flags::CSUM_BLANK;
        meta.csum_start = word(6);
        meta.csum_offset = word(8);
    } else if h[0] & VNET_DATA_VALID != 0 {
        meta.flags |= flags::DATA_VALIDATED;
    }
    let kind = h[1] & !VNET_GSO_ECN;
    if kind != VNET_GSO_NONE || h[1] & VNET_GSO_ECN != 0 {
        meta.gso_type = match kind {
            VNET_GSO_TCPV4 => gso::TCPV4,
            VNET_GSO_TCPV6 => gso::TCPV6,
            _ => u8::MAX,
        };
        meta.gso_size = word(4);
        if h[1] & VNET_GSO_ECN != 0 {
            meta.gso_flags = gso::FLAG_ECN;
        }
    }
    meta
}

/// The header for a frame the switch sends with `meta` (only what
/// [`TapUplinks`]' `features` allowed: partial checksums, the validated
/// mark, TCP GSO).
fn tx_header(meta: &FrameMeta) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    if meta.flags & flags::CSUM_BLANK != 0 {
        h[0] = VNET_NEEDS_CSUM;
        h[6..8].copy_from_slice(&meta.csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&meta.csum_offset.to_le_bytes());
    } else if meta.flags & flags::DATA_VALIDATED != 0 {
        h[0] = VNET_DATA_VALID;
    }
    let kind = match meta.gso_type {
        gso::TCPV4 => VNET_GSO_TCPV4,
        gso::TCPV6 => VNET_GSO_TCPV6,
        _ => return h,
    };
    h[1] = kind;
    if meta.gso_flags & gso::FLAG_ECN != 0 {
        h[1] |= VNET_GSO_ECN;
    }
    // hdr_len: a hint of the headers' length (up to the checksum field).
    let hdr_len = meta
        .csum_start
        .saturating_add(meta.csum_offset)
        .saturating_add(2);
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&meta.gso_size.to_le_bytes());
    h
}

/// `struct ifreq` with the one union member used (flags), padded to the
/// kernel's size.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// One TAP device.
pub struct Tap {
    fd: OwnedFd,
}

impl Tap {
    /// Opens (creating it if needed) the TAP device `name`, non-blocking.
    pub fn open(name: &str) -> io::Result<Tap> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?}: 1 to 15 bytes, no NUL"),
            ));
        }
        // SAFETY: a NUL-terminated path literal; the result is checked.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("open /dev/net/tun: {e}")));
        }
        // SAFETY: `raw` is a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(b) {
            *d = *s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes),
        // which `req` is.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
        }
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, offloads) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("TUNSETOFFLOAD {name}: {e}"),
            ));
        }
        Ok(Tap { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// netback-sim's network devices: TAP `taps[k].1` is device `taps[k].0`.
pub struct TapUplinks {
    pub taps: Vec<(u16, Tap)>,
}

impl TapUplinks {
    fn tap(&self, device: u16) -> Option<&Tap> {
        self.taps.iter().find(|(d, _)| *d == device).map(|(_, t)| t)
    }
}

impl Uplinks for TapUplinks {
    fn recv(&mut self, device: u16, buf: &mut [u8]) -> Option<(usize, FrameMeta)> {
        let tap = self.tap(device)?;
        // A frame longer than `buf` is cut by the kernel to `buf.len()`;
        // one more byte of room tells it apart (reported as too long).
        let mut hdr = [0u8; VNET_HDR_LEN];
        let mut big = [0u8; 1];
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
            libc::iovec {
                iov_base: big.as_mut_ptr().cast(),
                iov_len: 1,
            },
        ];
        // SAFETY: the iovecs point at memory we own, of their lengths.
        let n = unsafe { libc::readv(tap.fd.as_raw_fd(), iov.as_mut_ptr(), 3) };
        // EAGAIN: nothing waiting; any other error: nothing to read either
        // (a TAP whose interface went away keeps failing; the switch
        // simply gets no frames from it).
        let n = usize::try_from(n).ok()?.checked_sub(VNET_HDR_LEN)?;
        (n > 0).then(|| (n, rx_meta(&hdr)))
    }

    fn send(&mut self, device: u16, frame: &[u8], meta: FrameMeta) -> bool {
        let Some(tap) = self.tap(device) else {
            return false;
        };
        let hdr = tx_header(&meta);
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr().cast_mut().cast(),
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs point at memory of their lengths, which
        // writev only reads.
        let n = unsafe { libc::writev(tap.fd.as_raw_fd(), iov.as_ptr(), 2) };
        usize::try_from(n).is_ok_and(|n| n == VNET_HDR_LEN + frame.len())
    }

    /// Partial checksums, the validated mark, and TCP GSO (UDP GSO is
    /// segmented by the switch: not every kernel takes it from a TAP).
    fn features(&self, _device: u16, _frame: &[u8], meta: &FrameMeta) -> u32 {
        let mut f = features::CSUM_BLANK | features::DATA_VALIDATED;
        if matches!(meta.gso_type, gso::TCPV4 | gso::TCPV6) {
            f |= features::GSO;
        }
        f
    }

    fn has(&self, device: u16) -> bool {
        self.tap(device).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_offload_fields_both_ways() {
        let tso = FrameMeta {
            flags: flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 16,
            gso_type: gso::TCPV4,
            gso_size: 1448,
            gso_flags: gso::FLAG_ECN,
        };
        let h = tx_header(&tso);
        assert_eq!(h, [1, 0x81, 52, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(rx_meta(&h), tso);
        let v6 = FrameMeta {
            gso_type: gso::TCPV6,
            gso_flags: 0,
            ..tso
        };
        assert_eq!(rx_meta(&tx_header(&v6)), v6);
        let valid = FrameMeta {
            flags: flags::DATA_VALIDATED,
            ..FrameMeta::default()
        };
        assert_eq!(tx_header(&valid), [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(rx_meta(&tx_header(&valid)), valid);
        assert_eq!(rx_meta(&[0; 10]), FrameMeta::default());
        // UFO, USO or an ECN flag alone: a type no member takes.
        for t in [3, 5, 0x80] {
            let m = rx_meta(&[1, t, 0, 0, 100, 0, 34, 0, 6, 0]);
            assert_eq!(m.gso_type, u8::MAX, "{t}");
        }
    }
}
