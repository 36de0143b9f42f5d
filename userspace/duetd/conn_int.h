/* SPDX-License-Identifier: MIT */
/*
 * conn_ internals (internal: only conn.c and conn_link.c include this
 * header). conn.c holds the public API and the connection thread's loop:
 * waiting for events, dialling and accepting, the send queue's requests,
 * stopping. conn_link.c holds the links: their handshake, frames, pings,
 * timeouts, commit and close, conn's own frames and the hand-over of the
 * queued frames to the connection. Both work on the one struct conn below;
 * what is marked "connection thread only" is touched by that thread alone.
 */
#ifndef DUET_CONN_INT_H
#define DUET_CONN_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "conn.h"
#include "hs.h"
#include "log.h"

#define CONN_RL_SLOTS 16	/* distinct failures remembered for the log */

enum link_state {
	LK_HANDSHAKE,	/* connecting and/or running hs_ */
	LK_CONFIRM,	/* authenticated, waiting to be committed */
	LK_UP,		/* the connection; established() was called */
	LK_CLOSING,	/* flushing a last frame, then closed */
};

struct link;

/* A frame in flight: the owner's (from conn_send) or conn's own. */
struct conn_req {
	struct xport_msg xm;	/* first: xm.done gets back to us */
	struct conn *c;
	struct link *link;	/* conn's own frames */
	conn_done_fn done;
	void *arg;
	uint64_t gen;		/* connection it was queued for */
	bool control;
	struct conn_req *next;
};

struct link {
	struct conn *c;
	struct xport_ep *ep;	/* NULL once closed, freed at reap */
	enum link_state st;
	bool outgoing;
	bool was_up;		/* lost() is owed */
	bool kill;		/* close after the current io() */
	int kill_err;
	int lost_err;		/* for lost(), when was_up */
	char lost_why[CONN_REASON_MAX];
	struct hs *hs;
	struct hs_result res;
	uint64_t deadline;	/* HANDSHAKE, CONFIRM, CLOSING: ms */
	uint64_t last_rx, last_tx, rx_seen;
	uint64_t gen;
	uint64_t ping_id, ping_at;	/* ping_at: us */
	bool ping_out;
	unsigned int ctl;	/* conn_req with control set, in flight */
	char addr[XPORT_ADDR_MAX];
};

struct conn_timeouts {
	uint32_t connect_ms, ping_ms, rmin_ms, rmax_ms;
};

struct conn {
	/* set at create */
	struct cfg_resource res;
	uint32_t self_id, peer_id;
	char self_addr[CFG_ADDR_MAX], peer_addr[CFG_ADDR_MAX];
	bool decider;		/* lower node id: commits links */
	const struct xport_ops *ops;
	struct conn_cbs cbs;
	void *arg;
	uint64_t data_bytes, features, required;
	uint32_t sendq_msgs_max, first_dial_ms;
	uint64_t sendq_bytes_max, rx_bytes;
	struct conn_req *reqs;
	int efd;
	struct xport_pool *pool;
	struct xport_opts xo;

	/* connection thread only */
	pthread_t thread;
	struct conn_timeouts t;
	struct xport_ep *listener;
	struct link *links[CONN_LINKS_MAX];
	struct link *up;
	struct link *in_io;
	uint64_t next_dial;
	uint64_t accept_after;	/* accept() failed: pause until then */
	uint32_t delay;
	uint64_t ping_seq;
	uint64_t closed_bs, closed_br, closed_ms, closed_mr;
	struct {
		uint32_t key;
		uint64_t at;
		unsigned int suppressed;
	} rl[CONN_RL_SLOTS];

	/* conn_start and conn_stop run one at a time (the thread may be
	 * joined by either, after conn_give_up ended it) */
	pthread_mutex_t life;

	/* shared, under lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool running, stop;
	unsigned int stop_reason;	/* DISCONNECT reason when stopping */
	char stop_text[PROTO_TEXT_MAX];
	enum conn_status status;
	uint64_t gen;		/* of the UP link */
	struct conn_req *pend_head, *pend_tail, *free_reqs;
	bool lazy;		/* queued by conn_send_lazy, thread not woken */
	uint32_t q_msgs;
	uint64_t q_bytes;
	bool disc_req;
	unsigned int disc_reason;
	char disc_text[PROTO_TEXT_MAX];
	struct conn_timeouts adj;
	struct conn_info info;
};

static inline uint64_t conn_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static inline uint64_t conn_now_ms(void)
{
	return conn_now_us() / 1000;
}

/* ---- conn.c ---- */

/* Back-off after a failed, refused or lost attempt: the next dial. */
void conn_backoff(struct conn *c, uint64_t now, uint32_t delay);

/* ---- conn_link.c ---- */

/* A failure worth telling: last_error, and the log, rate-limited. */
void conn_fail(struct conn *c, enum log_level lvl, const char *key,
	       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Completion of every frame given to a transport (xport_msg.done). */
void conn_req_xdone(struct xport_msg *xm, int err);
/* The queued frames of conn_send: fail them all, or hand them to the
 * connection they were queued for. */
void conn_fail_pending(struct conn *c);
void conn_flush_pending(struct conn *c, uint64_t now);

/* A new link on @ep, its HELLO on the way; NULL if it cannot be set up. */
struct link *conn_link_new(struct conn *c, struct xport_ep *ep, bool outgoing,
			   const char *addr, uint64_t now);
/* Close now, or after the queued frames (and @disc) are out. */
void conn_link_close(struct conn *c, struct link *l, int err, const char *why);
void conn_link_begin_close(struct conn *c, struct link *l,
			   const struct proto_msg *disc, int err,
			   const char *why);
/* A DISCONNECT frame for @reason and @text. */
void conn_disc_msg(struct proto_msg *m, unsigned int reason, const char *text);
/* An open link in @st; @dir 1 outgoing, 0 incoming, -1 either. */
struct link *conn_find_link(struct conn *c, enum link_state st, int dir);
/* A connection that was up is still flushing its last frames. */
bool conn_closing_up(struct conn *c);
/* After the link's io(): the transport reported @err. */
void conn_link_failed(struct conn *c, struct link *l, int err);
/* Free closed links, close those asked to, schedule the next dial. */
void conn_reap(struct conn *c, uint64_t now);
/* Deadlines, ping timeout and pings of one link. */
void conn_link_timers(struct conn *c, struct link *l, uint64_t now);

#endif
