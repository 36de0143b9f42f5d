// SPDX-License-Identifier: MIT
/*
 * The ublk device's life: create or recover, serve, stop.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "crc.h"
#include "dev.h"
#include "log.h"
#include "queue.h"
#include "ublk_probe.h"
#include "util.h"

#define DEV_TAG_MAGIC 0x4455455400000000ull /* "DUET" in the high half */
#define RECOVERY_WAIT_MS 30000
#define CDEV_WAIT_MS 5000

struct dev {
	struct ublk_ctrl *ctrl;
	struct ublksrv_ctrl_dev_info info;
	uint64_t dev_sectors;
	bool recovered;
	bool direct;
	bool discard;
	const struct eng_ops *eng;
	int backing_fd;
	int cdev_fd;
	char path[32];
	unsigned int nr_queues;
	struct queue **queues;
	struct queue_shared shared;
};

/* kill(pid, 0) alone would call a zombie alive. */
static bool pid_alive(pid_t pid)
{
	char path[64], buf[256], *p;
	ssize_t n;
	int fd;

	if (pid <= 0 || kill(pid, 0))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return true;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	/* "pid (comm) S ...": the state follows the last ')' */
	p = strrchr(buf, ')');
	return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

uint64_t dev_tag(const char *name)
{
	return DEV_TAG_MAGIC | crc32c(name, strlen(name));
}

static unsigned int log2u(uint32_t v)
{
	unsigned int s = 0;

	while ((1u << s) < v)
		s++;
	return s;
}

/* Does the backing block device do discard at all? Files punch holes. */
static bool bdev_discards(int fd)
{
	char path[96], buf[32];
	struct stat st;
	ssize_t n;
	int sfd;

	if (fstat(fd, &st))
		return false;
	snprintf(path, sizeof(path),
		 "/sys/dev/block/%u:%u/queue/discard_max_bytes",
		 major(st.st_rdev), minor(st.st_rdev));
	sfd = open(path, O_RDONLY | O_CLOEXEC);
	if (sfd < 0)
		return false;
	n = read(sfd, buf, sizeof(buf) - 1);
	close(sfd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return strtoull(buf, NULL, 10) > 0;
}

static int set_params(struct dev *d, const struct dev_config *c)
{
	struct ublk_params p;
	uint64_t ext = 1ull << c->al_extent_shift, max_disc;

	memset(&p, 0, sizeof(p));
	p.types = UBLK_PARAM_TYPE_BASIC;
	/* A volatile cache and FUA make the block layer send us FLUSH and
	 * FUA instead of assuming every completed write is durable. */
	p.basic.attrs = UBLK_ATTR_VOLATILE_CACHE | UBLK_ATTR_FUA;
	p.basic.logical_bs_shift = (uint8_t)log2u(c->logical_bs);
	p.basic.physical_bs_shift = (uint8_t)log2u(c->physical_bs);
	p.basic.io_min_shift = (uint8_t)log2u(c->physical_bs);
	p.basic.io_opt_shift = (uint8_t)log2u(c->physical_bs);
	p.basic.max_sectors = d->info.max_io_buf_bytes >> SECTOR_SHIFT;
	p.basic.dev_sectors = d->dev_sectors;
	if (d->discard) {
		/*
		 * A discard enters the activity log like a write: it must
		 * never span more extents than the log can hold at once, so
		 * cap it at four extents (at most five touched; the log has
		 * at least seven slots).
		 */
		max_disc = 4 * ext;
		if (max_disc > (1ull << 30))
			max_disc = 1ull << 30;
		p.types |= UBLK_PARAM_TYPE_DISCARD;
		p.discard.discard_granularity = c->physical_bs;
		p.discard.max_discard_sectors =
			(uint32_t)(max_disc >> SECTOR_SHIFT);
		p.discard.max_write_zeroes_sectors =
			(uint32_t)(max_disc >> SECTOR_SHIFT);
		p.discard.max_discard_segments = 1;
	}
	return ublk_ctrl_set_params(d->ctrl, d->info.dev_id, &p);
}

static int open_cdev(struct dev *d)
{
	char path[32];
	unsigned int waited = 0;

	snprintf(path, sizeof(path), UBLK_CDEV_FMT, d->info.dev_id);
	/* the node appears when udev (or devtmpfs) has caught up */
	for (;;) {
		d->cdev_fd = open(path, O_RDWR | O_CLOEXEC);
		if (d->cdev_fd >= 0)
			return 0;
		if (errno != ENOENT || waited >= CDEV_WAIT_MS)
			return -errno;
		sleep_ms(50);
		waited += 50;
	}
}

static void stop_queues(struct dev *d, bool abort)
{
	for (unsigned int i = 0; i < d->nr_queues; i++) {
		if (d->queues[i] && abort)
			queue_abort(d->queues[i]);
	}
	for (unsigned int i = 0; i < d->nr_queues; i++) {
		queue_destroy(d->queues[i]);
		d->queues[i] = NULL;
	}
}

static int start_queues(struct dev *d, struct meta *meta,
			struct eng_helper *helper, bool is_bdev, char *why,
			size_t len)
{
	struct queue_params qp = {
		.cdev_fd = d->cdev_fd,
		.depth = d->info.queue_depth,
		.buf_bytes = d->info.max_io_buf_bytes,
		.dev_sectors = d->dev_sectors,
		.ioctl_encode = d->info.flags & UBLK_F_CMD_IOCTL_ENCODE,
		.eng = d->eng,
		.backing_fd = d->backing_fd,
		.backing_is_bdev = is_bdev,
		.helper = helper,
		.meta = meta,
		.shared = &d->shared,
	};
	int ret = 0;

	if (d->info.nr_hw_queues > META_MAX_QUEUES) {
		return util_why(-EINVAL, why, len,
				"device has %u queues, at most %u supported",
				d->info.nr_hw_queues, META_MAX_QUEUES);
	}
	d->nr_queues = d->info.nr_hw_queues;
	d->queues = calloc(d->nr_queues, sizeof(*d->queues));
	if (!d->queues)
		return -ENOMEM;
	for (unsigned int i = 0; i < d->nr_queues; i++) {
		qp.id = i;
		d->queues[i] = queue_start(&qp);
		if (!d->queues[i]) {
			ret = util_why(-errno, why, len,
				       "cannot start queue %u: %s", i,
				       strerror(errno));
			goto out_stop;
		}
	}
	for (unsigned int i = 0; i < d->nr_queues; i++) {
		int r = queue_wait_ready(d->queues[i]);

		if (r && !ret)
			ret = util_why(r, why, len,
				       "queue %u failed to start: %s", i,
				       strerror(-r));
	}
	if (!ret)
		return 0;
out_stop:
	stop_queues(d, true);
	return ret;
}

/* Wait until the old server is gone and the driver accepts the takeover. */
static int start_recovery(struct dev *d, char *why, size_t len)
{
	unsigned int waited = 0;
	int ret;

	for (;;) {
		ret = ublk_ctrl_get_info(d->ctrl, d->info.dev_id, &d->info);
		if (ret)
			return util_why(ret, why, len, "device %u vanished: %s",
					d->info.dev_id, strerror(-ret));
		if (d->info.state != UBLK_S_DEV_LIVE) {
			ret = ublk_ctrl_start_recovery(d->ctrl, d->info.dev_id);
			if (ret != -EBUSY)
				break;
		}
		if (waited >= RECOVERY_WAIT_MS) {
			ret = -ETIMEDOUT;
			break;
		}
		sleep_ms(100);
		waited += 100;
	}
	if (ret)
		util_why(ret, why, len,
			 "ublk device %u (%s) refused user recovery: %s",
			 d->info.dev_id, ublk_state_name(d->info.state),
			 strerror(-ret));
	return ret;
}

/*
 * Is there a device of ours to take over? 1 yes (d->info filled), 0 no
 * (create one; *reuse_id tells which id to ask for), -errno with @why.
 */
static int find_own(struct dev *d, const struct dev_config *c,
		    uint32_t *want_id, char *why, size_t len)
{
	uint64_t tag = dev_tag(c->resource);
	int32_t id = c->prev_dev_id >= 0 ? c->prev_dev_id : c->dev_id;
	struct ublksrv_ctrl_dev_info info;
	int ret;

	*want_id = c->dev_id >= 0 ? (uint32_t)c->dev_id : UBLK_DEV_ID_ANY;
	if (id < 0)
		return 0;
	ret = ublk_ctrl_get_info(d->ctrl, (uint32_t)id, &info);
	if (ret == -ENODEV || ret == -ENOENT)
		return 0;
	if (ret)
		return util_why(ret, why, len, "cannot query ublk device %d: %s",
				id, strerror(-ret));
	if (info.ublksrv_flags != tag) {
		if (id == c->dev_id)
			return util_why(-EEXIST, why, len,
					"ublk device id %d is already in use by another device (not resource %s); choose another ublk-id or remove it",
					id, c->resource);
		log_notice("state file names ublk device %d, which is not ours any more; creating a new device",
			   id);
		return 0;
	}
	if (info.state == UBLK_S_DEV_DEAD) {
		log_notice("ublk device %d of %s is stopped; deleting it and creating it again",
			   id, c->resource);
		ret = ublk_ctrl_del_dev(d->ctrl, (uint32_t)id);
		if (ret && ret != -ENODEV)
			return util_why(ret, why, len,
					"cannot delete stale ublk device %d: %s",
					id, strerror(-ret));
		*want_id = (uint32_t)id;
		return 0;
	}
	if (info.state == UBLK_S_DEV_LIVE && info.ublksrv_pid != getpid() &&
	    pid_alive(info.ublksrv_pid))
		return util_why(-EBUSY, why, len,
				"ublk device %d of %s is served by process %d (another duetd?)",
				id, c->resource, info.ublksrv_pid);
	if (!(info.flags & UBLK_F_USER_RECOVERY))
		return util_why(-EBUSY, why, len,
				"ublk device %d of %s was created without user recovery and its server is gone; delete it first",
				id, c->resource);
	d->info = info;
	return 1;
}

static int add_dev(struct dev *d, const struct dev_config *c, uint32_t id,
		   char *why, size_t len)
{
	uint64_t feat = ublk_ctrl_features(d->ctrl);
	bool known = ublk_ctrl_has_features(d->ctrl);
	int ret;

	memset(&d->info, 0, sizeof(d->info));
	d->info.dev_id = id;
	d->info.nr_hw_queues = (uint16_t)c->queues;
	d->info.queue_depth = (uint16_t)c->depth;
	d->info.max_io_buf_bytes = c->max_io_bytes;
	d->info.ublksrv_flags = dev_tag(c->resource);
	/* Survive our own death: the kernel keeps the device and requeues
	 * what was in flight for the next server (REISSUE). */
	d->info.flags = UBLK_F_USER_RECOVERY;
	if (!known || (feat & UBLK_F_USER_RECOVERY_REISSUE))
		d->info.flags |= UBLK_F_USER_RECOVERY_REISSUE;
	if (feat & UBLK_F_CMD_IOCTL_ENCODE)
		d->info.flags |= UBLK_F_CMD_IOCTL_ENCODE;
	ret = ublk_ctrl_add_dev(d->ctrl, &d->info);
	if (ret == -EEXIST)
		return util_why(ret, why, len,
				"ublk device id %u is already in use; choose another ublk-id or remove that device",
				id);
	if (ret)
		return util_why(ret, why, len, "ublk ADD_DEV failed: %s",
				strerror(-ret));
	if (!(d->info.flags & UBLK_F_USER_RECOVERY))
		log_warn("the kernel did not grant user recovery: a restarted duetd cannot take over the device");
	return 0;
}

static int check_backing(struct dev *d, const struct dev_config *c,
			 bool *is_bdev, char *why, size_t len)
{
	int ret, lbs;

	ret = eng_open_backing(c->backing, &d->backing_fd, is_bdev, &d->direct);
	if (ret == -EBUSY)
		return util_why(ret, why, len,
				"backing device %s is in use (mounted or held by another program)",
				c->backing);
	if (ret)
		return util_why(ret, why, len,
				"cannot open backing device %s: %s",
				c->backing, strerror(-ret));
	if (*is_bdev && d->direct && !ioctl(d->backing_fd, BLKSSZGET, &lbs) &&
	    (uint32_t)lbs > c->logical_bs)
		return util_why(-EINVAL, why, len,
				"logical-block-size %u is smaller than %s's %d: direct I/O would fail; set logical-block-size = %d",
				c->logical_bs, c->backing, lbs, lbs);
	d->discard = c->discard;
	if (d->discard && *is_bdev && !bdev_discards(d->backing_fd)) {
		log_notice("%s does not support discard: not offering it",
			   c->backing);
		d->discard = false;
	}
	return 0;
}

static void dev_free(struct dev *d)
{
	if (d->cdev_fd >= 0)
		close(d->cdev_fd);
	if (d->backing_fd >= 0)
		close(d->backing_fd);
	ublk_ctrl_close(d->ctrl);
	free(d->queues);
	free(d);
}

struct dev *dev_up(const struct dev_config *c, struct meta *meta,
		   struct eng_helper *helper, char *why, size_t len)
{
	struct ublk_params prm;
	bool is_bdev, created = false;
	uint32_t want_id;
	struct dev *d;
	int ret;

	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->backing_fd = d->cdev_fd = -1;
	d->shared = (struct queue_shared)QUEUE_SHARED_INIT;
	d->eng = eng_find(c->engine);
	d->dev_sectors = ROUND_DOWN(c->data_bytes, c->logical_bs) >>
			 SECTOR_SHIFT;
	d->ctrl = ublk_ctrl_open();
	if (!d->ctrl) {
		ret = -errno;
		if (ret == -ENOENT)
			util_why(ret, why, len,
				 "ublk is not available: %s is missing (modprobe ublk_drv)",
				 UBLK_CONTROL_PATH);
		else
			util_why(ret, why, len, "cannot use %s: %s",
				 UBLK_CONTROL_PATH, strerror(-ret));
		goto out_free;
	}
	if (!ublk_ctrl_has_features(d->ctrl))
		log_notice("the ublk driver does not report its features (kernel before 6.3?)");

	ret = check_backing(d, c, &is_bdev, why, len);
	if (ret)
		goto out_free;

	ret = find_own(d, c, &want_id, why, len);
	if (ret < 0)
		goto out_free;
	if (ret) {
		d->recovered = true;
		log_notice("taking over ublk device %u (%s, server pid %d gone)",
			   d->info.dev_id, ublk_state_name(d->info.state),
			   d->info.ublksrv_pid);
		ret = ublk_ctrl_get_params(d->ctrl, d->info.dev_id, &prm);
		if (!ret && prm.basic.dev_sectors != d->dev_sectors) {
			ret = util_why(-EINVAL, why, len,
				       "ublk device %u has %llu sectors, the data area %llu: refusing to take it over",
				       d->info.dev_id,
				       (unsigned long long)prm.basic.dev_sectors,
				       (unsigned long long)d->dev_sectors);
			goto out_free;
		}
		ret = start_recovery(d, why, len);
		if (ret)
			goto out_free;
	} else {
		ret = add_dev(d, c, want_id, why, len);
		if (ret)
			goto out_free;
		created = true;
		ret = set_params(d, c);
		if (ret) {
			util_why(ret, why, len, "ublk SET_PARAMS failed: %s",
				 strerror(-ret));
			goto out_del;
		}
	}
	snprintf(d->path, sizeof(d->path), UBLK_BDEV_FMT, d->info.dev_id);

	ret = open_cdev(d);
	if (ret) {
		util_why(ret, why, len, "cannot open " UBLK_CDEV_FMT ": %s",
			 d->info.dev_id, strerror(-ret));
		goto out_del;
	}
	ret = start_queues(d, meta, helper, is_bdev, why, len);
	if (ret)
		goto out_close;

	if (d->recovered)
		ret = ublk_ctrl_end_recovery(d->ctrl, d->info.dev_id, getpid());
	else
		ret = ublk_ctrl_start_dev(d->ctrl, d->info.dev_id, getpid());
	if (ret) {
		util_why(ret, why, len, "ublk %s failed: %s",
			 d->recovered ? "END_USER_RECOVERY" : "START_DEV",
			 strerror(-ret));
		goto out_queues;
	}
	if (ublk_ctrl_get_info(d->ctrl, d->info.dev_id, &d->info))
		log_warn("cannot read back the state of ublk device %u",
			 d->info.dev_id);
	log_notice("%s %s: %u queue(s) x %u, %u KiB max I/O, %s engine%s",
		   d->recovered ? "recovered" : "created", d->path,
		   d->nr_queues, d->info.queue_depth,
		   d->info.max_io_buf_bytes >> 10, d->eng->name,
		   d->direct ? "" : " (buffered)");
	return d;

out_queues:
	stop_queues(d, true);
out_close:
	close(d->cdev_fd);
	d->cdev_fd = -1;
out_del:
	/* Leave nothing half-made behind; a device we were taking over
	 * stays for the next attempt (its I/O is waiting in it). */
	if (created && ublk_ctrl_del_dev(d->ctrl, d->info.dev_id))
		log_warn("cannot delete ublk device %u", d->info.dev_id);
out_free:
	dev_free(d);
	errno = -ret;
	return NULL;
}

int dev_down(struct dev *d)
{
	int ret, r;

	ret = ublk_ctrl_stop_dev(d->ctrl, d->info.dev_id);
	if (ret)
		log_err("ublk STOP_DEV of device %u failed: %s",
			d->info.dev_id, strerror(-ret));
	/* after a failed stop the commands are not aborted: end them */
	stop_queues(d, ret != 0);
	close(d->cdev_fd);
	d->cdev_fd = -1;
	r = ublk_ctrl_del_dev(d->ctrl, d->info.dev_id);
	if (r) {
		log_err("ublk DEL_DEV of device %u failed: %s",
			d->info.dev_id, strerror(-r));
		if (!ret)
			ret = r;
	}
	dev_free(d);
	return ret;
}

uint32_t dev_id(const struct dev *d)
{
	return d->info.dev_id;
}

bool dev_recovered(const struct dev *d)
{
	return d->recovered;
}

const char *dev_path(const struct dev *d)
{
	return d->path;
}

void dev_status(const struct dev *d, json_t *o)
{
	struct queue_stats sum = { 0 }, st;
	char fbuf[256];
	json_t *io, *feat;

	json_object_set_new(o, "device", json_string(d->path));
	json_object_set_new(o, "dev_id", json_integer(d->info.dev_id));
	json_object_set_new(o, "queues", json_integer(d->nr_queues));
	json_object_set_new(o, "queue_depth",
			    json_integer(d->info.queue_depth));
	json_object_set_new(o, "max_io_bytes",
			    json_integer(d->info.max_io_buf_bytes));
	json_object_set_new(o, "engine", json_string(d->eng->name));
	json_object_set_new(o, "direct_io", json_boolean(d->direct));
	json_object_set_new(o, "discard", json_boolean(d->discard));
	json_object_set_new(o, "size_bytes",
			    json_integer((json_int_t)(d->dev_sectors
						      << SECTOR_SHIFT)));
	json_object_set_new(o, "recovered", json_boolean(d->recovered));

	feat = json_object();
	json_object_set_new(feat, "kernel",
			    json_string(ublk_features_str(
				    ublk_ctrl_features(d->ctrl), fbuf,
				    sizeof(fbuf))));
	json_object_set_new(feat, "device",
			    json_string(ublk_features_str(d->info.flags, fbuf,
							  sizeof(fbuf))));
	json_object_set_new(o, "features", feat);

	for (unsigned int i = 0; i < d->nr_queues; i++) {
		const uint64_t *s = (const uint64_t *)&st;
		uint64_t *t = (uint64_t *)&sum;

		queue_get_stats(d->queues[i], &st);
		for (size_t k = 0; k < sizeof(st) / sizeof(uint64_t); k++)
			t[k] += s[k];
	}
	io = json_object();
	json_object_set_new(io, "reads", json_integer((json_int_t)sum.reads));
	json_object_set_new(io, "writes",
			    json_integer((json_int_t)sum.writes));
	json_object_set_new(io, "read_bytes",
			    json_integer((json_int_t)sum.read_bytes));
	json_object_set_new(io, "write_bytes",
			    json_integer((json_int_t)sum.write_bytes));
	json_object_set_new(io, "flushes",
			    json_integer((json_int_t)sum.flushes));
	json_object_set_new(io, "flushes_elided",
			    json_integer((json_int_t)sum.flushes_elided));
	json_object_set_new(io, "fua_writes",
			    json_integer((json_int_t)sum.fua_writes));
	json_object_set_new(io, "discards",
			    json_integer((json_int_t)sum.discards));
	json_object_set_new(io, "write_zeroes",
			    json_integer((json_int_t)sum.write_zeroes));
	json_object_set_new(io, "errors",
			    json_integer((json_int_t)sum.errors));
	json_object_set_new(io, "al_waits",
			    json_integer((json_int_t)sum.al_waits));
	/* completions per io_uring_enter: how well the loop batches */
	json_object_set_new(io, "loops", json_integer((json_int_t)sum.loops));
	json_object_set_new(io, "cqes", json_integer((json_int_t)sum.cqes));
	json_object_set_new(o, "io", io);
}
