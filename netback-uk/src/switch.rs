//! The switch: LANs of ports, one port per member domain, frames moved
//! from one member's tx lane to other members' rx lanes.
//!
//! netback-uk owns every port's share (docs/design.md): for each port it
//! creates a net share, writes the control fields and both lane headers,
//! and only then grants it. Everything the member writes afterwards (its
//! tx slots and indexes, `features_accepted`, `member_state`) is hostile:
//! [`FrameReceiver`] copies each slot header out once (and enforces the
//! slot rules of docs/protocol.md) and each frame's first
//! [`PRIVATE_HEAD`] bytes into the port's private buffer; every forwarding
//! decision is made on that copy, and those bytes go out from it. The rest
//! of a plain frame is copied once, from the source's tx slots to each
//! destination's rx slots; a frame whose other bytes the switch reads is
//! copied whole first.
//!
//! Properties the code keeps, each tested below:
//! - A frame goes to the port its destination MAC was learned on, or, for
//!   group and unknown addresses, to every other ready port of the LAN;
//!   never back to its source, never to another LAN, never to a port that
//!   is not up.
//! - A port whose rx lane is full loses only the frames meant for it
//!   (counted as `drop_rx_full`); a unicast frame for it first waits at
//!   most [`HOLD_NS`], holding back its sender only (backpressure for a
//!   slow receiver, bounded for a stopped one).
//! - Ports take turns: each round serves at most `budget` frames from each
//!   port, starting one port further each round.
//! - Rx slots are published once per round per port, and a member is
//!   triggered only when its lane's event index asks for it.
//! - A member that breaks the lane protocol (indexes out of range) loses
//!   its port's traffic (the port goes `Broken`); the others go on.
//! - A LAN may have an **uplink**: one of netback-uk's own network devices
//!   (a Xen `vif=` on a dom0 bridge, a TAP on the simulation), reached
//!   through [`Uplinks`]. It is a port of another kind: group and unknown
//!   destinations flood to it too, frames from it are switched by MAC, it
//!   learns many addresses within its own bound but never a member's
//!   (`Fdb::learn_uplink`), and members' pinning and policy are as
//!   before. A private port reaches the uplink (as an isolated port of a
//!   private VLAN reaches its promiscuous one) but no member.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use share_hal::frames::{
    FrameMeta, FrameReceiver, FrameSender, LaneFrame, ParkedReceiver, ParkedSender,
};
use share_hal::lane::{self, Consumer, ConsumerState, Producer, ProducerState};
use share_hal::platform::{DomId, Platform, Port};
use share_hal::share::{Share, ShareRef};
use share_hal::wire::net::field as control_field;
use share_hal::wire::net::{
    self, features, flags, Control, ControlRepr, FrameAssembler, NetLayout, MEMBER_READY,
    MTU_DEFAULT, MTU_MAX,
};
use share_hal::{Error, Result, SharedMem};

use crate::fdb::{is_group, Fdb, FdbLimits, Learned, Mac, PortIndex, UPLINK_PORT};
use crate::mgmt::{Mgmt, MgmtConfig};
use crate::offload::{self, DropCause, Scratch, Verdict};
use crate::policy::{Guard, HeldLease, PolicyBook, PolicyDrops, PortRules, Refusal};
use crate::snoop::{self, ServerSaid, Snooped};
use share_hal::wire::vdevice::PortPolicyRepr;

/// Bytes of each frame copied privately as its tx slots are read: every
/// byte a forwarding decision reads lies in them (Ethernet header and VLAN
/// tag, 18; an IPv4 header, at most 60, and the UDP ports after it; IPv6,
/// 40; ARP, 28; the offload checks' headers, [`offload::OFFLOAD_HEAD`]:
/// 138 with a TCP header of 60; rounded up to 16 bytes, the unit of the
/// shared-memory copy). The rest is copied once, from the source's tx
/// slots to each destination's rx slots, unless the frame needs all of
/// its bytes private (the management endpoint, a DHCP request the policy
/// reads, a LAN with an uplink): those are copied in whole first, and a
/// frame whose offloads a destination needs resolved (a checksum
/// completed, segments cut) is copied whole for that destination.
pub const PRIVATE_HEAD: usize = 144;
const _: () = assert!(PRIVATE_HEAD >= offload::OFFLOAD_HEAD);

/// The management endpoint takes standard frames.
const MGMT_MAX_FRAME: usize = net::MTU_DEFAULT as usize + net::FRAME_OVERHEAD;

/// Features this switch implements, as offered in `features_offered`
/// (`GSO` only on shares whose lanes hold a max GSO frame).
pub const IMPLEMENTED: u32 =
    features::CSUM_BLANK | features::DATA_VALIDATED | features::JUMBO | features::GSO;

/// A LAN's identity, from the owner entry (docs/protocol.md).
pub type LanId = u16;

/// What dom0 asked for one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub lan: LanId,
    pub member: DomId,
    /// All zero: the switch assigns one ([`assigned_mac`]).
    pub mac: Mac,
    /// dom0's feature policy for the port (the entry's subtype).
    pub policy: u32,
    pub numpages: u32,
}

/// The MAC a port gets when dom0 gives none: locally administered,
/// unicast, unique per (LAN, member).
pub fn assigned_mac(lan: LanId, member: DomId) -> Mac {
    let l = lan.to_be_bytes();
    let m = member.to_be_bytes();
    [0x02, 0x58, l[0], l[1], m[0], m[1]]
}

/// Per-port counters. "rx" is what the switch received from the member
/// (its tx lane), "tx" what it delivered to the member (its rx lane).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames for this port dropped because its rx lane was full.
    pub drop_rx_full: u64,
    /// Frames from this port refused by the slot rules.
    pub drop_bad_frame: u64,
    /// Frames for this port longer than its MTU allows.
    pub drop_too_big: u64,
    /// Frames from this port sent with another port's MAC (or a group
    /// address) as source.
    pub drop_spoof: u64,
    /// Frames for this port whose offload fields did not hold for the
    /// frame (bad checksum offsets or GSO headers, IPv6 extension headers
    /// under GSO, runts).
    pub drop_offload: u64,
    /// Lane protocol violations by the member (the port is then broken).
    pub lane_errors: u64,
    /// Frames from this port (or, for `private`, to it) refused by its
    /// policy, by cause.
    pub drop_policy: PolicyDrops,
    /// Rounds in which the port was not read for its rate limit.
    pub rate_limited: u64,
}

/// A LAN's way out: the devices a switch's uplinks are (the netfront of
/// a `vif=` in the image, a TAP device on the simulation). The switch
/// calls it during [`Switch::poll_with`] only, for devices attached with
/// [`Switch::attach_uplink`].
pub trait Uplinks {
    /// Copies the next frame received on `device` into `buf` and returns
    /// its length (more than `buf.len()`: it did not fit and is dropped)
    /// and its offload fields (a partial checksum to complete, checksums
    /// verified), which the switch checks against the frame as it does a
    /// member's; `None`: nothing waiting.
    fn recv(&mut self, device: u16, buf: &mut [u8]) -> Option<(usize, FrameMeta)>;
    /// Sends one whole Ethernet frame out of `device`: at most
    /// [`UPLINK_MAX_FRAME`] bytes, or a GSO frame (segments of at most
    /// that) where [`Uplinks::features`] said `GSO`; its offload fields
    /// only those of [`Uplinks::features`] (checksums complete without
    /// any). `false`: no room or the device is down; the frame is dropped
    /// and counted.
    fn send(&mut self, device: u16, frame: &[u8], meta: FrameMeta) -> bool;
    /// The offloads (`wire::net::features`) `device` takes for this frame
    /// (`frame` with its offload fields `meta`), as a port's accepted
    /// features; what it does not take, the switch resolves in software
    /// first.
    fn features(&self, _device: u16, _frame: &[u8], _meta: &FrameMeta) -> u32 {
        0
    }
    /// End of a round: push what was sent (notify the peer). `true`: more
    /// may be waiting already (poll again before sleeping).
    fn flush(&mut self) -> bool {
        false
    }
    /// Whether this domain has device `device` (an uplink entry naming
    /// another is refused with ENODEV).
    fn has(&self, device: u16) -> bool;
}

/// A switch without uplinks ([`Switch::poll_at`]).
pub struct NoUplinks;

impl Uplinks for NoUplinks {
    fn recv(&mut self, _: u16, _: &mut [u8]) -> Option<(usize, FrameMeta)> {
        None
    }
    fn send(&mut self, _: u16, _: &[u8], _: FrameMeta) -> bool {
        false
    }
    fn has(&self, _: u16) -> bool {
        false
    }
}

/// The longest frame an uplink carries either way: MTU 1500 and one VLAN
/// tag.
pub const UPLINK_MAX_FRAME: usize = net::MTU_DEFAULT as usize + net::FRAME_OVERHEAD;

/// Counters of a LAN's uplink. "rx" is what came in from the uplink's
/// network, "tx" what the switch sent out to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkCounters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames for the uplink its device had no room for.
    pub drop_tx_full: u64,
    /// Frames from the uplink shorter than an Ethernet header or longer
    /// than [`UPLINK_MAX_FRAME`].
    pub drop_bad_frame: u64,
    /// Frames for the uplink too long for it.
    pub drop_too_big: u64,
    /// Frames from the uplink sent from a member's MAC, the endpoint's or
    /// a group address.
    pub drop_spoof: u64,
    /// Frames for the uplink whose offload fields did not hold.
    pub drop_offload: u64,
    /// Source addresses not learned: the uplink's bound was reached.
    pub unlearned: u64,
}

/// A LAN's uplink as the switch keeps it.
#[derive(Clone, Copy, Debug)]
struct UplinkPort {
    device: u16,
    /// The vdevice entry that made it (its counters go there).
    entry: u32,
    counters: UplinkCounters,
}

/// An uplink as [`Switch::uplinks`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkInfo {
    pub lan: LanId,
    pub device: u16,
    pub entry: u32,
    pub dhcp_server: bool,
    pub counters: UplinkCounters,
}

/// Where a port is in its life.
#[derive(Debug)]
enum Link {
    /// Shared and granted; waiting for the member's `member_state = READY`.
    Waiting {
        rx: ConsumerState,
        tx: ProducerState,
    },
    /// Forwarding. `from` reads the member's tx lane, `to` fills its rx lane.
    Up {
        from: Option<ParkedReceiver>,
        to: Option<ParkedSender>,
        features: u32,
        /// MTU + 18: the longest plain frame it takes.
        max_frame: usize,
        /// Frames written to the rx lane and not yet published.
        dirty: bool,
    },
    /// The member broke the protocol; no traffic until dom0 re-creates it.
    Broken,
}

struct PortState {
    spec: PortSpec,
    /// Its LAN's slot in `Switch::lans`.
    lan: usize,
    mac: Mac,
    layout: NetLayout,
    offered: u32,
    mtu: u16,
    evtchn: Port,
    link: Link,
    counters: PortCounters,
    notify: bool,
    /// A unicast frame from this port that found its destination's rx lane
    /// full: the port is not read until it goes or its hold ends.
    held: Option<Held>,
    /// Buffer of the held frame (kept for reuse).
    held_buf: Vec<u8>,
    /// As a destination: a hold for this port ran out, so frames for it
    /// are dropped at once while its rx lane stays full.
    stalled: bool,
    /// dom0's policy for the port as its own entry says (the items of
    /// [`Switch::policy`] add to it).
    base: PortRules,
    /// The policy in force and its state (leases, rate buckets).
    guard: Guard,
    /// Out of rate credit: not read before this time.
    rate_until: Option<u64>,
    /// Addresses the network's DHCP server leased this port's MAC,
    /// snooped on the LAN's uplink (`crate::snoop`).
    snooped: Snooped,
    /// What the last frame from this port learned and found: kept for the
    /// next frames of the same round ([`Route`]).
    route: Option<Route>,
}

/// A port's last unicast frame: its source was learned (`Learned::Yes`)
/// and its destination looked up (`to`) in its LAN's forwarding database
/// at `generation` and `now`. While the database's generation and the
/// round's time are the same, a frame with the same addresses gets the
/// same answers without either hash lookup: learning it again would
/// change nothing (`Fdb::generation`), and the lookup would say the same.
#[derive(Clone, Copy, Debug)]
struct Route {
    generation: u64,
    now: u64,
    src: Mac,
    dst: Mac,
    to: Option<PortIndex>,
}

/// A frame waiting for room in one destination's rx lane.
#[derive(Clone, Copy, Debug)]
struct Held {
    len: usize,
    meta: FrameMeta,
    dst: PortIndex,
    since_ns: u64,
}

/// How long a unicast frame waits for room in a busy destination before
/// it is dropped and the destination is marked stalled: long enough for a
/// member that is merely slower than its sender (a TCP receiver) to drain,
/// short enough that a member that stopped costs its senders one such
/// wait, not one per frame.
pub const HOLD_NS: u64 = 2_000_000;

struct Lan {
    id: LanId,
    fdb: Fdb,
    /// netback-uk's own address on the LAN: ARP, ping, DHCP.
    mgmt: Mgmt,
    ports: Vec<PortIndex>,
    /// The LAN's uplink, if it has one.
    uplink: Option<UplinkPort>,
}

/// What one [`Switch::poll`] round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Frames taken from members' tx lanes.
    pub frames: u64,
    /// Tx slots consumed (a slot skipped in a refused chain counts too):
    /// at most `budget * GSO_MAX_SLOTS` per port.
    pub slots: u64,
    /// Frames the round made: written to rx lanes (each segment of a
    /// segmented frame, each copy of a flooded one) or handed to a
    /// management endpoint. Charged to the port whose frame caused them:
    /// a port stops being read in a round once its frames made
    /// `budget * GSO_MAX_SLOTS` (plus what its last frame made, at most
    /// `GSO_MAX_SEGS` per destination).
    pub emitted: u64,
    /// Some port may have more to read: poll again before waiting.
    pub busy: bool,
    /// Triggers sent to members (event channel sends: hypercalls on Xen).
    pub triggers: u64,
}

/// Tunables of a switch.
#[derive(Clone, Copy, Debug)]
pub struct SwitchConfig {
    /// Frames served from one port per round (fairness).
    pub budget: u32,
    pub fdb: FdbLimits,
    /// Keys the forwarding database's hash.
    pub seed: u64,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            budget: 64,
            fdb: FdbLimits::default(),
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// The switch of every LAN this domain serves.
pub struct Switch<P: Platform> {
    /// Port `i`'s share; apart from `ports` so that lanes can borrow a
    /// share's memory while port state changes.
    shares: Vec<Option<Share<P>>>,
    ports: Vec<Option<PortState>>,
    /// LANs by slot (a port keeps its LAN's slot); `None`: free.
    lans: Vec<Option<Lan>>,
    /// Shares of removed ports whose member still maps a page.
    dying: Vec<Share<P>>,
    next_start: usize,
    config: SwitchConfig,
    /// Destinations of the frame being forwarded (reused).
    dests: Vec<PortIndex>,
    /// Segments and completed checksums are built here (reused).
    scratch: Scratch,
    /// Replies of a LAN's management endpoint, back to back (reused).
    replies: Vec<u8>,
    reply_lens: Vec<usize>,
    /// Port policy items dom0 wrote, by entry.
    policy: PolicyBook,
    /// Some port may be private (false: no port is, and forwarding skips
    /// the check).
    any_private: bool,
    /// A frame from an uplink is copied here (reused).
    uplink_buf: Vec<u8>,
    /// A frame a destination needs whole (offloads to resolve) is copied
    /// here from the source's slots (reused).
    whole_buf: Vec<u8>,
}

/// Net share of `numpages`: lanes are initialised and parked before any
/// grant, so the switch never reads its own index back from the page.
fn prepare_share<P: Platform>(
    p: &mut P,
    spec: &PortSpec,
    mac: Mac,
) -> Result<(Share<P>, NetLayout, u32, u16, ConsumerState, ProducerState)> {
    let layout = NetLayout::new(spec.numpages).map_err(Error::from)?;
    let mut offered = spec.policy & IMPLEMENTED;
    // Offer only what the lanes can carry: a jumbo frame takes 5 slots,
    // a GSO frame 33.
    let jumbo_slots = (usize::from(MTU_MAX) + net::FRAME_OVERHEAD).div_ceil(net::SLOT_DATA_MAX);
    if (layout.tx.slot_count as usize) < jumbo_slots {
        offered &= !features::JUMBO;
    }
    if !layout.holds_gso() {
        offered &= !features::GSO;
    }
    let mtu = if offered & features::JUMBO != 0 {
        MTU_MAX
    } else {
        MTU_DEFAULT
    };
    let share = Share::create(p, spec.numpages as usize)?;
    let mem = share.mem();
    let mut raw = [0u8; net::CONTROL_LEN];
    ControlRepr {
        features_offered: offered,
        mac,
        mtu,
    }
    .emit(&mut Control::new_unchecked(&mut raw[..]))?;
    mem.write_from(0, &raw)?;
    let (tx_win, rx_win) = (layout.tx.window(mem)?, layout.rx.window(mem)?);
    let (tx_lane, rx_lane) = (layout.tx.lane()?, layout.rx.lane()?);
    lane::init(tx_win, tx_lane, 0)?;
    lane::init(rx_win, rx_lane, 0)?;
    let from = Consumer::attach(tx_win, tx_lane)?.park();
    let to = Producer::attach(rx_win, rx_lane)?.park();
    Ok((share, layout, offered, mtu, from, to))
}

impl<P: Platform> Switch<P> {
    pub fn new(config: SwitchConfig) -> Self {
        Switch {
            shares: Vec::new(),
            ports: Vec::new(),
            lans: Vec::new(),
            dying: Vec::new(),
            next_start: 0,
            config,
            dests: Vec::new(),
            scratch: Scratch::new(),
            replies: Vec::new(),
            reply_lens: Vec::new(),
            policy: PolicyBook::default(),
            any_private: false,
            uplink_buf: Vec::new(),
            whole_buf: Vec::new(),
        }
    }

    /// The slot of LAN `lan`, made (with its endpoint) if it has none.
    fn lan_slot(&mut self, lan: LanId) -> Result<usize> {
        if let Some(slot) = self
            .lans
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.id == lan))
        {
            return Ok(slot);
        }
        let seed = self.config.seed ^ u64::from(lan).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mgmt = Mgmt::new(MgmtConfig::for_lan(lan)).map_err(|_| Error::InvalidArgument {
            what: "the LAN's management address plan",
        })?;
        let fresh = Some(Lan {
            id: lan,
            fdb: Fdb::new(self.config.fdb, seed),
            mgmt,
            ports: Vec::new(),
            uplink: None,
        });
        Ok(match self.lans.iter().position(Option::is_none) {
            Some(free) => {
                self.lans[free] = fresh;
                free
            }
            None => {
                self.lans.push(fresh);
                self.lans.len() - 1
            }
        })
    }

    /// Bridges device `device` into LAN `lan` as its uplink, made by
    /// vdevice entry `entry`; `dhcp_server`: the LAN's endpoint keeps
    /// answering DHCP (otherwise the network behind the uplink serves
    /// it). One uplink per LAN and one LAN per device.
    pub fn attach_uplink(
        &mut self,
        lan: LanId,
        device: u16,
        entry: u32,
        dhcp_server: bool,
    ) -> Result<()> {
        if self.lans.iter().flatten().any(|l| {
            l.id == lan && l.uplink.is_some() || l.uplink.is_some_and(|u| u.device == device)
        }) {
            return Err(Error::InvalidArgument {
                what: "the LAN has an uplink, or the device is another LAN's",
            });
        }
        let slot = self.lan_slot(lan)?;
        if let Some(l) = self.lans[slot].as_mut() {
            l.uplink = Some(UplinkPort {
                device,
                entry,
                counters: UplinkCounters::default(),
            });
            l.mgmt.set_dhcp_server(dhcp_server);
        }
        Ok(())
    }

    /// Takes LAN `lan`'s uplink away: its addresses are forgotten, the
    /// LAN's DHCP server is on again.
    pub fn detach_uplink(&mut self, lan: LanId) -> Result<()> {
        let slot = self
            .lans
            .iter_mut()
            .find(|l| {
                l.as_ref()
                    .is_some_and(|l| l.id == lan && l.uplink.is_some())
            })
            .ok_or(Error::InvalidArgument {
                what: "the LAN has no uplink",
            })?;
        if let Some(l) = slot.as_mut() {
            l.uplink = None;
            l.fdb.forget_port(UPLINK_PORT);
            l.mgmt.set_dhcp_server(true);
            // What the network's server leased ends with the way to it.
            for &p in &l.ports {
                if let Some(state) = self.ports.get_mut(usize::from(p)).and_then(Option::as_mut) {
                    state.snooped.nak();
                    state.guard.set_leases(port_leases(&l.mgmt, p));
                }
            }
            if l.ports.is_empty() {
                *slot = None;
            }
        }
        Ok(())
    }

    /// Every LAN's uplink.
    pub fn uplinks(&self) -> impl Iterator<Item = UplinkInfo> + '_ {
        self.lans.iter().flatten().filter_map(|l| {
            let u = l.uplink?;
            Some(UplinkInfo {
                lan: l.id,
                device: u.device,
                entry: u.entry,
                dhcp_server: l.mgmt.dhcp_server(),
                counters: u.counters,
            })
        })
    }

    /// Creates port `index` for `spec.member` on LAN `spec.lan` and grants
    /// it; returns the share_ref the member attaches with.
    pub fn add_port(&mut self, p: &mut P, index: PortIndex, spec: PortSpec) -> Result<ShareRef> {
        let i = usize::from(index);
        if self.ports.get(i).is_some_and(|s| s.is_some()) {
            return Err(Error::InvalidArgument {
                what: "switch port slot already in use",
            });
        }
        let mac = if spec.mac == [0; 6] {
            assigned_mac(spec.lan, spec.member)
        } else {
            spec.mac
        };
        if is_group(&mac) {
            return Err(Error::InvalidArgument {
                what: "a port's MAC must be unicast",
            });
        }
        if self
            .ports
            .iter()
            .flatten()
            .any(|q| q.spec.lan == spec.lan && (q.mac == mac || q.spec.member == spec.member))
        {
            return Err(Error::InvalidArgument {
                what: "the LAN already has a port with that MAC or for that member",
            });
        }
        let (mut share, layout, offered, mtu, from, to) = prepare_share(p, &spec, mac)?;
        let share_ref = match share.add_member(p, spec.member) {
            Ok(r) => r,
            Err(e) => {
                if share.destroy(p).is_err() {
                    self.dying.push(share);
                }
                return Err(e);
            }
        };
        let evtchn = share.port(spec.member)?;
        let slot = match self.lan_slot(spec.lan) {
            Ok(slot) => slot,
            Err(e) => {
                if share.destroy(p).is_err() {
                    self.dying.push(share);
                }
                return Err(e);
            }
        };
        let Some(lan) = self.lans[slot].as_mut() else {
            return Err(Error::InvalidArgument {
                what: "switch LAN slot vanished",
            });
        };
        // Checked free above, so pinning cannot fail.
        lan.fdb.pin(&mac, index);
        lan.ports.push(index);
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
            self.shares.resize_with(i + 1, || None);
        }
        self.shares[i] = Some(share);
        self.ports[i] = Some(PortState {
            spec,
            lan: slot,
            mac,
            layout,
            offered,
            mtu,
            evtchn,
            link: Link::Waiting { rx: from, tx: to },
            counters: PortCounters::default(),
            notify: false,
            held: None,
            held_buf: Vec::new(),
            stalled: false,
            base: PortRules::default(),
            guard: Guard::new(PortRules::default(), mac, p.now_ns()),
            rate_until: None,
            snooped: Snooped::default(),
            route: None,
        });
        #[cfg(feature = "hostile")]
        if let Some(mode) = crate::hostile::port_added() {
            log::info!(
                "port {index} for domain {}: hostile mode {mode:?}",
                spec.member
            );
        }
        // Items dom0 wrote before the port.
        let rules = self
            .policy
            .rules(spec.lan, spec.member, &PortRules::default());
        if rules.validate().is_ok() {
            self.enforce(p.now_ns(), index, rules);
        }
        Ok(share_ref)
    }

    /// Sets port `index`'s own policy (address binding, assigned
    /// addresses, rate limit, private), replacing what it had; policy
    /// items add to it; its DHCP leases stay.
    pub fn set_port_rules(&mut self, p: &mut P, index: PortIndex, base: PortRules) -> Result<()> {
        let Some(state) = self.ports.get(usize::from(index)).and_then(Option::as_ref) else {
            return Err(Error::InvalidArgument {
                what: "no such switch port",
            });
        };
        let rules = self.policy.rules(state.spec.lan, state.spec.member, &base);
        rules
            .validate()
            .map_err(|what| Error::InvalidArgument { what })?;
        if let Some(state) = self
            .ports
            .get_mut(usize::from(index))
            .and_then(Option::as_mut)
        {
            state.base = base;
        }
        self.enforce(p.now_ns(), index, rules);
        Ok(())
    }

    /// Puts port policy item `item` at entry `entry` (`None`: the entry
    /// was emptied) and applies it to its port if that exists. Refused,
    /// and nothing changed, if the port's rules would not hold.
    pub fn set_policy_item(
        &mut self,
        p: &mut P,
        entry: u32,
        item: Option<PortPolicyRepr>,
    ) -> Result<()> {
        let before = self.policy.get(entry);
        self.policy.set(entry, item);
        let now = p.now_ns();
        let mut failed = None;
        let affected: Vec<(PortIndex, PortRules)> = self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as PortIndex, s.as_ref()?)))
            .filter(|(_, s)| {
                [before, item]
                    .iter()
                    .flatten()
                    .any(|it| it.lan == s.spec.lan && it.member == s.spec.member)
            })
            .map(|(i, s)| (i, self.policy.rules(s.spec.lan, s.spec.member, &s.base)))
            .collect();
        for (_, rules) in &affected {
            if let Err(what) = rules.validate() {
                failed = Some(what);
            }
        }
        if let Some(what) = failed {
            self.policy.set(entry, before);
            return Err(Error::InvalidArgument { what });
        }
        for (i, rules) in affected {
            self.enforce(now, i, rules);
        }
        Ok(())
    }

    /// Puts `rules` in force on port `index` (its leases kept).
    fn enforce(&mut self, now: u64, index: PortIndex, rules: PortRules) {
        let Some(state) = self
            .ports
            .get_mut(usize::from(index))
            .and_then(Option::as_mut)
        else {
            return;
        };
        state.guard = Guard::new(rules, state.mac, now);
        state.rate_until = None;
        if let Some(lan) = self.lans.get(state.lan).and_then(Option::as_ref) {
            state
                .guard
                .set_leases(port_leases(&lan.mgmt, index).chain(state.snooped.live(now)));
        }
        self.any_private = self.ports.iter().flatten().any(|q| q.guard.is_private());
    }

    /// Port `index`'s policy.
    pub fn port_rules(&self, index: PortIndex) -> Option<&PortRules> {
        self.ports
            .get(usize::from(index))
            .and_then(Option::as_ref)
            .map(|s| s.guard.rules())
    }

    /// Removes port `index`: link down, the member's port closed and its
    /// grants revoked. If the member still maps the pages, they stay
    /// granted (never reused) until [`Switch::housekeep`] can revoke them.
    pub fn remove_port(&mut self, p: &mut P, index: PortIndex) -> Result<()> {
        let i = usize::from(index);
        let state = self
            .ports
            .get_mut(i)
            .and_then(Option::take)
            .ok_or(Error::InvalidArgument {
                what: "no such switch port",
            })?;
        if let Some(slot) = self.lans.get_mut(state.lan) {
            if let Some(lan) = slot.as_mut() {
                lan.fdb.forget_port(index);
                lan.mgmt.forget_port(index, p.now_ns());
                lan.ports.retain(|&q| q != index);
                if lan.ports.is_empty() && lan.uplink.is_none() {
                    *slot = None;
                }
            }
        }
        let Some(mut share) = self.shares.get_mut(i).and_then(Option::take) else {
            return Ok(());
        };
        // Tell a well-behaved member first; it cannot hold us up.
        let _ = share.mem().store_u32(
            control_field::LINK_STATE.start,
            net::LINK_DOWN,
            Ordering::Release,
        );
        let _ = p.notify(state.evtchn);
        match share.destroy(p) {
            Ok(()) => Ok(()),
            Err(Error::GrantInUse { .. }) => {
                self.dying.push(share);
                Ok(())
            }
            Err(e) => {
                self.dying.push(share);
                Err(e)
            }
        }
    }

    /// Periodic work: forget aged addresses and revoke what removed
    /// members have unmapped since. Returns the shares still waiting.
    pub fn housekeep(&mut self, p: &mut P) -> usize {
        let now = p.now_ns();
        for lan in self.lans.iter_mut().flatten() {
            lan.fdb.expire(now);
        }
        self.dying.retain_mut(|s| s.destroy(p).is_err());
        self.dying.len()
    }

    /// The ports in use: (index, LAN, member, MAC, counters, up).
    pub fn ports(&self) -> impl Iterator<Item = PortInfo> + '_ {
        self.ports.iter().enumerate().filter_map(|(i, s)| {
            let s = s.as_ref()?;
            Some(PortInfo {
                index: i as PortIndex,
                lan: s.spec.lan,
                member: s.spec.member,
                mac: s.mac,
                counters: s.counters,
                state: match s.link {
                    Link::Waiting { .. } => PortLink::Waiting,
                    Link::Up { features, .. } => PortLink::Up { features },
                    Link::Broken => PortLink::Broken,
                },
            })
        })
    }

    /// When the earliest hold ends or a rate-limited port may send again
    /// (the loop must look again by then even if no trigger comes).
    pub fn next_deadline(&self) -> Option<u64> {
        self.ports
            .iter()
            .flatten()
            .flat_map(|q| {
                let hold = q.held.map(|h| h.since_ns.saturating_add(HOLD_NS));
                [hold, q.rate_until]
            })
            .flatten()
            .min()
    }

    /// Each LAN's id and management endpoint (leases, counters).
    pub fn lans(&self) -> impl Iterator<Item = (LanId, &Mgmt)> + '_ {
        self.lans.iter().flatten().map(|l| (l.id, &l.mgmt))
    }

    /// The port whose member triggers arrive on `evtchn`.
    pub fn port_for_evtchn(&self, evtchn: Port) -> Option<PortIndex> {
        self.ports
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.evtchn == evtchn))
            .map(|i| i as PortIndex)
    }

    /// One round: every port's pending frames (up to the budget each)
    /// forwarded, rx lanes published, members triggered as asked.
    pub fn poll(&mut self, p: &mut P) -> Round {
        let now = p.now_ns();
        self.poll_at(p, now)
    }

    /// [`Switch::poll`] with the time read by the caller: a loop of rounds
    /// reads the clock once (on Xen an RDTSC may be an exit), and ages and
    /// holds are in seconds and milliseconds.
    pub fn poll_at(&mut self, p: &mut P, now: u64) -> Round {
        self.poll_with(p, now, &mut NoUplinks)
    }

    /// [`Switch::poll_at`] with the LANs' uplinks: after the ports, each
    /// uplink is read (up to the budget of frames, like a port) and its
    /// frames switched; frames for an uplink go out through `uplinks`
    /// during the round.
    pub fn poll_with(&mut self, p: &mut P, now: u64, uplinks: &mut dyn Uplinks) -> Round {
        let n = self.ports.len();
        let mut round = Round::default();
        let any_uplink = self.lans.iter().flatten().any(|l| l.uplink.is_some());
        if n == 0 && !any_uplink {
            return round;
        }
        let start = self.next_start % n.max(1);
        self.next_start = (start + 1) % n.max(1);
        let mut uplink_buf = core::mem::take(&mut self.uplink_buf);
        // A device that hands over GSO frames gives up to 64 KiB.
        uplink_buf.resize(net::GSO_MAX_FRAME, 0);
        let mut fwd = Fwd {
            shares: &self.shares,
            ports: &mut self.ports,
            lans: &mut self.lans,
            dests: &mut self.dests,
            scratch: &mut self.scratch,
            whole_buf: &mut self.whole_buf,
            open: (0..n).map(|_| None).collect(),
            replies: &mut self.replies,
            reply_lens: &mut self.reply_lens,
            budget: self.config.budget,
            emitted: 0,
            now,
            any_private: self.any_private,
            uplinks,
        };
        for k in 0..n {
            fwd.serve_port((start + k) % n, &mut round);
        }
        if any_uplink {
            for slot in 0..fwd.lans.len() {
                fwd.serve_uplink(slot, &mut uplink_buf, &mut round);
            }
        }
        round.busy |= fwd.uplinks.flush();
        self.uplink_buf = uplink_buf;
        round.emitted = fwd.emitted;
        for i in 0..n {
            fwd.flush_port(i);
        }
        for s in self.ports.iter_mut().flatten() {
            if core::mem::take(&mut s.notify) {
                // A member that closed its end is not our problem.
                let _ = p.notify(s.evtchn);
                round.triggers += 1;
                #[cfg(feature = "hostile")]
                for _ in 0..crate::hostile::flood() {
                    let _ = p.notify(s.evtchn);
                }
            }
        }
        round
    }
}

/// The switch's state during one round: shares borrowed shared (lanes
/// borrow their memory), everything else exclusively.
struct Fwd<'s, P: Platform> {
    shares: &'s [Option<Share<P>>],
    ports: &'s mut [Option<PortState>],
    lans: &'s mut [Option<Lan>],
    scratch: &'s mut Scratch,
    /// [`Switch::whole_buf`].
    whole_buf: &'s mut Vec<u8>,
    /// Destination senders resumed this round, published and parked at
    /// its end.
    open: Vec<Option<FrameSender<'s>>>,
    replies: &'s mut Vec<u8>,
    reply_lens: &'s mut Vec<usize>,
    dests: &'s mut Vec<PortIndex>,
    /// [`Switch::any_private`].
    any_private: bool,
    budget: u32,
    /// Frames made so far this round ([`Round::emitted`]).
    emitted: u64,
    now: u64,
    uplinks: &'s mut dyn Uplinks,
}

impl<'s, P: Platform> Fwd<'s, P> {
    /// Reads up to the budget of frames from LAN slot `slot`'s uplink and
    /// switches each to the LAN's ports (and its endpoint).
    fn serve_uplink(&mut self, slot: usize, buf: &mut [u8], round: &mut Round) {
        let Some(device) = self
            .lans
            .get(slot)
            .and_then(Option::as_ref)
            .and_then(|l| l.uplink)
            .map(|u| u.device)
        else {
            return;
        };
        for _ in 0..self.budget {
            let Some((len, meta)) = self.uplinks.recv(device, buf) else {
                return;
            };
            round.frames += 1;
            // Longer than the uplink's MTU only as a GSO frame (checked
            // against its offload fields per destination).
            let fits = len <= UPLINK_MAX_FRAME || meta.gso_type != 0;
            match buf.get(..len).filter(|f| f.len() >= 14 && fits) {
                Some(frame) => self.forward_from_uplink(slot, frame, meta),
                None => {
                    if let Some(u) = self.uplink_mut(slot) {
                        u.drop_bad_frame += 1;
                    }
                }
            }
        }
        round.busy = true;
    }

    fn uplink_mut(&mut self, slot: usize) -> Option<&mut UplinkCounters> {
        let lan = self.lans.get_mut(slot)?.as_mut()?;
        lan.uplink.as_mut().map(|u| &mut u.counters)
    }

    /// Switches one frame that came in on LAN slot `slot`'s uplink: to the
    /// port its destination was learned on, or (group, unknown) to every
    /// port of the LAN; never back out of the uplink. Its offloads (`meta`)
    /// are resolved per destination, as a member's are.
    fn forward_from_uplink(&mut self, slot: usize, frame: &[u8], meta: FrameMeta) {
        let now = self.now;
        let Some(lan) = self.lans.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(up) = lan.uplink.as_mut() else {
            return;
        };
        up.counters.rx_frames += 1;
        up.counters.rx_bytes += frame.len() as u64;
        let (Some(dst), Some(srcmac)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            up.counters.drop_bad_frame += 1;
            return;
        };
        if is_group(&srcmac) || srcmac == lan.mgmt.mac() {
            up.counters.drop_spoof += 1;
            return;
        }
        match lan.fdb.learn_uplink(&srcmac, now) {
            Learned::Yes => {}
            Learned::Full => up.counters.unlearned += 1,
            Learned::Spoof => {
                up.counters.drop_spoof += 1;
                return;
            }
        }
        if let Some(said) = snoop::snoop(frame) {
            learn_lease(&mut self.ports[..], lan, said, now);
        }
        self.replies.clear();
        self.reply_lens.clear();
        if lan.mgmt.wants(dst) {
            self.emitted += to_endpoint(
                &mut lan.mgmt,
                UPLINK_PORT,
                now,
                frame,
                &meta,
                self.scratch,
                (self.replies, self.reply_lens),
            );
        }
        self.dests.clear();
        if dst != lan.mgmt.mac() {
            match (!is_group(&dst))
                .then(|| lan.fdb.lookup(&dst, now))
                .flatten()
            {
                // For the uplink's own side: nobody here may see it.
                Some(UPLINK_PORT) => {}
                Some(d) => self.dests.push(d),
                None => self.dests.extend(lan.ports.iter().copied()),
            }
        }
        for k in 0..self.dests.len() {
            let d = self.dests[k];
            self.deliver(d, Body::Private(frame, meta), false);
        }
        if !self.reply_lens.is_empty() {
            self.send_replies(slot);
        }
    }

    /// Sends one frame out of LAN slot `slot`'s uplink, its offloads
    /// resolved (segmented, checksums completed) as for a port that
    /// accepted what the device takes ([`Uplinks::features`]).
    fn send_uplink(&mut self, slot: usize, frame: &[u8], meta: FrameMeta) {
        let Some(lan) = self.lans.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let Some(up) = lan.uplink.as_mut() else {
            return;
        };
        let (device, uplinks, c) = (up.device, &mut *self.uplinks, &mut up.counters);
        let features = uplinks.features(device, frame, &meta);
        let mut made = 0u64;
        let verdict = offload::deliver(
            frame,
            &meta,
            features,
            UPLINK_MAX_FRAME,
            self.scratch,
            &mut |f, m| {
                if uplinks.send(device, f, m) {
                    c.tx_frames += 1;
                    c.tx_bytes += f.len() as u64;
                    made += 1;
                    true
                } else {
                    false
                }
            },
        );
        self.emitted += made;
        match verdict {
            Verdict::Delivered { .. } => {}
            Verdict::Partial { dropped, .. } => c.drop_tx_full += u64::from(dropped),
            Verdict::Dropped(DropCause::LaneFull) => c.drop_tx_full += 1,
            Verdict::Dropped(DropCause::TooBig) => c.drop_too_big += 1,
            Verdict::Dropped(_) => c.drop_offload += 1,
        }
    }

    fn port(&mut self, i: usize) -> Option<&mut PortState> {
        self.ports.get_mut(i).and_then(Option::as_mut)
    }

    fn serve_port(&mut self, i: usize, round: &mut Round) {
        let shares = self.shares;
        let Some(share) = shares.get(i).and_then(Option::as_ref) else {
            return;
        };
        let mem = share.mem();
        let now = self.now;
        let Some(state) = self.port(i) else { return };
        let parked = match &mut state.link {
            Link::Waiting { rx, tx } => {
                let (rx, tx) = (*rx, *tx);
                if let Err(e) = bring_up(mem, state, rx, tx) {
                    log::warn!(
                        "port {i} (domain {}): member refused: {e}",
                        state.spec.member
                    );
                    state.counters.lane_errors += 1;
                    state.link = Link::Broken;
                }
                return;
            }
            Link::Up { from, .. } => {
                // Out of credit: not before its refill, even if a round
                // comes earlier (another port's trigger).
                if state.rate_until.is_some_and(|t| now < t) {
                    return;
                }
                if let Err(at) = state.guard.ready(now) {
                    // Out of credit: not read, its lane fills, its member
                    // waits. The deadline brings the switch back.
                    state.rate_until = Some(at);
                    state.counters.rate_limited += 1;
                    return;
                }
                state.rate_until = None;
                match from.take() {
                    Some(parked) => parked,
                    None => return,
                }
            }
            Link::Broken => return,
        };
        let layout = state.layout.tx;
        let mut rx = match layout
            .lane()
            .and_then(|l| FrameReceiver::resume(layout.window(mem)?, l, parked))
        {
            Ok(rx) => rx,
            Err(e) => return break_port(state, i, e),
        };
        let slot_budget = self.work_budget();
        rx.set_slot_budget(slot_budget);
        #[cfg(feature = "hostile")]
        let frames_before = round.frames;
        let result = self.drain(i, &mut rx, round);
        round.slots += u64::from(slot_budget - rx.slot_budget());
        let Some(state) = self.port(i) else { return };
        #[cfg(feature = "hostile")]
        if let Some(bogus) = crate::hostile::bogus_cons() {
            // After a round that read frames of this port.
            if round.frames > frames_before {
                let _ = layout
                    .window(mem)
                    .and_then(|w| w.store_u32(lane::header::CONS, bogus, Ordering::Release));
            }
        }
        match (result, &mut state.link) {
            (Ok(()), Link::Up { from, .. }) => *from = Some(rx.park()),
            (Ok(()), _) => {}
            (Err(e), _) => break_port(state, i, e),
        }
    }

    /// Reads up to the budget of frames from port `i` and forwards each.
    /// The port is charged for what it makes the switch do, not only for
    /// the frames it finishes: the slots read (its receiver's slot budget,
    /// set by the caller) and the frames its frames make.
    fn drain(&mut self, i: usize, rx: &mut FrameReceiver<'_>, round: &mut Round) -> Result<()> {
        match self.retry_held(i) {
            Retry::Free => {}
            // Still waiting for room: the source's lane fills up, which is
            // the backpressure its member sees. Room arrived while arming
            // the destination's trigger: try again next round; otherwise
            // the destination's trigger (or the hold's end) wakes us.
            Retry::Waiting { room } => {
                round.busy |= room;
                return Ok(());
            }
        }
        if rx.poll()? == 0 && rx.prepare_wait()? == 0 {
            return Ok(());
        }
        let mut served = 0;
        let emitted_before = self.emitted;
        let work_budget = u64::from(self.work_budget());
        while served < self.budget
            && rx.slot_budget() > 0
            && self.emitted - emitted_before < work_budget
        {
            if let Some(at) = self.out_of_credit(i) {
                if rx.release()? {
                    self.mark_notify(i);
                }
                if let Some(s) = self.port(i) {
                    s.rate_until = Some(at);
                    s.counters.rate_limited += 1;
                }
                return Ok(());
            }
            match rx.next_lane() {
                Ok(Some(mut frame)) => {
                    served += 1;
                    round.frames += 1;
                    if let Some(room) = self.forward(i as PortIndex, &mut frame) {
                        // Held: read nothing more of this port for now.
                        if rx.release()? {
                            self.mark_notify(i);
                        }
                        round.busy |= room;
                        return Ok(());
                    }
                }
                Ok(None) => {
                    // The port's slots for this round are used up.
                    if rx.slot_budget() == 0 {
                        break;
                    }
                    // Batch used up: release, then look once more (armed).
                    if rx.release()? {
                        self.mark_notify(i);
                    }
                    if rx.prepare_wait()? == 0 {
                        return Ok(());
                    }
                }
                Err(Error::Protocol { what }) => {
                    served += 1;
                    if let Some(s) = self.port(i) {
                        s.counters.drop_bad_frame += 1;
                        if s.counters.drop_bad_frame.is_power_of_two() {
                            log::warn!(
                                "port {i} (domain {}): bad frame ({what}); {} so far",
                                s.spec.member,
                                s.counters.drop_bad_frame
                            );
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if rx.release()? {
            self.mark_notify(i);
        }
        round.busy = true;
        Ok(())
    }

    /// What one port may cost per round, both in slots read and in frames
    /// its frames make: as much as `budget` of the longest frames.
    fn work_budget(&self) -> u32 {
        self.budget.saturating_mul(net::GSO_MAX_SLOTS)
    }

    /// Whether port `i` ran out of rate credit (and until when).
    fn out_of_credit(&mut self, i: usize) -> Option<u64> {
        let now = self.now;
        let guard = &mut self.port(i)?.guard;
        if guard.has_credit() {
            return None;
        }
        guard.ready(now).err()
    }

    fn mark_notify(&mut self, i: usize) {
        if let Some(s) = self.port(i) {
            s.notify = true;
        }
    }

    /// Learns the source, picks the destinations, and delivers one frame;
    /// broadcasts and frames for the LAN's management endpoint go to it
    /// too, and its replies are switched like any frame. Returns
    /// `Some(room)` if the frame is held (see [`HOLD_NS`]); `room`: the
    /// destination had room again by the time its trigger was armed.
    ///
    /// Every decision reads the frame's private head only; the rest of its
    /// bytes are copied once, to each destination, or into the private
    /// buffer first when the frame needs them there.
    fn forward(&mut self, src: PortIndex, lane_frame: &mut LaneFrame<'_, '_>) -> Option<bool> {
        let now = self.now;
        let meta = lane_frame.meta();
        let len = lane_frame.len();
        let sp = self
            .ports
            .get_mut(usize::from(src))
            .and_then(Option::as_mut)?;
        sp.counters.rx_frames += 1;
        sp.counters.rx_bytes += len as u64;
        // Every frame read counts against the port's rate, refused or not.
        sp.guard.charge(len);
        // The assembler guarantees an Ethernet header (14 bytes), and the
        // head holds at least that much.
        let head = lane_frame.head();
        let (Some(dst), Some(srcmac)) = (mac_at(head, 0), mac_at(head, 6)) else {
            sp.counters.drop_bad_frame += 1;
            return None;
        };
        let lan_slot = sp.lan;
        let lan = self.lans.get_mut(lan_slot).and_then(Option::as_mut)?;
        // An uplink sends from a private copy of the whole frame (it
        // segments and completes checksums for the network): on a LAN
        // with one, frames are copied whole. Offloads are checked on the
        // head (`deliver`, `offload::pass_through`).
        let whole = lan.uplink.is_some()
            || lan.mgmt.wants(dst)
            || sp.guard.reads_whole_frame(head)
            || hostile_lies();
        if whole && lane_frame.whole().is_err() {
            sp.counters.drop_bad_frame += 1;
            return None;
        }
        let lane_frame = &*lane_frame;
        // The private bytes: the head, or all of the frame when `whole`.
        let frame = lane_frame.head();
        if is_group(&srcmac) || srcmac == lan.mgmt.mac() {
            sp.counters.drop_spoof += 1;
            return None;
        }
        let memo = sp.route.filter(|r| {
            r.generation == lan.fdb.generation() && r.now == now && r.src == srcmac && r.dst == dst
        });
        let learned = match memo {
            Some(_) => Learned::Yes,
            None => lan.fdb.learn(&srcmac, src, now),
        };
        if learned == Learned::Spoof {
            sp.counters.drop_spoof += 1;
            return None;
        }
        if let Err(r) = sp.guard.check(frame, now) {
            sp.counters.drop_policy.count(r);
            return None;
        }
        let src_private = sp.guard.is_private();
        self.replies.clear();
        self.reply_lens.clear();
        if lan.mgmt.wants(dst) {
            let leases_before = lan.mgmt.lease_changes();
            self.emitted += to_endpoint(
                &mut lan.mgmt,
                src,
                now,
                frame,
                &meta,
                self.scratch,
                (self.replies, self.reply_lens),
            );
            if lan.mgmt.lease_changes() != leases_before {
                sp.guard
                    .set_leases(port_leases(&lan.mgmt, src).chain(sp.snooped.live(now)));
            }
        }
        self.dests.clear();
        let mut uplink = false;
        if dst != lan.mgmt.mac() {
            let to = if is_group(&dst) {
                None
            } else if let Some(r) = memo {
                r.to
            } else {
                let to = lan.fdb.lookup(&dst, now);
                if learned == Learned::Yes {
                    sp.route = Some(Route {
                        generation: lan.fdb.generation(),
                        now,
                        src: srcmac,
                        dst,
                        to,
                    });
                }
                to
            };
            match to {
                // Addressed to its own port: nobody else may see it.
                Some(d) if d == src => {}
                Some(UPLINK_PORT) => uplink = true,
                Some(d) => self.dests.push(d),
                None => {
                    uplink = lan.uplink.is_some();
                    self.dests
                        .extend(lan.ports.iter().copied().filter(|&d| d != src));
                }
            }
        }
        if uplink {
            self.send_uplink(lan_slot, frame, meta);
        }
        if self.any_private && !self.dests.is_empty() {
            self.keep_allowed(src, src_private, !is_group(&dst));
        }
        let mut held = None;
        if self.dests.len() == 1 && !is_group(&dst) {
            // Unicast to one port: a full lane holds the frame a while.
            let d = self.dests[0];
            if self.deliver(d, Body::Lane(lane_frame), true) == Delivery::Full
                && self.hold(src, d, lane_frame, meta, now)
            {
                held = Some(self.arm(d, len));
            }
        } else {
            for k in 0..self.dests.len() {
                let d = self.dests[k];
                self.deliver(d, Body::Lane(lane_frame), false);
            }
        }
        if !self.reply_lens.is_empty() {
            self.send_replies(lan_slot);
        }
        held
    }

    /// Removes the destinations a private port may not reach, or that are
    /// private themselves (members never reach each other through a
    /// private port). A unicast frame refused so is counted at its source.
    fn keep_allowed(&mut self, src: PortIndex, src_private: bool, unicast: bool) {
        let ports = &*self.ports;
        let before = self.dests.len();
        self.dests.retain(|&d| {
            !src_private
                && !ports
                    .get(usize::from(d))
                    .and_then(Option::as_ref)
                    .is_some_and(|q| q.guard.is_private())
        });
        if unicast && self.dests.len() < before {
            if let Some(sp) = self.port(usize::from(src)) {
                sp.counters.drop_policy.count(Refusal::Private);
            }
        }
    }

    /// Keeps `frame` at `src` for destination `d`; `false` (dropped) if
    /// `d` is stalled already.
    fn hold(
        &mut self,
        src: PortIndex,
        d: PortIndex,
        frame: &LaneFrame<'_, '_>,
        meta: FrameMeta,
        now: u64,
    ) -> bool {
        let stalled = self.port(usize::from(d)).is_none_or(|q| q.stalled);
        if stalled {
            if let Some(q) = self.port(usize::from(d)) {
                q.counters.drop_rx_full += 1;
            }
            return false;
        }
        let Some(sp) = self.port(usize::from(src)) else {
            return false;
        };
        sp.held_buf.clear();
        if frame.copy_into(&mut sp.held_buf).is_err() {
            // Cannot happen (the pieces lie in the lane); dropped if it did.
            sp.counters.drop_bad_frame += 1;
            return false;
        }
        sp.held = Some(Held {
            len: frame.len(),
            meta,
            dst: d,
            since_ns: now,
        });
        true
    }

    /// Asks destination `d` to trigger the switch once it frees room for
    /// `len` bytes (the lane's final check); returns whether it has room
    /// already.
    fn arm(&mut self, d: PortIndex, len: usize) -> bool {
        match self.open.get_mut(usize::from(d)).and_then(Option::as_mut) {
            Some(tx) => tx.prepare_wait(len).unwrap_or(false),
            None => false,
        }
    }

    /// Tries the frame port `i` holds again.
    fn retry_held(&mut self, i: usize) -> Retry {
        let now = self.now;
        let Some(sp) = self.port(i) else {
            return Retry::Free;
        };
        let Some(h) = sp.held else {
            return Retry::Free;
        };
        let buf = core::mem::take(&mut sp.held_buf);
        let frame = buf.get(..h.len).unwrap_or(&[]);
        let result = match self.deliver(h.dst, Body::Private(frame, h.meta), true) {
            Delivery::Full if now.saturating_sub(h.since_ns) < HOLD_NS => Retry::Waiting {
                room: self.arm(h.dst, h.len),
            },
            Delivery::Full => {
                if let Some(q) = self.port(usize::from(h.dst)) {
                    q.stalled = true;
                    q.counters.drop_rx_full += 1;
                }
                Retry::Free
            }
            Delivery::Done => Retry::Free,
        };
        if let Some(sp) = self.port(i) {
            sp.held_buf = buf;
            if result == Retry::Free {
                sp.held = None;
            }
        }
        result
    }

    /// Switches what the management endpoint of LAN slot `lan_slot` said.
    fn send_replies(&mut self, lan_slot: usize) {
        let replies = core::mem::take(self.replies);
        let lens = core::mem::take(self.reply_lens);
        let mut at = 0;
        for &len in &lens {
            let Some(reply) = replies.get(at..at + len) else {
                break;
            };
            at += len;
            let Some(lan) = self.lans.get_mut(lan_slot).and_then(Option::as_mut) else {
                break;
            };
            self.dests.clear();
            let mut uplink = false;
            match mac_at(reply, 0)
                .filter(|m| !is_group(m))
                .and_then(|m| lan.fdb.lookup(&m, self.now))
            {
                Some(UPLINK_PORT) => uplink = true,
                Some(d) => self.dests.push(d),
                None => {
                    uplink = lan.uplink.is_some();
                    self.dests.extend(lan.ports.iter().copied());
                }
            }
            if uplink {
                self.send_uplink(lan_slot, reply, FrameMeta::default());
            }
            for k in 0..self.dests.len() {
                let d = self.dests[k];
                self.deliver(d, Body::Private(reply, FrameMeta::default()), false);
            }
        }
        *self.replies = replies;
        *self.reply_lens = lens;
    }

    /// Writes one frame into port `d`'s rx lane, resolving its offloads
    /// for that port (published at the end of the round).
    /// With `may_hold`, a frame that found no room at all is not counted
    /// as dropped but reported `Full` (the caller holds it).
    fn deliver(&mut self, d: PortIndex, body: Body<'_, '_, '_>, may_hold: bool) -> Delivery {
        // A lane frame's offloads from its receiver, in registers.
        let meta = match body {
            Body::Private(_, meta) => meta,
            Body::Lane(f) => f.meta(),
        };
        let i = usize::from(d);
        let shares = self.shares;
        let (Some(share), Some(state)) = (
            shares.get(i).and_then(Option::as_ref),
            self.ports.get_mut(i).and_then(Option::as_mut),
        ) else {
            return Delivery::Done;
        };
        let layout = state.layout.rx;
        let Link::Up {
            to,
            features,
            max_frame,
            dirty,
            ..
        } = &mut state.link
        else {
            return Delivery::Done;
        };
        let (features, max_frame) = (*features, *max_frame);
        let Some(open) = self.open.get_mut(i) else {
            return Delivery::Done;
        };
        if open.is_none() {
            let Some(parked) = to.take() else {
                return Delivery::Done;
            };
            match layout
                .lane()
                .and_then(|l| FrameSender::resume(layout.window(share.mem())?, l, parked))
            {
                Ok(tx) => *open = Some(tx),
                Err(e) => {
                    break_port(state, i, e);
                    return Delivery::Done;
                }
            }
        }
        let Some(tx) = open.as_mut() else {
            return Delivery::Done;
        };
        let mut bytes = 0u64;
        let mut made = 0u64;
        let mut failed = None;
        // All private (or made so by `forward`): offloads resolved for this
        // destination. Otherwise the offload checks run on the private head
        // and the frame's length (`offload::pass_through`): a frame that
        // goes unchanged goes with its head from our copy and the rest
        // straight from the source's slots; one this destination needs
        // changed (a checksum completed, segments cut) is copied whole
        // first, its head from our copy too.
        let private = match body {
            Body::Private(frame, _) => Ok(frame),
            // A plain frame (the common case, kept short), whole or not:
            // no offload to check, as `pass_through` and `deliver` would
            // find (the receiver's rules made it at least `FRAME_MIN`
            // bytes), so it goes straight to the lane.
            Body::Lane(f)
                if meta.flags & !flags::DATA_VALIDATED == 0
                    && (meta.gso_type, meta.gso_size, meta.gso_flags) == (0, 0, 0) =>
            {
                if f.len() > max_frame {
                    Err(Err(DropCause::TooBig))
                } else {
                    let mut m = FrameMeta::default();
                    if meta.flags & flags::DATA_VALIDATED != 0
                        && features & features::DATA_VALIDATED != 0
                    {
                        m.flags |= flags::DATA_VALIDATED;
                    }
                    Err(Ok((f, m)))
                }
            }
            Body::Lane(f) if f.is_whole() => Ok(f.head()),
            Body::Lane(f) => {
                match offload::pass_through(f.head(), f.len(), &meta, features, max_frame) {
                    Ok(offload::Pass::As(m)) => Err(Ok((f, m))),
                    Err(cause) => Err(Err(cause)),
                    Ok(offload::Pass::NeedsWhole) => {
                        self.whole_buf.clear();
                        // Fails only if the receiver's pieces overran the
                        // frame's length, which it bounds.
                        match f.copy_into(self.whole_buf) {
                            Ok(()) => Ok(&self.whole_buf[..]),
                            Err(_) => Err(Err(DropCause::BadOffload)),
                        }
                    }
                }
            }
        };
        let verdict = match private {
            Ok(frame) => offload::deliver(
                frame,
                &meta,
                features,
                max_frame,
                self.scratch,
                &mut |f, m| match send(tx, f, m) {
                    Ok(true) => {
                        bytes += f.len() as u64;
                        made += 1;
                        true
                    }
                    Ok(false) => false,
                    Err(e) => {
                        failed.get_or_insert(e);
                        false
                    }
                },
            ),
            Err(Err(cause)) => Verdict::Dropped(cause),
            // The test-only hostile build lies through `send`, on whole
            // frames (`forward` makes every frame whole while it lies).
            Err(Ok((f, m))) => match if f.is_whole() && hostile_lies() {
                send(tx, f.head(), m)
            } else {
                tx.send_lane(f, m)
            } {
                Ok(true) => {
                    bytes += f.len() as u64;
                    made += 1;
                    Verdict::Delivered { frames: 1 }
                }
                Ok(false) => Verdict::Dropped(DropCause::LaneFull),
                Err(e) => {
                    failed.get_or_insert(e);
                    Verdict::Dropped(DropCause::LaneFull)
                }
            },
        };
        self.emitted += made;
        let c = &mut state.counters;
        let mut result = Delivery::Done;
        match verdict {
            Verdict::Delivered { frames } => {
                c.tx_frames += u64::from(frames);
                state.stalled = false;
            }
            Verdict::Partial { frames, dropped } => {
                c.tx_frames += u64::from(frames);
                c.drop_rx_full += u64::from(dropped);
            }
            Verdict::Dropped(DropCause::LaneFull) if may_hold => result = Delivery::Full,
            Verdict::Dropped(DropCause::LaneFull) => c.drop_rx_full += 1,
            Verdict::Dropped(DropCause::TooBig) => c.drop_too_big += 1,
            Verdict::Dropped(_) => c.drop_offload += 1,
        }
        c.tx_bytes += bytes;
        if bytes > 0 {
            *dirty = true;
        }
        if let Some(e) = failed {
            // The sender refused what offload produced: a bug of ours, or
            // the member broke the lane's indexes.
            *open = None;
            break_port(state, i, e);
            return Delivery::Done;
        }
        result
    }

    /// Publishes the rx slots written to port `i` this round and parks
    /// its sender.
    fn flush_port(&mut self, i: usize) {
        let Some(mut tx) = self.open.get_mut(i).and_then(Option::take) else {
            return;
        };
        let Some(state) = self.ports.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let Link::Up { to, dirty, .. } = &mut state.link else {
            return;
        };
        let wrote = core::mem::take(dirty);
        let published = if wrote { tx.publish() } else { Ok(false) };
        *to = Some(tx.park());
        #[cfg(feature = "hostile")]
        let published = match (published, crate::hostile::bogus_prod()) {
            (Ok(_), Some(bogus)) if wrote => self
                .shares
                .get(i)
                .and_then(Option::as_ref)
                .ok_or(Error::InvalidArgument { what: "no share" })
                .and_then(|sh| state.layout.rx.window(sh.mem()))
                .and_then(|w| w.store_u32(lane::header::PROD, bogus, Ordering::Release))
                .map(|()| true),
            (p, _) => p,
        };
        match published {
            Ok(true) => state.notify = true,
            Ok(false) => {}
            Err(e) => break_port(state, i, e),
        }
    }
}

/// A frame to deliver: all of it private, with its offloads, or as read
/// from a lane (its head private, maybe the rest too; its offloads the
/// receiver's).
#[derive(Clone, Copy)]
enum Body<'f, 'b, 'a> {
    Private(&'f [u8], FrameMeta),
    Lane(&'f LaneFrame<'b, 'a>),
}

/// Whether the test-only hostile build is lying now (then every frame is
/// copied whole and written through [`send`]).
fn hostile_lies() -> bool {
    #[cfg(feature = "hostile")]
    return crate::hostile::lies();
    #[cfg(not(feature = "hostile"))]
    false
}

/// Writes one frame into a member's rx lane (in the test-only hostile
/// build, as its mode lies: `crate::hostile`).
fn send(tx: &mut FrameSender<'_>, frame: &[u8], meta: FrameMeta) -> Result<bool> {
    #[cfg(feature = "hostile")]
    if let Some(lie) = crate::hostile::send(tx, frame, &meta) {
        return lie;
    }
    tx.send(frame, meta)
}

/// Where a port with a held frame stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Nothing held (any more): read the port.
    Free,
    /// Still held; `room`: the destination has room now (retry at once).
    Waiting { room: bool },
}

/// What became of a frame for one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    /// Sent, dropped for a reason of its own, or the port is gone.
    Done,
    /// No room in its rx lane (only reported when the caller may hold).
    Full,
}

/// Whether a port is usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortLink {
    Waiting,
    Up { features: u32 },
    Broken,
}

/// A port as [`Switch::ports`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub index: PortIndex,
    pub lan: LanId,
    pub member: DomId,
    pub mac: Mac,
    pub counters: PortCounters,
    pub state: PortLink,
}

/// Port `port`'s running DHCP leases on its LAN, for its guard.
/// Hands `frame` from port `from` (or the uplink) to the LAN's endpoint,
/// which parses whole frames: offloads resolved first (a partial checksum
/// completed), as for a port without any. Its replies are appended to
/// `replies` (bytes, lengths) for `send_replies`; returns the frames made.
fn to_endpoint(
    mgmt: &mut Mgmt,
    from: PortIndex,
    now: u64,
    frame: &[u8],
    meta: &FrameMeta,
    scratch: &mut Scratch,
    replies: (&mut Vec<u8>, &mut Vec<usize>),
) -> u64 {
    let (bytes, lens) = replies;
    let mut made = 0;
    offload::deliver(frame, meta, 0, MGMT_MAX_FRAME, scratch, &mut |f, _| {
        made += 1;
        mgmt.receive(now, from, f, &mut |r| {
            bytes.extend_from_slice(r);
            lens.push(r.len());
        });
        true
    });
    made
}

/// The network's DHCP server, through the uplink of `lan`, leased an
/// address to a member's MAC (or took its addresses back): the member's
/// port holds it, and its guard lets the member send from it. One port at
/// most (a MAC is one port's); work bounded by the LAN's ports.
fn learn_lease(ports: &mut [Option<PortState>], lan: &Lan, said: ServerSaid, now: u64) {
    let chaddr = match said {
        ServerSaid::Ack { chaddr, .. } | ServerSaid::Nak { chaddr } => chaddr,
    };
    let Some(&index) = lan.ports.iter().find(|&&p| {
        ports
            .get(usize::from(p))
            .and_then(Option::as_ref)
            .is_some_and(|s| s.mac == chaddr)
    }) else {
        return;
    };
    let Some(state) = ports.get_mut(usize::from(index)).and_then(Option::as_mut) else {
        return;
    };
    match said {
        ServerSaid::Ack { ip, secs, .. } => {
            if state.snooped.ack(ip, secs, now) {
                log::info!(
                    "port {index} (domain {}): the uplink's DHCP server leased {}.{}.{}.{} \
                     for {secs} s (ACK {} of the port)",
                    state.spec.member,
                    ip[0],
                    ip[1],
                    ip[2],
                    ip[3],
                    state.snooped.acks()
                );
            }
        }
        ServerSaid::Nak { .. } => state.snooped.nak(),
    }
    state
        .guard
        .set_leases(port_leases(&lan.mgmt, index).chain(state.snooped.live(now)));
}

fn port_leases(mgmt: &Mgmt, port: PortIndex) -> impl Iterator<Item = HeldLease> + '_ {
    mgmt.leases()
        .filter(move |l| l.port == Some(port))
        .map(|l| HeldLease {
            ip: l.ip,
            expires_ns: l.expires_ns,
        })
}

fn break_port(state: &mut PortState, i: usize, e: Error) {
    log::warn!(
        "port {i} (domain {}): lane broken ({e}); the port stops forwarding",
        state.spec.member
    );
    state.counters.lane_errors += 1;
    state.link = Link::Broken;
    // A broken port is never served again: a frame it holds would keep
    // the switch's deadline in the past for ever.
    state.held = None;
    state.held_buf = Vec::new();
}

/// Once the member says READY: reads what it accepted (once), checks it
/// against our offer, sets the link up.
fn bring_up(
    mem: SharedMem<'_>,
    state: &mut PortState,
    rx: ConsumerState,
    tx: ProducerState,
) -> Result<()> {
    let ready = mem.load_u32(control_field::MEMBER_STATE.start, Ordering::Acquire)?;
    if ready != MEMBER_READY {
        return Ok(());
    }
    let accepted = mem.load_u32(control_field::FEATURES_ACCEPTED.start, Ordering::Relaxed)?;
    let features = net::negotiate(state.offered, accepted)?;
    let mtu = if features & features::JUMBO != 0 {
        state.mtu
    } else {
        MTU_DEFAULT
    };
    let rules = FrameAssembler::new(mtu, features)?;
    let max_frame = rules.mtu_frame();
    let (tx_lane, rx_lane) = (state.layout.tx.lane()?, state.layout.rx.lane()?);
    let mut from = FrameReceiver::net(
        Consumer::resume(state.layout.tx.window(mem)?, tx_lane, rx)?,
        rules,
    )?;
    from.set_private_head(PRIVATE_HEAD);
    let from = from.park();
    let mut to = FrameSender::new(
        Producer::resume(state.layout.rx.window(mem)?, rx_lane, tx)?,
        max_frame,
    )?;
    if features & features::GSO != 0 {
        to = to.with_gso()?;
    }
    let to = to.park();
    state.link = Link::Up {
        from: Some(from),
        to: Some(to),
        features,
        max_frame,
        dirty: false,
    };
    mem.store_u32(
        control_field::LINK_STATE.start,
        net::LINK_UP,
        Ordering::Release,
    )?;
    state.notify = true;
    log::info!(
        "port {} of LAN {} up: domain {}, features {features:#x}, mtu {mtu}",
        state.mac_string(),
        state.spec.lan,
        state.spec.member
    );
    Ok(())
}

impl PortState {
    fn mac_string(&self) -> MacFmt {
        MacFmt(self.mac)
    }
}

/// A MAC address as `02:58:00:00:00:03`.
pub struct MacFmt(pub Mac);

impl core::fmt::Display for MacFmt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

fn mac_at(frame: &[u8], at: usize) -> Option<Mac> {
    frame.get(at..at + 6)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{eth, TestMember};
    use alloc::vec;
    use share_hal::platform::EventChannels;
    use share_hal::share::Attached;
    use share_local::{LocalHost, LocalPlatform};

    const BCAST: Mac = [0xff; 6];

    type Member = TestMember<LocalPlatform>;

    struct Rig {
        host: LocalHost,
        p: LocalPlatform,
        sw: Switch<LocalPlatform>,
    }

    impl Rig {
        fn new(config: SwitchConfig) -> Self {
            let host = LocalHost::new();
            let p = host.domain(1);
            Rig {
                host,
                p,
                sw: Switch::new(config),
            }
        }

        fn join(&mut self, index: PortIndex, lan: LanId, member: DomId, accept: u32) -> Member {
            self.join_pages(index, lan, member, accept, 10)
        }

        fn join_pages(
            &mut self,
            index: PortIndex,
            lan: LanId,
            member: DomId,
            accept: u32,
            numpages: u32,
        ) -> Member {
            let spec = PortSpec {
                lan,
                member,
                mac: [0; 6],
                policy: IMPLEMENTED,
                numpages,
            };
            let r = self.sw.add_port(&mut self.p, index, spec).unwrap();
            let m = TestMember::join(self.host.domain(member), r, accept);
            self.pump();
            assert!(m.link_up(), "port {index} up after the member said ready");
            m
        }

        /// Rounds until the switch has nothing more to read.
        fn pump(&mut self) {
            for _ in 0..1000 {
                if !self.sw.poll(&mut self.p).busy {
                    return;
                }
            }
            panic!("switch still busy after 1000 rounds");
        }

        fn counters(&self, index: PortIndex) -> PortCounters {
            self.sw.ports().find(|q| q.index == index).unwrap().counters
        }
    }

    fn tags(frames: &[(Vec<u8>, FrameMeta)]) -> Vec<u8> {
        frames.iter().map(|(f, _)| f[20]).collect()
    }

    #[test]
    fn unicast_goes_to_its_port_only_group_and_unknown_flood() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 7, 2, 0);
        let mut b = rig.join(1, 7, 3, 0);
        let mut c = rig.join(2, 7, 4, 0);
        assert_eq!(a.mac, assigned_mac(7, 2));
        // Broadcast: everyone but the sender.
        a.send(&[eth(BCAST, a.mac, 60, 1)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&b.recv()), [1]);
        assert_eq!(tags(&c.recv()), [1]);
        assert!(a.recv().is_empty(), "never back to the sender");
        // Unicast to a port's MAC: that port only.
        b.send(&[eth(a.mac, b.mac, 60, 2)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&a.recv()), [2]);
        assert!(c.recv().is_empty());
        // Unknown unicast floods, until the address is learned.
        let far: Mac = [0x02, 0, 0, 0, 0, 0x99];
        a.send(&[eth(far, a.mac, 60, 3)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&b.recv()), [3]);
        assert_eq!(tags(&c.recv()), [3]);
        c.send(&[eth(a.mac, far, 60, 4)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&a.recv()), [4]);
        a.send(&[eth(far, a.mac, 60, 5)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&c.recv()), [5]);
        assert!(b.recv().is_empty(), "learned: only the port behind it");
        // A frame to the sender's own port reaches nobody.
        a.send(&[eth(a.mac, a.mac, 60, 6)], FrameMeta::default());
        rig.pump();
        assert!(b.recv().is_empty() && c.recv().is_empty() && a.recv().is_empty());
        let ca = rig.counters(0);
        assert_eq!((ca.rx_frames, ca.tx_frames), (4, 2));
    }

    #[test]
    fn lans_are_isolated() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let mut x = rig.join(2, 2, 4, 0);
        let mut y = rig.join(3, 2, 5, 0);
        a.send(&[eth(BCAST, a.mac, 60, 1)], FrameMeta::default());
        x.send(&[eth(BCAST, x.mac, 60, 2)], FrameMeta::default());
        // Unicast across LANs: the MAC is not on this LAN, so it floods
        // this LAN only.
        a.send(&[eth(y.mac, a.mac, 60, 3)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&b.recv()), [1, 3]);
        assert_eq!(tags(&y.recv()), [2]);
        assert!(x.recv().is_empty() && a.recv().is_empty());
    }

    #[test]
    fn a_port_that_never_drains_loses_only_its_own_frames() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let _stalled = rig.join(2, 1, 4, 0);
        // 10 pages: 8 slots per lane. 40 frames, broadcast and unicast.
        let mut got = Vec::new();
        for round in 0..20u8 {
            let sent = a.send(
                &[
                    eth(BCAST, a.mac, 60, round),
                    eth(b.mac, a.mac, 60, round + 100),
                ],
                FrameMeta::default(),
            );
            assert_eq!(sent, 2);
            rig.pump();
            got.extend(tags(&b.recv()));
        }
        assert_eq!(got.len(), 40, "b got every frame: {got:?}");
        let stalled = rig.counters(2);
        assert_eq!(stalled.tx_frames, 8, "the lane held 8");
        assert_eq!(stalled.drop_rx_full, 12);
        assert_eq!(rig.counters(1).drop_rx_full, 0);
    }

    /// A port's frames in one round go by its last frame's answers
    /// (`Route`) only while the forwarding database is unchanged: an
    /// address learned between two frames to it routes the second.
    #[test]
    fn an_address_learned_mid_round_routes_the_next_frames_of_that_round() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 7, 2, 0);
        let mut b = rig.join(1, 7, 3, 0);
        let mut c = rig.join(2, 7, 4, 0);
        let far: Mac = [0x02, 0, 0, 0, 0, 0x99];
        // One batch, one round: to an unknown address (flooded); a
        // broadcast from it (learned on a's port; no lookup); to it again:
        // its own port now, so nobody gets it.
        a.send(
            &[
                eth(far, a.mac, 60, 1),
                eth(BCAST, far, 60, 2),
                eth(far, a.mac, 60, 3),
            ],
            FrameMeta::default(),
        );
        assert!(rig.sw.poll(&mut rig.p).frames == 3, "one round");
        rig.pump();
        assert_eq!(tags(&b.recv()), [1, 2]);
        assert_eq!(tags(&c.recv()), [1, 2]);
        assert!(a.recv().is_empty());
    }

    #[test]
    fn spoofed_and_group_sources_are_dropped() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let mut c = rig.join(2, 1, 4, 0);
        // c claims a's address, then a group address.
        c.send(
            &[
                eth(BCAST, a.mac, 60, 1),
                eth(b.mac, [0x01, 0, 0x5e, 0, 0, 1], 60, 2),
            ],
            FrameMeta::default(),
        );
        rig.pump();
        assert!(a.recv().is_empty() && b.recv().is_empty());
        assert_eq!(rig.counters(2).drop_spoof, 2);
        // a's traffic still reaches a.
        b.send(&[eth(a.mac, b.mac, 60, 3)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&a.recv()), [3]);
    }

    #[test]
    fn ports_come_and_go_while_others_forward() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let c = rig.join(2, 1, 4, 0);
        let cmac = c.mac;
        let TestMember { mut p, att, .. } = c;
        rig.sw.remove_port(&mut rig.p, 2).unwrap();
        // Still mapped by c: its grants wait, never reused.
        assert_eq!(rig.sw.housekeep(&mut rig.p), 1);
        a.send(
            &[eth(BCAST, a.mac, 60, 1), eth(cmac, a.mac, 60, 2)],
            FrameMeta::default(),
        );
        rig.pump();
        assert_eq!(tags(&b.recv()), [1, 2], "c's address is forgotten: flooded");
        att.detach(&mut p).unwrap();
        assert_eq!(rig.sw.housekeep(&mut rig.p), 0);
        // c comes back on a new port; pinned address again.
        let mut c = rig.join(2, 1, 4, 0);
        a.send(&[eth(cmac, a.mac, 60, 3)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&c.recv()), [3]);
        assert!(b.recv().is_empty());
    }

    #[test]
    fn ports_take_turns() {
        let mut rig = Rig::new(SwitchConfig {
            budget: 1,
            ..SwitchConfig::default()
        });
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let mut c = rig.join(2, 1, 4, 0);
        a.send(&vec![eth(c.mac, a.mac, 60, 1); 4], FrameMeta::default());
        b.send(&vec![eth(c.mac, b.mac, 60, 2); 4], FrameMeta::default());
        for _ in 0..2 {
            rig.sw.poll(&mut rig.p);
        }
        let mut got = tags(&c.recv());
        got.sort();
        assert_eq!(got, [1, 1, 2, 2], "one frame of each per round");
    }

    #[test]
    fn a_member_accepting_unoffered_features_is_refused() {
        let mut rig = Rig::new(SwitchConfig::default());
        let spec = PortSpec {
            lan: 1,
            member: 2,
            mac: [0; 6],
            policy: 0,
            numpages: 10,
        };
        let r = rig.sw.add_port(&mut rig.p, 0, spec).unwrap();
        let mut p = rig.host.domain(2);
        let mut att = Attached::attach(&mut p, r).unwrap();
        let mem = att.mem();
        mem.store_u32(
            control_field::FEATURES_ACCEPTED.start,
            features::JUMBO,
            Ordering::Relaxed,
        )
        .unwrap();
        mem.store_u32(
            control_field::MEMBER_STATE.start,
            MEMBER_READY,
            Ordering::Release,
        )
        .unwrap();
        att.trigger(&mut p).unwrap();
        rig.pump();
        let info = rig.sw.ports().next().unwrap();
        assert_eq!(info.state, PortLink::Broken);
        assert_eq!(
            att.mem()
                .load_u32(control_field::LINK_STATE.start, Ordering::Acquire),
            Ok(0)
        );
    }

    #[test]
    fn checksum_offload_passes_to_members_that_accept_it() {
        let mut rig = Rig::new(SwitchConfig::default());
        let all = IMPLEMENTED;
        let mut a = rig.join(0, 1, 2, all);
        let mut b = rig.join(1, 1, 3, all);
        let mut c = rig.join(2, 1, 4, features::JUMBO);
        let meta = FrameMeta {
            flags: net::flags::CSUM_BLANK | net::flags::DATA_VALIDATED,
            csum_start: 34,
            csum_offset: 6,
            ..FrameMeta::default()
        };
        a.send(&[eth(BCAST, a.mac, 60, 1)], meta);
        a.send(&[eth(BCAST, a.mac, 9018, 2)], FrameMeta::default());
        rig.pump();
        let got_b = b.recv();
        assert_eq!(got_b.len(), 2);
        assert_eq!(got_b[0].1, meta, "passed through to a member that takes it");
        let got_c = c.recv();
        assert_eq!(tags(&got_c), [1, 2]);
        // c takes no partial checksum: the switch completed it. The field
        // held the seed (Linux's pseudo-header sum; here the tag bytes
        // 0x0101), so the bytes 34..60 plus the seed verify.
        assert_eq!(got_c[0].1, FrameMeta::default());
        let f = &got_c[0].0;
        let mut sum: u32 = 0x0101;
        for w in f[34..60].chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "the completed checksum verifies");
        assert_eq!(rig.counters(2).drop_offload, 0);
    }

    #[test]
    fn jumbo_frames_reach_only_jumbo_members() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, features::JUMBO);
        let mut b = rig.join(1, 1, 3, features::JUMBO);
        let mut c = rig.join(2, 1, 4, 0);
        a.send(
            &[eth(BCAST, a.mac, 9018, 1), eth(BCAST, a.mac, 1514, 2)],
            FrameMeta::default(),
        );
        rig.pump();
        assert_eq!(tags(&b.recv()), [1, 2]);
        assert_eq!(tags(&c.recv()), [2]);
        assert_eq!(rig.counters(2).drop_too_big, 1);
    }

    /// A member scribbling its own share: slot garbage, endless MORE
    /// chains, indexes out of range on both lanes. The switch never
    /// panics, breaks only that port, and the others keep forwarding.
    #[test]
    fn hostile_members_hurt_only_themselves() {
        use share_hal::wire::lane_header as lh;
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let mut h = rig.join(2, 1, 4, 0);
        let lay = h.layout;
        let hport = h.att.port().unwrap();
        let mem = h.att.mem();
        let check_good = |rig: &mut Rig, a: &mut Member, b: &mut Member, tag: u8| {
            a.send(&[eth(b.mac, a.mac, 60, tag)], FrameMeta::default());
            rig.pump();
            assert_eq!(tags(&b.recv()), [tag]);
        };
        // Garbage slots behind an honest index: every header byte random.
        let mut x = 0x1234_5678u32;
        for k in 0..lay.tx.slot_count {
            let off = lay.tx.slot_offset(k);
            for w in 0..16 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                mem.write_u32(off + 4 * w, x).unwrap();
            }
        }
        mem.store_u32(
            lay.tx.header + lh::PROD,
            lay.tx.slot_count,
            Ordering::Release,
        )
        .unwrap();
        h.p.notify(hport).unwrap();
        rig.pump();
        check_good(&mut rig, &mut a, &mut b, 1);
        let hc = rig.counters(2);
        assert!(hc.drop_bad_frame > 0, "{hc:?}");
        assert_eq!(hc.lane_errors, 0);
        // MORE forever: each slot says the frame goes on.
        for round in 1..4u32 {
            for k in 0..lay.tx.slot_count {
                let off = lay.tx.slot_offset(k);
                mem.write_u16(off, 2032).unwrap();
                mem.write_u16(off + 2, net::flags::MORE).unwrap();
            }
            let prod = lay.tx.slot_count * (round + 1);
            mem.store_u32(lay.tx.header + lh::PROD, prod, Ordering::Release)
                .unwrap();
            h.p.notify(hport).unwrap();
            rig.pump();
            check_good(&mut rig, &mut a, &mut b, 1 + round as u8);
        }
        // The rx lane's consumer index beyond what was produced: broken
        // as soon as the switch has to deliver to it.
        mem.store_u32(lay.rx.header + lh::CONS, 1000, Ordering::Release)
            .unwrap();
        a.send(&[eth([0xff; 6], a.mac, 60, 9)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&b.recv()), [9]);
        assert_eq!(rig.sw.ports().nth(2).unwrap().state, PortLink::Broken);
        check_good(&mut rig, &mut a, &mut b, 10);
        // A second hostile port: tx producer a ring and more ahead.
        let mut g = rig.join(3, 1, 5, 0);
        let gl = g.layout;
        g.att
            .mem()
            .store_u32(gl.tx.header + lh::PROD, 1 << 20, Ordering::Release)
            .unwrap();
        g.att.trigger(&mut g.p).unwrap();
        rig.pump();
        assert_eq!(rig.sw.ports().nth(3).unwrap().state, PortLink::Broken);
        assert_eq!(rig.counters(3).lane_errors, 1);
        check_good(&mut rig, &mut a, &mut b, 11);
        // Broken ports are removed like any other.
        rig.sw.remove_port(&mut rig.p, 2).unwrap();
        rig.sw.remove_port(&mut rig.p, 3).unwrap();
        check_good(&mut rig, &mut a, &mut b, 12);
    }

    /// A member flooding with every slot it has does not starve another
    /// Copy once: the switch decides on its private copy of a frame's
    /// head and copies the rest straight from the source's tx slots. A
    /// member rewriting its slots all the while (another thread flipping
    /// the last byte of both MACs, the only byte in which the members'
    /// assigned addresses differ, so no write tears an address) must not
    /// get a frame through with bytes other than those decided on: every
    /// frame that arrives says its receiver's address and its sender's
    /// true one, never another destination or a spoofed source.
    #[test]
    fn a_member_rewriting_its_slots_mid_copy_gets_no_other_bytes_through() {
        use core::sync::atomic::AtomicBool;
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 7, 2, 0);
        let mut b = rig.join(1, 7, 3, 0);
        let mut c = rig.join(2, 7, 4, 0);
        // B and C are learned on their ports.
        b.send(&[eth(a.mac, b.mac, 60, 0)], FrameMeta::default());
        c.send(&[eth(a.mac, c.mac, 60, 0)], FrameMeta::default());
        rig.pump();
        a.recv();
        let mem = a.att.mem();
        let (ptr, len) = (mem.as_ptr(), mem.len());
        // SAFETY: a window over A's mapping of its share, which stays
        // mapped until `a` drops after the scope below; all accesses are
        // volatile (SharedMem), as for any party writing a shared page.
        let hostile = unsafe { SharedMem::new(core::ptr::NonNull::new(ptr).unwrap(), len) };
        let lane = a.layout.tx;
        let data = |i: usize| lane.slots + i * lane.slot_size + net::SLOT_HEADER_LEN;
        let (good_dst, good_src, other) = (b.mac[5], a.mac[5], c.mac[5]);
        let stop = AtomicBool::new(false);
        let (mut at_b, mut at_c) = (0u64, 0u64);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..lane.slot_count as usize {
                        let _ = hostile.write_u8(data(i) + 5, other);
                        let _ = hostile.write_u8(data(i) + 11, other);
                        let _ = hostile.write_u8(data(i) + 5, good_dst);
                        let _ = hostile.write_u8(data(i) + 11, good_src);
                    }
                }
            });
            // Stops the writer however this thread leaves the scope (a
            // failed assertion too), or the scope would wait for ever.
            struct Stop<'s>(&'s AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            let start = std::time::Instant::now();
            while start.elapsed().as_millis() < 1500 && at_b + at_c < 200_000 {
                let frame = eth(b.mac, a.mac, 1000, 1);
                a.send_with(usize::MAX, |_| (&frame[..], FrameMeta::default()));
                rig.pump();
                for (m, n) in [(&mut b, &mut at_b), (&mut c, &mut at_c)] {
                    let mac = m.mac;
                    m.recv_with(|f, _| {
                        *n += 1;
                        assert_eq!(f[..6], mac, "a frame with another destination");
                        assert_eq!(f[6..12], a.mac, "a frame with a spoofed source");
                    });
                }
            }
        });
        assert!(at_b > 100, "frames went through ({at_b} to B, {at_c} to C)");
        let lost = rig.counters(1).drop_rx_full + rig.counters(2).drop_rx_full;
        assert_eq!(
            rig.counters(0).rx_frames,
            rig.counters(0).drop_spoof + at_b + at_c + lost
        );
    }

    /// The same for frames with segmentation offload, whose offload checks
    /// read their IP and TCP headers: passed through unchanged to a port
    /// that takes GSO (the rest copied once from the source's slots),
    /// segmented for one that does not (copied whole for it). While a
    /// thread rewrites the MACs, the IP protocol and total length and the
    /// TCP header length in A's tx slots, every frame that arrives carries
    /// its receiver's address, A's, and headers that hold for its offload
    /// (as checked on the private head), never bytes rewritten after the
    /// check. (Payload bytes may change: the writer hits the frames'
    /// second slots too, and those bytes are only moved.)
    #[test]
    fn a_member_rewriting_its_offload_frames_mid_copy_gets_no_other_bytes_through() {
        use core::sync::atomic::AtomicBool;
        let mut rig = Rig::new(SwitchConfig::default());
        let all = IMPLEMENTED;
        let pages = net::GSO_MIN_PAGES;
        let mut a = rig.join_pages(0, 7, 2, all, pages);
        let mut b = rig.join_pages(1, 7, 3, all, pages);
        let mut c = rig.join_pages(2, 7, 4, features::CSUM_BLANK, pages);
        b.send(&[eth(a.mac, b.mac, 60, 0)], FrameMeta::default());
        c.send(&[eth(a.mac, c.mac, 60, 0)], FrameMeta::default());
        rig.pump();
        a.recv();
        let meta = FrameMeta {
            flags: net::flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 16,
            gso_type: net::gso::TCPV4,
            gso_size: 1448,
            gso_flags: 0,
        };
        let to_b = tcp_super_frame(b.mac, a.mac, 3000);
        let to_c = tcp_super_frame(c.mac, a.mac, 3000);
        let (a_mac, b_mac, c_mac) = (a.mac, b.mac, c.mac);
        let mem = a.att.mem();
        let (ptr, len) = (mem.as_ptr(), mem.len());
        // SAFETY: a window over A's mapping of its share, which stays
        // mapped until `a` drops after the scope below; all accesses are
        // volatile (SharedMem), as for any party writing a shared page.
        let hostile = unsafe { SharedMem::new(core::ptr::NonNull::new(ptr).unwrap(), len) };
        let lane = a.layout.tx;
        let data = |i: usize| lane.slots + i * lane.slot_size + net::SLOT_HEADER_LEN;
        // (offset, lie): the last byte of each MAC, the IP protocol, the
        // IP total length's low byte, the TCP header length. The writer
        // reads the byte, writes the lie, then writes back what it read
        // (a stale byte if the member refilled the slot meanwhile: one
        // more lie).
        let lies = [
            (5usize, c.mac[5]),
            (11, c.mac[5]),
            (23, 17),
            (17, 0x11),
            (46, 0xf0),
        ];
        let stop = AtomicBool::new(false);
        let (mut at_b, mut at_c) = (0u64, 0u64);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..lane.slot_count as usize {
                        for (at, lie) in lies {
                            let Ok(truth) = hostile.read_u8(data(i) + at) else {
                                continue;
                            };
                            let _ = hostile.write_u8(data(i) + at, lie);
                            let _ = hostile.write_u8(data(i) + at, truth);
                        }
                    }
                }
            });
            struct Stop<'s>(&'s AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            let start = std::time::Instant::now();
            let mut n = 0usize;
            while start.elapsed().as_millis() < 1500 && at_b + at_c < 20_000 {
                a.send_with(1, |_| {
                    n += 1;
                    (if n % 2 == 1 { &to_b[..] } else { &to_c[..] }, meta)
                });
                rig.pump();
                b.recv_with(|f, m| {
                    at_b += 1;
                    assert_eq!(f[..6], b_mac, "a frame with another destination");
                    assert_eq!(f[6..12], a_mac, "a frame with a spoofed source");
                    assert_eq!(
                        // Any MTU: the headers are what is checked.
                        offload::pass_through(f, f.len(), &m, all, usize::MAX),
                        Ok(offload::Pass::As(m)),
                        "a GSO frame whose headers do not hold"
                    );
                });
                c.recv_with(|f, m| {
                    at_c += 1;
                    assert_eq!(f[..6], c_mac, "a segment with another destination");
                    assert_eq!(f[6..12], a_mac, "a segment with a spoofed source");
                    assert_eq!(m.gso_type, 0);
                    assert_eq!(f[23], 6, "a segment that is not TCP");
                    // C's MTU + 18 (a torn TCP header length of 60 makes
                    // segments of 1424 payload bytes and 94 of headers).
                    assert!(f.len() <= 1518);
                });
            }
        });
        assert!(
            at_b > 50 && at_c > 50,
            "frames went through ({at_b} to B, {at_c} segments to C)"
        );
    }

    /// sender: each round reads at most `budget` frames of each port.
    #[test]
    fn a_flooding_member_does_not_starve_the_others() {
        let mut rig = Rig::new(SwitchConfig {
            budget: 4,
            ..SwitchConfig::default()
        });
        let mut a = rig.join(0, 1, 2, 0);
        let mut f = rig.join(1, 1, 3, 0);
        let mut c = rig.join(2, 1, 4, 0);
        let (mut from_a, mut from_f) = (0, 0);
        for _ in 0..50 {
            // f keeps its 8-slot lane full; a sends one frame a round.
            f.send(&vec![eth(c.mac, f.mac, 60, 2); 8], FrameMeta::default());
            a.send(&[eth(c.mac, a.mac, 60, 1)], FrameMeta::default());
            rig.sw.poll(&mut rig.p);
            for t in tags(&c.recv()) {
                if t == 1 {
                    from_a += 1;
                } else {
                    from_f += 1;
                }
            }
        }
        assert_eq!(from_a, 50, "every frame of the quiet sender got through");
        assert_eq!(from_f, 200, "the flooder got its budget, no more");
        assert_eq!(rig.counters(2).drop_rx_full, 0);
    }

    /// A TCP/IPv4 super-frame from `src` to `dst` with `payload` bytes,
    /// its checksum partial (seeded with the pseudo-header sum).
    fn tcp_super_frame(dst: Mac, src: Mac, payload: usize) -> Vec<u8> {
        use smoltcp::wire::{
            checksum, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol,
            Ipv4Address, Ipv4Packet, TcpPacket, TcpSeqNumber,
        };
        let len = 14 + 20 + 20 + payload;
        let mut f = vec![0u8; len];
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(EthernetAddress(dst));
        eth.set_src_addr(EthernetAddress(src));
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let (s4, d4) = (Ipv4Address::new(10, 0, 0, 1), Ipv4Address::new(10, 0, 0, 2));
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len((len - 14) as u16);
        ip.clear_flags();
        ip.set_dont_frag(true);
        ip.set_hop_limit(64);
        ip.set_next_header(IpProtocol::Tcp);
        ip.set_src_addr(s4);
        ip.set_dst_addr(d4);
        ip.fill_checksum();
        let mut t = TcpPacket::new_unchecked(&mut f[34..]);
        t.set_src_port(8080);
        t.set_dst_port(5001);
        t.set_seq_number(TcpSeqNumber(1000));
        t.set_header_len(20);
        t.clear_flags();
        t.set_ack(true);
        t.set_window_len(1000);
        t.set_checksum(checksum::pseudo_header(
            &IpAddress::Ipv4(s4),
            &IpAddress::Ipv4(d4),
            IpProtocol::Tcp,
            (len - 34) as u32,
        ));
        for (k, b) in f[54..].iter_mut().enumerate() {
            *b = k as u8;
        }
        f
    }

    #[test]
    fn gso_frames_pass_to_gso_members_and_are_segmented_for_others() {
        let mut rig = Rig::new(SwitchConfig::default());
        let all = IMPLEMENTED;
        // GSO is offered only on shares whose lanes hold a max GSO frame.
        let small = rig.join(3, 1, 9, all);
        assert_eq!(
            rig.sw.ports().next().map(|q| q.state),
            Some(PortLink::Up {
                features: all & !features::GSO
            })
        );
        drop(small);
        let mut a = rig.join_pages(0, 1, 2, all, net::GSO_MIN_PAGES);
        let mut b = rig.join_pages(1, 1, 3, all, net::GSO_MIN_PAGES);
        let mut c = rig.join_pages(2, 1, 4, features::CSUM_BLANK, net::GSO_MIN_PAGES);
        let frame = tcp_super_frame(BCAST, a.mac, 20_000);
        let meta = FrameMeta {
            flags: net::flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 16,
            gso_type: net::gso::TCPV4,
            gso_size: 1448,
            gso_flags: 0,
        };
        assert_eq!(a.send(std::slice::from_ref(&frame), meta), 1);
        rig.pump();
        let got_b = b.recv();
        assert_eq!(got_b.len(), 1, "b accepted GSO: one super-frame");
        assert_eq!(got_b[0].0, frame);
        let got_c = c.recv();
        assert_eq!(
            got_c.len(),
            20_000usize.div_ceil(1448),
            "c: segments of 1448"
        );
        let payload: Vec<u8> = got_c.iter().flat_map(|(f, _)| f[54..].to_vec()).collect();
        assert_eq!(payload, frame[54..]);
        assert!(got_c
            .iter()
            .all(|(f, m)| f.len() <= 1514 && m.gso_type == 0));
        assert_eq!(rig.counters(2).tx_frames, got_c.len() as u64);
    }

    #[test]
    fn the_management_endpoint_answers_on_its_lan_only() {
        use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr, EthernetAddress, Ipv4Address};
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let mut x = rig.join(2, 2, 4, 0);
        let endpoint = MgmtConfig::for_lan(1);
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(a.mac),
            source_protocol_addr: Ipv4Address::new(10, 77, 1, 100),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Address::from(endpoint.addr),
        };
        let mut frame = eth(BCAST, a.mac, 14 + repr.buffer_len(), 0);
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        repr.emit(&mut ArpPacket::new_unchecked(&mut frame[14..]));
        a.send(&[frame.clone()], FrameMeta::default());
        rig.pump();
        let got = a.recv();
        assert_eq!(got.len(), 1, "a gets the endpoint's ARP reply");
        let reply = ArpRepr::parse(&ArpPacket::new_checked(&got[0].0[14..]).unwrap()).unwrap();
        assert_eq!(
            reply,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(endpoint.mac),
                source_protocol_addr: Ipv4Address::from(endpoint.addr),
                target_hardware_addr: EthernetAddress(a.mac),
                target_protocol_addr: Ipv4Address::new(10, 77, 1, 100),
            }
        );
        assert_eq!(
            b.recv().len(),
            1,
            "b sees the broadcast request, not the reply"
        );
        assert!(x.recv().is_empty(), "LAN 2 sees nothing");
        assert_eq!(
            rig.sw
                .lans()
                .find(|(id, _)| *id == 1)
                .unwrap()
                .1
                .counters()
                .arp_replies,
            1
        );
        // Nobody may speak as the endpoint.
        b.send(&[eth(a.mac, endpoint.mac, 60, 7)], FrameMeta::default());
        rig.pump();
        assert!(a.recv().is_empty());
        assert_eq!(rig.counters(1).drop_spoof, 1);
    }

    #[test]
    fn features_are_offered_only_where_the_lanes_carry_them() {
        let mut rig = Rig::new(SwitchConfig::default());
        // 6 pages: 4 slots per lane, too few for a 9018-byte frame.
        let _small = rig.join_pages(0, 1, 2, IMPLEMENTED, 6);
        let _mid = rig.join_pages(1, 1, 3, IMPLEMENTED, 10);
        let states: Vec<_> = rig.sw.ports().map(|q| q.state).collect();
        assert_eq!(
            states,
            [
                PortLink::Up {
                    features: features::CSUM_BLANK | features::DATA_VALIDATED
                },
                PortLink::Up {
                    features: features::CSUM_BLANK | features::DATA_VALIDATED | features::JUMBO
                },
            ]
        );
    }

    /// A receiver slower than its sender loses nothing: the frame that
    /// finds its lane full waits (and its sender's lane fills behind it).
    #[test]
    fn a_slow_receiver_holds_its_sender_instead_of_losing_frames() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let mut got = Vec::new();
        let mut sent = 0u32;
        for round in 0..40u32 {
            // a offers 8 frames a round (its lane's size), b takes 8 every
            // other round: b's 8-slot lane is full half the time.
            let frames: Vec<_> = (0..8u32)
                .map(|k| eth(b.mac, a.mac, 60, (sent + k) as u8))
                .collect();
            sent += a.send(&frames, FrameMeta::default()) as u32;
            for _ in 0..3 {
                rig.sw.poll(&mut rig.p);
            }
            if round % 2 == 1 {
                got.extend(tags(&b.recv()));
            }
        }
        for _ in 0..20 {
            rig.sw.poll(&mut rig.p);
            got.extend(tags(&b.recv()));
        }
        assert!(sent < 40 * 8, "a was held back");
        assert_eq!(got.len() as u32, sent, "nothing lost");
        let expect: Vec<u8> = (0..sent).map(|k| k as u8).collect();
        assert_eq!(got, expect, "nothing reordered");
        assert_eq!(rig.counters(1).drop_rx_full, 0);
    }

    /// A receiver that stopped costs its sender one hold; then its frames
    /// are dropped at once and the sender's other traffic goes on, until
    /// the receiver drains again.
    #[test]
    fn a_stopped_receiver_costs_one_hold_then_drops() {
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let mut stopped = rig.join(1, 1, 3, 0);
        let mut c = rig.join(2, 1, 4, 0);
        // Fill the stopped port's 8 slots, then one more: held.
        a.send(
            &vec![eth(stopped.mac, a.mac, 60, 1); 8],
            FrameMeta::default(),
        );
        rig.pump();
        a.send(
            &[eth(stopped.mac, a.mac, 60, 2), eth(c.mac, a.mac, 60, 3)],
            FrameMeta::default(),
        );
        for _ in 0..5 {
            rig.sw.poll(&mut rig.p);
        }
        assert!(c.recv().is_empty(), "behind the held frame");
        // The loop sleeps until the stopped port's trigger or the hold's end.
        assert!(!rig.sw.poll(&mut rig.p).busy, "a hold does not spin");
        let now = share_hal::platform::Clock::now_ns(&rig.p);
        assert_eq!(rig.sw.next_deadline(), Some(now + HOLD_NS));
        rig.host.advance(HOLD_NS);
        rig.pump();
        assert_eq!(tags(&c.recv()), [3], "the hold ended");
        assert_eq!(rig.counters(1).drop_rx_full, 1);
        // Stalled now: frames for it drop at once, c's get through.
        a.send(
            &[eth(stopped.mac, a.mac, 60, 4), eth(c.mac, a.mac, 60, 5)],
            FrameMeta::default(),
        );
        rig.pump();
        assert_eq!(tags(&c.recv()), [5]);
        assert_eq!(rig.counters(1).drop_rx_full, 2);
        // It drains: frames reach it again.
        assert_eq!(stopped.recv().len(), 8);
        a.send(&[eth(stopped.mac, a.mac, 60, 6)], FrameMeta::default());
        rig.pump();
        assert_eq!(tags(&stopped.recv()), [6]);
    }

    /// Issue 17 item 1: a chain of `MORE` slots (refused, then skipped)
    /// is charged per slot: one poll reads at most `budget *
    /// GSO_MAX_SLOTS` of a port's slots, so a member that keeps moving
    /// `prod` ahead of such a chain gets that much per round and no more.
    /// Before the fix the drain counted finished frames only: it read
    /// every slot the member published (here the whole 64-slot lane, in
    /// a race with a fast member for ever).
    #[test]
    fn an_endless_more_chain_costs_its_slot_budget_per_round() {
        use share_hal::wire::lane_header as lh;
        let config = SwitchConfig {
            budget: 1,
            ..SwitchConfig::default()
        };
        let mut rig = Rig::new(config);
        let mut a = rig.join(0, 1, 2, 0);
        let mut b = rig.join(1, 1, 3, 0);
        let h = rig.join_pages(2, 1, 4, 0, net::GSO_MIN_PAGES);
        let lay = h.layout;
        let mem = h.att.mem();
        for k in 0..lay.tx.slot_count {
            let off = lay.tx.slot_offset(k);
            mem.write_u16(off, 2032).unwrap();
            mem.write_u16(off + 2, net::flags::MORE).unwrap();
        }
        let bound = u64::from(config.budget * net::GSO_MAX_SLOTS);
        assert!(u64::from(lay.tx.slot_count) > bound);
        let mut published = 0u32;
        for _ in 0..4 {
            // The member hands every slot the switch gave back out again.
            let cons = mem
                .load_u32(lay.tx.header + lh::CONS, Ordering::Acquire)
                .unwrap();
            published = cons.wrapping_add(lay.tx.slot_count);
            mem.store_u32(lay.tx.header + lh::PROD, published, Ordering::Release)
                .unwrap();
            a.send(&[eth(b.mac, a.mac, 60, 7)], FrameMeta::default());
            let round = rig.sw.poll(&mut rig.p);
            assert!(
                round.slots <= bound + 1,
                "one poll read {} slots (bound {bound} + a's one)",
                round.slots
            );
            assert!(round.busy, "the member still has slots: poll again");
            assert_eq!(tags(&b.recv()), [7], "a is served in the same round");
        }
        assert!(published > 0);
        assert_eq!(
            rig.sw.ports().nth(2).unwrap().state,
            PortLink::Up { features: 0 }
        );
    }

    /// Issue 17 item 2: a GSO frame whose `gso_size` would make more than
    /// `GSO_MAX_SEGS` segments is dropped before any segment is made, for
    /// the management endpoint (broadcast and unicast to it) and for
    /// ports with or without GSO; one round's work stays bounded. Before
    /// the fix a 64 KiB frame with `gso_size = 1` made ~65 000 segments
    /// for each destination.
    #[test]
    fn a_gso_frame_of_tiny_segments_makes_no_segments() {
        let mut rig = Rig::new(SwitchConfig::default());
        let all = IMPLEMENTED;
        let mut a = rig.join_pages(0, 1, 2, all, net::GSO_MIN_PAGES);
        let mut b = rig.join_pages(1, 1, 3, all, net::GSO_MIN_PAGES);
        let mut c = rig.join_pages(2, 1, 4, features::CSUM_BLANK, net::GSO_MIN_PAGES);
        let mgmt_mac = rig.sw.lans().next().unwrap().1.mac();
        let meta = |size| FrameMeta {
            flags: net::flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 16,
            gso_type: net::gso::TCPV4,
            gso_size: size,
            gso_flags: 0,
        };
        let payload = 65_535 - 40;
        for dst in [BCAST, mgmt_mac] {
            let frame = tcp_super_frame(dst, a.mac, payload);
            assert_eq!(a.send(std::slice::from_ref(&frame), meta(1)), 1);
            let round = rig.sw.poll(&mut rig.p);
            assert_eq!(round.frames, 1);
            assert_eq!(round.emitted, 0, "no segment made for {dst:02x?}");
            rig.pump();
        }
        assert!(b.recv().is_empty() && c.recv().is_empty());
        let mgmt = rig.sw.lans().next().unwrap().1.counters();
        assert_eq!(mgmt.frames_in, 0, "the endpoint parsed nothing");
        // The largest segment count allowed still goes through.
        let size = payload.div_ceil(net::GSO_MAX_SEGS) as u16;
        let frame = tcp_super_frame(BCAST, a.mac, payload);
        assert_eq!(a.send(std::slice::from_ref(&frame), meta(size)), 1);
        rig.pump();
        assert_eq!(b.recv().len(), 1, "b takes GSO: one frame");
        assert_eq!(
            c.recv().len(),
            64,
            "c: lowered to its MTU, its lane's 64 slots"
        );
    }

    /// Issue 17 item 4: a port that breaks while it holds a frame (here
    /// as a destination: its rx lane's indexes scribbled) leaves no hold
    /// behind. Before the fix the hold stayed on the broken port, which
    /// is never served again, and `next_deadline` stayed in the past: the
    /// loop never slept again.
    #[test]
    fn a_broken_port_holding_a_frame_leaves_no_deadline() {
        use share_hal::wire::lane_header as lh;
        let mut rig = Rig::new(SwitchConfig::default());
        let mut a = rig.join(0, 1, 2, 0);
        let stopped = rig.join(1, 1, 3, 0);
        let mut b = rig.join(2, 1, 4, 0);
        a.send(
            &vec![eth(stopped.mac, a.mac, 60, 1); 8],
            FrameMeta::default(),
        );
        rig.pump();
        a.send(&[eth(stopped.mac, a.mac, 60, 2)], FrameMeta::default());
        rig.sw.poll(&mut rig.p);
        assert!(rig.sw.next_deadline().is_some(), "a's frame is held");
        a.att
            .mem()
            .store_u32(a.layout.rx.header + lh::CONS, 1000, Ordering::Release)
            .unwrap();
        b.send(&[eth(BCAST, b.mac, 60, 3)], FrameMeta::default());
        rig.sw.poll(&mut rig.p);
        assert_eq!(rig.sw.ports().next().unwrap().state, PortLink::Broken);
        assert_eq!(rig.sw.next_deadline(), None, "nothing left to wait for");
        rig.host.advance(2 * HOLD_NS);
        rig.pump();
    }

    mod policy {
        //! Port policy through the switch (issue 22): the guard's forms
        //! are tested in crate::policy; here, that the switch applies them
        //! to the right port, learns leases from its own DHCP server, and
        //! keeps private ports and rate limits.
        use super::*;
        use crate::mgmt::tests::{client_msg, dhcp_frame, ethernet, ipv4, udp, LAN, SERVER};
        use crate::policy::{Ipv4Net, Rate};
        use share_hal::platform::Clock;
        use smoltcp::wire::{
            ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr,
            EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Address, Ipv4Packet,
            UdpPacket,
        };

        const A: DomId = 7;
        const B: DomId = 8;

        fn rig() -> (Rig, Member, Member) {
            let mut rig = Rig::new(SwitchConfig::default());
            let a = rig.join(0, LAN, A, 0);
            let b = rig.join(1, LAN, B, 0);
            (rig, a, b)
        }

        fn bind(rig: &mut Rig, index: PortIndex, rules: PortRules) {
            rig.sw.set_port_rules(&mut rig.p, index, rules).unwrap();
        }

        fn udp_to(src_mac: Mac, dst_mac: Mac, src: Ipv4Address, dst: Ipv4Address) -> Vec<u8> {
            let u = udp(src, dst, (4000, 4001), b"payload");
            ethernet(
                src_mac,
                dst_mac,
                EthernetProtocol::Ipv4,
                &ipv4(src, dst, IpProtocol::Udp, &u),
            )
        }

        fn arp_reply(src_mac: Mac, claimed: Ipv4Address, to_mac: Mac, to: Ipv4Address) -> Vec<u8> {
            let repr = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: EthernetAddress(src_mac),
                source_protocol_addr: claimed,
                target_hardware_addr: EthernetAddress(to_mac),
                target_protocol_addr: to,
            };
            let mut p = vec![0; repr.buffer_len()];
            repr.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
            ethernet(src_mac, to_mac, EthernetProtocol::Arp, &p)
        }

        /// DISCOVER, OFFER, REQUEST, ACK through the switch; the address.
        fn lease(rig: &mut Rig, m: &mut Member, mac: Mac) -> Ipv4Address {
            let offer = exchange(rig, m, &client_msg(DhcpMessageType::Discover, mac));
            let mut req = client_msg(DhcpMessageType::Request, mac);
            req.requested_ip = Some(offer);
            req.server_identifier = Some(SERVER);
            exchange(rig, m, &req)
        }

        fn exchange(rig: &mut Rig, m: &mut Member, req: &DhcpRepr) -> Ipv4Address {
            m.send(&[dhcp_frame(req)], FrameMeta::default());
            rig.pump();
            let got = m.recv();
            let f = &got.last().expect("a DHCP reply").0;
            let eth = EthernetFrame::new_checked(&f[..]).unwrap();
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            DhcpRepr::parse(&DhcpPacket::new_checked(u.payload()).unwrap())
                .unwrap()
                .your_ip
        }

        #[test]
        fn a_bound_port_sends_from_its_lease_only() {
            let (mut rig, mut a, mut b) = rig();
            let (mac_a, mac_b) = (assigned_mac(LAN, A), assigned_mac(LAN, B));
            let neighbour = Ipv4Address::new(10, 77, 3, 102);
            bind(
                &mut rig,
                0,
                PortRules {
                    bind_addresses: true,
                    ..PortRules::default()
                },
            );
            // Before any lease: nothing from a 10.77.3.x source passes.
            a.send(
                &[udp_to(mac_a, mac_b, neighbour, SERVER)],
                FrameMeta::default(),
            );
            rig.pump();
            assert!(b.recv().is_empty());
            assert_eq!(rig.counters(0).drop_policy.ipv4_source, 1);

            let ip = lease(&mut rig, &mut a, mac_a);
            assert_ne!(ip, Ipv4Address::UNSPECIFIED);
            b.recv(); // the client's broadcasts
            a.send(&[udp_to(mac_a, mac_b, ip, neighbour)], FrameMeta::default());
            rig.pump();
            assert_eq!(b.recv().len(), 1, "from the leased address");

            // Taking over the neighbour's address: a forged source, an ARP
            // reply and a gratuitous ARP claiming it.
            let garp = arp_reply(mac_a, neighbour, [0xff; 6], neighbour);
            a.send(
                &[
                    udp_to(mac_a, mac_b, neighbour, ip),
                    arp_reply(mac_a, neighbour, mac_b, neighbour),
                    garp,
                ],
                FrameMeta::default(),
            );
            rig.pump();
            assert!(b.recv().is_empty());
            let d = rig.counters(0).drop_policy;
            assert_eq!((d.ipv4_source, d.arp_sender), (2, 2));

            // The unbound port b is not limited.
            b.send(&[udp_to(mac_b, mac_a, neighbour, ip)], FrameMeta::default());
            rig.pump();
            assert_eq!(a.recv().len(), 1);
            assert_eq!(rig.counters(1).drop_policy.total(), 0);
        }

        #[test]
        fn assigned_addresses_pass_without_a_lease() {
            let (mut rig, mut a, mut b) = rig();
            let (mac_a, mac_b) = (assigned_mac(LAN, A), assigned_mac(LAN, B));
            bind(
                &mut rig,
                0,
                PortRules {
                    bind_addresses: true,
                    ipv4: vec![Ipv4Net {
                        addr: [192, 168, 9, 5],
                        prefix: 32,
                    }],
                    ..PortRules::default()
                },
            );
            let to = Ipv4Address::new(192, 168, 9, 6);
            a.send(
                &[
                    udp_to(mac_a, mac_b, Ipv4Address::new(192, 168, 9, 5), to),
                    udp_to(mac_a, mac_b, Ipv4Address::new(192, 168, 9, 7), to),
                ],
                FrameMeta::default(),
            );
            rig.pump();
            assert_eq!(b.recv().len(), 1);
            assert_eq!(rig.counters(0).drop_policy.ipv4_source, 1);
            assert_eq!(rig.sw.port_rules(0).unwrap().ipv4.len(), 1);
        }

        #[test]
        fn private_ports_reach_the_endpoint_but_no_member() {
            let (mut rig, mut a, mut b) = rig();
            let (mac_a, mac_b) = (assigned_mac(LAN, A), assigned_mac(LAN, B));
            bind(
                &mut rig,
                0,
                PortRules {
                    private: true,
                    ..PortRules::default()
                },
            );
            let (ip_a, ip_b) = (
                Ipv4Address::new(10, 77, 3, 101),
                Ipv4Address::new(10, 77, 3, 102),
            );
            // Unicast both ways, and a's broadcast: nothing between them.
            a.send(&[udp_to(mac_a, mac_b, ip_a, ip_b)], FrameMeta::default());
            a.send(
                &[udp_to(mac_a, [0xff; 6], ip_a, ip_b)],
                FrameMeta::default(),
            );
            b.send(&[udp_to(mac_b, mac_a, ip_b, ip_a)], FrameMeta::default());
            rig.pump();
            assert!(b.recv().is_empty());
            assert!(a.recv().is_empty());
            assert_eq!(rig.counters(0).drop_policy.private, 1);
            assert_eq!(rig.counters(1).drop_policy.private, 1);
            // The endpoint answers a private member.
            let req = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: EthernetAddress(mac_a),
                source_protocol_addr: ip_a,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: SERVER,
            };
            let mut p = vec![0; req.buffer_len()];
            req.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
            a.send(
                &[ethernet(mac_a, [0xff; 6], EthernetProtocol::Arp, &p)],
                FrameMeta::default(),
            );
            rig.pump();
            assert_eq!(a.recv().len(), 1, "the endpoint's ARP reply");
            assert!(b.recv().is_empty(), "b does not see a's broadcast");
        }

        #[test]
        fn a_rate_limited_port_waits_for_credit_and_loses_nothing() {
            let (mut rig, mut a, mut b) = rig();
            let (mac_a, mac_b) = (assigned_mac(LAN, A), assigned_mac(LAN, B));
            bind(
                &mut rig,
                0,
                PortRules {
                    rate: Some(Rate {
                        bytes_per_sec: 1_000_000,
                        burst_bytes: 3000,
                        frames_per_sec: 0,
                    }),
                    ..PortRules::default()
                },
            );
            let frames: Vec<Vec<u8>> = (0..6).map(|t| eth(mac_b, mac_a, 1000, t)).collect();
            assert_eq!(a.send(&frames, FrameMeta::default()), 6);
            rig.pump();
            assert_eq!(b.recv().len(), 3, "the burst");
            let now = rig.p.now_ns();
            let wake = rig.sw.next_deadline().expect("a deadline for the credit");
            assert!(wake > now && wake <= now + 1_000_000, "{wake} vs {now}");
            assert!(rig.counters(0).rate_limited > 0);
            let mut got = 0;
            for _ in 0..20 {
                rig.host.advance(1_000_000);
                rig.pump();
                got += b.recv().len();
            }
            assert_eq!(got, 3, "the rest, at the rate, none dropped");
            assert_eq!(rig.counters(1).drop_rx_full, 0);
            assert_eq!(rig.sw.next_deadline(), None);
        }
    }

    mod uplink {
        //! A LAN's uplink (issue 21): a port of another kind, reached
        //! through `Uplinks`.
        use super::*;
        use crate::mgmt::tests::{client_msg, dhcp_frame};
        use alloc::collections::VecDeque;
        use smoltcp::wire::DhcpMessageType;

        /// Devices whose network is the test: frames to inject, frames
        /// sent, room for at most `room` frames a round.
        #[derive(Default)]
        struct Wire {
            inbox: VecDeque<(u16, Vec<u8>)>,
            /// Offload fields of the inbox's frames, in order (none: plain).
            metas: VecDeque<FrameMeta>,
            sent: Vec<(u16, Vec<u8>)>,
            room: Option<usize>,
            flushes: u32,
        }

        impl Uplinks for Wire {
            fn recv(&mut self, device: u16, buf: &mut [u8]) -> Option<(usize, FrameMeta)> {
                let at = self.inbox.iter().position(|(d, _)| *d == device)?;
                let (_, f) = self.inbox.remove(at)?;
                let n = f.len().min(buf.len());
                buf[..n].copy_from_slice(&f[..n]);
                Some((f.len(), self.metas.pop_front().unwrap_or_default()))
            }
            fn send(&mut self, device: u16, frame: &[u8], _: FrameMeta) -> bool {
                if self.room.is_some_and(|r| self.sent.len() >= r) {
                    return false;
                }
                self.sent.push((device, frame.to_vec()));
                true
            }
            fn flush(&mut self) -> bool {
                self.flushes += 1;
                false
            }
            fn has(&self, device: u16) -> bool {
                device < 8
            }
        }

        impl Wire {
            fn tags(&mut self, device: u16) -> Vec<u8> {
                let out = self
                    .sent
                    .iter()
                    .filter(|(d, _)| *d == device)
                    .map(|(_, f)| f[20])
                    .collect();
                self.sent.clear();
                out
            }
        }

        fn pump(rig: &mut Rig, wire: &mut Wire) {
            for _ in 0..1000 {
                let now = rig.p.now_ns();
                if !rig.sw.poll_with(&mut rig.p, now, wire).busy {
                    return;
                }
            }
            panic!("switch still busy after 1000 rounds");
        }

        fn uplink(rig: &Rig, lan: LanId) -> UplinkInfo {
            rig.sw.uplinks().find(|u| u.lan == lan).unwrap()
        }

        use share_hal::platform::Clock;

        const HOST: Mac = [0x52, 0x54, 0, 0, 0, 0x10];
        const UP: u16 = 3;

        #[test]
        fn the_uplink_gets_floods_and_its_hosts_are_switched_by_mac() {
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire::default();
            let mut a = rig.join(0, 7, 2, 0);
            let mut b = rig.join(1, 7, 3, 0);
            let mut c = rig.join(2, 8, 4, 0);
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            // Broadcast and unknown unicast: the other ports and the uplink.
            a.send(&[eth(BCAST, a.mac, 60, 1)], FrameMeta::default());
            a.send(&[eth(HOST, a.mac, 60, 2)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert_eq!(tags(&b.recv()), [1, 2]);
            assert_eq!(wire.tags(UP), [1, 2]);
            assert!(c.recv().is_empty(), "another LAN sees nothing");
            // The host answers: learned on the uplink, switched to a only.
            wire.inbox.push_back((UP, eth(a.mac, HOST, 60, 3)));
            pump(&mut rig, &mut wire);
            assert_eq!(tags(&a.recv()), [3]);
            assert!(b.recv().is_empty() && c.recv().is_empty());
            assert!(wire.sent.is_empty(), "never back out of the uplink");
            // Now a's frames to the host go to the uplink only.
            a.send(&[eth(HOST, a.mac, 60, 4)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert_eq!(wire.tags(UP), [4]);
            assert!(b.recv().is_empty());
            // A broadcast from the uplink's network reaches the LAN's
            // ports, not another LAN's, and not the uplink again.
            wire.inbox.push_back((UP, eth(BCAST, HOST, 60, 5)));
            pump(&mut rig, &mut wire);
            assert_eq!(tags(&a.recv()), [5]);
            assert_eq!(tags(&b.recv()), [5]);
            assert!(c.recv().is_empty());
            assert!(wire.sent.is_empty());
            // A frame from the uplink to a host behind it reaches nobody.
            wire.inbox
                .push_back((UP, eth(HOST, [0x52, 0, 0, 0, 0, 1], 60, 6)));
            pump(&mut rig, &mut wire);
            assert!(a.recv().is_empty() && b.recv().is_empty() && wire.sent.is_empty());
            let u = uplink(&rig, 7);
            assert_eq!((u.device, u.entry, u.dhcp_server), (UP, 9, false));
            assert_eq!((u.counters.rx_frames, u.counters.tx_frames), (3, 3));
            assert_eq!(u.counters.tx_bytes, 180);
            assert!(wire.flushes > 0);
        }

        #[test]
        fn the_uplink_gets_whole_frames_past_the_private_head() {
            // The switch keeps only a frame's head private when it copies
            // once to ports; the uplink's frames go out from a private
            // copy, so it must be the whole frame, every byte as sent.
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire::default();
            let mut a = rig.join(0, 7, 2, 0);
            let mut b = rig.join(1, 7, 3, 0);
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            for len in [60, 200, 1514] {
                let mut f = eth(HOST, a.mac, len, 1);
                for (i, x) in f.iter_mut().enumerate().skip(21) {
                    *x = i as u8;
                }
                a.send(&[f.clone()], FrameMeta::default());
                pump(&mut rig, &mut wire);
                let got: Vec<Vec<u8>> = b.recv().into_iter().map(|(f, _)| f).collect();
                assert_eq!(got, [f.clone()], "{len}-byte flood to a port");
                let sent: Vec<Vec<u8>> = wire.sent.drain(..).map(|(_, f)| f).collect();
                assert_eq!(sent, [f], "{len}-byte flood to the uplink");
            }
        }

        #[test]
        fn the_uplink_never_takes_a_members_address() {
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire::default();
            let mut a = rig.join(0, 7, 2, 0);
            let mut b = rig.join(1, 7, 3, 0);
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            // b also sends from a second address (learned on its port).
            let extra: Mac = [0x02, 0, 0, 0, 0, 0x77];
            b.send(&[eth(a.mac, extra, 60, 1)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert_eq!(tags(&a.recv()), [1]);
            // The uplink's network claims a's pinned MAC, b's learned one,
            // the endpoint's, a group address: all dropped, nothing moves.
            let mgmt = MgmtConfig::for_lan(7).mac;
            for src in [a.mac, extra, mgmt, [0x01, 0, 0x5e, 0, 0, 1]] {
                wire.inbox.push_back((UP, eth(BCAST, src, 60, 2)));
            }
            pump(&mut rig, &mut wire);
            assert!(a.recv().is_empty() && b.recv().is_empty());
            assert_eq!(uplink(&rig, 7).counters.drop_spoof, 4);
            a.send(&[eth(extra, a.mac, 60, 3)], FrameMeta::default());
            b.send(&[eth(a.mac, b.mac, 60, 4)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert_eq!(tags(&b.recv()), [3], "still b's");
            assert_eq!(tags(&a.recv()), [4], "still a's");
            assert!(wire.sent.is_empty());
            // A member spoofing another's MAC gets nothing onto the uplink
            // either.
            a.send(&[eth(BCAST, b.mac, 60, 5)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert!(wire.sent.is_empty() && b.recv().is_empty());
            assert_eq!(rig.counters(0).drop_spoof, 1);
        }

        #[test]
        fn the_uplink_learns_within_its_own_bound_and_still_forwards() {
            let config = SwitchConfig {
                fdb: FdbLimits {
                    per_lan: 64,
                    per_port: 2,
                    per_uplink: 8,
                    age_ns: u64::MAX,
                },
                ..SwitchConfig::default()
            };
            let mut rig = Rig::new(config);
            let mut wire = Wire::default();
            // 64-slot lanes: the 12 frames of one round fit.
            let mut a = rig.join_pages(0, 7, 2, 0, 66);
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            for i in 0..12u8 {
                wire.inbox
                    .push_back((UP, eth(a.mac, [0x52, 0, 0, 0, 1, i], 60, i)));
            }
            pump(&mut rig, &mut wire);
            assert_eq!(a.recv().len(), 12);
            let u = uplink(&rig, 7).counters;
            assert_eq!((u.rx_frames, u.unlearned), (12, 4));
            // The learned hosts get unicast; the unlearned ones a flood.
            a.send(
                &[eth([0x52, 0, 0, 0, 1, 0], a.mac, 60, 1)],
                FrameMeta::default(),
            );
            a.send(
                &[eth([0x52, 0, 0, 0, 1, 11], a.mac, 60, 2)],
                FrameMeta::default(),
            );
            pump(&mut rig, &mut wire);
            assert_eq!(wire.tags(UP), [1, 2]);
            // One round reads at most the budget from the uplink.
            for i in 0..200u8 {
                wire.inbox
                    .push_back((UP, eth(a.mac, [0x52, 0, 0, 0, 1, 0], 60, i)));
            }
            let now = rig.p.now_ns();
            let r = rig.sw.poll_with(&mut rig.p, now, &mut wire);
            assert_eq!(r.frames, u64::from(SwitchConfig::default().budget));
            assert!(r.busy);
        }

        #[test]
        fn runts_giants_and_a_full_uplink_are_counted() {
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire {
                room: Some(1),
                ..Wire::default()
            };
            let mut a = rig.join(0, 7, 2, 0);
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            wire.inbox.push_back((UP, vec![0xff; 13]));
            wire.inbox
                .push_back((UP, eth(a.mac, HOST, UPLINK_MAX_FRAME + 1, 1)));
            pump(&mut rig, &mut wire);
            assert!(a.recv().is_empty());
            a.send(
                &[eth(HOST, a.mac, 60, 2), eth(HOST, a.mac, 60, 3)],
                FrameMeta::default(),
            );
            pump(&mut rig, &mut wire);
            assert_eq!(wire.tags(UP), [2]);
            let u = uplink(&rig, 7).counters;
            assert_eq!((u.drop_bad_frame, u.drop_tx_full), (2, 1));
        }

        #[test]
        fn a_bound_port_sends_from_what_the_uplinks_dhcp_server_leased_it() {
            use crate::snoop::tests::server_msg;
            use crate::testing::udp4;
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire::default();
            let mut a = rig.join(0, 7, 2, 0);
            let mut b = rig.join(1, 7, 3, 0);
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            let bound = PortRules {
                bind_addresses: true,
                ..PortRules::default()
            };
            rig.sw.set_port_rules(&mut rig.p, 0, bound).unwrap();
            let (leased, other) = ([192, 168, 1, 50], [192, 168, 1, 60]);
            let mac_a = a.mac;
            let from = move |ip, tag| udp4(HOST, mac_a, ip, [192, 168, 1, 1], 60, tag);
            let sent = |wire: &mut Wire| -> Vec<u8> {
                let tags = wire.sent.iter().map(|(_, f)| f[59]).collect();
                wire.sent.clear();
                tags
            };
            // No lease yet: nothing from a reaches the uplink.
            a.send(&[from(leased, 1)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert!(sent(&mut wire).is_empty());
            assert_eq!(rig.counters(0).drop_policy.ipv4_source, 1);
            // A member's ACK teaches nothing (b is not bound: its
            // server reply is switched, never believed).
            let mut rogue = server_msg(DhcpMessageType::Ack, a.mac, other, Some(600), 67);
            rogue[6..12].copy_from_slice(&b.mac);
            b.send(&[rogue], FrameMeta::default());
            // The network's server acks a's request through the uplink.
            wire.inbox.push_back((
                UP,
                server_msg(DhcpMessageType::Ack, a.mac, leased, Some(600), 67),
            ));
            pump(&mut rig, &mut wire);
            assert_eq!(a.recv().len(), 2, "both ACKs reach a");
            wire.sent.clear();
            a.send(&[from(leased, 2), from(other, 3)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert_eq!(sent(&mut wire), [2], "the leased address only");
            assert_eq!(rig.counters(0).drop_policy.ipv4_source, 2);
            // A NAK for a's MAC takes the address back.
            wire.inbox.push_back((
                UP,
                server_msg(DhcpMessageType::Nak, a.mac, [0; 4], None, 67),
            ));
            pump(&mut rig, &mut wire);
            a.send(&[from(leased, 4)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert!(sent(&mut wire).is_empty());
            // Leased again, then the uplink detached: what the network
            // leased ends with the way to it.
            wire.inbox.push_back((
                UP,
                server_msg(DhcpMessageType::Ack, a.mac, leased, Some(600), 67),
            ));
            pump(&mut rig, &mut wire);
            rig.sw.detach_uplink(7).unwrap();
            a.send(&[from(leased, 5)], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert!(sent(&mut wire).is_empty());
            assert!(b.recv().iter().all(|(f, _)| f[59] != 5), "not to b either");
            assert_eq!(rig.counters(0).drop_policy.ipv4_source, 4);
        }

        #[test]
        fn policy_holds_toward_the_uplink_and_private_ports_reach_it() {
            use crate::testing::udp4;
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire::default();
            let mut a = rig.join(0, 7, 2, 0);
            let mut b = rig.join(1, 7, 3, 0);
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            let bound = PortRules {
                bind_addresses: true,
                private: true,
                ..PortRules::default()
            };
            rig.sw.set_port_rules(&mut rig.p, 0, bound.clone()).unwrap();
            // Not its address: nothing anywhere.
            a.send(
                &[udp4(
                    HOST,
                    a.mac,
                    [192, 168, 1, 50],
                    [192, 168, 1, 1],
                    60,
                    1,
                )],
                FrameMeta::default(),
            );
            pump(&mut rig, &mut wire);
            assert!(wire.sent.is_empty() && b.recv().is_empty());
            assert_eq!(rig.counters(0).drop_policy.total(), 1);
            // Private: the uplink, not b.
            let ip = Ipv4Net {
                addr: [192, 168, 1, 50],
                prefix: 32,
            };
            let with_ip = PortRules {
                ipv4: vec![ip],
                ..bound
            };
            rig.sw.set_port_rules(&mut rig.p, 0, with_ip).unwrap();
            a.send(
                &[udp4(
                    BCAST,
                    a.mac,
                    [192, 168, 1, 50],
                    [192, 168, 1, 255],
                    60,
                    2,
                )],
                FrameMeta::default(),
            );
            pump(&mut rig, &mut wire);
            assert_eq!(wire.sent.len(), 1);
            wire.sent.clear();
            assert!(b.recv().is_empty());
            // And the uplink's network reaches it.
            wire.inbox.push_back((UP, eth(a.mac, HOST, 60, 3)));
            pump(&mut rig, &mut wire);
            assert_eq!(tags(&a.recv()), [3]);
        }
        use crate::policy::Ipv4Net;

        #[test]
        fn dhcp_is_the_networks_on_an_uplinked_lan_unless_asked() {
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire::default();
            let mut a = rig.join(0, 7, 2, 0);
            let discover = dhcp_frame(&client_msg(DhcpMessageType::Discover, a.mac));
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            a.send(core::slice::from_ref(&discover), FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert!(a.recv().is_empty(), "no offer from netback-uk");
            assert_eq!(wire.sent.len(), 1, "the DISCOVER went out");
            wire.sent.clear();
            // Detached: the LAN is an island again, with its server.
            rig.sw.detach_uplink(7).unwrap();
            assert!(rig.sw.detach_uplink(7).is_err());
            a.send(core::slice::from_ref(&discover), FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert_eq!(a.recv().len(), 1, "an offer");
            assert!(wire.sent.is_empty());
            // Asked for: the server stays on beside the uplink.
            rig.sw.attach_uplink(7, UP, 9, true).unwrap();
            a.send(&[discover], FrameMeta::default());
            pump(&mut rig, &mut wire);
            assert_eq!(a.recv().len(), 1);
            assert_eq!(
                wire.sent.len(),
                1,
                "the DISCOVER (the offer is unicast to a)"
            );
        }

        #[test]
        fn a_gso_frame_from_the_uplink_is_segmented_for_members_that_take_none() {
            use crate::testing::udp4;
            use share_hal::wire::net::{features, gso, GSO_MIN_PAGES};
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire::default();
            let mut a = rig.join_pages(0, 7, 2, 0, 66);
            let mut b =
                rig.join_pages(1, 7, 3, features::CSUM_BLANK | features::GSO, GSO_MIN_PAGES);
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            // A UDP GSO frame of 10 datagrams of 1000 bytes, partial
            // checksum (what a kernel hands over with USO).
            let mut f = udp4(BCAST, HOST, [10, 0, 0, 1], [10, 0, 0, 2], 42 + 10_000, 1);
            let meta = FrameMeta {
                flags: flags::CSUM_BLANK,
                csum_start: 34,
                csum_offset: 6,
                gso_type: gso::UDP_L4,
                gso_size: 1000,
                gso_flags: 0,
            };
            f[24..26].copy_from_slice(&[0, 0]);
            wire.inbox.push_back((UP, f.clone()));
            wire.metas.push_back(meta);
            // Without offload fields, the same length is a giant.
            wire.inbox.push_back((UP, f.clone()));
            pump(&mut rig, &mut wire);
            let got = a.recv();
            assert_eq!(got.len(), 10, "segmented for a");
            assert!(got
                .iter()
                .all(|(s, m)| s.len() == 1042 && *m == FrameMeta::default()));
            let got = b.recv();
            assert_eq!(got.len(), 1, "whole for b");
            assert_eq!((got[0].0.len(), got[0].1), (f.len(), meta));
            assert_eq!(uplink(&rig, 7).counters.drop_bad_frame, 1);
        }

        #[test]
        fn one_uplink_per_lan_one_lan_per_device_and_lans_outlive_ports() {
            let mut rig = Rig::new(SwitchConfig::default());
            let mut wire = Wire::default();
            rig.sw.attach_uplink(7, UP, 9, false).unwrap();
            assert!(rig.sw.attach_uplink(7, UP + 1, 10, false).is_err());
            assert!(rig.sw.attach_uplink(8, UP, 10, false).is_err());
            rig.sw.attach_uplink(8, UP + 1, 10, false).unwrap();
            // A LAN with an uplink and no port yet: its frames reach nobody.
            wire.inbox.push_back((UP, eth(BCAST, HOST, 60, 1)));
            pump(&mut rig, &mut wire);
            assert_eq!(uplink(&rig, 7).counters.rx_frames, 1);
            let mut a = rig.join(0, 7, 2, 0);
            rig.sw.remove_port(&mut rig.p, 0).unwrap();
            assert_eq!(uplink(&rig, 7).counters.rx_frames, 1, "the LAN stayed");
            a.recv();
            rig.sw.detach_uplink(7).unwrap();
            assert_eq!(rig.sw.lans().count(), 1);
            assert_eq!(rig.sw.uplinks().count(), 1);
        }
    }
}
