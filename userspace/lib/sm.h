/* SPDX-License-Identifier: MIT */
/*
 * sm — the role, disk, connection and replication state machine.
 *
 * One function, sm_request(), decides every state change: administrative
 * requests (duetctl primary, connect, invalidate, ...) may be refused with
 * a reason a person can act on; events (the peer connected, a local I/O
 * error, a resync finished, ...) are facts and always produce a next
 * state, unless they cannot happen in the current state (-EPROTO: a bug
 * in the caller or the peer). The daemon compares the old and new states
 * to know what to do (start a resync, suspend I/O, drop the connection)
 * and reports the difference on the events stream (sm_diff_str()).
 *
 * The rules, one table per request: docs/states.md. Pure logic: no I/O.
 */
#ifndef DUET_SM_H
#define DUET_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "uuid.h"

enum sm_role {
	SM_ROLE_UNKNOWN = 0, /* the peer's, while not connected */
	SM_ROLE_SECONDARY,
	SM_ROLE_PRIMARY,
	SM_ROLE_COUNT
};

/* Ordered: a larger value never holds worse data (DRBD's order). */
enum sm_disk {
	SM_DISK_DISKLESS = 0,
	SM_DISK_ATTACHING, /* reading the metadata */
	SM_DISK_FAILED, /* detaching after an error or a request */
	SM_DISK_INCONSISTENT, /* resync target, or never synced */
	SM_DISK_OUTDATED, /* consistent, known not to be the newest */
	SM_DISK_UNKNOWN, /* the peer's disk, while not connected */
	SM_DISK_CONSISTENT, /* consistent, newest unless the peer wrote */
	SM_DISK_UPTODATE,
	SM_DISK_COUNT
};

enum sm_conn {
	SM_CONN_STANDALONE = 0, /* not trying to connect */
	SM_CONN_CONNECTING, /* trying, or waiting for the peer */
	SM_CONN_CONNECTED, /* handshake done, peer's state known */
	SM_CONN_DISCONNECTING, /* tearing the connection down */
	SM_CONN_COUNT
};

enum sm_repl {
	SM_REPL_OFF = 0, /* not connected */
	SM_REPL_ESTABLISHED, /* connected, replicating writes */
	SM_REPL_SYNC_SOURCE,
	SM_REPL_SYNC_TARGET,
	SM_REPL_PAUSED_SYNC, /* either; the disk states tell which */
	SM_REPL_VERIFY_SOURCE,
	SM_REPL_VERIFY_TARGET,
	SM_REPL_COUNT
};

struct sm_state {
	enum sm_role role; /* this node: Primary or Secondary */
	enum sm_disk disk;
	enum sm_role peer_role; /* Unknown unless Connected */
	enum sm_disk peer_disk; /* SM_DISK_UNKNOWN unless Connected */
	enum sm_conn conn;
	enum sm_repl repl; /* Off unless Connected */
	bool susp; /* I/O suspended by fencing */
	bool peer_outdated; /* the (disconnected) peer's disk is
					 * known Outdated: fenced, or it left
					 * gracefully; md's MD_PF_PEER_OUTDATED */
	bool discard_my_data; /* connect --discard-my-data, pending
					 * until the handshake */
	/* Set by the daemon, never by sm_request(): */
	bool in_use; /* the device is open */
	enum cfg_fencing fencing;
	enum cfg_on_io_error on_io_error;
};

enum sm_req_type {
	/* administrative requests: may be refused */
	SM_REQ_PRIMARY = 0, /* .force: primary --force */
	SM_REQ_SECONDARY,
	SM_REQ_CONNECT, /* .discard_my_data */
	SM_REQ_DISCONNECT,
	SM_REQ_INVALIDATE,
	SM_REQ_INVALIDATE_REMOTE,
	SM_REQ_VERIFY,
	SM_REQ_PAUSE_SYNC,
	SM_REQ_RESUME_SYNC,
	SM_REQ_OUTDATE,
	SM_REQ_ATTACH,
	SM_REQ_DETACH,
	SM_REQ_DOWN,
	SM_REQ_RESUME_IO, /* unfreeze I/O without fencing the peer */
	/* events: facts reported by the daemon */
	SM_EV_ATTACHED, /* md read: .md_flags, .md_peer_flags, and
				 * .verdict when Connected */
	SM_EV_DETACHED, /* backing device released */
	SM_EV_CONNECTED, /* handshake done: .peer_role, .peer_disk,
				 * .verdict (after split-brain policies) */
	SM_EV_PEER_STATE, /* the peer's state changed: .peer_role,
				 * .peer_disk, .peer_repl (its own view) */
	SM_EV_PEER_LOST, /* .graceful: the peer disconnected on purpose */
	SM_EV_SYNC_DONE,
	SM_EV_IO_ERROR, /* local disk I/O error */
	SM_EV_FENCE_OK, /* fence-peer handler outdated the peer */
	SM_EV_FENCE_FAILED,
	SM_EV_VERIFY_DONE,
	SM_REQ_COUNT
};

struct sm_req {
	enum sm_req_type type;
	bool force;
	bool discard_my_data;
	bool graceful;
	enum sm_role peer_role;
	enum sm_disk peer_disk;
	enum sm_repl peer_repl;
	enum uuid_verdict verdict;
	uint32_t md_flags; /* enum md_flags */
	uint32_t md_peer_flags; /* enum md_peer_flags */
};

/*
 * Apply @r to @cur. Returns 0 with the next state in @next (equal to @cur
 * when there is nothing to do; @why then says so, or explains an event's
 * consequence such as a refused handshake), or a negative errno with
 * @next = *@cur and @why saying what was wrong and what to do:
 *  -EPERM   a rule forbids it (Outdated disk, would discard a Primary's data)
 *  -EBUSY   the peer is Primary, the device is in use, a resync is running
 *  -EAGAIN  a transient state (attaching, disconnecting) or fencing needed
 *  -ENODATA no access to UpToDate data would remain
 *  -ENODEV  no local disk / the peer has no disk
 *  -ENOTCONN, -EISCONN  needs (no) connection
 *  -EINVAL  nothing to act on (no resync to pause), bad request
 *  -EPROTO  an event that cannot happen in this state
 * @why may be NULL when @len is 0.
 */
int sm_request(const struct sm_state *cur, const struct sm_req *r,
	       struct sm_state *next, char *why, size_t len);

/*
 * The invariants every state must satisfy, whatever happened (see
 * docs/states.md): e.g. never two Primaries, Connected iff the peer's
 * state is known, SyncTarget implies an Inconsistent disk. When false and
 * @why is given, it names the first broken invariant.
 */
bool sm_state_valid(const struct sm_state *s, char *why, size_t len);

/* A Primary here can serve I/O: UpToDate locally, or via a connected
 * UpToDate peer. Requests never take that away; events may. */
bool sm_data_access(const struct sm_state *s);
/* Writes land on the local disk (it is attached and being kept current). */
bool sm_local_gets_writes(const struct sm_state *s);
/* Writes are replicated to the peer's disk. */
bool sm_peer_gets_writes(const struct sm_state *s);

/* The disk state an attached disk starts in, from its md flags. */
enum sm_disk sm_disk_from_md(uint32_t md_flags, uint32_t md_peer_flags,
			     enum cfg_fencing fencing);
/* @old_flags updated so that they persist @disk (no change when the disk
 * state says nothing about the data, e.g. Failed). */
uint32_t sm_disk_md_flags(enum sm_disk disk, uint32_t old_flags);

/* The state after `duetctl up` before attach/connect. */
void sm_init(struct sm_state *s, enum cfg_fencing fencing,
	     enum cfg_on_io_error on_io_error);

const char *sm_role_name(enum sm_role r);
const char *sm_disk_name(enum sm_disk d);
const char *sm_conn_name(enum sm_conn c);
const char *sm_repl_name(enum sm_repl r);
const char *sm_req_name(enum sm_req_type t);
const char *sm_fencing_name(enum cfg_fencing f);
const char *sm_on_io_error_name(enum cfg_on_io_error e);

/* One changed field, names from the *_name() functions ("yes"/"no"). */
struct sm_change {
	const char *field; /* "role", "disk", "peer-role", ... */
	const char *from;
	const char *to;
};

/* Fields that differ between @a and @b, in a fixed order; returns how many
 * differ (may exceed @max: only @max are stored). */
size_t sm_changes(const struct sm_state *a, const struct sm_state *b,
		  struct sm_change *out, size_t max);
/* "role: Secondary -> Primary, disk: Outdated -> UpToDate"; "" if equal. */
const char *sm_diff_str(const struct sm_state *a, const struct sm_state *b,
			char *buf, size_t len);
/* One line for status output: "Primary/Secondary UpToDate/UpToDate
 * Connected Established". */
const char *sm_state_str(const struct sm_state *s, char *buf, size_t len);

#endif
