//! What the tool needs from the host besides the vdevice pages: which
//! domains run under which names, and giving a backend domain a file as a
//! Xen disk. In dom0 that is `xl` (main.rs); in the tests a fake list.

use std::path::Path;

use share_hal::platform::DomId;

/// A running domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub domid: DomId,
    pub name: String,
}

/// A file given to a backend domain as a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedDisk {
    /// The backend's virtual device name (`xvdb`, ...).
    pub vdev: String,
    /// Its disk index on the backend (the owner entries' param).
    pub index: u64,
}

pub trait Host {
    /// Every running domain.
    fn domains(&mut self) -> Result<Vec<DomainInfo>, String>;
    /// Gives `source` to `backend` as a disk. Its index is its position
    /// among the backend's disks, which blkback-uk numbers in the order it
    /// first sees them and never renumbers. So a disk is never taken away
    /// from a running backend (that would shift the positions of the disks
    /// after it, and an index could name another file): a destroyed disk
    /// stays given, unserved, until the backend restarts.
    fn attach_disk(
        &mut self,
        backend: DomId,
        source: &Path,
        read_only: bool,
    ) -> Result<AttachedDisk, String>;
    /// What names this host among others on one network: its
    /// `/etc/machine-id`, else this boot's id, else its host name (MACs
    /// made for uplinked LANs: [`crate::record::host_mac`]).
    fn machine_id(&self) -> String {
        [
            "/etc/machine-id",
            "/proc/sys/kernel/random/boot_id",
            "/etc/hostname",
        ]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_default()
    }
}

/// A domain named on the command line: an id or an `xl` name, resolved
/// against the running domains.
pub fn resolve<'a>(domains: &'a [DomainInfo], arg: &str) -> Option<&'a DomainInfo> {
    match arg.parse::<DomId>() {
        Ok(id) => domains.iter().find(|d| d.domid == id),
        Err(_) => domains.iter().find(|d| d.name == arg),
    }
}

pub fn by_name<'a>(domains: &'a [DomainInfo], name: &str) -> Option<&'a DomainInfo> {
    domains.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_resolve_to_running_domains() {
        let doms = vec![
            DomainInfo {
                domid: 0,
                name: "Domain-0".into(),
            },
            DomainInfo {
                domid: 7,
                name: "guest".into(),
            },
        ];
        assert_eq!(resolve(&doms, "0").unwrap().name, "Domain-0");
        assert_eq!(resolve(&doms, "guest").unwrap().domid, 7);
        assert!(resolve(&doms, "8").is_none());
        assert!(resolve(&doms, "nobody").is_none());
    }
}
