// SPDX-License-Identifier: MIT
/*
 * The state machine's transitions. Each request or event has one function
 * below; docs/states.md has the same rules as tables, in the same order.
 * The invariants follow at the end; the names and the change list for the
 * events stream are in sm_names.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "sm.h"
#include "util.h"

/* Short names for the many messages below. */
#define DISK(d) sm_disk_name(d)
#define ROLE(r) sm_role_name(r)

#define sm_say(why, len, err, ...) util_why(err, why, len, __VA_ARGS__)

static bool sm_real_disk(enum sm_disk d)
{
	return d == SM_DISK_INCONSISTENT || d == SM_DISK_OUTDATED ||
	       d == SM_DISK_CONSISTENT || d == SM_DISK_UPTODATE;
}

static bool sm_has_data(enum sm_disk d)
{
	return d == SM_DISK_OUTDATED || d == SM_DISK_CONSISTENT ||
	       d == SM_DISK_UPTODATE;
}

static bool syncing(enum sm_repl r)
{
	return r == SM_REPL_SYNC_SOURCE || r == SM_REPL_SYNC_TARGET ||
	       r == SM_REPL_PAUSED_SYNC;
}

static bool busy_repl(enum sm_repl r)
{
	return syncing(r) || r == SM_REPL_VERIFY_SOURCE ||
	       r == SM_REPL_VERIFY_TARGET;
}

static bool connected(const struct sm_state *s)
{
	return s->conn == SM_CONN_CONNECTED;
}

static void drop_peer(struct sm_state *n)
{
	n->peer_role = SM_ROLE_UNKNOWN;
	n->peer_disk = SM_DISK_UNKNOWN;
	n->repl = SM_REPL_OFF;
}

/* The peer is Primary and reads through this node's disk. */
static bool peer_relies_on_us(const struct sm_state *c)
{
	return connected(c) && c->peer_role == SM_ROLE_PRIMARY &&
	       c->peer_disk != SM_DISK_UPTODATE && c->disk == SM_DISK_UPTODATE;
}

static int peer_relies(char *why, size_t len, const char *what)
{
	return sm_say(
		why, len, -EBUSY,
		"refusing to %s: the peer is Primary without an UpToDate disk and reads this node's data; demote it first",
		what);
}

bool sm_data_access(const struct sm_state *s)
{
	return s->disk == SM_DISK_UPTODATE ||
	       (connected(s) && s->peer_disk == SM_DISK_UPTODATE);
}

bool sm_local_gets_writes(const struct sm_state *s)
{
	return sm_real_disk(s->disk);
}

bool sm_peer_gets_writes(const struct sm_state *s)
{
	return connected(s) && sm_real_disk(s->peer_disk);
}

enum sm_disk sm_disk_from_md(uint32_t md_flags, uint32_t md_peer_flags,
			     enum cfg_fencing fencing)
{
	if (!(md_flags & MD_F_CONSISTENT))
		return SM_DISK_INCONSISTENT;
	if (!(md_flags & MD_F_WAS_UP_TO_DATE))
		return SM_DISK_OUTDATED;
	/* Was UpToDate, but the peer may have written since we went away.
	 * With fencing, only a fenced peer or a handshake settles that. */
	if ((md_peer_flags & MD_PF_PEER_OUTDATED) ||
	    fencing == CFG_FENCE_DONT_CARE)
		return SM_DISK_UPTODATE;
	return SM_DISK_CONSISTENT;
}

uint32_t sm_disk_md_flags(enum sm_disk disk, uint32_t f)
{
	switch (disk) {
	case SM_DISK_UPTODATE:
	case SM_DISK_CONSISTENT:
		return f | MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE;
	case SM_DISK_OUTDATED:
		return (f | MD_F_CONSISTENT) & ~MD_F_WAS_UP_TO_DATE;
	case SM_DISK_INCONSISTENT:
		return f & ~(MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE);
	default:
		return f;
	}
}

void sm_init(struct sm_state *s, enum cfg_fencing fencing,
	     enum cfg_on_io_error on_io_error)
{
	memset(s, 0, sizeof(*s));
	s->role = SM_ROLE_SECONDARY;
	s->disk = SM_DISK_DISKLESS;
	drop_peer(s);
	s->conn = SM_CONN_STANDALONE;
	s->fencing = fencing;
	s->on_io_error = on_io_error;
}

/* Identical data on both sides, now known: nothing newer exists anywhere
 * in a pair, so both are UpToDate. Next to a diskless peer only a
 * Consistent disk learns that (the peer wrote through us, or not at all);
 * Outdated was said on purpose and stays. */
static enum sm_disk after_no_sync(enum sm_disk mine, enum sm_disk peers)
{
	if (sm_has_data(mine) && sm_has_data(peers))
		return SM_DISK_UPTODATE;
	if (mine == SM_DISK_CONSISTENT && !sm_real_disk(peers))
		return SM_DISK_UPTODATE;
	return mine;
}

/*
 * Apply a handshake verdict to @n (whose disk is already the one being
 * compared). Returns 0 with *refused telling whether the caller must drop
 * the connection (or the disk, when @attaching), or -EPROTO when the
 * verdict contradicts the disk states.
 */
static int handshake(struct sm_state *n, enum sm_role prole, enum sm_disk pdisk,
		     enum uuid_verdict v, bool attaching, bool *refused,
		     char *why, size_t len)
{
	*refused = true;
	if ((unsigned int)v >= UUID_VERDICT_COUNT)
		return sm_say(why, len, -EPROTO, "unknown verdict %d", v);
	if (n->role == SM_ROLE_PRIMARY && prole == SM_ROLE_PRIMARY)
		return sm_say(
			why, len, 0,
			"both nodes are Primary (single-primary mode): demote one, then connect again");
	if (uuid_verdict_refuses(v))
		return sm_say(
			why, len, 0,
			"handshake refused (%s): see the log for the UUIDs; to recover from a split brain, run `duetctl connect --discard-my-data` on the node whose changes are to be dropped",
			uuid_verdict_name(v));
	if (uuid_verdict_is_target(v)) {
		if (!sm_real_disk(n->disk) || !sm_has_data(pdisk))
			return sm_say(
				why, len, -EPROTO,
				"verdict %s with local disk %s, peer disk %s",
				uuid_verdict_name(v), DISK(n->disk),
				DISK(pdisk));
		/* DRBD's "I shall become SyncTarget, but I am primary!":
		 * the application has been reading this disk. A Primary
		 * that just attached its disk read the peer's data. */
		if (n->role == SM_ROLE_PRIMARY && !attaching &&
		    n->disk == SM_DISK_UPTODATE)
			return sm_say(
				why, len, 0,
				"this node is Primary but the peer has newer data: demote this node, then connect again (its application has been using older data)");
		n->disk = SM_DISK_INCONSISTENT;
		pdisk = SM_DISK_UPTODATE;
		n->repl = SM_REPL_SYNC_TARGET;
	} else if (uuid_verdict_is_source(v)) {
		if (!sm_has_data(n->disk) || !sm_real_disk(pdisk))
			return sm_say(
				why, len, -EPROTO,
				"verdict %s with local disk %s, peer disk %s",
				uuid_verdict_name(v), DISK(n->disk),
				DISK(pdisk));
		if (prole == SM_ROLE_PRIMARY && pdisk == SM_DISK_UPTODATE)
			return sm_say(
				why, len, 0,
				"the peer is Primary but this node has newer data: demote the peer, then connect again");
		if (n->role == SM_ROLE_PRIMARY && attaching)
			return sm_say(
				why, len, 0,
				"the disk being attached has newer data than the peer this Primary has been reading: demote first");
		/* The UUIDs proved these data the newest: an Outdated or
		 * Consistent source is promoted, as DRBD does. */
		n->disk = SM_DISK_UPTODATE;
		pdisk = SM_DISK_INCONSISTENT;
		n->repl = SM_REPL_SYNC_SOURCE;
	} else {
		enum sm_disk mine = n->disk;

		n->disk = after_no_sync(mine, pdisk);
		pdisk = after_no_sync(pdisk, mine);
		n->repl = SM_REPL_ESTABLISHED;
	}
	*refused = false;
	n->conn = SM_CONN_CONNECTED;
	n->peer_role = prole;
	n->peer_disk = pdisk;
	n->susp = false;
	n->peer_outdated = false;
	n->discard_my_data = false;
	return 0;
}

static int do_primary(const struct sm_state *c, const struct sm_req *r,
		      struct sm_state *n, char *why, size_t len)
{
	bool via_peer = connected(c) && c->peer_disk == SM_DISK_UPTODATE;

	if (c->role == SM_ROLE_PRIMARY)
		return sm_say(why, len, 0, "nothing to do: already Primary");
	if (c->peer_role == SM_ROLE_PRIMARY)
		return sm_say(
			why, len, -EBUSY,
			"refusing: the peer is Primary (single-primary mode); demote it first");
	if (c->conn == SM_CONN_DISCONNECTING)
		return sm_say(
			why, len, -EAGAIN,
			"refusing: a disconnect is in progress; try again when it is done");

	/* With fencing, a node that would become a disconnected Primary
	 * first makes sure the peer cannot: the daemon runs the fence-peer
	 * handler (SM_EV_FENCE_OK) and asks again. */
	if (c->fencing == CFG_FENCE_SUSPEND_IO && !connected(c) &&
	    !c->peer_outdated && !r->force &&
	    (c->disk == SM_DISK_UPTODATE || c->disk == SM_DISK_CONSISTENT))
		return sm_say(
			why, len, -EAGAIN,
			"refusing to become primary while the peer's state is unknown: with fencing suspend-io the fence-peer handler must outdate the peer first; use `duetctl primary --force` only if you know the peer is not Primary");

	switch (c->disk) {
	case SM_DISK_UPTODATE:
		break;
	case SM_DISK_ATTACHING:
	case SM_DISK_FAILED:
		return sm_say(
			why, len, -EAGAIN,
			"refusing to become primary: the local disk is %s; try again when that is done",
			DISK(c->disk));
	case SM_DISK_DISKLESS:
		if (!via_peer)
			return sm_say(
				why, len, -ENODATA,
				"refusing to become primary: no local disk and no connected UpToDate peer to read from");
		break;
	case SM_DISK_CONSISTENT:
		/* Here with dont-care, a fenced peer, or --force. */
		n->disk = SM_DISK_UPTODATE;
		break;
	case SM_DISK_INCONSISTENT:
		/* A resync target reads unsynced blocks from the peer. */
		if (via_peer)
			break;
		/* fall through */
	default:
		if (!r->force)
			return sm_say(
				why, len, -EPERM,
				"refusing to become primary: the local disk is %s; use `duetctl primary --force` only if you know this node has the newest data",
				DISK(c->disk));
		n->disk = SM_DISK_UPTODATE;
		/* A connected peer without good data now syncs from us. */
		if (connected(c) && c->peer_disk == SM_DISK_INCONSISTENT)
			n->repl = SM_REPL_SYNC_SOURCE;
		break;
	}
	n->role = SM_ROLE_PRIMARY;
	return 0;
}

static int do_secondary(const struct sm_state *c, struct sm_state *n, char *why,
			size_t len)
{
	if (c->role == SM_ROLE_SECONDARY)
		return sm_say(why, len, 0, "nothing to do: already Secondary");
	if (c->in_use)
		return sm_say(
			why, len, -EBUSY,
			"refusing to become secondary while the device is in use: unmount or close it first");
	n->role = SM_ROLE_SECONDARY;
	n->susp = false;
	return 0;
}

static int do_connect(const struct sm_state *c, const struct sm_req *r,
		      struct sm_state *n, char *why, size_t len)
{
	if (r->discard_my_data && c->role == SM_ROLE_PRIMARY)
		return sm_say(
			why, len, -EPERM,
			"refusing --discard-my-data on a Primary: demote it first");
	switch (c->conn) {
	case SM_CONN_CONNECTED:
		if (r->discard_my_data)
			return sm_say(
				why, len, -EISCONN,
				"already connected: --discard-my-data only applies to the next handshake; disconnect first");
		return sm_say(why, len, 0, "nothing to do: already connected");
	case SM_CONN_DISCONNECTING:
		return sm_say(
			why, len, -EAGAIN,
			"a disconnect is in progress; try again when it is done");
	case SM_CONN_CONNECTING:
		/* Asked again with another --discard-my-data: update it. */
		if (c->discard_my_data == r->discard_my_data)
			return sm_say(why, len, 0,
				      "nothing to do: already connecting");
		/* fall through */
	default:
		n->conn = SM_CONN_CONNECTING;
		n->discard_my_data = r->discard_my_data;
		return 0;
	}
}

static int do_disconnect(const struct sm_state *c, struct sm_state *n,
			 char *why, size_t len)
{
	switch (c->conn) {
	case SM_CONN_STANDALONE:
	case SM_CONN_DISCONNECTING:
		return sm_say(why, len, 0, "nothing to do: already %s",
			      sm_conn_name(c->conn));
	case SM_CONN_CONNECTING:
		n->conn = SM_CONN_STANDALONE;
		n->discard_my_data = false;
		return 0;
	default:
		break;
	}
	if (c->role == SM_ROLE_PRIMARY && c->disk != SM_DISK_UPTODATE)
		return sm_say(
			why, len, -ENODATA,
			"refusing to disconnect: this Primary's disk is %s, it reads the peer's data; demote first",
			DISK(c->disk));
	if (peer_relies_on_us(c))
		return peer_relies(why, len, "disconnect");
	/* Leaving on purpose: the side that stays Secondary knows it falls
	 * behind and says so, as it does on the peer (SM_EV_PEER_LOST). */
	if (c->role == SM_ROLE_PRIMARY && c->peer_disk == SM_DISK_UPTODATE)
		n->peer_outdated = true;
	if (c->peer_role == SM_ROLE_PRIMARY && c->disk == SM_DISK_UPTODATE)
		n->disk = SM_DISK_OUTDATED;
	n->conn = SM_CONN_DISCONNECTING;
	drop_peer(n);
	return 0;
}

static int do_invalidate(const struct sm_state *c, struct sm_state *n,
			 char *why, size_t len)
{
	if (c->role == SM_ROLE_PRIMARY)
		return sm_say(
			why, len, -EPERM,
			"refusing to invalidate the disk of a Primary: demote it first");
	if (c->disk == SM_DISK_DISKLESS)
		return sm_say(why, len, -ENODEV, "no local disk to invalidate");
	if (!sm_real_disk(c->disk) || c->conn == SM_CONN_DISCONNECTING)
		return sm_say(
			why, len, -EAGAIN,
			"refusing: the disk is %s, the connection %s; try again later",
			DISK(c->disk), sm_conn_name(c->conn));
	if (busy_repl(c->repl))
		return sm_say(
			why, len, -EBUSY,
			"refusing to invalidate: %s is running; wait for it or pause it",
			sm_repl_name(c->repl));
	if (connected(c) && c->peer_disk != SM_DISK_UPTODATE)
		return sm_say(
			why, len, -ENODATA,
			"refusing to invalidate: the peer's disk is %s, there is nothing to resync from",
			DISK(c->peer_disk));
	if (c->disk == SM_DISK_INCONSISTENT)
		return sm_say(
			why, len, 0,
			"the disk is already Inconsistent; the next connect does a full resync");
	n->disk = SM_DISK_INCONSISTENT;
	if (connected(c))
		n->repl = SM_REPL_SYNC_TARGET;
	return 0;
}

static int do_invalidate_remote(const struct sm_state *c, struct sm_state *n,
				char *why, size_t len)
{
	if (!connected(c))
		return sm_say(why, len, -ENOTCONN,
			      "refusing to invalidate the peer: not connected");
	if (busy_repl(c->repl))
		return sm_say(why, len, -EBUSY,
			      "refusing: %s is running; wait for it",
			      sm_repl_name(c->repl));
	if (c->disk != SM_DISK_UPTODATE)
		return sm_say(
			why, len, -EPERM,
			"refusing: the local disk is %s; only an UpToDate disk can be the sync source",
			DISK(c->disk));
	if (!sm_real_disk(c->peer_disk))
		return sm_say(why, len, -ENODEV,
			      "refusing: the peer's disk is %s",
			      DISK(c->peer_disk));
	if (c->peer_role == SM_ROLE_PRIMARY)
		return sm_say(
			why, len, -EPERM,
			"refusing to overwrite the data of the Primary peer: demote it first");
	n->peer_disk = SM_DISK_INCONSISTENT;
	n->repl = SM_REPL_SYNC_SOURCE;
	return 0;
}

static int do_verify(const struct sm_state *c, struct sm_state *n, char *why,
		     size_t len)
{
	if (!connected(c))
		return sm_say(why, len, -ENOTCONN,
			      "cannot verify: not connected");
	if (c->repl != SM_REPL_ESTABLISHED)
		return sm_say(why, len, -EBUSY, "cannot verify: %s is running",
			      sm_repl_name(c->repl));
	if (c->disk != SM_DISK_UPTODATE || c->peer_disk != SM_DISK_UPTODATE)
		return sm_say(
			why, len, -ENODATA,
			"cannot verify: both disks must be UpToDate (here %s, peer %s)",
			DISK(c->disk), DISK(c->peer_disk));
	n->repl = SM_REPL_VERIFY_SOURCE;
	return 0;
}

static int do_pause_resume(const struct sm_state *c, bool pause,
			   struct sm_state *n, char *why, size_t len)
{
	if (c->repl == SM_REPL_PAUSED_SYNC) {
		if (pause)
			return sm_say(why, len, 0,
				      "nothing to do: the resync is paused");
		n->repl = c->disk == SM_DISK_INCONSISTENT ?
				  SM_REPL_SYNC_TARGET :
				  SM_REPL_SYNC_SOURCE;
		return 0;
	}
	if (c->repl == SM_REPL_SYNC_SOURCE || c->repl == SM_REPL_SYNC_TARGET) {
		if (!pause)
			return sm_say(why, len, 0,
				      "nothing to do: the resync is running");
		n->repl = SM_REPL_PAUSED_SYNC;
		return 0;
	}
	return sm_say(why, len, -EINVAL, "no resync to %s (replication is %s)",
		      pause ? "pause" : "resume", sm_repl_name(c->repl));
}

static int do_outdate(const struct sm_state *c, struct sm_state *n, char *why,
		      size_t len)
{
	if (c->role == SM_ROLE_PRIMARY)
		return sm_say(why, len, -EPERM,
			      "refusing to outdate the disk of a Primary");
	if (connected(c))
		return sm_say(
			why, len, -EISCONN,
			"refusing to outdate while connected: the peer knows this disk is current; disconnect first");
	if (c->conn == SM_CONN_DISCONNECTING)
		return sm_say(
			why, len, -EAGAIN,
			"a disconnect is in progress; try again when it is done");
	switch (c->disk) {
	case SM_DISK_DISKLESS:
		return sm_say(why, len, -ENODEV, "no local disk to outdate");
	case SM_DISK_ATTACHING:
	case SM_DISK_FAILED:
		return sm_say(why, len, -EAGAIN,
			      "the disk is %s; try again later", DISK(c->disk));
	case SM_DISK_INCONSISTENT:
	case SM_DISK_OUTDATED:
		return sm_say(why, len, 0,
			      "nothing to do: the disk is already %s",
			      DISK(c->disk));
	default:
		n->disk = SM_DISK_OUTDATED;
		return 0;
	}
}

static int do_attach(const struct sm_state *c, struct sm_state *n, char *why,
		     size_t len)
{
	if (c->disk == SM_DISK_ATTACHING)
		return sm_say(why, len, 0, "nothing to do: already attaching");
	if (c->disk != SM_DISK_DISKLESS)
		return sm_say(
			why, len, -EBUSY,
			"a disk is already attached (%s); detach it first",
			DISK(c->disk));
	/* Its data may not be what the application has been reading; only
	 * a handshake with the peer it reads from can tell. */
	if (c->role == SM_ROLE_PRIMARY && !sm_data_access(c))
		return sm_say(
			why, len, -ENODATA,
			"refusing to attach under a Primary without a connected UpToDate peer: the disk may hold other data than its application used; demote first");
	n->disk = SM_DISK_ATTACHING;
	return 0;
}

static int do_detach(const struct sm_state *c, struct sm_state *n, char *why,
		     size_t len)
{
	switch (c->disk) {
	case SM_DISK_DISKLESS:
	case SM_DISK_FAILED:
		return sm_say(why, len, 0, "nothing to do: the disk is %s",
			      DISK(c->disk));
	case SM_DISK_ATTACHING:
		return sm_say(
			why, len, -EAGAIN,
			"the disk is still attaching; try again when it is done");
	default:
		break;
	}
	if (c->role == SM_ROLE_PRIMARY &&
	    !(connected(c) && c->peer_disk == SM_DISK_UPTODATE))
		return sm_say(
			why, len, -ENODATA,
			"refusing to detach: this Primary has no other access to UpToDate data (the peer is %s, %s); demote first",
			sm_conn_name(c->conn), DISK(c->peer_disk));
	if (peer_relies_on_us(c))
		return peer_relies(why, len, "detach");
	n->disk = SM_DISK_FAILED;
	if (busy_repl(c->repl))
		n->repl = SM_REPL_ESTABLISHED;
	return 0;
}

static int do_down(const struct sm_state *c, struct sm_state *n, char *why,
		   size_t len)
{
	if (c->in_use)
		return sm_say(
			why, len, -EBUSY,
			"refusing to go down while the device is in use: unmount or close it first");
	if (peer_relies_on_us(c))
		return peer_relies(why, len, "go down");
	sm_init(n, c->fencing, c->on_io_error);
	n->in_use = c->in_use;
	if (!sm_changes(c, n, NULL, 0))
		return sm_say(why, len, 0, "nothing to do: already down");
	return 0;
}

static int do_resume_io(const struct sm_state *c, struct sm_state *n, char *why,
			size_t len)
{
	if (!c->susp)
		return sm_say(why, len, 0,
			      "nothing to do: I/O is not suspended");
	n->susp = false;
	return sm_say(
		why, len, 0,
		"I/O resumed without fencing the peer: if the peer becomes Primary too, the data will diverge (split brain)");
}

static int ev_attached(const struct sm_state *c, const struct sm_req *r,
		       struct sm_state *n, char *why, size_t len)
{
	bool refused;
	int ret;

	if (c->disk != SM_DISK_ATTACHING)
		return sm_say(why, len, -EPROTO,
			      "attached while the disk is %s", DISK(c->disk));
	n->disk = sm_disk_from_md(r->md_flags, r->md_peer_flags, c->fencing);
	if (!connected(c)) {
		if (c->role == SM_ROLE_PRIMARY) {
			n->disk = SM_DISK_DISKLESS;
			return sm_say(
				why, len, 0,
				"disk not used: the peer was lost while attaching under a Primary");
		}
		n->peer_outdated = r->md_peer_flags & MD_PF_PEER_OUTDATED;
		return 0;
	}
	ret = handshake(n, c->peer_role, c->peer_disk, r->verdict, true,
			&refused, why, len);
	if (ret)
		return ret;
	if (refused) {
		*n = *c;
		n->disk = SM_DISK_DISKLESS;
	}
	return 0;
}

static int ev_connected(const struct sm_state *c, const struct sm_req *r,
			struct sm_state *n, char *why, size_t len)
{
	bool refused;
	int ret;

	if (c->conn != SM_CONN_CONNECTING)
		return sm_say(why, len, -EPROTO, "handshake while %s",
			      sm_conn_name(c->conn));
	if (r->peer_role != SM_ROLE_SECONDARY &&
	    r->peer_role != SM_ROLE_PRIMARY)
		return sm_say(why, len, -EPROTO, "peer role %d", r->peer_role);
	if ((unsigned int)r->peer_disk >= SM_DISK_COUNT ||
	    r->peer_disk == SM_DISK_UNKNOWN)
		return sm_say(why, len, -EPROTO, "peer disk %d", r->peer_disk);
	ret = handshake(n, r->peer_role, r->peer_disk, r->verdict, false,
			&refused, why, len);
	if (ret)
		return ret;
	if (refused) {
		*n = *c;
		n->conn = SM_CONN_STANDALONE;
		n->discard_my_data = false;
	}
	return 0;
}

static enum sm_repl mirror_repl(enum sm_repl r)
{
	switch (r) {
	case SM_REPL_SYNC_SOURCE:
		return SM_REPL_SYNC_TARGET;
	case SM_REPL_SYNC_TARGET:
		return SM_REPL_SYNC_SOURCE;
	case SM_REPL_VERIFY_SOURCE:
		return SM_REPL_VERIFY_TARGET;
	case SM_REPL_VERIFY_TARGET:
		return SM_REPL_VERIFY_SOURCE;
	default:
		return r;
	}
}

static int ev_peer_state(const struct sm_state *c, const struct sm_req *r,
			 struct sm_state *n, char *why, size_t len)
{
	if (!connected(c))
		return sm_say(why, len, -EPROTO, "peer state while %s",
			      sm_conn_name(c->conn));
	if ((r->peer_role != SM_ROLE_SECONDARY &&
	     r->peer_role != SM_ROLE_PRIMARY) ||
	    (unsigned int)r->peer_disk >= SM_DISK_COUNT ||
	    r->peer_disk == SM_DISK_UNKNOWN ||
	    (unsigned int)r->peer_repl >= SM_REPL_COUNT ||
	    r->peer_repl == SM_REPL_OFF)
		return sm_say(why, len, -EPROTO, "malformed peer state");
	n->peer_role = r->peer_role;
	n->peer_disk = r->peer_disk;
	n->repl = mirror_repl(r->peer_repl);
	/* The peer attached a disk and its handshake (SM_EV_ATTACHED there)
	 * found the same data as ours: then both are UpToDate. */
	if (n->repl == SM_REPL_ESTABLISHED)
		n->disk = after_no_sync(c->disk, r->peer_disk);
	/* The peer started a resync towards us (its invalidate-remote, or
	 * its primary --force next to our Inconsistent disk). */
	if (n->repl == SM_REPL_SYNC_TARGET && !syncing(c->repl)) {
		if (!sm_real_disk(c->disk) ||
		    (c->role == SM_ROLE_PRIMARY && c->disk == SM_DISK_UPTODATE))
			return sm_say(
				why, len, -EPROTO,
				"the peer cannot resync onto a %s disk of a %s",
				DISK(c->disk), ROLE(c->role));
		n->disk = SM_DISK_INCONSISTENT;
	}
	/* The peer's handshake made us its source: the UUIDs proved our
	 * data the newest, as in handshake(). */
	if (n->repl == SM_REPL_SYNC_SOURCE && !syncing(c->repl) &&
	    sm_has_data(c->disk))
		n->disk = SM_DISK_UPTODATE;
	return 0;
}

static int ev_peer_lost(const struct sm_state *c, const struct sm_req *r,
			struct sm_state *n, char *why, size_t len)
{
	if (c->conn == SM_CONN_DISCONNECTING) {
		n->conn = SM_CONN_STANDALONE;
		return 0;
	}
	if (!connected(c))
		return sm_say(why, len, 0, "nothing to do: not connected");
	n->conn = SM_CONN_CONNECTING;
	drop_peer(n);
	if (r->graceful) {
		/* Mirror of do_disconnect() on the side that left. */
		if (c->peer_role == SM_ROLE_PRIMARY &&
		    c->disk == SM_DISK_UPTODATE)
			n->disk = SM_DISK_OUTDATED;
		if (c->role == SM_ROLE_PRIMARY &&
		    c->peer_disk == SM_DISK_UPTODATE)
			n->peer_outdated = true;
		return 0;
	}
	if (c->fencing != CFG_FENCE_SUSPEND_IO)
		return 0;
	/* The peer may be (or become) Primary now and write; until it is
	 * fenced, a Primary here must not complete writes it alone holds and
	 * a Secondary must not take over as if it had the newest data. */
	if (c->role == SM_ROLE_PRIMARY && c->peer_disk == SM_DISK_UPTODATE) {
		n->susp = true;
		return sm_say(
			why, len, 0,
			"peer lost: I/O suspended until the fence-peer handler outdates it or it returns");
	}
	if (c->role == SM_ROLE_SECONDARY && c->disk == SM_DISK_UPTODATE)
		n->disk = SM_DISK_CONSISTENT;
	return 0;
}

static int ev_fence(const struct sm_state *c, bool ok, struct sm_state *n,
		    char *why, size_t len)
{
	if (connected(c))
		return sm_say(
			why, len, 0,
			"the peer is connected again: fencing result ignored");
	if (!ok)
		return sm_say(
			why, len, 0, "the fence-peer handler failed: %s",
			c->susp ?
				"I/O stays suspended until the peer returns or `duetctl resume-io`" :
				"promotion still needs the peer outdated, or --force");
	n->peer_outdated = true;
	n->susp = false;
	if (c->disk == SM_DISK_CONSISTENT)
		n->disk = SM_DISK_UPTODATE;
	return 0;
}

static int ev_sync_done(const struct sm_state *c, struct sm_state *n, char *why,
			size_t len)
{
	if (c->repl == SM_REPL_SYNC_SOURCE) {
		n->peer_disk = SM_DISK_UPTODATE;
	} else if (c->repl == SM_REPL_SYNC_TARGET) {
		n->disk = SM_DISK_UPTODATE;
	} else {
		return sm_say(why, len, -EPROTO, "resync done while %s",
			      sm_repl_name(c->repl));
	}
	n->repl = SM_REPL_ESTABLISHED;
	return 0;
}

static int ev_io_error(const struct sm_state *c, struct sm_state *n, char *why,
		       size_t len)
{
	if (c->disk == SM_DISK_DISKLESS)
		return sm_say(why, len, -EPROTO, "I/O error without a disk");
	if (c->disk == SM_DISK_FAILED)
		return sm_say(why, len, 0, "the disk is already detaching");
	if (c->on_io_error == CFG_IOERR_PASS_ON)
		return sm_say(
			why, len, 0,
			"I/O error passed to the application; the block is marked out of sync");
	n->disk = SM_DISK_FAILED;
	if (busy_repl(c->repl))
		n->repl = SM_REPL_ESTABLISHED;
	return sm_say(
		why, len, 0, "local I/O error: detaching the disk%s",
		c->role == SM_ROLE_PRIMARY && !sm_data_access(n) ?
			"; this Primary has no access to UpToDate data now" :
			"");
}

static int dispatch(const struct sm_state *c, const struct sm_req *r,
		    struct sm_state *n, char *why, size_t len)
{
	switch (r->type) {
	case SM_REQ_PRIMARY:
		return do_primary(c, r, n, why, len);
	case SM_REQ_SECONDARY:
		return do_secondary(c, n, why, len);
	case SM_REQ_CONNECT:
		return do_connect(c, r, n, why, len);
	case SM_REQ_DISCONNECT:
		return do_disconnect(c, n, why, len);
	case SM_REQ_INVALIDATE:
		return do_invalidate(c, n, why, len);
	case SM_REQ_INVALIDATE_REMOTE:
		return do_invalidate_remote(c, n, why, len);
	case SM_REQ_VERIFY:
		return do_verify(c, n, why, len);
	case SM_REQ_PAUSE_SYNC:
		return do_pause_resume(c, true, n, why, len);
	case SM_REQ_RESUME_SYNC:
		return do_pause_resume(c, false, n, why, len);
	case SM_REQ_OUTDATE:
		return do_outdate(c, n, why, len);
	case SM_REQ_ATTACH:
		return do_attach(c, n, why, len);
	case SM_REQ_DETACH:
		return do_detach(c, n, why, len);
	case SM_REQ_DOWN:
		return do_down(c, n, why, len);
	case SM_REQ_RESUME_IO:
		return do_resume_io(c, n, why, len);
	case SM_EV_ATTACHED:
		return ev_attached(c, r, n, why, len);
	case SM_EV_DETACHED:
		if (c->disk != SM_DISK_FAILED && c->disk != SM_DISK_ATTACHING)
			return sm_say(why, len, -EPROTO,
				      "detached while the disk is %s",
				      DISK(c->disk));
		n->disk = SM_DISK_DISKLESS;
		return 0;
	case SM_EV_CONNECTED:
		return ev_connected(c, r, n, why, len);
	case SM_EV_PEER_STATE:
		return ev_peer_state(c, r, n, why, len);
	case SM_EV_PEER_LOST:
		return ev_peer_lost(c, r, n, why, len);
	case SM_EV_SYNC_DONE:
		return ev_sync_done(c, n, why, len);
	case SM_EV_IO_ERROR:
		return ev_io_error(c, n, why, len);
	case SM_EV_FENCE_OK:
		return ev_fence(c, true, n, why, len);
	case SM_EV_FENCE_FAILED:
		return ev_fence(c, false, n, why, len);
	case SM_EV_VERIFY_DONE:
		if (c->repl != SM_REPL_VERIFY_SOURCE &&
		    c->repl != SM_REPL_VERIFY_TARGET)
			return sm_say(why, len, -EPROTO, "verify done while %s",
				      sm_repl_name(c->repl));
		n->repl = SM_REPL_ESTABLISHED;
		return 0;
	default:
		return sm_say(why, len, -EINVAL, "unknown request %d", r->type);
	}
}

int sm_request(const struct sm_state *cur, const struct sm_req *r,
	       struct sm_state *next, char *why, size_t len)
{
	char bad[160];
	struct sm_state n = *cur;
	int ret;

	if (why && len)
		why[0] = '\0';
	if (!sm_state_valid(cur, bad, sizeof(bad))) {
		ret = sm_say(why, len, -EINVAL, "invalid current state: %s",
			     bad);
		goto out_refuse;
	}
	ret = dispatch(cur, r, &n, why, len);
	if (ret)
		goto out_refuse;
	/* Requests are designed to keep the invariants; an event whose
	 * details contradict the state (a confused peer) cannot be applied. */
	if (!sm_state_valid(&n, bad, sizeof(bad))) {
		ret = sm_say(why, len, -EPROTO,
			     "%s would lead to an invalid state: %s",
			     sm_req_name(r->type), bad);
		goto out_refuse;
	}
	*next = n;
	return 0;

out_refuse:
	*next = *cur;
	return ret;
}

/* ---- invariants ---------------------------------------------------- */

#define BROKEN(...) (sm_say(why, len, 0, __VA_ARGS__), false)

static bool repl_valid(const struct sm_state *s, char *why, size_t len)
{
	bool src = s->disk == SM_DISK_UPTODATE &&
		   s->peer_disk == SM_DISK_INCONSISTENT;
	bool tgt = s->disk == SM_DISK_INCONSISTENT &&
		   s->peer_disk == SM_DISK_UPTODATE;

	switch (s->repl) {
	case SM_REPL_SYNC_SOURCE:
		return src ||
		       BROKEN("SyncSource needs UpToDate here and Inconsistent on the peer");
	case SM_REPL_SYNC_TARGET:
		return tgt ||
		       BROKEN("SyncTarget needs Inconsistent here and UpToDate on the peer");
	case SM_REPL_PAUSED_SYNC:
		return src || tgt ||
		       BROKEN("PausedSync needs one UpToDate and one Inconsistent disk");
	case SM_REPL_VERIFY_SOURCE:
	case SM_REPL_VERIFY_TARGET:
		return (s->disk == SM_DISK_UPTODATE &&
			s->peer_disk == SM_DISK_UPTODATE) ||
		       BROKEN("verify needs both disks UpToDate");
	case SM_REPL_ESTABLISHED:
		return !(src || tgt) ||
		       BROKEN("an UpToDate and an Inconsistent disk connected must resync");
	default:
		return true;
	}
}

bool sm_state_valid(const struct sm_state *s, char *why, size_t len)
{
	bool conn;

	if (s->role != SM_ROLE_PRIMARY && s->role != SM_ROLE_SECONDARY)
		return BROKEN("the local role must be Primary or Secondary");
	if ((unsigned int)s->disk >= SM_DISK_COUNT ||
	    s->disk == SM_DISK_UNKNOWN)
		return BROKEN("bad local disk state %d", s->disk);
	if ((unsigned int)s->peer_role >= SM_ROLE_COUNT ||
	    (unsigned int)s->peer_disk >= SM_DISK_COUNT ||
	    (unsigned int)s->conn >= SM_CONN_COUNT ||
	    (unsigned int)s->repl >= SM_REPL_COUNT)
		return BROKEN("a state is out of range");
	conn = s->conn == SM_CONN_CONNECTED;
	if (conn != (s->peer_role != SM_ROLE_UNKNOWN) ||
	    conn != (s->peer_disk != SM_DISK_UNKNOWN))
		return BROKEN(
			"the peer's role and disk are known exactly while Connected");
	if (conn != (s->repl != SM_REPL_OFF))
		return BROKEN("replication is Off exactly while not Connected");
	if (s->role == SM_ROLE_PRIMARY && s->peer_role == SM_ROLE_PRIMARY)
		return BROKEN("two Primaries");
	if ((s->role == SM_ROLE_PRIMARY &&
	     (s->disk == SM_DISK_OUTDATED || s->disk == SM_DISK_CONSISTENT)) ||
	    (s->peer_role == SM_ROLE_PRIMARY &&
	     (s->peer_disk == SM_DISK_OUTDATED ||
	      s->peer_disk == SM_DISK_CONSISTENT)))
		return BROKEN(
			"a Primary's disk is never Outdated or Consistent");
	if (!repl_valid(s, why, len))
		return false;
	if (conn && (s->disk == SM_DISK_CONSISTENT ||
		     s->peer_disk == SM_DISK_CONSISTENT))
		return BROKEN("Consistent is resolved by the handshake");
	if (conn &&
	    ((s->disk == SM_DISK_OUTDATED && sm_real_disk(s->peer_disk)) ||
	     (s->peer_disk == SM_DISK_OUTDATED && sm_real_disk(s->disk))))
		return BROKEN(
			"Outdated while connected only next to a peer without a disk");
	if (s->susp && !(s->role == SM_ROLE_PRIMARY && !conn))
		return BROKEN(
			"I/O is suspended only on a Primary that lost its peer");
	if (s->peer_outdated && conn)
		return BROKEN(
			"peer-outdated is knowledge about a disconnected peer");
	if (s->discard_my_data && s->conn != SM_CONN_CONNECTING)
		return BROKEN(
			"--discard-my-data is pending only while connecting");
	if ((unsigned int)s->fencing > CFG_FENCE_SUSPEND_IO ||
	    (unsigned int)s->on_io_error > CFG_IOERR_PASS_ON)
		return BROKEN("bad policy value");
	return true;
}
