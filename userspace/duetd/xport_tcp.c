// SPDX-License-Identifier: MIT
/*
 * The TCP transport (xport_tcp_ops).
 *
 * Sending: each queued message is two iovecs, head and payload, and one
 * sendmsg() takes as many messages as fit in XPORT_TCP_IOVS; the payload
 * is never copied in user space. A message is handed over (done(0)) when
 * its last byte is in the socket.
 *
 * Receiving: reads go into a small staging buffer, so that the headers and
 * fixed parts of many small frames cost one recv(); once proto_parser
 * announces a payload, it gets a buffer from the pool and what remains of
 * a large payload is read straight into that buffer. With the pool used
 * up, the endpoint stops reading (TCP's window then pushes back on the
 * peer) until a buffer comes back.
 *
 * Socket options, and why:
 *  - TCP_NODELAY: frames are written whole, acks and pings must not wait
 *    for Nagle;
 *  - SO_KEEPALIVE + TCP_USER_TIMEOUT: a peer that vanished is detected by
 *    the kernel too, even while data is queued (conn_'s pings only look
 *    at what arrives);
 *  - buffer sizes: only when asked (sndbuf-size, rcvbuf-size), with
 *    SO_{SND,RCV}BUFFORCE, because a plain SO_SNDBUF is capped at
 *    net.core.wmem_max and switches off the kernel's autotuning, which
 *    usually does better; without the privilege the autotuning stays on
 *    (and a notice says so). They are set before listen() and connect()
 *    so that the window scale is negotiated for them (an accepted socket
 *    inherits the listener's);
 *  - SO_REUSEADDR on the listener: a restarted daemon binds again while
 *    the old connections are in TIME_WAIT.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "xport.h"

#define XPORT_TCP_STAGE (64u << 10)	/* staging buffer, bytes */
#define XPORT_TCP_DIRECT (16u << 10)	/* read payload rests this big direct */
#define XPORT_TCP_IOVS 64		/* iovecs per sendmsg */
#define XPORT_TCP_RECV_BUDGET (8u << 20) /* bytes read per io(), fairness */
#define XPORT_TCP_BACKLOG 16

struct tcp_ep {
	struct xport_ep base;
	int fd;
	bool listener;
	bool connecting;
	bool broken;		/* io() reported an error */
	bool rx_off;		/* handler asked to stop, or read side failed */
	struct xport_opts opts;	/* listener: handed to accepted endpoints */

	/* receiving */
	struct proto_parser *parser;
	bool in_payload;	/* parser wants payload bytes */
	bool need_buf;		/* ... and has no buffer yet */
	struct xport_buf *rxbuf;
	uint8_t *stage;
	size_t stage_off, stage_len;

	/* sending */
	struct xport_msg *sq_head, *sq_tail;

	struct xport_stats st;
	char local[XPORT_ADDR_MAX];
	char peer[XPORT_ADDR_MAX];
};

static struct tcp_ep *to_tcp(const struct xport_ep *ep)
{
	return (struct tcp_ep *)ep;
}

static struct tcp_ep *tcp_ep_new(int fd, const struct xport_opts *o)
{
	struct tcp_ep *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->base.ops = &xport_tcp_ops;
	t->fd = fd;
	if (o)
		t->opts = *o;
	return t;
}

/* The receive side of a connected endpoint. */
static int tcp_ep_rx_init(struct tcp_ep *t)
{
	t->parser = proto_parser_new(NULL);
	t->stage = malloc(XPORT_TCP_STAGE);
	if (!t->parser || !t->stage)
		return -ENOMEM;
	return 0;
}

static void tcp_names(struct tcp_ep *t)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (!getsockname(t->fd, (struct sockaddr *)&ss, &sl))
		xport_fmt_sockaddr((struct sockaddr *)&ss, t->local,
				   sizeof(t->local));
	sl = sizeof(ss);
	if (!getpeername(t->fd, (struct sockaddr *)&ss, &sl))
		xport_fmt_sockaddr((struct sockaddr *)&ss, t->peer,
				   sizeof(t->peer));
}

static int setopt(int fd, int level, int name, int val)
{
	return setsockopt(fd, level, name, &val, sizeof(val)) ? -errno : 0;
}

/* One buffer: only with the privilege to exceed [wr]mem_max (see the
 * top); without it, the kernel's autotuning stays. */
static void tcp_set_buf(int fd, int name, const char *what, uint32_t bytes)
{
	int v = bytes > INT_MAX / 2 ? INT_MAX / 2 : (int)bytes;
	int r;

	if (!bytes)
		return;
	r = setopt(fd, SOL_SOCKET, name, v);
	if (r)
		log_notice("tcp: cannot set the %s to %d bytes (%s): the kernel's autotuning stays",
			   what, v, strerror(-r));
}

static void tcp_set_bufs(int fd, const struct xport_opts *o)
{
	tcp_set_buf(fd, SO_SNDBUFFORCE, "send buffer (sndbuf-size)",
		    o->sndbuf_bytes);
	tcp_set_buf(fd, SO_RCVBUFFORCE, "receive buffer (rcvbuf-size)",
		    o->rcvbuf_bytes);
}

/* Options of a data connection: see the top of the file. */
static int tcp_set_conn_opts(int fd, const struct xport_opts *o)
{
	int r;

	r = setopt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	if (!r && o->user_timeout_ms)
		r = setopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT,
			   (int)o->user_timeout_ms);
	if (!r && o->keepalive_ms) {
		int idle = (int)(o->keepalive_ms / 1000);

		idle = idle < 1 ? 1 : idle;
		r = setopt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
		if (!r)
			r = setopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle);
		if (!r)
			r = setopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, idle);
		if (!r)
			r = setopt(fd, IPPROTO_TCP, TCP_KEEPCNT, 3);
	}
	return r;
}

static int tcp_listen(const char *addr, const struct xport_opts *o,
		      struct xport_ep **out, char *err, size_t err_len)
{
	struct addrinfo *ai;
	struct tcp_ep *t;
	int fd, r;

	r = xport_resolve(addr, true, &ai, err, err_len);
	if (r)
		return r;
	fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
	if (fd < 0) {
		r = -errno;
		snprintf(err, err_len, "socket: %s", strerror(errno));
		goto out_free_ai;
	}
	r = setopt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
	if (r) {
		snprintf(err, err_len, "SO_REUSEADDR: %s", strerror(-r));
		goto out_close;
	}
	tcp_set_bufs(fd, o);
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) ||
	    listen(fd, XPORT_TCP_BACKLOG)) {
		r = -errno;
		snprintf(err, err_len, "cannot listen on %s: %s", addr,
			 strerror(errno));
		goto out_close;
	}
	t = tcp_ep_new(fd, o);
	if (!t) {
		r = -ENOMEM;
		snprintf(err, err_len, "out of memory");
		goto out_close;
	}
	t->listener = true;
	tcp_names(t);
	freeaddrinfo(ai);
	*out = &t->base;
	return 0;

out_close:
	close(fd);
out_free_ai:
	freeaddrinfo(ai);
	return r;
}

static void tcp_close(struct xport_ep *ep);

static int tcp_accept(struct xport_ep *lep, struct xport_ep **out)
{
	struct tcp_ep *l = to_tcp(lep), *t;
	int fd, r;

	for (;;) {
		fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		r = -errno;
		if (r == -EINTR || r == -ECONNABORTED)
			continue;
		if (r != -EAGAIN)
			xport_set_error(lep, "accept on %s: %s", l->local,
					strerror(-r));
		return r == -EWOULDBLOCK ? -EAGAIN : r;
	}
	t = tcp_ep_new(fd, &l->opts);
	if (!t) {
		close(fd);
		return -ENOMEM;
	}
	r = tcp_set_conn_opts(fd, &l->opts);
	if (!r)
		r = tcp_ep_rx_init(t);
	if (r) {
		tcp_close(&t->base);
		return r;
	}
	tcp_names(t);
	*out = &t->base;
	return 0;
}

static int tcp_connect(const char *addr, const struct xport_opts *o,
		       struct xport_ep **out, char *err, size_t err_len)
{
	struct addrinfo *ai;
	struct tcp_ep *t;
	int fd, r;

	r = xport_resolve(addr, false, &ai, err, err_len);
	if (r)
		return r;
	/* Only the first address: the configuration names one endpoint. */
	fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
	if (fd < 0) {
		r = -errno;
		snprintf(err, err_len, "socket: %s", strerror(errno));
		goto out_free_ai;
	}
	tcp_set_bufs(fd, o);
	r = tcp_set_conn_opts(fd, o);
	if (r) {
		snprintf(err, err_len, "socket options: %s", strerror(-r));
		goto out_close;
	}
	t = tcp_ep_new(fd, o);
	if (!t || tcp_ep_rx_init(t)) {
		if (t)
			tcp_close(&t->base);
		else
			close(fd);
		freeaddrinfo(ai);
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	snprintf(t->peer, sizeof(t->peer), "%s", addr);
	if (connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		if (errno != EINPROGRESS) {
			r = -errno;
			snprintf(err, err_len, "cannot connect to %s: %s", addr,
				 strerror(errno));
			freeaddrinfo(ai);
			tcp_close(&t->base);
			return r;
		}
		t->connecting = true;
	} else {
		tcp_names(t);
	}
	freeaddrinfo(ai);
	*out = &t->base;
	return 0;

out_close:
	close(fd);
out_free_ai:
	freeaddrinfo(ai);
	return r;
}

static int tcp_send(struct xport_ep *ep, struct xport_msg *msg)
{
	struct tcp_ep *t = to_tcp(ep);

	if (t->broken || t->listener)
		return -ENOTCONN;
	msg->next = NULL;
	msg->sent = 0;
	if (t->sq_tail)
		t->sq_tail->next = msg;
	else
		t->sq_head = msg;
	t->sq_tail = msg;
	t->st.sendq_msgs++;
	t->st.sendq_bytes += msg->head_len + msg->payload_len;
	return 0;
}

/* A non-blocking connect is over when the socket has a peer or an error. */
static int tcp_finish_connect(struct tcp_ep *t)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int soerr = 0;

	sl = sizeof(soerr);
	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl))
		soerr = errno;
	if (soerr) {
		xport_set_error(&t->base, "cannot connect to %s: %s", t->peer,
				strerror(soerr));
		return -soerr;
	}
	sl = sizeof(ss);
	if (getpeername(t->fd, (struct sockaddr *)&ss, &sl))
		return 0;	/* still in progress */
	t->connecting = false;
	tcp_names(t);
	return 0;
}

static void tcp_msg_done(struct tcp_ep *t, int err)
{
	struct xport_msg *m = t->sq_head;

	t->sq_head = m->next;
	if (!t->sq_head)
		t->sq_tail = NULL;
	t->st.sendq_msgs--;
	t->st.sendq_bytes -= m->head_len + m->payload_len;
	if (!err)
		t->st.msgs_sent++;
	m->done(m, err);
}

static int tcp_flush(struct tcp_ep *t)
{
	while (t->sq_head) {
		struct iovec iov[XPORT_TCP_IOVS];
		struct msghdr mh = { .msg_iov = iov };
		struct xport_msg *m;
		ssize_t w;
		int n = 0;

		for (m = t->sq_head; m && n + 2 <= XPORT_TCP_IOVS;
		     m = m->next) {
			uint64_t off = m->sent;

			if (off < m->head_len) {
				iov[n].iov_base = m->head + off;
				iov[n++].iov_len = m->head_len - off;
				off = 0;
			} else {
				off -= m->head_len;
			}
			if (m->payload_len > off) {
				iov[n].iov_base = (uint8_t *)m->payload + off;
				iov[n++].iov_len = m->payload_len - off;
			}
		}
		mh.msg_iovlen = (size_t)n;
		w = sendmsg(t->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			xport_set_error(&t->base, "send to %s: %s", t->peer,
					strerror(errno));
			return -errno;
		}
		t->st.bytes_sent += (uint64_t)w;
		while (w > 0) {
			m = t->sq_head;
			uint64_t left = m->head_len + m->payload_len - m->sent;

			if ((uint64_t)w < left) {
				m->sent += (uint64_t)w;
				break;
			}
			w -= (ssize_t)left;
			m->sent += left;
			tcp_msg_done(t, 0);
		}
	}
	return 0;
}

/* Hand one complete frame to the owner. */
static void tcp_deliver(struct tcp_ep *t)
{
	const struct proto_msg *m = proto_parser_msg(t->parser);
	struct xport_buf *b = t->rxbuf;

	t->rxbuf = NULL;
	t->in_payload = false;
	t->st.msgs_recv++;
	if (b)
		b->len = m->payload_len;
	if (!t->base.handler->frame(t->base.arg, &t->base, m, b))
		t->rx_off = true;
}

/* The parser announced a payload: give it a pool buffer, or stall. */
static int tcp_get_payload_buf(struct tcp_ep *t)
{
	const struct proto_msg *m = proto_parser_msg(t->parser);
	struct xport_buf *b;

	if (!t->opts.pool) {
		xport_set_error(&t->base,
				"%s frame with a payload, and no buffer pool",
				proto_type_name(m->type));
		return -ENOBUFS;
	}
	b = xport_pool_get(t->opts.pool, m->payload_len);
	if (!b) {
		if (errno != EAGAIN) {
			xport_set_error(&t->base, "payload buffer: %s",
					strerror(errno));
			return -errno;
		}
		t->st.rx_stalled = true;
		return 0;
	}
	t->st.rx_stalled = false;
	proto_parser_set_payload(t->parser, b->data);
	t->rxbuf = b;
	t->need_buf = false;
	return 0;
}

static int tcp_parse_event(struct tcp_ep *t, int r)
{
	if (r < 0) {
		xport_set_error(&t->base, "from %s: %s", t->peer,
				r == -EBADMSG ? proto_parser_error(t->parser) :
						strerror(-r));
		return r;
	}
	if (r == PROTO_PARSE_PAYLOAD) {
		t->in_payload = true;
		t->need_buf = true;
		return tcp_get_payload_buf(t);
	}
	if (r == PROTO_PARSE_FRAME)
		tcp_deliver(t);
	return 0;
}

static int tcp_recv(struct tcp_ep *t)
{
	size_t budget = XPORT_TCP_RECV_BUDGET;

	while (!t->rx_off && budget) {
		size_t want, used;
		ssize_t n;
		void *dst;
		int r;

		if (t->need_buf) {
			r = tcp_get_payload_buf(t);
			if (r || t->need_buf)
				return r;
		}
		if (t->stage_off < t->stage_len) {
			r = proto_parser_feed(t->parser,
					      t->stage + t->stage_off,
					      t->stage_len - t->stage_off,
					      &used);
			t->stage_off += used;
			r = tcp_parse_event(t, r);
			if (r)
				return r;
			continue;
		}
		dst = NULL;
		if (t->in_payload) {
			dst = proto_parser_buf(t->parser, &want);
			if (!dst)
				return tcp_parse_event(t, -errno);
			if (want < XPORT_TCP_DIRECT)
				dst = NULL;
		}
		if (!dst) {
			dst = t->stage;
			want = XPORT_TCP_STAGE;
		}
		n = recv(t->fd, dst, want, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			xport_set_error(&t->base, "receive from %s: %s",
					t->peer, strerror(errno));
			return -errno;
		}
		if (!n) {
			xport_set_error(&t->base, "%s closed the connection",
					t->peer);
			return -ECONNRESET;
		}
		t->st.bytes_recv += (uint64_t)n;
		budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
		if (dst == t->stage) {
			t->stage_off = 0;
			t->stage_len = (size_t)n;
		} else {
			r = tcp_parse_event(t, proto_parser_advance(t->parser,
								    (size_t)n));
			if (r)
				return r;
		}
	}
	return 0;
}

static int tcp_io(struct xport_ep *ep, unsigned int what)
{
	struct tcp_ep *t = to_tcp(ep);
	int r = 0;

	if (t->broken || t->listener)
		return t->broken ? -ENOTCONN : 0;
	if (t->connecting) {
		r = tcp_finish_connect(t);
		if (r || t->connecting)
			goto out;
	}
	if (what & XPORT_IO_SEND) {
		r = tcp_flush(t);
		if (r)
			goto out;
	}
	if ((what & XPORT_IO_RECV) && !t->rx_off) {
		r = tcp_recv(t);
		/* Frames handled may have queued answers: send them now. */
		if (!r && (what & XPORT_IO_SEND))
			r = tcp_flush(t);
	}
out:
	if (r == -EBADMSG) {
		/* The stream cannot be trusted, the socket still works: the
		 * owner may tell the peer why before closing. */
		t->rx_off = true;
	} else if (r) {
		t->broken = true;
		if (!ep->err[0])
			xport_set_error(ep, "%s: %s", t->peer, strerror(-r));
	}
	return r;
}

static int tcp_poll_fds(struct xport_ep *ep, unsigned int what,
			struct pollfd *fds, int max)
{
	struct tcp_ep *t = to_tcp(ep);
	short ev = 0;

	if (max < 1 || t->broken)
		return 0;
	if (t->listener) {
		ev = POLLIN;
	} else if (t->connecting) {
		ev = POLLOUT;
	} else {
		if ((what & XPORT_IO_SEND) && t->sq_head)
			ev |= POLLOUT;
		if ((what & XPORT_IO_RECV) && !t->rx_off && !t->need_buf)
			ev |= POLLIN;
	}
	if (!ev)
		return 0;
	fds[0].fd = t->fd;
	fds[0].events = ev;
	fds[0].revents = 0;
	return 1;
}

static void tcp_set_limits(struct xport_ep *ep, const struct proto_limits *lim)
{
	struct tcp_ep *t = to_tcp(ep);
	static const struct proto_limits none;

	if (t->parser)
		proto_parser_set_limits(t->parser, lim ? lim : &none);
}

static void tcp_stats(const struct xport_ep *ep, struct xport_stats *st)
{
	const struct tcp_ep *t = to_tcp(ep);

	*st = t->st;
	st->connecting = t->connecting;
}

static const char *tcp_local_addr(const struct xport_ep *ep)
{
	return to_tcp(ep)->local;
}

static const char *tcp_peer_addr(const struct xport_ep *ep)
{
	return to_tcp(ep)->peer;
}

static void tcp_close(struct xport_ep *ep)
{
	struct tcp_ep *t = to_tcp(ep);

	t->broken = true;
	while (t->sq_head)
		tcp_msg_done(t, -ECONNRESET);
	if (t->fd >= 0)
		close(t->fd);
	xport_buf_put(t->rxbuf);
	proto_parser_free(t->parser);
	free(t->stage);
	free(t);
}

const struct xport_ops xport_tcp_ops = {
	.name = "tcp",
	.listen = tcp_listen,
	.accept = tcp_accept,
	.connect = tcp_connect,
	.send = tcp_send,
	.io = tcp_io,
	.poll_fds = tcp_poll_fds,
	.set_limits = tcp_set_limits,
	.stats = tcp_stats,
	.local_addr = tcp_local_addr,
	.peer_addr = tcp_peer_addr,
	.close = tcp_close,
	.mem_register = NULL,
};
