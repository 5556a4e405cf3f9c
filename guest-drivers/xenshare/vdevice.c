// SPDX-License-Identifier: GPL-2.0
/*
 * The domain side of the vdevice page (docs/protocol.md "Bootstrap on
 * stock Xen", "vdevice page", "Change protocol").
 *
 * One owner per domain: share-member publishes the same key, so the key
 * is checked and written in one xenstore transaction and an existing one
 * refuses the load. Changes are applied one at a time on an ordered
 * workqueue (joining a share sleeps); the page is dom0's to write, so the
 * serial and index are loaded once, the entry is copied once and only the
 * copy is parsed, and what we serve is our own copy of each entry.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/interrupt.h>
#include <linux/mm.h>
#include <linux/nospec.h>
#include <linux/workqueue.h>
#include <xen/events.h>
#include <xen/grant_table.h>
#include <xen/page.h>
#include <xen/xenbus.h>
#include <asm/xen/hypercall.h>
#include "xenshare.h"

#define XS_ENTRY_COUNT XS_VDEVICE_MAX_ENTRIES
#define XS_KEY_DIR "data"
#define XS_KEY_NODE "vdevice"
/* A transaction that keeps conflicting is a bug elsewhere: give up. */
#define XS_KEY_TRIES 8

struct xs_slot {
	struct xs_entry_repr applied;	/* ours; never re-read from the page */
	struct xenshare_device *xdev;	/* for a member entry we serve */
};

static struct {
	struct page *page;
	u8 *base;			/* the page, dom0 writes it */
	grant_ref_t gref;
	evtchn_port_t port;
	int irq;
	u32 acked;			/* last serial acked, private */
	struct workqueue_struct *wq;
	struct work_struct work;
	struct work_struct rejoin;	/* after a cancelled suspend */
	bool published;			/* init done: suspend/resume apply */
	struct xs_slot slots[XS_ENTRY_COUNT];
} vd;

static struct xs_vdevice_header *xs_header(void)
{
	return (struct xs_vdevice_header *)vd.base;
}

/* 0 if there is no key; -EBUSY, with the message, if there is one. */
static int xs_key_absent(struct xenbus_transaction t)
{
	unsigned int len;
	char *val;

	val = xenbus_read(t, XS_KEY_DIR, XS_KEY_NODE, &len);
	if (IS_ERR(val))
		return PTR_ERR(val) == -ENOENT ? 0 : PTR_ERR(val);
	pr_err("/local/domain/%u/" XS_KEY_DIR "/" XS_KEY_NODE " is already \"%*pE\": the userspace share-member or another owner already owns this domain's vdevice page; stop it (or `xenstore-rm` a stale key) first\n",
	       xenshare_domid, (int)min_t(unsigned int, len, 64), val);
	kfree(val);
	return -EBUSY;
}

static int xs_key_publish(void)
{
	struct xenbus_transaction t;
	int err, tries;

	for (tries = 0; tries < XS_KEY_TRIES; tries++) {
		err = xenbus_transaction_start(&t);
		if (err)
			return err;
		err = xs_key_absent(t);
		if (!err)
			err = xenbus_printf(t, XS_KEY_DIR, XS_KEY_NODE, "gref=%u port=%u",
					    vd.gref, vd.port);
		if (err) {
			xenbus_transaction_end(t, 1);
			return err;
		}
		err = xenbus_transaction_end(t, 0);
		if (err != -EAGAIN)
			return err;
	}
	return -EAGAIN;
}

/* The negated errno a failed apply reports, one of the protocol's codes. */
static s32 xs_status(int err)
{
	switch (err) {
	case -ENOENT:
	case -EIO:
	case -ENOMEM:
	case -EBUSY:
	case -EEXIST:
	case -ENODEV:
	case -EINVAL:
	case -EOPNOTSUPP:
	case -ETIMEDOUT:
		return err;
	default:
		return XS_STATUS_EIO;
	}
}

static bool xs_same_member(const struct xs_entry_repr *a, const struct xs_entry_repr *b)
{
	return a->kind == b->kind && a->role == b->role && a->flags == b->flags &&
	       a->subtype == b->subtype && a->numpages == b->numpages &&
	       a->peer == b->peer && a->share_ref == b->share_ref &&
	       !memcmp(a->param, b->param, sizeof(a->param));
}

/*
 * Applies new (parsed) to slot index. Returns the status; on success
 * slot->applied is new, on failure it is what we still serve (the old
 * entry, or empty if a failed reconnect removed the device).
 */
static s32 xs_apply(unsigned int index, struct xs_slot *slot, const struct xs_entry_repr *new)
{
	struct xs_entry_repr *old = &slot->applied;
	struct xenshare_share *sh;
	struct xenshare_device *xdev;
	int err;

	if (new->kind == XS_KIND_EMPTY) {
		if (slot->xdev) {
			pr_info("entry %u: %s share from domain %u removed\n", index,
				xenshare_kind_name(old->kind), old->peer);
			xenshare_device_remove(slot->xdev);
			slot->xdev = NULL;
		}
		xs_entry_empty(old, XS_STATUS_OK);
		return XS_STATUS_OK;
	}
	/* A guest serves nothing. */
	if (new->role == XS_ROLE_OWNER)
		return XS_STATUS_ENODEV;
	if (new->peer == xenshare_domid)
		return XS_STATUS_EINVAL;
	if (old->kind != XS_KIND_EMPTY && old->kind != new->kind)
		return XS_STATUS_EEXIST;
	/* A detached device (the domain was suspended) takes it regardless. */
	if (old->kind != XS_KIND_EMPTY && xs_same_member(old, new) && slot->xdev &&
	    slot->xdev->share)
		return XS_STATUS_OK;

	sh = xenshare_share_join(new->peer, new->share_ref, new->numpages);
	if (IS_ERR(sh)) {
		pr_warn("entry %u: cannot join share %u of domain %u (%ld)\n", index,
			new->share_ref, new->peer, PTR_ERR(sh));
		return xs_status(PTR_ERR(sh));
	}
	if (old->kind == XS_KIND_EMPTY) {
		pr_info("entry %u: joined %s share %u of domain %u (%u pages)\n", index,
			xenshare_kind_name(new->kind), new->share_ref, new->peer, sh->nr_pages);
		xdev = xenshare_device_add(index, new, sh);
		if (IS_ERR(xdev)) {
			xenshare_share_leave(sh);
			return xs_status(PTR_ERR(xdev));
		}
		slot->xdev = xdev;
	} else {
		pr_info("entry %u: rejoining: %s share %u of domain %u replaces share %u of domain %u%s\n",
			index, xenshare_kind_name(new->kind), new->share_ref, new->peer,
			old->share_ref, old->peer,
			slot->xdev->share ? "" : " (left at the suspend)");
		err = xenshare_device_rejoin(slot->xdev, new, sh);
		if (err) {
			slot->xdev = NULL;
			xs_entry_empty(old, XS_STATUS_OK);
			return xs_status(err);
		}
	}
	*old = *new;
	old->status = XS_STATUS_OK;
	return XS_STATUS_OK;
}

static void xs_vdevice_work(struct work_struct *work)
{
	struct xs_vdevice_header *hdr = xs_header();
	struct xs_vdevice_entry raw;
	struct xs_entry_repr new, result;
	struct xs_slot *slot;
	u32 serial, index;
	s32 status;
	long off;

	/* The page could not be published again after a restore. */
	if (vd.irq < 0)
		return;
	serial = le32_to_cpu(smp_load_acquire(&hdr->change_serial));
	if (serial == vd.acked) {
		xen_irq_lateeoi(vd.irq, XEN_EOI_FLAG_SPURIOUS);
		return;
	}
	index = le32_to_cpu(READ_ONCE(hdr->change_index));
	off = xs_entry_offset(index, XS_ENTRY_COUNT);
	if (off < 0) {
		pr_warn("change %u names entry %u, out of range: refused\n", serial, index);
		status = XS_STATUS_EINVAL;
		goto ack;
	}
	index = array_index_nospec(index, XS_ENTRY_COUNT);
	slot = &vd.slots[index];
	memcpy(&raw, vd.base + off, sizeof(raw));
	/* Only the copy is parsed: no load may go back to the page. */
	barrier();
	if (xs_parse_entry(&raw, &new)) {
		pr_warn("change %u: entry %u is malformed (kind %u role %u flags %#x numpages %u): refused\n",
			serial, index, le16_to_cpu(raw.kind), raw.role, raw.flags,
			le32_to_cpu(raw.numpages));
		status = XS_STATUS_EINVAL;
	} else {
		status = xs_apply(index, slot, &new);
	}
	result = slot->applied;
	result.status = status;
	xs_emit_entry(&result, &raw);
	memcpy(vd.base + off, &raw, sizeof(raw));
ack:
	WRITE_ONCE(hdr->ack_status, cpu_to_le32((u32)status));
	/* A jump of several serials is acked as read: applied once. */
	vd.acked = serial;
	smp_store_release(&hdr->ack_serial, cpu_to_le32(serial));
	notify_remote_via_irq(vd.irq);
	xen_irq_lateeoi(vd.irq, 0);
}

static irqreturn_t xs_vdevice_interrupt(int irq, void *data)
{
	/* The port stays masked until the work's late EOI: one at a time. */
	queue_work(vd.wq, &vd.work);
	return IRQ_HANDLED;
}

static int xs_alloc_port(void)
{
	struct evtchn_alloc_unbound alloc = {
		.dom = DOMID_SELF,
		.remote_dom = 0,
	};
	struct evtchn_close close;
	int err, irq;

	err = HYPERVISOR_event_channel_op(EVTCHNOP_alloc_unbound, &alloc);
	if (err) {
		pr_err("cannot allocate a port for dom0 (%d)\n", err);
		return -EIO;
	}
	irq = bind_evtchn_to_irqhandler_lateeoi(alloc.port, xs_vdevice_interrupt, 0,
						"xenshare-vdevice", &vd);
	if (irq < 0) {
		close.port = alloc.port;
		if (HYPERVISOR_event_channel_op(EVTCHNOP_close, &close))
			pr_warn("cannot close port %u\n", alloc.port);
		return irq;
	}
	vd.port = alloc.port;
	vd.irq = irq;
	return 0;
}

/* Removes the key if it still names our page (not another owner's). */
static void xs_key_remove(void)
{
	char ours[XS_BOOTSTRAP_MAX_LEN + 1];
	unsigned int len;
	char *val;
	int err;

	snprintf(ours, sizeof(ours), "gref=%u port=%u", vd.gref, vd.port);
	val = xenbus_read(XBT_NIL, XS_KEY_DIR, XS_KEY_NODE, &len);
	if (IS_ERR(val)) {
		pr_warn(XS_KEY_DIR "/" XS_KEY_NODE " is gone already (%ld)\n", PTR_ERR(val));
		return;
	}
	if (len != strlen(ours) || memcmp(val, ours, len)) {
		pr_warn(XS_KEY_DIR "/" XS_KEY_NODE " names another page now: left alone\n");
		kfree(val);
		return;
	}
	kfree(val);
	err = xenbus_rm(XBT_NIL, XS_KEY_DIR, XS_KEY_NODE);
	if (err)
		pr_warn("cannot remove " XS_KEY_DIR "/" XS_KEY_NODE " (%d)\n", err);
}

/*
 * After a cancelled suspend (still the same domain, its shares still
 * granted to it): each device left for the suspend joins its share again.
 */
static void xs_rejoin_work(struct work_struct *work)
{
	struct xenshare_share *sh;
	struct xs_entry_repr *e;
	struct xs_slot *slot;
	unsigned int i;
	int err;

	for (i = 0; i < XS_ENTRY_COUNT; i++) {
		slot = &vd.slots[i];
		e = &slot->applied;
		if (!slot->xdev || slot->xdev->share)
			continue;
		sh = xenshare_share_join(e->peer, e->share_ref, e->numpages);
		err = PTR_ERR_OR_ZERO(sh);
		if (!err) {
			err = xenshare_device_rejoin(slot->xdev, e, sh);
			if (err)
				slot->xdev = NULL;	/* removed by the failed rejoin */
		}
		if (err) {
			pr_warn("entry %u: cannot join share %u of domain %u again after the cancelled suspend (%d)%s\n",
				i, e->share_ref, e->peer, err,
				slot->xdev ? ": the device waits for dom0 to rewrite the entry" : "");
			if (!slot->xdev)
				xs_entry_empty(e, XS_STATUS_OK);
		}
	}
}

int xenshare_vdevice_freeze(void)
{
	unsigned int files = xenshare_dev_open_files();

	/* Xen saves no foreign mapping, grant or port of a process's. */
	if (files)
		pr_warn("%u /dev/xenshare file(s) open: the shares, mappings, grants and ports they hold do not survive a restore; their programs must open it again\n",
			files);
	if (!vd.published)
		return 0;
	/*
	 * The workqueue is frozen already (no change half-applied); a trigger
	 * from dom0 now is applied after the resume.
	 */
	disable_irq(vd.irq);
	return 0;
}

/* A new domain: grant the page to dom0 again, a new port, the key. */
static int xs_republish(void)
{
	domid_t was = xenshare_domid;
	int err;

	err = xenshare_read_domid();
	if (err)
		return err;
	/* The old port is gone with the old domain: only the irq is freed. */
	unbind_from_irqhandler(vd.irq, &vd);
	vd.irq = -1;
	/* The grant table is new and empty; our reference is still ours. */
	gnttab_grant_foreign_access_ref(vd.gref, 0, xen_page_to_gfn(vd.page), 0);
	WRITE_ONCE(xs_header()->domid, cpu_to_le16(xenshare_domid));
	err = xs_alloc_port();
	if (err)
		return err;
	err = xs_key_publish();
	if (err)
		return err;
	pr_info("restored as domain %u (was %u): vdevice page published again (gref=%u port=%u)\n",
		xenshare_domid, was, vd.gref, vd.port);
	return 0;
}

int xenshare_vdevice_resume(bool restored)
{
	unsigned int i, waiting = 0;
	int err;

	if (!vd.published)
		return 0;
	if (!restored) {
		enable_irq(vd.irq);
		queue_work(vd.wq, &vd.rejoin);
		/* A change dom0 made meanwhile. */
		queue_work(vd.wq, &vd.work);
		return 0;
	}
	err = xs_republish();
	if (err) {
		pr_err("after the restore: cannot publish the vdevice page again (%d); dom0 cannot reach this domain until xenshare is reloaded\n",
		       err);
		return 0;
	}
	for (i = 0; i < XS_ENTRY_COUNT; i++)
		waiting += vd.slots[i].xdev != NULL;
	if (waiting)
		pr_info("%u device(s) wait for dom0 to reconnect them (vdevice daemon)\n", waiting);
	return 0;
}

int xenshare_vdevice_init(void)
{
	unsigned int i;
	int err;

	/* Refuse before allocating anything; re-checked when publishing. */
	err = xs_key_absent(XBT_NIL);
	if (err)
		return err;
	for (i = 0; i < XS_ENTRY_COUNT; i++)
		xs_entry_empty(&vd.slots[i].applied, XS_STATUS_OK);
	vd.acked = 0;
	vd.irq = -1;
	INIT_WORK(&vd.work, xs_vdevice_work);
	INIT_WORK(&vd.rejoin, xs_rejoin_work);
	/* Freezable: no change is applied while the domain is suspended. */
	vd.wq = alloc_ordered_workqueue("xenshare", WQ_FREEZABLE);
	if (!vd.wq)
		return -ENOMEM;
	vd.page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!vd.page) {
		err = -ENOMEM;
		goto err_wq;
	}
	vd.base = page_address(vd.page);
	err = xs_emit_header(xenshare_domid, XS_ENTRY_COUNT, xs_header());
	if (err)
		goto err_page;
	err = gnttab_grant_foreign_access(0, xen_page_to_gfn(vd.page), 0);
	if (err < 0) {
		pr_err("cannot grant the vdevice page to dom0 (%d)\n", err);
		goto err_page;
	}
	vd.gref = err;
	err = xs_alloc_port();
	if (err)
		goto err_grant;
	err = xs_key_publish();
	if (err) {
		if (err != -EBUSY)
			pr_err("cannot write " XS_KEY_DIR "/" XS_KEY_NODE " (%d)\n", err);
		goto err_port;
	}
	pr_info("domain %u: vdevice page published (gref=%u port=%u, %u entries)\n",
		xenshare_domid, vd.gref, vd.port, XS_ENTRY_COUNT);
	vd.published = true;
	return 0;

err_port:
	unbind_from_irqhandler(vd.irq, &vd);
err_grant:
	/* Frees the page once dom0 cannot have it mapped any more. */
	gnttab_end_foreign_access(vd.gref, vd.page);
	goto err_wq;
err_page:
	__free_page(vd.page);
err_wq:
	destroy_workqueue(vd.wq);
	return err;
}

void xenshare_vdevice_exit(void)
{
	unsigned int i;

	vd.published = false;
	/* No new change: the port is masked, a queued one still runs. */
	if (vd.irq >= 0) {
		disable_irq(vd.irq);
		flush_workqueue(vd.wq);
		unbind_from_irqhandler(vd.irq, &vd);
	}
	flush_workqueue(vd.wq);
	destroy_workqueue(vd.wq);
	xs_key_remove();
	for (i = 0; i < XS_ENTRY_COUNT; i++) {
		if (vd.slots[i].xdev) {
			xenshare_device_remove(vd.slots[i].xdev);
			vd.slots[i].xdev = NULL;
		}
	}
	gnttab_end_foreign_access(vd.gref, vd.page);
	pr_info("domain %u: vdevice page withdrawn\n", xenshare_domid);
}
