// SPDX-License-Identifier: MIT
/*
 * The daemon's activity-log coordinator (meta_): writes to cold extents
 * wait for a durable transaction, hot ones do not; transactions and the
 * bitmap pages of evicted extents really are on disk; parked writers are
 * woken; a metadata write error fails writes instead of letting them run
 * unprotected.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sys/eventfd.h>

#include "meta.h"

#define DISK_BYTES (64u << 20)
#define EXT_SHIFT 20 /* 1 MiB extents */
#define EXT_SECTORS (1u << (EXT_SHIFT - 9))
#define SLOTS 7

struct fx {
	char path[64];
	struct mdio m;
	struct meta *mt;
	int wake[2];
};

static int setup_common(void **state, bool track_peer)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct md_geometry g;
	char why[256];
	int fd;

	assert_non_null(f);
	snprintf(f->path, sizeof(f->path), "/var/tmp/duet-test-meta.XXXXXX");
	fd = mkstemp(f->path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, DISK_BYTES), 0);
	close(fd);
	assert_int_equal(mdio_open(&f->m, f->path, NULL, 0, why, sizeof(why)),
			 0);
	memset(&g, 0, sizeof(g));
	g.placement = MD_INTERNAL;
	g.backing_bytes = f->m.data_dev_bytes;
	g.al_nr_slots = SLOTS;
	g.al_extent_shift = EXT_SHIFT;
	assert_int_equal(mdio_create(&f->m, &g, false, why, sizeof(why)), 0);
	assert_int_equal(mdio_load(&f->m, why, sizeof(why)), 0);

	f->mt = meta_create(&f->m, 2, track_peer);
	assert_non_null(f->mt);
	for (int q = 0; q < 2; q++) {
		f->wake[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		assert_true(f->wake[q] >= 0);
		meta_set_wake_fd(f->mt, (unsigned int)q, f->wake[q]);
	}
	assert_int_equal(meta_start(f->mt), 0);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_common(state, false);
}

static int setup_peer(void **state)
{
	return setup_common(state, true);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	meta_destroy(f->mt);
	mdio_close(&f->m);
	close(f->wake[0]);
	close(f->wake[1]);
	unlink(f->path);
	free(f);
	return 0;
}

/* Wait up to 5 s for queue @q's wake eventfd; true if it fired. */
static bool woken(struct fx *f, int q)
{
	struct pollfd p = { .fd = f->wake[q], .events = POLLIN };
	uint64_t v;

	if (poll(&p, 1, 5000) != 1)
		return false;
	return read(f->wake[q], &v, sizeof(v)) == sizeof(v);
}

/* Begin a write on queue @q and wait until it may be issued. */
static void write_begin(struct fx *f, int q, uint64_t sector, uint64_t nr)
{
	int64_t n = meta_begin_io(f->mt, (unsigned int)q, sector, nr);

	assert_true(n >= 0);
	while (n > 0) {
		int r = meta_seq_ready(f->mt, (unsigned int)q, (uint64_t)n);

		assert_true(r >= 0);
		if (r)
			break;
		assert_true(woken(f, q));
	}
}

/* Load the metadata from disk again, as the next daemon would. */
static void reload(struct fx *f, struct mdio *m2)
{
	char why[256];

	assert_int_equal(mdio_open(m2, f->path, NULL, MDIO_RDONLY, why,
				   sizeof(why)),
			 0);
	assert_int_equal(mdio_load(m2, why, sizeof(why)), 0);
}

static bool al_holds(const struct al *al, uint32_t extent)
{
	for (uint32_t s = 0; s < al_nr_slots(al); s++)
		if (al_slot_extent(al, s) == extent)
			return true;
	return false;
}

static void test_cold_waits_hot_does_not(void **state)
{
	struct fx *f = *state;
	struct meta_stats st;
	struct mdio m2;
	int64_t n;

	n = meta_begin_io(f->mt, 0, 3 * EXT_SECTORS + 8, 8);
	assert_true(n > 0);
	assert_true(woken(f, 0));
	assert_int_equal(meta_seq_ready(f->mt, 0, (uint64_t)n), 1);
	meta_end_io(f->mt, 0, 3 * EXT_SECTORS + 8, 8);

	/* the same extent again: hot and durable, no transaction */
	assert_int_equal(meta_begin_io(f->mt, 1, 3 * EXT_SECTORS, 64), 0);
	meta_end_io(f->mt, 1, 3 * EXT_SECTORS, 64);
	meta_get_stats(f->mt, &st);
	assert_int_equal(st.txns, 1);
	assert_int_equal(st.al_active, 1);
	assert_int_equal(st.error, 0);

	/* the transaction is on disk: a restart sees the extent hot */
	reload(f, &m2);
	assert_true(al_holds(m2.al, 3));
	mdio_close(&m2);
}

static void test_no_peer_no_bitmap(void **state)
{
	struct fx *f = *state;
	struct meta_stats st;

	write_begin(f, 0, 0, 16);
	meta_end_io(f->mt, 0, 0, 16);
	meta_get_stats(f->mt, &st);
	assert_int_equal(st.dirty_bytes, 0);
}

static void test_peer_marks_bitmap(void **state)
{
	struct fx *f = *state;
	struct meta_stats st;

	write_begin(f, 0, 2 * EXT_SECTORS, 16);
	meta_end_io(f->mt, 0, 2 * EXT_SECTORS, 16);
	meta_get_stats(f->mt, &st);
	assert_int_equal(st.dirty_bytes, 8192);
	assert_true(bm_test_range(f->m.bm, 2 * EXT_SECTORS, 16));
}

/*
 * With every slot used, a write to a new extent evicts the least recently
 * used one; that extent's bitmap bits must reach the disk before the
 * transaction that forgets it.
 */
static void test_eviction_persists_bitmap(void **state)
{
	struct fx *f = *state;
	struct meta_stats st;
	struct mdio m2;

	for (uint64_t e = 0; e < SLOTS; e++) {
		write_begin(f, 0, e * EXT_SECTORS, 8);
		meta_end_io(f->mt, 0, e * EXT_SECTORS, 8);
	}
	meta_get_stats(f->mt, &st);
	assert_int_equal(st.bm_pages, 0);
	reload(f, &m2);
	assert_false(bm_test_range(m2.bm, 0, 8)); /* only in memory so far */
	mdio_close(&m2);

	write_begin(f, 1, 20 * EXT_SECTORS, 8);	/* evicts extent 0 */
	meta_end_io(f->mt, 1, 20 * EXT_SECTORS, 8);
	meta_get_stats(f->mt, &st);
	assert_true(st.bm_pages >= 1);
	reload(f, &m2);
	assert_false(al_holds(m2.al, 0));
	assert_true(al_holds(m2.al, 20));
	assert_true(bm_test_range(m2.bm, 0, 8));
	mdio_close(&m2);
}

/* All slots referenced: -EBUSY, and a completion elsewhere wakes us. */
static void test_busy_is_woken(void **state)
{
	struct fx *f = *state;
	uint64_t v;
	int64_t n;

	for (uint64_t e = 0; e < SLOTS; e++)
		write_begin(f, 0, e * EXT_SECTORS, 8);
	assert_int_equal(meta_begin_io(f->mt, 1, 30 * EXT_SECTORS, 8), -EBUSY);
	/* nothing woke queue 1 yet */
	assert_int_equal(read(f->wake[1], &v, sizeof(v)), -1);
	meta_end_io(f->mt, 0, 4 * EXT_SECTORS, 8);
	assert_true(woken(f, 1));
	n = meta_begin_io(f->mt, 1, 30 * EXT_SECTORS, 8);
	assert_true(n > 0);
	for (uint64_t e = 0; e < SLOTS; e++)
		if (e != 4)
			meta_end_io(f->mt, 0, e * EXT_SECTORS, 8);
	while (meta_seq_ready(f->mt, 1, (uint64_t)n) == 0)
		assert_true(woken(f, 1));
	meta_end_io(f->mt, 1, 30 * EXT_SECTORS, 8);
}

/* A transaction that cannot be written fails the writes waiting for it,
 * and every later one that would need the log. */
static void test_md_error_fails_writes(void **state)
{
	struct fx *f = *state;
	struct meta_stats st;
	int ro = open(f->path, O_RDONLY | O_CLOEXEC);
	int64_t n;

	assert_true(ro >= 0);
	/* writes to the metadata now fail with EBADF */
	assert_true(dup2(ro, f->m.md_fd) == f->m.md_fd);
	close(ro);
	n = meta_begin_io(f->mt, 0, 5 * EXT_SECTORS, 8);
	assert_true(n > 0);
	assert_true(woken(f, 0));
	assert_int_equal(meta_seq_ready(f->mt, 0, (uint64_t)n), -EIO);
	meta_end_io(f->mt, 0, 5 * EXT_SECTORS, 8);
	assert_int_equal(meta_begin_io(f->mt, 1, 6 * EXT_SECTORS, 8), -EIO);
	meta_get_stats(f->mt, &st);
	assert_int_equal(st.error, -EIO);
	assert_int_equal(st.txns, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cold_waits_hot_does_not,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_peer_no_bitmap, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_peer_marks_bitmap,
						setup_peer, teardown),
		cmocka_unit_test_setup_teardown(test_eviction_persists_bitmap,
						setup_peer, teardown),
		cmocka_unit_test_setup_teardown(test_busy_is_woken, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_md_error_fails_writes,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
