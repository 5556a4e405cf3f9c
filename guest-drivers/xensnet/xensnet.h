/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xensnet: a network share joined as a member, as a Linux net_device.
 * main.c binds it to the xenshare bus and negotiates; rxtx.c moves
 * frames between the lanes and the stack; parse.c holds the rules for
 * what the switch writes.
 */
#ifndef XENSNET_H
#define XENSNET_H

#include <linux/netdevice.h>
#include <linux/u64_stats_sync.h>
#include "xenshare/bus.h"
#include "xenshare/lane.h"
#include "parse.h"

/* Per-device counters; rx ones change in NAPI, tx ones under the tx lock. */
enum xsn_stat {
	XSN_RX_FRAMES,
	XSN_RX_BYTES,
	XSN_RX_DROP_REFUSED,
	XSN_RX_DROP_TOO_BIG,
	XSN_RX_DROP_LANE_ERROR,
	XSN_RX_DROP_NO_MEMORY,
	XSN_TX_FRAMES,
	XSN_TX_BYTES,
	XSN_TX_DROP_REFUSED,
	XSN_TX_DROP_TOO_BIG,
	XSN_TX_DROP_LANE_ERROR,
	XSN_TX_DROP_NO_MEMORY,
	XSN_NR_STATS
};

/* Neither lane may be touched (the flags are XSN_BROKEN, XSN_DETACHED). */
static inline bool xsn_stopped(const unsigned long *flags)
{
	return xsn_flags_stopped(READ_ONCE(*flags));
}

struct xsn_priv {
	struct net_device *dev;
	struct xenshare_device *xdev;
	struct xenshare_share *sh;
	struct napi_struct napi;
	unsigned long flags;

	u32 accepted;		/* features, fixed at probe */
	u16 mtu;		/* the port's, fixed at probe */

	/* tx: under the netdev tx lock */
	struct xs_lane tx;
	u32 tx_max_slots;	/* slots of the longest frame we may send */
	struct u64_stats_sync tx_syncp;

	/* rx: in NAPI only */
	struct xs_lane rx;
	struct xsn_rx_chain chain;
	struct sk_buff *rx_skb;	/* the frame being assembled */
	struct u64_stats_sync rx_syncp;

	u64 stats[XSN_NR_STATS];
};

static inline struct xs_net_control *xsn_control(struct xsn_priv *np)
{
	return xenshare_share_ptr(np->sh, 0, sizeof(struct xs_net_control));
}

void xsn_count(struct xsn_priv *np, enum xsn_stat i, u64 n);
void xsn_break(struct xsn_priv *np, const char *why);

netdev_tx_t xsn_start_xmit(struct sk_buff *skb, struct net_device *dev);
netdev_features_t xsn_features_check(struct sk_buff *skb, struct net_device *dev,
				     netdev_features_t features);
int xsn_poll(struct napi_struct *napi, int budget);
void xsn_rx_discard(struct xsn_priv *np);

#endif /* XENSNET_H */
