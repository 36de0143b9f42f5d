/* SPDX-License-Identifier: MIT */
/*
 * xport_ — transports: how two duetd daemons exchange protocol frames.
 *
 * The interface is message-level, not byte-stream level, so that TCP and
 * RDMA (registered buffers, send/receive completions, credits) sit behind
 * the same ops table and conn_ never knows which one it drives:
 *
 *  - a message to send is a small head (32-byte header + fixed part, made
 *    by proto_encode) and an optional payload that is never copied: the
 *    transport calls msg->done() once it no longer needs the payload
 *    ("handed over": for TCP when the last byte is in the socket, for RDMA
 *    when the send completes). That moment is what protocol A waits for;
 *  - what is received is whole frames, decoded and validated by
 *    proto_parser, with the payload in a buffer from an xport_pool (for
 *    RDMA: registered memory). The consumer owns the buffer until it calls
 *    xport_buf_put(), from any thread, so a DATA payload can be written to
 *    the disk straight from where it arrived;
 *  - readiness is told through file descriptors the owner polls (TCP: the
 *    socket; RDMA: its event channels), and the owner calls io() when one
 *    is ready: endpoints never run threads of their own.
 *
 * Threading: an endpoint is used by one thread (its owner's event loop);
 * only xport_buf_put() and the pool may be called from other threads.
 *
 * Transports register by name ("tcp" now, "rdma" next); see xport_find().
 */
#ifndef DUET_XPORT_H
#define DUET_XPORT_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proto.h"

#define XPORT_ADDR_MAX 128	/* "host:port" as configured (= CFG_ADDR_MAX) */
#define XPORT_HEAD_MAX (PROTO_HDR_SIZE + PROTO_FIXED_MAX)
#define XPORT_POLLFDS_MAX 2	/* file descriptors one endpoint may need */
#define XPORT_ERR_MAX 192

/* What io() and poll_fds() are asked to do. */
#define XPORT_IO_SEND 1u	/* write queued messages */
#define XPORT_IO_RECV 2u	/* read and deliver frames */

struct xport_ep;
struct xport_pool;

/*
 * One message to send. The caller owns it and fills head/payload/done; the
 * transport links it into its queue through @next and keeps @sent while it
 * is queued. It must stay valid until done() has been called.
 */
struct xport_msg {
	uint8_t head[XPORT_HEAD_MAX];	/* encoded header + fixed part */
	uint32_t head_len;		/* bytes used in head */
	uint32_t payload_len;		/* bytes at payload; 0: none */
	const void *payload;		/* not copied, not modified */
	/*
	 * Called exactly once, from the owner's thread (inside io() or
	 * close()): 0 when the message is handed over, -ECONNRESET when the
	 * endpoint failed or was closed first. May free the message; must not
	 * call back into this endpoint.
	 */
	void (*done)(struct xport_msg *msg, int err);
	/* transport-private while queued */
	struct xport_msg *next;
	uint64_t sent;			/* bytes of head + payload written */
};

/*
 * A received payload. @data is 4 KiB aligned (fit for O_DIRECT) and holds
 * @len bytes; the owner releases it with xport_buf_put(), from any thread,
 * also after the endpoint that filled it is closed.
 */
struct xport_buf {
	void *data;
	uint32_t len;		/* payload bytes */
	uint32_t cap;		/* bytes at data */
	/* pool-private */
	struct xport_pool *pool;
	struct xport_buf *next;
	unsigned int cls;
};

/* How an endpoint reports received frames to its owner. */
struct xport_handler {
	/*
	 * Required. One complete, validated frame. @buf is NULL when the frame
	 * has no payload; otherwise m->payload == buf->data and the callee
	 * owns @buf (xport_buf_put). @m is valid only during the call. Return
	 * false to stop receiving on this endpoint for good (it is being
	 * closed): no further frame is delivered, sending goes on. Must not
	 * close the endpoint; may queue messages on it with send().
	 */
	bool (*frame)(void *arg, struct xport_ep *ep, const struct proto_msg *m,
		      struct xport_buf *buf);
};

/* Per-endpoint options, taken at listen/connect (accept inherits). */
struct xport_opts {
	/*
	 * Give up on a peer that acknowledges nothing for this long, ms
	 * (TCP_USER_TIMEOUT; RDMA: retry count x timeout). 0: system default.
	 */
	uint32_t user_timeout_ms;
	/* Probe an idle connection after this long, ms (SO_KEEPALIVE); 0: off */
	uint32_t keepalive_ms;
	/* Kernel socket buffer sizes, bytes; 0 keeps the kernel's autotuning
	 * (TCP; RDMA has none) */
	uint32_t sndbuf_bytes, rcvbuf_bytes;
	/* Where payloads are received; required for frames with payloads. */
	struct xport_pool *pool;
};

/* Figures of one endpoint, for status. */
struct xport_stats {
	uint64_t bytes_sent;	/* bytes written, headers included */
	uint64_t bytes_recv;	/* bytes read */
	uint64_t msgs_sent;	/* messages handed over */
	uint64_t msgs_recv;	/* frames delivered */
	uint32_t sendq_msgs;	/* queued, not handed over yet */
	uint64_t sendq_bytes;	/* head + payload bytes of those */
	bool rx_stalled;	/* a payload waits for a pool buffer */
	bool connecting;	/* an outgoing connection is not up yet */
};

/*
 * The transport ops table. Every function returns 0 or -errno unless it
 * says otherwise; on failure it leaves a sentence in xport_error(ep) where
 * there is an endpoint.
 */
struct xport_ops {
	const char *name;	/* "tcp", "rdma" */

	/* Required. A listening endpoint on @addr ("host:port", "[v6]:port";
	 * an empty host listens on every address). */
	int (*listen)(const char *addr, const struct xport_opts *o,
		      struct xport_ep **out, char *err, size_t err_len);

	/* Required. The next pending connection of @lep, -EAGAIN if none. */
	int (*accept)(struct xport_ep *lep, struct xport_ep **out);

	/*
	 * Required. Start connecting to @addr without waiting. The endpoint
	 * is usable at once: messages sent before the connection is up go
	 * out when it is; a failure surfaces from io(). The owner enforces
	 * its own deadline by closing the endpoint.
	 */
	int (*connect)(const char *addr, const struct xport_opts *o,
		       struct xport_ep **out, char *err, size_t err_len);

	/*
	 * Required. Queue @msg behind the messages already queued; nothing is
	 * written until io(SEND). -ENOTCONN if the endpoint has failed (done
	 * is then not called).
	 */
	int (*send)(struct xport_ep *ep, struct xport_msg *msg);

	/*
	 * Required. Make progress on what @what asks for: finish a connect,
	 * write queued messages, read and deliver frames (handler->frame),
	 * until the kernel has nothing more to give or take. Called when a
	 * descriptor from poll_fds() is ready, and whenever the owner thinks
	 * something may have changed (new messages, a buffer put back).
	 * Returns 0, or -errno once the endpoint is broken: -ECONNRESET when
	 * the peer closed or reset it, -ETIMEDOUT, -ECONNREFUSED, ... or
	 * -EBADMSG for a malformed stream (xport_error says which field):
	 * then only receiving is over, and queued messages still go out, so
	 * that the owner can send the peer a last DISCONNECT saying why.
	 */
	int (*io)(struct xport_ep *ep, unsigned int what);

	/*
	 * Required. Fill up to @max pollfds (XPORT_POLLFDS_MAX is enough)
	 * with what to wait for before io(@what) has something to do; returns
	 * how many. 0 means nothing to wait for (e.g. receiving is stalled
	 * until a buffer comes back).
	 */
	int (*poll_fds)(struct xport_ep *ep, unsigned int what,
			struct pollfd *fds, int max);

	/* Required. Limits for frame validation once the handshake has told
	 * the device size; NULL resets to "nothing known". */
	void (*set_limits)(struct xport_ep *ep, const struct proto_limits *lim);

	/* Required. Figures since the endpoint was made. */
	void (*stats)(const struct xport_ep *ep, struct xport_stats *st);

	/* Required. Local and remote address as "host:port" ("" if none). */
	const char *(*local_addr)(const struct xport_ep *ep);
	const char *(*peer_addr)(const struct xport_ep *ep);

	/*
	 * Required. Close and free: every queued message completes with
	 * -ECONNRESET first. Buffers handed out stay valid until put.
	 */
	void (*close)(struct xport_ep *ep);

	/*
	 * Optional (NULL: not needed). Tell the transport that @len bytes at
	 * @addr will be sent from or received into often, so it can register
	 * them up front (RDMA memory regions). TCP needs nothing.
	 */
	int (*mem_register)(struct xport_ep *ep, void *addr, size_t len);
};

/*
 * Common head of every endpoint. Transports embed it first in their own
 * struct; owners use the wrappers below and set the handler.
 */
struct xport_ep {
	const struct xport_ops *ops;
	const struct xport_handler *handler;
	void *arg;			/* handler's */
	char err[XPORT_ERR_MAX];	/* last failure, "" if none */
};

/* Transport registry. Built in: "tcp". -EEXIST, -ENOSPC. */
int xport_register(const struct xport_ops *ops);
/* NULL if no transport of that name is built in or registered. */
const struct xport_ops *xport_find(const char *name);

extern const struct xport_ops xport_tcp_ops;

static inline void xport_set_handler(struct xport_ep *ep,
				     const struct xport_handler *h, void *arg)
{
	ep->handler = h;
	ep->arg = arg;
}

static inline int xport_send(struct xport_ep *ep, struct xport_msg *msg)
{
	return ep->ops->send(ep, msg);
}

static inline int xport_io(struct xport_ep *ep, unsigned int what)
{
	return ep->ops->io(ep, what);
}

static inline int xport_poll_fds(struct xport_ep *ep, unsigned int what,
				 struct pollfd *fds, int max)
{
	return ep->ops->poll_fds(ep, what, fds, max);
}

static inline void xport_stats(const struct xport_ep *ep,
			       struct xport_stats *st)
{
	ep->ops->stats(ep, st);
}

static inline void xport_close(struct xport_ep *ep)
{
	if (ep)
		ep->ops->close(ep);
}

static inline const char *xport_error(const struct xport_ep *ep)
{
	return ep->err;
}

/* Record why an endpoint failed (for transports). */
void xport_set_error(struct xport_ep *ep, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Split "host:port" / "[v6]:port" into its parts: 0, or -EINVAL with @err
 * saying what is wrong. @host gets "" for ":port".
 */
int xport_split_addr(const char *addr, char *host, size_t host_len,
		     char *port, size_t port_len, char *err, size_t err_len);
/*
 * Resolve "host:port" (xport_split_addr) to stream-socket addresses for
 * listening (@passive: an empty host means every address) or connecting:
 * 0 with *@res to freeaddrinfo(), or -errno with @err saying why.
 */
struct addrinfo;
int xport_resolve(const char *addr, bool passive, struct addrinfo **res,
		  char *err, size_t err_len);
/* "1.2.3.4:5" or "[::1]:5"; "" for an unknown family. Returns @buf. */
const char *xport_fmt_sockaddr(const struct sockaddr *sa, char *buf,
			       size_t len);

/*
 * Receive buffer pool: payload buffers in power-of-two size classes from
 * 4 KiB to PROTO_PAYLOAD_MAX, cached for reuse, with at most @budget bytes
 * allocated (in use + cached; at least 2 x PROTO_PAYLOAD_MAX). When a get
 * fails for lack of budget, the next put calls @wake (under the pool's
 * lock: keep it short, e.g. an eventfd write) so the stalled receiver can
 * try again. Thread-safe.
 */
struct xport_pool *xport_pool_new(size_t budget, void (*wake)(void *arg),
				  void *wake_arg);
/*
 * Drop the owner's reference: no more wake calls after this returns; the
 * memory goes when the last buffer is put.
 */
void xport_pool_free(struct xport_pool *pool);
/* A buffer of at least @len bytes (1..PROTO_PAYLOAD_MAX), buf->len = @len;
 * NULL with errno EAGAIN (budget used up) or EINVAL. */
struct xport_buf *xport_pool_get(struct xport_pool *pool, size_t len);
/* Bytes allocated now (in use + cached), and in use only. */
void xport_pool_usage(struct xport_pool *pool, size_t *allocated,
		      size_t *in_use);

/* Give a received payload buffer back; any thread; NULL is ignored. */
void xport_buf_put(struct xport_buf *buf);

#endif
