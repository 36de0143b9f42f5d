/* SPDX-License-Identifier: MIT */
/*
 * dev_ — the ublk device of a resource: created (ADD_DEV, SET_PARAMS,
 * START_DEV) or taken over from a daemon that died (user recovery), served
 * by one queue thread per hardware queue, and removed on the way down
 * (STOP_DEV, DEL_DEV).
 *
 * Ownership: ADD_DEV stores a tag in ublksrv_flags (a field the driver
 * keeps for the server): "DUET" and the CRC32C of the resource name. A
 * restarted duetd only takes over a device carrying its resource's tag, so
 * a stale state file can never make it serve someone else's device.
 */
#ifndef DUET_DEV_H
#define DUET_DEV_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "eng.h"
#include "meta.h"

struct dev_config {
	const char *resource;
	const char *backing;		/* data device or file */
	int32_t dev_id;			/* configured ublk-id, -1: any */
	int32_t prev_dev_id;		/* from the state file, -1: none */
	uint32_t queues;
	uint32_t depth;
	uint32_t max_io_bytes;
	uint32_t logical_bs;
	uint32_t physical_bs;
	bool discard;
	enum cfg_engine engine;
	uint64_t data_bytes;		/* what the device exposes */
	unsigned int al_extent_shift;	/* bounds discard sizes */
	uint32_t al_nr_slots;
};

struct dev;

/*
 * Bring the device up and serve it: take over this resource's device if
 * one is waiting for a new server (state file or configured id), else
 * create it. On failure NULL, errno set and @why filled; a device created
 * here is deleted again. errno: ENOENT no ublk driver or no backing device,
 * EEXIST device id in use, EBUSY device served by a live process or
 * backing device in use, ENOTSUP missing kernel feature, others.
 */
struct dev *dev_up(const struct dev_config *c, struct meta *meta,
		   struct eng_helper *helper, char *why, size_t why_len);

/*
 * Graceful stop: STOP_DEV (the driver drains the requests in flight; the
 * queue threads answer them, then see their commands aborted), join the
 * queues, DEL_DEV. Frees @d. 0 or the first error.
 */
int dev_down(struct dev *d);

uint32_t dev_id(const struct dev *d);
bool dev_recovered(const struct dev *d);
/* "/dev/ublkbN" */
const char *dev_path(const struct dev *d);

/* Add the device's part of the status reply to @o. */
void dev_status(const struct dev *d, json_t *o);

/* The ownership tag of resource @name. */
uint64_t dev_tag(const char *name);

#endif
