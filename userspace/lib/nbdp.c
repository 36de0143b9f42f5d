// SPDX-License-Identifier: MIT
/*
 * The NBD protocol, server side (see nbdp.h and docs/nbd.md).
 *
 * The handshake machine reads the client's bytes into fixed-size pieces
 * (client flags, option header, option data) and acts when a piece is
 * complete:
 *
 *	CLIENT_FLAGS -> OPT_HDR -> (OPT_DATA | OPT_SKIP) -> OPT_HDR ...
 *	    ... -> DONE (GO acknowledged, EXPORT_NAME answered)
 *	    ... -> ABORT (NBD_OPT_ABORT acknowledged)
 *	    any -> CLOSED (a MUST of the spec broken, or a flooding client)
 *
 * Option data is read into memory only for the options we parse, and only
 * up to NBDP_OPT_DATA_MAX; everything else is counted off (OPT_SKIP) and
 * answered with an error, as the spec asks of a server that does not know
 * an option. No length read from the wire sizes an allocation.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "be.h"
#include "log.h"
#include "nbdp.h"
#include "util.h"

/* ------------------------------------------------------------ the wire */

struct nbdp_w_greeting {
	struct be64 magic;		/* NBDP_MAGIC */
	struct be64 opts_magic;		/* NBDP_OPTS_MAGIC */
	struct be16 flags;		/* NBDP_FLAG_* */
} __attribute__((packed));

struct nbdp_w_opt_hdr {
	struct be64 magic;		/* NBDP_OPTS_MAGIC */
	struct be32 option;		/* enum nbdp_opt */
	struct be32 length;		/* bytes of option data that follow */
} __attribute__((packed));

struct nbdp_w_rep_hdr {
	struct be64 magic;		/* NBDP_REP_MAGIC */
	struct be32 option;		/* the option answered */
	struct be32 type;		/* enum nbdp_rep */
	struct be32 length;		/* bytes of reply data that follow */
} __attribute__((packed));

/* The answer to NBD_OPT_EXPORT_NAME (then 124 zero bytes, unless the
 * client set NBDP_FLAG_C_NO_ZEROES). */
struct nbdp_w_export_reply {
	struct be64 size;		/* bytes */
	struct be16 tflags;		/* NBDP_TF_* */
} __attribute__((packed));

struct nbdp_w_info_export {
	struct be16 type;		/* NBDP_INFO_EXPORT */
	struct be64 size;		/* bytes */
	struct be16 tflags;		/* NBDP_TF_* */
} __attribute__((packed));

struct nbdp_w_info_block_size {
	struct be16 type;		/* NBDP_INFO_BLOCK_SIZE */
	struct be32 min_block;		/* bytes */
	struct be32 pref_block;		/* bytes */
	struct be32 max_payload;	/* bytes */
} __attribute__((packed));

struct nbdp_w_req {
	struct be32 magic;		/* NBDP_REQUEST_MAGIC */
	struct be16 flags;		/* NBDP_CMD_FLAG_* */
	struct be16 type;		/* enum nbdp_cmd */
	struct be64 cookie;		/* opaque */
	struct be64 offset;		/* bytes */
	struct be32 length;		/* bytes */
} __attribute__((packed));

struct nbdp_w_reply {
	struct be32 magic;		/* NBDP_SIMPLE_REPLY_MAGIC */
	struct be32 error;		/* enum nbdp_err, 0 = success */
	struct be64 cookie;		/* the request's */
} __attribute__((packed));

_Static_assert(sizeof(struct nbdp_w_greeting) == NBDP_GREETING_SIZE,
	       "greeting");
_Static_assert(sizeof(struct nbdp_w_opt_hdr) == NBDP_OPT_HDR_SIZE, "opt hdr");
_Static_assert(sizeof(struct nbdp_w_rep_hdr) == NBDP_REP_HDR_SIZE, "rep hdr");
_Static_assert(sizeof(struct nbdp_w_export_reply) == NBDP_EXPORT_REPLY_SIZE,
	       "export reply");
_Static_assert(sizeof(struct nbdp_w_info_export) == 12, "info export");
_Static_assert(sizeof(struct nbdp_w_info_block_size) == 14, "info block size");
_Static_assert(sizeof(struct nbdp_w_req) == NBDP_REQ_SIZE, "request");
_Static_assert(sizeof(struct nbdp_w_reply) == NBDP_REPLY_SIZE, "reply");

/* ---------------------------------------------------------------- names */

const char *nbdp_opt_name(uint32_t opt)
{
	static const char *const names[] = {
		[NBDP_OPT_EXPORT_NAME] = "NBD_OPT_EXPORT_NAME",
		[NBDP_OPT_ABORT] = "NBD_OPT_ABORT",
		[NBDP_OPT_LIST] = "NBD_OPT_LIST",
		[NBDP_OPT_PEEK_EXPORT] = "NBD_OPT_PEEK_EXPORT",
		[NBDP_OPT_STARTTLS] = "NBD_OPT_STARTTLS",
		[NBDP_OPT_INFO] = "NBD_OPT_INFO",
		[NBDP_OPT_GO] = "NBD_OPT_GO",
		[NBDP_OPT_STRUCTURED_REPLY] = "NBD_OPT_STRUCTURED_REPLY",
		[NBDP_OPT_LIST_META_CONTEXT] = "NBD_OPT_LIST_META_CONTEXT",
		[NBDP_OPT_SET_META_CONTEXT] = "NBD_OPT_SET_META_CONTEXT",
		[NBDP_OPT_EXTENDED_HEADERS] = "NBD_OPT_EXTENDED_HEADERS",
	};

	if (opt < ARRAY_SIZE(names) && names[opt])
		return names[opt];
	return "?";
}

const char *nbdp_cmd_name(uint16_t type)
{
	static const char *const names[] = {
		[NBDP_CMD_READ] = "NBD_CMD_READ",
		[NBDP_CMD_WRITE] = "NBD_CMD_WRITE",
		[NBDP_CMD_DISC] = "NBD_CMD_DISC",
		[NBDP_CMD_FLUSH] = "NBD_CMD_FLUSH",
		[NBDP_CMD_TRIM] = "NBD_CMD_TRIM",
		[NBDP_CMD_CACHE] = "NBD_CMD_CACHE",
		[NBDP_CMD_WRITE_ZEROES] = "NBD_CMD_WRITE_ZEROES",
		[NBDP_CMD_BLOCK_STATUS] = "NBD_CMD_BLOCK_STATUS",
	};

	if (type < ARRAY_SIZE(names) && names[type])
		return names[type];
	return "?";
}

/* --------------------------------------------------------------- export */

static bool own_string_ok(const char *s, bool may_be_empty)
{
	size_t n;

	if (!s)
		return false;
	n = strnlen(s, NBDP_OWN_STRING_MAX + 1);
	return n <= NBDP_OWN_STRING_MAX && (n || may_be_empty);
}

int nbdp_export_check(const struct nbdp_export *e, char *why, size_t why_len)
{
	if (!own_string_ok(e->name, false))
		return util_why(-EINVAL, why, why_len, "name: 1..%d bytes",
				NBDP_OWN_STRING_MAX);
	if (e->description && !own_string_ok(e->description, true))
		return util_why(-EINVAL, why, why_len,
				"description: up to %d bytes",
				NBDP_OWN_STRING_MAX);
	if (e->refuse && !own_string_ok(e->refuse, true))
		return util_why(-EINVAL, why, why_len,
				"refuse: up to %d bytes", NBDP_OWN_STRING_MAX);
	if (e->tflags & ~NBDP_TF_SUPPORTED)
		return util_why(-EINVAL, why, why_len,
				"tflags 0x%x: unsupported bits 0x%x",
				e->tflags, e->tflags & ~NBDP_TF_SUPPORTED);
	if ((e->tflags & NBDP_TF_SEND_FAST_ZERO) &&
	    !(e->tflags & NBDP_TF_SEND_WRITE_ZEROES))
		return util_why(-EINVAL, why, why_len,
				"tflags: SEND_FAST_ZERO without SEND_WRITE_ZEROES");
	if (!is_pow2(e->min_block) || e->min_block > NBDP_MIN_BLOCK_MAX)
		return util_why(-EINVAL, why, why_len,
				"min_block %u: a power of 2 up to %u",
				e->min_block, NBDP_MIN_BLOCK_MAX);
	if (!is_pow2(e->pref_block) || e->pref_block < e->min_block ||
	    e->pref_block < 512)
		return util_why(-EINVAL, why, why_len,
				"pref_block %u: a power of 2, at least 512 and min_block",
				e->pref_block);
	if (e->max_payload < e->pref_block ||
	    e->max_payload > NBDP_PAYLOAD_MAX)
		return util_why(-EINVAL, why, why_len,
				"max_payload %u: pref_block..%u",
				e->max_payload, NBDP_PAYLOAD_MAX);
	if (e->size % e->min_block)
		return util_why(-EINVAL, why, why_len,
				"size %llu: not a multiple of min_block %u",
				(unsigned long long)e->size, e->min_block);
	return 0;
}

/* ------------------------------------------------------------ handshake */

enum hs_state {
	ST_CLIENT_FLAGS,	/* waiting for the 4 bytes of client flags */
	ST_OPT_HDR,		/* waiting for an option header */
	ST_OPT_DATA,		/* reading option data into hs->data */
	ST_OPT_SKIP,		/* counting off option data we do not read */
	ST_DONE,
	ST_ABORT,
	ST_CLOSED,
};

/*
 * Largest output of one step: the reply to a GO asking for everything
 * (INFO_EXPORT 32 + INFO_NAME 278 + INFO_DESCRIPTION 278 + INFO_BLOCK_SIZE
 * 34 + ACK 20) or an error reply with its message (20 + MSG_MAX).
 */
#define MSG_MAX 300
#define OUT_MAX 1024
#define REASON_MAX 320
/* Bytes of a client-supplied name quoted in messages. */
#define QUOTE_MAX 64

struct nbdp_hs {
	enum hs_state state;
	struct nbdp_export exp;	/* strings point into the below */
	char name[NBDP_OWN_STRING_MAX + 1];
	char desc[NBDP_OWN_STRING_MAX + 1];
	char refuse[NBDP_OWN_STRING_MAX + 1];
	size_t name_len;

	uint32_t client_flags;
	unsigned int options;
	uint8_t piece[NBDP_OPT_HDR_SIZE]; /* client flags or option header */
	size_t have;		/* bytes of the current piece or data */
	uint32_t opt;		/* current option */
	uint32_t opt_len;	/* its data length */
	uint32_t skip_left;	/* ST_OPT_SKIP: bytes still to count off */
	uint32_t skip_rep;	/* ST_OPT_SKIP: the reply once skipped */
	char skip_msg[MSG_MAX];	/* ... and its message */

	struct nbdp_hs_result result;
	char reason[REASON_MAX];

	size_t out_off, out_len;
	uint8_t out[OUT_MAX];
	uint8_t data[NBDP_OPT_DATA_MAX];
};

/* Copy of at most QUOTE_MAX bytes of @s for a message: printable ASCII
 * only, since the client chose the bytes and our logs are text. */
static const char *quote(const uint8_t *s, size_t n, char *buf, size_t len)
{
	size_t i, o = 0;

	for (i = 0; i < n && i < QUOTE_MAX && o + 1 < len; i++)
		buf[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
	if (i < n && o + 3 < len) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

static void close_hs(struct nbdp_hs *hs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void close_hs(struct nbdp_hs *hs, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(hs->reason, sizeof(hs->reason), fmt, ap);
	va_end(ap);
	hs->state = ST_CLOSED;
}

/* Append @len bytes to the output. The sizes are bounded by construction
 * (see OUT_MAX); should that ever be wrong, the session ends rather than
 * the buffer overflowing. */
static bool out_put(struct nbdp_hs *hs, const void *p, size_t len)
{
	if (!len)
		return true;
	if (len > sizeof(hs->out) - hs->out_len) {
		close_hs(hs, "internal: option reply larger than %zu bytes",
			 sizeof(hs->out));
		return false;
	}
	memcpy(hs->out + hs->out_len, p, len);
	hs->out_len += len;
	return true;
}

/* One option reply: header, then @len bytes of @data. */
static bool put_rep(struct nbdp_hs *hs, uint32_t type, const void *data,
		    size_t len)
{
	struct nbdp_w_rep_hdr h = {
		.magic = put_be64(NBDP_REP_MAGIC),
		.option = put_be32(hs->opt),
		.type = put_be32(type),
		.length = put_be32((uint32_t)len),
	};

	return out_put(hs, &h, sizeof(h)) && out_put(hs, data, len);
}

/* An error reply; its data is a message for the human behind the client. */
static void put_err(struct nbdp_hs *hs, uint32_t type, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void put_err(struct nbdp_hs *hs, uint32_t type, const char *fmt, ...)
{
	char msg[MSG_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	put_rep(hs, type, msg, (size_t)n);
}

/* An NBD_REP_INFO of @type carrying the string @s. */
static bool put_info_str(struct nbdp_hs *hs, uint16_t type, const char *s)
{
	uint8_t buf[2 + NBDP_OWN_STRING_MAX];
	struct be16 t = put_be16(type);
	size_t n = strlen(s);

	memcpy(buf, &t, sizeof(t));
	memcpy(buf + 2, s, n);
	return put_rep(hs, NBDP_REP_INFO, buf, 2 + n);
}

static uint16_t tflags(const struct nbdp_hs *hs)
{
	return hs->exp.tflags | NBDP_TF_HAS_FLAGS;
}

static bool name_matches(const struct nbdp_hs *hs, const uint8_t *name,
			 size_t len)
{
	return !len || (len == hs->name_len && !memcmp(name, hs->name, len));
}

struct nbdp_hs *nbdp_hs_new(const struct nbdp_export *e)
{
	struct nbdp_w_greeting g = {
		.magic = put_be64(NBDP_MAGIC),
		.opts_magic = put_be64(NBDP_OPTS_MAGIC),
		.flags = put_be16(NBDP_FLAG_FIXED_NEWSTYLE |
				  NBDP_FLAG_NO_ZEROES),
	};
	struct nbdp_hs *hs;
	char why[160];

	if (nbdp_export_check(e, why, sizeof(why))) {
		log_err("nbd: export: %s", why);
		errno = EINVAL;
		return NULL;
	}
	hs = calloc(1, sizeof(*hs));
	if (!hs) {
		errno = ENOMEM;
		return NULL;
	}
	hs->exp = *e;
	strcpy(hs->name, e->name);
	hs->name_len = strlen(hs->name);
	hs->exp.name = hs->name;
	if (e->description) {
		strcpy(hs->desc, e->description);
		hs->exp.description = hs->desc;
	}
	if (e->refuse) {
		strcpy(hs->refuse, e->refuse);
		hs->exp.refuse = hs->refuse;
	}
	hs->state = ST_CLIENT_FLAGS;
	out_put(hs, &g, sizeof(g));
	return hs;
}

void nbdp_hs_free(struct nbdp_hs *hs)
{
	free(hs);
}

const void *nbdp_hs_out(const struct nbdp_hs *hs, size_t *len)
{
	*len = hs->out_len - hs->out_off;
	return hs->out + hs->out_off;
}

void nbdp_hs_out_done(struct nbdp_hs *hs, size_t n)
{
	if (n > hs->out_len - hs->out_off)
		n = hs->out_len - hs->out_off;
	hs->out_off += n;
	if (hs->out_off == hs->out_len)
		hs->out_off = hs->out_len = 0;
}

const struct nbdp_hs_result *nbdp_hs_result(const struct nbdp_hs *hs)
{
	return hs->state == ST_DONE ? &hs->result : NULL;
}

const char *nbdp_hs_reason(const struct nbdp_hs *hs)
{
	return hs->reason;
}

static void finish(struct nbdp_hs *hs, bool block_size_agreed)
{
	hs->result.tflags = tflags(hs);
	hs->result.client_flags = hs->client_flags;
	hs->result.option = hs->opt;
	hs->result.block_size_agreed = block_size_agreed;
	hs->result.options = hs->options;
	hs->state = ST_DONE;
}

static void on_client_flags(struct nbdp_hs *hs)
{
	struct be32 f;

	memcpy(&f, hs->piece, sizeof(f));
	hs->client_flags = get_be32(f);
	hs->have = 0;
	if (hs->client_flags &
	    ~(uint32_t)(NBDP_FLAG_C_FIXED_NEWSTYLE | NBDP_FLAG_C_NO_ZEROES)) {
		close_hs(hs, "unknown client flags 0x%x", hs->client_flags);
		return;
	}
	hs->state = ST_OPT_HDR;
}

/* Answer @hs->opt after counting off its data. */
static void skip(struct nbdp_hs *hs, uint32_t rep, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void skip(struct nbdp_hs *hs, uint32_t rep, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(hs->skip_msg, sizeof(hs->skip_msg), fmt, ap);
	va_end(ap);
	hs->skip_rep = rep;
	hs->skip_left = hs->opt_len;
	hs->state = ST_OPT_SKIP;
}

static void on_skipped(struct nbdp_hs *hs)
{
	hs->state = ST_OPT_HDR;
	if (hs->opt == NBDP_OPT_ABORT) {
		if (put_rep(hs, NBDP_REP_ACK, NULL, 0)) {
			snprintf(hs->reason, sizeof(hs->reason),
				 "client aborted the handshake");
			hs->state = ST_ABORT;
		}
		return;
	}
	put_err(hs, hs->skip_rep, "%s", hs->skip_msg);
}

static void on_export_name(struct nbdp_hs *hs)
{
	struct nbdp_w_export_reply r = {
		.size = put_be64(hs->exp.size),
		.tflags = put_be16(tflags(hs)),
	};
	static const uint8_t zeroes[NBDP_EXPORT_ZEROES];
	char q[QUOTE_MAX + 4];

	/* This option cannot be answered with an error: the only way to
	 * say no is to end the session. */
	if (!name_matches(hs, hs->data, hs->opt_len)) {
		close_hs(hs, "NBD_OPT_EXPORT_NAME: unknown export \"%s\"",
			 quote(hs->data, hs->opt_len, q, sizeof(q)));
		return;
	}
	if (hs->exp.refuse) {
		close_hs(hs, "NBD_OPT_EXPORT_NAME refused: %s",
			 hs->exp.refuse);
		return;
	}
	if (!out_put(hs, &r, sizeof(r)))
		return;
	if (!(hs->client_flags & NBDP_FLAG_C_NO_ZEROES) &&
	    !out_put(hs, zeroes, sizeof(zeroes)))
		return;
	finish(hs, false);
}

static void on_list(struct nbdp_hs *hs)
{
	uint8_t buf[4 + 2 * NBDP_OWN_STRING_MAX + 3];
	struct be32 nlen = put_be32((uint32_t)hs->name_len);
	size_t n = 0;

	memcpy(buf, &nlen, sizeof(nlen));
	n += sizeof(nlen);
	memcpy(buf + n, hs->name, hs->name_len);
	n += hs->name_len;
	/* What follows the name is "details suitable for a human". */
	if (hs->exp.description && hs->exp.description[0]) {
		size_t dl = strlen(hs->exp.description);

		memcpy(buf + n, hs->exp.description, dl);
		n += dl;
	}
	if (put_rep(hs, NBDP_REP_SERVER, buf, n))
		put_rep(hs, NBDP_REP_ACK, NULL, 0);
}

/* The successful answer to INFO / GO: the infos asked for, then ACK. */
static void put_infos(struct nbdp_hs *hs, bool want_name, bool want_desc,
		      bool want_bs)
{
	struct nbdp_w_info_export ie = {
		.type = put_be16(NBDP_INFO_EXPORT),
		.size = put_be64(hs->exp.size),
		.tflags = put_be16(tflags(hs)),
	};
	struct nbdp_w_info_block_size bs = {
		.type = put_be16(NBDP_INFO_BLOCK_SIZE),
		.min_block = put_be32(hs->exp.min_block),
		.pref_block = put_be32(hs->exp.pref_block),
		.max_payload = put_be32(hs->exp.max_payload),
	};

	if (!put_rep(hs, NBDP_REP_INFO, &ie, sizeof(ie)))
		return;
	if (want_name && !put_info_str(hs, NBDP_INFO_NAME, hs->name))
		return;
	if (want_desc && hs->exp.description &&
	    !put_info_str(hs, NBDP_INFO_DESCRIPTION, hs->exp.description))
		return;
	if (want_bs && !put_rep(hs, NBDP_REP_INFO, &bs, sizeof(bs)))
		return;
	if (!put_rep(hs, NBDP_REP_ACK, NULL, 0))
		return;
	if (hs->opt == NBDP_OPT_GO)
		finish(hs, want_bs);
}

/* NBD_OPT_INFO and NBD_OPT_GO: name length, name, count, requests. */
static void on_info_go(struct nbdp_hs *hs)
{
	const uint8_t *d = hs->data;
	bool want_name = false, want_desc = false, want_bs = false;
	uint32_t len = hs->opt_len, nlen;
	char q[QUOTE_MAX + 4];
	struct be32 b32;
	struct be16 b16;
	uint16_t nreq;

	if (len < 6) {
		put_err(hs, NBDP_REP_ERR_INVALID,
			"%s: %u bytes of data, at least 6 expected",
			nbdp_opt_name(hs->opt), len);
		return;
	}
	memcpy(&b32, d, sizeof(b32));
	nlen = get_be32(b32);
	if (nlen > len - 6) {
		put_err(hs, NBDP_REP_ERR_INVALID,
			"%s: name length %u exceeds the option data",
			nbdp_opt_name(hs->opt), nlen);
		return;
	}
	memcpy(&b16, d + 4 + nlen, sizeof(b16));
	nreq = get_be16(b16);
	if (len != 4 + nlen + 2 + 2 * (uint32_t)nreq) {
		put_err(hs, NBDP_REP_ERR_INVALID,
			"%s: %u information requests do not fill %u bytes of data",
			nbdp_opt_name(hs->opt), nreq, len);
		return;
	}
	if (memchr(d + 4, 0, nlen)) {
		put_err(hs, NBDP_REP_ERR_INVALID,
			"%s: the export name contains a NUL byte",
			nbdp_opt_name(hs->opt));
		return;
	}
	if (!name_matches(hs, d + 4, nlen)) {
		put_err(hs, NBDP_REP_ERR_UNKNOWN,
			"unknown export \"%s\"; this server exports \"%s\"",
			quote(d + 4, nlen, q, sizeof(q)), hs->name);
		return;
	}
	if (hs->opt == NBDP_OPT_GO && hs->exp.refuse) {
		put_err(hs, NBDP_REP_ERR_POLICY, "%s", hs->exp.refuse);
		return;
	}
	/* Unknown requests are ignored, as the spec requires; a repeated
	 * one is answered once. */
	for (uint32_t i = 0; i < nreq; i++) {
		memcpy(&b16, d + 4 + nlen + 2 + 2 * i, sizeof(b16));
		switch (get_be16(b16)) {
		case NBDP_INFO_NAME:
			want_name = true;
			break;
		case NBDP_INFO_DESCRIPTION:
			want_desc = true;
			break;
		case NBDP_INFO_BLOCK_SIZE:
			want_bs = true;
			break;
		default:
			break;
		}
	}

	put_infos(hs, want_name, want_desc, want_bs);
}

/* The option's data is in hs->data. */
static void on_option(struct nbdp_hs *hs)
{
	hs->state = ST_OPT_HDR;
	hs->have = 0;
	switch (hs->opt) {
	case NBDP_OPT_EXPORT_NAME:
		on_export_name(hs);
		break;
	case NBDP_OPT_LIST:
		on_list(hs);
		break;
	case NBDP_OPT_INFO:
	case NBDP_OPT_GO:
		on_info_go(hs);
		break;
	default:
		close_hs(hs, "internal: option %u buffered", hs->opt);
		break;
	}
}

static void on_opt_hdr(struct nbdp_hs *hs)
{
	const struct nbdp_w_opt_hdr *h = (const void *)hs->piece;
	uint64_t magic = get_be64(h->magic);
	const char *name;

	hs->opt = get_be32(h->option);
	hs->opt_len = get_be32(h->length);
	hs->have = 0;
	name = nbdp_opt_name(hs->opt);

	if (magic != NBDP_OPTS_MAGIC) {
		close_hs(hs, "bad option magic 0x%016llx",
			 (unsigned long long)magic);
		return;
	}
	if (++hs->options > NBDP_OPTS_MAX) {
		close_hs(hs, "more than %d options", NBDP_OPTS_MAX);
		return;
	}
	/* Without fixed newstyle a client understands no option reply. */
	if (!(hs->client_flags & NBDP_FLAG_C_FIXED_NEWSTYLE) &&
	    hs->opt != NBDP_OPT_EXPORT_NAME) {
		close_hs(hs, "option %u (%s) from a client without fixed newstyle",
			 hs->opt, name);
		return;
	}
	if (hs->opt_len > NBDP_OPT_SKIP_MAX) {
		close_hs(hs, "option %u (%s) with %u bytes of data", hs->opt,
			 name, hs->opt_len);
		return;
	}

	switch (hs->opt) {
	case NBDP_OPT_EXPORT_NAME:
		if (hs->opt_len > NBDP_STRING_MAX) {
			close_hs(hs, "NBD_OPT_EXPORT_NAME: name of %u bytes",
				 hs->opt_len);
			return;
		}
		break;
	case NBDP_OPT_ABORT:
		/* Data is to be ignored, not refused. */
		skip(hs, NBDP_REP_ACK, "%s", "");
		break;
	case NBDP_OPT_LIST:
		if (hs->opt_len)
			skip(hs, NBDP_REP_ERR_INVALID,
			     "NBD_OPT_LIST carries no data");
		break;
	case NBDP_OPT_INFO:
	case NBDP_OPT_GO:
		if (hs->opt_len > NBDP_OPT_DATA_MAX)
			skip(hs, NBDP_REP_ERR_TOO_BIG,
			     "%s: %u bytes of data, at most %u accepted", name,
			     hs->opt_len, NBDP_OPT_DATA_MAX);
		break;
	case NBDP_OPT_STRUCTURED_REPLY:
		skip(hs, NBDP_REP_ERR_UNSUP,
		     "structured replies are not implemented; simple replies are used");
		break;
	case NBDP_OPT_STARTTLS:
		skip(hs, NBDP_REP_ERR_UNSUP,
		     "TLS is not implemented: export over a unix socket or a trusted network");
		break;
	default:
		skip(hs, NBDP_REP_ERR_UNSUP, "option %u (%s) is not supported",
		     hs->opt, name);
		break;
	}
	if (hs->state != ST_OPT_HDR)
		return;
	if (hs->opt_len)
		hs->state = ST_OPT_DATA;
	else
		on_option(hs);
}

/* Copy into hs->piece until it holds @want bytes; returns bytes taken. */
static size_t gather(struct nbdp_hs *hs, uint8_t *dst, size_t want,
		     const uint8_t *in, size_t len)
{
	size_t n = want - hs->have;

	if (n > len)
		n = len;
	memcpy(dst + hs->have, in, n);
	hs->have += n;
	return n;
}

static bool final_step(const struct nbdp_hs *hs, enum nbdp_hs_step *step)
{
	switch (hs->state) {
	case ST_DONE:
		*step = NBDP_HS_DONE;
		return true;
	case ST_ABORT:
		*step = NBDP_HS_ABORT;
		return true;
	case ST_CLOSED:
		*step = NBDP_HS_CLOSE;
		return true;
	default:
		return false;
	}
}

enum nbdp_hs_step nbdp_hs_feed(struct nbdp_hs *hs, const void *in, size_t len,
			       size_t *used)
{
	const uint8_t *p = in;
	enum nbdp_hs_step step;
	size_t pos = 0, n;

	for (;;) {
		*used = pos;
		if (final_step(hs, &step))
			return step;
		if (hs->out_len)
			return NBDP_HS_SEND;
		if (pos == len)
			return NBDP_HS_NEED_INPUT;

		switch (hs->state) {
		case ST_CLIENT_FLAGS:
			pos += gather(hs, hs->piece, NBDP_CLIENT_FLAGS_SIZE,
				      p + pos, len - pos);
			if (hs->have == NBDP_CLIENT_FLAGS_SIZE)
				on_client_flags(hs);
			break;
		case ST_OPT_HDR:
			pos += gather(hs, hs->piece, NBDP_OPT_HDR_SIZE, p + pos,
				      len - pos);
			if (hs->have == NBDP_OPT_HDR_SIZE)
				on_opt_hdr(hs);
			break;
		case ST_OPT_DATA:
			pos += gather(hs, hs->data, hs->opt_len, p + pos,
				      len - pos);
			if (hs->have == hs->opt_len)
				on_option(hs);
			break;
		case ST_OPT_SKIP:
			n = len - pos;
			if (n > hs->skip_left)
				n = hs->skip_left;
			pos += n;
			hs->skip_left -= (uint32_t)n;
			break;
		default:
			break;
		}
		/* A skip of zero bytes ends at once too. */
		if (hs->state == ST_OPT_SKIP && !hs->skip_left)
			on_skipped(hs);
	}
}

/* --------------------------------------------------------- transmission */

int nbdp_req_decode(const void *buf, struct nbdp_req *r)
{
	const struct nbdp_w_req *w = buf;

	r->flags = get_be16(w->flags);
	r->type = get_be16(w->type);
	r->cookie = get_be64(w->cookie);
	r->offset = get_be64(w->offset);
	r->length = get_be32(w->length);
	return get_be32(w->magic) == NBDP_REQUEST_MAGIC ? 0 : -EBADMSG;
}

void nbdp_req_encode(const struct nbdp_req *r, void *buf)
{
	struct nbdp_w_req w = {
		.magic = put_be32(NBDP_REQUEST_MAGIC),
		.flags = put_be16(r->flags),
		.type = put_be16(r->type),
		.cookie = put_be64(r->cookie),
		.offset = put_be64(r->offset),
		.length = put_be32(r->length),
	};

	memcpy(buf, &w, sizeof(w));
}

uint32_t nbdp_req_payload(const struct nbdp_req *r)
{
	return r->type == NBDP_CMD_WRITE ? r->length : 0;
}

void nbdp_reply_encode(void *buf, uint32_t nbd_err, uint64_t cookie)
{
	struct nbdp_w_reply w = {
		.magic = put_be32(NBDP_SIMPLE_REPLY_MAGIC),
		.error = put_be32(nbd_err),
		.cookie = put_be64(cookie),
	};

	memcpy(buf, &w, sizeof(w));
}

static enum nbdp_verdict req_fail(uint32_t *nbd_err, const char **why,
				  uint32_t err, const char *what)
{
	*nbd_err = err;
	if (why)
		*why = what;
	return NBDP_REQ_ERROR;
}

enum nbdp_verdict nbdp_req_check(const struct nbdp_export *e,
				 const struct nbdp_req *r, uint32_t *nbd_err,
				 const char **why)
{
	uint16_t tf = e->tflags | NBDP_TF_HAS_FLAGS, allowed = 0;
	uint32_t range_err = NBDP_EINVAL;
	bool writes = false, payload = false;

	*nbd_err = 0;
	if (why)
		*why = "";
	/* Checked before anything else: every other error is answered after
	 * reading the payload, and this one is too large to read. */
	if (r->type == NBDP_CMD_WRITE && r->length > NBDP_PAYLOAD_MAX) {
		if (why)
			*why = "write payload larger than 32 MiB";
		return NBDP_REQ_CLOSE;
	}

	switch (r->type) {
	case NBDP_CMD_DISC:
		return NBDP_REQ_DISC;
	case NBDP_CMD_READ:
		payload = true;
		break;
	case NBDP_CMD_WRITE:
		payload = writes = true;
		/* The spec's choice for a write past the end. */
		range_err = NBDP_ENOSPC;
		break;
	case NBDP_CMD_FLUSH:
		if (!(tf & NBDP_TF_SEND_FLUSH))
			return req_fail(nbd_err, why, NBDP_EINVAL,
					"flush not advertised");
		break;
	case NBDP_CMD_TRIM:
		if (!(tf & NBDP_TF_SEND_TRIM))
			return req_fail(nbd_err, why, NBDP_EINVAL,
					"trim not advertised");
		writes = true;
		break;
	case NBDP_CMD_WRITE_ZEROES:
		if (!(tf & NBDP_TF_SEND_WRITE_ZEROES))
			return req_fail(nbd_err, why, NBDP_EINVAL,
					"write zeroes not advertised");
		writes = true;
		range_err = NBDP_ENOSPC;
		allowed |= NBDP_CMD_FLAG_NO_HOLE;
		if (tf & NBDP_TF_SEND_FAST_ZERO)
			allowed |= NBDP_CMD_FLAG_FAST_ZERO;
		break;
	default:
		return req_fail(nbd_err, why, NBDP_EINVAL,
				"unknown or unadvertised command");
	}
	/* FUA is valid on every command once advertised (spec). */
	if (tf & NBDP_TF_SEND_FUA)
		allowed |= NBDP_CMD_FLAG_FUA;
	if (r->flags & ~allowed)
		return req_fail(nbd_err, why, NBDP_EINVAL,
				"command flag not valid for this command");
	if (writes && (tf & NBDP_TF_READ_ONLY))
		return req_fail(nbd_err, why, NBDP_EPERM, "read-only export");

	if (r->type == NBDP_CMD_FLUSH) {
		if (r->offset || r->length)
			return req_fail(nbd_err, why, NBDP_EINVAL,
					"flush with a nonzero offset or length");
		return NBDP_REQ_OK;
	}
	if (!r->length)
		return req_fail(nbd_err, why, NBDP_EINVAL, "zero length");
	if (payload && r->length > e->max_payload)
		return req_fail(nbd_err, why, NBDP_EINVAL,
				"length above the maximum payload");
	if (r->offset > e->size || r->length > e->size - r->offset)
		return req_fail(nbd_err, why, range_err,
				"past the end of the export");
	if ((r->offset | r->length) & (e->min_block - 1))
		return req_fail(nbd_err, why, NBDP_EINVAL,
				"not aligned to the minimum block size");
	return NBDP_REQ_OK;
}

uint32_t nbdp_errno(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return 0;
	case EPERM:
	case EACCES:
	case EROFS:
		return NBDP_EPERM;
	case ENOMEM:
		return NBDP_ENOMEM;
	case EINVAL:
		return NBDP_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBDP_ENOSPC;
	case EOVERFLOW:
		return NBDP_EOVERFLOW;
	case ENOTSUP:
		return NBDP_ENOTSUP;
	case ESHUTDOWN:
		return NBDP_ESHUTDOWN;
	default:
		return NBDP_EIO;
	}
}
