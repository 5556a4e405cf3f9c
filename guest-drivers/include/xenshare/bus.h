/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The xenshare bus: how xenshare.ko hands vdevice entries to the device
 * modules (xensnet.ko, xensblk.ko).
 *
 * xenshare.ko owns the domain's vdevice page. For each member entry dom0
 * writes, it maps the owner's share descriptor, validates a private copy
 * (docs/protocol.md "Share descriptor"), maps the share's pages and then
 * creates a struct xenshare_device on the bus. A driver registered for the
 * entry's kind, and whose required features the entry's subtype allows, is
 * probed; an entry no driver takes stays unbound and says so in dmesg.
 *
 * The share is a separate object from the device: when dom0 rewrites a
 * member entry in place (the server restarted: a new share_ref, maybe a
 * new owner), xenshare maps the new share and calls the driver's
 * reconnect() with it, so a disk keeps its gendisk and re-issues what was
 * in flight. A driver without reconnect() is removed and probed again.
 *
 * Save and restore (`xl save`, `xl restore`, live migration): before the
 * domain is suspended each bound driver's suspend() stops using the share
 * and xenshare leaves it (Xen keeps no foreign mapping across a save), so
 * the device is detached: xdev->share is NULL. A cancelled suspend joins
 * the same share again; a restored domain (a new domain id, whose shares
 * were made for the old one) waits with its devices detached until dom0
 * rewrites their entries for the new id, then reconnect() moves each to
 * its new share. A driver without suspend() or reconnect() cannot be
 * saved: its device is unbound and probed again after the restore.
 */
#ifndef XENSHARE_BUS_H
#define XENSHARE_BUS_H

#include <linux/device.h>
#include <linux/interrupt.h>
#include <linux/mm_types.h>
#include <xen/interface/event_channel.h>
#include <xen/interface/grant_table.h>
#include "wire.h"

/* A share this domain joined as a member: its pages mapped read-write. */
struct xenshare_share {
	domid_t owner;			/* validated against the entry's peer */
	u32 nr_pages;			/* from the descriptor, validated once */
	evtchn_port_t remote_port;	/* the owner's port for us */
	struct page **pages;		/* nr_pages pages, mapped */
	int irq;			/* bound trigger, or -1 */
	void *irq_data;
};

/*
 * Pointer to len bytes at byte offset off of the share, or NULL if the
 * range leaves the share or crosses a page (lanes never put a slot or a
 * header across pages). The memory is the owner's: access it with
 * READ_ONCE/WRITE_ONCE, smp_load_acquire/smp_store_release or memcpy
 * into a private copy, never through a pointer kept across reads.
 */
void *xenshare_share_ptr(struct xenshare_share *sh, size_t off, size_t len);

/*
 * Bind the owner's port to handler (hard irq context, dev_id = data).
 * One binding per share; xenshare_share_unbind() undoes it. Both are
 * idempotent so remove paths can call them unconditionally.
 *
 * The port is late-EOI (as Linux's Xen frontends since XSA-332): it stays
 * masked until the handler calls xen_irq_lateeoi(irq, flags), with
 * XEN_EOI_FLAG_SPURIOUS when the share held nothing to do, so an owner
 * that floods the port costs one interrupt per EOI and its spurious
 * triggers are answered later and later.
 */
int xenshare_share_bind(struct xenshare_share *sh, irq_handler_t handler,
			const char *name, void *data);
void xenshare_share_unbind(struct xenshare_share *sh);

/* Notify the owner (a no-op until bound). */
void xenshare_share_trigger(struct xenshare_share *sh);

/*
 * Join a share outside the vdevice page (for /dev/xenshare): map the
 * descriptor owner granted us as desc_ref, validate it, map the pages.
 * numpages 0 takes the descriptor's. Returns an ERR_PTR on failure.
 */
struct xenshare_share *xenshare_share_join(domid_t owner, grant_ref_t desc_ref,
					   u32 numpages);
/* Unbind, unmap and free; safe when the owner has vanished. */
void xenshare_share_leave(struct xenshare_share *sh);

/* One member entry of the vdevice page, as xenshare applied it. */
struct xenshare_device {
	struct device dev;
	unsigned int index;	/* entry index in the vdevice page */
	u16 kind;		/* XS_KIND_NET or XS_KIND_DISK */
	u8 flags;		/* XS_ENTRY_READ_ONLY */
	u32 subtype;		/* dom0's feature policy */
	u8 param[8];
	struct xenshare_share *share;	/* current share; NULL while detached */
	bool removed_for_save;	/* driver without suspend(): removed at freeze */
};

#define to_xenshare_device(d) container_of(d, struct xenshare_device, dev)

struct xenshare_driver {
	u16 kind;
	u32 required_features;	/* subtype bits the driver cannot work without */
	/* The share is mapped; bind it, attach, register the device. */
	int (*probe)(struct xenshare_device *xdev);
	/* The entry is gone (or the module unloads): stop using the share. */
	void (*remove)(struct xenshare_device *xdev);
	/*
	 * The entry was rewritten in place: stop using xdev->share, move to
	 * new_share and re-issue what was in flight. On success xenshare
	 * sets xdev->share = new_share and leaves the old one; on failure it
	 * leaves new_share and removes the device.
	 */
	int (*reconnect)(struct xenshare_device *xdev,
			 struct xenshare_share *new_share);
	/*
	 * The domain is about to be saved: stop using xdev->share for good
	 * (no access to its pages, its trigger unbound) but keep the device
	 * and what is in flight; reconnect() follows with a new share. Called
	 * with the device lock held, processes frozen. xdev->share is left by
	 * xenshare after it returns.
	 */
	void (*suspend)(struct xenshare_device *xdev);
	struct device_driver driver;
};

#define to_xenshare_driver(d) container_of(d, struct xenshare_driver, driver)

int __xenshare_register_driver(struct xenshare_driver *drv,
			       struct module *owner, const char *mod_name);
#define xenshare_register_driver(drv) \
	__xenshare_register_driver(drv, THIS_MODULE, KBUILD_MODNAME)
void xenshare_unregister_driver(struct xenshare_driver *drv);

#endif /* XENSHARE_BUS_H */
