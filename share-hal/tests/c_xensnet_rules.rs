//! The kernel member's parsers (`guest-drivers/xensnet/parse.c`) checked
//! against the code of record: `guest-drivers/tests/xensnet-rules.c` runs
//! them over text input; this test compiles it with the host's C compiler,
//! feeds it control fields and slot chains (hand-written cases, the
//! protocol.md example, and some thousands of generated ones, well-formed
//! and mutated), and compares each verdict with `wire::net`'s
//! `ControlRepr::parse` and `FrameAssembler` on the same bytes. The kernel
//! then refuses exactly what the userspace member and the switch refuse.
mod c_common;

use c_common::{hex, Rng};
use std::fmt::Write as _;

use share_hal::wire::net::{
    self, features, flags, gso, Control, ControlRepr, FrameAssembler, NetLayout, SlotAction,
    SlotHeader, CONTROL_LEN, SLOT_DATA_MAX, SLOT_HEADER_LEN,
};
use share_hal::wire::Error;

fn run_c(input: &str) -> Vec<String> {
    c_common::run(
        &c_common::compile(
            "xensnet-rules",
            &["tests/xensnet-rules.c", "xensnet/parse.c"],
        ),
        input,
    )
}

#[derive(Clone, Copy, Default)]
struct Slot {
    len: u16,
    flags: u16,
    csum_start: u16,
    csum_offset: u16,
    gso_size: u16,
    gso_type: u8,
    gso_flags: u8,
    reserved: u32,
}

impl Slot {
    fn bytes(&self) -> [u8; SLOT_HEADER_LEN] {
        let mut b = [0u8; SLOT_HEADER_LEN];
        b[0..2].copy_from_slice(&self.len.to_le_bytes());
        b[2..4].copy_from_slice(&self.flags.to_le_bytes());
        b[4..6].copy_from_slice(&self.csum_start.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[8..10].copy_from_slice(&self.gso_size.to_le_bytes());
        b[10] = self.gso_type;
        b[11] = self.gso_flags;
        b[12..16].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }
}

/// What wire::net says about one slot, in the C program's words.
fn verdict(a: &mut FrameAssembler, raw: &[u8; SLOT_HEADER_LEN]) -> String {
    let more = u16::from_le_bytes([raw[2], raw[3]]) & flags::MORE != 0;
    match a.push(&SlotHeader::new_unchecked(&raw[..])) {
        Err(Error::TooMany { .. }) => "err size".into(),
        Err(Error::NotOffered { .. }) => "err feature".into(),
        Err(_) => "err invalid".into(),
        Ok(SlotAction::Skip) => format!("skip {}", u8::from(more)),
        Ok(SlotAction::Append {
            at,
            len,
            done: None,
        }) => format!("append {at} {len}"),
        Ok(SlotAction::Append {
            at,
            len,
            done: Some(f),
        }) => {
            let csum = match f.csum {
                Some(c) => format!("{}:{}", c.start, c.offset),
                None => "-0:0".into(),
            };
            let g = match f.gso {
                Some(g) => format!("{}:{}:{}", g.kind, g.size, g.flags),
                None => "0:0:0".into(),
            };
            format!(
                "done {at} {len} {} {} {csum} {} {g}",
                f.len,
                f.slots,
                u8::from(f.data_validated)
            )
        }
    }
}

/// A chain case: the assembler's parameters and its slots.
struct Chain {
    mtu: u16,
    features: u32,
    slots: Vec<Slot>,
}

/// A frame split as a sender would, offload fields on the first slot,
/// then maybe one field broken.
fn well_formed(r: &mut Rng) -> Chain {
    let features = r.below(16) as u32;
    let mtu = r.pick(&[68, 576, 1500, 1500, 4000, 9000]);
    let gso_frame = features & features::GSO != 0 && r.chance(40);
    let max = if gso_frame {
        net::GSO_MAX_FRAME
    } else {
        usize::from(mtu) + net::FRAME_OVERHEAD
    };
    let len = match r.below(4) {
        0 => max,
        1 => 14 + r.below(64) as usize,
        _ => 14 + r.below((max - 13) as u64) as usize,
    };
    let mut first = Slot::default();
    if gso_frame || (features & features::CSUM_BLANK != 0 && r.chance(50)) {
        first.flags |= flags::CSUM_BLANK;
        first.csum_start = r.pick(&[14u16, 34, 54]).min(len as u16 - 2);
        first.csum_offset = r.pick(&[6u16, 16]);
        if usize::from(first.csum_start + first.csum_offset) + 2 > len {
            first.csum_offset = 0;
        }
    }
    if features & features::DATA_VALIDATED != 0 && r.chance(30) {
        first.flags |= flags::DATA_VALIDATED;
    }
    if gso_frame {
        first.gso_type = r.pick(&[gso::TCPV4, gso::TCPV6, gso::UDP_L4]);
        first.gso_size = r.pick(&[1u16, 536, 1448, 8948]);
        if first.gso_type != gso::UDP_L4 && r.chance(30) {
            first.gso_flags = gso::FLAG_ECN;
        }
    }
    let mut slots = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = left.min(SLOT_DATA_MAX);
        let mut s = if slots.is_empty() {
            first
        } else {
            Slot::default()
        };
        s.len = n as u16;
        left -= n;
        if left > 0 {
            s.flags |= flags::MORE;
        }
        slots.push(s);
    }
    if r.chance(40) {
        let i = r.below(slots.len() as u64) as usize;
        mutate(r, &mut slots[i]);
    }
    Chain {
        mtu,
        features,
        slots,
    }
}

fn mutate(r: &mut Rng, s: &mut Slot) {
    match r.below(9) {
        0 => s.len = r.pick(&[0, 1, 13, 2032, 2033, 0xffff]),
        1 => s.flags ^= 1 << r.below(16),
        2 => {
            s.csum_start = {
                let x = r.below(0x10000) as u16;
                r.pick(&[0, 13, 14, 0xfffe, x])
            }
        }
        3 => {
            s.csum_offset = {
                let x = r.below(0x10000) as u16;
                r.pick(&[0, 6, 16, 0xffff, x])
            }
        }
        4 => s.gso_size = r.pick(&[0, 1, 0xffff]),
        5 => s.gso_type = r.below(6) as u8,
        6 => s.gso_flags = r.below(4) as u8,
        7 => s.reserved = r.next() as u32,
        _ => *s = random_slot(r),
    }
}

fn random_slot(r: &mut Rng) -> Slot {
    Slot {
        len: {
            let x = r.below(0x10000) as u16;
            r.pick(&[0, 1, 14, 60, 1514, 2031, 2032, 2033, x])
        },
        flags: if r.chance(80) {
            r.below(8) as u16
        } else {
            r.next() as u16
        },
        csum_start: {
            let x = r.below(0x10000) as u16;
            r.pick(&[0, 14, 34, x])
        },
        csum_offset: {
            let x = r.below(0x10000) as u16;
            r.pick(&[0, 6, 16, x])
        },
        gso_size: {
            let x = r.below(0x10000) as u16;
            r.pick(&[0, 0, 1448, x])
        },
        gso_type: if r.chance(60) { 0 } else { r.below(6) as u8 },
        gso_flags: if r.chance(70) { 0 } else { r.below(4) as u8 },
        reserved: if r.chance(90) { 0 } else { r.next() as u32 },
    }
}

fn random_chain(r: &mut Rng) -> Chain {
    let n = r.below(48) as usize;
    Chain {
        mtu: {
            let x = r.below(0x10000) as u16;
            r.pick(&[0, 67, 68, 1500, 1501, 9000, 9001, x])
        },
        features: r.next() as u32 & 0x1f,
        slots: (0..n).map(|_| random_slot(r)).collect(),
    }
}

fn control_bytes(r: &mut Rng) -> [u8; CONTROL_LEN] {
    let mut c = [0u8; CONTROL_LEN];
    for b in c.iter_mut() {
        *b = r.next() as u8;
    }
    if r.chance(80) {
        c[0..4].copy_from_slice(b"XSNT");
    }
    if r.chance(80) {
        c[4..6].copy_from_slice(&1u16.to_le_bytes());
    }
    if r.chance(60) {
        c[16] &= !1;
    }
    if r.chance(10) {
        c[16..22].fill(0);
    }
    if r.chance(70) {
        let mtu: u16 = r.pick(&[67, 68, 1500, 1501, 8999, 9000, 9001]);
        c[22..24].copy_from_slice(&mtu.to_le_bytes());
    }
    c
}

/// wire::net's answer for control fields, and what a member may accept
/// of them on numpages: the C program's `control` line.
fn control_verdict(raw: &[u8; CONTROL_LEN], numpages: u32) -> String {
    let Ok(c) = ControlRepr::parse(&Control::new_unchecked(&raw[..])) else {
        return "control err".into();
    };
    let layout = NetLayout::new(numpages).ok();
    let mut accepted = c.features_offered;
    if accepted & features::CSUM_BLANK == 0 || !layout.is_some_and(|l| l.holds_gso()) {
        accepted &= !features::GSO;
    }
    let slots = layout.map_or(0, |l| l.tx.slot_count as usize);
    if (usize::from(c.mtu) + net::FRAME_OVERHEAD).div_ceil(SLOT_DATA_MAX) > slots {
        accepted &= !features::JUMBO;
    }
    assert!(net::negotiate(c.features_offered, accepted).is_ok());
    format!(
        "control ok {} {} {} {accepted}",
        c.features_offered,
        hex(&c.mac),
        c.mtu
    )
}

#[test]
fn kernel_parsers_agree_with_the_wire_module() {
    let mut r = Rng(0x5eed_0f0e_5a1e_2026);
    let mut chains = vec![
        // protocol.md's example first slot (TCPv4 GSO, MSS 1448, ECN), then
        // the rest of a 65553-byte frame.
        Chain {
            mtu: 1500,
            features: features::ALL,
            slots: {
                let mut v = vec![Slot {
                    len: 2032,
                    flags: flags::MORE | flags::CSUM_BLANK,
                    csum_start: 34,
                    csum_offset: 16,
                    gso_size: 1448,
                    gso_type: gso::TCPV4,
                    gso_flags: gso::FLAG_ECN,
                    reserved: 0,
                }];
                v.extend((0..31).map(|_| Slot {
                    len: 2032,
                    flags: flags::MORE,
                    ..Slot::default()
                }));
                v.push(Slot {
                    len: (net::GSO_MAX_FRAME - 32 * SLOT_DATA_MAX) as u16,
                    ..Slot::default()
                });
                v
            },
        },
    ];
    for i in 0..6000 {
        chains.push(if i % 3 == 0 {
            random_chain(&mut r)
        } else {
            well_formed(&mut r)
        });
    }
    let example = chains[0].slots[0].bytes();
    assert_eq!(
        hex(&example),
        "f0070300220010 00a8050101 00000000".replace(' ', "")
    );

    let mut input = String::new();
    let mut want = Vec::new();
    for c in &chains {
        let _ = writeln!(input, "chain {} {}", c.mtu, c.features);
        let Ok(mut a) = FrameAssembler::new(c.mtu, c.features) else {
            want.push("chain err".to_string());
            continue;
        };
        want.push("chain ok".into());
        for s in &c.slots {
            let raw = s.bytes();
            let _ = writeln!(input, "slot {}", hex(&raw));
            want.push(verdict(&mut a, &raw));
        }
    }
    for _ in 0..3000 {
        let raw = control_bytes(&mut r);
        let numpages = r.pick(&[0, 3, 4, 5, 10, 65, 66, 258, 1016, 1017]);
        let _ = writeln!(input, "control {} {numpages}", hex(&raw));
        want.push(control_verdict(&raw, numpages));
    }

    let got = run_c(&input);
    assert_eq!(got.len(), want.len(), "one answer per input line");
    let lines: Vec<&str> = input.lines().collect();
    let diff: Vec<String> = (0..want.len())
        .filter(|&i| got[i] != want[i])
        .take(10)
        .map(|i| format!("{}\n  C:    {}\n  Rust: {}", lines[i], got[i], want[i]))
        .collect();
    assert!(diff.is_empty(), "C and Rust disagree:\n{}", diff.join("\n"));
    // The generated cases reach every kind of answer.
    for kind in [
        "done",
        "append",
        "skip",
        "err size",
        "err feature",
        "err invalid",
    ] {
        assert!(
            want.iter().any(|w| w.starts_with(kind)),
            "no case answered {kind}"
        );
    }
    let gso_done = want
        .iter()
        .filter(|w| w.starts_with("done") && !w.ends_with(" 0:0:0"))
        .count();
    assert!(gso_done > 100, "only {gso_done} GSO frames completed");
}
