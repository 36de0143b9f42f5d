/* SPDX-License-Identifier: MIT */
/*
 * Logging: levels plus debug categories.
 *
 * The macros test the level (and category) before evaluating their
 * arguments, so a disabled debug line costs one load and one branch.
 * Messages go to stderr in the foreground and to syslog (which the journal
 * collects) when running as a service.
 */
#ifndef DUET_LOG_H
#define DUET_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level {
	LOG_LVL_ERR = 0,
	LOG_LVL_WARN,
	LOG_LVL_NOTICE,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
};

/* Debug categories, one bit each; `debug = "md,al"` or -d md,al selects them. */
enum log_cat {
	LOG_CAT_MD = 1u << 0,	  /* metadata superblock and layout */
	LOG_CAT_BM = 1u << 1,	  /* dirty bitmap */
	LOG_CAT_AL = 1u << 2,	  /* activity log */
	LOG_CAT_CFG = 1u << 3,	  /* configuration */
	LOG_CAT_UBLK = 1u << 4,	  /* ublk front end */
	LOG_CAT_IO = 1u << 5,	  /* backing I/O engines */
	LOG_CAT_NET = 1u << 6,	  /* transports */
	LOG_CAT_PROTO = 1u << 7,  /* replication protocol */
	LOG_CAT_RESYNC = 1u << 8, /* resync and verify */
	LOG_CAT_SM = 1u << 9,	  /* state machine */
	LOG_CAT_CTL = 1u << 10,	  /* control socket */
	LOG_CAT_NBD = 1u << 11,	  /* NBD front end */
	LOG_CAT_ALL = 0xffffffffu,
};

extern enum log_level log_level;
extern uint32_t log_cats;

/* Route output to syslog under @ident instead of stderr. */
void log_use_syslog(const char *ident);
/* Prefix every line with @prefix (e.g. the resource name); NULL clears it. */
void log_set_prefix(const char *prefix);

/* "err", "warn", "notice", "info", "debug" -> level; -EINVAL otherwise. */
int log_parse_level(const char *s);
/* Comma-separated category names ("md,al", "all") -> mask; -EINVAL and
 * *bad pointing at the offending name otherwise. */
int log_parse_cats(const char *s, uint32_t *mask, const char **bad);

void log_msg(enum log_level lvl, uint32_t cat, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static inline bool log_enabled(enum log_level lvl, uint32_t cat)
{
	if (lvl > log_level)
		return false;
	return lvl < LOG_LVL_DEBUG || (log_cats & cat);
}

#define log_at(lvl, cat, ...)                          \
	do {                                           \
		if (log_enabled(lvl, cat))             \
			log_msg(lvl, cat, __VA_ARGS__); \
	} while (0)

#define log_err(...) log_at(LOG_LVL_ERR, 0, __VA_ARGS__)
#define log_warn(...) log_at(LOG_LVL_WARN, 0, __VA_ARGS__)
#define log_notice(...) log_at(LOG_LVL_NOTICE, 0, __VA_ARGS__)
#define log_info(...) log_at(LOG_LVL_INFO, 0, __VA_ARGS__)
#define log_dbg(cat, ...) log_at(LOG_LVL_DEBUG, cat, __VA_ARGS__)

#endif
