// SPDX-License-Identifier: MIT
/*
 * The RDMA transport (xport_rdma_ops): one reliable-connected queue pair
 * per endpoint, set up with librdmacm (RDMA_PS_TCP port space, so the
 * configured "host:port" means the same as for TCP).
 *
 * Data movement. Every message is one SEND carrying a 24-byte transport
 * header and the frame's head (header + fixed part, at most 184 bytes:
 * inline when the device allows). A payload goes first, by RDMA WRITE,
 * into a ring the receiver registered for its peer (RDMA_RING_BYTES,
 * advertised in the connection's private data); the SEND that follows on
 * the same queue pair says where it is. RC ordering guarantees that the
 * written bytes are in place when the SEND's completion is seen.
 *
 * Copies, and why: callers' payloads (ublk request buffers, resync
 * buffers) are not registered memory, and registering them per I/O costs
 * more than copying. So the sender copies a payload into its own
 * registered bounce ring (same size and offsets as the peer's ring) and
 * WRITEs from there: one copy. Received payloads must end in xport_pool
 * buffers, which the pool allocates and frees by itself (an MR cached on
 * a freed and reused address would point at stale pages), so the
 * receiver copies from its registered ring into the pool buffer (done by
 * proto_parser, which checks the digest on the way): one copy. Every
 * memory region is registered once, when the queue pair is made; nothing
 * is registered per I/O.
 *
 * Flow control, so that no SEND ever finds the peer without a posted
 * receive, and no WRITE overruns its ring:
 *  - receive credits: each side posts RDMA_RX_BUFS receive buffers and
 *    starts with as many credits as the peer posted. A SEND costs one.
 *    The receiver counts the buffers it re-posts and reports them in the
 *    header of its next SEND (piggy-backed), or in a credit-only message
 *    once half of them are owed. A frame needs two credits, a credit-only
 *    message one: the last credit is kept for reporting, so two sides
 *    that each wait for credits can always tell each other;
 *  - ring space: positions are byte counts since the connection was made
 *    (64-bit, never wrap). The sender places a payload at its next
 *    position, skipping to the start of the ring when it would not fit
 *    before the end; the receiver computes the same place and refuses any
 *    other. Every header carries how far its sender has consumed the ring
 *    it receives into; the sender may use the ring up to that point plus
 *    its size (and only space whose own SEND has completed locally, which
 *    frees the bounce copy). A credit-only message also goes out once a
 *    quarter of the ring is consumed and not reported.
 * While the owner holds every pool buffer, received frames wait in the
 * ring with their receive buffers not re-posted: the peer runs out of
 * credits or ring space and stops, as TCP's window would make it.
 *
 * Events: the endpoint's connection-manager channel, its completion
 * channel and the device's asynchronous event descriptor are gathered in
 * one epoll descriptor, which is what poll_fds() hands out (the listener
 * hands out its CM channel). io() asks that descriptor which of the three
 * has news (epoll_wait, no timeout), drains those without blocking, and
 * polls the CQ in batches of RDMA_CQ_BATCH, re-armed as soon as an event
 * was read; no thread of its own, nothing busy-waits. Every message the
 * credits allow goes out in one chained ibv_post_send(). Failures end like TCP's: a
 * DISCONNECTED event is -ECONNRESET, a failed work request -ECONNRESET or
 * -ETIMEDOUT (retries exhausted), a port going down or a QP in error
 * -ENETDOWN / -EIO, a malformed header -EBADMSG.
 *
 * Timeouts: user_timeout_ms becomes the ACK timeout (x 7 retries); the
 * keepalive and socket-buffer options have no RDMA meaning and are
 * ignored (conn_'s pings detect a silent peer).
 *
 * This file holds the connection management: endpoints, queue pairs and
 * registered memory, listen, connect and accept, the connection
 * manager's events, teardown, and the ops table. The data path (sending,
 * credits, completions, delivery, io()) is in xport_rdma_io.c; what the
 * two share is in xport_rdma_int.h.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log.h"
#include "xport_rdma_int.h"

static void cm_info_encode(const struct rdma_cm_info *ci,
			   struct rdma_wire_cm *w)
{
	memset(w, 0, sizeof(*w));
	w->magic = htobe32(RDMA_WIRE_MAGIC);
	w->version = RDMA_WIRE_VERSION;
	w->ring_addr = htobe64(ci->ring_addr);
	w->ring_rkey = htobe32(ci->ring_rkey);
	w->ring_bytes = htobe32(ci->ring_bytes);
	w->rx_bufs = htobe32(ci->rx_bufs);
}

/* 0, or -EPROTO with @why saying what is wrong. */
static int cm_info_decode(const void *data, size_t len,
			  struct rdma_cm_info *ci, char *why, size_t why_len)
{
	struct rdma_wire_cm w;

	if (!data || len < sizeof(w)) {
		snprintf(why, why_len,
			 "connection private data: %zu bytes, not a duet peer",
			 data ? len : 0);
		return -EPROTO;
	}
	memcpy(&w, data, sizeof(w));
	if (be32toh(w.magic) != RDMA_WIRE_MAGIC ||
	    w.version != RDMA_WIRE_VERSION) {
		snprintf(why, why_len,
			 "connection private data: magic 0x%08x version %u, not a duet RDMA peer of this version",
			 be32toh(w.magic), w.version);
		return -EPROTO;
	}
	ci->ring_addr = be64toh(w.ring_addr);
	ci->ring_rkey = be32toh(w.ring_rkey);
	ci->ring_bytes = be32toh(w.ring_bytes);
	ci->rx_bufs = be32toh(w.rx_bufs);
	if (ci->ring_bytes < RDMA_RING_MIN || ci->ring_bytes > RDMA_RING_MAX ||
	    ci->rx_bufs < 4 || ci->rx_bufs > 65535) {
		snprintf(why, why_len,
			 "connection private data: ring of %u bytes, %u receive buffers: out of range",
			 ci->ring_bytes, ci->rx_bufs);
		return -EPROTO;
	}
	return 0;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK))
		return -errno;
	return 0;
}

static int ep_watch(struct rdma_ep *r, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	if (set_nonblock(fd) ||
	    (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) && errno != EEXIST))
		return -errno;
	return 0;
}

static void rdma_names(struct rdma_ep *r)
{
	struct sockaddr *sa;

	sa = rdma_get_local_addr(r->id);
	if (sa)
		xport_fmt_sockaddr(sa, r->local, sizeof(r->local));
	sa = rdma_get_peer_addr(r->id);
	if (sa && sa->sa_family)
		xport_fmt_sockaddr(sa, r->peer_name, sizeof(r->peer_name));
}

/* A channel and an id: what every endpoint starts with. */
static struct rdma_ep *rdma_ep_new(const struct xport_opts *o, char *err,
				   size_t err_len, int *ret)
{
	struct rdma_ep *r = calloc(1, sizeof(*r));

	*ret = -ENOMEM;
	if (!r) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	r->base.ops = &xport_rdma_ops;
	r->epfd = -1;
	if (o)
		r->opts = *o;
	r->ech = rdma_create_event_channel();
	if (!r->ech) {
		*ret = -errno;
		if (errno == ENODEV || errno == ENOENT)
			snprintf(err, err_len,
				 "transport rdma: no RDMA device on this machine (%s); load a driver (e.g. `rdma link add rxe0 type rxe netdev eth0`) or use `transport tcp;`",
				 strerror(errno));
		else
			snprintf(err, err_len,
				 "transport rdma: cannot open the RDMA connection manager: %s",
				 strerror(errno));
		free(r);
		return NULL;
	}
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epfd < 0 || set_nonblock(r->ech->fd)) {
		*ret = -errno;
		snprintf(err, err_len, "transport rdma: %s", strerror(errno));
		goto out_free;
	}
	if (rdma_create_id(r->ech, &r->id, r, RDMA_PS_TCP)) {
		*ret = -errno;
		snprintf(err, err_len, "transport rdma: rdma_create_id: %s",
			 strerror(errno));
		goto out_free;
	}
	*ret = 0;
	return r;

out_free:
	if (r->epfd >= 0)
		close(r->epfd);
	rdma_destroy_event_channel(r->ech);
	free(r);
	return NULL;
}

static struct ibv_mr *reg(struct rdma_ep *r, void **mem, size_t len,
			  int access)
{
	if (posix_memalign(mem, 4096, len)) {
		*mem = NULL;
		errno = ENOMEM;
		return NULL;
	}
	memset(*mem, 0, len);
	return ibv_reg_mr(r->pd, *mem, len, access);
}

/* ACK timeout exponent: 4.096 us << t per try, RDMA_RETRIES + 1 tries. */
static uint8_t ack_timeout(uint32_t user_timeout_ms)
{
	uint64_t per_try_us = (uint64_t)user_timeout_ms * 1000 /
			      (RDMA_RETRIES + 1);
	uint8_t t = 14;		/* 67 ms: soft RDMA under load needs slack */

	while (t < 24 && (4096ull << t) / 1000 < per_try_us)
		t++;
	return t;
}

/*
 * Protection domain, CQ, QP and the registered memory; every receive
 * posted. Before connect or accept: the peer's first SEND must find one.
 */
static int setup_qp(struct rdma_ep *r)
{
	struct ibv_context *verbs = r->id->verbs;
	struct ibv_qp_init_attr qa = {
		.qp_context = r,
		.qp_type = IBV_QPT_RC,
		.cap = {
			.max_send_wr = RDMA_SQ_DEPTH,
			.max_recv_wr = RDMA_RX_BUFS,
			.max_send_sge = 1,
			.max_recv_sge = 1,
			.max_inline_data = RDMA_HDR_SIZE + XPORT_HEAD_MAX,
		},
	};
	const char *what;
	void *mem;
	int e;

	if (!verbs) {
		xport_set_error(&r->base, "no RDMA device for this address");
		return -ENODEV;
	}
	what = "protection domain";
	r->pd = ibv_alloc_pd(verbs);
	if (!r->pd)
		goto out_err;
	what = "completion channel";
	r->cch = ibv_create_comp_channel(verbs);
	if (!r->cch)
		goto out_err;
	what = "completion queue";
	r->cq = ibv_create_cq(verbs, RDMA_CQ_DEPTH, r, r->cch, 0);
	if (!r->cq)
		goto out_err;
	e = ibv_req_notify_cq(r->cq, 0);
	if (e) {
		errno = e;
		goto out_err;
	}
	qa.send_cq = qa.recv_cq = r->cq;
	what = "queue pair";
	if (rdma_create_qp(r->id, r->pd, &qa)) {
		/* Some devices take no inline data: copy from registered
		 * slots instead. */
		qa.cap.max_inline_data = 0;
		if (rdma_create_qp(r->id, r->pd, &qa))
			goto out_err;
	}
	r->qp_made = true;
	r->max_inline = qa.cap.max_inline_data;
	what = "control buffers";
	r->ctl_mr = reg(r, &mem, (size_t)(RDMA_RX_BUFS + RDMA_TX_SLOTS) *
					 RDMA_SLOT, IBV_ACCESS_LOCAL_WRITE);
	r->ctl = mem;
	if (!r->ctl_mr)
		goto out_err;
	what = "receive ring";
	r->rring_mr = reg(r, &mem, RDMA_RING_BYTES,
			  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	r->rring = mem;
	if (!r->rring_mr)
		goto out_err;
	for (uint32_t i = 0; i < RDMA_RX_BUFS; i++) {
		e = xport_rdma_post_recv(r, i);
		if (e)
			return e;
	}
	if (ep_watch(r, r->cch->fd) || ep_watch(r, verbs->async_fd)) {
		what = "event descriptors";
		goto out_err;
	}
	if (r->opts.user_timeout_ms) {
		uint8_t t = ack_timeout(r->opts.user_timeout_ms);

		if (rdma_set_option(r->id, RDMA_OPTION_ID,
				    RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)))
			log_dbg(LOG_CAT_NET,
				"rdma: cannot set the ACK timeout: %s",
				strerror(errno));
	}
	xport_rdma_all_add(r);
	return 0;

out_err:
	e = errno ? -errno : -ENOMEM;
	xport_set_error(&r->base, "rdma %s on %s: %s (memory locking limit?)",
			what, ibv_get_device_name(verbs->device),
			strerror(-e));
	return e;
}

static void my_cm_info(const struct rdma_ep *r, struct rdma_wire_cm *w)
{
	struct rdma_cm_info ci = {
		.ring_addr = (uintptr_t)r->rring,
		.ring_rkey = r->rring_mr->rkey,
		.ring_bytes = RDMA_RING_BYTES,
		.rx_bufs = RDMA_RX_BUFS,
	};

	cm_info_encode(&ci, w);
}

static void conn_param(struct rdma_conn_param *p, const struct rdma_wire_cm *w)
{
	memset(p, 0, sizeof(*p));
	p->private_data = w;
	p->private_data_len = sizeof(*w);
	p->retry_count = RDMA_RETRIES;
	p->rnr_retry_count = RDMA_RNR_RETRY_INF;
}

/* The peer's parameters are known: the bounce ring, the credits. */
static int peer_known(struct rdma_ep *r, const struct rdma_cm_info *ci)
{
	void *mem;

	r->peer = *ci;
	r->credits = ci->rx_bufs;
	r->tring_mr = reg(r, &mem, ci->ring_bytes, IBV_ACCESS_LOCAL_WRITE);
	r->tring = mem;
	if (!r->tring_mr) {
		xport_set_error(&r->base, "rdma send ring: %s",
				strerror(errno));
		return -ENOMEM;
	}
	r->parser = proto_parser_new(NULL);
	if (!r->parser) {
		xport_set_error(&r->base, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int rdma_listen_ep(const char *addr, const struct xport_opts *o,
			  struct xport_ep **out, char *err, size_t err_len)
{
	struct addrinfo *ai;
	struct rdma_ep *r;
	int ret;

	ret = xport_resolve(addr, true, &ai, err, err_len);
	if (ret)
		return ret;
	r = rdma_ep_new(o, err, err_len, &ret);
	if (!r)
		goto out_free_ai;
	r->state = RS_LISTEN;
	if (rdma_bind_addr(r->id, ai->ai_addr) ||
	    rdma_listen(r->id, RDMA_BACKLOG)) {
		ret = -errno;
		snprintf(err, err_len,
			 "cannot listen for RDMA on %s: %s%s", addr,
			 strerror(errno),
			 errno == ENODEV || errno == EADDRNOTAVAIL ?
				 " (no RDMA device has this address)" :
				 "");
		xport_rdma_ops.close(&r->base);
		goto out_free_ai;
	}
	rdma_names(r);
	*out = &r->base;
out_free_ai:
	freeaddrinfo(ai);
	return ret;
}

static int rdma_connect_ep(const char *addr, const struct xport_opts *o,
			   struct xport_ep **out, char *err, size_t err_len)
{
	struct addrinfo *ai;
	struct rdma_ep *r;
	int ret;

	ret = xport_resolve(addr, false, &ai, err, err_len);
	if (ret)
		return ret;
	r = rdma_ep_new(o, err, err_len, &ret);
	if (!r)
		goto out_free_ai;
	snprintf(r->peer_name, sizeof(r->peer_name), "%s", addr);
	r->state = RS_ADDR;
	if (ep_watch(r, r->ech->fd) ||
	    rdma_resolve_addr(r->id, NULL, ai->ai_addr, RDMA_RESOLVE_MS)) {
		ret = -errno;
		snprintf(err, err_len, "cannot connect to %s over RDMA: %s",
			 addr, strerror(errno));
		xport_rdma_ops.close(&r->base);
		goto out_free_ai;
	}
	*out = &r->base;
out_free_ai:
	freeaddrinfo(ai);
	return ret;
}

static void rdma_close(struct xport_ep *ep);

/* A connect request on the listener: a new endpoint, accepted. */
static int accept_one(struct rdma_ep *l, struct rdma_cm_id *id,
		      const struct rdma_cm_info *ci, struct xport_ep **out)
{
	struct rdma_conn_param p;
	struct rdma_wire_cm w;
	struct rdma_ep *r;
	int ret = -ENOMEM;

	r = calloc(1, sizeof(*r));
	if (!r)
		goto out_reject;
	r->base.ops = &xport_rdma_ops;
	r->opts = l->opts;
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	r->ech = rdma_create_event_channel();
	if (r->epfd < 0 || !r->ech || rdma_migrate_id(id, r->ech)) {
		ret = -errno;
		xport_set_error(&l->base, "accept on %s: %s", l->local,
				strerror(errno));
		goto out_free;
	}
	id->context = r;
	r->id = id;
	r->state = RS_ACCEPT;
	ret = ep_watch(r, r->ech->fd);
	if (!ret)
		ret = setup_qp(r);
	if (!ret)
		ret = peer_known(r, ci);
	if (ret) {
		xport_set_error(&l->base, "accept on %s: %s", l->local,
				r->base.err);
		rdma_reject(id, NULL, 0);
		rdma_close(&r->base);
		return ret;
	}
	rdma_names(r);
	my_cm_info(r, &w);
	conn_param(&p, &w);
	if (rdma_accept(id, &p)) {
		ret = -errno;
		xport_set_error(&l->base, "rdma_accept from %s: %s",
				r->peer_name, strerror(errno));
		rdma_close(&r->base);
		return ret;
	}
	*out = &r->base;
	return 0;

out_free:
	if (r->ech)
		rdma_destroy_event_channel(r->ech);
	if (r->epfd >= 0)
		close(r->epfd);
	free(r);
out_reject:
	rdma_reject(id, NULL, 0);
	rdma_destroy_id(id);
	return ret;
}

static int rdma_accept_ep(struct xport_ep *lep, struct xport_ep **out)
{
	struct rdma_ep *l = to_rdma(lep);
	struct rdma_cm_event *ev;
	struct rdma_cm_info ci;
	struct rdma_cm_id *id;
	char why[160];
	int ret;

	for (;;) {
		if (rdma_get_cm_event(l->ech, &ev)) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				return -EAGAIN;
			xport_set_error(lep, "accept on %s: %s", l->local,
					strerror(errno));
			return -errno;
		}
		if (ev->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
			log_dbg(LOG_CAT_NET, "rdma: listener %s: %s", l->local,
				rdma_event_str(ev->event));
			rdma_ack_cm_event(ev);
			continue;
		}
		id = ev->id;
		ret = cm_info_decode(ev->param.conn.private_data,
				     ev->param.conn.private_data_len, &ci, why,
				     sizeof(why));
		/* The event must be acked before the id can move. */
		rdma_ack_cm_event(ev);
		if (ret) {
			log_info("rdma: refusing a connection on %s: %s",
				 l->local, why);
			rdma_reject(id, NULL, 0);
			rdma_destroy_id(id);
			continue;
		}
		return accept_one(l, id, &ci, out);
	}
}

static int cm_event_error(struct rdma_ep *r, const struct rdma_cm_event *ev)
{
	int err;

	switch (ev->event) {
	case RDMA_CM_EVENT_REJECTED:
		err = -ECONNREFUSED;
		break;
	case RDMA_CM_EVENT_DISCONNECTED:
		xport_set_error(&r->base, "%s closed the connection",
				r->peer_name);
		return -ECONNRESET;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		err = -ENODEV;
		break;
	case RDMA_CM_EVENT_ADDR_CHANGE:
		err = -ENETRESET;
		break;
	default:
		err = ev->status < 0 ? ev->status : -EHOSTUNREACH;
		break;
	}
	xport_set_error(&r->base, "%s %s: %s (%s)",
			r->state == RS_UP ? "connection to" :
					    "cannot connect to",
			r->peer_name, rdma_event_str(ev->event),
			strerror(-err));
	return err;
}

/* Connection manager events of a data endpoint. */
int xport_rdma_drain_cm(struct rdma_ep *r)
{
	struct rdma_cm_event *ev;
	struct rdma_conn_param p;
	struct rdma_wire_cm w;
	struct rdma_cm_info ci;
	char why[160];
	int ret;

	while (!rdma_get_cm_event(r->ech, &ev)) {
		ret = 0;
		log_dbg(LOG_CAT_NET, "rdma: %s: %s (status %d) in state %d",
			r->peer_name, rdma_event_str(ev->event), ev->status,
			(int)r->state);
		switch (ev->event) {
		case RDMA_CM_EVENT_ADDR_RESOLVED:
			if (rdma_resolve_route(r->id, RDMA_RESOLVE_MS))
				ret = -errno;
			r->state = RS_ROUTE;
			break;
		case RDMA_CM_EVENT_ROUTE_RESOLVED:
			ret = setup_qp(r);
			if (ret)
				break;
			my_cm_info(r, &w);
			conn_param(&p, &w);
			if (rdma_connect(r->id, &p))
				ret = -errno;
			r->state = RS_CONNECT;
			break;
		case RDMA_CM_EVENT_ESTABLISHED:
			if (r->state == RS_CONNECT) {
				ret = cm_info_decode(
					ev->param.conn.private_data,
					ev->param.conn.private_data_len, &ci,
					why, sizeof(why));
				if (ret) {
					xport_set_error(&r->base, "%s: %s",
							r->peer_name, why);
					break;
				}
				ret = peer_known(r, &ci);
			}
			r->state = RS_UP;
			rdma_names(r);
			break;
		case RDMA_CM_EVENT_TIMEWAIT_EXIT:
		case RDMA_CM_EVENT_CONNECT_RESPONSE:
			break;
		default:
			ret = cm_event_error(r, ev);
			break;
		}
		rdma_ack_cm_event(ev);
		if (ret) {
			if (!r->base.err[0])
				xport_set_error(&r->base, "%s: %s",
						r->peer_name, strerror(-ret));
			return ret;
		}
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		xport_set_error(&r->base, "connection manager: %s",
				strerror(errno));
		return -errno;
	}
	return 0;
}

static int rdma_poll_fds(struct xport_ep *ep, unsigned int what,
			 struct pollfd *fds, int max)
{
	struct rdma_ep *r = to_rdma(ep);

	(void)what;
	if (max < 1 || r->broken)
		return 0;
	fds[0].fd = r->state == RS_LISTEN ? r->ech->fd : r->epfd;
	fds[0].events = POLLIN;
	fds[0].revents = 0;
	return 1;
}

static void rdma_set_limits(struct xport_ep *ep, const struct proto_limits *lim)
{
	struct rdma_ep *r = to_rdma(ep);
	static const struct proto_limits none;

	if (r->parser)
		proto_parser_set_limits(r->parser, lim ? lim : &none);
}

static void rdma_stats(const struct xport_ep *ep, struct xport_stats *st)
{
	const struct rdma_ep *r = to_rdma(ep);

	*st = r->st;
	st->connecting = r->state != RS_UP && r->state != RS_LISTEN;
}

static const char *rdma_local_addr(const struct xport_ep *ep)
{
	return to_rdma(ep)->local;
}

static const char *rdma_peer_addr(const struct xport_ep *ep)
{
	return to_rdma(ep)->peer_name;
}

static void rdma_close(struct xport_ep *ep)
{
	struct rdma_ep *r = to_rdma(ep);

	if (r->state != RS_LISTEN)
		log_dbg(LOG_CAT_NET, "rdma: closing %s: state %d credits %u owed %u sends %llu/%llu wrs %u queued %s rxq %u%s ring tx %llu freed %llu done %llu rx %llu consumed %llu reported %llu",
			 r->peer_name, (int)r->state, r->credits, r->owed,
			 (unsigned long long)r->tx_cseq,
			 (unsigned long long)r->tx_seq, r->sq_wrs,
			 r->sq_head ? "yes" : "no", r->rxq_n,
			 r->need_buf ? " (waiting for a buffer)" : "",
			 (unsigned long long)r->tx_next,
			 (unsigned long long)r->tx_freed,
			 (unsigned long long)r->tx_done,
			 (unsigned long long)r->rx_next,
			 (unsigned long long)r->rx_consumed,
			 (unsigned long long)r->rx_reported);
	r->broken = true;
	xport_rdma_all_del(r);
	if (r->state == RS_UP || r->state == RS_ACCEPT ||
	    r->state == RS_CONNECT)
		rdma_disconnect(r->id);
	/* Payloads were copied when posted: nothing of the callers' is
	 * referenced by the device any more. */
	xport_rdma_fail_queue(r);
	if (r->qp_made)
		rdma_destroy_qp(r->id);
	if (r->cq) {
		if (r->cq_unacked)
			ibv_ack_cq_events(r->cq, r->cq_unacked);
		ibv_destroy_cq(r->cq);
	}
	if (r->cch)
		ibv_destroy_comp_channel(r->cch);
	if (r->ctl_mr)
		ibv_dereg_mr(r->ctl_mr);
	if (r->rring_mr)
		ibv_dereg_mr(r->rring_mr);
	if (r->tring_mr)
		ibv_dereg_mr(r->tring_mr);
	free(r->ctl);
	free(r->rring);
	free(r->tring);
	if (r->pd)
		ibv_dealloc_pd(r->pd);
	if (r->id)
		rdma_destroy_id(r->id);
	if (r->ech)
		rdma_destroy_event_channel(r->ech);
	if (r->epfd >= 0)
		close(r->epfd);
	proto_parser_free(r->parser);
	free(r);
}

const struct xport_ops xport_rdma_ops = {
	.name = "rdma",
	.listen = rdma_listen_ep,
	.accept = rdma_accept_ep,
	.connect = rdma_connect_ep,
	.send = xport_rdma_send,
	.io = xport_rdma_io,
	.poll_fds = rdma_poll_fds,
	.set_limits = rdma_set_limits,
	.stats = rdma_stats,
	.local_addr = rdma_local_addr,
	.peer_addr = rdma_peer_addr,
	.close = rdma_close,
	.mem_register = NULL,
};
