//! The xenbus side of a PV frontend: finding a domain's devices of a class
//! (`device/<class>/<N>`), and the steps every frontend handshake shares
//! (read `backend` and `backend-id`, wait for the backend's state, read
//! its keys, write ours), as blkback-uk's `vbd` store and netback-uk's
//! uplink `vif`s run them against dom0's blkback and netback.
//!
//! Everything the backend writes in xenstore is hostile: numbers are
//! bounded and parsed strictly, the backend path must be an absolute,
//! printable, bounded `/local/domain/...` path, and every wait for a state
//! has a deadline (a backend that goes to Closing or Closed instead is an
//! error at once). Errors name the device and what failed.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use share_hal::{DomId, Error, Result};

use crate::abi::{XENBUS_STATE_CLOSED, XENBUS_STATE_CLOSING};

/// The xenstore operations a frontend needs (relative paths resolve
/// against the domain's home). share-pvh's client implements it (feature
/// `pvh`); tests play dom0 with a map.
pub trait Xenbus {
    fn read(&mut self, path: &str) -> Result<String>;
    fn write(&mut self, path: &str, value: &str) -> Result<()>;
    fn directory(&mut self, path: &str) -> Result<Vec<String>>;
}

#[cfg(all(target_arch = "x86_64", feature = "pvh"))]
impl Xenbus for share_pvh::XenStore {
    fn read(&mut self, path: &str) -> Result<String> {
        share_pvh::XenStore::read(self, path)
    }
    fn write(&mut self, path: &str, value: &str) -> Result<()> {
        share_pvh::XenStore::write(self, path, value)
    }
    fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        share_pvh::XenStore::directory(self, path)
    }
}

/// Between two reads of the backend's state.
pub const POLL_INTERVAL_NS: u64 = 50_000_000;
/// Longest xenstore path taken from the backend.
const MAX_PATH: usize = 256;
/// Longest number (u64 has 20 digits).
const MAX_NUMBER: usize = 20;

/// Why a device could not be connected: the device and what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError(pub String);

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `dev: what`.
pub fn device_error(dev: &str, what: impl core::fmt::Display) -> DeviceError {
    DeviceError(format!("{dev}: {what}"))
}

fn enoent(e: &Error) -> bool {
    matches!(e, Error::Hypervisor { code: -2, .. })
}

/// This domain's devices of `class` (`device/<class>/<name>`): each
/// name with its path, in the order xenstore lists them; none if the
/// directory is missing (no such device in the domain's config).
pub fn devices<X: Xenbus>(xs: &mut X, class: &str) -> Result<Vec<(String, String)>> {
    let dir = format!("device/{class}");
    match xs.directory(&dir) {
        Ok(names) => Ok(names
            .into_iter()
            .map(|n| {
                let path = format!("{dir}/{n}");
                (n, path)
            })
            .collect()),
        Err(e) if enoent(&e) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The number a device's path ends in (`device/vif/0`: 0).
pub fn device_number(dev: &str) -> Option<u16> {
    dev.rsplit('/').next()?.parse().ok()
}

/// A backend-written number, bounded and parsed strictly; `None` if the
/// key is absent.
pub fn read_num<X: Xenbus>(xs: &mut X, path: &str) -> core::result::Result<Option<u64>, String> {
    match xs.read(path) {
        Ok(v) => {
            let v = v.trim_end_matches('\0').trim();
            if v.len() > MAX_NUMBER {
                return Err(format!("{path}: value too long"));
            }
            v.parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{path}: {v:?} is not a number"))
        }
        Err(e) if enoent(&e) => Ok(None),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// A backend path: absolute, printable, bounded.
pub fn check_path(v: &str) -> bool {
    v.len() <= MAX_PATH
        && v.starts_with("/local/domain/")
        && v.bytes().all(|b| b.is_ascii_graphic())
}

/// One device's frontend during its handshake: its backend found and
/// checked, a deadline for every wait.
pub struct Frontend<'a, X: Xenbus> {
    xs: &'a mut X,
    dev: &'a str,
    backend_path: String,
    backend: DomId,
    deadline: u64,
    timeout_ns: u64,
    now: &'a dyn Fn() -> u64,
    sleep: &'a mut dyn FnMut(u64),
}

impl<'a, X: Xenbus> Frontend<'a, X> {
    /// Reads `dev`'s `backend` (a checked path) and `backend-id`; every
    /// later wait ends `timeout_ns` from now. `sleep(deadline)` pauses
    /// between polls of the backend's state.
    pub fn open(
        xs: &'a mut X,
        dev: &'a str,
        timeout_ns: u64,
        now: &'a dyn Fn() -> u64,
        sleep: &'a mut dyn FnMut(u64),
    ) -> core::result::Result<Self, DeviceError> {
        let backend_path = xs
            .read(&format!("{dev}/backend"))
            .map_err(|e| device_error(dev, format!("reading backend: {e}")))?;
        if !check_path(&backend_path) {
            return Err(device_error(dev, "the backend path is malformed"));
        }
        let backend = read_num(xs, &format!("{dev}/backend-id"))
            .map_err(|e| device_error(dev, e))?
            .and_then(|d| DomId::try_from(d).ok())
            .ok_or_else(|| device_error(dev, "no usable backend-id"))?;
        let deadline = now().saturating_add(timeout_ns);
        Ok(Frontend {
            xs,
            dev,
            backend_path,
            backend,
            deadline,
            timeout_ns,
            now,
            sleep,
        })
    }

    pub fn backend(&self) -> DomId {
        self.backend
    }

    pub fn backend_path(&self) -> &str {
        &self.backend_path
    }

    /// An error naming the device.
    pub fn error(&self, what: impl core::fmt::Display) -> DeviceError {
        device_error(self.dev, what)
    }

    /// Waits (polling, until the deadline) for the backend's state to be
    /// `want` or later and before Closing; returns it. `what` names the
    /// state in errors.
    pub fn wait_state(&mut self, want: u32, what: &str) -> core::result::Result<u32, DeviceError> {
        let path = format!("{}/state", self.backend_path);
        loop {
            match read_num(self.xs, &path).map_err(|e| self.error(e))? {
                Some(s) if s >= u64::from(want) && s < u64::from(XENBUS_STATE_CLOSING) => {
                    return Ok(s as u32)
                }
                Some(s)
                    if s == u64::from(XENBUS_STATE_CLOSING)
                        || s == u64::from(XENBUS_STATE_CLOSED) =>
                {
                    return Err(self.error(format!("the backend closed (state {s}) {what}")))
                }
                _ => {}
            }
            let t = (self.now)();
            if t >= self.deadline {
                return Err(self.error(format!(
                    "the backend did not get {what} within {} s",
                    self.timeout_ns / 1_000_000_000
                )));
            }
            (self.sleep)(t.saturating_add(POLL_INTERVAL_NS).min(self.deadline));
        }
    }

    /// A number the backend wrote in its directory; `None` if absent.
    pub fn backend_num(&mut self, key: &str) -> core::result::Result<Option<u64>, DeviceError> {
        let path = format!("{}/{key}", self.backend_path);
        read_num(self.xs, &path).map_err(|e| self.error(e))
    }

    /// Whether the backend offers feature `key`: its value is exactly 1
    /// (absent, malformed or anything else: no).
    pub fn offered(&mut self, key: &str) -> bool {
        self.backend_num(key).ok().flatten() == Some(1)
    }

    /// Writes `value` to the device's own `key`.
    pub fn write(&mut self, key: &str, value: &str) -> core::result::Result<(), DeviceError> {
        let path = format!("{}/{key}", self.dev);
        self.xs
            .write(&path, value)
            .map_err(|e| device_error(self.dev, format!("writing {key}: {e}")))
    }

    /// Reads the device's own `key` (written by the toolstack), if there.
    pub fn read_own(&mut self, key: &str) -> Option<String> {
        self.xs.read(&format!("{}/{key}", self.dev)).ok()
    }
}

#[cfg(test)]
mod tests;
