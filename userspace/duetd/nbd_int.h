/* SPDX-License-Identifier: MIT */
/*
 * nbd_ internals (internal: only nbd.c and nbd_client.c include this
 * header). nbd.c holds the server thread: listening, accepting, the 1 s
 * timer, the loop that dispatches every completion, start, stop and the
 * status. nbd_client.c holds what happens on a client's connection: the
 * handshake, reading and checking requests, request slots, the pieces
 * given to the path and the replies. Both run on the server thread only
 * and share the one struct nbd_server below.
 */
#ifndef DUET_NBD_INT_H
#define DUET_NBD_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>

#include "nbd.h"
#include "nbdp.h"

#define RX_BYTES (64u << 10)	/* per client: headers, small write data */
#define SEND_BATCH 16		/* replies per sendmsg */
#define ADDR_MAX 160
#define LOG_PER_MIN 20		/* refusals logged per minute */

/* user_data kinds (eng_ud layout), below PATH_UD_KIND_FIRST. */
enum {
	KIND_ACCEPT = 1,
	KIND_RECV,	/* tag: client */
	KIND_SEND,	/* tag: client */
	KIND_TIMER,
	KIND_CANCEL,	/* its own completion is of no interest */
};

enum cstate {
	C_FREE = 0,
	C_HS,		/* handshake */
	C_TX,		/* transmission */
	C_CLOSING,	/* waiting for its operations to come back */
};

struct slot {
	int32_t next;		/* free list, or a client's reply queue */
	uint16_t conn;
	bool started;		/* the first piece went to the path */
	bool flush_after;	/* FUA TRIM/WRITE_ZEROES: FLUSH at the end */
	struct nbdp_req req;
	uint32_t err;		/* NBD error to reply with */
	uint32_t got;		/* WRITE: data bytes received */
	uint32_t pos;		/* bytes done by the path */
	uint32_t piece;		/* bytes of the piece in the path */
	void *buf;		/* piece_bytes, 4 KiB aligned, kept */
	void *big;		/* a larger request's buffer, freed after */
	uint8_t hdr[NBDP_REPLY_SIZE];
};

struct client {
	enum cstate st;
	int fd;
	uint8_t *rx;		/* RX_BYTES, kept across clients */
	size_t rx_len;		/* bytes buffered in rx */
	char peer[ADDR_MAX];
	time_t since;		/* accepted at: handshake deadline */
	struct nbdp_hs *hs;
	enum nbdp_hs_step hs_final; /* DONE/ABORT/CLOSE once output is sent */
	bool recv_busy;
	bool send_busy;
	bool blocked;		/* not read until a slot or buffer frees */
	bool disc;		/* NBD_CMD_DISC seen: read no more */
	int32_t wr_slot;	/* WRITE whose data is arriving, or -1 */
	uint32_t drain;		/* data bytes of a refused WRITE to drop */
	unsigned int inflight;	/* slots it holds */
	int32_t rq_head;	/* replies ready to send */
	int32_t rq_tail;
	unsigned int nbatch;	/* replies in the sendmsg in flight */
	int32_t batch[SEND_BATCH];
	struct msghdr msg;
	struct iovec iov[2 * SEND_BATCH];
};

struct nbd_server {
	struct nbd_params p;
	char name[NBDP_OWN_STRING_MAX + 1];
	char desc[NBDP_OWN_STRING_MAX + 1];
	char addr[ADDR_MAX];
	char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct nbdp_export exp;
	struct path_shared own_shared;
	struct path *path;
	void *zeroes;		/* piece_bytes of zeroes: NO_HOLE writes */

	int lfd;
	int stop;		/* atomic: nbd_stop() was called */
	pthread_t thread;
	pthread_mutex_t ready_lock;
	pthread_cond_t ready_cond;
	bool ready_done;
	int ready_err;

	struct io_uring ring;
	bool ring_ok;
	bool stopping;		/* the loop is winding down */
	bool accept_busy;
	struct __kernel_timespec tick;
	unsigned int ticks;
	unsigned int nr_logged;

	struct client *cl;	/* max_conns */
	unsigned int nr_clients;
	struct slot *slots;	/* depth */
	int32_t free_slot;
	unsigned int slots_busy;
	uint64_t big_bytes;	/* allocated in slot->big */

	struct nbd_stats st;
};

static inline void st_add(uint64_t *c, uint64_t v)
{
	/* single writer: a plain read is ours, the store is for readers */
	__atomic_store_n(c, *c + v, __ATOMIC_RELAXED);
}

static inline struct io_uring_sqe *get_sqe(struct nbd_server *s)
{
	struct io_uring_sqe *sqe = eng_get_sqe(&s->ring);

	if (sqe)
		memset(sqe, 0, sizeof(*sqe));
	return sqe;
}

static inline bool log_quota(struct nbd_server *s)
{
	return s->nr_logged++ < LOG_PER_MIN;
}

/* nbd_client.c */
void nbd_client_close(struct nbd_server *s, unsigned int ci, bool bad,
		      const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void nbd_hs_step(struct nbd_server *s, unsigned int ci);
void nbd_on_recv(struct nbd_server *s, unsigned int ci, int res);
void nbd_on_send(struct nbd_server *s, unsigned int ci, int res);
void nbd_on_path_done(void *owner, unsigned int tag, int res);

#endif
