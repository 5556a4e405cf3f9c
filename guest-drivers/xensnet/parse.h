/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * xensnet's parsers of switch-written bytes (docs/protocol.md "Network
 * share (xensnet)"): the control fields and the rx lane's slot chains.
 * Pure functions over private copies, so they build in the kernel and in
 * userspace (guest-drivers/fuzz/xensnet_rx.c). The rules follow share-hal's
 * wire::net (ControlRepr::parse, negotiate, FrameAssembler).
 */
#ifndef XENSNET_PARSE_H
#define XENSNET_PARSE_H

#include "xenshare/kcompat.h"
#include "xenshare/wire.h"

/* The switch's control fields, validated. */
struct xsn_control {
	u32 offered;		/* features_offered, unknown bits cleared */
	u8 mac[6];
	u16 mtu;		/* the port's largest */
};

int xsn_parse_control(const struct xs_net_control *raw, struct xsn_control *out);

/*
 * What to accept of the offer: offered & supported; GSO only together
 * with CSUM_BLANK and on a share whose lanes hold a GSO frame; JUMBO only
 * if the lanes hold a frame of the offered MTU.
 */
u32 xsn_negotiate(const struct xsn_control *c, u32 supported, u32 numpages);

/* The MTU both sides use once accepted is decided. */
u16 xsn_mtu(const struct xsn_control *c, u32 accepted);

/* A frame the rx lane finished, with its first slot's offload fields. */
struct xsn_rx_frame {
	u32 len;
	u32 slots;
	bool csum_blank;
	bool data_validated;
	u16 csum_start;
	u16 csum_offset;
	u8 gso_type;		/* XS_NET_GSO_* */
	u8 gso_flags;
	u16 gso_size;
};

/* What to do with one slot's data. */
struct xsn_rx_step {
	bool skip;		/* part of a refused chain: drop its data */
	bool more;		/* the slot's MORE bit */
	bool done;		/* this slot ends a good frame: frame is valid */
	u32 at;			/* frame offset of the slot's data */
	u32 len;		/* bytes of data in the slot */
	struct xsn_rx_frame frame;
};

/*
 * The receiver rules as state (share-hal's FrameAssembler): limits fixed
 * at init from our own negotiation, per-chain state after.
 */
struct xsn_rx_chain {
	u32 features;		/* accepted */
	u32 mtu_frame;		/* mtu + 18 */
	u32 max_frame;		/* largest frame of any kind */
	u32 frame_max;		/* of the chain in progress */
	u32 frame_max_slots;
	u32 len;
	u32 slots;
	bool in_frame;
	bool skipping;
	struct xs_net_slot_header first;	/* private copy, parsed */
};

int xsn_rx_chain_init(struct xsn_rx_chain *c, u16 mtu, u32 features);

/*
 * Feed the next slot header (a private copy). Returns 0 with step filled
 * in, or a negative errno for a refused chain: -EMSGSIZE (frame or chain
 * too long), -EOPNOTSUPP (a feature not accepted), -EINVAL (anything
 * else). After an error the rest of the chain comes back as skip steps.
 */
int xsn_rx_chain_push(struct xsn_rx_chain *c, const struct xs_net_slot_header *h,
		      struct xsn_rx_step *step);

/*
 * The caller dropped the chain in progress (no memory): skip the rest of
 * it if the last slot pushed had MORE.
 */
void xsn_rx_chain_drop(struct xsn_rx_chain *c, bool more);

/* xsn_priv.flags */
#define XSN_BROKEN 0	/* the switch broke the protocol: device stopped */
#define XSN_DETACHED 1	/* no share (the domain was suspended); under rtnl */

/* Neither lane may be touched (flags: a snapshot of xsn_priv.flags). */
static inline bool xsn_flags_stopped(unsigned long flags)
{
	return flags & ((1UL << XSN_BROKEN) | (1UL << XSN_DETACHED));
}

/*
 * The features to accept at probe, into *out: of what the accept=
 * parameter allows, what negotiation keeps. A port whose link is up
 * already (link_up) was negotiated by an earlier probe, and the switch
 * keeps what it read then (prev, read back from the share): those, as
 * negotiation checks them, if accept= allows them all; if it does not
 * (or a switch raised link_state and wrote prev itself), -EOPNOTSUPP:
 * the switch cannot widen accept=, and the port cannot be narrowed
 * without a new one.
 */
int xsn_choose_features(const struct xsn_control *c, u32 accept, bool link_up,
			u32 prev, u32 numpages, u32 *out);

/* What a trigger from the switch finds, for xsn_trigger_is_work(). */
struct xsn_trigger {
	unsigned long flags;	/* xsn_priv.flags */
	bool rx_produced;	/* the rx lane's prod moved past ours */
	bool tx_stopped;	/* the tx queue waits for room */
	int tx_free;		/* free tx slots, or -EPROTO for a bad cons */
	u32 tx_max_slots;	/* what the stopped queue waits for */
	bool link_up;		/* link_state says UP */
	bool carrier;		/* our carrier is on */
};

/*
 * Whether a trigger gave NAPI something to do; if not, the trigger was
 * spurious (late EOI: Xen backs off a port that floods them).
 */
bool xsn_trigger_is_work(const struct xsn_trigger *t);

/*
 * Whether NAPI may wake the stopped tx queue: the device is attached and
 * not broken, the queue is stopped and the device up.
 */
bool xsn_tx_may_wake(unsigned long flags, bool queue_stopped, bool running);

/*
 * Segmentation of a received GSO frame with payload bytes after its L4
 * header: the gso_size to give the stack, or 0 to drop the frame. A UDP
 * segment is a datagram whose size is the sender's: more than
 * XSN_GSO_MAX_UDP_SEGS of them from one frame is refused (Linux's
 * UDP_MAX_SEGMENTS, as its virtio_net_hdr_to_skb checks). TCP cuts
 * anywhere: a size below XSN_GSO_MIN_TCP_SIZE is raised to it (Linux's
 * TCP_MIN_GSO_SIZE), and more than XSN_GSO_MAX_TCP_SEGS segments of that
 * size is refused (the switch's own bound, wire::net GSO_MAX_SEGS: an
 * honest switch never sends more, and a stack forwarding the frame would
 * make that many skbs). The UDP limit keeps our own UDP GSO frames in
 * software when they would have more segments (xsn_features_check).
 */
#define XSN_GSO_MAX_UDP_SEGS XS_NET_GSO_MAX_UDP_SEGS
#define XSN_GSO_MAX_TCP_SEGS XS_NET_GSO_MAX_SEGS
#define XSN_GSO_MIN_TCP_SIZE 8
u32 xsn_gso_size(u8 gso_type, u16 gso_size, u32 payload);

#endif /* XENSNET_PARSE_H */
