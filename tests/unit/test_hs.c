// SPDX-License-Identifier: MIT
/*
 * Handshake: success in both directions and under both interleavings,
 * version and feature negotiation, the exact HMAC construction, and every
 * refusal: wrong secret on either side, reflected and replayed responses,
 * tampered AUTH, configuration mismatches, frames before authentication,
 * replayed HELLO.
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
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "hs.h"
#include "log.h"
#include "proto.h"

#define DEV_BYTES (1ull << 30)

/* One captured frame, decoded. */
struct frame {
	uint8_t bytes[PROTO_HDR_SIZE + PROTO_FIXED_MAX];
	size_t len;
	struct proto_msg msg;
};

static void capture(struct frame *f, const void *out, size_t len)
{
	size_t flen;
	char why[256] = "";

	assert_true(len > 0 && len <= sizeof(f->bytes));
	memcpy(f->bytes, out, len);
	f->len = len;
	if (proto_decode(f->bytes, len, NULL, &f->msg, &flen, why, sizeof(why)))
		fail_msg("hs emitted a bad frame: %s", why);
	assert_int_equal(flen, len);
}

static void cfg_for(struct hs_cfg *c, unsigned int node, uint8_t role)
{
	memset(c, 0, sizeof(*c));
	c->resource = "r0";
	c->secret = "correct horse battery staple";
	c->secret_len = strlen(c->secret);
	c->node_id = node;
	c->peer_node_id = HS_NODE_ANY;
	c->data_bytes = DEV_BYTES;
	c->bm_granularity = 4096;
	c->features = PROTO_F_ALL;
	c->role = role;
	c->repl = PROTO_REPL_C;
	c->data_digest = PROTO_DIGEST_CRC32C;
	for (int i = 0; i < PROTO_CHALLENGE_SIZE; i++)
		c->challenge[i] = (uint8_t)(node * 64 + role * 16 + i + 1);
}

static struct hs *mk(const struct hs_cfg *c)
{
	struct hs *hs = hs_init(c);

	assert_non_null(hs);
	return hs;
}

static void start(struct hs *hs, struct frame *f)
{
	const void *out;
	size_t len;

	assert_int_equal(hs_start(hs, &out, &len), 0);
	capture(f, out, len);
	assert_int_equal(f->msg.type, PROTO_HELLO);
}

/* Deliver @in to @hs; the answer (if any) lands in @reply. */
static enum hs_step give(struct hs *hs, const struct frame *in,
			 struct frame *reply)
{
	const void *out = NULL;
	size_t len = 12345;
	enum hs_step r = hs_input(hs, &in->msg, &out, &len);

	reply->len = 0;
	if (len)
		capture(reply, out, len);
	return r;
}

/* A and B each send HELLO; returns after both processed the other's. */
static void exchange_hellos(struct hs *a, struct hs *b, struct frame *a_auth,
			    struct frame *b_auth)
{
	struct frame ha, hb;

	start(a, &ha);
	start(b, &hb);
	assert_int_equal(give(a, &hb, a_auth), HS_SEND);
	assert_int_equal(a_auth->msg.type, PROTO_AUTH);
	assert_int_equal(give(b, &ha, b_auth), HS_SEND);
	assert_int_equal(b_auth->msg.type, PROTO_AUTH);
}

/* A full, successful handshake; @a_first: A runs ahead of B. */
static void handshake_ok(struct hs *a, struct hs *b, bool a_first)
{
	struct frame a_auth, b_auth, a_res, b_res, none;

	exchange_hellos(a, b, &a_auth, &b_auth);
	assert_false(hs_done(a));
	assert_null(hs_result(a));
	if (a_first) {
		assert_int_equal(give(a, &b_auth, &a_res), HS_SEND);
		assert_int_equal(give(b, &a_auth, &b_res), HS_SEND);
	} else {
		assert_int_equal(give(b, &a_auth, &b_res), HS_SEND);
		assert_int_equal(give(a, &b_auth, &a_res), HS_SEND);
	}
	assert_int_equal(a_res.msg.type, PROTO_AUTH_RESULT);
	assert_int_equal(a_res.msg.auth_result.status, PROTO_AUTH_OK);
	assert_int_equal(b_res.msg.type, PROTO_AUTH_RESULT);
	/* Verified the peer is not enough: the peer must verify us too. */
	assert_false(hs_done(a));
	assert_false(hs_done(b));
	assert_int_equal(give(a, &b_res, &none), HS_DONE);
	assert_int_equal(none.len, 0);
	assert_true(hs_done(a));
	assert_false(hs_done(b));
	assert_int_equal(give(b, &a_res, &none), HS_DONE);
	assert_true(hs_done(b));
	assert_string_equal(hs_reason(a), "");
	assert_int_equal(hs_refusal(a), 0);
}

static void test_success_both_directions(void **state)
{
	struct hs_cfg ca, cb;
	const struct hs_result *r;
	struct hs *a, *b;

	(void)state;
	for (int dir = 0; dir < 2; dir++) {
		for (int order = 0; order < 2; order++) {
			cfg_for(&ca, 0, dir ? PROTO_HS_ACCEPTOR :
					      PROTO_HS_INITIATOR);
			cfg_for(&cb, 1, dir ? PROTO_HS_INITIATOR :
					      PROTO_HS_ACCEPTOR);
			cb.peer_node_id = 0;
			a = mk(&ca);
			b = mk(&cb);
			handshake_ok(a, b, order);
			r = hs_result(a);
			assert_non_null(r);
			assert_int_equal(r->version, PROTO_VERSION_MAX);
			assert_int_equal(r->features, PROTO_F_ALL);
			assert_int_equal(r->peer.node_id, 1);
			assert_int_equal(r->peer.hs_role, cb.role);
			assert_true(r->peer.data_bytes == DEV_BYTES);
			assert_memory_equal(r->peer.challenge, cb.challenge,
					    PROTO_CHALLENGE_SIZE);
			assert_int_equal(hs_result(b)->peer.node_id, 0);
			hs_free(a);
			hs_free(b);
		}
	}
}

static void test_negotiation(void **state)
{
	struct hs_cfg ca, cb;
	struct hs *a, *b;

	(void)state;
	cfg_for(&ca, 2, PROTO_HS_INITIATOR);
	cfg_for(&cb, 5, PROTO_HS_ACCEPTOR);
	ca.version_min = 1;
	ca.version_max = 3;
	cb.version_min = 2;
	cb.version_max = 9;
	ca.features = PROTO_F_DISCARD | PROTO_F_VERIFY | PROTO_F_CSUM_RESYNC;
	ca.required = PROTO_F_VERIFY;
	cb.features = PROTO_F_VERIFY | PROTO_F_WRITE_ZEROES |
		      PROTO_F_CSUM_RESYNC;
	a = mk(&ca);
	b = mk(&cb);
	handshake_ok(a, b, true);
	assert_int_equal(hs_result(a)->version, 3);
	assert_int_equal(hs_result(b)->version, 3);
	assert_int_equal(hs_result(a)->features,
			 PROTO_F_VERIFY | PROTO_F_CSUM_RESYNC);
	assert_int_equal(hs_result(b)->features, hs_result(a)->features);
	hs_free(a);
	hs_free(b);
}

/* AUTH carries exactly HMAC-SHA256(K, label | role | peer ch | own ch |
 * name), computed here independently of hs_auth_mac. */
static void test_auth_known_answer(void **state)
{
	struct hs_cfg ca, cb;
	struct frame a_auth, b_auth;
	uint8_t msg[256], mac[32];
	unsigned int mac_len = 0;
	struct hs *a, *b;
	size_t n = 0;

	(void)state;
	cfg_for(&ca, 0, PROTO_HS_INITIATOR);
	cfg_for(&cb, 1, PROTO_HS_ACCEPTOR);
	ca.resource = cb.resource = "web-data";
	a = mk(&ca);
	b = mk(&cb);
	exchange_hellos(a, b, &a_auth, &b_auth);

	memcpy(msg, "duet-auth-v1", 12);
	n = 12;
	msg[n++] = 1;	/* the initiator's answer */
	memcpy(msg + n, cb.challenge, 32);
	n += 32;
	memcpy(msg + n, ca.challenge, 32);
	n += 32;
	memcpy(msg + n, "web-data", 8);
	n += 8;
	assert_non_null(HMAC(EVP_sha256(), ca.secret, (int)ca.secret_len, msg,
			     n, mac, &mac_len));
	assert_int_equal(mac_len, 32);
	assert_memory_equal(a_auth.msg.auth.mac, mac, 32);

	msg[12] = 2;	/* the acceptor's: roles and challenges swap */
	memcpy(msg + 13, ca.challenge, 32);
	memcpy(msg + 45, cb.challenge, 32);
	assert_non_null(HMAC(EVP_sha256(), cb.secret, (int)cb.secret_len, msg,
			     n, mac, &mac_len));
	assert_memory_equal(b_auth.msg.auth.mac, mac, 32);

	assert_int_equal(hs_auth_mac(ca.secret, ca.secret_len, 1, cb.challenge,
				     ca.challenge, "web-data", mac), 0);
	assert_memory_equal(a_auth.msg.auth.mac, mac, 32);
	hs_free(a);
	hs_free(b);
}

/* The side holding the wrong secret, whichever it is, fails both checks. */
static void test_wrong_secret(void **state)
{
	struct frame a_auth, b_auth, a_res, b_res, none;
	struct hs_cfg ca, cb;
	struct hs *a, *b;

	(void)state;
	for (int wrong_side = 0; wrong_side < 2; wrong_side++) {
		cfg_for(&ca, 0, PROTO_HS_INITIATOR);
		cfg_for(&cb, 1, PROTO_HS_ACCEPTOR);
		if (wrong_side) {
			cb.secret = "correct horse battery stapler";
			cb.secret_len = strlen(cb.secret);
		} else {
			ca.secret = "Correct horse battery staple";
		}
		a = mk(&ca);
		b = mk(&cb);
		exchange_hellos(a, b, &a_auth, &b_auth);
		assert_int_equal(give(a, &b_auth, &a_res), HS_REFUSED);
		assert_string_equal(hs_reason(a),
				    "peer failed authentication: wrong shared secret?");
		assert_int_equal(hs_refusal(a), PROTO_DISC_AUTH);
		/* The peer learns it from an AUTH_RESULT(failed). */
		assert_int_equal(a_res.msg.type, PROTO_AUTH_RESULT);
		assert_int_equal(a_res.msg.auth_result.status,
				 PROTO_AUTH_FAILED);
		assert_int_equal(give(b, &a_auth, &b_res), HS_REFUSED);
		assert_string_equal(hs_reason(b),
				    "peer failed authentication: wrong shared secret?");
		assert_false(hs_done(a));
		assert_false(hs_done(b));
		assert_null(hs_result(a));
		/* Refusal is final. */
		assert_int_equal(give(a, &b_res, &none), HS_REFUSED);
		assert_int_equal(none.len, 0);
		hs_free(a);
		hs_free(b);
	}
}

/* Somebody flips a bit of B's AUTH on the way: A refuses, and B, which
 * did verify A, hears that it was rejected. */
static void test_tampered_auth(void **state)
{
	struct frame a_auth, b_auth, a_res, b_res, none;
	struct hs_cfg ca, cb;
	struct hs *a, *b;

	(void)state;
	cfg_for(&ca, 0, PROTO_HS_INITIATOR);
	cfg_for(&cb, 1, PROTO_HS_ACCEPTOR);
	for (int byte = 0; byte < PROTO_MAC_SIZE; byte++) {
		a = mk(&ca);
		b = mk(&cb);
		exchange_hellos(a, b, &a_auth, &b_auth);
		b_auth.msg.auth.mac[byte] ^= (uint8_t)(1u << (byte % 8));
		assert_int_equal(give(a, &b_auth, &a_res), HS_REFUSED);
		assert_int_equal(hs_refusal(a), PROTO_DISC_AUTH);
		assert_int_equal(give(b, &a_auth, &b_res), HS_SEND);
		assert_int_equal(give(b, &a_res, &none), HS_REFUSED);
		assert_string_equal(hs_reason(b),
				    "peer rejected our authentication: wrong shared secret?");
		hs_free(a);
		hs_free(b);
	}
}

/*
 * Reflection: an attacker without the secret connects to A and hands A
 * its own AUTH back; or opens a second connection to A, offers A's first
 * challenge there, and replays the answer A gives on the first.
 */
static void test_reflection(void **state)
{
	struct frame ha, a_auth, a_res, e_hello, a2_hello, a2_auth;
	struct hs_cfg ca, ce;
	struct hs *a, *a2;
	uint8_t buf[256];

	(void)state;
	cfg_for(&ca, 0, PROTO_HS_ACCEPTOR);
	cfg_for(&ce, 1, PROTO_HS_INITIATOR); /* the attacker's HELLO */
	a = mk(&ca);
	start(a, &ha);
	e_hello.msg = (struct proto_msg){ .type = PROTO_HELLO };
	e_hello.msg.hello = ha.msg.hello;
	e_hello.msg.hello.hs_role = PROTO_HS_INITIATOR;
	e_hello.msg.hello.node_id = 1;
	memset(e_hello.msg.hello.challenge, 0x5a, PROTO_CHALLENGE_SIZE);
	assert_int_equal(give(a, &e_hello, &a_auth), HS_SEND);
	/* 1: same connection, A's answer sent straight back. */
	assert_int_equal(give(a, &a_auth, &a_res), HS_REFUSED);
	assert_int_equal(hs_refusal(a), PROTO_DISC_AUTH);
	assert_int_equal(a_res.msg.auth_result.status, PROTO_AUTH_FAILED);
	hs_free(a);

	/* 2: A's challenge offered to A on a second connection. */
	a = mk(&ca);
	start(a, &ha);
	assert_int_equal(give(a, &e_hello, &a_auth), HS_SEND);
	ca.challenge[0] ^= 0xff;	/* a fresh challenge for conn 2 */
	a2 = mk(&ca);
	start(a2, &a2_hello);
	memcpy(e_hello.msg.hello.challenge, ha.msg.hello.challenge,
	       PROTO_CHALLENGE_SIZE);
	assert_int_equal(give(a2, &e_hello, &a2_auth), HS_SEND);
	assert_int_equal(give(a, &a2_auth, &a_res), HS_REFUSED);
	assert_string_equal(hs_reason(a),
			    "peer failed authentication: wrong shared secret?");
	hs_free(a);
	hs_free(a2);

	/* 3: A's own challenge in the peer's HELLO is refused outright. */
	ca.challenge[0] ^= 0xff;
	a = mk(&ca);
	start(a, &ha);
	memcpy(e_hello.msg.hello.challenge, ca.challenge, PROTO_CHALLENGE_SIZE);
	assert_true(proto_encode(&e_hello.msg, buf, sizeof(buf), NULL, 0) > 0);
	assert_int_equal(give(a, &e_hello, &a_auth), HS_REFUSED);
	assert_non_null(strstr(hs_reason(a), "reflection"));
	hs_free(a);
}

/* An AUTH recorded on one connection does not open another. */
static void test_replayed_auth(void **state)
{
	struct frame a_auth, b_auth, old_b_auth, a_res;
	struct hs_cfg ca, cb;
	struct hs *a, *b;

	(void)state;
	cfg_for(&ca, 0, PROTO_HS_INITIATOR);
	cfg_for(&cb, 1, PROTO_HS_ACCEPTOR);
	a = mk(&ca);
	b = mk(&cb);
	handshake_ok(a, b, true);
	hs_free(a);
	hs_free(b);
	a = mk(&ca);
	b = mk(&cb);
	exchange_hellos(a, b, &a_auth, &old_b_auth);
	hs_free(a);
	hs_free(b);

	ca.challenge[5] ^= 1;	/* next connection, next challenge */
	a = mk(&ca);
	b = mk(&cb);
	exchange_hellos(a, b, &a_auth, &b_auth);
	assert_int_equal(give(a, &old_b_auth, &a_res), HS_REFUSED);
	assert_int_equal(hs_refusal(a), PROTO_DISC_AUTH);
	hs_free(a);
	hs_free(b);
}

/* B's configuration differs from A's in one way; both refuse, each with a
 * DISCONNECT whose text names the mismatch. */
struct mismatch {
	const char *name;
	void (*apply)(struct hs_cfg *b);
	unsigned int code;
	const char *word;
};

static void mm_resource(struct hs_cfg *b) { b->resource = "r1"; }
static void mm_size(struct hs_cfg *b) { b->data_bytes -= 4096; }
static void mm_gran(struct hs_cfg *b) { b->bm_granularity = 8192; }
static void mm_same_id(struct hs_cfg *b) { b->node_id = 0; }
static void mm_repl(struct hs_cfg *b) { b->repl = PROTO_REPL_A; }
static void mm_digest(struct hs_cfg *b) { b->data_digest = PROTO_DIGEST_SHA256; }
static void mm_role(struct hs_cfg *b) { b->role = PROTO_HS_ACCEPTOR; }

static void mm_versions(struct hs_cfg *b)
{
	b->version_min = 2;
	b->version_max = 4;
}

static const struct mismatch mismatches[] = {
	{ "resource", mm_resource, PROTO_DISC_RESOURCE, "wrong resource name" },
	{ "size", mm_size, PROTO_DISC_SIZE, "device size mismatch" },
	{ "granularity", mm_gran, PROTO_DISC_SIZE, "granularity mismatch" },
	{ "node id", mm_same_id, PROTO_DISC_NODE_ID, "same node id" },
	{ "repl", mm_repl, PROTO_DISC_CONFIG, "replication protocol" },
	{ "digest", mm_digest, PROTO_DISC_CONFIG, "data digest mismatch" },
	{ "roles", mm_role, PROTO_DISC_CONFIG, "crossed connections" },
	{ "versions", mm_versions, PROTO_DISC_VERSION,
	  "incompatible protocol versions: we speak 1..1, peer 2..4" },
};

static void test_config_mismatch(void **state)
{
	struct frame ha, hb, a_out, b_out, none;
	struct hs_cfg ca, cb;
	struct hs *a, *b;

	(void)state;
	for (size_t i = 0; i < sizeof(mismatches) / sizeof(mismatches[0]);
	     i++) {
		const struct mismatch *mm = &mismatches[i];

		cfg_for(&ca, 0, PROTO_HS_ACCEPTOR);
		cfg_for(&cb, 1, PROTO_HS_INITIATOR);
		ca.version_min = ca.version_max = 1;
		mm->apply(&cb);
		a = mk(&ca);
		b = mk(&cb);
		start(a, &ha);
		start(b, &hb);
		assert_int_equal(give(a, &hb, &a_out), HS_REFUSED);
		if (!strstr(hs_reason(a), mm->word))
			fail_msg("%s: reason '%s'", mm->name, hs_reason(a));
		assert_int_equal(hs_refusal(a), mm->code);
		assert_int_equal(a_out.msg.type, PROTO_DISCONNECT);
		assert_int_equal(a_out.msg.disconnect.reason, mm->code);
		assert_non_null(strstr(a_out.msg.disconnect.text, mm->word));
		/* B hears it before it even looked at A's HELLO. */
		assert_int_equal(give(b, &a_out, &b_out), HS_REFUSED);
		assert_int_equal(b_out.len, 0);
		assert_int_equal(hs_refusal(b), mm->code);
		assert_non_null(strstr(hs_reason(b), "peer refused the connection"));
		assert_non_null(strstr(hs_reason(b), mm->word));
		assert_int_equal(give(b, &ha, &none), HS_REFUSED);
		hs_free(a);
		hs_free(b);
	}
}

static void test_node_ids_and_features(void **state)
{
	struct frame ha, hb, out;
	struct hs_cfg ca, cb;
	struct hs *a, *b;

	(void)state;
	/* The configuration names node 3 as the peer; node 1 answers. */
	cfg_for(&ca, 0, PROTO_HS_ACCEPTOR);
	cfg_for(&cb, 1, PROTO_HS_INITIATOR);
	ca.peer_node_id = 3;
	a = mk(&ca);
	b = mk(&cb);
	start(a, &ha);
	start(b, &hb);
	assert_int_equal(give(a, &hb, &out), HS_REFUSED);
	assert_string_equal(hs_reason(a),
			    "unexpected peer node id 1, the configuration says 3");
	assert_int_equal(hs_refusal(a), PROTO_DISC_NODE_ID);
	hs_free(a);
	hs_free(b);

	/* A requires online verify; B does not offer it. */
	cfg_for(&ca, 0, PROTO_HS_ACCEPTOR);
	ca.required = PROTO_F_VERIFY | PROTO_F_DISCARD;
	cb.features = PROTO_F_DISCARD | PROTO_F_CSUM_RESYNC;
	a = mk(&ca);
	b = mk(&cb);
	start(a, &ha);
	start(b, &hb);
	assert_int_equal(give(a, &hb, &out), HS_REFUSED);
	assert_non_null(strstr(hs_reason(a), "lacks required feature(s) 0x8"));
	assert_int_equal(out.msg.disconnect.reason, PROTO_DISC_FEATURES);
	/* B, which requires nothing, would have gone ahead. */
	assert_int_equal(give(b, &ha, &out), HS_SEND);
	hs_free(a);
	hs_free(b);
}

/* STATE, DATA, PING... before both sides are authenticated: refused. */
static void test_frames_before_auth(void **state)
{
	static const unsigned int early[] = {
		PROTO_STATE, PROTO_DATA, PROTO_PING, PROTO_BITMAP,
		PROTO_BARRIER, PROTO_RS_REQUEST,
	};
	struct frame ha, hb, a_auth, b_auth, a_res, out, early_f;
	struct hs_cfg ca, cb;
	struct hs *a, *b;

	(void)state;
	cfg_for(&ca, 0, PROTO_HS_INITIATOR);
	cfg_for(&cb, 1, PROTO_HS_ACCEPTOR);
	for (int stage = 0; stage < 3; stage++) {
		for (size_t i = 0; i < sizeof(early) / sizeof(early[0]); i++) {
			a = mk(&ca);
			b = mk(&cb);
			start(a, &ha);
			start(b, &hb);
			if (stage >= 1) {	/* HELLOs exchanged */
				assert_int_equal(give(a, &hb, &a_auth), HS_SEND);
				assert_int_equal(give(b, &ha, &b_auth), HS_SEND);
			}
			if (stage >= 2)		/* A verified B */
				assert_int_equal(give(a, &b_auth, &a_res),
						 HS_SEND);
			memset(&early_f, 0, sizeof(early_f));
			early_f.msg.type = (uint16_t)early[i];
			assert_int_equal(give(a, &early_f, &out), HS_REFUSED);
			assert_non_null(strstr(hs_reason(a),
					       "before the handshake completed"));
			assert_non_null(strstr(hs_reason(a),
					       proto_type_name(early[i])));
			assert_int_equal(out.msg.type, PROTO_DISCONNECT);
			assert_int_equal(out.msg.disconnect.reason,
					 PROTO_DISC_PROTOCOL);
			assert_false(hs_done(a));
			hs_free(a);
			hs_free(b);
		}
	}
}

static void test_out_of_order(void **state)
{
	struct frame ha, hb, a_auth, b_auth, b_res, out, ok_res;
	struct hs_cfg ca, cb;
	struct hs *a, *b;

	(void)state;
	cfg_for(&ca, 0, PROTO_HS_INITIATOR);
	cfg_for(&cb, 1, PROTO_HS_ACCEPTOR);

	/* Replayed HELLO while waiting for AUTH. */
	a = mk(&ca);
	b = mk(&cb);
	start(a, &ha);
	start(b, &hb);
	assert_int_equal(give(a, &hb, &a_auth), HS_SEND);
	assert_int_equal(give(a, &hb, &out), HS_REFUSED);
	assert_string_equal(hs_reason(a), "duplicate HELLO: replay?");
	assert_int_equal(out.msg.disconnect.reason, PROTO_DISC_PROTOCOL);
	hs_free(a);
	hs_free(b);

	/* AUTH before HELLO; AUTH twice. */
	a = mk(&ca);
	b = mk(&cb);
	start(a, &ha);
	start(b, &hb);
	assert_int_equal(give(b, &ha, &b_auth), HS_SEND);
	assert_int_equal(give(a, &b_auth, &out), HS_REFUSED);
	assert_string_equal(hs_reason(a), "unexpected AUTH: replay?");
	hs_free(a);
	a = mk(&ca);
	start(a, &ha);
	assert_int_equal(give(a, &hb, &a_auth), HS_SEND);
	assert_int_equal(give(a, &b_auth, &out), HS_SEND);
	assert_int_equal(give(a, &b_auth, &out), HS_REFUSED);
	assert_string_equal(hs_reason(a), "duplicate AUTH: replay?");
	hs_free(a);
	hs_free(b);

	/* AUTH_RESULT(ok) before A verified B: B cannot vouch for itself. */
	a = mk(&ca);
	start(a, &ha);
	assert_int_equal(give(a, &hb, &a_auth), HS_SEND);
	memset(&ok_res, 0, sizeof(ok_res));
	ok_res.msg.type = PROTO_AUTH_RESULT;
	ok_res.msg.auth_result.version = 1;
	ok_res.msg.auth_result.features = PROTO_F_ALL;
	assert_int_equal(give(a, &ok_res, &out), HS_REFUSED);
	assert_non_null(strstr(hs_reason(a), "AUTH_RESULT before"));
	assert_false(hs_done(a));
	hs_free(a);

	/* An AUTH_RESULT(ok) disagreeing about what was negotiated. */
	a = mk(&ca);
	b = mk(&cb);
	exchange_hellos(a, b, &a_auth, &b_auth);
	assert_int_equal(give(a, &b_auth, &out), HS_SEND);
	assert_int_equal(give(b, &a_auth, &b_res), HS_SEND);
	b_res.msg.auth_result.features &= ~(uint64_t)PROTO_F_DISCARD;
	assert_int_equal(give(a, &b_res, &out), HS_REFUSED);
	assert_non_null(strstr(hs_reason(a), "negotiated"));
	hs_free(a);
	hs_free(b);

	/* hs_input before hs_start. */
	a = mk(&ca);
	assert_int_equal(give(a, &hb, &out), HS_REFUSED);
	assert_int_equal(out.len, 0);
	hs_free(a);
}

/* After DONE: other frames are the caller's; a handshake frame is not. */
static void test_after_done(void **state)
{
	struct frame ha, hb, a_auth, b_auth, a_res, b_res, out, st;
	struct hs_cfg ca, cb;
	struct hs *a, *b;
	const void *p;
	size_t len;

	(void)state;
	cfg_for(&ca, 0, PROTO_HS_INITIATOR);
	cfg_for(&cb, 1, PROTO_HS_ACCEPTOR);
	a = mk(&ca);
	b = mk(&cb);
	start(a, &ha);
	start(b, &hb);
	assert_int_equal(give(a, &hb, &a_auth), HS_SEND);
	assert_int_equal(give(b, &ha, &b_auth), HS_SEND);
	assert_int_equal(give(a, &b_auth, &a_res), HS_SEND);
	assert_int_equal(give(b, &a_auth, &b_res), HS_SEND);
	assert_int_equal(give(a, &b_res, &out), HS_DONE);
	memset(&st, 0, sizeof(st));
	st.msg.type = PROTO_STATE;
	assert_int_equal(give(a, &st, &out), HS_DONE);
	assert_int_equal(out.len, 0);
	assert_true(hs_done(a));
	assert_int_equal(hs_start(a, &p, &len), -EINVAL);
	assert_int_equal(give(a, &hb, &out), HS_REFUSED);
	assert_non_null(strstr(hs_reason(a), "HELLO after the handshake"));
	assert_null(hs_result(a));
	assert_int_equal(out.msg.type, PROTO_DISCONNECT);
	assert_int_equal(give(b, &a_res, &out), HS_DONE);
	assert_int_equal(give(b, &a_auth, &out), HS_REFUSED);
	hs_free(a);
	hs_free(b);
}

static void test_init_rejects(void **state)
{
	struct hs_cfg c, base;
	const void *p;
	size_t len;
	struct hs *hs;
	char long_name[80];

	(void)state;
	cfg_for(&base, 0, PROTO_HS_INITIATOR);
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	for (int i = 0; i < 13; i++) {
		c = base;
		switch (i) {
		case 0: c.secret_len = 0; break;
		case 1: c.secret = NULL; break;
		case 2: c.resource = NULL; break;
		case 3: c.resource = ""; break;
		case 4: c.resource = long_name; break;
		case 5: c.node_id = 32; break;
		case 6: c.peer_node_id = 0; break;	/* ours */
		case 7: c.features = 1ull << 40; break;
		case 8: c.required = PROTO_F_VERIFY; c.features = 0; break;
		case 9: memset(c.challenge, 0, sizeof(c.challenge)); break;
		case 10: c.role = 0; break;
		case 11: c.version_min = 3; c.version_max = 2; break;
		case 12: c.secret_len = HS_SECRET_MAX + 1; break;
		}
		errno = 0;
		hs = hs_init(&c);
		if (hs)
			fail_msg("case %d accepted", i);
		assert_int_equal(errno, EINVAL);
	}
	hs = mk(&base);
	assert_int_equal(hs_start(hs, &p, &len), 0);
	assert_int_equal(len, PROTO_HDR_SIZE + 128);
	assert_int_equal(hs_start(hs, &p, &len), -EINVAL);
	hs_free(hs);
	hs_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_success_both_directions),
		cmocka_unit_test(test_negotiation),
		cmocka_unit_test(test_auth_known_answer),
		cmocka_unit_test(test_wrong_secret),
		cmocka_unit_test(test_tampered_auth),
		cmocka_unit_test(test_reflection),
		cmocka_unit_test(test_replayed_auth),
		cmocka_unit_test(test_config_mismatch),
		cmocka_unit_test(test_node_ids_and_features),
		cmocka_unit_test(test_frames_before_auth),
		cmocka_unit_test(test_out_of_order),
		cmocka_unit_test(test_after_done),
		cmocka_unit_test(test_init_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
