//! The front end against a backend written here byte by byte (the layouts
//! of `io/netif.h`), honest first, then lying.
use super::*;
use crate::ring::back::{respond, take_requests};
use alloc::vec::Vec;

#[repr(align(4096))]
struct Page([u8; 4096]);

/// A backend's private indexes on one ring.
#[derive(Default)]
struct BackEnd {
    req_cons: u32,
    rsp_prod_pvt: u32,
}

struct Rig {
    tx: Box<Page>,
    rx: Box<Page>,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            tx: Box::new(Page([0; 4096])),
            rx: Box::new(Page([0; 4096])),
        }
    }
}

fn tx_rsp(id: u16, status: i16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&id.to_le_bytes());
    b[2..].copy_from_slice(&status.to_le_bytes());
    b
}

fn rx_rsp(id: u16, offset: u16, flags: u16, status: i16) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..2].copy_from_slice(&id.to_le_bytes());
    b[2..4].copy_from_slice(&offset.to_le_bytes());
    b[4..6].copy_from_slice(&flags.to_le_bytes());
    b[6..].copy_from_slice(&status.to_le_bytes());
    b
}

fn frame(id: u16) -> TxFrame {
    TxFrame {
        id,
        gref: 100 + u32::from(id),
        offset: 64,
        len: 1514,
        flags: NETTXF_CSUM_BLANK,
    }
}

#[test]
fn frames_go_out_and_come_in_through_an_honest_backend() {
    let mut rig = Rig::new();
    let (txm, rxm) = (
        SharedMem::from_slice(&mut rig.tx.0),
        SharedMem::from_slice(&mut rig.rx.0),
    );
    let (txp, rxp) = (txm, rxm);
    let mut nf = NetFront::init(txm, rxm).unwrap();
    for id in 0..4 {
        assert!(nf.send(&frame(id)).unwrap());
        assert!(nf.post(id, 200 + u32::from(id)).unwrap());
    }
    assert!(nf.publish().unwrap(), "a fresh backend asks to be told");
    // The backend reads what we asked, as dom0's netback does.
    let (mut bt, mut br) = (BackEnd::default(), BackEnd::default());
    let mut reqs = Vec::new();
    take_requests::<12>(&txp, &mut bt.req_cons, |r| reqs.push(r)).unwrap();
    assert_eq!(reqs.len(), 4);
    let r = reqs[2];
    assert_eq!(u32::from_le_bytes([r[0], r[1], r[2], r[3]]), 102);
    assert_eq!(u16::from_le_bytes([r[4], r[5]]), 64);
    assert_eq!(u16::from_le_bytes([r[6], r[7]]), NETTXF_CSUM_BLANK);
    assert_eq!(u16::from_le_bytes([r[8], r[9]]), 2);
    assert_eq!(u16::from_le_bytes([r[10], r[11]]), 1514);
    let mut posted = Vec::new();
    take_requests::<8>(&rxp, &mut br.req_cons, |r| posted.push(r)).unwrap();
    assert_eq!(
        u32::from_le_bytes([posted[3][4], posted[3][5], posted[3][6], posted[3][7]]),
        203
    );
    for id in [1u16, 0, 3, 2] {
        respond::<12>(&txp, &mut bt.rsp_prod_pvt, &tx_rsp(id, NETIF_RSP_OKAY)).unwrap();
    }
    respond::<8>(
        &rxp,
        &mut br.rsp_prod_pvt,
        &rx_rsp(2, 0, NETRXF_DATA_VALIDATED, 60),
    )
    .unwrap();
    respond::<8>(
        &rxp,
        &mut br.rsp_prod_pvt,
        &rx_rsp(0, 0, 0, NETIF_RSP_ERROR),
    )
    .unwrap();
    let mut sent = Vec::new();
    assert_eq!(nf.take_tx(|id, st| sent.push((id, st))).unwrap(), 4);
    assert_eq!(sent, [(1, 0), (0, 0), (3, 0), (2, 0)]);
    assert!(!nf.tx_busy(2));
    let mut got = Vec::new();
    nf.take_rx(|d| got.push(d)).unwrap();
    assert_eq!(
        got,
        [
            RxDone::Frame {
                id: 2,
                offset: 0,
                len: 60,
                flags: NETRXF_DATA_VALIDATED
            },
            RxDone::Empty {
                id: 0,
                status: NETIF_RSP_ERROR
            }
        ]
    );
    assert!(nf.rx_posted(1) && !nf.rx_posted(2));
    // Parked and resumed, nothing is lost.
    let st = nf.park();
    let nf = NetFront::resume(txm, rxm, st).unwrap();
    assert!(nf.rx_posted(3));
}

#[test]
fn what_we_send_is_checked_before_the_ring_sees_it() {
    let mut rig = Rig::new();
    let mut nf = NetFront::init(
        SharedMem::from_slice(&mut rig.tx.0),
        SharedMem::from_slice(&mut rig.rx.0),
    )
    .unwrap();
    let mut f = frame(1);
    assert!(nf.send(&f).unwrap());
    assert!(nf.send(&f).is_err(), "an id in flight");
    f.id = MAX_IDS;
    assert!(nf.send(&f).is_err());
    f = frame(2);
    f.offset = 4000;
    assert!(nf.send(&f).is_err(), "past its page");
    f = frame(2);
    f.flags = NETTXF_MORE_DATA;
    assert!(nf.send(&f).is_err());
    f = frame(2);
    f.len = 0;
    assert!(nf.send(&f).is_err());
    assert!(nf.post(5, 1).unwrap());
    assert!(nf.post(5, 1).is_err());
}

/// A backend that lies once, after one honest exchange; the front end
/// must refuse the lie.
fn lie(tx: Option<[u8; 4]>, rx: Option<[u8; 8]>, extra_responses: u32) -> Result<()> {
    let mut rig = Rig::new();
    let (txm, rxm) = (
        SharedMem::from_slice(&mut rig.tx.0),
        SharedMem::from_slice(&mut rig.rx.0),
    );
    let (txp, rxp) = (txm, rxm);
    let mut nf = NetFront::init(txm, rxm).unwrap();
    nf.send(&frame(7)).unwrap();
    nf.post(9, 1).unwrap();
    nf.publish().unwrap();
    let (mut bt, mut br) = (BackEnd::default(), BackEnd::default());
    if let Some(t) = tx {
        respond::<12>(&txp, &mut bt.rsp_prod_pvt, &t)?;
    }
    if let Some(r) = rx {
        respond::<8>(&rxp, &mut br.rsp_prod_pvt, &r)?;
    }
    for _ in 0..extra_responses {
        respond::<12>(&txp, &mut bt.rsp_prod_pvt, &tx_rsp(7, 0))?;
    }
    nf.take_tx(|_, _| {})?;
    nf.take_rx(|_| {})?;
    Ok(())
}

#[test]
fn every_lie_of_the_backend_is_a_protocol_error() {
    assert!(lie(Some(tx_rsp(7, 0)), Some(rx_rsp(9, 10, 0, 60)), 0).is_ok());
    let protocol = |r: Result<()>| matches!(r, Err(Error::Protocol { .. }));
    // Tx: an id never sent, a status of an extra slot or none at all, more
    // responses than requests.
    assert!(protocol(lie(Some(tx_rsp(8, 0)), None, 0)));
    assert!(protocol(lie(Some(tx_rsp(7, NETIF_RSP_NULL)), None, 0)));
    assert!(protocol(lie(Some(tx_rsp(7, -7)), None, 0)));
    assert!(protocol(lie(Some(tx_rsp(7, 0)), None, 1)));
    // Rx: a buffer never posted, a frame out of its page, flags we never
    // allowed, a status below the defined errors.
    assert!(protocol(lie(None, Some(rx_rsp(8, 0, 0, 60)), 0)));
    assert!(protocol(lie(None, Some(rx_rsp(9, 4000, 0, 200)), 0)));
    assert!(protocol(lie(
        None,
        Some(rx_rsp(9, 0, NETRXF_MORE_DATA, 60)),
        0
    )));
    assert!(protocol(lie(
        None,
        Some(rx_rsp(9, 0, NETRXF_EXTRA_INFO, 60)),
        0
    )));
    assert!(protocol(lie(
        None,
        Some(rx_rsp(9, 0, NETRXF_GSO_PREFIX, 60)),
        0
    )));
    assert!(protocol(lie(None, Some(rx_rsp(9, 0, 0, -9)), 0)));
    // A frame that ends exactly at its page's end is fine.
    assert!(lie(None, Some(rx_rsp(9, 4000, 0, 96)), 0).is_ok());
}

#[test]
fn a_full_ring_says_so_and_takes_again_after_responses() {
    let mut rig = Rig::new();
    let (txm, rxm) = (
        SharedMem::from_slice(&mut rig.tx.0),
        SharedMem::from_slice(&mut rig.rx.0),
    );
    let txp = txm;
    let mut nf = NetFront::init(txm, rxm).unwrap();
    for id in 0..MAX_IDS {
        assert!(nf.send(&frame(id)).unwrap());
    }
    nf.publish().unwrap();
    // All 256 ids are in flight: none is free to try, the ring is full.
    let mut bt = BackEnd::default();
    take_requests::<12>(&txp, &mut bt.req_cons, |_| {}).unwrap();
    respond::<12>(&txp, &mut bt.rsp_prod_pvt, &tx_rsp(5, 0)).unwrap();
    assert_eq!(nf.take_tx(|_, _| {}).unwrap(), 1);
    assert!(nf.send(&frame(5)).unwrap());
}

fn slot(id: u16, len: u16) -> TxSlot {
    TxSlot {
        id,
        gref: 200 + u32::from(id),
        offset: 0,
        len,
    }
}

#[test]
fn a_frame_over_several_slots_with_gso_info() {
    let mut rig = Rig::new();
    let (txm, rxm) = (
        SharedMem::from_slice(&mut rig.tx.0),
        SharedMem::from_slice(&mut rig.rx.0),
    );
    let txp = txm;
    let mut nf = NetFront::init(txm, rxm).unwrap();
    let gso = TxGso {
        kind: XEN_NETIF_GSO_TYPE_TCPV4,
        size: 1448,
    };
    let slots = [slot(3, 4096), slot(4, 4096), slot(5, 100)];
    let both = NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
    assert!(nf.send_frame(&slots, both, Some(gso)).unwrap());
    // A plain one-slot frame after it.
    assert!(nf.send_frame(&[slot(6, 60)], 0, None).unwrap());
    nf.publish().unwrap();
    let mut bt = BackEnd::default();
    let mut reqs = Vec::new();
    take_requests::<12>(&txp, &mut bt.req_cons, |r| reqs.push(r)).unwrap();
    assert_eq!(reqs.len(), 5);
    let word = |r: &[u8; 12], at: usize| u16::from_le_bytes([r[at], r[at + 1]]);
    // First: the total size, more data and extra info.
    assert_eq!(word(&reqs[0], 10), 8292);
    assert_eq!(word(&reqs[0], 8), 3);
    assert_eq!(
        word(&reqs[0], 6),
        both | NETTXF_MORE_DATA | NETTXF_EXTRA_INFO
    );
    // The extra-info slot: type GSO, no more extras, size, type.
    assert_eq!(&reqs[1][..6], &[1, 0, 0xa8, 0x05, 1, 0]);
    assert_eq!(
        (word(&reqs[2], 10), word(&reqs[2], 6)),
        (4096, NETTXF_MORE_DATA)
    );
    assert_eq!((word(&reqs[3], 10), word(&reqs[3], 6)), (100, 0));
    assert_eq!(
        (word(&reqs[4], 10), word(&reqs[4], 6), word(&reqs[4], 8)),
        (60, 0, 6)
    );
    // Answers as Linux's netback makes them: the first slot's, a NULL for
    // the extra slot (its id stale), then each other slot's.
    for r in [
        tx_rsp(3, 0),
        tx_rsp(0x5a5a, NETIF_RSP_NULL),
        tx_rsp(4, 0),
        tx_rsp(5, 0),
        tx_rsp(6, 0),
    ] {
        respond::<12>(&txp, &mut bt.rsp_prod_pvt, &r).unwrap();
    }
    let mut done = Vec::new();
    assert_eq!(nf.take_tx(|id, st| done.push((id, st))).unwrap(), 5);
    assert_eq!(done, [(3, 0), (4, 0), (5, 0), (6, 0)]);
    assert!(!(3..=6).any(|id| nf.tx_busy(id)));
    // A second NULL: no extra slot is outstanding any more.
    assert!(nf.send_frame(&[slot(6, 60)], 0, None).unwrap());
    nf.publish().unwrap();
    respond::<12>(&txp, &mut bt.rsp_prod_pvt, &tx_rsp(6, NETIF_RSP_NULL)).unwrap();
    assert!(matches!(nf.take_tx(|_, _| {}), Err(Error::Protocol { .. })));
}

#[test]
fn what_a_multi_slot_frame_may_not_be() {
    let mut rig = Rig::new();
    let (txm, rxm) = (
        SharedMem::from_slice(&mut rig.tx.0),
        SharedMem::from_slice(&mut rig.rx.0),
    );
    let mut nf = NetFront::init(txm, rxm).unwrap();
    let refused = |r: Result<bool>| matches!(r, Err(Error::InvalidArgument { .. }));
    let gso = |kind, size| Some(TxGso { kind, size });
    let cb = NETTXF_CSUM_BLANK;
    assert!(refused(nf.send_frame(&[], 0, None)));
    let many: Vec<TxSlot> = (0..18).map(|i| slot(i, 100)).collect();
    assert!(refused(nf.send_frame(&many, 0, None)), "18 slots");
    assert!(
        refused(nf.send_frame(&[slot(1, 10), slot(1, 10)], 0, None)),
        "an id twice"
    );
    assert!(refused(nf.send_frame(&[slot(1, 0)], 0, None)), "empty");
    let mut off = slot(1, 100);
    off.offset = 4000;
    assert!(refused(nf.send_frame(&[off], 0, None)), "beyond its page");
    assert!(
        refused(nf.send_frame(&[slot(300, 10)], 0, None)),
        "id out of range"
    );
    let big: Vec<TxSlot> = (0..17).map(|i| slot(i, 4000)).collect();
    assert!(refused(nf.send_frame(&big, cb, None)), "over 65535 bytes");
    assert!(refused(nf.send_frame(
        &[slot(1, 100)],
        NETTXF_MORE_DATA,
        None
    )));
    assert!(
        refused(nf.send_frame(&[slot(1, 100)], cb, gso(3, 1000))),
        "UDP"
    );
    assert!(
        refused(nf.send_frame(&[slot(1, 100)], cb, gso(1, 0))),
        "size 0"
    );
    assert!(
        refused(nf.send_frame(&[slot(1, 100)], 0, gso(1, 1000))),
        "no csum_blank"
    );
    assert!(nf.send_frame(&[slot(1, 100)], 0, None).unwrap());
    assert!(
        refused(nf.send_frame(&[slot(1, 100)], 0, None)),
        "in flight"
    );
    // All or nothing: a ring with room for fewer slots takes none.
    let free = nf.tx.free();
    let mut id = 2;
    while nf.tx.free() > 2 {
        assert!(nf.send_frame(&[slot(id, 60)], 0, None).unwrap());
        id += 1;
    }
    let before = nf.tx.free();
    assert!(!nf
        .send_frame(&[slot(0, 60), slot(255, 60)], cb, gso(1, 1000))
        .unwrap());
    assert_eq!(nf.tx.free(), before);
    assert!(!nf.tx_busy(0) && !nf.tx_busy(255));
    assert!(free > before);
}
