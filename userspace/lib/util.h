/* SPDX-License-Identifier: MIT */
/* Small helpers shared by the library, the daemon and the CLI. */
#ifndef DUET_UTIL_H
#define DUET_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SECTOR_SHIFT 9
#define SECTOR_SIZE (1u << SECTOR_SHIFT)

#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define ROUND_UP(n, a) (DIV_ROUND_UP(n, a) * (a))
#define ROUND_DOWN(n, a) (((n) / (a)) * (a))

static inline bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/*
 * Parse a byte count: a decimal number with an optional binary suffix
 * K, M, G, T (or KiB, MiB, GiB, TiB; case-insensitive; "B" alone allowed).
 * "4K" -> 4096. Returns 0, -EINVAL for a malformed string, -ERANGE on
 * overflow.
 */
int util_parse_size(const char *s, uint64_t *out);

/* Parse an unsigned decimal integer in [min, max]: 0, -EINVAL or -ERANGE. */
int util_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Human-readable size with a binary suffix, e.g. "4.0 GiB"; returns buf. */
const char *util_fmt_size(uint64_t bytes, char *buf, size_t len);

/*
 * Format a reason for the caller into @why (@len bytes; either may be
 * NULL/0 when nobody wants the text) and return @err, so that a refusal is
 * one line: return util_why(-EINVAL, why, len, "granularity %u ...", g);
 */
int util_why(int err, char *why, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* 64 random bits from the kernel's CSPRNG; never 0 (0 means "no UUID"). */
uint64_t util_random_u64(void);

#endif
