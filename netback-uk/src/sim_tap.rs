//! netback-sim's uplinks: TAP devices (plain Ethernet frames, no packet
//! information, no offload header), one per `--uplink N=NAME`. The switch
//! sees them through [`Uplinks`]: a frame read from the TAP came from the
//! network on the other side (the Linux stack of the TAP's namespace, and
//! whatever it bridges or routes to), a frame written to it goes there.
//!
//! The descriptors are non-blocking; a full TAP queue drops the frame (as
//! a NIC with a full ring would), counted by the switch.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use netback_uk::switch::Uplinks;
use share_hal::frames::FrameMeta;

// linux/if_tun.h: _IOW('T', 202, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

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
            flags: IFF_TAP | IFF_NO_PI,
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
        let mut big = [0u8; 1];
        let mut iov = [
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
            libc::iovec {
                iov_base: big.as_mut_ptr().cast(),
                iov_len: 1,
            },
        ];
        // SAFETY: both iovecs point at memory we own, of their lengths.
        let n = unsafe { libc::readv(tap.fd.as_raw_fd(), iov.as_mut_ptr(), 2) };
        // EAGAIN: nothing waiting; any other error: nothing to read either
        // (a TAP whose interface went away keeps failing; the switch
        // simply gets no frames from it).
        usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| (n, FrameMeta::default()))
    }

    fn send(&mut self, device: u16, frame: &[u8], _: FrameMeta) -> bool {
        let Some(tap) = self.tap(device) else {
            return false;
        };
        // SAFETY: `frame` is a valid slice of its length.
        let n = unsafe { libc::write(tap.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        usize::try_from(n).is_ok_and(|n| n == frame.len())
    }

    fn has(&self, device: u16) -> bool {
        self.tap(device).is_some()
    }
}
