//! The platform self-test: what the PVH image (`pvh-selftest`) and dom0's
//! `share-selftest-dom0` agree on. The protocol is written down in
//! `platforms/share-pvh/SELFTEST.md`; this is its code: the mailbox page
//! layout, the states, and the byte patterns each side checks.
//!
//! Everything here is platform-free so that both sides (and the host
//! tests) use the same definitions.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt;

/// The xenstore key (relative to the domU's home) the domU publishes.
pub const KEY: &str = "data/selftest";

/// `"XSST"`, little-endian, at offset 0 of the mailbox page.
pub const MAGIC: u32 = u32::from_le_bytes(*b"XSST");

/// Byte offsets of the mailbox page (all fields u32, little-endian).
pub mod field {
    pub const MAGIC: usize = 0;
    /// Written by the domU only.
    pub const UK_STATE: usize = 4;
    /// Written by dom0 only.
    pub const DOM0_STATE: usize = 8;
    /// dom0: the page holding pattern C (the domU maps it and copies from it).
    pub const GREF_C: usize = 12;
    /// dom0: the page the domU grant-copies pattern D into.
    pub const GREF_D: usize = 16;
    /// dom0: the ping counter.
    pub const PING: usize = 20;
    /// domU: the last ping answered.
    pub const PONG: usize = 24;
    /// dom0: a port it allocated unbound for the domU, which binds it
    /// (`bind_interdomain`) and triggers it once.
    pub const DOM0_PORT: usize = 28;
    /// Where pattern A (written by the domU) starts, and its length.
    pub const PATTERN_A: usize = 2048;
    pub const PATTERN_A_LEN: usize = 2048;
}

/// States the domU reaches (`UK_STATE`).
pub mod uk_state {
    /// Mailbox granted, pattern A written, port open, key published.
    pub const PUBLISHED: u32 = 1;
    /// Mapped C and checked it, copied C in and D out.
    pub const COPIED: u32 = 2;
}

/// States dom0 reaches (`DOM0_STATE`).
pub mod dom0_state {
    /// Read pattern A, bound the port, granted C and D.
    pub const GRANTED: u32 = 1;
    /// Found pattern D in page D.
    pub const CHECKED_D: u32 = 2;
    /// Ping-pong done; dom0 unmaps the mailbox next.
    pub const DONE: u32 = 3;
}

/// Rounds of event channel ping-pong.
pub const PINGS: u32 = 16;
/// How long the domU's timed wait lasts (ms), and the slack it may take.
pub const TIMED_WAIT_MS: u64 = 300;
pub const TIMED_WAIT_SLACK_MS: u64 = 5_000;

/// The patterns: byte `i` of pattern `seed` (A, C, D).
pub const SEED_A: u8 = b'A';
pub const SEED_C: u8 = b'C';
pub const SEED_D: u8 = b'D';

pub fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 8) as u8)
}

/// Fills `buf` with pattern `seed`.
pub fn fill(seed: u8, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
}

/// The first offset where `buf` differs from pattern `seed`.
pub fn first_mismatch(seed: u8, buf: &[u8]) -> Option<usize> {
    buf.iter()
        .enumerate()
        .position(|(i, &b)| b != pattern(seed, i))
}

/// The published value: `gref=<mailbox grant> port=<unbound port>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub gref: u32,
    pub port: u32,
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gref={} port={}", self.gref, self.port)
    }
}

impl Published {
    /// Parses the value read from xenstore (written by the domU: hostile).
    pub fn parse(s: &str) -> Option<Published> {
        let mut gref = None;
        let mut port = None;
        for word in s.split_ascii_whitespace() {
            let (k, v) = word.split_once('=')?;
            let v: u32 = v.parse().ok()?;
            match k {
                "gref" if gref.is_none() => gref = Some(v),
                "port" if port.is_none() => port = Some(v),
                _ => return None,
            }
        }
        Some(Published {
            gref: gref?,
            port: port?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_and_are_checked() {
        let mut a = [0u8; 4096];
        fill(SEED_A, &mut a);
        assert_eq!(first_mismatch(SEED_A, &a), None);
        assert_eq!(first_mismatch(SEED_C, &a), Some(0));
        a[1234] ^= 1;
        assert_eq!(first_mismatch(SEED_A, &a), Some(1234));
        // Page-sized patterns do not repeat every 256 bytes.
        assert_ne!(pattern(SEED_D, 0), pattern(SEED_D, 256));
    }

    #[test]
    fn published_round_trips_and_rejects_garbage() {
        let p = Published { gref: 8, port: 5 };
        assert_eq!(Published::parse(&p.to_string()), Some(p));
        assert_eq!(Published::parse("port=5 gref=8"), Some(p));
        for bad in [
            "",
            "gref=8",
            "gref=8 port=x",
            "gref=8 port=5 extra=1",
            "gref=1 gref=2 port=3",
            "gref 8",
        ] {
            assert_eq!(Published::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn magic_spells_xsst() {
        assert_eq!(MAGIC.to_le_bytes(), *b"XSST");
    }

    proptest::proptest! {
        #[test]
        fn any_published_value_parses_without_panic(s in ".{0,64}") {
            let _ = Published::parse(&s);
        }
    }
}
