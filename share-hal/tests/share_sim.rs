//! The Share API between domains of the simulation platform: attach,
//! exchange, trigger, detach; descriptors for someone else; grant copy
//! failing segment by segment.
use share_hal::error::Error;
use share_hal::platform::*;
use share_hal::share::*;
use share_hal::wire::descriptor::{Descriptor, DescriptorRepr};
use share_sim::{temp_socket_path, Broker, SimPlatform};

fn setup() -> (Broker, SimPlatform, SimPlatform) {
    let path = temp_socket_path("share");
    let b = Broker::spawn(&path).unwrap();
    let owner = SimPlatform::connect(&path, 1).unwrap();
    let member = SimPlatform::connect(&path, 2).unwrap();
    (b, owner, member)
}

#[test]
fn attach_exchange_trigger_detach_remove() {
    let (_b, mut o, mut m) = setup();
    let mut share = Share::create(&mut o, 3).unwrap();
    let r = share.add_member(&mut o, 2).unwrap();
    assert_eq!(
        share.add_member(&mut o, 2).err(),
        Some(Error::AlreadyAMember { domid: 2 })
    );
    let att = Attached::attach(&mut m, r).unwrap();
    assert_eq!(att.numpages(), 3);
    share.mem().write_u64(2 * PAGE_SIZE, 42).unwrap();
    assert_eq!(att.mem().read_u64(2 * PAGE_SIZE), Ok(42));
    let mut att = att;
    att.trigger(&mut m).unwrap();
    let mut from = None;
    let dl = deadline_in(&o, 5_000_000_000);
    watch(&mut o, dl, |port| from = share.member_for_port(port)).unwrap();
    assert_eq!(from, Some(2));
    share.trigger(&mut o, 2).unwrap();
    let dl = deadline_in(&m, 5_000_000_000);
    assert_eq!(watch(&mut m, dl, |_| {}), Ok(1));

    // Still mapped: the member stays revoking.
    assert!(matches!(
        share.remove_member(&mut o, 2),
        Err(Error::GrantInUse { .. })
    ));
    assert_eq!(share.members().count(), 0);
    assert_eq!(share.revoking().collect::<Vec<_>>(), [2]);
    assert_eq!(
        share.trigger(&mut o, 2),
        Err(Error::NotAMember { domid: 2 })
    );
    att.detach(&mut m).unwrap();
    assert_eq!(share.reap(&mut o), Ok(0));
    assert!(matches!(
        Attached::attach(&mut m, r),
        Err(Error::NoGrant { .. })
    ));
    share.destroy(&mut o).unwrap();
    assert_eq!(share.mem().len(), 0);
}

#[test]
fn a_descriptor_for_someone_else_is_refused() {
    let path = temp_socket_path("share-other");
    let _b = Broker::spawn(&path).unwrap();
    let mut o = SimPlatform::connect(&path, 1).unwrap();
    let mut m = SimPlatform::connect(&path, 2).unwrap();
    // The owner grants member 2 a descriptor written for member 3.
    let mut share = Share::create(&mut o, 1).unwrap();
    let r3 = share.add_member(&mut o, 3).unwrap();
    let page = o.alloc_pages(1).unwrap();
    let mut buf = vec![0u8; PAGE_SIZE];
    {
        let d3 = DescriptorRepr {
            owner: 1,
            member: 3,
            numpages: 1,
            port: Port(1),
        };
        d3.emit(
            &mut Descriptor::new_unchecked(&mut buf[..]),
            &[r3.descriptor],
        )
        .unwrap();
    }
    page.mem().write_from(0, &buf).unwrap();
    let g = o
        .grant(page.frame(0).unwrap(), 2, Access::ReadOnly)
        .unwrap();
    let e = Attached::attach(
        &mut m,
        ShareRef {
            owner: 1,
            descriptor: g,
        },
    )
    .err();
    assert_eq!(
        e,
        Some(Error::Protocol {
            what: "descriptor member"
        })
    );
    // A garbage descriptor (numpages far too large) is refused too.
    page.mem()
        .write_u32(0, u32::from_le_bytes(*b"XSHD"))
        .unwrap();
    page.mem().write_u16(4, 1).unwrap();
    page.mem().write_u16(10, 2).unwrap();
    page.mem().write_u32(12, 5000).unwrap();
    assert!(matches!(
        Attached::attach(
            &mut m,
            ShareRef {
                owner: 1,
                descriptor: g
            }
        ),
        Err(Error::Protocol { .. })
    ));
}

#[test]
fn sg_xfer_fails_bad_segments_alone() {
    let (_b, mut o, mut m) = setup();
    let share = Share::create(&mut o, 1).unwrap();
    let buf = m.alloc_pages(1).unwrap();
    buf.mem().fill(0, PAGE_SIZE, 0x5a).unwrap();
    let g = m
        .grant(buf.frame(0).unwrap(), 1, Access::ReadWrite)
        .unwrap();
    let foreign = |offset| CopyPtr::Foreign {
        domid: 2,
        gref: g,
        offset,
    };
    let mut segs: Vec<CopySeg> = (0..300)
        .map(|i| CopySeg {
            src: foreign((i % 64) * 64),
            dst: share.local(0, (i % 64) * 64).unwrap(),
            len: 64,
            status: CopyStatus::Pending,
        })
        .collect();
    segs[150].len = 4000; // leaves the page
    segs[7].src = CopyPtr::Foreign {
        domid: 2,
        gref: GrantRef(9999),
        offset: 0,
    };
    let r = sg_xfer(&mut o, &mut segs).unwrap();
    assert_eq!(
        r,
        XferReport {
            done: 298,
            failed: 2
        }
    );
    assert!(matches!(
        segs[150].status,
        CopyStatus::Failed(Error::InvalidArgument { .. })
    ));
    assert_eq!(
        segs[7].status,
        CopyStatus::Failed(Error::NoGrant {
            domid: 2,
            gref: GrantRef(9999)
        })
    );
    assert_eq!(share.mem().read_u8(4095), Ok(0x5a));
}
