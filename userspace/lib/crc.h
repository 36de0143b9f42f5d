/* SPDX-License-Identifier: MIT */
/*
 * CRC32C (Castagnoli), the checksum of every duet format. Backed by Intel's
 * ISA-L (libisal), which picks the SSE4.2/PCLMUL path at run time.
 */
#ifndef DUET_CRC_H
#define DUET_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Standard CRC32C of @len bytes: crc32c("123456789") == 0xe3069283. */
uint32_t crc32c(const void *buf, size_t len);

/*
 * Continue a CRC32C over more bytes: crc32c_update(crc32c(a), b) equals the
 * CRC of a followed by b. Start a chain with crc32c(NULL, 0) == 0.
 */
uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len);

#endif
