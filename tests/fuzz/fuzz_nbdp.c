// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: the NBD handshake machine and the request validator
 * (userspace/lib/nbdp.c) over arbitrary client bytes.
 *
 * Input: a mode byte, a 16-bit big-endian length H, H bytes of handshake
 * stream (client flags, options), then the transmission stream (requests).
 *   bit 0      leave magics as they are (else the option headers inside
 *              the H bytes and each request header get the right magic:
 *              a mutation rarely forges a 64-bit magic)
 *   bits 1..3  how the client's bytes are split into reads
 *   bit 4      drain the server's output one byte per send
 *   bit 5      the other export: read-only, fast zero, GO refused
 *
 * Oracles besides the sanitizers:
 *  - the step contract: NEED_INPUT consumed everything and has no output,
 *    SEND has output, a final step is final and consumes nothing more;
 *  - what the server sends parses: the greeting, then option replies with
 *    the reply magic, each naming an option the client sent, with a known
 *    type and INFO payloads of the right size and content, at most one
 *    option's worth at a time;
 *  - DONE only after an EXPORT_NAME or GO that names our export (checked
 *    by an independent walk of the client's stream), never when the
 *    export refuses, and exactly at the end of that option;
 *  - ABORT only after an NBD_OPT_ABORT, answered with ACK;
 *  - a request nbdp_req_check calls OK obeys every rule of the export.
 *
 * Built with -DFUZZ_NBDP_SEEDS instead, this file is the seed generator:
 *	gen_nbdp DIR	-> DIR/<name>, sessions made by a genuine client.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "nbdp.h"

#define FZ_SIZE (64ull << 20)
#define FZ_MAXP (1u << 20)

static void p16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void p32(uint8_t *p, uint32_t v)
{
	p16(p, (uint16_t)(v >> 16));
	p16(p + 2, (uint16_t)v);
}

static void p64(uint8_t *p, uint64_t v)
{
	p32(p, (uint32_t)(v >> 32));
	p32(p + 4, (uint32_t)v);
}

#ifndef FUZZ_NBDP_SEEDS

static struct nbdp_export fz_export(unsigned int variant)
{
	struct nbdp_export e = {
		.name = "fz0",
		.description = "fuzzed export",
		.size = FZ_SIZE,
		.tflags = NBDP_TF_SEND_FLUSH | NBDP_TF_SEND_FUA |
			  NBDP_TF_SEND_TRIM | NBDP_TF_SEND_WRITE_ZEROES |
			  NBDP_TF_CAN_MULTI_CONN,
		.min_block = 512,
		.pref_block = 4096,
		.max_payload = FZ_MAXP,
	};

	if (variant) {
		e.tflags = NBDP_TF_READ_ONLY | NBDP_TF_SEND_FLUSH |
			   NBDP_TF_SEND_WRITE_ZEROES | NBDP_TF_SEND_FAST_ZERO;
		e.min_block = 4096;
		e.max_payload = 1u << 25;
		e.description = NULL;
		e.refuse = "fz0 is secondary";
	}
	return e;
}

static uint16_t g16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t g32(const uint8_t *p)
{
	return (uint32_t)g16(p) << 16 | g16(p + 2);
}

static uint64_t g64(const uint8_t *p)
{
	return (uint64_t)g32(p) << 32 | g32(p + 4);
}

/* run.sh silences stderr; oracle failures go to a copy taken before. */
static int report_fd = 2;

static __attribute__((noreturn)) void die(const char *what)
{
	dprintf(report_fd, "fuzz_nbdp: %s\n", what);
	abort();
}

/* The client's options, walked independently of nbdp.c. */
#define MAX_OPTS 512
struct walk {
	size_t end[MAX_OPTS];	/* offset just past option i */
	uint32_t opt[MAX_OPTS];
	size_t data[MAX_OPTS];	/* offset of its data */
	uint32_t len[MAX_OPTS];
	unsigned int n;
};

static void walk_stream(const uint8_t *b, size_t len, struct walk *w)
{
	size_t off = 4;

	w->n = 0;
	while (len >= off + 16 && w->n < MAX_OPTS) {
		uint32_t l = g32(b + off + 12);

		w->opt[w->n] = g32(b + off + 8);
		w->len[w->n] = l;
		w->data[w->n] = off + 16;
		if (l > len - off - 16)
			break;
		off += 16 + l;
		w->end[w->n++] = off;
	}
}

/* The option whose data ends exactly at @used; -1 if none does. */
static int option_ending_at(const struct walk *w, size_t used)
{
	for (unsigned int i = 0; i < w->n; i++)
		if (w->end[i] == used)
			return (int)i;
	return -1;
}

static bool sent_option(const struct walk *w, uint32_t opt)
{
	for (unsigned int i = 0; i < w->n; i++)
		if (w->opt[i] == opt)
			return true;
	return false;
}

struct out_check {
	bool greeted;
	uint32_t last_type;	/* type of the last reply */
	uint32_t last_opt;
	uint32_t prev_type;	/* the one before */
	bool export_reply;	/* EXPORT_NAME answered: size + flags */
};

/* Check one output chunk (everything one step produced). */
static void check_out(const uint8_t *o, size_t n, const struct walk *w,
		      const struct nbdp_export *e, struct out_check *c,
		      bool done)
{
	size_t off = 0;

	if (n > 1024)
		die("more than one option's worth of output");
	if (!c->greeted) {
		if (n < 18 || g64(o) != NBDP_MAGIC ||
		    g64(o + 8) != NBDP_OPTS_MAGIC || g16(o + 16) != 3)
			die("bad greeting");
		c->greeted = true;
		off = 18;
	}
	while (off < n) {
		const uint8_t *p = o + off;
		uint32_t opt, type, len;

		/* The EXPORT_NAME answer is not an option reply. */
		if (done && (n - off == 10 || n - off == 134) &&
		    g64(p) == e->size &&
		    g16(p + 8) == (e->tflags | NBDP_TF_HAS_FLAGS)) {
			c->export_reply = true;
			return;
		}
		if (n - off < 20 || g64(p) != NBDP_REP_MAGIC)
			die("bad option reply header");
		opt = g32(p + 8);
		type = g32(p + 12);
		len = g32(p + 16);
		if (len > n - off - 20)
			die("reply longer than the output");
		if (!sent_option(w, opt))
			die("reply to an option never sent");
		switch (type) {
		case NBDP_REP_ACK:
			if (len)
				die("ACK with data");
			break;
		case NBDP_REP_SERVER:
			if (len < 4 || g32(p + 20) > len - 4 ||
			    opt != NBDP_OPT_LIST)
				die("bad REP_SERVER");
			break;
		case NBDP_REP_INFO:
			if (len < 2 ||
			    (opt != NBDP_OPT_INFO && opt != NBDP_OPT_GO))
				die("bad REP_INFO");
			switch (g16(p + 20)) {
			case NBDP_INFO_EXPORT:
				if (len != 12 || g64(p + 22) != e->size ||
				    g16(p + 30) !=
					    (e->tflags | NBDP_TF_HAS_FLAGS))
					die("bad INFO_EXPORT");
				break;
			case NBDP_INFO_BLOCK_SIZE:
				if (len != 14 || g32(p + 22) != e->min_block ||
				    g32(p + 26) != e->pref_block ||
				    g32(p + 30) != e->max_payload)
					die("bad INFO_BLOCK_SIZE");
				break;
			case NBDP_INFO_NAME:
			case NBDP_INFO_DESCRIPTION:
				break;
			default:
				die("unknown info type sent");
			}
			break;
		case NBDP_REP_ERR_UNSUP:
		case NBDP_REP_ERR_POLICY:
		case NBDP_REP_ERR_INVALID:
		case NBDP_REP_ERR_UNKNOWN:
		case NBDP_REP_ERR_TOO_BIG:
			break;
		default:
			die("unknown reply type");
		}
		c->prev_type = c->last_type;
		c->last_type = type;
		c->last_opt = opt;
		off += 20 + len;
	}
}

static bool names_export(const struct walk *w, unsigned int i,
			 const uint8_t *b, const struct nbdp_export *e)
{
	size_t el = strlen(e->name);
	const uint8_t *d = b + w->data[i];
	uint32_t nl;

	if (w->opt[i] == NBDP_OPT_EXPORT_NAME)
		return !w->len[i] ||
		       (w->len[i] == el && !memcmp(d, e->name, el));
	if (w->len[i] < 6)
		return false;
	nl = g32(d);
	if (nl > w->len[i] - 6)
		return false;
	return !nl || (nl == el && !memcmp(d + 4, e->name, el));
}

static void check_req(const struct nbdp_export *e, const struct nbdp_req *r)
{
	uint16_t tf = e->tflags | NBDP_TF_HAS_FLAGS, allowed = 0;
	enum nbdp_verdict v;
	const char *why;
	uint32_t err;

	v = nbdp_req_check(e, r, &err, &why);
	if (!why)
		die("no reason");
	switch (v) {
	case NBDP_REQ_DISC:
		if (r->type != NBDP_CMD_DISC)
			die("DISC for another command");
		return;
	case NBDP_REQ_CLOSE:
		if (r->type != NBDP_CMD_WRITE || r->length <= NBDP_PAYLOAD_MAX)
			die("CLOSE for an answerable request");
		return;
	case NBDP_REQ_ERROR:
		if (!why[0])
			die("error without a reason");
		switch (err) {
		case NBDP_EPERM:
		case NBDP_EINVAL:
		case NBDP_ENOSPC:
			return;
		default:
			die("unexpected error value");
		}
	case NBDP_REQ_OK:
		break;
	default:
		die("unknown verdict");
	}

	/* OK: restate the rules and check each. */
	if (tf & NBDP_TF_SEND_FUA)
		allowed |= NBDP_CMD_FLAG_FUA;
	switch (r->type) {
	case NBDP_CMD_READ:
		break;
	case NBDP_CMD_WRITE:
		if (tf & NBDP_TF_READ_ONLY)
			die("write OK on a read-only export");
		break;
	case NBDP_CMD_FLUSH:
		if (!(tf & NBDP_TF_SEND_FLUSH) || r->offset || r->length)
			die("bad flush OK");
		break;
	case NBDP_CMD_TRIM:
		if (!(tf & NBDP_TF_SEND_TRIM) || (tf & NBDP_TF_READ_ONLY))
			die("bad trim OK");
		break;
	case NBDP_CMD_WRITE_ZEROES:
		if (!(tf & NBDP_TF_SEND_WRITE_ZEROES) ||
		    (tf & NBDP_TF_READ_ONLY))
			die("bad write zeroes OK");
		allowed |= NBDP_CMD_FLAG_NO_HOLE;
		if (tf & NBDP_TF_SEND_FAST_ZERO)
			allowed |= NBDP_CMD_FLAG_FAST_ZERO;
		break;
	default:
		die("unknown command OK");
	}
	if (r->flags & ~allowed)
		die("invalid flags OK");
	if (r->type == NBDP_CMD_FLUSH)
		return;
	if (!r->length || r->offset > e->size ||
	    r->length > e->size - r->offset)
		die("out-of-range request OK");
	if (r->offset % e->min_block || r->length % e->min_block)
		die("unaligned request OK");
	if ((r->type == NBDP_CMD_READ || r->type == NBDP_CMD_WRITE) &&
	    r->length > e->max_payload)
		die("request above max payload OK");
}

/* The transmission phase: requests back to back, write payloads skipped
 * as a server skips them. */
static void transmission(const struct nbdp_export *e, uint8_t *b, size_t len,
			 bool raw)
{
	uint8_t rep[NBDP_REPLY_SIZE];
	struct nbdp_req r;
	size_t off = 0;

	while (len - off >= NBDP_REQ_SIZE) {
		if (!raw)
			p32(b + off, NBDP_REQUEST_MAGIC);
		if (nbdp_req_decode(b + off, &r)) {
			if (g32(b + off) == NBDP_REQUEST_MAGIC)
				die("good magic refused");
			return;
		}
		check_req(e, &r);
		nbdp_reply_encode(rep, NBDP_EIO, r.cookie);
		if (g32(rep) != NBDP_SIMPLE_REPLY_MAGIC ||
		    g64(rep + 8) != r.cookie || g32(rep + 4) != NBDP_EIO)
			die("reply encoding");
		off += NBDP_REQ_SIZE;
		if (nbdp_req_payload(&r) > len - off)
			return;
		off += nbdp_req_payload(&r);
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_level = LOG_LVL_ERR;
	report_fd = dup(2);
	if (report_fd < 0)
		report_fd = 2;
	return 0;
}

static const size_t chunk_sizes[8] = { 1, 2, 3, 7, 16, 20, 509, SIZE_MAX };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct walk w;
	struct out_check oc = { 0 };
	struct nbdp_export e;
	enum nbdp_hs_step step = NBDP_HS_SEND;
	size_t hlen, len, pos = 0, avail = 0, used, n, chunk;
	bool raw, byte_sends;
	struct nbdp_hs *hs;
	const uint8_t *o;
	uint8_t *b;

	if (size < 3)
		return 0;
	raw = data[0] & 1;
	chunk = chunk_sizes[(data[0] >> 1) & 7];
	byte_sends = data[0] & 0x10;
	e = fz_export(data[0] & 0x20);
	hlen = g16(data + 1);
	len = size - 3;
	if (hlen > len)
		hlen = len;
	b = malloc(len ? len : 1);
	if (!b)
		return 0;
	memcpy(b, data + 3, len);
	if (!raw) {
		walk_stream(b, hlen, &w);
		for (unsigned int i = 0; i < w.n; i++)
			p64(b + w.data[i] - 16, NBDP_OPTS_MAGIC);
		/* A header cut short by the end of H gets its magic too. */
		if (w.n < MAX_OPTS) {
			size_t at = w.n ? w.end[w.n - 1] : 4;

			if (at + 8 <= hlen)
				p64(b + at, NBDP_OPTS_MAGIC);
		}
	}
	walk_stream(b, len, &w);

	hs = nbdp_hs_new(&e);
	if (!hs)
		die("nbdp_hs_new");
	for (;;) {
		/* Send what the last step produced. */
		o = nbdp_hs_out(hs, &n);
		check_out(o, n, &w, &e, &oc, step == NBDP_HS_DONE);
		while (n) {
			size_t k = byte_sends ? 1 : n;

			nbdp_hs_out_done(hs, k);
			nbdp_hs_out(hs, &n);
		}
		if (step == NBDP_HS_DONE || step == NBDP_HS_ABORT ||
		    step == NBDP_HS_CLOSE)
			break;
		if (pos == avail) {
			if (avail == len)
				break;
			avail = chunk < len - avail ? avail + chunk : len;
		}
		step = nbdp_hs_feed(hs, b + pos, avail - pos, &used);
		if (used > avail - pos)
			die("consumed more than given");
		nbdp_hs_out(hs, &n);
		if (step == NBDP_HS_NEED_INPUT && (used != avail - pos || n))
			die("NEED_INPUT with input left or output pending");
		if (step == NBDP_HS_SEND && !n)
			die("SEND without output");
		pos += used;
	}

	switch (step) {
	case NBDP_HS_DONE: {
		const struct nbdp_hs_result *res = nbdp_hs_result(hs);
		int i = option_ending_at(&w, pos);

		if (!res || nbdp_hs_reason(hs)[0])
			die("DONE without a result");
		if (i < 0)
			die("DONE inside an option");
		if (e.refuse)
			die("DONE on a refusing export");
		if (!names_export(&w, (unsigned int)i, b, &e))
			die("DONE for another export");
		if (w.opt[i] == NBDP_OPT_EXPORT_NAME) {
			if (!oc.export_reply || res->option != w.opt[i])
				die("EXPORT_NAME done without its answer");
		} else if (w.opt[i] == NBDP_OPT_GO) {
			if (oc.last_type != NBDP_REP_ACK ||
			    oc.last_opt != NBDP_OPT_GO ||
			    oc.prev_type != NBDP_REP_INFO ||
			    res->option != NBDP_OPT_GO)
				die("GO done without INFO + ACK");
		} else {
			die("DONE after neither EXPORT_NAME nor GO");
		}
		if (nbdp_hs_feed(hs, b, len, &used) != NBDP_HS_DONE || used)
			die("DONE is not final");
		transmission(&e, b + pos, len - pos, raw);
		break;
	}
	case NBDP_HS_ABORT: {
		int i = option_ending_at(&w, pos);

		if (i < 0 || w.opt[i] != NBDP_OPT_ABORT ||
		    oc.last_type != NBDP_REP_ACK ||
		    oc.last_opt != NBDP_OPT_ABORT)
			die("ABORT without NBD_OPT_ABORT + ACK");
		if (!nbdp_hs_reason(hs)[0] || nbdp_hs_result(hs))
			die("ABORT without a reason, or with a result");
		break;
	}
	case NBDP_HS_CLOSE:
		if (!nbdp_hs_reason(hs)[0] || nbdp_hs_result(hs))
			die("CLOSE without a reason, or with a result");
		if (nbdp_hs_feed(hs, b, len, &used) != NBDP_HS_CLOSE || used)
			die("CLOSE is not final");
		break;
	default:
		if (nbdp_hs_result(hs) || nbdp_hs_reason(hs)[0])
			die("unfinished handshake with a result or reason");
		break;
	}
	nbdp_hs_free(hs);
	free(b);
	return 0;
}

#else /* FUZZ_NBDP_SEEDS */

static uint8_t buf[1u << 16];
static size_t blen;

static void opt(uint32_t o, const void *d, uint32_t l)
{
	p64(buf + blen, NBDP_OPTS_MAGIC);
	p32(buf + blen + 8, o);
	p32(buf + blen + 12, l);
	if (l)
		memcpy(buf + blen + 16, d, l);
	blen += 16 + l;
}

static void go(uint32_t o, const char *name, unsigned int ninfo)
{
	uint8_t d[128];
	uint32_t nl = (uint32_t)strlen(name);

	p32(d, nl);
	memcpy(d + 4, name, nl);
	p16(d + 4 + nl, (uint16_t)ninfo);
	for (unsigned int i = 0; i < ninfo; i++)
		p16(d + 6 + nl + 2 * i, (uint16_t)(3 - i));
	opt(o, d, 6 + nl + 2 * ninfo);
}

static void req(uint16_t type, uint16_t flags, uint64_t off, uint32_t len)
{
	struct nbdp_req r = { flags, type, 0x1234 + blen, off, len };

	nbdp_req_encode(&r, buf + blen);
	blen += NBDP_REQ_SIZE;
	if (type == NBDP_CMD_WRITE) {
		memset(buf + blen, 0x5a, len);
		blen += len;
	}
}

static void start(uint8_t mode)
{
	buf[0] = mode;
	blen = 3;
	p32(buf + blen, NBDP_FLAG_C_FIXED_NEWSTYLE | NBDP_FLAG_C_NO_ZEROES);
	blen += 4;
}

/* Close the handshake part (H = what was written so far). */
static void mark_h(void)
{
	p16(buf + 1, (uint16_t)(blen - 3));
}

static void requests(void)
{
	req(NBDP_CMD_WRITE, NBDP_CMD_FLAG_FUA, 4096, 4096);
	req(NBDP_CMD_READ, 0, 0, 8192);
	req(NBDP_CMD_FLUSH, 0, 0, 0);
	req(NBDP_CMD_TRIM, 0, 1 << 20, 1 << 20);
	req(NBDP_CMD_WRITE_ZEROES, NBDP_CMD_FLAG_NO_HOLE, 0, 65536);
	req(NBDP_CMD_READ, 0, FZ_SIZE - 512, 1024);
	req(NBDP_CMD_DISC, 0, 0, 0);
}

static void save(const char *dir, const char *name)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, blen, 1, f) != 1 || fclose(f)) {
		fprintf(stderr, "gen_nbdp: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

int main(int argc, char **argv)
{
	const char *dir;

	if (argc != 2) {
		fprintf(stderr, "usage: gen_nbdp DIR\n");
		return 2;
	}
	dir = argv[1];
	if (mkdir(dir, 0755) && errno != EEXIST) {
		fprintf(stderr, "gen_nbdp: %s: %s\n", dir, strerror(errno));
		return 1;
	}

	start(0x0e);
	go(NBDP_OPT_GO, "fz0", 3);
	mark_h();
	requests();
	save(dir, "go-full");

	start(0x02);
	opt(NBDP_OPT_STRUCTURED_REPLY, NULL, 0);
	go(NBDP_OPT_INFO, "fz0", 1);
	go(NBDP_OPT_GO, "", 0);
	mark_h();
	requests();
	save(dir, "info-go");

	start(0x0e);
	opt(NBDP_OPT_EXPORT_NAME, "fz0", 3);
	mark_h();
	requests();
	save(dir, "export-name");

	start(0x24);
	opt(NBDP_OPT_LIST, NULL, 0);
	go(NBDP_OPT_GO, "fz0", 2);
	go(NBDP_OPT_INFO, "fz0", 2);
	opt(NBDP_OPT_ABORT, NULL, 0);
	mark_h();
	save(dir, "list-refused-abort");

	start(0x1a);
	opt(NBDP_OPT_STARTTLS, NULL, 0);
	opt(0x4242, "junk data", 9);
	go(NBDP_OPT_GO, "other", 0);
	opt(NBDP_OPT_LIST, "x", 1);
	go(NBDP_OPT_GO, "fz0", 1);
	mark_h();
	requests();
	save(dir, "errors-then-go");
	return 0;
}

#endif
