// SPDX-License-Identifier: MIT
/*
 * The libaio engine. Requests become iocbs, batched into one io_submit per
 * loop iteration (the queue calls ->flush before it waits). Every iocb
 * signals the context's eventfd; the queue's ring keeps a read of that
 * eventfd outstanding, so aio completions wake the same loop as the ublk
 * commands. Operations aio cannot express (fallocate, the block-device
 * ioctls) run on the helper thread.
 */
#include <errno.h>
#include <libaio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "eng.h"
#include "log.h"

enum { A_KIND_EFD = 1 };
/* rq->stage of a write sent with RWF_DSYNC (a refusal is retried without) */
#define A_STAGE_DSYNC 1

struct aio_q {
	io_context_t ctx;
	int efd;
	uint64_t efd_val;
	struct iocb *iocbs;	/* one per tag: a request has one at a time */
	struct iocb **pending;	/* prepared, not yet io_submit()ed */
	unsigned int nr_pending;
	struct io_event *events;
};

static void arm_efd(struct eng_queue *eq)
{
	struct aio_q *a = eq->priv;
	struct io_uring_sqe *sqe = eng_get_sqe(eq->ring);

	if (!sqe) {
		log_err("aio: no SQE to watch the completion eventfd");
		return;
	}
	io_uring_prep_read(sqe, a->efd, &a->efd_val, sizeof(a->efd_val), 0);
	sqe->user_data = eng_ud(true, A_KIND_EFD, 0);
}

static int a_init(struct eng_queue *eq)
{
	struct aio_q *a;
	int ret;

	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->iocbs = calloc(eq->depth, sizeof(*a->iocbs));
	a->pending = calloc(eq->depth, sizeof(*a->pending));
	a->events = calloc(eq->depth, sizeof(*a->events));
	if (!a->iocbs || !a->pending || !a->events) {
		ret = -ENOMEM;
		goto out_free;
	}
	/* io_setup and friends return -errno themselves */
	ret = io_setup((int)eq->depth, &a->ctx);
	if (ret < 0)
		goto out_free;
	/* blocking: the ring polls it, a nonblocking fd would make the
	 * read complete with -EAGAIN instead */
	a->efd = eventfd(0, EFD_CLOEXEC);
	if (a->efd < 0) {
		ret = -errno;
		goto out_destroy;
	}
	eq->priv = a;
	arm_efd(eq);
	return 0;

out_destroy:
	io_destroy(a->ctx);
out_free:
	free(a->iocbs);
	free(a->pending);
	free(a->events);
	free(a);
	return ret;
}

static void a_exit(struct eng_queue *eq)
{
	struct aio_q *a = eq->priv;

	if (!a)
		return;
	io_destroy(a->ctx);
	close(a->efd);
	free(a->iocbs);
	free(a->pending);
	free(a->events);
	free(a);
	eq->priv = NULL;
}

/* Prepare @rq's next step: an iocb on the pending list, or the helper. */
static void a_prep(struct eng_queue *eq, struct eng_req *rq)
{
	struct aio_q *a = eq->priv;
	struct iocb *cb = &a->iocbs[rq->tag];
	void *buf = (char *)rq->buf + rq->done;
	size_t len = rq->len - rq->done;
	long long off = (long long)(rq->off + rq->done);
	bool sync = rq->op == ENG_OP_FLUSH ||
		    (rq->op == ENG_OP_WRITE && rq->stage == ENG_STAGE_SYNC);

	if (rq->op == ENG_OP_DISCARD || rq->op == ENG_OP_WRITE_ZEROES ||
	    (sync && (eq->caps & ENG_NO_ASYNC_SYNC))) {
		eng_defer(eq, rq);
		return;
	}
	if (sync) {
		io_prep_fdsync(cb, eq->fd);
	} else if (rq->op == ENG_OP_READ) {
		io_prep_pread(cb, eq->fd, buf, len, off);
	} else {
		io_prep_pwrite(cb, eq->fd, buf, len, off);
		rq->stage = 0;
		if (rq->fua && !(eq->caps & ENG_NO_RWF_DSYNC)) {
			cb->aio_rw_flags = RWF_DSYNC;
			rq->stage = A_STAGE_DSYNC;
		}
	}
	io_set_eventfd(cb, a->efd);
	cb->data = rq;
	a->pending[a->nr_pending++] = cb;
}

static int a_submit(struct eng_queue *eq, struct eng_req *rq)
{
	if (rq->op > ENG_OP_WRITE_ZEROES)
		return -EOPNOTSUPP;
	rq->stage = 0;
	a_prep(eq, rq);
	return 0;
}

static bool refused(int err)
{
	return err == -EINVAL || err == -EOPNOTSUPP;
}

/*
 * The kernel refused or failed one step of @rq with @err. Older kernels
 * and some filesystems reject RWF_DSYNC or IOCB_CMD_FDSYNC: fall back
 * (write, then sync; sync on the helper) and remember. Anything else is
 * the request's error.
 */
static void a_failed(struct eng_queue *eq, struct eng_req *rq, int err)
{
	bool sync = rq->op == ENG_OP_FLUSH ||
		    (rq->op == ENG_OP_WRITE && rq->stage == ENG_STAGE_SYNC);

	if (rq->op == ENG_OP_WRITE && rq->stage == A_STAGE_DSYNC &&
	    refused(err)) {
		log_notice("aio: RWF_DSYNC refused (%s); FUA writes become write + fdatasync",
			   strerror(-err));
		eq->caps |= ENG_NO_RWF_DSYNC;
		a_prep(eq, rq);
		return;
	}
	if (sync && refused(err)) {
		log_notice("aio: IOCB_CMD_FDSYNC refused (%s); flushing on the helper thread",
			   strerror(-err));
		eq->caps |= ENG_NO_ASYNC_SYNC;
		eng_defer(eq, rq);
		return;
	}
	eq->complete(eq, rq, err);
}

static void a_flush(struct eng_queue *eq)
{
	struct aio_q *a = eq->priv;

	while (a->nr_pending) {
		int n = io_submit(a->ctx, a->nr_pending, a->pending);
		struct eng_req *rq;

		if (n > 0) {
			a->nr_pending -= (unsigned int)n;
			memmove(a->pending, a->pending + n,
				a->nr_pending * sizeof(*a->pending));
			continue;
		}
		if (n == 0 || n == -EAGAIN || n == -EINTR)
			return;	/* try again next iteration */
		/* the first iocb was refused: it alone fails */
		rq = a->pending[0]->data;
		a->nr_pending--;
		memmove(a->pending, a->pending + 1,
			a->nr_pending * sizeof(*a->pending));
		a_failed(eq, rq, n);
	}
}

static void a_done(struct eng_queue *eq, struct eng_req *rq, long res)
{
	int r = res < 0 ? (int)res : (res > INT32_MAX ? -EIO : (int)res);
	bool sync = rq->op == ENG_OP_FLUSH ||
		    (rq->op == ENG_OP_WRITE && rq->stage == ENG_STAGE_SYNC);
	int ret;

	if (r < 0) {
		a_failed(eq, rq, r);
		return;
	}
	if (sync) {
		eq->complete(eq, rq, 0);
		return;
	}
	ret = eng_rw_advance(rq, r);
	if (ret == 1) {
		log_dbg(LOG_CAT_IO, "aio: short transfer at %llu: %d of %u, resubmitting",
			(unsigned long long)rq->off, r, rq->len);
		a_prep(eq, rq);
		return;
	}
	if (!ret && rq->op == ENG_OP_WRITE && rq->fua &&
	    rq->stage != A_STAGE_DSYNC) {
		rq->stage = ENG_STAGE_SYNC;
		a_prep(eq, rq);
		return;
	}
	eq->complete(eq, rq, ret);
}

static void a_cqe(struct eng_queue *eq, const struct io_uring_cqe *cqe)
{
	struct aio_q *a = eq->priv;
	struct timespec zero = { 0, 0 };
	int n;

	if (eng_ud_kind(cqe->user_data) != A_KIND_EFD)
		return;
	if (cqe->res == -ECANCELED)
		return;
	if (cqe->res < 0)
		log_warn("aio: reading the completion eventfd: %s",
			 strerror(-cqe->res));
	arm_efd(eq);
	do {
		n = io_getevents(a->ctx, 0, (long)eq->depth, a->events, &zero);
		for (int i = 0; i < n; i++)
			a_done(eq, a->events[i].data, (long)a->events[i].res);
	} while (n == (int)eq->depth);
	if (n < 0 && n != -EINTR)
		log_err("aio: io_getevents: %s", strerror(-n));
}

const struct eng_ops eng_aio_ops = {
	.name = "libaio",
	.init = a_init,
	.exit = a_exit,
	.submit = a_submit,
	.flush = a_flush,
	.cqe = a_cqe,
};
