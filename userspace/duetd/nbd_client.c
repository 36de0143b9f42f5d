// SPDX-License-Identifier: MIT
/*
 * A client of the NBD server thread (nbd_int.h): its handshake, its
 * requests read and checked, the request slots, the pieces given to the
 * path, and the replies. Listening, accepting, the timer and the loop
 * are in nbd.c.
 *
 * A client's life:
 *
 *	accept ──► HS: recv ─► nbdp_hs_feed ─► send its output ─► ...
 *	  ──► TX: recv request headers (a WRITE's data straight into the
 *	      request's buffer) ─► nbdp_req_check ─► path_submit (in pieces)
 *	      ─► reply queue ─► sendmsg (headers + READ data, batched)
 *	  ──► CLOSING: read nothing more, drop unsent replies, wait until
 *	      recv, send and the requests in the path have come back; close.
 *
 * At most one recv and one send are in flight per client, so its bytes
 * stay in order; everything runs on this thread, so nothing is locked.
 * Request slots are path tags: slot i is tag i.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "nbd_int.h"
#include "util.h"

/* -------------------------------------------------------------- clients */

static void post_recv(struct nbd_server *s, unsigned int ci);
static void kick_send(struct nbd_server *s, unsigned int ci);
static void process_rx(struct nbd_server *s, unsigned int ci);
static void slot_put(struct nbd_server *s, unsigned int si);

/*
 * Free the client once nothing of it is in flight. Its slots come back
 * here too: a WRITE whose data was arriving, the replies of a send that
 * ended; requests still in the path come back through reply(), which
 * drops their replies.
 */
static void client_release(struct nbd_server *s, unsigned int ci)
{
	struct client *c = &s->cl[ci];
	int32_t si;

	if (c->st != C_CLOSING || c->recv_busy || c->send_busy)
		return;
	if (c->wr_slot >= 0) {
		si = c->wr_slot;
		c->wr_slot = -1;
		slot_put(s, (unsigned int)si);	/* calls us again */
		return;
	}
	if (c->nbatch) {
		c->nbatch--;
		slot_put(s, (unsigned int)c->batch[c->nbatch]);
		return;
	}
	if (c->inflight)
		return;
	close(c->fd);
	nbdp_hs_free(c->hs);
	c->hs = NULL;
	c->st = C_FREE;
	s->nr_clients--;
	st_add(&s->st.clients, (uint64_t)-1);
}

void nbd_client_close(struct nbd_server *s, unsigned int ci, bool bad,
		      const char *fmt, ...)
{
	struct client *c = &s->cl[ci];
	char why[320];
	va_list ap;

	if (c->st == C_FREE || c->st == C_CLOSING)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (bad) {
		st_add(&s->st.dropped, 1);
		if (log_quota(s))
			log_warn("nbd: %s: disconnected: %s", c->peer, why);
	} else {
		log_dbg(LOG_CAT_NBD, "nbd: %s: closed: %s", c->peer, why);
	}
	c->st = C_CLOSING;
	/* A pending recv or send completes now. */
	shutdown(c->fd, SHUT_RDWR);
	while (c->rq_head >= 0) {
		int32_t si = c->rq_head;

		c->rq_head = s->slots[si].next;
		slot_put(s, (unsigned int)si);
	}
	c->rq_tail = -1;
	client_release(s, ci);
}

/* ---------------------------------------------------------------- slots */

static int32_t slot_get(struct nbd_server *s, unsigned int ci)
{
	int32_t si = s->free_slot;
	struct slot *sl;

	if (si < 0)
		return -1;
	sl = &s->slots[si];
	if (!sl->buf &&
	    posix_memalign(&sl->buf, 4096, s->p.piece_bytes)) {
		sl->buf = NULL;
		return -1;
	}
	s->free_slot = sl->next;
	sl->next = -1;
	sl->conn = (uint16_t)ci;
	sl->started = sl->flush_after = false;
	sl->err = sl->got = sl->pos = sl->piece = 0;
	s->slots_busy++;
	s->cl[ci].inflight++;
	return si;
}

static void *slot_data(struct slot *sl)
{
	return sl->big ? sl->big : sl->buf;
}

static void slot_put(struct nbd_server *s, unsigned int si)
{
	struct slot *sl = &s->slots[si];
	unsigned int ci = sl->conn;

	if (sl->big) {
		free(sl->big);
		sl->big = NULL;
		s->big_bytes -= sl->req.length;
	}
	sl->next = s->free_slot;
	s->free_slot = (int32_t)si;
	s->slots_busy--;
	s->cl[ci].inflight--;
	if (s->cl[ci].st == C_CLOSING) {
		client_release(s, ci);
		return;
	}
	/* Clients that stopped reading for want of a slot or buffer space
	 * may go on, this one first. */
	if (s->cl[ci].blocked)
		process_rx(s, ci);
	for (unsigned int i = 0; i < s->p.max_conns; i++)
		if (s->cl[i].blocked && s->cl[i].st == C_TX)
			process_rx(s, i);
}

/* ------------------------------------------------------------ replying */

static void reply(struct nbd_server *s, unsigned int si)
{
	struct slot *sl = &s->slots[si];
	struct client *c = &s->cl[sl->conn];

	if (c->st != C_TX) {
		slot_put(s, si);
		return;
	}
	nbdp_reply_encode(sl->hdr, sl->err, sl->req.cookie);
	sl->next = -1;
	if (c->rq_tail >= 0)
		s->slots[c->rq_tail].next = (int32_t)si;
	else
		c->rq_head = (int32_t)si;
	c->rq_tail = (int32_t)si;
	kick_send(s, sl->conn);
}

/* Send the queued replies, up to SEND_BATCH in one sendmsg. */
static void kick_send(struct nbd_server *s, unsigned int ci)
{
	struct client *c = &s->cl[ci];
	struct io_uring_sqe *sqe;
	unsigned int niov = 0;

	if (c->st != C_TX || c->send_busy)
		return;
	if (!c->nbatch) {
		while (c->rq_head >= 0 && c->nbatch < SEND_BATCH) {
			int32_t si = c->rq_head;
			struct slot *sl = &s->slots[si];

			c->rq_head = sl->next;
			if (c->rq_head < 0)
				c->rq_tail = -1;
			c->batch[c->nbatch++] = si;
			c->iov[niov++] = (struct iovec){ sl->hdr,
							 NBDP_REPLY_SIZE };
			/* a failed read sends no data (simple replies) */
			if (sl->req.type == NBDP_CMD_READ && !sl->err)
				c->iov[niov++] = (struct iovec){
					slot_data(sl), sl->req.length };
		}
		if (!c->nbatch)
			return;
		memset(&c->msg, 0, sizeof(c->msg));
		c->msg.msg_iov = c->iov;
		c->msg.msg_iovlen = niov;
	}
	sqe = get_sqe(s);
	if (!sqe) {
		nbd_client_close(s, ci, false, "no SQE for a reply");
		return;
	}
	io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	sqe->user_data = eng_ud(false, KIND_SEND, ci);
	c->send_busy = true;
}

/* @n bytes of the batch went out. */
static void batch_sent(struct nbd_server *s, unsigned int ci, size_t n)
{
	struct client *c = &s->cl[ci];
	struct msghdr *m = &c->msg;
	int32_t done[SEND_BATCH];
	unsigned int nr;

	while (n && m->msg_iovlen) {
		if (n < m->msg_iov->iov_len) {
			m->msg_iov->iov_base = (char *)m->msg_iov->iov_base + n;
			m->msg_iov->iov_len -= n;
			return;
		}
		n -= m->msg_iov->iov_len;
		m->msg_iov++;
		m->msg_iovlen--;
	}
	if (m->msg_iovlen)
		return;
	/* slot_put() may queue and send more replies: the batch is over
	 * before it runs. */
	nr = c->nbatch;
	memcpy(done, c->batch, nr * sizeof(done[0]));
	c->nbatch = 0;
	for (unsigned int i = 0; i < nr; i++)
		slot_put(s, (unsigned int)done[i]);
}

/* ------------------------------------------------------------ the path */

/* Give the next piece of @si's request to the path, or reply. */
static void io_next(struct nbd_server *s, unsigned int si)
{
	struct slot *sl = &s->slots[si];
	const struct nbdp_req *r = &sl->req;
	uint64_t off = r->offset + sl->pos;
	uint32_t left = r->length - sl->pos, max = s->p.piece_bytes;
	struct path_req pr = { 0 };

	if (sl->started && !left) {
		if (!sl->flush_after) {
			reply(s, si);
			return;
		}
		sl->flush_after = false;
		pr.op = ENG_OP_FLUSH;
		sl->piece = 0;
		path_submit(s->path, si, &pr);
		return;
	}
	sl->started = true;
	switch (r->type) {
	case NBDP_CMD_READ:
	case NBDP_CMD_WRITE:
		pr.op = r->type == NBDP_CMD_READ ? ENG_OP_READ : ENG_OP_WRITE;
		pr.fua = r->flags & NBDP_CMD_FLAG_FUA;
		pr.buf = (char *)slot_data(sl) + sl->pos;
		break;
	case NBDP_CMD_FLUSH:
		pr.op = ENG_OP_FLUSH;
		sl->piece = 0;
		path_submit(s->path, si, &pr);
		return;
	case NBDP_CMD_TRIM:
		pr.op = ENG_OP_DISCARD;
		max = s->p.zero_bytes;
		break;
	default: /* WRITE_ZEROES */
		if (r->flags & NBDP_CMD_FLAG_NO_HOLE) {
			/* fallocate may punch a hole: write real zeroes */
			pr.op = ENG_OP_WRITE;
			pr.buf = s->zeroes;
		} else {
			pr.op = ENG_OP_WRITE_ZEROES;
			max = s->p.zero_bytes;
		}
		break;
	}
	if ((r->type == NBDP_CMD_TRIM || r->type == NBDP_CMD_WRITE_ZEROES) &&
	    (r->flags & NBDP_CMD_FLAG_FUA))
		sl->flush_after = true;
	/* Pieces on multiples of their size: a TRIM piece then spans the
	 * fewest activity-log extents. */
	sl->piece = max - (uint32_t)(off % max);
	if (sl->piece > left)
		sl->piece = left;
	pr.sector = off >> SECTOR_SHIFT;
	pr.nr_sectors = sl->piece >> SECTOR_SHIFT;
	path_submit(s->path, si, &pr);
}

/* path_params.complete: one piece is done. */
void nbd_on_path_done(void *owner, unsigned int tag, int res)
{
	struct nbd_server *s = owner;
	struct slot *sl = &s->slots[tag];

	if (res < 0) {
		sl->err = nbdp_errno(res);
		st_add(&s->st.io_errors, 1);
		reply(s, tag);
		return;
	}
	sl->pos += sl->piece;
	io_next(s, tag);
}

/* ------------------------------------------------------------ receiving */

static void post_recv(struct nbd_server *s, unsigned int ci)
{
	struct client *c = &s->cl[ci];
	struct io_uring_sqe *sqe;
	size_t len;
	void *to;

	if (c->recv_busy || (c->st != C_HS && c->st != C_TX))
		return;
	if (c->wr_slot >= 0) {
		struct slot *sl = &s->slots[c->wr_slot];

		to = (char *)slot_data(sl) + sl->got;
		len = sl->req.length - sl->got;
	} else {
		to = c->rx + c->rx_len;
		len = RX_BYTES - c->rx_len;
	}
	sqe = get_sqe(s);
	if (!sqe || !len) {
		nbd_client_close(s, ci, false, "cannot post a receive");
		return;
	}
	io_uring_prep_recv(sqe, c->fd, to, len, 0);
	sqe->user_data = eng_ud(false, KIND_RECV, ci);
	c->recv_busy = true;
}

static void rx_drop(struct client *c, size_t n)
{
	memmove(c->rx, c->rx + n, c->rx_len - n);
	c->rx_len -= n;
}

/*
 * A request header is at the front of rx: check it and start it. false:
 * read no further now (closing, disconnecting, or waiting for room).
 */
static bool take_request(struct nbd_server *s, unsigned int ci)
{
	struct client *c = &s->cl[ci];
	enum nbdp_verdict v;
	struct nbdp_req r;
	const char *why;
	struct slot *sl;
	bool big;
	uint32_t err;
	int32_t si;

	if (nbdp_req_decode(c->rx, &r)) {
		nbd_client_close(s, ci, true, "bad request magic");
		return false;
	}
	v = nbdp_req_check(&s->exp, &r, &err, &why);
	big = v == NBDP_REQ_OK && r.length > s->p.piece_bytes &&
	      (r.type == NBDP_CMD_READ || r.type == NBDP_CMD_WRITE);
	if (v == NBDP_REQ_OK || v == NBDP_REQ_ERROR) {
		/* Room first; the header stays in rx until there is. */
		if (c->inflight >= s->p.conn_depth || s->free_slot < 0 ||
		    (big && s->big_bytes &&
		     s->big_bytes + r.length > NBD_BIG_BUDGET)) {
			c->blocked = true;
			return false;
		}
	}
	rx_drop(c, NBDP_REQ_SIZE);
	st_add(&s->st.requests, 1);
	if (v == NBDP_REQ_DISC) {
		c->disc = true;
		if (!c->inflight)
			nbd_client_close(s, ci, false, "NBD_CMD_DISC");
		return false;
	}
	if (v == NBDP_REQ_CLOSE) {
		nbd_client_close(s, ci, true, "%s %llu+%u: %s",
				 nbdp_cmd_name(r.type),
				 (unsigned long long)r.offset, r.length, why);
		return false;
	}
	si = slot_get(s, ci);
	if (si < 0) {
		nbd_client_close(s, ci, false,
				 "no memory for a request buffer");
		return false;
	}
	sl = &s->slots[si];
	sl->req = r;
	if (v == NBDP_REQ_ERROR) {
		st_add(&s->st.invalid, 1);
		if (log_quota(s))
			log_info("nbd: %s: %s %llu+%u refused: %s", c->peer,
				 nbdp_cmd_name(r.type),
				 (unsigned long long)r.offset, r.length, why);
		sl->err = err;
		c->drain = nbdp_req_payload(&r);
		reply(s, (unsigned int)si);
		return true;
	}
	if (big) {
		if (posix_memalign(&sl->big, 4096, r.length)) {
			sl->big = NULL;
			nbd_client_close(s, ci, false,
					 "no memory for a %u-byte request",
					 r.length);
			slot_put(s, (unsigned int)si);
			return false;
		}
		s->big_bytes += r.length;
	}
	if (r.type == NBDP_CMD_WRITE)
		c->wr_slot = si;
	else
		io_next(s, (unsigned int)si);
	return true;
}

static void process_rx(struct nbd_server *s, unsigned int ci)
{
	struct client *c = &s->cl[ci];
	size_t n;

	/* rx and the write buffer belong to the kernel while a recv runs */
	if (c->recv_busy)
		return;
	if (c->st == C_HS) {
		nbd_hs_step(s, ci);
		return;
	}
	c->blocked = false;
	while (c->st == C_TX) {
		if (c->wr_slot >= 0) {
			struct slot *sl = &s->slots[c->wr_slot];

			n = sl->req.length - sl->got;
			if (n > c->rx_len)
				n = c->rx_len;
			memcpy((char *)slot_data(sl) + sl->got, c->rx, n);
			sl->got += (uint32_t)n;
			rx_drop(c, n);
			if (sl->got < sl->req.length)
				break;
			c->wr_slot = -1;
			io_next(s, (unsigned int)(sl - s->slots));
			continue;
		}
		if (c->drain) {
			n = c->drain < c->rx_len ? c->drain : c->rx_len;
			rx_drop(c, n);
			c->drain -= (uint32_t)n;
			if (c->drain)
				break;
			continue;
		}
		if (c->disc)
			return;
		if (c->rx_len < NBDP_REQ_SIZE)
			break;
		if (!take_request(s, ci))
			return;
	}
	post_recv(s, ci);
}

void nbd_on_recv(struct nbd_server *s, unsigned int ci, int res)
{
	struct client *c = &s->cl[ci];

	c->recv_busy = false;
	if (c->st == C_CLOSING) {
		client_release(s, ci);
		return;
	}
	if (res <= 0) {
		/* in the middle of a request or handshake: not a clean end */
		nbd_client_close(s, ci, false, "%s",
				 res ? strerror(-res) :
				       "the client closed the connection");
		return;
	}
	if (c->wr_slot >= 0)
		s->slots[c->wr_slot].got += (uint32_t)res;
	else
		c->rx_len += (size_t)res;
	process_rx(s, ci);
}

/* ------------------------------------------------------------ handshake */

static void hs_finish(struct nbd_server *s, unsigned int ci)
{
	struct client *c = &s->cl[ci];
	const struct nbdp_hs_result *res;

	switch (c->hs_final) {
	case NBDP_HS_DONE:
		res = nbdp_hs_result(c->hs);
		log_info("nbd: %s: connected to %s (%s%s)", c->peer, s->name,
			 nbdp_opt_name(res->option),
			 res->block_size_agreed ? ", block sizes agreed" : "");
		st_add(&s->st.handshakes, 1);
		nbdp_hs_free(c->hs);
		c->hs = NULL;
		c->st = C_TX;
		process_rx(s, ci);
		break;
	case NBDP_HS_ABORT:
		nbd_client_close(s, ci, false, "%s", nbdp_hs_reason(c->hs));
		break;
	default:
		nbd_client_close(s, ci, true, "handshake: %s",
				 nbdp_hs_reason(c->hs));
		break;
	}
}

/* Drive the handshake as far as the buffered bytes go. */
void nbd_hs_step(struct nbd_server *s, unsigned int ci)
{
	struct client *c = &s->cl[ci];
	struct io_uring_sqe *sqe;
	enum nbdp_hs_step step;
	const void *out;
	size_t n, used;

	while (c->st == C_HS && !c->send_busy) {
		out = nbdp_hs_out(c->hs, &n);
		if (n) {
			sqe = get_sqe(s);
			if (!sqe) {
				nbd_client_close(s, ci, false,
						 "no SQE for the handshake");
				return;
			}
			io_uring_prep_send(sqe, c->fd, out, n, MSG_NOSIGNAL);
			sqe->user_data = eng_ud(false, KIND_SEND, ci);
			c->send_busy = true;
			return;
		}
		if (c->hs_final) {
			hs_finish(s, ci);
			return;
		}
		step = nbdp_hs_feed(c->hs, c->rx, c->rx_len, &used);
		rx_drop(c, used);
		if (step == NBDP_HS_NEED_INPUT) {
			post_recv(s, ci);
			return;
		}
		if (step != NBDP_HS_SEND)
			c->hs_final = step;
	}
}

void nbd_on_send(struct nbd_server *s, unsigned int ci, int res)
{
	struct client *c = &s->cl[ci];

	c->send_busy = false;
	if (c->st == C_CLOSING) {
		client_release(s, ci);
		return;
	}
	if (res < 0) {
		nbd_client_close(s, ci, false, "send: %s", strerror(-res));
		return;
	}
	if (c->st == C_HS) {
		nbdp_hs_out_done(c->hs, (size_t)res);
		nbd_hs_step(s, ci);
		return;
	}
	batch_sent(s, ci, (size_t)res);
	if (c->st != C_TX)
		return;
	kick_send(s, ci);
	if (c->disc && !c->inflight)
		nbd_client_close(s, ci, false, "NBD_CMD_DISC");
}
