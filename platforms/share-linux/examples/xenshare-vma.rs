//! `/dev/xenshare` mappings against the VMA operations that copy or move
//! them (rig scenario `xenshare-vma`, issue 18 item 1).
//!
//! A mapping of the device holds one reference to its object. A VMA copied
//! by `fork()` or moved by `mremap()` without one lets the object be freed
//! while a process still maps it. This program does, on a page block of its
//! own (ALLOC) with one page granted to a peer:
//!
//! 1. map, `fork()`; the child reports whether it inherited the mapping and
//!    exits (the device sets `VM_DONTCOPY`: it must not have it);
//! 2. RELEASE while mapped, then write and read the mapping (it must stay
//!    the object's until `munmap`), then `munmap`;
//! 3. map again, `mremap()` it to another address (`MREMAP_MAYMOVE |
//!    MREMAP_FIXED`, refused with `EINVAL`) and with `MREMAP_DONTUNMAP`
//!    (refused), check the data is still there, RELEASE, `munmap`;
//! 4. revoke the grant, close.
//!
//! Each check prints `ok: ...` or `FAILED: ...` and the run goes on; the
//! last line is `vma: N checks passed`, or the failures and exit status 1.
//! Whether the kernel stayed sound (no Oops, WARNING, BUG; no grant left)
//! is for the scenario to see: a use-after-free here shows up in `dmesg`,
//! not in this process.
use std::ffi::CStr;
use std::ptr;

use share_linux::xenshare::abi;

const PAGE: usize = 4096;
const PAGES: usize = 4;
const LEN: usize = PAGES * PAGE;

type Res<T> = Result<T, String>;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

struct Dev(libc::c_int);

impl Dev {
    fn open() -> Res<Dev> {
        let path: &CStr = c"/dev/xenshare";
        // SAFETY: a NUL-terminated path; the descriptor is owned by Dev.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(os_err("open /dev/xenshare (is xenshare.ko loaded?)"));
        }
        Ok(Dev(fd))
    }

    /// # Safety
    /// `arg` must be the structure `req` names (uapi/linux/xenshare.h).
    unsafe fn ioctl<T>(&self, req: u64, arg: &mut T, what: &str) -> Res<()> {
        // SAFETY: forwarded to the caller's contract; `arg` lives across
        // the call.
        if unsafe { libc::ioctl(self.0, req as libc::c_ulong, arg as *mut T) } < 0 {
            return Err(os_err(what));
        }
        Ok(())
    }

    fn alloc(&self) -> Res<u64> {
        let mut a = abi::Alloc {
            count: PAGES as u32,
            ..Default::default()
        };
        // SAFETY: `a` is `struct xenshare_alloc`.
        unsafe { self.ioctl(abi::IOC_ALLOC, &mut a, "ALLOC")? };
        Ok(a.offset)
    }

    fn release(&self, offset: u64) -> Res<()> {
        let mut r = abi::Release { offset };
        // SAFETY: `r` is `struct xenshare_release`.
        unsafe { self.ioctl(abi::IOC_RELEASE, &mut r, "RELEASE") }
    }

    fn grant(&self, page: u64, domid: u16) -> Res<u32> {
        let mut g = abi::Grant {
            page,
            domid,
            ..Default::default()
        };
        // SAFETY: `g` is `struct xenshare_grant`.
        unsafe { self.ioctl(abi::IOC_GRANT, &mut g, "GRANT")? };
        Ok(g.gref)
    }

    fn revoke(&self, gref: u32) -> Res<()> {
        let mut r = abi::Revoke { gref, pad: 0 };
        // SAFETY: `r` is `struct xenshare_revoke`.
        unsafe { self.ioctl(abi::IOC_REVOKE, &mut r, "REVOKE") }
    }

    fn map(&self, offset: u64) -> Res<*mut u8> {
        // SAFETY: a new shared mapping of the device; nothing else is at
        // the address the kernel picks.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.0,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err("mmap"));
        }
        Ok(p.cast())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(self.0) };
    }
}

fn unmap(p: *mut u8) -> Res<()> {
    // SAFETY: a mapping of LEN bytes this program made and no longer uses.
    if unsafe { libc::munmap(p.cast(), LEN) } != 0 {
        return Err(os_err("munmap"));
    }
    Ok(())
}

fn fill(p: *mut u8, seed: u8) {
    for i in 0..LEN {
        // SAFETY: p maps LEN writable bytes.
        unsafe { ptr::write_volatile(p.add(i), seed.wrapping_add((i / 7) as u8)) };
    }
}

fn holds(p: *const u8, seed: u8) -> bool {
    // SAFETY: p maps LEN readable bytes.
    (0..LEN).all(|i| unsafe { ptr::read_volatile(p.add(i)) } == seed.wrapping_add((i / 7) as u8))
}

/// Whether [p, p + LEN) is mapped in this process (madvise fails with
/// ENOMEM on an unmapped range).
fn mapped(p: *mut u8) -> bool {
    // SAFETY: MADV_NORMAL changes nothing; it only asks for the range.
    unsafe { libc::madvise(p.cast(), LEN, libc::MADV_NORMAL) == 0 }
}

/// fork(): the child exits 0 if it did not inherit the mapping, 3 if it
/// did (after reading it, as a process would).
fn child_inherits(p: *mut u8) -> Res<bool> {
    // SAFETY: single-threaded program; the child only calls madvise,
    // reads memory and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        let code = if mapped(p) {
            // SAFETY: mapped, per madvise.
            let _ = unsafe { ptr::read_volatile(p) };
            3
        } else {
            0
        };
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: our child's pid; status is a live int.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(os_err("waitpid"));
    }
    if !libc::WIFEXITED(status) {
        return Err(format!("the child ended with status {status:#x}"));
    }
    Ok(libc::WEXITSTATUS(status) == 3)
}

/// An address range of LEN bytes this process reserved (PROT_NONE), for
/// MREMAP_FIXED to aim at.
fn reserve() -> Res<*mut u8> {
    // SAFETY: a fresh anonymous reservation.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            LEN,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_err("mmap of a reservation"));
    }
    Ok(p.cast())
}

/// mremap of the whole mapping; the new address or the errno.
fn remap(p: *mut u8, flags: libc::c_int, to: *mut u8) -> Result<*mut u8, i32> {
    // SAFETY: p maps LEN bytes; `to` is our reservation; a refused call
    // changes nothing, a moved mapping is used at its new address only.
    let r = unsafe { libc::mremap(p.cast(), LEN, LEN, flags, to.cast::<libc::c_void>()) };
    if r == libc::MAP_FAILED {
        Err(errno())
    } else {
        Ok(r.cast())
    }
}

/// Checks passed and failed. A failed check does not stop the run: what
/// follows (RELEASE, munmap) is what would make a broken kernel show it.
struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, got: String) -> Res<()> {
        if ok {
            println!("ok: {what}: {got}");
            self.passed += 1;
        } else {
            println!("FAILED: {what}: got {got}");
            self.failed += 1;
        }
        Ok(())
    }
}

fn run(peer: u16) -> Res<u32> {
    let dev = Dev::open()?;
    let mut c = Checks {
        passed: 0,
        failed: 0,
    };

    // 1. fork.
    let off = dev.alloc()?;
    let gref = dev.grant(off / PAGE as u64, peer)?;
    let p = dev.map(off)?;
    fill(p, 0x11);
    let inherited = child_inherits(p)?;
    c.check(
        "a fork() child does not inherit the mapping",
        !inherited,
        format!("inherited {inherited}"),
    )?;
    // 2. RELEASE under the mapping: it stays the object's until munmap.
    dev.release(off)?;
    fill(p, 0x22);
    c.check(
        "after the child's exit and RELEASE the mapping still holds its pages",
        holds(p, 0x22),
        "data intact".into(),
    )?;
    unmap(p)?;

    // 1b. A process may ask for the mapping to be inherited after all
    // (MADV_DOFORK clears VM_DONTCOPY where VM_IO is not set, as for a
    // block): the child's copy then holds a reference of its own.
    let off = dev.alloc()?;
    let p = dev.map(off)?;
    fill(p, 0x44);
    // SAFETY: p maps LEN bytes; MADV_DOFORK only changes fork's behaviour.
    let dofork = unsafe { libc::madvise(p.cast(), LEN, libc::MADV_DOFORK) } == 0;
    let inherited = child_inherits(p)?;
    c.check(
        "after MADV_DOFORK a child inherits the mapping and exits with it",
        inherited == dofork,
        format!("MADV_DOFORK accepted {dofork}, inherited {inherited}"),
    )?;
    dev.release(off)?;
    c.check(
        "the parent's mapping outlives the child's copy and RELEASE",
        holds(p, 0x44),
        "data intact".into(),
    )?;
    unmap(p)?;

    // 3. mremap.
    let off = dev.alloc()?;
    let p = dev.map(off)?;
    fill(p, 0x33);
    let to = reserve()?;
    let moved = remap(p, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to);
    let at = match moved {
        Ok(q) => q,
        Err(_) => p,
    };
    c.check(
        "mremap() moving the mapping is refused with EINVAL",
        moved == Err(libc::EINVAL),
        format!("{moved:?}"),
    )?;
    let dontunmap = remap(at, libc::MREMAP_MAYMOVE | libc::MREMAP_DONTUNMAP, to);
    c.check(
        "mremap(MREMAP_DONTUNMAP) of the mapping is refused",
        dontunmap.is_err(),
        format!("{dontunmap:?}"),
    )?;
    c.check(
        "the mapping is where it was, with its data",
        mapped(p) && holds(p, 0x33),
        format!("mapped {}", mapped(p)),
    )?;
    dev.release(off)?;
    unmap(at)?;
    if let Ok(q) = dontunmap {
        unmap(q)?;
    }
    if moved.is_err() {
        unmap(to)?;
    }

    // 4. The grant ends; the file closes with nothing left.
    dev.revoke(gref)?;
    c.check("the grant ends", true, format!("revoked ref {gref}"))?;
    drop(dev);
    if c.failed > 0 {
        return Err(format!("{} checks passed, {} failed", c.passed, c.failed));
    }
    Ok(c.passed)
}

const USAGE: &str = "usage: xenshare-vma --peer DOMID";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let peer = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("--peer"), Some(p)) => p.parse::<u16>().ok(),
        _ => None,
    };
    let Some(peer) = peer else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    match run(peer) {
        Ok(n) => println!("vma: {n} checks passed"),
        Err(e) => {
            eprintln!("xenshare-vma: {e}");
            std::process::exit(1);
        }
    }
}
