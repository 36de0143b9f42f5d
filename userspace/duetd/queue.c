// SPDX-License-Identifier: MIT
/*
 * A ublk queue thread: ublk commands and backing I/O on one io_uring.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
};

enum io_state {
	IO_CMD = 0,	/* a command is with the kernel, waiting for a request */
	IO_SERVING,	/* the request is ours: in the data path */
	IO_DEAD,	/* aborted: the device is going away */
};

struct q_io {
	void *buf;
	uint32_t len;		/* READ/WRITE: bytes, the result on success */
	uint8_t state;		/* enum io_state */
	uint8_t op;		/* enum eng_op */
};

struct queue {
	struct queue_params p;
	pthread_t thread;
	char name[24];

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
	struct path *path;

	unsigned int nr_cmds;	/* commands with the kernel */

	uint64_t loops;		/* io_uring_enter calls of the loop */
	uint64_t cqes;		/* completions they reaped */
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

/* path complete(): answer the kernel and take the tag's next request. */
static void on_path_done(void *owner, unsigned int tag, int res)
{
	struct queue *q = owner;
	struct q_io *io = &q->ios[tag];
	int32_t result = res;

	/* the block layer wants the byte count of a transfer */
	if (!res && (io->op == ENG_OP_READ || io->op == ENG_OP_WRITE))
		result = (int32_t)io->len;
	queue_cmd(q, tag, false, result);
}

static void serve(struct queue *q, unsigned int tag)
{
	const struct ublksrv_io_desc *iod = &q->descs[tag];
	struct q_io *io = &q->ios[tag];
	struct path_req r = {
		.sector = iod->start_sector,
		.nr_sectors = iod->nr_sectors,
		.buf = io->buf,
	};

	io->state = IO_SERVING;
	switch (ublksrv_get_op(iod)) {
	case UBLK_IO_OP_READ:
		r.op = ENG_OP_READ;
		break;
	case UBLK_IO_OP_WRITE:
		r.op = ENG_OP_WRITE;
		/* UBLK_IO_F_* are bit positions within op_flags itself */
		r.fua = iod->op_flags & UBLK_IO_F_FUA;
		break;
	case UBLK_IO_OP_FLUSH:
		r.op = ENG_OP_FLUSH;
		r.nr_sectors = 0;
		break;
	case UBLK_IO_OP_DISCARD:
		r.op = ENG_OP_DISCARD;
		break;
	case UBLK_IO_OP_WRITE_ZEROES:
		r.op = ENG_OP_WRITE_ZEROES;
		break;
	default:
		r.op = 0xff;	/* the path answers -EOPNOTSUPP */
		break;
	}
	io->op = r.op;
	io->len = (uint32_t)((uint64_t)r.nr_sectors << SECTOR_SHIFT);
	path_submit(q->path, tag, &r);
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

	if (path_cqe(q->path, cqe))
		return;
	if (eng_ud_kind(ud) == KIND_CMD && eng_ud_tag(ud) < q->p.depth)
		on_cmd(q, eng_ud_tag(ud), cqe->res);
}

static int setup(struct queue *q)
{
	struct io_uring_params prm;
	long page = sysconf(_SC_PAGESIZE);
	unsigned int entries = 8;
	bool bufs_registered = false;
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
		bufs_registered = !ret;
		if (ret)
			log_info("queue %u: io_uring buffer registration: %s; using plain buffers",
				 q->p.id, strerror(-ret));
	}

	ret = path_start(q->path, &q->ring, q->files_registered ? 1 : -1,
			 bufs_registered);
	if (ret)
		return ret;
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
	       (q->nr_cmds || path_busy(q->path))) {
		struct io_uring_cqe *cqe;
		unsigned int head, n = 0;
		int ret;

		path_flush(q->path);
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
		st_add(&q->loops, 1);
		st_add(&q->cqes, n);
	}
	log_dbg(LOG_CAT_UBLK, "queue %u: thread ends (%u commands, %u requests left)",
		q->p.id, q->nr_cmds, path_busy(q->path));
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
	path_stop(q->path);
	if (q->bufs)
		munmap(q->bufs, q->bufs_len);
	if (q->descs)
		munmap(q->descs, q->descs_len);
	q->ring_ok = false;
	q->bufs = NULL;
	q->descs = NULL;
}

static void *queue_main(void *arg)
{
	struct queue *q = arg;
	char name[16];
	int ret;

	snprintf(name, sizeof(name), "duet-q%u", (unsigned int)q->p.id);
	pthread_setname_np(pthread_self(), name);
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
	struct path_params pp = {
		.id = p->id,
		.depth = p->depth,
		.buf_bytes = p->buf_bytes,
		.dev_sectors = p->dev_sectors,
		.eng = p->eng,
		.backing_fd = p->backing_fd,
		.backing_is_bdev = p->backing_is_bdev,
		.helper = p->helper,
		.meta = p->meta,
		.shared = &p->shared->path,
		.complete = on_path_done,
	};
	struct queue *q;
	int ret;

	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->p = *p;
	snprintf(q->name, sizeof(q->name), "queue %u", p->id);
	q->ios = calloc(p->depth, sizeof(*q->ios));
	if (!q->ios) {
		ret = ENOMEM;
		goto out_free;
	}
	pp.owner = q;
	pp.name = q->name;
	q->path = path_create(&pp);
	if (!q->path) {
		ret = errno;
		goto out_free;
	}
	pthread_mutex_init(&q->ready_lock, NULL);
	pthread_cond_init(&q->ready_cond, NULL);
	ret = pthread_create(&q->thread, NULL, queue_main, q);
	if (ret)
		goto out_destroy;
	return q;

out_destroy:
	pthread_cond_destroy(&q->ready_cond);
	pthread_mutex_destroy(&q->ready_lock);
	path_destroy(q->path);
out_free:
	free(q->ios);
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
	__atomic_store_n(&q->abort, 1, __ATOMIC_RELEASE);
	path_kick(q->path);
}

void queue_destroy(struct queue *q)
{
	if (!q)
		return;
	pthread_join(q->thread, NULL);
	pthread_cond_destroy(&q->ready_cond);
	pthread_mutex_destroy(&q->ready_lock);
	path_destroy(q->path);
	free(q->ios);
	free(q);
}

void queue_get_stats(const struct queue *q, struct queue_stats *st)
{
	struct path_stats ps;

	path_get_stats(q->path, &ps);
	st->reads = ps.reads;
	st->writes = ps.writes;
	st->read_bytes = ps.read_bytes;
	st->write_bytes = ps.write_bytes;
	st->flushes = ps.flushes;
	st->flushes_elided = ps.flushes_elided;
	st->fua_writes = ps.fua_writes;
	st->discards = ps.discards;
	st->write_zeroes = ps.write_zeroes;
	st->errors = ps.errors;
	st->al_waits = ps.al_waits;
	st->loops = __atomic_load_n(&q->loops, __ATOMIC_RELAXED);
	st->cqes = __atomic_load_n(&q->cqes, __ATOMIC_RELAXED);
}
