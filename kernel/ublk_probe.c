// SPDX-License-Identifier: MIT
/*
 * The ublk control channel: synchronous URING_CMDs on /dev/ublk-control.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "ublk_probe.h"
#include "util.h"

struct ublk_ctrl {
	int fd;
	struct io_uring ring;
	uint64_t features;
	bool has_features;
	bool ioctl_encode;
};

/* The ioctl-encoded opcode of each legacy command number we send. */
static unsigned int encode_op(unsigned int nr)
{
	switch (nr) {
	case UBLK_CMD_GET_QUEUE_AFFINITY:
		return UBLK_U_CMD_GET_QUEUE_AFFINITY;
	case UBLK_CMD_GET_DEV_INFO:
		return UBLK_U_CMD_GET_DEV_INFO;
	case UBLK_CMD_ADD_DEV:
		return UBLK_U_CMD_ADD_DEV;
	case UBLK_CMD_DEL_DEV:
		return UBLK_U_CMD_DEL_DEV;
	case UBLK_CMD_START_DEV:
		return UBLK_U_CMD_START_DEV;
	case UBLK_CMD_STOP_DEV:
		return UBLK_U_CMD_STOP_DEV;
	case UBLK_CMD_SET_PARAMS:
		return UBLK_U_CMD_SET_PARAMS;
	case UBLK_CMD_GET_PARAMS:
		return UBLK_U_CMD_GET_PARAMS;
	case UBLK_CMD_START_USER_RECOVERY:
		return UBLK_U_CMD_START_USER_RECOVERY;
	case UBLK_CMD_END_USER_RECOVERY:
		return UBLK_U_CMD_END_USER_RECOVERY;
	case UBLK_CMD_GET_FEATURES_NR:
		return UBLK_U_CMD_GET_FEATURES;
	}
	return nr;
}

static const char *cmd_name(unsigned int nr)
{
	switch (nr) {
	case UBLK_CMD_GET_QUEUE_AFFINITY:
		return "GET_QUEUE_AFFINITY";
	case UBLK_CMD_GET_DEV_INFO:
		return "GET_DEV_INFO";
	case UBLK_CMD_ADD_DEV:
		return "ADD_DEV";
	case UBLK_CMD_DEL_DEV:
		return "DEL_DEV";
	case UBLK_CMD_START_DEV:
		return "START_DEV";
	case UBLK_CMD_STOP_DEV:
		return "STOP_DEV";
	case UBLK_CMD_SET_PARAMS:
		return "SET_PARAMS";
	case UBLK_CMD_GET_PARAMS:
		return "GET_PARAMS";
	case UBLK_CMD_START_USER_RECOVERY:
		return "START_USER_RECOVERY";
	case UBLK_CMD_END_USER_RECOVERY:
		return "END_USER_RECOVERY";
	case UBLK_CMD_GET_FEATURES_NR:
		return "GET_FEATURES";
	}
	return "?";
}

/*
 * Send one command and wait for its completion. The kernel reads @buf (and
 * may write it back) until the completion arrives, so a signal never makes
 * us return early: we keep waiting.
 */
static int ctrl_cmd(struct ublk_ctrl *c, unsigned int nr, bool ioctl_enc,
		    uint32_t dev_id, void *buf, uint16_t len, uint64_t data0)
{
	struct ublksrv_ctrl_cmd cmd;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int ret;

	sqe = io_uring_get_sqe(&c->ring);
	if (!sqe)
		return -EBUSY;
	memset(&cmd, 0, sizeof(cmd));
	cmd.dev_id = dev_id;
	cmd.queue_id = (uint16_t)-1;
	cmd.addr = (uint64_t)(uintptr_t)buf;
	cmd.len = len;
	cmd.data[0] = data0;

	/* A 128-byte SQE: the 64-byte struct, then the 80-byte command
	 * area that starts inside it at cmd[]. */
	memset(sqe, 0, sizeof(*sqe));
	memset(sqe->cmd, 0, 80);
	memcpy(sqe->cmd, &cmd, sizeof(cmd));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = c->fd;
	sqe->cmd_op = ioctl_enc ? encode_op(nr) : nr;
	sqe->user_data = nr;

	ret = io_uring_submit(&c->ring);
	if (ret < 0)
		return ret;
	do {
		ret = io_uring_wait_cqe(&c->ring, &cqe);
	} while (ret == -EINTR);
	if (ret < 0)
		return ret;
	ret = cqe->res;
	io_uring_cqe_seen(&c->ring, cqe);
	log_dbg(LOG_CAT_UBLK, "ublk: %s dev %u (%s encoding): %d",
		cmd_name(nr), dev_id, ioctl_enc ? "ioctl" : "legacy", ret);
	return ret;
}

static int cmd(struct ublk_ctrl *c, unsigned int nr, uint32_t dev_id,
	       void *buf, uint16_t len, uint64_t data0)
{
	return ctrl_cmd(c, nr, c->ioctl_encode, dev_id, buf, len, data0);
}

static void probe(struct ublk_ctrl *c)
{
	uint64_t f = 0;
	int ret;

	ret = ctrl_cmd(c, UBLK_CMD_GET_FEATURES_NR, true, 0, &f,
		       UBLK_FEATURES_LEN, 0);
	if (!ret) {
		c->ioctl_encode = true;
	} else {
		f = 0;
		ret = ctrl_cmd(c, UBLK_CMD_GET_FEATURES_NR, false, 0, &f,
			       UBLK_FEATURES_LEN, 0);
		c->ioctl_encode = false;
	}
	if (!ret) {
		c->features = f;
		c->has_features = true;
		/* A kernel that speaks both prefers the ioctl form. */
		if (f & UBLK_F_CMD_IOCTL_ENCODE)
			c->ioctl_encode = true;
	}
}

struct ublk_ctrl *ublk_ctrl_open(void)
{
	struct ublk_ctrl *c;
	int ret;

	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->fd = open(UBLK_CONTROL_PATH, O_RDWR | O_CLOEXEC);
	if (c->fd < 0) {
		ret = -errno;
		goto out_free;
	}
	ret = io_uring_queue_init(4, &c->ring, IORING_SETUP_SQE128);
	if (ret < 0)
		goto out_close;
	probe(c);
	return c;

out_close:
	close(c->fd);
out_free:
	free(c);
	errno = -ret;
	return NULL;
}

void ublk_ctrl_close(struct ublk_ctrl *c)
{
	if (!c)
		return;
	io_uring_queue_exit(&c->ring);
	close(c->fd);
	free(c);
}

uint64_t ublk_ctrl_features(const struct ublk_ctrl *c)
{
	return c->features;
}

bool ublk_ctrl_has_features(const struct ublk_ctrl *c)
{
	return c->has_features;
}

bool ublk_ctrl_ioctl_encode(const struct ublk_ctrl *c)
{
	return c->ioctl_encode;
}

int ublk_ctrl_add_dev(struct ublk_ctrl *c, struct ublksrv_ctrl_dev_info *info)
{
	return cmd(c, UBLK_CMD_ADD_DEV, info->dev_id, info, sizeof(*info), 0);
}

int ublk_ctrl_del_dev(struct ublk_ctrl *c, uint32_t dev_id)
{
	return cmd(c, UBLK_CMD_DEL_DEV, dev_id, NULL, 0, 0);
}

int ublk_ctrl_get_info(struct ublk_ctrl *c, uint32_t dev_id,
		       struct ublksrv_ctrl_dev_info *info)
{
	memset(info, 0, sizeof(*info));
	return cmd(c, UBLK_CMD_GET_DEV_INFO, dev_id, info, sizeof(*info), 0);
}

int ublk_ctrl_get_affinity(struct ublk_ctrl *c, uint32_t dev_id,
			   unsigned int q, void *mask, uint16_t len)
{
	memset(mask, 0, len);
	return cmd(c, UBLK_CMD_GET_QUEUE_AFFINITY, dev_id, mask, len, q);
}

int ublk_ctrl_set_params(struct ublk_ctrl *c, uint32_t dev_id,
			 struct ublk_params *p)
{
	p->len = sizeof(*p);
	return cmd(c, UBLK_CMD_SET_PARAMS, dev_id, p, sizeof(*p), 0);
}

int ublk_ctrl_get_params(struct ublk_ctrl *c, uint32_t dev_id,
			 struct ublk_params *p)
{
	memset(p, 0, sizeof(*p));
	p->len = sizeof(*p);
	return cmd(c, UBLK_CMD_GET_PARAMS, dev_id, p, sizeof(*p), 0);
}

int ublk_ctrl_start_dev(struct ublk_ctrl *c, uint32_t dev_id, int pid)
{
	return cmd(c, UBLK_CMD_START_DEV, dev_id, NULL, 0, (uint64_t)pid);
}

int ublk_ctrl_stop_dev(struct ublk_ctrl *c, uint32_t dev_id)
{
	return cmd(c, UBLK_CMD_STOP_DEV, dev_id, NULL, 0, 0);
}

int ublk_ctrl_start_recovery(struct ublk_ctrl *c, uint32_t dev_id)
{
	return cmd(c, UBLK_CMD_START_USER_RECOVERY, dev_id, NULL, 0, 0);
}

int ublk_ctrl_end_recovery(struct ublk_ctrl *c, uint32_t dev_id, int pid)
{
	return cmd(c, UBLK_CMD_END_USER_RECOVERY, dev_id, NULL, 0,
		   (uint64_t)pid);
}

int ublk_probe_features(uint64_t *features)
{
	struct ublk_ctrl *c;
	int ret = 0;

	c = ublk_ctrl_open();
	if (!c)
		return -errno;
	if (ublk_ctrl_has_features(c))
		*features = ublk_ctrl_features(c);
	else
		ret = -EOPNOTSUPP;
	ublk_ctrl_close(c);
	return ret;
}

static const char *const feature_names[] = {
	"zero-copy",	    "comp-in-task",	"need-get-data",
	"recovery",	    "recovery-reissue", "unprivileged",
	"cmd-ioctl-encode", "user-copy",	"zoned",
	"recovery-fail-io", "update-size",	"auto-buf-reg",
	"quiesce",	    "per-io-daemon",
};

const char *ublk_features_str(uint64_t features, char *buf, size_t len)
{
	size_t off = 0;
	uint64_t unknown = 0;

	if (!len)
		return buf;
	buf[0] = '\0';
	for (unsigned int i = 0; i < 64; i++) {
		const char *name;
		int n;

		if (!(features & (1ULL << i)))
			continue;
		if (i >= ARRAY_SIZE(feature_names)) {
			unknown |= 1ULL << i;
			continue;
		}
		name = feature_names[i];
		n = snprintf(buf + off, len - off, "%s%s", off ? "," : "",
			     name);
		if (n < 0 || (size_t)n >= len - off)
			return buf;
		off += (size_t)n;
	}
	if (unknown)
		snprintf(buf + off, len - off, "%s0x%llx", off ? "," : "",
			 (unsigned long long)unknown);
	return buf;
}

const char *ublk_state_name(unsigned int state)
{
	switch (state) {
	case UBLK_S_DEV_DEAD:
		return "dead";
	case UBLK_S_DEV_LIVE:
		return "live";
	case UBLK_S_DEV_QUIESCED:
		return "quiesced";
	case UBLK_S_DEV_FAIL_IO:
		return "fail-io";
	}
	return "unknown";
}
