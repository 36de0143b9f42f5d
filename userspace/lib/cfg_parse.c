// SPDX-License-Identifier: MIT
/*
 * cfg — the parser: a resource file's text to a checked struct cfg_resource.
 *
 * libconfig reads the text; each setting it finds is then looked up in the
 * key tables of cfg.c, checked and stored (set_key), the structure (top
 * level, handlers, nodes) is walked, and the rules across keys and nodes
 * are checked last (cross_check). Every complaint names file, line and key.
 */
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "cfg_int.h"
#include "util.h"

#define CFG_FILE_MAX (1u << 20)	/* a resource file is a page or two */

struct ctx {
	const char *fname;
	const char *incdir;	/* where @include finds relative names */
	char *err;
	size_t err_len;
	struct cfg_resource *r;
	struct cfg_node tmpl;	/* node defaults given at the top level */
	/* Where each key was set, for line numbers in cross-key checks. */
	const config_setting_t *top[CFG_NR_TOP];
	const config_setting_t *tmpl_set[CFG_NR_NODE];
	const config_setting_t *node[CFG_MAX_NODES][CFG_NR_NODE];
	const config_setting_t *nodes;
};

/* --------------------------------------------------------------- errors */

static int fail(struct ctx *c, const config_setting_t *s, const char *key,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

int cfg_seterr(char *err, size_t len, const char *fmt, ...)
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


static int check_num(struct ctx *c, const config_setting_t *s,
		     const char *kn, const struct key *k, int64_t v)
{
	char lo[32], hi[32], got[32];
	bool ok = v >= k->min && v <= k->max;

	if (k->type == KT_SIZE) {
		cfg_fmt_size(k->min, lo, sizeof(lo));
		cfg_fmt_size(k->max, hi, sizeof(hi));
		cfg_fmt_size(v, got, sizeof(got));
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
			       : cfg_copy_out(str, (char *)base + k->off,
					      k->size);
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
			cfg_copy_out(t[i].sdef ? t[i].sdef : "",
				     (char *)base + t[i].off, t[i].size);
		else
			store_num((char *)base + t[i].off, t[i].size, t[i].def);
	}
}

/* ------------------------------------------------------------ structure */

/* Where a key was set; @name must be in the table. */
static const config_setting_t *top_set(struct ctx *c, const char *name)
{
	return c->top[cfg_find_key(cfg_top_keys, CFG_NR_TOP, name) -
		      cfg_top_keys];
}

static const config_setting_t *node_set(struct ctx *c, unsigned int idx,
					const char *name)
{
	return c->node[idx][cfg_find_key(cfg_node_keys, CFG_NR_NODE, name) -
			    cfg_node_keys];
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
		const struct key *k = cfg_find_key(cfg_handler_keys,
						  CFG_NR_HANDLER,
						  config_setting_name(s));

		snprintf(kn, sizeof(kn), "handlers.%s", config_setting_name(s));
		if (!k)
			return fail_unknown(c, s, kn, cfg_handler_keys,
					    CFG_NR_HANDLER, false);
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
		const struct key *k = cfg_find_key(cfg_node_keys, CFG_NR_NODE,
						  config_setting_name(s));

		snprintf(kn, sizeof(kn), "%s%s", prefix,
			 config_setting_name(s));
		if (!k)
			return fail_unknown(c, s, kn, cfg_node_keys,
					    CFG_NR_NODE, false);
		ret = set_key(c, k, prefix, s, n);
		if (ret)
			return ret;
		set[k - cfg_node_keys] = s;
	}
	for (size_t i = 0; i < CFG_NR_NODE; i++) {
		if (set[i] || c->tmpl_set[i])
			continue;
		snprintf(kn, sizeof(kn), "%s%s", prefix, cfg_node_keys[i].name);
		if (cfg_node_keys[i].flags & K_REQUIRED)
			return fail(c, g, kn, "missing; every node needs %s = ...%s",
				    cfg_node_keys[i].name,
				    cfg_node_keys[i].flags & K_NODE_DEFAULT ?
				    " (in the node or at the top level)" : "");
		if (!strcmp(cfg_node_keys[i].name, "address") &&
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
		k = cfg_find_key(cfg_top_keys, CFG_NR_TOP, name);
		if (k) {
			ret = set_key(c, k, "", s, c->r);
			if (ret)
				return ret;
			c->top[k - cfg_top_keys] = s;
			continue;
		}
		k = cfg_find_key(cfg_node_keys, CFG_NR_NODE, name);
		if (k && (k->flags & K_NODE_DEFAULT)) {
			ret = set_key(c, k, "", s, &c->tmpl);
			if (ret)
				return ret;
			c->tmpl_set[k - cfg_node_keys] = s;
			continue;
		}
		if (k)
			return fail(c, s, name,
				    "belongs inside a node: nodes = ( { %s = ...; } )",
				    name);
		if (cfg_find_key(cfg_handler_keys, CFG_NR_HANDLER, name))
			return fail(c, s, name,
				    "belongs inside handlers = { %s = \"/path\"; }",
				    name);
		return fail_unknown(c, s, name, cfg_top_keys, CFG_NR_TOP, true);
	}
	for (size_t i = 0; i < CFG_NR_TOP; i++)
		if ((cfg_top_keys[i].flags & K_REQUIRED) && !c->top[i])
			return fail(c, NULL, cfg_top_keys[i].name,
				    "missing; every resource file needs %s = ...;",
				    cfg_top_keys[i].name);
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

	cfg_fmt_size(r->resync_min_rate, lo, sizeof(lo));
	cfg_fmt_size(r->resync_rate, hi, sizeof(hi));
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
				return cfg_seterr(c->err, c->err_len,
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
	set_defaults(cfg_top_keys, CFG_NR_TOP, r);
	set_defaults(cfg_handler_keys, CFG_NR_HANDLER, r);
	set_defaults(cfg_node_keys, CFG_NR_NODE, &c.tmpl);
	if (cfg_copy_out(fname, r->file, sizeof(r->file)))
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
		ret = cfg_seterr(err, err_len, "%s:%d: syntax error: %s", file,
				 config_error_line(&cf),
				 config_error_text(&cf));
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
		cfg_seterr(err, err_len, "%s: cannot open: %s", path,
			   strerror(-ret));
		return ret;
	}
	text = malloc(CFG_FILE_MAX + 1);
	dir = strdup(path);
	if (!text || !dir) {
		ret = -ENOMEM;
		cfg_seterr(err, err_len, "%s: out of memory", path);
		goto out_free;
	}
	n = fread(text, 1, CFG_FILE_MAX + 1, f);
	if (ferror(f) || n > CFG_FILE_MAX) {
		ret = ferror(f) ? -EIO : -EFBIG;
		cfg_seterr(err, err_len, "%s: %s", path,
			   ret == -EIO ? "read error" : "larger than 1 MiB");
		goto out_free;
	}
	text[n] = '\0';
	if (strlen(text) != n) {
		ret = cfg_seterr(err, err_len, "%s: contains a NUL byte", path);
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
