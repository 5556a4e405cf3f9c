//! Messages between a domain process and the broker.
//!
//! Every message is one `SOCK_SEQPACKET` datagram of at most [`MAX_MSG`]
//! bytes, little-endian. The broker treats each byte a domain sends as
//! hostile: [`Request::decode`] bounds every count before allocating and
//! never panics. Replies carry page file descriptors as `SCM_RIGHTS`, at
//! most [`MAX_FDS_PER_MSG`] per datagram; a reply with more continues in
//! further datagrams that hold only descriptors.
//!
//! Request: `op: u8` then the fields of that op.
//! Reply: `status` (an [`encode_error`] record, kind 0 = success),
//! `fd_total: u32`, then the op's reply body. `Notify` has no reply, so
//! triggers cost one datagram.

use alloc::vec::Vec;

use share_hal::error::{Error, Result};
use share_hal::platform::{Access, CopyPtr, CopySeg, CopyStatus, DomId, Frame, GrantRef, Port};

/// Largest datagram either side sends.
pub const MAX_MSG: usize = 16 * 1024;
/// Descriptors per datagram (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS_PER_MSG: usize = 250;
/// Pages one `Alloc` or `Map` may ask for.
pub const MAX_PAGES_PER_REQ: usize = 1024;
/// Segments one `Copy` may carry (and the batch size of `GrantTable::copy`).
pub const MAX_COPY_SEGS: usize = 256;
/// Ports of one domain; the pending bitmap page holds one bit each.
pub const MAX_PORTS: u32 = 1024;
/// Xen's DOMID_FIRST_RESERVED: larger ids name no real domain.
pub const DOMID_LIMIT: DomId = 0x7ff0;

/// Size of one encoded error record.
pub const ERROR_LEN: usize = 9;
/// Size of one encoded copy segment.
const SEG_LEN: usize = 2 * 13 + 2;

mod op {
    pub const HELLO: u8 = 1;
    pub const ALLOC: u8 = 2;
    pub const FREE: u8 = 3;
    pub const GRANT: u8 = 4;
    pub const REVOKE: u8 = 5;
    pub const MAP: u8 = 6;
    pub const UNMAP: u8 = 7;
    pub const COPY: u8 = 8;
    pub const ALLOC_UNBOUND: u8 = 9;
    pub const BIND: u8 = 10;
    pub const NOTIFY: u8 = 11;
    pub const CLOSE: u8 = 12;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Hello {
        domid: DomId,
    },
    Alloc {
        count: u32,
    },
    Free {
        frames: Vec<Frame>,
    },
    Grant {
        frame: Frame,
        to: DomId,
        access: Access,
    },
    Revoke {
        gref: GrantRef,
    },
    Map {
        from: DomId,
        access: Access,
        grefs: Vec<GrantRef>,
    },
    Unmap {
        map_id: u64,
    },
    Copy {
        segs: Vec<CopySeg>,
    },
    AllocUnbound {
        remote: DomId,
    },
    Bind {
        remote: DomId,
        remote_port: Port,
    },
    Notify {
        port: Port,
    },
    Close {
        port: Port,
    },
}

impl Request {
    /// Whether the broker answers this request.
    pub fn has_reply(&self) -> bool {
        !matches!(self, Request::Notify { .. })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Request::Hello { domid } => {
                out.push(op::HELLO);
                put_u16(out, *domid);
            }
            Request::Alloc { count } => {
                out.push(op::ALLOC);
                put_u32(out, *count);
            }
            Request::Free { frames } => {
                out.push(op::FREE);
                put_u32(out, frames.len() as u32);
                for f in frames {
                    put_u64(out, f.0);
                }
            }
            Request::Grant { frame, to, access } => {
                out.push(op::GRANT);
                put_u64(out, frame.0);
                put_u16(out, *to);
                out.push(access_code(*access));
            }
            Request::Revoke { gref } => {
                out.push(op::REVOKE);
                put_u32(out, gref.0);
            }
            Request::Map {
                from,
                access,
                grefs,
            } => {
                out.push(op::MAP);
                put_u16(out, *from);
                out.push(access_code(*access));
                put_u32(out, grefs.len() as u32);
                for g in grefs {
                    put_u32(out, g.0);
                }
            }
            Request::Unmap { map_id } => {
                out.push(op::UNMAP);
                put_u64(out, *map_id);
            }
            Request::Copy { segs } => {
                out.push(op::COPY);
                put_u32(out, segs.len() as u32);
                for s in segs {
                    put_ptr(out, &s.src);
                    put_ptr(out, &s.dst);
                    put_u16(out, s.len);
                }
            }
            Request::AllocUnbound { remote } => {
                out.push(op::ALLOC_UNBOUND);
                put_u16(out, *remote);
            }
            Request::Bind {
                remote,
                remote_port,
            } => {
                out.push(op::BIND);
                put_u16(out, *remote);
                put_u32(out, remote_port.0);
            }
            Request::Notify { port } => {
                out.push(op::NOTIFY);
                put_u32(out, port.0);
            }
            Request::Close { port } => {
                out.push(op::CLOSE);
                put_u32(out, port.0);
            }
        }
    }

    /// Parses a datagram from a (hostile) domain.
    pub fn decode(buf: &[u8]) -> Result<Request> {
        let mut r = Reader::new(buf);
        let req = match r.u8()? {
            op::HELLO => Request::Hello { domid: r.u16()? },
            op::ALLOC => Request::Alloc { count: r.u32()? },
            op::FREE => {
                let n = r.count(MAX_PAGES_PER_REQ, 8)?;
                let mut frames = Vec::with_capacity(n);
                for _ in 0..n {
                    frames.push(Frame(r.u64()?));
                }
                Request::Free { frames }
            }
            op::GRANT => Request::Grant {
                frame: Frame(r.u64()?),
                to: r.u16()?,
                access: r.access()?,
            },
            op::REVOKE => Request::Revoke {
                gref: GrantRef(r.u32()?),
            },
            op::MAP => {
                let from = r.u16()?;
                let access = r.access()?;
                let n = r.count(MAX_PAGES_PER_REQ, 4)?;
                let mut grefs = Vec::with_capacity(n);
                for _ in 0..n {
                    grefs.push(GrantRef(r.u32()?));
                }
                Request::Map {
                    from,
                    access,
                    grefs,
                }
            }
            op::UNMAP => Request::Unmap { map_id: r.u64()? },
            op::COPY => {
                let n = r.count(MAX_COPY_SEGS, SEG_LEN)?;
                let mut segs = Vec::with_capacity(n);
                for _ in 0..n {
                    segs.push(CopySeg {
                        src: r.ptr()?,
                        dst: r.ptr()?,
                        len: r.u16()?,
                        status: CopyStatus::Pending,
                    });
                }
                Request::Copy { segs }
            }
            op::ALLOC_UNBOUND => Request::AllocUnbound { remote: r.u16()? },
            op::BIND => Request::Bind {
                remote: r.u16()?,
                remote_port: Port(r.u32()?),
            },
            op::NOTIFY => Request::Notify {
                port: Port(r.u32()?),
            },
            op::CLOSE => Request::Close {
                port: Port(r.u32()?),
            },
            _ => return Err(proto("unknown request op")),
        };
        if !r.is_done() {
            return Err(proto("trailing bytes after request"));
        }
        Ok(req)
    }
}

fn proto(what: &'static str) -> Error {
    Error::Protocol { what }
}

fn access_code(a: Access) -> u8 {
    match a {
        Access::ReadOnly => 0,
        Access::ReadWrite => 1,
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// 13 bytes: kind (0 local, 1 foreign), domid, frame-or-gref (u64), offset.
fn put_ptr(out: &mut Vec<u8>, p: &CopyPtr) {
    match *p {
        CopyPtr::Local { frame, offset } => {
            out.push(0);
            put_u16(out, 0);
            put_u64(out, frame.0);
            put_u16(out, offset);
        }
        CopyPtr::Foreign {
            domid,
            gref,
            offset,
        } => {
            out.push(1);
            put_u16(out, domid);
            put_u64(out, u64::from(gref.0));
            put_u16(out, offset);
        }
    }
}

/// A bounds-checked cursor over a received datagram.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self
            .pos
            .checked_add(N)
            .filter(|&e| e <= self.buf.len())
            .ok_or(proto("message shorter than its fields"))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    /// A element count, checked against `max` and against the bytes left
    /// (so a lying count cannot make us allocate).
    pub fn count(&mut self, max: usize, elem_len: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        let left = self.buf.len() - self.pos;
        if n > max || n.saturating_mul(elem_len) > left {
            return Err(proto("element count too large"));
        }
        Ok(n)
    }

    fn access(&mut self) -> Result<Access> {
        match self.u8()? {
            0 => Ok(Access::ReadOnly),
            1 => Ok(Access::ReadWrite),
            _ => Err(proto("access mode")),
        }
    }

    fn ptr(&mut self) -> Result<CopyPtr> {
        let kind = self.u8()?;
        let domid = self.u16()?;
        let id = self.u64()?;
        let offset = self.u16()?;
        match kind {
            0 => Ok(CopyPtr::Local {
                frame: Frame(id),
                offset,
            }),
            1 => Ok(CopyPtr::Foreign {
                domid,
                gref: GrantRef(u32::try_from(id).map_err(|_| proto("grant reference"))?),
                offset,
            }),
            _ => Err(proto("copy pointer kind")),
        }
    }

    pub fn error(&mut self) -> Result<core::result::Result<(), Error>> {
        let kind = self.u8()?;
        let a = self.u32()?;
        let b = self.u32()?;
        Ok(decode_error(kind, a, b))
    }
}

/// The `what` texts an error may carry over the socket, by index.
const WHATS: &[&str] = &[
    "invalid request to the simulation broker",
    "page count (1..=1024 per request)",
    "frame is not one of the caller's pages",
    "domain id out of range",
    "grant to oneself",
    "segment leaves its page",
    "copy segment of length 0",
    "too many ports",
    "port is not unbound for the caller",
    "mapping id",
    "domain id already connected",
    "first request must be Hello",
    "copy batch too large",
    "frames per request (at most 1024)",
];

fn what_index(what: &str) -> u32 {
    WHATS.iter().position(|w| *w == what).unwrap_or(0) as u32
}

fn what_of(i: u32) -> &'static str {
    WHATS.get(i as usize).copied().unwrap_or(WHATS[0])
}

/// Appends `r` as a 9-byte record: kind, two u32 fields.
pub fn encode_error(out: &mut Vec<u8>, r: core::result::Result<(), Error>) {
    let (kind, a, b): (u8, u32, u32) = match r {
        Ok(()) => (0, 0, 0),
        Err(e) => match e {
            Error::NoGrant { domid, gref } => (1, domid.into(), gref.0),
            Error::ReadOnlyGrant { domid, gref } => (2, domid.into(), gref.0),
            Error::GrantInUse { gref } => (3, gref.0, 0),
            Error::GrantTableFull => (4, 0, 0),
            Error::BadPort { port } => (5, port.0, 0),
            Error::NoSuchDomain { domid } => (6, domid.into(), 0),
            Error::OutOfMemory => (7, 0, 0),
            Error::InvalidArgument { what } => (8, what_index(what), 0),
            Error::Protocol { what } => (9, what_index(what), 0),
            Error::Os { errno, .. } => (10, errno as u32, 0),
            _ => (11, 0, 0),
        },
    };
    out.push(kind);
    put_u32(out, a);
    put_u32(out, b);
}

fn decode_error(kind: u8, a: u32, b: u32) -> core::result::Result<(), Error> {
    let domid = a as DomId;
    Err(match kind {
        0 => return Ok(()),
        1 => Error::NoGrant {
            domid,
            gref: GrantRef(b),
        },
        2 => Error::ReadOnlyGrant {
            domid,
            gref: GrantRef(b),
        },
        3 => Error::GrantInUse { gref: GrantRef(a) },
        4 => Error::GrantTableFull,
        5 => Error::BadPort { port: Port(a) },
        6 => Error::NoSuchDomain { domid },
        7 => Error::OutOfMemory,
        8 => Error::InvalidArgument { what: what_of(a) },
        9 => Error::Protocol { what: what_of(a) },
        10 => Error::Os {
            op: "simulation broker",
            errno: a as i32,
        },
        _ => Error::Hypervisor {
            op: "simulation broker",
            code: i64::from(kind),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn roundtrip(req: Request) {
        let mut buf = Vec::new();
        req.encode(&mut buf);
        assert!(buf.len() <= MAX_MSG);
        assert_eq!(Request::decode(&buf), Ok(req));
    }

    #[test]
    fn requests_roundtrip() {
        roundtrip(Request::Hello { domid: 7 });
        roundtrip(Request::Free {
            frames: vec![Frame(1), Frame(u64::MAX)],
        });
        roundtrip(Request::Map {
            from: 3,
            access: Access::ReadOnly,
            grefs: vec![GrantRef(8); MAX_PAGES_PER_REQ],
        });
        let seg = CopySeg {
            src: CopyPtr::Local {
                frame: Frame(9),
                offset: 4095,
            },
            dst: CopyPtr::Foreign {
                domid: 2,
                gref: GrantRef(u32::MAX),
                offset: 0,
            },
            len: 1,
            status: CopyStatus::Pending,
        };
        roundtrip(Request::Copy {
            segs: vec![seg; MAX_COPY_SEGS],
        });
        roundtrip(Request::Notify { port: Port(5) });
    }

    #[test]
    fn lying_counts_are_rejected_before_allocation() {
        let mut buf = vec![op::MAP, 1, 0, 1];
        buf.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Request::decode(&buf), Err(Error::Protocol { .. })));
        let mut buf = vec![op::COPY];
        buf.extend_from_slice(&2u32.to_le_bytes());
        buf.extend_from_slice(&[0u8; SEG_LEN]);
        assert!(Request::decode(&buf).is_err());
        assert!(Request::decode(&[]).is_err());
        assert!(Request::decode(&[op::NOTIFY, 1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn errors_roundtrip() {
        for e in [
            Error::NoGrant {
                domid: 3,
                gref: GrantRef(9),
            },
            Error::GrantInUse { gref: GrantRef(4) },
            Error::BadPort { port: Port(2) },
            Error::InvalidArgument {
                what: "segment leaves its page",
            },
        ] {
            let mut buf = Vec::new();
            encode_error(&mut buf, Err(e));
            assert_eq!(buf.len(), ERROR_LEN);
            assert_eq!(Reader::new(&buf).error(), Ok(Err(e)));
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Request::decode(&buf);
        }

        #[test]
        fn decode_never_panics_on_known_ops(op in 1u8..=12, rest in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = vec![op];
            buf.extend_from_slice(&rest);
            let _ = Request::decode(&buf);
        }
    }
}
