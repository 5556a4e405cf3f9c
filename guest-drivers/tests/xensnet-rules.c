// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * xensnet's parsers (guest-drivers/xensnet/parse.c) driven from text, so
 * share-hal/tests/c_xensnet_rules.rs can compare every verdict with the
 * code of record (wire::net's ControlRepr, negotiate, FrameAssembler) on
 * the same inputs. One output line per input line:
 *
 *   chain MTU FEATURES      -> chain ok | chain err
 *   slot HEX32              -> skip MORE | err size|feature|invalid |
 *                              append AT LEN | done AT LEN FLEN SLOTS CSUM DV GSO
 *   control HEX128 NUMPAGES -> control err | control ok OFFERED MAC MTU ACCEPTED
 */
#include <stdio.h>
#include <string.h>
#include "xenshare/kcompat.h"
#include "xenshare/wire.h"
#include "../xensnet/parse.h"

static int unhex(const char *s, u8 *out, size_t n)
{
	size_t i;
	unsigned int b;

	for (i = 0; i < n; i++) {
		if (sscanf(s + 2 * i, "%2x", &b) != 1)
			return -1;
		out[i] = b;
	}
	return 0;
}

static const char *err_class(int rc)
{
	if (rc == -EMSGSIZE)
		return "size";
	if (rc == -EOPNOTSUPP)
		return "feature";
	return "invalid";
}

static void slot(struct xsn_rx_chain *c, const char *hex)
{
	struct xs_net_slot_header h;
	struct xsn_rx_step s;
	const struct xsn_rx_frame *f = &s.frame;
	int rc;

	if (unhex(hex, (u8 *)&h, sizeof(h))) {
		puts("bad input");
		return;
	}
	rc = xsn_rx_chain_push(c, &h, &s);
	if (rc)
		printf("err %s\n", err_class(rc));
	else if (s.skip)
		printf("skip %d\n", s.more);
	else if (!s.done)
		printf("append %u %u\n", s.at, s.len);
	else
		printf("done %u %u %u %u %s%u:%u %d %u:%u:%u\n", s.at, s.len, f->len, f->slots,
		       f->csum_blank ? "" : "-", f->csum_start, f->csum_offset,
		       f->data_validated, f->gso_type, f->gso_size, f->gso_flags);
}

static void control(const char *hex, u32 numpages)
{
	struct xs_net_control raw;
	struct xsn_control c;

	if (unhex(hex, (u8 *)&raw, sizeof(raw)) || xsn_parse_control(&raw, &c)) {
		puts("control err");
		return;
	}
	printf("control ok %u %02x%02x%02x%02x%02x%02x %u %u\n", c.offered, c.mac[0], c.mac[1],
	       c.mac[2], c.mac[3], c.mac[4], c.mac[5], c.mtu,
	       xsn_negotiate(&c, XS_NET_F_ALL, numpages));
}

int main(void)
{
	static char line[512];
	static struct xsn_rx_chain c;
	char hex[256];
	unsigned int a, b;

	while (fgets(line, sizeof(line), stdin)) {
		if (sscanf(line, "chain %u %u", &a, &b) == 2)
			puts(xsn_rx_chain_init(&c, a, b) ? "chain err" : "chain ok");
		else if (sscanf(line, "slot %32s", hex) == 1)
			slot(&c, hex);
		else if (sscanf(line, "control %128s %u", hex, &a) == 2)
			control(hex, a);
		else
			puts("bad input");
	}
	return 0;
}
