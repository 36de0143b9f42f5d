// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the handshake fed arbitrary frames after a valid
 * prefix.
 *
 * A (node 0, acceptor) is under test; B (node 1, initiator) is a genuine
 * peer with the same secret. Input: one byte, then a byte stream.
 *   bits 0..1  how much of the genuine exchange A has already seen:
 *              0 nothing, 1 B's HELLO, 2 + B's AUTH, 3 + B's AUTH_RESULT
 *   bit 7      leave magic and CRCs of the stream as they are
 * The stream is parsed into frames (with the real parser) and each is
 * given to A.
 *
 * Oracles besides the sanitizers:
 *  - A never completes unless it was given an AUTH carrying the right
 *    HMAC for its own challenge and the HELLO it accepted: no frame
 *    sequence authenticates without the secret;
 *  - every frame A asks to send decodes;
 *  - a refusal is final and always has a reason.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "log.h"

struct track {
	bool hello_seen;
	uint8_t peer_challenge[PROTO_CHALLENGE_SIZE];
	bool authed;		/* a genuine AUTH was given to A */
	bool refused;
};

/* run.sh silences the target's stderr (the refusals are logged there);
 * oracle failures go to a copy taken before that. */
static int report_fd = 2;

static __attribute__((noreturn)) void die(const char *what)
{
	dprintf(report_fd, "fuzz_hs: %s\n", what);
	abort();
}

/* Give @m to A, checking the oracles. Returns the step; A's frame to
 * send, if any, is copied to @save (PROTO_HDR_SIZE + PROTO_FIXED_MAX). */
static enum hs_step feed_a(struct hs *a, const struct proto_msg *m,
			   struct track *t, uint8_t *save, size_t *save_len)
{
	uint8_t want[PROTO_MAC_SIZE];
	struct proto_msg out_msg;
	const void *out = NULL;
	enum hs_step r;
	size_t len;

	if (m->type == PROTO_HELLO && !t->hello_seen) {
		t->hello_seen = true;
		memcpy(t->peer_challenge, m->hello.challenge,
		       PROTO_CHALLENGE_SIZE);
	}
	if (m->type == PROTO_AUTH && t->hello_seen) {
		struct hs_cfg ca;

		fz_hs_cfg(&ca, 0);
		if (hs_auth_mac(FZ_SECRET, sizeof(FZ_SECRET) - 1,
				PROTO_HS_INITIATOR, ca.challenge,
				t->peer_challenge, FZ_RESOURCE, want))
			die("hs_auth_mac failed");
		if (!CRYPTO_memcmp(want, m->auth.mac, PROTO_MAC_SIZE))
			t->authed = true;
	}

	r = hs_input(a, m, &out, &len);
	if (len && (!out || fz_decode_out(out, len, &out_msg)))
		die("hs emitted a frame that does not decode");
	if (t->refused && (r != HS_REFUSED || len))
		die("a refused handshake came back to life");
	switch (r) {
	case HS_REFUSED:
		t->refused = true;
		if (!hs_reason(a)[0] || hs_done(a))
			die("refused without a reason, or done");
		break;
	case HS_DONE:
		if (!t->authed)
			die("handshake completed without a genuine AUTH");
		if (!hs_done(a) || !hs_result(a) || len)
			die("HS_DONE but not done");
		break;
	case HS_SEND:
		if (!len || hs_done(a))
			die("HS_SEND without a frame");
		break;
	default:
		die("unknown step");
	}
	if (save) {
		memcpy(save, out, len);
		*save_len = len;
	}
	return r;
}

/* Let B answer @in; its reply decoded into @reply. */
static void feed_b(struct hs *b, const void *in, size_t in_len,
		   struct proto_msg *reply)
{
	struct proto_msg m;
	const void *out;
	size_t len;

	if (fz_decode_out(in, in_len, &m) ||
	    hs_input(b, &m, &out, &len) != HS_SEND ||
	    fz_decode_out(out, len, reply))
		die("genuine peer failed");
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_level = LOG_LVL_ERR;	/* no "handshake done" lines */
	report_fd = dup(2);
	if (report_fd < 0)
		report_fd = 2;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t a_hello[PROTO_HDR_SIZE + PROTO_FIXED_MAX];
	uint8_t a_auth[PROTO_HDR_SIZE + PROTO_FIXED_MAX];
	struct proto_msg hb, b_auth, b_res, m;
	struct track t = { 0 };
	struct hs_cfg ca, cb;
	struct hs *a, *b;
	struct proto_parser *p = NULL;
	size_t a_hello_len, a_auth_len = 0, len, pos = 0, used;
	unsigned int depth;
	const void *out;
	uint8_t *buf = NULL;
	int r;

	if (!size)
		return 0;
	depth = data[0] & 3;
	fz_hs_cfg(&ca, 0);
	fz_hs_cfg(&cb, 1);
	a = hs_init(&ca);
	b = hs_init(&cb);
	if (!a || !b)
		die("hs_init");
	if (hs_start(a, &out, &len))
		die("hs_start A");
	memcpy(a_hello, out, len);
	a_hello_len = len;
	if (hs_start(b, &out, &len) || fz_decode_out(out, len, &hb))
		die("hs_start B");

	/* The genuine prefix. */
	if (depth >= 1) {
		if (feed_a(a, &hb, &t, a_auth, &a_auth_len) != HS_SEND)
			die("A refused B's HELLO");
		feed_b(b, a_hello, a_hello_len, &b_auth);
	}
	if (depth >= 2 && feed_a(a, &b_auth, &t, NULL, NULL) != HS_SEND)
		die("A refused B's AUTH");
	if (depth >= 3) {
		feed_b(b, a_auth, a_auth_len, &b_res);
		if (feed_a(a, &b_res, &t, NULL, NULL) != HS_DONE)
			die("A did not complete");
	}

	/* Then whatever the fuzzer says. */
	len = size - 1;
	buf = malloc(len ? len : 1);
	p = proto_parser_new(&fz_lim);
	if (!buf || !p)
		goto out;
	memcpy(buf, data + 1, len);
	if (!(data[0] & 0x80))
		fz_fix_frames(buf, len);
	while (pos < len) {
		r = proto_parser_feed(p, buf + pos, len - pos, &used);
		pos += used;
		if (r < 0)
			break;
		if (r != PROTO_PARSE_FRAME)
			continue;
		m = *proto_parser_msg(p);
		feed_a(a, &m, &t, NULL, NULL);
	}
out:
	proto_parser_free(p);
	free(buf);
	hs_free(a);
	hs_free(b);
	return 0;
}
