// SPDX-License-Identifier: MIT
/*
 * Generation UUIDs: the connect-time decision, split-brain policies and the
 * lifecycle helpers. The rule numbers below are the rows of the table in
 * docs/generation-uuids.md; keep the two in step.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "uuid.h"

#define X(u) ((unsigned long long)(u))

static enum uuid_verdict decided(struct uuid_decision *out, enum uuid_verdict v,
				 int rule, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static enum uuid_verdict decided(struct uuid_decision *out, enum uuid_verdict v,
				 int rule, const char *fmt, ...)
{
	va_list ap;

	out->verdict = v;
	out->rule = rule;
	va_start(ap, fmt);
	vsnprintf(out->why, sizeof(out->why), fmt, ap);
	va_end(ap);
	return v;
}

static bool consistent(const struct uuid_info *u)
{
	return u->flags & MD_F_CONSISTENT;
}

static bool crashed(const struct uuid_info *u)
{
	return u->flags & MD_F_CRASHED_PRIMARY;
}

static bool wants_full(const struct uuid_info *u)
{
	return u->flags & MD_F_FULL_SYNC;
}

static bool in_history(const struct uuid_info *u, uint64_t x)
{
	int i;

	if (!x)
		return false;
	for (i = 0; i < MD_HISTORY; i++)
		if (u->history[i] == x)
			return true;
	return false;
}

/* Any generation both sides went through before their current one. */
static bool pasts_overlap(const struct uuid_info *a, const struct uuid_info *b)
{
	int i;

	if (a->bitmap && (a->bitmap == b->bitmap || in_history(b, a->bitmap)))
		return true;
	for (i = 0; i < MD_HISTORY; i++)
		if (a->history[i] && (a->history[i] == b->bitmap ||
				      in_history(b, a->history[i])))
			return true;
	return false;
}

/* Some evidence, any at all, that the two disks hold the same device. */
static bool related(const struct uuid_info *a, const struct uuid_info *b)
{
	return a->current == b->current || a->current == b->bitmap ||
	       b->current == a->bitmap || in_history(a, b->current) ||
	       in_history(b, a->current) || pasts_overlap(a, b);
}

static enum uuid_verdict source_or_target(bool me_source, bool full)
{
	if (me_source)
		return full ? UUID_SOURCE_FULL : UUID_SOURCE_BITMAP;
	return full ? UUID_TARGET_FULL : UUID_TARGET_BITMAP;
}

static const char *side(bool me)
{
	return me ? "this node" : "the peer";
}

/* Rules 1-4: one side has no disk, so there is nothing to sync. */
static bool decide_diskless(const struct uuid_info *me,
			    const struct uuid_info *peer,
			    struct uuid_decision *out)
{
	const struct uuid_info *dl, *disk;

	if (me->diskless && peer->diskless) {
		decided(out, UUID_NO_SYNC, 2, "neither side has a disk");
		return true;
	}
	if (!me->diskless && !peer->diskless)
		return false;
	dl = me->diskless ? me : peer;
	disk = me->diskless ? peer : me;
	/* The diskless Primary's application has seen generation
	 * dl->current; any other generation would change data under it. */
	if (dl->primary && dl->current && dl->current != disk->current) {
		decided(out, UUID_DISKLESS_MISMATCH, 3,
			"%s is a diskless Primary using data generation %016llX, but the disk holds %016llX: refusing, its application would see the data change",
			side(dl == me), X(dl->current), X(disk->current));
		return true;
	}
	decided(out, UUID_NO_SYNC, 4,
		"%s has no disk: nothing to compare or sync", side(dl == me));
	return true;
}

/* Rules 40-44: same current generation. */
static enum uuid_verdict decide_equal(const struct uuid_info *me,
				      const struct uuid_info *peer,
				      struct uuid_decision *out)
{
	bool full = wants_full(me) || wants_full(peer);
	bool me_src;
	int rule;

	if (!me->dirty_bits && !peer->dirty_bits && !crashed(me) &&
	    !crashed(peer) && !full)
		return decided(
			out, UUID_NO_SYNC, 40,
			"same generation %016llX, no out-of-sync blocks on either side",
			X(me->current));
	/*
	 * Same generation, but blocks may differ: activity-log extents of a
	 * crashed Primary, writes whose peer acknowledgement never came, an
	 * interrupted resync. The union of both bitmaps covers them, so any
	 * direction makes the disks equal; none of these blocks holds an
	 * acknowledged write only one side has (that would have started a new
	 * generation). Prefer the side an application is using, then the
	 * crashed Primary (DRBD's choice), then the one with more bits.
	 */
	if (me->primary != peer->primary) {
		me_src = me->primary;
		rule = 41;
	} else if (crashed(me) != crashed(peer)) {
		me_src = crashed(me);
		rule = 42;
	} else if (me->dirty_bits != peer->dirty_bits) {
		me_src = me->dirty_bits > peer->dirty_bits;
		rule = 43;
	} else {
		me_src = me->node_id < peer->node_id;
		rule = 44;
	}
	return decided(
		out, source_or_target(me_src, full), rule,
		"same generation %016llX but out-of-sync blocks remain (bits %llu/%llu%s%s%s): %s is the sync source",
		X(me->current), X(me->dirty_bits), X(peer->dirty_bits),
		crashed(me) ? ", this node crashed as Primary" : "",
		crashed(peer) ? ", the peer crashed as Primary" : "",
		full ? ", full sync requested" : "", side(me_src));
}

/* Rule 20-22: exactly one side is inconsistent (an interrupted or requested
 * resync target): it can only be the target again. */
static enum uuid_verdict decide_inconsistent(const struct uuid_info *me,
					     const struct uuid_info *peer,
					     struct uuid_decision *out)
{
	const struct uuid_info *t = consistent(me) ? peer : me;
	const struct uuid_info *s = t == me ? peer : me;
	bool bitmap;

	if (t->current && !related(me, peer))
		return decided(
			out, UUID_UNRELATED, 22,
			"%s is inconsistent and shares no generation with the other side (%016llX vs %016llX): refusing",
			side(t == me), X(t->current), X(s->current));
	/* The bitmaps cover the remaining difference only when the target
	 * stopped in a bitmap-based resync from this very source. */
	bitmap = t->current && !wants_full(t) && !wants_full(s) &&
		 (t->current == s->current || t->current == s->bitmap ||
		  (s->bitmap && s->bitmap == t->bitmap));
	return decided(
		out, source_or_target(t == peer, !bitmap), bitmap ? 20 : 21,
		"%s is inconsistent (an unfinished resync or invalidate): it is the target of a %s resync",
		side(t == me), bitmap ? "bitmap-based" : "full");
}

enum uuid_verdict uuid_decide(const struct uuid_info *me,
			      const struct uuid_info *peer,
			      struct uuid_decision *out)
{
	bool a, b;

	memset(out, 0, sizeof(*out));
	if (me->node_id == peer->node_id)
		return decided(
			out, UUID_UNRELATED, 1,
			"both sides claim node id %u: check the configuration",
			me->node_id);
	if (decide_diskless(me, peer, out))
		return out->verdict;

	if (!me->current && !peer->current)
		return decided(
			out, UUID_INITIAL, 10,
			"both disks were just created: make one node `primary --force` (or run new-current-uuid --clear-bitmap on identical disks)");
	if (!consistent(me) && !consistent(peer))
		return decided(
			out, UUID_NO_GOOD_DATA, 15,
			"neither disk is consistent: only `primary --force` on the node with the better data can resolve this");
	if (consistent(me) != consistent(peer))
		return decide_inconsistent(me, peer, out);
	if (!me->current || !peer->current)
		return decided(
			out, source_or_target(!peer->current, true), 30,
			"%s was just created: full sync from the other side",
			side(!me->current));

	if (me->current == peer->current)
		return decide_equal(me, peer, out);

	a = peer->current == me->bitmap;
	b = me->current == peer->bitmap;
	if (a && b)
		return decided(
			out, UUID_SPLIT_BRAIN, 59,
			"each side's bitmap UUID is the other's current UUID (%016llX/%016llX): contradictory, treating as split brain",
			X(me->current), X(peer->current));
	if (a || b)
		return decided(
			out,
			source_or_target(a, wants_full(me) || wants_full(peer)),
			50,
			"%s moved on from generation %016llX, which the other side still has; its bitmap covers the difference",
			side(a), X(a ? peer->current : me->current));

	a = in_history(me, peer->current);
	b = in_history(peer, me->current);
	if (a && b)
		return decided(
			out, UUID_SPLIT_BRAIN, 69,
			"each side's current UUID is in the other's history: contradictory, treating as split brain");
	if (a || b)
		return decided(
			out, source_or_target(a, true), 60,
			"%s moved on from generation %016llX, found only in its history: the bitmap does not reach back that far, full sync",
			side(a), X(a ? peer->current : me->current));

	if (me->bitmap && me->bitmap == peer->bitmap) {
		out->bitmaps_comparable = true;
		return decided(
			out, UUID_SPLIT_BRAIN, 70,
			"split brain: both sides wrote since generation %016llX (now %016llX here, %016llX on the peer)",
			X(me->bitmap), X(me->current), X(peer->current));
	}
	if (pasts_overlap(me, peer))
		return decided(
			out, UUID_SPLIT_BRAIN, 80,
			"split brain: both sides moved on from a common older generation (now %016llX here, %016llX on the peer)",
			X(me->current), X(peer->current));
	return decided(
		out, UUID_UNRELATED, 90,
		"no common generation (%016llX here, %016llX on the peer): unrelated data, or a history too short to tell; refusing",
		X(me->current), X(peer->current));
}

enum cfg_sb_policy uuid_sb_policy(enum cfg_sb_policy after_sb_0pri,
				  enum cfg_sb_policy after_sb_1pri,
				  const struct uuid_info *me,
				  const struct uuid_info *peer)
{
	return me->primary || peer->primary ? after_sb_1pri : after_sb_0pri;
}

static enum uuid_verdict unresolved(struct uuid_decision *out, int rule,
				    const char *what)
{
	char base[sizeof(out->why)];

	snprintf(base, sizeof(base), "%s", out->why);
	return decided(out, UUID_SPLIT_BRAIN, rule,
		       "%s; not resolved automatically: %s", base, what);
}

enum uuid_verdict uuid_sb_resolve(enum cfg_sb_policy policy,
				  const struct uuid_info *me,
				  const struct uuid_info *peer, bool my_discard,
				  bool peer_discard, struct uuid_decision *out)
{
	bool cmp, me_loses;
	const char *how;
	int rule;

	if (uuid_decide(me, peer, out) != UUID_SPLIT_BRAIN)
		return out->verdict;
	cmp = out->bitmaps_comparable;

	if (my_discard && peer_discard)
		return unresolved(out, 201,
				  "both sides asked to discard their own data");
	if (my_discard || peer_discard) {
		me_loses = my_discard;
		rule = 200;
		how = "--discard-my-data";
		goto resolved;
	}
	switch (policy) {
	case CFG_SB_DISCARD_ZERO_CHANGES:
		if (!cmp)
			return unresolved(
				out, 211,
				"discard-zero-changes needs bitmaps counting from the same generation");
		if (me->dirty_bits && peer->dirty_bits)
			return unresolved(
				out, 212,
				"discard-zero-changes: both sides changed blocks");
		if (!me->dirty_bits && !peer->dirty_bits) {
			/* Nothing changed on either side: any choice is
			 * lossless; make it the same one on both nodes. */
			me_loses = me->node_id > peer->node_id;
			rule = 213;
		} else {
			me_loses = !me->dirty_bits;
			rule = 210;
		}
		how = "discard-zero-changes";
		goto resolved;
	case CFG_SB_DISCARD_LEAST_CHANGES:
		if (!cmp)
			return unresolved(
				out, 221,
				"discard-least-changes needs bitmaps counting from the same generation");
		if (me->dirty_bits == peer->dirty_bits)
			return unresolved(
				out, 222,
				"discard-least-changes: both sides changed as many blocks");
		me_loses = me->dirty_bits < peer->dirty_bits;
		rule = 220;
		how = "discard-least-changes";
		goto resolved;
	case CFG_SB_DISCARD_YOUNGER_PRIMARY:
		if (!me->promoted || !peer->promoted ||
		    me->promoted == peer->promoted)
			return unresolved(
				out, 231,
				"discard-younger-primary: promotion times unknown or equal");
		me_loses = me->promoted > peer->promoted;
		rule = 230;
		how = "discard-younger-primary";
		goto resolved;
	case CFG_SB_DISCONNECT:
	default:
		return unresolved(out, 209, "after-sb policy is disconnect");
	}

resolved:
	if (me_loses ? me->primary : peer->primary)
		return unresolved(
			out, 240,
			"the losing side is Primary; demote it first");
	return decided(
		out,
		source_or_target(!me_loses,
				 !cmp || wants_full(me) || wants_full(peer)),
		rule,
		"split brain resolved by %s: %s discards its changes (bits %llu here, %llu on the peer)",
		how, side(me_loses), X(me->dirty_bits), X(peer->dirty_bits));
}

enum uuid_verdict uuid_mirror(enum uuid_verdict v)
{
	switch (v) {
	case UUID_SOURCE_BITMAP:
		return UUID_TARGET_BITMAP;
	case UUID_TARGET_BITMAP:
		return UUID_SOURCE_BITMAP;
	case UUID_SOURCE_FULL:
		return UUID_TARGET_FULL;
	case UUID_TARGET_FULL:
		return UUID_SOURCE_FULL;
	default:
		return v;
	}
}

const char *uuid_verdict_name(enum uuid_verdict v)
{
	static const char *const names[UUID_VERDICT_COUNT] = {
		[UUID_NO_SYNC] = "no-sync",
		[UUID_SOURCE_BITMAP] = "sync-source-bitmap",
		[UUID_TARGET_BITMAP] = "sync-target-bitmap",
		[UUID_SOURCE_FULL] = "sync-source-full",
		[UUID_TARGET_FULL] = "sync-target-full",
		[UUID_SPLIT_BRAIN] = "split-brain",
		[UUID_UNRELATED] = "unrelated",
		[UUID_INITIAL] = "initial",
		[UUID_NO_GOOD_DATA] = "no-good-data",
		[UUID_DISKLESS_MISMATCH] = "diskless-mismatch",
	};

	if ((unsigned int)v >= UUID_VERDICT_COUNT)
		return "?";
	return names[v];
}

bool uuid_verdict_is_source(enum uuid_verdict v)
{
	return v == UUID_SOURCE_BITMAP || v == UUID_SOURCE_FULL;
}

bool uuid_verdict_is_target(enum uuid_verdict v)
{
	return v == UUID_TARGET_BITMAP || v == UUID_TARGET_FULL;
}

bool uuid_verdict_is_sync(enum uuid_verdict v)
{
	return uuid_verdict_is_source(v) || uuid_verdict_is_target(v);
}

bool uuid_verdict_is_full(enum uuid_verdict v)
{
	return v == UUID_SOURCE_FULL || v == UUID_TARGET_FULL;
}

bool uuid_verdict_refuses(enum uuid_verdict v)
{
	return v == UUID_SPLIT_BRAIN || v == UUID_UNRELATED ||
	       v == UUID_DISKLESS_MISMATCH;
}

/* History keeps distinct generations, newest first. */
static void push_history(struct uuid_info *u, uint64_t x)
{
	if (!x || in_history(u, x))
		return;
	memmove(&u->history[1], &u->history[0],
		(MD_HISTORY - 1) * sizeof(u->history[0]));
	u->history[0] = x;
}

void uuid_new_current(struct uuid_info *u, uint64_t new_uuid)
{
	/* A bitmap UUID already set is older: the bitmap has counted every
	 * change since then, these included, so it stays. */
	if (!u->bitmap)
		u->bitmap = u->current;
	push_history(u, u->current);
	u->current = new_uuid;
}

bool uuid_write_needs_new_current(const struct uuid_info *u, bool same_writer)
{
	return !u->bitmap || !same_writer;
}

void uuid_sync_begin(struct uuid_info *u, bool target, bool full)
{
	if (!target)
		return;
	u->flags &= ~(MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE);
	if (full)
		u->flags |= MD_F_FULL_SYNC;
}

void uuid_sync_source_done(struct uuid_info *u)
{
	push_history(u, u->bitmap);
	u->bitmap = 0;
	u->flags &= ~(MD_F_CRASHED_PRIMARY | MD_F_FULL_SYNC);
	u->flags |= MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE;
}

void uuid_sync_target_done(struct uuid_info *u, const struct uuid_info *src)
{
	/* The target's own generation is gone from its disk: forget it, or a
	 * later connect could mistake it for shared history. */
	u->current = src->current;
	memcpy(u->history, src->history, sizeof(u->history));
	u->bitmap = 0;
	u->flags &= ~(MD_F_CRASHED_PRIMARY | MD_F_FULL_SYNC);
	u->flags |= MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE;
}

void uuid_in_sync(struct uuid_info *u)
{
	push_history(u, u->bitmap);
	u->bitmap = 0;
	u->flags &= ~MD_F_CRASHED_PRIMARY;
}

int uuid_skip_initial_sync(struct uuid_info *u, uint64_t new_uuid, char *why,
			   size_t why_len)
{
	if (!new_uuid) {
		snprintf(why, why_len, "the new UUID must not be 0");
		return -EINVAL;
	}
	if (u->current) {
		snprintf(
			why, why_len,
			"the disk already has generation %016llX: skipping the initial sync is only for just-created disks",
			X(u->current));
		return -EEXIST;
	}
	u->current = new_uuid;
	u->bitmap = 0;
	u->flags &= ~MD_F_FULL_SYNC;
	u->flags |= MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE;
	return 0;
}

int uuid_force_primary(struct uuid_info *u, uint64_t new_uuid)
{
	if (!u->current) {
		if (!new_uuid)
			return -EINVAL;
		u->current = new_uuid;
	}
	/* A full sync that was due stays due: forcing does not make the
	 * bitmap describe the data. */
	u->flags |= MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE;
	return 0;
}

void uuid_invalidate(struct uuid_info *u)
{
	/*
	 * The data are garbage now (a replaced disk, say): they no longer
	 * belong to any generation. Keeping the old UUIDs would let a later
	 * `primary --force` pass them off as the peer's generation with no
	 * out-of-sync bits. Without them the disk is a new one: a full-sync
	 * target, or, if forced, unrelated to the peer.
	 */
	u->current = 0;
	u->bitmap = 0;
	memset(u->history, 0, sizeof(u->history));
	u->flags &= ~(MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE);
	u->flags |= MD_F_FULL_SYNC;
}

void uuid_outdate(struct uuid_info *u)
{
	u->flags &= ~MD_F_WAS_UP_TO_DATE;
}

void uuid_set_role(struct uuid_info *u, bool primary)
{
	u->primary = primary;
	if (primary)
		u->flags |= MD_F_PRIMARY;
	else
		u->flags &= ~MD_F_PRIMARY;
}

bool uuid_after_crash(struct uuid_info *u)
{
	if (!(u->flags & MD_F_PRIMARY))
		return false;
	u->flags &= ~MD_F_PRIMARY;
	u->flags |= MD_F_CRASHED_PRIMARY;
	return true;
}

void uuid_from_md(const struct md_super *sb, unsigned int slot,
		  uint64_t dirty_bits, bool primary, struct uuid_info *u)
{
	memset(u, 0, sizeof(*u));
	u->current = sb->current_uuid;
	if (slot < MD_MAX_PEERS)
		u->bitmap = sb->peers[slot].bitmap_uuid;
	memcpy(u->history, sb->history, sizeof(u->history));
	u->dirty_bits = dirty_bits;
	u->flags = sb->flags;
	u->node_id = sb->node_id;
	u->primary = primary;
}

void uuid_to_md(const struct uuid_info *u, unsigned int slot,
		struct md_super *sb)
{
	sb->current_uuid = u->current;
	if (slot < MD_MAX_PEERS)
		sb->peers[slot].bitmap_uuid = u->bitmap;
	memcpy(sb->history, u->history, sizeof(sb->history));
	sb->flags = u->flags & MD_F_ALL;
}
