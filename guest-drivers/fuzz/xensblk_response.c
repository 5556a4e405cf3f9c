// sources: xensblk/parse.c
// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * libFuzzer target for xensblk's parsers of server-written bytes: the
 * control fields (first 64 bytes) and a stream of 16-byte response slots
 * against an in-flight table, as the driver keeps it (an id leaves the
 * table when answered, so an id answered twice must be refused). The
 * table starts with the ids of a fuzzed mask in flight (bytes 1..9 after
 * the control fields), so responses for requests never issued come too.
 * Each response slot's bytes also drive what the driver makes for the
 * server: a segment of a fuzzed offset and length (xsblk_segment), an
 * indirect page of a fuzzed segment count (xsblk_finish_indirect) and a
 * bounce page (xsblk_bounce_fill), which must hold nothing but the
 * segments, the data and zeroes; and the trigger rule.
 */
#include <stdio.h>
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

#define CHECK(c)                                                          \
	do {                                                              \
		if (!(c)) {                                               \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); \
			abort();                                          \
		}                                                         \
	} while (0)

/* What the driver writes for the server, from a response slot's bytes. */
static void check_pages(const struct xs_blk_response *raw)
{
	static u8 page[XS_PAGE_SIZE], data[XS_PAGE_SIZE];
	const u8 *b = (const u8 *)raw;
	u32 off = (b[0] | (b[1] << 8)) & 0x1fff, len = (b[2] | (b[3] << 8)) & 0x1fff;
	u32 nr = (b[4] | (b[5] << 8)) % (XS_BLK_SEGMENTS_PER_INDIRECT_PAGE + 1);
	bool write = b[6] & 1;
	struct xs_blk_segment seg;
	u32 i;

	if (xsblk_segment(b[7], off, len, &seg)) {
		CHECK(!len || off % 512 || len % 512 || off + len > XS_PAGE_SIZE);
	} else {
		CHECK(len && !(off % 512) && !(len % 512) && off + len <= XS_PAGE_SIZE);
		CHECK(seg.first_sect == off / 512 && seg.last_sect == (off + len - 1) / 512);
		CHECK(seg.last_sect < XS_BLK_SECTORS_PER_PAGE && !seg.reserved);
		memset(page, 0xa5, sizeof(page));
		memset(data, 0x3c, sizeof(data));
		xsblk_bounce_fill(page, write ? data + off : NULL, off, len, write);
		for (i = 0; i < XS_PAGE_SIZE; i++)
			CHECK(page[i] == (write && i >= off && i < off + len ? 0x3c : 0));
	}
	memset(page, 0xa5, sizeof(page));
	for (i = 0; i < nr; i++)
		memcpy(page + i * sizeof(seg), &seg, sizeof(seg));
	xsblk_finish_indirect(page, nr);
	for (i = nr * sizeof(seg); i < XS_PAGE_SIZE; i++)
		CHECK(page[i] == 0);
	/* A trigger while a request waits is work only with room. */
	CHECK(xsblk_trigger_is_work(0, true, (signed char)b[8]) == (b[8] != 0));
	CHECK(!xsblk_trigger_is_work(0, false, (signed char)b[8]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	u8 in_flight[NR_IDS];
	u64 mask = 0;
	size_t off;
	u32 nr_ids, i;

	if (size < sizeof(struct xs_blk_control) + 9)
		return 0;
	check_control(data);
	data += sizeof(struct xs_blk_control);
	size -= sizeof(struct xs_blk_control);
	/* The next byte sizes the table, the 8 after say which ids are in flight. */
	nr_ids = data[0] % (NR_IDS + 1);
	for (i = 0; i < 8; i++)
		mask |= (u64)data[1 + i] << (8 * i);
	for (i = 0; i < NR_IDS; i++)
		in_flight[i] = (mask >> i) & 1;
	data += 9;
	size -= 9;
	for (off = 0; off + sizeof(struct xs_blk_response) <= size;
	     off += sizeof(struct xs_blk_response)) {
		struct xs_blk_response raw;
		struct xsblk_response r;
		int err;

		memcpy(&raw, data + off, sizeof(raw));
		check_pages(&raw);
		err = xsblk_parse_response(&raw, in_flight, nr_ids, &r);
		if (err) {
			u64 id = le64_to_cpu(raw.id);

			if (err != -EPROTO && err != -ENOENT)
				abort();
			/* -ENOENT exactly for an id not in flight. */
			if (err == -ENOENT && id < nr_ids && in_flight[id])
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
