// SPDX-License-Identifier: GPL-2.0
/*
 * xenshare.ko: the share transport of a Linux guest. It owns the domain's
 * vdevice page, joins the shares dom0 names in member entries and puts
 * each on the xenshare bus for xensnet.ko / xensblk.ko
 * (include/xenshare/bus.h, docs/protocol.md).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <xen/xen.h>
#include <xen/xenbus.h>
#include "xenshare.h"

domid_t xenshare_domid;

/* The descriptor check needs our own id; Linux keeps it nowhere else. */
int xenshare_read_domid(void)
{
	unsigned int id;

	if (xenbus_scanf(XBT_NIL, "domid", "", "%u", &id) == 1 && id < DOMID_FIRST_RESERVED) {
		xenshare_domid = id;
		return 0;
	}
	if (xen_initial_domain()) {
		xenshare_domid = 0;
		return 0;
	}
	pr_err("cannot read this domain's id from xenstore (\"domid\")\n");
	return -ENODEV;
}

static int __init xenshare_init(void)
{
	int err;

	BUILD_BUG_ON(PAGE_SIZE != XS_PAGE_SIZE);
	if (!xen_domain())
		return -ENODEV;
	err = xenshare_read_domid();
	if (err)
		return err;
	err = xenshare_bus_init();
	if (err)
		return err;
	err = xenshare_vdevice_init();
	if (err) {
		xenshare_bus_exit();
		return err;
	}
	err = xenshare_dev_init();
	if (err) {
		xenshare_vdevice_exit();
		xenshare_bus_exit();
		return err;
	}
	return 0;
}

static void __exit xenshare_exit(void)
{
	xenshare_dev_exit();
	xenshare_vdevice_exit();
	xenshare_bus_exit();
}

module_init(xenshare_init);
module_exit(xenshare_exit);

MODULE_DESCRIPTION("xen-share transport: vdevice page, shares and the xenshare bus");
MODULE_LICENSE("GPL");
