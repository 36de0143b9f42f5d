// SPDX-License-Identifier: MIT
/*
 * duetd's run-directory files: one daemon per resource (the pid file
 * lock), the state file a restarted daemon reads to find its device.
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

#include "runfile.h"

struct fx {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/duet-test-run.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static void read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, len - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
}

static void test_lock_is_exclusive(void **state)
{
	struct fx *f = *state;
	char buf[64], want[32];
	pid_t holder = 0;
	int fd, fd2;

	fd = runfile_lock(f->dir, "r0", NULL);
	assert_true(fd >= 0);
	snprintf(f->path, sizeof(f->path), "%s/r0.pid", f->dir);
	read_file(f->path, buf, sizeof(buf));
	snprintf(want, sizeof(want), "%d\n", (int)getpid());
	assert_string_equal(buf, want);

	/* a second daemon of the same resource is refused, told who runs */
	fd2 = runfile_lock(f->dir, "r0", &holder);
	assert_int_equal(fd2, -EBUSY);
	assert_int_equal(holder, getpid());
	/* another resource is independent */
	fd2 = runfile_lock(f->dir, "r1", NULL);
	assert_true(fd2 >= 0);
	runfile_unlock(f->dir, "r1", fd2);

	/* released: the file is gone and the next daemon may lock */
	runfile_unlock(f->dir, "r0", fd);
	assert_int_equal(access(f->path, F_OK), -1);
	fd = runfile_lock(f->dir, "r0", NULL);
	assert_true(fd >= 0);
	runfile_unlock(f->dir, "r0", fd);
}

/* A pid file left by a daemon that died is not a lock. */
static void test_stale_pid_file(void **state)
{
	struct fx *f = *state;
	int fd;

	snprintf(f->path, sizeof(f->path), "%s/r0.pid", f->dir);
	fd = open(f->path, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "99999\n", 6), 6);
	close(fd);
	fd = runfile_lock(f->dir, "r0", NULL);
	assert_true(fd >= 0);
	runfile_unlock(f->dir, "r0", fd);
}

static void test_state_roundtrip(void **state)
{
	struct fx *f = *state;
	char buf[256];
	int32_t id = -1;

	assert_int_equal(runfile_read_dev_id(f->dir, "r0", &id), -ENOENT);
	assert_int_equal(runfile_write_state(f->dir, "r0", 1234, 17,
					     "/dev/ublkb17"),
			 0);
	assert_int_equal(runfile_read_dev_id(f->dir, "r0", &id), 0);
	assert_int_equal(id, 17);
	snprintf(f->path, sizeof(f->path), "%s/r0.state", f->dir);
	read_file(f->path, buf, sizeof(buf));
	assert_string_equal(buf, "pid=1234\ndev_id=17\ndevice=/dev/ublkb17\n");
	/* rewritten in place, no temporary left behind */
	assert_int_equal(runfile_write_state(f->dir, "r0", 1235, 3,
					     "/dev/ublkb3"),
			 0);
	assert_int_equal(runfile_read_dev_id(f->dir, "r0", &id), 0);
	assert_int_equal(id, 3);
	snprintf(buf, sizeof(buf), "%s/r0.state.tmp", f->dir);
	assert_int_equal(access(buf, F_OK), -1);

	runfile_remove_state(f->dir, "r0");
	assert_int_equal(runfile_read_dev_id(f->dir, "r0", &id), -ENOENT);
}

static void test_state_malformed(void **state)
{
	static const char *const bad[] = {
		"pid=1\n", "dev_id=\n", "dev_id=x\n", "dev_id=-1\n",
		"dev_id=12abc\n", "dev_id=99999999999\n",
	};
	struct fx *f = *state;
	int32_t id = 42;

	snprintf(f->path, sizeof(f->path), "%s/r0.state", f->dir);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		FILE *fp = fopen(f->path, "w");

		assert_non_null(fp);
		fputs(bad[i], fp);
		fclose(fp);
		assert_int_equal(runfile_read_dev_id(f->dir, "r0", &id),
				 -EINVAL);
		assert_int_equal(id, 42);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_lock_is_exclusive, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_stale_pid_file, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_state_roundtrip, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_state_malformed, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
