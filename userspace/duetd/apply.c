// SPDX-License-Identifier: MIT
/*
 * The secondary's apply worker (apply.h): received frames in stream order,
 * what may start when (the rules that keep the protocol's order), the
 * worker's loop and ring, frames the connection thread applies itself,
 * life cycle and figures. The writes and answers are in apply_write.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "apply_int.h"
#include "conn.h"
#include "eng.h"
#include "log.h"
#include "peer.h"
#include "repl.h"
#include "resync.h"
#include "util.h"

#define UD_WAKE (1ULL << 32)	/* the wake eventfd's read */

/* ---- everything else: after every earlier write ---- */

static void run_barrier(struct repl *r, const struct proto_msg *m)
{
	int ret = 0;

	if ((m->barrier.flags & PROTO_BF_FLUSH) && fdatasync(r->wfd)) {
		ret = -errno;
		apply_fig_add(&r->ap->flush_errors, 1);
		log_err("%s: flushing for barrier %llu: %s", r->p.cfg->name,
			(unsigned long long)m->barrier.epoch, strerror(-ret));
	}
	/* a flush that failed is never acknowledged: the primary marks the
	 * epoch out of sync when the connection goes */
	if (!ret)
		apply_send_barrier_ack(r, m);
	else
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR, "flush failed");
	r->rx_epoch_writes = 0;
}

static void run_frame(struct repl *r, struct work *w)
{
	const struct proto_msg *m = &w->m;

	apply_frame_begin(r, w);
	switch (m->type) {
	case PROTO_BARRIER:
		run_barrier(r, m);
		break;
	case PROTO_RS_CSUM:
		apply_rs_csum(r, w);
		break;
	case PROTO_OV_REQUEST:
		apply_ov_request(r, m);
		break;
	case PROTO_OV_REPLY:
		apply_ov_reply(r, m);
		break;
	case PROTO_RS_DONE:
		/* every RS_DATA before it is written: make them durable */
		apply_rs_flush(r);
		if (!r->stale)
			peer_rs_done(r, m);
		break;
	case PROTO_READ_REQUEST:
		peer_serve_read(r, m);
		break;
	default:
		log_warn("%s: the apply worker got a %s frame",
			 r->p.cfg->name, proto_type_name(m->type));
		break;
	}
}

static void run_item(struct repl *r, struct work *w)
{
	apply_push_answers(r);	/* it may take a while (a flush, a read) */
	switch (w->kind) {
	case W_BM_SEND:
		peer_send_bitmap(r, w);
		break;
	case W_RS_FINISHED:
	case W_RS_REAP:
		resync_get_info(w->rs, &w->info);
		resync_free(w->rs);
		if (w->kind == W_RS_FINISHED)
			peer_finish_source(r, w);
		break;
	default:
		run_frame(r, w);
		break;
	}
	apply_put_work(w);
}

/* Start what may start, in order. */
static void dispatch(struct repl *r)
{
	struct apply *ap = r->ap;
	struct work *w;

	while ((w = ap->pend_head)) {
		bool is_write = w->kind == W_FRAME &&
				(w->m.type == PROTO_DATA ||
				 w->m.type == PROTO_RS_DATA);

		if (!is_write && apply_in_flight(ap)) {
			apply_fig_add(&ap->waits, 1);
			return;
		}
		ap->pend_head = w->next;
		if (!ap->pend_head)
			ap->pend_tail = NULL;
		w->next = NULL;
		if (!is_write) {
			run_item(r, w);
			continue;
		}
		if (!apply_start_write(r, w)) {
			/* back at the head: it waits for a completion */
			w->next = ap->pend_head;
			ap->pend_head = w;
			if (!ap->pend_tail)
				ap->pend_tail = w;
			return;
		}
	}
}

/* ---- the worker ---- */

/* Move the queued items to the worker's own list. Protocol B:
 * "received" once it is ours to apply, in order. */
static void take_new(struct repl *r)
{
	struct apply *ap = r->ap;
	struct work *head, *tail;

	pthread_mutex_lock(&r->work_lock);
	head = r->work_head;
	tail = r->work_tail;
	r->work_head = r->work_tail = NULL;
	pthread_mutex_unlock(&r->work_lock);
	if (!head)
		return;
	if (r->proto == 'B') {
		for (struct work *w = head; w; w = w->next) {
			if (w->kind != W_FRAME || w->m.type != PROTO_DATA)
				continue;
			r->stale = w->conn_gen != apply_conn_gen(r);
			apply_send_ack(r, PROTO_ACK_RECV, w->m.id,
				       w->m.data.sector, w->m.data.length, 0);
		}
	}
	if (ap->pend_tail)
		ap->pend_tail->next = head;
	else
		ap->pend_head = head;
	ap->pend_tail = tail;
}

static void arm_wake(struct apply *ap)
{
	struct io_uring_sqe *sqe;

	if (ap->efd_armed)
		return;
	sqe = eng_get_sqe(&ap->ring);
	if (!sqe)
		return;
	io_uring_prep_read(sqe, ap->efd, &ap->efd_val, sizeof(ap->efd_val), 0);
	sqe->user_data = UD_WAKE;
	ap->efd_armed = true;
}

/* Submit what dispatch queued; sleep until a write completes or (when
 * the next item is not blocked) new work comes; handle the completions. */
static void ring_round(struct repl *r)
{
	struct apply *ap = r->ap;
	struct io_uring_cqe *cqe;
	unsigned int head, n = 0;
	bool block;
	int ret;

	arm_wake(ap);
	pthread_mutex_lock(&r->work_lock);
	/* new work only helps if the head of our list is not waiting */
	block = ap->pend_head || !r->work_head;
	ap->ring_wait = block && !ap->pend_head;
	pthread_mutex_unlock(&r->work_lock);
	do {
		ret = io_uring_submit_and_wait(&ap->ring, block ? 1 : 0);
	} while (ret == -EINTR);
	if (ret < 0)
		log_err("%s: apply worker: io_uring_enter: %s",
			r->p.cfg->name, strerror(-ret));
	pthread_mutex_lock(&r->work_lock);
	ap->ring_wait = false;
	pthread_mutex_unlock(&r->work_lock);
	io_uring_for_each_cqe(&ap->ring, head, cqe) {
		uint64_t ud = cqe->user_data;

		n++;
		if (ud == UD_WAKE) {
			ap->efd_armed = false;
			continue;
		}
		if (ud < APPLY_DEPTH && ap->ops[ud].w)
			apply_op_cqe(r, &ap->ops[ud], cqe->res);
	}
	io_uring_cq_advance(&ap->ring, n);
}

static void *worker_main(void *arg)
{
	struct repl *r = arg;
	struct apply *ap = r->ap;
	bool stop;

	pthread_setname_np(pthread_self(), "duet-apply");
	for (;;) {
		take_new(r);
		dispatch(r);
		apply_push_answers(r);
		if (apply_in_flight(ap)) {
			ring_round(r);
			continue;
		}
		if (ap->pend_head)
			continue;	/* nothing in flight: it can start */
		pthread_mutex_lock(&r->work_lock);
		/* from here the connection thread may apply a frame itself,
		 * and then we wait for it to finish before anything else */
		ap->idle = true;
		while (ap->inline_busy || (!r->work_head && !r->worker_stop))
			pthread_cond_wait(&r->work_cond, &r->work_lock);
		ap->idle = false;
		stop = !r->work_head && r->worker_stop;
		pthread_mutex_unlock(&r->work_lock);
		if (stop)
			break;
	}
	return NULL;
}

static void push_work(struct repl *r, struct work *w)
{
	struct apply *ap = r->ap;
	uint64_t one = 1;
	bool kick = false;

	pthread_mutex_lock(&r->work_lock);
	if (!ap || !r->worker_running) {
		/* no worker (not started, or stopped): nobody to apply it */
		pthread_mutex_unlock(&r->work_lock);
		apply_put_work(w);
		return;
	}
	if (r->work_tail)
		r->work_tail->next = w;
	else
		r->work_head = w;
	r->work_tail = w;
	if (ap->ring_wait) {
		ap->ring_wait = false;
		kick = true;
	} else {
		pthread_cond_signal(&r->work_cond);
	}
	pthread_mutex_unlock(&r->work_lock);
	if (kick && write(ap->efd, &one, sizeof(one)) != sizeof(one))
		log_warn("%s: waking the apply worker: %s", r->p.cfg->name,
			 strerror(errno));
}

void apply_queue_rs(struct repl *r, uint8_t kind, struct resync *rs, int err,
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

void apply_queue_bm(struct repl *r)
{
	struct work *w = calloc(1, sizeof(*w));

	if (!w) {
		log_err("%s: out of memory for sending the bitmap",
			r->p.cfg->name);
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR, "out of memory");
		return;
	}
	w->kind = W_BM_SEND;
	w->conn_gen = apply_conn_gen(r);
	push_work(r, w);
}

static struct work *frame_work(struct repl *r, const struct proto_msg *m,
			       struct xport_buf *buf)
{
	struct work *w = calloc(1, sizeof(*w));

	if (!w) {
		log_err("%s: out of memory for a received %s",
			r->p.cfg->name, proto_type_name(m->type));
		if (buf)
			xport_buf_put(buf);
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR, "out of memory");
		return NULL;
	}
	w->m = *m;
	w->m.payload = NULL;
	w->buf = buf;
	w->conn_gen = apply_conn_gen(r);
	return w;
}

void apply_queue_frame(struct repl *r, const struct proto_msg *m,
		       struct xport_buf *buf)
{
	struct work *w = frame_work(r, m, buf);

	if (w)
		push_work(r, w);
}

/*
 * May the connection thread apply @w itself? Only what costs it no wait
 * for the disk: a write that goes through the page cache without FUA, or
 * a BARRIER without FLUSH (its answer alone).
 */
static bool inline_kind(const struct apply *ap, const struct work *w)
{
	const struct proto_msg *m = &w->m;

	if (m->type == PROTO_BARRIER)
		return !(m->barrier.flags & PROTO_BF_FLUSH);
	if (m->type != PROTO_DATA || m->data.op != PROTO_OP_WRITE || !w->buf ||
	    (m->data.flags & PROTO_DF_FUA))
		return false;
	return !apply_goes_direct(ap, w, m->data.sector << SECTOR_SHIFT,
				  m->data.length);
}

void apply_frame(struct repl *r, const struct proto_msg *m,
		 struct xport_buf *buf)
{
	struct apply *ap = r->ap;
	struct work *w = frame_work(r, m, buf);
	bool here;

	if (!w)
		return;
	pthread_mutex_lock(&r->work_lock);
	here = ap && r->worker_running && ap->idle && !ap->inline_busy &&
	       !r->work_head && inline_kind(ap, w);
	if (here)
		ap->inline_busy = true;
	pthread_mutex_unlock(&r->work_lock);
	if (!here) {
		push_work(r, w);
		return;
	}
	/*
	 * The worker is idle: every frame before this one is applied and
	 * answered, nothing is in flight, and until inline_busy drops the
	 * worker touches nothing. So this is the worker's own path, one
	 * frame long, without the hand-over and the wake-ups; a write
	 * through the page cache completes right here (op_issue()).
	 */
	apply_fig_add(&ap->inline_frames, 1);
	if (m->type == PROTO_BARRIER) {
		run_item(r, w);
		w = NULL;
	} else {
		if (r->proto == 'B') {
			r->stale = w->conn_gen != apply_conn_gen(r);
			apply_send_ack(r, PROTO_ACK_RECV, m->id, m->data.sector,
				       m->data.length, 0);
		}
		/* with nothing in flight it cannot have to wait; if it
		 * did, the worker would take it (below) */
		if (apply_start_write(r, w))
			w = NULL;
	}
	apply_push_answers(r);
	pthread_mutex_lock(&r->work_lock);
	ap->inline_busy = false;
	if (r->work_head || r->worker_stop)
		pthread_cond_signal(&r->work_cond);
	pthread_mutex_unlock(&r->work_lock);
	if (w)
		push_work(r, w);
}

/* ---- life cycle ---- */

static void setup_ring(struct repl *r)
{
	struct apply *ap = r->ap;
	int ret;

	ap->efd = eventfd(0, EFD_CLOEXEC);
	if (ap->efd < 0) {
		log_warn("%s: apply worker: eventfd: %s; writing one at a time",
			 r->p.cfg->name, strerror(errno));
		return;
	}
	ret = io_uring_queue_init(2 * APPLY_DEPTH, &ap->ring, 0);
	if (ret) {
		log_notice("%s: apply worker: no io_uring (%s); writing one at a time",
			   r->p.cfg->name, strerror(-ret));
		close(ap->efd);
		ap->efd = -1;
		return;
	}
	ap->have_ring = true;
}

int apply_start(struct repl *r)
{
	struct apply *ap;
	int ret;

	ap = calloc(1, sizeof(*ap));
	if (!ap)
		return -ENOMEM;
	ap->efd = -1;
	ap->dfd = -1;
	for (uint32_t i = 0; i < APPLY_DEPTH; i++)
		ap->free_ops[i] = APPLY_DEPTH - 1 - i;
	ap->nr_free = APPLY_DEPTH;
	r->ap = ap;
	r->wfd = open(r->p.backing, O_RDWR | O_CLOEXEC);
	if (r->wfd < 0) {
		ret = -errno;
		log_err("%s: opening %s for the peer's writes: %s",
			r->p.cfg->name, r->p.backing, strerror(-ret));
		goto out_free;
	}
	/* no O_DIRECT (some filesystems): every write is cached */
	ap->dfd = open(r->p.backing, O_RDWR | O_CLOEXEC | O_DIRECT);
	ap->direct_ok = ap->dfd >= 0;
	setup_ring(r);
	pthread_mutex_lock(&r->work_lock);
	r->worker_running = true;
	pthread_mutex_unlock(&r->work_lock);
	ret = -pthread_create(&r->worker, NULL, worker_main, r);
	if (ret) {
		r->worker_running = false;
		goto out_close;
	}
	r->worker_joinable = true;
	return 0;

out_close:
	if (ap->have_ring)
		io_uring_queue_exit(&ap->ring);
	if (ap->efd >= 0)
		close(ap->efd);
	if (ap->dfd >= 0)
		close(ap->dfd);
	close(r->wfd);
	r->wfd = -1;
out_free:
	r->ap = NULL;
	free(ap);
	return ret;
}

void apply_stop(struct repl *r)
{
	pthread_mutex_lock(&r->work_lock);
	r->worker_stop = true;
	pthread_cond_broadcast(&r->work_cond);
	pthread_mutex_unlock(&r->work_lock);
	if (r->worker_joinable)
		pthread_join(r->worker, NULL);
	r->worker_joinable = false;
	pthread_mutex_lock(&r->work_lock);
	r->worker_running = false;
	pthread_mutex_unlock(&r->work_lock);
	if (r->wfd >= 0 && fdatasync(r->wfd))
		log_warn("%s: flushing the peer's writes: %s", r->p.cfg->name,
			 strerror(errno));
}

void apply_free(struct repl *r)
{
	struct apply *ap = r->ap;
	struct work *w;

	while ((w = r->work_head)) {
		r->work_head = w->next;
		apply_put_work(w);
	}
	r->work_tail = NULL;
	if (ap) {
		if (ap->have_ring)
			io_uring_queue_exit(&ap->ring);
		if (ap->efd >= 0)
			close(ap->efd);
		if (ap->dfd >= 0)
			close(ap->dfd);
		free(ap);
		r->ap = NULL;
	}
	if (r->wfd >= 0)
		close(r->wfd);
	r->wfd = -1;
	free(r->scratch);
	r->scratch = NULL;
}

int apply_dio_fd(struct repl *r)
{
	return r->ap ? r->ap->dfd : -1;
}

/* A counter the worker writes (alone), read from another thread. */
static void put_count(json_t *j, const char *key, const uint64_t *v)
{
	json_object_set_new(j, key,
			    json_integer((json_int_t)__atomic_load_n(
				    v, __ATOMIC_RELAXED)));
}

void apply_status(struct repl *r, json_t *o)
{
	struct apply *ap = r->ap;
	json_t *j;

	if (!ap)
		return;
	j = json_object();
	json_object_set_new(j, "io_uring", json_boolean(ap->have_ring));
	put_count(j, "direct_writes", &ap->direct_writes);
	put_count(j, "cached_writes", &ap->cached_writes);
	put_count(j, "max_in_flight", &ap->max_in_flight);
	put_count(j, "waits", &ap->waits);
	put_count(j, "inline_frames", &ap->inline_frames);
	put_count(j, "flush_errors", &ap->flush_errors);
	json_object_set_new(o, "apply", j);
}
