/* SPDX-License-Identifier: MIT */
/*
 * ublk_ — the ublk control channel and kernel feature probing.
 *
 * Every control command (ADD_DEV, SET_PARAMS, START_DEV, ...) is an
 * io_uring URING_CMD on /dev/ublk-control carrying a 32-byte
 * struct ublksrv_ctrl_cmd, so it needs a ring with 128-byte SQEs. A
 * struct ublk_ctrl owns /dev/ublk-control and one such small ring;
 * commands are synchronous (submit, wait for the one completion).
 *
 * At open, GET_FEATURES is asked in the ioctl encoding, then in the
 * legacy one. Whichever answers decides the encoding of every later
 * command: kernels may be built without the legacy numbers
 * (CONFIG_BLKDEV_UBLK_LEGACY_OPCODES=n), while 6.1/6.2 know only them
 * (and have no GET_FEATURES: features then read as 0 and
 * ublk_ctrl_has_features() is false).
 *
 * No threads here; a struct ublk_ctrl serves one caller at a time.
 * Functions return 0 (or a non-negative count) or -errno, as the kernel
 * answered it.
 */
#ifndef DUET_UBLK_PROBE_H
#define DUET_UBLK_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ublk_abi.h"

struct ublk_ctrl;

/*
 * Open /dev/ublk-control and probe the features. NULL with errno set:
 * ENOENT when the ublk_drv module is not loaded (no control node), EACCES
 * without permission, or what io_uring setup failed with (ENOSYS when
 * io_uring is disabled).
 */
struct ublk_ctrl *ublk_ctrl_open(void);
void ublk_ctrl_close(struct ublk_ctrl *c);

/* Feature bits (UBLK_F_*) the driver supports; 0 if it cannot say. */
uint64_t ublk_ctrl_features(const struct ublk_ctrl *c);
/* Did the driver answer GET_FEATURES? */
bool ublk_ctrl_has_features(const struct ublk_ctrl *c);
/* Are commands sent in the ioctl encoding? */
bool ublk_ctrl_ioctl_encode(const struct ublk_ctrl *c);

/*
 * ADD_DEV: @info carries the request (dev_id, nr_hw_queues, queue_depth,
 * max_io_buf_bytes, flags, ublksrv_flags) and receives what the kernel
 * granted (it may lower the queue count or round the buffer size, and
 * drops flags it does not know). dev_id UBLK_DEV_ID_ANY lets it choose.
 * -EEXIST when the requested id is in use.
 */
int ublk_ctrl_add_dev(struct ublk_ctrl *c, struct ublksrv_ctrl_dev_info *info);
/* DEL_DEV: waits until every user of /dev/ublkcN has closed it. */
int ublk_ctrl_del_dev(struct ublk_ctrl *c, uint32_t dev_id);
/* GET_DEV_INFO; -ENODEV when no such device exists. */
int ublk_ctrl_get_info(struct ublk_ctrl *c, uint32_t dev_id,
		       struct ublksrv_ctrl_dev_info *info);
/*
 * GET_QUEUE_AFFINITY: the CPUs whose I/O goes to hardware queue @q, as a
 * bit mask of @len bytes (a cpu_set_t).
 */
int ublk_ctrl_get_affinity(struct ublk_ctrl *c, uint32_t dev_id,
			   unsigned int q, void *mask, uint16_t len);
/* SET_PARAMS (before START_DEV); p->len is filled in. */
int ublk_ctrl_set_params(struct ublk_ctrl *c, uint32_t dev_id,
			 struct ublk_params *p);
int ublk_ctrl_get_params(struct ublk_ctrl *c, uint32_t dev_id,
			 struct ublk_params *p);
/*
 * START_DEV: the kernel waits until every queue has issued its FETCH_REQ
 * commands, then creates /dev/ublkbN. @pid is the serving process.
 */
int ublk_ctrl_start_dev(struct ublk_ctrl *c, uint32_t dev_id, int pid);
/* STOP_DEV: drains and removes /dev/ublkbN; queue commands are aborted. */
int ublk_ctrl_stop_dev(struct ublk_ctrl *c, uint32_t dev_id);
/*
 * User recovery (UBLK_F_USER_RECOVERY): START is accepted once the old
 * server is gone and the device is quiesced (-EBUSY before that); END
 * waits for the new server's FETCH_REQs and resumes I/O.
 */
int ublk_ctrl_start_recovery(struct ublk_ctrl *c, uint32_t dev_id);
int ublk_ctrl_end_recovery(struct ublk_ctrl *c, uint32_t dev_id, int pid);

/*
 * One-shot probe for tools: the feature bits, or -ENOENT (no ublk driver),
 * -EOPNOTSUPP (driver too old to report features), other -errno.
 */
int ublk_probe_features(uint64_t *features);

/* "recovery,recovery-reissue,cmd-ioctl-encode,...", unknown bits in hex. */
const char *ublk_features_str(uint64_t features, char *buf, size_t len);
/* "dead", "live", "quiesced", "fail-io" or "unknown". */
const char *ublk_state_name(unsigned int state);

#endif
