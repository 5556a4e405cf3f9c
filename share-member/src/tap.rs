//! A TAP device with the kernel's offload header (`IFF_VNET_HDR`): the
//! Linux network stack on one side, a network share on the other.
//!
//! The device is not persistent: closing its descriptor removes it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use share_hal::wire::net::GSO_MAX_SLOTS;
use share_hal::SharedMem;

use crate::vnet::VNET_HDR_LEN;

// linux/if_tun.h: _IOW('T', nr, int/unsigned int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETCARRIER: libc::c_ulong = 0x4004_54e2;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const ARPHRD_ETHER: libc::sa_family_t = 1;

/// `struct ifreq` with the union members this module uses.
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    u: IfReqU,
}

#[repr(C)]
#[derive(Clone, Copy)]
union IfReqU {
    flags: libc::c_short,
    mtu: libc::c_int,
    hwaddr: libc::sockaddr,
    /// The union's size in the kernel (`struct ifmap` is the largest).
    _pad: [u8; 24],
}

impl IfReq {
    fn named(name: &str) -> io::Result<IfReq> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?}: 1 to 15 bytes, no NUL"),
            ));
        }
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            u: IfReqU { _pad: [0; 24] },
        };
        for (d, s) in r.name.iter_mut().zip(b) {
            *d = *s as libc::c_char;
        }
        Ok(r)
    }

    fn name(&self) -> String {
        let bytes: Vec<u8> = self
            .name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn with_op(e: io::Error, op: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{op}: {e}"))
}

/// An open TAP device.
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Creates a TAP device named `name` (`%d` lets the kernel pick the
    /// number), non-blocking, frames preceded by a 10-byte
    /// `virtio_net_hdr`.
    pub fn create(name: &str) -> io::Result<Tap> {
        // SAFETY: a NUL-terminated path literal; the result is checked.
        let raw = check(unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| with_op(e, "open /dev/net/tun"))?;
        // SAFETY: `raw` is a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq::named(name)?;
        req.u.flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) })
            .map_err(|e| with_op(e, "TUNSETIFF"))?;
        let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int.
        check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &size) })
            .map_err(|e| with_op(e, "TUNSETVNETHDRSZ"))?;
        Ok(Tap {
            fd,
            name: req.name(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which offloads (`vnet::tun_f`) the kernel may hand us.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes the flags as the argument value.
        check(unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) })
            .map(drop)
            .map_err(|e| with_op(e, "TUNSETOFFLOAD"))
    }

    /// Sets the carrier (Linux 5.0 and later; older kernels say `EINVAL`).
    pub fn set_carrier(&self, on: bool) -> io::Result<()> {
        let v: libc::c_int = on.into();
        // SAFETY: TUNSETCARRIER reads an int.
        check(unsafe { libc::ioctl(self.fd.as_raw_fd(), TUNSETCARRIER, &v) })
            .map(drop)
            .map_err(|e| with_op(e, "TUNSETCARRIER"))
    }

    fn netdev_ioctl(&self, op: libc::c_ulong, req: &mut IfReq, what: &str) -> io::Result<()> {
        // SAFETY: an ordinary socket call; the result is checked.
        let s =
            check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
                .map_err(|e| with_op(e, "socket for interface ioctls"))?;
        // SAFETY: `s` is ours alone.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        // SAFETY: the SIOC[GS]IF* requests read and write a `struct ifreq`.
        check(unsafe { libc::ioctl(s.as_raw_fd(), op, req as *mut IfReq) })
            .map(drop)
            .map_err(|e| with_op(e, what))
    }

    pub fn set_mac(&self, mac: [u8; 6]) -> io::Result<()> {
        let mut req = IfReq::named(&self.name)?;
        // SAFETY: a plain-data union member is written whole.
        let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
        sa.sa_family = ARPHRD_ETHER;
        for (d, s) in sa.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
        req.u.hwaddr = sa;
        self.netdev_ioctl(libc::SIOCSIFHWADDR, &mut req, "SIOCSIFHWADDR")
    }

    pub fn set_mtu(&self, mtu: u16) -> io::Result<()> {
        let mut req = IfReq::named(&self.name)?;
        req.u.mtu = mtu.into();
        self.netdev_ioctl(libc::SIOCSIFMTU, &mut req, "SIOCSIFMTU")
    }

    /// Brings the interface up.
    pub fn set_up(&self) -> io::Result<()> {
        let mut req = IfReq::named(&self.name)?;
        self.netdev_ioctl(libc::SIOCGIFFLAGS, &mut req, "SIOCGIFFLAGS")?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        let flags = unsafe { req.u.flags };
        req.u.flags = flags | libc::IFF_UP as libc::c_short;
        self.netdev_ioctl(libc::SIOCSIFFLAGS, &mut req, "SIOCSIFFLAGS")
    }

    /// A stand-in over any message descriptor (a `SOCK_SEQPACKET`
    /// socket reads and writes whole messages with `readv`/`writev` as a
    /// TAP device does frames), for tests of the frame paths.
    #[cfg(test)]
    pub(crate) fn from_fd(fd: OwnedFd, name: &str) -> Tap {
        Tap {
            fd,
            name: name.to_string(),
        }
    }

    /// Reads one frame: its offload header into `hdr`, the frame into the
    /// `slots` in order (windows of a share's mapped pages: the kernel's
    /// copy is the only one), what does not fit there into `spill`.
    /// Returns the frame's length (header not counted; for a frame the
    /// room given could not hold, at least that room: the kernel
    /// truncates), `Ok(None)` when none is waiting. The bytes in the slots are not read here, nor to be read
    /// by the caller to decide anything: the share's owner may rewrite
    /// them at any moment.
    pub fn read_shared<'m>(
        &self,
        hdr: &mut [u8; VNET_HDR_LEN],
        slots: impl IntoIterator<Item = share_hal::Result<SharedMem<'m>>>,
        spill: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let mut iov = IovArray::new();
        iov.push(hdr.as_mut_ptr(), hdr.len())?;
        for w in slots {
            let w = w.map_err(window_error)?;
            iov.push(w.as_ptr(), w.len())?;
        }
        iov.push(spill.as_mut_ptr(), spill.len())?;
        // SAFETY: every iovec points into memory valid for writes of its
        // length for the whole call: `hdr` and `spill` are exclusively
        // borrowed; each slot window is mapped and writable for its
        // lifetime 'm (`SharedMem`'s contract) and no Rust reference to it
        // exists. The kernel writes them with its own copy routine, not a
        // Rust access; a peer writing the slots at the same time only
        // changes bytes nobody here decides on.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(with_op(e, "read from the TAP device")),
            };
        }
        let n = n as usize;
        if n < VNET_HDR_LEN {
            return Err(with_op(
                io::Error::from_raw_os_error(libc::EIO),
                "read from the TAP device (shorter than its offload header)",
            ));
        }
        Ok(Some(n - VNET_HDR_LEN))
    }

    /// Writes one frame in one call: the offload header, the frame's
    /// private `head`, then its `rest` straight from a share's mapped
    /// pages (the kernel copies it into its buffer: no copy of ours).
    pub fn write_shared<'m>(
        &self,
        hdr: &[u8],
        head: &[u8],
        rest: impl IntoIterator<Item = share_hal::Result<SharedMem<'m>>>,
    ) -> io::Result<()> {
        let mut iov = IovArray::new();
        iov.push(hdr.as_ptr().cast_mut(), hdr.len())?;
        if !head.is_empty() {
            iov.push(head.as_ptr().cast_mut(), head.len())?;
        }
        for w in rest {
            let w = w.map_err(window_error)?;
            iov.push(w.as_ptr(), w.len())?;
        }
        // SAFETY: every iovec points into memory valid for reads of its
        // length for the whole call: `hdr` and `head` are borrowed; each
        // window of the share is mapped for its lifetime 'm and the kernel
        // only reads it (its own copy routine, not a Rust access). A peer
        // rewriting those bytes meanwhile changes only what the kernel
        // receives, which it parses from its own copy.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len()) };
        if n < 0 {
            return Err(with_op(
                io::Error::last_os_error(),
                "write to the TAP device",
            ));
        }
        Ok(())
    }
}

fn window_error(e: share_hal::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a frame's slot window: {e}"),
    )
}

/// Most iovecs a frame takes: the offload header, a private head, a
/// segmentation offload frame's slots, a spill buffer, with room.
const MAX_IOV: usize = 8 + GSO_MAX_SLOTS as usize;

/// The iovecs of one `readv`/`writev`, on the stack.
struct IovArray {
    v: [libc::iovec; MAX_IOV],
    n: usize,
}

impl IovArray {
    fn new() -> Self {
        IovArray {
            v: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_IOV],
            n: 0,
        }
    }

    fn push(&mut self, base: *mut u8, len: usize) -> io::Result<()> {
        let slot = self.v.get_mut(self.n).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a frame in too many pieces")
        })?;
        *slot = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        self.n += 1;
        Ok(())
    }

    fn as_ptr(&self) -> *const libc::iovec {
        self.v.as_ptr()
    }

    fn len(&self) -> libc::c_int {
        self.n as libc::c_int
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether a network interface of this name exists in our namespace.
pub fn exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    let c: &CStr = &c;
    // SAFETY: a NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}
