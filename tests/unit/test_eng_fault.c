// SPDX-License-Identifier: MIT
/*
 * The test-only fault-injecting engine (eng_fault.h): its specification
 * parser and filter, and the decorator around the io_uring engine on a
 * real file: operations pass until the count is reached, then fail with
 * EIO without touching the file; a trigger file arms and disarms it.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "eng.h"
#include "eng_fault.h"
#include "util.h"

static void test_parse(void **state)
{
	struct eng_fault_spec s;
	char why[256];

	(void)state;
	assert_int_equal(eng_fault_parse("", &s, why, sizeof(why)), 0);
	assert_true(s.reads && s.writes && !s.ranged && !s.after);
	assert_int_equal(eng_fault_parse("after=250,ops=write,sectors=8+16,file=/tmp/x",
					 &s, why, sizeof(why)),
			 0);
	assert_true(s.after == 250);
	assert_false(s.reads);
	assert_true(s.writes && s.ranged);
	assert_true(s.sector == 8 && s.nr == 16);
	assert_string_equal(s.file, "/tmp/x");
	assert_int_equal(eng_fault_parse("ops=read", &s, why, sizeof(why)), 0);
	assert_true(s.reads && !s.writes);

	static const struct {
		const char *spec, *word;
	} bad[] = {
		{ "after", "KEY=VALUE" },
		{ "after=-1", "after" },
		{ "after=x", "after" },
		{ "ops=sometimes", "ops" },
		{ "sectors=8", "sectors" },
		{ "sectors=8+0", "sectors" },
		{ "sectors=+8", "sectors" },
		{ "file=relative", "file" },
		{ "color=red", "unknown key" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		assert_int_equal(eng_fault_parse(bad[i].spec, &s, why,
						 sizeof(why)),
				 -EINVAL);
		if (!strstr(why, bad[i].word))
			fail_msg("'%s': '%s' does not name '%s'", bad[i].spec,
				 why, bad[i].word);
	}
}

static void test_matches(void **state)
{
	struct eng_fault_spec s;

	(void)state;
	assert_int_equal(eng_fault_parse("sectors=100+10,ops=all", &s, NULL, 0),
			 0);
	assert_true(eng_fault_matches(&s, ENG_OP_READ, 100, 1));
	assert_true(eng_fault_matches(&s, ENG_OP_WRITE, 90, 11));
	assert_true(eng_fault_matches(&s, ENG_OP_DISCARD, 109, 100));
	assert_false(eng_fault_matches(&s, ENG_OP_WRITE, 90, 10));
	assert_false(eng_fault_matches(&s, ENG_OP_READ, 110, 8));
	assert_false(eng_fault_matches(&s, ENG_OP_FLUSH, 0, 0));
	assert_int_equal(eng_fault_parse("ops=read", &s, NULL, 0), 0);
	assert_true(eng_fault_matches(&s, ENG_OP_READ, 0, 8));
	assert_false(eng_fault_matches(&s, ENG_OP_WRITE, 0, 8));
	assert_false(eng_fault_matches(&s, ENG_OP_FLUSH, 0, 0));
	assert_int_equal(eng_fault_parse("ops=write", &s, NULL, 0), 0);
	assert_true(eng_fault_matches(&s, ENG_OP_FLUSH, 0, 0));
	assert_true(eng_fault_matches(&s, ENG_OP_WRITE_ZEROES, 0, 8));
	assert_false(eng_fault_matches(&s, ENG_OP_READ, 0, 8));
}

static int last_res;
static int completions;

static void on_complete(struct eng_queue *eq, struct eng_req *rq, int res)
{
	(void)eq;
	(void)rq;
	last_res = res;
	completions++;
}

/* One write of 4 KiB of @fill at @off: its result (submit or completion). */
static int write_one(struct eng_queue *eq, uint64_t off, int fill)
{
	struct io_uring_cqe *cqe;
	struct eng_req *rq = &eq->reqs[0];
	int ret, before = completions;

	memset(rq->buf, fill, 4096);
	rq->op = ENG_OP_WRITE;
	rq->fua = false;
	rq->tag = 0;
	rq->len = 4096;
	rq->done = 0;
	rq->off = off;
	ret = eq->ops->submit(eq, rq);
	if (ret)
		return ret;
	while (completions == before) {
		assert_true(io_uring_submit_and_wait(eq->ring, 1) >= 0);
		assert_int_equal(io_uring_wait_cqe(eq->ring, &cqe), 0);
		eq->ops->cqe(eq, cqe);
		io_uring_cqe_seen(eq->ring, cqe);
	}
	return last_res;
}

static void test_decorator(void **state)
{
	char path[] = "/tmp/test_eng_fault.XXXXXX";
	char trigger[] = "/tmp/test_eng_fault_trigger.XXXXXX";
	char spec[128], why[256], buf[4096];
	struct eng_req reqs[1] = { 0 };
	struct eng_queue eq = { 0 };
	struct io_uring ring;
	void *data = NULL;
	int fd, tfd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	tfd = mkstemp(trigger);
	assert_true(tfd >= 0);
	close(tfd);
	assert_int_equal(posix_memalign(&data, 4096, 4096), 0);

	/* unset: nothing is wrapped */
	unsetenv(ENG_FAULT_ENV);
	assert_int_equal(eng_fault_setup(why, sizeof(why)), 0);
	assert_ptr_equal(eng_fault_wrap(&eng_uring_ops), &eng_uring_ops);
	/* a bad specification is refused with the reason */
	setenv(ENG_FAULT_ENV, "after=many", 1);
	assert_int_equal(eng_fault_setup(why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "after"));

	snprintf(spec, sizeof(spec), "after=2,ops=write,file=%s", trigger);
	setenv(ENG_FAULT_ENV, spec, 1);
	assert_int_equal(eng_fault_setup(why, sizeof(why)), 0);
	assert_ptr_not_equal(eng_fault_wrap(&eng_uring_ops), &eng_uring_ops);

	assert_int_equal(io_uring_queue_init(8, &ring, 0), 0);
	assert_int_equal(eng_queue_setup(&eq), 0);
	eq.ops = eng_find(CFG_ENGINE_URING);
	eq.ring = &ring;
	eq.fd = fd;
	eq.fd_index = -1;
	eq.depth = 1;
	eq.reqs = reqs;
	eq.wake_fd = -1;
	eq.complete = on_complete;
	reqs[0].buf = data;
	assert_int_equal(eq.ops->init(&eq), 0);

	/* armed (the trigger exists): two writes pass, then EIO */
	assert_int_equal(write_one(&eq, 0, 0x11), 0);
	assert_int_equal(write_one(&eq, 4096, 0x22), 0);
	assert_int_equal(write_one(&eq, 8192, 0x33), -EIO);
	assert_true(eng_fault_injected() == 1);
	assert_int_equal(pread(fd, buf, 4096, 8192), 4096);
	assert_int_equal(buf[0], 0);	/* a failed write touches nothing */
	assert_int_equal(pread(fd, buf, 4096, 4096), 4096);
	assert_int_equal(buf[0], 0x22);
	/* disarmed: writes work again and are not counted */
	assert_int_equal(unlink(trigger), 0);
	assert_int_equal(write_one(&eq, 8192, 0x44), 0);
	assert_int_equal(pread(fd, buf, 4096, 8192), 4096);
	assert_int_equal(buf[0], 0x44);
	assert_true(eng_fault_injected() == 1);

	eq.ops->exit(&eq);
	eng_queue_teardown(&eq);
	io_uring_queue_exit(&ring);
	unsetenv(ENG_FAULT_ENV);
	free(data);
	close(fd);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_matches),
		cmocka_unit_test(test_decorator),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
