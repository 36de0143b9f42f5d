// SPDX-License-Identifier: MIT
/*
 * A ublk queue thread: ublk commands and backing I/O on one io_uring.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "queue.h"
#include "ublk_abi.h"
#include "util.h"

/* user_data kinds of the queue's own SQEs (engine bit clear). */
enum {
	KIND_CMD = 1,	/* FETCH_REQ / COMMIT_AND_FETCH_REQ */
	KIND_WAKE,	/* read of the wake eventfd */
};

enum io_state {
	IO_CMD = 0,	/* a command is with the kernel, waiting for a request */
	IO_SERVING,	/* the request is ours: parked or in the engine */
	IO_DEAD,	/* aborted: the device is going away */
};

enum io_wait {
	WAIT_NONE = 0,
	WAIT_SEQ,	/* AL transaction io->seq must become durable */
	WAIT_BUSY,	/* al_begin_io said -EBUSY: ask again */
};

struct q_io {
	void *buf;
	uint64_t sector;
	uint32_t nr_sectors;
	uint64_t seq;		/* AL transaction; FLUSH: the dirty mark */
	int32_t wait_next;	/* parked list, -1 ends it */
	uint8_t state;		/* enum io_state */
	uint8_t wait;		/* enum io_wait */
	bool al_held;		/* meta_begin_io succeeded: end_io owed */
};

struct queue {
	struct queue_params p;
	pthread_t thread;

	pthread_mutex_t ready_lock;
	pthread_cond_t ready_cond;
	bool ready_done;
	int ready_err;
	int abort;		/* queue_abort(): atomic */

	struct io_uring ring;
	bool ring_ok;
	bool files_registered;
	struct ublksrv_io_desc *descs;
	size_t descs_len;
	uint8_t *bufs;
	size_t bufs_len;
	struct q_io *ios;
	struct eng_req *reqs;
	struct eng_queue eq;
	bool eq_ok;

	int wake_fd;
	uint64_t wake_val;
	int32_t wait_head;
	int32_t wait_tail;
	unsigned int nr_cmds;	/* commands with the kernel */
	unsigned int nr_busy;	/* requests being served */
	unsigned int nr_logged;	/* I/O errors logged (rate limit) */

	struct queue_stats st;
};

static inline void st_add(uint64_t *c, uint64_t v)
{
	/* single writer: a plain read is ours, the store is for readers */
	__atomic_store_n(c, *c + v, __ATOMIC_RELAXED);
}

static struct io_uring_sqe *get_sqe(struct queue *q)
{
	struct io_uring_sqe *sqe = eng_get_sqe(&q->ring);

	if (sqe)
		memset(sqe, 0, sizeof(*sqe));
	return sqe;
}

/* FETCH_REQ (@fetch) or COMMIT_AND_FETCH_REQ with @result for @tag. */
static void queue_cmd(struct queue *q, unsigned int tag, bool fetch,
		      int32_t result)
{
	struct q_io *io = &q->ios[tag];
	struct ublksrv_io_cmd *cmd;
	struct io_uring_sqe *sqe;

	sqe = get_sqe(q);
	if (!sqe) {
		log_err("queue %u: no SQE for tag %u: the ring is broken",
			q->p.id, tag);
		io->state = IO_DEAD;
		return;
	}
	cmd = (struct ublksrv_io_cmd *)sqe->cmd;
	cmd->q_id = (uint16_t)q->p.id;
	cmd->tag = (uint16_t)tag;
	cmd->result = result;
	cmd->addr = (uint64_t)(uintptr_t)io->buf;
	sqe->opcode = IORING_OP_URING_CMD;
	if (q->files_registered) {
		sqe->fd = 0;
		sqe->flags = IOSQE_FIXED_FILE;
	} else {
		sqe->fd = q->p.cdev_fd;
	}
	if (q->p.ioctl_encode)
		sqe->cmd_op = fetch ? UBLK_U_IO_FETCH_REQ :
				      UBLK_U_IO_COMMIT_AND_FETCH_REQ;
	else
		sqe->cmd_op = fetch ? UBLK_IO_FETCH_REQ :
				      UBLK_IO_COMMIT_AND_FETCH_REQ;
	sqe->user_data = eng_ud(false, KIND_CMD, tag);
	io->state = IO_CMD;
	q->nr_cmds++;
}

static void arm_wake(struct queue *q)
{
	struct io_uring_sqe *sqe = get_sqe(q);

	if (!sqe) {
		log_err("queue %u: no SQE for the wake eventfd", q->p.id);
		return;
	}
	io_uring_prep_read(sqe, q->wake_fd, &q->wake_val, sizeof(q->wake_val),
			   0);
	sqe->user_data = eng_ud(false, KIND_WAKE, 0);
}

/* An fdatasync that began when dirty was @mark succeeded. */
static void flush_done(struct queue_shared *sh, uint64_t mark)
{
	uint64_t cur = __atomic_load_n(&sh->flushed, __ATOMIC_ACQUIRE);

	while (cur < mark &&
	       !__atomic_compare_exchange_n(&sh->flushed, &cur, mark, false,
					    __ATOMIC_SEQ_CST,
					    __ATOMIC_ACQUIRE))
		;
}

/* The request on @tag is done: release the AL, answer the kernel. */
static void finish(struct queue *q, unsigned int tag, int res)
{
	struct q_io *io = &q->ios[tag];
	struct eng_req *rq = &q->reqs[tag];
	int32_t result = res;

	if (io->al_held) {
		meta_end_io(q->p.meta, q->p.id, io->sector, io->nr_sectors);
		io->al_held = false;
	}
	/* Before the kernel hears of the completion: a FLUSH issued after
	 * it must see the change (a failed write may have changed data too). */
	if ((rq->op == ENG_OP_WRITE && (!rq->fua || res < 0)) ||
	    rq->op == ENG_OP_DISCARD || rq->op == ENG_OP_WRITE_ZEROES)
		__atomic_add_fetch(&q->p.shared->dirty, 1, __ATOMIC_SEQ_CST);
	if (rq->op == ENG_OP_FLUSH && !res)
		flush_done(q->p.shared, io->seq);
	if (res < 0) {
		st_add(&q->st.errors, 1);
		if (q->nr_logged < 20) {
			q->nr_logged++;
			log_warn("queue %u: op %u sector %llu+%u failed: %s",
				 q->p.id, rq->op,
				 (unsigned long long)io->sector,
				 io->nr_sectors, strerror(-res));
		}
	} else if (rq->op == ENG_OP_READ || rq->op == ENG_OP_WRITE) {
		/* the block layer wants the byte count of a transfer */
		result = (int32_t)rq->len;
	} else {
		result = 0;
	}
	io->wait = WAIT_NONE;
	q->nr_busy--;
	queue_cmd(q, tag, false, result);
}

static void issue(struct queue *q, unsigned int tag)
{
	int ret = q->eq.ops->submit(&q->eq, &q->reqs[tag]);

	if (ret)
		finish(q, tag, ret);
}

static void park(struct queue *q, unsigned int tag, uint8_t wait)
{
	struct q_io *io = &q->ios[tag];

	io->wait = wait;
	io->wait_next = -1;
	if (q->wait_tail >= 0)
		q->ios[q->wait_tail].wait_next = (int32_t)tag;
	else
		q->wait_head = (int32_t)tag;
	q->wait_tail = (int32_t)tag;
}

/* Enter the activity log; issue, park or fail. */
static void begin_write(struct queue *q, unsigned int tag, bool first)
{
	struct q_io *io = &q->ios[tag];
	int64_t n = meta_begin_io(q->p.meta, q->p.id, io->sector,
				  io->nr_sectors);

	if (n == 0) {
		io->al_held = true;
		issue(q, tag);
	} else if (n > 0) {
		io->al_held = true;
		io->seq = (uint64_t)n;
		park(q, tag, WAIT_SEQ);
	} else if (n == -EBUSY) {
		park(q, tag, WAIT_BUSY);
	} else {
		finish(q, tag, (int)n);
		return;
	}
	if (n && first)
		st_add(&q->st.al_waits, 1);
}

/* Woken: try every parked request again, in order. */
static void retry_parked(struct queue *q)
{
	int32_t i = q->wait_head;

	q->wait_head = q->wait_tail = -1;
	while (i >= 0) {
		struct q_io *io = &q->ios[i];
		int32_t next = io->wait_next;
		int r;

		if (io->wait == WAIT_BUSY) {
			begin_write(q, (unsigned int)i, false);
		} else {
			r = meta_seq_ready(q->p.meta, q->p.id, io->seq);
			if (r > 0) {
				io->wait = WAIT_NONE;
				issue(q, (unsigned int)i);
			} else if (r == 0) {
				park(q, (unsigned int)i, WAIT_SEQ);
			} else {
				finish(q, (unsigned int)i, r);
			}
		}
		i = next;
	}
}

static void serve(struct queue *q, unsigned int tag)
{
	const struct ublksrv_io_desc *iod = &q->descs[tag];
	struct q_io *io = &q->ios[tag];
	struct eng_req *rq = &q->reqs[tag];
	uint32_t op_flags = iod->op_flags;
	uint8_t op = ublksrv_get_op(iod);
	uint64_t bytes;

	io->state = IO_SERVING;
	io->wait = WAIT_NONE;
	io->al_held = false;
	io->sector = iod->start_sector;
	io->nr_sectors = iod->nr_sectors;
	q->nr_busy++;

	memset(rq, 0, sizeof(*rq));
	rq->tag = (uint16_t)tag;
	rq->buf = io->buf;
	switch (op) {
	case UBLK_IO_OP_READ:
		rq->op = ENG_OP_READ;
		break;
	case UBLK_IO_OP_WRITE:
		rq->op = ENG_OP_WRITE;
		/* UBLK_IO_F_* are bit positions within op_flags itself */
		rq->fua = op_flags & UBLK_IO_F_FUA;
		break;
	case UBLK_IO_OP_FLUSH:
		rq->op = ENG_OP_FLUSH;
		st_add(&q->st.flushes, 1);
		io->seq = __atomic_load_n(&q->p.shared->dirty, __ATOMIC_SEQ_CST);
		if (io->seq == __atomic_load_n(&q->p.shared->flushed,
					       __ATOMIC_SEQ_CST)) {
			/* nothing completed since the last fdatasync began
			 * that is not durable already */
			st_add(&q->st.flushes_elided, 1);
			finish(q, tag, 0);
			return;
		}
		issue(q, tag);
		return;
	case UBLK_IO_OP_DISCARD:
		rq->op = ENG_OP_DISCARD;
		break;
	case UBLK_IO_OP_WRITE_ZEROES:
		rq->op = ENG_OP_WRITE_ZEROES;
		break;
	default:
		rq->op = 0xff;
		finish(q, tag, -EOPNOTSUPP);
		return;
	}

	/* Never past the data area: the metadata lives behind it. */
	bytes = (uint64_t)io->nr_sectors << SECTOR_SHIFT;
	if (!io->nr_sectors || io->sector >= q->p.dev_sectors ||
	    io->nr_sectors > q->p.dev_sectors - io->sector ||
	    bytes > UINT32_MAX ||
	    (rq->op <= ENG_OP_WRITE && bytes > q->p.buf_bytes)) {
		finish(q, tag, -EIO);
		return;
	}
	rq->off = io->sector << SECTOR_SHIFT;
	rq->len = (uint32_t)bytes;

	switch (rq->op) {
	case ENG_OP_READ:
		st_add(&q->st.reads, 1);
		st_add(&q->st.read_bytes, bytes);
		issue(q, tag);
		return;
	case ENG_OP_WRITE:
		st_add(&q->st.writes, 1);
		st_add(&q->st.write_bytes, bytes);
		if (rq->fua)
			st_add(&q->st.fua_writes, 1);
		break;
	case ENG_OP_DISCARD:
		st_add(&q->st.discards, 1);
		break;
	default:
		st_add(&q->st.write_zeroes, 1);
		break;
	}
	begin_write(q, tag, true);
}

static void on_eng_complete(struct eng_queue *eq, struct eng_req *rq, int res)
{
	finish(eq->owner, rq->tag, res);
}

static void on_cmd(struct queue *q, unsigned int tag, int res)
{
	struct q_io *io = &q->ios[tag];

	if (io->state != IO_CMD) {
		log_err("queue %u: completion for tag %u, which has no command",
			q->p.id, tag);
		return;
	}
	q->nr_cmds--;
	if (res == UBLK_IO_RES_OK) {
		serve(q, tag);
		return;
	}
	io->state = IO_DEAD;
	if (res != UBLK_IO_RES_ABORT)
		log_err("queue %u: ublk command for tag %u failed: %s",
			q->p.id, tag, strerror(-res));
}

static void on_cqe(struct queue *q, const struct io_uring_cqe *cqe)
{
	uint64_t ud = cqe->user_data;

	if (eng_ud_is_engine(ud)) {
		q->eq.ops->cqe(&q->eq, cqe);
		return;
	}
	switch (eng_ud_kind(ud)) {
	case KIND_CMD:
		if (eng_ud_tag(ud) < q->p.depth)
			on_cmd(q, eng_ud_tag(ud), cqe->res);
		break;
	case KIND_WAKE:
		if (cqe->res != -ECANCELED)
			arm_wake(q);
		eng_reap(&q->eq);
		retry_parked(q);
		break;
	}
}

static int setup(struct queue *q)
{
	struct io_uring_params prm;
	long page = sysconf(_SC_PAGESIZE);
	unsigned int entries = 8;
	struct iovec *iov;
	int fds[2], ret;

	while (entries < 2 * q->p.depth + 8)
		entries <<= 1;
	memset(&prm, 0, sizeof(prm));
	/* Task work runs when we wait, on this thread, which is the only
	 * one submitting: the cheapest completion path for uring_cmd. */
	prm.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
		    IORING_SETUP_DEFER_TASKRUN;
	ret = io_uring_queue_init_params(entries, &q->ring, &prm);
	if (ret == -EINVAL) {
		memset(&prm, 0, sizeof(prm));
		ret = io_uring_queue_init_params(entries, &q->ring, &prm);
	}
	if (ret < 0) {
		log_err("queue %u: io_uring setup: %s", q->p.id,
			strerror(-ret));
		return ret;
	}
	q->ring_ok = true;
	/* spares io_uring_enter the fd lookup; optional (5.18+) */
	if (io_uring_register_ring_fd(&q->ring) < 0)
		log_dbg(LOG_CAT_UBLK, "queue %u: no registered ring fd",
			q->p.id);

	q->descs_len = ROUND_UP(q->p.depth * sizeof(struct ublksrv_io_desc),
				(size_t)page);
	q->descs = mmap(NULL, q->descs_len, PROT_READ,
			MAP_SHARED | MAP_POPULATE, q->p.cdev_fd,
			(off_t)ublk_io_desc_offset(q->p.id, (unsigned int)page));
	if (q->descs == MAP_FAILED) {
		ret = -errno;
		q->descs = NULL;
		log_err("queue %u: mapping the I/O descriptors: %s", q->p.id,
			strerror(-ret));
		return ret;
	}
	q->bufs_len = (size_t)q->p.depth * q->p.buf_bytes;
	q->bufs = mmap(NULL, q->bufs_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (q->bufs == MAP_FAILED) {
		ret = -errno;
		q->bufs = NULL;
		log_err("queue %u: %zu bytes of I/O buffers: %s", q->p.id,
			q->bufs_len, strerror(-ret));
		return ret;
	}
	for (uint32_t t = 0; t < q->p.depth; t++) {
		q->ios[t].buf = q->bufs + (size_t)t * q->p.buf_bytes;
		q->ios[t].wait_next = -1;
		q->ios[t].state = IO_DEAD;
	}

	/* Registered files spare a file-table lookup and refcount per SQE. */
	fds[0] = q->p.cdev_fd;
	fds[1] = q->p.backing_fd;
	ret = io_uring_register_files(&q->ring, fds, 2);
	q->files_registered = !ret;
	if (ret)
		log_info("queue %u: io_uring file registration: %s; using plain fds",
			 q->p.id, strerror(-ret));

	/* Fixed buffers spare pinning the pages of every O_DIRECT I/O. */
	if (q->p.eng == &eng_uring_ops) {
		iov = calloc(q->p.depth, sizeof(*iov));
		if (!iov)
			return -ENOMEM;
		for (uint32_t t = 0; t < q->p.depth; t++)
			iov[t] = (struct iovec){ q->ios[t].buf, q->p.buf_bytes };
		ret = io_uring_register_buffers(&q->ring, iov, q->p.depth);
		free(iov);
		q->eq.bufs_registered = !ret;
		if (ret)
			log_info("queue %u: io_uring buffer registration: %s; using plain buffers",
				 q->p.id, strerror(-ret));
	}

	q->eq.ops = q->p.eng;
	q->eq.ring = &q->ring;
	q->eq.fd = q->p.backing_fd;
	q->eq.fd_index = q->files_registered ? 1 : -1;
	q->eq.is_bdev = q->p.backing_is_bdev;
	q->eq.depth = q->p.depth;
	q->eq.reqs = q->reqs;
	q->eq.wake_fd = q->wake_fd;
	q->eq.helper = q->p.helper;
	q->eq.complete = on_eng_complete;
	q->eq.owner = q;
	ret = q->eq.ops->init(&q->eq);
	if (ret) {
		log_err("queue %u: %s engine: %s", q->p.id, q->eq.ops->name,
			strerror(-ret));
		return ret;
	}
	q->eq_ok = true;

	arm_wake(q);
	for (uint32_t t = 0; t < q->p.depth; t++)
		queue_cmd(q, t, true, -1);
	ret = io_uring_submit(&q->ring);
	if (ret < 0) {
		log_err("queue %u: submitting FETCH_REQ: %s", q->p.id,
			strerror(-ret));
		return ret;
	}
	return 0;
}

/*
 * A FETCH_REQ the driver refuses completes at once, during the submit; one
 * that is accepted stays with it. Look for the former now, before
 * START_DEV waits for every queue.
 */
static int check_fetches(struct queue *q)
{
	struct io_uring_cqe *cqe;
	unsigned int head, n = 0;
	int ret = 0;

	io_uring_for_each_cqe(&q->ring, head, cqe) {
		n++;
		if (eng_ud_is_engine(cqe->user_data) ||
		    eng_ud_kind(cqe->user_data) != KIND_CMD) {
			on_cqe(q, cqe);
			continue;
		}
		q->nr_cmds--;
		q->ios[eng_ud_tag(cqe->user_data)].state = IO_DEAD;
		if (!ret)
			ret = cqe->res < 0 ? cqe->res : -EPROTO;
	}
	io_uring_cq_advance(&q->ring, n);
	if (ret)
		log_err("queue %u: the driver refused FETCH_REQ: %s", q->p.id,
			strerror(-ret));
	return ret;
}

static void run(struct queue *q)
{
	while (!__atomic_load_n(&q->abort, __ATOMIC_ACQUIRE) &&
	       (q->nr_cmds || q->nr_busy)) {
		struct io_uring_cqe *cqe;
		unsigned int head, n = 0;
		int ret;

		if (q->eq.ops->flush)
			q->eq.ops->flush(&q->eq);
		ret = io_uring_submit_and_wait(&q->ring, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN &&
		    ret != -EBUSY && ret != -ETIME) {
			log_err("queue %u: io_uring_enter: %s", q->p.id,
				strerror(-ret));
			break;
		}
		io_uring_for_each_cqe(&q->ring, head, cqe) {
			on_cqe(q, cqe);
			n++;
		}
		io_uring_cq_advance(&q->ring, n);
		st_add(&q->st.loops, 1);
		st_add(&q->st.cqes, n);
	}
	log_dbg(LOG_CAT_UBLK, "queue %u: thread ends (%u commands, %u requests left)",
		q->p.id, q->nr_cmds, q->nr_busy);
}

static void ready(struct queue *q, int err)
{
	pthread_mutex_lock(&q->ready_lock);
	q->ready_done = true;
	q->ready_err = err;
	pthread_cond_broadcast(&q->ready_cond);
	pthread_mutex_unlock(&q->ready_lock);
}

static void teardown(struct queue *q)
{
	/* Closing the ring cancels what is still with the kernel. */
	if (q->ring_ok)
		io_uring_queue_exit(&q->ring);
	if (q->eq_ok)
		q->eq.ops->exit(&q->eq);
	if (q->bufs)
		munmap(q->bufs, q->bufs_len);
	if (q->descs)
		munmap(q->descs, q->descs_len);
	q->ring_ok = q->eq_ok = false;
	q->bufs = NULL;
	q->descs = NULL;
}

static void *queue_main(void *arg)
{
	struct queue *q = arg;
	int ret;

	ret = setup(q);
	if (!ret)
		ret = check_fetches(q);
	ready(q, ret);
	if (!ret)
		run(q);
	teardown(q);
	return NULL;
}

struct queue *queue_start(const struct queue_params *p)
{
	struct queue *q;
	int ret;

	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->p = *p;
	q->wait_head = q->wait_tail = -1;
	q->ios = calloc(p->depth, sizeof(*q->ios));
	q->reqs = calloc(p->depth, sizeof(*q->reqs));
	if (!q->ios || !q->reqs) {
		ret = ENOMEM;
		goto out_free;
	}
	q->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (q->wake_fd < 0) {
		ret = errno;
		goto out_free;
	}
	ret = -eng_queue_setup(&q->eq);
	if (ret)
		goto out_close;
	meta_set_wake_fd(p->meta, p->id, q->wake_fd);
	pthread_mutex_init(&q->ready_lock, NULL);
	pthread_cond_init(&q->ready_cond, NULL);
	ret = pthread_create(&q->thread, NULL, queue_main, q);
	if (ret)
		goto out_destroy;
	return q;

out_destroy:
	pthread_cond_destroy(&q->ready_cond);
	pthread_mutex_destroy(&q->ready_lock);
	eng_queue_teardown(&q->eq);
out_close:
	close(q->wake_fd);
out_free:
	free(q->ios);
	free(q->reqs);
	free(q);
	errno = ret;
	return NULL;
}

int queue_wait_ready(struct queue *q)
{
	int ret;

	pthread_mutex_lock(&q->ready_lock);
	while (!q->ready_done)
		pthread_cond_wait(&q->ready_cond, &q->ready_lock);
	ret = q->ready_err;
	pthread_mutex_unlock(&q->ready_lock);
	return ret;
}

void queue_abort(struct queue *q)
{
	uint64_t one = 1;

	__atomic_store_n(&q->abort, 1, __ATOMIC_RELEASE);
	if (write(q->wake_fd, &one, sizeof(one)) != sizeof(one))
		log_warn("queue %u: cannot wake the thread: %s", q->p.id,
			 strerror(errno));
}

void queue_destroy(struct queue *q)
{
	if (!q)
		return;
	pthread_join(q->thread, NULL);
	pthread_cond_destroy(&q->ready_cond);
	pthread_mutex_destroy(&q->ready_lock);
	eng_queue_teardown(&q->eq);
	close(q->wake_fd);
	free(q->ios);
	free(q->reqs);
	free(q);
}

void queue_get_stats(const struct queue *q, struct queue_stats *st)
{
	const uint64_t *src = (const uint64_t *)&q->st;
	uint64_t *dst = (uint64_t *)st;

	for (size_t i = 0; i < sizeof(*st) / sizeof(uint64_t); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}
