// SPDX-License-Identifier: MIT
/*
 * Administrative requests and split-brain handling (see admin.h): the
 * control commands, what each state change makes the daemon do, and the
 * handshake's split-brain report.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "apply.h"
#include "bm.h"
#include "ctl.h"
#include "daemon.h"
#include "fence.h"
#include "log.h"
#include "peer.h"
#include "util.h"

/* ---- split brain and refused handshakes (connection thread) ---- */

/* Rules 200 and up are uuid_sb_resolve()'s: a split brain was found. */
#define SB_FIRST_RULE 200

void admin_note_handshake(struct repl *r, const struct uuid_decision *detect,
			  const struct uuid_decision *dec,
			  enum cfg_sb_policy policy)
{
	const char *pol = dec->rule == 200 ? "discard-my-data" :
					     cfg_sb_policy_name(policy);
	bool sb = detect->verdict == UUID_SPLIT_BRAIN;
	bool resolved = sb && dec->verdict != UUID_SPLIT_BRAIN;
	const char *victim = NULL;
	json_t *x;

	r->last_hs.valid = true;
	r->last_hs.split_brain = sb;
	r->last_hs.resolved = resolved;
	r->last_hs.rule = dec->rule;
	r->last_hs.at = time(NULL);
	snprintf(r->last_hs.verdict, sizeof(r->last_hs.verdict), "%s",
		 uuid_verdict_name(dec->verdict));
	snprintf(r->last_hs.policy, sizeof(r->last_hs.policy), "%s",
		 sb ? pol : "");
	snprintf(r->last_hs.why, sizeof(r->last_hs.why), "%s", dec->why);
	if (!sb)
		return;
	if (resolved) {
		victim = uuid_verdict_is_target(dec->verdict) ?
				 r->p.self->name :
				 r->p.peer->name;
		log_warn("%s: split brain with %s (rule %d: %s); resolved by %s (rule %d): %s becomes the sync target and its changes since the split are discarded",
			 r->p.cfg->name, r->p.peer->name, detect->rule,
			 detect->why, pol, dec->rule, victim);
	} else {
		log_err("%s: split brain with %s, not resolved: %s (policy %s, rule %d). Both nodes stay StandAlone; on the node whose changes are to be dropped run `duetctl connect %s --discard-my-data`, then `duetctl connect %s` on the other",
			r->p.cfg->name, r->p.peer->name, dec->why,
			cfg_sb_policy_name(policy), dec->rule, r->p.cfg->name,
			r->p.cfg->name);
	}
	x = json_pack("{s:s,s:b,s:s,s:i,s:i,s:s,s:s,s:s}", "event",
		      "split-brain", "resolved", resolved, "policy", pol,
		      "rule", dec->rule, "detect_rule", detect->rule,
		      "verdict", uuid_verdict_name(dec->verdict), "peer",
		      r->p.peer->name, "local", r->p.self->name);
	if (x)
		json_object_set_new(x, "victim",
				    victim ? json_string(victim) : json_null());
	peer_event(r, "handshake", dec->why, x);
	fence_split_brain(r, resolved, pol, victim, dec->rule, dec->why);
}

void admin_refused(struct repl *r, enum uuid_verdict v, const char *why)
{
	unsigned int reason = PROTO_DISC_CONFIG;
	int ret;

	if (v == UUID_SPLIT_BRAIN)
		reason = PROTO_DISC_SPLIT_BRAIN;
	else if (r->sm.role == SM_ROLE_PRIMARY && r->peer_uuid.primary)
		reason = PROTO_DISC_TWO_PRIMARIES;
	log_err("%s: handshake with %s refused, StandAlone until `duetctl connect %s`: %s",
		r->p.cfg->name, r->p.peer->name, r->p.cfg->name, why);
	ret = conn_give_up(r->conn, reason, why);
	if (ret && ret != -EALREADY)
		log_err("%s: cannot stop the connection: %s", r->p.cfg->name,
			strerror(-ret));
}

/*
 * The resync thread follows the state: none while PausedSync, one while
 * SyncSource (started where the bitmap says, i.e. where it left off).
 * Lock held.
 */
static void resync_apply(struct repl *r)
{
	struct resync *rs;
	uint64_t total;

	if (r->sm.repl == SM_REPL_PAUSED_SYNC && r->rs && !r->verifying) {
		rs = r->rs;
		r->rs = NULL;
		resync_abort(rs);
		apply_queue_rs(r, W_RS_REAP, rs, 0, 0);
		log_notice("%s: resync to %s paused", r->p.cfg->name,
			   r->p.peer->name);
	} else if (r->sm.repl == SM_REPL_SYNC_SOURCE && r->sync_source &&
		   !r->rs) {
		/* the progress counts from the first start, not this one */
		total = r->rs_total;
		peer_start_source(r);
		if (r->rs && total > r->rs_total)
			r->rs_total = total;
		if (r->rs)
			log_notice("%s: resync to %s resumed", r->p.cfg->name,
				   r->p.peer->name);
	}
}

void admin_resync_follow(struct repl *r)
{
	struct sm_req q = { .type = SM_EV_PEER_STATE };
	bool paused = r->sm.repl == SM_REPL_PAUSED_SYNC;
	bool target;

	if (!r->have_peer_state || paused == r->peer_paused ||
	    (r->sm.repl != SM_REPL_PAUSED_SYNC &&
	     r->sm.repl != SM_REPL_SYNC_SOURCE &&
	     r->sm.repl != SM_REPL_SYNC_TARGET))
		return;
	q.peer_role = r->peer_uuid.primary ? SM_ROLE_PRIMARY :
					     SM_ROLE_SECONDARY;
	q.peer_disk = r->peer_disk_rx;
	if (r->peer_paused) {
		q.peer_repl = SM_REPL_PAUSED_SYNC;
	} else {
		target = r->sync_target;
		q.peer_repl = target ? SM_REPL_SYNC_SOURCE :
				       SM_REPL_SYNC_TARGET;
	}
	if (peer_sm_do(r, &q, NULL, 0))
		return;
	log_notice("%s: %s %s the resync", r->p.cfg->name, r->p.peer->name,
		   r->peer_paused ? "paused" : "resumed");
	resync_apply(r);
}

void admin_sync_ending(struct repl *r)
{
	struct sm_req q = { .type = SM_REQ_RESUME_SYNC };

	if (r->sm.repl != SM_REPL_PAUSED_SYNC)
		return;
	log_notice("%s: the resync ended while a pause was taking effect",
		   r->p.cfg->name);
	peer_sm_do(r, &q, NULL, 0);
}

/* ---- requests (control thread) ---- */

/* Persist what a state change says about our disk (Outdated after a
 * disconnect from a Primary, ...). Lock held. */
static void save_disk_state(struct repl *r, enum sm_disk before)
{
	struct uuid_info u;

	if (r->sm.disk == before)
		return;
	peer_my_uuid(r, &u);
	if (r->sm.disk == SM_DISK_OUTDATED)
		uuid_outdate(&u);
	peer_save_uuid(r, &u);
}

static int do_connect(struct repl *r, bool discard, char *why, size_t len)
{
	struct sm_req q = { .type = SM_REQ_CONNECT,
			    .discard_my_data = discard };
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = peer_sm_do(r, &q, why, len);
	if (!ret && discard)
		log_notice("%s: connect --discard-my-data: a split brain found by the next handshake discards this node's changes",
			   r->p.cfg->name);
	pthread_mutex_unlock(&r->lock);
	if (ret)
		return ret;
	ret = conn_start(r->conn);
	if (ret == -EALREADY)
		return 0;
	if (ret)
		return util_why(ret, why, len, "cannot start the connection: %s",
				strerror(-ret));
	return 0;
}

static int do_disconnect(struct repl *r, char *why, size_t len)
{
	struct sm_req q = { .type = SM_REQ_DISCONNECT };
	struct sm_req lost = { .type = SM_EV_PEER_LOST };
	enum sm_disk before;
	int ret;

	pthread_mutex_lock(&r->lock);
	before = r->sm.disk;
	ret = peer_sm_do(r, &q, why, len);
	pthread_mutex_unlock(&r->lock);
	if (ret)
		return ret;
	/* lost() completes Disconnecting -> StandAlone */
	conn_stop(r->conn);
	pthread_mutex_lock(&r->lock);
	if (r->sm.conn == SM_CONN_DISCONNECTING)
		peer_sm_do(r, &lost, NULL, 0);
	save_disk_state(r, before);
	pthread_mutex_unlock(&r->lock);
	log_notice("%s: disconnected from %s: StandAlone until `duetctl connect %s`",
		   r->p.cfg->name, r->p.peer->name, r->p.cfg->name);
	return 0;
}

/* Every block out of sync, durably (a full resync). Lock held. */
static int mark_all(struct repl *r, char *why, size_t len)
{
	struct bm *bm = meta_lock_bm(r->p.meta);
	int ret;

	bm_set_all(bm);
	meta_unlock_bm(r->p.meta);
	ret = meta_sync_bm_wait(r->p.meta);
	if (ret)
		return util_why(ret, why, len, "writing the bitmap: %s",
				strerror(-ret));
	return 0;
}

static int do_invalidate(struct repl *r, char *why, size_t len)
{
	struct sm_req q = { .type = SM_REQ_INVALIDATE };
	struct uuid_info u;
	int ret;

	pthread_mutex_lock(&r->lock);
	ret = peer_sm_do(r, &q, why, len);
	if (ret)
		goto out;
	/* the bits first: the flags say a full sync is due, they do it */
	ret = mark_all(r, why, len);
	if (ret)
		goto out;
	peer_my_uuid(r, &u);
	uuid_invalidate(&u);
	ret = peer_save_uuid(r, &u);
	if (ret) {
		util_why(ret, why, len, "writing the superblock: %s",
			 strerror(-ret));
		goto out;
	}
	log_notice("%s: invalidated: this disk's data are to be overwritten by a full resync from %s%s",
		   r->p.cfg->name, r->p.peer->name,
		   r->sm.repl == SM_REPL_SYNC_TARGET ? " (starting now)" :
						       " (at the next connect)");
	if (r->sm.repl == SM_REPL_SYNC_TARGET)
		peer_begin_sync(r, UUID_TARGET_FULL);
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int do_invalidate_remote(struct repl *r, char *why, size_t len)
{
	struct sm_req q = { .type = SM_REQ_INVALIDATE_REMOTE };
	int ret;

	pthread_mutex_lock(&r->lock);
	/*
	 * The peer follows the generation rules: equal UUIDs with bits set,
	 * and the side with more bits (all of ours) is the source. A peer
	 * that crashed as Primary would win that rule (42) instead.
	 */
	if (r->peer_uuid.flags & MD_F_CRASHED_PRIMARY) {
		ret = util_why(-EBUSY, why, len,
			       "refusing: %s crashed as Primary and its activity log is being resynced first; try again when it is done",
			       r->p.peer->name);
		goto out;
	}
	ret = peer_sm_do(r, &q, why, len);
	if (ret)
		goto out;
	ret = mark_all(r, why, len);
	if (ret)
		goto out;
	log_notice("%s: invalidate-remote: full resync to %s",
		   r->p.cfg->name, r->p.peer->name);
	peer_begin_sync(r, UUID_SOURCE_FULL);
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int do_pause(struct repl *r, bool pause, char *why, size_t len)
{
	struct sm_req q = { .type = pause ? SM_REQ_PAUSE_SYNC :
					    SM_REQ_RESUME_SYNC };
	enum sm_repl before;
	int ret;

	pthread_mutex_lock(&r->lock);
	before = r->sm.repl;
	ret = peer_sm_do(r, &q, why, len);
	if (!ret && before != r->sm.repl) {
		resync_apply(r);
		peer_send_state(r);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int do_outdate(struct repl *r, char *why, size_t len)
{
	struct sm_req q = { .type = SM_REQ_OUTDATE };
	enum sm_disk before;
	int ret;

	pthread_mutex_lock(&r->lock);
	before = r->sm.disk;
	ret = peer_sm_do(r, &q, why, len);
	if (!ret && before != r->sm.disk) {
		save_disk_state(r, before);
		log_notice("%s: disk marked Outdated in the metadata: promotion needs --force from now on",
			   r->p.cfg->name);
	}
	pthread_mutex_unlock(&r->lock);
	return ret;
}

/* ---- status ---- */

static json_t *uuid_hex(uint64_t v)
{
	return json_sprintf("%016llx", (unsigned long long)v);
}

void admin_status(struct repl *r, json_t *o, bool verbose)
{
	struct md_super *sb = &r->p.md->sb;
	json_t *h, *u, *hist;

	pthread_mutex_lock(&r->lock);
	json_object_set_new(o, "discard_my_data",
			    json_boolean(r->sm.discard_my_data));
	json_object_set_new(o, "after_sb_0pri",
			    json_string(cfg_sb_policy_name(r->p.cfg->after_sb_0pri)));
	json_object_set_new(o, "after_sb_1pri",
			    json_string(cfg_sb_policy_name(r->p.cfg->after_sb_1pri)));
	if (r->last_hs.valid) {
		h = json_object();
		json_object_set_new(h, "verdict",
				    json_string(r->last_hs.verdict));
		json_object_set_new(h, "rule", json_integer(r->last_hs.rule));
		json_object_set_new(h, "split_brain",
				    json_boolean(r->last_hs.split_brain));
		json_object_set_new(h, "resolved",
				    json_boolean(r->last_hs.resolved));
		json_object_set_new(h, "policy",
				    r->last_hs.split_brain ?
					    json_string(r->last_hs.policy) :
					    json_null());
		json_object_set_new(h, "why", json_string(r->last_hs.why));
		json_object_set_new(h, "time",
				    json_integer((json_int_t)r->last_hs.at));
		json_object_set_new(o, "handshake", h);
	} else {
		json_object_set_new(o, "handshake", json_null());
	}
	if (verbose) {
		u = json_object();
		hist = json_array();
		json_object_set_new(u, "current", uuid_hex(sb->current_uuid));
		json_object_set_new(u, "bitmap",
				    uuid_hex(sb->peers[REPL_PEER_SLOT].bitmap_uuid));
		for (unsigned int i = 0; i < MD_HISTORY; i++)
			json_array_append_new(hist, uuid_hex(sb->history[i]));
		json_object_set_new(u, "history", hist);
		json_object_set_new(u, "promoted",
				    json_integer((json_int_t)sb->promoted));
		json_object_set_new(o, "uuids", u);
		if (r->have_peer_state) {
			u = json_object();
			hist = json_array();
			json_object_set_new(u, "current",
					    uuid_hex(r->peer_uuid.current));
			json_object_set_new(u, "bitmap",
					    uuid_hex(r->peer_uuid.bitmap));
			for (unsigned int i = 0; i < MD_HISTORY; i++)
				json_array_append_new(
					hist, uuid_hex(r->peer_uuid.history[i]));
			json_object_set_new(u, "history", hist);
			json_object_set_new(u, "dirty_bits",
					    json_integer((json_int_t)r->peer_uuid.dirty_bits));
			json_object_set_new(u, "promoted",
					    json_integer((json_int_t)r->peer_uuid.promoted));
			json_object_set_new(o, "peer_uuids", u);
		} else {
			json_object_set_new(o, "peer_uuids", json_null());
		}
	}
	pthread_mutex_unlock(&r->lock);
}

/* ---- control commands ---- */

enum admin_op {
	OP_CONNECT = 0,
	OP_DISCONNECT,
	OP_INVALIDATE,
	OP_INVALIDATE_REMOTE,
	OP_PAUSE,
	OP_RESUME,
	OP_OUTDATE,
};

struct admin_cmd {
	const char *name;
	enum admin_op op;
	struct daemon *d;
};

static struct admin_cmd admin_cmds[] = {
	{ "connect", OP_CONNECT, NULL },
	{ "disconnect", OP_DISCONNECT, NULL },
	{ "invalidate", OP_INVALIDATE, NULL },
	{ "invalidate-remote", OP_INVALIDATE_REMOTE, NULL },
	{ "pause-sync", OP_PAUSE, NULL },
	{ "resume-sync", OP_RESUME, NULL },
	{ "outdate", OP_OUTDATE, NULL },
};

static int h_admin(void *arg, json_t *req, json_t *resp)
{
	struct admin_cmd *c = arg;
	struct daemon *d = c->d;
	char why[256] = "";
	struct repl *r = NULL;
	json_t *v;
	bool discard = false;
	int ret;

	v = json_object_get(req, "discard_my_data");
	if (v && !json_is_boolean(v))
		return ctl_error(resp, -EINVAL,
				 "\"discard_my_data\" must be true or false");
	discard = json_is_true(v);
	if (discard && c->op != OP_CONNECT)
		return ctl_error(resp, -EINVAL,
				 "\"discard_my_data\" only goes with connect");
	pthread_mutex_lock(&d->lock);
	if (d->repl && d->state == DAEMON_RUNNING)
		r = d->repl;
	pthread_mutex_unlock(&d->lock);
	if (!r)
		return ctl_error(resp, d->repl ? -EAGAIN : -EINVAL,
				 d->repl ? "the resource is not running" :
					   "%s has no peer: %s needs a two-node resource",
				 d->res, c->name);
	switch (c->op) {
	case OP_CONNECT:
		ret = do_connect(r, discard, why, sizeof(why));
		break;
	case OP_DISCONNECT:
		ret = do_disconnect(r, why, sizeof(why));
		break;
	case OP_INVALIDATE:
		ret = do_invalidate(r, why, sizeof(why));
		break;
	case OP_INVALIDATE_REMOTE:
		ret = do_invalidate_remote(r, why, sizeof(why));
		break;
	case OP_PAUSE:
	case OP_RESUME:
		ret = do_pause(r, c->op == OP_PAUSE, why, sizeof(why));
		break;
	default:
		ret = do_outdate(r, why, sizeof(why));
		break;
	}
	if (ret)
		return ctl_error(resp, ret, "%s",
				 why[0] ? why : strerror(-ret));
	/* "nothing to do: ..." and the like */
	if (why[0])
		json_object_set_new(resp, "note", json_string(why));
	repl_status(r, resp);
	return 0;
}

int admin_register(struct ctl_server *ctl, struct daemon *d)
{
	int ret = 0;

	for (size_t i = 0; i < ARRAY_SIZE(admin_cmds) && !ret; i++) {
		admin_cmds[i].d = d;
		ret = ctl_register(ctl, admin_cmds[i].name, h_admin,
				   &admin_cmds[i]);
	}
	return ret;
}
