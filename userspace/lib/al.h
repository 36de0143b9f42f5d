/* SPDX-License-Identifier: MIT */
/*
 * al — the activity log: a bounded, LRU-managed set of "hot" extents.
 *
 * Persisting a bitmap bit before every write would double the I/O of random
 * writes. Instead, before a write to a *cold* extent is issued, the extent
 * is made hot by a small checksummed transaction written to an on-disk ring;
 * writes to hot extents cost no metadata I/O at all. When an extent leaves
 * the set (LRU eviction of a slot nobody is writing to), the bitmap pages
 * covering it must be persisted *before* the transaction that evicts it.
 *
 * Invariant (docs/metadata-format.md): after a crash at any point, the
 * on-disk bitmap plus the extents of the on-disk activity log cover every
 * region whose two replicas may differ. A crashed primary therefore resyncs
 * at most nr_slots extents plus what its bitmap already had.
 *
 * Usage on the write path:
 *
 *	n = al_begin_io(al, sector, nr);	// takes references
 *	if (n == -EBUSY)   -> queue the write, retry after al_complete_io()
 *	if (n > 0)         -> queue the write until al_committed_seq() >= n
 *	if (n == 0)        -> issue the write now
 *	...
 *	when al_txn_pending(al) and no transaction is in flight:
 *		for each e in al_txn_evicted(): persist bm pages of extent e
 *		al_txn_encode(al, block, &ring_slot);   // pending -> in flight
 *		write block to ring slot, make it durable (FUA or flush)
 *		al_txn_committed(al);                    // waiters may go
 *	on write completion: al_complete_io(al, sector, nr);
 *
 * The on-disk transaction block is 4 KiB; its layout is documented in
 * docs/metadata-format.md and defined in al.c. Pure logic: no I/O.
 */
#ifndef DUET_AL_H
#define DUET_AL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AL_BLOCK_SIZE 4096u
#define AL_EXTENT_SHIFT_DEFAULT 22 /* 4 MiB extents */
#define AL_EXTENT_SHIFT_MIN 20	   /* 1 MiB */
#define AL_EXTENT_SHIFT_MAX 30	   /* 1 GiB */
#define AL_SLOTS_MIN 7
#define AL_SLOTS_MAX 65534
#define AL_SLOTS_DEFAULT 1237
#define AL_UPDATES_PER_TXN 64	   /* slot changes in one transaction */
#define AL_EXTENT_NONE UINT32_MAX  /* an empty slot */

struct al;

/*
 * A log of @nr_slots hot extents of 2^@extent_shift bytes over a data area
 * of @dev_sectors sectors. NULL with errno EINVAL/ENOMEM.
 */
struct al *al_create(uint32_t nr_slots, unsigned int extent_shift,
		     uint64_t dev_sectors);
void al_free(struct al *al);

uint32_t al_nr_slots(const struct al *al);
unsigned int al_extent_shift(const struct al *al);
/* Ring size in AL_BLOCK_SIZE blocks that @nr_slots needs so that the ring
 * always holds a complete picture of the set, even with a torn last block. */
uint32_t al_ring_blocks(uint32_t nr_slots);

/*
 * Take a reference on every extent the write [sector, sector + nr) touches.
 * Returns 0 when all are hot and committed (issue now), N > 0 when the
 * write must wait until al_committed_seq() >= N, -EBUSY when a needed
 * extent has no slot (every slot is referenced, or the pending transaction
 * is full) and nothing was taken, -EINVAL for a range past the device end.
 */
int64_t al_begin_io(struct al *al, uint64_t sector, uint64_t nr_sectors);
/* Drop the references al_begin_io() took for the same range. */
void al_complete_io(struct al *al, uint64_t sector, uint64_t nr_sectors);

/* Is there a staged transaction to write? */
bool al_txn_pending(const struct al *al);
/* Is a transaction encoded but not yet committed? */
bool al_txn_in_flight(const struct al *al);
/*
 * Extents that the pending transaction evicts: their bitmap pages must be
 * durable before the transaction is written. Fills up to @max, returns the
 * total count.
 */
size_t al_txn_evicted(const struct al *al, uint32_t *extents, size_t max);
/*
 * Encode the pending transaction into @block (AL_BLOCK_SIZE bytes) and tell
 * which ring block it goes to. Moves it to "in flight". -EAGAIN if another
 * transaction is in flight, -ENODATA if nothing is pending.
 */
int al_txn_encode(struct al *al, void *block, uint32_t *ring_block);
/* The in-flight transaction is durable: writes waiting for it may go. */
void al_txn_committed(struct al *al);
/* The in-flight transaction's write failed: forget it (its extents stay
 * in the pending set so the next encode retries them). */
void al_txn_failed(struct al *al);
/* Sequence number of the newest durable transaction. */
uint64_t al_committed_seq(const struct al *al);

/*
 * Rebuild the set from the on-disk ring (@nr_blocks blocks of AL_BLOCK_SIZE,
 * in ring order). Blocks that are all zero (fresh metadata), torn, or have a
 * bad checksum are skipped. Returns 0, or -EUCLEAN with @why filled when the
 * ring is inconsistent (e.g. an extent number past the device end).
 */
int al_recover(struct al *al, const void *ring, uint32_t nr_blocks,
	       char *why, size_t why_len);

/* Extent held by @slot, or AL_EXTENT_NONE. */
uint32_t al_slot_extent(const struct al *al, uint32_t slot);
/* Number of occupied slots. */
uint32_t al_nr_active(const struct al *al);
/* Sector range of extent @e, clipped to the device end. */
void al_extent_range(const struct al *al, uint32_t e, uint64_t *sector,
		     uint64_t *nr_sectors);

/* Encode an empty (all-zero) ring block (create-md, wipe). */
void al_encode_empty(void *block);

#endif
