// SPDX-License-Identifier: MIT
/*
 * Writes the fuzzers' seed corpora, made by duet's own encoder so they
 * follow the format as it is today (nothing binary is committed):
 *
 *	gen_corpus DIR	-> DIR/proto/<name>, DIR/hs/<name>
 *
 * proto: one valid frame of every type, payload variants (digests,
 * discard, bitmap pages, failed resync read), and a stream of all of them.
 * hs: for each prefix depth of fuzz_hs, the genuine peer's remaining
 * frames followed by a post-handshake frame.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "log.h"

#define STREAM_MAX (1u << 20)

static uint8_t stream[STREAM_MAX];
static size_t stream_len;

static __attribute__((noreturn)) void die(const char *what)
{
	fprintf(stderr, "gen_corpus: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void write_file(const char *dir, const char *name, uint8_t mode,
		       const void *data, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		die(path);
	if (fputc(mode, f) == EOF || (len && fwrite(data, len, 1, f) != 1) ||
	    fclose(f))
		die(path);
}

/* Encode @m and @payload at the end of @out. */
static size_t put(uint8_t *out, const struct proto_msg *m,
		  const uint8_t *payload)
{
	char why[256] = "";
	ssize_t n = proto_encode(m, out, PROTO_HDR_SIZE + PROTO_FIXED_MAX, why,
				 sizeof(why));
	uint32_t plen = proto_payload_len(m);

	if (n < 0) {
		fprintf(stderr, "gen_corpus: %s: %s\n",
			proto_type_name(m->type), why);
		exit(1);
	}
	memcpy(out + n, payload, plen);
	return (size_t)n + plen;
}

static void sample(unsigned int type, unsigned int variant,
		   struct proto_msg *m, uint8_t *payload)
{
	memset(m, 0, sizeof(*m));
	m->type = (uint16_t)type;
	m->id = 1000 + type;
	for (int i = 0; i < 8192; i++)
		payload[i] = (uint8_t)(i * 7 + variant);
	switch (type) {
	case PROTO_HELLO:
		m->hello.version_min = 1;
		m->hello.version_max = 1;
		m->hello.hs_role = PROTO_HS_INITIATOR;
		m->hello.repl = PROTO_REPL_C;
		m->hello.data_digest = PROTO_DIGEST_CRC32C;
		m->hello.node_id = 1;
		m->hello.bm_granularity = fz_lim.bm_granularity;
		m->hello.features = PROTO_F_ALL;
		m->hello.data_bytes = fz_lim.dev_bytes;
		memset(m->hello.challenge, 0x11, PROTO_CHALLENGE_SIZE);
		strcpy(m->hello.resource, FZ_RESOURCE);
		break;
	case PROTO_AUTH:
		memset(m->auth.mac, 0x22, PROTO_MAC_SIZE);
		break;
	case PROTO_AUTH_RESULT:
		m->auth_result.status = variant ? PROTO_AUTH_FAILED :
						  PROTO_AUTH_OK;
		m->auth_result.version = 1;
		m->auth_result.features = PROTO_F_ALL;
		break;
	case PROTO_STATE:
		m->state.role = PROTO_ROLE_PRIMARY;
		m->state.disk = PROTO_DISK_UP_TO_DATE;
		m->state.flags = PROTO_SF_WAS_PRIMARY;
		m->state.current_uuid = 0x1234;
		m->state.bitmap_uuid = 0x5678;
		m->state.history[0] = 0x9abc;
		m->state.dirty_bits = 42;
		break;
	case PROTO_BITMAP:
		m->bitmap.first_page = variant;
		m->bitmap.count = variant ? 2 : 0;
		m->bitmap.flags = variant ? 0 : PROTO_BM_LAST;
		break;
	case PROTO_DATA:
		m->data.sector = 64;
		m->data.length = variant == 3 ? 1u << 20 : 4096;
		m->data.op = variant == 3 ? PROTO_OP_DISCARD : PROTO_OP_WRITE;
		m->data.flags = variant == 1 ? PROTO_DF_FUA : 0;
		m->data.epoch = 7;
		m->data.digest_alg = variant < 3 ? variant : 0;
		proto_digest(m->data.digest_alg, payload, 4096,
			     m->data.digest);
		break;
	case PROTO_ACK_RECV:
	case PROTO_ACK_WRITE:
	case PROTO_RS_REQUEST:
	case PROTO_RS_IN_SYNC:
	case PROTO_RS_ACK:
		m->range.sector = 64;
		m->range.length = 4096;
		m->range.result = (type == PROTO_ACK_WRITE && variant) ? EIO : 0;
		break;
	case PROTO_RS_DATA:
		m->block.sector = 128;
		m->block.length = 4096;
		m->block.result = variant ? EIO : 0;
		m->block.digest_alg = variant ? 0 : PROTO_DIGEST_SHA256;
		proto_digest(m->block.digest_alg, payload, 4096,
			     m->block.digest);
		break;
	case PROTO_RS_CSUM:
	case PROTO_OV_REQUEST:
	case PROTO_OV_REPLY:
		m->block.sector = 256;
		m->block.length = 8192;
		m->block.digest_alg = PROTO_DIGEST_CRC32C;
		if (type != PROTO_OV_REQUEST)
			proto_digest(PROTO_DIGEST_CRC32C, payload, 8192,
				     m->block.digest);
		break;
	case PROTO_BARRIER:
		m->barrier.epoch = 7;
		m->barrier.flags = PROTO_BF_FLUSH;
		break;
	case PROTO_BARRIER_ACK:
		m->barrier.epoch = 7;
		m->barrier.nr_writes = 3;
		break;
	case PROTO_RS_DONE:
		m->rs_done.kind = PROTO_RS_KIND_RESYNC;
		m->rs_done.sectors = 4096;
		break;
	case PROTO_DISCONNECT:
		m->disconnect.reason = PROTO_DISC_SHUTDOWN;
		strcpy(m->disconnect.text, "going down");
		break;
	case PROTO_READ_REQUEST:
		m->range.sector = 512;
		m->range.length = 4096;
		break;
	case PROTO_READ_DATA:
		m->block.sector = 512;
		m->block.length = 4096;
		m->block.result = variant ? EIO : 0;
		m->block.digest_alg = variant ? 0 : PROTO_DIGEST_CRC32C;
		proto_digest(m->block.digest_alg, payload, 4096,
			     m->block.digest);
		break;
	}
}

static void gen_proto(const char *dir)
{
	static uint8_t frame[PROTO_HDR_SIZE + PROTO_FIXED_MAX + 8192];
	uint8_t payload[8192];
	struct proto_msg m;
	char name[64];
	size_t n;

	for (unsigned int t = 1; t < PROTO_TYPE_END; t++) {
		for (unsigned int v = 0; v < 4; v++) {
			if (v && t != PROTO_DATA && t != PROTO_BITMAP &&
			    t != PROTO_RS_DATA && t != PROTO_READ_DATA &&
			    t != PROTO_AUTH_RESULT &&
			    t != PROTO_ACK_WRITE)
				continue;
			if (v > 1 && t != PROTO_DATA)
				continue;
			sample(t, v, &m, payload);
			n = put(frame, &m, payload);
			snprintf(name, sizeof(name), "%s-%u",
				 proto_type_name(t), v);
			/* mode 0: CRCs fixed up; also 4: zero-copy */
			write_file(dir, name, (uint8_t)(v & 1 ? 4 : 0), frame,
				   n);
			if (stream_len + n <= STREAM_MAX) {
				memcpy(stream + stream_len, frame, n);
				stream_len += n;
			}
		}
	}
	write_file(dir, "stream", 0x01, stream, stream_len);
	write_file(dir, "stream-bytewise", 0x81, stream, stream_len);
	write_file(dir, "stream-nolimits", 0x02, stream, stream_len);
}

/* B's frames after fuzz_hs's prefix of @depth, then a STATE. */
static void gen_hs(const char *dir)
{
	uint8_t a_hello[256], a_auth[256], b_hello[256], b_auth[256];
	uint8_t b_res[256], out_buf[1024], payload[8192];
	size_t la_hello, la_auth, lb_hello, lb_auth, lb_res, len, n;
	struct proto_msg m;
	struct hs_cfg ca, cb;
	struct hs *a, *b;
	const void *out;
	char name[32];

	fz_hs_cfg(&ca, 0);
	fz_hs_cfg(&cb, 1);
	a = hs_init(&ca);
	b = hs_init(&cb);
	if (!a || !b)
		die("hs_init");
	hs_start(a, &out, &la_hello);
	memcpy(a_hello, out, la_hello);
	hs_start(b, &out, &lb_hello);
	memcpy(b_hello, out, lb_hello);
	if (fz_decode_out(b_hello, lb_hello, &m) ||
	    hs_input(a, &m, &out, &la_auth) != HS_SEND)
		die("A: HELLO");
	memcpy(a_auth, out, la_auth);
	if (fz_decode_out(a_hello, la_hello, &m) ||
	    hs_input(b, &m, &out, &lb_auth) != HS_SEND)
		die("B: HELLO");
	memcpy(b_auth, out, lb_auth);
	if (fz_decode_out(a_auth, la_auth, &m) ||
	    hs_input(b, &m, &out, &lb_res) != HS_SEND)
		die("B: AUTH");
	memcpy(b_res, out, lb_res);

	for (unsigned int depth = 0; depth < 4; depth++) {
		len = 0;
		if (depth < 1) {
			memcpy(out_buf + len, b_hello, lb_hello);
			len += lb_hello;
		}
		if (depth < 2) {
			memcpy(out_buf + len, b_auth, lb_auth);
			len += lb_auth;
		}
		if (depth < 3) {
			memcpy(out_buf + len, b_res, lb_res);
			len += lb_res;
		}
		sample(PROTO_STATE, 0, &m, payload);
		n = put(out_buf + len, &m, payload);
		len += n;
		snprintf(name, sizeof(name), "depth%u", depth);
		write_file(dir, name, (uint8_t)depth, out_buf, len);
		/* The same with a HELLO replayed at the end. */
		memcpy(out_buf + len, b_hello, lb_hello);
		snprintf(name, sizeof(name), "depth%u-replay", depth);
		write_file(dir, name, (uint8_t)depth, out_buf, len + lb_hello);
	}
	sample(PROTO_DISCONNECT, 0, &m, payload);
	n = put(out_buf, &m, payload);
	write_file(dir, "disconnect", 0, out_buf, n);
	hs_free(a);
	hs_free(b);
}

int main(int argc, char **argv)
{
	char dir[4096];

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	log_level = LOG_LVL_ERR;
	mkdir(argv[1], 0755);
	snprintf(dir, sizeof(dir), "%s/proto", argv[1]);
	if (mkdir(dir, 0755) && errno != EEXIST)
		die(dir);
	gen_proto(dir);
	snprintf(dir, sizeof(dir), "%s/hs", argv[1]);
	if (mkdir(dir, 0755) && errno != EEXIST)
		die(dir);
	gen_hs(dir);
	return 0;
}
