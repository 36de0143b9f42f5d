// SPDX-License-Identifier: MIT
/*
 * The superblock codec and the layout of the metadata area (format
 * version 1, described byte by byte in docs/metadata-format.md).
 *
 * md_decode() reads a slot that may hold anything: zeroes, another
 * program's data, a torn write, a superblock of a newer duet, or a valid
 * superblock whose device was truncated since. Every field is validated
 * before it is used, and the message names the field, because dump-md and
 * attach show it to an operator who has to decide what to do.
 *
 * md_encode() runs the same validation, so no bug elsewhere can write a
 * superblock that the next attach would refuse.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "al.h"
#include "be.h"
#include "bm.h"
#include "crc.h"
#include "log.h"
#include "md.h"
#include "util.h"

/* "DUETMDv1" read as a big-endian 64-bit number. */
#define MD_MAGIC 0x445545544d447631ull

struct md_peer_disk {
	struct be32 node_id;
	struct be32 flags;		/* enum md_peer_flags */
	struct be64 bitmap_uuid;
} __attribute__((packed));

_Static_assert(sizeof(struct md_peer_disk) == 16, "md_peer_disk");

/*
 * Magic, version and crc form a header that stays where it is in every
 * future format version, and the CRC always covers the whole 4 KiB slot:
 * so a reader can tell "unknown version" (CRC good) from "corrupted"
 * (CRC bad) without understanding the rest.
 */
struct md_super_disk {
	struct be64 magic;		/*   0: MD_MAGIC, "DUETMDv1" */
	struct be32 version;		/*   8: MD_VERSION */
	struct be32 crc;		/*  12: CRC32C of the slot (crc = 0) */
	struct be64 seq;		/*  16: write counter, picks the slot */
	struct be32 placement;		/*  24: enum md_placement */
	struct be32 flags;		/*  28: enum md_flags */
	struct be32 node_id;		/*  32: 0..MD_NODE_ID_MAX */
	struct be32 reserved0;		/*  36: zero */
	struct be64 device_uuid;	/*  40: random, never 0 */
	struct be64 created;		/*  48: seconds since the epoch */
	struct be64 data_bytes;		/*  56: bytes, 512-multiple */
	struct be64 md_dev_bytes;	/*  64: bytes, at creation */
	struct be64 md_offset;		/*  72: bytes on the md device */
	struct be64 md_bytes;		/*  80: bytes */
	struct be64 sb_offset[2];	/*  88: bytes on the md device */
	struct be32 bm_granularity;	/* 104: bytes of data per bit */
	struct be32 bm_nr_slots;	/* 108: bitmaps present */
	struct be64 bm_offset;		/* 112: bytes on the md device */
	struct be64 bm_bytes;		/* 120: bytes per bitmap */
	struct be64 al_offset;		/* 128: bytes on the md device */
	struct be32 al_ring_blocks;	/* 136: 4 KiB blocks */
	struct be32 al_nr_slots;	/* 140: hot extents */
	struct be32 al_extent_shift;	/* 144: log2(bytes per extent) */
	struct be32 reserved1;		/* 148: zero */
	struct be64 current_uuid;	/* 152: generation of the data */
	struct be64 history[MD_HISTORY];	  /* 160: newest first */
	struct md_peer_disk peers[MD_MAX_PEERS]; /* 192 */
	struct be64 promoted;		/* 256: seconds since the epoch */
	uint8_t reserved2[248];		/* 264: zero */
} __attribute__((packed));

_Static_assert(sizeof(struct md_super_disk) == 512, "md_super_disk");
_Static_assert(sizeof(struct md_super_disk) <= MD_SB_SIZE, "slot");
_Static_assert(offsetof(struct md_super_disk, crc) == 12, "crc offset");
_Static_assert(offsetof(struct md_super_disk, peers) == 192, "peers");

#define CRC_OFF offsetof(struct md_super_disk, crc)
#define CRC_END (CRC_OFF + sizeof(struct be32))

/* CRC32C of the slot with the crc field taken as zero, without a copy. */
static uint32_t slot_crc(const uint8_t *slot)
{
	static const uint8_t zero[sizeof(struct be32)];
	uint32_t crc;

	crc = crc32c_update(0, slot, CRC_OFF);
	crc = crc32c_update(crc, zero, sizeof(zero));
	return crc32c_update(crc, slot + CRC_END, MD_SB_SIZE - CRC_END);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

typedef unsigned long long ull;

struct area {
	const char *name;
	uint64_t off;
	uint64_t len;
};

/* Aligned, inside the device, inside the metadata area. */
static int check_area(const struct area *a, uint64_t dev_bytes,
		      uint64_t md_off, uint64_t md_end, char *why, size_t len)
{
	if (a->off % MD_ALIGN || a->len % MD_ALIGN || !a->len)
		return util_why(-EUCLEAN, why, len,
			    "%s area (offset %llu, %llu bytes) is empty or not 4 KiB aligned",
			    a->name, (ull)a->off, (ull)a->len);
	if (a->off > dev_bytes || a->len > dev_bytes - a->off)
		return util_why(-EUCLEAN, why, len,
			    "%s area [%llu, %llu) extends past the end of the metadata device (%llu bytes)",
			    a->name, (ull)a->off, (ull)(a->off + a->len),
			    (ull)dev_bytes);
	if (a->off < md_off || a->off + a->len > md_end)
		return util_why(-EUCLEAN, why, len,
			    "%s area [%llu, %llu) lies outside the metadata area [%llu, %llu)",
			    a->name, (ull)a->off, (ull)(a->off + a->len),
			    (ull)md_off, (ull)md_end);
	return 0;
}

static int check_overlaps(const struct area *a, size_t n, char *why,
			  size_t len)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = i + 1; j < n; j++) {
			if (a[i].off + a[i].len <= a[j].off ||
			    a[j].off + a[j].len <= a[i].off)
				continue;
			return util_why(-EUCLEAN, why, len,
				    "%s area [%llu, %llu) overlaps the %s area [%llu, %llu)",
				    a[i].name, (ull)a[i].off,
				    (ull)(a[i].off + a[i].len), a[j].name,
				    (ull)a[j].off, (ull)(a[j].off + a[j].len));
		}
	}
	return 0;
}

static int check_peers(const struct md_super *sb, char *why, size_t len)
{
	for (int i = 0; i < MD_MAX_PEERS; i++) {
		const struct md_peer *p = &sb->peers[i];

		if (p->flags & ~(uint32_t)MD_PF_ALL)
			return util_why(-EUCLEAN, why, len,
				    "peer slot %d: unknown flag bits 0x%x",
				    i, p->flags & ~(uint32_t)MD_PF_ALL);
		if (p->node_id > MD_NODE_ID_MAX)
			return util_why(-EUCLEAN, why, len,
				    "peer slot %d: node id %u out of range (0..%d)",
				    i, p->node_id, MD_NODE_ID_MAX);
		if (!(p->flags & MD_PF_USED)) {
			if (p->flags)
				return util_why(-EUCLEAN, why, len,
					    "peer slot %d is not in use but has flags 0x%x",
					    i, p->flags);
			continue;
		}
		if ((uint32_t)i >= sb->bm_nr_slots)
			return util_why(-EUCLEAN, why, len,
				    "peer slot %d is in use but only %u bitmap(s) are allocated",
				    i, sb->bm_nr_slots);
		if (p->node_id == sb->node_id)
			return util_why(-EUCLEAN, why, len,
				    "peer slot %d has this node's own node id %u",
				    i, p->node_id);
		for (int j = 0; j < i; j++) {
			if ((sb->peers[j].flags & MD_PF_USED) &&
			    sb->peers[j].node_id == p->node_id)
				return util_why(-EUCLEAN, why, len,
					    "peer slots %d and %d both have node id %u",
					    j, i, p->node_id);
		}
	}
	return 0;
}

/* The scalar fields, before any of them is used to size something. */
static int check_scalars(const struct md_super *sb, uint64_t dev_bytes,
			 char *why, size_t len)
{
	if (sb->placement != MD_INTERNAL && sb->placement != MD_EXTERNAL)
		return util_why(-EUCLEAN, why, len, "unknown placement %u",
			    sb->placement);
	if (sb->flags & ~(uint32_t)MD_F_ALL)
		return util_why(-EUCLEAN, why, len,
			    "unknown flag bits 0x%x in flags 0x%x",
			    sb->flags & ~(uint32_t)MD_F_ALL, sb->flags);
	if (sb->node_id > MD_NODE_ID_MAX)
		return util_why(-EUCLEAN, why, len,
			    "node id %u out of range (0..%d)", sb->node_id,
			    MD_NODE_ID_MAX);
	if (!sb->device_uuid)
		return util_why(-EUCLEAN, why, len, "device UUID is 0");
	if (sb->md_dev_bytes > dev_bytes)
		return util_why(-EUCLEAN, why, len,
			    "metadata device is %llu bytes, smaller than the md_dev_bytes %llu recorded at creation: truncated?",
			    (ull)dev_bytes, (ull)sb->md_dev_bytes);
	if (sb->data_bytes % SECTOR_SIZE)
		return util_why(-EUCLEAN, why, len,
			    "data size %llu is not a multiple of 512",
			    (ull)sb->data_bytes);
	if (sb->data_bytes < MD_MIN_DATA_BYTES)
		return util_why(-EUCLEAN, why, len,
			    "data size %llu is below the minimum of %u bytes",
			    (ull)sb->data_bytes, MD_MIN_DATA_BYTES);
	if (!is_pow2(sb->bm_granularity) ||
	    sb->bm_granularity < BM_GRAN_MIN ||
	    sb->bm_granularity > BM_GRAN_MAX)
		return util_why(-EUCLEAN, why, len,
			    "bitmap granularity %u is not a power of two in [%u, %u]",
			    sb->bm_granularity, BM_GRAN_MIN, BM_GRAN_MAX);
	if (sb->bm_nr_slots < 1 || sb->bm_nr_slots > MD_MAX_PEERS)
		return util_why(-EUCLEAN, why, len,
			    "bitmap count %u out of range (1..%d)",
			    sb->bm_nr_slots, MD_MAX_PEERS);
	if (sb->al_nr_slots < AL_SLOTS_MIN || sb->al_nr_slots > AL_SLOTS_MAX)
		return util_why(-EUCLEAN, why, len,
			    "activity-log slot count %u out of range (%u..%u)",
			    sb->al_nr_slots, AL_SLOTS_MIN, AL_SLOTS_MAX);
	if (sb->al_extent_shift < AL_EXTENT_SHIFT_MIN ||
	    sb->al_extent_shift > AL_EXTENT_SHIFT_MAX)
		return util_why(-EUCLEAN, why, len,
			    "activity-log extent shift %u out of range (%u..%u)",
			    sb->al_extent_shift, AL_EXTENT_SHIFT_MIN,
			    AL_EXTENT_SHIFT_MAX);
	if (sb->al_ring_blocks != al_ring_blocks(sb->al_nr_slots))
		return util_why(-EUCLEAN, why, len,
			    "activity-log ring of %u blocks, but %u slots need %u",
			    sb->al_ring_blocks, sb->al_nr_slots,
			    al_ring_blocks(sb->al_nr_slots));
	return check_peers(sb, why, len);
}

/* Does @sb fit a metadata device of @dev_bytes bytes? 0 or -EUCLEAN. */
static int md_validate(const struct md_super *sb, uint64_t dev_bytes,
		       char *why, size_t len)
{
	struct area a[4];
	uint64_t md_end, need;
	int ret;

	ret = check_scalars(sb, dev_bytes, why, len);
	if (ret)
		return ret;

	a[0] = (struct area){ "metadata", sb->md_offset, sb->md_bytes };
	ret = check_area(&a[0], dev_bytes, 0, dev_bytes, why, len);
	if (ret)
		return ret;
	md_end = sb->md_offset + sb->md_bytes;

	if (sb->bm_bytes % BM_PAGE_SIZE)
		return util_why(-EUCLEAN, why, len,
			    "bitmap size %llu is not a multiple of 4096",
			    (ull)sb->bm_bytes);
	/* Keeps bm_bytes * bm_nr_slots below from overflowing. */
	if (sb->bm_bytes > dev_bytes / sb->bm_nr_slots)
		return util_why(-EUCLEAN, why, len,
			    "%u bitmap(s) of %llu bytes do not fit the metadata device (%llu bytes)",
			    sb->bm_nr_slots, (ull)sb->bm_bytes, (ull)dev_bytes);
	need = bm_disk_bytes_for(sb->data_bytes >> SECTOR_SHIFT,
				 sb->bm_granularity);
	if (sb->bm_bytes < need)
		return util_why(-EUCLEAN, why, len,
			    "bitmap size %llu is smaller than the %llu bytes a %llu-byte data area needs at granularity %u",
			    (ull)sb->bm_bytes, (ull)need, (ull)sb->data_bytes,
			    sb->bm_granularity);

	a[0] = (struct area){ "superblock slot 0", sb->sb_offset[0],
			      MD_SB_SIZE };
	a[1] = (struct area){ "superblock slot 1", sb->sb_offset[1],
			      MD_SB_SIZE };
	a[2] = (struct area){ "activity-log", sb->al_offset,
			      (uint64_t)sb->al_ring_blocks * AL_BLOCK_SIZE };
	a[3] = (struct area){ "bitmap", sb->bm_offset,
			      sb->bm_bytes * sb->bm_nr_slots };
	for (int i = 0; i < 4; i++) {
		ret = check_area(&a[i], dev_bytes, sb->md_offset, md_end, why,
				 len);
		if (ret)
			return ret;
	}
	ret = check_overlaps(a, 4, why, len);
	if (ret)
		return ret;

	/* Internal: the data area [0, data_bytes) shares the device. */
	if (sb->placement == MD_INTERNAL && sb->data_bytes > sb->md_offset)
		return util_why(-EUCLEAN, why, len,
			    "data area [0, %llu) overlaps the metadata area [%llu, %llu)",
			    (ull)sb->data_bytes, (ull)sb->md_offset,
			    (ull)md_end);
	return 0;
}

int md_sb_offsets(enum md_placement p, uint64_t md_dev_bytes,
		  uint64_t off[2])
{
	uint64_t end = ROUND_DOWN(md_dev_bytes, (uint64_t)MD_ALIGN);

	if (end < 2 * MD_SB_SIZE)
		return -ENOSPC;
	switch (p) {
	case MD_INTERNAL:
		off[0] = end - 2 * MD_SB_SIZE;
		off[1] = end - MD_SB_SIZE;
		return 0;
	case MD_EXTERNAL:
		off[0] = 0;
		off[1] = MD_SB_SIZE;
		return 0;
	}
	return -EINVAL;
}

/*
 * The smallest bitmap size B (a page multiple) such that a bitmap of B bytes
 * covers the data left over after @nr bitmaps of B bytes are taken from
 * @avail. f(B) = bitmap needed for (avail - nr * B) never grows with B, so
 * "f(B) <= B" holds from the smallest solution upward: start from a lower
 * bound and walk up. The walk is at most a page or two, because taking a
 * few pages of data away changes the bitmap by at most one page.
 */
static uint64_t internal_bm_bytes(uint64_t avail, uint32_t nr,
				  uint32_t gran)
{
	uint64_t hi = bm_disk_bytes_for(avail >> SECTOR_SHIFT, gran);
	uint64_t b = bm_disk_bytes_for((avail - nr * hi) >> SECTOR_SHIFT, gran);

	while (b < hi &&
	       bm_disk_bytes_for((avail - nr * b) >> SECTOR_SHIFT, gran) > b)
		b += BM_PAGE_SIZE;
	return b;
}

static int layout_internal(const struct md_geometry *g, uint32_t ring_bytes,
			   struct md_super *sb, char *why, size_t len)
{
	uint64_t end = ROUND_DOWN(g->backing_bytes, (uint64_t)MD_ALIGN);
	uint64_t fixed = 2 * MD_SB_SIZE + (uint64_t)ring_bytes;
	uint64_t min_md, b;

	min_md = bm_disk_bytes_for(MD_MIN_DATA_BYTES >> SECTOR_SHIFT,
				   sb->bm_granularity);
	min_md = fixed + (uint64_t)sb->bm_nr_slots * min_md;
	if (end < MD_MIN_DATA_BYTES + min_md)
		return util_why(-ENOSPC, why, len,
			    "backing device of %llu bytes is too small for internal metadata: it needs at least %llu bytes (%u bytes of data plus %llu of metadata)",
			    (ull)g->backing_bytes,
			    (ull)(MD_MIN_DATA_BYTES + min_md),
			    MD_MIN_DATA_BYTES, (ull)min_md);

	b = internal_bm_bytes(end - fixed, sb->bm_nr_slots, sb->bm_granularity);
	if (end - fixed - sb->bm_nr_slots * b < MD_MIN_DATA_BYTES)
		return util_why(-ENOSPC, why, len,
			    "backing device of %llu bytes is too small for internal metadata: %llu bytes of metadata leave less than %u bytes of data",
			    (ull)g->backing_bytes,
			    (ull)(fixed + sb->bm_nr_slots * b),
			    MD_MIN_DATA_BYTES);
	sb->data_bytes = end - fixed - sb->bm_nr_slots * b;
	sb->md_dev_bytes = g->backing_bytes;
	sb->md_offset = sb->data_bytes;
	sb->md_bytes = end - sb->md_offset;
	sb->bm_offset = sb->md_offset;
	sb->bm_bytes = b;
	sb->al_offset = sb->bm_offset + sb->bm_nr_slots * b;
	sb->sb_offset[0] = end - 2 * MD_SB_SIZE;
	sb->sb_offset[1] = end - MD_SB_SIZE;
	return 0;
}

static int layout_external(const struct md_geometry *g, uint32_t ring_bytes,
			   struct md_super *sb, char *why, size_t len)
{
	uint64_t data = ROUND_DOWN(g->backing_bytes, (uint64_t)MD_ALIGN);
	uint64_t b, need;

	if (data < MD_MIN_DATA_BYTES)
		return util_why(-ENOSPC, why, len,
			    "backing device of %llu bytes is too small: at least %u bytes of data are needed",
			    (ull)g->backing_bytes, MD_MIN_DATA_BYTES);
	b = bm_disk_bytes_for(data >> SECTOR_SHIFT, sb->bm_granularity);
	need = 2 * MD_SB_SIZE + (uint64_t)ring_bytes + sb->bm_nr_slots * b;
	if (g->md_dev_bytes < need)
		return util_why(-ENOSPC, why, len,
			    "external metadata device of %llu bytes is too small: this layout needs %llu bytes (%llu of bitmap, %u of activity log, %u of superblocks)",
			    (ull)g->md_dev_bytes, (ull)need,
			    (ull)(sb->bm_nr_slots * b), ring_bytes,
			    2 * MD_SB_SIZE);

	sb->data_bytes = data;
	sb->md_dev_bytes = g->md_dev_bytes;
	sb->md_offset = 0;
	sb->md_bytes = need;
	sb->sb_offset[0] = 0;
	sb->sb_offset[1] = MD_SB_SIZE;
	sb->al_offset = 2 * MD_SB_SIZE;
	sb->bm_offset = sb->al_offset + ring_bytes;
	sb->bm_bytes = b;
	return 0;
}

int md_layout(const struct md_geometry *g, struct md_super *sb, char *why,
	      size_t why_len)
{
	uint32_t gran, slots, shift, nr;
	int ret;

	if (!g || !sb)
		return util_why(-EINVAL, why, why_len, "no geometry");
	gran = g->bm_granularity ? g->bm_granularity : BM_GRAN_DEFAULT;
	slots = g->al_nr_slots ? g->al_nr_slots : AL_SLOTS_DEFAULT;
	shift = g->al_extent_shift ? g->al_extent_shift :
				     AL_EXTENT_SHIFT_DEFAULT;
	nr = g->bm_nr_slots ? g->bm_nr_slots : 1;

	if (g->placement != MD_INTERNAL && g->placement != MD_EXTERNAL)
		return util_why(-EINVAL, why, why_len, "unknown placement %d",
			    (int)g->placement);
	if (!is_pow2(gran) || gran < BM_GRAN_MIN || gran > BM_GRAN_MAX)
		return util_why(-EINVAL, why, why_len,
			    "bitmap granularity %u is not a power of two in [%u, %u]",
			    gran, BM_GRAN_MIN, BM_GRAN_MAX);
	if (slots < AL_SLOTS_MIN || slots > AL_SLOTS_MAX)
		return util_why(-EINVAL, why, why_len,
			    "activity-log slot count %u out of range (%u..%u)",
			    slots, AL_SLOTS_MIN, AL_SLOTS_MAX);
	if (shift < AL_EXTENT_SHIFT_MIN || shift > AL_EXTENT_SHIFT_MAX)
		return util_why(-EINVAL, why, why_len,
			    "activity-log extent shift %u out of range (%u..%u)",
			    shift, AL_EXTENT_SHIFT_MIN, AL_EXTENT_SHIFT_MAX);
	if (nr > MD_MAX_PEERS)
		return util_why(-EINVAL, why, why_len,
			    "bitmap count %u out of range (1..%d)", nr,
			    MD_MAX_PEERS);
	if (g->node_id > MD_NODE_ID_MAX)
		return util_why(-EINVAL, why, why_len,
			    "node id %u out of range (0..%d)", g->node_id,
			    MD_NODE_ID_MAX);

	memset(sb, 0, sizeof(*sb));
	sb->version = MD_VERSION;
	sb->placement = g->placement;
	/* The ring is written empty at creation, like after a clean stop. */
	sb->flags = MD_F_AL_CLEAN;
	sb->node_id = g->node_id;
	sb->bm_granularity = gran;
	sb->bm_nr_slots = nr;
	sb->al_nr_slots = slots;
	sb->al_extent_shift = shift;
	sb->al_ring_blocks = al_ring_blocks(slots);

	if (g->placement == MD_INTERNAL)
		ret = layout_internal(g, sb->al_ring_blocks * AL_BLOCK_SIZE, sb,
				      why, why_len);
	else
		ret = layout_external(g, sb->al_ring_blocks * AL_BLOCK_SIZE, sb,
				      why, why_len);
	if (ret)
		return ret;

	sb->device_uuid = util_random_u64();
	sb->created = (uint64_t)time(NULL);

	/* A layout the decoder would refuse is a bug here, not bad input. */
	ret = md_validate(sb, sb->md_dev_bytes, why, why_len);
	return ret ? -EINVAL : 0;
}

int md_encode(const struct md_super *sb, void *buf)
{
	struct md_super_disk *d = buf;
	char why[256];
	int ret;

	if (sb->version != MD_VERSION) {
		log_err("md: refusing to encode superblock version %u",
			sb->version);
		return -EINVAL;
	}
	ret = md_validate(sb, sb->md_dev_bytes, why, sizeof(why));
	if (ret) {
		log_err("md: refusing to encode an invalid superblock: %s",
			why);
		return -EINVAL;
	}

	memset(buf, 0, MD_SB_SIZE);
	d->magic = put_be64(MD_MAGIC);
	d->version = put_be32(sb->version);
	d->seq = put_be64(sb->seq);
	d->placement = put_be32(sb->placement);
	d->flags = put_be32(sb->flags);
	d->node_id = put_be32(sb->node_id);
	d->device_uuid = put_be64(sb->device_uuid);
	d->created = put_be64(sb->created);
	d->data_bytes = put_be64(sb->data_bytes);
	d->md_dev_bytes = put_be64(sb->md_dev_bytes);
	d->md_offset = put_be64(sb->md_offset);
	d->md_bytes = put_be64(sb->md_bytes);
	for (int i = 0; i < 2; i++)
		d->sb_offset[i] = put_be64(sb->sb_offset[i]);
	d->bm_granularity = put_be32(sb->bm_granularity);
	d->bm_nr_slots = put_be32(sb->bm_nr_slots);
	d->bm_offset = put_be64(sb->bm_offset);
	d->bm_bytes = put_be64(sb->bm_bytes);
	d->al_offset = put_be64(sb->al_offset);
	d->al_ring_blocks = put_be32(sb->al_ring_blocks);
	d->al_nr_slots = put_be32(sb->al_nr_slots);
	d->al_extent_shift = put_be32(sb->al_extent_shift);
	d->current_uuid = put_be64(sb->current_uuid);
	for (int i = 0; i < MD_HISTORY; i++)
		d->history[i] = put_be64(sb->history[i]);
	d->promoted = put_be64(sb->promoted);
	for (int i = 0; i < MD_MAX_PEERS; i++) {
		d->peers[i].node_id = put_be32(sb->peers[i].node_id);
		d->peers[i].flags = put_be32(sb->peers[i].flags);
		d->peers[i].bitmap_uuid = put_be64(sb->peers[i].bitmap_uuid);
	}
	d->crc = put_be32(slot_crc(buf));
	return 0;
}

static void from_disk(const struct md_super_disk *d, struct md_super *sb)
{
	memset(sb, 0, sizeof(*sb));
	sb->version = get_be32(d->version);
	sb->seq = get_be64(d->seq);
	sb->placement = get_be32(d->placement);
	sb->flags = get_be32(d->flags);
	sb->node_id = get_be32(d->node_id);
	sb->device_uuid = get_be64(d->device_uuid);
	sb->created = get_be64(d->created);
	sb->data_bytes = get_be64(d->data_bytes);
	sb->md_dev_bytes = get_be64(d->md_dev_bytes);
	sb->md_offset = get_be64(d->md_offset);
	sb->md_bytes = get_be64(d->md_bytes);
	for (int i = 0; i < 2; i++)
		sb->sb_offset[i] = get_be64(d->sb_offset[i]);
	sb->bm_granularity = get_be32(d->bm_granularity);
	sb->bm_nr_slots = get_be32(d->bm_nr_slots);
	sb->bm_offset = get_be64(d->bm_offset);
	sb->bm_bytes = get_be64(d->bm_bytes);
	sb->al_offset = get_be64(d->al_offset);
	sb->al_ring_blocks = get_be32(d->al_ring_blocks);
	sb->al_nr_slots = get_be32(d->al_nr_slots);
	sb->al_extent_shift = get_be32(d->al_extent_shift);
	sb->current_uuid = get_be64(d->current_uuid);
	for (int i = 0; i < MD_HISTORY; i++)
		sb->history[i] = get_be64(d->history[i]);
	sb->promoted = get_be64(d->promoted);
	for (int i = 0; i < MD_MAX_PEERS; i++) {
		sb->peers[i].node_id = get_be32(d->peers[i].node_id);
		sb->peers[i].flags = get_be32(d->peers[i].flags);
		sb->peers[i].bitmap_uuid = get_be64(d->peers[i].bitmap_uuid);
	}
}

int md_decode(const void *buf, uint64_t md_dev_bytes, struct md_super *sb,
	      char *why, size_t why_len)
{
	const struct md_super_disk *d = buf;
	const uint8_t *p = buf;
	uint32_t stored, computed, version;
	uint64_t magic;
	struct md_super tmp;
	int ret;

	if (all_zero(p, MD_SB_SIZE))
		return util_why(-ENODATA, why, why_len,
			    "blank (all zeroes): no superblock");
	magic = get_be64(d->magic);
	if (magic != MD_MAGIC)
		return util_why(-ENODATA, why, why_len,
			    "no duet superblock (magic 0x%016llx, expected 0x%016llx \"DUETMDv1\")",
			    (ull)magic, MD_MAGIC);
	stored = get_be32(d->crc);
	computed = slot_crc(p);
	if (stored != computed)
		return util_why(-EBADMSG, why, why_len,
			    "superblock CRC mismatch (stored 0x%08x, computed 0x%08x): torn write or corruption",
			    stored, computed);
	version = get_be32(d->version);
	if (version != MD_VERSION)
		return util_why(-EPROTO, why, why_len,
			    "unknown metadata version %u (this duet reads version %d)",
			    version, MD_VERSION);
	if (get_be32(d->reserved0) || get_be32(d->reserved1) ||
	    !all_zero(d->reserved2, sizeof(d->reserved2)) ||
	    !all_zero(p + sizeof(*d), MD_SB_SIZE - sizeof(*d)))
		return util_why(-EUCLEAN, why, why_len,
			    "reserved bytes of the superblock are not zero (written by a newer duet?)");

	from_disk(d, &tmp);
	ret = md_validate(&tmp, md_dev_bytes, why, why_len);
	if (ret)
		return ret;
	*sb = tmp;
	return 0;
}

void md_uuid_rotate(struct md_super *sb, uint64_t new_uuid)
{
	/* 0 means "no generation yet": not worth a history entry. */
	if (sb->current_uuid) {
		memmove(&sb->history[1], &sb->history[0],
			(MD_HISTORY - 1) * sizeof(sb->history[0]));
		sb->history[0] = sb->current_uuid;
	}
	sb->current_uuid = new_uuid;
}

const char *md_placement_name(uint32_t p)
{
	switch (p) {
	case MD_INTERNAL:
		return "internal";
	case MD_EXTERNAL:
		return "external";
	}
	return "unknown";
}

const char *md_flags_str(uint32_t flags, char *buf, size_t len)
{
	static const char *const names[] = {
		"consistent",	   "was-up-to-date", "primary",
		"crashed-primary", "full-sync",	     "al-clean",
		"connected",
	};
	size_t used = 0;
	int n;

	_Static_assert(MD_F_ALL == (1u << ARRAY_SIZE(names)) - 1,
		       "a name for every flag");
	if (!len)
		return buf;
	buf[0] = '\0';
	for (unsigned int i = 0; i < 32 && used < len; i++) {
		if (!(flags & (1u << i)))
			continue;
		if (i < ARRAY_SIZE(names))
			n = snprintf(buf + used, len - used, "%s%s",
				     used ? "," : "", names[i]);
		else
			n = snprintf(buf + used, len - used, "%s0x%x",
				     used ? "," : "", 1u << i);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	return buf;
}
