// SPDX-License-Identifier: MIT
/*
 * cfg — resource configuration.
 *
 * Every key is one row of a table (name, type, bounds, default, field,
 * whether `duetctl adjust` may change it live), so that parsing, defaults,
 * validation, printing and the documentation all follow from one place.
 * libconfig does the lexing; everything it accepts is then checked
 * against the tables, and every complaint names file, line and key.
 *
 * This file holds the tables and the checks they name for string values
 * (names, paths, endpoints), the queries on a loaded resource (its file,
 * the local and the peer node, which keys are adjustable), cfg_adjust and
 * cfg_print. The parser, from the text to a checked struct cfg_resource, is
 * in cfg_parse.c; what the two share is in cfg_int.h.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cfg_int.h"
#include "proto.h"
#include "util.h"

#define NBD_DEFAULT_PORT 10809	/* IANA's port for NBD */

#define RFIELD(m) offsetof(struct cfg_resource, m), \
		  sizeof(((struct cfg_resource *)0)->m)
#define NFIELD(m) offsetof(struct cfg_node, m), \
		  sizeof(((struct cfg_node *)0)->m)
#define KiB (1ll << 10)
#define MiB (1ll << 20)
#define GiB (1ll << 30)

static const char *const proto_names[] = { "A", "B", "C", NULL };
static const char *const xport_names[] = { "tcp", "rdma", NULL };
static const char *const engine_names[] = { "io_uring", "libaio", NULL };
static const char *const digest_names[] = { "none", "crc32c", "sha256", NULL };
static const char *const sb_names[] = { "disconnect", "discard-zero-changes",
					"discard-younger-primary",
					"discard-least-changes", NULL };
static const char *const fence_names[] = { "dont-care", "suspend-io", NULL };
static const char *const ioerr_names[] = { "detach", "pass-on", NULL };

static const char *check_name(const char *in, char *out, size_t len);
static const char *check_abs_path(const char *in, char *out, size_t len);
static const char *check_meta(const char *in, char *out, size_t len);
static const char *check_addr(const char *in, char *out, size_t len);
static const char *check_listen(const char *in, char *out, size_t len);
static const char *check_handler(const char *in, char *out, size_t len);

const struct key cfg_top_keys[] = {
	{ "resource", KT_STR, RFIELD(name), .check = check_name,
	  .flags = K_REQUIRED },
	/* replication: negotiated at connect, so not adjustable */
	{ "protocol", KT_PROTO, RFIELD(protocol), .def = 'C',
	  .names = proto_names },
	{ "transport", KT_ENUM, RFIELD(transport), .def = CFG_XPORT_TCP,
	  .names = xport_names },
	{ "secret", KT_STR, RFIELD(secret), CFG_SECRET_MIN, CFG_SECRET_MAX },
	{ "data-digest", KT_ENUM, RFIELD(data_digest), .names = digest_names },
	{ "connect-timeout", KT_INT, RFIELD(connect_timeout_ms), 100, 600000,
	  10000, .flags = K_ADJUST },
	{ "ping-interval", KT_INT, RFIELD(ping_interval_ms), 100, 300000,
	  10000, .flags = K_ADJUST },
	{ "reconnect-min", KT_INT, RFIELD(reconnect_min_ms), 100, 3600000,
	  500, .flags = K_ADJUST },
	{ "reconnect-max", KT_INT, RFIELD(reconnect_max_ms), 100, 3600000,
	  30000, .flags = K_ADJUST },
	/* set on the sockets as they are made */
	{ "sndbuf-size", KT_SIZE, RFIELD(sndbuf_bytes), 0, 128 * MiB, 0 },
	{ "rcvbuf-size", KT_SIZE, RFIELD(rcvbuf_bytes), 0, 128 * MiB, 0 },
	/* resync: read by the resync engine at each step */
	{ "resync-rate", KT_SIZE, RFIELD(resync_rate), 4 * KiB, 100 * GiB,
	  100 * MiB, .flags = K_ADJUST },
	{ "resync-min-rate", KT_SIZE, RFIELD(resync_min_rate), 0, 100 * GiB,
	  4 * MiB, .flags = K_ADJUST },
	{ "csums-alg", KT_ENUM, RFIELD(csums_alg), .def = CFG_DIGEST_NONE,
	  .names = digest_names, .flags = K_ADJUST },
	{ "verify-alg", KT_ENUM, RFIELD(verify_alg), .def = CFG_DIGEST_CRC32C,
	  .names = digest_names, .flags = K_ADJUST },
	/* metadata: the on-disk layout depends on these */
	{ "bitmap-granularity", KT_SIZE, RFIELD(bm_granularity), 4 * KiB,
	  1 * MiB, 4 * KiB, .flags = K_POW2 },
	{ "al-extents", KT_INT, RFIELD(al_extents), 7, 65534, 1237 },
	/* device: fixed when the ublk device is created */
	{ "io-engine", KT_ENUM, RFIELD(io_engine), .def = CFG_ENGINE_URING,
	  .names = engine_names },
	{ "queues", KT_INT, RFIELD(queues), 1, 16, 1 },
	{ "queue-depth", KT_INT, RFIELD(queue_depth), 1, 4096, 64 },
	{ "max-io", KT_SIZE, RFIELD(max_io_bytes), 4 * KiB, 1 * MiB, 256 * KiB,
	  .flags = K_POW2 },
	{ "logical-block-size", KT_SIZE, RFIELD(logical_block_size), 512, 4096,
	  512, .choices = true },
	{ "physical-block-size", KT_SIZE, RFIELD(physical_block_size), 512,
	  64 * KiB, 4096, .flags = K_POW2 },
	{ "discard", KT_BOOL, RFIELD(discard), .def = true },
	/* policies: consulted when the event happens */
	{ "after-sb-0pri", KT_ENUM, RFIELD(after_sb_0pri), .names = sb_names,
	  .flags = K_ADJUST },
	{ "after-sb-1pri", KT_ENUM, RFIELD(after_sb_1pri), .names = sb_names,
	  .flags = K_ADJUST },
	{ "fencing", KT_ENUM, RFIELD(fencing), .names = fence_names,
	  .flags = K_ADJUST },
	{ "on-io-error", KT_ENUM, RFIELD(on_io_error), .names = ioerr_names,
	  .flags = K_ADJUST },
};

/* Inside `handlers = { ... }`; an empty string means "no handler". */
const struct key cfg_handler_keys[] = {
	{ "split-brain", KT_STR, RFIELD(handler_split_brain),
	  .check = check_handler, .flags = K_ADJUST },
	{ "fence-peer", KT_STR, RFIELD(handler_fence_peer),
	  .check = check_handler, .flags = K_ADJUST },
	{ "before-resync-target", KT_STR,
	  RFIELD(handler_before_resync_target), .check = check_handler,
	  .flags = K_ADJUST },
	{ "after-resync-target", KT_STR, RFIELD(handler_after_resync_target),
	  .check = check_handler, .flags = K_ADJUST },
	{ "local-io-error", KT_STR, RFIELD(handler_local_io_error),
	  .check = check_handler, .flags = K_ADJUST },
};

const struct key cfg_node_keys[] = {
	{ "name", KT_STR, NFIELD(name), .check = check_name,
	  .flags = K_REQUIRED },
	{ "id", KT_INT, NFIELD(id), 0, 31, .flags = K_REQUIRED },
	{ "address", KT_STR, NFIELD(address), .check = check_addr },
	{ "disk", KT_STR, NFIELD(disk), .check = check_abs_path,
	  .flags = K_REQUIRED | K_NODE_DEFAULT },
	{ "meta-disk", KT_STR, NFIELD(meta_disk), .sdef = "internal",
	  .check = check_meta, .flags = K_NODE_DEFAULT },
	{ "ublk-id", KT_INT, NFIELD(ublk_id), -1, 1048575, -1,
	  .flags = K_NODE_DEFAULT },
	{ "nbd-listen", KT_STR, NFIELD(nbd_listen), .check = check_listen,
	  .flags = K_NODE_DEFAULT },
};

_Static_assert(ARRAY_SIZE(cfg_top_keys) == CFG_NR_TOP,
	       "CFG_NR_TOP in cfg_int.h must count cfg_top_keys");
_Static_assert(ARRAY_SIZE(cfg_handler_keys) == CFG_NR_HANDLER,
	       "CFG_NR_HANDLER in cfg_int.h must count cfg_handler_keys");
_Static_assert(ARRAY_SIZE(cfg_node_keys) == CFG_NR_NODE,
	       "CFG_NR_NODE in cfg_int.h must count cfg_node_keys");

const struct key *cfg_find_key(const struct key *t, size_t n,
			       const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(t[i].name, name))
			return &t[i];
	return NULL;
}

/* ---------------------------------------------------------------- checks */

static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n >= CFG_NAME_MAX || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("_.-", s[i]))
			return false;
	return true;
}

const char *cfg_copy_out(const char *in, char *out, size_t len)
{
	if (strlen(in) >= len)
		return "too long";
	strcpy(out, in);
	return NULL;
}

static const char *check_name(const char *in, char *out, size_t len)
{
	if (!valid_name(in))
		return "expected 1 to 63 of A-Z a-z 0-9 _ . -, not starting with . or -";
	return cfg_copy_out(in, out, len);
}

static const char *check_abs_path(const char *in, char *out, size_t len)
{
	if (in[0] != '/')
		return "expected an absolute path";
	return cfg_copy_out(in, out, len);
}

static const char *check_meta(const char *in, char *out, size_t len)
{
	if (strcmp(in, "internal") && in[0] != '/')
		return "expected \"internal\" or an absolute path";
	return cfg_copy_out(in, out, len);
}

static const char *check_handler(const char *in, char *out, size_t len)
{
	if (in[0] && in[0] != '/')
		return "expected an absolute path (or \"\" for none)";
	return cfg_copy_out(in, out, len);
}

static bool valid_hostname(const char *h)
{
	size_t label = 0, n = strlen(h);

	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i <= n; i++) {
		if (h[i] == '.' || !h[i]) {
			if (!label || h[i - 1] == '-')
				return false;
			label = 0;
		} else if (isalnum((unsigned char)h[i]) ||
			   (h[i] == '-' && label)) {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/*
 * "host[:port]" or "[v6addr][:port]" -> canonical "host:port" (numeric
 * addresses rewritten by inet_ntop, names lower-cased), so that two
 * spellings of one endpoint compare equal.
 */
static const char *parse_endpoint(const char *in, unsigned int def_port,
				  char *out, size_t len)
{
	char host[256], canon[INET6_ADDRSTRLEN];
	const char *port = NULL, *end;
	struct in6_addr a6;
	struct in_addr a4;
	uint64_t p = def_port;
	bool v6 = in[0] == '[';
	size_t hl;

	if (v6) {
		end = strchr(in, ']');
		if (!end)
			return "missing ] after the IPv6 address";
		in++;
		if (end[1] == ':')
			port = end + 2;
		else if (end[1])
			return "expected :port after ]";
	} else {
		end = strchr(in, ':');
		if (end && strchr(end + 1, ':'))
			return "IPv6 addresses need brackets, like [fd00::1]:7789";
		if (!end)
			end = in + strlen(in);
		else
			port = end + 1;
	}
	hl = end - in;
	if (hl == 0 || hl >= sizeof(host))
		return "expected a host before the port";
	memcpy(host, in, hl);
	host[hl] = '\0';
	if (port && util_parse_u64(port, 1, 65535, &p))
		return "expected a port number 1..65535";
	if (v6) {
		if (inet_pton(AF_INET6, host, &a6) != 1)
			return "not a valid IPv6 address";
		inet_ntop(AF_INET6, &a6, canon, sizeof(canon));
		snprintf(host, sizeof(host), "[%s]", canon);
	} else if (strspn(host, "0123456789.") == hl) {
		if (inet_pton(AF_INET, host, &a4) != 1)
			return "not a valid IPv4 address";
	} else if (!valid_hostname(host)) {
		return "not a valid host name";
	} else {
		for (size_t i = 0; i < hl; i++)
			host[i] = tolower((unsigned char)host[i]);
	}
	if ((size_t)snprintf(out, len, "%s:%u", host, (unsigned int)p) >= len)
		return "too long";
	return NULL;
}

static const char *check_addr(const char *in, char *out, size_t len)
{
	return parse_endpoint(in, CFG_DEFAULT_PORT, out, len);
}

/* "" (off), "unix:/abs/path" or an endpoint (default port 10809). */
static const char *check_listen(const char *in, char *out, size_t len)
{
	if (!in[0])
		return cfg_copy_out(in, out, len);
	if (!strncmp(in, "unix:", 5)) {
		if (in[5] != '/')
			return "expected unix:/absolute/path";
		return cfg_copy_out(in, out, len);
	}
	return parse_endpoint(in, NBD_DEFAULT_PORT, out, len);
}

/* ------------------------------------------------------------------ API */

int cfg_resource_path(const char *dir, const char *name, char *path,
		      size_t len)
{
	int n;

	if (!valid_name(name))
		return -EINVAL;
	n = snprintf(path, len, "%s/%s.conf", dir ? dir : CFG_DEFAULT_DIR,
		     name);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if (access(path, F_OK))
		return -errno;
	return 0;
}

const struct cfg_node *cfg_local_node(const struct cfg_resource *r,
				      const char *self_name, char *err,
				      size_t err_len)
{
	char host[256], names[CFG_MAX_NODES * (CFG_NAME_MAX + 2)] = "";
	size_t used = 0;

	if (!self_name) {
		if (gethostname(host, sizeof(host) - 1)) {
			cfg_seterr(err, err_len, "gethostname: %s",
				   strerror(errno));
			return NULL;
		}
		host[sizeof(host) - 1] = '\0';
		self_name = host;
	}
	for (uint32_t i = 0; i < r->nr_nodes; i++)
		if (!strcmp(r->nodes[i].name, self_name))
			return &r->nodes[i];
	/* A fully qualified host name matches a node named by its first label. */
	for (uint32_t i = 0; i < r->nr_nodes && self_name == host; i++) {
		size_t l = strlen(r->nodes[i].name);

		if (!strncmp(host, r->nodes[i].name, l) && host[l] == '.')
			return &r->nodes[i];
	}
	for (uint32_t i = 0; i < r->nr_nodes; i++)
		used += snprintf(names + used, sizeof(names) - used, "%s%s",
				 i ? ", " : "", r->nodes[i].name);
	cfg_seterr(err, err_len,
		   "%s: no node named \"%s\"%s; the nodes are: %s",
		   r->file, self_name,
		   self_name == host ? " (the host name)" : "", names);
	return NULL;
}

const struct cfg_node *cfg_peer_node(const struct cfg_resource *r,
				     const struct cfg_node *self)
{
	if (r->nr_nodes < 2)
		return NULL;
	if (self == &r->nodes[0])
		return &r->nodes[1];
	if (self == &r->nodes[1])
		return &r->nodes[0];
	return NULL;
}

bool cfg_key_adjustable(const char *key)
{
	const struct key *k = cfg_find_key(cfg_top_keys, CFG_NR_TOP, key);

	if (!k && !strncmp(key, "handlers.", 9))
		k = cfg_find_key(cfg_handler_keys, CFG_NR_HANDLER, key + 9);
	return k && (k->flags & K_ADJUST);
}

/*
 * Keys of @t (prefix @pfx) that are (@adjustable) or are not adjustable and
 * whose fields differ between @a and @b: their names appended to @out,
 * space-separated, and, when adjustable, the value copied from @b to @a.
 * Returns how many.
 */
static unsigned int diff_keys(const struct key *t, size_t n, const char *pfx,
			      void *a, const void *b, bool adjustable,
			      char *out, size_t out_len)
{
	unsigned int count = 0;

	for (size_t i = 0; i < n; i++) {
		const struct key *k = &t[i];
		size_t used = strlen(out);

		if (!memcmp((char *)a + k->off, (const char *)b + k->off,
			    k->size) ||
		    adjustable != !!(k->flags & K_ADJUST))
			continue;
		snprintf(out + used, out_len - used, "%s%s%s", used ? " " : "",
			 pfx, k->name);
		if (adjustable)
			memcpy((char *)a + k->off, (const char *)b + k->off,
			       k->size);
		count++;
	}
	return count;
}

int cfg_adjust(struct cfg_resource *cur, const struct cfg_resource *next,
	       char *changed, size_t changed_len, char *why, size_t why_len)
{
	char fixed[512] = "";
	unsigned int bad;

	changed[0] = '\0';
	bad = diff_keys(cfg_top_keys, CFG_NR_TOP, "", cur, next, false,
			fixed, sizeof(fixed));
	if (cur->nr_nodes != next->nr_nodes ||
	    memcmp(cur->nodes, next->nodes, sizeof(cur->nodes))) {
		size_t used = strlen(fixed);

		snprintf(fixed + used, sizeof(fixed) - used, "%snodes",
			 used ? " " : "");
		bad++;
	}
	if (strcmp(cur->name, next->name)) {
		size_t used = strlen(fixed);

		snprintf(fixed + used, sizeof(fixed) - used, "%sresource",
			 used ? " " : "");
		bad++;
	}
	if (bad) {
		snprintf(why, why_len,
			 "%s: not adjustable on a running resource: %s (take it down and up to change %s)",
			 next->file, fixed, bad > 1 ? "them" : "it");
		return -EINVAL;
	}
	diff_keys(cfg_top_keys, CFG_NR_TOP, "", cur, next, true, changed,
		  changed_len);
	diff_keys(cfg_handler_keys, CFG_NR_HANDLER, "handlers.", cur,
		  next, true, changed, changed_len);
	return 0;
}

uint8_t cfg_wire_digest(enum cfg_digest d)
{
	switch (d) {
	case CFG_DIGEST_CRC32C:
		return PROTO_DIGEST_CRC32C;
	case CFG_DIGEST_SHA256:
		return PROTO_DIGEST_SHA256;
	default:
		return PROTO_DIGEST_NONE;
	}
}

/* ---------------------------------------------------------------- print */

static int64_t load_num(const struct key *k, const void *p)
{
	uint8_t v8;
	uint32_t v32;
	uint64_t v64;

	if (k->size == 1) {
		memcpy(&v8, p, 1);
		return v8;
	}
	if (k->size == 4) {
		memcpy(&v32, p, 4);
		return k->min < 0 ? (int64_t)(int32_t)v32 : (int64_t)v32;
	}
	memcpy(&v64, p, 8);
	return (int64_t)v64;
}

/* "4K", "100M", "1G" when exact, else the plain number. */
void cfg_fmt_size(uint64_t v, char *buf, size_t len)
{
	static const char sfx[] = "TGMK";

	for (int i = 0; i < 4; i++) {
		unsigned int shift = 40 - 10 * i;

		if (v && !(v & ((1ull << shift) - 1))) {
			snprintf(buf, len, "%llu%c",
				 (unsigned long long)(v >> shift), sfx[i]);
			return;
		}
	}
	snprintf(buf, len, "%llu", (unsigned long long)v);
}

/* Bounds-checked: a caller may hand cfg_print a struct it filled itself. */
static const char *enum_name(const char *const *names, int64_t v)
{
	for (int64_t i = 0; names[i]; i++)
		if (i == v)
			return names[i];
	return "?";
}

/* A libconfig string literal: quotes, backslashes and controls escaped. */
static void print_string(FILE *out, const char *s)
{
	fputc('"', out);
	for (; *s; s++) {
		unsigned char ch = *s;

		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", out);
		else if (ch == '\t')
			fputs("\\t", out);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(out, "\\x%02x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

static bool empty_is_valid(const struct key *k)
{
	char tmp[8];

	if (k->max && k->min > 0)
		return false;
	return !(k->check ? k->check("", tmp, sizeof(tmp)) : NULL);
}

static void print_keys(FILE *out, const struct key *t, size_t n,
		       const void *base, const char *indent)
{
	char buf[32];

	for (size_t i = 0; i < n; i++) {
		const struct key *k = &t[i];
		const void *p = (const char *)base + k->off;
		int64_t v = k->type == KT_STR ? 0 : load_num(k, p);

		if (k->type == KT_STR && !*(const char *)p &&
		    !empty_is_valid(k)) {
			/* unset (secret, standalone address): no literal */
			fprintf(out, "%s# %s is not set\n", indent, k->name);
			continue;
		}
		fprintf(out, "%s%s = ", indent, k->name);
		switch (k->type) {
		case KT_STR:
			print_string(out, p);
			break;
		case KT_SIZE:
			cfg_fmt_size(v, buf, sizeof(buf));
			print_string(out, buf);
			break;
		case KT_INT:
			fprintf(out, "%lld", (long long)v);
			break;
		case KT_BOOL:
			fputs(v ? "true" : "false", out);
			break;
		case KT_ENUM:
			print_string(out, enum_name(k->names, v));
			break;
		case KT_PROTO:
			fprintf(out, "\"%c\"", (char)v);
			break;
		}
		fprintf(out, ";%s\n", k->flags & K_ADJUST ? " # adjustable" : "");
	}
}

void cfg_print(const struct cfg_resource *r, FILE *out)
{
	fprintf(out, "# resource %s, effective configuration (read from %s)\n",
		r->name, r->file);
	print_keys(out, cfg_top_keys, CFG_NR_TOP, r, "");
	fputs("handlers = {\n", out);
	print_keys(out, cfg_handler_keys, CFG_NR_HANDLER, r, "\t");
	fputs("};\nnodes = (\n", out);
	for (uint32_t i = 0; i < r->nr_nodes && i < CFG_MAX_NODES; i++) {
		fputs("\t{\n", out);
		print_keys(out, cfg_node_keys, CFG_NR_NODE, &r->nodes[i],
			   "\t\t");
		fprintf(out, "\t}%s\n", i + 1 < r->nr_nodes ? "," : "");
	}
	fputs(");\n", out);
}

const char *cfg_digest_name(enum cfg_digest d)
{
	return enum_name(digest_names, d);
}

const char *cfg_sb_policy_name(enum cfg_sb_policy p)
{
	return enum_name(sb_names, p);
}
