// SPDX-License-Identifier: MIT
/*
 * Dirty bitmap: geometry, rounding, iteration, page codec, changed-page
 * tracking, and a randomized comparison against a byte-per-granule model.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "bm.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)
#define SECT(bytes) ((bytes) >> 9)

/* 4 KiB granules over 200 full granules plus a 3-sector (1536-byte) tail. */
#define ODD_DEV 1603ull
#define ODD_BITS 201ull

static struct bm *mk(uint64_t dev_sectors, uint32_t gran)
{
	struct bm *bm = bm_create(dev_sectors, gran);

	assert_non_null(bm);
	return bm;
}

/* Every bit of the bitmap, as a list of indices, must equal @bits. */
static void assert_bits(const struct bm *bm, const uint64_t *bits, size_t n)
{
	uint64_t b;
	size_t i = 0;

	for (b = 0; b < bm_nr_bits(bm); b++) {
		bool want = i < n && bits[i] == b;

		if (bm_test_bit(bm, b) != want)
			fail_msg("bit %llu is %d, want %d",
				 (unsigned long long)b, !want, want);
		if (want)
			i++;
	}
	assert_int_equal(bm_count(bm), n);
}

static void clean_all_pages(struct bm *bm)
{
	uint64_t p;

	for (p = 0; p < bm_nr_pages(bm); p++)
		bm_page_mark_clean(bm, p);
	assert_int_equal(bm_next_changed_page(bm, 0), -ENOENT);
}

static void test_create_invalid(void **state)
{
	static const uint32_t bad_gran[] = {
		0,	  512,	    2048,     4095,
		4097,	  6144,	    3 * 4096, (1u << 20) + 4096,
		1u << 21, 1u << 31,
	};
	static const uint32_t good_gran[] = { 4096, 8192, 65536, 1u << 20 };
	struct bm *bm;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad_gran) / sizeof(bad_gran[0]); i++) {
		errno = 0;
		assert_null(bm_create(8, bad_gran[i]));
		assert_int_equal(errno, EINVAL);
		assert_int_equal(bm_disk_bytes_for(8, bad_gran[i]), 0);
	}
	errno = 0;
	assert_null(bm_create(0, 4096));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(bm_disk_bytes_for(0, 4096), 0);
	/* A device whose byte size does not fit in 64 bits is nonsense. */
	errno = 0;
	assert_null(bm_create(UINT64_MAX, 4096));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(bm_create(1ull << 55, 4096));
	assert_int_equal(errno, EINVAL);
	for (i = 0; i < sizeof(good_gran) / sizeof(good_gran[0]); i++) {
		bm = mk(1, good_gran[i]);
		assert_int_equal(bm_granularity(bm), good_gran[i]);
		assert_int_equal(bm_dev_sectors(bm), 1);
		assert_int_equal(bm_nr_bits(bm), 1);
		assert_int_equal(bm_count(bm), 0);
		bm_free(bm);
	}
	bm_free(NULL);
}

static void test_sizes(void **state)
{
	static const struct {
		uint64_t dev_sectors;
		uint32_t gran;
		uint64_t bits, pages;
	} t[] = {
		{ 1, 4096, 1, 1 },
		{ 8, 4096, 1, 1 },
		{ 9, 4096, 2, 1 },
		{ ODD_DEV, 4096, ODD_BITS, 1 },
		{ 2048 * 3 + 1, 1u << 20, 4, 1 },
		{ SECT(GiB), 4096, 262144, 8 },
		{ 8ull * 32768, 4096, 32768, 1 },
		{ 8ull * 32768 + 1, 4096, 32769, 2 },
		{ 16ull * 32768 * 2 - 15, 8192, 65536, 2 },
		{ SECT(TiB), 1u << 20, 1u << 20, 32 },
		{ SECT(TiB) + 1, 1u << 20, (1u << 20) + 1, 33 },
	};
	struct bm *bm;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		bm = mk(t[i].dev_sectors, t[i].gran);
		assert_int_equal(bm_nr_bits(bm), t[i].bits);
		assert_int_equal(bm_nr_pages(bm), t[i].pages);
		assert_int_equal(bm_disk_bytes(bm), t[i].pages * 4096);
		assert_int_equal(bm_disk_bytes_for(t[i].dev_sectors, t[i].gran),
				 t[i].pages * 4096);
		bm_free(bm);
	}
	/* Geometries computed without allocating them. */
	assert_int_equal(bm_disk_bytes_for(SECT(TiB), 4096), 32 * MiB);
	assert_int_equal(bm_disk_bytes_for(SECT(TiB) + 1, 4096),
			 32 * MiB + 4096);
	assert_int_equal(bm_disk_bytes_for(SECT(1024 * TiB), 4096), 32 * GiB);
	assert_int_equal(bm_disk_bytes_for(SECT(1024 * TiB), 1u << 20),
			 128 * MiB);
	/* The largest device whose byte size fits in 64 bits: 2^44 bits. */
	assert_int_equal(bm_disk_bytes_for(UINT64_MAX >> 9, 1u << 20),
			 1ull << 41);
	assert_int_equal(bm_disk_bytes_for(1ull << 55, 1u << 20), 0);
}

/* 1 TiB at 4 KiB granules: the 32 MiB bitmap the requirements size for. */
static void test_one_tib(void **state)
{
	uint64_t start, len, first, last, n, at = SECT(500 * GiB);
	struct timespec t0, t1;
	struct bm *bm = mk(SECT(TiB), 4096);
	int64_t p;

	(void)state;
	assert_int_equal(bm_nr_bits(bm), 1ull << 28);
	assert_int_equal(bm_nr_pages(bm), 8192);
	assert_int_equal(bm_disk_bytes(bm), 32 * MiB);
	assert_int_equal(bm_next_dirty(bm, 0, &start, &len), -ENOENT);

	assert_int_equal(bm_set_range(bm, at, SECT(GiB)), 262144);
	assert_int_equal(bm_count(bm), 262144);
	assert_int_equal(bm_dirty_bytes(bm), GiB);
	assert_int_equal(bm_next_dirty(bm, 0, &start, &len), 0);
	assert_int_equal(start, at);
	assert_int_equal(len, SECT(GiB));
	assert_int_equal(bm_next_dirty(bm, start + len, &start, &len), -ENOENT);
	assert_true(bm_test_range(bm, 0, SECT(TiB)));
	assert_false(bm_test_range(bm, 0, at));
	assert_false(
		bm_test_range(bm, at + SECT(GiB), SECT(TiB) - at - SECT(GiB)));

	/* 500 GiB / 128 MiB per page = page 4000; 1 GiB spans 8 pages. */
	bm_pages_of_range(bm, at, SECT(GiB), &first, &last);
	assert_int_equal(first, 4000);
	assert_int_equal(last, 4007);
	p = bm_next_changed_page(bm, 0);
	assert_int_equal(p, 4000);
	for (n = 0; p >= 0; p = bm_next_changed_page(bm, (uint64_t)p + 1)) {
		assert_int_equal(p, 4000 + n);
		assert_true(++n <= 8);
	}
	assert_int_equal(n, 8);

	/* The very last granule, found by a scan over 2^22 clean words. */
	assert_int_equal(bm_set_range(bm, SECT(TiB) - 1, 1), 1);
	assert_int_equal(bm_next_dirty(bm, at + SECT(GiB), &start, &len), 0);
	assert_int_equal(start, SECT(TiB) - 8);
	assert_int_equal(len, 8);

	assert_int_equal(bm_clear_range(bm, 0, SECT(TiB)), 262145);
	assert_int_equal(bm_count(bm), 0);

	/*
	 * bm_test_range runs per write: it must look only at the range, not
	 * scan the clean 32 MiB after it (which would take ~1 ms per call).
	 */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (n = 0; n < 10000; n++) {
		assert_false(bm_test_range(bm, n * 8, 8));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		assert_true(t1.tv_sec - t0.tv_sec < 3);
	}
	bm_set_all(bm);
	assert_int_equal(bm_count(bm), 1ull << 28);
	assert_int_equal(bm_dirty_bytes(bm), TiB);
	assert_int_equal(bm_next_dirty(bm, 12345, &start, &len), 0);
	assert_int_equal(start, 12344);
	assert_int_equal(len, SECT(TiB) - 12344);
	bm_clear_all(bm);
	assert_int_equal(bm_count(bm), 0);
	assert_int_equal(bm_dirty_bytes(bm), 0);
	bm_free(bm);
}

static void test_set_rounding(void **state)
{
	struct bm *bm = mk(ODD_DEV, 4096);

	(void)state;
	/* Sectors 7..8 touch granules 0 and 1. */
	assert_int_equal(bm_set_range(bm, 7, 2), 2);
	assert_int_equal(bm_set_range(bm, 8, 8), 0);
	assert_int_equal(bm_set_range(bm, 15, 1), 0);
	/* Straddles the word boundary: granules 63, 64, 65. */
	assert_int_equal(bm_set_range(bm, 63 * 8 + 4, 2 * 8 - 3), 3);
	/* The single sector in the partial last granule's last sector. */
	assert_int_equal(bm_set_range(bm, ODD_DEV - 1, 1), 1);
	{
		const uint64_t want[] = { 0, 1, 63, 64, 65, 200 };

		assert_bits(bm, want, 6);
	}

	/* Empty, past the end, overflowing: rejected, nothing changes. */
	assert_int_equal(bm_set_range(bm, 0, 0), -EINVAL);
	assert_int_equal(bm_set_range(bm, 1600, 4), -EINVAL);
	assert_int_equal(bm_set_range(bm, ODD_DEV, 1), -EINVAL);
	assert_int_equal(bm_set_range(bm, 0, ODD_DEV + 1), -EINVAL);
	assert_int_equal(bm_set_range(bm, UINT64_MAX, 2), -EINVAL);
	assert_int_equal(bm_set_range(bm, 1, UINT64_MAX), -EINVAL);
	assert_int_equal(bm_count(bm), 6);

	/* The whole device: all remaining bits. */
	assert_int_equal(bm_set_range(bm, 0, ODD_DEV), ODD_BITS - 6);
	assert_int_equal(bm_count(bm), ODD_BITS);
	bm_free(bm);
}

static void test_clear_rounding(void **state)
{
	struct bm *bm = mk(ODD_DEV, 4096);

	(void)state;
	bm_set_all(bm);
	assert_int_equal(bm_count(bm), ODD_BITS);
	/* [4, 12) covers no granule entirely; [4, 16) covers granule 1. */
	assert_int_equal(bm_clear_range(bm, 4, 8), 0);
	assert_int_equal(bm_clear_range(bm, 4, 12), 1);
	assert_false(bm_test_bit(bm, 1));
	assert_true(bm_test_bit(bm, 0));
	assert_true(bm_test_bit(bm, 2));
	/* Straddling the word boundary: exactly granules 63 and 64. */
	assert_int_equal(bm_clear_range(bm, 63 * 8, 16), 2);
	assert_int_equal(bm_clear_range(bm, 63 * 8 - 1, 18), 0);
	/* [81, 121) fully covers granules 11..14 only. */
	assert_int_equal(bm_clear_range(bm, 81, 40), 4);
	assert_true(bm_test_bit(bm, 10));
	assert_true(bm_test_bit(bm, 15));
	/* Part of the 3-sector tail granule: it may still differ. */
	assert_int_equal(bm_clear_range(bm, 1601, 2), 0);
	assert_int_equal(bm_clear_range(bm, 1600, 2), 0);
	assert_true(bm_test_bit(bm, 200));
	/* All of it counts as covering it, though it is shorter than 8. */
	assert_int_equal(bm_clear_range(bm, 1600, 3), 1);
	assert_false(bm_test_bit(bm, 200));
	/* From inside granule 198 to the end: granules 199 (and 200, clean). */
	assert_int_equal(bm_clear_range(bm, 198 * 8 + 1, ODD_DEV - 198 * 8 - 1),
			 1);
	assert_true(bm_test_bit(bm, 198));

	assert_int_equal(bm_clear_range(bm, 0, 0), -EINVAL);
	assert_int_equal(bm_clear_range(bm, 1600, 4), -EINVAL);
	assert_int_equal(bm_clear_range(bm, UINT64_MAX, 1), -EINVAL);
	assert_int_equal(bm_clear_range(bm, 8, UINT64_MAX - 4), -EINVAL);
	assert_int_equal(bm_count(bm), ODD_BITS - 9);
	assert_int_equal(bm_clear_range(bm, 0, ODD_DEV), ODD_BITS - 9);
	assert_int_equal(bm_count(bm), 0);

	/* A device of one partial granule. */
	bm_free(bm);
	bm = mk(3, 4096);
	assert_int_equal(bm_set_range(bm, 1, 1), 1);
	assert_int_equal(bm_clear_range(bm, 1, 2), 0);
	assert_int_equal(bm_clear_range(bm, 0, 2), 0);
	assert_int_equal(bm_clear_range(bm, 0, 3), 1);
	bm_free(bm);
}

static void test_test_range(void **state)
{
	struct bm *bm = mk(ODD_DEV, 4096);

	(void)state;
	assert_false(bm_test_range(bm, 0, ODD_DEV));
	assert_int_equal(bm_set_range(bm, 1602, 1), 1);
	assert_int_equal(bm_set_range(bm, 64 * 8, 1), 1);
	assert_true(bm_test_range(bm, 1600, 1));
	assert_true(bm_test_range(bm, 1599, 2));
	assert_false(bm_test_range(bm, 1599, 1));
	/* Out-of-range parts are clean rather than an error. */
	assert_true(bm_test_range(bm, 1602, 100));
	assert_true(bm_test_range(bm, 0, UINT64_MAX));
	assert_false(bm_test_range(bm, ODD_DEV, 5));
	assert_false(bm_test_range(bm, UINT64_MAX, 1));
	assert_false(bm_test_range(bm, 0, 0));
	/* Granule 64 is the first of the second word. */
	assert_true(bm_test_range(bm, 63 * 8, 9));
	assert_false(bm_test_range(bm, 63 * 8, 8));
	assert_false(bm_test_range(bm, 65 * 8, 1600 - 65 * 8));
	assert_true(bm_test_bit(bm, 64));
	assert_true(bm_test_bit(bm, 200));
	assert_false(bm_test_bit(bm, ODD_BITS));
	assert_false(bm_test_bit(bm, UINT64_MAX));
	bm_free(bm);
}

static void test_dirty_bytes(void **state)
{
	struct bm *bm = mk(ODD_DEV, 4096);

	(void)state;
	assert_int_equal(bm_dirty_bytes(bm), 0);
	assert_int_equal(bm_set_range(bm, 1601, 1), 1);
	assert_int_equal(bm_dirty_bytes(bm), 1536);
	assert_int_equal(bm_set_range(bm, 0, 1), 1);
	assert_int_equal(bm_dirty_bytes(bm), 4096 + 1536);
	assert_int_equal(bm_clear_range(bm, 1600, 3), 1);
	assert_int_equal(bm_dirty_bytes(bm), 4096);
	bm_set_all(bm);
	assert_int_equal(bm_dirty_bytes(bm), ODD_DEV * 512);
	bm_free(bm);

	/* 1 MiB granules, last one 1000 sectors long. */
	bm = mk(2048 * 70 + 1000, 1u << 20);
	bm_set_all(bm);
	assert_int_equal(bm_dirty_bytes(bm), (2048ull * 70 + 1000) * 512);
	assert_int_equal(bm_clear_range(bm, 0, 2048), 1);
	assert_int_equal(bm_dirty_bytes(bm), (2048ull * 69 + 1000) * 512);
	bm_free(bm);

	/* A whole number of granules: no correction. */
	bm = mk(8 * 100, 4096);
	assert_int_equal(bm_set_range(bm, 8 * 99, 8), 1);
	assert_int_equal(bm_set_range(bm, 0, 9), 2);
	assert_int_equal(bm_dirty_bytes(bm), 3 * 4096);
	bm_free(bm);
}

static void expect_extent(const struct bm *bm, uint64_t from, uint64_t start,
			  uint64_t len)
{
	uint64_t s = ~0ull, n = ~0ull;

	assert_int_equal(bm_next_dirty(bm, from, &s, &n), 0);
	assert_int_equal(s, start);
	assert_int_equal(n, len);
}

static void test_next_dirty(void **state)
{
	struct bm *bm = mk(ODD_DEV, 4096);
	uint64_t s, n, nr = 0, total = 0;

	(void)state;
	assert_int_equal(bm_next_dirty(bm, 0, &s, &n), -ENOENT);
	assert_int_equal(bm_set_range(bm, 3 * 8, 3 * 8), 3); /* 3..5 */
	assert_int_equal(bm_set_range(bm, 63 * 8, 4 * 8), 4); /* 63..66 */
	assert_int_equal(bm_set_range(bm, 128 * 8 - 1, 2), 2); /* 127..128 */
	assert_int_equal(bm_set_range(bm, 1602, 1), 1); /* 200 */

	expect_extent(bm, 0, 24, 24);
	expect_extent(bm, 48, 504, 32);
	expect_extent(bm, 536, 127 * 8, 16);
	expect_extent(bm, 129 * 8, 1600, 3); /* clipped to the device end */
	assert_int_equal(bm_next_dirty(bm, 1603, &s, &n), -ENOENT);
	assert_int_equal(bm_next_dirty(bm, UINT64_MAX, &s, &n), -ENOENT);
	/* From the middle of a run: the granule containing from_sector on. */
	expect_extent(bm, 64 * 8 + 3, 64 * 8, 3 * 8);
	expect_extent(bm, 66 * 8 + 7, 66 * 8, 8);
	expect_extent(bm, 1602, 1600, 3);
	expect_extent(bm, 4 * 8, 4 * 8, 16);

	/* The documented loop sees every extent once, in order. */
	for (s = 0; !bm_next_dirty(bm, s, &s, &n); s += n) {
		assert_true(++nr <= 4); /* fail, don't hang, if it gets stuck */
		total += n;
	}
	assert_int_equal(nr, 4);
	assert_int_equal(total, 24 + 32 + 16 + 3);

	/* Maximal: runs spanning whole words come back as one extent. */
	bm_clear_all(bm);
	assert_int_equal(bm_set_range(bm, 8, 8 * 190), 190);
	expect_extent(bm, 0, 8, 8 * 190);
	bm_set_all(bm);
	expect_extent(bm, 0, 0, ODD_DEV);
	expect_extent(bm, 1000, 1000, ODD_DEV - 1000);
	bm_free(bm);

	/* Exactly 128 bits: the run ends at the last word's last bit. */
	bm = mk(8 * 128, 4096);
	assert_int_equal(bm_set_range(bm, 8 * 120, 8 * 8), 8);
	expect_extent(bm, 0, 8 * 120, 8 * 8);
	bm_free(bm);
}

static void test_merge(void **state)
{
	uint64_t dev = 8ull * 32768 * 2 + 40; /* 3 pages, the last tiny */
	struct bm *a = mk(dev, 4096), *b = mk(dev, 4096), *c;

	(void)state;
	assert_int_equal(bm_set_range(a, 0, 8 * 70), 70);
	assert_int_equal(bm_set_range(b, 8 * 60, 8 * 20), 20);
	assert_int_equal(bm_set_range(b, dev - 1, 1), 1);
	clean_all_pages(a);
	assert_int_equal(bm_merge(a, b), 0);
	assert_int_equal(bm_count(a), 80 + 1);
	assert_int_equal(bm_count(b), 21);
	assert_true(bm_test_bit(a, 79));
	assert_false(bm_test_bit(a, 80));
	assert_true(bm_test_bit(a, bm_nr_bits(a) - 1));
	assert_true(bm_page_changed(a, 0));
	assert_false(bm_page_changed(a, 1));
	assert_true(bm_page_changed(a, 2));

	/* Merging a subset flips nothing and dirties no page. */
	clean_all_pages(a);
	assert_int_equal(bm_merge(a, b), 0);
	assert_int_equal(bm_count(a), 81);
	assert_int_equal(bm_next_changed_page(a, 0), -ENOENT);

	c = mk(dev + 1, 4096);
	assert_int_equal(bm_merge(a, c), -EINVAL);
	bm_free(c);
	c = mk(dev, 8192);
	assert_int_equal(bm_set_range(c, 0, dev), (int64_t)bm_nr_bits(c));
	assert_int_equal(bm_merge(a, c), -EINVAL);
	assert_int_equal(bm_count(a), 81);
	bm_free(c);
	bm_free(a);
	bm_free(b);
}

static void test_set_all_clear_all(void **state)
{
	uint64_t dev = 8ull * 32768 + 8 * 64 + 5; /* 2 pages, 513 words */
	struct bm *bm = mk(dev, 4096);
	unsigned char page[BM_PAGE_SIZE];

	(void)state;
	bm_set_all(bm);
	assert_int_equal(bm_count(bm), 32768 + 65);
	assert_int_equal(bm_next_changed_page(bm, 0), 0);
	assert_int_equal(bm_next_changed_page(bm, 1), 1);
	/* Bits past the end stay zero on disk. */
	bm_page_encode(bm, 1, page);
	assert_int_equal(page[0], 0xff);
	assert_int_equal(page[7], 0xff);
	assert_int_equal(page[8], 0x01);
	assert_int_equal(page[9], 0);
	assert_int_equal(page[BM_PAGE_SIZE - 1], 0);

	/* Nothing flips: nothing changes. */
	clean_all_pages(bm);
	bm_set_all(bm);
	assert_int_equal(bm_next_changed_page(bm, 0), -ENOENT);
	assert_int_equal(bm_clear_range(bm, 8 * 32768, 8), 1);
	assert_int_equal(bm_next_changed_page(bm, 0), 1);
	clean_all_pages(bm);
	bm_set_all(bm);
	assert_int_equal(bm_next_changed_page(bm, 0), 1);
	assert_int_equal(bm_next_changed_page(bm, 2), -ENOENT);

	bm_clear_all(bm);
	assert_int_equal(bm_count(bm), 0);
	assert_true(bm_page_changed(bm, 0));
	assert_true(bm_page_changed(bm, 1));
	clean_all_pages(bm);
	bm_clear_all(bm);
	assert_int_equal(bm_next_changed_page(bm, 0), -ENOENT);
	bm_free(bm);
}

static void test_page_layout_roundtrip(void **state)
{
	uint64_t dev = 8ull * 32768 * 2 + 8 * 100 + 3, b, p, count;
	struct bm *a = mk(dev, 4096), *b2 = mk(dev, 4096);
	unsigned char page[BM_PAGE_SIZE], again[BM_PAGE_SIZE];
	unsigned int seed = 7;

	(void)state;
	assert_int_equal(bm_nr_pages(a), 3);
	/* Bit i is bit i % 8 of byte i / 8, whatever the host's endianness. */
	assert_int_equal(bm_set_range(a, 9 * 8, 1), 1);
	assert_int_equal(bm_set_range(a, 64 * 8, 1), 1);
	assert_int_equal(bm_set_range(a, 32767ull * 8, 1), 1);
	bm_page_encode(a, 0, page);
	assert_int_equal(page[1], 0x02);
	assert_int_equal(page[8], 0x01);
	assert_int_equal(page[BM_PAGE_SIZE - 1], 0x80);
	for (b = 0; b < BM_PAGE_SIZE; b++)
		if (b != 1 && b != 8 && b != BM_PAGE_SIZE - 1)
			assert_int_equal(page[b], 0);

	/* Random content, every page through encode and decode. */
	for (b = 0; b < bm_nr_bits(a); b++)
		if (rand_r(&seed) % 3 == 0)
			bm_set_range(a, b * 8, 1);
	bm_mark_all_changed(b2);
	for (p = 0; p < bm_nr_pages(a); p++) {
		bm_page_encode(a, p, page);
		assert_int_equal(bm_page_decode(b2, p, page), 0);
		assert_false(bm_page_changed(b2, p));
		bm_page_encode(b2, p, again);
		assert_memory_equal(page, again, BM_PAGE_SIZE);
	}
	assert_int_equal(bm_count(b2), bm_count(a));
	for (b = 0; b < bm_nr_bits(a); b++)
		assert_int_equal(bm_test_bit(a, b), bm_test_bit(b2, b));
	/* The partial last page is padded with zeros after bit 100. */
	bm_page_encode(a, 2, page);
	for (b = 13; b < BM_PAGE_SIZE; b++)
		assert_int_equal(page[b], 0);
	assert_int_equal(page[12] & 0xe0, 0);

	/* Decode replaces: an all-zero page clears what was there. */
	memset(page, 0, sizeof(page));
	count = bm_count(b2);
	bm_page_encode(b2, 1, again);
	for (b = 0; b < BM_PAGE_SIZE; b++)
		count -= (uint64_t)__builtin_popcount(again[b]);
	assert_true(count < bm_count(b2));
	assert_int_equal(bm_page_decode(b2, 1, page), 0);
	assert_int_equal(bm_count(b2), count);
	assert_false(bm_test_range(b2, 8ull * 32768, 8ull * 32768));
	assert_int_equal(bm_page_decode(b2, 3, page), -EINVAL);
	bm_free(a);
	bm_free(b2);
}

static void check_rejected(struct bm *bm, uint64_t page, const void *bad)
{
	unsigned char before[BM_PAGE_SIZE], after[BM_PAGE_SIZE];
	uint64_t count = bm_count(bm), p;
	bool changed[8];

	for (p = 0; p < bm_nr_pages(bm); p++)
		changed[p] = bm_page_changed(bm, p);
	bm_page_encode(bm, page, before);
	assert_int_equal(bm_page_decode(bm, page, bad), -EUCLEAN);
	assert_int_equal(bm_page_merge(bm, page, bad), -EUCLEAN);
	bm_page_encode(bm, page, after);
	assert_memory_equal(before, after, BM_PAGE_SIZE);
	assert_int_equal(bm_count(bm), count);
	for (p = 0; p < bm_nr_pages(bm); p++)
		assert_int_equal(bm_page_changed(bm, p), changed[p]);
}

static void test_page_rejects_bits_past_end(void **state)
{
	/* 2 pages; 32768 + 70 bits: the last page has 2 words, 70 bits. */
	uint64_t dev = 8ull * (32768 + 70) - 2;
	struct bm *bm = mk(dev, 4096);
	unsigned char page[BM_PAGE_SIZE];

	(void)state;
	assert_int_equal(bm_set_range(bm, 0, 8), 1);
	assert_int_equal(bm_set_range(bm, 8 * 32768, 8 * 3), 3);
	clean_all_pages(bm);

	/* Bit 70 of page 1: just past the last bit, in the last word. */
	bm_page_encode(bm, 1, page);
	page[8] |= 0x40;
	check_rejected(bm, 1, page);
	/* Bit 69 is the last real bit and is accepted. */
	page[8] = 0x20;
	assert_int_equal(bm_page_merge(bm, 1, page), 0);
	assert_true(bm_test_bit(bm, 32768 + 69));
	assert_true(bm_page_changed(bm, 1));
	/* A bit in a padding word after the last word. */
	memset(page, 0, sizeof(page));
	page[100] = 0x10;
	check_rejected(bm, 1, page);
	page[100] = 0;
	page[BM_PAGE_SIZE - 1] = 0x80;
	check_rejected(bm, 1, page);
	assert_int_equal(bm_count(bm), 5);
	bm_free(bm);

	/* A geometry that ends exactly on a word but mid-page. */
	bm = mk(8 * 128, 4096);
	memset(page, 0, sizeof(page));
	page[15] = 0x80;
	assert_int_equal(bm_page_decode(bm, 0, page), 0);
	assert_int_equal(bm_count(bm), 1);
	page[16] = 0x01;
	check_rejected(bm, 0, page);
	bm_free(bm);
}

static void test_page_merge(void **state)
{
	uint64_t dev = 8ull * 32768 * 2;
	struct bm *bm = mk(dev, 4096), *peer = mk(dev, 4096);
	unsigned char page[BM_PAGE_SIZE];

	(void)state;
	assert_int_equal(bm_set_range(bm, 0, 8 * 10), 10);
	assert_int_equal(bm_set_range(peer, 8 * 5, 8 * 10), 10);
	assert_int_equal(bm_set_range(peer, 8 * 40000, 8), 1);
	clean_all_pages(bm);
	/* Page 0 adds granules 10..14; page 1 adds 40000. */
	bm_page_encode(peer, 0, page);
	assert_int_equal(bm_page_merge(bm, 0, page), 0);
	assert_int_equal(bm_count(bm), 15);
	assert_true(bm_page_changed(bm, 0));
	assert_false(bm_page_changed(bm, 1));
	bm_page_encode(peer, 1, page);
	assert_int_equal(bm_page_merge(bm, 1, page), 0);
	assert_int_equal(bm_count(bm), 16);
	assert_true(bm_test_bit(bm, 40000));
	assert_true(bm_page_changed(bm, 1));
	/* Again: nothing new, nothing changed; bits are only added. */
	clean_all_pages(bm);
	bm_page_encode(peer, 0, page);
	assert_int_equal(bm_page_merge(bm, 0, page), 0);
	memset(page, 0, sizeof(page));
	assert_int_equal(bm_page_merge(bm, 1, page), 0);
	assert_int_equal(bm_count(bm), 16);
	assert_int_equal(bm_next_changed_page(bm, 0), -ENOENT);
	assert_int_equal(bm_page_merge(bm, 2, page), -EINVAL);
	bm_free(bm);
	bm_free(peer);
}

static void test_changed_pages(void **state)
{
	/* 5 pages of 8 KiB granules: 32768 granules = 512 MiB per page. */
	uint64_t pg = 16ull * 32768, dev = pg * 4 + 100, first, last;
	struct bm *bm = mk(dev, 8192);

	(void)state;
	assert_int_equal(bm_nr_pages(bm), 5);
	assert_int_equal(bm_next_changed_page(bm, 0), -ENOENT);
	assert_false(bm_page_changed(bm, 0));
	bm_mark_all_changed(bm);
	assert_int_equal(bm_next_changed_page(bm, 0), 0);
	assert_int_equal(bm_next_changed_page(bm, 4), 4);
	assert_int_equal(bm_next_changed_page(bm, 5), -ENOENT);
	assert_false(bm_page_changed(bm, 5));
	bm_page_mark_clean(bm, 0);
	bm_page_mark_clean(bm, 2);
	bm_page_mark_clean(bm, 99);
	assert_int_equal(bm_next_changed_page(bm, 0), 1);
	assert_int_equal(bm_next_changed_page(bm, 2), 3);
	clean_all_pages(bm);

	/* A range across the page 1/2 boundary dirties both, and only those. */
	assert_int_equal(bm_set_range(bm, pg * 2 - 1, 2), 2);
	assert_int_equal(bm_next_changed_page(bm, 0), 1);
	assert_int_equal(bm_next_changed_page(bm, 2), 2);
	assert_int_equal(bm_next_changed_page(bm, 3), -ENOENT);
	bm_pages_of_range(bm, pg * 2 - 1, 2, &first, &last);
	assert_int_equal(first, 1);
	assert_int_equal(last, 2);
	/* Clearing an already clean granule, or less than one: no change. */
	clean_all_pages(bm);
	assert_int_equal(bm_clear_range(bm, pg * 3, 16), 0);
	assert_int_equal(bm_clear_range(bm, pg * 2, 15), 0);
	assert_int_equal(bm_set_range(bm, pg * 2, 1), 0);
	assert_int_equal(bm_next_changed_page(bm, 0), -ENOENT);
	assert_int_equal(bm_clear_range(bm, pg * 2, 16), 1);
	assert_int_equal(bm_next_changed_page(bm, 0), 2);
	assert_int_equal(bm_next_changed_page(bm, 3), -ENOENT);

	bm_pages_of_range(bm, 0, dev, &first, &last);
	assert_int_equal(first, 0);
	assert_int_equal(last, 4);
	bm_pages_of_range(bm, pg * 4 - 1, 1000, &first, &last); /* clipped */
	assert_int_equal(first, 3);
	assert_int_equal(last, 4);
	bm_pages_of_range(bm, pg, pg, &first, &last);
	assert_int_equal(first, 1);
	assert_int_equal(last, 1);
	bm_pages_of_range(bm, dev, 8, &first,
			  &last); /* nothing on the device */
	assert_true(first > last);
	bm_pages_of_range(bm, 0, 0, &first, &last);
	assert_true(first > last);
	bm_free(bm);
}

/* ---- randomized comparison against a byte-per-granule model ------------ */

/*
 * The model states the rules directly, granule by granule: granule i spans
 * sectors [i * gs, min((i + 1) * gs, dev)); setting marks it if the range
 * overlaps it, clearing only if the range contains all of it.
 */
struct model {
	uint64_t dev, gs, nbits, npages, count;
	uint8_t *bit;
	uint8_t *changed; /* per page, since the last op */
};

static uint64_t rng_state;

/* splitmix64: the same sequence everywhere, so a failure reproduces. */
static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

static uint64_t gran_start(const struct model *m, uint64_t i)
{
	return i * m->gs;
}

static uint64_t gran_end(const struct model *m, uint64_t i)
{
	uint64_t e = (i + 1) * m->gs;

	return e < m->dev ? e : m->dev;
}

static uint64_t model_set(struct model *m, uint64_t s, uint64_t n)
{
	uint64_t i, flips = 0;

	for (i = 0; i < m->nbits; i++) {
		if (gran_end(m, i) <= s || gran_start(m, i) >= s + n)
			continue;
		if (!m->bit[i]) {
			m->bit[i] = 1;
			m->changed[i / BM_BITS_PER_PAGE] = 1;
			flips++;
		}
	}
	m->count += flips;
	return flips;
}

static uint64_t model_clear(struct model *m, uint64_t s, uint64_t n)
{
	uint64_t i, flips = 0;

	for (i = 0; i < m->nbits; i++) {
		if (gran_start(m, i) < s || gran_end(m, i) > s + n)
			continue;
		if (m->bit[i]) {
			m->bit[i] = 0;
			m->changed[i / BM_BITS_PER_PAGE] = 1;
			flips++;
		}
	}
	m->count -= flips;
	return flips;
}

static bool model_test(const struct model *m, uint64_t s, uint64_t n)
{
	uint64_t i;

	for (i = 0; i < m->nbits; i++)
		if (m->bit[i] && gran_end(m, i) > s && gran_start(m, i) < s + n)
			return true;
	return false;
}

static int model_next(const struct model *m, uint64_t from, uint64_t *start,
		      uint64_t *len)
{
	uint64_t i, j;

	for (i = 0; i < m->nbits; i++)
		if (m->bit[i] && gran_end(m, i) > from)
			break;
	if (i == m->nbits)
		return -ENOENT;
	for (j = i; j < m->nbits && m->bit[j]; j++)
		;
	*start = gran_start(m, i);
	*len = gran_end(m, j - 1) - *start;
	return 0;
}

static uint64_t model_dirty_bytes(const struct model *m)
{
	uint64_t i, bytes = 0;

	for (i = 0; i < m->nbits; i++)
		if (m->bit[i])
			bytes += (gran_end(m, i) - gran_start(m, i)) * 512;
	return bytes;
}

struct ctx {
	uint64_t dev_sectors;
	uint32_t gran;
	uint64_t seed;
	unsigned int op;
	const char *what;
};

#define CHECK_EQ(c, a, b)                                                  \
	do {                                                               \
		uint64_t a_ = (uint64_t)(a), b_ = (uint64_t)(b);           \
		if (a_ != b_)                                              \
			fail_msg("dev %llu gran %u seed %llu op %u (%s): " \
				 "%s = %llu, model %llu",                  \
				 (unsigned long long)(c)->dev_sectors,     \
				 (c)->gran, (unsigned long long)(c)->seed, \
				 (c)->op, (c)->what, #a,                   \
				 (unsigned long long)a_,                   \
				 (unsigned long long)b_);                  \
	} while (0)

/* The whole bitmap, through its on-disk encoding, bit by bit. */
static void compare_all(const struct ctx *c, const struct bm *bm,
			const struct model *m)
{
	unsigned char page[BM_PAGE_SIZE];
	uint64_t p, i, nr;

	for (p = 0; p < m->npages; p++) {
		bm_page_encode(bm, p, page);
		nr = m->nbits - p * BM_BITS_PER_PAGE;
		nr = nr < BM_BITS_PER_PAGE ? nr : BM_BITS_PER_PAGE;
		for (i = 0; i < nr; i++)
			CHECK_EQ(c, page[i / 8] >> (i % 8) & 1,
				 m->bit[p * BM_BITS_PER_PAGE + i]);
		/* Padding after the last bit: zero, byte-wise for speed. */
		for (; i % 8; i++)
			CHECK_EQ(c, page[i / 8] >> (i % 8) & 1, 0);
		for (i /= 8; i < BM_PAGE_SIZE; i++)
			CHECK_EQ(c, page[i], 0);
	}
	CHECK_EQ(c, bm_count(bm), m->count);
	CHECK_EQ(c, bm_dirty_bytes(bm), model_dirty_bytes(m));
	for (p = 0; p < m->npages; p++)
		CHECK_EQ(c, bm_page_changed(bm, p), m->changed[p]);
}

/* Ranges biased towards the edges where rounding bugs live. */
static void gen_range(const struct model *m, uint64_t *s, uint64_t *n)
{
	uint64_t b, room;

	switch (rnd_below(5)) {
	case 0: /* short, anywhere */
		*s = rnd_below(m->dev);
		room = m->dev - *s;
		*n = 1 + rnd_below(room < 3 * m->gs ? room : 3 * m->gs);
		return;
	case 1: /* on or next to granule boundaries, a few granules long */
		b = rnd_below(m->nbits);
		*s = b * m->gs;
		if (rnd_below(3) == 0 && *s)
			*s -= 1 + rnd_below(m->gs - 1);
		if (rnd_below(3) == 0)
			*s += rnd_below(m->gs);
		if (*s >= m->dev)
			*s = m->dev - 1;
		*n = (1 + rnd_below(8)) * m->gs;
		if (rnd_below(2))
			*n += rnd_below(3) - 1;
		break;
	case 2: /* around a 64-bit word boundary */
		b = rnd_below(m->nbits / 64 + 1) * 64;
		b = b + 3 > m->nbits ? m->nbits - 1 : b;
		b = b >= 2 ? b - rnd_below(3) : b;
		*s = b * m->gs + (rnd_below(2) ? rnd_below(m->gs) : 0);
		if (*s >= m->dev)
			*s = m->dev - 1;
		*n = 1 + rnd_below(4 * m->gs);
		break;
	case 3: /* up to the device end */
		*s = rnd_below(m->dev);
		*n = m->dev - *s;
		return;
	default: /* anything */
		*s = rnd_below(m->dev);
		*n = 1 + rnd_below(m->dev - *s);
		return;
	}
	if (!*n)
		*n = 1;
	if (*n > m->dev - *s)
		*n = m->dev - *s;
}

static void random_run(uint64_t dev_sectors, uint32_t gran, uint64_t seed,
		       unsigned int nr_ops)
{
	struct ctx c = { dev_sectors, gran, seed, 0, "create" };
	struct bm *bm = mk(dev_sectors, gran);
	struct model m = { .dev = dev_sectors, .gs = gran / 512 };
	unsigned char page[BM_PAGE_SIZE];
	uint64_t s, n, ms, mn, p, flips;
	unsigned int set_flips = 0, clear_flips = 0, extents = 0;
	int ret, mret;

	m.nbits = (dev_sectors + m.gs - 1) / m.gs;
	m.npages = (m.nbits + BM_BITS_PER_PAGE - 1) / BM_BITS_PER_PAGE;
	m.bit = calloc(m.nbits, 1);
	m.changed = calloc(m.npages, 1);
	assert_non_null(m.bit);
	assert_non_null(m.changed);
	CHECK_EQ(&c, bm_nr_bits(bm), m.nbits);
	CHECK_EQ(&c, bm_nr_pages(bm), m.npages);
	rng_state = seed;

	for (c.op = 0; c.op < nr_ops; c.op++) {
		unsigned int kind = (unsigned int)rnd_below(200);

		/* Changed flags are compared per op: start each op clean. */
		for (p = 0; p < m.npages; p++)
			bm_page_mark_clean(bm, p);
		memset(m.changed, 0, m.npages);
		gen_range(&m, &s, &n);

		if (kind < 70) {
			c.what = "set";
			flips = model_set(&m, s, n);
			CHECK_EQ(&c, bm_set_range(bm, s, n), flips);
			set_flips += flips > 0;
		} else if (kind < 130) {
			c.what = "clear";
			flips = model_clear(&m, s, n);
			CHECK_EQ(&c, bm_clear_range(bm, s, n), flips);
			clear_flips += flips > 0;
		} else if (kind < 150) {
			c.what = "test_range";
			/* Ranges past the end too: the device part decides. */
			if (rnd_below(4) == 0)
				n += rnd_below(3 * m.gs);
			CHECK_EQ(&c, bm_test_range(bm, s, n),
				 model_test(&m, s, n));
		} else if (kind < 175) {
			c.what = "next_dirty";
			mret = model_next(&m, s, &ms, &mn);
			ret = bm_next_dirty(bm, s, &s, &n);
			CHECK_EQ(&c, ret, mret);
			if (!ret) {
				CHECK_EQ(&c, s, ms);
				CHECK_EQ(&c, n, mn);
				extents++;
			}
		} else if (kind < 185) {
			c.what = "test_bit";
			p = rnd_below(m.nbits + 2);
			CHECK_EQ(&c, bm_test_bit(bm, p),
				 p < m.nbits ? m.bit[p] : 0);
		} else if (kind < 192) {
			c.what = "invalid range";
			s = rnd_below(m.dev + 2);
			n = s < m.dev ? m.dev - s + 1 + rnd_below(5) : 1;
			if (rnd_below(4) == 0)
				n = 0;
			CHECK_EQ(&c, bm_set_range(bm, s, n), -EINVAL);
			CHECK_EQ(&c, bm_clear_range(bm, s, n), -EINVAL);
		} else if (kind < 196) {
			c.what = "page round trip";
			p = rnd_below(m.npages);
			bm_page_encode(bm, p, page);
			CHECK_EQ(&c, bm_page_decode(bm, p, page), 0);
		} else if (kind < 198) {
			c.what = "full iteration";
			p = 0;
			for (s = 0; !bm_next_dirty(bm, s, &s, &n); s += n) {
				/* Bounded, so that a stuck iterator fails. */
				CHECK_EQ(&c, ++p <= m.nbits, 1);
				CHECK_EQ(&c, model_next(&m, s, &ms, &mn), 0);
				CHECK_EQ(&c, s, ms);
				CHECK_EQ(&c, n, mn);
			}
			CHECK_EQ(&c, model_next(&m, s, &ms, &mn), -ENOENT);
		} else if (kind == 198) {
			c.what = "set_all";
			bm_set_all(bm);
			model_set(&m, 0, m.dev);
		} else {
			c.what = "clear_all";
			bm_clear_all(bm);
			model_clear(&m, 0, m.dev);
		}
		compare_all(&c, bm, &m);
	}
	/* The run exercised real flips and found real extents. */
	c.what = "coverage";
	CHECK_EQ(&c, set_flips > nr_ops / 20, 1);
	CHECK_EQ(&c, clear_flips > nr_ops / 20, 1);
	CHECK_EQ(&c, extents > nr_ops / 40, 1);
	free(m.bit);
	free(m.changed);
	bm_free(bm);
}

static void test_random_model(void **state)
{
	static const struct {
		uint64_t dev_sectors;
		uint32_t gran;
		unsigned int ops;
	} g[] = {
		{ 1, 4096, 2000 }, /* one partial granule */
		{ 8, 4096, 2000 }, /* one whole granule */
		{ 13, 4096, 2000 }, /* two, the last partial */
		{ 24, 4096, 2000 }, /* three */
		{ 17, 4096, 2000 }, /* three, 1-sector tail */
		{ 1000, 4096, 5000 }, /* 125 bits, two words */
		{ 8 * 128, 4096, 5000 }, /* exactly two words */
		{ 16 * 190 + 7, 8192, 5000 }, /* odd, 8 KiB granules */
		{ 128 * 300 + 77, 65536, 5000 }, /* odd, 64 KiB granules */
		{ 2048 * 70 + 1000, 1u << 20, 5000 }, /* 1 MiB, long tail */
		{ 8ull * 40000 + 3, 4096, 1500 }, /* two pages */
		{ 8ull * 32768 * 3, 4096, 600 }, /* exactly three pages */
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(g) / sizeof(g[0]); i++)
		random_run(g[i].dev_sectors, g[i].gran, 0x5eed0000 + i,
			   g[i].ops);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_invalid),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_one_tib),
		cmocka_unit_test(test_set_rounding),
		cmocka_unit_test(test_clear_rounding),
		cmocka_unit_test(test_test_range),
		cmocka_unit_test(test_dirty_bytes),
		cmocka_unit_test(test_next_dirty),
		cmocka_unit_test(test_merge),
		cmocka_unit_test(test_set_all_clear_all),
		cmocka_unit_test(test_page_layout_roundtrip),
		cmocka_unit_test(test_page_rejects_bits_past_end),
		cmocka_unit_test(test_page_merge),
		cmocka_unit_test(test_changed_pages),
		cmocka_unit_test(test_random_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
