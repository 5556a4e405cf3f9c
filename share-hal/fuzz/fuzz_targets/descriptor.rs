//! A member parsing the share descriptor its owner granted it. Input: the
//! descriptor page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use share_hal::wire::descriptor::{Descriptor, DescriptorRepr, MAX_PAGES};
use share_hal::wire::PAGE_SIZE;
use share_hal::GrantRef;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = Descriptor::new_checked(data) else {
        return;
    };
    let Ok(r) = DescriptorRepr::parse(&d) else {
        return;
    };
    assert!(r.numpages >= 1 && r.numpages <= MAX_PAGES);
    assert!(r.buffer_len() <= data.len());
    let grefs: Vec<GrantRef> = d.grefs().collect();
    assert_eq!(grefs.len(), r.numpages as usize);
    let _ = r.check_parties(0, 1);

    let mut page = vec![0u8; PAGE_SIZE];
    r.emit(&mut Descriptor::new_unchecked(&mut page[..]), &grefs)
        .unwrap();
    let again = Descriptor::new_checked(&page[..]).unwrap();
    assert_eq!(DescriptorRepr::parse(&again), Ok(r));
    assert!(again.grefs().eq(grefs.iter().copied()));
});
