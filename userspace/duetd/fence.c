// SPDX-License-Identifier: MIT
/*
 * Fencing and handlers of a two-node resource (see fence.h): the data
 * path's gate, the fence-peer flow, the other handlers' triggers, the
 * resume-io command and the status fields.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apply.h"
#include "bm.h"
#include "ctl.h"
#include "daemon.h"
#include "fence.h"
#include "handler.h"
#include "log.h"
#include "peer.h"
#include "util.h"

struct fence {
	struct handlers *h;	/* NULL once shut down */

	/* the data paths' gate: atomics */
	int susp;		/* new requests wait */
	int failing;		/* stopping: held requests fail */
	uint64_t ticket;	/* epoch while armed, else 0 */

	/* under repl.lock */
	bool armed;		/* a write the peer misses must wait */
	bool was_susp;
	uint64_t epoch;		/* bumped whenever held writes may go */
	time_t susp_since;
	char susp_why[768];
	uint64_t fence_id;	/* the fence-peer run awaited, 0 none */
	uint64_t fences;	/* fence-peer runs started */
	uint64_t before_id;	/* before-resync-target awaited, 0 none */
	uint64_t before_gen;	/* ... for this connection (conn_gen) */
	uint64_t io_err_id;	/* local-io-error queued or running */
	uint64_t io_err_more;	/* errors seen meanwhile */
	struct {
		uint64_t runs;
		bool valid;
		struct handler_result res;
		time_t at;
	} last[HANDLER_COUNT];
	char fence_result[256];
};

/* ---- the data paths' gate ---- */

enum fence_gate fence_gate(struct repl *r)
{
	struct fence *f = r->fence;

	if (!f)
		return FENCE_PASS;
	if (__atomic_load_n(&f->failing, __ATOMIC_ACQUIRE))
		return FENCE_FAIL;
	return __atomic_load_n(&f->susp, __ATOMIC_ACQUIRE) ? FENCE_HOLD :
							      FENCE_PASS;
}

uint64_t fence_ticket(struct repl *r)
{
	struct fence *f = r->fence;

	return f ? __atomic_load_n(&f->ticket, __ATOMIC_ACQUIRE) : 0;
}

enum fence_gate fence_gate_missed(struct repl *r, uint64_t ticket)
{
	struct fence *f = r->fence;

	if (!f || !ticket)
		return FENCE_PASS;
	if (__atomic_load_n(&f->failing, __ATOMIC_ACQUIRE))
		return FENCE_FAIL;
	/* the same window of fencing: the peer's fate is not settled */
	return __atomic_load_n(&f->ticket, __ATOMIC_ACQUIRE) == ticket ?
		       FENCE_HOLD :
		       FENCE_PASS;
}

/* Wake every data path: held requests look at the gate again. */
static void kick_paths(struct repl *r)
{
	void (*kick[META_MAX_QUEUES])(void *);
	void *arg[META_MAX_QUEUES];

	pthread_mutex_lock(&r->ival_lock);
	memcpy(kick, r->kick, sizeof(kick));
	memcpy(arg, r->kick_arg, sizeof(arg));
	pthread_mutex_unlock(&r->ival_lock);
	for (unsigned int i = 0; i < META_MAX_QUEUES; i++)
		if (kick[i])
			kick[i](arg[i]);
}

/* ---- handler runs ---- */

#define ADD(e, ret, name, ...)                                          \
	do {                                                            \
		if (!(ret))                                             \
			(ret) = handler_env_add((e), (name), __VA_ARGS__); \
	} while (0)

/* The variables every handler gets. Lock held. */
static int env_common(struct repl *r, struct handler_env *e,
		      enum handler_kind k)
{
	const struct sm_state *s = &r->sm;
	int ret = 0;

	ADD(e, ret, "DUET_EVENT", "%s", handler_name(k));
	ADD(e, ret, "DUET_RESOURCE", "%s", r->p.cfg->name);
	ADD(e, ret, "DUET_CONFIG", "%s", r->p.cfg->file);
	ADD(e, ret, "DUET_NODE", "%s", r->p.self->name);
	ADD(e, ret, "DUET_NODE_ID", "%u", r->p.self->id);
	ADD(e, ret, "DUET_MY_ADDRESS", "%s", r->p.self->address);
	ADD(e, ret, "DUET_PEER", "%s", r->p.peer->name);
	ADD(e, ret, "DUET_PEER_ID", "%u", r->p.peer->id);
	ADD(e, ret, "DUET_PEER_ADDRESS", "%s", r->p.peer->address);
	ADD(e, ret, "DUET_DISK", "%s", r->p.self->disk);
	ADD(e, ret, "DUET_ROLE", "%s", sm_role_name(s->role));
	ADD(e, ret, "DUET_DISK_STATE", "%s", sm_disk_name(s->disk));
	ADD(e, ret, "DUET_PEER_ROLE", "%s", sm_role_name(s->peer_role));
	ADD(e, ret, "DUET_PEER_DISK_STATE", "%s", sm_disk_name(s->peer_disk));
	ADD(e, ret, "DUET_CONNECTION", "%s", sm_conn_name(s->conn));
	ADD(e, ret, "DUET_FENCING", "%s", sm_fencing_name(s->fencing));
	return ret;
}

static const char *handler_path(struct repl *r, enum handler_kind k)
{
	const struct cfg_resource *c = r->p.cfg;

	switch (k) {
	case HANDLER_SPLIT_BRAIN:
		return c->handler_split_brain;
	case HANDLER_FENCE_PEER:
		return c->handler_fence_peer;
	case HANDLER_BEFORE_RESYNC_TARGET:
		return c->handler_before_resync_target;
	case HANDLER_AFTER_RESYNC_TARGET:
		return c->handler_after_resync_target;
	case HANDLER_LOCAL_IO_ERROR:
		return c->handler_local_io_error;
	default:
		return "";
	}
}

static void on_done(void *arg, const struct handler_result *res);

/*
 * Queue handler @k with @e (taken over). Returns the run's id, 0 when it
 * is not configured or cannot run (logged). Lock held.
 */
static uint64_t run(struct repl *r, enum handler_kind k, struct handler_env *e)
{
	struct fence *f = r->fence;
	const char *path = handler_path(r, k);
	uint64_t id = 0;
	int ret;

	if (!path[0] || !f || !f->h) {
		handler_env_free(e);
		return 0;
	}
	ret = handler_run(f->h, k, path, e, on_done, r, &id);
	if (ret) {
		log_err("%s: cannot queue the %s handler: %s", r->p.cfg->name,
			handler_name(k), strerror(-ret));
		return 0;
	}
	f->last[k].runs++;
	return id;
}

/* "handler" on the events stream. Lock held. */
static void report(struct repl *r, const struct handler_result *res,
		   const char *result)
{
	json_t *x = json_object();

	if (!x)
		return;
	json_object_set_new(x, "event", json_string("handler"));
	json_object_set_new(x, "handler", json_string(handler_name(res->kind)));
	json_object_set_new(x, "exit_code", res->exit_code >= 0 ?
						    json_integer(res->exit_code) :
						    json_null());
	json_object_set_new(x, "signal", json_integer(res->signal));
	json_object_set_new(x, "timed_out", json_boolean(res->timed_out));
	json_object_set_new(x, "error", res->err ?
						json_string(strerror(-res->err)) :
						json_null());
	json_object_set_new(x, "ms", json_integer((json_int_t)res->ms));
	json_object_set_new(x, "result", json_string(result ? result : ""));
	peer_event(r, handler_name(res->kind), result, x);
}

/* It ran and exited 0. */
static bool succeeded(const struct handler_result *res)
{
	return !res->err && !res->signal && !res->timed_out &&
	       res->exit_code == 0;
}

static void describe(const struct handler_result *res, char *buf, size_t len)
{
	if (res->err)
		snprintf(buf, len, "could not run: %s", strerror(-res->err));
	else if (res->timed_out)
		snprintf(buf, len, "killed after the time limit");
	else if (res->signal)
		snprintf(buf, len, "ended by signal %d", res->signal);
	else
		snprintf(buf, len, "exit code %d", res->exit_code);
}

/* ---- fence-peer ---- */

/* Record the peer Outdated in the superblock copy (written with the next
 * superblock write). Lock held. */
static void mark_peer_outdated(struct repl *r)
{
	struct md_super *sb = &r->p.md->sb;
	struct md_peer *p = &sb->peers[REPL_PEER_SLOT];

	if (sb->bm_nr_slots <= REPL_PEER_SLOT)
		return;
	if (!(p->flags & MD_PF_USED)) {
		p->node_id = r->p.peer->id;
		p->flags |= MD_PF_USED;
	}
	p->flags |= MD_PF_PEER_OUTDATED;
}

/*
 * MD_PF_PEER_OUTDATED follows sm.peer_outdated: set when the peer is known
 * Outdated (fenced, or it left gracefully), cleared once it is connected
 * again. Lock held.
 */
static void sync_peer_flag(struct repl *r)
{
	struct md_super *sb = &r->p.md->sb;

	if (r->sm.peer_outdated)
		mark_peer_outdated(r);
	else if (r->sm.conn == SM_CONN_CONNECTED &&
		 sb->bm_nr_slots > REPL_PEER_SLOT)
		sb->peers[REPL_PEER_SLOT].flags &=
			~(uint32_t)MD_PF_PEER_OUTDATED;
}

/* I/O was just suspended: run fence-peer. Lock held. */
static void suspended(struct repl *r, struct fence *f)
{
	struct handler_env e = { 0 };
	int ret;

	f->susp_since = time(NULL);
	f->fence_id = 0;
	if (__atomic_load_n(&f->failing, __ATOMIC_ACQUIRE)) {
		snprintf(f->susp_why, sizeof(f->susp_why),
			 "the connection to %s was lost while stopping",
			 r->p.peer->name);
		return;
	}
	if (!r->p.cfg->handler_fence_peer[0]) {
		snprintf(f->susp_why, sizeof(f->susp_why),
			 "lost %s, which was UpToDate, and no fence-peer handler is configured: I/O is held until %s returns or `duetctl resume-io %s`",
			 r->p.peer->name, r->p.peer->name, r->p.cfg->name);
		log_err("%s: %s", r->p.cfg->name, f->susp_why);
		return;
	}
	ret = env_common(r, &e, HANDLER_FENCE_PEER);
	if (ret) {
		handler_env_free(&e);
		log_err("%s: fence-peer: %s", r->p.cfg->name, strerror(-ret));
	} else {
		f->fence_id = run(r, HANDLER_FENCE_PEER, &e);
	}
	if (f->fence_id) {
		f->fences++;
		snprintf(f->susp_why, sizeof(f->susp_why),
			 "lost %s, which was UpToDate: application I/O is held while the fence-peer handler runs",
			 r->p.peer->name);
		log_warn("%s: %s", r->p.cfg->name, f->susp_why);
	} else {
		snprintf(f->susp_why, sizeof(f->susp_why),
			 "lost %s, which was UpToDate, and the fence-peer handler could not be started: I/O is held until %s returns or `duetctl resume-io %s`",
			 r->p.peer->name, r->p.peer->name, r->p.cfg->name);
	}
}

static void resumed(struct repl *r, struct fence *f)
{
	const char *how;

	if (r->sm.conn == SM_CONN_CONNECTED)
		how = "the peer is back";
	else if (r->sm.peer_outdated)
		how = "the peer is fenced";
	else if (r->sm.role != SM_ROLE_PRIMARY)
		how = "this node is no longer Primary";
	else
		how = "resume-io: without fencing the peer";
	log_notice("%s: application I/O resumed after %lld s: %s",
		   r->p.cfg->name, (long long)(time(NULL) - f->susp_since), how);
	f->susp_why[0] = '\0';
	f->fence_id = 0;
}

void fence_state_changed(struct repl *r)
{
	struct fence *f = r->fence;
	const struct sm_state *s = &r->sm;
	bool armed, release;

	if (!f)
		return;
	armed = s->fencing == CFG_FENCE_SUSPEND_IO &&
		s->role == SM_ROLE_PRIMARY &&
		(s->susp || (s->conn == SM_CONN_CONNECTED &&
			     s->peer_disk == SM_DISK_UPTODATE));
	release = (f->armed && !armed) || (f->was_susp && !s->susp);
	if (release)
		f->epoch++;
	f->armed = armed;
	__atomic_store_n(&f->ticket, armed ? f->epoch : 0, __ATOMIC_RELEASE);
	__atomic_store_n(&f->susp, s->susp ? 1 : 0, __ATOMIC_RELEASE);
	if (s->susp && !f->was_susp)
		suspended(r, f);
	else if (!s->susp && f->was_susp)
		resumed(r, f);
	f->was_susp = s->susp;
	sync_peer_flag(r);
	if (release)
		kick_paths(r);
}

/* fence-peer ended. Lock held. */
static void fence_done(struct repl *r, struct fence *f,
		       const struct handler_result *res)
{
	struct sm_req q = { .type = SM_EV_FENCE_OK };
	const char *meaning = NULL;
	struct uuid_info u;
	char how[64];
	bool ok;

	f->fence_id = 0;
	describe(res, how, sizeof(how));
	ok = !res->err && !res->signal && !res->timed_out &&
	     handler_fence_ok(res->exit_code, &meaning);
	if (res->err || res->signal || res->timed_out)
		meaning = "the handler failed";
	snprintf(f->fence_result, sizeof(f->fence_result), "%s (%s)", meaning,
		 how);
	report(r, res, f->fence_result);
	if (res->err == -ECANCELED)
		return;
	if (r->sm.conn == SM_CONN_CONNECTED) {
		log_notice("%s: fence-peer: %s, but %s is connected again: result ignored",
			   r->p.cfg->name, f->fence_result, r->p.peer->name);
		return;
	}
	if (!ok) {
		q.type = SM_EV_FENCE_FAILED;
		peer_sm_do(r, &q, NULL, 0);
		if (r->sm.susp) {
			snprintf(f->susp_why, sizeof(f->susp_why),
				 "lost %s, which was UpToDate, and fence-peer did not fence it: %s; I/O is held until %s returns or `duetctl resume-io %s`",
				 r->p.peer->name, f->fence_result,
				 r->p.peer->name, r->p.cfg->name);
			log_err("%s: %s", r->p.cfg->name, f->susp_why);
		} else {
			log_err("%s: fence-peer failed: %s", r->p.cfg->name,
				f->fence_result);
		}
		return;
	}
	/* Durable before any held write completes: after a crash, this
	 * node must still know the peer cannot have newer data. */
	mark_peer_outdated(r);
	peer_my_uuid(r, &u);
	if (peer_save_uuid(r, &u))
		log_err("%s: the peer is fenced, but the superblock could not record it",
			r->p.cfg->name);
	peer_sm_do(r, &q, NULL, 0);
	log_notice("%s: fence-peer: %s: %s recorded Outdated in the metadata",
		   r->p.cfg->name, f->fence_result, r->p.peer->name);
}

/* ---- before/after-resync-target, split-brain, local-io-error ---- */

bool fence_before_resync_target(struct repl *r, bool full)
{
	struct fence *f = r->fence;
	struct handler_env e = { 0 };
	uint64_t bytes;
	struct bm *bm;
	int ret;

	if (!f || !r->p.cfg->handler_before_resync_target[0])
		return false;
	bm = meta_lock_bm(r->p.meta);
	bytes = bm_dirty_bytes(bm);
	meta_unlock_bm(r->p.meta);
	ret = env_common(r, &e, HANDLER_BEFORE_RESYNC_TARGET);
	ADD(&e, ret, "DUET_RESYNC_FULL", "%d", full ? 1 : 0);
	ADD(&e, ret, "DUET_RESYNC_BYTES", "%llu", (unsigned long long)bytes);
	if (ret) {
		handler_env_free(&e);
		log_err("%s: before-resync-target: %s", r->p.cfg->name,
			strerror(-ret));
		return false;
	}
	f->before_id = run(r, HANDLER_BEFORE_RESYNC_TARGET, &e);
	if (!f->before_id)
		return false;
	f->before_gen = r->conn_gen;
	log_notice("%s: the resync from %s waits for the before-resync-target handler",
		   r->p.cfg->name, r->p.peer->name);
	return true;
}

/* before-resync-target ended. Lock held; dropped to stop the connection. */
static void before_done(struct repl *r, struct fence *f,
			const struct handler_result *res)
{
	struct sm_req q = { .type = SM_REQ_DISCONNECT };
	char how[64], why[256], text[256];

	f->before_id = 0;
	describe(res, how, sizeof(how));
	report(r, res, succeeded(res) ? "the resync starts" :
					 "the resync does not start");
	if (res->err == -ECANCELED)
		return;
	if (r->conn_gen != f->before_gen || !r->sync_target) {
		log_notice("%s: before-resync-target: %s, but that resync is gone already",
			   r->p.cfg->name, how);
		return;
	}
	if (succeeded(res)) {
		log_notice("%s: before-resync-target succeeded: the resync from %s starts",
			   r->p.cfg->name, r->p.peer->name);
		apply_queue_bm(r);
		return;
	}
	/* DRBD's rule: a failed before-resync-target drops the connection */
	if (peer_sm_do(r, &q, why, sizeof(why))) {
		log_err("%s: before-resync-target: %s; but the connection cannot be dropped (%s): the resync starts anyway",
			r->p.cfg->name, how, why);
		apply_queue_bm(r);
		return;
	}
	log_err("%s: before-resync-target handler failed (%s): the resync from %s does not start; StandAlone until `duetctl connect %s`",
		r->p.cfg->name, how, r->p.peer->name, r->p.cfg->name);
	snprintf(text, sizeof(text), "before-resync-target handler on %s: %s",
		 r->p.self->name, how);
	pthread_mutex_unlock(&r->lock);
	conn_give_up(r->conn, PROTO_DISC_SHUTDOWN, text);
	pthread_mutex_lock(&r->lock);
}

void fence_after_resync_target(struct repl *r, uint64_t bytes)
{
	struct handler_env e = { 0 };
	int ret;

	if (!r->fence || !r->p.cfg->handler_after_resync_target[0])
		return;
	ret = env_common(r, &e, HANDLER_AFTER_RESYNC_TARGET);
	ADD(&e, ret, "DUET_RESYNC_BYTES", "%llu", (unsigned long long)bytes);
	if (ret) {
		handler_env_free(&e);
		log_err("%s: after-resync-target: %s", r->p.cfg->name,
			strerror(-ret));
		return;
	}
	run(r, HANDLER_AFTER_RESYNC_TARGET, &e);
}

void fence_split_brain(struct repl *r, bool resolved, const char *policy,
		       const char *victim, int rule, const char *why)
{
	struct handler_env e = { 0 };
	int ret;

	if (!r->fence || !r->p.cfg->handler_split_brain[0])
		return;
	ret = env_common(r, &e, HANDLER_SPLIT_BRAIN);
	ADD(&e, ret, "DUET_SB_RESOLVED", "%s", resolved ? "yes" : "no");
	ADD(&e, ret, "DUET_SB_POLICY", "%s", policy ? policy : "");
	ADD(&e, ret, "DUET_SB_VICTIM", "%s", victim ? victim : "");
	ADD(&e, ret, "DUET_SB_RULE", "%d", rule);
	ADD(&e, ret, "DUET_SB_REASON", "%s", why ? why : "");
	if (ret) {
		handler_env_free(&e);
		log_err("%s: split-brain: %s", r->p.cfg->name, strerror(-ret));
		return;
	}
	run(r, HANDLER_SPLIT_BRAIN, &e);
}

void fence_local_io_error_locked(struct repl *r, int err, uint64_t sector,
				 uint32_t nr_sectors, bool write)
{
	struct fence *f = r->fence;
	struct handler_env e = { 0 };
	const char *name;
	int ret;

	if (!f || !r->p.cfg->handler_local_io_error[0])
		return;
	if (f->io_err_id) {
		f->io_err_more++;
		return;
	}
	name = strerrorname_np(-err);
	ret = env_common(r, &e, HANDLER_LOCAL_IO_ERROR);
	ADD(&e, ret, "DUET_IO_ERROR", "%s", name ? name : "?");
	ADD(&e, ret, "DUET_IO_ERRNO", "%d", -err);
	ADD(&e, ret, "DUET_IO_OP", "%s", write ? "write" : "read");
	ADD(&e, ret, "DUET_IO_SECTOR", "%llu", (unsigned long long)sector);
	ADD(&e, ret, "DUET_IO_SECTORS", "%u", nr_sectors);
	ADD(&e, ret, "DUET_ON_IO_ERROR", "%s",
	    sm_on_io_error_name(r->sm.on_io_error));
	if (ret) {
		handler_env_free(&e);
		log_err("%s: local-io-error: %s", r->p.cfg->name,
			strerror(-ret));
		return;
	}
	f->io_err_id = run(r, HANDLER_LOCAL_IO_ERROR, &e);
}

void fence_local_io_error(struct repl *r, int err, uint64_t sector,
			  uint32_t nr_sectors, bool write)
{
	pthread_mutex_lock(&r->lock);
	fence_local_io_error_locked(r, err, sector, nr_sectors, write);
	pthread_mutex_unlock(&r->lock);
}

/* Handler thread: every run ends here. */
static void on_done(void *arg, const struct handler_result *res)
{
	struct repl *r = arg;
	struct fence *f;
	char how[64];

	pthread_mutex_lock(&r->lock);
	f = r->fence;
	if ((unsigned int)res->kind < HANDLER_COUNT) {
		f->last[res->kind].valid = true;
		f->last[res->kind].res = *res;
		f->last[res->kind].at = time(NULL);
	}
	if (res->kind == HANDLER_FENCE_PEER && res->id == f->fence_id) {
		fence_done(r, f, res);
	} else if (res->kind == HANDLER_BEFORE_RESYNC_TARGET &&
		   res->id == f->before_id) {
		before_done(r, f, res);
	} else {
		describe(res, how, sizeof(how));
		if (res->kind == HANDLER_LOCAL_IO_ERROR &&
		    res->id == f->io_err_id) {
			f->io_err_id = 0;
			if (f->io_err_more)
				log_warn("%s: %llu more local I/O errors while local-io-error ran",
					 r->p.cfg->name,
					 (unsigned long long)f->io_err_more);
			f->io_err_more = 0;
		}
		report(r, res, how);
	}
	pthread_mutex_unlock(&r->lock);
}

/* ---- life cycle ---- */

int fence_create(struct repl *r)
{
	struct fence *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->epoch = 1;
	f->h = handlers_create(r->p.cfg->name, 0);
	if (!f->h) {
		int ret = -errno;

		free(f);
		return ret;
	}
	pthread_mutex_lock(&r->lock);
	r->fence = f;
	fence_state_changed(r);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

void fence_shutdown(struct repl *r)
{
	struct fence *f = r->fence;
	struct handlers *h;

	if (!f)
		return;
	pthread_mutex_lock(&r->lock);
	__atomic_store_n(&f->failing, 1, __ATOMIC_RELEASE);
	if (f->was_susp || f->armed)
		log_warn("%s: stopping with application I/O held by fencing: it fails (EIO)",
			 r->p.cfg->name);
	h = f->h;
	f->h = NULL;
	kick_paths(r);
	pthread_mutex_unlock(&r->lock);
	/* its last callbacks take repl.lock */
	handlers_destroy(h);
}

void fence_destroy(struct repl *r)
{
	if (!r->fence)
		return;
	handlers_destroy(r->fence->h);
	free(r->fence);
	r->fence = NULL;
}

/* ---- status ---- */

void fence_status(struct repl *r, json_t *o)
{
	struct fence *f = r->fence;
	json_t *j, *hs, *one;

	if (!f)
		return;
	pthread_mutex_lock(&r->lock);
	json_object_set_new(o, "suspended", json_boolean(r->sm.susp));
	json_object_set_new(o, "suspended_why",
			    r->sm.susp ? json_string(f->susp_why) : json_null());
	json_object_set_new(o, "peer_outdated",
			    json_boolean(r->sm.peer_outdated));
	j = json_object();
	json_object_set_new(j, "policy",
			    json_string(sm_fencing_name(r->sm.fencing)));
	json_object_set_new(j, "suspended_since",
			    r->sm.susp ? json_integer((json_int_t)f->susp_since) :
					 json_null());
	json_object_set_new(j, "fence_peer_running",
			    json_boolean(f->fence_id != 0));
	json_object_set_new(j, "fence_peer_runs",
			    json_integer((json_int_t)f->fences));
	json_object_set_new(j, "last_result",
			    f->fence_result[0] ? json_string(f->fence_result) :
						 json_null());
	json_object_set_new(o, "fencing", j);
	hs = json_object();
	for (unsigned int k = 0; k < HANDLER_COUNT; k++) {
		const struct handler_result *res = &f->last[k].res;

		if (!handler_path(r, (enum handler_kind)k)[0] &&
		    !f->last[k].runs)
			continue;
		one = json_object();
		json_object_set_new(one, "path",
				    json_string(handler_path(r, (enum handler_kind)k)));
		json_object_set_new(one, "runs",
				    json_integer((json_int_t)f->last[k].runs));
		json_object_set_new(one, "last_exit_code",
				    f->last[k].valid && res->exit_code >= 0 ?
					    json_integer(res->exit_code) :
					    json_null());
		json_object_set_new(one, "last_time",
				    f->last[k].valid ?
					    json_integer((json_int_t)f->last[k].at) :
					    json_null());
		json_object_set_new(hs, handler_name((enum handler_kind)k), one);
	}
	json_object_set_new(o, "handlers", hs);
	pthread_mutex_unlock(&r->lock);
}

/* ---- duetctl resume-io ---- */

static int h_resume_io(void *arg, json_t *req, json_t *resp)
{
	struct daemon *d = arg;
	struct sm_req q = { .type = SM_REQ_RESUME_IO };
	struct repl *r = NULL;
	char why[256] = "";
	int ret;

	(void)req;
	pthread_mutex_lock(&d->lock);
	if (d->repl && d->state == DAEMON_RUNNING)
		r = d->repl;
	pthread_mutex_unlock(&d->lock);
	if (!r)
		return ctl_error(resp, d->repl ? -EAGAIN : -EINVAL,
				 d->repl ? "the resource is not running" :
					   "%s has no peer: resume-io needs a two-node resource",
				 d->res);
	pthread_mutex_lock(&r->lock);
	ret = peer_sm_do(r, &q, why, sizeof(why));
	if (!ret && why[0])
		log_warn("%s: resume-io: %s", r->p.cfg->name, why);
	pthread_mutex_unlock(&r->lock);
	if (ret)
		return ctl_error(resp, ret, "%s", why[0] ? why : strerror(-ret));
	if (why[0])
		json_object_set_new(resp, "note", json_string(why));
	repl_status(r, resp);
	return 0;
}

int fence_register(struct ctl_server *ctl, struct daemon *d)
{
	return ctl_register(ctl, "resume-io", h_resume_io, d);
}
