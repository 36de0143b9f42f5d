// SPDX-License-Identifier: MIT
/*
 * The secondary's apply worker (apply.h): received frames in stream order,
 * writes in parallel on the worker's io_uring within the rules that keep
 * the protocol's order, answers as each one completes.
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

#include "apply.h"
#include "conn.h"
#include "eng.h"
#include "log.h"
#include "peer.h"
#include "repl.h"
#include "resync.h"
#include "util.h"

/* O_DIRECT writes must start and end on this (and the pool's buffers are
 * aligned to it); others go through the page cache. */
#define APPLY_DIO_ALIGN 4096u
/*
 * Writes from this size on go to the disk directly, on the ring: they
 * would cost the worker a copy into the page cache (and the system its
 * writeback). Smaller ones are copied into the page cache right here: a
 * few microseconds, against the disk's latency for a direct write that
 * the next epoch would have to wait for (4 KiB random writes at QD32 ran
 * at 0.6x with every write direct).
 */
#define APPLY_DIRECT_MIN (64u << 10)
/* The largest folio the page cache may use for the backing file (a PMD
 * on x86-64): the unit of the rule in near_direct(). */
#define APPLY_FOLIO_MAX (2u << 20)
#define UD_WAKE (1ULL << 32)	/* the wake eventfd's read */

/* One write in flight. */
struct aop {
	struct work *w;		/* NULL: the slot is free */
	uint64_t sector, end;	/* [sector, end): what it overlaps */
	uint32_t done;		/* bytes written so far */
	bool direct;		/* on the O_DIRECT descriptor */
};

struct apply {
	struct io_uring ring;
	bool have_ring;
	int efd;		/* eventfd: new work while the worker sleeps
				 * on the ring (-1 without a ring) */
	uint64_t efd_val;
	bool efd_armed;		/* its read is queued on the ring */
	bool ring_wait;		/* under work_lock: the worker sleeps there */
	bool idle;		/* under work_lock: the worker waits for work
				 * with nothing taken and nothing in flight */
	bool inline_busy;	/* under work_lock: the connection thread
				 * applies a frame itself (apply_frame) */
	int dfd;		/* O_DIRECT descriptor, or -1 */
	bool direct_ok;		/* dfd takes our writes (not refused) */
	struct aop ops[APPLY_DEPTH];
	uint32_t free_ops[APPLY_DEPTH];
	uint32_t nr_free;	/* APPLY_DEPTH - nr_free writes in flight */
	struct work *pend_head, *pend_tail;	/* taken, not yet started */

	/* figures (worker writes, status reads without a lock: counters) */
	uint64_t direct_writes, cached_writes, max_in_flight, waits;
	uint64_t inline_frames;
	uint64_t flush_errors;
	uint32_t unpushed;	/* answers queued lazily, thread not woken */
};

static uint32_t in_flight(const struct apply *ap)
{
	return APPLY_DEPTH - ap->nr_free;
}

static uint64_t conn_gen_now(struct repl *r)
{
	return __atomic_load_n(&r->conn_gen, __ATOMIC_ACQUIRE);
}

static void put_work(struct work *w)
{
	if (w->buf)
		xport_buf_put(w->buf);
	free(w);
}

/* ---- answers ---- */

/*
 * The answers of a burst are queued with conn_send_lazy() and the
 * connection thread is woken once for them all, here: before the worker
 * waits for anything, so that none waits longer than the work at hand,
 * and every APPLY_PUSH_EVERY answers within a long burst.
 */
#define APPLY_PUSH_EVERY 16

static void push_answers(struct repl *r)
{
	if (!r->ap->unpushed)
		return;
	r->ap->unpushed = 0;
	conn_push(r->conn);
}

static void answer_queued(struct repl *r)
{
	if (++r->ap->unpushed >= APPLY_PUSH_EVERY)
		push_answers(r);
}

void apply_send_ack(struct repl *r, uint16_t type, uint64_t id,
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
	/* announced with the rest of the burst (push_answers) */
	ret = conn_send_lazy(r->conn, &m);
	answer_queued(r);
	if (ret && ret != -ENOTCONN)
		log_warn("%s: sending %s: %s", r->p.cfg->name,
			 proto_type_name(type), strerror(-ret));
}

static void send_barrier_ack(struct repl *r, const struct proto_msg *m)
{
	struct proto_msg a = { .type = PROTO_BARRIER_ACK, .id = m->id };

	a.barrier.epoch = m->barrier.epoch;
	a.barrier.nr_writes = r->rx_epoch_writes;
	if (r->stale)
		return;
	if (conn_send_lazy(r->conn, &a))
		log_dbg(LOG_CAT_PROTO, "%s: BARRIER_ACK not sent",
			r->p.cfg->name);
	answer_queued(r);
}

/* ---- writes ---- */

/* A frame is about to be applied: is its connection gone (then it is
 * still applied, the data is the primary's, but not answered: the answer
 * would reach the next connection with an id that means nothing there)?
 * A new connection starts its epochs over. */
static void frame_begin(struct repl *r, const struct work *w)
{
	r->stale = w->conn_gen != conn_gen_now(r);
	if (w->conn_gen != r->worker_gen) {
		r->worker_gen = w->conn_gen;
		r->rx_epoch_writes = 0;
	}
}

/* A DATA write ended with @ret (0 or -errno). */
static void data_done(struct repl *r, const struct work *w, int ret)
{
	const struct proto_msg *m = &w->m;

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
		apply_send_ack(r, PROTO_ACK_WRITE, m->id, m->data.sector,
			       m->data.length, ret);
}

/* Whichever write @w was, it ended with @ret; @w is released. */
static void write_done(struct repl *r, struct work *w, int ret)
{
	r->stale = w->conn_gen != conn_gen_now(r);
	if (w->m.type == PROTO_RS_DATA)
		apply_rs_data_done(r, w, ret);
	else
		data_done(r, w, ret);
	put_work(w);
}

/* The written range of a DATA/RS_DATA frame. */
static void frame_range(const struct proto_msg *m, uint64_t *sector,
			uint32_t *len)
{
	if (m->type == PROTO_RS_DATA) {
		*sector = m->block.sector;
		*len = m->block.length;
	} else {
		*sector = m->data.sector;
		*len = m->data.length;
	}
}

static bool overlaps(const struct apply *ap, uint64_t sector, uint64_t end)
{
	for (uint32_t i = 0; i < APPLY_DEPTH; i++) {
		const struct aop *o = &ap->ops[i];

		if (o->w && o->sector < end && sector < o->end)
			return true;
	}
	return false;
}

/* The payload's digest, when the frame carries one. 0 or -EBADMSG. */
static int check_digest(const struct work *w, uint32_t len)
{
	const struct proto_msg *m = &w->m;
	uint8_t alg = m->type == PROTO_RS_DATA ? m->block.digest_alg :
						  m->data.digest_alg;
	const uint8_t *want = m->type == PROTO_RS_DATA ? m->block.digest :
							  m->data.digest;
	uint8_t dg[PROTO_DIGEST_MAX];
	int ret;

	if (alg == PROTO_DIGEST_NONE)
		return 0;
	ret = proto_digest(alg, w->buf ? w->buf->data : NULL, len, dg);
	if (ret)
		return ret;
	return memcmp(dg, want, PROTO_DIGEST_MAX) ? -EBADMSG : 0;
}

static bool op_fua(const struct aop *o)
{
	return o->w->m.type == PROTO_DATA &&
	       (o->w->m.data.flags & PROTO_DF_FUA);
}

/* The rest of @o's write, synchronously. 0 or -errno. */
static int op_write_sync(struct repl *r, struct aop *o, uint32_t len,
			 uint64_t off)
{
	int fd = o->direct ? r->ap->dfd : r->wfd;

	while (o->done < len) {
		struct iovec iov = {
			.iov_base = (char *)o->w->buf->data + o->done,
			.iov_len = len - o->done,
		};
		ssize_t n = pwritev2(fd, &iov, 1, (off_t)(off + o->done),
				     op_fua(o) ? RWF_DSYNC : 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		o->done += (uint32_t)n;
	}
	return 0;
}

static void op_finish(struct repl *r, struct aop *o, int ret)
{
	struct apply *ap = r->ap;
	struct work *w = o->w;

	o->w = NULL;
	ap->free_ops[ap->nr_free++] = (uint32_t)(o - ap->ops);
	write_done(r, w, ret);
}

/* Queue the rest of @o's write on the ring, or do it here: a write
 * through the page cache, or no ring (or no SQE to be had). */
static void op_issue(struct repl *r, struct aop *o)
{
	struct apply *ap = r->ap;
	struct io_uring_sqe *sqe = NULL;
	uint64_t sector;
	uint32_t len;

	frame_range(&o->w->m, &sector, &len);
	if (ap->have_ring && o->direct)
		sqe = eng_get_sqe(&ap->ring);
	if (!sqe) {
		if (op_fua(o))
			push_answers(r);	/* it waits for the disk */
		op_finish(r, o, op_write_sync(r, o, len,
					      sector << SECTOR_SHIFT));
		return;
	}
	io_uring_prep_write(sqe, o->direct ? ap->dfd : r->wfd,
			    (char *)o->w->buf->data + o->done, len - o->done,
			    (sector << SECTOR_SHIFT) + o->done);
	if (op_fua(o))
		sqe->rw_flags = RWF_DSYNC;
	sqe->user_data = (uint64_t)(o - ap->ops);
}

/* A write's completion from the ring. */
static void op_cqe(struct repl *r, struct aop *o, int res)
{
	struct apply *ap = r->ap;
	uint64_t sector;
	uint32_t len;

	frame_range(&o->w->m, &sector, &len);
	if (res == -EINVAL && o->direct && !o->done) {
		/* the disk wants more alignment than we assumed; once per
		 * daemon, so this one write is not held to near_direct()'s
		 * rule against the other direct writes still in flight */
		log_notice("%s: O_DIRECT write at %llu+%u refused; the peer's writes go through the page cache",
			   r->p.cfg->name, (unsigned long long)sector, len);
		ap->direct_ok = false;
		o->direct = false;
		ap->direct_writes--;
		ap->cached_writes++;
		op_issue(r, o);
		return;
	}
	if (res > 0 && (uint32_t)res < len - o->done) {
		o->done += (uint32_t)res;	/* short: the rest */
		op_issue(r, o);
		return;
	}
	if (res == 0)
		res = -EIO;	/* the device ended early */
	op_finish(r, o, res < 0 ? res : 0);
}

/* Will this write go O_DIRECT? */
static bool goes_direct(const struct apply *ap, const struct work *w,
			uint64_t off, uint32_t len)
{
	if (!ap->direct_ok || len < APPLY_DIRECT_MIN ||
	    (off % APPLY_DIO_ALIGN) || (len % APPLY_DIO_ALIGN) || !w->buf)
		return false;
	if (w->m.type == PROTO_DATA && w->m.data.op != PROTO_OP_WRITE)
		return false;
	return !((uintptr_t)w->buf->data % APPLY_DIO_ALIGN);
}

/*
 * May a write through the page cache (or an fallocate) to [sector, end)
 * start now? Not while an O_DIRECT write is in flight in the same
 * APPLY_FOLIO_MAX-aligned region, even without a common sector: the two
 * may share a large folio, and a folio dirtied under a direct write makes
 * the kernel fail to invalidate it afterwards, which it reports as an
 * I/O error at the next fdatasync ("direct I/O collided with buffered
 * I/O").
 */
static bool near_direct(const struct apply *ap, uint64_t sector, uint64_t end)
{
	const uint64_t f = APPLY_FOLIO_MAX >> SECTOR_SHIFT;
	uint64_t lo = sector / f, hi = (end + f - 1) / f;

	for (uint32_t i = 0; i < APPLY_DEPTH; i++) {
		const struct aop *o = &ap->ops[i];

		if (o->w && o->direct && o->sector / f < hi &&
		    lo < (o->end + f - 1) / f)
			return true;
	}
	return false;
}

/* An fallocate for DISCARD / WRITE_ZEROES, synchronous (rare). */
static int zero_range(struct repl *r, const struct proto_data *d)
{
	off_t off = (off_t)(d->sector << SECTOR_SHIFT);
	int mode = d->op == PROTO_OP_DISCARD ? FALLOC_FL_PUNCH_HOLE :
					      FALLOC_FL_ZERO_RANGE;

	if (fallocate(r->wfd, mode | FALLOC_FL_KEEP_SIZE, off, d->length) &&
	    (mode == FALLOC_FL_PUNCH_HOLE ||
	     fallocate(r->wfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
		       d->length)))
		return -errno;
	if ((d->flags & PROTO_DF_FUA) && fdatasync(r->wfd))
		return -errno;
	return 0;
}

/*
 * A DATA or RS_DATA frame at the head of the queue: start it, or false
 * when it must wait (it overlaps a write in flight, none is free, or it
 * goes through the page cache next to a direct write in flight).
 */
static bool start_write(struct repl *r, struct work *w)
{
	struct apply *ap = r->ap;
	const struct proto_msg *m = &w->m;
	uint64_t sector, end;
	uint32_t len;
	struct aop *o;
	bool direct;
	int ret;

	frame_range(m, &sector, &len);
	end = sector + (len >> SECTOR_SHIFT);
	direct = goes_direct(ap, w, sector << SECTOR_SHIFT, len);
	if (!ap->nr_free || overlaps(ap, sector, end) ||
	    (!direct && near_direct(ap, sector, end))) {
		ap->waits++;
		return false;
	}
	frame_begin(r, w);
	if (m->type == PROTO_DATA)
		r->rx_epoch_writes++;
	if (m->type == PROTO_RS_DATA && m->block.result) {
		/* the source could not read it: nothing to write */
		write_done(r, w, -(int)m->block.result);
		return true;
	}
	if (m->type == PROTO_DATA && m->data.op != PROTO_OP_WRITE) {
		push_answers(r);
		write_done(r, w, zero_range(r, &m->data));
		return true;
	}
	ret = w->buf ? check_digest(w, len) : -EPROTO;
	if (ret) {
		write_done(r, w, ret);
		return true;
	}
	o = &ap->ops[ap->free_ops[--ap->nr_free]];
	o->w = w;
	o->sector = sector;
	o->end = end;
	o->done = 0;
	o->direct = direct;
	if (o->direct)
		ap->direct_writes++;
	else
		ap->cached_writes++;
	if (in_flight(ap) > ap->max_in_flight)
		ap->max_in_flight = in_flight(ap);
	op_issue(r, o);
	return true;
}

/* ---- everything else: after every earlier write ---- */

static void run_barrier(struct repl *r, const struct proto_msg *m)
{
	int ret = 0;

	if ((m->barrier.flags & PROTO_BF_FLUSH) && fdatasync(r->wfd)) {
		ret = -errno;
		r->ap->flush_errors++;
		log_err("%s: flushing for barrier %llu: %s", r->p.cfg->name,
			(unsigned long long)m->barrier.epoch, strerror(-ret));
	}
	/* a flush that failed is never acknowledged: the primary marks the
	 * epoch out of sync when the connection goes */
	if (!ret)
		send_barrier_ack(r, m);
	else
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR, "flush failed");
	r->rx_epoch_writes = 0;
}

static void run_frame(struct repl *r, struct work *w)
{
	const struct proto_msg *m = &w->m;

	frame_begin(r, w);
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
	push_answers(r);	/* it may take a while (a flush, a read) */
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
	put_work(w);
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

		if (!is_write && in_flight(ap)) {
			ap->waits++;
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
		if (!start_write(r, w)) {
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
			r->stale = w->conn_gen != conn_gen_now(r);
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
			op_cqe(r, &ap->ops[ud], cqe->res);
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
		push_answers(r);
		if (in_flight(ap)) {
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
		put_work(w);
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
	w->conn_gen = conn_gen_now(r);
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
	w->conn_gen = conn_gen_now(r);
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
	return !goes_direct(ap, w, m->data.sector << SECTOR_SHIFT,
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
	ap->inline_frames++;
	if (m->type == PROTO_BARRIER) {
		run_item(r, w);
		w = NULL;
	} else {
		if (r->proto == 'B') {
			r->stale = w->conn_gen != conn_gen_now(r);
			apply_send_ack(r, PROTO_ACK_RECV, m->id, m->data.sector,
				       m->data.length, 0);
		}
		/* with nothing in flight it cannot have to wait; if it
		 * did, the worker would take it (below) */
		if (start_write(r, w))
			w = NULL;
	}
	push_answers(r);
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
		put_work(w);
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
