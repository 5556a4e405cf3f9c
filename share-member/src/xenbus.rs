//! A minimal xenstore client over Linux's `/dev/xen/xenbus` (the kernel's
//! xenbus device: whole `xsd_sockmsg` messages written and read through
//! one descriptor; present in dom0 and in domUs, no libxenstore or
//! `xenstore-write` needed, which the rig's domU image does not have).
//!
//! Only what the bootstrap key needs: read, write and remove one key,
//! outside transactions. Relative paths resolve against the domain's home
//! (`/local/domain/<domid>/`), as xenstored does for every connection.
//! Replies are bounded (header length checked, 10 s per request) and
//! parsed from a private copy.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// `xs_wire.h` message types.
const XS_READ: u32 = 2;
const XS_WRITE: u32 = 11;
const XS_RM: u32 = 13;
const XS_ERROR: u32 = 16;
const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`.
const PAYLOAD_MAX: usize = 4096;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub const DEVICE: &str = "/dev/xen/xenbus";

/// One connection to xenstore.
pub struct XenBus {
    fd: OwnedFd,
    next_id: u32,
}

/// A xenstore error reply (`"ENOENT"`, `"EACCES"`, ...).
fn xs_error(payload: &[u8]) -> io::Error {
    let name = payload.split(|&b| b == 0).next().unwrap_or(&[]);
    let name = String::from_utf8_lossy(name);
    let kind = match &*name {
        "ENOENT" => io::ErrorKind::NotFound,
        "EACCES" | "EPERM" => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("xenstore: {name}"))
}

/// Builds a request: header, then the payload.
pub fn encode(kind: u32, req_id: u32, payload: &[u8]) -> io::Result<Vec<u8>> {
    if payload.len() > PAYLOAD_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "xenstore request longer than XENSTORE_PAYLOAD_MAX",
        ));
    }
    let mut m = Vec::with_capacity(HEADER_LEN + payload.len());
    for w in [kind, req_id, 0, payload.len() as u32] {
        m.extend_from_slice(&w.to_le_bytes());
    }
    m.extend_from_slice(payload);
    Ok(m)
}

/// Parses a reply header copied out: (type, payload length), the length
/// bounded.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> io::Result<(u32, usize)> {
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let len = word(12) as usize;
    if len > PAYLOAD_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "xenstore reply longer than XENSTORE_PAYLOAD_MAX",
        ));
    }
    Ok((word(0), len))
}

impl XenBus {
    pub fn open() -> io::Result<XenBus> {
        let path = std::ffi::CString::new(DEVICE).map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated path; the result is checked.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("open {DEVICE}: {e}")));
        }
        // SAFETY: a descriptor we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(XenBus { fd, next_id: 1 })
    }

    fn wait_readable(&self, until: Instant) -> io::Result<()> {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "xenstore did not answer within 10 s",
            ));
        }
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, ms.max(1)) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes of the reply, by the deadline.
    fn read_exact(&self, buf: &mut [u8], until: Instant) -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            self.wait_readable(until)?;
            let rest = &mut buf[got..];
            // SAFETY: `rest` is valid for writes of its length.
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "xenbus device closed",
                ));
            }
            got += n as usize;
        }
        Ok(())
    }

    fn request(&mut self, kind: u32, payload: &[u8]) -> io::Result<Vec<u8>> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let msg = encode(kind, id, payload)?;
        // The device takes a message whole or in pieces; one write of it all.
        // SAFETY: `msg` is valid for reads of its length.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != msg.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short write of a xenstore request",
            ));
        }
        let until = Instant::now() + REQUEST_TIMEOUT;
        let mut h = [0u8; HEADER_LEN];
        self.read_exact(&mut h, until)?;
        let (rkind, len) = parse_header(&h)?;
        let mut body = vec![0u8; len];
        self.read_exact(&mut body, until)?;
        if rkind == XS_ERROR {
            return Err(xs_error(&body));
        }
        if rkind != kind {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("xenstore answered type {rkind} to a request of type {kind}"),
            ));
        }
        Ok(body)
    }

    /// The value of `path`, or `None` if it does not exist.
    pub fn read(&mut self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        match self.request(XS_READ, &p) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write(&mut self, path: &str, value: &[u8]) -> io::Result<()> {
        // "path\0value", the value not NUL-terminated.
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        p.extend_from_slice(value);
        self.request(XS_WRITE, &p).map(drop)
    }

    /// Removes `path`; absent is fine.
    pub fn remove(&mut self, path: &str) -> io::Result<()> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        match self.request(XS_RM, &p) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_reply_headers() {
        let m = encode(XS_WRITE, 7, b"data/vdevice\0gref=8 port=3").unwrap();
        assert_eq!(&m[0..4], &11u32.to_le_bytes());
        assert_eq!(&m[4..8], &7u32.to_le_bytes());
        assert_eq!(&m[12..16], &26u32.to_le_bytes());
        assert_eq!(&m[16..], b"data/vdevice\0gref=8 port=3");
        assert!(encode(XS_WRITE, 1, &[0; PAYLOAD_MAX + 1]).is_err());
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&XS_ERROR.to_le_bytes());
        h[12..16].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(parse_header(&h).unwrap(), (XS_ERROR, 7));
        h[12..16].copy_from_slice(&(PAYLOAD_MAX as u32 + 1).to_le_bytes());
        assert!(parse_header(&h).is_err());
        assert_eq!(xs_error(b"ENOENT\0").kind(), io::ErrorKind::NotFound);
    }
}
