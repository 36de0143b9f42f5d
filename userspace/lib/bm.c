// SPDX-License-Identifier: MIT
/*
 * The dirty bitmap. Bits live in host-order 64-bit words; the on-disk
 * little-endian layout is produced only by the page codec at the bottom.
 *
 * Invariants every function keeps:
 *  - bits at and past nr_bits in the last word are 0, so whole-word
 *    popcounts and scans need no tail masking;
 *  - count == popcount of all words;
 *  - a page's "changed" bit is set whenever one of its bits flipped since
 *    the caller last marked it clean.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "be.h"
#include "bm.h"
#include "log.h"
#include "util.h"

#define BITS_PER_WORD 64u
#define WORDS_PER_PAGE (BM_PAGE_SIZE / sizeof(uint64_t))

struct bm {
	uint64_t dev_sectors;
	uint32_t granularity; /* bytes per bit */
	unsigned int gshift; /* log2(sectors per bit) */
	uint64_t nr_bits;
	uint64_t nr_words;
	uint64_t nr_pages;
	uint64_t count; /* set bits, kept in step with every flip */
	uint64_t *words;
	uint64_t *changed; /* one bit per page */
};

/* Mask of bits [lo, hi) within one word, 0 <= lo < hi <= 64. */
static inline uint64_t word_mask(unsigned int lo, unsigned int hi)
{
	uint64_t m = ~0ull << lo;

	if (hi < BITS_PER_WORD)
		m &= ~(~0ull << hi);
	return m;
}

/* Valid bits of word @w: all of them except in the last, partial word. */
static uint64_t valid_mask(const struct bm *bm, uint64_t w)
{
	unsigned int tail = bm->nr_bits % BITS_PER_WORD;

	if (w < bm->nr_words - 1 || !tail)
		return ~0ull;
	return word_mask(0, tail);
}

/*
 * First bit in [from, nbits) that is set in @words (or clear, when @invert),
 * else @nbits. Clean words are skipped 64 bits at a time. @nbits may be a
 * limit short of the bitmap's end, to bound a scan.
 */
static uint64_t find_next(const uint64_t *words, uint64_t nbits, uint64_t from,
			  bool invert)
{
	uint64_t w, x, nwords = DIV_ROUND_UP(nbits, BITS_PER_WORD);

	if (from >= nbits)
		return nbits;
	w = from / BITS_PER_WORD;
	x = (invert ? ~words[w] : words[w]) & (~0ull << (from % BITS_PER_WORD));
	while (!x) {
		if (++w >= nwords)
			return nbits;
		x = invert ? ~words[w] : words[w];
	}
	from = w * BITS_PER_WORD + (uint64_t)__builtin_ctzll(x);
	/* The word holding the limit may have bits past it. */
	return from < nbits ? from : nbits;
}

static unsigned int gran_shift(uint32_t granularity)
{
	return (unsigned int)__builtin_ctz(granularity) - SECTOR_SHIFT;
}

static bool gran_valid(uint32_t granularity)
{
	return is_pow2(granularity) && granularity >= BM_GRAN_MIN &&
	       granularity <= BM_GRAN_MAX;
}

/* The largest device whose size in bytes still fits in 64 bits. */
static bool geometry_valid(uint64_t dev_sectors, uint32_t granularity)
{
	return dev_sectors && dev_sectors <= UINT64_MAX >> SECTOR_SHIFT &&
	       gran_valid(granularity);
}

/* Bits needed for @dev_sectors, without the overflow of n + d - 1. */
static uint64_t bits_for(uint64_t dev_sectors, unsigned int gshift)
{
	uint64_t mask = (1ull << gshift) - 1;

	return (dev_sectors >> gshift) + !!(dev_sectors & mask);
}

uint64_t bm_disk_bytes_for(uint64_t dev_sectors, uint32_t granularity)
{
	uint64_t bits;

	if (!geometry_valid(dev_sectors, granularity))
		return 0;
	bits = bits_for(dev_sectors, gran_shift(granularity));
	return DIV_ROUND_UP(bits, BM_BITS_PER_PAGE) * BM_PAGE_SIZE;
}

struct bm *bm_create(uint64_t dev_sectors, uint32_t granularity)
{
	struct bm *bm;

	if (!geometry_valid(dev_sectors, granularity)) {
		errno = EINVAL;
		return NULL;
	}
	bm = calloc(1, sizeof(*bm));
	if (!bm)
		goto out_nomem;
	bm->dev_sectors = dev_sectors;
	bm->granularity = granularity;
	bm->gshift = gran_shift(granularity);
	bm->nr_bits = bits_for(dev_sectors, bm->gshift);
	bm->nr_words = DIV_ROUND_UP(bm->nr_bits, BITS_PER_WORD);
	bm->nr_pages = DIV_ROUND_UP(bm->nr_bits, BM_BITS_PER_PAGE);
	if (bm->nr_words > SIZE_MAX / sizeof(uint64_t))
		goto out_free_bm;
	bm->words = calloc(bm->nr_words, sizeof(uint64_t));
	if (!bm->words)
		goto out_free_bm;
	bm->changed = calloc(DIV_ROUND_UP(bm->nr_pages, BITS_PER_WORD),
			     sizeof(uint64_t));
	if (!bm->changed)
		goto out_free_words;
	log_dbg(LOG_CAT_BM, "bitmap: %llu sectors, %u-byte granules, %llu bits",
		(unsigned long long)dev_sectors, granularity,
		(unsigned long long)bm->nr_bits);
	return bm;

out_free_words:
	free(bm->words);
out_free_bm:
	free(bm);
out_nomem:
	errno = ENOMEM;
	return NULL;
}

void bm_free(struct bm *bm)
{
	if (!bm)
		return;
	free(bm->changed);
	free(bm->words);
	free(bm);
}

uint64_t bm_dev_sectors(const struct bm *bm)
{
	return bm->dev_sectors;
}

uint32_t bm_granularity(const struct bm *bm)
{
	return bm->granularity;
}

uint64_t bm_nr_bits(const struct bm *bm)
{
	return bm->nr_bits;
}

uint64_t bm_nr_pages(const struct bm *bm)
{
	return bm->nr_pages;
}

uint64_t bm_disk_bytes(const struct bm *bm)
{
	return bm->nr_pages * BM_PAGE_SIZE;
}

static inline void mark_word_changed(struct bm *bm, uint64_t w)
{
	uint64_t page = w / WORDS_PER_PAGE;

	bm->changed[page / BITS_PER_WORD] |= 1ull << (page % BITS_PER_WORD);
}

/*
 * Set (or clear) bits [first, end), first < end <= nr_bits; returns how many
 * flipped. Partial words at both ends are masked, whole words in between
 * are filled; only words that really change dirty their page.
 */
static uint64_t update_bits(struct bm *bm, uint64_t first, uint64_t end,
			    bool set)
{
	uint64_t w = first / BITS_PER_WORD, last_w = (end - 1) / BITS_PER_WORD;
	uint64_t flipped = 0;

	for (; w <= last_w; w++) {
		unsigned int lo =
			w == first / BITS_PER_WORD ? first % BITS_PER_WORD : 0;
		unsigned int hi = w == last_w ? (end - 1) % BITS_PER_WORD + 1 :
						BITS_PER_WORD;
		uint64_t old = bm->words[w];
		uint64_t new = set ? old | word_mask(lo, hi) :
				     old & ~word_mask(lo, hi);

		if (new == old)
			continue;
		flipped += (uint64_t)__builtin_popcountll(old ^ new);
		bm->words[w] = new;
		mark_word_changed(bm, w);
	}
	if (set)
		bm->count += flipped;
	else
		bm->count -= flipped;
	return flipped;
}

static bool range_valid(const struct bm *bm, uint64_t sector,
			uint64_t nr_sectors)
{
	return nr_sectors && sector < bm->dev_sectors &&
	       nr_sectors <= bm->dev_sectors - sector;
}

int64_t bm_set_range(struct bm *bm, uint64_t sector, uint64_t nr_sectors)
{
	uint64_t first, last;

	if (!range_valid(bm, sector, nr_sectors))
		return -EINVAL;
	first = sector >> bm->gshift;
	last = (sector + nr_sectors - 1) >> bm->gshift;
	return (int64_t)update_bits(bm, first, last + 1, true);
}

int64_t bm_clear_range(struct bm *bm, uint64_t sector, uint64_t nr_sectors)
{
	uint64_t first, end, gmask = (1ull << bm->gshift) - 1;

	if (!range_valid(bm, sector, nr_sectors))
		return -EINVAL;
	/* Inward: a granule counts only if the range covers all of it. */
	first = (sector >> bm->gshift) + !!(sector & gmask);
	if (sector + nr_sectors == bm->dev_sectors)
		end = bm->nr_bits;
	else
		end = (sector + nr_sectors) >> bm->gshift;
	if (first >= end)
		return 0;
	return (int64_t)update_bits(bm, first, end, false);
}

bool bm_test_bit(const struct bm *bm, uint64_t bit)
{
	if (bit >= bm->nr_bits)
		return false;
	return bm->words[bit / BITS_PER_WORD] >> (bit % BITS_PER_WORD) & 1;
}

bool bm_test_range(const struct bm *bm, uint64_t sector, uint64_t nr_sectors)
{
	uint64_t first, last;

	if (!nr_sectors || sector >= bm->dev_sectors)
		return false;
	if (nr_sectors > bm->dev_sectors - sector)
		nr_sectors = bm->dev_sectors - sector;
	first = sector >> bm->gshift;
	last = (sector + nr_sectors - 1) >> bm->gshift;
	/* Scan only the range: this runs for single blocks on big bitmaps. */
	return find_next(bm->words, last + 1, first, false) <= last;
}

uint64_t bm_count(const struct bm *bm)
{
	return bm->count;
}

uint64_t bm_dirty_bytes(const struct bm *bm)
{
	uint64_t bytes = bm->count * bm->granularity;
	uint64_t dev_bytes = bm->dev_sectors << SECTOR_SHIFT;
	uint64_t last_bytes = dev_bytes - (bm->nr_bits - 1) * bm->granularity;

	if (bm_test_bit(bm, bm->nr_bits - 1))
		bytes -= bm->granularity - last_bytes;
	return bytes;
}

int bm_next_dirty(const struct bm *bm, uint64_t from_sector, uint64_t *start,
		  uint64_t *nr_sectors)
{
	uint64_t first, end, s, e;

	if (from_sector >= bm->dev_sectors)
		return -ENOENT;
	first = find_next(bm->words, bm->nr_bits, from_sector >> bm->gshift,
			  false);
	if (first >= bm->nr_bits)
		return -ENOENT;
	end = find_next(bm->words, bm->nr_bits, first, true);
	s = first << bm->gshift;
	e = end == bm->nr_bits ? bm->dev_sectors : end << bm->gshift;
	*start = s;
	*nr_sectors = e - s;
	return 0;
}

int bm_merge(struct bm *dst, const struct bm *src)
{
	uint64_t w, added;

	if (dst->dev_sectors != src->dev_sectors ||
	    dst->granularity != src->granularity)
		return -EINVAL;
	for (w = 0; w < dst->nr_words; w++) {
		added = src->words[w] & ~dst->words[w];
		if (!added)
			continue;
		dst->words[w] |= added;
		dst->count += (uint64_t)__builtin_popcountll(added);
		mark_word_changed(dst, w);
	}
	return 0;
}

void bm_set_all(struct bm *bm)
{
	update_bits(bm, 0, bm->nr_bits, true);
}

void bm_clear_all(struct bm *bm)
{
	update_bits(bm, 0, bm->nr_bits, false);
}

bool bm_page_changed(const struct bm *bm, uint64_t page)
{
	if (page >= bm->nr_pages)
		return false;
	return bm->changed[page / BITS_PER_WORD] >> (page % BITS_PER_WORD) & 1;
}

int64_t bm_next_changed_page(const struct bm *bm, uint64_t from)
{
	uint64_t page = find_next(bm->changed, bm->nr_pages, from, false);

	return page < bm->nr_pages ? (int64_t)page : -ENOENT;
}

void bm_page_mark_clean(struct bm *bm, uint64_t page)
{
	if (page >= bm->nr_pages)
		return;
	bm->changed[page / BITS_PER_WORD] &= ~(1ull << (page % BITS_PER_WORD));
}

void bm_mark_all_changed(struct bm *bm)
{
	uint64_t i, n = DIV_ROUND_UP(bm->nr_pages, BITS_PER_WORD);
	unsigned int tail = bm->nr_pages % BITS_PER_WORD;

	for (i = 0; i < n; i++)
		bm->changed[i] = ~0ull;
	/* Keep the padding clear so that scans never report a page past the end. */
	if (tail)
		bm->changed[n - 1] = word_mask(0, tail);
}

/*
 * The range is clipped to the device like bm_test_range. When nothing of it
 * lies on the device, *first > *last so that a `first..last` loop is empty.
 */
void bm_pages_of_range(const struct bm *bm, uint64_t sector,
		       uint64_t nr_sectors, uint64_t *first, uint64_t *last)
{
	if (!nr_sectors || sector >= bm->dev_sectors) {
		*first = bm->nr_pages;
		*last = bm->nr_pages - 1;
		return;
	}
	if (nr_sectors > bm->dev_sectors - sector)
		nr_sectors = bm->dev_sectors - sector;
	*first = (sector >> bm->gshift) / BM_BITS_PER_PAGE;
	*last = ((sector + nr_sectors - 1) >> bm->gshift) / BM_BITS_PER_PAGE;
}

/* ---- on-disk page codec ------------------------------------------------ */

/*
 * A page past the end encodes as all zeros: that is what a freshly laid out
 * (or shrunk) bitmap area holds.
 */
void bm_page_encode(const struct bm *bm, uint64_t page, void *out)
{
	struct le64 *o = out;
	uint64_t i, w;

	for (i = 0; i < WORDS_PER_PAGE; i++) {
		w = page * WORDS_PER_PAGE + i;
		o[i] = put_le64(page < bm->nr_pages && w < bm->nr_words ?
					bm->words[w] :
					0);
	}
}

/* 0, or -EUCLEAN if @in has a bit past the device end. */
static int page_check(const struct bm *bm, uint64_t page, const void *in)
{
	const struct le64 *p = in;
	uint64_t i, w;

	for (i = 0; i < WORDS_PER_PAGE; i++) {
		w = page * WORDS_PER_PAGE + i;
		if (w >= bm->nr_words) {
			if (get_le64(p[i]))
				goto out_unclean;
		} else if (get_le64(p[i]) & ~valid_mask(bm, w)) {
			goto out_unclean;
		}
	}
	return 0;

out_unclean:
	log_dbg(LOG_CAT_BM, "bitmap page %llu: bit set past the device end",
		(unsigned long long)page);
	return -EUCLEAN;
}

/*
 * Pages at or past nr_pages hold no bits at all, so there is nothing to load
 * them into: -EINVAL (the header's contract names only -EUCLEAN, which is
 * kept for bad content).
 */
int bm_page_decode(struct bm *bm, uint64_t page, const void *in)
{
	const struct le64 *p = in;
	uint64_t i, w, v;
	int ret;

	if (page >= bm->nr_pages)
		return -EINVAL;
	ret = page_check(bm, page, in);
	if (ret)
		return ret;
	for (i = 0; i < WORDS_PER_PAGE; i++) {
		w = page * WORDS_PER_PAGE + i;
		if (w >= bm->nr_words)
			break;
		v = get_le64(p[i]);
		bm->count -= (uint64_t)__builtin_popcountll(bm->words[w]);
		bm->count += (uint64_t)__builtin_popcountll(v);
		bm->words[w] = v;
	}
	bm_page_mark_clean(bm, page);
	return 0;
}

int bm_page_merge(struct bm *bm, uint64_t page, const void *in)
{
	const struct le64 *p = in;
	uint64_t i, w, added;
	int ret;

	if (page >= bm->nr_pages)
		return -EINVAL;
	ret = page_check(bm, page, in);
	if (ret)
		return ret;
	for (i = 0; i < WORDS_PER_PAGE; i++) {
		w = page * WORDS_PER_PAGE + i;
		if (w >= bm->nr_words)
			break;
		added = get_le64(p[i]) & ~bm->words[w];
		if (!added)
			continue;
		bm->words[w] |= added;
		bm->count += (uint64_t)__builtin_popcountll(added);
		mark_word_changed(bm, w);
	}
	return 0;
}
