/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * Parsers of what the disk server writes into a block share: the control
 * fields (once, on attach) and each response slot. They take a private
 * copy and never touch shared memory, so they also build in userspace for
 * guest-drivers/fuzz/xensblk_response.c.
 */
#ifndef XENSBLK_PARSE_H
#define XENSBLK_PARSE_H

#include "xenshare/kcompat.h"
#include "xenshare/wire.h"

/* The server's offer, validated (docs/protocol.md "Control fields"). */
struct xsblk_control {
	u64 capacity;		/* 512-byte sectors */
	u32 features;		/* XS_BLK_F_*, unknown bits dropped */
	u16 max_indirect_segments;	/* 1..=12288 with INDIRECT, else 0 */
	bool read_only;
};

int xsblk_parse_control(const struct xs_blk_control *raw,
			struct xsblk_control *out);

/* A response whose id names a request the caller has in flight. */
struct xsblk_response {
	u32 id;			/* < nr_ids, in_flight[id] != 0 */
	u8 op;			/* the op byte the server echoed */
	s16 status;		/* XS_BLK_STATUS_{OKAY,ERROR,NOT_SUPPORTED} */
};

/*
 * in_flight[i] != 0 for each id i < nr_ids the caller has in flight. An
 * unknown status is -EPROTO; an id not in flight (unknown, or answered
 * already) is -ENOENT. Either way the server is broken.
 */
int xsblk_parse_response(const struct xs_blk_response *raw,
			 const u8 *in_flight, u32 nr_ids,
			 struct xsblk_response *out);

/*
 * The segment for off/len bytes of a page (a request's data, bounced):
 * 512-byte aligned, non-empty, within the page. -EINVAL otherwise.
 */
int xsblk_segment(u32 gref, u32 off, u32 len, struct xs_blk_segment *seg);

/*
 * An indirect page whose first nr segments are written (nr <= 512):
 * zeroes the rest of the page, so the server reads nothing else of it.
 */
void xsblk_finish_indirect(u8 *page, u32 nr);

/*
 * Prepares the bounce page granted for one segment of off/len bytes
 * (xsblk_segment() accepted them): for a write, data (len bytes) at off
 * and zeroes around it; for a read, zeroes (the server writes the
 * segment). Either way the page holds nothing but what the request
 * shares.
 */
void xsblk_bounce_fill(u8 *bounce, const u8 *data, u32 off, u32 len, bool write);

/*
 * Whether a trigger gave the disk something to do: responses (n > 0, or
 * n < 0 for a bad index, which breaks the disk), or room in the request
 * lane a request waits for (req_free free slots, or < 0 for a bad index).
 * If not, it was spurious (late EOI: Xen backs off a flooding server).
 */
bool xsblk_trigger_is_work(int responses, bool wait_room, int req_free);

#endif /* XENSBLK_PARSE_H */
