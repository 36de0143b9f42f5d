/* SPDX-License-Identifier: MIT */
/*
 * ival_ — the set of sector ranges being changed right now, so that two
 * changes of the same blocks never overlap in time: an application write
 * that overlaps another one in flight (or a resync block being sent)
 * waits until that one has completed on both disks. Then both disks apply
 * overlapping changes in the same order, and a resync block is never
 * written over newer data.
 *
 * Pure data, no locking and no I/O: the owner (repl) holds its lock around
 * every call. Ranges are kept in a flat array (the number in flight is
 * bounded by the queues' depth, a few hundred): a lookup is one linear
 * scan over entries that fit a few cache lines each, cheaper than a tree
 * at these sizes.
 */
#ifndef DUET_IVAL_H
#define DUET_IVAL_H

#include <stdbool.h>
#include <stdint.h>

struct ival_set;

/* Room for @max ranges at once. NULL with errno. */
struct ival_set *ival_create(uint32_t max);
void ival_free(struct ival_set *s);

/*
 * Take [@sector, @sector + @nr) unless it overlaps a range held: 0 and
 * *@handle set, -EBUSY on overlap, -ENOSPC when full, -EINVAL for nr 0.
 */
int ival_take(struct ival_set *s, uint64_t sector, uint64_t nr,
	      uint32_t *handle);
/* Give back a range from ival_take. */
void ival_put(struct ival_set *s, uint32_t handle);
/* Does [@sector, @sector + @nr) overlap a range held? */
bool ival_overlaps(const struct ival_set *s, uint64_t sector, uint64_t nr);
/* Ranges held. */
uint32_t ival_count(const struct ival_set *s);

#endif
