//! The userspace member: the program through which a Linux domain (or a
//! simulated domain on the host) takes part in xen-share without kernel
//! modules.
//!
//! It owns the domain's vdevice page ([`member::Member`]), applies dom0's
//! entries one at a time ([`dispatch`]), and plugs each network share it
//! joins into a TAP device with the kernel's offload header ([`port`],
//! [`tap`], [`vnet`]), so the Linux network stack sits on top. Platforms:
//! the host simulation (`share_sim`) and Linux on Xen
//! (`share_linux`, with the bootstrap key in xenstore through
//! [`xenbus`]).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod disk;
pub mod dispatch;
pub mod fuse;
pub mod host;
pub mod loopdev;
pub mod member;
pub mod port;
pub mod tap;
pub mod vnet;
pub mod xenbus;
