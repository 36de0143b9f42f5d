// SPDX-License-Identifier: MIT
/*
 * Generated-sequence model checker for the generation UUIDs and the state
 * machine.
 *
 * Two nodes, each with a disk modelled as the set of write ids it holds
 * (a write id stands for a block; the bitmap is a set of write ids too).
 * Events: write, network failure, connect (plain, with an automatic
 * split-brain policy, with --discard-my-data, or interrupted half-way
 * through the resync), graceful disconnect, crash (optionally with a
 * write in flight that reached only one disk), promote, promote --force,
 * demote, outdate, detach, attach, fence-peer. The model plays the daemon:
 * it drives sm_request() for every state change and the uuid_ helpers for
 * every UUID change, exactly as docs/generation-uuids.md prescribes, and
 * decides every connect with uuid_sb_resolve(). The ground truth (which
 * writes were acknowledged, which node holds which) is kept beside it.
 *
 * Checked after every step and at every handshake:
 *  (a) a resync never overwrites acknowledged writes that only the target
 *      holds, unless a split-brain policy or --discard-my-data chose that
 *      side as the loser (discard-zero-changes may never lose any);
 *  (b) diverged data (each side holds acknowledged writes the other lacks)
 *      is never resynced without a split-brain verdict;
 *  (c) "no sync" only when both disks hold the same data, and a completed
 *      resync leaves both disks equal (the bitmaps covered the difference);
 *  plus: no acknowledged write ever disappears from both disks unless a
 *  resolution discarded it; a Primary's application never sees its own
 *  acknowledged writes vanish; connected UpToDate disks are identical and
 *  carry the same current UUID; both nodes agree on the connection.
 *
 * Every sequence up to DUET_MODEL_DEPTH events (default 5) is enumerated
 * from five starting points (synced, new, A Primary, A a diskless
 * Primary, all with dont-care fencing, and synced with suspend-io), then
 * DUET_MODEL_RUNS random sequences (default 10000) of DUET_MODEL_LEN
 * events (default 60) from seed DUET_MODEL_SEED: about 1.5 s under ASan.
 * Raise them for longer runs.
 * A failure prints DUET_MODEL_REPLAY=... to replay it step by step.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sm.h"
#include "util.h"
#include "uuid.h"

#define MAXW 256 /* write ids per sequence */
#define MAXTRACE 128

struct set {
	uint64_t w[MAXW / 64];
};

static void set_add(struct set *s, unsigned int i)
{
	s->w[i / 64] |= 1ull << (i % 64);
}

static void set_or(struct set *d, const struct set *a)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(d->w); i++)
		d->w[i] |= a->w[i];
}

/* a & ~b */
static struct set set_minus(const struct set *a, const struct set *b)
{
	struct set r;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(r.w); i++)
		r.w[i] = a->w[i] & ~b->w[i];
	return r;
}

static struct set set_and(const struct set *a, const struct set *b)
{
	struct set r;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(r.w); i++)
		r.w[i] = a->w[i] & b->w[i];
	return r;
}

static bool set_empty(const struct set *s)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(s->w); i++)
		if (s->w[i])
			return false;
	return true;
}

static bool set_eq(const struct set *a, const struct set *b)
{
	return !memcmp(a, b, sizeof(*a));
}

static uint64_t set_count(const struct set *s)
{
	uint64_t n = 0;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(s->w); i++)
		n += (uint64_t)__builtin_popcountll(s->w[i]);
	return n;
}

/* A backing disk: its blocks, its bitmap for the peer, its metadata. */
struct disk {
	struct set data;
	struct set bits;
	struct uuid_info md; /* current/bitmap/history/flags as on disk */
	bool peer_outdated; /* MD_PF_PEER_OUTDATED */
};

struct node {
	struct sm_state sm;
	struct disk disk; /* attached unless sm.disk is Diskless */
	bool gen_mine; /* daemon memory: this writer period already
				 * started its own generation */
	uint64_t exposed; /* diskless: generation the application saw */
	uint64_t promoted;
	struct set session; /* acked by this node as Primary, this period */
	struct set view; /* what its application has seen, this period */
};

struct world {
	struct node n[2];
	struct set acked;
	struct set lost_ok; /* discarded by an explicit resolution */
	unsigned int next_write;
	uint64_t next_uuid;
	uint64_t clock;
	bool forced; /* --force or resume-io was used */
	/* not part of the state compared for pruning: */
	int init; /* how init_pair() was called, for replay */
	int ntrace;
	unsigned char trace[MAXTRACE];
};

#define STATE_BYTES offsetof(struct world, ntrace)

enum ev {
	E_WRITE0,
	E_WRITE1,
	E_NETFAIL,
	E_CONNECT,
	E_CONNECT_ZERO,
	E_CONNECT_LEAST,
	E_CONNECT_YOUNGER,
	E_DISCARD0,
	E_DISCARD1,
	E_PARTIAL,
	E_DISC0,
	E_DISC1,
	E_CRASH0,
	E_CRASH1,
	E_CRASH_LOCAL0,
	E_CRASH_LOCAL1,
	E_CRASH_PEER0,
	E_CRASH_PEER1,
	E_PROMOTE0,
	E_PROMOTE1,
	E_FORCE0,
	E_FORCE1,
	E_DEMOTE0,
	E_DEMOTE1,
	E_OUTDATE0,
	E_OUTDATE1,
	E_DETACH0,
	E_DETACH1,
	E_ATTACH0,
	E_ATTACH1,
	E_FENCE0,
	E_FENCE1,
	E_INVALIDATE0,
	E_INVALIDATE1,
	E_COUNT
};

static const char *const ev_names[E_COUNT] = {
	"write(A)",
	"write(B)",
	"netfail",
	"connect",
	"connect[zero-changes]",
	"connect[least-changes]",
	"connect[younger-primary]",
	"connect[A --discard-my-data]",
	"connect[B --discard-my-data]",
	"connect+interrupted-resync",
	"disconnect(A)",
	"disconnect(B)",
	"crash(A)",
	"crash(B)",
	"crash(A, in-flight write on A only)",
	"crash(B, in-flight write on B only)",
	"crash(A, in-flight write on B only)",
	"crash(B, in-flight write on A only)",
	"primary(A)",
	"primary(B)",
	"primary --force(A)",
	"primary --force(B)",
	"secondary(A)",
	"secondary(B)",
	"outdate(A)",
	"outdate(B)",
	"detach(A)",
	"detach(B)",
	"attach(A)",
	"attach(B)",
	"fence-peer(A)",
	"fence-peer(B)",
	"invalidate(A)",
	"invalidate(B)",
};

static struct world *cur_world; /* for failure reports */
static uint64_t rule_hits[300]; /* decision rules reached */

static void dump_nodes(const struct world *w)
{
	char buf[160];
	int i;

	for (i = 0; i < 2; i++) {
		const struct node *x = &w->n[i];

		print_error(
			"  %c: %s cur %llx bm %llx flags %x bits %llu data %llu\n",
			'A' + i, sm_state_str(&x->sm, buf, sizeof(buf)),
			(unsigned long long)x->disk.md.current,
			(unsigned long long)x->disk.md.bitmap, x->disk.md.flags,
			(unsigned long long)set_count(&x->disk.bits),
			(unsigned long long)set_count(&x->disk.data));
	}
}

static void dump(const struct world *w)
{
	int i;

	print_error("sequence:");
	for (i = 0; i < w->ntrace; i++)
		print_error(" %s%s", ev_names[w->trace[i]],
			    i + 1 < w->ntrace ? "," : "\n");
	print_error("replay with DUET_MODEL_REPLAY=%d:", w->init);
	for (i = 0; i < w->ntrace; i++)
		print_error("%d%s", w->trace[i],
			    i + 1 < w->ntrace ? "." : "\n");
	dump_nodes(w);
}

#define CHECK(cond, ...)                       \
	do {                                   \
		if (!(cond)) {                 \
			dump(cur_world);       \
			fail_msg(__VA_ARGS__); \
		}                              \
	} while (0)

static bool has_disk(const struct node *x)
{
	return x->sm.disk != SM_DISK_DISKLESS;
}

static bool is_conn(const struct world *w)
{
	return w->n[0].sm.conn == SM_CONN_CONNECTED;
}

static uint64_t new_uuid(struct world *w)
{
	return ++w->next_uuid << 8;
}

/* Run a request or event; the model only asks for what it handles. */
static int req(struct node *x, const struct sm_req *r)
{
	char why[512];
	struct sm_state n;
	int ret;

	/* Reasons are test_sm.c's business; formatting them here would
	 * cost most of the run time. Only a failure asks for one. */
	ret = sm_request(&x->sm, r, &n, NULL, 0);
	if (ret == -EPROTO || ret == -EINVAL) {
		sm_request(&x->sm, r, &n, why, sizeof(why));
		CHECK(false, "%s: %d %s", sm_req_name(r->type), ret, why);
	}
	if (!ret)
		x->sm = n;
	return ret;
}

static int req_t(struct node *x, enum sm_req_type t)
{
	struct sm_req r;

	memset(&r, 0, sizeof(r));
	r.type = t;
	return req(x, &r);
}

/* Persist what the state machine says about the disk. */
static void persist(struct node *x)
{
	if (!has_disk(x))
		return;
	x->disk.md.flags = sm_disk_md_flags(x->sm.disk, x->disk.md.flags);
	x->disk.peer_outdated = x->sm.peer_outdated;
}

static struct uuid_info disk_info(const struct node *x, uint32_t id)
{
	struct uuid_info u = x->disk.md;

	u.node_id = id;
	u.dirty_bits = set_count(&x->disk.bits);
	u.primary = x->sm.role == SM_ROLE_PRIMARY;
	u.diskless = false;
	u.promoted = x->promoted;
	return u;
}

static struct uuid_info info(const struct node *x, uint32_t id)
{
	struct uuid_info u;

	if (has_disk(x))
		return disk_info(x, id);
	memset(&u, 0, sizeof(u));
	u.node_id = id;
	u.diskless = true;
	u.primary = x->sm.role == SM_ROLE_PRIMARY;
	u.current = u.primary ? x->exposed : 0;
	return u;
}

static void notify_peer(struct world *w, int i)
{
	struct node *x = &w->n[i], *y = &w->n[1 - i];
	struct sm_req r;

	if (!is_conn(w))
		return;
	memset(&r, 0, sizeof(r));
	r.type = SM_EV_PEER_STATE;
	r.peer_role = x->sm.role;
	r.peer_disk = x->sm.disk;
	r.peer_repl = x->sm.repl;
	CHECK(req(y, &r) == 0, "peer state refused");
	persist(y);
}

/* A block lands on node @i's disk and not on the peer's: the generation
 * must be this writer period's own, and the bitmap must record it. */
static void land_alone(struct world *w, int i, unsigned int id)
{
	struct node *x = &w->n[i];

	if (uuid_write_needs_new_current(&x->disk.md, x->gen_mine)) {
		uuid_new_current(&x->disk.md, new_uuid(w));
		x->gen_mine = true;
	}
	set_add(&x->disk.bits, id);
	set_add(&x->disk.data, id);
}

/* Apply a write issued by Primary @i to the disks it reaches. */
static void apply_write(struct world *w, int i, unsigned int id, bool local,
			bool remote)
{
	struct node *x = &w->n[i], *y = &w->n[1 - i];

	if (local) {
		if (remote)
			set_add(&x->disk.data, id);
		else
			land_alone(w, i, id);
	}
	if (remote) {
		if (local)
			set_add(&y->disk.data, id);
		else
			land_alone(w, 1 - i, id);
		if (!has_disk(x))
			x->exposed = y->disk.md.current;
	}
}

static bool ev_write(struct world *w, int i)
{
	struct node *x = &w->n[i];
	unsigned int id;

	if (x->sm.role != SM_ROLE_PRIMARY || x->sm.susp ||
	    !sm_data_access(&x->sm) || w->next_write >= MAXW)
		return false;
	id = w->next_write++;
	apply_write(w, i, id, sm_local_gets_writes(&x->sm),
		    sm_peer_gets_writes(&x->sm));
	set_add(&w->acked, id);
	set_add(&x->session, id);
	set_add(&x->view, id);
	return true;
}

static void peer_lost(struct world *w, bool graceful)
{
	struct sm_req r;
	int i;

	memset(&r, 0, sizeof(r));
	r.type = SM_EV_PEER_LOST;
	r.graceful = graceful;
	for (i = 0; i < 2; i++) {
		CHECK(req(&w->n[i], &r) == 0, "peer-lost refused");
		persist(&w->n[i]);
	}
}

static bool ev_netfail(struct world *w)
{
	if (!is_conn(w))
		return false;
	peer_lost(w, false);
	return true;
}

/* The fence-peer handler of node @i: outdates the peer out of band unless
 * the peer is Primary. */
static bool fence(struct world *w, int i)
{
	struct node *x = &w->n[i], *y = &w->n[1 - i];
	bool ok = y->sm.role != SM_ROLE_PRIMARY;

	if (ok && has_disk(y) && !req_t(y, SM_REQ_OUTDATE)) {
		uuid_outdate(&y->disk.md);
		persist(y);
	}
	req_t(x, ok ? SM_EV_FENCE_OK : SM_EV_FENCE_FAILED);
	persist(x);
	return ok;
}

static bool ev_fence(struct world *w, int i)
{
	if (!w->n[i].sm.susp)
		return false;
	return fence(w, i);
}

/* Resync from @s to @t; @partial stops half-way with a network failure. */
static void resync(struct world *w, int s, int t, bool full, bool partial)
{
	struct node *S = &w->n[s], *T = &w->n[t];
	struct set scope, copy, even;
	unsigned int id;

	uuid_sync_begin(&T->disk.md, true, full);
	uuid_sync_begin(&S->disk.md, false, full);
	persist(T);
	scope = S->disk.bits;
	set_or(&scope, &T->disk.bits);
	if (full) {
		memset(&scope, 0, sizeof(scope));
		for (id = 0; id < w->next_write; id++)
			set_add(&scope, id);
	}
	copy = scope;
	if (partial) {
		memset(&even, 0, sizeof(even));
		for (id = 0; id < MAXW; id += 2)
			set_add(&even, id);
		copy = set_and(&scope, &even);
	}
	T->disk.data = set_minus(&T->disk.data, &copy);
	even = set_and(&S->disk.data, &copy);
	set_or(&T->disk.data, &even);
	if (partial) {
		S->disk.bits = set_minus(&scope, &copy);
		T->disk.bits = S->disk.bits;
		peer_lost(w, false);
		return;
	}
	CHECK(set_eq(&T->disk.data, &S->disk.data),
	      "(c) a completed %s resync left the disks different: the bitmaps missed a block",
	      full ? "full" : "bitmap-based");
	CHECK(req_t(S, SM_EV_SYNC_DONE) == 0 && req_t(T, SM_EV_SYNC_DONE) == 0,
	      "sync-done refused");
	uuid_sync_source_done(&S->disk.md);
	uuid_sync_target_done(&T->disk.md, &S->disk.md);
	memset(&S->disk.bits, 0, sizeof(S->disk.bits));
	memset(&T->disk.bits, 0, sizeof(T->disk.bits));
	persist(S);
	persist(T);
}

/* Properties (a)-(c) for a handshake between two attached disks. */
static void check_handshake(struct world *w, const struct uuid_decision *raw,
			    const struct uuid_decision *fin,
			    enum cfg_sb_policy policy)
{
	const struct set *da = &w->n[0].disk.data, *db = &w->n[1].disk.data;
	struct set ua = set_minus(da, db), ub = set_minus(db, da);
	struct set tu;
	enum uuid_verdict v = fin->verdict;

	ua = set_and(&ua, &w->acked);
	ub = set_and(&ub, &w->acked);
	ua = set_minus(&ua, &w->lost_ok);
	ub = set_minus(&ub, &w->lost_ok);
	CHECK(set_empty(&ua) || set_empty(&ub) ||
		      raw->verdict == UUID_SPLIT_BRAIN ||
		      raw->verdict == UUID_UNRELATED,
	      "(b) both sides hold acknowledged writes the other lacks, but the verdict is %s (rule %d)",
	      uuid_verdict_name(raw->verdict), raw->rule);
	if (v == UUID_NO_SYNC)
		CHECK(set_eq(da, db),
		      "(c) verdict %s (rule %d) but the disks differ",
		      uuid_verdict_name(v), fin->rule);
	if (!uuid_verdict_is_sync(v))
		return;
	tu = uuid_verdict_is_target(v) ? ua : ub;
	if (fin->rule < 200) {
		CHECK(set_empty(&tu),
		      "(a) %s (rule %d) overwrites %llu acknowledged writes only the target has",
		      uuid_verdict_name(v), fin->rule,
		      (unsigned long long)set_count(&tu));
		return;
	}
	if (policy == CFG_SB_DISCARD_ZERO_CHANGES && fin->rule != 200)
		CHECK(set_empty(&tu),
		      "(a) discard-zero-changes discarded acknowledged writes");
	set_or(&w->lost_ok, &tu);
}

/* Whatever the policy promised, checked against the model's bitmaps and
 * promotion clock (node 0's view of the decision). */
static void check_policy(const struct world *w, const struct uuid_decision *d)
{
	int loser = uuid_verdict_is_target(d->verdict) ? 0 : 1;
	const struct node *l = &w->n[loser], *win = &w->n[1 - loser];

	if (!uuid_verdict_is_sync(d->verdict))
		return;
	if (d->rule == 210 || d->rule == 213)
		CHECK(set_empty(&l->disk.bits),
		      "discard-zero-changes chose a side with changes");
	if (d->rule == 220)
		CHECK(set_count(&l->disk.bits) < set_count(&win->disk.bits),
		      "discard-least-changes chose the side with more changes");
	if (d->rule == 230)
		CHECK(l->promoted > win->promoted,
		      "discard-younger-primary chose the older Primary");
	if (d->rule == 240 || d->rule >= 200)
		CHECK(l->sm.role != SM_ROLE_PRIMARY,
		      "a split-brain resolution discards a Primary's data");
}

/*
 * A full resync is only needed for a new disk, an invalidated one, or
 * after a split brain whose bitmaps count from different generations; in
 * every other case the lifecycle keeps enough UUIDs for a bitmap-based
 * one. And two disks at the same generation always connect.
 */
static void check_outcome(const struct world *w,
			  const struct uuid_decision *raw,
			  const struct uuid_decision *fin,
			  const struct sm_state before[2])
{
	int t = uuid_verdict_is_target(fin->verdict) ? 0 : 1;
	const struct uuid_info *tm = &w->n[t].disk.md;
	const struct uuid_info *sm = &w->n[1 - t].disk.md;

	if (uuid_verdict_is_full(fin->verdict))
		CHECK(!tm->current ||
			      ((tm->flags | sm->flags) & MD_F_FULL_SYNC) ||
			      (fin->rule >= 200 && !raw->bitmaps_comparable),
		      "full resync (rule %d) where a bitmap-based one was possible",
		      fin->rule);
	if (raw->rule >= 40 && raw->rule <= 44 &&
	    !(before[0].role == SM_ROLE_PRIMARY &&
	      before[1].role == SM_ROLE_PRIMARY))
		CHECK(is_conn(w),
		      "same generation (rule %d) but the handshake was refused",
		      raw->rule);
}

static bool ev_connect(struct world *w, enum cfg_sb_policy policy, int discard,
		       bool partial)
{
	struct uuid_decision raw, fin[2];
	struct uuid_info in[2];
	struct sm_req r;
	struct sm_state before[2];
	int i, s;

	if (is_conn(w))
		return false;
	for (i = 0; i < 2; i++) {
		memset(&r, 0, sizeof(r));
		r.type = SM_REQ_CONNECT;
		r.discard_my_data = discard == i;
		if (req(&w->n[i], &r))
			return false;
	}
	for (i = 0; i < 2; i++)
		in[i] = info(&w->n[i], (uint32_t)i + 1);
	uuid_decide(&in[0], &in[1], &raw);
	for (i = 0; i < 2; i++)
		uuid_sb_resolve(policy, &in[i], &in[1 - i],
				w->n[i].sm.discard_my_data,
				w->n[1 - i].sm.discard_my_data, &fin[i]);
	rule_hits[fin[0].rule]++;
	CHECK(fin[1].verdict == uuid_mirror(fin[0].verdict) &&
		      fin[0].rule == fin[1].rule,
	      "the two sides decided %s/%s (rules %d/%d)",
	      uuid_verdict_name(fin[0].verdict),
	      uuid_verdict_name(fin[1].verdict), fin[0].rule, fin[1].rule);
	if (has_disk(&w->n[0]) && has_disk(&w->n[1])) {
		check_handshake(w, &raw, &fin[0], policy);
		check_policy(w, &fin[0]);
	}

	before[0] = w->n[0].sm;
	before[1] = w->n[1].sm;
	for (i = 0; i < 2; i++) {
		memset(&r, 0, sizeof(r));
		r.type = SM_EV_CONNECTED;
		r.peer_role = before[1 - i].role;
		r.peer_disk = before[1 - i].disk;
		r.verdict = fin[i].verdict;
		CHECK(req(&w->n[i], &r) == 0, "handshake event refused");
	}
	CHECK(w->n[0].sm.conn == w->n[1].sm.conn,
	      "one side accepted the handshake, the other refused it");
	if (has_disk(&w->n[0]) && has_disk(&w->n[1]))
		check_outcome(w, &raw, &fin[0], before);
	if (!is_conn(w)) {
		/* Refused: the policy's tentative losses did not happen. */
		return true;
	}
	for (i = 0; i < 2; i++) {
		w->n[i].gen_mine = false;
		persist(&w->n[i]);
	}
	if (uuid_verdict_is_sync(fin[0].verdict)) {
		s = uuid_verdict_is_source(fin[0].verdict) ? 0 : 1;
		resync(w, s, 1 - s, uuid_verdict_is_full(fin[0].verdict),
		       partial);
	} else if (fin[0].verdict == UUID_NO_SYNC && fin[0].rule >= 40) {
		uuid_in_sync(&w->n[0].disk.md);
		uuid_in_sync(&w->n[1].disk.md);
	} else if (partial) {
		peer_lost(w, false);
	}
	return true;
}

static bool ev_disconnect(struct world *w, int i)
{
	struct sm_req r;

	if (!is_conn(w) || req_t(&w->n[i], SM_REQ_DISCONNECT))
		return false;
	persist(&w->n[i]);
	memset(&r, 0, sizeof(r));
	r.type = SM_EV_PEER_LOST;
	r.graceful = true;
	CHECK(req(&w->n[1 - i], &r) == 0, "graceful peer-lost refused");
	persist(&w->n[1 - i]);
	r.graceful = false;
	CHECK(req(&w->n[i], &r) == 0, "disconnect completion refused");
	return true;
}

static void attach_disk(struct node *x, int i, struct uuid_decision *d,
			const struct node *peer, bool connected)
{
	struct sm_req r;

	memset(&r, 0, sizeof(r));
	r.type = SM_EV_ATTACHED;
	uuid_after_crash(&x->disk.md);
	uuid_set_role(&x->disk.md, x->sm.role == SM_ROLE_PRIMARY);
	r.md_flags = x->disk.md.flags;
	r.md_peer_flags =
		x->disk.peer_outdated ? MD_PF_USED | MD_PF_PEER_OUTDATED : 0;
	if (connected) {
		struct uuid_info me = disk_info(x, (uint32_t)i + 1);
		struct uuid_info p = info(peer, 2 - (uint32_t)i);

		uuid_sb_resolve(CFG_SB_DISCONNECT, &me, &p, false, false, d);
		rule_hits[d->rule]++;
		r.verdict = d->verdict;
	}
	CHECK(req(x, &r) == 0, "attached refused");
	persist(x);
}

static bool ev_crash(struct world *w, int i, int inflight)
{
	struct node *x = &w->n[i], *y = &w->n[1 - i];
	bool conn = is_conn(w);
	unsigned int id;

	if (inflight) {
		/* Only a Primary with its own disk has writes in flight
		 * that its activity log covers. */
		if (x->sm.role != SM_ROLE_PRIMARY || x->sm.susp ||
		    !sm_data_access(&x->sm) || !has_disk(x) ||
		    w->next_write >= MAXW)
			return false;
		if (inflight == 2 && !sm_peer_gets_writes(&x->sm))
			return false;
		id = w->next_write++;
		if (inflight == 1)
			apply_write(w, i, id, true, false);
		else
			set_add(&y->disk.data, id);
		set_add(&x->disk.bits, id); /* the AL covers it */
	}
	if (conn) {
		struct sm_req r;

		memset(&r, 0, sizeof(r));
		r.type = SM_EV_PEER_LOST;
		CHECK(req(y, &r) == 0, "peer-lost refused");
		persist(y);
	}
	/* Reboot: memory is gone, the disk and its metadata remain. */
	sm_init(&x->sm, x->sm.fencing, x->sm.on_io_error);
	x->gen_mine = false;
	x->exposed = 0;
	memset(&x->session, 0, sizeof(x->session));
	memset(&x->view, 0, sizeof(x->view));
	CHECK(req_t(x, SM_REQ_ATTACH) == 0, "attach after reboot refused");
	attach_disk(x, i, NULL, y, false);
	CHECK(req_t(x, SM_REQ_CONNECT) == 0, "connect after reboot refused");
	return true;
}

static bool ev_promote(struct world *w, int i, bool force)
{
	struct node *x = &w->n[i], *y = &w->n[1 - i];
	bool was_utd = x->sm.disk == SM_DISK_UPTODATE;
	struct sm_req r;
	int ret;

	if (x->sm.role == SM_ROLE_PRIMARY)
		return false;
	memset(&r, 0, sizeof(r));
	r.type = SM_REQ_PRIMARY;
	r.force = force;
	ret = req(x, &r);
	if (ret == -EAGAIN && x->sm.conn != SM_CONN_CONNECTED && fence(w, i))
		ret = req(x, &r);
	if (ret || x->sm.role != SM_ROLE_PRIMARY)
		return false;
	x->gen_mine = false;
	memset(&x->session, 0, sizeof(x->session));
	x->view = x->sm.disk == SM_DISK_UPTODATE ? x->disk.data : y->disk.data;
	x->promoted = ++w->clock;
	w->forced |= force;
	if (has_disk(x)) {
		uuid_set_role(&x->disk.md, true);
		if (force && !was_utd) {
			/* "Only if you know this node has the newest data":
			 * the operator chose it, like --discard-my-data on
			 * the peer; writes it lacks may be dropped. */
			struct set gone = set_minus(&w->acked, &x->disk.data);

			set_or(&w->lost_ok, &gone);
			uuid_force_primary(&x->disk.md, new_uuid(w));
		}
		persist(x);
	} else {
		x->exposed = y->disk.md.current;
	}
	notify_peer(w, i);
	if (is_conn(w) && x->sm.repl == SM_REPL_SYNC_SOURCE)
		resync(w, i, 1 - i, true, false);
	return true;
}

static bool ev_demote(struct world *w, int i)
{
	struct node *x = &w->n[i];

	if (x->sm.role != SM_ROLE_PRIMARY || req_t(x, SM_REQ_SECONDARY))
		return false;
	x->gen_mine = false;
	x->exposed = 0;
	memset(&x->session, 0, sizeof(x->session));
	memset(&x->view, 0, sizeof(x->view));
	if (has_disk(x))
		uuid_set_role(&x->disk.md, false);
	notify_peer(w, i);
	return true;
}

static bool ev_outdate(struct world *w, int i)
{
	struct node *x = &w->n[i];
	enum sm_disk d = x->sm.disk;

	if (req_t(x, SM_REQ_OUTDATE) || x->sm.disk == d)
		return false;
	uuid_outdate(&x->disk.md);
	persist(x);
	return true;
}

static bool ev_detach(struct world *w, int i)
{
	struct node *x = &w->n[i];

	if (!has_disk(x) || req_t(x, SM_REQ_DETACH))
		return false;
	CHECK(req_t(x, SM_EV_DETACHED) == 0, "detached refused");
	/* A clean detach: this disk no longer serves a Primary, and its
	 * metadata will miss later handshakes, so it cannot keep claiming
	 * the peer is outdated. */
	uuid_set_role(&x->disk.md, false);
	x->disk.peer_outdated = false;
	if (x->sm.role == SM_ROLE_PRIMARY)
		x->exposed = x->disk.md.current;
	notify_peer(w, i);
	return true;
}

static bool ev_attach(struct world *w, int i)
{
	struct node *x = &w->n[i], *y = &w->n[1 - i];
	struct uuid_decision d;
	bool conn = is_conn(w);
	int s;

	if (has_disk(x) || req_t(x, SM_REQ_ATTACH))
		return false;
	memset(&d, 0, sizeof(d));
	if (conn && has_disk(y)) {
		/* The same checks as a connect, for the disk joining. */
		struct uuid_info a = disk_info(x, (uint32_t)i + 1);
		struct uuid_info b = info(y, 2 - (uint32_t)i);
		struct uuid_decision raw;

		uuid_decide(&a, &b, &raw);
		if (i == 0) {
			check_handshake(w, &raw, &raw, CFG_SB_DISCONNECT);
		} else {
			struct uuid_decision m = raw;

			m.verdict = uuid_mirror(raw.verdict);
			check_handshake(w, &m, &m, CFG_SB_DISCONNECT);
		}
	}
	attach_disk(x, i, &d, y, conn);
	if (!has_disk(x))
		return true; /* refused: the disk stays detached */
	notify_peer(w, i);
	if (conn && uuid_verdict_is_sync(d.verdict)) {
		s = uuid_verdict_is_source(d.verdict) ? i : 1 - i;
		resync(w, s, 1 - s, uuid_verdict_is_full(d.verdict), false);
	} else if (conn && d.verdict == UUID_NO_SYNC && d.rule >= 40) {
		uuid_in_sync(&x->disk.md);
		uuid_in_sync(&y->disk.md);
	}
	return true;
}

/* The admin declares this disk's data garbage (e.g. a replaced disk): it
 * is overwritten by a full resync, now or at the next connect. */
static bool ev_invalidate(struct world *w, int i)
{
	struct node *x = &w->n[i], *y = &w->n[1 - i];
	struct set gone;
	unsigned int id;

	if (req_t(x, SM_REQ_INVALIDATE))
		return false;
	uuid_invalidate(&x->disk.md);
	gone = set_minus(&x->disk.data, &y->disk.data);
	gone = set_and(&gone, &w->acked);
	set_or(&w->lost_ok, &gone);
	memset(&x->disk.data, 0, sizeof(x->disk.data));
	/* As DRBD does: every bit set, whatever the UUIDs say. */
	memset(&x->disk.bits, 0, sizeof(x->disk.bits));
	for (id = 0; id < w->next_write; id++)
		set_add(&x->disk.bits, id);
	persist(x);
	if (!is_conn(w))
		return true;
	notify_peer(w, i);
	resync(w, 1 - i, i, true, false);
	return true;
}

static bool apply(struct world *w, enum ev e)
{
	switch (e) {
	case E_WRITE0:
	case E_WRITE1:
		return ev_write(w, e - E_WRITE0);
	case E_NETFAIL:
		return ev_netfail(w);
	case E_CONNECT:
		return ev_connect(w, CFG_SB_DISCONNECT, -1, false);
	case E_CONNECT_ZERO:
		return ev_connect(w, CFG_SB_DISCARD_ZERO_CHANGES, -1, false);
	case E_CONNECT_LEAST:
		return ev_connect(w, CFG_SB_DISCARD_LEAST_CHANGES, -1, false);
	case E_CONNECT_YOUNGER:
		return ev_connect(w, CFG_SB_DISCARD_YOUNGER_PRIMARY, -1, false);
	case E_DISCARD0:
	case E_DISCARD1:
		return ev_connect(w, CFG_SB_DISCONNECT, e - E_DISCARD0, false);
	case E_PARTIAL:
		return ev_connect(w, CFG_SB_DISCONNECT, -1, true);
	case E_DISC0:
	case E_DISC1:
		return ev_disconnect(w, e - E_DISC0);
	case E_CRASH0:
	case E_CRASH1:
		return ev_crash(w, e - E_CRASH0, 0);
	case E_CRASH_LOCAL0:
	case E_CRASH_LOCAL1:
		return ev_crash(w, e - E_CRASH_LOCAL0, 1);
	case E_CRASH_PEER0:
	case E_CRASH_PEER1:
		return ev_crash(w, e - E_CRASH_PEER0, 2);
	case E_PROMOTE0:
	case E_PROMOTE1:
		return ev_promote(w, e - E_PROMOTE0, false);
	case E_FORCE0:
	case E_FORCE1:
		return ev_promote(w, e - E_FORCE0, true);
	case E_DEMOTE0:
	case E_DEMOTE1:
		return ev_demote(w, e - E_DEMOTE0);
	case E_OUTDATE0:
	case E_OUTDATE1:
		return ev_outdate(w, e - E_OUTDATE0);
	case E_DETACH0:
	case E_DETACH1:
		return ev_detach(w, e - E_DETACH0);
	case E_ATTACH0:
	case E_ATTACH1:
		return ev_attach(w, e - E_ATTACH0);
	case E_FENCE0:
	case E_FENCE1:
		return ev_fence(w, e - E_FENCE0);
	case E_INVALIDATE0:
	case E_INVALIDATE1:
		return ev_invalidate(w, e - E_INVALIDATE0);
	default:
		return false;
	}
}

/* What the application on Primary @x reads. */
static const struct set *visible(const struct world *w, int i)
{
	const struct node *x = &w->n[i];

	if (x->sm.disk == SM_DISK_UPTODATE)
		return &x->disk.data;
	return &w->n[1 - i].disk.data;
}

static void check_world(struct world *w)
{
	struct set all, lost;
	int i;

	for (i = 0; i < 2; i++) {
		const struct node *x = &w->n[i], *y = &w->n[1 - i];

		CHECK(sm_state_valid(&x->sm, NULL, 0), "invalid state");
		CHECK((x->sm.conn == SM_CONN_CONNECTED) ==
			      (y->sm.conn == SM_CONN_CONNECTED),
		      "the nodes disagree about the connection");
		if (x->sm.conn == SM_CONN_CONNECTED)
			CHECK(x->sm.peer_role == y->sm.role &&
				      x->sm.peer_disk == y->sm.disk,
			      "stale view of the peer");
		if (x->sm.role == SM_ROLE_PRIMARY && sm_data_access(&x->sm)) {
			lost = set_minus(&x->session, visible(w, i));
			CHECK(set_empty(&lost),
			      "Primary %c's application lost %llu of its own acknowledged writes",
			      'A' + i, (unsigned long long)set_count(&lost));
			CHECK(set_eq(&x->view, visible(w, i)),
			      "the data changed under Primary %c's application",
			      'A' + i);
		}
	}
	/* Without --force, fencing keeps a single Primary. */
	if (w->n[0].sm.fencing == CFG_FENCE_SUSPEND_IO && !w->forced)
		CHECK(!(w->n[0].sm.role == SM_ROLE_PRIMARY &&
			w->n[1].sm.role == SM_ROLE_PRIMARY),
		      "two Primaries despite suspend-io fencing");
	if (is_conn(w) && w->n[0].sm.disk == SM_DISK_UPTODATE &&
	    w->n[1].sm.disk == SM_DISK_UPTODATE) {
		CHECK(set_eq(&w->n[0].disk.data, &w->n[1].disk.data),
		      "connected UpToDate disks differ");
		CHECK(w->n[0].disk.md.current == w->n[1].disk.md.current,
		      "connected UpToDate disks have different current UUIDs");
	}
	all = w->n[0].disk.data;
	set_or(&all, &w->n[1].disk.data);
	lost = set_minus(&w->acked, &all);
	lost = set_minus(&lost, &w->lost_ok);
	CHECK(set_empty(&lost), "%llu acknowledged writes are on no disk",
	      (unsigned long long)set_count(&lost));
}

static bool step(struct world *w, enum ev e)
{
	cur_world = w;
	if (w->ntrace < MAXTRACE)
		w->trace[w->ntrace++] = (unsigned char)e;
	if (!apply(w, e))
		return false;
	check_world(w);
	return true;
}

/* ---- starting points -------------------------------------------------- */

static void init_node(struct node *x, enum cfg_fencing f)
{
	memset(x, 0, sizeof(*x));
	sm_init(&x->sm, f, CFG_IOERR_DETACH);
}

enum start {
	START_SYNCED, /* synced pair, both Secondary */
	START_FRESH, /* just created, connected, nothing synced */
	START_PRIMARY, /* synced pair, A Primary */
	START_DISKLESS, /* A a diskless Primary reading through B */
	START_COUNT
};

static void init_pair(struct world *w, enum cfg_fencing f, bool fresh);

static void init_start(struct world *w, enum cfg_fencing f, enum start k)
{
	init_pair(w, f, k == START_FRESH);
	if (k == START_PRIMARY || k == START_DISKLESS)
		assert_true(step(w, E_PROMOTE0));
	if (k == START_DISKLESS)
		assert_true(step(w, E_DETACH0));
	w->ntrace = 0;
	w->init = (f == CFG_FENCE_SUSPEND_IO) | k << 1;
}

/* A synced pair at generation 1, connected, both Secondary. */
static void init_pair(struct world *w, enum cfg_fencing f, bool fresh)
{
	struct sm_req r;
	int i;

	memset(w, 0, sizeof(*w));
	for (i = 0; i < 2; i++) {
		init_node(&w->n[i], f);
		if (!fresh) {
			w->n[i].disk.md.current = 1 << 8;
			w->n[i].disk.md.flags = MD_F_CONSISTENT |
						MD_F_WAS_UP_TO_DATE;
		}
		w->n[i].sm.disk = fresh ? SM_DISK_INCONSISTENT :
					  SM_DISK_UPTODATE;
		w->n[i].sm.conn = SM_CONN_CONNECTING;
	}
	w->next_uuid = 1;
	memset(&r, 0, sizeof(r));
	r.type = SM_EV_CONNECTED;
	r.peer_role = SM_ROLE_SECONDARY;
	r.peer_disk = w->n[0].sm.disk;
	r.verdict = fresh ? UUID_INITIAL : UUID_NO_SYNC;
	for (i = 0; i < 2; i++) {
		cur_world = w;
		CHECK(req(&w->n[i], &r) == 0, "initial handshake");
	}
}

/* ---- enumeration ------------------------------------------------------ */

static void print_rules(void)
{
	char buf[1024];
	size_t off = 0;
	int r;

	for (r = 0; r < (int)ARRAY_SIZE(rule_hits); r++)
		if (rule_hits[r] && off < sizeof(buf))
			off += (size_t)snprintf(
				buf + off, sizeof(buf) - off, " %d:%llu", r,
				(unsigned long long)rule_hits[r]);
	buf[sizeof(buf) - 1] = '\0';
	print_message("decision rules reached (rule:count):%s\n", buf);
	memset(rule_hits, 0, sizeof(rule_hits));
}

struct stats {
	uint64_t steps, seqs;
};

static void dfs(const struct world *w, int depth, struct stats *st)
{
	struct world kids[E_COUNT];
	int e, k, nk = 0;

	if (!depth) {
		st->seqs++;
		return;
	}
	for (e = 0; e < E_COUNT; e++) {
		struct world *c = &kids[nk];

		memcpy(c, w, sizeof(*c));
		if (!step(c, (enum ev)e))
			continue;
		st->steps++;
		/* Two events that lead to the same state lead to the same
		 * futures: explore one. */
		for (k = 0; k < nk; k++)
			if (!memcmp(&kids[k], c, STATE_BYTES))
				break;
		if (k < nk)
			continue;
		nk++;
		dfs(c, depth - 1, st);
	}
	if (!nk)
		st->seqs++;
}

static long env_num(const char *name, long dflt)
{
	const char *s = getenv(name);

	return s && *s ? strtol(s, NULL, 0) : dflt;
}

static void test_enumerate(void **state)
{
	static struct world w;
	struct stats st = { 0, 0 };
	int depth = (int)env_num("DUET_MODEL_DEPTH", 5);
	int k;

	(void)state;
	for (k = 0; k < START_COUNT; k++) {
		init_start(&w, CFG_FENCE_DONT_CARE, k);
		dfs(&w, depth, &st);
	}
	init_start(&w, CFG_FENCE_SUSPEND_IO, START_SYNCED);
	dfs(&w, depth, &st);
	print_message("depth %d: %llu sequences, %llu steps\n", depth,
		      (unsigned long long)st.seqs,
		      (unsigned long long)st.steps);
	print_rules();
	assert_true(st.seqs > 1000);
}

/* Operator overrides (they may discard data on purpose) are rarer than
 * ordinary events, so that most random sequences keep every write. */
static enum ev random_event(unsigned int *seed)
{
	enum ev e;

	for (;;) {
		e = (enum ev)(rand_r(seed) % E_COUNT);
		switch (e) {
		case E_FORCE0:
		case E_FORCE1:
		case E_INVALIDATE0:
		case E_INVALIDATE1:
		case E_DISCARD0:
		case E_DISCARD1:
			if (rand_r(seed) % 4)
				continue;
			return e;
		default:
			return e;
		}
	}
}

static void test_random(void **state)
{
	static struct world w;
	long runs = env_num("DUET_MODEL_RUNS", 10000);
	long len = env_num("DUET_MODEL_LEN", 60);
	unsigned int seed = (unsigned int)env_num("DUET_MODEL_SEED", 20240601);
	uint64_t steps = 0, sb = 0;
	long run, i;
	int tries;

	(void)state;
	if (len > MAXTRACE)
		len = MAXTRACE;
	for (run = 0; run < runs; run++) {
		init_start(&w,
			   rand_r(&seed) % 2 ? CFG_FENCE_SUSPEND_IO :
					       CFG_FENCE_DONT_CARE,
			   rand_r(&seed) % START_COUNT);
		for (i = 0; i < len; i++) {
			for (tries = 0; tries < 64; tries++) {
				struct world c = w;
				enum ev e = random_event(&seed);

				if (step(&c, e)) {
					w = c;
					steps++;
					break;
				}
			}
			if (tries == 64)
				break;
		}
		sb += !set_empty(&w.lost_ok);
	}
	print_message(
		"%ld random sequences, %llu steps, %llu where an operator or a policy discarded writes\n",
		runs, (unsigned long long)steps, (unsigned long long)sb);
	print_rules();
	assert_true(steps > (uint64_t)runs);
}

/* DUET_MODEL_REPLAY=<init>:<event>.<event>...: one sequence, verbosely. */
static void test_replay(void **state)
{
	static struct world w;
	const char *s = getenv("DUET_MODEL_REPLAY");
	char *end;
	long init, e;

	(void)state;
	init = strtol(s, &end, 10);
	init_start(&w, init & 1 ? CFG_FENCE_SUSPEND_IO : CFG_FENCE_DONT_CARE,
		   (enum start)((init >> 1) % START_COUNT));
	dump_nodes(&w);
	while (*end == ':' || *end == '.') {
		e = strtol(end + 1, &end, 10);
		assert_true(e >= 0 && e < E_COUNT);
		print_message("%s: %s\n", ev_names[e],
			      step(&w, (enum ev)e) ? "applied" : "skipped");
		dump_nodes(&w);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_enumerate),
		cmocka_unit_test(test_random),
	};
	const struct CMUnitTest replay[] = {
		cmocka_unit_test(test_replay),
	};

	if (getenv("DUET_MODEL_REPLAY"))
		return cmocka_run_group_tests(replay, NULL, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
