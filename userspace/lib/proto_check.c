// SPDX-License-Identifier: MIT
/*
 * What makes a frame valid (proto_int.h): the checks the encoder runs
 * before it writes a frame and the decoder runs on every frame it reads,
 * so that duet never sends what duet refuses.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bm.h"
#include "md.h"
#include "proto.h"
#include "proto_int.h"
#include "util.h"

static size_t digest_size(unsigned int alg)
{
	return alg == PROTO_DIGEST_CRC32C ? 4 :
	       alg == PROTO_DIGEST_SHA256 ? 32 : 0;
}

/* ---- checks shared by the encoder and the decoder ---- */

/*
 * A string field: NUL-terminated inside the field and printable ASCII,
 * because it ends up in log lines and must not smuggle control characters
 * into them.
 */
static int check_string(const char *t, const char *field, const char *s,
			size_t size, bool allow_empty, char lowest,
			char *why, size_t wl)
{
	const char *nul = memchr(s, '\0', size);

	if (!nul)
		return bad(why, wl, "%s: %s is not NUL-terminated", t, field);
	if (nul == s && !allow_empty)
		return bad(why, wl, "%s: %s is empty", t, field);
	for (const char *c = s; c < nul; c++)
		if (*c < lowest || *c > '~')
			return bad(why, wl,
				   "%s: %s has a non-printable byte 0x%02x", t,
				   field, (unsigned char)*c);
	return 0;
}

static int check_errno(const char *t, uint32_t result, bool allowed,
		       char *why, size_t wl)
{
	if (!allowed && result)
		return bad(why, wl, "%s: result %u must be 0", t, result);
	if (result > PROTO_ERRNO_MAX)
		return bad(why, wl, "%s: result %u is not an errno", t, result);
	return 0;
}

/* sector + length inside the device; length a positive 512-multiple. */
static int check_extent(const char *t, uint64_t sector, uint32_t length,
			uint32_t max, const struct proto_limits *lim,
			char *why, size_t wl)
{
	uint64_t dev_sectors;

	if (!length || length % SECTOR_SIZE)
		return bad(why, wl,
			   "%s: length %u is not a positive multiple of 512",
			   t, length);
	if (length > max)
		return bad(why, wl, "%s: length %u exceeds the maximum of %u",
			   t, length, max);
	if (!lim)
		return 0;
	if (!lim->dev_bytes)
		return bad(why, wl,
			   "%s: sector %llu named before the device size is known",
			   t, (ull)sector);
	dev_sectors = lim->dev_bytes >> SECTOR_SHIFT;
	if (sector > dev_sectors ||
	    length >> SECTOR_SHIFT > dev_sectors - sector)
		return bad(why, wl,
			   "%s: sector %llu + length %u reaches past the device end (%llu bytes)",
			   t, (ull)sector, length, (ull)lim->dev_bytes);
	return 0;
}

/* A digest field: known algorithm, zero past the digest's size. */
static int check_digest(const char *t, unsigned int alg,
			const uint8_t *digest, bool need_alg, char *why,
			size_t wl)
{
	size_t n;

	if (alg > PROTO_DIGEST_SHA256)
		return bad(why, wl, "%s: digest_alg %u unknown", t, alg);
	if (need_alg && alg == PROTO_DIGEST_NONE)
		return bad(why, wl, "%s: digest_alg must not be none", t);
	n = digest_size(alg);
	if (!proto_all_zero(digest + n, PROTO_DIGEST_MAX - n))
		return bad(why, wl,
			   "%s: digest bytes past the %zu-byte %s digest are not zero",
			   t, n, proto_digest_name(alg));
	return 0;
}

static uint64_t bm_pages(const struct proto_limits *lim)
{
	return bm_disk_bytes_for(lim->dev_bytes >> SECTOR_SHIFT,
				 lim->bm_granularity) / BM_PAGE_SIZE;
}

static int check_hello(const struct proto_hello *h, char *why, size_t wl)
{
	if (!h->version_min)
		return bad(why, wl, "HELLO: version_min 0 is not a version");
	if (h->version_min > h->version_max)
		return bad(why, wl, "HELLO: version_min %u > version_max %u",
			   h->version_min, h->version_max);
	if (h->hs_role != PROTO_HS_INITIATOR &&
	    h->hs_role != PROTO_HS_ACCEPTOR)
		return bad(why, wl, "HELLO: hs_role %u unknown", h->hs_role);
	if (h->repl < PROTO_REPL_A || h->repl > PROTO_REPL_C)
		return bad(why, wl, "HELLO: repl (replication protocol) %u unknown",
			   h->repl);
	if (h->data_digest > PROTO_DIGEST_SHA256)
		return bad(why, wl, "HELLO: data_digest %u unknown",
			   h->data_digest);
	if (h->node_id > MD_NODE_ID_MAX)
		return bad(why, wl, "HELLO: node_id %u out of range 0..%d",
			   h->node_id, MD_NODE_ID_MAX);
	if (!is_pow2(h->bm_granularity) || h->bm_granularity < BM_GRAN_MIN ||
	    h->bm_granularity > BM_GRAN_MAX)
		return bad(why, wl,
			   "HELLO: bm_granularity %u is not a power of two in [%u, %u]",
			   h->bm_granularity, BM_GRAN_MIN, BM_GRAN_MAX);
	if (!h->data_bytes || h->data_bytes % SECTOR_SIZE)
		return bad(why, wl,
			   "HELLO: data_bytes %llu is not a positive multiple of 512",
			   (ull)h->data_bytes);
	if (proto_all_zero(h->challenge, sizeof(h->challenge)))
		return bad(why, wl, "HELLO: challenge is all zeros");
	return check_string("HELLO", "resource", h->resource,
			    sizeof(h->resource), false, '!', why, wl);
}

static int check_state(const struct proto_state *s,
		       const struct proto_limits *lim, char *why, size_t wl)
{
	uint64_t bits;

	if (s->role != PROTO_ROLE_SECONDARY && s->role != PROTO_ROLE_PRIMARY)
		return bad(why, wl, "STATE: role %u unknown", s->role);
	if (s->disk < PROTO_DISK_DISKLESS || s->disk > PROTO_DISK_UP_TO_DATE)
		return bad(why, wl, "STATE: disk %u unknown", s->disk);
	if (s->flags & ~(uint32_t)PROTO_SF_ALL)
		return bad(why, wl, "STATE: flags 0x%x has unknown bits",
			   s->flags);
	/* A count, not a position: checked once the geometry is known. */
	if (!lim || !lim->dev_bytes || !lim->bm_granularity)
		return 0;
	bits = DIV_ROUND_UP(lim->dev_bytes, lim->bm_granularity);
	if (s->dirty_bits > bits)
		return bad(why, wl,
			   "STATE: dirty_bits %llu exceeds the %llu bits of the bitmap",
			   (ull)s->dirty_bits, (ull)bits);
	return 0;
}

static int check_bitmap(const struct proto_bitmap *b,
			const struct proto_limits *lim, char *why, size_t wl)
{
	uint64_t pages;

	if (b->flags & ~PROTO_BM_LAST)
		return bad(why, wl, "BITMAP: flags 0x%x has unknown bits",
			   b->flags);
	if (b->count > PROTO_BM_PAGES_MAX)
		return bad(why, wl, "BITMAP: count %u exceeds the maximum of %u",
			   b->count, PROTO_BM_PAGES_MAX);
	if (!b->count && !(b->flags & PROTO_BM_LAST))
		return bad(why, wl, "BITMAP: count 0 in a frame that is not the last");
	if (!lim)
		return 0;
	pages = bm_pages(lim);
	if (!pages)
		return bad(why, wl,
			   "BITMAP: first_page %llu named before the bitmap geometry is known",
			   (ull)b->first_page);
	if (b->first_page > pages || b->count > pages - b->first_page)
		return bad(why, wl,
			   "BITMAP: first_page %llu + count %u past the %llu pages of the bitmap",
			   (ull)b->first_page, b->count, (ull)pages);
	return 0;
}

static int check_data(const struct proto_data *d,
		      const struct proto_limits *lim, char *why, size_t wl)
{
	bool write = d->op == PROTO_OP_WRITE;

	if (d->op < PROTO_OP_WRITE || d->op > PROTO_OP_WRITE_ZEROES)
		return bad(why, wl, "DATA: op %u unknown", d->op);
	if (d->flags & ~PROTO_DF_FUA)
		return bad(why, wl, "DATA: flags 0x%x has unknown bits",
			   d->flags);
	if (!write && d->digest_alg != PROTO_DIGEST_NONE)
		return bad(why, wl, "DATA: digest_alg %u on an op without data",
			   d->digest_alg);
	if (check_digest("DATA", d->digest_alg, d->digest, false, why, wl))
		return -EBADMSG;
	/* Discards and write-zeroes carry no payload: only u32 bounds them. */
	return check_extent("DATA", d->sector, d->length,
			    write ? PROTO_DATA_MAX : UINT32_MAX, lim, why, wl);
}

static int check_range(unsigned int type, const struct proto_range *r,
		       const struct proto_limits *lim, char *why, size_t wl)
{
	const char *t = proto_type_name(type);
	bool ack = type == PROTO_ACK_RECV || type == PROTO_ACK_WRITE;
	bool err = type == PROTO_ACK_WRITE || type == PROTO_RS_ACK;

	if (check_errno(t, r->result, err, why, wl))
		return -EBADMSG;
	/* Acks answer DATA, which may be a discard longer than any payload. */
	return check_extent(t, r->sector, r->length,
			    ack ? UINT32_MAX : PROTO_DATA_MAX, lim, why, wl);
}

static int check_block(unsigned int type, const struct proto_block *b,
		       const struct proto_limits *lim, char *why, size_t wl)
{
	const char *t = proto_type_name(type);
	/* RS_DATA and READ_DATA: a block of data, or why there is none */
	bool data = type == PROTO_RS_DATA || type == PROTO_READ_DATA;
	bool err = data || type == PROTO_OV_REPLY;

	if (check_errno(t, b->result, err, why, wl))
		return -EBADMSG;
	if (check_digest(t, b->digest_alg, b->digest, !data, why, wl))
		return -EBADMSG;
	if (b->result && data && b->digest_alg)
		return bad(why, wl, "%s: digest_alg must be none when result is set",
			   t);
	if ((type == PROTO_OV_REQUEST || b->result) &&
	    !proto_all_zero(b->digest, sizeof(b->digest)))
		return bad(why, wl, "%s: digest must be zero %s", t,
			   b->result ? "when result is set" : "in a request");
	return check_extent(t, b->sector, b->length, PROTO_DATA_MAX, lim, why,
			    wl);
}

int proto_check_msg(const struct proto_msg *m, const struct proto_limits *lim,
		    char *why, size_t wl)
{
	const struct proto_barrier *b = &m->barrier;

	switch (m->type) {
	case PROTO_HELLO:
		return check_hello(&m->hello, why, wl);
	case PROTO_AUTH_RESULT:
		if (m->auth_result.status > PROTO_AUTH_FAILED)
			return bad(why, wl, "AUTH_RESULT: status %u unknown",
				   m->auth_result.status);
		if (m->auth_result.status == PROTO_AUTH_OK &&
		    !m->auth_result.version)
			return bad(why, wl,
				   "AUTH_RESULT: version 0 in a success");
		return 0;
	case PROTO_STATE:
		return check_state(&m->state, lim, why, wl);
	case PROTO_BITMAP:
		return check_bitmap(&m->bitmap, lim, why, wl);
	case PROTO_DATA:
		return check_data(&m->data, lim, why, wl);
	case PROTO_ACK_RECV:
	case PROTO_ACK_WRITE:
	case PROTO_RS_REQUEST:
	case PROTO_RS_IN_SYNC:
	case PROTO_RS_ACK:
	case PROTO_READ_REQUEST:
		return check_range(m->type, &m->range, lim, why, wl);
	case PROTO_RS_DATA:
	case PROTO_RS_CSUM:
	case PROTO_OV_REQUEST:
	case PROTO_OV_REPLY:
	case PROTO_READ_DATA:
		return check_block(m->type, &m->block, lim, why, wl);
	case PROTO_BARRIER:
		if (b->flags & ~PROTO_BF_FLUSH)
			return bad(why, wl, "BARRIER: flags 0x%x has unknown bits",
				   b->flags);
		return 0;
	case PROTO_RS_DONE:
		if (m->rs_done.kind != PROTO_RS_KIND_RESYNC &&
		    m->rs_done.kind != PROTO_RS_KIND_VERIFY)
			return bad(why, wl, "RS_DONE: kind %u unknown",
				   m->rs_done.kind);
		if (check_errno("RS_DONE", m->rs_done.result, true, why, wl))
			return -EBADMSG;
		if (lim && lim->dev_bytes &&
		    m->rs_done.sectors > lim->dev_bytes >> SECTOR_SHIFT)
			return bad(why, wl,
				   "RS_DONE: sectors %llu exceeds the device (%llu bytes)",
				   (ull)m->rs_done.sectors, (ull)lim->dev_bytes);
		return 0;
	case PROTO_DISCONNECT:
		if (!m->disconnect.reason ||
		    m->disconnect.reason >= PROTO_DISC_END)
			return bad(why, wl, "DISCONNECT: reason %u unknown",
				   m->disconnect.reason);
		return check_string("DISCONNECT", "text", m->disconnect.text,
				    sizeof(m->disconnect.text), true, ' ', why,
				    wl);
	case PROTO_AUTH:
	case PROTO_BARRIER_ACK:
	case PROTO_PING:
	case PROTO_PING_ACK:
		return 0; /* every value of every field is meaningful */
	}
	return bad(why, wl, "unknown message type %u", m->type);
}
