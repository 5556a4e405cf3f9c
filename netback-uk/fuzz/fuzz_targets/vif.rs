//! netback-uk's uplink on Xen (`netback_uk::vif::Vif`, the netif frontend
//! of a `vif=` device) against a hostile dom0 netback that may write any
//! word of either ring page, and any response (any id, offset, flags,
//! status, NULL answers to extra-info slots), between the switch's sends
//! (of any length and offload fields: over several slots, with GSO
//! extra info, where the offers in the input's first byte allow),
//! receives and flushes. Input: a script, one operation per byte plus its
//! operands.
//!
//! Checked besides "no panic": a frame received is at most a page and was
//! copied only within the caller's buffer; once the device says it broke,
//! nothing more comes in or goes out; a flush or a round never takes
//! more than the rings hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netback_uk::switch::Uplinks;
use netback_uk::vif::{Bell, Offloads, Vif, VifInfo, VifPages, VifUplinks};
use share_hal::frames::FrameMeta;
use share_hal::wire::net::flags;
use share_hal::Result;
use share_local::LocalHost;
use xen_pv::ring::back::respond;

struct NoBell;

impl Bell for NoBell {
    fn notify(&mut self) -> Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let host = LocalHost::new();
    let mut front = host.domain(5);
    let pages = VifPages::new(&mut front, 0).unwrap();
    let info = VifInfo {
        dev: "device/vif/0".into(),
        index: 0,
        backend: 0,
        mac: None,
        // What the backend offered: the input's first byte.
        offloads: {
            let o = data.first().copied().unwrap_or(0);
            Offloads {
                tx_ipv6_csum: o & 1 != 0,
                tx_sg: o & 2 != 0,
                tx_gso_tcpv4: o & 6 == 6,
                tx_gso_tcpv6: o & 10 == 10,
            }
        },
    };
    let vif = Vif::start(pages, info, NoBell).unwrap();
    let mut up = VifUplinks { vifs: vec![vif] };
    let mut ops = data.iter().copied();
    let mut next = || ops.next();
    let (mut tx_prod, mut rx_prod) = (0u32, 0u32);
    let mut buf = [0u8; 1518];
    let mut broken = false;
    let mut steps = 0;
    while let Some(op) = next() {
        steps += 1;
        if steps > 4096 {
            break;
        }
        match op % 6 {
            0 => {
                let kind = next().unwrap_or(0);
                // Up to 6 KiB, or (with kind bit 6) up to 64 KiB: over
                // several slots where the backend offered sg.
                let len = if kind & 0x40 != 0 {
                    usize::from(u16::from_le_bytes([
                        next().unwrap_or(0),
                        next().unwrap_or(0),
                    ]))
                } else {
                    usize::from(next().unwrap_or(0)) * 24
                };
                let mut frame = vec![0xa5u8; len];
                if kind & 1 != 0 && len >= 54 {
                    // TCP over IPv4, so a partial checksum may pass on.
                    frame[12..14].copy_from_slice(&[0x08, 0x00]);
                    frame[14] = 0x45;
                    frame[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
                    frame[20..22].copy_from_slice(&[0, 0]);
                    frame[23] = 6;
                }
                // Any offload fields the switch could pass (it checks
                // them first; the vif must not trust that).
                let meta = FrameMeta {
                    flags: u16::from(kind >> 1) & (flags::CSUM_BLANK | flags::DATA_VALIDATED),
                    csum_start: u16::from(next().unwrap_or(0)),
                    csum_offset: u16::from(next().unwrap_or(0) % 32),
                    // GSO type 0-3 (bits 3-4), any size, ECN sometimes.
                    gso_type: (kind >> 3) & 3,
                    gso_size: if kind & 0x80 != 0 { 1448 } else { 0 },
                    gso_flags: (kind >> 5) & 1,
                };
                let sent = up.send(0, &frame, meta);
                assert!(!(sent && broken), "a broken device sent");
                let max = if up.vifs[0].info().offloads.tx_sg {
                    65535
                } else {
                    4096
                };
                assert!(!sent || (1..=max).contains(&len));
            }
            1 => {
                buf.fill(0);
                if let Some((n, meta)) = up.recv(0, &mut buf) {
                    assert!(!broken, "a broken device received");
                    assert!(n <= 4096, "a frame of {n} bytes from one page");
                    // A partial checksum it says is there is in the frame.
                    if meta.flags & flags::CSUM_BLANK != 0 {
                        let (s, o) = (usize::from(meta.csum_start), usize::from(meta.csum_offset));
                        assert!(
                            s + o + 2 <= n.min(buf.len()),
                            "a checksum outside the frame"
                        );
                    }
                }
            }
            2 => {
                up.flush();
            }
            3 => {
                // Any word of either ring page.
                let (Some(a), Some(b), Some(w)) = (next(), next(), next()) else {
                    break;
                };
                let off = (usize::from(u16::from_le_bytes([a, b])) * 4) % 8192;
                let v = u32::from(w).wrapping_mul(0x0101_0101);
                let (txr, rxr) = up.vifs[0].rings().unwrap();
                let page = if off < 4096 { txr } else { rxr };
                let _ = page.write_u32(off % 4096, v);
            }
            4 => {
                // An rx response: any id, offset, flags and status.
                let r: Vec<u8> = (0..8).map(|_| next().unwrap_or(0)).collect();
                let (_, rxr) = up.vifs[0].rings().unwrap();
                let _ = respond::<8>(&rxr, &mut rx_prod, &r);
            }
            _ => {
                // A tx response: any id and status.
                let r: Vec<u8> = (0..4).map(|_| next().unwrap_or(0)).collect();
                let (txr, _) = up.vifs[0].rings().unwrap();
                let _ = respond::<12>(&txr, &mut tx_prod, &r);
            }
        }
        broken |= up.vifs[0].broken().is_some();
    }
});
