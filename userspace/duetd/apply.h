/* SPDX-License-Identifier: MIT */
/*
 * apply_ — the secondary's side of replication (internal to repl_, like
 * peer.h): the worker thread that takes the frames the connection thread
 * received, in stream order, writes them to the backing device and sends
 * the answers.
 *
 * Writes (DATA, RS_DATA) go to the kernel through the worker's own
 * io_uring, up to APPLY_DEPTH at a time, on an O_DIRECT descriptor when
 * the write is aligned for it (the page-cache descriptor otherwise), so a
 * stream of small writes is served at the primary's queue depth rather
 * than one at a time, and large ones cost the worker no copy. The order
 * the protocol promises (docs/protocol.md, "Epochs and barriers") is kept
 * by what may start:
 *
 *  - a write starts only when no write in flight overlaps it, so that
 *    overlapping writes land in stream order;
 *  - a BARRIER waits until every earlier write completed (then flushes
 *    when asked, then BARRIER_ACK), and nothing after it starts before:
 *    no write of epoch N+1 starts before epoch N is complete;
 *  - everything else (RS_CSUM, OV_*, READ_REQUEST, RS_DONE, the bitmap,
 *    resync news) also waits for every earlier write and runs on the
 *    worker itself, so it sees all the data that came before it.
 *
 * Without io_uring (refused by the kernel or a seccomp policy) the same
 * rules run with every write done synchronously, one at a time.
 *
 * Thread: apply_queue_*() from any thread; the rest from the owner
 * (repl_start/stop/destroy).
 */
#ifndef DUET_APPLY_H
#define DUET_APPLY_H

#include <jansson.h>
#include <stdint.h>

struct repl;
struct resync;
struct proto_msg;
struct xport_buf;

#define APPLY_DEPTH 64		/* writes in flight on the worker's ring */

/* Open the backing device for the peer's writes, start the worker.
 * 0 or -errno. */
int apply_start(struct repl *r);
/* Let the worker finish everything queued, join it, flush the disk. */
void apply_stop(struct repl *r);
/* Free what apply_start() allocated (after apply_stop). */
void apply_free(struct repl *r);

/* A received frame (DATA, BARRIER, RS_*, OV_*, READ_REQUEST, RS_DONE);
 * the worker owns @buf from now on. */
void apply_queue_frame(struct repl *r, const struct proto_msg *m,
		       struct xport_buf *buf);
/*
 * The connection thread's form, for DATA and BARRIER: when the worker has
 * nothing to do (everything before is applied, nothing in flight) and the
 * frame costs no wait for the disk (a write that goes through the page
 * cache without FUA, a BARRIER without FLUSH), the calling thread applies
 * it itself, on the worker's own path, and queues the answer; otherwise as
 * apply_queue_frame(). A burst of small writes then costs no hand-over
 * and no wake-up between the two threads.
 */
void apply_frame(struct repl *r, const struct proto_msg *m,
		 struct xport_buf *buf);
/* Resync news (W_RS_FINISHED, W_RS_REAP): the worker joins the thread. */
void apply_queue_rs(struct repl *r, uint8_t kind, struct resync *rs, int err,
		    uint64_t bytes);
/* Send our bitmap from the worker (W_BM_SEND), after every frame before. */
void apply_queue_bm(struct repl *r);

/* Worker: make the resync target's written blocks durable, then clear
 * their bits and persist the bitmap. */
void apply_rs_flush(struct repl *r);

/* ---- inside the worker: apply.c, apply_write.c and apply_rs.c ---- */

struct work;

/* Answer @type (ACK_*, RS_*) for [@sector, +@len) with @res (0 or
 * -errno); nothing when r->stale. */
void apply_send_ack(struct repl *r, uint16_t type, uint64_t id,
		    uint64_t sector, uint32_t len, int res);
/* RS_DATA @w was written with @ret (0 or -errno): count it, clear its
 * bits after the next flush, RS_ACK. */
void apply_rs_data_done(struct repl *r, const struct work *w, int ret);
/* RS_CSUM, OV_REQUEST, OV_REPLY, after every earlier write completed. */
void apply_rs_csum(struct repl *r, const struct work *w);
void apply_ov_request(struct repl *r, const struct proto_msg *m);
void apply_ov_reply(struct repl *r, const struct proto_msg *m);

/* The backing device opened O_DIRECT (for reads elsewhere: the resync
 * source), or -1; open until apply_free(). */
int apply_dio_fd(struct repl *r);

/* "apply": the worker's figures, for status. */
void apply_status(struct repl *r, json_t *o);

#endif
