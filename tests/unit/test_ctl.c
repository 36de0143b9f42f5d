// SPDX-License-Identifier: MIT
/* Control socket server: request framing, errors, events, socket life. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctl.h"

struct fixture {
	char dir[64];
	char path[100];
	struct ctl_server *s;
	int calls;
};

static int h_echo(void *arg, json_t *req, json_t *resp)
{
	struct fixture *f = arg;
	json_t *v = json_object_get(req, "value");

	f->calls++;
	json_object_set(resp, "value", v ? v : json_null());
	return 0;
}

static int h_refuse(void *arg, json_t *req, json_t *resp)
{
	(void)arg;
	(void)req;
	return ctl_error(resp, -EBUSY, "resync in progress, try later");
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->dir, "/tmp/duet-ctl-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/r0.sock", f->dir);
	f->s = ctl_create(f->path, (gid_t)-1);
	assert_non_null(f->s);
	assert_int_equal(ctl_register(f->s, "echo", h_echo, f), 0);
	assert_int_equal(ctl_register(f->s, "echo", h_echo, f), -EEXIST);
	assert_int_equal(ctl_register(f->s, "refuse", h_refuse, f), 0);
	assert_int_equal(ctl_start(f->s), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ctl_destroy(f->s);
	rmdir(f->dir);
	free(f);
	return 0;
}

static int connect_to(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Read one line (bounded wait) and parse it. */
static json_t *read_reply(int fd)
{
	char buf[4096];
	size_t len = 0;

	while (len < sizeof(buf) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		assert_int_equal(poll(&p, 1, 5000), 1);
		n = read(fd, buf + len, 1);
		if (n <= 0)
			return NULL;
		if (buf[len] == '\n')
			break;
		len++;
	}
	buf[len] = '\0';
	return json_loads(buf, 0, NULL);
}

static json_t *roundtrip(int fd, const char *line)
{
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	return read_reply(fd);
}

static void test_request_and_reply(void **state)
{
	struct fixture *f = *state;
	int fd = connect_to(f->path);
	json_t *r;

	r = roundtrip(fd, "{\"cmd\":\"echo\",\"value\":42}\n");
	assert_non_null(r);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_int_equal(json_integer_value(json_object_get(r, "value")), 42);
	json_decref(r);

	/* two requests in one write, answered in order */
	r = roundtrip(fd, "{\"cmd\":\"echo\",\"value\":1}\n{\"cmd\":\"echo\",\"value\":2}\n");
	assert_int_equal(json_integer_value(json_object_get(r, "value")), 1);
	json_decref(r);
	r = read_reply(fd);
	assert_int_equal(json_integer_value(json_object_get(r, "value")), 2);
	json_decref(r);
	assert_int_equal(f->calls, 3);
	close(fd);
}

static void expect_error(int fd, const char *line, const char *needle,
			 const char *code)
{
	json_t *r = roundtrip(fd, line);

	assert_non_null(r);
	assert_true(json_is_false(json_object_get(r, "ok")));
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")),
			       needle));
	assert_string_equal(json_string_value(json_object_get(r, "code")),
			    code);
	json_decref(r);
}

static void test_bad_requests_keep_serving(void **state)
{
	struct fixture *f = *state;
	int fd = connect_to(f->path);
	json_t *r;

	expect_error(fd, "this is not json\n", "malformed request", "invalid");
	expect_error(fd, "[1,2]\n", "not an object", "invalid");
	expect_error(fd, "{\"value\":1}\n", "\"cmd\" must be a string",
		     "invalid");
	expect_error(fd, "{\"cmd\":7}\n", "\"cmd\" must be a string",
		     "invalid");
	expect_error(fd, "{\"cmd\":\"frobnicate\"}\n",
		     "unknown command 'frobnicate'", "unknown");
	expect_error(fd, "{\"cmd\":\"refuse\"}\n", "resync in progress",
		     "busy");
	/* the same connection still works */
	r = roundtrip(fd, "{\"cmd\":\"echo\",\"value\":\"x\"}\n");
	assert_string_equal(json_string_value(json_object_get(r, "value")),
			    "x");
	json_decref(r);
	close(fd);
}

static void test_oversized_request_closes_client(void **state)
{
	struct fixture *f = *state;
	int fd = connect_to(f->path), fd2;
	size_t len = 70000;
	char *big = malloc(len);
	json_t *r;

	memset(big, 'a', len);
	/* the server answers with an error after 64 KiB and hangs up */
	(void)!send(fd, big, len, MSG_NOSIGNAL);
	r = read_reply(fd);
	assert_non_null(r);
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")),
			       "longer than"));
	json_decref(r);
	free(big);
	close(fd);

	/* and still serves others */
	fd2 = connect_to(f->path);
	r = roundtrip(fd2, "{\"cmd\":\"echo\",\"value\":5}\n");
	assert_int_equal(json_integer_value(json_object_get(r, "value")), 5);
	json_decref(r);
	close(fd2);
}

static void test_events_broadcast(void **state)
{
	struct fixture *f = *state;
	int sub = connect_to(f->path), other = connect_to(f->path);
	json_t *r, *ev;
	struct pollfd p = { .fd = other, .events = POLLIN };

	r = roundtrip(sub, "{\"cmd\":\"events\"}\n");
	assert_true(json_is_true(json_object_get(r, "subscribed")));
	json_decref(r);

	ev = json_pack("{s:s,s:s}", "event", "change", "role", "primary");
	ctl_broadcast_event(f->s, ev);
	json_decref(ev);
	r = read_reply(sub);
	assert_non_null(r);
	assert_string_equal(json_string_value(json_object_get(r, "role")),
			    "primary");
	json_decref(r);
	/* a client that did not subscribe gets nothing */
	assert_int_equal(poll(&p, 1, 100), 0);
	close(sub);
	close(other);
}

static void test_socket_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct ctl_server *again;
	struct stat st;
	char stale[100];

	/* a live socket is not stolen */
	again = ctl_create(f->path, (gid_t)-1);
	assert_null(again);
	assert_int_equal(errno, EADDRINUSE);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);

	/* a stale one (nobody listening) is replaced */
	snprintf(stale, sizeof(stale), "%s/stale.sock", f->dir);
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);

		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", stale);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)),
				 0);
		close(fd); /* bound but never listening: stale */
	}
	again = ctl_create(stale, (gid_t)-1);
	assert_non_null(again);
	ctl_destroy(again);
	assert_int_equal(access(stale, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_request_and_reply, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests_keep_serving,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_oversized_request_closes_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_events_broadcast, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_socket_lifecycle, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
