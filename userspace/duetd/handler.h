/* SPDX-License-Identifier: MIT */
/*
 * handler_ — run the configured handler programs (handlers.* in the
 * resource file) off the daemon's hot threads.
 *
 * A handler is an executable run with fork + execve, no shell: argv is
 * { path, handler name } and the environment is exactly what the caller
 * built (DUET_* variables, docs/configuration.md "Handlers") plus
 * PATH=/usr/sbin:/usr/bin:/sbin:/bin. stdin is /dev/null; every line the
 * program writes to stdout or stderr goes to the daemon log. It runs in a
 * process group of its own, which is killed (SIGKILL) when the time limit
 * passes.
 *
 * Runs are queued and executed one at a time, in order, on one thread per
 * struct handlers: the caller (connection thread, control thread, a data
 * path) only queues and returns at once. The result comes back through
 * the caller's done() callback, on the handler thread, with no lock of
 * this module held.
 */
#ifndef DUET_HANDLER_H
#define DUET_HANDLER_H

#include <stdbool.h>
#include <stdint.h>

#define HANDLER_TIMEOUT_MS 60000	/* default time limit of one run */
#define HANDLER_ENV_MAX 32		/* variables per run */

enum handler_kind {
	HANDLER_SPLIT_BRAIN = 0,
	HANDLER_FENCE_PEER,
	HANDLER_BEFORE_RESYNC_TARGET,
	HANDLER_AFTER_RESYNC_TARGET,
	HANDLER_LOCAL_IO_ERROR,
	HANDLER_COUNT
};

/* "split-brain", "fence-peer", ... (the key in handlers = { }). */
const char *handler_name(enum handler_kind k);

/* What one run ended with. */
struct handler_result {
	enum handler_kind kind;
	uint64_t id;		/* from handler_run() */
	int err;		/* 0: it ran; -errno: it could not be started
				 * (-ENOENT, -EACCES, ...), or -ECANCELED:
				 * the daemon stopped before or while it ran */
	int exit_code;		/* 0..255 when it exited, else -1 */
	int signal;		/* the signal that ended it, else 0 */
	bool timed_out;		/* killed after the time limit */
	uint64_t ms;		/* how long it ran */
};

/*
 * fence-peer's exit code, DRBD's convention: true when the peer can no
 * longer write behind our back (3: its disk is Inconsistent, 4: it was
 * outdated, 5: it is unreachable and assumed down, 7: it was fenced off
 * (STONITH)); false for 6 (the peer is Primary: it refused) and anything
 * else (the handler failed). @meaning (may be NULL) gets a short text.
 * Pure.
 */
bool handler_fence_ok(int exit_code, const char **meaning);

typedef void (*handler_done_fn)(void *arg, const struct handler_result *res);

/* A run's environment: "NAME=value" strings, built by the caller. */
struct handler_env {
	char *v[HANDLER_ENV_MAX];
	unsigned int n;
};

/* Add NAME=value (printf-style); 0, -ENOMEM, -E2BIG (too many). */
int handler_env_add(struct handler_env *e, const char *name,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void handler_env_free(struct handler_env *e);

struct handlers;

/*
 * Start the handler thread. @res names the resource in log lines;
 * @timeout_ms is the time limit of each run (0: HANDLER_TIMEOUT_MS).
 * NULL with errno.
 */
struct handlers *handlers_create(const char *res, unsigned int timeout_ms);

/*
 * Queue a run of @path (absolute) as handler @kind with @env, which is
 * taken over (emptied) whatever the outcome. @done(@arg, result) follows
 * exactly once if this returns 0 (with err -ECANCELED if the handlers are
 * destroyed first). Any thread. Returns 0 and the run's id in *@id (may be
 * NULL), -EINVAL (no path), -ESHUTDOWN (being destroyed), -ENOMEM.
 */
int handler_run(struct handlers *h, enum handler_kind kind, const char *path,
		struct handler_env *env, handler_done_fn done, void *arg,
		uint64_t *id);

/* Runs queued or running right now. Any thread. */
unsigned int handlers_pending(struct handlers *h);

/*
 * Kill the running program (SIGKILL to its process group), cancel what is
 * queued (each done() is called with -ECANCELED), stop the thread, free.
 * Not from a done() callback. NULL is fine.
 */
void handlers_destroy(struct handlers *h);

#endif
