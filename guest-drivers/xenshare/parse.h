/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * Parsers of what dom0 and share owners write for xenshare.ko: the vdevice
 * header and entries (docs/protocol.md "vdevice page") and share
 * descriptors ("Share descriptor"). Each takes a private copy, never the
 * shared page, and returns 0 or a negated errno; nothing here allocates,
 * locks or touches shared memory, so the same file builds in userspace for
 * guest-drivers/fuzz/xenshare_parse.c.
 */
#ifndef XENSHARE_PARSE_H
#define XENSHARE_PARSE_H

#include "xenshare/kcompat.h"
#include "xenshare/wire.h"

/* A vdevice header as parsed from a private copy. */
struct xs_header_repr {
	u16 entry_count;
	u32 change_serial;
	u32 ack_serial;
	u32 change_index;
	s32 ack_status;
	u16 domid;
	u32 stats_gref;
};

/* A vdevice entry as parsed from a private copy (share-hal's EntryRepr). */
struct xs_entry_repr {
	u16 kind;
	u8 role;
	u8 flags;
	u32 subtype;
	u32 numpages;
	u16 peer;
	u32 share_ref;
	s32 status;
	u8 param[8];
};

/* A share descriptor that passed every check. */
struct xs_descriptor_repr {
	u16 owner;
	u16 member;
	u32 numpages;
	u32 port;
};

int xs_parse_header(const struct xs_vdevice_header *copy, struct xs_header_repr *out);
/* Writes a fresh header (serials 0, no counter page) for our own page. */
int xs_emit_header(u16 domid, u16 entry_count, struct xs_vdevice_header *out);

/*
 * Byte offset of entry index in a page of entry_count entries, or
 * -EINVAL if the index is out of range. entry_count must be our own.
 */
long xs_entry_offset(u32 index, u16 entry_count);

int xs_parse_entry(const struct xs_vdevice_entry *copy, struct xs_entry_repr *out);
void xs_emit_entry(const struct xs_entry_repr *e, struct xs_vdevice_entry *out);
/* The empty entry, with status. */
void xs_entry_empty(struct xs_entry_repr *e, s32 status);

/*
 * Parses a private copy of a whole descriptor page and checks it is the
 * share owner gave member me: -EINVAL for a malformed descriptor, -ENOENT
 * for one written by or for another domain. expected_numpages 0 takes the
 * descriptor's. On success refs[0..numpages) holds the page refs (refs has
 * room for XS_SHARE_MAX_PAGES).
 */
int xs_parse_descriptor(const struct xs_descriptor *copy, u16 owner, u16 me,
			u32 expected_numpages, struct xs_descriptor_repr *out,
			u32 *refs);

#endif /* XENSHARE_PARSE_H */
