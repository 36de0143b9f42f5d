// SPDX-License-Identifier: MIT
/*
 * The pid and state files of a running duetd.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "runfile.h"

static void path_of(char *buf, size_t len, const char *dir, const char *res,
		    const char *ext)
{
	snprintf(buf, len, "%s/%s.%s", dir, res, ext);
}

int runfile_lock(const char *dir, const char *res, pid_t *holder)
{
	char path[PATH_MAX], buf[32];
	ssize_t n;
	int fd, len;

	path_of(path, sizeof(path), dir, res, "pid");
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		int err = errno == EWOULDBLOCK ? -EBUSY : -errno;

		n = pread(fd, buf, sizeof(buf) - 1, 0);
		if (holder)
			*holder = n > 0 ? (buf[n] = '\0', atoi(buf)) : 0;
		close(fd);
		return err;
	}
	len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) || pwrite(fd, buf, (size_t)len, 0) != len) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

void runfile_unlock(const char *dir, const char *res, int fd)
{
	char path[PATH_MAX];

	if (fd < 0)
		return;
	path_of(path, sizeof(path), dir, res, "pid");
	/* unlink first: whoever locks next creates a fresh file */
	unlink(path);
	close(fd);
}

int runfile_write_state(const char *dir, const char *res, pid_t pid,
			uint32_t dev_id, const char *device)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8];
	FILE *f;
	int ret = 0;

	path_of(path, sizeof(path), dir, res, "state");
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	fprintf(f, "pid=%d\ndev_id=%u\ndevice=%s\n", (int)pid, dev_id,
		device);
	if (fflush(f) || fsync(fileno(f)))
		ret = -errno;
	if (fclose(f) && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

int runfile_read_dev_id(const char *dir, const char *res, int32_t *dev_id)
{
	char path[PATH_MAX], line[256];
	int ret = -EINVAL;
	FILE *f;

	path_of(path, sizeof(path), dir, res, "state");
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *end;
		long v;

		if (strncmp(line, "dev_id=", 7))
			continue;
		errno = 0;
		v = strtol(line + 7, &end, 10);
		if (!errno && end != line + 7 && (*end == '\n' || !*end) &&
		    v >= 0 && v <= INT32_MAX) {
			*dev_id = (int32_t)v;
			ret = 0;
		}
		break;
	}
	fclose(f);
	return ret;
}

void runfile_remove_state(const char *dir, const char *res)
{
	char path[PATH_MAX];

	path_of(path, sizeof(path), dir, res, "state");
	unlink(path);
}
