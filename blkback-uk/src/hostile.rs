//! Test-only misbehaviour (feature `hostile`, issue 18): what a compromised
//! server could do to its members, chosen by the image's command line
//! (`hostile=MODE` or `hostile=MODE:AFTER`, the mode starting once AFTER
//! requests have been answered honestly). The rig's `hostile-blk` scenario
//! runs it against xensblk. Never in a shipped image: `cargo xtask images`
//! builds without it, and `cargo xtask dist` refuses an image carrying
//! [`MARKER`].
//!
//! Modes (each a lie a member must survive):
//! - `ids`: every response names a request that is not in flight;
//! - `status`: every response carries a status no protocol defines;
//! - `dup`: every response is published twice (the second answers a
//!   request no longer in flight);
//! - `scribble`: every response slot is filled with garbage;
//! - `index`: the response lane's `prod` is moved out of bounds;
//! - `flood`: honest answers, but 64 extra triggers per service round
//!   (a round per trigger of the member, and one a second);
//! - `silent`: nothing is answered any more;
//! - `pin`: honest answers, but the first data page of each of the first
//!   [`PIN_MAX`] requests is mapped (read-only) before its answer and kept
//!   mapped until this domain dies: a server that keeps a granted page.
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use share_hal::wire::blk::RESPONSE_SIZE;

/// In the image's bytes and its boot line: what `dist` looks for.
pub const MARKER: &str = "blkback-uk HOSTILE TEST BUILD";

/// Extra triggers per service round in `flood` mode.
pub const FLOOD_TRIGGERS: u32 = 64;

/// Pages `pin` mode keeps mapped, at most (each takes a slot of the
/// image's mapping window for good).
pub const PIN_MAX: u64 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Off = 0,
    Ids,
    Status,
    Dup,
    Scribble,
    Index,
    Flood,
    Silent,
    Pin,
}

const MODES: [(&str, Mode); 8] = [
    ("ids", Mode::Ids),
    ("status", Mode::Status),
    ("dup", Mode::Dup),
    ("scribble", Mode::Scribble),
    ("index", Mode::Index),
    ("flood", Mode::Flood),
    ("silent", Mode::Silent),
    ("pin", Mode::Pin),
];

static MODE: AtomicU8 = AtomicU8::new(Mode::Off as u8);
static AFTER: AtomicU64 = AtomicU64::new(0);
/// `dup`: the last response written (two halves), and whether it is yet
/// to be published again.
static LAST: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static REPLAY: AtomicBool = AtomicBool::new(false);
/// `pin`: pages mapped so far.
static PINNED: AtomicU64 = AtomicU64::new(0);

/// `MODE` or `MODE:AFTER`.
pub fn parse(s: &str) -> Option<(Mode, u64)> {
    let (name, after) = match s.split_once(':') {
        Some((n, a)) => (n, a.parse().ok()?),
        None => (s, 0),
    };
    MODES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, m)| (m, after))
}

pub fn set(mode: Mode, after: u64) {
    AFTER.store(after, Ordering::Relaxed);
    MODE.store(mode as u8, Ordering::Relaxed);
}

/// The mode in force once `answered` requests were answered.
pub fn active(answered: u64) -> Mode {
    if answered < AFTER.load(Ordering::Relaxed) {
        return Mode::Off;
    }
    match MODE.load(Ordering::Relaxed) {
        x if x == Mode::Ids as u8 => Mode::Ids,
        x if x == Mode::Status as u8 => Mode::Status,
        x if x == Mode::Dup as u8 => Mode::Dup,
        x if x == Mode::Scribble as u8 => Mode::Scribble,
        x if x == Mode::Index as u8 => Mode::Index,
        x if x == Mode::Flood as u8 => Mode::Flood,
        x if x == Mode::Silent as u8 => Mode::Silent,
        x if x == Mode::Pin as u8 => Mode::Pin,
        _ => Mode::Off,
    }
}

/// Rewrites a response as the mode lies.
pub fn response(raw: &mut [u8; RESPONSE_SIZE], answered: u64) {
    let mode = active(answered);
    if mode == Mode::Dup {
        LAST[0].store(u64::from_le_bytes(half(raw, 0)), Ordering::Relaxed);
        LAST[1].store(u64::from_le_bytes(half(raw, 8)), Ordering::Relaxed);
        REPLAY.store(true, Ordering::Relaxed);
    }
    lie(mode, raw, answered)
}

fn half(raw: &[u8; RESPONSE_SIZE], at: usize) -> [u8; 8] {
    raw[at..at + 8].try_into().unwrap_or([0; 8])
}

fn lie(mode: Mode, raw: &mut [u8; RESPONSE_SIZE], answered: u64) {
    match mode {
        Mode::Ids => {
            let id = u64::from_le_bytes(half(raw, 0));
            raw[0..8].copy_from_slice(&(id ^ 0x8000_0000_0001_0000).to_le_bytes());
        }
        Mode::Status => raw[10..12].copy_from_slice(&0x7ff3u16.to_le_bytes()),
        Mode::Scribble => {
            for (i, b) in raw.iter_mut().enumerate() {
                *b = (answered as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(97) ^ 0xa5;
            }
        }
        _ => {}
    }
}

/// `dup`: the last response, once, to publish again after the round.
pub fn replay() -> Option<[u8; RESPONSE_SIZE]> {
    if !REPLAY.swap(false, Ordering::Relaxed) {
        return None;
    }
    let mut raw = [0u8; RESPONSE_SIZE];
    raw[0..8].copy_from_slice(&LAST[0].load(Ordering::Relaxed).to_le_bytes());
    raw[8..16].copy_from_slice(&LAST[1].load(Ordering::Relaxed).to_le_bytes());
    Some(raw)
}

/// Whether nothing is answered any more.
pub fn silent(answered: u64) -> bool {
    active(answered) == Mode::Silent
}

/// Whether to map (and keep) a data page of the request about to be
/// answered; counts it.
pub fn pin(answered: u64) -> bool {
    active(answered) == Mode::Pin
        && PINNED
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < PIN_MAX).then_some(n + 1)
            })
            .is_ok()
}

/// Extra triggers to send a member after a service round.
pub fn flood(answered: u64) -> u32 {
    if active(answered) == Mode::Flood {
        FLOOD_TRIGGERS
    } else {
        0
    }
}

/// In `index` mode, the response lane's `prod` to publish after a round:
/// half the index space away from any real one.
pub fn bogus_prod(answered: u64) -> Option<u32> {
    (active(answered) == Mode::Index).then_some(0x8000_0000 ^ answered as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_start_after_their_count() {
        assert_eq!(parse("ids"), Some((Mode::Ids, 0)));
        assert_eq!(parse("silent:300"), Some((Mode::Silent, 300)));
        assert_eq!(parse("pin"), Some((Mode::Pin, 0)));
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse("ids:x"), None);
    }

    #[test]
    fn responses_lie_as_the_mode_says() {
        let mut honest = [0u8; RESPONSE_SIZE];
        honest[0] = 7;
        let mut raw = honest;
        lie(Mode::Off, &mut raw, 0);
        assert_eq!(raw, honest);
        lie(Mode::Dup, &mut raw, 0);
        assert_eq!(raw, honest, "dup lies by publishing again, not here");
        lie(Mode::Ids, &mut raw, 0);
        assert_ne!(raw[0..8], honest[0..8]);
        let mut raw = honest;
        lie(Mode::Status, &mut raw, 0);
        assert_eq!(u16::from_le_bytes([raw[10], raw[11]]), 0x7ff3);
        // The global mode starts off: the hooks are inert in every build.
        assert_eq!(active(u64::MAX), Mode::Off);
        assert_eq!(replay(), None);
        assert!(!pin(u64::MAX));
    }
}
