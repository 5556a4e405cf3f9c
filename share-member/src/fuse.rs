//! The kernel's FUSE protocol, as much of it as one file needs: a FUSE
//! mount whose root *is* a regular file (`rootmode=0100000`), the disk, so
//! that a loop device can sit on it (see [`crate::disk`]).
//!
//! Hand-rolled rather than a crate: the member serves every device from one
//! poll(2) loop that owns the platform, and a FUSE request must be able to
//! wait for a share's response without blocking that loop. The crates
//! (`fuser`, libfuse) run their own session loop and threads and answer
//! each request from a callback; here a request is read, parked, and
//! answered when the disk server answers. The part of the protocol used is
//! small: INIT, GETATTR, SETATTR (size only), OPEN, READ, WRITE, FSYNC,
//! FLUSH, RELEASE, STATFS, FALLOCATE (punch hole), FORGET, INTERRUPT.
//!
//! The kernel is not a hostile peer, but its requests are still parsed
//! from the private buffer `read(2)` filled, with every length checked.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use share_hal::SharedMem;

/// Protocol version spoken (the kernel adapts to an older minor).
pub const MAJOR: u32 = 7;
pub const MINOR: u32 = 38;
pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;

pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
}

/// `fuse_init_out.flags`.
pub mod init {
    pub const ASYNC_READ: u32 = 1 << 0;
    pub const BIG_WRITES: u32 = 1 << 5;
    pub const ASYNC_DIO: u32 = 1 << 15;
    pub const MAX_PAGES: u32 = 1 << 22;
}

/// `fuse_open_out.open_flags`.
pub mod fopen {
    pub const DIRECT_IO: u32 = 1 << 0;
    pub const NOFLUSH: u32 = 1 << 5;
    pub const PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
}

/// `fuse_setattr_in.valid`.
const FATTR_SIZE: u32 = 1 << 3;
/// `fallocate(2)` modes.
pub const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// One request, parsed from the bytes one `read(2)` of the device gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Init {
        major: u32,
        minor: u32,
        max_readahead: u32,
        flags: u32,
    },
    Getattr,
    /// `size` when the kernel asks to change it.
    Setattr {
        size: Option<u64>,
    },
    Open {
        flags: u32,
    },
    Read {
        offset: u64,
        size: u32,
    },
    /// The data is `buf[data]` of the buffer parsed.
    Write {
        offset: u64,
        data: std::ops::Range<usize>,
    },
    Fsync,
    Flush,
    Release,
    Statfs,
    Fallocate {
        offset: u64,
        length: u64,
        mode: u32,
    },
    /// No reply.
    Forget,
    /// No reply (the request it names is answered when it completes).
    Interrupt,
    Destroy,
    /// Anything else: answered with ENOSYS.
    Other(u32),
}

/// A request with its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub unique: u64,
    pub nodeid: u64,
    pub req: Request,
}

/// Parses the request in `buf` (exactly what one read returned).
pub fn parse(buf: &[u8]) -> Result<Incoming, &'static str> {
    let len = u32_at(buf, 0).ok_or("short FUSE header")? as usize;
    if len != buf.len() || len < IN_HEADER_LEN {
        return Err("FUSE request length does not match the read");
    }
    let opcode = u32_at(buf, 4).ok_or("short FUSE header")?;
    let unique = u64_at(buf, 8).ok_or("short FUSE header")?;
    let nodeid = u64_at(buf, 16).ok_or("short FUSE header")?;
    let b = &buf[IN_HEADER_LEN..];
    let short = "short FUSE request body";
    let req = match opcode {
        op::INIT => Request::Init {
            major: u32_at(b, 0).ok_or(short)?,
            minor: u32_at(b, 4).ok_or(short)?,
            max_readahead: u32_at(b, 8).ok_or(short)?,
            flags: u32_at(b, 12).ok_or(short)?,
        },
        op::GETATTR => Request::Getattr,
        op::SETATTR => {
            let valid = u32_at(b, 0).ok_or(short)?;
            let size = u64_at(b, 16).ok_or(short)?;
            Request::Setattr {
                size: (valid & FATTR_SIZE != 0).then_some(size),
            }
        }
        op::OPEN => Request::Open {
            flags: u32_at(b, 0).ok_or(short)?,
        },
        op::READ => Request::Read {
            offset: u64_at(b, 8).ok_or(short)?,
            size: u32_at(b, 16).ok_or(short)?,
        },
        op::WRITE => {
            // fuse_write_in is 40 bytes (since 7.9), the data follows.
            let offset = u64_at(b, 8).ok_or(short)?;
            let size = u32_at(b, 16).ok_or(short)? as usize;
            let start = IN_HEADER_LEN + 40;
            if buf.len() < start || buf.len() - start != size {
                return Err("FUSE write size does not match its data");
            }
            Request::Write {
                offset,
                data: start..start + size,
            }
        }
        op::FSYNC => Request::Fsync,
        op::FLUSH => Request::Flush,
        op::RELEASE => Request::Release,
        op::STATFS => Request::Statfs,
        op::FALLOCATE => Request::Fallocate {
            offset: u64_at(b, 8).ok_or(short)?,
            length: u64_at(b, 16).ok_or(short)?,
            mode: u32_at(b, 24).ok_or(short)?,
        },
        op::FORGET | op::BATCH_FORGET => Request::Forget,
        op::INTERRUPT => Request::Interrupt,
        op::DESTROY => Request::Destroy,
        other => Request::Other(other),
    };
    let _ = u16_at; // (total_extlen, unused: no extensions are asked for)
    Ok(Incoming {
        unique,
        nodeid,
        req,
    })
}

/// `fuse_init_out` (64 bytes).
pub fn init_out(flags: u32, max_write: u32, max_pages: u16, max_background: u16) -> Vec<u8> {
    let mut o = vec![0u8; 64];
    o[0..4].copy_from_slice(&MAJOR.to_le_bytes());
    o[4..8].copy_from_slice(&MINOR.to_le_bytes());
    o[8..12].copy_from_slice(&max_write.to_le_bytes()); // max_readahead
    o[12..16].copy_from_slice(&flags.to_le_bytes());
    o[16..18].copy_from_slice(&max_background.to_le_bytes());
    o[18..20].copy_from_slice(&(max_background - max_background / 4).to_le_bytes());
    o[20..24].copy_from_slice(&max_write.to_le_bytes());
    o[24..28].copy_from_slice(&1u32.to_le_bytes()); // time_gran
    o[28..30].copy_from_slice(&max_pages.to_le_bytes());
    o
}

/// The one file's attributes.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub size: u64,
    pub read_only: bool,
}

/// How long the kernel may cache attributes: the size never changes while
/// a device is up.
const ATTR_VALID_S: u64 = 3600;

fn attr(a: Attr) -> Vec<u8> {
    let mut o = vec![0u8; 88];
    o[0..8].copy_from_slice(&1u64.to_le_bytes()); // ino
    o[8..16].copy_from_slice(&a.size.to_le_bytes());
    o[16..24].copy_from_slice(&a.size.div_ceil(512).to_le_bytes());
    let mode: u32 = 0o100000 | if a.read_only { 0o400 } else { 0o600 };
    o[60..64].copy_from_slice(&mode.to_le_bytes());
    o[64..68].copy_from_slice(&1u32.to_le_bytes()); // nlink
    o[80..84].copy_from_slice(&4096u32.to_le_bytes()); // blksize
    o
}

/// `fuse_attr_out`.
pub fn attr_out(a: Attr) -> Vec<u8> {
    let mut o = vec![0u8; 16];
    o[0..8].copy_from_slice(&ATTR_VALID_S.to_le_bytes());
    o.extend(attr(a));
    o
}

/// `fuse_open_out`.
pub fn open_out(fh: u64, open_flags: u32) -> Vec<u8> {
    let mut o = vec![0u8; 16];
    o[0..8].copy_from_slice(&fh.to_le_bytes());
    o[8..12].copy_from_slice(&open_flags.to_le_bytes());
    o
}

/// `fuse_write_out`.
pub fn write_out(size: u32) -> Vec<u8> {
    let mut o = vec![0u8; 8];
    o[0..4].copy_from_slice(&size.to_le_bytes());
    o
}

/// `fuse_statfs_out`: one file, no free room for others.
pub fn statfs_out(a: Attr) -> Vec<u8> {
    let mut o = vec![0u8; 80];
    o[0..8].copy_from_slice(&a.size.div_ceil(4096).to_le_bytes()); // blocks
    o[24..32].copy_from_slice(&1u64.to_le_bytes()); // files
    o[40..44].copy_from_slice(&4096u32.to_le_bytes()); // bsize
    o[44..48].copy_from_slice(&255u32.to_le_bytes()); // namelen
    o[48..52].copy_from_slice(&4096u32.to_le_bytes()); // frsize
    o
}

/// The device end of one FUSE mount.
pub struct FuseDev {
    fd: OwnedFd,
}

impl FuseDev {
    /// Opens `/dev/fuse` and mounts a file system whose root is a regular
    /// file on `mountpoint` (an existing regular file). Non-blocking.
    pub fn mount(mountpoint: &Path, read_only: bool) -> io::Result<FuseDev> {
        let dev = CString::new("/dev/fuse").expect("no NUL");
        // SAFETY: open(2) with a valid C string.
        let fd = unsafe {
            libc::open(
                dev.as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let target = CString::new(mountpoint.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let opts = CString::new(format!(
            "fd={},rootmode=100000,user_id=0,group_id=0,allow_other",
            fd.as_raw_fd()
        ))
        .expect("no NUL");
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if read_only {
            flags |= libc::MS_RDONLY;
        }
        // SAFETY: mount(2) with valid C strings.
        let r = unsafe {
            libc::mount(
                c"share-member".as_ptr(),
                target.as_ptr(),
                c"fuse.share-member".as_ptr(),
                flags,
                opts.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FuseDev { fd })
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Reads one request into `buf`; `Ok(None)` when none is waiting.
    /// `ENODEV`: the file system was unmounted or the connection aborted.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: a read into a buffer we own, of its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                // The request was interrupted and withdrawn while we read.
                Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                _ => return Err(e),
            }
        }
    }

    /// Answers request `unique` with `error` (0 or a negative errno) and
    /// the body parts. `ENOENT` from the kernel (the request was withdrawn
    /// after an interrupt) is not an error.
    pub fn reply(&self, unique: u64, error: i32, body: &[&[u8]]) -> io::Result<()> {
        let iov: Vec<libc::iovec> = body
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: each iovec is a borrowed buffer, readable for its length
        // for the whole call.
        unsafe { self.reply_iov(unique, error, &iov) }
    }

    /// Answers request `unique` with success and `body` straight from
    /// shared memory (a slot's pages, granted to the disk server): the
    /// kernel copies it into the reader's pages, the only copy in this
    /// domain. No `&[u8]` is formed over it, and nothing here reads it.
    pub fn reply_shared(&self, unique: u64, body: &SharedMem<'_>) -> io::Result<()> {
        let iov = [libc::iovec {
            iov_base: body.as_ptr().cast(),
            iov_len: body.len(),
        }];
        // SAFETY: the window is mapped and readable for its length for its
        // lifetime, which outlives this call (`SharedMem`'s contract); the
        // kernel only reads it, with its own copy routine, not a Rust
        // access. A server writing those pages meanwhile changes only the
        // data the kernel hands on, which nobody here decides on.
        unsafe { self.reply_iov(unique, 0, &iov) }
    }

    /// Writes the reply header and `body` in one `writev`.
    ///
    /// # Safety
    /// Every iovec of `body` must point to memory readable for its length
    /// for the whole call.
    unsafe fn reply_iov(&self, unique: u64, error: i32, body: &[libc::iovec]) -> io::Result<()> {
        let len = OUT_HEADER_LEN + body.iter().map(|b| b.iov_len).sum::<usize>();
        let mut hdr = [0u8; OUT_HEADER_LEN];
        hdr[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        hdr[4..8].copy_from_slice(&error.to_le_bytes());
        hdr[8..16].copy_from_slice(&unique.to_le_bytes());
        let mut iov = Vec::with_capacity(1 + body.len());
        iov.push(libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        });
        iov.extend_from_slice(body);
        // SAFETY: the header lives across the call, the body's memory is
        // readable for the call (this function's contract); the kernel only
        // reads them.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Detaches whatever is mounted on `path` (a FUSE file left by a member
/// that died, or ours at teardown); errors (nothing mounted) are ignored.
pub fn unmount(path: &Path) {
    if let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) {
        // SAFETY: umount2(2) with a valid C string.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; IN_HEADER_LEN];
        b[0..4].copy_from_slice(&((IN_HEADER_LEN + body.len()) as u32).to_le_bytes());
        b[4..8].copy_from_slice(&opcode.to_le_bytes());
        b[8..16].copy_from_slice(&unique.to_le_bytes());
        b[16..24].copy_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn reads_writes_and_init_parse() {
        let mut body = vec![0u8; 40];
        body[8..16].copy_from_slice(&4096u64.to_le_bytes());
        body[16..20].copy_from_slice(&8192u32.to_le_bytes());
        let r = parse(&req(op::READ, 7, &body)).unwrap();
        assert_eq!(r.unique, 7);
        assert_eq!(
            r.req,
            Request::Read {
                offset: 4096,
                size: 8192
            }
        );
        let mut w = body.clone();
        w[16..20].copy_from_slice(&3u32.to_le_bytes());
        w.extend_from_slice(&[1, 2, 3]);
        let b = req(op::WRITE, 8, &w);
        let Request::Write { offset, data } = parse(&b).unwrap().req else {
            panic!()
        };
        assert_eq!((offset, &b[data]), (4096, &[1u8, 2, 3][..]));
        let mut i = vec![0u8; 64];
        i[0..4].copy_from_slice(&7u32.to_le_bytes());
        i[4..8].copy_from_slice(&41u32.to_le_bytes());
        assert!(matches!(
            parse(&req(op::INIT, 1, &i)).unwrap().req,
            Request::Init {
                major: 7,
                minor: 41,
                ..
            }
        ));
    }

    #[test]
    fn lengths_are_checked() {
        // The header's length must be what was read.
        let mut b = req(op::GETATTR, 1, &[0; 16]);
        b.push(0);
        assert!(parse(&b).is_err());
        assert!(parse(&[0u8; 10]).is_err());
        // A write whose size field lies about its data.
        let mut w = vec![0u8; 40];
        w[16..20].copy_from_slice(&100u32.to_le_bytes());
        w.extend_from_slice(&[0; 10]);
        assert!(parse(&req(op::WRITE, 2, &w)).is_err());
        // A body too short for its fields.
        assert!(parse(&req(op::READ, 3, &[0; 8])).is_err());
        assert_eq!(parse(&req(1234, 4, &[])).unwrap().req, Request::Other(1234));
    }

    /// A reply from shared memory reaches the kernel as one message: the
    /// header (length, error 0, unique) then the window's bytes, as
    /// `reply` sends a private body. A `SOCK_SEQPACKET` pair stands in for
    /// `/dev/fuse`.
    #[test]
    fn replies_from_shared_memory_are_whole() {
        let mut fds = [0i32; 2];
        // SAFETY: socketpair(2) into a two-element array.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: descriptors just made, owned by nobody else.
        let (dev, peer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let dev = FuseDev { fd: dev };
        let mut pages: Vec<u8> = (0..3 * 4096).map(|i| (i * 7) as u8).collect();
        let want = pages[4096..4096 + 5000].to_vec();
        let mem = SharedMem::from_slice(&mut pages);
        dev.reply_shared(42, &mem.slice(4096, 5000).unwrap())
            .unwrap();
        dev.reply(43, -5, &[]).unwrap();
        let mut got = vec![0u8; 8192];
        let recv = |buf: &mut [u8]| {
            // SAFETY: a read into a buffer we own, of its length.
            let n = unsafe { libc::read(peer.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            assert!(n >= 0);
            n as usize
        };
        let n = recv(&mut got);
        assert_eq!(n, OUT_HEADER_LEN + 5000);
        assert_eq!(u32_at(&got, 0), Some(n as u32));
        assert_eq!(u32_at(&got, 4), Some(0));
        assert_eq!(u64_at(&got, 8), Some(42));
        assert!(got[OUT_HEADER_LEN..n] == want[..]);
        let n = recv(&mut got);
        assert_eq!(n, OUT_HEADER_LEN);
        assert_eq!(u32_at(&got, 4), Some((-5i32) as u32));
        assert_eq!(u64_at(&got, 8), Some(43));
    }

    #[test]
    fn replies_have_the_kernel_sizes() {
        assert_eq!(init_out(0, 131072, 32, 64).len(), 64);
        let a = attr_out(Attr {
            size: 1 << 20,
            read_only: true,
        });
        assert_eq!(a.len(), 104);
        assert_eq!(u32_at(&a, 16 + 60), Some(0o100400));
        assert_eq!(open_out(1, 0).len(), 16);
        assert_eq!(
            statfs_out(Attr {
                size: 0,
                read_only: false
            })
            .len(),
            80
        );
    }
}
