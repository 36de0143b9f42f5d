// SPDX-License-Identifier: MIT
/*
 * duetd's handler runner (handler.h): fence-peer's exit codes, and real
 * runs of small shell scripts: exit code, argv and a clean environment,
 * the time limit, a background child holding the output pipe, programs
 * that cannot run, and runs cancelled when the runner is destroyed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "handler.h"
#include "log.h"

#define MAX_RESULTS 8

struct fx {
	char dir[64];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct handler_result res[MAX_RESULTS];
	unsigned int n;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/duet-test-handler.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	log_level = LOG_LVL_ERR;	/* the runs' output is not the test's */
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->lock);
	free(f);
	return 0;
}

static void done(void *arg, const struct handler_result *res)
{
	struct fx *f = arg;

	pthread_mutex_lock(&f->lock);
	if (f->n < MAX_RESULTS)
		f->res[f->n] = *res;
	f->n++;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->lock);
}

/* Wait (at most 10 s) until @n runs reported. */
static void wait_results(struct fx *f, unsigned int n)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&f->lock);
	while (f->n < n &&
	       pthread_cond_timedwait(&f->cond, &f->lock, &until) == 0)
		;
	pthread_mutex_unlock(&f->lock);
	assert_true(f->n >= n);
}

/* $dir/@name with @body after a #!/bin/sh line, mode @mode. */
static void script(struct fx *f, const char *name, const char *body,
		   mode_t mode, char *path, size_t len)
{
	FILE *s;

	snprintf(path, len, "%s/%s", f->dir, name);
	s = fopen(path, "w");
	assert_non_null(s);
	fprintf(s, "#!/bin/sh\n%s\n", body);
	assert_int_equal(fclose(s), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_fence_exit_codes(void **state)
{
	const char *m = NULL;

	(void)state;
	for (int c = 0; c < 256; c++) {
		bool want = c == 3 || c == 4 || c == 5 || c == 7;

		m = NULL;
		assert_int_equal(handler_fence_ok(c, &m), want);
		assert_non_null(m);
	}
	handler_fence_ok(4, &m);
	assert_string_equal(m, "the peer was outdated");
	handler_fence_ok(6, &m);
	assert_non_null(strstr(m, "Primary"));
	assert_false(handler_fence_ok(-1, NULL));
}

static void test_exit_code_argv_env(void **state)
{
	struct fx *f = *state;
	struct handler_env e = { 0 };
	struct handlers *h;
	char path[128], body[512], out[128], buf[1024];
	uint64_t id = 0;
	FILE *o;
	size_t n;

	snprintf(out, sizeof(out), "%s/env.out", f->dir);
	snprintf(body, sizeof(body),
		 "echo \"argv1=$1\" >%s\nenv | sort >>%s\necho to the log\nexit 3",
		 out, out);
	script(f, "h.sh", body, 0755, path, sizeof(path));
	h = handlers_create("r9", 5000);
	assert_non_null(h);
	assert_int_equal(handler_env_add(&e, "DUET_RESOURCE", "%s", "r9"), 0);
	assert_int_equal(handler_env_add(&e, "DUET_NODE_ID", "%d", 7), 0);
	assert_int_equal(handler_run(h, HANDLER_FENCE_PEER, path, &e, done, f,
				     &id),
			 0);
	assert_int_equal(e.n, 0);	/* taken over */
	assert_true(id > 0);
	wait_results(f, 1);
	assert_int_equal(f->res[0].err, 0);
	assert_int_equal(f->res[0].exit_code, 3);
	assert_int_equal(f->res[0].signal, 0);
	assert_false(f->res[0].timed_out);
	assert_int_equal(f->res[0].kind, HANDLER_FENCE_PEER);
	assert_int_equal(f->res[0].id, id);
	assert_int_equal(handlers_pending(h), 0);
	handlers_destroy(h);

	o = fopen(out, "r");
	assert_non_null(o);
	n = fread(buf, 1, sizeof(buf) - 1, o);
	fclose(o);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "argv1=fence-peer\n"));
	assert_non_null(strstr(buf, "\nDUET_RESOURCE=r9\n"));
	assert_non_null(strstr(buf, "\nDUET_NODE_ID=7\n"));
	assert_non_null(strstr(buf, "\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n"));
	/* nothing of the daemon's own environment */
	assert_null(strstr(buf, "\nHOME="));
	assert_null(strstr(buf, "\nUSER="));
}

static void test_time_limit_kills_the_group(void **state)
{
	struct fx *f = *state;
	struct handler_env e = { 0 };
	struct handlers *h;
	char path[128], body[256], mark[128];
	double t0;

	/* a child in the background, then a long sleep: both must die */
	snprintf(mark, sizeof(mark), "%s/survived", f->dir);
	snprintf(body, sizeof(body), "(sleep 2; touch %s) &\nsleep 30", mark);
	script(f, "slow.sh", body, 0755, path, sizeof(path));
	h = handlers_create("r9", 300);
	assert_non_null(h);
	t0 = now_s();
	assert_int_equal(handler_run(h, HANDLER_SPLIT_BRAIN, path, &e, done, f,
				     NULL),
			 0);
	wait_results(f, 1);
	assert_true(now_s() - t0 < 4.0);
	assert_true(f->res[0].timed_out);
	assert_int_equal(f->res[0].signal, 9);
	assert_int_equal(f->res[0].exit_code, -1);
	assert_int_equal(f->res[0].err, 0);
	assert_true(f->res[0].ms >= 300);
	handlers_destroy(h);
	sleep(3);
	assert_int_equal(access(mark, F_OK), -1);
}

static void test_background_child_keeps_the_pipe(void **state)
{
	struct fx *f = *state;
	struct handler_env e = { 0 };
	struct handlers *h;
	char path[128];
	double t0;

	/* setsid: out of the process group, it keeps stdout open for 5 s */
	script(f, "bg.sh", "setsid sleep 5 &\nexit 2", 0755, path,
	       sizeof(path));
	h = handlers_create("r9", 10000);
	assert_non_null(h);
	t0 = now_s();
	assert_int_equal(handler_run(h, HANDLER_AFTER_RESYNC_TARGET, path, &e,
				     done, f, NULL),
			 0);
	wait_results(f, 1);
	assert_true(now_s() - t0 < 3.0);
	assert_int_equal(f->res[0].exit_code, 2);
	assert_false(f->res[0].timed_out);
	handlers_destroy(h);
}

static void test_cannot_run(void **state)
{
	struct fx *f = *state;
	struct handler_env e = { 0 };
	struct handlers *h;
	char path[128], missing[128];

	script(f, "noexec.sh", "exit 0", 0644, path, sizeof(path));
	snprintf(missing, sizeof(missing), "%s/missing.sh", f->dir);
	h = handlers_create("r9", 0);
	assert_non_null(h);
	assert_int_equal(handler_run(h, HANDLER_LOCAL_IO_ERROR, path, &e, done,
				     f, NULL),
			 0);
	assert_int_equal(handler_run(h, HANDLER_LOCAL_IO_ERROR, missing, &e,
				     done, f, NULL),
			 0);
	assert_int_equal(handler_run(h, HANDLER_LOCAL_IO_ERROR, "relative.sh",
				     &e, done, f, NULL),
			 -EINVAL);
	wait_results(f, 2);
	assert_int_equal(f->res[0].err, -EACCES);
	assert_int_equal(f->res[0].exit_code, -1);
	assert_int_equal(f->res[1].err, -ENOENT);
	handlers_destroy(h);
}

static void test_destroy_cancels(void **state)
{
	struct fx *f = *state;
	struct handler_env e = { 0 };
	struct handlers *h;
	char path[128];
	double t0;

	script(f, "long.sh", "sleep 30", 0755, path, sizeof(path));
	h = handlers_create("r9", 60000);
	assert_non_null(h);
	for (int i = 0; i < 3; i++)
		assert_int_equal(handler_run(h, HANDLER_FENCE_PEER, path, &e,
					     done, f, NULL),
				 0);
	assert_int_equal(handlers_pending(h), 3);
	usleep(300000);	/* the first one runs */
	t0 = now_s();
	handlers_destroy(h);
	assert_true(now_s() - t0 < 4.0);
	assert_int_equal(f->n, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(f->res[i].err, -ECANCELED);
		assert_false(f->res[i].timed_out);
	}
}

static void test_env_limits(void **state)
{
	struct handler_env e = { 0 };

	(void)state;
	for (int i = 0; i < HANDLER_ENV_MAX; i++)
		assert_int_equal(handler_env_add(&e, "DUET_X", "%d", i), 0);
	assert_int_equal(handler_env_add(&e, "DUET_Y", "y"), -E2BIG);
	assert_string_equal(e.v[5], "DUET_X=5");
	handler_env_free(&e);
	assert_int_equal(e.n, 0);
	assert_string_equal(handler_name(HANDLER_BEFORE_RESYNC_TARGET),
			    "before-resync-target");
	assert_string_equal(handler_name(HANDLER_COUNT), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fence_exit_codes),
		cmocka_unit_test(test_env_limits),
		cmocka_unit_test_setup_teardown(test_exit_code_argv_env, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_time_limit_kills_the_group,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_background_child_keeps_the_pipe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cannot_run, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_destroy_cancels, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
