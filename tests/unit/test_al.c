// SPDX-License-Identifier: MIT
/*
 * Activity log: the hot set and its write-path protocol, the transaction
 * block layout, recovery (torn blocks, foreign rings, duplicates, gaps),
 * and crash simulations that check the coverage invariant of al.h against
 * a byte-per-granule model of the data, the in-memory and on-disk bitmaps.
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

#include "al.h"
#include "crc.h"
#include "util.h"

#define SPE 2048u /* sectors per extent at extent_shift 20 (1 MiB) */
#define BS AL_BLOCK_SIZE
#define NONE AL_EXTENT_NONE
#define CTX_PER_BLOCK 880u /* docs/activity-log.md */

static struct al *mk(uint32_t slots, uint64_t extents)
{
	struct al *al = al_create(slots, 20, extents * SPE);

	assert_non_null(al);
	return al;
}

/* A small write inside extent @e. */
static int64_t wr(struct al *al, uint32_t e)
{
	return al_begin_io(al, (uint64_t)e * SPE + 8, 16);
}

static void done(struct al *al, uint32_t e)
{
	al_complete_io(al, (uint64_t)e * SPE + 8, 16);
}

static uint32_t be32_at(const uint8_t *p, size_t off)
{
	return (uint32_t)p[off] << 24 | (uint32_t)p[off + 1] << 16 |
	       (uint32_t)p[off + 2] << 8 | p[off + 3];
}

static uint16_t be16_at(const uint8_t *p, size_t off)
{
	return (uint16_t)(p[off] << 8 | p[off + 1]);
}

static uint64_t be64_at(const uint8_t *p, size_t off)
{
	return (uint64_t)be32_at(p, off) << 32 | be32_at(p, off + 4);
}

static void put32_at(uint8_t *p, size_t off, uint32_t v)
{
	p[off] = (uint8_t)(v >> 24);
	p[off + 1] = (uint8_t)(v >> 16);
	p[off + 2] = (uint8_t)(v >> 8);
	p[off + 3] = (uint8_t)v;
}

/* Words from byte 64 on are stored XOR this (docs/activity-log.md). */
static uint32_t key(uint64_t seq)
{
	return (uint32_t)seq * 0x9e3779b1u;
}

/* Recompute the CRC of a block the test edited, as the layout says. */
static void fix_crc(uint8_t *b)
{
	put32_at(b, 4, 0);
	put32_at(b, 4, crc32c(b, BS));
}

/* Write the pending transaction into @ring (or nowhere) and commit it. */
static uint64_t flush(struct al *al, uint8_t *ring)
{
	uint8_t blk[BS];
	uint32_t rb;

	assert_int_equal(al_txn_encode(al, blk, &rb), 0);
	if (ring)
		memcpy(ring + (size_t)rb * BS, blk, BS);
	al_txn_committed(al);
	return be64_at(blk, 8);
}

static int slot_of(const struct al *al, uint32_t e)
{
	uint32_t s;

	for (s = 0; s < al_nr_slots(al); s++)
		if (al_slot_extent(al, s) == e)
			return (int)s;
	return -1;
}

static void test_create(void **state)
{
	uint64_t sec, nr;
	struct al *al;
	uint32_t s;

	(void)state;
	errno = 0;
	assert_null(al_create(AL_SLOTS_MIN - 1, 22, 1 << 20));
	assert_int_equal(errno, EINVAL);
	assert_null(al_create(AL_SLOTS_MAX + 1, 22, 1 << 20));
	assert_null(al_create(7, AL_EXTENT_SHIFT_MIN - 1, 1 << 20));
	assert_null(al_create(7, AL_EXTENT_SHIFT_MAX + 1, 1 << 20));
	assert_null(al_create(7, 22, 0));
	/* extent numbers must stay below AL_EXTENT_NONE */
	assert_null(al_create(7, 20, (uint64_t)UINT32_MAX * SPE));
	al = al_create(7, 20, (uint64_t)(UINT32_MAX - 1) * SPE);
	assert_non_null(al);
	al_free(al);

	al = al_create(AL_SLOTS_DEFAULT, AL_EXTENT_SHIFT_DEFAULT, 1ull << 30);
	assert_non_null(al);
	assert_int_equal(al_nr_slots(al), AL_SLOTS_DEFAULT);
	assert_int_equal(al_extent_shift(al), AL_EXTENT_SHIFT_DEFAULT);
	assert_int_equal(al_nr_active(al), 0);
	assert_int_equal(al_committed_seq(al), 0);
	assert_false(al_txn_pending(al));
	assert_false(al_txn_in_flight(al));
	for (s = 0; s < AL_SLOTS_DEFAULT; s++)
		assert_int_equal(al_slot_extent(al, s), NONE);
	assert_int_equal(al_slot_extent(al, AL_SLOTS_DEFAULT), NONE);
	al_free(al);
	al_free(NULL);

	/* 10 full extents and a 100-sector tail */
	al = al_create(7, 20, 10 * SPE + 100);
	assert_non_null(al);
	al_extent_range(al, 3, &sec, &nr);
	assert_int_equal(sec, 3 * SPE);
	assert_int_equal(nr, SPE);
	al_extent_range(al, 10, &sec, &nr);
	assert_int_equal(sec, 10 * SPE);
	assert_int_equal(nr, 100);
	al_extent_range(al, 11, &sec, &nr);
	assert_int_equal(nr, 0);
	al_free(al);
}

static void test_ring_blocks(void **state)
{
	uint32_t n;

	(void)state;
	assert_int_equal(al_ring_blocks(7), 2);
	assert_int_equal(al_ring_blocks(880), 2);
	assert_int_equal(al_ring_blocks(881), 3);
	assert_int_equal(al_ring_blocks(AL_SLOTS_DEFAULT), 3);
	assert_int_equal(al_ring_blocks(1760), 3);
	assert_int_equal(al_ring_blocks(1761), 4);
	assert_int_equal(al_ring_blocks(AL_SLOTS_MAX), 76);
	/* with the newest block torn, the others' windows still cover all */
	for (n = AL_SLOTS_MIN; n <= AL_SLOTS_MAX; n++)
		assert_true((uint64_t)(al_ring_blocks(n) - 1) * CTX_PER_BLOCK >=
			    n);
}

static void test_hot_write_costs_nothing(void **state)
{
	struct al *al = mk(7, 100);

	(void)state;
	assert_int_equal(wr(al, 5), 1);
	assert_true(al_txn_pending(al));
	assert_int_equal(al_txn_evicted(al, NULL, 0), 0);
	assert_int_equal(al_nr_active(al), 1);
	assert_int_equal(flush(al, NULL), 1);
	assert_int_equal(al_committed_seq(al), 1);
	assert_false(al_txn_pending(al));

	/* hot and committed: no transaction, issue at once */
	assert_int_equal(wr(al, 5), 0);
	assert_int_equal(al_begin_io(al, 5 * SPE, SPE), 0);
	assert_false(al_txn_pending(al));
	done(al, 5);
	done(al, 5);
	al_complete_io(al, 5 * SPE, SPE);
	assert_int_equal(wr(al, 5), 0);
	assert_false(al_txn_pending(al));
	assert_int_equal(al_nr_active(al), 1);
	al_free(al);
}

static void test_seq_semantics(void **state)
{
	struct al *al = mk(7, 100);
	uint8_t blk[BS];
	uint32_t rb;

	(void)state;
	assert_int_equal(wr(al, 1), 1);
	assert_int_equal(al_txn_encode(al, blk, &rb), 0);
	assert_int_equal(rb, 0);
	assert_int_equal(be64_at(blk, 8), 1);
	assert_true(al_txn_in_flight(al));
	assert_false(al_txn_pending(al));

	/* while 1 is in flight, a new cold extent goes into txn 2 */
	assert_int_equal(wr(al, 2), 2);
	/* hot but only staged in flight: wait for 1 */
	assert_int_equal(wr(al, 1), 1);
	assert_int_equal(wr(al, 2), 2);
	/* a range over extents 1 and 3 waits for the newer */
	assert_int_equal(al_begin_io(al, 2 * SPE - 8, SPE + 16), 2);
	assert_int_equal(al_txn_encode(al, blk, &rb), -EAGAIN);

	al_txn_committed(al);
	assert_int_equal(al_committed_seq(al), 1);
	assert_int_equal(wr(al, 1), 0);
	assert_int_equal(wr(al, 2), 2);
	assert_int_equal(al_txn_encode(al, blk, &rb), 0);
	assert_int_equal(rb, 1);
	assert_int_equal(be64_at(blk, 8), 2);
	assert_int_equal(be16_at(blk, 18), 2); /* extents 2 and 3 */
	al_txn_committed(al);
	assert_int_equal(al_committed_seq(al), 2);
	assert_int_equal(wr(al, 2), 0);
	assert_int_equal(al_txn_encode(al, blk, &rb), -ENODATA);

	/* the ring is used round robin */
	assert_int_equal(wr(al, 9), 3);
	assert_int_equal(al_txn_encode(al, blk, &rb), 0);
	assert_int_equal(rb, 0);
	al_free(al);
}

static void test_ebusy_all_referenced(void **state)
{
	struct al *al = mk(7, 100);
	uint32_t e, ev[4];
	int s3;

	(void)state;
	for (e = 0; e < 7; e++)
		assert_int_equal(wr(al, e), 1);
	flush(al, NULL);
	assert_int_equal(wr(al, 7), -EBUSY);
	assert_false(al_txn_pending(al));
	assert_int_equal(al_nr_active(al), 7);
	assert_int_equal(slot_of(al, 7), -1);

	s3 = slot_of(al, 3);
	done(al, 3);
	assert_int_equal(wr(al, 7), 2);
	assert_int_equal(al_txn_evicted(al, ev, 4), 1);
	assert_int_equal(ev[0], 3);
	assert_int_equal(slot_of(al, 7), s3);
	assert_int_equal(slot_of(al, 3), -1);
	/* the others are still referenced */
	assert_int_equal(wr(al, 8), -EBUSY);
	al_free(al);
}

static void test_ebusy_pending_full(void **state)
{
	struct al *al = mk(200, 400);
	uint32_t e;

	(void)state;
	for (e = 0; e < AL_UPDATES_PER_TXN; e++)
		assert_int_equal(wr(al, e), 1);
	assert_int_equal(wr(al, 100), -EBUSY);
	/* hot (staged) extents still go */
	assert_int_equal(wr(al, 10), 1);
	flush(al, NULL);
	assert_int_equal(wr(al, 100), 2);
	al_free(al);
}

static void test_rollback_multi_extent(void **state)
{
	struct al *al = mk(7, 100);
	uint32_t e, ev[4];
	int s10, s0;

	(void)state;
	/* six slots referenced, one empty */
	for (e = 0; e < 6; e++)
		assert_int_equal(wr(al, e), 1);
	flush(al, NULL);
	/* extents 10 and 11: 10 takes the empty slot, 11 finds none */
	assert_int_equal(al_begin_io(al, 11 * SPE - 8, 16), -EBUSY);
	assert_false(al_txn_pending(al));
	assert_int_equal(al_nr_active(al), 6);
	assert_int_equal(slot_of(al, 10), -1);
	assert_int_equal(wr(al, 10), 2); /* the empty slot is usable again */
	flush(al, NULL);

	/* all seven referenced but 10, the only evictable one */
	s10 = slot_of(al, 10);
	done(al, 10);
	/* 10 (hot) + 11 (cold): 11 may not evict 10, which the range needs */
	assert_int_equal(al_begin_io(al, 11 * SPE - 8, 16), -EBUSY);
	assert_false(al_txn_pending(al));
	/* the reference on 10 was dropped again: 11 alone can evict it */
	assert_int_equal(wr(al, 11), 3);
	assert_int_equal(al_txn_evicted(al, ev, 4), 1);
	assert_int_equal(ev[0], 10);
	assert_int_equal(slot_of(al, 11), s10);
	flush(al, NULL);

	/* 40 evicts 0, then 41 finds no slot: 0 must come back, hot and
	 * durable, in its old slot */
	done(al, 0);
	s0 = slot_of(al, 0);
	assert_int_equal(al_begin_io(al, 41 * SPE - 8, 16), -EBUSY);
	assert_int_equal(slot_of(al, 0), s0);
	assert_int_equal(slot_of(al, 40), -1);
	assert_int_equal(al_nr_active(al), 7);
	assert_false(al_txn_pending(al));
	assert_int_equal(al_txn_evicted(al, ev, 4), 0);
	assert_int_equal(wr(al, 0), 0);
	al_free(al);
}

static void test_lru_victim(void **state)
{
	static const uint32_t order[] = { 3, 1, 5, 0, 2, 6, 4 };
	struct al *al = mk(7, 100);
	uint32_t e, ev[8];

	(void)state;
	for (e = 0; e < 7; e++)
		assert_int_equal(wr(al, e), 1);
	flush(al, NULL);
	for (e = 0; e < 7; e++)
		done(al, order[e]);
	assert_int_equal(wr(al, 7), 2); /* evicts 3 */
	assert_int_equal(wr(al, 8), 2); /* evicts 1 */
	assert_int_equal(wr(al, 5), 0); /* 5 becomes most recently used */
	done(al, 5);
	assert_int_equal(wr(al, 9), 2); /* evicts 0, not 5 */
	assert_int_equal(al_txn_evicted(al, ev, 8), 3);
	assert_int_equal(ev[0], 3);
	assert_int_equal(ev[1], 1);
	assert_int_equal(ev[2], 0);
	ev[1] = 77;
	assert_int_equal(al_txn_evicted(al, ev, 1), 3);
	assert_int_equal(ev[1], 77);

	/* staged slots are not victims even when nobody references them */
	done(al, 7);
	done(al, 8);
	done(al, 9);
	assert_int_equal(wr(al, 10), 2); /* evicts 2 */
	assert_int_equal(wr(al, 11), 2); /* 6 */
	assert_int_equal(wr(al, 12), 2); /* 4 */
	assert_int_equal(wr(al, 13), 2); /* 5 */
	assert_int_equal(wr(al, 14), -EBUSY);
	assert_int_equal(al_txn_evicted(al, ev, 8), 7);
	assert_int_equal(ev[3], 2);
	assert_int_equal(ev[4], 6);
	assert_int_equal(ev[5], 4);
	assert_int_equal(ev[6], 5);
	flush(al, NULL);
	/* committed: 7, 8, 9 are evictable, 7 first */
	assert_int_equal(wr(al, 14), 3);
	assert_int_equal(al_txn_evicted(al, ev, 8), 1);
	assert_int_equal(ev[0], 7);
	al_free(al);
}

static void test_einval(void **state)
{
	struct al *al = al_create(7, 20, 10 * SPE + 100);
	struct al *big = mk(100, 1000);
	uint64_t dev = 10 * SPE + 100;

	(void)state;
	assert_non_null(al);
	assert_int_equal(al_begin_io(al, dev, 1), -EINVAL);
	assert_int_equal(al_begin_io(al, dev - 1, 2), -EINVAL);
	assert_int_equal(al_begin_io(al, 0, 0), -EINVAL);
	assert_int_equal(al_begin_io(al, UINT64_MAX, 2), -EINVAL);
	assert_int_equal(al_begin_io(al, 2, UINT64_MAX), -EINVAL);
	/* eight extents can never be hot at once in seven slots */
	assert_int_equal(al_begin_io(al, 0, 8 * SPE), -EINVAL);
	assert_false(al_txn_pending(al));
	assert_int_equal(al_nr_active(al), 0);
	assert_int_equal(al_begin_io(al, 0, 7 * SPE), 1);
	flush(al, NULL);
	/* the partial last extent */
	assert_int_equal(al_begin_io(al, dev - 100, 100), -EBUSY);
	al_complete_io(al, 0, SPE);
	assert_int_equal(al_begin_io(al, dev - 100, 100), 2);
	assert_int_equal(slot_of(al, 0), -1);

	/* nor more than one transaction's worth */
	assert_int_equal(al_begin_io(big, 0, (AL_UPDATES_PER_TXN + 1) * SPE),
			 -EINVAL);
	assert_int_equal(al_begin_io(big, 0, AL_UPDATES_PER_TXN * SPE), 1);
	al_free(al);
	al_free(big);
}

static void test_txn_failed(void **state)
{
	struct al *al = mk(7, 100);
	uint8_t b1[BS], b2[BS];
	uint32_t e, rb1, rb2, ev[8];

	(void)state;
	for (e = 0; e < 7; e++)
		assert_int_equal(wr(al, e), 1);
	flush(al, NULL);
	done(al, 2);
	assert_int_equal(wr(al, 20), 2); /* evicts 2 */
	assert_int_equal(al_txn_encode(al, b1, &rb1), 0);
	al_txn_failed(al);
	assert_false(al_txn_in_flight(al));
	assert_true(al_txn_pending(al));
	assert_int_equal(al_committed_seq(al), 1);
	/* its writers keep waiting for the same seq */
	assert_int_equal(wr(al, 20), 2);
	/* new work goes behind it */
	done(al, 3);
	assert_int_equal(wr(al, 21), 3);
	/* the retry is announced with its own evictions */
	assert_int_equal(al_txn_evicted(al, ev, 8), 1);
	assert_int_equal(ev[0], 2);
	/* and rewritten byte for byte to the same block */
	assert_int_equal(al_txn_encode(al, b2, &rb2), 0);
	assert_int_equal(rb2, rb1);
	assert_memory_equal(b1, b2, BS);
	al_txn_failed(al);
	assert_int_equal(al_txn_encode(al, b2, &rb2), 0);
	assert_memory_equal(b1, b2, BS);
	al_txn_committed(al);
	assert_int_equal(al_committed_seq(al), 2);
	assert_int_equal(wr(al, 20), 0);
	assert_int_equal(al_txn_evicted(al, ev, 8), 1);
	assert_int_equal(ev[0], 3);
	assert_int_equal(al_txn_encode(al, b2, &rb2), 0);
	assert_int_equal(be64_at(b2, 8), 3);
	assert_int_equal(rb2, (rb1 + 1) % al_ring_blocks(7));
	al_txn_committed(al);
	assert_int_equal(wr(al, 21), 0);
	al_free(al);
}

static void test_block_layout(void **state)
{
	struct al *al = al_create(7, 21, 100ull * 2 * SPE);
	struct al *wide = mk(1000, 5000);
	uint8_t b[BS], z[BS];
	uint32_t rb, e, crc, s5, s9, s, off;

	(void)state;
	assert_non_null(al);
	memset(z, 0, sizeof(z));
	assert_int_equal(al_begin_io(al, 5 * 2 * SPE, 8), 1);
	assert_int_equal(al_begin_io(al, 9 * 2 * SPE, 8), 1);
	assert_int_equal(al_txn_encode(al, b, &rb), 0);
	assert_memory_equal(b, "DUAL", 4);
	crc = be32_at(b, 4);
	put32_at(b, 4, 0);
	assert_int_equal(crc, crc32c(b, BS));
	put32_at(b, 4, crc);
	assert_int_equal(be64_at(b, 8), 1);
	assert_int_equal(be16_at(b, 16), 1); /* version */
	assert_int_equal(be16_at(b, 18), 2); /* updates */
	assert_int_equal(be16_at(b, 20), 21); /* extent shift */
	assert_int_equal(be16_at(b, 22), 7); /* window length */
	assert_int_equal(be32_at(b, 24), 7); /* slots */
	assert_int_equal(be32_at(b, 28), 0); /* window start */
	assert_int_equal(be64_at(b, 32), 0); /* follows nothing */
	assert_memory_equal(b + 40, z, 24); /* reserved */
	s5 = be32_at(b, 64) ^ key(1);
	assert_int_equal(be32_at(b, 68) ^ key(1), 5);
	s9 = be32_at(b, 72) ^ key(1);
	assert_int_equal(be32_at(b, 76) ^ key(1), 9);
	assert_int_equal(al_slot_extent(al, s5), 5);
	assert_int_equal(al_slot_extent(al, s9), 9);
	for (off = 80; off < 576; off += 4) /* unused updates: 0 ^ key */
		assert_int_equal(be32_at(b, off), key(1));
	for (s = 0; s < 7; s++)
		assert_int_equal(be32_at(b, 576 + 4 * s) ^ key(1),
				 al_slot_extent(al, s));
	for (off = 576 + 28; off < BS; off += 4)
		assert_int_equal(be32_at(b, off), key(1));
	al_txn_committed(al);
	/* the whole set fits the window: every block starts at slot 0 */
	assert_int_equal(al_begin_io(al, 11 * 2 * SPE, 8), 2);
	assert_int_equal(al_txn_encode(al, b, &rb), 0);
	assert_int_equal(be32_at(b, 28), 0);
	assert_int_equal(be64_at(b, 8), 2);
	assert_int_equal(be64_at(b, 32), 1); /* follows transaction 1 */
	al_free(al);

	/* 1000 slots: windows of 880 advance 0, 880, 760, ... */
	for (e = 0; e < 3; e++) {
		assert_int_equal(wr(wide, e), e + 1);
		assert_int_equal(al_txn_encode(wide, b, &rb), 0);
		assert_int_equal(be16_at(b, 22), 880);
		assert_int_equal(be32_at(b, 28), (e * 880) % 1000);
		assert_int_equal(rb, e % 3);
		al_txn_committed(wide);
	}
	al_free(wide);

	al_encode_empty(b);
	assert_memory_equal(b, z, BS);
}

/* ---- recovery ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64*: fixed seeds make every run the same */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static uint32_t rnd_below(uint32_t n)
{
	return (uint32_t)(rnd() % n);
}

static struct al *recovered(const struct al *like, const uint8_t *ring,
			    uint32_t n, int expect)
{
	struct al *al =
		al_create(al_nr_slots(like), al_extent_shift(like), UINT32_MAX);
	char why[256];

	assert_non_null(al);
	assert_int_equal(al_recover(al, ring, n, why, sizeof(why)), expect);
	return al;
}

static void assert_same_slots(const struct al *a, const struct al *b)
{
	uint32_t s;

	assert_int_equal(al_nr_slots(a), al_nr_slots(b));
	for (s = 0; s < al_nr_slots(a); s++)
		assert_int_equal(al_slot_extent(a, s), al_slot_extent(b, s));
	assert_int_equal(al_nr_active(a), al_nr_active(b));
}

static void roundtrip(uint32_t slots)
{
	uint32_t nr_ext = slots * 3, R = al_ring_blocks(slots), round, i;
	uint8_t *ring = calloc(R, BS), b1[BS], b2[BS];
	uint32_t *held = calloc(slots, sizeof(*held)), nheld = 0, rb1, rb2;
	struct al *al = mk(slots, nr_ext + 1), *al2;

	assert_non_null(ring);
	assert_non_null(held);
	for (round = 0; round < 40; round++) {
		uint32_t k = 1 + rnd_below(AL_UPDATES_PER_TXN);

		for (i = 0; i < k; i++) {
			uint32_t e = rnd_below(nr_ext);

			if (nheld < slots && wr(al, e) >= 0)
				held[nheld++] = e;
		}
		if (al_txn_pending(al))
			flush(al, ring);
		for (i = 0; i < nheld;) {
			if (rnd_below(5)) {
				done(al, held[i]);
				held[i] = held[--nheld];
			} else {
				i++;
			}
		}
		al2 = recovered(al, ring, R, 0);
		assert_same_slots(al, al2);
		assert_int_equal(al_committed_seq(al2), al_committed_seq(al));
		al_free(al2);
	}

	/* a recovered log continues the ring where the old one stopped */
	while (nheld)
		done(al, held[--nheld]);
	al2 = mk(slots, nr_ext + 1);
	assert_int_equal(al_recover(al2, ring, R, NULL, 0), 0);
	/* extent nr_ext was never written: cold in both */
	assert_int_equal(wr(al, nr_ext), al_committed_seq(al) + 1);
	assert_int_equal(wr(al2, nr_ext), al_committed_seq(al) + 1);
	assert_int_equal(al_txn_encode(al, b1, &rb1), 0);
	assert_int_equal(al_txn_encode(al2, b2, &rb2), 0);
	assert_int_equal(rb1, rb2);
	assert_int_equal(be64_at(b1, 8), be64_at(b2, 8));
	assert_int_equal(be32_at(b1, 28), be32_at(b2, 28)); /* window */
	al_free(al);
	al_free(al2);
	free(ring);
	free(held);
}

static void test_recover_roundtrip(void **state)
{
	(void)state;
	rng_state = 0x5eed0001;
	roundtrip(7);
	roundtrip(40);
	roundtrip(1000);
	roundtrip(2000);
}

/* Transactions 1..n over @slots slots, each making new extents hot:
 * blocks[i] is transaction i + 1, states[i] the slots after it. */
static void history(uint32_t slots, uint32_t n, uint8_t *blocks,
		    uint32_t *states)
{
	struct al *al = mk(slots, 100000);
	uint32_t i, j, rb, e = 0, k;

	for (i = 0; i < n; i++) {
		k = slots < 64 ? 3 : 64;
		for (j = 0; j < k; j++, e++) {
			assert_int_equal(wr(al, e), i + 1);
			done(al, e);
		}
		assert_int_equal(
			al_txn_encode(al, blocks + (size_t)i * BS, &rb), 0);
		al_txn_committed(al);
		for (j = 0; j < slots; j++)
			states[(size_t)i * slots + j] = al_slot_extent(al, j);
	}
	al_free(al);
}

static void assert_state(const struct al *al, const uint32_t *st)
{
	uint32_t s;

	for (s = 0; s < al_nr_slots(al); s++)
		assert_int_equal(al_slot_extent(al, s), st[s]);
}

static int recover_ring(uint32_t slots, const uint8_t *const *blks, uint32_t n,
			const uint32_t *expect, char *why, size_t why_len)
{
	struct al *al = mk(slots, 100000);
	uint8_t *ring = calloc(n, BS);
	uint32_t i;
	int ret;

	assert_non_null(ring);
	for (i = 0; i < n; i++)
		if (blks[i])
			memcpy(ring + (size_t)i * BS, blks[i], BS);
	ret = al_recover(al, ring, n, why, why_len);
	if (!ret && expect)
		assert_state(al, expect);
	if (ret) /* a refused ring leaves the log as it was */
		assert_int_equal(al_nr_active(al), 0);
	al_free(al);
	free(ring);
	return ret;
}

static void test_recover_torn_and_zero(void **state)
{
	uint8_t blocks[4 * BS], ring[2 * BS], blk[BS];
	uint32_t states[4 * 7], rb;
	struct al *al = mk(7, 100000);
	char why[256];

	(void)state;
	/* never written: empty, transaction 1 goes to block 0 */
	memset(ring, 0, sizeof(ring));
	assert_int_equal(al_recover(al, ring, 2, why, sizeof(why)), 0);
	assert_int_equal(al_nr_active(al), 0);
	assert_int_equal(al_committed_seq(al), 0);
	assert_int_equal(wr(al, 3), 1);
	assert_int_equal(al_txn_encode(al, blk, &rb), 0);
	assert_int_equal(rb, 0);
	al_free(al);

	history(7, 4, blocks, states);
	/* ring after 3 transactions: [3, 2]; 3 torn in several ways */
	memcpy(ring, blocks + 2 * BS, BS);
	memcpy(ring + BS, blocks + BS, BS);
	ring[100] ^= 1;
	al = mk(7, 100000);
	assert_int_equal(al_recover(al, ring, 2, why, sizeof(why)), 0);
	assert_state(al, states + 7);
	assert_int_equal(al_committed_seq(al), 2);
	/* the next transaction replaces the torn block, and does not reuse
	 * the seq in its header: a torn 3 must never become whole again */
	assert_int_equal(wr(al, 99999), 4);
	assert_int_equal(al_txn_encode(al, blk, &rb), 0);
	assert_int_equal(rb, 0);
	al_free(al);

	/* the first sector of transaction 3, the rest of transaction 1
	 * (which it was overwriting) */
	memcpy(ring, blocks + 2 * BS, 512);
	memcpy(ring + 512, blocks + 512, BS - 512);
	al = mk(7, 100000);
	assert_int_equal(al_recover(al, ring, 2, NULL, 0), 0);
	assert_state(al, states + 7);
	al_free(al);

	/* a good checksum but no magic: not a transaction */
	memcpy(ring, blocks + 2 * BS, BS);
	put32_at(ring, 0, 0x12345678);
	fix_crc(ring);
	al = mk(7, 100000);
	assert_int_equal(al_recover(al, ring, 2, NULL, 0), 0);
	assert_int_equal(al_committed_seq(al), 2);
	al_free(al);

	/* both blocks garbage: nothing recoverable, an empty set */
	for (rb = 0; rb < sizeof(ring); rb++)
		ring[rb] = (uint8_t)rnd();
	al = mk(7, 100000);
	assert_int_equal(al_recover(al, ring, 2, NULL, 0), 0);
	assert_int_equal(al_nr_active(al), 0);
	assert_int_equal(al_committed_seq(al), 0);
	al_free(al);
}

static void test_recover_refuses(void **state)
{
	uint8_t ring[2 * BS], bad[2 * BS];
	struct al *al = mk(7, 100), *t;
	char why[256];

	(void)state;
	memset(ring, 0, sizeof(ring));
	assert_int_equal(wr(al, 50), 1);
	flush(al, ring);

	t = mk(8, 100);
	assert_int_equal(al_recover(t, ring, 2, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "7 slots"));
	assert_int_equal(al_nr_active(t), 0);
	al_free(t);
	t = al_create(7, 21, 100 * SPE);
	assert_int_equal(al_recover(t, ring, 2, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "2^20"));
	al_free(t);

	/* extent 50 does not exist on a 10-extent device */
	t = mk(7, 10);
	assert_int_equal(al_recover(t, ring, 2, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "extent 50"));
	assert_int_equal(al_nr_active(t), 0);
	al_free(t);

	/* checksummed but impossible fields */
	t = mk(7, 100);
	memcpy(bad, ring, sizeof(bad));
	put32_at(bad, 64, 7 ^ key(1)); /* upd[0].slot */
	fix_crc(bad);
	assert_int_equal(al_recover(t, bad, 2, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "slot 7"));
	memcpy(bad, ring, sizeof(bad));
	bad[17] = 2; /* version */
	fix_crc(bad);
	assert_int_equal(al_recover(t, bad, 2, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "version 2"));
	memcpy(bad, ring, sizeof(bad));
	put32_at(bad, 12, 0); /* seq 0 */
	fix_crc(bad);
	assert_int_equal(al_recover(t, bad, 2, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "seq 0"));
	memcpy(bad, ring, sizeof(bad));
	put32_at(bad, 36, 1); /* follows itself */
	fix_crc(bad);
	assert_int_equal(al_recover(t, bad, 2, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "seq 1 after 1"));
	memcpy(bad, ring, sizeof(bad));
	put32_at(bad, 576 + 8, 100 ^ key(1)); /* slot 2: extent 100 of 100 */
	fix_crc(bad);
	assert_int_equal(al_recover(t, bad, 2, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "extent 100"));
	assert_int_equal(al_recover(t, ring, 1, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "too small"));
	assert_int_equal(al_nr_active(t), 0);
	assert_int_equal(al_committed_seq(t), 0);
	assert_int_equal(al_recover(t, ring, 2, why, sizeof(why)), 0);
	assert_int_equal(al_slot_extent(t, 0), 50);

	/* recovering under live references would lose them */
	assert_int_equal(wr(t, 50), 0);
	assert_int_equal(al_recover(t, ring, 2, why, sizeof(why)), -EBUSY);
	al_free(t);
	al_free(al);
}

static void test_recover_dup_and_gap(void **state)
{
	uint8_t *b = calloc(5, BS), *b2 = malloc(BS), *w = calloc(5, BS);
	uint32_t *st = calloc(5 * 2000, sizeof(*st));
	char why[256];

	(void)state;
	assert_non_null(b);
	assert_non_null(b2);
	assert_non_null(w);
	assert_non_null(st);
	history(7, 3, b, st);
	{
		/* an identical copy is harmless */
		const uint8_t *r1[] = { b, b + 2 * BS, b + 2 * BS };
		/* 7 slots fit one window: a gap is re-covered at once */
		const uint8_t *r2[] = { b, b + 2 * BS };
		/* the same seq with different contents is not */
		const uint8_t *r3[] = { b + BS, b2 };

		assert_int_equal(recover_ring(7, r1, 3, st + 14, why, 256), 0);
		assert_int_equal(recover_ring(7, r2, 2, st + 14, why, 256), 0);
		memcpy(b2, b + BS, BS);
		put32_at(b2, 576, 4242 ^ key(2));
		fix_crc(b2);
		assert_int_equal(recover_ring(7, r3, 2, NULL, why, 256),
				 -EUCLEAN);
		assert_non_null(strstr(why, "transaction 2"));
	}

	/* 2000 slots: windows of 880, a ring of 4 */
	history(2000, 5, w, st);
	{
		const uint8_t *full[] = { w + 4 * BS, w + BS, w + 2 * BS,
					  w + 3 * BS };
		const uint8_t *torn[] = { b2, w + BS, w + 2 * BS, w + 3 * BS };
		const uint8_t *early[] = { w, NULL, NULL, NULL };
		const uint8_t *gap[] = { w, w + BS, w + 3 * BS, w + 4 * BS };
		const uint8_t *lost[] = { NULL, w + BS, w + 2 * BS, NULL };

		assert_int_equal(recover_ring(2000, full, 4, st + 4 * 2000, why,
					      256),
				 0);
		/* 5 torn over 1: 2, 3 and 4 describe all 2000 slots */
		memcpy(b2, w + 4 * BS, BS / 2);
		memcpy(b2 + BS / 2, w + BS / 2, BS / 2);
		assert_int_equal(recover_ring(2000, torn, 4, st + 3 * 2000, why,
					      256),
				 0);
		assert_int_equal(recover_ring(2000, early, 4, st, why, 256), 0);
		/* 3 missing, 4 and 5 describe only 1760 slots */
		assert_int_equal(recover_ring(2000, gap, 4, NULL, why, 256),
				 -EUCLEAN);
		assert_non_null(strstr(why, "missing transaction 3"));
		assert_non_null(strstr(why, "slot 400"));
		/* 2 and 3 alone, and 1 gone: slots 1760.. are unknown */
		assert_int_equal(recover_ring(2000, lost, 4, NULL, why, 256),
				 -EUCLEAN);
		assert_non_null(strstr(why, "missing transaction 1"));
		assert_non_null(strstr(why, "slot 640"));
	}
	free(b);
	free(b2);
	free(w);
	free(st);
}

/*
 * The scenario the random simulation once found: transaction A is torn at
 * ring block p, the node restarts and writes B to p describing the same
 * state; B is torn too, landing only sectors that match A's. If B reused
 * A's seq, that rebuilt A whole: a block never written whole would be
 * recovered as the newest.
 */
static void test_recover_no_ghost(void **state)
{
	uint8_t ring[2 * BS], a[BS], b[BS], img[2 * BS];
	struct al *al = mk(7, 100), *al2 = mk(7, 100);
	uint32_t rb, off, e;

	(void)state;
	memset(ring, 0, sizeof(ring));
	assert_int_equal(wr(al, 5), 1);
	flush(al, ring);
	assert_int_equal(wr(al, 6), 2);
	assert_int_equal(al_txn_encode(al, a, &rb), 0);
	assert_int_equal(rb, 1);
	memcpy(ring + BS, a, 512); /* A's first sector only: torn */

	assert_int_equal(al_recover(al2, ring, 2, NULL, 0), 0);
	assert_int_equal(al_committed_seq(al2), 1);
	assert_int_equal(wr(al2, 6), 3);
	assert_int_equal(al_txn_encode(al2, b, &rb), 0);
	assert_int_equal(rb, 1);
	assert_int_equal(be64_at(b, 8), 3);
	assert_int_equal(be64_at(b, 32), 1);
	/* same state, same slot, same window as A ... */
	for (e = 0; e < 7; e++)
		assert_int_equal(be32_at(b, 576 + 4 * e) ^ key(3),
				 be32_at(a, 576 + 4 * e) ^ key(2));
	/* ... yet no word past the header is the same */
	for (off = 64; off < BS; off += 4)
		assert_int_not_equal(be32_at(a, off), be32_at(b, off));
	/* B torn over torn A: everything but A's first sector is B's */
	memcpy(img, ring, sizeof(img));
	memcpy(img + BS + 512, b + 512, BS - 512);
	al_free(al2);
	al2 = mk(7, 100);
	assert_int_equal(al_recover(al2, img, 2, NULL, 0), 0);
	assert_int_equal(al_committed_seq(al2), 1);
	assert_int_equal(slot_of(al2, 6), -1);
	al_free(al);
	al_free(al2);
}

/* A seq skipped after a torn block is bridged by prev_seq, not taken for
 * a missing transaction, even when one window does not cover the slots. */
static void test_recover_prev_chain(void **state)
{
	uint8_t *ring = calloc(4, BS), blk[BS];
	struct al *al = mk(2000, 10000), *al2 = mk(2000, 10000), *t;
	uint32_t e, rb, i;

	(void)state;
	assert_non_null(ring);
	for (e = 0; e < 64; e++)
		assert_int_equal(wr(al, e), 1);
	flush(al, ring);
	for (e = 64; e < 128; e++)
		assert_int_equal(wr(al, e), 2);
	assert_int_equal(al_txn_encode(al, blk, &rb), 0);
	memcpy(ring + (size_t)rb * BS, blk, BS / 2); /* torn */

	assert_int_equal(al_recover(al2, ring, 4, NULL, 0), 0);
	for (i = 0; i < 5; i++) {
		for (e = 64 + i * 64; e < 128 + i * 64; e++) {
			assert_int_equal(wr(al2, e), 3 + i);
			done(al2, e);
		}
		flush(al2, ring);
		/* ring: [1, 3], [1, 3, 4], [1, 3, 4, 5], [6, 3, 4, 5], ... */
		t = mk(2000, 10000);
		assert_int_equal(al_recover(t, ring, 4, NULL, 0), 0);
		assert_same_slots(al2, t);
		assert_int_equal(al_committed_seq(t), 3 + i);
		al_free(t);
	}
	al_free(al);
	al_free(al2);
	free(ring);
}

/*
 * ---- crash simulation ----
 *
 * A model of one primary: the data area in granules of GRAN sectors, the
 * in-memory and on-disk bitmaps as one byte per granule, the number of
 * issued-but-unfinished writes per granule, and the AL ring as real bytes.
 * A granule is "unsynced" (the replicas may differ) while a write to it is
 * issued and not finished, or while its in-memory bit is set (a write that
 * finished without the peer's ack). The test declares it in sync again by
 * clearing the bit (a resync). The invariant, checked after recovering a
 * fresh log from a copy of the ring at each crash point:
 *
 *	unsynced(g)  =>  disk_bm(g) || extent(g) in the recovered set
 *
 * The model also knows which transaction every ring block holds, so each
 * recovery is compared slot by slot with the newest intact transaction.
 */
#define GRAN 256u /* sectors per model granule (128 KiB) */
#define SIM_WRITES 48u /* outstanding writes */

enum sim_bug {
	SIM_OK,
	SIM_BUG_NO_PERSIST, /* skip persisting evicted extents' bits */
	SIM_BUG_EARLY_ISSUE, /* issue writes before their txn is durable */
};

enum sim_outcome {
	SIM_LAND, /* the block reached the disk whole */
	SIM_TORN, /* first half new, second half old, then an error */
	SIM_LOST, /* nothing reached the disk, an error */
};

struct sim_write {
	uint64_t sector, nr;
	uint64_t wait;
	bool issued;
};

struct sim {
	struct al *al;
	uint32_t slots, nr_ext, R, nr_gran;
	unsigned int shift;
	uint64_t dev;
	uint8_t *ring; /* the on-disk ring */
	uint64_t *blk_seq; /* transaction each ring block holds, 0: none */
	uint32_t *blk_state; /* slots after that transaction */
	uint32_t *snap; /* slots after the encoded transaction */
	uint64_t snap_seq;
	bool failed; /* the encoded transaction must be rewritten */
	bool landed; /* its last write reached the disk whole */
	struct al *scratch; /* recovered into at each check */
	uint8_t *mem_bm, *disk_bm, *hot;
	uint32_t *busy; /* issued writes per granule */
	struct sim_write w[SIM_WRITES];
	uint32_t nw;
	enum sim_bug bug;
	uint64_t max_nr; /* longest random write, sectors */
	bool thorough; /* tear at every sector, not just a few */
	uint64_t violations, checks, crashes, txns;
};

static uint32_t sim_ext_of(const struct sim *s, uint32_t g)
{
	return (uint32_t)(((uint64_t)g * GRAN) >> (s->shift - 9));
}

static void sim_init(struct sim *s, uint32_t slots, uint32_t nr_ext,
		     unsigned int shift, uint64_t short_by, enum sim_bug bug)
{
	memset(s, 0, sizeof(*s));
	s->slots = slots;
	s->nr_ext = nr_ext;
	s->shift = shift;
	s->dev = ((uint64_t)nr_ext << (shift - 9)) - short_by;
	s->nr_gran = (uint32_t)((s->dev + GRAN - 1) / GRAN);
	s->R = al_ring_blocks(slots);
	s->bug = bug;
	s->max_nr = 2048; /* 1 MiB */
	s->al = al_create(slots, shift, s->dev);
	s->scratch = al_create(slots, shift, s->dev);
	s->ring = calloc(s->R, BS);
	s->blk_seq = calloc(s->R, sizeof(*s->blk_seq));
	s->blk_state = calloc((size_t)s->R * slots, sizeof(uint32_t));
	s->snap = calloc(slots, sizeof(uint32_t));
	s->mem_bm = calloc(s->nr_gran, 1);
	s->disk_bm = calloc(s->nr_gran, 1);
	s->hot = calloc(nr_ext, 1);
	s->busy = calloc(s->nr_gran, sizeof(uint32_t));
	assert_non_null(s->al);
	assert_non_null(s->scratch);
	assert_true(s->ring && s->blk_seq && s->blk_state && s->snap &&
		    s->mem_bm && s->disk_bm && s->hot && s->busy);
}

static void sim_fini(struct sim *s)
{
	al_free(s->al);
	al_free(s->scratch);
	free(s->ring);
	free(s->blk_seq);
	free(s->blk_state);
	free(s->snap);
	free(s->mem_bm);
	free(s->disk_bm);
	free(s->hot);
	free(s->busy);
}

/*
 * Crash with the ring as in @img, where block @rb holds transaction @seq
 * with slots @st (rb == UINT32_MAX: the model's blocks as they are).
 * Recover into @al, compare with the model, check the invariant.
 */
static void sim_recover(struct sim *s, struct al *al, const uint8_t *img,
			uint32_t rb, uint64_t seq, const uint32_t *st)
{
	const uint32_t *want = NULL;
	uint64_t best = 0;
	char why[256];
	uint32_t b, i, e;
	int ret;

	ret = al_recover(al, img, s->R, why, sizeof(why));
	if (ret)
		fail_msg("recovery failed (%d): %s", ret, why);
	for (b = 0; b < s->R; b++) {
		uint64_t bs = b == rb ? seq : s->blk_seq[b];

		if (bs > best) {
			best = bs;
			want = b == rb ? st :
					 s->blk_state + (size_t)b * s->slots;
		}
	}
	assert_int_equal(al_committed_seq(al), best);
	for (i = 0; i < s->slots; i++)
		assert_int_equal(al_slot_extent(al, i), want ? want[i] : NONE);

	memset(s->hot, 0, s->nr_ext);
	for (i = 0; i < s->slots; i++) {
		e = al_slot_extent(al, i);
		if (e != NONE)
			s->hot[e] = 1;
	}
	for (i = 0; i < s->nr_gran; i++) {
		if ((s->busy[i] || s->mem_bm[i]) && !s->disk_bm[i] &&
		    !s->hot[sim_ext_of(s, i)])
			s->violations++;
	}
	s->checks++;
	if (s->bug == SIM_OK && s->violations)
		fail_msg(
			"granule unsynced but neither in the on-disk bitmap nor in the recovered AL (check %llu)",
			(unsigned long long)s->checks);
}

static void sim_check(struct sim *s, const uint8_t *img, uint32_t rb,
		      uint64_t seq, const uint32_t *st)
{
	sim_recover(s, s->scratch, img, rb, seq, st);
}

/* The node restarts from the ring @img: what the recovered AL names is
 * marked out of sync and persisted, as for a crashed primary. */
static void sim_crash(struct sim *s, const uint8_t *img, uint32_t rb,
		      uint64_t seq, const uint32_t *st)
{
	struct al *al = al_create(s->slots, s->shift, s->dev);
	uint32_t g;

	assert_non_null(al);
	sim_recover(s, al, img, rb, seq, st);
	if (img != s->ring)
		memcpy(s->ring, img, (size_t)s->R * BS);
	if (rb != UINT32_MAX) {
		s->blk_seq[rb] = seq;
		if (seq)
			memcpy(s->blk_state + (size_t)rb * s->slots, st,
			       s->slots * sizeof(uint32_t));
	}
	for (g = 0; g < s->nr_gran; g++) {
		s->mem_bm[g] = s->disk_bm[g] | s->hot[sim_ext_of(s, g)];
		s->disk_bm[g] = s->mem_bm[g];
		s->busy[g] = 0;
	}
	s->nw = 0;
	s->failed = s->landed = false;
	al_free(s->al);
	s->al = al;
	s->crashes++;
}

static void sim_issue(struct sim *s, struct sim_write *w)
{
	uint64_t g;

	w->issued = true;
	for (g = w->sector / GRAN; g <= (w->sector + w->nr - 1) / GRAN; g++)
		s->busy[g]++;
}

static void sim_write(struct sim *s, uint64_t sector, uint64_t nr)
{
	struct sim_write *w;
	int64_t n;

	if (s->nw == SIM_WRITES)
		return;
	n = al_begin_io(s->al, sector, nr);
	if (n == -EBUSY)
		return; /* a daemon would queue it; here it never happened */
	assert_true(n == 0 || (uint64_t)n > al_committed_seq(s->al));
	w = &s->w[s->nw++];
	w->sector = sector;
	w->nr = nr;
	w->wait = (uint64_t)n;
	w->issued = false;
	if (!n || s->bug == SIM_BUG_EARLY_ISSUE)
		sim_issue(s, w);
}

/* Write @i finished locally; @acked: the peer has it too. */
static void sim_complete(struct sim *s, uint32_t i, bool acked)
{
	struct sim_write *w = &s->w[i];
	uint64_t g;

	assert_true(w->issued);
	for (g = w->sector / GRAN; g <= (w->sector + w->nr - 1) / GRAN; g++) {
		s->busy[g]--;
		if (!acked)
			s->mem_bm[g] = 1;
	}
	al_complete_io(s->al, w->sector, w->nr);
	*w = s->w[--s->nw];
}

static void sim_persist_extent(struct sim *s, uint32_t e)
{
	uint64_t g0 = ((uint64_t)e << (s->shift - 9)) / GRAN;
	uint64_t g1 = ((uint64_t)(e + 1) << (s->shift - 9)) / GRAN;
	uint64_t g;

	for (g = g0; g < g1 && g < s->nr_gran; g++)
		s->disk_bm[g] = s->mem_bm[g];
}

/* The model of ring block @rb holding @img: new, old, or neither. */
static void sim_block_model(const struct sim *s, const uint8_t *img,
			    const uint8_t *new, uint32_t rb, uint64_t *seq,
			    const uint32_t **st)
{
	if (!memcmp(img, new, BS)) {
		*seq = s->snap_seq;
		*st = s->snap;
	} else if (!memcmp(img, s->ring + (size_t)rb * BS, BS)) {
		*seq = s->blk_seq[rb];
		*st = s->blk_state + (size_t)rb * s->slots;
	} else {
		*seq = 0;
		*st = NULL;
	}
}

/* Build in @img the ring with block @rb torn at byte @cut: the new bytes
 * first when @new_first, else the old ones. */
static void sim_tear(const struct sim *s, uint8_t *img, const uint8_t *blk,
		     uint32_t rb, size_t cut, bool new_first)
{
	uint8_t *b = img + (size_t)rb * BS;

	memcpy(img, s->ring, (size_t)s->R * BS);
	if (new_first)
		memcpy(b, blk, cut);
	else
		memcpy(b + cut, blk + cut, BS - cut);
}

/*
 * The metadata step of al.h: persist the evicted extents' bits, encode,
 * write the block (@out decides how that goes). Checks every crash point
 * on the way; with @crash_cut set, crashes instead with the block torn at
 * that byte.
 */
static void sim_md_write(struct sim *s, enum sim_outcome out, size_t crash_cut)
{
	static const size_t quick[] = { 16, 512, 2048 };
	uint32_t ev[AL_UPDATES_PER_TXN], rb, i;
	uint8_t blk[BS], *img = malloc((size_t)s->R * BS);
	const uint32_t *st;
	size_t n, cut;
	uint64_t seq;

	assert_non_null(img);
	n = al_txn_evicted(s->al, ev, AL_UPDATES_PER_TXN);
	assert_true(n <= AL_UPDATES_PER_TXN);
	for (i = 0; i < n; i++) {
		if (s->bug != SIM_BUG_NO_PERSIST)
			sim_persist_extent(s, ev[i]);
		if (s->thorough || i + 1 == n)
			sim_check(s, s->ring, UINT32_MAX, 0, NULL);
	}
	assert_int_equal(al_txn_encode(s->al, blk, &rb), 0);
	assert_true(rb < s->R);
	if (!s->failed) {
		/* nothing else is staged yet: the slots are its state */
		for (i = 0; i < s->slots; i++)
			s->snap[i] = al_slot_extent(s->al, i);
		s->snap_seq = be64_at(blk, 8);
		s->txns++;
	}
	assert_int_equal(be64_at(blk, 8), s->snap_seq);
	s->failed = false;

	if (crash_cut) {
		sim_tear(s, img, blk, rb, crash_cut, true);
		sim_block_model(s, img + (size_t)rb * BS, blk, rb, &seq, &st);
		sim_crash(s, img, rb, seq, st);
		free(img);
		return;
	}
	for (i = 0; i < (s->thorough ? 2 * BS / 512 : 2 * ARRAY_SIZE(quick));
	     i++) {
		if (s->thorough)
			cut = i / 2 ? (i / 2) * 512 : 16;
		else
			cut = quick[i / 2];
		sim_tear(s, img, blk, rb, cut, i % 2);
		sim_block_model(s, img + (size_t)rb * BS, blk, rb, &seq, &st);
		sim_check(s, img, rb, seq, st);
	}
	if (out != SIM_LOST) {
		sim_tear(s, img, blk, rb, out == SIM_TORN ? BS / 2 : BS, true);
		sim_block_model(s, img + (size_t)rb * BS, blk, rb, &seq, &st);
		memcpy(s->ring + (size_t)rb * BS, img + (size_t)rb * BS, BS);
		s->blk_seq[rb] = seq;
		if (seq)
			memcpy(s->blk_state + (size_t)rb * s->slots, st,
			       s->slots * sizeof(uint32_t));
	}
	s->landed = out == SIM_LAND;
	sim_check(s, s->ring, UINT32_MAX, 0, NULL);
	free(img);
}

/* The block write completed: @ok is what the device reported. */
static void sim_md_done(struct sim *s, bool ok)
{
	uint32_t i;

	assert_true(al_txn_in_flight(s->al));
	if (!ok || !s->landed) {
		al_txn_failed(s->al);
		s->failed = true;
		return;
	}
	al_txn_committed(s->al);
	for (i = 0; i < s->nw; i++)
		if (!s->w[i].issued && s->w[i].wait <= al_committed_seq(s->al))
			sim_issue(s, &s->w[i]);
	sim_check(s, s->ring, UINT32_MAX, 0, NULL);
}

/* One random event. */
static void sim_step(struct sim *s)
{
	uint32_t r = rnd_below(100), i;
	uint64_t sec, nr;

	if (r < 40) {
		sec = rnd() % s->dev;
		if (rnd_below(4) == 0) /* straddle an extent boundary */
			sec = ((sec >> (s->shift - 9)) << (s->shift - 9)) | 1;
		if (sec >= 64 && rnd_below(4) == 0)
			sec -= 64;
		if (sec >= s->dev)
			sec = s->dev - 1;
		nr = 1 + rnd() % s->max_nr;
		if (nr > s->dev - sec)
			nr = s->dev - sec;
		sim_write(s, sec, nr);
	} else if (r < 65) {
		for (i = 0; i < s->nw; i++) {
			uint32_t j = (i + rnd_below(s->nw)) % s->nw;

			if (s->w[j].issued) {
				sim_complete(s, j, rnd_below(2));
				break;
			}
		}
	} else if (r < 85) {
		if (al_txn_in_flight(s->al))
			sim_md_done(s, rnd_below(10) != 0);
		else if (al_txn_pending(s->al))
			sim_md_write(s,
				     r < 83 ? SIM_LAND :
				     r < 84 ? SIM_TORN :
					      SIM_LOST,
				     0);
	} else if (r < 95) {
		/* the peer caught up on a few granules */
		i = rnd_below(s->nr_gran);
		memset(s->mem_bm + i, 0,
		       (s->nr_gran - i) < 8 ? s->nr_gran - i : 8);
	} else if (r < 97) {
		memcpy(s->disk_bm, s->mem_bm, s->nr_gran);
	} else if (r < 98) {
		sim_check(s, s->ring, UINT32_MAX, 0, NULL);
	} else if (r < 99 && !al_txn_in_flight(s->al) &&
		   al_txn_pending(s->al)) {
		sim_md_write(s, SIM_TORN, 16 + rnd_below(BS - 32));
	} else if (r == 99) {
		sim_crash(s, s->ring, UINT32_MAX, 0, NULL);
	}
}

enum sop_code { W, WX, MD, MD_TORN, MD_LOST, OK, FAIL, DONE, ACK, SYNC, FLUSH };

struct sop {
	enum sop_code op;
	uint32_t e;
};

/* 7 slots over 12 extents (the last one short): evictions, a write while
 * a transaction is in flight, a write across two extents, every kind of
 * failed block write, resyncs, a bitmap flush, many ring wraps. */
static const struct sop script[] = {
	{ W, 0 },    { W, 1 }, { W, 2 },  { W, 3 }, { W, 4 },	 { W, 5 },
	{ W, 6 },    { MD },   { OK },	  { DONE }, { DONE },	 { ACK },
	{ W, 7 },    { W, 8 }, { MD },	  { W, 9 }, { OK },	 { MD },
	{ OK },	     { DONE }, { DONE },  { DONE }, { DONE },	 { WX, 9 },
	{ MD_TORN }, { FAIL }, { MD },	  { FAIL }, { MD_LOST }, { FAIL },
	{ MD },	     { OK },   { W, 0 },  { W, 1 }, { SYNC },	 { MD },
	{ OK },	     { ACK },  { ACK },	  { DONE }, { W, 11 },	 { FLUSH },
	{ MD },	     { OK },   { DONE },  { DONE }, { DONE },	 { DONE },
	{ DONE },    { W, 2 }, { W, 3 },  { W, 4 }, { MD },	 { W, 10 },
	{ OK },	     { MD },   { OK },	  { DONE }, { DONE },	 { ACK },
	{ W, 5 },    { W, 6 }, { WX, 7 }, { MD },   { OK },	 { DONE },
	{ DONE },    { DONE }, { DONE },  { DONE }, { SYNC },	 { W, 0 },
	{ MD },	     { OK },   { DONE },  { DONE }, { DONE },	 { W, 1 },
	{ W, 2 },    { W, 3 }, { MD },	  { OK },   { DONE },	 { DONE },
	{ W, 11 },   { W, 4 }, { MD },	  { OK },   { ACK },	 { DONE },
	{ DONE },
};

static void sim_op(struct sim *s, const struct sop *op)
{
	uint32_t i;

	switch (op->op) {
	case W:
		sim_write(s, (uint64_t)op->e * SPE + 64, 512);
		break;
	case WX: /* the last 8 sectors of e and the first 8 of e + 1 */
		sim_write(s, (uint64_t)(op->e + 1) * SPE - 8, 16);
		break;
	case MD:
	case MD_TORN:
	case MD_LOST:
		if (!al_txn_pending(s->al) || al_txn_in_flight(s->al))
			break;
		sim_md_write(s,
			     op->op == MD      ? SIM_LAND :
			     op->op == MD_TORN ? SIM_TORN :
						 SIM_LOST,
			     0);
		break;
	case OK:
	case FAIL:
		if (!al_txn_in_flight(s->al))
			break;
		sim_md_done(s, op->op == OK);
		break;
	case DONE:
	case ACK:
		for (i = 0; i < s->nw && !s->w[i].issued; i++)
			;
		if (i < s->nw)
			sim_complete(s, i, op->op == ACK);
		break;
	case SYNC:
		memset(s->mem_bm, 0, s->nr_gran);
		break;
	case FLUSH:
		memcpy(s->disk_bm, s->mem_bm, s->nr_gran);
		break;
	}
	sim_check(s, s->ring, UINT32_MAX, 0, NULL);
}

static void test_crash_every_step(void **state)
{
	const size_t n = ARRAY_SIZE(script);
	uint64_t checks = 0, crashes = 0;
	struct sim s;
	size_t k, i;
	int torn;

	(void)state;
	/* the whole script, tearing each block write at every sector */
	sim_init(&s, 7, 12, 20, 100, SIM_OK);
	s.thorough = true;
	for (i = 0; i < n; i++)
		sim_op(&s, &script[i]);
	assert_true(s.txns >= 11);
	assert_int_equal(s.violations, 0);
	sim_fini(&s);

	/* crash before step k, or during it when it writes a block; then
	 * the restarted node runs on and crashes again */
	for (k = 0; k <= n; k++) {
		for (torn = 0; torn < 2; torn++) {
			if (torn && (k == n || (script[k].op != MD &&
						script[k].op != MD_TORN &&
						script[k].op != MD_LOST)))
				continue;
			rng_state = 0xc0ffee00 + k;
			sim_init(&s, 7, 12, 20, 100, SIM_OK);
			s.thorough = true;
			for (i = 0; i < k; i++)
				sim_op(&s, &script[i]);
			if (torn &&
			    (!al_txn_pending(s.al) || al_txn_in_flight(s.al))) {
				sim_fini(&s);
				continue;
			}
			if (torn)
				sim_md_write(&s, SIM_TORN, BS / 2);
			else
				sim_crash(&s, s.ring, UINT32_MAX, 0, NULL);
			for (i = 0; i < 80; i++)
				sim_step(&s);
			sim_crash(&s, s.ring, UINT32_MAX, 0, NULL);
			assert_int_equal(s.violations, 0);
			checks += s.checks;
			crashes += s.crashes;
			sim_fini(&s);
		}
	}
	print_message(
		"crash-every-step: %llu recoveries checked, %llu restarts\n",
		(unsigned long long)checks, (unsigned long long)crashes);
}

/* Random geometries and event sequences; returns the violations seen. */
static uint64_t run_random(uint64_t seed, uint32_t iters, uint32_t steps,
			   enum sim_bug bug, uint64_t *checks)
{
	uint64_t violations = 0;
	struct sim s;
	uint32_t it, i;

	rng_state = seed;
	for (it = 0; it < iters; it++) {
		uint32_t slots = 7 + rnd_below(34);
		uint32_t ext = slots + 3 + rnd_below(2 * slots + 8);
		unsigned int shift = rnd_below(4) ? 20 : 21;
		uint64_t short_by = rnd_below(2) ? rnd_below(SPE) : 0;

		sim_init(&s, slots, ext, shift, short_by, bug);
		for (i = 0; i < steps; i++)
			sim_step(&s);
		sim_crash(&s, s.ring, UINT32_MAX, 0, NULL);
		violations += s.violations;
		*checks += s.checks;
		sim_fini(&s);
	}
	return violations;
}

static void test_crash_random(void **state)
{
	uint64_t checks = 0;
	struct sim s;
	uint32_t it, i;

	(void)state;
	assert_int_equal(run_random(0xa11ce, 3000, 150, SIM_OK, &checks), 0);

	/* More slots than one window holds: the ring is 3 or 4 blocks and
	 * recovery relies on windows continuing across restarts. Long
	 * writes fill the set quickly enough to evict. */
	rng_state = 0xb16;
	for (it = 0; it < 12; it++) {
		uint32_t slots = 881 + rnd_below(1000);

		sim_init(&s, slots, slots + 50 + rnd_below(300), 20, 0, SIM_OK);
		s.max_nr = 24 * SPE;
		for (i = 0; i < 400; i++)
			sim_step(&s);
		assert_true(s.crashes > 0);
		checks += s.checks;
		sim_fini(&s);
	}
	print_message("random: %llu recoveries checked\n",
		      (unsigned long long)checks);
}

/* The checker must notice a broken protocol, or it proves nothing. */
static void test_checker_catches_bugs(void **state)
{
	uint64_t checks = 0;

	(void)state;
	assert_true(run_random(0xbad1, 100, 150, SIM_BUG_NO_PERSIST, &checks) >
		    0);
	assert_true(run_random(0xbad2, 100, 150, SIM_BUG_EARLY_ISSUE, &checks) >
		    0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_ring_blocks),
		cmocka_unit_test(test_hot_write_costs_nothing),
		cmocka_unit_test(test_seq_semantics),
		cmocka_unit_test(test_ebusy_all_referenced),
		cmocka_unit_test(test_ebusy_pending_full),
		cmocka_unit_test(test_rollback_multi_extent),
		cmocka_unit_test(test_lru_victim),
		cmocka_unit_test(test_einval),
		cmocka_unit_test(test_txn_failed),
		cmocka_unit_test(test_block_layout),
		cmocka_unit_test(test_recover_roundtrip),
		cmocka_unit_test(test_recover_torn_and_zero),
		cmocka_unit_test(test_recover_refuses),
		cmocka_unit_test(test_recover_dup_and_gap),
		cmocka_unit_test(test_recover_no_ghost),
		cmocka_unit_test(test_recover_prev_chain),
		cmocka_unit_test(test_crash_every_step),
		cmocka_unit_test(test_crash_random),
		cmocka_unit_test(test_checker_catches_bugs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
