/* SPDX-License-Identifier: MIT */
/*
 * peer_ — the connection half of repl_ (internal: only repl.c, peer.c,
 * peer_sync.c, diskless.c, admin.c, apply.c, apply_rs.c and fence.c
 * include this header, and the unit test test_apply.c). repl.c holds the
 * data path: the primary's sends and acks (slots, epochs), the ranges in
 * flight, the apply worker and the life cycle. peer.c holds what the
 * connection decides: the conn_ callbacks, the STATE exchange and
 * generation decision, roles, new-current-uuid and status. peer_sync.c
 * holds the bitmap exchange, the resync's start and end (sync source or
 * target, RS_DONE), the online verify's start and end, and their status.
 * All work on the one struct repl below, under its locks.
 *
 * Lock order: repl.lock, then a resync's lock, then meta's lock
 * (meta_lock_bm); repl.send_lock is taken alone or inside repl.lock;
 * work_lock and ival_lock are leaves. peer.c's and peer_sync.c's functions
 * below are called with repl.lock held unless said otherwise.
 */
#ifndef DUET_PEER_H
#define DUET_PEER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "conn.h"
#include "repl.h"
#include "resync.h"
#include "sm.h"
#include "uuid.h"

#define REPL_SLOTS 4096		/* peer requests in flight, all paths */
#define REPL_RANGES 16384	/* ranges in flight, all paths + resync */
#define REPL_PEER_SLOT 0	/* md peer slot (a pair uses one) */

/* A request waiting for the peer. */
struct slot {
	struct repl *r;
	repl_done_fn done;
	void *arg;
	uint32_t cookie;
	uint32_t gen;		/* bumps on every reuse: stale acks */
	uint64_t conn_gen;	/* connection it was sent on */
	uint64_t sector;
	uint32_t len;
	int res;		/* the peer's verdict so far */
	bool used;
	bool handed;		/* the send completed (buffer released) */
	bool answered;		/* the ack came, or the connection went */
	int32_t next_free;
};

/* One item for the worker: a received frame to apply, or resync news. */
enum work_kind {
	W_FRAME = 0,	/* DATA, BARRIER, RS_DATA, in stream order */
	W_RS_FINISHED,	/* the resync thread called done() */
	W_RS_REAP,	/* an aborted resync: join it */
	W_BM_SEND,	/* send our bitmap to the peer (peer_send_bitmap) */
};

struct work {
	uint8_t kind;		/* enum work_kind */
	struct resync *rs;	/* W_RS_*: join and free it */
	int err;		/* W_RS_FINISHED */
	uint64_t bytes;		/* W_RS_FINISHED */
	struct resync_info info;	/* W_RS_FINISHED: its last figures */
	uint64_t conn_gen;	/* W_FRAME: the connection it came on */
	struct proto_msg m;
	struct xport_buf *buf;
	struct work *next;
};

struct repl {
	struct repl_params p;
	struct conn *conn;
	char proto;		/* 'A', 'B', 'C' */

	pthread_mutex_t lock;	/* below, unless said otherwise */
	struct sm_state sm;
	struct uuid_info peer_uuid;
	enum sm_disk peer_disk_rx;	/* from the peer's last STATE */
	bool have_peer_state;
	bool conn_up;		/* conn established() .. lost() */
	bool replicating;	/* writes go to the peer (Established) */
	uint64_t conn_gen;	/* bumped by established() and lost() */
	int role_cache;		/* atomic: 1 Primary, 0 Secondary */
	struct fence *fence;	/* fencing and handlers (fence.h) */
	struct slot *slots;
	int32_t free_head;
	uint32_t in_flight;
	pthread_cond_t drained;	/* in_flight reached 0 */

	/* epochs (primary), under send_lock */
	pthread_mutex_t send_lock;	/* order of frames on the wire */
	uint64_t epoch;
	uint32_t epoch_writes;
	int epoch_done;		/* atomic: a write completed in this epoch */

	/* apply worker (secondary; apply.h). "worker:" fields belong to
	 * whoever applies: the worker, or the connection thread while the
	 * worker is idle and waits for it (apply_frame()) */
	struct apply *ap;	/* its ring and writes in flight */
	pthread_t worker;
	bool worker_joinable;
	bool worker_running;	/* under work_lock: it takes work */
	bool worker_stop;
	pthread_mutex_t work_lock;	/* the queue below, worker_* */
	pthread_cond_t work_cond;
	struct work *work_head, *work_tail;
	int wfd;		/* page-cache descriptor of the backing */
	uint32_t rx_epoch_writes;	/* worker */
	bool stale;		/* worker: the frame's connection is gone */
	uint64_t worker_gen;	/* worker: connection of the last frame */

	/* ranges being changed (ival.h) */
	pthread_mutex_t ival_lock;
	pthread_cond_t ival_cond;	/* a range was given back */
	struct ival_set *ival;
	uint64_t ival_want;		/* paths parked on a range */
	void (*kick[META_MAX_QUEUES])(void *arg);
	void *kick_arg[META_MAX_QUEUES];
	uint64_t ival_waits;

	/* resync (connection thread, under lock) */
	struct resync *rs;	/* source: the running resync */
	bool sync_source;	/* this connection resyncs to the peer */
	bool sync_target;	/* ... from the peer */
	bool bm_rx_done;	/* the peer's last BITMAP frame came */
	bool same_writer;	/* this writer period has its generation */
	bool adopt_pending;	/* the peer's clear-bitmap: take its next
				 * STATE's generation */
	uint64_t rs_total;	/* bytes out of sync when it began */
	uint64_t rs_target_bytes; /* target: bytes written */
	uint64_t rs_target_same;  /* target: of those, found identical */
	/* target, apply worker only: blocks written since the last flush,
	 * their bits still set (apply_rs_flush) */
	struct rs_pend {
		uint64_t sector, nr;
	} *rs_pend;
	uint32_t rs_pend_n, rs_pend_cap;
	uint64_t rs_pend_bytes;
	uint64_t rs_pend_gen;	/* the connection those blocks came on */
	time_t rs_last_sync;	/* target: CLOCK_MONOTONIC s of that */
	time_t rs_started;
	uint64_t resyncs_done;
	/* completed resync blocks since start, either side; of those, found
	 * identical by checksum (no data sent) */
	uint64_t rs_bytes_total, rs_same_total;
	uint64_t features;	/* negotiated with the peer (PROTO_F_*) */

	/* online verify: r->rs runs it when verifying (source) */
	bool verifying;		/* source: r->rs is a verify */
	bool verify_target;	/* the peer verifies against us */
	time_t ov_started;
	/* the last one that ended, for status */
	struct {
		time_t ended;
		bool complete;	/* walked the whole device */
		bool source;
		uint64_t compared_bytes, oos_bytes, oos_blocks;
		int64_t seconds;
	} ov_last;
	void *scratch;		/* apply worker: PROTO_DATA_MAX, lazily */

	/* administration and split brain (admin.c) */
	bool peer_discard;	/* the peer's STATE: connect --discard-my-data */
	bool peer_paused;	/* the peer's STATE: the resync is paused */
	uint64_t state_dirty_bits; /* in the last STATE we sent */
	uint64_t event_seq;	/* events sent */
	struct {		/* the last handshake's verdict, for status */
		bool valid;
		bool split_brain;
		bool resolved;
		int rule;
		char verdict[32];
		char policy[32];
		char why[256];
		time_t at;
	} last_hs;

	/* local disk failure and reads through the peer (diskless.c) */
	int disk_gone;		/* atomic: the backing disk is detached */
	uint64_t dl_current;	/* diskless: the data generation in use */
	char disk_why[160];	/* why it was detached, for status */
	time_t disk_failed_at;
	uint64_t io_errors;	/* local I/O errors reported */
	struct rread *rreads;	/* reads waiting for READ_DATA */
	int32_t rread_free;
	uint32_t rreads_in_flight;
	uint64_t remote_reads, remote_read_bytes, reads_served;

	/* figures */
	uint64_t sent_writes, sent_bytes, acked, peer_failed, not_sent;
	uint64_t applied, applied_bytes, apply_errors;
};

/* ---- peer.c ---- */

/* conn_ callbacks (connection thread). */
void peer_established(void *arg, const struct conn_peer *peer);
void peer_frame(void *arg, const struct proto_msg *m, struct xport_buf *buf);
void peer_lost(void *arg, int err, const char *reason);
/* Lock held: the state machine, the UUIDs, STATE. */
void peer_update_may_write(struct repl *r);
int peer_sm_do(struct repl *r, const struct sm_req *q, char *why, size_t len);
void peer_my_uuid(struct repl *r, struct uuid_info *u);
int peer_save_uuid(struct repl *r, const struct uuid_info *u);
void peer_send_state(struct repl *r);
/* Lock held: one line on the events stream; @reason may be NULL, @extra
 * (may be NULL) is merged in and released. */
void peer_event(struct repl *r, const char *what, const char *reason,
		json_t *extra);

/* ---- peer_sync.c ---- */

/* Lock held: start a resync as the verdict says (both sides do). */
void peer_begin_sync(struct repl *r, enum uuid_verdict v);
/* Lock held: the source's resync thread, if due and not paused. */
void peer_start_source(struct repl *r);
/* Worker: RS_DONE of a resync we are the target of (after the flush). */
void peer_rs_done(struct repl *r, const struct proto_msg *m);
/* Worker: W_BM_SEND. */
void peer_send_bitmap(struct repl *r, struct work *w);
/* Worker: the source's resync ended (W_RS_FINISHED). */
void peer_finish_source(struct repl *r, struct work *w);
/* Lock held: keep a verify's figures for status. */
void peer_ov_record(struct repl *r, const struct resync_info *ri,
		    bool source, bool complete);
/* Connection thread, lock not held: an RS_DONE the worker does not take. */
void peer_on_rs_done(struct repl *r, const struct proto_msg *m);
/* Connection thread, lock not held: a run of the peer's bitmap pages. */
void peer_on_bitmap(struct repl *r, const struct proto_msg *m);
/* Lock held: the first OV_REQUEST, the peer verifies against us. */
void peer_verify_target_begin(struct repl *r);
/* Status's "resync" and "verify" objects. Lock not held. */
void peer_resync_status(struct repl *r, json_t *o);
void peer_verify_status(struct repl *r, json_t *o);

/* ---- diskless.c ---- */

/* Connection thread: the peer's READ_DATA. Lock not held. */
void peer_read_reply(struct repl *r, const struct proto_msg *m);
/* Every read waiting for the peer fails (-ECONNRESET). Lock not held. */
void peer_fail_reads(struct repl *r);
/* Worker: serve the peer's READ_REQUEST from our disk. Lock not held. */
void peer_serve_read(struct repl *r, const struct proto_msg *m);
/* Lock held: before / after deciding on the peer's STATE. */
void peer_diskless_adopt(struct repl *r, uint64_t peer_current);
void peer_diskless_state(struct repl *r, enum sm_disk prev, bool first);
/* "disk_failure" and the remote-read counters for status. Lock not held. */
void peer_diskless_status(struct repl *r, json_t *o);

/* ---- repl.c ---- */

/* Lock held: every request waiting for the peer fails (connection gone). */
void repl_fail_all(struct repl *r);
/* Lock held: the peer's answer for request @id. */
void repl_slot_answer(struct repl *r, uint64_t id, int res, bool final);

#endif
