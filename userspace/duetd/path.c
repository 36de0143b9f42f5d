// SPDX-License-Identifier: MIT
/*
 * The front-end-neutral data path: AL, bounds, flush elision, engine I/O.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "path.h"
#include "fence.h"
#include "repl.h"
#include "util.h"

enum io_wait {
	WAIT_NONE = 0,
	WAIT_SEQ,	/* AL transaction io->seq must become durable */
	WAIT_BUSY,	/* al_begin_io said -EBUSY: ask again */
	WAIT_RANGE,	/* overlaps a change in flight: ask again */
	WAIT_FENCE_NEW,	/* fencing: I/O suspended, not started (held) */
	WAIT_FENCE_DONE,	/* fencing: done, the peer missed it (fence_res) */
};

struct p_io {
	uint64_t sector;
	uint32_t nr_sectors;
	uint64_t seq;		/* AL transaction; FLUSH: the dirty mark */
	int32_t wait_next;	/* parked list, -1 ends it */
	uint8_t wait;		/* enum io_wait */
	bool busy;		/* submitted, complete() not yet called */
	bool al_held;		/* meta_begin_io succeeded: end_io owed */
	bool range_held;	/* repl_range_take succeeded: range */
	uint32_t range;
	bool peer_wait;		/* the peer's answer is outstanding */
	bool local_done;	/* the engine finished: local_res */
	int local_res;
	int peer_res;		/* from the peer completion */
	int32_t peer_next;	/* peer completion list */
	bool peer_sent;		/* the peer's half went out */
	bool via_peer;		/* no local disk for it: the peer decides */
	/* fencing (fence.h): the request as submitted while I/O is
	 * suspended; the ticket taken at issue, whether the peer missed it,
	 * and the result held back */
	struct path_req fence_req;
	uint64_t fence_ticket;
	uint64_t fence_held;	/* WAIT_FENCE_DONE: that ticket */
	bool fence_missed;
	int fence_res;
};

struct path {
	struct path_params p;
	struct io_uring *ring;
	struct p_io *ios;
	struct eng_req *reqs;
	struct eng_queue eq;
	bool eq_setup;		/* eng_queue_setup done */
	bool eq_ok;		/* ops->init done */

	int wake_fd;
	uint64_t wake_val;
	int32_t wait_head;
	int32_t wait_tail;
	unsigned int nr_busy;
	unsigned int nr_logged;	/* I/O errors logged (rate limit) */

	struct repl *repl;	/* NULL: no peer */
	/* peer completions, pushed by the connection thread */
	pthread_mutex_t peer_lock;
	int32_t peer_head;

	struct path_stats st;
};

static inline void st_add(uint64_t *c, uint64_t v)
{
	/* single writer: a plain read is ours, the store is for readers */
	__atomic_store_n(c, *c + v, __ATOMIC_RELAXED);
}

static void io_reset_peer(struct p_io *io)
{
	io->peer_wait = false;
	io->local_done = false;
	io->local_res = 0;
	io->peer_res = 0;
	io->peer_sent = false;
	io->via_peer = false;
}

static void arm_wake(struct path *p)
{
	struct io_uring_sqe *sqe = eng_get_sqe(p->ring);

	if (!sqe) {
		log_err("%s: no SQE for the wake eventfd", p->p.name);
		return;
	}
	io_uring_prep_read(sqe, p->wake_fd, &p->wake_val, sizeof(p->wake_val),
			   0);
	sqe->user_data = eng_ud(false, PATH_UD_KIND_WAKE, 0);
}

/* An fdatasync that began when dirty was @mark succeeded. */
static void flush_done(struct path_shared *sh, uint64_t mark)
{
	uint64_t cur = __atomic_load_n(&sh->flushed, __ATOMIC_ACQUIRE);

	while (cur < mark &&
	       !__atomic_compare_exchange_n(&sh->flushed, &cur, mark, false,
					    __ATOMIC_SEQ_CST,
					    __ATOMIC_ACQUIRE))
		;
}

static bool fence_hold_done(struct path *p, unsigned int tag, int res);
static void park(struct path *p, unsigned int tag, uint8_t wait);

/* The request on @tag is done: release the AL, tell the front end. */
static void finish(struct path *p, unsigned int tag, int res)
{
	struct p_io *io = &p->ios[tag];
	struct eng_req *rq = &p->reqs[tag];

	if (fence_hold_done(p, tag, res))
		return;

	if (io->al_held) {
		meta_end_io(p->p.meta, p->p.id, io->sector, io->nr_sectors);
		io->al_held = false;
	}
	if (io->range_held) {
		repl_range_put(p->repl, io->range);
		io->range_held = false;
	}
	/* Before the front end hears of the completion: a FLUSH issued
	 * after it must see the change (a failed write may have changed
	 * data too). */
	if ((rq->op == ENG_OP_WRITE && (!rq->fua || res < 0)) ||
	    rq->op == ENG_OP_DISCARD || rq->op == ENG_OP_WRITE_ZEROES)
		__atomic_add_fetch(&p->p.shared->dirty, 1, __ATOMIC_SEQ_CST);
	if (rq->op == ENG_OP_FLUSH && !res)
		flush_done(p->p.shared, io->seq);
	if (res < 0) {
		st_add(&p->st.errors, 1);
		if (p->nr_logged < 20) {
			p->nr_logged++;
			log_warn("%s: op %u sector %llu+%u failed: %s",
				 p->p.name, rq->op,
				 (unsigned long long)io->sector,
				 io->nr_sectors, strerror(-res));
		}
	}
	if (p->repl && res >= 0 && rq->op != ENG_OP_READ &&
	    rq->op != ENG_OP_FLUSH)
		repl_app_completed(p->repl);
	io->wait = WAIT_NONE;
	io->busy = false;
	p->nr_busy--;
	p->p.complete(p->p.owner, tag, res < 0 ? res : 0);
}

/* Connection thread (or repl_stop's): the peer's answer for @tag. */
static void on_peer_done(void *arg, uint32_t tag, int res)
{
	struct path *p = arg;
	bool kick;

	pthread_mutex_lock(&p->peer_lock);
	/* reap_peer takes the whole list after each wake-up: only the first
	 * answer since the last one needs to wake the thread (the connection
	 * thread hands over a burst of acks with one eventfd write) */
	kick = p->peer_head < 0;
	p->ios[tag].peer_res = res;
	p->ios[tag].peer_next = p->peer_head;
	p->peer_head = (int32_t)tag;
	pthread_mutex_unlock(&p->peer_lock);
	if (kick)
		path_kick(p);
}

/*
 * The peer will not have this write (not connected, lost, failed): mark
 * it while the AL still holds the extent, before the application hears.
 */
static void peer_missed(struct path *p, unsigned int tag)
{
	struct p_io *io = &p->ios[tag];

	io->fence_missed = true;
	if (io->nr_sectors)
		meta_mark_peer(p->p.meta, io->sector, io->nr_sectors);
}

/*
 * Local disk failure (on-io-error, diskless.c; docs/replication.md, "Local
 * disk failure"): a request the local disk cannot serve is served by the
 * peer. via_peer requests have local_done set from the start; the peer's
 * answer (reap_peer) decides how they end.
 */

/* A read from the peer's disk; the answer comes through reap_peer. */
static void read_peer(struct path *p, unsigned int tag)
{
	struct p_io *io = &p->ios[tag];
	struct eng_req *rq = &p->reqs[tag];

	if (!repl_read(p->repl, io->sector, rq->len, rq->buf, on_peer_done, p,
		       tag)) {
		io->peer_wait = true;
		return;
	}
	finish(p, tag, io->local_res < 0 ? io->local_res : -EIO);
}

static void send_peer(struct path *p, unsigned int tag);

/* No local disk (detached): the peer's disk alone serves the request. */
static void issue_diskless(struct path *p, unsigned int tag)
{
	struct p_io *io = &p->ios[tag];

	io->via_peer = true;
	io->local_done = true;
	io->local_res = -EIO;
	if (p->reqs[tag].op == ENG_OP_READ) {
		read_peer(p, tag);
		return;
	}
	send_peer(p, tag);
	if (!io->peer_wait)
		finish(p, tag, -EIO);
}

/*
 * The backing disk failed @tag's local half with @res. With on-io-error
 * detach the disk is detached and the peer serves the request: a read is
 * read again from the peer's disk; a change (whose peer half went out with
 * the local one) completes once the peer has it. false with pass-on: the
 * error goes to the application as it is.
 */
static bool disk_failed(struct path *p, unsigned int tag, int res)
{
	struct p_io *io = &p->ios[tag];
	struct eng_req *rq = &p->reqs[tag];

	if (!repl_io_error(p->repl, rq->op, io->sector, io->nr_sectors, res))
		return false;
	io->via_peer = true;
	io->local_done = true;
	io->local_res = res;
	if (rq->op == ENG_OP_READ)
		read_peer(p, tag);
	else if (!io->peer_wait)
		/* the peer answered already, or never got it */
		finish(p, tag, io->peer_sent && io->peer_res >= 0 ? 0 : res);
	return true;
}

/* Both halves of a write are in, or only the local one was wanted. */
static void local_done(struct path *p, unsigned int tag, int res)
{
	struct p_io *io = &p->ios[tag];

	if (res < 0 && p->repl && !io->via_peer && disk_failed(p, tag, res))
		return;
	if (io->peer_wait) {
		io->local_done = true;
		io->local_res = res;
		return;
	}
	finish(p, tag, res);
}

static void reap_peer(struct path *p)
{
	int32_t i;

	pthread_mutex_lock(&p->peer_lock);
	i = p->peer_head;
	p->peer_head = -1;
	pthread_mutex_unlock(&p->peer_lock);
	while (i >= 0) {
		struct p_io *io = &p->ios[i];
		int32_t next = io->peer_next;

		io->peer_wait = false;
		if (io->peer_res < 0 && p->reqs[i].op != ENG_OP_READ)
			peer_missed(p, (unsigned int)i);
		if (io->local_done && io->via_peer)
			/* the peer's disk is the only one that has it */
			finish(p, (unsigned int)i,
			       io->peer_res >= 0 ? 0 :
			       io->local_res < 0 ? io->local_res : -EIO);
		else if (io->local_done)
			finish(p, (unsigned int)i, io->local_res);
		i = next;
	}
}

/* Start the peer's half of a data-changing request or flush. */
static void send_peer(struct path *p, unsigned int tag)
{
	struct p_io *io = &p->ios[tag];
	struct eng_req *rq = &p->reqs[tag];
	struct repl_io rio = {
		.op = rq->op,
		.fua = rq->fua,
		.sector = io->sector,
		.len = rq->len,
		.buf = rq->buf,
	};
	int ret;

	if (rq->op == ENG_OP_FLUSH)
		ret = repl_flush(p->repl, on_peer_done, p, tag);
	else
		ret = repl_write(p->repl, &rio, on_peer_done, p, tag);
	if (!ret) {
		io->peer_wait = true;
		io->peer_sent = true;
		return;
	}
	if (rq->op != ENG_OP_FLUSH)
		peer_missed(p, tag);
}

static void issue(struct path *p, unsigned int tag)
{
	struct eng_req *rq = &p->reqs[tag];
	int ret;

	io_reset_peer(&p->ios[tag]);
	/* the fencing window this change starts in (fence_hold_done) */
	p->ios[tag].fence_ticket =
		p->repl && rq->op != ENG_OP_READ && rq->op != ENG_OP_FLUSH ?
			fence_ticket(p->repl) :
			0;
	if (p->repl && !repl_local_disk(p->repl)) {
		issue_diskless(p, tag);
		return;
	}
	if (p->repl && rq->op != ENG_OP_READ)
		send_peer(p, tag);
	ret = p->eq.ops->submit(&p->eq, rq);
	if (ret)
		local_done(p, tag, ret);
}

static void park(struct path *p, unsigned int tag, uint8_t wait)
{
	struct p_io *io = &p->ios[tag];

	io->wait = wait;
	io->wait_next = -1;
	if (p->wait_tail >= 0)
		p->ios[p->wait_tail].wait_next = (int32_t)tag;
	else
		p->wait_head = (int32_t)tag;
	p->wait_tail = (int32_t)tag;
}

/* Enter the activity log; issue, park or fail. */
static void begin_write(struct path *p, unsigned int tag, bool first)
{
	struct p_io *io = &p->ios[tag];
	int64_t n;

	/* with a peer: no overlapping change may be in flight */
	if (p->repl && !io->range_held) {
		int r = repl_range_take(p->repl, p->p.id, io->sector,
					io->nr_sectors, &io->range);

		if (r == -EBUSY) {
			park(p, tag, WAIT_RANGE);
			if (first)
				st_add(&p->st.al_waits, 1);
			return;
		}
		if (r) {
			finish(p, tag, r);
			return;
		}
		io->range_held = true;
	}
	if (p->repl && !repl_local_disk(p->repl)) {
		/* no local disk: no activity log to keep (diskless.c) */
		issue(p, tag);
		return;
	}
	n = meta_begin_io(p->p.meta, p->p.id, io->sector, io->nr_sectors);

	if (n == 0) {
		io->al_held = true;
		issue(p, tag);
	} else if (n > 0) {
		io->al_held = true;
		io->seq = (uint64_t)n;
		park(p, tag, WAIT_SEQ);
	} else if (n == -EBUSY) {
		park(p, tag, WAIT_BUSY);
	} else {
		finish(p, tag, (int)n);
		return;
	}
	if (n && first)
		st_add(&p->st.al_waits, 1);
}

/*
 * Fencing (fence.h). While I/O is suspended a new request is parked before
 * anything happens to it (WAIT_FENCE_NEW), and a change whose peer half
 * was lost with the connection in the window that suspended I/O keeps its
 * result (WAIT_FENCE_DONE): nothing completes to the application until
 * the peer is fenced or back. fence_ kicks every path when that changes.
 * When the daemon stops, held requests fail with -EIO.
 */
static bool fence_hold_new(struct path *p, unsigned int tag,
			   const struct path_req *r)
{
	struct p_io *io = &p->ios[tag];
	enum fence_gate g;

	io->fence_ticket = 0;
	io->fence_missed = false;
	if (!p->repl || (g = fence_gate(p->repl)) == FENCE_PASS)
		return false;
	io->busy = true;
	io->al_held = false;
	io->range_held = false;
	io->sector = r->sector;
	io->nr_sectors = r->nr_sectors;
	io->fence_req = *r;
	p->nr_busy++;
	memset(&p->reqs[tag], 0, sizeof(p->reqs[tag]));
	p->reqs[tag].tag = (uint16_t)tag;
	p->reqs[tag].op = r->op;
	if (g == FENCE_FAIL)
		finish(p, tag, -EIO);
	else
		park(p, tag, WAIT_FENCE_NEW);
	return true;
}

/* The peer missed a change it was meant to get, for want of a
 * connection (not because its disk failed it): hold the result. */
static bool fence_hold_done(struct path *p, unsigned int tag, int res)
{
	struct p_io *io = &p->ios[tag];
	uint64_t t = io->fence_ticket;
	enum fence_gate g;

	io->fence_ticket = 0;	/* one decision per request */
	if (!t || !io->fence_missed || res < 0 ||
	    (io->peer_res && io->peer_res != -ECONNRESET &&
	     io->peer_res != -ENOTCONN && io->peer_res != -ESHUTDOWN))
		return false;
	g = fence_gate_missed(p->repl, t);
	if (g == FENCE_PASS)
		return false;
	if (g == FENCE_FAIL) {
		finish(p, tag, -EIO);
		return true;
	}
	io->fence_held = t;
	io->fence_res = res;
	park(p, tag, WAIT_FENCE_DONE);
	return true;
}

static void fence_retry(struct path *p, unsigned int tag)
{
	struct p_io *io = &p->ios[tag];
	enum fence_gate g;

	if (io->wait == WAIT_FENCE_NEW) {
		g = fence_gate(p->repl);
		if (g == FENCE_HOLD) {
			park(p, tag, WAIT_FENCE_NEW);
		} else if (g == FENCE_FAIL) {
			finish(p, tag, -EIO);
		} else {
			/* as if it came now */
			io->busy = false;
			io->wait = WAIT_NONE;
			p->nr_busy--;
			path_submit(p, tag, &io->fence_req);
		}
		return;
	}
	g = fence_gate_missed(p->repl, io->fence_held);
	if (g == FENCE_HOLD) {
		park(p, tag, WAIT_FENCE_DONE);
		return;
	}
	io->fence_held = 0;
	finish(p, tag, g == FENCE_FAIL ? -EIO : io->fence_res);
}

/* Woken: try every parked request again, in order. */
static void retry_parked(struct path *p)
{
	int32_t i = p->wait_head;

	p->wait_head = p->wait_tail = -1;
	while (i >= 0) {
		struct p_io *io = &p->ios[i];
		int32_t next = io->wait_next;
		int r;

		if (io->wait == WAIT_FENCE_NEW || io->wait == WAIT_FENCE_DONE) {
			fence_retry(p, (unsigned int)i);
		} else if (io->wait == WAIT_BUSY || io->wait == WAIT_RANGE) {
			begin_write(p, (unsigned int)i, false);
		} else {
			r = meta_seq_ready(p->p.meta, p->p.id, io->seq);
			if (r > 0) {
				io->wait = WAIT_NONE;
				issue(p, (unsigned int)i);
			} else if (r == 0) {
				park(p, (unsigned int)i, WAIT_SEQ);
			} else {
				finish(p, (unsigned int)i, r);
			}
		}
		i = next;
	}
}

void path_submit(struct path *p, unsigned int tag, const struct path_req *r)
{
	struct p_io *io = &p->ios[tag];
	struct eng_req *rq = &p->reqs[tag];
	uint64_t bytes;

	if (fence_hold_new(p, tag, r))
		return;

	io->busy = true;
	io->wait = WAIT_NONE;
	io->al_held = false;
	io->range_held = false;
	io->sector = r->sector;
	io->nr_sectors = r->nr_sectors;
	p->nr_busy++;

	memset(rq, 0, sizeof(*rq));
	rq->tag = (uint16_t)tag;
	rq->buf = r->buf;
	rq->op = r->op;
	switch (r->op) {
	case ENG_OP_READ:
	case ENG_OP_DISCARD:
	case ENG_OP_WRITE_ZEROES:
		break;
	case ENG_OP_WRITE:
		rq->fua = r->fua;
		break;
	case ENG_OP_FLUSH:
		io->sector = 0;
		io->nr_sectors = 0;
		st_add(&p->st.flushes, 1);
		io->seq = __atomic_load_n(&p->p.shared->dirty, __ATOMIC_SEQ_CST);
		/* the peer's disk has its own cache: with a peer, every
		 * FLUSH closes an epoch and flushes it there too */
		if (!p->repl &&
		    io->seq == __atomic_load_n(&p->p.shared->flushed,
					       __ATOMIC_SEQ_CST)) {
			/* nothing completed since the last fdatasync began
			 * that is not durable already */
			st_add(&p->st.flushes_elided, 1);
			finish(p, tag, 0);
			return;
		}
		issue(p, tag);
		return;
	default:
		rq->op = 0xff;
		finish(p, tag, -EOPNOTSUPP);
		return;
	}

	/* Never past the data area: the metadata lives behind it. */
	bytes = (uint64_t)io->nr_sectors << SECTOR_SHIFT;
	if (!io->nr_sectors || io->sector >= p->p.dev_sectors ||
	    io->nr_sectors > p->p.dev_sectors - io->sector ||
	    bytes > UINT32_MAX ||
	    (rq->op <= ENG_OP_WRITE && bytes > p->p.buf_bytes)) {
		finish(p, tag, -EIO);
		return;
	}
	rq->off = io->sector << SECTOR_SHIFT;
	rq->len = (uint32_t)bytes;
	/* A Secondary's device is read-only: the Primary owns the data. */
	if (rq->op != ENG_OP_READ && p->repl && !repl_may_write(p->repl)) {
		finish(p, tag, -EROFS);
		return;
	}

	switch (rq->op) {
	case ENG_OP_READ:
		st_add(&p->st.reads, 1);
		st_add(&p->st.read_bytes, bytes);
		issue(p, tag);
		return;
	case ENG_OP_WRITE:
		st_add(&p->st.writes, 1);
		st_add(&p->st.write_bytes, bytes);
		if (rq->fua)
			st_add(&p->st.fua_writes, 1);
		break;
	case ENG_OP_DISCARD:
		st_add(&p->st.discards, 1);
		break;
	default:
		st_add(&p->st.write_zeroes, 1);
		break;
	}
	begin_write(p, tag, true);
}

static void on_eng_complete(struct eng_queue *eq, struct eng_req *rq, int res)
{
	local_done(eq->owner, rq->tag, res);
}

bool path_cqe(struct path *p, const struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;

	if (eng_ud_is_engine(ud)) {
		p->eq.ops->cqe(&p->eq, cqe);
		return true;
	}
	if (eng_ud_kind(ud) != PATH_UD_KIND_WAKE)
		return false;
	if (cqe->res != -ECANCELED)
		arm_wake(p);
	eng_reap(&p->eq);
	if (p->repl)
		reap_peer(p);
	retry_parked(p);
	return true;
}

void path_flush(struct path *p)
{
	if (p->eq.ops->flush)
		p->eq.ops->flush(&p->eq);
}

unsigned int path_busy(const struct path *p)
{
	return p->nr_busy;
}

void path_kick(struct path *p)
{
	uint64_t one = 1;

	if (write(p->wake_fd, &one, sizeof(one)) != sizeof(one))
		log_warn("%s: cannot wake the thread: %s", p->p.name,
			 strerror(errno));
}

static void kick_cb(void *arg)
{
	path_kick(arg);
}

int path_start(struct path *p, struct io_uring *ring, int backing_fd_index,
	       bool bufs_registered)
{
	int ret;

	p->ring = ring;
	p->eq.ops = p->p.eng;
	p->eq.ring = ring;
	p->eq.fd = p->p.backing_fd;
	p->eq.fd_index = backing_fd_index;
	p->eq.bufs_registered = bufs_registered;
	p->eq.is_bdev = p->p.backing_is_bdev;
	p->eq.depth = p->p.depth;
	p->eq.reqs = p->reqs;
	p->eq.wake_fd = p->wake_fd;
	p->eq.helper = p->p.helper;
	p->eq.complete = on_eng_complete;
	p->eq.owner = p;
	ret = p->eq.ops->init(&p->eq);
	if (ret) {
		log_err("%s: %s engine: %s", p->p.name, p->eq.ops->name,
			strerror(-ret));
		return ret;
	}
	p->eq_ok = true;
	arm_wake(p);
	return 0;
}

void path_stop(struct path *p)
{
	if (p->eq_ok)
		p->eq.ops->exit(&p->eq);
	p->eq_ok = false;
}

struct path *path_create(const struct path_params *prm)
{
	struct path *p;
	int ret;

	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->p = *prm;
	if (!p->p.name)
		p->p.name = "path";
	p->wait_head = p->wait_tail = -1;
	p->peer_head = -1;
	p->wake_fd = -1;
	p->repl = meta_repl(prm->meta);
	pthread_mutex_init(&p->peer_lock, NULL);
	p->ios = calloc(prm->depth, sizeof(*p->ios));
	p->reqs = calloc(prm->depth, sizeof(*p->reqs));
	if (!p->ios || !p->reqs) {
		ret = ENOMEM;
		goto out_free;
	}
	for (uint32_t t = 0; t < prm->depth; t++)
		p->ios[t].wait_next = -1;
	p->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (p->wake_fd < 0) {
		ret = errno;
		goto out_free;
	}
	ret = -eng_queue_setup(&p->eq);
	if (ret)
		goto out_close;
	p->eq_setup = true;
	meta_set_wake_fd(prm->meta, prm->id, p->wake_fd);
	if (p->repl)
		repl_set_waker(p->repl, prm->id, kick_cb, p);
	return p;

out_close:
	close(p->wake_fd);
out_free:
	pthread_mutex_destroy(&p->peer_lock);
	free(p->ios);
	free(p->reqs);
	free(p);
	errno = ret;
	return NULL;
}

void path_destroy(struct path *p)
{
	if (!p)
		return;
	path_stop(p);
	if (p->eq_setup)
		eng_queue_teardown(&p->eq);
	close(p->wake_fd);
	pthread_mutex_destroy(&p->peer_lock);
	free(p->ios);
	free(p->reqs);
	free(p);
}

void path_get_stats(const struct path *p, struct path_stats *st)
{
	const uint64_t *src = (const uint64_t *)&p->st;
	uint64_t *dst = (uint64_t *)st;

	for (size_t i = 0; i < sizeof(*st) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}
