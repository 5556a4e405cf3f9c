//! Errors of the share transport.
//!
//! Every variant says what went wrong in the words of the domain model, so
//! that a log line is enough to act on.

use core::fmt;

use crate::platform::{DomId, GrantRef, Port};

pub type Result<T, E = Error> = core::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An access to shared memory fell outside the granted pages.
    OutOfBounds {
        offset: usize,
        len: usize,
        size: usize,
    },
    /// An atomic access was not naturally aligned.
    Misaligned { offset: usize, align: usize },
    /// The domain has no grant `gref` for the caller, or it was revoked.
    NoGrant { domid: DomId, gref: GrantRef },
    /// The grant exists but does not allow writing.
    ReadOnlyGrant { domid: DomId, gref: GrantRef },
    /// The grant cannot be revoked while the member still maps it.
    GrantInUse { gref: GrantRef },
    /// The grant table of this domain is full.
    GrantTableFull,
    /// The event channel port is not open, or not bound to a peer.
    BadPort { port: Port },
    /// The peer domain does not exist (or died).
    NoSuchDomain { domid: DomId },
    /// A member is not (or no longer) part of the share.
    NotAMember { domid: DomId },
    /// A member was added twice.
    AlreadyAMember { domid: DomId },
    /// Memory for pages or bookkeeping ran out.
    OutOfMemory,
    /// A wait reached its deadline with no trigger.
    TimedOut,
    /// Data written by a peer broke the protocol; `what` names the field.
    Protocol { what: &'static str },
    /// The hypervisor (or the simulation of it) refused an operation.
    Hypervisor { op: &'static str, code: i64 },
    /// An argument given by the caller (not a peer) was invalid.
    InvalidArgument { what: &'static str },
    /// This platform cannot do `op`; `why` says what to use instead.
    Unsupported { op: &'static str, why: &'static str },
    /// The operating system refused `op` (Linux userspace platform).
    Os { op: &'static str, errno: i32 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutOfBounds { offset, len, size } => write!(
                f,
                "access of {len} bytes at offset {offset} is outside the {size} granted bytes"
            ),
            Error::Misaligned { offset, align } => {
                write!(f, "offset {offset} is not aligned to {align} bytes")
            }
            Error::NoGrant { domid, gref } => write!(
                f,
                "domain {domid} has not granted reference {gref} to us (never granted, or revoked)"
            ),
            Error::ReadOnlyGrant { domid, gref } => {
                write!(f, "grant {gref} of domain {domid} is read-only")
            }
            Error::GrantInUse { gref } => write!(
                f,
                "grant {gref} is still mapped by its member; unmap it before revoking"
            ),
            Error::GrantTableFull => write!(f, "grant table is full"),
            Error::BadPort { port } => write!(f, "event channel port {port} is not bound"),
            Error::NoSuchDomain { domid } => write!(f, "domain {domid} does not exist"),
            Error::NotAMember { domid } => write!(f, "domain {domid} is not a member of the share"),
            Error::AlreadyAMember { domid } => {
                write!(f, "domain {domid} is already a member of the share")
            }
            Error::OutOfMemory => write!(f, "out of memory"),
            Error::TimedOut => write!(f, "timed out waiting for a trigger"),
            Error::Protocol { what } => write!(f, "peer broke the protocol: {what}"),
            Error::Hypervisor { op, code } => write!(f, "hypervisor refused {op}: error {code}"),
            Error::InvalidArgument { what } => write!(f, "invalid argument: {what}"),
            Error::Unsupported { op, why } => write!(f, "{op} is not supported here: {why}"),
            #[cfg(feature = "std")]
            Error::Os { op, errno } => write!(
                f,
                "{op} failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            #[cfg(not(feature = "std"))]
            Error::Os { op, errno } => write!(f, "{op} failed: errno {errno}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
