/* SPDX-License-Identifier: MIT */
/*
 * proto — the replication wire protocol: frame codec and streaming parser.
 *
 * A frame is a 32-byte header, a fixed part whose size depends only on the
 * message type, and an optional payload (written data, bitmap pages):
 *
 *	[ header 32 | fixed part 0..128 | payload 0..1 MiB ]
 *
 * so that a transport can send header + fixed part in one piece and the
 * payload straight from (or into) an I/O buffer: TCP with an iovec, RDMA
 * with a registered buffer. The header carries a CRC32C of itself and one
 * of the fixed part; the payload is covered by an optional per-write digest
 * (CRC32C or SHA-256). Every field is big-endian. The byte-level layout and
 * the semantics of each message: docs/protocol.md. The packed wire structs
 * live in proto.c next to their only converters; this header is the
 * CPU-side view.
 *
 * Every length, offset and count read from the wire is validated before it
 * is used, against the limits the caller gives (device size, bitmap
 * granularity): a malformed frame is -EBADMSG with a reason naming the
 * field, and the caller drops the connection. The parser never sizes an
 * allocation from the wire.
 *
 * Pure logic: no sockets, threads or file I/O.
 */
#ifndef DUET_PROTO_H
#define DUET_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* "DUET" read as a big-endian 32-bit number. */
#define PROTO_MAGIC 0x44554554u

/*
 * Versions this build speaks. The header and the HELLO message are the same
 * in every version (they are how versions get negotiated); everything else
 * may change with the version.
 */
#define PROTO_VERSION_MIN 1
#define PROTO_VERSION_MAX 1

#define PROTO_HDR_SIZE 32u
#define PROTO_FIXED_MAX 128u		/* largest fixed part (HELLO) */
#define PROTO_DATA_MAX (1u << 20)	/* largest DATA / RS_DATA payload */
#define PROTO_BM_PAGE_SIZE 4096u	/* = BM_PAGE_SIZE */
#define PROTO_BM_PAGES_MAX (PROTO_DATA_MAX / PROTO_BM_PAGE_SIZE)
#define PROTO_PAYLOAD_MAX PROTO_DATA_MAX
#define PROTO_FRAME_MAX (PROTO_HDR_SIZE + PROTO_FIXED_MAX + PROTO_PAYLOAD_MAX)

#define PROTO_NAME_MAX 64	/* resource name field, NUL included */
#define PROTO_TEXT_MAX 120	/* DISCONNECT text field, NUL included */
#define PROTO_CHALLENGE_SIZE 32
#define PROTO_MAC_SIZE 32	/* HMAC-SHA256 */
#define PROTO_DIGEST_MAX 32	/* SHA-256; a CRC32C uses the first 4 bytes */
#define PROTO_ERRNO_MAX 4095	/* result fields carry 0 or a Linux errno */

enum proto_type {
	PROTO_HELLO = 1,	/* handshake: who I am, my challenge */
	PROTO_AUTH,		/* handshake: my answer to your challenge */
	PROTO_AUTH_RESULT,	/* handshake: your answer was (not) right */
	PROTO_STATE,		/* role, disk state, generation UUIDs */
	PROTO_BITMAP,		/* a run of dirty-bitmap pages */
	PROTO_DATA,		/* a replicated write */
	PROTO_ACK_RECV,		/* protocol B: DATA received */
	PROTO_ACK_WRITE,	/* protocol C: DATA written (result) */
	PROTO_BARRIER,		/* closes an epoch of writes */
	PROTO_BARRIER_ACK,	/* every write of that epoch is written */
	PROTO_RS_REQUEST,	/* resync target: send me this block */
	PROTO_RS_DATA,		/* resync source: here it is */
	PROTO_RS_CSUM,		/* resync target: send it unless it hashes so */
	PROTO_RS_IN_SYNC,	/* resync source: it does, block is identical */
	PROTO_RS_ACK,		/* resync target: block written / marked clean */
	PROTO_OV_REQUEST,	/* online verify: hash this block */
	PROTO_OV_REPLY,		/* online verify: its digest */
	PROTO_RS_DONE,		/* resync or verify finished */
	PROTO_PING,
	PROTO_PING_ACK,
	PROTO_DISCONNECT,	/* reason code and text; then close */
	PROTO_READ_REQUEST,	/* a diskless node: read this from your disk */
	PROTO_READ_DATA,	/* the answer: the data, or the errno */
	PROTO_TYPE_END,
};

/* Feature bits offered in HELLO; the connection uses the AND of both. */
enum proto_feature {
	PROTO_F_DISCARD = 1u << 0,	/* DATA op DISCARD */
	PROTO_F_WRITE_ZEROES = 1u << 1, /* DATA op WRITE_ZEROES */
	PROTO_F_CSUM_RESYNC = 1u << 2,	/* RS_CSUM / RS_IN_SYNC */
	PROTO_F_VERIFY = 1u << 3,	/* OV_REQUEST / OV_REPLY */
	PROTO_F_REMOTE_READ = 1u << 4,	/* READ_REQUEST / READ_DATA */
	PROTO_F_ALL = (1u << 5) - 1,	/* what this build implements */
};

/* Which end of the TCP connection a node is; part of the HMAC input. */
enum proto_hs_role {
	PROTO_HS_INITIATOR = 1,	/* connected out */
	PROTO_HS_ACCEPTOR = 2,	/* accepted */
};

/* Replication protocol (when a write completes on the primary). */
enum proto_repl {
	PROTO_REPL_A = 1,	/* local write done + handed to the transport */
	PROTO_REPL_B = 2,	/* ... + peer received (ACK_RECV) */
	PROTO_REPL_C = 3,	/* ... + peer wrote it (ACK_WRITE) */
};

enum proto_digest {
	PROTO_DIGEST_NONE = 0,
	PROTO_DIGEST_CRC32C = 1,	/* 4 bytes, big-endian */
	PROTO_DIGEST_SHA256 = 2,	/* 32 bytes */
};

enum proto_auth_status {
	PROTO_AUTH_OK = 0,
	PROTO_AUTH_FAILED = 1,
};

enum proto_role {
	PROTO_ROLE_SECONDARY = 1,
	PROTO_ROLE_PRIMARY = 2,
};

enum proto_disk {
	PROTO_DISK_DISKLESS = 1,	/* no local disk attached */
	PROTO_DISK_INCONSISTENT = 2,	/* mid-sync target: unusable */
	PROTO_DISK_OUTDATED = 3,	/* consistent, known to be behind */
	PROTO_DISK_CONSISTENT = 4,	/* consistent, not known up to date */
	PROTO_DISK_UP_TO_DATE = 5,
};

/* STATE flags. */
enum proto_state_flags {
	PROTO_SF_WAS_PRIMARY = 1u << 0,	   /* md MD_F_PRIMARY */
	PROTO_SF_CRASHED_PRIMARY = 1u << 1, /* md MD_F_CRASHED_PRIMARY */
	PROTO_SF_FULL_SYNC = 1u << 2,	   /* md MD_F_FULL_SYNC */
	PROTO_SF_DISCARD_MY_DATA = 1u << 3, /* connect --discard-my-data */
	PROTO_SF_PAUSED_SYNC = 1u << 4,	   /* the resync is paused */
	PROTO_SF_ALL = (1u << 5) - 1,
};

#define PROTO_HISTORY 4	/* history UUIDs in STATE (= MD_HISTORY) */

/* BITMAP flags. */
#define PROTO_BM_LAST 1u	/* the sender's last BITMAP frame */

enum proto_data_op {
	PROTO_OP_WRITE = 1,
	PROTO_OP_DISCARD = 2,
	PROTO_OP_WRITE_ZEROES = 3,
};

/* DATA flags. */
#define PROTO_DF_FUA 1u		/* write through to stable media */

/* BARRIER flags. */
#define PROTO_BF_FLUSH 1u	/* flush the disk before BARRIER_ACK */

enum proto_rs_kind {
	PROTO_RS_KIND_RESYNC = 1,
	PROTO_RS_KIND_VERIFY = 2,
};

enum proto_disc_reason {
	PROTO_DISC_SHUTDOWN = 1,	/* administrative: down / disconnect */
	PROTO_DISC_PROTOCOL = 2,	/* malformed or unexpected frame */
	PROTO_DISC_AUTH = 3,		/* authentication failed */
	PROTO_DISC_RESOURCE = 4,	/* resource name differs */
	PROTO_DISC_VERSION = 5,		/* no common protocol version */
	PROTO_DISC_SIZE = 6,		/* device size or granularity differs */
	PROTO_DISC_NODE_ID = 7,		/* node id clash or unexpected */
	PROTO_DISC_FEATURES = 8,	/* a required feature is missing */
	PROTO_DISC_CONFIG = 9,		/* repl protocol / digest / role clash */
	PROTO_DISC_TWO_PRIMARIES = 10,	/* both are primary */
	PROTO_DISC_SPLIT_BRAIN = 11,	/* generations diverged */
	PROTO_DISC_IO_ERROR = 12,	/* local disk failed */
	PROTO_DISC_END,
};

/* CPU-side fixed parts. Field units are on the fields. */
struct proto_hello {
	uint16_t version_min;
	uint16_t version_max;
	uint8_t hs_role;		/* enum proto_hs_role */
	uint8_t repl;			/* enum proto_repl */
	uint8_t data_digest;		/* enum proto_digest used for DATA */
	uint32_t node_id;		/* 0..MD_NODE_ID_MAX */
	uint32_t bm_granularity;	/* bytes of data per bitmap bit */
	uint64_t features;		/* enum proto_feature, offered */
	uint64_t data_bytes;		/* device data size, bytes */
	uint8_t challenge[PROTO_CHALLENGE_SIZE];
	char resource[PROTO_NAME_MAX];	/* NUL-terminated */
};

struct proto_auth {
	uint8_t mac[PROTO_MAC_SIZE];
};

struct proto_auth_result {
	uint16_t status;	/* enum proto_auth_status */
	uint16_t version;	/* version the sender negotiated */
	uint64_t features;	/* features the sender negotiated */
};

struct proto_state {
	uint8_t role;		/* enum proto_role */
	uint8_t disk;		/* enum proto_disk */
	uint32_t flags;		/* enum proto_state_flags */
	uint64_t current_uuid;
	uint64_t bitmap_uuid;
	uint64_t history[PROTO_HISTORY];
	uint64_t dirty_bits;	/* bits set in the sender's bitmap */
	uint64_t promoted;	/* when the sender last became Primary, s
				 * since the epoch; 0 = not known */
};

struct proto_bitmap {
	uint64_t first_page;	/* index of the first 4 KiB page */
	uint32_t count;		/* pages in the payload */
	uint32_t flags;		/* PROTO_BM_LAST */
};

struct proto_data {
	uint64_t sector;	/* 512-byte sectors */
	uint32_t length;	/* bytes, multiple of 512 */
	uint8_t op;		/* enum proto_data_op */
	uint8_t flags;		/* PROTO_DF_* */
	uint8_t digest_alg;	/* enum proto_digest */
	uint64_t epoch;		/* epoch the write belongs to */
	uint8_t digest[PROTO_DIGEST_MAX];	/* of the payload */
};

/* ACK_RECV, ACK_WRITE, RS_REQUEST, RS_IN_SYNC, RS_ACK, READ_REQUEST. */
struct proto_range {
	uint64_t sector;	/* 512-byte sectors */
	uint32_t length;	/* bytes, multiple of 512 */
	uint32_t result;	/* 0 or errno (ACK_WRITE, RS_ACK) */
};

/* RS_DATA, RS_CSUM, OV_REQUEST, OV_REPLY, READ_DATA. */
struct proto_block {
	uint64_t sector;	/* 512-byte sectors */
	uint32_t length;	/* bytes, multiple of 512 */
	uint32_t result;	/* 0 or errno (RS_DATA, OV_REPLY, READ_DATA) */
	uint8_t digest_alg;	/* enum proto_digest */
	uint8_t digest[PROTO_DIGEST_MAX];
};

/* BARRIER (flags) and BARRIER_ACK (nr_writes). */
struct proto_barrier {
	uint64_t epoch;
	uint32_t flags;		/* BARRIER: PROTO_BF_FLUSH */
	uint32_t nr_writes;	/* BARRIER_ACK: DATA frames in the epoch */
};

struct proto_rs_done {
	uint16_t kind;		/* enum proto_rs_kind */
	uint32_t result;	/* 0 or errno */
	uint64_t sectors;	/* resync: sectors sent; verify: found out of sync */
};

struct proto_disconnect {
	uint32_t reason;		/* enum proto_disc_reason */
	char text[PROTO_TEXT_MAX];	/* NUL-terminated, printable */
};

/* One decoded frame, or one to encode. */
struct proto_msg {
	uint16_t type;		/* enum proto_type */
	uint64_t id;		/* request id; replies copy the request's */
	/*
	 * Decoder: the payload (points into the parser's buffer or the one
	 * given with proto_parser_set_payload). The encoder ignores both:
	 * it derives the payload length from the fixed part, and the caller
	 * sends the payload itself after the encoded bytes.
	 */
	uint32_t payload_len;
	const void *payload;
	union {
		struct proto_hello hello;
		struct proto_auth auth;
		struct proto_auth_result auth_result;
		struct proto_state state;
		struct proto_bitmap bitmap;
		struct proto_data data;
		struct proto_range range;
		struct proto_block block;
		struct proto_barrier barrier;
		struct proto_rs_done rs_done;
		struct proto_disconnect disconnect;
	};
};

/*
 * What the decoder checks positions and counts against. dev_bytes 0 means
 * "not known yet" (before the handshake): every frame naming a sector or a
 * bitmap page is then refused.
 */
struct proto_limits {
	uint64_t dev_bytes;		/* device data size, bytes */
	uint32_t bm_granularity;	/* bytes per bitmap bit */
};

/* "DATA", "HELLO", ...; "?" for an unknown type. */
const char *proto_type_name(unsigned int type);
const char *proto_disc_name(unsigned int reason);
const char *proto_digest_name(unsigned int alg);

/* Size of the fixed part of @type; -EINVAL for an unknown type. */
int proto_fixed_size(unsigned int type);

/* Payload bytes that follow the fixed part of @m (e.g. DATA: length for a
 * write, 0 for a discard). */
uint32_t proto_payload_len(const struct proto_msg *m);

/*
 * Encode the header and fixed part of @m into @buf; the caller sends
 * proto_payload_len(m) bytes of payload after them. No allocation: cheap
 * enough for every write. Runs the decoder's checks except the device
 * bounds, so a bug elsewhere cannot put a frame on the wire that the peer
 * would refuse. Returns the number of bytes written (PROTO_HDR_SIZE + the
 * fixed size), -EINVAL for an invalid message (@why says which field, may
 * be NULL), -ENOSPC if @len is too small.
 */
ssize_t proto_encode(const struct proto_msg *m, void *buf, size_t len,
		     char *why, size_t why_len);

/*
 * Decode one complete frame at the start of @buf (header, fixed part,
 * payload, and the payload digest if any), checking against @lim (NULL:
 * nothing known yet, as for the parser). On success returns 0, fills @m
 * (m->payload points into @buf) and sets *@frame_len. Returns -EBADMSG for
 * a malformed or truncated frame, with @why naming the field ("truncated"
 * when @len ends inside the frame). The parts are checked in the order the
 * parser checks them, so both give the same verdict on the same bytes.
 */
int proto_decode(const void *buf, size_t len, const struct proto_limits *lim,
		 struct proto_msg *m, size_t *frame_len, char *why,
		 size_t why_len);

/*
 * Digest of a payload: fills all PROTO_DIGEST_MAX bytes of @out (unused
 * tail zeroed). Returns 0, -EINVAL for an unknown algorithm, -EIO if
 * libcrypto fails.
 */
int proto_digest(unsigned int alg, const void *data, size_t len,
		 uint8_t out[PROTO_DIGEST_MAX]);

/*
 * Streaming parser: turns the byte stream of a connection, delivered in
 * arbitrary pieces, into frames. Two ways to drive it:
 *
 *  copy: hand it whatever arrived;
 *	while (len) {
 *		r = proto_parser_feed(p, data, len, &n);
 *		data += n, len -= n;
 *		if (r < 0)
 *			drop the connection (proto_parser_error says why);
 *		if (r == PROTO_PARSE_FRAME)
 *			handle(proto_parser_msg(p));
 *	}
 *
 *  direct: read exactly what it needs where it needs it, e.g. recv() or
 *	an RDMA receive straight into the next slot;
 *	buf = proto_parser_buf(p, &want);
 *	n = recv(fd, buf, want, 0);
 *	r = proto_parser_advance(p, n);
 *
 * Either way, PROTO_PARSE_PAYLOAD announces a frame whose header and fixed
 * part are decoded and validated (proto_parser_msg is readable) and whose
 * payload comes next: that is the moment to call proto_parser_set_payload
 * to have it land in an I/O buffer. Otherwise the parser keeps it in its
 * own buffer, allocated once at PROTO_PAYLOAD_MAX, never at a size read
 * from the wire. Errors are sticky: after one, every call fails.
 */
enum proto_parse_status {
	PROTO_PARSE_MORE = 0,	/* need more bytes */
	PROTO_PARSE_PAYLOAD = 1, /* header + fixed part ready, payload next */
	PROTO_PARSE_FRAME = 2,	/* a complete frame: proto_parser_msg */
};

struct proto_parser;

/* NULL with errno ENOMEM. @lim may be NULL (nothing known yet). */
struct proto_parser *proto_parser_new(const struct proto_limits *lim);
void proto_parser_free(struct proto_parser *p);

/* Install the limits negotiated by the handshake. */
void proto_parser_set_limits(struct proto_parser *p,
			     const struct proto_limits *lim);

/*
 * Consume up to @len bytes of @data, stopping after an event. Sets
 * *@consumed. Returns enum proto_parse_status, -EBADMSG (malformed),
 * -ENOMEM (payload buffer).
 */
int proto_parser_feed(struct proto_parser *p, const void *data, size_t len,
		      size_t *consumed);

/*
 * Where the next bytes go and how many the parser needs before it can
 * decide anything more (*@want > 0). NULL with errno set after an error
 * (EBADMSG) or when the payload buffer cannot be allocated (ENOMEM).
 */
void *proto_parser_buf(struct proto_parser *p, size_t *want);

/* @n bytes were written at proto_parser_buf(); @n <= want. Same returns as
 * proto_parser_feed; -EINVAL if @n is too large. */
int proto_parser_advance(struct proto_parser *p, size_t n);

/*
 * Direct the payload of the announced frame into @buf (at least
 * msg->payload_len bytes). Only right after PROTO_PARSE_PAYLOAD: -EINVAL
 * otherwise.
 */
int proto_parser_set_payload(struct proto_parser *p, void *buf);

/* The current frame, valid after PROTO_PARSE_PAYLOAD / _FRAME until the next
 * feed or advance. NULL if there is none. */
const struct proto_msg *proto_parser_msg(const struct proto_parser *p);

/* Why the stream was refused; "" if it was not. */
const char *proto_parser_error(const struct proto_parser *p);

#endif
