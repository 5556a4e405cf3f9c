//! Event channels: triggers between domains, and the watch loop.
//!
//! Interrupts stay off in this kernel (see the runtime's notes on the red
//! zone), so nothing is ever delivered as an upcall: a watch blocks in Xen
//! with `SCHEDOP_poll` on the open ports until one is pending or a deadline
//! passes, then reads and clears the pending bits in the shared info page.
//! Ports stay masked, so Xen never tries to raise an upcall for them.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::abi::*;
use super::hypercall;
use super::time;
use share_hal::error::{Error, Result};
use share_hal::platform::{DomId, Port};
use share_hal::volatile::SharedMem;

/// Open ports of this domain and the shared info page holding their
/// pending and mask bits.
pub struct Events {
    shared_info: SharedMem<'static>,
    open: Vec<u32>,
}

/// Byte offset and bit of `port` in a 2-level bitmap, as a u32 word
/// (the 64-bit words of the ABI are little-endian pairs of u32).
fn bit_of(base: usize, port: u32) -> (usize, u32) {
    (base + (port as usize / 32) * 4, 1 << (port % 32))
}

/// Clears `port`'s pending bit in `shared_info`; returns whether it was set.
/// For ports bound by the toolstack (console, xenstore) that `Events` does
/// not own.
pub(super) fn clear_pending(shared_info: &SharedMem<'_>, port: u32) -> bool {
    let (off, bit) = bit_of(SHARED_INFO_EVTCHN_PENDING, port);
    shared_info
        .fetch_and_not_u32(off, bit, Ordering::SeqCst)
        .map(|old| old & bit != 0)
        .unwrap_or(false)
}

impl Events {
    pub(super) fn new(shared_info: SharedMem<'static>) -> Events {
        Events {
            shared_info,
            open: Vec::new(),
        }
    }

    fn opened(&mut self, port: u32) -> Result<Port> {
        if port >= EVTCHN_2L_NR_PORTS {
            return Err(Error::Hypervisor {
                op: "event channel port beyond the 2-level ABI",
                code: port.into(),
            });
        }
        let (off, bit) = bit_of(SHARED_INFO_EVTCHN_MASK, port);
        self.shared_info.fetch_or_u32(off, bit, Ordering::SeqCst)?;
        self.open.push(port);
        Ok(Port(port))
    }

    fn check_open(&self, port: Port) -> Result<()> {
        if self.open.contains(&port.0) {
            Ok(())
        } else {
            Err(Error::BadPort { port })
        }
    }

    /// Clears `port`'s pending bit; returns whether it was set.
    fn take_pending(&self, port: u32) -> bool {
        clear_pending(&self.shared_info, port)
    }

    pub fn alloc_unbound(&mut self, remote: DomId) -> Result<Port> {
        let mut arg = EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom: remote,
            port: 0,
        };
        let rc = hypercall::event_channel_op(EVTCHNOP_ALLOC_UNBOUND, &mut arg);
        if rc == -XEN_ESRCH {
            return Err(Error::NoSuchDomain { domid: remote });
        }
        hypercall::check("EVTCHNOP_alloc_unbound", rc)?;
        self.opened(arg.port)
    }

    pub fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port> {
        let mut arg = EvtchnBindInterdomain {
            remote_dom: remote,
            remote_port: remote_port.0,
            local_port: 0,
        };
        let rc = hypercall::event_channel_op(EVTCHNOP_BIND_INTERDOMAIN, &mut arg);
        match -rc {
            XEN_ESRCH => return Err(Error::NoSuchDomain { domid: remote }),
            XEN_EINVAL => return Err(Error::BadPort { port: remote_port }),
            _ => {}
        }
        hypercall::check("EVTCHNOP_bind_interdomain", rc)?;
        self.opened(arg.local_port)
    }

    pub fn notify(&mut self, port: Port) -> Result<()> {
        self.check_open(port)?;
        let mut arg = EvtchnPort { port: port.0 };
        let rc = hypercall::event_channel_op(EVTCHNOP_SEND, &mut arg);
        hypercall::check("EVTCHNOP_send", rc).map(drop)
    }

    pub fn close(&mut self, port: Port) -> Result<()> {
        self.check_open(port)?;
        let mut arg = EvtchnPort { port: port.0 };
        let rc = hypercall::event_channel_op(EVTCHNOP_CLOSE, &mut arg);
        hypercall::check("EVTCHNOP_close", rc)?;
        self.open.retain(|&p| p != port.0);
        self.take_pending(port.0);
        Ok(())
    }

    pub fn wait(&mut self, deadline_ns: Option<u64>, fired: &mut dyn FnMut(Port)) -> Result<()> {
        if self.open.len() > SCHED_POLL_MAX_PORTS {
            return Err(Error::Unsupported {
                op: "watching more than 128 event channels",
                why: "SCHEDOP_poll takes at most 128 ports",
            });
        }
        if self.open.is_empty() && deadline_ns.is_none() {
            return Err(Error::InvalidArgument {
                what: "wait with no open port and no deadline would never return",
            });
        }
        loop {
            let mut any = false;
            for &port in &self.open {
                if self.take_pending(port) {
                    fired(Port(port));
                    any = true;
                }
            }
            if any {
                return Ok(());
            }
            if let Some(deadline) = deadline_ns {
                if time::passed(deadline) {
                    return Err(Error::TimedOut);
                }
            }
            // Xen reads 0 as "no timeout"; a real deadline is never 0 here
            // because the clock passed it above.
            let rc = hypercall::sched_poll(&self.open, deadline_ns.unwrap_or(0));
            hypercall::check("SCHEDOP_poll", rc)?;
        }
    }
}

/// One port of [`Events`], rung and waited on by a component that does
/// not hold the platform (blkback-uk's `vbd` store, inside a store call).
/// The platform's own [`Events::wait`] may also take the port's pending
/// bit: a user must check its ring before sleeping (and after waking), as
/// ring protocols do anyway.
pub struct Doorbell {
    shared_info: SharedMem<'static>,
    port: u32,
}

impl Doorbell {
    pub fn port(&self) -> Port {
        Port(self.port)
    }

    pub fn notify(&self) -> Result<()> {
        let mut arg = EvtchnPort { port: self.port };
        let rc = hypercall::event_channel_op(EVTCHNOP_SEND, &mut arg);
        hypercall::check("EVTCHNOP_send", rc).map(drop)
    }

    /// Sleeps until the port is pending or `deadline_ns` passes (then
    /// `Err(TimedOut)`), and clears the pending bit.
    pub fn wait(&self, deadline_ns: u64) -> Result<()> {
        if clear_pending(&self.shared_info, self.port) {
            return Ok(());
        }
        if time::passed(deadline_ns) {
            return Err(Error::TimedOut);
        }
        let rc = hypercall::sched_poll(&[self.port], deadline_ns);
        hypercall::check("SCHEDOP_poll", rc)?;
        clear_pending(&self.shared_info, self.port);
        Ok(())
    }
}

impl Events {
    /// A doorbell for `port`, which must be open.
    pub fn doorbell(&self, port: Port) -> Result<Doorbell> {
        self.check_open(port)?;
        Ok(Doorbell {
            shared_info: self.shared_info,
            port: port.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_positions_follow_the_2_level_abi() {
        assert_eq!(bit_of(2048, 0), (2048, 1));
        assert_eq!(bit_of(2048, 31), (2048, 1 << 31));
        // Port 32 is bit 32 of the first 64-bit word: second u32, bit 0.
        assert_eq!(bit_of(2048, 32), (2052, 1));
        assert_eq!(bit_of(2048, 4095), (2048 + 508, 1 << 31));
    }
}
