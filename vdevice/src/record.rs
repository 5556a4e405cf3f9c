//! The record that outlives the tool: the devices dom0 made and their
//! members, by domain name, so that `vdevice daemon` can give them back
//! after a domain restarts (and `vdevice --list` can name them).
//!
//! One JSON file (default [`DEFAULT_PATH`]), replaced atomically (temp
//! file, fsync, rename, directory fsync) so a crash leaves the old record
//! or the new one, never half of one. Every invocation that reads it to
//! change it holds an exclusive lock on `<path>.lock` for its whole run,
//! so two invocations (or the daemon and a command) never interleave.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use share_hal::platform::DomId;
use share_hal::wire::vdevice::{PolicyItem, PortPolicyRepr};

/// Where the record lives unless `--record` or `VDEVICE_RECORD` say
/// otherwise.
pub const DEFAULT_PATH: &str = "/var/lib/xen-share/vdevice.json";

/// The environment variable that overrides [`DEFAULT_PATH`].
pub const PATH_ENV: &str = "VDEVICE_RECORD";

/// The format version written; a record of another version is refused.
pub const VERSION: u32 = 1;

/// A record larger than this is refused as corrupt (a few hundred devices
/// fit in a small fraction of it).
const MAX_LEN: u64 = 16 << 20;

/// Every device dom0 made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub version: u32,
    pub devices: Vec<Device>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            version: VERSION,
            devices: Vec::new(),
        }
    }
}

/// One device: a LAN or a disk, its backend and its members. (Unknown
/// fields cannot be refused here: serde does not combine that with the
/// flattened kind.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// `net0`, `net1`, ... or `blk0`, `blk1`, ...
    pub name: String,
    #[serde(flatten)]
    pub what: What,
    /// The backend domain serving it.
    pub backend: Domain,
    /// Feature bits offered (the owner entries' subtype).
    pub features: u32,
    /// Pages of each member's share.
    pub pages: u32,
    /// The member domains, in the order they were added.
    pub members: Vec<Domain>,
    /// While the daemon reconnects the members of a restarted backend: the
    /// backend's previous id and the device's previous param, to find the
    /// members' old entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<Stale>,
}

/// Where the members' entries of a restarted backend's device still point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stale {
    pub backend: DomId,
    pub param: u64,
}

/// What kind of device, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum What {
    /// A LAN of netback-uk: each member a port with this LAN id, each
    /// port with the LAN's policy (absent in records of older versions:
    /// none).
    Net {
        lan: u16,
        #[serde(default, skip_serializing_if = "is_false")]
        bind_addresses: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        private: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rate: Option<NetRate>,
        /// Networks members may send from besides their leases (`--ip`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        addresses: Vec<Assigned>,
        /// The LAN's uplink on the backend (`--uplink`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uplink: Option<Uplink>,
        /// Members' port MACs (`--mac`, or made for an uplinked LAN);
        /// a member not named here gets the switch's `02:58:<LAN>:<domid>`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        macs: Vec<MemberMac>,
    },
    /// A disk of blkback-uk: `source` given to the backend domain as the
    /// vbd `vdev` (`xl block-attach`), its disk `disk` there.
    Block {
        source: PathBuf,
        read_only: bool,
        vdev: String,
        disk: u64,
    },
}

/// A LAN's uplink: the backend's network device `device` (on Xen its
/// `device/vif/<device>`), bridged into the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    pub device: u16,
    /// netback-uk's own DHCP server stays on (`--dhcp-server`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub dhcp_server: bool,
}

/// An address (network) one member may send from, as `--ip` gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assigned {
    /// The member, by name.
    pub member: String,
    /// `ADDR/PREFIX`, IPv4 (prefix up to 32) or IPv6 (up to 64).
    pub net: String,
}

/// A member's port MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberMac {
    /// The member, by name.
    pub member: String,
    /// `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
}

/// A port MAC as `--mac` takes it: six hex bytes separated by colons, a
/// unicast address (the first byte's low bit clear), not all zero (zero
/// asks the switch to choose).
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let bad = || format!("MAC {text:?}: six hex bytes like 02:16:3e:00:00:01");
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "MAC {text}: a group address (a port's MAC is unicast)"
        ));
    }
    if mac == [0; 6] {
        return Err(format!("MAC {text}: all zero"));
    }
    Ok(mac)
}

/// `mac` as `xx:xx:xx:xx:xx:xx`.
pub fn mac_text(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// The MAC vdevice gives `member` of LAN device `device` on a host named
/// by `host_id` (its `/etc/machine-id`) when the LAN has an uplink and no
/// `--mac` was given: locally administered, unicast, the same on every
/// run for the same host, device and member, and unlike another host's
/// (the switch's own `02:58:<LAN>:<domid>` is the same on two hosts for
/// the same LAN id and domid, and an uplinked LAN shares a network with
/// other hosts). FNV-1a, 64 bits, of the three names; kept in the record
/// once made.
pub fn host_mac(host_id: &str, device: &str, member: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host_id
        .bytes()
        .chain([0])
        .chain(device.bytes())
        .chain([0])
        .chain(member.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// At most this many `--ip` networks per member (what a port takes).
pub const MAX_ADDRESSES: usize = 8;

/// The policy item of `ADDR/PREFIX` (IPv4 up to /32, IPv6 up to /64: the
/// rest of an IPv6 address is the interface's).
pub fn parse_net(lan: u16, member: DomId, net: &str) -> Result<PortPolicyRepr, String> {
    let bad = |why: &str| format!("--ip {net}: {why} (e.g. 192.168.5.7/32 or 2001:db8:5::/64)");
    let (addr, prefix) = net.split_once('/').ok_or_else(|| bad("ADDR/PREFIX"))?;
    let prefix: u8 = prefix.parse().map_err(|_| bad("the prefix is a number"))?;
    let item = match addr
        .parse::<std::net::IpAddr>()
        .map_err(|_| bad("not an address"))?
    {
        std::net::IpAddr::V4(a) if prefix <= 32 => PolicyItem::Ipv4 {
            addr: a.octets(),
            prefix,
        },
        std::net::IpAddr::V6(a) if prefix <= 64 => {
            let o = a.octets();
            if o[8..] != [0; 8] {
                return Err(bad("an IPv6 network of at most 64 bits (the rest is zero)"));
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&o[..8]);
            PolicyItem::Ipv6 { net: n, prefix }
        }
        _ => return Err(bad("the prefix is longer than the address")),
    };
    Ok(PortPolicyRepr { lan, member, item })
}

/// A port's rate limit as `--rate` gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRate {
    pub kbit_per_sec: u32,
    pub burst_bytes: u32,
}

impl NetRate {
    /// `RATE[/WINDOW]`: RATE in bits per second with an optional K, M or
    /// G (decimal), WINDOW the burst as time at that rate, `ms` (default
    /// 50 ms, as Xen's `rate=`), e.g. `100M`, `1G/10ms`, `512K/200ms`.
    pub fn parse(s: &str) -> Result<NetRate, String> {
        let bad = |why: &str| format!("--rate {s}: {why} (e.g. 100M or 1G/10ms)");
        let (rate, window) = s.split_once('/').unwrap_or((s, "50ms"));
        let (digits, scale) = match rate.char_indices().last() {
            Some((i, 'K' | 'k')) => (&rate[..i], 1u64),
            Some((i, 'M' | 'm')) => (&rate[..i], 1_000),
            Some((i, 'G' | 'g')) => (&rate[..i], 1_000_000),
            _ => return Err(bad("a rate in bits/s ends in K, M or G")),
        };
        let n: u64 = digits.parse().map_err(|_| bad("not a number"))?;
        let kbit = n
            .checked_mul(scale)
            .filter(|&k| (1..=u64::from(u32::MAX)).contains(&k))
            .ok_or_else(|| bad("out of range (1K to 4294G)"))?;
        let ms: u64 = window
            .strip_suffix("ms")
            .and_then(|w| w.parse().ok())
            .filter(|&w| (1..=10_000).contains(&w))
            .ok_or_else(|| bad("the window is 1ms to 10000ms"))?;
        // kbit/s * ms = bits; / 8 = bytes.
        let burst = (kbit * ms / 8).clamp(1514, u64::from(u32::MAX));
        Ok(NetRate {
            kbit_per_sec: kbit as u32,
            burst_bytes: burst as u32,
        })
    }
}

impl fmt::Display for NetRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.kbit_per_sec;
        if k.is_multiple_of(1_000_000) {
            write!(f, "{}G", k / 1_000_000)?;
        } else if k.is_multiple_of(1_000) {
            write!(f, "{}M", k / 1_000)?;
        } else {
            write!(f, "{k}K")?;
        }
        write!(f, "bit/s, burst {} B", self.burst_bytes)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A domain taking part in a device, by name (a restarted domain keeps
/// its name and gets a new id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub name: String,
    /// The domain id its entries were made for; `None` once they have been
    /// freed (the domain went away) and not yet made again.
    pub domid: Option<DomId>,
    /// When (seconds since the epoch) the daemon first saw it gone, until it
    /// is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away_since: Option<u64>,
}

impl Domain {
    pub fn new(name: &str, domid: DomId) -> Self {
        Domain {
            name: name.to_string(),
            domid: Some(domid),
            away_since: None,
        }
    }
}

impl Record {
    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    pub fn device_mut(&mut self, name: &str) -> Option<&mut Device> {
        self.devices.iter_mut().find(|d| d.name == name)
    }

    /// The lowest free name `<prefix>N` and its N.
    pub fn free_name(&self, prefix: &str) -> (String, u16) {
        let taken: Vec<u16> = self
            .devices
            .iter()
            .filter_map(|d| d.name.strip_prefix(prefix)?.parse().ok())
            .collect();
        let n = (0..=u16::MAX).find(|n| !taken.contains(n)).unwrap_or(0);
        (format!("{prefix}{n}"), n)
    }

    /// Parses a record, refusing anything but this version's format.
    pub fn parse(text: &str) -> Result<Record, String> {
        let r: Record = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if r.version != VERSION {
            return Err(format!(
                "format version {} (this vdevice reads {VERSION})",
                r.version
            ));
        }
        let mut names: Vec<&str> = r.devices.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("device {} is recorded twice", w[0]));
        }
        Ok(r)
    }
}

/// Why the record could not be read, locked or written.
#[derive(Debug)]
pub enum RecordError {
    Io {
        path: PathBuf,
        what: &'static str,
        err: io::Error,
    },
    /// The file exists but is not a record: nothing is changed until an
    /// administrator looks at it.
    Corrupt { path: PathBuf, detail: String },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Io { path, what, err } => {
                write!(f, "record {}: {what}: {err}", path.display())
            }
            RecordError::Corrupt { path, detail } => write!(
                f,
                "record {} is corrupt ({detail}); nothing was changed. Repair or move it away \
                 (the devices it names stay as they are in the domains)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RecordError {}

/// The record file and its lock, held from [`RecordFile::lock`] until
/// dropped.
pub struct RecordFile {
    path: PathBuf,
    _lock: File,
}

impl RecordFile {
    /// The path given, else `$VDEVICE_RECORD`, else [`DEFAULT_PATH`].
    pub fn path_from(flag: Option<PathBuf>) -> PathBuf {
        flag.or_else(|| std::env::var_os(PATH_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
    }

    /// Takes the exclusive lock on `<path>.lock` (creating the directory
    /// and the lock file if needed), waiting for another invocation to
    /// finish.
    pub fn lock(path: &Path) -> Result<RecordFile, RecordError> {
        let io = |what, err| RecordError::Io {
            path: path.to_path_buf(),
            what,
            err,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path(path))
            .map_err(|e| io("opening its lock file", e))?;
        lock.lock().map_err(|e| io("locking it", e))?;
        Ok(RecordFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record; an empty one if the file does not exist yet.
    pub fn load(&self) -> Result<Record, RecordError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Record::default()),
            Err(err) => {
                return Err(RecordError::Io {
                    path: self.path.clone(),
                    what: "opening it",
                    err,
                })
            }
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > MAX_LEN {
            return Err(RecordError::Corrupt {
                path: self.path.clone(),
                detail: format!("{len} bytes, more than any record"),
            });
        }
        let text = fs::read_to_string(&self.path).map_err(|err| match err.kind() {
            io::ErrorKind::InvalidData => RecordError::Corrupt {
                path: self.path.clone(),
                detail: "not UTF-8".into(),
            },
            _ => RecordError::Io {
                path: self.path.clone(),
                what: "reading it",
                err,
            },
        })?;
        Record::parse(&text).map_err(|detail| RecordError::Corrupt {
            path: self.path.clone(),
            detail,
        })
    }

    /// Replaces the record atomically.
    pub fn save(&self, record: &Record) -> Result<(), RecordError> {
        let io = |what, err| RecordError::Io {
            path: self.path.clone(),
            what,
            err,
        };
        let mut text = serde_json::to_string_pretty(record)
            .map_err(|e| io("encoding it", io::Error::other(e)))?;
        text.push('\n');
        let tmp = tmp_path(&self.path);
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io("writing its temporary copy", e));
        }
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(io("renaming its temporary copy over it", e));
        }
        // The rename is durable only once the directory is.
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing its directory", e))
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

fn tmp_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_as_unicast_hex_and_print_back() {
        assert_eq!(
            parse_mac("02:16:3E:00:00:0b"),
            Ok([2, 0x16, 0x3e, 0, 0, 0xb])
        );
        assert_eq!(mac_text([2, 0x16, 0x3e, 0, 0, 0xb]), "02:16:3e:00:00:0b");
        for bad in [
            "",
            "02:16:3e:00:00",
            "02:16:3e:00:00:0b:0c",
            "2:16:3e:00:00:0b",
            "02-16-3e-00-00-0b",
            "zz:16:3e:00:00:0b",
        ] {
            assert!(
                parse_mac(bad).unwrap_err().contains("six hex bytes"),
                "{bad}"
            );
        }
        assert!(parse_mac("03:00:00:00:00:01")
            .unwrap_err()
            .contains("group"));
        assert!(parse_mac("00:00:00:00:00:00").unwrap_err().contains("zero"));
    }

    #[test]
    fn host_macs_are_local_unicast_and_differ_by_host_lan_and_member() {
        let m = host_mac("0123456789abcdef", "net0", "guest-a");
        assert_eq!(m, host_mac("0123456789abcdef", "net0", "guest-a"));
        assert_eq!(m[0] & 3, 2);
        for other in [
            host_mac("fedcba9876543210", "net0", "guest-a"),
            host_mac("0123456789abcdef", "net1", "guest-a"),
            host_mac("0123456789abcdef", "net0", "guest-b"),
            // The names are separated: "net0" + "aguest" is not "net0a" + "guest".
            host_mac("0123456789abcdef", "net0a", "guest-a"),
        ] {
            assert_ne!(m, other);
            assert_eq!(other[0] & 3, 2);
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vdevice-record-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn sample() -> Record {
        Record {
            version: VERSION,
            devices: vec![
                Device {
                    name: "net0".into(),
                    what: What::Net {
                        lan: 0,
                        bind_addresses: false,
                        private: false,
                        rate: None,
                        addresses: vec![],
                        uplink: None,
                        macs: vec![],
                    },
                    backend: Domain::new("netback-uk", 1),
                    features: 0xb,
                    pages: 258,
                    members: vec![Domain::new("Domain-0", 0), Domain::new("guest", 3)],
                    stale: None,
                },
                Device {
                    name: "blk0".into(),
                    what: What::Block {
                        source: "/srv/disk.img".into(),
                        read_only: true,
                        vdev: "xvdb".into(),
                        disk: 1,
                    },
                    backend: Domain::new("blkback-uk", 2),
                    features: 0xf,
                    pages: 34,
                    members: vec![Domain {
                        name: "guest".into(),
                        domid: None,
                        away_since: Some(1000),
                    }],
                    stale: Some(Stale {
                        backend: 4,
                        param: 0,
                    }),
                },
            ],
        }
    }

    #[test]
    fn a_record_survives_a_save_and_a_load() {
        let d = dir("roundtrip");
        let path = d.join("sub/vdevice.json");
        let f = RecordFile::lock(&path).unwrap();
        assert_eq!(f.load().unwrap(), Record::default(), "no file: empty");
        f.save(&sample()).unwrap();
        assert_eq!(f.load().unwrap(), sample());
        assert!(!tmp_path(&path).exists());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"kind\": \"block\""), "{text}");
        drop(f);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn a_lans_policy_is_kept_and_older_records_have_none() {
        let old = r#"{"version":1,"devices":[{"name":"net0","kind":"net","lan":0,
            "backend":{"name":"netback-uk","domid":1},"features":11,"pages":258,
            "members":[{"name":"guest","domid":3}]}]}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        let dev = &r.devices[0];
        assert!(matches!(
            dev.what,
            What::Net {
                lan: 0,
                bind_addresses: false,
                private: false,
                rate: None,
                ..
            }
        ));
        assert_eq!(crate::admin::spec(dev).flags, 0);
        let mut bound = dev.clone();
        bound.what = What::Net {
            lan: 0,
            bind_addresses: true,
            addresses: vec![],
            private: true,
            rate: Some(NetRate::parse("100M").unwrap()),
            uplink: Some(Uplink {
                device: 2,
                dhcp_server: false,
            }),
            macs: vec![MemberMac {
                member: "guest".into(),
                mac: "02:00:00:00:00:01".into(),
            }],
        };
        let text = serde_json::to_string(&bound).unwrap();
        assert!(text.contains(r#""bind_addresses":true"#), "{text}");
        assert!(text.contains(r#""uplink":{"device":2}"#), "{text}");
        assert!(
            text.contains(r#""macs":[{"member":"guest","mac":"02:00:00:00:00:01"}]"#),
            "{text}"
        );
        let back: Device = serde_json::from_str(&text).unwrap();
        assert_eq!(back, bound);
        use share_hal::wire::vdevice::flags;
        assert_eq!(
            crate::admin::spec(&back).flags,
            flags::BIND_ADDRESSES | flags::PRIVATE
        );
        assert!(crate::admin::spec(&back).rate.is_some());
        // Without a policy the record reads as before.
        assert!(!serde_json::to_string(dev).unwrap().contains("private"));
        assert!(!serde_json::to_string(dev).unwrap().contains("uplink"));
    }

    #[test]
    fn assigned_networks_parse_as_policy_items() {
        assert_eq!(
            parse_net(7, 3, "192.168.5.0/24").unwrap().item,
            PolicyItem::Ipv4 {
                addr: [192, 168, 5, 0],
                prefix: 24
            }
        );
        assert_eq!(
            parse_net(7, 3, "2001:db8:5::/64").unwrap().item,
            PolicyItem::Ipv6 {
                net: [0x20, 0x01, 0x0d, 0xb8, 0, 5, 0, 0],
                prefix: 64
            }
        );
        for bad in [
            "192.168.5.1",
            "192.168.5.1/33",
            "2001:db8::1/128",
            "2001:db8::/65",
            "x/8",
            "10.0.0.1/-1",
        ] {
            assert!(parse_net(7, 3, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_parse_as_bits_per_second_with_a_window() {
        let r = NetRate::parse("100M").unwrap();
        assert_eq!((r.kbit_per_sec, r.burst_bytes), (100_000, 625_000));
        assert_eq!(r.to_string(), "100Mbit/s, burst 625000 B");
        let r = NetRate::parse("1G/10ms").unwrap();
        assert_eq!((r.kbit_per_sec, r.burst_bytes), (1_000_000, 1_250_000));
        // A burst is at least one full frame.
        assert_eq!(NetRate::parse("8K/1ms").unwrap().burst_bytes, 1514);
        for bad in [
            "", "100", "M", "0M", "5000G", "1M/0ms", "1M/5s", "x1M", "-1M",
        ] {
            assert!(NetRate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_corrupt_record_is_refused_and_left_alone() {
        let d = dir("corrupt");
        let path = d.join("vdevice.json");
        fs::create_dir_all(&d).unwrap();
        let f = RecordFile::lock(&path).unwrap();
        for bad in [
            "{",
            "{\"version\": 1}",
            "{\"version\": 2, \"devices\": []}",
            "{\"version\": 1, \"devices\": [], \"extra\": 1}",
        ] {
            fs::write(&path, bad).unwrap();
            let e = f.load().unwrap_err();
            assert!(matches!(e, RecordError::Corrupt { .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains("is corrupt"), "{e}");
            assert_eq!(fs::read_to_string(&path).unwrap(), bad);
        }
        // A device recorded twice.
        let mut twice = sample();
        twice.devices.push(twice.devices[0].clone());
        fs::write(&path, serde_json::to_string(&twice).unwrap()).unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("net0 is recorded twice"), "{e}");
        drop(f);
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn the_lock_keeps_a_second_invocation_waiting() {
        let d = dir("lock");
        let path = d.join("vdevice.json");
        let first = RecordFile::lock(&path).unwrap();
        let second = File::options().write(true).open(lock_path(&path)).unwrap();
        assert!(second.try_lock().is_err(), "held by the first");
        drop(first);
        second.try_lock().unwrap();
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn free_names_fill_gaps() {
        let mut r = sample();
        assert_eq!(r.free_name("net"), ("net1".into(), 1));
        assert_eq!(r.free_name("blk"), ("blk1".into(), 1));
        r.devices.remove(0);
        assert_eq!(r.free_name("net"), ("net0".into(), 0));
    }
}
