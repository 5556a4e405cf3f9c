// sources: xenshare/parse.c
/*
 * libFuzzer target for xenshare.ko's parsers of dom0- and owner-written
 * bytes (xenshare/parse.c): the vdevice header and entries, and share
 * descriptors. The input is a vdevice page followed by a descriptor page
 * (either may be short: the rest is zero); its first bytes also pick the
 * parties the descriptor is checked against. Besides "no crash, no
 * out-of-bounds access", it checks what the module relies on: an accepted
 * header or descriptor is in range, and an accepted entry emits and parses
 * back to itself.
 */
#include <stdlib.h>
#include "../xenshare/parse.h"

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static int same_entry(const struct xs_entry_repr *a, const struct xs_entry_repr *b)
{
	return a->kind == b->kind && a->role == b->role && a->flags == b->flags &&
	       a->subtype == b->subtype && a->numpages == b->numpages &&
	       a->peer == b->peer && a->share_ref == b->share_ref &&
	       a->status == b->status && !memcmp(a->param, b->param, sizeof(a->param));
}

static void fuzz_vdevice(const uint8_t *page)
{
	struct xs_vdevice_header hdr;
	struct xs_header_repr h;
	u32 i;

	memcpy(&hdr, page, sizeof(hdr));
	if (xs_parse_header(&hdr, &h) == 0)
		CHECK(h.entry_count >= 1 && h.entry_count <= XS_VDEVICE_MAX_ENTRIES);
	/* The change index is dom0's: any u32 against our own count. */
	{
		long off = xs_entry_offset(le32_to_cpu(hdr.change_index), XS_VDEVICE_MAX_ENTRIES);

		CHECK(off < 0 || (off >= XS_VDEVICE_HEADER_LEN &&
				  off + XS_VDEVICE_ENTRY_LEN <= (long)XS_PAGE_SIZE));
	}
	for (i = 0; i < XS_VDEVICE_MAX_ENTRIES; i++) {
		struct xs_vdevice_entry raw, again;
		struct xs_entry_repr e, back;
		long off = xs_entry_offset(i, XS_VDEVICE_MAX_ENTRIES);

		CHECK(off >= 0 && off + XS_VDEVICE_ENTRY_LEN <= (long)XS_PAGE_SIZE);
		memcpy(&raw, page + off, sizeof(raw));
		if (xs_parse_entry(&raw, &e))
			continue;
		CHECK(e.kind <= XS_KIND_DISK && e.role <= XS_ROLE_OWNER);
		CHECK(e.numpages <= XS_SHARE_MAX_PAGES);
		CHECK(!(e.flags & ~XS_ENTRY_FLAGS_ALL));
		CHECK(!(e.flags & XS_ENTRY_READ_ONLY) || e.kind == XS_KIND_DISK);
		CHECK(!(e.flags & XS_ENTRY_NET_OWNER) ||
		      (e.kind == XS_KIND_NET && e.role == XS_ROLE_OWNER));
		xs_emit_entry(&e, &again);
		CHECK(xs_parse_entry(&again, &back) == 0);
		CHECK(same_entry(&e, &back));
	}
}

static u32 refs[XS_SHARE_MAX_PAGES];

static void fuzz_descriptor(const uint8_t *page, u16 owner, u16 me, u32 expected)
{
	struct xs_descriptor *d = malloc(sizeof(*d));
	struct xs_descriptor_repr r;
	u32 i;

	CHECK(d != NULL);
	memcpy(d, page, sizeof(*d));
	if (xs_parse_descriptor(d, owner, me, expected, &r, refs) == 0) {
		CHECK(r.numpages >= 1 && r.numpages <= XS_SHARE_MAX_PAGES);
		CHECK(expected == 0 || r.numpages == expected);
		CHECK(r.owner == owner && r.member == me);
		for (i = 0; i < r.numpages; i++)
			CHECK(refs[i] == le32_to_cpu(d->grefs[i]));
	}
	free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t pages[2 * XS_PAGE_SIZE];
	u16 owner, me;
	u32 expected;

	memset(pages, 0, sizeof(pages));
	memcpy(pages, data, size < sizeof(pages) ? size : sizeof(pages));
	fuzz_vdevice(pages);
	/* The parties come from the vdevice page's reserved tail. */
	owner = (u16)(pages[32] | pages[33] << 8);
	me = (u16)(pages[34] | pages[35] << 8);
	expected = (u32)(pages[36] | pages[37] << 8) % (XS_SHARE_MAX_PAGES + 2);
	fuzz_descriptor(pages + XS_PAGE_SIZE, owner, me, expected);
	/* And once as the descriptor's own parties claim, to reach the refs. */
	owner = (u16)(pages[XS_PAGE_SIZE + 8] | pages[XS_PAGE_SIZE + 9] << 8);
	me = (u16)(pages[XS_PAGE_SIZE + 10] | pages[XS_PAGE_SIZE + 11] << 8);
	fuzz_descriptor(pages + XS_PAGE_SIZE, owner, me, 0);
	return 0;
}
