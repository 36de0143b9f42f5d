/* SPDX-License-Identifier: MIT */
/*
 * eng_fault_ — TEST ONLY: fault injection for the backing I/O engines.
 *
 * A decorator around the configured engine (eng_uring_ops, eng_aio_ops)
 * that fails chosen backing I/O with EIO, so that the tests can exercise
 * `on-io-error` without a broken disk. It is off unless the daemon is
 * started with the environment variable DUET_TEST_FAIL_IO set; then every
 * engine eng_find() hands out is wrapped. Never set it in production: the
 * node loses its disk on purpose.
 *
 *	DUET_TEST_FAIL_IO="KEY=VALUE[,KEY=VALUE...]"
 *	  after=N          fail matching operations once N of them passed
 *	                   (counted over every queue; default 0: at once)
 *	  file=PATH        fail them only while PATH exists (checked on each
 *	                   operation), so a test can start the failure in the
 *	                   middle of a workload
 *	  ops=all|read|write  which operations: read, or the data-changing
 *	                   ones (write, discard, write-zeroes, flush); default all
 *	  sectors=S+N      only operations touching sectors [S, S+N); a flush
 *	                   never matches a range
 *
 * A failed operation is not started at all: submit returns -EIO (the engine
 * contract's "nothing was started"). The metadata area is written by mdio,
 * not by the engines, so it stays writable: the disk's data fails, its
 * metadata does not (what a bad sector range looks like). The apply worker
 * and the resync read with their own descriptor and are not affected.
 */
#ifndef DUET_ENG_FAULT_H
#define DUET_ENG_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eng.h"

#define ENG_FAULT_ENV "DUET_TEST_FAIL_IO"

/* What to fail; see the comment above. */
struct eng_fault_spec {
	uint64_t after;		/* matching operations to let through */
	char file[256];		/* "" = always armed */
	bool reads;		/* READ matches */
	bool writes;		/* WRITE, DISCARD, WRITE_ZEROES, FLUSH match */
	bool ranged;		/* only [sector, sector + nr) */
	uint64_t sector;	/* 512-byte sectors */
	uint64_t nr;
};

/*
 * Parse @s into @spec. 0, or -EINVAL with @why naming the bad part. Pure.
 */
int eng_fault_parse(const char *s, struct eng_fault_spec *spec, char *why,
		    size_t why_len);

/*
 * Does the operation @op on [@sector, +@nr) match @spec's filter (ops and
 * range; not the counter or the file)? Pure.
 */
bool eng_fault_matches(const struct eng_fault_spec *spec, unsigned int op,
		       uint64_t sector, uint64_t nr);

/*
 * Read ENG_FAULT_ENV once, at daemon start, before any eng_find(): 0 when
 * it is unset (no injection) or valid (injection on, logged loudly),
 * -EINVAL with @why when it cannot be parsed.
 */
int eng_fault_setup(char *why, size_t why_len);

/* @inner, or its fault-injecting wrapper when eng_fault_setup enabled it. */
const struct eng_ops *eng_fault_wrap(const struct eng_ops *inner);

/* Operations failed on purpose so far. */
uint64_t eng_fault_injected(void);

#endif
