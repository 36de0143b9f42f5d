/* SPDX-License-Identifier: MIT */
/*
 * path_ — the data path of one front-end thread, independent of where the
 * requests come from (ublk queue thread, NBD connection thread).
 *
 * A front end owns a thread with one io_uring and a fixed number of request
 * slots ("tags", 0 .. depth-1). It gives each block request it receives to
 * path_submit() with the slot's tag; the path does everything else: the
 * bounds check against the data area, the activity log (meta_begin_io,
 * parking when the AL must be written first), replication to the peer
 * (when one is configured), the local I/O through the configured eng_
 * engine on the front end's ring, flush elision, and finally calls the
 * front end's complete() callback exactly once per submitted request.
 *
 *	front end thread                       path
 *	----------------                       ----
 *	path_create()     (before meta_start; any thread)
 *	[thread starts, sets up its ring]
 *	path_start(ring)  engine init, wake read queued on the ring
 *	loop:
 *	  path_flush()    before every io_uring_submit*()
 *	  for each CQE:
 *	    path_cqe()    true: the CQE was the path's (engine or wake)
 *	    else the front end's own CQE (ublk command, socket I/O)
 *	  path_submit(tag, req) ───────────►  ... complete(owner, tag, res)
 *	path_stop()       after the ring is gone (nothing in flight)
 *	[thread ends]
 *	path_destroy()    any thread, after the thread ended
 *
 * Threading: everything except path_create, path_destroy, path_kick and
 * path_get_stats runs on the front end's thread only; complete() is
 * called on that thread too, possibly from inside path_submit() (an
 * immediate error, an elided flush) or path_cqe().
 *
 * user_data: the path's SQEs use eng_ud() with the engine bit (engine
 * I/O) or kind PATH_UD_KIND_WAKE; a front end's own kinds must stay below
 * PATH_UD_KIND_FIRST.
 *
 * Buffers: READ fills and WRITE reads the caller's @buf, which must stay
 * valid until complete(). With @bufs_registered (path_start), io_uring
 * fixed buffer number @tag must be that buffer (the ublk front end
 * registers one buffer per tag); otherwise any memory will do.
 */
#ifndef DUET_PATH_H
#define DUET_PATH_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "eng.h"
#include "meta.h"

/* user_data kinds 0xf0..0xff belong to the path. */
#define PATH_UD_KIND_FIRST 0xf0
#define PATH_UD_KIND_WAKE 0xff

/*
 * What the paths of one device share: the flush elision state. A FLUSH
 * must make durable every write that completed before it; a write sent
 * with FUA (RWF_DSYNC) already is. So FLUSH only needs an fdatasync when
 * some other write (or discard, write-zeroes) completed since the last
 * fdatasync began; O_SYNC-style workloads (FUA write, then FLUSH) then
 * cost one durable write instead of two. Both counters only grow.
 */
struct path_shared {
	uint64_t dirty;		/* bumped by every completion not yet durable */
	uint64_t flushed;	/* the value of dirty an fdatasync covered */
};

/* Initial state: unknown writes of a previous daemon may be pending. */
#define PATH_SHARED_INIT { .dirty = 1, .flushed = 0 }

struct path_params {
	/*
	 * Slot in meta (0 .. META_MAX_QUEUES-1), unique among all the paths
	 * of a device at any time: ublk uses its queue number, NBD the
	 * numbers above the ublk queues.
	 */
	unsigned int id;
	uint32_t depth;			/* request slots (tags) */
	uint32_t buf_bytes;		/* largest READ/WRITE */
	uint64_t dev_sectors;		/* data area: requests past it fail */
	const struct eng_ops *eng;
	int backing_fd;
	bool backing_is_bdev;
	struct eng_helper *helper;
	struct meta *meta;
	struct path_shared *shared;
	/*
	 * Required. Request @tag is done: @res is 0 or -errno (the front end
	 * knows the length it asked for). Called on the front end's thread.
	 */
	void (*complete)(void *owner, unsigned int tag, int res);
	void *owner;
	const char *name;		/* for log messages: "queue 0", "nbd 3" */
};

struct path_req {
	uint8_t op;		/* enum eng_op; anything else: -EOPNOTSUPP */
	bool fua;		/* WRITE: durable before complete() */
	uint32_t nr_sectors;	/* 512-byte sectors; 0 for FLUSH */
	uint64_t sector;
	void *buf;		/* READ/WRITE: nr_sectors * 512 bytes */
};

/* Counters, written by the path's thread only, read by anyone. */
struct path_stats {
	uint64_t reads;
	uint64_t writes;
	uint64_t read_bytes;
	uint64_t write_bytes;
	uint64_t flushes;
	uint64_t flushes_elided;	/* answered without an fdatasync */
	uint64_t fua_writes;
	uint64_t discards;
	uint64_t write_zeroes;
	uint64_t errors;	/* requests completed with an error */
	uint64_t al_waits;	/* writes parked on the activity log */
};

struct path;

/*
 * Allocate the path and its wake eventfd, and register that eventfd with
 * @p->meta (so before meta_start()). Any thread. NULL with errno.
 */
struct path *path_create(const struct path_params *p);

/*
 * On the front end's thread, once its ring exists (and, with
 * @bufs_registered, its buffers are registered as fixed buffers, number
 * = tag): initialise the engine and queue the read of the wake eventfd.
 * @backing_fd_index is the backing fd's registered-file index on @ring,
 * or -1. The SQEs are queued, not submitted. 0 or -errno.
 */
int path_start(struct path *p, struct io_uring *ring, int backing_fd_index,
	       bool bufs_registered);

/*
 * Front end's thread: serve @r on slot @tag (not in use). complete() is
 * called exactly once, maybe before this returns.
 */
void path_submit(struct path *p, unsigned int tag, const struct path_req *r);

/*
 * Front end's thread, for every CQE of its ring: handle it and return true
 * if it is the path's (engine completion, wake), false if it is the front
 * end's own.
 */
bool path_cqe(struct path *p, const struct io_uring_cqe *cqe);

/* Front end's thread: hand batched engine work to the kernel; call before
 * every submit of the ring. */
void path_flush(struct path *p);

/* Front end's thread: requests submitted and not yet completed. */
unsigned int path_busy(const struct path *p);

/*
 * Any thread: make the front end's ring see a wake completion (its loop
 * returns from waiting). Used to end a thread from outside.
 */
void path_kick(struct path *p);

/*
 * Front end's thread, after its ring was torn down (which cancels what is
 * in flight) or with nothing busy: free the engine state.
 */
void path_stop(struct path *p);

/* Any thread, after the front end's thread ended. NULL is fine. */
void path_destroy(struct path *p);

void path_get_stats(const struct path *p, struct path_stats *st);

#endif
