// SPDX-License-Identifier: MIT
/*
 * NBD protocol codec: the handshake byte for byte (greeting, every option
 * path, bad magics, client flags, oversized and unknown options, export
 * name mismatch, refusal, limits), the same sessions fed in every chunking
 * and drained in small sends, and the transmission-phase request
 * validation and reply encoding.
 *
 * The client side here is written independently of nbdp.c (its own
 * big-endian helpers and reply parser), so a codec bug cannot cancel out.
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

#include "log.h"
#include "nbdp.h"

#define SIZE (64ull << 20)
#define TFLAGS                                                           \
	(NBDP_TF_SEND_FLUSH | NBDP_TF_SEND_FUA | NBDP_TF_SEND_TRIM |     \
	 NBDP_TF_SEND_WRITE_ZEROES | NBDP_TF_CAN_MULTI_CONN)

static struct nbdp_export export_r0(void)
{
	struct nbdp_export e = {
		.name = "r0",
		.description = "duet resource r0",
		.size = SIZE,
		.tflags = TFLAGS,
		.min_block = 512,
		.pref_block = 4096,
		.max_payload = 1u << 20,
	};

	return e;
}

/* ------------------------------------------------ the client's side */

static void w16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void w32(uint8_t *p, uint32_t v)
{
	w16(p, (uint16_t)(v >> 16));
	w16(p + 2, (uint16_t)v);
}

static void w64(uint8_t *p, uint64_t v)
{
	w32(p, (uint32_t)(v >> 32));
	w32(p + 4, (uint32_t)v);
}

static uint16_t r16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t r32(const uint8_t *p)
{
	return (uint32_t)r16(p) << 16 | r16(p + 2);
}

static uint64_t r64(const uint8_t *p)
{
	return (uint64_t)r32(p) << 32 | r32(p + 4);
}

/* What the client sends, built up piece by piece. */
struct stream {
	uint8_t *b;
	size_t n;
};

#define STREAM_MAX (256u << 10)

static void st_init(struct stream *s)
{
	s->b = calloc(1, STREAM_MAX);
	assert_non_null(s->b);
	s->n = 0;
}

static void st_free(struct stream *s)
{
	free(s->b);
}

static uint8_t *st_grow(struct stream *s, size_t n)
{
	uint8_t *p = s->b + s->n;

	assert_true(s->n + n <= STREAM_MAX);
	s->n += n;
	return p;
}

static void st_flags(struct stream *s, uint32_t f)
{
	w32(st_grow(s, 4), f);
}

/* An option with @len bytes of data (copied from @data, or zeroes). */
static void st_opt_magic(struct stream *s, uint64_t magic, uint32_t opt,
			 const void *data, uint32_t len)
{
	uint8_t *p = st_grow(s, 16);

	w64(p, magic);
	w32(p + 8, opt);
	w32(p + 12, len);
	p = st_grow(s, len);
	if (data)
		memcpy(p, data, len);
}

static void st_opt(struct stream *s, uint32_t opt, const void *data,
		   uint32_t len)
{
	st_opt_magic(s, NBDP_OPTS_MAGIC, opt, data, len);
}

/* GO or INFO for @name with @n information requests. */
static void st_go(struct stream *s, uint32_t opt, const char *name,
		  const uint16_t *infos, unsigned int n)
{
	uint8_t d[512];
	size_t nl = strlen(name), k = 0;

	w32(d, (uint32_t)nl);
	k += 4;
	memcpy(d + k, name, nl);
	k += nl;
	w16(d + k, (uint16_t)n);
	k += 2;
	for (unsigned int i = 0; i < n; i++, k += 2)
		w16(d + k, infos[i]);
	st_opt(s, opt, d, (uint32_t)k);
}

/* The session as the server played it. */
struct run {
	enum nbdp_hs_step step;
	size_t used;		/* client bytes consumed */
	uint8_t out[1u << 16];	/* everything the server sent */
	size_t out_len;
	unsigned int sends;	/* NBDP_HS_SEND steps seen */
};

static bool terminal(enum nbdp_hs_step s)
{
	return s == NBDP_HS_DONE || s == NBDP_HS_ABORT || s == NBDP_HS_CLOSE;
}

static void drain(struct nbdp_hs *hs, struct run *r, size_t send_chunk)
{
	const void *o;
	size_t n;

	for (;;) {
		o = nbdp_hs_out(hs, &n);
		if (!n)
			return;
		if (n > send_chunk)
			n = send_chunk;
		assert_true(r->out_len + n <= sizeof(r->out));
		memcpy(r->out + r->out_len, o, n);
		r->out_len += n;
		nbdp_hs_out_done(hs, n);
	}
}

/*
 * Play @s against @hs: the client's bytes arrive @chunk at a time, the
 * server's output leaves @send_chunk at a time. Checks the step contract
 * on every call.
 */
static void drive(struct nbdp_hs *hs, const struct stream *s, size_t chunk,
		  size_t send_chunk, struct run *r)
{
	enum nbdp_hs_step step = NBDP_HS_SEND;
	size_t avail = 0, used, n;

	memset(r, 0, sizeof(*r));
	for (;;) {
		drain(hs, r, send_chunk);
		if (terminal(step))
			break;
		if (r->used == avail) {
			if (avail == s->n) {
				step = nbdp_hs_feed(hs, s->b + r->used, 0,
						    &used);
				assert_int_equal(used, 0);
				drain(hs, r, send_chunk);
				break;
			}
			avail = avail + chunk < s->n ? avail + chunk : s->n;
		}
		step = nbdp_hs_feed(hs, s->b + r->used, avail - r->used, &used);
		assert_true(used <= avail - r->used);
		nbdp_hs_out(hs, &n);
		switch (step) {
		case NBDP_HS_NEED_INPUT:
			assert_int_equal(used, avail - r->used);
			assert_int_equal(n, 0);
			break;
		case NBDP_HS_SEND:
			assert_true(n > 0);
			r->sends++;
			break;
		default:
			break;
		}
		r->used += used;
	}
	r->step = step;
}

/* One parsed option reply. */
struct rep {
	uint32_t opt;
	uint32_t type;
	uint32_t len;
	const uint8_t *data;
};

/* Check the greeting at the start of @r->out; returns its size. */
static size_t check_greeting(const struct run *r)
{
	assert_true(r->out_len >= 18);
	assert_int_equal(r64(r->out), 0x4e42444d41474943ull);
	assert_int_equal(r64(r->out + 8), 0x49484156454f5054ull);
	assert_int_equal(r16(r->out + 16), 3); /* FIXED_NEWSTYLE|NO_ZEROES */
	return 18;
}

/* Parse option replies from @off up to @end; returns how many. */
static unsigned int parse_reps(const struct run *r, size_t off, size_t end,
			       struct rep *reps, unsigned int max)
{
	unsigned int n = 0;

	while (off < end) {
		const uint8_t *p = r->out + off;

		assert_true(end - off >= 20);
		assert_int_equal(r64(p), 0x0003e889045565a9ull);
		assert_true(n < max);
		reps[n].opt = r32(p + 8);
		reps[n].type = r32(p + 12);
		reps[n].len = r32(p + 16);
		reps[n].data = p + 20;
		assert_true(end - off - 20 >= reps[n].len);
		off += 20 + reps[n].len;
		n++;
	}
	assert_int_equal(off, end);
	return n;
}

/* A whole session in one piece; returns the replies after the greeting. */
static unsigned int session(const struct nbdp_export *e,
			    const struct stream *s, struct run *r,
			    struct rep *reps, unsigned int max)
{
	struct nbdp_hs *hs = nbdp_hs_new(e);
	unsigned int n;

	assert_non_null(hs);
	drive(hs, s, s->n ? s->n : 1, SIZE_MAX, r);
	if (r->step == NBDP_HS_DONE) {
		const struct nbdp_hs_result *res = nbdp_hs_result(hs);

		assert_non_null(res);
		assert_int_equal(res->tflags, e->tflags | NBDP_TF_HAS_FLAGS);
	} else {
		assert_null(nbdp_hs_result(hs));
	}
	if (terminal(r->step) && r->step != NBDP_HS_DONE)
		assert_true(nbdp_hs_reason(hs)[0] != '\0');
	else
		assert_string_equal(nbdp_hs_reason(hs), "");
	n = parse_reps(r, check_greeting(r), r->out_len, reps, max);
	nbdp_hs_free(hs);
	return n;
}

static bool has_text(const struct rep *p, const char *needle)
{
	char buf[512];
	size_t n = p->len < sizeof(buf) - 1 ? p->len : sizeof(buf) - 1;

	memcpy(buf, p->data, n);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

#define FIXED NBDP_FLAG_C_FIXED_NEWSTYLE
#define NOZ NBDP_FLAG_C_NO_ZEROES

/* ---------------------------------------------------------- handshake */

static void test_greeting(void **state)
{
	struct nbdp_export e = export_r0();
	struct nbdp_hs *hs = nbdp_hs_new(&e);
	const uint8_t *o;
	size_t n, used;

	(void)state;
	assert_non_null(hs);
	o = nbdp_hs_out(hs, &n);
	assert_int_equal(n, 18);
	assert_int_equal(r64(o), 0x4e42444d41474943ull);
	assert_int_equal(r64(o + 8), 0x49484156454f5054ull);
	assert_int_equal(r16(o + 16), 0x0003);
	/* Nothing is consumed while the greeting is unsent. */
	assert_int_equal(nbdp_hs_feed(hs, "\0\0\0\3", 4, &used), NBDP_HS_SEND);
	assert_int_equal(used, 0);
	nbdp_hs_out_done(hs, 18);
	nbdp_hs_out(hs, &n);
	assert_int_equal(n, 0);
	assert_int_equal(nbdp_hs_feed(hs, "\0\0\0\3", 4, &used),
			 NBDP_HS_NEED_INPUT);
	assert_int_equal(used, 4);
	nbdp_hs_free(hs);
}

static void test_export_name(void **state)
{
	struct nbdp_export e = export_r0();
	struct stream s;
	struct run *r = calloc(1, sizeof(*r));
	const uint8_t *x;

	(void)state;
	assert_non_null(r);

	/* NO_ZEROES: size and flags only (not an option reply). */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt(&s, NBDP_OPT_EXPORT_NAME, "r0", 2);
	{
		struct nbdp_hs *hs = nbdp_hs_new(&e);
		const struct nbdp_hs_result *res;

		drive(hs, &s, s.n, SIZE_MAX, r);
		assert_int_equal(r->step, NBDP_HS_DONE);
		assert_int_equal(r->used, s.n);
		assert_int_equal(r->out_len, 18 + 10);
		x = r->out + 18;
		assert_int_equal(r64(x), SIZE);
		assert_int_equal(r16(x + 8), TFLAGS | NBDP_TF_HAS_FLAGS);
		res = nbdp_hs_result(hs);
		assert_non_null(res);
		assert_int_equal(res->option, NBDP_OPT_EXPORT_NAME);
		assert_int_equal(res->client_flags, FIXED | NOZ);
		assert_false(res->block_size_agreed);
		assert_int_equal(res->options, 1);
		nbdp_hs_free(hs);
	}
	st_free(&s);

	/* Without NO_ZEROES: 124 zero bytes follow; "" is the default. */
	st_init(&s);
	st_flags(&s, FIXED);
	st_opt(&s, NBDP_OPT_EXPORT_NAME, NULL, 0);
	{
		struct nbdp_hs *hs = nbdp_hs_new(&e);

		drive(hs, &s, s.n, SIZE_MAX, r);
		assert_int_equal(r->step, NBDP_HS_DONE);
		assert_int_equal(r->out_len, 18 + 10 + 124);
		assert_int_equal(r64(r->out + 18), SIZE);
		for (size_t i = 18 + 10; i < r->out_len; i++)
			assert_int_equal(r->out[i], 0);
		nbdp_hs_free(hs);
	}
	st_free(&s);
	free(r);
}

static void test_export_name_unknown(void **state)
{
	struct nbdp_export e = export_r0();
	struct stream s;
	struct run *r = calloc(1, sizeof(*r));
	struct nbdp_hs *hs;

	(void)state;
	/* A prefix of the name, a longer name, another name. */
	static const char *const bad[] = { "r", "r00", "R0", "other" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		st_init(&s);
		st_flags(&s, FIXED | NOZ);
		st_opt(&s, NBDP_OPT_EXPORT_NAME, bad[i],
		       (uint32_t)strlen(bad[i]));
		hs = nbdp_hs_new(&e);
		drive(hs, &s, s.n, SIZE_MAX, r);
		assert_int_equal(r->step, NBDP_HS_CLOSE);
		/* Nothing but the greeting: this option cannot be refused
		 * with an error reply. */
		assert_int_equal(r->out_len, 18);
		assert_non_null(strstr(nbdp_hs_reason(hs), "unknown export"));
		assert_null(nbdp_hs_result(hs));
		nbdp_hs_free(hs);
		st_free(&s);
	}

	/* Refused for policy: also the end of the session. */
	e.refuse = "r0 is secondary";
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt(&s, NBDP_OPT_EXPORT_NAME, "r0", 2);
	hs = nbdp_hs_new(&e);
	drive(hs, &s, s.n, SIZE_MAX, r);
	assert_int_equal(r->step, NBDP_HS_CLOSE);
	assert_int_equal(r->out_len, 18);
	assert_non_null(strstr(nbdp_hs_reason(hs), "r0 is secondary"));
	nbdp_hs_free(hs);
	st_free(&s);
	free(r);
}

static void test_go_full(void **state)
{
	struct nbdp_export e = export_r0();
	static const uint16_t infos[] = {
		NBDP_INFO_BLOCK_SIZE, 99, NBDP_INFO_NAME, NBDP_INFO_DESCRIPTION,
		NBDP_INFO_NAME,
	};
	struct nbdp_hs *hs = nbdp_hs_new(&e);
	const struct nbdp_hs_result *res;
	struct run *r = calloc(1, sizeof(*r));
	struct rep reps[8];
	struct stream s;
	size_t hs_bytes;
	unsigned int n;

	(void)state;
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_go(&s, NBDP_OPT_GO, "r0", infos, 5);
	hs_bytes = s.n;
	/* The first request, already in the same buffer. */
	memset(st_grow(&s, 28), 0x25, 28);

	drive(hs, &s, s.n, SIZE_MAX, r);
	assert_int_equal(r->step, NBDP_HS_DONE);
	/* Not one byte of the request was taken. */
	assert_int_equal(r->used, hs_bytes);
	n = parse_reps(r, check_greeting(r), r->out_len, reps, 8);
	/* EXPORT, NAME, DESCRIPTION, BLOCK_SIZE (each once), ACK. */
	assert_int_equal(n, 5);
	for (unsigned int i = 0; i < n; i++)
		assert_int_equal(reps[i].opt, NBDP_OPT_GO);
	assert_int_equal(reps[0].type, NBDP_REP_INFO);
	assert_int_equal(reps[0].len, 12);
	assert_int_equal(r16(reps[0].data), NBDP_INFO_EXPORT);
	assert_int_equal(r64(reps[0].data + 2), SIZE);
	assert_int_equal(r16(reps[0].data + 10), TFLAGS | NBDP_TF_HAS_FLAGS);

	assert_int_equal(reps[1].type, NBDP_REP_INFO);
	assert_int_equal(r16(reps[1].data), NBDP_INFO_NAME);
	assert_int_equal(reps[1].len, 2 + 2);
	assert_memory_equal(reps[1].data + 2, "r0", 2);

	assert_int_equal(reps[2].type, NBDP_REP_INFO);
	assert_int_equal(r16(reps[2].data), NBDP_INFO_DESCRIPTION);
	assert_int_equal(reps[2].len, 2 + strlen(e.description));
	assert_memory_equal(reps[2].data + 2, e.description,
			    strlen(e.description));

	assert_int_equal(reps[3].type, NBDP_REP_INFO);
	assert_int_equal(reps[3].len, 14);
	assert_int_equal(r16(reps[3].data), NBDP_INFO_BLOCK_SIZE);
	assert_int_equal(r32(reps[3].data + 2), 512);
	assert_int_equal(r32(reps[3].data + 6), 4096);
	assert_int_equal(r32(reps[3].data + 10), 1u << 20);

	assert_int_equal(reps[4].type, NBDP_REP_ACK);
	assert_int_equal(reps[4].len, 0);

	res = nbdp_hs_result(hs);
	assert_non_null(res);
	assert_int_equal(res->option, NBDP_OPT_GO);
	assert_true(res->block_size_agreed);
	assert_int_equal(res->tflags, TFLAGS | NBDP_TF_HAS_FLAGS);
	nbdp_hs_free(hs);
	st_free(&s);
	free(r);
}

static void test_info_then_go(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct nbdp_hs *hs;
	struct rep reps[8];
	struct stream s;
	unsigned int n;

	(void)state;
	/* INFO alone does not end the handshake. */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_go(&s, NBDP_OPT_INFO, "r0", NULL, 0);
	n = session(&e, &s, r, reps, 8);
	assert_int_equal(r->step, NBDP_HS_NEED_INPUT);
	assert_int_equal(r->used, s.n);
	assert_int_equal(n, 2);
	assert_int_equal(reps[0].opt, NBDP_OPT_INFO);
	assert_int_equal(reps[0].type, NBDP_REP_INFO);
	assert_int_equal(r16(reps[0].data), NBDP_INFO_EXPORT);
	assert_int_equal(reps[1].type, NBDP_REP_ACK);

	/* Then GO with the default name and no requests. */
	st_go(&s, NBDP_OPT_GO, "", NULL, 0);
	hs = nbdp_hs_new(&e);
	drive(hs, &s, s.n, SIZE_MAX, r);
	assert_int_equal(r->step, NBDP_HS_DONE);
	n = parse_reps(r, check_greeting(r), r->out_len, reps, 8);
	assert_int_equal(n, 4);
	assert_int_equal(reps[2].opt, NBDP_OPT_GO);
	assert_int_equal(reps[2].type, NBDP_REP_INFO);
	assert_int_equal(reps[2].len, 12);
	assert_int_equal(reps[3].type, NBDP_REP_ACK);
	assert_false(nbdp_hs_result(hs)->block_size_agreed);
	assert_int_equal(nbdp_hs_result(hs)->options, 2);
	nbdp_hs_free(hs);
	st_free(&s);
	free(r);
}

static void test_go_unknown_export(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct rep reps[8];
	struct stream s;
	unsigned int n;

	(void)state;
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_go(&s, NBDP_OPT_INFO, "r1", NULL, 0);
	st_go(&s, NBDP_OPT_GO, "nope", NULL, 0);
	st_go(&s, NBDP_OPT_GO, "r0", NULL, 0);
	n = session(&e, &s, r, reps, 8);
	assert_int_equal(r->step, NBDP_HS_DONE);
	assert_int_equal(n, 4);
	assert_int_equal(reps[0].opt, NBDP_OPT_INFO);
	assert_int_equal(reps[0].type, NBDP_REP_ERR_UNKNOWN);
	assert_true(has_text(&reps[0], "unknown export \"r1\""));
	assert_int_equal(reps[1].opt, NBDP_OPT_GO);
	assert_int_equal(reps[1].type, NBDP_REP_ERR_UNKNOWN);
	assert_true(has_text(&reps[1], "nope"));
	assert_int_equal(reps[2].type, NBDP_REP_INFO);
	assert_int_equal(reps[3].type, NBDP_REP_ACK);
	st_free(&s);
	free(r);
}

static void test_go_malformed(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct rep reps[16];
	struct stream s;
	uint8_t d[64];
	unsigned int n;

	(void)state;
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	/* 1: shorter than name length + count. */
	st_opt(&s, NBDP_OPT_GO, "\0\0\0\0\0", 5);
	/* 2: name length past the data. */
	w32(d, 3);
	memcpy(d + 4, "r0", 2);
	w16(d + 6, 0);
	st_opt(&s, NBDP_OPT_GO, d, 8);
	/* 3: count says 2 requests, 1 present. */
	w32(d, 2);
	memcpy(d + 4, "r0", 2);
	w16(d + 6, 2);
	w16(d + 8, NBDP_INFO_BLOCK_SIZE);
	st_opt(&s, NBDP_OPT_INFO, d, 10);
	/* 4: trailing garbage after the requests. */
	w16(d + 6, 1);
	d[10] = 0xee;
	st_opt(&s, NBDP_OPT_GO, d, 11);
	/* 5: a NUL inside the name. */
	w32(d, 3);
	memcpy(d + 4, "r\0" "0", 3);
	w16(d + 7, 0);
	st_opt(&s, NBDP_OPT_GO, d, 9);
	/* Still alive and in step afterwards. */
	st_go(&s, NBDP_OPT_GO, "r0", NULL, 0);
	n = session(&e, &s, r, reps, 16);
	assert_int_equal(r->step, NBDP_HS_DONE);
	assert_int_equal(n, 5 + 2);
	for (unsigned int i = 0; i < 5; i++) {
		assert_int_equal(reps[i].type, NBDP_REP_ERR_INVALID);
		assert_true(reps[i].len > 0);	/* with a message */
	}
	assert_int_equal(reps[2].opt, NBDP_OPT_INFO);
	assert_int_equal(reps[5].type, NBDP_REP_INFO);
	assert_int_equal(reps[6].type, NBDP_REP_ACK);
	st_free(&s);
	free(r);
}

static void test_go_refused(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct rep reps[8];
	struct stream s;
	unsigned int n;

	(void)state;
	e.refuse = "r0 is secondary; promote it first";
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_go(&s, NBDP_OPT_GO, "r0", NULL, 0);
	st_go(&s, NBDP_OPT_INFO, "r0", NULL, 0);
	n = session(&e, &s, r, reps, 8);
	assert_int_equal(r->step, NBDP_HS_NEED_INPUT);
	assert_int_equal(n, 3);
	assert_int_equal(reps[0].type, NBDP_REP_ERR_POLICY);
	assert_true(has_text(&reps[0], "promote it first"));
	/* INFO still describes the export. */
	assert_int_equal(reps[1].type, NBDP_REP_INFO);
	assert_int_equal(reps[2].type, NBDP_REP_ACK);
	st_free(&s);
	free(r);
}

static void test_list(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct rep reps[8];
	struct stream s;
	unsigned int n;

	(void)state;
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt(&s, NBDP_OPT_LIST, NULL, 0);
	st_opt(&s, NBDP_OPT_LIST, "xyz", 3);	/* data: invalid */
	st_opt(&s, NBDP_OPT_LIST, NULL, 0);	/* and in step again */
	n = session(&e, &s, r, reps, 8);
	assert_int_equal(r->step, NBDP_HS_NEED_INPUT);
	assert_int_equal(r->used, s.n);
	assert_int_equal(n, 5);
	assert_int_equal(reps[0].opt, NBDP_OPT_LIST);
	assert_int_equal(reps[0].type, NBDP_REP_SERVER);
	assert_int_equal(r32(reps[0].data), 2);
	assert_memory_equal(reps[0].data + 4, "r0", 2);
	assert_int_equal(reps[0].len, 4 + 2 + strlen(e.description));
	assert_memory_equal(reps[0].data + 6, e.description,
			    strlen(e.description));
	assert_int_equal(reps[1].type, NBDP_REP_ACK);
	assert_int_equal(reps[2].type, NBDP_REP_ERR_INVALID);
	assert_int_equal(reps[3].type, NBDP_REP_SERVER);
	assert_int_equal(reps[4].type, NBDP_REP_ACK);
	st_free(&s);
	free(r);
}

static void test_abort(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct rep reps[4];
	struct stream s;
	size_t before;
	unsigned int n;

	(void)state;
	/* Data on ABORT is ignored (SHOULD), not refused. */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt(&s, NBDP_OPT_ABORT, "ignored", 7);
	before = s.n;
	st_go(&s, NBDP_OPT_GO, "r0", NULL, 0);	/* never read */
	n = session(&e, &s, r, reps, 4);
	assert_int_equal(r->step, NBDP_HS_ABORT);
	assert_int_equal(r->used, before);
	assert_int_equal(n, 1);
	assert_int_equal(reps[0].opt, NBDP_OPT_ABORT);
	assert_int_equal(reps[0].type, NBDP_REP_ACK);
	assert_int_equal(reps[0].len, 0);
	st_free(&s);
	free(r);
}

static void test_unsupported_options(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	static const uint32_t opts[] = {
		NBDP_OPT_STRUCTURED_REPLY, NBDP_OPT_STARTTLS,
		NBDP_OPT_PEEK_EXPORT, NBDP_OPT_LIST_META_CONTEXT,
		NBDP_OPT_SET_META_CONTEXT, NBDP_OPT_EXTENDED_HEADERS,
		0, 12, 0x1234, 0xffffffffu,
	};
	const unsigned int nopts = sizeof(opts) / sizeof(opts[0]);
	struct rep reps[16];
	struct stream s;
	uint8_t junk[300];
	unsigned int n;

	(void)state;
	memset(junk, 0xaa, sizeof(junk));
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	/* Data of varying size, including bytes that look like options:
	 * all of it must be skipped. */
	for (unsigned int i = 0; i < nopts; i++)
		st_opt(&s, opts[i], junk, i * 29);
	st_go(&s, NBDP_OPT_GO, "r0", NULL, 0);
	n = session(&e, &s, r, reps, 16);
	assert_int_equal(r->step, NBDP_HS_DONE);
	assert_int_equal(n, nopts + 2);
	for (unsigned int i = 0; i < nopts; i++) {
		assert_int_equal(reps[i].opt, opts[i]);
		assert_int_equal(reps[i].type, NBDP_REP_ERR_UNSUP);
	}
	assert_true(has_text(&reps[0], "simple replies"));
	assert_true(has_text(&reps[1], "TLS"));
	assert_int_equal(reps[nopts].type, NBDP_REP_INFO);
	assert_int_equal(reps[nopts + 1].type, NBDP_REP_ACK);
	st_free(&s);
	free(r);
}

static void test_oversized_options(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct nbdp_hs *hs;
	struct rep reps[4];
	struct stream s;
	unsigned int n;

	(void)state;
	/* GO with more data than we read: skipped, TOO_BIG, still alive. */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt(&s, NBDP_OPT_GO, NULL, NBDP_OPT_DATA_MAX + 1);
	st_opt(&s, NBDP_OPT_INFO, NULL, 100000);
	st_go(&s, NBDP_OPT_GO, "r0", NULL, 0);
	n = session(&e, &s, r, reps, 4);
	assert_int_equal(r->step, NBDP_HS_DONE);
	assert_int_equal(n, 4);
	assert_int_equal(reps[0].type, NBDP_REP_ERR_TOO_BIG);
	assert_int_equal(reps[1].type, NBDP_REP_ERR_TOO_BIG);
	assert_int_equal(reps[1].opt, NBDP_OPT_INFO);
	assert_int_equal(reps[3].type, NBDP_REP_ACK);
	st_free(&s);

	/* The largest GO we do read still works: a 4096-byte name (not
	 * ours) and enough requests to fill NBDP_OPT_DATA_MAX exactly. */
	{
		uint8_t *d = calloc(1, NBDP_OPT_DATA_MAX);
		uint32_t nreq = (NBDP_OPT_DATA_MAX - 4 - 4096 - 2) / 2;

		assert_non_null(d);
		assert_int_equal(4 + 4096 + 2 + 2 * nreq, NBDP_OPT_DATA_MAX);
		w32(d, 4096);
		memset(d + 4, 'x', 4096);
		w16(d + 4 + 4096, (uint16_t)nreq);
		st_init(&s);
		st_flags(&s, FIXED | NOZ);
		st_opt(&s, NBDP_OPT_GO, d, NBDP_OPT_DATA_MAX);
		n = session(&e, &s, r, reps, 4);
		assert_int_equal(n, 1);
		assert_int_equal(reps[0].type, NBDP_REP_ERR_UNKNOWN);
		/* The message quotes a bounded part of the name. */
		assert_true(reps[0].len < 300);
		st_free(&s);
		free(d);
	}

	/* EXPORT_NAME longer than any string may be: the end. */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt(&s, NBDP_OPT_EXPORT_NAME, NULL, NBDP_STRING_MAX + 1);
	hs = nbdp_hs_new(&e);
	drive(hs, &s, s.n, SIZE_MAX, r);
	assert_int_equal(r->step, NBDP_HS_CLOSE);
	assert_int_equal(r->out_len, 18);
	/* Decided at the header: the data was not waited for. */
	assert_int_equal(r->used, 4 + 16);
	nbdp_hs_free(hs);
	st_free(&s);

	/* Any option beyond the skip limit: a flood, the end. */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt(&s, 0x4242, NULL, 0);
	{
		uint8_t *p = st_grow(&s, 16);

		w64(p, NBDP_OPTS_MAGIC);
		w32(p + 8, 0x4243);
		w32(p + 12, NBDP_OPT_SKIP_MAX + 1);
	}
	hs = nbdp_hs_new(&e);
	drive(hs, &s, s.n, SIZE_MAX, r);
	assert_int_equal(r->step, NBDP_HS_CLOSE);
	assert_non_null(strstr(nbdp_hs_reason(hs), "bytes of data"));
	/* The first (small) unknown option was still answered. */
	n = parse_reps(r, check_greeting(r), r->out_len, reps, 4);
	assert_int_equal(n, 1);
	assert_int_equal(reps[0].type, NBDP_REP_ERR_UNSUP);
	nbdp_hs_free(hs);
	st_free(&s);
	free(r);
}

static void test_bad_magic_and_flags(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct nbdp_hs *hs;
	struct rep reps[4];
	struct stream s;
	unsigned int n;

	(void)state;
	/* Option magic off by one bit, after a good option. */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt(&s, NBDP_OPT_LIST, NULL, 0);
	st_opt_magic(&s, NBDP_OPTS_MAGIC ^ 1, NBDP_OPT_GO, NULL, 0);
	n = session(&e, &s, r, reps, 4);
	assert_int_equal(r->step, NBDP_HS_CLOSE);
	assert_int_equal(n, 2);	/* LIST's answer, nothing for the bad one */
	st_free(&s);

	/* The server's own magic sent back is not an option either. */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	st_opt_magic(&s, NBDP_MAGIC, NBDP_OPT_GO, NULL, 0);
	hs = nbdp_hs_new(&e);
	drive(hs, &s, s.n, SIZE_MAX, r);
	assert_int_equal(r->step, NBDP_HS_CLOSE);
	assert_non_null(strstr(nbdp_hs_reason(hs), "magic"));
	nbdp_hs_free(hs);
	st_free(&s);

	/* Unknown client flag bits: the server MUST drop the connection. */
	for (uint32_t bit = 2; bit < 32; bit += 5) {
		st_init(&s);
		st_flags(&s, FIXED | (1u << bit));
		st_go(&s, NBDP_OPT_GO, "r0", NULL, 0);
		hs = nbdp_hs_new(&e);
		drive(hs, &s, s.n, SIZE_MAX, r);
		assert_int_equal(r->step, NBDP_HS_CLOSE);
		assert_int_equal(r->used, 4);
		assert_int_equal(r->out_len, 18);
		assert_non_null(strstr(nbdp_hs_reason(hs), "client flags"));
		nbdp_hs_free(hs);
		st_free(&s);
	}
	free(r);
}

static void test_not_fixed_newstyle(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct nbdp_hs *hs;
	struct stream s;

	(void)state;
	/* Plain newstyle: EXPORT_NAME is the one option that works. */
	st_init(&s);
	st_flags(&s, 0);
	st_opt(&s, NBDP_OPT_EXPORT_NAME, "r0", 2);
	hs = nbdp_hs_new(&e);
	drive(hs, &s, s.n, SIZE_MAX, r);
	assert_int_equal(r->step, NBDP_HS_DONE);
	assert_int_equal(r->out_len, 18 + 10 + 124);
	nbdp_hs_free(hs);
	st_free(&s);

	/* Anything else would need a reply it cannot parse. */
	st_init(&s);
	st_flags(&s, NOZ);
	st_go(&s, NBDP_OPT_GO, "r0", NULL, 0);
	hs = nbdp_hs_new(&e);
	drive(hs, &s, s.n, SIZE_MAX, r);
	assert_int_equal(r->step, NBDP_HS_CLOSE);
	assert_int_equal(r->out_len, 18);
	assert_non_null(strstr(nbdp_hs_reason(hs), "fixed newstyle"));
	nbdp_hs_free(hs);
	st_free(&s);
	free(r);
}

static void test_too_many_options(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *r = calloc(1, sizeof(*r));
	struct rep *reps = calloc(NBDP_OPTS_MAX + 1, sizeof(*reps));
	struct stream s;
	unsigned int n;

	(void)state;
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	for (unsigned int i = 0; i < NBDP_OPTS_MAX + 1; i++)
		st_opt(&s, 0x777, NULL, 0);
	n = session(&e, &s, r, reps, NBDP_OPTS_MAX + 1);
	assert_int_equal(r->step, NBDP_HS_CLOSE);
	assert_int_equal(n, NBDP_OPTS_MAX);
	st_free(&s);
	free(reps);
	free(r);
}

/* The full option tour, for the chunking tests. */
static void tour(struct stream *s)
{
	static const uint16_t infos[] = { NBDP_INFO_BLOCK_SIZE,
					  NBDP_INFO_NAME };

	st_init(s);
	st_flags(s, FIXED | NOZ);
	st_opt(s, NBDP_OPT_STRUCTURED_REPLY, NULL, 0);
	st_opt(s, NBDP_OPT_LIST, NULL, 0);
	st_opt(s, 0x99, "some data", 9);
	st_go(s, NBDP_OPT_INFO, "zz", NULL, 0);
	st_opt(s, NBDP_OPT_GO, NULL, NBDP_OPT_DATA_MAX + 7);
	st_go(s, NBDP_OPT_INFO, "r0", infos, 2);
	st_go(s, NBDP_OPT_GO, "r0", infos, 2);
	memset(st_grow(s, 40), 0x11, 40);	/* transmission bytes */
}

static void test_chunked_feeding(void **state)
{
	struct nbdp_export e = export_r0();
	struct run *ref = calloc(1, sizeof(*ref));
	struct run *r = calloc(1, sizeof(*r));
	static const size_t chunks[] = { 1, 2, 3, 5, 7, 16, 17, 20, 4095 };
	static const size_t sends[] = { 1, 3, 19, SIZE_MAX };
	struct nbdp_hs *hs;
	struct stream s;

	(void)state;
	tour(&s);
	hs = nbdp_hs_new(&e);
	drive(hs, &s, s.n, SIZE_MAX, ref);
	assert_int_equal(ref->step, NBDP_HS_DONE);
	assert_int_equal(ref->used, s.n - 40);
	nbdp_hs_free(hs);

	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		for (size_t k = 0; k < sizeof(sends) / sizeof(sends[0]); k++) {
			const struct nbdp_hs_result *res;

			hs = nbdp_hs_new(&e);
			drive(hs, &s, chunks[c], sends[k], r);
			assert_int_equal(r->step, NBDP_HS_DONE);
			assert_int_equal(r->used, ref->used);
			assert_int_equal(r->out_len, ref->out_len);
			assert_memory_equal(r->out, ref->out, ref->out_len);
			res = nbdp_hs_result(hs);
			assert_true(res->block_size_agreed);
			assert_int_equal(res->options, 7);
			nbdp_hs_free(hs);
		}
	}
	st_free(&s);
	free(r);
	free(ref);
}

static void test_backpressure_and_final(void **state)
{
	struct nbdp_export e = export_r0();
	struct nbdp_hs *hs = nbdp_hs_new(&e);
	struct stream s;
	size_t used, n, pos = 0, max_out = 0;
	enum nbdp_hs_step step;
	unsigned int rounds = 0;

	(void)state;
	/* 100 pipelined LISTs, the output never read until feed says so. */
	st_init(&s);
	st_flags(&s, FIXED | NOZ);
	for (int i = 0; i < 100; i++)
		st_opt(&s, NBDP_OPT_LIST, NULL, 0);
	st_opt(&s, NBDP_OPT_EXPORT_NAME, "r0", 2);
	for (;;) {
		step = nbdp_hs_feed(hs, s.b + pos, s.n - pos, &used);
		pos += used;
		nbdp_hs_out(hs, &n);
		if (n > max_out)
			max_out = n;
		if (step != NBDP_HS_SEND)
			break;
		/* Each SEND stops after one option: the greeting before
		 * anything, then flags + the first LIST, then one LIST. */
		assert_int_equal(used, rounds == 0 ? 0 : rounds == 1 ? 20 : 16);
		nbdp_hs_out_done(hs, n);
		rounds++;
	}
	assert_int_equal(step, NBDP_HS_DONE);
	assert_int_equal(pos, s.n);
	assert_int_equal(rounds, 1 + 100);	/* greeting + one per LIST */
	assert_true(max_out <= 20 + 4 + 2 + 16 + 20 + 18);

	/* Final: nothing more is consumed, the step stays. */
	nbdp_hs_out(hs, &n);
	nbdp_hs_out_done(hs, n);
	assert_int_equal(nbdp_hs_feed(hs, s.b, s.n, &used), NBDP_HS_DONE);
	assert_int_equal(used, 0);
	nbdp_hs_out(hs, &n);
	assert_int_equal(n, 0);
	nbdp_hs_free(hs);

	hs = nbdp_hs_new(&e);
	nbdp_hs_out_done(hs, 18);
	assert_int_equal(nbdp_hs_feed(hs, "\xff\xff\xff\xff", 4, &used),
			 NBDP_HS_CLOSE);
	assert_int_equal(nbdp_hs_feed(hs, s.b, s.n, &used), NBDP_HS_CLOSE);
	assert_int_equal(used, 0);
	nbdp_hs_free(hs);
	st_free(&s);
}

static void test_export_check(void **state)
{
	char long_name[NBDP_OWN_STRING_MAX + 2];
	struct nbdp_export e;
	char why[160];

	(void)state;
	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';

	e = export_r0();
	assert_int_equal(nbdp_export_check(&e, why, sizeof(why)), 0);
	e.tflags |= NBDP_TF_READ_ONLY | NBDP_TF_SEND_FAST_ZERO |
		    NBDP_TF_ROTATIONAL;
	assert_int_equal(nbdp_export_check(&e, NULL, 0), 0);

#define BAD(stmt, field)                                                    \
	do {                                                                \
		e = export_r0();                                            \
		stmt;                                                       \
		why[0] = '\0';                                              \
		assert_int_equal(nbdp_export_check(&e, why, sizeof(why)),   \
				 -EINVAL);                                  \
		assert_non_null(strstr(why, field));                        \
		errno = 0;                                                  \
		assert_null(nbdp_hs_new(&e));                               \
		assert_int_equal(errno, EINVAL);                            \
	} while (0)

	BAD(e.name = NULL, "name");
	BAD(e.name = "", "name");
	BAD(e.name = long_name, "name");
	BAD(e.description = long_name, "description");
	BAD(e.refuse = long_name, "refuse");
	BAD(e.tflags |= NBDP_TF_SEND_DF, "tflags");
	BAD(e.tflags |= NBDP_TF_SEND_CACHE, "tflags");
	BAD(e.tflags |= 1u << 15, "tflags");
	BAD(e.tflags = NBDP_TF_SEND_FAST_ZERO, "SEND_FAST_ZERO");
	BAD(e.min_block = 0, "min_block");
	BAD(e.min_block = 768, "min_block");
	BAD(e.min_block = 1u << 17; e.pref_block = 1u << 17, "min_block");
	BAD(e.pref_block = 256, "pref_block");
	BAD(e.pref_block = 3000, "pref_block");
	BAD(e.min_block = 8192, "pref_block");
	BAD(e.max_payload = 2048, "max_payload");
	BAD(e.max_payload = NBDP_PAYLOAD_MAX + 1, "max_payload");
	BAD(e.size = SIZE + 100, "size");
#undef BAD
}

/* ------------------------------------------------------- transmission */

static void test_req_codec(void **state)
{
	uint8_t b[NBDP_REQ_SIZE];
	struct nbdp_req q = {
		.flags = 0x0102,
		.type = 0x0304,
		.cookie = 0x1122334455667788ull,
		.offset = 0x99aabbccddeeff00ull,
		.length = 0xdeadbeef,
	}, d;

	(void)state;
	nbdp_req_encode(&q, b);
	assert_int_equal(r32(b), 0x25609513);
	assert_int_equal(r16(b + 4), 0x0102);
	assert_int_equal(r16(b + 6), 0x0304);
	assert_int_equal(r64(b + 8), q.cookie);
	assert_int_equal(r64(b + 16), q.offset);
	assert_int_equal(r32(b + 24), q.length);
	memset(&d, 0, sizeof(d));
	assert_int_equal(nbdp_req_decode(b, &d), 0);
	assert_int_equal(d.flags, q.flags);
	assert_int_equal(d.type, q.type);
	assert_int_equal(d.cookie, q.cookie);
	assert_int_equal(d.offset, q.offset);
	assert_int_equal(d.length, q.length);

	/* Every other magic loses the stream, the extended one too. */
	w32(b, 0x21e41c71);
	assert_int_equal(nbdp_req_decode(b, &d), -EBADMSG);
	w32(b, 0x67446698);
	assert_int_equal(nbdp_req_decode(b, &d), -EBADMSG);
	w32(b, 0x25609512);
	assert_int_equal(nbdp_req_decode(b, &d), -EBADMSG);

	assert_int_equal(nbdp_req_payload(&(struct nbdp_req){
				 .type = NBDP_CMD_WRITE, .length = 4096 }),
			 4096);
	assert_int_equal(nbdp_req_payload(&(struct nbdp_req){
				 .type = NBDP_CMD_READ, .length = 4096 }),
			 0);
	assert_int_equal(nbdp_req_payload(&(struct nbdp_req){
				 .type = NBDP_CMD_WRITE_ZEROES,
				 .length = 4096 }),
			 0);
}

struct req_case {
	const char *what;
	uint16_t tflags_add, tflags_del;
	uint16_t type, flags;
	uint64_t offset;
	uint32_t length;
	enum nbdp_verdict verdict;
	uint32_t err;
};

#define MAXP (1u << 20)

static const struct req_case req_cases[] = {
	{ "read", 0, 0, NBDP_CMD_READ, 0, 0, 4096, NBDP_REQ_OK, 0 },
	{ "read to the last byte", 0, 0, NBDP_CMD_READ, 0, SIZE - 512, 512,
	  NBDP_REQ_OK, 0 },
	{ "read at max payload", 0, 0, NBDP_CMD_READ, 0, 0, MAXP, NBDP_REQ_OK,
	  0 },
	{ "read + FUA", 0, 0, NBDP_CMD_READ, NBDP_CMD_FLAG_FUA, 0, 512,
	  NBDP_REQ_OK, 0 },
	{ "read + FUA not advertised", 0, NBDP_TF_SEND_FUA, NBDP_CMD_READ,
	  NBDP_CMD_FLAG_FUA, 0, 512, NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read + DF", 0, 0, NBDP_CMD_READ, NBDP_CMD_FLAG_DF, 0, 512,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read + NO_HOLE", 0, 0, NBDP_CMD_READ, NBDP_CMD_FLAG_NO_HOLE, 0, 512,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read + unknown flag", 0, 0, NBDP_CMD_READ, 1u << 15, 0, 512,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read of 0 bytes", 0, 0, NBDP_CMD_READ, 0, 0, 0, NBDP_REQ_ERROR,
	  NBDP_EINVAL },
	{ "read above max payload", 0, 0, NBDP_CMD_READ, 0, 0, MAXP + 512,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read 512 past the end", 0, 0, NBDP_CMD_READ, 0, SIZE - 512, 1024,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read at the end", 0, 0, NBDP_CMD_READ, 0, SIZE, 512,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read, offset + length wraps", 0, 0, NBDP_CMD_READ, 0,
	  UINT64_MAX - 511, 1024, NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read, unaligned offset", 0, 0, NBDP_CMD_READ, 0, 100, 512,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "read, unaligned length", 0, 0, NBDP_CMD_READ, 0, 0, 513,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "write", 0, 0, NBDP_CMD_WRITE, 0, 1 << 20, 65536, NBDP_REQ_OK, 0 },
	{ "write + FUA", 0, 0, NBDP_CMD_WRITE, NBDP_CMD_FLAG_FUA, 0, 512,
	  NBDP_REQ_OK, 0 },
	{ "write + NO_HOLE", 0, 0, NBDP_CMD_WRITE, NBDP_CMD_FLAG_NO_HOLE, 0,
	  512, NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "write past the end", 0, 0, NBDP_CMD_WRITE, 0, SIZE - 512, 1024,
	  NBDP_REQ_ERROR, NBDP_ENOSPC },
	{ "write of 0 bytes", 0, 0, NBDP_CMD_WRITE, 0, 0, 0, NBDP_REQ_ERROR,
	  NBDP_EINVAL },
	{ "write above max payload, readable", 0, 0, NBDP_CMD_WRITE, 0, 0,
	  MAXP * 4, NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "write of 32 MiB + 1", 0, 0, NBDP_CMD_WRITE, 0, 0, (1u << 25) + 1,
	  NBDP_REQ_CLOSE, 0 },
	{ "write of 4 GiB - 1, bad flags too", 0, 0, NBDP_CMD_WRITE, 0xffff,
	  0, UINT32_MAX, NBDP_REQ_CLOSE, 0 },
	{ "write, read-only", NBDP_TF_READ_ONLY, 0, NBDP_CMD_WRITE, 0, 0, 512,
	  NBDP_REQ_ERROR, NBDP_EPERM },
	{ "read, read-only", NBDP_TF_READ_ONLY, 0, NBDP_CMD_READ, 0, 0, 512,
	  NBDP_REQ_OK, 0 },
	{ "flush", 0, 0, NBDP_CMD_FLUSH, 0, 0, 0, NBDP_REQ_OK, 0 },
	{ "flush + FUA", 0, 0, NBDP_CMD_FLUSH, NBDP_CMD_FLAG_FUA, 0, 0,
	  NBDP_REQ_OK, 0 },
	{ "flush with offset", 0, 0, NBDP_CMD_FLUSH, 0, 512, 0, NBDP_REQ_ERROR,
	  NBDP_EINVAL },
	{ "flush with length", 0, 0, NBDP_CMD_FLUSH, 0, 0, 512, NBDP_REQ_ERROR,
	  NBDP_EINVAL },
	{ "flush not advertised", 0, NBDP_TF_SEND_FLUSH, NBDP_CMD_FLUSH, 0, 0,
	  0, NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "trim", 0, 0, NBDP_CMD_TRIM, 0, 0, 4096, NBDP_REQ_OK, 0 },
	{ "trim of the whole export (no payload limit)", 0, 0, NBDP_CMD_TRIM,
	  0, 0, (uint32_t)SIZE, NBDP_REQ_OK, 0 },
	{ "trim past the end", 0, 0, NBDP_CMD_TRIM, 0, 512, (uint32_t)SIZE,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "trim not advertised", 0, NBDP_TF_SEND_TRIM, NBDP_CMD_TRIM, 0, 0,
	  4096, NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "trim, read-only", NBDP_TF_READ_ONLY, 0, NBDP_CMD_TRIM, 0, 0, 4096,
	  NBDP_REQ_ERROR, NBDP_EPERM },
	{ "trim of 0 bytes", 0, 0, NBDP_CMD_TRIM, 0, 0, 0, NBDP_REQ_ERROR,
	  NBDP_EINVAL },
	{ "write zeroes", 0, 0, NBDP_CMD_WRITE_ZEROES, 0, 0, 8 * MAXP,
	  NBDP_REQ_OK, 0 },
	{ "write zeroes + NO_HOLE + FUA", 0, 0, NBDP_CMD_WRITE_ZEROES,
	  NBDP_CMD_FLAG_NO_HOLE | NBDP_CMD_FLAG_FUA, 0, 4096, NBDP_REQ_OK, 0 },
	{ "write zeroes + FAST_ZERO, not advertised", 0, 0,
	  NBDP_CMD_WRITE_ZEROES, NBDP_CMD_FLAG_FAST_ZERO, 0, 4096,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "write zeroes + FAST_ZERO, advertised", NBDP_TF_SEND_FAST_ZERO, 0,
	  NBDP_CMD_WRITE_ZEROES, NBDP_CMD_FLAG_FAST_ZERO, 0, 4096, NBDP_REQ_OK,
	  0 },
	{ "write zeroes past the end", 0, 0, NBDP_CMD_WRITE_ZEROES, 0,
	  SIZE - 512, 1024, NBDP_REQ_ERROR, NBDP_ENOSPC },
	{ "write zeroes not advertised", 0,
	  NBDP_TF_SEND_WRITE_ZEROES, NBDP_CMD_WRITE_ZEROES, 0, 0, 4096,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "write zeroes unaligned", 0, 0, NBDP_CMD_WRITE_ZEROES, 0, 512, 100,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "disc", 0, 0, NBDP_CMD_DISC, 0, 0, 0, NBDP_REQ_DISC, 0 },
	{ "disc with junk", 0, 0, NBDP_CMD_DISC, 0xffff, 1, 1, NBDP_REQ_DISC,
	  0 },
	{ "cache (not advertised)", 0, 0, NBDP_CMD_CACHE, 0, 0, 4096,
	  NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "block status (not negotiated)", 0, 0, NBDP_CMD_BLOCK_STATUS, 0, 0,
	  4096, NBDP_REQ_ERROR, NBDP_EINVAL },
	{ "unknown command 8", 0, 0, 8, 0, 0, 4096, NBDP_REQ_ERROR,
	  NBDP_EINVAL },
	{ "unknown command 0xffff", 0, 0, 0xffff, 0, 0, 0, NBDP_REQ_ERROR,
	  NBDP_EINVAL },
};

static void test_req_check(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
		const struct req_case *c = &req_cases[i];
		struct nbdp_export e = export_r0();
		struct nbdp_req q = {
			.flags = c->flags,
			.type = c->type,
			.cookie = i,
			.offset = c->offset,
			.length = c->length,
		};
		const char *why = NULL;
		uint32_t err = 12345;
		enum nbdp_verdict v;

		e.tflags = (uint16_t)((e.tflags | c->tflags_add) &
				      ~c->tflags_del);
		assert_int_equal(nbdp_export_check(&e, NULL, 0), 0);
		v = nbdp_req_check(&e, &q, &err, &why);
		if (v != c->verdict || err != c->err)
			fail_msg("%s: verdict %d err %u (%s), expected %d err %u",
				 c->what, v, err, why, c->verdict, c->err);
		assert_non_null(why);
		if (v == NBDP_REQ_OK || v == NBDP_REQ_DISC)
			assert_string_equal(why, "");
		else
			assert_true(why[0] != '\0');
	}
}

static void test_reply_and_errno(void **state)
{
	uint8_t b[NBDP_REPLY_SIZE];

	(void)state;
	nbdp_reply_encode(b, NBDP_ENOSPC, 0x0102030405060708ull);
	assert_int_equal(r32(b), 0x67446698);
	assert_int_equal(r32(b + 4), 28);
	assert_int_equal(r64(b + 8), 0x0102030405060708ull);

	assert_int_equal(nbdp_errno(0), 0);
	assert_int_equal(nbdp_errno(-EIO), NBDP_EIO);
	assert_int_equal(nbdp_errno(EIO), NBDP_EIO);
	assert_int_equal(nbdp_errno(-EPERM), NBDP_EPERM);
	assert_int_equal(nbdp_errno(-EROFS), NBDP_EPERM);
	assert_int_equal(nbdp_errno(-ENOSPC), NBDP_ENOSPC);
	assert_int_equal(nbdp_errno(-EDQUOT), NBDP_ENOSPC);
	assert_int_equal(nbdp_errno(-EFBIG), NBDP_ENOSPC);
	assert_int_equal(nbdp_errno(-EINVAL), NBDP_EINVAL);
	assert_int_equal(nbdp_errno(-ENOMEM), NBDP_ENOMEM);
	assert_int_equal(nbdp_errno(-EOPNOTSUPP), NBDP_ENOTSUP);
	assert_int_equal(nbdp_errno(-EOVERFLOW), NBDP_EOVERFLOW);
	assert_int_equal(nbdp_errno(-ESHUTDOWN), NBDP_ESHUTDOWN);
	/* Anything the protocol has no value for is an I/O error. */
	assert_int_equal(nbdp_errno(-ETIMEDOUT), NBDP_EIO);
	assert_int_equal(nbdp_errno(-ENOTCONN), NBDP_EIO);

	assert_string_equal(nbdp_opt_name(NBDP_OPT_GO), "NBD_OPT_GO");
	assert_string_equal(nbdp_opt_name(0), "?");
	assert_string_equal(nbdp_opt_name(0xffffffffu), "?");
	assert_string_equal(nbdp_cmd_name(NBDP_CMD_WRITE_ZEROES),
			    "NBD_CMD_WRITE_ZEROES");
	assert_string_equal(nbdp_cmd_name(200), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting),
		cmocka_unit_test(test_export_name),
		cmocka_unit_test(test_export_name_unknown),
		cmocka_unit_test(test_go_full),
		cmocka_unit_test(test_info_then_go),
		cmocka_unit_test(test_go_unknown_export),
		cmocka_unit_test(test_go_malformed),
		cmocka_unit_test(test_go_refused),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_abort),
		cmocka_unit_test(test_unsupported_options),
		cmocka_unit_test(test_oversized_options),
		cmocka_unit_test(test_bad_magic_and_flags),
		cmocka_unit_test(test_not_fixed_newstyle),
		cmocka_unit_test(test_too_many_options),
		cmocka_unit_test(test_chunked_feeding),
		cmocka_unit_test(test_backpressure_and_final),
		cmocka_unit_test(test_export_check),
		cmocka_unit_test(test_req_codec),
		cmocka_unit_test(test_req_check),
		cmocka_unit_test(test_reply_and_errno),
	};

	log_level = LOG_LVL_ERR;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
