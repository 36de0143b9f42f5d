// SPDX-License-Identifier: MIT
/*
 * The connection half of replication (see peer.h): the conn_ callbacks,
 * the STATE exchange, the generation decision, roles, new-current-uuid
 * and status. The bitmap exchange and the resync's and verify's start and
 * end are in peer_sync.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "apply.h"
#include "bm.h"
#include "ctl.h"
#include "fence.h"
#include "log.h"
#include "peer.h"
#include "util.h"

/*
 * One line on the events stream (schema: docs/control-socket.md, "The
 * events stream"): "change" unless @extra names another "event"; @extra's
 * fields are added (and stolen). Lock held.
 */
void peer_event(struct repl *r, const char *what, const char *reason,
		json_t *extra)
{
	struct timespec now;
	char st[160];
	json_t *e;

	if (!r->p.ctl) {
		json_decref(extra);
		return;
	}
	e = json_object();
	if (!e) {
		json_decref(extra);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	json_object_set_new(e, "event", json_string("change"));
	json_object_set_new(e, "seq", json_integer((json_int_t)++r->event_seq));
	json_object_set_new(e, "time",
			    json_real((double)now.tv_sec +
				      (double)now.tv_nsec / 1e9));
	json_object_set_new(e, "resource", json_string(r->p.cfg->name));
	json_object_set_new(e, "node", json_string(r->p.self->name));
	json_object_set_new(e, "what", json_string(what));
	json_object_set_new(e, "state",
			    json_string(sm_state_str(&r->sm, st, sizeof(st))));
	json_object_set_new(e, "role", json_string(sm_role_name(r->sm.role)));
	json_object_set_new(e, "disk", json_string(sm_disk_name(r->sm.disk)));
	json_object_set_new(e, "conn", json_string(sm_conn_name(r->sm.conn)));
	json_object_set_new(e, "repl", json_string(sm_repl_name(r->sm.repl)));
	json_object_set_new(e, "peer_role",
			    json_string(sm_role_name(r->sm.peer_role)));
	json_object_set_new(e, "peer_disk",
			    json_string(sm_disk_name(r->sm.peer_disk)));
	json_object_set_new(e, "reason", json_string(reason ? reason : ""));
	if (extra) {
		json_object_update(e, extra);
		json_decref(extra);
	}
	ctl_broadcast_event(r->p.ctl, e);
	json_decref(e);
}

static void event(struct repl *r, const char *what)
{
	peer_event(r, what, NULL, NULL);
}

/*
 * A Primary may write. So may a node whose disk never had a generation
 * (just created, no `primary --force` or `new-current-uuid` yet): its data
 * means nothing until the initial sync overwrites it, and single-node use
 * of a two-node resource before the pair is set up keeps working (the
 * writes are marked for the peer). Lock held.
 */
void peer_update_may_write(struct repl *r)
{
	int may = r->sm.role == SM_ROLE_PRIMARY || !r->p.md->sb.current_uuid;

	__atomic_store_n(&r->role_cache, may, __ATOMIC_RELEASE);
	fence_state_changed(r);
}

/*
 * new-current-uuid --clear-bitmap: both disks become UpToDate at once. The
 * state machine has no request for it (it is a statement about data the
 * daemon alone can make: both disks were just created identical), so the
 * change is made here and checked against its invariants. Lock held.
 */
static int both_up_to_date(struct repl *r, char *why, size_t len)
{
	struct sm_state next = r->sm;
	char diff[256];

	next.disk = SM_DISK_UPTODATE;
	next.peer_disk = SM_DISK_UPTODATE;
	if (!sm_state_valid(&next, why, len))
		return -EINVAL;
	log_notice("%s: %s", r->p.cfg->name,
		   sm_diff_str(&r->sm, &next, diff, sizeof(diff)));
	r->sm = next;
	peer_update_may_write(r);
	event(r, "new-current-uuid");
	return 0;
}

/* Apply a request to the state machine; lock held. */
int peer_sm_do(struct repl *r, const struct sm_req *q, char *why,
		 size_t len)
{
	struct sm_state next;
	char buf[256], diff[256];
	int ret;

	if (!why) {
		why = buf;
		len = sizeof(buf);
	}
	why[0] = '\0';
	ret = sm_request(&r->sm, q, &next, why, len);
	if (ret) {
		log_warn("%s: %s: %s", r->p.cfg->name, sm_req_name(q->type),
			 why);
		return ret;
	}
	if (sm_changes(&r->sm, &next, NULL, 0)) {
		log_notice("%s: %s", r->p.cfg->name,
			   sm_diff_str(&r->sm, &next, diff, sizeof(diff)));
		r->sm = next;
		peer_update_may_write(r);
		peer_event(r, sm_req_name(q->type), why, NULL);
	}
	return 0;
}

/* Our generation UUIDs, from the superblock; lock held. */
void peer_my_uuid(struct repl *r, struct uuid_info *u)
{
	struct bm *bm = meta_lock_bm(r->p.meta);
	uint64_t dirty = bm_count(bm);

	meta_unlock_bm(r->p.meta);
	uuid_from_md(&r->p.md->sb, REPL_PEER_SLOT, dirty,
		     r->sm.role == SM_ROLE_PRIMARY, u);
	/* a detached disk: the data is the peer's (diskless.c) */
	if (r->disk_gone) {
		u->diskless = true;
		u->current = r->dl_current;
	}
}

/* Persist @u and the disk state; lock held. */
int peer_save_uuid(struct repl *r, const struct uuid_info *u)
{
	struct md_super *sb = &r->p.md->sb;
	int ret;

	/* a detached disk's metadata keeps what the detach wrote */
	if (r->disk_gone) {
		peer_update_may_write(r);
		return 0;
	}
	uuid_to_md(u, REPL_PEER_SLOT, sb);
	sb->flags = sm_disk_md_flags(r->sm.disk, sb->flags);
	ret = mdio_write_sb(r->p.md);
	if (ret)
		log_err("%s: writing the superblock: %s", r->p.cfg->name,
			strerror(-ret));
	peer_update_may_write(r);
	return ret;
}

static uint8_t disk_to_proto(enum sm_disk d)
{
	switch (d) {
	case SM_DISK_UPTODATE:
		return PROTO_DISK_UP_TO_DATE;
	case SM_DISK_CONSISTENT:
		return PROTO_DISK_CONSISTENT;
	case SM_DISK_OUTDATED:
		return PROTO_DISK_OUTDATED;
	case SM_DISK_INCONSISTENT:
	case SM_DISK_FAILED:
	case SM_DISK_ATTACHING:
		return PROTO_DISK_INCONSISTENT;
	default:
		return PROTO_DISK_DISKLESS;
	}
}

static enum sm_disk disk_from_proto(uint8_t d)
{
	switch (d) {
	case PROTO_DISK_UP_TO_DATE:
		return SM_DISK_UPTODATE;
	case PROTO_DISK_CONSISTENT:
		return SM_DISK_CONSISTENT;
	case PROTO_DISK_OUTDATED:
		return SM_DISK_OUTDATED;
	case PROTO_DISK_INCONSISTENT:
		return SM_DISK_INCONSISTENT;
	default:
		return SM_DISK_DISKLESS;
	}
}

/* Tell the peer our role, disk and UUIDs; lock held. */
void peer_send_state(struct repl *r)
{
	struct proto_msg m = { .type = PROTO_STATE };
	struct uuid_info u;
	int ret;

	if (!r->conn_up)
		return;
	peer_my_uuid(r, &u);
	m.state.role = r->sm.role == SM_ROLE_PRIMARY ? PROTO_ROLE_PRIMARY :
						       PROTO_ROLE_SECONDARY;
	m.state.disk = disk_to_proto(r->sm.disk);
	m.state.flags = 0;
	if (u.flags & MD_F_PRIMARY)
		m.state.flags |= PROTO_SF_WAS_PRIMARY;
	if (u.flags & MD_F_CRASHED_PRIMARY)
		m.state.flags |= PROTO_SF_CRASHED_PRIMARY;
	if (u.flags & MD_F_FULL_SYNC)
		m.state.flags |= PROTO_SF_FULL_SYNC;
	if (r->sm.discard_my_data)
		m.state.flags |= PROTO_SF_DISCARD_MY_DATA;
	if (r->sm.repl == SM_REPL_PAUSED_SYNC)
		m.state.flags |= PROTO_SF_PAUSED_SYNC;
	m.state.promoted = r->p.md->sb.promoted;
	r->state_dirty_bits = u.dirty_bits;
	m.state.current_uuid = u.current;
	m.state.bitmap_uuid = u.bitmap;
	for (unsigned int i = 0; i < PROTO_HISTORY && i < MD_HISTORY; i++)
		m.state.history[i] = u.history[i];
	m.state.dirty_bits = u.dirty_bits;
	ret = conn_send(r->conn, &m, NULL, NULL, NULL, 1000);
	if (ret)
		log_warn("%s: sending STATE: %s", r->p.cfg->name,
			 strerror(-ret));
}

/* ---- connection callbacks (connection thread) ---- */

void peer_established(void *arg, const struct conn_peer *peer)
{
	struct repl *r = arg;

	pthread_mutex_lock(&r->lock);
	__atomic_add_fetch(&r->conn_gen, 1, __ATOMIC_ACQ_REL);
	r->conn_up = true;
	r->have_peer_state = false;
	r->replicating = false;
	r->sync_source = r->sync_target = false;
	r->bm_rx_done = false;
	r->adopt_pending = false;
	r->verifying = r->verify_target = false;
	r->features = peer->features;
	memset(&r->peer_uuid, 0, sizeof(r->peer_uuid));
	r->peer_uuid.node_id = peer->node_id;
	pthread_mutex_lock(&r->send_lock);
	r->epoch = 1;
	r->epoch_writes = 0;
	pthread_mutex_unlock(&r->send_lock);
	log_notice("%s: connected to %s (%s)", r->p.cfg->name, r->p.peer->name,
		   peer->addr);
	peer_send_state(r);
	pthread_mutex_unlock(&r->lock);
}

void peer_lost(void *arg, int err, const char *reason)
{
	struct repl *r = arg;
	struct sm_req q = { .type = SM_EV_PEER_LOST };
	struct conn_info ci;
	enum sm_disk old_disk;
	struct uuid_info u;
	struct resync *rs;

	/* the peer left on purpose (its down or disconnect), not we */
	conn_state(r->conn, &ci);
	q.graceful = err == -ESHUTDOWN && ci.status != CONN_STANDALONE;
	pthread_mutex_lock(&r->lock);
	r->conn_up = false;
	r->replicating = false;
	__atomic_add_fetch(&r->conn_gen, 1, __ATOMIC_ACQ_REL);
	rs = r->rs;
	r->rs = NULL;
	if (rs && r->verifying) {
		struct resync_info ri;

		resync_get_info(rs, &ri);
		peer_ov_record(r, &ri, true, false);
		log_notice("%s: online verify interrupted after %llu of %llu bytes (%llu found out of sync)",
			   r->p.cfg->name,
			   (unsigned long long)ri.sent_bytes,
			   (unsigned long long)r->p.data_bytes,
			   (unsigned long long)ri.oos_bytes);
	} else if (rs) {
		log_notice("%s: resync to %s interrupted; it resumes on reconnect",
			   r->p.cfg->name, r->p.peer->name);
	}
	if (rs) {
		resync_abort(rs);
		apply_queue_rs(r, W_RS_REAP, rs, 0, 0);
	}
	r->verifying = r->verify_target = false;
	r->sync_source = r->sync_target = false;
	r->bm_rx_done = false;
	repl_fail_all(r);
	old_disk = r->sm.disk;
	if (r->have_peer_state)
		peer_sm_do(r, &q, NULL, 0);
	if (r->sm.disk == SM_DISK_OUTDATED && old_disk != SM_DISK_OUTDATED) {
		/* a Primary left on purpose: we fall behind from now on */
		peer_my_uuid(r, &u);
		uuid_outdate(&u);
		peer_save_uuid(r, &u);
	}
	r->have_peer_state = false;
	r->peer_discard = r->peer_paused = false;
	log_notice("%s: connection to %s lost (%s): writes go to the bitmap",
		   r->p.cfg->name, r->p.peer->name, reason ? reason : "");
	pthread_mutex_unlock(&r->lock);
	peer_fail_reads(r);
}

static uint32_t md_flags_of_state(const struct proto_state *s)
{
	uint32_t f = 0;

	if (s->flags & PROTO_SF_WAS_PRIMARY)
		f |= MD_F_PRIMARY;
	if (s->flags & PROTO_SF_CRASHED_PRIMARY)
		f |= MD_F_CRASHED_PRIMARY;
	if (s->flags & PROTO_SF_FULL_SYNC)
		f |= MD_F_FULL_SYNC;
	if (s->disk >= PROTO_DISK_OUTDATED)
		f |= MD_F_CONSISTENT;
	if (s->disk == PROTO_DISK_UP_TO_DATE)
		f |= MD_F_WAS_UP_TO_DATE;
	return f;
}

/* The peer's view of the connection, as our verdict implies it. */
static enum sm_repl peer_repl_of(enum uuid_verdict v)
{
	if (uuid_verdict_is_source(v))
		return SM_REPL_SYNC_TARGET;
	if (uuid_verdict_is_target(v))
		return SM_REPL_SYNC_SOURCE;
	return SM_REPL_ESTABLISHED;
}

/* Decide what the connection does now that both STATEs are known; lock
 * held. Returns a DISCONNECT reason, or 0. */
static unsigned int decide(struct repl *r)
{
	struct uuid_info me, sent;
	struct uuid_decision dec, detect;
	struct sm_req q = { 0 };
	enum cfg_sb_policy policy;
	enum uuid_verdict v;
	bool first = !r->have_peer_state;
	char why[256];

	/* refused or disconnected already: the connection is going away */
	if (first && r->sm.conn != SM_CONN_CONNECTING)
		return 0;
	peer_my_uuid(r, &me);
	me.promoted = r->p.md->sb.promoted;
	v = uuid_decide(&me, &r->peer_uuid, &detect);
	dec = detect;
	if (v == UUID_SPLIT_BRAIN) {
		/* The policies count what both STATEs said, so that both
		 * nodes compare the same numbers and name the same loser. */
		sent = me;
		sent.dirty_bits = r->state_dirty_bits;
		policy = uuid_sb_policy(r->p.cfg->after_sb_0pri,
					r->p.cfg->after_sb_1pri, &sent,
					&r->peer_uuid);
		v = uuid_sb_resolve(policy, &sent, &r->peer_uuid,
				    r->sm.discard_my_data, r->peer_discard,
				    &dec);
	} else {
		policy = CFG_SB_DISCONNECT;
	}
	if (r->sync_source || r->sync_target) {
		/* the resync decides until it ends; only roles change, and
		 * either side may pause it */
		admin_resync_follow(r);
		return 0;
	}
	log_info("%s: generations: %s (%s)", r->p.cfg->name,
		 uuid_verdict_name(v), dec.why);
	if (first)
		admin_note_handshake(r, &detect, &dec, policy);
	if (!first && uuid_verdict_refuses(v)) {
		log_err("%s: refusing the connection: %s: %s", r->p.cfg->name,
			uuid_verdict_name(v), dec.why);
		return v == UUID_SPLIT_BRAIN ? PROTO_DISC_SPLIT_BRAIN :
					       PROTO_DISC_CONFIG;
	}
	q.peer_role = r->peer_uuid.primary ? SM_ROLE_PRIMARY :
					     SM_ROLE_SECONDARY;
	q.peer_disk = r->peer_disk_rx;
	q.verdict = v;
	if (first) {
		q.type = SM_EV_CONNECTED;
		if (peer_sm_do(r, &q, why, sizeof(why)))
			return PROTO_DISC_CONFIG;
		if (r->sm.conn != SM_CONN_CONNECTED) {
			/* refused: StandAlone (docs/states.md, handshake) */
			admin_refused(r, v, why);
			return 0;
		}
		r->have_peer_state = true;
	} else {
		q.type = SM_EV_PEER_STATE;
		q.peer_repl = peer_repl_of(v);
		peer_sm_do(r, &q, NULL, 0);
	}
	if (v == UUID_NO_SYNC) {
		if (!r->replicating) {
			uuid_in_sync(&me);
			peer_save_uuid(r, &me);
			log_notice("%s: in sync with %s: replicating (protocol %c)",
				   r->p.cfg->name, r->p.peer->name, r->proto);
		}
		r->replicating = true;
	} else if (uuid_verdict_is_sync(v)) {
		peer_begin_sync(r, v);
	} else {
		if (first)
			log_notice("%s: connected to %s, not replicating: %s",
				   r->p.cfg->name, r->p.peer->name, dec.why);
		r->replicating = false;
	}
	return 0;
}

static void adopt_generation(struct repl *r);

static void on_peer_state(struct repl *r, const struct proto_msg *m)
{
	const struct proto_state *s = &m->state;
	enum sm_disk prev_disk;
	unsigned int reason;
	bool first;

	pthread_mutex_lock(&r->lock);
	prev_disk = r->peer_disk_rx;
	first = !r->have_peer_state;
	peer_diskless_adopt(r, s->current_uuid);
	r->peer_uuid.current = s->current_uuid;
	r->peer_uuid.bitmap = s->bitmap_uuid;
	for (unsigned int i = 0; i < PROTO_HISTORY && i < MD_HISTORY; i++)
		r->peer_uuid.history[i] = s->history[i];
	r->peer_uuid.dirty_bits = s->dirty_bits;
	r->peer_uuid.promoted = s->promoted;
	r->peer_discard = s->flags & PROTO_SF_DISCARD_MY_DATA;
	r->peer_paused = s->flags & PROTO_SF_PAUSED_SYNC;
	r->peer_uuid.flags = md_flags_of_state(s);
	r->peer_uuid.primary = s->role == PROTO_ROLE_PRIMARY;
	r->peer_uuid.diskless = s->disk == PROTO_DISK_DISKLESS;
	r->peer_disk_rx = disk_from_proto(s->disk);
	if (r->adopt_pending) {
		r->adopt_pending = false;
		adopt_generation(r);
	}
	reason = decide(r);
	if (!reason)
		peer_diskless_state(r, prev_disk, first);
	pthread_mutex_unlock(&r->lock);
	if (reason)
		conn_disconnect(r->conn, reason, "generations do not match");
}

/*
 * new-current-uuid --clear-bitmap on the peer: it sends RS_DONE(resync, 0
 * sectors), then its STATE with the new generation. The RS_DONE marks the
 * STATE that follows: our disk holds what its disk holds (both were just
 * created identical), so we take that generation instead of syncing.
 */
static void adopt_generation(struct repl *r)
{
	struct uuid_info me;
	char why[256];

	peer_my_uuid(r, &me);
	if (me.current || r->peer_disk_rx != SM_DISK_UPTODATE ||
	    !r->peer_uuid.current) {
		log_warn("%s: %s ran new-current-uuid --clear-bitmap, but the disks are not a fresh pair; resyncing instead",
			 r->p.cfg->name, r->p.peer->name);
		return;
	}
	uuid_sync_target_done(&me, &r->peer_uuid);
	if (both_up_to_date(r, why, sizeof(why))) {
		log_err("%s: cannot take the peer's generation: %s",
			r->p.cfg->name, why);
		return;
	}
	if (!peer_save_uuid(r, &me))
		log_notice("%s: took %s's generation %016llx without a sync (clear-bitmap)",
			   r->p.cfg->name, r->p.peer->name,
			   (unsigned long long)me.current);
	peer_send_state(r);
}

void peer_frame(void *arg, const struct proto_msg *m,
		     struct xport_buf *buf)
{
	struct repl *r = arg;
	int res;

	switch (m->type) {
	case PROTO_STATE:
		on_peer_state(r, m);
		break;
	case PROTO_DATA:
		apply_frame(r, m, buf);
		return;
	case PROTO_BARRIER:
		apply_frame(r, m, NULL);
		break;
	case PROTO_ACK_RECV:
	case PROTO_ACK_WRITE:
		res = m->range.result ? -(int)m->range.result : 0;
		pthread_mutex_lock(&r->lock);
		if (res)
			log_warn("%s: the peer failed the write at %llu+%u: %s",
				 r->p.cfg->name,
				 (unsigned long long)m->range.sector,
				 m->range.length, strerror(-res));
		repl_slot_answer(r, m->id, res, true);
		pthread_mutex_unlock(&r->lock);
		break;
	case PROTO_BARRIER_ACK:
		pthread_mutex_lock(&r->lock);
		if (m->id)
			repl_slot_answer(r, m->id, 0, true);
		pthread_mutex_unlock(&r->lock);
		break;
	case PROTO_RS_DONE:
		pthread_mutex_lock(&r->lock);
		res = m->rs_done.kind == PROTO_RS_KIND_RESYNC && r->sync_target;
		pthread_mutex_unlock(&r->lock);
		if (res) {
			/* the worker makes every block durable first */
			apply_queue_frame(r, m, NULL);
			break;
		}
		peer_on_rs_done(r, m);
		break;
	case PROTO_BITMAP:
		peer_on_bitmap(r, m);
		break;
	case PROTO_RS_DATA:
		apply_queue_frame(r, m, buf);
		return;
	case PROTO_RS_ACK:
		pthread_mutex_lock(&r->lock);
		if (r->rs)
			resync_ack(r->rs, m);
		pthread_mutex_unlock(&r->lock);
		break;
	case PROTO_RS_IN_SYNC:
	case PROTO_RS_REQUEST:
		pthread_mutex_lock(&r->lock);
		if (r->rs && !r->verifying)
			resync_reply(r->rs, m);
		pthread_mutex_unlock(&r->lock);
		break;
	case PROTO_RS_CSUM:
		apply_queue_frame(r, m, NULL);
		break;
	case PROTO_OV_REQUEST:
		pthread_mutex_lock(&r->lock);
		peer_verify_target_begin(r);
		pthread_mutex_unlock(&r->lock);
		apply_queue_frame(r, m, NULL);
		break;
	case PROTO_OV_REPLY:
		/* compared on the worker, after every DATA before it */
		apply_queue_frame(r, m, NULL);
		break;
	case PROTO_READ_REQUEST:
		/* served on the worker, after every DATA before it */
		apply_queue_frame(r, m, NULL);
		break;
	case PROTO_READ_DATA:
		peer_read_reply(r, m);
		break;
	default:
		log_warn("%s: unexpected %s from the peer", r->p.cfg->name,
			 proto_type_name(m->type));
		break;
	}
	if (buf)
		xport_buf_put(buf);
}

/* ---- administration (control thread) ---- */

int repl_role(struct repl *r, bool primary, bool force, char *why,
	      size_t why_len)
{
	struct sm_req q = { .type = primary ? SM_REQ_PRIMARY :
					      SM_REQ_SECONDARY,
			    .force = force };
	struct uuid_info u;
	enum sm_disk old_disk;
	enum sm_role old_role;
	int ret;

	pthread_mutex_lock(&r->lock);
	old_disk = r->sm.disk;
	old_role = r->sm.role;
	ret = peer_sm_do(r, &q, why, why_len);
	if (ret)
		goto out;
	/* for discard-younger-primary; peer_save_uuid() persists it */
	if (primary && old_role != SM_ROLE_PRIMARY)
		r->p.md->sb.promoted = (uint64_t)time(NULL);
	r->same_writer = false;
	peer_my_uuid(r, &u);
	if (primary && force && !u.current) {
		ret = uuid_force_primary(&u, util_random_u64());
		if (ret) {
			util_why(ret, why, why_len, "cannot create a generation");
			goto out;
		}
	}
	uuid_set_role(&u, primary);
	ret = peer_save_uuid(r, &u);
	if (ret) {
		util_why(ret, why, why_len, "writing the superblock: %s",
			 strerror(-ret));
		goto out;
	}
	if (old_disk != r->sm.disk)
		log_notice("%s: disk %s -> %s", r->p.cfg->name,
			   sm_disk_name(old_disk), sm_disk_name(r->sm.disk));
	peer_send_state(r);
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

int repl_new_current_uuid(struct repl *r, bool clear_bitmap, char *why,
			  size_t why_len)
{
	struct proto_msg m = { .type = PROTO_RS_DONE };
	struct uuid_info u;
	int ret;

	pthread_mutex_lock(&r->lock);
	peer_my_uuid(r, &u);
	if (!clear_bitmap) {
		uuid_new_current(&u, util_random_u64());
		ret = peer_save_uuid(r, &u);
		if (ret)
			util_why(ret, why, why_len, "writing the superblock");
		goto out;
	}
	if (!r->conn_up || !r->have_peer_state) {
		ret = util_why(-ENOTCONN, why, why_len,
			       "--clear-bitmap needs the peer connected (both disks must be known identical)");
		goto out;
	}
	if (r->peer_uuid.current) {
		ret = util_why(-EEXIST, why, why_len,
			       "the peer's disk already has a generation: only a just-created pair may skip the initial sync");
		goto out;
	}
	if (r->sm.disk != SM_DISK_INCONSISTENT ||
	    r->peer_disk_rx != SM_DISK_INCONSISTENT) {
		ret = util_why(-EEXIST, why, why_len,
			       "--clear-bitmap is for a just-created pair (disks %s/%s)",
			       sm_disk_name(r->sm.disk),
			       sm_disk_name(r->peer_disk_rx));
		goto out;
	}
	ret = uuid_skip_initial_sync(&u, util_random_u64(), why, why_len);
	if (ret)
		goto out;
	ret = both_up_to_date(r, why, why_len);
	if (ret)
		goto out;
	ret = peer_save_uuid(r, &u);
	if (ret) {
		util_why(ret, why, why_len, "writing the superblock");
		goto out;
	}
	{
		struct bm *bm = meta_lock_bm(r->p.meta);

		bm_clear_all(bm);
		meta_unlock_bm(r->p.meta);
	}
	/* the marker first: the peer adopts the STATE that follows */
	m.rs_done.kind = PROTO_RS_KIND_RESYNC;
	m.rs_done.sectors = 0;
	ret = conn_send(r->conn, &m, NULL, NULL, NULL, 1000);
	if (ret)
		util_why(ret, why, why_len, "telling the peer: %s",
			 strerror(-ret));
	else
		peer_send_state(r);
out:
	pthread_mutex_unlock(&r->lock);
	return ret;
}

void repl_adjust(struct repl *r)
{
	conn_adjust(r->conn, r->p.cfg);
	pthread_mutex_lock(&r->lock);
	if (r->rs)
		resync_set_rate(r->rs, r->p.cfg->resync_rate,
				r->p.cfg->resync_min_rate);
	pthread_mutex_unlock(&r->lock);
}

void repl_status(struct repl *r, json_t *o)
{
	struct conn_info ci;
	char st[160];
	json_t *j = json_object();

	conn_state(r->conn, &ci);
	pthread_mutex_lock(&r->lock);
	json_object_set_new(o, "role", json_string(sm_role_name(r->sm.role)));
	json_object_set_new(o, "peer_role",
			    json_string(sm_role_name(r->sm.peer_role)));
	json_object_set_new(o, "disk", json_string(sm_disk_name(r->sm.disk)));
	json_object_set_new(o, "peer_disk",
			    json_string(sm_disk_name(r->sm.peer_disk)));
	json_object_set_new(o, "connection",
			    json_string(sm_conn_name(r->sm.conn)));
	json_object_set_new(o, "replication",
			    json_string(sm_repl_name(r->sm.repl)));
	json_object_set_new(o, "state",
			    json_string(sm_state_str(&r->sm, st, sizeof(st))));
	json_object_set_new(o, "protocol", json_sprintf("%c", r->proto));
	json_object_set_new(o, "current_uuid",
			    json_sprintf("%016llx",
					 (unsigned long long)r->p.md->sb.current_uuid));
	json_object_set_new(j, "replicating", json_boolean(r->replicating));
	json_object_set_new(j, "writes_sent", json_integer((json_int_t)r->sent_writes));
	json_object_set_new(j, "bytes_sent", json_integer((json_int_t)r->sent_bytes));
	json_object_set_new(j, "acked", json_integer((json_int_t)r->acked));
	json_object_set_new(j, "not_acked", json_integer((json_int_t)r->peer_failed));
	json_object_set_new(j, "not_sent", json_integer((json_int_t)r->not_sent));
	json_object_set_new(j, "in_flight", json_integer(r->in_flight));
	json_object_set_new(j, "applied", json_integer((json_int_t)r->applied));
	json_object_set_new(j, "applied_bytes",
			    json_integer((json_int_t)r->applied_bytes));
	json_object_set_new(j, "apply_errors",
			    json_integer((json_int_t)r->apply_errors));
	apply_status(r, j);
	json_object_set_new(j, "resyncs_done",
			    json_integer((json_int_t)r->resyncs_done));
	json_object_set_new(j, "resync_bytes",
			    json_integer((json_int_t)r->rs_bytes_total));
	json_object_set_new(j, "resync_same_bytes",
			    json_integer((json_int_t)r->rs_same_total));
	json_object_set_new(j, "range_waits",
			    json_integer((json_int_t)r->ival_waits));
	pthread_mutex_unlock(&r->lock);
	json_object_set_new(j, "link", json_string(conn_status_name(ci.status)));
	json_object_set_new(j, "peer_addr", json_string(ci.peer_addr));
	json_object_set_new(j, "last_error", json_string(ci.last_error));
	json_object_set_new(j, "connects", json_integer((json_int_t)ci.connects));
	json_object_set_new(j, "losses", json_integer((json_int_t)ci.losses));
	json_object_set_new(j, "rtt_us", json_integer(ci.rtt_us));
	json_object_set_new(j, "transport",
			    json_string(r->p.cfg->transport == CFG_XPORT_RDMA ?
						"rdma" : "tcp"));
	json_object_set_new(j, "wire_msgs_sent",
			    json_integer((json_int_t)ci.msgs_sent));
	json_object_set_new(j, "wire_msgs_recv",
			    json_integer((json_int_t)ci.msgs_recv));
	json_object_set_new(j, "wire_bytes_sent",
			    json_integer((json_int_t)ci.bytes_sent));
	json_object_set_new(j, "wire_bytes_recv",
			    json_integer((json_int_t)ci.bytes_recv));
	json_object_set_new(j, "sendq_bytes",
			    json_integer((json_int_t)ci.sendq_bytes));
	json_object_set_new(o, "replication_stats", j);
	peer_diskless_status(r, o);
	peer_resync_status(r, o);
	peer_verify_status(r, o);
	fence_status(r, o);
}
