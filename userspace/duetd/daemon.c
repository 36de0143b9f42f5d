// SPDX-License-Identifier: MIT
/*
 * duetd between main() and the device: configuration, metadata, device,
 * control socket.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "ctl.h"
#include "daemon.h"
#include "dev.h"
#include "eng.h"
#include "eng_fault.h"
#include "fence.h"
#include "log.h"
#include "meta.h"
#include "nbd.h"
#include "repl.h"
#include "runfile.h"
#include "util.h"

/* duetctl waits 60 s for "down"; answer before that. */
#define DOWN_REPLY_TIMEOUT_S 55

void daemon_init(struct daemon *d)
{
	memset(d, 0, sizeof(*d));
	d->ready_fd = -1;
	d->pid_fd = -1;
	d->down_efd = -1;
	d->nbd_fd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
}

int daemon_load_config(struct daemon *d)
{
	char path[PATH_MAX], err[512];
	int ret;

	ret = cfg_resource_path(d->config_dir, d->res, path, sizeof(path));
	if (ret == -ENOENT) {
		log_err("no configuration for resource '%s' in %s", d->res,
			d->config_dir);
		return DAEMON_EXIT_CONFIG;
	}
	if (ret) {
		log_err("'%s' is not a valid resource name", d->res);
		return DAEMON_EXIT_CONFIG;
	}
	d->cfg = calloc(1, sizeof(*d->cfg));
	if (!d->cfg)
		return DAEMON_EXIT_FAIL;
	if (cfg_load_file(path, d->cfg, err, sizeof(err))) {
		log_err("%s", err);
		return DAEMON_EXIT_CONFIG;
	}
	d->self = cfg_local_node(d->cfg, d->node, err, sizeof(err));
	if (!d->self) {
		log_err("%s", err);
		return DAEMON_EXIT_CONFIG;
	}
	d->peer = cfg_peer_node(d->cfg, d->self);
	return 0;
}

int daemon_lock(struct daemon *d)
{
	pid_t holder = 0;
	int fd;

	if (mkdir(d->run_dir, 0755) && errno != EEXIST) {
		log_err("cannot create run directory %s: %s", d->run_dir,
			strerror(errno));
		return DAEMON_EXIT_FAIL;
	}
	fd = runfile_lock(d->run_dir, d->res, &holder);
	if (fd == -EBUSY) {
		log_err("resource %s is already served by duetd (pid %d)",
			d->res, (int)holder);
		return DAEMON_EXIT_BUSY;
	}
	if (fd < 0) {
		log_err("cannot create the pid file in %s: %s", d->run_dir,
			strerror(-fd));
		return DAEMON_EXIT_FAIL;
	}
	d->pid_fd = fd;
	return 0;
}

/* ---- control socket ---- */

static const char *state_name(enum daemon_state s)
{
	switch (s) {
	case DAEMON_STARTING:
		return "starting";
	case DAEMON_RUNNING:
		return "running";
	case DAEMON_STOPPING:
		return "stopping";
	}
	return "?";
}

static int h_status(void *arg, json_t *req, json_t *resp)
{
	struct daemon *d = arg;
	struct meta_stats ms;
	char flags[128];
	json_t *o;

	(void)req;
	pthread_mutex_lock(&d->lock);
	json_object_set_new(resp, "resource", json_string(d->res));
	json_object_set_new(resp, "node", json_string(d->self->name));
	json_object_set_new(resp, "node_id", json_integer(d->self->id));
	json_object_set_new(resp, "pid", json_integer(getpid()));
	json_object_set_new(resp, "state", json_string(state_name(d->state)));
	json_object_set_new(resp, "uptime_s",
			    json_integer(time(NULL) - d->started));
	json_object_set_new(resp, "backing", json_string(d->self->disk));
	json_object_set_new(resp, "meta_disk",
			    json_string(d->self->meta_disk));
	json_object_set_new(resp, "data_bytes",
			    json_integer((json_int_t)d->md.sb.data_bytes));
	json_object_set_new(resp, "peer",
			    d->peer ? json_string(d->peer->name) : json_null());
	json_object_set_new(resp, "crashed_primary", json_boolean(d->crashed));
	/* while stopping, the main thread rewrites the superblock and
	 * frees the device */
	if (d->state == DAEMON_RUNNING) {
		json_object_set_new(resp, "md_flags",
				    json_string(md_flags_str(d->md.sb.flags,
							     flags,
							     sizeof(flags))));
		if (d->dev)
			dev_status(d->dev, resp);
	}
	if (d->meta) {
		meta_get_stats(d->meta, &ms);
		o = json_object();
		json_object_set_new(o, "active", json_integer(ms.al_active));
		json_object_set_new(o, "slots", json_integer(ms.al_slots));
		json_object_set_new(o, "transactions",
				    json_integer((json_int_t)ms.txns));
		json_object_set_new(o, "committed_seq",
				    json_integer((json_int_t)ms.committed_seq));
		json_object_set_new(resp, "al", o);
		o = json_object();
		json_object_set_new(o, "dirty_bytes",
				    json_integer((json_int_t)ms.dirty_bytes));
		json_object_set_new(o, "pages_written",
				    json_integer((json_int_t)ms.bm_pages));
		json_object_set_new(resp, "bitmap", o);
		json_object_set_new(resp, "md_error",
				    ms.error ? json_string(strerror(-ms.error)) :
					       json_null());
	}
	if (d->repl && d->state == DAEMON_RUNNING) {
		repl_status(d->repl, resp);
		admin_status(d->repl, resp,
			     json_is_true(json_object_get(req, "verbose")));
	}
	if (d->nbd && d->state == DAEMON_RUNNING) {
		o = json_object();
		nbd_status(d->nbd, o);
		json_object_set_new(resp, "nbd", o);
	}
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static int h_down(void *arg, json_t *req, json_t *resp)
{
	struct daemon *d = arg;
	struct timespec until;
	uint64_t one = 1;
	int ret = 0;

	(void)req;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += DOWN_REPLY_TIMEOUT_S;
	pthread_mutex_lock(&d->lock);
	if (!d->down_requested) {
		d->down_requested = true;
		if (write(d->down_efd, &one, sizeof(one)) != sizeof(one))
			ret = -errno;
	}
	while (!ret && !d->down_done)
		ret = -pthread_cond_timedwait(&d->cond, &d->lock, &until);
	if (!ret)
		ret = d->down_result;
	pthread_mutex_unlock(&d->lock);
	if (ret == -ETIMEDOUT)
		return ctl_error(resp, ret,
				 "the device is still stopping after %d s",
				 DOWN_REPLY_TIMEOUT_S);
	if (ret)
		return ctl_error(resp, ret, "stopping the device failed: %s",
				 strerror(-ret));
	return 0;
}

/* The resource's replication, or a refusal when it has no peer. */
static struct repl *need_repl(struct daemon *d, json_t *resp, int *ret)
{
	*ret = 0;
	if (d->repl && d->state == DAEMON_RUNNING)
		return d->repl;
	*ret = ctl_error(resp, d->repl ? -EAGAIN : -EINVAL,
			 d->repl ? "the resource is not running" :
				   "%s has no peer: roles need a two-node resource",
			 d->res);
	return NULL;
}

static int h_role(struct daemon *d, json_t *req, json_t *resp, bool primary)
{
	char why[256] = "";
	struct repl *r;
	int ret;

	pthread_mutex_lock(&d->lock);
	r = need_repl(d, resp, &ret);
	pthread_mutex_unlock(&d->lock);
	if (!r)
		return ret;
	ret = repl_role(r, primary,
			json_is_true(json_object_get(req, "force")), why,
			sizeof(why));
	if (ret)
		return ctl_error(resp, ret, "%s", why[0] ? why : strerror(-ret));
	repl_status(r, resp);
	return 0;
}

static int h_primary(void *arg, json_t *req, json_t *resp)
{
	return h_role(arg, req, resp, true);
}

static int h_secondary(void *arg, json_t *req, json_t *resp)
{
	return h_role(arg, req, resp, false);
}

/*
 * duetctl adjust: read the resource file again and take the adjustable keys
 * that changed (cfg_adjust); refused, changing nothing, if any other key
 * changed. Numbers and enums are read by other threads without a lock and
 * take effect where they are next read (the next resync, connection
 * attempt, handler run, policy decision); the connection's timers are
 * re-armed at once.
 */
static int h_adjust(void *arg, json_t *req, json_t *resp)
{
	struct daemon *d = arg;
	char path[PATH_MAX], why[768], changed[512];
	struct cfg_resource *next;
	struct repl *r;
	int ret;

	(void)req;
	ret = cfg_resource_path(d->config_dir, d->res, path, sizeof(path));
	if (ret)
		return ctl_error(resp, ret, "no configuration for %s in %s",
				 d->res, d->config_dir);
	next = calloc(1, sizeof(*next));
	if (!next)
		return ctl_error(resp, -ENOMEM, "out of memory");
	if (cfg_load_file(path, next, why, sizeof(why))) {
		free(next);
		return ctl_error(resp, -EINVAL, "%s", why);
	}
	pthread_mutex_lock(&d->lock);
	ret = cfg_adjust(d->cfg, next, changed, sizeof(changed), why,
			 sizeof(why));
	r = ret ? NULL : d->repl;
	pthread_mutex_unlock(&d->lock);
	free(next);
	if (ret)
		return ctl_error(resp, ret, "%s", why);
	if (r)
		repl_adjust(r);
	if (changed[0])
		log_notice("%s: adjusted: %s", d->res, changed);
	json_object_set_new(resp, "changed", json_string(changed));
	return 0;
}

static int h_verify(void *arg, json_t *req, json_t *resp)
{
	struct daemon *d = arg;
	char why[256] = "";
	struct repl *r;
	int ret;

	(void)req;
	pthread_mutex_lock(&d->lock);
	r = need_repl(d, resp, &ret);
	pthread_mutex_unlock(&d->lock);
	if (!r)
		return ret;
	ret = repl_verify(r, why, sizeof(why));
	if (ret)
		return ctl_error(resp, ret, "%s", why[0] ? why : strerror(-ret));
	repl_status(r, resp);
	return 0;
}

static int h_new_current_uuid(void *arg, json_t *req, json_t *resp)
{
	struct daemon *d = arg;
	char why[256] = "";
	struct repl *r;
	int ret;

	pthread_mutex_lock(&d->lock);
	r = need_repl(d, resp, &ret);
	pthread_mutex_unlock(&d->lock);
	if (!r)
		return ret;
	ret = repl_new_current_uuid(
		r, json_is_true(json_object_get(req, "clear_bitmap")), why,
		sizeof(why));
	if (ret)
		return ctl_error(resp, ret, "%s", why[0] ? why : strerror(-ret));
	repl_status(r, resp);
	return 0;
}

static int start_ctl(struct daemon *d)
{
	char path[PATH_MAX];
	int ret;

	d->down_efd = eventfd(0, EFD_CLOEXEC);
	if (d->down_efd < 0)
		return -errno;
	snprintf(path, sizeof(path), "%s/%s.sock", d->run_dir, d->res);
	d->ctl = ctl_create(path, (gid_t)-1);
	if (!d->ctl) {
		ret = -errno;
		log_err("cannot create the control socket %s: %s", path,
			strerror(errno));
		return ret;
	}
	ret = ctl_register(d->ctl, "status", h_status, d);
	if (!ret)
		ret = ctl_register(d->ctl, "down", h_down, d);
	if (!ret)
		ret = ctl_register(d->ctl, "primary", h_primary, d);
	if (!ret)
		ret = ctl_register(d->ctl, "secondary", h_secondary, d);
	if (!ret)
		ret = ctl_register(d->ctl, "verify", h_verify, d);
	if (!ret)
		ret = ctl_register(d->ctl, "adjust", h_adjust, d);
	if (!ret)
		ret = ctl_register(d->ctl, "new-current-uuid",
				   h_new_current_uuid, d);
	if (!ret)
		ret = admin_register(d->ctl, d);
	if (!ret)
		ret = fence_register(d->ctl, d);
	if (!ret)
		ret = ctl_start(d->ctl);
	if (ret)
		log_err("control socket: %s", strerror(-ret));
	return ret;
}

/* ---- metadata ---- */

static int load_md(struct daemon *d)
{
	const char *md_path = strcmp(d->self->meta_disk, "internal") ?
				      d->self->meta_disk : NULL;
	char why[512];
	int ret;

	ret = mdio_open(&d->md, d->self->disk, md_path, 0, why, sizeof(why));
	if (ret) {
		log_err("%s", why);
		return ret == -EBUSY ? DAEMON_EXIT_BUSY : DAEMON_EXIT_FAIL;
	}
	d->md_open = true;
	ret = mdio_load(&d->md, why, sizeof(why));
	if (ret == -ENODATA) {
		log_err("no metadata on %s: %s; run `duetctl create-md %s` first",
			md_path ? md_path : d->self->disk, why, d->res);
		return DAEMON_EXIT_NO_MD;
	}
	if (ret) {
		log_err("no valid metadata on %s: %s",
			md_path ? md_path : d->self->disk, why);
		return DAEMON_EXIT_NO_MD;
	}
	if (d->md.sb.node_id != d->self->id) {
		log_err("the metadata on %s belongs to node id %u, but node %s has id %u; run `duetctl create-md %s` on this node",
			md_path ? md_path : d->self->disk, d->md.sb.node_id,
			d->self->name, d->self->id, d->res);
		return DAEMON_EXIT_NO_MD;
	}
	if (d->md.sb.data_bytes > d->md.data_dev_bytes) {
		log_err("%s has %llu bytes, less than the %llu bytes of data its metadata describes",
			d->self->disk,
			(unsigned long long)d->md.data_dev_bytes,
			(unsigned long long)d->md.sb.data_bytes);
		return DAEMON_EXIT_TOO_SMALL;
	}
	return 0;
}

/* Mark the extents the activity log names as out of sync with the peer. */
static void al_to_bitmap(struct daemon *d)
{
	uint32_t n = al_nr_slots(d->md.al), marked = 0;

	for (uint32_t s = 0; s < n; s++) {
		uint32_t e = al_slot_extent(d->md.al, s);
		uint64_t sec, nr;

		if (e == AL_EXTENT_NONE)
			continue;
		al_extent_range(d->md.al, e, &sec, &nr);
		if (nr && bm_set_range(d->md.bm, sec, nr) >= 0)
			marked++;
	}
	log_notice("%u activity-log extent(s) marked out of sync with %s",
		   marked, d->peer->name);
}

static int mark_primary(struct daemon *d)
{
	struct md_super *sb = &d->md.sb;
	int ret;

	if (sb->flags & MD_F_PRIMARY) {
		d->crashed = true;
		sb->flags |= MD_F_CRASHED_PRIMARY;
		log_warn("%s was not stopped cleanly (crashed primary): the activity log covers what may be torn",
			 d->res);
		if (d->peer) {
			al_to_bitmap(d);
			ret = mdio_flush_bm(&d->md);
			if (ret) {
				log_err("writing the bitmap: %s",
					strerror(-ret));
				return ret;
			}
		}
	}
	sb->flags |= MD_F_PRIMARY;
	sb->flags &= ~MD_F_AL_CLEAN;
	ret = mdio_write_sb(&d->md);
	if (ret) {
		log_err("writing the superblock: %s", strerror(-ret));
		return ret;
	}
	d->sb_primary = true;
	return 0;
}

/* Clear MD_F_PRIMARY; after a full bitmap flush, the AL is redundant. */
static int mark_stopped(struct daemon *d, bool bm_flushed)
{
	struct md_super *sb = &d->md.sb;
	int ret;

	sb->flags &= ~MD_F_PRIMARY;
	if (bm_flushed)
		sb->flags |= MD_F_AL_CLEAN;
	ret = mdio_write_sb(&d->md);
	if (ret)
		log_err("writing the clean superblock: %s", strerror(-ret));
	else
		d->sb_primary = false;
	return ret;
}

/*
 * ublk front end: unless --no-ublk, or the driver is absent and an NBD
 * export is configured (so the host, which has no ublk, can run a pair
 * through NBD clients).
 */
static bool use_ublk(const struct daemon *d)
{
	if (d->no_ublk)
		return false;
	return !(d->self->nbd_listen[0] &&
		 access("/dev/ublk-control", F_OK));
}

/*
 * The NBD export of the node's nbd-listen: a second front end on the same
 * data path (its meta slot is above the ublk queues'), own backing fd.
 */
static int start_nbd(struct daemon *d)
{
	struct nbd_params np = { 0 };
	bool is_bdev, direct;
	char why[512];
	int ret;

	ret = eng_open_backing(d->self->disk, &d->nbd_fd, &is_bdev, &direct);
	if (ret) {
		log_err("NBD: opening %s: %s", d->self->disk, strerror(-ret));
		return ret;
	}
	np.listen = d->self->nbd_listen;
	np.name = d->res;
	np.size = d->md.sb.data_bytes;
	np.min_block = d->cfg->logical_block_size;
	np.pref_block = d->cfg->physical_block_size;
	/* pieces of 1 MiB at least (the largest DATA frame): a 1 MiB write
	 * is one replicated round trip, not several one after the other */
	np.piece_bytes = d->cfg->max_io_bytes > NBD_PIECE_MIN ?
				 d->cfg->max_io_bytes :
				 NBD_PIECE_MIN;
	np.trim = d->cfg->discard;
	np.path_id = META_MAX_QUEUES - 1;
	np.eng = eng_find(d->cfg->io_engine);
	np.backing_fd = d->nbd_fd;
	np.backing_is_bdev = is_bdev;
	np.helper = d->helper;
	np.meta = d->meta;
	d->nbd = nbd_start(&np, why, sizeof(why));
	if (!d->nbd) {
		ret = -errno;
		log_err("NBD: %s", why);
		return ret;
	}
	log_notice("NBD export %s on %s", d->res, nbd_address(d->nbd));
	return 0;
}

int daemon_start(struct daemon *d)
{
	struct dev_config c;
	int32_t prev = -1;
	char why[512];
	int ret;

	/* test-only fault injection (eng_fault.h), before any eng_find() */
	if (eng_fault_setup(why, sizeof(why))) {
		log_err("%s", why);
		return DAEMON_EXIT_FAIL;
	}
	ret = load_md(d);
	if (ret)
		return ret;
	if (mark_primary(d))
		return DAEMON_EXIT_FAIL;

	/* With a peer, the data path marks what the peer did not confirm
	 * (path.h), so meta need not mark every write. */
	d->meta = meta_create(&d->md, META_MAX_QUEUES, false);
	if (!d->meta) {
		log_err("cannot set up the activity log: %s", strerror(errno));
		return DAEMON_EXIT_FAIL;
	}
	if (d->peer) {
		struct repl_params rp = {
			.cfg = d->cfg,
			.self = d->self,
			.peer = d->peer,
			.md = &d->md,
			.meta = d->meta,
			.backing = d->self->disk,
			.data_bytes = d->md.sb.data_bytes,
		};

		d->repl = repl_create(&rp);
		if (!d->repl) {
			log_err("cannot set up replication: %s",
				strerror(errno));
			return DAEMON_EXIT_FAIL;
		}
		meta_set_repl(d->meta, d->repl);
	}
	if (meta_start(d->meta)) {
		log_err("cannot start the metadata thread");
		return DAEMON_EXIT_FAIL;
	}
	d->helper = eng_helper_start();
	if (!d->helper) {
		log_err("cannot start the I/O helper thread: %s",
			strerror(errno));
		return DAEMON_EXIT_FAIL;
	}

	if (d->repl && repl_start(d->repl))
		return DAEMON_EXIT_FAIL;

	if (use_ublk(d) && runfile_read_dev_id(d->run_dir, d->res, &prev))
		prev = -1;
	memset(&c, 0, sizeof(c));
	c.resource = d->res;
	c.backing = d->self->disk;
	c.dev_id = d->self->ublk_id;
	c.prev_dev_id = prev;
	c.queues = d->cfg->queues;
	c.depth = d->cfg->queue_depth;
	c.max_io_bytes = d->cfg->max_io_bytes;
	c.logical_bs = d->cfg->logical_block_size;
	c.physical_bs = d->cfg->physical_block_size;
	c.discard = d->cfg->discard;
	c.engine = d->cfg->io_engine;
	c.data_bytes = d->md.sb.data_bytes;
	c.al_extent_shift = al_extent_shift(d->md.al);
	c.al_nr_slots = al_nr_slots(d->md.al);
	if (use_ublk(d))
		d->dev = dev_up(&c, d->meta, d->helper, why, sizeof(why));
	else
		log_notice("no ublk driver (/dev/ublk-control): serving %s over NBD only",
			   d->res);
	if (use_ublk(d) && !d->dev) {
		ret = -errno;
		log_err("%s", why);
		return ret == -EEXIST || ret == -EBUSY ? DAEMON_EXIT_BUSY :
		       ret == -ENOTSUP			? DAEMON_EXIT_KERNEL :
		       ret == -ENOENT && access("/dev/ublk-control", F_OK) ?
							  DAEMON_EXIT_KERNEL :
							  DAEMON_EXIT_FAIL;
	}
	if (d->dev) {
		ret = runfile_write_state(d->run_dir, d->res, getpid(),
					  dev_id(d->dev), dev_path(d->dev));
		if (ret)
			log_warn("cannot write the state file: %s (a restart after a crash will not find the device)",
				 strerror(-ret));
	}
	if (d->self->nbd_listen[0] && start_nbd(d))
		return DAEMON_EXIT_FAIL;
	/* The socket appears last: once it answers, the device is ready. */
	if (start_ctl(d))
		return DAEMON_EXIT_FAIL;
	if (d->repl)
		repl_set_ctl(d->repl, d->ctl);
	pthread_mutex_lock(&d->lock);
	d->state = DAEMON_RUNNING;
	d->started = time(NULL);
	pthread_mutex_unlock(&d->lock);
	log_notice("serving %s on %s (%s)", d->self->disk,
		   d->dev ? dev_path(d->dev) : "NBD",
		   d->peer ? "peer not connected: writes are tracked in the bitmap" :
			     "standalone");
	return 0;
}

/* Device down, helper and metadata threads stopped, bitmap flushed. */
static int stop_io(struct daemon *d, bool *bm_flushed)
{
	int ret = 0, r;

	*bm_flushed = false;
	/* requests held by fencing fail, or the front ends never stop */
	if (d->repl)
		fence_shutdown(d->repl);
	nbd_stop(d->nbd);
	d->nbd = NULL;
	if (d->nbd_fd >= 0)
		close(d->nbd_fd);
	d->nbd_fd = -1;
	if (d->dev) {
		ret = dev_down(d->dev);
		d->dev = NULL;
		if (!ret)
			runfile_remove_state(d->run_dir, d->res);
	}
	/* after the front ends: nothing waits for the peer any more */
	if (d->repl) {
		if (d->repl)
			repl_set_ctl(d->repl, NULL);
		repl_stop(d->repl);
	}
	eng_helper_stop(d->helper);
	d->helper = NULL;
	if (d->meta) {
		struct meta_stats ms;

		meta_stop(d->meta);
		meta_get_stats(d->meta, &ms);
		r = meta_flush(d->meta);
		if (r)
			log_err("flushing the bitmap: %s", strerror(-r));
		*bm_flushed = !r && !ms.error;
		if (!ret)
			ret = r;
	}
	return ret;
}

int daemon_stop(struct daemon *d)
{
	bool flushed;
	int ret, r;

	pthread_mutex_lock(&d->lock);
	d->state = DAEMON_STOPPING;
	pthread_mutex_unlock(&d->lock);

	ret = stop_io(d, &flushed);
	r = mark_stopped(d, flushed);
	if (!ret)
		ret = r;

	pthread_mutex_lock(&d->lock);
	d->down_done = true;
	d->down_result = ret;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	/* joins the control thread, which sends the "down" reply first */
	ctl_destroy(d->ctl);
	d->ctl = NULL;
	if (!ret)
		log_notice("stopped cleanly");
	return ret ? DAEMON_EXIT_FAIL : DAEMON_EXIT_OK;
}

void daemon_cleanup(struct daemon *d)
{
	bool flushed;

	ctl_destroy(d->ctl);
	d->ctl = NULL;
	stop_io(d, &flushed);
	/*
	 * A failed start leaves the superblock as it found it, but for the
	 * crash it may have recorded: if a crashed daemon's device is still
	 * waiting for a server, the next attempt must see that too.
	 */
	if (d->sb_primary && !d->crashed)
		mark_stopped(d, flushed);
	meta_destroy(d->meta);
	d->meta = NULL;
	repl_destroy(d->repl);
	d->repl = NULL;
	if (d->md_open)
		mdio_close(&d->md);
	d->md_open = false;
	if (d->down_efd >= 0)
		close(d->down_efd);
	d->down_efd = -1;
	runfile_unlock(d->run_dir, d->res, d->pid_fd);
	d->pid_fd = -1;
	free(d->cfg);
	d->cfg = NULL;
}
