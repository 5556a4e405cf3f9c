//! netback-uk as a domain: vdevice owner entries become switch ports, and
//! one loop forwards frames, applies dom0's changes, and keeps house.
//!
//! The same code runs in the PVH image (Xen platform) and as a host
//! program on the simulation; each shell only brings up its platform and
//! publishes the vdevice page.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use share_hal::platform::{Platform, Port};
use share_hal::stats::StatsPage;
use share_hal::vdevice::{Applied, VdeviceBus};
use share_hal::wire::vdevice::{
    flags, status, EntryRepr, Kind, PolicyItem, PortPolicyRepr, Role, UplinkRepr,
};
use share_hal::{Error, Result};

use crate::fdb::{is_group, Mac, PortIndex};
use crate::policy::PortRules;
use crate::switch::{LanId, MacFmt, NoUplinks, PortLink, PortSpec, Switch, SwitchConfig, Uplinks};

/// Where an owner entry of kind network keeps the port's MAC and LAN id:
/// the 8-byte `param` (entry bytes 24..32) holds the MAC in wire order in
/// its first six bytes and the LAN id (u16, little-endian) in the last two
/// (docs/protocol.md, "Network ports in vdevice entries").
pub fn port_param(param: u64) -> (Mac, LanId) {
    let b = param.to_le_bytes();
    (
        [b[0], b[1], b[2], b[3], b[4], b[5]],
        u16::from_le_bytes([b[6], b[7]]),
    )
}

/// The `param` of an owner entry for `mac` (all zero: the switch picks)
/// on LAN `lan`.
pub fn make_port_param(mac: Mac, lan: LanId) -> u64 {
    let l = lan.to_le_bytes();
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], l[0], l[1]])
}

/// The port an owner entry asks for, or the status refusing it.
pub fn port_spec(e: &EntryRepr) -> core::result::Result<PortSpec, i32> {
    match (e.kind, e.role) {
        (Kind::Network, Role::Owner) => {}
        // netback-uk serves LANs; it joins no share and serves no disk.
        _ => return Err(status::ENODEV),
    }
    let (mac, lan) = port_param(e.param);
    if is_group(&mac) || e.numpages < share_hal::wire::net::MIN_PAGES {
        return Err(status::EINVAL);
    }
    Ok(PortSpec {
        lan,
        member: e.peer,
        mac,
        policy: e.subtype,
        numpages: e.numpages,
    })
}

/// A port policy item written over an empty entry.
fn apply_item<P: Platform>(
    sw: &mut Switch<P>,
    p: &mut P,
    index: u32,
    old: &EntryRepr,
    item: core::result::Result<PortPolicyRepr, share_hal::wire::Error>,
) -> Applied {
    if old.kind != Kind::Empty {
        return Applied::Refused(status::EEXIST);
    }
    let item = match item {
        Ok(it) => it,
        Err(e) => {
            log::warn!("entry {index}: port policy item refused: {e}");
            return Applied::Refused(status::EINVAL);
        }
    };
    match sw.set_policy_item(p, index, Some(item)) {
        Ok(()) => {
            // The entry's own words, not a Debug dump: the image keeps no
            // formatting code for the item types.
            log::info!(
                "entry {index}: port policy item {} for domain {} on LAN {}",
                match item.item {
                    PolicyItem::Rate { .. } => "rate",
                    PolicyItem::Ipv4 { .. } => "IPv4 network",
                    PolicyItem::Ipv6 { .. } => "IPv6 network",
                },
                item.member,
                item.lan
            );
            Applied::Ok { share_ref: None }
        }
        Err(e) => {
            log::warn!("entry {index}: port policy item refused: {e}");
            Applied::Refused(status::EINVAL)
        }
    }
}

/// The policy an owner entry's flags ask for (docs/protocol.md).
pub fn port_rules(e: &EntryRepr) -> PortRules {
    PortRules {
        bind_addresses: e.flags & flags::BIND_ADDRESSES != 0,
        private: e.flags & flags::PRIVATE != 0,
        ..PortRules::default()
    }
}

fn status_of(e: &Error) -> i32 {
    match e {
        Error::InvalidArgument { .. } => status::EEXIST,
        Error::NoSuchDomain { .. } => status::ENOENT,
        Error::OutOfMemory | Error::GrantTableFull => status::ENOMEM,
        Error::GrantInUse { .. } => status::EBUSY,
        _ => status::EIO,
    }
}

/// An uplink entry written over an empty entry: device `uplink` bridged
/// into its LAN.
fn apply_uplink<P: Platform>(
    sw: &mut Switch<P>,
    index: u32,
    old: &EntryRepr,
    up: core::result::Result<UplinkRepr, share_hal::wire::Error>,
    devices: &dyn Uplinks,
) -> Applied {
    if old.kind != Kind::Empty {
        return Applied::Refused(status::EEXIST);
    }
    let up = match up {
        Ok(up) => up,
        Err(e) => {
            log::warn!("entry {index}: uplink refused: {e}");
            return Applied::Refused(status::EINVAL);
        }
    };
    if !devices.has(up.uplink) {
        log::warn!(
            "entry {index}: uplink {} for LAN {} refused: this domain has no such network device",
            up.uplink,
            up.lan
        );
        return Applied::Refused(status::ENODEV);
    }
    match sw.attach_uplink(up.lan, up.uplink, index, up.dhcp_server) {
        Ok(()) => {
            log::info!(
                "entry {index}: LAN {} uplinked to device {} (DHCP server {})",
                up.lan,
                up.uplink,
                if up.dhcp_server { "on" } else { "off" }
            );
            Applied::Ok { share_ref: None }
        }
        Err(e) => {
            log::warn!(
                "entry {index}: uplink {} for LAN {} refused: {e}",
                up.uplink,
                up.lan
            );
            Applied::Refused(status::EEXIST)
        }
    }
}

/// Applies one vdevice change to the switch (`VdeviceBus::poll`'s handler)
/// of a domain without uplink devices.
pub fn apply<P: Platform>(
    sw: &mut Switch<P>,
    p: &mut P,
    index: u32,
    old: &EntryRepr,
    new: &EntryRepr,
) -> Applied {
    apply_with(sw, p, index, old, new, &NoUplinks)
}

/// Applies one vdevice change to the switch; `devices`: this domain's
/// network devices an uplink entry may name.
pub fn apply_with<P: Platform>(
    sw: &mut Switch<P>,
    p: &mut P,
    index: u32,
    old: &EntryRepr,
    new: &EntryRepr,
    devices: &dyn Uplinks,
) -> Applied {
    let Ok(port) = PortIndex::try_from(index) else {
        return Applied::Refused(status::EINVAL);
    };
    if let Some(up) = UplinkRepr::parse(new) {
        return apply_uplink(sw, index, old, up, devices);
    }
    if new.kind == Kind::Empty {
        if let Some(Ok(up)) = UplinkRepr::parse(old) {
            return match sw.detach_uplink(up.lan) {
                Ok(()) => {
                    log::info!("entry {index}: LAN {} uplink removed", up.lan);
                    Applied::Ok { share_ref: None }
                }
                Err(e) => {
                    log::warn!("entry {index}: removing LAN {}'s uplink: {e}", up.lan);
                    Applied::Ok { share_ref: None }
                }
            };
        }
    }
    if let Some(item) = PortPolicyRepr::parse(new) {
        return apply_item(sw, p, index, old, item);
    }
    if new.kind == Kind::Empty && PortPolicyRepr::parse(old).is_some() {
        return match sw.set_policy_item(p, index, None) {
            Ok(()) => Applied::Ok { share_ref: None },
            Err(e) => {
                log::warn!("entry {index}: removing a port policy item: {e}");
                Applied::Refused(status::EINVAL)
            }
        };
    }
    if new.kind == Kind::Empty {
        if old.kind == Kind::Network && old.role == Role::Owner {
            if let Err(e) = sw.remove_port(p, port) {
                log::warn!(
                    "entry {index}: removing the port of domain {}: {e}",
                    old.peer
                );
            } else {
                log::info!("entry {index}: port of domain {} removed", old.peer);
            }
        }
        return Applied::Ok { share_ref: None };
    }
    if old.kind != Kind::Empty {
        return Applied::Refused(status::EEXIST);
    }
    let spec = match port_spec(new) {
        Ok(s) => s,
        Err(code) => return Applied::Refused(code),
    };
    let rules = port_rules(new);
    let added = sw
        .add_port(p, port, spec)
        .and_then(|r| sw.set_port_rules(p, port, rules.clone()).map(|()| r));
    match added {
        Ok(r) => {
            if rules != PortRules::default() {
                log::info!(
                    "entry {index}: port policy: bind addresses {}, private {}",
                    rules.bind_addresses,
                    rules.private
                );
            }
            log::info!(
                "entry {index}: LAN {} port for domain {} ({} pages, policy {:#x}), share_ref {}",
                spec.lan,
                spec.member,
                spec.numpages,
                spec.policy,
                r.descriptor
            );
            Applied::Ok {
                share_ref: Some(r.descriptor),
            }
        }
        Err(e) => {
            log::warn!(
                "entry {index}: LAN {} port for domain {} refused: {e}",
                spec.lan,
                spec.member
            );
            Applied::Refused(status_of(&e))
        }
    }
}

/// How often the loop forgets aged addresses and retries revocations.
const HOUSEKEEP_NS: u64 = 1_000_000_000;
/// Rounds in a row before the loop looks at dom0's port again.
const ROUNDS_PER_CHECK: u32 = 64;

/// The netback-uk domain: its switch, its vdevice page, and its network
/// devices that LANs may have as uplinks (`U`; none by default).
pub struct Netback<P: Platform, U: Uplinks = NoUplinks> {
    pub switch: Switch<P>,
    pub bus: VdeviceBus<P::Pages>,
    /// Per-port counters for dom0 (`vdevice stats`), refreshed with the
    /// housekeeping.
    stats: StatsPage<P::Pages>,
    next_housekeep: u64,
    next_report: u64,
    /// Seconds between counter reports (0: never).
    pub report_every_s: u64,
    fired: Vec<Port>,
    /// This domain's network devices that LANs may have as uplinks.
    pub uplinks: U,
}

impl<P: Platform> Netback<P> {
    /// Creates the counter page and names it in the vdevice page.
    pub fn new(p: &mut P, bus: VdeviceBus<P::Pages>, config: SwitchConfig) -> Result<Self> {
        let now = p.now_ns();
        let entries = u16::try_from(bus.entries().len()).unwrap_or(u16::MAX);
        let stats = StatsPage::create(p, entries.min(share_hal::wire::stats::MAX_ENTRIES))?;
        bus.publish_stats(stats.gref())?;
        Ok(Netback {
            switch: Switch::new(config),
            bus,
            stats,
            next_housekeep: now + HOUSEKEEP_NS,
            next_report: now,
            report_every_s: 10,
            fired: Vec::new(),
            uplinks: NoUplinks,
        })
    }

    /// The domain with its network devices (uplink entries name them by
    /// index).
    pub fn with_uplinks<U: Uplinks>(self, uplinks: U) -> Netback<P, U> {
        Netback {
            switch: self.switch,
            bus: self.bus,
            stats: self.stats,
            next_housekeep: self.next_housekeep,
            next_report: self.next_report,
            report_every_s: self.report_every_s,
            fired: self.fired,
            uplinks,
        }
    }
}

impl<P: Platform, U: Uplinks> Netback<P, U> {
    /// Forwards until idle, then waits (at most until the next
    /// housekeeping) for a trigger; applies a vdevice change if dom0
    /// triggered. `report` receives periodic counter lines.
    pub fn step(&mut self, p: &mut P, report: &mut dyn FnMut(&str)) -> Result<()> {
        let mut busy = false;
        // One clock read for the rounds: a step lasts far less than a hold.
        let started = p.now_ns();
        for _ in 0..ROUNDS_PER_CHECK {
            busy = self.switch.poll_with(p, started, &mut self.uplinks).busy;
            if !busy {
                break;
            }
        }
        let now = p.now_ns();
        // Busy: only collect what fired; idle: sleep until a trigger, the
        // end of a hold, or the housekeeping.
        let deadline = if busy {
            now
        } else {
            self.switch
                .next_deadline()
                .map_or(self.next_housekeep, |d| d.min(self.next_housekeep))
        };
        self.fired.clear();
        let fired = &mut self.fired;
        match p.wait(Some(deadline), &mut |port| fired.push(port)) {
            Ok(()) | Err(Error::TimedOut) => {}
            Err(e) => return Err(e),
        }
        let vport = self.bus.port();
        if self.fired.contains(&vport) {
            let (sw, devices) = (&mut self.switch, &self.uplinks);
            match self.bus.poll_with(p, &mut |p, i, old, new| {
                apply_with(sw, p, i, old, new, devices)
            }) {
                Ok(Some(c)) => log::info!(
                    "vdevice change {} (entry {}): status {}",
                    c.serial,
                    c.index,
                    c.status
                ),
                Ok(None) => {}
                Err(e) => log::warn!("vdevice change could not be handled: {e}"),
            }
        }
        let now = p.now_ns();
        if now >= self.next_housekeep {
            self.next_housekeep = now + HOUSEKEEP_NS;
            let waiting = self.switch.housekeep(p);
            if waiting > 0 {
                log::debug!("{waiting} removed port(s) still mapped by their member");
            }
            self.publish_counters()?;
        }
        if self.report_every_s > 0 && now >= self.next_report {
            self.next_report = now + self.report_every_s * 1_000_000_000;
            for line in self.report_lines(now) {
                report(&line);
            }
        }
        Ok(())
    }

    /// Writes every port's counters into the counter page
    /// (`wire::stats::NET_COUNTERS` says what each is).
    pub fn publish_counters(&mut self) -> Result<()> {
        let ports: Vec<_> = self.switch.ports().collect();
        let uplinks: Vec<_> = self.switch.uplinks().collect();
        self.stats.update(|i| {
            if let Some(u) = uplinks.iter().find(|u| u.entry == u32::from(i)) {
                // An uplink's entry: the port layout, "member" being the
                // network behind the uplink; slot 9 counts addresses not
                // learned (its bound reached), `features` the device.
                let c = u.counters;
                return Some([
                    c.rx_frames,
                    c.rx_bytes,
                    c.tx_frames,
                    c.tx_bytes,
                    c.drop_tx_full,
                    c.drop_bad_frame,
                    c.drop_too_big,
                    c.drop_spoof,
                    c.drop_offload,
                    c.unlearned,
                    1,
                    u64::from(u.device),
                ]);
            }
            let q = ports.iter().find(|q| q.index == i)?;
            let c = q.counters;
            let (link, features) = match q.state {
                PortLink::Waiting => (0, 0),
                PortLink::Up { features } => (1, u64::from(features)),
                PortLink::Broken => (2, 0),
            };
            Some([
                c.rx_frames,
                c.rx_bytes,
                c.tx_frames,
                c.tx_bytes,
                c.drop_rx_full,
                c.drop_bad_frame,
                c.drop_too_big,
                c.drop_spoof,
                c.drop_offload,
                c.lane_errors,
                link,
                features,
            ])
        })
    }

    /// One line per LAN (its management address, leases, DHCP and drop
    /// counts) and one per port (state, frames and bytes each way, drops by
    /// cause).
    pub fn report_lines(&self, now_ns: u64) -> Vec<String> {
        let lans = self.switch.lans().map(|(id, m)| {
            let cfg = m.config();
            let c = m.counters();
            let mut line = format!(
                "lan {id} mgmt {}.{}.{}.{}/{} {}: arp {} echo {} offers {} acks {} naks {} drops {}; leases:",
                cfg.addr[0], cfg.addr[1], cfg.addr[2], cfg.addr[3], cfg.prefix_len, MacFmt(cfg.mac),
                c.arp_replies, c.echo_replies, c.dhcp_offers, c.dhcp_acks, c.dhcp_naks, c.drops.total()
            );
            for l in m.leases().filter(|l| l.is_active(now_ns)) {
                line.push_str(&format!(
                    " {} {}.{}.{}.{}",
                    MacFmt(l.mac),
                    l.ip[0],
                    l.ip[1],
                    l.ip[2],
                    l.ip[3]
                ));
            }
            line
        });
        let ports = self
            .switch
            .ports()
            .map(|q| {
                let c = q.counters;
                let state = match q.state {
                    PortLink::Waiting => "waiting",
                    PortLink::Up { .. } => "up",
                    PortLink::Broken => "broken",
                };
                format!(
                    "port {} lan {} dom {} {} {}: from-member {} frames {} B, to-member {} frames {} B, drops rx_full {} bad {} too_big {} spoof {} offload {} policy {}, lane errors {}, rate-limited {}",
                    q.index, q.lan, q.member, MacFmt(q.mac), state,
                    c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes,
                    c.drop_rx_full, c.drop_bad_frame, c.drop_too_big, c.drop_spoof, c.drop_offload,
                    c.drop_policy.total(), c.lane_errors, c.rate_limited
                )
            });
        let uplinks = self.switch.uplinks().map(|u| {
            let c = u.counters;
            format!(
                "uplink {} lan {} (entry {}, DHCP server {}): from-network {} frames {} B, to-network {} frames {} B, drops tx_full {} bad {} too_big {} spoof {} offload {}, unlearned {}",
                u.device, u.lan, u.entry, if u.dhcp_server { "on" } else { "off" },
                c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes,
                c.drop_tx_full, c.drop_bad_frame, c.drop_too_big, c.drop_spoof, c.drop_offload,
                c.unlearned
            )
        });
        lans.chain(uplinks).chain(ports).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use share_hal::platform::{DomId, GrantRef};
    use share_hal::wire::vdevice::PolicyItem;
    use share_local::LocalHost;

    fn owner(flags: u8) -> EntryRepr {
        EntryRepr {
            kind: Kind::Network,
            role: Role::Owner,
            flags,
            subtype: 0,
            numpages: 10,
            peer: 7,
            share_ref: GrantRef(0),
            status: 0,
            param: make_port_param([0; 6], 3),
        }
    }

    #[test]
    fn an_owner_entrys_policy_flags_reach_the_port() {
        let host = LocalHost::new();
        let mut p = host.domain(1);
        let mut sw = Switch::new(SwitchConfig::default());
        let empty = EntryRepr::EMPTY;
        let asked = owner(flags::BIND_ADDRESSES | flags::PRIVATE);
        assert!(matches!(
            apply(&mut sw, &mut p, 0, &empty, &asked),
            Applied::Ok { share_ref: Some(_) }
        ));
        let rules = sw.port_rules(0).unwrap();
        assert!(rules.bind_addresses && rules.private);
        let mut plain = owner(0);
        plain.peer = 8;
        apply(&mut sw, &mut p, 1, &empty, &plain);
        assert_eq!(sw.port_rules(1), Some(&PortRules::default()));
    }

    fn item(member: DomId, item: PolicyItem) -> EntryRepr {
        PortPolicyRepr {
            lan: 3,
            member,
            item,
        }
        .entry()
    }

    #[test]
    fn policy_items_add_to_their_port_before_or_after_it_is_made() {
        use crate::policy::{Ipv4Net, Rate, MAX_ASSIGNED};
        let host = LocalHost::new();
        let mut p = host.domain(1);
        let mut sw = Switch::new(SwitchConfig::default());
        let empty = EntryRepr::EMPTY;
        let rate = item(
            7,
            PolicyItem::Rate {
                kbit_per_sec: 200_000,
                burst_bytes: 65_536,
                frames_per_sec: 0,
            },
        );
        let ip = item(
            7,
            PolicyItem::Ipv4 {
                addr: [192, 168, 3, 7],
                prefix: 32,
            },
        );
        // The rate before the port, the address after it.
        assert!(matches!(
            apply(&mut sw, &mut p, 5, &empty, &rate),
            Applied::Ok { .. }
        ));
        assert!(matches!(
            apply(&mut sw, &mut p, 0, &empty, &owner(flags::BIND_ADDRESSES)),
            Applied::Ok { share_ref: Some(_) }
        ));
        assert!(matches!(
            apply(&mut sw, &mut p, 6, &empty, &ip),
            Applied::Ok { .. }
        ));
        let r = sw.port_rules(0).unwrap();
        assert!(r.bind_addresses);
        assert_eq!(
            r.rate,
            Some(Rate {
                bytes_per_sec: 25_000_000,
                burst_bytes: 65_536,
                frames_per_sec: 0
            })
        );
        assert_eq!(
            r.ipv4,
            [Ipv4Net {
                addr: [192, 168, 3, 7],
                prefix: 32
            }]
        );
        // An item over a used entry, a broken one, one too many.
        assert!(matches!(
            apply(&mut sw, &mut p, 6, &ip, &ip),
            Applied::Refused(status::EEXIST)
        ));
        let mut broken = ip;
        broken.subtype = 9;
        assert!(matches!(
            apply(&mut sw, &mut p, 7, &empty, &broken),
            Applied::Refused(status::EINVAL)
        ));
        for k in 1..MAX_ASSIGNED as u32 {
            assert!(matches!(
                apply(&mut sw, &mut p, 10 + k, &empty, &ip),
                Applied::Ok { .. }
            ));
        }
        assert!(matches!(
            apply(&mut sw, &mut p, 30, &empty, &ip),
            Applied::Refused(status::EINVAL)
        ));
        assert_eq!(sw.port_rules(0).unwrap().ipv4.len(), MAX_ASSIGNED);
        // Emptying the rate's entry takes the rate away; another port of
        // the LAN never saw any of it.
        assert!(matches!(
            apply(&mut sw, &mut p, 5, &rate, &empty),
            Applied::Ok { .. }
        ));
        assert_eq!(sw.port_rules(0).unwrap().rate, None);
        let mut plain = owner(0);
        plain.peer = 8;
        apply(&mut sw, &mut p, 1, &empty, &plain);
        assert_eq!(sw.port_rules(1), Some(&PortRules::default()));
    }

    /// Devices 0 and 1.
    struct TwoDevices;

    impl Uplinks for TwoDevices {
        fn recv(&mut self, _: u16, _: &mut [u8]) -> Option<(usize, share_hal::frames::FrameMeta)> {
            None
        }
        fn send(&mut self, _: u16, _: &[u8], _: share_hal::frames::FrameMeta) -> bool {
            true
        }
        fn has(&self, device: u16) -> bool {
            device < 2
        }
    }

    #[test]
    fn uplink_entries_attach_refuse_and_detach() {
        let host = LocalHost::new();
        let mut p = host.domain(1);
        let mut sw = Switch::new(SwitchConfig::default());
        let empty = EntryRepr::EMPTY;
        let up = |uplink, lan, dhcp_server| {
            UplinkRepr {
                lan,
                uplink,
                dhcp_server,
            }
            .entry()
        };
        let dev = &TwoDevices;
        assert!(matches!(
            apply_with(&mut sw, &mut p, 4, &empty, &up(1, 3, false), dev),
            Applied::Ok { share_ref: None }
        ));
        let u: Vec<_> = sw.uplinks().collect();
        assert_eq!((u[0].lan, u[0].device, u[0].entry), (3, 1, 4));
        assert!(!u[0].dhcp_server);
        // No such device; the device or the LAN taken; over a used entry;
        // a malformed one; a domain without devices.
        let refused =
            |sw: &mut Switch<_>, p: &mut _, i, old: &EntryRepr, new: &EntryRepr| match apply_with(
                sw, p, i, old, new, dev,
            ) {
                Applied::Refused(code) => code,
                Applied::Ok { .. } => 0,
            };
        assert_eq!(
            refused(&mut sw, &mut p, 5, &empty, &up(2, 4, false)),
            status::ENODEV
        );
        assert_eq!(
            refused(&mut sw, &mut p, 5, &empty, &up(1, 4, false)),
            status::EEXIST
        );
        assert_eq!(
            refused(&mut sw, &mut p, 5, &empty, &up(0, 3, false)),
            status::EEXIST
        );
        assert_eq!(
            refused(&mut sw, &mut p, 4, &up(1, 3, false), &up(0, 4, false)),
            status::EEXIST
        );
        let mut bad = up(0, 4, false);
        bad.peer = 9;
        assert_eq!(refused(&mut sw, &mut p, 5, &empty, &bad), status::EINVAL);
        assert!(matches!(
            apply(&mut sw, &mut p, 5, &empty, &up(0, 4, false)),
            Applied::Refused(status::ENODEV)
        ));
        // A port joins the uplinked LAN; emptying the entry detaches.
        let mut port = owner(0);
        port.param = make_port_param([0; 6], 3);
        assert!(matches!(
            apply_with(&mut sw, &mut p, 0, &empty, &port, dev),
            Applied::Ok { share_ref: Some(_) }
        ));
        assert!(matches!(
            apply_with(&mut sw, &mut p, 4, &up(1, 3, false), &empty, dev),
            Applied::Ok { share_ref: None }
        ));
        assert_eq!(sw.uplinks().count(), 0);
        assert_eq!(sw.ports().count(), 1, "the port stays");
        assert!(matches!(
            apply_with(&mut sw, &mut p, 4, &empty, &up(1, 3, true), dev),
            Applied::Ok { .. }
        ));
        assert!(sw.uplinks().next().unwrap().dhcp_server);
    }
}
