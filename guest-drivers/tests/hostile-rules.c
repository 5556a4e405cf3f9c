// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * What a hostile backend can make xensnet and xensblk do, decided by
 * their parse.c and checked here in userspace (issue 18): one line per
 * check, "ok NAME" or "FAIL NAME: why", and exit status 1 if any failed.
 * share-hal/tests/c_hostile_rules.rs compiles and runs it.
 *
 *  - xensnet: a switch that raises link_state before the member announces
 *    cannot widen what accept= allows; a trigger while the tx queue waits
 *    for room is work only if the room is there; a detached or broken
 *    device's queue is never woken; a UDP GSO frame of more than 64
 *    segments is refused, a TCP segment size below 8 raised.
 *  - xensblk: an indirect page and a bounce page hold nothing but the
 *    request's segments and data; a trigger while a request waits for
 *    room is work only if the room is there; the segment rules.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "xenshare/kcompat.h"
#include "xenshare/wire.h"
#include "../xensnet/parse.h"
#include "../xensblk/parse.h"

static int failed;
static int passed;

static void check(const char *name, bool ok, const char *why)
{
	if (ok) {
		printf("ok %s\n", name);
		passed++;
	} else {
		printf("FAIL %s: %s\n", name, why);
		failed++;
	}
}

/* ---- xensnet ---------------------------------------------------------- */

static struct xsn_control net_offer(void)
{
	struct xsn_control c = {
		.offered = XS_NET_F_ALL,
		.mac = { 0x02, 0, 0, 0, 0, 1 },
		.mtu = 1500,
	};

	return c;
}

static void net_accept(void)
{
	struct xsn_control c = net_offer();
	u32 f = ~0u;
	int rc;

	/* accept=0 on a fresh port, then on one the switch says is up. */
	rc = xsn_choose_features(&c, 0, false, 0, 66, &f);
	check("net accept=0 on a port not up accepts nothing", !rc && f == 0,
	      "features accepted");
	f = ~0u;
	rc = xsn_choose_features(&c, 0, true, XS_NET_F_ALL, 66, &f);
	check("net accept=0 holds when the switch raised link_state before the announce",
	      rc == -EOPNOTSUPP && f == ~0u, "the switch's features_accepted widened accept=");
	rc = xsn_choose_features(&c, XS_NET_F_CSUM_BLANK, true, XS_NET_F_ALL, 66, &f);
	check("net accept=CSUM_BLANK on a port up with more is refused", rc == -EOPNOTSUPP,
	      "more than accept= allows");
	/* A real re-probe: the switch uses what the earlier probe accepted. */
	rc = xsn_choose_features(&c, XS_NET_F_ALL, true, XS_NET_F_CSUM_BLANK, 66, &f);
	check("net a re-probe keeps the features the switch uses",
	      !rc && f == XS_NET_F_CSUM_BLANK, "not the earlier probe's features");
	rc = xsn_choose_features(&c, XS_NET_F_ALL, false, 0, 66, &f);
	check("net accept=all on a fresh GSO share takes the whole offer",
	      !rc && f == XS_NET_F_ALL, "not the whole offer");
	/* The switch's prev never brings GSO onto a share too small for it. */
	rc = xsn_choose_features(&c, XS_NET_F_ALL, true, XS_NET_F_ALL, 8, &f);
	check("net prev cannot bring GSO onto a small share", !rc && !(f & XS_NET_F_GSO),
	      "GSO on 8 pages");
}

static void net_trigger(void)
{
	struct xsn_trigger t = {
		.tx_stopped = true,
		.tx_free = 3,
		.tx_max_slots = 33,
	};

	check("net a trigger while tx waits and no room came is spurious",
	      !xsn_trigger_is_work(&t), "counted as work");
	t.tx_free = 33;
	check("net a trigger that brought the room tx waits for is work",
	      xsn_trigger_is_work(&t), "counted as spurious");
	t.tx_free = -EPROTO;
	check("net a bad cons while tx waits is work (NAPI breaks the device)",
	      xsn_trigger_is_work(&t), "counted as spurious");
	t.tx_free = 0;
	t.rx_produced = true;
	check("net rx frames are work", xsn_trigger_is_work(&t), "counted as spurious");
	t.rx_produced = false;
	t.link_up = true;
	check("net a link change is work", xsn_trigger_is_work(&t), "counted as spurious");
	t.carrier = true;
	check("net the same link is no work", !xsn_trigger_is_work(&t), "counted as work");
	t.flags = 1UL << XSN_DETACHED;
	t.rx_produced = true;
	check("net nothing is work for a detached device", !xsn_trigger_is_work(&t),
	      "counted as work");
	t.flags = 1UL << XSN_BROKEN;
	check("net nothing is work for a broken device", !xsn_trigger_is_work(&t),
	      "counted as work");
}

static void net_wake(void)
{
	check("net a stopped queue of a running device may wake",
	      xsn_tx_may_wake(0, true, true), "refused");
	check("net a detached device's queue never wakes",
	      !xsn_tx_may_wake(1UL << XSN_DETACHED, true, true), "woken while detached");
	check("net a broken device's queue never wakes",
	      !xsn_tx_may_wake(1UL << XSN_BROKEN, true, true), "woken while broken");
	check("net a device that is down does not wake", !xsn_tx_may_wake(0, true, false),
	      "woken while down");
}

static void net_gso(void)
{
	u32 payload = 65535 - 20 - 8;
	u32 need = DIV_ROUND_UP(payload, XSN_GSO_MAX_UDP_SEGS);
	char why[96];

	check("net UDP gso_size 1 on a 64 KiB frame is refused",
	      xsn_gso_size(XS_NET_GSO_UDP_L4, 1, payload) == 0, "accepted (~65 000 segments)");
	snprintf(why, sizeof(why), "gso_size %u refused", need);
	check("net UDP at exactly 64 segments is taken",
	      xsn_gso_size(XS_NET_GSO_UDP_L4, need, payload) == need, why);
	check("net UDP at 65 segments is refused",
	      xsn_gso_size(XS_NET_GSO_UDP_L4, need - 1, payload) == 0, "accepted");
	check("net UDP gso_size 1 on a 64-byte payload is taken",
	      xsn_gso_size(XS_NET_GSO_UDP_L4, 1, 64) == 1, "refused");
	check("net UDP gso_size 0 is refused", xsn_gso_size(XS_NET_GSO_UDP_L4, 0, 10) == 0,
	      "accepted");
	check("net TCP gso_size 1 is raised to 8",
	      xsn_gso_size(XS_NET_GSO_TCPV4, 1, 8 * XSN_GSO_MAX_TCP_SEGS) == 8, "not 8");
	check("net TCP gso_size 1448 is kept",
	      xsn_gso_size(XS_NET_GSO_TCPV6, 1448, payload) == 1448, "changed");
	/* A switch sending 1-byte TCP segments (netback-uk hostile=gso-tcp):
	 * ~8000 segments of 8 bytes for a stack that forwards the frame. */
	check("net TCP gso_size 1 on a 64 KiB frame is refused",
	      xsn_gso_size(XS_NET_GSO_TCPV4, 1, payload) == 0, "accepted (~8000 segments)");
	need = DIV_ROUND_UP(payload, XSN_GSO_MAX_TCP_SEGS);
	snprintf(why, sizeof(why), "gso_size %u refused", need);
	check("net TCP at exactly 256 segments is taken",
	      xsn_gso_size(XS_NET_GSO_TCPV4, need, payload) == need, why);
	check("net TCP at 257 segments is refused",
	      xsn_gso_size(XS_NET_GSO_TCPV6, need - 1, payload) == 0, "accepted");
}

/* ---- xensblk ---------------------------------------------------------- */

static void blk_indirect(void)
{
	static u8 page[XS_PAGE_SIZE];
	struct xs_blk_segment segs[3];
	u32 i, stale = 0;

	memset(page, 0xa5, sizeof(page));	/* what the page held before */
	for (i = 0; i < 3; i++)
		xsblk_segment(100 + i, 0, XS_PAGE_SIZE, &segs[i]);
	memcpy(page, segs, sizeof(segs));	/* the driver writes them in place */
	xsblk_finish_indirect(page, 3);
	for (i = sizeof(segs); i < sizeof(page); i++)
		stale += page[i] != 0;
	check("blk an indirect page holds its segments", !memcmp(page, segs, sizeof(segs)),
	      "segments differ");
	check("blk an indirect page holds nothing after its segments", stale == 0,
	      "stale bytes after the segments");
}

static void blk_bounce(void)
{
	static u8 bounce[XS_PAGE_SIZE];
	static u8 data[XS_PAGE_SIZE];
	u32 i, stale = 0;

	memset(data, 0x3c, sizeof(data));
	/* A write of one sector in the middle of the page. */
	memset(bounce, 0xa5, sizeof(bounce));
	xsblk_bounce_fill(bounce, data, 1024, 512, true);
	for (i = 0; i < sizeof(bounce); i++)
		stale += bounce[i] != ((i >= 1024 && i < 1536) ? 0x3c : 0);
	check("blk a write's bounce page holds its data and zeroes", stale == 0,
	      "other bytes granted with it");
	/* A read: the server writes the segment; nothing to read before. */
	memset(bounce, 0xa5, sizeof(bounce));
	xsblk_bounce_fill(bounce, NULL, 512, 1024, false);
	stale = 0;
	for (i = 0; i < sizeof(bounce); i++)
		stale += bounce[i] != 0;
	check("blk a read's bounce page holds zeroes", stale == 0,
	      "other bytes granted with it");
}

static void blk_segments(void)
{
	struct xs_blk_segment s;

	check("blk a whole page is one segment, sectors 0..7",
	      !xsblk_segment(7, 0, XS_PAGE_SIZE, &s) && s.first_sect == 0 && s.last_sect == 7 &&
	      le32_to_cpu(s.gref) == 7, "refused or wrong");
	check("blk a sector at 3584 is sectors 7..7",
	      !xsblk_segment(7, 3584, 512, &s) && s.first_sect == 7 && s.last_sect == 7,
	      "refused or wrong");
	check("blk an empty segment is refused", xsblk_segment(7, 0, 0, &s) == -EINVAL,
	      "accepted");
	check("blk a segment past the page is refused", xsblk_segment(7, 3584, 1024, &s) == -EINVAL,
	      "accepted");
	check("blk an unaligned segment is refused", xsblk_segment(7, 100, 512, &s) == -EINVAL,
	      "accepted");
	check("blk an offset that wraps is refused",
	      xsblk_segment(7, 0xfffffe00u, 1024, &s) == -EINVAL, "accepted");
}

static void blk_trigger(void)
{
	check("blk a trigger while a request waits and no room came is spurious",
	      !xsblk_trigger_is_work(0, true, 0), "counted as work");
	check("blk a trigger that brought room is work", xsblk_trigger_is_work(0, true, 1),
	      "counted as spurious");
	check("blk a bad request index is work (the disk breaks)",
	      xsblk_trigger_is_work(0, true, -EPROTO), "counted as spurious");
	check("blk responses are work", xsblk_trigger_is_work(2, false, 0),
	      "counted as spurious");
	check("blk room nobody waits for is no work", !xsblk_trigger_is_work(0, false, 5),
	      "counted as work");
}

int main(void)
{
	net_accept();
	net_trigger();
	net_wake();
	net_gso();
	blk_indirect();
	blk_bounce();
	blk_segments();
	blk_trigger();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
