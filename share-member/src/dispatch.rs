//! What a vdevice change means for this member: pure, so the decisions
//! are tested without a platform.
//!
//! The member applies entries of role *member* only: it joins shares that
//! other domains own. Network entries become TAP devices; disk entries are
//! refused with `ENODEV` until the block side joins this program (it adds
//! an [`Action::JoinDisk`] arm, nothing else changes here).

use share_hal::platform::DomId;
use share_hal::share::ShareRef;
use share_hal::wire::vdevice::{status, EntryRepr, Kind, Role};
use share_hal::Error;

/// A network share to join, from a validated member entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetJoin {
    pub share_ref: ShareRef,
    /// Pages the share must have, or 0 to take the descriptor's.
    pub numpages: u32,
    /// The port's MAC from the entry's `param`, if dom0 set one. The
    /// switch's control area is what counts; this is only checked against
    /// it.
    pub mac: Option<[u8; 6]>,
}

/// What to do with one change of entry `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to change (an empty entry over an empty one).
    Nothing,
    /// Join a network share and plug it into a TAP device.
    JoinNet(NetJoin),
    /// Close the device the entry held and leave its share.
    Leave,
    /// Refuse with this status (a negative errno, `wire::vdevice::status`).
    Refuse(i32),
}

/// Decides what the change of an entry from `old` (as we applied it) to
/// `new` (as dom0 wrote it, parsed) asks of domain `me`.
pub fn classify(me: DomId, old: &EntryRepr, new: &EntryRepr) -> Action {
    if new.kind == Kind::Empty {
        return if old.kind == Kind::Empty {
            Action::Nothing
        } else {
            Action::Leave
        };
    }
    // One device per entry: dom0 empties an entry before reusing it.
    if old.kind != Kind::Empty {
        return Action::Refuse(status::EEXIST);
    }
    match (new.kind, new.role) {
        (Kind::Network, Role::Member) => {
            if new.peer == me {
                return Action::Refuse(status::EINVAL);
            }
            let mac = new.param.to_le_bytes();
            let mac: [u8; 6] = [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]];
            Action::JoinNet(NetJoin {
                share_ref: ShareRef {
                    owner: new.peer,
                    descriptor: new.share_ref,
                },
                numpages: new.numpages,
                mac: (mac != [0; 6]).then_some(mac),
            })
        }
        // This program serves no share of its own, and the block member
        // is not part of it yet.
        (Kind::Network, Role::Owner) | (Kind::Disk, _) => Action::Refuse(status::ENODEV),
        (Kind::Empty, _) => Action::Nothing,
    }
}

/// The vdevice status for a failure of the share transport while joining.
pub fn status_of(e: &Error) -> i32 {
    match e {
        Error::NoGrant { .. } | Error::NoSuchDomain { .. } | Error::NotAMember { .. } => {
            status::ENOENT
        }
        Error::OutOfMemory | Error::GrantTableFull => status::ENOMEM,
        Error::Protocol { .. } | Error::InvalidArgument { .. } => status::EINVAL,
        Error::TimedOut => status::ETIMEDOUT,
        Error::Unsupported { .. } => status::EOPNOTSUPP,
        _ => status::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use share_hal::GrantRef;

    fn net_member(peer: DomId, gref: u32) -> EntryRepr {
        EntryRepr {
            kind: Kind::Network,
            role: Role::Member,
            peer,
            share_ref: GrantRef(gref),
            ..EntryRepr::EMPTY
        }
    }

    #[test]
    fn a_network_member_entry_joins_its_share() {
        let e = EntryRepr {
            numpages: 66,
            param: u64::from_le_bytes([0x02, 0, 0, 0, 0, 7, 0, 0]),
            ..net_member(1, 9)
        };
        assert_eq!(
            classify(3, &EntryRepr::EMPTY, &e),
            Action::JoinNet(NetJoin {
                share_ref: ShareRef {
                    owner: 1,
                    descriptor: GrantRef(9)
                },
                numpages: 66,
                mac: Some([2, 0, 0, 0, 0, 7]),
            })
        );
        let Action::JoinNet(j) = classify(3, &EntryRepr::EMPTY, &net_member(1, 9)) else {
            panic!("not a join");
        };
        assert_eq!(j.mac, None);
    }

    #[test]
    fn an_empty_entry_leaves_and_empty_over_empty_is_nothing() {
        assert_eq!(
            classify(3, &net_member(1, 9), &EntryRepr::EMPTY),
            Action::Leave
        );
        assert_eq!(
            classify(3, &EntryRepr::EMPTY, &EntryRepr::EMPTY),
            Action::Nothing
        );
    }

    #[test]
    fn refusals() {
        // A used entry is not overwritten in place.
        assert_eq!(
            classify(3, &net_member(1, 9), &net_member(1, 10)),
            Action::Refuse(status::EEXIST)
        );
        // Joining a share of our own.
        assert_eq!(
            classify(3, &EntryRepr::EMPTY, &net_member(3, 9)),
            Action::Refuse(status::EINVAL)
        );
        let owner = EntryRepr {
            role: Role::Owner,
            numpages: 10,
            ..net_member(1, 0)
        };
        assert_eq!(
            classify(3, &EntryRepr::EMPTY, &owner),
            Action::Refuse(status::ENODEV)
        );
        for role in [Role::Member, Role::Owner] {
            let disk = EntryRepr {
                kind: Kind::Disk,
                role,
                numpages: 3,
                ..net_member(2, 5)
            };
            assert_eq!(
                classify(3, &EntryRepr::EMPTY, &disk),
                Action::Refuse(status::ENODEV)
            );
        }
    }

    #[test]
    fn transport_errors_become_statuses() {
        assert_eq!(
            status_of(&Error::NoGrant {
                domid: 1,
                gref: GrantRef(3)
            }),
            status::ENOENT
        );
        assert_eq!(status_of(&Error::Protocol { what: "x" }), status::EINVAL);
        assert_eq!(status_of(&Error::OutOfMemory), status::ENOMEM);
        assert_eq!(status_of(&Error::Os { op: "x", errno: 5 }), status::EIO);
    }
}
