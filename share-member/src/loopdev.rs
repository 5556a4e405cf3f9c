//! Loop devices: a block device over the disk's FUSE file.
//!
//! `LOOP_CONFIGURE` (Linux 5.8) sets file, flags and block size in one
//! call. Flags: `DIRECT_IO` so the loop driver hands each request to the
//! FUSE file as an asynchronous direct I/O (no second page cache, many
//! requests in flight); `AUTOCLEAR` so the device frees itself when its
//! last user closes it (the member holds it open while the entry lives);
//! `READ_ONLY` for read-only disks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_config` (304 bytes): fd, block_size, loop_info64,
/// reserved.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: [u8; 232],
    reserved: [u64; 8],
}

/// Offset of `lo_flags` in `struct loop_info64`.
const INFO_FLAGS: usize = 52;

/// A configured loop device, held open.
pub struct LoopDev {
    file: File,
    path: PathBuf,
    direct_io: bool,
}

impl LoopDev {
    /// Puts a free loop device over `backing`. Loop devices are shared with
    /// the rest of the machine: a device taken between GET_FREE and
    /// CONFIGURE (`EBUSY`) makes us try the next free one, a bounded number
    /// of times. Direct I/O is asked for; if the backing file refuses it,
    /// the device is configured without.
    ///
    /// The device must come out with `bytes` bytes: the loop driver takes
    /// the backing file's size as the kernel last saw it, and a FUSE root
    /// inode starts with size 0 until something asks for its attributes
    /// (Linux 6.1 does not on open: a 0-sector device on Debian's kernel).
    /// So the file is stat'ed first, and a device of another size is set
    /// to the file's size once more (`LOOP_SET_CAPACITY`) before giving up.
    pub fn attach(backing: &Path, read_only: bool, bytes: u64) -> io::Result<LoopDev> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(backing)?;
        let seen = file.metadata()?.len();
        if seen != bytes {
            return Err(io::Error::other(format!(
                "the FUSE file has {seen} bytes, the disk {bytes}"
            )));
        }
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        let mut last = io::Error::from(io::ErrorKind::ResourceBusy);
        for _ in 0..16 {
            // SAFETY: an ioctl without argument on a descriptor we own.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match OpenOptions::new()
                .read(true)
                .write(!read_only)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(d) => d,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let mut flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
            if read_only {
                flags |= LO_FLAGS_READ_ONLY;
            }
            let mut r = configure(&dev, &file, flags);
            let mut direct_io = true;
            if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
                direct_io = false;
                r = configure(&dev, &file, flags & !LO_FLAGS_DIRECT_IO);
            }
            match r {
                Ok(()) => {
                    // The driver may have fallen back to buffered I/O
                    // quietly; sysfs says what it does.
                    let sys = format!("/sys/block/loop{n}/loop/dio");
                    if let Ok(v) = std::fs::read_to_string(sys) {
                        direct_io = v.trim() == "1";
                    }
                    let l = LoopDev {
                        file: dev,
                        path,
                        direct_io,
                    };
                    l.check_size(n, bytes)?;
                    return Ok(l);
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The device has `bytes` bytes (sysfs), after one `LOOP_SET_CAPACITY`
    /// if it had not. On failure the device is let go (AUTOCLEAR frees it).
    fn check_size(&self, n: i32, bytes: u64) -> io::Result<()> {
        let sys = format!("/sys/block/loop{n}/size");
        let size = || -> io::Result<u64> {
            std::fs::read_to_string(&sys)?
                .trim()
                .parse::<u64>()
                .map(|s| s * 512)
                .map_err(io::Error::other)
        };
        if size()? == bytes {
            return Ok(());
        }
        // SAFETY: an ioctl without argument on a descriptor we own.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_SET_CAPACITY, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        match size()? {
            s if s == bytes => Ok(()),
            s => Err(io::Error::other(format!(
                "{} has {s} bytes, the disk {bytes}",
                self.path.display()
            ))),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn direct_io(&self) -> bool {
        self.direct_io
    }

    /// Lets go of the device: with AUTOCLEAR it is freed once nobody else
    /// holds it (a file system still mounted on it keeps it until then).
    pub fn release(self) {
        drop(self.file);
    }
}

fn configure(dev: &File, backing: &File, flags: u32) -> io::Result<()> {
    let mut cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 512,
        info: [0; 232],
        reserved: [0; 8],
    };
    cfg.info[INFO_FLAGS..INFO_FLAGS + 4].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: LOOP_CONFIGURE reads a struct loop_config, which LoopConfig
    // lays out exactly (checked by the size test).
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loop_config_has_the_kernel_size() {
        assert_eq!(std::mem::size_of::<super::LoopConfig>(), 304);
    }
}
