// SPDX-License-Identifier: MIT
/*
 * Replication's data path (see repl.h, peer.h): the primary's sends and
 * acks, the ranges in flight, and the life cycle (the secondary's side is
 * apply.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apply.h"
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

	ret = apply_start(r);
	if (ret)
		return ret;
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
	apply_stop(r);
}

void repl_destroy(struct repl *r)
{
	if (!r)
		return;
	conn_destroy(r->conn);
	fence_destroy(r);
	apply_free(r);
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
	free(r->rs_pend);
	free(r);
}
