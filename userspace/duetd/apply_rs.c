// SPDX-License-Identifier: MIT
/*
 * The apply worker's resync and verify frames (apply.h): the target's
 * blocks and their flush before their bits go, RS_CSUM, OV_REQUEST and
 * OV_REPLY. Worker thread only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apply.h"
#include "conn.h"
#include "log.h"
#include "peer.h"
#include "repl.h"
#include "resync.h"
#include "util.h"

/* Read [sector, +len) of our disk into the worker's scratch buffer and
 * digest it. 0 or -errno. Worker. */
static int digest_block(struct repl *r, uint64_t sector, uint32_t len,
			uint8_t alg, uint8_t *dg)
{
	size_t done = 0;

	if (!r->scratch) {
		r->scratch = aligned_alloc(4096, PROTO_DATA_MAX);
		if (!r->scratch)
			return -ENOMEM;
	}
	while (done < len) {
		off_t off = (off_t)(sector << SECTOR_SHIFT) + (off_t)done;
		ssize_t n = pread(r->wfd, (char *)r->scratch + done,
				  len - done, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return proto_digest(alg, r->scratch, len, dg);
}

/*
 * The target's blocks written since the last flush: their bits are cleared
 * only once fdatasync() has made them durable, and only then may the
 * bitmap pages that say so be written (a page written first would call a
 * block clean that a power loss takes back). One flush per
 * RESYNC_SYNC_BYTES or second, not one per block. Worker.
 */
void apply_rs_flush(struct repl *r)
{
	struct bm *bm;

	if (!r->rs_pend_n)
		return;
	if (r->rs_pend_gen != __atomic_load_n(&r->conn_gen, __ATOMIC_ACQUIRE)) {
		/*
		 * That connection is gone: this node may have been promoted
		 * since and marked some of those blocks for the peer. Their
		 * bits stay set; the next resync sends them again.
		 */
		r->rs_pend_n = 0;
		r->rs_pend_bytes = 0;
		return;
	}
	if (fdatasync(r->wfd)) {
		int err = errno;

		/* the bits stay set: those blocks are resynced again */
		log_err("%s: resync target: flushing %llu bytes: %s",
			r->p.cfg->name, (unsigned long long)r->rs_pend_bytes,
			strerror(err));
		r->rs_pend_n = 0;
		r->rs_pend_bytes = 0;
		conn_disconnect(r->conn, PROTO_DISC_IO_ERROR,
				"resync target cannot flush its disk");
		return;
	}
	bm = meta_lock_bm(r->p.meta);
	for (uint32_t i = 0; i < r->rs_pend_n; i++)
		bm_clear_range(bm, r->rs_pend[i].sector, r->rs_pend[i].nr);
	meta_unlock_bm(r->p.meta);
	r->rs_pend_n = 0;
	r->rs_pend_bytes = 0;
	meta_sync_bm(r->p.meta);
}

/* A block the target now holds (written, or found identical) that came on
 * connection @gen: count it, and clear its bits at the next flush. Worker,
 * r->stale set for that connection. */
static void rs_block_clean(struct repl *r, uint64_t gen, uint64_t sector,
			   uint32_t len, bool same)
{
	struct timespec now;
	bool due;

	if (r->stale)
		return;	/* a block of a lost connection: its bits stay set */
	if (r->rs_pend_n && r->rs_pend_gen != gen)
		apply_rs_flush(r);	/* drops the old connection's blocks */
	r->rs_pend_gen = gen;
	if (r->rs_pend_n == r->rs_pend_cap) {
		uint32_t cap = r->rs_pend_cap ? 2 * r->rs_pend_cap : 64;
		void *p = realloc(r->rs_pend, cap * sizeof(*r->rs_pend));

		if (!p) {
			apply_rs_flush(r);	/* makes room */
		} else {
			r->rs_pend = p;
			r->rs_pend_cap = cap;
		}
	}
	if (r->rs_pend_n < r->rs_pend_cap) {
		r->rs_pend[r->rs_pend_n].sector = sector;
		r->rs_pend[r->rs_pend_n].nr = len >> SECTOR_SHIFT;
		r->rs_pend_n++;
		r->rs_pend_bytes += len;
	}
	pthread_mutex_lock(&r->lock);
	r->rs_target_bytes += len;
	r->rs_bytes_total += len;
	if (same) {
		r->rs_target_same += len;
		r->rs_same_total += len;
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	due = r->rs_pend_bytes >= RESYNC_SYNC_BYTES ||
	      now.tv_sec != r->rs_last_sync;
	if (due)
		r->rs_last_sync = now.tv_sec;
	pthread_mutex_unlock(&r->lock);
	if (due)
		apply_rs_flush(r);
}

/*
 * Target: RS_CSUM. Our block, digested the same way, is compared with the
 * source's: equal, the bits go and RS_IN_SYNC says so; otherwise (or if
 * ours cannot be read) RS_REQUEST asks for the data. After every write
 * before it completed.
 */
void apply_rs_csum(struct repl *r, const struct work *w)
{
	const struct proto_block *b = &w->m.block;
	uint8_t dg[PROTO_DIGEST_MAX];
	int ret;

	ret = digest_block(r, b->sector, b->length, b->digest_alg, dg);
	if (ret)
		log_warn("%s: checksum resync: reading sector %llu+%u: %s",
			 r->p.cfg->name, (unsigned long long)b->sector,
			 b->length, strerror(-ret));
	if (!ret && !memcmp(dg, b->digest, sizeof(dg))) {
		rs_block_clean(r, w->conn_gen, b->sector, b->length, true);
		apply_send_ack(r, PROTO_RS_IN_SYNC, w->m.id, b->sector,
			       b->length, 0);
	} else {
		apply_send_ack(r, PROTO_RS_REQUEST, w->m.id, b->sector,
			       b->length, 0);
	}
}

/*
 * OV_REQUEST: the digest of our block. A Primary takes the block's range
 * first, so that no application write is half-way between its disk and
 * the wire while it reads (the comparison on the peer happens after every
 * DATA sent before this answer).
 */
void apply_ov_request(struct repl *r, const struct proto_msg *m)
{
	struct proto_msg a = { .type = PROTO_OV_REPLY, .id = m->id };
	const struct proto_block *b = &m->block;
	bool no_stop = false;
	uint32_t range = 0;
	bool ranged;
	int ret;

	ranged = !repl_range_take_wait(r, b->sector, b->length >> SECTOR_SHIFT,
				       &range, &no_stop);
	ret = digest_block(r, b->sector, b->length, b->digest_alg,
			   a.block.digest);
	if (ranged)
		repl_range_put(r, range);
	a.block.sector = b->sector;
	a.block.length = b->length;
	a.block.digest_alg = b->digest_alg;
	if (ret) {
		log_warn("%s: verify: reading sector %llu+%u: %s",
			 r->p.cfg->name, (unsigned long long)b->sector,
			 b->length, strerror(-ret));
		a.block.result = (uint32_t)-ret > PROTO_ERRNO_MAX ?
					 EIO :
					 (uint32_t)-ret;
		memset(a.block.digest, 0, sizeof(a.block.digest));
	}
	if (r->stale)
		return;
	ret = conn_send(r->conn, &a, NULL, NULL, NULL, -1);
	if (ret && ret != -ENOTCONN)
		log_warn("%s: sending OV_REPLY: %s", r->p.cfg->name,
			 strerror(-ret));
}

/* Source: the peer's digest of a verify block. */
void apply_ov_reply(struct repl *r, const struct proto_msg *m)
{
	struct resync *rs;

	if (r->stale)
		return;
	pthread_mutex_lock(&r->lock);
	/* only this worker frees a resync (W_RS_*), so it stays valid */
	rs = r->verifying ? r->rs : NULL;
	pthread_mutex_unlock(&r->lock);
	if (rs)
		resync_verify_reply(rs, m, r->wfd);
}

/* A resync block ended with @ret: written (not yet durably: see
 * rs_block_clean for when its bits go), acknowledged at once. */
void apply_rs_data_done(struct repl *r, const struct work *w, int ret)
{
	const struct proto_block *b = &w->m.block;

	if (!ret)
		rs_block_clean(r, w->conn_gen, b->sector, b->length, false);
	else
		log_warn("%s: resync block at %llu+%u failed: %s",
			 r->p.cfg->name, (unsigned long long)b->sector,
			 b->length, strerror(-ret));
	apply_send_ack(r, PROTO_RS_ACK, w->m.id, b->sector, b->length, ret);
}
