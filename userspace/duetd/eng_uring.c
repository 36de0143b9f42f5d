// SPDX-License-Identifier: MIT
/*
 * The io_uring engine: backing I/O as SQEs on the queue's own ring, next to
 * the ublk commands, so one io_uring_enter submits both and one wait reaps
 * both.
 */
#include <errno.h>
#include <linux/falloc.h>
#include <string.h>

#include "eng.h"
#include "log.h"

enum { U_KIND_IO = 1 };

static int u_init(struct eng_queue *eq)
{
	(void)eq;
	return 0;
}

static void u_exit(struct eng_queue *eq)
{
	(void)eq;
}

static int u_prep(struct eng_queue *eq, struct eng_req *rq)
{
	int fd = eq->fd_index >= 0 ? eq->fd_index : eq->fd;
	struct io_uring_sqe *sqe;
	void *buf = (char *)rq->buf + rq->done;
	unsigned int len = rq->len - rq->done;
	uint64_t off = rq->off + rq->done;
	int mode;

	/* the block-device ioctls have no asynchronous form here */
	if (eq->is_bdev &&
	    (rq->op == ENG_OP_DISCARD || rq->op == ENG_OP_WRITE_ZEROES)) {
		eng_defer(eq, rq);
		return 0;
	}
	if (rq->op == ENG_OP_FLUSH && (eq->caps & ENG_NO_ASYNC_SYNC)) {
		eng_defer(eq, rq);
		return 0;
	}

	sqe = eng_get_sqe(eq->ring);
	if (!sqe)
		return -EAGAIN;
	switch (rq->op) {
	case ENG_OP_READ:
		if (eq->bufs_registered)
			io_uring_prep_read_fixed(sqe, fd, buf, len, off, rq->tag);
		else
			io_uring_prep_read(sqe, fd, buf, len, off);
		break;
	case ENG_OP_WRITE:
		if (eq->bufs_registered)
			io_uring_prep_write_fixed(sqe, fd, buf, len, off,
						  rq->tag);
		else
			io_uring_prep_write(sqe, fd, buf, len, off);
		if (rq->fua)
			sqe->rw_flags = RWF_DSYNC;
		break;
	case ENG_OP_FLUSH:
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		break;
	case ENG_OP_DISCARD:
		io_uring_prep_fallocate(sqe, fd,
					FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					(off_t)rq->off, rq->len);
		break;
	case ENG_OP_WRITE_ZEROES:
		mode = eq->caps & ENG_NO_ZERO_RANGE ?
			       FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE :
			       FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
		io_uring_prep_fallocate(sqe, fd, mode, (off_t)rq->off, rq->len);
		break;
	default:
		/* the SQE is ours already: make it a harmless no-op */
		io_uring_prep_nop(sqe);
		sqe->user_data = 0;
		return -EOPNOTSUPP;
	}
	if (eq->fd_index >= 0)
		sqe->flags |= IOSQE_FIXED_FILE;
	sqe->user_data = eng_ud(true, U_KIND_IO, rq->tag);
	return 0;
}

static int u_submit(struct eng_queue *eq, struct eng_req *rq)
{
	return u_prep(eq, rq);
}

static void u_resubmit(struct eng_queue *eq, struct eng_req *rq)
{
	int ret = u_prep(eq, rq);

	if (ret)
		eq->complete(eq, rq, ret);
}

static void u_cqe(struct eng_queue *eq, const struct io_uring_cqe *cqe)
{
	unsigned int tag = eng_ud_tag(cqe->user_data);
	struct eng_req *rq;
	int res = cqe->res, ret;

	if (tag >= eq->depth)
		return;
	rq = &eq->reqs[tag];
	switch (rq->op) {
	case ENG_OP_READ:
	case ENG_OP_WRITE:
		ret = eng_rw_advance(rq, res);
		if (ret == 1) {
			log_dbg(LOG_CAT_IO, "uring: short %s at %llu: %d of %u, resubmitting",
				rq->op == ENG_OP_READ ? "read" : "write",
				(unsigned long long)rq->off, res, rq->len);
			u_resubmit(eq, rq);
			return;
		}
		eq->complete(eq, rq, ret);
		return;
	case ENG_OP_FLUSH:
		if (res == -EINVAL || res == -EOPNOTSUPP) {
			log_notice("uring: asynchronous fdatasync refused (%s); flushing on the helper thread",
				   strerror(-res));
			eq->caps |= ENG_NO_ASYNC_SYNC;
			eng_defer(eq, rq);
			return;
		}
		break;
	case ENG_OP_WRITE_ZEROES:
		if (res == -EOPNOTSUPP && !(eq->caps & ENG_NO_ZERO_RANGE)) {
			log_info("uring: no FALLOC_FL_ZERO_RANGE on the backing file; punching holes instead");
			eq->caps |= ENG_NO_ZERO_RANGE;
			u_resubmit(eq, rq);
			return;
		}
		break;
	}
	eq->complete(eq, rq, res < 0 ? res : 0);
}

const struct eng_ops eng_uring_ops = {
	.name = "io_uring",
	.init = u_init,
	.exit = u_exit,
	.submit = u_submit,
	.cqe = u_cqe,
};
