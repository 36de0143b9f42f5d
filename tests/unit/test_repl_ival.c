// SPDX-License-Identifier: MIT
/* ival_: the in-flight range set that orders overlapping writes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "ival.h"

static void test_overlap_rules(void **state)
{
	struct ival_set *s = ival_create(8);
	uint32_t a, b, c;

	(void)state;
	assert_non_null(s);
	assert_int_equal(ival_take(s, 100, 8, &a), 0);
	/* touching ranges do not overlap: [92,100) and [108,116) */
	assert_int_equal(ival_take(s, 92, 8, &b), 0);
	assert_int_equal(ival_take(s, 108, 8, &c), 0);
	/* one sector inside either end does */
	assert_int_equal(ival_take(s, 99, 2, &a), -EBUSY);
	assert_int_equal(ival_take(s, 107, 1, &a), -EBUSY);
	assert_int_equal(ival_take(s, 0, 1000, &a), -EBUSY);
	assert_true(ival_overlaps(s, 104, 1));
	assert_false(ival_overlaps(s, 116, 1));
	assert_int_equal(ival_count(s), 3);
	ival_put(s, b);
	assert_false(ival_overlaps(s, 92, 8));
	assert_int_equal(ival_take(s, 92, 8, &b), 0);
	assert_int_equal(ival_take(s, 5, 0, &a), -EINVAL);
	assert_int_equal(ival_take(s, UINT64_MAX - 1, 4, &a), -EINVAL);
	ival_free(s);
}

static void test_full(void **state)
{
	struct ival_set *s = ival_create(4);
	uint32_t h[4], x;

	(void)state;
	for (int i = 0; i < 4; i++)
		assert_int_equal(ival_take(s, (uint64_t)i * 10, 10, &h[i]), 0);
	assert_int_equal(ival_take(s, 100, 10, &x), -ENOSPC);
	ival_put(s, h[1]);
	assert_int_equal(ival_take(s, 100, 10, &x), 0);
	assert_int_equal(ival_count(s), 4);
	ival_free(s);
}

/* Random take/put against a brute-force model of what is held. */
static void test_model(void **state)
{
	enum { MAX = 64, SPACE = 512 };
	struct ival_set *s = ival_create(MAX);
	uint64_t st[MAX], en[MAX];
	uint32_t handles[MAX];
	int held = 0;

	(void)state;
	srand(7);
	for (int step = 0; step < 200000; step++) {
		if (held && (rand() % 3 == 0 || held == MAX)) {
			int k = rand() % held;

			ival_put(s, handles[k]);
			handles[k] = handles[held - 1];
			st[k] = st[held - 1];
			en[k] = en[held - 1];
			held--;
		} else {
			uint64_t a = (uint64_t)(rand() % SPACE);
			uint64_t n = 1 + (uint64_t)(rand() % 16);
			bool model_busy = false;
			uint32_t h;
			int r;

			for (int k = 0; k < held; k++)
				if (st[k] < a + n && a < en[k])
					model_busy = true;
			assert_int_equal(ival_overlaps(s, a, n), model_busy);
			r = ival_take(s, a, n, &h);
			if (model_busy) {
				assert_int_equal(r, -EBUSY);
			} else {
				assert_int_equal(r, 0);
				st[held] = a;
				en[held] = a + n;
				handles[held++] = h;
			}
		}
		assert_int_equal(ival_count(s), held);
	}
	ival_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_overlap_rules),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
