//! The simulation broker decoding a datagram from a domain process (any
//! byte a domain sends is hostile). Input: the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use share_sim::proto::{Request, MAX_COPY_SEGS, MAX_MSG, MAX_PAGES_PER_REQ};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = Request::decode(data) else {
        return;
    };
    // Counts are bounded before anything is allocated.
    match &req {
        Request::Free { frames } => assert!(frames.len() <= MAX_PAGES_PER_REQ),
        Request::Map { grefs, .. } => assert!(grefs.len() <= MAX_PAGES_PER_REQ),
        Request::Copy { segs } => assert!(segs.len() <= MAX_COPY_SEGS),
        _ => {}
    }
    // What decodes encodes to a datagram that decodes to the same request.
    let mut out = Vec::new();
    req.encode(&mut out);
    assert!(out.len() <= MAX_MSG);
    assert_eq!(Request::decode(&out), Ok(req));
});
