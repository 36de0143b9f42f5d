/* SPDX-License-Identifier: MIT */
/*
 * Inside the frame codec (proto.h): what proto.c (the byte layout, the
 * streaming parser) and proto_check.c (what makes a frame valid) share.
 */
#ifndef DUET_PROTO_INT_H
#define DUET_PROTO_INT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "util.h"

typedef unsigned long long ull;

/* Every decoder refusal: -EBADMSG with the reason. */
#define bad(why, len, ...) util_why(-EBADMSG, why, len, __VA_ARGS__)

static inline bool proto_all_zero(const void *p, size_t len)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i])
			return false;
	return true;
}

/*
 * Is @m a frame duet may send or accept? With @lim (decoding), its counts
 * and extents are checked against the device too; without (encoding),
 * only what the frame alone says. 0 or -EBADMSG with the reason in @why.
 */
int proto_check_msg(const struct proto_msg *m, const struct proto_limits *lim,
		    char *why, size_t wl);

#endif
