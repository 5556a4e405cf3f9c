//! One network port of this domain: a network share it joined as a member,
//! plugged into a TAP device.
//!
//! Everything in the share is written by the switch and hostile: the
//! control fields are copied once and parsed, the lanes validate every
//! index and slot (`share_hal::lane`, `share_hal::frames`), and a broken
//! lane is an error of this port only: the caller closes it with a log
//! line and the program goes on.

use std::sync::atomic::Ordering;

use share_hal::frames::{FrameReceiver, FrameSender, LaneFrame, ParkedReceiver, ParkedSender};
use share_hal::lane::{Consumer, Producer};
use share_hal::platform::{DomId, Platform};
use share_hal::share::Attached;
use share_hal::wire::net::{
    self, features, field, Control, ControlRepr, FrameAssembler, NetLayout, CONTROL_LEN, FRAME_MIN,
    LINK_UP, MEMBER_CLOSED, MEMBER_READY, MTU_STANDARD_MAX, SLOT_DATA_MAX,
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
    /// The tx lane had no room for the longest frame the TAP device may
    /// give: nothing is read from it until the switch frees slots (its
    /// trigger resumes us).
    room_wait: bool,
    /// Where a frame longer than the slots reserved for it spills (it is
    /// dropped), and a frame whose partial checksum is completed here is
    /// copied to (privately, the one case a frame's bytes are read).
    tx_buf: Vec<u8>,
    pub counters: Counters,
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
            room_wait: false,
            tx_buf: vec![0u8; net::GSO_MAX_FRAME],
            counters: Counters::default(),
        };
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
        let mut rx = FrameReceiver::net(rx, FrameAssembler::new(mtu, accepted)?)?;
        // Nothing here decides on a frame's bytes (the TAP header comes
        // from the slot header's fields): they go from the slots straight
        // to the TAP device.
        rx.set_private_head(0);
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
                match rx.next_lane() {
                    Ok(Some(f)) => {
                        match lane_to_tap(&self.tap, &f) {
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
        let longest = longest_in(self.accepted, self.max_frame);
        if tap_readable || self.room_wait {
            self.room_wait = false;
            while sent < BUDGET {
                match tap_to_lane(
                    &self.tap,
                    &mut tx,
                    &mut self.tx_buf,
                    longest,
                    self.max_frame,
                    self.accepted,
                )? {
                    TxStep::Sent => {
                        self.counters.tx_frames += 1;
                        sent += 1;
                    }
                    TxStep::Dropped => self.counters.tx_dropped += 1,
                    TxStep::Idle => break,
                    TxStep::Full => {
                        self.room_wait = true;
                        break;
                    }
                }
            }
            if sent >= BUDGET {
                busy = true;
            }
        }
        trigger |= tx.publish()?;
        if self.room_wait {
            // Full: ask the switch to trigger once it frees room, and look
            // again in case it did meanwhile.
            if tx.prepare_wait(longest)? {
                busy = true;
            }
        }
        lanes.rx = Some(rx.park());
        lanes.tx = Some(tx.park());
        if trigger {
            self.trigger(p)?;
        }
        Ok(Interest {
            tap_readable: !self.room_wait,
            busy,
        })
    }
}

/// The longest frame the TAP device may give a port with the `accepted`
/// features.
fn longest_in(accepted: u32, max_frame: usize) -> usize {
    if accepted & features::GSO != 0 {
        net::GSO_MAX_FRAME
    } else {
        max_frame
    }
}

/// What one [`tap_to_lane`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxStep {
    /// A frame went into the lane (not yet published).
    Sent,
    /// A frame was read and dropped (too short or long, an offload the
    /// share cannot carry, a bad checksum range).
    Dropped,
    /// No frame waiting.
    Idle,
    /// The lane has no room for a frame of `longest` bytes: nothing read.
    Full,
}

/// Reads one frame from the TAP device straight into free slots of the
/// tx lane (the kernel's copy is the only one), reserving room for
/// `longest` bytes first, and sends it. The frame's bytes are never read
/// from the slots to decide anything: its offload header lands in a
/// private buffer, and the plan needs only its length. A partial checksum
/// to complete here (a case Linux does not produce with the offloads we
/// ask for) is completed on a private copy, which then goes whole.
fn tap_to_lane(
    tap: &Tap,
    tx: &mut FrameSender<'_>,
    spill: &mut [u8],
    longest: usize,
    max_frame: usize,
    accepted: u32,
) -> Result<TxStep, Error> {
    if !tx.reserve_in_place(longest)? {
        return Ok(TxStep::Full);
    }
    let slots = tx.slots_for(longest);
    let room = slots as usize * SLOT_DATA_MAX;
    let mut raw = [0u8; VNET_HDR_LEN];
    let read = {
        let tx = &*tx;
        tap.read_shared(&mut raw, (0..slots).map(|k| tx.slot_data(k)), spill)
    };
    let Some(len) = read.map_err(|e| Error::Os {
        op: "read from the TAP device",
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    })?
    else {
        return Ok(TxStep::Idle);
    };
    let Some(hdr) = VnetHeader::parse(&raw) else {
        return Ok(TxStep::Dropped);
    };
    let max = if hdr.gso().is_some() {
        net::GSO_MAX_FRAME
    } else {
        max_frame
    };
    if !(FRAME_MIN..=max.min(room)).contains(&len) {
        return Ok(TxStep::Dropped);
    }
    let plan = match vnet::tx_plan(&hdr, len, accepted) {
        Ok(p) => p,
        Err(_) => return Ok(TxStep::Dropped),
    };
    if let Some((start, at)) = plan.complete {
        let frame = spill.get_mut(..len).ok_or(Error::InvalidArgument {
            what: "TAP spill buffer shorter than a frame",
        })?;
        for_each_chunk(tx, frame, |w, chunk| w.read_into(0, chunk))?;
        vnet::complete_csum(frame, start, at);
        for_each_chunk(tx, frame, |w, chunk| w.write_from(0, chunk))?;
    }
    if !tx.commit_in_place(len, plan.meta)? {
        return Err(Error::InvalidArgument {
            what: "reserved slots gone before the frame was sent",
        });
    }
    Ok(TxStep::Sent)
}

/// Calls `f` with each reserved slot's data window and the part of
/// `frame` that belongs there.
fn for_each_chunk(
    tx: &FrameSender<'_>,
    frame: &mut [u8],
    mut f: impl FnMut(&SharedMem<'_>, &mut [u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    for (k, chunk) in frame.chunks_mut(SLOT_DATA_MAX).enumerate() {
        f(&tx.slot_data(k as u32)?, chunk)?;
    }
    Ok(())
}

/// Writes a frame the switch delivered to the TAP device: its offload
/// header from the frame's slot header fields (checked by the receiver),
/// its bytes straight from the rx slots (and from the receiver's private
/// buffer, for a frame that spanned two batches).
fn lane_to_tap(tap: &Tap, f: &LaneFrame<'_, '_>) -> std::io::Result<()> {
    let hdr = vnet::rx_header(&f.meta()).emit();
    tap.write_shared(&hdr, f.head(), f.rest_windows())
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
    use crate::vnet::{gso, hdr_flags};
    use share_hal::frames::{FrameMeta, NET_SLOT_SIZE};
    use share_hal::lane::{init, LaneLayout};
    use share_hal::wire::net::flags;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A TAP stand-in (a `SOCK_SEQPACKET` pair: whole messages through
    /// `readv`/`writev`, as frames through a TAP device) and the kernel's
    /// end of it.
    fn fake_tap() -> (Tap, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: both descriptors are new and ours alone.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        (Tap::from_fd(a, "fake0"), b)
    }

    fn kernel_sends(fd: &OwnedFd, hdr: &VnetHeader, frame: &[u8]) {
        let mut msg = hdr.emit().to_vec();
        msg.extend_from_slice(frame);
        // SAFETY: `msg` is valid for reads of its length.
        let n = unsafe { libc::write(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        assert_eq!(n, msg.len() as isize, "{}", std::io::Error::last_os_error());
    }

    fn kernel_receives(fd: &OwnedFd) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n >= 0, "{}", std::io::Error::last_os_error());
        buf.truncate(n as usize);
        buf
    }

    fn frame(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect()
    }

    /// A lane's pages, 64-aligned as a share's are.
    fn lane_pages(slots: u32) -> (Vec<u8>, LaneLayout) {
        let layout = LaneLayout::new(slots, NET_SLOT_SIZE).unwrap();
        (vec![0u8; layout.bytes() + 64], layout)
    }

    fn window(buf: &mut [u8]) -> SharedMem<'_> {
        let off = buf.as_ptr().align_offset(64);
        SharedMem::from_slice(&mut buf[off..])
    }

    const GSO_PORT: u32 = features::CSUM_BLANK | features::DATA_VALIDATED | features::GSO;

    /// Frames from the TAP device go straight into the tx slots: the
    /// receiver gets them whole with their offloads, and no private
    /// buffer of ours held their bytes (the spill buffer stays as it
    /// was), but for the one frame whose checksum is completed here.
    #[test]
    fn tap_frames_go_straight_into_the_tx_slots() {
        let (tap, kernel) = fake_tap();
        let (mut pages, layout) = lane_pages(64);
        let mem = window(&mut pages);
        init(mem, layout, u32::MAX - 5).unwrap();
        let mut tx = FrameSender::new(Producer::attach(mem, layout).unwrap(), 1518)
            .unwrap()
            .with_gso()
            .unwrap();
        let rules = FrameAssembler::new(1500, GSO_PORT).unwrap();
        let mut rx = FrameReceiver::net(Consumer::attach(mem, layout).unwrap(), rules).unwrap();
        let mut spill = vec![0xa5u8; net::GSO_MAX_FRAME];
        let longest = longest_in(GSO_PORT, 1518);
        let step = |tx: &mut FrameSender<'_>, spill: &mut Vec<u8>| {
            tap_to_lane(&tap, tx, spill, longest, 1518, GSO_PORT).unwrap()
        };
        assert_eq!(step(&mut tx, &mut spill), TxStep::Idle);

        let tso = VnetHeader {
            flags: hdr_flags::NEEDS_CSUM,
            gso_type: gso::TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let plain = VnetHeader::default();
        let cases = [
            (plain, frame(60, 1)),
            (plain, frame(1518, 2)),
            (tso, frame(net::GSO_MAX_FRAME, 3)),
            (tso, frame(3000, 4)),
        ];
        for (h, f) in &cases {
            kernel_sends(&kernel, h, f);
            assert_eq!(step(&mut tx, &mut spill), TxStep::Sent);
            tx.publish().unwrap();
            rx.poll().unwrap();
            let got = rx.next().unwrap().unwrap();
            assert_eq!(got.data, &f[..]);
            let want = vnet::tx_plan(h, f.len(), GSO_PORT).unwrap().meta;
            assert_eq!(got.meta, want);
            rx.release().unwrap();
        }
        assert!(spill.iter().all(|&b| b == 0xa5), "no private copy");
        // Dropped: a plain frame over the MTU, a runt, UFO.
        kernel_sends(&kernel, &plain, &frame(1519, 5));
        kernel_sends(&kernel, &plain, &frame(13, 5));
        let ufo = VnetHeader {
            gso_type: gso::UDP,
            ..tso
        };
        kernel_sends(&kernel, &ufo, &frame(3000, 5));
        for _ in 0..3 {
            assert_eq!(step(&mut tx, &mut spill), TxStep::Dropped);
        }
        tx.publish().unwrap();
        rx.poll().unwrap();
        assert_eq!(rx.next().unwrap(), None);
        rx.release().unwrap();

        // A partial checksum this port cannot pass on (no CSUM_BLANK):
        // completed on a private copy, which goes whole.
        let udp = VnetHeader {
            flags: hdr_flags::NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHeader::default()
        };
        let f = frame(100, 6);
        kernel_sends(&kernel, &udp, &f);
        let mut want = f.clone();
        vnet::complete_csum(&mut want, 34, 40);
        let step = tap_to_lane(&tap, &mut tx, &mut spill, 1518, 1518, 0).unwrap();
        assert_eq!(step, TxStep::Sent);
        tx.publish().unwrap();
        rx.poll().unwrap();
        assert_eq!(rx.next().unwrap().unwrap().data, &want[..]);
        rx.release().unwrap();

        // No room for a longest frame: nothing is read.
        let tiny = frame(60, 7);
        let mut n = 0;
        while tx.reserve_in_place(longest).unwrap() {
            kernel_sends(&kernel, &plain, &tiny);
            assert_eq!(step_once(&tap, &mut tx, &mut spill, longest), TxStep::Sent);
            n += 1;
        }
        assert_eq!(n, 64 - 33 + 1);
        kernel_sends(&kernel, &plain, &tiny);
        assert_eq!(step_once(&tap, &mut tx, &mut spill, longest), TxStep::Full);
        tx.publish().unwrap();
        rx.poll().unwrap();
        while rx.next().unwrap().is_some() {}
        rx.release().unwrap();
        assert_eq!(step_once(&tap, &mut tx, &mut spill, longest), TxStep::Sent);
    }

    fn step_once(tap: &Tap, tx: &mut FrameSender<'_>, spill: &mut [u8], longest: usize) -> TxStep {
        tap_to_lane(tap, tx, spill, longest, 1518, GSO_PORT).unwrap()
    }

    /// Frames from the switch go from the rx slots straight to the TAP
    /// device with the header their slot header's fields give; a frame
    /// that spanned two batches too.
    #[test]
    fn rx_slots_go_straight_to_the_tap() {
        let (tap, kernel) = fake_tap();
        let (mut pages, layout) = lane_pages(64);
        let mem = window(&mut pages);
        init(mem, layout, 7).unwrap();
        let mut tx = FrameSender::new(Producer::attach(mem, layout).unwrap(), 1518)
            .unwrap()
            .with_gso()
            .unwrap();
        let rules = FrameAssembler::new(1500, GSO_PORT).unwrap();
        let mut rx = FrameReceiver::net(Consumer::attach(mem, layout).unwrap(), rules).unwrap();
        rx.set_private_head(0);
        let tso = FrameMeta {
            flags: flags::CSUM_BLANK,
            csum_start: 34,
            csum_offset: 16,
            gso_type: net::gso::TCPV4,
            gso_size: 1448,
            gso_flags: 0,
        };
        let cases = [
            (FrameMeta::default(), frame(60, 1)),
            (
                FrameMeta {
                    flags: flags::DATA_VALIDATED,
                    ..FrameMeta::default()
                },
                frame(1518, 2),
            ),
            (tso, frame(net::GSO_MAX_FRAME, 3)),
        ];
        for (m, f) in &cases {
            assert!(tx.send(f, *m).unwrap());
        }
        tx.publish().unwrap();
        rx.poll().unwrap();
        for (m, f) in &cases {
            let lf = rx.next_lane().unwrap().unwrap();
            assert!(lf.head().is_empty(), "nothing copied privately");
            lane_to_tap(&tap, &lf).unwrap();
            let mut want = vnet::rx_header(m).emit().to_vec();
            want.extend_from_slice(f);
            assert_eq!(kernel_receives(&kernel), want);
        }
        rx.release().unwrap();
        // Split over two batches: the first part was kept privately.
        let f = frame(3000, 9);
        assert!(tx.send(&f, tso).unwrap());
        assert_eq!(tx.lane().unpublished(), 2);
        tx.publish().unwrap();
        // The receiver reads one slot of the two in this batch.
        rx.set_slot_budget(1);
        rx.poll().unwrap();
        assert!(rx.next_lane().unwrap().is_none());
        rx.release().unwrap();
        rx.set_slot_budget(u32::MAX);
        rx.poll().unwrap();
        let lf = rx.next_lane().unwrap().unwrap();
        assert_eq!(lf.head().len(), SLOT_DATA_MAX);
        lane_to_tap(&tap, &lf).unwrap();
        let mut want = vnet::rx_header(&tso).emit().to_vec();
        want.extend_from_slice(&f);
        assert_eq!(kernel_receives(&kernel), want);
    }
}
