// SPDX-License-Identifier: (GPL-2.0 OR MIT)
/*
 * The rules are share-hal's (wire::vdevice::EntryRepr::parse,
 * wire::descriptor::DescriptorRepr::parse and check_parties): a change
 * the Rust domain side refuses is refused here too.
 */
#include "parse.h"

int xs_parse_header(const struct xs_vdevice_header *copy, struct xs_header_repr *out)
{
	u16 count = le16_to_cpu(copy->entry_count);

	if (le32_to_cpu(copy->magic) != XS_VDEVICE_MAGIC)
		return -EINVAL;
	if (le16_to_cpu(copy->version) != XS_VDEVICE_VERSION)
		return -EINVAL;
	if (count == 0 || count > XS_VDEVICE_MAX_ENTRIES)
		return -EINVAL;
	out->entry_count = count;
	out->change_serial = le32_to_cpu(copy->change_serial);
	out->ack_serial = le32_to_cpu(copy->ack_serial);
	out->change_index = le32_to_cpu(copy->change_index);
	out->ack_status = (s32)le32_to_cpu(copy->ack_status);
	out->domid = le16_to_cpu(copy->domid);
	out->stats_gref = le32_to_cpu(copy->stats_gref);
	return 0;
}

int xs_emit_header(u16 domid, u16 entry_count, struct xs_vdevice_header *out)
{
	if (entry_count == 0 || entry_count > XS_VDEVICE_MAX_ENTRIES)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->magic = cpu_to_le32(XS_VDEVICE_MAGIC);
	out->version = cpu_to_le16(XS_VDEVICE_VERSION);
	out->entry_count = cpu_to_le16(entry_count);
	out->domid = cpu_to_le16(domid);
	return 0;
}

long xs_entry_offset(u32 index, u16 entry_count)
{
	if (entry_count > XS_VDEVICE_MAX_ENTRIES || index >= entry_count)
		return -EINVAL;
	return XS_VDEVICE_HEADER_LEN + (long)index * XS_VDEVICE_ENTRY_LEN;
}

void xs_entry_empty(struct xs_entry_repr *e, s32 status)
{
	memset(e, 0, sizeof(*e));
	e->kind = XS_KIND_EMPTY;
	e->status = status;
}

int xs_parse_entry(const struct xs_vdevice_entry *copy, struct xs_entry_repr *out)
{
	u16 kind = le16_to_cpu(copy->kind);
	u32 numpages = le32_to_cpu(copy->numpages);

	if (kind != XS_KIND_EMPTY && kind != XS_KIND_NET && kind != XS_KIND_DISK)
		return -EINVAL;
	/* An empty entry ignores every other field (it removes a device). */
	if (kind == XS_KIND_EMPTY) {
		xs_entry_empty(out, (s32)le32_to_cpu(copy->status));
		return 0;
	}
	if (copy->role != XS_ROLE_MEMBER && copy->role != XS_ROLE_OWNER)
		return -EINVAL;
	if (copy->flags & ~XS_ENTRY_FLAGS_ALL)
		return -EINVAL;
	if ((copy->flags & XS_ENTRY_READ_ONLY) && kind != XS_KIND_DISK)
		return -EINVAL;
	if ((copy->flags & XS_ENTRY_NET_OWNER) &&
	    (kind != XS_KIND_NET || copy->role != XS_ROLE_OWNER))
		return -EINVAL;
	if (numpages > XS_SHARE_MAX_PAGES)
		return -EINVAL;
	if (copy->role == XS_ROLE_OWNER && numpages == 0)
		return -EINVAL;
	out->kind = kind;
	out->role = copy->role;
	out->flags = copy->flags;
	out->subtype = le32_to_cpu(copy->subtype);
	out->numpages = numpages;
	out->peer = le16_to_cpu(copy->peer);
	out->share_ref = le32_to_cpu(copy->share_ref);
	out->status = (s32)le32_to_cpu(copy->status);
	memcpy(out->param, copy->param, sizeof(out->param));
	return 0;
}

void xs_emit_entry(const struct xs_entry_repr *e, struct xs_vdevice_entry *out)
{
	memset(out, 0, sizeof(*out));
	out->kind = cpu_to_le16(e->kind);
	out->role = e->role;
	out->flags = e->flags;
	out->subtype = cpu_to_le32(e->subtype);
	out->numpages = cpu_to_le32(e->numpages);
	out->peer = cpu_to_le16(e->peer);
	out->share_ref = cpu_to_le32(e->share_ref);
	out->status = cpu_to_le32((u32)e->status);
	memcpy(out->param, e->param, sizeof(out->param));
}

int xs_parse_descriptor(const struct xs_descriptor *copy, u16 owner, u16 me,
			u32 expected_numpages, struct xs_descriptor_repr *out,
			u32 *refs)
{
	u32 numpages = le32_to_cpu(copy->numpages);
	u32 i;

	if (le32_to_cpu(copy->magic) != XS_DESCRIPTOR_MAGIC)
		return -EINVAL;
	if (le16_to_cpu(copy->version) != XS_DESCRIPTOR_VERSION)
		return -EINVAL;
	if (le16_to_cpu(copy->flags) != 0)
		return -EINVAL;
	if (numpages == 0 || numpages > XS_SHARE_MAX_PAGES)
		return -EINVAL;
	if (expected_numpages != 0 && numpages != expected_numpages)
		return -EINVAL;
	/* A descriptor meant for another member, or from another owner. */
	if (le16_to_cpu(copy->owner) != owner || le16_to_cpu(copy->member) != me)
		return -ENOENT;
	out->owner = owner;
	out->member = me;
	out->numpages = numpages;
	out->port = le32_to_cpu(copy->port);
	for (i = 0; i < numpages; i++)
		refs[i] = le32_to_cpu(copy->grefs[i]);
	return 0;
}
