/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Where the kernel API differs between the kernels the guest modules build
 * for: Debian 12's Linux 6.1 and Debian 13's Linux 6.12. Each shim names
 * the kernel version that changed the API; code uses the newer spelling.
 */
#ifndef XENSHARE_KSHIM_H
#define XENSHARE_KSHIM_H

#include <linux/version.h>
#include <linux/device.h>
#include <linux/mm.h>

/* 6.3: vm_area_struct.vm_flags became read-only, set through these. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 3, 0)
static inline void vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)
{
	vma->vm_flags |= flags;
}

static inline void vm_flags_clear(struct vm_area_struct *vma, vm_flags_t flags)
{
	vma->vm_flags &= ~flags;
}
#endif

/* 6.3: bus_type.uevent takes a const struct device. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 3, 0)
#define XS_UEVENT_CONST
#else
#define XS_UEVENT_CONST const
#endif

/* 6.11: bus_type.match takes a const struct device_driver. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 11, 0)
#define XS_MATCH_CONST
#else
#define XS_MATCH_CONST const
#endif

#endif /* XENSHARE_KSHIM_H */
