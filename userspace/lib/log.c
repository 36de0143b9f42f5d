// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "log.h"

enum log_level log_level = LOG_LVL_INFO;
uint32_t log_cats;

static bool use_syslog;
static char prefix[64];

static const char *const level_names[] = {
	[LOG_LVL_ERR] = "err",	     [LOG_LVL_WARN] = "warn",
	[LOG_LVL_NOTICE] = "notice", [LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",
};

static const struct {
	const char *name;
	uint32_t bit;
} cat_names[] = {
	{ "md", LOG_CAT_MD },	  { "bm", LOG_CAT_BM },
	{ "al", LOG_CAT_AL },	  { "cfg", LOG_CAT_CFG },
	{ "ublk", LOG_CAT_UBLK }, { "io", LOG_CAT_IO },
	{ "net", LOG_CAT_NET },	  { "proto", LOG_CAT_PROTO },
	{ "resync", LOG_CAT_RESYNC }, { "sm", LOG_CAT_SM },
	{ "ctl", LOG_CAT_CTL },	  { "nbd", LOG_CAT_NBD },
	{ "all", LOG_CAT_ALL },
};

void log_use_syslog(const char *ident)
{
	openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	use_syslog = true;
}

void log_set_prefix(const char *p)
{
	if (!p)
		prefix[0] = '\0';
	else
		snprintf(prefix, sizeof(prefix), "%s: ", p);
}

int log_parse_level(const char *s)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]);
	     i++)
		if (!strcmp(s, level_names[i]))
			return (int)i;
	return -EINVAL;
}

int log_parse_cats(const char *s, uint32_t *mask, const char **bad)
{
	uint32_t m = 0;
	const char *p = s;

	while (*p) {
		size_t len = strcspn(p, ",");
		bool found = false;

		for (size_t i = 0; i < sizeof(cat_names) / sizeof(cat_names[0]);
		     i++) {
			if (strlen(cat_names[i].name) == len &&
			    !strncmp(p, cat_names[i].name, len)) {
				m |= cat_names[i].bit;
				found = true;
			}
		}
		if (!found && len) {
			if (bad)
				*bad = p;
			return -EINVAL;
		}
		p += len;
		if (*p == ',')
			p++;
	}
	*mask = m;
	return 0;
}

void log_msg(enum log_level lvl, uint32_t cat, const char *fmt, ...)
{
	static const int sys_prio[] = {
		[LOG_LVL_ERR] = LOG_ERR,       [LOG_LVL_WARN] = LOG_WARNING,
		[LOG_LVL_NOTICE] = LOG_NOTICE, [LOG_LVL_INFO] = LOG_INFO,
		[LOG_LVL_DEBUG] = LOG_DEBUG,
	};
	int saved = errno;
	char line[1024];
	va_list ap;

	(void)cat;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);

	if (use_syslog) {
		syslog(sys_prio[lvl], "%s%s", prefix, line);
	} else {
		struct timespec ts;
		struct tm tm;
		char stamp[32];

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ld %s: %s%s\n", stamp,
			ts.tv_nsec / 1000000, level_names[lvl], prefix, line);
	}
	errno = saved;
}
