//! What the member needs of its platform beyond `share_hal::Platform`: a
//! descriptor to poll with its TAP devices, its vdevice page, and the one
//! bootstrap key (`data/vdevice`) with a lock that makes it the domain's
//! only owner.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use blkback_uk::client::Buffer;
use share_hal::platform::{Access, EventChannels, GrantRef, PageBlock, Platform, Port, DOM0};
use share_hal::vdevice::VdeviceBus;
use share_hal::wire::vdevice::BOOTSTRAP_KEY;
use share_hal::{DomId, Error, SharedMem};
use share_linux::{GrantedPages, LinuxXen};
use share_sim::{SimPages, SimPlatform, SimStore};

use crate::xenbus::XenBus;

/// A platform the member runs on.
pub trait Host: Platform + Sized {
    type BusPage: PageBlock;

    /// Allocates the vdevice page, granted to dom0, and dom0's port.
    fn create_bus(&mut self, entries: u16) -> Result<VdeviceBus<Self::BusPage>, Error>;

    /// Readable when a trigger may have arrived.
    fn event_fd(&self) -> BorrowedFd<'_>;

    /// Collects the ports that fired, without sleeping.
    fn take_fired(&mut self, fired: &mut dyn FnMut(Port)) -> Result<(), Error>;

    /// How long the event loop looks at its descriptors without sleeping
    /// before it sleeps in poll(2) (0: at once).
    fn spin_ns(&self) -> u64 {
        0
    }

    /// Pages granted to one domain (a disk's slots).
    type Granted: Granted;

    /// Allocates `count` zeroed pages granted to `to`. Not
    /// `Platform::grant`: Linux userspace cannot grant a page it already
    /// has, only fresh ones from gntalloc.
    fn grant_pages(
        &mut self,
        to: DomId,
        count: usize,
        access: Access,
    ) -> Result<Self::Granted, Error>;

    /// Ends the grants of `g`. A page the peer still uses is never reused
    /// under it (kept until the peer lets go, or forever).
    fn end_grants(&mut self, g: Self::Granted);
}

/// Pages this domain granted to another one.
pub trait Granted {
    fn mem(&self) -> SharedMem<'_>;
    /// The grant reference of each page, in order.
    fn grefs(&self) -> &[GrantRef];
}

impl Granted for Buffer<SimPlatform> {
    fn mem(&self) -> SharedMem<'_> {
        Buffer::mem(self)
    }

    fn grefs(&self) -> &[GrantRef] {
        Buffer::grefs(self)
    }
}

impl Granted for GrantedPages {
    fn mem(&self) -> SharedMem<'_> {
        GrantedPages::mem(self)
    }

    fn grefs(&self) -> &[GrantRef] {
        GrantedPages::grefs(self)
    }
}

fn no_sleep<P: EventChannels>(p: &mut P, fired: &mut dyn FnMut(Port)) -> Result<(), Error> {
    // A deadline in the past: the platform collects what is pending and
    // returns TimedOut instead of sleeping when nothing is.
    match p.wait(Some(0), fired) {
        Ok(()) | Err(Error::TimedOut) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Host for SimPlatform {
    type BusPage = SimPages;

    /// The simulation's (share-sim's `XEN_SHARE_SIM_SPIN_NS`): its other
    /// domains are processes of the same machine, answering within
    /// microseconds when busy.
    fn spin_ns(&self) -> u64 {
        SimPlatform::spin_ns(self)
    }

    fn create_bus(&mut self, entries: u16) -> Result<VdeviceBus<SimPages>, Error> {
        VdeviceBus::create(self, entries)
    }

    fn event_fd(&self) -> BorrowedFd<'_> {
        SimPlatform::event_fd(self)
    }

    fn take_fired(&mut self, fired: &mut dyn FnMut(Port)) -> Result<(), Error> {
        // Drained before the scan: a trigger after this read signals the
        // eventfd again, so poll(2) wakes for it.
        let mut b = [0u8; 8];
        // SAFETY: an 8-byte read into a stack buffer; the eventfd is
        // non-blocking, so an empty counter is EAGAIN, ignored.
        let _ = unsafe {
            libc::read(
                SimPlatform::event_fd(self).as_raw_fd(),
                b.as_mut_ptr().cast(),
                b.len(),
            )
        };
        no_sleep(self, fired)
    }

    type Granted = Buffer<SimPlatform>;

    fn grant_pages(
        &mut self,
        to: DomId,
        count: usize,
        access: Access,
    ) -> Result<Buffer<SimPlatform>, Error> {
        Buffer::new(self, to, count, access)
    }

    fn end_grants(&mut self, g: Buffer<SimPlatform>) {
        // A grant still in use keeps its pages (Buffer::release).
        let _ = g.release(self);
    }
}

impl Host for LinuxXen {
    type BusPage = GrantedPages;

    /// Linux userspace grants only fresh pages: the vdevice page comes from
    /// gntalloc, granted to dom0 read-write from birth.
    fn create_bus(&mut self, entries: u16) -> Result<VdeviceBus<GrantedPages>, Error> {
        let page = self.alloc_granted(DOM0, 1, Access::ReadWrite)?;
        let gref = *page.grefs().first().ok_or(Error::OutOfMemory)?;
        let port = self.alloc_unbound(DOM0)?;
        let domid = self.domid();
        VdeviceBus::with_granted_page(page, gref, port, domid, entries).inspect_err(|_| {
            let _ = self.close(port);
        })
    }

    fn event_fd(&self) -> BorrowedFd<'_> {
        LinuxXen::event_fd(self)
    }

    fn take_fired(&mut self, fired: &mut dyn FnMut(Port)) -> Result<(), Error> {
        no_sleep(self, fired)
    }

    type Granted = GrantedPages;

    fn grant_pages(
        &mut self,
        to: DomId,
        count: usize,
        access: Access,
    ) -> Result<GrantedPages, Error> {
        self.alloc_granted(to, count, access)
    }

    fn end_grants(&mut self, g: GrantedPages) {
        // gntalloc ends the grants; Linux keeps a page the peer still maps
        // until it unmaps it.
        drop(g);
    }
}

/// Where the domain's bootstrap key lives.
pub enum KeyStore {
    /// The simulation's store next to the broker's socket.
    Sim { store: SimStore, domid: DomId },
    /// xenstore, through `/dev/xen/xenbus`; the key relative to the
    /// domain's home.
    Xen(XenBus),
}

impl KeyStore {
    pub fn read(&mut self) -> io::Result<Option<String>> {
        match self {
            KeyStore::Sim { store, domid } => store.read(*domid, BOOTSTRAP_KEY).map_err(to_io),
            KeyStore::Xen(xs) => Ok(xs
                .read(BOOTSTRAP_KEY)?
                .map(|v| String::from_utf8_lossy(&v).into_owned())),
        }
    }

    pub fn write(&mut self, value: &str) -> io::Result<()> {
        match self {
            KeyStore::Sim { store, domid } => {
                store.write(*domid, BOOTSTRAP_KEY, value).map_err(to_io)
            }
            KeyStore::Xen(xs) => xs.write(BOOTSTRAP_KEY, value.as_bytes()),
        }
    }

    pub fn remove(&mut self) -> io::Result<()> {
        match self {
            KeyStore::Sim { store, domid } => store.remove(*domid, BOOTSTRAP_KEY).map_err(to_io),
            KeyStore::Xen(xs) => xs.remove(BOOTSTRAP_KEY),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            KeyStore::Sim { store, domid } => format!(
                "{} (sim store of domain {domid})",
                store
                    .dir()
                    .join(domid.to_string())
                    .join(BOOTSTRAP_KEY)
                    .display()
            ),
            KeyStore::Xen(_) => format!("xenstore {BOOTSTRAP_KEY} of this domain"),
        }
    }

    /// Where disks appear (FUSE files, links to block devices): next to
    /// the key on the simulation, `/run/share-member` on Xen.
    pub fn default_run_dir(&self) -> PathBuf {
        match self {
            KeyStore::Sim { store, domid } => store.dir().join(domid.to_string()),
            KeyStore::Xen(_) => PathBuf::from("/run/share-member"),
        }
    }

    /// The lock file that marks the owner: next to the key on the
    /// simulation, in `/run` on Xen (one Linux per domain).
    pub fn default_lock_path(&self) -> PathBuf {
        match self {
            KeyStore::Sim { store, domid } => {
                store.dir().join(domid.to_string()).join("member.lock")
            }
            KeyStore::Xen(_) => PathBuf::from("/run/share-member.lock"),
        }
    }
}

fn to_io(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The domain's one owner of its vdevice page.
///
/// How a published key is judged: a running `share-member` holds an
/// exclusive `flock` on the lock file, with its pid inside, for as long as
/// it runs; the kernel drops the lock when the process dies, however it
/// dies. A clean exit removes the key and then the file.
/// - lock held by someone else: another member runs; refused.
/// - key published, lock file present but not locked: the previous
///   `share-member` died without cleaning up (its grants and ports died
///   with it); the key is stale and taken over.
/// - key published and no lock file: another program (a kernel module, a
///   unikernel) owns the page; refused.
pub struct OwnerLock {
    file: File,
    path: PathBuf,
}

/// What [`OwnerLock::acquire`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No key published.
    Free,
    /// A stale key of a member that died; the pid it wrote, if readable.
    Stale(Option<u32>),
}

impl OwnerLock {
    /// Takes the lock at `path` unless the domain's page has an owner;
    /// `published` reads the bootstrap key.
    pub fn acquire(
        path: &Path,
        published: impl FnOnce() -> io::Result<Option<String>>,
    ) -> Result<(OwnerLock, Found), String> {
        let existed = path.exists();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("opening the owner lock {}: {e}", path.display()))?;
        let mut old = String::new();
        let _ = file.read_to_string(&mut old);
        let old_pid = old.trim().parse::<u32>().ok();
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.kind() {
                io::ErrorKind::WouldBlock => format!(
                    "another share-member{} owns this domain's vdevice page (lock {} is held); stop it first",
                    old_pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                    path.display()
                ),
                _ => format!("locking {}: {e}", path.display()),
            });
        }
        let mut lock = OwnerLock {
            file,
            path: path.to_path_buf(),
        };
        let key = match published() {
            Ok(k) => k,
            Err(e) => {
                lock.release();
                return Err(format!("reading the bootstrap key: {e}"));
            }
        };
        let found = match (key, existed) {
            (None, _) => Found::Free,
            (Some(_), true) => Found::Stale(old_pid),
            (Some(v), false) => {
                lock.release();
                return Err(format!(
                    "the bootstrap key is already published ({:?}) and no share-member lock ({}) \
                     says who did: another program owns this domain's vdevice page",
                    v.trim(),
                    path.display()
                ));
            }
        };
        let pid = std::process::id().to_string();
        let written = lock
            .file
            .set_len(0)
            .and_then(|()| lock.file.rewind())
            .and_then(|()| lock.file.write_all(pid.as_bytes()));
        if let Err(e) = written {
            lock.release();
            return Err(format!("writing {}: {e}", path.display()));
        }
        Ok((lock, found))
    }

    /// Removes the lock file (after the key is gone); the lock itself
    /// ends when the descriptor closes.
    pub fn release(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "share-member-lock-{tag}-{}/member.lock",
            std::process::id()
        ))
    }

    #[test]
    fn free_then_held_then_released() {
        let p = tmp("held");
        let (mut a, found) = OwnerLock::acquire(&p, || Ok(None)).unwrap();
        assert_eq!(found, Found::Free);
        let e = OwnerLock::acquire(&p, || Ok(Some("gref=1 port=2".into())))
            .err()
            .unwrap();
        assert!(e.contains("another share-member"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        a.release();
        drop(a);
        assert!(!p.exists());
        let _ = fs::remove_dir_all(p.parent().unwrap());
    }

    #[test]
    fn a_stale_key_is_taken_over_a_foreign_one_refused() {
        let p = tmp("stale");
        // A lock file left by a member that died: present, unlocked.
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "4242").unwrap();
        let (mut a, found) = OwnerLock::acquire(&p, || Ok(Some("gref=1 port=2".into()))).unwrap();
        assert_eq!(found, Found::Stale(Some(4242)));
        a.release();
        drop(a);
        // No lock file: someone else published the key.
        let e = OwnerLock::acquire(&p, || Ok(Some("gref=1 port=2".into())))
            .err()
            .unwrap();
        assert!(e.contains("another program"), "{e}");
        assert!(!p.exists(), "a refused start leaves no lock file behind");
        let _ = fs::remove_dir_all(p.parent().unwrap());
    }
}
