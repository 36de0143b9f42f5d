// SPDX-License-Identifier: MIT
/*
 * Superblock codec and layout: placement arithmetic, refusal of devices
 * that are too small and of bad parameters, a field-by-field round trip,
 * the byte-level format of docs/metadata-format.md, and every corruption
 * class a slot can suffer (each byte flipped, wrong magic, unknown version,
 * bad CRC, and each validated field made inconsistent under a good CRC).
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

#include "al.h"
#include "bm.h"
#include "crc.h"
#include "md.h"
#include "util.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)

/* Byte offsets of the documented format (docs/metadata-format.md). */
enum {
	O_MAGIC = 0, O_VERSION = 8, O_CRC = 12, O_SEQ = 16, O_PLACEMENT = 24,
	O_FLAGS = 28, O_NODE_ID = 32, O_RESERVED0 = 36, O_DEVICE_UUID = 40,
	O_CREATED = 48, O_DATA_BYTES = 56, O_MD_DEV_BYTES = 64,
	O_MD_OFFSET = 72, O_MD_BYTES = 80, O_SB_OFFSET0 = 88,
	O_SB_OFFSET1 = 96, O_BM_GRAN = 104, O_BM_NR_SLOTS = 108,
	O_BM_OFFSET = 112, O_BM_BYTES = 120, O_AL_OFFSET = 128,
	O_AL_RING_BLOCKS = 136, O_AL_NR_SLOTS = 140, O_AL_EXTENT_SHIFT = 144,
	O_RESERVED1 = 148, O_CURRENT_UUID = 152, O_HISTORY = 160,
	O_PEERS = 192, /* 16 bytes each: node_id, flags, bitmap_uuid */
	O_PROMOTED = 256, O_RESERVED2 = 264, O_END = 512,
};

static uint64_t rd_be(const uint8_t *buf, size_t off, size_t size)
{
	uint64_t v = 0;

	for (size_t i = 0; i < size; i++)
		v = v << 8 | buf[off + i];
	return v;
}

static void wr_be(uint8_t *buf, size_t off, size_t size, uint64_t v)
{
	for (size_t i = size; i-- > 0; v >>= 8)
		buf[off + i] = (uint8_t)v;
}

/* Re-seal a hand-edited slot so that only the edited field is wrong. */
static void fix_crc(uint8_t *buf)
{
	wr_be(buf, O_CRC, 4, 0);
	wr_be(buf, O_CRC, 4, crc32c(buf, MD_SB_SIZE));
}

static void layout_ok(enum md_placement p, uint64_t backing, uint64_t md_dev,
		      uint32_t gran, uint32_t nr, struct md_super *sb)
{
	struct md_geometry g = {
		.placement = p, .backing_bytes = backing,
		.md_dev_bytes = md_dev, .bm_granularity = gran,
		.bm_nr_slots = nr, .node_id = 3,
	};
	char why[256] = "";
	int ret = md_layout(&g, sb, why, sizeof(why));

	if (ret)
		fail_msg("md_layout(%llu): %d %s", (unsigned long long)backing,
			 ret, why);
}

/* Encode @sb and check it decodes back, as the baseline of a test. */
static void encode_ok(const struct md_super *sb, uint64_t dev, uint8_t *buf)
{
	struct md_super out;
	char why[256] = "";

	assert_int_equal(md_encode(sb, buf), 0);
	if (md_decode(buf, dev, &out, why, sizeof(why)))
		fail_msg("baseline does not decode: %s", why);
}

static void assert_sb_equal(const struct md_super *a, const struct md_super *b)
{
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->seq, b->seq);
	assert_int_equal(a->placement, b->placement);
	assert_int_equal(a->flags, b->flags);
	assert_int_equal(a->node_id, b->node_id);
	assert_int_equal(a->device_uuid, b->device_uuid);
	assert_int_equal(a->created, b->created);
	assert_int_equal(a->promoted, b->promoted);
	assert_int_equal(a->data_bytes, b->data_bytes);
	assert_int_equal(a->md_dev_bytes, b->md_dev_bytes);
	assert_int_equal(a->md_offset, b->md_offset);
	assert_int_equal(a->md_bytes, b->md_bytes);
	assert_int_equal(a->sb_offset[0], b->sb_offset[0]);
	assert_int_equal(a->sb_offset[1], b->sb_offset[1]);
	assert_int_equal(a->bm_granularity, b->bm_granularity);
	assert_int_equal(a->bm_nr_slots, b->bm_nr_slots);
	assert_int_equal(a->bm_offset, b->bm_offset);
	assert_int_equal(a->bm_bytes, b->bm_bytes);
	assert_int_equal(a->al_offset, b->al_offset);
	assert_int_equal(a->al_ring_blocks, b->al_ring_blocks);
	assert_int_equal(a->al_nr_slots, b->al_nr_slots);
	assert_int_equal(a->al_extent_shift, b->al_extent_shift);
	assert_int_equal(a->current_uuid, b->current_uuid);
	for (int i = 0; i < MD_HISTORY; i++)
		assert_int_equal(a->history[i], b->history[i]);
	for (int i = 0; i < MD_MAX_PEERS; i++) {
		assert_int_equal(a->peers[i].node_id, b->peers[i].node_id);
		assert_int_equal(a->peers[i].flags, b->peers[i].flags);
		assert_int_equal(a->peers[i].bitmap_uuid,
				 b->peers[i].bitmap_uuid);
	}
}

static bool disjoint(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return a + alen <= b || b + blen <= a;
}

/* Properties every layout has, whatever the placement. */
static void check_common(const struct md_super *sb, uint64_t md_dev)
{
	uint64_t ring = (uint64_t)sb->al_ring_blocks * AL_BLOCK_SIZE;
	uint64_t bms = sb->bm_bytes * sb->bm_nr_slots;
	uint64_t md_end = sb->md_offset + sb->md_bytes;

	assert_int_equal(sb->version, MD_VERSION);
	assert_int_equal(sb->al_ring_blocks, al_ring_blocks(sb->al_nr_slots));
	assert_int_equal(sb->data_bytes % 4096, 0);
	assert_true(sb->data_bytes >= MD_MIN_DATA_BYTES);
	assert_int_equal(sb->md_offset % MD_ALIGN, 0);
	assert_int_equal(sb->md_bytes % MD_ALIGN, 0);
	assert_int_equal(sb->bm_offset % MD_ALIGN, 0);
	assert_int_equal(sb->bm_bytes % MD_ALIGN, 0);
	assert_int_equal(sb->al_offset % MD_ALIGN, 0);
	assert_true(md_end <= md_dev);
	/* The bitmap covers the data area. */
	assert_true(sb->bm_bytes >=
		    bm_disk_bytes_for(sb->data_bytes >> 9, sb->bm_granularity));
	/* Every area inside the metadata area, none overlapping another. */
	assert_true(sb->bm_offset >= sb->md_offset &&
		    sb->bm_offset + bms <= md_end);
	assert_true(sb->al_offset >= sb->md_offset &&
		    sb->al_offset + ring <= md_end);
	for (int i = 0; i < 2; i++) {
		assert_true(sb->sb_offset[i] >= sb->md_offset &&
			    sb->sb_offset[i] + MD_SB_SIZE <= md_end);
		assert_true(disjoint(sb->sb_offset[i], MD_SB_SIZE,
				     sb->bm_offset, bms));
		assert_true(disjoint(sb->sb_offset[i], MD_SB_SIZE,
				     sb->al_offset, ring));
	}
	assert_true(disjoint(sb->bm_offset, bms, sb->al_offset, ring));
	assert_int_not_equal(sb->device_uuid, 0);
	assert_int_equal(sb->current_uuid, 0);
}

static void test_layout_internal(void **state)
{
	static const uint64_t sizes[] = {
		2 * MiB, 64 * MiB, 1 * GiB, 1 * GiB + 1234, 100 * GiB + 512,
		1 * TiB, 16 * TiB,
	};
	static const uint32_t grans[] = { 4096, 65536, 1u << 20 };
	static const uint32_t nrs[] = { 1, 2, 4 };
	uint8_t buf[MD_SB_SIZE];
	uint64_t prev_data = 0;

	(void)state;
	for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
		for (size_t g = 0; g < ARRAY_SIZE(grans); g++) {
			for (size_t n = 0; n < ARRAY_SIZE(nrs); n++) {
				uint64_t dev = sizes[s], end = dev & ~4095ull;
				uint64_t off[2], need_less;
				struct md_super sb;

				layout_ok(MD_INTERNAL, dev, 0, grans[g], nrs[n],
					  &sb);
				check_common(&sb, dev);
				assert_int_equal(sb.placement, MD_INTERNAL);
				assert_int_equal(sb.md_dev_bytes, dev);
				/* Data shrinks; metadata follows it. */
				assert_true(sb.data_bytes < dev);
				assert_int_equal(sb.md_offset, sb.data_bytes);
				assert_int_equal(sb.bm_offset, sb.md_offset);
				assert_int_equal(sb.md_offset + sb.md_bytes,
						 end);
				/* [bitmaps][AL ring][sb0][sb1] at the end. */
				assert_int_equal(sb.al_offset,
						 sb.bm_offset +
							 nrs[n] * sb.bm_bytes);
				assert_int_equal(sb.sb_offset[0],
						 sb.al_offset +
							 sb.al_ring_blocks *
								 4096ull);
				assert_int_equal(sb.sb_offset[0], end - 8192);
				assert_int_equal(sb.sb_offset[1], end - 4096);
				assert_int_equal(md_sb_offsets(MD_INTERNAL, dev,
							       off), 0);
				assert_int_equal(off[0], sb.sb_offset[0]);
				assert_int_equal(off[1], sb.sb_offset[1]);
				/* No page wasted: one page less per bitmap
				 * would not cover the data it frees. */
				need_less = bm_disk_bytes_for(
					(sb.data_bytes + nrs[n] * 4096ull) >> 9,
					grans[g]);
				assert_true(need_less > sb.bm_bytes - 4096);
				encode_ok(&sb, dev, buf);
			}
		}
		{
			struct md_super sb;

			layout_ok(MD_INTERNAL, sizes[s], 0, 0, 0, &sb);
			assert_true(sb.data_bytes >= prev_data);
			prev_data = sb.data_bytes;
			/* Defaults come from bm.h and al.h. */
			assert_int_equal(sb.bm_granularity, BM_GRAN_DEFAULT);
			assert_int_equal(sb.al_nr_slots, AL_SLOTS_DEFAULT);
			assert_int_equal(sb.al_extent_shift,
					 AL_EXTENT_SHIFT_DEFAULT);
			assert_int_equal(sb.bm_nr_slots, 1);
		}
	}
}

static void test_layout_external(void **state)
{
	static const uint64_t sizes[] = {
		1 * MiB, 64 * MiB + 100, 1 * GiB, 1 * TiB, 64 * TiB,
	};
	uint8_t buf[MD_SB_SIZE];

	(void)state;
	for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
		for (uint32_t nr = 1; nr <= MD_MAX_PEERS; nr++) {
			uint64_t md_dev = 64 * GiB, off[2];
			struct md_super sb;

			layout_ok(MD_EXTERNAL, sizes[s], md_dev, 0, nr, &sb);
			check_common(&sb, md_dev);
			assert_int_equal(sb.placement, MD_EXTERNAL);
			/* Data covers the whole backing device, 4 KiB down. */
			assert_int_equal(sb.data_bytes, sizes[s] & ~4095ull);
			assert_int_equal(sb.md_dev_bytes, md_dev);
			/* [sb0][sb1][AL ring][bitmaps] from offset 0. */
			assert_int_equal(sb.md_offset, 0);
			assert_int_equal(sb.sb_offset[0], 0);
			assert_int_equal(sb.sb_offset[1], 4096);
			assert_int_equal(sb.al_offset, 8192);
			assert_int_equal(sb.bm_offset,
					 8192 + sb.al_ring_blocks * 4096ull);
			assert_int_equal(sb.bm_bytes,
					 bm_disk_bytes_for(sb.data_bytes >> 9,
							   sb.bm_granularity));
			assert_int_equal(sb.md_bytes,
					 sb.bm_offset + nr * sb.bm_bytes);
			assert_int_equal(md_sb_offsets(MD_EXTERNAL, md_dev,
						       off), 0);
			assert_int_equal(off[0], 0);
			assert_int_equal(off[1], 4096);
			encode_ok(&sb, md_dev, buf);
		}
	}
}

/* The number after @key in @why. */
static uint64_t number_after(const char *why, const char *key)
{
	const char *p = strstr(why, key);
	unsigned long long v;

	if (!p || sscanf(p + strlen(key), "%llu", &v) != 1)
		fail_msg("no \"%s<number>\" in \"%s\"", key, why);
	return v;
}

static void test_layout_too_small(void **state)
{
	struct md_geometry g = { .placement = MD_INTERNAL };
	struct md_super sb;
	char why[256];
	uint64_t need;

	(void)state;
	/* Internal: the message's byte count is exactly the minimum. */
	for (uint32_t nr = 1; nr <= MD_MAX_PEERS; nr++) {
		g.bm_nr_slots = nr;
		g.backing_bytes = 1 * MiB;
		why[0] = '\0';
		assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), -ENOSPC);
		assert_non_null(strstr(why, "too small"));
		need = number_after(why, "at least ");
		g.backing_bytes = need;
		assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), 0);
		assert_int_equal(sb.data_bytes, MD_MIN_DATA_BYTES);
		g.backing_bytes = need - 4096;
		assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), -ENOSPC);
		g.backing_bytes = need + 4095; /* rounds down to need */
		assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), 0);
	}
	g.bm_nr_slots = 0;
	g.backing_bytes = 0;
	assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), -ENOSPC);

	/* External: a backing device below the minimum data size. */
	g = (struct md_geometry){ .placement = MD_EXTERNAL,
				  .backing_bytes = MD_MIN_DATA_BYTES - 512,
				  .md_dev_bytes = 1 * GiB };
	why[0] = '\0';
	assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "backing device"));

	/* External: the md device size needed is stated exactly. */
	g.backing_bytes = 1 * TiB;
	g.md_dev_bytes = 1 * MiB;
	why[0] = '\0';
	assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "external metadata device"));
	need = number_after(why, "needs ");
	assert_true(need > 32 * MiB); /* a 1 TiB bitmap at 4 KiB grains */
	g.md_dev_bytes = need;
	assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), 0);
	assert_int_equal(sb.md_bytes, need);
	g.md_dev_bytes = need - 1;
	assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), -ENOSPC);
}

static void test_layout_bad_params(void **state)
{
	static const struct {
		struct md_geometry g;
		const char *needle;
	} cases[] = {
		{ { .placement = 0 }, "placement" },
		{ { .placement = 3 }, "placement" },
		{ { .placement = MD_INTERNAL, .bm_granularity = 2048 },
		  "granularity" },
		{ { .placement = MD_INTERNAL, .bm_granularity = 12288 },
		  "granularity" },
		{ { .placement = MD_INTERNAL, .bm_granularity = 2u << 20 },
		  "granularity" },
		{ { .placement = MD_INTERNAL, .al_nr_slots = AL_SLOTS_MIN - 1 },
		  "slot count" },
		{ { .placement = MD_INTERNAL, .al_nr_slots = AL_SLOTS_MAX + 1 },
		  "slot count" },
		{ { .placement = MD_INTERNAL,
		    .al_extent_shift = AL_EXTENT_SHIFT_MIN - 1 },
		  "extent shift" },
		{ { .placement = MD_INTERNAL,
		    .al_extent_shift = AL_EXTENT_SHIFT_MAX + 1 },
		  "extent shift" },
		{ { .placement = MD_EXTERNAL, .bm_nr_slots = MD_MAX_PEERS + 1 },
		  "bitmap count" },
		{ { .placement = MD_INTERNAL, .node_id = MD_NODE_ID_MAX + 1 },
		  "node id" },
	};
	struct md_super sb;
	char why[256];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct md_geometry g = cases[i].g;

		/* Everything else valid, so only the named field is wrong. */
		g.backing_bytes = 1 * GiB;
		g.md_dev_bytes = 1 * GiB;
		why[0] = '\0';
		assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), -EINVAL);
		if (!strstr(why, cases[i].needle))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, why,
				 cases[i].needle);
	}
	/* The boundaries themselves are accepted. */
	{
		struct md_geometry g = {
			.placement = MD_INTERNAL, .backing_bytes = 1 * GiB,
			.bm_granularity = BM_GRAN_MAX,
			.al_nr_slots = AL_SLOTS_MIN,
			.al_extent_shift = AL_EXTENT_SHIFT_MAX,
			.bm_nr_slots = MD_MAX_PEERS,
			.node_id = MD_NODE_ID_MAX,
		};

		assert_int_equal(md_layout(&g, &sb, why, sizeof(why)), 0);
		assert_int_equal(sb.node_id, MD_NODE_ID_MAX);
	}
	assert_int_equal(md_layout(NULL, &sb, why, sizeof(why)), -EINVAL);
}

static void fill_all_fields(struct md_super *sb)
{
	sb->seq = 0x0102030405060708ull;
	sb->flags = MD_F_ALL;
	sb->device_uuid = 0x1111222233334444ull;
	sb->created = 1700000000;
	sb->current_uuid = 0xc0ffee0000000001ull;
	sb->promoted = 1795000000;
	for (int i = 0; i < MD_HISTORY; i++)
		sb->history[i] = 0xaaaa000000000000ull + (uint64_t)i;
	for (int i = 0; i < MD_MAX_PEERS; i++) {
		sb->peers[i].node_id = 10u + (uint32_t)i;
		sb->peers[i].flags = MD_PF_USED;
		if (i & 1)
			sb->peers[i].flags |= MD_PF_PEER_OUTDATED;
		sb->peers[i].bitmap_uuid = 0xbbbb000000000000ull + (uint64_t)i;
	}
}

static void test_roundtrip(void **state)
{
	uint8_t buf[MD_SB_SIZE];
	struct md_super sb, out;
	char why[256];

	(void)state;
	for (int p = MD_INTERNAL; p <= MD_EXTERNAL; p++) {
		layout_ok(p, 10 * GiB, 1 * GiB, 65536, MD_MAX_PEERS, &sb);
		fill_all_fields(&sb);
		assert_int_equal(md_encode(&sb, buf), 0);
		memset(&out, 0x5a, sizeof(out));
		assert_int_equal(md_decode(buf, p == MD_INTERNAL ? 10 * GiB :
								     1 * GiB,
					   &out, why, sizeof(why)),
				 0);
		assert_sb_equal(&sb, &out);
	}
}

/* The bytes on disk are what docs/metadata-format.md says they are. */
static void test_byte_format(void **state)
{
	uint8_t buf[MD_SB_SIZE];
	struct md_super sb;

	(void)state;
	layout_ok(MD_INTERNAL, 10 * GiB, 0, 0, 2, &sb);
	fill_all_fields(&sb);
	sb.peers[2] = sb.peers[3] = (struct md_peer){ 0 };
	assert_int_equal(md_encode(&sb, buf), 0);
	assert_memory_equal(buf, "DUETMDv1", 8);
	assert_int_equal(rd_be(buf, O_VERSION, 4), MD_VERSION);
	assert_int_equal(rd_be(buf, O_SEQ, 8), sb.seq);
	assert_int_equal(rd_be(buf, O_PLACEMENT, 4), MD_INTERNAL);
	assert_int_equal(rd_be(buf, O_FLAGS, 4), MD_F_ALL);
	assert_int_equal(rd_be(buf, O_NODE_ID, 4), 3);
	assert_int_equal(rd_be(buf, O_DEVICE_UUID, 8), sb.device_uuid);
	assert_int_equal(rd_be(buf, O_CREATED, 8), sb.created);
	assert_int_equal(rd_be(buf, O_DATA_BYTES, 8), sb.data_bytes);
	assert_int_equal(rd_be(buf, O_MD_DEV_BYTES, 8), 10 * GiB);
	assert_int_equal(rd_be(buf, O_MD_OFFSET, 8), sb.md_offset);
	assert_int_equal(rd_be(buf, O_MD_BYTES, 8), sb.md_bytes);
	assert_int_equal(rd_be(buf, O_SB_OFFSET0, 8), 10 * GiB - 8192);
	assert_int_equal(rd_be(buf, O_SB_OFFSET1, 8), 10 * GiB - 4096);
	assert_int_equal(rd_be(buf, O_BM_GRAN, 4), BM_GRAN_DEFAULT);
	assert_int_equal(rd_be(buf, O_BM_NR_SLOTS, 4), 2);
	assert_int_equal(rd_be(buf, O_BM_OFFSET, 8), sb.bm_offset);
	assert_int_equal(rd_be(buf, O_BM_BYTES, 8), sb.bm_bytes);
	assert_int_equal(rd_be(buf, O_AL_OFFSET, 8), sb.al_offset);
	assert_int_equal(rd_be(buf, O_AL_RING_BLOCKS, 4), sb.al_ring_blocks);
	assert_int_equal(rd_be(buf, O_AL_NR_SLOTS, 4), AL_SLOTS_DEFAULT);
	assert_int_equal(rd_be(buf, O_AL_EXTENT_SHIFT, 4),
			 AL_EXTENT_SHIFT_DEFAULT);
	assert_int_equal(rd_be(buf, O_CURRENT_UUID, 8), sb.current_uuid);
	for (int i = 0; i < MD_HISTORY; i++)
		assert_int_equal(rd_be(buf, O_HISTORY + 8 * i, 8),
				 sb.history[i]);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(rd_be(buf, O_PEERS + 16 * i, 4), 10 + i);
		assert_int_equal(rd_be(buf, O_PEERS + 16 * i + 4, 4),
				 sb.peers[i].flags);
		assert_int_equal(rd_be(buf, O_PEERS + 16 * i + 8, 8),
				 sb.peers[i].bitmap_uuid);
	}
	assert_int_equal(rd_be(buf, O_PROMOTED, 8), sb.promoted);
	/* Reserved words and everything after the struct are zero. */
	assert_int_equal(rd_be(buf, O_RESERVED0, 4), 0);
	assert_int_equal(rd_be(buf, O_RESERVED1, 4), 0);
	for (size_t i = O_PEERS + 32; i < O_PROMOTED; i++)
		assert_int_equal(buf[i], 0);
	for (size_t i = O_RESERVED2; i < MD_SB_SIZE; i++)
		assert_int_equal(buf[i], 0);
	/* CRC32C of the whole slot with the crc field zeroed. */
	{
		uint32_t stored = (uint32_t)rd_be(buf, O_CRC, 4);

		wr_be(buf, O_CRC, 4, 0);
		assert_int_equal(crc32c(buf, MD_SB_SIZE), stored);
	}
}

/* "Flip any byte -> rejected with a clear message", all 4096 of them. */
static void test_flip_every_byte(void **state)
{
	static const uint8_t masks[] = { 0x01, 0x80, 0xff, 0x5a };
	uint8_t buf[MD_SB_SIZE], bad[MD_SB_SIZE];
	struct md_super sb, out;
	char why[256];

	(void)state;
	layout_ok(MD_EXTERNAL, 1 * TiB, 1 * GiB, 0, 2, &sb);
	fill_all_fields(&sb);
	sb.peers[2] = sb.peers[3] = (struct md_peer){ 0 };
	encode_ok(&sb, 1 * GiB, buf);
	for (size_t pos = 0; pos < MD_SB_SIZE; pos++) {
		for (size_t m = 0; m < ARRAY_SIZE(masks); m++) {
			int ret;

			memcpy(bad, buf, sizeof(bad));
			bad[pos] ^= masks[m];
			why[0] = '\0';
			ret = md_decode(bad, 1 * GiB, &out, why, sizeof(why));
			if (pos < 8) {
				/* The magic: not a duet superblock at all. */
				assert_int_equal(ret, -ENODATA);
				assert_non_null(strstr(why, "magic"));
			} else {
				if (ret != -EBADMSG)
					fail_msg("byte %zu ^ 0x%02x: %d %s",
						 pos, masks[m], ret, why);
				assert_non_null(strstr(why, "CRC mismatch"));
			}
		}
	}
}

static void test_blank_and_foreign(void **state)
{
	uint8_t buf[MD_SB_SIZE];
	struct md_super out;
	char why[256];

	(void)state;
	memset(buf, 0, sizeof(buf));
	why[0] = '\0';
	assert_int_equal(md_decode(buf, 1 * GiB, &out, why, sizeof(why)),
			 -ENODATA);
	assert_non_null(strstr(why, "blank"));

	/* Somebody else's data: an ext4-ish block full of bytes. */
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 7 + 1);
	why[0] = '\0';
	assert_int_equal(md_decode(buf, 1 * GiB, &out, why, sizeof(why)),
			 -ENODATA);
	assert_non_null(strstr(why, "magic"));

	/* Our magic, the rest zero: a CRC mismatch, not "blank". */
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "DUETMDv1", 8);
	assert_int_equal(md_decode(buf, 1 * GiB, &out, why, sizeof(why)),
			 -EBADMSG);
}

static void test_unknown_version(void **state)
{
	uint8_t buf[MD_SB_SIZE];
	struct md_super sb, out;
	char why[256];

	(void)state;
	layout_ok(MD_INTERNAL, 1 * GiB, 0, 0, 1, &sb);
	encode_ok(&sb, 1 * GiB, buf);
	wr_be(buf, O_VERSION, 4, 7);
	fix_crc(buf);
	why[0] = '\0';
	assert_int_equal(md_decode(buf, 1 * GiB, &out, why, sizeof(why)),
			 -EPROTO);
	assert_non_null(strstr(why, "unknown metadata version 7"));
	assert_non_null(strstr(why, "version 1"));

	wr_be(buf, O_VERSION, 4, 0);
	fix_crc(buf);
	assert_int_equal(md_decode(buf, 1 * GiB, &out, why, sizeof(why)),
			 -EPROTO);
	/* Without the re-seal the same edit is just corruption. */
	wr_be(buf, O_VERSION, 4, 2);
	assert_int_equal(md_decode(buf, 1 * GiB, &out, why, sizeof(why)),
			 -EBADMSG);
}

static void test_bad_crc(void **state)
{
	uint8_t buf[MD_SB_SIZE];
	struct md_super sb, out;
	char why[256], expect[64];
	uint32_t good;

	(void)state;
	layout_ok(MD_INTERNAL, 1 * GiB, 0, 0, 1, &sb);
	encode_ok(&sb, 1 * GiB, buf);
	good = (uint32_t)rd_be(buf, O_CRC, 4);
	wr_be(buf, O_CRC, 4, good ^ 0x00010000);
	why[0] = '\0';
	assert_int_equal(md_decode(buf, 1 * GiB, &out, why, sizeof(why)),
			 -EBADMSG);
	snprintf(expect, sizeof(expect), "stored 0x%08x, computed 0x%08x",
		 good ^ 0x00010000, good);
	assert_non_null(strstr(why, "CRC mismatch"));
	assert_non_null(strstr(why, expect));

	/* A torn write: the second half of the slot is from elsewhere. */
	wr_be(buf, O_CRC, 4, good);
	memset(buf + 2048, 0xee, 2048);
	assert_int_equal(md_decode(buf, 1 * GiB, &out, why, sizeof(why)),
			 -EBADMSG);
}

struct field_case {
	const char *what;
	size_t off, size;
	uint64_t val;
	const char *needle;
};

/* Each case edits one field of a valid slot, re-seals the CRC and expects
 * -EUCLEAN with @needle in the message. */
static void run_field_cases(const struct md_super *sb, uint64_t dev,
			    const struct field_case *cases, size_t n)
{
	uint8_t buf[MD_SB_SIZE], bad[MD_SB_SIZE];
	struct md_super out;
	char why[256];

	encode_ok(sb, dev, buf);
	for (size_t i = 0; i < n; i++) {
		int ret;

		memcpy(bad, buf, sizeof(bad));
		wr_be(bad, cases[i].off, cases[i].size, cases[i].val);
		fix_crc(bad);
		why[0] = '\0';
		ret = md_decode(bad, dev, &out, why, sizeof(why));
		if (ret != -EUCLEAN || !strstr(why, cases[i].needle))
			fail_msg("%s: got %d \"%s\", want -EUCLEAN \"%s\"",
				 cases[i].what, ret, why, cases[i].needle);
	}
}

static void test_fields_internal(void **state)
{
	const uint64_t dev = 1 * GiB;
	struct md_super sb;

	(void)state;
	layout_ok(MD_INTERNAL, dev, 0, 0, 1, &sb);
	{
		const uint64_t ring = sb.al_ring_blocks * 4096ull;
		const struct field_case cases[] = {
			{ "placement", O_PLACEMENT, 4, 3, "placement" },
			{ "flags", O_FLAGS, 4, MD_F_ALL + 1u,
			  "unknown flag bits 0x80" },
			{ "node id", O_NODE_ID, 4, 32, "node id 32" },
			{ "reserved0", O_RESERVED0, 4, 1, "reserved" },
			{ "reserved1", O_RESERVED1, 4, 1, "reserved" },
			{ "reserved2", O_RESERVED2 + 17, 1, 1, "reserved" },
			{ "slot tail", 4000, 1, 1, "reserved" },
			{ "device uuid", O_DEVICE_UUID, 8, 0, "device UUID" },
			{ "data 512", O_DATA_BYTES, 8, sb.data_bytes - 123,
			  "is not a multiple of 512" },
			{ "data min", O_DATA_BYTES, 8, 512 * 1024,
			  "below the minimum" },
			{ "data overlap", O_DATA_BYTES, 8,
			  sb.md_offset + 4096, "data area [0, " },
			{ "md dev", O_MD_DEV_BYTES, 8, dev + 4096,
			  "truncated" },
			{ "md offset align", O_MD_OFFSET, 8,
			  sb.md_offset + 512, "metadata area" },
			{ "md bytes", O_MD_BYTES, 8, sb.md_bytes + 4096,
			  "metadata area" },
			{ "md bytes huge", O_MD_BYTES, 8,
			  UINT64_MAX & ~4095ull,
			  "extends past the end of the metadata device" },
			{ "sb0 align", O_SB_OFFSET0, 8, sb.sb_offset[0] + 1,
			  "superblock slot 0" },
			{ "sb1 past end", O_SB_OFFSET1, 8, dev,
			  "superblock slot 1 area [" },
			{ "sb overlap", O_SB_OFFSET1, 8, sb.sb_offset[0],
			  "overlaps the superblock slot 1" },
			{ "sb outside md", O_SB_OFFSET0, 8, 0,
			  "outside the metadata area" },
			{ "gran", O_BM_GRAN, 4, 3000, "granularity 3000" },
			{ "gran big", O_BM_GRAN, 4, 2u << 20, "granularity" },
			{ "bm count 0", O_BM_NR_SLOTS, 4, 0, "bitmap count 0" },
			{ "bm count 5", O_BM_NR_SLOTS, 4, 5, "bitmap count 5" },
			{ "bm count fits", O_BM_NR_SLOTS, 4, 2,
			  "bitmap area" },
			{ "bm offset", O_BM_OFFSET, 8, sb.md_offset + 4096,
			  "overlaps" },
			{ "bm past end", O_BM_OFFSET, 8, dev - 4096,
			  "bitmap area [1073737728, " },
			{ "bm bytes small", O_BM_BYTES, 8, 4096,
			  "bitmap size 4096 is smaller" },
			{ "bm bytes align", O_BM_BYTES, 8, sb.bm_bytes + 1,
			  "multiple of 4096" },
			{ "bm bytes huge", O_BM_BYTES, 8, 2 * dev,
			  "do not fit" },
			{ "al offset", O_AL_OFFSET, 8, sb.sb_offset[1],
			  "activity-log area" },
			{ "al into data", O_AL_OFFSET, 8, sb.md_offset - ring,
			  "activity-log area" },
			{ "al ring", O_AL_RING_BLOCKS, 4,
			  sb.al_ring_blocks + 1, "activity-log ring" },
			{ "al slots", O_AL_NR_SLOTS, 4, AL_SLOTS_MIN - 1,
			  "activity-log slot count" },
			{ "al shift", O_AL_EXTENT_SHIFT, 4, 19,
			  "extent shift 19" },
			{ "peer flags", O_PEERS + 4, 4, 4,
			  "peer slot 0: unknown flag bits" },
			{ "peer node", O_PEERS + 16, 4, 40,
			  "peer slot 1: node id 40" },
			{ "peer unused", O_PEERS + 4, 4, MD_PF_PEER_OUTDATED,
			  "peer slot 0 is not in use" },
			{ "peer no bitmap", O_PEERS + 16 + 4, 4, MD_PF_USED,
			  "peer slot 1 is in use but only 1 bitmap" },
			/* node_id and flags of peer 0 in one 8-byte edit */
			{ "peer own id", O_PEERS, 8, 3ull << 32 | MD_PF_USED,
			  "own node id 3" },
		};

		run_field_cases(&sb, dev, cases, ARRAY_SIZE(cases));
	}
}

static void test_fields_external(void **state)
{
	const uint64_t dev = 64 * MiB;
	struct md_super sb;

	(void)state;
	layout_ok(MD_EXTERNAL, 256 * GiB, dev, 0, 2, &sb);
	sb.peers[0] = (struct md_peer){ 5, MD_PF_USED, 0x77 };
	{
		uint8_t buf[MD_SB_SIZE];
		struct md_super out;
		char why[256];

		/* Two used peer slots with the same node id. */
		sb.peers[1] = (struct md_peer){ 5, MD_PF_USED, 0 };
		assert_int_equal(md_encode(&sb, buf), -EINVAL);
		sb.peers[1].node_id = 6;
		encode_ok(&sb, dev, buf);
		wr_be(buf, O_PEERS + 16, 4, 5);
		fix_crc(buf);
		why[0] = '\0';
		assert_int_equal(md_decode(buf, dev, &out, why, sizeof(why)),
				 -EUCLEAN);
		assert_non_null(strstr(why, "peer slots 0 and 1 both have node id 5"));
	}
	{
		const struct field_case cases[] = {
			/* The bitmap runs past a device that is too short. */
			{ "bm past end", O_BM_OFFSET, 8, dev - 8192,
			  "bitmap area [67100672, " },
			{ "md past end", O_MD_BYTES, 8, dev + 4096,
			  "metadata area [0, 67112960) extends past the end of the metadata device (67108864 bytes)" },
			{ "al overlap sb", O_AL_OFFSET, 8, 4096,
			  "overlaps" },
		};

		run_field_cases(&sb, dev, cases, ARRAY_SIZE(cases));
	}
}

/* The md device shrank (or a smaller device was substituted). */
static void test_truncated_device(void **state)
{
	uint8_t buf[MD_SB_SIZE];
	struct md_super sb, out;
	char why[256];

	(void)state;
	layout_ok(MD_EXTERNAL, 1 * TiB, 1 * GiB, 0, 1, &sb);
	encode_ok(&sb, 1 * GiB, buf);
	/* Grown is fine: the areas are still there. */
	assert_int_equal(md_decode(buf, 2 * GiB, &out, why, sizeof(why)), 0);
	why[0] = '\0';
	assert_int_equal(md_decode(buf, sb.md_bytes, &out, why, sizeof(why)),
			 -EUCLEAN);
	assert_non_null(strstr(why, "truncated"));
	assert_non_null(strstr(why, "md_dev_bytes 1073741824"));

	/* Recorded size tells the truth, areas do not fit: name the area. */
	wr_be(buf, O_MD_DEV_BYTES, 8, sb.md_bytes - 4096);
	fix_crc(buf);
	why[0] = '\0';
	assert_int_equal(md_decode(buf, sb.md_bytes - 4096, &out, why,
				   sizeof(why)),
			 -EUCLEAN);
	assert_non_null(strstr(why, "extends past the end of the metadata device"));
}

static void test_encode_rejects(void **state)
{
	uint8_t buf[MD_SB_SIZE];
	struct md_super sb, bad;

	(void)state;
	layout_ok(MD_INTERNAL, 1 * GiB, 0, 0, 1, &sb);
	bad = sb;
	bad.version = 2;
	assert_int_equal(md_encode(&bad, buf), -EINVAL);
	bad = sb;
	bad.node_id = MD_NODE_ID_MAX + 1;
	assert_int_equal(md_encode(&bad, buf), -EINVAL);
	bad = sb;
	bad.flags = 1u << 20;
	assert_int_equal(md_encode(&bad, buf), -EINVAL);
	bad = sb;
	bad.bm_offset += 4096; /* runs into the AL ring */
	assert_int_equal(md_encode(&bad, buf), -EINVAL);
	assert_int_equal(md_encode(&sb, buf), 0);
}

static void test_layout_fresh_fields(void **state)
{
	struct md_super a, b;
	time_t before = time(NULL);

	(void)state;
	layout_ok(MD_INTERNAL, 1 * GiB, 0, 0, 1, &a);
	layout_ok(MD_INTERNAL, 1 * GiB, 0, 0, 1, &b);
	assert_int_not_equal(a.device_uuid, b.device_uuid);
	assert_true(a.created >= (uint64_t)before &&
		    a.created <= (uint64_t)time(NULL));
	assert_int_equal(a.node_id, 3);
	assert_int_equal(a.current_uuid, 0);
	assert_int_equal(a.flags, MD_F_AL_CLEAN);
	for (int i = 0; i < MD_MAX_PEERS; i++)
		assert_int_equal(a.peers[i].flags, 0);
}

static void test_sb_offsets(void **state)
{
	uint64_t off[2];

	(void)state;
	assert_int_equal(md_sb_offsets(MD_INTERNAL, 1 * GiB + 1000, off), 0);
	assert_int_equal(off[0], 1 * GiB - 8192);
	assert_int_equal(off[1], 1 * GiB - 4096);
	assert_int_equal(md_sb_offsets(MD_EXTERNAL, 8192, off), 0);
	assert_int_equal(off[0], 0);
	assert_int_equal(off[1], 4096);
	assert_int_equal(md_sb_offsets(MD_INTERNAL, 8191, off), -ENOSPC);
	assert_int_equal(md_sb_offsets(MD_EXTERNAL, 4096, off), -ENOSPC);
	assert_int_equal(md_sb_offsets(7, 1 * GiB, off), -EINVAL);
}

static void test_uuid_rotate(void **state)
{
	struct md_super sb = { 0 };

	(void)state;
	md_uuid_rotate(&sb, 0xa);
	assert_int_equal(sb.current_uuid, 0xa);
	for (int i = 0; i < MD_HISTORY; i++)
		assert_int_equal(sb.history[i], 0); /* 0 is not history */
	md_uuid_rotate(&sb, 0xb);
	assert_int_equal(sb.current_uuid, 0xb);
	assert_int_equal(sb.history[0], 0xa);
	assert_int_equal(sb.history[1], 0);
	for (uint64_t u = 0xc; u <= 0xf; u++)
		md_uuid_rotate(&sb, u);
	/* Newest first; the oldest (0xa) fell off the end. */
	assert_int_equal(sb.current_uuid, 0xf);
	assert_int_equal(sb.history[0], 0xe);
	assert_int_equal(sb.history[1], 0xd);
	assert_int_equal(sb.history[2], 0xc);
	assert_int_equal(sb.history[3], 0xb);
}

static void test_names(void **state)
{
	char buf[256], small[6];

	(void)state;
	assert_string_equal(md_placement_name(MD_INTERNAL), "internal");
	assert_string_equal(md_placement_name(MD_EXTERNAL), "external");
	assert_string_equal(md_placement_name(9), "unknown");
	assert_string_equal(md_flags_str(0, buf, sizeof(buf)), "");
	assert_string_equal(md_flags_str(MD_F_CONSISTENT | MD_F_WAS_UP_TO_DATE,
					 buf, sizeof(buf)),
			    "consistent,was-up-to-date");
	assert_string_equal(md_flags_str(MD_F_ALL, buf, sizeof(buf)),
			    "consistent,was-up-to-date,primary,crashed-primary,full-sync,al-clean,connected");
	assert_string_equal(md_flags_str(MD_F_AL_CLEAN | 1u << 9, buf,
					 sizeof(buf)),
			    "al-clean,0x200");
	/* Truncated, never overrun. */
	memset(small, 'x', sizeof(small));
	assert_string_equal(md_flags_str(MD_F_ALL, small, sizeof(small)),
			    "consi");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_internal),
		cmocka_unit_test(test_layout_external),
		cmocka_unit_test(test_layout_too_small),
		cmocka_unit_test(test_layout_bad_params),
		cmocka_unit_test(test_layout_fresh_fields),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_byte_format),
		cmocka_unit_test(test_flip_every_byte),
		cmocka_unit_test(test_blank_and_foreign),
		cmocka_unit_test(test_unknown_version),
		cmocka_unit_test(test_bad_crc),
		cmocka_unit_test(test_fields_internal),
		cmocka_unit_test(test_fields_external),
		cmocka_unit_test(test_truncated_device),
		cmocka_unit_test(test_encode_rejects),
		cmocka_unit_test(test_sb_offsets),
		cmocka_unit_test(test_uuid_rotate),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
