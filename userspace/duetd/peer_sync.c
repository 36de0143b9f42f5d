// SPDX-License-Identifier: MIT
/*
 * The resync half of the peer connection (see peer.h; peer.c holds the
 * rest): the bitmap exchange, a resync's start (sync source or target)
 * and end (RS_DONE on either side), an online verify's start and end on
 * either side, and the "resync" and "verify" objects of status.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "apply.h"
#include "bm.h"
#include "fence.h"
#include "log.h"
#include "peer.h"
#include "util.h"

/* Keep a verify's figures for status. Lock held. */
void peer_ov_record(struct repl *r, const struct resync_info *ri,
		    bool source, bool complete)
{
	r->ov_last.ended = time(NULL);
	r->ov_last.complete = complete;
	r->ov_last.source = source;
	r->ov_last.compared_bytes = ri->sent_bytes;
	r->ov_last.oos_bytes = ri->oos_bytes;
	r->ov_last.oos_blocks = ri->oos_blocks;
	r->ov_last.seconds = (int64_t)(r->ov_last.ended - r->ov_started);
}

static void free_cb(void *arg, int err)
{
	(void)err;
	free(arg);
}

/*
 * Worker (W_BM_SEND): our bitmap to the peer, PROTO_BM_PAGES_MAX pages per
 * frame, the last one flagged. On the apply worker rather than the
 * connection thread because it may wait for room in the send queue: a
 * bitmap can be far larger than the queue (512 GiB at 4 KiB granularity
 * already fill 16 MiB). Pages are read as they go: a bit cleared meanwhile
 * belongs to a block the target already has. Stops when the connection it
 * was meant for is gone.
 */
void peer_send_bitmap(struct repl *r, struct work *w)
{
	struct proto_msg m = { .type = PROTO_BITMAP };
	uint64_t n, first, cnt;
	struct bm *bm;
	uint8_t *buf;
	int ret = 0;

	bm = meta_lock_bm(r->p.meta);
	n = bm_nr_pages(bm);
	meta_unlock_bm(r->p.meta);
	for (first = 0; first < n && !ret; first += cnt) {
		if (w->conn_gen !=
		    __atomic_load_n(&r->conn_gen, __ATOMIC_ACQUIRE))
			return;	/* that connection is gone */
		cnt = n - first < PROTO_BM_PAGES_MAX ? n - first :
						       PROTO_BM_PAGES_MAX;
		buf = malloc(cnt * PROTO_BM_PAGE_SIZE);
		if (!buf) {
			ret = -ENOMEM;
			break;
		}
		bm = meta_lock_bm(r->p.meta);
		for (uint64_t i = 0; i < cnt; i++)
			bm_page_encode(bm, first + i,
				       buf + i * PROTO_BM_PAGE_SIZE);
		meta_unlock_bm(r->p.meta);
		m.bitmap.first_page = first;
		m.bitmap.count = (uint32_t)cnt;
		m.bitmap.flags = first + cnt == n ? PROTO_BM_LAST : 0;
		ret = conn_send(r->conn, &m, buf, free_cb, buf, -1);
		if (ret)
			free(buf);
	}
	if (ret && ret != -ENOTCONN) {
		log_err("%s: sending the bitmap: %s", r->p.cfg->name,
			strerror(-ret));
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR,
				"cannot send the bitmap");
	}
}

static bool app_busy(void *arg)
{
	struct repl *r = arg;

	return __atomic_load_n(&r->in_flight, __ATOMIC_RELAXED) != 0;
}

static void on_resync_done(void *arg, struct resync *rs, int err,
			   uint64_t bytes);

/* Both bitmaps are merged and we are the source: go. Lock held. */
static void maybe_start_source(struct repl *r)
{
	struct resync_params rp = {
		.name = r->p.cfg->name,
		.conn = r->conn,
		.meta = r->p.meta,
		.repl = r,
		.fd = r->wfd,
		.dio_fd = apply_dio_fd(r),
		.max_bps = r->p.cfg->resync_rate,
		.min_bps = r->p.cfg->resync_min_rate,
		.app_busy = app_busy,
		.done = on_resync_done,
		.arg = r,
	};
	struct bm *bm;

	if (!r->sync_source || !r->bm_rx_done || r->rs ||
	    r->sm.repl == SM_REPL_PAUSED_SYNC)
		return;
	rp.digest_alg = cfg_wire_digest(r->p.cfg->data_digest);
	if (r->p.cfg->csums_alg != CFG_DIGEST_NONE &&
	    (r->features & PROTO_F_CSUM_RESYNC)) {
		rp.mode = RESYNC_CSUM;
		rp.csum_alg = cfg_wire_digest(r->p.cfg->csums_alg);
	}
	bm = meta_lock_bm(r->p.meta);
	r->rs_total = bm_dirty_bytes(bm);
	meta_unlock_bm(r->p.meta);
	r->rs_started = time(NULL);
	log_notice("%s: resync to %s begins: %llu bytes out of sync%s",
		   r->p.cfg->name, r->p.peer->name,
		   (unsigned long long)r->rs_total,
		   rp.mode == RESYNC_CSUM ? " (checksum-based)" : "");
	r->rs = resync_start(&rp);
	if (!r->rs) {
		log_err("%s: cannot start the resync: %s", r->p.cfg->name,
			strerror(errno));
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR,
				"cannot start the resync");
	}
}

/*
 * The generations say one side is behind: both mark the whole disk for a
 * full sync, record that a sync began (UUIDs), exchange bitmaps; the source
 * starts once it has the target's. Application writes keep replicating.
 * Lock held.
 */
static void begin_sync(struct repl *r, enum uuid_verdict v)
{
	bool target = uuid_verdict_is_target(v);
	bool full = uuid_verdict_is_full(v);
	struct uuid_info me;
	struct bm *bm;

	peer_my_uuid(r, &me);
	/*
	 * A full sync that was interrupted resumes from the bitmaps: each
	 * side wrote its all-set bitmap before the FULL_SYNC flag, and clears
	 * bits only for blocks the target has durably, so the union of what
	 * both have is still a superset of what differs. A new full sync sets
	 * every bit and makes that durable before the flag.
	 */
	if (full && !((me.flags | r->peer_uuid.flags) & MD_F_FULL_SYNC)) {
		int ret;

		bm = meta_lock_bm(r->p.meta);
		bm_set_all(bm);
		meta_unlock_bm(r->p.meta);
		ret = meta_sync_bm_wait(r->p.meta);
		if (ret) {
			log_err("%s: writing the bitmap for a full sync: %s",
				r->p.cfg->name, strerror(-ret));
			conn_disconnect(r->conn, PROTO_DISC_IO_ERROR,
					"cannot write the bitmap");
			return;
		}
	} else if (full) {
		log_notice("%s: resuming an interrupted full sync from the bitmaps",
			   r->p.cfg->name);
	}
	uuid_sync_begin(&me, target, full);
	peer_save_uuid(r, &me);
	r->sync_source = !target;
	r->sync_target = target;
	r->rs_target_bytes = 0;
	r->rs_target_same = 0;
	r->rs_started = time(NULL);
	r->replicating = true;
	log_notice("%s: %s resync %s %s (%s)", r->p.cfg->name,
		   full ? "full" : "bitmap-based", target ? "from" : "to",
		   r->p.peer->name, uuid_verdict_name(v));
	/* the bitmap follows from the worker, after every frame before; a
	 * target's once its before-resync-target handler succeeded */
	if (!target || !fence_before_resync_target(r, full))
		apply_queue_bm(r);
	peer_send_state(r);
	if (target) {
		bm = meta_lock_bm(r->p.meta);
		r->rs_total = bm_dirty_bytes(bm);
		meta_unlock_bm(r->p.meta);
	}
	maybe_start_source(r);
}

void peer_begin_sync(struct repl *r, enum uuid_verdict v)
{
	begin_sync(r, v);
}

void peer_start_source(struct repl *r)
{
	maybe_start_source(r);
}

/* Resync thread: hand the news to the worker, which joins the thread. */
static void on_resync_done(void *arg, struct resync *rs, int err,
			   uint64_t bytes)
{
	struct repl *r = arg;
	bool mine;

	pthread_mutex_lock(&r->lock);
	/* not if the connection's loss took it first (W_RS_REAP) */
	mine = r->rs == rs;
	if (mine)
		r->rs = NULL;
	pthread_mutex_unlock(&r->lock);
	if (mine)
		apply_queue_rs(r, W_RS_FINISHED, rs, err, bytes);
}

/* Worker, lock held: our online verify walked the whole device. */
static void finish_verify(struct repl *r, struct work *w)
{
	struct proto_msg m = { .type = PROTO_RS_DONE };
	struct sm_req q = { .type = SM_EV_VERIFY_DONE };

	r->verifying = false;
	peer_sm_do(r, &q, NULL, 0);
	if (w->err) {
		peer_ov_record(r, &w->info, true, false);
		log_err("%s: online verify stopped: %s (%llu bytes compared, %llu found out of sync)",
			r->p.cfg->name, strerror(-w->err),
			(unsigned long long)w->info.sent_bytes,
			(unsigned long long)w->info.oos_bytes);
	} else {
		peer_ov_record(r, &w->info, true, true);
		log_notice("%s: online verify done: %llu bytes compared in %lld s, %llu bytes in %llu blocks out of sync%s",
			   r->p.cfg->name,
			   (unsigned long long)w->info.sent_bytes,
			   (long long)r->ov_last.seconds,
			   (unsigned long long)w->info.oos_bytes,
			   (unsigned long long)w->info.oos_blocks,
			   w->info.oos_bytes ?
				   " (marked: disconnect and connect to resync them)" :
				   "");
	}
	peer_event(r, "verify-done", NULL, NULL);
	m.rs_done.kind = PROTO_RS_KIND_VERIFY;
	m.rs_done.result = w->err ? EIO : 0;
	m.rs_done.sectors = w->info.oos_bytes >> SECTOR_SHIFT;
	if (conn_send(r->conn, &m, NULL, NULL, NULL, -1))
		log_warn("%s: RS_DONE not sent", r->p.cfg->name);
}

/* Worker: the source's resync ended. */
void peer_finish_source(struct repl *r, struct work *w)
{
	struct proto_msg m = { .type = PROTO_RS_DONE };
	struct sm_req q = { .type = SM_EV_SYNC_DONE };
	struct uuid_info me;

	pthread_mutex_lock(&r->lock);
	if (r->verifying && r->conn_up) {
		finish_verify(r, w);
		pthread_mutex_unlock(&r->lock);
		return;
	}
	if (!r->sync_source || !r->conn_up) {
		pthread_mutex_unlock(&r->lock);
		return;
	}
	if (w->err) {
		log_err("%s: resync to %s failed: %s; reconnecting",
			r->p.cfg->name, r->p.peer->name, strerror(-w->err));
		pthread_mutex_unlock(&r->lock);
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR, "resync failed");
		return;
	}
	peer_my_uuid(r, &me);
	uuid_sync_source_done(&me);
	admin_sync_ending(r);
	peer_sm_do(r, &q, NULL, 0);
	peer_save_uuid(r, &me);
	r->rs_bytes_total += w->bytes;
	r->rs_same_total += w->info.same_bytes;
	r->sync_source = false;
	r->bm_rx_done = false;
	r->resyncs_done++;
	if (w->info.same_bytes)
		log_notice("%s: resync to %s done: %llu bytes in %lld s, %llu of them found identical by checksum (not sent)",
			   r->p.cfg->name, r->p.peer->name,
			   (unsigned long long)w->bytes,
			   (long long)(time(NULL) - r->rs_started),
			   (unsigned long long)w->info.same_bytes);
	else
		log_notice("%s: resync to %s done: %llu bytes in %lld s",
			   r->p.cfg->name, r->p.peer->name,
			   (unsigned long long)w->bytes,
			   (long long)(time(NULL) - r->rs_started));
	peer_send_state(r);
	m.rs_done.kind = PROTO_RS_KIND_RESYNC;
	m.rs_done.sectors = w->bytes >> SECTOR_SHIFT;
	if (conn_send(r->conn, &m, NULL, NULL, NULL, -1))
		log_warn("%s: RS_DONE not sent", r->p.cfg->name);
	pthread_mutex_unlock(&r->lock);
}

/* Target: the source says every block is through. Lock held. */
static void finish_target(struct repl *r, const struct proto_msg *m)
{
	struct sm_req q = { .type = SM_EV_SYNC_DONE };
	struct uuid_info me;
	struct bm *bm;
	uint64_t left;

	bm = meta_lock_bm(r->p.meta);
	left = bm_dirty_bytes(bm);
	meta_unlock_bm(r->p.meta);
	if (left) {
		/* a block failed here: stay Inconsistent, retry later */
		log_err("%s: resync from %s ended with %llu bytes still out of sync; reconnecting",
			r->p.cfg->name, r->p.peer->name,
			(unsigned long long)left);
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR,
				"resync incomplete");
		return;
	}
	peer_my_uuid(r, &me);
	uuid_sync_target_done(&me, &r->peer_uuid);
	admin_sync_ending(r);
	peer_sm_do(r, &q, NULL, 0);
	peer_save_uuid(r, &me);
	meta_sync_bm(r->p.meta);
	r->sync_target = false;
	r->bm_rx_done = false;
	r->resyncs_done++;
	log_notice("%s: resync from %s done: %llu bytes (%llu sectors reported)",
		   r->p.cfg->name, r->p.peer->name,
		   (unsigned long long)r->rs_target_bytes,
		   (unsigned long long)m->rs_done.sectors);
	fence_after_resync_target(r, r->rs_target_bytes);
	peer_send_state(r);
}

/* The peer's verify against us ended. Lock held. */
static void verify_target_done(struct repl *r, const struct proto_msg *m)
{
	struct sm_req q = { .type = SM_EV_VERIFY_DONE };
	struct resync_info ri = { 0 };

	r->verify_target = false;
	peer_sm_do(r, &q, NULL, 0);
	ri.oos_bytes = m->rs_done.sectors << SECTOR_SHIFT;
	ri.sent_bytes = m->rs_done.result ? 0 : r->p.data_bytes;
	peer_ov_record(r, &ri, false, !m->rs_done.result);
	log_notice("%s: online verify by %s %s: %llu bytes out of sync",
		   r->p.cfg->name, r->p.peer->name,
		   m->rs_done.result ? "stopped" : "done",
		   (unsigned long long)ri.oos_bytes);
	peer_event(r, "verify-done", NULL, NULL);
}

/* First OV_REQUEST: the peer verifies against us. Lock held. */
void peer_verify_target_begin(struct repl *r)
{
	struct sm_req q = { .type = SM_EV_PEER_STATE,
			    .peer_role = r->sm.peer_role,
			    .peer_disk = r->sm.peer_disk,
			    .peer_repl = SM_REPL_VERIFY_SOURCE };

	if (r->verify_target || r->verifying)
		return;
	r->verify_target = true;
	r->ov_started = time(NULL);
	peer_sm_do(r, &q, NULL, 0);
	log_notice("%s: %s started an online verify", r->p.cfg->name,
		   r->p.peer->name);
	peer_event(r, "verify-started", NULL, NULL);
}

void peer_rs_done(struct repl *r, const struct proto_msg *m)
{
	pthread_mutex_lock(&r->lock);
	if (r->sync_target)
		finish_target(r, m);
	pthread_mutex_unlock(&r->lock);
}

void peer_on_rs_done(struct repl *r, const struct proto_msg *m)
{
	pthread_mutex_lock(&r->lock);
	if (m->rs_done.kind == PROTO_RS_KIND_RESYNC && r->sync_target)
		finish_target(r, m);
	else if (m->rs_done.kind == PROTO_RS_KIND_RESYNC &&
		 !m->rs_done.sectors && !r->sync_source)
		r->adopt_pending = true;
	else if (m->rs_done.kind == PROTO_RS_KIND_VERIFY && r->verify_target)
		verify_target_done(r, m);
	pthread_mutex_unlock(&r->lock);
}

/* A run of the peer's bitmap pages: OR them into ours. */
void peer_on_bitmap(struct repl *r, const struct proto_msg *m)
{
	const uint8_t *p = m->payload;
	struct bm *bm;
	int ret = 0;

	bm = meta_lock_bm(r->p.meta);
	for (uint32_t i = 0; i < m->bitmap.count && !ret; i++)
		ret = bm_page_merge(bm, m->bitmap.first_page + i,
				    p + (size_t)i * PROTO_BM_PAGE_SIZE);
	meta_unlock_bm(r->p.meta);
	if (ret) {
		log_err("%s: the peer's bitmap page is invalid: %s",
			r->p.cfg->name, strerror(-ret));
		conn_disconnect(r->conn, PROTO_DISC_PROTOCOL, "bad bitmap");
		return;
	}
	if (!(m->bitmap.flags & PROTO_BM_LAST))
		return;
	pthread_mutex_lock(&r->lock);
	r->bm_rx_done = true;
	if (r->sync_target) {
		bm = meta_lock_bm(r->p.meta);
		r->rs_total = bm_dirty_bytes(bm);
		meta_unlock_bm(r->p.meta);
	}
	maybe_start_source(r);
	pthread_mutex_unlock(&r->lock);
}

int repl_verify(struct repl *r, char *why, size_t why_len)
{
	struct sm_req q = { .type = SM_REQ_VERIFY };
	struct resync_params rp = {
		.name = r->p.cfg->name,
		.conn = r->conn,
		.meta = r->p.meta,
		.repl = r,
		.fd = r->wfd,
		.dio_fd = -1,	/* its reads are the worker's, buffered */
		.mode = RESYNC_VERIFY,
		.csum_alg = cfg_wire_digest(r->p.cfg->verify_alg),
		.dev_sectors = r->p.data_bytes >> SECTOR_SHIFT,
		.max_bps = r->p.cfg->resync_rate,
		.min_bps = r->p.cfg->resync_min_rate,
		.app_busy = app_busy,
		.done = on_resync_done,
		.arg = r,
	};
	struct sm_state before;
	int ret;

	pthread_mutex_lock(&r->lock);
	if (r->sm.repl == SM_REPL_ESTABLISHED && r->conn_up &&
	    !(r->features & PROTO_F_VERIFY)) {
		ret = util_why(-EOPNOTSUPP, why, why_len,
			       "cannot verify: %s does not support online verify",
			       r->p.peer->name);
		goto out;
	}
	if (r->sm.repl == SM_REPL_ESTABLISHED && r->rs) {
		ret = util_why(-EBUSY, why, why_len,
			       "cannot verify: the last resync is still finishing");
		goto out;
	}
	if (rp.csum_alg == PROTO_DIGEST_NONE) {
		ret = util_why(-EINVAL, why, why_len,
			       "cannot verify: verify-alg is none in the resource file");
		goto out;
	}
	before = r->sm;
	ret = peer_sm_do(r, &q, why, why_len);
	if (ret)
		goto out;
	r->ov_started = time(NULL);
	r->rs = resync_start(&rp);
	if (!r->rs) {
		ret = util_why(-errno, why, why_len,
			       "cannot start the verify: %s", strerror(errno));
		r->sm = before;
		goto out;
	}
	r->verifying = true;
	log_notice("%s: online verify against %s begins: %llu bytes, %s",
		   r->p.cfg->name, r->p.peer->name,
		   (unsigned long long)r->p.data_bytes,
		   proto_digest_name(rp.csum_alg));
	peer_event(r, "verify-started", NULL, NULL);
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* The "verify" object: the running one, or the last one, or null. */
void peer_verify_status(struct repl *r, json_t *o)
{
	struct resync_info ri = { 0 };
	json_t *j;

	pthread_mutex_lock(&r->lock);
	if (r->verifying && r->rs) {
		uint64_t el = (uint64_t)(time(NULL) - r->ov_started);
		uint64_t left;

		resync_get_info(r->rs, &ri);
		left = r->p.data_bytes - (ri.position << SECTOR_SHIFT);
		j = json_object();
		json_object_set_new(j, "running", json_true());
		json_object_set_new(j, "role", json_string("source"));
		json_object_set_new(j, "total_bytes",
				    json_integer((json_int_t)r->p.data_bytes));
		json_object_set_new(j, "done_bytes",
				    json_integer((json_int_t)ri.sent_bytes));
		json_object_set_new(j, "oos_bytes",
				    json_integer((json_int_t)ri.oos_bytes));
		json_object_set_new(j, "oos_blocks",
				    json_integer((json_int_t)ri.oos_blocks));
		ri.rate_bps = ri.rate_bps ? ri.rate_bps :
			      el ? ri.sent_bytes / el : 0;
		json_object_set_new(j, "rate_bps",
				    json_integer((json_int_t)ri.rate_bps));
		json_object_set_new(j, "eta_s",
				    ri.rate_bps ? json_integer((json_int_t)(
							  left / ri.rate_bps)) :
						  json_null());
	} else if (r->verify_target) {
		j = json_object();
		json_object_set_new(j, "running", json_true());
		json_object_set_new(j, "role", json_string("target"));
	} else if (r->ov_last.ended) {
		j = json_object();
		json_object_set_new(j, "running", json_false());
		json_object_set_new(j, "role", json_string(r->ov_last.source ?
								   "source" :
								   "target"));
		json_object_set_new(j, "complete",
				    json_boolean(r->ov_last.complete));
		json_object_set_new(j, "done_bytes",
				    json_integer((json_int_t)r->ov_last.compared_bytes));
		json_object_set_new(j, "oos_bytes",
				    json_integer((json_int_t)r->ov_last.oos_bytes));
		json_object_set_new(j, "oos_blocks",
				    json_integer((json_int_t)r->ov_last.oos_blocks));
		json_object_set_new(j, "ended",
				    json_integer((json_int_t)r->ov_last.ended));
		json_object_set_new(j, "seconds",
				    json_integer(r->ov_last.seconds));
	} else {
		j = json_null();
	}
	pthread_mutex_unlock(&r->lock);
	json_object_set_new(o, "verify", j);
}

/* The "resync" object: null when none runs. */
void peer_resync_status(struct repl *r, json_t *o)
{
	struct resync_info ri = { 0 };
	uint64_t left, done, same, rate, elapsed;
	struct bm *bm;
	json_t *j;

	pthread_mutex_lock(&r->lock);
	if (!r->sync_source && !r->sync_target) {
		pthread_mutex_unlock(&r->lock);
		json_object_set_new(o, "resync", json_null());
		return;
	}
	bm = meta_lock_bm(r->p.meta);
	left = bm_dirty_bytes(bm);
	meta_unlock_bm(r->p.meta);
	if (r->rs)
		resync_get_info(r->rs, &ri);
	done = r->sync_source ? ri.sent_bytes : r->rs_target_bytes;
	same = r->sync_source ? ri.same_bytes : r->rs_target_same;
	elapsed = (uint64_t)(time(NULL) - r->rs_started);
	rate = ri.rate_bps ? ri.rate_bps : elapsed ? done / elapsed : 0;
	j = json_object();
	json_object_set_new(j, "role", json_string(r->sync_source ? "source" :
								    "target"));
	json_object_set_new(j, "total_bytes", json_integer((json_int_t)r->rs_total));
	json_object_set_new(j, "left_bytes", json_integer((json_int_t)left));
	json_object_set_new(j, "done_bytes", json_integer((json_int_t)done));
	json_object_set_new(j, "same_bytes", json_integer((json_int_t)same));
	json_object_set_new(j, "rate_bps", json_integer((json_int_t)rate));
	json_object_set_new(j, "limit_bps",
			    json_integer((json_int_t)ri.limit_bps));
	json_object_set_new(j, "eta_s",
			    rate ? json_integer((json_int_t)(left / rate)) :
				   json_null());
	json_object_set_new(j, "waiting_for_bitmap",
			    json_boolean(!r->bm_rx_done));
	pthread_mutex_unlock(&r->lock);
	json_object_set_new(o, "resync", j);
}
