//! A PVH domain reading xenstored's replies from its xenstore ring (the
//! one bootstrap client, platforms/share-pvh/src/xenstore.rs). Input: a script
//! of peer moves (bytes appended to the response ring, arbitrary index
//! writes) interleaved with the domain's sends and receives.
#![no_main]

use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use share_pvh::abi::{
    XENSTORE_PAYLOAD_MAX, XENSTORE_REQ_CONS, XENSTORE_RING_SIZE, XENSTORE_RSP, XENSTORE_RSP_PROD,
    XSD_SOCKMSG_SIZE, XS_READ,
};
use share_pvh::xenstore::{answer, Ring};
use share_hal::SharedMem;

#[repr(align(8))]
struct Page([u8; 4096]);

fuzz_target!(|data: &[u8]| {
    let mut page = Page([0; 4096]);
    let m = SharedMem::from_slice(&mut page.0);
    let mut ring = Ring::new(m).unwrap();
    let mut input = data.iter().copied();
    let mut word = |input: &mut dyn Iterator<Item = u8>| {
        u32::from_le_bytes([(); 4].map(|_| input.next().unwrap_or(0)))
    };
    while let Some(op) = input.next() {
        match op % 5 {
            0 => {
                // The peer appends up to 64 bytes of reply stream.
                let n = input.next().unwrap_or(0) % 64;
                let mut prod = m.load_u32(XENSTORE_RSP_PROD, Ordering::Relaxed).unwrap();
                for _ in 0..n {
                    let b = input.next().unwrap_or(0);
                    m.write_u8(XENSTORE_RSP + prod as usize % XENSTORE_RING_SIZE, b)
                        .unwrap();
                    prod = prod.wrapping_add(1);
                }
                m.store_u32(XENSTORE_RSP_PROD, prod, Ordering::Release).unwrap();
            }
            1 => {
                let v = word(&mut input);
                m.store_u32(XENSTORE_RSP_PROD, v, Ordering::Release).unwrap();
            }
            2 => {
                let v = word(&mut input);
                m.store_u32(XENSTORE_REQ_CONS, v, Ordering::Release).unwrap();
            }
            3 => match ring.recv() {
                Ok(Some(reply)) => {
                    assert!(reply.payload.len() <= XENSTORE_PAYLOAD_MAX);
                    assert_eq!(reply.payload.len(), reply.header.len as usize);
                    let _ = answer(reply, XS_READ, 1);
                }
                Ok(None) => {}
                // The stream is broken for good: a real client gives up.
                Err(_) => return,
            },
            _ => {
                let n = usize::from(input.next().unwrap_or(0)) * 8;
                let sent = match ring.send(&vec![0x5a; n.max(XSD_SOCKMSG_SIZE)]) {
                    Ok(sent) => sent,
                    Err(_) => return,
                };
                assert!(sent <= XENSTORE_RING_SIZE);
            }
        }
    }
});
