/* SPDX-License-Identifier: MIT */
/* Client side of duetd's control socket (docs/control-socket.md). */
#ifndef DUETCTL_CTL_CLIENT_H
#define DUETCTL_CTL_CLIENT_H

#include <jansson.h>
#include <stddef.h>

#include "duetctl.h"

/* "<run_dir>/<resource>.sock" into @buf. */
void ctlc_socket_path(const struct duetctl_global *g, const char *res,
		      char *buf, size_t len);

/* Connect to the resource's daemon: fd, or -ENOENT/-ECONNREFUSED when it is
 * not running, -EACCES when we may not talk to it. */
int ctlc_connect(const struct duetctl_global *g, const char *res);

/*
 * Send @req (one line) on @fd and read one reply line into *@resp, waiting
 * up to @timeout_ms (-1: forever). 0, or -errno (-EPROTO for a reply that is
 * not a JSON object, -ETIMEDOUT, -ECONNRESET when the daemon hung up).
 */
int ctlc_send(int fd, json_t *req);
int ctlc_recv(int fd, json_t **resp, int timeout_ms);

/* connect + send + recv + close. */
int ctlc_call(const struct duetctl_global *g, const char *res, json_t *req,
	      json_t **resp, int timeout_ms);

/*
 * The exit code of a request: EXIT_OK when ctlc_call() returned 0 and the
 * daemon said ok; otherwise the reason is printed as "duetctl CMD: RES: ..."
 * and the code is EXIT_NO_DAEMON (not up), EXIT_TIMEOUT (no answer in
 * time), EXIT_FAIL (socket error) or EXIT_REFUSED (the daemon's reason).
 */
int ctlc_result(const char *cmd, const char *res, int ret,
		const json_t *resp);

#endif
