// SPDX-License-Identifier: MIT
/*
 * The activity log: hot-extent set, transactions and the on-disk ring.
 *
 * In memory every slot carries the extent it holds, a reference count (writes
 * in flight), and the sequence number of the transaction that put the extent
 * there. That seq is the whole "is it durable yet" state: a slot whose seq is
 * <= committed_seq is on disk; a larger seq names the transaction a writer
 * must wait for. Slots that are neither referenced nor waiting for a
 * transaction sit on an LRU list, so picking a victim is O(1); extent -> slot
 * is a chained hash table. Nothing on the I/O path allocates.
 *
 * Transactions: at most one pending (being staged by al_begin_io), one
 * encoded (in flight, or failed and waiting to be written again). A failed
 * transaction is rewritten byte for byte to the same ring block with the
 * same seq: its contents were true when it was encoded, its evictions are
 * already persisted, and reusing the block means a failed write followed by
 * a torn retry destroys only one ring block, which the ring size allows for.
 * Byte layout and the recovery argument: docs/activity-log.md.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al.h"
#include "be.h"
#include "crc.h"
#include "log.h"
#include "util.h"

#define AL_MAGIC 0x4455414cu /* "DUAL" */
#define AL_VERSION 1
#define AL_CTX_PER_BLOCK 880u
#define AL_NIL UINT32_MAX /* end of a hash chain or LRU list */

static inline uint32_t al_min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/*
 * On-disk transaction block, AL_BLOCK_SIZE bytes, all integers big-endian.
 *
 *   off  size  field
 *     0     4  magic         0x4455414c ("DUAL")
 *     4     4  crc           CRC32C of the 4096 bytes, this field as zero
 *     8     8  seq           transaction number, increasing; 0 is invalid
 *    16     2  version       1
 *    18     2  nr_updates    entries used in upd[], 0..64
 *    20     2  extent_shift  log2 of the extent size in bytes, 20..30
 *    22     2  ctx_len       entries used in ctx[], min(nr_slots, 880)
 *    24     4  nr_slots      slots in the log that wrote this block
 *    28     4  ctx_start     slot index that ctx[0] describes
 *    32     8  prev_seq      the transaction this one follows (the newest
 *                            durable one when it was written); 0: none
 *    40    24  reserved      zero
 *    64   512  upd[64]       { be32 slot; be32 extent; } slot := extent
 *   576  3520  ctx[880]      be32 extent held by slot
 *                            (ctx_start + i) % nr_slots after this
 *                            transaction, AL_EXTENT_NONE when empty
 *
 * Every 32-bit word from byte 64 on, used or not, is stored XOR-ed with
 * key(seq) = (seq mod 2^32) * 0x9e3779b1 mod 2^32; unused entries are 0
 * before that. Blocks of two different transactions therefore differ in
 * every word, so a torn write of one over the torn remains of another can
 * never reassemble a block that was not written whole (docs/activity-log.md,
 * "ghosts"). Extents are numbered from the start of the data area in units
 * of 2^extent_shift bytes.
 */
struct al_disk_update {
	struct be32 slot;
	struct be32 extent;
} __attribute__((packed));

struct al_disk_block {
	struct be32 magic;
	struct be32 crc;
	struct be64 seq;
	struct be16 version;
	struct be16 nr_updates;
	struct be16 extent_shift;
	struct be16 ctx_len;
	struct be32 nr_slots;
	struct be32 ctx_start;
	struct be64 prev_seq;
	uint8_t reserved[24];
	struct al_disk_update upd[AL_UPDATES_PER_TXN];
	struct be32 ctx[AL_CTX_PER_BLOCK];
} __attribute__((packed));

_Static_assert(sizeof(struct al_disk_update) == 8, "al update");
_Static_assert(offsetof(struct al_disk_block, upd) == 64, "al header");
_Static_assert(offsetof(struct al_disk_block, ctx) == 576, "al upd[]");
_Static_assert(sizeof(struct al_disk_block) == AL_BLOCK_SIZE, "al block");

struct al_slot {
	uint32_t extent;
	uint32_t refcnt;
	uint64_t seq; /* transaction that put extent here */
	uint32_t hnext; /* hash chain */
	uint32_t lru_prev; /* LRU list of evictable slots */
	uint32_t lru_next;
	bool linked; /* on the LRU list: refcnt 0 and durable */
};

struct al_update {
	uint32_t slot;
	uint32_t extent;
	uint32_t old_extent; /* evicted; AL_EXTENT_NONE for an empty slot */
	uint64_t old_seq; /* to undo a stage that has to be rolled back */
};

struct al_txn {
	uint64_t seq;
	uint32_t n;
	struct al_update upd[AL_UPDATES_PER_TXN];
};

enum al_flight {
	AL_FLIGHT_NONE,
	AL_FLIGHT_WRITING, /* encoded, the caller is writing it */
	AL_FLIGHT_FAILED, /* the write failed: rewrite the same bytes */
};

struct al {
	uint32_t nr_slots;
	unsigned int extent_shift;
	uint64_t dev_sectors;
	uint32_t nr_extents;

	uint32_t ring_blocks;
	uint32_t ring_next; /* ring block of the next new transaction */
	uint32_t ctx_cursor; /* first slot of the next context window */
	uint64_t committed_seq;
	uint64_t last_seq; /* newest seq encoded, or seen on disk */

	uint32_t nr_active;
	uint64_t nr_refs;
	struct al_slot *slots;
	uint32_t *hash;
	unsigned int hash_bits;
	uint32_t lru_head; /* least recently used evictable slot */
	uint32_t lru_tail;

	struct al_txn pending;
	struct al_txn flight;
	enum al_flight flight_state;
	uint32_t flight_ring_block;
	uint8_t *flight_block; /* encoded bytes, kept for a rewrite */
};

/* ---- hash table and LRU list ---- */

static uint32_t al_hash(const struct al *al, uint32_t extent)
{
	return (uint32_t)(extent * 0x9e3779b1u) >> (32 - al->hash_bits);
}

static uint32_t al_lookup(const struct al *al, uint32_t extent)
{
	uint32_t s = al->hash[al_hash(al, extent)];

	while (s != AL_NIL && al->slots[s].extent != extent)
		s = al->slots[s].hnext;
	return s;
}

static void al_hash_add(struct al *al, uint32_t s)
{
	uint32_t *head = &al->hash[al_hash(al, al->slots[s].extent)];

	al->slots[s].hnext = *head;
	*head = s;
}

static void al_hash_del(struct al *al, uint32_t s)
{
	uint32_t *p = &al->hash[al_hash(al, al->slots[s].extent)];

	while (*p != s)
		p = &al->slots[*p].hnext;
	*p = al->slots[s].hnext;
}

static void al_lru_unlink(struct al *al, uint32_t s)
{
	struct al_slot *sl = &al->slots[s];

	if (sl->lru_prev != AL_NIL)
		al->slots[sl->lru_prev].lru_next = sl->lru_next;
	else
		al->lru_head = sl->lru_next;
	if (sl->lru_next != AL_NIL)
		al->slots[sl->lru_next].lru_prev = sl->lru_prev;
	else
		al->lru_tail = sl->lru_prev;
	sl->linked = false;
}

static void al_lru_add_tail(struct al *al, uint32_t s)
{
	struct al_slot *sl = &al->slots[s];

	sl->lru_prev = al->lru_tail;
	sl->lru_next = AL_NIL;
	if (al->lru_tail != AL_NIL)
		al->slots[al->lru_tail].lru_next = s;
	else
		al->lru_head = s;
	al->lru_tail = s;
	sl->linked = true;
}

static void al_lru_add_head(struct al *al, uint32_t s)
{
	struct al_slot *sl = &al->slots[s];

	sl->lru_prev = AL_NIL;
	sl->lru_next = al->lru_head;
	if (al->lru_head != AL_NIL)
		al->slots[al->lru_head].lru_prev = s;
	else
		al->lru_tail = s;
	al->lru_head = s;
	sl->linked = true;
}

static void al_get_ref(struct al *al, uint32_t s)
{
	if (al->slots[s].refcnt++ == 0 && al->slots[s].linked)
		al_lru_unlink(al, s);
	al->nr_refs++;
}

/* Released slots go to the MRU end: LRU order is order of last use. */
static void al_put_ref(struct al *al, uint32_t s)
{
	struct al_slot *sl = &al->slots[s];

	al->nr_refs--;
	if (--sl->refcnt == 0 && sl->seq <= al->committed_seq)
		al_lru_add_tail(al, s);
}

/* Put every slot on the LRU list, empty ones first so that they are used
 * before any extent is evicted; rebuild the hash table. */
static void al_reset_index(struct al *al)
{
	uint32_t s;
	int pass;

	memset(al->hash, 0xff, sizeof(*al->hash) << al->hash_bits);
	al->lru_head = al->lru_tail = AL_NIL;
	al->nr_active = 0;
	for (pass = 0; pass < 2; pass++) {
		for (s = 0; s < al->nr_slots; s++) {
			bool empty = al->slots[s].extent == AL_EXTENT_NONE;

			if (empty != (pass == 0))
				continue;
			al_lru_add_tail(al, s);
			if (!empty) {
				al_hash_add(al, s);
				al->nr_active++;
			}
		}
	}
}

/* ---- construction ---- */

struct al *al_create(uint32_t nr_slots, unsigned int extent_shift,
		     uint64_t dev_sectors)
{
	uint64_t nr_extents;
	struct al *al;
	uint32_t s;

	if (nr_slots < AL_SLOTS_MIN || nr_slots > AL_SLOTS_MAX ||
	    extent_shift < AL_EXTENT_SHIFT_MIN ||
	    extent_shift > AL_EXTENT_SHIFT_MAX || !dev_sectors)
		goto out_inval;
	nr_extents = DIV_ROUND_UP(dev_sectors,
				  1ull << (extent_shift - SECTOR_SHIFT));
	/* extent numbers are be32 on disk and AL_EXTENT_NONE is reserved */
	if (nr_extents >= AL_EXTENT_NONE)
		goto out_inval;

	al = calloc(1, sizeof(*al));
	if (!al)
		goto out_nomem;
	al->nr_slots = nr_slots;
	al->extent_shift = extent_shift;
	al->dev_sectors = dev_sectors;
	al->nr_extents = (uint32_t)nr_extents;
	al->ring_blocks = al_ring_blocks(nr_slots);
	/* at least twice as many buckets as slots: chains stay short */
	al->hash_bits = 4;
	while ((1u << al->hash_bits) < 2 * nr_slots)
		al->hash_bits++;

	al->slots = calloc(nr_slots, sizeof(*al->slots));
	al->hash = malloc(sizeof(*al->hash) << al->hash_bits);
	al->flight_block = malloc(AL_BLOCK_SIZE);
	if (!al->slots || !al->hash || !al->flight_block)
		goto out_free;
	for (s = 0; s < nr_slots; s++)
		al->slots[s].extent = AL_EXTENT_NONE;
	al_reset_index(al);
	return al;

out_free:
	al_free(al);
out_nomem:
	errno = ENOMEM;
	return NULL;
out_inval:
	errno = EINVAL;
	return NULL;
}

void al_free(struct al *al)
{
	if (!al)
		return;
	free(al->slots);
	free(al->hash);
	free(al->flight_block);
	free(al);
}

uint32_t al_nr_slots(const struct al *al)
{
	return al->nr_slots;
}

unsigned int al_extent_shift(const struct al *al)
{
	return al->extent_shift;
}

/*
 * Each transaction describes a window of min(nr_slots, 880) slots, and the
 * windows of consecutive transactions follow each other around the slots.
 * So any ceil(nr_slots / 880) consecutive transactions describe every slot;
 * one block more lets the newest be torn (docs/activity-log.md).
 */
uint32_t al_ring_blocks(uint32_t nr_slots)
{
	return DIV_ROUND_UP(nr_slots, AL_CTX_PER_BLOCK) + 1;
}

/* ---- write path ---- */

static bool al_range_extents(const struct al *al, uint64_t sector,
			     uint64_t nr_sectors, uint32_t *first,
			     uint32_t *last)
{
	unsigned int sh = al->extent_shift - SECTOR_SHIFT;

	if (!nr_sectors || sector >= al->dev_sectors ||
	    nr_sectors > al->dev_sectors - sector)
		return false;
	*first = (uint32_t)(sector >> sh);
	*last = (uint32_t)((sector + nr_sectors - 1) >> sh);
	return true;
}

/* Make @extent hot in the least recently used evictable slot, staged in
 * the pending transaction, with one reference for the caller. */
static int al_stage(struct al *al, uint32_t extent)
{
	struct al_update *u;
	struct al_slot *sl;
	uint32_t s = al->lru_head;

	if (s == AL_NIL || al->pending.n == AL_UPDATES_PER_TXN)
		return -EBUSY;
	if (!al->pending.n)
		al->pending.seq = al->last_seq + 1;
	sl = &al->slots[s];
	al_lru_unlink(al, s);
	u = &al->pending.upd[al->pending.n++];
	u->slot = s;
	u->extent = extent;
	u->old_extent = sl->extent;
	u->old_seq = sl->seq;
	if (sl->extent != AL_EXTENT_NONE)
		al_hash_del(al, s);
	else
		al->nr_active++;
	sl->extent = extent;
	sl->seq = al->pending.seq;
	al_hash_add(al, s);
	sl->refcnt = 1;
	al->nr_refs++;
	return 0;
}

/* Undo the newest stage: the slot gets its old extent back and returns to
 * the LRU end it was taken from. */
static void al_unstage(struct al *al)
{
	struct al_update *u = &al->pending.upd[--al->pending.n];
	struct al_slot *sl = &al->slots[u->slot];

	al_hash_del(al, u->slot);
	sl->extent = u->old_extent;
	sl->seq = u->old_seq;
	if (sl->extent != AL_EXTENT_NONE)
		al_hash_add(al, u->slot);
	else
		al->nr_active--;
	sl->refcnt = 0;
	al->nr_refs--;
	al_lru_add_head(al, u->slot);
}

int64_t al_begin_io(struct al *al, uint64_t sector, uint64_t nr_sectors)
{
	uint32_t first, last, e, s, n0 = al->pending.n;
	uint64_t wait = 0;

	if (!al_range_extents(al, sector, nr_sectors, &first, &last))
		return -EINVAL;
	/* a range that can never be hot at once would wait forever */
	if (last - first >= al->nr_slots || last - first >= AL_UPDATES_PER_TXN)
		return -EINVAL;

	/* Reference the hot extents first, so that making the cold ones hot
	 * cannot evict an extent of this very range. */
	for (e = first; e <= last; e++) {
		s = al_lookup(al, e);
		if (s == AL_NIL)
			continue;
		al_get_ref(al, s);
		if (al->slots[s].seq > al->committed_seq &&
		    al->slots[s].seq > wait)
			wait = al->slots[s].seq;
	}
	for (e = first; e <= last; e++) {
		if (al_lookup(al, e) != AL_NIL)
			continue;
		if (al_stage(al, e))
			goto out_rollback;
		wait = al->pending.seq;
	}
	return (int64_t)wait;

out_rollback:
	while (al->pending.n > n0)
		al_unstage(al);
	for (e = first; e <= last; e++) {
		s = al_lookup(al, e);
		if (s != AL_NIL)
			al_put_ref(al, s);
	}
	return -EBUSY;
}

void al_complete_io(struct al *al, uint64_t sector, uint64_t nr_sectors)
{
	uint32_t first, last, e, s;

	if (!al_range_extents(al, sector, nr_sectors, &first, &last)) {
		log_err("al: completion for invalid range %llu+%llu",
			(unsigned long long)sector,
			(unsigned long long)nr_sectors);
		return;
	}
	for (e = first; e <= last; e++) {
		s = al_lookup(al, e);
		if (s == AL_NIL || !al->slots[s].refcnt) {
			log_err("al: completion for extent %u, which holds no reference",
				e);
			continue;
		}
		al_put_ref(al, s);
	}
}

/* ---- transactions ---- */

bool al_txn_pending(const struct al *al)
{
	return al->pending.n || al->flight_state == AL_FLIGHT_FAILED;
}

bool al_txn_in_flight(const struct al *al)
{
	return al->flight_state == AL_FLIGHT_WRITING;
}

/* The transaction the next al_txn_encode() will write. */
static const struct al_txn *al_next_txn(const struct al *al)
{
	return al->flight_state == AL_FLIGHT_FAILED ? &al->flight :
						      &al->pending;
}

size_t al_txn_evicted(const struct al *al, uint32_t *extents, size_t max)
{
	const struct al_txn *t = al_next_txn(al);
	size_t n = 0;
	uint32_t i;

	for (i = 0; i < t->n; i++) {
		if (t->upd[i].old_extent == AL_EXTENT_NONE)
			continue;
		if (n < max)
			extents[n] = t->upd[i].old_extent;
		n++;
	}
	return n;
}

/* The whitening key of transaction @seq: distinct for seqs that differ
 * by less than 2^32, since the multiplier is odd. */
static uint32_t al_key(uint64_t seq)
{
	return (uint32_t)seq * 0x9e3779b1u;
}

/* CRC32C of a block with its crc field taken as zero. */
static uint32_t al_block_crc(const void *block)
{
	static const uint8_t zero[4];
	size_t off = offsetof(struct al_disk_block, crc);
	uint32_t crc;

	crc = crc32c(block, off);
	crc = crc32c_update(crc, zero, sizeof(zero));
	return crc32c_update(crc, (const uint8_t *)block + off + 4,
			     AL_BLOCK_SIZE - off - 4);
}

int al_txn_encode(struct al *al, void *block, uint32_t *ring_block)
{
	struct al_disk_block *b = block;
	uint32_t i, len, key;

	if (al->flight_state == AL_FLIGHT_WRITING)
		return -EAGAIN;
	if (al->flight_state == AL_FLIGHT_FAILED) {
		memcpy(block, al->flight_block, AL_BLOCK_SIZE);
		*ring_block = al->flight_ring_block;
		al->flight_state = AL_FLIGHT_WRITING;
		return 0;
	}
	if (!al->pending.n)
		return -ENODATA;

	al->flight = al->pending;
	al->pending.n = 0;
	/* Nothing else is staged now, so the slots hold exactly the state
	 * after this transaction: that is what the window records. */
	len = al_min32(al->nr_slots, AL_CTX_PER_BLOCK);
	memset(b, 0, sizeof(*b));
	b->magic = put_be32(AL_MAGIC);
	b->seq = put_be64(al->flight.seq);
	b->version = put_be16(AL_VERSION);
	b->nr_updates = put_be16((uint16_t)al->flight.n);
	b->extent_shift = put_be16((uint16_t)al->extent_shift);
	b->ctx_len = put_be16((uint16_t)len);
	b->nr_slots = put_be32(al->nr_slots);
	b->ctx_start = put_be32(al->ctx_cursor);
	b->prev_seq = put_be64(al->committed_seq);
	key = al_key(al->flight.seq);
	for (i = 0; i < AL_UPDATES_PER_TXN; i++) {
		const struct al_update *u = &al->flight.upd[i];

		b->upd[i].slot =
			put_be32((i < al->flight.n ? u->slot : 0) ^ key);
		b->upd[i].extent =
			put_be32((i < al->flight.n ? u->extent : 0) ^ key);
	}
	for (i = 0; i < AL_CTX_PER_BLOCK; i++) {
		uint32_t e = 0;

		if (i < len)
			e = al->slots[(al->ctx_cursor + i) % al->nr_slots]
				    .extent;
		b->ctx[i] = put_be32(e ^ key);
	}
	b->crc = put_be32(al_block_crc(b));
	al->last_seq = al->flight.seq;

	al->ctx_cursor = (al->ctx_cursor + len) % al->nr_slots;
	al->flight_ring_block = al->ring_next;
	al->ring_next = (al->ring_next + 1) % al->ring_blocks;
	memcpy(al->flight_block, b, AL_BLOCK_SIZE);
	al->flight_state = AL_FLIGHT_WRITING;
	*ring_block = al->flight_ring_block;
	log_dbg(LOG_CAT_AL, "al: txn %llu, %u updates, to ring block %u",
		(unsigned long long)al->flight.seq, al->flight.n,
		al->flight_ring_block);
	return 0;
}

void al_txn_committed(struct al *al)
{
	uint32_t i;

	if (al->flight_state != AL_FLIGHT_WRITING) {
		log_err("al: commit without a transaction in flight");
		return;
	}
	al->committed_seq = al->flight.seq;
	al->flight_state = AL_FLIGHT_NONE;
	/* slots it made hot that nobody references become evictable */
	for (i = 0; i < al->flight.n; i++) {
		uint32_t s = al->flight.upd[i].slot;

		if (!al->slots[s].refcnt && !al->slots[s].linked)
			al_lru_add_tail(al, s);
	}
}

void al_txn_failed(struct al *al)
{
	if (al->flight_state != AL_FLIGHT_WRITING) {
		log_err("al: failure without a transaction in flight");
		return;
	}
	/* its waiters keep waiting for the same seq, which the rewrite keeps */
	al->flight_state = AL_FLIGHT_FAILED;
}

uint64_t al_committed_seq(const struct al *al)
{
	return al->committed_seq;
}

/* ---- recovery ---- */

struct al_valid {
	uint64_t seq;
	uint32_t idx; /* ring block */
};

#define al_why(why, len, ...) ((void)util_why(0, why, len, __VA_ARGS__))

static bool al_block_is_zero(const uint8_t *p)
{
	static const uint8_t zero[AL_BLOCK_SIZE];

	return !memcmp(p, zero, AL_BLOCK_SIZE);
}

static bool al_extent_ok(const struct al *al, uint32_t e)
{
	return e == AL_EXTENT_NONE || e < al->nr_extents;
}

/*
 * A block with a good checksum that does not fit this log was not torn by a
 * crash: it belongs to other metadata or was written by a bug. Replaying
 * around it could lose hot extents, so the ring is refused.
 */
static int al_check_block(const struct al *al, const struct al_disk_block *b,
			  uint32_t idx, char *why, size_t why_len)
{
	uint32_t i, n = get_be16(b->nr_updates), len = get_be16(b->ctx_len);
	uint32_t start = get_be32(b->ctx_start), key = al_key(get_be64(b->seq));
	uint64_t seq = get_be64(b->seq);

	if (get_be16(b->version) != AL_VERSION) {
		al_why(why, why_len,
		       "AL ring block %u: unsupported format version %u", idx,
		       get_be16(b->version));
		return -EUCLEAN;
	}
	if (get_be32(b->nr_slots) != al->nr_slots ||
	    get_be16(b->extent_shift) != al->extent_shift) {
		al_why(why, why_len,
		       "AL ring block %u was written for %u slots of 2^%u bytes, the superblock says %u slots of 2^%u bytes",
		       idx, get_be32(b->nr_slots), get_be16(b->extent_shift),
		       al->nr_slots, al->extent_shift);
		return -EUCLEAN;
	}
	if (!seq || get_be64(b->prev_seq) >= seq || n > AL_UPDATES_PER_TXN ||
	    start >= al->nr_slots ||
	    len != al_min32(al->nr_slots, AL_CTX_PER_BLOCK)) {
		al_why(why, why_len,
		       "AL ring block %u: bad header (seq %llu after %llu, %u updates, window %u+%u)",
		       idx, (unsigned long long)seq,
		       (unsigned long long)get_be64(b->prev_seq), n, start,
		       len);
		return -EUCLEAN;
	}
	for (i = 0; i < n; i++) {
		uint32_t s = get_be32(b->upd[i].slot) ^ key;
		uint32_t e = get_be32(b->upd[i].extent) ^ key;

		if (s >= al->nr_slots || !al_extent_ok(al, e)) {
			al_why(why, why_len,
			       "AL ring block %u: update %u sets slot %u to extent %u, but the log has %u slots and the device %u extents",
			       idx, i, s, e, al->nr_slots, al->nr_extents);
			return -EUCLEAN;
		}
	}
	for (i = 0; i < len; i++) {
		uint32_t e = get_be32(b->ctx[i]) ^ key;

		if (!al_extent_ok(al, e)) {
			al_why(why, why_len,
			       "AL ring block %u: slot %u holds extent %u, past the device end (%u extents)",
			       idx, (start + i) % al->nr_slots, e,
			       al->nr_extents);
			return -EUCLEAN;
		}
	}
	return 0;
}

static int al_valid_cmp(const void *a, const void *b)
{
	const struct al_valid *x = a, *y = b;

	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Apply one block: the window, then the updates. Both describe the state
 * after the transaction, so they agree; newer blocks are applied later and
 * win. @seen records which slots were described. */
static void al_replay(const struct al *al, const struct al_disk_block *b,
		      uint32_t *ext, uint8_t *seen)
{
	uint32_t i, start = get_be32(b->ctx_start);
	uint32_t key = al_key(get_be64(b->seq));

	for (i = 0; i < get_be16(b->ctx_len); i++) {
		uint32_t s = (start + i) % al->nr_slots;

		ext[s] = get_be32(b->ctx[i]) ^ key;
		seen[s] = 1;
	}
	for (i = 0; i < get_be16(b->nr_updates); i++) {
		uint32_t s = get_be32(b->upd[i].slot) ^ key;

		ext[s] = get_be32(b->upd[i].extent) ^ key;
		seen[s] = 1;
	}
}

#define AL_BLK(ring, idx)                                         \
	((const struct al_disk_block *)((const uint8_t *)(ring) + \
					(size_t)(idx)*AL_BLOCK_SIZE))

/*
 * Collect valid blocks into @v sorted by seq; *@max_seq is the highest seq
 * in any header with our magic, torn ones included.
 */
static int al_scan(const struct al *al, const void *ring, uint32_t nr_blocks,
		   struct al_valid *v, uint32_t *nr_valid, uint64_t *max_seq,
		   char *why, size_t why_len)
{
	uint32_t i, n = 0, torn = 0;
	int ret;

	*max_seq = 0;
	for (i = 0; i < nr_blocks; i++) {
		const struct al_disk_block *b = AL_BLK(ring, i);
		uint64_t seq = get_be64(b->seq);

		if (al_block_is_zero((const uint8_t *)b) ||
		    get_be32(b->magic) != AL_MAGIC)
			continue;
		if (seq > *max_seq)
			*max_seq = seq;
		if (get_be32(b->crc) != al_block_crc(b)) {
			torn++; /* a crash while it was being written */
			continue;
		}
		ret = al_check_block(al, b, i, why, why_len);
		if (ret)
			return ret;
		v[n].seq = seq;
		v[n++].idx = i;
	}
	qsort(v, n, sizeof(*v), al_valid_cmp);
	/* The same seq twice is only harmless as an identical copy. */
	for (i = 1; i < n; i++) {
		if (v[i].seq == v[i - 1].seq &&
		    memcmp(AL_BLK(ring, v[i].idx), AL_BLK(ring, v[i - 1].idx),
			   AL_BLOCK_SIZE)) {
			al_why(why, why_len,
			       "AL ring blocks %u and %u both hold transaction %llu with different contents",
			       v[i - 1].idx, v[i].idx,
			       (unsigned long long)v[i].seq);
			return -EUCLEAN;
		}
	}
	*nr_valid = n;
	log_dbg(LOG_CAT_AL, "al: %u valid ring blocks, %u torn", n, torn);
	return 0;
}

/*
 * Replay the chain that ends in the newest valid block, following prev_seq
 * back, oldest first. Blocks off the chain are older history the chain
 * overrides. If the chain reaches a transaction with prev_seq 0, slots it
 * does not describe were never used; if it breaks because a block is
 * missing, every slot must be described by the chain, or its extent is
 * unknown.
 */
static int al_replay_chain(const struct al *al, const void *ring,
			   const struct al_valid *v, uint32_t n,
			   uint32_t *chain, uint32_t *ext, uint8_t *seen,
			   char *why, size_t why_len)
{
	uint32_t len = 0, i = n - 1, s;
	uint64_t prev;

	for (;;) {
		chain[len++] = v[i].idx;
		prev = get_be64(AL_BLK(ring, v[i].idx)->prev_seq);
		while (i > 0 && v[i].seq > prev)
			i--;
		if (!prev || v[i].seq != prev)
			break;
	}
	for (s = 0; s < al->nr_slots; s++)
		ext[s] = AL_EXTENT_NONE;
	while (len)
		al_replay(al, AL_BLK(ring, chain[--len]), ext, seen);
	if (!prev)
		return 0;
	for (s = 0; s < al->nr_slots; s++) {
		if (seen[s])
			continue;
		al_why(why, why_len,
		       "AL ring is missing transaction %llu and slot %u is not described by a newer one",
		       (unsigned long long)prev, s);
		return -EUCLEAN;
	}
	return 0;
}

int al_recover(struct al *al, const void *ring, uint32_t nr_blocks, char *why,
	       size_t why_len)
{
	uint32_t i, n = 0, need = al_ring_blocks(al->nr_slots);
	const struct al_disk_block *newest;
	struct al_valid *v;
	uint32_t *ext, *chain;
	uint8_t *seen;
	uint64_t max_seq;
	int ret;

	al_why(why, why_len, "%s", "");
	if (al->nr_refs || al->pending.n || al->flight_state != AL_FLIGHT_NONE)
		return -EBUSY;
	if (!ring || nr_blocks < need) {
		al_why(why, why_len,
		       "AL ring of %u blocks is too small: %u slots need %u",
		       nr_blocks, al->nr_slots, need);
		return -EUCLEAN;
	}
	/* one allocation for the scratch arrays; v first for alignment */
	v = malloc((sizeof(*v) + sizeof(*chain)) * nr_blocks +
		   (sizeof(*ext) + 1) * al->nr_slots);
	if (!v)
		return -ENOMEM;
	chain = (uint32_t *)(v + nr_blocks);
	ext = chain + nr_blocks;
	seen = (uint8_t *)(ext + al->nr_slots);
	memset(seen, 0, al->nr_slots);
	ret = al_scan(al, ring, nr_blocks, v, &n, &max_seq, why, why_len);
	if (ret)
		goto out_free;
	if (n) {
		ret = al_replay_chain(al, ring, v, n, chain, ext, seen, why,
				      why_len);
		if (ret)
			goto out_free;
	} else {
		for (i = 0; i < al->nr_slots; i++)
			ext[i] = AL_EXTENT_NONE;
	}

	for (i = 0; i < al->nr_slots; i++) {
		al->slots[i].extent = ext[i];
		al->slots[i].refcnt = 0;
		al->slots[i].seq = 0;
		al->slots[i].linked = false;
	}
	al_reset_index(al);
	al->ring_blocks = nr_blocks;
	al->committed_seq = 0;
	al->ring_next = 0;
	al->ctx_cursor = 0;
	if (n) {
		newest = AL_BLK(ring, v[n - 1].idx);
		al->committed_seq = v[n - 1].seq;
		al->ring_next = (v[n - 1].idx + 1) % nr_blocks;
		al->ctx_cursor = (get_be32(newest->ctx_start) +
				  get_be16(newest->ctx_len)) %
				 al->nr_slots;
	}
	/* Never reuse the seq of a torn block: see "ghosts" in the docs. */
	al->last_seq = max_seq > al->committed_seq ? max_seq :
						     al->committed_seq;
	log_dbg(LOG_CAT_AL,
		"al: recovered %u hot extents, newest transaction %llu, next %llu",
		al->nr_active, (unsigned long long)al->committed_seq,
		(unsigned long long)al->last_seq + 1);
	ret = 0;

out_free:
	free(v);
	return ret;
}

/* ---- inspection ---- */

uint32_t al_slot_extent(const struct al *al, uint32_t slot)
{
	return slot < al->nr_slots ? al->slots[slot].extent : AL_EXTENT_NONE;
}

uint32_t al_nr_active(const struct al *al)
{
	return al->nr_active;
}

void al_extent_range(const struct al *al, uint32_t e, uint64_t *sector,
		     uint64_t *nr_sectors)
{
	unsigned int sh = al->extent_shift - SECTOR_SHIFT;
	uint64_t start = (uint64_t)e << sh;

	if (e >= al->nr_extents) {
		*sector = al->dev_sectors;
		*nr_sectors = 0;
		return;
	}
	*sector = start;
	*nr_sectors = al->dev_sectors - start;
	if (*nr_sectors > 1ull << sh)
		*nr_sectors = 1ull << sh;
}

void al_encode_empty(void *block)
{
	/* all zero: recovery skips it, like never-written metadata */
	memset(block, 0, AL_BLOCK_SIZE);
}
