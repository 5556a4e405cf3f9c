//! One network port of this domain: a network share it joined as a member,
//! plugged into a TAP device.
//!
//! Everything in the share is written by the switch and hostile: the
//! control fields are copied once and parsed, the lanes validate every
//! index and slot (`share_hal::lane`, `share_hal::frames`), and a broken
//! lane is an error of this port only: the caller closes it with a log
//! line and the program goes on.

use std::sync::atomic::Ordering;

use share_hal::frames::{FrameMeta, FrameReceiver, FrameSender, ParkedReceiver, ParkedSender};
use share_hal::lane::{Consumer, Producer};
use share_hal::platform::{DomId, Platform};
use share_hal::share::Attached;
use share_hal::wire::net::{
    self, features, field, Control, ControlRepr, FrameAssembler, NetLayout, CONTROL_LEN, FRAME_MIN,
    LINK_UP, MEMBER_CLOSED, MEMBER_READY, MTU_STANDARD_MAX,
};
use share_hal::wire::vdevice::status;
use share_hal::{Error, SharedMem};

use crate::dispatch::{status_of, NetJoin};
use crate::tap::Tap;
use crate::vnet::{self, VnetHeader, VNET_HDR_LEN};

/// Features this member can honour with a TAP device.
pub const SUPPORTED: u32 =
    features::CSUM_BLANK | features::DATA_VALIDATED | features::JUMBO | features::GSO;

/// Frames moved per direction in one service round before the event loop
/// looks at the other ports again (fairness between ports).
const BUDGET: usize = 256;

/// A refusal of a join: the vdevice status and what to log.
#[derive(Debug)]
pub struct Refusal {
    pub status: i32,
    pub why: String,
}

fn refuse(status: i32, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

/// Per-port counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub tx_frames: u64,
    pub rx_frames: u64,
    /// Frames from the kernel not sent (runt, too long, GSO, bad checksum
    /// range).
    pub tx_dropped: u64,
    /// Frames the switch sent that broke the receiver rules.
    pub rx_bad: u64,
    /// Frames the TAP device refused.
    pub rx_dropped: u64,
    pub triggers: u64,
}

/// What a service round left to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Poll the TAP device for frames (false while a frame waits for room
    /// in the tx lane: the switch's trigger resumes us).
    pub tap_readable: bool,
    /// Work is left over (a budget ran out, or slots arrived during the
    /// final check): service again without sleeping.
    pub busy: bool,
}

/// The lanes' private state between service rounds; each round resumes
/// them over the share's mapping (so nothing outlives the `Attached`).
struct Lanes {
    layout: NetLayout,
    tx: Option<ParkedSender>,
    rx: Option<ParkedReceiver>,
}

fn lost() -> Error {
    Error::InvalidArgument {
        what: "lane state lost after an earlier failure",
    }
}

/// A joined network share and its TAP device.
pub struct NetPort<P: Platform> {
    lanes: Option<Lanes>,
    tap: Tap,
    share: Option<Attached<P>>,
    peer: DomId,
    accepted: u32,
    mtu: u16,
    mac: [u8; 6],
    max_frame: usize,
    link: Option<bool>,
    carrier_ok: bool,
    /// A frame read from the TAP device (in `tx_buf`) that found the tx
    /// lane full: (its length after the header, its flags).
    pending: Option<(usize, FrameMeta)>,
    /// The TAP device reads into `tx_buf[tx_head..]`: the offload header,
    /// then the frame, which starts 16-byte aligned (see [`tx_head`]).
    tx_buf: Vec<u8>,
    tx_head: usize,
    pub counters: Counters,
}

/// Where in `buf` a TAP read should start so that the frame after the
/// `VNET_HDR_LEN`-byte offload header is 16-byte aligned, as the data of
/// every lane slot is: `SharedMem::write_from` then copies in 16-byte
/// words. With the frame at `buf + 10` it copied byte by byte (src and
/// dst aligned differently), 40% of this program's time in a profile of
/// an iperf3 run (docs/performance.md, "Network").
fn tx_head(buf: &[u8]) -> usize {
    let frame = buf.as_ptr() as usize + VNET_HDR_LEN;
    (16 - frame % 16) % 16
}

/// The control fields, copied out once.
fn read_control(mem: SharedMem<'_>) -> Result<ControlRepr, Refusal> {
    let mut raw = [0u8; CONTROL_LEN];
    mem.read_into(0, &mut raw).map_err(|e| {
        refuse(
            status::EINVAL,
            format!("share too small for its control fields: {e}"),
        )
    })?;
    ControlRepr::parse(&Control::new_unchecked(&raw[..]))
        .map_err(|e| refuse(status::EINVAL, format!("the switch's control fields: {e}")))
}

impl<P: Platform> NetPort<P> {
    /// Joins the share `join` names: attaches, copies and checks the
    /// switch's control fields, negotiates (`accept` limits what is
    /// accepted), creates the TAP device `ifname`, then tells the switch it
    /// is ready. On failure nothing is left behind.
    pub fn join(p: &mut P, join: &NetJoin, ifname: &str, accept: u32) -> Result<Self, Refusal> {
        let share = Attached::attach(p, join.share_ref).map_err(|e| {
            refuse(
                status_of(&e),
                format!(
                    "attaching to share {} of domain {}: {e}",
                    join.share_ref.descriptor, join.share_ref.owner
                ),
            )
        })?;
        match Self::plug(p, share, join, ifname, accept) {
            Ok(port) => Ok(port),
            Err((share, refusal)) => {
                if let Err(e) = share.detach(p) {
                    eprintln!("share-member: leaving a share after a failed join: {e}");
                }
                Err(refusal)
            }
        }
    }

    #[allow(clippy::result_large_err)]
    fn plug(
        p: &mut P,
        share: Attached<P>,
        join: &NetJoin,
        ifname: &str,
        accept: u32,
    ) -> Result<Self, (Attached<P>, Refusal)> {
        macro_rules! tryr {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(r) => return Err((share, r)),
                }
            };
        }
        let numpages = share.numpages() as u32;
        if join.numpages != 0 && join.numpages != numpages {
            return Err((
                share,
                refuse(
                    status::EINVAL,
                    format!(
                        "the share has {numpages} pages, the entry expects {}",
                        join.numpages
                    ),
                ),
            ));
        }
        let layout = tryr!(NetLayout::new(numpages)
            .map_err(|e| refuse(status::EINVAL, format!("network share layout: {e}"))));
        let control = tryr!(read_control(share.mem()));
        if let Some(mac) = join.mac {
            if mac != control.mac {
                eprintln!(
                    "share-member: the entry names MAC {}, the switch's control fields {}; using the switch's",
                    fmt_mac(mac),
                    fmt_mac(control.mac)
                );
            }
        }
        let accepted = control.features_offered & accept & SUPPORTED;
        // The switch offers its jumbo MTU; a member without JUMBO uses the
        // standard one (docs/protocol.md, "Link up").
        let mtu = if accepted & features::JUMBO != 0 {
            control.mtu
        } else {
            control.mtu.min(MTU_STANDARD_MAX)
        };
        let lanes = tryr!(Self::lanes(&share, &layout, mtu, accepted)
            .map_err(|e| refuse(status::EINVAL, format!("network share lanes: {e}"))));
        let tap = tryr!(Self::open_tap(ifname, &control, mtu, accepted)
            .map_err(|e| refuse(status::EIO, format!("TAP device: {e}"))));
        let mut port = NetPort {
            lanes: Some(lanes),
            tap,
            share: Some(share),
            peer: join.share_ref.owner,
            accepted,
            mtu,
            mac: control.mac,
            max_frame: usize::from(mtu) + net::FRAME_OVERHEAD,
            link: None,
            carrier_ok: true,
            pending: None,
            tx_buf: vec![0u8; 15 + VNET_HDR_LEN + net::GSO_MAX_FRAME],
            tx_head: 0,
            counters: Counters::default(),
        };
        // The buffer never moves or grows: its alignment holds from here.
        port.tx_head = tx_head(&port.tx_buf);
        if let Err(e) = port.announce(p) {
            let share = port.take_share();
            return Err((
                share,
                refuse(status::EIO, format!("telling the switch we are ready: {e}")),
            ));
        }
        Ok(port)
    }

    fn lanes(
        share: &Attached<P>,
        layout: &NetLayout,
        mtu: u16,
        accepted: u32,
    ) -> Result<Lanes, Error> {
        let mem = share.mem();
        let tx = Producer::attach(layout.tx.window(mem)?, layout.tx.lane()?)?;
        let mut tx = FrameSender::new(tx, usize::from(mtu) + net::FRAME_OVERHEAD)?;
        if accepted & features::GSO != 0 {
            tx = tx.with_gso()?;
        }
        let rx = Consumer::attach(layout.rx.window(mem)?, layout.rx.lane()?)?;
        let rx = FrameReceiver::net(rx, FrameAssembler::new(mtu, accepted)?)?;
        Ok(Lanes {
            layout: *layout,
            tx: Some(tx.park()),
            rx: Some(rx.park()),
        })
    }

    /// The share's control fields.
    fn control(&self) -> Result<SharedMem<'_>, Error> {
        match &self.share {
            Some(s) => s.mem().slice(0, CONTROL_LEN),
            None => Err(lost()),
        }
    }

    fn open_tap(
        ifname: &str,
        control: &ControlRepr,
        mtu: u16,
        accepted: u32,
    ) -> std::io::Result<Tap> {
        let tap = Tap::create(ifname)?;
        tap.set_mac(control.mac)?;
        tap.set_mtu(mtu)?;
        let offload = vnet::tun_offload(accepted);
        // Kernels before 6.2 do not know USO: TSO alone then.
        tap.set_offload(offload)
            .or_else(|_| tap.set_offload(offload & !vnet::tun_f::USO))?;
        tap.set_up()?;
        Ok(tap)
    }

    /// `features_accepted`, then `member_state = READY` (release, so the
    /// switch sees the features first), then a trigger.
    fn announce(&mut self, p: &mut P) -> Result<(), Error> {
        let control = self.control()?;
        control.write_u32(field::FEATURES_ACCEPTED.start, self.accepted)?;
        control.store_u32(field::MEMBER_STATE.start, MEMBER_READY, Ordering::Release)?;
        self.trigger(p)
    }

    fn trigger(&mut self, p: &mut P) -> Result<(), Error> {
        self.counters.triggers += 1;
        match &mut self.share {
            Some(s) => s.trigger(p),
            None => Err(Error::NotAMember { domid: p.domid() }),
        }
    }

    fn take_share(&mut self) -> Attached<P> {
        self.lanes = None;
        self.share
            .take()
            .expect("a NetPort holds its share until it is closed")
    }

    pub fn ifname(&self) -> &str {
        self.tap.name()
    }

    pub fn tap(&self) -> &Tap {
        &self.tap
    }

    pub fn peer(&self) -> DomId {
        self.peer
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    pub fn accepted(&self) -> u32 {
        self.accepted
    }

    /// Our port of the share (the switch's triggers arrive there).
    pub fn event_port(&self) -> Option<share_hal::Port> {
        self.share.as_ref().and_then(|s| s.port())
    }

    /// Leaves: tells the switch we are closed, removes the TAP device and
    /// detaches from the share (unmaps, closes our port).
    pub fn close(mut self, p: &mut P) -> Result<(), Error> {
        if let Ok(control) = self.control() {
            let _ = control.store_u32(field::MEMBER_STATE.start, MEMBER_CLOSED, Ordering::Release);
        }
        let _ = self.trigger(p);
        let share = self.take_share();
        drop(self);
        share.detach(p)
    }

    /// Moves frames both ways until both directions are idle or their
    /// budget is used, arms the lanes' triggers before the caller sleeps,
    /// and triggers the switch at most once. An error means the share is
    /// broken: close the port.
    pub fn service(&mut self, p: &mut P, tap_readable: bool) -> Result<Interest, Error> {
        let mut trigger = false;
        let mut busy = false;
        let (Some(share), Some(lanes)) = (self.share.as_ref(), self.lanes.as_mut()) else {
            return Err(Error::NotAMember { domid: p.domid() });
        };
        let mem = share.mem();
        let layout = lanes.layout;
        let mut rx = FrameReceiver::resume(
            layout.rx.window(mem)?,
            layout.rx.lane()?,
            lanes.rx.take().ok_or_else(lost)?,
        )?;
        let mut tx = FrameSender::resume(
            layout.tx.window(mem)?,
            layout.tx.lane()?,
            lanes.tx.take().ok_or_else(lost)?,
        )?;

        // The link: the carrier follows the switch's link_state.
        let link = mem.load_u32(field::LINK_STATE.start, Ordering::Acquire)? == LINK_UP;
        if self.link != Some(link) {
            self.link = Some(link);
            if self.carrier_ok {
                if let Err(e) = self.tap.set_carrier(link) {
                    eprintln!(
                        "share-member: {}: carrier does not follow the link ({e})",
                        self.tap.name()
                    );
                    self.carrier_ok = false;
                }
            }
        }

        // rx lane -> TAP.
        let slot_count = rx.lane().layout().slot_count() as usize;
        let mut moved = 0;
        // Charged per slot too: a switch that keeps publishing slots of a
        // refused chain (skipped, no frame) is read this much per call.
        rx.set_slot_budget((BUDGET as u32).saturating_mul(net::GSO_MAX_SLOTS));
        'rx: while moved < BUDGET {
            if rx.slot_budget() == 0 {
                busy = true;
                trigger |= rx.release()?;
                break;
            }
            if rx.poll()? == 0 {
                // The final check: arm the switch's trigger, look again.
                if rx.prepare_wait()? == 0 {
                    break;
                }
            }
            // Each call consumes at least one slot of the batch; the bound
            // stops a loop even if that ever failed to hold.
            for _ in 0..=slot_count {
                match rx.next() {
                    Ok(Some(f)) => {
                        let hdr = vnet::rx_header(&f.meta).emit();
                        match self.tap.write(&hdr, f.data) {
                            Ok(()) => self.counters.rx_frames += 1,
                            Err(_) => self.counters.rx_dropped += 1,
                        }
                        moved += 1;
                        if moved >= BUDGET {
                            busy = true;
                            trigger |= rx.release()?;
                            break 'rx;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.counters.rx_bad += 1;
                        if self.counters.rx_bad.is_power_of_two() {
                            eprintln!(
                                "share-member: {}: dropped a bad frame from domain {} ({e}); {} so far",
                                self.tap.name(),
                                self.peer,
                                self.counters.rx_bad
                            );
                        }
                    }
                }
            }
            trigger |= rx.release()?;
        }

        // TAP -> tx lane.
        let mut sent = 0;
        let head = self.tx_head;
        if let Some((len, meta)) = self.pending {
            let at = head + VNET_HDR_LEN;
            let frame = &self.tx_buf[at..at + len];
            if tx.send(frame, meta)? {
                self.pending = None;
                self.counters.tx_frames += 1;
                sent += 1;
            }
        }
        if self.pending.is_none() && tap_readable {
            while sent < BUDGET {
                let Some(n) = self
                    .tap
                    .read(&mut self.tx_buf[head..])
                    .map_err(|e| Error::Os {
                        op: "read from the TAP device",
                        errno: e.raw_os_error().unwrap_or(libc::EIO),
                    })?
                else {
                    break;
                };
                let Some(hdr) = VnetHeader::parse(&self.tx_buf[head..head + n]) else {
                    self.counters.tx_dropped += 1;
                    continue;
                };
                let len = n - VNET_HDR_LEN;
                let max = if hdr.gso().is_some() {
                    net::GSO_MAX_FRAME
                } else {
                    self.max_frame
                };
                if !(FRAME_MIN..=max).contains(&len) {
                    self.counters.tx_dropped += 1;
                    continue;
                }
                let frame = &mut self.tx_buf[head + VNET_HDR_LEN..head + n];
                let meta = match vnet::tx_meta(&hdr, frame, self.accepted) {
                    Ok(m) => m,
                    Err(_) => {
                        self.counters.tx_dropped += 1;
                        continue;
                    }
                };
                if !tx.send(frame, meta)? {
                    self.pending = Some((len, meta));
                    break;
                }
                self.counters.tx_frames += 1;
                sent += 1;
            }
            if sent >= BUDGET {
                busy = true;
            }
        }
        trigger |= tx.publish()?;
        if let Some((len, _)) = self.pending {
            // Full: ask the switch to trigger once it frees room, and look
            // again in case it did meanwhile.
            if tx.prepare_wait(len)? {
                busy = true;
            }
        }
        lanes.rx = Some(rx.park());
        lanes.tx = Some(tx.park());
        if trigger {
            self.trigger(p)?;
        }
        Ok(Interest {
            tap_readable: self.pending.is_none(),
            busy,
        })
    }
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_from_the_tap_start_16_byte_aligned() {
        let buf = vec![0u8; 4096];
        // Every alignment the buffer could have.
        for k in 0..32 {
            let b = &buf[k..];
            let head = tx_head(b);
            assert!(head < 16);
            assert_eq!((b.as_ptr() as usize + head + VNET_HDR_LEN) % 16, 0);
        }
    }
}
