// SPDX-License-Identifier: MIT
/*
 * State machine: the whole state space times every request and event
 * (no transition leaves the valid states, refusals always say why,
 * requests never take data access away from a Primary), then one case
 * per rule of docs/states.md, and the names and change lists.
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

#define P SM_ROLE_PRIMARY
#define S SM_ROLE_SECONDARY
#define UNK SM_ROLE_UNKNOWN
#define DL SM_DISK_DISKLESS
#define ATT SM_DISK_ATTACHING
#define FAIL SM_DISK_FAILED
#define INC SM_DISK_INCONSISTENT
#define OUT SM_DISK_OUTDATED
#define DUNK SM_DISK_UNKNOWN
#define CONS SM_DISK_CONSISTENT
#define UTD SM_DISK_UPTODATE
#define SA SM_CONN_STANDALONE
#define CING SM_CONN_CONNECTING
#define CON SM_CONN_CONNECTED
#define DISC SM_CONN_DISCONNECTING
#define OFF SM_REPL_OFF
#define EST SM_REPL_ESTABLISHED
#define SRC SM_REPL_SYNC_SOURCE
#define TGT SM_REPL_SYNC_TARGET
#define PAUSED SM_REPL_PAUSED_SYNC
#define VSRC SM_REPL_VERIFY_SOURCE
#define VTGT SM_REPL_VERIFY_TARGET

static struct sm_state st(enum sm_role role, enum sm_disk disk,
			  enum sm_role prole, enum sm_disk pdisk,
			  enum sm_conn conn, enum sm_repl repl)
{
	struct sm_state s;
	char why[160];

	sm_init(&s, CFG_FENCE_DONT_CARE, CFG_IOERR_DETACH);
	s.role = role;
	s.disk = disk;
	s.peer_role = prole;
	s.peer_disk = pdisk;
	s.conn = conn;
	s.repl = repl;
	if (!sm_state_valid(&s, why, sizeof(why)))
		fail_msg("test state not valid: %s", why);
	return s;
}

static struct sm_state standalone(enum sm_role role, enum sm_disk disk)
{
	return st(role, disk, UNK, DUNK, SA, OFF);
}

static struct sm_state conn(enum sm_role role, enum sm_disk disk,
			    enum sm_role prole, enum sm_disk pdisk,
			    enum sm_repl repl)
{
	return st(role, disk, prole, pdisk, CON, repl);
}

static struct sm_req rq(enum sm_req_type t)
{
	struct sm_req r;

	memset(&r, 0, sizeof(r));
	r.type = t;
	return r;
}

static char why[512];

/* Run @r on @c; assert the return code; return the next state. */
static struct sm_state go(const struct sm_state *c, const struct sm_req *r,
			  int want)
{
	struct sm_state n;
	int ret;

	memset(&n, 0xa5, sizeof(n));
	ret = sm_request(c, r, &n, why, sizeof(why));
	if (ret != want)
		fail_msg("%s: got %d, want %d (%s)", sm_req_name(r->type), ret,
			 want, why);
	if (ret)
		assert_memory_equal(&n, c, sizeof(n));
	return n;
}

static struct sm_state go_t(const struct sm_state *c, enum sm_req_type t,
			    int want)
{
	struct sm_req r = rq(t);

	return go(c, &r, want);
}

static void assert_why(const char *needle)
{
	if (!strstr(why, needle))
		fail_msg("reason \"%s\" lacks \"%s\"", why, needle);
}

static bool is_admin(enum sm_req_type t)
{
	return t < SM_EV_ATTACHED;
}

/* ---- exhaustive ------------------------------------------------------- */

static size_t all_requests(struct sm_req *out)
{
	static const uint32_t mdf[] = {
		0,
		MD_F_CONSISTENT,
		MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE,
	};
	size_t n = 0;
	int t, b, v, pr, pd, f, pf, rp;

	for (t = 0; t < SM_REQ_COUNT; t++) {
		for (b = 0; b < 2; b++) {
			out[n] = rq(t);
			out[n].force = b;
			out[n].discard_my_data = b;
			out[n].graceful = b;
			n++;
		}
	}
	for (v = 0; v < UUID_VERDICT_COUNT; v++) {
		for (pr = S; pr <= P; pr++) {
			for (pd = 0; pd < SM_DISK_COUNT; pd++) {
				if (pd == DUNK)
					continue;
				out[n] = rq(SM_EV_CONNECTED);
				out[n].peer_role = pr;
				out[n].peer_disk = pd;
				out[n++].verdict = v;
			}
		}
		for (f = 0; f < 3; f++) {
			for (pf = 0; pf < 2; pf++) {
				out[n] = rq(SM_EV_ATTACHED);
				out[n].md_flags = mdf[f];
				out[n].md_peer_flags =
					pf ? MD_PF_USED | MD_PF_PEER_OUTDATED :
					     0;
				out[n++].verdict = v;
			}
		}
	}
	for (pr = S; pr <= P; pr++)
		for (pd = 0; pd < SM_DISK_COUNT; pd++)
			for (rp = EST; rp < SM_REPL_COUNT; rp++) {
				if (pd == DUNK)
					continue;
				out[n] = rq(SM_EV_PEER_STATE);
				out[n].peer_role = pr;
				out[n].peer_disk = pd;
				out[n++].peer_repl = rp;
			}
	return n;
}

static bool valid_errno(int e)
{
	return e == -EPERM || e == -EBUSY || e == -EAGAIN || e == -ENODATA ||
	       e == -ENODEV || e == -ENOTCONN || e == -EISCONN ||
	       e == -EINVAL || e == -EPROTO;
}

static void check_transition(const struct sm_state *c, const struct sm_req *r,
			     size_t *counts)
{
	struct sm_state n;
	char w[512], bad[160];
	int ret;

	w[0] = 'x';
	w[1] = '\0';
	ret = sm_request(c, r, &n, w, sizeof(w));
	if (ret) {
		counts[1]++;
		assert_true(valid_errno(ret));
		assert_true(strlen(w) > 8);
		assert_memory_equal(&n, c, sizeof(n));
		/* A request is either allowed or refused for a reason;
		 * only an event can be impossible. */
		if (is_admin(r->type))
			assert_int_not_equal(ret, -EPROTO);
		return;
	}
	counts[0]++;
	if (!sm_state_valid(&n, bad, sizeof(bad)))
		fail_msg("%s led to an invalid state: %s", sm_req_name(r->type),
			 bad);
	/* Set by the daemon only. */
	assert_int_equal(n.in_use, c->in_use);
	assert_int_equal(n.fencing, c->fencing);
	assert_int_equal(n.on_io_error, c->on_io_error);
	if (is_admin(r->type)) {
		/* Requests never cut a Primary off its data, here or on
		 * the peer... */
		if (n.role == P && !sm_data_access(&n))
			assert_true(c->role == P && !sm_data_access(c));
		if (c->peer_role == P && c->peer_disk != UTD &&
		    c->disk == UTD && c->conn == CON)
			assert_true(n.conn == CON && n.disk == UTD);
		/* ...and a no-op says so. */
		if (!memcmp(&n, c, sizeof(n)) && strlen(w) <= 8) {
			sm_state_str(c, bad, sizeof(bad));
			fail_msg("%s in %s: no change, no reason",
				 sm_req_name(r->type), bad);
		}
	} else {
		/* Events are facts about disks and peers, never roles. */
		assert_int_equal(n.role, c->role);
	}
	/* Only a Primary with fencing and a lost UpToDate peer suspends. */
	if (n.susp && !c->susp)
		assert_true(r->type == SM_EV_PEER_LOST &&
			    c->fencing == CFG_FENCE_SUSPEND_IO);
	/* An UpToDate disk only appears through a rule that proves it. */
	if (n.disk == UTD && c->disk != UTD)
		assert_true(r->type == SM_REQ_PRIMARY ||
			    r->type == SM_EV_ATTACHED ||
			    r->type == SM_EV_CONNECTED ||
			    r->type == SM_EV_PEER_STATE ||
			    r->type == SM_EV_SYNC_DONE ||
			    r->type == SM_EV_FENCE_OK);
}

/* State number @i of the whole product space, valid or not. */
#define NR_STATES                                                              \
	(2ul * SM_DISK_COUNT * SM_ROLE_COUNT * SM_DISK_COUNT * SM_CONN_COUNT * \
	 SM_REPL_COUNT * 64)

static void decode_state(unsigned long i, struct sm_state *s)
{
	unsigned long bits;

	memset(s, 0, sizeof(*s));
	s->role = i % 2 ? P : S;
	i /= 2;
	s->disk = i % SM_DISK_COUNT;
	i /= SM_DISK_COUNT;
	s->peer_role = i % SM_ROLE_COUNT;
	i /= SM_ROLE_COUNT;
	s->peer_disk = i % SM_DISK_COUNT;
	i /= SM_DISK_COUNT;
	s->conn = i % SM_CONN_COUNT;
	i /= SM_CONN_COUNT;
	s->repl = i % SM_REPL_COUNT;
	bits = i / SM_REPL_COUNT;
	s->susp = bits & 1;
	s->peer_outdated = bits & 2;
	s->discard_my_data = bits & 4;
	s->in_use = bits & 8;
	s->fencing = bits & 16 ? CFG_FENCE_SUSPEND_IO : CFG_FENCE_DONT_CARE;
	s->on_io_error = bits & 32 ? CFG_IOERR_PASS_ON : CFG_IOERR_DETACH;
}

static void test_exhaustive(void **state)
{
	static struct sm_req reqs[2048];
	size_t nreq = all_requests(reqs), i, nvalid = 0, counts[2] = { 0, 0 };
	struct sm_state s;
	unsigned long k;

	(void)state;
	assert_true(nreq < ARRAY_SIZE(reqs));
	for (k = 0; k < NR_STATES; k++) {
		decode_state(k, &s);
		if (!sm_state_valid(&s, NULL, 0))
			continue;
		nvalid++;
		for (i = 0; i < nreq; i++)
			check_transition(&s, &reqs[i], counts);
	}
	print_message(
		"%zu valid states x %zu requests: %zu allowed, %zu refused\n",
		nvalid, nreq, counts[0], counts[1]);
	/* Sanity: the sweep covered a real space, both outcomes. */
	assert_true(nvalid > 1000);
	assert_true(counts[0] > 100000 && counts[1] > 100000);
}

/* Every state reachable from `up` by requests and events is valid, and
 * the interesting ones are reachable at all. */
static void test_reachable(void **state)
{
	static struct sm_req reqs[2048];
	static struct sm_state seen[20000];
	size_t nreq = all_requests(reqs), nseen = 1, head = 0, i, j;
	bool paused = false, vtgt = false, susp = false, dlp = false;
	struct sm_state n;

	(void)state;
	sm_init(&seen[0], CFG_FENCE_SUSPEND_IO, CFG_IOERR_DETACH);
	while (head < nseen) {
		struct sm_state c = seen[head++];

		for (i = 0; i < nreq; i++) {
			if (sm_request(&c, &reqs[i], &n, NULL, 0))
				continue;
			assert_true(sm_state_valid(&n, NULL, 0));
			for (j = 0; j < nseen; j++)
				if (!memcmp(&seen[j], &n, sizeof(n)))
					break;
			if (j < nseen)
				continue;
			assert_true(nseen < ARRAY_SIZE(seen));
			seen[nseen++] = n;
			paused |= n.repl == PAUSED;
			vtgt |= n.repl == VTGT;
			susp |= n.susp;
			dlp |= n.role == P && n.disk == DL && n.conn == CON;
		}
	}
	print_message("%zu states reachable from `up`\n", nseen);
	assert_true(paused && vtgt && susp && dlp);
}

/* ---- one case per rule ------------------------------------------------ */

static void test_primary_rules(void **state)
{
	struct sm_state c, n;
	struct sm_req r = rq(SM_REQ_PRIMARY);

	(void)state;
	c = standalone(S, UTD);
	n = go(&c, &r, 0);
	assert_int_equal(n.role, P);

	c = standalone(S, OUT);
	go(&c, &r, -EPERM);
	assert_why(
		"the local disk is Outdated; use `duetctl primary --force` only if you know this node has the newest data");
	c.fencing = CFG_FENCE_SUSPEND_IO;
	go(&c, &r, -EPERM);
	/* UpToDate but disconnected, with fencing: fence first. */
	c = standalone(S, UTD);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	go(&c, &r, -EAGAIN);
	assert_why("fence-peer handler must outdate the peer first");
	c.peer_outdated = true;
	n = go(&c, &r, 0);
	assert_int_equal(n.role, P);
	c.peer_outdated = false;
	r.force = true;
	n = go(&c, &r, 0);
	assert_int_equal(n.role, P);
	r.force = false;
	c = standalone(S, INC);
	go(&c, &r, -EPERM);
	assert_why("Inconsistent");

	/* --force makes Inconsistent/Outdated/Consistent UpToDate. */
	r.force = true;
	c = standalone(S, OUT);
	n = go(&c, &r, 0);
	assert_true(n.role == P && n.disk == UTD);
	c = standalone(S, INC);
	n = go(&c, &r, 0);
	assert_true(n.role == P && n.disk == UTD);
	c = standalone(S, CONS);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	n = go(&c, &r, 0);
	assert_true(n.role == P && n.disk == UTD);
	r.force = false;

	/* Consistent: fencing first. */
	go(&c, &r, -EAGAIN);
	assert_why("fence-peer handler");
	c.peer_outdated = true;
	n = go(&c, &r, 0);
	assert_true(n.role == P && n.disk == UTD);
	c.peer_outdated = false;
	c.fencing = CFG_FENCE_DONT_CARE;
	n = go(&c, &r, 0);
	assert_int_equal(n.disk, UTD);

	/* Single primary. */
	c = conn(S, UTD, P, UTD, EST);
	go(&c, &r, -EBUSY);
	assert_why(
		"refusing: the peer is Primary (single-primary mode); demote it first");
	r.force = true;
	go(&c, &r, -EBUSY);
	r.force = false;

	/* Diskless: only through a connected UpToDate peer. */
	c = conn(S, DL, S, UTD, EST);
	n = go(&c, &r, 0);
	assert_true(n.role == P && n.disk == DL && sm_data_access(&n));
	c = standalone(S, DL);
	go(&c, &r, -ENODATA);
	r.force = true;
	go(&c, &r, -ENODATA);
	r.force = false;
	c = conn(S, DL, S, OUT, EST);
	go(&c, &r, -ENODATA);

	/* A resync target reads unsynced blocks from its source. */
	c = conn(S, INC, S, UTD, TGT);
	n = go(&c, &r, 0);
	assert_true(n.role == P && n.disk == INC && n.repl == TGT);

	/* Fresh pair: --force starts the initial sync. */
	c = conn(S, INC, S, INC, EST);
	go(&c, &r, -EPERM);
	r.force = true;
	n = go(&c, &r, 0);
	assert_true(n.disk == UTD && n.repl == SRC && n.peer_disk == INC);
	r.force = false;

	c = standalone(S, ATT);
	go(&c, &r, -EAGAIN);
	c = st(S, UTD, UNK, DUNK, DISC, OFF);
	go(&c, &r, -EAGAIN);
	c = standalone(P, UTD);
	n = go(&c, &r, 0);
	assert_memory_equal(&n, &c, sizeof(n));
	assert_why("already Primary");
}

static void test_secondary_and_down(void **state)
{
	struct sm_state c, n;

	(void)state;
	c = standalone(P, UTD);
	c.in_use = true;
	go_t(&c, SM_REQ_SECONDARY, -EBUSY);
	assert_why("refusing to become secondary while the device is in use");
	go_t(&c, SM_REQ_DOWN, -EBUSY);
	c.in_use = false;
	c.susp = true;
	n = go_t(&c, SM_REQ_SECONDARY, 0);
	assert_true(n.role == S && !n.susp);

	c = conn(P, UTD, S, UTD, EST);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	n = go_t(&c, SM_REQ_DOWN, 0);
	assert_true(n.role == S && n.disk == DL && n.conn == SA &&
		    n.repl == OFF && n.fencing == CFG_FENCE_SUSPEND_IO);
}

static void test_connect_disconnect(void **state)
{
	struct sm_state c, n;
	struct sm_req r = rq(SM_REQ_CONNECT);

	(void)state;
	c = standalone(S, UTD);
	r.discard_my_data = true;
	n = go(&c, &r, 0);
	assert_true(n.conn == CING && n.discard_my_data);
	n = go_t(&n, SM_REQ_DISCONNECT, 0);
	assert_true(n.conn == SA && !n.discard_my_data);
	c = standalone(P, UTD);
	go(&c, &r, -EPERM);
	c = conn(S, UTD, S, UTD, EST);
	go(&c, &r, -EISCONN);
	r.discard_my_data = false;
	go(&c, &r, 0);
	assert_why("already connected");
	c = st(S, UTD, UNK, DUNK, DISC, OFF);
	go(&c, &r, -EAGAIN);

	/* A Primary leaving on purpose: the peer outdates itself. */
	c = conn(P, UTD, S, UTD, EST);
	n = go_t(&c, SM_REQ_DISCONNECT, 0);
	assert_true(n.conn == DISC && n.peer_outdated && n.peer_role == UNK &&
		    n.repl == OFF);
	n = go_t(&n, SM_EV_PEER_LOST, 0);
	assert_int_equal(n.conn, SA);
	/* A Secondary leaving a Primary falls behind: Outdated. */
	c = conn(S, UTD, P, UTD, EST);
	n = go_t(&c, SM_REQ_DISCONNECT, 0);
	assert_int_equal(n.disk, OUT);
	/* A diskless Primary would lose its data. */
	c = conn(P, DL, S, UTD, EST);
	go_t(&c, SM_REQ_DISCONNECT, -ENODATA);
	c = conn(P, INC, S, UTD, TGT);
	go_t(&c, SM_REQ_DISCONNECT, -ENODATA);
	c = standalone(S, UTD);
	go_t(&c, SM_REQ_DISCONNECT, 0);
	assert_why("already StandAlone");
}

static void test_peer_lost_and_fencing(void **state)
{
	struct sm_state c, n;
	struct sm_req r = rq(SM_EV_PEER_LOST);

	(void)state;
	c = conn(P, UTD, S, UTD, EST);
	n = go(&c, &r, 0);
	assert_true(n.conn == CING && !n.susp && n.disk == UTD);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	n = go(&c, &r, 0);
	assert_true(n.conn == CING && n.susp);
	assert_why("suspended");
	/* Fence handler fails: still suspended, and it says how out. */
	c = go_t(&n, SM_EV_FENCE_FAILED, 0);
	assert_true(c.susp);
	assert_why("resume-io");
	n = go_t(&c, SM_EV_FENCE_OK, 0);
	assert_true(!n.susp && n.peer_outdated);
	/* ...or the peer returns. */
	r = rq(SM_EV_CONNECTED);
	r.peer_role = S;
	r.peer_disk = UTD;
	r.verdict = UUID_NO_SYNC;
	n = go(&c, &r, 0);
	assert_true(!n.susp && n.conn == CON && n.peer_disk == UTD);
	/* ...or the admin takes the risk. */
	n = go_t(&c, SM_REQ_RESUME_IO, 0);
	assert_true(!n.susp);
	assert_why("split brain");
	go_t(&n, SM_REQ_RESUME_IO, 0);
	assert_why("not suspended");

	/* A peer that was only a resync target cannot be promoted: no
	 * need to suspend. */
	c = conn(P, UTD, S, INC, SRC);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	n = go_t(&c, SM_EV_PEER_LOST, 0);
	assert_false(n.susp);

	/* Secondary under suspend-io: may be behind now. */
	c = conn(S, UTD, P, UTD, EST);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	n = go_t(&c, SM_EV_PEER_LOST, 0);
	assert_int_equal(n.disk, CONS);
	n = go_t(&n, SM_EV_FENCE_OK, 0);
	assert_true(n.disk == UTD && n.peer_outdated);
	c.fencing = CFG_FENCE_DONT_CARE;
	n = go_t(&c, SM_EV_PEER_LOST, 0);
	assert_int_equal(n.disk, UTD);

	/* Graceful: the mirror of do_disconnect on the other side. */
	r = rq(SM_EV_PEER_LOST);
	r.graceful = true;
	c.fencing = CFG_FENCE_SUSPEND_IO;
	n = go(&c, &r, 0);
	assert_int_equal(n.disk, OUT);
	c = conn(P, UTD, S, UTD, EST);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	n = go(&c, &r, 0);
	assert_true(n.peer_outdated && !n.susp);

	/* A sync target that loses its source stays Inconsistent. */
	c = conn(S, INC, S, UTD, TGT);
	n = go_t(&c, SM_EV_PEER_LOST, 0);
	assert_true(n.disk == INC && n.repl == OFF);

	c = standalone(S, UTD);
	go_t(&c, SM_EV_FENCE_OK, 0);
	c = conn(S, UTD, S, UTD, EST);
	n = go_t(&c, SM_EV_FENCE_OK, 0);
	assert_memory_equal(&n, &c, sizeof(n));
	assert_why("connected again");
}

static struct sm_req handshake_ev(enum sm_role pr, enum sm_disk pd,
				  enum uuid_verdict v)
{
	struct sm_req r = rq(SM_EV_CONNECTED);

	r.peer_role = pr;
	r.peer_disk = pd;
	r.verdict = v;
	return r;
}

static void test_handshake(void **state)
{
	struct sm_state c = st(S, OUT, UNK, DUNK, CING, OFF), n;
	struct sm_req r;

	(void)state;
	r = handshake_ev(S, UTD, UUID_NO_SYNC);
	n = go(&c, &r, 0);
	assert_true(n.conn == CON && n.repl == EST && n.disk == UTD &&
		    n.peer_disk == UTD);

	c.discard_my_data = true;
	r = handshake_ev(S, UTD, UUID_SPLIT_BRAIN);
	n = go(&c, &r, 0);
	assert_true(n.conn == SA && n.peer_role == UNK && !n.discard_my_data);
	assert_why("--discard-my-data");
	c.discard_my_data = false;
	r = handshake_ev(S, UTD, UUID_UNRELATED);
	n = go(&c, &r, 0);
	assert_int_equal(n.conn, SA);

	/* Sync target / source. */
	c = st(S, UTD, UNK, DUNK, CING, OFF);
	r = handshake_ev(S, OUT, UUID_TARGET_BITMAP);
	n = go(&c, &r, 0);
	assert_true(n.disk == INC && n.repl == TGT && n.peer_disk == UTD);
	n = go_t(&n, SM_EV_SYNC_DONE, 0);
	assert_true(n.disk == UTD && n.repl == EST);
	r = handshake_ev(S, UTD, UUID_SOURCE_FULL);
	c.disk = OUT; /* the UUIDs proved it newest */
	n = go(&c, &r, 0);
	assert_true(n.disk == UTD && n.repl == SRC && n.peer_disk == INC);
	n = go_t(&n, SM_EV_SYNC_DONE, 0);
	assert_true(n.peer_disk == UTD && n.repl == EST);

	/* "I shall become SyncTarget, but I am primary". */
	c = st(P, UTD, UNK, DUNK, CING, OFF);
	r = handshake_ev(S, UTD, UUID_TARGET_BITMAP);
	n = go(&c, &r, 0);
	assert_true(n.conn == SA && n.role == P && n.disk == UTD);
	assert_why("Primary but the peer has newer data");
	/* ...mirrored on the peer. */
	c = st(S, UTD, UNK, DUNK, CING, OFF);
	r = handshake_ev(P, UTD, UUID_SOURCE_BITMAP);
	n = go(&c, &r, 0);
	assert_int_equal(n.conn, SA);
	/* A Primary sync target that lost its source may resume. */
	c = st(P, INC, UNK, DUNK, CING, OFF);
	r = handshake_ev(S, UTD, UUID_TARGET_BITMAP);
	n = go(&c, &r, 0);
	assert_true(n.conn == CON && n.repl == TGT && sm_data_access(&n));

	c = st(P, UTD, UNK, DUNK, CING, OFF);
	r = handshake_ev(P, UTD, UUID_NO_SYNC);
	n = go(&c, &r, 0);
	assert_int_equal(n.conn, SA);
	assert_why("both nodes are Primary");

	/* Verdicts that contradict the disks are protocol errors. */
	c = st(S, INC, UNK, DUNK, CING, OFF);
	r = handshake_ev(S, UTD, UUID_SOURCE_BITMAP);
	go(&c, &r, -EPROTO);
	r = handshake_ev(S, UTD, UUID_NO_SYNC);
	go(&c, &r, -EPROTO);
	c = standalone(S, UTD);
	go(&c, &r, -EPROTO);

	/* Diskless peer: Consistent is settled, Outdated stays. */
	c = st(S, CONS, UNK, DUNK, CING, OFF);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	r = handshake_ev(P, DL, UUID_NO_SYNC);
	n = go(&c, &r, 0);
	assert_true(n.disk == UTD && n.peer_role == P);
	c.disk = OUT;
	n = go(&c, &r, 0);
	assert_int_equal(n.disk, OUT);
	/* Fresh pair: connected, both Inconsistent, waiting. */
	c = st(S, INC, UNK, DUNK, CING, OFF);
	r = handshake_ev(S, INC, UUID_INITIAL);
	n = go(&c, &r, 0);
	assert_true(n.conn == CON && n.repl == EST && n.disk == INC);
}

static void test_invalidate_verify_pause(void **state)
{
	struct sm_state c, n;
	struct sm_req r;

	(void)state;
	c = conn(P, UTD, S, UTD, EST);
	go_t(&c, SM_REQ_INVALIDATE, -EPERM);
	assert_why("Primary");
	c = conn(S, UTD, P, UTD, EST);
	n = go_t(&c, SM_REQ_INVALIDATE, 0);
	assert_true(n.disk == INC && n.repl == TGT);
	go_t(&n, SM_REQ_INVALIDATE, -EBUSY);
	c = standalone(S, UTD);
	n = go_t(&c, SM_REQ_INVALIDATE, 0);
	assert_true(n.disk == INC && n.repl == OFF);
	n = go_t(&n, SM_REQ_INVALIDATE, 0);
	assert_why("already Inconsistent");
	c = conn(S, UTD, S, DL, EST);
	go_t(&c, SM_REQ_INVALIDATE, -ENODATA);
	c = standalone(S, DL);
	go_t(&c, SM_REQ_INVALIDATE, -ENODEV);

	c = standalone(S, UTD);
	go_t(&c, SM_REQ_INVALIDATE_REMOTE, -ENOTCONN);
	c = conn(S, UTD, P, UTD, EST);
	go_t(&c, SM_REQ_INVALIDATE_REMOTE, -EPERM);
	assert_why("Primary peer");
	c = conn(P, UTD, S, UTD, EST);
	n = go_t(&c, SM_REQ_INVALIDATE_REMOTE, 0);
	assert_true(n.repl == SRC && n.peer_disk == INC);
	/* ...seen from the peer. */
	c = conn(S, UTD, P, UTD, EST);
	r = rq(SM_EV_PEER_STATE);
	r.peer_role = P;
	r.peer_disk = UTD;
	r.peer_repl = SRC;
	n = go(&c, &r, 0);
	assert_true(n.repl == TGT && n.disk == INC);
	/* A Primary's data is never overwritten from the peer. */
	c = conn(P, UTD, S, UTD, EST);
	r.peer_role = S;
	go(&c, &r, -EPROTO);

	/* pause/resume keep the direction. */
	c = conn(S, INC, P, UTD, TGT);
	n = go_t(&c, SM_REQ_PAUSE_SYNC, 0);
	assert_int_equal(n.repl, PAUSED);
	go_t(&n, SM_REQ_PAUSE_SYNC, 0);
	assert_why("paused");
	n = go_t(&n, SM_REQ_RESUME_SYNC, 0);
	assert_int_equal(n.repl, TGT);
	c = conn(P, UTD, S, INC, SRC);
	n = go_t(&c, SM_REQ_PAUSE_SYNC, 0);
	n = go_t(&n, SM_REQ_RESUME_SYNC, 0);
	assert_int_equal(n.repl, SRC);
	c = conn(P, UTD, S, UTD, EST);
	go_t(&c, SM_REQ_PAUSE_SYNC, -EINVAL);
	go_t(&c, SM_REQ_RESUME_SYNC, -EINVAL);
	go_t(&c, SM_EV_SYNC_DONE, -EPROTO);

	/* verify */
	n = go_t(&c, SM_REQ_VERIFY, 0);
	assert_int_equal(n.repl, VSRC);
	go_t(&n, SM_REQ_VERIFY, -EBUSY);
	n = go_t(&n, SM_EV_VERIFY_DONE, 0);
	assert_int_equal(n.repl, EST);
	c = conn(S, UTD, P, UTD, EST);
	r.peer_role = P;
	r.peer_repl = VSRC;
	n = go(&c, &r, 0);
	assert_int_equal(n.repl, VTGT);
	c = conn(S, UTD, P, DL, EST);
	go_t(&c, SM_REQ_VERIFY, -ENODATA);
	c = standalone(S, UTD);
	go_t(&c, SM_REQ_VERIFY, -ENOTCONN);
}

static void test_outdate(void **state)
{
	struct sm_state c, n;

	(void)state;
	c = standalone(S, UTD);
	n = go_t(&c, SM_REQ_OUTDATE, 0);
	assert_int_equal(n.disk, OUT);
	go_t(&n, SM_REQ_OUTDATE, 0);
	assert_why("already Outdated");
	c = standalone(P, UTD);
	go_t(&c, SM_REQ_OUTDATE, -EPERM);
	c = conn(S, UTD, P, UTD, EST);
	go_t(&c, SM_REQ_OUTDATE, -EISCONN);
	c = standalone(S, DL);
	go_t(&c, SM_REQ_OUTDATE, -ENODEV);
	c = st(S, CONS, UNK, DUNK, CING, OFF);
	n = go_t(&c, SM_REQ_OUTDATE, 0);
	assert_int_equal(n.disk, OUT);
}

static void test_attach_detach_ioerror(void **state)
{
	struct sm_state c, n;
	struct sm_req r = rq(SM_EV_ATTACHED);

	(void)state;
	c = standalone(S, DL);
	c.fencing = CFG_FENCE_SUSPEND_IO;
	n = go_t(&c, SM_REQ_ATTACH, 0);
	assert_int_equal(n.disk, ATT);
	go_t(&n, SM_REQ_ATTACH, 0);
	r.md_flags = MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE;
	c = go(&n, &r, 0);
	assert_int_equal(c.disk, CONS);
	r.md_peer_flags = MD_PF_USED | MD_PF_PEER_OUTDATED;
	c = go(&n, &r, 0);
	assert_true(c.disk == UTD && c.peer_outdated);
	go_t(&c, SM_REQ_ATTACH, -EBUSY);
	go(&c, &r, -EPROTO);

	/* Attach while connected: a handshake for the disk. */
	c = conn(S, DL, P, UTD, EST);
	n = go_t(&c, SM_REQ_ATTACH, 0);
	r = rq(SM_EV_ATTACHED);
	r.md_flags = MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE;
	r.verdict = UUID_TARGET_BITMAP;
	c = go(&n, &r, 0);
	assert_true(c.disk == INC && c.repl == TGT);
	r.verdict = UUID_SPLIT_BRAIN;
	c = go(&n, &r, 0);
	assert_true(c.disk == DL && c.conn == CON);
	assert_why("refused");

	/* A diskless Primary gets its disk back as a sync target. */
	c = conn(P, DL, S, UTD, EST);
	n = go_t(&c, SM_REQ_ATTACH, 0);
	r.verdict = UUID_TARGET_BITMAP;
	c = go(&n, &r, 0);
	assert_true(c.role == P && c.disk == INC && c.repl == TGT);
	r.verdict = UUID_SOURCE_BITMAP;
	c = go(&n, &r, 0);
	assert_int_equal(c.disk, DL);
	c = standalone(P, DL);
	go_t(&c, SM_REQ_ATTACH, -ENODATA);

	/* detach */
	c = standalone(P, UTD);
	go_t(&c, SM_REQ_DETACH, -ENODATA);
	assert_why("demote first");
	c = conn(P, UTD, S, UTD, EST);
	n = go_t(&c, SM_REQ_DETACH, 0);
	assert_int_equal(n.disk, FAIL);
	n = go_t(&n, SM_EV_DETACHED, 0);
	assert_true(n.disk == DL && sm_data_access(&n));
	c = conn(S, UTD, P, INC, SRC);
	go_t(&c, SM_REQ_DETACH, -EBUSY);
	c = conn(S, UTD, S, INC, SRC);
	n = go_t(&c, SM_REQ_DETACH, 0);
	assert_true(n.disk == FAIL && n.repl == EST);
	go_t(&n, SM_REQ_DETACH, 0);
	c = standalone(S, DL);
	go_t(&c, SM_EV_DETACHED, -EPROTO);
	/* ...nor from under a diskless Primary peer. */
	c = conn(S, UTD, P, DL, EST);
	go_t(&c, SM_REQ_DETACH, -EBUSY);
	assert_why("the peer is Primary without an UpToDate disk");
	go_t(&c, SM_REQ_DISCONNECT, -EBUSY);
	go_t(&c, SM_REQ_DOWN, -EBUSY);

	/* on-io-error */
	c = standalone(P, UTD);
	n = go_t(&c, SM_EV_IO_ERROR, 0);
	assert_int_equal(n.disk, FAIL);
	assert_why("no access");
	n = go_t(&n, SM_EV_DETACHED, 0);
	assert_true(n.disk == DL && n.role == P && !sm_data_access(&n));
	c.on_io_error = CFG_IOERR_PASS_ON;
	n = go_t(&c, SM_EV_IO_ERROR, 0);
	assert_memory_equal(&n, &c, sizeof(n));
	assert_why("passed to the application");
	c = standalone(S, DL);
	go_t(&c, SM_EV_IO_ERROR, -EPROTO);
}

static void test_md_flags(void **state)
{
	const uint32_t ok = MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE;

	(void)state;
	assert_int_equal(sm_disk_from_md(0, 0, CFG_FENCE_DONT_CARE), INC);
	assert_int_equal(
		sm_disk_from_md(MD_F_CONSISTENT, 0, CFG_FENCE_DONT_CARE), OUT);
	assert_int_equal(sm_disk_from_md(ok, 0, CFG_FENCE_DONT_CARE), UTD);
	assert_int_equal(sm_disk_from_md(ok, 0, CFG_FENCE_SUSPEND_IO), CONS);
	assert_int_equal(sm_disk_from_md(ok, MD_PF_PEER_OUTDATED,
					 CFG_FENCE_SUSPEND_IO),
			 UTD);
	/* Round trip for every disk state that describes data. */
	assert_int_equal(sm_disk_md_flags(UTD, MD_F_PRIMARY),
			 ok | MD_F_PRIMARY);
	assert_int_equal(sm_disk_md_flags(OUT, ok), MD_F_CONSISTENT);
	assert_int_equal(sm_disk_md_flags(INC, ok | MD_F_AL_CLEAN),
			 MD_F_AL_CLEAN);
	assert_int_equal(sm_disk_md_flags(FAIL, ok), ok);
	assert_int_equal(sm_disk_from_md(sm_disk_md_flags(CONS, 0), 0,
					 CFG_FENCE_SUSPEND_IO),
			 CONS);
}

static void test_invariants(void **state)
{
	struct sm_state s = standalone(P, UTD);
	char w[160];

	(void)state;
	s.peer_role = P;
	assert_false(sm_state_valid(&s, w, sizeof(w)));
	s = conn(P, UTD, S, UTD, EST);
	s.peer_role = P;
	assert_false(sm_state_valid(&s, w, sizeof(w)));
	assert_non_null(strstr(w, "two Primaries"));
	s = conn(S, UTD, S, UTD, EST);
	s.repl = TGT;
	assert_false(sm_state_valid(&s, w, sizeof(w)));
	assert_non_null(strstr(w, "SyncTarget"));
	s = standalone(P, UTD);
	s.disk = OUT;
	assert_false(sm_state_valid(&s, w, sizeof(w)));
	s = conn(S, UTD, S, UTD, EST);
	s.susp = true;
	assert_false(sm_state_valid(&s, w, sizeof(w)));
	s = conn(S, UTD, S, UTD, EST);
	s.peer_disk = INC;
	assert_false(sm_state_valid(&s, NULL, 0));
	s = standalone(S, UTD);
	s.repl = EST;
	assert_false(sm_state_valid(&s, NULL, 0));
	s = standalone(S, UTD);
	s.disk = DUNK;
	assert_false(sm_state_valid(&s, NULL, 0));
	/* sm_request refuses to start from an invalid state. */
	s.disk = UTD;
	s.peer_disk = UTD;
	assert_int_equal(go_t(&s, SM_REQ_PRIMARY, -EINVAL).role, S);
}

static void test_names_and_diff(void **state)
{
	struct sm_state a = standalone(S, OUT), b = a;
	struct sm_change ch[2];
	char buf[256];
	int i;

	(void)state;
	for (i = 0; i < SM_REQ_COUNT; i++)
		assert_string_not_equal(sm_req_name(i), "?");
	for (i = 0; i < SM_DISK_COUNT; i++)
		assert_string_not_equal(sm_disk_name(i), "?");
	for (i = 0; i < SM_REPL_COUNT; i++)
		assert_string_not_equal(sm_repl_name(i), "?");
	for (i = 0; i < SM_CONN_COUNT; i++)
		assert_string_not_equal(sm_conn_name(i), "?");
	assert_string_equal(sm_role_name(SM_ROLE_COUNT), "?");
	assert_string_equal(sm_disk_name(UTD), "UpToDate");
	assert_string_equal(sm_repl_name(PAUSED), "PausedSync");

	assert_string_equal(sm_diff_str(&a, &b, buf, sizeof(buf)), "");
	assert_int_equal(sm_changes(&a, &b, ch, 2), 0);
	b.role = P;
	b.disk = UTD;
	assert_string_equal(
		sm_diff_str(&a, &b, buf, sizeof(buf)),
		"role: Secondary -> Primary, disk: Outdated -> UpToDate");
	b.susp = true;
	b.conn = CING;
	assert_int_equal(sm_changes(&a, &b, ch, 2), 4);
	assert_string_equal(ch[1].field, "disk");
	sm_diff_str(&a, &b, buf, 20);
	assert_int_equal(strlen(buf), 19);
	sm_state_str(&b, buf, sizeof(buf));
	assert_string_equal(
		buf,
		"Primary/Unknown UpToDate/DUnknown Connecting Off suspended");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exhaustive),
		cmocka_unit_test(test_reachable),
		cmocka_unit_test(test_primary_rules),
		cmocka_unit_test(test_secondary_and_down),
		cmocka_unit_test(test_connect_disconnect),
		cmocka_unit_test(test_peer_lost_and_fencing),
		cmocka_unit_test(test_handshake),
		cmocka_unit_test(test_invalidate_verify_pause),
		cmocka_unit_test(test_outdate),
		cmocka_unit_test(test_attach_detach_ioerror),
		cmocka_unit_test(test_md_flags),
		cmocka_unit_test(test_invariants),
		cmocka_unit_test(test_names_and_diff),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
