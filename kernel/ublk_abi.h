/* SPDX-License-Identifier: MIT */
/*
 * The ublk user ABI, as duet uses it.
 *
 * Debian 12 ships the 6.1 <linux/ublk_cmd.h>: legacy opcodes only and
 * feature bits 0-4. Test and production kernels are newer (6.12 in the test
 * guest), so what duet needs from later kernels is defined here, each
 * #ifndef-guarded so that a newer system header wins. The values are the
 * documented ABI (include/uapi/linux/ublk_cmd.h, Documentation/block/ublk.rst):
 * they can never change, only be added to.
 *
 * Two command encodings exist. Legacy: the command number alone (0x04 for
 * ADD_DEV). Since 6.4 (UBLK_F_CMD_IOCTL_ENCODE): an ioctl-style number,
 * _IOWR('u', 0x04, struct ublksrv_ctrl_cmd). Kernels may be built without
 * the legacy numbers, so duet uses the ioctl encoding whenever
 * GET_FEATURES answers in it.
 */
#ifndef DUET_UBLK_ABI_H
#define DUET_UBLK_ABI_H

#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/ublk_cmd.h>

#define UBLK_CONTROL_PATH "/dev/ublk-control"
#define UBLK_CDEV_FMT "/dev/ublkc%u"	/* per device: queue commands */
#define UBLK_BDEV_FMT "/dev/ublkb%u"	/* per device: the block device */
#define UBLK_DEV_ID_ANY 0xffffffffu	/* ADD_DEV: let the kernel choose */

/* ---- control commands added after 6.1 ---- */

#ifndef UBLK_CMD_GET_DEV_INFO2
#define UBLK_CMD_GET_DEV_INFO2 0x12
#endif
/* GET_FEATURES has no legacy name, but its number is 0x13 in both forms. */
#define UBLK_CMD_GET_FEATURES_NR 0x13
#define UBLK_CMD_DEL_DEV_ASYNC_NR 0x14

#ifndef UBLK_U_CMD_GET_QUEUE_AFFINITY
#define UBLK_U_CMD_GET_QUEUE_AFFINITY \
	_IOR('u', UBLK_CMD_GET_QUEUE_AFFINITY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_DEV_INFO \
	_IOR('u', UBLK_CMD_GET_DEV_INFO, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_ADD_DEV \
	_IOWR('u', UBLK_CMD_ADD_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_DEL_DEV \
	_IOWR('u', UBLK_CMD_DEL_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_DEV \
	_IOWR('u', UBLK_CMD_START_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_STOP_DEV \
	_IOWR('u', UBLK_CMD_STOP_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_SET_PARAMS \
	_IOWR('u', UBLK_CMD_SET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_PARAMS \
	_IOR('u', UBLK_CMD_GET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_USER_RECOVERY \
	_IOWR('u', UBLK_CMD_START_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_END_USER_RECOVERY \
	_IOWR('u', UBLK_CMD_END_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_DEV_INFO2 \
	_IOR('u', UBLK_CMD_GET_DEV_INFO2, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_CMD_GET_FEATURES
#define UBLK_U_CMD_GET_FEATURES \
	_IOR('u', UBLK_CMD_GET_FEATURES_NR, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_CMD_DEL_DEV_ASYNC
#define UBLK_U_CMD_DEL_DEV_ASYNC \
	_IOR('u', UBLK_CMD_DEL_DEV_ASYNC_NR, struct ublksrv_ctrl_cmd)
#endif

/* GET_FEATURES fills one __u64; the kernel insists on exactly this length. */
#ifndef UBLK_FEATURES_LEN
#define UBLK_FEATURES_LEN 8
#endif

/* ---- queue (I/O) commands in the ioctl encoding ---- */

#ifndef UBLK_U_IO_FETCH_REQ
#define UBLK_U_IO_FETCH_REQ \
	_IOWR('u', UBLK_IO_FETCH_REQ, struct ublksrv_io_cmd)
#define UBLK_U_IO_COMMIT_AND_FETCH_REQ \
	_IOWR('u', UBLK_IO_COMMIT_AND_FETCH_REQ, struct ublksrv_io_cmd)
#define UBLK_U_IO_NEED_GET_DATA \
	_IOWR('u', UBLK_IO_NEED_GET_DATA, struct ublksrv_io_cmd)
#endif

/* ---- device flags (ublksrv_ctrl_dev_info.flags, GET_FEATURES bits) ---- */

#ifndef UBLK_F_UNPRIVILEGED_DEV
#define UBLK_F_UNPRIVILEGED_DEV (1ULL << 5)
#endif
#ifndef UBLK_F_CMD_IOCTL_ENCODE
#define UBLK_F_CMD_IOCTL_ENCODE (1ULL << 6)
#endif
#ifndef UBLK_F_USER_COPY
#define UBLK_F_USER_COPY (1ULL << 7)
#endif
#ifndef UBLK_F_ZONED
#define UBLK_F_ZONED (1ULL << 8)
#endif
#ifndef UBLK_F_USER_RECOVERY_FAIL_IO
#define UBLK_F_USER_RECOVERY_FAIL_IO (1ULL << 9)
#endif
#ifndef UBLK_F_UPDATE_SIZE
#define UBLK_F_UPDATE_SIZE (1ULL << 10)
#endif
#ifndef UBLK_F_AUTO_BUF_REG
#define UBLK_F_AUTO_BUF_REG (1ULL << 11)
#endif
#ifndef UBLK_F_QUIESCE
#define UBLK_F_QUIESCE (1ULL << 12)
#endif
#ifndef UBLK_F_PER_IO_DAEMON
#define UBLK_F_PER_IO_DAEMON (1ULL << 13)
#endif

/* ---- device states (ublksrv_ctrl_dev_info.state) ---- */

#ifndef UBLK_S_DEV_FAIL_IO
#define UBLK_S_DEV_FAIL_IO 3
#endif

/*
 * Per-queue I/O descriptor array on /dev/ublkcN: queue q's array is mapped
 * at this offset, sized for its own depth. The stride is that of the
 * largest possible queue, so it does not depend on the device's depth.
 */
static inline __u64 ublk_io_desc_offset(unsigned int q_id, unsigned int page)
{
	__u64 stride = (__u64)UBLK_MAX_QUEUE_DEPTH *
		       sizeof(struct ublksrv_io_desc);

	stride = (stride + page - 1) / page * page;
	return UBLKSRV_CMD_BUF_OFFSET + (__u64)q_id * stride;
}

/*
 * The structures are shared with the kernel byte for byte; the 6.1 and
 * later headers agree on every size (later ones only rename padding).
 */
_Static_assert(sizeof(struct ublksrv_ctrl_cmd) == 32, "ublksrv_ctrl_cmd");
_Static_assert(sizeof(struct ublksrv_ctrl_dev_info) == 64,
	       "ublksrv_ctrl_dev_info");
_Static_assert(sizeof(struct ublksrv_io_desc) == 24, "ublksrv_io_desc");
_Static_assert(sizeof(struct ublksrv_io_cmd) == 16, "ublksrv_io_cmd");
_Static_assert(sizeof(struct ublk_param_basic) == 32, "ublk_param_basic");
_Static_assert(sizeof(struct ublk_param_discard) == 20, "ublk_param_discard");

#endif
