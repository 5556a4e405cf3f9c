//! Xen's public ABI of the classic PV device protocols, as far as our
//! frontends use it: `io/xenbus.h` (the device states) and `io/blkif.h`
//! with `io/ring.h` (the block ring).
//!
//! Transcribed from Xen's public headers (`/usr/include/xen/io/*.h` of
//! Debian's `libxen-dev`, the authority), and checked against the C
//! compiler reading the installed headers (test
//! `layouts_match_the_c_compiler`).

// io/xenbus.h: `enum xenbus_state`, as written in a device's `state` key.
pub const XENBUS_STATE_UNKNOWN: u32 = 0;
pub const XENBUS_STATE_INITIALISING: u32 = 1;
pub const XENBUS_STATE_INIT_WAIT: u32 = 2;
pub const XENBUS_STATE_INITIALISED: u32 = 3;
pub const XENBUS_STATE_CONNECTED: u32 = 4;
pub const XENBUS_STATE_CLOSING: u32 = 5;
pub const XENBUS_STATE_CLOSED: u32 = 6;

// io/blkif.h, io/ring.h: the block device ring (`blkif_sring` in one page).
pub const BLKIF_OP_READ: u8 = 0;
pub const BLKIF_OP_WRITE: u8 = 1;
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
pub const BLKIF_OP_DISCARD: u8 = 5;
pub const BLKIF_OP_INDIRECT: u8 = 6;
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
pub const BLKIF_RSP_OKAY: i16 = 0;
pub const BLKIF_RSP_ERROR: i16 = -1;
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
/// `info` bit of the backend: the disk is read-only.
pub const VDISK_READONLY: u32 = 0x4;
/// `sizeof(struct blkif_request_segment)`: gref u32, first_sect u8,
/// last_sect u8, 2 bytes of padding.
pub const BLKIF_SEGMENT_SIZE: usize = 8;
pub const BLKIF_SEGMENT_GREF: usize = 0;
pub const BLKIF_SEGMENT_FIRST_SECT: usize = 4;
pub const BLKIF_SEGMENT_LAST_SECT: usize = 5;
/// `struct blkif_request`, x86_64 layout.
pub const BLKIF_REQUEST_SIZE: usize = 112;
pub const BLKIF_REQUEST_OPERATION: usize = 0;
pub const BLKIF_REQUEST_NR_SEGMENTS: usize = 1;
pub const BLKIF_REQUEST_HANDLE: usize = 2;
pub const BLKIF_REQUEST_ID: usize = 8;
pub const BLKIF_REQUEST_SECTOR_NUMBER: usize = 16;
pub const BLKIF_REQUEST_SEG: usize = 24;
/// `struct blkif_response`.
pub const BLKIF_RESPONSE_SIZE: usize = 16;
pub const BLKIF_RESPONSE_ID: usize = 0;
pub const BLKIF_RESPONSE_OPERATION: usize = 8;
pub const BLKIF_RESPONSE_STATUS: usize = 10;
/// `struct blkif_sring`: four indexes, padding, then the entries (each the
/// size of the larger of request and response).
pub const BLKIF_SRING_REQ_PROD: usize = 0;
pub const BLKIF_SRING_REQ_EVENT: usize = 4;
pub const BLKIF_SRING_RSP_PROD: usize = 8;
pub const BLKIF_SRING_RSP_EVENT: usize = 12;
pub const BLKIF_SRING_RING: usize = 64;
pub const BLKIF_SRING_ENTRY_SIZE: usize = 112;
/// `__CONST_RING_SIZE(blkif, 4096)`: entries of a one-page ring.
pub const BLKIF_RING_SIZE_1_PAGE: u32 = 32;

#[cfg(test)]
#[path = "../../platforms/xen-header-check.rs"]
mod xen_headers;

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, Rust value) pairs, in the order the C program prints them.
    fn rust_layouts() -> Vec<(&'static str, usize)> {
        vec![
            (
                "XenbusStateInitialising",
                XENBUS_STATE_INITIALISING as usize,
            ),
            ("XenbusStateInitWait", XENBUS_STATE_INIT_WAIT as usize),
            ("XenbusStateInitialised", XENBUS_STATE_INITIALISED as usize),
            ("XenbusStateConnected", XENBUS_STATE_CONNECTED as usize),
            ("XenbusStateClosing", XENBUS_STATE_CLOSING as usize),
            ("XenbusStateClosed", XENBUS_STATE_CLOSED as usize),
            ("BLKIF_OP_READ", BLKIF_OP_READ as usize),
            ("BLKIF_OP_WRITE", BLKIF_OP_WRITE as usize),
            ("BLKIF_OP_WRITE_BARRIER", BLKIF_OP_WRITE_BARRIER as usize),
            (
                "BLKIF_OP_FLUSH_DISKCACHE",
                BLKIF_OP_FLUSH_DISKCACHE as usize,
            ),
            ("BLKIF_OP_DISCARD", BLKIF_OP_DISCARD as usize),
            ("BLKIF_OP_INDIRECT", BLKIF_OP_INDIRECT as usize),
            (
                "BLKIF_MAX_SEGMENTS_PER_REQUEST",
                BLKIF_MAX_SEGMENTS_PER_REQUEST,
            ),
            ("BLKIF_RSP_ERROR", (-BLKIF_RSP_ERROR) as usize),
            ("BLKIF_RSP_EOPNOTSUPP", (-BLKIF_RSP_EOPNOTSUPP) as usize),
            ("VDISK_READONLY", VDISK_READONLY as usize),
            ("blkif_request_segment", BLKIF_SEGMENT_SIZE),
            ("blkif_request_segment.gref", BLKIF_SEGMENT_GREF),
            ("blkif_request_segment.first_sect", BLKIF_SEGMENT_FIRST_SECT),
            ("blkif_request_segment.last_sect", BLKIF_SEGMENT_LAST_SECT),
            ("blkif_request", BLKIF_REQUEST_SIZE),
            ("blkif_request.operation", BLKIF_REQUEST_OPERATION),
            ("blkif_request.nr_segments", BLKIF_REQUEST_NR_SEGMENTS),
            ("blkif_request.handle", BLKIF_REQUEST_HANDLE),
            ("blkif_request.id", BLKIF_REQUEST_ID),
            ("blkif_request.sector_number", BLKIF_REQUEST_SECTOR_NUMBER),
            ("blkif_request.seg", BLKIF_REQUEST_SEG),
            ("blkif_response", BLKIF_RESPONSE_SIZE),
            ("blkif_response.id", BLKIF_RESPONSE_ID),
            ("blkif_response.operation", BLKIF_RESPONSE_OPERATION),
            ("blkif_response.status", BLKIF_RESPONSE_STATUS),
            ("blkif_sring.req_prod", BLKIF_SRING_REQ_PROD),
            ("blkif_sring.req_event", BLKIF_SRING_REQ_EVENT),
            ("blkif_sring.rsp_prod", BLKIF_SRING_RSP_PROD),
            ("blkif_sring.rsp_event", BLKIF_SRING_RSP_EVENT),
            ("blkif_sring.ring", BLKIF_SRING_RING),
            ("BLKIF_SRING_ENTRY_SIZE", BLKIF_SRING_ENTRY_SIZE),
            ("BLKIF_RING_SIZE_1_PAGE", BLKIF_RING_SIZE_1_PAGE as usize),
        ]
    }

    #[test]
    fn layouts_match_the_c_compiler() {
        xen_headers::check_against_headers(
            "xen-pv",
            "#include <xen/xen.h>\n#include <xen/grant_table.h>\n#include <xen/io/blkif.h>\n#include <xen/io/xenbus.h>\n#define BLKIF_SRING_ENTRY_SIZE sizeof(union blkif_sring_entry)\n#define BLKIF_RING_SIZE_1_PAGE __CONST_RING_SIZE(blkif, 4096)\n",
            &rust_layouts(),
        );
    }
}
