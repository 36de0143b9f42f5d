/* SPDX-License-Identifier: MIT */
/*
 * uuid — generation UUIDs: the sync decision when two nodes connect, the
 * automatic split-brain policies, and the helpers that move the UUIDs
 * through their lifecycle (new generation, resync start and end, forced
 * promotion, invalidate, outdate, crash recovery).
 *
 * A generation UUID names a period of writes. Each node keeps its current
 * UUID, the bitmap UUID (the generation its bitmap for the peer counts
 * from; 0 while in sync) and up to MD_HISTORY older UUIDs. Comparing the
 * two sides' values tells which node is newer, whether the bitmaps cover
 * the difference, and whether both wrote independently (split brain).
 * The rules, in order, and which event calls which helper:
 * docs/generation-uuids.md.
 *
 * Pure logic: no I/O, no clocks, no random numbers (new UUIDs are passed
 * in; use util_random_u64()).
 */
#ifndef DUET_UUID_H
#define DUET_UUID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"
#include "md.h"

/* One side's inputs to the decision, as stored in md plus the live role. */
struct uuid_info {
	uint64_t current; /* data generation; 0 = just created. For a
				 * diskless node: the generation its
				 * application has been using (0 = none). */
	uint64_t bitmap; /* bitmap UUID of the peer's slot; 0 = none */
	uint64_t history[MD_HISTORY]; /* older generations; 0 = empty */
	uint64_t dirty_bits; /* bits set in the bitmap for the peer */
	uint32_t flags; /* enum md_flags */
	uint32_t node_id;
	bool primary; /* role now */
	bool diskless; /* no local disk attached */
	uint64_t promoted; /* when this node last became Primary, in
				 * seconds since the epoch; 0 = never known.
				 * Only discard-younger-primary reads it; md
				 * has no field for it yet (see the doc). */
};

enum uuid_verdict {
	UUID_NO_SYNC = 0, /* same data: nothing to do */
	UUID_SOURCE_BITMAP, /* we are newer; resync the bitmap's blocks */
	UUID_TARGET_BITMAP, /* the peer is newer; likewise */
	UUID_SOURCE_FULL, /* we are newer; resync every block */
	UUID_TARGET_FULL, /* the peer is newer; likewise */
	UUID_SPLIT_BRAIN, /* both wrote since they last agreed */
	UUID_UNRELATED, /* no common history: refuse to connect */
	UUID_INITIAL, /* both just created: one side needs
				 * `primary --force` (or new-current-uuid
				 * --clear-bitmap on identical disks) */
	UUID_NO_GOOD_DATA, /* neither side is consistent: same remedy */
	UUID_DISKLESS_MISMATCH, /* a diskless Primary was using another
				 * generation than the peer now has */
	UUID_VERDICT_COUNT
};

struct uuid_decision {
	enum uuid_verdict verdict;
	int rule; /* row of the table in generation-uuids.md */
	/* Split brain only: both bitmaps count from the same ancestor, so
	 * their union covers every block either side changed since. */
	bool bitmaps_comparable;
	char why[256]; /* one sentence for logs and events */
};

/*
 * Decide what to do when @me and @peer connect (or when a disk is attached
 * while connected). Pure and deterministic; the peer runs the same
 * function with the arguments swapped and gets uuid_mirror() of our
 * verdict with the same rule number. @out is filled; returns its verdict.
 */
enum uuid_verdict uuid_decide(const struct uuid_info *me,
			      const struct uuid_info *peer,
			      struct uuid_decision *out);

/*
 * uuid_decide(), then, for a split brain, try to resolve it: either side's
 * `connect --discard-my-data` (@my_discard, @peer_discard) makes that side
 * the target; otherwise @policy decides:
 *  - disconnect: never resolves;
 *  - discard-zero-changes: a side with 0 dirty bits since the split loses
 *    (both 0: the higher node id loses, nothing is lost either way; both
 *    changed: unresolved);
 *  - discard-least-changes: fewer dirty bits loses; a tie is unresolved;
 *  - discard-younger-primary: the larger `promoted` loses; equal or
 *    unknown (0) is unresolved.
 * The two bit-counting policies need bitmaps_comparable. A side that is
 * Primary now never loses (unresolved instead). Unresolved: the verdict
 * stays UUID_SPLIT_BRAIN and @out says why. Choose @policy with
 * uuid_sb_policy(). Mirrors like uuid_decide().
 */
enum uuid_verdict uuid_sb_resolve(enum cfg_sb_policy policy,
				  const struct uuid_info *me,
				  const struct uuid_info *peer, bool my_discard,
				  bool peer_discard, struct uuid_decision *out);

/* after-sb-0pri when neither side is Primary, else after-sb-1pri. */
enum cfg_sb_policy uuid_sb_policy(enum cfg_sb_policy after_sb_0pri,
				  enum cfg_sb_policy after_sb_1pri,
				  const struct uuid_info *me,
				  const struct uuid_info *peer);

/* The peer's verdict for ours: source <-> target, the rest unchanged. */
enum uuid_verdict uuid_mirror(enum uuid_verdict v);
const char *uuid_verdict_name(enum uuid_verdict v);
bool uuid_verdict_is_sync(enum uuid_verdict v);
bool uuid_verdict_is_source(enum uuid_verdict v);
bool uuid_verdict_is_target(enum uuid_verdict v);
bool uuid_verdict_is_full(enum uuid_verdict v);
/* Split brain, unrelated, diskless mismatch: the connection is refused. */
bool uuid_verdict_refuses(enum uuid_verdict v);

/*
 * Lifecycle. Each helper changes only @u; the caller persists it (md)
 * before doing what it announces. Which event calls which:
 * docs/generation-uuids.md, "Lifecycle".
 */

/*
 * Start a new generation @new_uuid (non-zero): the old current goes into
 * the history and, when no bitmap UUID is set yet, becomes the bitmap UUID
 * (the bitmap counts from the older of the two). Called before the first
 * write of a writer period that the peer's disk will not receive.
 */
void uuid_new_current(struct uuid_info *u, uint64_t new_uuid);

/*
 * Whether a write about to land on this disk but not on the peer's disk
 * needs uuid_new_current() (persisted) first. @same_writer: the daemon's
 * memory that this writer period already started its own generation; it
 * is cleared at start-up and whenever the role changes. A zero bitmap UUID
 * means the peer's disk has our current generation (connected in sync, or
 * a resync just ended), so any lone write starts a new one.
 */
bool uuid_write_needs_new_current(const struct uuid_info *u, bool same_writer);

/* A resync starts. The target's data stops being consistent; a full sync
 * is remembered so that an interrupted one starts over. */
void uuid_sync_begin(struct uuid_info *u, bool target, bool full);

/* The source finished: the bitmap counts from nothing any more. */
void uuid_sync_source_done(struct uuid_info *u);

/* The target finished: it holds the source's generation now. @src is the
 * source's info after uuid_sync_source_done(). */
void uuid_sync_target_done(struct uuid_info *u, const struct uuid_info *src);

/* Connected with UUID_NO_SYNC: a stale bitmap UUID and the crash flag
 * have served their purpose. */
void uuid_in_sync(struct uuid_info *u);

/*
 * `new-current-uuid --clear-bitmap` on a just-created pair whose disks are
 * known to be identical (both zeroed): give @u the first generation
 * @new_uuid without an initial sync; the peer takes it with
 * uuid_sync_target_done(). -EEXIST (with @why) when @u already has a
 * generation, -EINVAL for @new_uuid 0.
 */
int uuid_skip_initial_sync(struct uuid_info *u, uint64_t new_uuid, char *why,
			   size_t why_len);

/*
 * `primary --force`: declare this disk's data the newest. A just-created
 * disk gets its first generation @new_uuid (-EINVAL when 0 is passed for
 * one); a disk with a generation keeps its UUIDs (a later write alone
 * starts a new one as usual). A pending full sync stays pending.
 * Returns 0 or -EINVAL.
 */
int uuid_force_primary(struct uuid_info *u, uint64_t new_uuid);

/* `invalidate`: this disk is to be overwritten by a full sync. Its UUIDs
 * are dropped (it holds no generation any more); the caller also sets
 * every bit of its bitmap. */
void uuid_invalidate(struct uuid_info *u);
/* `outdate` (or fenced by the peer): consistent, but not the newest. */
void uuid_outdate(struct uuid_info *u);
/* The role changed; the Primary flag is persisted for crash detection. */
void uuid_set_role(struct uuid_info *u, bool primary);
/* At attach: a Primary flag still set means the node crashed as Primary
 * (the caller adds the activity-log extents to the bitmap). Returns true
 * when that was the case. */
bool uuid_after_crash(struct uuid_info *u);

/* md <-> uuid_info for the peer slot @slot. */
void uuid_from_md(const struct md_super *sb, unsigned int slot,
		  uint64_t dirty_bits, bool primary, struct uuid_info *u);
void uuid_to_md(const struct uuid_info *u, unsigned int slot,
		struct md_super *sb);

#endif
