//! The console: Xen's PV console ring (what `xl console` shows, and what
//! xenconsoled logs), with port 0xE9 for the messages before the ring is up
//! and for crash reports.
//!
//! Port 0xE9 output appears in Xen's own log (with `guest_loglvl=all`), and
//! on plain QEMU with `-debugcon`. The `log` crate's macros write here once
//! [`init_log`] ran; [`Writer`] offers `core::fmt::Write` and
//! `embedded_io::Write`.

use core::fmt;
use core::sync::atomic::Ordering;

use spin::Mutex;

use super::abi::*;
use super::{cpu, evtchn, hypercall, phys, time};
use share_hal::error::Result;
use share_hal::volatile::SharedMem;

/// The debug console port of Xen and QEMU.
pub const DEBUG_PORT: u16 = 0xE9;

/// How long a write waits for xenconsoled to drain a full ring before it
/// drops output: a domain whose console nobody reads must not hang.
const FULL_RING_WAIT_NS: u64 = 50_000_000;

struct Ring {
    page: SharedMem<'static>,
    port: u32,
    /// Our producer index; the copy in the page is only ever written.
    prod: u32,
    /// Output dropped because the ring stayed full.
    dropped: u64,
}

struct Console {
    ring: Option<Ring>,
    /// Also copy ring output to port 0xE9.
    mirror: bool,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    ring: None,
    mirror: false,
});

fn debug_port_write(bytes: &[u8]) {
    for &b in bytes {
        cpu::outb(DEBUG_PORT, b);
    }
}

/// Free space in a ring of `size` bytes, or `None` if the peer's consumer
/// index is impossible (ahead of our producer, or more than a ring behind).
pub fn ring_space(prod: u32, cons: u32, size: usize) -> Option<usize> {
    let used = prod.wrapping_sub(cons) as usize;
    (used <= size).then(|| size - used)
}

impl Ring {
    /// Copies as much of `bytes` as fits; returns how much.
    fn put(&mut self, bytes: &[u8]) -> usize {
        // The consumer index is peer-written: read once, checked.
        let Ok(cons) = self.page.load_u32(XENCONS_OUT_CONS, Ordering::Acquire) else {
            return 0;
        };
        let Some(space) = ring_space(self.prod, cons, XENCONS_OUT_SIZE) else {
            return 0;
        };
        let n = space.min(bytes.len());
        for (i, &b) in bytes[..n].iter().enumerate() {
            let at = self.prod.wrapping_add(i as u32) as usize % XENCONS_OUT_SIZE;
            let _ = self.page.write_u8(XENCONS_OUT + at, b);
        }
        self.prod = self.prod.wrapping_add(n as u32);
        let _ = self
            .page
            .store_u32(XENCONS_OUT_PROD, self.prod, Ordering::Release);
        n
    }

    fn notify(&self) {
        let mut send = EvtchnPort { port: self.port };
        hypercall::event_channel_op(EVTCHNOP_SEND, &mut send);
    }

    fn write(&mut self, mut bytes: &[u8]) {
        let mut deadline = None;
        while !bytes.is_empty() {
            let n = self.put(bytes);
            bytes = &bytes[n..];
            if bytes.is_empty() {
                break;
            }
            self.notify();
            let now = time::now_ns();
            let until = *deadline.get_or_insert(now.saturating_add(FULL_RING_WAIT_NS));
            if now >= until || now == 0 {
                self.dropped += bytes.len() as u64;
                break;
            }
            if n == 0 {
                hypercall::sched_poll(&[self.port], until);
                if let Some(si) = time::shared_info() {
                    evtchn::clear_pending(si, self.port);
                }
            }
        }
        self.notify();
    }
}

/// Switches the console to the PV console ring named by the HVM params.
pub(super) fn init_ring() -> Result<()> {
    let pfn = hypercall::hvm_get_param(HVM_PARAM_CONSOLE_PFN)?;
    let port = hypercall::hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN)?;
    // SAFETY: Xen placed the console page at this frame for us and
    // xenconsoled; nothing else in this program reaches it.
    let page = unsafe { phys::window(pfn, 1)? };
    let prod = page.load_u32(XENCONS_OUT_PROD, Ordering::Acquire)?;
    CONSOLE.lock().ring = Some(Ring {
        page,
        port: port as u32,
        prod,
        dropped: 0,
    });
    Ok(())
}

/// Also copies ring output to port 0xE9 (slow under Xen: a VM exit per
/// byte; meant for the rig's serial log).
pub fn set_mirror(on: bool) {
    CONSOLE.lock().mirror = on;
}

/// Writes `bytes` to the console.
pub fn write_bytes(bytes: &[u8]) {
    let mut c = CONSOLE.lock();
    let mirror = c.mirror;
    match c.ring.as_mut() {
        Some(ring) => {
            ring.write(bytes);
            if mirror {
                debug_port_write(bytes);
            }
        }
        None => debug_port_write(bytes),
    }
}

/// Writes from a crash: never waits for the console lock (the crash may
/// have happened while it was held), always also to port 0xE9.
pub fn emergency_write(bytes: &[u8]) {
    debug_port_write(bytes);
    if let Some(mut c) = CONSOLE.try_lock() {
        if let Some(ring) = c.ring.as_mut() {
            ring.write(bytes);
        }
    }
}

/// Output dropped because nobody drained the ring.
pub fn dropped_bytes() -> u64 {
    CONSOLE.lock().ring.as_ref().map(|r| r.dropped).unwrap_or(0)
}

/// The console as a `fmt::Write` and `embedded_io::Write` sink.
#[derive(Clone, Copy, Debug, Default)]
pub struct Writer;

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

impl embedded_io::ErrorType for Writer {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> core::result::Result<usize, Self::Error> {
        write_bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> core::result::Result<(), Self::Error> {
        Ok(())
    }
}

/// Like `Writer`, for crash reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmergencyWriter;

impl fmt::Write for EmergencyWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        emergency_write(s.as_bytes());
        Ok(())
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = time::now_ns() / 1_000;
        let _ = fmt::write(
            &mut Writer,
            format_args!(
                "[{:>6}.{:06}] {:<5} {}: {}\n",
                us / 1_000_000,
                us % 1_000_000,
                record.level(),
                record.target(),
                record.args()
            ),
        );
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Routes the `log` macros to the console.
pub fn init_log(level: log::LevelFilter) {
    // A second call keeps the first logger; only the level changes.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_space_rejects_impossible_indexes() {
        assert_eq!(ring_space(0, 0, 2048), Some(2048));
        assert_eq!(ring_space(100, 40, 2048), Some(1988));
        assert_eq!(ring_space(2048, 0, 2048), Some(0));
        assert_eq!(ring_space(5, u32::MAX - 10, 2048), Some(2048 - 16));
        // Consumer ahead of the producer, or more than a ring behind.
        assert_eq!(ring_space(10, 11, 2048), None);
        assert_eq!(ring_space(3000, 0, 2048), None);
    }

    proptest::proptest! {
        #[test]
        fn ring_space_never_exceeds_the_ring(prod: u32, cons: u32) {
            if let Some(space) = ring_space(prod, cons, XENCONS_OUT_SIZE) {
                proptest::prop_assert!(space <= XENCONS_OUT_SIZE);
                proptest::prop_assert_eq!(
                    prod.wrapping_sub(cons) as usize + space,
                    XENCONS_OUT_SIZE
                );
            }
        }
    }
}
