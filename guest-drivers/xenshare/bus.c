// SPDX-License-Identifier: GPL-2.0
/*
 * The xenshare bus (include/xenshare/bus.h): one device per member entry
 * of the vdevice page, named xenshare-<index> under /sys/devices/xenshare.
 * A driver matches by kind, and only if dom0's feature policy (the entry's
 * subtype) allows every feature it requires. Devices are added, rejoined
 * and removed only from vdevice.c's ordered workqueue (and at unload), so
 * they never race each other.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/module.h>
#include <linux/slab.h>
#include "xenshare/kshim.h"
#include "xenshare.h"

static struct device *xs_root;

const char *xenshare_kind_name(u16 kind)
{
	switch (kind) {
	case XS_KIND_NET:
		return "net";
	case XS_KIND_DISK:
		return "disk";
	default:
		return "unknown";
	}
}

static const char *xs_kind_module(u16 kind)
{
	switch (kind) {
	case XS_KIND_NET:
		return "xensnet";
	case XS_KIND_DISK:
		return "xensblk";
	default:
		return "?";
	}
}

static int xs_match(struct device *dev, XS_MATCH_CONST struct device_driver *drv)
{
	struct xenshare_device *xdev = to_xenshare_device(dev);
	const struct xenshare_driver *xdrv = to_xenshare_driver(drv);

	return xdev->kind == xdrv->kind &&
	       (xdev->subtype & xdrv->required_features) == xdrv->required_features;
}

static int xs_uevent(XS_UEVENT_CONST struct device *dev, struct kobj_uevent_env *env)
{
	return add_uevent_var(env, "MODALIAS=xenshare:t%u", to_xenshare_device(dev)->kind);
}

static int xs_probe(struct device *dev)
{
	struct xenshare_driver *xdrv = to_xenshare_driver(dev->driver);

	if (!xdrv->probe)
		return -ENODEV;
	return xdrv->probe(to_xenshare_device(dev));
}

static void xs_remove(struct device *dev)
{
	struct xenshare_driver *xdrv = to_xenshare_driver(dev->driver);
	struct xenshare_device *xdev = to_xenshare_device(dev);

	/* Its remove() ran already, when the domain was saved. */
	if (xdev->removed_for_save) {
		xdev->removed_for_save = false;
		return;
	}
	if (xdrv->remove)
		xdrv->remove(xdev);
}

/*
 * The domain is about to be suspended (saved, migrated): the driver stops
 * using the share and we leave it, since a save keeps no foreign mapping.
 * The PM core holds the device lock.
 */
static int xs_freeze(struct device *dev)
{
	struct xenshare_device *xdev = to_xenshare_device(dev);
	struct xenshare_driver *xdrv = dev->driver ? to_xenshare_driver(dev->driver) : NULL;
	domid_t owner;

	if (!xdev->share)
		return 0;
	owner = xdev->share->owner;
	if (xdrv && xdrv->suspend && xdrv->reconnect) {
		xdrv->suspend(xdev);
	} else if (xdrv) {
		dev_warn(dev, "driver %s cannot keep its device across a save: removed, probed again when the entry is back\n",
			 xdrv->driver.name);
		if (xdrv->remove)
			xdrv->remove(xdev);
		xdev->removed_for_save = true;
	}
	xenshare_share_leave(xdev->share);
	xdev->share = NULL;
	dev_info(dev, "left domain %u's share for the suspend; the device waits for it\n", owner);
	return 0;
}

static const struct dev_pm_ops xs_bus_pm = {
	.freeze = xs_freeze,
};

static ssize_t modalias_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "xenshare:t%u\n", to_xenshare_device(dev)->kind);
}
static DEVICE_ATTR_RO(modalias);

static ssize_t subtype_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%#x\n", to_xenshare_device(dev)->subtype);
}
static DEVICE_ATTR_RO(subtype);

static struct attribute *xs_dev_attrs[] = {
	&dev_attr_modalias.attr,
	&dev_attr_subtype.attr,
	NULL,
};
ATTRIBUTE_GROUPS(xs_dev);

static struct bus_type xenshare_bus_type = {
	.name = "xenshare",
	.match = xs_match,
	.uevent = xs_uevent,
	.probe = xs_probe,
	.remove = xs_remove,
	.dev_groups = xs_dev_groups,
	.pm = &xs_bus_pm,
};

int __xenshare_register_driver(struct xenshare_driver *drv, struct module *owner,
			       const char *mod_name)
{
	drv->driver.bus = &xenshare_bus_type;
	drv->driver.owner = owner;
	drv->driver.mod_name = mod_name;
	return driver_register(&drv->driver);
}
EXPORT_SYMBOL_GPL(__xenshare_register_driver);

void xenshare_unregister_driver(struct xenshare_driver *drv)
{
	driver_unregister(&drv->driver);
}
EXPORT_SYMBOL_GPL(xenshare_unregister_driver);

static void xs_release(struct device *dev)
{
	kfree(to_xenshare_device(dev));
}

static void xs_log_unbound(struct xenshare_device *xdev)
{
	pr_info("entry %u (%s share from domain %u) has no driver (modprobe %s)\n",
		xdev->index, xenshare_kind_name(xdev->kind), xdev->share->owner,
		xs_kind_module(xdev->kind));
}

static void xs_set_entry(struct xenshare_device *xdev, const struct xs_entry_repr *e)
{
	xdev->kind = e->kind;
	xdev->flags = e->flags;
	xdev->subtype = e->subtype;
	memcpy(xdev->param, e->param, sizeof(xdev->param));
}

struct xenshare_device *xenshare_device_add(unsigned int index, const struct xs_entry_repr *e,
					    struct xenshare_share *sh)
{
	struct xenshare_device *xdev;
	int err;

	xdev = kzalloc(sizeof(*xdev), GFP_KERNEL);
	if (!xdev)
		return ERR_PTR(-ENOMEM);
	xdev->index = index;
	xs_set_entry(xdev, e);
	xdev->share = sh;
	xdev->dev.bus = &xenshare_bus_type;
	xdev->dev.parent = xs_root;
	xdev->dev.release = xs_release;
	err = dev_set_name(&xdev->dev, "xenshare-%u", index);
	if (!err)
		err = device_register(&xdev->dev);
	if (err) {
		pr_warn("entry %u: cannot register its device (%d)\n", index, err);
		put_device(&xdev->dev);
		return ERR_PTR(err);
	}
	/* A matching driver already loaded was probed in device_register(). */
	if (!READ_ONCE(xdev->dev.driver))
		xs_log_unbound(xdev);
	return xdev;
}

void xenshare_device_remove(struct xenshare_device *xdev)
{
	struct xenshare_share *sh = xdev->share;

	/* The driver's remove() runs in here; xdev may be freed after it. */
	device_unregister(&xdev->dev);
	xenshare_share_leave(sh);
}

/* Only the share moved (the server restarted): what reconnect() is for. */
static bool xs_same_device(const struct xenshare_device *xdev, const struct xs_entry_repr *e)
{
	return xdev->kind == e->kind && xdev->flags == e->flags &&
	       xdev->subtype == e->subtype &&
	       !memcmp(xdev->param, e->param, sizeof(xdev->param));
}

int xenshare_device_rejoin(struct xenshare_device *xdev, const struct xs_entry_repr *e,
			   struct xenshare_share *new_sh)
{
	struct xenshare_share *old_sh = xdev->share;
	struct xenshare_driver *xdrv;
	int err;

	device_lock(&xdev->dev);
	xdrv = xdev->dev.driver ? to_xenshare_driver(xdev->dev.driver) : NULL;
	if (xdrv && xdrv->reconnect && xs_same_device(xdev, e) && !xdev->removed_for_save) {
		err = xdrv->reconnect(xdev, new_sh);
		if (!err)
			xdev->share = new_sh;
		device_unlock(&xdev->dev);
		if (err) {
			dev_warn(&xdev->dev, "reconnect to domain %u's share failed (%d): device removed\n",
				 new_sh->owner, err);
			xenshare_share_leave(new_sh);
			xenshare_device_remove(xdev);
			return err;
		}
		if (old_sh)
			dev_info(&xdev->dev, "reconnected from domain %u's share to domain %u's\n",
				 old_sh->owner, new_sh->owner);
		else
			dev_info(&xdev->dev, "reconnected to domain %u's share after the suspend\n",
				 new_sh->owner);
		xenshare_share_leave(old_sh);
		return 0;
	}
	device_unlock(&xdev->dev);

	/* No reconnect(), or more than the share changed: probe afresh. */
	device_release_driver(&xdev->dev);
	xdev->share = new_sh;
	xs_set_entry(xdev, e);
	xenshare_share_leave(old_sh);
	err = device_attach(&xdev->dev);
	if (err < 0)
		dev_warn(&xdev->dev, "probe after rejoin failed (%d)\n", err);
	else if (err == 0)
		xs_log_unbound(xdev);
	else
		dev_info(&xdev->dev, "rejoined domain %u's share and probed again\n",
			 new_sh->owner);
	return 0;
}

/*
 * The parent of every xenshare device, /sys/devices/xenshare. Its PM
 * callbacks are the vdevice page's: the PM core freezes children before
 * their parent and restores the parent first, so the page is published
 * again before any device looks for its share.
 */
static int xs_root_freeze(struct device *dev)
{
	return xenshare_vdevice_freeze();
}

static int xs_root_thaw(struct device *dev)
{
	return xenshare_vdevice_resume(false);
}

static int xs_root_restore(struct device *dev)
{
	return xenshare_vdevice_resume(true);
}

static const struct dev_pm_ops xs_root_pm = {
	.freeze = xs_root_freeze,
	.thaw = xs_root_thaw,
	.restore = xs_root_restore,
};

static const struct device_type xs_root_type = {
	.name = "xenshare",
	.pm = &xs_root_pm,
};

static void xs_root_release(struct device *dev)
{
	kfree(dev);
}

static int xs_root_add(void)
{
	int err;

	xs_root = kzalloc(sizeof(*xs_root), GFP_KERNEL);
	if (!xs_root)
		return -ENOMEM;
	device_initialize(xs_root);
	xs_root->type = &xs_root_type;
	xs_root->release = xs_root_release;
	err = dev_set_name(xs_root, "xenshare");
	if (!err)
		err = device_add(xs_root);
	if (err)
		put_device(xs_root);
	return err;
}

int xenshare_bus_init(void)
{
	int err;

	err = xs_root_add();
	if (err)
		return err;
	err = bus_register(&xenshare_bus_type);
	if (err) {
		device_unregister(xs_root);
		return err;
	}
	return 0;
}

void xenshare_bus_exit(void)
{
	bus_unregister(&xenshare_bus_type);
	device_unregister(xs_root);
}
