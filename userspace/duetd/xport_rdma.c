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
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "log.h"
#include "xport_rdma.h"

#define RDMA_RX_BUFS 128		/* receive buffers posted = peer's credits */
#define RDMA_TX_SLOTS 128		/* SENDs in flight */
#define RDMA_SLOT 256			/* bytes of one control buffer */
#define RDMA_SQ_DEPTH (2 * RDMA_TX_SLOTS) /* a WRITE + a SEND per frame */
#define RDMA_CQ_DEPTH (RDMA_SQ_DEPTH + RDMA_RX_BUFS)
#define RDMA_RING_BYTES (4u << 20)	/* payload ring, each direction */
#define RDMA_RING_MIN (4u * PROTO_PAYLOAD_MAX) /* see ring_place */
#define RDMA_RING_MAX (16u << 20)	/* what a peer may make us pin */
#define RDMA_CREDIT_REPORT (RDMA_RX_BUFS / 2)
#define RDMA_RING_REPORT (RDMA_RING_BYTES / 4)
#define RDMA_CQ_BATCH 32
#define RDMA_CQ_ACK_BATCH 64		/* completion events acked at once */
#define RDMA_RESOLVE_MS 2000		/* address and route resolution */
#define RDMA_BACKLOG 16
#define RDMA_RETRIES 7			/* transport retries (3 bits) */
#define RDMA_RNR_RETRY_INF 7		/* never happens: credits */

/*
 * Wire formats private to this transport (docs/protocol.md, "RDMA
 * transport"). Big-endian like the rest of the protocol.
 */
#define RDMA_WIRE_MAGIC 0x44524d41u	/* "DRMA" */
#define RDMA_WIRE_VERSION 1

enum rdma_kind {
	RDMA_K_FRAME = 1,	/* header + frame head; payload in the ring */
	RDMA_K_CREDIT = 2,	/* header only: credits and ring report */
};

/* Private data of the connect request and of the accept. */
struct rdma_wire_cm {
	uint32_t magic;		/* RDMA_WIRE_MAGIC */
	uint8_t version;	/* RDMA_WIRE_VERSION */
	uint8_t reserved[3];	/* zero */
	uint64_t ring_addr;	/* where the sender's ring is, virtual address */
	uint32_t ring_rkey;	/* its remote key */
	uint32_t ring_bytes;	/* its size, bytes */
	uint32_t rx_bufs;	/* receive buffers posted: initial credits */
	uint32_t reserved2;	/* zero */
} __attribute__((packed));
_Static_assert(sizeof(struct rdma_wire_cm) == 32, "rdma_wire_cm size");

/* Head of every SEND. */
struct rdma_wire_hdr {
	uint8_t version;	/* RDMA_WIRE_VERSION */
	uint8_t kind;		/* enum rdma_kind */
	uint16_t credits;	/* receive buffers re-posted since last told */
	uint32_t payload_len;	/* bytes of payload in the ring, 0: none */
	uint64_t payload_pos;	/* ring position of the payload, bytes */
	uint64_t ring_freed;	/* sender consumed its ring up to, bytes */
} __attribute__((packed));
_Static_assert(sizeof(struct rdma_wire_hdr) == 24, "rdma_wire_hdr size");

#define RDMA_HDR_SIZE ((uint32_t)sizeof(struct rdma_wire_hdr))
_Static_assert(RDMA_HDR_SIZE + XPORT_HEAD_MAX <= RDMA_SLOT,
	       "a control buffer holds the header and any frame head");

/* CPU-side views of the two. */
struct rdma_cm_info {
	uint64_t ring_addr;
	uint32_t ring_rkey, ring_bytes, rx_bufs;
};

struct rdma_hdr {
	unsigned int kind;
	uint32_t credits, payload_len;
	uint64_t payload_pos, ring_freed;
};

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

static void hdr_encode(const struct rdma_hdr *h, void *buf)
{
	struct rdma_wire_hdr w = {
		.version = RDMA_WIRE_VERSION,
		.kind = (uint8_t)h->kind,
		.credits = htobe16((uint16_t)h->credits),
		.payload_len = htobe32(h->payload_len),
		.payload_pos = htobe64(h->payload_pos),
		.ring_freed = htobe64(h->ring_freed),
	};

	memcpy(buf, &w, sizeof(w));
}

static int hdr_decode(const void *buf, uint32_t len, struct rdma_hdr *h,
		      char *why, size_t why_len)
{
	struct rdma_wire_hdr w;

	if (len < RDMA_HDR_SIZE) {
		snprintf(why, why_len, "RDMA message of %u bytes", len);
		return -EBADMSG;
	}
	memcpy(&w, buf, sizeof(w));
	if (w.version != RDMA_WIRE_VERSION ||
	    (w.kind != RDMA_K_FRAME && w.kind != RDMA_K_CREDIT)) {
		snprintf(why, why_len, "RDMA header version %u kind %u",
			 w.version, w.kind);
		return -EBADMSG;
	}
	h->kind = w.kind;
	h->credits = be16toh(w.credits);
	h->payload_len = be32toh(w.payload_len);
	h->payload_pos = be64toh(w.payload_pos);
	h->ring_freed = be64toh(w.ring_freed);
	if (h->kind == RDMA_K_CREDIT &&
	    (len != RDMA_HDR_SIZE || h->payload_len)) {
		snprintf(why, why_len, "RDMA credit message of %u bytes", len);
		return -EBADMSG;
	}
	if (h->kind == RDMA_K_FRAME &&
	    (len < RDMA_HDR_SIZE + PROTO_HDR_SIZE ||
	     len > RDMA_HDR_SIZE + XPORT_HEAD_MAX ||
	     h->payload_len > PROTO_PAYLOAD_MAX)) {
		snprintf(why, why_len,
			 "RDMA frame message of %u bytes, payload %u", len,
			 h->payload_len);
		return -EBADMSG;
	}
	return 0;
}

/*
 * Where a payload of @len goes in a ring of @size when the next free
 * position is @next: there, or at the ring's start if it would wrap.
 * Skipping costs less than @len, so a payload needs at most 2 MiB; the
 * receiver reports its ring whenever a quarter is unreported, so with a
 * ring of at least 4 MiB a sender waiting for room always gets it.
 */
static uint64_t ring_place(uint64_t next, uint32_t len, uint32_t size)
{
	uint64_t off = next % size;

	return off + len > size ? next + (size - off) : next;
}

enum rdma_state {
	RS_LISTEN,
	RS_ADDR,	/* resolving the address */
	RS_ROUTE,	/* resolving the route */
	RS_CONNECT,	/* connect request sent */
	RS_ACCEPT,	/* accepted, waiting for ESTABLISHED */
	RS_UP,
};

struct rdma_txslot {
	struct xport_msg *msg;	/* NULL: credit-only */
	uint64_t ring_end;	/* tx ring position after its payload */
	uint32_t wrs;		/* work requests it took in the SQ */
	uint32_t bytes;		/* on the wire */
};

struct rdma_rxent {
	uint32_t slot;		/* receive buffer */
	uint32_t head_len;	/* frame head bytes after the header */
	uint64_t pos;		/* payload ring position */
	uint32_t len;		/* payload bytes */
};

struct rdma_ep {
	struct xport_ep base;
	enum rdma_state state;
	bool broken;		/* io() reported a failure */
	bool rx_off;		/* handler asked to stop, or bad input */
	bool rx_bad;		/* a malformed RDMA header: ignore the rest */
	bool need_buf;		/* the front frame waits for a pool buffer */
	int async_err;		/* set by the async event reader */
	char async_why[96];
	struct xport_opts opts;

	struct rdma_event_channel *ech;
	struct rdma_cm_id *id;
	int epfd;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cch;
	struct ibv_cq *cq;
	unsigned int cq_unacked;
	uint32_t max_inline;
	bool qp_made;

	/* registered memory */
	uint8_t *ctl;		/* RDMA_RX_BUFS rx slots, then tx slots */
	struct ibv_mr *ctl_mr;
	uint8_t *rring;		/* the peer writes here */
	struct ibv_mr *rring_mr;
	uint8_t *tring;		/* bounce copies of what we write */
	struct ibv_mr *tring_mr;

	/* sending */
	struct rdma_cm_info peer;	/* the peer's ring and buffers */
	uint32_t credits;	/* peer receive buffers known free */
	uint32_t owed;		/* our re-posted buffers not reported */
	uint64_t tx_next;	/* next payload position in the peer ring */
	uint64_t tx_freed;	/* the peer consumed up to */
	uint64_t tx_done;	/* local SEND completions freed up to */
	uint64_t tx_seq, tx_cseq; /* SENDs posted, completed */
	uint32_t sq_wrs;
	struct rdma_txslot txs[RDMA_TX_SLOTS];
	struct xport_msg *sq_head, *sq_tail;	/* not posted yet */
	struct ibv_send_wr wrs[RDMA_SQ_DEPTH];	/* the batch being built */
	struct ibv_sge sges[RDMA_SQ_DEPTH];
	uint32_t nwr;

	/* receiving */
	struct proto_parser *parser;
	uint64_t rx_next;	/* where the next payload must be */
	uint64_t rx_consumed, rx_reported;
	struct rdma_rxent rxq[RDMA_RX_BUFS];
	uint32_t rxq_head, rxq_n;
	bool front_fed;		/* the front frame's head is parsed */

	struct xport_stats st;
	char local[XPORT_ADDR_MAX];
	char peer_name[XPORT_ADDR_MAX];
	struct rdma_ep *all_prev, *all_next;
};

/*
 * Every endpoint with a device, for events that concern a port or a
 * device rather than one queue pair. The device's async descriptor is
 * shared, and whichever endpoint reads an event marks the ones it names.
 */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rdma_ep *all_eps;

static struct rdma_ep *to_rdma(const struct xport_ep *ep)
{
	return (struct rdma_ep *)ep;
}

static void all_add(struct rdma_ep *r)
{
	pthread_mutex_lock(&all_lock);
	r->all_next = all_eps;
	if (all_eps)
		all_eps->all_prev = r;
	all_eps = r;
	pthread_mutex_unlock(&all_lock);
}

static void all_del(struct rdma_ep *r)
{
	pthread_mutex_lock(&all_lock);
	if (r->all_prev)
		r->all_prev->all_next = r->all_next;
	else if (all_eps == r)
		all_eps = r->all_next;
	if (r->all_next)
		r->all_next->all_prev = r->all_prev;
	r->all_prev = r->all_next = NULL;
	pthread_mutex_unlock(&all_lock);
}

static void mark_async(struct rdma_ep *r, int err, const char *why)
{
	if (!r->async_err) {
		r->async_err = err;
		snprintf(r->async_why, sizeof(r->async_why), "%s", why);
	}
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

static int post_recv(struct rdma_ep *r, uint32_t slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(r->ctl + (size_t)slot * RDMA_SLOT),
		.length = RDMA_SLOT,
		.lkey = r->ctl_mr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = slot, .sg_list = &sge,
				  .num_sge = 1 }, *bad;
	int e = ibv_post_recv(r->id->qp, &wr, &bad);

	if (e) {
		xport_set_error(&r->base, "posting a receive: %s", strerror(e));
		return -e;
	}
	return 0;
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
		e = post_recv(r, i);
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
	all_add(r);
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

static int rdma_send(struct xport_ep *ep, struct xport_msg *msg)
{
	struct rdma_ep *r = to_rdma(ep);

	if (r->broken || r->state == RS_LISTEN)
		return -ENOTCONN;
	msg->next = NULL;
	msg->sent = 0;
	if (r->sq_tail)
		r->sq_tail->next = msg;
	else
		r->sq_head = msg;
	r->sq_tail = msg;
	r->st.sendq_msgs++;
	r->st.sendq_bytes += msg->head_len + msg->payload_len;
	return 0;
}

/* Append a work request to the batch that rdma_flush posts at once. */
static struct ibv_send_wr *batch_add(struct rdma_ep *r, void *addr,
				     uint32_t len, uint32_t lkey)
{
	struct ibv_send_wr *wr = &r->wrs[r->nwr];
	struct ibv_sge *sge = &r->sges[r->nwr];

	memset(wr, 0, sizeof(*wr));
	sge->addr = (uintptr_t)addr;
	sge->length = len;
	sge->lkey = lkey;
	wr->sg_list = sge;
	wr->num_sge = 1;
	if (r->nwr)
		r->wrs[r->nwr - 1].next = wr;
	r->nwr++;
	return wr;
}

/*
 * One SEND (and the WRITE before it when there is a payload), added to
 * the batch; counted as posted (a failed post fails the endpoint).
 */
static void prep_one(struct rdma_ep *r, struct xport_msg *m)
{
	uint32_t slot = (uint32_t)(r->tx_seq % RDMA_TX_SLOTS);
	uint8_t *buf = r->ctl + (size_t)(RDMA_RX_BUFS + slot) * RDMA_SLOT;
	struct rdma_txslot *ts = &r->txs[slot];
	struct rdma_hdr h = {
		.kind = m ? RDMA_K_FRAME : RDMA_K_CREDIT,
		.credits = r->owed,
		.ring_freed = r->rx_consumed,
	};
	struct ibv_send_wr *wr;
	uint32_t len = RDMA_HDR_SIZE;

	ts->wrs = 1;
	if (m && m->payload_len) {
		uint64_t pos = ring_place(r->tx_next, m->payload_len,
					  r->peer.ring_bytes);
		uint64_t off = pos % r->peer.ring_bytes;

		memcpy(r->tring + off, m->payload, m->payload_len);
		wr = batch_add(r, r->tring + off, m->payload_len,
			       r->tring_mr->lkey);
		wr->wr_id = UINT64_MAX;
		wr->opcode = IBV_WR_RDMA_WRITE;
		wr->wr.rdma.remote_addr = r->peer.ring_addr + off;
		wr->wr.rdma.rkey = r->peer.ring_rkey;
		h.payload_len = m->payload_len;
		h.payload_pos = pos;
		r->tx_next = pos + m->payload_len;
		ts->wrs = 2;
	}
	hdr_encode(&h, buf);
	if (m) {
		memcpy(buf + RDMA_HDR_SIZE, m->head, m->head_len);
		len += m->head_len;
	}
	wr = batch_add(r, buf, len, r->ctl_mr->lkey);
	wr->wr_id = slot;
	wr->opcode = IBV_WR_SEND;
	wr->send_flags = IBV_SEND_SIGNALED |
			 (len <= r->max_inline ? IBV_SEND_INLINE : 0);
	ts->msg = m;
	ts->ring_end = r->tx_next;
	ts->bytes = len + h.payload_len;
	r->sq_wrs += ts->wrs;
	r->tx_seq++;
	r->credits--;
	r->owed = 0;
	r->rx_reported = r->rx_consumed;
	r->st.bytes_sent += ts->bytes;
}

static int batch_post(struct rdma_ep *r)
{
	struct ibv_send_wr *bad;
	int e;

	if (!r->nwr)
		return 0;
	e = ibv_post_send(r->id->qp, r->wrs, &bad);
	r->nwr = 0;
	if (e) {
		xport_set_error(&r->base, "posting sends to %s: %s",
				r->peer_name, strerror(e));
		return -e;
	}
	return 0;
}

/* Room for @m now: credits (one kept for reports), a slot, ring space. */
static bool can_post(const struct rdma_ep *r, const struct xport_msg *m)
{
	uint64_t base, end;

	if (r->tx_seq - r->tx_cseq >= RDMA_TX_SLOTS ||
	    r->sq_wrs + 2 > RDMA_SQ_DEPTH)
		return false;
	if (!m)
		return r->credits >= 1;
	if (r->credits < 2)
		return false;
	if (!m->payload_len)
		return true;
	base = r->tx_freed < r->tx_done ? r->tx_freed : r->tx_done;
	end = ring_place(r->tx_next, m->payload_len, r->peer.ring_bytes) +
	      m->payload_len;
	return end - base <= r->peer.ring_bytes;
}

static int rdma_flush(struct rdma_ep *r)
{
	while (r->sq_head && can_post(r, r->sq_head)) {
		struct xport_msg *m = r->sq_head;

		r->sq_head = m->next;
		if (!r->sq_head)
			r->sq_tail = NULL;
		prep_one(r, m);
	}
	if ((r->owed >= RDMA_CREDIT_REPORT ||
	     r->rx_consumed - r->rx_reported >= RDMA_RING_REPORT) &&
	    can_post(r, NULL))
		prep_one(r, NULL);
	return batch_post(r);
}

static void msg_done(struct rdma_ep *r, struct xport_msg *m, int err)
{
	r->st.sendq_msgs--;
	r->st.sendq_bytes -= m->head_len + m->payload_len;
	if (!err)
		r->st.msgs_sent++;
	m->done(m, err);
}

static void send_completed(struct rdma_ep *r)
{
	struct rdma_txslot *ts = &r->txs[r->tx_cseq % RDMA_TX_SLOTS];
	struct xport_msg *m = ts->msg;

	r->tx_cseq++;
	r->sq_wrs -= ts->wrs;
	r->tx_done = ts->ring_end;
	ts->msg = NULL;
	if (m) {
		m->sent = m->head_len + m->payload_len;
		msg_done(r, m, 0);
	}
}

/* A receive completed: take what concerns our sending now, queue the
 * frame for delivery in order. */
static int recv_completed(struct rdma_ep *r, uint32_t slot, uint32_t len)
{
	const uint8_t *buf = r->ctl + (size_t)slot * RDMA_SLOT;
	struct rdma_rxent *e;
	struct rdma_hdr h;
	char why[96];
	int ret;

	if (r->rx_bad)
		return 0;
	r->st.bytes_recv += len;
	ret = hdr_decode(buf, len, &h, why, sizeof(why));
	if (!ret && r->credits + h.credits > r->peer.rx_bufs) {
		snprintf(why, sizeof(why),
			 "RDMA credits: %u returned, %u known, %u posted",
			 h.credits, r->credits, r->peer.rx_bufs);
		ret = -EBADMSG;
	}
	if (!ret && (h.ring_freed < r->tx_freed || h.ring_freed > r->tx_next)) {
		snprintf(why, sizeof(why),
			 "RDMA ring freed up to %llu, written up to %llu",
			 (unsigned long long)h.ring_freed,
			 (unsigned long long)r->tx_next);
		ret = -EBADMSG;
	}
	if (!ret && h.payload_len) {
		uint64_t want = ring_place(r->rx_next, h.payload_len,
					   RDMA_RING_BYTES);

		if (h.payload_pos != want) {
			snprintf(why, sizeof(why),
				 "RDMA payload at ring position %llu, expected %llu",
				 (unsigned long long)h.payload_pos,
				 (unsigned long long)want);
			ret = -EBADMSG;
		}
	}
	if (ret) {
		xport_set_error(&r->base, "from %s: %s", r->peer_name, why);
		r->rx_bad = true;
		return ret;
	}
	r->credits += h.credits;
	r->tx_freed = h.ring_freed;
	if (h.kind == RDMA_K_CREDIT) {
		ret = post_recv(r, slot);
		if (!ret)
			r->owed++;
		return ret;
	}
	if (h.payload_len) {
		r->rx_next = h.payload_pos + h.payload_len;
		r->st.bytes_recv += h.payload_len;
	}
	e = &r->rxq[(r->rxq_head + r->rxq_n++) % RDMA_RX_BUFS];
	e->slot = slot;
	e->head_len = len - RDMA_HDR_SIZE;
	e->pos = h.payload_pos;
	e->len = h.payload_len;
	return 0;
}

static int wc_error(struct rdma_ep *r, const struct ibv_wc *wc)
{
	int err = wc->status == IBV_WC_RETRY_EXC_ERR ? -ETIMEDOUT :
		  wc->status == IBV_WC_WR_FLUSH_ERR ? -ECONNRESET :
						       -EIO;

	if (!r->base.err[0] || wc->status != IBV_WC_WR_FLUSH_ERR)
		xport_set_error(&r->base, "%s: %s failed: %s", r->peer_name,
				wc->opcode & IBV_WC_RECV ? "receive" : "send",
				ibv_wc_status_str(wc->status));
	return err;
}

/* Completions: events read only when the channel is readable (@evt_fd);
 * the queue itself is polled every time, which costs no system call. */
static int drain_cq(struct rdma_ep *r, bool evt_fd)
{
	struct ibv_wc wc[RDMA_CQ_BATCH];
	struct ibv_cq *cq;
	void *ctx;
	bool evt = false;
	int n, ret;

	while (evt_fd && !ibv_get_cq_event(r->cch, &cq, &ctx)) {
		evt = true;
		if (++r->cq_unacked >= RDMA_CQ_ACK_BATCH) {
			ibv_ack_cq_events(r->cq, r->cq_unacked);
			r->cq_unacked = 0;
		}
	}
	if (evt && (ret = ibv_req_notify_cq(r->cq, 0))) {
		xport_set_error(&r->base, "arming the completion queue: %s",
				strerror(ret));
		return -ret;
	}
	do {
		n = ibv_poll_cq(r->cq, RDMA_CQ_BATCH, wc);
		if (n < 0) {
			xport_set_error(&r->base, "polling the completion queue failed");
			return -EIO;
		}
		for (int i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS)
				return wc_error(r, &wc[i]);
			if (wc[i].opcode & IBV_WC_RECV) {
				ret = recv_completed(r, (uint32_t)wc[i].wr_id,
						     wc[i].byte_len);
				if (ret)
					return ret;
			} else if (wc[i].wr_id != UINT64_MAX) {
				send_completed(r);
			}
		}
	} while (n == RDMA_CQ_BATCH);
	return 0;
}

static void rx_pop(struct rdma_ep *r)
{
	r->rxq_head = (r->rxq_head + 1) % RDMA_RX_BUFS;
	r->rxq_n--;
	r->front_fed = false;
}

static int bad_frame(struct rdma_ep *r, int ret, const char *what)
{
	if (ret == -EBADMSG || !what)
		what = ret < 0 ? proto_parser_error(r->parser) : "?";
	xport_set_error(&r->base, "from %s: %s", r->peer_name, what);
	return ret < 0 ? ret : -EBADMSG;
}

/* Deliver queued frames in order, until done or a pool buffer lacks. */
static int deliver(struct rdma_ep *r)
{
	while (r->rxq_n) {
		struct rdma_rxent *e = &r->rxq[r->rxq_head];
		const struct proto_msg *m;
		struct xport_buf *b = NULL;
		size_t used;
		int ret;

		if (r->rx_off)
			goto out_consumed;
		if (!r->front_fed) {
			ret = proto_parser_feed(r->parser,
						r->ctl + (size_t)e->slot *
								 RDMA_SLOT +
							RDMA_HDR_SIZE,
						e->head_len, &used);
			if (ret < 0)
				return bad_frame(r, ret, NULL);
			m = proto_parser_msg(r->parser);
			if (ret == PROTO_PARSE_MORE || used != e->head_len ||
			    m->payload_len != e->len)
				return bad_frame(r, 0,
						 "frame head and RDMA header disagree");
			r->front_fed = true;
		}
		m = proto_parser_msg(r->parser);
		if (e->len) {
			if (!r->opts.pool) {
				xport_set_error(&r->base,
						"%s frame with a payload, and no buffer pool",
						proto_type_name(m->type));
				return -ENOBUFS;
			}
			b = xport_pool_get(r->opts.pool, e->len);
			if (!b) {
				if (errno != EAGAIN) {
					xport_set_error(&r->base,
							"payload buffer: %s",
							strerror(errno));
					return -errno;
				}
				r->need_buf = r->st.rx_stalled = true;
				return 0;
			}
			r->need_buf = r->st.rx_stalled = false;
			proto_parser_set_payload(r->parser, b->data);
			ret = proto_parser_feed(r->parser,
						r->rring + e->pos % RDMA_RING_BYTES,
						e->len, &used);
			if (ret != PROTO_PARSE_FRAME || used != e->len) {
				xport_buf_put(b);
				return bad_frame(r, ret, "payload not taken whole");
			}
			m = proto_parser_msg(r->parser);
			b->len = m->payload_len;
		}
		r->st.msgs_recv++;
		if (!r->base.handler->frame(r->base.arg, &r->base, m, b))
			r->rx_off = true;
out_consumed:
		if (e->len)
			r->rx_consumed = e->pos + e->len;
		ret = post_recv(r, e->slot);
		if (ret)
			return ret;
		r->owed++;
		rx_pop(r);
	}
	return 0;
}

/* Async events of the device: mark the endpoints they concern. */
static void drain_async(struct ibv_context *verbs)
{
	struct ibv_async_event ev;
	char why[96];

	while (!ibv_get_async_event(verbs, &ev)) {
		struct rdma_ep *r;

		switch (ev.event_type) {
		case IBV_EVENT_COMM_EST:
			r = ev.element.qp->qp_context;
			rdma_notify(r->id, IBV_EVENT_COMM_EST);
			break;
		case IBV_EVENT_QP_FATAL:
		case IBV_EVENT_QP_REQ_ERR:
		case IBV_EVENT_QP_ACCESS_ERR:
		case IBV_EVENT_PATH_MIG_ERR:
			r = ev.element.qp->qp_context;
			snprintf(why, sizeof(why), "queue pair error: %s",
				 ibv_event_type_str(ev.event_type));
			pthread_mutex_lock(&all_lock);
			mark_async(r, -EIO, why);
			pthread_mutex_unlock(&all_lock);
			break;
		case IBV_EVENT_CQ_ERR:
			r = ev.element.cq->cq_context;
			pthread_mutex_lock(&all_lock);
			mark_async(r, -EIO, "completion queue overrun");
			pthread_mutex_unlock(&all_lock);
			break;
		case IBV_EVENT_PORT_ERR:
		case IBV_EVENT_DEVICE_FATAL:
			snprintf(why, sizeof(why), "%s %s port %d",
				 ibv_event_type_str(ev.event_type),
				 ibv_get_device_name(verbs->device),
				 ev.element.port_num);
			pthread_mutex_lock(&all_lock);
			for (r = all_eps; r; r = r->all_next)
				if (r->id->verbs == verbs &&
				    (ev.event_type == IBV_EVENT_DEVICE_FATAL ||
				     r->id->port_num == ev.element.port_num))
					mark_async(r, -ENETDOWN, why);
			pthread_mutex_unlock(&all_lock);
			break;
		default:
			log_dbg(LOG_CAT_NET, "rdma: %s: %s",
				ibv_get_device_name(verbs->device),
				ibv_event_type_str(ev.event_type));
			break;
		}
		ibv_ack_async_event(&ev);
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
static int drain_cm(struct rdma_ep *r)
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

static int rdma_io(struct xport_ep *ep, unsigned int what)
{
	struct rdma_ep *r = to_rdma(ep);
	struct epoll_event ev[3];
	bool cm = false, cq = false, as = false;
	int ret, n;

	if (r->broken || r->state == RS_LISTEN)
		return r->broken ? -ENOTCONN : 0;
	/* One system call says which of the three descriptors has news. */
	n = epoll_wait(r->epfd, ev, 3, 0);
	for (int i = 0; i < n; i++) {
		cm |= ev[i].data.fd == r->ech->fd;
		cq |= r->cch && ev[i].data.fd == r->cch->fd;
		as |= r->qp_made && ev[i].data.fd == r->id->verbs->async_fd;
	}
	if (cm) {
		ret = drain_cm(r);
		if (ret)
			goto out;
	}
	if (as && r->qp_made)
		drain_async(r->id->verbs);
	pthread_mutex_lock(&all_lock);
	ret = r->async_err;
	if (ret)
		xport_set_error(ep, "%s: %s", r->peer_name, r->async_why);
	pthread_mutex_unlock(&all_lock);
	if (ret)
		goto out;
	/* Until the peer's parameters are known (the ESTABLISHED event of
	 * an outgoing connection), completions wait in the queue. */
	if (!r->parser)
		return 0;
	ret = drain_cq(r, cq);
	if (ret || r->state != RS_UP)
		goto out;
	if (what & XPORT_IO_SEND) {
		ret = rdma_flush(r);
		if (ret)
			goto out;
	}
	if ((what & XPORT_IO_RECV) || r->rx_off) {
		ret = deliver(r);
		/* Frames handled may have queued answers, and buffers
		 * re-posted make credits to report. */
		if (!ret && (what & XPORT_IO_SEND))
			ret = rdma_flush(r);
	}
out:
	if (ret == -EBADMSG) {
		r->rx_off = true;
	} else if (ret) {
		r->broken = true;
		if (!ep->err[0])
			xport_set_error(ep, "%s: %s", r->peer_name,
					strerror(-ret));
	}
	return ret;
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

static void fail_queue(struct rdma_ep *r)
{
	while (r->tx_cseq < r->tx_seq) {
		struct rdma_txslot *ts = &r->txs[r->tx_cseq++ % RDMA_TX_SLOTS];

		if (ts->msg)
			msg_done(r, ts->msg, -ECONNRESET);
		ts->msg = NULL;
	}
	while (r->sq_head) {
		struct xport_msg *m = r->sq_head;

		r->sq_head = m->next;
		msg_done(r, m, -ECONNRESET);
	}
	r->sq_tail = NULL;
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
	all_del(r);
	if (r->state == RS_UP || r->state == RS_ACCEPT ||
	    r->state == RS_CONNECT)
		rdma_disconnect(r->id);
	/* Payloads were copied when posted: nothing of the callers' is
	 * referenced by the device any more. */
	fail_queue(r);
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
	.send = rdma_send,
	.io = rdma_io,
	.poll_fds = rdma_poll_fds,
	.set_limits = rdma_set_limits,
	.stats = rdma_stats,
	.local_addr = rdma_local_addr,
	.peer_addr = rdma_peer_addr,
	.close = rdma_close,
	.mem_register = NULL,
};
