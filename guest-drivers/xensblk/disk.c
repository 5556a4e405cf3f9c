// SPDX-License-Identifier: GPL-2.0
/*
 * xensblk: a disk served through a xen-share block share
 * (docs/protocol.md "Block share (xensblk)").
 *
 * Each disk entry of the vdevice page becomes a blk-mq disk /dev/xsbX.
 * A request's pages are granted to the share's owner for the request's
 * lifetime; the request names them in a slot of the request lane (inline
 * segments, or one indirect page); the owner answers in the response lane
 * with the request's id, which is the blk-mq tag.
 *
 * The server is granted bounce pages only, never the request's own pages
 * (which share their page with other kernel data when a segment is
 * shorter than a page): a write's data is copied into them, a read's is
 * copied out once the grants have ended, and each holds nothing but the
 * request's bytes and zeroes (parse.c's xsblk_bounce_fill and
 * xsblk_finish_indirect). A page the server still maps after its
 * response goes to gnttab_end_foreign_access(), which frees it when the
 * server lets go; it never returns to the pool or the block layer.
 *
 * When the server restarts, dom0 rewrites the entry in place and the bus
 * calls reconnect(): the requests the old server left unanswered are
 * granted again to the new owner and re-issued, in the order they were
 * first issued, so the file system above only sees a pause.
 *
 * Everything the server writes is copied out once and parsed by parse.c.
 * A broken server (bad index, status or id) gets its disk failed, not the
 * kernel: the disk stops reading the lane and fails what is in flight.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/highmem.h>
#include <linux/idr.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/version.h>
#include <xen/events.h>
#include <xen/grant_table.h>
#include <xen/xen.h>
#include <xen/page.h>
#include "xenshare/bus.h"
#include "xenshare/lane.h"
#include "parse.h"

/* 1 MiB per request: one indirect page holds all its segments. */
#define XSBLK_MAX_SEGMENTS 256
#define XSBLK_MAX_DEPTH 256
#define XSBLK_MINORS 16
/* xsba..xsbz, then xsbaa..xsbzz. */
#define XSBLK_MAX_DISKS (26 + 26 * 26)
/* Bounce pages a disk holds at most (8 MiB), or one full request's. */
#define XSBLK_POOL_MAX 2048

static_assert(XSBLK_MAX_SEGMENTS <= XS_BLK_SEGMENTS_PER_INDIRECT_PAGE);
static_assert(PAGE_SIZE == XS_PAGE_SIZE);

/* A share this disk is attached to: its offer and both lanes. */
struct xsblk_lanes {
	struct xenshare_share *sh;
	struct xsblk_control control;
	u32 slots;
	struct xs_lane req;
	struct xs_lane rsp;
};

struct xsblk_info {
	struct xenshare_device *xdev;
	struct gendisk *gd;
	struct blk_mq_tag_set tag_set;
	int index;
	unsigned int depth;		/* ids are 0..depth-1 (the tags) */
	unsigned int max_segs;		/* > inline: indirect requests */

	spinlock_t lock;		/* everything below */
	struct xsblk_lanes cur;		/* cur.sh is NULL while detached */
	domid_t server;			/* cur's owner, or the last one */
	bool detached;			/* suspended: no share, queue quiesced */
	struct list_head issued;	/* in flight, in issue order */
	u8 *in_flight;			/* [depth], for the response parser */
	struct request **rqs;		/* [depth] */
	bool broken;			/* the server broke the protocol */
	bool dying;			/* remove() has begun */
	bool wait_room;			/* a request waits for a free slot */
	unsigned long grants;		/* live grants to the server */
	unsigned long pinned;		/* ended while the server held them */

	/* Bounce pages; pool_lock nests inside lock. */
	spinlock_t pool_lock;
	struct list_head pool;		/* free pages, by page->lru */
	unsigned int pool_free;
	unsigned int pool_pages;	/* free and held by requests */
	unsigned int pool_max;
};

/* Per request (blk-mq pdu); sg[] follows, info->max_segs entries. */
struct xsblk_req {
	struct list_head node;
	u32 id;
	u8 op;				/* XS_BLK_OP_* as sent */
	u8 flags;			/* XS_BLK_REQ_* */
	bool write;
	blk_status_t status;
	unsigned int nr_sg;
	unsigned int nr_grants;		/* grefs[0..nr_grants) are live */
	bool indirect_granted;
	grant_ref_t indirect_gref;
	unsigned int nr_bounce;		/* bounce[0..nr_bounce) held (or pinned: NULL) */
	struct page *indirect;		/* a pool page, for an indirect request */
	grant_ref_t grefs[XSBLK_MAX_SEGMENTS];
	struct page *bounce[XSBLK_MAX_SEGMENTS];	/* the server's copy of sg[i] */
	struct scatterlist sg[];
};

static void xsblk_break(struct xsblk_info *info, const char *why, long long what);

static int xsblk_major;
static DEFINE_IDA(xsblk_ida);

/* ---- attaching to a share ------------------------------------------- */

static int xsblk_attach(struct xsblk_lanes *l, struct xenshare_share *sh)
{
	struct xs_blk_control raw;
	const void *p;
	u32 s;
	int err;

	p = xenshare_share_ptr(sh, 0, sizeof(raw));
	if (!p)
		return -EPROTO;
	memcpy(&raw, p, sizeof(raw));
	err = xsblk_parse_control(&raw, &l->control);
	if (err)
		return err;
	s = xs_blk_slots(sh->nr_pages);
	if (!s)
		return -EPROTO;
	err = xs_lane_attach(&l->req, sh, XS_BLK_REQUEST_LANE,
			     xs_blk_request_slots_off(s), s,
			     XS_BLK_REQUEST_SIZE, true);
	if (err)
		return err;
	err = xs_lane_attach(&l->rsp, sh, xs_blk_response_lane_off(s),
			     xs_blk_response_slots_off(s), s,
			     XS_BLK_RESPONSE_SIZE, false);
	if (err)
		return err;
	l->sh = sh;
	l->slots = s;
	return 0;
}

/* ---- grants --------------------------------------------------------- */

static int xsblk_grant_page(struct xsblk_info *info, struct page *page,
			    bool readonly, grant_ref_t *ref)
{
	int r = gnttab_grant_foreign_access(READ_ONCE(info->server),
					    xen_page_to_gfn(page), readonly);

	if (r < 0)
		return r;
	*ref = r;
	info->grants++;
	return 0;
}

/*
 * The server only copies through our grants, so each is idle once the
 * request is answered. One still in use means the server mapped it: the
 * page is handed to gnttab_end_foreign_access(), which frees it once the
 * server lets go; *page is cleared so nothing of ours uses it again, and
 * the caller treats the server as broken. Lock held.
 */
static bool xsblk_end_grant(struct xsblk_info *info, grant_ref_t ref,
			    struct page **page)
{
	info->grants--;
	if (gnttab_try_end_foreign_access(ref))
		return true;
	info->pinned++;
	gnttab_end_foreign_access(ref, *page);
	*page = NULL;
	spin_lock(&info->pool_lock);
	info->pool_pages--;
	spin_unlock(&info->pool_lock);
	return false;
}

static bool xsblk_end_grants(struct xsblk_info *info, struct xsblk_req *req)
{
	bool idle = true;
	unsigned int i;

	for (i = 0; i < req->nr_grants; i++)
		idle &= xsblk_end_grant(info, req->grefs[i], &req->bounce[i]);
	req->nr_grants = 0;
	if (req->indirect_granted)
		idle &= xsblk_end_grant(info, req->indirect_gref, &req->indirect);
	req->indirect_granted = false;
	return idle;
}

/* Grant each bounce page and describe it as a segment in segs[]. */
static int xsblk_grant_data(struct xsblk_info *info, struct xsblk_req *req,
			    struct xs_blk_segment *segs)
{
	struct scatterlist *sg;
	unsigned int i;
	int err;

	for_each_sg(req->sg, sg, req->nr_sg, i) {
		/* Pinned by an earlier server: this request cannot go again. */
		if (!req->bounce[i])
			return -EINVAL;
		/* The server writes the page on reads, only reads it on writes. */
		err = xsblk_grant_page(info, req->bounce[i], req->write, &req->grefs[i]);
		if (err)
			return err;
		req->nr_grants++;
		if (xsblk_segment(req->grefs[i], sg->offset, sg->length, &segs[i]))
			return -EINVAL;
	}
	return 0;
}

static int xsblk_grant_indirect(struct xsblk_info *info, struct xsblk_req *req,
				struct xs_blk_request *w)
{
	int err;

	if (!req->indirect)
		return -EINVAL;
	err = xsblk_grant_data(info, req, page_address(req->indirect));
	if (err)
		return err;
	/* Nothing but the segments: the page was a bounce page before. */
	xsblk_finish_indirect(page_address(req->indirect), req->nr_sg);
	err = xsblk_grant_page(info, req->indirect, true, &req->indirect_gref);
	if (err)
		return err;
	req->indirect_granted = true;
	w->u.indirect.op = req->write ? XS_BLK_OP_WRITE : XS_BLK_OP_READ;
	w->u.indirect.grefs[0] = cpu_to_le32(req->indirect_gref);
	return 0;
}

/* ---- bounce pages --------------------------------------------------- */

/* A free pool page, or a new zeroed one while under pool_max. */
static struct page *xsblk_pool_take(struct xsblk_info *info)
{
	struct page *page;

	lockdep_assert_held(&info->pool_lock);
	page = list_first_entry_or_null(&info->pool, struct page, lru);
	if (page) {
		list_del(&page->lru);
		info->pool_free--;
		return page;
	}
	if (info->pool_pages >= info->pool_max)
		return NULL;
	page = alloc_page(GFP_NOWAIT | __GFP_NOWARN | __GFP_ZERO);
	if (page)
		info->pool_pages++;
	return page;
}

static void xsblk_pool_give(struct xsblk_info *info, struct page *page)
{
	lockdep_assert_held(&info->pool_lock);
	list_add(&page->lru, &info->pool);
	info->pool_free++;
}

/* The request's bounce pages back to the pool (pinned ones are gone). */
static void xsblk_bounce_put(struct xsblk_info *info, struct xsblk_req *req)
{
	unsigned long flags;
	unsigned int i;

	spin_lock_irqsave(&info->pool_lock, flags);
	for (i = 0; i < req->nr_bounce; i++) {
		if (req->bounce[i])
			xsblk_pool_give(info, req->bounce[i]);
		req->bounce[i] = NULL;
	}
	if (req->indirect)
		xsblk_pool_give(info, req->indirect);
	spin_unlock_irqrestore(&info->pool_lock, flags);
	req->nr_bounce = 0;
	req->indirect = NULL;
}

/*
 * A page per segment, and one for an indirect request's segments; all or
 * none. The pool always holds one full request (xsblk_pool_init), so a
 * request that finds too few waits for others to complete.
 */
static blk_status_t xsblk_bounce_get(struct xsblk_info *info, struct xsblk_req *req)
{
	unsigned long flags;
	bool short_of_pages = false;
	unsigned int i;

	spin_lock_irqsave(&info->pool_lock, flags);
	for (i = 0; i < req->nr_sg && !short_of_pages; i++) {
		req->bounce[i] = xsblk_pool_take(info);
		short_of_pages = !req->bounce[i];
		req->nr_bounce = i + 1;
	}
	if (!short_of_pages && req->op == XS_BLK_OP_INDIRECT) {
		req->indirect = xsblk_pool_take(info);
		short_of_pages = !req->indirect;
	}
	spin_unlock_irqrestore(&info->pool_lock, flags);
	if (!short_of_pages)
		return BLK_STS_OK;
	xsblk_bounce_put(info, req);
	return BLK_STS_RESOURCE;
}

/* A write's data into its bounce pages; a read's bounce pages zeroed. */
static void xsblk_bounce_fill_req(struct xsblk_req *req)
{
	struct scatterlist *sg;
	unsigned int i;

	for_each_sg(req->sg, sg, req->nr_sg, i) {
		u8 *data = req->write ? kmap_local_page(sg_page(sg)) : NULL;

		xsblk_bounce_fill(page_address(req->bounce[i]),
				  data ? data + sg->offset : NULL, sg->offset, sg->length,
				  req->write);
		if (data)
			kunmap_local(data);
	}
}

/* A read answered OKAY: its data out of the bounce pages (grants ended). */
static void xsblk_bounce_copy_out(struct xsblk_req *req)
{
	struct scatterlist *sg;
	unsigned int i;

	for_each_sg(req->sg, sg, req->nr_sg, i) {
		u8 *data = kmap_local_page(sg_page(sg));

		memcpy(data + sg->offset, (u8 *)page_address(req->bounce[i]) + sg->offset,
		       sg->length);
		kunmap_local(data);
		flush_dcache_page(sg_page(sg));
	}
}

/* The pool starts with one full request's pages, and keeps them. */
static int xsblk_pool_init(struct xsblk_info *info)
{
	unsigned int i, reserve = info->max_segs + 1;
	struct page *page;

	info->pool_max = max_t(unsigned int, reserve,
			       min_t(unsigned int, XSBLK_POOL_MAX, info->depth * reserve));
	for (i = 0; i < reserve; i++) {
		page = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!page)
			return -ENOMEM;
		spin_lock_irq(&info->pool_lock);
		xsblk_pool_give(info, page);
		info->pool_pages++;
		spin_unlock_irq(&info->pool_lock);
	}
	return 0;
}

/* Every request is done: the pool's pages go back to the kernel. */
static void xsblk_pool_free(struct xsblk_info *info)
{
	struct page *page, *tmp;

	if (info->pool_free != info->pool_pages)
		dev_err(&info->xdev->dev, "%u bounce page(s) still held at removal: leaked\n",
			info->pool_pages - info->pool_free);
	list_for_each_entry_safe(page, tmp, &info->pool, lru) {
		list_del(&page->lru);
		__free_page(page);
	}
	info->pool_free = 0;
	info->pool_pages = 0;
}

/* ---- issuing -------------------------------------------------------- */

/* Grant what the request needs and describe it in w (private). */
static int xsblk_build(struct xsblk_info *info, struct request *rq,
		       struct xsblk_req *req, struct xs_blk_request *w)
{
	memset(w, 0, sizeof(*w));
	w->op = req->op;
	w->id = cpu_to_le64(req->id);
	switch (req->op) {
	case XS_BLK_OP_FLUSH:
		return 0;
	case XS_BLK_OP_DISCARD:
		w->sector = cpu_to_le64(blk_rq_pos(rq));
		w->u.discard.nr_sectors = cpu_to_le64(blk_rq_sectors(rq));
		return 0;
	}
	w->flags = req->flags;
	w->sector = cpu_to_le64(blk_rq_pos(rq));
	w->nr_segments = cpu_to_le16(req->nr_sg);
	if (req->op == XS_BLK_OP_INDIRECT)
		return xsblk_grant_indirect(info, req, w);
	return xsblk_grant_data(info, req, w->u.seg);
}

/*
 * Put a prepared request in the request lane (not yet published). Lock
 * held. On failure nothing stays granted and the request is not in
 * flight.
 */
static blk_status_t xsblk_issue(struct xsblk_info *info, struct request *rq,
				struct xsblk_req *req)
{
	struct xs_blk_request w;
	int room, err;
	void *slot;

	if (info->broken)
		return BLK_STS_IOERR;
	if (info->in_flight[req->id]) {
		/* blk-mq never has two requests on one tag: no id is reused. */
		dev_err_ratelimited(&info->xdev->dev, "%s: id %u already in flight\n",
				    info->gd->disk_name, req->id);
		return BLK_STS_IOERR;
	}
	room = xs_lane_producer_refresh(&info->cur.req);
	if (room < 0) {
		xsblk_break(info, "request lane index", room);
		return BLK_STS_IOERR;
	}
	if (!room && !xs_lane_prepare_wait(&info->cur.req, true, 1)) {
		info->wait_room = true;
		return BLK_STS_DEV_RESOURCE;
	}
	slot = xs_lane_slot(&info->cur.req, info->cur.req.ours);
	if (!slot)
		return BLK_STS_IOERR;
	err = xsblk_build(info, rq, req, &w);
	if (err) {
		xsblk_end_grants(info, req);
		return err == -EINVAL ? BLK_STS_IOERR : BLK_STS_RESOURCE;
	}
	memcpy(slot, &w, sizeof(w));
	info->cur.req.ours++;
	info->in_flight[req->id] = 1;
	info->rqs[req->id] = rq;
	list_add_tail(&req->node, &info->issued);
	return BLK_STS_OK;
}

static void xsblk_push(struct xsblk_info *info)
{
	if (xs_lane_publish(&info->cur.req, true))
		xenshare_share_trigger(info->cur.sh);
}

/* ---- completing ----------------------------------------------------- */

/* Take a request out of flight and complete it. Lock held. */
static bool xsblk_finish(struct xsblk_info *info, struct xsblk_req *req,
			 blk_status_t status)
{
	struct request *rq = info->rqs[req->id];
	bool idle;

	info->in_flight[req->id] = 0;
	info->rqs[req->id] = NULL;
	list_del(&req->node);
	idle = xsblk_end_grants(info, req);
	req->status = idle ? status : BLK_STS_IOERR;
	blk_mq_complete_request(rq);
	return idle;
}

static void xsblk_fail_all(struct xsblk_info *info)
{
	struct xsblk_req *req, *tmp;

	list_for_each_entry_safe(req, tmp, &info->issued, node)
		xsblk_finish(info, req, BLK_STS_IOERR);
}

/* The server broke the protocol: stop using the lane. Lock held. */
static void xsblk_break(struct xsblk_info *info, const char *why, long long what)
{
	if (info->broken)
		return;
	info->broken = true;
	dev_err(&info->xdev->dev,
		"%s: server domain %u broke the protocol (%s: %lld); failing %s\n",
		info->gd->disk_name, info->server, why, what,
		"its requests until the entry is rewritten");
	xsblk_fail_all(info);
}

static blk_status_t xsblk_status(s16 status)
{
	switch (status) {
	case XS_BLK_STATUS_OKAY:
		return BLK_STS_OK;
	case XS_BLK_STATUS_NOT_SUPPORTED:
		return BLK_STS_NOTSUPP;
	default:
		return BLK_STS_IOERR;
	}
}

/* Copy out and complete n responses. Lock held; false if broken. */
static bool xsblk_consume(struct xsblk_info *info, int n)
{
	struct xs_blk_response raw;
	struct xsblk_response r;
	const void *slot;
	int err;

	while (n-- > 0) {
		slot = xs_lane_slot(&info->cur.rsp, info->cur.rsp.ours);
		if (!slot) {
			xsblk_break(info, "response slot outside the share", 0);
			return false;
		}
		memcpy(&raw, slot, sizeof(raw));
		info->cur.rsp.ours++;
		err = xsblk_parse_response(&raw, info->in_flight, info->depth, &r);
		if (err == -ENOENT) {
			xsblk_break(info, "response to no request in flight, id",
				    (long long)le64_to_cpu(raw.id));
			return false;
		}
		if (err) {
			xsblk_break(info, "response status",
				    (s16)le16_to_cpu(raw.status));
			return false;
		}
		if (!xsblk_finish(info, blk_mq_rq_to_pdu(info->rqs[r.id]),
				  xsblk_status(r.status))) {
			xsblk_break(info, "grant still in use after the response, id", r.id);
			return false;
		}
	}
	return true;
}

/*
 * Take every response there is, then ask to be triggered for the next.
 * Each round completes at least one request in flight (an id answered
 * twice breaks the lane), so depth + 1 rounds always suffice. Returns
 * whether there was anything to do (a response, or room a request waited
 * for).
 */
static bool xsblk_poll(struct xsblk_info *info)
{
	bool work = false;
	unsigned int round;
	int n;

	/* Waiting for room, a trigger is work only if it brought some. */
	if (info->wait_room)
		work = xsblk_trigger_is_work(0, true,
					     xs_lane_producer_refresh(&info->cur.req));

	for (round = 0; round <= info->depth && !info->broken; round++) {
		n = xs_lane_consumer_refresh(&info->cur.rsp);
		work |= xsblk_trigger_is_work(n, false, 0);
		if (n < 0) {
			xsblk_break(info, "response lane index", n);
			break;
		}
		if (!xsblk_consume(info, n))
			break;
		if (xs_lane_publish(&info->cur.rsp, false))
			xenshare_share_trigger(info->cur.sh);
		if (!xs_lane_prepare_wait(&info->cur.rsp, false, 0))
			break;
	}
	if (info->wait_room || info->broken) {
		info->wait_room = false;
		blk_mq_run_hw_queues(info->gd->queue, true);
	}
	return work;
}

static irqreturn_t xsblk_interrupt(int irq, void *data)
{
	struct xsblk_info *info = data;
	unsigned long flags;
	bool work = false;

	spin_lock_irqsave(&info->lock, flags);
	/* Detached: cur's pages are gone; the new share's are not cur yet. */
	if (!info->broken && !info->dying && !info->detached)
		work = xsblk_poll(info);
	spin_unlock_irqrestore(&info->lock, flags);
	/* The port was masked until now (late EOI): one trigger at a time. */
	xen_irq_lateeoi(irq, work ? 0 : XEN_EOI_FLAG_SPURIOUS);
	return IRQ_HANDLED;
}

/* ---- blk-mq --------------------------------------------------------- */

static blk_status_t xsblk_map(struct xsblk_info *info, struct request *rq,
			      struct xsblk_req *req)
{
	struct xs_blk_segment seg;
	struct scatterlist *sg;
	unsigned int i;

	req->nr_sg = blk_rq_map_sg(rq->q, rq, req->sg);
	if (!req->nr_sg || req->nr_sg > info->max_segs)
		return BLK_STS_IOERR;
	/* Each within its page, whole sectors: what a bounce page can carry. */
	for_each_sg(req->sg, sg, req->nr_sg, i)
		if (xsblk_segment(0, sg->offset, sg->length, &seg))
			return BLK_STS_IOERR;
	if (req->nr_sg > XS_BLK_MAX_INLINE_SEGMENTS)
		req->op = XS_BLK_OP_INDIRECT;
	else
		req->op = req->write ? XS_BLK_OP_WRITE : XS_BLK_OP_READ;
	return BLK_STS_OK;
}

/* Decide the wire op and map the data; no lock, nothing granted. */
static blk_status_t xsblk_prepare(struct xsblk_info *info, struct request *rq,
				  struct xsblk_req *req)
{
	u32 features = info->cur.control.features;

	req->id = rq->tag;
	req->flags = 0;
	req->write = false;
	req->nr_sg = 0;
	if (rq->tag < 0 || (unsigned int)rq->tag >= info->depth)
		return BLK_STS_IOERR;
	switch (req_op(rq)) {
	case REQ_OP_FLUSH:
		if (!(features & XS_BLK_F_FLUSH))
			return BLK_STS_NOTSUPP;
		req->op = XS_BLK_OP_FLUSH;
		return BLK_STS_OK;
	case REQ_OP_DISCARD:
		if (!(features & XS_BLK_F_DISCARD))
			return BLK_STS_NOTSUPP;
		req->op = XS_BLK_OP_DISCARD;
		return BLK_STS_OK;
	case REQ_OP_WRITE:
		req->write = true;
		if ((rq->cmd_flags & REQ_FUA) && (features & XS_BLK_F_FUA))
			req->flags = XS_BLK_REQ_FUA;
		return xsblk_map(info, rq, req);
	case REQ_OP_READ:
		return xsblk_map(info, rq, req);
	default:
		return BLK_STS_NOTSUPP;
	}
}

static blk_status_t xsblk_queue_rq(struct blk_mq_hw_ctx *hctx,
				   const struct blk_mq_queue_data *bd)
{
	struct xsblk_info *info = hctx->queue->queuedata;
	struct request *rq = bd->rq;
	struct xsblk_req *req = blk_mq_rq_to_pdu(rq);
	unsigned long flags;
	blk_status_t sts;

	/* Rechecked under the lock; this spares the grants of a doomed one. */
	if (READ_ONCE(info->broken) || READ_ONCE(info->dying))
		return BLK_STS_IOERR;
	sts = xsblk_prepare(info, rq, req);
	if (sts)
		return sts;
	sts = xsblk_bounce_get(info, req);
	if (sts)
		return sts;
	xsblk_bounce_fill_req(req);
	blk_mq_start_request(rq);
	spin_lock_irqsave(&info->lock, flags);
	if (info->broken || info->dying)
		sts = BLK_STS_IOERR;
	else
		sts = xsblk_issue(info, rq, req);
	if (sts == BLK_STS_OK && bd->last)
		xsblk_push(info);
	spin_unlock_irqrestore(&info->lock, flags);
	/* Not in flight: blk-mq ends or requeues it without complete(). */
	if (sts)
		xsblk_bounce_put(info, req);
	return sts;
}

static void xsblk_commit_rqs(struct blk_mq_hw_ctx *hctx)
{
	struct xsblk_info *info = hctx->queue->queuedata;
	unsigned long flags;

	spin_lock_irqsave(&info->lock, flags);
	if (!info->broken && !info->dying && !info->detached)
		xsblk_push(info);
	spin_unlock_irqrestore(&info->lock, flags);
}

static void xsblk_complete_rq(struct request *rq)
{
	struct xsblk_info *info = rq->q->queuedata;
	struct xsblk_req *req = blk_mq_rq_to_pdu(rq);

	/* OKAY needs every grant ended (xsblk_finish): the pages are ours. */
	if (req->status == BLK_STS_OK && !req->write && req->nr_bounce)
		xsblk_bounce_copy_out(req);
	xsblk_bounce_put(info, req);
	blk_mq_end_request(rq, req->status);
}

static int xsblk_init_request(struct blk_mq_tag_set *set, struct request *rq,
			      unsigned int hctx_idx, unsigned int numa_node)
{
	struct xsblk_info *info = set->driver_data;
	struct xsblk_req *req = blk_mq_rq_to_pdu(rq);

	sg_init_table(req->sg, info->max_segs);
	req->nr_grants = 0;
	req->indirect_granted = false;
	req->nr_bounce = 0;
	req->indirect = NULL;
	return 0;
}

static const struct blk_mq_ops xsblk_mq_ops = {
	.queue_rq = xsblk_queue_rq,
	.commit_rqs = xsblk_commit_rqs,
	.complete = xsblk_complete_rq,
	.init_request = xsblk_init_request,
};

static const struct block_device_operations xsblk_fops = {
	.owner = THIS_MODULE,
};

/* ---- the disk ------------------------------------------------------- */

/* xsba..xsbz, xsbaa..xsbzz */
static void xsblk_disk_name(char *name, unsigned int index)
{
	if (index < 26)
		snprintf(name, DISK_NAME_LEN, "xsb%c", 'a' + index);
	else
		snprintf(name, DISK_NAME_LEN, "xsb%c%c",
			 'a' + (index - 26) / 26, 'a' + (index - 26) % 26);
}

static unsigned int xsblk_max_segments(const struct xsblk_control *c)
{
	if (!(c->features & XS_BLK_F_INDIRECT) ||
	    c->max_indirect_segments <= XS_BLK_MAX_INLINE_SEGMENTS)
		return XS_BLK_MAX_INLINE_SEGMENTS;
	return min_t(unsigned int, c->max_indirect_segments, XSBLK_MAX_SEGMENTS);
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
/*
 * 6.11: a disk's limits and features (write cache, FUA) are given to
 * blk_mq_alloc_disk() in a struct queue_limits (6.9); the blk_queue_*
 * setters are gone.
 */
static struct gendisk *xsblk_mq_alloc_disk(struct xsblk_info *info)
{
	u32 features = info->cur.control.features;
	struct queue_limits lim = {
		.logical_block_size = XS_BLK_SECTOR_SIZE,
		.max_segments = info->max_segs,
		.max_segment_size = PAGE_SIZE,
		.seg_boundary_mask = PAGE_SIZE - 1,
		.max_hw_sectors = info->max_segs * XS_BLK_SECTORS_PER_PAGE,
		.dma_alignment = XS_BLK_SECTOR_SIZE - 1,
	};

	if (features & XS_BLK_F_FLUSH) {
		lim.features |= BLK_FEAT_WRITE_CACHE;
		if (features & XS_BLK_F_FUA)
			lim.features |= BLK_FEAT_FUA;
	}
	if (features & XS_BLK_F_DISCARD) {
		lim.discard_granularity = XS_BLK_SECTOR_SIZE;
		lim.max_hw_discard_sectors = UINT_MAX >> SECTOR_SHIFT;
	}
	return blk_mq_alloc_disk(&info->tag_set, &lim, info);
}
#elif LINUX_VERSION_CODE < KERNEL_VERSION(6, 9, 0)
static void xsblk_set_limits(struct request_queue *q, struct xsblk_info *info)
{
	u32 features = info->cur.control.features;

	blk_queue_logical_block_size(q, XS_BLK_SECTOR_SIZE);
	blk_queue_max_segments(q, info->max_segs);
	blk_queue_max_segment_size(q, PAGE_SIZE);
	blk_queue_segment_boundary(q, PAGE_SIZE - 1);
	blk_queue_max_hw_sectors(q, info->max_segs * XS_BLK_SECTORS_PER_PAGE);
	blk_queue_dma_alignment(q, XS_BLK_SECTOR_SIZE - 1);
	blk_queue_write_cache(q, features & XS_BLK_F_FLUSH,
			      (features & XS_BLK_F_FLUSH) && (features & XS_BLK_F_FUA));
	if (features & XS_BLK_F_DISCARD) {
		q->limits.discard_granularity = XS_BLK_SECTOR_SIZE;
		blk_queue_max_discard_sectors(q, UINT_MAX >> SECTOR_SHIFT);
	}
}

static struct gendisk *xsblk_mq_alloc_disk(struct xsblk_info *info)
{
	struct gendisk *gd = blk_mq_alloc_disk(&info->tag_set, info);

	if (!IS_ERR(gd))
		xsblk_set_limits(gd->queue, info);
	return gd;
}
#else
#error "xensblk builds for Linux < 6.9 (Debian 12) and >= 6.11 (Debian 13)"
#endif

static int xsblk_alloc_disk(struct xsblk_info *info)
{
	struct blk_mq_tag_set *set = &info->tag_set;
	struct gendisk *gd;
	int err;

	set->ops = &xsblk_mq_ops;
	set->nr_hw_queues = 1;
	set->queue_depth = info->depth;
	set->numa_node = NUMA_NO_NODE;
	set->flags = BLK_MQ_F_SHOULD_MERGE;
	set->cmd_size = struct_size((struct xsblk_req *)NULL, sg, info->max_segs);
	set->driver_data = info;
	err = blk_mq_alloc_tag_set(set);
	if (err)
		return err;
	gd = xsblk_mq_alloc_disk(info);
	if (IS_ERR(gd)) {
		blk_mq_free_tag_set(set);
		return PTR_ERR(gd);
	}
	gd->major = xsblk_major;
	gd->first_minor = info->index * XSBLK_MINORS;
	gd->minors = XSBLK_MINORS;
	gd->fops = &xsblk_fops;
	gd->private_data = info;
	xsblk_disk_name(gd->disk_name, info->index);
	set_capacity(gd, info->cur.control.capacity);
	info->gd = gd;
	return 0;
}

static void xsblk_free_disk(struct xsblk_info *info)
{
	put_disk(info->gd);
	blk_mq_free_tag_set(&info->tag_set);
}

static int xsblk_bind(struct xsblk_info *info, struct xenshare_share *sh)
{
	return xenshare_share_bind(sh, xsblk_interrupt, info->gd->disk_name, info);
}

static struct xsblk_info *xsblk_alloc_info(struct xenshare_device *xdev,
					   unsigned int depth)
{
	struct xsblk_info *info = kzalloc(sizeof(*info), GFP_KERNEL);

	if (!info)
		return NULL;
	info->in_flight = kcalloc(depth, sizeof(*info->in_flight), GFP_KERNEL);
	info->rqs = kcalloc(depth, sizeof(*info->rqs), GFP_KERNEL);
	if (!info->in_flight || !info->rqs) {
		kfree(info->in_flight);
		kfree(info->rqs);
		kfree(info);
		return NULL;
	}
	info->xdev = xdev;
	info->depth = depth;
	spin_lock_init(&info->lock);
	INIT_LIST_HEAD(&info->issued);
	spin_lock_init(&info->pool_lock);
	INIT_LIST_HEAD(&info->pool);
	return info;
}

static void xsblk_free_info(struct xsblk_info *info)
{
	xsblk_pool_free(info);
	kfree(info->in_flight);
	kfree(info->rqs);
	kfree(info);
}

static int xsblk_probe(struct xenshare_device *xdev)
{
	struct xsblk_lanes lanes;
	struct xsblk_info *info;
	unsigned long flags;
	int err;

	err = xsblk_attach(&lanes, xdev->share);
	if (err) {
		dev_err(&xdev->dev, "disk share of domain %u refused: %d\n",
			xdev->share->owner, err);
		return err;
	}
	info = xsblk_alloc_info(xdev, min_t(u32, lanes.slots, XSBLK_MAX_DEPTH));
	if (!info)
		return -ENOMEM;
	info->cur = lanes;
	info->server = lanes.sh->owner;
	info->max_segs = xsblk_max_segments(&lanes.control);
	err = xsblk_pool_init(info);
	if (err)
		goto err_info;
	info->index = ida_alloc_max(&xsblk_ida, XSBLK_MAX_DISKS - 1, GFP_KERNEL);
	if (info->index < 0) {
		err = info->index;
		goto err_info;
	}
	err = xsblk_alloc_disk(info);
	if (err)
		goto err_ida;
	if (lanes.control.read_only || (xdev->flags & XS_ENTRY_READ_ONLY))
		set_disk_ro(info->gd, true);
	dev_set_drvdata(&xdev->dev, info);
	err = xsblk_bind(info, xdev->share);
	if (err)
		goto err_disk;
	spin_lock_irqsave(&info->lock, flags);
	xsblk_poll(info);
	err = info->broken ? -EPROTO : 0;
	spin_unlock_irqrestore(&info->lock, flags);
	if (!err)
		err = device_add_disk(&xdev->dev, info->gd, NULL);
	if (err)
		goto err_unbind;
	dev_info(&xdev->dev,
		 "%s: %llu sectors from domain %u%s, features %#x, %u slots, %u segments per request\n",
		 info->gd->disk_name, lanes.control.capacity, xdev->share->owner,
		 get_disk_ro(info->gd) ? " (read-only)" : "", lanes.control.features,
		 info->depth, info->max_segs);
	return 0;

err_unbind:
	xenshare_share_unbind(xdev->share);
err_disk:
	dev_set_drvdata(&xdev->dev, NULL);
	xsblk_free_disk(info);
err_ida:
	ida_free(&xsblk_ida, info->index);
err_info:
	xsblk_free_info(info);
	return err;
}

static void xsblk_remove(struct xenshare_device *xdev)
{
	struct xsblk_info *info = dev_get_drvdata(&xdev->dev);
	unsigned long flags;
	bool detached;

	/*
	 * Dying first: every trigger is made under the lock after checking
	 * it, so none races with the unbind below (a trigger reading the irq
	 * as it is freed would notify whatever reuses the number).
	 */
	spin_lock_irqsave(&info->lock, flags);
	info->dying = true;
	spin_unlock_irqrestore(&info->lock, flags);
	if (info->cur.sh)
		xenshare_share_unbind(info->cur.sh);
	spin_lock_irqsave(&info->lock, flags);
	detached = info->detached;
	xsblk_fail_all(info);
	spin_unlock_irqrestore(&info->lock, flags);
	/* What waited for reconnect() fails now, or del_gendisk() would wait. */
	if (detached)
		blk_mq_unquiesce_queue(info->gd->queue);
	del_gendisk(info->gd);
	dev_info(&xdev->dev, "%s removed: %lu grant(s) live, %lu left pinned by the server\n",
		 info->gd->disk_name, info->grants, info->pinned);
	xsblk_free_disk(info);
	ida_free(&xsblk_ida, info->index);
	dev_set_drvdata(&xdev->dev, NULL);
	xsblk_free_info(info);
}

/* ---- reconnect ------------------------------------------------------ */

/* The new server must offer what the queue was set up with. */
static int xsblk_compatible(struct xsblk_info *info, const struct xsblk_lanes *next)
{
	u32 used = info->cur.control.features & (XS_BLK_F_FLUSH | XS_BLK_F_FUA | XS_BLK_F_DISCARD);

	if (next->control.capacity != info->cur.control.capacity)
		return -EINVAL;
	if (next->slots < info->depth)
		return -ENOSPC;
	if (used & ~next->control.features)
		return -EOPNOTSUPP;
	if (info->max_segs > XS_BLK_MAX_INLINE_SEGMENTS &&
	    xsblk_max_segments(&next->control) < info->max_segs)
		return -EOPNOTSUPP;
	return 0;
}

/*
 * Lock held, on the new share: grant again and re-issue what the old
 * server left unanswered, oldest first. Returns how many went out.
 */
static unsigned int xsblk_reissue(struct xsblk_info *info)
{
	struct xsblk_req *req, *tmp;
	unsigned int n = 0;
	LIST_HEAD(old);

	list_splice_init(&info->issued, &old);
	list_for_each_entry_safe(req, tmp, &old, node) {
		struct request *rq = info->rqs[req->id];

		list_del(&req->node);
		info->in_flight[req->id] = 0;
		info->rqs[req->id] = NULL;
		req->status = xsblk_issue(info, rq, req);
		if (req->status) {
			req->status = BLK_STS_IOERR;
			blk_mq_complete_request(rq);
			continue;
		}
		n++;
	}
	return n;
}

/* Lock held: end every grant made to the old server. */
static void xsblk_revoke(struct xsblk_info *info)
{
	struct xsblk_req *req;
	unsigned int busy = 0;

	list_for_each_entry(req, &info->issued, node)
		busy += !xsblk_end_grants(info, req);
	if (busy)
		dev_warn(&info->xdev->dev,
			 "%s: %u request(s) still mapped by domain %u; their pages stay pinned\n",
			 info->gd->disk_name, busy, info->server);
}

static int xsblk_reconnect(struct xenshare_device *xdev,
			   struct xenshare_share *new_sh)
{
	struct xsblk_info *info = dev_get_drvdata(&xdev->dev);
	struct request_queue *q = info->gd->queue;
	struct xsblk_lanes next;
	unsigned long flags;
	domid_t old_owner;
	bool was_detached;
	unsigned int n;
	int err;

	err = xsblk_attach(&next, new_sh);
	if (!err)
		err = xsblk_compatible(info, &next);
	if (!err)
		err = xsblk_bind(info, new_sh);
	if (err) {
		dev_err(&xdev->dev, "%s: new share of domain %u refused: %d\n",
			info->gd->disk_name, new_sh->owner, err);
		return err;
	}
	blk_mq_quiesce_queue(q);
	if (info->cur.sh)
		xenshare_share_unbind(info->cur.sh);
	spin_lock_irqsave(&info->lock, flags);
	was_detached = info->detached;
	if (!info->broken && !was_detached)
		xsblk_poll(info);	/* answers the old server did give */
	xsblk_revoke(info);
	old_owner = info->server;
	info->cur = next;
	WRITE_ONCE(info->server, next.sh->owner);
	info->detached = false;
	info->broken = false;
	info->wait_room = false;
	n = xsblk_reissue(info);
	xsblk_push(info);
	xsblk_poll(info);
	spin_unlock_irqrestore(&info->lock, flags);
	if (next.control.read_only && !get_disk_ro(info->gd))
		set_disk_ro(info->gd, true);
	blk_mq_unquiesce_queue(q);
	/* The quiesce of suspend(). */
	if (was_detached)
		blk_mq_unquiesce_queue(q);
	blk_mq_run_hw_queues(q, true);
	dev_info(&xdev->dev, "%s: reconnected from domain %u to domain %u, re-issued %u request(s)\n",
		 info->gd->disk_name, old_owner, new_sh->owner, n);
	return 0;
}

/*
 * The domain is being suspended: new requests wait in blk-mq, those in
 * flight stay listed, and reconnect() re-issues them to the new share.
 */
static void xsblk_suspend(struct xenshare_device *xdev)
{
	struct xsblk_info *info = dev_get_drvdata(&xdev->dev);
	struct xsblk_req *req;
	unsigned long flags;
	unsigned int n = 0;

	blk_mq_quiesce_queue(info->gd->queue);
	xenshare_share_unbind(info->cur.sh);
	spin_lock_irqsave(&info->lock, flags);
	if (!info->broken)
		xsblk_poll(info);	/* answers the server gave already */
	info->detached = true;
	info->cur.sh = NULL;
	list_for_each_entry(req, &info->issued, node)
		n++;
	spin_unlock_irqrestore(&info->lock, flags);
	dev_info(&xdev->dev, "%s: detached from domain %u for the suspend; %u request(s) in flight wait\n",
		 info->gd->disk_name, info->server, n);
}

static struct xenshare_driver xsblk_driver = {
	.kind = XS_KIND_DISK,
	.probe = xsblk_probe,
	.remove = xsblk_remove,
	.reconnect = xsblk_reconnect,
	.suspend = xsblk_suspend,
	.driver = {
		.name = "xensblk",
	},
};

static int __init xsblk_init(void)
{
	int err;

	if (!xen_domain())
		return -ENODEV;
	xsblk_major = register_blkdev(0, "xsb");
	if (xsblk_major < 0)
		return xsblk_major;
	err = xenshare_register_driver(&xsblk_driver);
	if (err)
		unregister_blkdev(xsblk_major, "xsb");
	return err;
}
module_init(xsblk_init);

static void __exit xsblk_exit(void)
{
	xenshare_unregister_driver(&xsblk_driver);
	unregister_blkdev(xsblk_major, "xsb");
	ida_destroy(&xsblk_ida);
}
module_exit(xsblk_exit);

MODULE_DESCRIPTION("Disk of a xen-share block share");
MODULE_LICENSE("GPL");
MODULE_ALIAS("xenshare:t2");
