//! The kernel disk's parsers (`guest-drivers/xensblk/parse.c`) checked
//! against the code of record: `guest-drivers/tests/xensblk-rules.c` runs
//! them over text input; this test compiles it with the host's C compiler,
//! feeds it control fields and response slots (hand-written cases and some
//! thousands of generated ones, well-formed and mutated), and compares each
//! verdict with `wire::blk`'s `ControlRepr::parse` and `ResponseRepr::parse`
//! plus the member's check that a response's id is one it has in flight.
//! xensblk.ko then takes exactly the disks and answers the userspace member
//! (share-member, blkback-uk's client) takes.
mod c_common;

use c_common::{hex, Rng};

use share_hal::wire::blk::{
    control_flags, features, Control, ControlRepr, Response, ResponseRepr, CONTROL_LEN, MAGIC,
    MAX_INDIRECT_SEGMENTS, RESPONSE_SIZE, SECTOR_SIZE, VERSION,
};

fn run_c(input: &str) -> Vec<String> {
    c_common::run(
        &c_common::compile(
            "xensblk-rules",
            &["tests/xensblk-rules.c", "xensblk/parse.c"],
        ),
        input,
    )
}

struct Ctl {
    magic: u32,
    version: u16,
    sector_size: u16,
    features: u32,
    flags: u32,
    capacity: u64,
    max_indirect: u16,
    reserved: u8,
}

impl Ctl {
    fn good() -> Self {
        Ctl {
            magic: MAGIC,
            version: VERSION,
            sector_size: SECTOR_SIZE as u16,
            features: features::ALL,
            flags: 0,
            capacity: 262_144,
            max_indirect: 256,
            reserved: 0,
        }
    }

    fn bytes(&self) -> [u8; CONTROL_LEN] {
        let mut b = [self.reserved; CONTROL_LEN];
        b[0..4].copy_from_slice(&self.magic.to_le_bytes());
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.sector_size.to_le_bytes());
        b[8..12].copy_from_slice(&self.features.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.capacity.to_le_bytes());
        b[24..26].copy_from_slice(&self.max_indirect.to_le_bytes());
        b
    }

    fn random(rng: &mut Rng) -> Self {
        let max_capacity = u64::MAX / SECTOR_SIZE as u64;
        let mut c = Ctl::good();
        if rng.chance(5) {
            c.magic = rng.pick(&[0, MAGIC ^ 1, u32::from_le_bytes(*b"XSNT")]);
        }
        if rng.chance(10) {
            c.version = rng.pick(&[0, 2, u16::MAX]);
        }
        if rng.chance(10) {
            c.sector_size = rng.pick(&[0, 511, 1024, 4096]);
        }
        c.features = match rng.below(4) {
            0 => rng.next() as u32,
            1 => rng.below(16) as u32,
            _ => rng.pick(&[0, features::ALL, features::ALL & !features::INDIRECT, 0xd]),
        };
        c.flags = if rng.chance(50) { 0 } else { rng.next() as u32 };
        let any_capacity = rng.next();
        c.capacity = rng.pick(&[
            0,
            1,
            262_144,
            max_capacity,
            max_capacity + 1,
            u64::MAX,
            any_capacity,
        ]);
        let any_indirect = rng.next() as u16;
        c.max_indirect = rng.pick(&[
            0,
            1,
            13,
            256,
            MAX_INDIRECT_SEGMENTS,
            MAX_INDIRECT_SEGMENTS + 1,
            u16::MAX,
            any_indirect,
        ]);
        if rng.chance(20) {
            c.reserved = rng.next() as u8;
        }
        c
    }
}

fn expect_control(b: &[u8; CONTROL_LEN]) -> String {
    match ControlRepr::parse(&Control::new_unchecked(&b[..])) {
        Ok(r) => format!(
            "control ok {} {} {} {}",
            r.features,
            u8::from(r.read_only),
            r.capacity,
            r.max_indirect_segments
        ),
        Err(_) => "control err".into(),
    }
}

fn response_bytes(id: u64, op: u8, status: i16, reserved: u8) -> [u8; RESPONSE_SIZE] {
    let mut b = [reserved; RESPONSE_SIZE];
    b[0..8].copy_from_slice(&id.to_le_bytes());
    b[8] = op;
    b[10..12].copy_from_slice(&status.to_le_bytes());
    b
}

/// The member's verdict: the slot parses, and its id is one in flight.
fn expect_response(b: &[u8; RESPONSE_SIZE], nr: u32, mask: u64) -> String {
    match ResponseRepr::parse(&Response::new_unchecked(&b[..])) {
        Err(_) => "response err status".into(),
        Ok(r) if r.id < u64::from(nr) && (mask >> r.id) & 1 == 1 => {
            format!("response ok {} {} {}", r.id, r.op, r.status as i16)
        }
        Ok(_) => "response err id".into(),
    }
}

/// Runs every case through the C parsers; returns the verdicts after
/// checking each equals the code of record's.
fn compare(cases: &[(String, String)]) -> Vec<String> {
    let input: String = cases.iter().map(|(line, _)| format!("{line}\n")).collect();
    let got = run_c(&input);
    assert_eq!(got.len(), cases.len(), "one output line per input line");
    let mut wrong = Vec::new();
    for ((line, want), got) in cases.iter().zip(&got) {
        if want != got {
            wrong.push(format!("{line}: C says {got:?}, share-hal {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} verdicts differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
    got
}

fn control_case(b: &[u8; CONTROL_LEN]) -> (String, String) {
    (format!("control {}", hex(b)), expect_control(b))
}

fn response_case(b: &[u8; RESPONSE_SIZE], nr: u32, mask: u64) -> (String, String) {
    (
        format!("response {} {nr} {mask:x}", hex(b)),
        expect_response(b, nr, mask),
    )
}

#[test]
fn control_fields_hand_written() {
    let good = Ctl::good();
    let mut cases = vec![control_case(&good.bytes())];
    let mut read_only = Ctl::good();
    read_only.flags = control_flags::READ_ONLY | 0x8000_0000;
    let mut no_indirect = Ctl::good();
    no_indirect.features = features::FLUSH;
    no_indirect.max_indirect = 999; // ignored without INDIRECT
    let mut zero_indirect = Ctl::good();
    zero_indirect.max_indirect = 0;
    let mut too_many = Ctl::good();
    too_many.max_indirect = MAX_INDIRECT_SEGMENTS + 1;
    let mut newer = Ctl::good();
    newer.features = 0xffff_fff0 | features::FLUSH; // unknown bits dropped
    let mut big = Ctl::good();
    big.capacity = u64::MAX / SECTOR_SIZE as u64 + 1;
    let mut sector = Ctl::good();
    sector.sector_size = 4096;
    for c in [
        read_only,
        no_indirect,
        zero_indirect,
        too_many,
        newer,
        big,
        sector,
    ] {
        cases.push(control_case(&c.bytes()));
    }
    let got = compare(&cases);
    assert_eq!(got[0], "control ok 15 0 262144 256");
    assert_eq!(got[1], "control ok 15 1 262144 256");
    assert_eq!(got[2], "control ok 1 0 262144 0");
    assert_eq!(got[3], "control err");
    assert_eq!(got[4], "control err");
    assert_eq!(got[5], "control ok 1 0 262144 0");
    assert_eq!(got[6], "control err");
    assert_eq!(got[7], "control err");
}

#[test]
fn responses_hand_written() {
    let cases = vec![
        response_case(&response_bytes(3, 1, 0, 0), 8, 0xff),
        response_case(&response_bytes(3, 4, -1, 0xaa), 8, 0xff),
        response_case(&response_bytes(7, 3, -2, 0), 8, 0x80),
        // Answered already (not in flight), beyond the ids, a bad status.
        response_case(&response_bytes(3, 1, 0, 0), 8, 0xf7),
        response_case(&response_bytes(8, 1, 0, 0), 8, 0xff),
        response_case(&response_bytes(1 << 32, 1, 0, 0), 64, u64::MAX),
        response_case(&response_bytes(3, 1, -3, 0), 8, 0xff),
        response_case(&response_bytes(3, 1, 1, 0), 8, 0xff),
    ];
    let got = compare(&cases);
    assert_eq!(got[0], "response ok 3 1 0");
    assert_eq!(got[1], "response ok 3 4 -1");
    assert_eq!(got[2], "response ok 7 3 -2");
    for g in &got[3..6] {
        assert_eq!(g, "response err id");
    }
    for g in &got[6..] {
        assert_eq!(g, "response err status");
    }
}

#[test]
fn generated_cases_agree() {
    let mut rng = Rng(0x5eed_b10c_0000_0001);
    let mut cases = Vec::new();
    for _ in 0..3000 {
        let b = if rng.chance(10) {
            let mut b = [0u8; CONTROL_LEN];
            b.iter_mut().for_each(|x| *x = rng.next() as u8);
            b
        } else {
            Ctl::random(&mut rng).bytes()
        };
        cases.push(control_case(&b));
    }
    for _ in 0..3000 {
        let nr = rng.below(65) as u32;
        let mask = if rng.chance(30) { u64::MAX } else { rng.next() };
        let id = if rng.chance(80) {
            rng.below(70)
        } else {
            rng.next()
        };
        let status = if rng.chance(80) {
            rng.pick(&[0, -1, -2])
        } else {
            rng.next() as i16
        };
        let b = response_bytes(id, rng.next() as u8, status, rng.pick(&[0, 0xff]));
        cases.push(response_case(&b, nr, mask));
    }
    let got = compare(&cases);
    // Each verdict was reached often enough to mean something.
    for want in [
        "control ok",
        "control err",
        "response ok",
        "response err id",
        "response err status",
    ] {
        let n = got.iter().filter(|g| g.starts_with(want)).count();
        assert!(n >= 100, "only {n} cases with {want:?}");
    }
}
