//! Test members: a member domain's side of a net share, driven by hand
//! from tests, the fuzz target and the benchmark, on any platform (the
//! simulation across processes, the local platform in one thread).

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use share_hal::frames::{FrameMeta, FrameReceiver, FrameSender, ParkedReceiver, ParkedSender};
use share_hal::lane::{Consumer, Producer};
use share_hal::platform::{DomId, Platform};
use share_hal::share::{Attached, ShareRef};
use share_hal::wire::net::{self, field, Control, ControlRepr, FrameAssembler, NetLayout};

pub struct TestMember<P: Platform> {
    pub p: P,
    pub att: Attached<P>,
    pub layout: NetLayout,
    pub mac: [u8; 6],
    tx: Option<ParkedSender>,
    rx: Option<ParkedReceiver>,
}

impl<P: Platform> TestMember<P> {
    /// Attaches, accepts `accept` of the offer, says READY and triggers.
    pub fn join(mut p: P, r: ShareRef, accept: u32) -> Self {
        let mut att = Attached::attach(&mut p, r).unwrap();
        let layout = NetLayout::new(att.numpages() as u32).unwrap();
        let mem = att.mem();
        let mut raw = [0u8; net::CONTROL_LEN];
        mem.read_into(0, &mut raw).unwrap();
        let ctl = ControlRepr::parse(&Control::new_checked(&raw[..]).unwrap()).unwrap();
        let accepted = ctl.features_offered & accept;
        let mtu = if accepted & net::features::JUMBO != 0 {
            ctl.mtu
        } else {
            net::MTU_DEFAULT
        };
        let rules = FrameAssembler::new(mtu, accepted).unwrap();
        let max = rules.mtu_frame();
        let mut tx = FrameSender::new(
            Producer::attach(layout.tx.window(mem).unwrap(), layout.tx.lane().unwrap()).unwrap(),
            max,
        )
        .unwrap();
        if accepted & net::features::GSO != 0 {
            tx = tx.with_gso().unwrap();
        }
        let tx = tx.park();
        let rx = FrameReceiver::net(
            Consumer::attach(layout.rx.window(mem).unwrap(), layout.rx.lane().unwrap()).unwrap(),
            rules,
        )
        .unwrap()
        .park();
        mem.store_u32(field::FEATURES_ACCEPTED.start, accepted, Ordering::Relaxed)
            .unwrap();
        mem.store_u32(
            field::MEMBER_STATE.start,
            net::MEMBER_READY,
            Ordering::Release,
        )
        .unwrap();
        att.trigger(&mut p).unwrap();
        TestMember {
            p,
            att,
            layout,
            mac: ctl.mac,
            tx: Some(tx),
            rx: Some(rx),
        }
    }

    pub fn link_up(&self) -> bool {
        self.att
            .mem()
            .load_u32(field::LINK_STATE.start, Ordering::Acquire)
            .unwrap()
            == net::LINK_UP
    }

    /// Sends frames; returns how many fit.
    pub fn send(&mut self, frames: &[Vec<u8>], meta: FrameMeta) -> usize {
        self.send_with(frames.len(), |k| (&frames[k][..], meta))
    }

    /// Sends `n` frames that `frame(k)` gives; returns how many fit.
    pub fn send_with<'f>(
        &mut self,
        n: usize,
        mut frame: impl FnMut(usize) -> (&'f [u8], FrameMeta),
    ) -> usize {
        let mem = self.att.mem();
        let mut tx = FrameSender::resume(
            self.layout.tx.window(mem).unwrap(),
            self.layout.tx.lane().unwrap(),
            self.tx.take().unwrap(),
        )
        .unwrap();
        let mut sent = 0;
        // A lane the member scribbled itself (fuzzing) just stops here.
        while sent < n {
            let (f, meta) = frame(sent);
            if tx.send(f, meta) != Ok(true) {
                break;
            }
            sent += 1;
        }
        let kick = tx.publish().unwrap_or(false);
        self.tx = Some(tx.park());
        if kick {
            let _ = self.att.trigger(&mut self.p);
        }
        sent
    }

    /// Every frame waiting in the rx lane.
    pub fn recv(&mut self) -> Vec<(Vec<u8>, FrameMeta)> {
        let mut out = Vec::new();
        self.recv_with(|f, m| out.push((f.to_vec(), m)));
        out
    }

    /// Hands every frame waiting in the rx lane to `f`; returns how many.
    pub fn recv_with(&mut self, mut f: impl FnMut(&[u8], FrameMeta)) -> usize {
        let mem = self.att.mem();
        let mut rx = FrameReceiver::resume(
            self.layout.rx.window(mem).unwrap(),
            self.layout.rx.lane().unwrap(),
            self.rx.take().unwrap(),
        )
        .unwrap();
        let mut n = 0;
        let mut kick = false;
        if rx.poll().is_ok() {
            // Bounded by the batch; bad frames (a member that scribbled
            // its own lane) are skipped like any receiver does.
            for _ in 0..self.layout.rx.slot_count {
                match rx.next() {
                    Ok(Some(frame)) => {
                        f(frame.data, frame.meta);
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(_) => continue,
                }
            }
            // The switch may be waiting for room (a held frame): trigger
            // it when its event index asks, as a member must.
            kick = rx.release().unwrap_or(false);
            let _ = rx.prepare_wait();
        }
        self.rx = Some(rx.park());
        if kick {
            let _ = self.att.trigger(&mut self.p);
        }
        n
    }

    pub fn domid(&self) -> DomId {
        self.p.domid()
    }
}

/// An Ethernet frame from `src` to `dst` of `len` bytes (IPv4 ethertype),
/// the payload stamped with `tag`.
pub fn eth(dst: [u8; 6], src: [u8; 6], len: usize, tag: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    while f.len() < len {
        f.push(tag);
    }
    f
}

/// An IPv4/UDP frame of `len` bytes (at least 42) from `src_ip` at `src`
/// to `dst_ip` at `dst`, the payload stamped with `tag`: what a port bound
/// to `src_ip` may send.
pub fn udp4(
    dst: [u8; 6],
    src: [u8; 6],
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    len: usize,
    tag: u8,
) -> Vec<u8> {
    let len = len.max(42);
    let ip_len = (len - 14) as u16;
    let udp_len = ip_len - 20;
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src_ip);
    f.extend_from_slice(&dst_ip);
    f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    while f.len() < len {
        f.push(tag);
    }
    f
}
