// SPDX-License-Identifier: MIT
/*
 * Backing I/O engines (io_uring and libaio) against a real file: data lands
 * at the right offsets, FUA/FLUSH/DISCARD/WRITE_ZEROES do what they say,
 * the helper-thread path works, and errors come back as errors.
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
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>
#include <sys/eventfd.h>

#include "eng.h"
#include "util.h"

#define NR_TAGS 4
#define BUF_BYTES (128u << 10)
#define FILE_BYTES (4u << 20)

struct fx {
	const struct eng_ops *ops;
	bool fixed;		/* register the file and the buffers */
	char path[64];
	int fd;
	int vfd;		/* plain fd to check what is in the file */
	bool is_bdev;
	bool direct;
	struct io_uring ring;
	struct eng_helper *helper;
	struct eng_queue eq;
	struct eng_req reqs[NR_TAGS];
	uint8_t *buf[NR_TAGS];
	int wake_fd;
	int result[NR_TAGS];
	int completions[NR_TAGS];
	int reaped;		/* wake-ups that carried helper results */
};

static void on_complete(struct eng_queue *eq, struct eng_req *rq, int res)
{
	struct fx *f = eq->owner;

	f->result[rq->tag] = res;
	f->completions[rq->tag]++;
}

static int setup_engine(void **state, const struct eng_ops *ops, bool fixed)
{
	struct fx *f = calloc(1, sizeof(*f));
	int ret;

	assert_non_null(f);
	f->ops = ops;
	f->fixed = fixed;
	snprintf(f->path, sizeof(f->path), "/var/tmp/duet-test-eng.XXXXXX");
	f->fd = mkstemp(f->path);
	assert_true(f->fd >= 0);
	assert_int_equal(ftruncate(f->fd, FILE_BYTES), 0);
	close(f->fd);
	assert_int_equal(eng_open_backing(f->path, &f->fd, &f->is_bdev,
					  &f->direct),
			 0);
	assert_false(f->is_bdev);
	f->vfd = open(f->path, O_RDONLY | O_CLOEXEC);
	assert_true(f->vfd >= 0);

	assert_int_equal(io_uring_queue_init(64, &f->ring, 0), 0);
	f->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_true(f->wake_fd >= 0);
	f->helper = eng_helper_start();
	assert_non_null(f->helper);

	for (int i = 0; i < NR_TAGS; i++) {
		f->buf[i] = aligned_alloc(4096, BUF_BYTES);
		assert_non_null(f->buf[i]);
	}
	assert_int_equal(eng_queue_setup(&f->eq), 0);
	f->eq.ops = ops;
	f->eq.ring = &f->ring;
	f->eq.fd = f->fd;
	f->eq.fd_index = -1;
	if (fixed) {
		struct iovec iov[NR_TAGS];

		assert_int_equal(io_uring_register_files(&f->ring, &f->fd, 1),
				 0);
		f->eq.fd_index = 0;
		for (int i = 0; i < NR_TAGS; i++)
			iov[i] = (struct iovec){ f->buf[i], BUF_BYTES };
		assert_int_equal(io_uring_register_buffers(&f->ring, iov,
							   NR_TAGS),
				 0);
		f->eq.bufs_registered = true;
	}
	f->eq.depth = NR_TAGS;
	f->eq.reqs = f->reqs;
	f->eq.wake_fd = f->wake_fd;
	f->eq.helper = f->helper;
	f->eq.complete = on_complete;
	f->eq.owner = f;
	ret = ops->init(&f->eq);
	assert_int_equal(ret, 0);
	*state = f;
	return 0;
}

static int setup_uring(void **state)
{
	return setup_engine(state, &eng_uring_ops, true);
}

static int setup_uring_plain(void **state)
{
	return setup_engine(state, &eng_uring_ops, false);
}

static int setup_aio(void **state)
{
	return setup_engine(state, &eng_aio_ops, false);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	io_uring_queue_exit(&f->ring);
	f->ops->exit(&f->eq);
	eng_helper_stop(f->helper);
	eng_queue_teardown(&f->eq);
	for (int i = 0; i < NR_TAGS; i++)
		free(f->buf[i]);
	close(f->wake_fd);
	close(f->fd);
	close(f->vfd);
	unlink(f->path);
	free(f);
	return 0;
}

/* The queue thread's loop in miniature: run until @tag completed. */
static void run_until_done(struct fx *f, unsigned int tag)
{
	for (int iter = 0; iter < 2000 && !f->completions[tag]; iter++) {
		struct __kernel_timespec ts = { 0, 5 * 1000 * 1000 };
		struct io_uring_cqe *cqe;
		uint64_t v;

		if (f->ops->flush)
			f->ops->flush(&f->eq);
		io_uring_submit(&f->ring);
		if (!io_uring_wait_cqe_timeout(&f->ring, &cqe, &ts)) {
			assert_true(eng_ud_is_engine(cqe->user_data));
			f->ops->cqe(&f->eq, cqe);
			io_uring_cqe_seen(&f->ring, cqe);
		}
		if (read(f->wake_fd, &v, sizeof(v)) == sizeof(v)) {
			f->reaped++;
			eng_reap(&f->eq);
		}
	}
	assert_int_equal(f->completions[tag], 1);
}

static int do_op(struct fx *f, unsigned int tag, uint8_t op, uint64_t off,
		 uint32_t len, bool fua)
{
	struct eng_req *rq = &f->reqs[tag];
	int ret;

	memset(rq, 0, sizeof(*rq));
	rq->op = op;
	rq->fua = fua;
	rq->tag = (uint16_t)tag;
	rq->off = off;
	rq->len = len;
	rq->buf = f->buf[tag];
	f->completions[tag] = 0;
	ret = f->ops->submit(&f->eq, rq);
	if (ret)
		return ret;
	run_until_done(f, tag);
	return f->result[tag];
}

static void fill(uint8_t *p, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

static void test_write_read(void **state)
{
	struct fx *f = *state;
	static const uint64_t offs[] = { 0, 3 * BUF_BYTES, 1u << 20,
					 FILE_BYTES - BUF_BYTES };
	uint8_t *expect = malloc(BUF_BYTES), *disk = malloc(BUF_BYTES);

	for (unsigned int i = 0; i < ARRAY_SIZE(offs); i++) {
		fill(f->buf[0], BUF_BYTES, i + 1);
		assert_int_equal(do_op(f, 0, ENG_OP_WRITE, offs[i], BUF_BYTES,
				       i == 1),
				 0);
		assert_int_equal(f->reqs[0].done, BUF_BYTES);
	}
	for (unsigned int i = 0; i < ARRAY_SIZE(offs); i++) {
		fill(expect, BUF_BYTES, i + 1);
		memset(f->buf[1], 0xee, BUF_BYTES);
		assert_int_equal(do_op(f, 1, ENG_OP_READ, offs[i], BUF_BYTES,
				       false),
				 0);
		assert_memory_equal(f->buf[1], expect, BUF_BYTES);
		/* and it is really there, at that offset of the file */
		assert_int_equal(pread(f->vfd, disk, BUF_BYTES, (off_t)offs[i]),
				 BUF_BYTES);
		assert_memory_equal(disk, expect, BUF_BYTES);
	}
	free(expect);
	free(disk);
}

static void test_flush(void **state)
{
	struct fx *f = *state;

	assert_int_equal(do_op(f, 2, ENG_OP_FLUSH, 0, 0, false), 0);
}

/* An engine that cannot sync asynchronously hands FLUSH to the helper;
 * the result arrives through the wake eventfd and eng_reap(). */
static void test_flush_on_helper(void **state)
{
	struct fx *f = *state;

	f->eq.caps |= ENG_NO_ASYNC_SYNC;
	assert_int_equal(do_op(f, 2, ENG_OP_FLUSH, 0, 0, false), 0);
	assert_int_equal(f->reaped, 1);
	/* a FUA write needs the sync too: data and durability both */
	fill(f->buf[3], 8192, 9);
	assert_int_equal(do_op(f, 3, ENG_OP_WRITE, 8192, 8192, true), 0);
	assert_int_equal(pread(f->vfd, f->buf[2], 8192, 8192), 8192);
	assert_memory_equal(f->buf[2], f->buf[3], 8192);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static void test_discard_and_zeroes(void **state)
{
	struct fx *f = *state;
	uint8_t *disk = malloc(BUF_BYTES);

	fill(f->buf[0], BUF_BYTES, 5);
	assert_int_equal(do_op(f, 0, ENG_OP_WRITE, 65536, BUF_BYTES, false), 0);
	assert_int_equal(do_op(f, 1, ENG_OP_DISCARD, 65536 + 4096, 8192,
			       false),
			 0);
	assert_int_equal(pread(f->vfd, disk, BUF_BYTES, 65536), BUF_BYTES);
	assert_memory_equal(disk, f->buf[0], 4096);
	assert_true(all_zero(disk + 4096, 8192));
	assert_memory_equal(disk + 12288, f->buf[0] + 12288, BUF_BYTES - 12288);

	assert_int_equal(do_op(f, 1, ENG_OP_WRITE_ZEROES, 65536 + 32768,
			       16384, false),
			 0);
	assert_int_equal(pread(f->vfd, disk, BUF_BYTES, 65536), BUF_BYTES);
	assert_true(all_zero(disk + 32768, 16384));
	assert_memory_equal(disk + 49152, f->buf[0] + 49152, BUF_BYTES - 49152);
	assert_memory_equal(disk + 12288, f->buf[0] + 12288, 32768 - 12288);
	free(disk);
}

/* A read that runs into the end of the file is not a success. */
static void test_read_past_end_fails(void **state)
{
	struct fx *f = *state;

	assert_int_equal(do_op(f, 0, ENG_OP_READ, FILE_BYTES - 4096, 8192,
			       false),
			 -EIO);
	/* the part that existed was transferred before the error */
	assert_int_equal(f->reqs[0].done, 4096);
}

/* Errors of the kernel are the request's errors. */
static void test_error_propagates(void **state)
{
	struct fx *f = *state;
	int ro = open(f->path, O_RDONLY | O_CLOEXEC);
	int saved_fd = f->eq.fd, saved_idx = f->eq.fd_index;

	assert_true(ro >= 0);
	f->eq.fd = ro;
	f->eq.fd_index = -1;
	fill(f->buf[0], 4096, 1);
	assert_int_equal(do_op(f, 0, ENG_OP_WRITE, 0, 4096, false), -EBADF);
	assert_int_equal(do_op(f, 1, ENG_OP_DISCARD, 0, 4096, false), -EBADF);
	f->eq.fd = saved_fd;
	f->eq.fd_index = saved_idx;
	close(ro);
}

static void test_rw_advance(void **state)
{
	struct eng_req rq = { .len = 8192 };

	(void)state;
	assert_int_equal(eng_rw_advance(&rq, 4096), 1);
	assert_int_equal(rq.done, 4096);
	assert_int_equal(eng_rw_advance(&rq, 4096), 0);
	rq.done = 0;
	assert_int_equal(eng_rw_advance(&rq, 0), -EIO);
	assert_int_equal(eng_rw_advance(&rq, -EROFS), -EROFS);
	assert_int_equal(eng_rw_advance(&rq, 9000), -EIO);
}

static void test_user_data(void **state)
{
	uint64_t ud = eng_ud(true, 0x5a, 4095);

	(void)state;
	assert_true(eng_ud_is_engine(ud));
	assert_int_equal(eng_ud_kind(ud), 0x5a);
	assert_int_equal(eng_ud_tag(ud), 4095);
	ud = eng_ud(false, 1, 65535);
	assert_false(eng_ud_is_engine(ud));
	assert_int_equal(eng_ud_kind(ud), 1);
	assert_int_equal(eng_ud_tag(ud), 65535);
}

#define ENGINE_TESTS(setup)                                               \
	cmocka_unit_test_setup_teardown(test_write_read, setup, teardown), \
	cmocka_unit_test_setup_teardown(test_flush, setup, teardown),      \
	cmocka_unit_test_setup_teardown(test_flush_on_helper, setup,       \
					teardown),                         \
	cmocka_unit_test_setup_teardown(test_discard_and_zeroes, setup,    \
					teardown),                         \
	cmocka_unit_test_setup_teardown(test_read_past_end_fails, setup,   \
					teardown),                         \
	cmocka_unit_test_setup_teardown(test_error_propagates, setup,      \
					teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rw_advance),
		cmocka_unit_test(test_user_data),
		ENGINE_TESTS(setup_uring),
		ENGINE_TESTS(setup_uring_plain),
		ENGINE_TESTS(setup_aio),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
