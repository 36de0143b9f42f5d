// SPDX-License-Identifier: MIT
/*
 * Resource configuration: a full and a minimal file, the print/parse round
 * trip, files and includes, and a table of broken files in which every
 * row must fail with "test.conf:LINE: KEY: " and say what was wrong.
 */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cfg.h"
#include "proto.h"
#include "util.h"

/* cfg_resource is ~45 KiB: keep it off the stack. */
static struct cfg_resource res, res2;
static char err[1024];

static int load(const char *text)
{
	return cfg_load_string(text, "test.conf", &res, err, sizeof(err));
}

static void must_load(const char *text)
{
	int ret = load(text);

	if (ret)
		fail_msg("load failed (%d): %s\n--- text:\n%s", ret, err, text);
}

static const char full_text[] =
	"# every key, none at its default\n"
	"resource = \"data-1\";\n"
	"protocol = \"A\";\n"
	"transport = \"rdma\";\n"
	"secret = \"correct horse battery staple\";\n"
	"data-digest = \"sha256\";\n"
	"connect-timeout = 2000;\n"
	"ping-interval = 500;\n"
	"reconnect-min = 200;\n"
	"reconnect-max = 60000;\n"
	"sndbuf-size = \"8M\";\n"
	"rcvbuf-size = \"16M\";\n"
	"resync-rate = \"1G\";\n"
	"resync-min-rate = \"16MiB\";\n"
	"csums-alg = \"crc32c\";\n"
	"verify-alg = \"sha256\";\n"
	"bitmap-granularity = \"64K\";\n"
	"al-extents = 3389;\n"
	"io-engine = \"libaio\";\n"
	"queues = 4;\n"
	"queue-depth = 256;\n"
	"max-io = 1048576;\n"
	"logical-block-size = 4096;\n"
	"physical-block-size = \"64K\";\n"
	"discard = false;\n"
	"after-sb-0pri = \"discard-zero-changes\";\n"
	"after-sb-1pri = \"discard-younger-primary\";\n"
	"fencing = \"suspend-io\";\n"
	"on-io-error = \"pass-on\";\n"
	"meta-disk = \"/dev/vdc\";\n"
	"ublk-id = 7;\n"
	"handlers = {\n"
	"  split-brain = \"/usr/lib/duet/sb.sh\";\n"
	"  fence-peer = \"/usr/lib/duet/fence.sh\";\n"
	"  before-resync-target = \"/usr/lib/duet/snap.sh\";\n"
	"  after-resync-target = \"/usr/lib/duet/unsnap.sh\";\n"
	"  local-io-error = \"/usr/lib/duet/ioerr.sh\";\n"
	"};\n"
	"nodes = (\n"
	"  { name = \"alpha\"; id = 3; address = \"10.0.0.1:7790\";\n"
	"    disk = \"/dev/vdb\"; nbd-listen = \"unix:/run/duet/d1.nbd\"; },\n"
	"  { name = \"beta\"; id = 17; address = \"[fd00:0::2]\";\n"
	"    disk = \"/dev/sdb\"; meta-disk = \"internal\"; ublk-id = 9;\n"
	"    nbd-listen = \"0.0.0.0:10810\"; }\n"
	");\n";

static void test_full(void **state)
{
	const struct cfg_node *a = &res.nodes[0], *b = &res.nodes[1];

	(void)state;
	must_load(full_text);
	assert_string_equal(res.file, "test.conf");
	assert_string_equal(res.name, "data-1");
	assert_int_equal(res.protocol, 'A');
	assert_int_equal(res.transport, CFG_XPORT_RDMA);
	assert_string_equal(res.secret, "correct horse battery staple");
	assert_int_equal(res.data_digest, CFG_DIGEST_SHA256);
	assert_int_equal(res.connect_timeout_ms, 2000);
	assert_int_equal(res.ping_interval_ms, 500);
	assert_int_equal(res.reconnect_min_ms, 200);
	assert_int_equal(res.reconnect_max_ms, 60000);
	assert_int_equal(res.sndbuf_bytes, 8u << 20);
	assert_int_equal(res.rcvbuf_bytes, 16u << 20);
	assert_int_equal(res.resync_rate, 1ull << 30);
	assert_int_equal(res.resync_min_rate, 16ull << 20);
	assert_int_equal(res.csums_alg, CFG_DIGEST_CRC32C);
	assert_int_equal(res.verify_alg, CFG_DIGEST_SHA256);
	assert_int_equal(res.bm_granularity, 64 << 10);
	assert_int_equal(res.al_extents, 3389);
	assert_int_equal(res.io_engine, CFG_ENGINE_LIBAIO);
	assert_int_equal(res.queues, 4);
	assert_int_equal(res.queue_depth, 256);
	assert_int_equal(res.max_io_bytes, 1 << 20);
	assert_int_equal(res.logical_block_size, 4096);
	assert_int_equal(res.physical_block_size, 65536);
	assert_false(res.discard);
	assert_int_equal(res.after_sb_0pri, CFG_SB_DISCARD_ZERO_CHANGES);
	assert_int_equal(res.after_sb_1pri, CFG_SB_DISCARD_YOUNGER_PRIMARY);
	assert_int_equal(res.fencing, CFG_FENCE_SUSPEND_IO);
	assert_int_equal(res.on_io_error, CFG_IOERR_PASS_ON);
	assert_string_equal(res.handler_split_brain, "/usr/lib/duet/sb.sh");
	assert_string_equal(res.handler_fence_peer, "/usr/lib/duet/fence.sh");
	assert_string_equal(res.handler_before_resync_target,
			    "/usr/lib/duet/snap.sh");
	assert_string_equal(res.handler_after_resync_target,
			    "/usr/lib/duet/unsnap.sh");
	assert_string_equal(res.handler_local_io_error,
			    "/usr/lib/duet/ioerr.sh");
	assert_int_equal(res.nr_nodes, 2);
	assert_string_equal(a->name, "alpha");
	assert_int_equal(a->id, 3);
	assert_string_equal(a->address, "10.0.0.1:7790");
	assert_string_equal(a->disk, "/dev/vdb");
	/* top-level meta-disk and ublk-id are defaults for both nodes... */
	assert_string_equal(a->meta_disk, "/dev/vdc");
	assert_int_equal(a->ublk_id, 7);
	assert_string_equal(a->nbd_listen, "unix:/run/duet/d1.nbd");
	assert_string_equal(b->name, "beta");
	assert_int_equal(b->id, 17);
	/* default port added, IPv6 address in canonical form */
	assert_string_equal(b->address, "[fd00::2]:7789");
	assert_string_equal(b->disk, "/dev/sdb");
	/* ...which a node's own value overrides */
	assert_string_equal(b->meta_disk, "internal");
	assert_int_equal(b->ublk_id, 9);
	assert_string_equal(b->nbd_listen, "0.0.0.0:10810");
}

static const char minimal_text[] =
	"resource = \"r0\";\n"
	"nodes = ( { name = \"solo\"; id = 0; disk = \"/dev/vdb\"; } );\n";

static void test_minimal_defaults(void **state)
{
	const struct cfg_node *n = &res.nodes[0];

	(void)state;
	must_load(minimal_text);
	assert_string_equal(res.name, "r0");
	assert_int_equal(res.protocol, 'C');
	assert_int_equal(res.transport, CFG_XPORT_TCP);
	assert_string_equal(res.secret, "");
	assert_int_equal(res.data_digest, CFG_DIGEST_NONE);
	assert_int_equal(res.connect_timeout_ms, 10000);
	assert_int_equal(res.ping_interval_ms, 10000);
	assert_int_equal(res.reconnect_min_ms, 500);
	assert_int_equal(res.reconnect_max_ms, 30000);
	assert_int_equal(res.sndbuf_bytes, 0);
	assert_int_equal(res.rcvbuf_bytes, 0);
	assert_int_equal(res.resync_rate, 100ull << 20);
	assert_int_equal(res.resync_min_rate, 4ull << 20);
	assert_int_equal(res.csums_alg, CFG_DIGEST_NONE);
	assert_int_equal(res.verify_alg, CFG_DIGEST_CRC32C);
	assert_int_equal(cfg_wire_digest(CFG_DIGEST_NONE), PROTO_DIGEST_NONE);
	assert_int_equal(cfg_wire_digest(CFG_DIGEST_CRC32C), PROTO_DIGEST_CRC32C);
	assert_int_equal(cfg_wire_digest(CFG_DIGEST_SHA256), PROTO_DIGEST_SHA256);
	assert_int_equal(res.bm_granularity, 4096);
	assert_int_equal(res.al_extents, 1237);
	assert_int_equal(res.io_engine, CFG_ENGINE_URING);
	assert_int_equal(res.queues, 1);
	assert_int_equal(res.queue_depth, 64);
	assert_int_equal(res.max_io_bytes, 256 << 10);
	assert_int_equal(res.logical_block_size, 512);
	assert_int_equal(res.physical_block_size, 4096);
	assert_true(res.discard);
	assert_int_equal(res.after_sb_0pri, CFG_SB_DISCONNECT);
	assert_int_equal(res.after_sb_1pri, CFG_SB_DISCONNECT);
	assert_int_equal(res.fencing, CFG_FENCE_DONT_CARE);
	assert_int_equal(res.on_io_error, CFG_IOERR_DETACH);
	assert_string_equal(res.handler_split_brain, "");
	assert_string_equal(res.handler_fence_peer, "");
	assert_string_equal(res.handler_before_resync_target, "");
	assert_string_equal(res.handler_after_resync_target, "");
	assert_string_equal(res.handler_local_io_error, "");
	/* standalone: neither address nor secret is needed */
	assert_int_equal(res.nr_nodes, 1);
	assert_string_equal(n->name, "solo");
	assert_int_equal(n->id, 0);
	assert_string_equal(n->address, "");
	assert_string_equal(n->disk, "/dev/vdb");
	assert_string_equal(n->meta_disk, "internal");
	assert_int_equal(n->ublk_id, -1);
	assert_string_equal(n->nbd_listen, "");
	assert_null(cfg_peer_node(&res, n));
}

static void test_values(void **state)
{
	(void)state;
	/* sizes: suffixes, plain integers and 64-bit literals */
	must_load("resource = \"r0\"; resync-rate = \"1GiB\";\n"
		  "resync-min-rate = 4096;\n"
		  "nodes = ( { name = \"n\"; id = 0; disk = \"/d\"; } );");
	assert_int_equal(res.resync_rate, 1ull << 30);
	assert_int_equal(res.resync_min_rate, 4096);
	must_load("resource = \"r0\"; resync-rate = 107374182400L;\n"
		  "nodes = ( { name = \"n\"; id = 0; disk = \"/d\"; } );");
	assert_int_equal(res.resync_rate, 100ull << 30);
	/* enum names are case-insensitive, stored canonical */
	must_load("resource = \"r0\"; protocol = \"b\"; transport = \"RDMA\";\n"
		  "nodes = ( { name = \"n\"; id = 0; disk = \"/d\"; } );");
	assert_int_equal(res.protocol, 'B');
	assert_int_equal(res.transport, CFG_XPORT_RDMA);
	/* host names are lower-cased; default ports for both endpoints */
	must_load("resource = \"r0\"; secret = \"12345678\";\n"
		  "nodes = ( { name = \"a\"; id = 0; disk = \"/d\";\n"
		  "  address = \"Alpha.Example\"; nbd-listen = \"[::1]\"; },\n"
		  "{ name = \"b\"; id = 31; disk = \"/d\";"
		  "  address = \"beta.example:1\"; } );");
	assert_string_equal(res.nodes[0].address, "alpha.example:7789");
	assert_string_equal(res.nodes[0].nbd_listen, "[::1]:10809");
	assert_string_equal(res.nodes[1].address, "beta.example:1");
	assert_int_equal(res.nodes[1].id, 31);
	/* a literal above 2^31 inside a string or comment is not an integer */
	must_load("resource = \"r0\"; # 99999999999\n"
		  "secret = \"99999999999\"; /* 88888888888 */\n"
		  "nodes = ( { name = \"n\"; id = 0; disk = \"/d\"; } );");
	assert_string_equal(res.secret, "99999999999");
}

/* Print, parse the output again, and require an identical struct. */
static void round_trip(const char *text)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f;
	int ret;

	must_load(text);
	f = open_memstream(&out, &len);
	assert_non_null(f);
	cfg_print(&res, f);
	assert_int_equal(fclose(f), 0);
	ret = cfg_load_string(out, "test.conf", &res2, err, sizeof(err));
	if (ret)
		fail_msg("reparse failed: %s\n--- printed:\n%s", err, out);
	if (memcmp(&res, &res2, sizeof(res)))
		fail_msg("round trip changed the resource\n--- printed:\n%s",
			 out);
	free(out);
}

static void test_round_trip(void **state)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f;

	(void)state;
	round_trip(full_text);
	round_trip(minimal_text);
	/* strings that need escaping; sizes that have no exact suffix */
	round_trip("resource = \"r.0_x-y\";\n"
		   "secret = \"q\\\"uote\\\\back\\nnl\\ttab\\x01\\x7f end\";\n"
		   "resync-rate = 1000001; resync-min-rate = 0;\n"
		   "handlers = { split-brain = \"/opt/a \\\"b\\\"/c\"; };\n"
		   "nodes = ( { name = \"a\"; id = 0; disk = \"/x y\";"
		   " address = \"h:1\"; },\n"
		   "{ name = \"b\"; id = 1; disk = \"/d\"; address = \"h:2\"; } );");
	assert_string_equal(res.secret, "q\"uote\\back\nnl\ttab\x01\x7f end");

	/* the output shows sizes with suffixes and every default */
	must_load(minimal_text);
	f = open_memstream(&out, &len);
	assert_non_null(f);
	cfg_print(&res, f);
	assert_int_equal(fclose(f), 0);
	assert_non_null(strstr(out, "resync-rate = \"100M\";"));
	assert_non_null(strstr(out, "max-io = \"256K\";"));
	assert_non_null(strstr(out, "al-extents = 1237;"));
	assert_non_null(strstr(out, "ublk-id = -1;"));
	assert_non_null(strstr(out, "verify-alg = \"crc32c\";"));
	assert_non_null(strstr(out, "# secret is not set"));
	assert_non_null(strstr(out, "# address is not set"));
	free(out);
}

/* ------------------------------------------------------- broken files */

/*
 * The template: line 3 takes a top-level line, lines 5 and 6 the bodies of
 * the two nodes; rows that need another shape give the whole text.
 */
static const char tmpl[] =
	"resource = \"r0\";\n"
	"secret = \"0123456789abcdef\";\n"
	"%s\n"
	"nodes = (\n"
	"  { %s },\n"
	"  { %s }\n"
	");\n";
#define N0 "name = \"alpha\"; id = 0; address = \"10.0.0.1\"; disk = \"/d\";"
#define N1 "name = \"beta\"; id = 1; address = \"10.0.0.2\"; disk = \"/d\";"

struct bad {
	const char *top, *n0, *n1;	/* NULL: the template's */
	const char *text;		/* whole file instead */
	int line;			/* 0: the message has no line */
	const char *key, *msg;		/* prefix's key; text it contains */
};

#define TOP(t, k, m) { .top = t, .line = 3, .key = k, .msg = m }
#define ND0(b, k, m) { .n0 = b, .line = 5, .key = k, .msg = m }
#define ND1(b, k, m) { .n1 = b, .line = 6, .key = k, .msg = m }
#define TXT(t, l, k, m) { .text = t, .line = l, .key = k, .msg = m }

static void check_bad(const struct bad *rows, size_t n)
{
	char text[2048], want[160];
	int ret;

	for (size_t i = 0; i < n; i++) {
		const struct bad *b = &rows[i];

		if (b->text)
			snprintf(text, sizeof(text), "%s", b->text);
		else
			snprintf(text, sizeof(text), tmpl, b->top ? b->top : "",
				 b->n0 ? b->n0 : N0, b->n1 ? b->n1 : N1);
		if (b->line)
			snprintf(want, sizeof(want), "test.conf:%d: %s: ",
				 b->line, b->key);
		else
			snprintf(want, sizeof(want), "test.conf: %s: ", b->key);
		strcpy(err, "(nothing)");
		ret = load(text);
		if (ret != -EINVAL || strncmp(err, want, strlen(want)) ||
		    !strstr(err, b->msg))
			fail_msg("row %zu: got %d \"%s\"\n  want -EINVAL "
				 "\"%s...%s...\"\n--- text:\n%s",
				 i, ret, err, want, b->msg, text);
	}
}

static void test_template_is_valid(void **state)
{
	char text[1024];

	(void)state;
	snprintf(text, sizeof(text), tmpl, "", N0, N1);
	must_load(text);
	assert_int_equal(res.nr_nodes, 2);
}

static void test_bad_syntax(void **state)
{
	static const struct bad rows[] = {
		TXT("resource = \"r0\";\nnodes = (\n  { name = ; }\n);\n", 3,
		    "syntax error", "syntax error"),
		TXT("resource = \"r0\";\n\nresource = \"r1\";\n", 3,
		    "syntax error", "duplicate setting name"),
		/* libconfig blames the line where the string ran out */
		TXT("resource = \"r0\n", 2, "syntax error", "syntax error"),
		/* libconfig would silently truncate these */
		TOP("resync-rate = 10000000000;", "resync-rate", "too large"),
		TOP("max-io = 0x100000000;", "max-io", "too large"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

static void test_bad_unknown_keys(void **state)
{
	static const struct bad rows[] = {
		TOP("resync-rat = \"1M\";", "resync-rat",
		    "did you mean \"resync-rate\""),
		TOP("frobnicate = 1;", "frobnicate", "unknown key"),
		TOP("node = 1;", "node", "did you mean \"nodes\""),
		TOP("name = \"x\";", "name", "belongs inside a node"),
		TOP("fence-peer = \"/x\";", "fence-peer",
		    "belongs inside handlers"),
		TOP("handlers = { split-brian = \"/x\"; };",
		    "handlers.split-brian", "did you mean \"split-brain\""),
		TOP("handlers = { nodes = 1; };", "handlers.nodes",
		    "unknown key"),
		ND1(N1 " dsik = \"/d\";", "nodes[1].dsik",
		    "did you mean \"disk\""),
		ND0(N0 " secret = \"0123456789\";", "nodes[0].secret",
		    "unknown key"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

static void test_bad_types(void **state)
{
	static const struct bad rows[] = {
		TOP("protocol = 3;", "protocol", "expected a string"),
		TOP("transport = true;", "transport", "got a boolean"),
		TOP("queues = \"4\";", "queues", "expected an integer, got a string"),
		TOP("queues = 4.0;", "queues", "got a floating-point number"),
		TOP("al-extents = [ 1 ];", "al-extents", "got an array"),
		TOP("discard = \"yes\";", "discard", "expected true or false"),
		TOP("discard = 1;", "discard", "expected true or false"),
		TOP("resync-rate = true;", "resync-rate", "expected a size"),
		TOP("resync-rate = \"fast\";", "resync-rate",
		    "expected a size like"),
		TOP("resync-rate = \"10X\";", "resync-rate",
		    "expected a size like"),
		TOP("resync-rate = -5;", "resync-rate", "expected a size"),
		TOP("resync-rate = \"99999999999T\";", "resync-rate",
		    "size too large"),
		TXT("resource = \"r0\";\nsecret = 12345678;\n", 2, "secret",
		    "expected a string, got an integer"),
		TOP("disk = 5;", "disk", "expected a string"),
		TOP("handlers = \"/x\";", "handlers", "expected a group"),
		TOP("handlers = { split-brain = 5; };", "handlers.split-brain",
		    "expected a string"),
		TXT("resource = ( 1 );\n", 1, "resource", "got a list"),
		ND0("name = \"alpha\"; id = \"0\"; disk = \"/d\";",
		    "nodes[0].id", "expected an integer"),
		ND1(N1 " ublk-id = \"3\";", "nodes[1].ublk-id",
		    "expected an integer"),
		ND1("name = \"beta\"; id = 1; address = \"h\"; disk = { };",
		    "nodes[1].disk", "expected a string, got a group"),
		TXT("resource = \"r0\";\nnodes = { };\n", 2, "nodes",
		    "expected a list"),
		/* (libconfig dates a scalar by the token after it: keep
		 * the comma on the same line) */
		TXT("resource = \"r0\";\nnodes = (\n  \"alpha\",\n"
		    "  { name = \"b\"; }\n);\n", 3, "nodes[0]",
		    "expected a group"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

static void test_bad_ranges(void **state)
{
	static const struct bad rows[] = {
		TOP("connect-timeout = 99;", "connect-timeout", "100..600000, got 99"),
		TOP("connect-timeout = 600001;", "connect-timeout", "got 600001"),
		TOP("ping-interval = 99;", "ping-interval", "100..300000"),
		TOP("ping-interval = 300001;", "ping-interval", "100..300000"),
		TOP("reconnect-min = 99;", "reconnect-min", "100..3600000"),
		TOP("reconnect-max = 3600001;", "reconnect-max", "100..3600000"),
		TOP("sndbuf-size = \"129M\";", "sndbuf-size", "0..128M"),
		TOP("rcvbuf-size = \"1G\";", "rcvbuf-size", "0..128M, got 1G"),
		TOP("resync-rate = \"2K\";", "resync-rate", "4K..100G, got 2K"),
		TOP("resync-rate = \"101G\";", "resync-rate", "got 101G"),
		TOP("resync-min-rate = \"101G\";", "resync-min-rate", "0..100G"),
		TOP("bitmap-granularity = \"2K\";", "bitmap-granularity",
		    "4K..1M"),
		TOP("bitmap-granularity = \"2M\";", "bitmap-granularity",
		    "4K..1M"),
		TOP("bitmap-granularity = \"12K\";", "bitmap-granularity",
		    "power of two"),
		TOP("al-extents = 6;", "al-extents", "7..65534"),
		TOP("al-extents = 65535;", "al-extents", "7..65534"),
		TOP("queues = 0;", "queues", "1..16, got 0"),
		TOP("queues = 17;", "queues", "1..16, got 17"),
		TOP("queue-depth = 0;", "queue-depth", "1..4096"),
		TOP("queue-depth = 4097;", "queue-depth", "1..4096"),
		TOP("max-io = \"2K\";", "max-io", "4K..1M"),
		TOP("max-io = \"2M\";", "max-io", "4K..1M"),
		TOP("max-io = \"24K\";", "max-io", "power of two"),
		TOP("logical-block-size = 1024;", "logical-block-size",
		    "expected 512 or 4K, got 1K"),
		TOP("physical-block-size = 256;", "physical-block-size",
		    "512..64K"),
		TOP("physical-block-size = \"128K\";", "physical-block-size",
		    "512..64K"),
		TOP("physical-block-size = 3000;", "physical-block-size",
		    "power of two"),
		TOP("ublk-id = -2;", "ublk-id", "-1..1048575"),
		ND0(N0 " ublk-id = 1048576;", "nodes[0].ublk-id", "-1..1048575"),
		ND0("name = \"alpha\"; id = 32; disk = \"/d\";", "nodes[0].id",
		    "0..31, got 32"),
		ND1("name = \"beta\"; id = -1; disk = \"/d\";", "nodes[1].id",
		    "0..31, got -1"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

static void test_bad_enums(void **state)
{
	static const struct bad rows[] = {
		TOP("protocol = \"D\";", "protocol", "expected A, B or C, got \"D\""),
		TOP("protocol = \"CC\";", "protocol", "expected A, B or C"),
		TOP("transport = \"udp\";", "transport", "expected tcp or rdma"),
		TOP("data-digest = \"md5\";", "data-digest",
		    "expected none, crc32c or sha256, got \"md5\""),
		TOP("csums-alg = \"md5\";", "csums-alg", "none, crc32c or sha256"),
		TOP("verify-alg = \"crc\";", "verify-alg", "none, crc32c or sha256"),
		TOP("io-engine = \"sync\";", "io-engine", "io_uring or libaio"),
		TOP("after-sb-0pri = \"panic\";", "after-sb-0pri",
		    "disconnect, discard-zero-changes, discard-younger-primary or discard-least-changes"),
		TOP("after-sb-1pri = \"x\";", "after-sb-1pri", "got \"x\""),
		TOP("fencing = \"stonith\";", "fencing",
		    "dont-care or suspend-io"),
		TOP("on-io-error = \"ignore\";", "on-io-error",
		    "detach or pass-on"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

static void test_bad_required(void **state)
{
	static const struct bad rows[] = {
		TXT("nodes = ( { name = \"a\"; id = 0; disk = \"/d\"; } );\n", 0,
		    "resource", "missing"),
		TXT("resource = \"r0\";\n", 0, "nodes", "missing"),
		TXT("resource = \"r0\";\n"
		    "nodes = ( { name = \"a\"; id = 0; disk = \"/d\"; address = \"h\"; },\n"
		    "{ name = \"b\"; id = 1; disk = \"/d\"; address = \"g\"; } );\n",
		    0, "secret", "required when the resource has two nodes"),
		ND0("id = 0; address = \"10.0.0.1\"; disk = \"/d\";",
		    "nodes[0].name", "missing"),
		ND1("name = \"beta\"; address = \"10.0.0.2\"; disk = \"/d\";",
		    "nodes[1].id", "missing"),
		ND1("name = \"beta\"; id = 1; address = \"10.0.0.2\";",
		    "nodes[1].disk", "missing"),
		ND1("name = \"beta\"; id = 1; disk = \"/d\";",
		    "nodes[1].address", "required when the resource has two"),
		TXT("resource = \"r0\";\nnodes = ( );\n", 2, "nodes",
		    "expected 1 or 2 nodes, got none"),
		TXT("resource = \"r0\";\nsecret = \"12345678\";\nnodes = (\n"
		    " { name = \"a\"; id = 0; disk = \"/d\"; address = \"h\"; },\n"
		    " { name = \"b\"; id = 1; disk = \"/d\"; address = \"g\"; },\n"
		    " { name = \"c\"; id = 2; disk = \"/d\"; address = \"i\"; }\n"
		    ");\n",
		    6, "nodes", "expected 1 or 2 nodes, got 3"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

static void test_bad_duplicates(void **state)
{
	static const struct bad rows[] = {
		ND1("name = \"alpha\"; id = 1; address = \"10.0.0.2\"; disk = \"/d\";",
		    "nodes[1].name", "already the name of nodes[0]"),
		ND1("name = \"beta\"; id = 0; address = \"10.0.0.2\"; disk = \"/d\";",
		    "nodes[1].id", "already the id of nodes[0]"),
		/* the same endpoint spelled differently is still the same */
		ND1("name = \"beta\"; id = 1; address = \"10.0.0.1:7789\"; disk = \"/d\";",
		    "nodes[1].address", "already the address of nodes[0]"),
		{ .n0 = "name = \"alpha\"; id = 0; address = \"[fd00::1]\"; disk = \"/d\";",
		  .n1 = "name = \"beta\"; id = 1; address = \"[fd00:0:0::1]:7789\"; disk = \"/d\";",
		  .line = 6, .key = "nodes[1].address", .msg = "[fd00::1]:7789" },
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

#define ADDR1(a, m) \
	ND1("name = \"beta\"; id = 1; disk = \"/d\"; address = \"" a "\";", \
	    "nodes[1].address", m)

static void test_bad_addresses(void **state)
{
	static const struct bad rows[] = {
		ADDR1("10.0.0.2:0", "port number 1..65535"),
		ADDR1("10.0.0.2:65536", "port number 1..65535"),
		ADDR1("10.0.0.2:x", "port number"),
		ADDR1("10.0.0.2:", "port number"),
		ADDR1(":7789", "expected a host"),
		ADDR1("", "expected a host"),
		ADDR1("fd00::1:7789", "need brackets"),
		ADDR1("[fd00::1", "missing ]"),
		ADDR1("[fd00::1]7789", "expected :port after ]"),
		ADDR1("[zz::1]:7789", "not a valid IPv6 address"),
		ADDR1("[10.0.0.2]:7789", "not a valid IPv6 address"),
		ADDR1("300.1.1.1:7789", "not a valid IPv4 address"),
		ADDR1("bad_host:7789", "not a valid host name"),
		ADDR1("-host:7789", "not a valid host name"),
		ADDR1("host-.example", "not a valid host name"),
		ADDR1("a..b", "not a valid host name"),
		ND1(N1 " nbd-listen = \"unix:run/x.sock\";", "nodes[1].nbd-listen",
		    "unix:/absolute/path"),
		ND1(N1 " nbd-listen = \"localhost:0\";", "nodes[1].nbd-listen",
		    "port number"),
		TOP("nbd-listen = \"[::1\";", "nbd-listen", "missing ]"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

static void test_bad_names_paths(void **state)
{
	static const struct bad rows[] = {
		TXT("resource = \"-r0\";\n", 1, "resource",
		    "not starting with . or -, got \"-r0\""),
		TXT("resource = \".r0\";\n", 1, "resource", "got \".r0\""),
		TXT("resource = \"r 0\";\n", 1, "resource", "got \"r 0\""),
		TXT("resource = \"r/0\";\n", 1, "resource", "got \"r/0\""),
		TXT("resource = \"\";\n", 1, "resource", "expected 1 to 63"),
		TXT("resource = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		    "aaaaaaaaaaaaaaaaa\";\n", 1, "resource", "expected 1 to 63"),
		ND0("name = \"al/pha\"; id = 0; address = \"10.0.0.1\"; disk = \"/d\";",
		    "nodes[0].name", "got \"al/pha\""),
		ND0("name = \"alpha\"; id = 0; address = \"10.0.0.1\"; disk = \"dev/vdb\";",
		    "nodes[0].disk", "expected an absolute path, got \"dev/vdb\""),
		ND1(N1 " meta-disk = \"meta\";", "nodes[1].meta-disk",
		    "expected \"internal\" or an absolute path"),
		TOP("disk = \"vdb\";", "disk", "expected an absolute path"),
		TOP("meta-disk = \"\";", "meta-disk", "\"internal\" or an absolute"),
		TOP("handlers = { split-brain = \"notify.sh\"; };",
		    "handlers.split-brain", "expected an absolute path"),
		TOP("handlers = { fence-peer = \"fence\"; };", "handlers.fence-peer",
		    "absolute path"),
		TOP("handlers = { before-resync-target = \"~/x\"; };",
		    "handlers.before-resync-target", "absolute path"),
		TOP("handlers = { after-resync-target = \"x\"; };",
		    "handlers.after-resync-target", "absolute path"),
		TOP("handlers = { local-io-error = \"./x\"; };",
		    "handlers.local-io-error", "absolute path"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
}

static void test_bad_secret_and_cross(void **state)
{
	static const char long_secret[] =
		"resource = \"r0\";\nsecret = \""
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		"X\";\n";
	static const struct bad rows[] = {
		TXT("resource = \"r0\";\nsecret = \"1234567\";\n", 2, "secret",
		    "expected 8 to 256 characters, got 7"),
		TXT(long_secret, 2, "secret", "expected 8 to 256 characters, got 257"),
		TOP("resync-min-rate = \"200M\";", "resync-min-rate",
		    "must not exceed resync-rate"),
		/* blamed on resync-rate's line when min-rate is the default */
		TOP("resync-rate = \"1M\";", "resync-min-rate",
		    "must not exceed resync-rate"),
		TOP("reconnect-min = 40000;", "reconnect-min",
		    "must not exceed reconnect-max"),
		TOP("reconnect-max = 400;", "reconnect-min",
		    "must not exceed reconnect-max"),
		TOP("logical-block-size = \"4K\"; physical-block-size = 512;",
		    "physical-block-size", "at least logical-block-size"),
	};

	(void)state;
	check_bad(rows, ARRAY_SIZE(rows));
	/* at the bounds the secret is fine */
	must_load("resource = \"r0\"; secret = \"12345678\";\n"
		  "nodes = ( { name = \"n\"; id = 0; disk = \"/d\"; } );");
}

/* ------------------------------------------------------------ files */

struct tmpdir {
	char dir[64];
	char path[160];
};

static void put_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static int dir_setup(void **state)
{
	struct tmpdir *t = calloc(1, sizeof(*t));

	if (!t)
		return -1;
	strcpy(t->dir, "/tmp/duet-cfg-XXXXXX");
	if (!mkdtemp(t->dir))
		return -1;
	*state = t;
	return 0;
}

static int dir_teardown(void **state)
{
	struct tmpdir *t = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	if (system(cmd))
		return -1;
	free(t);
	return 0;
}

static void test_load_file(void **state)
{
	struct tmpdir *t = *state;
	char path[160], inc[160], want[400], cwd[PATH_MAX];

	snprintf(path, sizeof(path), "%s/r0.conf", t->dir);
	snprintf(inc, sizeof(inc), "%s/common.conf", t->dir);
	assert_int_equal(cfg_load_file(path, &res, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));

	/* @include is resolved next to the file, whatever the cwd is */
	put_file(inc, "secret = \"shared by all\";\nresync-rate = \"1G\";\n");
	put_file(path, "resource = \"r0\";\n@include \"common.conf\"\n"
		       "nodes = ( { name = \"a\"; id = 0; disk = \"/d\"; } );\n");
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir("/"), 0);
	assert_int_equal(cfg_load_file(path, &res, err, sizeof(err)), 0);
	assert_int_equal(chdir(cwd), 0);
	assert_string_equal(res.file, path);
	assert_string_equal(res.secret, "shared by all");
	assert_int_equal(res.resync_rate, 1ull << 30);

	/* errors inside the included file name that file and its line */
	put_file(inc, "secret = \"shared by all\";\nqueues = 99;\n");
	assert_int_equal(cfg_load_file(path, &res, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: queues: ", inc);
	if (strncmp(err, want, strlen(want)))
		fail_msg("got \"%s\", want \"%s...\"", err, want);
	put_file(inc, "\nqueues = ;\n");
	assert_int_equal(cfg_load_file(path, &res, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: syntax error: ", inc);
	if (strncmp(err, want, strlen(want)))
		fail_msg("got \"%s\", want \"%s...\"", err, want);
	put_file(path, "resource = \"r0\";\nqueues = 0;\n");
	assert_int_equal(cfg_load_file(path, &res, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:2: queues: ", path);
	if (strncmp(err, want, strlen(want)))
		fail_msg("got \"%s\", want \"%s...\"", err, want);
}

static void test_example_file(void **state)
{
	int ret;

	(void)state;
	ret = cfg_load_file("docs/examples/r0.conf", &res, err, sizeof(err));
	if (ret == -ENOENT)
		skip(); /* run from elsewhere than the repository root */
	if (ret)
		fail_msg("docs/examples/r0.conf: %s", err);
	assert_string_equal(res.name, "r0");
	assert_int_equal(res.nr_nodes, 2);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	size_t n;

	if (!f)
		return NULL;
	buf = calloc(1, 1 << 16);
	assert_non_null(buf);
	n = fread(buf, 1, (1 << 16) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

/*
 * docs/configuration.md has a table row "| `key` | ... | yes/no |" for every
 * key cfg_print prints, and its last column agrees with cfg_key_adjustable.
 */
static void test_docs_cover_every_key(void **state)
{
	char *doc = slurp("docs/configuration.md"), *out = NULL, *line, *save;
	char key[96], row[128];
	bool in_handlers = false;
	size_t len = 0, nkeys = 0;
	FILE *f;

	(void)state;
	if (!doc)
		skip(); /* run from elsewhere than the repository root */
	must_load(full_text);
	f = open_memstream(&out, &len);
	assert_non_null(f);
	cfg_print(&res, f);
	assert_int_equal(fclose(f), 0);
	for (line = strtok_r(out, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		const char *p = line + strspn(line, "\t"), *hit, *eol;
		size_t n = strcspn(p, " ");

		if (!strncmp(p, "handlers = {", 12))
			in_handlers = true;
		if (!strncmp(p, "};", 2))
			in_handlers = false;
		if (*p == '#' || !strstr(p, " = ") || p[n + 3] == '{' ||
		    p[n + 3] == '(')
			continue;
		snprintf(key, sizeof(key), "%s%.*s",
			 in_handlers ? "handlers." : "", (int)n, p);
		snprintf(row, sizeof(row), "\n| `%s` |", key);
		hit = strstr(doc, row);
		if (!hit)
			fail_msg("docs/configuration.md has no row for %s", key);
		eol = strchr(hit + 1, '\n');
		assert_non_null(eol);
		while (eol[-1] == ' ' || eol[-1] == '|')
			eol--;
		while (eol[-1] != '|')
			eol--;
		if ((eol[1] == 'y') != cfg_key_adjustable(key))
			fail_msg("%s: the docs say adjustable \"%.3s\"", key,
				 eol + 1);
		nkeys++;
	}
	assert_int_equal(nkeys, 28 + 5 + 2 * 7); /* top, handlers, nodes */
	free(out);
	free(doc);
}

static void test_resource_path(void **state)
{
	struct tmpdir *t = *state;
	char path[160], want[160], small[8];
	int ret;

	snprintf(want, sizeof(want), "%s/r1.conf", t->dir);
	assert_int_equal(cfg_resource_path(t->dir, "r1", path, sizeof(path)),
			 -ENOENT);
	assert_string_equal(path, want); /* filled for the error message */
	put_file(want, "");
	assert_int_equal(cfg_resource_path(t->dir, "r1", path, sizeof(path)), 0);
	assert_string_equal(path, want);
	assert_int_equal(cfg_resource_path(t->dir, "../r1", path, sizeof(path)),
			 -EINVAL);
	assert_int_equal(cfg_resource_path(t->dir, "", path, sizeof(path)),
			 -EINVAL);
	assert_int_equal(cfg_resource_path(t->dir, "-r1", path, sizeof(path)),
			 -EINVAL);
	assert_int_equal(cfg_resource_path(t->dir, "r1", small, sizeof(small)),
			 -ENAMETOOLONG);
	ret = cfg_resource_path(NULL, "r1", path, sizeof(path));
	assert_true(ret == 0 || ret == -ENOENT);
	assert_string_equal(path, CFG_DEFAULT_DIR "/r1.conf");
}

static void test_local_and_peer(void **state)
{
	const struct cfg_node *self;
	char host[256], text[512];

	(void)state;
	must_load("resource = \"r0\"; secret = \"12345678\";\n"
		  "nodes = ( { name = \"alpha\"; id = 0; disk = \"/d\"; address = \"a\"; },\n"
		  "{ name = \"beta\"; id = 1; disk = \"/d\"; address = \"b\"; } );");
	self = cfg_local_node(&res, "beta", err, sizeof(err));
	assert_ptr_equal(self, &res.nodes[1]);
	assert_ptr_equal(cfg_peer_node(&res, self), &res.nodes[0]);
	assert_ptr_equal(cfg_peer_node(&res, &res.nodes[0]), &res.nodes[1]);
	assert_null(cfg_peer_node(&res, &res2.nodes[0]));

	assert_null(cfg_local_node(&res, "gamma", err, sizeof(err)));
	assert_non_null(strstr(err, "test.conf"));
	assert_non_null(strstr(err, "\"gamma\""));
	assert_non_null(strstr(err, "alpha, beta"));

	/* NULL: the host name decides */
	assert_int_equal(gethostname(host, sizeof(host)), 0);
	snprintf(text, sizeof(text),
		 "resource = \"r0\";\n"
		 "nodes = ( { name = \"%s\"; id = 0; disk = \"/d\"; } );", host);
	if (load(text))
		skip(); /* the host name is not a valid node name */
	assert_ptr_equal(cfg_local_node(&res, NULL, err, sizeof(err)),
			 &res.nodes[0]);
	must_load("resource = \"r0\";\n"
		  "nodes = ( { name = \"not-this-host\"; id = 0; disk = \"/d\"; } );");
	assert_null(cfg_local_node(&res, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, host));
	assert_non_null(strstr(err, "not-this-host"));
}

static void test_names_and_adjustable(void **state)
{
	(void)state;
	assert_string_equal(cfg_digest_name(CFG_DIGEST_NONE), "none");
	assert_string_equal(cfg_digest_name(CFG_DIGEST_CRC32C), "crc32c");
	assert_string_equal(cfg_digest_name(CFG_DIGEST_SHA256), "sha256");
	assert_string_equal(cfg_digest_name((enum cfg_digest)3), "?");
	assert_string_equal(cfg_sb_policy_name(CFG_SB_DISCARD_LEAST_CHANGES),
			    "discard-least-changes");
	assert_string_equal(cfg_sb_policy_name((enum cfg_sb_policy)-1), "?");

	assert_true(cfg_key_adjustable("resync-rate"));
	assert_true(cfg_key_adjustable("after-sb-0pri"));
	assert_true(cfg_key_adjustable("handlers.split-brain"));
	assert_false(cfg_key_adjustable("protocol"));
	assert_false(cfg_key_adjustable("bitmap-granularity"));
	assert_false(cfg_key_adjustable("disk"));
	assert_false(cfg_key_adjustable("split-brain"));
	assert_false(cfg_key_adjustable("no-such-key"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_minimal_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_template_is_valid),
		cmocka_unit_test(test_bad_syntax),
		cmocka_unit_test(test_bad_unknown_keys),
		cmocka_unit_test(test_bad_types),
		cmocka_unit_test(test_bad_ranges),
		cmocka_unit_test(test_bad_enums),
		cmocka_unit_test(test_bad_required),
		cmocka_unit_test(test_bad_duplicates),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_bad_names_paths),
		cmocka_unit_test(test_bad_secret_and_cross),
		cmocka_unit_test_setup_teardown(test_load_file, dir_setup,
						dir_teardown),
		cmocka_unit_test(test_example_file),
		cmocka_unit_test(test_docs_cover_every_key),
		cmocka_unit_test_setup_teardown(test_resource_path, dir_setup,
						dir_teardown),
		cmocka_unit_test(test_local_and_peer),
		cmocka_unit_test(test_names_and_adjustable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
