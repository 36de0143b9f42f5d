/* SPDX-License-Identifier: MIT */
/*
 * admin_ — the administrative requests on a running two-node resource and
 * what the daemon does with a split brain:
 *
 *  - control commands connect [--discard-my-data], disconnect, invalidate,
 *    invalidate-remote, pause-sync, resume-sync, outdate: each goes through
 *    sm_request() (docs/states.md), then the daemon does what the new state
 *    says: starts or stops the connection (conn_start / conn_stop), moves
 *    the generation UUIDs as docs/generation-uuids.md's lifecycle table
 *    says and persists them, marks the bitmap, starts or pauses a resync;
 *  - the handshake's split-brain verdict, after the after-sb policies: it
 *    is logged with the rule and the policy that decided, and reported on
 *    the events stream ("split-brain"); an unresolved one, like any other
 *    refused handshake, leaves both nodes StandAlone until `connect`;
 *  - the status fields about both ("handshake", "discard_my_data", and with
 *    "verbose" the UUIDs).
 *
 * The functions marked "lock held" run under repl.lock (peer.h); the
 * control handlers take it themselves and never hold it across
 * conn_start()/conn_stop(), whose lost() callback takes it.
 */
#ifndef DUET_ADMIN_H
#define DUET_ADMIN_H

#include <jansson.h>
#include <stdbool.h>

#include "cfg.h"
#include "uuid.h"

struct daemon;
struct ctl_server;
struct repl;

/* Register the commands above on @ctl (before ctl_start). 0 or -errno. */
int admin_register(struct ctl_server *ctl, struct daemon *d);

/*
 * The first STATE exchange of a connection decided @dec (after the
 * policies; @detect is uuid_decide()'s own verdict before them, @policy
 * the one that applied). Records it for status; a split brain is logged and
 * reported as a "split-brain" event. Connection thread, lock held.
 */
void admin_note_handshake(struct repl *r, const struct uuid_decision *detect,
			  const struct uuid_decision *dec,
			  enum cfg_sb_policy policy);

/*
 * The state machine refused the handshake (split brain, unrelated data,
 * two Primaries): it made us StandAlone; tell the peer why and stop the
 * connection until `duetctl connect`. Connection thread, lock held.
 */
void admin_refused(struct repl *r, enum uuid_verdict v, const char *why);

/*
 * A STATE came while a resync runs: follow the peer's pause or resume
 * (PROTO_SF_PAUSED_SYNC), and stop or restart our resync thread to match.
 * Connection thread, lock held.
 */
void admin_resync_follow(struct repl *r);

/*
 * The resync is ending (its last block was acknowledged before a pause took
 * effect): leave PausedSync so that sync-done applies. Lock held.
 */
void admin_sync_ending(struct repl *r);

/* Status fields (see docs/control-socket.md); @verbose adds the UUIDs. */
void admin_status(struct repl *r, json_t *o, bool verbose);

#endif
