// SPDX-License-Identifier: MIT
/*
 * Reading and writing the metadata area with pread/pwrite/fdatasync.
 *
 * Every offset used here comes from md_sb_offsets() or from a superblock
 * that md_decode() validated against the device size, so nothing in this
 * file can reach the data area: the data area is never read or written.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mdio.h"
#include "util.h"

/* Bitmap pages and AL blocks move in chunks of this many bytes. */
#define IO_CHUNK (1u << 20)

typedef unsigned long long ull;

/* Whole-buffer pread: 0, -errno, or -EIO for a device that ends early. */
static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int sync_fd(int fd)
{
	while (fdatasync(fd)) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int open_dev(const char *path, bool rdonly, int *fd_out,
		    uint64_t *bytes, struct stat *st, char *why, size_t len)
{
	int fd, ret;

	fd = open(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return util_why(-errno, why, len, "cannot open %s: %s", path,
			    strerror(errno));
	if (fstat(fd, st)) {
		ret = util_why(-errno, why, len, "cannot stat %s: %s", path,
			   strerror(errno));
		goto out_close;
	}
	if (S_ISBLK(st->st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, bytes)) {
			ret = util_why(-errno, why, len,
				   "cannot get the size of %s: %s", path,
				   strerror(errno));
			goto out_close;
		}
	} else if (S_ISREG(st->st_mode)) {
		*bytes = (uint64_t)st->st_size;
	} else {
		ret = util_why(-EINVAL, why, len,
			   "%s is neither a block device nor a regular file",
			   path);
		goto out_close;
	}
	*fd_out = fd;
	return 0;

out_close:
	close(fd);
	return ret;
}

int mdio_open(struct mdio *m, const char *data_path, const char *md_path,
	      unsigned int flags, char *why, size_t why_len)
{
	struct stat dst, mst;
	int ret;

	memset(m, 0, sizeof(*m));
	m->data_fd = m->md_fd = -1;
	m->sb_slot = -1;
	m->rdonly = flags & MDIO_RDONLY;
	m->internal = !md_path;

	ret = open_dev(data_path, m->rdonly, &m->data_fd, &m->data_dev_bytes,
		       &dst, why, why_len);
	if (ret)
		return ret;
	if (m->internal) {
		m->md_fd = m->data_fd;
		m->md_dev_bytes = m->data_dev_bytes;
		return 0;
	}
	ret = open_dev(md_path, m->rdonly, &m->md_fd, &m->md_dev_bytes, &mst,
		       why, why_len);
	if (ret)
		goto out_close;
	/* The two layouts would overwrite each other's superblocks. */
	if (dst.st_dev == mst.st_dev && dst.st_ino == mst.st_ino) {
		ret = util_why(-EINVAL, why, why_len,
			   "%s and %s are the same device: use internal metadata",
			   data_path, md_path);
		goto out_close;
	}
	return 0;

out_close:
	mdio_close(m);
	return ret;
}

void mdio_close(struct mdio *m)
{
	bm_free(m->bm);
	al_free(m->al);
	m->bm = NULL;
	m->al = NULL;
	if (m->md_fd >= 0 && m->md_fd != m->data_fd)
		close(m->md_fd);
	if (m->data_fd >= 0)
		close(m->data_fd);
	m->md_fd = m->data_fd = -1;
}

static enum md_placement placement(const struct mdio *m)
{
	return m->internal ? MD_INTERNAL : MD_EXTERNAL;
}

/*
 * Read and decode slot @i at @off into @sb, recording what it held in
 * slot_state. Returns md_decode()'s verdict, or the mdio-level checks that
 * md_decode cannot make: the slot must describe the placement it was
 * found in and name its own offset. A read error is returned as -EIO-ish
 * with @why set and slot_state saying "read error".
 */
static int read_slot(struct mdio *m, int i, uint64_t off, void *buf,
		     struct md_super *sb, char *why, size_t len)
{
	char msg[256];
	int ret;

	ret = read_full(m->md_fd, buf, MD_SB_SIZE, off);
	if (ret) {
		snprintf(m->slot_state[i], sizeof(m->slot_state[i]),
			 "read error: %s", strerror(-ret));
		return util_why(ret, why, len,
			    "cannot read superblock slot %d at offset %llu: %s",
			    i, (ull)off, strerror(-ret));
	}
	ret = md_decode(buf, m->md_dev_bytes, sb, msg, sizeof(msg));
	if (!ret && sb->placement != placement(m)) {
		snprintf(msg, sizeof(msg),
			 "superblock describes %s metadata, opened as %s",
			 md_placement_name(sb->placement),
			 md_placement_name(placement(m)));
		ret = -EUCLEAN;
	}
	if (!ret && sb->sb_offset[i] != off) {
		snprintf(msg, sizeof(msg),
			 "sb_offset[%d] %llu does not match the slot's offset %llu (copied from another device?)",
			 i, (ull)sb->sb_offset[i], (ull)off);
		ret = -EUCLEAN;
	}
	if (!ret && sb->data_bytes > m->data_dev_bytes) {
		snprintf(msg, sizeof(msg),
			 "data size %llu exceeds the backing device (%llu bytes)",
			 (ull)sb->data_bytes, (ull)m->data_dev_bytes);
		ret = -EUCLEAN;
	}
	if (!ret) {
		snprintf(m->slot_state[i], sizeof(m->slot_state[i]),
			 "valid seq %llu", (ull)sb->seq);
		return 0;
	}
	/* slot_state is short; a long message keeps its head. */
	snprintf(m->slot_state[i], sizeof(m->slot_state[i]), "%.*s",
		 (int)sizeof(m->slot_state[i]) - 1, msg);
	return util_why(ret, why, len, "slot %d (offset %llu): %s", i, (ull)off,
		    msg);
}

/* Which failure tells an operator the most? Higher wins. */
static int err_rank(int err)
{
	switch (err) {
	case -EPROTO:	/* a newer duet wrote it: upgrade, do not wipe */
		return 4;
	case -EUCLEAN:	/* intact but does not fit: names the field */
		return 3;
	case -EBADMSG:	/* ours, but damaged */
		return 2;
	case -ENODATA:	/* nothing there */
		return 1;
	}
	return 0;
}

/*
 * A slot that carries our magic but fails to decode is still somebody's
 * metadata (damaged, from a newer duet, or on a device that shrank);
 * create-md must not silently overwrite it, so it counts as present.
 */
int mdio_probe(struct mdio *m, char *why, size_t why_len)
{
	uint8_t *buf;
	uint64_t off[2];
	struct md_super sb;
	char msg[2][256];
	int ret, found = 0;

	if (md_sb_offsets(placement(m), m->md_dev_bytes, off))
		return 0; /* too small to hold a superblock at all */
	buf = malloc(MD_SB_SIZE);
	if (!buf)
		return util_why(-ENOMEM, why, why_len, "out of memory");
	for (int i = 0; i < 2; i++) {
		ret = read_slot(m, i, off[i], buf, &sb, msg[i], sizeof(msg[i]));
		if (ret && !err_rank(ret)) {
			util_why(ret, why, why_len, "%s", msg[i]);
			goto out_free;
		}
		if (ret != -ENODATA)
			found = 1;
	}
	ret = found;
	if (found)
		util_why(0, why, why_len, "slot 0: %s; slot 1: %s",
		     m->slot_state[0], m->slot_state[1]);
out_free:
	free(buf);
	return ret;
}

static int load_bitmap(struct mdio *m, char *why, size_t len)
{
	uint64_t pages, page = 0;
	uint8_t *buf;
	int ret = 0;

	m->bm = bm_create(m->sb.data_bytes >> SECTOR_SHIFT,
			  m->sb.bm_granularity);
	if (!m->bm)
		return util_why(-errno, why, len, "cannot allocate the bitmap: %s",
			    strerror(errno));
	buf = malloc(IO_CHUNK);
	if (!buf)
		return util_why(-ENOMEM, why, len, "out of memory");
	pages = bm_nr_pages(m->bm);
	while (page < pages) {
		uint64_t n = pages - page;

		if (n > IO_CHUNK / BM_PAGE_SIZE)
			n = IO_CHUNK / BM_PAGE_SIZE;
		ret = read_full(m->md_fd, buf, n * BM_PAGE_SIZE,
				mdio_bm_page_offset(m, page));
		if (ret) {
			util_why(ret, why, len, "cannot read bitmap pages at %llu: %s",
			     (ull)mdio_bm_page_offset(m, page), strerror(-ret));
			goto out_free;
		}
		for (uint64_t i = 0; i < n; i++, page++) {
			ret = bm_page_decode(m->bm, page,
					     buf + i * BM_PAGE_SIZE);
			if (ret) {
				util_why(ret, why, len,
				     "bitmap page %llu (offset %llu): bits set past the end of the data area (corrupt, or another geometry)",
				     (ull)page,
				     (ull)mdio_bm_page_offset(m, page));
				goto out_free;
			}
		}
	}
out_free:
	free(buf);
	return ret;
}

static int load_al(struct mdio *m, char *why, size_t len)
{
	size_t bytes = (size_t)m->sb.al_ring_blocks * AL_BLOCK_SIZE;
	char msg[200];
	uint8_t *ring;
	int ret;

	m->al = al_create(m->sb.al_nr_slots, m->sb.al_extent_shift,
			  m->sb.data_bytes >> SECTOR_SHIFT);
	if (!m->al)
		return util_why(-errno, why, len,
			    "cannot set up the activity log: %s",
			    strerror(errno));
	ring = malloc(bytes);
	if (!ring)
		return util_why(-ENOMEM, why, len, "out of memory");
	ret = read_full(m->md_fd, ring, bytes, m->sb.al_offset);
	if (ret) {
		util_why(ret, why, len, "cannot read the activity log at %llu: %s",
		     (ull)m->sb.al_offset, strerror(-ret));
		goto out_free;
	}
	ret = al_recover(m->al, ring, m->sb.al_ring_blocks, msg, sizeof(msg));
	if (ret)
		util_why(ret, why, len, "activity log: %s", msg);
out_free:
	free(ring);
	return ret;
}

int mdio_load(struct mdio *m, char *why, size_t why_len)
{
	struct md_super sb[2];
	char msg[2][256];
	uint64_t off[2];
	uint8_t *buf;
	int err[2], best, ret;

	bm_free(m->bm);
	al_free(m->al);
	m->bm = NULL;
	m->al = NULL;
	/* A failed load must not leave an older superblock writable. */
	memset(&m->sb, 0, sizeof(m->sb));
	m->sb_slot = -1;
	if (md_sb_offsets(placement(m), m->md_dev_bytes, off))
		return util_why(-ENODATA, why, why_len,
			    "metadata device of %llu bytes is too small to hold superblocks",
			    (ull)m->md_dev_bytes);
	buf = malloc(MD_SB_SIZE);
	if (!buf)
		return util_why(-ENOMEM, why, why_len, "out of memory");
	for (int i = 0; i < 2; i++) {
		err[i] = read_slot(m, i, off[i], buf, &sb[i], msg[i],
				   sizeof(msg[i]));
		if (err[i] && !err_rank(err[i])) {
			ret = util_why(err[i], why, why_len, "%s", msg[i]);
			goto out_free;
		}
	}

	if (err[0] && err[1]) {
		best = err_rank(err[1]) > err_rank(err[0]) ? 1 : 0;
		ret = util_why(err[best], why, why_len,
			   "no valid superblock: %s; %s", msg[0], msg[1]);
		goto out_free;
	}
	if (!err[0] && !err[1])
		best = sb[1].seq > sb[0].seq ? 1 : 0;
	else
		best = err[0] ? 1 : 0;
	if (err[!best])
		log_notice("md: superblock slot %d: %s; using slot %d (seq %llu)",
			   !best, m->slot_state[!best], best,
			   (ull)sb[best].seq);
	m->sb = sb[best];
	m->sb_slot = best;

	ret = load_bitmap(m, why, why_len);
	if (!ret)
		ret = load_al(m, why, why_len);
	if (ret) {
		bm_free(m->bm);
		al_free(m->al);
		m->bm = NULL;
		m->al = NULL;
	}
out_free:
	free(buf);
	return ret;
}

static bool loaded(const struct mdio *m)
{
	return m->sb.version == MD_VERSION && (m->sb_slot == 0 ||
					       m->sb_slot == 1);
}

int mdio_write_sb(struct mdio *m)
{
	struct md_super next;
	uint8_t *buf;
	int slot, ret;

	if (m->rdonly)
		return -EBADF;
	if (!loaded(m))
		return -EINVAL;
	slot = !m->sb_slot;
	next = m->sb;
	next.seq++;
	buf = malloc(MD_SB_SIZE);
	if (!buf)
		return -ENOMEM;
	ret = md_encode(&next, buf);
	if (ret)
		goto out_free;
	ret = write_full(m->md_fd, buf, MD_SB_SIZE, next.sb_offset[slot]);
	if (!ret)
		ret = sync_fd(m->md_fd);
	/*
	 * Only a durable write moves us over: after a failure the next
	 * attempt goes to the same (older) slot again, so the newest valid
	 * superblock is never the one being overwritten.
	 */
	if (!ret) {
		m->sb = next;
		m->sb_slot = slot;
	} else {
		log_err("md: writing superblock slot %d failed: %s", slot,
			strerror(-ret));
	}
out_free:
	free(buf);
	return ret;
}

uint64_t mdio_bm_page_offset(const struct mdio *m, uint64_t page)
{
	return m->sb.bm_offset + page * BM_PAGE_SIZE;
}

uint64_t mdio_al_block_offset(const struct mdio *m, uint32_t blk)
{
	return m->sb.al_offset + (uint64_t)blk * AL_BLOCK_SIZE;
}

/* Write the changed pages among [first, last] in contiguous runs. */
static int write_changed_pages(struct mdio *m, uint64_t first, uint64_t last,
			       uint8_t *buf, bool *wrote)
{
	const uint64_t max = IO_CHUNK / BM_PAGE_SIZE;
	int64_t p = bm_next_changed_page(m->bm, first);
	int ret;

	while (p >= 0 && (uint64_t)p <= last) {
		uint64_t start = (uint64_t)p, n = 0;

		while (p >= 0 && (uint64_t)p == start + n &&
		       (uint64_t)p <= last && n < max) {
			bm_page_encode(m->bm, (uint64_t)p,
				       buf + n * BM_PAGE_SIZE);
			n++;
			p = bm_next_changed_page(m->bm, (uint64_t)p + 1);
		}
		ret = write_full(m->md_fd, buf, n * BM_PAGE_SIZE,
				 mdio_bm_page_offset(m, start));
		if (ret)
			return ret;
		*wrote = true;
	}
	return 0;
}

int mdio_write_bm_range(struct mdio *m, uint64_t first, uint64_t last)
{
	bool wrote = false;
	uint8_t *buf;
	int64_t p;
	int ret;

	if (m->rdonly)
		return -EBADF;
	if (!m->bm)
		return -EINVAL;
	if (!bm_nr_pages(m->bm) || first > last)
		return 0;
	if (last >= bm_nr_pages(m->bm))
		last = bm_nr_pages(m->bm) - 1;
	buf = malloc(IO_CHUNK);
	if (!buf)
		return -ENOMEM;
	ret = write_changed_pages(m, first, last, buf, &wrote);
	if (!ret && wrote)
		ret = sync_fd(m->md_fd);
	if (ret) {
		log_err("md: writing bitmap pages failed: %s", strerror(-ret));
		goto out_free;
	}
	/* Clean only once durable; nothing changed the bits in between. */
	for (p = bm_next_changed_page(m->bm, first);
	     p >= 0 && (uint64_t)p <= last;
	     p = bm_next_changed_page(m->bm, (uint64_t)p + 1))
		bm_page_mark_clean(m->bm, (uint64_t)p);
out_free:
	free(buf);
	return ret;
}

int mdio_flush_bm(struct mdio *m)
{
	if (!m->bm)
		return -EINVAL;
	return mdio_write_bm_range(m, 0, UINT64_MAX);
}

int mdio_write_al_block(struct mdio *m, uint32_t blk, const void *block)
{
	int ret;

	if (m->rdonly)
		return -EBADF;
	if (!loaded(m) || blk >= m->sb.al_ring_blocks)
		return -EINVAL;
	ret = write_full(m->md_fd, block, AL_BLOCK_SIZE,
			 mdio_al_block_offset(m, blk));
	if (!ret)
		ret = sync_fd(m->md_fd);
	return ret;
}

static int zero_slots(struct mdio *m, char *why, size_t len)
{
	uint64_t off[2];
	uint8_t *zero;
	int ret = 0;

	if (md_sb_offsets(placement(m), m->md_dev_bytes, off))
		return util_why(-ENOSPC, why, len,
			    "metadata device of %llu bytes is too small to hold superblocks",
			    (ull)m->md_dev_bytes);
	zero = calloc(1, MD_SB_SIZE);
	if (!zero)
		return util_why(-ENOMEM, why, len, "out of memory");
	for (int i = 0; i < 2 && !ret; i++) {
		ret = write_full(m->md_fd, zero, MD_SB_SIZE, off[i]);
		if (ret)
			util_why(ret, why, len,
			     "cannot clear superblock slot %d at %llu: %s", i,
			     (ull)off[i], strerror(-ret));
	}
	if (!ret) {
		ret = sync_fd(m->md_fd);
		if (ret)
			util_why(ret, why, len, "fdatasync: %s", strerror(-ret));
	}
	free(zero);
	return ret;
}

int mdio_wipe(struct mdio *m, char *why, size_t why_len)
{
	if (m->rdonly)
		return util_why(-EBADF, why, why_len, "opened read-only");
	bm_free(m->bm);
	al_free(m->al);
	m->bm = NULL;
	m->al = NULL;
	memset(&m->sb, 0, sizeof(m->sb));
	m->sb_slot = -1;
	return zero_slots(m, why, why_len);
}

/* Bitmap @idx: all-clean zeroes, or @full's pages (bits past the end 0). */
static int write_bitmap(struct mdio *m, const struct bm *full, uint32_t idx,
			uint8_t *buf)
{
	const uint64_t per = IO_CHUNK / BM_PAGE_SIZE;
	uint64_t pages = m->sb.bm_bytes / BM_PAGE_SIZE;
	uint64_t base = m->sb.bm_offset + (uint64_t)idx * m->sb.bm_bytes;
	uint64_t real = full ? bm_nr_pages(full) : 0;
	int ret;

	for (uint64_t page = 0; page < pages; page += per) {
		uint64_t n = pages - page < per ? pages - page : per;

		memset(buf, 0, n * BM_PAGE_SIZE);
		for (uint64_t i = 0; i < n && page + i < real; i++)
			bm_page_encode(full, page + i, buf + i * BM_PAGE_SIZE);
		ret = write_full(m->md_fd, buf, n * BM_PAGE_SIZE,
				 base + page * BM_PAGE_SIZE);
		if (ret)
			return ret;
	}
	return 0;
}

static int write_fresh_areas(struct mdio *m, bool full_sync, char *why,
			     size_t len)
{
	struct bm *full = NULL;
	uint8_t *buf;
	int ret = 0;

	buf = malloc(IO_CHUNK);
	if (!buf)
		return util_why(-ENOMEM, why, len, "out of memory");
	if (full_sync) {
		full = bm_create(m->sb.data_bytes >> SECTOR_SHIFT,
				 m->sb.bm_granularity);
		if (!full) {
			ret = util_why(-errno, why, len,
				   "cannot allocate the bitmap: %s",
				   strerror(errno));
			goto out_free;
		}
		bm_set_all(full);
	}
	for (uint32_t i = 0; i < m->sb.bm_nr_slots; i++) {
		ret = write_bitmap(m, full, i, buf);
		if (ret) {
			util_why(ret, why, len, "cannot write bitmap %u: %s", i,
			     strerror(-ret));
			goto out_free;
		}
	}
	al_encode_empty(buf);
	for (uint32_t b = 0; b < m->sb.al_ring_blocks; b++) {
		ret = write_full(m->md_fd, buf, AL_BLOCK_SIZE,
				 mdio_al_block_offset(m, b));
		if (ret) {
			util_why(ret, why, len,
			     "cannot write activity-log block %u: %s", b,
			     strerror(-ret));
			goto out_free;
		}
	}
out_free:
	bm_free(full);
	free(buf);
	return ret;
}

/*
 * Order matters for a crash in the middle: the old superblocks go first,
 * so until the new ones are durable the device reads as blank (create-md
 * is simply run again) rather than as old metadata over a half-written
 * bitmap. Both slots get the same content with seq 1 and 2, so the next
 * mdio_write_sb() goes to slot 0 and slot 1 stays as the fallback.
 */
int mdio_create(struct mdio *m, const struct md_geometry *g, bool full_sync,
		char *why, size_t why_len)
{
	struct md_geometry geo = *g;
	struct md_super sb;
	uint8_t *buf;
	int ret;

	if (m->rdonly)
		return util_why(-EBADF, why, why_len, "opened read-only");
	if (g->placement != placement(m))
		return util_why(-EINVAL, why, why_len,
			    "geometry asks for %s metadata but the devices were opened for %s",
			    md_placement_name(g->placement),
			    md_placement_name(placement(m)));
	if (geo.backing_bytes && geo.backing_bytes != m->data_dev_bytes)
		return util_why(-EINVAL, why, why_len,
			    "geometry says the backing device has %llu bytes, it has %llu",
			    (ull)geo.backing_bytes, (ull)m->data_dev_bytes);
	geo.backing_bytes = m->data_dev_bytes;
	if (m->internal) {
		geo.md_dev_bytes = 0;
	} else {
		if (geo.md_dev_bytes && geo.md_dev_bytes != m->md_dev_bytes)
			return util_why(-EINVAL, why, why_len,
				    "geometry says the metadata device has %llu bytes, it has %llu",
				    (ull)geo.md_dev_bytes,
				    (ull)m->md_dev_bytes);
		geo.md_dev_bytes = m->md_dev_bytes;
	}
	ret = md_layout(&geo, &sb, why, why_len);
	if (ret)
		return ret;
	if (full_sync)
		sb.flags |= MD_F_FULL_SYNC;

	ret = mdio_wipe(m, why, why_len);
	if (ret)
		return ret;
	m->sb = sb;
	ret = write_fresh_areas(m, full_sync, why, why_len);
	if (ret)
		goto out_reset;
	/* The areas must be durable before a superblock points at them. */
	ret = sync_fd(m->md_fd);
	if (ret) {
		util_why(ret, why, why_len, "fdatasync: %s", strerror(-ret));
		goto out_reset;
	}

	buf = malloc(MD_SB_SIZE);
	if (!buf) {
		ret = util_why(-ENOMEM, why, why_len, "out of memory");
		goto out_reset;
	}
	for (int i = 0; i < 2 && !ret; i++) {
		sb.seq = (uint64_t)i + 1;
		ret = md_encode(&sb, buf);
		if (ret) {
			util_why(ret, why, why_len, "cannot encode the superblock");
			break;
		}
		ret = write_full(m->md_fd, buf, MD_SB_SIZE, sb.sb_offset[i]);
		if (ret)
			util_why(ret, why, why_len,
			     "cannot write superblock slot %d: %s", i,
			     strerror(-ret));
	}
	free(buf);
	if (!ret) {
		ret = sync_fd(m->md_fd);
		if (ret)
			util_why(ret, why, why_len, "fdatasync: %s", strerror(-ret));
	}
	if (ret)
		goto out_reset;
	/* Read everything back: create-md reports success only for metadata
	 * that the next attach will accept. */
	return mdio_load(m, why, why_len);

out_reset:
	memset(&m->sb, 0, sizeof(m->sb));
	m->sb_slot = -1;
	return ret;
}
