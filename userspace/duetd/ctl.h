/* SPDX-License-Identifier: MIT */
/*
 * ctl — duetd's control socket.
 *
 * A Unix stream socket at <run_dir>/<resource>.sock. A client sends one
 * JSON object per line, {"cmd": "status", ...}, and gets one JSON object
 * per line back: {"ok": true, ...} or {"ok": false, "error": "why",
 * "code": "refused"}. Streaming commands (events) keep the connection and
 * send one object per line until the client closes. Peers are checked with
 * SO_PEERCRED: root, or a member of the configured group.
 *
 * The server runs its own thread; handlers run on that thread, one at a
 * time, and must take whatever lock the state they read needs.
 * Protocol reference: docs/control-socket.md.
 */
#ifndef DUET_CTL_H
#define DUET_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

struct ctl_server;

/*
 * A command handler: read arguments from @req, fill @resp (the server adds
 * "ok": true unless the handler returns an error). Return 0, or -errno with
 * json "error" set in @resp (ctl_error() does both) for a refusal.
 */
typedef int (*ctl_handler_fn)(void *arg, json_t *req, json_t *resp);

/*
 * Bind the socket at @path (a stale socket from a dead daemon is replaced;
 * a live one gives -EADDRINUSE), mode 0660, owned by @gid when not -1.
 * Returns NULL with errno set.
 */
struct ctl_server *ctl_create(const char *path, gid_t gid);

/* Register @name before ctl_start(). -EEXIST, -ENOMEM. */
int ctl_register(struct ctl_server *s, const char *name, ctl_handler_fn fn,
		 void *arg);

/* Start serving on a thread of its own. */
int ctl_start(struct ctl_server *s);

/* Stop the thread, close every client, unlink the socket, free. */
void ctl_destroy(struct ctl_server *s);

/* Fill @resp with an error and return @err (a negative errno). */
int ctl_error(json_t *resp, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Send @event (one line) to every client subscribed with "events". */
void ctl_broadcast_event(struct ctl_server *s, json_t *event);

#endif
