/* SPDX-License-Identifier: MIT */
/*
 * mdio — reading and writing the metadata area (superblocks, bitmap pages,
 * activity-log blocks) with plain pread/pwrite/fdatasync.
 *
 * This is the synchronous path used by duetctl (create-md, dump-md,
 * wipe-md) and by duetd at attach and detach; the daemon's hot path writes
 * AL transactions through its own I/O engine at the offsets mdio computes.
 *
 * Superblock writes are crash-safe by two slots: each write goes to the
 * slot NOT holding the newest valid superblock, with seq + 1, followed by
 * fdatasync. A torn write therefore destroys at most the older copy; the
 * reader takes the valid slot with the higher seq.
 */
#ifndef DUET_MDIO_H
#define DUET_MDIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "al.h"
#include "bm.h"
#include "md.h"

struct mdio {
	int data_fd;		/* backing (data) device */
	int md_fd;		/* metadata device; == data_fd when internal */
	bool internal;
	bool rdonly;
	uint64_t data_dev_bytes; /* size of the backing device */
	uint64_t md_dev_bytes;	 /* size of the md device */
	struct md_super sb;	 /* newest valid superblock (after load) */
	int sb_slot;		 /* slot it came from: 0 or 1 */
	char slot_state[2][96];	 /* dump-md: what each slot held */
	struct bm *bm;		 /* bitmap of peer slot 0 (after load) */
	struct al *al;		 /* activity log (after load) */
};

#define MDIO_RDONLY 1u

/*
 * Open the backing device @data_path and, for external metadata, @md_path
 * (NULL for internal). Files and block devices are both accepted; sizes come
 * from fstat or BLKGETSIZE64. Returns 0 or -errno with @why filled.
 */
int mdio_open(struct mdio *m, const char *data_path, const char *md_path,
	      unsigned int flags, char *why, size_t why_len);
void mdio_close(struct mdio *m);

/*
 * Is there a valid superblock in either slot? 1 yes, 0 no (blank), -errno
 * with @why for an unreadable device. Used by create-md to refuse
 * overwriting without --force.
 */
int mdio_probe(struct mdio *m, char *why, size_t why_len);

/*
 * Write fresh metadata for @g: zeroed bitmap (all clean, or all dirty when
 * @full_sync), empty AL ring, superblock in both slots, fdatasync. The data
 * area is never touched. Returns 0 or -errno with @why.
 */
int mdio_create(struct mdio *m, const struct md_geometry *g, bool full_sync,
		char *why, size_t why_len);

/*
 * Read both superblock slots and pick the newest valid one; then the
 * bitmap and the AL ring (bm and al are allocated). Errors name the slot
 * and the field. Never reads or writes the data area.
 */
int mdio_load(struct mdio *m, char *why, size_t why_len);

/* Write the superblock (seq + 1, other slot, fdatasync). */
int mdio_write_sb(struct mdio *m);

/* Write bitmap pages [first, last] that changed, then fdatasync; marks them
 * clean. */
int mdio_write_bm_range(struct mdio *m, uint64_t first, uint64_t last);
/* Write every changed bitmap page, then fdatasync. */
int mdio_flush_bm(struct mdio *m);

/* Byte offset of bitmap page @page / AL ring block @blk on the md device. */
uint64_t mdio_bm_page_offset(const struct mdio *m, uint64_t page);
uint64_t mdio_al_block_offset(const struct mdio *m, uint32_t blk);

/* Write one AL block synchronously (pwrite + fdatasync). */
int mdio_write_al_block(struct mdio *m, uint32_t blk, const void *block);

/* Zero both superblock slots (and nothing else), fdatasync. */
int mdio_wipe(struct mdio *m, char *why, size_t why_len);

#endif
