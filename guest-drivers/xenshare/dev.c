// SPDX-License-Identifier: GPL-2.0
/*
 * /dev/xenshare: the share transport for userspace (docs/xenshare-uapi.md).
 *
 * Each open file owns its objects: page blocks it allocated, mappings of
 * peers' grants, shares it joined, grants it made and ports it opened. The
 * file is released only after its last mapping is gone (a VMA holds the
 * file), so release() can end everything; the module cannot unload while a
 * file is open (fops.owner), so unload needs nothing more. A grant a peer
 * still maps when the file goes is handed to gnttab_end_foreign_access(),
 * which frees the page only once the peer lets go.
 *
 * Every argument comes from userspace: structures are copied in once,
 * every count and offset is bounded before use, and objects are named by
 * their offset in this file only, never by a kernel address.
 *
 * Mapping a peer's grants into a process differs by domain type (as in
 * drivers/xen/gntdev.c): an auto-translated domain (PVH, HVM) maps them
 * onto ballooned pages in the kernel and inserts those; a PV domain must
 * let Xen write the process's page table entries (GNTMAP_contains_pte),
 * and must unmap them before Linux tears the page tables down, which an
 * MMU interval notifier does.
 */
#include <linux/fs.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <asm/xen/hypercall.h>
#include <asm/xen/page.h>
#include <xen/events.h>
#include <xen/features.h>
#include <xen/grant_table.h>
#include <xen/page.h>
#include <xen/xen.h>
#include <xen/interface/event_channel.h>

#include "xenshare/bus.h"
#include "xenshare/kshim.h"
#include "uapi/linux/xenshare.h"
#include "xenshare.h"

/* Per open file: bounds on what one process can pin in this domain. */
#define XS_MAX_FILE_PAGES 16384		/* 64 MiB, blocks and mappings */
#define XS_MAX_OBJECTS 1024
#define XS_MAX_GRANTS 16384
#define XS_MAX_PORTS 1024
#define XS_MAX_JOINS 64
/* Every source is queued at most once, so this ring never overflows. */
#define XS_MAX_EVENTS (XS_MAX_PORTS + XS_MAX_JOINS)

enum xs_kind { XS_PAGES, XS_MAP, XS_JOIN };

struct xs_file;

struct xs_obj {
	struct list_head node;		/* in xf->objs until RELEASE */
	struct xs_file *xf;
	enum xs_kind kind;
	refcount_t users;		/* the list, and a VMA */
	u64 pgoff;			/* offset in the file, in pages */
	u32 count;			/* pages */
	struct vm_area_struct *vma;	/* while mmapped (under xf->lock) */

	/* XS_PAGES: our own pages. XS_MAP (translated): ballooned pages. */
	struct page **pages;

	/* XS_MAP */
	domid_t domid;
	bool readonly;
	bool mapped;			/* grants live (under map_lock) */
	bool leak;			/* an unmap failed: keep the pages */
	u32 *refs;
	struct gnttab_map_grant_ref *map_ops;
	struct gnttab_unmap_grant_ref *unmap_ops;
	struct mutex map_lock;		/* mapped, map/unmap ops */
	struct mmu_interval_notifier notifier;	/* PV only */
	bool notifier_live;

	/* XS_JOIN */
	struct xenshare_share *share;
	u32 event;			/* XENSHARE_EVENT_SHARE | id */
	atomic_t queued;
};

struct xs_grant {
	struct list_head node;
	grant_ref_t ref;
	struct page *page;		/* a reference of its own */
};

struct xs_port {
	struct list_head node;
	struct xs_file *xf;
	evtchn_port_t port;
	int irq;
	atomic_t queued;		/* in the event ring, not yet read */
};

struct xs_file {
	struct mutex lock;		/* everything below but the ring */
	struct list_head objs;
	struct list_head grants;
	struct list_head ports;
	u64 next_pgoff;
	u32 nr_pages;
	u32 nr_objs;
	u32 nr_grants;
	u32 nr_ports;
	u32 nr_joins;
	u32 next_join_id;

	spinlock_t ring_lock;		/* hard irq: the fired sources */
	wait_queue_head_t waitq;
	u32 ring[XS_MAX_EVENTS];
	u32 ring_head;
	u32 ring_len;
};

static bool xs_pv(void)
{
	return !xen_feature(XENFEAT_auto_translated_physmap);
}

/* ---- events ---------------------------------------------------------- */

static void xs_queue_event(struct xs_file *xf, u32 ev)
{
	unsigned long flags;

	spin_lock_irqsave(&xf->ring_lock, flags);
	if (!WARN_ON_ONCE(xf->ring_len >= XS_MAX_EVENTS)) {
		xf->ring[(xf->ring_head + xf->ring_len) % XS_MAX_EVENTS] = ev;
		xf->ring_len++;
	}
	spin_unlock_irqrestore(&xf->ring_lock, flags);
	wake_up_interruptible(&xf->waitq);
}

/* Drops a closed source's pending event, so a read never reports it. */
static void xs_unqueue_event(struct xs_file *xf, u32 ev)
{
	unsigned long flags;
	u32 i, kept = 0;

	spin_lock_irqsave(&xf->ring_lock, flags);
	for (i = 0; i < xf->ring_len; i++) {
		u32 v = xf->ring[(xf->ring_head + i) % XS_MAX_EVENTS];

		if (v != ev)
			xf->ring[(xf->ring_head + kept++) % XS_MAX_EVENTS] = v;
	}
	xf->ring_len = kept;
	spin_unlock_irqrestore(&xf->ring_lock, flags);
}

static irqreturn_t xs_port_interrupt(int irq, void *data)
{
	struct xs_port *p = data;

	/*
	 * Late EOI: the port stays masked until userspace reads the event,
	 * so a peer that floods it costs one interrupt per read.
	 */
	if (atomic_cmpxchg(&p->queued, 0, 1) == 0)
		xs_queue_event(p->xf, p->port);
	return IRQ_HANDLED;
}

static irqreturn_t xs_share_interrupt(int irq, void *data)
{
	struct xs_obj *o = data;

	/* Late EOI, as for ports: at read. */
	if (atomic_cmpxchg(&o->queued, 0, 1) == 0)
		xs_queue_event(o->xf, o->event);
	return IRQ_HANDLED;
}

static struct xs_port *xs_find_port(struct xs_file *xf, u32 port)
{
	struct xs_port *p;

	list_for_each_entry(p, &xf->ports, node)
		if (p->port == port)
			return p;
	return NULL;
}

static struct xs_obj *xs_find_join(struct xs_file *xf, u32 event)
{
	struct xs_obj *o;

	list_for_each_entry(o, &xf->objs, node)
		if (o->kind == XS_JOIN && o->event == event)
			return o;
	return NULL;
}

/* ---- objects --------------------------------------------------------- */

/*
 * Results go out after the file's lock is dropped: a fault in copy_to_user
 * takes mmap_lock, which mmap() and munmap() hold when they take the file's
 * lock. If the copy fails, what was made stays the file's until RELEASE or
 * close (bounded like everything else).
 */
static long xs_copy_out(void __user *arg, const void *v, size_t len)
{
	return copy_to_user(arg, v, len) ? -EFAULT : 0;
}

static void xs_unmap_grants(struct xs_obj *o);

static void xs_free_obj(struct xs_obj *o)
{
	u32 i;

	switch (o->kind) {
	case XS_PAGES:
		for (i = 0; o->pages && i < o->count; i++)
			if (o->pages[i])
				put_page(o->pages[i]);
		break;
	case XS_MAP:
		mutex_lock(&o->map_lock);
		xs_unmap_grants(o);
		mutex_unlock(&o->map_lock);
		if (o->pages && !xs_pv() && !o->leak)
			gnttab_free_pages(o->count, o->pages);
		break;
	case XS_JOIN:
		if (o->share)
			xenshare_share_leave(o->share);
		break;
	}
	kvfree(o->pages);
	kvfree(o->refs);
	kvfree(o->map_ops);
	kvfree(o->unmap_ops);
	kfree(o);
}

static void xs_put_obj(struct xs_obj *o)
{
	if (refcount_dec_and_test(&o->users))
		xs_free_obj(o);
}

static struct xs_obj *xs_new_obj(struct xs_file *xf, enum xs_kind kind,
				 u32 count)
{
	struct xs_obj *o;

	lockdep_assert_held(&xf->lock);
	if (xf->nr_objs >= XS_MAX_OBJECTS ||
	    count > XS_MAX_FILE_PAGES - xf->nr_pages)
		return ERR_PTR(-ENOSPC);
	o = kzalloc(sizeof(*o), GFP_KERNEL);
	if (!o)
		return ERR_PTR(-ENOMEM);
	o->xf = xf;
	o->kind = kind;
	o->count = count;
	refcount_set(&o->users, 1);
	mutex_init(&o->map_lock);
	atomic_set(&o->queued, 0);
	return o;
}

/* Gives o its offset and puts it on the file's list. */
static void xs_add_obj(struct xs_file *xf, struct xs_obj *o)
{
	lockdep_assert_held(&xf->lock);
	o->pgoff = xf->next_pgoff;
	/* A gap page between objects: an off-by-one mmap finds nothing. */
	xf->next_pgoff += (u64)o->count + 1;
	xf->nr_pages += o->count;
	xf->nr_objs++;
	if (o->kind == XS_JOIN)
		xf->nr_joins++;
	list_add_tail(&o->node, &xf->objs);
}

static void xs_del_obj(struct xs_file *xf, struct xs_obj *o)
{
	lockdep_assert_held(&xf->lock);
	list_del(&o->node);
	xf->nr_pages -= o->count;
	xf->nr_objs--;
	if (o->kind == XS_JOIN) {
		xf->nr_joins--;
		/* No trigger is queued for a share we left. */
		xenshare_share_unbind(o->share);
		xs_unqueue_event(xf, o->event);
	}
}

static struct xs_obj *xs_find_obj(struct xs_file *xf, u64 pgoff)
{
	struct xs_obj *o;

	list_for_each_entry(o, &xf->objs, node)
		if (o->pgoff == pgoff)
			return o;
	return NULL;
}

/* The page `page` names (block offset / 4096 + index), or NULL. */
static struct page *xs_find_page(struct xs_file *xf, u64 page)
{
	struct xs_obj *o;

	list_for_each_entry(o, &xf->objs, node)
		if (o->kind == XS_PAGES && page >= o->pgoff &&
		    page - o->pgoff < o->count)
			return o->pages[page - o->pgoff];
	return NULL;
}

static long xs_ioc_alloc(struct xs_file *xf, void __user *arg)
{
	struct xenshare_alloc a;
	struct xs_obj *o;
	u32 i;
	long rc;

	if (copy_from_user(&a, arg, sizeof(a)))
		return -EFAULT;
	if (a.flags || a.count == 0 || a.count > XENSHARE_MAX_OBJECT_PAGES)
		return -EINVAL;
	mutex_lock(&xf->lock);
	o = xs_new_obj(xf, XS_PAGES, a.count);
	if (IS_ERR(o)) {
		rc = PTR_ERR(o);
		goto out;
	}
	o->pages = kvcalloc(a.count, sizeof(*o->pages), GFP_KERNEL);
	rc = -ENOMEM;
	if (!o->pages)
		goto fail;
	for (i = 0; i < a.count; i++) {
		o->pages[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!o->pages[i])
			goto fail;
	}
	xs_add_obj(xf, o);
	a.offset = o->pgoff << PAGE_SHIFT;
	mutex_unlock(&xf->lock);
	return xs_copy_out(arg, &a, sizeof(a));
fail:
	xs_put_obj(o);
out:
	mutex_unlock(&xf->lock);
	return rc;
}

static long xs_ioc_release(struct xs_file *xf, void __user *arg)
{
	struct xenshare_release r;
	struct xs_obj *o;

	if (copy_from_user(&r, arg, sizeof(r)))
		return -EFAULT;
	if (r.offset & ~PAGE_MASK)
		return -EINVAL;
	mutex_lock(&xf->lock);
	o = xs_find_obj(xf, r.offset >> PAGE_SHIFT);
	if (o)
		xs_del_obj(xf, o);
	mutex_unlock(&xf->lock);
	if (!o)
		return -ENOENT;
	/* A live mapping keeps the object until munmap. */
	xs_put_obj(o);
	return 0;
}

/* ---- grants ---------------------------------------------------------- */

static long xs_ioc_grant(struct xs_file *xf, void __user *arg)
{
	struct xenshare_grant g;
	struct xs_grant *xg;
	struct page *page;
	int ref;
	long rc;

	if (copy_from_user(&g, arg, sizeof(g)))
		return -EFAULT;
	if ((g.flags & ~XENSHARE_READ_ONLY) || g.domid >= DOMID_FIRST_RESERVED)
		return -EINVAL;
	xg = kzalloc(sizeof(*xg), GFP_KERNEL);
	if (!xg)
		return -ENOMEM;
	mutex_lock(&xf->lock);
	rc = -ENOSPC;
	if (xf->nr_grants >= XS_MAX_GRANTS)
		goto fail;
	rc = -ENOENT;
	page = xs_find_page(xf, g.page);
	if (!page)
		goto fail;
	ref = gnttab_grant_foreign_access(g.domid, xen_page_to_gfn(page),
					  g.flags & XENSHARE_READ_ONLY);
	if (ref < 0) {
		rc = ref;
		goto fail;
	}
	get_page(page);
	xg->ref = ref;
	xg->page = page;
	g.gref = ref;
	list_add_tail(&xg->node, &xf->grants);
	xf->nr_grants++;
	mutex_unlock(&xf->lock);
	return xs_copy_out(arg, &g, sizeof(g));
fail:
	mutex_unlock(&xf->lock);
	kfree(xg);
	return rc;
}

static long xs_ioc_revoke(struct xs_file *xf, void __user *arg)
{
	struct xenshare_revoke r;
	struct xs_grant *xg;
	long rc = -ENOENT;

	if (copy_from_user(&r, arg, sizeof(r)))
		return -EFAULT;
	if (r.pad)
		return -EINVAL;
	mutex_lock(&xf->lock);
	list_for_each_entry(xg, &xf->grants, node) {
		if (xg->ref != r.gref)
			continue;
		if (!gnttab_try_end_foreign_access(xg->ref)) {
			rc = -EBUSY;	/* the peer maps it */
			break;
		}
		list_del(&xg->node);
		xf->nr_grants--;
		put_page(xg->page);
		kfree(xg);
		rc = 0;
		break;
	}
	mutex_unlock(&xf->lock);
	return rc;
}

/* ---- mappings of a peer's grants ------------------------------------- */

static u32 xs_map_flags(struct xs_obj *o)
{
	return GNTMAP_host_map | (o->readonly ? GNTMAP_readonly : 0);
}

/*
 * Errno of a failed GNTST_* map status. Xen answers a v1 entry that is not
 * granted to us (other domain, or not in use) with GNTST_general_error.
 */
static int xs_gntst_errno(s16 st)
{
	switch (st) {
	case GNTST_bad_domain:
		return -ESRCH;
	case GNTST_general_error:
	case GNTST_bad_gntref:
	case GNTST_permission_denied:
		return -EACCES;
	case GNTST_no_device_space:
		return -ENOSPC;
	default:
		return -EIO;
	}
}

/*
 * Unmaps what is mapped; under o->map_lock. A page whose unmap failed may
 * still reach the peer's frame: the object then leaks its pages rather
 * than give them back to the allocator.
 */
static void xs_unmap_grants(struct xs_obj *o)
{
	u32 i, n = 0, failed = 0;
	int rc;

	if (!o->mapped)
		return;
	o->mapped = false;
	if (xs_pv()) {
		/* Only the entries whose map succeeded carry a handle. */
		for (i = 0; i < o->count; i++)
			if (o->unmap_ops[i].handle != INVALID_GRANT_HANDLE)
				o->unmap_ops[n++] = o->unmap_ops[i];
		rc = n ? HYPERVISOR_grant_table_op(GNTTABOP_unmap_grant_ref,
						   o->unmap_ops, n) : 0;
		for (i = 0; i < n; i++)
			if (rc || o->unmap_ops[i].status != GNTST_okay)
				failed++;
	} else {
		for (i = 0; i < o->count; i++) {
			if (o->unmap_ops[i].handle == INVALID_GRANT_HANDLE)
				continue;
			rc = gnttab_unmap_refs(&o->unmap_ops[i], NULL,
					       &o->pages[i], 1);
			if (rc || o->unmap_ops[i].status != GNTST_okay)
				failed++;
		}
	}
	if (failed) {
		pr_warn("xenshare: %u of %u grants of domain %u did not unmap: pages leaked\n",
			failed, o->count, o->domid);
		o->leak = true;
	}
	for (i = 0; i < o->count; i++)
		o->unmap_ops[i].handle = INVALID_GRANT_HANDLE;
}

/*
 * Issues the map ops prepared in o->map_ops and records the handles. On a
 * failed entry, unmaps the others and returns its errno.
 */
static int xs_map_grants(struct xs_obj *o)
{
	int rc = 0;
	u32 i;

	if (xs_pv())
		rc = HYPERVISOR_grant_table_op(GNTTABOP_map_grant_ref,
					       o->map_ops, o->count);
	else
		rc = gnttab_map_refs(o->map_ops, NULL, o->pages, o->count);
	if (rc)
		return -EIO;
	o->mapped = true;
	for (i = 0; i < o->count; i++) {
		if (o->map_ops[i].status == GNTST_okay)
			o->unmap_ops[i].handle = o->map_ops[i].handle;
		else if (!rc)
			rc = xs_gntst_errno(o->map_ops[i].status);
	}
	if (rc)
		xs_unmap_grants(o);
	return rc;
}

static long xs_ioc_map(struct xs_file *xf, void __user *arg)
{
	struct xenshare_map m;
	struct xs_obj *o;
	u32 i;
	long rc;

	if (copy_from_user(&m, arg, sizeof(m)))
		return -EFAULT;
	if ((m.flags & ~XENSHARE_READ_ONLY) || m.count == 0 ||
	    m.count > XENSHARE_MAX_OBJECT_PAGES ||
	    m.domid >= DOMID_FIRST_RESERVED)
		return -EINVAL;
	mutex_lock(&xf->lock);
	o = xs_new_obj(xf, XS_MAP, m.count);
	mutex_unlock(&xf->lock);
	if (IS_ERR(o))
		return PTR_ERR(o);
	o->domid = m.domid;
	o->readonly = m.flags & XENSHARE_READ_ONLY;
	rc = -ENOMEM;
	o->refs = kvcalloc(m.count, sizeof(*o->refs), GFP_KERNEL);
	o->map_ops = kvcalloc(m.count, sizeof(*o->map_ops), GFP_KERNEL);
	o->unmap_ops = kvcalloc(m.count, sizeof(*o->unmap_ops), GFP_KERNEL);
	if (!o->refs || !o->map_ops || !o->unmap_ops)
		goto fail;
	rc = -EFAULT;
	if (copy_from_user(o->refs, u64_to_user_ptr(m.refs),
			   sizeof(*o->refs) * m.count))
		goto fail;
	for (i = 0; i < m.count; i++)
		o->unmap_ops[i].handle = INVALID_GRANT_HANDLE;

	if (!xs_pv()) {
		/* Map now, so a refused grant fails this call. */
		o->pages = kvcalloc(m.count, sizeof(*o->pages), GFP_KERNEL);
		rc = -ENOMEM;
		if (!o->pages)
			goto fail;
		rc = gnttab_alloc_pages(m.count, o->pages);
		if (rc) {
			kvfree(o->pages);
			o->pages = NULL;
			goto fail;
		}
		for (i = 0; i < m.count; i++) {
			unsigned long addr = (unsigned long)
				pfn_to_kaddr(page_to_pfn(o->pages[i]));

			gnttab_set_map_op(&o->map_ops[i], addr, xs_map_flags(o),
					  o->refs[i], o->domid);
			gnttab_set_unmap_op(&o->unmap_ops[i], addr,
					    xs_map_flags(o),
					    INVALID_GRANT_HANDLE);
		}
		mutex_lock(&o->map_lock);
		rc = xs_map_grants(o);
		mutex_unlock(&o->map_lock);
		if (rc)
			goto fail;
	}
	/* PV: the grants are mapped onto the process's PTEs at mmap time. */

	mutex_lock(&xf->lock);
	rc = -ENOSPC;
	if (xf->nr_objs >= XS_MAX_OBJECTS ||
	    o->count > XS_MAX_FILE_PAGES - xf->nr_pages) {
		mutex_unlock(&xf->lock);
		goto fail;
	}
	xs_add_obj(xf, o);
	m.offset = o->pgoff << PAGE_SHIFT;
	mutex_unlock(&xf->lock);
	return xs_copy_out(arg, &m, sizeof(m));
fail:
	xs_put_obj(o);
	return rc;
}

/* ---- shares ---------------------------------------------------------- */

static long xs_ioc_join(struct xs_file *xf, void __user *arg)
{
	struct xenshare_join j;
	struct xenshare_share *sh;
	struct xs_obj *o;
	long rc;

	if (copy_from_user(&j, arg, sizeof(j)))
		return -EFAULT;
	if (j.flags || j.owner >= DOMID_FIRST_RESERVED ||
	    j.numpages > XS_SHARE_MAX_PAGES)
		return -EINVAL;
	mutex_lock(&xf->lock);
	rc = -ENOSPC;
	if (xf->nr_joins >= XS_MAX_JOINS)
		goto out;
	/* The share is mapped by xenshare's core; its pages count here too. */
	o = xs_new_obj(xf, XS_JOIN, j.numpages ? j.numpages : 1);
	if (IS_ERR(o)) {
		rc = PTR_ERR(o);
		goto out;
	}
	sh = xenshare_share_join(j.owner, j.share_ref, j.numpages);
	if (IS_ERR(sh)) {
		rc = PTR_ERR(sh);
		xs_put_obj(o);
		goto out;
	}
	o->share = sh;
	o->count = sh->nr_pages;
	rc = -ENOSPC;
	if (o->count > XS_MAX_FILE_PAGES - xf->nr_pages) {
		xs_put_obj(o);
		goto out;
	}
	o->event = XENSHARE_EVENT_SHARE | (xf->next_join_id++ & 0xffff);
	/* Ids wrap after 65536 joins: skip one still in use. */
	while (xs_find_join(xf, o->event))
		o->event = XENSHARE_EVENT_SHARE |
			   (xf->next_join_id++ & 0xffff);
	rc = xenshare_share_bind(sh, xs_share_interrupt, "xenshare-dev", o);
	if (rc) {
		xs_put_obj(o);
		goto out;
	}
	xs_add_obj(xf, o);
	j.numpages = o->count;
	j.event = o->event;
	j.offset = o->pgoff << PAGE_SHIFT;
	mutex_unlock(&xf->lock);
	return xs_copy_out(arg, &j, sizeof(j));
out:
	mutex_unlock(&xf->lock);
	return rc;
}

/* ---- grant copy ------------------------------------------------------ */

/* Fills one side of op from p; false if p names nothing of ours. */
static bool xs_copy_side(struct xs_file *xf, const struct xenshare_copy_ptr *p,
			 bool foreign, struct gnttab_copy_ptr *side,
			 u16 *flag, u16 gref_flag)
{
	struct page *page;

	side->offset = p->offset;
	if (foreign) {
		if (p->domid >= DOMID_FIRST_RESERVED)
			return false;
		side->u.ref = p->gref;
		side->domid = p->domid;
		*flag |= gref_flag;
		return true;
	}
	page = xs_find_page(xf, p->page);
	if (!page)
		return false;
	side->u.gmfn = xen_page_to_gfn(page);
	side->domid = DOMID_SELF;
	return true;
}

static long xs_ioc_copy(struct xs_file *xf, void __user *arg)
{
	struct xenshare_copy c;
	struct xenshare_copy_seg *segs;
	struct gnttab_copy *ops;
	u32 *slot;	/* segs index of each op */
	u32 i, n = 0;
	long rc;

	if (copy_from_user(&c, arg, sizeof(c)))
		return -EFAULT;
	if (c.pad || c.count == 0 || c.count > XENSHARE_MAX_COPY_SEGS)
		return -EINVAL;
	segs = kcalloc(c.count, sizeof(*segs), GFP_KERNEL);
	ops = kcalloc(c.count, sizeof(*ops), GFP_KERNEL);
	slot = kcalloc(c.count, sizeof(*slot), GFP_KERNEL);
	rc = -ENOMEM;
	if (!segs || !ops || !slot)
		goto out;
	rc = -EFAULT;
	if (copy_from_user(segs, u64_to_user_ptr(c.segs),
			   sizeof(*segs) * c.count))
		goto out;

	/* The file's lock keeps every local page alive across the copy. */
	mutex_lock(&xf->lock);
	for (i = 0; i < c.count; i++) {
		struct xenshare_copy_seg *s = &segs[i];
		struct gnttab_copy *op = &ops[n];
		u16 flags = 0;

		s->status = GNTST_bad_copy_arg;
		if (s->pad || s->len == 0 || s->len > PAGE_SIZE ||
		    (s->flags & ~(XENSHARE_COPY_SRC_FOREIGN |
				  XENSHARE_COPY_DST_FOREIGN)) ||
		    s->src.offset > PAGE_SIZE - s->len ||
		    s->dst.offset > PAGE_SIZE - s->len)
			continue;
		if (!xs_copy_side(xf, &s->src,
				  s->flags & XENSHARE_COPY_SRC_FOREIGN,
				  &op->source, &flags, GNTCOPY_source_gref) ||
		    !xs_copy_side(xf, &s->dst,
				  s->flags & XENSHARE_COPY_DST_FOREIGN,
				  &op->dest, &flags, GNTCOPY_dest_gref)) {
			s->status = GNTST_bad_gntref;
			continue;
		}
		op->len = s->len;
		op->flags = flags;
		slot[n++] = i;
	}
	if (n)
		gnttab_batch_copy(ops, n);
	mutex_unlock(&xf->lock);
	for (i = 0; i < n; i++)
		segs[slot[i]].status = ops[i].status;

	rc = 0;
	for (i = 0; i < c.count && !rc; i++)
		if (put_user(segs[i].status,
			     &((struct xenshare_copy_seg __user *)
			       u64_to_user_ptr(c.segs))[i].status))
			rc = -EFAULT;
out:
	kfree(slot);
	kfree(ops);
	kfree(segs);
	return rc;
}

/* ---- event channels -------------------------------------------------- */

static void xs_close_evtchn(evtchn_port_t port)
{
	struct evtchn_close close = { .port = port };

	HYPERVISOR_event_channel_op(EVTCHNOP_close, &close);
}

/* Binds a fresh local port to this file; closes it on failure. */
static long xs_add_port(struct xs_file *xf, evtchn_port_t port)
{
	struct xs_port *p;
	int irq;

	lockdep_assert_held(&xf->lock);
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p) {
		xs_close_evtchn(port);
		return -ENOMEM;
	}
	p->xf = xf;
	p->port = port;
	atomic_set(&p->queued, 0);
	irq = bind_evtchn_to_irqhandler_lateeoi(port, xs_port_interrupt, 0,
						"xenshare-dev", p);
	if (irq < 0) {
		xs_close_evtchn(port);
		kfree(p);
		return irq;
	}
	p->irq = irq;
	list_add_tail(&p->node, &xf->ports);
	xf->nr_ports++;
	return port;
}

static void xs_del_port(struct xs_file *xf, struct xs_port *p)
{
	list_del(&p->node);
	xf->nr_ports--;
	/* Waits for a running handler, then closes the channel. */
	unbind_from_irqhandler(p->irq, p);
	xs_unqueue_event(xf, p->port);
	kfree(p);
}

static long xs_ioc_evtchn(struct xs_file *xf, void __user *arg, bool bind)
{
	struct xenshare_evtchn e;
	long rc;

	if (copy_from_user(&e, arg, sizeof(e)))
		return -EFAULT;
	if (e.pad || e.pad2 || e.domid >= DOMID_FIRST_RESERVED ||
	    (!bind && e.remote_port))
		return -EINVAL;
	mutex_lock(&xf->lock);
	rc = -ENOSPC;
	if (xf->nr_ports >= XS_MAX_PORTS)
		goto out;
	if (bind) {
		struct evtchn_bind_interdomain op = {
			.remote_dom = e.domid,
			.remote_port = e.remote_port,
		};

		rc = HYPERVISOR_event_channel_op(EVTCHNOP_bind_interdomain,
						 &op);
		if (rc)
			goto out;
		rc = xs_add_port(xf, op.local_port);
	} else {
		struct evtchn_alloc_unbound op = {
			.dom = DOMID_SELF,
			.remote_dom = e.domid,
		};

		rc = HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &op);
		if (rc)
			goto out;
		rc = xs_add_port(xf, op.port);
	}
	if (rc < 0)
		goto out;
	e.port = rc;
	mutex_unlock(&xf->lock);
	return xs_copy_out(arg, &e, sizeof(e));
out:
	mutex_unlock(&xf->lock);
	return rc;
}

static long xs_ioc_port(struct xs_file *xf, void __user *arg, bool close)
{
	struct xenshare_port a;
	struct xs_port *p;
	long rc = -ENOENT;

	if (copy_from_user(&a, arg, sizeof(a)))
		return -EFAULT;
	if (a.pad)
		return -EINVAL;
	mutex_lock(&xf->lock);
	if (a.port & XENSHARE_EVENT_SHARE) {
		struct xs_obj *o = xs_find_join(xf, a.port);

		if (o && !close) {
			xenshare_share_trigger(o->share);
			rc = 0;
		} else if (o) {
			rc = -EINVAL;	/* a share is left with RELEASE */
		}
	} else {
		p = xs_find_port(xf, a.port);
		if (p && close)
			xs_del_port(xf, p);
		else if (p)
			notify_remote_via_irq(p->irq);
		if (p)
			rc = 0;
	}
	mutex_unlock(&xf->lock);
	return rc;
}

/* ---- file operations ------------------------------------------------- */

static ssize_t xs_read(struct file *file, char __user *buf, size_t len,
		       loff_t *ppos)
{
	struct xs_file *xf = file->private_data;
	u32 evs[64];
	u32 i, n;
	int rc;

	if (len < sizeof(u32))
		return -EINVAL;
	for (;;) {
		spin_lock_irq(&xf->ring_lock);
		n = min_t(u32, xf->ring_len, min_t(size_t, len / sizeof(u32),
						   ARRAY_SIZE(evs)));
		for (i = 0; i < n; i++)
			evs[i] = xf->ring[(xf->ring_head + i) % XS_MAX_EVENTS];
		xf->ring_head = (xf->ring_head + n) % XS_MAX_EVENTS;
		xf->ring_len -= n;
		spin_unlock_irq(&xf->ring_lock);
		if (n)
			break;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		rc = wait_event_interruptible(xf->waitq,
					      READ_ONCE(xf->ring_len) != 0);
		if (rc)
			return rc;
	}

	/* Re-arm each source: a trigger from now on is queued again. */
	mutex_lock(&xf->lock);
	for (i = 0; i < n; i++) {
		if (evs[i] & XENSHARE_EVENT_SHARE) {
			struct xs_obj *o = xs_find_join(xf, evs[i]);

			if (o) {
				atomic_set(&o->queued, 0);
				if (o->share && o->share->irq >= 0)
					xen_irq_lateeoi(o->share->irq, 0);
			}
		} else {
			struct xs_port *p = xs_find_port(xf, evs[i]);

			if (p) {
				atomic_set(&p->queued, 0);
				xen_irq_lateeoi(p->irq, 0);
			}
		}
	}
	mutex_unlock(&xf->lock);
	if (copy_to_user(buf, evs, n * sizeof(u32)))
		return -EFAULT;
	return n * sizeof(u32);
}

static __poll_t xs_poll(struct file *file, poll_table *wait)
{
	struct xs_file *xf = file->private_data;

	poll_wait(file, &xf->waitq, wait);
	return READ_ONCE(xf->ring_len) ? EPOLLIN | EPOLLRDNORM : 0;
}

static long xs_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct xs_file *xf = file->private_data;
	void __user *p = (void __user *)arg;

	switch (cmd) {
	case XENSHARE_IOC_ALLOC:
		return xs_ioc_alloc(xf, p);
	case XENSHARE_IOC_RELEASE:
		return xs_ioc_release(xf, p);
	case XENSHARE_IOC_GRANT:
		return xs_ioc_grant(xf, p);
	case XENSHARE_IOC_REVOKE:
		return xs_ioc_revoke(xf, p);
	case XENSHARE_IOC_MAP:
		return xs_ioc_map(xf, p);
	case XENSHARE_IOC_JOIN:
		return xs_ioc_join(xf, p);
	case XENSHARE_IOC_COPY:
		return xs_ioc_copy(xf, p);
	case XENSHARE_IOC_EVTCHN_ALLOC_UNBOUND:
		return xs_ioc_evtchn(xf, p, false);
	case XENSHARE_IOC_EVTCHN_BIND:
		return xs_ioc_evtchn(xf, p, true);
	case XENSHARE_IOC_NOTIFY:
		return xs_ioc_port(xf, p, false);
	case XENSHARE_IOC_EVTCHN_CLOSE:
		return xs_ioc_port(xf, p, true);
	default:
		return -ENOTTY;
	}
}

/* ---- mmap ------------------------------------------------------------ */

/*
 * A VMA of ours holds a reference to its object, taken in xs_mmap() for
 * the first and in xs_vma_open() for every copy the kernel makes of it:
 * fork() of a mapping a process asked to be inherited (MADV_DOFORK where
 * VM_IO is not set), and mremap(), whose new VMA exists (and is closed)
 * even when the move is refused. Only the VMA xs_mmap() made is o->vma:
 * it owns the PV notifier and the PV grant mapping.
 */
static void xs_vma_open(struct vm_area_struct *vma)
{
	struct xs_obj *o = vma->vm_private_data;

	refcount_inc(&o->users);
}

static void xs_vma_close(struct vm_area_struct *vma)
{
	struct xs_obj *o = vma->vm_private_data;
	struct xs_file *xf = o->xf;
	bool first;

	/* Only xs_mmap() sets o->vma, and only while it is NULL. */
	mutex_lock(&xf->lock);
	first = o->vma == vma;
	mutex_unlock(&xf->lock);
	if (first && o->notifier_live) {
		/* Waits for a running invalidate; none can start after. */
		mmu_interval_notifier_remove(&o->notifier);
		o->notifier_live = false;
	}
	if (first && o->kind == XS_MAP) {
		/* PV: the page tables are gone; the grants must go too. */
		mutex_lock(&o->map_lock);
		if (xs_pv())
			xs_unmap_grants(o);
		mutex_unlock(&o->map_lock);
	}
	if (first) {
		/* Mappable again (not before: the notifier is per mapping). */
		mutex_lock(&xf->lock);
		o->vma = NULL;
		mutex_unlock(&xf->lock);
	}
	vma->vm_private_data = NULL;
	xs_put_obj(o);
}

/* A mapping is mapped and unmapped whole: no partial munmap or mprotect. */
static int xs_vma_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

/*
 * A mapping stays where mmap() put it: mremap() moving it fails with
 * EINVAL (the kernel then moves the page tables back and closes the new
 * VMA). In a PV domain the move has already unmapped the grants through
 * the notifier: the mapping is left without them.
 */
static int xs_vma_mremap(struct vm_area_struct *vma)
{
	return -EINVAL;
}

static const struct vm_operations_struct xs_vm_ops = {
	.open = xs_vma_open,
	.close = xs_vma_close,
	.may_split = xs_vma_may_split,
	.mremap = xs_vma_mremap,
};

/*
 * PV: Linux is about to change or drop the PTEs Xen wrote for the grants
 * (munmap, mremap, exit, madvise): unmap them through Xen first, or they
 * would stay mapped in Xen's books with no PTE to unmap them by.
 */
static bool xs_invalidate(struct mmu_interval_notifier *mn,
			  const struct mmu_notifier_range *range,
			  unsigned long cur_seq)
{
	struct xs_obj *o = container_of(mn, struct xs_obj, notifier);

	if (!mmu_notifier_range_blockable(range))
		return false;
	mutex_lock(&o->map_lock);
	mmu_interval_set_seq(mn, cur_seq);
	xs_unmap_grants(o);
	mutex_unlock(&o->map_lock);
	return true;
}

static const struct mmu_interval_notifier_ops xs_notifier_ops = {
	.invalidate = xs_invalidate,
};

struct xs_pte_walk {
	struct xs_obj *o;
	unsigned long start;
};

static int xs_find_pte(pte_t *pte, unsigned long addr, void *data)
{
	struct xs_pte_walk *w = data;
	struct xs_obj *o = w->o;
	unsigned long i = (addr - w->start) >> PAGE_SHIFT;
	u32 flags = xs_map_flags(o) | GNTMAP_application_map |
		    GNTMAP_contains_pte | (1 << _GNTMAP_guest_avail0);
	u64 maddr;

	if (WARN_ON_ONCE(i >= o->count))
		return -EINVAL;
	maddr = arbitrary_virt_to_machine(pte).maddr;
	gnttab_set_map_op(&o->map_ops[i], maddr, flags, o->refs[i], o->domid);
	gnttab_set_unmap_op(&o->unmap_ops[i], maddr, flags,
			    INVALID_GRANT_HANDLE);
	return 0;
}

static int xs_mmap_pv_grants(struct xs_obj *o, struct vm_area_struct *vma)
{
	struct xs_pte_walk w = { .o = o, .start = vma->vm_start };
	int rc;

	/* Without it the PTEs would not be special: refuse, do not guess. */
	if (!xen_feature(XENFEAT_gnttab_map_avail_bits))
		return -EOPNOTSUPP;
	rc = mmu_interval_notifier_insert_locked(&o->notifier, vma->vm_mm,
						 vma->vm_start,
						 vma->vm_end - vma->vm_start,
						 &xs_notifier_ops);
	if (rc)
		return rc;
	o->notifier_live = true;
	rc = apply_to_page_range(vma->vm_mm, vma->vm_start,
				 vma->vm_end - vma->vm_start, xs_find_pte, &w);
	if (!rc) {
		mutex_lock(&o->map_lock);
		rc = xs_map_grants(o);
		mutex_unlock(&o->map_lock);
	}
	if (rc) {
		mmu_interval_notifier_remove(&o->notifier);
		o->notifier_live = false;
	}
	return rc;
}

static int xs_insert_pages(struct vm_area_struct *vma, struct page **pages,
			   u32 count)
{
	u32 i;
	int rc;

	for (i = 0; i < count; i++) {
		rc = vm_insert_page(vma, vma->vm_start + i * PAGE_SIZE,
				    pages[i]);
		if (rc)
			return rc;
	}
	return 0;
}

static int xs_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct xs_file *xf = file->private_data;
	unsigned long npages = vma_pages(vma);
	struct xs_obj *o;
	int rc;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	mutex_lock(&xf->lock);
	o = xs_find_obj(xf, vma->vm_pgoff);
	rc = -ENOENT;
	if (!o)
		goto out;
	rc = -EINVAL;
	if (npages != o->count)
		goto out;
	rc = -EBUSY;
	if (o->vma)
		goto out;
	rc = -EACCES;
	if (o->kind == XS_MAP && o->readonly) {
		if (vma->vm_flags & VM_WRITE)
			goto out;
		vm_flags_clear(vma, VM_MAYWRITE);
	}
	/*
	 * Not inherited by fork(): the objects are the file's, and Xen wrote
	 * a PV mapping's PTEs for this process only.
	 */
	vm_flags_set(vma, VM_DONTEXPAND | VM_DONTDUMP | VM_DONTCOPY);

	switch (o->kind) {
	case XS_PAGES:
		rc = xs_insert_pages(vma, o->pages, o->count);
		break;
	case XS_MAP:
		vm_flags_set(vma, VM_IO | VM_MIXEDMAP);
		if (xs_pv())
			rc = xs_mmap_pv_grants(o, vma);
		else
			rc = xs_insert_pages(vma, o->pages, o->count);
		break;
	case XS_JOIN:
		/*
		 * The core maps the share in the kernel; a PV domain cannot
		 * put those foreign frames into a process (see the doc).
		 */
		rc = -EOPNOTSUPP;
		if (xs_pv())
			break;
		vm_flags_set(vma, VM_IO | VM_MIXEDMAP);
		rc = xs_insert_pages(vma, o->share->pages, o->count);
		break;
	}
	if (rc)
		goto out;
	refcount_inc(&o->users);
	o->vma = vma;
	vma->vm_private_data = o;
	vma->vm_ops = &xs_vm_ops;
out:
	mutex_unlock(&xf->lock);
	return rc;
}

/* Open files, for the warning at suspend: what they hold cannot be saved. */
static atomic_t xs_open_files = ATOMIC_INIT(0);

unsigned int xenshare_dev_open_files(void)
{
	return atomic_read(&xs_open_files);
}

static int xs_open(struct inode *inode, struct file *file)
{
	struct xs_file *xf;

	xf = kvzalloc(sizeof(*xf), GFP_KERNEL);
	if (!xf)
		return -ENOMEM;
	mutex_init(&xf->lock);
	INIT_LIST_HEAD(&xf->objs);
	INIT_LIST_HEAD(&xf->grants);
	INIT_LIST_HEAD(&xf->ports);
	spin_lock_init(&xf->ring_lock);
	init_waitqueue_head(&xf->waitq);
	/* Offset 0 stays unused: a zeroed struct names no object. */
	xf->next_pgoff = 1;
	file->private_data = xf;
	atomic_inc(&xs_open_files);
	return stream_open(inode, file);
}

/* The last mapping of this file is gone: end everything it holds. */
static int xs_release(struct inode *inode, struct file *file)
{
	struct xs_file *xf = file->private_data;
	struct xs_grant *xg, *gn;
	struct xs_port *p, *pn;
	struct xs_obj *o, *on;

	mutex_lock(&xf->lock);
	list_for_each_entry_safe(p, pn, &xf->ports, node)
		xs_del_port(xf, p);
	list_for_each_entry_safe(o, on, &xf->objs, node) {
		xs_del_obj(xf, o);
		xs_put_obj(o);
	}
	list_for_each_entry_safe(xg, gn, &xf->grants, node) {
		list_del(&xg->node);
		/* Ends now, or once the peer unmaps; then frees the page. */
		gnttab_end_foreign_access(xg->ref, xg->page);
		kfree(xg);
	}
	xf->nr_grants = 0;
	mutex_unlock(&xf->lock);
	kvfree(xf);
	atomic_dec(&xs_open_files);
	return 0;
}

static const struct file_operations xs_fops = {
	.owner = THIS_MODULE,
	.open = xs_open,
	.release = xs_release,
	.read = xs_read,
	.poll = xs_poll,
	.mmap = xs_mmap,
	.unlocked_ioctl = xs_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	/* No .llseek: not seekable (6.0 made no_llseek NULL, 6.12 removed it). */
};

static struct miscdevice xs_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "xenshare",
	.fops = &xs_fops,
	.mode = 0600,
};

int xenshare_dev_init(void)
{
	int rc = misc_register(&xs_miscdev);

	if (rc)
		pr_err("xenshare: cannot register /dev/xenshare: %d\n", rc);
	return rc;
}

void xenshare_dev_exit(void)
{
	misc_deregister(&xs_miscdev);
}
