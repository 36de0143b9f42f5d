/* SPDX-License-Identifier: MIT */
/*
 * queue_ — one ublk hardware queue: a thread with its own io_uring on which
 * the ublk commands (FETCH_REQ, COMMIT_AND_FETCH_REQ) and the backing I/O
 * (through an eng_ engine) both run.
 *
 * Per tag, the life of a request:
 *
 *	FETCH_REQ ──► (kernel delivers a request: CQE res 0)
 *	   ──► path_submit() (bounds, activity log, replication, engine
 *	       I/O: see path.h) ──► complete
 *	   ──► COMMIT_AND_FETCH_REQ(result) ──► next request on the same tag
 *
 * The kernel answers a command with UBLK_IO_RES_ABORT when the device stops
 * (or the ring is torn down); the thread ends once every tag is aborted
 * and nothing is in flight. The ring's registered files are
 * [ /dev/ublkcN, backing device ]; with the io_uring engine the request
 * buffers are registered too (fixed buffer i = tag i).
 *
 * The io_uring uses ordinary 64-byte SQEs: ublksrv_io_cmd is 16 bytes and
 * fits in the SQE's own command area, so SQE128 (which the 32-byte control
 * commands need) would only double the size of every backing-I/O SQE.
 */
#ifndef DUET_QUEUE_H
#define DUET_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "eng.h"
#include "meta.h"
#include "path.h"

struct queue;

/* What the queues of one device share (see path.h). */
struct queue_shared {
	struct path_shared path;
};

#define QUEUE_SHARED_INIT { .path = PATH_SHARED_INIT }

struct queue_params {
	unsigned int id;		/* hardware queue number */
	int cdev_fd;			/* /dev/ublkcN */
	uint32_t depth;			/* tags */
	uint32_t buf_bytes;		/* per-tag buffer: max I/O size */
	uint64_t dev_sectors;		/* device size: requests past it fail */
	bool ioctl_encode;		/* ioctl-encoded queue commands */
	const struct eng_ops *eng;
	int backing_fd;
	bool backing_is_bdev;
	struct eng_helper *helper;
	struct meta *meta;
	struct queue_shared *shared;
};

/* Counters, written by the queue thread only, read by anyone. */
struct queue_stats {
	uint64_t reads;
	uint64_t writes;
	uint64_t read_bytes;
	uint64_t write_bytes;
	uint64_t flushes;
	uint64_t flushes_elided;	/* answered without an fdatasync */
	uint64_t fua_writes;
	uint64_t discards;
	uint64_t write_zeroes;
	uint64_t errors;	/* requests completed with an error */
	uint64_t al_waits;	/* writes parked on the activity log */
	uint64_t loops;		/* io_uring_enter calls of the loop */
	uint64_t cqes;		/* completions they reaped */
};

/*
 * Create the queue and its thread. The thread sets up its ring, registers
 * files and buffers and issues FETCH_REQ for every tag; queue_wait_ready()
 * reports how that went. NULL with errno if the thread could not start.
 */
struct queue *queue_start(const struct queue_params *p);
/* 0 once every FETCH_REQ is issued, or the setup error. */
int queue_wait_ready(struct queue *q);
/*
 * Failure paths, before the device served anything: end the thread now,
 * without waiting for the kernel to abort the commands (tearing the ring
 * down cancels them).
 */
void queue_abort(struct queue *q);
/* Wait for the thread to end (after STOP_DEV, or queue_abort) and free. */
void queue_destroy(struct queue *q);

void queue_get_stats(const struct queue *q, struct queue_stats *st);

#endif
