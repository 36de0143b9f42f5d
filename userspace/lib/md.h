/* SPDX-License-Identifier: MIT */
/*
 * md — on-disk metadata, format version 1: superblock codec and layout.
 *
 * The metadata area holds two superblock slots, the activity-log ring and
 * one bitmap per peer slot. Placement:
 *  - internal: at the end of the backing device; the data area shrinks;
 *  - external: a separate file or device, starting at offset 0.
 * Byte-level layout and the crash-safety argument: docs/metadata-format.md.
 * The packed big-endian on-disk struct lives in md.c next to its only
 * converters; this header is the CPU-side view.
 *
 * Pure logic: no I/O (mdio does the reading and writing).
 */
#ifndef DUET_MD_H
#define DUET_MD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MD_VERSION 1
#define MD_SB_SIZE 4096u      /* one superblock slot */
#define MD_ALIGN 4096u	      /* every area starts 4 KiB aligned */
#define MD_MAX_PEERS 4	      /* bitmap-UUID slots; a pair uses one */
#define MD_HISTORY 4	      /* older current UUIDs kept */
#define MD_NODE_ID_MAX 31
#define MD_MIN_DATA_BYTES (1u << 20) /* refuse disks with < 1 MiB of data */

enum md_placement {
	MD_INTERNAL = 1,
	MD_EXTERNAL = 2,
};

/* Superblock flags (DRBD's MDF_* in spirit). */
enum md_flags {
	MD_F_CONSISTENT = 1u << 0,	/* data is not mid-sync-target */
	MD_F_WAS_UP_TO_DATE = 1u << 1,	/* UpToDate when last detached */
	MD_F_PRIMARY = 1u << 2,		/* role was Primary (crash detection) */
	MD_F_CRASHED_PRIMARY = 1u << 3, /* came up after a crash as Primary */
	MD_F_FULL_SYNC = 1u << 4,	/* a full sync is required */
	MD_F_AL_CLEAN = 1u << 5,	/* AL empty at clean shutdown */
	MD_F_CONNECTED = 1u << 6,	/* was connected when last written */
	MD_F_ALL = (1u << 7) - 1,
};

/* Per-peer flags. */
enum md_peer_flags {
	MD_PF_PEER_OUTDATED = 1u << 0,	/* we fenced/outdated that peer */
	MD_PF_USED = 1u << 1,		/* slot is assigned to a node id */
	MD_PF_ALL = (1u << 2) - 1,
};

struct md_peer {
	uint32_t node_id;
	uint32_t flags;		/* enum md_peer_flags */
	uint64_t bitmap_uuid;	/* current UUID when that peer went away; 0 */
};

/* CPU-side superblock. All offsets are absolute bytes on the md device. */
struct md_super {
	uint32_t version;	/* MD_VERSION */
	uint64_t seq;		/* bumped on every write; picks the slot */
	uint32_t placement;	/* enum md_placement */
	uint32_t flags;		/* enum md_flags */
	uint32_t node_id;	/* this node's id, 0..MD_NODE_ID_MAX */
	uint64_t device_uuid;	/* random, identifies this metadata */
	uint64_t created;	/* seconds since the epoch */

	uint64_t data_bytes;	/* usable data size in bytes (512-multiple) */
	uint64_t md_dev_bytes;	/* size of the device holding the metadata */
	uint64_t md_offset;	/* start of the metadata area */
	uint64_t md_bytes;	/* length of the metadata area */
	uint64_t sb_offset[2];	/* the two superblock slots */

	uint32_t bm_granularity;	/* bytes per bit */
	uint32_t bm_nr_slots;		/* bitmaps present (peer slots used) */
	uint64_t bm_offset;		/* first bitmap */
	uint64_t bm_bytes;		/* bytes per bitmap (4 KiB multiple) */

	uint64_t al_offset;		/* activity-log ring */
	uint32_t al_ring_blocks;	/* ring length in 4 KiB blocks */
	uint32_t al_nr_slots;		/* hot-set size ("al-extents") */
	uint32_t al_extent_shift;	/* log2 of the extent size */

	uint64_t current_uuid;		/* generation of the data */
	uint64_t promoted;		/* last promotion to Primary, seconds
					 * since the epoch; 0 never (used by
					 * discard-younger-primary) */
	uint64_t history[MD_HISTORY];	/* older generations, newest first */
	struct md_peer peers[MD_MAX_PEERS];
};

/* What create-md asks for. */
struct md_geometry {
	enum md_placement placement;
	uint64_t backing_bytes;	 /* size of the data (backing) device */
	uint64_t md_dev_bytes;	 /* external: size of the md device */
	uint32_t bm_granularity; /* 0: BM_GRAN_DEFAULT */
	uint32_t al_nr_slots;	 /* 0: AL_SLOTS_DEFAULT */
	uint32_t al_extent_shift;/* 0: AL_EXTENT_SHIFT_DEFAULT */
	uint32_t bm_nr_slots;	 /* 0: 1 */
	uint32_t node_id;
};

/*
 * Compute a fresh superblock for @g: layout (sizes and offsets), a new
 * device UUID, current UUID 0 ("just created": the first promotion with
 * --force or new-current-uuid assigns one). Returns 0, -EINVAL for a bad
 * parameter, -ENOSPC when the devices are too small (@why says by how much).
 */
int md_layout(const struct md_geometry *g, struct md_super *sb, char *why,
	      size_t why_len);

/* Encode into @buf (MD_SB_SIZE bytes) with the CRC filled in. 0 / -EINVAL. */
int md_encode(const struct md_super *sb, void *buf);

/*
 * Decode and validate @buf read from a device of @md_dev_bytes bytes. Checks
 * magic, version, CRC, every size, alignment and bound (areas inside the
 * device, not overlapping each other or the data area). Returns 0, or
 * -ENODATA (no superblock: zeroes / no magic), -EPROTO (unknown version),
 * -EBADMSG (CRC mismatch: torn or corrupted), -EUCLEAN (fields that do
 * not fit), with a human-readable @why naming the offending field.
 */
int md_decode(const void *buf, uint64_t md_dev_bytes, struct md_super *sb,
	      char *why, size_t why_len);

/* Where the slots live for a placement, before any superblock is read. */
int md_sb_offsets(enum md_placement p, uint64_t md_dev_bytes,
		  uint64_t off[2]);

/* Push @sb->current_uuid into the history and set a new current UUID. */
void md_uuid_rotate(struct md_super *sb, uint64_t new_uuid);

const char *md_placement_name(uint32_t p);
/* Flag names joined by ",", e.g. "consistent,was-up-to-date". */
const char *md_flags_str(uint32_t flags, char *buf, size_t len);

#endif
