/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * xen-share wire formats: the byte layouts of docs/protocol.md, for the
 * guest modules and for the userspace builds of their parsers (fuzzing,
 * the layout check). The code of record is share-hal's `wire` module;
 * guest-drivers/tests/wire-check compares every offset, size and constant
 * here with it, so a change on either side that the other lacks fails
 * `cargo xtask test`.
 *
 * Everything is little-endian. These structures describe memory a peer
 * can write at any moment: copy a structure out once (memcpy into a
 * private one), then parse the copy. Never read a field twice from a
 * shared page.
 */
#ifndef XENSHARE_WIRE_H
#define XENSHARE_WIRE_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/build_bug.h>
#define XS_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#include <linux/types.h>
#include <assert.h>
#define XS_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

#define XS_PAGE_SIZE 4096u

/* Four ASCII bytes read as a little-endian u32. */
#define XS_MAGIC(a, b, c, d) \
	((__u32)(a) | ((__u32)(b) << 8) | ((__u32)(c) << 16) | ((__u32)(d) << 24))

/* ---- Bootstrap ------------------------------------------------------- */

/* Relative to the domain's home in xenstore; value "gref=<n> port=<p>". */
#define XS_BOOTSTRAP_KEY "data/vdevice"
#define XS_BOOTSTRAP_MAX_LEN 31

/* ---- vdevice page ---------------------------------------------------- */

#define XS_VDEVICE_MAGIC XS_MAGIC('X', 'S', 'V', 'D')
#define XS_VDEVICE_VERSION 1
#define XS_VDEVICE_HEADER_LEN 64
#define XS_VDEVICE_ENTRY_LEN 32
#define XS_VDEVICE_MAX_ENTRIES 126

struct xs_vdevice_header {
	__le32 magic;
	__le16 version;
	__le16 entry_count;
	__le32 change_serial;	/* dom0; atomic, release */
	__le32 ack_serial;	/* domain; atomic, release */
	__le32 change_index;	/* dom0 */
	__le32 ack_status;	/* domain; i32 */
	__le16 domid;
	__le16 reserved0;
	__le32 stats_gref;
	__u8 reserved[32];
};

#define XS_KIND_EMPTY 0
#define XS_KIND_NET 1
#define XS_KIND_DISK 2

#define XS_ROLE_MEMBER 0
#define XS_ROLE_OWNER 1

#define XS_ENTRY_READ_ONLY 0x01
/* Port policy: network owner entries only (in a backend's page). */
#define XS_ENTRY_BIND_ADDRESSES 0x02
#define XS_ENTRY_PRIVATE 0x04
#define XS_ENTRY_PORT_POLICY 0x08	/* a port policy item; guests serve no port */
#define XS_ENTRY_UPLINK 0x10		/* a LAN's uplink; guests serve none */
#define XS_ENTRY_NET_OWNER \
	(XS_ENTRY_BIND_ADDRESSES | XS_ENTRY_PRIVATE | XS_ENTRY_PORT_POLICY | \
	 XS_ENTRY_UPLINK)
#define XS_ENTRY_FLAGS_ALL (XS_ENTRY_READ_ONLY | XS_ENTRY_NET_OWNER)

struct xs_vdevice_entry {
	__le16 kind;
	__u8 role;
	__u8 flags;
	__le32 subtype;
	__le32 numpages;
	__le16 peer;
	__le16 reserved;
	__le32 share_ref;
	__le32 status;		/* i32: 0 or a negated errno */
	__u8 param[8];
};

/* Entry status and ack_status values (negated Linux errnos). */
#define XS_STATUS_OK 0
#define XS_STATUS_ENOENT (-2)
#define XS_STATUS_EIO (-5)
#define XS_STATUS_ENOMEM (-12)
#define XS_STATUS_EBUSY (-16)
#define XS_STATUS_EEXIST (-17)
#define XS_STATUS_ENODEV (-19)
#define XS_STATUS_EINVAL (-22)
#define XS_STATUS_EOPNOTSUPP (-95)
#define XS_STATUS_ETIMEDOUT (-110)

/* ---- Share descriptor ------------------------------------------------ */

#define XS_DESCRIPTOR_MAGIC XS_MAGIC('X', 'S', 'H', 'D')
#define XS_DESCRIPTOR_VERSION 1
#define XS_DESCRIPTOR_HEADER_LEN 32
#define XS_SHARE_MAX_PAGES 1016

struct xs_descriptor {
	__le32 magic;
	__le16 version;
	__le16 flags;		/* none defined: any set bit is refused */
	__le16 owner;
	__le16 member;
	__le32 numpages;
	__le32 port;
	__u8 reserved[12];
	__le32 grefs[XS_SHARE_MAX_PAGES];
};

/* ---- Lanes ----------------------------------------------------------- */

#define XS_LANE_HEADER_LEN 256
#define XS_LANE_PROD 0
#define XS_LANE_PROD_EVENT 64
#define XS_LANE_CONS 128
#define XS_LANE_CONS_EVENT 192

/*
 * After moving an index from old to new, trigger the peer only if it
 * asked: old < event <= new in wrapping arithmetic.
 */
static inline int xs_lane_crossed(__u32 old, __u32 new_idx, __u32 event)
{
	return (__u32)(new_idx - event) < (__u32)(new_idx - old);
}

/* ---- Network share --------------------------------------------------- */

#define XS_NET_MAGIC XS_MAGIC('X', 'S', 'N', 'T')
#define XS_NET_VERSION 1
#define XS_NET_CONTROL_LEN 64
#define XS_NET_TX_LANE (XS_PAGE_SIZE - XS_LANE_HEADER_LEN)
#define XS_NET_SLOT_SIZE 2048
#define XS_NET_SLOT_HEADER_LEN 16
#define XS_NET_SLOT_DATA_MAX (XS_NET_SLOT_SIZE - XS_NET_SLOT_HEADER_LEN)
#define XS_NET_MIN_PAGES 4
#define XS_NET_MTU_MIN 68
#define XS_NET_MTU_DEFAULT 1500
#define XS_NET_MTU_STANDARD_MAX 1500
#define XS_NET_MTU_MAX 9000
#define XS_NET_FRAME_OVERHEAD 18	/* Ethernet header and one VLAN tag */
#define XS_NET_FRAME_MIN 14
#define XS_NET_GSO_MAX_FRAME (65535 + XS_NET_FRAME_OVERHEAD)
#define XS_NET_GSO_MAX_SLOTS 33
#define XS_NET_GSO_MIN_PAGES 66
/* Segments one GSO frame may make: TCP, and UDP_L4 (wire::net::gso_max_segs) */
#define XS_NET_GSO_MAX_SEGS 256
#define XS_NET_GSO_MAX_UDP_SEGS 64

/* features_offered / features_accepted, and the entry's subtype */
#define XS_NET_F_CSUM_BLANK (1u << 0)
#define XS_NET_F_DATA_VALIDATED (1u << 1)
#define XS_NET_F_JUMBO (1u << 2)
#define XS_NET_F_GSO (1u << 3)
#define XS_NET_F_ALL 0xfu

#define XS_NET_LINK_DOWN 0
#define XS_NET_LINK_UP 1
#define XS_NET_MEMBER_CLOSED 0
#define XS_NET_MEMBER_READY 1

/*
 * Slots per lane for a share of numpages pages: the largest power of two S
 * with S + 2 <= numpages; 0 if numpages is out of range.
 */
static inline __u32 xs_net_slots(__u32 numpages)
{
	__u32 s = 1;

	if (numpages < XS_NET_MIN_PAGES || numpages > XS_SHARE_MAX_PAGES)
		return 0;
	while (2 * s + 2 <= numpages)
		s *= 2;
	return s;
}

/* Byte offsets in the share, given S = xs_net_slots(numpages). */
static inline __u32 xs_net_tx_slots_off(__u32 s) { (void)s; return XS_PAGE_SIZE; }
static inline __u32 xs_net_rx_lane_off(__u32 s) { return (1 + s / 2) * XS_PAGE_SIZE + XS_NET_TX_LANE; }
static inline __u32 xs_net_rx_slots_off(__u32 s) { return (2 + s / 2) * XS_PAGE_SIZE; }

struct xs_net_control {
	__le32 magic;
	__le16 version;
	__le16 reserved0;
	__le32 features_offered;	/* switch */
	__le32 features_accepted;	/* member */
	__u8 mac[6];			/* switch */
	__le16 mtu;			/* switch */
	__le32 link_state;		/* switch; atomic */
	__le32 member_state;		/* member; atomic */
	__u8 reserved1[32];
};

#define XS_NET_SLOT_MORE (1u << 0)
#define XS_NET_SLOT_CSUM_BLANK (1u << 1)
#define XS_NET_SLOT_DATA_VALIDATED (1u << 2)
#define XS_NET_SLOT_FLAGS_ALL 0x7u

#define XS_NET_GSO_NONE 0
#define XS_NET_GSO_TCPV4 1
#define XS_NET_GSO_TCPV6 2
#define XS_NET_GSO_UDP_L4 3
#define XS_NET_GSO_TYPE_MAX XS_NET_GSO_UDP_L4
#define XS_NET_GSO_FLAG_ECN (1u << 0)
#define XS_NET_GSO_FLAGS_ALL 0x1u

struct xs_net_slot_header {
	__le16 len;		/* 1..=2032 */
	__le16 flags;
	__le16 csum_start;
	__le16 csum_offset;
	__le16 gso_size;
	__u8 gso_type;
	__u8 gso_flags;
	__le32 reserved;
};

/* ---- Block share ----------------------------------------------------- */

#define XS_BLK_MAGIC XS_MAGIC('X', 'S', 'B', 'K')
#define XS_BLK_VERSION 1
#define XS_BLK_SECTOR_SIZE 512
#define XS_BLK_SECTORS_PER_PAGE 8
#define XS_BLK_CONTROL_LEN 64
#define XS_BLK_REQUEST_LANE (XS_PAGE_SIZE - XS_LANE_HEADER_LEN)
#define XS_BLK_REQUEST_SIZE 128
#define XS_BLK_RESPONSE_SIZE 16
#define XS_BLK_SEGMENT_LEN 8
#define XS_BLK_MAX_INLINE_SEGMENTS 13
#define XS_BLK_MAX_INDIRECT_PAGES 24
#define XS_BLK_SEGMENTS_PER_INDIRECT_PAGE 512
#define XS_BLK_MAX_INDIRECT_SEGMENTS 12288
#define XS_BLK_MIN_PAGES 3
#define XS_BLK_MIN_SLOTS 32

/*
 * Slots per lane for a share of numpages pages: the largest power of two S,
 * at least 32, with 4096 + 144 S + 256 <= 4096 numpages; 0 if none fits.
 */
static inline __u32 xs_blk_slots(__u32 numpages)
{
	__u64 room;
	__u32 s = XS_BLK_MIN_SLOTS;

	if (numpages < XS_BLK_MIN_PAGES || numpages > XS_SHARE_MAX_PAGES)
		return 0;
	room = (__u64)numpages * XS_PAGE_SIZE - XS_PAGE_SIZE - XS_LANE_HEADER_LEN;
	if ((__u64)s * (XS_BLK_REQUEST_SIZE + XS_BLK_RESPONSE_SIZE) > room)
		return 0;
	while ((__u64)2 * s * (XS_BLK_REQUEST_SIZE + XS_BLK_RESPONSE_SIZE) <= room)
		s *= 2;
	return s;
}

/* Byte offsets in the share, given S = xs_blk_slots(numpages). */
static inline __u32 xs_blk_request_slots_off(__u32 s) { (void)s; return XS_PAGE_SIZE; }
static inline __u32 xs_blk_response_lane_off(__u32 s) { return XS_PAGE_SIZE + s * XS_BLK_REQUEST_SIZE; }
static inline __u32 xs_blk_response_slots_off(__u32 s) { return xs_blk_response_lane_off(s) + XS_LANE_HEADER_LEN; }

#define XS_BLK_F_FLUSH (1u << 0)
#define XS_BLK_F_DISCARD (1u << 1)
#define XS_BLK_F_FUA (1u << 2)
#define XS_BLK_F_INDIRECT (1u << 3)
#define XS_BLK_F_ALL 0xfu

#define XS_BLK_READ_ONLY (1u << 0)	/* control flags */

struct xs_blk_control {
	__le32 magic;
	__le16 version;
	__le16 sector_size;
	__le32 features;
	__le32 flags;
	__le64 capacity;	/* 512-byte sectors */
	__le16 max_indirect_segments;
	__u8 reserved[38];
} __attribute__((packed));

#define XS_BLK_OP_READ 0
#define XS_BLK_OP_WRITE 1
#define XS_BLK_OP_FLUSH 2
#define XS_BLK_OP_DISCARD 3
#define XS_BLK_OP_INDIRECT 4

#define XS_BLK_REQ_FUA (1u << 0)
#define XS_BLK_REQ_FLAGS_ALL 0x1u

struct xs_blk_segment {
	__le32 gref;
	__u8 first_sect;
	__u8 last_sect;		/* inclusive; first_sect <= last_sect <= 7 */
	__le16 reserved;
};

struct xs_blk_request {
	__u8 op;
	__u8 flags;
	__le16 nr_segments;
	__le32 reserved0;
	__le64 id;
	__le64 sector;
	union {
		struct xs_blk_segment seg[XS_BLK_MAX_INLINE_SEGMENTS];
		struct {
			__le64 nr_sectors;
		} discard;
		struct {
			__u8 op;	/* READ or WRITE */
			__u8 reserved[7];
			__le32 grefs[XS_BLK_MAX_INDIRECT_PAGES];
		} indirect;
	} u;
};

#define XS_BLK_STATUS_OKAY 0
#define XS_BLK_STATUS_ERROR (-1)
#define XS_BLK_STATUS_NOT_SUPPORTED (-2)

struct xs_blk_response {
	__le64 id;
	__u8 op;
	__u8 reserved0;
	__le16 status;		/* i16 */
	__le32 reserved1;
};

XS_STATIC_ASSERT(sizeof(struct xs_vdevice_header) == XS_VDEVICE_HEADER_LEN, "vdevice header");
XS_STATIC_ASSERT(sizeof(struct xs_vdevice_entry) == XS_VDEVICE_ENTRY_LEN, "vdevice entry");
XS_STATIC_ASSERT(sizeof(struct xs_descriptor) == XS_PAGE_SIZE, "descriptor");
XS_STATIC_ASSERT(sizeof(struct xs_net_control) == XS_NET_CONTROL_LEN, "net control");
XS_STATIC_ASSERT(sizeof(struct xs_net_slot_header) == XS_NET_SLOT_HEADER_LEN, "net slot");
XS_STATIC_ASSERT(sizeof(struct xs_blk_control) == XS_BLK_CONTROL_LEN, "blk control");
XS_STATIC_ASSERT(sizeof(struct xs_blk_request) == XS_BLK_REQUEST_SIZE, "blk request");
XS_STATIC_ASSERT(sizeof(struct xs_blk_response) == XS_BLK_RESPONSE_SIZE, "blk response");

#endif /* XENSHARE_WIRE_H */
