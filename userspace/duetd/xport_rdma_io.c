// SPDX-License-Identifier: MIT
/*
 * The RDMA transport's data path (xport_rdma_int.h): messages queued by
 * send() go out as one chained post of SENDs, each behind the RDMA WRITE
 * of its payload into the peer's ring, as far as credits and ring space
 * allow; completions return credits, free ring space and end messages;
 * received frames are handed to the handler in order; the device's
 * asynchronous events mark the endpoints they concern; io() drives all
 * of it. The design (credits, ring positions, copies): the top of
 * xport_rdma.c.
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "log.h"
#include "xport_rdma_int.h"

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

/*
 * Every endpoint with a device, for events that concern a port or a
 * device rather than one queue pair. The device's async descriptor is
 * shared, and whichever endpoint reads an event marks the ones it names.
 */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rdma_ep *all_eps;

void xport_rdma_all_add(struct rdma_ep *r)
{
	pthread_mutex_lock(&all_lock);
	r->all_next = all_eps;
	if (all_eps)
		all_eps->all_prev = r;
	all_eps = r;
	pthread_mutex_unlock(&all_lock);
}

void xport_rdma_all_del(struct rdma_ep *r)
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

int xport_rdma_post_recv(struct rdma_ep *r, uint32_t slot)
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

int xport_rdma_send(struct xport_ep *ep, struct xport_msg *msg)
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
		ret = xport_rdma_post_recv(r, slot);
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
		ret = xport_rdma_post_recv(r, e->slot);
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

int xport_rdma_io(struct xport_ep *ep, unsigned int what)
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
		ret = xport_rdma_drain_cm(r);
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

void xport_rdma_fail_queue(struct rdma_ep *r)
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
