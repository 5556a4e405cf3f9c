// sources: xensblk/parse.c
// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * libFuzzer target for xensblk's parsers of server-written bytes: the
 * control fields (first 64 bytes) and a stream of 16-byte response slots
 * against an in-flight table, as the driver keeps it (an id leaves the
 * table when answered, so an id answered twice must be refused).
 */
#include <stdlib.h>
#include "xenshare/kcompat.h"
#include "xenshare/wire.h"
#include "../xensblk/parse.h"

#define NR_IDS 64

static void check_control(const uint8_t *data)
{
	struct xs_blk_control raw;
	struct xsblk_control c;

	memcpy(&raw, data, sizeof(raw));
	if (xsblk_parse_control(&raw, &c))
		return;
	if (c.features & ~XS_BLK_F_ALL)
		abort();
	if (c.capacity > ~(u64)0 / XS_BLK_SECTOR_SIZE)
		abort();
	if ((c.features & XS_BLK_F_INDIRECT) ?
	    (c.max_indirect_segments == 0 ||
	     c.max_indirect_segments > XS_BLK_MAX_INDIRECT_SEGMENTS) :
	    c.max_indirect_segments != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	u8 in_flight[NR_IDS];
	size_t off;
	u32 nr_ids;

	if (size < sizeof(struct xs_blk_control) + 1)
		return 0;
	check_control(data);
	data += sizeof(struct xs_blk_control);
	size -= sizeof(struct xs_blk_control);
	/* The next byte sizes the table; every id starts in flight. */
	nr_ids = data[0] % (NR_IDS + 1);
	memset(in_flight, 1, sizeof(in_flight));
	data++;
	size--;
	for (off = 0; off + sizeof(struct xs_blk_response) <= size;
	     off += sizeof(struct xs_blk_response)) {
		struct xs_blk_response raw;
		struct xsblk_response r;
		int err;

		memcpy(&raw, data + off, sizeof(raw));
		err = xsblk_parse_response(&raw, in_flight, nr_ids, &r);
		if (err) {
			if (err != -EPROTO && err != -ENOENT)
				abort();
			continue;
		}
		if (r.id >= nr_ids || !in_flight[r.id])
			abort();
		if (r.status != XS_BLK_STATUS_OKAY && r.status != XS_BLK_STATUS_ERROR &&
		    r.status != XS_BLK_STATUS_NOT_SUPPORTED)
			abort();
		if (le64_to_cpu(raw.id) != r.id)
			abort();
		in_flight[r.id] = 0;
	}
	return 0;
}
