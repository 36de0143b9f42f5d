// SPDX-License-Identifier: MIT
/*
 * Replication's data path (see repl.h, peer.h): the primary's sends and
 * acks, the ranges in flight, the secondary's in-order apply worker, and
 * the life cycle.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "ctl.h"
#include "eng.h"
#include "fence.h"
#include "ival.h"
#include "log.h"
#include "peer.h"
#include "repl.h"
#include "resync.h"
#include "sm.h"
#include "util.h"
#include "uuid.h"

/* ---- slots (primary) ---- */

static int32_t slot_get(struct repl *r)
{
	int32_t i = r->free_head;

	if (i < 0)
		return -1;
	r->free_head = r->slots[i].next_free;
	r->slots[i].used = true;
	r->slots[i].handed = r->slots[i].answered = false;
	r->slots[i].res = 0;
	r->slots[i].gen++;
	r->in_flight++;
	return i;
}

static uint64_t slot_id(const struct repl *r, int32_t i)
{
	return ((uint64_t)r->slots[i].gen << 32) | (uint32_t)i;
}

/* The slot @id names, if it is in use; lock held. */
static struct slot *slot_of(struct repl *r, uint64_t id)
{
	uint32_t i = (uint32_t)id;

	if (i >= REPL_SLOTS || !r->slots[i].used ||
	    r->slots[i].gen != (uint32_t)(id >> 32))
		return NULL;
	return &r->slots[i];
}

/*
 * Complete the slot if both the send and the answer are in; lock held,
 * dropped around the callback (it takes path locks, never ours).
 */
static void slot_maybe_done(struct repl *r, struct slot *s)
{
	repl_done_fn done;
	void *arg;
	uint32_t cookie;
	int res;

	if (!s->handed || !s->answered)
		return;
	done = s->done;
	arg = s->arg;
	cookie = s->cookie;
	res = s->res;
	s->used = false;
	s->next_free = r->free_head;
	r->free_head = (int32_t)(s - r->slots);
	if (res)
		r->peer_failed++;
	else
		r->acked++;
	pthread_mutex_unlock(&r->lock);
	done(arg, cookie, res);
	pthread_mutex_lock(&r->lock);
	if (!--r->in_flight)
		pthread_cond_broadcast(&r->drained);
}

/* conn_send's completion: the transport let go of the payload. */
static void on_sent(void *arg, int err)
{
	struct slot *s = arg;
	struct repl *r = s->r;

	pthread_mutex_lock(&r->lock);
	s->handed = true;
	if (err) {
		s->res = err;
		s->answered = true;
	} else if (r->proto == 'A' && !s->answered) {
		s->answered = true;	/* A: handed over is all we wait for */
	}
	slot_maybe_done(r, s);
	pthread_mutex_unlock(&r->lock);
}

/* An ack for slot @id: @res 0 or -errno. Lock held. */
void repl_slot_answer(struct repl *r, uint64_t id, int res, bool final)
{
	struct slot *s = slot_of(r, id);

	if (!s || s->answered)
		return;
	if (res && !s->res)
		s->res = res;
	if (final) {
		s->answered = true;
		slot_maybe_done(r, s);
	}
}

/* The connection went: nothing pending will be acknowledged. Lock held. */
void repl_fail_all(struct repl *r)
{
	for (int32_t i = 0; i < REPL_SLOTS; i++) {
		struct slot *s = &r->slots[i];

		if (!s->used || s->answered)
			continue;
		s->answered = true;
		s->res = -ECONNRESET;
		slot_maybe_done(r, s);
	}
}

bool repl_may_write(struct repl *r)
{
	return __atomic_load_n(&r->role_cache, __ATOMIC_ACQUIRE);
}

void repl_app_completed(struct repl *r)
{
	if (!__atomic_load_n(&r->epoch_done, __ATOMIC_RELAXED))
		__atomic_store_n(&r->epoch_done, 1, __ATOMIC_RELEASE);
}

/* Close the open epoch; send_lock held. */
static int send_barrier(struct repl *r, bool flush, int32_t slot)
{
	struct proto_msg m = { .type = PROTO_BARRIER };
	int ret;

	m.barrier.epoch = r->epoch;
	m.barrier.flags = flush ? PROTO_BF_FLUSH : 0;
	m.barrier.nr_writes = 0;
	if (slot >= 0)
		m.id = slot_id(r, slot);
	ret = conn_send(r->conn, &m, NULL, slot >= 0 ? on_sent : NULL,
			slot >= 0 ? &r->slots[slot] : NULL, -1);
	if (ret)
		return ret;
	r->epoch++;
	r->epoch_writes = 0;
	__atomic_store_n(&r->epoch_done, 0, __ATOMIC_RELEASE);
	return 0;
}

/*
 * A Primary's write that the peer will not get: the first of a writer
 * period starts a new generation (persisted before the write is issued),
 * so that the next connection knows which side is newer. Lock held.
 */
static void lone_write(struct repl *r)
{
	struct uuid_info u;

	/* a detached disk's generation is the peer's (diskless.c) */
	if (r->sm.role != SM_ROLE_PRIMARY || r->same_writer || r->disk_gone)
		return;
	peer_my_uuid(r, &u);
	if (uuid_write_needs_new_current(&u, r->same_writer)) {
		uuid_new_current(&u, util_random_u64());
		if (!peer_save_uuid(r, &u))
			log_notice("%s: writing without %s: new generation %016llx",
				   r->p.cfg->name, r->p.peer->name,
				   (unsigned long long)u.current);
	}
	r->same_writer = true;
}

static int32_t take_slot(struct repl *r, repl_done_fn done, void *arg,
			 uint32_t cookie, uint64_t sector, uint32_t len)
{
	int32_t i;

	pthread_mutex_lock(&r->lock);
	/* only the Primary's changes go to the peer (a Secondary's FLUSH
	 * concerns its own disk alone) */
	if (!r->replicating || r->sm.role != SM_ROLE_PRIMARY) {
		r->not_sent++;
		if (len)
			lone_write(r);
		pthread_mutex_unlock(&r->lock);
		return -ENOTCONN;
	}
	i = slot_get(r);
	if (i < 0) {
		r->not_sent++;
		pthread_mutex_unlock(&r->lock);
		return -EAGAIN;
	}
	r->slots[i].done = done;
	r->slots[i].arg = arg;
	r->slots[i].cookie = cookie;
	r->slots[i].sector = sector;
	r->slots[i].len = len;
	r->slots[i].conn_gen = r->conn_gen;
	pthread_mutex_unlock(&r->lock);
	return i;
}

/* conn_send refused: give the slot back without a callback. */
static void put_slot(struct repl *r, int32_t i)
{
	pthread_mutex_lock(&r->lock);
	r->slots[i].used = false;
	r->slots[i].next_free = r->free_head;
	r->free_head = i;
	r->not_sent++;
	if (!--r->in_flight)
		pthread_cond_broadcast(&r->drained);
	pthread_mutex_unlock(&r->lock);
}

int repl_write(struct repl *r, const struct repl_io *io, repl_done_fn done,
	       void *arg, uint32_t cookie)
{
	struct proto_msg m = { .type = PROTO_DATA };
	int32_t i;
	int ret;

	i = take_slot(r, done, arg, cookie, io->sector, io->len);
	if (i < 0)
		return i;
	m.id = slot_id(r, i);
	m.data.sector = io->sector;
	m.data.length = io->len;
	switch (io->op) {
	case ENG_OP_WRITE:
		m.data.op = PROTO_OP_WRITE;
		break;
	case ENG_OP_DISCARD:
		m.data.op = PROTO_OP_DISCARD;
		break;
	default:
		m.data.op = PROTO_OP_WRITE_ZEROES;
		break;
	}
	m.data.flags = io->fua ? PROTO_DF_FUA : 0;
	if (io->op == ENG_OP_WRITE &&
	    r->p.cfg->data_digest != CFG_DIGEST_NONE) {
		m.data.digest_alg = cfg_wire_digest(r->p.cfg->data_digest);
		ret = proto_digest(m.data.digest_alg, io->buf, io->len,
				   m.data.digest);
		if (ret) {
			put_slot(r, i);
			return ret;
		}
	}
	pthread_mutex_lock(&r->send_lock);
	/* A write issued after another completed may depend on it. */
	ret = 0;
	if (r->epoch_writes &&
	    __atomic_load_n(&r->epoch_done, __ATOMIC_ACQUIRE))
		ret = send_barrier(r, false, -1);
	if (!ret) {
		m.data.epoch = r->epoch;
		ret = conn_send(r->conn, &m,
				io->op == ENG_OP_WRITE ? io->buf : NULL,
				on_sent, &r->slots[i], -1);
		if (!ret)
			r->epoch_writes++;
	}
	pthread_mutex_unlock(&r->send_lock);
	if (ret) {
		put_slot(r, i);
		return ret;
	}
	pthread_mutex_lock(&r->lock);
	r->sent_writes++;
	r->sent_bytes += io->len;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

int repl_flush(struct repl *r, repl_done_fn done, void *arg, uint32_t cookie)
{
	int32_t i;
	int ret;

	i = take_slot(r, done, arg, cookie, 0, 0);
	if (i < 0)
		return i;
	pthread_mutex_lock(&r->send_lock);
	ret = send_barrier(r, true, i);
	pthread_mutex_unlock(&r->send_lock);
	if (ret) {
		put_slot(r, i);
		return ret;
	}
	return 0;
}

/* ---- ranges in flight ---- */

void repl_set_waker(struct repl *r, unsigned int id, void (*kick)(void *),
		    void *arg)
{
	pthread_mutex_lock(&r->ival_lock);
	r->kick[id] = kick;
	r->kick_arg[id] = arg;
	pthread_mutex_unlock(&r->ival_lock);
}

int repl_range_take(struct repl *r, unsigned int id, uint64_t sector,
		    uint64_t nr, uint32_t *handle)
{
	int ret;

	pthread_mutex_lock(&r->ival_lock);
	ret = ival_take(r->ival, sector, nr, handle);
	if (ret == -EBUSY || ret == -ENOSPC) {
		r->ival_want |= 1ULL << id;
		r->ival_waits++;
		ret = -EBUSY;
	}
	pthread_mutex_unlock(&r->ival_lock);
	return ret;
}

void repl_range_put(struct repl *r, uint32_t handle)
{
	uint64_t want;

	pthread_mutex_lock(&r->ival_lock);
	ival_put(r->ival, handle);
	want = r->ival_want;
	r->ival_want = 0;
	pthread_cond_broadcast(&r->ival_cond);
	pthread_mutex_unlock(&r->ival_lock);
	while (want) {
		unsigned int id = (unsigned int)__builtin_ctzll(want);

		want &= want - 1;
		if (r->kick[id])
			r->kick[id](r->kick_arg[id]);
	}
}

int repl_range_take_wait(struct repl *r, uint64_t sector, uint64_t nr,
			 uint32_t *handle, const bool *stop)
{
	int ret;

	pthread_mutex_lock(&r->ival_lock);
	while ((ret = ival_take(r->ival, sector, nr, handle)) == -EBUSY ||
	       ret == -ENOSPC) {
		if (__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
			ret = -ECANCELED;
			break;
		}
		pthread_cond_wait(&r->ival_cond, &r->ival_lock);
	}
	pthread_mutex_unlock(&r->ival_lock);
	return ret;
}

void repl_range_kick(struct repl *r)
{
	pthread_mutex_lock(&r->ival_lock);
	pthread_cond_broadcast(&r->ival_cond);
	pthread_mutex_unlock(&r->ival_lock);
}

/* ---- secondary: the apply worker ---- */

static void send_ack(struct repl *r, uint16_t type, uint64_t id,
		     uint64_t sector, uint32_t len, int res)
{
	struct proto_msg m = { .type = type, .id = id };
	int ret;

	m.range.sector = sector;
	m.range.length = len;
	m.range.result = res < 0 ? (uint32_t)-res : 0;
	if (m.range.result > PROTO_ERRNO_MAX)
		m.range.result = EIO;
	if (r->stale)
		return;
	ret = conn_send(r->conn, &m, NULL, NULL, NULL, -1);
	if (ret && ret != -ENOTCONN)
		log_warn("%s: sending %s: %s", r->p.cfg->name,
			 proto_type_name(type), strerror(-ret));
}

static int apply_data(struct repl *r, const struct proto_msg *m,
		      const void *payload)
{
	const struct proto_data *d = &m->data;
	off_t off = (off_t)(d->sector << SECTOR_SHIFT);
	uint8_t dg[PROTO_DIGEST_MAX];
	size_t done = 0;
	int ret = 0;

	if (d->op == PROTO_OP_WRITE && d->digest_alg != PROTO_DIGEST_NONE) {
		ret = proto_digest(d->digest_alg, payload, d->length, dg);
		if (ret)
			return ret;
		if (memcmp(dg, d->digest, PROTO_DIGEST_MAX))
			return -EBADMSG;
	}
	switch (d->op) {
	case PROTO_OP_WRITE:
		while (done < d->length) {
			ssize_t n = pwrite(r->wfd, (const char *)payload + done,
					   d->length - done,
					   off + (off_t)done);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n < 0 ? -errno : -EIO;
			done += (size_t)n;
		}
		break;
	case PROTO_OP_DISCARD:
		if (fallocate(r->wfd, FALLOC_FL_PUNCH_HOLE |
				      FALLOC_FL_KEEP_SIZE, off, d->length))
			ret = -errno;
		break;
	default:
		if (fallocate(r->wfd, FALLOC_FL_ZERO_RANGE |
				      FALLOC_FL_KEEP_SIZE, off, d->length) &&
		    fallocate(r->wfd, FALLOC_FL_PUNCH_HOLE |
				      FALLOC_FL_KEEP_SIZE, off, d->length))
			ret = -errno;
		break;
	}
	if (!ret && (d->flags & PROTO_DF_FUA) && fdatasync(r->wfd))
		ret = -errno;
	return ret;
}

static void send_barrier_ack(struct repl *r, const struct proto_msg *m)
{
	struct proto_msg a = { .type = PROTO_BARRIER_ACK, .id = m->id };

	a.barrier.epoch = m->barrier.epoch;
	a.barrier.nr_writes = r->rx_epoch_writes;
	if (r->stale)
		return;
	if (conn_send(r->conn, &a, NULL, NULL, NULL, -1))
		log_dbg(LOG_CAT_PROTO, "%s: BARRIER_ACK not sent",
			r->p.cfg->name);
}

static void rs_block_clean(struct repl *r, uint64_t sector, uint32_t len,
			   bool same);

/*
 * Target: one resync block, written (not yet durably: see rs_block_clean
 * for when its bits go), acknowledged at once.
 */
static void apply_rs_data(struct repl *r, const struct proto_msg *m,
			  const void *payload)
{
	const struct proto_block *b = &m->block;
	struct proto_msg d = { .type = PROTO_DATA };
	int ret;

	d.data.sector = b->sector;
	d.data.length = b->length;
	d.data.op = PROTO_OP_WRITE;
	d.data.digest_alg = b->digest_alg;
	memcpy(d.data.digest, b->digest, sizeof(d.data.digest));
	ret = b->result ? -(int)b->result : apply_data(r, &d, payload);
	if (!ret)
		rs_block_clean(r, b->sector, b->length, false);
	else
		log_warn("%s: resync block at %llu+%u failed: %s",
			 r->p.cfg->name, (unsigned long long)b->sector,
			 b->length, strerror(-ret));
	send_ack(r, PROTO_RS_ACK, m->id, b->sector, b->length, ret);
}

/* Read [sector, +len) of our disk into the worker's scratch buffer and
 * digest it. 0 or -errno. Worker. */
static int digest_block(struct repl *r, uint64_t sector, uint32_t len,
			uint8_t alg, uint8_t *dg)
{
	size_t done = 0;

	if (!r->scratch) {
		r->scratch = aligned_alloc(4096, PROTO_DATA_MAX);
		if (!r->scratch)
			return -ENOMEM;
	}
	while (done < len) {
		ssize_t n = pread(r->wfd, (char *)r->scratch + done, len - done,
				  (off_t)(sector << SECTOR_SHIFT) + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return proto_digest(alg, r->scratch, len, dg);
}

/*
 * The target's blocks written since the last flush: their bits are cleared
 * only once fdatasync() has made them durable, and only then may the
 * bitmap pages that say so be written (a page written first would call a
 * block clean that a power loss takes back). One flush per
 * RESYNC_SYNC_BYTES or second, not one per block. Worker.
 */
void repl_rs_flush(struct repl *r)
{
	struct bm *bm;

	if (!r->rs_pend_n)
		return;
	if (r->rs_pend_gen != __atomic_load_n(&r->conn_gen, __ATOMIC_ACQUIRE)) {
		/*
		 * That connection is gone: this node may have been promoted
		 * since and marked some of those blocks for the peer. Their
		 * bits stay set; the next resync sends them again.
		 */
		r->rs_pend_n = 0;
		r->rs_pend_bytes = 0;
		return;
	}
	if (fdatasync(r->wfd)) {
		int err = errno;

		/* the bits stay set: those blocks are resynced again */
		log_err("%s: resync target: flushing %llu bytes: %s",
			r->p.cfg->name, (unsigned long long)r->rs_pend_bytes,
			strerror(err));
		r->rs_pend_n = 0;
		r->rs_pend_bytes = 0;
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR,
				"resync target cannot flush its disk");
		return;
	}
	bm = meta_lock_bm(r->p.meta);
	for (uint32_t i = 0; i < r->rs_pend_n; i++)
		bm_clear_range(bm, r->rs_pend[i].sector, r->rs_pend[i].nr);
	meta_unlock_bm(r->p.meta);
	r->rs_pend_n = 0;
	r->rs_pend_bytes = 0;
	meta_sync_bm(r->p.meta);
}

/* A block the target now holds (written, or found identical): count it,
 * and clear its bits at the next flush. Worker. */
static void rs_block_clean(struct repl *r, uint64_t sector, uint32_t len,
			   bool same)
{
	struct timespec now;
	bool due;

	if (r->stale)
		return;	/* a block of a lost connection: its bits stay set */
	if (r->rs_pend_n && r->rs_pend_gen != r->worker_gen)
		repl_rs_flush(r);	/* drops the old connection's blocks */
	r->rs_pend_gen = r->worker_gen;
	if (r->rs_pend_n == r->rs_pend_cap) {
		uint32_t cap = r->rs_pend_cap ? 2 * r->rs_pend_cap : 64;
		void *p = realloc(r->rs_pend, cap * sizeof(*r->rs_pend));

		if (!p) {
			repl_rs_flush(r);	/* makes room */
		} else {
			r->rs_pend = p;
			r->rs_pend_cap = cap;
		}
	}
	if (r->rs_pend_n < r->rs_pend_cap) {
		r->rs_pend[r->rs_pend_n].sector = sector;
		r->rs_pend[r->rs_pend_n].nr = len >> SECTOR_SHIFT;
		r->rs_pend_n++;
		r->rs_pend_bytes += len;
	}
	pthread_mutex_lock(&r->lock);
	r->rs_target_bytes += len;
	r->rs_bytes_total += len;
	if (same) {
		r->rs_target_same += len;
		r->rs_same_total += len;
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	due = r->rs_pend_bytes >= RESYNC_SYNC_BYTES ||
	      now.tv_sec != r->rs_last_sync;
	if (due)
		r->rs_last_sync = now.tv_sec;
	pthread_mutex_unlock(&r->lock);
	if (due)
		repl_rs_flush(r);
}

/*
 * Target: RS_CSUM. Our block, digested the same way, is compared with the
 * source's: equal, the bits go and RS_IN_SYNC says so; otherwise (or if
 * ours cannot be read) RS_REQUEST asks for the data. In stream order, so
 * every DATA before it is on our disk.
 */
static void apply_rs_csum(struct repl *r, const struct proto_msg *m)
{
	const struct proto_block *b = &m->block;
	uint8_t dg[PROTO_DIGEST_MAX];
	int ret;

	ret = digest_block(r, b->sector, b->length, b->digest_alg, dg);
	if (ret)
		log_warn("%s: checksum resync: reading sector %llu+%u: %s",
			 r->p.cfg->name, (unsigned long long)b->sector,
			 b->length, strerror(-ret));
	if (!ret && !memcmp(dg, b->digest, sizeof(dg))) {
		rs_block_clean(r, b->sector, b->length, true);
		send_ack(r, PROTO_RS_IN_SYNC, m->id, b->sector, b->length, 0);
	} else {
		send_ack(r, PROTO_RS_REQUEST, m->id, b->sector, b->length, 0);
	}
}

/*
 * OV_REQUEST: the digest of our block. A Primary takes the block's range
 * first, so that no application write is half-way between its disk and
 * the wire while it reads (the comparison on the peer happens after every
 * DATA sent before this answer).
 */
static void apply_ov_request(struct repl *r, const struct proto_msg *m)
{
	struct proto_msg a = { .type = PROTO_OV_REPLY, .id = m->id };
	const struct proto_block *b = &m->block;
	bool no_stop = false;
	uint32_t range = 0;
	bool ranged;
	int ret;

	ranged = !repl_range_take_wait(r, b->sector, b->length >> SECTOR_SHIFT,
				       &range, &no_stop);
	ret = digest_block(r, b->sector, b->length, b->digest_alg,
			   a.block.digest);
	if (ranged)
		repl_range_put(r, range);
	a.block.sector = b->sector;
	a.block.length = b->length;
	a.block.digest_alg = b->digest_alg;
	if (ret) {
		log_warn("%s: verify: reading sector %llu+%u: %s",
			 r->p.cfg->name, (unsigned long long)b->sector,
			 b->length, strerror(-ret));
		a.block.result = (uint32_t)-ret > PROTO_ERRNO_MAX ?
					 EIO :
					 (uint32_t)-ret;
		memset(a.block.digest, 0, sizeof(a.block.digest));
	}
	if (r->stale)
		return;
	ret = conn_send(r->conn, &a, NULL, NULL, NULL, -1);
	if (ret && ret != -ENOTCONN)
		log_warn("%s: sending OV_REPLY: %s", r->p.cfg->name,
			 strerror(-ret));
}

/* Source: the peer's digest of a verify block. */
static void apply_ov_reply(struct repl *r, const struct proto_msg *m)
{
	struct resync *rs;

	if (r->stale)
		return;
	pthread_mutex_lock(&r->lock);
	/* only this worker frees a resync (W_RS_*), so it stays valid */
	rs = r->verifying ? r->rs : NULL;
	pthread_mutex_unlock(&r->lock);
	if (rs)
		resync_verify_reply(rs, m, r->wfd);
}

static void apply(struct repl *r, struct work *w)
{
	const struct proto_msg *m = &w->m;
	int ret = 0;

	if (w->kind == W_BM_SEND) {
		peer_send_bitmap(r, w);
		return;
	}
	if (w->kind == W_RS_FINISHED || w->kind == W_RS_REAP) {
		resync_get_info(w->rs, &w->info);
		resync_free(w->rs);
		if (w->kind == W_RS_FINISHED)
			peer_finish_source(r, w);
		return;
	}
	/*
	 * A frame of a connection that is gone is still applied (the data is
	 * the primary's), but not answered: the answer would reach the next
	 * connection with an id that means nothing there, or something else.
	 */
	r->stale = w->conn_gen != __atomic_load_n(&r->conn_gen,
						  __ATOMIC_ACQUIRE);
	if (w->conn_gen != r->worker_gen) {
		/* the first frame of a new connection: epochs start over */
		r->worker_gen = w->conn_gen;
		r->rx_epoch_writes = 0;
	}
	switch (m->type) {
	case PROTO_RS_DATA:
		apply_rs_data(r, m, w->buf ? w->buf->data : NULL);
		return;
	case PROTO_RS_CSUM:
		apply_rs_csum(r, m);
		return;
	case PROTO_OV_REQUEST:
		apply_ov_request(r, m);
		return;
	case PROTO_OV_REPLY:
		apply_ov_reply(r, m);
		return;
	case PROTO_RS_DONE:
		/* every RS_DATA before it is applied: make them durable */
		repl_rs_flush(r);
		if (!r->stale)
			peer_rs_done(r, m);
		return;
	case PROTO_READ_REQUEST:
		peer_serve_read(r, m);
		return;
	default:
		break;
	}
	/* protocol B: "received" once it is ours to apply, in order */
	if (m->type == PROTO_DATA && r->proto == 'B')
		send_ack(r, PROTO_ACK_RECV, m->id, m->data.sector,
			 m->data.length, 0);

	if (m->type == PROTO_BARRIER) {
		if ((m->barrier.flags & PROTO_BF_FLUSH) && fdatasync(r->wfd)) {
			ret = -errno;
			log_err("%s: flushing for barrier %llu: %s",
				r->p.cfg->name,
				(unsigned long long)m->barrier.epoch,
				strerror(-ret));
		}
		/* a flush that failed is never acknowledged: the primary
		 * marks the epoch out of sync when the connection goes */
		if (!ret)
			send_barrier_ack(r, m);
		else
			conn_disconnect(r->conn, PROTO_DISC_IO_ERROR,
					"flush failed");
		r->rx_epoch_writes = 0;
		return;
	}
	ret = apply_data(r, m, w->buf ? w->buf->data : NULL);
	r->rx_epoch_writes++;
	pthread_mutex_lock(&r->lock);
	r->applied++;
	r->applied_bytes += m->data.length;
	if (ret)
		r->apply_errors++;
	pthread_mutex_unlock(&r->lock);
	if (ret) {
		log_warn("%s: peer write at sector %llu+%u failed: %s",
			 r->p.cfg->name, (unsigned long long)m->data.sector,
			 m->data.length, strerror(-ret));
		/* our disk lacks what the primary has */
		meta_mark_peer(r->p.meta, m->data.sector,
			       m->data.length >> SECTOR_SHIFT);
	}
	if (r->proto == 'C')
		send_ack(r, PROTO_ACK_WRITE, m->id, m->data.sector,
			 m->data.length, ret);
}

static void *worker_main(void *arg)
{
	struct repl *r = arg;
	struct work *w;

	pthread_mutex_lock(&r->work_lock);
	for (;;) {
		while (!r->work_head && !r->worker_stop)
			pthread_cond_wait(&r->work_cond, &r->work_lock);
		w = r->work_head;
		if (!w)
			break;
		r->work_head = w->next;
		if (!r->work_head)
			r->work_tail = NULL;
		pthread_mutex_unlock(&r->work_lock);
		apply(r, w);
		if (w->buf)
			xport_buf_put(w->buf);
		free(w);
		pthread_mutex_lock(&r->work_lock);
	}
	pthread_mutex_unlock(&r->work_lock);
	return NULL;
}

static void push_work(struct repl *r, struct work *w)
{
	pthread_mutex_lock(&r->work_lock);
	if (r->work_tail)
		r->work_tail->next = w;
	else
		r->work_head = w;
	r->work_tail = w;
	pthread_cond_signal(&r->work_cond);
	pthread_mutex_unlock(&r->work_lock);
}

/* Resync news for the worker (which may join the resync thread). */
void repl_queue_rs(struct repl *r, uint8_t kind, struct resync *rs, int err,
		     uint64_t bytes)
{
	struct work *w = calloc(1, sizeof(*w));

	if (!w) {
		/* cannot happen in practice; leak the thread rather than
		 * join it from a thread that may hold what it waits for */
		log_err("%s: out of memory for resync bookkeeping",
			r->p.cfg->name);
		return;
	}
	w->kind = kind;
	w->rs = rs;
	w->err = err;
	w->bytes = bytes;
	push_work(r, w);
}

void repl_queue_bm(struct repl *r)
{
	struct work *w = calloc(1, sizeof(*w));

	if (!w) {
		log_err("%s: out of memory for sending the bitmap",
			r->p.cfg->name);
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR, "out of memory");
		return;
	}
	w->kind = W_BM_SEND;
	w->conn_gen = __atomic_load_n(&r->conn_gen, __ATOMIC_ACQUIRE);
	push_work(r, w);
}

void repl_queue_work(struct repl *r, const struct proto_msg *m,
		       struct xport_buf *buf)
{
	struct work *w = calloc(1, sizeof(*w));

	if (!w) {
		log_err("%s: out of memory for a received %s",
			r->p.cfg->name, proto_type_name(m->type));
		if (buf)
			xport_buf_put(buf);
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR, "out of memory");
		return;
	}
	w->m = *m;
	w->m.payload = NULL;
	w->buf = buf;
	w->conn_gen = __atomic_load_n(&r->conn_gen, __ATOMIC_ACQUIRE);
	push_work(r, w);
}

/* ---- life cycle ---- */

void repl_set_ctl(struct repl *r, struct ctl_server *ctl)
{
	pthread_mutex_lock(&r->lock);
	r->p.ctl = ctl;
	pthread_mutex_unlock(&r->lock);
}

struct repl *repl_create(const struct repl_params *p)
{
	static const struct conn_cbs cbs = {
		.established = peer_established,
		.frame = peer_frame,
		.lost = peer_lost,
	};
	struct conn_opts co = { 0 };
	struct sm_req qa = { .type = SM_REQ_ATTACH };
	struct sm_req q = { .type = SM_EV_ATTACHED };
	struct repl *r;
	int err;

	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->p = *p;
	r->proto = p->cfg->protocol;
	r->wfd = -1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->send_lock, NULL);
	pthread_cond_init(&r->drained, NULL);
	pthread_cond_init(&r->work_cond, NULL);
	pthread_mutex_init(&r->work_lock, NULL);
	pthread_mutex_init(&r->ival_lock, NULL);
	pthread_cond_init(&r->ival_cond, NULL);
	r->ival = ival_create(REPL_RANGES);
	if (!r->ival) {
		err = ENOMEM;
		goto out_free;
	}
	r->slots = calloc(REPL_SLOTS, sizeof(*r->slots));
	if (!r->slots) {
		err = ENOMEM;
		goto out_free;
	}
	for (int32_t i = 0; i < REPL_SLOTS; i++) {
		r->slots[i].r = r;
		r->slots[i].next_free = i + 1 < REPL_SLOTS ? i + 1 : -1;
	}
	sm_init(&r->sm, p->cfg->fencing, p->cfg->on_io_error);
	q.md_flags = p->md->sb.flags;
	/* a peer this node fenced (fence.c) is known Outdated */
	q.md_peer_flags = p->md->sb.peers[REPL_PEER_SLOT].flags;
	if (peer_sm_do(r, &qa, NULL, 0) || peer_sm_do(r, &q, NULL, 0)) {
		/* the state machine knows no other way in: take the md's
		 * word for the disk */
		r->sm.disk = sm_disk_from_md(p->md->sb.flags, 0,
					     p->cfg->fencing);
	}
	peer_update_may_write(r);
	co.res = p->cfg;
	co.self = p->self;
	co.data_bytes = p->data_bytes;
	co.features = PROTO_F_DISCARD | PROTO_F_WRITE_ZEROES |
		      PROTO_F_CSUM_RESYNC | PROTO_F_VERIFY |
		      PROTO_F_REMOTE_READ;
	co.first_dial_ms = 200;
	r->conn = conn_create(&co, &cbs, r);
	if (!r->conn) {
		err = errno;
		goto out_free;
	}
	err = -fence_create(r);
	if (err) {
		conn_destroy(r->conn);
		goto out_free;
	}
	return r;

out_free:
	ival_free(r->ival);
	free(r->slots);
	free(r);
	errno = err;
	return NULL;
}

int repl_start(struct repl *r)
{
	struct sm_req q = { .type = SM_REQ_CONNECT };
	int ret;

	r->wfd = open(r->p.backing, O_RDWR | O_CLOEXEC);
	if (r->wfd < 0) {
		ret = -errno;
		log_err("%s: opening %s for the peer's writes: %s",
			r->p.cfg->name, r->p.backing, strerror(-ret));
		return ret;
	}
	ret = pthread_create(&r->worker, NULL, worker_main, r);
	if (ret) {
		close(r->wfd);
		r->wfd = -1;
		return -ret;
	}
	r->worker_running = true;
	pthread_mutex_lock(&r->lock);
	peer_sm_do(r, &q, NULL, 0);
	pthread_mutex_unlock(&r->lock);
	ret = conn_start(r->conn);
	if (ret)
		log_err("%s: cannot listen for the peer: %s", r->p.cfg->name,
			strerror(-ret));
	return ret;
}

void repl_stop(struct repl *r)
{
	struct sm_req q = { .type = SM_REQ_DISCONNECT };

	conn_stop(r->conn);	/* lost() aborted the resync */
	peer_fail_reads(r);
	pthread_mutex_lock(&r->lock);
	repl_fail_all(r);
	if (r->sm.conn != SM_CONN_STANDALONE)
		peer_sm_do(r, &q, NULL, 0);
	pthread_mutex_unlock(&r->lock);
	pthread_mutex_lock(&r->work_lock);
	r->worker_stop = true;
	pthread_cond_broadcast(&r->work_cond);
	pthread_mutex_unlock(&r->work_lock);
	if (r->worker_running)
		pthread_join(r->worker, NULL);
	r->worker_running = false;
	if (r->wfd >= 0 && fdatasync(r->wfd))
		log_warn("%s: flushing the peer's writes: %s", r->p.cfg->name,
			 strerror(errno));
}

void repl_destroy(struct repl *r)
{
	if (!r)
		return;
	conn_destroy(r->conn);
	fence_destroy(r);
	if (r->wfd >= 0)
		close(r->wfd);
	pthread_cond_destroy(&r->work_cond);
	pthread_mutex_destroy(&r->work_lock);
	pthread_cond_destroy(&r->drained);
	pthread_mutex_destroy(&r->send_lock);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->ival_cond);
	pthread_mutex_destroy(&r->ival_lock);
	ival_free(r->ival);
	free(r->slots);
	free(r->rreads);
	free(r->scratch);
	free(r->rs_pend);
	free(r);
}
