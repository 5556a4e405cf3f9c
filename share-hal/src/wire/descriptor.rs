//! The share descriptor: one page per member, written by the owner and
//! granted read-only to that member, telling it everything it needs to
//! join the share (the owner's event port and every page's grant ref).
//!
//! A member copies the whole page out once and parses the copy: `numpages`
//! bounds the grant-ref array, so reading it twice from the live page would
//! let the owner grow the array between check and use.

use super::{check_len, get_u16, get_u32, set_u16, set_u32, zero, Error, Field};
use crate::platform::{DomId, GrantRef, Port, PAGE_SIZE};

/// `"XSHD"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"XSHD");
pub const VERSION: u16 = 1;
/// Bytes before the grant-ref array.
pub const HEADER_LEN: usize = 32;
/// Pages of the largest share: as many grant refs as fit one page.
pub const MAX_PAGES: u32 = ((PAGE_SIZE - HEADER_LEN) / 4) as u32;

/// Byte ranges of the descriptor page.
pub mod field {
    use super::Field;
    pub const MAGIC: Field = 0..4;
    pub const VERSION: Field = 4..6;
    /// No flag is defined yet; a descriptor with any bit set is refused.
    pub const FLAGS: Field = 6..8;
    pub const OWNER: Field = 8..10;
    pub const MEMBER: Field = 10..12;
    pub const NUMPAGES: Field = 12..16;
    /// The owner's port, allocated unbound for this member.
    pub const PORT: Field = 16..20;
    pub const RESERVED: Field = 20..32;
    /// `numpages` grant refs (u32 each), page 0 first.
    pub const GREFS: usize = 32;
}

/// A view of a descriptor page (a private copy of it).
#[derive(Debug, Clone)]
pub struct Descriptor<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Descriptor<T> {
    /// Wraps `buffer`, checking it holds the header and the grant refs its
    /// `numpages` announces (at most [`MAX_PAGES`]).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let d = Descriptor { buffer };
        d.check_len()?;
        Ok(d)
    }

    /// Wraps `buffer` without checks, to emit into a fresh page. The
    /// accessors stay total (short buffers read as zeros).
    pub fn new_unchecked(buffer: T) -> Self {
        Descriptor { buffer }
    }

    fn check_len(&self) -> Result<(), Error> {
        let buf = self.buffer.as_ref();
        check_len(buf, HEADER_LEN)?;
        let n = self.numpages();
        if n > MAX_PAGES {
            return Err(Error::TooMany {
                field: "descriptor numpages",
                count: n.into(),
                max: MAX_PAGES.into(),
            });
        }
        check_len(buf, HEADER_LEN + 4 * n as usize)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn magic(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::MAGIC.start)
    }

    pub fn version(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::VERSION.start)
    }

    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLAGS.start)
    }

    pub fn owner(&self) -> DomId {
        get_u16(self.buffer.as_ref(), field::OWNER.start)
    }

    pub fn member(&self) -> DomId {
        get_u16(self.buffer.as_ref(), field::MEMBER.start)
    }

    pub fn numpages(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::NUMPAGES.start)
    }

    pub fn port(&self) -> Port {
        Port(get_u32(self.buffer.as_ref(), field::PORT.start))
    }

    /// Grant ref of page `index`, if `index < numpages`.
    pub fn gref(&self, index: u32) -> Option<GrantRef> {
        if index >= self.numpages().min(MAX_PAGES) {
            return None;
        }
        let at = field::GREFS + 4 * index as usize;
        let buf = self.buffer.as_ref();
        (at + 4 <= buf.len()).then(|| GrantRef(get_u32(buf, at)))
    }

    /// The grant refs, page 0 first.
    pub fn grefs(&self) -> impl Iterator<Item = GrantRef> + '_ {
        (0..self.numpages()).map_while(|i| self.gref(i))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Descriptor<T> {
    pub fn set_magic(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::MAGIC.start, v)
    }

    pub fn set_version(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::VERSION.start, v)
    }

    pub fn set_flags(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::FLAGS.start, v)
    }

    pub fn set_owner(&mut self, v: DomId) {
        set_u16(self.buffer.as_mut(), field::OWNER.start, v)
    }

    pub fn set_member(&mut self, v: DomId) {
        set_u16(self.buffer.as_mut(), field::MEMBER.start, v)
    }

    /// Sets `numpages`; the view's length check is not redone, so the
    /// accessors stay total but `gref` may then answer `None`.
    pub fn set_numpages(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::NUMPAGES.start, v)
    }

    pub fn set_port(&mut self, v: Port) {
        set_u32(self.buffer.as_mut(), field::PORT.start, v.0)
    }

    pub fn set_gref(&mut self, index: u32, gref: GrantRef) {
        if index < MAX_PAGES {
            set_u32(
                self.buffer.as_mut(),
                field::GREFS + 4 * index as usize,
                gref.0,
            )
        }
    }
}

/// The validated meaning of a descriptor (the grant refs stay in the view:
/// a `Repr` of up to 1016 refs would be 4 KiB on the stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorRepr {
    pub owner: DomId,
    pub member: DomId,
    pub numpages: u32,
    pub port: Port,
}

impl DescriptorRepr {
    /// Validates a descriptor copied out of a peer's page.
    pub fn parse<T: AsRef<[u8]>>(d: &Descriptor<T>) -> Result<Self, Error> {
        if d.magic() != MAGIC {
            return Err(Error::BadMagic {
                expected: MAGIC,
                found: d.magic(),
            });
        }
        if d.version() != VERSION {
            return Err(Error::UnsupportedVersion { found: d.version() });
        }
        if d.flags() != 0 {
            return Err(Error::UnknownFlags {
                field: "descriptor flags",
                bits: d.flags().into(),
            });
        }
        let numpages = d.numpages();
        if numpages == 0 {
            return Err(Error::BadField {
                field: "descriptor numpages",
                value: 0,
            });
        }
        // new_checked proved the refs fit; recheck for views built otherwise.
        d.check_len()?;
        Ok(DescriptorRepr {
            owner: d.owner(),
            member: d.member(),
            numpages,
            port: d.port(),
        })
    }

    /// Checks that the descriptor was written by `owner` for `me`: a
    /// descriptor meant for another member must not be used.
    pub fn check_parties(&self, owner: DomId, me: DomId) -> Result<(), Error> {
        if self.owner != owner {
            return Err(Error::BadField {
                field: "descriptor owner",
                value: self.owner.into(),
            });
        }
        if self.member != me {
            return Err(Error::BadField {
                field: "descriptor member",
                value: self.member.into(),
            });
        }
        Ok(())
    }

    /// Bytes a descriptor of this many pages occupies.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 * self.numpages as usize
    }

    /// Writes the descriptor with `grefs` (one per page) into `d`, zeroing
    /// the reserved bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        d: &mut Descriptor<T>,
        grefs: &[GrantRef],
    ) -> Result<(), Error> {
        if self.numpages == 0 || self.numpages > MAX_PAGES {
            return Err(Error::TooMany {
                field: "descriptor numpages",
                count: self.numpages.into(),
                max: MAX_PAGES.into(),
            });
        }
        if grefs.len() != self.numpages as usize {
            return Err(Error::BadField {
                field: "descriptor grant ref count",
                value: grefs.len() as u64,
            });
        }
        check_len(d.buffer.as_ref(), self.buffer_len())?;
        d.set_magic(MAGIC);
        d.set_version(VERSION);
        d.set_flags(0);
        d.set_owner(self.owner);
        d.set_member(self.member);
        d.set_numpages(self.numpages);
        d.set_port(self.port);
        zero(d.buffer.as_mut(), field::RESERVED);
        for (i, g) in grefs.iter().enumerate() {
            d.set_gref(i as u32, *g);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Owner 0, member 7, 2 pages, port 33, refs 0x100 and 0x101.
    const TWO_PAGES: [u8; 40] = [
        b'X', b'S', b'H', b'D', // magic
        1, 0, // version
        0, 0, // flags
        0, 0, // owner
        7, 0, // member
        2, 0, 0, 0, // numpages
        33, 0, 0, 0, // port
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // reserved
        0x00, 0x01, 0, 0, // gref 0
        0x01, 0x01, 0, 0, // gref 1
    ];

    #[test]
    fn parses_literal_bytes() {
        let d = Descriptor::new_checked(&TWO_PAGES[..]).unwrap();
        let r = DescriptorRepr::parse(&d).unwrap();
        assert_eq!(
            r,
            DescriptorRepr {
                owner: 0,
                member: 7,
                numpages: 2,
                port: Port(33)
            }
        );
        assert_eq!(d.gref(0), Some(GrantRef(0x100)));
        assert_eq!(d.gref(1), Some(GrantRef(0x101)));
        assert_eq!(d.gref(2), None);
        assert_eq!(
            d.grefs().collect::<alloc::vec::Vec<_>>(),
            [GrantRef(0x100), GrantRef(0x101)]
        );
        assert_eq!(r.check_parties(0, 7), Ok(()));
    }

    #[test]
    fn emit_writes_the_literal_bytes() {
        let mut page = [0xffu8; PAGE_SIZE];
        let r = DescriptorRepr {
            owner: 0,
            member: 7,
            numpages: 2,
            port: Port(33),
        };
        let mut d = Descriptor::new_unchecked(&mut page[..]);
        r.emit(&mut d, &[GrantRef(0x100), GrantRef(0x101)]).unwrap();
        assert_eq!(&page[..40], &TWO_PAGES[..]);
        assert_eq!(page[40], 0xff, "bytes after the refs are left alone");
    }

    #[test]
    fn refuses_every_broken_field() {
        let with = |at: usize, bytes: &[u8]| {
            let mut b = TWO_PAGES;
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        let parse = |b: &[u8]| Descriptor::new_checked(b).and_then(|d| DescriptorRepr::parse(&d));

        assert!(matches!(
            parse(&with(0, b"XSHE")),
            Err(Error::BadMagic { .. })
        ));
        assert_eq!(
            parse(&with(4, &[2, 0])),
            Err(Error::UnsupportedVersion { found: 2 })
        );
        assert_eq!(
            parse(&with(6, &[0, 0x80])),
            Err(Error::UnknownFlags {
                field: "descriptor flags",
                bits: 0x8000
            })
        );
        assert_eq!(
            parse(&with(12, &[0, 0, 0, 0])),
            Err(Error::BadField {
                field: "descriptor numpages",
                value: 0
            })
        );
        // Three refs announced, two present.
        assert_eq!(
            parse(&with(12, &[3, 0, 0, 0])),
            Err(Error::Truncated { need: 44, have: 40 })
        );
        // Past one page, even with a buffer large enough.
        let mut big = [0u8; 8192];
        big[..40].copy_from_slice(&TWO_PAGES);
        big[12..16].copy_from_slice(&(MAX_PAGES + 1).to_le_bytes());
        assert_eq!(
            parse(&big),
            Err(Error::TooMany {
                field: "descriptor numpages",
                count: 1017,
                max: 1016
            })
        );
        assert_eq!(
            parse(&TWO_PAGES[..31]),
            Err(Error::Truncated { need: 32, have: 31 })
        );
    }

    #[test]
    fn refuses_a_descriptor_for_someone_else() {
        let d = Descriptor::new_checked(&TWO_PAGES[..]).unwrap();
        let r = DescriptorRepr::parse(&d).unwrap();
        assert!(matches!(
            r.check_parties(0, 8),
            Err(Error::BadField {
                field: "descriptor member",
                ..
            })
        ));
        assert!(matches!(
            r.check_parties(3, 7),
            Err(Error::BadField {
                field: "descriptor owner",
                ..
            })
        ));
    }

    #[test]
    fn the_largest_share_fits_one_page() {
        assert_eq!(MAX_PAGES, 1016);
        let grefs: alloc::vec::Vec<GrantRef> = (0..MAX_PAGES).map(GrantRef).collect();
        let mut page = [0u8; PAGE_SIZE];
        let r = DescriptorRepr {
            owner: 1,
            member: 2,
            numpages: MAX_PAGES,
            port: Port(5),
        };
        r.emit(&mut Descriptor::new_unchecked(&mut page[..]), &grefs)
            .unwrap();
        let d = Descriptor::new_checked(&page[..]).unwrap();
        assert_eq!(DescriptorRepr::parse(&d), Ok(r));
        assert!(d.grefs().eq(grefs.iter().copied()));

        let too_many = DescriptorRepr {
            numpages: MAX_PAGES + 1,
            ..r
        };
        assert!(matches!(
            too_many.emit(&mut Descriptor::new_unchecked(&mut page[..]), &grefs),
            Err(Error::TooMany { .. })
        ));
        assert!(matches!(
            r.emit(&mut Descriptor::new_unchecked(&mut page[..]), &grefs[1..]),
            Err(Error::BadField { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..PAGE_SIZE + 64)) {
            if let Ok(d) = Descriptor::new_checked(&bytes[..]) {
                if let Ok(r) = DescriptorRepr::parse(&d) {
                    prop_assert!(r.buffer_len() <= bytes.len());
                    prop_assert_eq!(d.grefs().count() as u32, r.numpages);
                }
            }
        }

        #[test]
        fn emit_then_parse_round_trips(
            owner in any::<u16>(), member in any::<u16>(), port in any::<u32>(),
            grefs in proptest::collection::vec(any::<u32>(), 1..=MAX_PAGES as usize),
        ) {
            let grefs: alloc::vec::Vec<GrantRef> = grefs.into_iter().map(GrantRef).collect();
            let r = DescriptorRepr { owner, member, numpages: grefs.len() as u32, port: Port(port) };
            let mut page = [0u8; PAGE_SIZE];
            r.emit(&mut Descriptor::new_unchecked(&mut page[..]), &grefs).unwrap();
            let d = Descriptor::new_checked(&page[..]).unwrap();
            prop_assert_eq!(DescriptorRepr::parse(&d), Ok(r));
            prop_assert!(d.grefs().eq(grefs.iter().copied()));
        }
    }
}
