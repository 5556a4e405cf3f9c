//! The forwarding database of one LAN: which port a MAC address was last
//! seen on, learned from source addresses and forgotten after an age.
//!
//! Members are hostile, so the table is bounded twice: a LAN holds at most
//! [`FdbLimits::per_lan`] learned addresses and one port at most
//! [`FdbLimits::per_port`], so a port sending from random source addresses
//! cannot push the others' entries out (it only floods its own frames).
//! Each port's assigned MAC is *pinned*: learned from nobody, never aged,
//! never moved, so no member can steal another's traffic by spoofing it.
//! The hash is keyed with a per-switch seed, so a member cannot pick
//! colliding addresses in advance.
//!
//! A LAN's uplink (the network on the other side of one of netback-uk's
//! own devices) is one more source, [`UPLINK_PORT`], with a bound of its
//! own ([`FdbLimits::per_uplink`]: a real network has many hosts) and one
//! rule more ([`Fdb::learn_uplink`]): it never takes an address a member
//! port holds, pinned or learned.

use core::hash::{BuildHasher, Hasher};

use hashbrown::HashMap;

/// A MAC address in wire order.
pub type Mac = [u8; 6];

/// The ports of a switch are numbered by their slot; the forwarding
/// database only stores the number.
pub type PortIndex = u16;

/// The index the forwarding database gives a LAN's uplink: no vdevice
/// entry has it (a page holds at most 126).
pub const UPLINK_PORT: PortIndex = PortIndex::MAX;

/// Whether `mac` is a group (multicast or broadcast) address.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

fn key(mac: &Mac) -> u64 {
    let mut k = [0u8; 8];
    k[..6].copy_from_slice(mac);
    u64::from_le_bytes(k)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbLimits {
    pub per_lan: usize,
    pub per_port: u16,
    /// Learned addresses of the LAN's uplink (the hosts of the network
    /// behind it), within `per_lan`.
    pub per_uplink: u16,
    /// Nanoseconds after which an address not seen again is forgotten.
    pub age_ns: u64,
}

impl Default for FdbLimits {
    fn default() -> Self {
        // As Linux bridges: 300 s ageing. 4096 addresses cost ~100 KiB.
        FdbLimits {
            per_lan: 4096,
            per_port: 256,
            per_uplink: 2048,
            age_ns: 300_000_000_000,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    port: PortIndex,
    seen_ns: u64,
    pinned: bool,
}

/// splitmix64's finaliser over the key xor a seed: cheap, and every output
/// bit depends on every input bit (hashbrown uses both the low and the top
/// bits).
#[derive(Clone, Copy, Debug)]
pub struct SeededHash {
    seed: u64,
}

pub struct MacHasher {
    state: u64,
}

impl Hasher for MacHasher {
    fn finish(&self) -> u64 {
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state = (self.state ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.state ^= v;
    }
}

impl BuildHasher for SeededHash {
    type Hasher = MacHasher;
    fn build_hasher(&self) -> MacHasher {
        MacHasher { state: self.seed }
    }
}

/// The forwarding database of one LAN.
pub struct Fdb {
    map: HashMap<u64, Entry, SeededHash>,
    /// Learned (not pinned) addresses per port, indexed by port.
    learned: alloc::vec::Vec<u16>,
    /// Learned addresses of [`UPLINK_PORT`] (kept apart: `learned` is
    /// indexed by port).
    uplink_learned: u16,
    limits: FdbLimits,
    /// Moves on with every change that can alter what [`Fdb::learn`] or
    /// [`Fdb::lookup`] answer at a given time ([`Fdb::generation`]).
    generation: u64,
}

/// What [`Fdb::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// New, refreshed or moved to this port.
    Yes,
    /// Another port's pinned address: the frame is a spoof.
    Spoof,
    /// The LAN's or the port's table is full: not learned.
    Full,
}

impl Fdb {
    pub fn new(limits: FdbLimits, seed: u64) -> Self {
        Fdb {
            map: HashMap::with_hasher(SeededHash { seed }),
            learned: alloc::vec::Vec::new(),
            uplink_learned: 0,
            limits,
            generation: 0,
        }
    }

    fn learned_mut(&mut self, port: PortIndex) -> &mut u16 {
        if port == UPLINK_PORT {
            return &mut self.uplink_learned;
        }
        let i = usize::from(port);
        if self.learned.len() <= i {
            self.learned.resize(i + 1, 0);
        }
        &mut self.learned[i]
    }

    /// Pins `mac` to `port` (the port's assigned address). Fails if another
    /// port holds it pinned.
    pub fn pin(&mut self, mac: &Mac, port: PortIndex) -> bool {
        self.generation += 1;
        let k = key(mac);
        match self.map.get(&k).copied() {
            Some(e) if e.pinned && e.port != port => return false,
            Some(e) if !e.pinned => *self.learned_mut(e.port) -= 1,
            _ => {}
        }
        self.map.insert(
            k,
            Entry {
                port,
                seen_ns: 0,
                pinned: true,
            },
        );
        true
    }

    /// Records that `mac` sent from `port` at `now_ns`.
    pub fn learn(&mut self, mac: &Mac, port: PortIndex, now_ns: u64) -> Learned {
        let k = key(mac);
        if let Some(e) = self.map.get_mut(&k) {
            if e.pinned {
                return if e.port == port {
                    Learned::Yes
                } else {
                    Learned::Spoof
                };
            }
            if e.port == port {
                // Written only when it changes (the same time within a
                // switch round).
                if e.seen_ns != now_ns {
                    e.seen_ns = now_ns;
                    self.generation += 1;
                }
                return Learned::Yes;
            }
            self.generation += 1;
            // Moved: counts against the new port.
            let old = e.port;
            *self.learned_mut(old) -= 1;
            self.map.remove(&k);
        }
        let bound = if port == UPLINK_PORT {
            self.limits.per_uplink
        } else {
            self.limits.per_port
        };
        if self.map.len() >= self.limits.per_lan || *self.learned_mut(port) >= bound {
            return Learned::Full;
        }
        *self.learned_mut(port) += 1;
        self.generation += 1;
        self.map.insert(
            k,
            Entry {
                port,
                seen_ns: now_ns,
                pinned: false,
            },
        );
        Learned::Yes
    }

    /// Records that `mac` sent from the LAN's uplink: as [`Fdb::learn`],
    /// but an address a member port holds (pinned, or learned and not aged
    /// out) is never moved to the uplink ([`Learned::Spoof`]): nobody on
    /// the network behind the uplink can pull a member's traffic out.
    pub fn learn_uplink(&mut self, mac: &Mac, now_ns: u64) -> Learned {
        if let Some(e) = self.map.get(&key(mac)) {
            let live = e.pinned || now_ns.saturating_sub(e.seen_ns) < self.limits.age_ns;
            if e.port != UPLINK_PORT && live {
                return Learned::Spoof;
            }
        }
        self.learn(mac, UPLINK_PORT, now_ns)
    }

    /// Learned addresses of `port`.
    pub fn learned(&self, port: PortIndex) -> u16 {
        if port == UPLINK_PORT {
            return self.uplink_learned;
        }
        self.learned.get(usize::from(port)).copied().unwrap_or(0)
    }

    /// The port `mac` lives on, unless unknown or aged out.
    pub fn lookup(&self, mac: &Mac, now_ns: u64) -> Option<PortIndex> {
        let e = self.map.get(&key(mac))?;
        if e.pinned || now_ns.saturating_sub(e.seen_ns) < self.limits.age_ns {
            Some(e.port)
        } else {
            None
        }
    }

    /// Forgets every address of `port`, pinned or learned (the port left).
    pub fn forget_port(&mut self, port: PortIndex) {
        self.generation += 1;
        self.map.retain(|_, e| e.port != port);
        if port == UPLINK_PORT {
            self.uplink_learned = 0;
        } else if let Some(n) = self.learned.get_mut(usize::from(port)) {
            *n = 0;
        }
    }

    /// Drops learned addresses older than the age; returns how many.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let age = self.limits.age_ns;
        let mut gone = alloc::vec::Vec::new();
        self.map.retain(|_, e| {
            let keep = e.pinned || now_ns.saturating_sub(e.seen_ns) < age;
            if !keep {
                gone.push(e.port);
            }
            keep
        });
        for p in &gone {
            *self.learned_mut(*p) -= 1;
        }
        if !gone.is_empty() {
            self.generation += 1;
        }
        gone.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// A number that stays the same exactly as long as nothing changed
    /// the table: while it does, [`Fdb::learn`] of an address already
    /// learned at the same time changes nothing and answers as before, and
    /// [`Fdb::lookup`] at the same time answers as before. The switch keeps
    /// a port's last answers for a round by it (`switch::Route`).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];

    fn small() -> Fdb {
        Fdb::new(
            FdbLimits {
                per_lan: 8,
                per_port: 3,
                per_uplink: 5,
                age_ns: 1000,
            },
            42,
        )
    }

    #[test]
    fn learns_moves_and_ages() {
        let mut f = small();
        assert_eq!(f.lookup(&A, 0), None);
        assert_eq!(f.learn(&A, 1, 10), Learned::Yes);
        assert_eq!(f.lookup(&A, 500), Some(1));
        assert_eq!(f.learn(&A, 2, 600), Learned::Yes);
        assert_eq!(f.lookup(&A, 700), Some(2));
        assert_eq!(f.lookup(&A, 1600), None, "aged out");
        assert_eq!(f.expire(1600), 1);
        assert!(f.is_empty());
    }

    /// What the switch's per-round route memo relies on: the generation
    /// moves with every change that alters an answer, and not for a
    /// repeated learn at the same time.
    #[test]
    fn the_generation_moves_with_every_change_of_an_answer() {
        let mut f = small();
        let mut seen = f.generation();
        let mut moved = |f: &Fdb| {
            let g = f.generation();
            let changed = g != seen;
            seen = g;
            changed
        };
        assert!(f.pin(&A, 1));
        assert!(moved(&f), "pin");
        assert_eq!(f.learn(&A, 1, 10), Learned::Yes);
        assert!(!moved(&f), "a pinned address learned again");
        assert_eq!(f.learn(&B, 2, 10), Learned::Yes);
        assert!(moved(&f), "new address");
        assert_eq!(f.learn(&B, 2, 10), Learned::Yes);
        assert!(!moved(&f), "the same address, port and time");
        assert_eq!(f.learn(&B, 2, 11), Learned::Yes);
        assert!(moved(&f), "refreshed: lookup may answer later than before");
        assert_eq!(f.learn(&B, 3, 11), Learned::Yes);
        assert!(moved(&f), "moved");
        assert_eq!(f.learn(&A, 3, 12), Learned::Spoof);
        assert!(!moved(&f), "a spoof changes nothing");
        assert_eq!(f.expire(12), 0);
        assert!(!moved(&f), "nothing expired");
        assert_eq!(f.expire(5000), 1);
        assert!(moved(&f), "expired");
        f.forget_port(1);
        assert!(moved(&f), "a port left");
        assert_eq!(f.learn_uplink(&B, 6000), Learned::Yes);
        assert!(moved(&f), "learned from the uplink");
    }

    #[test]
    fn pinned_addresses_cannot_be_stolen() {
        let mut f = small();
        assert!(f.pin(&A, 1));
        assert!(!f.pin(&A, 2));
        assert_eq!(f.learn(&A, 2, 5), Learned::Spoof);
        assert_eq!(f.lookup(&A, u64::MAX), Some(1), "pinned never ages");
        assert_eq!(f.expire(u64::MAX), 0);
        f.forget_port(1);
        assert_eq!(f.lookup(&A, 0), None);
        assert!(f.pin(&A, 2));
    }

    #[test]
    fn one_port_cannot_fill_the_lan() {
        let mut f = small();
        for i in 0..10u8 {
            let r = f.learn(&[2, 9, 9, 9, 9, i], 1, 0);
            assert_eq!(r, if i < 3 { Learned::Yes } else { Learned::Full });
        }
        assert_eq!(f.learn(&B, 2, 0), Learned::Yes);
        // Moving an address frees its old port's quota.
        assert_eq!(f.learn(&[2, 9, 9, 9, 9, 0], 2, 0), Learned::Yes);
        assert_eq!(f.learn(&[2, 8, 8, 8, 8, 8], 1, 0), Learned::Yes);
        f.forget_port(1);
        for i in 0..3u8 {
            assert_eq!(f.learn(&[2, 7, 7, 7, 7, i], 1, 0), Learned::Yes);
        }
    }

    #[test]
    fn lan_limit_holds() {
        let mut f = small();
        let mut ok = 0;
        for port in 0..4u16 {
            for i in 0..3u8 {
                if f.learn(&[2, 1, 1, 1, port as u8, i], port, 0) == Learned::Yes {
                    ok += 1;
                }
            }
        }
        assert_eq!(ok, 8);
        assert_eq!(f.len(), 8);
    }

    #[test]
    fn the_uplink_learns_many_within_its_bound_but_no_members_address() {
        let mut f = small();
        assert!(f.pin(&A, 1));
        assert_eq!(f.learn(&B, 2, 0), Learned::Yes);
        // A member's pinned and learned addresses stay with the member.
        assert_eq!(f.learn_uplink(&A, 10), Learned::Spoof);
        assert_eq!(f.learn_uplink(&B, 10), Learned::Spoof);
        assert_eq!(f.lookup(&B, 10), Some(2));
        // More than a port's bound, up to its own.
        for i in 0..7u8 {
            let r = f.learn_uplink(&[2, 5, 5, 5, 5, i], 20);
            assert_eq!(r, if i < 5 { Learned::Yes } else { Learned::Full }, "{i}");
        }
        assert_eq!(f.learned(UPLINK_PORT), 5);
        assert_eq!(f.lookup(&[2, 5, 5, 5, 5, 0], 30), Some(UPLINK_PORT));
        // Once the member's learned address aged out, the host behind the
        // uplink may have it; a member may take an uplink address back.
        f.forget_port(UPLINK_PORT);
        assert_eq!(f.learned(UPLINK_PORT), 0);
        assert_eq!(f.learn_uplink(&B, 5000), Learned::Yes);
        assert_eq!(f.learn(&B, 2, 5001), Learned::Yes);
        assert_eq!(f.learned(UPLINK_PORT), 0);
        assert_eq!(f.lookup(&B, 5002), Some(2));
        // The uplink's count never grows the per-port table.
        assert!(f.learned.len() < 8);
    }
}
