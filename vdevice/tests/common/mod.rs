//! What the simulation tests of the tool share: a `Lookup` over the
//! bootstrap values the test's domains published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use share_hal::platform::DomId;
use share_hal::wire::vdevice::Bootstrap;
use vdevice::{Lookup, ToolError};

#[derive(Clone, Default)]
pub struct Published(pub Arc<Mutex<HashMap<DomId, Bootstrap>>>);

impl Lookup for Published {
    fn bootstrap(&mut self, domid: DomId) -> Result<Bootstrap, ToolError> {
        self.0
            .lock()
            .unwrap()
            .get(&domid)
            .copied()
            .ok_or(ToolError::NoBootstrap {
                domid,
                detail: "not published".into(),
            })
    }
}
