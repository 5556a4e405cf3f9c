//! netback-uk's switch against members that do anything to their own
//! shares: send frames of any bytes and length, rewrite any word of their
//! share (lane indexes, slot headers, control fields) between switch
//! rounds, come and go. The switch must never panic, and its forwarding
//! rules must hold whatever the members do:
//! - every frame a member receives is within its negotiated maximum;
//! - nothing crosses LANs: members 0..=2 share LAN 1, member 3 is alone on
//!   LAN 2, so member 3 never receives a frame and no LAN 1 member ever
//!   receives a frame with member 3's MAC as source;
//! - a frame is never delivered back to the port that sent it (a port's
//!   own pinned MAC as source is never seen by that port);
//! - the work of one round is bounded whatever the members send (issue
//!   17): slots read at most `budget * GSO_MAX_SLOTS` a port, frames made
//!   at most a port's work budget plus what its last frame made (at most
//!   `GSO_MAX_SEGS` a destination, and the management endpoint's replies),
//!   and a round takes at most [`MAX_ROUND`] of wall time.
//!
//! Input: a script of ops, each a byte and its operands:
//! 0 k len <bytes>: member k sends a frame (min 14 bytes, a valid
//!   Ethernet header is not required); bit 2 of len's low byte makes it a
//!   GSO frame (type and size from the next 3 bytes) for member 0, the
//!   only one whose share carries GSO;
//! 1 k off:u16 val:u32: member k writes a word of its share;
//! 2: a switch round; 3 k: member k drains its rx lane and checks it;
//! 4: time moves 400 s (addresses age out); 5 k: member k's port is
//! removed and made again; 6 l1 l2 <bytes>: the network behind LAN 1's
//! uplink sends a frame (any bytes; a member's MAC as source or
//! destination by l1's bits, a partial checksum anywhere or the validated
//! mark by others). Member 3's frames carry the ethertype
//! `LAN2_MARK`, and nobody else's.
//!
//! The uplink (issue 21): nothing of LAN 2 ever goes out of it, what goes
//! out fits it, and no member receives a frame with its own MAC as source
//! even when the uplink's network sends one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback_uk::fdb::Mac;
use netback_uk::switch::{PortSpec, Switch, SwitchConfig, Uplinks, IMPLEMENTED, UPLINK_MAX_FRAME};
use netback_uk::testing::TestMember;
use share_hal::frames::FrameMeta;
use share_hal::platform::EventChannels;
use share_hal::platform::PAGE_SIZE;
use share_hal::wire::net::{flags, GSO_MAX_FRAME, GSO_MAX_SEGS, GSO_MAX_SLOTS, GSO_MIN_PAGES};
use share_local::{LocalHost, LocalPlatform};
use std::collections::VecDeque;
use std::time::Duration;

const MEMBERS: usize = 4;
/// Shares of 6 pages (lanes too small for jumbo frames: not offered), of
/// 10 (jumbo offered) and, for member 0, of `GSO_MIN_PAGES` (GSO offered).
const PAGES: [u32; MEMBERS] = [GSO_MIN_PAGES, 10, 10, 6];
const BUDGET: u32 = 4;
/// The most CPU time a round may take (a 64 KiB frame cut into 1-byte
/// segments for every port took about a second before issue 17). CPU time
/// of this thread, not wall time: a loaded machine that preempts the
/// fuzzer mid-round is not the switch doing too much work.
const MAX_ROUND: Duration = Duration::from_millis(250);

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The ethertype of member 3's frames (an IEEE local experimental one).
const LAN2_MARK: [u8; 2] = [0x88, 0xb5];

/// LAN 1's uplink: what its network sends, and checks on what goes out.
struct Wire {
    inbox: VecDeque<(Vec<u8>, FrameMeta)>,
    sent: u64,
}

impl Uplinks for Wire {
    fn recv(&mut self, device: u16, buf: &mut [u8]) -> Option<(usize, FrameMeta)> {
        assert_eq!(device, 0, "the switch read a device it was not given");
        let (f, meta) = self.inbox.pop_front()?;
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Some((f.len(), meta))
    }
    fn send(&mut self, device: u16, frame: &[u8], meta: FrameMeta) -> bool {
        assert_eq!(device, 0);
        // It takes no offload: everything resolved first.
        assert_eq!(meta, FrameMeta::default(), "offload fields to the uplink");
        assert!(
            (14..=UPLINK_MAX_FRAME).contains(&frame.len()),
            "a frame of {} bytes out of the uplink",
            frame.len()
        );
        assert!(
            frame[12..14] != LAN2_MARK,
            "a frame of LAN 2 went out of LAN 1's uplink"
        );
        self.sent += 1;
        self.sent % 7 != 0
    }
    fn has(&self, device: u16) -> bool {
        device == 0
    }
}

/// Checks one round against its bounds.
fn round(sw: &mut Switch<LocalPlatform>, p: &mut LocalPlatform, wire: &mut Wire) {
    let t = thread_cpu_time();
    let now = share_hal::platform::Clock::now_ns(p);
    let r = sw.poll_with(p, now, wire);
    let took = thread_cpu_time().saturating_sub(t);
    // The uplink is one more source.
    let ports = MEMBERS as u64 + 1;
    let budget = u64::from(BUDGET * GSO_MAX_SLOTS);
    assert!(r.slots <= ports * budget, "{} slots in one round", r.slots);
    // A port's last frame: its segments for the other ports, and for the
    // endpoint each segment and the reply it may flood to every port.
    let last_frame = GSO_MAX_SEGS as u64 * ((ports - 1) + (1 + ports));
    assert!(
        r.emitted <= ports * (budget + last_frame),
        "{} frames made in one round",
        r.emitted
    );
    assert!(took <= MAX_ROUND, "a round took {took:?} of CPU time");
}

fn spec(k: usize) -> PortSpec {
    PortSpec {
        lan: if k == 3 { 2 } else { 1 },
        member: 2 + k as u16,
        mac: [0; 6],
        policy: IMPLEMENTED,
        numpages: PAGES[k],
    }
}

fn join(
    host: &LocalHost,
    sw: &mut Switch<LocalPlatform>,
    p: &mut LocalPlatform,
    k: usize,
    accept: u32,
) -> TestMember<LocalPlatform> {
    let r = sw.add_port(p, k as u16, spec(k)).expect("port");
    TestMember::join(host.domain(2 + k as u16), r, accept)
}

fuzz_target!(|data: &[u8]| {
    let host = LocalHost::new();
    let mut p = host.domain(1);
    let mut sw = Switch::new(SwitchConfig {
        budget: BUDGET,
        ..SwitchConfig::default()
    });
    // Members accept different feature sets: 0 all, 1 none, 2 jumbo, 3 all.
    let accepts = [
        IMPLEMENTED,
        0,
        share_hal::wire::net::features::JUMBO,
        IMPLEMENTED,
    ];
    let mut members: Vec<Option<TestMember<LocalPlatform>>> = (0..MEMBERS)
        .map(|k| Some(join(&host, &mut sw, &mut p, k, accepts[k])))
        .collect();
    let macs: Vec<Mac> = members.iter().map(|m| m.as_ref().unwrap().mac).collect();
    // What each member negotiated: jumbo only where offered and accepted.
    let max_frame = |k: usize, gso: bool| {
        let jumbo = accepts[k] & share_hal::wire::net::features::JUMBO != 0 && PAGES[k] >= 10;
        if gso && k == 0 {
            GSO_MAX_FRAME
        } else if jumbo {
            9018
        } else {
            1518
        }
    };
    let mut wire = Wire {
        inbox: VecDeque::new(),
        sent: 0,
    };
    sw.attach_uplink(1, 0, 100, false).expect("uplink");
    round(&mut sw, &mut p, &mut wire);

    let mut ops = data.iter().copied();
    let mut frame = Vec::new();
    while let Some(op) = ops.next() {
        match op % 7 {
            0 => {
                let (Some(k), Some(l1), Some(l2)) = (ops.next(), ops.next(), ops.next()) else {
                    break;
                };
                let k = usize::from(k) % MEMBERS;
                let len = 14 + (usize::from(u16::from_le_bytes([l1, l2])) % 9100);
                frame.clear();
                // The member's own MAC as source most of the time, so
                // frames are forwarded; the rest is input bytes.
                frame.extend_from_slice(&[0xff; 6]);
                frame.extend_from_slice(&macs[k]);
                while frame.len() < len {
                    frame.push(ops.next().unwrap_or(0));
                }
                if l1 & 1 == 1 {
                    frame[..6].copy_from_slice(&macs[usize::from(l2) % MEMBERS]);
                }
                if l1 & 2 == 2 {
                    frame[6..12].copy_from_slice(&macs[usize::from(l2 >> 2) % MEMBERS]);
                }
                let mut meta = FrameMeta::default();
                if l1 & 4 == 4 && k == 0 {
                    let (t, s1, s2) = (
                        ops.next().unwrap_or(1),
                        ops.next().unwrap_or(1),
                        ops.next().unwrap_or(0),
                    );
                    let udp = t % 3 == 2;
                    meta = FrameMeta {
                        flags: flags::CSUM_BLANK,
                        csum_start: if frame.len() > 18 && frame[12] == 0x81 {
                            38
                        } else {
                            34
                        },
                        csum_offset: if udp { 6 } else { 16 },
                        gso_type: 1 + t % 3,
                        gso_size: u16::from_le_bytes([s1, s2]),
                        gso_flags: 0,
                    };
                    // GSO frames may be up to 64 KiB: repeat the input.
                    let want = 14 + usize::from(u16::from_le_bytes([l2, s1]));
                    let mut i = 12;
                    while frame.len() < want && frame.len() > 12 {
                        frame.push(frame[i]);
                        i += 1;
                    }
                }
                // Member 3's frames (LAN 2) carry the ethertype LAN2_MARK,
                // nobody else's, so the uplink can tell them.
                if k == 3 {
                    frame[12..14].copy_from_slice(&LAN2_MARK);
                } else if frame[12..14] == LAN2_MARK {
                    frame[13] ^= 1;
                }
                if let Some(m) = members[k].as_mut() {
                    if frame.len() <= max_frame(k, meta.gso_type != 0) {
                        m.send(&[frame.clone()], meta);
                    }
                }
            }
            1 => {
                let (Some(k), Some(o1), Some(o2)) = (ops.next(), ops.next(), ops.next()) else {
                    break;
                };
                let v: Vec<u8> = ops.by_ref().take(4).collect();
                let Ok(v) = <[u8; 4]>::try_from(v) else { break };
                let k = usize::from(k) % MEMBERS;
                let off = (usize::from(u16::from_le_bytes([o1, o2])) * 4)
                    % (PAGES[k] as usize * PAGE_SIZE);
                if let Some(m) = members[k].as_mut() {
                    let _ = m.att.mem().write_u32(off, u32::from_le_bytes(v));
                    if let Some(port) = m.att.port() {
                        let _ = m.p.notify(port);
                    }
                }
            }
            2 => {
                round(&mut sw, &mut p, &mut wire);
            }
            3 => {
                let Some(k) = ops.next() else { break };
                let k = usize::from(k) % MEMBERS;
                let own = macs[k];
                if let Some(m) = members[k].as_mut() {
                    m.recv_with(|f, meta| {
                        let max = max_frame(k, meta.gso_type != 0);
                        assert!(
                            f.len() <= max,
                            "frame of {} bytes for a port of max {max}",
                            f.len()
                        );
                        assert!(k != 3, "the lone member of LAN 2 received a frame");
                        assert!(f[6..12] != macs[3], "a frame crossed from LAN 2 to LAN 1");
                        assert!(f[6..12] != own, "a frame came back to its sender");
                    });
                }
            }
            4 => {
                host.advance(400_000_000_000);
                sw.housekeep(&mut p);
            }
            6 => {
                let (Some(l1), Some(l2)) = (ops.next(), ops.next()) else {
                    break;
                };
                let len = usize::from(u16::from_le_bytes([l1, l2])) % 1600;
                let mut f: Vec<u8> = ops.by_ref().take(len).collect();
                if l1 & 1 == 1 && f.len() >= 6 {
                    f[..6].copy_from_slice(&macs[usize::from(l2) % MEMBERS]);
                }
                if l1 & 2 == 2 && f.len() >= 12 {
                    f[6..12].copy_from_slice(&macs[usize::from(l2 >> 2) % MEMBERS]);
                }
                // Offload fields as an uplink device may report them (the
                // switch checks them against the frame as a member's).
                let mut meta = FrameMeta::default();
                if l1 & 4 == 4 {
                    meta.flags |= flags::CSUM_BLANK;
                    meta.csum_start = u16::from(l2);
                    meta.csum_offset = u16::from(l1 >> 4);
                }
                if l1 & 8 == 8 {
                    meta.flags |= flags::DATA_VALIDATED;
                }
                if wire.inbox.len() < 256 {
                    wire.inbox.push_back((f, meta));
                }
            }
            _ => {
                let Some(k) = ops.next() else { break };
                let k = usize::from(k) % MEMBERS;
                if let Some(m) = members[k].take() {
                    let _ = sw.remove_port(&mut p, k as u16);
                    let TestMember { mut p, att, .. } = m;
                    let _ = att.detach(&mut p);
                    sw.housekeep(&mut host.domain(1));
                    members[k] = Some(join(&host, &mut sw, &mut host.domain(1), k, accepts[k]));
                }
            }
        }
    }
    // Whatever happened, a final round and the teardown must not panic,
    // and once every member let go, every page is freed (a share keeps
    // pages a member still maps for ever, by design: detach first).
    round(&mut sw, &mut p, &mut wire);
    for (k, m) in members.into_iter().enumerate() {
        let _ = sw.remove_port(&mut p, k as u16);
        if let Some(TestMember { p: mut mp, att, .. }) = m {
            let _ = att.detach(&mut mp);
        }
    }
    assert_eq!(
        sw.housekeep(&mut p),
        0,
        "shares left after every member detached"
    );
});
