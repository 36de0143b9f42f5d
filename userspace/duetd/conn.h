/* SPDX-License-Identifier: MIT */
/*
 * conn_ — the connection to the peer of one resource, on its own thread.
 *
 * Each node listens on its own address and connects to the peer's, over
 * the transport the configuration names (xport_). Every connection runs
 * the handshake (hs_): version and features, configuration cross-checks,
 * mutual HMAC authentication. When both nodes reach each other at the same
 * moment, the one initiated by the lower node id is kept (the rule and why
 * it cannot flap: docs/replication.md, "Transports and connections"). A
 * failed attempt is retried forever, with exponential back-off and jitter
 * between reconnect-min and reconnect-max; a refusal (wrong secret, wrong
 * resource, sizes...) backs off straight to reconnect-max and is logged at
 * most once per reason per CONN_LOG_QUIET_MS.
 *
 * Once connected, conn_ keeps the link alive with PING / PING_ACK: a PING
 * when nothing was sent for ping-interval (so the peer hears from us at
 * least that often), or nothing received for that long; nothing received
 * for ping-interval + connect-timeout, and the connection is lost (while
 * our own owner holds every receive buffer, the silence is ours and does
 * not count). The owner (the daemon) sees three events, all on the connection
 * thread: established, frame received, lost. It sends with conn_send() from
 * any thread.
 *
 * Flow control: conn_send() may have at most sendq_msgs messages and
 * sendq_bytes bytes (head + payload) not handed over to the transport yet.
 * Beyond that it returns -EAGAIN at once (timeout 0) or waits up to a
 * timeout for room, so a slow peer pushes back on the writers instead of
 * growing memory. Received payloads come in buffers from a pool of at most
 * rx_bytes; while the owner holds them all, the connection stops reading
 * and TCP pushes back on the peer.
 *
 * Memory: sendq_bytes of the owner's buffers are referenced, not copied;
 * conn_ itself allocates the receive pool (rx_bytes), one request slot per
 * sendq_msgs, and 64 KiB of staging per connection attempt (at most
 * CONN_LINKS_MAX). With the defaults that is about 17 MiB at most.
 */
#ifndef DUET_CONN_H
#define DUET_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "cfg.h"
#include "proto.h"
#include "xport.h"

#define CONN_SENDQ_MSGS 1024		/* default send queue, messages */
#define CONN_SENDQ_BYTES (16u << 20)	/* default send queue, bytes */
#define CONN_RX_BYTES (16u << 20)	/* default receive buffer budget */
#define CONN_POLL_MAX_MS 1000		/* the thread wakes at least this often */
#define CONN_LINKS_MAX 6		/* connections at once, all states */
#define CONN_LOG_QUIET_MS 60000		/* a repeated failure is logged once */
#define CONN_REASON_MAX 256

enum conn_status {
	CONN_STANDALONE = 0,	/* not started, or stopped */
	CONN_CONNECTING,	/* started, no connection to the peer */
	CONN_CONNECTED,		/* authenticated, frames flow */
};

struct conn_opts {
	const struct cfg_resource *res;	/* copied; name, secret, timeouts */
	const struct cfg_node *self;	/* our node, one of res->nodes */
	uint64_t data_bytes;		/* device data size, bytes (HELLO) */
	uint64_t features;		/* offered, within PROTO_F_ALL */
	uint64_t required;		/* refuse a peer without these */
	uint32_t sendq_msgs;		/* 0: CONN_SENDQ_MSGS */
	uint64_t sendq_bytes;		/* 0: CONN_SENDQ_BYTES; >= 2 MiB */
	uint64_t rx_bytes;		/* 0: CONN_RX_BYTES; >= 2 MiB */
	/*
	 * Wait this long after conn_start before connecting out, ms, so that
	 * two nodes started together both listen before either connects.
	 */
	uint32_t first_dial_ms;
};

/* Who we are connected to, for the established callback. */
struct conn_peer {
	uint32_t node_id;
	uint16_t version;		/* negotiated protocol version */
	uint64_t features;		/* negotiated (AND of both offers) */
	struct proto_hello hello;	/* the peer's HELLO */
	bool outgoing;			/* we connected to the peer */
	char addr[XPORT_ADDR_MAX];	/* the peer's end */
	char local[XPORT_ADDR_MAX];	/* our end */
};

/* Every callback runs on the connection thread. */
struct conn_cbs {
	/*
	 * Required. A connection to the peer is up: conn_send works from now
	 * until lost(). Called once per connection; never twice in a row.
	 */
	void (*established)(void *arg, const struct conn_peer *peer);
	/*
	 * Required. A frame from the peer (not handshake, PING, PING_ACK or
	 * DISCONNECT: conn_ handles those). @buf is NULL without a payload;
	 * otherwise the callee owns it and gives it back with xport_buf_put()
	 * from any thread, e.g. once the payload is on disk.
	 */
	void (*frame)(void *arg, const struct proto_msg *m,
		      struct xport_buf *buf);
	/*
	 * Required. The connection reported by established() is gone (@err:
	 * -ECONNRESET, -ETIMEDOUT, -EBADMSG, ...; -ESHUTDOWN: conn_stop() or
	 * conn_give_up() here, or the peer left on purpose; @reason: a
	 * sentence). Every send not handed over has completed with
	 * -ECONNRESET before this is called.
	 */
	void (*lost)(void *arg, int err, const char *reason);
};

/*
 * Completion of conn_send: called exactly once if conn_send returned 0, on
 * the connection thread: 0 when the frame was handed over to the transport
 * (protocol A's "sent"), -ECONNRESET when the connection went first.
 */
typedef void (*conn_done_fn)(void *arg, int err);

/* Status and figures. Counters are since conn_create. */
struct conn_info {
	enum conn_status status;
	char peer_addr[XPORT_ADDR_MAX];	/* connected: the peer's end; else
					 * the configured address */
	char local_addr[XPORT_ADDR_MAX];	/* connected: our end */
	bool outgoing;			/* connected: we connected out */
	char last_error[CONN_REASON_MAX]; /* why the last attempt or
					   * connection failed; "" if none */
	uint64_t dials;			/* outgoing attempts */
	uint64_t accepts;		/* incoming connections accepted */
	uint64_t refusals;		/* handshakes refused (either side) */
	uint64_t connects;		/* times established */
	uint64_t reconnects;		/* established after a loss */
	uint64_t losses;		/* established connections lost */
	uint64_t pings_sent, pongs_recv;
	uint32_t rtt_us;		/* of the last PING, 0 if none */
	uint64_t bytes_sent, bytes_recv; /* all connections, wire bytes */
	uint64_t msgs_sent, msgs_recv;
	uint32_t sendq_msgs;		/* conn_send not handed over yet */
	uint64_t sendq_bytes;
	uint32_t backoff_ms;		/* current reconnect delay */
};

/*
 * Check the options and allocate. NULL with errno: EINVAL (no peer, bad
 * option: logged), EPROTONOSUPPORT (transport not built in), ENOMEM.
 */
struct conn *conn_create(const struct conn_opts *o, const struct conn_cbs *cbs,
			 void *arg);
/* Stops it first if needed. */
void conn_destroy(struct conn *c);

/*
 * Listen on our address and start the connection thread. 0, or -errno if
 * the listener cannot be set up (-EADDRINUSE, -EADDRNOTAVAIL, ...: logged)
 * or the thread not started; -EALREADY if running.
 */
int conn_start(struct conn *c);
/*
 * Tell the peer (DISCONNECT shutdown), close everything, join the thread:
 * lost() is called if a connection was up. Not from a callback. Back to
 * CONN_STANDALONE; conn_start may be called again.
 */
void conn_stop(struct conn *c);

/*
 * Queue a frame for the peer; any thread. @payload must hold
 * proto_payload_len(m) bytes and stay untouched until @done (may be NULL
 * when there is no payload). The frame is validated by proto_encode.
 * @timeout_ms: how long to wait for room in a full send queue: 0 not at
 * all, < 0 without limit. Returns 0 (then @done will be called once),
 * -ENOTCONN when not connected (at once, whatever the timeout; also if the
 * connection goes while waiting), -EAGAIN when the queue is still full,
 * -EINVAL for an invalid frame or one conn_ owns (handshake, PING,
 * PING_ACK, DISCONNECT). Frames queued for a connection that is lost are
 * never sent on the next one.
 */
int conn_send(struct conn *c, const struct proto_msg *m, const void *payload,
	      conn_done_fn done, void *arg, int timeout_ms);
/*
 * conn_send() of a frame without payload (timeout -1), without waking the
 * connection thread: for a burst of answers, which conn_push() then
 * announces with one wake-up instead of one each. If it must wait for
 * room, it wakes the thread first. 0 or -errno as conn_send().
 */
int conn_send_lazy(struct conn *c, const struct proto_msg *m);
/* Wake the connection thread for what conn_send_lazy() queued. */
void conn_push(struct conn *c);

/*
 * Tell the peer why (DISCONNECT @reason, @text) and close the connection
 * after what is queued; reconnect after reconnect-max. -ENOTCONN if not
 * connected. Any thread, callbacks included.
 */
int conn_disconnect(struct conn *c, unsigned int reason, const char *text);

/*
 * Stop trying (StandAlone), from any thread, callbacks included: tell the
 * peer why (DISCONNECT @reason, @text) if connected, close everything, and
 * let the connection thread end; lost() is called if a connection was up.
 * conn_start() starts again (joining the ended thread), conn_stop() joins
 * it. -EALREADY when not running or already stopping.
 */
int conn_give_up(struct conn *c, unsigned int reason, const char *text);

/*
 * Take the adjustable keys from @res: connect-timeout, ping-interval and
 * the back-off apply from the next event they govern; the kernel's
 * TCP_USER_TIMEOUT and keepalive (derived from them) from the next
 * conn_start. Any thread.
 */
void conn_adjust(struct conn *c, const struct cfg_resource *res);

void conn_state(struct conn *c, struct conn_info *out);
/* "StandAlone", "Connecting", "Connected". */
const char *conn_status_name(enum conn_status s);

#endif
