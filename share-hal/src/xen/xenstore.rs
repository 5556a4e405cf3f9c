//! The one bootstrap use of xenstore: a minimal client of the domain's
//! xenstore ring that reads and writes single keys (relative paths resolve
//! against the domain's home, `/local/domain/<domid>/`). No watches, no
//! transactions, no directory listings: see docs/design.md.
//!
//! Everything in the response ring is written by xenstored and is treated
//! as hostile input: the producer index is read once per pass and checked,
//! the message header is copied out and parsed privately, and its length
//! is bounded before any payload is read.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::abi::*;
use super::console::ring_space;
use super::{evtchn, hypercall, phys, time};
use crate::error::{Error, Result};
use crate::volatile::SharedMem;

/// How long one request may take: xenstored in the nested rig is slow.
const REQUEST_TIMEOUT_NS: u64 = 30_000_000_000;

/// A parsed `xsd_sockmsg` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    pub fn to_bytes(&self) -> [u8; XSD_SOCKMSG_SIZE] {
        let mut b = [0u8; XSD_SOCKMSG_SIZE];
        b[0..4].copy_from_slice(&self.kind.to_le_bytes());
        b[4..8].copy_from_slice(&self.req_id.to_le_bytes());
        b[8..12].copy_from_slice(&self.tx_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Parses a header copied out of the response ring.
    pub fn parse(b: &[u8; XSD_SOCKMSG_SIZE]) -> Result<Header> {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let h = Header {
            kind: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        };
        if h.len as usize > XENSTORE_PAYLOAD_MAX {
            return Err(Error::Protocol {
                what: "xenstore reply longer than XENSTORE_PAYLOAD_MAX",
            });
        }
        Ok(h)
    }
}

/// The errno of an `XS_ERROR` payload ("ENOENT\0"), as Xen numbers them.
pub fn error_code(payload: &[u8]) -> i64 {
    let name = payload.split(|&b| b == 0).next().unwrap_or(&[]);
    match name {
        b"EPERM" => 1,
        b"ENOENT" => 2,
        b"EIO" => 5,
        b"E2BIG" => 7,
        b"EAGAIN" => 11,
        b"ENOMEM" => 12,
        b"EACCES" => 13,
        b"EBUSY" => 16,
        b"EEXIST" => 17,
        b"EISDIR" => 21,
        b"EINVAL" => 22,
        b"ENOSPC" => 28,
        b"EROFS" => 30,
        b"ENOSYS" => 38,
        b"ENOTEMPTY" => 39,
        b"EQUOTA" => 122,
        _ => 0,
    }
}

/// A connection to xenstored over the domain's ring.
pub struct XenStore {
    page: SharedMem<'static>,
    port: u32,
    req_prod: u32,
    rsp_cons: u32,
    next_id: u32,
}

impl XenStore {
    /// Connects to the ring the toolstack set up (HVM params).
    pub fn connect() -> Result<XenStore> {
        let pfn = hypercall::hvm_get_param(HVM_PARAM_STORE_PFN)?;
        let port = hypercall::hvm_get_param(HVM_PARAM_STORE_EVTCHN)?;
        if pfn == 0 {
            return Err(Error::Unsupported {
                op: "xenstore",
                why: "the toolstack gave this domain no xenstore ring",
            });
        }
        // SAFETY: the xenstore ring page Xen placed at this frame; reached
        // only through SharedMem.
        let page = unsafe { phys::window(pfn, 1)? };
        // Our own indexes: whatever xenstored last saw of them.
        let req_prod = page.load_u32(XENSTORE_REQ_PROD, Ordering::Acquire)?;
        let rsp_cons = page.load_u32(XENSTORE_RSP_CONS, Ordering::Acquire)?;
        Ok(XenStore {
            page,
            port: port as u32,
            req_prod,
            rsp_cons,
            next_id: 1,
        })
    }

    /// Reads the value of `path`.
    pub fn read(&mut self, path: &str) -> Result<String> {
        let reply = self.request(XS_READ, &[path.as_bytes(), b"\0"])?;
        String::from_utf8(reply).map_err(|_| Error::Protocol {
            what: "xenstore value is not UTF-8",
        })
    }

    /// Writes `value` at `path`.
    pub fn write(&mut self, path: &str, value: &str) -> Result<()> {
        self.request(XS_WRITE, &[path.as_bytes(), b"\0", value.as_bytes()])
            .map(drop)
    }

    fn request(&mut self, kind: u32, parts: &[&[u8]]) -> Result<Vec<u8>> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(Error::InvalidArgument {
                what: "xenstore request too long",
            });
        }
        let req_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = time::now_ns().saturating_add(REQUEST_TIMEOUT_NS);
        let header = Header {
            kind,
            req_id,
            tx_id: 0,
            len: len as u32,
        };
        self.send(&header.to_bytes(), deadline)?;
        for part in parts {
            self.send(part, deadline)?;
        }
        loop {
            let mut hb = [0u8; XSD_SOCKMSG_SIZE];
            self.recv(&mut hb, deadline)?;
            let h = Header::parse(&hb)?;
            let mut payload = alloc::vec![0u8; h.len as usize];
            self.recv(&mut payload, deadline)?;
            if h.req_id != req_id {
                // A watch event or a stale reply: not ours.
                continue;
            }
            if h.kind == XS_ERROR {
                return Err(Error::Hypervisor {
                    op: "xenstore request",
                    code: -error_code(&payload),
                });
            }
            if h.kind != kind {
                return Err(Error::Protocol {
                    what: "xenstore reply of another type",
                });
            }
            // Values come without a terminator; strip one if present.
            if payload.last() == Some(&0) {
                payload.pop();
            }
            return Ok(payload);
        }
    }

    fn notify(&self) {
        let mut send = EvtchnPort { port: self.port };
        hypercall::event_channel_op(EVTCHNOP_SEND, &mut send);
    }

    fn wait(&self, deadline: u64) -> Result<()> {
        if time::now_ns() >= deadline {
            return Err(Error::TimedOut);
        }
        hypercall::check(
            "SCHEDOP_poll",
            hypercall::sched_poll(&[self.port], deadline),
        )?;
        if let Some(si) = time::shared_info() {
            evtchn::clear_pending(si, self.port);
        }
        Ok(())
    }

    fn send(&mut self, mut bytes: &[u8], deadline: u64) -> Result<()> {
        while !bytes.is_empty() {
            let cons = self.page.load_u32(XENSTORE_REQ_CONS, Ordering::Acquire)?;
            let space =
                ring_space(self.req_prod, cons, XENSTORE_RING_SIZE).ok_or(Error::Protocol {
                    what: "xenstore request consumer index",
                })?;
            if space == 0 {
                self.notify();
                self.wait(deadline)?;
                continue;
            }
            let n = space.min(bytes.len());
            for (i, &b) in bytes[..n].iter().enumerate() {
                let at = self.req_prod.wrapping_add(i as u32) as usize % XENSTORE_RING_SIZE;
                self.page.write_u8(XENSTORE_REQ + at, b)?;
            }
            self.req_prod = self.req_prod.wrapping_add(n as u32);
            self.page
                .store_u32(XENSTORE_REQ_PROD, self.req_prod, Ordering::Release)?;
            self.notify();
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], deadline: u64) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            let prod = self.page.load_u32(XENSTORE_RSP_PROD, Ordering::Acquire)?;
            let avail = prod.wrapping_sub(self.rsp_cons) as usize;
            if avail > XENSTORE_RING_SIZE {
                return Err(Error::Protocol {
                    what: "xenstore response producer index",
                });
            }
            if avail == 0 {
                self.wait(deadline)?;
                continue;
            }
            let n = avail.min(buf.len() - got);
            for b in &mut buf[got..got + n] {
                let at = self.rsp_cons as usize % XENSTORE_RING_SIZE;
                *b = self.page.read_u8(XENSTORE_RSP + at)?;
                self.rsp_cons = self.rsp_cons.wrapping_add(1);
            }
            got += n;
            self.page
                .store_u32(XENSTORE_RSP_CONS, self.rsp_cons, Ordering::Release)?;
            self.notify();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_bounds_length() {
        let h = Header {
            kind: XS_READ,
            req_id: 7,
            tx_id: 0,
            len: 4096,
        };
        assert_eq!(Header::parse(&h.to_bytes()), Ok(h));
        let long = Header { len: 4097, ..h };
        assert!(matches!(
            Header::parse(&long.to_bytes()),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn error_names_become_errno() {
        assert_eq!(error_code(b"ENOENT\0"), 2);
        assert_eq!(error_code(b"EACCES"), 13);
        assert_eq!(error_code(b"\0"), 0);
        assert_eq!(error_code(b"whatever"), 0);
    }

    proptest::proptest! {
        #[test]
        fn any_header_bytes_parse_without_panic(b: [u8; 16]) {
            if let Ok(h) = Header::parse(&b) {
                proptest::prop_assert!(h.len as usize <= XENSTORE_PAYLOAD_MAX);
            }
        }

        #[test]
        fn any_error_payload_is_handled(p: Vec<u8>) {
            let _ = error_code(&p);
        }
    }
}
