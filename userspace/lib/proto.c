// SPDX-License-Identifier: MIT
/*
 * The replication frame codec and streaming parser (docs/protocol.md);
 * what makes a frame valid is in proto_check.c.
 *
 * Bytes from the network are untrusted: the decoder checks the header (and
 * its CRC, which protects the length) before it asks for a single byte
 * more, checks the fixed part before it lets a payload byte in, and checks
 * every count against what the payload length and the device allow. The
 * encoder runs the same checks, so duet never sends what duet refuses.
 *
 * The encoding is canonical (reserved bytes and string padding must be
 * zero), so decode(encode(m)) == m and encode(decode(f)) == f: the fuzzer
 * relies on that.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "be.h"
#include "bm.h"
#include "crc.h"
#include "md.h"
#include "proto.h"
#include "proto_int.h"
#include "util.h"

struct hdr_wire {
	struct be32 magic;	/*  0: PROTO_MAGIC */
	struct be16 type;	/*  4: enum proto_type */
	struct be16 flags;	/*  6: none defined yet, zero */
	struct be32 length;	/*  8: bytes after the header */
	struct be32 fixed_crc;	/* 12: CRC32C of the fixed part */
	struct be64 id;		/* 16: request id */
	struct be32 reserved;	/* 24: zero */
	struct be32 hdr_crc;	/* 28: CRC32C of bytes 0..27 */
} __attribute__((packed));

struct hello_wire {
	struct be16 version_min;	/*  0 */
	struct be16 version_max;	/*  2 */
	uint8_t hs_role;		/*  4: enum proto_hs_role */
	uint8_t repl;			/*  5: enum proto_repl */
	uint8_t data_digest;		/*  6: enum proto_digest */
	uint8_t reserved;		/*  7: zero */
	struct be32 node_id;		/*  8 */
	struct be32 bm_granularity;	/* 12: bytes per bit */
	struct be64 features;		/* 16 */
	struct be64 data_bytes;		/* 24: bytes */
	uint8_t challenge[PROTO_CHALLENGE_SIZE]; /* 32 */
	char resource[PROTO_NAME_MAX];	/* 64: NUL-terminated, zero-padded */
} __attribute__((packed));

struct auth_wire {
	uint8_t mac[PROTO_MAC_SIZE];	/* 0: HMAC-SHA256 */
} __attribute__((packed));

struct auth_result_wire {
	struct be16 status;		/* 0 */
	struct be16 version;		/* 2 */
	struct be32 reserved;		/* 4: zero */
	struct be64 features;		/* 8 */
} __attribute__((packed));

struct state_wire {
	uint8_t role;			/*  0 */
	uint8_t disk;			/*  1 */
	struct be16 reserved;		/*  2: zero */
	struct be32 flags;		/*  4 */
	struct be64 current_uuid;	/*  8 */
	struct be64 bitmap_uuid;	/* 16 */
	struct be64 history[PROTO_HISTORY]; /* 24: newest first */
	struct be64 dirty_bits;		/* 56: bits */
	struct be64 promoted;		/* 64: s since the epoch, 0 unknown */
} __attribute__((packed));

struct bitmap_wire {
	struct be64 first_page;		/* 0: 4 KiB page index */
	struct be32 count;		/* 8: pages */
	struct be32 flags;		/* 12 */
} __attribute__((packed));

struct data_wire {
	struct be64 sector;		/*  0: 512-byte sectors */
	struct be32 length;		/*  8: bytes */
	uint8_t op;			/* 12 */
	uint8_t flags;			/* 13 */
	uint8_t digest_alg;		/* 14 */
	uint8_t reserved;		/* 15: zero */
	struct be64 epoch;		/* 16 */
	uint8_t digest[PROTO_DIGEST_MAX]; /* 24 */
} __attribute__((packed));

struct range_wire {
	struct be64 sector;		/* 0: 512-byte sectors */
	struct be32 length;		/* 8: bytes */
	struct be32 result;		/* 12: 0 or errno */
} __attribute__((packed));

struct block_wire {
	struct be64 sector;		/*  0: 512-byte sectors */
	struct be32 length;		/*  8: bytes */
	struct be32 result;		/* 12: 0 or errno */
	uint8_t digest_alg;		/* 16 */
	uint8_t reserved[7];		/* 17: zero */
	uint8_t digest[PROTO_DIGEST_MAX]; /* 24 */
} __attribute__((packed));

struct barrier_wire {
	struct be64 epoch;		/* 0 */
	struct be32 value;		/* 8: BARRIER flags / BARRIER_ACK count */
	struct be32 reserved;		/* 12: zero */
} __attribute__((packed));

struct rs_done_wire {
	struct be16 kind;		/* 0 */
	struct be16 reserved;		/* 2: zero */
	struct be32 result;		/* 4 */
	struct be64 sectors;		/* 8 */
} __attribute__((packed));

struct disconnect_wire {
	struct be32 reason;		/* 0 */
	struct be32 reserved;		/* 4: zero */
	char text[PROTO_TEXT_MAX];	/* 8: NUL-terminated, zero-padded */
} __attribute__((packed));

_Static_assert(sizeof(struct hdr_wire) == PROTO_HDR_SIZE, "hdr_wire");
_Static_assert(offsetof(struct hdr_wire, hdr_crc) == 28, "hdr_crc");
_Static_assert(sizeof(struct hello_wire) == 128, "hello_wire");
_Static_assert(sizeof(struct auth_wire) == 32, "auth_wire");
_Static_assert(sizeof(struct auth_result_wire) == 16, "auth_result_wire");
_Static_assert(sizeof(struct state_wire) == 72, "state_wire");
_Static_assert(sizeof(struct bitmap_wire) == 16, "bitmap_wire");
_Static_assert(sizeof(struct data_wire) == 56, "data_wire");
_Static_assert(sizeof(struct range_wire) == 16, "range_wire");
_Static_assert(sizeof(struct block_wire) == 56, "block_wire");
_Static_assert(sizeof(struct barrier_wire) == 16, "barrier_wire");
_Static_assert(sizeof(struct rs_done_wire) == 16, "rs_done_wire");
_Static_assert(sizeof(struct disconnect_wire) == 128, "disconnect_wire");
_Static_assert(PROTO_BM_PAGE_SIZE == BM_PAGE_SIZE, "bitmap page size");
_Static_assert(PROTO_HISTORY == MD_HISTORY, "history length");

#define HDR_CRC_LEN offsetof(struct hdr_wire, hdr_crc)

static const struct type_info {
	const char *name;
	uint16_t fixed;		/* bytes of the fixed part */
	uint32_t max_payload;	/* bytes */
} types[PROTO_TYPE_END] = {
	[PROTO_HELLO] = { "HELLO", sizeof(struct hello_wire), 0 },
	[PROTO_AUTH] = { "AUTH", sizeof(struct auth_wire), 0 },
	[PROTO_AUTH_RESULT] = { "AUTH_RESULT",
				sizeof(struct auth_result_wire), 0 },
	[PROTO_STATE] = { "STATE", sizeof(struct state_wire), 0 },
	[PROTO_BITMAP] = { "BITMAP", sizeof(struct bitmap_wire),
			   PROTO_BM_PAGES_MAX * PROTO_BM_PAGE_SIZE },
	[PROTO_DATA] = { "DATA", sizeof(struct data_wire), PROTO_DATA_MAX },
	[PROTO_ACK_RECV] = { "ACK_RECV", sizeof(struct range_wire), 0 },
	[PROTO_ACK_WRITE] = { "ACK_WRITE", sizeof(struct range_wire), 0 },
	[PROTO_BARRIER] = { "BARRIER", sizeof(struct barrier_wire), 0 },
	[PROTO_BARRIER_ACK] = { "BARRIER_ACK", sizeof(struct barrier_wire), 0 },
	[PROTO_RS_REQUEST] = { "RS_REQUEST", sizeof(struct range_wire), 0 },
	[PROTO_RS_DATA] = { "RS_DATA", sizeof(struct block_wire),
			    PROTO_DATA_MAX },
	[PROTO_RS_CSUM] = { "RS_CSUM", sizeof(struct block_wire), 0 },
	[PROTO_RS_IN_SYNC] = { "RS_IN_SYNC", sizeof(struct range_wire), 0 },
	[PROTO_RS_ACK] = { "RS_ACK", sizeof(struct range_wire), 0 },
	[PROTO_OV_REQUEST] = { "OV_REQUEST", sizeof(struct block_wire), 0 },
	[PROTO_OV_REPLY] = { "OV_REPLY", sizeof(struct block_wire), 0 },
	[PROTO_RS_DONE] = { "RS_DONE", sizeof(struct rs_done_wire), 0 },
	[PROTO_PING] = { "PING", 0, 0 },
	[PROTO_PING_ACK] = { "PING_ACK", 0, 0 },
	[PROTO_DISCONNECT] = { "DISCONNECT", sizeof(struct disconnect_wire),
			       0 },
	[PROTO_READ_REQUEST] = { "READ_REQUEST", sizeof(struct range_wire),
				 0 },
	[PROTO_READ_DATA] = { "READ_DATA", sizeof(struct block_wire),
			      PROTO_DATA_MAX },
};

static bool type_valid(unsigned int type)
{
	return type && type < PROTO_TYPE_END;
}

const char *proto_type_name(unsigned int type)
{
	return type_valid(type) ? types[type].name : "?";
}

const char *proto_disc_name(unsigned int reason)
{
	static const char *const names[PROTO_DISC_END] = {
		[PROTO_DISC_SHUTDOWN] = "shutdown",
		[PROTO_DISC_PROTOCOL] = "protocol error",
		[PROTO_DISC_AUTH] = "authentication failed",
		[PROTO_DISC_RESOURCE] = "resource mismatch",
		[PROTO_DISC_VERSION] = "no common protocol version",
		[PROTO_DISC_SIZE] = "size mismatch",
		[PROTO_DISC_NODE_ID] = "node id conflict",
		[PROTO_DISC_FEATURES] = "missing feature",
		[PROTO_DISC_CONFIG] = "configuration mismatch",
		[PROTO_DISC_TWO_PRIMARIES] = "two primaries",
		[PROTO_DISC_SPLIT_BRAIN] = "split brain",
		[PROTO_DISC_IO_ERROR] = "I/O error",
	};

	return reason && reason < PROTO_DISC_END ? names[reason] : "?";
}

const char *proto_digest_name(unsigned int alg)
{
	switch (alg) {
	case PROTO_DIGEST_NONE:
		return "none";
	case PROTO_DIGEST_CRC32C:
		return "crc32c";
	case PROTO_DIGEST_SHA256:
		return "sha256";
	}
	return "?";
}

int proto_fixed_size(unsigned int type)
{
	return type_valid(type) ? types[type].fixed : -EINVAL;
}

int proto_digest(unsigned int alg, const void *data, size_t len,
		 uint8_t out[PROTO_DIGEST_MAX])
{
	struct be32 crc;

	memset(out, 0, PROTO_DIGEST_MAX);
	switch (alg) {
	case PROTO_DIGEST_NONE:
		return 0;
	case PROTO_DIGEST_CRC32C:
		crc = put_be32(crc32c(data, len));
		memcpy(out, &crc, sizeof(crc));
		return 0;
	case PROTO_DIGEST_SHA256:
		if (!EVP_Digest(data, len, out, NULL, EVP_sha256(), NULL))
			return -EIO;
		return 0;
	}
	return -EINVAL;
}

uint32_t proto_payload_len(const struct proto_msg *m)
{
	uint64_t n;

	switch (m->type) {
	case PROTO_BITMAP:
		n = (uint64_t)m->bitmap.count * PROTO_BM_PAGE_SIZE;
		return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
	case PROTO_DATA:
		return m->data.op == PROTO_OP_WRITE ? m->data.length : 0;
	case PROTO_RS_DATA:
	case PROTO_READ_DATA:
		return m->block.result ? 0 : m->block.length;
	}
	return 0;
}

/* ---- converters ---- */

/* Copy a string field with zero padding, the canonical form. */
static void put_string(char *dst, const char *src, size_t size)
{
	size_t n = strnlen(src, size - 1);

	memcpy(dst, src, n);
	memset(dst + n, 0, size - n);
}

static void encode_fixed(const struct proto_msg *m, void *out)
{
	union {
		struct hello_wire *hello;
		struct auth_wire *auth;
		struct auth_result_wire *ar;
		struct state_wire *state;
		struct bitmap_wire *bm;
		struct data_wire *data;
		struct range_wire *range;
		struct block_wire *block;
		struct barrier_wire *barrier;
		struct rs_done_wire *done;
		struct disconnect_wire *disc;
		void *p;
	} w = { .p = out };

	memset(out, 0, types[m->type].fixed);
	switch (m->type) {
	case PROTO_HELLO:
		w.hello->version_min = put_be16(m->hello.version_min);
		w.hello->version_max = put_be16(m->hello.version_max);
		w.hello->hs_role = m->hello.hs_role;
		w.hello->repl = m->hello.repl;
		w.hello->data_digest = m->hello.data_digest;
		w.hello->node_id = put_be32(m->hello.node_id);
		w.hello->bm_granularity = put_be32(m->hello.bm_granularity);
		w.hello->features = put_be64(m->hello.features);
		w.hello->data_bytes = put_be64(m->hello.data_bytes);
		memcpy(w.hello->challenge, m->hello.challenge,
		       PROTO_CHALLENGE_SIZE);
		put_string(w.hello->resource, m->hello.resource,
			   PROTO_NAME_MAX);
		break;
	case PROTO_AUTH:
		memcpy(w.auth->mac, m->auth.mac, PROTO_MAC_SIZE);
		break;
	case PROTO_AUTH_RESULT:
		w.ar->status = put_be16(m->auth_result.status);
		w.ar->version = put_be16(m->auth_result.version);
		w.ar->features = put_be64(m->auth_result.features);
		break;
	case PROTO_STATE:
		w.state->role = m->state.role;
		w.state->disk = m->state.disk;
		w.state->flags = put_be32(m->state.flags);
		w.state->current_uuid = put_be64(m->state.current_uuid);
		w.state->bitmap_uuid = put_be64(m->state.bitmap_uuid);
		for (int i = 0; i < PROTO_HISTORY; i++)
			w.state->history[i] = put_be64(m->state.history[i]);
		w.state->dirty_bits = put_be64(m->state.dirty_bits);
		w.state->promoted = put_be64(m->state.promoted);
		break;
	case PROTO_BITMAP:
		w.bm->first_page = put_be64(m->bitmap.first_page);
		w.bm->count = put_be32(m->bitmap.count);
		w.bm->flags = put_be32(m->bitmap.flags);
		break;
	case PROTO_DATA:
		w.data->sector = put_be64(m->data.sector);
		w.data->length = put_be32(m->data.length);
		w.data->op = m->data.op;
		w.data->flags = m->data.flags;
		w.data->digest_alg = m->data.digest_alg;
		w.data->epoch = put_be64(m->data.epoch);
		memcpy(w.data->digest, m->data.digest, PROTO_DIGEST_MAX);
		break;
	case PROTO_ACK_RECV:
	case PROTO_ACK_WRITE:
	case PROTO_RS_REQUEST:
	case PROTO_RS_IN_SYNC:
	case PROTO_RS_ACK:
	case PROTO_READ_REQUEST:
		w.range->sector = put_be64(m->range.sector);
		w.range->length = put_be32(m->range.length);
		w.range->result = put_be32(m->range.result);
		break;
	case PROTO_RS_DATA:
	case PROTO_RS_CSUM:
	case PROTO_OV_REQUEST:
	case PROTO_OV_REPLY:
	case PROTO_READ_DATA:
		w.block->sector = put_be64(m->block.sector);
		w.block->length = put_be32(m->block.length);
		w.block->result = put_be32(m->block.result);
		w.block->digest_alg = m->block.digest_alg;
		memcpy(w.block->digest, m->block.digest, PROTO_DIGEST_MAX);
		break;
	case PROTO_BARRIER:
	case PROTO_BARRIER_ACK:
		w.barrier->epoch = put_be64(m->barrier.epoch);
		w.barrier->value = put_be32(m->type == PROTO_BARRIER ?
					    m->barrier.flags :
					    m->barrier.nr_writes);
		break;
	case PROTO_RS_DONE:
		w.done->kind = put_be16(m->rs_done.kind);
		w.done->result = put_be32(m->rs_done.result);
		w.done->sectors = put_be64(m->rs_done.sectors);
		break;
	case PROTO_DISCONNECT:
		w.disc->reason = put_be32(m->disconnect.reason);
		put_string(w.disc->text, m->disconnect.text, PROTO_TEXT_MAX);
		break;
	}
}

/* Wire -> CPU, with the checks only the wire form can fail: reserved
 * bytes and string padding. */
static int decode_fixed(unsigned int type, const void *in,
			struct proto_msg *m, char *why, size_t wl)
{
	union {
		const struct hello_wire *hello;
		const struct auth_wire *auth;
		const struct auth_result_wire *ar;
		const struct state_wire *state;
		const struct bitmap_wire *bm;
		const struct data_wire *data;
		const struct range_wire *range;
		const struct block_wire *block;
		const struct barrier_wire *barrier;
		const struct rs_done_wire *done;
		const struct disconnect_wire *disc;
		const void *p;
	} w = { .p = in };
	const char *t = types[type].name;
	const char *s;
	bool rsvd = false;

	switch (type) {
	case PROTO_HELLO:
		m->hello.version_min = get_be16(w.hello->version_min);
		m->hello.version_max = get_be16(w.hello->version_max);
		m->hello.hs_role = w.hello->hs_role;
		m->hello.repl = w.hello->repl;
		m->hello.data_digest = w.hello->data_digest;
		m->hello.node_id = get_be32(w.hello->node_id);
		m->hello.bm_granularity = get_be32(w.hello->bm_granularity);
		m->hello.features = get_be64(w.hello->features);
		m->hello.data_bytes = get_be64(w.hello->data_bytes);
		memcpy(m->hello.challenge, w.hello->challenge,
		       PROTO_CHALLENGE_SIZE);
		memcpy(m->hello.resource, w.hello->resource, PROTO_NAME_MAX);
		rsvd = w.hello->reserved;
		s = memchr(m->hello.resource, '\0', PROTO_NAME_MAX);
		if (s && !proto_all_zero(s, m->hello.resource + PROTO_NAME_MAX - s))
			return bad(why, wl,
				   "HELLO: resource has non-zero bytes after its NUL");
		break;
	case PROTO_AUTH:
		memcpy(m->auth.mac, w.auth->mac, PROTO_MAC_SIZE);
		break;
	case PROTO_AUTH_RESULT:
		m->auth_result.status = get_be16(w.ar->status);
		m->auth_result.version = get_be16(w.ar->version);
		m->auth_result.features = get_be64(w.ar->features);
		rsvd = get_be32(w.ar->reserved);
		break;
	case PROTO_STATE:
		m->state.role = w.state->role;
		m->state.disk = w.state->disk;
		m->state.flags = get_be32(w.state->flags);
		m->state.current_uuid = get_be64(w.state->current_uuid);
		m->state.bitmap_uuid = get_be64(w.state->bitmap_uuid);
		for (int i = 0; i < PROTO_HISTORY; i++)
			m->state.history[i] = get_be64(w.state->history[i]);
		m->state.dirty_bits = get_be64(w.state->dirty_bits);
		m->state.promoted = get_be64(w.state->promoted);
		rsvd = get_be16(w.state->reserved);
		break;
	case PROTO_BITMAP:
		m->bitmap.first_page = get_be64(w.bm->first_page);
		m->bitmap.count = get_be32(w.bm->count);
		m->bitmap.flags = get_be32(w.bm->flags);
		break;
	case PROTO_DATA:
		m->data.sector = get_be64(w.data->sector);
		m->data.length = get_be32(w.data->length);
		m->data.op = w.data->op;
		m->data.flags = w.data->flags;
		m->data.digest_alg = w.data->digest_alg;
		m->data.epoch = get_be64(w.data->epoch);
		memcpy(m->data.digest, w.data->digest, PROTO_DIGEST_MAX);
		rsvd = w.data->reserved;
		break;
	case PROTO_ACK_RECV:
	case PROTO_ACK_WRITE:
	case PROTO_RS_REQUEST:
	case PROTO_RS_IN_SYNC:
	case PROTO_RS_ACK:
	case PROTO_READ_REQUEST:
		m->range.sector = get_be64(w.range->sector);
		m->range.length = get_be32(w.range->length);
		m->range.result = get_be32(w.range->result);
		break;
	case PROTO_RS_DATA:
	case PROTO_RS_CSUM:
	case PROTO_OV_REQUEST:
	case PROTO_OV_REPLY:
	case PROTO_READ_DATA:
		m->block.sector = get_be64(w.block->sector);
		m->block.length = get_be32(w.block->length);
		m->block.result = get_be32(w.block->result);
		m->block.digest_alg = w.block->digest_alg;
		memcpy(m->block.digest, w.block->digest, PROTO_DIGEST_MAX);
		rsvd = !proto_all_zero(w.block->reserved, sizeof(w.block->reserved));
		break;
	case PROTO_BARRIER:
	case PROTO_BARRIER_ACK:
		m->barrier.epoch = get_be64(w.barrier->epoch);
		if (type == PROTO_BARRIER)
			m->barrier.flags = get_be32(w.barrier->value);
		else
			m->barrier.nr_writes = get_be32(w.barrier->value);
		rsvd = get_be32(w.barrier->reserved);
		break;
	case PROTO_RS_DONE:
		m->rs_done.kind = get_be16(w.done->kind);
		m->rs_done.result = get_be32(w.done->result);
		m->rs_done.sectors = get_be64(w.done->sectors);
		rsvd = get_be16(w.done->reserved);
		break;
	case PROTO_DISCONNECT:
		m->disconnect.reason = get_be32(w.disc->reason);
		memcpy(m->disconnect.text, w.disc->text, PROTO_TEXT_MAX);
		rsvd = get_be32(w.disc->reserved);
		s = memchr(m->disconnect.text, '\0', PROTO_TEXT_MAX);
		if (s && !proto_all_zero(s, m->disconnect.text + PROTO_TEXT_MAX - s))
			return bad(why, wl,
				   "DISCONNECT: text has non-zero bytes after its NUL");
		break;
	}
	if (rsvd)
		return bad(why, wl, "%s: reserved field is not zero", t);
	return 0;
}

ssize_t proto_encode(const struct proto_msg *m, void *buf, size_t len,
		     char *why, size_t why_len)
{
	struct hdr_wire *h = buf;
	uint8_t *fixed = (uint8_t *)buf + PROTO_HDR_SIZE;
	size_t fsize;

	if (!type_valid(m->type)) {
		bad(why, why_len, "unknown message type %u", m->type);
		return -EINVAL;
	}
	fsize = types[m->type].fixed;
	if (len < PROTO_HDR_SIZE + fsize)
		return -ENOSPC;
	if (proto_check_msg(m, NULL, why, why_len))
		return -EINVAL;
	encode_fixed(m, fixed);
	h->magic = put_be32(PROTO_MAGIC);
	h->type = put_be16(m->type);
	h->flags = put_be16(0);
	h->length = put_be32((uint32_t)fsize + proto_payload_len(m));
	h->fixed_crc = put_be32(crc32c(fixed, fsize));
	h->id = put_be64(m->id);
	h->reserved = put_be32(0);
	h->hdr_crc = put_be32(crc32c(h, HDR_CRC_LEN));
	return (ssize_t)(PROTO_HDR_SIZE + fsize);
}

/* What the header says, once it has been checked. */
struct hdr_info {
	unsigned int type;
	uint32_t length;	/* bytes after the header */
	uint32_t fixed;		/* bytes of the fixed part */
	uint32_t fixed_crc;
	uint64_t id;
};

/*
 * The header on its own. The CRC comes right after the magic so that no
 * field, above all the length, is believed before it is known to be what
 * the peer sent; the length is then bounded by the type's maximum before
 * anything is read or allocated for it.
 */
static int decode_hdr(const void *buf, struct hdr_info *hi, char *why,
		      size_t wl)
{
	const struct hdr_wire *h = buf;
	uint32_t magic = get_be32(h->magic), crc, want;
	const struct type_info *ti;

	if (magic != PROTO_MAGIC)
		return bad(why, wl,
			   "bad magic 0x%08x: not a duet peer, or the stream lost sync",
			   magic);
	crc = get_be32(h->hdr_crc);
	want = crc32c(h, HDR_CRC_LEN);
	if (crc != want)
		return bad(why, wl,
			   "header CRC mismatch (0x%08x on the wire, 0x%08x computed)",
			   crc, want);
	hi->type = get_be16(h->type);
	if (!type_valid(hi->type))
		return bad(why, wl, "unknown message type %u", hi->type);
	ti = &types[hi->type];
	if (get_be16(h->flags))
		return bad(why, wl, "%s: header flags 0x%x unknown", ti->name,
			   get_be16(h->flags));
	if (get_be32(h->reserved))
		return bad(why, wl, "%s: header reserved field is not zero",
			   ti->name);
	hi->length = get_be32(h->length);
	hi->fixed = ti->fixed;
	if (hi->length < ti->fixed)
		return bad(why, wl,
			   "%s: length %u is shorter than the %u-byte fixed part",
			   ti->name, hi->length, ti->fixed);
	if (hi->length - ti->fixed > ti->max_payload)
		return bad(why, wl,
			   "%s: length %u exceeds the maximum of %u (fixed part %u + payload %u)",
			   ti->name, hi->length, ti->fixed + ti->max_payload,
			   ti->fixed, ti->max_payload);
	hi->fixed_crc = get_be32(h->fixed_crc);
	hi->id = get_be64(h->id);
	return 0;
}

static int decode_body(const struct hdr_info *hi, const void *fixed,
		       const struct proto_limits *lim, struct proto_msg *m,
		       char *why, size_t wl)
{
	const char *t = types[hi->type].name;
	uint32_t crc = crc32c(fixed, hi->fixed), payload;

	if (crc != hi->fixed_crc)
		return bad(why, wl,
			   "%s: fixed part CRC mismatch (0x%08x on the wire, 0x%08x computed)",
			   t, hi->fixed_crc, crc);
	memset(m, 0, sizeof(*m));
	m->type = (uint16_t)hi->type;
	m->id = hi->id;
	if (decode_fixed(hi->type, fixed, m, why, wl))
		return -EBADMSG;
	if (proto_check_msg(m, lim, why, wl))
		return -EBADMSG;
	payload = proto_payload_len(m);
	if (payload != hi->length - hi->fixed)
		return bad(why, wl,
			   "%s: length %u carries %u payload bytes, the fixed part announces %u",
			   t, hi->length, hi->length - hi->fixed, payload);
	m->payload_len = payload;
	return 0;
}

/* DATA, RS_DATA and READ_DATA may carry a digest of their payload. */
static int check_payload(const struct proto_msg *m, char *why, size_t wl)
{
	uint8_t d[PROTO_DIGEST_MAX];
	unsigned int alg;
	const uint8_t *want;
	uint64_t sector;

	if (m->type == PROTO_DATA) {
		alg = m->data.digest_alg;
		want = m->data.digest;
		sector = m->data.sector;
	} else if (m->type == PROTO_RS_DATA || m->type == PROTO_READ_DATA) {
		alg = m->block.digest_alg;
		want = m->block.digest;
		sector = m->block.sector;
	} else {
		return 0;
	}
	if (alg == PROTO_DIGEST_NONE || !m->payload_len)
		return 0;
	if (proto_digest(alg, m->payload, m->payload_len, d))
		return bad(why, wl, "%s: cannot compute the %s digest",
			   types[m->type].name, proto_digest_name(alg));
	if (memcmp(d, want, PROTO_DIGEST_MAX))
		return bad(why, wl,
			   "%s: payload %s digest mismatch at sector %llu",
			   types[m->type].name, proto_digest_name(alg),
			   (ull)sector);
	return 0;
}

int proto_decode(const void *buf, size_t len, const struct proto_limits *lim,
		 struct proto_msg *m, size_t *frame_len, char *why,
		 size_t why_len)
{
	static const struct proto_limits unknown;
	const uint8_t *b = buf;
	struct hdr_info hi;

	/* Same order as the parser: both say the same about the same bytes. */
	if (len < PROTO_HDR_SIZE)
		return bad(why, why_len, "truncated header: %zu of %u bytes",
			   len, PROTO_HDR_SIZE);
	if (decode_hdr(b, &hi, why, why_len))
		return -EBADMSG;
	len -= PROTO_HDR_SIZE;
	if (len < hi.fixed)
		return bad(why, why_len, "%s: truncated fixed part: %zu of %u bytes",
			   types[hi.type].name, len, hi.fixed);
	if (decode_body(&hi, b + PROTO_HDR_SIZE, lim ? lim : &unknown, m, why,
			why_len))
		return -EBADMSG;
	if (len - hi.fixed < m->payload_len)
		return bad(why, why_len, "%s: truncated payload: %zu of %u bytes",
			   types[hi.type].name, len - hi.fixed, m->payload_len);
	if (m->payload_len)
		m->payload = b + PROTO_HDR_SIZE + hi.fixed;
	if (check_payload(m, why, why_len))
		return -EBADMSG;
	*frame_len = PROTO_HDR_SIZE + hi.length;
	return 0;
}

/* ---- streaming parser ---- */

enum parser_state {
	PS_HDR,		/* collecting the header */
	PS_FIXED,	/* collecting the fixed part */
	PS_PAYLOAD,	/* collecting the payload */
	PS_FRAME,	/* a frame was delivered; the next call starts anew */
	PS_ERROR,
};

struct proto_parser {
	enum parser_state state;
	size_t have;		/* bytes of the current piece received */
	struct proto_limits lim;
	struct hdr_info hi;
	struct proto_msg msg;
	bool dest_given;	/* proto_parser_buf handed out the payload */
	uint8_t *dest;		/* where the payload goes */
	uint8_t *own;		/* PROTO_PAYLOAD_MAX bytes, on first use */
	uint8_t head[PROTO_HDR_SIZE + PROTO_FIXED_MAX];
	char err[192];
};

struct proto_parser *proto_parser_new(const struct proto_limits *lim)
{
	struct proto_parser *p = calloc(1, sizeof(*p));

	if (!p) {
		errno = ENOMEM;
		return NULL;
	}
	if (lim)
		p->lim = *lim;
	return p;
}

void proto_parser_free(struct proto_parser *p)
{
	if (!p)
		return;
	free(p->own);
	free(p);
}

void proto_parser_set_limits(struct proto_parser *p,
			     const struct proto_limits *lim)
{
	p->lim = *lim;
}

const struct proto_msg *proto_parser_msg(const struct proto_parser *p)
{
	return p->state == PS_FRAME || p->state == PS_PAYLOAD ? &p->msg : NULL;
}

const char *proto_parser_error(const struct proto_parser *p)
{
	return p->state == PS_ERROR ? p->err : "";
}

static int parser_fail(struct proto_parser *p)
{
	p->state = PS_ERROR;
	return -EBADMSG;
}

void *proto_parser_buf(struct proto_parser *p, size_t *want)
{
	if (p->state == PS_FRAME) {
		p->state = PS_HDR;
		p->have = 0;
	}
	switch (p->state) {
	case PS_HDR:
		*want = PROTO_HDR_SIZE - p->have;
		return p->head + p->have;
	case PS_FIXED:
		*want = p->hi.fixed - p->have;
		return p->head + PROTO_HDR_SIZE + p->have;
	case PS_PAYLOAD:
		if (!p->dest) {
			if (!p->own)
				p->own = malloc(PROTO_PAYLOAD_MAX);
			if (!p->own) {
				errno = ENOMEM;
				return NULL;
			}
			p->dest = p->own;
			p->msg.payload = p->own;
		}
		p->dest_given = true;
		*want = p->msg.payload_len - p->have;
		return p->dest + p->have;
	default:
		errno = EBADMSG;
		return NULL;
	}
}

int proto_parser_set_payload(struct proto_parser *p, void *buf)
{
	if (p->state != PS_PAYLOAD || p->dest_given || !buf)
		return -EINVAL;
	p->dest = buf;
	p->msg.payload = buf;
	return 0;
}

/* Header and fixed part are in: decode them, announce the payload. */
static int parser_fixed_done(struct proto_parser *p)
{
	if (decode_body(&p->hi, p->head + PROTO_HDR_SIZE, &p->lim, &p->msg,
			p->err, sizeof(p->err)))
		return parser_fail(p);
	p->have = 0;
	if (!p->msg.payload_len) {
		p->state = PS_FRAME;
		return PROTO_PARSE_FRAME;
	}
	p->state = PS_PAYLOAD;
	p->dest = NULL;
	p->dest_given = false;
	return PROTO_PARSE_PAYLOAD;
}

int proto_parser_advance(struct proto_parser *p, size_t n)
{
	size_t want;

	if (p->state == PS_ERROR)
		return -EBADMSG;
	if (!proto_parser_buf(p, &want))
		return -errno;
	if (n > want)
		return -EINVAL;
	p->have += n;
	if (p->have < (p->state == PS_HDR ? PROTO_HDR_SIZE :
		       p->state == PS_FIXED ? p->hi.fixed :
					      p->msg.payload_len))
		return PROTO_PARSE_MORE;

	switch (p->state) {
	case PS_HDR:
		if (decode_hdr(p->head, &p->hi, p->err, sizeof(p->err)))
			return parser_fail(p);
		p->have = 0;
		p->state = PS_FIXED;
		if (p->hi.fixed)
			return PROTO_PARSE_MORE;
		return parser_fixed_done(p);
	case PS_FIXED:
		return parser_fixed_done(p);
	case PS_PAYLOAD:
		if (check_payload(&p->msg, p->err, sizeof(p->err)))
			return parser_fail(p);
		p->state = PS_FRAME;
		return PROTO_PARSE_FRAME;
	default:
		return -EBADMSG;
	}
}

int proto_parser_feed(struct proto_parser *p, const void *data, size_t len,
		      size_t *consumed)
{
	const uint8_t *src = data;
	size_t done = 0, want, n;
	void *dst;
	int r;

	*consumed = 0;
	if (p->state == PS_ERROR)
		return -EBADMSG;
	do {
		dst = proto_parser_buf(p, &want);
		if (!dst)
			return -errno;
		n = want < len - done ? want : len - done;
		if (n)
			memcpy(dst, src + done, n);
		done += n;
		r = proto_parser_advance(p, n);
		*consumed = done;
		if (r != PROTO_PARSE_MORE)
			return r;
	} while (done < len);
	return PROTO_PARSE_MORE;
}
