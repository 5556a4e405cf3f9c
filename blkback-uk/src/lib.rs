//! blkback-uk: a unikernel domain serving disks ("xensblk").
//!
//! The request handling lives here, generic over the share-hal platform
//! traits; the PVH image wraps it.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
