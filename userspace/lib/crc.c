// SPDX-License-Identifier: MIT
#include <isa-l/crc.h>

#include "crc.h"

uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len)
{
	if (!len)
		return crc;
	/* ISA-L keeps the register un-inverted: invert on the way in and out. */
	return ~crc32_iscsi((unsigned char *)buf, (int)len, ~crc);
}

uint32_t crc32c(const void *buf, size_t len)
{
	return crc32c_update(0, buf, len);
}
