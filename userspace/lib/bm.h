/* SPDX-License-Identifier: MIT */
/*
 * bm — the dirty (out-of-sync) bitmap: one bit per granule of the data area.
 *
 * A set bit means "the two replicas may differ somewhere in this granule".
 * Memory is exactly one bit per granule (rounded up to 64-bit words) plus one
 * bit per 4 KiB bitmap page to remember which pages changed since they were
 * last persisted: 1 TiB at 4 KiB granularity is 32 MiB + 1 KiB.
 *
 * Rounding, as DRBD does it:
 *  - setting a sector range marks every granule the range touches (outward);
 *  - clearing marks clean only the granules the range covers entirely
 *    (inward), because a partially covered granule may still differ in the
 *    part that was not copied. The last granule of a device whose size is
 *    not a multiple of the granularity counts as entirely covered when the
 *    range reaches the device end.
 *
 * On disk a page is 4096 bytes; bit i of the page is bit (i % 8) of byte
 * (i / 8), i.e. little-endian 64-bit words. Bits past the device end are 0.
 *
 * Pure logic: no I/O. Persisting pages is the caller's job (mdio).
 */
#ifndef DUET_BM_H
#define DUET_BM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BM_PAGE_SIZE 4096u
#define BM_BITS_PER_PAGE (BM_PAGE_SIZE * 8u)
#define BM_GRAN_MIN 4096u
#define BM_GRAN_MAX (1u << 20)
#define BM_GRAN_DEFAULT 4096u

struct bm;

/*
 * Create an all-clean bitmap for a data area of @dev_sectors 512-byte
 * sectors with @granularity bytes per bit (a power of two in
 * [BM_GRAN_MIN, BM_GRAN_MAX]). Returns NULL with errno EINVAL or ENOMEM.
 */
struct bm *bm_create(uint64_t dev_sectors, uint32_t granularity);
void bm_free(struct bm *bm);

uint64_t bm_dev_sectors(const struct bm *bm);
uint32_t bm_granularity(const struct bm *bm);
uint64_t bm_nr_bits(const struct bm *bm);
/* Number of 4 KiB pages the on-disk bitmap occupies. */
uint64_t bm_nr_pages(const struct bm *bm);
/* On-disk size in bytes: bm_nr_pages * BM_PAGE_SIZE. */
uint64_t bm_disk_bytes(const struct bm *bm);
/* Same, without a bitmap: what create-md needs to lay out the disk; 0 for
 * an invalid geometry. */
uint64_t bm_disk_bytes_for(uint64_t dev_sectors, uint32_t granularity);

/*
 * Mark [sector, sector + nr_sectors) dirty (outward rounding). Returns the
 * number of bits that changed from 0 to 1, or -EINVAL if the range is empty
 * or reaches past the device end.
 */
int64_t bm_set_range(struct bm *bm, uint64_t sector, uint64_t nr_sectors);

/*
 * Mark [sector, sector + nr_sectors) clean (inward rounding). Returns the
 * number of bits that changed from 1 to 0, or -EINVAL as above.
 */
int64_t bm_clear_range(struct bm *bm, uint64_t sector, uint64_t nr_sectors);

/* Is any granule touched by the range dirty? Out-of-range parts are clean. */
bool bm_test_range(const struct bm *bm, uint64_t sector, uint64_t nr_sectors);
bool bm_test_bit(const struct bm *bm, uint64_t bit);

/* Number of dirty bits. Kept as a counter: O(1). */
uint64_t bm_count(const struct bm *bm);
/* Dirty bytes: bm_count * granularity, the partial last granule counted at
 * its real size. */
uint64_t bm_dirty_bytes(const struct bm *bm);

/*
 * Find the first dirty extent (a maximal run of dirty granules) that starts
 * at or after the granule containing @from_sector, and return it as a
 * sector range clipped to the device end. Returns 0, or -ENOENT when no
 * dirty granule remains at or after @from_sector.
 *
 *	for (s = 0; !bm_next_dirty(bm, s, &start, &len); s = start + len)
 *		resync(start, len);
 */
int bm_next_dirty(const struct bm *bm, uint64_t from_sector, uint64_t *start,
		  uint64_t *nr_sectors);

/* OR @src into @dst. Both must have the same geometry, else -EINVAL. */
int bm_merge(struct bm *dst, const struct bm *src);

/* Set or clear every bit (full sync / new-current-uuid --clear-bitmap). */
void bm_set_all(struct bm *bm);
void bm_clear_all(struct bm *bm);

/*
 * Persistence. A page is "changed" when any of its bits changed since it was
 * last marked clean. The caller writes changed pages and then marks them
 * clean; an AL eviction writes only the pages covering one extent.
 */
bool bm_page_changed(const struct bm *bm, uint64_t page);
/* First changed page >= @from, or -ENOENT. */
int64_t bm_next_changed_page(const struct bm *bm, uint64_t from);
void bm_page_mark_clean(struct bm *bm, uint64_t page);
void bm_mark_all_changed(struct bm *bm);
/* Range of pages [*first, *last] holding the bits of a sector range,
 * clipped to the device end; *first > *last when nothing is on the device. */
void bm_pages_of_range(const struct bm *bm, uint64_t sector,
		       uint64_t nr_sectors, uint64_t *first, uint64_t *last);

/* Encode page @page into @out (BM_PAGE_SIZE bytes, on-disk layout). */
void bm_page_encode(const struct bm *bm, uint64_t page, void *out);

/*
 * Load page @page from @in (BM_PAGE_SIZE bytes). Returns -EUCLEAN if a bit
 * past the device end is set (the page is corrupt or belongs to another
 * geometry); the bitmap is then unchanged. The page is marked clean.
 * -EINVAL for a page index >= bm_nr_pages().
 */
int bm_page_decode(struct bm *bm, uint64_t page, const void *in);

/* OR an on-disk-format page into the bitmap (merging a peer's bitmap as it
 * arrives on the wire). Same validation as bm_page_decode; the page is
 * marked changed if any bit was added. */
int bm_page_merge(struct bm *bm, uint64_t page, const void *in);

#endif
