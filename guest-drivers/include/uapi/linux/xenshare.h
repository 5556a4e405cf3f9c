/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR MIT) */
/*
 * /dev/xenshare: shares, grants, grant copy and event channels for
 * userspace in a Linux domain (xenshare.ko). Documented with byte layouts
 * and error codes in docs/xenshare-uapi.md; share-hal's Linux backend
 * (platforms/share-linux/src/xenshare.rs) mirrors these structures.
 *
 * One open file is one set of objects: page blocks (ALLOC), mappings of a
 * peer's grants (MAP) and joined shares (JOIN). Each object has an offset
 * in the file, a multiple of the page size, at which it is mmap()ed (whole,
 * MAP_SHARED, once). Grants (GRANT) and ports (EVTCHN_*) belong to the file
 * too. Closing the file (after the last mapping of it is gone) ends every
 * grant, unmaps every foreign page, closes every port and leaves every
 * share.
 *
 * read() returns the events fired since the last read, as __u32 values: a
 * port number of this file, or XENSHARE_EVENT_SHARE | id for a joined
 * share. Each source is reported once until read. poll() says POLLIN when
 * one is waiting.
 */
#ifndef _UAPI_LINUX_XENSHARE_H
#define _UAPI_LINUX_XENSHARE_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define XENSHARE_IOC_MAGIC 'X'

/* Pages in one ALLOC or MAP; grant copy segments in one COPY. */
#define XENSHARE_MAX_OBJECT_PAGES 1024
#define XENSHARE_MAX_COPY_SEGS 128

/* Bit 31 of an event: the low bits are a joined share's event id. */
#define XENSHARE_EVENT_SHARE 0x80000000u

/* Flags of GRANT and MAP. */
#define XENSHARE_READ_ONLY 0x1

/* ALLOC: count zeroed pages of this domain's own memory. */
struct xenshare_alloc {
	__u32 count;		/* in: 1..=XENSHARE_MAX_OBJECT_PAGES */
	__u32 flags;		/* in: 0 */
	__u64 offset;		/* out: mmap offset of the block */
};

/* RELEASE: drop the object at offset (pages, mapping or joined share). */
struct xenshare_release {
	__u64 offset;
};

/* GRANT: grant one allocated page to domid. */
struct xenshare_grant {
	__u64 page;		/* in: (offset of the block) / 4096 + index */
	__u16 domid;		/* in */
	__u16 flags;		/* in: XENSHARE_READ_ONLY */
	__u32 gref;		/* out */
};

/* REVOKE: end a grant of this file. */
struct xenshare_revoke {
	__u32 gref;
	__u32 pad;		/* 0 */
};

/* MAP: map count pages domid granted to us. */
struct xenshare_map {
	__u64 refs;		/* in: user address of __u32 refs[count] */
	__u32 count;		/* in: 1..=XENSHARE_MAX_OBJECT_PAGES */
	__u16 domid;		/* in */
	__u16 flags;		/* in: XENSHARE_READ_ONLY */
	__u64 offset;		/* out: mmap offset of the mapping */
};

/* JOIN: join the share owner granted us, by its descriptor's grant. */
struct xenshare_join {
	__u16 owner;		/* in */
	__u16 flags;		/* in: 0 */
	__u32 share_ref;	/* in: grant ref of the share descriptor */
	__u32 numpages;		/* in: expected pages or 0; out: pages */
	__u32 event;		/* out: XENSHARE_EVENT_SHARE | id */
	__u64 offset;		/* out: mmap offset of the share's pages */
};

/* One side of a grant copy segment. */
struct xenshare_copy_ptr {
	__u64 page;		/* local side: an allocated page, as in GRANT */
	__u32 gref;		/* foreign side: the peer's grant */
	__u16 domid;		/* foreign side: the peer */
	__u16 offset;		/* byte offset in the page */
};

#define XENSHARE_COPY_SRC_FOREIGN 0x1
#define XENSHARE_COPY_DST_FOREIGN 0x2

struct xenshare_copy_seg {
	struct xenshare_copy_ptr src;
	struct xenshare_copy_ptr dst;
	__u16 len;		/* 1..=4096; offset + len within each page */
	__u16 flags;		/* XENSHARE_COPY_*_FOREIGN */
	__s16 status;		/* out: 0 or a GNTST_* code (xen/grant_table.h) */
	__u16 pad;		/* 0 */
};

/* COPY: one GNTTABOP_copy batch; each segment's status is written back. */
struct xenshare_copy {
	__u64 segs;		/* in: user address of the segments */
	__u32 count;		/* in: 1..=XENSHARE_MAX_COPY_SEGS */
	__u32 pad;		/* 0 */
};

/* EVTCHN_ALLOC_UNBOUND (domid) and EVTCHN_BIND (domid, remote_port). */
struct xenshare_evtchn {
	__u16 domid;		/* in */
	__u16 pad;		/* 0 */
	__u32 remote_port;	/* in: BIND only */
	__u32 port;		/* out: our port */
	__u32 pad2;		/* 0 */
};

/* NOTIFY (a port of this file, or a joined share's event) and CLOSE. */
struct xenshare_port {
	__u32 port;
	__u32 pad;		/* 0 */
};

#define XENSHARE_IOC_ALLOC	_IOWR(XENSHARE_IOC_MAGIC, 0xa0, struct xenshare_alloc)
#define XENSHARE_IOC_RELEASE	_IOW(XENSHARE_IOC_MAGIC, 0xa1, struct xenshare_release)
#define XENSHARE_IOC_GRANT	_IOWR(XENSHARE_IOC_MAGIC, 0xa2, struct xenshare_grant)
#define XENSHARE_IOC_REVOKE	_IOW(XENSHARE_IOC_MAGIC, 0xa3, struct xenshare_revoke)
#define XENSHARE_IOC_MAP	_IOWR(XENSHARE_IOC_MAGIC, 0xa4, struct xenshare_map)
#define XENSHARE_IOC_JOIN	_IOWR(XENSHARE_IOC_MAGIC, 0xa5, struct xenshare_join)
#define XENSHARE_IOC_COPY	_IOW(XENSHARE_IOC_MAGIC, 0xa6, struct xenshare_copy)
#define XENSHARE_IOC_EVTCHN_ALLOC_UNBOUND \
	_IOWR(XENSHARE_IOC_MAGIC, 0xa7, struct xenshare_evtchn)
#define XENSHARE_IOC_EVTCHN_BIND _IOWR(XENSHARE_IOC_MAGIC, 0xa8, struct xenshare_evtchn)
#define XENSHARE_IOC_NOTIFY	_IOW(XENSHARE_IOC_MAGIC, 0xa9, struct xenshare_port)
#define XENSHARE_IOC_EVTCHN_CLOSE _IOW(XENSHARE_IOC_MAGIC, 0xaa, struct xenshare_port)

#endif /* _UAPI_LINUX_XENSHARE_H */
