//! Test-only misbehaviour (feature `hostile`, issue 18): what a compromised
//! switch could write into its members' rx lanes, chosen by the image's
//! command line (`hostile=MODE` or `hostile=MODE:AFTER`: the first AFTER
//! IPv4 frames a member is sent go honestly, the lie starts with the next).
//! A list, `hostile=MODE1,MODE2,...[:AFTER]`, gives each port the switch
//! makes the next mode in turn (the last one stays for every later port),
//! with its own count of AFTER honest frames: one switch runs every lie,
//! a port each ([`port_added`]).
//! Only IPv4 frames are lied about (ARP stays honest, so a member still
//! finds the endpoint it pings). The rig's `hostile-net` scenario runs it
//! against xensnet. Never in a shipped image: `cargo xtask images` builds
//! without it, and `cargo xtask dist` refuses an image carrying [`MARKER`].
//!
//! Modes (each a lie a member must survive), per IPv4 frame sent:
//! - `len-zero`: the slot's `len` is 0;
//! - `len-slot`: the slot's `len` is 0xffff, beyond the slot and its page;
//! - `len-frame`: one slot of [`SLOT_DATA_MAX`] bytes, longer than the
//!   port's MTU frame;
//! - `chain`: a TCP GSO frame whose `MORE` chain runs past
//!   [`GSO_MAX_FRAME`] (one slot more than the longest frame takes);
//! - `csum-start`: `CSUM_BLANK` with `csum_start` past the frame's end;
//! - `csum-offset`: `CSUM_BLANK` at the IPv4 payload with `csum_offset`
//!   past the frame's end;
//! - `gso-type`: a `gso_type` no protocol defines;
//! - `gso-zero`: TCP GSO with `gso_size` 0;
//! - `gso-udp`: UDP GSO with `gso_size` 1: one segment per payload byte,
//!   far beyond `wire::net::GSO_MAX_UDP_SEGS` (64);
//! - `gso-tcp`: TCP GSO with `gso_size` 1 on a frame padded to 60 000
//!   bytes: thousands of segments, beyond `wire::net::GSO_MAX_SEGS` (256);
//! - `scribble`: the slot header is garbage;
//! - `index`: honest slots, then the rx lane's `prod` moved out of bounds;
//! - `cons`: the member's tx lane's `cons` moved out of bounds after each
//!   round that served its port;
//! - `flood`: honest frames, and [`FLOOD_TRIGGERS`] extra triggers for
//!   each trigger the member is sent.
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use share_hal::frames::{FrameMeta, FrameSender};
use share_hal::wire::net::{flags, gso, slot_field, GSO_MAX_FRAME, SLOT_DATA_MAX, SLOT_HEADER_LEN};
use share_hal::Result;

/// In the image's bytes and its boot line: what `dist` looks for.
pub const MARKER: &str = "netback-uk HOSTILE TEST BUILD";

/// Extra triggers per trigger of a member in `flood` mode.
pub const FLOOD_TRIGGERS: u32 = 64;

/// Where a frame's IPv4 header ends (Ethernet 14 + IPv4 20, no options):
/// the `csum_start` the lies use.
const L4_START: u16 = 34;
/// Offsets of the checksum field in a TCP and a UDP header.
const TCP_CHECK: u16 = 16;
const UDP_CHECK: u16 = 6;
/// `gso-tcp`: the frame is padded to this many bytes.
const GSO_TCP_FRAME: usize = 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Off = 0,
    LenZero,
    LenSlot,
    LenFrame,
    Chain,
    CsumStart,
    CsumOffset,
    GsoType,
    GsoZero,
    GsoUdp,
    GsoTcp,
    Scribble,
    Index,
    Cons,
    Flood,
}

pub const MODES: [(&str, Mode); 14] = [
    ("len-zero", Mode::LenZero),
    ("len-slot", Mode::LenSlot),
    ("len-frame", Mode::LenFrame),
    ("chain", Mode::Chain),
    ("csum-start", Mode::CsumStart),
    ("csum-offset", Mode::CsumOffset),
    ("gso-type", Mode::GsoType),
    ("gso-zero", Mode::GsoZero),
    ("gso-udp", Mode::GsoUdp),
    ("gso-tcp", Mode::GsoTcp),
    ("scribble", Mode::Scribble),
    ("index", Mode::Index),
    ("cons", Mode::Cons),
    ("flood", Mode::Flood),
];

static MODE: AtomicU8 = AtomicU8::new(Mode::Off as u8);
/// The modes of `hostile=` for the ports in turn ([`port_added`]); empty
/// ([`SEQ_LEN`] 0) when the mode was [`set`] directly.
static SEQ: [AtomicU8; MAX_SEQ] = [const { AtomicU8::new(Mode::Off as u8) }; MAX_SEQ];
static SEQ_LEN: AtomicU8 = AtomicU8::new(0);
/// Ports made so far (the next one takes `SEQ[min(PORTS, len - 1)]`).
static PORTS: AtomicU64 = AtomicU64::new(0);
/// At most this many modes in one `hostile=` list.
pub const MAX_SEQ: usize = 32;
static AFTER: AtomicU64 = AtomicU64::new(0);
/// IPv4 frames sent to members so far (honest or not).
static SENT: AtomicU64 = AtomicU64::new(0);

/// `MODE` or `MODE:AFTER`.
pub fn parse(s: &str) -> Option<(Mode, u64)> {
    match parse_list(s)? {
        (modes, after) if modes.len() == 1 => Some((modes[0], after)),
        _ => None,
    }
}

/// `MODE[,MODE...]` or `MODE[,MODE...]:AFTER` (at most [`MAX_SEQ`] modes).
pub fn parse_list(s: &str) -> Option<(Vec<Mode>, u64)> {
    let (names, after) = match s.split_once(':') {
        Some((n, a)) => (n, a.parse().ok()?),
        None => (s, 0),
    };
    let modes = names
        .split(',')
        .map(|name| MODES.iter().find(|(n, _)| *n == name).map(|&(_, m)| m))
        .collect::<Option<Vec<Mode>>>()?;
    (modes.len() <= MAX_SEQ).then_some((modes, after))
}

pub fn set(mode: Mode, after: u64) {
    AFTER.store(after, Ordering::Relaxed);
    SENT.store(0, Ordering::Relaxed);
    MODE.store(mode as u8, Ordering::Relaxed);
}

/// Whether a mode is set: the switch then copies every frame whole, so
/// that each goes through [`send`] and can be lied about.
pub fn lies() -> bool {
    mode() != Mode::Off
}

/// Each port the switch makes from now on takes the next of `modes` (see
/// [`port_added`]), with AFTER honest IPv4 frames first; until the first
/// port, the switch is honest.
pub fn set_sequence(modes: &[Mode], after: u64) {
    let n = modes.len().min(MAX_SEQ);
    for (slot, &m) in SEQ.iter().zip(&modes[..n]) {
        slot.store(m as u8, Ordering::Relaxed);
    }
    PORTS.store(0, Ordering::Relaxed);
    SEQ_LEN.store(n as u8, Ordering::Relaxed);
    set(Mode::Off, after);
}

/// Which entry of a sequence of `len` modes port number `port` (from 0)
/// takes: each in turn, the last one for every port after.
pub fn seq_index(port: u64, len: usize) -> Option<usize> {
    let last = len.checked_sub(1)?;
    Some(usize::try_from(port).map_or(last, |p| p.min(last)))
}

/// The switch made a port: with a `hostile=` list, the lie becomes the
/// list's next mode, counting AFTER honest frames from now. Returns the
/// mode the port lies with (None: no list, the mode stays as [`set`]).
pub fn port_added() -> Option<Mode> {
    let len = usize::from(SEQ_LEN.load(Ordering::Relaxed));
    let port = PORTS.fetch_add(1, Ordering::Relaxed);
    let m = mode_of(SEQ[seq_index(port, len)?].load(Ordering::Relaxed));
    set(m, AFTER.load(Ordering::Relaxed));
    Some(m)
}

fn mode_of(m: u8) -> Mode {
    MODES
        .iter()
        .map(|&(_, mode)| mode)
        .find(|&mode| mode as u8 == m)
        .unwrap_or(Mode::Off)
}

fn mode() -> Mode {
    mode_of(MODE.load(Ordering::Relaxed))
}

/// The mode, once the lie has started (an IPv4 frame past AFTER was sent).
fn active() -> Mode {
    if SENT.load(Ordering::Relaxed) > AFTER.load(Ordering::Relaxed) {
        mode()
    } else {
        Mode::Off
    }
}

fn is_ipv4(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x00][..])
}

/// One slot of a lie: its header, its data (of the frame), then `zeroes`
/// zero bytes (a lie never leaves stale lane bytes in what it claims).
#[derive(Debug, PartialEq, Eq)]
pub struct Slot<'f> {
    pub header: [u8; SLOT_HEADER_LEN],
    pub data: &'f [u8],
    pub zeroes: usize,
}

#[derive(Default)]
struct Header {
    len: u16,
    flags: u16,
    csum_start: u16,
    csum_offset: u16,
    gso_size: u16,
    gso_type: u8,
    gso_flags: u8,
}

impl Header {
    fn csum(mut self, start: u16, offset: u16) -> Self {
        self.flags |= flags::CSUM_BLANK;
        self.csum_start = start;
        self.csum_offset = offset;
        self
    }

    fn gso(mut self, kind: u8, size: u16) -> Self {
        self.gso_type = kind;
        self.gso_size = size;
        self
    }

    fn raw(&self) -> [u8; SLOT_HEADER_LEN] {
        let mut h = [0u8; SLOT_HEADER_LEN];
        h[slot_field::LEN].copy_from_slice(&self.len.to_le_bytes());
        h[slot_field::FLAGS].copy_from_slice(&self.flags.to_le_bytes());
        h[slot_field::CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        h[slot_field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
        h[slot_field::GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        h[slot_field::GSO_TYPE] = self.gso_type;
        h[slot_field::GSO_FLAGS] = self.gso_flags;
        h
    }
}

static ZEROES: [u8; SLOT_DATA_MAX] = [0; SLOT_DATA_MAX];

/// A slot of `len` bytes (at most a slot's data) from `frame` at `at`,
/// zeroes past the frame's end.
fn slot_of(header: Header, frame: &[u8], at: usize, len: usize) -> Slot<'_> {
    let len = len.min(SLOT_DATA_MAX);
    let rest = frame.get(at..).unwrap_or(&[]);
    let data = &rest[..len.min(rest.len())];
    Slot {
        header: header.raw(),
        data,
        zeroes: len - data.len(),
    }
}

/// A frame of `total` bytes (`frame`, then zeroes) as a chain of full
/// slots, the first with `first`'s offload fields.
fn chain_of<'f>(frame: &'f [u8], total: usize, first: Header, out: &mut Vec<Slot<'f>>) {
    let mut at = 0;
    let mut first = Some(first);
    while at < total {
        let len = (total - at).min(SLOT_DATA_MAX);
        let mut h = first.take().unwrap_or_default();
        h.len = len as u16;
        if at + len < total {
            h.flags |= flags::MORE;
        }
        out.push(slot_of(h, frame, at, len));
        at += len;
    }
}

/// The slots `mode` writes for `frame` (the `n`-th lie, to vary
/// `scribble`); none for the modes that lie elsewhere.
pub fn lie<'f>(mode: Mode, frame: &'f [u8], n: u64) -> Vec<Slot<'f>> {
    let mut out = Vec::new();
    let len = frame.len().min(SLOT_DATA_MAX);
    // The frame in one slot, its header's len as given.
    let with_len = |claimed: usize, h: Header| {
        slot_of(
            Header {
                len: claimed as u16,
                ..h
            },
            frame,
            0,
            len,
        )
    };
    let one = |h: Header| with_len(len, h);
    let flen = frame.len() as u16;
    match mode {
        Mode::LenZero => out.push(with_len(0, Header::default())),
        Mode::LenSlot => out.push(with_len(usize::from(u16::MAX), Header::default())),
        Mode::LenFrame => out.push(slot_of(
            Header {
                len: SLOT_DATA_MAX as u16,
                ..Header::default()
            },
            frame,
            0,
            SLOT_DATA_MAX,
        )),
        Mode::Chain => chain_of(
            frame,
            GSO_MAX_FRAME.next_multiple_of(SLOT_DATA_MAX) + SLOT_DATA_MAX,
            Header::default()
                .csum(L4_START, TCP_CHECK)
                .gso(gso::TCPV4, 1448),
            &mut out,
        ),
        Mode::CsumStart => out.push(one(Header::default().csum(flen.saturating_add(100), 0))),
        Mode::CsumOffset => out.push(one(Header::default().csum(L4_START, flen))),
        Mode::GsoType => out.push(one(Header::default()
            .csum(L4_START, TCP_CHECK)
            .gso(gso::TYPE_MAX + 6, 1448))),
        Mode::GsoZero => out.push(one(Header::default()
            .csum(L4_START, TCP_CHECK)
            .gso(gso::TCPV4, 0))),
        Mode::GsoUdp => out.push(one(Header::default()
            .csum(L4_START, UDP_CHECK)
            .gso(gso::UDP_L4, 1))),
        Mode::GsoTcp => chain_of(
            frame,
            GSO_TCP_FRAME.max(frame.len()),
            Header::default()
                .csum(L4_START, TCP_CHECK)
                .gso(gso::TCPV4, 1),
            &mut out,
        ),
        Mode::Scribble => {
            let mut header = [0u8; SLOT_HEADER_LEN];
            for (i, b) in header.iter_mut().enumerate() {
                *b = (n as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(97) ^ 0xa5;
            }
            out.push(Slot {
                header,
                data: &frame[..len],
                zeroes: 0,
            });
        }
        Mode::Off | Mode::Index | Mode::Cons | Mode::Flood => {}
    }
    out
}

/// Writes `frame` into a member's rx lane as the mode lies, if it lies
/// about this frame (`None`: send it honestly). `Ok(false)`: no room,
/// nothing written.
pub fn send(tx: &mut FrameSender<'_>, frame: &[u8], _meta: &FrameMeta) -> Option<Result<bool>> {
    if !is_ipv4(frame) {
        return None;
    }
    let n = SENT.fetch_add(1, Ordering::Relaxed);
    let after = AFTER.load(Ordering::Relaxed);
    if n < after {
        return None;
    }
    let slots = lie(mode(), frame, n - after);
    if slots.is_empty() {
        return None;
    }
    Some(write(tx, &slots))
}

fn write(tx: &mut FrameSender<'_>, slots: &[Slot<'_>]) -> Result<bool> {
    let lane = tx.lane();
    let count = slots.len() as u32;
    if !lane.reserve(count)? {
        return Ok(false);
    }
    for (k, s) in slots.iter().enumerate() {
        let slot = lane.slot(k as u32)?;
        slot.write_from(0, &s.header)?;
        slot.write_from(SLOT_HEADER_LEN, s.data)?;
        let zeroes = ZEROES
            .get(..s.zeroes)
            .ok_or(share_hal::Error::InvalidArgument {
                what: "a lie's slot longer than a slot",
            })?;
        slot.write_from(SLOT_HEADER_LEN + s.data.len(), zeroes)?;
    }
    lane.commit(count)?;
    Ok(true)
}

/// In `index` mode, the rx lane's `prod` to publish after a round: half
/// the index space away from any real one.
pub fn bogus_prod() -> Option<u32> {
    (active() == Mode::Index).then(|| 0x8000_0000 ^ SENT.load(Ordering::Relaxed) as u32)
}

/// In `cons` mode, the tx lane's `cons` to leave after a round.
pub fn bogus_cons() -> Option<u32> {
    (active() == Mode::Cons).then(|| 0x4000_0000 ^ SENT.load(Ordering::Relaxed) as u32)
}

/// Extra triggers to send with a trigger of a member.
pub fn flood() -> u32 {
    if active() == Mode::Flood {
        FLOOD_TRIGGERS
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use share_hal::wire::net::{
        features, FrameAssembler, SlotAction, SlotHeader, GSO_MAX_SEGS, GSO_MAX_UDP_SEGS,
    };

    /// An ICMP echo reply of `payload` bytes (what the management
    /// endpoint sends a member that pings it).
    fn echo_reply(payload: usize) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 42 + payload];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 1;
        f
    }

    /// What a receiver with every feature and MTU 1500 makes of `slots`:
    /// the frames it finished and the errors, in order.
    fn receive(slots: &[Slot<'_>]) -> (Vec<usize>, Vec<share_hal::wire::Error>, Option<u16>) {
        let mut asm = FrameAssembler::new(1500, features::ALL).unwrap();
        let (mut done, mut errors, mut size) = (Vec::new(), Vec::new(), None);
        for s in slots {
            match asm.push(&SlotHeader::new_unchecked(&s.header[..])) {
                Ok(SlotAction::Append {
                    done: Some(info), ..
                }) => {
                    size = info.gso.map(|g| g.size);
                    done.push(info.len);
                }
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
        (done, errors, size)
    }

    #[test]
    fn modes_parse_and_start_after_their_count() {
        assert_eq!(parse("len-zero"), Some((Mode::LenZero, 0)));
        assert_eq!(parse("index:2"), Some((Mode::Index, 2)));
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse("cons:x"), None);
        for (name, m) in MODES {
            assert_eq!(parse(name), Some((m, 0)));
        }
        // The global mode starts off: the hooks are inert in every build.
        assert_eq!(active(), Mode::Off);
        assert_eq!((bogus_prod(), bogus_cons(), flood()), (None, None, 0));
    }

    #[test]
    fn lists_parse_and_give_each_port_the_next_mode() {
        assert_eq!(
            parse_list("len-zero,index,flood:2"),
            Some((alloc::vec![Mode::LenZero, Mode::Index, Mode::Flood], 2))
        );
        assert_eq!(parse_list("cons"), Some((alloc::vec![Mode::Cons], 0)));
        assert_eq!(parse_list("cons,,flood"), None);
        assert_eq!(parse_list("cons,nonsense:1"), None);
        assert_eq!(parse_list("flood:x"), None);
        let every: Vec<&str> = MODES.iter().map(|(n, _)| *n).collect();
        let (all, _) = parse_list(&every.join(",")).unwrap();
        assert_eq!(all, MODES.map(|(_, m)| m).to_vec());
        let too_many = alloc::vec!["flood"; MAX_SEQ + 1].join(",");
        assert_eq!(parse_list(&too_many), None);
        // A single mode parses either way; `parse` takes no list.
        assert_eq!(parse("len-slot:3"), Some((Mode::LenSlot, 3)));
        assert_eq!(parse("len-slot,cons"), None);
        // Ports take the modes in turn, the last one for every later port.
        let order: Vec<Option<usize>> = (0..5).map(|p| seq_index(p, 3)).collect();
        assert_eq!(order, [Some(0), Some(1), Some(2), Some(2), Some(2)]);
        assert_eq!(seq_index(u64::MAX, 3), Some(2));
        assert_eq!(seq_index(0, 0), None);
    }

    #[test]
    fn each_slot_lie_breaks_the_rule_it_names() {
        let f = echo_reply(1000);
        // Refused by the slot rules (share-hal's FrameAssembler, which
        // xensnet's parse.c follows): no frame comes out, one error.
        for m in [
            Mode::LenZero,
            Mode::LenSlot,
            Mode::LenFrame,
            Mode::Chain,
            Mode::CsumStart,
            Mode::CsumOffset,
            Mode::GsoType,
            Mode::GsoZero,
            Mode::Scribble,
        ] {
            let slots = lie(m, &f, 0);
            assert!(!slots.is_empty(), "{m:?}");
            let (done, errors, _) = receive(&slots);
            assert_eq!((done.len(), errors.len()), (0, 1), "{m:?}: {errors:?}");
        }
        // Whatever garbage a scribbled header holds, no frame comes out.
        for n in 0..4096 {
            let (done, _, _) = receive(&lie(Mode::Scribble, &f, n));
            assert!(done.is_empty(), "scribble {n}");
        }
        // The chain: one slot more than the longest frame takes.
        assert_eq!(
            lie(Mode::Chain, &f, 0).len(),
            GSO_MAX_FRAME.div_ceil(SLOT_DATA_MAX) + 1
        );
    }

    #[test]
    fn the_gso_lies_pass_the_slot_rules_with_too_many_segments() {
        let f = echo_reply(1000);
        let (done, errors, size) = receive(&lie(Mode::GsoUdp, &f, 0));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((done, size), (alloc::vec![f.len()], Some(1)));
        assert!(f.len() - 42 > GSO_MAX_UDP_SEGS);
        let (done, errors, size) = receive(&lie(Mode::GsoTcp, &f, 0));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!((done, size), (alloc::vec![GSO_TCP_FRAME], Some(1)));
        const { assert!((GSO_TCP_FRAME - 54) / 8 > GSO_MAX_SEGS) };
    }

    #[test]
    fn lies_carry_the_frame_and_only_zeroes_after_it() {
        let mut f = echo_reply(1000);
        f.iter_mut().skip(42).for_each(|b| *b = 0x5a);
        let slots = lie(Mode::GsoTcp, &f, 0);
        assert_eq!(slots[0].data, &f[..]);
        assert_eq!(slots[0].zeroes, SLOT_DATA_MAX - f.len());
        assert!(slots[1..].iter().all(|s| s.data.is_empty()));
        let total: usize = slots.iter().map(|s| s.data.len() + s.zeroes).sum();
        assert_eq!(total, GSO_TCP_FRAME);
        // Each slot's bytes are what its header claims (len-slot aside,
        // whose claim is the lie).
        for m in MODES.map(|(_, m)| m) {
            for s in lie(m, &f, 0) {
                let claimed = usize::from(u16::from_le_bytes([s.header[0], s.header[1]]));
                assert!(s.data.len() + s.zeroes <= SLOT_DATA_MAX, "{m:?}");
                if !matches!(m, Mode::LenSlot | Mode::LenZero | Mode::Scribble) {
                    assert_eq!(s.data.len() + s.zeroes, claimed, "{m:?}");
                }
            }
        }
        assert!(lie(Mode::Index, &f, 0).is_empty());
        assert!(lie(Mode::Off, &f, 0).is_empty());
    }
}
