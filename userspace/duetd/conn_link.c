// SPDX-License-Identifier: MIT
/*
 * The links of the peer connection (see conn.c for the thread that drives
 * them, conn_int.h for the structs): setting one up, its handshake, the
 * frames on it, its pings and timeouts, committing one as the connection
 * and closing the others; also conn's own frames and the hand-over of the
 * owner's queued frames to the connection.
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
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "conn.h"
#include "conn_int.h"
#include "crc.h"
#include "hs.h"
#include "log.h"

#define CONN_CTL_MAX 8		/* conn's own frames in flight per link */

static const struct xport_handler link_handler;

/* Time from @then to @now; 0 if @then was stamped after @now was read. */
static uint64_t since(uint64_t now, uint64_t then)
{
	return now > then ? now - then : 0;
}

/*
 * A failure worth telling: always the last_error of conn_state, in the log
 * at most once per @key per CONN_LOG_QUIET_MS (a wrong secret retried for
 * hours must not fill the disk).
 */
void conn_fail(struct conn *c, enum log_level lvl, const char *key,
	       const char *fmt, ...)
{
	uint32_t k = crc32c(key, strlen(key));
	uint64_t now = conn_now_ms();
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

void conn_req_xdone(struct xport_msg *xm, int err)
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

/* Everything conn_send queued so far, taken off the queue. */
static struct conn_req *take_pending(struct conn *c)
{
	struct conn_req *r;

	pthread_mutex_lock(&c->lock);
	r = c->pend_head;
	c->pend_head = c->pend_tail = NULL;
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* Fail every conn_send not given to a transport yet. */
void conn_fail_pending(struct conn *c)
{
	struct conn_req *r, *next;

	for (r = take_pending(c); r; r = next) {
		next = r->next;
		conn_req_xdone(&r->xm, -ECONNRESET);
	}
}

/* Move what conn_send queued to the connection it was meant for. */
void conn_flush_pending(struct conn *c, uint64_t now)
{
	struct conn_req *r, *next;

	for (r = take_pending(c); r; r = next) {
		next = r->next;
		if (!c->up || r->gen != c->up->gen ||
		    xport_send(c->up->ep, &r->xm)) {
			conn_req_xdone(&r->xm, -ECONNRESET);
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
	r->xm.done = conn_req_xdone;
	r->c = c;
	r->link = l;
	r->control = true;
	if (xport_send(l->ep, &r->xm)) {
		free(r);
		return -ENOTCONN;
	}
	l->ctl++;
	l->last_tx = conn_now_ms();
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
	l->ping_at = conn_now_us();
	l->ping_out = true;
	pthread_mutex_lock(&c->lock);
	c->info.pings_sent++;
	pthread_mutex_unlock(&c->lock);
}

/* ---- links ------------------------------------------------------------ */

struct link *conn_link_new(struct conn *c, struct xport_ep *ep, bool outgoing,
			   const char *addr, uint64_t now)
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
	conn_fail_pending(c);
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
void conn_link_close(struct conn *c, struct link *l, int err, const char *why)
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
void conn_link_begin_close(struct conn *c, struct link *l,
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
	l->deadline = conn_now_ms() + c->t.connect_ms;
}

void conn_disc_msg(struct proto_msg *m, unsigned int reason, const char *text)
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
	conn_disc_msg(&m, PROTO_DISC_PROTOCOL, what);
	conn_link_begin_close(c, l, &m, -EBADMSG, why);
}

/* Make @l the connection; everything else goes. */
static void link_commit(struct conn *c, struct link *l)
{
	struct conn_peer peer = { 0 };
	uint64_t now = conn_now_ms();
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
		conn_link_close(c, o, -ECONNRESET, "superseded");
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

struct link *conn_find_link(struct conn *c, enum link_state st, int dir)
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
bool conn_closing_up(struct conn *c)
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
		l->deadline = conn_now_ms() + 2ull * c->t.connect_ms;
		return;
	}
	if (c->up || conn_closing_up(c)) {
		/*
		 * The peer thinks our connection is gone; maybe it is (the
		 * peer restarted): a PING finds out sooner than the timeout.
		 * Until then ours stands.
		 */
		if (c->up && !c->up->ping_out)
			link_send_ping(c, c->up);
		log_dbg(LOG_CAT_NET, "%s: %s: already connected, closing",
			c->res.name, l->addr);
		conn_link_close(c, l, -EEXIST, NULL);
		return;
	}
	if (!l->outgoing && conn_find_link(c, LK_HANDSHAKE, 1)) {
		/* Ours may still complete, and ours wins: wait for it. */
		l->st = LK_CONFIRM;
		l->deadline = conn_now_ms() + 2ull * c->t.connect_ms;
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
	conn_backoff(c, conn_now_ms(), c->t.rmax_ms);
	if (len)
		link_send_raw(c, l, out, len);
	l->st = LK_CLOSING;
	l->deadline = conn_now_ms() + c->t.connect_ms;
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
			c->info.rtt_us = (uint32_t)(conn_now_us() - l->ping_at);
			pthread_mutex_unlock(&c->lock);
		}
		return true;
	case PROTO_DISCONNECT:
		snprintf(why, sizeof(why), "peer disconnected (%s): %s",
			 proto_disc_name(m->disconnect.reason),
			 m->disconnect.text);
		/* A peer that refuses us on purpose is not retried at once. */
		if (m->disconnect.reason != PROTO_DISC_SHUTDOWN)
			conn_backoff(c, conn_now_ms(), c->t.rmax_ms);
		/* -ESHUTDOWN: the peer left on purpose (down, disconnect) */
		l->lost_err = m->disconnect.reason == PROTO_DISC_SHUTDOWN ?
				      -ESHUTDOWN :
				      -ECONNRESET;
		snprintf(l->lost_why, sizeof(l->lost_why), "%s", why);
		conn_link_close(c, l, -ECONNRESET, why);
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
	l->last_rx = conn_now_ms();
	switch (l->st) {
	case LK_HANDSHAKE:
		/* Every frame with a payload names a sector or bitmap page,
		 * which the parser refuses before the handshake: no buf. */
		xport_buf_put(buf);
		switch (hs_input(l->hs, m, &out, &len)) {
		case HS_SEND:
			if (link_send_raw(c, l, out, len))
				conn_link_close(c, l, -ENOBUFS, NULL);
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
void conn_link_failed(struct conn *c, struct link *l, int err)
{
	const char *xe = xport_error(l->ep);
	char key[48];

	if (l->st == LK_CLOSING) {
		conn_link_close(c, l, err, NULL);
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
	conn_link_close(c, l, err, xe);
}

/* Free closed links; close those asked to; schedule the next dial. */
void conn_reap(struct conn *c, uint64_t now)
{
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];
		struct xport_stats st;

		if (!l)
			continue;
		if (l->ep && l->kill)
			conn_link_close(c, l, l->kill_err, NULL);
		if (l->ep && l->st == LK_CLOSING) {
			xport_stats(l->ep, &st);
			if (!st.sendq_msgs || now >= l->deadline)
				conn_link_close(c, l, -ECONNRESET, NULL);
		}
		if (l->ep)
			continue;
		if (l->outgoing || l->was_up)
			conn_backoff(c, now,
				     l->was_up ? c->t.rmin_ms : c->delay);
		c->links[i] = NULL;
		free(l);
	}
	/* The decider's own attempt failed: take the peer's, if any. */
	if (c->decider && !c->up && !conn_closing_up(c) &&
	    !conn_find_link(c, LK_HANDSHAKE, 1)) {
		struct link *l = conn_find_link(c, LK_CONFIRM, 0);

		if (l)
			link_commit(c, l);
	}
}

void conn_link_timers(struct conn *c, struct link *l, uint64_t now)
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
		conn_link_close(c, l, -ETIMEDOUT, NULL);
		return;
	}
	if (since(now, l->last_rx) >= ping + c->t.connect_ms) {
		snprintf(why, sizeof(why), "nothing received for %llu ms",
			 (unsigned long long)since(now, l->last_rx));
		conn_fail(c, LOG_LVL_WARN, "ping-timeout", "%s: %s", l->addr,
			  why);
		conn_link_close(c, l, -ETIMEDOUT, why);
		return;
	}
	/* Idle in either direction: the peer must hear from us within
	 * ping-interval, and we want to hear from it. */
	if (since(now, l->last_tx) >= ping ||
	    (since(now, l->last_rx) >= ping && !l->ping_out))
		link_send_ping(c, l);
}
