//! The Linux Xen device ABI (`<xen/gntdev.h>`, `<xen/gntalloc.h>`,
//! `<xen/evtchn.h>` from linux-libc-dev) and the raw calls on it.
//!
//! All `unsafe` of the Linux platform lives here. Layouts are checked by the
//! tests at the bottom against the sizes the C headers give.

use std::os::fd::{AsRawFd, OwnedFd};

use share_hal::error::{Error, Result};

const fn ioc_none(ty: u8, nr: u8, size: usize) -> libc::c_ulong {
    // _IOC(_IOC_NONE, ty, nr, size) on x86: dir 0 in bits 30..32.
    ((size as libc::c_ulong) << 16) | ((ty as libc::c_ulong) << 8) | nr as libc::c_ulong
}

#[repr(C)]
pub struct GntdevGrantRef {
    pub domid: u32,
    pub gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with room for `N` references.
#[repr(C)]
pub struct GntdevMap<const N: usize> {
    pub count: u32,
    pub pad: u32,
    pub index: u64,
    pub refs: [GntdevGrantRef; N],
}

#[repr(C)]
pub struct GntdevUnmap {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

/// One side of `struct gntdev_grant_copy_segment`: a local virtual address
/// or a foreign {ref, offset, domid}, packed in 8 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub union CopySide {
    pub virt: *mut u8,
    pub foreign: ForeignSide,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ForeignSide {
    pub gref: u32,
    pub offset: u16,
    pub domid: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct GntdevCopySegment {
    pub source: CopySide,
    pub dest: CopySide,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
}

#[repr(C)]
pub struct GntdevCopy {
    pub count: libc::c_uint,
    pub segments: *mut GntdevCopySegment,
}

pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `struct ioctl_gntalloc_alloc_gref` with room for `N` references.
#[repr(C)]
pub struct GntallocAlloc<const N: usize> {
    pub domid: u16,
    pub flags: u16,
    pub count: u32,
    pub index: u64,
    pub gref_ids: [u32; N],
}

#[repr(C)]
pub struct GntallocDealloc {
    pub index: u64,
    pub count: u32,
}

pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;

pub const IOCTL_GNTDEV_MAP_GRANT_REF: libc::c_ulong = ioc_none(b'G', 0, size_of::<GntdevMap<1>>());
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: libc::c_ulong = ioc_none(b'G', 1, size_of::<GntdevUnmap>());
pub const IOCTL_GNTDEV_GRANT_COPY: libc::c_ulong = ioc_none(b'G', 8, size_of::<GntdevCopy>());
pub const IOCTL_GNTALLOC_ALLOC_GREF: libc::c_ulong =
    ioc_none(b'G', 5, size_of::<GntallocAlloc<1>>());
pub const IOCTL_GNTALLOC_DEALLOC_GREF: libc::c_ulong =
    ioc_none(b'G', 6, size_of::<GntallocDealloc>());

pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: libc::c_ulong = ioc_none(b'E', 1, 8);
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: libc::c_ulong = ioc_none(b'E', 2, 4);
pub const IOCTL_EVTCHN_UNBIND: libc::c_ulong = ioc_none(b'E', 3, 4);
pub const IOCTL_EVTCHN_NOTIFY: libc::c_ulong = ioc_none(b'E', 4, 4);

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Opens a Xen device node read-write, close-on-exec.
pub fn open(path: &'static str, op: &'static str) -> Result<OwnedFd> {
    let c = std::ffi::CString::new(path).map_err(|_| Error::InvalidArgument { what: "path" })?;
    // SAFETY: `c` is a valid NUL-terminated string; open has no other
    // preconditions.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Os { op, errno: errno() });
    }
    // SAFETY: open returned a fresh descriptor that nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// `ioctl(fd, req, arg)`; returns the ioctl's non-negative result.
///
/// # Safety
/// `arg` must point to a live value of the type `req` expects, including
/// any memory the value points to.
pub unsafe fn ioctl<T>(
    fd: &OwnedFd,
    req: libc::c_ulong,
    arg: *mut T,
    op: &'static str,
) -> Result<i32> {
    // SAFETY: forwarded to the caller's contract.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        return Err(Error::Os { op, errno: errno() });
    }
    Ok(r)
}

/// Maps `len` bytes of a device at offset `index`, shared, read-write.
pub fn mmap_shared(fd: &OwnedFd, len: usize, index: u64, op: &'static str) -> Result<*mut u8> {
    mmap_shared_prot(fd, len, index, libc::PROT_READ | libc::PROT_WRITE, op)
}

/// As [`mmap_shared`], readable only: gntdev maps the grants with
/// `GNTMAP_readonly` when the mapping is not writable (`gntdev_mmap`), which
/// is what a read-only grant (a share descriptor) allows.
pub fn mmap_shared_read_only(
    fd: &OwnedFd,
    len: usize,
    index: u64,
    op: &'static str,
) -> Result<*mut u8> {
    mmap_shared_prot(fd, len, index, libc::PROT_READ, op)
}

fn mmap_shared_prot(
    fd: &OwnedFd,
    len: usize,
    index: u64,
    prot: libc::c_int,
    op: &'static str,
) -> Result<*mut u8> {
    let off = libc::off_t::try_from(index).map_err(|_| Error::InvalidArgument {
        what: "mmap offset",
    })?;
    // SAFETY: a fresh mapping chosen by the kernel (addr NULL) cannot alias
    // any Rust object; failures are reported as MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::Os { op, errno: errno() });
    }
    Ok(p.cast())
}

/// Anonymous private pages, zeroed, page-aligned.
pub fn mmap_anon(len: usize) -> Result<*mut u8> {
    // SAFETY: as for mmap_shared; anonymous memory needs no descriptor.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::Os {
            op: "mmap of anonymous pages",
            errno: errno(),
        });
    }
    Ok(p.cast())
}

/// Unmaps a range returned by `mmap_shared` or `mmap_anon`.
///
/// # Safety
/// `ptr..ptr+len` must be such a mapping, with no live `SharedMem` over it.
pub unsafe fn munmap(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded to the caller's contract. munmap of a valid range
    // cannot fail in a way we could act on.
    unsafe { libc::munmap(ptr.cast(), len) };
}

/// Reads up to `ports.len()` fired ports from an evtchn descriptor. With
/// `nonblock`, returns 0 when none is pending.
pub fn read_ports(fd: &OwnedFd, ports: &mut [u32]) -> Result<usize> {
    // SAFETY: the buffer is valid for writes of its full byte length.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            ports.as_mut_ptr().cast(),
            size_of_val(ports),
        )
    };
    if n < 0 {
        let e = errno();
        if e == libc::EAGAIN {
            return Ok(0);
        }
        return Err(Error::Os {
            op: "read of /dev/xen/evtchn",
            errno: e,
        });
    }
    Ok(n as usize / 4)
}

/// Unmasks ports after they were read, so they can fire again.
pub fn unmask_ports(fd: &OwnedFd, ports: &[u32]) -> Result<()> {
    // SAFETY: the buffer is valid for reads of its full byte length.
    let n = unsafe { libc::write(fd.as_raw_fd(), ports.as_ptr().cast(), size_of_val(ports)) };
    if n < 0 {
        return Err(Error::Os {
            op: "unmask on /dev/xen/evtchn",
            errno: errno(),
        });
    }
    Ok(())
}

/// Waits until `fd` is readable or `timeout_ms` passes (-1: forever).
pub fn poll_readable(fd: &OwnedFd, timeout_ms: i32) -> Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = errno();
        if e == libc::EINTR {
            return Ok(false);
        }
        return Err(Error::Os {
            op: "poll on /dev/xen/evtchn",
            errno: e,
        });
    }
    Ok(r > 0)
}

pub fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let r = unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK)
    };
    if r < 0 {
        return Err(Error::Os {
            op: "fcntl O_NONBLOCK",
            errno: errno(),
        });
    }
    Ok(())
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    /// Sizes and offsets as the C headers define them (x86-64).
    #[test]
    fn layouts_match_the_linux_headers() {
        assert_eq!(size_of::<GntdevMap<1>>(), 24);
        assert_eq!(offset_of!(GntdevMap<1>, index), 8);
        assert_eq!(offset_of!(GntdevMap<1>, refs), 16);
        assert_eq!(size_of::<GntdevUnmap>(), 16);
        assert_eq!(size_of::<CopySide>(), 8);
        assert_eq!(offset_of!(ForeignSide, offset), 4);
        assert_eq!(offset_of!(ForeignSide, domid), 6);
        assert_eq!(size_of::<GntdevCopySegment>(), 24);
        assert_eq!(offset_of!(GntdevCopySegment, len), 16);
        assert_eq!(offset_of!(GntdevCopySegment, status), 20);
        assert_eq!(size_of::<GntdevCopy>(), 16);
        assert_eq!(size_of::<GntallocAlloc<1>>(), 24);
        assert_eq!(offset_of!(GntallocAlloc<1>, gref_ids), 16);
        assert_eq!(size_of::<GntallocDealloc>(), 16);
        // Values computed from _IOC(_IOC_NONE, 'G', nr, size) in C.
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(IOCTL_GNTDEV_GRANT_COPY, 0x0010_4708);
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF, 0x0018_4705);
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
    }

    /// The same figures, computed by the C compiler from the installed
    /// headers (linux-libc-dev, which gcc's libc6-dev always pulls in).
    #[test]
    fn ioctl_numbers_match_the_c_compiler() {
        let dir = std::env::temp_dir().join(format!("share-hal-ioctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("ioctl.c");
        std::fs::write(
            &src,
            r#"#include <stdio.h>
#include <stdint.h>
#include <sys/ioctl.h>
typedef uint32_t grant_ref_t;
typedef uint16_t domid_t;
#include <xen/gntdev.h>
#include <xen/gntalloc.h>
#include <xen/evtchn.h>
int main(void) {
    printf("%lu %lu %lu %lu %lu %lu %lu %lu %lu %zu\n",
        (unsigned long)IOCTL_GNTDEV_MAP_GRANT_REF, (unsigned long)IOCTL_GNTDEV_UNMAP_GRANT_REF,
        (unsigned long)IOCTL_GNTDEV_GRANT_COPY, (unsigned long)IOCTL_GNTALLOC_ALLOC_GREF,
        (unsigned long)IOCTL_GNTALLOC_DEALLOC_GREF, (unsigned long)IOCTL_EVTCHN_BIND_INTERDOMAIN,
        (unsigned long)IOCTL_EVTCHN_BIND_UNBOUND_PORT, (unsigned long)IOCTL_EVTCHN_UNBIND,
        (unsigned long)IOCTL_EVTCHN_NOTIFY, sizeof(struct gntdev_grant_copy_segment));
    return 0;
}
"#,
        )
        .unwrap();
        let exe = dir.join("ioctl");
        let cc = std::process::Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .status();
        let status = cc.expect("a C compiler is required to check the ABI");
        assert!(
            status.success(),
            "compiling the ABI check failed: are the Linux headers installed?"
        );
        let out = std::process::Command::new(&exe).output().unwrap();
        let got: Vec<u64> = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let want = [
            IOCTL_GNTDEV_MAP_GRANT_REF,
            IOCTL_GNTDEV_UNMAP_GRANT_REF,
            IOCTL_GNTDEV_GRANT_COPY,
            IOCTL_GNTALLOC_ALLOC_GREF,
            IOCTL_GNTALLOC_DEALLOC_GREF,
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
            IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            IOCTL_EVTCHN_UNBIND,
            IOCTL_EVTCHN_NOTIFY,
            size_of::<GntdevCopySegment>() as libc::c_ulong,
        ];
        assert_eq!(got, want.to_vec());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
