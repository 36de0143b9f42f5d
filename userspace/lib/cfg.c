// SPDX-License-Identifier: MIT
/*
 * cfg — resource configuration.
 *
 * Every key is one row of a table (name, type, bounds, default, field,
 * whether `duetctl adjust` may change it live), so that parsing, defaults,
 * validation, printing and the documentation all follow from one place.
 * libconfig does the lexing; everything it accepts is then checked here
 * against the tables, and every complaint names file, line and key.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cfg.h"
#include "proto.h"
#include "util.h"

#define CFG_FILE_MAX (1u << 20)	/* a resource file is a page or two */
#define NBD_DEFAULT_PORT 10809	/* IANA's port for NBD */

enum key_type {
	KT_STR,		/* string, optionally checked/normalised by a hook */
	KT_SIZE,	/* byte count: "4K", "100M" or an integer */
	KT_INT,		/* integer */
	KT_BOOL,	/* true / false */
	KT_ENUM,	/* one of @names, stored as its index */
	KT_PROTO,	/* one of @names, stored as its first character */
};

#define K_ADJUST (1u << 0)	/* `duetctl adjust` applies it live */
#define K_POW2 (1u << 1)	/* numbers: must be a power of two */
#define K_REQUIRED (1u << 2)	/* must be given */
#define K_NODE_DEFAULT (1u << 3) /* node key also allowed at top level */

struct key {
	const char *name;	/* as written in the file */
	enum key_type type;
	size_t off, size;	/* the field in cfg_resource or cfg_node */
	int64_t min, max;	/* numbers: bounds; strings: length */
	int64_t def;		/* numbers, bools, enum index, protocol */
	const char *sdef;	/* strings */
	const char *const *names; /* KT_ENUM / KT_PROTO, NULL-terminated */
	bool choices;		/* numbers: only min or max allowed */
	/* Strings: NULL if @in is fine (normalised into @out), else why not. */
	const char *(*check)(const char *in, char *out, size_t out_len);
	unsigned int flags;
};

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

static const struct key top_keys[] = {
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
static const struct key handler_keys[] = {
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

static const struct key node_keys[] = {
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

#define NR_TOP ARRAY_SIZE(top_keys)
#define NR_NODE ARRAY_SIZE(node_keys)

struct ctx {
	const char *fname;
	const char *incdir;	/* where @include finds relative names */
	char *err;
	size_t err_len;
	struct cfg_resource *r;
	struct cfg_node tmpl;	/* node defaults given at the top level */
	/* Where each key was set, for line numbers in cross-key checks. */
	const config_setting_t *top[NR_TOP];
	const config_setting_t *tmpl_set[NR_NODE];
	const config_setting_t *node[CFG_MAX_NODES][NR_NODE];
	const config_setting_t *nodes;
};

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

static const char *copy_out(const char *in, char *out, size_t len)
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
	return copy_out(in, out, len);
}

static const char *check_abs_path(const char *in, char *out, size_t len)
{
	if (in[0] != '/')
		return "expected an absolute path";
	return copy_out(in, out, len);
}

static const char *check_meta(const char *in, char *out, size_t len)
{
	if (strcmp(in, "internal") && in[0] != '/')
		return "expected \"internal\" or an absolute path";
	return copy_out(in, out, len);
}

static const char *check_handler(const char *in, char *out, size_t len)
{
	if (in[0] && in[0] != '/')
		return "expected an absolute path (or \"\" for none)";
	return copy_out(in, out, len);
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
		return copy_out(in, out, len);
	if (!strncmp(in, "unix:", 5)) {
		if (in[5] != '/')
			return "expected unix:/absolute/path";
		return copy_out(in, out, len);
	}
	return parse_endpoint(in, NBD_DEFAULT_PORT, out, len);
}

/* --------------------------------------------------------------- errors */

static int fail(struct ctx *c, const config_setting_t *s, const char *key,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Fill @err (when there is one) and return -EINVAL. */
static int seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (err && len) {
		va_start(ap, fmt);
		vsnprintf(err, len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/*
 * The file to name in a message: libconfig knows included files by the
 * name written in @include, so add the directory it resolved them in.
 */
static void file_name(char *buf, size_t len, const char *file,
		      const char *fname, const char *incdir)
{
	if (file && file[0] != '/' && incdir)
		snprintf(buf, len, "%s/%s", incdir, file);
	else
		snprintf(buf, len, "%s", file ? file : fname);
}

/* "FILE:LINE: KEY: message"; no line when @s is NULL (a missing key). */
static int fail(struct ctx *c, const config_setting_t *s, const char *key,
		const char *fmt, ...)
{
	char file[PATH_MAX];
	va_list ap;
	int n;

	if (!c->err || !c->err_len)
		return -EINVAL;
	file_name(file, sizeof(file), s ? config_setting_source_file(s) : NULL,
		  c->fname, c->incdir);
	if (s && config_setting_source_line(s))
		n = snprintf(c->err, c->err_len, "%s:%u: %s: ", file,
			     config_setting_source_line(s), key);
	else
		n = snprintf(c->err, c->err_len, "%s: %s: ", file, key);
	if (n >= 0 && (size_t)n < c->err_len) {
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->err_len - n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static const char *type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_GROUP: return "a group";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a floating-point number";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array";
	case CONFIG_TYPE_LIST: return "a list";
	}
	return "something else";
}

/* "a, b or c" */
static void join_names(const char *const *names, char *buf, size_t len)
{
	size_t n = 0, used = 0;

	while (names[n])
		n++;
	buf[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++)
		used += snprintf(buf + used, len - used, "%s%s",
				 i == 0 ? "" : i == n - 1 ? " or " : ", ",
				 names[i]);
}

/* Levenshtein distance, for "did you mean"; capped for long inputs. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[33], prev, tmp;

	if (la > 32 || lb > 32)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		prev = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			tmp = row[j];
			row[j] = prev + (tolower((unsigned char)a[i - 1]) !=
					 tolower((unsigned char)b[j - 1]));
			if (row[j - 1] + 1 < row[j])
				row[j] = row[j - 1] + 1;
			if (tmp + 1 < row[j])
				row[j] = tmp + 1;
			prev = tmp;
		}
	}
	return row[lb];
}

static void suggest(const struct key *t, size_t n, const char *name,
		    const char **best, size_t *dist)
{
	for (size_t i = 0; i < n; i++) {
		size_t d = edit_distance(name, t[i].name);

		if (d < *dist) {
			*dist = d;
			*best = t[i].name;
		}
	}
}

static int fail_unknown(struct ctx *c, const config_setting_t *s,
			const char *key, const struct key *t, size_t n,
			bool top)
{
	static const struct key groups[] = { { "nodes" }, { "handlers" } };
	const char *name = config_setting_name(s), *best = NULL;
	size_t dist = 3; /* suggest only names at most 2 edits away */

	suggest(t, n, name, &best, &dist);
	if (top)
		suggest(groups, ARRAY_SIZE(groups), name, &best, &dist);
	if (best)
		return fail(c, s, key, "unknown key; did you mean \"%s\"?",
			    best);
	return fail(c, s, key,
		    "unknown key; see docs/configuration.md for valid keys");
}

/* ------------------------------------------------------------ one value */

static void store_num(void *p, size_t size, int64_t v)
{
	uint8_t v8 = v;
	uint32_t v32 = v;
	uint64_t v64 = v;

	if (size == 1)
		memcpy(p, &v8, 1);
	else if (size == 4)
		memcpy(p, &v32, 4);
	else
		memcpy(p, &v64, 8);
}

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
static void fmt_size(uint64_t v, char *buf, size_t len)
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

static int check_num(struct ctx *c, const config_setting_t *s,
		     const char *kn, const struct key *k, int64_t v)
{
	char lo[32], hi[32], got[32];
	bool ok = v >= k->min && v <= k->max;

	if (k->type == KT_SIZE) {
		fmt_size(k->min, lo, sizeof(lo));
		fmt_size(k->max, hi, sizeof(hi));
		fmt_size(v, got, sizeof(got));
	} else {
		snprintf(lo, sizeof(lo), "%lld", (long long)k->min);
		snprintf(hi, sizeof(hi), "%lld", (long long)k->max);
		snprintf(got, sizeof(got), "%lld", (long long)v);
	}
	if (k->choices) { /* the choices are exactly min and max */
		if (v != k->min && v != k->max)
			return fail(c, s, kn, "expected %s or %s, got %s", lo,
				    hi, got);
		return 0;
	}
	if (!ok || ((k->flags & K_POW2) && !is_pow2(v)))
		return fail(c, s, kn, "expected %s%s in %s..%s, got %s",
			    k->type == KT_SIZE ? "a size" : "an integer",
			    k->flags & K_POW2 ? " that is a power of two" : "",
			    lo, hi, got);
	return 0;
}

static int set_key(struct ctx *c, const struct key *k, const char *prefix,
		   const config_setting_t *s, void *base)
{
	int t = config_setting_type(s);
	const char *str = NULL, *why;
	char kn[96], list[160];
	uint64_t u;
	int64_t v = 0;
	int ret;

	snprintf(kn, sizeof(kn), "%s%s", prefix, k->name);
	if (t == CONFIG_TYPE_STRING)
		str = config_setting_get_string(s);
	switch (k->type) {
	case KT_STR:
		if (!str)
			return fail(c, s, kn, "expected a string, got %s",
				    type_name(s));
		if (k->max && (strlen(str) < (size_t)k->min ||
			       strlen(str) > (size_t)k->max))
			return fail(c, s, kn,
				    "expected %lld to %lld characters, got %zu",
				    (long long)k->min, (long long)k->max,
				    strlen(str));
		why = k->check ? k->check(str, (char *)base + k->off, k->size)
			       : copy_out(str, (char *)base + k->off, k->size);
		if (why)
			return fail(c, s, kn, "%s, got \"%s\"", why, str);
		return 0;
	case KT_SIZE:
		if (str) {
			ret = util_parse_size(str, &u);
			if (ret == -ERANGE || (!ret && u > INT64_MAX))
				return fail(c, s, kn, "size too large, got \"%s\"",
					    str);
			if (ret)
				return fail(c, s, kn,
					    "expected a size like \"4K\" or \"100M\" or a byte count, got \"%s\"",
					    str);
			v = u;
		} else if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
			v = config_setting_get_int64(s);
			if (v < 0)
				return fail(c, s, kn,
					    "expected a size, got %lld",
					    (long long)v);
		} else {
			return fail(c, s, kn,
				    "expected a size like \"100M\" or an integer, got %s",
				    type_name(s));
		}
		break;
	case KT_INT:
		if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
			return fail(c, s, kn, "expected an integer, got %s",
				    type_name(s));
		v = config_setting_get_int64(s);
		break;
	case KT_BOOL:
		if (t != CONFIG_TYPE_BOOL)
			return fail(c, s, kn, "expected true or false, got %s",
				    type_name(s));
		v = config_setting_get_bool(s);
		break;
	case KT_ENUM:
	case KT_PROTO:
		join_names(k->names, list, sizeof(list));
		if (!str)
			return fail(c, s, kn, "expected a string (%s), got %s",
				    list, type_name(s));
		for (v = 0; k->names[v]; v++)
			if (!strcasecmp(str, k->names[v]))
				break;
		if (!k->names[v])
			return fail(c, s, kn, "expected %s, got \"%s\"", list,
				    str);
		if (k->type == KT_PROTO)
			v = k->names[v][0];
		break;
	}
	if (k->type == KT_SIZE || k->type == KT_INT) {
		ret = check_num(c, s, kn, k, v);
		if (ret)
			return ret;
	}
	store_num((char *)base + k->off, k->size, v);
	return 0;
}

static void set_defaults(const struct key *t, size_t n, void *base)
{
	for (size_t i = 0; i < n; i++) {
		if (t[i].type == KT_STR)
			copy_out(t[i].sdef ? t[i].sdef : "",
				 (char *)base + t[i].off, t[i].size);
		else
			store_num((char *)base + t[i].off, t[i].size, t[i].def);
	}
}

static const struct key *find_key(const struct key *t, size_t n,
				  const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(t[i].name, name))
			return &t[i];
	return NULL;
}

/* ------------------------------------------------------------ structure */

/* Where a key was set; @name must be in the table. */
static const config_setting_t *top_set(struct ctx *c, const char *name)
{
	return c->top[find_key(top_keys, NR_TOP, name) - top_keys];
}

static const config_setting_t *node_set(struct ctx *c, unsigned int idx,
					const char *name)
{
	return c->node[idx][find_key(node_keys, NR_NODE, name) - node_keys];
}

static int parse_handlers(struct ctx *c, const config_setting_t *g)
{
	char kn[96];
	int ret;

	if (!config_setting_is_group(g))
		return fail(c, g, "handlers",
			    "expected a group { split-brain = \"/path\"; ... }, got %s",
			    type_name(g));
	for (int i = 0; i < config_setting_length(g); i++) {
		const config_setting_t *s = config_setting_get_elem(g, i);
		const struct key *k = find_key(handler_keys,
					       ARRAY_SIZE(handler_keys),
					       config_setting_name(s));

		snprintf(kn, sizeof(kn), "handlers.%s", config_setting_name(s));
		if (!k)
			return fail_unknown(c, s, kn, handler_keys,
					    ARRAY_SIZE(handler_keys), false);
		ret = set_key(c, k, "handlers.", s, c->r);
		if (ret)
			return ret;
	}
	return 0;
}

static int parse_node(struct ctx *c, unsigned int idx,
		      const config_setting_t *g)
{
	struct cfg_node *n = &c->r->nodes[idx];
	const config_setting_t **set = c->node[idx];
	char prefix[32], kn[96];
	int ret;

	snprintf(prefix, sizeof(prefix), "nodes[%u].", idx);
	snprintf(kn, sizeof(kn), "nodes[%u]", idx);
	if (!config_setting_is_group(g))
		return fail(c, g, kn,
			    "expected a group { name = ...; id = ...; ... }, got %s",
			    type_name(g));
	*n = c->tmpl;
	for (int i = 0; i < config_setting_length(g); i++) {
		const config_setting_t *s = config_setting_get_elem(g, i);
		const struct key *k = find_key(node_keys, NR_NODE,
					       config_setting_name(s));

		snprintf(kn, sizeof(kn), "%s%s", prefix,
			 config_setting_name(s));
		if (!k)
			return fail_unknown(c, s, kn, node_keys, NR_NODE,
					    false);
		ret = set_key(c, k, prefix, s, n);
		if (ret)
			return ret;
		set[k - node_keys] = s;
	}
	for (size_t i = 0; i < NR_NODE; i++) {
		if (set[i] || c->tmpl_set[i])
			continue;
		snprintf(kn, sizeof(kn), "%s%s", prefix, node_keys[i].name);
		if (node_keys[i].flags & K_REQUIRED)
			return fail(c, g, kn, "missing; every node needs %s = ...%s",
				    node_keys[i].name,
				    node_keys[i].flags & K_NODE_DEFAULT ?
				    " (in the node or at the top level)" : "");
		if (!strcmp(node_keys[i].name, "address") &&
		    config_setting_length(c->nodes) > 1)
			return fail(c, g, kn,
				    "missing; required when the resource has two nodes");
	}
	return 0;
}

static int parse_nodes(struct ctx *c, const config_setting_t *l)
{
	int n = config_setting_length(l), ret;

	if (!config_setting_is_list(l))
		return fail(c, l, "nodes",
			    "expected a list ( { name = ...; }, ... ), got %s",
			    type_name(l));
	if (n < 1)
		return fail(c, l, "nodes", "expected 1 or 2 nodes, got none");
	if (n > CFG_MAX_NODES)
		return fail(c, config_setting_get_elem(l, CFG_MAX_NODES),
			    "nodes", "expected 1 or 2 nodes, got %d", n);
	for (int i = 0; i < n; i++) {
		ret = parse_node(c, i, config_setting_get_elem(l, i));
		if (ret)
			return ret;
	}
	c->r->nr_nodes = n;
	return 0;
}

static int parse_root(struct ctx *c, const config_setting_t *root)
{
	const config_setting_t *handlers = NULL;
	const struct key *k;
	int ret;

	for (int i = 0; i < config_setting_length(root); i++) {
		const config_setting_t *s = config_setting_get_elem(root, i);
		const char *name = config_setting_name(s);

		if (!strcmp(name, "nodes")) {
			c->nodes = s;
			continue;
		}
		if (!strcmp(name, "handlers")) {
			handlers = s;
			continue;
		}
		k = find_key(top_keys, NR_TOP, name);
		if (k) {
			ret = set_key(c, k, "", s, c->r);
			if (ret)
				return ret;
			c->top[k - top_keys] = s;
			continue;
		}
		k = find_key(node_keys, NR_NODE, name);
		if (k && (k->flags & K_NODE_DEFAULT)) {
			ret = set_key(c, k, "", s, &c->tmpl);
			if (ret)
				return ret;
			c->tmpl_set[k - node_keys] = s;
			continue;
		}
		if (k)
			return fail(c, s, name,
				    "belongs inside a node: nodes = ( { %s = ...; } )",
				    name);
		if (find_key(handler_keys, ARRAY_SIZE(handler_keys), name))
			return fail(c, s, name,
				    "belongs inside handlers = { %s = \"/path\"; }",
				    name);
		return fail_unknown(c, s, name, top_keys, NR_TOP, true);
	}
	for (size_t i = 0; i < NR_TOP; i++)
		if ((top_keys[i].flags & K_REQUIRED) && !c->top[i])
			return fail(c, NULL, top_keys[i].name,
				    "missing; every resource file needs %s = ...;",
				    top_keys[i].name);
	if (handlers) {
		ret = parse_handlers(c, handlers);
		if (ret)
			return ret;
	}
	if (!c->nodes)
		return fail(c, NULL, "nodes",
			    "missing; expected nodes = ( { name = ...; id = ...; disk = ...; } );");
	return parse_nodes(c, c->nodes);
}

/* The setting to blame for a conflict: @a if it was written, else @b. */
static const config_setting_t *either(const config_setting_t *a,
				      const config_setting_t *b)
{
	return a ? a : b;
}

static int cross_check(struct ctx *c)
{
	struct cfg_resource *r = c->r;
	const struct cfg_node *a = &r->nodes[0], *b = &r->nodes[1];
	char lo[32], hi[32];

	fmt_size(r->resync_min_rate, lo, sizeof(lo));
	fmt_size(r->resync_rate, hi, sizeof(hi));
	if (r->resync_min_rate > r->resync_rate)
		return fail(c, either(top_set(c, "resync-min-rate"),
				      top_set(c, "resync-rate")),
			    "resync-min-rate",
			    "must not exceed resync-rate (%s > %s)", lo, hi);
	if (r->reconnect_min_ms > r->reconnect_max_ms)
		return fail(c, either(top_set(c, "reconnect-min"),
				      top_set(c, "reconnect-max")),
			    "reconnect-min",
			    "must not exceed reconnect-max (%u > %u ms)",
			    r->reconnect_min_ms, r->reconnect_max_ms);
	if (r->physical_block_size < r->logical_block_size)
		return fail(c, either(top_set(c, "physical-block-size"),
				      top_set(c, "logical-block-size")),
			    "physical-block-size",
			    "must be at least logical-block-size (%u < %u)",
			    r->physical_block_size, r->logical_block_size);
	if (r->nr_nodes < 2)
		return 0;
	if (!r->secret[0])
		return fail(c, NULL, "secret",
			    "missing; required when the resource has two nodes (%d to %d characters)",
			    CFG_SECRET_MIN, CFG_SECRET_MAX);
	if (!strcmp(a->name, b->name))
		return fail(c, node_set(c, 1, "name"), "nodes[1].name",
			    "\"%s\" is already the name of nodes[0]", b->name);
	if (a->id == b->id)
		return fail(c, node_set(c, 1, "id"), "nodes[1].id",
			    "%u is already the id of nodes[0]", b->id);
	if (!strcmp(a->address, b->address))
		return fail(c, node_set(c, 1, "address"),
			    "nodes[1].address",
			    "\"%s\" is already the address of nodes[0]",
			    b->address);
	return 0;
}

/*
 * libconfig 1.5 reads an integer literal with atoi(), so 10000000000
 * silently becomes 1410065408. Find such literals in the text first; the
 * key they belong to is the last name before them.
 */
static int check_int_literals(struct ctx *c, const char *p)
{
	const char *key = "value", *tok;
	unsigned int line = 1;
	int key_len = 5, base;

	while (*p) {
		tok = p;
		if (*p == '\n') {
			line++;
			p++;
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			p += strcspn(p, "\n");
		} else if (p[0] == '/' && p[1] == '*') {
			for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
				line += *p == '\n';
			p += *p ? 2 : 0;
		} else if (*p == '"') {
			for (p++; *p && *p != '"'; p++) {
				line += *p == '\n';
				if (*p == '\\' && p[1])
					p++;
			}
			p += *p ? 1 : 0;
		} else if (isalpha((unsigned char)*p) || *p == '*') {
			while (isalnum((unsigned char)*p) || strchr("-_*", *p))
				p++;
			key = tok;
			key_len = p - tok;
		} else if (isdigit((unsigned char)*p)) {
			while (isalnum((unsigned char)*p) || *p == '.' ||
			       ((*p == '-' || *p == '+') &&
				tolower((unsigned char)p[-1]) == 'e'))
				p++;
			base = tok[0] == '0' && tolower(tok[1]) == 'x' ? 16 : 10;
			if (toupper(p[-1]) == 'L' || memchr(tok, '.', p - tok) ||
			    (base == 10 && (memchr(tok, 'e', p - tok) ||
					    memchr(tok, 'E', p - tok))))
				continue; /* a float or a 64-bit literal */
			errno = 0;
			if (strtoull(tok, NULL, base) > INT32_MAX || errno)
				return seterr(c->err, c->err_len,
					      "%s:%u: %.*s: integer %.*s is too large (libconfig would truncate it); write it as a string such as \"10G\"",
					      c->fname, line, key_len, key,
					      (int)(p - tok), tok);
		} else {
			p++;
		}
	}
	return 0;
}

static int load(const char *text, const char *fname, const char *incdir,
		struct cfg_resource *r, char *err, size_t err_len)
{
	struct ctx c = { .fname = fname, .incdir = incdir, .err = err,
			 .err_len = err_len, .r = r };
	char file[PATH_MAX];
	config_t cf;
	int ret;

	if (err && err_len)
		err[0] = '\0';
	memset(r, 0, sizeof(*r));
	set_defaults(top_keys, NR_TOP, r);
	set_defaults(handler_keys, ARRAY_SIZE(handler_keys), r);
	set_defaults(node_keys, NR_NODE, &c.tmpl);
	if (copy_out(fname, r->file, sizeof(r->file)))
		return fail(&c, NULL, "file", "path too long");
	ret = check_int_literals(&c, text);
	if (ret)
		return ret;

	config_init(&cf);
	if (incdir) /* libconfig 1.5 strdup()s it without a NULL check */
		config_set_include_dir(&cf, incdir);
	if (!config_read_string(&cf, text)) {
		file_name(file, sizeof(file), config_error_file(&cf), fname,
			  incdir);
		ret = seterr(err, err_len, "%s:%d: syntax error: %s", file,
			     config_error_line(&cf), config_error_text(&cf));
		goto out_destroy;
	}
	ret = parse_root(&c, config_root_setting(&cf));
	if (!ret)
		ret = cross_check(&c);
out_destroy:
	config_destroy(&cf);
	return ret;
}

/* ------------------------------------------------------------------ API */

int cfg_load_string(const char *text, const char *fname,
		    struct cfg_resource *r, char *err, size_t err_len)
{
	return load(text, fname, NULL, r, err, err_len);
}

int cfg_load_file(const char *path, struct cfg_resource *r, char *err,
		  size_t err_len)
{
	char *text = NULL, *dir = NULL, *slash;
	size_t n;
	FILE *f;
	int ret;

	f = fopen(path, "re");
	if (!f) {
		ret = -errno;
		seterr(err, err_len, "%s: cannot open: %s", path,
		       strerror(-ret));
		return ret;
	}
	text = malloc(CFG_FILE_MAX + 1);
	dir = strdup(path);
	if (!text || !dir) {
		ret = -ENOMEM;
		seterr(err, err_len, "%s: out of memory", path);
		goto out_free;
	}
	n = fread(text, 1, CFG_FILE_MAX + 1, f);
	if (ferror(f) || n > CFG_FILE_MAX) {
		ret = ferror(f) ? -EIO : -EFBIG;
		seterr(err, err_len, "%s: %s", path,
		       ret == -EIO ? "read error" : "larger than 1 MiB");
		goto out_free;
	}
	text[n] = '\0';
	if (strlen(text) != n) {
		ret = seterr(err, err_len, "%s: contains a NUL byte", path);
		goto out_free;
	}
	/* @include "x" is relative to the file's directory, not the cwd. */
	slash = strrchr(dir, '/');
	if (slash)
		slash[slash == dir] = '\0';
	ret = load(text, path, slash ? dir : NULL, r, err, err_len);
out_free:
	free(dir);
	free(text);
	fclose(f);
	return ret;
}

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
			seterr(err, err_len, "gethostname: %s",
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
	seterr(err, err_len,
	       "%s: no node named \"%s\"%s; the nodes are: %s",
	       r->file, self_name, self_name == host ? " (the host name)" : "",
	       names);
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
	const struct key *k = find_key(top_keys, NR_TOP, key);

	if (!k && !strncmp(key, "handlers.", 9))
		k = find_key(handler_keys, ARRAY_SIZE(handler_keys), key + 9);
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
	bad = diff_keys(top_keys, NR_TOP, "", cur, next, false, fixed,
			sizeof(fixed));
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
	diff_keys(top_keys, NR_TOP, "", cur, next, true, changed, changed_len);
	diff_keys(handler_keys, ARRAY_SIZE(handler_keys), "handlers.", cur,
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
			fmt_size(v, buf, sizeof(buf));
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
	print_keys(out, top_keys, NR_TOP, r, "");
	fputs("handlers = {\n", out);
	print_keys(out, handler_keys, ARRAY_SIZE(handler_keys), r, "\t");
	fputs("};\nnodes = (\n", out);
	for (uint32_t i = 0; i < r->nr_nodes && i < CFG_MAX_NODES; i++) {
		fputs("\t{\n", out);
		print_keys(out, node_keys, NR_NODE, &r->nodes[i], "\t\t");
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
