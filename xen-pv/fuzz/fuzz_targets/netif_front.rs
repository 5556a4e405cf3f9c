//! The netif front end (`xen_pv::netif::NetFront`) against a hostile
//! backend that may write any word of either ring page between our sends,
//! posts, publishes, takes and waits. Input: a script, one operation per
//! byte plus its operands.
//!
//! Sends are one slot (`send`) or several with GSO info (`send_frame`:
//! any slot count, ids, offsets, lengths, flags, GSO type and size).
//!
//! Checked besides "no panic": a multi-slot frame taken has 1 to
//! `TX_MAX_SLOTS` slots within their pages, 65535 bytes at most, ids not
//! in flight; every tx response taken names an id that was in flight (and
//! frees it; NULL answers, for extra-info slots, name none), every rx one a posted buffer, with a
//! frame inside its page; a take never yields more than the ring's size;
//! once the front end said "protocol error" the script stops (the device
//! is unusable, as the uplink will treat it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use share_hal::SharedMem;
use xen_pv::netif::{NetFront, RxDone, TxFrame, TxGso, TxSlot, MAX_IDS, TX_MAX_SLOTS};

#[path = "../script.rs"]
mod script;
use script::{Page, Script};

fuzz_target!(|data: &[u8]| {
    let mut tx = Box::new(Page([0; 4096]));
    let mut rx = Box::new(Page([0; 4096]));
    let (txm, rxm) = (
        SharedMem::from_slice(&mut tx.0),
        SharedMem::from_slice(&mut rx.0),
    );
    let mut nf = NetFront::init(txm, rxm).unwrap();
    let mut s = Script::new(data);
    // What we believe is in flight, kept apart from the front end's own.
    let mut in_flight = [false; MAX_IDS as usize];
    let mut posted = [false; MAX_IDS as usize];
    while let Some(op) = s.byte() {
        let r = match op % 9 {
            0 => {
                let f = TxFrame {
                    id: s.half() % (MAX_IDS + 2),
                    gref: s.word(),
                    offset: s.half() % 4200,
                    len: s.half() % 4200,
                    flags: u16::from(s.byte().unwrap_or(0) % 16),
                };
                let r = nf.send(&f);
                if let Ok(true) = r {
                    assert!(!in_flight[usize::from(f.id)]);
                    in_flight[usize::from(f.id)] = true;
                }
                r.map(drop)
            }
            1 => {
                let id = s.half() % (MAX_IDS + 2);
                let r = nf.post(id, s.word());
                if let Ok(true) = r {
                    assert!(!posted[usize::from(id)]);
                    posted[usize::from(id)] = true;
                }
                r.map(drop)
            }
            2 => nf.publish().map(drop),
            3 => {
                let mut ok = true;
                let r = nf.take_tx(|id, _| {
                    ok &= std::mem::replace(&mut in_flight[usize::from(id)], false);
                });
                assert!(ok, "a tx response for an id not in flight was let through");
                if let Ok(n) = r {
                    assert!(n <= 256);
                }
                r.map(drop)
            }
            4 => {
                let mut ok = true;
                let r = nf.take_rx(|d| {
                    ok &= std::mem::replace(&mut posted[usize::from(d.id())], false);
                    if let RxDone::Frame { offset, len, .. } = d {
                        ok &= u32::from(offset) + u32::from(len) <= 4096 && len > 0;
                    }
                });
                assert!(
                    ok,
                    "an rx response for a buffer not posted, or out of its page"
                );
                r.map(drop)
            }
            5 => nf.prepare_wait().map(drop),
            // The backend writes a word anywhere in either page.
            6 | 7 => {
                let page = if op % 9 == 6 { &txm } else { &rxm };
                let at = usize::from(s.half() % 1024) * 4;
                let v = s.word();
                page.store_u32(at, v, std::sync::atomic::Ordering::Release)
                    .unwrap();
                Ok(())
            }
            // A frame over several slots, with or without GSO info.
            8 => {
                let n = usize::from(s.byte().unwrap_or(0) % 20);
                let slots: Vec<TxSlot> = (0..n)
                    .map(|_| TxSlot {
                        id: s.half() % (MAX_IDS + 2),
                        gref: s.word(),
                        offset: s.half() % 4200,
                        len: s.half() % 4200,
                    })
                    .collect();
                let flags = u16::from(s.byte().unwrap_or(0) % 16);
                let g = s.byte().unwrap_or(0);
                let gso = (g & 1 != 0).then(|| TxGso {
                    kind: g >> 5,
                    size: s.half(),
                });
                let r = nf.send_frame(&slots, flags, gso);
                if let Ok(true) = r {
                    assert!((1..=TX_MAX_SLOTS).contains(&slots.len()));
                    let total: u32 = slots.iter().map(|x| u32::from(x.len)).sum();
                    assert!(total <= 65535);
                    for x in &slots {
                        assert!(x.len > 0 && u32::from(x.offset) + u32::from(x.len) <= 4096);
                        assert!(!in_flight[usize::from(x.id)], "an id in flight twice");
                        in_flight[usize::from(x.id)] = true;
                    }
                }
                r.map(drop)
            }
            _ => unreachable!(),
        };
        if let Err(share_hal::Error::Protocol { .. }) = r {
            return;
        }
    }
});
