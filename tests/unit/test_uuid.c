// SPDX-License-Identifier: MIT
/*
 * Generation UUIDs: every rule of the decision table (both ways round:
 * the peer must reach the mirrored verdict with the same rule), the
 * split-brain policies, the lifecycle helpers, and DRBD's known
 * "silent data divergence" cases replayed through the helpers.
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

#include "uuid.h"

#define U1 0x1111111111111110ull
#define U2 0x2222222222222220ull
#define U3 0x3333333333333330ull
#define U4 0x4444444444444440ull
#define U5 0x5555555555555550ull
#define OK_FLAGS (MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE)

static struct uuid_info node(uint32_t id, uint64_t cur)
{
	struct uuid_info u;

	memset(&u, 0, sizeof(u));
	u.node_id = id;
	u.current = cur;
	u.flags = cur ? OK_FLAGS : 0;
	return u;
}

/* Decide both ways; the peer must see the mirror image, same rule. */
static struct uuid_decision check(const struct uuid_info *me,
				  const struct uuid_info *peer,
				  enum uuid_verdict want, int rule)
{
	struct uuid_decision a, b;

	uuid_decide(me, peer, &a);
	uuid_decide(peer, me, &b);
	if (a.verdict != want || a.rule != rule)
		fail_msg("got %s rule %d (%s), want %s rule %d",
			 uuid_verdict_name(a.verdict), a.rule, a.why,
			 uuid_verdict_name(want), rule);
	if (b.verdict != uuid_mirror(want) || b.rule != rule)
		fail_msg("peer side got %s rule %d, want %s rule %d",
			 uuid_verdict_name(b.verdict), b.rule,
			 uuid_verdict_name(uuid_mirror(want)), rule);
	assert_true(strlen(a.why) > 10);
	assert_true(strlen(b.why) > 10);
	return a;
}

static void test_node_ids_and_diskless(void **state)
{
	struct uuid_info a = node(1, U1), b = node(1, U1);

	(void)state;
	check(&a, &b, UUID_UNRELATED, 1);
	b.node_id = 2;

	a.diskless = b.diskless = true;
	check(&a, &b, UUID_NO_SYNC, 2);

	/* Diskless Primary that used generation U1 meets a disk at U2. */
	a.primary = true;
	b = node(2, U2);
	check(&a, &b, UUID_DISKLESS_MISMATCH, 3);
	/* ... at U1: fine. */
	b.current = U1;
	check(&a, &b, UUID_NO_SYNC, 4);
	/* A diskless Secondary has no application to protect. */
	a.primary = false;
	b.current = U2;
	check(&a, &b, UUID_NO_SYNC, 4);
	/* Nor does a Primary that has not used any data yet. */
	a.primary = true;
	a.current = 0;
	check(&a, &b, UUID_NO_SYNC, 4);
}

static void test_fresh_and_inconsistent(void **state)
{
	struct uuid_info a = node(1, 0), b = node(2, 0);

	(void)state;
	check(&a, &b, UUID_INITIAL, 10);

	/* One side got its first generation (primary --force). */
	uuid_force_primary(&a, U1);
	check(&a, &b, UUID_SOURCE_FULL, 21);

	/* Both non-fresh, neither consistent. */
	b.current = U2;
	uuid_invalidate(&a);
	check(&a, &b, UUID_NO_GOOD_DATA, 15);

	/* A consistent disk just created is still a full-sync target. */
	a = node(1, U1);
	b = node(2, 0);
	b.flags = OK_FLAGS;
	check(&a, &b, UUID_SOURCE_FULL, 30);
}

static void test_interrupted_resync(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);

	(void)state;
	/* a wrote alone, then a bitmap resync to b stopped half-way. */
	uuid_new_current(&a, U2);
	a.dirty_bits = 10;
	uuid_sync_begin(&b, true, false);
	b.dirty_bits = 4;
	check(&a, &b, UUID_SOURCE_BITMAP, 20);
	/* ... and a wrote more meanwhile, in another writer period. */
	uuid_new_current(&a, U3);
	check(&a, &b, UUID_SOURCE_BITMAP, 20);

	/* A full resync that stopped starts over in full. */
	b = node(2, U1);
	uuid_sync_begin(&b, true, true);
	check(&a, &b, UUID_SOURCE_FULL, 21);

	/* invalidate: full, whatever the UUIDs. */
	b = node(2, U1);
	uuid_invalidate(&b);
	check(&a, &b, UUID_SOURCE_FULL, 21);

	/* Invalidated, then forced (the admin declared garbage the newest
	 * data): it must not pass for the peer's generation. */
	b = node(2, U2);
	b.dirty_bits = 0;
	uuid_invalidate(&b);
	uuid_force_primary(&b, U4);
	a = node(1, U2);
	a.flags |= MD_F_CRASHED_PRIMARY;
	check(&a, &b, UUID_UNRELATED, 90);
	a = node(1, U3);
	a.bitmap = U1;

	/* Inconsistent and from another device: do not touch it. */
	b = node(2, U5);
	uuid_sync_begin(&b, true, false);
	check(&a, &b, UUID_UNRELATED, 22);
}

static void test_equal_current(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);

	(void)state;
	check(&a, &b, UUID_NO_SYNC, 40);
	/* A stale bitmap UUID alone does not make blocks differ. */
	a.bitmap = U4;
	check(&a, &b, UUID_NO_SYNC, 40);

	b.dirty_bits = 1;
	check(&a, &b, UUID_TARGET_BITMAP, 43);
	a.primary = true;
	check(&a, &b, UUID_SOURCE_BITMAP, 41);
	a.primary = false;
	a.flags |= MD_F_CRASHED_PRIMARY;
	check(&a, &b, UUID_SOURCE_BITMAP, 42);
	b.flags |= MD_F_CRASHED_PRIMARY;
	b.dirty_bits = 0;
	a.dirty_bits = 0;
	check(&a, &b, UUID_SOURCE_BITMAP, 44); /* lower node id */
	b.flags |= MD_F_FULL_SYNC;
	check(&a, &b, UUID_SOURCE_FULL, 44);
}

static void test_bitmap_and_history(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);

	(void)state;
	uuid_new_current(&a, U2);
	check(&a, &b, UUID_SOURCE_BITMAP, 50);
	b.flags |= MD_F_FULL_SYNC;
	check(&a, &b, UUID_SOURCE_FULL, 50);
	b.flags &= ~MD_F_FULL_SYNC;

	/* The peer's generation is only in our history. */
	a = node(1, U3);
	a.history[2] = U1;
	check(&a, &b, UUID_SOURCE_FULL, 60);

	/* Contradictions are not guessed at. */
	a = node(1, U1);
	b = node(2, U2);
	a.bitmap = U2;
	b.bitmap = U1;
	check(&a, &b, UUID_SPLIT_BRAIN, 59);
	a.bitmap = b.bitmap = 0;
	a.history[0] = U2;
	b.history[3] = U1;
	check(&a, &b, UUID_SPLIT_BRAIN, 69);
}

static void test_split_brain_and_unrelated(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);
	struct uuid_decision d;

	(void)state;
	uuid_new_current(&a, U2);
	uuid_new_current(&b, U3);
	d = check(&a, &b, UUID_SPLIT_BRAIN, 70);
	assert_true(d.bitmaps_comparable);

	/* Only an older generation in common: not comparable. */
	a = node(1, U2);
	b = node(2, U3);
	a.history[1] = U1;
	b.bitmap = U1;
	d = check(&a, &b, UUID_SPLIT_BRAIN, 80);
	assert_false(d.bitmaps_comparable);

	a = node(1, U2);
	b = node(2, U3);
	check(&a, &b, UUID_UNRELATED, 90);
}

/* DRBD fix 1: a diskless Primary's writes started a generation that its
 * own (detached) disk and the diskless node itself never learned of. */
static void test_drbd_diskless_primary(void **state)
{
	struct uuid_info disk_a = node(1, U1), b = node(2, U1), dl_a;

	(void)state;
	/* a's disk failed; a stays Primary, diskless, reading b's data U1. */
	dl_a = node(1, U1);
	dl_a.diskless = true;
	dl_a.primary = true;
	check(&dl_a, &b, UUID_NO_SYNC, 4);
	/*
	 * a writes: b applies a block a's disk never gets, so b (which has
	 * the disk and the metadata) starts the generation itself and
	 * persists it before applying the write. The connection drops
	 * before a hears of U2.
	 */
	uuid_new_current(&b, U2);
	b.dirty_bits = 1;
	/* a's old disk comes back: it is behind, b's bitmap covers it. */
	check(&disk_a, &b, UUID_TARGET_BITMAP, 50);
	/* a, still diskless, returns: refused rather than silently
	 * swapping data under its application. */
	check(&dl_a, &b, UUID_DISKLESS_MISMATCH, 3);
	/* b was promoted meanwhile and wrote in a new writer period. */
	uuid_new_current(&b, U3);
	dl_a.current = U2;
	check(&dl_a, &b, UUID_DISKLESS_MISMATCH, 3);
	check(&disk_a, &b, UUID_TARGET_BITMAP, 50);
}

/* DRBD fix 2: same current UUID, out-of-sync bits left on one side. */
static void test_drbd_equal_with_bits(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);

	(void)state;
	a.dirty_bits = 7;
	check(&a, &b, UUID_SOURCE_BITMAP, 43);
	a.dirty_bits = 0;
	b.dirty_bits = 7;
	check(&a, &b, UUID_TARGET_BITMAP, 43);
	a.dirty_bits = 7;
	check(&a, &b, UUID_SOURCE_BITMAP, 44);
}

/* DRBD fix 3: history rotated several times while the peer was away. */
static void test_drbd_history_pushes(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);
	uint64_t g;

	(void)state;
	/* Six writer periods on a: U1 has long left a's history... */
	for (g = 1; g <= 6; g++)
		uuid_new_current(&a, U5 + g);
	assert_int_equal(a.history[MD_HISTORY - 1] == U1, false);
	/* ...but the bitmap UUID still names it. */
	check(&a, &b, UUID_SOURCE_BITMAP, 50);

	/* Both sides rotated many times: still a split brain, from the
	 * shared bitmap UUID. */
	for (g = 1; g <= 6; g++)
		uuid_new_current(&b, U4 + g);
	check(&a, &b, UUID_SPLIT_BRAIN, 70);

	/* A completed sync moved the shared generation into history; then
	 * both diverged again several times. Not "unrelated". */
	a = node(1, U1);
	b = node(2, U1);
	uuid_new_current(&a, U2);
	uuid_sync_source_done(&a);
	uuid_sync_target_done(&b, &a);
	check(&a, &b, UUID_NO_SYNC, 40);
	for (g = 1; g <= 5; g++) {
		uuid_new_current(&a, U3 + g);
		uuid_new_current(&b, U4 + g);
	}
	check(&a, &b, UUID_SPLIT_BRAIN, 70);

	/* The bitmap evidence is gone and the history too short: the
	 * answer refuses; it never picks a direction. */
	a.bitmap = 0;
	b.bitmap = 0;
	memset(a.history, 0, sizeof(a.history));
	a.history[0] = U3 + 9;
	check(&a, &b, UUID_UNRELATED, 90);
}

/* DRBD fix 4: a crashed Primary reconnects. */
static void test_drbd_crashed_primary(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);

	(void)state;
	uuid_set_role(&a, true);
	/* crash, reboot: the AL's extents go into the bitmap. */
	assert_true(uuid_after_crash(&a));
	a.primary = false;
	a.dirty_bits = 3;
	assert_true(a.flags & MD_F_CRASHED_PRIMARY);
	assert_false(a.flags & MD_F_PRIMARY);
	check(&a, &b, UUID_SOURCE_BITMAP, 42);
	/* With an empty AL the crash flag alone still forces a resync. */
	a.dirty_bits = 0;
	check(&a, &b, UUID_SOURCE_BITMAP, 42);
	/* b took over as Primary and has not written yet: b is the source,
	 * so its application's data stays; a's AL blocks get b's copy. */
	a.dirty_bits = 3;
	b.primary = true;
	check(&a, &b, UUID_TARGET_BITMAP, 41);
	/* b wrote: b moved on, a is behind. */
	uuid_new_current(&b, U2);
	check(&a, &b, UUID_TARGET_BITMAP, 50);
}

/* DRBD fix 5: both became Primary while disconnected and wrote. */
static void test_drbd_two_primaries(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);
	struct uuid_decision d;

	(void)state;
	uuid_set_role(&a, true);
	uuid_new_current(&a, U2);
	a.dirty_bits = 2;
	uuid_set_role(&b, true);
	uuid_new_current(&b, U3);
	b.dirty_bits = 5;
	check(&a, &b, UUID_SPLIT_BRAIN, 70);
	/* Still a split brain once both are demoted. */
	uuid_set_role(&a, false);
	uuid_set_role(&b, false);
	check(&a, &b, UUID_SPLIT_BRAIN, 70);
	uuid_sb_resolve(CFG_SB_DISCARD_LEAST_CHANGES, &a, &b, false, false, &d);
	assert_int_equal(d.verdict, UUID_TARGET_BITMAP);
}

/* Resolve both ways; the peer must see the mirror, same rule. */
static void resolve(enum cfg_sb_policy p, const struct uuid_info *a,
		    const struct uuid_info *b, bool da, bool db,
		    enum uuid_verdict want, int rule)
{
	struct uuid_decision x, y;

	uuid_sb_resolve(p, a, b, da, db, &x);
	uuid_sb_resolve(p, b, a, db, da, &y);
	if (x.verdict != want || x.rule != rule)
		fail_msg("got %s rule %d (%s), want %s rule %d",
			 uuid_verdict_name(x.verdict), x.rule, x.why,
			 uuid_verdict_name(want), rule);
	assert_int_equal(y.verdict, uuid_mirror(want));
	assert_int_equal(y.rule, rule);
}

static void test_sb_policies(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1), c;

	(void)state;
	uuid_new_current(&a, U2);
	uuid_new_current(&b, U3);
	a.dirty_bits = 0;
	b.dirty_bits = 9;

	resolve(CFG_SB_DISCONNECT, &a, &b, false, false, UUID_SPLIT_BRAIN, 209);
	resolve(CFG_SB_DISCARD_ZERO_CHANGES, &a, &b, false, false,
		UUID_TARGET_BITMAP, 210);
	resolve(CFG_SB_DISCARD_LEAST_CHANGES, &a, &b, false, false,
		UUID_TARGET_BITMAP, 220);
	a.dirty_bits = 4;
	resolve(CFG_SB_DISCARD_ZERO_CHANGES, &a, &b, false, false,
		UUID_SPLIT_BRAIN, 212);
	a.dirty_bits = 9;
	resolve(CFG_SB_DISCARD_LEAST_CHANGES, &a, &b, false, false,
		UUID_SPLIT_BRAIN, 222);
	a.dirty_bits = b.dirty_bits = 0;
	resolve(CFG_SB_DISCARD_ZERO_CHANGES, &a, &b, false, false,
		UUID_SOURCE_BITMAP, 213);

	/* Younger primary: needs both times, the later one loses. */
	resolve(CFG_SB_DISCARD_YOUNGER_PRIMARY, &a, &b, false, false,
		UUID_SPLIT_BRAIN, 231);
	a.promoted = 1000;
	b.promoted = 2000;
	resolve(CFG_SB_DISCARD_YOUNGER_PRIMARY, &a, &b, false, false,
		UUID_SOURCE_BITMAP, 230);
	b.promoted = 1000;
	resolve(CFG_SB_DISCARD_YOUNGER_PRIMARY, &a, &b, false, false,
		UUID_SPLIT_BRAIN, 231);

	/* Manual recovery wins over the policy; both asking is refused. */
	resolve(CFG_SB_DISCONNECT, &a, &b, true, false, UUID_TARGET_BITMAP,
		200);
	resolve(CFG_SB_DISCONNECT, &a, &b, false, true, UUID_SOURCE_BITMAP,
		200);
	resolve(CFG_SB_DISCONNECT, &a, &b, true, true, UUID_SPLIT_BRAIN, 201);

	/* A Primary never loses automatically. */
	a.dirty_bits = 0;
	b.dirty_bits = 3;
	a.primary = true;
	resolve(CFG_SB_DISCARD_ZERO_CHANGES, &a, &b, false, false,
		UUID_SPLIT_BRAIN, 240);
	assert_int_equal(uuid_sb_policy(CFG_SB_DISCONNECT,
					CFG_SB_DISCARD_LEAST_CHANGES, &a, &b),
			 CFG_SB_DISCARD_LEAST_CHANGES);
	a.primary = false;
	assert_int_equal(uuid_sb_policy(CFG_SB_DISCONNECT,
					CFG_SB_DISCARD_LEAST_CHANGES, &a, &b),
			 CFG_SB_DISCONNECT);

	/* Bitmaps from different ancestors count different things. */
	c = node(1, U4);
	c.history[1] = U1;
	b = node(2, U5);
	b.bitmap = U1;
	b.dirty_bits = 4;
	resolve(CFG_SB_DISCARD_ZERO_CHANGES, &c, &b, false, false,
		UUID_SPLIT_BRAIN, 211);
	resolve(CFG_SB_DISCARD_LEAST_CHANGES, &c, &b, false, false,
		UUID_SPLIT_BRAIN, 221);
	/* ...so manual resolution falls back to a full sync. */
	resolve(CFG_SB_DISCONNECT, &c, &b, false, true, UUID_SOURCE_FULL, 200);

	/* Not a split brain: the policy is not consulted. */
	a = node(1, U1);
	b = node(2, U1);
	resolve(CFG_SB_DISCARD_ZERO_CHANGES, &a, &b, true, false, UUID_NO_SYNC,
		40);
}

static void test_lifecycle(void **state)
{
	struct uuid_info a = node(1, U1), b;
	char why[128];

	(void)state;
	/* First divergence: the old current becomes the bitmap UUID. */
	uuid_new_current(&a, U2);
	assert_true(a.current == U2 && a.bitmap == U1 && a.history[0] == U1);
	/* Later ones keep the older bitmap UUID, push history. */
	uuid_new_current(&a, U3);
	assert_true(a.current == U3 && a.bitmap == U1 && a.history[0] == U2 &&
		    a.history[1] == U1);

	b = node(2, U1);
	uuid_sync_begin(&a, false, false);
	assert_int_equal(a.flags, OK_FLAGS);
	uuid_sync_begin(&b, true, false);
	assert_false(b.flags & MD_F_CONSISTENT);
	a.flags |= MD_F_CRASHED_PRIMARY;
	uuid_sync_source_done(&a);
	assert_true(a.bitmap == 0 && a.current == U3 &&
		    !(a.flags & MD_F_CRASHED_PRIMARY));
	uuid_sync_target_done(&b, &a);
	assert_true(b.current == U3 && b.bitmap == 0);
	assert_memory_equal(a.history, b.history, sizeof(a.history));
	assert_int_equal(b.flags & OK_FLAGS, OK_FLAGS);

	/* Fresh pair, identical disks: skip the initial sync. */
	a = node(1, 0);
	b = node(2, 0);
	assert_int_equal(uuid_skip_initial_sync(&a, 0, why, sizeof(why)),
			 -EINVAL);
	assert_int_equal(uuid_skip_initial_sync(&a, U4, why, sizeof(why)), 0);
	uuid_sync_target_done(&b, &a);
	check(&a, &b, UUID_NO_SYNC, 40);
	assert_int_equal(uuid_skip_initial_sync(&a, U5, why, sizeof(why)),
			 -EEXIST);
	assert_non_null(strstr(why, "just-created"));

	/* primary --force: first generation only on a fresh disk. */
	a = node(1, 0);
	assert_int_equal(uuid_force_primary(&a, 0), -EINVAL);
	assert_int_equal(uuid_force_primary(&a, U1), 0);
	assert_true(a.current == U1 && (a.flags & OK_FLAGS) == OK_FLAGS);
	a.flags = MD_F_FULL_SYNC;
	assert_int_equal(uuid_force_primary(&a, U2), 0);
	assert_true(a.current == U1 && a.flags == (OK_FLAGS | MD_F_FULL_SYNC));

	a.flags = OK_FLAGS;
	uuid_outdate(&a);
	assert_int_equal(a.flags, MD_F_CONSISTENT);
	a.bitmap = U4;
	a.history[2] = U5;
	uuid_invalidate(&a);
	assert_int_equal(a.flags, MD_F_FULL_SYNC);
	assert_true(a.current == 0 && a.bitmap == 0 && a.history[2] == 0);
	assert_false(uuid_after_crash(&a));

	/* NO_SYNC clears a stale bitmap UUID into history. */
	a = node(1, U2);
	a.bitmap = U1;
	a.flags |= MD_F_CRASHED_PRIMARY;
	uuid_in_sync(&a);
	assert_true(a.bitmap == 0 && a.history[0] == U1 &&
		    !(a.flags & MD_F_CRASHED_PRIMARY));
}

/* When a lone write must start a generation first (both regressions were
 * found by the model checker, test_uuid_model.c). */
static void test_write_needs_new_current(void **state)
{
	struct uuid_info a = node(1, U1), b = node(2, U1);

	(void)state;
	/* In sync with the peer: the first lone write starts one. */
	assert_true(uuid_write_needs_new_current(&a, false));
	uuid_new_current(&a, U2);
	/* Same writer period: the generation is already its own. */
	assert_false(uuid_write_needs_new_current(&a, true));
	/* A new writer period (role change, restart, or a diskless
	 * Primary's writes after our own): a new generation, so that a
	 * diskless Primary that used U2 notices foreign writes. */
	assert_true(uuid_write_needs_new_current(&a, false));
	/* A resync just gave the peer our generation: even in the same
	 * writer period, the next lone write needs a new one, or the peer
	 * would look identical while we hold writes it lacks. */
	uuid_sync_source_done(&a);
	uuid_sync_target_done(&b, &a);
	assert_true(uuid_write_needs_new_current(&a, true));
}

static void test_md_roundtrip(void **state)
{
	struct md_super sb;
	struct uuid_info u, v;

	(void)state;
	memset(&sb, 0, sizeof(sb));
	sb.node_id = 3;
	sb.current_uuid = U2;
	sb.history[0] = U1;
	sb.peers[1].bitmap_uuid = U1;
	sb.flags = OK_FLAGS | MD_F_PRIMARY;
	uuid_from_md(&sb, 1, 42, true, &u);
	assert_true(u.current == U2 && u.bitmap == U1 && u.history[0] == U1 &&
		    u.dirty_bits == 42 && u.node_id == 3 && u.primary);
	uuid_new_current(&u, U3);
	uuid_to_md(&u, 1, &sb);
	assert_true(sb.current_uuid == U3 && sb.peers[1].bitmap_uuid == U1 &&
		    sb.history[0] == U2 && sb.peers[0].bitmap_uuid == 0);
	uuid_from_md(&sb, 1, 42, true, &v);
	assert_memory_equal(&u, &v, sizeof(u));
}

static void test_names(void **state)
{
	int v;

	(void)state;
	for (v = 0; v < UUID_VERDICT_COUNT; v++) {
		assert_string_not_equal(uuid_verdict_name(v), "?");
		assert_int_equal(uuid_mirror(uuid_mirror(v)), v);
		assert_int_equal(uuid_verdict_is_sync(v),
				 uuid_verdict_is_source(v) ||
					 uuid_verdict_is_target(v));
	}
	assert_string_equal(uuid_verdict_name(UUID_VERDICT_COUNT), "?");
	assert_true(uuid_verdict_refuses(UUID_SPLIT_BRAIN));
	assert_false(uuid_verdict_refuses(UUID_INITIAL));
	assert_true(uuid_verdict_is_full(UUID_TARGET_FULL));
}

/* Random inputs from small pools (so that UUIDs collide): every verdict
 * mirrors, and no verdict ever makes an inconsistent disk the source. */
static void random_info(struct uuid_info *u, uint32_t id, unsigned int *seed)
{
	static const uint64_t pool[] = { 0, U1, U2, U3, U4, U5 };
	int i;

#define PICK() pool[rand_r(seed) % 6]
	memset(u, 0, sizeof(*u));
	u->node_id = rand_r(seed) % 4 ? id : 9;
	u->current = PICK();
	u->bitmap = rand_r(seed) % 2 ? PICK() : 0;
	for (i = 0; i < MD_HISTORY; i++)
		u->history[i] = rand_r(seed) % 2 ? PICK() : 0;
	u->dirty_bits = rand_r(seed) % 3;
	u->flags = (uint32_t)rand_r(seed) & MD_F_ALL;
	u->primary = rand_r(seed) % 3 == 0;
	u->diskless = rand_r(seed) % 8 == 0;
	u->promoted = rand_r(seed) % 3;
#undef PICK
}

static void test_random_mirror(void **state)
{
	unsigned int seed = 0x5eed;
	struct uuid_info a, b;
	struct uuid_decision x, y;
	int i, p;

	(void)state;
	for (i = 0; i < 300000; i++) {
		random_info(&a, 1, &seed);
		random_info(&b, 2, &seed);
		uuid_decide(&a, &b, &x);
		uuid_decide(&b, &a, &y);
		assert_int_equal(y.verdict, uuid_mirror(x.verdict));
		assert_int_equal(x.rule, y.rule);
		if (uuid_verdict_is_source(x.verdict))
			assert_true((a.flags & MD_F_CONSISTENT) &&
				    !a.diskless && !b.diskless);
		if (x.verdict == UUID_NO_SYNC && !a.diskless && !b.diskless)
			assert_true(a.current == b.current && !a.dirty_bits &&
				    !b.dirty_bits);
		p = rand_r(&seed) % 4;
		uuid_sb_resolve(p, &a, &b, i % 5 == 0, i % 7 == 0, &x);
		uuid_sb_resolve(p, &b, &a, i % 7 == 0, i % 5 == 0, &y);
		assert_int_equal(y.verdict, uuid_mirror(x.verdict));
		assert_int_equal(x.rule, y.rule);
		if (x.rule >= 200 && uuid_verdict_is_target(x.verdict))
			assert_false(a.primary);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_node_ids_and_diskless),
		cmocka_unit_test(test_fresh_and_inconsistent),
		cmocka_unit_test(test_interrupted_resync),
		cmocka_unit_test(test_equal_current),
		cmocka_unit_test(test_bitmap_and_history),
		cmocka_unit_test(test_split_brain_and_unrelated),
		cmocka_unit_test(test_drbd_diskless_primary),
		cmocka_unit_test(test_drbd_equal_with_bits),
		cmocka_unit_test(test_drbd_history_pushes),
		cmocka_unit_test(test_drbd_crashed_primary),
		cmocka_unit_test(test_drbd_two_primaries),
		cmocka_unit_test(test_sb_policies),
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_write_needs_new_current),
		cmocka_unit_test(test_md_roundtrip),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_random_mirror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
