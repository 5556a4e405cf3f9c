//! What a vdevice change means for this member: pure, so the decisions
//! are tested without a platform.
//!
//! The member applies entries of role *member* only: it joins shares that
//! other domains own. Network entries become TAP devices, disk entries
//! block devices. A disk member entry written over a disk member entry is
//! the one change allowed in place: dom0 points the disk at its server's
//! new share after the server restarted, and the member re-attaches
//! without dropping the block device ([`Action::ReattachDisk`]).

use share_hal::platform::DomId;
use share_hal::share::ShareRef;
use share_hal::wire::vdevice::{flags, status, EntryRepr, Kind, Role};
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

/// A disk share to join, from a validated member entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskJoin {
    pub share_ref: ShareRef,
    /// Pages the share must have, or 0 to take the descriptor's.
    pub numpages: u32,
    /// dom0 gives this domain the disk read-only (the server may also say
    /// so in its control fields; either makes the device read-only).
    pub read_only: bool,
}

/// What to do with one change of entry `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to change (an empty entry over an empty one).
    Nothing,
    /// Join a network share and plug it into a TAP device.
    JoinNet(NetJoin),
    /// Join a disk share and expose it as a block device.
    JoinDisk(DiskJoin),
    /// The entry's disk moves to another share (its server restarted):
    /// attach to it and re-issue what was in flight; the block device
    /// stays.
    ReattachDisk(DiskJoin),
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
    let disk_member = |e: &EntryRepr| e.kind == Kind::Disk && e.role == Role::Member;
    if disk_member(old) && disk_member(new) {
        return match disk_join(me, new) {
            Ok(j) => Action::ReattachDisk(j),
            Err(code) => Action::Refuse(code),
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
        (Kind::Disk, Role::Member) => match disk_join(me, new) {
            Ok(j) => Action::JoinDisk(j),
            Err(code) => Action::Refuse(code),
        },
        // This program serves no share of its own.
        (Kind::Network, Role::Owner) | (Kind::Disk, Role::Owner) => Action::Refuse(status::ENODEV),
        (Kind::Empty, _) => Action::Nothing,
    }
}

fn disk_join(me: DomId, e: &EntryRepr) -> Result<DiskJoin, i32> {
    if e.peer == me {
        return Err(status::EINVAL);
    }
    Ok(DiskJoin {
        share_ref: ShareRef {
            owner: e.peer,
            descriptor: e.share_ref,
        },
        numpages: e.numpages,
        read_only: e.flags & flags::READ_ONLY != 0,
    })
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
        let disk_owner = EntryRepr {
            kind: Kind::Disk,
            role: Role::Owner,
            numpages: 3,
            ..net_member(2, 5)
        };
        assert_eq!(
            classify(3, &EntryRepr::EMPTY, &disk_owner),
            Action::Refuse(status::ENODEV)
        );
        // A disk of our own, and a disk over a network entry.
        let disk = EntryRepr {
            kind: Kind::Disk,
            ..net_member(3, 5)
        };
        assert_eq!(
            classify(3, &EntryRepr::EMPTY, &disk),
            Action::Refuse(status::EINVAL)
        );
        let disk = EntryRepr {
            kind: Kind::Disk,
            ..net_member(2, 5)
        };
        assert_eq!(
            classify(3, &net_member(1, 9), &disk),
            Action::Refuse(status::EEXIST)
        );
    }

    #[test]
    fn disk_entries_join_and_a_rewrite_reattaches() {
        let disk = EntryRepr {
            kind: Kind::Disk,
            flags: flags::READ_ONLY,
            numpages: 11,
            ..net_member(2, 5)
        };
        let join = DiskJoin {
            share_ref: ShareRef {
                owner: 2,
                descriptor: GrantRef(5),
            },
            numpages: 11,
            read_only: true,
        };
        assert_eq!(
            classify(3, &EntryRepr::EMPTY, &disk),
            Action::JoinDisk(join)
        );
        // The server came back as domain 7 with a new share.
        let moved = EntryRepr {
            peer: 7,
            share_ref: GrantRef(9),
            flags: 0,
            ..disk
        };
        assert_eq!(
            classify(3, &disk, &moved),
            Action::ReattachDisk(DiskJoin {
                share_ref: ShareRef {
                    owner: 7,
                    descriptor: GrantRef(9)
                },
                read_only: false,
                ..join
            })
        );
        assert_eq!(classify(3, &disk, &EntryRepr::EMPTY), Action::Leave);
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
