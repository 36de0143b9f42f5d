/* SPDX-License-Identifier: MIT */
/*
 * Shared by the fuzz targets and the seed generator, so the seeds the
 * generator writes are exactly what the targets expect.
 */
#ifndef DUET_FUZZ_COMMON_H
#define DUET_FUZZ_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crc.h"
#include "hs.h"
#include "proto.h"

/* 1 GiB device, 4 KiB granules: 8 bitmap pages. */
static const struct proto_limits fz_lim = { 1ull << 30, 4096 };

#define FZ_SECRET "fuzzing shared secret"
#define FZ_RESOURCE "fz0"

static inline void fz_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t fz_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/*
 * Walk the frames of @b and make magic and CRCs right. A fuzzer cannot
 * forge a CRC32C by mutation, so without this almost every input would
 * stop at the header check and nothing behind it would be exercised.
 */
static inline void fz_fix_frames(uint8_t *b, size_t len)
{
	size_t off = 0;

	while (len - off >= PROTO_HDR_SIZE) {
		uint8_t *h = b + off;
		int fixed = proto_fixed_size((unsigned int)h[4] << 8 | h[5]);
		uint32_t length = fz_get_be32(h + 8);

		fz_put_be32(h, PROTO_MAGIC);
		if (fixed >= 0 && len - off - PROTO_HDR_SIZE >= (size_t)fixed)
			fz_put_be32(h + 12,
				    crc32c(h + PROTO_HDR_SIZE, (size_t)fixed));
		fz_put_be32(h + 28, crc32c(h, 28));
		if (length > len - off - PROTO_HDR_SIZE)
			break;
		off += PROTO_HDR_SIZE + length;
	}
}

/*
 * The handshake under test: node 0, the acceptor ("A"), facing a genuine
 * node 1 initiator ("B") with the same secret. Challenges are fixed so that
 * the generator can produce B's real answers for the seeds.
 */
static inline void fz_hs_cfg(struct hs_cfg *c, unsigned int node)
{
	memset(c, 0, sizeof(*c));
	c->resource = FZ_RESOURCE;
	c->secret = FZ_SECRET;
	c->secret_len = sizeof(FZ_SECRET) - 1;
	c->node_id = node;
	c->peer_node_id = HS_NODE_ANY;
	c->data_bytes = fz_lim.dev_bytes;
	c->bm_granularity = fz_lim.bm_granularity;
	c->features = PROTO_F_ALL;
	c->role = node ? PROTO_HS_INITIATOR : PROTO_HS_ACCEPTOR;
	c->repl = PROTO_REPL_C;
	c->data_digest = PROTO_DIGEST_CRC32C;
	for (int i = 0; i < PROTO_CHALLENGE_SIZE; i++)
		c->challenge[i] = (uint8_t)(0x40 * node + 3 * i + 1);
}

/* Decode one frame hs emitted; NULL-safe on failure (returns -1). */
static inline int fz_decode_out(const void *out, size_t len,
				struct proto_msg *m)
{
	size_t flen;

	if (proto_decode(out, len, &fz_lim, m, &flen, NULL, 0) || flen != len)
		return -1;
	return 0;
}

#endif
