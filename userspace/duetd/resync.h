/* SPDX-License-Identifier: MIT */
/*
 * resync_ — the sync source's side of a bitmap-based resync, and the pure
 * rate controller that paces it.
 *
 * The source walks its bitmap (bm_next_dirty, which after the BITMAP
 * exchange holds the union of both sides' bits) in blocks of at most
 * RESYNC_BLOCK bytes. For each block it takes the block's range (repl's
 * interval set: no application write to those sectors is in flight, and
 * none starts until the block is acknowledged), reads it, and sends it as
 * RS_DATA. The target writes it (durably) in stream order, clears its bits
 * and answers RS_ACK; the source then clears its bits and gives the range
 * back. Up to RESYNC_INFLIGHT blocks are on the way at once. When no bit is
 * left and every block is acknowledged, done() is called.
 *
 * Application writes flow meanwhile: to a block not yet resynced they go
 * out as DATA and leave its bits set (the block is sent again later, with
 * the same data); to a block in flight they wait for its RS_ACK. The
 * target applies DATA and RS_DATA in stream order, so it never ends up
 * with an older copy than the source.
 *
 * Changed bitmap pages are written every RESYNC_SYNC_BYTES or second
 * (meta_sync_bm), so an interrupted resync resumes near where it stopped.
 *
 * Two variants run on the same machinery (docs/protocol.md):
 *  - checksum-based resync (RESYNC_CSUM): the block is read and digested
 *    and only RS_CSUM goes out; the target compares with its own block and
 *    answers RS_IN_SYNC (equal: both clear the bits, nothing is sent) or
 *    RS_REQUEST (then RS_DATA follows from the buffer already read, the
 *    range still held);
 *  - online verify (RESYNC_VERIFY): the whole device is walked in blocks of
 *    RESYNC_VERIFY_BLOCK; for each, the range is taken and OV_REQUEST goes
 *    out; the peer answers OV_REPLY with the digest of its block, and
 *    resync_verify_reply() (on the apply worker, so in stream order after
 *    every DATA before it) reads our block and compares. A difference, or a
 *    failed read on either side, sets the block's bits; verify never
 *    writes data.
 *
 * Threads: resync_start() creates the resync thread; resync_ack() runs on
 * the connection thread; resync_abort() on any thread; resync_free() on
 * any thread but the resync thread.
 */
#ifndef DUET_RESYNC_H
#define DUET_RESYNC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "meta.h"
#include "proto.h"

#define RESYNC_BLOCK (1u << 20)		/* bytes per RS_DATA at most */
#define RESYNC_INFLIGHT 8		/* blocks sent, not yet acknowledged */
#define RESYNC_SYNC_BYTES (64ull << 20)	/* persist the bitmap this often */
#define RESYNC_VERIFY_BLOCK (256u << 10)	/* bytes per OV_REQUEST */

enum resync_mode {
	RESYNC_PLAIN = 0,	/* RS_DATA for every dirty block */
	RESYNC_CSUM,		/* RS_CSUM first, RS_DATA only if asked */
	RESYNC_VERIFY,		/* OV_REQUEST over the whole device */
};

/*
 * Pure rate control: a token bucket whose fill rate follows application
 * writes: while some are in flight the rate halves every step towards
 * @min_bps (the resync yields), otherwise it doubles back towards
 * @max_bps. A step is one call of rs_rate_delay().
 */
struct rs_rate {
	uint64_t max_bps;	/* resync-rate: bytes/s */
	uint64_t min_bps;	/* resync-min-rate: bytes/s */
	uint64_t cur_bps;	/* what the bucket fills at now */
	uint64_t tokens;	/* bytes that may go now */
	uint64_t last_ns;	/* when tokens were last added */
};

void rs_rate_init(struct rs_rate *r, uint64_t max_bps, uint64_t min_bps,
		  uint64_t now_ns);
/*
 * May @bytes go at @now_ns? 0: yes, and they are taken from the bucket;
 * otherwise the ns to wait before asking again. @app_busy: application
 * writes are in flight.
 */
uint64_t rs_rate_delay(struct rs_rate *r, uint64_t now_ns, uint32_t bytes,
		       bool app_busy);

struct conn;
struct repl;
struct resync;

struct resync_params {
	const char *name;		/* resource, for logs */
	struct conn *conn;
	struct meta *meta;
	struct repl *repl;		/* ranges (repl_range_take_wait) */
	int fd;				/* backing device, for reading */
	/* the same opened O_DIRECT, or -1: aligned blocks are read with it
	 * (no copy through the page cache); it stays open while we run */
	int dio_fd;
	uint8_t digest_alg;		/* enum proto_digest for RS_DATA */
	uint8_t mode;			/* enum resync_mode */
	uint8_t csum_alg;		/* RS_CSUM / OV_REQUEST digest */
	uint64_t dev_sectors;		/* RESYNC_VERIFY: walk up to here */
	uint64_t max_bps, min_bps;
	/* Are application writes in flight? (rate control) */
	bool (*app_busy)(void *arg);
	/*
	 * The bitmap is clean and every block acknowledged (@err 0), or the
	 * resync stopped on an error (-EIO: a block could not be read or the
	 * target could not write it; -ECONNRESET). Not called after
	 * resync_abort(). On the resync thread. Verify: @bytes is what was
	 * compared; resync_get_info() has what differed.
	 */
	void (*done)(void *arg, struct resync *rs, int err, uint64_t bytes);
	void *arg;
};

/* Start the resync thread. NULL with errno. */
struct resync *resync_start(const struct resync_params *p);
/* RS_ACK from the target. Connection thread. */
void resync_ack(struct resync *rs, const struct proto_msg *m);
/* RS_IN_SYNC or RS_REQUEST from the target (RESYNC_CSUM). Connection
 * thread. */
void resync_reply(struct resync *rs, const struct proto_msg *m);
/* OV_REPLY from the peer (RESYNC_VERIFY): read our block from @fd, compare,
 * mark a difference. Apply worker (stream order). */
void resync_verify_reply(struct resync *rs, const struct proto_msg *m,
			 int fd);
/* Stop at once (the connection is gone, or shutting down): blocks in
 * flight keep their bits. Any thread. */
void resync_abort(struct resync *rs);
/* duetctl adjust: new resync-rate / resync-min-rate, from the next block
 * on. Any thread. */
void resync_set_rate(struct resync *rs, uint64_t max_bps, uint64_t min_bps);
/* Join the thread (after done() or resync_abort) and free. NULL is fine. */
void resync_free(struct resync *rs);

/* Figures for status. */
struct resync_info {
	uint64_t sent_bytes;	/* acknowledged blocks (verify: compared) */
	uint64_t same_bytes;	/* csum: found identical, data not sent */
	uint64_t oos_bytes;	/* verify: found different (or unreadable) */
	uint64_t oos_blocks;	/* verify: blocks of those */
	uint64_t position;	/* verify: sectors walked */
	uint64_t rate_bps;	/* over the last few seconds */
	uint64_t limit_bps;	/* what the controller allows now */
	bool running;
};
void resync_get_info(struct resync *rs, struct resync_info *out);

#endif
