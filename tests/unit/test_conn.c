// SPDX-License-Identifier: MIT
/*
 * Transports and the peer connection, over loopback: two conn instances in
 * one process (node 0 and node 1), and raw sockets or a hand-driven hs_
 * peer where a test needs a peer that misbehaves. Covered: connect and
 * authenticate both ways; frames with 1 MiB payloads both ways, content
 * and order; pings on an idle link; stop and reconnect; wrong secret and
 * wrong resource (refused on both sides, with the reason, bounded retries
 * and log lines); garbage and silent clients; crossed connections; sends
 * while disconnected; queued sends on loss; back-pressure on both the send
 * queue and the receive buffers; a half-open peer; DISCONNECT; lazy
 * sends (conn_send_lazy) announced by conn_push, by a normal send, or by
 * a full queue, or queued by the connection thread itself. Plus the pure parts of xport: addresses and the buffer
 * pool.
 *
 * Timeouts are short (connect 300 ms, ping 200 ms, back-off 100..400 ms)
 * so the whole file runs in seconds; ports come from 20000..31999, picked
 * at random and picked again when busy.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cfg.h"
#include "conn.h"
#include "hs.h"
#include "log.h"
#include "proto.h"
#include "util.h"
#include "xport.h"

#define DEV_BYTES (1ull << 30)
#define MIB (1u << 20)
#define SECRET "correct horse battery staple"
#define CONNECT_MS 300
#define PING_MS 200
#define RMIN_MS 100
#define RMAX_MS 400

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Poll @expr every 2 ms for up to @ms; true if it became true. */
#define WAIT_FOR(expr, ms)                                          \
	({                                                          \
		uint64_t end_ = mono_ms() + (ms);                   \
		bool ok_;                                           \
		while (!(ok_ = (expr)) && mono_ms() < end_)         \
			usleep(2000);                               \
		ok_;                                                \
	})

/* ---- one node: a conn and what its callbacks saw ---------------------- */

#define HELD_MAX 64

struct node {
	struct cfg_resource res;
	struct conn *c;
	unsigned int id;
	bool inited;
	atomic_int established, lost;
	pthread_mutex_t lock;
	struct conn_peer peer;
	int lost_err;
	char lost_reason[CONN_REASON_MAX];
	/* received frames */
	uint64_t next_id;	/* id the next DATA must carry */
	int frames, bad;
	uint64_t payload_bytes;
	bool hold;		/* keep payload buffers instead of putting */
	bool fixed_pattern;	/* payloads carry pattern(0, i), not the id's */
	bool echo_lazy;		/* answer each frame from the callback with
				 * conn_send_lazy + conn_push */
	struct xport_buf *held[HELD_MAX];
	int nheld;
	/* send completions */
	atomic_int done_ok, done_err;
	int done_at_lost;	/* completions seen when lost() came */
};

static int node_frames(struct node *n)
{
	int v;

	pthread_mutex_lock(&n->lock);
	v = n->frames;
	pthread_mutex_unlock(&n->lock);
	return v;
}

static void cb_established(void *arg, const struct conn_peer *p)
{
	struct node *n = arg;

	pthread_mutex_lock(&n->lock);
	n->peer = *p;
	n->next_id = 1;
	pthread_mutex_unlock(&n->lock);
	n->established++;
}

static uint8_t pattern(uint64_t id, size_t i)
{
	return (uint8_t)(id * 131 + i * 7 + (i >> 9));
}

static void cb_frame(void *arg, const struct proto_msg *m,
		     struct xport_buf *buf)
{
	struct node *n = arg;
	const uint8_t *p = m->payload;

	pthread_mutex_lock(&n->lock);
	if (m->id != n->next_id)
		n->bad++;
	n->next_id = m->id + 1;
	if (m->payload_len != (buf ? buf->len : 0) ||
	    (buf && m->payload != buf->data) ||
	    (m->type == PROTO_DATA && m->payload_len != m->data.length))
		n->bad++;
	for (uint32_t i = 0; i < m->payload_len; i++) {
		if (p[i] != pattern(n->fixed_pattern ? 0 : m->id, i)) {
			n->bad++;
			break;
		}
	}
	n->payload_bytes += m->payload_len;
	n->frames++;
	if (buf && n->hold && n->nheld < HELD_MAX)
		n->held[n->nheld++] = buf;
	else
		xport_buf_put(buf);
	if (n->echo_lazy) {
		/* on the connection thread, as apply_frame()'s answers */
		struct proto_msg a = { .type = PROTO_ACK_WRITE, .id = m->id };

		a.range.sector = m->id;
		a.range.length = 4096;
		if (conn_send_lazy(n->c, &a))
			n->bad++;
		conn_push(n->c);
	}
	pthread_mutex_unlock(&n->lock);
}

static void cb_lost(void *arg, int err, const char *reason)
{
	struct node *n = arg;

	pthread_mutex_lock(&n->lock);
	n->lost_err = err;
	snprintf(n->lost_reason, sizeof(n->lost_reason), "%s", reason);
	n->done_at_lost = n->done_ok + n->done_err;
	pthread_mutex_unlock(&n->lock);
	n->lost++;
}

static const struct conn_cbs cbs = {
	.established = cb_established,
	.frame = cb_frame,
	.lost = cb_lost,
};

static void cb_done(void *arg, int err)
{
	struct node *n = arg;

	if (err)
		n->done_err++;
	else
		n->done_ok++;
}

static void release_held(struct node *n)
{
	pthread_mutex_lock(&n->lock);
	n->hold = false;
	for (int i = 0; i < n->nheld; i++)
		xport_buf_put(n->held[i]);
	n->nheld = 0;
	pthread_mutex_unlock(&n->lock);
}

static void load_cfg(struct cfg_resource *r, const char *name,
		     const char *secret, int rmax, int port0, int port1)
{
	char text[1024], err[256];

	snprintf(text, sizeof(text),
		 "resource = \"%s\"; secret = \"%s\";\n"
		 "connect-timeout = %d; ping-interval = %d;\n"
		 "reconnect-min = %d; reconnect-max = %d;\n"
		 "disk = \"/dev/null\";\n"
		 "nodes = ( { name = \"n0\"; id = 0; address = \"127.0.0.1:%d\"; },\n"
		 "          { name = \"n1\"; id = 1; address = \"127.0.0.1:%d\"; } );\n",
		 name, secret, CONNECT_MS, PING_MS, RMIN_MS, rmax, port0,
		 port1);
	if (cfg_load_string(text, "test.conf", r, err, sizeof(err)))
		fail_msg("config: %s", err);
}

struct pair_opts {
	const char *name1;	/* resource name on node 1 (default r0) */
	const char *secret1;
	uint32_t first_dial_ms;
	uint32_t first_dial0_ms;	/* node 0 only, if set */
	int rmax_ms;		/* reconnect-max; 0: RMAX_MS */
	uint64_t sendq_bytes;
	uint32_t sendq_msgs;
	uint64_t rx_bytes;
	uint32_t ping_ms;	/* ping-interval; 0: PING_MS */
	bool start0, start1;
};

struct pair {
	struct node n[2];
	int port[2];
};

static void node_init(struct node *n, unsigned int id)
{
	memset(n, 0, sizeof(*n));
	n->inited = true;
	n->id = id;
	pthread_mutex_init(&n->lock, NULL);
}

static void node_create(struct node *n, const struct pair_opts *po)
{
	struct conn_opts o = {
		.res = &n->res,
		.self = &n->res.nodes[n->id],
		.data_bytes = DEV_BYTES,
		.features = PROTO_F_ALL,
		.first_dial_ms = n->id == 0 && po->first_dial0_ms ?
					 po->first_dial0_ms :
					 po->first_dial_ms,
		.sendq_bytes = po->sendq_bytes,
		.sendq_msgs = po->sendq_msgs,
		.rx_bytes = po->rx_bytes,
	};

	n->c = conn_create(&o, &cbs, n);
	assert_non_null(n->c);
}

static void node_destroy(struct node *n)
{
	if (!n->inited)
		return;
	n->inited = false;
	conn_destroy(n->c);
	n->c = NULL;
	release_held(n);
	pthread_mutex_destroy(&n->lock);
}

static void pair_destroy(struct pair *p)
{
	node_destroy(&p->n[0]);
	node_destroy(&p->n[1]);
}

static void pair_make(struct pair *p, const struct pair_opts *po)
{
	for (int i = 0; i < 2; i++) {
		struct node *n = &p->n[i];

		node_init(n, (unsigned int)i);
		load_cfg(&n->res, i && po->name1 ? po->name1 : "r0",
			 i && po->secret1 ? po->secret1 : SECRET,
			 po->rmax_ms ? po->rmax_ms : RMAX_MS, p->port[0],
			 p->port[1]);
		if (po->ping_ms)
			n->res.ping_interval_ms = po->ping_ms;
		node_create(n, po);
	}
}

/* Both nodes, on fresh random ports; started as @po says. */
static void pair_setup(struct pair *p, const struct pair_opts *po)
{
	for (int attempt = 0; attempt < 20; attempt++) {
		int r;

		p->port[0] = 20000 + (int)(util_random_u64() % 12000);
		p->port[1] = p->port[0] + 1;
		pair_make(p, po);
		/* Binding both listeners tells whether the ports are free. */
		r = conn_start(p->n[0].c);
		if (!r)
			r = conn_start(p->n[1].c);
		if (!r) {
			if (po->start0 && po->start1)
				return;
			/* Fresh nodes that saw nothing, started as asked. */
			pair_destroy(p);
			pair_make(p, po);
			if (po->start0)
				assert_int_equal(conn_start(p->n[0].c), 0);
			if (po->start1)
				assert_int_equal(conn_start(p->n[1].c), 0);
			return;
		}
		assert_int_equal(r, -EADDRINUSE);
		pair_destroy(p);
	}
	fail_msg("no free port pair");
}

static struct conn_info info(struct node *n)
{
	struct conn_info i;

	conn_state(n->c, &i);
	return i;
}

static bool connected(struct pair *p)
{
	return info(&p->n[0]).status == CONN_CONNECTED &&
	       info(&p->n[1]).status == CONN_CONNECTED &&
	       p->n[0].established > 0 && p->n[1].established > 0;
}

/* ---- messages ---------------------------------------------------------- */

static void data_msg(struct proto_msg *m, uint64_t id, uint32_t len)
{
	memset(m, 0, sizeof(*m));
	if (!len) {
		m->type = PROTO_ACK_WRITE;
		m->id = id;
		m->range.sector = id;
		m->range.length = 4096;
		return;
	}
	m->type = PROTO_DATA;
	m->id = id;
	m->data.sector = id * 2048;
	m->data.length = len;
	m->data.op = PROTO_OP_WRITE;
	m->data.epoch = 1;
}

static uint8_t *payload_for(uint64_t id, uint32_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	for (uint32_t i = 0; i < len; i++)
		p[i] = pattern(id, i);
	return p;
}

/* ---- raw peers ---------------------------------------------------------- */

static int raw_connect(int port)
{
	struct sockaddr_in sa = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	struct timeval tv = { .tv_sec = 3 };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Read until EOF; returns the bytes read, -1 on timeout or error. */
static ssize_t read_to_eof(int fd, uint8_t *buf, size_t len)
{
	size_t got = 0;
	uint8_t junk[4096];

	for (;;) {
		ssize_t n = recv(fd, got < len ? buf + got : junk,
				 got < len ? len - got : sizeof(junk), 0);

		if (n == 0)
			return (ssize_t)got;
		if (n < 0)
			return -1;
		if (got < len)
			got += (size_t)n;
	}
}

static void send_all(int fd, const void *p, size_t len)
{
	assert_int_equal(send(fd, p, len, MSG_NOSIGNAL), (ssize_t)len);
}

/*
 * Play node @node_id by hand over @fd, as @role: the handshake with the
 * real hs_ code, then nothing. Returns when both sides are done.
 */
static void fake_handshake(int fd, const struct cfg_resource *res,
			   uint32_t node_id, uint8_t role)
{
	struct hs_cfg hc = {
		.resource = res->name,
		.secret = res->secret,
		.secret_len = strlen(res->secret),
		.node_id = node_id,
		.peer_node_id = HS_NODE_ANY,
		.data_bytes = DEV_BYTES,
		.bm_granularity = res->bm_granularity,
		.features = PROTO_F_ALL,
		.role = role,
		.repl = PROTO_REPL_C,
		.data_digest = PROTO_DIGEST_NONE,
	};
	struct proto_parser *pp = proto_parser_new(NULL);
	struct hs *hs;
	const void *out;
	size_t len;
	bool done = false;

	for (int i = 0; i < PROTO_CHALLENGE_SIZE; i++)
		hc.challenge[i] = (uint8_t)(util_random_u64());
	hs = hs_init(&hc);
	assert_non_null(hs);
	assert_non_null(pp);
	assert_int_equal(hs_start(hs, &out, &len), 0);
	send_all(fd, out, len);
	while (!done) {
		uint8_t b;
		size_t used;
		int r;

		assert_int_equal(recv(fd, &b, 1, 0), 1);
		r = proto_parser_feed(pp, &b, 1, &used);
		assert_true(r >= 0);
		if (r != PROTO_PARSE_FRAME)
			continue;
		switch (hs_input(hs, proto_parser_msg(pp), &out, &len)) {
		case HS_SEND:
			send_all(fd, out, len);
			break;
		case HS_DONE:
			done = true;
			break;
		default:
			fail_msg("fake peer refused: %s", hs_reason(hs));
		}
	}
	hs_free(hs);
	proto_parser_free(pp);
}

/* ---- tests -------------------------------------------------------------- */

static void test_addr(void **state)
{
	char host[64], port[8], err[128], buf[XPORT_ADDR_MAX];
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6,
				   .sin6_port = htons(7789) };

	(void)state;
	assert_int_equal(xport_split_addr("10.0.0.1:7789", host, sizeof(host),
					  port, sizeof(port), err, sizeof(err)),
			 0);
	assert_string_equal(host, "10.0.0.1");
	assert_string_equal(port, "7789");
	assert_int_equal(xport_split_addr("[fd00::1]:1", host, sizeof(host),
					  port, sizeof(port), err, sizeof(err)),
			 0);
	assert_string_equal(host, "fd00::1");
	assert_string_equal(port, "1");
	assert_int_equal(xport_split_addr(":99", host, sizeof(host), port,
					  sizeof(port), err, sizeof(err)),
			 0);
	assert_string_equal(host, "");
	assert_int_equal(xport_split_addr("fd00::1:5", host, sizeof(host),
					  port, sizeof(port), err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "brackets"));
	assert_int_equal(xport_split_addr("[fd00::1]5", host, sizeof(host),
					  port, sizeof(port), err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(xport_split_addr("host:", host, sizeof(host), port,
					  sizeof(port), err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(xport_split_addr("host:8x", host, sizeof(host), port,
					  sizeof(port), err, sizeof(err)),
			 -EINVAL);
	s6.sin6_addr.s6_addr[15] = 1;
	assert_string_equal(xport_fmt_sockaddr((struct sockaddr *)&s6, buf,
					       sizeof(buf)),
			    "[::1]:7789");
	assert_ptr_equal(xport_find("tcp"), &xport_tcp_ops);
	assert_null(xport_find("carrier-pigeon"));
	assert_int_equal(xport_register(&xport_tcp_ops), -EEXIST);
}

static atomic_int pool_wakes;

static void pool_wake(void *arg)
{
	(void)arg;
	pool_wakes++;
}

static void test_pool(void **state)
{
	struct xport_pool *p;
	struct xport_buf *a, *b, *c, *d;
	size_t alloc, used;

	(void)state;
	assert_null(xport_pool_new(MIB, pool_wake, NULL));
	p = xport_pool_new(2 * MIB, pool_wake, NULL);
	assert_non_null(p);
	a = xport_pool_get(p, MIB);
	b = xport_pool_get(p, 600 * 1024);	/* rounds up to 1 MiB */
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(b->len, 600 * 1024);
	assert_int_equal(b->cap, MIB);
	assert_int_equal((uintptr_t)a->data % 4096, 0);
	memset(a->data, 1, MIB);
	memset(b->data, 2, 600 * 1024);
	/* Budget used up: refused, and the owner is woken on the next put. */
	c = xport_pool_get(p, 4096);
	assert_null(c);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(pool_wakes, 0);
	xport_buf_put(b);
	assert_int_equal(pool_wakes, 1);
	xport_pool_usage(p, &alloc, &used);
	assert_int_equal(alloc, 2 * MIB);
	assert_int_equal(used, MIB);
	/* A small buffer now fits by freeing the cached 1 MiB one. */
	c = xport_pool_get(p, 4096);
	assert_non_null(c);
	assert_int_equal(c->cap, 4096);
	xport_pool_usage(p, &alloc, &used);
	assert_int_equal(alloc, MIB + 4096);
	/* A cached buffer is reused for its class. */
	xport_buf_put(c);
	d = xport_pool_get(p, 3000);
	assert_ptr_equal(d, c);
	assert_null(xport_pool_get(p, 0));
	assert_null(xport_pool_get(p, PROTO_PAYLOAD_MAX + 1));
	/* The owner goes first; buffers stay valid until put. */
	xport_pool_free(p);
	memset(a->data, 3, MIB);
	xport_buf_put(a);
	xport_buf_put(d);
	assert_int_equal(pool_wakes, 1);
}

/* ---- xport driven by hand ---------------------------------------------- */

struct xrecv {
	int frames;
	struct proto_msg last;
	struct xport_buf *buf;
};

static bool x_frame(void *arg, struct xport_ep *ep, const struct proto_msg *m,
		    struct xport_buf *buf)
{
	struct xrecv *r = arg;

	(void)ep;
	r->frames++;
	r->last = *m;
	xport_buf_put(r->buf);
	r->buf = buf;
	return true;
}

static const struct xport_handler x_handler = { .frame = x_frame };

static int x_done_calls, x_done_err;

static void x_done(struct xport_msg *msg, int err)
{
	(void)msg;
	x_done_calls++;
	if (err)
		x_done_err = err;
}

/* Poll both endpoints and run their io until @expr or 2 s. */
#define X_PUMP(a, b, expr)                                                 \
	do {                                                               \
		uint64_t end_ = mono_ms() + 2000;                          \
		while (!(expr) && mono_ms() < end_) {                      \
			struct pollfd f_[4];                               \
			int n_ = xport_poll_fds(a, 3, f_, 2);              \
			n_ += xport_poll_fds(b, 3, f_ + n_, 2);            \
			poll(f_, (nfds_t)n_, 10);                          \
			if (xport_io(a, 3)) fail_msg("a: %s", xport_error(a)); \
			if (xport_io(b, 3)) fail_msg("b: %s", xport_error(b)); \
		}                                                          \
		assert_true(expr);                                         \
	} while (0)

/*
 * One TCP endpoint pair, by hand: a DATA frame with a 1 MiB payload sent
 * without copying (done only once it is in the socket), received into a
 * pool buffer; then the owner closes one end and the other sees it.
 */
static void xport_pair_test(const char *listen_addr)
{
	const struct xport_ops *ops = xport_find("tcp");
	struct xport_opts o = { .user_timeout_ms = 5000, .keepalive_ms = 5000 };
	struct xport_ep *l, *a = NULL, *b = NULL;
	struct xrecv rb = { 0 };
	struct xport_msg msg = { .done = x_done };
	struct proto_limits lim = { .dev_bytes = DEV_BYTES,
				    .bm_granularity = 4096 };
	struct proto_msg m;
	struct xport_stats st;
	char err[XPORT_ERR_MAX];
	uint8_t *payload = payload_for(5, MIB);
	ssize_t n;

	o.pool = xport_pool_new(2 * MIB, NULL, NULL);
	assert_non_null(o.pool);
	assert_int_equal(ops->listen(listen_addr, &o, &l, err, sizeof(err)), 0);
	assert_int_equal(ops->connect(ops->local_addr(l), &o, &a, err,
				      sizeof(err)),
			 0);
	assert_true(WAIT_FOR(ops->accept(l, &b) == 0, 2000));
	xport_set_handler(b, &x_handler, &rb);
	xport_set_handler(a, &x_handler, &rb);
	ops->set_limits(b, &lim);

	data_msg(&m, 5, MIB);
	n = proto_encode(&m, msg.head, sizeof(msg.head), NULL, 0);
	assert_true(n > 0);
	msg.head_len = (uint32_t)n;
	msg.payload = payload;
	msg.payload_len = MIB;
	x_done_calls = x_done_err = 0;
	assert_int_equal(xport_send(a, &msg), 0);
	xport_stats(a, &st);
	assert_int_equal(st.sendq_msgs, 1);
	assert_int_equal(st.sendq_bytes, (uint64_t)n + MIB);
	assert_int_equal(x_done_calls, 0);	/* queued only */
	X_PUMP(a, b, rb.frames == 1 && x_done_calls == 1);
	assert_int_equal(x_done_err, 0);
	assert_int_equal(rb.last.type, PROTO_DATA);
	assert_int_equal(rb.last.id, 5);
	assert_non_null(rb.buf);
	assert_int_equal(rb.buf->len, MIB);
	assert_memory_equal(rb.buf->data, payload, MIB);
	xport_stats(b, &st);
	assert_int_equal(st.msgs_recv, 1);
	assert_int_equal(st.bytes_recv, (uint64_t)n + MIB);
	assert_string_equal(ops->peer_addr(a), ops->local_addr(b));
	assert_string_equal(ops->local_addr(a), ops->peer_addr(b));

	/* A message queued on a closed endpoint completes with an error. */
	msg.payload_len = MIB;
	assert_int_equal(xport_send(b, &msg), 0);
	xport_close(b);
	assert_int_equal(x_done_err, -ECONNRESET);
	assert_true(WAIT_FOR(xport_io(a, 3) == -ECONNRESET, 2000));
	assert_non_null(strstr(xport_error(a), "closed the connection"));
	xport_close(a);
	xport_close(l);
	/* The buffer outlives its endpoint and the pool's owner. */
	xport_pool_free(o.pool);
	assert_memory_equal(rb.buf->data, payload, 4096);
	xport_buf_put(rb.buf);
	free(payload);
}

/* The socket behind @ep (its first poll descriptor). */
static int ep_fd(struct xport_ep *ep)
{
	struct pollfd fds[XPORT_POLLFDS_MAX];

	assert_true(xport_poll_fds(ep, XPORT_IO_RECV, fds, XPORT_POLLFDS_MAX) >=
		    1);
	return fds[0].fd;
}

static int sock_buf(int fd, int name)
{
	int v = 0;
	socklen_t len = sizeof(v);

	assert_int_equal(getsockopt(fd, SOL_SOCKET, name, &v, &len), 0);
	return v;
}

/*
 * sndbuf-size / rcvbuf-size reach both ends' sockets (the accepted one
 * through its listener), also above net.core.[wr]mem_max (4 MiB by
 * default), which only the FORCE options pass; Linux reports twice what
 * was set.
 */
static void test_xport_tcp_bufs(void **state)
{
	const struct xport_ops *ops = xport_find("tcp");
	struct xport_opts o = { .sndbuf_bytes = 6 * MIB,
				.rcvbuf_bytes = 5 * MIB };
	struct xport_ep *l, *a = NULL, *b = NULL;
	char err[XPORT_ERR_MAX];

	(void)state;
	o.pool = xport_pool_new(2 * MIB, NULL, NULL);
	assert_non_null(o.pool);
	assert_int_equal(ops->listen("127.0.0.1:0", &o, &l, err, sizeof(err)),
			 0);
	assert_int_equal(ops->connect(ops->local_addr(l), &o, &a, err,
				      sizeof(err)),
			 0);
	assert_true(WAIT_FOR(ops->accept(l, &b) == 0, 2000));
	if (sock_buf(ep_fd(a), SO_SNDBUF) != 12 * MIB && geteuid()) {
		xport_close(a);
		xport_close(b);
		xport_close(l);
		xport_pool_free(o.pool);
		print_message("skipped: not root, SO_SNDBUFFORCE refused\n");
		skip();
	}
	for (int i = 0; i < 2; i++) {
		int fd = ep_fd(i ? b : a);

		assert_int_equal(sock_buf(fd, SO_SNDBUF), 12 * MIB);
		assert_int_equal(sock_buf(fd, SO_RCVBUF), 10 * MIB);
	}
	xport_close(a);
	xport_close(b);
	xport_close(l);
	xport_pool_free(o.pool);
}

static void test_xport_tcp(void **state)
{
	const struct xport_ops *ops = xport_find("tcp");
	struct xport_opts o = { 0 };
	struct xport_ep *ep;
	char err[XPORT_ERR_MAX];

	(void)state;
	xport_pair_test("127.0.0.1:0");
	/* IPv6 loopback, where the host has it. */
	if (!ops->listen("[::1]:0", &o, &ep, err, sizeof(err))) {
		xport_close(ep);
		xport_pair_test("[::1]:0");
	}
	assert_int_equal(ops->listen("127.0.0.1", &o, &ep, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "host:port"));
	/* Nothing listens there (the port of a listener just closed). */
	assert_int_equal(ops->listen("127.0.0.1:0", &o, &ep, err, sizeof(err)),
			 0);
	{
		char addr[XPORT_ADDR_MAX];

		snprintf(addr, sizeof(addr), "%s", ops->local_addr(ep));
		xport_close(ep);
		assert_int_equal(ops->connect(addr, &o, &ep, err, sizeof(err)),
				 0);
		assert_true(WAIT_FOR(xport_io(ep, XPORT_IO_SEND) ==
					     -ECONNREFUSED,
				     2000));
		assert_non_null(strstr(xport_error(ep), "refused"));
		xport_close(ep);
	}
}

static void test_create_rejects(void **state)
{
	struct cfg_resource r;
	struct conn_opts o = { .res = &r, .data_bytes = DEV_BYTES,
			       .features = PROTO_F_ALL };
	struct conn_info i;
	struct conn *c;
	char err[256];

	(void)state;
	load_cfg(&r, "r0", SECRET, RMAX_MS, 20000, 20001);
	o.self = &r.nodes[0];
	/* What a usable configuration looks like... */
	c = conn_create(&o, &cbs, NULL);
	assert_non_null(c);
	conn_state(c, &i);
	assert_int_equal(i.status, CONN_STANDALONE);
	assert_string_equal(i.peer_addr, "127.0.0.1:20001");
	conn_destroy(c);
	/* ... and what is refused. */
	o.required = PROTO_F_ALL + 1;
	assert_null(conn_create(&o, &cbs, NULL));
	assert_int_equal(errno, EINVAL);
	o.required = 0;
	o.rx_bytes = MIB;
	assert_null(conn_create(&o, &cbs, NULL));
	assert_int_equal(errno, EINVAL);
	o.rx_bytes = 0;
	/* RDMA is built in: creating needs no device (connecting does) */
	r.transport = CFG_XPORT_RDMA;
	c = conn_create(&o, &cbs, NULL);
	assert_non_null(c);
	conn_destroy(c);
	r.transport = CFG_XPORT_TCP;
	assert_int_equal(cfg_load_string(
				 "resource = \"r0\"; disk = \"/dev/null\";\n"
				 "nodes = ( { name = \"n0\"; id = 0; } );",
				 "one.conf", &r, err, sizeof(err)),
			 0);
	o.self = &r.nodes[0];
	assert_null(conn_create(&o, &cbs, NULL));	/* no peer */
	assert_int_equal(errno, EINVAL);
}

static void test_connect_auth(void **state)
{
	struct pair_opts po = { .start0 = true, .start1 = true };
	struct conn_info i0, i1;
	struct pair *p = *state;

	pair_setup(p, &po);
	assert_true(WAIT_FOR(connected(p), 3000));
	i0 = info(&p->n[0]);
	i1 = info(&p->n[1]);
	assert_int_equal(p->n[0].peer.node_id, 1);
	assert_int_equal(p->n[1].peer.node_id, 0);
	assert_int_equal(p->n[0].peer.version, PROTO_VERSION_MAX);
	assert_int_equal(p->n[0].peer.features, PROTO_F_ALL);
	assert_string_equal(p->n[0].peer.hello.resource, "r0");
	assert_int_equal(p->n[1].peer.hello.data_bytes, DEV_BYTES);
	/* Both see the same TCP connection, from either end. */
	assert_string_equal(i0.local_addr, i1.peer_addr);
	assert_string_equal(i0.peer_addr, i1.local_addr);
	assert_true(i0.outgoing != i1.outgoing);
	assert_string_equal(conn_status_name(i0.status), "Connected");
	assert_int_equal(p->n[0].established, 1);
	assert_int_equal(p->n[1].established, 1);
	assert_int_equal(p->n[0].lost, 0);
	assert_int_equal(i0.reconnects, 0);
}

static void test_frames_both_ways(void **state)
{
	static const uint32_t sizes[] = { 0, 4096, 65536 + 512, MIB, 512 };
	struct pair_opts po = { .start0 = true, .start1 = true };
	enum { N = 20 };
	uint8_t *bufs[2][N];
	uint64_t want_bytes = 0;
	struct conn_info i0, i1;
	struct pair *p = *state;

	pair_setup(p, &po);
	assert_true(WAIT_FOR(connected(p), 3000));
	for (int k = 0; k < N; k++) {
		uint32_t len = sizes[k % ARRAY_SIZE(sizes)];

		want_bytes += len;
		for (int s = 0; s < 2; s++) {
			struct proto_msg m;

			data_msg(&m, (uint64_t)k + 1, len);
			bufs[s][k] = payload_for((uint64_t)k + 1, len);
			assert_int_equal(conn_send(p->n[s].c, &m, bufs[s][k],
						   cb_done, &p->n[s], -1),
					 0);
		}
	}
	assert_true(WAIT_FOR(node_frames(&p->n[0]) == N &&
				     node_frames(&p->n[1]) == N &&
				     p->n[0].done_ok == N &&
				     p->n[1].done_ok == N,
			     5000));
	for (int s = 0; s < 2; s++) {
		assert_int_equal(p->n[s].bad, 0);
		assert_int_equal(p->n[s].payload_bytes, want_bytes);
		assert_int_equal(p->n[s].done_err, 0);
		for (int k = 0; k < N; k++)
			free(bufs[s][k]);
	}
	i0 = info(&p->n[0]);
	i1 = info(&p->n[1]);
	assert_true(i0.msgs_sent >= N && i1.msgs_recv >= N);
	assert_true(i0.bytes_sent >= want_bytes && i1.bytes_recv >= want_bytes);
	assert_int_equal(i0.sendq_msgs, 0);
	assert_int_equal(i0.sendq_bytes, 0);
	/* Frames conn_ owns cannot be sent through it. */
	{
		struct proto_msg m = { .type = PROTO_PING };

		assert_int_equal(conn_send(p->n[0].c, &m, NULL, NULL, NULL, 0),
				 -EINVAL);
		data_msg(&m, 1, 4096);
		assert_int_equal(conn_send(p->n[0].c, &m, NULL, NULL, NULL, 0),
				 -EINVAL);
		m.data.length = 1000;	/* not a multiple of 512 */
		assert_int_equal(conn_send(p->n[0].c, &m, bufs, NULL, NULL, 0),
				 -EINVAL);
	}
	assert_int_equal(p->n[0].lost + p->n[1].lost, 0);
}

static void test_ping_keeps_idle_link(void **state)
{
	struct pair_opts po = { .start0 = true, .start1 = true };
	struct conn_info i0, i1;
	struct pair *p = *state;

	pair_setup(p, &po);
	assert_true(WAIT_FOR(connected(p), 3000));
	/* Twice the time after which a silent peer is declared dead. */
	usleep(2 * (PING_MS + CONNECT_MS) * 1000);
	i0 = info(&p->n[0]);
	i1 = info(&p->n[1]);
	assert_int_equal(i0.status, CONN_CONNECTED);
	assert_int_equal(p->n[0].lost + p->n[1].lost, 0);
	/*
	 * Pings went out: a node pings after ping-interval without sending,
	 * and answering the other's pings counts as sending, so one side
	 * may do all the pinging.
	 */
	assert_true(i0.pings_sent + i1.pings_sent >= 3);
	assert_true(i0.pongs_recv + i1.pongs_recv >= 3);
	assert_true(i0.rtt_us > 0);
}

static void test_stop_and_reconnect(void **state)
{
	struct pair_opts po = { .start0 = true, .start1 = true };
	struct pair *p = *state;
	uint64_t t0;

	pair_setup(p, &po);
	assert_true(WAIT_FOR(connected(p), 3000));
	conn_stop(p->n[1].c);
	assert_int_equal(info(&p->n[1]).status, CONN_STANDALONE);
	assert_int_equal(p->n[1].lost, 1);
	assert_int_equal(p->n[1].lost_err, -ESHUTDOWN);
	assert_true(WAIT_FOR(p->n[0].lost == 1, 1000));
	assert_non_null(strstr(p->n[0].lost_reason, "shutdown"));
	assert_int_equal(info(&p->n[0]).status, CONN_CONNECTING);
	/* Node 0 keeps trying, backing off; node 1 comes back. */
	usleep(600 * 1000);
	assert_true(info(&p->n[0]).dials >= 2);
	t0 = mono_ms();
	assert_int_equal(conn_start(p->n[1].c), 0);
	assert_true(WAIT_FOR(p->n[0].established == 2 &&
				     p->n[1].established == 2,
			     3000));
	/* Within the back-off cap and a connect. */
	assert_true(mono_ms() - t0 < RMAX_MS + CONNECT_MS + 500);
	assert_int_equal(info(&p->n[0]).reconnects, 1);
	assert_int_equal(info(&p->n[0]).status, CONN_CONNECTED);
}

/*
 * conn_give_up (a refused handshake): frames queued before it still go out,
 * then the peer is told why and we stop trying (StandAlone, no listener)
 * until conn_start, which joins the ended thread and connects again. A
 * peer's on-purpose stop reaches lost() as -ESHUTDOWN, a refusal does not.
 */
static void test_give_up(void **state)
{
	struct pair_opts po = { .start0 = true, .start1 = true };
	struct pair *p = *state;
	uint8_t *buf = payload_for(1, 4096);
	struct proto_msg m;

	pair_setup(p, &po);
	assert_true(WAIT_FOR(connected(p), 3000));
	data_msg(&m, 1, 4096);
	assert_int_equal(conn_send(p->n[1].c, &m, buf, cb_done, &p->n[1], -1),
			 0);
	assert_int_equal(conn_give_up(p->n[1].c, PROTO_DISC_SPLIT_BRAIN,
				      "split brain"),
			 0);
	assert_true(WAIT_FOR(p->n[0].lost == 1 && p->n[1].lost == 1, 3000));
	assert_int_equal(node_frames(&p->n[0]), 1);
	assert_int_equal(p->n[0].bad, 0);
	assert_int_equal(p->n[1].done_ok, 1);
	assert_non_null(strstr(p->n[0].lost_reason, "split brain"));
	assert_int_equal(p->n[0].lost_err, -ECONNRESET);
	assert_true(WAIT_FOR(info(&p->n[1]).status == CONN_STANDALONE, 1000));
	assert_int_equal(conn_give_up(p->n[1].c, PROTO_DISC_SPLIT_BRAIN, ""),
			 -EALREADY);
	/* Node 1 stays away: node 0's dials are refused. */
	usleep(600 * 1000);
	assert_int_equal(p->n[0].established, 1);
	assert_int_equal(p->n[1].established, 1);
	assert_int_equal(info(&p->n[0]).status, CONN_CONNECTING);
	assert_int_equal(conn_start(p->n[1].c), 0);
	assert_true(WAIT_FOR(p->n[0].established == 2 &&
				     p->n[1].established == 2,
			     RMAX_MS + CONNECT_MS + 3000));
	/* An on-purpose stop is seen as such by the peer. */
	conn_stop(p->n[1].c);
	assert_true(WAIT_FOR(p->n[0].lost == 2, 1000));
	assert_int_equal(p->n[0].lost_err, -ESHUTDOWN);
	free(buf);
}

/* Count lines of @path containing every one of the strings. */
static int count_lines(const char *path, const char *a, const char *b)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, a) && (!b || strstr(line, b)))
			n++;
	fclose(f);
	return n;
}

static void test_wrong_secret(void **state)
{
	struct pair_opts po = { .start0 = true, .start1 = true,
				.secret1 = "not the right secret",
				.rmax_ms = 1000 };
	char path[] = "/tmp/test_conn_log_XXXXXX";
	struct conn_info i0, i1;
	int fd, saved, lines;
	struct pair *p = *state;
	uint32_t b0, b1;
	bool refused;
	uint64_t t0;

	/* Catch the log to count what a refused peer makes us write. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	t0 = mono_ms();
	pair_setup(p, &po);
	/* (assertions only once stderr is back, cmocka reports there) */
	refused = WAIT_FOR(info(&p->n[0]).refusals >= 1 &&
				   info(&p->n[1]).refusals >= 1,
			   1500);
	b0 = info(&p->n[0]).backoff_ms;
	b1 = info(&p->n[1]).backoff_ms;
	usleep((useconds_t)(2000 - (mono_ms() - t0)) * 1000);
	i0 = info(&p->n[0]);
	i1 = info(&p->n[1]);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fd);

	/* The first refusal set the back-off straight to the cap. */
	assert_true(refused);
	assert_int_equal(b0, 1000);
	assert_int_equal(b1, 1000);

	assert_int_equal(p->n[0].established + p->n[1].established, 0);
	assert_int_equal(i0.status, CONN_CONNECTING);
	assert_non_null(strstr(i0.last_error, "wrong shared secret"));
	assert_non_null(strstr(i1.last_error, "wrong shared secret"));
	assert_true(i0.refusals >= 1 && i1.refusals >= 1);
	/*
	 * Retried, but at most a refused TCP connect, the refused handshake
	 * and two more attempts >= 750 ms apart per node (reconnect-min alone
	 * would allow 20 in 2 s).
	 */
	assert_true(i0.dials + i1.dials >= 3);
	assert_true(i0.dials <= 4 && i1.dials <= 4);
	assert_true(i0.accepts <= 5 && i1.accepts <= 5);
	/* conn_ logged the refusal once per node, not once per attempt. */
	lines = count_lines(path, "handshake with", "wrong shared secret");
	assert_true(lines >= 1 && lines <= 2);
	unlink(path);
}

static void test_wrong_resource(void **state)
{
	struct pair_opts po = { .start0 = true, .start1 = true, .name1 = "r1" };
	struct pair *p = *state;

	pair_setup(p, &po);
	assert_true(WAIT_FOR(info(&p->n[0]).refusals >= 1 &&
				     info(&p->n[1]).refusals >= 1,
			     2000));
	usleep(200 * 1000);
	assert_int_equal(p->n[0].established + p->n[1].established, 0);
	for (int i = 0; i < 2; i++)
		assert_non_null(strstr(info(&p->n[i]).last_error,
				       "wrong resource name"));
	assert_int_equal(info(&p->n[1]).status, CONN_CONNECTING);
}

static void test_garbage_then_peer(void **state)
{
	struct pair_opts po = { .start0 = true };
	uint8_t junk[64], got[1024];
	struct proto_msg m;
	char why[256];
	size_t off = 0, flen;
	struct pair *p = *state;
	ssize_t n;
	int fd;

	pair_setup(p, &po);
	memset(junk, 0xa5, sizeof(junk));
	fd = raw_connect(p->port[0]);
	send_all(fd, junk, sizeof(junk));
	/* Node 0 says HELLO, then DISCONNECT(protocol) naming the fault,
	 * then closes. */
	n = read_to_eof(fd, got, sizeof(got));
	close(fd);
	assert_true(n > 0);
	assert_int_equal(proto_decode(got, (size_t)n, NULL, &m, &flen, why,
				      sizeof(why)),
			 0);
	assert_int_equal(m.type, PROTO_HELLO);
	off = flen;
	assert_int_equal(proto_decode(got + off, (size_t)n - off, NULL, &m,
				      &flen, why, sizeof(why)),
			 0);
	assert_int_equal(m.type, PROTO_DISCONNECT);
	assert_int_equal(m.disconnect.reason, PROTO_DISC_PROTOCOL);
	assert_non_null(strstr(m.disconnect.text, "magic"));
	assert_non_null(strstr(info(&p->n[0]).last_error, "magic"));
	/* The listener still serves: the real peer gets in. */
	assert_int_equal(conn_start(p->n[1].c), 0);
	assert_true(WAIT_FOR(connected(p), 3000));
}

static void test_silent_client_dropped(void **state)
{
	/* node 0 does not dial its (absent) peer meanwhile: a refused dial
	 * would replace the last error this test looks at */
	struct pair_opts po = { .start0 = true, .first_dial0_ms = 60000 };
	uint8_t got[1024];
	struct pair *p = *state;
	uint64_t t0, dt;
	ssize_t n;
	int fd;

	pair_setup(p, &po);
	t0 = mono_ms();
	fd = raw_connect(p->port[0]);
	n = read_to_eof(fd, got, sizeof(got));
	dt = mono_ms() - t0;
	close(fd);
	/* Got our HELLO, then the door after the handshake timeout. */
	assert_true(n >= (ssize_t)PROTO_HDR_SIZE);
	assert_true(dt >= CONNECT_MS - 50);
	assert_true(dt < CONNECT_MS + 1000);
	assert_non_null(strstr(info(&p->n[0]).last_error, "timed out"));
	assert_int_equal(conn_start(p->n[1].c), 0);
	assert_true(WAIT_FOR(connected(p), 3000));
}

static void test_crossed_connections(void **state)
{
	/* Both start listening, then both connect out at the same moment. */
	struct pair_opts po = { .start0 = true, .start1 = true,
				.first_dial_ms = 150 };
	struct conn_info i0, i1;
	struct pair *p = *state;

	pair_setup(p, &po);
	for (int round = 0; round < 3; round++) {
		assert_true(WAIT_FOR(connected(p), 3000));
		usleep(400 * 1000);	/* let a losing link show up if any */
		i0 = info(&p->n[0]);
		i1 = info(&p->n[1]);
		assert_true(i0.dials + i1.dials >= 1);
		/* Exactly one survived, the same on both sides... */
		assert_int_equal(p->n[0].established, round + 1);
		assert_int_equal(p->n[1].established, round + 1);
		assert_int_equal(p->n[0].lost, round);
		assert_int_equal(p->n[1].lost, round);
		assert_string_equal(i0.local_addr, i1.peer_addr);
		assert_string_equal(i0.peer_addr, i1.local_addr);
		assert_true(i0.outgoing != i1.outgoing);
		conn_stop(p->n[0].c);
		conn_stop(p->n[1].c);
		assert_int_equal(conn_start(p->n[0].c), 0);
		assert_int_equal(conn_start(p->n[1].c), 0);
	}
}

static int raw_listen(int port)
{
	struct sockaddr_in sa = {
		.sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 4), 0);
	return fd;
}

static int raw_accept(int lfd)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	struct timeval tv = { .tv_sec = 3 };
	int fd;

	assert_int_equal(poll(&pfd, 1, 3000), 1);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* The next frame on @fd (blocking, byte by byte); false at EOF. */
static bool raw_frame(int fd, struct proto_parser *pp, struct proto_msg *m)
{
	for (;;) {
		uint8_t b;
		size_t used;
		int r;

		if (recv(fd, &b, 1, 0) != 1)
			return false;
		r = proto_parser_feed(pp, &b, 1, &used);
		assert_true(r >= 0);
		if (r == PROTO_PARSE_FRAME) {
			*m = *proto_parser_msg(pp);
			return true;
		}
	}
}

static bool quiet_for(int fd, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, ms) == 0;
}

/*
 * Node 0 (the lower id) has its own attempt X to node 1 in its handshake
 * when node 1's attempt Y completes: Y is held, unconfirmed, until X is
 * decided. @x_ok: X completes and wins (Y is closed unconfirmed); else X
 * fails and Y is taken. Node 1 is played by hand on both sockets.
 */
static void crossed_by_hand(struct pair *p, bool x_ok)
{
	struct pair_opts po = { 0 };
	struct proto_parser *pp = proto_parser_new(NULL);
	struct proto_msg m;
	int lfd, x, y;

	pair_setup(p, &po);
	lfd = raw_listen(p->port[1]);
	assert_int_equal(conn_start(p->n[0].c), 0);
	x = raw_accept(lfd);		/* node 0's X, left waiting */
	y = raw_connect(p->port[0]);
	fake_handshake(y, &p->n[1].res, 1, PROTO_HS_INITIATOR);
	/* Y is authenticated, but node 0 does not commit it: no PING. */
	assert_true(quiet_for(y, 100));
	assert_int_equal(p->n[0].established, 0);
	if (x_ok) {
		fake_handshake(x, &p->n[1].res, 1, PROTO_HS_ACCEPTOR);
		/* X is committed: node 0's first frame on it is a PING... */
		assert_true(raw_frame(x, pp, &m));
		assert_int_equal(m.type, PROTO_PING);
		/* ... and Y is closed without a frame. */
		assert_false(raw_frame(y, pp, &m));
		assert_true(WAIT_FOR(p->n[0].established == 1, 1000));
		assert_true(p->n[0].peer.outgoing);
	} else {
		close(x);
		x = -1;
		assert_true(raw_frame(y, pp, &m));
		assert_int_equal(m.type, PROTO_PING);
		assert_true(WAIT_FOR(p->n[0].established == 1, 1000));
		assert_false(p->n[0].peer.outgoing);
	}
	assert_int_equal(info(&p->n[0]).status, CONN_CONNECTED);
	if (x >= 0)
		close(x);
	close(y);
	close(lfd);
	proto_parser_free(pp);
}

static void test_crossed_lower_id_wins(void **state)
{
	crossed_by_hand(*state, true);
}

static void test_crossed_fallback(void **state)
{
	crossed_by_hand(*state, false);
}

static void test_send_not_connected(void **state)
{
	struct pair_opts po = { .start0 = true };
	struct proto_msg m;
	uint8_t *buf = payload_for(1, 4096);
	struct pair *p = *state;
	uint64_t t0;

	pair_setup(p, &po);
	data_msg(&m, 1, 4096);
	t0 = mono_ms();
	/* Connecting (node 1 is down), with and without a timeout. */
	assert_int_equal(conn_send(p->n[0].c, &m, buf, cb_done, &p->n[0], 0),
			 -ENOTCONN);
	assert_int_equal(conn_send(p->n[0].c, &m, buf, cb_done, &p->n[0], -1),
			 -ENOTCONN);
	/* Standalone. */
	assert_int_equal(conn_send(p->n[1].c, &m, buf, cb_done, &p->n[1], 500),
			 -ENOTCONN);
	assert_true(mono_ms() - t0 < 100);
	assert_int_equal(conn_disconnect(p->n[0].c, PROTO_DISC_SHUTDOWN, "x"),
			 -ENOTCONN);
	assert_int_equal(info(&p->n[1]).status, CONN_STANDALONE);
	assert_string_equal(conn_status_name(info(&p->n[0]).status),
			    "Connecting");
	usleep(50 * 1000);
	assert_int_equal(p->n[0].done_ok + p->n[0].done_err, 0);
	free(buf);
}

/* Node 0 and a hand-made node 1 that authenticates, then does nothing. */
static int fake_peer(struct pair *p, const struct pair_opts *po)
{
	int fd;

	pair_setup(p, po);
	fd = raw_connect(p->port[0]);
	fake_handshake(fd, &p->n[1].res, 1, PROTO_HS_INITIATOR);
	assert_true(WAIT_FOR(p->n[0].established == 1, 2000));
	return fd;
}

static void test_half_open_peer(void **state)
{
	struct pair_opts po = { .start0 = true };
	struct pair *p = *state;
	uint64_t t0;
	int fd;

	(void)state;
	fd = fake_peer(p, &po);
	t0 = mono_ms();
	assert_true(WAIT_FOR(p->n[0].lost == 1, 3000));
	/* Dead after ping-interval + timeout without a word, not before. */
	assert_true(mono_ms() - t0 >= PING_MS + CONNECT_MS - 100);
	assert_int_equal(p->n[0].lost_err, -ETIMEDOUT);
	assert_non_null(strstr(p->n[0].lost_reason, "nothing received"));
	close(fd);
}

static void test_queued_sends_fail_on_loss(void **state)
{
	struct pair_opts po = { .start0 = true, .sendq_bytes = 4 * MIB };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	uint8_t *buf = payload_for(7, MIB);
	struct proto_msg m;
	struct conn_info i;
	int fd, ok = 0, r = 0;
	struct pair *p = *state;

	fd = fake_peer(p, &po);
	/* The fake peer reads nothing: socket buffers, then the queue fill. */
	for (int k = 0; k < 200; k++) {
		data_msg(&m, (uint64_t)k + 1, MIB);
		r = conn_send(p->n[0].c, &m, buf, cb_done, &p->n[0], 0);
		if (r)
			break;
		ok++;
	}
	assert_int_equal(r, -EAGAIN);
	i = info(&p->n[0]);
	assert_true(i.sendq_bytes > 0 && i.sendq_bytes <= 4 * MIB + 4096);
	/* The peer resets the connection. */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	assert_true(WAIT_FOR(p->n[0].lost == 1, 3000));
	/* Every send completed before lost(); those not handed over failed. */
	assert_int_equal(p->n[0].done_at_lost, ok);
	assert_int_equal(p->n[0].done_ok + p->n[0].done_err, ok);
	assert_true(p->n[0].done_err >= 1);
	assert_int_equal(info(&p->n[0]).sendq_msgs, 0);
	assert_int_equal(info(&p->n[0]).sendq_bytes, 0);
	data_msg(&m, 999, MIB);
	assert_int_equal(conn_send(p->n[0].c, &m, buf, cb_done, &p->n[0], 0),
			 -ENOTCONN);
	free(buf);
}

static void test_backpressure(void **state)
{
	struct pair_opts po = { .start0 = true, .start1 = true,
				.sendq_bytes = 3 * MIB, .rx_bytes = 2 * MIB };
	uint8_t *buf = payload_for(0, MIB);
	struct proto_msg m;
	struct conn_info i;
	int sent = 0, r = 0;
	struct pair *p = *state;
	uint64_t t0;

	pair_setup(p, &po);
	assert_true(WAIT_FOR(connected(p), 3000));
	/*
	 * Node 1's owner holds every payload it gets: its 2 MiB of receive
	 * buffers run out, it stops reading, the socket buffers fill, then
	 * node 0's send queue. All frames share one payload (pattern of id 0).
	 */
	pthread_mutex_lock(&p->n[1].lock);
	p->n[1].hold = true;
	p->n[1].fixed_pattern = true;
	pthread_mutex_unlock(&p->n[1].lock);
	for (int k = 0; k < 100; k++) {
		data_msg(&m, (uint64_t)sent + 1, MIB);
		r = conn_send(p->n[0].c, &m, buf, cb_done, &p->n[0], 0);
		if (r == -EAGAIN) {
			/* Full now; still full once the thread has pushed
			 * what it could into the socket? */
			usleep(100 * 1000);
			r = conn_send(p->n[0].c, &m, buf, cb_done, &p->n[0], 0);
		}
		if (r)
			break;
		sent++;
	}
	assert_int_equal(r, -EAGAIN);
	assert_true(sent < 100);
	i = info(&p->n[0]);
	assert_true(i.sendq_bytes > 2 * MIB && i.sendq_bytes <= 3 * MIB + 4096);
	assert_true(node_frames(&p->n[1]) <= 2);
	/*
	 * With a timeout, conn_send waits that long for room, no longer.
	 * (The kernel may still find room for a last frame now and then,
	 * growing its buffers: then that one is sent and we try again.)
	 */
	for (int k = 0; k < 10; k++) {
		t0 = mono_ms();
		r = conn_send(p->n[0].c, &m, buf, cb_done, &p->n[0], 200);
		if (r)
			break;
		sent++;
		data_msg(&m, (uint64_t)sent + 1, MIB);
	}
	assert_int_equal(r, -EAGAIN);
	assert_true(mono_ms() - t0 >= 190 && mono_ms() - t0 < 1000);
	/*
	 * A stalled receiver is not a dead peer: both keep the link past the
	 * ping timeout (but within the kernel's TCP_USER_TIMEOUT, which
	 * ends a receive window shut for 3 x (ping + connect)).
	 */
	usleep((PING_MS + CONNECT_MS + 150) * 1000);
	assert_int_equal(p->n[0].lost + p->n[1].lost, 0);
	/* The owner lets go: everything arrives, in order, intact. */
	release_held(&p->n[1]);
	assert_int_equal(conn_send(p->n[0].c, &m, buf, cb_done, &p->n[0], -1),
			 0);
	sent++;
	assert_true(WAIT_FOR(node_frames(&p->n[1]) == sent &&
				     p->n[0].done_ok == sent,
			     5000));
	assert_int_equal(p->n[1].bad, 0);
	assert_int_equal(p->n[1].payload_bytes, (uint64_t)sent * MIB);
	assert_int_equal(p->n[0].done_err, 0);
	free(buf);
}

static void test_disconnect_reason(void **state)
{
	struct pair_opts po = { .start0 = true, .start1 = true };
	struct pair *p = *state;

	pair_setup(p, &po);
	assert_true(WAIT_FOR(connected(p), 3000));
	assert_int_equal(conn_disconnect(p->n[0].c, PROTO_DISC_SPLIT_BRAIN,
					 "generations diverged"),
			 0);
	assert_true(WAIT_FOR(p->n[0].lost == 1 && p->n[1].lost == 1, 2000));
	assert_non_null(strstr(p->n[1].lost_reason, "split brain"));
	assert_non_null(strstr(p->n[1].lost_reason, "generations diverged"));
	assert_non_null(strstr(p->n[0].lost_reason, "disconnected by us"));
	/* Both come back, after the back-off cap. */
	assert_true(WAIT_FOR(connected(p) && p->n[0].established == 2, 3000));
}

/* ---- lazy sends --------------------------------------------------------- */

/*
 * conn.c's loop runs at least this often with nothing to do
 * (CONN_POLL_MAX_MS), and then sends whatever is queued, announced or
 * not. The lazy tests tell a wake-up from this one by timing.
 */
#define IDLE_WAKE_MS CONN_POLL_MAX_MS
/* A frame that must not have waited for the idle wake-up came by this. */
#define LAZY_SOON_MS (IDLE_WAKE_MS - 100)
#define LAZY_N 50
#define LAZY_TRIES 5

/*
 * Node 0 alone dials (one link, no crossed attempt closing later), and
 * ping-interval is a minute: once the PING that commits the link is
 * answered, nothing wakes node 0's thread but the test's own calls and the
 * idle wake-up.
 */
static void lazy_pair(struct pair *p, uint32_t sendq_msgs)
{
	struct pair_opts po = { .start0 = true, .start1 = true,
				.first_dial0_ms = 50, .first_dial_ms = 60000,
				.ping_ms = 60000, .sendq_msgs = sendq_msgs };

	pair_setup(p, &po);
	assert_true(WAIT_FOR(connected(p) && info(&p->n[0]).pongs_recv >= 1,
			     3000));
}

/*
 * Send node 1 one frame normally, which wakes node 0's thread, and wait
 * for it. Returns the time of the call: the thread's next idle wake-up is
 * IDLE_WAKE_MS after it at the earliest, so in between only the test
 * wakes it.
 */
static uint64_t lazy_sync(struct pair *p, uint64_t *id)
{
	int want = node_frames(&p->n[1]) + 1;
	struct proto_msg m;
	uint64_t t0;

	data_msg(&m, (*id)++, 0);
	t0 = mono_ms();
	assert_int_equal(conn_send(p->n[0].c, &m, NULL, NULL, NULL, -1), 0);
	assert_true(WAIT_FOR(node_frames(&p->n[1]) == want, 1000));
	return t0;
}

static void lazy_burst(struct pair *p, uint64_t *id, int n)
{
	struct proto_msg m;

	for (int i = 0; i < n; i++) {
		data_msg(&m, (*id)++, 0);
		assert_int_equal(conn_send_lazy(p->n[0].c, &m), 0);
	}
}

/* Wait (up to 2 s) until node 1 has @want frames; when it had them. */
static uint64_t lazy_arrived(struct pair *p, int want)
{
	assert_true(WAIT_FOR(node_frames(&p->n[1]) == want, 2000));
	return mono_ms();
}

static void lazy_check_end(struct pair *p)
{
	assert_int_equal(p->n[1].bad, 0);	/* ids in order */
	assert_true(WAIT_FOR(info(&p->n[0]).sendq_msgs == 0, 1000));
	assert_int_equal(p->n[0].lost + p->n[1].lost, 0);
}

/*
 * A burst of lazy frames stays queued (the thread was not woken) until
 * conn_push, which sends it all, in order, long before the idle wake-up
 * would have.
 */
static void test_lazy_burst_push(void **state)
{
	struct pair *p = *state;
	uint64_t id = 1, t0 = 0, t_obs = 0;
	int before = 0, early = 0;
	bool clean = false;

	lazy_pair(p, 0);
	for (int k = 0; k < LAZY_TRIES && !clean; k++) {
		t0 = lazy_sync(p, &id);
		before = node_frames(&p->n[1]);
		lazy_burst(p, &id, LAZY_N);
		usleep(200 * 1000);
		t_obs = mono_ms();
		early = node_frames(&p->n[1]) - before;
		/*
		 * A test thread descheduled for long may have let the idle
		 * wake-up come: then what arrived proves nothing. Again.
		 */
		clean = t_obs - t0 <= IDLE_WAKE_MS - 300;
		if (!clean) {
			conn_push(p->n[0].c);
			lazy_arrived(p, before + LAZY_N);
		}
	}
	assert_true(clean);
	assert_int_equal(early, 0);
	conn_push(p->n[0].c);
	assert_in_range(lazy_arrived(p, before + LAZY_N) - t0, 0, LAZY_SOON_MS);
	lazy_check_end(p);
}

/* A normal conn_send after lazy ones wakes the thread for them all. */
static void test_lazy_then_send(void **state)
{
	struct pair *p = *state;
	uint64_t id = 1, t0 = 0, t_all = 0;
	struct proto_msg m;
	int before = 0;
	bool clean = false;

	lazy_pair(p, 0);
	for (int k = 0; k < LAZY_TRIES && !clean; k++) {
		t0 = lazy_sync(p, &id);
		before = node_frames(&p->n[1]);
		lazy_burst(p, &id, LAZY_N);
		data_msg(&m, id++, 0);
		clean = mono_ms() - t0 <= IDLE_WAKE_MS - 300;
		assert_int_equal(conn_send(p->n[0].c, &m, NULL, cb_done,
					   &p->n[0], -1),
				 0);
		t_all = lazy_arrived(p, before + LAZY_N + 1);
	}
	assert_true(clean);
	assert_in_range(t_all - t0, 0, LAZY_SOON_MS);
	assert_true(WAIT_FOR(p->n[0].done_ok >= 1, 1000));
	assert_int_equal(p->n[0].done_err, 0);
	lazy_check_end(p);
}

struct lazy_writer {
	struct conn *c;
	uint64_t id;
	int n, sent, err;
	atomic_bool finished;
};

static void *lazy_writer_main(void *arg)
{
	struct lazy_writer *w = arg;
	struct proto_msg m;

	for (; w->sent < w->n; w->sent++) {
		data_msg(&m, w->id + (uint64_t)w->sent, 0);
		w->err = conn_send_lazy(w->c, &m);
		if (w->err)
			break;
	}
	w->finished = true;
	return NULL;
}

/*
 * A lazy writer that fills the send queue wakes the thread itself before
 * it waits for room: a burst of many queues' worth goes through without
 * conn_push, where waiting for the idle wake-up each time would take
 * seconds.
 */
static void test_lazy_full_queue(void **state)
{
	enum { SENDQ = 8, N = 100 };
	struct lazy_writer w = { .id = 1, .n = N };
	struct pair *p = *state;
	pthread_t th;
	bool finished;

	lazy_pair(p, SENDQ);
	w.c = p->n[0].c;
	assert_int_equal(pthread_create(&th, NULL, lazy_writer_main, &w), 0);
	finished = WAIT_FOR(w.finished, 1500);
	if (!finished)
		conn_stop(p->n[0].c);	/* a stuck writer gets -ENOTCONN */
	pthread_join(th, NULL);
	assert_true(finished);
	assert_int_equal(w.err, 0);
	assert_int_equal(w.sent, N);
	/* The last queueful may wait to be announced. */
	conn_push(p->n[0].c);
	lazy_arrived(p, N);
	lazy_check_end(p);
}

/*
 * Frames the connection thread queues lazily itself (a frame callback that
 * answers with conn_send_lazy and pushes, as apply_frame() does) go out
 * before that thread sleeps: 10 frames, each answered by node 1 before
 * the next is sent, all within less than one of node 1's idle wake-ups.
 * An answer left for the next wake-up would cost up to IDLE_WAKE_MS each.
 */
static void test_lazy_from_own_thread(void **state)
{
	enum { N = 10 };
	struct pair *p = *state;
	uint64_t id = 1, t0;
	struct proto_msg m;

	lazy_pair(p, 0);
	pthread_mutex_lock(&p->n[1].lock);
	p->n[1].echo_lazy = true;
	pthread_mutex_unlock(&p->n[1].lock);
	t0 = mono_ms();
	for (int i = 0; i < N; i++) {
		data_msg(&m, id++, 0);
		assert_int_equal(conn_send(p->n[0].c, &m, NULL, NULL, NULL, -1),
				 0);
		/* node 0 counts the answers (ids 1.. in order) */
		assert_true(WAIT_FOR(node_frames(&p->n[0]) == i + 1, 3000));
	}
	assert_in_range(mono_ms() - t0, 0, LAZY_SOON_MS);
	assert_int_equal(p->n[0].bad + p->n[1].bad, 0);
	assert_int_equal(p->n[0].lost + p->n[1].lost, 0);
}

/* Every test gets a zeroed pair; whatever it left running goes here,
 * also when an assertion ended the test early. */
static int pair_alloc(void **state)
{
	*state = calloc(1, sizeof(struct pair));
	return *state ? 0 : -1;
}

static int pair_free(void **state)
{
	pair_destroy(*state);
	free(*state);
	return 0;
}

#define T(f) cmocka_unit_test_setup_teardown(f, pair_alloc, pair_free)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr),
		cmocka_unit_test(test_pool),
		cmocka_unit_test(test_xport_tcp),
		cmocka_unit_test(test_xport_tcp_bufs),
		cmocka_unit_test(test_create_rejects),
		T(test_connect_auth),
		T(test_frames_both_ways),
		T(test_ping_keeps_idle_link),
		T(test_stop_and_reconnect),
		T(test_give_up),
		T(test_wrong_secret),
		T(test_wrong_resource),
		T(test_garbage_then_peer),
		T(test_silent_client_dropped),
		T(test_crossed_connections),
		T(test_crossed_lower_id_wins),
		T(test_crossed_fallback),
		T(test_send_not_connected),
		T(test_half_open_peer),
		T(test_queued_sends_fail_on_loss),
		T(test_backpressure),
		T(test_disconnect_reason),
		T(test_lazy_burst_push),
		T(test_lazy_then_send),
		T(test_lazy_full_queue),
		T(test_lazy_from_own_thread),
	};

	log_level = LOG_LVL_NOTICE;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
