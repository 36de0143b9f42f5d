/* SPDX-License-Identifier: MIT */
/*
 * repl_ — replication of one resource: the role and state machine (sm_),
 * the connection to the peer (conn_), the primary's side of every write
 * (DATA out, ACK_RECV / ACK_WRITE / BARRIER_ACK in) and the secondary's
 * (DATA in, written in order by a worker thread, acknowledged).
 *
 * Threads:
 *  - the data paths (path_, one per front-end thread) call repl_write(),
 *    repl_flush(), repl_app_completed() and repl_may_write();
 *  - the connection thread runs the conn_ callbacks: STATE exchange, acks;
 *  - the apply worker (secondary) writes received DATA to the backing
 *    device in the order it arrived and sends the acks;
 *  - the control thread runs repl_role(), repl_new_current_uuid(),
 *    repl_status().
 *
 * A peer completion (the repl_done_fn) is called exactly once for every
 * repl_write()/repl_flush() that returned 0, on the connection thread (or
 * the thread that calls repl_stop()): res 0 when the peer has the write as
 * the protocol promises, < 0 when it does not (not sent, connection lost
 * before the ack, the peer's write failed): then the caller marks the
 * range in the bitmap before it completes the write to the application.
 * The payload buffer must stay untouched until then: the completion comes
 * only after the transport let go of it.
 *
 * The whole scheme (epochs, barriers, what the secondary promises):
 * docs/replication.md, "The write path".
 */
#ifndef DUET_REPL_H
#define DUET_REPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "mdio.h"
#include "meta.h"

struct repl;
struct ctl_server;

struct repl_params {
	const struct cfg_resource *cfg;
	const struct cfg_node *self;
	const struct cfg_node *peer;
	struct mdio *md;		/* loaded; its superblock holds the UUIDs */
	struct meta *meta;
	const char *backing;		/* path: the apply worker's own fd */
	uint64_t data_bytes;		/* device data size */
	struct ctl_server *ctl;		/* events; may be NULL */
};

/* Create (no threads yet). NULL with errno. */
struct repl *repl_create(const struct repl_params *p);
/* Start the apply worker and the connection. 0 or -errno. */
int repl_start(struct repl *r);
/* Disconnect (every pending peer completion is called with -ECONNRESET),
 * stop the threads. Any thread but the connection's. */
void repl_stop(struct repl *r);
void repl_destroy(struct repl *r);

/* The events go to @ctl from now on (the control server is created after
 * the resource). */
void repl_set_ctl(struct repl *r, struct ctl_server *ctl);

/* What a data path asks of the peer. */
struct repl_io {
	uint8_t op;		/* ENG_OP_WRITE, _DISCARD, _WRITE_ZEROES */
	bool fua;
	uint64_t sector;
	uint32_t len;		/* bytes */
	const void *buf;	/* WRITE: len bytes */
};

typedef void (*repl_done_fn)(void *arg, uint32_t cookie, int res);

/*
 * May this node's device change data? false on a Secondary whose disk has
 * a generation (the path answers -EROFS); true on the Primary, and on a
 * disk that was never given a generation (nothing to protect yet). Any
 * thread, cheap.
 */
bool repl_may_write(struct repl *r);

/*
 * Overlapping changes in flight are serialized (ival.h): a data path takes
 * the range of every data-changing request before it starts it and gives
 * it back after the request completed on both sides. Path @id registers
 * how to wake its thread (before I/O starts); repl_range_take() returns
 * -EBUSY when the range overlaps one held, and @kick(@arg) is called once
 * something was given back (then try again). Path threads.
 */
void repl_set_waker(struct repl *r, unsigned int id, void (*kick)(void *),
		    void *arg);
int repl_range_take(struct repl *r, unsigned int id, uint64_t sector,
		    uint64_t nr, uint32_t *handle);
void repl_range_put(struct repl *r, uint32_t handle);
/*
 * The resync thread's form: wait until the range is free (0), or until
 * *@stop is set and repl_range_kick() was called (-ECANCELED).
 */
int repl_range_take_wait(struct repl *r, uint64_t sector, uint64_t nr,
			 uint32_t *handle, const bool *stop);
void repl_range_kick(struct repl *r);

/*
 * Send @io to the peer. 0: @done(@arg, @cookie, res) follows exactly once.
 * -ENOTCONN (not replicating: the caller marks the bitmap at once),
 * other -errno likewise. Path threads.
 */
int repl_write(struct repl *r, const struct repl_io *io, repl_done_fn done,
	       void *arg, uint32_t cookie);

/*
 * An application FLUSH: close the epoch with a flushing BARRIER. Under
 * protocol C, @done follows the peer's BARRIER_ACK (its disk is flushed);
 * under A and B, once the BARRIER is handed to the transport. Returns like
 * repl_write; -ENOTCONN means there is nothing to wait for.
 */
int repl_flush(struct repl *r, repl_done_fn done, void *arg, uint32_t cookie);

/* A write completed to the application (the next write opens an epoch). */
void repl_app_completed(struct repl *r);

/*
 * Local disk failure (diskless.c; docs/replication.md, "Local disk
 * failure"). repl_local_disk: may the data paths use the backing disk
 * (false once it was detached)? Any thread, cheap.
 */
bool repl_local_disk(struct repl *r);
/*
 * A path's backing I/O @op on [@sector, +@nr_sectors) failed with @err.
 * on-io-error detach: the disk is detached (Failed, then Diskless), and
 * true says the caller serves the request through the peer instead;
 * pass-on: false, the error goes to the application. Path threads.
 */
bool repl_io_error(struct repl *r, unsigned int op, uint64_t sector,
		   uint32_t nr_sectors, int err);
/*
 * Read [@sector, +@len bytes) from the peer's disk into @buf (a node
 * without a disk). 0: @done(@arg, @cookie, res) follows exactly once, after
 * the data is in @buf (res 0) or with -errno; -ENOTCONN (no connected
 * UpToDate peer), -EOPNOTSUPP (the peer cannot), -EAGAIN otherwise nothing
 * was sent. Path threads.
 */
int repl_read(struct repl *r, uint64_t sector, uint32_t len, void *buf,
	      repl_done_fn done, void *arg, uint32_t cookie);

/*
 * duetctl primary / secondary: through sm_request(); on refusal -errno
 * and @why says why. Control thread.
 */
int repl_role(struct repl *r, bool primary, bool force, char *why,
	      size_t why_len);

/*
 * duetctl new-current-uuid [--clear-bitmap]. With @clear_bitmap: both disks
 * are known identical (just created, zeroed): connected, both take one new
 * generation and become UpToDate without a sync. Control thread.
 */
int repl_new_current_uuid(struct repl *r, bool clear_bitmap, char *why,
			  size_t why_len);
/*
 * duetctl verify: compare the whole device with the peer's by digests
 * (verify-alg), marking differences out of sync. Returns once it started:
 * 0, or -errno with @why (not connected, a resync running, a disk not
 * UpToDate, the peer too old).
 */
int repl_verify(struct repl *r, char *why, size_t why_len);

/* duetctl adjust changed the resource's adjustable keys: re-arm what
 * caches them (the connection's timers). Control thread. */
void repl_adjust(struct repl *r);

/* Add "role", "peer_role", "connection", "disk", ... to @o. */
void repl_status(struct repl *r, json_t *o);

#endif
