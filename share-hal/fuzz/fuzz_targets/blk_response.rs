//! A block member parsing responses from its server, and the server's
//! control area. Input: a response slot, also tried as a control area.
#![no_main]

use libfuzzer_sys::fuzz_target;
use share_hal::wire::blk::{
    Control, ControlRepr, Response, ResponseRepr, CONTROL_LEN, RESPONSE_SIZE,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Response::new_checked(data) {
        if let Ok(p) = ResponseRepr::parse(&r) {
            let mut out = [0u8; RESPONSE_SIZE];
            p.emit(&mut Response::new_unchecked(&mut out[..])).unwrap();
            assert_eq!(
                ResponseRepr::parse(&Response::new_unchecked(&out[..])),
                Ok(p)
            );
            assert_eq!(p.id, r.id());
        }
    }
    if let Ok(c) = Control::new_checked(data) {
        if let Ok(p) = ControlRepr::parse(&c) {
            assert!(p.capacity <= u64::MAX / 512);
            let mut out = [0u8; CONTROL_LEN];
            p.emit(&mut Control::new_unchecked(&mut out[..])).unwrap();
            assert_eq!(ControlRepr::parse(&Control::new_unchecked(&out[..])), Ok(p));
        }
    }
});
