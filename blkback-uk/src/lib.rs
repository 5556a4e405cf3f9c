//! blkback-uk: the disk server ("xensblk").
//!
//! The request handling lives here, generic over the share-hal platform
//! traits and over a [`store::Store`]; the PVH image and the host program
//! `blkback-file` wrap it.
//!
//! - [`server`]: serves blk shares, one per (disk, member);
//! - [`store`]: what the server needs from storage; [`ram`] (volatile),
//!   with feature `host`, [`file`] (a file on the host, durable), and with
//!   feature `vbd`, `vbd` (the PVH image's own Xen disks, durable in dom0);
//! - [`wiring`]: dom0's vdevice changes applied to the server;
//! - [`client`]: the member side (tests, the userspace member);
//! - with feature `hostile` (tests only, never shipped), `hostile`: a
//!   server that lies to its members on command.
#![cfg_attr(not(any(test, feature = "host")), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod client;
#[cfg(feature = "host")]
pub mod file;
#[cfg(feature = "hostile")]
pub mod hostile;
pub mod ram;
pub mod server;
pub mod store;
#[cfg(all(feature = "vbd", target_arch = "x86_64"))]
pub mod vbd;
pub mod wiring;

pub use server::{Server, ServerConfig};
pub use store::Store;
