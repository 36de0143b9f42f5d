// SPDX-License-Identifier: MIT
/*
 * Frame codec and streaming parser: wire layout, round trip of every
 * message type, every decoder check, CRC coverage of every header and
 * fixed-part byte, payload digests, the parser under every chunking, the
 * zero-copy path, and refusal of oversized frames before their payload.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crc.h"
#include "proto.h"

#define GiB (1ull << 30)
#define DEV_BYTES GiB			/* 2^21 sectors */
#define DEV_SECTORS (DEV_BYTES >> 9)
#define GRAN 4096u			/* 2^18 bits, 8 bitmap pages */
#define BM_PAGES 8u
#define BM_BITS (DEV_BYTES / GRAN)

static const struct proto_limits lim = { DEV_BYTES, GRAN };

#define FRAME_BUF (PROTO_FRAME_MAX)

static void put_be(uint8_t *p, unsigned int width, uint64_t v)
{
	for (unsigned int i = 0; i < width; i++)
		p[i] = (uint8_t)(v >> (8 * (width - 1 - i)));
}

static uint64_t get_be(const uint8_t *p, unsigned int width)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < width; i++)
		v = v << 8 | p[i];
	return v;
}

/* Recompute the CRCs after a test has changed bytes on purpose. */
static void reseal(uint8_t *f, size_t fixed)
{
	put_be(f + 12, 4, crc32c(f + PROTO_HDR_SIZE, fixed));
	put_be(f + 28, 4, crc32c(f, 28));
}

static void fill(uint8_t *p, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
}

/*
 * A valid message of @type with every field set to something distinctive
 * (so a field swapped or dropped by the codec shows), and its payload.
 */
static void sample(unsigned int type, struct proto_msg *m, uint8_t *payload,
		   unsigned int variant)
{
	memset(m, 0, sizeof(*m));
	m->type = (uint16_t)type;
	m->id = 0x0102030405060708ull + type * 0x1111 + variant;
	switch (type) {
	case PROTO_HELLO:
		m->hello.version_min = 1;
		m->hello.version_max = 7;
		m->hello.hs_role = PROTO_HS_ACCEPTOR;
		m->hello.repl = PROTO_REPL_B;
		m->hello.data_digest = PROTO_DIGEST_SHA256;
		m->hello.node_id = 17;
		m->hello.bm_granularity = 65536;
		m->hello.features = 0xfedcba9876543210ull;
		m->hello.data_bytes = 0x123456789a00ull;
		fill(m->hello.challenge, PROTO_CHALLENGE_SIZE, 3);
		strcpy(m->hello.resource, "r0-database.main");
		break;
	case PROTO_AUTH:
		fill(m->auth.mac, PROTO_MAC_SIZE, 5);
		break;
	case PROTO_AUTH_RESULT:
		m->auth_result.status = PROTO_AUTH_OK;
		m->auth_result.version = 3;
		m->auth_result.features = 0x5;
		break;
	case PROTO_STATE:
		m->state.role = PROTO_ROLE_PRIMARY;
		m->state.disk = PROTO_DISK_OUTDATED;
		m->state.flags = PROTO_SF_WAS_PRIMARY | PROTO_SF_FULL_SYNC;
		m->state.current_uuid = 0x1111222233334444ull;
		m->state.bitmap_uuid = 0x5555666677778888ull;
		for (int i = 0; i < PROTO_HISTORY; i++)
			m->state.history[i] = 0x9999000000000000ull + i;
		m->state.dirty_bits = BM_BITS;
		m->state.promoted = 1700000000;
		break;
	case PROTO_BITMAP:
		m->bitmap.first_page = 5;
		m->bitmap.count = 3;
		m->bitmap.flags = PROTO_BM_LAST;
		fill(payload, 3 * PROTO_BM_PAGE_SIZE, variant);
		break;
	case PROTO_DATA:
		m->data.sector = 4096 + variant * 8;
		m->data.length = 8192;
		m->data.op = PROTO_OP_WRITE;
		m->data.flags = PROTO_DF_FUA;
		m->data.epoch = 0xabcdef01ull;
		m->data.digest_alg = variant % 3;
		fill(payload, m->data.length, variant);
		assert_int_equal(proto_digest(m->data.digest_alg, payload,
					      m->data.length, m->data.digest),
				 0);
		break;
	case PROTO_ACK_RECV:
	case PROTO_RS_REQUEST:
	case PROTO_RS_IN_SYNC:
		m->range.sector = DEV_SECTORS - 16;
		m->range.length = 8192;
		break;
	case PROTO_ACK_WRITE:
	case PROTO_RS_ACK:
		m->range.sector = 77;
		m->range.length = 512;
		m->range.result = EIO;
		break;
	case PROTO_RS_DATA:
		m->block.sector = 1000;
		m->block.length = PROTO_DATA_MAX;
		m->block.digest_alg = PROTO_DIGEST_CRC32C;
		fill(payload, PROTO_DATA_MAX, variant);
		assert_int_equal(proto_digest(PROTO_DIGEST_CRC32C, payload,
					      PROTO_DATA_MAX, m->block.digest),
				 0);
		break;
	case PROTO_RS_CSUM:
	case PROTO_OV_REPLY:
		m->block.sector = 2048;
		m->block.length = 4096;
		m->block.digest_alg = PROTO_DIGEST_SHA256;
		fill(m->block.digest, PROTO_DIGEST_MAX, 9);
		break;
	case PROTO_OV_REQUEST:
		m->block.sector = 3;
		m->block.length = 1024;
		m->block.digest_alg = PROTO_DIGEST_CRC32C;
		break;
	case PROTO_BARRIER:
		m->barrier.epoch = 0xabcdef01ull;
		m->barrier.flags = PROTO_BF_FLUSH;
		break;
	case PROTO_BARRIER_ACK:
		m->barrier.epoch = 0xabcdef01ull;
		m->barrier.nr_writes = 123456;
		break;
	case PROTO_RS_DONE:
		m->rs_done.kind = PROTO_RS_KIND_VERIFY;
		m->rs_done.result = ENOSPC;
		m->rs_done.sectors = DEV_SECTORS;
		break;
	case PROTO_PING:
	case PROTO_PING_ACK:
		break;
	case PROTO_DISCONNECT:
		m->disconnect.reason = PROTO_DISC_SPLIT_BRAIN;
		strcpy(m->disconnect.text, "split brain detected, manual recovery");
		break;
	case PROTO_READ_REQUEST:
		m->range.sector = DEV_SECTORS - 2048;
		m->range.length = PROTO_DATA_MAX;
		break;
	case PROTO_READ_DATA:
		/* variant 2: the peer could not read it (no payload) */
		m->block.sector = 4000 + variant;
		m->block.length = 65536;
		if (variant == 2) {
			m->block.result = EIO;
			break;
		}
		m->block.digest_alg = variant ? PROTO_DIGEST_SHA256 :
						PROTO_DIGEST_NONE;
		fill(payload, m->block.length, variant + 4);
		assert_int_equal(proto_digest(m->block.digest_alg, payload,
					      m->block.length,
					      m->block.digest),
				 0);
		break;
	default:
		fail_msg("no sample for type %u", type);
	}
}

/* Header + fixed part + payload into @f; returns the frame length. */
static size_t build(const struct proto_msg *m, const uint8_t *payload,
		    uint8_t *f)
{
	char why[256] = "";
	ssize_t n = proto_encode(m, f, FRAME_BUF, why, sizeof(why));
	uint32_t plen = proto_payload_len(m);

	if (n < 0)
		fail_msg("encode %s: %zd %s", proto_type_name(m->type), n, why);
	if (plen)
		memcpy(f + n, payload, plen);
	return (size_t)n + plen;
}

static uint8_t *frame_buf(void)
{
	/* Zeroed: some tests hand the whole buffer to the decoder. */
	uint8_t *f = calloc(1, FRAME_BUF);

	assert_non_null(f);
	return f;
}

static void assert_same_msg(const struct proto_msg *a,
			    const struct proto_msg *b)
{
	assert_int_equal(a->type, b->type);
	assert_true(a->id == b->id);
	/* Both sides start zeroed, so padding compares equal too. */
	if (memcmp(&a->hello, &b->hello, sizeof(*a) -
			offsetof(struct proto_msg, hello)))
		fail_msg("%s fields differ", proto_type_name(a->type));
}

static void test_layout(void **state)
{
	static const int fixed[PROTO_TYPE_END] = {
		[PROTO_HELLO] = 128,	  [PROTO_AUTH] = 32,
		[PROTO_AUTH_RESULT] = 16, [PROTO_STATE] = 72,
		[PROTO_BITMAP] = 16,	  [PROTO_DATA] = 56,
		[PROTO_ACK_RECV] = 16,	  [PROTO_ACK_WRITE] = 16,
		[PROTO_BARRIER] = 16,	  [PROTO_BARRIER_ACK] = 16,
		[PROTO_RS_REQUEST] = 16,  [PROTO_RS_DATA] = 56,
		[PROTO_RS_CSUM] = 56,	  [PROTO_RS_IN_SYNC] = 16,
		[PROTO_RS_ACK] = 16,	  [PROTO_OV_REQUEST] = 56,
		[PROTO_OV_REPLY] = 56,	  [PROTO_RS_DONE] = 16,
		[PROTO_PING] = 0,	  [PROTO_PING_ACK] = 0,
		[PROTO_DISCONNECT] = 128, [PROTO_READ_REQUEST] = 16,
		[PROTO_READ_DATA] = 56,
	};
	struct proto_msg m;
	uint8_t payload[8192], f[256];
	unsigned int t;

	(void)state;
	for (t = 1; t < PROTO_TYPE_END; t++)
		assert_int_equal(proto_fixed_size(t), fixed[t]);
	assert_int_equal(proto_fixed_size(0), -EINVAL);
	assert_int_equal(proto_fixed_size(PROTO_TYPE_END), -EINVAL);

	/* DATA, byte by byte as docs/protocol.md draws it. */
	sample(PROTO_DATA, &m, payload, 1);	/* crc32c digest */
	assert_int_equal(proto_encode(&m, f, sizeof(f), NULL, 0), 32 + 56);
	assert_memory_equal(f, "DUET", 4);
	assert_int_equal(get_be(f + 4, 2), PROTO_DATA);
	assert_int_equal(get_be(f + 6, 2), 0);
	assert_int_equal(get_be(f + 8, 4), 56 + 8192);
	assert_int_equal(get_be(f + 12, 4), crc32c(f + 32, 56));
	assert_true(get_be(f + 16, 8) == m.id);
	assert_int_equal(get_be(f + 24, 4), 0);
	assert_int_equal(get_be(f + 28, 4), crc32c(f, 28));
	assert_true(get_be(f + 32, 8) == m.data.sector);
	assert_int_equal(get_be(f + 40, 4), 8192);
	assert_int_equal(f[44], PROTO_OP_WRITE);
	assert_int_equal(f[45], PROTO_DF_FUA);
	assert_int_equal(f[46], PROTO_DIGEST_CRC32C);
	assert_int_equal(f[47], 0);
	assert_true(get_be(f + 48, 8) == 0xabcdef01ull);
	assert_int_equal(get_be(f + 56, 4), crc32c(payload, 8192));
	for (int i = 60; i < 88; i++)
		assert_int_equal(f[i], 0);

	/* HELLO: the part every version must keep. */
	sample(PROTO_HELLO, &m, payload, 0);
	assert_int_equal(proto_encode(&m, f, sizeof(f), NULL, 0), 32 + 128);
	assert_int_equal(get_be(f + 32, 2), 1);
	assert_int_equal(get_be(f + 34, 2), 7);
	assert_int_equal(f[36], PROTO_HS_ACCEPTOR);
	assert_int_equal(f[37], PROTO_REPL_B);
	assert_int_equal(f[38], PROTO_DIGEST_SHA256);
	assert_int_equal(get_be(f + 40, 4), 17);
	assert_int_equal(get_be(f + 44, 4), 65536);
	assert_true(get_be(f + 48, 8) == 0xfedcba9876543210ull);
	assert_true(get_be(f + 56, 8) == 0x123456789a00ull);
	assert_memory_equal(f + 64, m.hello.challenge, 32);
	assert_string_equal((char *)f + 96, "r0-database.main");
	for (int i = 96 + 16; i < 160; i++)
		assert_int_equal(f[i], 0);
}

static void test_round_trip(void **state)
{
	uint8_t *payload = frame_buf(), *f = frame_buf(), *g = frame_buf();
	struct proto_msg m, d, d2;
	char why[256];
	size_t len, flen;
	unsigned int t, v;

	(void)state;
	for (t = 1; t < PROTO_TYPE_END; t++) {
		for (v = 0; v < 3; v++) {
			sample(t, &m, payload, v);
			len = build(&m, payload, f);
			assert_int_equal(len, PROTO_HDR_SIZE +
						      proto_fixed_size(t) +
						      proto_payload_len(&m));
			why[0] = '\0';
			if (proto_decode(f, len, &lim, &d, &flen, why,
					 sizeof(why)))
				fail_msg("%s: %s", proto_type_name(t), why);
			assert_int_equal(flen, len);
			assert_same_msg(&m, &d);
			assert_int_equal(d.payload_len, proto_payload_len(&m));
			if (d.payload_len) {
				assert_ptr_equal(d.payload,
						 f + PROTO_HDR_SIZE +
							 proto_fixed_size(t));
				assert_memory_equal(d.payload, payload,
						    d.payload_len);
			} else {
				assert_null(d.payload);
			}
			/* Canonical: decoding then encoding gives the bytes. */
			assert_int_equal(build(&d, d.payload, g), len);
			assert_memory_equal(f, g, len);
			assert_int_equal(proto_decode(g, len, &lim, &d2, &flen,
						      NULL, 0),
					 0);
			assert_same_msg(&d, &d2);
		}
	}
	free(payload);
	free(f);
	free(g);
}

static void test_payload_len(void **state)
{
	struct proto_msg m = { .type = PROTO_DATA };

	(void)state;
	m.data.op = PROTO_OP_WRITE;
	m.data.length = 4096;
	assert_int_equal(proto_payload_len(&m), 4096);
	m.data.op = PROTO_OP_DISCARD;
	assert_int_equal(proto_payload_len(&m), 0);
	m.data.op = PROTO_OP_WRITE_ZEROES;
	assert_int_equal(proto_payload_len(&m), 0);
	memset(&m, 0, sizeof(m));
	m.type = PROTO_RS_DATA;
	m.block.length = 4096;
	assert_int_equal(proto_payload_len(&m), 4096);
	m.block.result = EIO;
	assert_int_equal(proto_payload_len(&m), 0);
	memset(&m, 0, sizeof(m));
	m.type = PROTO_READ_DATA;
	m.block.length = 8192;
	assert_int_equal(proto_payload_len(&m), 8192);
	m.block.result = ENODATA;	/* the reader failed: no data follows */
	assert_int_equal(proto_payload_len(&m), 0);
	m.type = PROTO_READ_REQUEST;
	m.range.length = 8192;
	assert_int_equal(proto_payload_len(&m), 0);
	memset(&m, 0, sizeof(m));
	m.type = PROTO_BITMAP;
	m.bitmap.count = 2;
	assert_int_equal(proto_payload_len(&m), 8192);
	m.bitmap.count = UINT32_MAX;	/* saturates instead of wrapping */
	assert_int_equal(proto_payload_len(&m), UINT32_MAX);
	m.type = PROTO_STATE;
	assert_int_equal(proto_payload_len(&m), 0);
}

/* One corruption of a valid frame, and the word the reason must name. */
struct mutation {
	unsigned int type;
	int off;		/* in the frame; >= 32 is the fixed part */
	unsigned int width;	/* 1, 2, 4, 8; 0: fill @n bytes with @value */
	uint64_t value;
	unsigned int n;
	const char *word;
};

#define F(o) (32 + (o))

static const struct mutation mutations[] = {
	/* header */
	{ PROTO_PING, 0, 4, 0x44554555, 0, "magic" },
	{ PROTO_PING, 4, 2, 0, 0, "type" },
	{ PROTO_PING, 4, 2, PROTO_TYPE_END, 0, "type" },
	{ PROTO_PING, 4, 2, 0xffff, 0, "type" },
	{ PROTO_PING, 6, 2, 1, 0, "flags" },
	{ PROTO_PING, 24, 4, 1, 0, "reserved" },
	{ PROTO_PING, 8, 4, 1, 0, "length" },
	{ PROTO_HELLO, 8, 4, 127, 0, "length" },
	{ PROTO_HELLO, 8, 4, 129, 0, "length" },
	{ PROTO_DATA, 8, 4, 0xffffffff, 0, "length" },
	{ PROTO_BITMAP, 8, 4, 16 + PROTO_DATA_MAX + 1, 0, "length" },
	/* the payload must be what the fixed part announces */
	{ PROTO_DATA, 8, 4, 56 + 8192 - 512, 0, "announces" },
	{ PROTO_DATA, 8, 4, 56 + 8192 + 512, 0, "announces" },
	{ PROTO_RS_DATA, 8, 4, 56, 0, "announces" },
	{ PROTO_BITMAP, 8, 4, 16 + 4096, 0, "announces" },
	{ PROTO_STATE, 8, 4, 72 + 1, 0, "length" },
	/* HELLO */
	{ PROTO_HELLO, F(0), 2, 0, 0, "version_min" },
	{ PROTO_HELLO, F(0), 2, 8, 0, "version_min" },
	{ PROTO_HELLO, F(4), 1, 0, 0, "hs_role" },
	{ PROTO_HELLO, F(4), 1, 3, 0, "hs_role" },
	{ PROTO_HELLO, F(5), 1, 0, 0, "repl" },
	{ PROTO_HELLO, F(5), 1, 4, 0, "repl" },
	{ PROTO_HELLO, F(6), 1, 3, 0, "data_digest" },
	{ PROTO_HELLO, F(7), 1, 1, 0, "reserved" },
	{ PROTO_HELLO, F(8), 4, 32, 0, "node_id" },
	{ PROTO_HELLO, F(12), 4, 2048, 0, "bm_granularity" },
	{ PROTO_HELLO, F(12), 4, 4096 * 3, 0, "bm_granularity" },
	{ PROTO_HELLO, F(12), 4, 1u << 21, 0, "bm_granularity" },
	{ PROTO_HELLO, F(24), 8, 0, 0, "data_bytes" },
	{ PROTO_HELLO, F(24), 8, 1000, 0, "data_bytes" },
	{ PROTO_HELLO, F(32), 0, 0, 32, "challenge" },
	{ PROTO_HELLO, F(64), 0, 'a', 64, "resource" },	/* no NUL */
	{ PROTO_HELLO, F(64), 1, 0, 0, "resource" },	/* empty, padding */
	{ PROTO_HELLO, F(65), 1, 7, 0, "resource" },	/* control char */
	{ PROTO_HELLO, F(65), 1, ' ', 0, "resource" },
	{ PROTO_HELLO, F(65), 1, 0x80, 0, "resource" },
	{ PROTO_HELLO, F(127), 1, 'x', 0, "resource" },	/* padding */
	/* AUTH_RESULT */
	{ PROTO_AUTH_RESULT, F(0), 2, 2, 0, "status" },
	{ PROTO_AUTH_RESULT, F(2), 2, 0, 0, "version" },
	{ PROTO_AUTH_RESULT, F(4), 4, 1, 0, "reserved" },
	/* STATE */
	{ PROTO_STATE, F(0), 1, 0, 0, "role" },
	{ PROTO_STATE, F(0), 1, 3, 0, "role" },
	{ PROTO_STATE, F(1), 1, 0, 0, "disk" },
	{ PROTO_STATE, F(1), 1, 6, 0, "disk" },
	{ PROTO_STATE, F(2), 2, 1, 0, "reserved" },
	{ PROTO_STATE, F(4), 4, 1u << 5, 0, "flags" },
	{ PROTO_STATE, F(56), 8, BM_BITS + 1, 0, "dirty_bits" },
	/* BITMAP */
	{ PROTO_BITMAP, F(8), 4, PROTO_BM_PAGES_MAX + 1, 0, "count" },
	{ PROTO_BITMAP, F(12), 4, 2, 0, "flags" },
	{ PROTO_BITMAP, F(0), 8, BM_PAGES - 2, 0, "first_page" },
	{ PROTO_BITMAP, F(0), 8, UINT64_MAX, 0, "first_page" },
	/* DATA */
	{ PROTO_DATA, F(8), 4, 1000, 0, "length" },
	{ PROTO_DATA, F(8), 4, 0, 0, "length" },
	{ PROTO_DATA, F(12), 1, 0, 0, "op" },
	{ PROTO_DATA, F(12), 1, 4, 0, "op" },
	{ PROTO_DATA, F(13), 1, 2, 0, "flags" },
	{ PROTO_DATA, F(14), 1, 3, 0, "digest_alg" },
	{ PROTO_DATA, F(15), 1, 1, 0, "reserved" },
	{ PROTO_DATA, F(0), 8, DEV_SECTORS, 0, "sector" },
	{ PROTO_DATA, F(0), 8, DEV_SECTORS - 15, 0, "sector" },
	{ PROTO_DATA, F(0), 8, UINT64_MAX - 7, 0, "sector" },
	{ PROTO_DATA, F(24 + 31), 1, 1, 0, "digest" },	/* past the digest */
	/* ACK_RECV, ACK_WRITE, RS_REQUEST, RS_IN_SYNC, RS_ACK */
	{ PROTO_ACK_RECV, F(12), 4, EIO, 0, "result" },
	{ PROTO_ACK_RECV, F(8), 4, 511, 0, "length" },
	{ PROTO_ACK_RECV, F(0), 8, DEV_SECTORS - 8, 0, "sector" },
	{ PROTO_ACK_WRITE, F(12), 4, 4096, 0, "result" },
	{ PROTO_ACK_WRITE, F(8), 4, 0, 0, "length" },
	{ PROTO_RS_REQUEST, F(8), 4, PROTO_DATA_MAX + 512, 0, "length" },
	{ PROTO_RS_REQUEST, F(12), 4, 1, 0, "result" },
	{ PROTO_RS_IN_SYNC, F(12), 4, 1, 0, "result" },
	{ PROTO_RS_IN_SYNC, F(0), 8, DEV_SECTORS, 0, "sector" },
	{ PROTO_RS_ACK, F(12), 4, 0x80000000u, 0, "result" },
	/* RS_DATA, RS_CSUM, OV_REQUEST, OV_REPLY */
	{ PROTO_RS_DATA, F(16), 1, 3, 0, "digest_alg" },
	{ PROTO_RS_DATA, F(17), 1, 1, 0, "reserved" },
	{ PROTO_RS_DATA, F(23), 1, 1, 0, "reserved" },
	{ PROTO_RS_DATA, F(24 + 4), 1, 1, 0, "digest" },
	{ PROTO_RS_CSUM, F(16), 1, 0, 0, "digest_alg" },
	{ PROTO_RS_CSUM, F(12), 4, EIO, 0, "result" },
	{ PROTO_RS_CSUM, F(8), 4, 4095, 0, "length" },
	{ PROTO_OV_REQUEST, F(24), 1, 1, 0, "digest" },
	{ PROTO_OV_REQUEST, F(16), 1, 0, 0, "digest_alg" },
	{ PROTO_OV_REQUEST, F(0), 8, DEV_SECTORS - 1, 0, "sector" },
	{ PROTO_OV_REPLY, F(12), 4, EIO, 0, "digest" },	/* digest set */
	{ PROTO_OV_REPLY, F(12), 4, 5000, 0, "result" },
	/* BARRIER, BARRIER_ACK */
	{ PROTO_BARRIER, F(8), 4, 2, 0, "flags" },
	{ PROTO_BARRIER, F(12), 4, 1, 0, "reserved" },
	{ PROTO_BARRIER_ACK, F(12), 4, 1, 0, "reserved" },
	/* RS_DONE */
	{ PROTO_RS_DONE, F(0), 2, 0, 0, "kind" },
	{ PROTO_RS_DONE, F(0), 2, 3, 0, "kind" },
	{ PROTO_RS_DONE, F(2), 2, 1, 0, "reserved" },
	{ PROTO_RS_DONE, F(4), 4, 4096, 0, "result" },
	{ PROTO_RS_DONE, F(8), 8, DEV_SECTORS + 1, 0, "sectors" },
	/* DISCONNECT */
	{ PROTO_DISCONNECT, F(0), 4, 0, 0, "reason" },
	{ PROTO_DISCONNECT, F(0), 4, PROTO_DISC_END, 0, "reason" },
	{ PROTO_DISCONNECT, F(4), 4, 1, 0, "reserved" },
	{ PROTO_DISCONNECT, F(8), 0, 'z', 120, "text" },	/* no NUL */
	{ PROTO_DISCONNECT, F(9), 1, '\n', 0, "text" },
	{ PROTO_DISCONNECT, F(8 + 119), 1, 'z', 0, "text" },	/* padding */
	/* READ_REQUEST */
	{ PROTO_READ_REQUEST, F(12), 4, EIO, 0, "result" },
	{ PROTO_READ_REQUEST, F(8), 4, 0, 0, "length" },
	{ PROTO_READ_REQUEST, F(8), 4, 1000, 0, "length" },
	{ PROTO_READ_REQUEST, F(8), 4, PROTO_DATA_MAX + 512, 0, "length" },
	{ PROTO_READ_REQUEST, F(0), 8, DEV_SECTORS - 2047, 0, "sector" },
	{ PROTO_READ_REQUEST, F(0), 8, UINT64_MAX, 0, "sector" },
	/* READ_DATA (variant 1: SHA-256 digest, 64 KiB payload) */
	{ PROTO_READ_DATA, F(12), 4, 5000, 0, "result" },
	{ PROTO_READ_DATA, F(16), 1, 3, 0, "digest_alg" },
	{ PROTO_READ_DATA, F(17), 1, 1, 0, "reserved" },
	{ PROTO_READ_DATA, F(8), 4, 65536 + 512, 0, "announces" },
	{ PROTO_READ_DATA, F(8), 4, PROTO_DATA_MAX + 512, 0, "length" },
	{ PROTO_READ_DATA, F(0), 8, DEV_SECTORS - 64, 0, "sector" },
	{ PROTO_READ_DATA, F(12), 4, EIO, 0, "digest_alg" },	/* result + digest */
	{ PROTO_READ_DATA, 8, 4, 56, 0, "announces" },	/* payload missing */
};

static size_t mutate(const struct mutation *mu, uint8_t *f,
		     uint8_t *payload)
{
	struct proto_msg m;
	size_t len;

	sample(mu->type, &m, payload, 1);
	len = build(&m, payload, f);
	if (mu->width)
		put_be(f + mu->off, mu->width, mu->value);
	else
		memset(f + mu->off, (int)mu->value, mu->n);
	reseal(f, (size_t)proto_fixed_size(mu->type));
	return len;
}

static void test_decode_rejects(void **state)
{
	uint8_t *f = frame_buf(), *payload = frame_buf();
	struct proto_parser *p;
	struct proto_msg d;
	char why[256];
	size_t i, flen, used, off;
	int r;

	(void)state;
	for (i = 0; i < sizeof(mutations) / sizeof(mutations[0]); i++) {
		const struct mutation *mu = &mutations[i];

		mutate(mu, f, payload);
		why[0] = '\0';
		/* The whole buffer: a longer length must not read "truncated". */
		r = proto_decode(f, FRAME_BUF, &lim, &d, &flen, why,
				 sizeof(why));
		if (r != -EBADMSG || !strstr(why, mu->word))
			fail_msg("mutation %zu (%s @%d): %d '%s', want '%s'",
				 i, proto_type_name(mu->type), mu->off, r, why,
				 mu->word);

		/* The parser refuses it with the same reason. */
		p = proto_parser_new(&lim);
		assert_non_null(p);
		off = 0;
		do {
			r = proto_parser_feed(p, f + off, FRAME_BUF - off,
					      &used);
			off += used;
		} while (r == PROTO_PARSE_PAYLOAD);
		if (r != -EBADMSG || strcmp(proto_parser_error(p), why))
			fail_msg("mutation %zu via parser: %d '%s' vs '%s'", i,
				 r, proto_parser_error(p), why);
		proto_parser_free(p);
	}
	free(f);
	free(payload);
}

/* Edges that must be accepted: the checks are not off by one. */
static void test_decode_edges(void **state)
{
	uint8_t *f = frame_buf(), *payload = frame_buf();
	struct proto_msg m, d;
	size_t len, flen;
	char why[256] = "";

	(void)state;
	/* A write ending exactly at the device end. */
	sample(PROTO_DATA, &m, payload, 0);
	m.data.sector = DEV_SECTORS - m.data.length / 512;
	len = build(&m, payload, f);
	assert_int_equal(proto_decode(f, len, &lim, &d, &flen, why,
				      sizeof(why)), 0);
	/* A discard of the whole device is 2^30 bytes: no payload. */
	m.data.op = PROTO_OP_DISCARD;
	m.data.sector = 0;
	m.data.length = (uint32_t)DEV_BYTES;
	m.data.digest_alg = PROTO_DIGEST_NONE;
	memset(m.data.digest, 0, sizeof(m.data.digest));
	len = build(&m, payload, f);
	assert_int_equal(len, PROTO_HDR_SIZE + 56);
	assert_int_equal(proto_decode(f, len, &lim, &d, &flen, why,
				      sizeof(why)), 0);
	assert_int_equal(d.payload_len, 0);
	/* ... but not one sector more. */
	m.data.sector = 1;
	len = build(&m, payload, f);
	assert_int_equal(proto_decode(f, len, &lim, &d, &flen, why,
				      sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "sector"));
	/* The last bitmap page; an empty last BITMAP. */
	sample(PROTO_BITMAP, &m, payload, 0);
	m.bitmap.first_page = BM_PAGES - 3;
	len = build(&m, payload, f);
	assert_int_equal(proto_decode(f, len, &lim, &d, &flen, why,
				      sizeof(why)), 0);
	m.bitmap.count = 0;
	m.bitmap.first_page = 0;
	len = build(&m, payload, f);
	assert_int_equal(len, PROTO_HDR_SIZE + 16);
	assert_int_equal(proto_decode(f, len, &lim, &d, &flen, why,
				      sizeof(why)), 0);
	m.bitmap.flags = 0;
	assert_int_equal(proto_encode(&m, f, FRAME_BUF, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "count"));
	/* A failed resync read: no payload, no digest. */
	sample(PROTO_RS_DATA, &m, payload, 0);
	m.block.result = EIO;
	m.block.digest_alg = PROTO_DIGEST_NONE;
	memset(m.block.digest, 0, sizeof(m.block.digest));
	len = build(&m, payload, f);
	assert_int_equal(len, PROTO_HDR_SIZE + 56);
	assert_int_equal(proto_decode(f, len, &lim, &d, &flen, why,
				      sizeof(why)), 0);
	/* A 63-character resource name fills the field. */
	sample(PROTO_HELLO, &m, payload, 0);
	memset(m.hello.resource, 'n', PROTO_NAME_MAX - 1);
	len = build(&m, payload, f);
	assert_int_equal(proto_decode(f, len, NULL, &d, &flen, why,
				      sizeof(why)), 0);
	assert_int_equal(strlen(d.hello.resource), PROTO_NAME_MAX - 1);
	free(f);
	free(payload);
}

/* No geometry yet (before the handshake): positions are refused. */
static void test_decode_without_limits(void **state)
{
	static const struct proto_limits none;
	uint8_t *f = frame_buf(), *payload = frame_buf();
	struct proto_msg m, d;
	size_t len, flen;
	char why[256] = "";

	(void)state;
	sample(PROTO_DATA, &m, payload, 0);
	len = build(&m, payload, f);
	assert_int_equal(proto_decode(f, len, &none, &d, &flen, why,
				      sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "before the device size is known"));
	sample(PROTO_BITMAP, &m, payload, 0);
	len = build(&m, payload, f);
	assert_int_equal(proto_decode(f, len, &none, &d, &flen, why,
				      sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "geometry"));
	sample(PROTO_HELLO, &m, payload, 0);
	len = build(&m, payload, f);
	assert_int_equal(proto_decode(f, len, &none, &d, &flen, why,
				      sizeof(why)), 0);
	free(f);
	free(payload);
}

static void test_truncated(void **state)
{
	uint8_t *f = frame_buf(), *payload = frame_buf();
	struct proto_msg m, d;
	size_t len, flen, cut;
	char why[256];

	(void)state;
	sample(PROTO_DATA, &m, payload, 2);
	len = build(&m, payload, f);
	for (cut = 0; cut < len; cut += (cut < 100 ? 1 : 509)) {
		why[0] = '\0';
		assert_int_equal(proto_decode(f, cut, &lim, &d, &flen, why,
					      sizeof(why)), -EBADMSG);
		assert_non_null(strstr(why, "truncated"));
	}
	assert_int_equal(proto_decode(f, len, &lim, &d, &flen, why,
				      sizeof(why)), 0);
	free(f);
	free(payload);
}

/* Every bit of the header and of the fixed part is covered by a CRC. */
static void test_crc_every_byte(void **state)
{
	uint8_t *f = frame_buf(), *payload = frame_buf();
	unsigned int types[] = { PROTO_DATA, PROTO_HELLO, PROTO_PING };
	struct proto_msg m, d;
	size_t len, flen, i, fixed;
	char why[256];

	(void)state;
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		sample(types[t], &m, payload, 0);
		len = build(&m, payload, f);
		fixed = (size_t)proto_fixed_size(types[t]);
		for (i = 0; i < PROTO_HDR_SIZE + fixed; i++) {
			for (int bit = 0; bit < 8; bit++) {
				f[i] ^= (uint8_t)(1u << bit);
				why[0] = '\0';
				assert_int_equal(proto_decode(f, len, &lim, &d,
							      &flen, why,
							      sizeof(why)),
						 -EBADMSG);
				if (i < 4)
					assert_non_null(strstr(why, "magic"));
				else if (i < PROTO_HDR_SIZE)
					assert_non_null(strstr(why, "header CRC"));
				else
					assert_non_null(strstr(why, "fixed part CRC"));
				f[i] ^= (uint8_t)(1u << bit);
			}
		}
		assert_int_equal(proto_decode(f, len, &lim, &d, &flen, why,
					      sizeof(why)), 0);
	}
	free(f);
	free(payload);
}

static void test_digest(void **state)
{
	static const uint8_t sha_abc[32] = {
		0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
		0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
		0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
	};
	static const uint8_t crc_digits[4] = { 0xe3, 0x06, 0x92, 0x83 };
	uint8_t d[PROTO_DIGEST_MAX], zero[PROTO_DIGEST_MAX] = { 0 };
	uint8_t *f = frame_buf(), *payload = frame_buf();
	struct proto_msg m, out;
	size_t len, flen;
	char why[256];

	(void)state;
	memset(d, 0xaa, sizeof(d));
	assert_int_equal(proto_digest(PROTO_DIGEST_SHA256, "abc", 3, d), 0);
	assert_memory_equal(d, sha_abc, 32);
	memset(d, 0xaa, sizeof(d));
	assert_int_equal(proto_digest(PROTO_DIGEST_CRC32C, "123456789", 9, d),
			 0);
	assert_memory_equal(d, crc_digits, 4);
	assert_memory_equal(d + 4, zero, 28);
	memset(d, 0xaa, sizeof(d));
	assert_int_equal(proto_digest(PROTO_DIGEST_NONE, "x", 1, d), 0);
	assert_memory_equal(d, zero, 32);
	assert_int_equal(proto_digest(3, "x", 1, d), -EINVAL);

	/* A payload bit flipped in transit is caught, with either digest. */
	for (unsigned int v = 1; v <= 2; v++) {
		sample(PROTO_DATA, &m, payload, v);
		assert_int_equal(m.data.digest_alg, v);
		len = build(&m, payload, f);
		assert_int_equal(proto_decode(f, len, &lim, &out, &flen, why,
					      sizeof(why)), 0);
		f[len - 1] ^= 0x10;
		why[0] = '\0';
		assert_int_equal(proto_decode(f, len, &lim, &out, &flen, why,
					      sizeof(why)), -EBADMSG);
		assert_non_null(strstr(why, "digest mismatch"));
		assert_non_null(strstr(why, proto_digest_name(v)));
	}
	/* Without a digest the same flip goes through: it is optional. */
	sample(PROTO_DATA, &m, payload, 0);
	assert_int_equal(m.data.digest_alg, PROTO_DIGEST_NONE);
	len = build(&m, payload, f);
	f[len - 1] ^= 0x10;
	assert_int_equal(proto_decode(f, len, &lim, &out, &flen, why,
				      sizeof(why)), 0);
	/* RS_DATA too. */
	sample(PROTO_RS_DATA, &m, payload, 0);
	len = build(&m, payload, f);
	f[PROTO_HDR_SIZE + 56 + 12345] ^= 1;
	assert_int_equal(proto_decode(f, len, &lim, &out, &flen, why,
				      sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "RS_DATA: payload crc32c digest mismatch"));
	free(f);
	free(payload);
}

static void test_encode_rejects(void **state)
{
	uint8_t payload[8192], f[256];
	struct proto_msg m;
	char why[256];

	(void)state;
	sample(PROTO_DATA, &m, payload, 0);
	m.data.length = 1000;
	why[0] = '\0';
	assert_int_equal(proto_encode(&m, f, sizeof(f), why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "length"));
	sample(PROTO_HELLO, &m, payload, 0);
	m.hello.node_id = 99;
	assert_int_equal(proto_encode(&m, f, sizeof(f), why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "node_id"));
	m.type = 0;
	assert_int_equal(proto_encode(&m, f, sizeof(f), why, sizeof(why)),
			 -EINVAL);
	m.type = PROTO_TYPE_END;
	assert_int_equal(proto_encode(&m, f, sizeof(f), NULL, 0), -EINVAL);
	sample(PROTO_HELLO, &m, payload, 0);
	assert_int_equal(proto_encode(&m, f, 32 + 127, NULL, 0), -ENOSPC);
	assert_int_equal(proto_encode(&m, f, 32 + 128, NULL, 0), 160);
	/* The encoder zero-pads a string whatever follows its NUL. */
	memset(m.hello.resource, 'q', sizeof(m.hello.resource));
	strcpy(m.hello.resource, "r1");
	assert_int_equal(proto_encode(&m, f, sizeof(f), NULL, 0), 160);
	assert_string_equal((char *)f + 96, "r1");
	for (int i = 96 + 2; i < 160; i++)
		assert_int_equal(f[i], 0);
}

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(proto_type_name(PROTO_DATA), "DATA");
	assert_string_equal(proto_type_name(PROTO_DISCONNECT), "DISCONNECT");
	assert_string_equal(proto_type_name(0), "?");
	assert_string_equal(proto_type_name(PROTO_TYPE_END), "?");
	for (unsigned int t = 1; t < PROTO_TYPE_END; t++)
		assert_string_not_equal(proto_type_name(t), "?");
	for (unsigned int r = 1; r < PROTO_DISC_END; r++)
		assert_string_not_equal(proto_disc_name(r), "?");
	assert_string_equal(proto_disc_name(0), "?");
	assert_string_equal(proto_digest_name(PROTO_DIGEST_SHA256), "sha256");
	assert_string_equal(proto_digest_name(9), "?");
}

/* ---- streaming parser ---- */

struct stream {
	uint8_t *bytes;
	size_t len;
	struct proto_msg ref[64];	/* what proto_decode makes of it */
	const uint8_t *ref_payload[64];
	size_t nr;
};

/* Every type, some twice with payloads and digests, back to back. */
static void make_stream(struct stream *s)
{
	static uint8_t payload[PROTO_DATA_MAX];
	struct proto_msg m;
	size_t off = 0, flen;
	unsigned int t, v;

	s->bytes = malloc(8 * 1024 * 1024);
	assert_non_null(s->bytes);
	s->nr = 0;
	for (v = 0; v < 2; v++) {
		for (t = 1; t < PROTO_TYPE_END; t++) {
			sample(t, &m, payload, v);
			off += build(&m, payload, s->bytes + off);
		}
	}
	s->len = off;
	for (off = 0; off < s->len; off += flen) {
		assert_true(s->nr < 64);
		assert_int_equal(proto_decode(s->bytes + off, s->len - off,
					      &lim, &s->ref[s->nr], &flen,
					      NULL, 0),
				 0);
		s->ref_payload[s->nr] = s->ref[s->nr].payload;
		s->nr++;
	}
	assert_int_equal(s->nr, 2 * (PROTO_TYPE_END - 1));
}

static void check_frame(const struct stream *s, size_t i,
			const struct proto_msg *m)
{
	assert_true(i < s->nr);
	assert_same_msg(&s->ref[i], m);
	assert_int_equal(m->payload_len, s->ref[i].payload_len);
	if (m->payload_len)
		assert_memory_equal(m->payload, s->ref_payload[i],
				    m->payload_len);
}

/* Feed @s in chunks of the sizes @next returns; count frames seen. */
static size_t parse_chunked(const struct stream *s,
			    size_t (*next)(unsigned int *seed),
			    unsigned int seed)
{
	struct proto_parser *p = proto_parser_new(&lim);
	size_t off = 0, frames = 0, chunk, used;
	int r;

	assert_non_null(p);
	while (off < s->len) {
		chunk = next(&seed);
		if (chunk > s->len - off)
			chunk = s->len - off;
		while (chunk) {
			r = proto_parser_feed(p, s->bytes + off, chunk, &used);
			if (r < 0)
				fail_msg("parser: %s", proto_parser_error(p));
			assert_true(used <= chunk);
			off += used;
			chunk -= used;
			if (r == PROTO_PARSE_FRAME)
				check_frame(s, frames++, proto_parser_msg(p));
			else if (r == PROTO_PARSE_MORE)
				assert_int_equal(chunk, 0);
		}
	}
	/* Nothing pending: the next thing wanted is a fresh header. */
	assert_non_null(proto_parser_buf(p, &chunk));
	assert_int_equal(chunk, PROTO_HDR_SIZE);
	proto_parser_free(p);
	return frames;
}

static size_t one_byte(unsigned int *seed)
{
	(void)seed;
	return 1;
}

static size_t everything(unsigned int *seed)
{
	(void)seed;
	return SIZE_MAX;
}

static size_t random_split(unsigned int *seed)
{
	unsigned int r = rand_r(seed);

	/* Mostly small pieces, now and then a big one. */
	return r % 8 ? 1 + r % 97 : 1 + r % (3 * PROTO_DATA_MAX / 2);
}

static void test_parser_chunkings(void **state)
{
	struct stream s;

	(void)state;
	make_stream(&s);
	assert_int_equal(parse_chunked(&s, everything, 0), s.nr);
	assert_int_equal(parse_chunked(&s, one_byte, 0), s.nr);
	for (unsigned int seed = 1; seed <= 20; seed++)
		assert_int_equal(parse_chunked(&s, random_split, seed), s.nr);
	free(s.bytes);
}

/* Direct mode: read exactly into proto_parser_buf, payloads into our own
 * buffers; short "reads" of random size. */
static void test_parser_direct(void **state)
{
	struct proto_parser *p = proto_parser_new(&lim);
	uint8_t *io = frame_buf();
	struct stream s;
	size_t off = 0, frames = 0, want, n;
	unsigned int seed = 7;
	const struct proto_msg *m;
	uint8_t *dst;
	int r;

	(void)state;
	assert_non_null(p);
	make_stream(&s);
	while (off < s.len) {
		dst = proto_parser_buf(p, &want);
		assert_non_null(dst);
		assert_true(want > 0);
		n = 1 + rand_r(&seed) % (want < 5000 ? want : 5000);
		memcpy(dst, s.bytes + off, n);
		off += n;
		r = proto_parser_advance(p, n);
		assert_true(r >= 0);
		if (r == PROTO_PARSE_PAYLOAD) {
			m = proto_parser_msg(p);
			assert_non_null(m);
			assert_true(m->payload_len > 0);
			assert_null(m->payload);
			/* The header says where it goes before it arrives. */
			memset(io, 0, m->payload_len);
			assert_int_equal(proto_parser_set_payload(p, io), 0);
			assert_int_equal(proto_parser_set_payload(p, io), 0);
		} else if (r == PROTO_PARSE_FRAME) {
			m = proto_parser_msg(p);
			check_frame(&s, frames, m);
			if (m->payload_len)
				assert_ptr_equal(m->payload, io);
			frames++;
		}
	}
	assert_int_equal(frames, s.nr);
	assert_int_equal(off, s.len);
	/* advance() past what was asked for is a caller bug. */
	assert_non_null(proto_parser_buf(p, &want));
	assert_int_equal(proto_parser_advance(p, want + 1), -EINVAL);
	proto_parser_free(p);
	free(s.bytes);
	free(io);
}

static void test_parser_set_payload_rules(void **state)
{
	struct proto_parser *p = proto_parser_new(&lim);
	uint8_t *f = frame_buf(), *payload = frame_buf(), io[8192];
	struct proto_msg m;
	size_t len, used, want;

	(void)state;
	assert_non_null(p);
	/* Not before a frame announced a payload. */
	assert_int_equal(proto_parser_set_payload(p, io), -EINVAL);
	assert_null(proto_parser_msg(p));
	sample(PROTO_DATA, &m, payload, 1);
	len = build(&m, payload, f);
	assert_int_equal(proto_parser_feed(p, f, len, &used),
			 PROTO_PARSE_PAYLOAD);
	assert_int_equal(used, PROTO_HDR_SIZE + 56);
	assert_int_equal(proto_parser_msg(p)->data.sector, m.data.sector);
	assert_int_equal(proto_parser_set_payload(p, NULL), -EINVAL);
	/* Once the parser handed out its own buffer, too late. */
	assert_non_null(proto_parser_buf(p, &want));
	assert_int_equal(want, 8192);
	assert_int_equal(proto_parser_set_payload(p, io), -EINVAL);
	assert_int_equal(proto_parser_feed(p, f + used, len - used, &used),
			 PROTO_PARSE_FRAME);
	assert_memory_equal(proto_parser_msg(p)->payload, payload, 8192);
	/* Nor after the frame is complete. */
	assert_int_equal(proto_parser_set_payload(p, io), -EINVAL);
	proto_parser_free(p);
	free(f);
	free(payload);
}

/*
 * A header announcing more than the type allows is refused after the 32
 * header bytes: the parser neither reads nor makes room for the rest.
 */
static void test_parser_oversized(void **state)
{
	static const struct {
		unsigned int type;
		uint32_t length;
	} cases[] = {
		{ PROTO_DATA, 0xffffffffu },
		{ PROTO_DATA, 56 + PROTO_DATA_MAX + 1 },
		{ PROTO_RS_DATA, 56 + PROTO_DATA_MAX + 512 },
		{ PROTO_BITMAP, 16 + PROTO_DATA_MAX + PROTO_BM_PAGE_SIZE },
		{ PROTO_STATE, 64 + 4096 },
		{ PROTO_PING, 1 },
	};
	uint8_t *f = frame_buf(), *payload = frame_buf();
	struct proto_parser *p;
	struct proto_msg m;
	size_t used, want;
	int r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sample(cases[i].type, &m, payload, 0);
		build(&m, payload, f);
		put_be(f + 8, 4, cases[i].length);
		reseal(f, (size_t)proto_fixed_size(cases[i].type));
		p = proto_parser_new(&lim);
		assert_non_null(p);
		r = proto_parser_feed(p, f, FRAME_BUF, &used);
		assert_int_equal(r, -EBADMSG);
		assert_int_equal(used, PROTO_HDR_SIZE);
		assert_non_null(strstr(proto_parser_error(p), "length"));
		assert_non_null(strstr(proto_parser_error(p), "exceeds"));
		/* Sticky: the stream is not resynchronized. */
		assert_int_equal(proto_parser_feed(p, f, 10, &used), -EBADMSG);
		assert_int_equal(used, 0);
		assert_null(proto_parser_buf(p, &want));
		assert_int_equal(errno, EBADMSG);
		assert_int_equal(proto_parser_advance(p, 0), -EBADMSG);
		assert_null(proto_parser_msg(p));
		proto_parser_free(p);
	}
	free(f);
	free(payload);
}

static void test_parser_limits(void **state)
{
	static const struct proto_limits small = { 1u << 20, GRAN };
	uint8_t *f = frame_buf(), *payload = frame_buf();
	struct proto_parser *p = proto_parser_new(NULL);
	struct proto_msg m;
	size_t len, used;
	int r;

	(void)state;
	assert_non_null(p);
	/* Before the handshake: HELLO yes, a write no. */
	sample(PROTO_HELLO, &m, payload, 0);
	len = build(&m, payload, f);
	assert_int_equal(proto_parser_feed(p, f, len, &used),
			 PROTO_PARSE_FRAME);
	proto_parser_set_limits(p, &small);
	sample(PROTO_DATA, &m, payload, 0);
	m.data.sector = (1u << 20) / 512 - 16;
	len = build(&m, payload, f);
	r = proto_parser_feed(p, f, len, &used);
	assert_int_equal(r, PROTO_PARSE_PAYLOAD);
	r = proto_parser_feed(p, f + used, len - used, &used);
	assert_int_equal(r, PROTO_PARSE_FRAME);
	/* One sector further is past the 1 MiB device. */
	m.data.sector++;
	len = build(&m, payload, f);
	assert_int_equal(proto_parser_feed(p, f, len, &used), -EBADMSG);
	assert_non_null(strstr(proto_parser_error(p), "past the device end"));
	proto_parser_free(p);

	p = proto_parser_new(NULL);
	assert_non_null(p);
	assert_int_equal(proto_parser_feed(p, f, len, &used), -EBADMSG);
	assert_non_null(strstr(proto_parser_error(p), "device size"));
	proto_parser_free(p);
	free(f);
	free(payload);
}

/* A digest mismatch found at the end of a zero-copy payload. */
static void test_parser_digest(void **state)
{
	struct proto_parser *p = proto_parser_new(&lim);
	uint8_t *f = frame_buf(), *payload = frame_buf(), *io = frame_buf();
	struct proto_msg m;
	size_t len, used;

	(void)state;
	assert_non_null(p);
	sample(PROTO_DATA, &m, payload, 2);
	len = build(&m, payload, f);
	f[len - 100] ^= 0x80;
	assert_int_equal(proto_parser_feed(p, f, len, &used),
			 PROTO_PARSE_PAYLOAD);
	assert_int_equal(proto_parser_set_payload(p, io), 0);
	assert_int_equal(proto_parser_feed(p, f + used, len - used, &used),
			 -EBADMSG);
	assert_non_null(strstr(proto_parser_error(p), "sha256 digest mismatch"));
	proto_parser_free(p);
	free(f);
	free(payload);
	free(io);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_payload_len),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_decode_edges),
		cmocka_unit_test(test_decode_without_limits),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_crc_every_byte),
		cmocka_unit_test(test_digest),
		cmocka_unit_test(test_encode_rejects),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_parser_chunkings),
		cmocka_unit_test(test_parser_direct),
		cmocka_unit_test(test_parser_set_payload_rules),
		cmocka_unit_test(test_parser_oversized),
		cmocka_unit_test(test_parser_limits),
		cmocka_unit_test(test_parser_digest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
