//! The vdevice page as either side reads it: dom0 parses a domain's header
//! and entries, the domain parses the entry dom0's change names, dom0
//! parses the xenstore bootstrap value. Input: the page (or the value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use share_hal::wire::vdevice::{
    entry_offset, Bootstrap, Entry, EntryRepr, Header, HeaderRepr, UplinkRepr, ENTRY_LEN,
    MAX_ENTRIES,
};
use share_hal::wire::PAGE_SIZE;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Bootstrap::parse(data) {
        // One spelling per value: what parses prints back identically.
        assert_eq!(b.to_string().as_bytes(), data);
    }

    let Ok(h) = Header::new_checked(data) else {
        return;
    };
    let Ok(header) = HeaderRepr::parse(&h) else {
        return;
    };
    assert!(header.entry_count >= 1 && header.entry_count <= MAX_ENTRIES);
    let mut out = [0u8; 64];
    header
        .emit(&mut Header::new_unchecked(&mut out[..]))
        .unwrap();
    assert_eq!(
        HeaderRepr::parse(&Header::new_unchecked(&out[..])),
        Ok(header)
    );

    // The domain's path: the change index is dom0's, the count our own.
    if let Ok(at) = entry_offset(header.change_index, header.entry_count) {
        assert!(at + ENTRY_LEN <= PAGE_SIZE);
    }
    for i in 0..u32::from(header.entry_count) {
        let at = entry_offset(i, header.entry_count).unwrap();
        let Some(bytes) = data.get(at..at + ENTRY_LEN) else {
            break;
        };
        if let Ok(e) = EntryRepr::parse(&Entry::new_checked(bytes).unwrap()) {
            let mut out = [0u8; ENTRY_LEN];
            e.emit(&mut Entry::new_unchecked(&mut out[..])).unwrap();
            assert_eq!(EntryRepr::parse(&Entry::new_unchecked(&out[..])), Ok(e));
            // An uplink has one spelling: what parses emits back as read.
            if let Some(Ok(up)) = UplinkRepr::parse(&e) {
                assert_eq!(up.entry(), EntryRepr { status: 0, ..e });
            }
        }
    }
});
