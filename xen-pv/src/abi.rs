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
/// Indirect pages one `BLKIF_OP_INDIRECT` request may name.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
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
/// `struct blkif_request_indirect`, x86_64 layout (in a ring entry of
/// [`BLKIF_REQUEST_SIZE`] bytes; the rest of the entry is zero).
pub const BLKIF_REQUEST_INDIRECT_SIZE: usize = 64;
pub const BLKIF_INDIRECT_OPERATION: usize = 0;
pub const BLKIF_INDIRECT_INDIRECT_OP: usize = 1;
pub const BLKIF_INDIRECT_NR_SEGMENTS: usize = 2;
pub const BLKIF_INDIRECT_ID: usize = 8;
pub const BLKIF_INDIRECT_SECTOR_NUMBER: usize = 16;
pub const BLKIF_INDIRECT_HANDLE: usize = 24;
pub const BLKIF_INDIRECT_GREFS: usize = 28;
/// `struct blkif_request_segment`s one indirect page holds.
pub const BLKIF_SEGMENTS_PER_INDIRECT_PAGE: usize = 4096 / BLKIF_SEGMENT_SIZE;
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

// io/netif.h: the network device rings (`netif_tx_sring`,
// `netif_rx_sring`, one page each; the ring header as for blkif).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;
pub const NETIF_RSP_DROPPED: i16 = -2;
pub const NETIF_RSP_ERROR: i16 = -1;
pub const NETIF_RSP_OKAY: i16 = 0;
/// An extra info slot's status in the tx ring.
pub const NETIF_RSP_NULL: i16 = 1;
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 5;
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;
/// Slots a backend must accept for one packet.
pub const XEN_NETIF_NR_SLOTS_MIN: u32 = 18;
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xffff;
/// `struct netif_tx_request`: gref u32, offset u16, flags u16, id u16,
/// size u16.
pub const NETIF_TX_REQUEST_SIZE: usize = 12;
pub const NETIF_TX_REQUEST_GREF: usize = 0;
pub const NETIF_TX_REQUEST_OFFSET: usize = 4;
pub const NETIF_TX_REQUEST_FLAGS: usize = 6;
pub const NETIF_TX_REQUEST_ID: usize = 8;
pub const NETIF_TX_REQUEST_SIZE_FIELD: usize = 10;
/// `struct netif_tx_response`: id u16, status i16.
pub const NETIF_TX_RESPONSE_SIZE: usize = 4;
/// `struct netif_rx_request`: id u16, pad u16, gref u32.
pub const NETIF_RX_REQUEST_SIZE: usize = 8;
pub const NETIF_RX_REQUEST_GREF: usize = 4;
/// `struct netif_rx_response`: id u16, offset u16, flags u16, status i16.
pub const NETIF_RX_RESPONSE_SIZE: usize = 8;
pub const NETIF_RX_RESPONSE_OFFSET: usize = 2;
pub const NETIF_RX_RESPONSE_FLAGS: usize = 4;
pub const NETIF_RX_RESPONSE_STATUS: usize = 6;
/// `struct netif_extra_info`: type u8, flags u8, then (GSO) size u16,
/// type u8, pad u8, features u16.
pub const NETIF_EXTRA_INFO_SIZE: usize = 8;
/// Entries of a one-page tx ring: `__CONST_RING_SIZE(netif_tx, 4096)`.
pub const NETIF_TX_RING_SIZE: u32 = 256;
/// Entries of a one-page rx ring: `__CONST_RING_SIZE(netif_rx, 4096)`.
pub const NETIF_RX_RING_SIZE: u32 = 256;

#[cfg(test)]
#[path = "../../platforms/xen-header-check.rs"]
mod xen_headers;

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, Rust value) pairs, in the order the C program prints them.
    fn rust_layouts() -> Vec<(&'static str, usize)> {
        vec![
            ("netif_tx_request", NETIF_TX_REQUEST_SIZE),
            ("netif_tx_request.gref", NETIF_TX_REQUEST_GREF),
            ("netif_tx_request.offset", NETIF_TX_REQUEST_OFFSET),
            ("netif_tx_request.flags", NETIF_TX_REQUEST_FLAGS),
            ("netif_tx_request.id", NETIF_TX_REQUEST_ID),
            ("netif_tx_request.size", NETIF_TX_REQUEST_SIZE_FIELD),
            ("netif_tx_response", NETIF_TX_RESPONSE_SIZE),
            ("netif_rx_request", NETIF_RX_REQUEST_SIZE),
            ("netif_rx_request.gref", NETIF_RX_REQUEST_GREF),
            ("netif_rx_response", NETIF_RX_RESPONSE_SIZE),
            ("netif_rx_response.offset", NETIF_RX_RESPONSE_OFFSET),
            ("netif_rx_response.flags", NETIF_RX_RESPONSE_FLAGS),
            ("netif_rx_response.status", NETIF_RX_RESPONSE_STATUS),
            ("netif_extra_info", NETIF_EXTRA_INFO_SIZE),
            ("NETTXF_csum_blank", NETTXF_CSUM_BLANK as usize),
            ("NETTXF_data_validated", NETTXF_DATA_VALIDATED as usize),
            ("NETTXF_more_data", NETTXF_MORE_DATA as usize),
            ("NETTXF_extra_info", NETTXF_EXTRA_INFO as usize),
            ("NETRXF_data_validated", NETRXF_DATA_VALIDATED as usize),
            ("NETRXF_csum_blank", NETRXF_CSUM_BLANK as usize),
            ("NETRXF_more_data", NETRXF_MORE_DATA as usize),
            ("NETRXF_extra_info", NETRXF_EXTRA_INFO as usize),
            ("NETRXF_gso_prefix", NETRXF_GSO_PREFIX as usize),
            ("NETIF_RSP_DROPPED", 2),
            ("NETIF_RSP_ERROR", 1),
            ("NETIF_RSP_OKAY", 0),
            ("NETIF_RSP_NULL", NETIF_RSP_NULL as usize),
            (
                "XEN_NETIF_EXTRA_TYPE_GSO",
                XEN_NETIF_EXTRA_TYPE_GSO as usize,
            ),
            (
                "XEN_NETIF_EXTRA_TYPE_MAX",
                XEN_NETIF_EXTRA_TYPE_MAX as usize,
            ),
            (
                "XEN_NETIF_EXTRA_FLAG_MORE",
                XEN_NETIF_EXTRA_FLAG_MORE as usize,
            ),
            (
                "XEN_NETIF_GSO_TYPE_TCPV4",
                XEN_NETIF_GSO_TYPE_TCPV4 as usize,
            ),
            (
                "XEN_NETIF_GSO_TYPE_TCPV6",
                XEN_NETIF_GSO_TYPE_TCPV6 as usize,
            ),
            ("XEN_NETIF_NR_SLOTS_MIN", XEN_NETIF_NR_SLOTS_MIN as usize),
            ("XEN_NETIF_MAX_TX_SIZE", XEN_NETIF_MAX_TX_SIZE as usize),
            ("NETIF_TX_RING_SIZE", NETIF_TX_RING_SIZE as usize),
            ("NETIF_RX_RING_SIZE", NETIF_RX_RING_SIZE as usize),
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
            (
                "BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST",
                BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
            ),
            ("blkif_request_indirect", BLKIF_REQUEST_INDIRECT_SIZE),
            ("blkif_request_indirect.operation", BLKIF_INDIRECT_OPERATION),
            (
                "blkif_request_indirect.indirect_op",
                BLKIF_INDIRECT_INDIRECT_OP,
            ),
            (
                "blkif_request_indirect.nr_segments",
                BLKIF_INDIRECT_NR_SEGMENTS,
            ),
            ("blkif_request_indirect.id", BLKIF_INDIRECT_ID),
            (
                "blkif_request_indirect.sector_number",
                BLKIF_INDIRECT_SECTOR_NUMBER,
            ),
            ("blkif_request_indirect.handle", BLKIF_INDIRECT_HANDLE),
            (
                "blkif_request_indirect.indirect_grefs",
                BLKIF_INDIRECT_GREFS,
            ),
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
            "#include <xen/xen.h>\n#include <xen/grant_table.h>\n#include <xen/io/blkif.h>\n#include <xen/io/xenbus.h>\n#include <xen/io/netif.h>\n#define NETIF_TX_RING_SIZE __CONST_RING_SIZE(netif_tx, 4096)\n#define NETIF_RX_RING_SIZE __CONST_RING_SIZE(netif_rx, 4096)\n#define BLKIF_SRING_ENTRY_SIZE sizeof(union blkif_sring_entry)\n#define BLKIF_RING_SIZE_1_PAGE __CONST_RING_SIZE(blkif, 4096)\n",
            &rust_layouts(),
        );
    }
}
