// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * Prints every offset, size and constant of xenshare/wire.h, one
 * "name value..." line each, for share-hal/tests/c_wire_header.rs to
 * compare with share-hal's wire module (the code of record). Also prints
 * the lane layouts the header computes for every numpages.
 */
#include <stddef.h>
#include <stdio.h>
#include "xenshare/wire.h"

#define FIELD(s, f) \
	printf("%s.%s %zu %zu\n", #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f))
#define SIZE(s) printf("sizeof.%s %zu\n", #s, sizeof(struct s))
#define CONST(n) printf("%s %lld\n", #n, (long long)(n))

static void vdevice(void)
{
	SIZE(xs_vdevice_header);
	FIELD(xs_vdevice_header, magic);
	FIELD(xs_vdevice_header, version);
	FIELD(xs_vdevice_header, entry_count);
	FIELD(xs_vdevice_header, change_serial);
	FIELD(xs_vdevice_header, ack_serial);
	FIELD(xs_vdevice_header, change_index);
	FIELD(xs_vdevice_header, ack_status);
	FIELD(xs_vdevice_header, domid);
	FIELD(xs_vdevice_header, reserved0);
	FIELD(xs_vdevice_header, stats_gref);
	FIELD(xs_vdevice_header, reserved);
	SIZE(xs_vdevice_entry);
	FIELD(xs_vdevice_entry, kind);
	FIELD(xs_vdevice_entry, role);
	FIELD(xs_vdevice_entry, flags);
	FIELD(xs_vdevice_entry, subtype);
	FIELD(xs_vdevice_entry, numpages);
	FIELD(xs_vdevice_entry, peer);
	FIELD(xs_vdevice_entry, reserved);
	FIELD(xs_vdevice_entry, share_ref);
	FIELD(xs_vdevice_entry, status);
	FIELD(xs_vdevice_entry, param);
	CONST(XS_VDEVICE_MAGIC);
	CONST(XS_VDEVICE_VERSION);
	CONST(XS_VDEVICE_HEADER_LEN);
	CONST(XS_VDEVICE_ENTRY_LEN);
	CONST(XS_VDEVICE_MAX_ENTRIES);
	CONST(XS_BOOTSTRAP_MAX_LEN);
	printf("XS_BOOTSTRAP_KEY %s\n", XS_BOOTSTRAP_KEY);
	CONST(XS_KIND_EMPTY);
	CONST(XS_KIND_NET);
	CONST(XS_KIND_DISK);
	CONST(XS_ROLE_MEMBER);
	CONST(XS_ROLE_OWNER);
	CONST(XS_ENTRY_READ_ONLY);
	CONST(XS_ENTRY_BIND_ADDRESSES);
	CONST(XS_ENTRY_PRIVATE);
	CONST(XS_ENTRY_PORT_POLICY);
	CONST(XS_ENTRY_UPLINK);
	CONST(XS_ENTRY_NET_OWNER);
	CONST(XS_ENTRY_FLAGS_ALL);
	CONST(XS_STATUS_OK);
	CONST(XS_STATUS_ENOENT);
	CONST(XS_STATUS_EIO);
	CONST(XS_STATUS_ENOMEM);
	CONST(XS_STATUS_EBUSY);
	CONST(XS_STATUS_EEXIST);
	CONST(XS_STATUS_ENODEV);
	CONST(XS_STATUS_EINVAL);
	CONST(XS_STATUS_EOPNOTSUPP);
	CONST(XS_STATUS_ETIMEDOUT);
}

static void descriptor(void)
{
	SIZE(xs_descriptor);
	FIELD(xs_descriptor, magic);
	FIELD(xs_descriptor, version);
	FIELD(xs_descriptor, flags);
	FIELD(xs_descriptor, owner);
	FIELD(xs_descriptor, member);
	FIELD(xs_descriptor, numpages);
	FIELD(xs_descriptor, port);
	FIELD(xs_descriptor, reserved);
	FIELD(xs_descriptor, grefs);
	CONST(XS_DESCRIPTOR_MAGIC);
	CONST(XS_DESCRIPTOR_VERSION);
	CONST(XS_DESCRIPTOR_HEADER_LEN);
	CONST(XS_SHARE_MAX_PAGES);
	CONST(XS_LANE_HEADER_LEN);
	CONST(XS_LANE_PROD);
	CONST(XS_LANE_PROD_EVENT);
	CONST(XS_LANE_CONS);
	CONST(XS_LANE_CONS_EVENT);
}

static void net(void)
{
	SIZE(xs_net_control);
	FIELD(xs_net_control, magic);
	FIELD(xs_net_control, version);
	FIELD(xs_net_control, reserved0);
	FIELD(xs_net_control, features_offered);
	FIELD(xs_net_control, features_accepted);
	FIELD(xs_net_control, mac);
	FIELD(xs_net_control, mtu);
	FIELD(xs_net_control, link_state);
	FIELD(xs_net_control, member_state);
	FIELD(xs_net_control, reserved1);
	SIZE(xs_net_slot_header);
	FIELD(xs_net_slot_header, len);
	FIELD(xs_net_slot_header, flags);
	FIELD(xs_net_slot_header, csum_start);
	FIELD(xs_net_slot_header, csum_offset);
	FIELD(xs_net_slot_header, gso_size);
	FIELD(xs_net_slot_header, gso_type);
	FIELD(xs_net_slot_header, gso_flags);
	FIELD(xs_net_slot_header, reserved);
	CONST(XS_NET_MAGIC);
	CONST(XS_NET_VERSION);
	CONST(XS_NET_CONTROL_LEN);
	CONST(XS_NET_TX_LANE);
	CONST(XS_NET_SLOT_SIZE);
	CONST(XS_NET_SLOT_HEADER_LEN);
	CONST(XS_NET_SLOT_DATA_MAX);
	CONST(XS_NET_MIN_PAGES);
	CONST(XS_NET_MTU_MIN);
	CONST(XS_NET_MTU_DEFAULT);
	CONST(XS_NET_MTU_STANDARD_MAX);
	CONST(XS_NET_MTU_MAX);
	CONST(XS_NET_FRAME_OVERHEAD);
	CONST(XS_NET_FRAME_MIN);
	CONST(XS_NET_GSO_MAX_FRAME);
	CONST(XS_NET_GSO_MAX_SLOTS);
	CONST(XS_NET_GSO_MAX_SEGS);
	CONST(XS_NET_GSO_MAX_UDP_SEGS);
	CONST(XS_NET_GSO_MIN_PAGES);
	CONST(XS_NET_F_CSUM_BLANK);
	CONST(XS_NET_F_DATA_VALIDATED);
	CONST(XS_NET_F_JUMBO);
	CONST(XS_NET_F_GSO);
	CONST(XS_NET_F_ALL);
	CONST(XS_NET_LINK_DOWN);
	CONST(XS_NET_LINK_UP);
	CONST(XS_NET_MEMBER_CLOSED);
	CONST(XS_NET_MEMBER_READY);
	CONST(XS_NET_SLOT_MORE);
	CONST(XS_NET_SLOT_CSUM_BLANK);
	CONST(XS_NET_SLOT_DATA_VALIDATED);
	CONST(XS_NET_SLOT_FLAGS_ALL);
	CONST(XS_NET_GSO_NONE);
	CONST(XS_NET_GSO_TCPV4);
	CONST(XS_NET_GSO_TCPV6);
	CONST(XS_NET_GSO_UDP_L4);
	CONST(XS_NET_GSO_TYPE_MAX);
	CONST(XS_NET_GSO_FLAG_ECN);
	CONST(XS_NET_GSO_FLAGS_ALL);
}

static void blk(void)
{
	SIZE(xs_blk_control);
	FIELD(xs_blk_control, magic);
	FIELD(xs_blk_control, version);
	FIELD(xs_blk_control, sector_size);
	FIELD(xs_blk_control, features);
	FIELD(xs_blk_control, flags);
	FIELD(xs_blk_control, capacity);
	FIELD(xs_blk_control, max_indirect_segments);
	FIELD(xs_blk_control, reserved);
	SIZE(xs_blk_request);
	FIELD(xs_blk_request, op);
	FIELD(xs_blk_request, flags);
	FIELD(xs_blk_request, nr_segments);
	FIELD(xs_blk_request, reserved0);
	FIELD(xs_blk_request, id);
	FIELD(xs_blk_request, sector);
	FIELD(xs_blk_request, u.seg);
	FIELD(xs_blk_request, u.discard.nr_sectors);
	FIELD(xs_blk_request, u.indirect.op);
	FIELD(xs_blk_request, u.indirect.reserved);
	FIELD(xs_blk_request, u.indirect.grefs);
	SIZE(xs_blk_segment);
	FIELD(xs_blk_segment, gref);
	FIELD(xs_blk_segment, first_sect);
	FIELD(xs_blk_segment, last_sect);
	FIELD(xs_blk_segment, reserved);
	SIZE(xs_blk_response);
	FIELD(xs_blk_response, id);
	FIELD(xs_blk_response, op);
	FIELD(xs_blk_response, reserved0);
	FIELD(xs_blk_response, status);
	FIELD(xs_blk_response, reserved1);
	CONST(XS_BLK_MAGIC);
	CONST(XS_BLK_VERSION);
	CONST(XS_BLK_SECTOR_SIZE);
	CONST(XS_BLK_SECTORS_PER_PAGE);
	CONST(XS_BLK_CONTROL_LEN);
	CONST(XS_BLK_REQUEST_LANE);
	CONST(XS_BLK_REQUEST_SIZE);
	CONST(XS_BLK_RESPONSE_SIZE);
	CONST(XS_BLK_SEGMENT_LEN);
	CONST(XS_BLK_MAX_INLINE_SEGMENTS);
	CONST(XS_BLK_MAX_INDIRECT_PAGES);
	CONST(XS_BLK_SEGMENTS_PER_INDIRECT_PAGE);
	CONST(XS_BLK_MAX_INDIRECT_SEGMENTS);
	CONST(XS_BLK_MIN_PAGES);
	CONST(XS_BLK_MIN_SLOTS);
	CONST(XS_BLK_F_FLUSH);
	CONST(XS_BLK_F_DISCARD);
	CONST(XS_BLK_F_FUA);
	CONST(XS_BLK_F_INDIRECT);
	CONST(XS_BLK_F_ALL);
	CONST(XS_BLK_READ_ONLY);
	CONST(XS_BLK_OP_READ);
	CONST(XS_BLK_OP_WRITE);
	CONST(XS_BLK_OP_FLUSH);
	CONST(XS_BLK_OP_DISCARD);
	CONST(XS_BLK_OP_INDIRECT);
	CONST(XS_BLK_REQ_FUA);
	CONST(XS_BLK_REQ_FLAGS_ALL);
	CONST(XS_BLK_STATUS_OKAY);
	CONST(XS_BLK_STATUS_ERROR);
	CONST(XS_BLK_STATUS_NOT_SUPPORTED);
}

/* Lane layouts for every numpages (0 slots: the header refuses it). */
static void layouts(void)
{
	__u32 n, s;

	for (n = 0; n <= XS_SHARE_MAX_PAGES + 1; n++) {
		s = xs_net_slots(n);
		if (s)
			printf("net_layout %u %u %u %u %u\n", n, s, xs_net_tx_slots_off(s),
			       xs_net_rx_lane_off(s), xs_net_rx_slots_off(s));
		else
			printf("net_layout %u 0\n", n);
		s = xs_blk_slots(n);
		if (s)
			printf("blk_layout %u %u %u %u %u\n", n, s, xs_blk_request_slots_off(s),
			       xs_blk_response_lane_off(s), xs_blk_response_slots_off(s));
		else
			printf("blk_layout %u 0\n", n);
	}
	for (n = 0; n < 8; n++) {
		/* old, new, event triples around the wrap */
		__u32 old = 0xfffffff0u + n * 4, new_idx = old + 5;

		printf("crossed %u %u %u %d\n", old, new_idx, old + 3, xs_lane_crossed(old, new_idx, old + 3));
		printf("crossed %u %u %u %d\n", old, new_idx, old + 9, xs_lane_crossed(old, new_idx, old + 9));
		printf("crossed %u %u %u %d\n", old, new_idx, old, xs_lane_crossed(old, new_idx, old));
	}
}

int main(void)
{
	vdevice();
	descriptor();
	net();
	blk();
	layouts();
	return 0;
}
