// SPDX-License-Identifier: MIT
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl_client.h"

void ctlc_socket_path(const struct duetctl_global *g, const char *res,
		      char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.sock", g->run_dir, res);
}

int ctlc_connect(const struct duetctl_global *g, const char *res)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	ctlc_socket_path(g, res, sa.sun_path, sizeof(sa.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

int ctlc_send(int fd, json_t *req)
{
	char *txt = json_dumps(req, JSON_COMPACT);
	size_t len, off = 0;
	int ret = 0;

	if (!txt)
		return -ENOMEM;
	len = strlen(txt);
	while (off < len + 1) {
		const char *p = off < len ? txt + off : "\n";
		size_t n = off < len ? len - off : 1;
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			ret = -errno;
			break;
		}
		off += (size_t)w;
	}
	free(txt);
	return ret;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

int ctlc_recv(int fd, json_t **resp, int timeout_ms)
{
	static char buf[1 << 16];
	long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	size_t len = 0;
	json_error_t jerr;

	/* byte at a time: replies are small and we must not read past the
	 * line (event streams send more lines on the same socket) */
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int wait = deadline < 0 ? -1 : (int)(deadline - now_ms());
		ssize_t n;

		if (deadline >= 0 && wait <= 0)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, wait) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!pfd.revents)
			continue;
		n = recv(fd, buf + len, 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		if (buf[len] == '\n')
			break;
		if (++len == sizeof(buf) - 1)
			return -EPROTO;
	}
	buf[len] = '\0';
	*resp = json_loads(buf, 0, &jerr);
	if (!*resp || !json_is_object(*resp)) {
		json_decref(*resp);
		*resp = NULL;
		return -EPROTO;
	}
	return 0;
}

int ctlc_call(const struct duetctl_global *g, const char *res, json_t *req,
	      json_t **resp, int timeout_ms)
{
	int fd = ctlc_connect(g, res), ret;

	if (fd < 0)
		return fd;
	ret = ctlc_send(fd, req);
	if (!ret)
		ret = ctlc_recv(fd, resp, timeout_ms);
	close(fd);
	return ret;
}

int ctlc_result(const char *cmd, const char *res, int ret,
		const json_t *resp)
{
	if (ret == -ENOENT || ret == -ECONNREFUSED) {
		duetctl_err(cmd, "%s is not up (start it with `duetctl up %s`)",
			    res, res);
		return EXIT_NO_DAEMON;
	}
	if (ret == -ETIMEDOUT) {
		duetctl_err(cmd, "%s: the daemon did not answer in time", res);
		return EXIT_TIMEOUT;
	}
	if (ret) {
		duetctl_err(cmd, "%s: %s", res, strerror(-ret));
		return EXIT_FAIL;
	}
	if (!json_is_true(json_object_get(resp, "ok"))) {
		duetctl_err(cmd, "%s: %s", res,
			    json_string_value(json_object_get(resp, "error")));
		return EXIT_REFUSED;
	}
	return EXIT_OK;
}
