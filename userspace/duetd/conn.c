// SPDX-License-Identifier: MIT
/*
 * The peer connection (see conn.h; the rules are in docs/replication.md).
 *
 * One thread per resource runs an event loop over a handful of
 * descriptors: the wake eventfd, the listener, and at most CONN_LINKS_MAX
 * transport endpoints ("links": our outgoing attempt, incoming attempts,
 * the established connection, links flushing a last DISCONNECT). The loop
 * is poll(2), not io_uring as STYLE.md suggests for I/O threads: it waits
 * on readiness of a few sockets whose reads and writes the transport does
 * itself (non-blocking sendmsg/recv with its own buffering), an RDMA
 * transport hands out completion-channel descriptors that only readiness
 * can wait on, and the data volume that matters goes through single large
 * sendmsg/recv calls either way, so a ring would add code without saving
 * a copy or a system call worth counting.
 *
 * Life of a link:
 *
 *	HANDSHAKE --hs done--> [CONFIRM] --commit--> UP
 *	    any state --failure--> closed; --refusal/DISCONNECT--> CLOSING
 *
 * Who commits: the node with the lower id (the "decider") commits a link
 * as soon as its handshake is done, preferring the one it initiated, and
 * sends a PING on it at once; the other node holds its authenticated links
 * in CONFIRM and commits the one on which the decider's first frame
 * arrives, closing the others. Both therefore always keep the same
 * connection, and the one initiated by the lower node id whenever both
 * completed.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "crc.h"
#include "hs.h"
#include "log.h"
#include "md.h"
#include "util.h"

#define CONN_CTL_MAX 8		/* conn's own frames in flight per link */
#define CONN_RL_SLOTS 16	/* distinct failures remembered for the log */
#define CONN_ACCEPT_PAUSE_MS 100 /* after accept() failed for lack of fds */

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
	uint32_t sendq_msgs_max, sockbuf, first_dial_ms;
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

static const struct xport_handler link_handler;

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t now_ms(void)
{
	return now_us() / 1000;
}

/* Back-off with jitter: somewhere in [3/4 d, d], never below reconnect-min,
 * so that two nodes that failed together do not retry in lockstep. */
static uint64_t jitter(const struct conn *c, uint32_t d)
{
	uint64_t j = d - util_random_u64() % (d / 4 + 1);

	return j < c->t.rmin_ms ? c->t.rmin_ms : j;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Time from @then to @now; 0 if @then was stamped after @now was read. */
static uint64_t since(uint64_t now, uint64_t then)
{
	return now > then ? now - then : 0;
}

static void wake(void *arg)
{
	struct conn *c = arg;
	uint64_t one = 1;

	if (write(c->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_err("%s: cannot wake the connection thread: %s",
			c->res.name, strerror(errno));
}

/*
 * A failure worth telling: always the last_error of conn_state, in the log
 * at most once per @key per CONN_LOG_QUIET_MS (a wrong secret retried for
 * hours must not fill the disk).
 */
static void conn_fail(struct conn *c, enum log_level lvl, const char *key,
		      const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void conn_fail(struct conn *c, enum log_level lvl, const char *key,
		      const char *fmt, ...)
{
	uint32_t k = crc32c(key, strlen(key));
	uint64_t now = now_ms();
	unsigned int i, oldest = 0, suppressed = 0;
	char msg[CONN_REASON_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&c->lock);
	snprintf(c->info.last_error, sizeof(c->info.last_error), "%s", msg);
	pthread_mutex_unlock(&c->lock);

	for (i = 0; i < CONN_RL_SLOTS; i++) {
		if (c->rl[i].at && c->rl[i].key == k)
			break;
		if (c->rl[i].at < c->rl[oldest].at)
			oldest = i;
	}
	if (i < CONN_RL_SLOTS) {
		if (now - c->rl[i].at < CONN_LOG_QUIET_MS) {
			c->rl[i].suppressed++;
			return;
		}
		suppressed = c->rl[i].suppressed;
	} else {
		i = oldest;
	}
	c->rl[i].key = k;
	c->rl[i].at = now;
	c->rl[i].suppressed = 0;
	if (suppressed)
		log_at(lvl, LOG_CAT_NET,
		       "%s: %s (%u more since the last report)", c->res.name,
		       msg, suppressed);
	else
		log_at(lvl, LOG_CAT_NET, "%s: %s", c->res.name, msg);
}

/* ---- frames in flight ------------------------------------------------ */

static void req_xdone(struct xport_msg *xm, int err)
{
	struct conn_req *r = (struct conn_req *)xm;
	struct conn *c = r->c;
	conn_done_fn done;
	void *arg;

	if (r->control) {
		r->link->ctl--;
		free(r);
		return;
	}
	done = r->done;
	arg = r->arg;
	pthread_mutex_lock(&c->lock);
	c->q_msgs--;
	c->q_bytes -= r->xm.head_len + r->xm.payload_len;
	r->next = c->free_reqs;
	c->free_reqs = r;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (done)
		done(arg, err);
}

/* Fail every conn_send not given to a transport yet. */
static void fail_pending(struct conn *c)
{
	struct conn_req *r, *next;

	pthread_mutex_lock(&c->lock);
	r = c->pend_head;
	c->pend_head = c->pend_tail = NULL;
	pthread_mutex_unlock(&c->lock);
	for (; r; r = next) {
		next = r->next;
		req_xdone(&r->xm, -ECONNRESET);
	}
}

/* Move what conn_send queued to the connection it was meant for. */
static void flush_pending(struct conn *c, uint64_t now)
{
	struct conn_req *r, *next;

	pthread_mutex_lock(&c->lock);
	r = c->pend_head;
	c->pend_head = c->pend_tail = NULL;
	pthread_mutex_unlock(&c->lock);
	for (; r; r = next) {
		next = r->next;
		if (!c->up || r->gen != c->up->gen ||
		    xport_send(c->up->ep, &r->xm)) {
			req_xdone(&r->xm, -ECONNRESET);
			continue;
		}
		c->up->last_tx = now;
	}
}

/* One of conn's own frames, already encoded. */
static int link_send_raw(struct conn *c, struct link *l, const void *bytes,
			 size_t len)
{
	struct conn_req *r;

	if (!l->ep || l->ctl >= CONN_CTL_MAX || len > XPORT_HEAD_MAX)
		return -ENOBUFS;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	memcpy(r->xm.head, bytes, len);
	r->xm.head_len = (uint32_t)len;
	r->xm.done = req_xdone;
	r->c = c;
	r->link = l;
	r->control = true;
	if (xport_send(l->ep, &r->xm)) {
		free(r);
		return -ENOTCONN;
	}
	l->ctl++;
	l->last_tx = now_ms();
	return 0;
}

static int link_send_msg(struct conn *c, struct link *l,
			 const struct proto_msg *m)
{
	uint8_t buf[XPORT_HEAD_MAX];
	ssize_t n = proto_encode(m, buf, sizeof(buf), NULL, 0);

	if (n < 0)
		return (int)n;
	return link_send_raw(c, l, buf, (size_t)n);
}

static void link_send_ping(struct conn *c, struct link *l)
{
	struct proto_msg m = { .type = PROTO_PING, .id = ++c->ping_seq };

	if (link_send_msg(c, l, &m))
		return;
	l->ping_id = m.id;
	l->ping_at = now_us();
	l->ping_out = true;
	pthread_mutex_lock(&c->lock);
	c->info.pings_sent++;
	pthread_mutex_unlock(&c->lock);
}

/* ---- links ------------------------------------------------------------ */

static struct link *link_new(struct conn *c, struct xport_ep *ep,
			     bool outgoing, const char *addr, uint64_t now)
{
	struct hs_cfg hc = {
		.resource = c->res.name,
		.secret = c->res.secret,
		.secret_len = strlen(c->res.secret),
		.node_id = c->self_id,
		.peer_node_id = c->peer_id,
		.data_bytes = c->data_bytes,
		.bm_granularity = c->res.bm_granularity,
		.features = c->features,
		.required = c->required,
		.role = outgoing ? PROTO_HS_INITIATOR : PROTO_HS_ACCEPTOR,
		.repl = (uint8_t)(c->res.protocol - 'A' + PROTO_REPL_A),
		.data_digest = cfg_wire_digest(c->res.data_digest),
	};
	const void *out;
	struct link *l;
	size_t len;
	int slot;

	for (slot = 0; slot < CONN_LINKS_MAX && c->links[slot]; slot++)
		;
	if (slot == CONN_LINKS_MAX)
		return NULL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	if (getrandom(hc.challenge, sizeof(hc.challenge), 0) !=
	    sizeof(hc.challenge))
		goto out_free;
	l->hs = hs_init(&hc);
	explicit_bzero(hc.challenge, sizeof(hc.challenge));
	if (!l->hs)
		goto out_free;
	l->c = c;
	l->ep = ep;
	l->outgoing = outgoing;
	l->st = LK_HANDSHAKE;
	l->deadline = now + c->t.connect_ms;
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	xport_set_handler(ep, &link_handler, l);
	c->links[slot] = l;
	/* Both ends speak first; HELLO leaves as soon as TCP is up. */
	if (hs_start(l->hs, &out, &len) || link_send_raw(c, l, out, len)) {
		l->kill = true;
		l->kill_err = -EIO;
	}
	return l;

out_free:
	free(l);
	return NULL;
}

/* The UP link stops being the connection: no new sends, pending ones fail. */
static void link_unpublish(struct conn *c, struct link *l)
{
	if (c->up != l)
		return;
	c->up = NULL;
	pthread_mutex_lock(&c->lock);
	if (c->status == CONN_CONNECTED)
		c->status = CONN_CONNECTING;
	c->gen++;
	c->info.peer_addr[0] = c->info.local_addr[0] = '\0';
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	fail_pending(c);
}

static void link_add_totals(struct conn *c, struct link *l)
{
	struct xport_stats st;

	xport_stats(l->ep, &st);
	c->closed_bs += st.bytes_sent;
	c->closed_br += st.bytes_recv;
	c->closed_ms += st.msgs_sent;
	c->closed_mr += st.msgs_recv;
}

/*
 * Close now: queued frames complete with -ECONNRESET, lost() if it was the
 * connection. The struct goes at the next reap. Inside the link's own
 * io() this is deferred (the transport is still on the stack).
 */
static void link_close(struct conn *c, struct link *l, int err,
		       const char *why)
{
	char whybuf[CONN_REASON_MAX];

	if (!l->ep)
		return;
	/* @why may live in the endpoint (xport_error). */
	if (why) {
		snprintf(whybuf, sizeof(whybuf), "%s", why);
		why = whybuf;
	}
	if (l == c->in_io) {
		if (!l->kill) {
			l->kill = true;
			l->kill_err = err;
			if (!l->lost_why[0] && why)
				snprintf(l->lost_why, sizeof(l->lost_why), "%s",
					 why);
		}
		return;
	}
	link_unpublish(c, l);
	link_add_totals(c, l);
	xport_close(l->ep);
	l->ep = NULL;
	hs_free(l->hs);
	l->hs = NULL;
	if (!l->was_up)
		return;
	if (!l->lost_why[0])
		snprintf(l->lost_why, sizeof(l->lost_why), "%s",
			 why ? why : "connection closed");
	if (!l->lost_err)
		l->lost_err = err ? err : -ECONNRESET;
	pthread_mutex_lock(&c->lock);
	c->info.losses++;
	pthread_mutex_unlock(&c->lock);
	log_warn("%s: connection to node %u at %s lost: %s", c->res.name,
		 c->peer_id, l->addr, l->lost_why);
	c->cbs.lost(c->arg, l->lost_err, l->lost_why);
}

/*
 * Close after the frames already queued (and @disc, a DISCONNECT, if
 * given) are out, or at the deadline. A connection that was up is
 * unpublished now; lost() comes when it is closed.
 */
static void link_begin_close(struct conn *c, struct link *l,
			     const struct proto_msg *disc, int err,
			     const char *why)
{
	if (!l->ep || l->st == LK_CLOSING)
		return;
	link_unpublish(c, l);
	if (l->was_up) {
		l->lost_err = err;
		snprintf(l->lost_why, sizeof(l->lost_why), "%s", why);
	}
	if (disc)
		link_send_msg(c, l, disc);
	l->st = LK_CLOSING;
	l->deadline = now_ms() + c->t.connect_ms;
}

static void disc_msg(struct proto_msg *m, unsigned int reason,
		     const char *text)
{
	memset(m, 0, sizeof(*m));
	m->type = PROTO_DISCONNECT;
	m->disconnect.reason = reason;
	for (size_t i = 0; text[i] && i < sizeof(m->disconnect.text) - 1; i++)
		m->disconnect.text[i] =
			text[i] >= ' ' && text[i] <= '~' ? text[i] : '?';
}

/* A link that broke the protocol after its handshake: tell the peer. */
static void link_protocol_error(struct conn *c, struct link *l,
				const char *what)
{
	struct proto_msg m;
	char why[CONN_REASON_MAX];

	snprintf(why, sizeof(why), "protocol error from %s: %s", l->addr, what);
	conn_fail(c, LOG_LVL_WARN, "proto", "%s", why);
	disc_msg(&m, PROTO_DISC_PROTOCOL, what);
	link_begin_close(c, l, &m, -EBADMSG, why);
}

/* Our own reconnect schedule after a failed or lost attempt. */
static void backoff(struct conn *c, uint64_t now, uint32_t delay)
{
	uint64_t at = now + jitter(c, delay);

	if (at > c->next_dial)
		c->next_dial = at;
	c->delay = delay * 2 > c->t.rmax_ms ? c->t.rmax_ms : delay * 2;
}

/* Make @l the connection; everything else goes. */
static void link_commit(struct conn *c, struct link *l)
{
	struct conn_peer peer = { 0 };
	uint64_t now = now_ms();
	bool again;

	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *o = c->links[i];

		if (!o || o == l || !o->ep)
			continue;
		if (o->st == LK_CLOSING && !o->was_up)
			continue;	/* let a refusal reach its peer */
		if (o == c->up && !o->lost_why[0]) {
			o->lost_err = -ECONNRESET;
			snprintf(o->lost_why, sizeof(o->lost_why),
				 "replaced by a new connection from the peer");
		}
		link_close(c, o, -ECONNRESET, "superseded");
	}
	l->st = LK_UP;
	l->was_up = true;
	l->last_rx = l->last_tx = now;
	c->up = l;
	c->delay = c->t.rmin_ms;

	peer.node_id = l->res.peer.node_id;
	peer.version = l->res.version;
	peer.features = l->res.features;
	peer.hello = l->res.peer;
	peer.outgoing = l->outgoing;
	snprintf(peer.addr, sizeof(peer.addr), "%s",
		 l->ep->ops->peer_addr(l->ep));
	snprintf(peer.local, sizeof(peer.local), "%s",
		 l->ep->ops->local_addr(l->ep));
	snprintf(l->addr, sizeof(l->addr), "%s", peer.addr);

	pthread_mutex_lock(&c->lock);
	l->gen = ++c->gen;
	c->status = CONN_CONNECTED;
	again = c->info.connects++ > 0;
	if (again)
		c->info.reconnects++;
	snprintf(c->info.peer_addr, sizeof(c->info.peer_addr), "%s", peer.addr);
	snprintf(c->info.local_addr, sizeof(c->info.local_addr), "%s",
		 peer.local);
	c->info.outgoing = l->outgoing;
	c->info.last_error[0] = '\0';
	pthread_mutex_unlock(&c->lock);

	/* The decider's first frame is what commits the link on the other
	 * side: send it before the owner can queue anything. */
	if (c->decider)
		link_send_ping(c, l);
	log_notice("%s: connected to node %u at %s (%s, protocol version %u)",
		   c->res.name, peer.node_id, peer.addr,
		   l->outgoing ? "outgoing" : "incoming", peer.version);
	c->cbs.established(c->arg, &peer);
}

static struct link *find_link(struct conn *c, enum link_state st, int dir)
{
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];

		if (l && l->ep && l->st == st &&
		    (dir < 0 || l->outgoing == (bool)dir))
			return l;
	}
	return NULL;
}

/* A connection that was up and is still flushing its last frames. */
static bool closing_up(struct conn *c)
{
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];

		if (l && l->ep && l->st == LK_CLOSING && l->was_up)
			return true;
	}
	return false;
}

static void link_hs_done(struct conn *c, struct link *l)
{
	struct proto_limits lim = {
		.dev_bytes = c->data_bytes,
		.bm_granularity = c->res.bm_granularity,
	};

	l->res = *hs_result(l->hs);
	hs_free(l->hs);
	l->hs = NULL;
	l->ep->ops->set_limits(l->ep, &lim);
	if (!c->decider) {
		l->st = LK_CONFIRM;
		l->deadline = now_ms() + 2ull * c->t.connect_ms;
		return;
	}
	if (c->up || closing_up(c)) {
		/*
		 * The peer thinks our connection is gone; maybe it is (the
		 * peer restarted): a PING finds out sooner than the timeout.
		 * Until then ours stands.
		 */
		if (c->up && !c->up->ping_out)
			link_send_ping(c, c->up);
		log_dbg(LOG_CAT_NET, "%s: %s: already connected, closing",
			c->res.name, l->addr);
		link_close(c, l, -EEXIST, NULL);
		return;
	}
	if (!l->outgoing && find_link(c, LK_HANDSHAKE, 1)) {
		/* Ours may still complete, and ours wins: wait for it. */
		l->st = LK_CONFIRM;
		l->deadline = now_ms() + 2ull * c->t.connect_ms;
		return;
	}
	link_commit(c, l);
}

static void link_refused(struct conn *c, struct link *l, const void *out,
			 size_t len)
{
	const char *why = hs_reason(l->hs);
	char key[CONN_REASON_MAX + 8];

	pthread_mutex_lock(&c->lock);
	c->info.refusals++;
	pthread_mutex_unlock(&c->lock);
	snprintf(key, sizeof(key), "hs:%s", why);
	conn_fail(c, LOG_LVL_WARN, key, "handshake with %s %s: %s", l->addr,
		  l->outgoing ? "(outgoing)" : "(incoming)", why);
	/* Retrying a refused handshake soon would be refused again. */
	backoff(c, now_ms(), c->t.rmax_ms);
	if (len)
		link_send_raw(c, l, out, len);
	l->st = LK_CLOSING;
	l->deadline = now_ms() + c->t.connect_ms;
}

/* Frames on an established link. Returns false to stop receiving. */
static bool link_up_frame(struct conn *c, struct link *l,
			  const struct proto_msg *m, struct xport_buf *buf)
{
	char why[CONN_REASON_MAX];

	switch (m->type) {
	case PROTO_PING: {
		struct proto_msg a = { .type = PROTO_PING_ACK, .id = m->id };

		link_send_msg(c, l, &a);
		return true;
	}
	case PROTO_PING_ACK:
		if (l->ping_out && m->id == l->ping_id) {
			l->ping_out = false;
			pthread_mutex_lock(&c->lock);
			c->info.pongs_recv++;
			c->info.rtt_us = (uint32_t)(now_us() - l->ping_at);
			pthread_mutex_unlock(&c->lock);
		}
		return true;
	case PROTO_DISCONNECT:
		snprintf(why, sizeof(why), "peer disconnected (%s): %s",
			 proto_disc_name(m->disconnect.reason),
			 m->disconnect.text);
		/* A peer that refuses us on purpose is not retried at once. */
		if (m->disconnect.reason != PROTO_DISC_SHUTDOWN)
			backoff(c, now_ms(), c->t.rmax_ms);
		/* -ESHUTDOWN: the peer left on purpose (down, disconnect) */
		l->lost_err = m->disconnect.reason == PROTO_DISC_SHUTDOWN ?
				      -ESHUTDOWN :
				      -ECONNRESET;
		snprintf(l->lost_why, sizeof(l->lost_why), "%s", why);
		link_close(c, l, -ECONNRESET, why);
		return false;
	case PROTO_HELLO:
	case PROTO_AUTH:
	case PROTO_AUTH_RESULT:
		snprintf(why, sizeof(why), "%s after the handshake",
			 proto_type_name(m->type));
		xport_buf_put(buf);
		link_protocol_error(c, l, why);
		return false;
	default:
		c->cbs.frame(c->arg, m, buf);
		return true;
	}
}

/* xport handler: every frame of every link. */
static bool link_frame(void *arg, struct xport_ep *ep,
		       const struct proto_msg *m, struct xport_buf *buf)
{
	struct link *l = arg;
	struct conn *c = l->c;
	const void *out;
	size_t len;

	(void)ep;
	l->last_rx = now_ms();
	switch (l->st) {
	case LK_HANDSHAKE:
		/* Every frame with a payload names a sector or bitmap page,
		 * which the parser refuses before the handshake: no buf. */
		xport_buf_put(buf);
		switch (hs_input(l->hs, m, &out, &len)) {
		case HS_SEND:
			if (link_send_raw(c, l, out, len))
				link_close(c, l, -ENOBUFS, NULL);
			return !l->kill;
		case HS_DONE:
			link_hs_done(c, l);
			return l->ep && !l->kill;
		case HS_REFUSED:
		default:
			link_refused(c, l, out, len);
			return false;
		}
	case LK_CONFIRM:
		/* Only the decider's commit may come here, and only to us. */
		if (c->decider) {
			xport_buf_put(buf);
			link_protocol_error(c, l,
					    "frame before the link was committed");
			return false;
		}
		link_commit(c, l);
		return link_up_frame(c, l, m, buf);
	case LK_UP:
		return link_up_frame(c, l, m, buf);
	case LK_CLOSING:
	default:
		xport_buf_put(buf);
		return false;
	}
}

static const struct xport_handler link_handler = { .frame = link_frame };

/* The transport reported a broken link. */
static void link_failed(struct conn *c, struct link *l, int err)
{
	const char *xe = xport_error(l->ep);
	char key[48];

	if (l->st == LK_CLOSING) {
		link_close(c, l, err, NULL);
		return;
	}
	if (err == -EBADMSG) {
		link_protocol_error(c, l, xe);
		return;
	}
	if (l->st == LK_HANDSHAKE) {
		snprintf(key, sizeof(key), "hs-io:%d:%d", l->outgoing, err);
		conn_fail(c, LOG_LVL_INFO, key, "%s %s: %s",
			  l->outgoing ? "connection to" : "connection from",
			  l->addr, xe);
	}
	link_close(c, l, err, xe);
}

/* Free closed links; close those asked to; schedule the next dial. */
static void reap(struct conn *c, uint64_t now)
{
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];
		struct xport_stats st;

		if (!l)
			continue;
		if (l->ep && l->kill)
			link_close(c, l, l->kill_err, NULL);
		if (l->ep && l->st == LK_CLOSING) {
			xport_stats(l->ep, &st);
			if (!st.sendq_msgs || now >= l->deadline)
				link_close(c, l, -ECONNRESET, NULL);
		}
		if (l->ep)
			continue;
		if (l->outgoing || l->was_up)
			backoff(c, now, l->was_up ? c->t.rmin_ms : c->delay);
		c->links[i] = NULL;
		free(l);
	}
	/* The decider's own attempt failed: take the peer's, if any. */
	if (c->decider && !c->up && !closing_up(c) &&
	    !find_link(c, LK_HANDSHAKE, 1)) {
		struct link *l = find_link(c, LK_CONFIRM, 0);

		if (l)
			link_commit(c, l);
	}
}

static void link_timers(struct conn *c, struct link *l, uint64_t now)
{
	uint64_t ping = c->t.ping_ms;
	char why[CONN_REASON_MAX];

	if (!l->ep)
		return;
	if (l->st != LK_UP) {
		if (now < l->deadline)
			return;
		if (l->st == LK_HANDSHAKE) {
			struct xport_stats st;
			char key[32];

			xport_stats(l->ep, &st);
			snprintf(key, sizeof(key), "timeout:%d:%d", l->outgoing,
				 st.connecting);
			conn_fail(c, LOG_LVL_INFO, key,
				  "%s %s: %s timed out after %u ms",
				  l->outgoing ? "connection to" :
						"connection from",
				  l->addr,
				  st.connecting ? "connect" : "handshake",
				  c->t.connect_ms);
		}
		link_close(c, l, -ETIMEDOUT, NULL);
		return;
	}
	if (since(now, l->last_rx) >= ping + c->t.connect_ms) {
		snprintf(why, sizeof(why), "nothing received for %llu ms",
			 (unsigned long long)since(now, l->last_rx));
		conn_fail(c, LOG_LVL_WARN, "ping-timeout", "%s: %s", l->addr,
			  why);
		link_close(c, l, -ETIMEDOUT, why);
		return;
	}
	/* Idle in either direction: the peer must hear from us within
	 * ping-interval, and we want to hear from it. */
	if (since(now, l->last_tx) >= ping ||
	    (since(now, l->last_rx) >= ping && !l->ping_out))
		link_send_ping(c, l);
}

/* When the loop must run again without an event. */
static uint64_t next_timer(struct conn *c, uint64_t now, bool dial)
{
	uint64_t t = now + CONN_POLL_MAX_MS;

	if (dial)
		t = min_u64(t, c->next_dial);
	if (c->accept_after > now)
		t = min_u64(t, c->accept_after);
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];

		if (!l || !l->ep)
			continue;
		if (l->st != LK_UP) {
			t = min_u64(t, l->deadline);
			continue;
		}
		t = min_u64(t, l->last_tx + c->t.ping_ms);
		t = min_u64(t, l->last_rx + c->t.ping_ms +
				       (l->ping_out ? c->t.connect_ms : 0));
	}
	return t;
}

static bool want_dial(struct conn *c)
{
	if (c->up || closing_up(c) || find_link(c, LK_HANDSHAKE, 1))
		return false;
	/* The follower waits for the decider's verdict on what it has. */
	if (!c->decider && find_link(c, LK_CONFIRM, -1))
		return false;
	return true;
}

static void dial(struct conn *c, uint64_t now)
{
	struct xport_ep *ep;
	char err[XPORT_ERR_MAX], key[32];
	int r;

	pthread_mutex_lock(&c->lock);
	c->info.dials++;
	pthread_mutex_unlock(&c->lock);
	r = c->ops->connect(c->peer_addr, &c->xo, &ep, err, sizeof(err));
	if (r) {
		snprintf(key, sizeof(key), "dial:%d", r);
		conn_fail(c, LOG_LVL_INFO, key, "%s", err);
		c->next_dial = 0;
		backoff(c, now, c->delay);
		return;
	}
	if (!link_new(c, ep, true, c->peer_addr, now)) {
		conn_fail(c, LOG_LVL_ERR, "link",
			  "cannot set up a connection: %s",
			  strerror(errno ? errno : ENOMEM));
		xport_close(ep);
		backoff(c, now, c->delay);
	}
}

static void accept_all(struct conn *c, uint64_t now)
{
	struct xport_ep *ep;
	int r, n;

	while (c->listener) {
		r = c->ops->accept(c->listener, &ep);
		if (r == -EAGAIN)
			return;
		if (r) {
			/* Out of descriptors or memory: the listener stays
			 * readable, so give the system a moment. */
			conn_fail(c, LOG_LVL_WARN, "accept", "%s",
				  xport_error(c->listener));
			c->accept_after = now + CONN_ACCEPT_PAUSE_MS;
			return;
		}
		pthread_mutex_lock(&c->lock);
		c->info.accepts++;
		pthread_mutex_unlock(&c->lock);
		n = 0;
		for (int i = 0; i < CONN_LINKS_MAX; i++)
			n += c->links[i] != NULL;
		/* Keep a slot for our own attempt and one for the link. */
		if (n >= CONN_LINKS_MAX - 2 ||
		    !link_new(c, ep, false, ep->ops->peer_addr(ep), now)) {
			conn_fail(c, LOG_LVL_WARN, "busy",
				  "refusing a connection from %s: too many attempts at once",
				  ep->ops->peer_addr(ep));
			xport_close(ep);
		}
	}
}

static void publish(struct conn *c)
{
	uint64_t bs = c->closed_bs, br = c->closed_br;
	uint64_t ms = c->closed_ms, mr = c->closed_mr;
	struct xport_stats st;

	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];

		if (!l || !l->ep)
			continue;
		xport_stats(l->ep, &st);
		bs += st.bytes_sent;
		br += st.bytes_recv;
		ms += st.msgs_sent;
		mr += st.msgs_recv;
		if (l->st == LK_UP && (st.bytes_recv != l->rx_seen ||
				       st.rx_stalled)) {
			/* Bytes count as life, and so does a peer we are
			 * not reading from because our owner is busy. */
			l->rx_seen = st.bytes_recv;
			l->last_rx = now_ms();
		}
	}
	pthread_mutex_lock(&c->lock);
	c->info.bytes_sent = bs;
	c->info.bytes_recv = br;
	c->info.msgs_sent = ms;
	c->info.msgs_recv = mr;
	c->info.backoff_ms = c->delay;
	c->t = c->adj;
	pthread_mutex_unlock(&c->lock);
}

/* One round of I/O on every link. */
static void io_all(struct conn *c, bool only_send)
{
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];
		unsigned int what = XPORT_IO_SEND;
		int r;

		if (!l || !l->ep || l->kill)
			continue;
		if (l->st != LK_CLOSING && !only_send)
			what |= XPORT_IO_RECV;
		c->in_io = l;
		r = xport_io(l->ep, what);
		c->in_io = NULL;
		if (r && !l->kill)
			link_failed(c, l, r);
		if (l->kill)
			link_close(c, l, l->kill_err, NULL);
	}
}

/* Wait for the next event or timer. Returns whether the listener fired. */
static bool wait_events(struct conn *c, uint64_t until, bool listen)
{
	struct pollfd fds[2 + CONN_LINKS_MAX * XPORT_POLLFDS_MAX];
	uint64_t now = now_ms();
	int n = 0, lfd = -1, timeout;
	uint64_t v;

	fds[n].fd = c->efd;
	fds[n++].events = POLLIN;
	if (listen && c->listener &&
	    xport_poll_fds(c->listener, XPORT_IO_RECV, &fds[n], 1) == 1)
		lfd = n++;
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];

		if (!l || !l->ep)
			continue;
		n += xport_poll_fds(l->ep,
				    l->st == LK_CLOSING ?
					    XPORT_IO_SEND :
					    XPORT_IO_SEND | XPORT_IO_RECV,
				    &fds[n], XPORT_POLLFDS_MAX);
	}
	timeout = until > now ? (int)(until - now) : 0;
	if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR)
		log_err("%s: poll: %s", c->res.name, strerror(errno));
	if (fds[0].revents & POLLIN)
		while (read(c->efd, &v, sizeof(v)) > 0)
			;
	return lfd > 0 && fds[lfd].revents;
}

static void handle_requests(struct conn *c, uint64_t now)
{
	struct proto_msg m;
	char why[CONN_REASON_MAX];
	bool disc;

	pthread_mutex_lock(&c->lock);
	disc = c->disc_req;
	c->disc_req = false;
	if (disc)
		disc_msg(&m, c->disc_reason, c->disc_text);
	pthread_mutex_unlock(&c->lock);
	if (!disc || !c->up)
		return;
	snprintf(why, sizeof(why), "disconnected by us (%s): %s",
		 proto_disc_name(m.disconnect.reason), m.disconnect.text);
	link_begin_close(c, c->up, &m, -ECONNABORTED, why);
	backoff(c, now, c->t.rmax_ms);
}

/* Stop: tell the peer, give the last frames a moment, close everything. */
static void shut_down(struct conn *c)
{
	uint64_t until = now_ms() + min_u64(c->t.connect_ms, 2000);
	struct proto_msg m;
	unsigned int reason;
	char text[PROTO_TEXT_MAX];

	xport_close(c->listener);
	c->listener = NULL;
	pthread_mutex_lock(&c->lock);
	c->status = CONN_STANDALONE;
	reason = c->stop_reason ? c->stop_reason : PROTO_DISC_SHUTDOWN;
	snprintf(text, sizeof(text), "%s",
		 c->stop_reason ? c->stop_text : "node stopped");
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	/* conn_give_up: what the owner sent before (its STATE) goes first,
	 * so that the peer learns what we decided from */
	if (reason != PROTO_DISC_SHUTDOWN)
		flush_pending(c, now_ms());
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];

		if (!l || !l->ep)
			continue;
		if (l->st == LK_UP) {
			disc_msg(&m, reason, text);
			link_begin_close(c, l, &m, -ESHUTDOWN,
					 "connection stopped");
		} else if (l->st != LK_CLOSING) {
			link_close(c, l, -ESHUTDOWN, NULL);
		}
	}
	fail_pending(c);
	for (;;) {
		uint64_t now = now_ms();

		io_all(c, true);
		reap(c, now);
		if (!find_link(c, LK_CLOSING, -1) || now >= until)
			break;
		wait_events(c, min_u64(until, now + 50), false);
	}
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		if (c->links[i])
			link_close(c, c->links[i], -ESHUTDOWN,
				   "connection stopped");
		free(c->links[i]);
		c->links[i] = NULL;
	}
	fail_pending(c);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	uint64_t now = now_ms();
	bool stop, dial_now, lfired;

	pthread_setname_np(pthread_self(), "duet-conn");

	c->next_dial = now + c->first_dial_ms;
	c->accept_after = 0;
	c->delay = c->t.rmin_ms;
	for (;;) {
		pthread_mutex_lock(&c->lock);
		stop = c->stop;
		pthread_mutex_unlock(&c->lock);
		if (stop)
			break;
		now = now_ms();
		handle_requests(c, now);
		flush_pending(c, now);
		io_all(c, false);
		for (int i = 0; i < CONN_LINKS_MAX; i++)
			if (c->links[i])
				link_timers(c, c->links[i], now);
		reap(c, now);
		dial_now = want_dial(c);
		if (dial_now && now >= c->next_dial) {
			dial(c, now);
			continue;
		}
		publish(c);
		lfired = wait_events(c, next_timer(c, now, dial_now),
				     now >= c->accept_after);
		if (lfired)
			accept_all(c, now_ms());
	}
	shut_down(c);
	publish(c);
	return NULL;
}

/* ---- API ------------------------------------------------------------- */

const char *conn_status_name(enum conn_status s)
{
	switch (s) {
	case CONN_STANDALONE:
		return "StandAlone";
	case CONN_CONNECTING:
		return "Connecting";
	case CONN_CONNECTED:
		return "Connected";
	}
	return "?";
}

static void timeouts_from(struct conn_timeouts *t, const struct cfg_resource *r)
{
	t->connect_ms = r->connect_timeout_ms ? r->connect_timeout_ms : 1;
	t->ping_ms = r->ping_interval_ms ? r->ping_interval_ms : 1;
	t->rmin_ms = r->reconnect_min_ms ? r->reconnect_min_ms : 1;
	t->rmax_ms = r->reconnect_max_ms > t->rmin_ms ? r->reconnect_max_ms :
							 t->rmin_ms;
}

struct conn *conn_create(const struct conn_opts *o, const struct conn_cbs *cbs,
			 void *arg)
{
	const struct cfg_node *peer;
	const char *tname;
	struct conn *c;
	int err = EINVAL;

	peer = cfg_peer_node(o->res, o->self);
	tname = o->res->transport == CFG_XPORT_RDMA ? "rdma" : "tcp";
	if (!peer || !o->self->address[0] || !peer->address[0]) {
		log_err("%s: no peer to connect to (one node, or no addresses)",
			o->res->name);
		goto out_err;
	}
	if (!cbs->established || !cbs->frame || !cbs->lost ||
	    (o->sendq_bytes &&
	     o->sendq_bytes < 2 * (uint64_t)PROTO_FRAME_MAX) ||
	    (o->rx_bytes && o->rx_bytes < 2 * (uint64_t)PROTO_PAYLOAD_MAX)) {
		log_err("%s: connection: missing callback or queue below 2 MiB",
			o->res->name);
		goto out_err;
	}
	if (!o->res->secret[0] || (o->features & ~(uint64_t)PROTO_F_ALL) ||
	    (o->required & ~o->features)) {
		log_err("%s: connection: no secret, or features 0x%llx / required 0x%llx not supported",
			o->res->name, (unsigned long long)o->features,
			(unsigned long long)o->required);
		goto out_err;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		err = ENOMEM;
		goto out_err;
	}
	c->efd = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->life, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->ops = xport_find(tname);
	if (!c->ops) {
		log_err("%s: transport \"%s\" is not built into this duetd",
			o->res->name, tname);
		err = EPROTONOSUPPORT;
		goto out_free;
	}
	c->res = *o->res;
	c->self_id = o->self->id;
	c->peer_id = peer->id;
	c->decider = c->self_id < c->peer_id;
	snprintf(c->self_addr, sizeof(c->self_addr), "%s", o->self->address);
	snprintf(c->peer_addr, sizeof(c->peer_addr), "%s", peer->address);
	c->cbs = *cbs;
	c->arg = arg;
	c->data_bytes = o->data_bytes;
	c->features = o->features;
	c->required = o->required;
	c->sendq_msgs_max = o->sendq_msgs ? o->sendq_msgs : CONN_SENDQ_MSGS;
	c->sendq_bytes_max = o->sendq_bytes ? o->sendq_bytes : CONN_SENDQ_BYTES;
	c->rx_bytes = o->rx_bytes ? o->rx_bytes : CONN_RX_BYTES;
	c->sockbuf = o->sockbuf_bytes;
	c->first_dial_ms = o->first_dial_ms;
	timeouts_from(&c->adj, o->res);
	c->t = c->adj;

	c->reqs = calloc(c->sendq_msgs_max, sizeof(*c->reqs));
	c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->pool = xport_pool_new(c->rx_bytes, wake, c);
	if (!c->reqs || c->efd < 0 || !c->pool) {
		err = errno ? errno : ENOMEM;
		goto out_free;
	}
	for (uint32_t i = 0; i < c->sendq_msgs_max; i++) {
		c->reqs[i].c = c;
		c->reqs[i].xm.done = req_xdone;
		c->reqs[i].next = c->free_reqs;
		c->free_reqs = &c->reqs[i];
	}
	snprintf(c->info.peer_addr, sizeof(c->info.peer_addr), "%s",
		 c->peer_addr);
	return c;

out_free:
	conn_destroy(c);
out_err:
	errno = err;
	return NULL;
}

void conn_destroy(struct conn *c)
{
	if (!c)
		return;
	conn_stop(c);
	xport_pool_free(c->pool);
	if (c->efd >= 0)
		close(c->efd);
	free(c->reqs);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->life);
	explicit_bzero(c->res.secret, sizeof(c->res.secret));
	free(c);
}

int conn_start(struct conn *c)
{
	char err[XPORT_ERR_MAX];
	bool ended;
	int r;

	pthread_mutex_lock(&c->life);
	pthread_mutex_lock(&c->lock);
	/* a thread that conn_give_up ended is joined here */
	ended = c->running && c->stop;
	pthread_mutex_unlock(&c->lock);
	if (ended) {
		pthread_join(c->thread, NULL);
		pthread_mutex_lock(&c->lock);
		c->running = false;
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_lock(&c->lock);
	r = c->running ? -EALREADY : 0;
	c->t = c->adj;
	pthread_mutex_unlock(&c->lock);
	if (r)
		goto out_unlock_life;
	/*
	 * The kernel's own verdict is a backstop, three times as patient as
	 * the pings: it also ends a connection whose peer keeps its receive
	 * window shut that long (Linux applies TCP_USER_TIMEOUT to window
	 * probes), and a busy secondary may stall its reading for a while.
	 */
	c->xo = (struct xport_opts){
		.user_timeout_ms = 3 * (c->t.ping_ms + c->t.connect_ms),
		.keepalive_ms = c->t.ping_ms,
		.sockbuf_bytes = c->sockbuf,
		.pool = c->pool,
	};
	r = c->ops->listen(c->self_addr, &c->xo, &c->listener, err,
			   sizeof(err));
	if (r) {
		log_err("%s: %s", c->res.name, err);
		goto out_unlock_life;
	}
	memset(c->rl, 0, sizeof(c->rl));
	pthread_mutex_lock(&c->lock);
	c->stop = false;
	c->stop_reason = 0;
	c->disc_req = false;
	c->status = CONN_CONNECTING;
	c->closed_bs = c->info.bytes_sent;
	c->closed_br = c->info.bytes_recv;
	c->closed_ms = c->info.msgs_sent;
	c->closed_mr = c->info.msgs_recv;
	r = -pthread_create(&c->thread, NULL, conn_main, c);
	c->running = !r;
	if (r)
		c->status = CONN_STANDALONE;
	pthread_mutex_unlock(&c->lock);
	if (r) {
		xport_close(c->listener);
		c->listener = NULL;
		log_err("%s: cannot start the connection thread: %s",
			c->res.name, strerror(-r));
	}
out_unlock_life:
	pthread_mutex_unlock(&c->life);
	return r;
}

void conn_stop(struct conn *c)
{
	pthread_mutex_lock(&c->life);
	pthread_mutex_lock(&c->lock);
	if (!c->running) {
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_unlock(&c->life);
		return;
	}
	c->stop = true;
	pthread_mutex_unlock(&c->lock);
	wake(c);
	pthread_join(c->thread, NULL);
	pthread_mutex_lock(&c->lock);
	c->running = false;
	c->status = CONN_STANDALONE;
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->life);
}

static bool conn_owned_type(unsigned int type)
{
	return type == PROTO_HELLO || type == PROTO_AUTH ||
	       type == PROTO_AUTH_RESULT || type == PROTO_PING ||
	       type == PROTO_PING_ACK || type == PROTO_DISCONNECT;
}

static int enqueue(struct conn *c, const struct proto_msg *m,
		   const void *payload, conn_done_fn done, void *arg,
		   int timeout_ms, bool lazy)
{
	uint8_t head[XPORT_HEAD_MAX];
	uint32_t plen = proto_payload_len(m);
	struct timespec until;
	struct conn_req *r;
	bool kick;
	ssize_t n;
	int ret = 0;

	if (conn_owned_type(m->type) || (plen && !payload))
		return -EINVAL;
	n = proto_encode(m, head, sizeof(head), NULL, 0);
	if (n < 0)
		return -EINVAL;
	if (timeout_ms > 0) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += timeout_ms / 1000;
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&c->lock);
	for (;;) {
		if (c->status != CONN_CONNECTED) {
			ret = -ENOTCONN;
			goto out_unlock;
		}
		if (c->free_reqs &&
		    (!c->q_msgs ||
		     c->q_bytes + (uint64_t)n + plen <= c->sendq_bytes_max))
			break;
		if (c->lazy) {
			/* what waits unannounced must go for room to come */
			c->lazy = false;
			wake(c);
		}
		if (!timeout_ms) {
			ret = -EAGAIN;
			goto out_unlock;
		}
		if (timeout_ms < 0) {
			pthread_cond_wait(&c->cond, &c->lock);
		} else if (pthread_cond_timedwait(&c->cond, &c->lock, &until) ==
			   ETIMEDOUT) {
			timeout_ms = 0;	/* one last look, then -EAGAIN */
		}
	}
	r = c->free_reqs;
	c->free_reqs = r->next;
	memcpy(r->xm.head, head, (size_t)n);
	r->xm.head_len = (uint32_t)n;
	r->xm.payload = plen ? payload : NULL;
	r->xm.payload_len = plen;
	r->done = done;
	r->arg = arg;
	r->gen = c->gen;
	r->next = NULL;
	c->q_msgs++;
	c->q_bytes += (uint64_t)n + plen;
	/* the thread is woken when the queue becomes non-empty, unless the
	 * caller announces a burst itself (conn_push) */
	kick = !c->pend_head || c->lazy;
	if (lazy) {
		c->lazy = c->lazy || kick;
		kick = false;
	} else {
		c->lazy = false;
	}
	if (c->pend_tail)
		c->pend_tail->next = r;
	else
		c->pend_head = r;
	c->pend_tail = r;
	pthread_mutex_unlock(&c->lock);
	if (kick)
		wake(c);
	return 0;

out_unlock:
	pthread_mutex_unlock(&c->lock);
	return ret;
}

int conn_send(struct conn *c, const struct proto_msg *m, const void *payload,
	      conn_done_fn done, void *arg, int timeout_ms)
{
	return enqueue(c, m, payload, done, arg, timeout_ms, false);
}

int conn_send_lazy(struct conn *c, const struct proto_msg *m)
{
	return enqueue(c, m, NULL, NULL, NULL, -1, true);
}

void conn_push(struct conn *c)
{
	bool kick;

	pthread_mutex_lock(&c->lock);
	kick = c->lazy;
	c->lazy = false;
	pthread_mutex_unlock(&c->lock);
	if (kick)
		wake(c);
}

int conn_give_up(struct conn *c, unsigned int reason, const char *text)
{
	if (!reason || reason >= PROTO_DISC_END)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (!c->running || c->stop) {
		pthread_mutex_unlock(&c->lock);
		return -EALREADY;
	}
	c->stop = true;
	c->stop_reason = reason;
	snprintf(c->stop_text, sizeof(c->stop_text), "%s", text ? text : "");
	pthread_mutex_unlock(&c->lock);
	wake(c);
	return 0;
}

int conn_disconnect(struct conn *c, unsigned int reason, const char *text)
{
	int ret = 0;

	if (!reason || reason >= PROTO_DISC_END)
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (c->status != CONN_CONNECTED) {
		ret = -ENOTCONN;
	} else {
		c->disc_req = true;
		c->disc_reason = reason;
		snprintf(c->disc_text, sizeof(c->disc_text), "%s",
			 text ? text : "");
	}
	pthread_mutex_unlock(&c->lock);
	if (!ret)
		wake(c);
	return ret;
}

void conn_adjust(struct conn *c, const struct cfg_resource *res)
{
	pthread_mutex_lock(&c->lock);
	timeouts_from(&c->adj, res);
	pthread_mutex_unlock(&c->lock);
	wake(c);
}

void conn_state(struct conn *c, struct conn_info *out)
{
	pthread_mutex_lock(&c->lock);
	*out = c->info;
	out->status = c->status;
	if (c->status != CONN_CONNECTED) {
		snprintf(out->peer_addr, sizeof(out->peer_addr), "%s",
			 c->peer_addr);
		out->local_addr[0] = '\0';
	}
	out->sendq_msgs = c->q_msgs;
	out->sendq_bytes = c->q_bytes;
	pthread_mutex_unlock(&c->lock);
}
