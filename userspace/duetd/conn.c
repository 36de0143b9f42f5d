// SPDX-License-Identifier: MIT
/*
 * The peer connection (see conn.h; the rules are in docs/replication.md):
 * the public API and the connection thread's loop. The per-link machinery
 * (handshake, commit, pings, closing) is in conn_link.c; the structs both
 * files share are in conn_int.h.
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
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "conn_int.h"
#include "log.h"
#include "util.h"

#define CONN_ACCEPT_PAUSE_MS 100 /* after accept() failed for lack of fds */

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

static void wake(void *arg)
{
	struct conn *c = arg;
	uint64_t one = 1;

	if (write(c->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_err("%s: cannot wake the connection thread: %s",
			c->res.name, strerror(errno));
}

/* Our own reconnect schedule after a failed or lost attempt. */
void conn_backoff(struct conn *c, uint64_t now, uint32_t delay)
{
	uint64_t at = now + jitter(c, delay);

	if (at > c->next_dial)
		c->next_dial = at;
	c->delay = delay * 2 > c->t.rmax_ms ? c->t.rmax_ms : delay * 2;
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
	if (c->up || conn_closing_up(c) || conn_find_link(c, LK_HANDSHAKE, 1))
		return false;
	/* The follower waits for the decider's verdict on what it has. */
	if (!c->decider && conn_find_link(c, LK_CONFIRM, -1))
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
		conn_backoff(c, now, c->delay);
		return;
	}
	if (!conn_link_new(c, ep, true, c->peer_addr, now)) {
		conn_fail(c, LOG_LVL_ERR, "link",
			  "cannot set up a connection: %s",
			  strerror(errno ? errno : ENOMEM));
		xport_close(ep);
		conn_backoff(c, now, c->delay);
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
		    !conn_link_new(c, ep, false, ep->ops->peer_addr(ep), now)) {
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
			l->last_rx = conn_now_ms();
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
			conn_link_failed(c, l, r);
		if (l->kill)
			conn_link_close(c, l, l->kill_err, NULL);
	}
}

/* Wait for the next event or timer. Returns whether the listener fired. */
static bool wait_events(struct conn *c, uint64_t until, bool listen)
{
	struct pollfd fds[2 + CONN_LINKS_MAX * XPORT_POLLFDS_MAX];
	uint64_t now = conn_now_ms();
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
		conn_disc_msg(&m, c->disc_reason, c->disc_text);
	pthread_mutex_unlock(&c->lock);
	if (!disc || !c->up)
		return;
	snprintf(why, sizeof(why), "disconnected by us (%s): %s",
		 proto_disc_name(m.disconnect.reason), m.disconnect.text);
	conn_link_begin_close(c, c->up, &m, -ECONNABORTED, why);
	conn_backoff(c, now, c->t.rmax_ms);
}

/* Stop: tell the peer, give the last frames a moment, close everything. */
static void shut_down(struct conn *c)
{
	uint64_t until = conn_now_ms() + min_u64(c->t.connect_ms, 2000);
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
		conn_flush_pending(c, conn_now_ms());
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		struct link *l = c->links[i];

		if (!l || !l->ep)
			continue;
		if (l->st == LK_UP) {
			conn_disc_msg(&m, reason, text);
			conn_link_begin_close(c, l, &m, -ESHUTDOWN,
					      "connection stopped");
		} else if (l->st != LK_CLOSING) {
			conn_link_close(c, l, -ESHUTDOWN, NULL);
		}
	}
	conn_fail_pending(c);
	for (;;) {
		uint64_t now = conn_now_ms();

		io_all(c, true);
		conn_reap(c, now);
		if (!conn_find_link(c, LK_CLOSING, -1) || now >= until)
			break;
		wait_events(c, min_u64(until, now + 50), false);
	}
	for (int i = 0; i < CONN_LINKS_MAX; i++) {
		if (c->links[i])
			conn_link_close(c, c->links[i], -ESHUTDOWN,
					"connection stopped");
		free(c->links[i]);
		c->links[i] = NULL;
	}
	conn_fail_pending(c);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	uint64_t now = conn_now_ms();
	bool stop, dial_now, lfired, again;

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
		now = conn_now_ms();
		handle_requests(c, now);
		conn_flush_pending(c, now);
		io_all(c, false);
		for (int i = 0; i < CONN_LINKS_MAX; i++)
			if (c->links[i])
				conn_link_timers(c, c->links[i], now);
		conn_reap(c, now);
		dial_now = want_dial(c);
		if (dial_now && now >= c->next_dial) {
			dial(c, now);
			continue;
		}
		publish(c);
		/* frames queued and announced while we were awake (on this
		 * thread too: apply_frame()'s answers, pushed here without a
		 * wake-up) go before we sleep; lazy ones wait for conn_push */
		pthread_mutex_lock(&c->lock);
		again = c->pend_head && !c->lazy;
		pthread_mutex_unlock(&c->lock);
		if (again)
			continue;
		lfired = wait_events(c, next_timer(c, now, dial_now),
				     now >= c->accept_after);
		if (lfired)
			accept_all(c, conn_now_ms());
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
		c->reqs[i].xm.done = conn_req_xdone;
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
		.sndbuf_bytes = c->res.sndbuf_bytes,
		.rcvbuf_bytes = c->res.rcvbuf_bytes,
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
	/* the thread itself looks at its queue before it sleeps */
	if (kick && !pthread_equal(pthread_self(), c->thread))
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
