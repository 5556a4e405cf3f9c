// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * xensblk's parsers (guest-drivers/xensblk/parse.c) driven from text, so
 * share-hal/tests/c_xensblk_rules.rs can compare every verdict with the
 * code of record (wire::blk's ControlRepr and ResponseRepr, and the
 * member's in-flight check) on the same inputs. One output line per input
 * line:
 *
 *   control HEX128            -> control err |
 *                                control ok FEATURES RO CAPACITY MAX_INDIRECT
 *   response HEX32 NR IN_FLIGHT_MASK
 *                             -> response err status | response err id |
 *                                response ok ID OP STATUS
 *
 * For a response, ids 0..NR-1 (NR <= 64) are in flight where bit i of the
 * hexadecimal mask is set.
 */
#include <stdio.h>
#include <string.h>
#include "xenshare/kcompat.h"
#include "xenshare/wire.h"
#include "../xensblk/parse.h"

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

static void control(const char *hex)
{
	struct xs_blk_control raw;
	struct xsblk_control c;

	if (strlen(hex) < 2 * sizeof(raw) || unhex(hex, (u8 *)&raw, sizeof(raw))) {
		printf("bad input\n");
		return;
	}
	if (xsblk_parse_control(&raw, &c)) {
		printf("control err\n");
		return;
	}
	printf("control ok %u %d %llu %u\n", c.features, c.read_only,
	       (unsigned long long)c.capacity, c.max_indirect_segments);
}

static void response(const char *args)
{
	struct xs_blk_response raw;
	struct xsblk_response r;
	char hex[2 * sizeof(raw) + 1];
	unsigned long long mask;
	u8 in_flight[64];
	unsigned int nr, i;
	int err;

	if (sscanf(args, "%32s %u %llx", hex, &nr, &mask) != 3 || nr > 64 ||
	    strlen(hex) != 2 * sizeof(raw) || unhex(hex, (u8 *)&raw, sizeof(raw))) {
		printf("bad input\n");
		return;
	}
	for (i = 0; i < nr; i++)
		in_flight[i] = (mask >> i) & 1;
	err = xsblk_parse_response(&raw, in_flight, nr, &r);
	if (err == -EPROTO)
		printf("response err status\n");
	else if (err == -ENOENT)
		printf("response err id\n");
	else if (err)
		printf("response err %d\n", err);
	else
		printf("response ok %u %u %d\n", r.id, r.op, r.status);
}

int main(void)
{
	char line[512];

	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "control ", 8))
			control(line + 8);
		else if (!strncmp(line, "response ", 9))
			response(line + 9);
		else
			printf("bad input\n");
	}
	return 0;
}
