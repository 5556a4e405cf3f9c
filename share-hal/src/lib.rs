//! The share transport.
//!
//! A *share* is a set of pages owned by one domain and granted to a set of
//! *member* domains. Members *watch* for *triggers* (event channels) and move
//! bulk data with *scatter-gather transfer* (grant copy). Everything the
//! hypervisor or the OS provides sits behind the traits of [`platform`];
//! everything else here is `no_std`, platform-free protocol logic.
//!
//! The platforms are crates of their own, beside this one in `platforms/`,
//! each implementing the traits of [`platform`]:
//! - `share-sim`: domains as ordinary Linux processes and a broker playing
//!   the hypervisor, for tests and benchmarks on any machine;
//! - `share-local`: domains in one process and one thread, for fuzzing and
//!   measuring protocol code without a broker;
//! - `share-linux`: Linux userspace on Xen (`/dev/xen/*`, `/dev/xenshare`);
//! - `share-pvh`: the Xen PVH unikernel domain (raw hypercalls; its runtime
//!   is `pvh-rt`).
//!
//! Feature `std` adds `std::error::Error` for the error types (the std
//! platforms enable it); nothing else here depends on a platform.
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

pub use error::{Error, Result};
pub use platform::{DomId, GrantRef, Port};
pub use volatile::SharedMem;
