/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One side of a lane (docs/protocol.md "Lanes") in a guest module.
 *
 * Our own index lives here, privately; it is written to the share but
 * never read back. The peer's index is loaded once per batch with acquire
 * ordering and checked against the slot count before any slot is used.
 * Slot count and size come from our own layout computation, never from
 * the share.
 */
#ifndef XENSHARE_LANE_H
#define XENSHARE_LANE_H

#include <linux/compiler.h>
#include <asm/barrier.h>
#include "bus.h"

#ifdef __BIG_ENDIAN
#error "xen-share lanes are little-endian; this module assumes a little-endian CPU"
#endif

struct xs_lane {
	struct xenshare_share *sh;
	u32 header;		/* byte offset of the lane header */
	u32 slots;		/* byte offset of slot 0 */
	u32 slot_count;		/* power of two */
	u32 slot_size;
	u32 ours;		/* prod (producer) or cons (consumer), private */
	u32 published;		/* ours as last stored to the share */
	u32 theirs;		/* peer's index as last loaded and checked */
};

static inline u32 *xs_lane_index(struct xs_lane *l, u32 field)
{
	return xenshare_share_ptr(l->sh, l->header + field, sizeof(u32));
}

/*
 * Attach to a lane whose header the owner initialised; start from the
 * indexes the owner wrote (loaded once). Returns -EPROTO if they do not
 * describe a valid lane.
 */
static inline int xs_lane_attach(struct xs_lane *l, struct xenshare_share *sh,
				 u32 header, u32 slots, u32 slot_count,
				 u32 slot_size, bool producer)
{
	u32 *prod, *cons;
	u32 p, c;

	l->sh = sh;
	l->header = header;
	l->slots = slots;
	l->slot_count = slot_count;
	l->slot_size = slot_size;
	prod = xs_lane_index(l, XS_LANE_PROD);
	cons = xs_lane_index(l, XS_LANE_CONS);
	if (!prod || !cons || !xenshare_share_ptr(sh, slots + (slot_count - 1) * slot_size, slot_size))
		return -EPROTO;
	p = smp_load_acquire(prod);
	c = smp_load_acquire(cons);
	if (p - c > slot_count)
		return -EPROTO;
	l->ours = producer ? p : c;
	l->published = l->ours;
	l->theirs = producer ? c : p;
	return 0;
}

/* Slot k (free-running index) of the lane. */
static inline void *xs_lane_slot(struct xs_lane *l, u32 k)
{
	return xenshare_share_ptr(l->sh, l->slots + (k & (l->slot_count - 1)) * l->slot_size,
				  l->slot_size);
}

/*
 * Consumer: load prod once; returns the number of full slots, or -EPROTO
 * if the producer claims more than the lane holds.
 */
static inline int xs_lane_consumer_refresh(struct xs_lane *l)
{
	u32 prod = smp_load_acquire(xs_lane_index(l, XS_LANE_PROD));

	if (prod - l->ours > l->slot_count)
		return -EPROTO;
	l->theirs = prod;
	return prod - l->ours;
}

/*
 * Consumer, from an interrupt handler that races the lane's user: has the
 * peer produced past what we consumed? Only a hint (whether a trigger was
 * spurious); nothing is read from the slots.
 */
static inline bool xs_lane_peek_produced(struct xs_lane *l)
{
	return READ_ONCE(*xs_lane_index(l, XS_LANE_PROD)) != READ_ONCE(l->ours);
}

/*
 * Producer, from an interrupt handler that races the lane's user: free
 * slots as the peer's cons says now, or -EPROTO. Only a hint (whether a
 * trigger brought the room a stopped producer waits for); changes nothing.
 */
static inline int xs_lane_peek_free(struct xs_lane *l)
{
	u32 cons = READ_ONCE(*xs_lane_index(l, XS_LANE_CONS));
	u32 ours = READ_ONCE(l->ours);

	if (ours - cons > l->slot_count)
		return -EPROTO;
	return l->slot_count - (ours - cons);
}

/* Producer: load cons once; returns free slots, or -EPROTO. */
static inline int xs_lane_producer_refresh(struct xs_lane *l)
{
	u32 cons = smp_load_acquire(xs_lane_index(l, XS_LANE_CONS));

	if (l->ours - cons > l->slot_count)
		return -EPROTO;
	l->theirs = cons;
	return l->slot_count - (l->ours - cons);
}

/*
 * Store our index (release) and say whether the peer asked to be
 * triggered (its event index crossed).
 */
static inline bool xs_lane_publish(struct xs_lane *l, bool producer)
{
	u32 old = l->published;
	u32 event;

	if (old == l->ours)
		return false;
	smp_store_release(xs_lane_index(l, producer ? XS_LANE_PROD : XS_LANE_CONS), l->ours);
	l->published = l->ours;
	smp_mb();
	event = READ_ONCE(*xs_lane_index(l, producer ? XS_LANE_PROD_EVENT : XS_LANE_CONS_EVENT));
	return xs_lane_crossed(old, l->ours, event);
}

/*
 * Before sleeping: ask to be triggered when the peer moves its index
 * past what we saw, then re-check (share-hal's prepare_wait). Returns
 * true if there is work after all (do not sleep): a consumer has a full
 * slot, a producer has want free slots.
 */
static inline bool xs_lane_prepare_wait(struct xs_lane *l, bool producer, u32 want)
{
	if (producer) {
		WRITE_ONCE(*xs_lane_index(l, XS_LANE_CONS_EVENT), l->theirs + 1);
		smp_mb();
		return xs_lane_producer_refresh(l) >= (int)want;
	}
	WRITE_ONCE(*xs_lane_index(l, XS_LANE_PROD_EVENT), l->ours + 1);
	smp_mb();
	return xs_lane_consumer_refresh(l) != 0;
}

#endif /* XENSHARE_LANE_H */
