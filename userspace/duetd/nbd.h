/* SPDX-License-Identifier: MIT */
/*
 * nbd_ — the NBD front end: the resource's device served over the NBD
 * protocol (docs/nbd.md), next to the ublk device or instead of it.
 *
 * One thread per export with its own io_uring, on which everything runs:
 * accept, the clients' sockets (recv / sendmsg), a 1 s timer, and the data
 * path (path.h: bounds, activity log, replication, backing I/O, the wake
 * eventfd of the metadata thread and the I/O helper). As in a ublk queue
 * thread, one loop dispatches every completion by its user_data and
 * nothing blocks, so a slow or stalled client only delays its own replies.
 * Why not a thread per client: every client then needs its own path (a
 * meta slot, an engine context) and a FLUSH on one connection would have
 * to reach the others' engines; with one path per export, all clients
 * share one flush-elision state and CAN_MULTI_CONN holds by construction.
 *
 * Per client: the handshake (nbdp_hs), then request headers read from the
 * stream (a WRITE's data lands in the request's buffer), validated by
 * nbdp_req_check, served through path_submit, answered with simple
 * replies in completion order (the cookie matches them up; the protocol
 * allows any order). A client that breaks the protocol is disconnected;
 * the others do not notice.
 *
 * A request larger than the path takes (piece_bytes for READ/WRITE, the
 * activity log's reach for TRIM/WRITE_ZEROES) is served in pieces, one
 * after the other, on its slot; a FUA TRIM/WRITE_ZEROES ends with a FLUSH.
 *
 * Bounds: max_conns clients (more are accepted and closed at once), depth
 * requests in flight over all of them and conn_depth per client; request
 * buffers above piece_bytes count against NBD_BIG_BUDGET (one is admitted
 * alone whatever its size, up to max_payload). A client waiting
 * for any of these is not read (TCP pushes back on it). A client has
 * hs_timeout_s to finish its handshake.
 */
#ifndef DUET_NBD_H
#define DUET_NBD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "eng.h"
#include "meta.h"
#include "path.h"

#define NBD_MAX_CONNS 16
#define NBD_DEPTH 32
#define NBD_CONN_DEPTH 32
#define NBD_HS_TIMEOUT_S 30
/*
 * Bytes of request buffers larger than piece_bytes, all clients; one such
 * request is admitted alone even when it is larger (up to max_payload).
 * With NBD_DEPTH buffers of max-io this bounds the export's request memory
 * (32 x 1 MiB + 32 MiB at most, for a replicated daemon's 64 MiB budget).
 */
#define NBD_BIG_BUDGET (8u << 20)
/* The daemon's piece size for the export: max-io, but at least this. */
#define NBD_PIECE_MIN (1u << 20)

struct nbd_params {
	/*
	 * Where to listen: "unix:/abs/path" (a socket of mode 0600),
	 * "host:port", "[v6]:port", "host" (port 10809), ":port" or "port"
	 * (both: the loopback address). The address is bound as given:
	 * 0.0.0.0 only when it is written so. Port 0 takes a free port
	 * (nbd_address tells which).
	 */
	const char *listen;
	const char *name;		/* export name: the resource name */
	const char *description;	/* NULL, or text nbdinfo shows */
	uint64_t size;			/* bytes; rounded down to min_block */
	uint32_t min_block;		/* bytes: logical block size, >= 512 */
	uint32_t pref_block;		/* bytes: physical block size */
	/* Largest READ/WRITE a client may send, bytes; 0: 32 MiB (what the
	 * spec asks a server to accept by default). */
	uint32_t max_payload;
	/* Largest READ/WRITE piece the path takes (path buf_bytes): the
	 * device's max-io. */
	uint32_t piece_bytes;
	/* Largest TRIM/WRITE_ZEROES piece: what the activity log can hold at
	 * once (dev.c: 4 extents, at most 1 GiB). 0: piece_bytes. */
	uint32_t zero_bytes;
	bool trim;			/* advertise TRIM (discard works) */
	bool read_only;
	unsigned int max_conns;		/* 0: NBD_MAX_CONNS */
	unsigned int depth;		/* 0: NBD_DEPTH */
	unsigned int conn_depth;	/* 0: NBD_CONN_DEPTH */
	unsigned int hs_timeout_s;	/* 0: NBD_HS_TIMEOUT_S */

	/* The data path (path_params): the export's one path. */
	unsigned int path_id;		/* meta slot: above the ublk queues */
	const struct eng_ops *eng;
	int backing_fd;			/* shared with the ublk device */
	bool backing_is_bdev;
	struct eng_helper *helper;
	struct meta *meta;
	/* The device's flush-elision state (the ublk queues' one when both
	 * front ends run); NULL: the server keeps its own. */
	struct path_shared *shared;
};

struct nbd_server;

/*
 * Bind and listen, create the path (which registers its wake eventfd
 * with meta: see path.h), start the thread and wait until it serves.
 * May run after meta_start(): meta signals a slot's eventfd only after
 * that slot's own meta_begin_io(), which the server thread makes only
 * after path_create() returned (pthread_create orders the two). The
 * path_id must not be in use by another path.
 * NULL with errno set and @why filled: EINVAL (a parameter, the listen
 * string), EADDRINUSE, EACCES, EEXIST (a file that is not a socket where
 * the unix socket goes), ENOMEM, or the ring / engine setup's error.
 */
struct nbd_server *nbd_start(const struct nbd_params *p, char *why,
			     size_t why_len);

/*
 * Stop accepting, disconnect every client (requests in the path are
 * finished first; their replies are dropped), join the thread, unlink the
 * unix socket, free. NULL is fine.
 */
void nbd_stop(struct nbd_server *s);

/* Where it listens: "unix:/path", "127.0.0.1:10809", "[::1]:10809". */
const char *nbd_address(const struct nbd_server *s);

/* Counters, written by the server thread, read by anyone. */
struct nbd_stats {
	uint64_t accepted;	/* connections accepted */
	uint64_t refused;	/* closed at once: max_conns reached */
	uint64_t handshakes;	/* reached the transmission phase */
	uint64_t dropped;	/* disconnected for breaking the protocol */
	uint64_t clients;	/* connected now */
	uint64_t requests;	/* requests read */
	uint64_t invalid;	/* refused by validation (NBD_EINVAL...) */
	uint64_t io_errors;	/* failed in the data path */
};

void nbd_get_stats(const struct nbd_server *s, struct nbd_stats *st);

/* The "nbd" part of the status reply: address, counters, path I/O. */
void nbd_status(const struct nbd_server *s, json_t *o);

#endif
