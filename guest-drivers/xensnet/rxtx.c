// SPDX-License-Identifier: GPL-2.0
/*
 * Frames between the stack and the share's lanes. Both directions copy:
 * tx copies an skb into tx slots (the switch reads them in place), rx
 * copies each slot out once into an skb the switch never sees. Every
 * slot header is copied into a private struct before it is looked at,
 * and parse.c decides what a chain of them means.
 */
#include <linux/etherdevice.h>
#include <linux/if_vlan.h>
#include <linux/ip.h>
#include <linux/skbuff.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <net/tcp.h>
#include "xensnet.h"

#define XSN_GSO_TYPES (SKB_GSO_TCPV4 | SKB_GSO_TCPV6 | SKB_GSO_UDP_L4 | \
		       SKB_GSO_TCP_ECN | SKB_GSO_DODGY | SKB_GSO_TCP_FIXEDID)

/* ---- tx -------------------------------------------------------------- */

/* A partial checksum goes to the switch as CSUM_BLANK, or is done here. */
static int xsn_tx_csum(struct xsn_priv *np, struct sk_buff *skb,
		       struct xs_net_slot_header *h)
{
	int start = skb_checksum_start_offset(skb);

	if ((np->accepted & XS_NET_F_CSUM_BLANK) && start >= ETH_HLEN &&
	    start <= U16_MAX) {
		h->flags = cpu_to_le16(XS_NET_SLOT_CSUM_BLANK);
		h->csum_start = cpu_to_le16(start);
		h->csum_offset = cpu_to_le16(skb->csum_offset);
		return 0;
	}
	if (skb_checksum_help(skb))
		return -ENOMEM;
	/* Completed here: the receiver may trust it as verified. */
	if (np->accepted & XS_NET_F_DATA_VALIDATED)
		h->flags = cpu_to_le16(XS_NET_SLOT_DATA_VALIDATED);
	return 0;
}

static int xsn_tx_gso(struct xsn_priv *np, struct sk_buff *skb,
		      struct xs_net_slot_header *h)
{
	const struct skb_shared_info *si = skb_shinfo(skb);
	int start = skb_checksum_start_offset(skb);

	/* Negotiation accepts GSO only with CSUM_BLANK: the checksum stays partial. */
	if (!(np->accepted & XS_NET_F_GSO) || (si->gso_type & ~XSN_GSO_TYPES) ||
	    skb->ip_summed != CHECKSUM_PARTIAL || start < ETH_HLEN || start > U16_MAX)
		return -EINVAL;
	if (skb->len > XS_NET_GSO_MAX_FRAME)
		return -EMSGSIZE;
	if (si->gso_type & SKB_GSO_TCPV4)
		h->gso_type = XS_NET_GSO_TCPV4;
	else if (si->gso_type & SKB_GSO_TCPV6)
		h->gso_type = XS_NET_GSO_TCPV6;
	else if (si->gso_type & SKB_GSO_UDP_L4)
		h->gso_type = XS_NET_GSO_UDP_L4;
	else
		return -EINVAL;
	if ((si->gso_type & SKB_GSO_TCP_ECN) && h->gso_type != XS_NET_GSO_UDP_L4)
		h->gso_flags = XS_NET_GSO_FLAG_ECN;
	h->gso_size = cpu_to_le16(si->gso_size);
	h->flags = cpu_to_le16(XS_NET_SLOT_CSUM_BLANK);
	h->csum_start = cpu_to_le16(start);
	h->csum_offset = cpu_to_le16(skb->csum_offset);
	return 0;
}

/* The first slot's offload fields for skb; a negative errno drops it. */
static int xsn_tx_offload(struct xsn_priv *np, struct sk_buff *skb,
			  struct xs_net_slot_header *h)
{
	memset(h, 0, sizeof(*h));
	if (skb->len < ETH_HLEN)
		return -EINVAL;
	if (skb_is_gso(skb))
		return xsn_tx_gso(np, skb, h);
	if (skb->len > np->mtu + XS_NET_FRAME_OVERHEAD)
		return -EMSGSIZE;
	if (skb->ip_summed == CHECKSUM_PARTIAL)
		return xsn_tx_csum(np, skb, h);
	return 0;
}

static void xsn_tx_drop(struct xsn_priv *np, struct sk_buff *skb, int rc)
{
	enum xsn_stat why = XSN_TX_DROP_REFUSED;

	if (rc == -EMSGSIZE)
		why = XSN_TX_DROP_TOO_BIG;
	else if (rc == -ENOMEM)
		why = XSN_TX_DROP_NO_MEMORY;
	else if (rc == -EPROTO)
		why = XSN_TX_DROP_LANE_ERROR;
	xsn_count(np, why, 1);
	dev_kfree_skb_any(skb);
}

/* Writes skb into need slots from tx.ours on; the caller checked room. */
static int xsn_tx_write(struct xsn_priv *np, const struct sk_buff *skb,
			const struct xs_net_slot_header *first, u32 need)
{
	struct xs_net_slot_header h = *first;
	u32 off = 0, i;

	for (i = 0; i < need; i++) {
		u32 len = min_t(u32, skb->len - off, XS_NET_SLOT_DATA_MAX);
		u8 *slot = xs_lane_slot(&np->tx, np->tx.ours + i);

		if (!slot)
			return -EPROTO;
		h.len = cpu_to_le16(len);
		if (i + 1 < need)
			h.flags |= cpu_to_le16(XS_NET_SLOT_MORE);
		memcpy(slot, &h, sizeof(h));
		if (skb_copy_bits(skb, off, slot + XS_NET_SLOT_HEADER_LEN, len))
			return -EPROTO;
		off += len;
		/* Offload fields count in the first slot only. */
		memset(&h, 0, sizeof(h));
	}
	np->tx.ours += need;
	return 0;
}

static void xsn_tx_push(struct xsn_priv *np)
{
	if (xs_lane_publish(&np->tx, true))
		xenshare_share_trigger(np->sh);
}

/*
 * Ask the switch for a trigger once cons has moved far enough for the
 * longest frame to fit (not at its first slot, as xs_lane_prepare_wait
 * would: that costs a trigger per slot while the lane drains), then look
 * again (the final check). Returns true if it fits already.
 */
static bool xsn_tx_arm(struct xsn_priv *np)
{
	struct xs_lane *l = &np->tx;

	int free;

	WRITE_ONCE(*xs_lane_index(l, XS_LANE_CONS_EVENT),
		   l->ours - l->slot_count + np->tx_max_slots);
	smp_mb();
	free = xs_lane_producer_refresh(l);
	if (free < 0)
		xsn_break(np, "the tx lane's cons is out of bounds");
	return free >= (int)np->tx_max_slots;
}

/*
 * Stop the queue unless the lane has room for the longest frame; the
 * switch's trigger when it frees slots brings NAPI to wake it. Returns
 * true if the queue stays stopped.
 */
static bool xsn_tx_maybe_stop(struct xsn_priv *np, int free)
{
	if (free >= (int)np->tx_max_slots)
		return false;
	netif_stop_queue(np->dev);
	if (!xsn_tx_arm(np))
		return true;
	netif_start_queue(np->dev);
	return false;
}

netdev_tx_t xsn_start_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct xsn_priv *np = netdev_priv(dev);
	struct xs_net_slot_header first;
	u32 need, len = skb->len;
	int free, rc;

	if (xsn_stopped(&np->flags)) {
		xsn_tx_drop(np, skb, -EPROTO);
		return NETDEV_TX_OK;
	}
	rc = xsn_tx_offload(np, skb, &first);
	if (rc)
		goto drop;
	need = DIV_ROUND_UP(len, XS_NET_SLOT_DATA_MAX);
	free = xs_lane_producer_refresh(&np->tx);
	if (free < 0) {
		rc = free;
		xsn_break(np, "the tx lane's cons is out of bounds");
		goto drop;
	}
	if (free < (int)need) {
		/* Only if the lane came to us fuller than we left it. */
		if (xsn_tx_maybe_stop(np, free))
			return NETDEV_TX_BUSY;
	}
	rc = xsn_tx_write(np, skb, &first, need);
	if (rc)
		goto drop;
	xsn_count(np, XSN_TX_FRAMES, 1);
	xsn_count(np, XSN_TX_BYTES, len);
	dev_consume_skb_any(skb);
	xsn_tx_maybe_stop(np, free - (int)need);
	if (!netdev_xmit_more() || netif_queue_stopped(dev))
		xsn_tx_push(np);
	return NETDEV_TX_OK;
drop:
	xsn_tx_drop(np, skb, rc);
	if (!netdev_xmit_more())
		xsn_tx_push(np);
	return NETDEV_TX_OK;
}

/*
 * A UDP GSO frame of more segments than a member takes (xsn_gso_size) is
 * cut here by the stack instead, so the switch and the other members
 * never see one from us.
 */
netdev_features_t xsn_features_check(struct sk_buff *skb, struct net_device *dev,
				     netdev_features_t features)
{
	const struct skb_shared_info *si = skb_shinfo(skb);
	u32 payload;

	features = vlan_features_check(skb, features);
	if (!skb_is_gso(skb) || !(si->gso_type & SKB_GSO_UDP_L4))
		return features;
	payload = skb->len - min_t(u32, skb->len, skb_transport_offset(skb) + sizeof(struct udphdr));
	if (!xsn_gso_size(XS_NET_GSO_UDP_L4, si->gso_size, payload))
		features &= ~NETIF_F_GSO_MASK;
	return features;
}

/* NAPI: the switch freed slots; wake the queue if the longest frame fits. */
static void xsn_tx_wake(struct xsn_priv *np)
{
	struct netdev_queue *txq = netdev_get_tx_queue(np->dev, 0);
	int free;

	if (!netif_queue_stopped(np->dev))
		return;
	__netif_tx_lock(txq, smp_processor_id());
	if (xsn_tx_may_wake(READ_ONCE(np->flags), netif_queue_stopped(np->dev),
			    netif_running(np->dev))) {
		free = xs_lane_producer_refresh(&np->tx);
		if (free < 0)
			xsn_break(np, "the tx lane's cons is out of bounds");
		else if (free >= (int)np->tx_max_slots || xsn_tx_arm(np))
			netif_wake_queue(np->dev);
	}
	__netif_tx_unlock(txq);
}

/* ---- rx -------------------------------------------------------------- */

void xsn_rx_discard(struct xsn_priv *np)
{
	dev_kfree_skb_any(np->rx_skb);
	np->rx_skb = NULL;
}

/* Appends len bytes to skb's page fragments, two slots' worth per page. */
static int xsn_rx_add_frags(struct sk_buff *skb, const u8 *src, u32 len)
{
	struct skb_shared_info *si = skb_shinfo(skb);

	while (len) {
		skb_frag_t *frag = si->nr_frags ? &si->frags[si->nr_frags - 1] : NULL;
		u32 used = frag ? skb_frag_size(frag) : PAGE_SIZE;
		struct page *page;
		u32 chunk;

		if (used == PAGE_SIZE) {
			if (si->nr_frags >= MAX_SKB_FRAGS)
				return -EMSGSIZE;
			page = alloc_page(GFP_ATOMIC | __GFP_NOWARN);
			if (!page)
				return -ENOMEM;
			skb_add_rx_frag(skb, si->nr_frags, page, 0, 0, PAGE_SIZE);
			continue;
		}
		chunk = min_t(u32, len, PAGE_SIZE - used);
		memcpy(page_address(skb_frag_page(frag)) + used, src, chunk);
		skb_frag_size_add(frag, chunk);
		skb->len += chunk;
		skb->data_len += chunk;
		src += chunk;
		len -= chunk;
	}
	return 0;
}

/* One slot's data into the frame being assembled: its head is linear. */
static int xsn_rx_copy(struct xsn_priv *np, const u8 *data, const struct xsn_rx_step *s)
{
	if (s->at)
		return np->rx_skb ? xsn_rx_add_frags(np->rx_skb, data, s->len) : -EPROTO;
	xsn_rx_discard(np);
	np->rx_skb = napi_alloc_skb(&np->napi, s->len);
	if (!np->rx_skb)
		return -ENOMEM;
	skb_put_data(np->rx_skb, data, s->len);
	return 0;
}

static int xsn_rx_gso(struct sk_buff *skb, const struct xsn_rx_frame *f)
{
	struct skb_shared_info *si = skb_shinfo(skb);
	unsigned int thlen = sizeof(struct tcphdr);
	unsigned int check = offsetof(struct tcphdr, check);
	unsigned int type, size, payload;

	BUILD_BUG_ON(XSN_GSO_MIN_TCP_SIZE != TCP_MIN_GSO_SIZE);

	switch (f->gso_type) {
	case XS_NET_GSO_TCPV4:
		type = SKB_GSO_TCPV4;
		break;
	case XS_NET_GSO_TCPV6:
		type = SKB_GSO_TCPV6;
		break;
	case XS_NET_GSO_UDP_L4:
		type = SKB_GSO_UDP_L4;
		thlen = sizeof(struct udphdr);
		check = offsetof(struct udphdr, check);
		break;
	default:
		return -EINVAL;
	}
	if (f->csum_offset != check || !pskb_may_pull(skb, f->csum_start + thlen))
		return -EINVAL;
	if (f->gso_flags & XS_NET_GSO_FLAG_ECN)
		type |= SKB_GSO_TCP_ECN;
	payload = skb->len - f->csum_start - thlen;
	/* UDP: at most 64 segments; TCP: segments of at least 8 bytes. */
	size = xsn_gso_size(f->gso_type, f->gso_size, payload);
	if (!size)
		return -EMSGSIZE;
	/* Too small to be cut: an ordinary frame with a partial checksum. */
	if (payload <= size)
		return 0;
	/* The stack checks the headers of a dodgy frame before it cuts it. */
	si->gso_size = size;
	si->gso_type = type | SKB_GSO_DODGY;
	si->gso_segs = 0;
	return 0;
}

/* Offload state from the frame's first slot; skb->data is its start. */
static int xsn_rx_offload(struct xsn_priv *np, struct sk_buff *skb,
			  const struct xsn_rx_frame *f)
{
	/* The switch may cut a frame anywhere: its headers must be linear. */
	if (!pskb_may_pull(skb, ETH_HLEN))
		return -EINVAL;
	if (f->csum_blank) {
		if (!pskb_may_pull(skb, f->csum_start + f->csum_offset + 2) ||
		    !skb_partial_csum_set(skb, f->csum_start, f->csum_offset))
			return -EINVAL;
	} else if (f->data_validated && (np->dev->features & NETIF_F_RXCSUM)) {
		skb->ip_summed = CHECKSUM_UNNECESSARY;
	}
	return f->gso_type ? xsn_rx_gso(skb, f) : 0;
}

static void xsn_rx_deliver(struct xsn_priv *np, const struct xsn_rx_frame *f)
{
	struct sk_buff *skb = np->rx_skb;

	np->rx_skb = NULL;
	if (!skb || skb->len != f->len || xsn_rx_offload(np, skb, f)) {
		xsn_count(np, XSN_RX_DROP_REFUSED, 1);
		dev_kfree_skb_any(skb);
		return;
	}
	skb->protocol = eth_type_trans(skb, np->dev);
	xsn_count(np, XSN_RX_FRAMES, 1);
	xsn_count(np, XSN_RX_BYTES, f->len);
	napi_gro_receive(&np->napi, skb);
}

static void xsn_rx_refused(struct xsn_priv *np, int rc)
{
	xsn_rx_discard(np);
	xsn_count(np, rc == -EMSGSIZE ? XSN_RX_DROP_TOO_BIG : XSN_RX_DROP_REFUSED, 1);
	if (net_ratelimit())
		netdev_warn(np->dev, "dropped a frame the switch sent against the rules (%d)\n", rc);
}

/* Consumes slot rx.ours; returns 1 if a frame ended (taken or dropped). */
static int xsn_rx_slot(struct xsn_priv *np)
{
	const u8 *slot = xs_lane_slot(&np->rx, np->rx.ours);
	struct xs_net_slot_header h;
	struct xsn_rx_step s;
	int rc;

	memcpy(&h, slot, sizeof(h));
	rc = xsn_rx_chain_push(&np->chain, &h, &s);
	if (rc) {
		xsn_rx_refused(np, rc);
		return 1;
	}
	if (s.skip)
		return !s.more;
	rc = xsn_rx_copy(np, slot + XS_NET_SLOT_HEADER_LEN, &s);
	if (rc) {
		xsn_rx_discard(np);
		xsn_rx_chain_drop(&np->chain, s.more);
		xsn_count(np, rc == -ENOMEM ? XSN_RX_DROP_NO_MEMORY :
			  rc == -EMSGSIZE ? XSN_RX_DROP_TOO_BIG : XSN_RX_DROP_REFUSED, 1);
		return 1;
	}
	if (!s.done)
		return 0;
	xsn_rx_deliver(np, &s.frame);
	return 1;
}

static void xsn_rx_broken(struct xsn_priv *np)
{
	if (np->rx_skb)
		xsn_count(np, XSN_RX_DROP_LANE_ERROR, 1);
	xsn_rx_discard(np);
	xsn_break(np, "the rx lane's prod is out of bounds");
}

/*
 * Up to budget frames, and at most one lane's worth of slots (a chain of
 * refused slots ends no frames); returns budget if work is left.
 */
static int xsn_rx(struct xsn_priv *np, int budget)
{
	u32 slots = 0;
	int frames = 0;
	int avail = 0;

	while (frames < budget) {
		if (!avail) {
			if (xs_lane_publish(&np->rx, false))
				xenshare_share_trigger(np->sh);
			avail = xs_lane_consumer_refresh(&np->rx);
			if (avail < 0) {
				xsn_rx_broken(np);
				return 0;
			}
			if (!avail)
				break;
		}
		if (slots++ == np->rx.slot_count) {
			frames = budget;
			break;
		}
		frames += xsn_rx_slot(np);
		np->rx.ours++;
		avail--;
	}
	if (xs_lane_publish(&np->rx, false))
		xenshare_share_trigger(np->sh);
	return frames;
}

/* The carrier follows the switch's link_state. */
static void xsn_update_link(struct xsn_priv *np)
{
	u32 link = le32_to_cpu(smp_load_acquire(&xsn_control(np)->link_state));
	bool up = link == XS_NET_LINK_UP && !test_bit(XSN_BROKEN, &np->flags);

	if (up == netif_carrier_ok(np->dev))
		return;
	/* A switch may flap link_state on every trigger: the log is bounded. */
	if (up) {
		netif_carrier_on(np->dev);
		if (net_ratelimit())
			netdev_info(np->dev, "link up\n");
	} else {
		netif_carrier_off(np->dev);
		if (net_ratelimit())
			netdev_info(np->dev, "link down\n");
	}
}

int xsn_poll(struct napi_struct *napi, int budget)
{
	struct xsn_priv *np = container_of(napi, struct xsn_priv, napi);
	int done = 0;

	if (!xsn_stopped(&np->flags)) {
		xsn_update_link(np);
		xsn_tx_wake(np);
		done = xsn_rx(np, budget);
	}
	if (done >= budget)
		return budget;
	if (napi_complete_done(napi, done) && !xsn_stopped(&np->flags) &&
	    xs_lane_prepare_wait(&np->rx, false, 0))
		napi_schedule(napi);
	return done;
}
