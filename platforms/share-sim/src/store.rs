//! The simulation's stand-in for xenstore: the one bootstrap key each
//! domain publishes (`data/vdevice`, docs/protocol.md), kept as files in a
//! folder next to the broker's socket so that separately started
//! processes (domains, dom0's tool) find each other.
//!
//! Like xenstore, it trusts the domain id the writer claims (the broker
//! does the same); the values are still parsed strictly by their readers.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use share_hal::error::{Error, Result};
use share_hal::platform::DomId;

/// Keys of simulated domains, under `<socket>.store/<domid>/<key>`.
#[derive(Clone, Debug)]
pub struct SimStore {
    dir: PathBuf,
}

fn os_err(op: &'static str, e: std::io::Error) -> Error {
    Error::Os {
        op,
        errno: e.raw_os_error().unwrap_or(0),
    }
}

/// Keys are relative paths of plain names (`data/vdevice`): no `..`, no
/// absolute path, nothing that leaves the domain's folder.
fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: "store key (relative path of [A-Za-z0-9-_.] names)",
        })
    }
}

impl SimStore {
    /// The store of the broker listening at `socket_path`.
    pub fn for_broker(socket_path: impl AsRef<Path>) -> Self {
        let mut dir = socket_path.as_ref().as_os_str().to_owned();
        dir.push(".store");
        SimStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, domid: DomId, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.dir.join(domid.to_string()).join(key))
    }

    /// Writes `value` atomically (a reader sees the old or the new value,
    /// never a torn one).
    pub fn write(&self, domid: DomId, key: &str, value: &str) -> Result<()> {
        let path = self.path(domid, key)?;
        let parent = path
            .parent()
            .ok_or(Error::InvalidArgument { what: "store key" })?;
        fs::create_dir_all(parent).map_err(|e| os_err("creating a sim store folder", e))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut f = fs::File::create(&tmp).map_err(|e| os_err("writing a sim store key", e))?;
        f.write_all(value.as_bytes())
            .map_err(|e| os_err("writing a sim store key", e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| os_err("publishing a sim store key", e))
    }

    /// The value of `key` of `domid`, or `None` when it was never written
    /// (or was removed).
    pub fn read(&self, domid: DomId, key: &str) -> Result<Option<String>> {
        match fs::read(self.path(domid, key)?) {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(os_err("reading a sim store key", e)),
        }
    }

    /// Removes `key` of `domid` (a domain going away); absent is fine.
    pub fn remove(&self, domid: DomId, key: &str) -> Result<()> {
        match fs::remove_file(self.path(domid, key)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(os_err("removing a sim store key", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove_and_bad_keys() {
        let sock = crate::temp_socket_path("store");
        let s = SimStore::for_broker(&sock);
        assert_eq!(s.read(3, "data/vdevice"), Ok(None));
        s.write(3, "data/vdevice", "gref=8 port=2").unwrap();
        s.write(3, "data/vdevice", "gref=9 port=2").unwrap();
        assert_eq!(
            s.read(3, "data/vdevice").unwrap().as_deref(),
            Some("gref=9 port=2")
        );
        assert_eq!(s.read(4, "data/vdevice"), Ok(None));
        for bad in ["", "/etc/passwd", "data/../../x", "a//b", "data/vd evice"] {
            assert!(s.write(3, bad, "x").is_err(), "{bad:?}");
        }
        s.remove(3, "data/vdevice").unwrap();
        s.remove(3, "data/vdevice").unwrap();
        assert_eq!(s.read(3, "data/vdevice"), Ok(None));
        let _ = fs::remove_dir_all(s.dir());
    }
}
