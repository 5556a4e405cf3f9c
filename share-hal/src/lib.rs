//! The share transport.
//!
//! A *share* is a set of pages owned by one domain and granted to a set of
//! *member* domains. Members *watch* for *triggers* (event channels) and move
//! bulk data with *scatter-gather transfer* (grant copy). Everything the
//! hypervisor or the OS provides sits behind the traits of [`platform`];
//! everything else here is `no_std`, platform-free protocol logic.
//!
//! Platforms:
//! - [`sim`] (feature `sim`): domains as ordinary Linux processes, for tests
//!   and benchmarks on any machine.
//! - [`local`] (feature `local`): domains in one process and one thread,
//!   for fuzzing and measuring protocol code without a broker.
//! - Xen PVH (the unikernel runtime) and Linux userspace on Xen (`/dev/xen/*`)
//!   implement the same traits.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod error;
pub mod frames;
pub mod lane;
pub mod platform;
pub mod share;
pub mod stats;
pub mod vdevice;
pub mod volatile;
pub mod wire;

#[cfg(any(feature = "local", test))]
pub mod local;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(feature = "linux")]
pub mod linux;

#[cfg(all(feature = "xen-pvh", target_arch = "x86_64"))]
pub mod xen;

pub use error::{Error, Result};
pub use platform::{DomId, GrantRef, Port};
pub use volatile::SharedMem;
