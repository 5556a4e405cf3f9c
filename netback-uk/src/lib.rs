//! netback-uk: a unikernel domain serving a multi-way LAN ("xensnet").
//!
//! Every member domain is a port of a switch. The switch logic lives here,
//! generic over the share-hal platform traits; the PVH image wraps it.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod csum_setup;
pub mod fdb;
#[cfg(feature = "hostile")]
pub mod hostile;
pub mod mgmt;
pub mod offload;
pub mod policy;
pub mod service;
pub mod snoop;
pub mod switch;
#[cfg(any(test, feature = "sim", feature = "testing"))]
pub mod testing;
#[cfg(any(test, feature = "vif"))]
pub mod vif;
