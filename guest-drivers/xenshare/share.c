// SPDX-License-Identifier: GPL-2.0
/*
 * Joining a share as its member (docs/protocol.md "Share descriptor").
 *
 * The descriptor is mapped read-only just long enough to copy it, then
 * only the private copy is parsed. The share's pages are mapped read-write
 * in one batch into pages from gnttab_alloc_pages(): on a PV domain Xen
 * rewrites the kernel PTE of each page's linear address, on an
 * auto-translated one (PVH) it fills the (unpopulated) guest frame, so
 * page_address() reaches the owner's page either way.
 *
 * An owner can vanish at any time (domain destroyed). Xen keeps its pages
 * alive while we map them and unmapping still works; should an unmap fail
 * anyway, the page is leaked with a message rather than handed back to the
 * allocator while it may still map someone else's memory.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitmap.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <xen/events.h>
#include <xen/grant_table.h>
#include <xen/page.h>
#include <asm/xen/hypercall.h>
#include "xenshare.h"

struct xs_share {
	struct xenshare_share sh;
	/* One prepared unmap op per page (handle filled at map time). */
	struct gnttab_unmap_grant_ref *unmap;
	irq_handler_t handler;
};

static unsigned long xs_page_addr(struct page *page)
{
	return (unsigned long)pfn_to_kaddr(page_to_pfn(page));
}

static int xs_gnttab_errno(s16 status)
{
	switch (status) {
	case GNTST_bad_domain:
	case GNTST_bad_gntref:
	case GNTST_permission_denied:
		return -ENOENT;
	case GNTST_no_device_space:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

/*
 * Unmaps list[0..n) with ops[0..n) and gives the pages back; a page whose
 * unmap failed is leaked (it may still map the owner's frame).
 */
static void xs_unmap_and_free(struct gnttab_unmap_grant_ref *ops,
			      struct page **list, unsigned int n, domid_t owner)
{
	unsigned int i, freed = 0;
	int err;

	if (!n)
		return;
	err = gnttab_unmap_refs(ops, NULL, list, n);
	if (err) {
		pr_err("unmapping %u page(s) of domain %u's share failed (%d): pages leaked\n",
		       n, owner, err);
		return;
	}
	for (i = 0; i < n; i++) {
		if (ops[i].status == GNTST_okay)
			list[freed++] = list[i];
		else
			pr_err("unmapping a page of domain %u's share failed (status %d): page leaked\n",
			       owner, ops[i].status);
	}
	gnttab_free_pages(freed, list);
}

/* Maps the descriptor read-only, copies it once, unmaps it. */
static int xs_copy_descriptor(domid_t owner, grant_ref_t ref, struct xs_descriptor *copy)
{
	struct gnttab_map_grant_ref map;
	struct gnttab_unmap_grant_ref unmap;
	struct page *page;
	unsigned long addr;
	int err;

	err = gnttab_alloc_pages(1, &page);
	if (err)
		return -ENOMEM;
	addr = xs_page_addr(page);
	gnttab_set_map_op(&map, addr, GNTMAP_host_map | GNTMAP_readonly, ref, owner);
	err = gnttab_map_refs(&map, NULL, &page, 1);
	if (err) {
		/* The hypercall itself failed: nothing is mapped. */
		gnttab_free_pages(1, &page);
		return -EIO;
	}
	if (map.status != GNTST_okay) {
		gnttab_free_pages(1, &page);
		pr_warn("cannot map descriptor %u of domain %u (grant status %d)\n",
			ref, owner, map.status);
		return xs_gnttab_errno(map.status);
	}
	memcpy(copy, (void *)addr, sizeof(*copy));
	/* Only the copy is used from here: no load may go back to the page. */
	barrier();
	gnttab_set_unmap_op(&unmap, addr, GNTMAP_host_map | GNTMAP_readonly, map.handle);
	xs_unmap_and_free(&unmap, &page, 1, owner);
	return 0;
}

static void xs_share_free(struct xs_share *s)
{
	kvfree(s->unmap);
	kvfree(s->sh.pages);
	kfree(s);
}

/* Maps refs[0..n) of owner read-write into s; all or nothing. */
static int xs_map_pages(struct xs_share *s, domid_t owner, const u32 *refs, u32 n)
{
	struct gnttab_map_grant_ref *map;
	unsigned long *mapped;
	unsigned int i, k;
	int err, first = 0;

	map = kvcalloc(n, sizeof(*map), GFP_KERNEL);
	mapped = bitmap_zalloc(n, GFP_KERNEL);
	if (!map || !mapped) {
		err = -ENOMEM;
		goto out;
	}
	err = gnttab_alloc_pages(n, s->sh.pages);
	if (err) {
		err = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++)
		gnttab_set_map_op(&map[i], xs_page_addr(s->sh.pages[i]), GNTMAP_host_map,
				  refs[i], owner);
	err = gnttab_map_refs(map, NULL, s->sh.pages, n);
	if (err) {
		/*
		 * The batch failed as a whole, and which ops Xen did before
		 * failing is unknown: leak rather than free a mapped page.
		 */
		pr_err("mapping %u page(s) of domain %u's share failed (%d): pages leaked\n",
		       n, owner, err);
		err = -EIO;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (map[i].status == GNTST_okay) {
			__set_bit(i, mapped);
			gnttab_set_unmap_op(&s->unmap[i], xs_page_addr(s->sh.pages[i]),
					    GNTMAP_host_map, map[i].handle);
		} else if (!first) {
			first = map[i].status;
			pr_warn("cannot map page %u (ref %u) of domain %u's share (grant status %d)\n",
				i, refs[i], owner, map[i].status);
		}
	}
	if (!first) {
		err = 0;
		goto out;
	}
	/* Undo: unmapped pages go back directly, mapped ones are unmapped. */
	for (i = 0, k = 0; i < n; i++) {
		if (test_bit(i, mapped)) {
			s->unmap[k] = s->unmap[i];
			s->sh.pages[k++] = s->sh.pages[i];
		} else {
			gnttab_free_pages(1, &s->sh.pages[i]);
		}
	}
	xs_unmap_and_free(s->unmap, s->sh.pages, k, owner);
	err = xs_gnttab_errno(first);
out:
	bitmap_free(mapped);
	kvfree(map);
	return err;
}

struct xenshare_share *xenshare_share_join(domid_t owner, grant_ref_t desc_ref, u32 numpages)
{
	struct xs_descriptor_repr repr;
	struct xs_descriptor *copy;
	struct xs_share *s = NULL;
	u32 *refs;
	int err;

	copy = kmalloc(sizeof(*copy), GFP_KERNEL);
	refs = kmalloc_array(XS_SHARE_MAX_PAGES, sizeof(*refs), GFP_KERNEL);
	if (!copy || !refs) {
		err = -ENOMEM;
		goto out;
	}
	err = xs_copy_descriptor(owner, desc_ref, copy);
	if (err)
		goto out;
	err = xs_parse_descriptor(copy, owner, xenshare_domid, numpages, &repr, refs);
	if (err) {
		pr_warn("descriptor %u of domain %u refused (%d): magic %#x version %u flags %#x owner %u member %u numpages %u (expected %u, member %u)\n",
			desc_ref, owner, err, le32_to_cpu(copy->magic),
			le16_to_cpu(copy->version), le16_to_cpu(copy->flags),
			le16_to_cpu(copy->owner), le16_to_cpu(copy->member),
			le32_to_cpu(copy->numpages), numpages, xenshare_domid);
		goto out;
	}
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s) {
		err = -ENOMEM;
		goto out;
	}
	s->sh.pages = kvcalloc(repr.numpages, sizeof(*s->sh.pages), GFP_KERNEL);
	s->unmap = kvcalloc(repr.numpages, sizeof(*s->unmap), GFP_KERNEL);
	if (!s->sh.pages || !s->unmap) {
		err = -ENOMEM;
		goto out;
	}
	err = xs_map_pages(s, owner, refs, repr.numpages);
	if (err)
		goto out;
	s->sh.owner = owner;
	s->sh.nr_pages = repr.numpages;
	s->sh.remote_port = repr.port;
	s->sh.irq = -1;
out:
	kfree(refs);
	kfree(copy);
	if (err) {
		if (s)
			xs_share_free(s);
		return ERR_PTR(err);
	}
	return &s->sh;
}
EXPORT_SYMBOL_GPL(xenshare_share_join);

void xenshare_share_leave(struct xenshare_share *sh)
{
	struct xs_share *s;

	if (IS_ERR_OR_NULL(sh))
		return;
	s = container_of(sh, struct xs_share, sh);
	xenshare_share_unbind(sh);
	xs_unmap_and_free(s->unmap, sh->pages, sh->nr_pages, sh->owner);
	xs_share_free(s);
}
EXPORT_SYMBOL_GPL(xenshare_share_leave);

void *xenshare_share_ptr(struct xenshare_share *sh, size_t off, size_t len)
{
	size_t page = off / XS_PAGE_SIZE;
	size_t in = off % XS_PAGE_SIZE;

	if (!len || page >= sh->nr_pages || len > XS_PAGE_SIZE - in)
		return NULL;
	return page_address(sh->pages[page]) + in;
}
EXPORT_SYMBOL_GPL(xenshare_share_ptr);

int xenshare_share_bind(struct xenshare_share *sh, irq_handler_t handler,
			const char *name, void *data)
{
	struct xs_share *s = container_of(sh, struct xs_share, sh);
	struct evtchn_bind_interdomain bind = {
		.remote_dom = sh->owner,
		.remote_port = sh->remote_port,
	};
	struct evtchn_close close;
	int err, irq;

	if (sh->irq >= 0)
		return s->handler == handler && sh->irq_data == data ? 0 : -EBUSY;
	err = HYPERVISOR_event_channel_op(EVTCHNOP_bind_interdomain, &bind);
	if (err) {
		pr_warn("cannot bind port %u of domain %u (%d)\n", sh->remote_port, sh->owner, err);
		return err == -ESRCH ? -ENOENT : -EIO;
	}
	irq = bind_evtchn_to_irqhandler_lateeoi(bind.local_port, handler, 0, name, data);
	if (irq < 0) {
		close.port = bind.local_port;
		if (HYPERVISOR_event_channel_op(EVTCHNOP_close, &close))
			pr_warn("cannot close port %u\n", bind.local_port);
		return irq;
	}
	sh->irq = irq;
	sh->irq_data = data;
	s->handler = handler;
	return 0;
}
EXPORT_SYMBOL_GPL(xenshare_share_bind);

void xenshare_share_unbind(struct xenshare_share *sh)
{
	struct xs_share *s = container_of(sh, struct xs_share, sh);

	if (sh->irq < 0)
		return;
	/* Waits for a running handler, and closes our port. */
	unbind_from_irqhandler(sh->irq, sh->irq_data);
	WRITE_ONCE(sh->irq, -1);
	sh->irq_data = NULL;
	s->handler = NULL;
}
EXPORT_SYMBOL_GPL(xenshare_share_unbind);

void xenshare_share_trigger(struct xenshare_share *sh)
{
	int irq = READ_ONCE(sh->irq);

	/* Callers keep triggers and unbind apart (a driver lock or a quiesce). */
	if (irq >= 0)
		notify_remote_via_irq(irq);
}
EXPORT_SYMBOL_GPL(xenshare_share_trigger);
