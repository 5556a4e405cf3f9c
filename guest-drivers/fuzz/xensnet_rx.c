// sources: xensnet/parse.c
// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * libFuzzer target for xensnet's parsers of switch-written bytes: the
 * control fields, the negotiation, and the rx lane's slot chains.
 *
 * Input: byte 0 the accepted-feature wish (low 4 bits), bytes 1..3 the
 * MTU, bytes 3..5 numpages, then 64 bytes of control fields, then slot
 * headers, 16 bytes each. Besides not crashing, every answer is checked
 * against the rules of docs/protocol.md "Receiver rules": a frame handed
 * out is within its limits and its offload fields make sense for it; a
 * GSO frame's segment size, as the driver gives it to the stack
 * (xsn_gso_size, for every payload its length allows), makes at most 64
 * UDP segments or 256 TCP ones of at least 8 bytes. The control fields also
 * go through the feature choice of a probe whose port the switch says is
 * up already (features_accepted from the control bytes): never more than
 * accept=. And a trigger's verdict from the header bytes: no work for a
 * stopped device, none for a stopped queue the trigger brought no room.
 */
#include <stdio.h>
#include <stdlib.h>
#include "xenshare/kcompat.h"
#include "xenshare/wire.h"
#include "../xensnet/parse.h"

#define CHECK(c)                                                          \
	do {                                                              \
		if (!(c)) {                                               \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); \
			abort();                                          \
		}                                                         \
	} while (0)

static void check_control(const uint8_t *data, u32 wish, u32 numpages)
{
	struct xs_net_control raw;
	struct xsn_control c;
	u32 accepted;
	u16 mtu;

	memcpy(&raw, data, sizeof(raw));
	if (xsn_parse_control(&raw, &c))
		return;
	CHECK(!(c.offered & ~XS_NET_F_ALL));
	CHECK(!(c.mac[0] & 1));
	accepted = xsn_negotiate(&c, wish, numpages);
	CHECK(!(accepted & ~c.offered));
	if (accepted & XS_NET_F_JUMBO)
		CHECK(DIV_ROUND_UP(c.mtu + XS_NET_FRAME_OVERHEAD, XS_NET_SLOT_DATA_MAX) <=
		      xs_net_slots(numpages));
	if (accepted & XS_NET_F_GSO) {
		CHECK(accepted & XS_NET_F_CSUM_BLANK);
		CHECK(numpages >= XS_NET_GSO_MIN_PAGES);
	}
	mtu = xsn_mtu(&c, accepted);
	CHECK(mtu >= XS_NET_MTU_MIN);
	CHECK(mtu <= (accepted & XS_NET_F_JUMBO ? XS_NET_MTU_MAX : XS_NET_MTU_STANDARD_MAX));
	/* A switch that raised link_state and wrote features_accepted. */
	if (xsn_choose_features(&c, wish, le32_to_cpu(raw.link_state) & 1,
				le32_to_cpu(raw.features_accepted), numpages, &accepted)) {
		CHECK(le32_to_cpu(raw.link_state) & 1);
		CHECK(le32_to_cpu(raw.features_accepted) & ~wish);
		return;
	}
	CHECK(!(accepted & ~wish));
	CHECK(!(accepted & ~c.offered));
	if (le32_to_cpu(raw.link_state) & 1)
		CHECK(!(accepted & ~le32_to_cpu(raw.features_accepted)));
}

/* The segment size the driver hands the stack, for every payload length. */
static void check_gso_size(const struct xsn_rx_frame *f, const struct xs_net_slot_header *h)
{
	u32 payload = le32_to_cpu(h->reserved) % (f->len + 1);
	u32 size = xsn_gso_size(f->gso_type, f->gso_size, payload);

	if (f->gso_type == XS_NET_GSO_UDP_L4) {
		if (size) {
			CHECK(size == f->gso_size);
			CHECK(DIV_ROUND_UP(payload, size) <= XSN_GSO_MAX_UDP_SEGS);
		} else {
			CHECK(payload > (u32)f->gso_size * XSN_GSO_MAX_UDP_SEGS);
		}
	} else if (size) {
		CHECK(size >= XSN_GSO_MIN_TCP_SIZE && size >= f->gso_size);
		CHECK(DIV_ROUND_UP(payload, size) <= XSN_GSO_MAX_TCP_SEGS);
	} else {
		u32 least = f->gso_size < XSN_GSO_MIN_TCP_SIZE ? XSN_GSO_MIN_TCP_SIZE : f->gso_size;

		CHECK(payload > least * XSN_GSO_MAX_TCP_SEGS);
	}
}

/* A trigger's verdict from bytes of a slot header. */
static void check_trigger(const struct xs_net_slot_header *h)
{
	struct xsn_trigger t = {
		.flags = h->gso_flags & 3,
		.rx_produced = h->gso_type & 1,
		.tx_stopped = h->gso_type & 2,
		.tx_free = (s16)le16_to_cpu(h->csum_start),
		.tx_max_slots = le16_to_cpu(h->csum_offset),
		.link_up = h->gso_type & 4,
		.carrier = h->gso_type & 8,
	};
	bool work = xsn_trigger_is_work(&t);

	if (t.flags)
		CHECK(!work);
	else if (!t.rx_produced && t.link_up == t.carrier)
		CHECK(work == (t.tx_stopped &&
			       (t.tx_free < 0 || (u32)t.tx_free >= t.tx_max_slots)));
	CHECK(!xsn_tx_may_wake(t.flags, true, true) == !!t.flags);
}

static void check_frame(const struct xsn_rx_chain *c, const struct xsn_rx_frame *f)
{
	u32 limit = f->gso_type ? XS_NET_GSO_MAX_FRAME : c->mtu_frame;

	CHECK(f->len >= XS_NET_FRAME_MIN && f->len <= limit);
	CHECK(f->slots >= 1 && f->slots <= DIV_ROUND_UP(limit, XS_NET_SLOT_DATA_MAX));
	if (f->csum_blank) {
		CHECK(c->features & XS_NET_F_CSUM_BLANK);
		CHECK(f->csum_start >= XS_NET_FRAME_MIN);
		CHECK((u32)f->csum_start + f->csum_offset + 2 <= f->len);
	}
	if (f->data_validated)
		CHECK(c->features & XS_NET_F_DATA_VALIDATED);
	if (f->gso_type) {
		CHECK(c->features & XS_NET_F_GSO);
		CHECK(f->gso_type <= XS_NET_GSO_TYPE_MAX);
		CHECK(f->csum_blank && f->gso_size);
		CHECK(!(f->gso_flags & ~XS_NET_GSO_FLAGS_ALL));
		if (f->gso_type == XS_NET_GSO_UDP_L4)
			CHECK(!f->gso_flags);
	} else {
		CHECK(!f->gso_size && !f->gso_flags);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xs_net_slot_header h;
	struct xsn_rx_chain c;
	struct xsn_control ctl;
	struct xsn_rx_step s;
	u32 wish, numpages, expect_at = 0;
	bool skipping = false;
	u16 mtu;
	size_t off;

	if (size < 5 + XS_NET_CONTROL_LEN)
		return 0;
	wish = data[0] & XS_NET_F_ALL;
	mtu = data[1] | (data[2] << 8);
	numpages = data[3] | (data[4] << 8);
	check_control(data + 5, wish, numpages);
	/* The chain's features as a negotiation with an MTU of 1500 ends. */
	ctl.offered = wish;
	ctl.mtu = XS_NET_MTU_DEFAULT;
	wish = xsn_negotiate(&ctl, XS_NET_F_ALL, numpages);
	if (xsn_rx_chain_init(&c, mtu, wish)) {
		CHECK(mtu < XS_NET_MTU_MIN || mtu > XS_NET_MTU_MAX ||
		      (!(wish & XS_NET_F_JUMBO) && mtu > XS_NET_MTU_STANDARD_MAX));
		return 0;
	}
	for (off = 5 + XS_NET_CONTROL_LEN; off + sizeof(h) <= size; off += sizeof(h)) {
		memcpy(&h, data + off, sizeof(h));
		check_trigger(&h);
		if (xsn_rx_chain_push(&c, &h, &s)) {
			/* Refused: the rest of the chain is skipped. */
			CHECK(!s.done);
			skipping = s.more;
			expect_at = 0;
			continue;
		}
		if (s.skip) {
			CHECK(skipping);
			skipping = s.more;
			continue;
		}
		CHECK(!skipping);
		CHECK(s.at == expect_at);
		CHECK(s.len >= 1 && s.len <= XS_NET_SLOT_DATA_MAX);
		expect_at += s.len;
		if (s.done) {
			CHECK(!s.more);
			CHECK(s.frame.len == expect_at);
			check_frame(&c, &s.frame);
			if (s.frame.gso_type)
				check_gso_size(&s.frame, &h);
			expect_at = 0;
		} else {
			CHECK(s.more);
		}
		/* Dropping a chain for lack of memory skips its rest too. */
		if (s.more && (h.reserved & 0xff) == 0xa5) {
			xsn_rx_chain_drop(&c, true);
			skipping = true;
			expect_at = 0;
		}
	}
	return 0;
}
