// SPDX-License-Identifier: MIT
/* rs_rate: the resync's token bucket and its yield-to-application control. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "resync.h"

#define NS 1000000000ull
#define MB 1000000ull

/*
 * Simulate a resync that sends @block bytes whenever the bucket allows,
 * for @secs simulated seconds from @t (advanced), with @busy application
 * writes. Returns the bytes sent.
 */
static uint64_t run(struct rs_rate *r, uint64_t *t, unsigned int secs,
		    uint32_t block, bool busy)
{
	uint64_t end = *t + (uint64_t)secs * NS, sent = 0;

	while (*t < end) {
		uint64_t d = rs_rate_delay(r, *t, block, busy);

		if (d)
			*t += d;
		else
			sent += block;
	}
	return sent;
}

static void test_max_rate(void **state)
{
	struct rs_rate r;
	uint64_t t = 5 * NS, sent;

	(void)state;
	rs_rate_init(&r, 10 * MB, 1 * MB, t);
	sent = run(&r, &t, 10, 1 << 20, false);
	/* 100 MB in 10 s, within a block plus the bucket's burst */
	assert_true(sent >= 100 * MB - (2u << 20));
	assert_true(sent <= 100 * MB + (2u << 20));
	assert_int_equal(r.cur_bps, 10 * MB);
}

static void test_yields_to_application(void **state)
{
	struct rs_rate r;
	uint64_t t = 0, sent;

	(void)state;
	rs_rate_init(&r, 50 * MB, 2 * MB, t);
	/* settle at the floor, then measure */
	run(&r, &t, 2, 64 << 10, true);
	assert_int_equal(r.cur_bps, 2 * MB);
	sent = run(&r, &t, 10, 64 << 10, true);
	assert_true(sent >= 20 * MB - (1u << 20));
	assert_true(sent <= 20 * MB + (1u << 20));
	/* application idle again: back to the maximum within a few steps */
	run(&r, &t, 1, 64 << 10, false);
	assert_int_equal(r.cur_bps, 50 * MB);
	sent = run(&r, &t, 4, 64 << 10, false);
	assert_true(sent >= 200 * MB - (3u << 20));
}

static void test_block_larger_than_burst(void **state)
{
	struct rs_rate r;
	uint64_t t = 0, sent;

	(void)state;
	/* 4 KiB/s with 1 MiB blocks: still progresses, at the set rate */
	rs_rate_init(&r, 4096, 0, t);
	sent = run(&r, &t, 1024, 1 << 20, false);
	assert_true(sent >= (3u << 20) && sent <= (5u << 20));
}

static void test_no_time_no_tokens(void **state)
{
	struct rs_rate r;

	(void)state;
	rs_rate_init(&r, 1 * MB, 1 * MB, 1000);
	/* an empty bucket at the start: the first block waits its time */
	assert_true(rs_rate_delay(&r, 1000, 100000, false) > 0);
	/* and a clock that goes backwards adds nothing */
	assert_true(rs_rate_delay(&r, 10, 100000, false) > 0);
	assert_int_equal(rs_rate_delay(&r, 1000 + NS, 100000, false), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_max_rate),
		cmocka_unit_test(test_yields_to_application),
		cmocka_unit_test(test_block_larger_than_burst),
		cmocka_unit_test(test_no_time_no_tokens),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
