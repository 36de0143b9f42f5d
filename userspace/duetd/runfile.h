/* SPDX-License-Identifier: MIT */
/*
 * runfile_ — what a running duetd leaves in its run directory:
 *
 *   <run-dir>/<res>.pid    the daemon's pid, one line; flock()ed for as
 *                          long as the daemon lives, so a second duetd of
 *                          the same resource is refused and a dead one's
 *                          file is recognised as stale;
 *   <res>.state            "key=value" lines: pid, dev_id, device. Kept
 *                          after a crash (kill -9) so that the next duetd
 *                          finds the ublk device it must take over;
 *                          removed on a clean stop;
 *   <res>.sock             the control socket (ctl.h).
 */
#ifndef DUET_RUNFILE_H
#define DUET_RUNFILE_H

#include <stdint.h>
#include <sys/types.h>

/*
 * Create and lock <dir>/<res>.pid and write our pid into it. Returns the
 * open, locked fd, -EBUSY (*holder set when known) when a live daemon
 * holds it, or -errno.
 */
int runfile_lock(const char *dir, const char *res, pid_t *holder);
/* Remove the pid file and release the lock. */
void runfile_unlock(const char *dir, const char *res, int fd);

/* Write <res>.state (atomically: temporary file, then rename). */
int runfile_write_state(const char *dir, const char *res, pid_t pid,
			uint32_t dev_id, const char *device);
/* dev_id from <res>.state: 0, -ENOENT when there is none, -EINVAL. */
int runfile_read_dev_id(const char *dir, const char *res, int32_t *dev_id);
void runfile_remove_state(const char *dir, const char *res);

#endif
