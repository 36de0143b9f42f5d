/* SPDX-License-Identifier: MIT */
/*
 * daemon_ — duetd's life between main() and the device: configuration,
 * metadata, superblock flags, the device, the control socket and its
 * "status" and "down" commands. main.c keeps the process matters
 * (options, forking, signals).
 *
 * Superblock flags: MD_F_PRIMARY is set while the device is up and
 * cleared on a clean stop. Found set at start, the previous daemon died
 * (kill -9, power loss): MD_F_CRASHED_PRIMARY is set and logged; with a
 * peer configured the extents of the activity log go into the bitmap (they
 * may differ from the peer). A clean stop flushes the bitmap and sets
 * MD_F_AL_CLEAN: the bitmap alone then describes what the peer lacks.
 */
#ifndef DUET_DAEMON_H
#define DUET_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cfg.h"
#include "mdio.h"

#define DAEMON_RUN_DIR "/run/duet"

enum daemon_exit {
	DAEMON_EXIT_OK = 0,
	DAEMON_EXIT_FAIL = 1,
	DAEMON_EXIT_USAGE = 2,
	DAEMON_EXIT_CONFIG = 3,
	DAEMON_EXIT_NO_MD = 5,
	DAEMON_EXIT_TOO_SMALL = 6,
	DAEMON_EXIT_BUSY = 10,
	DAEMON_EXIT_KERNEL = 11,
};

enum daemon_state {
	DAEMON_STARTING = 0,
	DAEMON_RUNNING,
	DAEMON_STOPPING,
};

struct dev;
struct meta;
struct eng_helper;
struct ctl_server;
struct repl;
struct nbd_server;

struct daemon {
	/* options */
	const char *res;
	const char *config_dir;
	const char *node;
	const char *run_dir;
	bool foreground;
	int ready_fd;		/* pipe to the waiting parent, or -1 */
	bool no_ublk;		/* NBD only (--no-ublk) */

	struct cfg_resource *cfg;
	const struct cfg_node *self;
	const struct cfg_node *peer;
	struct mdio md;
	bool md_open;
	bool sb_primary;	/* we set MD_F_PRIMARY */
	bool crashed;		/* found MD_F_PRIMARY at start */
	struct meta *meta;
	struct eng_helper *helper;
	struct dev *dev;
	struct ctl_server *ctl;
	struct repl *repl;	/* NULL without a peer */
	struct nbd_server *nbd;	/* NULL without nbd-listen */
	int nbd_fd;		/* the NBD export's backing fd */
	int pid_fd;
	int down_efd;		/* "down" handler -> main thread */
	time_t started;

	pthread_mutex_t lock;	/* below; dev while not STOPPING */
	pthread_cond_t cond;
	enum daemon_state state;
	bool down_requested;
	bool down_done;
	int down_result;
};

void daemon_init(struct daemon *d);
/* The functions below return a daemon_exit code and log why. */
int daemon_load_config(struct daemon *d);
/* Take the resource's pid file: one daemon per resource. */
int daemon_lock(struct daemon *d);
/* Metadata, device, control socket: ready to serve. */
int daemon_start(struct daemon *d);
/* Clean stop: device down, bitmap and superblock flushed. */
int daemon_stop(struct daemon *d);
/* Free what is left (after either of the above). */
void daemon_cleanup(struct daemon *d);

#endif
