// SPDX-License-Identifier: MIT
/*
 * What the engines share: opening the backing device, the helper thread
 * for blocking operations, and the bookkeeping of short transfers.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "eng.h"
#include "eng_fault.h"
#include "log.h"

struct eng_helper {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct eng_req *head;
	struct eng_req *tail;
	bool stop;
};

const struct eng_ops *eng_find(enum cfg_engine e)
{
	/* eng_fault_wrap: the test-only fault injection, when enabled */
	switch (e) {
	case CFG_ENGINE_URING:
		return eng_fault_wrap(&eng_uring_ops);
	case CFG_ENGINE_LIBAIO:
		return eng_fault_wrap(&eng_aio_ops);
	}
	return NULL;
}

int eng_open_backing(const char *path, int *fd_out, bool *is_bdev,
		     bool *direct)
{
	struct stat st;
	int flags = O_RDWR | O_CLOEXEC;
	int fd;

	if (stat(path, &st))
		return -errno;
	if (S_ISBLK(st.st_mode))
		/* Keep the backing device from being mounted under us. */
		flags |= O_EXCL;
	else if (!S_ISREG(st.st_mode))
		return -EINVAL;
	*is_bdev = S_ISBLK(st.st_mode);

	fd = open(path, flags | O_DIRECT);
	*direct = fd >= 0;
	if (fd < 0 && errno == EINVAL) {
		/* The filesystem has no O_DIRECT: go through the page cache;
		 * FLUSH and FUA still reach the disk through fdatasync. */
		fd = open(path, flags);
		if (fd >= 0)
			log_warn("%s: no O_DIRECT on this filesystem, using the page cache",
				 path);
	}
	if (fd < 0)
		return -errno;
	*fd_out = fd;
	return 0;
}

struct io_uring_sqe *eng_get_sqe(struct io_uring *ring)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (!sqe && io_uring_submit(ring) >= 0)
		sqe = io_uring_get_sqe(ring);
	return sqe;
}

int eng_rw_advance(struct eng_req *rq, int res)
{
	if (res < 0)
		return res;
	if (res == 0)
		return -EIO;
	if ((uint32_t)res > rq->len - rq->done)
		return -EIO;
	rq->done += (uint32_t)res;
	return rq->done < rq->len;
}

static int sync_data(int fd)
{
	while (fdatasync(fd)) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int zero_or_discard_file(struct eng_queue *eq, struct eng_req *rq)
{
	int mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;

	if (rq->op == ENG_OP_WRITE_ZEROES && !(eq->caps & ENG_NO_ZERO_RANGE)) {
		if (!fallocate(eq->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
			       (off_t)rq->off, rq->len))
			return 0;
		if (errno != EOPNOTSUPP)
			return -errno;
		/* Punching a hole reads back as zeroes too. */
	}
	if (fallocate(eq->fd, mode, (off_t)rq->off, rq->len))
		return -errno;
	return 0;
}

static int rw_sync(struct eng_queue *eq, struct eng_req *rq)
{
	while (rq->done < rq->len) {
		struct iovec iov = {
			.iov_base = (char *)rq->buf + rq->done,
			.iov_len = rq->len - rq->done,
		};
		off_t off = (off_t)(rq->off + rq->done);
		ssize_t n;

		if (rq->op == ENG_OP_READ)
			n = preadv2(eq->fd, &iov, 1, off, 0);
		else
			n = pwritev2(eq->fd, &iov, 1, off, 0);
		int ret;

		if (n < 0 && errno == EINTR)
			continue;
		ret = eng_rw_advance(rq, n < 0 ? -errno : (int)n);
		if (ret < 0)
			return ret;
	}
	if (rq->op == ENG_OP_WRITE && rq->fua)
		return sync_data(eq->fd);
	return 0;
}

int eng_sync_op(struct eng_queue *eq, struct eng_req *rq)
{
	uint64_t range[2] = { rq->off, rq->len };

	switch (rq->op) {
	case ENG_OP_READ:
		return rw_sync(eq, rq);
	case ENG_OP_WRITE:
		if (rq->stage == ENG_STAGE_SYNC)
			return sync_data(eq->fd);
		return rw_sync(eq, rq);
	case ENG_OP_FLUSH:
		return sync_data(eq->fd);
	case ENG_OP_DISCARD:
		if (!eq->is_bdev)
			return zero_or_discard_file(eq, rq);
		return ioctl(eq->fd, BLKDISCARD, range) ? -errno : 0;
	case ENG_OP_WRITE_ZEROES:
		if (!eq->is_bdev)
			return zero_or_discard_file(eq, rq);
		return ioctl(eq->fd, BLKZEROOUT, range) ? -errno : 0;
	}
	return -EOPNOTSUPP;
}

static void helper_done(struct eng_queue *eq, struct eng_req *rq)
{
	uint64_t one = 1;

	rq->next = NULL;
	pthread_mutex_lock(&eq->done_lock);
	if (eq->done_tail)
		eq->done_tail->next = rq;
	else
		eq->done_head = rq;
	eq->done_tail = rq;
	/*
	 * The wake-up goes under the lock too: once the owner has reaped
	 * this request (eng_reap takes the lock after us), we touch @eq no
	 * more, so the owner may close its eventfd and free it. Written
	 * after the unlock, it could reach a closed descriptor, or one
	 * reopened for something else. The counter cannot overflow in
	 * practice; a failed write would only delay the wake-up to the next
	 * one.
	 */
	if (write(eq->wake_fd, &one, sizeof(one)) != sizeof(one))
		log_warn("engine helper: waking queue: %s", strerror(errno));
	pthread_mutex_unlock(&eq->done_lock);
}

static void *helper_main(void *arg)
{
	struct eng_helper *h = arg;

	pthread_setname_np(pthread_self(), "duet-helper");
	pthread_mutex_lock(&h->lock);
	for (;;) {
		struct eng_req *rq;

		while (!h->head && !h->stop)
			pthread_cond_wait(&h->cond, &h->lock);
		rq = h->head;
		if (!rq)
			break;	/* stopping, nothing left */
		h->head = rq->next;
		if (!h->head)
			h->tail = NULL;
		pthread_mutex_unlock(&h->lock);

		rq->res = eng_sync_op(rq->hq, rq);
		helper_done(rq->hq, rq);

		pthread_mutex_lock(&h->lock);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

struct eng_helper *eng_helper_start(void)
{
	struct eng_helper *h;
	int ret;

	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	ret = pthread_create(&h->thread, NULL, helper_main, h);
	if (ret) {
		pthread_cond_destroy(&h->cond);
		pthread_mutex_destroy(&h->lock);
		free(h);
		errno = ret;
		return NULL;
	}
	return h;
}

/* Runs what is queued, then ends the thread. */
void eng_helper_stop(struct eng_helper *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = true;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

void eng_defer(struct eng_queue *eq, struct eng_req *rq)
{
	struct eng_helper *h = eq->helper;

	rq->hq = eq;
	rq->next = NULL;
	pthread_mutex_lock(&h->lock);
	if (h->tail)
		h->tail->next = rq;
	else
		h->head = rq;
	h->tail = rq;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

void eng_reap(struct eng_queue *eq)
{
	struct eng_req *rq;

	pthread_mutex_lock(&eq->done_lock);
	rq = eq->done_head;
	eq->done_head = eq->done_tail = NULL;
	pthread_mutex_unlock(&eq->done_lock);

	while (rq) {
		struct eng_req *next = rq->next;

		rq->next = NULL;
		eq->complete(eq, rq, rq->res);
		rq = next;
	}
}

int eng_queue_setup(struct eng_queue *eq)
{
	eq->priv = NULL;
	eq->caps = 0;
	eq->done_head = eq->done_tail = NULL;
	return -pthread_mutex_init(&eq->done_lock, NULL);
}

void eng_queue_teardown(struct eng_queue *eq)
{
	pthread_mutex_destroy(&eq->done_lock);
}
