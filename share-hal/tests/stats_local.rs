//! A domain's counter page read by dom0, on the in-process platform.
use std::sync::atomic::Ordering;

use share_hal::error::Error;
use share_hal::platform::{Access, GrantTable, Mapping};
use share_hal::stats::*;
use share_hal::wire::stats::{self, COUNTERS};
use share_local::LocalHost;

#[test]
fn dom0_reads_what_the_domain_wrote() {
    let host = LocalHost::new();
    let mut d = host.domain(5);
    let mut dom0 = host.domain(0);
    let mut page = StatsPage::create(&mut d, 4).unwrap();
    page.update(|i| (i == 2).then_some([7; COUNTERS])).unwrap();
    let m = dom0.map(5, &[page.gref()], Access::ReadOnly).unwrap();
    let r = read(m.mem()).unwrap();
    assert_eq!(r.entries.len(), 4);
    assert_eq!(r.entries[2], [7; COUNTERS]);
    assert_eq!(r.sequence, 2);
    // Mid-update (odd), for good: the reader gives up, boundedly.
    m.mem()
        .store_u32(stats::field::SEQUENCE, 3, Ordering::Relaxed)
        .unwrap();
    assert!(matches!(read(m.mem()), Err(Error::Protocol { .. })));
    // Not writable through a read-only grant.
    assert!(dom0.map(5, &[page.gref()], Access::ReadWrite).is_err());
}
