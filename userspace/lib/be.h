/* SPDX-License-Identifier: MIT */
/*
 * Fixed-endian field types for on-disk and on-wire formats.
 *
 * Every format struct is built from these wrappers so that a raw field can
 * never be read without a conversion: the compiler rejects `x = sb->seq`
 * where `seq` is a struct be64. Only the converters below touch `.raw`.
 */
#ifndef DUET_BE_H
#define DUET_BE_H

#include <endian.h>
#include <stdint.h>

struct be16 { uint16_t raw; } __attribute__((packed));
struct be32 { uint32_t raw; } __attribute__((packed));
struct be64 { uint64_t raw; } __attribute__((packed));
struct le64 { uint64_t raw; } __attribute__((packed));

_Static_assert(sizeof(struct be16) == 2, "be16");
_Static_assert(sizeof(struct be32) == 4, "be32");
_Static_assert(sizeof(struct be64) == 8, "be64");
_Static_assert(sizeof(struct le64) == 8, "le64");

static inline uint16_t get_be16(struct be16 v) { return be16toh(v.raw); }
static inline uint32_t get_be32(struct be32 v) { return be32toh(v.raw); }
static inline uint64_t get_be64(struct be64 v) { return be64toh(v.raw); }
static inline uint64_t get_le64(struct le64 v) { return le64toh(v.raw); }

static inline struct be16 put_be16(uint16_t v)
{
	return (struct be16){ htobe16(v) };
}

static inline struct be32 put_be32(uint32_t v)
{
	return (struct be32){ htobe32(v) };
}

static inline struct be64 put_be64(uint64_t v)
{
	return (struct be64){ htobe64(v) };
}

static inline struct le64 put_le64(uint64_t v)
{
	return (struct le64){ htole64(v) };
}

#endif
