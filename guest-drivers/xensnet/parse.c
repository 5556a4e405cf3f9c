// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * Parsers of what the switch writes into a network share. Everything
 * here works on private copies; the rules and their order are share-hal's
 * wire::net, the code of record, so the kernel member refuses exactly
 * what the userspace one does.
 */
#include "xenshare/kcompat.h"
#include "xenshare/wire.h"
#include "parse.h"

static u16 xsn_mtu_limit(u32 features)
{
	return features & XS_NET_F_JUMBO ? XS_NET_MTU_MAX : XS_NET_MTU_STANDARD_MAX;
}

int xsn_parse_control(const struct xs_net_control *raw, struct xsn_control *out)
{
	u16 mtu = le16_to_cpu(raw->mtu);
	u32 offered = le32_to_cpu(raw->features_offered) & XS_NET_F_ALL;
	static const u8 zero[6];

	if (le32_to_cpu(raw->magic) != XS_NET_MAGIC ||
	    le16_to_cpu(raw->version) != XS_NET_VERSION)
		return -EINVAL;
	if (mtu < XS_NET_MTU_MIN || mtu > xsn_mtu_limit(offered))
		return -EINVAL;
	/* A group address or none at all cannot be a port's own. */
	if ((raw->mac[0] & 1) || !memcmp(raw->mac, zero, sizeof(zero)))
		return -EINVAL;
	out->offered = offered;
	out->mtu = mtu;
	memcpy(out->mac, raw->mac, sizeof(out->mac));
	return 0;
}

u32 xsn_negotiate(const struct xsn_control *c, u32 supported, u32 numpages)
{
	u32 accepted = c->offered & supported & XS_NET_F_ALL;
	u32 slots = xs_net_slots(numpages);

	/*
	 * A GSO frame takes up to 33 slots, so only lanes of 64 carry one
	 * (numpages >= 66); and its checksum is always partial.
	 */
	if (!(accepted & XS_NET_F_CSUM_BLANK) || slots < XS_NET_GSO_MAX_SLOTS)
		accepted &= ~XS_NET_F_GSO;
	/* A jumbo frame must fit the lane whole, or it could never be sent. */
	if (DIV_ROUND_UP((u32)c->mtu + XS_NET_FRAME_OVERHEAD, XS_NET_SLOT_DATA_MAX) > slots)
		accepted &= ~XS_NET_F_JUMBO;
	return accepted;
}

u16 xsn_mtu(const struct xsn_control *c, u32 accepted)
{
	u16 limit = xsn_mtu_limit(accepted);

	return c->mtu < limit ? c->mtu : limit;
}

int xsn_rx_chain_init(struct xsn_rx_chain *c, u16 mtu, u32 features)
{
	if (mtu < XS_NET_MTU_MIN || mtu > xsn_mtu_limit(features))
		return -EINVAL;
	memset(c, 0, sizeof(*c));
	c->features = features;
	c->mtu_frame = mtu + XS_NET_FRAME_OVERHEAD;
	c->max_frame = features & XS_NET_F_GSO ? XS_NET_GSO_MAX_FRAME : c->mtu_frame;
	return 0;
}

static void xsn_rx_chain_reset(struct xsn_rx_chain *c)
{
	c->len = 0;
	c->slots = 0;
	c->in_frame = false;
	c->skipping = false;
}

/* The checks every slot passes, first or not. */
static int xsn_rx_check_slot(const struct xs_net_slot_header *h)
{
	u16 len = le16_to_cpu(h->len);

	if (le16_to_cpu(h->flags) & ~XS_NET_SLOT_FLAGS_ALL)
		return -EINVAL;
	if (!len || len > XS_NET_SLOT_DATA_MAX)
		return -EINVAL;
	if (h->gso_type > XS_NET_GSO_TYPE_MAX || (h->gso_flags & ~XS_NET_GSO_FLAGS_ALL))
		return -EINVAL;
	return 0;
}

static int xsn_rx_first_slot(struct xsn_rx_chain *c, const struct xs_net_slot_header *h)
{
	/* The first slot says what kind of frame this is, and so its limits. */
	if (h->gso_type != XS_NET_GSO_NONE) {
		if (!(c->features & XS_NET_F_GSO))
			return -EOPNOTSUPP;
		c->frame_max = c->max_frame;
	} else {
		c->frame_max = c->mtu_frame;
	}
	c->frame_max_slots = DIV_ROUND_UP(c->frame_max, XS_NET_SLOT_DATA_MAX);
	c->first = *h;
	c->in_frame = true;
	return 0;
}

static int xsn_rx_gso(const struct xs_net_slot_header *first, struct xsn_rx_frame *f)
{
	u16 size = le16_to_cpu(first->gso_size);

	f->gso_type = first->gso_type;
	f->gso_flags = first->gso_flags;
	f->gso_size = size;
	if (first->gso_type == XS_NET_GSO_NONE)
		return size || first->gso_flags ? -EINVAL : 0;
	if ((first->gso_flags & XS_NET_GSO_FLAG_ECN) && first->gso_type == XS_NET_GSO_UDP_L4)
		return -EINVAL;
	if (!size || !f->csum_blank)
		return -EINVAL;
	return 0;
}

/* The frame is complete: check what only its whole length can tell. */
static int xsn_rx_finish(const struct xsn_rx_chain *c, struct xsn_rx_frame *f)
{
	const struct xs_net_slot_header *first = &c->first;
	u16 flags = le16_to_cpu(first->flags);

	if (c->len < XS_NET_FRAME_MIN)
		return -EINVAL;
	memset(f, 0, sizeof(*f));
	f->len = c->len;
	f->slots = c->slots;
	if (flags & XS_NET_SLOT_CSUM_BLANK) {
		u32 start = le16_to_cpu(first->csum_start);
		u32 end = start + le16_to_cpu(first->csum_offset) + 2;

		if (!(c->features & XS_NET_F_CSUM_BLANK))
			return -EOPNOTSUPP;
		if (start < XS_NET_FRAME_MIN || end > c->len)
			return -EINVAL;
		f->csum_blank = true;
		f->csum_start = start;
		f->csum_offset = le16_to_cpu(first->csum_offset);
	}
	if (flags & XS_NET_SLOT_DATA_VALIDATED) {
		if (!(c->features & XS_NET_F_DATA_VALIDATED))
			return -EOPNOTSUPP;
		f->data_validated = true;
	}
	return xsn_rx_gso(first, f);
}

static int xsn_rx_accept(struct xsn_rx_chain *c, const struct xs_net_slot_header *h,
			 struct xsn_rx_step *step)
{
	u32 len = le16_to_cpu(h->len);
	int rc;

	rc = xsn_rx_check_slot(h);
	if (rc)
		return rc;
	if (!c->in_frame) {
		rc = xsn_rx_first_slot(c, h);
		if (rc)
			return rc;
	}
	if (c->len + len > c->frame_max)
		return -EMSGSIZE;
	/* Short slots could otherwise keep a chain going for a whole lane. */
	if (c->slots >= c->frame_max_slots)
		return -EMSGSIZE;
	step->at = c->len;
	step->len = len;
	c->len += len;
	c->slots++;
	if (step->more)
		return 0;
	rc = xsn_rx_finish(c, &step->frame);
	if (rc)
		return rc;
	step->done = true;
	xsn_rx_chain_reset(c);
	return 0;
}

int xsn_rx_chain_push(struct xsn_rx_chain *c, const struct xs_net_slot_header *h,
		      struct xsn_rx_step *step)
{
	int rc;

	memset(step, 0, sizeof(*step));
	step->more = le16_to_cpu(h->flags) & XS_NET_SLOT_MORE;
	if (c->skipping) {
		if (!step->more)
			xsn_rx_chain_reset(c);
		step->skip = true;
		return 0;
	}
	rc = xsn_rx_accept(c, h, step);
	if (rc) {
		xsn_rx_chain_drop(c, step->more);
		step->done = false;
	}
	return rc;
}

void xsn_rx_chain_drop(struct xsn_rx_chain *c, bool more)
{
	xsn_rx_chain_reset(c);
	c->skipping = more;
}

int xsn_choose_features(const struct xsn_control *c, u32 accept, bool link_up,
			u32 prev, u32 numpages, u32 *out)
{
	u32 allowed = accept & XS_NET_F_ALL;

	if (!link_up) {
		*out = xsn_negotiate(c, allowed, numpages);
		return 0;
	}
	/* The switch wrote link_state and, for all we know, prev. */
	if (prev & ~allowed)
		return -EOPNOTSUPP;
	*out = xsn_negotiate(c, prev, numpages);
	return 0;
}

bool xsn_trigger_is_work(const struct xsn_trigger *t)
{
	if (xsn_flags_stopped(t->flags))
		return false;
	if (t->rx_produced)
		return true;
	/* The queue waits for the longest frame's room, not for any trigger. */
	if (t->tx_stopped && (t->tx_free < 0 || (u32)t->tx_free >= t->tx_max_slots))
		return true;
	return t->link_up != t->carrier;
}

bool xsn_tx_may_wake(unsigned long flags, bool queue_stopped, bool running)
{
	return !xsn_flags_stopped(flags) && queue_stopped && running;
}

u32 xsn_gso_size(u8 gso_type, u16 gso_size, u32 payload)
{
	u32 size = gso_size, max = XSN_GSO_MAX_TCP_SEGS;

	if (!size)
		return 0;
	if (gso_type == XS_NET_GSO_UDP_L4)
		max = XSN_GSO_MAX_UDP_SEGS;
	else if (size < XSN_GSO_MIN_TCP_SIZE)
		size = XSN_GSO_MIN_TCP_SIZE;
	return payload > size * max ? 0 : size;
}
