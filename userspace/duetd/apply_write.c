// SPDX-License-Identifier: MIT
/*
 * The apply worker's writes and answers (apply_int.h): a DATA or RS_DATA
 * frame started when the rules allow (apply_start_write), through the page
 * cache at once or O_DIRECT on the worker's ring, its completion, and the
 * answers queued for the connection thread in bursts.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "apply_int.h"
#include "conn.h"
#include "eng.h"
#include "log.h"
#include "meta.h"
#include "repl.h"
#include "util.h"

/* ---- answers ---- */

/*
 * The answers of a burst are queued with conn_send_lazy() and the
 * connection thread is woken once for them all, here: before the worker
 * waits for anything, so that none waits longer than the work at hand,
 * and every APPLY_PUSH_EVERY answers within a long burst.
 */
#define APPLY_PUSH_EVERY 16

void apply_push_answers(struct repl *r)
{
	if (!r->ap->unpushed)
		return;
	r->ap->unpushed = 0;
	conn_push(r->conn);
}

static void answer_queued(struct repl *r)
{
	if (++r->ap->unpushed >= APPLY_PUSH_EVERY)
		apply_push_answers(r);
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

void apply_send_barrier_ack(struct repl *r, const struct proto_msg *m)
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
void apply_frame_begin(struct repl *r, const struct work *w)
{
	r->stale = w->conn_gen != apply_conn_gen(r);
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
	r->stale = w->conn_gen != apply_conn_gen(r);
	if (w->m.type == PROTO_RS_DATA)
		apply_rs_data_done(r, w, ret);
	else
		data_done(r, w, ret);
	apply_put_work(w);
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
			apply_push_answers(r);	/* it waits for the disk */
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
void apply_op_cqe(struct repl *r, struct aop *o, int res)
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
		apply_fig_add(&ap->direct_writes, -1);
		apply_fig_add(&ap->cached_writes, 1);
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
bool apply_goes_direct(const struct apply *ap, const struct work *w,
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
bool apply_start_write(struct repl *r, struct work *w)
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
	direct = apply_goes_direct(ap, w, sector << SECTOR_SHIFT, len);
	if (!ap->nr_free || overlaps(ap, sector, end) ||
	    (!direct && near_direct(ap, sector, end))) {
		apply_fig_add(&ap->waits, 1);
		return false;
	}
	apply_frame_begin(r, w);
	if (m->type == PROTO_DATA)
		r->rx_epoch_writes++;
	if (m->type == PROTO_RS_DATA && m->block.result) {
		/* the source could not read it: nothing to write */
		write_done(r, w, -(int)m->block.result);
		return true;
	}
	if (m->type == PROTO_DATA && m->data.op != PROTO_OP_WRITE) {
		apply_push_answers(r);
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
		apply_fig_add(&ap->direct_writes, 1);
	else
		apply_fig_add(&ap->cached_writes, 1);
	if (apply_in_flight(ap) > ap->max_in_flight)
		apply_fig_set(&ap->max_in_flight, apply_in_flight(ap));
	op_issue(r, o);
	return true;
}
