/* SPDX-License-Identifier: MIT */
/*
 * eng_ — backing I/O engines: how a queue thread reads and writes the local
 * disk. Two implementations behind one ops table:
 *
 *  - io_uring (default): every operation is an SQE on the queue's own ring,
 *    with the backing file registered and the request buffers registered as
 *    fixed buffers (no page pinning per I/O);
 *  - libaio, for hosts where io_uring is restricted to the ublk commands:
 *    iocbs batched into one io_submit per loop iteration; the aio context
 *    signals an eventfd that the queue's ring reads, so the same loop sees
 *    ublk commands and aio completions.
 *
 * Operations and their meaning for the block layer:
 *  READ, WRITE      pread/pwrite at the same byte offset, short transfers
 *                   resubmitted for the remainder;
 *  WRITE + fua      durable before completion (RWF_DSYNC);
 *  FLUSH            fdatasync;
 *  DISCARD          files: fallocate(PUNCH_HOLE|KEEP_SIZE); block devices:
 *                   BLKDISCARD;
 *  WRITE_ZEROES     files: fallocate(ZERO_RANGE|KEEP_SIZE), PUNCH_HOLE where
 *                   the filesystem has no ZERO_RANGE; block devices:
 *                   BLKZEROOUT.
 * What the kernel cannot do asynchronously (the ioctls, or an fdatasync
 * that the aio/uring path rejects) runs on a helper thread that hands the
 * result back through the queue's wake eventfd.
 *
 * Every completion is reported exactly once through eq->complete with 0 or
 * a negative errno; an error is never turned into success.
 */
#ifndef DUET_ENG_H
#define DUET_ENG_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"

/*
 * user_data of every SQE on a queue ring, so that one loop dispatches all
 * completions:
 *	bits  0..15  tag (request index in the queue)
 *	bits 16..23  kind: what the SQE was (owner-defined, or engine-defined
 *	             when bit 63 is set)
 *	bit  63      the completion belongs to the backing engine
 */
#define ENG_UD_ENGINE (1ULL << 63)

static inline uint64_t eng_ud(bool engine, unsigned int kind, unsigned int tag)
{
	return (engine ? ENG_UD_ENGINE : 0) | ((uint64_t)(kind & 0xff) << 16) |
	       (tag & 0xffff);
}

static inline unsigned int eng_ud_tag(uint64_t ud)
{
	return ud & 0xffff;
}

static inline unsigned int eng_ud_kind(uint64_t ud)
{
	return (ud >> 16) & 0xff;
}

static inline bool eng_ud_is_engine(uint64_t ud)
{
	return ud & ENG_UD_ENGINE;
}

enum eng_op {
	ENG_OP_READ = 0,
	ENG_OP_WRITE,
	ENG_OP_FLUSH,
	ENG_OP_DISCARD,
	ENG_OP_WRITE_ZEROES,
};

struct eng_req {
	uint8_t op;		/* enum eng_op */
	bool fua;		/* WRITE: durable before it completes */
	uint8_t stage;		/* engine-private progress */
	uint16_t tag;		/* request index; fixed buffer @tag is @buf */
	uint32_t len;		/* bytes */
	uint32_t done;		/* bytes transferred so far */
	uint64_t off;		/* byte offset on the backing device */
	void *buf;		/* READ/WRITE data, len bytes */
	int res;		/* helper result */
	struct eng_queue *hq;	/* helper: the queue it returns to */
	struct eng_req *next;	/* helper queue linkage */
};

/* rq->stage value: the data is written, only the fdatasync of a FUA write
 * remains (what an engine defers when it cannot do RWF_DSYNC). */
#define ENG_STAGE_SYNC 0xff

/* Things a queue learned the kernel or filesystem cannot do. */
enum eng_caps {
	ENG_NO_ASYNC_SYNC = 1u << 0,	/* async fdatasync rejected */
	ENG_NO_ZERO_RANGE = 1u << 1,	/* fallocate ZERO_RANGE rejected */
	ENG_NO_RWF_DSYNC = 1u << 2,	/* per-write RWF_DSYNC rejected */
};

struct eng_helper;
struct eng_ops;

/* One queue's view of the backing device. The owner fills the fields
 * marked "owner" before ops->init. */
struct eng_queue {
	const struct eng_ops *ops;	/* owner */
	struct io_uring *ring;		/* owner: the queue's ring */
	int fd;				/* owner: backing device */
	int fd_index;			/* owner: registered index, or -1 */
	bool bufs_registered;		/* owner: fixed buffer i = request i */
	bool is_bdev;			/* owner: block device, not a file */
	uint32_t depth;			/* owner: requests in the queue */
	struct eng_req *reqs;		/* owner: reqs[tag], depth of them */
	int wake_fd;			/* owner: eventfd its ring reads */
	struct eng_helper *helper;	/* owner: blocking-op thread */
	/* owner: every request ends here, exactly once; res 0 or -errno */
	void (*complete)(struct eng_queue *eq, struct eng_req *rq, int res);
	void *owner;			/* owner's cookie */

	void *priv;			/* engine state */
	uint32_t caps;			/* enum eng_caps learned so far */
	pthread_mutex_t done_lock;	/* helper results, below */
	struct eng_req *done_head;
	struct eng_req *done_tail;
};

struct eng_ops {
	const char *name;
	/* Required. Set up per-queue state for eq->depth requests; may
	 * queue SQEs on eq->ring (the owner submits them). 0 or -errno. */
	int (*init)(struct eng_queue *eq);
	/* Required. Free what init allocated. Nothing may be in flight. */
	void (*exit)(struct eng_queue *eq);
	/* Required. Start @rq. 0: it will complete through eq->complete;
	 * -errno: nothing was started and complete is not called. */
	int (*submit)(struct eng_queue *eq, struct eng_req *rq);
	/* Optional. Hand batched work to the kernel; called once per loop
	 * iteration, before the owner submits its ring. */
	void (*flush)(struct eng_queue *eq);
	/* Required. A CQE of eq->ring whose user_data has ENG_UD_ENGINE. */
	void (*cqe)(struct eng_queue *eq, const struct io_uring_cqe *cqe);
};

extern const struct eng_ops eng_uring_ops;
extern const struct eng_ops eng_aio_ops;

/* The ops of a configured engine. */
const struct eng_ops *eng_find(enum cfg_engine e);

/*
 * Open a backing device or file for data I/O: O_DIRECT when the
 * filesystem allows it (*direct tells). 0 or -errno.
 */
int eng_open_backing(const char *path, int *fd, bool *is_bdev, bool *direct);

/* Start/stop the helper thread for blocking operations. */
struct eng_helper *eng_helper_start(void);
void eng_helper_stop(struct eng_helper *h);

/* Initialise/destroy the engine-independent part of @eq (before ops). */
int eng_queue_setup(struct eng_queue *eq);
void eng_queue_teardown(struct eng_queue *eq);

/*
 * Run @rq's operation synchronously on the helper thread; the result comes
 * back through eng_reap() after eq->wake_fd fires. Used by the engines.
 */
void eng_defer(struct eng_queue *eq, struct eng_req *rq);
/* Complete the requests the helper finished. The owner calls it when its
 * wake eventfd fires. */
void eng_reap(struct eng_queue *eq);

/*
 * The synchronous form of @rq's remaining work, as the helper runs it:
 * FLUSH (and the sync part of a FUA write) = fdatasync, DISCARD,
 * WRITE_ZEROES; READ/WRITE loop over pread/pwrite. 0 or -errno.
 */
int eng_sync_op(struct eng_queue *eq, struct eng_req *rq);

/*
 * Account a read/write transfer of @res bytes (or -errno). Returns 1 when
 * bytes remain (resubmit from rq->done), 0 when complete, -errno on error
 * (a transfer of 0 bytes before the end is -EIO: the device ended early).
 */
int eng_rw_advance(struct eng_req *rq, int res);

/* An SQE from @ring, submitting what is queued if the SQ is full. */
struct io_uring_sqe *eng_get_sqe(struct io_uring *ring);

#endif
