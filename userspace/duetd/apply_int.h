/* SPDX-License-Identifier: MIT */
/*
 * Inside the apply worker (apply.h): its state, shared by apply.c (the
 * queue, what may start when, the worker's loop, frames applied by the
 * connection thread, life cycle) and apply_write.c (the answers and the
 * writes themselves: page cache or O_DIRECT, on the ring or here).
 *
 * Everything here belongs to whoever applies: the worker, or the
 * connection thread while the worker is idle (apply_frame()).
 */
#ifndef DUET_APPLY_INT_H
#define DUET_APPLY_INT_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "apply.h"
#include "peer.h"
#include "xport.h"

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

	/* figures (whoever applies writes them with apply_fig_*, status
	 * reads them without a lock) */
	uint64_t direct_writes, cached_writes, max_in_flight, waits;
	uint64_t inline_frames;
	uint64_t flush_errors;
	uint32_t unpushed;	/* answers queued lazily, thread not woken */
};

static inline uint32_t apply_in_flight(const struct apply *ap)
{
	return APPLY_DEPTH - ap->nr_free;
}

static inline uint64_t apply_conn_gen(struct repl *r)
{
	return __atomic_load_n(&r->conn_gen, __ATOMIC_ACQUIRE);
}

static inline void apply_put_work(struct work *w)
{
	if (w->buf)
		xport_buf_put(w->buf);
	free(w);
}

/*
 * A figure's new value. One side writes them at a time (whoever applies),
 * status reads them from another thread without a lock: relaxed atomic
 * stores and loads, so that neither sees a torn value.
 */
static inline void apply_fig_set(uint64_t *fig, uint64_t v)
{
	__atomic_store_n(fig, v, __ATOMIC_RELAXED);
}

static inline void apply_fig_add(uint64_t *fig, int64_t d)
{
	apply_fig_set(fig, *fig + (uint64_t)d);
}

/* ---- apply_write.c ---- */

/* Wake the connection thread for the answers queued so far. */
void apply_push_answers(struct repl *r);
void apply_send_barrier_ack(struct repl *r, const struct proto_msg *m);
/* A frame is about to be applied (its connection, the epoch count). */
void apply_frame_begin(struct repl *r, const struct work *w);
/* Will this write go O_DIRECT? */
bool apply_goes_direct(const struct apply *ap, const struct work *w,
		       uint64_t off, uint32_t len);
/* Start a DATA/RS_DATA write, or false when it must wait. */
bool apply_start_write(struct repl *r, struct work *w);
/* A write's completion from the ring. */
void apply_op_cqe(struct repl *r, struct aop *o, int res);

#endif
