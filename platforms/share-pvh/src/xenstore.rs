//! The one bootstrap use of xenstore: a minimal client of the domain's
//! xenstore ring that reads and writes single keys and lists a directory
//! (relative paths resolve against the domain's home,
//! `/local/domain/<domid>/`). No watches, no transactions: see
//! docs/design.md. The listing serves blkback-uk's own disks (the xenbus
//! frontend handshake of its `vbd` store), which polls keys with a bound
//! instead of watching them.
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
use share_hal::error::{Error, Result};
use share_hal::volatile::SharedMem;

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

/// The ring half of a xenstore connection: our indexes and the page.
/// Non-blocking and hypervisor-free, so that tests and the fuzz target
/// (`share-hal/fuzz/fuzz_targets/xenstore.rs`) drive it over any page.
pub struct Ring<'a> {
    page: SharedMem<'a>,
    /// Our producer index; the page's copy is only ever written.
    req_prod: u32,
    /// Our consumer index; likewise.
    rsp_cons: u32,
    /// A reply being assembled: header bytes, then payload.
    partial: Vec<u8>,
}

/// One complete reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl<'a> Ring<'a> {
    /// Takes over `page` (a `xenstore_domain_interface`), continuing from
    /// the indexes found in it.
    pub fn new(page: SharedMem<'a>) -> Result<Ring<'a>> {
        if page.len() < XENSTORE_RSP_PROD + 4 {
            return Err(Error::InvalidArgument {
                what: "xenstore ring page too small",
            });
        }
        Ok(Ring {
            req_prod: page.load_u32(XENSTORE_REQ_PROD, Ordering::Acquire)?,
            rsp_cons: page.load_u32(XENSTORE_RSP_CONS, Ordering::Acquire)?,
            page,
            partial: Vec::new(),
        })
    }

    /// Copies as much of `bytes` into the request ring as fits; returns how
    /// much.
    pub fn send(&mut self, bytes: &[u8]) -> Result<usize> {
        // Peer-written: read once, checked.
        let cons = self.page.load_u32(XENSTORE_REQ_CONS, Ordering::Acquire)?;
        let space = ring_space(self.req_prod, cons, XENSTORE_RING_SIZE).ok_or(Error::Protocol {
            what: "xenstore request consumer index",
        })?;
        let n = space.min(bytes.len());
        for (i, &b) in bytes[..n].iter().enumerate() {
            let at = self.req_prod.wrapping_add(i as u32) as usize % XENSTORE_RING_SIZE;
            self.page.write_u8(XENSTORE_REQ + at, b)?;
        }
        self.req_prod = self.req_prod.wrapping_add(n as u32);
        self.page
            .store_u32(XENSTORE_REQ_PROD, self.req_prod, Ordering::Release)?;
        Ok(n)
    }

    /// Takes what the response ring holds, up to the end of the reply being
    /// assembled; returns the reply once complete. `Ok(None)`: wait for
    /// more. An error leaves the connection unusable (the stream cannot be
    /// resynchronised).
    pub fn recv(&mut self) -> Result<Option<Reply>> {
        loop {
            let need = if self.partial.len() < XSD_SOCKMSG_SIZE {
                XSD_SOCKMSG_SIZE
            } else {
                XSD_SOCKMSG_SIZE + self.header()?.len as usize
            };
            if self.partial.len() == need {
                let header = self.header()?;
                let payload = self.partial.split_off(XSD_SOCKMSG_SIZE);
                self.partial.clear();
                return Ok(Some(Reply { header, payload }));
            }
            // Peer-written: read once per pass, checked.
            let prod = self.page.load_u32(XENSTORE_RSP_PROD, Ordering::Acquire)?;
            let avail = prod.wrapping_sub(self.rsp_cons) as usize;
            if avail > XENSTORE_RING_SIZE {
                return Err(Error::Protocol {
                    what: "xenstore response producer index",
                });
            }
            if avail == 0 {
                return Ok(None);
            }
            let n = avail.min(need - self.partial.len());
            for _ in 0..n {
                let at = self.rsp_cons as usize % XENSTORE_RING_SIZE;
                self.partial.push(self.page.read_u8(XENSTORE_RSP + at)?);
                self.rsp_cons = self.rsp_cons.wrapping_add(1);
            }
            self.page
                .store_u32(XENSTORE_RSP_CONS, self.rsp_cons, Ordering::Release)?;
        }
    }

    #[inline]
    fn header(&self) -> Result<Header> {
        let mut h = [0u8; XSD_SOCKMSG_SIZE];
        h.copy_from_slice(&self.partial[..XSD_SOCKMSG_SIZE]);
        Header::parse(&h)
    }
}

/// Checks a reply to request `req_id` of type `kind`: `Ok(None)` if it is
/// not ours (a watch event, a stale reply), the value (without a trailing
/// NUL) if it is.
pub fn answer(reply: Reply, kind: u32, req_id: u32) -> Result<Option<Vec<u8>>> {
    if reply.header.req_id != req_id {
        return Ok(None);
    }
    if reply.header.kind == XS_ERROR {
        return Err(Error::Hypervisor {
            op: "xenstore request",
            code: -error_code(&reply.payload),
        });
    }
    if reply.header.kind != kind {
        return Err(Error::Protocol {
            what: "xenstore reply of another type",
        });
    }
    let mut payload = reply.payload;
    if payload.last() == Some(&0) {
        payload.pop();
    }
    Ok(Some(payload))
}

/// Longest name accepted in a directory listing (xenstored's own limit on
/// a path is 3072 bytes; a single name of a device directory is short).
pub const MAX_NAME: usize = 256;

/// Parses an `XS_DIRECTORY` reply (names, each NUL-terminated; the last
/// NUL already stripped by [`answer`]): UTF-8, non-empty, at most
/// [`MAX_NAME`] bytes each.
pub fn parse_directory(payload: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    if payload.is_empty() {
        return Ok(names);
    }
    for name in payload.split(|&b| b == 0) {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Error::Protocol {
                what: "xenstore directory entry empty or too long",
            });
        }
        let name = core::str::from_utf8(name).map_err(|_| Error::Protocol {
            what: "xenstore directory entry is not UTF-8",
        })?;
        names.push(String::from(name));
    }
    Ok(names)
}

/// A connection to xenstored over the domain's ring.
pub struct XenStore {
    ring: Ring<'static>,
    port: u32,
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
        Ok(XenStore {
            ring: Ring::new(page)?,
            port: port as u32,
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

    /// The names under `path` (`XS_DIRECTORY`), in the order xenstored
    /// gives them.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        let reply = self.request(XS_DIRECTORY, &[path.as_bytes(), b"\0"])?;
        parse_directory(&reply)
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
            match self.ring.recv()? {
                Some(reply) => {
                    // Xenstored may wait for room we just made.
                    self.notify();
                    if let Some(value) = answer(reply, kind, req_id)? {
                        return Ok(value);
                    }
                }
                None => {
                    self.notify();
                    self.wait(deadline)?;
                }
            }
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
            let n = self.ring.send(bytes)?;
            self.notify();
            bytes = &bytes[n..];
            if n == 0 {
                self.wait(deadline)?;
            }
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

    #[repr(align(8))]
    struct Page([u8; 4096]);

    /// Plays xenstored: appends `bytes` to the response ring.
    fn respond(m: &SharedMem<'_>, bytes: &[u8]) {
        let mut prod = m.load_u32(XENSTORE_RSP_PROD, Ordering::Acquire).unwrap();
        for &b in bytes {
            m.write_u8(XENSTORE_RSP + prod as usize % XENSTORE_RING_SIZE, b)
                .unwrap();
            prod = prod.wrapping_add(1);
        }
        m.store_u32(XENSTORE_RSP_PROD, prod, Ordering::Release)
            .unwrap();
    }

    fn message(kind: u32, req_id: u32, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            kind,
            req_id,
            tx_id: 0,
            len: payload.len() as u32,
        };
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn replies_are_assembled_across_partial_writes_and_the_wrap() {
        let mut page = Page([0; 4096]);
        let m = SharedMem::from_slice(&mut page.0);
        // Start near the u32 wrap and off the ring's alignment.
        let start = u32::MAX - 5;
        for off in [
            XENSTORE_RSP_CONS,
            XENSTORE_RSP_PROD,
            XENSTORE_REQ_CONS,
            XENSTORE_REQ_PROD,
        ] {
            m.store_u32(off, start, Ordering::Relaxed).unwrap();
        }
        let mut ring = Ring::new(m).unwrap();
        let watch = message(15, 0, b"some/path\0token\0");
        let ours = message(XS_READ, 7, b"42");
        respond(&m, &watch[..10]);
        assert_eq!(ring.recv(), Ok(None));
        respond(&m, &watch[10..]);
        respond(&m, &ours[..17]);
        let r = ring.recv().unwrap().unwrap();
        assert_eq!(answer(r, XS_READ, 7), Ok(None));
        assert_eq!(ring.recv(), Ok(None));
        respond(&m, &ours[17..]);
        let r = ring.recv().unwrap().unwrap();
        assert_eq!(answer(r, XS_READ, 7), Ok(Some(b"42".to_vec())));
        // Requests wrap the same way.
        assert_eq!(ring.send(b"hello"), Ok(5));
        assert_eq!(
            m.load_u32(XENSTORE_REQ_PROD, Ordering::Relaxed),
            Ok(start.wrapping_add(5))
        );
    }

    #[test]
    fn errors_and_hostile_indexes_are_reported() {
        let mut page = Page([0; 4096]);
        let m = SharedMem::from_slice(&mut page.0);
        let mut ring = Ring::new(m).unwrap();
        respond(&m, &message(XS_ERROR, 1, b"ENOENT\0"));
        let r = ring.recv().unwrap().unwrap();
        assert_eq!(
            answer(r, XS_READ, 1),
            Err(Error::Hypervisor {
                op: "xenstore request",
                code: -2
            })
        );
        // A producer more than a ring ahead.
        m.store_u32(XENSTORE_RSP_PROD, 5000, Ordering::Relaxed)
            .unwrap();
        assert!(matches!(ring.recv(), Err(Error::Protocol { .. })));
        // A request consumer ahead of our producer.
        m.store_u32(XENSTORE_REQ_CONS, 9, Ordering::Relaxed)
            .unwrap();
        assert!(matches!(ring.send(b"x"), Err(Error::Protocol { .. })));
        // An oversized reply length.
        let mut page = Page([0; 4096]);
        let m = SharedMem::from_slice(&mut page.0);
        let mut ring = Ring::new(m).unwrap();
        let mut h = message(XS_READ, 1, b"");
        h[12..16].copy_from_slice(&5000u32.to_le_bytes());
        respond(&m, &h);
        assert!(matches!(ring.recv(), Err(Error::Protocol { .. })));
    }

    #[test]
    fn a_full_request_ring_takes_nothing() {
        let mut page = Page([0; 4096]);
        let m = SharedMem::from_slice(&mut page.0);
        let mut ring = Ring::new(m).unwrap();
        assert_eq!(ring.send(&[1; 2000]), Ok(1024));
        assert_eq!(ring.send(b"more"), Ok(0));
        m.store_u32(XENSTORE_REQ_CONS, 4, Ordering::Relaxed)
            .unwrap();
        assert_eq!(ring.send(b"more!"), Ok(4));
    }

    #[test]
    fn directory_listings_are_checked() {
        assert_eq!(parse_directory(b""), Ok(Vec::new()));
        assert_eq!(
            parse_directory(b"51712\x0051728"),
            Ok(alloc::vec![String::from("51712"), String::from("51728")])
        );
        assert!(parse_directory(b"a\0\0b").is_err());
        assert!(parse_directory(b"\xff").is_err());
        assert!(parse_directory(&[b'x'; MAX_NAME + 1]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_directory_payload_is_handled(p: Vec<u8>) {
            if let Ok(names) = parse_directory(&p) {
                for n in names {
                    proptest::prop_assert!(!n.is_empty() && n.len() <= MAX_NAME);
                }
            }
        }

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
