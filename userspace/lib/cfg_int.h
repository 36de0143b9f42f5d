/* SPDX-License-Identifier: MIT */
/*
 * cfg_ internals (internal: only cfg.c and cfg_parse.c include this header).
 * cfg.c holds the key tables and the checks they name for string values,
 * the lookups and queries on a loaded resource, cfg_adjust and cfg_print.
 * cfg_parse.c holds the parser on libconfig: loading a file or a string,
 * setting and checking each value against the tables, the resource's
 * structure (top level, handlers, nodes) and the checks across keys.
 */
#ifndef DUET_CFG_INT_H
#define DUET_CFG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfg.h"

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

/*
 * How many rows each table has: cfg_parse.c sizes by them the arrays that
 * remember where each key was set. cfg.c checks them against the tables
 * when it compiles, so a key added there must be counted here too.
 */
#define CFG_NR_TOP 28
#define CFG_NR_HANDLER 5
#define CFG_NR_NODE 7

/* ---- cfg.c ---- */

/* Keys at the top level, inside `handlers = { ... }`, and of a node. */
extern const struct key cfg_top_keys[];
extern const struct key cfg_handler_keys[];
extern const struct key cfg_node_keys[];

/* Copy @in into @out (@len bytes): NULL, or why not ("too long"). */
const char *cfg_copy_out(const char *in, char *out, size_t len);
/* The row of @t (@n rows) for key @name, or NULL. */
const struct key *cfg_find_key(const struct key *t, size_t n,
			       const char *name);
/* "4K", "100M", "1G" when exact, else the plain number. */
void cfg_fmt_size(uint64_t v, char *buf, size_t len);

/* ---- cfg_parse.c ---- */

/* Fill @err (when there is one) and return -EINVAL. */
int cfg_seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
