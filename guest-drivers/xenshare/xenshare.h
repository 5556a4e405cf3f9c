/* SPDX-License-Identifier: GPL-2.0 */
/*
 * xenshare.ko's own interfaces between its files (the exported ones are
 * in include/xenshare/bus.h).
 */
#ifndef XENSHARE_XENSHARE_H
#define XENSHARE_XENSHARE_H

#include <xenshare/bus.h>
#include "parse.h"

/* This domain's id, read at load and after a restore (the descriptor's member check). */
extern domid_t xenshare_domid;

/* bus.c */
int xenshare_bus_init(void);
void xenshare_bus_exit(void);
const char *xenshare_kind_name(u16 kind);
/*
 * Puts a member entry that joined share sh on the bus and probes it. The
 * device owns sh from then on (xenshare_device_remove() leaves it).
 */
struct xenshare_device *xenshare_device_add(unsigned int index,
					    const struct xs_entry_repr *e,
					    struct xenshare_share *sh);
/* Unregisters (the driver's remove runs first), then leaves the share. */
void xenshare_device_remove(struct xenshare_device *xdev);
/*
 * The entry was rewritten in place with the same kind: move the device to
 * new_sh (reconnect(), or remove and probe again). On failure the device
 * is gone (removed, both shares left) and the error is returned.
 */
int xenshare_device_rejoin(struct xenshare_device *xdev,
			   const struct xs_entry_repr *e,
			   struct xenshare_share *new_sh);

/* vdevice.c: bootstrap, the change protocol, and teardown of every entry. */
int xenshare_vdevice_init(void);
void xenshare_vdevice_exit(void);
/*
 * Suspend (xl save, migration): the page stops taking changes. Resume:
 * a cancelled suspend (restored false) takes changes again and joins the
 * same shares; a restored domain (a new id) grants the page to dom0
 * again, with a new port and key, and its devices wait for dom0.
 */
int xenshare_vdevice_freeze(void);
int xenshare_vdevice_resume(bool restored);

/* main.c: this domain's id from xenstore (it changes on restore). */
int xenshare_read_domid(void);

/*
 * dev.c (/dev/xenshare, written separately): main.c calls these at the
 * marked call sites once dev.o is part of xenshare-y.
 */
int xenshare_dev_init(void);
void xenshare_dev_exit(void);
unsigned int xenshare_dev_open_files(void);

#endif /* XENSHARE_XENSHARE_H */
