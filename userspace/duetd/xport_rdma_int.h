/* SPDX-License-Identifier: MIT */
/*
 * xport_rdma internals (internal: only xport_rdma.c and xport_rdma_io.c
 * include this header). xport_rdma.c holds the connection management:
 * endpoints, queue pairs and registered memory, listen, connect and
 * accept, the connection manager's events, the ops table and teardown.
 * xport_rdma_io.c holds the data path: the send batch, RDMA WRITE into
 * the peer's ring, credits, completions, delivery to the handler, the
 * device's asynchronous events, and io(). How the transport works: the
 * top of xport_rdma.c.
 */
#ifndef DUET_XPORT_RDMA_INT_H
#define DUET_XPORT_RDMA_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

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

static inline struct rdma_ep *to_rdma(const struct xport_ep *ep)
{
	return (struct rdma_ep *)ep;
}

/* xport_rdma.c */
int xport_rdma_drain_cm(struct rdma_ep *r);

/* xport_rdma_io.c */
void xport_rdma_all_add(struct rdma_ep *r);
void xport_rdma_all_del(struct rdma_ep *r);
int xport_rdma_post_recv(struct rdma_ep *r, uint32_t slot);
int xport_rdma_send(struct xport_ep *ep, struct xport_msg *msg);
int xport_rdma_io(struct xport_ep *ep, unsigned int what);
void xport_rdma_fail_queue(struct rdma_ep *r);

#endif
