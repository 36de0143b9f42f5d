/* SPDX-License-Identifier: MIT */
/*
 * nbdp — the NBD protocol, server side: the fixed-newstyle handshake as a
 * byte-driven state machine, and the transmission-phase request decoder,
 * validator and simple-reply encoder. The numbers come from the NBD
 * protocol specification (NetworkBlockDevice/nbd, doc/proto.md); what duet
 * implements of it, and why, is in docs/nbd.md.
 *
 * Handshake (one struct nbdp_hs per accepted connection):
 *
 *	S: NBDMAGIC IHAVEOPT handshake-flags		(queued by nbdp_hs_new)
 *	C: client-flags
 *	C: IHAVEOPT option length data ...		(repeated)
 *	S: REP_MAGIC option reply-type length data ...	(per option)
 *	    ... until NBD_OPT_GO is acknowledged or NBD_OPT_EXPORT_NAME is
 *	    answered with size and transmission flags: transmission phase.
 *
 * The caller moves the bytes: it sends what nbdp_hs_out() holds and feeds
 * what arrives to nbdp_hs_feed() in pieces of any size. The machine never
 * reads past the option that ends the handshake, so bytes left over in
 * the caller's buffer are the first request of the transmission phase.
 * It stops consuming while output is pending, so its output buffer stays
 * bounded even when a client pipelines options without reading replies.
 *
 *	for (;;) {
 *		send nbdp_hs_out() and nbdp_hs_out_done() what was sent;
 *		if (step is DONE, ABORT or CLOSE) break;
 *		if (nothing buffered) read some;
 *		step = nbdp_hs_feed(hs, buf, len, &used); drop used bytes;
 *	}
 *
 * Transmission: every request is a 28-byte header (NBDP_REQ_SIZE), plus
 * the data for NBD_CMD_WRITE. nbdp_req_decode() checks the magic,
 * nbdp_req_check() everything else against the export; replies are
 * simple replies (16 bytes, then the data of a successful read), since
 * structured replies are not negotiated.
 *
 * Pure logic: no sockets, threads or file I/O.
 */
#ifndef DUET_NBDP_H
#define DUET_NBDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Magic numbers, as the big-endian values on the wire. */
#define NBDP_MAGIC 0x4e42444d41474943ull	/* "NBDMAGIC" */
#define NBDP_OPTS_MAGIC 0x49484156454f5054ull	/* "IHAVEOPT" */
#define NBDP_REP_MAGIC 0x0003e889045565a9ull	/* option replies */
#define NBDP_REQUEST_MAGIC 0x25609513u
#define NBDP_SIMPLE_REPLY_MAGIC 0x67446698u
/* Only negotiated with NBD_OPT_EXTENDED_HEADERS, which we refuse. */
#define NBDP_EXTENDED_REQUEST_MAGIC 0x21e41c71u

/* Sizes on the wire, bytes. */
#define NBDP_GREETING_SIZE 18	/* magic, opts magic, handshake flags */
#define NBDP_CLIENT_FLAGS_SIZE 4
#define NBDP_OPT_HDR_SIZE 16	/* opts magic, option, length */
#define NBDP_REP_HDR_SIZE 20	/* rep magic, option, type, length */
#define NBDP_EXPORT_REPLY_SIZE 10 /* size + flags after NBD_OPT_EXPORT_NAME */
#define NBDP_EXPORT_ZEROES 124	/* ... then these, unless NO_ZEROES */
#define NBDP_REQ_SIZE 28
#define NBDP_REPLY_SIZE 16	/* simple reply header */

/* Handshake flags (server, 16 bits). */
#define NBDP_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBDP_FLAG_NO_ZEROES (1u << 1)

/* Client flags (32 bits); any other bit ends the session. */
#define NBDP_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBDP_FLAG_C_NO_ZEROES (1u << 1)

/* Transmission flags (16 bits). */
#define NBDP_TF_HAS_FLAGS (1u << 0)
#define NBDP_TF_READ_ONLY (1u << 1)
#define NBDP_TF_SEND_FLUSH (1u << 2)
#define NBDP_TF_SEND_FUA (1u << 3)
#define NBDP_TF_ROTATIONAL (1u << 4)
#define NBDP_TF_SEND_TRIM (1u << 5)
#define NBDP_TF_SEND_WRITE_ZEROES (1u << 6)
#define NBDP_TF_SEND_DF (1u << 7)
#define NBDP_TF_CAN_MULTI_CONN (1u << 8)
#define NBDP_TF_SEND_RESIZE (1u << 9)
#define NBDP_TF_SEND_CACHE (1u << 10)
#define NBDP_TF_SEND_FAST_ZERO (1u << 11)
/* What an export may advertise: the features nbdp_req_check validates. DF
 * needs structured replies, RESIZE and CACHE are not implemented. */
#define NBDP_TF_SUPPORTED                                                     \
	(NBDP_TF_HAS_FLAGS | NBDP_TF_READ_ONLY | NBDP_TF_SEND_FLUSH |         \
	 NBDP_TF_SEND_FUA | NBDP_TF_ROTATIONAL | NBDP_TF_SEND_TRIM |          \
	 NBDP_TF_SEND_WRITE_ZEROES | NBDP_TF_CAN_MULTI_CONN |                 \
	 NBDP_TF_SEND_FAST_ZERO)

/* Options. */
enum nbdp_opt {
	NBDP_OPT_EXPORT_NAME = 1,
	NBDP_OPT_ABORT = 2,
	NBDP_OPT_LIST = 3,
	NBDP_OPT_PEEK_EXPORT = 4,	/* withdrawn */
	NBDP_OPT_STARTTLS = 5,
	NBDP_OPT_INFO = 6,
	NBDP_OPT_GO = 7,
	NBDP_OPT_STRUCTURED_REPLY = 8,
	NBDP_OPT_LIST_META_CONTEXT = 9,
	NBDP_OPT_SET_META_CONTEXT = 10,
	NBDP_OPT_EXTENDED_HEADERS = 11,
};

/* Option reply types; errors have bit 31 set. */
#define NBDP_REP_ERR_BIT (1u << 31)
enum nbdp_rep {
	NBDP_REP_ACK = 1,
	NBDP_REP_SERVER = 2,
	NBDP_REP_INFO = 3,
	NBDP_REP_META_CONTEXT = 4,
	NBDP_REP_ERR_UNSUP = NBDP_REP_ERR_BIT + 1,
	NBDP_REP_ERR_POLICY = NBDP_REP_ERR_BIT + 2,
	NBDP_REP_ERR_INVALID = NBDP_REP_ERR_BIT + 3,
	NBDP_REP_ERR_PLATFORM = NBDP_REP_ERR_BIT + 4,
	NBDP_REP_ERR_TLS_REQD = NBDP_REP_ERR_BIT + 5,
	NBDP_REP_ERR_UNKNOWN = NBDP_REP_ERR_BIT + 6,
	NBDP_REP_ERR_SHUTDOWN = NBDP_REP_ERR_BIT + 7,
	NBDP_REP_ERR_BLOCK_SIZE_REQD = NBDP_REP_ERR_BIT + 8,
	NBDP_REP_ERR_TOO_BIG = NBDP_REP_ERR_BIT + 9,
};

/* NBD_REP_INFO types (16 bits). */
enum nbdp_info {
	NBDP_INFO_EXPORT = 0,		/* size (64), transmission flags (16) */
	NBDP_INFO_NAME = 1,		/* canonical export name */
	NBDP_INFO_DESCRIPTION = 2,	/* human-readable text */
	NBDP_INFO_BLOCK_SIZE = 3,	/* min, preferred, max payload (32) */
};

/* Command flags (16 bits). */
#define NBDP_CMD_FLAG_FUA (1u << 0)
#define NBDP_CMD_FLAG_NO_HOLE (1u << 1)
#define NBDP_CMD_FLAG_DF (1u << 2)
#define NBDP_CMD_FLAG_REQ_ONE (1u << 3)
#define NBDP_CMD_FLAG_FAST_ZERO (1u << 4)

enum nbdp_cmd {
	NBDP_CMD_READ = 0,
	NBDP_CMD_WRITE = 1,
	NBDP_CMD_DISC = 2,
	NBDP_CMD_FLUSH = 3,
	NBDP_CMD_TRIM = 4,
	NBDP_CMD_CACHE = 5,
	NBDP_CMD_WRITE_ZEROES = 6,
	NBDP_CMD_BLOCK_STATUS = 7,
};

/* Error values of the reply (not errno: the protocol fixes these). */
enum nbdp_err {
	NBDP_EPERM = 1,
	NBDP_EIO = 5,
	NBDP_ENOMEM = 12,
	NBDP_EINVAL = 22,
	NBDP_ENOSPC = 28,
	NBDP_EOVERFLOW = 75,
	NBDP_ENOTSUP = 95,
	NBDP_ESHUTDOWN = 108,
};

/* Limits. */
#define NBDP_STRING_MAX 4096	/* any string on the wire (spec: MUST) */
#define NBDP_OWN_STRING_MAX 256	/* our export name and description */
/*
 * Option data we read into memory: a GO/INFO naming a 4096-byte export
 * with ~2000 information requests. A known option with more data is
 * skipped and answered NBD_REP_ERR_TOO_BIG.
 */
#define NBDP_OPT_DATA_MAX 8192u
/* Option data above this is not even skipped: the client is flooding us
 * and the session ends (the spec allows a hard disconnect for that). */
#define NBDP_OPT_SKIP_MAX (1u << 20)
/* Options per handshake; a client that is still haggling after this many
 * is not trying to connect. */
#define NBDP_OPTS_MAX 128
/* Largest READ / WRITE payload: the spec's 2^25, which a server SHOULD
 * accept and which the export's max_payload may not exceed. */
#define NBDP_PAYLOAD_MAX (1u << 25)
#define NBDP_MIN_BLOCK_MAX (1u << 16)

/*
 * The export this server offers: one per server (a duet resource is one
 * device). Its name and the empty name (the "default export") select it.
 */
struct nbdp_export {
	const char *name;	/* 1..NBDP_OWN_STRING_MAX bytes */
	const char *description; /* NULL or 0..NBDP_OWN_STRING_MAX bytes */
	uint64_t size;		/* bytes; a multiple of min_block */
	uint16_t tflags;	/* NBDP_TF_*, within NBDP_TF_SUPPORTED; the
				 * HAS_FLAGS bit is added */
	uint32_t min_block;	/* bytes: power of 2, 1..64 KiB */
	uint32_t pref_block;	/* bytes: power of 2, >= min_block and 512 */
	uint32_t max_payload;	/* bytes: pref_block..NBDP_PAYLOAD_MAX */
	/*
	 * NULL, or why the export cannot be used right now (e.g. "r0 is
	 * secondary"): NBD_OPT_GO is then answered NBD_REP_ERR_POLICY with
	 * this text and NBD_OPT_EXPORT_NAME ends the session. NBD_OPT_INFO
	 * and NBD_OPT_LIST still answer.
	 */
	const char *refuse;
};

/*
 * Check @e against the rules above (and the spec's rules on block sizes).
 * Returns 0, or -EINVAL with @why (may be NULL) naming the field.
 */
int nbdp_export_check(const struct nbdp_export *e, char *why, size_t why_len);

/* ------------------------------------------------------------ handshake */

enum nbdp_hs_step {
	NBDP_HS_NEED_INPUT = 1,	/* all input consumed; read more */
	NBDP_HS_SEND,		/* send nbdp_hs_out(), then feed the rest */
	NBDP_HS_DONE,		/* export chosen: send nbdp_hs_out(), then
				 * the transmission phase begins with the
				 * input after *used */
	NBDP_HS_ABORT,		/* the client sent NBD_OPT_ABORT: send
				 * nbdp_hs_out() (our ACK), then close */
	NBDP_HS_CLOSE,		/* protocol violation or policy: send
				 * nbdp_hs_out() if any, then close;
				 * nbdp_hs_reason() says why */
};

/* What the handshake agreed on. */
struct nbdp_hs_result {
	uint16_t tflags;	/* as sent to the client (HAS_FLAGS set) */
	uint32_t client_flags;	/* NBDP_FLAG_C_* */
	uint32_t option;	/* NBDP_OPT_GO or NBDP_OPT_EXPORT_NAME */
	/* The client asked for NBD_INFO_BLOCK_SIZE with NBD_OPT_GO, so it
	 * promised to honour min_block and max_payload. */
	bool block_size_agreed;
	unsigned int options;	/* options the client sent, the last included */
};

struct nbdp_hs;

/*
 * Check @e and copy it (strings included); queue the greeting. NULL with
 * errno EINVAL (see the log) or ENOMEM.
 */
struct nbdp_hs *nbdp_hs_new(const struct nbdp_export *e);
void nbdp_hs_free(struct nbdp_hs *hs);

/*
 * Consume bytes from the client, up to @len of @in, and set *@used.
 * Returns an enum nbdp_hs_step. Nothing is consumed while output is
 * pending (NBDP_HS_SEND again); after DONE, ABORT or CLOSE nothing more
 * ever is, and the same step is returned.
 */
enum nbdp_hs_step nbdp_hs_feed(struct nbdp_hs *hs, const void *in, size_t len,
			       size_t *used);

/* The bytes to send, valid until the next call on @hs; *@len 0 if none. */
const void *nbdp_hs_out(const struct nbdp_hs *hs, size_t *len);
/* @n bytes of nbdp_hs_out() were sent (n <= its length). */
void nbdp_hs_out_done(struct nbdp_hs *hs, size_t n);

/* NULL until NBDP_HS_DONE. */
const struct nbdp_hs_result *nbdp_hs_result(const struct nbdp_hs *hs);
/* Why the session ends (ABORT, CLOSE); "" otherwise. */
const char *nbdp_hs_reason(const struct nbdp_hs *hs);

/* --------------------------------------------------------- transmission */

/* One request header, CPU side. */
struct nbdp_req {
	uint16_t flags;		/* NBDP_CMD_FLAG_* */
	uint16_t type;		/* enum nbdp_cmd */
	uint64_t cookie;	/* opaque, echoed in the reply */
	uint64_t offset;	/* bytes from the start of the export */
	uint32_t length;	/* bytes */
};

/*
 * Decode the NBDP_REQ_SIZE bytes at @buf into @r. Returns 0, or -EBADMSG
 * if the magic is wrong (the stream is lost: close the connection).
 */
int nbdp_req_decode(const void *buf, struct nbdp_req *r);
/* The other direction, for clients and tests. */
void nbdp_req_encode(const struct nbdp_req *r, void *buf);

enum nbdp_verdict {
	NBDP_REQ_OK = 0,	/* serve it */
	NBDP_REQ_ERROR,		/* reply with *nbd_err; for a WRITE, read
				 * and drop nbdp_req_payload() bytes first */
	NBDP_REQ_DISC,		/* NBD_CMD_DISC: finish what is in flight,
				 * then close; no reply */
	NBDP_REQ_CLOSE,		/* cannot be answered (a write payload
				 * larger than NBDP_PAYLOAD_MAX): close */
};

/*
 * Validate @r against the export the handshake chose (@e, the same one
 * given to nbdp_hs_new): command advertised, flags valid for it, length
 * not zero (for READ, WRITE, TRIM, WRITE_ZEROES), within max_payload for
 * READ and WRITE, inside the export, aligned to min_block; FLUSH with
 * offset and length 0. Returns an enum nbdp_verdict; for NBDP_REQ_ERROR
 * *@nbd_err is the enum nbdp_err to reply with. *@why (may be NULL) gets
 * a static description of the problem, "" for OK.
 */
enum nbdp_verdict nbdp_req_check(const struct nbdp_export *e,
				 const struct nbdp_req *r, uint32_t *nbd_err,
				 const char **why);

/* Data bytes that follow the header of @r on the wire (a WRITE's length). */
uint32_t nbdp_req_payload(const struct nbdp_req *r);

/* Encode a simple reply (NBDP_REPLY_SIZE bytes) into @buf. */
void nbdp_reply_encode(void *buf, uint32_t nbd_err, uint64_t cookie);

/* A Linux errno (either sign) as an NBD error value; 0 stays 0. */
uint32_t nbdp_errno(int err);

/* "NBD_OPT_GO", "NBD_CMD_READ", ...; "?" when unknown. */
const char *nbdp_opt_name(uint32_t opt);
const char *nbdp_cmd_name(uint16_t type);

#endif
