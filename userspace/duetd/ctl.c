// SPDX-License-Identifier: MIT
/*
 * ctl — control socket server. One thread polls the listening socket, the
 * clients and an eventfd used to stop it. Requests are JSON lines; see
 * ctl.h and docs/control-socket.md.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"
#include "log.h"

#define CTL_MAX_CLIENTS 32
#define CTL_MAX_LINE 65536
#define CTL_MAX_HANDLERS 64

struct ctl_handler {
	char name[32];
	ctl_handler_fn fn;
	void *arg;
};

struct ctl_client {
	int fd;
	bool events;	   /* subscribed to the event stream */
	size_t len;	   /* bytes buffered in buf */
	char buf[CTL_MAX_LINE];
};

struct ctl_server {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int lfd;
	int stop_fd;
	gid_t gid;
	pthread_t thread;
	bool running;
	pthread_mutex_t lock; /* clients[]: the thread and broadcasters */
	struct ctl_client *clients[CTL_MAX_CLIENTS];
	unsigned int nr_handlers;
	struct ctl_handler handlers[CTL_MAX_HANDLERS];
};

int ctl_error(json_t *resp, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_set_new(resp, "ok", json_false());
	json_object_set_new(resp, "error", json_string(msg));
	return err;
}

/* Is something already answering on @path? */
static bool socket_alive(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, ret;

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ret = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return ret == 0;
}

struct ctl_server *ctl_create(const char *path, gid_t gid)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ctl_server *s;
	int err;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (socket_alive(path)) {
		errno = EADDRINUSE;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	snprintf(s->path, sizeof(s->path), "%s", path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	s->gid = gid;
	pthread_mutex_init(&s->lock, NULL);

	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->lfd < 0)
		goto out_free;
	unlink(path); /* stale: nobody answered above */
	if (bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out_close;
	if (chmod(path, 0660) < 0 ||
	    (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0))
		goto out_unlink;
	if (listen(s->lfd, 16) < 0)
		goto out_unlink;
	s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->stop_fd < 0)
		goto out_unlink;
	return s;

out_unlink:
	unlink(path);
out_close:
	err = errno;
	close(s->lfd);
	errno = err;
out_free:
	err = errno;
	pthread_mutex_destroy(&s->lock);
	free(s);
	errno = err;
	return NULL;
}

int ctl_register(struct ctl_server *s, const char *name, ctl_handler_fn fn,
		 void *arg)
{
	struct ctl_handler *h;

	for (unsigned int i = 0; i < s->nr_handlers; i++)
		if (!strcmp(s->handlers[i].name, name))
			return -EEXIST;
	if (s->nr_handlers == CTL_MAX_HANDLERS ||
	    strlen(name) >= sizeof(h->name))
		return -ENOMEM;
	h = &s->handlers[s->nr_handlers++];
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->fn = fn;
	h->arg = arg;
	return 0;
}

/* Write one JSON line, waiting at most a second for a slow reader. */
static int send_json(int fd, json_t *obj)
{
	char *txt = json_dumps(obj, JSON_COMPACT);
	size_t len, off = 0;
	char *line;
	int ret = 0;

	if (!txt)
		return -ENOMEM;
	len = strlen(txt);
	line = realloc(txt, len + 2);
	if (!line) {
		free(txt);
		return -ENOMEM;
	}
	line[len++] = '\n';
	while (off < len) {
		ssize_t w = send(fd, line + off, len - off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w >= 0) {
			off += (size_t)w;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			if (poll(&pfd, 1, 1000) == 1)
				continue;
			errno = ETIMEDOUT;
		}
		ret = -errno;
		break;
	}
	free(line);
	return ret;
}

static bool peer_allowed(struct ctl_server *s, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	if (cred.uid == 0)
		return true;
	return s->gid != (gid_t)-1 && cred.gid == s->gid;
}

static void client_close(struct ctl_server *s, unsigned int i)
{
	pthread_mutex_lock(&s->lock);
	close(s->clients[i]->fd);
	free(s->clients[i]);
	s->clients[i] = NULL;
	pthread_mutex_unlock(&s->lock);
}

static void accept_client(struct ctl_server *s)
{
	struct ctl_client *c;
	unsigned int i;
	int fd;

	fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	if (!peer_allowed(s, fd)) {
		json_t *r = json_object();

		ctl_error(r, -EACCES,
			  "permission denied: only root or the configured group may control duet");
		send_json(fd, r);
		json_decref(r);
		log_warn("control socket: refused a client without permission");
		close(fd);
		return;
	}
	for (i = 0; i < CTL_MAX_CLIENTS && s->clients[i]; i++)
		;
	c = i < CTL_MAX_CLIENTS ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		json_t *r = json_object();

		ctl_error(r, -EBUSY, "too many control clients");
		send_json(fd, r);
		json_decref(r);
		close(fd);
		return;
	}
	c->fd = fd;
	pthread_mutex_lock(&s->lock);
	s->clients[i] = c;
	pthread_mutex_unlock(&s->lock);
}

static const char *errno_code(int err)
{
	switch (-err) {
	case EPERM:
	case EACCES:
		return "denied";
	case EINVAL:
		return "invalid";
	case ENOENT:
		return "unknown";
	case EBUSY:
	case EAGAIN:
	case EALREADY:
		return "busy";
	case ETIMEDOUT:
		return "timeout";
	default:
		return "refused";
	}
}

/* Run one request line; returns true to keep the client open. */
static bool handle_line(struct ctl_server *s, struct ctl_client *c,
			const char *line)
{
	json_t *req, *resp = json_object(), *cmd;
	json_error_t jerr;
	const char *name;
	int ret = -ENOENT;
	bool keep = true;

	req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
	if (!req || !json_is_object(req)) {
		ret = ctl_error(resp, -EINVAL,
				"malformed request: %s (expected one JSON object per line)",
				req ? "not an object" : jerr.text);
		goto out_send;
	}
	cmd = json_object_get(req, "cmd");
	if (!json_is_string(cmd)) {
		ret = ctl_error(resp, -EINVAL,
				"malformed request: \"cmd\" must be a string");
		goto out_send;
	}
	name = json_string_value(cmd);
	if (!strcmp(name, "events")) {
		/* stay open; events arrive via ctl_broadcast_event() */
		c->events = true;
		json_object_set_new(resp, "ok", json_true());
		json_object_set_new(resp, "subscribed", json_true());
		ret = 0;
		goto out_send;
	}
	for (unsigned int i = 0; i < s->nr_handlers; i++) {
		if (strcmp(s->handlers[i].name, name))
			continue;
		ret = s->handlers[i].fn(s->handlers[i].arg, req, resp);
		if (!ret && !json_object_get(resp, "ok"))
			json_object_set_new(resp, "ok", json_true());
		goto out_send;
	}
	ret = ctl_error(resp, -ENOENT, "unknown command '%s'", name);

out_send:
	if (ret) {
		if (!json_object_get(resp, "error"))
			ctl_error(resp, ret, "%s", strerror(-ret));
		json_object_set_new(resp, "code", json_string(errno_code(ret)));
	}
	log_dbg(LOG_CAT_CTL, "request %.200s -> %d", line, ret);
	pthread_mutex_lock(&s->lock);
	if (send_json(c->fd, resp))
		keep = false;
	pthread_mutex_unlock(&s->lock);
	json_decref(resp);
	json_decref(req);
	return keep;
}

/* Read what is there; run each complete line. false: close the client. */
static bool client_read(struct ctl_server *s, struct ctl_client *c)
{
	ssize_t n;
	char *nl;

	n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		return false;
	if (n < 0)
		return true;
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	while ((nl = memchr(c->buf, '\n', c->len))) {
		size_t used = (size_t)(nl - c->buf) + 1;

		*nl = '\0';
		if (nl != c->buf && !handle_line(s, c, c->buf))
			return false;
		memmove(c->buf, c->buf + used, c->len - used);
		c->len -= used;
	}
	if (c->len == sizeof(c->buf) - 1) {
		json_t *r = json_object();

		ctl_error(r, -E2BIG, "request longer than %d bytes",
			  CTL_MAX_LINE - 1);
		send_json(c->fd, r);
		json_decref(r);
		return false;
	}
	return true;
}

static void *ctl_thread(void *arg)
{
	struct ctl_server *s = arg;

	pthread_setname_np(pthread_self(), "duet-ctl");
	for (;;) {
		struct pollfd pfd[CTL_MAX_CLIENTS + 2];
		int map[CTL_MAX_CLIENTS + 2];
		unsigned int n = 0;

		pfd[n++] = (struct pollfd){ .fd = s->stop_fd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		for (unsigned int i = 0; i < CTL_MAX_CLIENTS; i++) {
			if (!s->clients[i])
				continue;
			map[n] = (int)i;
			pfd[n++] = (struct pollfd){ .fd = s->clients[i]->fd,
						    .events = POLLIN };
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("control socket: poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents & POLLIN)
			accept_client(s);
		for (unsigned int k = 2; k < n; k++) {
			unsigned int i = (unsigned int)map[k];

			if (!pfd[k].revents || !s->clients[i])
				continue;
			if (!client_read(s, s->clients[i]))
				client_close(s, i);
		}
	}
	return NULL;
}

int ctl_start(struct ctl_server *s)
{
	int ret = pthread_create(&s->thread, NULL, ctl_thread, s);

	if (ret)
		return -ret;
	s->running = true;
	return 0;
}

void ctl_broadcast_event(struct ctl_server *s, json_t *event)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	for (unsigned int i = 0; i < CTL_MAX_CLIENTS; i++) {
		struct ctl_client *c = s->clients[i];

		if (c && c->events && send_json(c->fd, event))
			shutdown(c->fd, SHUT_RDWR); /* the thread reaps it */
	}
	pthread_mutex_unlock(&s->lock);
}

void ctl_destroy(struct ctl_server *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (s->running) {
		if (write(s->stop_fd, &one, sizeof(one)) < 0)
			log_warn("control socket: cannot wake thread: %s",
				 strerror(errno));
		pthread_join(s->thread, NULL);
	}
	for (unsigned int i = 0; i < CTL_MAX_CLIENTS; i++)
		if (s->clients[i])
			client_close(s, i);
	close(s->lfd);
	close(s->stop_fd);
	unlink(s->path);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
