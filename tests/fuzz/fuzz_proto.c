// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the frame decoder and the streaming parser over
 * arbitrary bytes.
 *
 * Input: one mode byte, then the stream.
 *   bit 0  leave magic and CRCs as they are (else fz_fix_frames fixes them)
 *   bit 1  no limits known (before the handshake)
 *   bit 2  direct every payload into a caller buffer (zero-copy path)
 *   bits 3..7  seed of the chunking (how "TCP" splits the stream)
 *
 * Besides the sanitizers, three oracles abort on a disagreement:
 *  - canonical encoding: every frame the decoder accepts re-encodes to the
 *    very same header and fixed-part bytes;
 *  - the parser yields exactly the frames proto_decode yields back to back,
 *    whatever the chunking, payloads included;
 *  - both refuse at the same frame for the same reason, and the parser
 *    waits for more (no error) exactly where proto_decode says truncated.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"

#define MAX_REF 512

static uint8_t direct_buf[PROTO_PAYLOAD_MAX];

struct ref {
	struct proto_msg msg;
};

static struct ref refs[MAX_REF];

/* See fuzz_hs.c: stderr may be closed by -close_fd_mask. */
static int report_fd = 2;

static __attribute__((noreturn)) void die(const char *what, size_t frame)
{
	dprintf(report_fd, "fuzz_proto: %s (frame %zu)\n", what, frame);
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	report_fd = dup(2);
	if (report_fd < 0)
		report_fd = 2;
	return 0;
}

static unsigned int next_rand(unsigned int *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static bool same_msg(const struct proto_msg *a, const struct proto_msg *b)
{
	if (a->type != b->type || a->id != b->id ||
	    a->payload_len != b->payload_len)
		return false;
	if (memcmp(&a->hello, &b->hello,
		   sizeof(*a) - offsetof(struct proto_msg, hello)))
		return false;
	return !a->payload_len ||
	       !memcmp(a->payload, b->payload, a->payload_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct proto_limits unknown;
	const struct proto_limits *lim;
	uint8_t enc[PROTO_HDR_SIZE + PROTO_FIXED_MAX];
	char why[256] = "", perr[256];
	size_t len, off, flen, ndec = 0, got = 0, pos = 0, chunk, used;
	bool dec_failed = false, truncated = false;
	struct proto_parser *p;
	struct proto_msg m;
	unsigned int seed;
	uint8_t mode, *buf;
	ssize_t n;
	int r = 0;

	if (!size)
		return 0;
	mode = data[0];
	len = size - 1;
	buf = malloc(len ? len : 1);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, len);
	if (!(mode & 1))
		fz_fix_frames(buf, len);
	lim = mode & 2 ? &unknown : &fz_lim;

	/* The reference: proto_decode, frame after frame. */
	for (off = 0; off < len; off += flen) {
		if (proto_decode(buf + off, len - off, lim, &m, &flen, why,
				 sizeof(why))) {
			dec_failed = true;
			truncated = strstr(why, "truncated") != NULL;
			break;
		}
		n = proto_encode(&m, enc, sizeof(enc), NULL, 0);
		if (n < 0 || n + (ssize_t)m.payload_len != (ssize_t)flen)
			die("accepted frame does not re-encode", ndec);
		if (memcmp(enc, buf + off, (size_t)n))
			die("encoding is not canonical", ndec);
		if (ndec < MAX_REF)
			refs[ndec].msg = m;
		ndec++;
	}

	/* The parser, fed in pieces. */
	p = proto_parser_new(lim);
	if (!p)
		goto out_free;
	seed = (mode >> 3) * 2654435761u + 1;
	while (pos < len) {
		chunk = 1 + next_rand(&seed) % ((mode & 0x80) ? 7 : 4099);
		if (chunk > len - pos)
			chunk = len - pos;
		while (chunk) {
			r = proto_parser_feed(p, buf + pos, chunk, &used);
			pos += used;
			chunk -= used;
			if (r < 0)
				goto parsed;
			if (r == PROTO_PARSE_PAYLOAD && (mode & 4) &&
			    proto_parser_set_payload(p, direct_buf))
				die("set_payload refused after PAYLOAD", got);
			if (r != PROTO_PARSE_FRAME)
				continue;
			if (got >= ndec)
				die("parser yields a frame proto_decode refused",
				    got);
			if (got < MAX_REF &&
			    !same_msg(&refs[got].msg, proto_parser_msg(p)))
				die("parser and proto_decode disagree", got);
			got++;
		}
	}
parsed:
	snprintf(perr, sizeof(perr), "%s", proto_parser_error(p));
	if (got != ndec)
		die("parser found a different number of frames", got);
	if (dec_failed && !truncated) {
		if (r != -EBADMSG || strcmp(perr, why))
			die("parser accepted what proto_decode refused", got);
	} else if (r < 0) {
		die("parser refused what proto_decode accepted", got);
	}
	proto_parser_free(p);
out_free:
	free(buf);
	return 0;
}
