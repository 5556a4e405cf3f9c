//! Xen's classic PV device protocols, as our backends speak them when they
//! are themselves the frontend of a Xen backend (blkback-uk's `vbd` store
//! over dom0's `blkback`).
//!
//! Each protocol is a plain ring over a [`share_hal::SharedMem`] page,
//! generic over the platform: no hypercalls here, so tests and fuzz targets
//! drive it over any memory (a private page, the in-process platform's). The ABI
//! is in [`abi`], checked against Xen's public headers.
//!
//! - [`blkif`]: the block device ring (`io/blkif.h`).
//! - [`netif`]: the network device rings (`io/netif.h`), over the generic
//!   [`ring`] (netback-uk's uplink vifs).
//! - [`xenbus`]: finding a domain's devices and the frontend handshake's
//!   shared steps (blkback-uk's vbd store, netback-uk's vifs).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod abi;
pub mod blkif;
pub mod netif;
pub mod ring;
pub mod xenbus;
