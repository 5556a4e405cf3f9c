// SPDX-License-Identifier: GPL-2.0
/*
 * xensnet: the Linux guest's LAN device on a xen-share network share
 * (docs/protocol.md "Network share (xensnet)"). xenshare.ko hands us one
 * xenshare_device per net member entry of the domain's vdevice page, its
 * share already mapped; each becomes an xsn%d net_device.
 *
 * The switch (netback-uk) writes the control fields before it grants the
 * share. We copy them once, accept a subset of its offer, say READY and
 * trigger; it answers with link_state UP, which turns the carrier on.
 * A switch that breaks the protocol stops this device only.
 */
#include <linux/ethtool.h>
#include <linux/etherdevice.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>
#include <xen/events.h>
#include "xensnet.h"

/* What this driver can honour; the accept parameter narrows it. */
#define XSN_SUPPORTED XS_NET_F_ALL

static unsigned int accept = XSN_SUPPORTED;
module_param(accept, uint, 0444);
MODULE_PARM_DESC(accept, "Features to accept of a switch's offer (bits of docs/protocol.md, default all)");

static const char xsn_stat_names[XSN_NR_STATS][ETH_GSTRING_LEN] = {
	[XSN_RX_FRAMES] = "rx_frames",
	[XSN_RX_BYTES] = "rx_bytes",
	[XSN_RX_DROP_REFUSED] = "rx_drop_refused",
	[XSN_RX_DROP_TOO_BIG] = "rx_drop_too_big",
	[XSN_RX_DROP_LANE_ERROR] = "rx_drop_lane_error",
	[XSN_RX_DROP_NO_MEMORY] = "rx_drop_no_memory",
	[XSN_TX_FRAMES] = "tx_frames",
	[XSN_TX_BYTES] = "tx_bytes",
	[XSN_TX_DROP_REFUSED] = "tx_drop_refused",
	[XSN_TX_DROP_TOO_BIG] = "tx_drop_too_big",
	[XSN_TX_DROP_LANE_ERROR] = "tx_drop_lane_error",
	[XSN_TX_DROP_NO_MEMORY] = "tx_drop_no_memory",
};

static struct u64_stats_sync *xsn_syncp(struct xsn_priv *np, enum xsn_stat i)
{
	return i < XSN_TX_FRAMES ? &np->rx_syncp : &np->tx_syncp;
}

void xsn_count(struct xsn_priv *np, enum xsn_stat i, u64 n)
{
	struct u64_stats_sync *syncp = xsn_syncp(np, i);

	u64_stats_update_begin(syncp);
	np->stats[i] += n;
	u64_stats_update_end(syncp);
}

static void xsn_read_stats(struct xsn_priv *np, u64 *out)
{
	unsigned int start;
	int i;

	for (i = 0; i < XSN_NR_STATS; i++) {
		struct u64_stats_sync *syncp = xsn_syncp(np, i);

		do {
			start = u64_stats_fetch_begin(syncp);
			out[i] = np->stats[i];
		} while (u64_stats_fetch_retry(syncp, start));
	}
}

/* The switch broke the protocol: this device stops, logged once. */
void xsn_break(struct xsn_priv *np, const char *why)
{
	if (!test_and_set_bit(XSN_BROKEN, &np->flags))
		netdev_err(np->dev, "%s: the switch broke the protocol; device stopped\n", why);
	netif_carrier_off(np->dev);
	netif_stop_queue(np->dev);
}

/* ---- net_device ------------------------------------------------------ */

/*
 * What a trigger from the switch can mean: frames on the rx lane, room on
 * the tx lane the stopped queue waits for, or a change of link_state. A
 * hint only (NAPI may be consuming meanwhile); it tells Xen whether the
 * trigger was spurious.
 */
static bool xsn_triggered_for(struct xsn_priv *np)
{
	struct xsn_trigger t = { .flags = READ_ONCE(np->flags) };

	/* Detached: np->sh and the lanes are not to be read. */
	if (xsn_flags_stopped(t.flags))
		return false;
	t.rx_produced = xs_lane_peek_produced(&np->rx);
	t.tx_stopped = netif_queue_stopped(np->dev);
	t.tx_free = xs_lane_peek_free(&np->tx);
	t.tx_max_slots = np->tx_max_slots;
	t.link_up = le32_to_cpu(READ_ONCE(xsn_control(np)->link_state)) == XS_NET_LINK_UP;
	t.carrier = netif_carrier_ok(np->dev);
	return xsn_trigger_is_work(&t);
}

static irqreturn_t xsn_interrupt(int irq, void *data)
{
	struct xsn_priv *np = data;
	bool work = xsn_triggered_for(np);

	if (work)
		napi_schedule(&np->napi);
	/* The port was masked until now (late EOI): one trigger at a time. */
	xen_irq_lateeoi(irq, work ? 0 : XEN_EOI_FLAG_SPURIOUS);
	return IRQ_HANDLED;
}

static int xsn_open(struct net_device *dev)
{
	struct xsn_priv *np = netdev_priv(dev);

	/* Detached: reconnect() enables NAPI and the queue. */
	if (test_bit(XSN_DETACHED, &np->flags))
		return 0;
	napi_enable(&np->napi);
	netif_start_queue(dev);
	/* Catch up on the link and on frames that came while we were down. */
	napi_schedule(&np->napi);
	return 0;
}

static int xsn_stop(struct net_device *dev)
{
	struct xsn_priv *np = netdev_priv(dev);

	netif_stop_queue(dev);
	if (!test_bit(XSN_DETACHED, &np->flags))
		napi_disable(&np->napi);
	return 0;
}

static void xsn_get_stats64(struct net_device *dev, struct rtnl_link_stats64 *st)
{
	u64 s[XSN_NR_STATS];

	xsn_read_stats(netdev_priv(dev), s);
	st->rx_packets = s[XSN_RX_FRAMES];
	st->rx_bytes = s[XSN_RX_BYTES];
	st->rx_dropped = s[XSN_RX_DROP_REFUSED] + s[XSN_RX_DROP_TOO_BIG] +
			 s[XSN_RX_DROP_LANE_ERROR] + s[XSN_RX_DROP_NO_MEMORY];
	st->rx_length_errors = s[XSN_RX_DROP_TOO_BIG];
	st->tx_packets = s[XSN_TX_FRAMES];
	st->tx_bytes = s[XSN_TX_BYTES];
	st->tx_dropped = s[XSN_TX_DROP_REFUSED] + s[XSN_TX_DROP_TOO_BIG] +
			 s[XSN_TX_DROP_LANE_ERROR] + s[XSN_TX_DROP_NO_MEMORY];
}

static const struct net_device_ops xsn_netdev_ops = {
	.ndo_open = xsn_open,
	.ndo_stop = xsn_stop,
	.ndo_start_xmit = xsn_start_xmit,
	.ndo_features_check = xsn_features_check,
	.ndo_get_stats64 = xsn_get_stats64,
	.ndo_validate_addr = eth_validate_addr,
};

/* ---- ethtool --------------------------------------------------------- */

static void xsn_get_drvinfo(struct net_device *dev, struct ethtool_drvinfo *info)
{
	struct xsn_priv *np = netdev_priv(dev);

	strscpy(info->driver, KBUILD_MODNAME, sizeof(info->driver));
	strscpy(info->bus_info, dev_name(&np->xdev->dev), sizeof(info->bus_info));
}

static int xsn_get_sset_count(struct net_device *dev, int sset)
{
	return sset == ETH_SS_STATS ? XSN_NR_STATS : -EOPNOTSUPP;
}

static void xsn_get_strings(struct net_device *dev, u32 sset, u8 *data)
{
	if (sset == ETH_SS_STATS)
		memcpy(data, xsn_stat_names, sizeof(xsn_stat_names));
}

static void xsn_get_ethtool_stats(struct net_device *dev, struct ethtool_stats *stats,
				  u64 *data)
{
	xsn_read_stats(netdev_priv(dev), data);
}

static const struct ethtool_ops xsn_ethtool_ops = {
	.get_drvinfo = xsn_get_drvinfo,
	.get_link = ethtool_op_get_link,
	.get_sset_count = xsn_get_sset_count,
	.get_strings = xsn_get_strings,
	.get_ethtool_stats = xsn_get_ethtool_stats,
};

/* ---- the xenshare bus ------------------------------------------------ */

/* The switch's control fields in share sh, copied once and checked. */
static int xsn_read_control(struct xenshare_device *xdev, struct xenshare_share *sh,
			    struct xsn_control *c)
{
	const struct xs_net_control *live;
	struct xs_net_control raw;

	live = xenshare_share_ptr(sh, 0, sizeof(raw));
	if (!live)
		return -EINVAL;
	memcpy(&raw, live, sizeof(raw));
	if (xsn_parse_control(&raw, c)) {
		dev_err(&xdev->dev, "the switch's control fields are not valid\n");
		return -EINVAL;
	}
	return 0;
}

/* Both lanes, where our own layout computation puts them. */
static int xsn_attach_lanes(struct xsn_priv *np)
{
	u32 s = xs_net_slots(np->sh->nr_pages);

	if (!s)
		return -EINVAL;
	if (xs_lane_attach(&np->tx, np->sh, XS_NET_TX_LANE, xs_net_tx_slots_off(s), s,
			   XS_NET_SLOT_SIZE, true) ||
	    xs_lane_attach(&np->rx, np->sh, xs_net_rx_lane_off(s), xs_net_rx_slots_off(s), s,
			   XS_NET_SLOT_SIZE, false)) {
		dev_err(&np->xdev->dev, "the switch's lane headers are not valid\n");
		return -EPROTO;
	}
	return 0;
}

static void xsn_setup_netdev(struct xsn_priv *np, const struct xsn_control *c)
{
	struct net_device *dev = np->dev;
	netdev_features_t f = NETIF_F_SG | NETIF_F_HIGHDMA;

	dev->netdev_ops = &xsn_netdev_ops;
	dev->ethtool_ops = &xsn_ethtool_ops;
	eth_hw_addr_set(dev, c->mac);
	dev->min_mtu = XS_NET_MTU_MIN;
	dev->max_mtu = np->mtu;
	dev->mtu = np->mtu;
	if (np->accepted & XS_NET_F_CSUM_BLANK)
		f |= NETIF_F_IP_CSUM | NETIF_F_IPV6_CSUM | NETIF_F_RXCSUM;
	if (np->accepted & XS_NET_F_DATA_VALIDATED)
		f |= NETIF_F_RXCSUM;
	if (np->accepted & XS_NET_F_GSO)
		f |= NETIF_F_TSO | NETIF_F_TSO6 | NETIF_F_TSO_ECN | NETIF_F_GSO_UDP_L4;
	dev->hw_features = f;
	dev->features = f;
	netif_set_tso_max_size(dev, XS_NET_GSO_MAX_FRAME - XS_NET_FRAME_OVERHEAD);
	/* The switch drops a TCP frame of more: the stack builds none. */
	netif_set_tso_max_segs(dev, XS_NET_GSO_MAX_SEGS);
	netif_carrier_off(dev);
}

/* features_accepted, then READY with release ordering, then a trigger. */
static void xsn_announce(struct xsn_priv *np)
{
	struct xs_net_control *ctrl = xsn_control(np);

	WRITE_ONCE(ctrl->features_accepted, cpu_to_le32(np->accepted));
	smp_store_release(&ctrl->member_state, cpu_to_le32(XS_NET_MEMBER_READY));
	xenshare_share_trigger(np->sh);
}

static void xsn_close_member(struct xsn_priv *np)
{
	if (!np->sh)
		return;
	smp_store_release(&xsn_control(np)->member_state, cpu_to_le32(XS_NET_MEMBER_CLOSED));
	xenshare_share_trigger(np->sh);
}

/*
 * What to accept, into np->accepted. A port whose link is up already was
 * negotiated by an earlier probe (xensnet reloaded while xenshare kept the
 * share): the switch reads features_accepted only once, so keep what it
 * uses, checked as a fresh offer would be, if accept= allows all of it.
 * If not (or a switch raised link_state and wrote features_accepted
 * itself before we announced), the probe is refused: the switch never
 * widens accept=.
 */
static int xsn_features(struct xsn_priv *np, const struct xsn_control *c)
{
	struct xs_net_control *ctrl = xsn_control(np);
	u32 allowed = accept & XSN_SUPPORTED;
	bool up;
	u32 prev;
	int rc;

	up = le32_to_cpu(smp_load_acquire(&ctrl->link_state)) == XS_NET_LINK_UP;
	prev = le32_to_cpu(READ_ONCE(ctrl->features_accepted));
	rc = xsn_choose_features(c, allowed, up, prev, np->sh->nr_pages, &np->accepted);
	if (rc)
		dev_err(&np->xdev->dev,
			"port already up with features %#x, beyond accept=%#x: refused (a new port negotiates again)\n",
			prev, allowed);
	else if (up)
		dev_info(&np->xdev->dev, "port already up: keeping its features %#x\n", prev);
	return rc;
}

static int xsn_init_priv(struct xsn_priv *np, struct xenshare_device *xdev,
			 const struct xsn_control *c)
{
	int rc;

	np->xdev = xdev;
	np->sh = xdev->share;
	rc = xsn_features(np, c);
	if (rc)
		return rc;
	np->mtu = xsn_mtu(c, np->accepted);
	np->tx_max_slots = DIV_ROUND_UP(np->accepted & XS_NET_F_GSO ? XS_NET_GSO_MAX_FRAME :
					np->mtu + XS_NET_FRAME_OVERHEAD, XS_NET_SLOT_DATA_MAX);
	u64_stats_init(&np->rx_syncp);
	u64_stats_init(&np->tx_syncp);
	rc = xsn_rx_chain_init(&np->chain, np->mtu, np->accepted);
	if (rc)
		return rc;
	return xsn_attach_lanes(np);
}

static int xsn_probe(struct xenshare_device *xdev)
{
	struct xsn_control c;
	struct net_device *dev;
	struct xsn_priv *np;
	int rc;

	rc = xsn_read_control(xdev, xdev->share, &c);
	if (rc)
		return rc;
	dev = alloc_netdev(sizeof(*np), "xsn%d", NET_NAME_ENUM, ether_setup);
	if (!dev)
		return -ENOMEM;
	np = netdev_priv(dev);
	np->dev = dev;
	rc = xsn_init_priv(np, xdev, &c);
	if (rc)
		goto err_free;
	SET_NETDEV_DEV(dev, &xdev->dev);
	xsn_setup_netdev(np, &c);
	netif_napi_add(dev, &np->napi, xsn_poll);
	dev_set_drvdata(&xdev->dev, np);
	rc = register_netdev(dev);
	if (rc)
		goto err_napi;
	rc = xenshare_share_bind(np->sh, xsn_interrupt, netdev_name(dev), np);
	if (rc)
		goto err_unregister;
	xsn_announce(np);
	netdev_info(dev, "MAC %pM, MTU %u, features %#x of %#x offered, %u slots per lane, switch domain %u\n",
		    c.mac, np->mtu, np->accepted, c.offered, np->rx.slot_count, np->sh->owner);
	return 0;

err_unregister:
	unregister_netdev(dev);
err_napi:
	dev_set_drvdata(&xdev->dev, NULL);
	netif_napi_del(&np->napi);
err_free:
	free_netdev(dev);
	return rc;
}

static void xsn_remove(struct xenshare_device *xdev)
{
	struct xsn_priv *np = dev_get_drvdata(&xdev->dev);
	struct net_device *dev = np->dev;

	netdev_info(dev, "leaving the LAN\n");
	netif_carrier_off(dev);
	unregister_netdev(dev);
	xsn_close_member(np);
	if (np->sh)
		xenshare_share_unbind(np->sh);
	xsn_rx_discard(np);
	dev_set_drvdata(&xdev->dev, NULL);
	free_netdev(dev);
}

/*
 * The domain is being suspended: nothing may touch the share from here
 * (no xmit, no poll, no trigger); the device stays, carrier off, until
 * reconnect() gives it a port again.
 */
static void xsn_suspend(struct xenshare_device *xdev)
{
	struct xsn_priv *np = dev_get_drvdata(&xdev->dev);
	struct net_device *dev = np->dev;
	domid_t owner = np->sh->owner;

	rtnl_lock();
	/*
	 * First: from here an xmit drops, a trigger is spurious and NAPI
	 * neither polls nor wakes the queue (xsn_tx_wake checks it under the
	 * tx lock, which netif_tx_disable takes after it).
	 */
	set_bit(XSN_DETACHED, &np->flags);
	smp_mb__after_atomic();
	netif_device_detach(dev);
	/* Waits for an xmit in progress; later ones find the queue stopped. */
	netif_tx_disable(dev);
	/* No trigger comes any more; a poll in progress ends first. */
	xenshare_share_unbind(np->sh);
	if (netif_running(dev))
		napi_disable(&np->napi);
	netif_carrier_off(dev);
	xsn_rx_discard(np);
	np->sh = NULL;
	rtnl_unlock();
	netdev_info(dev, "detached from switch domain %u for the suspend\n", owner);
}

/*
 * A new port (the domain was restored, or dom0 moved the entry): the same
 * features and MTU, since the stack above was set up with them.
 */
static int xsn_reconnect(struct xenshare_device *xdev, struct xenshare_share *new_sh)
{
	struct xsn_priv *np = dev_get_drvdata(&xdev->dev);
	struct net_device *dev = np->dev;
	struct xsn_control c;
	u32 accepted;
	int rc;

	rc = xsn_read_control(xdev, new_sh, &c);
	if (rc)
		return rc;
	accepted = xsn_negotiate(&c, np->accepted, new_sh->nr_pages);
	if (accepted != np->accepted || xsn_mtu(&c, accepted) != np->mtu) {
		netdev_err(dev, "the new port of domain %u offers features %#x: cannot keep features %#x and MTU %u\n",
			   new_sh->owner, c.offered, np->accepted, np->mtu);
		return -EOPNOTSUPP;
	}
	if (!test_bit(XSN_DETACHED, &np->flags)) {
		xsn_close_member(np);
		xsn_suspend(xdev);
	}
	rtnl_lock();
	np->sh = new_sh;
	rc = xsn_attach_lanes(np);
	if (!rc)
		rc = xsn_rx_chain_init(&np->chain, np->mtu, np->accepted);
	if (!rc)
		rc = xenshare_share_bind(new_sh, xsn_interrupt, netdev_name(dev), np);
	if (rc) {
		np->sh = NULL;
		rtnl_unlock();
		return rc;
	}
	clear_bit(XSN_BROKEN, &np->flags);
	clear_bit(XSN_DETACHED, &np->flags);
	xsn_announce(np);
	if (netif_running(dev))
		napi_enable(&np->napi);
	netif_device_attach(dev);
	if (netif_running(dev))
		napi_schedule(&np->napi);
	rtnl_unlock();
	netdev_info(dev, "on switch domain %u again (%u slots per lane)\n", new_sh->owner,
		    np->rx.slot_count);
	return 0;
}

static struct xenshare_driver xsn_driver = {
	.kind = XS_KIND_NET,
	.probe = xsn_probe,
	.remove = xsn_remove,
	.reconnect = xsn_reconnect,
	.suspend = xsn_suspend,
	.driver = {
		.name = KBUILD_MODNAME,
	},
};

static int __init xsn_init(void)
{
	return xenshare_register_driver(&xsn_driver);
}
module_init(xsn_init);

static void __exit xsn_exit(void)
{
	xenshare_unregister_driver(&xsn_driver);
}
module_exit(xsn_exit);

MODULE_DESCRIPTION("xen-share network member (xsn%d LAN devices)");
MODULE_LICENSE("GPL");
MODULE_ALIAS("xenshare:t1");
