/* SPDX-License-Identifier: MIT */
/*
 * fence_ — fencing and handlers of a two-node resource: what the daemon
 * does around the state machine's `susp` (fencing = suspend-io) and when
 * it runs the configured handler programs (handler.h).
 *
 *  - A Primary that loses an UpToDate peer without a graceful disconnect
 *    suspends application I/O (sm: peer-lost). The data paths hold every
 *    new request (reads too, as DRBD does) and every write whose peer half
 *    was lost with the connection: nothing completes to the application.
 *    The fence-peer handler runs; exit 3, 4, 5 or 7 (handler_fence_ok())
 *    records the peer Outdated in the metadata (MD_PF_PEER_OUTDATED),
 *    applies fence-ok and releases the I/O. Any other outcome leaves it
 *    suspended until the peer returns (the handshake releases it) or
 *    `duetctl resume-io` (resume-io). With fencing = dont-care nothing is
 *    held.
 *  - split-brain runs whenever a handshake detects a split brain, resolved
 *    by a policy or not; before-resync-target runs on the node that is to
 *    become sync target, before its bitmap goes to the source (the source
 *    starts only once it has it): exit != 0 and the resync does not start,
 *    the connection is dropped and this node stays StandAlone until
 *    `duetctl connect`; after-resync-target runs on that node when the
 *    resync completed; local-io-error when the backing disk failed
 *    (fence_local_io_error()).
 *  - Each run ends with a "handler" line on the events stream (with its
 *    exit code) and in the log.
 *
 * Threads: the data paths call the fence_gate functions (lock-free); the
 * functions marked "lock held" run under repl.lock (peer.h); handler
 * results come back on the handler thread, which takes repl.lock.
 */
#ifndef DUET_FENCE_H
#define DUET_FENCE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct repl;
struct ctl_server;
struct daemon;

/* What a data path does with a request. */
enum fence_gate {
	FENCE_PASS = 0,		/* go on */
	FENCE_HOLD,		/* park it; the path is kicked on release */
	FENCE_FAIL,		/* the daemon is stopping: fail it (-EIO) */
};

/* In repl_create, once the state machine is set up: r->fence. 0/-errno. */
int fence_create(struct repl *r);
/* In repl_destroy. */
void fence_destroy(struct repl *r);
/*
 * The daemon is stopping (before the front ends stop): held requests fail
 * with -EIO, handlers are killed and no new one starts. Lock not held.
 */
void fence_shutdown(struct repl *r);

/* Lock held: after every change of r->sm (peer_update_may_write()). */
void fence_state_changed(struct repl *r);

/* Data paths: may a new request start? */
enum fence_gate fence_gate(struct repl *r);
/*
 * Data paths: taken when a data-changing request is issued; a write whose
 * peer half then fails with the connection asks fence_gate_missed() with
 * it before it completes to the application.
 */
uint64_t fence_ticket(struct repl *r);
enum fence_gate fence_gate_missed(struct repl *r, uint64_t ticket);

/* Lock held: a handshake detected a split brain (admin_note_handshake). */
void fence_split_brain(struct repl *r, bool resolved, const char *policy,
		       const char *victim, int rule, const char *why);
/*
 * Lock held: this node is to become sync target (begin_sync; @full: a
 * full sync). DUET_RESYNC_BYTES is what our bitmap says so far. true: the
 * before-resync-target handler runs and sends our bitmap (apply_queue_bm)
 * once it succeeded; false: no handler, send it now.
 */
bool fence_before_resync_target(struct repl *r, bool full);
/* Lock held: the resync onto this node completed. */
void fence_after_resync_target(struct repl *r, uint64_t bytes);
/*
 * The backing disk failed (@err < 0, the request at @sector, @nr_sectors,
 * @write). Runs local-io-error, at most one at a time (later errors while
 * it is queued or running are counted and logged, not run again). Any
 * thread; the _locked form with repl.lock held.
 */
void fence_local_io_error(struct repl *r, int err, uint64_t sector,
			  uint32_t nr_sectors, bool write);
void fence_local_io_error_locked(struct repl *r, int err, uint64_t sector,
				 uint32_t nr_sectors, bool write);

/* Status fields "suspended", "suspended_why", "peer_outdated", "fencing"
 * and "handlers" (docs/control-socket.md). Lock not held. */
void fence_status(struct repl *r, json_t *o);

/* Register "resume-io" on @ctl (before ctl_start). 0 or -errno. */
int fence_register(struct ctl_server *ctl, struct daemon *d);

#endif
