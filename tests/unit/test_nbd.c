// SPDX-License-Identifier: MIT
/*
 * The NBD server (nbd_) on a real data path: a backing file with internal
 * metadata, the activity log (meta_), the I/O helper and both engines.
 *
 * A raw client written here (its own byte layout, not nbdp's) checks the
 * wire: handshake, writes that land in the backing file, reads, pipelined
 * requests answered by cookie, requests split into pieces, zeroes, FUA,
 * validation errors that keep the stream in step, and every way a bad
 * client is cut off while a good one goes on: garbage, a bad request
 * magic, an oversized write, a stalled handshake, too many clients. Then
 * real clients we did not write, when installed: nbdinfo, qemu-img
 * convert/compare, nbdcopy over several connections, fio --verify, and a
 * garbage client in the middle of a fio run.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <netinet/in.h>

#include "eng.h"
#include "log.h"
#include "mdio.h"
#include "meta.h"
#include "nbd.h"

#define DISK_BYTES (64u << 20)
#define PIECE (256u << 10)	/* path piece: requests above are split */
#define ZERO_PIECE (1u << 20)

/* NBD numbers, written out here rather than taken from nbdp.h. */
#define OPTS_MAGIC 0x49484156454f5054ull
#define REP_MAGIC 0x0003e889045565a9ull
#define REQ_MAGIC 0x25609513u
#define REPLY_MAGIC 0x67446698u
enum { CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE,
       CMD_WZ };
#define F_FUA 1u
#define F_NO_HOLE 2u
#define E_PERM 1
#define E_INVAL 22
#define E_NOSPC 28

struct fx {
	char dir[64];
	char disk[96];
	char sock[96];		/* the unix socket's path */
	char listen[104];	/* "unix:" + sock */
	char uri[192];
	struct mdio m;
	struct meta *mt;
	struct eng_helper *helper;
	int bfd;
	bool is_bdev;
	uint64_t size;		/* exported bytes */
	struct nbd_params p;
	struct nbd_server *s;
};

/* ------------------------------------------------------------ fixture */

static void fx_params(struct fx *f, const struct eng_ops *eng)
{
	memset(&f->p, 0, sizeof(f->p));
	f->p.listen = f->listen;
	f->p.name = "r0";
	f->p.description = "test export";
	f->p.size = f->size;
	f->p.min_block = 512;
	f->p.pref_block = 4096;
	f->p.piece_bytes = PIECE;
	f->p.zero_bytes = ZERO_PIECE;
	f->p.trim = true;
	f->p.path_id = 2;
	f->p.eng = eng;
	f->p.backing_fd = f->bfd;
	f->p.backing_is_bdev = f->is_bdev;
	f->p.helper = f->helper;
	f->p.meta = f->mt;
}

static int fx_setup(void **state, const struct eng_ops *eng)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct md_geometry g;
	char why[256];
	bool direct;
	int fd;

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/var/tmp/duet-test-nbd.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->disk, sizeof(f->disk), "%s/disk", f->dir);
	snprintf(f->sock, sizeof(f->sock), "%s/sock", f->dir);
	fd = open(f->disk, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, DISK_BYTES), 0);
	close(fd);
	assert_int_equal(mdio_open(&f->m, f->disk, NULL, 0, why, sizeof(why)),
			 0);
	memset(&g, 0, sizeof(g));
	g.placement = MD_INTERNAL;
	g.backing_bytes = f->m.data_dev_bytes;
	g.al_nr_slots = 7;
	g.al_extent_shift = 20;
	assert_int_equal(mdio_create(&f->m, &g, false, why, sizeof(why)), 0);
	assert_int_equal(mdio_load(&f->m, why, sizeof(why)), 0);
	f->size = f->m.sb.data_bytes;
	f->mt = meta_create(&f->m, 4, false);
	assert_non_null(f->mt);
	assert_int_equal(meta_start(f->mt), 0);
	f->helper = eng_helper_start();
	assert_non_null(f->helper);
	assert_int_equal(eng_open_backing(f->disk, &f->bfd, &f->is_bdev,
					  &direct), 0);

	snprintf(f->listen, sizeof(f->listen), "unix:%s", f->sock);
	fx_params(f, eng);
	f->s = nbd_start(&f->p, why, sizeof(why));
	if (!f->s)
		fail_msg("nbd_start: %s", why);
	snprintf(f->uri, sizeof(f->uri), "nbd+unix:///r0?socket=%s",
		 f->sock);
	*state = f;
	return 0;
}

static int setup_uring(void **state)
{
	return fx_setup(state, &eng_uring_ops);
}

static int setup_aio(void **state)
{
	return fx_setup(state, &eng_aio_ops);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char cmd[160];

	nbd_stop(f->s);
	/* the socket goes with the server */
	assert_int_equal(access(f->sock, F_OK), -1);
	eng_helper_stop(f->helper);
	meta_stop(f->mt);
	meta_destroy(f->mt);
	close(f->bfd);
	mdio_close(&f->m);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", f->dir);
	free(f);
	return 0;
}

/* ------------------------------------------------------- raw client */

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

static uint32_t r32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t r64(const uint8_t *p)
{
	return (uint64_t)r32(p) << 32 | r32(p + 4);
}

static int cl_connect(const struct fx *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 10 };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->sock);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void wr_all(int fd, const void *b, size_t n)
{
	const uint8_t *p = b;

	while (n) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL);

		assert_true(r > 0);
		p += r;
		n -= (size_t)r;
	}
}

/* Read exactly @n bytes; false on EOF or timeout. */
static bool rd_all(int fd, void *b, size_t n)
{
	uint8_t *p = b;

	while (n) {
		ssize_t r = recv(fd, p, n, 0);

		if (r <= 0)
			return false;
		p += r;
		n -= (size_t)r;
	}
	return true;
}

/* Does the server close @fd within @ms? (Data before the EOF is skipped.) */
static bool closed_within(int fd, int ms)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	uint8_t junk[4096];

	for (;;) {
		if (poll(&pf, 1, ms) != 1)
			return false;
		ssize_t r = recv(fd, junk, sizeof(junk), MSG_DONTWAIT);

		if (r == 0 || (r < 0 && errno == ECONNRESET))
			return true;
		if (r < 0 && errno != EAGAIN)
			return false;
	}
}

/* Greeting, fixed newstyle + no zeroes, GO "r0": a client in transmission. */
static int cl_open(const struct fx *f)
{
	uint8_t g[18], b[64], rep[20], data[64];
	int fd = cl_connect(f);
	bool acked = false;

	assert_true(rd_all(fd, g, sizeof(g)));
	assert_int_equal(r64(g), 0x4e42444d41474943ull);
	assert_int_equal(r64(g + 8), OPTS_MAGIC);
	w32(b, 3);
	w64(b + 4, OPTS_MAGIC);
	w32(b + 12, 7);			/* GO */
	w32(b + 16, 4 + 2 + 2);
	w32(b + 20, 2);
	memcpy(b + 24, "r0", 2);
	w16(b + 26, 0);
	wr_all(fd, b, 28);
	while (!acked) {
		uint32_t len;

		assert_true(rd_all(fd, rep, sizeof(rep)));
		assert_int_equal(r64(rep), REP_MAGIC);
		assert_int_equal(r32(rep + 8), 7);
		len = r32(rep + 16);
		assert_true(len <= sizeof(data));
		assert_true(rd_all(fd, data, len));
		if (r32(rep + 12) == 3 && len == 12)	/* INFO_EXPORT */
			assert_int_equal(r64(data + 2), f->size);
		acked = r32(rep + 12) == 1;
		if (!acked)
			assert_int_equal(r32(rep + 12), 3);
	}
	return fd;
}

static void cl_req(int fd, uint16_t type, uint16_t flags, uint64_t cookie,
		   uint64_t off, uint32_t len, const void *data)
{
	uint8_t h[28];

	w32(h, REQ_MAGIC);
	w16(h + 4, flags);
	w16(h + 6, type);
	w64(h + 8, cookie);
	w64(h + 16, off);
	w32(h + 24, len);
	wr_all(fd, h, sizeof(h));
	if (type == CMD_WRITE && data)
		wr_all(fd, data, len);
}

/* One simple reply; returns its error, checks the cookie. */
static uint32_t cl_reply(int fd, uint64_t cookie)
{
	uint8_t r[16];

	assert_true(rd_all(fd, r, sizeof(r)));
	assert_int_equal(r32(r), REPLY_MAGIC);
	assert_int_equal(r64(r + 8), cookie);
	return r32(r + 4);
}

static void fill(uint8_t *b, size_t n, unsigned int seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
}

/* The backing file, where the write must have landed. */
static void check_backing(const struct fx *f, uint64_t off, const void *want,
			  size_t n)
{
	uint8_t *got = malloc(n);
	int fd = open(f->disk, O_RDONLY);

	assert_non_null(got);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, got, n, (off_t)off), (ssize_t)n);
	assert_memory_equal(got, want, n);
	close(fd);
	free(got);
}

/* A counter of the path's I/O, from the status object. */
static json_int_t io_counter(const struct fx *f, const char *name)
{
	json_t *o = json_object();
	json_int_t v;

	nbd_status(f->s, o);
	v = json_integer_value(json_object_get(json_object_get(o, "io"), name));
	json_decref(o);
	return v;
}

/* ------------------------------------------------------------- tests */

static void test_write_read(void **state)
{
	struct fx *f = *state;
	uint8_t *w = malloc(65536), *r = malloc(65536);
	int fd = cl_open(f);

	fill(w, 65536, 1);
	cl_req(fd, CMD_WRITE, 0, 11, 1 << 20, 65536, w);
	assert_int_equal(cl_reply(fd, 11), 0);
	check_backing(f, 1 << 20, w, 65536);
	cl_req(fd, CMD_READ, 0, 12, 1 << 20, 65536, NULL);
	assert_int_equal(cl_reply(fd, 12), 0);
	assert_true(rd_all(fd, r, 65536));
	assert_memory_equal(r, w, 65536);

	/* FUA write, flush, the last sector of the export. */
	fill(w, 512, 2);
	cl_req(fd, CMD_WRITE, F_FUA, 13, f->size - 512, 512, w);
	assert_int_equal(cl_reply(fd, 13), 0);
	check_backing(f, f->size - 512, w, 512);
	cl_req(fd, CMD_FLUSH, 0, 14, 0, 0, NULL);
	assert_int_equal(cl_reply(fd, 14), 0);

	/* Clean end: DISC, and the server closes. */
	cl_req(fd, CMD_DISC, 0, 15, 0, 0, NULL);
	assert_true(closed_within(fd, 5000));
	close(fd);
	free(w);
	free(r);
}

static void test_pipelined(void **state)
{
	struct fx *f = *state;
	enum { N = 40 };
	uint8_t *w = malloc(N * 4096), *r = malloc(4096);
	bool seen[N] = { false };
	int fd = cl_open(f);

	/* All writes first, no reply read: more than a client may have in
	 * flight, so the server must hold back and resume on its own. */
	fill(w, N * 4096, 3);
	for (int i = 0; i < N; i++)
		cl_req(fd, CMD_WRITE, 0, 100 + (uint64_t)i, (uint64_t)i * 8192,
		       4096, w + i * 4096);
	for (int i = 0; i < N; i++) {
		uint8_t h[16];
		uint64_t c;

		assert_true(rd_all(fd, h, 16));
		assert_int_equal(r32(h), REPLY_MAGIC);
		assert_int_equal(r32(h + 4), 0);
		c = r64(h + 8);
		assert_true(c >= 100 && c < 100 + N && !seen[c - 100]);
		seen[c - 100] = true;
	}
	for (int i = 0; i < N; i++) {
		cl_req(fd, CMD_READ, 0, 500, (uint64_t)i * 8192, 4096, NULL);
		assert_int_equal(cl_reply(fd, 500), 0);
		assert_true(rd_all(fd, r, 4096));
		assert_memory_equal(r, w + i * 4096, 4096);
	}
	close(fd);
	free(w);
	free(r);
}

static void test_large_and_zeroes(void **state)
{
	struct fx *f = *state;
	const uint32_t big = 4u << 20;	/* 16 pieces */
	uint8_t *w = malloc(big), *r = malloc(big), *z = calloc(1, big);
	const uint64_t off = 8u << 20;
	int fd = cl_open(f);
	json_int_t flushes;

	fill(w, big, 4);
	cl_req(fd, CMD_WRITE, F_FUA, 1, off, big, w);
	assert_int_equal(cl_reply(fd, 1), 0);
	check_backing(f, off, w, big);
	cl_req(fd, CMD_READ, 0, 2, off, big, NULL);
	assert_int_equal(cl_reply(fd, 2), 0);
	assert_true(rd_all(fd, r, big));
	assert_memory_equal(r, w, big);

	/* Write zeroes over 3 MiB + a bit, unaligned to the pieces: the
	 * first half with NO_HOLE (real writes), the rest fallocate. */
	cl_req(fd, CMD_WZ, F_NO_HOLE, 3, off + 512, 2u << 20, NULL);
	assert_int_equal(cl_reply(fd, 3), 0);
	flushes = io_counter(f, "flushes");
	cl_req(fd, CMD_WZ, F_FUA, 4, off + 512 + (2u << 20), (1u << 20) + 4096,
	       NULL);
	assert_int_equal(cl_reply(fd, 4), 0);
	/* FUA on a write-zeroes: a FLUSH after its pieces */
	assert_int_equal(io_counter(f, "flushes"), flushes + 1);
	cl_req(fd, CMD_READ, 0, 5, off, big, NULL);
	assert_int_equal(cl_reply(fd, 5), 0);
	assert_true(rd_all(fd, r, big));
	assert_memory_equal(r, w, 512);
	assert_memory_equal(r + 512, z, (3u << 20) + 4096);
	assert_memory_equal(r + 512 + (3u << 20) + 4096,
			    w + 512 + (3u << 20) + 4096,
			    big - 512 - (3u << 20) - 4096);
	check_backing(f, off + 512, z, (3u << 20) + 4096);

	/* TRIM accepted (contents afterwards are unspecified). */
	cl_req(fd, CMD_TRIM, 0, 6, off, big, NULL);
	assert_int_equal(cl_reply(fd, 6), 0);

	/* A 32 MiB write (the largest payload, twice NBD_BIG_BUDGET) is
	 * admitted alone rather than waiting for room forever. */
	{
		const uint32_t huge = 32u << 20;
		uint8_t *h = malloc(huge);

		assert_non_null(h);
		fill(h, huge, 9);
		cl_req(fd, CMD_WRITE, 0, 7, 0, huge, h);
		assert_int_equal(cl_reply(fd, 7), 0);
		check_backing(f, 0, h, huge);
		free(h);
	}
	close(fd);
	free(w);
	free(r);
	free(z);
}

static void test_refused_requests(void **state)
{
	struct fx *f = *state;
	uint8_t *w = malloc(2u << 20), r[512];
	int fd = cl_open(f);
	struct nbd_stats st;

	fill(w, 2u << 20, 5);
	/* Each refused write's data is drained: the next request is read
	 * correctly. */
	cl_req(fd, CMD_WRITE, 0, 1, f->size - 512, 1024, w);
	assert_int_equal(cl_reply(fd, 1), E_NOSPC);
	cl_req(fd, CMD_WRITE, 0, 2, 100, 512, w);
	assert_int_equal(cl_reply(fd, 2), E_INVAL);
	cl_req(fd, CMD_WRITE, 1u << 7, 3, 0, 512, w);
	assert_int_equal(cl_reply(fd, 3), E_INVAL);
	cl_req(fd, CMD_READ, 0, 4, f->size, 512, NULL);
	assert_int_equal(cl_reply(fd, 4), E_INVAL);
	cl_req(fd, CMD_READ, 0, 5, 0, 0, NULL);
	assert_int_equal(cl_reply(fd, 5), E_INVAL);
	cl_req(fd, CMD_CACHE, 0, 6, 0, 512, NULL);
	assert_int_equal(cl_reply(fd, 6), E_INVAL);
	cl_req(fd, 99, 0, 7, 0, 512, NULL);
	assert_int_equal(cl_reply(fd, 7), E_INVAL);
	cl_req(fd, CMD_FLUSH, 0, 8, 512, 0, NULL);
	assert_int_equal(cl_reply(fd, 8), E_INVAL);
	/* and the stream is in step: */
	cl_req(fd, CMD_WRITE, 0, 9, 0, 512, w);
	assert_int_equal(cl_reply(fd, 9), 0);
	cl_req(fd, CMD_READ, 0, 10, 0, 512, NULL);
	assert_int_equal(cl_reply(fd, 10), 0);
	assert_true(rd_all(fd, r, 512));
	assert_memory_equal(r, w, 512);
	nbd_get_stats(f->s, &st);
	assert_int_equal(st.invalid, 8);
	assert_int_equal(st.dropped, 0);
	close(fd);
	free(w);
}

static void test_bad_clients(void **state)
{
	struct fx *f = *state;
	uint8_t w[4096], r[4096], g[18], b[64];
	int good = cl_open(f), bad;
	struct nbd_stats st;
	json_t *o;

	fill(w, sizeof(w), 6);
	/* garbage instead of options */
	bad = cl_connect(f);
	assert_true(rd_all(bad, g, sizeof(g)));
	{
		static const char junk[] = "\0\0\0\3GARBAGE-GARBAGE-GARBAGE";

		wr_all(bad, junk, sizeof(junk) - 1);
	}
	assert_true(closed_within(bad, 5000));
	close(bad);

	/* a bad request magic */
	bad = cl_open(f);
	memset(b, 0x5a, 28);
	wr_all(bad, b, 28);
	assert_true(closed_within(bad, 5000));
	close(bad);

	/* a write too large to drain */
	bad = cl_open(f);
	cl_req(bad, CMD_WRITE, 0, 1, 0, (32u << 20) + 512, NULL);
	assert_true(closed_within(bad, 5000));
	close(bad);

	/* the good client never noticed */
	cl_req(good, CMD_WRITE, 0, 1, 4096, 4096, w);
	assert_int_equal(cl_reply(good, 1), 0);
	cl_req(good, CMD_READ, 0, 2, 4096, 4096, NULL);
	assert_int_equal(cl_reply(good, 2), 0);
	assert_true(rd_all(good, r, 4096));
	assert_memory_equal(r, w, 4096);

	nbd_get_stats(f->s, &st);
	assert_int_equal(st.dropped, 3);
	assert_int_equal(st.handshakes, 3);
	o = json_object();
	nbd_status(f->s, o);
	assert_int_equal(json_integer_value(json_object_get(o, "dropped")), 3);
	assert_string_equal(json_string_value(json_object_get(o, "export")),
			    "r0");
	assert_true(json_integer_value(json_object_get(
			    json_object_get(o, "io"), "writes")) >= 1);
	json_decref(o);
	close(good);
}

static void test_stop_with_clients(void **state)
{
	struct fx *f = *state;
	int a = cl_open(f), b = cl_connect(f);
	uint8_t g[18];
	char why[256];

	assert_true(rd_all(b, g, sizeof(g)));
	/* a request in flight, its reply never read */
	cl_req(a, CMD_READ, 0, 1, 0, 65536, NULL);
	nbd_stop(f->s);
	f->s = NULL;
	assert_true(closed_within(a, 5000));
	assert_true(closed_within(b, 5000));
	close(a);
	close(b);
	/* the path is free again: a new server on the same slot */
	f->s = nbd_start(&f->p, why, sizeof(why));
	if (!f->s)
		fail_msg("restart: %s", why);
}

/* Wait up to 5 s until @n clients are connected. */
static bool wait_clients(const struct fx *f, uint64_t n)
{
	struct nbd_stats st;

	for (int i = 0; i < 500; i++) {
		nbd_get_stats(f->s, &st);
		if (st.clients == n)
			return true;
		usleep(10000);
	}
	return false;
}

/* A fixture of its own: limits small enough to reach. */
static void test_limits(void **state)
{
	struct fx *f = *state;
	int c[3], late;
	struct nbd_stats st;
	uint8_t g[18];
	char why[256];
	time_t t0;

	nbd_stop(f->s);
	f->p.max_conns = 2;
	f->p.hs_timeout_s = 1;
	f->s = nbd_start(&f->p, why, sizeof(why));
	if (!f->s)
		fail_msg("nbd_start: %s", why);

	c[0] = cl_open(f);
	c[1] = cl_connect(f);
	assert_true(rd_all(c[1], g, sizeof(g)));
	/* the third is closed at once */
	c[2] = cl_connect(f);
	assert_true(closed_within(c[2], 3000));
	/* the second never finishes its handshake: cut after ~1 s */
	t0 = time(NULL);
	assert_true(closed_within(c[1], 5000));
	assert_true(time(NULL) - t0 <= 4);
	/* which frees its place, once its last recv has come back */
	assert_true(wait_clients(f, 1));
	late = cl_open(f);
	nbd_get_stats(f->s, &st);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.dropped, 1);
	assert_int_equal(st.clients, 2);
	for (int i = 0; i < 3; i++)
		close(c[i]);
	close(late);
}

static void test_listen_strings(void **state)
{
	struct fx *f = *state;
	struct nbd_params p = f->p;
	struct nbd_server *s;
	char why[256], path[128];
	int fd;

	/* the fixture's socket is live: a second server must not take it */
	errno = 0;
	assert_null(nbd_start(&p, why, sizeof(why)));
	assert_int_equal(errno, EADDRINUSE);

	p.path_id = 3;
	p.listen = "unix:relative/sock";
	assert_null(nbd_start(&p, why, sizeof(why)));
	assert_int_equal(errno, EINVAL);

	/* never removes what is not a socket */
	snprintf(path, sizeof(path), "unix:%s/file", f->dir);
	fd = open(path + 5, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	p.listen = path;
	assert_null(nbd_start(&p, why, sizeof(why)));
	assert_int_equal(errno, EEXIST);
	assert_int_equal(access(path + 5, F_OK), 0);

	p.listen = "::1:10809";
	assert_null(nbd_start(&p, why, sizeof(why)));
	assert_int_equal(errno, EINVAL);
	assert_non_null(strstr(why, "brackets"));

	/* A port alone means the loopback address, never all of them. */
	static const char *const good[] = { "0", ":0", "127.0.0.1:0",
					     "localhost:0" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		p.listen = good[i];
		s = nbd_start(&p, why, sizeof(why));
		if (!s)
			fail_msg("%s: %s", good[i], why);
		assert_true(!strncmp(nbd_address(s), "127.0.0.1:", 10) ||
			    !strncmp(nbd_address(s), "[::1]:", 6));
		assert_true(strcmp(strrchr(nbd_address(s), ':'), ":0"));
		nbd_stop(s);
	}
	p.listen = "[::1]:0";
	s = nbd_start(&p, why, sizeof(why));
	if (s) {	/* hosts without IPv6 loopback skip this one */
		assert_true(!strncmp(nbd_address(s), "[::1]:", 6));
		nbd_stop(s);
	}
}

/* ------------------------------------------------- real NBD clients */

static bool have(const char *tool)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", tool);
	return !system(cmd);
}

/* Run a shell command, bounded in time; its exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st)) {
		fprintf(stderr, "command failed to run: %s\n", cmd);
		return -1;
	}
	if (WEXITSTATUS(st))
		fprintf(stderr, "exit %d: %s\n", WEXITSTATUS(st), cmd);
	return WEXITSTATUS(st);
}

static void test_nbdinfo(void **state)
{
	struct fx *f = *state;
	char out[160];

	if (!have("nbdinfo"))
		skip();
	snprintf(out, sizeof(out), "%s/info", f->dir);
	assert_int_equal(sh("timeout 30 nbdinfo --json '%s' > %s 2>&1", f->uri,
			    out), 0);
	assert_int_equal(sh("grep -q '\"export-size\": %llu' %s",
			    (unsigned long long)f->size, out),
			 0);
	assert_int_equal(sh("grep -q '\"can_multi_conn\": true' %s", out), 0);
	assert_int_equal(sh("grep -q '\"block_size_minimum\": 512' %s", out),
			 0);
	assert_int_equal(sh("timeout 30 nbdinfo --list '%s' | grep -q 'export=\"r0\"'",
			    f->uri),
			 0);
	/* another name: NBD_REP_ERR_UNKNOWN, which libnbd calls ENOENT */
	assert_int_equal(sh("timeout 30 nbdinfo 'nbd+unix:///nope?socket=%s' 2>&1 | grep -q 'No such file or directory'",
			    f->sock),
			 0);
}

static void test_qemu_img(void **state)
{
	struct fx *f = *state;

	if (!have("qemu-img"))
		skip();
	/* An image as large as the export, so that compare covers it all. */
	assert_int_equal(sh("head -c %llu /dev/urandom > %s/src.img",
			    (unsigned long long)f->size, f->dir),
			 0);
	assert_int_equal(sh("timeout 120 qemu-img convert -n -f raw -O raw %s/src.img '%s'",
			    f->dir, f->uri),
			 0);
	assert_int_equal(sh("timeout 120 qemu-img compare -q -f raw -F raw %s/src.img '%s'",
			    f->dir, f->uri),
			 0);
	/* the replica's data area holds the very bytes */
	assert_int_equal(sh("cmp -n %llu %s/src.img %s",
			    (unsigned long long)f->size, f->dir, f->disk),
			 0);
	/* and a compare that must fail does */
	assert_int_equal(sh("printf x | dd of=%s/src.img bs=1 seek=12345 conv=notrunc 2>/dev/null",
			    f->dir),
			 0);
	assert_int_not_equal(sh("timeout 120 qemu-img compare -q -f raw -F raw %s/src.img '%s'",
				f->dir, f->uri),
			     0);
}

static void test_nbdcopy_multi_conn(void **state)
{
	struct fx *f = *state;

	if (!have("nbdcopy"))
		skip();
	assert_int_equal(sh("head -c %llu /dev/urandom > %s/a.img",
			    (unsigned long long)f->size, f->dir),
			 0);
	assert_int_equal(sh("timeout 120 nbdcopy --connections=4 --requests=16 %s/a.img '%s'",
			    f->dir, f->uri),
			 0);
	assert_int_equal(sh("timeout 120 nbdcopy --connections=4 '%s' %s/b.img",
			    f->uri, f->dir),
			 0);
	assert_int_equal(sh("cmp %s/a.img %s/b.img", f->dir, f->dir), 0);
}

static bool fio_has_nbd(void)
{
	return have("fio") &&
	       !system("fio --enghelp=nbd >/dev/null 2>&1");
}

static void test_fio_verify(void **state)
{
	struct fx *f = *state;

	if (!fio_has_nbd())
		skip();
	assert_int_equal(sh("timeout 120 fio --name=verify --ioengine=nbd --uri='%s' --rw=randwrite --bsrange=4k-256k --size=24M --iodepth=16 --numjobs=1 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output=%s/fio.log",
			    f->uri, f->dir),
			 0);
	assert_int_equal(sh("grep -q 'err= 0' %s/fio.log", f->dir), 0);
}

/* A garbage client while fio runs: fio must not notice. */
static void test_fio_with_bad_client(void **state)
{
	struct fx *f = *state;
	pid_t pid;
	static const char junk[] = "\0\0\0\1this is not an option header";
	int st, bad;
	uint8_t g[18];
	char cmd[1024];

	if (!fio_has_nbd())
		skip();
	snprintf(cmd, sizeof(cmd),
		 "timeout 120 fio --name=busy --ioengine=nbd --uri='%s' --rw=randrw --bs=16k --size=16M --iodepth=8 --time_based --runtime=4 --verify=crc32c --verify_fatal=1 --verify_state_save=0 --output=%s/fio2.log",
		 f->uri, f->dir);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	usleep(500 * 1000);
	for (int i = 0; i < 5; i++) {
		bad = cl_connect(f);
		assert_true(rd_all(bad, g, sizeof(g)));
		wr_all(bad, junk, sizeof(junk) - 1);
		assert_true(closed_within(bad, 5000));
		close(bad);
		bad = cl_open(f);
		cl_req(bad, CMD_WRITE, 0, 1, 0, 0xffffffffu, NULL);
		assert_true(closed_within(bad, 5000));
		close(bad);
		usleep(200 * 1000);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(sh("grep -q 'err= 0' %s/fio2.log", f->dir), 0);
}

int main(void)
{
#define T(fn, eng) { #fn "/" #eng, fn, setup_##eng, teardown, NULL }
	const struct CMUnitTest tests[] = {
		T(test_write_read, uring),
		T(test_write_read, aio),
		T(test_pipelined, uring),
		T(test_pipelined, aio),
		T(test_large_and_zeroes, uring),
		T(test_large_and_zeroes, aio),
		T(test_refused_requests, uring),
		T(test_bad_clients, uring),
		T(test_stop_with_clients, uring),
		T(test_limits, uring),
		T(test_listen_strings, uring),
		T(test_nbdinfo, uring),
		T(test_qemu_img, uring),
		T(test_nbdcopy_multi_conn, uring),
		T(test_fio_verify, uring),
		T(test_fio_with_bad_client, aio),
	};
#undef T

	signal(SIGPIPE, SIG_IGN);
	log_level = LOG_LVL_WARN;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
