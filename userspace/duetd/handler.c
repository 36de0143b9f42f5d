// SPDX-License-Identifier: MIT
/*
 * Handler programs (see handler.h): a queue, one thread, fork + execve,
 * output to the log, a time limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handler.h"
#include "log.h"
#include "util.h"

#define HANDLER_PATH_ENV "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
#define HANDLER_LINE_MAX 512	/* longer output lines are split */
#define HANDLER_DRAIN_MS 2000	/* after a kill: wait this long for EOF */
#define HANDLER_SLICE_MS 100	/* poll slice: notice the child's exit */

struct job {
	enum handler_kind kind;
	uint64_t id;
	char *path;
	struct handler_env env;
	handler_done_fn done;
	void *arg;
	struct job *next;
};

struct handlers {
	char res[64];
	unsigned int timeout_ms;
	pthread_t thread;
	int wake_fd;		/* eventfd: handlers_destroy() */

	pthread_mutex_t lock;	/* below */
	pthread_cond_t cond;
	struct job *head, *tail;
	unsigned int pending;	/* queued + running */
	bool stop;
	uint64_t next_id;
};

const char *handler_name(enum handler_kind k)
{
	static const char *const n[HANDLER_COUNT] = {
		[HANDLER_SPLIT_BRAIN] = "split-brain",
		[HANDLER_FENCE_PEER] = "fence-peer",
		[HANDLER_BEFORE_RESYNC_TARGET] = "before-resync-target",
		[HANDLER_AFTER_RESYNC_TARGET] = "after-resync-target",
		[HANDLER_LOCAL_IO_ERROR] = "local-io-error",
	};

	return (unsigned int)k < HANDLER_COUNT ? n[k] : "?";
}

bool handler_fence_ok(int exit_code, const char **meaning)
{
	const char *m;
	bool ok = true;

	switch (exit_code) {
	case 3:
		m = "the peer's disk is already Inconsistent";
		break;
	case 4:
		m = "the peer was outdated";
		break;
	case 5:
		m = "the peer is unreachable, assumed down";
		break;
	case 7:
		m = "the peer was fenced off (STONITH)";
		break;
	case 6:
		m = "the peer is Primary and refused to be outdated";
		ok = false;
		break;
	default:
		m = "the handler failed";
		ok = false;
		break;
	}
	if (meaning)
		*meaning = m;
	return ok;
}

int handler_env_add(struct handler_env *e, const char *name, const char *fmt,
		    ...)
{
	char *val = NULL, *s = NULL;
	va_list ap;
	int ret;

	if (e->n >= HANDLER_ENV_MAX)
		return -E2BIG;
	va_start(ap, fmt);
	ret = vasprintf(&val, fmt, ap);
	va_end(ap);
	if (ret < 0)
		return -ENOMEM;
	ret = asprintf(&s, "%s=%s", name, val);
	free(val);
	if (ret < 0)
		return -ENOMEM;
	e->v[e->n++] = s;
	return 0;
}

void handler_env_free(struct handler_env *e)
{
	for (unsigned int i = 0; i < e->n; i++)
		free(e->v[i]);
	e->n = 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- output to the log ---- */

struct out {
	const char *res;
	const char *name;
	char buf[HANDLER_LINE_MAX];
	size_t len;
};

static void out_line(struct out *o)
{
	if (!o->len)
		return;
	o->buf[o->len] = '\0';
	log_notice("%s: handler %s: %s", o->res, o->name, o->buf);
	o->len = 0;
}

static void out_feed(struct out *o, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			out_line(o);
			continue;
		}
		/* keep the log readable: no control characters */
		o->buf[o->len++] = (p[i] >= 0x20 && p[i] != 0x7f) || p[i] == '\t' ?
					   p[i] :
					   '?';
		if (o->len == sizeof(o->buf) - 1)
			out_line(o);
	}
}

/* ---- one run ---- */

/* In the child, before execve: async-signal-safe calls only. */
static void child_exec(const char *path, char *const argv[],
		       char *const envp[], int out_fd)
{
	static const char msg[] = "cannot execute the handler (errno ";
	struct sigaction sa = { .sa_handler = SIG_DFL };
	char num[16];
	sigset_t none;
	int fd, e, i, code;

	/* its own process group: the time limit kills all of it */
	setpgid(0, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		sigaction(s, &sa, NULL);
	fd = open("/dev/null", O_RDONLY);
	if (fd >= 0 && fd != 0) {
		dup2(fd, 0);
		close(fd);
	}
	dup2(out_fd, 1);
	dup2(out_fd, 2);
	if (out_fd > 2)
		close(out_fd);
	closefrom(3);
	execve(path, argv, envp);
	e = errno;
	code = e == ENOENT ? 127 : 126;
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(code);
	i = (int)sizeof(num);
	num[--i] = '\n';
	num[--i] = ')';
	do {
		num[--i] = (char)('0' + e % 10);
		e /= 10;
	} while (e && i > 0);
	if (write(2, num + i, sizeof(num) - (size_t)i) < 0)
		_exit(code);
	_exit(code);
}

/*
 * Read the child's output until it exited and the pipe is empty, or the
 * time limit (then kill the group and drain for a while). Fills @r.
 */
static void supervise(struct handlers *h, pid_t pid, int rfd,
		      struct handler_result *r)
{
	struct out o = { .res = h->res, .name = handler_name(r->kind) };
	uint64_t start = now_ms(), deadline = start + h->timeout_ms;
	uint64_t drain_until = 0;
	bool exited = false, eof = false, killed = false;
	int status = 0;
	char buf[4096];

	for (;;) {
		struct pollfd p[2] = { { .fd = rfd, .events = POLLIN },
				       { .fd = h->wake_fd, .events = POLLIN } };
		uint64_t now = now_ms();
		ssize_t n;
		bool stop;

		if (killed)
			p[1].fd = -1;	/* stays readable: would spin */

		pthread_mutex_lock(&h->lock);
		stop = h->stop;
		pthread_mutex_unlock(&h->lock);
		if (!killed && (stop || now >= deadline)) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			killed = true;
			r->timed_out = !stop;
			if (stop)
				r->err = -ECANCELED;
			drain_until = now + HANDLER_DRAIN_MS;
			p[1].fd = -1;
		}
		if (!exited) {
			pid_t w = waitpid(pid, &status, WNOHANG);

			if (w == pid || (w < 0 && errno == ECHILD)) {
				exited = true;
				/* a background grandchild may hold the pipe:
				 * take what is there, then stop reading */
				if (!drain_until)
					drain_until = now + HANDLER_SLICE_MS;
			}
		}
		if (eof && exited)
			break;
		if (drain_until && now >= drain_until && exited)
			break;
		if (eof) {
			/* output closed, the child still runs */
			poll(&p[1], 1, HANDLER_SLICE_MS);
			continue;
		}
		if (poll(p, 2, HANDLER_SLICE_MS) < 0 && errno != EINTR)
			break;
		if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		n = read(rfd, buf, sizeof(buf));
		if (n > 0)
			out_feed(&o, buf, (size_t)n);
		else if (n == 0 || errno != EINTR)
			eof = true;
	}
	out_line(&o);
	if (!exited) {
		/* killed above, or about to be: reap it */
		if (!killed)
			kill(-pid, SIGKILL);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	r->ms = now_ms() - start;
	if (WIFEXITED(status)) {
		r->exit_code = WEXITSTATUS(status);
	} else if (WIFSIGNALED(status)) {
		r->signal = WTERMSIG(status);
	}
}

static void run_job(struct handlers *h, struct job *j, struct handler_result *r)
{
	char *argv[3] = { j->path, (char *)handler_name(j->kind), NULL };
	char *envp[HANDLER_ENV_MAX + 2];
	unsigned int n = 0;
	int fds[2];
	pid_t pid;

	if (access(j->path, X_OK)) {
		r->err = -errno;
		log_err("%s: handler %s: cannot run %s: %s", h->res,
			handler_name(j->kind), j->path, strerror(errno));
		return;
	}
	envp[n++] = (char *)HANDLER_PATH_ENV;
	for (unsigned int i = 0; i < j->env.n; i++)
		envp[n++] = j->env.v[i];
	envp[n] = NULL;
	if (pipe2(fds, O_CLOEXEC)) {
		r->err = -errno;
		log_err("%s: handler %s: pipe: %s", h->res,
			handler_name(j->kind), strerror(errno));
		return;
	}
	pid = fork();
	if (pid < 0) {
		r->err = -errno;
		log_err("%s: handler %s: fork: %s", h->res,
			handler_name(j->kind), strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return;
	}
	if (pid == 0)
		child_exec(j->path, argv, envp, fds[1]);
	/* both sides set the group: no race with the kill below */
	setpgid(pid, pid);
	close(fds[1]);
	log_notice("%s: handler %s: running %s (pid %d)", h->res,
		   handler_name(j->kind), j->path, (int)pid);
	supervise(h, pid, fds[0], r);
	close(fds[0]);
	if (r->timed_out)
		log_err("%s: handler %s: killed after the time limit of %u ms",
			h->res, handler_name(j->kind), h->timeout_ms);
	else if (r->err == -ECANCELED)
		log_warn("%s: handler %s: killed: the daemon is stopping",
			 h->res, handler_name(j->kind));
	else if (r->signal)
		log_warn("%s: handler %s: ended by signal %d after %llu ms",
			 h->res, handler_name(j->kind), r->signal,
			 (unsigned long long)r->ms);
	else
		log_notice("%s: handler %s: exit code %d after %llu ms",
			   h->res, handler_name(j->kind), r->exit_code,
			   (unsigned long long)r->ms);
}

static void job_free(struct job *j)
{
	handler_env_free(&j->env);
	free(j->path);
	free(j);
}

static void *handler_main(void *arg)
{
	struct handlers *h = arg;
	struct job *j;

	pthread_setname_np(pthread_self(), "duet-handler");
	for (;;) {
		struct handler_result r = { .exit_code = -1 };

		pthread_mutex_lock(&h->lock);
		while (!h->head && !h->stop)
			pthread_cond_wait(&h->cond, &h->lock);
		j = h->head;
		if (j) {
			h->head = j->next;
			if (!h->head)
				h->tail = NULL;
		}
		pthread_mutex_unlock(&h->lock);
		if (!j)
			break;	/* stopping, nothing left */
		r.kind = j->kind;
		r.id = j->id;
		pthread_mutex_lock(&h->lock);
		if (h->stop)
			r.err = -ECANCELED;
		pthread_mutex_unlock(&h->lock);
		if (!r.err)
			run_job(h, j, &r);
		/* over before its result is known */
		pthread_mutex_lock(&h->lock);
		h->pending--;
		pthread_mutex_unlock(&h->lock);
		j->done(j->arg, &r);
		job_free(j);
	}
	return NULL;
}

struct handlers *handlers_create(const char *res, unsigned int timeout_ms)
{
	struct handlers *h = calloc(1, sizeof(*h));
	int err;

	if (!h)
		return NULL;
	snprintf(h->res, sizeof(h->res), "%s", res ? res : "duet");
	h->timeout_ms = timeout_ms ? timeout_ms : HANDLER_TIMEOUT_MS;
	h->next_id = 1;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	h->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->wake_fd < 0) {
		err = errno;
		goto out_free;
	}
	err = pthread_create(&h->thread, NULL, handler_main, h);
	if (err)
		goto out_close;
	return h;

out_close:
	close(h->wake_fd);
out_free:
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
	errno = err;
	return NULL;
}

int handler_run(struct handlers *h, enum handler_kind kind, const char *path,
		struct handler_env *env, handler_done_fn done, void *arg,
		uint64_t *id)
{
	struct job *j;
	int ret = 0;

	if (!path || path[0] != '/' || (unsigned int)kind >= HANDLER_COUNT ||
	    !done) {
		handler_env_free(env);
		return -EINVAL;
	}
	j = calloc(1, sizeof(*j));
	if (!j || !(j->path = strdup(path))) {
		free(j);
		handler_env_free(env);
		return -ENOMEM;
	}
	j->kind = kind;
	j->env = *env;
	env->n = 0;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&h->lock);
	if (h->stop) {
		ret = -ESHUTDOWN;
	} else {
		j->id = h->next_id++;
		if (h->tail)
			h->tail->next = j;
		else
			h->head = j;
		h->tail = j;
		h->pending++;
		if (id)
			*id = j->id;
		pthread_cond_signal(&h->cond);
	}
	pthread_mutex_unlock(&h->lock);
	if (ret)
		job_free(j);
	return ret;
}

unsigned int handlers_pending(struct handlers *h)
{
	unsigned int n;

	pthread_mutex_lock(&h->lock);
	n = h->pending;
	pthread_mutex_unlock(&h->lock);
	return n;
}

void handlers_destroy(struct handlers *h)
{
	uint64_t one = 1;

	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	if (write(h->wake_fd, &one, sizeof(one)) != sizeof(one))
		log_warn("%s: cannot wake the handler thread: %s", h->res,
			 strerror(errno));
	/* the thread cancels what is queued (done() with -ECANCELED) */
	pthread_join(h->thread, NULL);
	close(h->wake_fd);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
