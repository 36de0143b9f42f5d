// SPDX-License-Identifier: MIT
/*
 * Metadata I/O on sparse temporary files: create/load round trips for both
 * placements, the data area left untouched, two-slot crash safety against
 * torn superblock writes, probe and wipe, bitmap and activity-log
 * persistence, and the errors a damaged or mismatched device must produce.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "crc.h"
#include "mdio.h"
#include "util.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)

#define MAX_FILES 4
static char paths[MAX_FILES][32];
static int nr_paths;

/* A sparse temp file of @size bytes, removed by the teardown. */
static const char *mkfile(uint64_t size)
{
	char *p = paths[nr_paths];
	int fd;

	assert_true(nr_paths < MAX_FILES);
	strcpy(p, "/tmp/duet-mdio-XXXXXX");
	fd = mkstemp(p);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
	nr_paths++;
	return p;
}

static int cleanup(void **state)
{
	(void)state;
	for (int i = 0; i < nr_paths; i++)
		unlink(paths[i]);
	nr_paths = 0;
	return 0;
}

static void pread_file(const char *path, void *buf, size_t len, uint64_t off)
{
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static void pwrite_file(const char *path, const void *buf, size_t len,
			uint64_t off)
{
	int fd = open(path, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static uint8_t pattern(uint64_t i)
{
	return (uint8_t)(i * 31 + (i >> 12) + 7);
}

static void fill_pattern(const char *path, uint64_t size)
{
	uint8_t *buf = malloc(size);

	assert_non_null(buf);
	for (uint64_t i = 0; i < size; i++)
		buf[i] = pattern(i);
	pwrite_file(path, buf, size, 0);
	free(buf);
}

/* [from, to) of @path still holds the pattern. */
static void assert_pattern(const char *path, uint64_t from, uint64_t to)
{
	uint8_t *buf = malloc(to - from);

	assert_non_null(buf);
	pread_file(path, buf, to - from, from);
	for (uint64_t i = from; i < to; i++)
		if (buf[i - from] != pattern(i))
			fail_msg("%s: byte %llu changed", path,
				 (unsigned long long)i);
	free(buf);
}

static void open_ok(struct mdio *m, const char *data, const char *md,
		    unsigned int flags)
{
	char why[256] = "";
	int ret = mdio_open(m, data, md, flags, why, sizeof(why));

	if (ret)
		fail_msg("mdio_open: %d %s", ret, why);
}

static void create_ok(struct mdio *m, enum md_placement p, bool full_sync)
{
	struct md_geometry g = { .placement = p, .node_id = 1 };
	char why[256] = "";
	int ret = mdio_create(m, &g, full_sync, why, sizeof(why));

	if (ret)
		fail_msg("mdio_create: %d %s", ret, why);
}

static void load_ok(struct mdio *m)
{
	char why[512] = "";
	int ret = mdio_load(m, why, sizeof(why));

	if (ret)
		fail_msg("mdio_load: %d %s", ret, why);
}

static int load_err(struct mdio *m, char *why, size_t len)
{
	why[0] = '\0';
	return mdio_load(m, why, len);
}

/* Create, close, reopen, load: what survives is what is on disk. */
static void roundtrip(const char *data, const char *md, enum md_placement p)
{
	struct md_super made;
	struct mdio m;
	char why[256];

	open_ok(&m, data, md, 0);
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 0);
	create_ok(&m, p, false);
	made = m.sb;
	assert_int_equal(made.placement, p);
	assert_int_equal(made.node_id, 1);
	mdio_close(&m);

	open_ok(&m, data, md, MDIO_RDONLY);
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 1);
	load_ok(&m);
	/* Both slots written, seq 1 and 2; the newer one is used. */
	assert_string_equal(m.slot_state[0], "valid seq 1");
	assert_string_equal(m.slot_state[1], "valid seq 2");
	assert_int_equal(m.sb_slot, 1);
	assert_int_equal(m.sb.seq, 2);
	assert_int_equal(m.sb.device_uuid, made.device_uuid);
	assert_int_equal(m.sb.created, made.created);
	assert_int_equal(m.sb.data_bytes, made.data_bytes);
	assert_int_equal(m.sb.bm_offset, made.bm_offset);
	assert_int_equal(m.sb.al_offset, made.al_offset);
	assert_int_equal(m.sb.flags, MD_F_AL_CLEAN);
	assert_non_null(m.bm);
	assert_non_null(m.al);
	assert_int_equal(bm_dev_sectors(m.bm), m.sb.data_bytes >> 9);
	assert_int_equal(bm_count(m.bm), 0);
	assert_int_equal(al_nr_active(m.al), 0);
	assert_int_equal(al_nr_slots(m.al), m.sb.al_nr_slots);
	mdio_close(&m);
}

static void test_roundtrip_internal(void **state)
{
	const char *data = mkfile(1 * GiB);
	uint8_t magic[8];
	struct mdio m;

	(void)state;
	roundtrip(data, NULL, MD_INTERNAL);
	/* The slots are the last 8 KiB of the device. */
	pread_file(data, magic, 8, 1 * GiB - 8192);
	assert_memory_equal(magic, "DUETMDv1", 8);
	pread_file(data, magic, 8, 1 * GiB - 4096);
	assert_memory_equal(magic, "DUETMDv1", 8);
	open_ok(&m, data, NULL, 0);
	load_ok(&m);
	assert_true(m.internal);
	assert_int_equal(m.sb.md_offset + m.sb.md_bytes, 1 * GiB);
	mdio_close(&m);
}

static void test_roundtrip_external(void **state)
{
	const char *data = mkfile(1 * GiB);
	const char *md = mkfile(64 * MiB);
	uint8_t magic[8];
	struct mdio m;
	char why[256];

	(void)state;
	roundtrip(data, md, MD_EXTERNAL);
	pread_file(md, magic, 8, 0);
	assert_memory_equal(magic, "DUETMDv1", 8);
	open_ok(&m, data, md, 0);
	load_ok(&m);
	assert_false(m.internal);
	assert_int_equal(m.sb.data_bytes, 1 * GiB);
	assert_int_equal(m.sb.md_dev_bytes, 64 * MiB);
	mdio_close(&m);

	/* The backing device alone has no internal metadata. */
	open_ok(&m, data, NULL, 0);
	assert_int_equal(load_err(&m, why, sizeof(why)), -ENODATA);
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 0);
	mdio_close(&m);
}

static void test_full_sync(void **state)
{
	const char *data = mkfile(256 * MiB + 4096);
	struct mdio m;

	(void)state;
	open_ok(&m, data, NULL, 0);
	create_ok(&m, MD_INTERNAL, true);
	mdio_close(&m);
	open_ok(&m, data, NULL, 0);
	load_ok(&m);
	assert_true(m.sb.flags & MD_F_FULL_SYNC);
	assert_int_equal(bm_count(m.bm), bm_nr_bits(m.bm));
	mdio_close(&m);
}

/* Nothing outside the metadata area changes, whatever mdio does. */
static void exercise(struct mdio *m)
{
	uint8_t block[AL_BLOCK_SIZE];
	char why[256];

	load_ok(m);
	m->sb.current_uuid = 0x1234;
	assert_int_equal(mdio_write_sb(m), 0);
	assert_int_equal(mdio_write_sb(m), 0);
	bm_set_all(m->bm);
	assert_int_equal(mdio_flush_bm(m), 0);
	memset(block, 0, sizeof(block));
	assert_int_equal(mdio_write_al_block(m, m->sb.al_ring_blocks - 1,
					     block),
			 0);
	load_ok(m);
	assert_int_equal(bm_count(m->bm), bm_nr_bits(m->bm));
	assert_int_equal(mdio_wipe(m, why, sizeof(why)), 0);
	assert_int_equal(mdio_probe(m, why, sizeof(why)), 0);
}

static void test_data_untouched_internal(void **state)
{
	/* Not a 4 KiB multiple: the odd tail must survive too. */
	const uint64_t size = 8 * MiB + 1000;
	const char *data = mkfile(size);
	uint64_t data_bytes, md_end;
	struct mdio m;

	(void)state;
	fill_pattern(data, size);
	open_ok(&m, data, NULL, 0);
	create_ok(&m, MD_INTERNAL, true);
	data_bytes = m.sb.data_bytes;
	md_end = m.sb.md_offset + m.sb.md_bytes;
	assert_int_equal(md_end, 8 * MiB);
	assert_pattern(data, 0, data_bytes);
	exercise(&m);
	mdio_close(&m);
	assert_pattern(data, 0, data_bytes);
	assert_pattern(data, md_end, size);
}

static void test_data_untouched_external(void **state)
{
	const uint64_t dsize = 8 * MiB, msize = 1 * MiB;
	const char *data = mkfile(dsize);
	const char *md = mkfile(msize);
	uint64_t md_end;
	struct mdio m;

	(void)state;
	fill_pattern(data, dsize);
	fill_pattern(md, msize);
	open_ok(&m, data, md, 0);
	create_ok(&m, MD_EXTERNAL, false);
	md_end = m.sb.md_offset + m.sb.md_bytes;
	exercise(&m);
	mdio_close(&m);
	assert_pattern(data, 0, dsize);
	/* The md device past the metadata area is not ours either. */
	assert_pattern(md, md_end, msize);
}

/* Overwrite half @half (0 or 1) of the slot at @off with junk. */
static void tear(const char *path, uint64_t off, int half)
{
	uint8_t junk[MD_SB_SIZE / 2];

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i ^ 0xa5);
	pwrite_file(path, junk, sizeof(junk),
		    off + (uint64_t)half * sizeof(junk));
}

static void test_two_slot_crash(void **state)
{
	const char *data = mkfile(1 * GiB);
	uint8_t before[MD_SB_SIZE], after[MD_SB_SIZE];
	uint64_t off0, off1;
	struct mdio m;
	char why[512];

	(void)state;
	open_ok(&m, data, NULL, 0);
	create_ok(&m, MD_INTERNAL, false);
	off0 = m.sb.sb_offset[0];
	off1 = m.sb.sb_offset[1];
	/* Writes alternate: seq 3 -> slot 0, 4 -> slot 1, 5 -> slot 0. */
	for (uint64_t seq = 3; seq <= 5; seq++) {
		m.sb.current_uuid = 0x100 + seq;
		assert_int_equal(mdio_write_sb(&m), 0);
		assert_int_equal(m.sb.seq, seq);
		assert_int_equal(m.sb_slot, (int)(seq % 2 ? 0 : 1));
	}
	mdio_close(&m);

	/* The newest write (slot 0, seq 5) was torn in its second half. */
	tear(data, off0, 1);
	open_ok(&m, data, NULL, 0);
	load_ok(&m);
	assert_int_equal(m.sb_slot, 1);
	assert_int_equal(m.sb.seq, 4);
	assert_int_equal(m.sb.current_uuid, 0x104);
	assert_non_null(strstr(m.slot_state[0], "CRC mismatch"));
	assert_string_equal(m.slot_state[1], "valid seq 4");

	/* The next write must go over the torn slot, never the good one. */
	pread_file(data, before, sizeof(before), off1);
	m.sb.current_uuid = 0x999;
	assert_int_equal(mdio_write_sb(&m), 0);
	assert_int_equal(m.sb_slot, 0);
	assert_int_equal(m.sb.seq, 5);
	pread_file(data, after, sizeof(after), off1);
	assert_memory_equal(before, after, sizeof(before));
	mdio_close(&m);
	open_ok(&m, data, NULL, MDIO_RDONLY);
	load_ok(&m);
	assert_int_equal(m.sb.current_uuid, 0x999);
	assert_int_equal(m.sb_slot, 0);
	mdio_close(&m);

	/* A write torn in its first half (magic gone) loses the same way. */
	open_ok(&m, data, NULL, 0);
	load_ok(&m);
	m.sb.current_uuid = 0xaaa;
	assert_int_equal(mdio_write_sb(&m), 0); /* seq 6, slot 1 */
	mdio_close(&m);
	tear(data, off1, 0);
	open_ok(&m, data, NULL, 0);
	load_ok(&m);
	assert_int_equal(m.sb.seq, 5);
	assert_int_equal(m.sb.current_uuid, 0x999);
	assert_non_null(strstr(m.slot_state[1], "magic"));

	/* Both slots corrupt: the error names the CRC and both slots. */
	mdio_close(&m);
	tear(data, off0, 1);
	tear(data, off1, 1);
	open_ok(&m, data, NULL, 0);
	memcpy(before, "DUETMDv1", 8); /* slot 1's magic back */
	pwrite_file(data, before, 8, off1);
	assert_int_equal(load_err(&m, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "CRC mismatch"));
	assert_non_null(strstr(why, "slot 0"));
	assert_non_null(strstr(why, "slot 1"));
	assert_null(m.bm);
	mdio_close(&m);
}

/* Corrupt slot @off of @path by flipping one byte past the magic. */
static void flip(const char *path, uint64_t off)
{
	uint8_t b;

	pread_file(path, &b, 1, off + 100);
	b ^= 0x40;
	pwrite_file(path, &b, 1, off + 100);
}

static void test_most_informative_error(void **state)
{
	const char *data = mkfile(1 * GiB);
	uint8_t zero[MD_SB_SIZE] = { 0 }, slot[MD_SB_SIZE];
	uint64_t off[2];
	struct mdio m;
	char why[512];

	(void)state;
	open_ok(&m, data, NULL, 0);
	create_ok(&m, MD_INTERNAL, false);
	off[0] = m.sb.sb_offset[0];
	off[1] = m.sb.sb_offset[1];
	mdio_close(&m);

	/* A CRC mismatch beats "blank", whichever slot holds it. */
	for (int bad = 0; bad < 2; bad++) {
		open_ok(&m, data, NULL, 0);
		create_ok(&m, MD_INTERNAL, false);
		mdio_close(&m);
		pwrite_file(data, zero, sizeof(zero), off[!bad]);
		flip(data, off[bad]);
		open_ok(&m, data, NULL, 0);
		assert_int_equal(load_err(&m, why, sizeof(why)), -EBADMSG);
		assert_string_equal(m.slot_state[!bad],
				    "blank (all zeroes): no superblock");
		/* Our magic is there: create-md must not overwrite it. */
		assert_int_equal(mdio_probe(&m, why, sizeof(why)), 1);
		mdio_close(&m);
	}

	/* A newer duet's superblock beats a damaged one: -EPROTO. */
	open_ok(&m, data, NULL, 0);
	create_ok(&m, MD_INTERNAL, false);
	mdio_close(&m);
	pread_file(data, slot, sizeof(slot), off[0]);
	slot[11] = 2; /* version 2, big-endian at offset 8 */
	slot[12] = slot[13] = slot[14] = slot[15] = 0;
	{
		uint32_t crc = crc32c(slot, sizeof(slot));

		slot[12] = (uint8_t)(crc >> 24);
		slot[13] = (uint8_t)(crc >> 16);
		slot[14] = (uint8_t)(crc >> 8);
		slot[15] = (uint8_t)crc;
	}
	pwrite_file(data, slot, sizeof(slot), off[0]);
	flip(data, off[1]);
	open_ok(&m, data, NULL, 0);
	assert_int_equal(load_err(&m, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "unknown metadata version 2"));
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 1);
	mdio_close(&m);

	/* Both blank. */
	pwrite_file(data, zero, sizeof(zero), off[0]);
	pwrite_file(data, zero, sizeof(zero), off[1]);
	open_ok(&m, data, NULL, 0);
	assert_int_equal(load_err(&m, why, sizeof(why)), -ENODATA);
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 0);
	mdio_close(&m);
}

static void test_probe_and_wipe(void **state)
{
	const char *data = mkfile(1 * GiB);
	uint8_t page[BM_PAGE_SIZE];
	uint64_t bm_off;
	struct mdio m;
	char why[256];

	(void)state;
	open_ok(&m, data, NULL, 0);
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 0);
	create_ok(&m, MD_INTERNAL, true);
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 1);
	/* One slot corrupted, the other valid: still present. */
	flip(data, m.sb.sb_offset[1]);
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 1);
	bm_off = m.sb.bm_offset;

	why[0] = 'x';
	assert_int_equal(mdio_wipe(&m, why, sizeof(why)), 0);
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 0);
	assert_int_equal(load_err(&m, why, sizeof(why)), -ENODATA);
	assert_non_null(strstr(why, "blank"));
	/* Only the superblock slots: the bitmap is still all ones. */
	pread_file(data, page, sizeof(page), bm_off);
	assert_int_equal(page[0], 0xff);
	assert_int_equal(page[4095], 0xff);
	mdio_close(&m);
}

static void test_bm_persist(void **state)
{
	const char *data = mkfile(1 * GiB);
	struct mdio m;
	uint64_t last, pages, count;

	(void)state;
	open_ok(&m, data, NULL, 0);
	create_ok(&m, MD_INTERNAL, false);
	pages = bm_nr_pages(m.bm);
	assert_true(pages >= 6);
	last = (m.sb.data_bytes >> 9) - 8;
	/* Page 0, page 5 and the very last granule. */
	assert_true(bm_set_range(m.bm, 8, 8) > 0);
	/* bit 5 * BM_BITS_PER_PAGE + 2: 8 sectors per 4 KiB bit */
	assert_true(bm_set_range(m.bm, (5ull * BM_BITS_PER_PAGE + 2) * 8, 1) >
		    0);
	assert_true(bm_set_range(m.bm, last, 8) > 0);
	count = bm_count(m.bm);
	assert_int_equal(count, 3);

	/* Only page 0 is written: the others stay changed. */
	assert_int_equal(mdio_write_bm_range(&m, 0, 0), 0);
	assert_false(bm_page_changed(m.bm, 0));
	assert_true(bm_page_changed(m.bm, 5));
	{
		struct mdio r;

		open_ok(&r, data, NULL, MDIO_RDONLY);
		load_ok(&r);
		assert_int_equal(bm_count(r.bm), 1);
		assert_true(bm_test_bit(r.bm, 1));
		mdio_close(&r);
	}

	assert_int_equal(mdio_flush_bm(&m), 0);
	for (uint64_t p = 0; p < pages; p++)
		assert_false(bm_page_changed(m.bm, p));
	mdio_close(&m);

	open_ok(&m, data, NULL, 0);
	load_ok(&m);
	assert_int_equal(bm_count(m.bm), count);
	assert_true(bm_test_bit(m.bm, 1));
	assert_true(bm_test_bit(m.bm, 5ull * BM_BITS_PER_PAGE + 2));
	assert_true(bm_test_bit(m.bm, bm_nr_bits(m.bm) - 1));
	assert_false(bm_test_bit(m.bm, 0));

	/* Clearing persists too. */
	assert_true(bm_clear_range(m.bm, 8, 8) == 1);
	assert_int_equal(mdio_flush_bm(&m), 0);
	load_ok(&m);
	assert_int_equal(bm_count(m.bm), count - 1);
	assert_false(bm_test_bit(m.bm, 1));
	mdio_close(&m);
}

static void test_bm_corrupt_page(void **state)
{
	const char *data = mkfile(1 * GiB);
	uint64_t off, pages;
	uint8_t ff = 0xff;
	struct mdio m;
	char why[512];

	(void)state;
	open_ok(&m, data, NULL, 0);
	create_ok(&m, MD_INTERNAL, false);
	pages = bm_nr_pages(m.bm);
	/* The data area is not a whole number of pages of bits. */
	assert_true(bm_nr_bits(m.bm) < pages * BM_BITS_PER_PAGE);
	off = mdio_bm_page_offset(&m, pages - 1) + BM_PAGE_SIZE - 1;
	mdio_close(&m);
	pwrite_file(data, &ff, 1, off);
	open_ok(&m, data, NULL, 0);
	assert_int_equal(load_err(&m, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "bitmap page"));
	assert_null(m.bm);
	assert_null(m.al);
	mdio_close(&m);
}

static void test_al_roundtrip(void **state)
{
	const char *data = mkfile(1 * GiB);
	const char *md = mkfile(4 * MiB);
	uint8_t block[AL_BLOCK_SIZE];
	uint64_t sector = 300ull * MiB / 512, s, n;
	uint32_t ring_blk, e, found = AL_EXTENT_NONE;
	struct mdio m;

	(void)state;
	open_ok(&m, data, md, 0);
	create_ok(&m, MD_EXTERNAL, false);
	assert_true(al_begin_io(m.al, sector, 8) > 0);
	assert_true(al_txn_pending(m.al));
	assert_int_equal(al_txn_encode(m.al, block, &ring_blk), 0);
	assert_true(ring_blk < m.sb.al_ring_blocks);
	assert_int_equal(mdio_write_al_block(&m, ring_blk, block), 0);
	al_txn_committed(m.al);
	al_complete_io(m.al, sector, 8);
	/* Beyond the ring: refused. */
	assert_int_equal(mdio_write_al_block(&m, m.sb.al_ring_blocks, block),
			 -EINVAL);
	mdio_close(&m);

	open_ok(&m, data, md, MDIO_RDONLY);
	load_ok(&m);
	assert_int_equal(al_nr_active(m.al), 1);
	for (uint32_t i = 0; i < al_nr_slots(m.al); i++) {
		e = al_slot_extent(m.al, i);
		if (e != AL_EXTENT_NONE)
			found = e;
	}
	assert_int_not_equal(found, AL_EXTENT_NONE);
	al_extent_range(m.al, found, &s, &n);
	assert_true(s <= sector && sector + 8 <= s + n);
	/* The block sits where mdio says: the ring of the md device. */
	{
		uint8_t disk[AL_BLOCK_SIZE];

		pread_file(md, disk, sizeof(disk),
			   mdio_al_block_offset(&m, ring_blk));
		assert_memory_equal(disk, block, sizeof(disk));
	}
	mdio_close(&m);
}

static void test_open_errors(void **state)
{
	const char *data = mkfile(1 * GiB);
	struct mdio m;
	char why[256];

	(void)state;
	why[0] = '\0';
	assert_int_equal(mdio_open(&m, "/tmp/duet-no-such-file", NULL, 0, why,
				   sizeof(why)),
			 -ENOENT);
	assert_non_null(strstr(why, "/tmp/duet-no-such-file"));
	why[0] = '\0';
	assert_int_equal(mdio_open(&m, "/dev/null", NULL, MDIO_RDONLY, why,
				   sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "neither a block device nor a regular file"));
	why[0] = '\0';
	assert_int_equal(mdio_open(&m, data, data, 0, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "same device"));

	/* Read-only: nothing may be written. */
	open_ok(&m, data, NULL, MDIO_RDONLY);
	{
		struct md_geometry g = { .placement = MD_INTERNAL };

		assert_int_equal(mdio_create(&m, &g, false, why, sizeof(why)),
				 -EBADF);
	}
	assert_int_equal(mdio_wipe(&m, why, sizeof(why)), -EBADF);
	mdio_close(&m);

	/* Placement of the geometry must match how the devices were opened. */
	open_ok(&m, data, NULL, 0);
	{
		struct md_geometry g = { .placement = MD_EXTERNAL };

		assert_int_equal(mdio_create(&m, &g, false, why, sizeof(why)),
				 -EINVAL);
	}
	mdio_close(&m);
}

static void test_too_small(void **state)
{
	const char *data = mkfile(1 * MiB);
	const char *big = mkfile(1 * GiB);
	const char *md = mkfile(16 * KiB);
	struct md_geometry g = { .placement = MD_INTERNAL };
	struct mdio m;
	char why[256];

	(void)state;
	fill_pattern(data, 1 * MiB);
	open_ok(&m, data, NULL, 0);
	why[0] = '\0';
	assert_int_equal(mdio_create(&m, &g, false, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "too small"));
	mdio_close(&m);
	/* Refused before anything was written. */
	assert_pattern(data, 0, 1 * MiB);

	open_ok(&m, big, md, 0);
	g.placement = MD_EXTERNAL;
	why[0] = '\0';
	assert_int_equal(mdio_create(&m, &g, false, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "external metadata device of 16384 bytes"));
	mdio_close(&m);
}

/* A superblock that is intact but belongs elsewhere. */
static void test_misplaced_superblock(void **state)
{
	const char *data = mkfile(1 * GiB);
	const char *ext = mkfile(1 * GiB);
	const char *md = mkfile(4 * MiB);
	uint8_t slots[2 * MD_SB_SIZE];
	struct mdio m;
	char why[512];

	(void)state;
	/* The device grew by 8 KiB; the old slots were copied to the new
	 * end, but they still name their old offsets. */
	open_ok(&m, data, NULL, 0);
	create_ok(&m, MD_INTERNAL, false);
	mdio_close(&m);
	pread_file(data, slots, sizeof(slots), 1 * GiB - 8192);
	pwrite_file(data, slots, sizeof(slots), 1 * GiB);
	open_ok(&m, data, NULL, 0);
	assert_int_equal(m.md_dev_bytes, 1 * GiB + 8192);
	assert_int_equal(load_err(&m, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "does not match the slot's offset"));
	mdio_close(&m);

	/* External metadata found where internal metadata would be. */
	open_ok(&m, ext, md, 0);
	create_ok(&m, MD_EXTERNAL, false);
	mdio_close(&m);
	pread_file(md, slots, sizeof(slots), 0);
	pwrite_file(ext, slots, sizeof(slots), 1 * GiB - 8192);
	open_ok(&m, ext, NULL, 0);
	assert_int_equal(load_err(&m, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "describes external metadata, opened as internal"));
	mdio_close(&m);
}

static void test_truncated_devices(void **state)
{
	const char *data = mkfile(1 * GiB);
	const char *md = mkfile(4 * MiB);
	uint64_t md_bytes;
	struct mdio m;
	char why[512];

	(void)state;
	open_ok(&m, data, md, 0);
	create_ok(&m, MD_EXTERNAL, false);
	md_bytes = m.sb.md_bytes;
	mdio_close(&m);

	/* The md device lost its tail. */
	assert_int_equal(truncate(md, (off_t)(md_bytes - 4096)), 0);
	open_ok(&m, data, md, 0);
	assert_int_equal(load_err(&m, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "truncated"));
	/* Still "somebody's metadata" for create-md. */
	assert_int_equal(mdio_probe(&m, why, sizeof(why)), 1);
	mdio_close(&m);

	/* The md device is back, the data device shrank. */
	assert_int_equal(truncate(md, 4 * MiB), 0);
	assert_int_equal(truncate(data, 512 * MiB), 0);
	open_ok(&m, data, md, 0);
	assert_int_equal(load_err(&m, why, sizeof(why)), -EUCLEAN);
	assert_non_null(strstr(why, "exceeds the backing device"));
	mdio_close(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_roundtrip_internal, cleanup),
		cmocka_unit_test_teardown(test_roundtrip_external, cleanup),
		cmocka_unit_test_teardown(test_full_sync, cleanup),
		cmocka_unit_test_teardown(test_data_untouched_internal,
					  cleanup),
		cmocka_unit_test_teardown(test_data_untouched_external,
					  cleanup),
		cmocka_unit_test_teardown(test_two_slot_crash, cleanup),
		cmocka_unit_test_teardown(test_most_informative_error, cleanup),
		cmocka_unit_test_teardown(test_probe_and_wipe, cleanup),
		cmocka_unit_test_teardown(test_bm_persist, cleanup),
		cmocka_unit_test_teardown(test_bm_corrupt_page, cleanup),
		cmocka_unit_test_teardown(test_al_roundtrip, cleanup),
		cmocka_unit_test_teardown(test_open_errors, cleanup),
		cmocka_unit_test_teardown(test_too_small, cleanup),
		cmocka_unit_test_teardown(test_misplaced_superblock, cleanup),
		cmocka_unit_test_teardown(test_truncated_devices, cleanup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
