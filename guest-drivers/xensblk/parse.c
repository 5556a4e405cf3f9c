// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * Parsers of server-written bytes for xensblk; see parse.h. Only
 * kcompat.h and wire.h: this file is also the fuzzer's unit.
 */
#include "xenshare/kcompat.h"
#include "xenshare/wire.h"
#include "parse.h"

/* Byte offsets of the last sector must fit a u64 (as share-hal checks). */
#define XSBLK_MAX_CAPACITY (~(u64)0 / XS_BLK_SECTOR_SIZE)

int xsblk_parse_control(const struct xs_blk_control *raw,
			struct xsblk_control *out)
{
	u32 features = le32_to_cpu(raw->features) & XS_BLK_F_ALL;
	u16 max_indirect = le16_to_cpu(raw->max_indirect_segments);
	u64 capacity = le64_to_cpu(raw->capacity);

	if (le32_to_cpu(raw->magic) != XS_BLK_MAGIC)
		return -EPROTO;
	if (le16_to_cpu(raw->version) != XS_BLK_VERSION)
		return -EPROTONOSUPPORT;
	if (le16_to_cpu(raw->sector_size) != XS_BLK_SECTOR_SIZE)
		return -EINVAL;
	if (capacity > XSBLK_MAX_CAPACITY)
		return -EINVAL;
	if (!(features & XS_BLK_F_INDIRECT))
		max_indirect = 0;
	else if (max_indirect == 0 || max_indirect > XS_BLK_MAX_INDIRECT_SEGMENTS)
		return -EINVAL;

	out->capacity = capacity;
	out->features = features;
	out->max_indirect_segments = max_indirect;
	out->read_only = le32_to_cpu(raw->flags) & XS_BLK_READ_ONLY;
	return 0;
}

int xsblk_parse_response(const struct xs_blk_response *raw,
			 const u8 *in_flight, u32 nr_ids,
			 struct xsblk_response *out)
{
	s16 status = (s16)le16_to_cpu(raw->status);
	u64 id = le64_to_cpu(raw->id);

	switch (status) {
	case XS_BLK_STATUS_OKAY:
	case XS_BLK_STATUS_ERROR:
	case XS_BLK_STATUS_NOT_SUPPORTED:
		break;
	default:
		return -EPROTO;
	}
	if (id >= nr_ids || !in_flight[id])
		return -ENOENT;

	out->id = (u32)id;
	out->op = raw->op;
	out->status = status;
	return 0;
}

int xsblk_segment(u32 gref, u32 off, u32 len, struct xs_blk_segment *seg)
{
	if (!len || off % XS_BLK_SECTOR_SIZE || len % XS_BLK_SECTOR_SIZE ||
	    off > XS_PAGE_SIZE || len > XS_PAGE_SIZE - off)
		return -EINVAL;
	seg->gref = cpu_to_le32(gref);
	seg->first_sect = off / XS_BLK_SECTOR_SIZE;
	seg->last_sect = (off + len - 1) / XS_BLK_SECTOR_SIZE;
	seg->reserved = 0;
	return 0;
}

void xsblk_finish_indirect(u8 *page, u32 nr)
{
	size_t used = (size_t)nr * sizeof(struct xs_blk_segment);

	memset(page + used, 0, XS_PAGE_SIZE - used);
}

void xsblk_bounce_fill(u8 *bounce, const u8 *data, u32 off, u32 len, bool write)
{
	if (!write) {
		memset(bounce, 0, XS_PAGE_SIZE);
		return;
	}
	memset(bounce, 0, off);
	memcpy(bounce + off, data, len);
	memset(bounce + off + len, 0, XS_PAGE_SIZE - off - len);
}

bool xsblk_trigger_is_work(int responses, bool wait_room, int req_free)
{
	/* A request waiting for room is helped by room only. */
	return responses != 0 || (wait_room && req_free != 0);
}
