//! The self-test protocol between the PVH self-test image and dom0's
//! `share-selftest-dom0` (share-hal/src/xen/SELFTEST.md): key names,
//! patterns and the parsing of what dom0 publishes, platform-free so the
//! host tests check it.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
